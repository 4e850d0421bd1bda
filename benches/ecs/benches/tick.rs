//! A game tick, durable, beside in-memory ECS peers running the same systems.
//!
//! `cargo bench -p ecsdb-bench --bench tick`   (ECSDB_BENCH_QUICK=1 for a short run)
//!
//! Each tick runs two systems over 10,000 and 100,000 entities:
//! - movement: `position += velocity * dt` for every entity;
//! - health: every entity below its maximum regenerates 1 hp, and 1 % of the
//!   entities (a different 1 % each tick) take 10 damage.
//!
//! ecsdb runs both systems as typed queries in one transaction and commits
//! once per tick to its commit log in async durability mode (fsync in the
//! background, at most `batch_timeout_ms` of commits at risk). hecs and
//! bevy_ecs run the same systems in memory, without durability. Reported:
//! tick time p50 / p99 over the measured ticks, and the commit-log bytes
//! written per tick (from the storage counters).
#![allow(clippy::unwrap_used, missing_docs)]
#![allow(clippy::doc_markdown, clippy::cast_precision_loss)]

use std::time::{Duration, Instant};

use ecsdb::{Component, Database, DatabaseConfig};
use ecsdb_bench::fmt_duration;

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
[[tables.health.fields]]
name = "max"
type = "u32"
"#;

const DT: f32 = 1.0 / 60.0;

#[derive(Component, Clone, Copy, bevy_ecs::component::Component)]
struct Position {
    v: [f32; 3],
}
#[derive(Component, Clone, Copy, bevy_ecs::component::Component)]
struct Velocity {
    v: [f32; 3],
}
#[derive(Component, Clone, Copy, bevy_ecs::component::Component)]
struct Health {
    hp: u32,
    max: u32,
}

fn bundle(i: usize) -> (Position, Velocity, Health) {
    let f = i as f32;
    (Position { v: [f, 0.0, 0.0] }, Velocity { v: [1.0, 0.5, f % 3.0] }, Health { hp: 100, max: 100 })
}

#[inline]
fn movement(p: &mut Position, v: &Velocity) {
    for k in 0..3 {
        p.v[k] += v.v[k] * DT;
    }
}

/// Health of one entity (`key` picks the damaged 1 %, varying per tick).
#[inline]
fn health(h: &mut Health, key: u64, tick: u64) {
    if key.wrapping_mul(2_654_435_761).wrapping_add(tick).is_multiple_of(100) {
        h.hp = h.hp.saturating_sub(10);
    } else if h.hp < h.max {
        h.hp += 1;
    }
}

