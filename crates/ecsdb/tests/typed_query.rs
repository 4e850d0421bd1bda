//! Typed queries and typed bulk spawns: they must produce exactly the change
//! sets the untyped API produces for the same operations, roll back like any
//! write, refuse what they cannot do before changing anything, and survive
//! close → reopen (snapshot + log replay).
#![allow(clippy::unwrap_used, clippy::float_cmp)]

use ecsdb::{Component, Database, EntityId};
use proptest::prelude::*;
use serde_json::json;

#[derive(Component, Debug, Clone, PartialEq)]
struct Transform {
    position: [f32; 3],
    rotation: [f32; 4],
    scale: [f32; 3],
    dirty: bool,
}

#[derive(Component, Debug, Clone, PartialEq)]
struct Physics {
    velocity: [f32; 3],
    acceleration: [f32; 3],
    mass: f32,
}

#[derive(Component, Debug, Clone, PartialEq)]
struct Health {
    hp: u32,
    max_hp: u32,
    armor: u32,
    status_effects: u32,
}

#[derive(Component, Debug, Clone, PartialEq)]
#[ecsdb(table = "player")]
struct Hero {
    name: String,
    level: u32,
    experience: u64,
}

fn transform(x: f32) -> Transform {
    Transform { position: [x, 0.0, 0.0], rotation: [0.0, 0.0, 0.0, 1.0], scale: [1.0; 3], dirty: false }
}

fn physics(v: f32) -> Physics {
    Physics { velocity: [v, 1.0, 0.0], acceleration: [0.0; 3], mass: 1.0 }
}

/// The same entities spawned row by row through JSON.
fn spawn_untyped(db: &Database, xs: &[(f32, f32)]) -> Vec<EntityId> {
    db.write(|t| {
        let mut b = t.batch(&["entities", "transform", "physics"])?;
        let schema = t.schema().clone();
        let (te, tt, tp) = (
            schema.table_id("entities").unwrap(),
            schema.table_id("transform").unwrap(),
            schema.table_id("physics").unwrap(),
        );
        for &(x, v) in xs {
            let tr = transform(x).to_values();
            let ph = physics(v).to_values();
            let ent = [ecsdb::Value::U64(0), ecsdb::Value::U64(0)];
            b.push_values(t, &[(te, &ent[..]), (tt, &tr[..]), (tp, &ph[..])])?;
        }
        t.spawn_columns(b)
    })
    .unwrap()
    .0
}

#[test]
fn a_typed_system_moves_entities_and_logs_what_the_untyped_one_logs() {
    let typed = Database::example().unwrap();
    let untyped = Database::example().unwrap();
    let xs: Vec<(f32, f32)> = (0..100).map(|i| (i as f32, (i % 7) as f32)).collect();
    let (ids, c1) = typed.write(|t| t.spawn_batch(xs.iter().map(|&(x, v)| (transform(x), physics(v))))).unwrap();
    let ids2 = spawn_untyped(&untyped, &xs);
    assert_eq!(ids, ids2);
    let c2 = untyped.read().seq();
    assert_eq!(c1.seq, c2);
    assert_eq!(typed.read().canonical_state(), untyped.read().canonical_state());

    // position += velocity, typed and untyped.
    let (n, c1) = typed
        .write(|t| {
            let mut n = 0;
            t.query::<(&mut Transform, &Physics)>().for_each(|_, (tr, ph)| {
                for k in 0..3 {
                    tr.position[k] += ph.velocity[k];
                }
                n += 1;
            })?;
            Ok(n)
        })
        .unwrap();
    assert_eq!(n, 100);
    let schema = untyped.schema().clone();
    let pos = schema.field_ref("transform", "position").unwrap();
    let vel = schema.field_ref("physics", "velocity").unwrap();
    let ((), c2) = untyped
        .write(|t| {
            t.for_each_chunk_mut(&[pos.table, vel.table], |chunk| {
                let (p, v) = chunk.write_read::<[f32; 3], [f32; 3]>(pos, vel)?;
                for (p, v) in p.iter_mut().zip(v) {
                    for k in 0..3 {
                        p[k] += v[k];
                    }
                }
                Ok(())
            })
        })
        .unwrap();
    assert_eq!(c1.changes.as_bytes(), c2.changes.as_bytes());
    let r = typed.read();
    assert_eq!(r.get_component::<Transform>(ids[10]).unwrap().position, [13.0, 1.0, 0.0]);
    // A read-only query sees the same values.
    let all = r.query::<(&Transform, &Physics)>().collect().unwrap();
    assert_eq!(all.len(), 100);
    assert!(all.iter().all(|(id, (tr, _))| r.get_component::<Transform>(*id).unwrap() == *tr));
}

