//! # ecsdb-client
//!
//! A client for ecsdb's live subscriptions (`GET /v1/stream`, see the
//! server's `docs/API.md`): it keeps a local cache of each subscription's
//! rows, applies the server's deltas to it, calls change callbacks, and —
//! when the connection drops — reconnects and resumes each subscription
//! from the last sequence it applied, so the cache never misses a change.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ecsdb_client::ClientError> {
//! use ecsdb_client::{Client, ClientConfig};
//! let mut c = Client::connect(ClientConfig::new("http://127.0.0.1:8080", "TOKEN")).await?;
//! c.subscribe("near", serde_json::json!({"with": ["player"]})).await?;
//! loop {
//!     let ev = c.next().await?;
//!     println!("{ev:?}: {} rows", c.rows("near").map_or(0, |r| r.len()));
//! }
//! # }
//! ```
//!
//! Cache rules (the protocol's): `initial` replaces a subscription's rows;
//! in a `delta`, `entered` rows are put whole (replacing any copy),
//! `changed` rows carry only the fields that changed and are merged into
//! the cached row, `left` ids are removed. The subscription's `seq` is the
//! sequence of the last message applied.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value as J, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad URL or request: {0}")]
    Request(String),
    #[error("connection: {0}")]
    Connection(String),
    /// The server refused the credential or closed for a reason that a
    /// reconnect would not fix (close code and reason).
    #[error("closed by the server ({code}): {reason}")]
    Closed { code: u16, reason: String },
    /// An error message for a subscription (or the connection).
    #[error("server error{}: {message}", id.as_ref().map(|i| format!(" for `{i}`")).unwrap_or_default())]
    Server { id: Option<String>, message: String },
    #[error("malformed message from the server: {0}")]
    Protocol(String),
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `http://host:port` or `ws://host:port` (the `/v1/stream` path is added).
    pub url: String,
    /// A session token or API key.
    pub token: String,
    /// Ask for zstd-compressed frames.
    pub compression: bool,
    /// Reconnect and resume when the connection drops.
    pub auto_resume: bool,
    /// Reconnect attempts before giving up (each waits longer, up to 5 s).
    pub max_reconnects: u32,
}

impl ClientConfig {
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> ClientConfig {
        ClientConfig { url: url.into(), token: token.into(), compression: true, auto_resume: true, max_reconnects: 20 }
    }
}

/// Options of one subscription beside its query.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// `{"field", "entity"|"point", "radius"}`: follow an area.
    pub near: Option<J>,
    /// Bytes per second for this subscription.
    pub bytes_per_second: Option<u64>,
    /// Hysteresis of `near` (a fraction of the radius).
    pub hysteresis: Option<f64>,
}

/// One subscription's cache.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    query: J,
    options: SubscribeOptions,
    /// Rows by entity id.
    pub rows: BTreeMap<u64, J>,
    /// Sequence of the last message applied (0 before the first).
    pub seq: u64,
    /// Rows the server holds back (budget or slow reading).
    pub pending: usize,
    /// The server run `seq` belongs to (resumes need it).
    pub epoch: Option<String>,
}

/// What [`Client::next`] applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A subscription's rows were replaced.
    Initial { id: String, seq: u64, rows: usize },
    /// A delta was applied (counts of entered, changed and left rows);
    /// `resumed` when it brought a resumed subscription up to date.
    Delta { id: String, seq: u64, entered: usize, changed: usize, left: usize, resumed: bool },
    /// The server told this connection it fell behind.
    Behind { from_seq: u64, seq: u64 },
    /// A subscription was ended by the server (the error's message).
    Failed { id: String, message: String },
    /// The connection dropped and was re-established; subscriptions resume.
    Reconnected,
    /// Anything else (pong, unsubscribed, budget).
    Other(J),
}

