//! Replication lag and bootstrap, measured on loopback with a primary and a
//! replica in this process (each its own server, talking over TCP):
//!
//! - lag at a paced write rate: commits of `OPS_PER_COMMIT` field updates at
//!   the rate that gives 10k and 100k operations/s; per commit, the time from
//!   the commit (logged on the primary) to the replica's acknowledgement that
//!   it holds it durably (`GET /v1/admin/replication` `lag_p50_ms`/`lag_p99_ms`);
//! - bootstrap: a new replica of a primary holding `ECSDB_BENCH_ENTITIES`
//!   (1M) entities, from start to serving at the primary's last commit —
//!   from the primary's snapshot stream, and (at the end) from a full
//!   backup on a local directory target (`bootstrap_from = "backup"`).
//!
//! `cargo bench -p ecsdb-server --bench replication` (`benches/replication/run.sh`
//! runs it beside `PostgreSQL` streaming replication at the same rates).
#![allow(clippy::unwrap_used, clippy::cast_precision_loss, clippy::many_single_char_names, clippy::too_many_lines)]

use std::time::{Duration, Instant};

use ecsdb_server::ServerConfig;
use serde_json::{Value as J, json};

#[path = "../../../benches/shared/body.rs"]
mod body;
use body::{Body, SCHEMA};

fn config(dir: &std::path::Path, schema: &std::path::Path) -> ServerConfig {
    let mut c = ServerConfig::default();
    c.server.bind = "127.0.0.1:0".into();
    c.db.database.data_dir = dir.to_path_buf();
    c.db.database.schema_file = Some(schema.to_path_buf());
    c.db.memory.max_capacity_mb = 0;
    c.db.persistence.snapshot_interval_ops = 0;
    c.logging.level = "error".into();
    c.rate_limit.max_requests = 1_000_000;
    c
}

fn call(method: &str, url: &str, token: &str, body: Option<J>) -> J {
    let a: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = if method == "GET" {
        a.get(url).header("authorization", &format!("Bearer {token}")).call().unwrap()
    } else {
        a.post(url).header("authorization", &format!("Bearer {token}")).send_json(body.unwrap_or(json!({}))).unwrap()
    };
    r.body_mut().read_json().unwrap_or(J::Null)
}

fn spawn_bodies(db: &ecsdb::Database, n: usize) -> Vec<ecsdb::EntityId> {
    let mut ids = Vec::with_capacity(n);
    let mut made = 0;
    while made < n {
        let k = (n - made).min(100_000);
        let bodies: Vec<Body> = (0..k)
            .map(|i| {
                let f = (made + i) as f32;
                Body { pos: [f, f * 0.5, 0.0], vel: [0.1, 0.2, 0.0], hp: 100, level: 1, score: (made + i) as u64 }
            })
            .collect();
        let (got, _) = db.write(|t| t.spawn_batch(bodies.into_iter().map(|b| (b,)))).unwrap();
        ids.extend(got);
        made += k;
    }
    ids
}

