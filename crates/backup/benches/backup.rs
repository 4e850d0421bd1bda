//! Backup and restore of a large world (1M entities by default,
//! `ECSDB_BENCH_ENTITIES` to change) to a local directory and to a local S3
//! server (moto, when installed), beside this machine's disk write speed and
//! zstd's speed on the same bytes. `bash benches/backup/run.sh` runs it
//! with `pg_basebackup` of a table of the same rows in a local database server.
#![allow(clippy::unwrap_used, clippy::cast_precision_loss, clippy::many_single_char_names, clippy::too_many_lines)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use ecsdb::{Database, DatabaseConfig};
use ecsdb_backup::manager::quiet;
use ecsdb_backup::{BackupSettings, Kind, Manager, Point, Request, StorageSettings, Target};

#[path = "../../../benches/shared/body.rs"]
mod body;
use body::{Body, SCHEMA};

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1_048_576.0 / secs
}

fn main() {
    let n: usize = std::env::var("ECSDB_BENCH_ENTITIES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let work = tempfile::tempdir_in(std::env::var("ECSDB_BENCH_DIR").unwrap_or_else(|_| "/tmp".into())).unwrap();
    let dir = work.path().join("data");
    let mut c = DatabaseConfig::default();
    c.database.data_dir.clone_from(&dir);
    c.persistence.snapshot_interval_ops = 0;
    c.persistence.checkpoint_on_shutdown = false;
    c.memory.max_capacity_mb = 0;
    let db = Database::builder().config(c).schema_toml(SCHEMA).unwrap().enable_persistence().build().unwrap();
    let t0 = Instant::now();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut made = 0;
    while made < n {
        let k = (n - made).min(100_000);
        let bodies: Vec<Body> = (0..k)
            .map(|i| {
                let r = next();
                Body {
                    pos: [(r % 10_000) as f32 * 0.37, ((r >> 16) % 10_000) as f32 * 0.61, 0.0],
                    vel: [((r >> 32) % 100) as f32 * 0.01 - 0.5, ((r >> 40) % 100) as f32 * 0.01 - 0.5, 0.0],
                    hp: (r % 100) as u32,
                    level: ((r >> 8) % 60) as u32,
                    score: (made + i) as u64 * 17,
                }
            })
            .collect();
        let mut t = db.transaction().unwrap();
        t.spawn_batch(bodies.into_iter().map(|b| (b,))).unwrap();
        t.commit().unwrap();
        made += k;
    }
    db.checkpoint().unwrap();
    println!("world: {n} entities, seq {}, built in {:.1} s", db.version(), t0.elapsed().as_secs_f64());

    // The machine: sequential write with fsync, and zstd on the state's bytes.
    let image = db.capture_snapshot();
    let raw: Vec<u8> = image.raw_blocks().flat_map(|b| b.iter().copied()).collect();
    let disk = {
        let p = work.path().join("disk-probe");
        let chunk = vec![0x5Au8; 8 << 20];
        let t = Instant::now();
        let mut f = std::fs::File::create(&p).unwrap();
        let total = (raw.len() as u64).max(256 << 20);
        let mut w = 0u64;
        while w < total {
            f.write_all(&chunk).unwrap();
            w += chunk.len() as u64;
        }
        f.sync_all().unwrap();
        let s = mbps(w, t.elapsed().as_secs_f64());
        std::fs::remove_file(&p).unwrap();
        s
    };
    let level = BackupSettings::default().compression_level;
    let t = Instant::now();
    let z = zstd::bulk::compress(&raw, level).unwrap();
    let zstd_speed = mbps(raw.len() as u64, t.elapsed().as_secs_f64());
    println!(
        "machine: disk write + fsync {disk:.0} MB/s; zstd level {level} {zstd_speed:.0} MB/s on the state's {:.1} MB (to {:.1} MB)",
        raw.len() as f64 / 1_048_576.0,
        z.len() as f64 / 1_048_576.0
    );
    drop((image, raw, z));
    let ceiling = disk.min(zstd_speed);

    let run = |label: &str, target: Arc<Target>| {
        for compress in [false, true] {
            let settings = BackupSettings { compress, verify_after: false, ..BackupSettings::default() };
            let m = Manager::new(target.clone(), settings);
            let stages = parking_lot::Mutex::new(Vec::<(String, Instant)>::new());
            let note = |stage: &str, _: u64, _: u64| {
                let mut g = stages.lock();
                if g.last().is_none_or(|(s, _)| s != stage) {
                    g.push((stage.to_string(), Instant::now()));
                }
            };
            let t = Instant::now();
            let man = m.create(&db, Kind::Full, &note).unwrap();
            let secs = t.elapsed().as_secs_f64();
            let g = stages.lock();
            let phases: Vec<String> = g
                .iter()
                .enumerate()
                .map(|(i, (s, at))| {
                    let end = g.get(i + 1).map_or_else(Instant::now, |n| n.1);
                    format!("{s} {:.0} ms", end.duration_since(*at).as_secs_f64() * 1e3)
                })
                .collect();
            drop(g);
            println!("  phases: {}", phases.join(", "));
            let speed = mbps(man.raw_bytes, secs);
            let t = Instant::now();
            let r = ecsdb_backup::verify::verify_backup(&m, &man.id, false, &quiet);
            assert!(r.ok, "{r:?}");
            let verify_s = t.elapsed().as_secs_f64();
            let out = work.path().join(format!("restore-{label}-{compress}"));
            let t = Instant::now();
            let req =
                Request { backup: Some(man.id.clone()), point: Point::Latest, data_dir: out.clone(), force: false };
            let o = ecsdb_backup::restore::restore(&target, &req, &quiet).unwrap();
            let restore_s = t.elapsed().as_secs_f64();
            assert_eq!(o.entities, n as u64);
            println!(
                "{label:<6} {}: backup {secs:.2} s ({speed:.0} MB/s of state, {:.0}% of min(disk, zstd) = {ceiling:.0} MB/s; stored {:.1} MB of {:.1} MB), verify {verify_s:.2} s, restore {restore_s:.2} s",
                if compress { "zstd " } else { "fast " },
                100.0 * speed / ceiling,
                man.stored_bytes as f64 / 1_048_576.0,
                man.raw_bytes as f64 / 1_048_576.0,
            );
            std::fs::remove_dir_all(&out).unwrap();
            m.delete(&man.id, true).unwrap();
        }
    };
    let local =
        Arc::new(Target::open(work.path().join("target").to_str().unwrap(), &StorageSettings::default()).unwrap());
    run("local", local);
    match support::s3("bench") {
        Some(s3) => {
            let t = Arc::new(Target::open("s3://bench/db", &support::s3_settings(&s3)).unwrap());
            run("s3", t);
        }
        None => println!("s3: skipped (moto_server not installed)"),
    }
    println!("seed 002 floor for 1M entities: 50 s raw, 150 s compressed");
}
