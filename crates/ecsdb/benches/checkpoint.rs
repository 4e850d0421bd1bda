//! Checkpoints under load, and what memory the process really holds.
//!
//! `cargo bench -p ecsdb --bench checkpoint` (set `ECSDB_BENCH_ENTITIES` to
//! change the largest size, default 1,000,000). For 100k and 1M entities
//! (each with `entities`, `transform` and `physics`) it prints:
//! - accounted memory (what `[memory] max_capacity_mb` limits) against the
//!   process's resident set, and their ratio;
//! - during checkpoints, with one writer committing small transactions and
//!   two readers reading entities in a loop: the longest and 99th-percentile
//!   wait of a reader for its read view, the longest writer pause, and the
//!   peak resident set while the checkpoint ran.
#![allow(clippy::unwrap_used, clippy::many_single_char_names)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ecsdb::{Database, DatabaseConfig, EXAMPLE_SCHEMA};

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn mib(b: u64) -> f64 {
    b as f64 / f64::from(1 << 20)
}

fn fill(db: &Database, from: usize, to: usize) {
    let schema = db.schema().clone();
    let ent = schema.table_id("entities").unwrap();
    let tr = schema.table_id("transform").unwrap();
    let ph = schema.table_id("physics").unwrap();
    let ent_row = db.read().layout(ent).fixed_size;
    let tr_row = db.read().layout(tr).fixed_size;
    let ph_row = db.read().layout(ph).fixed_size;
    let (a, b, c) = (vec![0u8; ent_row], vec![0u8; tr_row], vec![0u8; ph_row]);
    let mut i = from;
    while i < to {
        let n = (to - i).min(50_000);
        db.write(|t| {
            for _ in 0..n {
                t.spawn_rows(&[(ent, &a), (tr, &b), (ph, &c)])?;
            }
            Ok(())
        })
        .unwrap();
        i += n;
    }
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p) as usize]
}

fn under_load(db: &Database) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_bytes()));
    let writer_max = Arc::new(AtomicU64::new(0));
    let ids: Vec<_> = db.read().entities().iter().step_by(997).collect();
    std::thread::scope(|s| {
        let mut readers = Vec::new();
        for r in 0..2 {
            let stop = stop.clone();
            let ids = ids.clone();
            readers.push(s.spawn(move || {
                let mut waits = Vec::new();
                let mut k = r;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let view = db.read();
                    waits.push(t0.elapsed().as_micros() as u64);
                    let _ = view.entity_json(ids[k % ids.len()]);
                    drop(view);
                    k += 1;
                    std::thread::sleep(Duration::from_micros(200));
                }
                waits
            }));
        }
        {
            let stop = stop.clone();
            let writer_max = writer_max.clone();
            let id = ids[0];
            s.spawn(move || {
                let mut level = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    db.write(|t| t.set_json(id, "transform", &serde_json::json!({"position": [level, 0, 0]}))).unwrap();
                    writer_max.fetch_max(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                    level += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
        }
        {
            let stop = stop.clone();
            let peak = peak.clone();
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        let mut times = Vec::new();
        for _ in 0..3 {
            let t0 = Instant::now();
            db.checkpoint().unwrap();
            times.push(t0.elapsed().as_secs_f64() * 1e3);
            std::thread::sleep(Duration::from_millis(200));
        }
        stop.store(true, Ordering::Relaxed);
        let mut waits: Vec<u64> = readers.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let n = waits.len();
        let max = percentile(&mut waits, 1.0);
        let p99 = percentile(&mut waits, 0.99);
        let stats = db.storage_stats().unwrap();
        println!(
            "  checkpoints: {:.0} / {:.0} / {:.0} ms; writer pause (capture) max {:.1} ms; longest commit {:.1} ms",
            times[0],
            times[1],
            times[2],
            stats.checkpoint_pause_us_max as f64 / 1e3,
            writer_max.load(Ordering::Relaxed) as f64 / 1e3
        );
        println!(
            "  reader wait for a read view over {n} reads: max {:.2} ms, p99 {:.3} ms",
            max as f64 / 1e3,
            p99 as f64 / 1e3
        );
        let acc = db.metrics().memory_bytes;
        println!(
            "  peak RSS during checkpoints {:.0} MiB = {:.2}× accounted",
            mib(peak.load(Ordering::Relaxed)),
            peak.load(Ordering::Relaxed) as f64 / acc as f64
        );
    });
}

fn main() {
    let max: usize = std::env::var("ECSDB_BENCH_ENTITIES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DatabaseConfig::default();
    cfg.memory.max_capacity_mb = 0;
    cfg.persistence.snapshot_interval_ops = 0;
    cfg.persistence.snapshot_interval_secs = 31_536_000;
    cfg.persistence.checkpoint_on_shutdown = false;
    cfg.transactions.max_transaction_mb = 1024;
    let db = Database::builder().config(cfg).schema_toml(EXAMPLE_SCHEMA).unwrap().data_dir(dir.path()).build().unwrap();
    let base = rss_bytes();
    println!("process at start: {:.0} MiB RSS", mib(base));
    let mut have = 0;
    for n in [100_000, max] {
        if n <= have {
            continue;
        }
        fill(&db, have, n);
        have = n;
        let acc = db.metrics().memory_bytes;
        let rss = rss_bytes();
        println!(
            "{n} entities: accounted {:.1} MiB, RSS {:.1} MiB ({:.2}× accounted; {:.2}× after the {:.0} MiB the process holds at start)",
            mib(acc),
            mib(rss),
            rss as f64 / acc as f64,
            (rss - base.min(rss)) as f64 / acc as f64,
            mib(base)
        );
        under_load(&db);
    }
}