#[test]
fn a_rolled_back_system_leaves_nothing() {
    let db = Database::example().unwrap();
    db.write(|t| t.spawn_batch((0..50).map(|i| (transform(i as f32), physics(1.0))))).unwrap();
    let before = db.read().canonical_state();
    let mut t = db.transaction().unwrap();
    t.query::<(&mut Transform,)>().for_each(|_, (tr,)| tr.position[0] = -1.0).unwrap();
    t.rollback();
    assert_eq!(db.read().canonical_state(), before);
    // Writing nothing new commits nothing.
    let ((), c) = db.write(|t| t.query::<(&mut Transform,)>().for_each(|_, _| {})).unwrap();
    assert!(c.changes.is_empty());
}

#[test]
fn what_cannot_be_written_in_place_is_refused_before_anything_runs() {
    let db = Database::example().unwrap();
    db.write(|t| t.spawn((Hero { name: "ana".into(), level: 1, experience: 0 },))).unwrap();
    let before = db.read().canonical_state();
    let mut calls = 0;
    let err = db.write(|t| t.query::<(&mut Hero,)>().for_each(|_, _| calls += 1)).unwrap_err().to_string();
    assert!(err.contains("cannot be written in place"), "{err}");
    assert_eq!(calls, 0);
    assert_eq!(db.read().canonical_state(), before);
    // The same component twice is refused.
    let err = db.write(|t| t.query::<(&mut Transform, &Transform)>().count()).unwrap_err().to_string();
    assert!(err.contains("names each component once"), "{err}");
    // A read view cannot write.
    let err = db.read().query::<(&mut Transform,)>().count().unwrap_err().to_string();
    assert!(err.contains("needs a transaction"), "{err}");
    // Reading strings works.
    let heroes = db.read().query::<(&Hero,)>().collect().unwrap();
    assert_eq!(heroes[0].1.0.name, "ana");
}

#[test]
fn bulk_spawns_add_missing_parents_and_check_every_value() {
    let db = Database::example().unwrap();
    // `transform` needs `entities`: added with its defaults.
    let (ids, _) = db.write(|t| t.spawn_batch([(transform(1.0),), (transform(2.0),)])).unwrap();
    let j = db.get_json(ids[1]).unwrap();
    assert!(j["components"]["entities"].is_object(), "{j}");
    assert_eq!(j["components"]["transform"]["position"], json!([2.0, 0.0, 0.0]));
    // One bad row refuses the whole batch.
    let before = db.read().canonical_state();
    let rows = vec![
        (Hero { name: "ok".into(), level: 1, experience: 0 },),
        (Hero { name: "x".repeat(65), level: 1, experience: 0 },),
    ];
    let err = db.write(|t| t.spawn_batch(rows)).unwrap_err().to_string();
    assert!(err.contains("player") && err.contains("name"), "{err}");
    assert_eq!(db.read().canonical_state(), before);
}

