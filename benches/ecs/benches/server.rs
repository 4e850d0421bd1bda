//! HTTP load against the server on loopback: single-entity writes, batched
//! transactions and reads, from several client threads.
//!
//! `cargo bench -p ecsdb-bench --bench server`   (ECSDB_BENCH_QUICK=1 for a short run)
//!
//! The server runs in this process on its own runtime; clients are blocking
//! HTTP/1.1 keep-alive connections, one per thread. Reported: requests/s,
//! p50/p99 latency, error rate. Sync mode (fsync before each acknowledgement).
#![allow(clippy::unwrap_used, missing_docs)]
// Benchmark harness: prose in docs names tools, and short names keep the workloads readable.
#![allow(clippy::doc_markdown, clippy::many_single_char_names, clippy::similar_names)]

#[path = "support/api_key.rs"]
mod support;

use std::time::{Duration, Instant};

use ecsdb_server::ServerConfig;
use serde_json::{Value as J, json};

const CLIENTS: usize = 4;

fn quick() -> bool {
    std::env::var("ECSDB_BENCH_QUICK").is_ok()
}

struct Result_ {
    name: &'static str,
    lat: Vec<Duration>,
    errors: usize,
    elapsed: Duration,
    ops_per_req: usize,
}

fn run(
    name: &'static str,
    base: &str,
    token: &str,
    per_client: usize,
    ops_per_req: usize,
    make: fn(usize, usize) -> (String, String, Option<J>),
) -> Result_ {
    let start = Instant::now();
    let results: Vec<(Vec<Duration>, usize)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..CLIENTS)
            .map(|c| {
                s.spawn(move || {
                    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
                    let mut lat = Vec::with_capacity(per_client);
                    let mut errors = 0;
                    for i in 0..per_client {
                        let (method, path, body) = make(c, i);
                        let url = format!("{base}{path}");
                        let t0 = Instant::now();
                        let r = if method == "GET" {
                            agent.get(&url).header("authorization", &format!("Bearer {token}")).call()
                        } else {
                            agent
                                .post(&url)
                                .header("authorization", &format!("Bearer {token}"))
                                .send_json(body.unwrap())
                        };
                        let ok = r.is_ok_and(|mut r| {
                            let _ = r.body_mut().read_to_string();
                            r.status().is_success()
                        });
                        lat.push(t0.elapsed());
                        if !ok {
                            errors += 1;
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = start.elapsed();
    let mut lat = Vec::new();
    let mut errors = 0;
    for (l, e) in results {
        lat.extend(l);
        errors += e;
    }
    lat.sort_unstable();
    Result_ { name, lat, errors, elapsed, ops_per_req }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = ServerConfig::default();
    c.server.bind = "127.0.0.1:0".into();
    c.rate_limit.max_requests = u32::MAX;
    c.logging.level = "warn".into();
    c.db.database.data_dir = dir.path().to_path_buf();
    c.db.persistence.snapshot_interval_secs = 3600;
    let srv = ecsdb_server::start(c, "bench-password").unwrap();
    let base = format!("http://{}", srv.addr);
    let token = support::api_key(&base, "bench-password", "bench", &["read", "write"]);
    let n = if quick() { 200 } else { 2000 };
    let runs = [
        run("single-entity writes (POST /v1/entities)", &base, &token, n, 1, |c, i| {
            (
                "POST".into(),
                "/v1/entities".into(),
                Some(json!({"components": {"entities": {}, "player": {"level": c * 100_000 + i}}})),
            )
        }),
        run("batched transactions (100 creates)", &base, &token, n / 10, 100, |_, _| {
            let ops: Vec<J> = (0..100)
                .map(|i| json!({"op": "create", "components": {"entities": {}, "health": {"hp": i}}}))
                .collect();
            ("POST".into(), "/v1/transactions".into(), Some(json!({"ops": ops})))
        }),
        run("reads (GET /v1/stats)", &base, &token, n * 2, 1, |_, _| ("GET".into(), "/v1/stats".into(), None)),
        run("queries (POST /v1/query, limit 10)", &base, &token, n, 1, |_, _| {
            (
                "POST".into(),
                "/v1/query".into(),
                Some(
                    json!({"with": ["player"], "filters": [{"field": "player.level", "op": "lt", "value": 50}], "limit": 10}),
                ),
            )
        }),
    ];
    println!("# ecsdb server load ({CLIENTS} client threads, loopback, sync commits)\n");
    println!("| workload | requests | req/s | ops/s | p50 | p99 | errors |");
    println!("|---|---|---|---|---|---|---|");
    for r in &runs {
        let rps = r.lat.len() as f64 / r.elapsed.as_secs_f64();
        let p = |q: f64| r.lat[((r.lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} ms | {:.2} ms | {:.2}% |",
            r.name,
            r.lat.len(),
            rps,
            rps * r.ops_per_req as f64,
            p(0.5),
            p(0.99),
            100.0 * r.errors as f64 / r.lat.len() as f64
        );
    }
    srv.stop().unwrap();
}
