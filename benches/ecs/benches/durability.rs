//! Durable commits side by side with SQLite, snapshots and recovery.
//!
//! `cargo bench -p ecsdb-bench --bench durability`   (ECSDB_BENCH_QUICK=1 for a short run)
//!
//! 1. Commit throughput and latency (p50/p99) for 1, 10, 100 and 1,000
//!    inserts per transaction: ecsdb in sync mode (fdatasync before the
//!    acknowledgement) and async mode, against SQLite (rusqlite, WAL mode)
//!    with `synchronous=FULL` (equal durability to sync) and `NORMAL`.
//!    Each insert is one entity with Position, Velocity (vec3) and Health.
//! 2. Group commit: 4 threads committing 1-insert transactions in sync mode.
//! 3. Snapshot write and load of 1,000,000 entities with 3 components.
//! 4. Recovery of 1,000,000 entities (snapshot) plus 1,000,000 log records.
#![allow(clippy::unwrap_used, missing_docs)]
// Benchmark harness: prose in docs names tools, and short names keep the workloads readable.
#![allow(clippy::doc_markdown, clippy::many_single_char_names, clippy::similar_names)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ecsdb::{Database, DatabaseConfig, Schema};

const SCHEMA: &str = r#"
[tables.position]
[[tables.position.fields]]
name = "v"
type = "[f32; 3]"
[tables.velocity]
[[tables.velocity.fields]]
name = "v"
type = "[f32; 3]"
[tables.health]
[[tables.health.fields]]
name = "hp"
type = "u32"
"#;

fn quick() -> bool {
    std::env::var("ECSDB_BENCH_QUICK").is_ok()
}

fn config(dir: &Path, sync: bool) -> DatabaseConfig {
    let mut c = DatabaseConfig::default();
    c.database.data_dir = dir.to_path_buf();
    c.transactions.wal_sync_on_commit = sync;
    c.persistence.snapshot_interval_ops = 0;
    c.persistence.snapshot_interval_secs = 31_536_000;
    c.persistence.checkpoint_on_shutdown = false;
    c.memory.max_capacity_mb = 0;
    c
}

fn open(dir: &Path, sync: bool, schema: &Arc<Schema>) -> Database {
    Database::builder().config(config(dir, sync)).schema(schema.clone()).enable_persistence().build().unwrap()
}

struct Run {
    label: String,
    ops_per_txn: usize,
    txns: usize,
    elapsed: Duration,
    lat: Vec<Duration>,
}

impl Run {
    fn pct(&self, p: f64) -> Duration {
        let mut v = self.lat.clone();
        v.sort_unstable();
        v[((v.len() as f64 - 1.0) * p) as usize]
    }
    fn ops_per_s(&self) -> f64 {
        (self.txns * self.ops_per_txn) as f64 / self.elapsed.as_secs_f64()
    }
}

fn txns_for(ops: usize) -> usize {
    let budget = if quick() { 4_000 } else { 40_000 };
    (budget / ops).clamp(if quick() { 20 } else { 100 }, 2_000)
}

fn ecsdb_run(schema: &Arc<Schema>, ops: usize, sync: bool) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), sync, schema);
    let t = ["position", "velocity", "health"].map(|n| schema.table_id(n).unwrap());
    let v = bytemuck::bytes_of(&[1.0f32, 2.0, 3.0]).to_vec();
    let hp = 100u32.to_le_bytes();
    let txns = txns_for(ops);
    let mut lat = Vec::with_capacity(txns);
    let start = Instant::now();
    for _ in 0..txns {
        let t0 = Instant::now();
        let mut txn = db.transaction().unwrap();
        for _ in 0..ops {
            txn.spawn_rows(&[(t[0], &v), (t[1], &v), (t[2], &hp)]).unwrap();
        }
        txn.commit().unwrap();
        lat.push(t0.elapsed());
    }
    let elapsed = start.elapsed();
    Run { label: format!("ecsdb {}", if sync { "sync" } else { "async" }), ops_per_txn: ops, txns, elapsed, lat }
}

fn sqlite_run(ops: usize, full: bool) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("bench.db")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", if full { "FULL" } else { "NORMAL" }).unwrap();
    conn.execute_batch(
        "CREATE TABLE e (id INTEGER PRIMARY KEY, px REAL, py REAL, pz REAL, vx REAL, vy REAL, vz REAL, hp INTEGER)",
    )
    .unwrap();
    let txns = txns_for(ops);
    let mut lat = Vec::with_capacity(txns);
    let start = Instant::now();
    for _ in 0..txns {
        let t0 = Instant::now();
        let tx = conn.unchecked_transaction().unwrap();
        {
            let mut st = tx.prepare_cached("INSERT INTO e (px,py,pz,vx,vy,vz,hp) VALUES (1,2,3,1,2,3,100)").unwrap();
            for _ in 0..ops {
                st.execute([]).unwrap();
            }
        }
        tx.commit().unwrap();
        lat.push(t0.elapsed());
    }
    let elapsed = start.elapsed();
    Run { label: format!("sqlite {}", if full { "FULL" } else { "NORMAL" }), ops_per_txn: ops, txns, elapsed, lat }
}

fn fmt_d(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 { format!("{:.2} ms", us / 1000.0) } else { format!("{us:.1} us") }
}

