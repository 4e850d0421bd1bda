//! Live subscriptions under load: a world of 10,000 moving entities
//! committing at 20 Hz, and N WebSocket clients each subscribed to a radius
//! around its own entity — beside the same run with naive full broadcast
//! (every client subscribed to every entity).
//!
//! `cargo bench -p ecsdb-bench --bench stream`
//! (`ECSDB_BENCH_QUICK=1` for a short run; `ECSDB_STREAM_CLIENTS=1000,10000`
//! to choose the client counts)
//!
//! The server runs in this process on its own runtime (threads `ecsdb-srv`,
//! 2 workers); the world is moved by one writer thread through the embedded
//! handle (as a game server would), one commit per tick; the clients are
//! one current-thread runtime (`bench-clients`) on the same 2 cores.
//! Reported per run: deliveries/s (delta messages received) against those
//! expected (clients × ticks/s), bytes per client per tick,
//! commit-to-delivery latency p50/p99 (commit acknowledged → message parsed
//! by the client), and CPU per role in % of one core.
#![allow(clippy::unwrap_used, missing_docs)]
#![allow(clippy::doc_markdown, clippy::many_single_char_names, clippy::similar_names)]

#[path = "support/api_key.rs"]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ecsdb_server::ServerConfig;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ENTITIES: usize = 10_000;
const TICK_HZ: u64 = 20;
/// World side: 10,000 entities at one per 100 square units.
const WORLD: f32 = 1000.0;
/// View radius: ~28 entities in view on average.
const RADIUS: f64 = 30.0;

const SCHEMA: &str = r#"
[database]
name = "stream_bench"
version = "1.0.0"

[tables.unit]
[[tables.unit.fields]]
name = "pos"
type = "[f32; 2]"
index = "spatial"
cell_size = 32.0
[[tables.unit.fields]]
name = "vel"
type = "[f32; 2]"
"#;

fn quick() -> bool {
    std::env::var("ECSDB_BENCH_QUICK").is_ok()
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Near,
    Broadcast,
}

/// CPU seconds of this process's threads whose name starts with `prefix`.
fn cpu_of(prefix: &str) -> f64 {
    let mut ticks = 0u64;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    for t in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        if !stat[open + 1..close].starts_with(prefix) {
            continue;
        }
        let rest: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // Fields 14 and 15 (utime, stime) are rest[11] and rest[12].
        ticks += rest.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        ticks += rest.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    ticks as f64 / 100.0
}

fn pct(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    f64::from(v[i]) / 1000.0
}

struct Stats {
    deliveries: AtomicU64,
    bytes: AtomicU64,
    latencies: Mutex<Vec<u32>>,
    measuring: AtomicBool,
}