#[test]
fn filters_and_change_detection() {
    let db = Database::example().unwrap();
    let (ids, c0) = db
        .write(|t| {
            let mut ids = t.spawn_batch((0..10).map(|i| (transform(i as f32), physics(0.0))))?;
            ids.extend(t.spawn_batch((0..5).map(|i| (transform(i as f32),)))?);
            Ok(ids)
        })
        .unwrap();
    let r = db.read();
    assert_eq!(r.query::<(&Transform,)>().count().unwrap(), 15);
    assert_eq!(r.query::<(&Transform,)>().with::<Physics>().count().unwrap(), 10);
    assert_eq!(r.query::<(&Transform,)>().without::<Physics>().count().unwrap(), 5);
    assert_eq!(r.query::<(&Transform,)>().changed_since(c0.seq).count().unwrap(), 0);
    assert_eq!(r.query::<(&Transform,)>().changed_since(c0.seq - 1).count().unwrap(), 15);
    drop(r);
    // A system touches three entities; only those count as changed.
    db.write(|t| {
        t.query::<(&mut Transform,)>().for_each(|id, (tr,)| {
            if [ids[1], ids[4], ids[12]].contains(&id) {
                tr.dirty = true;
            }
        })
    })
    .unwrap();
    db.write(|t| t.set_component(ids[7], &Health { hp: 1, max_hp: 1, armor: 0, status_effects: 0 })).unwrap_err();
    let mut changed = Vec::new();
    db.read().query::<(&Transform,)>().changed_since(c0.seq).for_each(|id, _| changed.push(id)).unwrap();
    changed.sort_unstable();
    assert_eq!(changed, vec![ids[1], ids[4], ids[12]]);
    assert_eq!(db.read().changed_at(ids[4]), Some(c0.seq + 1));
}

#[test]
fn batches_and_in_place_writes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let open = || Database::builder().schema_toml(ecsdb::EXAMPLE_SCHEMA).unwrap().data_dir(dir.path()).build().unwrap();
    let db = open();
    db.write(|t| t.spawn_batch((0..300).map(|i| (transform(i as f32), physics(2.0))))).unwrap();
    db.checkpoint().unwrap();
    db.write(|t| t.spawn_batch((0..30).map(|i| (Hero { name: format!("h{i}"), level: i, experience: 0 },)))).unwrap();
    for _ in 0..3 {
        db.write(|t| t.query::<(&mut Transform, &Physics)>().for_each(|_, (tr, ph)| tr.position[1] += ph.velocity[0]))
            .unwrap();
    }
    let state = db.read().canonical_state();
    db.close().unwrap();
    drop(db);
    let db = open();
    assert_eq!(db.read().canonical_state(), state);
    // Everything is "changed" for a sequence older than the reopen.
    assert_eq!(db.read().query::<(&Transform,)>().changed_since(0).count().unwrap(), 300);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Typed and untyped APIs produce identical change sets for the same
    /// spawns and the same in-place update.
    #[test]
    fn typed_and_untyped_change_sets_are_identical(
        xs in proptest::collection::vec((-1e6f32..1e6, -100f32..100.0), 0..60),
        bump in proptest::collection::vec(any::<bool>(), 60),
    ) {
        let typed = Database::example().unwrap();
        let untyped = Database::example().unwrap();
        let (_, c1) = typed.write(|t| t.spawn_batch(xs.iter().map(|&(x, v)| (transform(x), physics(v))))).unwrap();
        spawn_untyped(&untyped, &xs);
        let bytes2 = {
            // The untyped spawn's change set: replay it through a fresh world's log.
            let db = Database::example().unwrap();
            let (_, c) = db.write(|t| {
                let mut b = t.batch(&["entities", "transform", "physics"])?;
                let schema = t.schema().clone();
                let (te, tt, tp) = (schema.table_id("entities").unwrap(), schema.table_id("transform").unwrap(), schema.table_id("physics").unwrap());
                for &(x, v) in &xs {
                    let (tr, ph) = (transform(x).to_values(), physics(v).to_values());
                    let ent = [ecsdb::Value::U64(0), ecsdb::Value::U64(0)];
                    b.push_values(t, &[(te, &ent[..]), (tt, &tr[..]), (tp, &ph[..])])?;
                }
                t.spawn_columns(b)
            }).unwrap();
            c.changes.as_bytes().to_vec()
        };
        if xs.is_empty() {
            prop_assert!(c1.changes.is_empty());
        } else {
            prop_assert_eq!(c1.changes.as_bytes(), &bytes2[..]);
        }
        let ((), c1) = typed.write(|t| {
            let mut i = 0;
            t.query::<(&mut Transform, &Physics)>().for_each(|_, (tr, ph)| {
                if bump[i % bump.len()] { tr.position[2] += ph.velocity[0]; }
                i += 1;
            })
        }).unwrap();
        let schema = untyped.schema().clone();
        let pos = schema.field_ref("transform", "position").unwrap();
        let vel = schema.field_ref("physics", "velocity").unwrap();
        let ((), c2) = untyped.write(|t| t.for_each_chunk_mut(&[pos.table, vel.table], |chunk| {
            let (p, v) = chunk.write_read::<[f32; 3], [f32; 3]>(pos, vel)?;
            for (i, (p, v)) in p.iter_mut().zip(v).enumerate() {
                if bump[i % bump.len()] { p[2] += v[0]; }
            }
            Ok(())
        })).unwrap();
        prop_assert_eq!(c1.changes.as_bytes(), c2.changes.as_bytes());
        prop_assert_eq!(typed.read().canonical_state(), untyped.read().canonical_state());
    }
}

