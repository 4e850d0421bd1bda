//! Durable databases: commits survive a reopen, checkpoints archive the log,
//! the directory is locked, fail-stop on a broken disk, power loss at every
//! sync point through the simulated file system.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use ecsdb::storage::fs::{Faults, SimFs};
use ecsdb::{Database, DatabaseConfig, DbError, EXAMPLE_SCHEMA};
use serde_json::json;

fn config(dir: &std::path::Path) -> DatabaseConfig {
    let mut c = DatabaseConfig::default();
    c.database.data_dir = dir.to_path_buf();
    c.persistence.snapshot_interval_secs = 3600;
    c.persistence.snapshot_interval_ops = 0;
    c
}

fn open(dir: &std::path::Path) -> Database {
    Database::builder().config(config(dir)).schema_toml(EXAMPLE_SCHEMA).unwrap().enable_persistence().build().unwrap()
}

fn spawn_player(db: &Database, level: u32) -> ecsdb::EntityId {
    db.write(|t| {
        t.create_entity_json(&json!({"entities": {}, "player": {"level": level, "name": format!("p{level}")}}))
    })
    .unwrap()
    .0
}

#[test]
fn commits_survive_reopen_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    {
        let db = open(dir.path());
        for i in 0..50 {
            ids.push(spawn_player(&db, i));
        }
        let cp = db.checkpoint().unwrap();
        assert_eq!(cp.seq, 50);
        for i in 50..80 {
            ids.push(spawn_player(&db, i));
        }
        db.write(|t| t.delete(ids[0])).unwrap();
        // No close(): the drop is as good as a crash for the log.
    }
    let db = open(dir.path());
    let report = db.recovery_report().unwrap().clone();
    assert_eq!(report.snapshot.as_ref().map(|s| s.1), Some(50));
    assert_eq!(report.records_replayed, 31);
    assert_eq!(db.version(), 81);
    assert!(db.get_json(ids[0]).is_err());
    assert_eq!(db.get_json(ids[79]).unwrap()["components"]["player"]["level"], 79);
    assert!(db.read().check_integrity().is_empty());
    // Ids of deleted entities stay dead across restarts.
    let fresh = db.create_entity().unwrap();
    assert_ne!(fresh, ids[0]);
    assert!(db.checkpoint().unwrap().segments_archived >= 1);
    db.close().unwrap();
    assert!(std::fs::read_dir(dir.path().join("wal_archive")).unwrap().count() >= 1);
}

#[test]
fn a_second_process_is_refused_with_the_holder_pid() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let err = Database::builder()
        .config(config(dir.path()))
        .schema_toml(EXAMPLE_SCHEMA)
        .unwrap()
        .enable_persistence()
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("is already open in this process"), "{err}");
    // Another process holding it is named by its pid.
    drop(db);
    let mut child = std::process::Command::new("sh")
        .args(["-c", &format!("exec flock -n {} sleep 30", dir.path().join("LOCK").display())])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::fs::write(dir.path().join("LOCK"), format!("{}\n", child.id())).unwrap();
    let err = Database::builder()
        .config(config(dir.path()))
        .schema_toml(EXAMPLE_SCHEMA)
        .unwrap()
        .enable_persistence()
        .build()
        .unwrap_err();
    let _ = child.kill();
    let _ = child.wait();
    assert!(err.to_string().contains(&format!("in use by another process (pid {})", child.id())), "{err}");
}

#[test]
fn a_different_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path());
        spawn_player(&db, 1);
        db.close().unwrap();
    }
    let other = "[tables.x]\n[[tables.x.fields]]\nname = \"v\"\ntype = \"u8\"\n";
    let err = Database::builder()
        .config(config(dir.path()))
        .schema_toml(other)
        .unwrap()
        .enable_persistence()
        .build()
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("a data directory keeps one schema"), "{msg}");
    // The differences are named, not two fingerprints or versions.
    assert!(msg.contains("table `player` is only in the directory's schema"), "{msg}");
    assert!(msg.contains("table `x` is only in the given schema"), "{msg}");
    // Without a schema, the directory opens with its own.
    let db = Database::builder().config(config(dir.path())).enable_persistence().build().unwrap();
    assert_eq!(db.read().entity_count(), 1);
    assert!(db.schema().table_id("player").is_some());
}

fn sim_db(fs: &SimFs) -> Database {
    let mut c = config(std::path::Path::new("/db"));
    c.persistence.wal_segment_mb = 1;
    Database::builder()
        .config(c)
        .schema_toml(EXAMPLE_SCHEMA)
        .unwrap()
        .file_system(Arc::new(fs.clone()))
        .enable_persistence()
        .build()
        .unwrap()
}

