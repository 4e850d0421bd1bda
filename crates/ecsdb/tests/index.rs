//! Secondary indexes: every query gives the same rows with and without
//! them, they survive reopen (rebuilt from the data), and explain names the
//! index a plan uses.
#![allow(clippy::unwrap_used)]

use ecsdb::{Database, Query};
use proptest::prelude::*;
use serde_json::json;

const SCHEMA: &str = r#"
[enums.class]
variants = ["warrior", "mage", "rogue"]

[tables.unit]
[[tables.unit.fields]]
name = "level"
type = "u32"
indexed = true
[[tables.unit.fields]]
name = "score"
type = "i64"
indexed = true
[[tables.unit.fields]]
name = "speed"
type = "f32"
indexed = true
[[tables.unit.fields]]
name = "class"
type = "class"
indexed = true
[[tables.unit.fields]]
name = "tag"
type = "[u8; 8]"
indexed = true
[[tables.unit.fields]]
name = "free"
type = "u32"
"#;

fn plain_schema() -> String {
    SCHEMA.replace("indexed = true\n", "")
}

fn q(v: serde_json::Value) -> Query {
    serde_json::from_value(v).unwrap()
}

fn ids(db: &Database, query: &Query) -> Vec<u64> {
    let mut v = ordered_ids(db, query);
    v.sort_unstable();
    v
}

fn ordered_ids(db: &Database, query: &Query) -> Vec<u64> {
    let rows = db.query_json(query).unwrap();
    rows["rows"].as_array().unwrap().iter().map(|r| r["id"].as_u64().unwrap()).collect()
}