/// A change set read back by name: every op expanded, names and values decoded.
#[test]
fn change_sets_read_back_by_name() {
    let db = Database::example().unwrap();
    let (ids, c) = db.write(|t| t.spawn_batch([(transform(1.0), physics(2.0))])).unwrap();
    let named = db.describe_changes(&c.changes).unwrap();
    let j = serde_json::to_value(&named).unwrap();
    assert_eq!(j[0], json!({"op": "created", "entity": ids[0].0}));
    let tables: Vec<&str> = j.as_array().unwrap()[1..].iter().map(|c| c["table"].as_str().unwrap()).collect();
    assert_eq!(tables, ["entities", "transform", "physics"]);
    assert_eq!(j[2]["fields"]["position"], json!([1.0, 0.0, 0.0]));
    assert_eq!(j[2]["fields"]["entity_id"], json!(ids[0].0));
    let ((), c) = db.write(|t| t.query::<(&mut Physics,)>().for_each(|_, (p,)| p.mass = 3.0)).unwrap();
    let named = db.describe_changes(&c.changes).unwrap();
    assert_eq!(
        serde_json::to_value(&named).unwrap(),
        json!([{"op": "field_set", "entity": ids[0].0, "table": "physics", "field": "mass", "value": 3.0}])
    );
    let (b, _) = db.write(|t| t.create_entity_json(&json!({"player": {"name": "bo", "level": 2}}))).unwrap();
    let ((), c) = db
        .write(|t| {
            t.link("follows", ids[0], b, Some(&json!({})))?;
            t.remove(b, "player")?;
            t.delete(ids[0])
        })
        .unwrap();
    let ops: Vec<String> = serde_json::to_value(db.describe_changes(&c.changes).unwrap())
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["op"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ops, ["linked", "component_removed", "deleted"]);
}

