//! Property tests: random transactions applied to the engine and to a plain
//! reference model must leave the same state; rolled-back transactions leave
//! no trace; replaying the committed change sets rebuilds the same world;
//! export → import round-trips exactly.
#![allow(clippy::unwrap_used)]

#[path = "support/model.rs"]
mod support;

use std::collections::BTreeSet;

use ecsdb_core::ChangeSet;
use ecsdb_core::io::{export_json, import_json};
use proptest::prelude::*;
use support::{Model, arb_gen, canon_nan, engine_state, new_world, run_txn};

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES=N runs a longer search (e.g. 20000); 256 by default.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_model(txns in proptest::collection::vec((proptest::collection::vec(arb_gen(), 0..16), prop::bool::weighted(0.8)), 1..12)) {
        let mut w = new_world();
        let mut replica = new_world();
        let mut model = Model::default();
        let mut ever = BTreeSet::new();
        for (ops, commit) in &txns {
            let before = w.canonical_state();
            let cs = run_txn(&mut w, &mut model, &mut ever, ops, *commit);
            let mut got = engine_state(&w);
            canon_nan(&mut got);
            let mut want = model.clone();
            canon_nan(&mut want);
            prop_assert_eq!(&got, &want);
            let problems = w.check_integrity();
            prop_assert!(problems.is_empty(), "{:?}", problems);
            match cs {
                Some((seq, cs)) => {
                    let decoded = ChangeSet::decode(cs.as_bytes()).unwrap();
                    replica.apply(seq, &decoded).unwrap();
                }
                None => {
                    if !*commit {
                        prop_assert_eq!(before, w.canonical_state(), "rollback left a trace");
                    }
                }
            }
            prop_assert_eq!(replica.canonical_state(), w.canonical_state());
            prop_assert_eq!(replica.seq(), w.seq());
        }
        // Export -> import into a fresh world reproduces the state exactly.
        let doc = export_json(&w);
        let text = serde_json::to_string(&doc).unwrap();
        let reparsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut fresh = new_world();
        fresh.begin().unwrap();
        import_json(&mut fresh, &reparsed).unwrap();
        fresh.commit().unwrap();
        let mut a = engine_state(&fresh);
        let mut b = engine_state(&w);
        canon_nan(&mut a);
        canon_nan(&mut b);
        prop_assert_eq!(a, b);
        prop_assert!(fresh.check_integrity().is_empty());
    }
}

/// A short crafted `SpawnMany` naming billions of entities is refused before
/// anything is allocated for them.
#[test]
fn a_tiny_record_cannot_demand_billions_of_entities() {
    let mut b = vec![1u8];
    b.extend_from_slice(&1u32.to_le_bytes());
    b.push(9);
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&ecsdb_core::EntityId::new(100, 1).0.to_le_bytes());
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    let cs = ecsdb_core::ChangeSet::decode(&b).unwrap();
    let mut w = new_world();
    let err = w.apply(1, &cs).unwrap_err().to_string();
    assert!(err.contains("split it"), "{err}");
    assert_eq!(w.entity_count(), 0);
}
