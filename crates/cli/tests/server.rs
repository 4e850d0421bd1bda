//! The server through the real binary on an ephemeral port: the auth matrix
//! over the route table, bad input, limits, metrics, health, and durability
//! across SIGKILL.
#![allow(clippy::unwrap_used)]
// Tests read best with short names for the server (s), token (t), response (r).
#![allow(clippy::many_single_char_names)]

#[path = "support/server.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use ecsdb_server::app::{Access, ROUTES};
use serde_json::{Value as J, json};
use support::{SECRET, spawn, spawn_logged, start};

fn craft(claims: &J, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[test]
fn auth_matrix_covers_every_route() {
    // Hundreds of requests from one address: lift the per-IP limit.
    let s = start(&[("RATE_LIMIT_MAX", "100000")]);
    let admin = s.admin();
    let reader = s.user(&admin, "reader", "ReadOnly");
    let writer = s.user(&admin, "writer", "ReadWrite");
    let created = s.call("POST", "/v1/entities", Some(&writer), Some(&json!({"components": {"entities": {}}})));
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expired = craft(&json!({"sub": "admin", "jti": "x", "iat": now - 100, "exp": now - 10}), SECRET);
    let forged = craft(
        &json!({"sub": "admin", "jti": "x", "iat": now, "exp": now + 1000}),
        "another-secret-another-secret-another",
    );
    for &(method, path, access) in ROUTES {
        if access == Access::Public {
            continue;
        }
        let p = path.replace("{id}", &id).replace("{name}", "reader");
        let body = Some(json!({}));
        for (label, tok) in [
            ("no credentials", None),
            ("garbage", Some("garbage")),
            ("expired", Some(expired.as_str())),
            ("forged", Some(forged.as_str())),
        ] {
            let r = s.call(method, &p, tok, body.as_ref());
            assert_eq!(r.status, 401, "{method} {path} with {label}: {}", r.body);
        }
        // Too little permission is 403, enough is neither 401 nor 403.
        for (who, tok, perms) in [("reader", &reader, "r"), ("writer", &writer, "rw"), ("admin", &admin, "rwa")] {
            let allowed = match access {
                Access::Read | Access::Authenticated | Access::Public => true,
                Access::Write => perms.contains('w'),
                Access::Admin | Access::Replicate => perms.contains('a'),
            };
            // Logging out would end the session the rest of the matrix uses.
            if path == "/v1/auth/logout" {
                continue;
            }
            let r = s.call(method, &p, Some(tok), body.as_ref());
            assert!(!r.body.to_string().contains("no such route"), "{method} {path} is in the table but not routed");
            if allowed {
                assert!(r.status != 401 && r.status != 403, "{method} {path} as {who}: {} {}", r.status, r.body);
            } else {
                assert_eq!(r.status, 403, "{method} {path} as {who}: {}", r.body);
            }
        }
    }
    // A token in the query string is not a credential.
    let r = s.call("GET", &format!("/v1/stats?token={admin}"), None, None);
    assert_eq!(r.status, 401);
}

#[test]
fn api_keys_logout_and_password_changes() {
    let s = start(&[("RATE_LIMIT_MAX", "100000")]);
    let admin = s.admin();
    let mut keys = std::collections::HashMap::new();
    for (name, perms) in
        [("r", json!(["read"])), ("rw", json!(["read", "write"])), ("adm", json!(["admin", "read", "write"]))]
    {
        let r = s.call("POST", "/v1/admin/api-keys", Some(&admin), Some(&json!({"name": name, "permissions": perms})));
        assert_eq!(r.status, 201, "{}", r.body);
        keys.insert(name, r.body["key"].as_str().unwrap().to_string());
    }
    let body = json!({"components": {"entities": {}}});
    assert_eq!(s.call("GET", "/v1/stats", Some(&keys["r"]), None).status, 200);
    assert_eq!(s.call("POST", "/v1/entities", Some(&keys["r"]), Some(&body)).status, 403);
    assert_eq!(s.call("POST", "/v1/entities", Some(&keys["rw"]), Some(&body)).status, 201);
    assert_eq!(s.call("GET", "/v1/admin/users", Some(&keys["rw"]), None).status, 403);
    assert_eq!(s.call("GET", "/v1/admin/users", Some(&keys["adm"]), None).status, 200);
    let list = s.call("GET", "/v1/admin/api-keys", Some(&admin), None);
    assert!(!list.body.to_string().contains(&keys["r"]), "keys are never listed");
    assert_eq!(s.call("DELETE", "/v1/admin/api-keys/r", Some(&admin), None).status, 204);
    assert_eq!(s.call("GET", "/v1/stats", Some(&keys["r"]), None).status, 401);
    assert_eq!(
        s.call("POST", "/v1/admin/api-keys", Some(&admin), Some(&json!({"name": "x", "permissions": ["fly"]}))).status,
        400
    );
    // Logout ends the token.
    let t = s.admin();
    assert_eq!(s.call("POST", "/v1/auth/logout", Some(&t), None).status, 204);
    assert_eq!(s.call("GET", "/v1/stats", Some(&t), None).status, 401);
    // Wrong password, unknown user: 401 and counted.
    assert_eq!(
        s.call("POST", "/v1/auth/login", None, Some(&json!({"username": "admin", "password": "nope-nope"}))).status,
        401
    );
    assert_eq!(
        s.call("POST", "/v1/auth/login", None, Some(&json!({"username": "ghost", "password": "nope-nope"}))).status,
        401
    );
    // A user changes their own password; their sessions end.
    let bob = s.user(&admin, "bob", "ReadWrite");
    assert_eq!(
        s.call("POST", "/v1/admin/users/admin/password", Some(&bob), Some(&json!({"password": "x-x-x-x-x-x"}))).status,
        403
    );
    // Changing one's own password needs the current one.
    assert_eq!(
        s.call("POST", "/v1/admin/users/bob/password", Some(&bob), Some(&json!({"password": "new-password-1"}))).status,
        403
    );
    assert_eq!(
        s.call(
            "POST",
            "/v1/admin/users/bob/password",
            Some(&bob),
            Some(&json!({"password": "new-password-1", "current_password": "wrong-one-1"}))
        )
        .status,
        403
    );
    assert_eq!(
        s.call(
            "POST",
            "/v1/admin/users/bob/password",
            Some(&bob),
            Some(&json!({"password": "new-password-1", "current_password": "password-123"}))
        )
        .status,
        204
    );
    assert_eq!(s.call("GET", "/v1/stats", Some(&bob), None).status, 401);
    s.login("bob", "new-password-1");
    // Users and roles are validated.
    let r = s.call(
        "POST",
        "/v1/admin/users",
        Some(&admin),
        Some(&json!({"username": "eve", "password": "password-1", "role": "God"})),
    );
    assert_eq!(r.status, 400);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("unknown role `God`"));
    let r = s.call(
        "POST",
        "/v1/admin/users",
        Some(&admin),
        Some(&json!({"username": "bob", "password": "password-1", "role": "ReadOnly"})),
    );
    assert_eq!(r.status, 409);
}

