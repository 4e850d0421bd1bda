//! Replication with real processes on loopback: bootstrap, catch-up,
//! restarts mid-stream, re-bootstrap after the log was trimmed, refused
//! writes, a damaged stream record, partitions through the fault proxy,
//! and failover under synchronous writers with a linearizability check.
#![allow(clippy::unwrap_used, clippy::many_single_char_names)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ecsdb_faultproxy::{Direction, Fault, Proxy};
use serde_json::{Value as J, json};
use tungstenite::client::IntoClientRequest;

const SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";
const ADMIN_PW: &str = "admin-password-1";

/// A free port below the kernel's ephemeral range (32768+), so that no
/// port-0 listener (a proxy, another test's client) can take it between
/// now and the node's start.
fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 500) * 20;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(base + n % 2_000).unwrap();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .new_agent()
}

/// One `ecsdb serve` process on a fixed port (so it can be restarted at
/// the same address).
struct Node {
    child: Option<Child>,
    port: u16,
    data: std::path::PathBuf,
    config: Option<String>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Resp {
    status: u16,
    body: J,
}

impl Node {
    fn new(dir: &std::path::Path, name: &str, config: Option<&str>) -> Node {
        Node {
            child: None,
            port: free_port(),
            data: dir.join(name),
            config: config.map(str::to_string),
            env: Vec::new(),
            args: Vec::new(),
            log: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn replica_of(mut self, primary: &str, key: &str) -> Node {
        self.args = vec!["--replica-of".into(), primary.into()];
        self.env.push(("ECSDB_REPLICA_KEY".into(), key.into()));
        self
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ecsdb"));
        cmd.args(["serve", "--data-dir", self.data.to_str().unwrap(), "--bind", &format!("127.0.0.1:{}", self.port)]);
        cmd.args(&self.args);
        if let Some(c) = &self.config {
            let p = self.data.with_extension("toml");
            std::fs::write(&p, c).unwrap();
            cmd.args(["--config", p.to_str().unwrap()]);
        }
        cmd.env("ECSDB_ADMIN_PASSWORD", ADMIN_PW).env("ECSDB_JWT_SECRET", SECRET).env("ECSDB_LOG_LEVEL", "warn");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Start and wait until it listens.
    fn start(&mut self) {
        let mut child = self.command().stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let err = child.stderr.take().unwrap();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                log.lock().unwrap().push(l);
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("durability:") => break,
                Some(Ok(_)) => {}
                _ => panic!("{} exited before listening: {:?}", self.url(), self.log.lock().unwrap()),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    /// Run to completion (a start expected to fail): exit code and stderr.
    fn run_failing(&self) -> (i32, String) {
        let out = self.command().stdout(Stdio::null()).output().unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&J>) -> Resp {
        let url = format!("{}{path}", self.url());
        let a = agent();
        let res = if method == "GET" {
            let mut r = a.get(&url);
            if let Some(t) = token {
                r = r.header("authorization", &format!("Bearer {t}"));
            }
            r.call()
        } else {
            let mut r = a.post(&url);
            if let Some(t) = token {
                r = r.header("authorization", &format!("Bearer {t}"));
            }
            r.send_json(body.cloned().unwrap_or_else(|| json!({})))
        };
        match res {
            Ok(mut res) => {
                let status = res.status().as_u16();
                let text = res.body_mut().read_to_string().unwrap_or_default();
                Resp { status, body: serde_json::from_str(&text).unwrap_or(J::String(text)) }
            }
            Err(e) => Resp { status: 0, body: J::String(e.to_string()) },
        }
    }

    fn token(&self) -> String {
        let r = self.call("POST", "/v1/auth/login", None, Some(&json!({"username": "admin", "password": ADMIN_PW})));
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["token"].as_str().unwrap().to_string()
    }

    fn seq(&self, t: &str) -> u64 {
        self.call("GET", "/v1/stats", Some(t), None).body["sequence"].as_u64().unwrap_or(0)
    }

    fn replication(&self, t: &str) -> J {
        self.call("GET", "/v1/admin/replication", Some(t), None).body
    }

    /// Every user row, in id order (the compared state).
    fn rows(&self, t: &str) -> J {
        let r = self.call(
            "POST",
            "/v1/query",
            Some(t),
            Some(&json!({"with": ["player"], "select": ["player.name", "player.level", "transform.position"], "limit": 100_000})),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let mut rows = r.body["rows"].as_array().cloned().unwrap_or_default();
        rows.sort_by_key(|r| r["id"].as_u64());
        J::Array(rows)
    }
}

const MIGRATION: &str = "[migration]\nfrom_version = \"2.1.0\"\nto_version = \"2.2.0\"\n\n[[operations]]\ntype = \"add_field\"\ntable = \"player\"\nfield = { name = \"title\", type = \"u32\" }\ndefault_value = 7\n";

fn replicate_key(p: &Node, t: &str, name: &str) -> String {
    let r = p.call("POST", "/v1/admin/api-keys", Some(t), Some(&json!({"name": name, "permissions": ["replicate"]})));
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["key"].as_str().unwrap().to_string()
}

fn spawn_entities(p: &Node, t: &str, n: usize, tag: &str) -> u64 {
    let ops: Vec<J> = (0..n)
        .map(|i| {
            json!({"op": "create", "components": {
                "entities": {"entity_type": 1},
                "player": {"name": format!("{tag}-{i}"), "level": 1},
                "transform": {"position": [i as f32, 1.0, 2.0]}
            }})
        })
        .collect();
    let r = p.call("POST", "/v1/transactions", Some(t), Some(&json!({"ops": ops})));
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["seq"].as_u64().unwrap()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// Wait until `r` holds exactly `p`'s commits and rows.
fn caught_up(p: &Node, r: &Node, t: &str) {
    let want = p.seq(t);
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let at = r.seq(t);
        if at == want && p.rows(t) == r.rows(t) {
            return;
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for {} to hold {}'s commit {want} and rows (at {at}): {} {:?}",
            r.url(),
            p.url(),
            r.replication(t),
            r.log.lock().unwrap().iter().rev().take(12).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bootstrap_follow_refuse_writes_and_share_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Node::new(dir.path(), "p", None);
    p.start();
    let t = p.token();
    spawn_entities(&p, &t, 50, "before");
    let key = replicate_key(&p, &t, "replica-1");
    // A key without the replicate permission cannot bootstrap.
    let reader = p.call("POST", "/v1/admin/api-keys", Some(&t), Some(&json!({"name": "ro", "permissions": ["read"]})));
    let bad = Node::new(dir.path(), "bad", None).replica_of(&p.url(), reader.body["key"].as_str().unwrap());
    let (code, err) = bad.run_failing();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("refused") && err.contains("replicate"), "{err}");
    // A directory holding another database is not overwritten.
    let mut other = Node::new(dir.path(), "other", None);
    other.start();
    other.stop();
    let (code, err) = Node::new(dir.path(), "other", None).replica_of(&p.url(), &key).run_failing();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("serves database"), "{err}");

    let mut r = Node::new(dir.path(), "r", None).replica_of(&p.url(), &key);
    r.start();
    caught_up(&p, &r, &t);
    spawn_entities(&p, &t, 30, "after");
    caught_up(&p, &r, &t);
    // Users made on the primary log in there and their tokens work here.
    let u = p.call(
        "POST",
        "/v1/admin/users",
        Some(&t),
        Some(&json!({"username": "ann", "password": "password-123", "role": "ReadOnly"})),
    );
    assert_eq!(u.status, 201, "{}", u.body);
    let ann = p.call("POST", "/v1/auth/login", None, Some(&json!({"username": "ann", "password": "password-123"})));
    let ann = ann.body["token"].as_str().unwrap().to_string();
    wait_until("ann's session on the replica", Duration::from_secs(10), || {
        r.call("GET", "/v1/stats", Some(&ann), None).status == 200
    });
    // Writes (and logins, which write a session) are refused, naming the primary.
    for (path, body) in [
        ("/v1/entities", json!({"components": {"entities": {"entity_type": 1}}})),
        ("/v1/auth/login", json!({"username": "admin", "password": ADMIN_PW})),
        ("/v1/admin/migrations", json!({"migration": MIGRATION})),
    ] {
        let w = r.call("POST", path, if path.contains("login") { None } else { Some(&t) }, Some(&body));
        assert_eq!(w.status, 409, "{path}: {}", w.body);
        assert_eq!(w.body["error"]["code"], "read_only", "{path}: {}", w.body);
        assert_eq!(w.body["error"]["primary"], json!(p.url()), "{path}: {}", w.body);
    }
    // A migration replicates: the replica's schema follows, and the
    // commits after it (under the new schema) apply.
    let m = p.call("POST", "/v1/admin/migrations", Some(&t), Some(&json!({"migration": MIGRATION})));
    assert_eq!(m.status, 200, "{}", m.body);
    spawn_entities(&p, &t, 3, "migrated");
    caught_up(&p, &r, &t);
    let schema = r.call("GET", "/v1/schema", Some(&t), None).body.to_string();
    assert!(schema.contains("title"), "{schema}");
    let restarted_schema = std::fs::read_to_string(r.data.join("schema.toml")).unwrap();
    assert!(restarted_schema.contains("title"), "{restarted_schema}");
    // The primary's figures.
    let rep = p.replication(&t);
    assert_eq!(rep["role"], "primary");
    let one = &rep["replicas"][0];
    assert_eq!(one["connected"], true, "{rep}");
    assert_eq!(one["acked_seq"], json!(p.seq(&t)), "{rep}");
    assert_eq!(one["lag_ops"], 0, "{rep}");
    assert_eq!(one["advertise"], json!(r.url()), "{rep}");
    assert!(one["acks_measured"].as_u64().unwrap() > 0, "{rep}");
    let metrics = p.call("GET", "/metrics", None, None).body;
    let m = metrics.as_str().unwrap();
    assert!(m.contains(&format!("ecsdb_replication_lag_ops{{replica=\"{}\"}} 0", r.url())), "{m}");
    assert!(m.contains("ecsdb_replication_lag_seconds{replica="), "{m}");
    let mine = r.replication(&t);
    assert_eq!(mine["role"], "replica");
    assert_eq!(mine["follower"]["connected"], true, "{mine}");
    let h = r.call("GET", "/health", None, None).body;
    assert!(h.to_string().contains("replica at commit"), "{h}");
    // A replica does not serve replicas: it names its primary.
    let s = r.call("GET", "/v1/replication/snapshot", Some(&key), None);
    assert_eq!((s.status, s.body["error"]["code"].as_str()), (409, Some("not_primary")), "{}", s.body);
    // Promoting the primary is refused.
    let pr = p.call("POST", "/v1/admin/promote", Some(&t), None);
    assert_eq!(pr.status, 409, "{}", pr.body);
}

#[test]
fn catch_up_after_downtime_and_restarts_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Node::new(dir.path(), "p", None);
    p.start();
    let t = p.token();
    let key = replicate_key(&p, &t, "r");
    let mut r = Node::new(dir.path(), "r", None).replica_of(&p.url(), &key);
    r.start();
    spawn_entities(&p, &t, 10, "a");
    caught_up(&p, &r, &t);
    // Down while the primary commits: it catches up from the log.
    r.kill();
    for i in 0..20 {
        spawn_entities(&p, &t, 5, &format!("down{i}"));
    }
    let down = p.replication(&t);
    assert_eq!(down["replicas"][0]["connected"], false, "{down}");
    assert!(down["replicas"][0]["lag_ops"].as_u64().unwrap() >= 20, "{down}");
    r.start();
    caught_up(&p, &r, &t);
    // Killed again and again while a writer keeps committing.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let url = p.url();
        let t = t.clone();
        std::thread::spawn(move || {
            let a = agent();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"components": {"entities": {"entity_type": 1}, "player": {"name": format!("w{n}")}}});
                let _ = a
                    .post(&format!("{url}/v1/entities"))
                    .header("authorization", &format!("Bearer {t}"))
                    .send_json(body);
                n += 1;
            }
        })
    };
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        r.kill();
        std::thread::sleep(Duration::from_millis(200));
        r.start();
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    caught_up(&p, &r, &t);
}

#[test]
fn a_replica_behind_a_trimmed_log_bootstraps_again_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    // Tiny segments and log bound: the log is released soon after.
    let cfg = "[persistence]\nwal_segment_mb = 1\nwal_archive_enabled = false\nsnapshot_interval_ops = 100000000\n[replication]\nmax_retained_log_mb = 1\n";
    let mut p = Node::new(dir.path(), "p", Some(cfg));
    p.start();
    let t = p.token();
    let key = replicate_key(&p, &t, "r");
    let mut r = Node::new(dir.path(), "r", None).replica_of(&p.url(), &key);
    r.start();
    caught_up(&p, &r, &t);
    r.kill();
    // About 3 MB of log, then checkpoints delete what no one holds.
    for i in 0..30 {
        spawn_entities(&p, &t, 400, &format!("bulk{i}"));
    }
    std::thread::sleep(Duration::from_millis(1200));
    for _ in 0..2 {
        let c = p.call("POST", "/v1/admin/checkpoint", Some(&t), None);
        assert_eq!(c.status, 200, "{}", c.body);
    }
    let rep = p.replication(&t);
    assert_eq!(rep["replicas"][0]["released"], true, "{rep}");
    r.start();
    caught_up(&p, &r, &t);
    let aside: Vec<String> = std::fs::read_dir(&r.data)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
        .filter(|n| n.starts_with("pre-bootstrap-"))
        .collect();
    assert_eq!(aside.len(), 1, "the old data is set aside once");
}

