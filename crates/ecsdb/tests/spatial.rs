//! Spatial indexes and clauses: `near`, `box` and `nearest` give the same
//! rows with the grid as by measuring every entity, through every path that
//! moves an entity (in-place writes, field sets, removal, rollback), across
//! a restart, and explain names the index.
#![allow(clippy::unwrap_used)]

use ecsdb::{Database, Query};
use proptest::prelude::*;
use serde_json::json;

const SCHEMA: &str = r#"
[tables.body]
[[tables.body.fields]]
name = "pos"
type = "[f32; 3]"
index = "spatial"
cell_size = 4.0
[[tables.body.fields]]
name = "team"
type = "u32"
indexed = true

[tables.marker]
[[tables.marker.fields]]
name = "at"
type = "[f64; 2]"
indexed = true
"#;

fn plain_schema() -> String {
    SCHEMA.replace("index = \"spatial\"\ncell_size = 4.0\n", "").replace("indexed = true\n", "")
}

fn q(v: serde_json::Value) -> Query {
    serde_json::from_value(v).unwrap()
}

fn ordered_ids(db: &Database, query: &Query) -> Vec<u64> {
    let rows = db.query_json(query).unwrap();
    rows["rows"].as_array().unwrap().iter().map(|r| r["id"].as_u64().unwrap()).collect()
}

fn ids(db: &Database, query: &Query) -> Vec<u64> {
    let mut v = ordered_ids(db, query);
    v.sort_unstable();
    v
}

fn coord(x: i8) -> f32 {
    f32::from(x) * 1.5
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn spatial_clauses_agree_with_and_without_the_grid(
        bodies in proptest::collection::vec((-20i8..20, -20i8..20, -3i8..3, 0u32..3), 0..50),
        nudges in proptest::collection::vec((0usize..50, -20i8..20), 0..10),
        remove in proptest::collection::vec(0usize..50, 0..5),
        rolled_back in any::<bool>(),
        center in (-25i8..25, -25i8..25, -3i8..3),
        radius in 0u8..30,
        k in 1usize..8,
        team in proptest::option::of(0u32..3),
        nan in any::<bool>(),
    ) {
        let indexed = Database::builder().schema_toml(SCHEMA).unwrap().build().unwrap();
        let plain = Database::builder().schema_toml(&plain_schema()).unwrap().build().unwrap();
        for db in [&indexed, &plain] {
            let schema = db.schema().clone();
            let pos = schema.field_ref("body", "pos").unwrap();
            let (made, _) = db.write(|t| {
                let mut made = Vec::new();
                for &(x, y, z, team) in &bodies {
                    made.push(t.create_entity_json(&json!({"body": {
                        "pos": [coord(x), coord(y), coord(z)], "team": team,
                    }}))?);
                }
                if nan && !made.is_empty() {
                    t.set_json(made[0], "body", &json!({"pos": ["NaN", 0.0, 0.0]}))?;
                }
                Ok(made)
            }).unwrap();
            // In-place column writes move everyone; field sets and removals
            // move or drop some.
            db.write(|t| {
                t.for_each_chunk_mut(&[pos.table], |c| {
                    for p in c.write::<[f32; 3]>(pos)? { p[0] += 0.75; }
                    Ok(())
                })?;
                for &(i, x) in &nudges {
                    if let Some(&id) = made.get(i) {
                        t.set_json(id, "body", &json!({"pos": [coord(x), 0.0, 0.0]}))?;
                    }
                }
                for &i in &remove {
                    if let Some(&id) = made.get(i) && t.has(id, pos.table) {
                        t.remove(id, "body")?;
                    }
                }
                Ok(())
            }).unwrap();
            if rolled_back {
                // A transaction that moves everything and fails leaves no trace.
                let r: ecsdb::Result<()> = db.write(|t| {
                    t.for_each_chunk_mut(&[pos.table], |c| {
                        for p in c.write::<[f32; 3]>(pos)? { p[1] = 1000.0; }
                        Ok(())
                    })?;
                    Err::<(), _>(ecsdb::DbError::Config("rolled back on purpose".into()))
                }).map(|_| ());
                prop_assert!(r.is_err());
            }
        }
        let point = json!([coord(center.0), coord(center.1), coord(center.2)]);
        let filters = match team {
            Some(t) => json!([{"field": "body.team", "op": "eq", "value": t}]),
            None => json!([]),
        };
        let near = q(json!({"with": ["body"], "filters": filters,
            "near": {"field": "body.pos", "point": point, "radius": radius}}));
        prop_assert_eq!(ids(&indexed, &near), ids(&plain, &near));
        let r = f64::from(radius);
        let bx = q(json!({"with": ["body"], "filters": filters,
            "box": {"field": "body.pos", "min": [f64::from(coord(center.0)) - r, f64::from(coord(center.1)) - r, -3.0],
                    "max": [f64::from(coord(center.0)) + r, f64::from(coord(center.1)) + r, 3.0]}}));
        prop_assert_eq!(ids(&indexed, &bx), ids(&plain, &bx));
        // Nearest: the same rows in the same (distance, then id) order.
        let nearest = q(json!({"with": ["body"], "filters": filters,
            "nearest": {"field": "body.pos", "point": point, "k": k}}));
        prop_assert_eq!(ordered_ids(&indexed, &nearest), ordered_ids(&plain, &nearest));
        let count = q(json!({"with": ["body"], "near": {"field": "body.pos", "point": point, "radius": radius},
            "aggregates": [{"op": "count"}]}));
        prop_assert_eq!(indexed.query_json(&count).unwrap(), plain.query_json(&count).unwrap());
        prop_assert!(indexed.read().check_integrity().is_empty());
    }
}