#[test]
fn bad_input_is_400_names_the_problem_and_changes_nothing() {
    let s = start(&[]);
    let t = s.admin();
    let before = s.seq(&t);
    let cases: Vec<(J, &str)> = vec![
        (json!({"components": {"wizard": {}}}), "unknown table `wizard`"),
        (json!({"components": {"player": {"mana": 1}}}), "unknown field `mana` in table `player`"),
        (json!({"components": {"player": {"level": "high"}}}), "player.level"),
        (json!({"components": {"transform": {"position": [1, 2]}}}), "expected an array of 3 elements, got 2"),
        (json!({"components": {"_users": {}}}), "reserved for the system"),
        (json!({"components": {}, "extra": 1}), "unknown field `extra`"),
        (json!({"components": {"entities": {}, "player": {"level": -1}}}), "player.level"),
    ];
    for (body, needle) in cases {
        let r = s.call("POST", "/v1/entities", Some(&t), Some(&body));
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        let msg = r.body["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
    }
    let r = s.raw_post("/v1/entities", &t, "application/json", "{not json");
    assert_eq!(r.status, 400);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("invalid JSON"));
    let r = s.raw_post("/v1/entities", &t, "text/plain", "{}");
    assert_eq!(r.status, 415);
    // The refused body is read, so the client's pooled connection stays
    // good for its next request.
    for _ in 0..20 {
        assert_eq!(s.raw_post("/v1/entities", &t, "text/plain", "{\"components\": {}}").status, 415);
        let ok = s.call("POST", "/v1/query", Some(&t), Some(&json!({"with": ["player"], "limit": 1})));
        assert_eq!(ok.status, 200, "{}", ok.body);
    }
    // A transaction failing at its last op changes nothing.
    let r = s.call(
        "POST",
        "/v1/transactions",
        Some(&t),
        Some(&json!({"ops": [{"op": "create", "components": {"entities": {}}}, {"op": "set", "id": "$0", "components": {"player": {"level": "x"}}}]})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("ops[1]"));
    let r = s.call("POST", "/v1/query", Some(&t), Some(&json!({"with": ["_users"]})));
    assert_eq!(r.status, 400);
    assert_eq!(s.seq(&t), before, "bad requests changed the database");
    assert_eq!(s.call("GET", "/v1/entities/notanumber", Some(&t), None).status, 400);
    assert_eq!(s.call("GET", "/v1/entities/12345", Some(&t), None).status, 404);
    assert_eq!(s.call("GET", "/v1/nothing-here", Some(&t), None).status, 404);
}

#[test]
fn transactions_queries_and_exact_values() {
    let s = start(&[]);
    let t = s.admin();
    let big = u64::MAX - 7;
    let r = s.call(
        "POST",
        "/v1/transactions",
        Some(&t),
        Some(&json!({"sync": true, "ops": [
            {"op": "create", "components": {"entities": {}, "player": {"name": "ana", "level": 7, "experience": big.to_string()}}},
            {"op": "create", "components": {"entities": {}, "player": {"name": "bo", "level": 2}}},
            {"op": "link", "relation": "follows", "from": "$0", "to": "$1", "props": {"since_tick": 3}},
        ]})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let ids = r.body["ids"].as_array().unwrap().clone();
    let got = s.call("GET", &format!("/v1/entities/{}", ids[0]), Some(&t), None);
    assert_eq!(got.body["components"]["player"]["experience"], big.to_string());
    assert_eq!(got.body["components"]["player"]["name"], "ana");
    let q = s.call(
        "POST",
        "/v1/query",
        Some(&t),
        Some(&json!({"with": ["player"], "select": ["player.name"], "related": {"relation": "follows", "entity": ids[0]}})),
    );
    assert_eq!(q.body["rows"][0]["player"]["name"], "bo", "{}", q.body);
    let p = s.call(
        "PATCH",
        &format!("/v1/entities/{}", ids[1]),
        Some(&t),
        Some(&json!({"components": {"health": {"hp": 5}}})),
    );
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(s.call("DELETE", &format!("/v1/entities/{}", ids[1]), Some(&t), None).status, 200);
    assert_eq!(s.call("GET", &format!("/v1/entities/{}", ids[1]), Some(&t), None).status, 404);
    let schema = s.call("GET", "/v1/schema", Some(&t), None);
    assert!(!schema.body.to_string().contains("_users"), "system tables are hidden");
    // Headers on every response.
    let h = s.call("GET", "/health", None, None).headers;
    for (k, v) in [("x-content-type-options", "nosniff"), ("x-frame-options", "DENY")] {
        assert!(h.iter().any(|(a, b)| a == k && b == v), "{k} missing: {h:?}");
    }
    assert!(h.iter().any(|(a, _)| a == "x-request-id"));
}

#[test]
fn cors_and_the_separate_metrics_listener() {
    let s = start(&[("ECSDB_ALLOWED_ORIGINS", "https://game.example"), ("ECSDB_METRICS_BIND", "127.0.0.1:0")]);
    let preflight = |origin: &str| {
        s.agent
            .run(
                ureq::http::Request::builder()
                    .method("OPTIONS")
                    .uri(format!("{}/v1/stats", s.base))
                    .header("origin", origin)
                    .header("access-control-request-method", "GET")
                    .body(())
                    .unwrap(),
            )
            .unwrap()
    };
    let ok = preflight("https://game.example");
    assert_eq!(
        ok.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()),
        Some("https://game.example")
    );
    let other = preflight("https://evil.example");
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let m = s.metrics_base.clone().expect("the metrics listener was announced");
    let text = s.agent.get(format!("{m}/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
    assert!(text.contains("ecsdb_entities"), "{text}");
}

#[test]
fn oversized_body_is_413() {
    let s = spawn(tempfile::tempdir().unwrap(), &[], Some("[server]\nbody_limit_bytes = 2048\n"));
    let t = s.admin();
    let big = "x".repeat(4096);
    let r = s.raw_post("/v1/entities", &t, "application/json", &format!("{{\"components\": {{\"{big}\": {{}}}}}}"));
    assert_eq!(r.status, 413, "{}", r.body);
}

#[test]
fn rate_limit_then_recovery() {
    let s = start(&[("RATE_LIMIT_WINDOW", "1"), ("RATE_LIMIT_MAX", "5")]);
    let t = s.admin();
    // Probes are never limited.
    for _ in 0..30 {
        assert_eq!(s.call("GET", "/health", None, None).status, 200);
    }
    // Align to the start of a window so the burst falls in one.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    std::thread::sleep(Duration::from_millis(1000 - u64::from(now.subsec_millis())) + Duration::from_millis(20));
    let mut statuses = Vec::new();
    let mut retry = 0u64;
    for _ in 0..8 {
        let r = s.call("GET", "/v1/stats", Some(&t), None);
        statuses.push(r.status);
        if r.status == 429 {
            retry = r.headers.iter().find(|(k, _)| k == "retry-after").map(|(_, v)| v.parse().unwrap()).unwrap();
        }
    }
    assert_eq!(&statuses[..5], &[200; 5], "{statuses:?}");
    assert_eq!(statuses[5], 429, "{statuses:?}");
    // Retry-After is honest: after it, the next request is served.
    assert!((1..=2).contains(&retry), "{retry}");
    std::thread::sleep(Duration::from_millis(retry * 1000 + 50));
    assert_eq!(s.call("GET", "/v1/stats", Some(&t), None).status, 200);
}

#[test]
fn metrics_are_valid_prometheus_text() {
    let s = start(&[]);
    let t = s.admin();
    s.call("POST", "/v1/entities", Some(&t), Some(&json!({"components": {"entities": {}}})));
    s.call("GET", "/v1/stats", None, None);
    let mut res = s.agent.get(format!("{}/metrics", s.base)).call().unwrap();
    let text = res.body_mut().read_to_string().unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let names: std::collections::BTreeSet<_> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for m in [
        "ecsdb_entities",
        "ecsdb_commits_total",
        "ecsdb_operations_total",
        "ecsdb_commit_latency_seconds_count",
        "ecsdb_wal_bytes_written_total",
        "ecsdb_wal_size_bytes",
        "ecsdb_snapshots_total",
        "ecsdb_memory_bytes",
        "ecsdb_transactions_active",
        "ecsdb_transactions_committed_total",
        "ecsdb_transactions_rolled_back_total",
        "ecsdb_http_requests_total",
        "ecsdb_http_request_duration_seconds_count",
        "ecsdb_auth_failures_total",
        "ecsdb_rate_limited_total",
    ] {
        assert!(names.contains(m), "{m} missing from /metrics: {names:?}");
    }
    let unauth = scrape.samples.iter().find(|x| {
        x.metric == "ecsdb_http_requests_total"
            && x.labels.get("route") == Some("/v1/stats")
            && x.labels.get("status") == Some("401")
    });
    assert!(unauth.is_some(), "request counted by route and status");
    let failures = scrape.samples.iter().find(|x| x.metric == "ecsdb_auth_failures_total").map(|x| match x.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Untyped(v)
        | prometheus_parse::Value::Gauge(v) => v,
        _ => 0.0,
    });
    assert!(failures >= Some(1.0), "auth failures counted: {failures:?}");
}

#[test]
fn health_turns_degraded_then_unhealthy() {
    let s = start(&[("ECSDB_MAX_MEMORY_MB", "1")]);
    let t = s.admin();
    let h = s.call("GET", "/health", None, None);
    assert_eq!((h.status, h.body["status"].as_str()), (200, Some("healthy")), "{}", h.body);
    // Fill memory past 90% of the 1 MiB ceiling.
    for _ in 0..40 {
        let ops: Vec<J> =
            (0..50).map(|_| json!({"op": "create", "components": {"entities": {}, "inventory": {}}})).collect();
        let r = s.call("POST", "/v1/transactions", Some(&t), Some(&json!({"ops": ops})));
        if r.status != 200 {
            assert_eq!(r.status, 507, "{}", r.body);
            break;
        }
    }
    let h = s.call("GET", "/health", None, None);
    assert_eq!((h.status, h.body["status"].as_str()), (200, Some("degraded")), "{}", h.body);
    let failing: Vec<_> = h.body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["healthy"] == false)
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(failing, vec![json!("memory")]);
    // The data directory disappears: storage is no longer writable.
    std::fs::remove_dir_all(s.dir.path().join("data")).unwrap();
    let h = s.call("GET", "/health", None, None);
    assert_eq!((h.status, h.body["status"].as_str()), (503, Some("unhealthy")), "{}", h.body);
    // Unauthenticated clients learn no paths.
    let text = h.body.to_string();
    assert!(!text.contains(s.dir.path().to_str().unwrap()), "{text}");
}

#[test]
fn json_logs_carry_the_request_id_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut s =
        spawn_logged(dir, &[("ECSDB_LOG_FORMAT", "json"), ("ECSDB_LOG_LEVEL", "info")], None, Stdio::from(file));
    let t = s.admin();
    let r = s.call("POST", "/v1/entities", Some(&t), Some(&json!({"components": {"entities": {}}})));
    assert_eq!(r.status, 201);
    let id = r.body["id"].clone();
    // SIGTERM: drain, snapshot, exit 0.
    let kill = Command::new("sh").args(["-c", &format!("kill -TERM {}", s.child.id())]).status().unwrap();
    assert!(kill.success());
    let status = s.child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<J> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}"))).collect();
    let create: Vec<&J> = lines.iter().filter(|l| l["fields"]["action"] == "create_entity").collect();
    assert_eq!(create.len(), 1, "one audit line for the create");
    let rid = create[0]["span"]["request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("audit line without request id: {}", create[0]));
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "request" && l["span"]["request_id"] == rid),
        "request line with the same id"
    );
    assert!(text.contains("stopped cleanly"));
    // The clean stop took a snapshot; the data is there after a restart.
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    drop(s);
    assert!(std::fs::read_dir(dir.path().join("data/snapshots")).unwrap().count() >= 1);
    let s = spawn(dir, &[], None);
    let t = s.admin();
    assert_eq!(s.call("GET", &format!("/v1/entities/{id}"), Some(&t), None).status, 200);
}