fn arb_filter() -> impl Strategy<Value = serde_json::Value> {
    let field =
        prop::sample::select(vec!["unit.level", "unit.score", "unit.speed", "unit.class", "unit.tag", "unit.free"]);
    let op = prop::sample::select(vec!["eq", "ne", "lt", "le", "gt", "ge", "between", "in"]);
    (field, op, 0i64..6, 0i64..6).prop_map(|(f, op, a, b)| {
        let val = |x: i64| match f {
            "unit.class" => json!(["warrior", "mage", "rogue"][(x % 3) as usize]),
            "unit.tag" => json!(format!("t{}", x % 4)),
            "unit.speed" => json!(x as f64 / 2.0),
            "unit.score" => json!(x - 3),
            _ => json!(x),
        };
        let value = match op {
            "between" => json!([val(a.min(b)), val(a.max(b))]),
            "in" => json!([val(a), val(b)]),
            _ => val(a),
        };
        json!({"field": f, "op": op, "value": value})
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn queries_agree_with_and_without_indexes(
        units in proptest::collection::vec((0u32..6, -3i64..3, 0u8..6, 0u8..3, 0u8..4), 0..40),
        filters in proptest::collection::vec(arb_filter(), 1..3),
        bump in any::<bool>(),
        order in any::<bool>(),
        desc in any::<bool>(),
        page in proptest::option::of((0usize..10, 1usize..10)),
        order_field in prop::sample::select(vec!["unit.level", "unit.tag", "unit.speed", "unit.free"]),
    ) {
        let indexed = Database::builder().schema_toml(SCHEMA).unwrap().build().unwrap();
        let plain = Database::builder().schema_toml(&plain_schema()).unwrap().build().unwrap();
        for db in [&indexed, &plain] {
            db.write(|t| {
                for &(level, score, speed, class, tag) in &units {
                    let class = ["warrior", "mage", "rogue"][class as usize];
                    t.create_entity_json(&json!({"unit": {
                        "level": level, "score": score, "speed": f32::from(speed) / 2.0,
                        "class": class, "tag": format!("t{tag}"), "free": level,
                    }}))?;
                }
                Ok(())
            }).unwrap();
            if bump {
                // Changes through every path that maintains indexes: in-place
                // writes, field sets, removal and re-adding of the component.
                let schema = db.schema().clone();
                let level = schema.field_ref("unit", "level").unwrap();
                db.write(|t| {
                    t.for_each_chunk_mut(&[level.table], |c| {
                        for v in c.write::<u32>(level)? { *v = (*v + 1) % 6; }
                        Ok(())
                    })?;
                    let first = t.query_within(&q(json!({"with": ["unit"], "limit": 3})), &ecsdb::QueryBudget::default())?;
                    for r in first {
                        t.set_json(r.id, "unit", &json!({"score": 2, "class": "rogue"}))?;
                    }
                    Ok(())
                }).unwrap();
            }
        }
        let mut body = json!({"with": ["unit"], "filters": filters});
        if order {
            // Ordered results (served from the order field's index when it
            // has one) come in exactly the same order, page by page.
            body["order_by"] = json!({"field": order_field, "desc": desc});
            if let Some((offset, limit)) = page {
                body["offset"] = json!(offset);
                body["limit"] = json!(limit);
            }
            let query = q(body.clone());
            prop_assert_eq!(ordered_ids(&indexed, &query), ordered_ids(&plain, &query));
            body.as_object_mut().unwrap().remove("offset");
            body.as_object_mut().unwrap().remove("limit");
        }
        let query = q(body);
        prop_assert_eq!(ids(&indexed, &query), ids(&plain, &query));
        prop_assert!(indexed.read().check_integrity().is_empty());
        let mut agg = q(json!({"with": ["unit"], "filters": query.filters.iter().map(|f| json!({"field": f.field, "op": f.op_name(), "value": f.value})).collect::<Vec<_>>(), "group_by": ["unit.class"], "aggregates": [{"op": "count"}]}));
        agg.order_by = None;
        prop_assert_eq!(indexed.query_json(&agg).unwrap(), plain.query_json(&agg).unwrap());
    }
}

#[test]
fn explain_names_the_index_and_indexes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let open = || Database::builder().schema_toml(SCHEMA).unwrap().data_dir(dir.path()).build().unwrap();
    let db = open();
    db.write(|t| {
        for i in 0..50u32 {
            t.create_entity_json(&json!({"unit": {"level": i % 10, "tag": format!("t{}", i % 3)}}))?;
        }
        Ok(())
    })
    .unwrap();
    db.checkpoint().unwrap();
    db.write(|t| {
        for i in 0..10u32 {
            t.create_entity_json(&json!({"unit": {"level": 100 + i}}))?;
        }
        Ok(())
    })
    .unwrap();
    let eq =
        q(json!({"with": ["unit"], "filters": [{"field": "unit.level", "op": "ge", "value": 100}], "explain": true}));
    let plan = db.query_json(&eq).unwrap();
    assert_eq!(plan["plan"]["access"], "index", "{plan}");
    assert_eq!(plan["plan"]["indexes"], json!(["unit.level"]));
    assert_eq!(plan["plan"]["rows_scanned"], 10);
    let free =
        q(json!({"with": ["unit"], "filters": [{"field": "unit.free", "op": "eq", "value": 1}], "explain": true}));
    assert_eq!(db.query_json(&free).unwrap()["plan"]["access"], "scan");
    let ordered =
        q(json!({"with": ["unit"], "order_by": {"field": "unit.level", "desc": true}, "limit": 3, "explain": true}));
    assert_eq!(db.query_json(&ordered).unwrap()["plan"]["order_by"]["access"], "index");
    let mut top_q = ordered.clone();
    top_q.explain = false;
    let top: Vec<u64> = db.query_json(&top_q).unwrap()["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["unit"]["level"].as_u64().unwrap())
        .collect();
    assert_eq!(top, vec![109, 108, 107]);
    db.close().unwrap();
    drop(db);
    let db = open();
    assert!(db.read().check_integrity().is_empty());
    let mut run = eq.clone();
    run.explain = false;
    assert_eq!(db.query_json(&run).unwrap()["rows"].as_array().unwrap().len(), 10);
}

const UNIQUE_SCHEMA: &str = r#"
[tables.account]
[[tables.account.fields]]
name = "login"
type = "[u8; 16]"
index = "unique"
[[tables.account.fields]]
name = "slot"
type = "u32"
index = "unique"
[[tables.account.fields]]
name = "guild"
type = "u32"
index = "hash"
"#;

/// One way of writing a duplicate.
type Attempt = Box<dyn Fn(&mut ecsdb::Transaction<'_>) -> ecsdb::Result<()>>;

#[test]
fn unique_indexes_refuse_duplicates_at_commit_and_change_nothing() {
    let db = Database::builder().schema_toml(UNIQUE_SCHEMA).unwrap().build().unwrap();
    let (a, _) =
        db.write(|t| t.create_entity_json(&json!({"account": {"login": "ana", "slot": 1, "guild": 7}}))).unwrap();
    let (b, _) =
        db.write(|t| t.create_entity_json(&json!({"account": {"login": "bo", "slot": 2, "guild": 7}}))).unwrap();
    let before = db.read().canonical_state();
    // A duplicate through every write path is refused, naming table, field and value.
    let attempts: Vec<Attempt> = vec![
        Box::new(|t| t.create_entity_json(&json!({"account": {"login": "ana", "slot": 3}})).map(|_| ())),
        Box::new(move |t| t.set_json(b, "account", &json!({"login": "ana"}))),
        Box::new(move |t| t.add(b, "account.slot", &json!(-1))),
        Box::new(|t| {
            let schema = t.schema().clone();
            let slot = schema.field_ref("account", "slot").unwrap();
            t.for_each_chunk_mut(&[slot.table], |c| {
                for v in c.write::<u32>(slot)? {
                    *v = 9;
                }
                Ok(())
            })
        }),
    ];
    for f in attempts {
        let e = db.write(|t| f(t)).unwrap_err().to_string();
        assert!(e.contains("`account.") && e.contains("is unique"), "{e}");
        assert_eq!(db.read().canonical_state(), before);
        assert!(db.read().check_integrity().is_empty());
    }
    // Swapping two unique values inside one transaction is fine.
    db.write(|t| {
        t.set_json(a, "account", &json!({"slot": 100}))?;
        t.set_json(b, "account", &json!({"slot": 1}))?;
        t.set_json(a, "account", &json!({"slot": 2}))
    })
    .unwrap();
    // A freed value can be taken again; hash indexes allow duplicates.
    db.write(|t| t.delete(a)).unwrap();
    db.write(|t| t.create_entity_json(&json!({"account": {"login": "ana", "slot": 2, "guild": 7}}))).unwrap();
    let plan = db
        .query_json(&q(json!({"with": ["account"], "filters": [{"field": "account.guild", "op": "eq", "value": 7}], "explain": true})))
        .unwrap();
    assert_eq!(plan["plan"]["indexes"], json!(["account.guild"]));
    assert!(db.read().check_integrity().is_empty());
    // Schema mistakes are named.
    for (bad, needle) in [
        ("index = \"spatial\"", "spatial index needs a position"),
        ("index = \"bloom\"", "unknown index kind `bloom`"),
        ("index = \"unique\"\nindexed = true", "either"),
    ] {
        let s = format!("[tables.x]\n[[tables.x.fields]]\nname = \"f\"\ntype = \"u32\"\n{bad}\n");
        let e = Database::builder().schema_toml(&s).unwrap_err().to_string();
        assert!(e.contains(needle), "{bad}: {e}");
    }
    let e = Database::builder()
        .schema_toml("[tables.x]\n[[tables.x.fields]]\nname = \"f\"\ntype = \"[f32; 3]\"\nindex = \"btree\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs values with an order"), "{e}");
}

#[test]
fn index_memory_counts_against_the_ceiling() {
    let fill = |schema: &str| {
        let db = Database::builder().schema_toml(schema).unwrap().build().unwrap();
        db.write(|t| {
            for i in 0..2000u32 {
                t.create_entity_json(&json!({"unit": {"level": i, "score": i, "tag": format!("t{}", i % 7)}}))?;
            }
            Ok(())
        })
        .unwrap();
        db.read().data_bytes()
    };
    let (indexed, plain) = (fill(SCHEMA), fill(&plain_schema()));
    // Five indexed fields, 2,000 entities: at least 12 bytes per entry each.
    assert!(indexed >= plain + 5 * 2000 * 12, "indexed {indexed}, plain {plain}");
}
