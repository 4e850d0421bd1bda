//! The game server on a remote `ecsdb serve` (`ECSDB_URL`): state loaded at
//! start, every commit mirrored, a kill -9 of the game server loses
//! nothing acknowledged, an outage of the database is survived, and a
//! refusal stops the world with the reason on `/health`.
//!
//! Needs the `ecsdb` binary beside `game-server` (a workspace `cargo test`
//! builds both).
#![allow(clippy::unwrap_used, clippy::many_single_char_names)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as J, json};
use support::{drained, send, start, until, ws_connect};

const WAIT: Duration = Duration::from_secs(20);
const SECRET: &str = "remote-test-secret-0123456789abcdef";

struct Ecsdb {
    child: Child,
    base: String,
    data: PathBuf,
    agent: ureq::Agent,
}

impl Drop for Ecsdb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ecsdb_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_game-server")).with_file_name("ecsdb");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build --bin ecsdb` (a workspace `cargo test` does)",
        p.display()
    );
    p
}

fn ecsdb(data: &Path, bind: &str) -> Ecsdb {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("game.toml");
    let mut child = Command::new(ecsdb_bin())
        .args(["serve", "--data-dir", data.to_str().unwrap(), "--schema", schema.to_str().unwrap(), "--bind", bind])
        .env("ECSDB_ADMIN_PASSWORD", "admin-password-1")
        .env("ECSDB_JWT_SECRET", "test-secret-0123456789abcdef0123456789abcdef")
        .env("ECSDB_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut base = None;
    loop {
        let line = lines.next().expect("ecsdb exited before listening").unwrap();
        if let Some(a) = line.split("listening on ").nth(1) {
            base = Some(a.trim().to_string());
        }
        if line.starts_with("durability:") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    Ecsdb { child, base: base.unwrap(), data: data.to_path_buf(), agent }
}

impl Ecsdb {
    fn post(&self, path: &str, token: &str, body: &J) -> (u16, J) {
        let mut r = self
            .agent
            .post(&format!("{}{path}", self.base))
            .header("authorization", &format!("Bearer {token}"))
            .send_json(body)
            .unwrap();
        let status = r.status().as_u16();
        (status, r.body_mut().read_json().unwrap_or(J::Null))
    }

    fn api_key(&self) -> String {
        let token = self.admin_token();
        let (s, k) =
            self.post("/v1/admin/api-keys", &token, &json!({"name": "game", "permissions": ["read", "write"]}));
        assert_eq!(s, 201, "{k}");
        k["key"].as_str().unwrap().to_string()
    }

    fn admin_token(&self) -> String {
        let r: J = self
            .agent
            .post(&format!("{}/v1/auth/login", self.base))
            .send_json(json!({"username": "admin", "password": "admin-password-1"}))
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        r["token"].as_str().unwrap().to_string()
    }

    fn kill(mut self) -> (PathBuf, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.data.clone(), self.base.clone())
    }
}

/// Wait until `f` holds of what `get` reads (shown if it never does).
fn wait_for(what: &str, mut get: impl FnMut() -> J, f: impl Fn(&J) -> bool) {
    let end = Instant::now() + WAIT;
    loop {
        let v = get();
        if f(&v) {
            return;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}; last: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn remote_mode_mirrors_survives_kill_9_outages_and_stops_on_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let db = ecsdb(&dir.path().join("ecsdb"), "127.0.0.1:0");
    let key = db.api_key();
    let env = |key: &str| -> Vec<(String, String)> {
        vec![
            ("ECSDB_URL".into(), db.base.clone()),
            ("ECSDB_API_KEY".into(), key.to_string()),
            ("JWT_SECRET".into(), SECRET.into()),
        ]
    };
    let e = env(&key);
    let ev: Vec<(&str, &str)> = e.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let g = start(&dir.path().join("game1"), &ev);
    assert_eq!(g.health()["database"]["mode"], "remote");
    let token = g.login("walker");
    let mut ws = ws_connect(&g.ws_url(), Some(&token)).unwrap();
    until(&mut ws, WAIT, |m| m["type"] == "welcome");
    send(&mut ws, &json!({"type": "input", "x": -0.6, "y": 0.8}));
    until(&mut ws, WAIT, |m| m["type"] == "you" && drained(m, 99.0));
    send(&mut ws, &json!({"type": "input", "x": 0, "y": 0}));
    let mut last = J::Null;
    let me = loop {
        std::thread::sleep(Duration::from_millis(300));
        let me = g.call("GET", "/me", Some(&token), None).body;
        if me["position"] == last["position"] {
            break me;
        }
        last = me;
    };
    // The remote holds what the game server shows once the pusher caught up.
    wait_for("the mirror to catch up", || g.health(), |h| h["database"]["lag_commits"] == 0);
    let (s, rows) = db.post("/v1/query", &key, &json!({"with": ["account"], "select": ["account.username"]}));
    assert_eq!(s, 200);
    assert_eq!(rows["rows"][0]["account"]["username"], "walker");
    let (_, bodies) = db.post("/v1/query", &key, &json!({"with": ["body", "account"], "select": ["body.position"]}));
    let pos = &bodies["rows"][0]["body"]["position"];
    assert_eq!((pos[0].clone(), pos[1].clone()), (me["position"][0].clone(), me["position"][1].clone()));
    drop(ws);
    g.kill();

    // A new game server (new local directory: the state is the remote's).
    let g = start(&dir.path().join("game2"), &ev);
    let after = g.call("GET", "/me", Some(&token), None);
    assert_eq!(after.status, 200, "{}", after.body);
    assert_eq!(after.body["position"], me["position"]);
    assert_eq!(after.body["level"], me["level"]);
    assert_eq!(after.body["online"], false);
    // The scenery was not made twice.
    let (_, n) =
        db.post("/v1/query", &key, &json!({"without": ["account"], "with": ["body"], "aggregates": [{"op": "count"}]}));
    let scenery = n["rows"][0]["count"].as_u64().unwrap_or(0);
    assert!(scenery > 0, "{n}");

    // The database goes away: account writes wait and fail with 503, the
    // world keeps running; when it is back, the backlog is pushed.
    let victim = g.login("victim");
    let mut vws = ws_connect(&g.ws_url(), Some(&victim)).unwrap();
    until(&mut vws, WAIT, |m| m["type"] == "welcome");
    let (data, base) = db.kill();
    let r = g.post("/register", &json!({"username": "late", "password": "password-123"}));
    assert_eq!(r.status, 503, "{}", r.body);
    // A ban while the database is away takes effect here at once (the
    // socket closes) and is answered 503 until the database has it.
    let r =
        g.call("POST", "/admin/ban", Some(support::ADMIN_TOKEN), Some(&json!({"username": "victim", "reason": "x"})));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(until(&mut vws, WAIT, |m| m.get("close").is_some())["close"], 4403);
    assert_ne!(g.health()["status"], "healthy");
    let db = ecsdb(&data, base.trim_start_matches("http://"));
    wait_for("the backlog to reach the restarted database", || g.health(), |h| h["database"]["lag_commits"] == 0);
    wait_for("/health to say healthy again", || g.health(), |h| h["status"] == "healthy");
    let r = g.post("/register", &json!({"username": "later", "password": "password-123"}));
    assert_eq!(r.status, 201, "{}", r.body);

    // A refusal a retry cannot fix (the key revoked) stops the world, with the reason.
    let admin = db.admin_token();
    let r = db
        .agent
        .delete(&format!("{}/v1/admin/api-keys/game", db.base))
        .header("authorization", &format!("Bearer {admin}"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let mut ws = ws_connect(&g.ws_url(), Some(&token)).unwrap();
    until(&mut ws, WAIT, |m| m["type"] == "welcome");
    wait_for("the world to stop", || g.health(), |h| h["status"] == "unhealthy");
    let h = g.health();
    assert!(h["database"]["error"].as_str().unwrap().contains("401"), "{h}");
    let tick = h["server_tick"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(g.health()["server_tick"].as_u64().unwrap(), tick, "ticks went on after the refusal");
}

#[test]
fn a_remote_without_the_game_schema_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("plain");
    let mut child = Command::new(ecsdb_bin())
        .args(["serve", "--data-dir", data.to_str().unwrap(), "--bind", "127.0.0.1:0"])
        .env("ECSDB_ADMIN_PASSWORD", "admin-password-1")
        .env("ECSDB_JWT_SECRET", "test-secret-0123456789abcdef0123456789abcdef")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(a) = line.split("listening on ").nth(1) {
            break a.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let db = Ecsdb {
        child,
        base,
        data,
        agent: ureq::Agent::config_builder().http_status_as_error(false).build().new_agent(),
    };
    let key = db.api_key();
    let out = Command::new(env!("CARGO_BIN_EXE_game-server"))
        .args(["serve", "--data-dir", dir.path().join("g").to_str().unwrap(), "--port", "0"])
        .env("ECSDB_URL", &db.base)
        .env("ECSDB_API_KEY", &key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("game's schema") && err.contains("account"), "{err}");
    // And a wrong key is named as such.
    let out = Command::new(env!("CARGO_BIN_EXE_game-server"))
        .args(["serve", "--data-dir", dir.path().join("g").to_str().unwrap(), "--port", "0"])
        .env("ECSDB_URL", &db.base)
        .env("ECSDB_API_KEY", "ecsdb_wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_second_writer_of_the_game_tables_stops_the_mirror_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let db = ecsdb(&dir.path().join("ecsdb"), "127.0.0.1:0");
    let key = db.api_key();
    let g = start(
        &dir.path().join("game"),
        &[("ECSDB_URL", db.base.as_str()), ("ECSDB_API_KEY", key.as_str()), ("JWT_SECRET", SECRET)],
    );
    g.login("first");
    wait_for("the mirror to catch up", || g.health(), |h| h["database"]["lag_commits"] == 0);
    // Someone else moves the batch marker: the next batch is refused, not applied twice or over it.
    let (s, m) = db.post("/v1/query", &key, &json!({"with": ["mirror"], "select": ["mirror.batches"]}));
    assert_eq!(s, 200, "{m}");
    let marker = m["rows"][0]["id"].as_u64().unwrap();
    assert!(m["rows"][0]["mirror"]["batches"].as_u64().unwrap() >= 1, "{m}");
    let (s, _) = db.post(
        "/v1/transactions",
        &key,
        &json!({"ops": [{"op": "set", "id": marker, "components": {"mirror": {"batches": 999_999}}}]}),
    );
    assert_eq!(s, 200);
    let r = g.post("/register", &json!({"username": "second", "password": "password-123"}));
    assert_eq!(r.status, 503, "{}", r.body);
    wait_for("the mirror to stop", || g.health(), |h| h["status"] == "unhealthy");
    let h = g.health();
    assert!(h["database"]["error"].as_str().unwrap().contains("another writer"), "{h}");
}