#[test]
fn acknowledged_sync_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().to_path_buf();
    // The log runs in async mode; each request asks for a durable ack.
    let mut s = spawn(dir, &[("ECSDB_WAL_SYNC", "false")], None);
    let t = s.admin();
    let mut ids = Vec::new();
    for i in 0..30 {
        let r = s.call(
            "POST",
            "/v1/entities",
            Some(&t),
            Some(&json!({"sync": true, "components": {"entities": {}, "player": {"level": i}}})),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        ids.push((r.body["id"].clone(), i));
    }
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    drop(s);
    assert_eq!(dir.path(), keep);
    let s = spawn(dir, &[("ECSDB_WAL_SYNC", "false")], None);
    let t = s.admin();
    for (id, level) in ids {
        let r = s.call("GET", &format!("/v1/entities/{id}"), Some(&t), None);
        assert_eq!(r.status, 200, "entity {id} lost: {}", r.body);
        assert_eq!(r.body["components"]["player"]["level"], level);
    }
}

#[test]
fn aggregate_queries_and_explain_over_http() {
    let s = start(&[]);
    let t = s.admin();
    let ops: Vec<J> = [(1, 10), (1, 30), (2, 5)]
        .iter()
        .map(|(level, xp)| json!({"op": "create", "components": {"player": {"name": "p", "level": level, "experience": xp}}}))
        .collect();
    assert_eq!(s.call("POST", "/v1/transactions", Some(&t), Some(&json!({"ops": ops}))).status, 200);
    let r = s.call(
        "POST",
        "/v1/query",
        Some(&t),
        Some(&json!({"with": ["player"], "group_by": ["player.level"],
                     "aggregates": [{"op": "count"}, {"op": "avg", "field": "player.experience"}]})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["rows"],
        json!([{"player.level": 1, "count": 2, "avg(player.experience)": 20.0},
               {"player.level": 2, "count": 1, "avg(player.experience)": 5.0}])
    );
    let r = s.call("POST", "/v1/query", Some(&t), Some(&json!({"with": ["player"], "explain": true})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["plan"]["access"], "scan");
    // Spatial clauses over HTTP (no spatial index here: measured by a scan).
    let ops: Vec<J> = [0.0, 3.0, 40.0]
        .iter()
        .map(|x| json!({"op": "create", "components": {"transform": {"position": [x, 0.0, 0.0]}}}))
        .collect();
    assert_eq!(s.call("POST", "/v1/transactions", Some(&t), Some(&json!({"ops": ops}))).status, 200);
    let r = s.call(
        "POST",
        "/v1/query",
        Some(&t),
        Some(&json!({"near": {"field": "transform.position", "point": [1, 0, 0], "radius": 5}, "select": ["transform.position"]})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["rows"].as_array().unwrap().len(), 2, "{}", r.body);
    let r = s.call(
        "POST",
        "/v1/query",
        Some(&t),
        Some(&json!({"nearest": {"field": "transform.position", "point": [39, 0, 0], "k": 1}, "select": ["transform.position"]})),
    );
    assert_eq!(r.body["rows"][0]["transform"]["position"], json!([40.0, 0.0, 0.0]), "{}", r.body);
    let r = s.call(
        "POST",
        "/v1/query",
        Some(&t),
        Some(&json!({"nearest": {"field": "transform.position", "point": [39, 0], "k": 1}})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // System tables stay out of reach through aggregates too.
    for bad in [
        json!({"group_by": ["_users.name"], "aggregates": [{"op": "count"}]}),
        json!({"aggregates": [{"op": "max", "field": "_users.name"}]}),
        json!({"near": {"field": "_users.username", "point": [0, 0], "radius": 1}}),
        json!({"nearest": {"field": "_sessions.token_id", "point": [0, 0], "k": 1}}),
        json!({"box": {"field": "_users.username", "min": [0], "max": [1]}}),
    ] {
        let r = s.call("POST", "/v1/query", Some(&t), Some(&bad));
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(r.body.to_string().contains("reserved"), "{bad}: {}", r.body);
    }
    // A system entity (the admin user's) reads as absent, like a missing one.
    for id in [1u64 << 32, (1u64 << 32) + 999_999] {
        let r = s.call(
            "POST",
            "/v1/query",
            Some(&t),
            Some(&json!({"near": {"field": "transform.position", "entity": id, "radius": 1}})),
        );
        assert_eq!(r.status, 404, "{id}: {}", r.body);
    }
    // Users' rows are not counted: a global count sees the three players
    // and the three positioned entities only.
    let r = s.call("POST", "/v1/query", Some(&t), Some(&json!({"aggregates": [{"op": "count"}]})));
    assert_eq!(r.body["rows"], json!([{"count": 6}]), "{}", r.body);
}

#[test]
fn shortest_paths_over_http() {
    let s = start(&[]);
    let t = s.admin();
    // a -follows-> b -follows-> c, a -owns-> d (owns needs a player source).
    let r = s.call(
        "POST",
        "/v1/transactions",
        Some(&t),
        Some(&json!({"ops": [
            {"op": "create", "components": {"player": {"name": "a"}}},
            {"op": "create", "components": {"player": {"name": "b"}}},
            {"op": "create", "components": {"player": {"name": "c"}}},
            {"op": "create", "components": {"entities": {}}},
            {"op": "link", "relation": "follows", "from": "$0", "to": "$1"},
            {"op": "link", "relation": "follows", "from": "$1", "to": "$2"},
            {"op": "link", "relation": "owns", "from": "$0", "to": "$3"},
        ]})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let ids: Vec<J> = r.body["ids"].as_array().unwrap().clone();
    let path = |body: J| s.call("POST", "/v1/graph/path", Some(&t), Some(&body));
    let r = path(json!({"from": ids[0], "to": ids[2], "relation": "follows"}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({"path": [ids[0], ids[1], ids[2]], "hops": 2}));
    // Backwards needs direction in (or both).
    assert_eq!(path(json!({"from": ids[2], "to": ids[0]})).status, 404);
    let r = path(json!({"from": ids[2], "to": ids[0], "direction": "in"}));
    assert_eq!(r.body["hops"], 2, "{}", r.body);
    // Over any user relation, and bounded by max_hops.
    let r = path(json!({"from": ids[3], "to": ids[2], "direction": "both"}));
    assert_eq!(r.body["hops"], 3, "{}", r.body);
    let r = path(json!({"from": ids[3], "to": ids[2], "direction": "both", "max_hops": 2}));
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("within 2 hops"));
    // Bad input and system data.
    for (body, status) in [
        (json!({"from": ids[0], "to": ids[2], "max_hops": 0}), 400),
        (json!({"from": ids[0], "to": ids[2], "max_hops": 65}), 400),
        (json!({"from": "x", "to": ids[2]}), 400),
        (json!({"from": ids[0], "to": 123_456}), 404),
        (json!({"from": ids[0], "to": ids[2], "relation": "nope"}), 400),
        (json!({"from": ids[0], "to": ids[2], "relation": "_sessions"}), 400),
        (json!({"from": ids[0], "to": ids[2], "direction": "sideways"}), 400),
        (json!({"from": ids[0]}), 400),
    ] {
        let r = path(body.clone());
        assert_eq!(r.status, status, "{body}: {}", r.body);
    }
}

#[test]
fn migrations_over_http() {
    let s = start(&[]);
    let t = s.admin();
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/migrations/v2_1_to_v2_2.toml"))
            .unwrap();
    let r = s.call(
        "POST",
        "/v1/transactions",
        Some(&t),
        Some(&json!({"ops": [{"op": "create", "components": {"transform": {"position": [1.0, 2.0, 3.0]}, "player": {"level": 4}}}]})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.call("POST", "/v1/admin/migrations", Some(&t), Some(&json!({"migration": text, "dry_run": true})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["applied"], false);
    assert_eq!(r.body["indexes_built"]["transform.position"], 1, "{}", r.body);
    let r = s.call("GET", "/v1/schema", Some(&t), None);
    assert_eq!(r.body["version"], "2.1.0", "a dry run changes nothing");
    let r = s.call("POST", "/v1/admin/migrations", Some(&t), Some(&json!({"migration": text})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["applied"], true);
    let r = s.call("GET", "/v1/schema", Some(&t), None);
    assert_eq!(r.body["version"], "2.2.0");
    let r = s.call(
        "POST",
        "/v1/query",
        Some(&t),
        Some(&json!({"near": {"field": "transform.position", "point": [1, 2, 3], "radius": 1}, "explain": true})),
    );
    assert_eq!(r.body["plan"]["indexes"], json!(["transform.position"]), "{}", r.body);
    // Again: refused with the reason, nothing changed; malformed bodies too.
    let r = s.call("POST", "/v1/admin/migrations", Some(&t), Some(&json!({"migration": text})));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap_or_default().contains("already applied"), "{}", r.body);
    for bad in [json!({"migration": 5}), json!({"migration": "x", "extra": 1}), json!({})] {
        let r = s.call("POST", "/v1/admin/migrations", Some(&t), Some(&bad));
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    // Users (and their sessions) survive the migration.
    let r = s.call("GET", "/v1/admin/users", Some(&t), None);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_directory_from_before_the_system_indexes_gets_them_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    // As an older server made it: the system tables without their indexes.
    let old_system = ecsdb_server::system::SYSTEM_SCHEMA.replace("index = \"unique\"\n", "");
    assert_ne!(old_system, ecsdb_server::system::SYSTEM_SCHEMA);
    let schema = ecsdb::Schema::with_system(ecsdb::EXAMPLE_SCHEMA, &old_system).unwrap();
    let db = ecsdb::Database::builder()
        .schema(std::sync::Arc::new(schema))
        .data_dir(dir.path().join("data"))
        .build()
        .unwrap();
    db.close().unwrap();
    drop(db);
    let keep = dir.path().to_path_buf();
    let mut s = spawn(dir, &[], None);
    let t = s.admin();
    let r = s.call("GET", "/v1/stats", Some(&t), None);
    assert_eq!(r.status, 200, "{}", r.body);
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    let stored = std::fs::read_to_string(keep.join("data").join("schema.toml")).unwrap();
    let parsed = ecsdb::Schema::from_stored_toml(&stored).unwrap();
    for (t, f, _) in ecsdb_server::system::SYSTEM_INDEXES {
        let tid = parsed.table_id(t).unwrap();
        assert!(parsed.table(tid).field(f).unwrap().index_kind().is_some(), "{t}.{f} has no index:\n{stored}");
    }
    // Restarted after kill -9, the token still works and nothing is redone.
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    drop(s);
    let s = spawn(dir, &[], None);
    let r = s.call("GET", "/v1/stats", Some(&t), None);
    assert_eq!(r.status, 200, "{}", r.body);
}