fn commits(schema: &Arc<Schema>) {
    println!("\n## Durable commits (inserts of 1 entity x 3 components each)\n");
    println!("| ops/txn | engine | txns | ops/s | p50 | p99 | ops/s vs SQLite at equal durability |");
    println!("|---|---|---|---|---|---|---|");
    for ops in [1, 10, 100, 1000] {
        let runs = [
            ecsdb_run(schema, ops, true),
            sqlite_run(ops, true),
            ecsdb_run(schema, ops, false),
            sqlite_run(ops, false),
        ];
        for (i, r) in runs.iter().enumerate() {
            let peer = &runs[if i < 2 { 1 } else { 3 }];
            let ratio = if r.label.starts_with("ecsdb") {
                format!("{:.1}x", r.ops_per_s() / peer.ops_per_s())
            } else {
                String::new()
            };
            println!(
                "| {} | {} | {} | {:.0} | {} | {} | {} |",
                ops,
                r.label,
                r.txns,
                r.ops_per_s(),
                fmt_d(r.pct(0.5)),
                fmt_d(r.pct(0.99)),
                ratio
            );
        }
    }
}

fn group_commit(schema: &Arc<Schema>) {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), true, schema);
    let t = ["position", "velocity", "health"].map(|n| schema.table_id(n).unwrap());
    let per = if quick() { 200 } else { 1000 };
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..4 {
            let db = db.clone();
            s.spawn(move || {
                let v = bytemuck::bytes_of(&[1.0f32, 2.0, 3.0]).to_vec();
                let hp = 1u32.to_le_bytes();
                for _ in 0..per {
                    let mut txn = db.transaction().unwrap();
                    txn.spawn_rows(&[(t[0], &v), (t[1], &v), (t[2], &hp)]).unwrap();
                    txn.commit().unwrap();
                }
            });
        }
    });
    let e = start.elapsed();
    let st = db.storage_stats().unwrap();
    println!("\n## Group commit (sync mode, 4 threads, 1 insert per transaction)\n");
    println!(
        "{} commits in {:.2} s = {:.0} commits/s with {} fdatasyncs ({:.1} commits per sync)",
        4 * per,
        e.as_secs_f64(),
        f64::from(4 * per) / e.as_secs_f64(),
        st.wal_syncs,
        f64::from(4 * per) / st.wal_syncs.max(1) as f64
    );
}

fn big(schema: &Arc<Schema>) {
    let n: usize = if quick() { 100_000 } else { 1_000_000 };
    let dir = tempfile::tempdir().unwrap();
    let t = ["position", "velocity", "health"].map(|x| schema.table_id(x).unwrap());
    let v = bytemuck::bytes_of(&[1.0f32, 2.0, 3.0]).to_vec();
    let hp = 100u32.to_le_bytes();
    let pos = schema.field_ref("health", "hp").unwrap();
    {
        let db = open(dir.path(), false, schema);
        let mut txn = db.transaction().unwrap();
        for _ in 0..n {
            txn.spawn_rows(&[(t[0], &v), (t[1], &v), (t[2], &hp)]).unwrap();
        }
        txn.commit().unwrap();
        let info = db.checkpoint().unwrap();
        let st = db.storage_stats().unwrap();
        println!("\n## Snapshot of {n} entities x 3 components\n");
        println!(
            "write: {:.0} ms total, longest writer pause (state copy) {:.1} ms, file {:.1} MB from {:.1} MB raw ({:.0} MB/s raw, {:.0} entities/s)",
            info.write_ms + st.checkpoint_pause_us_max as f64 / 1e3,
            st.checkpoint_pause_us_max as f64 / 1e3,
            info.bytes as f64 / 1e6,
            info.raw_bytes as f64 / 1e6,
            info.raw_bytes as f64 / 1e6 / ((info.write_ms + st.checkpoint_pause_us_max as f64 / 1e3) / 1e3),
            n as f64 / ((info.write_ms + st.checkpoint_pause_us_max as f64 / 1e3) / 1e3)
        );
        // Load alone.
        let bytes = std::fs::read(&info.path).unwrap();
        let t0 = Instant::now();
        let w = ecsdb::storage::snapshot::load(&info.path, &bytes, schema).unwrap();
        let load = t0.elapsed();
        assert_eq!(w.entity_count(), n);
        println!(
            "load:  {:.0} ms ({:.0} MB/s raw, {:.0} entities/s)",
            load.as_secs_f64() * 1e3,
            info.raw_bytes as f64 / 1e6 / load.as_secs_f64(),
            n as f64 / load.as_secs_f64()
        );
        // n log records after the snapshot: one field update each.
        let ids: Vec<_> = db.read().entities().iter().collect();
        let t0 = Instant::now();
        for (i, id) in ids.iter().enumerate() {
            let mut txn = db.transaction().unwrap();
            txn.set_ref(*id, pos, &ecsdb::Value::U64(i as u64 % 1000)).unwrap();
            txn.commit().unwrap();
        }
        println!("(wrote {n} one-update commits in async mode in {:.1} s)", t0.elapsed().as_secs_f64());
        db.close().unwrap_or(());
    }
    // Simulate a crash-free restart without the shutdown snapshot: recovery
    // = snapshot load + replay of every record after it.
    let t0 = Instant::now();
    let db = open(dir.path(), true, schema);
    let e = t0.elapsed();
    let r = db.recovery_report().unwrap();
    println!("\n## Recovery\n");
    println!(
        "{n} entities from the snapshot + {} log records replayed in {:.0} ms ({:.0} records/s)",
        r.records_replayed,
        e.as_secs_f64() * 1e3,
        r.records_replayed as f64 / e.as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is ignored here.
    let schema = Arc::new(Schema::from_toml_str(SCHEMA).unwrap());
    println!("# ecsdb durability benchmark ({})", if quick() { "quick" } else { "full" });
    commits(&schema);
    group_commit(&schema);
    big(&schema);
}