#[test]
fn a_damaged_stream_record_is_refused_and_partitions_heal() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Node::new(dir.path(), "p", None);
    p.start();
    let t = p.token();
    let key = replicate_key(&p, &t, "r");
    let proxy = Proxy::start("127.0.0.1:0", format!("127.0.0.1:{}", p.port).parse().unwrap()).unwrap();
    let via = format!("http://{}", proxy.addr());
    let mut r = Node::new(dir.path(), "r", Some("[replication]\npeer_timeout_ms = 800\n")).replica_of(&via, &key);
    r.start();
    caught_up(&p, &r, &t);

    // One flipped byte in a records frame: refused whole, reconnect, converge.
    proxy.set(Fault::Corrupt(Direction::Down, 4000));
    spawn_entities(&p, &t, 200, "big");
    wait_until("the corruption", Duration::from_secs(10), || proxy.counters.corrupted.load(Ordering::Relaxed) == 1);
    caught_up(&p, &r, &t);
    let logged = r.log.lock().unwrap().join("\n");
    assert!(logged.contains("damaged frame"), "{logged}");
    let rrep = r.replication(&t);
    assert!(rrep["follower"]["reconnects"].as_u64().unwrap() >= 1, "{rrep}");

    // A silent network: the replica notices within its timeout, reports it,
    // and catches up when the network heals.
    proxy.set(Fault::Blackhole);
    spawn_entities(&p, &t, 5, "dark");
    wait_until("the replica to notice", Duration::from_secs(10), || {
        r.replication(&t)["follower"]["connected"] == false
    });
    let h = r.call("GET", "/health", None, None).body;
    assert_eq!(h["status"], "degraded", "{h}");
    proxy.set(Fault::Heal);
    caught_up(&p, &r, &t);

    // One-way partition (nothing reaches the replica), then resets.
    proxy.set(Fault::OneWay(Direction::Up));
    spawn_entities(&p, &t, 5, "oneway");
    std::thread::sleep(Duration::from_millis(1500));
    proxy.set(Fault::Heal);
    caught_up(&p, &r, &t);
    proxy.set(Fault::Reset);
    spawn_entities(&p, &t, 5, "reset");
    std::thread::sleep(Duration::from_millis(300));
    proxy.set(Fault::Heal);
    caught_up(&p, &r, &t);
    // Slow network: still converges.
    proxy.set(Fault::Delay(Duration::from_millis(30)));
    spawn_entities(&p, &t, 5, "slow");
    caught_up(&p, &r, &t);
}

