//! The commit seam: sinks see every commit in order, can refuse one (it is
//! rolled back), and a durability failure puts the database in fail-stop.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use ecsdb::{ChangeSet, CommitSink, Database, DbError, World};
use serde_json::json;

#[derive(Debug, Default)]
struct Recorder {
    log: Mutex<Vec<(u64, Vec<u8>)>>,
    refuse_next: Mutex<bool>,
    fail_durable: Mutex<bool>,
}

#[derive(Debug)]
struct Shared(Arc<Recorder>);

impl CommitSink for Shared {
    fn append(&self, seq: u64, changes: &ChangeSet) -> Result<(), String> {
        if std::mem::take(&mut *self.0.refuse_next.lock().unwrap()) {
            return Err("disk full".into());
        }
        self.0.log.lock().unwrap().push((seq, changes.as_bytes().to_vec()));
        Ok(())
    }
    fn wait_durable(&self, _seq: u64) -> Result<(), String> {
        if *self.0.fail_durable.lock().unwrap() { Err("fdatasync: EIO".into()) } else { Ok(()) }
    }
}

/// `n` entities with a transform each, in one commit.
fn spawn_movers(db: &Database, n: i32) {
    db.write(|t| {
        for i in 0..n {
            t.create_entity_json(&json!({"entities": {}, "transform": {"position": [i, 0, 0]}}))?;
        }
        Ok(())
    })
    .unwrap();
}

/// A transaction that moves every transform in place by `dy` (not committed).
fn move_all(db: &Database, dy: f32) -> ecsdb::Transaction<'_> {
    let pos = db.schema().field_ref("transform", "position").unwrap();
    let mut txn = db.transaction().unwrap();
    txn.for_each_chunk_mut(&[pos.table], |chunk| {
        for p in chunk.write::<[f32; 3]>(pos)? {
            p[1] += dy;
        }
        Ok(())
    })
    .unwrap();
    txn
}

#[test]
fn replaying_the_recorded_log_rebuilds_the_state() {
    let rec = Arc::new(Recorder::default());
    let db = Database::builder()
        .schema_toml(ecsdb::EXAMPLE_SCHEMA)
        .unwrap()
        .commit_sink(Box::new(Shared(rec.clone())))
        .build()
        .unwrap();
    for i in 0..20u32 {
        db.write(|t| {
            let e = t.create_entity_json(&json!({"entities": {}, "player": {"level": i}}))?;
            if i % 3 == 0 {
                t.delete(e)?;
            }
            Ok(())
        })
        .unwrap();
    }
    // A refused commit is rolled back and not logged.
    *rec.refuse_next.lock().unwrap() = true;
    let before = db.read().canonical_state();
    let err = db.create_entity().unwrap_err();
    assert!(matches!(err, DbError::Sink(_)), "{err}");
    assert_eq!(db.read().canonical_state(), before);

    let log = rec.log.lock().unwrap().clone();
    assert_eq!(log.len(), 20);
    assert!(log.windows(2).all(|w| w[1].0 == w[0].0 + 1));
    let mut replica = World::new(db.schema().clone());
    for (seq, bytes) in log {
        replica.apply(seq, &ChangeSet::decode(&bytes).unwrap()).unwrap();
    }
    assert_eq!(replica.canonical_state(), db.read().canonical_state());

    // Durability failure: fail-stop, reads still served.
    *rec.fail_durable.lock().unwrap() = true;
    let err = db.create_entity().unwrap_err();
    assert!(matches!(err, DbError::FailStop(_)), "{err}");
    assert!(db.fail_stopped().unwrap().contains("EIO"));
    assert!(matches!(db.transaction().unwrap_err(), DbError::FailStop(_)));
    assert!(db.read().entity_count() > 0);
}

#[test]
fn memory_ceiling_refuses_commits_and_changes_nothing() {
    let cfg = ecsdb::DatabaseConfig::from_toml_str("[memory]\ninitial_capacity_mb = 1\nmax_capacity_mb = 1\n").unwrap();
    let db = Database::builder().config(cfg).schema_toml(ecsdb::EXAMPLE_SCHEMA).unwrap().build().unwrap();
    let inv = db.schema().table_id("inventory").unwrap();
    let ent = db.schema().table_id("entities").unwrap();
    let row = vec![0u8; 512];
    let mut committed = 0;
    let err = loop {
        let r = db.write(|t| {
            for _ in 0..100 {
                let e = t.create_entity()?;
                t.insert_row(e, ent, &[0; 8])?;
                t.insert_row(e, inv, &row)?;
            }
            Ok(())
        });
        match r {
            Ok(_) => committed += 100,
            Err(e) => break e,
        }
        assert!(committed < 10_000, "the ceiling never triggered");
    };
    assert!(err.to_string().contains("over the memory ceiling of 1048576 bytes"), "{err}");
    assert_eq!(db.read().entity_count(), committed);
    assert!(db.read().data_bytes() <= 1 << 20);
    // Freeing memory is always allowed, and then writes fit again.
    let some = db.read().entities().iter().take(200).collect::<Vec<_>>();
    db.write(|t| some.iter().try_for_each(|&e| t.delete(e))).unwrap();
    db.write(|t| {
        let e = t.create_entity()?;
        t.insert_row(e, ent, &[0; 8])?;
        t.insert_row(e, inv, &row)
    })
    .unwrap();
}