#[allow(clippy::too_many_lines)]
fn run(clients: usize, mode: Mode, secs: u64) {
    let dir = tempfile::tempdir().unwrap();
    let schema_path = dir.path().join("schema.toml");
    std::fs::write(&schema_path, SCHEMA).unwrap();
    let mut c = ServerConfig::default();
    c.server.bind = "127.0.0.1:0".into();
    c.server.max_connections_per_ip = 100_000;
    c.rate_limit.max_requests = u32::MAX;
    c.rate_limit.max_unauthenticated = u32::MAX;
    c.logging.level = "error".into();
    c.db.database.data_dir = dir.path().join("data");
    c.db.database.schema_file = Some(schema_path);
    c.db.persistence.snapshot_interval_secs = 3600;
    c.db.replication.max_clients = 100_000;
    c.db.replication.delta_compression = "none".into();
    let srv = ecsdb_server::start(c, "bench-password").unwrap();
    let base = format!("http://{}", srv.addr);
    let key = support::api_key(&base, "bench-password", "bench", &["read"]);
    // The world.
    let db = srv.db.clone();
    let schema = db.schema();
    let pos = schema.field_ref("unit", "pos").unwrap();
    let vel = schema.field_ref("unit", "vel").unwrap();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 1_000_000) as f32 / 1_000_000.0
    };
    let ids: Vec<u64> = {
        let mut tx = db.transaction().unwrap();
        let mut ids = Vec::with_capacity(ENTITIES);
        for _ in 0..ENTITIES {
            let (x, y) = (rnd() * WORLD, rnd() * WORLD);
            let (vx, vy) = ((rnd() - 0.5) * 4.0, (rnd() - 0.5) * 4.0);
            let id = tx.create_entity_json(&json!({"unit": {"pos": [x, y], "vel": [vx, vy]}})).unwrap();
            ids.push(id.0);
        }
        tx.commit().unwrap();
        ids
    };
    // The writer: one commit per tick; commit times (wall clock, shared with
    // the client process) appended to a file by sequence.
    let commits_path = dir.path().join("commits.txt");
    let stop = Arc::new(AtomicBool::new(false));
    let ticks = Arc::new(AtomicU64::new(0));
    let tick_us = Arc::new(Mutex::new(Vec::<u32>::new()));
    let writer = {
        let (db, stop, ticks, tick_us) = (db.clone(), stop.clone(), ticks.clone(), tick_us.clone());
        let mut log = std::fs::File::create(&commits_path).unwrap();
        std::thread::Builder::new()
            .name("bench-writer".into())
            .spawn(move || {
                use std::io::Write as _;
                let period = Duration::from_millis(1000 / TICK_HZ);
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let mut tx = db.transaction().unwrap();
                    tx.for_each_chunk_mut(&[pos.table], |chunk| {
                        let (p, v) = chunk.write_read::<[f32; 2], [f32; 2]>(pos, vel)?;
                        for (p, v) in p.iter_mut().zip(v) {
                            for k in 0..2 {
                                p[k] += v[k];
                                if p[k] < 0.0 {
                                    p[k] += WORLD;
                                } else if p[k] >= WORLD {
                                    p[k] -= WORLD;
                                }
                            }
                        }
                        Ok(())
                    })
                    .unwrap();
                    let info = tx.commit().unwrap();
                    let _ = writeln!(log, "{} {}", info.seq, now_ns());
                    tick_us.lock().push(t0.elapsed().as_micros() as u32);
                    ticks.fetch_add(1, Ordering::Relaxed);
                    next += period;
                    if let Some(d) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    } else {
                        next = Instant::now();
                    }
                }
            })
            .unwrap()
    };
    // The clients: a process of their own (each side needs a descriptor per
    // connection; 10,000 of each do not fit one process's limit).
    let ids_path = dir.path().join("ids.txt");
    std::fs::write(&ids_path, ids.iter().map(u64::to_string).collect::<Vec<_>>().join("\n")).unwrap();
    let warmup = 2;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("ECSDB_STREAM_ROLE", "clients")
        .env("ECSDB_STREAM_ADDR", srv.addr.to_string())
        .env("ECSDB_STREAM_KEY", &key)
        .env("ECSDB_STREAM_N", clients.to_string())
        .env("ECSDB_STREAM_MODE", if mode == Mode::Near { "near" } else { "broadcast" })
        .env("ECSDB_STREAM_SECS", secs.to_string())
        .env("ECSDB_STREAM_COMMITS", &commits_path)
        .env("ECSDB_STREAM_IDS", &ids_path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The child says when its clients are connected, then measures `secs`.
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let connected: usize = line.trim().strip_prefix("connected ").and_then(|n| n.parse().ok()).unwrap_or(0);
    std::thread::sleep(Duration::from_secs(warmup));
    let (srv0, w0, c0, t0) =
        (cpu_of("ecsdb-srv"), cpu_of("bench-writer"), cpu_of_pid(child.id()), ticks.load(Ordering::Relaxed));
    let start = Instant::now();
    let _ = child.stdin.take();
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let el = start.elapsed().as_secs_f64();
    let cpu_srv = (cpu_of("ecsdb-srv") - srv0) / el * 100.0;
    let cpu_w = (cpu_of("bench-writer") - w0) / el * 100.0;
    let cpu_c = (cpu_of_pid(child.id()) - c0) / el * 100.0;
    let ticked = ticks.load(Ordering::Relaxed) - t0;
    let _ = child.wait();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    // "deliveries bytes measured_secs p50_ms p99_ms"
    let f: Vec<f64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let (deliveries, bytes, mel, p50, p99) = (f[0], f[1], f[2], f[3], f[4]);
    let mut tick = std::mem::take(&mut *tick_us.lock());
    let tick_rate = ticked as f64 / el;
    let expected = connected as f64 * tick_rate;
    println!(
        "{:>9} {:>6} clients ({connected} connected): {:>8.0} deliveries/s of {:>8.0} expected ({:>5.1}%), {:>7.0} B/client/tick, latency p50 {:>7.2} ms p99 {:>8.2} ms, ticks {:.1}/s (commit p50 {:.2} ms), CPU server {:.0}% writer {:.0}% clients {:.0}%",
        match mode {
            Mode::Near => "near",
            Mode::Broadcast => "broadcast",
        },
        clients,
        deliveries / mel,
        expected,
        deliveries / mel / expected.max(1.0) * 100.0,
        bytes / (connected.max(1) as f64) / (tick_rate * mel).max(1.0),
        p50,
        p99,
        tick_rate,
        pct(&mut tick, 0.5),
        cpu_srv,
        cpu_w,
        cpu_c,
    );
    srv.stop().unwrap();
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// CPU seconds of process `pid`.
fn cpu_of_pid(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let Some(close) = stat.rfind(')') else { return 0.0 };
    let rest: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let t = rest.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + rest.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    t as f64 / 100.0
}

/// The client process: connect N clients, print `connected N`, wait for the
/// parent to close stdin... (it reads nothing: it measures `secs` after a
/// warm-up equal to the parent's), print the figures.
fn clients_main() {
    let var = |k: &str| std::env::var(k).unwrap();
    let addr = var("ECSDB_STREAM_ADDR");
    let key = var("ECSDB_STREAM_KEY");
    let n: usize = var("ECSDB_STREAM_N").parse().unwrap();
    let mode = if var("ECSDB_STREAM_MODE") == "near" { Mode::Near } else { Mode::Broadcast };
    let secs: u64 = var("ECSDB_STREAM_SECS").parse().unwrap();
    let commits_path = var("ECSDB_STREAM_COMMITS");
    let ids: Vec<u64> =
        std::fs::read_to_string(var("ECSDB_STREAM_IDS")).unwrap().lines().filter_map(|l| l.parse().ok()).collect();
    let stats = Arc::new(Stats {
        deliveries: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        latencies: Mutex::new(Vec::new()),
        measuring: AtomicBool::new(false),
    });
    // Commit times, read from the writer's file as it grows.
    let commits: Arc<Mutex<HashMap<u64, u64>>> = Arc::new(Mutex::new(HashMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let tail = {
        let (commits, stop) = (commits.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = 0usize;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(text) = std::fs::read_to_string(&commits_path) {
                    let mut m = commits.lock();
                    for l in text[seen.min(text.len())..].lines() {
                        let mut it = l.split_whitespace();
                        if let (Some(Ok(seq)), Some(Ok(ns))) = (it.next().map(str::parse), it.next().map(str::parse)) {
                            m.insert(seq, ns);
                        }
                    }
                    seen = text.rfind('\n').map_or(seen, |i| i + 1);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let sem = Arc::new(tokio::sync::Semaphore::new(128));
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(n.max(1));
        let mut handles = Vec::new();
        for i in 0..n {
            let (sem, key, stats, commits, stop, ready, addr) = (
                sem.clone(),
                key.clone(),
                stats.clone(),
                commits.clone(),
                stop.clone(),
                ready_tx.clone(),
                addr.clone(),
            );
            let me = ids[i % ids.len()];
            handles.push(tokio::spawn(async move {
                let permit = sem.acquire_owned().await.unwrap();
                let mut req = format!("ws://{addr}/v1/stream?compression=none").into_client_request().unwrap();
                req.headers_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
                let Ok((mut ws, _)) = tokio_tungstenite::connect_async(req).await else { return };
                let sub = match mode {
                    Mode::Near => {
                        json!({"type": "subscribe", "id": "aoi", "query": {"with": ["unit"], "select": ["unit.pos"]},
                        "near": {"field": "unit.pos", "entity": me, "radius": RADIUS}})
                    }
                    Mode::Broadcast => {
                        json!({"type": "subscribe", "id": "all", "query": {"with": ["unit"], "select": ["unit.pos"]}})
                    }
                };
                if ws.send(Message::Text(sub.to_string().into())).await.is_err() {
                    return;
                }
                let _ = ws.next().await;
                drop(permit);
                let _ = ready.send(()).await;
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let msg = match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
                        Ok(Some(Ok(m))) => m,
                        Ok(_) => break,
                        Err(_) => continue,
                    };
                    let Message::Text(t) = msg else { continue };
                    if !stats.measuring.load(Ordering::Relaxed) {
                        continue;
                    }
                    let Some(at) = t.find("\"seq\":") else { continue };
                    let digits: String = t[at + 6..].chars().take_while(char::is_ascii_digit).collect();
                    let Ok(seq) = digits.parse::<u64>() else { continue };
                    let now = now_ns();
                    if let Some(c) = commits.lock().get(&seq).copied() {
                        lat.push((now.saturating_sub(c) / 1000) as u32);
                    }
                    stats.deliveries.fetch_add(1, Ordering::Relaxed);
                    stats.bytes.fetch_add(t.len() as u64, Ordering::Relaxed);
                }
                stats.latencies.lock().extend(lat);
            }));
        }
        drop(ready_tx);
        let mut connected = 0;
        let deadline = Instant::now() + Duration::from_mins(3);
        while connected < n && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(5), ready_rx.recv()).await {
                Ok(Some(())) => connected += 1,
                Ok(None) => break,
                Err(_) => {}
            }
        }
        println!("connected {connected}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let start = Instant::now();
        stats.measuring.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stats.measuring.store(false, Ordering::Relaxed);
        let el = start.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let _ = h.await;
        }
        let mut lat = std::mem::take(&mut *stats.latencies.lock());
        println!(
            "{} {} {el} {} {}",
            stats.deliveries.load(Ordering::Relaxed),
            stats.bytes.load(Ordering::Relaxed),
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99)
        );
    });
    let _ = tail.join();
}

fn main() {
    if std::env::var("ECSDB_STREAM_ROLE").as_deref() == Ok("clients") {
        clients_main();
        return;
    }
    let secs = if quick() { 3 } else { 10 };
    let counts: Vec<usize> = std::env::var("ECSDB_STREAM_CLIENTS").ok().map_or_else(
        || if quick() { vec![200] } else { vec![1000, 10_000] },
        |v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
    );
    println!(
        "stream: {ENTITIES} entities moving, {TICK_HZ} Hz commits, radius {RADIUS} in a {WORLD}x{WORLD} world; {secs} s per run"
    );
    for &n in &counts {
        run(n, Mode::Near, secs);
    }
    // Naive full broadcast, at the smallest count (it does not scale).
    if std::env::var("ECSDB_STREAM_BROADCAST").as_deref() != Ok("0") {
        run(counts[0].min(1000), Mode::Broadcast, secs);
    }
}