#[test]
fn nearest_orders_by_distance_and_follows_an_entity() {
    let db = Database::builder().schema_toml(SCHEMA).unwrap().build().unwrap();
    let (ids, _) = db
        .write(|t| {
            let mut v = Vec::new();
            for x in [0.0f32, 10.0, 3.0, -2.0, 50.0] {
                v.push(t.create_entity_json(&json!({"body": {"pos": [x, 0.0, 0.0]}}))?);
            }
            Ok(v)
        })
        .unwrap();
    let got =
        ordered_ids(&db, &q(json!({"with": ["body"], "nearest": {"field": "body.pos", "point": [0, 0, 0], "k": 3}})));
    assert_eq!(got, vec![ids[0].0, ids[3].0, ids[2].0]);
    // From an entity: itself left out.
    let got =
        ordered_ids(&db, &q(json!({"with": ["body"], "nearest": {"field": "body.pos", "entity": ids[1].0, "k": 2}})));
    assert_eq!(got, vec![ids[2].0, ids[0].0]);
    // near an entity includes it (distance 0).
    let got = ids_of(&db, json!({"with": ["body"], "near": {"field": "body.pos", "entity": ids[2].0, "radius": 3.0}}));
    assert_eq!(got, vec![ids[0].0, ids[2].0]);
    // The Rust API gives the same, with distances.
    let r = db.read();
    let near = r.nearest("body.pos", &[0.0, 0.0, 0.0], 2).unwrap();
    assert_eq!(near, vec![(ids[0], 0.0), (ids[3], 2.0)]);
    assert_eq!(r.within("body.pos", &[0.0, 0.0, 0.0], 3.0).unwrap(), vec![ids[0], ids[2], ids[3]]);
    // 2-D positions, `indexed = true` makes them spatial.
    drop(r);
    db.write(|t| {
        t.create_entity_json(&json!({"marker": {"at": [1.0, 1.0]}}))?;
        t.create_entity_json(&json!({"marker": {"at": [5.0, 5.0]}}))
    })
    .unwrap();
    let plan = db
        .query_json(&q(json!({"with": ["marker"], "near": {"field": "marker.at", "point": [0, 0], "radius": 2},
            "explain": true})))
        .unwrap();
    assert_eq!(plan["plan"]["indexes"], json!(["marker.at"]), "{plan}");
    assert_eq!(plan["plan"]["rows_scanned"], 1);
}

fn ids_of(db: &Database, v: serde_json::Value) -> Vec<u64> {
    ids(db, &q(v))
}

