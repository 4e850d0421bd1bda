//! Indexed queries beside a scan and beside SQLite with the same index.
//!
//! `cargo bench -p ecsdb-bench --bench index`   (ECSDB_BENCH_QUICK=1 for 100,000 rows)
//!
//! 1,000,000 entities with `player.level` (u32, `indexed = true`, 1,000
//! distinct values) and `player.score` (u32, not indexed, same values).
//! Point lookup (`level eq v`: ~1,000 rows), narrow range (`level between
//! v and v+2`), and the same on the unindexed field (a scan). SQLite
//! (rusqlite, bundled, in memory) answers `SELECT id FROM player WHERE level
//! = ?` with an index on `level`. Both return the matching ids: ecsdb
//! through `World::query_within` with an empty selection (planning, the
//! index lookup, the other conditions), SQLite through a prepared statement;
//! medians over 50 lookups.
#![allow(clippy::unwrap_used, missing_docs)]
#![allow(clippy::doc_markdown, clippy::cast_possible_truncation, clippy::many_single_char_names)]

use std::time::Instant;

use ecsdb::{Database, Query, QueryBudget};
use ecsdb_bench::{fmt_duration, median};

const SCHEMA: &str = r#"
[tables.player]
[[tables.player.fields]]
name = "level"
type = "u32"
indexed = true
[[tables.player.fields]]
name = "score"
type = "u32"
"#;

fn main() {
    let n: u32 = if std::env::var("ECSDB_BENCH_QUICK").is_ok() { 100_000 } else { 1_000_000 };
    let value = |i: u32| i.wrapping_mul(2_654_435_761) % 1000;
    let db = Database::builder().schema_toml(SCHEMA).unwrap().build().unwrap();
    let t0 = Instant::now();
    db.write(|t| {
        let mut b = t.batch(&["player"])?;
        for i in 0..n {
            b.push_field(0, &value(i).to_le_bytes());
            b.push_field(1, &value(i).to_le_bytes());
            b.end_row()?;
        }
        t.spawn_columns(b)
    })
    .unwrap();
    println!("{n} rows; ecsdb load with the index: {:.2} s", t0.elapsed().as_secs_f64());
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    conn.execute_batch("CREATE TABLE player(id INTEGER PRIMARY KEY, level INTEGER, score INTEGER); BEGIN;").unwrap();
    {
        let mut ins = conn.prepare("INSERT INTO player VALUES (?1, ?2, ?3)").unwrap();
        for i in 0..n {
            ins.execute((i, value(i), value(i))).unwrap();
        }
    }
    conn.execute_batch("COMMIT; CREATE INDEX player_level ON player(level);").unwrap();

    let view = db.read();
    let budget = QueryBudget { max_result_bytes: usize::MAX, ..QueryBudget::default() };
    let run = |field: &str, op: &str, v: serde_json::Value| {
        let q: Query = serde_json::from_value(serde_json::json!({
            "with": ["player"], "filters": [{"field": field, "op": op, "value": v}], "select": [], "limit": 100_000
        }))
        .unwrap();
        let t = Instant::now();
        let rows = view.query_within(&q, &budget).unwrap();
        (t.elapsed(), rows.len())
    };
    let sqlite = |sql: &str, a: u32, b: u32| {
        let mut st = conn.prepare_cached(sql).unwrap();
        let t = Instant::now();
        let ids: Vec<i64> = st.query_map((a, b), |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        (t.elapsed(), ids.len())
    };
    let mut table = Vec::new();
    for (label, field, between) in [
        ("level eq (indexed)", "player.level", false),
        ("level between v, v+2 (indexed)", "player.level", true),
        ("score eq (no index: scan)", "player.score", false),
    ] {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for k in 0..50u32 {
            let v = (k * 37) % 1000;
            let (d, a) = if between {
                run(field, "between", serde_json::json!([v, v + 2]))
            } else {
                run(field, "eq", serde_json::json!(v))
            };
            ours.push(d);
            let col = if field.ends_with("level") { "level" } else { "score" };
            let (d2, b) = if between {
                sqlite(&format!("SELECT id FROM player WHERE {col} BETWEEN ?1 AND ?2"), v, v + 2)
            } else {
                sqlite(&format!("SELECT id FROM player WHERE {col} = ?1 AND ?2 >= 0"), v, 0)
            };
            theirs.push(d2);
            assert_eq!(a, b, "{label}: ecsdb and SQLite disagree for {v}");
        }
        table.push((label, median(ours), median(theirs)));
    }
    println!("\n{:<34} {:>12} {:>12} {:>13}", "query", "ecsdb", "sqlite", "ecsdb/sqlite");
    for (label, a, b) in table {
        println!(
            "{label:<34} {:>12} {:>12} {:>12.2}x",
            fmt_duration(a),
            fmt_duration(b),
            a.as_secs_f64() / b.as_secs_f64()
        );
    }
}
