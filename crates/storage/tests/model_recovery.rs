//! Every state the engine's model test can generate must survive the
//! durable path: random transactions are committed through a real commit log
//! (on the simulated disk), checkpoints are taken at random points, and after
//! every transaction
//! - a snapshot of the live world loads back to exactly the same state, and
//! - reopening the directory (newest snapshot + log replay) gives exactly the
//!   same state as the live world and the reference model.
//!
//! Component-less entities, entities stripped of every component, deleted
//! ids and edges all go through here.
#![allow(clippy::unwrap_used)]

#[path = "../../core/tests/support/model.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use ecsdb_core::World;
use ecsdb_storage::fs::{SimFs, Vfs};
use ecsdb_storage::{Store, StoreOptions, snapshot};
use proptest::prelude::*;
use support::{Model, arb_gen, canon_nan, engine_state, run_txn};

fn state(w: &World) -> Model {
    let mut m = engine_state(w);
    canon_nan(&mut m);
    m
}

fn open(fs: &Arc<SimFs>, schema: &Arc<ecsdb_core::Schema>) -> (Store, World) {
    let vfs: Arc<dyn Vfs> = fs.clone();
    let (store, world, _) = Store::open(vfs, Path::new("/db"), schema, StoreOptions::default()).unwrap();
    (store, world)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_model_state_survives_snapshot_and_replay(
        txns in proptest::collection::vec(
            (proptest::collection::vec(arb_gen(), 0..12), prop::bool::weighted(0.85), prop::bool::weighted(0.3)),
            1..10,
        )
    ) {
        let fs = Arc::new(SimFs::new());
        let schema = support::new_world().schema().clone();
        let (mut store, mut w) = open(&fs, &schema);
        let mut model = Model::default();
        let mut ever = BTreeSet::new();
        for (ops, commit, checkpoint) in &txns {
            if let Some((seq, cs)) = run_txn(&mut w, &mut model, &mut ever, ops, *commit) {
                store.wal().append(seq, cs.as_bytes()).unwrap();
                store.wal().sync_to(seq).unwrap();
            }
            let live = state(&w);
            // Snapshot → load.
            let image = snapshot::capture(&w);
            let bytes = snapshot::encode(&image, 1).unwrap();
            let loaded = snapshot::load(Path::new("mem.snap"), &bytes, &schema);
            prop_assert!(loaded.is_ok(), "snapshot of a live state fails to load: {:?}", loaded.err());
            let loaded = loaded.unwrap();
            prop_assert_eq!(&state(&loaded), &live);
            prop_assert_eq!(loaded.canonical_state(), w.canonical_state());
            // The image read directly (backups checksum it that way) is the same state.
            let direct = snapshot::load_image(&image, &schema).unwrap();
            prop_assert_eq!(direct.canonical_state(), w.canonical_state());
            let stream = |x: &World| {
                let mut b = Vec::new();
                let n = x.canonical_stream(&mut |p| b.extend_from_slice(p));
                (n, b)
            };
            prop_assert_eq!(stream(&direct), stream(&w));
            if *checkpoint {
                let image = store.begin_checkpoint(&w).unwrap();
                store.finish_checkpoint(&image).unwrap();
            }
            // Close and recover: newest snapshot + log replay.
            store.wal().shutdown().unwrap();
            drop(store);
            let (s, recovered) = open(&fs, &schema);
            store = s;
            prop_assert_eq!(&state(&recovered), &live);
            prop_assert_eq!(recovered.seq(), w.seq());
            // The memory ceiling counts the same after a restart.
            prop_assert_eq!(recovered.data_bytes(), w.data_bytes());
            prop_assert_eq!(loaded.data_bytes(), w.data_bytes());
            prop_assert!(recovered.check_integrity().is_empty());
            // Carry on with the recovered world: ids handed out after a
            // restart must not collide with committed ones either.
            w = recovered;
        }
    }
}