#[test]
fn bad_spatial_clauses_are_refused_with_the_reason() {
    let db = Database::builder().schema_toml(SCHEMA).unwrap().build().unwrap();
    let (id, _) = db.write(|t| t.create_entity_json(&json!({"body": {"team": 1}}))).unwrap();
    let (bare, _) = db.write(|t| t.create_entity_json(&json!({"marker": {"at": [0.0, 0.0]}}))).unwrap();
    db.write(|t| t.set_json(id, "body", &json!({"pos": ["inf", 0.0, 0.0]}))).unwrap();
    let cases = [
        (json!({"near": {"field": "body.team", "point": [0, 0, 0], "radius": 1}}), "position field"),
        (json!({"near": {"field": "body.pos", "point": [0, 0], "radius": 1}}), "3 coordinates"),
        (json!({"near": {"field": "body.pos", "point": [0, 0, 0], "radius": -1}}), "radius"),
        (json!({"near": {"field": "body.pos", "point": [0, 0, 0], "entity": 1, "radius": 1}}), "either"),
        (json!({"near": {"field": "body.pos", "radius": 1}}), "either"),
        (json!({"near": {"field": "body.pos", "entity": id.0, "radius": 1}}), "not finite"),
        (json!({"near": {"field": "body.pos", "entity": bare.0, "radius": 1}}), "body"),
        (json!({"nearest": {"field": "body.pos", "point": [0, 0, 0], "k": 0}}), "nearest.k"),
        (
            json!({"nearest": {"field": "body.pos", "point": [0, 0, 0], "k": 1}, "order_by": {"field": "body.team"}}),
            "order_by",
        ),
        (
            json!({"nearest": {"field": "body.pos", "point": [0, 0, 0], "k": 1}, "aggregates": [{"op": "count"}]}),
            "groups",
        ),
        (json!({"box": {"field": "body.pos", "min": [0, 0, 0], "max": [1, 1]}}), "3 coordinates"),
        (json!({"near": {"field": "body.nope", "point": [0, 0, 0], "radius": 1}}), "nope"),
    ];
    for (body, want) in cases {
        let query: Query = serde_json::from_value(body.clone()).unwrap();
        let err = db.query_json(&query).unwrap_err().to_string();
        assert!(err.contains(want), "{body} → {err}");
    }
    // Unknown keys inside a clause are refused when parsing.
    assert!(
        serde_json::from_value::<Query>(
            json!({"near": {"field": "body.pos", "point": [0, 0, 0], "radius": 1, "r": 2}})
        )
        .is_err()
    );
}

#[test]
fn schema_refuses_spatial_indexes_on_other_types() {
    for (ty, extra, want) in [
        ("u32", "index = \"spatial\"", "spatial index needs a position"),
        ("[f32; 4]", "index = \"spatial\"", "spatial index needs a position"),
        ("[u32; 3]", "indexed = true", "indexed = true"),
        ("[f32; 3]", "index = \"btree\"", "positions take index = \"spatial\""),
        ("[f32; 3]", "index = \"spatial\"\ncell_size = 0", "cell_size"),
        ("u32", "indexed = true\ncell_size = 2.0", "cell_size applies only"),
    ] {
        let text = format!("[tables.t]\n[[tables.t.fields]]\nname = \"f\"\ntype = \"{ty}\"\n{extra}\n");
        let err = Database::builder().schema_toml(&text).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(want), "{ty} {extra} → {err}");
    }
}

#[test]
fn the_grid_is_rebuilt_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let open = || Database::builder().schema_toml(SCHEMA).unwrap().data_dir(dir.path()).build().unwrap();
    let db = open();
    db.write(|t| {
        for i in 0..40 {
            t.create_entity_json(&json!({"body": {"pos": [i as f32, 0.0, 0.0]}}))?;
        }
        Ok(())
    })
    .unwrap();
    db.checkpoint().unwrap();
    db.write(|t| {
        for i in 0..5 {
            t.create_entity_json(&json!({"body": {"pos": [i as f32, 100.0, 0.0]}}))?;
        }
        Ok(())
    })
    .unwrap();
    let near = q(json!({"with": ["body"], "near": {"field": "body.pos", "point": [2, 50, 0], "radius": 51}}));
    let before = ids(&db, &near);
    assert_eq!(before.len(), 18);
    db.close().unwrap();
    drop(db);
    let db = open();
    assert_eq!(ids(&db, &near), before);
    assert!(db.read().check_integrity().is_empty());
}

#[derive(ecsdb::Component, Debug, Clone, Copy, PartialEq)]
#[ecsdb(table = "body")]
struct Body {
    pos: [f32; 3],
    team: u32,
}

