//! The reference model of the engine's property tests: a generator of random
//! operations, a plain `BTreeMap` model of what they must do, and a runner
//! that applies one transaction to both. Shared by the engine's model test
//! (`crates/core/tests/model.rs`) and the recovery model test
//! (`crates/storage/tests/model_recovery.rs`), which puts every generated
//! state through snapshot → load and log → replay.
// Generated operations bind many short names (ids a, b; table t; value v).
#![allow(clippy::many_single_char_names, dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ecsdb_core::{ChangeSet, EntityId, FieldRef, Schema, Value, World};
use proptest::prelude::*;

pub const SCHEMA: &str = r#"
[database]
name = "model"
version = "1"

[enums.kind]
variants = ["a", "b", "c"]

[tables.root]
[[tables.root.fields]]
name = "id"
type = "u64"
primary_key = true
[[tables.root.fields]]
name = "tag"
type = "u8"
indexed = true

[tables.pos]
[[tables.pos.fields]]
name = "p"
type = "[f32; 3]"
indexed = true

[tables.hp]
[[tables.hp.fields]]
name = "hp"
type = "u32"
indexed = true
[[tables.hp.fields]]
name = "delta"
type = "i64"
[[tables.hp.fields]]
name = "alive"
type = "bool"
indexed = true

[tables.name]
parent_table = "root"
[[tables.name.fields]]
name = "entity_id"
type = "u64"
foreign_key = "root.id"
[[tables.name.fields]]
name = "short"
type = "[u8; 8]"
indexed = true
[[tables.name.fields]]
name = "long"
type = "string"
indexed = true
[[tables.name.fields]]
name = "kind"
type = "kind"
indexed = true

[tables.refs]
[[tables.refs.fields]]
name = "target"
type = "u64"
foreign_key = "root.id"
indexed = true
[[tables.refs.fields]]
name = "big"
type = "u64"

[relations.link]
[[relations.link.fields]]
name = "w"
type = "u16"
"#;

pub const ROOT: u16 = 0;
pub const POS: u16 = 1;
pub const HP: u16 = 2;
pub const NAME: u16 = 3;
pub const REFS: u16 = 4;

#[derive(Debug, Clone)]
pub enum Target {
    Null,
    Existing(usize),
    Bogus(u64),
}

#[derive(Debug, Clone)]
pub enum Gen {
    Create,
    Delete(usize),
    Insert(usize, u16, Vec<u8>, Target),
    Remove(usize, u16),
    SetHp(usize, u32),
    SetRef(usize, Target),
    Link(usize, usize, u16),
    Unlink(usize, usize),
    Shift(f32),
    Bundle(Vec<u8>),
    /// A bulk spawn of up to 4 entities with root, name and refs.
    Batch(u8, Vec<u8>, Target),
}

pub fn arb_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        any::<u32>().prop_map(f32::from_bits).prop_filter("no NaN payloads", |f| !f.is_nan()),
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(-0.0f32),
        Just(f32::MIN_POSITIVE / 2.0),
    ]
}

pub fn arb_target() -> impl Strategy<Value = Target> {
    prop_oneof![Just(Target::Null), any::<usize>().prop_map(Target::Existing), any::<u64>().prop_map(Target::Bogus)]
}