#[test]
fn fsync_failure_stops_writes_but_serves_reads() {
    let fs = SimFs::new();
    let db = sim_db(&fs);
    let a = spawn_player(&db, 1);
    fs.set_faults(Faults { fail_syncs: true, ..Faults::default() });
    let err = db.write(|t| t.set_json(a, "player", &json!({"level": 2}))).unwrap_err();
    assert!(matches!(err, DbError::FailStop(_)), "{err}");
    fs.set_faults(Faults::default());
    assert!(matches!(db.create_entity().unwrap_err(), DbError::FailStop(_)));
    assert!(db.get_json(a).is_ok());
}

#[test]
fn disk_full_refuses_the_commit_and_changes_nothing() {
    let fs = SimFs::new();
    let db = sim_db(&fs);
    spawn_player(&db, 1);
    let before = db.read().canonical_state();
    fs.set_faults(Faults { disk_full_after_bytes: Some(10), ..Faults::default() });
    let err = db.write(|t| t.create_entity_json(&json!({"entities": {}, "inventory": {}}))).unwrap_err();
    assert!(err.to_string().contains("no space left"), "{err}");
    assert_eq!(db.read().canonical_state(), before);
    assert!(db.get_json(db.read().entities().iter().next().unwrap()).is_ok());
    // The log is in fail-stop: the database says so (health reads this),
    // and refuses writes up front.
    let why = db.fail_stopped().expect("the database must report the log's fail-stop");
    assert!(why.contains("no space left"), "{why}");
    fs.set_faults(Faults::default());
    assert!(matches!(db.create_entity().unwrap_err(), DbError::FailStop(_)));
}

/// Power cut at every sync point: whatever survives is exactly the state of
/// some commit at or after the last acknowledged one.
#[test]
fn power_loss_at_every_sync_point() {
    // Reference run: state after each commit.
    let reference = {
        let fs = SimFs::new();
        let db = sim_db(&fs);
        let mut states = vec![db.read().canonical_state()];
        for i in 0..12u32 {
            workload_step(&db, i).unwrap();
            states.push(db.read().canonical_state());
        }
        states
    };
    let mut cut_points = 0;
    for crash_after_syncs in 1..80u64 {
        for torn in [None, Some(1), Some(4)] {
            let fs = SimFs::new();
            let db = sim_db(&fs);
            fs.set_faults(Faults { power_cut_after_syncs: Some(crash_after_syncs), ..Faults::default() });
            let mut acked = 0u64;
            let mut died = false;
            for i in 0..12u32 {
                if let Ok(seq) = workload_step(&db, i) {
                    acked = seq;
                } else {
                    died = true;
                    break;
                }
            }
            drop(db);
            if !died {
                continue; // the workload finished before this sync point
            }
            cut_points += 1;
            fs.crash(torn);
            let db = sim_db(&fs);
            let seq = db.version();
            assert!(
                seq >= acked,
                "crash after {crash_after_syncs} syncs ({torn:?}): lost acknowledged commit {acked} (recovered {seq})"
            );
            assert_eq!(db.read().canonical_state(), reference[seq as usize], "state at {seq} differs");
            assert!(db.read().check_integrity().is_empty());
        }
    }
    assert!(cut_points > 60, "only {cut_points} crash points were exercised");
}

/// One commit (and every fifth step a checkpoint first); the acknowledged
/// sequence number, or the error that stopped it.
fn workload_step(db: &Database, i: u32) -> ecsdb::Result<u64> {
    if i % 5 == 4 {
        db.checkpoint()?;
    }
    let ((), info) = db.write(|t| {
        let e = t.create_entity_json(&json!({"entities": {}, "player": {"level": i}}))?;
        t.insert_json(e, "inventory", &json!({"items": vec![i; 64]}))
    })?;
    Ok(info.seq)
}

/// A data directory removed under a running database: the next sync finds
/// its log segment deleted, so the commit is not acknowledged as durable and
/// the database stops taking writes (reads go on).
#[test]
fn a_removed_data_directory_is_never_acknowledged_as_durable() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let a = spawn_player(&db, 1);
    std::fs::remove_dir_all(dir.path()).unwrap();
    let err = db.write(|t| t.set_json(a, "player", &json!({"level": 2}))).unwrap_err();
    assert!(err.to_string().contains("deleted while open"), "{err}");
    assert!(db.fail_stopped().is_some());
    assert!(matches!(db.create_entity().unwrap_err(), DbError::FailStop(_)));
    assert!(db.get_json(a).is_ok());
}

/// An existing data directory others could read is made 0700 on open.
#[test]
fn an_open_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = open(&d);
    assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700);
    drop(db);
}

/// A data directory shared with other files (a home directory, `/tmp`) keeps
/// its mode: only a directory holding nothing but the database is changed.
#[test]
fn a_shared_directory_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("home");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("notes.txt"), "mine").unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = open(&d);
    assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o755);
    drop(db);
}
