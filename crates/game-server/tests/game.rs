//! The game server through its real binary: accounts, refusals, bans,
//! the player limit, rate limits, headers, the world over `WebSockets`, and
//! kill -9 with everyone put back where they were.
#![allow(clippy::unwrap_used, clippy::many_single_char_names)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::{ADMIN_TOKEN, WorldCache, drained, next, send, start, until, ws_connect, ws_refused};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn accounts_bad_input_bans_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(&dir.path().join("data"), &[("CORS_ALLOWED_ORIGINS", "https://play.example")]);
    let creds = json!({"username": "Ana", "password": "password-123", "email": "ana@example.com"});
    let r = g.post("/register", &creds);
    assert_eq!(r.status, 201, "{}", r.body);
    // Seed 001's security headers, on every response.
    assert_eq!(r.header("content-security-policy"), Some("default-src 'self'"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(g.post("/register", &json!({"username": "ana", "password": "password-456"})).status, 409);
    assert_eq!(
        g.post("/register", &json!({"username": "bob", "password": "password-456", "email": "ANA@example.com"})).status,
        409
    );
    for bad in [
        json!({"username": "bob", "password": "short"}),
        json!({"username": "b", "password": "password-123"}),
        json!({"username": "bob bob", "password": "password-123"}),
        json!({"username": "bob", "password": "password-123", "admin": true}),
        json!({"username": 5, "password": "password-123"}),
        json!({"username": "bob", "password": "x".repeat(200)}),
        json!({"username": "bob", "password": "password-123", "email": "nope"}),
        json!([]),
    ] {
        let r = g.post("/register", &bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", r.body);
    }
    // Not JSON, and too large.
    let r = g.agent.post(&format!("{}/register", g.base)).header("content-type", "text/plain").send("x").unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let big = json!({"username": "bob", "password": "p".repeat(20_000)});
    assert_eq!(g.post("/register", &big).status, 413);
    // Nothing above created an account.
    assert_eq!(g.post("/login", &json!({"username": "bob", "password": "password-456"})).status, 401);

    let r = g.post("/login", &json!({"username": "ANA", "password": "password-123"}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["expires_in"], 86_400);
    let token = r.body["token"].as_str().unwrap().to_string();
    assert_eq!(g.post("/login", &json!({"username": "ana", "password": "password-124"})).status, 401);
    assert_eq!(g.post("/login", &json!({"username": "nobody", "password": "password-124"})).status, 401);
    let me = g.call("GET", "/me", Some(&token), None);
    assert_eq!(me.status, 200);
    assert_eq!(me.body["level"], 1);
    assert_eq!(me.body["username"], "Ana");

    // CORS for the configured origin only.
    let r = g.agent.get(&format!("{}/health", g.base)).header("origin", "https://play.example").call().unwrap();
    assert_eq!(r.headers().get("access-control-allow-origin").unwrap(), "https://play.example");
    let r = g.agent.get(&format!("{}/health", g.base)).header("origin", "https://evil.example").call().unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // Bad tokens at the WebSocket: refused before the upgrade.
    let url = g.ws_url();
    assert_eq!(ws_refused(&url, Some("garbage")), 401);
    let mut forged = token.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    assert_eq!(ws_refused(&url, Some(&forged)), 401);
    // ... or closed with 4401 when sent as the first message.
    let mut ws = ws_connect(&url, None).unwrap();
    send(&mut ws, &json!({"type": "auth", "token": "garbage"}));
    let m = until(&mut ws, WAIT, |m| m.get("close").is_some());
    assert_eq!(m["close"], 4401, "{m}");
    let mut ws = ws_connect(&url, None).unwrap();
    send(&mut ws, &json!({"type": "input", "x": 1, "y": 0}));
    assert_eq!(until(&mut ws, WAIT, |m| m.get("close").is_some())["close"], 4401);

    // A connected player is banned: the socket closes with the reason;
    // login and the WebSocket are refused with it.
    let mut ws = ws_connect(&url, Some(&token)).unwrap();
    until(&mut ws, WAIT, |m| m["type"] == "welcome");
    assert_eq!(g.call("POST", "/admin/ban", None, Some(&json!({"username": "ana", "reason": "x"}))).status, 401);
    assert_eq!(g.call("POST", "/admin/ban", Some("wrong"), Some(&json!({"username": "ana"}))).status, 401);
    let r = g.call("POST", "/admin/ban", Some(ADMIN_TOKEN), Some(&json!({"username": "ana", "reason": "cheating"})));
    assert_eq!(r.status, 200, "{}", r.body);
    let m = until(&mut ws, WAIT, |m| m.get("close").is_some());
    assert_eq!(m["close"], 4403);
    assert!(m["reason"].as_str().unwrap().contains("cheating"), "{m}");
    let r = g.post("/login", &json!({"username": "ana", "password": "password-123"}));
    assert_eq!(r.status, 403);
    assert_eq!(r.body["reason"], "cheating");
    assert_eq!(ws_refused(&url, Some(&token)), 403);
    assert_eq!(g.call("GET", "/me", Some(&token), None).status, 403);
    // Unbanned: the token works again.
    let r = g.call("POST", "/admin/unban", Some(ADMIN_TOKEN), Some(&json!({"username": "ana"})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(g.call("GET", "/me", Some(&token), None).status, 200);

    // Logout ends the session: the token is refused everywhere.
    let mut ws = ws_connect(&url, Some(&token)).unwrap();
    until(&mut ws, WAIT, |m| m["type"] == "welcome");
    assert_eq!(g.call("POST", "/logout", Some(&token), None).status, 200);
    assert_eq!(until(&mut ws, WAIT, |m| m.get("close").is_some())["close"], 4401);
    assert_eq!(g.call("GET", "/me", Some(&token), None).status, 401);
    assert_eq!(ws_refused(&url, Some(&token)), 401);
    assert_eq!(g.call("POST", "/logout", Some(&token), None).status, 401);
    assert_eq!(g.call("POST", "/logout", None, None).status, 401);
}

#[test]
fn admin_api_is_off_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(&dir.path().join("data"), &[("GAME_ADMIN_TOKEN", "")]);
    let r = g.call("POST", "/admin/ban", Some(""), Some(&json!({"username": "x"})));
    assert_eq!(r.status, 404);
}

#[test]
fn player_limit_rate_limits_and_the_ws_port() {
    let dir = tempfile::tempdir().unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ws_port = free.local_addr().unwrap().port().to_string();
    drop(free);
    let g = start(
        &dir.path().join("data"),
        &[("GAME_MAX_PLAYERS", "2"), ("RATE_LIMIT_MAX", "20"), ("SERVER_WS_PORT", &ws_port)],
    );
    let tokens: Vec<String> = ["pl1", "pl2", "pl3"].iter().map(|u| g.login(u)).collect();
    // Six requests spent; /ws on the WebSocket port as well as the main one.
    let ws_url = format!("{}/ws", g.ws_base.clone().unwrap());
    let mut a = ws_connect(&ws_url, Some(&tokens[0])).unwrap();
    until(&mut a, WAIT, |m| m["type"] == "welcome");
    let mut b = ws_connect(&g.ws_url(), Some(&tokens[1])).unwrap();
    until(&mut b, WAIT, |m| m["type"] == "welcome");
    assert_eq!(g.health()["players_online"], 2);
    let mut c = ws_connect(&ws_url, Some(&tokens[2])).unwrap();
    let m = until(&mut c, WAIT, |m| m["type"] == "error");
    assert_eq!(m["code"], "server_full");
    assert!(m["message"].as_str().unwrap().contains("GAME_MAX_PLAYERS"));
    assert_eq!(until(&mut c, WAIT, |m| m.get("close").is_some())["close"], 1013);
    // The same player again replaces its first connection (not a third player).
    let mut b2 = ws_connect(&g.ws_url(), Some(&tokens[1])).unwrap();
    until(&mut b2, WAIT, |m| m["type"] == "welcome");
    assert_eq!(until(&mut b, WAIT, |m| m.get("close").is_some())["close"], 4409);
    assert_eq!(g.health()["players_online"], 2);
    // A player leaving makes room.
    drop(a);
    let mut tries = 0;
    loop {
        let mut c = ws_connect(&ws_url, Some(&tokens[2])).unwrap();
        let m = until(&mut c, WAIT, |m| m["type"] == "welcome" || m["type"] == "error");
        if m["type"] == "welcome" {
            break;
        }
        tries += 1;
        assert!(tries < 50, "no room after a player left");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Rate limit: the window's allowance (20) runs out; /health is not limited.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(g.post("/login", &json!({"username": "pl1", "password": "wrong-password"})).status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let r = g.post("/login", &json!({"username": "pl1", "password": "password-123"}));
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some_and(|v| v.parse::<u64>().unwrap() >= 1));
    assert_eq!(r.body["error"], "rate_limited");
    assert_eq!(g.call("GET", "/health", None, None).status, 200);
    let m = g.call("GET", "/metrics", None, None);
    let text = m.body.as_str().unwrap();
    assert!(text.contains("game_rate_limited_total"), "{text}");
    // b2 is still in; the third player's socket closed with the loop.
    assert!(text.contains("game_players_online 1"), "{text}");
    assert!(text.contains("game_tick_duration_seconds_bucket"), "{text}");
    assert!(text.contains("http_requests_total{method=\"POST\",route=\"/login\",status=\"429\"}"), "{text}");
}

#[test]
fn players_see_each_other_move_and_bad_messages_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(&dir.path().join("data"), &[]);
    let (ta, tb) = (g.login("alice"), g.login("bob"));
    let mut a = ws_connect(&g.ws_url(), Some(&ta)).unwrap();
    let wa = until(&mut a, WAIT, |m| m["type"] == "welcome");
    let mut b = ws_connect(&g.ws_url(), Some(&tb)).unwrap();
    let wb = until(&mut b, WAIT, |m| m["type"] == "welcome");
    let (ida, idb) = (wa["player_id"].as_u64().unwrap(), wb["player_id"].as_u64().unwrap());
    let mut ca = WorldCache::default();
    // In a 400-unit world everyone is within view: A sees B enter.
    let m = until(&mut a, WAIT, |m| {
        ca.apply(m);
        ca.rows.contains_key(&idb)
    });
    assert!(m["type"] == "delta" || m["type"] == "initial");
    assert!(ca.rows.contains_key(&ida), "a player sees itself");
    assert!(ca.rows.values().any(|r| r["body"]["kind"] == "rock"), "scenery is in view");
    assert_eq!(ca.rows[&idb]["label"]["name"], "bob");
    let before = ca.position(idb).unwrap();
    // B moves; A's copy follows.
    let dir_x = if before.0 < 200.0 { 1 } else { -1 };
    send(&mut b, &json!({"type": "input", "x": dir_x, "y": 0}));
    until(&mut a, WAIT, |m| {
        ca.apply(m);
        ca.position(idb).is_some_and(|p| (p.0 - before.0).abs() > 20.0)
    });
    // Malformed messages get an error; the connection stays usable.
    for bad in
        [r#"{"type":"warp"}"#, r#"{"type":"input","x":"fast","y":0}"#, "nope", r#"{"type":"input","x":1,"y":0,"z":1}"#]
    {
        b.send(tungstenite::Message::Text(bad.into())).unwrap();
        let m = until(&mut b, WAIT, |m| m["type"] == "error");
        assert_eq!(m["code"], "bad_message", "{bad}");
    }
    b.send(tungstenite::Message::Binary(vec![1, 2, 3].into())).unwrap();
    until(&mut b, WAIT, |m| m["type"] == "error");
    send(&mut b, &json!({"type": "ping"}));
    until(&mut b, WAIT, |m| m["type"] == "pong");
    // Oversized message: the connection is closed.
    let big = format!(r#"{{"type":"input","x":1,"y":0,"pad":"{}"}}"#, "x".repeat(10_000));
    let _ = b.send(tungstenite::Message::Text(big.into()));
    let m = until(&mut b, WAIT, |m| m.get("close").is_some());
    assert!(m["close"].is_null() || m["close"] == 1009, "{m}");
    // B's departure reaches A as `left`.
    until(&mut a, WAIT, |m| {
        ca.apply(m);
        !ca.rows.contains_key(&idb)
    });
    // The HUD message carries the player's vitals.
    let hud = until(&mut a, WAIT, |m| m["type"] == "you");
    assert_eq!(hud["level"], 1);
    assert!(hud["hunger"].as_f64().unwrap() <= 100.0);
}

#[test]
fn kill_9_puts_everyone_back_where_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let g = start(&data, &[]);
    let token = g.login("runner");
    let mut ws = ws_connect(&g.ws_url(), Some(&token)).unwrap();
    let w = until(&mut ws, WAIT, |m| m["type"] == "welcome");
    let id = w["player_id"].as_u64().unwrap();
    let start_pos = g.call("GET", "/me", Some(&token), None).body["position"].clone();
    send(&mut ws, &json!({"type": "input", "x": 0.7, "y": 0.7}));
    // Play long enough for the vitals to drain (once a second).
    let mut cache = WorldCache::default();
    until(&mut ws, WAIT, |m| {
        cache.apply(m);
        m["type"] == "you" && drained(m, 99.0)
    });
    send(&mut ws, &json!({"type": "input", "x": 0, "y": 0}));
    // Wait until the player stands still (two identical readings).
    let mut last = serde_json::Value::Null;
    let me = loop {
        std::thread::sleep(Duration::from_millis(300));
        let me = g.call("GET", "/me", Some(&token), None).body;
        if me["position"] == last["position"] && me["hunger"] == last["hunger"] {
            break me;
        }
        last = me;
    };
    assert_eq!(me["online"], true);
    assert_ne!(me["position"], start_pos, "the player moved");
    drop(ws);
    let data = g.kill();

    let g = start(&data, &[]);
    // The token survives the restart (the secret is kept in the data dir).
    let after = g.call("GET", "/me", Some(&token), None);
    assert_eq!(after.status, 200, "{}", after.body);
    let after = after.body;
    assert_eq!(after["online"], false);
    for k in ["position", "level", "deaths"] {
        assert_eq!(after[k], me[k], "{k} after kill -9: {after} vs {me}");
    }
    // Vitals change once a second: at most one step after the last reading
    // (a player who stopped on berries or in water keeps that one full).
    for k in ["health", "hunger", "thirst"] {
        let (a, b) = (after[k].as_f64().unwrap(), me[k].as_f64().unwrap());
        assert!((a - b).abs() <= 20.0, "{k}: {a} vs {b}");
    }
    assert!(drained(&after, 100.0), "neither hunger nor thirst drained: {after}");
    // Reconnecting puts the body back there.
    let mut ws = ws_connect(&g.ws_url(), Some(&token)).unwrap();
    let mut cache = WorldCache::default();
    until(&mut ws, WAIT, |m| {
        cache.apply(m);
        cache.rows.contains_key(&id)
    });
    let p = cache.position(id).unwrap();
    let want = (me["position"][0].as_f64().unwrap(), me["position"][1].as_f64().unwrap());
    assert!((p.0 - want.0).abs() < 1e-3 && (p.1 - want.1).abs() < 1e-3, "{p:?} vs {want:?}");
    assert_eq!(g.health()["status"], "healthy");
    assert!(next(&mut ws, Duration::from_millis(100)).is_some() || g.health()["players_online"] == 1);
}

#[test]
fn bad_configuration_is_refused_with_the_variable_named() {
    let dir = tempfile::tempdir().unwrap();
    for (k, v) in
        [("GAME_TICK_RATE", "0"), ("GAME_MAX_PLAYERS", "lots"), ("JWT_SECRET", "short"), ("LOG_FORMAT", "xml")]
    {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_game-server"))
            .args(["serve", "--data-dir", dir.path().join("d").to_str().unwrap(), "--port", "0"])
            .env(k, v)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{k}={v} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(k), "{k}: {err}");
    }
    // A malformed .env is named too.
    let env_file = dir.path().join("bad.env");
    std::fs::write(&env_file, "SERVER_PORT 8080\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_game-server"))
        .args(["serve", "--env-file", env_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
}

fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).unwrap().parse().unwrap()
}

/// What a hostile review found, each kept fixed.
#[test]
fn registrations_idle_connections_close_reasons_floods_and_framework_errors() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let g = start(
        &dir.path().join("data"),
        &[("SERVER_HEADER_TIMEOUT", "1"), ("SERVER_MAX_CONNECTIONS_PER_IP", "8"), ("CORS_ALLOWED_ORIGINS", "*")],
    );
    // Registering does not grow memory by argon2's 19 MiB per account.
    g.login("warmup");
    let before = rss_kb(g.child.id());
    for i in 0..16 {
        let r = g.post("/register", &json!({"username": format!("mem{i}"), "password": "password-123"}));
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let grown = rss_kb(g.child.id()).saturating_sub(before);
    assert!(grown < 100 * 1024, "RSS grew by {grown} KiB over 16 registrations");

    // A connection that sends nothing is closed after the header timeout,
    // and one address holds at most 8.
    let addr = g.base.trim_start_matches("http://").to_string();
    let mut idle = std::net::TcpStream::connect(&addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    assert!(matches!(idle.read(&mut buf), Ok(0) | Err(_)), "an idle connection was kept open");
    let held: Vec<std::net::TcpStream> = (0..8).map(|_| std::net::TcpStream::connect(&addr).unwrap()).collect();
    let mut extra = std::net::TcpStream::connect(&addr).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = extra.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n");
    assert!(matches!(extra.read(&mut buf), Ok(0) | Err(_)), "a ninth connection from one address was served");
    drop(held);
    std::thread::sleep(Duration::from_millis(200));

    // CORS "*" allows any origin (and the server starts).
    let r = g.agent.get(&format!("{}/health", g.base)).header("origin", "https://any.example").call().unwrap();
    assert_eq!(r.headers().get("access-control-allow-origin").unwrap(), "*");
    // Preflights and framework errors carry the security headers and JSON.
    let r = g
        .agent
        .options(&format!("{}/login", g.base))
        .header("origin", "https://any.example")
        .header("access-control-request-method", "POST")
        .call()
        .unwrap();
    assert_eq!(r.headers().get("x-frame-options").unwrap(), "DENY");
    let r = g.call("GET", "/login", None, None);
    assert_eq!(r.status, 405);
    assert_eq!(r.body["error"], "method_not_allowed");
    let r = g.post("/register", &json!({"username": "big", "password": "p".repeat(20_000)}));
    assert_eq!(r.status, 413);
    assert_eq!(r.body["error"], "payload_too_large");
    let r = g.call("POST", "/admin/ban", Some(ADMIN_TOKEN), Some(&json!({"username": "nobody-here"})));
    assert_eq!(r.status, 404);

    // A ban reason of multi-byte characters still arrives in a valid close frame.
    let token = g.login("carol");
    let mut ws = ws_connect(&g.ws_url(), Some(&token)).unwrap();
    until(&mut ws, WAIT, |m| m["type"] == "welcome");
    let reason = "é".repeat(100);
    let r = g.call("POST", "/admin/ban", Some(ADMIN_TOKEN), Some(&json!({"username": "carol", "reason": reason})));
    assert_eq!(r.status, 200, "{}", r.body);
    let m = until(&mut ws, WAIT, |m| m.get("close").is_some());
    assert_eq!(m["close"], 4403, "{m}");
    assert!(m["reason"].as_str().unwrap().starts_with("banned: é"), "{m}");

    // Pings count against the flood limit.
    let token = g.login("pinger");
    let mut ws = ws_connect(&g.ws_url(), Some(&token)).unwrap();
    until(&mut ws, WAIT, |m| m["type"] == "welcome");
    for _ in 0..200 {
        if ws.send(tungstenite::Message::Ping(vec![0u8; 100].into())).is_err() {
            break;
        }
    }
    let m = until(&mut ws, WAIT, |m| m.get("close").is_some());
    assert!(m["close"] == 1008 || m["close"].is_null(), "{m}");
    let h = g.health();
    assert_eq!(h["players_online"], 0, "{h}");
}