/// `player.level` of a `GET /v1/entities/{id}` answer.
fn level_of(body: &J) -> Option<i64> {
    body["player"]["level"].as_i64().or_else(|| body["components"]["player"]["level"].as_i64())
}

/// One client operation on a register (an entity's `level`).
#[derive(Debug, Clone)]
struct Op {
    key: usize,
    write: bool,
    value: i64,
    start: Instant,
    end: Instant,
    /// The write was acknowledged (`false`: failed or unknown outcome).
    ok: bool,
}

/// Linearizability of single-writer registers whose writer writes
/// increasing values (each key has one writer thread): a history is
/// linearizable iff every read returns a value whose write began before
/// the read ended, no older than any write acknowledged before the read
/// began, and reads never go backwards in real time. Unacknowledged writes
/// may or may not take effect.
fn check_linearizable(history: &[Op], keys: usize) -> Result<(), String> {
    for k in 0..keys {
        let ops: Vec<&Op> = history.iter().filter(|o| o.key == k).collect();
        let writes: Vec<&&Op> = ops.iter().filter(|o| o.write).collect();
        let reads: Vec<&&Op> = ops.iter().filter(|o| !o.write && o.ok).collect();
        for r in &reads {
            if r.value != 0 && !writes.iter().any(|w| w.value == r.value && w.start < r.end) {
                return Err(format!("key {k}: read {} before any write of it began", r.value));
            }
            if let Some(w) = writes.iter().filter(|w| w.ok && w.end < r.start).map(|w| w.value).max()
                && r.value < w
            {
                return Err(format!(
                    "key {k}: read {} after write {w} was acknowledged (a lost or stale write)",
                    r.value
                ));
            }
            for r2 in &reads {
                if r2.end < r.start && r2.value > r.value {
                    return Err(format!("key {k}: read {} after an earlier read saw {}", r.value, r2.value));
                }
            }
        }
    }
    Ok(())
}