fn quick() -> bool {
    std::env::var("ECSDB_BENCH_QUICK").is_ok()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Row {
    engine: &'static str,
    n: usize,
    p50: Duration,
    p99: Duration,
    log_bytes: Option<f64>,
}

fn measure(warmup: usize, ticks: usize, mut tick: impl FnMut(u64)) -> (Duration, Duration) {
    for t in 0..warmup {
        tick(t as u64);
    }
    let mut times = Vec::with_capacity(ticks);
    for t in 0..ticks {
        let start = Instant::now();
        tick((warmup + t) as u64);
        times.push(start.elapsed());
    }
    times.sort_unstable();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

fn ecsdb_run(n: usize, warmup: usize, ticks: usize) -> Row {
    ecsdb_run_with(n, warmup, ticks, true)
}

/// The same database without a commit log: what the transactions and their
/// change sets cost before any byte reaches the log.
fn ecsdb_memory_run(n: usize, warmup: usize, ticks: usize) -> Row {
    ecsdb_run_with(n, warmup, ticks, false)
}

fn ecsdb_run_with(n: usize, warmup: usize, ticks: usize, durable: bool) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DatabaseConfig::default();
    cfg.database.data_dir = dir.path().to_path_buf();
    cfg.transactions.wal_sync_on_commit = false;
    cfg.persistence.snapshot_interval_ops = 0;
    cfg.persistence.snapshot_interval_secs = 31_536_000;
    cfg.persistence.checkpoint_on_shutdown = false;
    cfg.memory.max_capacity_mb = 0;
    let builder = Database::builder().config(cfg).schema_toml(SCHEMA).unwrap();
    let db = if durable { builder.enable_persistence().build().unwrap() } else { builder.build().unwrap() };
    db.write(|t| t.spawn_batch((0..n).map(bundle))).unwrap();
    let before = db.storage_stats().map_or(0, |s| s.wal_bytes_written);
    let (p50, p99) = measure(warmup, ticks, |tick| {
        let mut t = db.transaction().unwrap();
        t.query::<(&mut Position, &Velocity)>().for_each(|_, (p, v)| movement(p, v)).unwrap();
        t.query::<(&mut Health,)>().for_each(|id, (h,)| health(h, u64::from(id.index()), tick)).unwrap();
        t.commit().unwrap();
    });
    let after = db.storage_stats().map_or(0, |s| s.wal_bytes_written);
    let log = (after - before) as f64 / (warmup + ticks) as f64;
    let engine = if durable { "ecsdb (async log)" } else { "ecsdb (no log)" };
    Row { engine, n, p50, p99, log_bytes: durable.then_some(log) }
}

fn hecs_run(n: usize, warmup: usize, ticks: usize) -> Row {
    let mut w = hecs::World::new();
    w.spawn_batch((0..n).map(bundle));
    let (p50, p99) = measure(warmup, ticks, |tick| {
        for (p, v) in w.query_mut::<(&mut Position, &Velocity)>() {
            movement(p, v);
        }
        for (e, h) in w.query_mut::<(hecs::Entity, &mut Health)>() {
            health(h, u64::from(e.id()), tick);
        }
    });
    Row { engine: "hecs (memory)", n, p50, p99, log_bytes: None }
}

fn bevy_run(n: usize, warmup: usize, ticks: usize) -> Row {
    let mut w = bevy_ecs::world::World::new();
    w.spawn_batch((0..n).map(bundle));
    let mut mv = w.query::<(&mut Position, &Velocity)>();
    let mut hq = w.query::<(bevy_ecs::entity::Entity, &mut Health)>();
    let (p50, p99) = measure(warmup, ticks, |tick| {
        for (mut p, v) in mv.iter_mut(&mut w) {
            movement(&mut p, v);
        }
        for (e, mut h) in hq.iter_mut(&mut w) {
            health(&mut h, u64::from(e.index_u32()), tick);
        }
    });
    Row { engine: "bevy_ecs (memory)", n, p50, p99, log_bytes: None }
}

fn main() {
    let (warmup, ticks) = if quick() { (5, 30) } else { (30, 300) };
    let mut rows = Vec::new();
    for n in [10_000, 100_000] {
        rows.push(ecsdb_run(n, warmup, ticks));
        rows.push(ecsdb_memory_run(n, warmup, ticks));
        rows.push(hecs_run(n, warmup, ticks));
        rows.push(bevy_run(n, warmup, ticks));
    }
    println!(
        "\n{:<20} {:>9} {:>12} {:>12} {:>16} {:>10}",
        "engine", "entities", "tick p50", "tick p99", "log bytes/tick", "p50/best"
    );
    for chunk in rows.chunks(4) {
        let best = chunk[2..].iter().map(|r| r.p50).min().unwrap_or(Duration::ZERO);
        for r in chunk {
            let log = r.log_bytes.map_or_else(|| "-".to_string(), |b| format!("{b:.0}"));
            let ratio = r.p50.as_secs_f64() / best.as_secs_f64().max(1e-12);
            println!(
                "{:<20} {:>9} {:>12} {:>12} {:>16} {:>9.2}x",
                r.engine,
                r.n,
                fmt_duration(r.p50),
                fmt_duration(r.p99),
                log,
                ratio
            );
        }
    }
}
