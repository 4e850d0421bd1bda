//! Attacks replayed against the real server binary: system rows through the
//! data API, forged sessions, slow and flooding clients, rate limits,
//! log injection, leaked paths, and the modes of every file the tools write.
//! A short version runs in `cargo test`; `ECSDB_ATTACK_SCALE=N` multiplies
//! the request counts of the floods and guess storms (the long suite:
//! `ECSDB_ATTACK_SCALE=10 cargo test --release -p ecsdb-cli --test attacks`).
//! Every attack is bounded in count and time, on loopback only.
#![allow(clippy::unwrap_used)]
#![allow(clippy::many_single_char_names)]

#[path = "support/server.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value as J, json};
use support::{SECRET, spawn, spawn_logged};

/// How many times the short suite's request counts to send.
fn scale() -> usize {
    std::env::var("ECSDB_ATTACK_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(1).clamp(1, 100)
}

fn port(base: &str) -> u16 {
    base.rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap()
}

/// A TCP connection to the server from a chosen loopback address.
fn connect_from(from: &str, port: u16) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src: SocketAddr = SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0);
    sock.bind(&src.into()).unwrap();
    let dst: SocketAddr = SocketAddr::new("127.0.0.1".parse().unwrap(), port);
    sock.connect(&dst.into()).unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Send a raw request and read the answer until the server closes.
fn raw(from: &str, port: u16, request: &str) -> (u16, String) {
    let mut s = connect_from(from, port);
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

/// Whether the server closed the connection within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 512];
    let start = Instant::now();
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
        if start.elapsed() > within {
            return false;
        }
    }
}