#[test]
fn the_checker_refuses_lost_and_stale_histories() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let w = |v, s, e, ok| Op { key: 0, write: true, value: v, start: at(s), end: at(e), ok };
    let r = |v, s, e| Op { key: 0, write: false, value: v, start: at(s), end: at(e), ok: true };
    assert!(check_linearizable(&[w(1, 0, 10, true), r(1, 20, 30)], 1).is_ok());
    assert!(check_linearizable(&[w(1, 0, 10, true), r(0, 20, 30)], 1).is_err(), "lost write");
    assert!(check_linearizable(&[w(1, 0, 10, false), r(0, 20, 30)], 1).is_ok(), "unknown may be lost");
    assert!(check_linearizable(&[r(1, 0, 5), w(1, 10, 20, true)], 1).is_err(), "read from the future");
    assert!(check_linearizable(&[w(1, 0, 10, true), w(2, 11, 30, true), r(2, 12, 13), r(1, 14, 15)], 1).is_err());
}

#[test]
fn failover_under_synchronous_writers_loses_no_acknowledged_write() {
    const KEYS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let sync = "[replication]\nsync_replicas = 1\nsync_timeout_ms = 3000\n";
    let mut p = Node::new(dir.path(), "p", Some(sync));
    p.start();
    let t = p.token();
    let key = replicate_key(&p, &t, "r");
    // Without a replica, a synchronous commit waits and then fails clearly.
    let lone = p.call("POST", "/v1/entities", Some(&t), Some(&json!({"components": {"entities": {"entity_type": 1}}})));
    assert_eq!(lone.status, 503, "{}", lone.body);
    assert_eq!(lone.body["error"]["code"], "replication_timeout", "{}", lone.body);
    let h = p.call("GET", "/health", None, None).body;
    assert!(h.to_string().contains("sync_replicas requires 1"), "{h}");
    // The same [replication] settings on every node: sync_replicas applies to
    // whichever is primary.
    let mut r1 = Node::new(dir.path(), "r1", Some(sync)).replica_of(&p.url(), &key);
    let mut r2 = Node::new(dir.path(), "r2", Some(sync)).replica_of(&p.url(), &key);
    r1.start();
    r2.start();
    caught_up(&p, &r1, &t);
    caught_up(&p, &r2, &t);
    // One register (entity) per writer.
    let mut ids = Vec::new();
    for k in 0..KEYS {
        let c = p.call(
            "POST",
            "/v1/entities",
            Some(&t),
            Some(&json!({"components": {"entities": {"entity_type": 1}, "player": {"name": format!("k{k}"), "level": 0}}})),
        );
        assert_eq!(c.status, 201, "{}", c.body);
        ids.push(c.body["id"].as_u64().unwrap());
    }
    let history = Arc::new(Mutex::new(Vec::<Op>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for (k, id) in ids.iter().copied().enumerate() {
        let (hist, halt, url, tok) = (history.clone(), stop.clone(), p.url(), t.clone());
        threads.push(std::thread::spawn(move || {
            let (history, stop, t) = (hist, halt, tok);
            let a = agent();
            let mut v = 0i64;
            while !stop.load(Ordering::Relaxed) {
                v += 1;
                let start = Instant::now();
                let res = a
                    .post(&format!("{url}/v1/transactions"))
                    .header("authorization", &format!("Bearer {t}"))
                    .send_json(json!({"ops": [{"op": "set", "id": id, "components": {"player": {"level": v}}}]}));
                let ok = matches!(&res, Ok(r) if r.status() == 200);
                history.lock().unwrap().push(Op { key: k, write: true, value: v, start, end: Instant::now(), ok });
                if res.is_err() {
                    return; // the primary is gone
                }
            }
        }));
        let (history, stop, url, t) = (history.clone(), stop.clone(), p.url(), t.clone());
        threads.push(std::thread::spawn(move || {
            let a = agent();
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let Ok(mut res) =
                    a.get(&format!("{url}/v1/entities/{id}")).header("authorization", &format!("Bearer {t}")).call()
                else {
                    return;
                };
                let body: J = res.body_mut().read_json().unwrap_or(J::Null);
                if let Some(v) = level_of(&body) {
                    history.lock().unwrap().push(Op {
                        key: k,
                        write: false,
                        value: v,
                        start,
                        end: Instant::now(),
                        ok: true,
                    });
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    // The primary dies mid-stream.
    p.kill();
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        th.join().unwrap();
    }
    // The procedure: once the replicas report the primary gone, promote the
    // one holding the most commits (the other is refused unless forced).
    for r in [&r1, &r2] {
        wait_until("the replicas to notice", Duration::from_secs(15), || {
            r.replication(&t)["follower"]["connected"] == false
        });
    }
    if r2.seq(&t) > r1.seq(&t) {
        std::mem::swap(&mut r1, &mut r2);
        let refused = r2.call("POST", "/v1/admin/promote", Some(&t), None);
        assert_eq!(refused.status, 409, "{}", refused.body);
        assert!(refused.body.to_string().contains("promote"), "{}", refused.body);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ecsdb"))
        .args(["promote", "--url", &r1.url(), "--api-key", &t])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("epoch 2"), "{}", String::from_utf8_lossy(&out.stdout));
    // Every acknowledged write is on the new primary; reads after the
    // failover join the history.
    let mut h = history.lock().unwrap().clone();
    let acked = h.iter().filter(|o| o.write && o.ok).count();
    assert!(acked > 20, "too few writes acknowledged to mean anything: {acked}");
    for (k, id) in ids.iter().enumerate() {
        let start = Instant::now();
        let g = r1.call("GET", &format!("/v1/entities/{id}"), Some(&t), None);
        assert_eq!(g.status, 200, "{}", g.body);
        let v = level_of(&g.body).unwrap();
        h.push(Op { key: k, write: false, value: v, start, end: Instant::now(), ok: true });
    }
    check_linearizable(&h, KEYS).unwrap();
    // The new primary takes writes (the other replica acknowledges them:
    // it found the new primary by itself).
    let w = r1.call("POST", "/v1/entities", Some(&t), Some(&json!({"components": {"entities": {"entity_type": 2}}})));
    assert_eq!(w.status, 201, "{}", w.body);
    caught_up(&r1, &r2, &t);
    assert_eq!(r2.replication(&t)["primary"], json!(r1.url()));
    // The new primary keeps the guarantee: with its replica stopped, a
    // write is not acknowledged.
    signal(&r2, "-STOP");
    let w = r1.call("POST", "/v1/entities", Some(&t), Some(&json!({"components": {"entities": {"entity_type": 4}}})));
    signal(&r2, "-CONT");
    assert_eq!(w.status, 503, "{}", w.body);
    caught_up(&r1, &r2, &t);
    // The old primary, restarted, learns of epoch 2 and refuses writes.
    p.config = None;
    p.start();
    let w = p.call("POST", "/v1/entities", Some(&t), Some(&json!({"components": {"entities": {"entity_type": 3}}})));
    assert_eq!(w.status, 409, "{}", w.body);
    assert_eq!(w.body["error"]["primary"], json!(r1.url()), "{}", w.body);
    let s = p.call("GET", "/v1/replication/status", None, None).body;
    assert_eq!(s["role"], "fenced", "{s}");
    // Restarted as a replica of the new primary, it follows (bootstrapping
    // again if it held commits the new history lacks).
    p.stop();
    let key2 = replicate_key(&r1, &t, "old-primary");
    let port = p.port;
    drop(p);
    let mut p = Node::new(dir.path(), "p", None).replica_of(&r1.url(), &key2);
    p.port = port;
    p.start();
    caught_up(&r1, &p, &t);
}

#[test]
fn failover_procedure_runs_as_written() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/OPERATIONS.md")).unwrap();
    let failover = doc.split("### Failover").nth(1).expect("the failover section");
    let block = failover.split("```sh tested\n").nth(1).and_then(|r| r.split("```").next()).expect("the tested block");
    let dir = tempfile::tempdir().unwrap();
    let mut p = Node::new(dir.path(), "p", None);
    p.start();
    let t = p.token();
    let admin_key = p.call(
        "POST",
        "/v1/admin/api-keys",
        Some(&t),
        Some(&json!({"name": "ops", "permissions": ["admin", "read", "write"]})),
    );
    let admin_key = admin_key.body["key"].as_str().unwrap().to_string();
    let key = replicate_key(&p, &t, "r");
    let mut r1 = Node::new(dir.path(), "r1", None).replica_of(&p.url(), &key);
    let mut r2 = Node::new(dir.path(), "r2", None).replica_of(&p.url(), &key);
    r1.start();
    r2.start();
    spawn_entities(&p, &t, 20, "x");
    caught_up(&p, &r1, &t);
    caught_up(&p, &r2, &t);
    p.kill();
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_ecsdb")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("sh")
        .args(["-euc", block])
        .env("PATH", path)
        .env("REPLICA1", r1.url())
        .env("REPLICA2", r2.url())
        .env("ADMIN_KEY", &admin_key)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("is now the primary at epoch 2"), "{text}");
    let (new, other) = if r1.replication(&t)["role"] == "primary" { (&r1, &r2) } else { (&r2, &r1) };
    let w = new.call("POST", "/v1/entities", Some(&t), Some(&json!({"components": {"entities": {"entity_type": 1}}})));
    assert_eq!(w.status, 201, "{}", w.body);
    caught_up(new, other, &t);
}

/// SIGSTOP / SIGCONT a node (a replica that stops answering).
fn signal(n: &Node, sig: &str) {
    let pid = n.child.as_ref().unwrap().id().to_string();
    assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
}

#[test]
fn a_synchronous_primary_never_reports_what_a_failover_could_lose() {
    let dir = tempfile::tempdir().unwrap();
    let sync = "[replication]\nsync_replicas = 1\nsync_timeout_ms = 1000\n";
    let mut p = Node::new(dir.path(), "p", Some(sync));
    p.start();
    let t = p.token();
    let key = replicate_key(&p, &t, "r");
    let mut r = Node::new(dir.path(), "r", None).replica_of(&p.url(), &key);
    r.start();
    let c = p.call(
        "POST",
        "/v1/entities",
        Some(&t),
        Some(&json!({"components": {"entities": {"entity_type": 1}, "player": {"name": "e", "level": 5}}})),
    );
    assert_eq!(c.status, 201, "{}", c.body);
    let id = c.body["id"].as_u64().unwrap();
    caught_up(&p, &r, &t);
    // A live subscriber on the primary.
    let addr = p.url().trim_start_matches("http://").to_string();
    let mut req = format!("ws://{addr}/v1/stream").into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    let tcp = std::net::TcpStream::connect(&addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (mut ws, _) = tungstenite::client(req, tcp).unwrap();
    let sub = json!({"type": "subscribe", "id": "q", "query": {"with": ["player"]}});
    ws.send(tungstenite::Message::Text(sub.to_string().into())).unwrap();
    let frame = |ws: &mut tungstenite::WebSocket<std::net::TcpStream>| -> Option<J> {
        loop {
            match ws.read() {
                Ok(tungstenite::Message::Text(x)) => return Some(serde_json::from_str(&x).unwrap()),
                Ok(tungstenite::Message::Binary(b)) => {
                    return Some(serde_json::from_slice(&zstd::decode_all(&b[..]).unwrap()).unwrap());
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    };
    let init = frame(&mut ws).unwrap();
    assert_eq!(init["type"], "initial", "{init}");
    // The replica stops answering: a write is applied here but unconfirmed.
    signal(&r, "-STOP");
    let set = json!({"ops": [{"op": "set", "id": id, "components": {"player": {"level": 7}}}]});
    let w = p.call("POST", "/v1/transactions", Some(&t), Some(&set));
    assert_eq!((w.status, w.body["error"]["code"].as_str()), (503, Some("replication_timeout")), "{}", w.body);
    // Retrying it changes nothing, and must not be acknowledged either.
    let again = p.call("POST", "/v1/transactions", Some(&t), Some(&set));
    assert_eq!(again.status, 503, "a retried write was acknowledged: {}", again.body);
    // Nor may a check, a read or a not-found report the unconfirmed state.
    let check =
        json!({"ops": [{"op": "check", "id": id, "filters": [{"field": "player.level", "op": "eq", "value": 7}]}]});
    let ck = p.call("POST", "/v1/transactions", Some(&t), Some(&check));
    assert_eq!(ck.status, 503, "{}", ck.body);
    let g = p.call("GET", &format!("/v1/entities/{id}"), Some(&t), None);
    assert_eq!(g.status, 503, "{}", g.body);
    let d = p.call("POST", "/v1/transactions", Some(&t), Some(&json!({"ops": [{"op": "delete", "id": id}]})));
    assert_eq!(d.status, 503, "{}", d.body);
    let g = p.call("GET", &format!("/v1/entities/{id}"), Some(&t), None);
    assert_eq!(g.status, 503, "a not-found of an unconfirmed delete: {}", g.body);
    // Nor does the subscriber see them...
    ws.get_ref().set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    assert_eq!(frame(&mut ws), None, "a subscriber saw an unconfirmed commit");
    signal(&r, "-CONT");
    // ...until the replica holds them.
    ws.get_ref().set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let d = frame(&mut ws).unwrap();
    assert_eq!(d["type"], "delta", "{d}");
    caught_up(&p, &r, &t);
    assert_eq!(p.call("GET", &format!("/v1/entities/{id}"), Some(&t), None).status, 404);
}

#[test]
fn a_fake_replica_cannot_confirm_what_it_was_not_sent_nor_fence_the_primary() {
    let dir = tempfile::tempdir().unwrap();
    let sync = "[replication]\nsync_replicas = 1\nsync_timeout_ms = 800\n";
    let mut p = Node::new(dir.path(), "p", Some(sync));
    p.start();
    let t = p.token();
    let key = replicate_key(&p, &t, "fake");
    let id = p.call("GET", "/v1/replication/status", None, None).body["database_id"].as_str().unwrap().to_string();
    // Acknowledging commits it was never sent confirms nothing.
    let url =
        format!("ws://127.0.0.1:{}/v1/replication/stream?after=0&epoch=1&database_id={id}&replica_id=fake", p.port);
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut ws, _) = tungstenite::connect(req).unwrap();
    ws.send(tungstenite::Message::Text(json!({"type": "ack", "seq": 999_999_999u64}).to_string().into())).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let w = p.call("POST", "/v1/entities", Some(&t), Some(&json!({"components": {"entities": {"entity_type": 1}}})));
    assert_eq!(w.status, 503, "a fake acknowledgement confirmed a write: {}", w.body);
    let rep = p.replication(&t);
    assert!(rep["replicas"][0]["acked_seq"].as_u64().unwrap() < 999_999_999, "{rep}");
    drop(ws);
    // Claims of a newer epoch that no node confirms fence nothing.
    let f = p.call(
        "POST",
        "/v1/replication/fence",
        Some(&key),
        Some(&json!({"epoch": 99, "primary": "http://127.0.0.1:1"})),
    );
    assert_eq!((f.status, f.body["error"]["code"].as_str()), (409, Some("fence_unverified")), "{}", f.body);
    let url = format!("ws://127.0.0.1:{}/v1/replication/stream?after=0&epoch=99&database_id={id}&replica_id=f", p.port);
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    match tungstenite::connect(req) {
        Err(tungstenite::Error::Http(refusal)) => assert_eq!(refusal.status().as_u16(), 409),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    assert_eq!(p.call("GET", "/v1/replication/status", None, None).body["role"], "primary");
    // Config: a bad or self-pointing --replica-of, an oversized replica_id.
    let bad = Node::new(dir.path(), "bad", None).replica_of("garbage", &key);
    let (code, err) = bad.run_failing();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("replication.primary") && !err.contains("invalid configuration: invalid configuration"),
        "{err}"
    );
    let mut me = Node::new(dir.path(), "me", None);
    let own = me.url();
    me = me.replica_of(&own, &key);
    let (code, err) = me.run_failing();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("this server itself"), "{err}");
    let long = Node::new(dir.path(), "long", Some(&format!("[replication]\nreplica_id = \"{}\"\n", "x".repeat(300))))
        .replica_of(&p.url(), &key);
    let (code, err) = long.run_failing();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("replica_id"), "{err}");
}

#[test]
fn a_primary_cut_off_during_a_failover_fences_itself_when_the_partition_heals() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Node::new(dir.path(), "a", None);
    let mut b = Node::new(dir.path(), "b", None);
    // Each reaches the other only through a proxy.
    let to_a = Proxy::start("127.0.0.1:0", format!("127.0.0.1:{}", a.port).parse().unwrap()).unwrap();
    let to_b = Proxy::start("127.0.0.1:0", format!("127.0.0.1:{}", b.port).parse().unwrap()).unwrap();
    a.args = vec!["--advertise".into(), format!("http://{}", to_a.addr())];
    a.start();
    let t = a.token();
    let key = replicate_key(&a, &t, "b");
    b = b.replica_of(&format!("http://{}", to_a.addr()), &key);
    b.args.extend(["--advertise".into(), format!("http://{}", to_b.addr())]);
    b.start();
    spawn_entities(&a, &t, 5, "x");
    caught_up(&a, &b, &t);
    to_a.set(Fault::Blackhole);
    to_b.set(Fault::Blackhole);
    let pr = b.call("POST", "/v1/admin/promote", Some(&t), None);
    assert_eq!(pr.status, 200, "{}", pr.body);
    // Both take writes while cut off from each other...
    assert_eq!(
        a.call("POST", "/v1/entities", Some(&t), Some(&json!({"components": {"entities": {"entity_type": 1}}}))).status,
        201
    );
    to_a.set(Fault::Heal);
    to_b.set(Fault::Heal);
    // ...until they can talk: the old primary asks its peers and stops.
    wait_until("the old primary to fence itself", Duration::from_secs(20), || {
        a.call("GET", "/v1/replication/status", None, None).body["role"] == "fenced"
    });
    let w = a.call("POST", "/v1/entities", Some(&t), Some(&json!({"components": {"entities": {"entity_type": 1}}})));
    assert_eq!(w.status, 409, "{}", w.body);
    assert_eq!(w.body["error"]["primary"], json!(format!("http://{}", to_b.addr())), "{}", w.body);
}

/// The archive's figures as `GET /v1/admin/backups` gives them.
fn backups_of(n: &Node, t: &str) -> J {
    let r = n.call("GET", "/v1/admin/backups", Some(t), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// Every node shares one configuration and one backup target: only the
/// primary archives (and takes scheduled backups); a replica keeps its log
/// until the archive holds it, so that, promoted, it continues the archive
/// without a gap, and the archive restores to its newest commit. The old
/// primary, restarted fenced, archives no more.
#[test]
fn one_backup_target_for_the_cluster_and_the_archive_goes_on_after_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let bk = dir.path().join("bk");
    // The archiver ships when it starts and then only a minute later: the
    // commits below stay unarchived while the replica checkpoints.
    let cfg = format!(
        "[persistence]\nwal_segment_mb = 1\nwal_archive_enabled = false\nsnapshot_interval_ops = 100000000\n[backup]\ntarget = \"{}\"\narchive_interval_ms = 60000\narchive_rpo_ms = 120000\ninterval = \"1s\"\n",
        bk.display()
    );
    let mut p = Node::new(dir.path(), "p", Some(&cfg));
    p.start();
    let t = p.token();
    let key = replicate_key(&p, &t, "r");
    // Restarted, the primary archives what it has (the replica's snapshot
    // holds these commits, not its log).
    p.stop();
    p.start();
    let mut r = Node::new(dir.path(), "r", Some(&cfg)).replica_of(&p.url(), &key);
    r.start();
    for i in 0..30 {
        spawn_entities(&p, &t, 400, &format!("bulk{i}"));
    }
    caught_up(&p, &r, &t);
    let pb = backups_of(&p, &t);
    assert_eq!(pb["archiving_here"], true, "{pb}");
    let rb = backups_of(&r, &t);
    assert_eq!(rb["archiving_here"], false, "{rb}");
    assert!(rb["archive"].is_null(), "{rb}");
    // Scheduled backups (every second) are the primary's alone: the
    // replica's clock passes too, but it takes none.
    std::thread::sleep(Duration::from_millis(2500));
    let marker: J = serde_json::from_slice(&std::fs::read(bk.join("archive/EPOCH")).unwrap()).unwrap();
    assert_eq!(marker["epoch"], 1, "{marker}");
    // The replica's checkpoint keeps the log the archive lacks.
    let c = r.call("POST", "/v1/admin/checkpoint", Some(&t), None);
    assert_eq!(c.status, 200, "{}", c.body);
    let before = p.seq(&t);
    p.kill();
    let pr = r.call("POST", "/v1/admin/promote", Some(&t), Some(&json!({})));
    assert_eq!(pr.status, 200, "{}", pr.body);
    // Promoted: it archives from where the former primary stopped, with no gap.
    wait_until("the promoted node to archive", Duration::from_secs(20), || {
        let b = backups_of(&r, &t);
        b["archiving_here"] == true && b["archive"]["shipped_seq"].as_u64() == Some(before)
    });
    let b = backups_of(&r, &t);
    assert!(b["archive"]["gap"].is_null() && b["archive"]["last_error"].is_null(), "{b}");
    assert!(b["archive_start_error"].is_null(), "{b}");
    let marker: J = serde_json::from_slice(&std::fs::read(bk.join("archive/EPOCH")).unwrap()).unwrap();
    assert_eq!(marker["epoch"], 2, "{marker}");
    spawn_entities(&r, &t, 10, "after");
    // A new replica of the promoted node bootstraps from the target up to
    // where the failover began (past it the target could hold the former
    // primary's commits) and takes the rest from the new primary's log.
    let key4 = replicate_key(&r, &t, "r4");
    let mut r4 = Node::new(dir.path(), "r4", Some(&cfg)).replica_of(&r.url(), &key4);
    r4.env.push(("ECSDB_LOG_LEVEL".into(), "info".into()));
    r4.start();
    caught_up(&r, &r4, &t);
    let log = r4.log.lock().unwrap().join("\n");
    let line = log.lines().find(|l| l.contains("bootstrapped from")).unwrap_or_default();
    assert!(line.contains("from the backup target") && line.contains(&format!(" seq={before} ")), "{line}");
    r4.stop();
    let last = r.seq(&t);
    let rows = r.rows(&t);
    // The former primary comes back fenced: it archives nothing.
    p.start();
    wait_until("the old primary to be fenced", Duration::from_secs(20), || p.replication(&t)["role"] == "fenced");
    let ob = backups_of(&p, &t);
    assert_eq!(ob["archiving_here"], false, "{ob}");
    p.stop();
    // Stopping ships the rest; the archive restores to the newest commit.
    r.stop();
    let restored = dir.path().join("restored");
    let out = Command::new(env!("CARGO_BIN_EXE_ecsdb"))
        .args(["restore", "--from", bk.to_str().unwrap(), "--data-dir", restored.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut c = Node::new(dir.path(), "restored", None);
    c.start();
    assert_eq!(c.seq(&t), last);
    assert_eq!(c.rows(&t), rows);
}

/// A replica with the cluster's backup target bootstraps from it (a full
/// backup plus the archived log after it), takes the rest from the
/// primary's log and serves the same rows. A target that cannot serve is
/// named: with `bootstrap_from = "backup"` the start is refused, with
/// `"auto"` the primary's snapshot is taken instead.
#[test]
fn a_replica_bootstraps_from_the_backup_target() {
    let dir = tempfile::tempdir().unwrap();
    let bk = dir.path().join("bk");
    let cfg = |target: &std::path::Path, from: &str| {
        format!(
            "[backup]\ntarget = \"{}\"\narchive_interval_ms = 100\n[replication]\nbootstrap_from = \"{from}\"\n",
            target.display()
        )
    };
    let mut p = Node::new(dir.path(), "p", Some(&cfg(&bk, "auto")));
    p.start();
    let t = p.token();
    let key = replicate_key(&p, &t, "r");
    spawn_entities(&p, &t, 200, "base");
    let b = p.call("POST", "/v1/admin/backups", Some(&t), None);
    assert!(b.status == 200 || b.status == 201, "{}", b.body);
    spawn_entities(&p, &t, 50, "archived");
    let archived = p.seq(&t);
    wait_until("the archive to hold the primary's commits", Duration::from_secs(20), || {
        backups_of(&p, &t)["archive"]["shipped_seq"].as_u64() >= Some(archived)
    });
    spawn_entities(&p, &t, 10, "after");

    let mut r = Node::new(dir.path(), "r", Some(&cfg(&bk, "backup"))).replica_of(&p.url(), &key);
    r.env.push(("ECSDB_LOG_LEVEL".into(), "info".into()));
    r.start();
    caught_up(&p, &r, &t);
    let log = r.log.lock().unwrap().join("\n");
    assert!(log.contains("bootstrapped from the backup target"), "{log}");
    assert!(!log.contains("bootstrapped from the primary's snapshot"), "{log}");
    // From the full backup, with the archived commits after it replayed.
    let line = log.lines().find(|l| l.contains("bootstrapped from")).unwrap_or_default();
    let replayed: u64 = line
        .split("replayed=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(line.contains("base=backup") && replayed >= 1, "{line}");
    // It follows like any replica.
    spawn_entities(&p, &t, 5, "later");
    caught_up(&p, &r, &t);

    // A target with nothing of this database.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let refused = Node::new(dir.path(), "r2", Some(&cfg(&empty, "backup"))).replica_of(&p.url(), &key);
    let (code, err) = refused.run_failing();
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("cannot bootstrap from the backup target") && err.contains("holds no backup or archive"),
        "{err}"
    );
    // Another database's target is refused before anything is written,
    // whichever source is asked for.
    let other_bk = dir.path().join("other-bk");
    let mut q = Node::new(dir.path(), "q", Some(&cfg(&other_bk, "auto")));
    q.start();
    wait_until("the other database's archive", Duration::from_secs(20), || other_bk.join("archive/IDENTITY").exists());
    q.stop();
    for from in ["auto", "backup", "primary"] {
        let n = Node::new(dir.path(), &format!("r-{from}"), Some(&cfg(&other_bk, from))).replica_of(&p.url(), &key);
        let (code, err) = n.run_failing();
        assert_ne!(code, 0, "{err}");
        assert!(err.contains("holds database") && err.contains("use another target or prefix"), "{from}: {err}");
        assert!(!n.data.join("database_id").exists() && !n.data.join("snapshots").exists(), "{from}: data written");
    }
    let mut auto = Node::new(dir.path(), "r3", Some(&cfg(&empty, "auto"))).replica_of(&p.url(), &key);
    auto.env.push(("ECSDB_LOG_LEVEL".into(), "info".into()));
    auto.start();
    caught_up(&p, &auto, &t);
    let log = auto.log.lock().unwrap().join("\n");
    assert!(
        log.contains("taking the primary's snapshot") && log.contains("bootstrapped from the primary's snapshot"),
        "{log}"
    );
}

/// A replica that never heard of the replica promoted after its primary
/// died (it joined first, and its stream never broke to learn of later
/// nodes) follows the new primary when the promotion tells it.
#[test]
fn a_replica_told_of_the_new_primary_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Node::new(dir.path(), "p", None);
    p.start();
    let t = p.token();
    let key = replicate_key(&p, &t, "r");
    let mut r1 = Node::new(dir.path(), "r1", None).replica_of(&p.url(), &key);
    r1.start();
    spawn_entities(&p, &t, 5, "a");
    caught_up(&p, &r1, &t);
    let mut r2 = Node::new(dir.path(), "r2", None).replica_of(&p.url(), &key);
    r2.start();
    spawn_entities(&p, &t, 5, "b");
    caught_up(&p, &r1, &t);
    caught_up(&p, &r2, &t);
    let peers = r1.replication(&t)["peers"].to_string();
    assert!(!peers.contains(&r2.url()), "r1 already knows r2: {peers}");
    p.kill();
    let pr = r2.call("POST", "/v1/admin/promote", Some(&t), Some(&json!({})));
    assert_eq!(pr.status, 200, "{}", pr.body);
    let w = spawn_entities(&r2, &t, 3, "c");
    wait_until("r1 to follow the new primary", Duration::from_secs(20), || r1.seq(&t) >= w);
    caught_up(&r2, &r1, &t);
}
