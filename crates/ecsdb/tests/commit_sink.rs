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
