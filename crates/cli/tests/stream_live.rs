//! `GET /v1/stream` on the real binary, attacked: refusals (no token, bad
//! token, revoked key, write-only key, IP not allowed, `max_clients`,
//! unauthenticated sockets not taking slots), malformed and unknown
//! messages answered with error frames on a connection that stays usable,
//! oversized messages, the subscription cap, `near` following an entity
//! with hysteresis, budgets (nearest first, `pending`), compression,
//! resume from a sequence, and a client that stops reading costing the
//! server bounded memory.
#![allow(clippy::unwrap_used)]
#![allow(clippy::many_single_char_names)]

#[path = "support/live.rs"]
mod live;
#[path = "support/server.rs"]
mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use live::server;
use serde_json::{Value as J, json};
use support::Server;
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<TcpStream>;

fn try_connect(base: &str, token: Option<&str>, query: &str) -> Result<Ws, tungstenite::Error> {
    let addr = base.trim_start_matches("http://");
    let mut req = format!("ws://{addr}/v1/stream{query}").into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tungstenite::client(req, tcp).map(|(ws, _)| ws).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => panic!("handshake interrupted"),
    })
}

fn connect(base: &str, token: Option<&str>) -> Ws {
    try_connect(base, token, "?compression=none").unwrap()
}

fn send(ws: &mut Ws, v: &J) {
    ws.send(Message::Text(v.to_string().into())).unwrap();
}

fn next(ws: &mut Ws) -> J {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return serde_json::from_str(&t).unwrap(),
            Ok(Message::Binary(b)) => return serde_json::from_slice(&zstd::decode_all(&b[..]).unwrap()).unwrap(),
            Ok(Message::Close(c)) => {
                return json!({"closed": c.map(|c| (u16::from(c.code), c.reason.to_string()))});
            }
            Ok(_) => {}
            Err(e) => return json!({"error": e.to_string()}),
        }
    }
}

/// Read until a message of `kind` (other messages are returned too).
fn until(ws: &mut Ws, kind: &str) -> (J, Vec<J>) {
    let mut seen = Vec::new();
    loop {
        let m = next(ws);
        if m["type"] == kind || m.get("closed").is_some() || m.get("error").is_some() {
            return (m, seen);
        }
        seen.push(m);
    }
}

