//! Graph traversal beside SQLite: 2-hop neighbour counts and shortest paths.
//!
//! `cargo bench -p ecsdb-bench --bench graph`   (ECSDB_BENCH_QUICK=1 for a short run)
//!
//! 100,000 nodes and 2,400,000 directed edges (each node links to 24 others
//! chosen by a fixed pseudo-random sequence). ecsdb answers from its
//! in-memory adjacency (`Relations::k_hop_count`, `shortest_path_by`);
//! SQLite (rusqlite, bundled, in memory) answers the same questions with a
//! recursive CTE over an `edges(src, dst)` table indexed on `src`. Each
//! figure is the median over the same start nodes.
#![allow(clippy::unwrap_used, missing_docs)]
#![allow(clippy::doc_markdown, clippy::cast_possible_truncation, clippy::cast_precision_loss)]

use std::time::Instant;

use ecsdb::{Database, Direction, EntityId};
use ecsdb_bench::{fmt_duration, median};

const SCHEMA: &str = r#"
[tables.node]
[[tables.node.fields]]
name = "n"
type = "u32"
[relations.link]
"#;

fn quick() -> bool {
    std::env::var("ECSDB_BENCH_QUICK").is_ok()
}

fn edges(nodes: u32, degree: u32) -> Vec<(u32, u32)> {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut out = Vec::with_capacity((nodes * degree) as usize);
    for a in 0..nodes {
        for _ in 0..degree {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = (x % u64::from(nodes)) as u32;
            if b != a {
                out.push((a, b));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn main() {
    let (nodes, degree, starts) = if quick() { (10_000u32, 24u32, 10u32) } else { (100_000, 24, 30) };
    let es = edges(nodes, degree);
    println!("graph: {nodes} nodes, {} edges", es.len());

    // ecsdb
    let t0 = Instant::now();
    let db = Database::builder().schema_toml(SCHEMA).unwrap().build().unwrap();
    let ids: Vec<EntityId> = db
        .write(|t| {
            let mut b = t.batch(&["node"])?;
            for n in 0..nodes {
                b.push_field(0, &n.to_le_bytes());
                b.end_row()?;
            }
            t.spawn_columns(b)
        })
        .unwrap()
        .0;
    db.write(|t| {
        for &(a, b) in &es {
            t.link("link", ids[a as usize], ids[b as usize], None)?;
        }
        Ok(())
    })
    .unwrap();
    println!("ecsdb load: {:.2} s", t0.elapsed().as_secs_f64());

    // SQLite
    let t0 = Instant::now();
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    conn.execute_batch("CREATE TABLE edges(src INTEGER NOT NULL, dst INTEGER NOT NULL); BEGIN;").unwrap();
    {
        let mut ins = conn.prepare("INSERT INTO edges VALUES (?1, ?2)").unwrap();
        for &(a, b) in &es {
            ins.execute((a, b)).unwrap();
        }
    }
    conn.execute_batch("COMMIT; CREATE INDEX edges_src ON edges(src);").unwrap();
    println!("sqlite load: {:.2} s", t0.elapsed().as_secs_f64());

    let pick = |i: u32| (i.wrapping_mul(7919) % nodes) as usize;
    let view = db.read();
    let rels = view.relations();
    let allow = |_: u16| true;
    let mut rows = Vec::new();
    for hops in [1usize, 2, 3] {
        let (mut ours, mut theirs, mut counts) = (Vec::new(), Vec::new(), Vec::new());
        for s in 0..starts {
            let start = pick(s);
            let t = Instant::now();
            let n = rels.k_hop_count(ids[start], &allow, Direction::Out, hops);
            ours.push(t.elapsed());
            let t = Instant::now();
            let m: i64 = conn
                .query_row(
                    "WITH RECURSIVE r(n, d) AS (SELECT ?1, 0 UNION SELECT e.dst, r.d + 1 FROM edges e JOIN r ON e.src = r.n WHERE r.d < ?2) \
                     SELECT count(DISTINCT n) - 1 FROM r",
                    (start as i64, hops as i64),
                    |row| row.get(0),
                )
                .unwrap();
            theirs.push(t.elapsed());
            assert_eq!(n as i64, m, "ecsdb and SQLite disagree on the {hops}-hop count from {start}");
            counts.push(n);
        }
        println!("{hops}-hop counts from the first starts: {:?}", &counts[..3.min(counts.len())]);
        rows.push((format!("{hops}-hop neighbour count"), median(ours), median(theirs)));
    }
    let mut ours = Vec::new();
    for s in 0..starts {
        let (a, b) = (pick(s), pick(s + 1000));
        let t = Instant::now();
        let p = rels.shortest_path_by(ids[a], ids[b], &allow, Direction::Out, 8);
        ours.push(t.elapsed());
        assert!(p.is_some());
    }
    println!("\n{:<28} {:>12} {:>12} {:>10}", "query", "ecsdb", "sqlite", "sqlite/ecsdb");
    for (label, a, b) in &rows {
        println!(
            "{label:<28} {:>12} {:>12} {:>9.1}x",
            fmt_duration(*a),
            fmt_duration(*b),
            b.as_secs_f64() / a.as_secs_f64()
        );
    }
    println!("{:<28} {:>12} {:>12}", "shortest path (<= 8 hops)", fmt_duration(median(ours)), "-");
}
