//! Authentication with 100,000 live sessions: the full check of a request's
//! bearer token (signature, session lookup, user lookup) with the system
//! tables' unique indexes and, as before them, by scanning.
//!
//! `cargo bench -p ecsdb-bench --bench auth`   (ECSDB_BENCH_QUICK=1 for 10,000 sessions)
#![allow(clippy::unwrap_used, missing_docs)]
#![allow(clippy::doc_markdown, clippy::cast_possible_truncation, clippy::many_single_char_names)]

use std::sync::Arc;
use std::time::Instant;

use ecsdb::{Database, EXAMPLE_SCHEMA, Schema, Value};
use ecsdb_bench::{fmt_duration, median};
use ecsdb_server::auth::{Tokens, authenticate};
use ecsdb_server::system::{Role, SYSTEM_SCHEMA, insert_user, now_ms};

fn setup(system: &str, n: usize) -> (Database, Tokens, Vec<String>) {
    let schema = Schema::with_system(EXAMPLE_SCHEMA, system).unwrap();
    let db = Database::builder().schema(Arc::new(schema)).build().unwrap();
    let uid = insert_user(&db, "admin", "not-a-real-hash", Role::Admin).unwrap();
    let far = now_ms() + 86_400_000;
    db.write(|t| {
        for i in 0..n {
            let e = t.create_entity()?;
            t.insert(
                e,
                "_sessions",
                &[Value::Str(format!("{i:032x}")), Value::Str("admin".into()), Value::U64(far), Value::U64(0)],
            )?;
        }
        Ok(())
    })
    .unwrap();
    let tokens = Tokens::new(b"bench-secret-bench-secret-bench!", 3600);
    let step = (n / 1000).max(1);
    let issued = (0..n).step_by(step).map(|i| tokens.issue("admin", uid, &format!("{i:032x}")).unwrap().0).collect();
    (db, tokens, issued)
}

fn main() {
    let n = if std::env::var("ECSDB_BENCH_QUICK").is_ok() { 10_000 } else { 100_000 };
    let unindexed = SYSTEM_SCHEMA.replace("index = \"unique\"\n", "");
    let mut figures = Vec::new();
    for (name, system) in [("unique indexes", SYSTEM_SCHEMA), ("scan (no index)", unindexed.as_str())] {
        let (db, tokens, issued) = setup(system, n);
        let runs = if name.starts_with("scan") { 50 } else { issued.len() };
        // Tokens spread over the whole session table (a scan finds early
        // sessions sooner).
        let times: Vec<_> = issued
            .iter()
            .step_by(issued.len().div_ceil(runs).max(1))
            .map(|t| {
                let h = format!("Bearer {t}");
                let s = Instant::now();
                let p = authenticate(&db, &tokens, Some(&h)).unwrap();
                let d = s.elapsed();
                assert_eq!(p.name, "admin");
                d
            })
            .collect();
        let m = median(times);
        println!("{n} sessions, {name}: {} per authenticated request (median of {runs})", fmt_duration(m));
        figures.push(m);
    }
    println!("scan / index: {:.0}×", figures[1].as_secs_f64() / figures[0].as_secs_f64());
}
