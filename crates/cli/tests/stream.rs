//! Live subscriptions over `GET /v1/stream` on the real binary: initial
//! rows, then deltas (entered, changed fields, left) as commits land, and
//! refusals before any data without credentials.
#![allow(clippy::unwrap_used)]
// Tests read best with short names for the server (s), token (t), response (r).
#![allow(clippy::many_single_char_names)]

#[path = "support/server.rs"]
mod support;

use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value as J, json};
use support::start;
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<TcpStream>;

fn connect(base: &str, token: Option<&str>) -> Ws {
    let addr = base.trim_start_matches("http://");
    let mut req = format!("ws://{addr}/v1/stream").into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (ws, _) = tungstenite::client(req, tcp).unwrap();
    ws
}

fn send(ws: &mut Ws, v: &J) {
    ws.send(Message::Text(v.to_string().into())).unwrap();
}

fn next(ws: &mut Ws) -> J {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Binary(b) => return serde_json::from_slice(&zstd::decode_all(&b[..]).unwrap()).unwrap(),
            Message::Close(c) => return json!({"closed": c.map(|c| (u16::from(c.code), c.reason.to_string()))}),
            _ => {}
        }
    }
}

#[test]
fn subscriptions_receive_initial_rows_then_deltas() {
    let s = start(&[]);
    let t = s.admin();
    let mk = |level: u32, name: &str| {
        let r = s.call(
            "POST",
            "/v1/entities",
            Some(&t),
            Some(&json!({"components": {"player": {"name": name, "level": level}}})),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["id"].as_u64().unwrap()
    };
    let high = mk(9, "ana");
    mk(1, "bo");
    let mut ws = connect(&s.base, Some(&t));
    send(
        &mut ws,
        &json!({"type": "subscribe", "id": "q1", "query": {
        "with": ["player"], "filters": [{"field": "player.level", "op": "ge", "value": 5}], "select": ["player.name", "player.level"]}}),
    );
    let init = next(&mut ws);
    assert_eq!(init["type"], "initial", "{init}");
    assert_eq!(init["rows"].as_array().unwrap().len(), 1, "{init}");
    assert_eq!(init["rows"][0]["id"], high);
    // Enters.
    let third = mk(7, "cy");
    let d = next(&mut ws);
    assert_eq!((d["type"].as_str(), d["id"].as_str()), (Some("delta"), Some("q1")), "{d}");
    assert_eq!(d["entered"][0]["id"], third, "{d}");
    assert!(d["seq"].as_u64().unwrap() > init["seq"].as_u64().unwrap());
    // A change: only the changed field.
    let r = s.call(
        "PATCH",
        &format!("/v1/entities/{high}"),
        Some(&t),
        Some(&json!({"components": {"player": {"name": "anna"}}})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let d = next(&mut ws);
    assert_eq!(d["changed"], json!([{"id": high, "player": {"name": "anna"}}]), "{d}");
    // Leaves.
    let r = s.call(
        "PATCH",
        &format!("/v1/entities/{third}"),
        Some(&t),
        Some(&json!({"components": {"player": {"level": 2}}})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let d = next(&mut ws);
    assert_eq!(d["left"], json!([third]), "{d}");
    // Commits that do not touch the result send nothing; bad messages get errors.
    let r =
        s.call("POST", "/v1/entities", Some(&t), Some(&json!({"components": {"transform": {"position": [0, 0, 0]}}})));
    assert_eq!(r.status, 201);
    send(&mut ws, &json!({"type": "subscribe", "id": "q1", "query": {"with": ["player"]}}));
    assert_eq!(next(&mut ws)["type"], "error");
    send(&mut ws, &json!({"type": "subscribe", "id": "q2", "query": {"with": ["_users"]}}));
    let e = next(&mut ws);
    assert!(e["message"].as_str().unwrap().contains("reserved"), "{e}");
    send(&mut ws, &json!({"type": "unsubscribe", "id": "q1"}));
    assert_eq!(next(&mut ws)["type"], "unsubscribed");
    mk(8, "dee");
    send(&mut ws, &json!({"type": "ping"}));
    assert_eq!(next(&mut ws)["type"], "pong", "no delta after unsubscribing");
}

#[test]
fn browsers_authenticate_with_a_first_message_and_bad_credentials_are_closed() {
    let s = start(&[]);
    let t = s.admin();
    let mut ws = connect(&s.base, None);
    send(&mut ws, &json!({"type": "auth", "token": t}));
    send(&mut ws, &json!({"type": "subscribe", "id": "all", "query": {"with": ["player"]}}));
    assert_eq!(next(&mut ws)["type"], "initial");
    for first in [json!({"type": "auth", "token": "garbage"}), json!({"type": "subscribe", "id": "x", "query": {}})] {
        let mut ws = connect(&s.base, None);
        send(&mut ws, &first);
        let c = next(&mut ws);
        assert_eq!(c["closed"][0], 4401, "{first}: {c}");
    }
    let mut ws = connect(&s.base, Some("garbage"));
    assert_eq!(next(&mut ws)["closed"][0], 4401);
}

#[test]
fn shutdown_closes_open_streams_at_once() {
    let mut s = start(&[]);
    let t = s.admin();
    let mut ws = connect(&s.base, Some(&t));
    send(&mut ws, &json!({"type": "subscribe", "id": "q", "query": {"with": ["player"]}}));
    assert_eq!(next(&mut ws)["type"], "initial");
    let pid = s.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    // Closed by the shutdown itself (1001), not by the process ending.
    assert_eq!(next(&mut ws)["closed"][0], 1001);
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn logging_out_ends_an_open_stream() {
    let s = start(&[]);
    let t = s.admin();
    let mut ws = connect(&s.base, Some(&t));
    send(&mut ws, &json!({"type": "subscribe", "id": "q", "query": {"with": ["player"]}}));
    assert_eq!(next(&mut ws)["type"], "initial");
    assert_eq!(s.call("POST", "/v1/auth/logout", Some(&t), None).status, 204);
    let other = s.admin();
    let r = s.call("POST", "/v1/entities", Some(&other), Some(&json!({"components": {"player": {"name": "x"}}})));
    assert_eq!(r.status, 201);
    assert_eq!(next(&mut ws)["closed"][0], 4401, "no data after the session ended");
}
