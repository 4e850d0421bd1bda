//! Queries over the example schema: filters, projection, ordering, limits,
//! relation traversal and the graph operations.
#![allow(clippy::unwrap_used)]

use ecsdb::{Database, Direction, EntityId, Query};
use serde_json::json;

fn world() -> (Database, Vec<EntityId>) {
    let db = Database::example().unwrap();
    let (ids, _) = db
        .write(|t| {
            let mut ids = Vec::new();
            for i in 0..10u32 {
                let e = t.create_entity_json(&json!({
                    "entities": {"entity_type": i % 2},
                    "player": {"name": format!("p{i}"), "level": i, "experience": u64::MAX - u64::from(i)},
                    "health": {"hp": 10 * i, "max_hp": 100},
                }))?;
                ids.push(e);
            }
            for w in ids.windows(2) {
                t.link("follows", w[0], w[1], Some(&json!({"since_tick": 7})))?;
            }
            Ok(ids)
        })
        .unwrap();
    (db, ids)
}

fn q(v: serde_json::Value) -> Query {
    serde_json::from_value(v).unwrap()
}

#[test]
fn filters_order_limit_projection() {
    let (db, _) = world();
    let rows = db
        .query(&q(json!({
            "with": ["player"],
            "filters": [{"field": "health.hp", "op": "lt", "value": 50},
                        {"field": "entities.entity_type", "op": "eq", "value": 0}],
            "select": ["player.name", "health.hp"],
            "order_by": {"field": "player.level", "desc": true},
            "limit": 2
        })))
        .unwrap();
    let r = db.read();
    let out = r.rows_json(&rows);
    assert_eq!(out.as_array().unwrap().len(), 2);
    assert_eq!(out[0]["player"]["name"], "p4");
    assert_eq!(out[0]["health"]["hp"], 40);
    assert_eq!(out[1]["player"]["name"], "p2");
    assert!(out[0]["player"].get("level").is_none());
}

#[test]
fn between_in_offset_and_big_integers() {
    let (db, _) = world();
    let rows = db
        .query(&q(json!({
            "with": ["player"],
            "filters": [{"field": "player.level", "op": "between", "value": [3, 6]},
                        {"field": "player.level", "op": "in", "value": [1, 4, 5, 6]}],
            "order_by": {"field": "player.level"},
            "offset": 1
        })))
        .unwrap();
    let r = db.read();
    let out = r.rows_json(&rows);
    let levels: Vec<_> = out.as_array().unwrap().iter().map(|x| x["player"]["level"].as_u64().unwrap()).collect();
    assert_eq!(levels, [5, 6]);
    // u64 beyond 2^53 comes back as an exact decimal string.
    assert_eq!(out[0]["player"]["experience"], (u64::MAX - 5).to_string());
}

#[test]
fn related_traversal() {
    let (db, ids) = world();
    let rows = db
        .query(&q(json!({
            "with": ["player"],
            "select": ["player.level"],
            "related": {"relation": "follows", "entity": ids[2].0, "direction": "out", "depth": 3},
            "order_by": {"field": "player.level"}
        })))
        .unwrap();
    let got: Vec<_> = rows.iter().map(|r| r.id).collect();
    assert_eq!(got, &ids[3..6]);
    let r = db.read();
    let rel = r.schema().relation_id("follows");
    assert_eq!(r.relations().neighbors(ids[5], rel, Direction::In), vec![ids[4]]);
    assert_eq!(r.relations().shortest_path(ids[0], ids[9], rel, Direction::Out, 20).unwrap().len(), 10);
    assert_eq!(r.relations().shortest_path(ids[9], ids[0], rel, Direction::Out, 20), None);
}

#[test]
fn bad_queries_are_named() {
    let (db, _) = world();
    for (v, needle) in [
        (json!({"with": ["nope"]}), "unknown table `nope`"),
        (json!({"filters": [{"field": "player", "op": "eq", "value": 1}]}), "must be written as `table.field`"),
        (json!({"filters": [{"field": "player.lvl", "op": "eq", "value": 1}]}), "unknown field `lvl`"),
        (json!({"filters": [{"field": "player.level", "op": "between", "value": 1}]}), "between takes [low, high]"),
        (json!({"filters": [{"field": "player.level", "op": "eq", "value": "x"}]}), "filter on `player.level`"),
        (
            json!({"filters": [{"field": "transform.position", "op": "lt", "value": [1, 2, 3]}]}),
            "supports only eq, ne and in",
        ),
        (json!({"related": {"entity": 1, "depth": 0}}), "depth must be between 1 and 64"),
    ] {
        let err = db.query(&q(v)).unwrap_err().to_string();
        assert!(err.contains(needle), "{err:?} should contain {needle:?}");
    }
    assert!(serde_json::from_value::<Query>(json!({"wiht": []})).is_err());
}

#[test]
fn csv_export_has_header_and_rows() {
    let (db, ids) = world();
    let mut out = Vec::new();
    db.export_csv("player", &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap(), "entity_id,name,level,experience");
    assert_eq!(lines.next().unwrap(), format!("{},p0,0,{}", ids[0].0, u64::MAX));
    assert_eq!(text.lines().count(), 11);
}

/// Results by name, edges with their properties in one call, one id format.
#[test]
fn rows_by_name_edges_in_one_call_and_one_id_format() {
    use ecsdb::{Direction, Query, Value};
    let db = ecsdb::Database::example().unwrap();
    let ((a, b), _) = db
        .write(|t| {
            let a = t.create_entity_json(&serde_json::json!({"player": {"name": "ana", "level": 3}}))?;
            let b = t.create_entity_json(&serde_json::json!({"player": {"name": "bo", "level": 5}}))?;
            t.link("follows", a, b, Some(&serde_json::json!({"since_tick": 7})))?;
            Ok((a, b))
        })
        .unwrap();
    let q: Query = serde_json::from_value(serde_json::json!({
        "with": ["player"], "select": ["player.name", "player.level"], "order_by": {"field": "player.level"}
    }))
    .unwrap();
    let rows = db.query(&q).unwrap();
    let schema = db.schema();
    let named: Vec<(&str, &str, &Value)> = rows[0].named(&schema).collect();
    assert_eq!(named[0].0, "player");
    assert_eq!(named[0].1, "name");
    assert_eq!(rows[1].get(&schema, "player", "level"), Some(&Value::U64(5)));
    assert_eq!(rows[1].get(&schema, "player", "nope"), None);
    let r = db.read();
    let out = r.edges("follows", a, Direction::Out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].from, out[0].to), (a, b));
    assert_eq!(out[0].props["since_tick"], 7);
    assert_eq!(r.edges("follows", b, Direction::In).unwrap(), out);
    assert!(r.edges("follows", a, Direction::In).unwrap().is_empty());
    assert!(r.edges("nope", a, Direction::Out).is_err());
    // Debug, Display and JSON agree.
    assert_eq!(format!("{a:?}"), a.to_string());
    assert_eq!(ecsdb::core::world::id_json(a).to_string(), a.to_string());
}
