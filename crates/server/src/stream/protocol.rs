//! Messages a stream client sends, parsed strictly: one JSON object with a
//! known `type`, no unknown or repeated keys (a repeated key would mean one
//! thing to a proxy and another to the server).

use serde::Deserialize;
use serde_json::Value as J;

use crate::strict_json::StrictValue;

/// `"budget": {"bytes_per_second": N}`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub bytes_per_second: u64,
}

/// A client message.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    Auth {
        token: String,
    },
    Subscribe {
        id: String,
        query: J,
        /// Merged into the query (it may be given in either place, not both).
        near: Option<J>,
        budget: Option<Budget>,
        hysteresis: Option<f64>,
        from_seq: Option<u64>,
        /// The `epoch` of the server the client's sequence came from.
        epoch: Option<String>,
    },
    Unsubscribe {
        id: String,
    },
    Ping {
        id: Option<J>,
    },
    /// The connection's budget over all its subscriptions (`null` lifts it).
    Budget {
        bytes_per_second: Option<u64>,
    },
    /// The sequence the client has applied (for lag figures).
    Ack {
        seq: u64,
    },
}

/// Longest subscription id.
pub const MAX_ID_LEN: usize = 128;

/// Parse one text frame.
pub fn parse(text: &str) -> Result<ClientMsg, String> {
    let StrictValue(v) = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    if !v.is_object() {
        return Err("a message is a JSON object with a \"type\"".into());
    }
    let m: ClientMsg = serde_json::from_value(v).map_err(|e| format!("invalid message: {e}"))?;
    match &m {
        ClientMsg::Subscribe { id, .. } | ClientMsg::Unsubscribe { id } if id.is_empty() || id.len() > MAX_ID_LEN => {
            Err(format!("a subscription id is 1 to {MAX_ID_LEN} bytes"))
        }
        _ => Ok(m),
    }
}

/// The `id` of a message that failed to parse, if it has a string one (so
/// the error can name the subscription).
pub fn id_of(text: &str) -> Option<String> {
    let v: J = serde_json::from_str(text).ok()?;
    v.get("id")?.as_str().map(|s| s.chars().take(MAX_ID_LEN).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unknown_repeated_and_malformed() {
        assert!(parse(r#"{"type":"ping"}"#).is_ok());
        assert!(parse(r#"{"type":"subscribe","id":"a","query":{}}"#).is_ok());
        for bad in [
            r#"{"type":"subscribe","id":"a","query":{},"extra":1}"#,
            r#"{"type":"subscribe","id":"a","id":"b","query":{}}"#,
            r#"{"type":"nope"}"#,
            r#"{"id":"a"}"#,
            "[1,2]",
            r#"{"type":"subscribe","id":"","query":{}}"#,
            r#"{"type":"subscribe","id":"a"}"#,
            "not json",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(id_of(r#"{"type":"x","id":"q"}"#).as_deref(), Some("q"));
    }
}