fn claims(token: &str) -> J {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn craft(claims: &J) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// The data API never shows, counts or changes a system row, whatever
/// ids and operations a `ReadOnly` or `ReadWrite` client sends; a session id
/// of another user does not authenticate.
#[test]
fn system_rows_are_out_of_reach_of_the_data_api() {
    let s = spawn(tempfile::tempdir().unwrap(), &[], None);
    let admin = s.admin();
    let rw = s.user(&admin, "writer", "ReadWrite");
    let ro = s.user(&admin, "reader", "ReadOnly");
    let key = s.call(
        "POST",
        "/v1/admin/api-keys",
        Some(&admin),
        Some(&json!({"name": "svc", "permissions": ["read", "write"]})),
    );
    assert_eq!(key.status, 201);
    let key = key.body["key"].as_str().unwrap().to_string();
    // Users, sessions and keys are the first entities: ids of index 0..16.
    let system_ids: Vec<u64> = (0..16u64).map(|i| (1 << 32) | i).collect();
    let mine = s.call("POST", "/v1/entities", Some(&rw), Some(&json!({"components": {"entities": {}}})));
    assert_eq!(mine.status, 201);
    let mine = mine.body["id"].as_u64().unwrap();
    let users_before = s.call("GET", "/v1/admin/users", Some(&admin), None).body;
    let keys_before = s.call("GET", "/v1/admin/api-keys", Some(&admin), None).body;
    for cred in [&ro, &rw, &key] {
        // Queries and stats see user data only.
        let r = s.call("POST", "/v1/query", Some(cred), Some(&json!({})));
        assert_eq!(r.status, 200, "{}", r.body);
        let ids: Vec<u64> = r.body["rows"].as_array().unwrap().iter().map(|row| row["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, vec![mine], "a query listed system rows");
        let st = s.call("GET", "/v1/stats", Some(cred), None);
        assert_eq!(st.body["entities"], 1, "{}", st.body);
        for &id in &system_ids {
            if id == mine {
                continue;
            }
            assert_eq!(s.call("GET", &format!("/v1/entities/{id}"), Some(cred), None).status, 404);
            let related = json!({"related": {"entity": id, "depth": 1}});
            let r = s.call("POST", "/v1/query", Some(cred), Some(&related));
            assert!(r.status == 404 || r.body["rows"] == json!([]), "{}", r.body);
            for op in [
                json!({"op": "delete", "id": id}),
                json!({"op": "set", "id": id, "components": {"player": {"level": 1}}}),
                json!({"op": "set", "id": id.to_string(), "components": {}}),
                json!({"op": "remove", "id": id, "table": "entities"}),
                json!({"op": "remove", "id": id, "table": "_users"}),
                json!({"op": "link", "relation": "follows", "from": mine, "to": id}),
                json!({"op": "link", "relation": "follows", "from": id, "to": mine}),
                json!({"op": "unlink", "relation": "follows", "from": id, "to": mine}),
                json!({"op": "create", "components": {"_users": {"username": "x"}}}),
            ] {
                let r = s.call("POST", "/v1/transactions", Some(cred), Some(&json!({"ops": [op]})));
                assert!([400, 403, 404].contains(&r.status), "{op}: {} {}", r.status, r.body);
                let text = r.body.to_string();
                assert!(!text.contains("password") && !text.contains("argon2"), "{text}");
            }
            for (m, body) in [("PATCH", Some(json!({"components": {"entities": {}}}))), ("DELETE", None)] {
                let r = s.call(m, &format!("/v1/entities/{id}"), Some(cred), body.as_ref());
                assert!([403, 404].contains(&r.status), "{m} {id}: {} {}", r.status, r.body);
            }
        }
    }
    assert_eq!(s.call("GET", "/v1/admin/users", Some(&admin), None).body, users_before);
    assert_eq!(s.call("GET", "/v1/admin/api-keys", Some(&admin), None).body, keys_before);
    s.admin();
    // Another user's session id with a known secret is not a login.
    let (a, w) = (claims(&admin), claims(&rw));
    let now = a["iat"].as_u64().unwrap();
    let swapped = craft(&json!({"sub": "writer", "uid": w["uid"], "jti": a["jti"], "iat": now, "exp": now + 600}));
    assert_eq!(s.call("GET", "/v1/stats", Some(&swapped), None).status, 401);
    let elevated = craft(&json!({"sub": "admin", "uid": a["uid"], "jti": w["jti"], "iat": now, "exp": now + 600}));
    assert_eq!(s.call("GET", "/v1/admin/users", Some(&elevated), None).status, 401);
    let other_uid = craft(&json!({"sub": "admin", "uid": w["uid"], "jti": a["jti"], "iat": now, "exp": now + 600}));
    assert_eq!(s.call("GET", "/v1/stats", Some(&other_uid), None).status, 401);
}

/// Slow, stalled and oversized clients are cut off early, and cannot take
/// the probes down.
#[test]
fn slow_and_flooding_clients_cannot_exhaust_the_server() {
    let cfg = "[server]\nheader_timeout_ms = 600\nrequest_timeout_ms = 1000\nmax_connections_per_ip = 4\nbody_limit_bytes = 65536\n";
    let s = spawn(tempfile::tempdir().unwrap(), &[], Some(cfg));
    let p = port(&s.base);
    // Partial headers from one address fill its connection allowance...
    let mut slow: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut c = connect_from("127.0.0.2", p);
            c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    // ...a fifth is closed at once...
    let mut fifth = connect_from("127.0.0.2", p);
    assert!(closed_within(&mut fifth, Duration::from_secs(2)), "a fifth connection from one address was kept");
    // ...while other clients are served.
    assert_eq!(s.call("GET", "/health", None, None).status, 200);
    // The stalled headers are cut off after the header deadline.
    for c in &mut slow {
        assert!(closed_within(c, Duration::from_secs(3)), "a stalled connection was kept open");
    }
    // A declared body over the limit is refused before it is sent.
    let t = s.admin();
    let started = Instant::now();
    let (status, text) = raw(
        "127.0.0.1",
        p,
        &format!(
            "POST /v1/entities HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
        ),
    );
    assert_eq!(status, 413, "{text}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(text.contains("x-request-id") && text.contains("nosniff"), "{text}");
    // A body trickling in is given up on (408 with a JSON body), changing nothing.
    let seq = s.seq(&t);
    let mut c = connect_from("127.0.0.1", p);
    c.write_all(
        format!(
            "POST /v1/entities HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nContent-Type: application/json\r\nContent-Length: 40\r\nConnection: close\r\n\r\n{{\"comp"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains("\"timeout\""), "{out}");
    assert_eq!(s.seq(&t), seq);
}

/// Limits that fit a database: authenticated traffic and probes are not
/// throttled by default; guessing a password is.
#[test]
fn default_rate_limits_fit_a_database() {
    let s = spawn(tempfile::tempdir().unwrap(), &[], None);
    let t = s.admin();
    for i in 0..2000 * scale() {
        let r = s.call("GET", "/v1/stats", Some(&t), None);
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
    }
    for i in 0..1000 * scale() {
        assert_eq!(s.call("GET", "/health", None, None).status, 200, "health {i}");
    }
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let r = s.call("POST", "/v1/auth/login", None, Some(&json!({"username": "admin", "password": "guess-guess"})));
        statuses.push(r.status);
    }
    assert!(statuses.contains(&429), "20 wrong passwords were never limited: {statuses:?}");
    // The account is locked for this window from any address, even with the
    // right password.
    let body = json!({"username": "admin", "password": support::ADMIN_PW}).to_string();
    let (status, text) = raw(
        "127.0.0.3",
        port(&s.base),
        &format!(
            "POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 429, "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after"), "{text}");
    // Existing sessions keep working.
    assert_eq!(s.call("GET", "/v1/stats", Some(&t), None).status, 200);
}

/// A username cannot forge log lines or send terminal escapes; probes and
/// errors tell unauthenticated clients no paths.
#[test]
fn logs_are_not_injectable() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut s = spawn_logged(dir, &[("ECSDB_LOG_LEVEL", "info")], None, Stdio::from(file));
    let evil = "ghost\n2099-01-01T00:00:00Z  INFO audit: forged admin login\u{1b}[31m";
    let r = s.call("POST", "/v1/auth/login", None, Some(&json!({"username": evil, "password": "whatever-1"})));
    assert_eq!(r.status, 401);
    std::thread::sleep(Duration::from_millis(200));
    let kill = std::process::Command::new("sh").args(["-c", &format!("kill -TERM {}", s.child.id())]).status().unwrap();
    assert!(kill.success());
    s.child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("failed login"), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("2099-01-01")), "a forged line: {text}");
    assert!(!text.contains('\u{1b}'), "a raw escape reached the log");
}

/// Wildcard CORS starts and answers; HEAD and OPTIONS are answered like
/// every route (headers, request id, JSON errors).
#[test]
fn cors_wildcard_head_and_options() {
    let s = spawn(tempfile::tempdir().unwrap(), &[], Some("[cors]\nallowed_origins = [\"*\"]\n"));
    let p = port(&s.base);
    let (status, text) = raw(
        "127.0.0.1",
        p,
        "OPTIONS /v1/query HTTP/1.1\r\nHost: x\r\nOrigin: https://game.example\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("access-control-allow-origin: *"), "{text}");
    assert!(lower.contains("x-request-id") && lower.contains("x-content-type-options"), "{text}");
    let (status, text) = raw("127.0.0.1", p, "HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200, "{text}");
    assert!(text.to_ascii_lowercase().contains("x-frame-options"), "{text}");
    drop(s);
    // Without CORS, OPTIONS says which methods a route takes.
    let s = spawn(tempfile::tempdir().unwrap(), &[], None);
    let (status, text) =
        raw("127.0.0.1", port(&s.base), "OPTIONS /v1/query HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 204, "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("allow: post") && lower.contains("x-request-id"), "{text}");
}

/// Every file a command writes holds data or secrets: 0600 in 0700 folders.
#[test]
fn every_file_the_tools_write_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_ecsdb");
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/schemas/rpg_game.toml");
    let d = root.path().join("data");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ds = d.to_str().unwrap();
    run(&["init", "--schema", schema, "--data-dir", ds]);
    let doc = root.path().join("in.json");
    std::fs::write(
        &doc,
        json!({"entities": [{"id": (1u64 << 32) | 1}], "components": {"entities": [{"id": (1u64 << 32) | 1}]}})
            .to_string(),
    )
    .unwrap();
    run(&["import", "--data-dir", ds, doc.to_str().unwrap()]);
    run(&["checkpoint", "--data-dir", ds]);
    let out = root.path().join("out.json");
    run(&["export", "--data-dir", ds, "--format", "json", "--out", out.to_str().unwrap()]);
    let snap = std::fs::read_dir(d.join("snapshots")).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    let restored = root.path().join("restored");
    run(&["restore", snap.to_str().unwrap(), "--data-dir", restored.to_str().unwrap()]);
    let rebuilt = root.path().join("rebuilt");
    run(&["rebuild-from-wal", ds, "--data-dir", rebuilt.to_str().unwrap()]);
    let mut checked = 0;
    let mut stack = vec![d, restored, rebuilt];
    while let Some(p) = stack.pop() {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", p.display());
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                stack.push(e);
            } else {
                let mode = std::fs::metadata(&e).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{} is {mode:o}", e.display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "only {checked} files checked");
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the export is {mode:o}");
}

/// Password guesses sent at the same moment, or through `current_password`
/// with a stolen token, are limited like sequential failed logins.
#[test]
fn concurrent_and_current_password_guesses_are_limited() {
    let s = spawn(tempfile::tempdir().unwrap(), &[], None);
    let admin = s.admin();
    let victim = s.user(&admin, "victim", "ReadWrite");
    let p = port(&s.base);
    let guesses: Vec<u16> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..(40 * scale()).min(250))
            .map(|i| {
                sc.spawn(move || {
                    let body = json!({"username": "victim", "password": format!("guess-{i:04}")}).to_string();
                    raw(
                        &format!("127.0.9.{}", i + 1),
                        p,
                        &format!(
                            "POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        ),
                    )
                    .0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let evaluated = guesses.iter().filter(|&&c| c == 401).count();
    assert!(evaluated <= 10, "{evaluated} concurrent guesses were evaluated: {guesses:?}");
    assert!(guesses.iter().all(|c| [401, 429, 503].contains(c)), "{guesses:?}");
    // Guessing the current password with the victim's own token.
    let other = s.user(&admin, "other", "ReadWrite");
    let mut statuses = Vec::new();
    for i in 0..12 {
        let r = s.call(
            "POST",
            "/v1/admin/users/other/password",
            Some(&other),
            Some(&json!({"password": "new-password-9", "current_password": format!("wrong-{i}")})),
        );
        statuses.push(r.status);
    }
    assert!(statuses.contains(&429), "current_password guesses were not limited: {statuses:?}");
    drop(victim);
}

/// Two credentials are refused; the auth scheme is case-insensitive.
#[test]
fn authorization_header_tricks() {
    let s = spawn(tempfile::tempdir().unwrap(), &[], None);
    let t = s.admin();
    let p = port(&s.base);
    let (status, text) = raw(
        "127.0.0.1",
        p,
        &format!(
            "GET /v1/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nAuthorization: Bearer junk\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 400, "{text}");
    let (status, text) = raw(
        "127.0.0.1",
        p,
        &format!("GET /v1/stats HTTP/1.1\r\nHost: x\r\nAuthorization: bearer {t}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 200, "{text}");
}

/// `export --out` writes a new private file: not into an existing file's
/// inode and permissions, not through a symbolic link.
#[test]
fn export_out_never_reuses_a_file_or_follows_a_link() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_ecsdb");
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/schemas/rpg_game.toml");
    let d = root.path().join("data");
    let ok = |args: &[&str]| {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ok(&["init", "--schema", schema, "--data-dir", d.to_str().unwrap()]);
    let open = root.path().join("open.json");
    std::fs::write(&open, "x").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
    ok(&["export", "--data-dir", d.to_str().unwrap(), "--format", "json", "--out", open.to_str().unwrap()]);
    assert_eq!(std::fs::metadata(&open).unwrap().permissions().mode() & 0o777, 0o600);
    let target = root.path().join("target.txt");
    std::fs::write(&target, "keep me").unwrap();
    let link = root.path().join("link.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    ok(&["export", "--data-dir", d.to_str().unwrap(), "--format", "json", "--out", link.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    assert!(!std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    let nested = root.path().join("new/sub/out.json");
    ok(&["export", "--data-dir", d.to_str().unwrap(), "--format", "json", "--out", nested.to_str().unwrap()]);
    assert_eq!(std::fs::metadata(nested.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
}
