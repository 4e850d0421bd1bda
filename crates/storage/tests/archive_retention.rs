//! `wal_archive/` stays within its size limit, never dropping a segment the
//! retained snapshots need, and the directory still recovers.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use ecsdb_core::{Schema, World};
use ecsdb_storage::fs::{SimFs, Vfs};
use ecsdb_storage::store::{list_segments, list_snapshots};
use ecsdb_storage::{Store, StoreOptions};

fn commit(store: &Store, w: &mut World) {
    w.begin().unwrap();
    w.create_entity().unwrap();
    let c = w.commit().unwrap();
    store.wal().append(c.seq, c.changes.as_bytes()).unwrap();
    store.wal().sync_to(c.seq).unwrap();
}

#[test]
fn the_archive_is_pruned_down_to_what_snapshots_need() {
    let fs = Arc::new(SimFs::new());
    let schema =
        Arc::new(Schema::from_toml_str("[tables.t]\n[[tables.t.fields]]\nname = \"v\"\ntype = \"u8\"\n").unwrap());
    let opts = StoreOptions { archive_max_bytes: 1, retention: 2, ..StoreOptions::default() };
    let vfs: Arc<dyn Vfs> = fs.clone();
    let (store, mut w, _) = Store::open(vfs.clone(), Path::new("/db"), &schema, opts.clone()).unwrap();
    for _ in 0..6 {
        for _ in 0..5 {
            commit(&store, &mut w);
        }
        let image = store.begin_checkpoint(&w).unwrap();
        store.finish_checkpoint(&image).unwrap();
    }
    let snaps = list_snapshots(fs.as_ref(), Path::new("/db/snapshots")).unwrap();
    assert_eq!(snaps.len(), 2);
    let oldest = snaps.last().unwrap().0;
    let archived = list_segments(fs.as_ref(), Path::new("/db/wal_archive")).unwrap();
    // Everything before the oldest retained snapshot is gone; what follows it stays.
    assert!(archived.first().is_some_and(|(first, _)| *first > oldest - 5), "{archived:?}");
    assert!(archived.iter().any(|(first, _)| *first == oldest + 1), "{archived:?}");
    drop(store);
    let (_, recovered, _) = Store::open(vfs, Path::new("/db"), &schema, opts).unwrap();
    assert_eq!(recovered.seq(), 30);
    assert_eq!(recovered.entity_count(), 30);
}

/// Without `wal_archive`, segments kept only for a log hold (a backup
/// target not holding them yet) go once the hold lifts, at the next
/// checkpoint.
#[test]
fn held_segments_go_once_released_when_archiving_is_off() {
    let fs = Arc::new(SimFs::new());
    let schema =
        Arc::new(Schema::from_toml_str("[tables.t]\n[[tables.t.fields]]\nname = \"v\"\ntype = \"u8\"\n").unwrap());
    let opts = StoreOptions { archive: false, retention: 1, ..StoreOptions::default() };
    let vfs: Arc<dyn Vfs> = fs.clone();
    let (store, mut w, _) = Store::open(vfs.clone(), Path::new("/db"), &schema, opts.clone()).unwrap();
    store.hold_log_after(0);
    let round = |store: &Store, w: &mut World| {
        for _ in 0..5 {
            commit(store, w);
        }
        let image = store.begin_checkpoint(w).unwrap();
        store.finish_checkpoint(&image).unwrap();
    };
    for _ in 0..3 {
        round(&store, &mut w);
    }
    let held = list_segments(fs.as_ref(), Path::new("/db/wal_archive")).unwrap();
    assert!(held.len() >= 2, "held segments are kept: {held:?}");
    store.hold_log_after(u64::MAX);
    round(&store, &mut w);
    let left = list_segments(fs.as_ref(), Path::new("/db/wal_archive")).unwrap();
    assert!(left.is_empty(), "released segments stay: {left:?}");
    drop(store);
    let (_, recovered, _) = Store::open(vfs, Path::new("/db"), &schema, opts).unwrap();
    assert_eq!(recovered.seq(), 20);
}