/// One change applied to a cache, for callbacks.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// A subscription's rows were replaced.
    Reset { sub: &'a str },
    /// A row was put (entered, or sent whole).
    Put { sub: &'a str, row: &'a J },
    /// Fields of a row changed (`fields`: what changed; `row`: the merged row).
    Update { sub: &'a str, fields: &'a J, row: &'a J },
    /// A row left.
    Remove { sub: &'a str, id: u64 },
}

type Callback = Box<dyn FnMut(Change<'_>) + Send>;

/// A stream connection with its subscriptions' caches.
pub struct Client {
    config: ClientConfig,
    ws: Option<Ws>,
    subs: BTreeMap<String, Subscription>,
    callbacks: Vec<Callback>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("url", &self.config.url).field("subs", &self.subs.len()).finish_non_exhaustive()
    }
}

/// Codes after which reconnecting cannot help.
fn fatal(code: u16) -> bool {
    matches!(code, 4401 | 4403 | 1008 | 1009)
}

impl Client {
    /// Connect and authenticate (by header).
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let ws = open(&config).await?;
        Ok(Client { config, ws: Some(ws), subs: BTreeMap::new(), callbacks: Vec::new() })
    }

    /// Call `f` for every change applied to any cache.
    pub fn on_change(&mut self, f: impl FnMut(Change<'_>) + Send + 'static) {
        self.callbacks.push(Box::new(f));
    }

    /// A subscription's rows.
    pub fn rows(&self, id: &str) -> Option<&BTreeMap<u64, J>> {
        self.subs.get(id).map(|s| &s.rows)
    }

    /// A subscription.
    pub fn subscription(&self, id: &str) -> Option<&Subscription> {
        self.subs.get(id)
    }

    /// Subscribe to `query` (the JSON of `/v1/query`) and wait for its
    /// first rows (messages for other subscriptions that arrive meanwhile
    /// are applied too).
    pub async fn subscribe(&mut self, id: &str, query: J) -> Result<(), ClientError> {
        self.subscribe_with(id, query, SubscribeOptions::default()).await
    }

    /// [`Client::subscribe`] with options.
    pub async fn subscribe_with(&mut self, id: &str, query: J, options: SubscribeOptions) -> Result<(), ClientError> {
        let sub =
            Subscription { id: id.to_string(), query, options, rows: BTreeMap::new(), seq: 0, pending: 0, epoch: None };
        self.send(&subscribe_msg(&sub, None)).await?;
        self.subs.insert(id.to_string(), sub);
        loop {
            match self.next().await? {
                Event::Initial { id: got, .. } | Event::Delta { id: got, .. } if got == id => return Ok(()),
                Event::Failed { id: got, message } if got == id => {
                    return Err(ClientError::Server { id: Some(got), message });
                }
                _ => {}
            }
        }
    }

    /// End a subscription (its cache is dropped at once).
    pub async fn unsubscribe(&mut self, id: &str) -> Result<(), ClientError> {
        self.subs.remove(id);
        self.send(&json!({"type": "unsubscribe", "id": id})).await
    }

    /// Tell the server the sequence applied (for its lag figures).
    pub async fn ack(&mut self) -> Result<(), ClientError> {
        let seq = self.subs.values().map(|s| s.seq).min().unwrap_or(0);
        self.send(&json!({"type": "ack", "seq": seq})).await
    }

    /// Send a ping; the pong comes back through [`Client::next`].
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.send(&json!({"type": "ping"})).await
    }

    /// Send a message, reconnecting first (and resuming) if the connection
    /// dropped.
    async fn send(&mut self, m: &J) -> Result<(), ClientError> {
        if self.ws.is_none() && self.config.auto_resume {
            self.reconnect().await?;
        }
        self.send_raw(m).await
    }

    async fn send_raw(&mut self, m: &J) -> Result<(), ClientError> {
        let ws = self.ws.as_mut().ok_or_else(|| ClientError::Connection("not connected".into()))?;
        ws.send(Message::Text(m.to_string().into())).await.map_err(|e| ClientError::Connection(e.to_string()))
    }

    /// Close the connection.
    pub async fn close(mut self) {
        if let Some(mut ws) = self.ws.take() {
            let _ = ws.close(None).await;
        }
    }

    /// Drop the connection without a close handshake (as a network failure
    /// would); the next [`Client::next`] reconnects and resumes.
    pub fn disconnect(&mut self) {
        self.ws = None;
    }

    /// Read and apply the next message; reconnects and resumes when the
    /// connection dropped (with `auto_resume`).
    pub async fn next(&mut self) -> Result<Event, ClientError> {
        loop {
            let Some(ws) = self.ws.as_mut() else {
                self.reconnect().await?;
                return Ok(Event::Reconnected);
            };
            let msg = match ws.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    self.dropped(ClientError::Connection(e.to_string()))?;
                    continue;
                }
                None => {
                    self.dropped(ClientError::Connection("the connection ended".into()))?;
                    continue;
                }
            };
            let v: J = match msg {
                Message::Text(t) => serde_json::from_str(&t).map_err(|e| ClientError::Protocol(e.to_string()))?,
                Message::Binary(b) => {
                    let raw = zstd::decode_all(&b[..]).map_err(|e| ClientError::Protocol(format!("zstd: {e}")))?;
                    serde_json::from_slice(&raw).map_err(|e| ClientError::Protocol(e.to_string()))?
                }
                Message::Close(c) => {
                    let (code, reason) = c.map_or((1005, String::new()), |c| (u16::from(c.code), c.reason.to_string()));
                    if fatal(code) || code == u16::from(CloseCode::Normal) && !self.config.auto_resume {
                        self.ws = None;
                        return Err(ClientError::Closed { code, reason });
                    }
                    self.dropped(ClientError::Closed { code, reason })?;
                    continue;
                }
                _ => continue,
            };
            return self.apply(v);
        }
    }

    /// The connection is gone: resume later, or fail now.
    fn dropped(&mut self, e: ClientError) -> Result<(), ClientError> {
        self.ws = None;
        if self.config.auto_resume { Ok(()) } else { Err(e) }
    }

    /// Reconnect (with backoff) and resubscribe everything from the
    /// sequence it was at.
    async fn reconnect(&mut self) -> Result<(), ClientError> {
        let mut wait = Duration::from_millis(50);
        let mut last = ClientError::Connection("no attempt".into());
        for _ in 0..=self.config.max_reconnects {
            match open(&self.config).await {
                Ok(ws) => {
                    self.ws = Some(ws);
                    let msgs: Vec<J> =
                        self.subs.values().map(|s| subscribe_msg(s, (s.seq > 0).then_some(s.seq))).collect();
                    for m in msgs {
                        self.send_raw(&m).await?;
                    }
                    return Ok(());
                }
                Err(e @ ClientError::Closed { .. }) => return Err(e),
                Err(e) => last = e,
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        Err(last)
    }

    fn emit(callbacks: &mut [Callback], c: Change<'_>) {
        for f in callbacks.iter_mut() {
            f(c);
        }
    }

    /// Apply one server message to the caches.
    fn apply(&mut self, v: J) -> Result<Event, ClientError> {
        let kind = v["type"].as_str().unwrap_or("");
        let id = v["id"].as_str().unwrap_or("").to_string();
        let seq = v["seq"].as_u64().unwrap_or(0);
        match kind {
            "initial" => {
                let rows = v["rows"].as_array().ok_or_else(|| ClientError::Protocol("initial without rows".into()))?;
                let Some(sub) = self.subs.get_mut(&id) else { return Ok(Event::Other(v)) };
                sub.rows.clear();
                Self::emit(&mut self.callbacks, Change::Reset { sub: &id });
                for r in rows {
                    let eid = r["id"].as_u64().ok_or_else(|| ClientError::Protocol("row without id".into()))?;
                    sub.rows.insert(eid, r.clone());
                    Self::emit(&mut self.callbacks, Change::Put { sub: &id, row: r });
                }
                sub.seq = seq;
                sub.pending = 0;
                sub.epoch = v["epoch"].as_str().map(str::to_string);
                Ok(Event::Initial { id, seq, rows: rows.len() })
            }
            "delta" => {
                let Some(sub) = self.subs.get_mut(&id) else { return Ok(Event::Other(v)) };
                let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
                let (entered, changed, left) = (list("entered"), list("changed"), list("left"));
                for r in &entered {
                    let eid = r["id"].as_u64().ok_or_else(|| ClientError::Protocol("row without id".into()))?;
                    sub.rows.insert(eid, r.clone());
                    Self::emit(&mut self.callbacks, Change::Put { sub: &id, row: r });
                }
                for c in &changed {
                    let eid = c["id"].as_u64().ok_or_else(|| ClientError::Protocol("row without id".into()))?;
                    // A change to a row the cache lacks (possible only
                    // after a resume with hysteresis) is not guessed at.
                    let Some(row) = sub.rows.get_mut(&eid) else { continue };
                    merge(row, c);
                    Self::emit(&mut self.callbacks, Change::Update { sub: &id, fields: c, row });
                }
                for l in &left {
                    let eid = l.as_u64().ok_or_else(|| ClientError::Protocol("left id is not a number".into()))?;
                    if sub.rows.remove(&eid).is_some() {
                        Self::emit(&mut self.callbacks, Change::Remove { sub: &id, id: eid });
                    }
                }
                sub.seq = seq;
                sub.pending = v["pending"].as_u64().unwrap_or(0) as usize;
                if let Some(e) = v["epoch"].as_str() {
                    sub.epoch = Some(e.to_string());
                }
                Ok(Event::Delta {
                    id,
                    seq,
                    entered: entered.len(),
                    changed: changed.len(),
                    left: left.len(),
                    resumed: v["resumed"] == true,
                })
            }
            "behind" => Ok(Event::Behind { from_seq: v["from_seq"].as_u64().unwrap_or(0), seq }),
            "error" if !id.is_empty() && self.subs.contains_key(&id) && !is_soft_error(&v) => {
                self.subs.remove(&id);
                Ok(Event::Failed { id, message: v["message"].as_str().unwrap_or("").to_string() })
            }
            "error" => Err(ClientError::Server {
                id: (!id.is_empty()).then_some(id),
                message: v["message"].as_str().unwrap_or("").to_string(),
            }),
            _ => Ok(Event::Other(v)),
        }
    }
}

/// Errors about a message that did not change the subscription (a
/// duplicate subscribe).
fn is_soft_error(v: &J) -> bool {
    v["message"].as_str().is_some_and(|m| m.contains("exists; unsubscribe first"))
}

/// Merge `{"id", "<table>": {"<field>": value}}` into a cached row.
fn merge(row: &mut J, change: &J) {
    let Some(changes) = change.as_object() else { return };
    if !row.is_object() {
        *row = J::Object(Map::new());
    }
    for (table, fields) in changes {
        if table == "id" {
            continue;
        }
        let Some(fields) = fields.as_object() else { continue };
        if let Some(o) = row.as_object_mut() {
            let t = o.entry(table.clone()).or_insert_with(|| J::Object(Map::new()));
            if let Some(t) = t.as_object_mut() {
                for (f, val) in fields {
                    t.insert(f.clone(), val.clone());
                }
            }
        }
    }
}

fn subscribe_msg(s: &Subscription, from_seq: Option<u64>) -> J {
    let mut m = json!({"type": "subscribe", "id": s.id, "query": s.query});
    if let Some(n) = &s.options.near {
        m["near"] = n.clone();
    }
    if let Some(b) = s.options.bytes_per_second {
        m["budget"] = json!({"bytes_per_second": b});
    }
    if let Some(h) = s.options.hysteresis {
        m["hysteresis"] = json!(h);
    }
    if let Some(n) = from_seq {
        m["from_seq"] = json!(n);
        m["epoch"] = json!(s.epoch);
    }
    m
}

async fn open(config: &ClientConfig) -> Result<Ws, ClientError> {
    let base = config.url.trim_end_matches('/');
    let base = base.strip_prefix("http://").map_or_else(|| base.to_string(), |r| format!("ws://{r}"));
    let base = base.strip_prefix("https://").map_or(base.clone(), |r| format!("wss://{r}"));
    let url = format!("{base}/v1/stream?compression={}", if config.compression { "zstd" } else { "none" });
    let mut req = url.into_client_request().map_err(|e| ClientError::Request(e.to_string()))?;
    let auth = format!("Bearer {}", config.token)
        .parse()
        .map_err(|_| ClientError::Request("token is not a valid header value".into()))?;
    req.headers_mut().insert("authorization", auth);
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            let status = r.status().as_u16();
            let body = r.body().as_ref().map(|b| String::from_utf8_lossy(b).to_string()).unwrap_or_default();
            // Refusals that retrying cannot fix are final.
            if matches!(status, 400 | 401 | 403) {
                return Err(ClientError::Closed { code: 4000 + status, reason: body });
            }
            Err(ClientError::Connection(format!("HTTP {status}: {body}")))
        }
        Err(e) => Err(ClientError::Connection(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn merge_puts_changed_fields_into_the_row() {
        let mut row = json!({"id": 1, "p": {"a": 1, "b": 2}});
        merge(&mut row, &json!({"id": 1, "p": {"b": 3}, "q": {"c": 4}}));
        assert_eq!(row, json!({"id": 1, "p": {"a": 1, "b": 3}, "q": {"c": 4}}));
    }

    #[test]
    fn subscribe_message_carries_options_and_resume_point() {
        let s = Subscription {
            id: "a".into(),
            query: json!({"with": ["x"]}),
            options: SubscribeOptions { near: Some(json!({"radius": 1})), bytes_per_second: Some(9), hysteresis: None },
            rows: BTreeMap::new(),
            seq: 5,
            pending: 0,
            epoch: Some("e".into()),
        };
        let m = subscribe_msg(&s, Some(5));
        assert_eq!(m["from_seq"], 5);
        assert_eq!(m["epoch"], "e");
        assert_eq!(m["budget"]["bytes_per_second"], 9);
        assert_eq!(m["near"]["radius"], 1);
    }
}