/// Change marks belong to commits: a rolled-back or refused transaction
/// leaves none, whatever it did.
#[test]
fn rolled_back_and_refused_transactions_leave_no_change_marks() {
    let db = Database::example().unwrap();
    let (ids, c1) = db.write(|t| t.spawn_batch((0..3).map(|i| (transform(i as f32), physics(0.0))))).unwrap();
    let marks = |db: &Database| ids.iter().map(|&i| db.read().changed_at(i)).collect::<Vec<_>>();
    let before = marks(&db);
    assert_eq!(before, vec![Some(c1.seq); 3]);
    // Every kind of change, rolled back.
    let mut t = db.transaction().unwrap();
    t.set_component(ids[0], &transform(9.0)).unwrap();
    t.insert_component(ids[1], &Health { hp: 1, max_hp: 1, armor: 0, status_effects: 0 }).unwrap();
    t.remove_typed::<Physics>(ids[2]).unwrap();
    t.query::<(&mut Transform,)>().for_each(|_, (tr,)| tr.scale[0] = 2.0).unwrap();
    t.delete(ids[1]).unwrap();
    t.rollback();
    assert_eq!(marks(&db), before);
    // A commit refused at its checks (a dangling foreign key) after in-place writes.
    let err = db
        .write(|t| {
            t.query::<(&mut Transform,)>().for_each(|_, (tr,)| tr.scale[1] = 3.0)?;
            t.set_component(ids[0], &transform(5.0))?;
            t.create_entity_json(&json!({"player": {"name": "x", "level": 1}, "inventory": {}}))?;
            t.link("owns", ids[0], EntityId(999_999), None)
        })
        .unwrap_err();
    assert!(!err.to_string().is_empty());
    assert_eq!(marks(&db), before);
    // The next real commit reuses the sequence number: still no false positives.
    let ((), c2) = db.write(|t| t.set_component(ids[2], &transform(1.0))).unwrap();
    let mut changed = db.read().query::<(&Transform,)>().changed_since(c1.seq).collect().unwrap();
    changed.sort_by_key(|(id, _)| *id);
    assert_eq!(changed.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![ids[2]]);
    assert_eq!(db.read().changed_at(ids[2]), Some(c2.seq));
}

/// After a restart, what the process loaded is "changed at or before the
/// loaded sequence"; only later commits mark entities.
#[test]
fn change_marks_after_reopen_start_at_the_loaded_state() {
    let dir = tempfile::tempdir().unwrap();
    let open = || Database::builder().schema_toml(ecsdb::EXAMPLE_SCHEMA).unwrap().data_dir(dir.path()).build().unwrap();
    let db = open();
    let (ids, _) = db.write(|t| t.spawn_batch((0..3).map(|i| (transform(i as f32),)))).unwrap();
    db.checkpoint().unwrap();
    db.write(|t| t.set_component(ids[0], &transform(7.0))).unwrap();
    db.close().unwrap();
    drop(db);
    for checkpointed in [false, true] {
        let db = open();
        if checkpointed {
            db.checkpoint().unwrap();
        }
        let v = db.read();
        let known = v.changes_known_from();
        assert!(known <= v.seq());
        assert_eq!(v.query::<(&Transform,)>().changed_since(v.seq()).count().unwrap(), 0);
        assert!(ids.iter().all(|&i| v.changed_at(i).is_none_or(|c| c <= v.seq())));
        drop(v);
        let x = if checkpointed { 2.0 } else { 1.0 };
        let ((), c) = db.write(|t| t.set_component(ids[2], &transform(x))).unwrap();
        let changed = db.read().query::<(&Transform,)>().changed_since(c.seq - 1).collect().unwrap();
        assert_eq!(changed.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![ids[2]]);
        db.close().unwrap();
    }
}

#[test]
fn untyped_batches_bring_their_parents_and_refuse_unknown_columns() {
    let db = Database::example().unwrap();
    let (ids, _) = db
        .write(|t| {
            let tt = t.table_id("transform")?;
            let mut b = t.batch(&["transform"])?;
            let vals = transform(4.0).to_values();
            b.push_values(t, &[(tt, &vals[..])])?;
            // A column that does not exist is an error, not a panic.
            assert!(b.fixed_slot(999).is_none());
            b.push_field(999, &[0; 12]);
            assert!(b.end_row().is_err());
            assert_eq!(b.len(), 1);
            t.spawn_columns(b)
        })
        .unwrap();
    let j = db.get_json(ids[0]).unwrap();
    assert!(j["components"]["entities"].is_object(), "{j}");
    assert_eq!(j["components"]["transform"]["position"], json!([4.0, 0.0, 0.0]));
}