/// A sink after the commit log refuses a commit: the log must give the
/// record back, so the next commit follows without a gap and recovery never
/// replays the refused commit.
#[test]
fn a_commit_refused_after_the_log_append_is_taken_back_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Arc::new(Recorder::default());
    let db = Database::builder()
        .schema_toml(ecsdb::EXAMPLE_SCHEMA)
        .unwrap()
        .data_dir(dir.path())
        .commit_sink(Box::new(Shared(rec.clone())))
        .build()
        .unwrap();
    let keep = db.create_entity().unwrap();
    *rec.refuse_next.lock().unwrap() = true;
    let err = db.create_entity().unwrap_err();
    assert!(matches!(err, DbError::Sink(_)), "{err}");
    // The next commit is logged right after the first: no gap, no fail-stop.
    let second = db.create_entity().unwrap();
    assert_eq!(db.version(), 2);
    assert!(db.fail_stopped().is_none());
    let want = db.read().canonical_state();
    drop(db);
    let db = Database::builder().schema_toml(ecsdb::EXAMPLE_SCHEMA).unwrap().data_dir(dir.path()).build().unwrap();
    assert_eq!(db.read().canonical_state(), want);
    assert!(db.read().contains(keep) && db.read().contains(second));
    assert_eq!(db.read().entity_count(), 2);
}

/// In-place column writes are captured as images; a commit refused after
/// they were turned into change-set entries must still restore them.
#[test]
fn a_refused_commit_restores_in_place_writes() {
    let rec = Arc::new(Recorder::default());
    let db = Database::builder()
        .schema_toml(ecsdb::EXAMPLE_SCHEMA)
        .unwrap()
        .commit_sink(Box::new(Shared(rec.clone())))
        .build()
        .unwrap();
    spawn_movers(&db, 100);
    let before = db.read().canonical_state();
    *rec.refuse_next.lock().unwrap() = true;
    let txn = move_all(&db, 5.0);
    assert!(matches!(txn.commit().unwrap_err(), DbError::Sink(_)));
    assert_eq!(db.read().canonical_state(), before);
}

/// The change-set limit the log reader enforces is enforced before commit.
#[test]
fn a_transaction_over_the_size_limit_is_refused_and_changes_nothing() {
    let cfg = ecsdb::DatabaseConfig::from_toml_str("[transactions]\nmax_transaction_mb = 1\n").unwrap();
    let db = Database::builder().config(cfg).schema_toml(ecsdb::EXAMPLE_SCHEMA).unwrap().build().unwrap();
    let inv = db.schema().table_id("inventory").unwrap();
    let row = vec![0u8; 512];
    let before = db.read().canonical_state();
    let err = db
        .write(|t| {
            for _ in 0..4000 {
                let e = t.create_entity()?;
                t.insert_row(e, inv, &row)?;
            }
            Ok(())
        })
        .unwrap_err();
    assert!(err.to_string().contains("transaction too large"), "{err}");
    assert!(err.to_string().contains("limit of 1048576 bytes"), "{err}");
    assert_eq!(db.read().canonical_state(), before);
    assert_eq!(db.version(), 0);
    // In-place writes that push a commit over the limit are refused at commit.
    db.write(|t| {
        for i in 0..20_000 {
            t.create_entity_json(&json!({"entities": {}, "transform": {"position": [i, 0, 0]}}))?;
        }
        Ok(())
    })
    .unwrap_err();
    let cfg = ecsdb::DatabaseConfig::from_toml_str("[transactions]\nmax_transaction_mb = 1\n").unwrap();
    let db = Database::builder().config(cfg).schema_toml(ecsdb::EXAMPLE_SCHEMA).unwrap().build().unwrap();
    for _ in 0..10 {
        spawn_movers(&db, 10_000);
    }
    let before = db.read().canonical_state();
    let err = move_all(&db, 1.0).commit().unwrap_err();
    assert!(err.to_string().contains("transaction too large"), "{err}");
    assert_eq!(db.read().canonical_state(), before);
}

/// The operation that pushes a change set over the limit succeeds on its
/// own; the commit is then refused — and must roll back, leaving no
/// transaction behind and nothing visible (this once left the transaction
/// open: every later write failed and a checkpoint saved the refused data).
#[test]
fn a_commit_refused_for_size_leaves_no_transaction_behind() {
    let schema = "[tables.blob]\n[[tables.blob.fields]]\nname = \"data\"\ntype = \"bytes\"\n";
    let dir = tempfile::tempdir().unwrap();
    let cfg = ecsdb::DatabaseConfig::from_toml_str("[transactions]\nmax_transaction_mb = 1\n").unwrap();
    let db = Database::builder().config(cfg).schema_toml(schema).unwrap().data_dir(dir.path()).build().unwrap();
    let before = db.read().canonical_state();
    for size in [(1 << 20) - 40, (1 << 20) - 20, (1 << 20) - 10, 1 << 20] {
        let hex = "ab".repeat(size);
        let r = db.write(|t| t.create_entity_json(&json!({"blob": {"data": hex}})));
        if let Err(e) = r {
            assert!(e.to_string().contains("transaction too large"), "{size}: {e}");
            assert!(db.read().canonical_state() == before, "{size}: the refused data is visible");
            assert!(!db.read().in_transaction(), "{size}: the refused transaction is still open");
        } else {
            db.write(|t| {
                let ids: Vec<_> = t.entities().iter().collect();
                ids.into_iter().try_for_each(|e| t.delete(e))
            })
            .unwrap();
        }
    }
    // Writes go on, and a checkpoint and a restart hold no refused data.
    let ok = db.create_entity().unwrap();
    db.checkpoint().unwrap();
    drop(db);
    let db = Database::builder().data_dir(dir.path()).build().unwrap();
    assert_eq!(db.read().entity_count(), 1);
    assert!(db.read().contains(ok));
}
