//! Aggregate queries and `explain`: groups and their counts, sums, averages
//! and extremes equal a brute-force computation over the same rows.
#![allow(clippy::unwrap_used, clippy::cast_precision_loss)]

use std::collections::BTreeMap;

use ecsdb::{Database, Query};
use proptest::prelude::*;
use serde_json::json;

fn q(v: serde_json::Value) -> Query {
    serde_json::from_value(v).unwrap()
}

fn populate(db: &Database, players: &[(u32, u64, u32)]) {
    db.write(|t| {
        for &(level, xp, hp) in players {
            t.create_entity_json(&json!({
                "player": {"name": format!("p{level}"), "level": level, "experience": xp},
                "health": {"hp": hp, "max_hp": 100},
            }))?;
        }
        Ok(())
    })
    .unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn groups_match_brute_force(
        players in proptest::collection::vec((0u32..5, 0u64..1000, 0u32..200), 0..80),
        min_hp in 0u32..200,
    ) {
        let db = Database::example().unwrap();
        populate(&db, &players);
        let got = db.query_json(&q(json!({
            "with": ["player"],
            "filters": [{"field": "health.hp", "op": "ge", "value": min_hp}],
            "group_by": ["player.level"],
            "aggregates": [{"op": "count"}, {"op": "sum", "field": "player.experience"},
                           {"op": "avg", "field": "health.hp"}, {"op": "min", "field": "health.hp"},
                           {"op": "max", "field": "player.experience"}],
        }))).unwrap();
        let mut expect: BTreeMap<u32, (u64, u64, u64, u32, u64)> = BTreeMap::new();
        for &(level, xp, hp) in players.iter().filter(|p| p.2 >= min_hp) {
            let e = expect.entry(level).or_insert((0, 0, 0, u32::MAX, 0));
            e.0 += 1;
            e.1 += xp;
            e.2 += u64::from(hp);
            e.3 = e.3.min(hp);
            e.4 = e.4.max(xp);
        }
        let rows = got["rows"].as_array().unwrap();
        prop_assert_eq!(rows.len(), expect.len());
        for (row, (level, (n, xp, hp, min, max))) in rows.iter().zip(expect) {
            prop_assert_eq!(&row["player.level"], &json!(level));
            prop_assert_eq!(&row["count"], &json!(n));
            prop_assert_eq!(&row["sum(player.experience)"], &json!(xp));
            let avg = row["avg(health.hp)"].as_f64().unwrap();
            prop_assert!((avg - hp as f64 / n as f64).abs() < 1e-9);
            prop_assert_eq!(&row["min(health.hp)"], &json!(min));
            prop_assert_eq!(&row["max(player.experience)"], &json!(max));
        }
    }
}

#[test]
fn ordering_paging_totals_explain_and_errors() {
    let db = Database::example().unwrap();
    populate(&db, &[(1, 10, 5), (1, 20, 6), (2, 5, 7), (3, 1, 8), (3, 1, 9), (3, 1, 10)]);
    // Top groups by count.
    let r = db
        .query_json(&q(json!({"with": ["player"], "group_by": ["player.level"], "aggregates": [{"op": "count"}],
                              "order_by": {"field": "count", "desc": true}, "limit": 2})))
        .unwrap();
    assert_eq!(r["rows"], json!([{"player.level": 3, "count": 3}, {"player.level": 1, "count": 2}]));
    // No group_by: one group over everything that matches.
    let r = db
        .query_json(&q(
            json!({"with": ["player"], "aggregates": [{"op": "count"}, {"op": "avg", "field": "player.level"}]}),
        ))
        .unwrap();
    assert_eq!(r["rows"], json!([{"count": 6, "avg(player.level)": 13.0 / 6.0}]));
    // An empty match is no group.
    let r = db.query_json(&q(json!({"with": ["inventory"], "aggregates": [{"op": "count"}]}))).unwrap();
    assert_eq!(r["rows"], json!([]));
    // Explain says how, without running.
    let r = db
        .query_json(&q(
            json!({"with": ["player"], "filters": [{"field": "health.hp", "op": "lt", "value": 8}], "explain": true}),
        ))
        .unwrap();
    assert_eq!(r["plan"]["access"], "scan");
    assert_eq!(r["plan"]["indexes"], json!([]));
    assert_eq!(r["plan"]["rows_scanned"], 6);
    assert_eq!(r["plan"]["filters"][0]["field"], "health.hp");
    // Tables named only by group_by or aggregates are required, and the plan says so.
    let r = db.query_json(&q(json!({"group_by": ["health.hp"], "explain": true}))).unwrap();
    assert_eq!(r["plan"]["tables"], json!(["health"]));
    assert_eq!(r["plan"]["rows_scanned"], 6);
    // Mistakes are named.
    for (bad, needle) in [
        (json!({"group_by": ["player.name"], "aggregates": [{"op": "sum", "field": "player.name"}]}), "numeric"),
        (json!({"aggregates": [{"op": "count", "field": "player.level"}]}), "count takes no field"),
        (json!({"aggregates": [{"op": "avg"}]}), "needs a `field`"),
        (json!({"group_by": ["player.nope"]}), "nope"),
        (json!({"group_by": ["player.level"], "order_by": {"field": "health.hp"}}), "orders by a group field"),
        (json!({"group_by": ["player.level"], "select": ["player"]}), "select"),
        (json!({"aggregates": [{"op": "median", "field": "player.level"}]}), "median"),
        (json!({"group_by": ["player.level", "player.level"]}), "twice"),
        (json!({"aggregates": [{"op": "count"}, {"op": "count"}]}), "twice"),
        // Explain checks like the query it describes.
        (
            json!({"group_by": ["player.level"], "order_by": {"field": "nope"}, "explain": true}),
            "orders by a group field",
        ),
        (json!({"aggregates": [{"op": "count"}], "select": ["player.name"], "explain": true}), "select"),
        (json!({"with": ["player"], "limit": 100_001, "explain": true}), "over the maximum"),
    ] {
        let e = serde_json::from_value::<Query>(bad.clone())
            .map_err(|e| e.to_string())
            .and_then(|q| db.query_json(&q).map_err(|e| e.to_string()))
            .unwrap_err();
        assert!(e.contains(needle), "{bad}: {e}");
    }
}