/// Values for a table, generated as raw material (bytes) and mapped per table.
pub fn arb_gen() -> impl Strategy<Value = Gen> {
    prop_oneof![
        3 => Just(Gen::Create),
        1 => any::<usize>().prop_map(Gen::Delete),
        4 => (any::<usize>(), 0u16..5, proptest::collection::vec(any::<u8>(), 24), arb_target())
            .prop_map(|(i, t, b, tg)| Gen::Insert(i, t, b, tg)),
        1 => (any::<usize>(), 0u16..5).prop_map(|(i, t)| Gen::Remove(i, t)),
        2 => (any::<usize>(), any::<u32>()).prop_map(|(i, v)| Gen::SetHp(i, v)),
        1 => (any::<usize>(), arb_target()).prop_map(|(i, t)| Gen::SetRef(i, t)),
        2 => (any::<usize>(), any::<usize>(), any::<u16>()).prop_map(|(a, b, w)| Gen::Link(a, b, w)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Gen::Unlink(a, b)),
        1 => arb_f32().prop_map(Gen::Shift),
        1 => proptest::collection::vec(any::<u8>(), 24).prop_map(Gen::Bundle),
        1 => (0u8..5, proptest::collection::vec(any::<u8>(), 24), arb_target())
            .prop_map(|(n, b, t)| Gen::Batch(n, b, t)),
    ]
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    pub entities: BTreeMap<EntityId, BTreeMap<u16, Vec<Value>>>,
    pub edges: BTreeMap<(EntityId, EntityId), u16>,
}

pub fn values_for(t: u16, b: &[u8], target: u64, rng_f: f32) -> Vec<Value> {
    let short: String = b[..b[0] as usize % 9].iter().map(|x| char::from(b'a' + x % 26)).collect();
    match t {
        ROOT => vec![Value::U64(u64::from(b[1]))],
        POS => vec![Value::Array(vec![Value::F32(rng_f), Value::F32(f32::from(b[2])), Value::F32(-f32::from(b[3]))])],
        HP => vec![
            Value::U64(u64::from(u32::from_le_bytes([b[4], b[5], b[6], b[7]]))),
            Value::I64(i64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]])),
            Value::Bool(b[16] & 1 == 1),
        ],
        NAME => {
            vec![Value::Str(short.clone()), Value::Str(format!("{short}-{}", b[17])), Value::Enum(u16::from(b[18] % 3))]
        }
        _ => vec![
            Value::U64(target),
            Value::U64(u64::from_le_bytes([b[16], b[17], b[18], b[19], b[20], b[21], b[22], 0xff])),
        ],
    }
}

impl Model {
    fn check(&self, deleted: &BTreeSet<EntityId>) -> bool {
        for comps in self.entities.values() {
            if comps.contains_key(&NAME) && !comps.contains_key(&ROOT) {
                return false;
            }
            if let Some(r) = comps.get(&REFS) {
                let target = EntityId(r[0].as_u64().unwrap());
                if !target.is_null() && !self.entities.get(&target).is_some_and(|c| c.contains_key(&ROOT)) {
                    return false;
                }
            }
        }
        // A deleted entity may not still be referenced (checked above too, as
        // a missing target), so `deleted` only matters through that rule.
        let _ = deleted;
        true
    }
}

pub fn engine_state(w: &World) -> Model {
    let mut m = Model::default();
    let schema = w.schema().clone();
    for id in w.entities().iter() {
        let mut comps = BTreeMap::new();
        for &t in w.tables_of(id).unwrap() {
            let table = schema.table(t);
            let vals = (0..table.stored_len()).map(|s| w.field_value(id, t, table.stored[s]).unwrap()).collect();
            comps.insert(t, vals);
        }
        m.entities.insert(id, comps);
    }
    for (k, p) in w.relations().iter() {
        m.edges.insert((k.from, k.to), u16::from_le_bytes([p[0], p[1]]));
    }
    m
}

pub fn pick(model: &Model, i: usize) -> Option<EntityId> {
    if model.entities.is_empty() {
        return None;
    }
    model.entities.keys().nth(i % model.entities.len()).copied()
}

pub fn target_id(model: &Model, t: &Target) -> u64 {
    match t {
        Target::Null => 0,
        Target::Existing(i) => pick(model, *i).map_or(0, |e| e.0),
        Target::Bogus(x) => *x,
    }
}

pub fn new_world() -> World {
    World::new(Arc::new(Schema::from_toml_str(SCHEMA).unwrap()))
}