fn http_status(e: &tungstenite::Error) -> u16 {
    match e {
        tungstenite::Error::Http(r) => r.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

fn create(s: &Server, t: &str, pos: [f32; 2], hp: u32) -> u64 {
    let r = s.call("POST", "/v1/entities", Some(t), Some(&json!({"components": {"unit": {"pos": pos, "hp": hp}}})));
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_u64().unwrap()
}

fn patch(s: &Server, t: &str, id: u64, unit: &J) {
    let r = s.call("PATCH", &format!("/v1/entities/{id}"), Some(t), Some(&json!({"components": {"unit": unit}})));
    assert_eq!(r.status, 200, "{}", r.body);
}

fn key(s: &Server, t: &str, name: &str, perms: &[&str]) -> String {
    let r = s.call("POST", "/v1/admin/api-keys", Some(t), Some(&json!({"name": name, "permissions": perms})));
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["key"].as_str().unwrap().to_string()
}

#[test]
fn credentials_are_refused_before_any_data() {
    let s = server(None);
    let t = s.admin();
    // No token: the first message is not an auth message.
    let mut ws = connect(&s.base, None);
    send(&mut ws, &json!({"type": "ping"}));
    assert_eq!(next(&mut ws)["closed"][0], 4401);
    // Bad token, by header and by message.
    assert_eq!(next(&mut connect(&s.base, Some("nope")))["closed"][0], 4401);
    let mut ws = connect(&s.base, None);
    send(&mut ws, &json!({"type": "auth", "token": "nope"}));
    assert_eq!(next(&mut ws)["closed"][0], 4401);
    // A key without read permission: forbidden, not unauthenticated.
    let w = key(&s, &t, "writer", &["write"]);
    let c = next(&mut connect(&s.base, Some(&w)));
    assert_eq!(c["closed"][0], 4403, "{c}");
    // A revoked key: refused when connecting, and an open stream is closed.
    let k = key(&s, &t, "reader", &["read"]);
    let mut open = connect(&s.base, Some(&k));
    send(&mut open, &json!({"type": "subscribe", "id": "u", "query": {"with": ["unit"]}}));
    assert_eq!(next(&mut open)["type"], "initial");
    assert_eq!(s.call("DELETE", "/v1/admin/api-keys/reader", Some(&t), None).status, 204);
    assert_eq!(next(&mut open)["closed"][0], 4401, "the revoked key's stream ends");
    assert_eq!(next(&mut connect(&s.base, Some(&k)))["closed"][0], 4401);
    // Unknown query parameters and compressions are refused.
    assert_eq!(http_status(&try_connect(&s.base, Some(&t), "?compression=gzip").unwrap_err()), 400);
    assert_eq!(http_status(&try_connect(&s.base, Some(&t), "?x=1").unwrap_err()), 400);
    // The refusals were counted.
    let m = s.agent.get(format!("{}/metrics", s.base)).call().unwrap().into_body().read_to_string().unwrap();
    assert!(m.lines().any(|l| l.starts_with("ecsdb_auth_failures_total") && !l.ends_with(" 0")), "{m}");
}

#[test]
fn ip_allowlist_and_client_limits() {
    // Loopback is not in the list: refused before the upgrade.
    let s = server(Some("[replication]\nallowed_ips = [\"10.0.0.0/8\"]\n"));
    let t = s.admin();
    let e = try_connect(&s.base, Some(&t), "").unwrap_err();
    assert_eq!(http_status(&e), 403);
    drop(s);
    let s = server(Some("[replication]\nallowed_ips = [\"127.0.0.0/8\"]\nmax_clients = 2\nmax_subscriptions = 2\n"));
    let t = s.admin();
    // Sockets that never authenticate do not take client slots.
    let idle: Vec<Ws> = (0..3).map(|_| connect(&s.base, None)).collect();
    let mut a = connect(&s.base, Some(&t));
    let mut b = connect(&s.base, None);
    send(&mut b, &json!({"type": "auth", "token": t}));
    for ws in [&mut a, &mut b] {
        send(ws, &json!({"type": "ping"}));
        assert_eq!(next(ws)["type"], "pong");
    }
    // A third client is refused before the upgrade, with or without a header.
    assert_eq!(http_status(&try_connect(&s.base, Some(&t), "").unwrap_err()), 503);
    assert_eq!(http_status(&try_connect(&s.base, None, "").unwrap_err()), 503);
    let h = s.call("GET", "/health", None, None);
    assert_eq!(h.body["stream_clients"], 2, "{}", h.body);
    // Subscriptions per connection are capped.
    for id in ["s1", "s2"] {
        send(&mut a, &json!({"type": "subscribe", "id": id, "query": {"with": ["unit"]}}));
        assert_eq!(next(&mut a)["type"], "initial");
    }
    send(&mut a, &json!({"type": "subscribe", "id": "s3", "query": {"with": ["unit"]}}));
    let e = next(&mut a);
    assert!(e["message"].as_str().unwrap().contains("max_subscriptions"), "{e}");
    // A slot is given back when a client leaves.
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut ws) = try_connect(&s.base, Some(&t), "?compression=none") {
            send(&mut ws, &json!({"type": "ping"}));
            assert_eq!(next(&mut ws)["type"], "pong");
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never given back");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The admin list shows the clients.
    let r = s.call("GET", "/v1/admin/streams", Some(&t), None);
    assert_eq!(r.status, 200);
    assert!(r.body["clients"].as_array().unwrap().iter().any(|c| c["subscriptions"] == 2), "{}", r.body);
    drop(idle);
}

#[test]
fn bad_messages_get_error_frames_and_the_connection_stays_usable() {
    let s = server(None);
    let t = s.admin();
    let mut ws = connect(&s.base, Some(&t));
    let bad = [
        "not json".to_string(),
        "[1, 2]".to_string(),
        json!({"type": "dance"}).to_string(),
        json!({"type": "subscribe", "id": "a", "query": {"with": ["unit"]}, "extra": 1}).to_string(),
        r#"{"type": "subscribe", "id": "a", "id": "b", "query": {"with": ["unit"]}}"#.to_string(),
        json!({"type": "subscribe", "id": "a", "query": {"with": ["nope"]}}).to_string(),
        json!({"type": "subscribe", "id": "a", "query": {"with": ["unit"], "bogus": true}}).to_string(),
        json!({"type": "subscribe", "id": "a", "query": {"with": ["unit"], "aggregates": [{"fn": "count"}]}})
            .to_string(),
        json!({"type": "subscribe", "id": "", "query": {}}).to_string(),
        json!({"type": "subscribe", "id": "a", "query": {"with": ["unit"]}, "hysteresis": -1}).to_string(),
        json!({"type": "unsubscribe", "id": "never"}).to_string(),
        json!({"type": "auth", "token": t}).to_string(),
    ];
    for b in &bad {
        ws.send(Message::Text(b.clone().into())).unwrap();
        let e = next(&mut ws);
        assert_eq!(e["type"], "error", "{b} → {e}");
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
    ws.send(Message::Binary(vec![1, 2, 3].into())).unwrap();
    let e = next(&mut ws);
    assert!(e["message"].as_str().unwrap().contains("binary"), "{e}");
    send(&mut ws, &json!({"type": "subscribe", "id": "a", "query": {"with": ["unit"]}}));
    assert_eq!(next(&mut ws)["type"], "initial", "still usable");
    // Nothing was half-applied: the refused subscriptions do not exist.
    create(&s, &t, [0.0, 0.0], 1);
    let d = next(&mut ws);
    assert_eq!((d["type"].as_str(), d["id"].as_str()), (Some("delta"), Some("a")), "{d}");
    // Over 1 MiB: closed with 1009 and a reason.
    let huge = format!(r#"{{"type": "ping", "id": "{}"}}"#, "x".repeat(1 << 21));
    let _ = ws.send(Message::Text(huge.into()));
    let c = next(&mut ws);
    assert!(c["closed"][0] == 1009 || c.get("error").is_some(), "{c}");
    if c["closed"][0] == 1009 {
        assert!(c["closed"][1].as_str().unwrap().contains("at most"), "{c}");
    }
}

#[test]
fn near_follows_its_entity_with_hysteresis() {
    let s = server(None);
    let t = s.admin();
    let me = create(&s, &t, [0.0, 0.0], 10);
    let other = create(&s, &t, [30.0, 0.0], 20);
    let mut ws = connect(&s.base, Some(&t));
    send(
        &mut ws,
        &json!({"type": "subscribe", "id": "aoi", "query": {"with": ["unit"]},
                "near": {"field": "unit.pos", "entity": me, "radius": 10.0}, "hysteresis": 0.2}),
    );
    let init = next(&mut ws);
    assert_eq!(init["rows"].as_array().unwrap().len(), 1, "only itself: {init}");
    // I walk towards the other: it enters (whole row).
    patch(&s, &t, me, &json!({"pos": [25.0, 0.0]}));
    let (d, _) = until(&mut ws, "delta");
    assert_eq!(d["entered"][0]["id"], other, "{d}");
    assert_eq!(d["entered"][0]["unit"]["hp"], 20);
    // 11 away: outside the radius, inside the margin (12): it stays.
    patch(&s, &t, me, &json!({"pos": [19.0, 0.0]}));
    patch(&s, &t, other, &json!({"hp": 21}));
    loop {
        let (d, _) = until(&mut ws, "delta");
        assert!(d["left"].as_array().unwrap().is_empty(), "{d}");
        if d["changed"].as_array().unwrap().iter().any(|c| c["id"] == other && c["unit"]["hp"] == 21) {
            break;
        }
    }
    // 13 away: past the margin, it leaves.
    patch(&s, &t, me, &json!({"pos": [17.0, 0.0]}));
    let (d, _) = until(&mut ws, "delta");
    assert_eq!(d["left"], json!([other]), "{d}");
    // Following an entity that is deleted ends the subscription with an error.
    let r = s.call("DELETE", &format!("/v1/entities/{me}"), Some(&t), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let (e, _) = until(&mut ws, "error");
    assert_eq!(e["id"], "aoi", "{e}");
}

#[test]
fn budgets_send_nearest_first_and_hold_the_rest() {
    let s = server(None);
    let t = s.admin();
    let ids: Vec<u64> = (0..40).map(|i| create(&s, &t, [i as f32, 0.0], 0)).collect();
    let mut ws = connect(&s.base, Some(&t));
    send(
        &mut ws,
        &json!({"type": "subscribe", "id": "b", "query": {"with": ["unit"]}, "hysteresis": 0.0,
                "near": {"field": "unit.pos", "point": [0.0, 0.0], "radius": 100.0},
                "budget": {"bytes_per_second": 2000}}),
    );
    assert_eq!(next(&mut ws)["rows"].as_array().unwrap().len(), 40);
    // Everyone changes at once, twice: the budget sends the nearest first,
    // the rest stay pending (coalesced), and arrive later.
    let ops: Vec<J> = ids.iter().map(|id| json!({"op": "set", "id": id, "components": {"unit": {"hp": 1}}})).collect();
    assert_eq!(s.call("POST", "/v1/transactions", Some(&t), Some(&json!({"ops": ops}))).status, 200);
    let ops: Vec<J> = ids.iter().map(|id| json!({"op": "set", "id": id, "components": {"unit": {"hp": 2}}})).collect();
    assert_eq!(s.call("POST", "/v1/transactions", Some(&t), Some(&json!({"ops": ops}))).status, 200);
    let (first, _) = until(&mut ws, "delta");
    let got: Vec<u64> = first["changed"].as_array().unwrap().iter().map(|c| c["id"].as_u64().unwrap()).collect();
    assert!(!got.is_empty() && got.len() < 40, "{first}");
    assert!(first["pending"].as_u64().unwrap() > 0, "{first}");
    assert_eq!(got[0], ids[0], "nearest first: {first}");
    // Over time every entity arrives, with its latest value only.
    let mut seen: std::collections::BTreeMap<u64, J> = std::collections::BTreeMap::new();
    for c in first["changed"].as_array().unwrap() {
        seen.insert(c["id"].as_u64().unwrap(), c["unit"]["hp"].clone());
    }
    while seen.len() < 40 || seen.values().any(|v| *v != 2) {
        let (d, _) = until(&mut ws, "delta");
        for c in d["changed"].as_array().unwrap() {
            seen.insert(c["id"].as_u64().unwrap(), c["unit"]["hp"].clone());
        }
    }
    let m = s.agent.get(format!("{}/metrics", s.base)).call().unwrap().into_body().read_to_string().unwrap();
    assert!(m.lines().any(|l| l.starts_with("ecsdb_stream_coalesced_total") && !l.ends_with(" 0")), "{m}");
}

#[test]
fn compression_and_resume() {
    let s = server(None);
    let t = s.admin();
    let a = create(&s, &t, [0.0, 0.0], 1);
    let b = create(&s, &t, [1.0, 0.0], 1);
    // zstd: binary frames that decode to the same messages.
    let mut z = try_connect(&s.base, Some(&t), "?compression=zstd").unwrap();
    send(&mut z, &json!({"type": "subscribe", "id": "q", "query": {"with": ["unit"]}}));
    match z.read().unwrap() {
        Message::Binary(bytes) => {
            let v: J = serde_json::from_slice(&zstd::decode_all(&bytes[..]).unwrap()).unwrap();
            assert_eq!(v["type"], "initial");
        }
        other => panic!("expected a binary frame, got {other:?}"),
    }
    // Resume: what changed since the sequence the client had.
    let mut ws = connect(&s.base, Some(&t));
    send(&mut ws, &json!({"type": "subscribe", "id": "q", "query": {"with": ["unit"]}}));
    let init = next(&mut ws);
    let at = init["seq"].as_u64().unwrap();
    let epoch = init["epoch"].as_str().unwrap().to_string();
    drop(ws);
    patch(&s, &t, a, &json!({"hp": 5}));
    assert_eq!(s.call("DELETE", &format!("/v1/entities/{b}"), Some(&t), None).status, 200);
    let c = create(&s, &t, [2.0, 0.0], 3);
    let mut ws = connect(&s.base, Some(&t));
    // Without the server run's epoch a sequence means nothing: a fresh initial.
    send(&mut ws, &json!({"type": "subscribe", "id": "p", "query": {"with": ["unit"]}, "from_seq": at}));
    assert_eq!(next(&mut ws)["type"], "initial");
    send(
        &mut ws,
        &json!({"type": "subscribe", "id": "q", "query": {"with": ["unit"]}, "from_seq": at, "epoch": epoch}),
    );
    let d = next(&mut ws);
    assert_eq!(d["type"], "delta", "{d}");
    assert_eq!(d["resumed"], true);
    assert_eq!(d["from_seq"], at);
    let entered: Vec<u64> = d["entered"].as_array().unwrap().iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(entered, vec![a, c], "only what changed: {d}");
    assert_eq!(d["left"], json!([b]));
    // A sequence from the future, or one the server no longer holds: a fresh initial.
    send(
        &mut ws,
        &json!({"type": "subscribe", "id": "r", "query": {"with": ["unit"]}, "from_seq": 1_000_000, "epoch": epoch}),
    );
    assert_eq!(next(&mut ws)["type"], "initial");
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_client_that_stops_reading_costs_bounded_memory() {
    let s = server(None);
    let t = s.admin();
    // 500 entities with 1 KiB notes.
    let ops: Vec<J> = (0..500)
        .map(|i| json!({"op": "create", "components": {"unit": {"pos": [i as f32, 0.0], "hp": 0, "note": "n".repeat(1024)}}}))
        .collect();
    let r = s.call("POST", "/v1/transactions", Some(&t), Some(&json!({"ops": ops})));
    assert_eq!(r.status, 200, "{}", r.body);
    let ids: Vec<u64> = r.body["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    let mut slow = connect(&s.base, Some(&t));
    send(&mut slow, &json!({"type": "subscribe", "id": "all", "query": {"with": ["unit"]}}));
    assert_eq!(next(&mut slow)["type"], "initial");
    // It stops reading. 200 commits rewrite every note (~100 MiB of deltas).
    let pid = s.child.id();
    let before = rss_kib(pid);
    for round in 0..200 {
        let note = format!("{round:04}").repeat(256);
        let ops: Vec<J> = ids
            .iter()
            .map(|id| json!({"op": "set", "id": id, "components": {"unit": {"note": note, "hp": round}}}))
            .collect();
        assert_eq!(s.call("POST", "/v1/transactions", Some(&t), Some(&json!({"ops": ops}))).status, 200);
    }
    let grown = rss_kib(pid).saturating_sub(before);
    assert!(grown < 48 * 1024, "the server grew by {grown} KiB for one stalled client");
    let r = s.call("GET", "/v1/admin/streams", Some(&t), None);
    let c = &r.body["clients"][0];
    assert!(c["pending_rows"].as_u64().unwrap() <= 500, "{c}");
    // It reads again: told it fell behind, then the latest values only.
    let mut behind = false;
    loop {
        let m = next(&mut slow);
        match m["type"].as_str() {
            Some("behind") => behind = true,
            Some("delta") => {
                if m["changed"].as_array().unwrap().iter().any(|c| c["unit"]["hp"] == 199) {
                    break;
                }
            }
            _ => panic!("{m}"),
        }
    }
    assert!(behind, "the client was told it fell behind");
    // After a pong everything owed has arrived: one more round of writes,
    // then every entity's latest value is in hand before the pong.
    let ops: Vec<J> =
        ids.iter().map(|id| json!({"op": "set", "id": id, "components": {"unit": {"hp": 1000}}})).collect();
    assert_eq!(s.call("POST", "/v1/transactions", Some(&t), Some(&json!({"ops": ops}))).status, 200);
    send(&mut slow, &json!({"type": "ping"}));
    let mut hp: std::collections::BTreeMap<u64, J> = std::collections::BTreeMap::new();
    loop {
        let m = next(&mut slow);
        if m["type"] == "pong" {
            break;
        }
        for c in m["changed"].as_array().into_iter().flatten().chain(m["entered"].as_array().into_iter().flatten()) {
            if !c["unit"]["hp"].is_null() {
                hp.insert(c["id"].as_u64().unwrap(), c["unit"]["hp"].clone());
            }
        }
    }
    assert!(ids.iter().all(|id| hp.get(id) == Some(&json!(1000))), "all 500 rows current before the pong");
}

#[test]
fn streams_are_also_served_on_the_replication_listener() {
    let s = server(Some("[replication]\nenabled = true\nbind = \"127.0.0.1:0\"\n"));
    let t = s.admin();
    let addr = s.stream_addr.clone().expect("a second listener");
    assert_ne!(format!("http://{addr}"), s.base);
    let mut ws = connect(&format!("http://{addr}"), Some(&t));
    send(&mut ws, &json!({"type": "subscribe", "id": "u", "query": {"with": ["unit"]}}));
    assert_eq!(next(&mut ws)["type"], "initial");
    let id = create(&s, &t, [1.0, 1.0], 3);
    let d = next(&mut ws);
    assert_eq!(d["entered"][0]["id"], id, "{d}");
    // Only streams and health there: the data API is not.
    let r = s.agent.get(format!("http://{addr}/v1/schema")).call().unwrap();
    assert_eq!(r.status(), 404);
    let r = s.agent.get(format!("http://{addr}/health")).call().unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn subscriptions_memory_is_bounded_server_wide() {
    let s = server(Some("[replication]\nmax_stream_memory_mb = 1\n"));
    let t = s.admin();
    let ops: Vec<J> = (0..1500)
        .map(|i| json!({"op": "create", "components": {"unit": {"pos": [i as f32, 0.0], "hp": 0, "note": "n".repeat(1024)}}}))
        .collect();
    assert_eq!(s.call("POST", "/v1/transactions", Some(&t), Some(&json!({"ops": ops}))).status, 200);
    let mut ws = connect(&s.base, Some(&t));
    // ~1.5 MiB of rows: refused, with the reason.
    send(&mut ws, &json!({"type": "subscribe", "id": "big", "query": {"with": ["unit"]}}));
    let e = next(&mut ws);
    assert_eq!(e["type"], "error", "{e}");
    assert!(e["message"].as_str().unwrap().contains("max_stream_memory_mb"), "{e}");
    // A small one fits; the refused one holds nothing.
    send(
        &mut ws,
        &json!({"type": "subscribe", "id": "small", "query": {"with": ["unit"], "select": ["unit.hp"],
        "filters": [{"field": "unit.pos", "op": "eq", "value": [1.0, 0.0]}]}}),
    );
    assert_eq!(next(&mut ws)["type"], "initial");
    let r = s.call("GET", "/v1/admin/streams", Some(&t), None);
    let mem = r.body["clients"][0]["memory_bytes"].as_u64().unwrap();
    assert!(mem > 0 && mem < 1 << 20, "{}", r.body);
    let m = s.agent.get(format!("{}/metrics", s.base)).call().unwrap().into_body().read_to_string().unwrap();
    assert!(m.lines().any(|l| l.starts_with("ecsdb_stream_memory_bytes ") && !l.ends_with(" 0")), "{m}");
    // Rows that grow past the limit drop the subscription that holds them.
    send(
        &mut ws,
        &json!({"type": "subscribe", "id": "some", "query": {"with": ["unit"], "select": ["unit.note"],
        "filters": [{"field": "unit.hp", "op": "eq", "value": 1}]}}),
    );
    assert_eq!(next(&mut ws)["type"], "initial");
    let r = s.call("POST", "/v1/query", Some(&t), Some(&json!({"with": ["unit"], "select": ["unit.hp"]})));
    let ops: Vec<J> = r.body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| json!({"op": "set", "id": row["id"], "components": {"unit": {"hp": 1}}}))
        .collect();
    assert_eq!(s.call("POST", "/v1/transactions", Some(&t), Some(&json!({"ops": ops}))).status, 200);
    let (e, _) = until(&mut ws, "error");
    assert_eq!(e["id"], "some", "{e}");
    assert!(e["message"].as_str().unwrap().contains("max_stream_memory_mb"), "{e}");
    // The connection goes on.
    send(&mut ws, &json!({"type": "ping"}));
    assert_eq!(until(&mut ws, "pong").0["type"], "pong");
}

/// Regressions from a hostile review of the stream.
#[test]
fn queries_without_tables_migrations_and_limits() {
    let s = server(Some("[server]\nmax_connections_per_ip = 8\n[rate_limit]\nmax_unauthenticated = 5\n"));
    let t = s.admin();
    // Authenticated streams do not use the allowance for requests without credentials.
    let many: Vec<Ws> = (0..6).map(|_| connect(&s.base, Some(&t))).collect();
    drop(many);
    // Queries naming no table, or only `without`, follow every entity.
    let mut ws = connect(&s.base, Some(&t));
    send(&mut ws, &json!({"type": "subscribe", "id": "all", "query": {}}));
    assert_eq!(next(&mut ws)["type"], "initial");
    send(&mut ws, &json!({"type": "subscribe", "id": "wo", "query": {"without": ["unit"]}}));
    assert_eq!(next(&mut ws)["type"], "initial");
    let id = create(&s, &t, [1.0, 2.0], 7);
    let (d, _) = until(&mut ws, "delta");
    assert_eq!((d["id"].as_str(), d["entered"][0]["id"].as_u64()), (Some("all"), Some(id)), "{d}");
    // A migration that adds a field sends every row whole, with it.
    let m = "[migration]\nfrom_version = \"1.0.0\"\nto_version = \"1.1.0\"\n\n[[operations]]\ntype = \"add_field\"\ntable = \"unit\"\nfield = { name = \"kind\", type = \"u32\" }\ndefault_value = 5\n";
    send(&mut ws, &json!({"type": "subscribe", "id": "units", "query": {"with": ["unit"]}}));
    assert_eq!(next(&mut ws)["type"], "initial");
    let r = s.call("POST", "/v1/admin/migrations", Some(&t), Some(&json!({"migration": m})));
    assert_eq!(r.status, 200, "{}", r.body);
    loop {
        let (d, _) = until(&mut ws, "delta");
        if d["id"] == "units" {
            assert_eq!(d["entered"][0]["unit"]["kind"], 5, "{d}");
            break;
        }
    }
    // Limits: more rows than a subscription may hold, a budget of nothing,
    // hysteresis without `near`.
    for (q, word) in [
        (json!({"type": "subscribe", "id": "x", "query": {"with": ["unit"], "limit": 10_001}}), "limit"),
        (
            json!({"type": "subscribe", "id": "x", "query": {"with": ["unit"]}, "budget": {"bytes_per_second": 0}}),
            "budget",
        ),
        (json!({"type": "subscribe", "id": "x", "query": {"with": ["unit"]}, "hysteresis": 0.5}), "near"),
        (json!({"type": "budget", "bytes_per_second": 1}), "at least"),
    ] {
        send(&mut ws, &q);
        let e = until(&mut ws, "error").0;
        assert!(e["message"].as_str().unwrap().contains(word), "{q}: {e}");
    }
    // Few subscriptions per connection may run their query again on each commit.
    for i in 0..8 {
        send(
            &mut ws,
            &json!({"type": "subscribe", "id": format!("o{i}"), "query": {"with": ["unit"], "order_by": {"field": "unit.hp"}, "limit": 5}}),
        );
        assert_eq!(until(&mut ws, "initial").0["type"], "initial");
    }
    send(
        &mut ws,
        &json!({"type": "subscribe", "id": "o9", "query": {"with": ["unit"], "order_by": {"field": "unit.hp"}, "limit": 5}}),
    );
    let e = until(&mut ws, "error").0;
    assert!(e["message"].as_str().unwrap().contains("order_by"), "{e}");
    // ... and per user over all connections (16).
    let rerun = |id: String| json!({"type": "subscribe", "id": id, "query": {"with": ["unit"], "order_by": {"field": "unit.hp"}, "limit": 5}});
    let mut second = connect(&s.base, Some(&t));
    for i in 0..8 {
        send(&mut second, &rerun(format!("p{i}")));
        assert_eq!(until(&mut second, "initial").0["type"], "initial");
    }
    let mut third = connect(&s.base, Some(&t));
    send(&mut third, &rerun("q".into()));
    let e = until(&mut third, "error").0;
    assert!(e["message"].as_str().unwrap().contains("a user may hold"), "{e}");
    // Given back when a connection closes.
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        send(&mut third, &rerun("q".into()));
        if until(&mut third, "initial").0["type"] == "initial" {
            break;
        }
        assert!(Instant::now() < deadline, "re-run slots were never given back");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(third);
    // Close reasons fit a close frame and do not echo what the client sent.
    let mut b = connect(&s.base, None);
    send(&mut b, &json!({"type": "auth", "token": "x", "zzz": "y".repeat(600)}));
    let c = next(&mut b);
    assert_eq!(c["closed"][0], 4401, "{c}");
    let reason = c["closed"][1].as_str().unwrap();
    assert!(reason.len() <= 123 && !reason.contains("yyy"), "{reason}");
    // Streams count against the connections one address may hold.
    let held: Vec<Ws> = (0..7).map(|_| connect(&s.base, Some(&t))).collect();
    let e = try_connect(&s.base, Some(&t), "").unwrap_err();
    assert_eq!(http_status(&e), 429);
    drop(held);
    // Two credentials, or no upgrade: JSON refusals.
    let r = s.agent.get(format!("{}/v1/stream", s.base)).call().unwrap();
    assert_eq!(r.status(), 400);
    let body: J = serde_json::from_str(&r.into_body().read_to_string().unwrap()).unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[test]
fn failed_attempts_do_not_lock_out_valid_credentials() {
    let s = server(Some("[rate_limit]\nmax_unauthenticated = 2\n"));
    let t = s.admin();
    for _ in 0..3 {
        assert_eq!(next(&mut connect(&s.base, Some("bad")))["closed"][0], 4401);
    }
    // The address used up its allowance for failed attempts: a browser-style
    // upgrade (no header) waits, a valid header does not.
    assert_eq!(http_status(&try_connect(&s.base, None, "").unwrap_err()), 429);
    let mut ws = connect(&s.base, Some(&t));
    send(&mut ws, &json!({"type": "ping"}));
    assert_eq!(next(&mut ws)["type"], "pong");
}