#[test]
fn typed_queries_take_spatial_clauses() {
    for schema in [SCHEMA.to_string(), plain_schema()] {
        let db = Database::builder().schema_toml(&schema).unwrap().build().unwrap();
        let (ids, _) = db
            .write(|t| {
                t.spawn_batch((0..20).map(|i| (Body { pos: [i as f32, 0.0, 0.0], team: i % 2 },)))?;
                Ok(t.query::<(&Body,)>().collect()?.into_iter().map(|(id, _)| id).collect::<Vec<_>>())
            })
            .unwrap();
        // A movement system over the bodies near the origin only.
        db.write(|t| {
            t.query::<(&mut Body,)>().near("body.pos", &[0.0, 0.0, 0.0], 2.5).for_each(|_, (b,)| b.pos[1] = 9.0)
        })
        .unwrap();
        let r = db.read();
        let moved: Vec<f32> = r.query::<(&Body,)>().iter().unwrap().map(|(_, (b,))| b.pos[1]).collect();
        assert_eq!(moved.iter().filter(|&&y| y.to_bits() == 9.0f32.to_bits()).count(), 3, "{moved:?}");
        // near and nearest combine (both must hold); errors surface at the run.
        let n = r
            .query::<(&Body,)>()
            .near("body.pos", &[10.0, 0.0, 0.0], 3.0)
            .nearest("body.pos", &[10.0, 0.0, 0.0], 2)
            .count()
            .unwrap();
        assert_eq!(n, 2);
        let got: Vec<_> =
            r.query::<(&Body,)>().nearest("body.pos", &[19.0, 0.0, 0.0], 1).iter().unwrap().map(|(id, _)| id).collect();
        assert_eq!(got, vec![ids[19]]);
        assert!(r.query::<(&Body,)>().near("body.team", &[0.0], 1.0).count().is_err());
    }
}

#[test]
fn huge_coordinates_measure_exactly_with_and_without_the_grid() {
    for schema in [SCHEMA.to_string(), plain_schema()] {
        let db = Database::builder().schema_toml(&schema).unwrap().build().unwrap();
        db.write(|t| {
            for p in [[0.0, 0.0], [5.0, -3.0], [-7.0, 2.0], [100.0, 100.0], [-100.0, 50.0]] {
                t.create_entity_json(&json!({"marker": {"at": p}}))?;
            }
            Ok(())
        })
        .unwrap();
        let count = |point: serde_json::Value, radius: f64| {
            ids_of(&db, json!({"with": ["marker"], "near": {"field": "marker.at", "point": point, "radius": radius}}))
                .len()
        };
        // Distances near 1.4e300: squaring them would overflow.
        assert_eq!(count(json!([1e300, 1e300]), 1e300), 0);
        assert_eq!(count(json!([-1e300, 0.0]), 1e300), 5);
        assert_eq!(count(json!([1e200, 1e200]), 1.2e200), 0);
        assert_eq!(count(json!([1e200, 1e200]), 1.5e200), 5);
        assert_eq!(count(json!([0.0, 0.0]), f64::MAX), 5);
        // Distances past f64's range still order: the farther point stays
        // farther.
        db.write(|t| t.create_entity_json(&json!({"marker": {"at": [1.7e308, 1.7e308]}}))).unwrap();
        let near = db
            .query_json(&q(
                json!({"with": ["marker"], "nearest": {"field": "marker.at", "point": [-1.7e308, -1.7e308], "k": 6}}),
            ))
            .unwrap();
        let last = near["rows"].as_array().unwrap().last().unwrap()["marker"]["at"].clone();
        assert_eq!(last, json!([1.7e308, 1.7e308]), "{near}");
        // (Both distances exceed f64: they read as infinite, yet order.)
        let n = db.read().nearest("marker.at", &[-1.7e308, -1.7e308], 6).unwrap();
        assert_eq!(n[5].0.0, last_id(&near), "{n:?}");
        db.write(|t| {
            let id = t.query_within(&q(json!({"with": ["marker"], "filters": [{"field": "marker.at", "op": "eq", "value": [1.7e308, 1.7e308]}]})), &ecsdb::QueryBudget::default())?[0].id;
            t.delete(id)
        })
        .unwrap();
        // Far away every point is (in f64) equally far: ties go by id, with
        // the grid as without it.
        let far = db
            .query_json(&q(
                json!({"with": ["marker"], "nearest": {"field": "marker.at", "point": [-1e308, 1e308], "k": 5}}),
            ))
            .unwrap();
        let order: Vec<u64> = far["rows"].as_array().unwrap().iter().map(|r| r["id"].as_u64().unwrap()).collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted, "{far}");
        assert_eq!(order.len(), 5);
    }
}

fn last_id(rows: &serde_json::Value) -> u64 {
    rows["rows"].as_array().unwrap().last().unwrap()["id"].as_u64().unwrap()
}