/// Run one transaction on both sides. Returns the committed change set.
pub fn run_txn(
    w: &mut World,
    model: &mut Model,
    ever: &mut BTreeSet<EntityId>,
    ops: &[Gen],
    commit: bool,
) -> Option<(u64, ChangeSet)> {
    let before = model.clone();
    w.begin().unwrap();
    let mut deleted = BTreeSet::new();
    let mut created = Vec::new();
    for op in ops {
        match op {
            Gen::Create => {
                let id = w.create_entity().unwrap();
                assert!(!ever.contains(&id), "committed id {id:?} was handed out again");
                created.push(id);
                model.entities.insert(id, BTreeMap::new());
            }
            Gen::Delete(i) => {
                let Some(id) = pick(model, *i) else { continue };
                w.delete_entity(id).unwrap();
                model.entities.remove(&id);
                model.edges.retain(|(a, b), _| *a != id && *b != id);
                deleted.insert(id);
            }
            Gen::Insert(i, t, b, tg) => {
                let Some(id) = pick(model, *i) else { continue };
                let vals = values_for(
                    *t,
                    b,
                    target_id(model, tg),
                    f32::from_bits(u32::from_le_bytes([b[20], b[21], b[22], b[23]])),
                );
                let vals: Vec<Value> = vals
                    .into_iter()
                    .map(|v| match v {
                        Value::Array(a) => Value::Array(
                            a.into_iter()
                                .map(|x| match x {
                                    Value::F32(f) if f.is_nan() => Value::F32(f32::NAN),
                                    o => o,
                                })
                                .collect(),
                        ),
                        o => o,
                    })
                    .collect();
                let r = w.insert_values(id, *t, &vals);
                let has = model.entities[&id].contains_key(t);
                assert_eq!(r.is_ok(), !has, "insert {t} on {id:?}: {r:?}");
                if !has {
                    model.entities.get_mut(&id).unwrap().insert(*t, vals);
                }
            }
            Gen::Remove(i, t) => {
                let Some(id) = pick(model, *i) else { continue };
                let r = w.remove(id, *t);
                let had = model.entities.get_mut(&id).unwrap().remove(t).is_some();
                assert_eq!(r.is_ok(), had, "{r:?}");
            }
            Gen::SetHp(i, v) => {
                let Some(id) = pick(model, *i) else { continue };
                let f = FieldRef { table: HP, slot: 0 };
                let r = w.set_value(id, f, &Value::U64(u64::from(*v)));
                match model.entities.get_mut(&id).unwrap().get_mut(&HP) {
                    Some(vals) => {
                        assert!(r.is_ok(), "{r:?}");
                        vals[0] = Value::U64(u64::from(*v));
                    }
                    None => assert!(r.is_err()),
                }
            }
            Gen::SetRef(i, tg) => {
                let Some(id) = pick(model, *i) else { continue };
                let target = target_id(model, tg);
                let r = w.set_value(id, FieldRef { table: REFS, slot: 0 }, &Value::U64(target));
                match model.entities.get_mut(&id).unwrap().get_mut(&REFS) {
                    Some(vals) => {
                        assert!(r.is_ok(), "{r:?}");
                        vals[0] = Value::U64(target);
                    }
                    None => assert!(r.is_err()),
                }
            }
            Gen::Link(a, b, wt) => {
                let (Some(x), Some(y)) = (pick(model, *a), pick(model, *b)) else {
                    continue;
                };
                w.link_edge(0, x, y, &wt.to_le_bytes()).unwrap();
                model.edges.insert((x, y), *wt);
            }
            Gen::Unlink(a, b) => {
                let (Some(x), Some(y)) = (pick(model, *a), pick(model, *b)) else {
                    continue;
                };
                let r = w.unlink_edge(0, x, y);
                assert_eq!(r.is_ok(), model.edges.remove(&(x, y)).is_some());
            }
            Gen::Bundle(b) => {
                let pos = values_for(POS, b, 0, 1.5);
                let hp = values_for(HP, b, 0, 0.0);
                let rows = [(POS, w.encode_values(POS, &pos)), (HP, w.encode_values(HP, &hp))];
                let refs: Vec<(u16, &[u8])> = rows.iter().map(|(t, r)| (*t, r.as_slice())).collect();
                let id = w.spawn_rows(&refs).unwrap();
                assert!(!ever.contains(&id), "committed id {id:?} was handed out again");
                created.push(id);
                model.entities.insert(id, BTreeMap::from([(POS, pos), (HP, hp)]));
                // The same table twice is refused and changes nothing.
                let dup = [(HP, refs[1].1), (HP, refs[1].1)];
                assert!(w.insert_rows(id, &dup).is_err());
            }
            Gen::Batch(n, b, tg) => {
                let target = target_id(model, tg);
                let mut batch = ecsdb_core::batch::BatchBuilder::new(w, &[REFS, NAME, ROOT]).unwrap();
                let mut rows = Vec::new();
                for k in 0..*n {
                    let mut b = b.clone();
                    b.rotate_left(usize::from(k));
                    let comps: BTreeMap<u16, Vec<Value>> =
                        [ROOT, NAME, REFS].iter().map(|&t| (t, values_for(t, &b, target, 0.0))).collect();
                    let row: Vec<(u16, &[Value])> = comps.iter().map(|(t, v)| (*t, v.as_slice())).collect();
                    batch.push_values(w, &row).unwrap();
                    rows.push(comps);
                }
                let ids = if k_borrowed(b) {
                    let cols = batch.columns();
                    w.spawn_batch(batch.tables(), batch.len(), &cols).unwrap()
                } else {
                    batch.spawn(w).unwrap()
                };
                assert_eq!(ids.len(), rows.len());
                for (id, comps) in ids.into_iter().zip(rows) {
                    assert!(!ever.contains(&id), "committed id {id:?} was handed out again");
                    created.push(id);
                    model.entities.insert(id, comps);
                }
            }
            Gen::Shift(d) => {
                let p = FieldRef { table: POS, slot: 0 };
                w.for_each_chunk_mut(&[POS], |chunk| {
                    for v in chunk.write::<[f32; 3]>(p)? {
                        v[0] += *d;
                    }
                    Ok(())
                })
                .unwrap();
                for comps in model.entities.values_mut() {
                    if let Some(Value::Array(a)) = comps.get_mut(&POS).map(|v| &mut v[0])
                        && let Value::F32(x) = &mut a[0]
                    {
                        *x += *d;
                    }
                }
                // An in-place write to an indexed column: hp += 1 where hp is even.
                let hp = FieldRef { table: HP, slot: 0 };
                w.for_each_chunk_mut(&[HP], |chunk| {
                    for v in chunk.write::<u32>(hp)? {
                        if *v % 2 == 0 {
                            *v = v.wrapping_add(1);
                        }
                    }
                    Ok(())
                })
                .unwrap();
                for comps in model.entities.values_mut() {
                    if let Some(Value::U64(x)) = comps.get_mut(&HP).map(|v| &mut v[0])
                        && *x % 2 == 0
                    {
                        *x = (*x + 1) % (1 << 32);
                    }
                }
            }
        }
    }
    if !commit {
        w.rollback();
        *model = before;
        return None;
    }
    let valid = model.check(&deleted);
    match w.commit() {
        Ok(c) => {
            assert!(valid, "engine committed a state the model rejects");
            ever.extend(created);
            if c.changes.is_empty() { None } else { Some((c.seq, c.changes)) }
        }
        Err(e) => {
            assert!(!valid, "engine refused a valid commit: {e}");
            *model = before;
            None
        }
    }
}

/// Which batch path a generated batch takes (borrowed columns or moved ones).
fn k_borrowed(b: &[u8]) -> bool {
    b[23] & 1 == 1
}

pub fn canon_nan(m: &mut Model) {
    // In-place float arithmetic can yield NaNs with any payload; compare them
    // as one class.
    for comps in m.entities.values_mut() {
        if let Some(Value::Array(a)) = comps.get_mut(&POS).map(|v| &mut v[0]) {
            for x in a {
                if let Value::F32(f) = x
                    && f.is_nan()
                {
                    *f = f32::NAN;
                }
            }
        }
    }
}