fn main() {
    let n_boot: usize = std::env::var("ECSDB_BENCH_ENTITIES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let secs: u64 = std::env::var("ECSDB_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let work = tempfile::tempdir().unwrap();
    let schema = work.path().join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    // A backup target for the last phase (no archiver: it would share the
    // disk with the lag phases).
    let bk = work.path().join("bk").to_string_lossy().to_string();
    let mut pc = config(&work.path().join("p"), &schema);
    pc.backup.target = Some(bk.clone());
    pc.backup.archive = false;
    let primary = ecsdb_server::start(pc, "bench-password-1").unwrap();
    let base = format!("http://{}", primary.addr);
    let a: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let tok: J = a
        .post(&format!("{base}/v1/auth/login"))
        .send_json(json!({"username": "admin", "password": "bench-password-1"}))
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let token = tok["token"].as_str().unwrap().to_string();
    let key = call(
        "POST",
        &format!("{base}/v1/admin/api-keys"),
        &token,
        Some(json!({"name": "r", "permissions": ["replicate"]})),
    );
    let key = key["key"].as_str().unwrap().to_string();
    let db = primary.db.clone();
    // Bootstrap first: a new replica of a primary holding n_boot entities,
    // timed from start to serving at the primary's last commit. The same
    // replica then follows the lag phases.
    let ids = spawn_bodies(&db, n_boot.max(10_000));
    let target = db.version();
    let mut rc = config(&work.path().join("r"), &schema);
    rc.db.replication.primary = Some(base.clone());
    let t0 = Instant::now();
    let replica = ecsdb_server::start_with(&rc, "unused-password", Some(&key)).unwrap();
    while replica.db.version() < target {
        std::thread::sleep(Duration::from_millis(1));
    }
    let boot = t0.elapsed().as_secs_f64();
    println!(
        "bootstrap: {} entities (commit {target}) in {boot:.2} s, from start to serving at the primary's last commit",
        replica.db.metrics().total_entities
    );
    let wait_caught_up = |target: u64| {
        let end = Instant::now() + Duration::from_mins(2);
        while replica.db.version() < target {
            assert!(Instant::now() < end, "the replica did not catch up");
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    wait_caught_up(db.version());
    println!(
        "machine: {} cores; primary and replica in one process, loopback; sync commits (fsync) on both",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    println!(
        "{:>10} {:>8} {:>10} {:>12} {:>9} {:>9} {:>9}",
        "target/s", "ops/cmt", "commits/s", "achieved/s", "lag p50", "lag p99", "acks"
    );
    for (rate, per_commit) in [(10_000u64, 10usize), (10_000, 100), (100_000, 100), (100_000, 1000)] {
        let commits_per_sec = rate / per_commit as u64;
        let interval = Duration::from_secs_f64(1.0 / commits_per_sec as f64);
        primary.replication.registry.reset_latency();
        let start = Instant::now();
        let mut done = 0u64;
        let mut v = 0u64;
        while start.elapsed() < Duration::from_secs(secs) {
            let due = start + interval * u32::try_from(done).unwrap_or(u32::MAX);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            v += 1;
            let mut t = db.transaction().unwrap();
            let base_i = (done as usize * per_commit) % 10_000;
            for k in 0..per_commit {
                t.set(ids[(base_i + k) % 10_000], "body", "level", &ecsdb::Value::U64(v)).unwrap();
            }
            t.commit().unwrap();
            done += 1;
        }
        let elapsed = start.elapsed().as_secs_f64();
        wait_caught_up(db.version());
        std::thread::sleep(Duration::from_millis(50));
        let rep = call("GET", &format!("{base}/v1/admin/replication"), &token, None);
        let r = &rep["replicas"][0];
        println!(
            "{:>10} {:>8} {:>10} {:>12.0} {:>7.2}ms {:>7.2}ms {:>9}",
            rate,
            per_commit,
            commits_per_sec,
            (done as f64 * per_commit as f64) / elapsed,
            r["lag_p50_ms"].as_f64().unwrap_or(f64::NAN),
            r["lag_p99_ms"].as_f64().unwrap_or(f64::NAN),
            r["acks_measured"]
        );
        if std::env::var("ECSDB_BENCH_DEBUG").is_ok() {
            println!("{}", rep["replicas"]);
        }
        let f = replica.replication.follower.lock().clone();
        if f.reconnects > 0 {
            println!("   (the replica reconnected {} time(s): {:?})", f.reconnects, f.last_error);
        }
    }
    // Bootstrap from the backup target: a full backup of the primary, then a
    // new replica built from it (the primary's log gives the rest).
    let t0 = Instant::now();
    let b = call("POST", &format!("{base}/v1/admin/backups"), &token, None);
    let backup_s = t0.elapsed().as_secs_f64();
    let target = db.version();
    let mut rc2 = config(&work.path().join("r2"), &schema);
    rc2.db.replication.primary = Some(base.clone());
    rc2.db.replication.bootstrap_from = "backup".into();
    rc2.backup.target = Some(bk);
    rc2.backup.archive = false;
    let t0 = Instant::now();
    let r2 = ecsdb_server::start_with(&rc2, "unused-password", Some(&key)).unwrap();
    while r2.db.version() < target {
        std::thread::sleep(Duration::from_millis(1));
    }
    println!(
        "bootstrap from the backup target: {} entities in {:.2} s, from start to serving at the primary's last commit (the full backup, {} bytes on a local directory, took {backup_s:.2} s)",
        r2.db.metrics().total_entities,
        t0.elapsed().as_secs_f64(),
        b["stored_bytes"]
    );
    // The servers end with the process.
    std::process::exit(0);
}
