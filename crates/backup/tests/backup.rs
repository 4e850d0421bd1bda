//! Backups, restore and point-in-time recovery against a local directory
//! and a real local S3 server (moto), the corruption table, retention and
//! an unreachable target.
#![allow(clippy::unwrap_used, clippy::many_single_char_names)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ecsdb_backup::manager::quiet;
use ecsdb_backup::{BackupError, BackupSettings, Kind, Manager, Point, Request, StorageSettings, Target};
use support::{commit_n, open_db};

fn settings() -> BackupSettings {
    BackupSettings { verify_after: true, ..BackupSettings::default() }
}

fn checksum_of(dir: &std::path::Path) -> (u64, String) {
    let db = ecsdb::Database::open(dir).unwrap();
    let s = ecsdb_backup::state::summarize(&db.read());
    (db.version(), s.checksum)
}

fn req(backup: Option<&str>, point: Point, dir: &std::path::Path) -> Request {
    Request { backup: backup.map(String::from), point, data_dir: dir.to_path_buf(), force: false }
}

/// Full + incremental chain, list, verify (deep), restore at a backup, at
/// the newest state and at a sequence; refusals.
fn chain_scenario(target: &Arc<Target>) {
    let work = tempfile::tempdir().unwrap();
    let db = open_db(&work.path().join("db"));
    let m = Manager::new(target.clone(), settings());
    commit_n(&db, 50);
    let full = m.create(&db, Kind::Full, &quiet).unwrap();
    assert_eq!((full.kind, full.start_seq, full.end_seq, full.entity_count), (Kind::Full, 50, 50, 50));
    assert!(full.id.starts_with("backup_"));
    commit_n(&db, 20);
    let inc1 = m.create(&db, Kind::Incremental, &quiet).unwrap();
    assert_eq!((inc1.start_seq, inc1.end_seq, inc1.parent.as_deref()), (50, 70, Some(full.id.as_str())));
    assert!(inc1.files.iter().all(|f| f.name.starts_with("log/")));
    commit_n(&db, 10);
    let inc2 = m.create(&db, Kind::Incremental, &quiet).unwrap();
    assert_eq!((inc2.start_seq, inc2.end_seq), (70, 80));
    let expected_80 = ecsdb_backup::state::summarize(&db.read()).checksum;
    assert_eq!(inc2.state_checksum, expected_80);

    let listed = m.list().unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|l| l.manifest.is_some() && l.problem.is_none()));

    for r in ecsdb_backup::verify::verify_all(&m, true, &quiet).unwrap() {
        assert!(r.ok, "{r:?}");
        if r.id != "archive" {
            assert_eq!(r.deep, Some(true));
        }
    }

    // At a backup: its exact state, original ids kept.
    let out = work.path().join("r1");
    let o = ecsdb_backup::restore::restore(target, &req(Some(&inc1.id), Point::Latest, &out), &quiet).unwrap();
    assert_eq!((o.seq, o.entities, o.base_seq), (70, 70, 50));
    assert_eq!(checksum_of(&out), (70, inc1.state_checksum.clone()));
    // The newest state there is.
    let out = work.path().join("r2");
    let o = ecsdb_backup::restore::restore(target, &req(None, Point::Latest, &out), &quiet).unwrap();
    assert_eq!(o.seq, 80);
    assert_eq!(checksum_of(&out), (80, expected_80));
    // A sequence inside the chain.
    let out = work.path().join("r3");
    let o = ecsdb_backup::restore::restore(target, &req(None, Point::Seq(65), &out), &quiet).unwrap();
    assert_eq!((o.seq, o.entities), (65, 65));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&out), 0o700);
        for e in std::fs::read_dir(out.join("snapshots")).unwrap() {
            assert_eq!(mode(&e.unwrap().path()), 0o600);
        }
    }
    // Before the named backup's base: refused (not silently the base).
    let out = work.path().join("r5");
    let e = ecsdb_backup::restore::restore(target, &req(Some(&inc1.id), Point::Seq(10), &out), &quiet).unwrap_err();
    assert!(e.to_string().contains("before backup"), "{e}");
    let e = ecsdb_backup::restore::restore(target, &req(Some(&inc1.id), Point::Time(1000), &out), &quiet).unwrap_err();
    assert!(e.to_string().contains("before backup"), "{e}");
    assert!(!out.exists());
    // After the named backup, within its chain: exactly there.
    let o = ecsdb_backup::restore::restore(target, &req(Some(&inc1.id), Point::Seq(60), &out), &quiet).unwrap();
    assert_eq!(o.seq, 60);
    // Beyond the log: refused, nothing written.
    let out = work.path().join("r4");
    let e = ecsdb_backup::restore::restore(target, &req(None, Point::Seq(500), &out), &quiet).unwrap_err();
    assert!(e.to_string().contains("sequence 500 is not recoverable"), "{e}");
    assert!(!out.exists());
    // Into a directory that holds something: refused, then --force moves it aside.
    let out = work.path().join("r1");
    let e = ecsdb_backup::restore::restore(target, &req(Some(&full.id), Point::Latest, &out), &quiet).unwrap_err();
    assert!(e.to_string().contains("is not empty"), "{e}");
    assert_eq!(checksum_of(&out).0, 70);
    let mut r = req(Some(&full.id), Point::Latest, &out);
    r.force = true;
    let o = ecsdb_backup::restore::restore(target, &r, &quiet).unwrap();
    assert_eq!(o.seq, 50);
    assert!(o.moved_aside.as_ref().unwrap().join("snapshots").is_dir());
    // A second --force in the same second keeps both set-aside folders apart.
    let o2 = ecsdb_backup::restore::restore(target, &r, &quiet).unwrap();
    assert_ne!(o2.moved_aside, o.moved_aside);
    assert!(o.moved_aside.as_ref().unwrap().join("snapshots").is_dir());
    assert_eq!(checksum_of(&out), (50, full.state_checksum.clone()));
    // Unknown and malformed ids.
    assert!(matches!(m.manifest("backup_1"), Err(BackupError::NotFound(_))));
    assert!(matches!(m.manifest("../../etc"), Err(BackupError::NotFound(_))));

    // Deleting a backup others build on needs --force, which takes them too.
    let e = m.delete(&inc1.id, false).unwrap_err();
    assert!(e.to_string().contains(&inc2.id), "{e}");
    assert_eq!(m.list().unwrap().len(), 3);
    let gone = m.delete(&inc1.id, true).unwrap();
    assert_eq!(gone.len(), 2);
    assert_eq!(m.list().unwrap().len(), 1);
    // An incremental now builds on the full backup again.
    let inc = m.create(&db, Kind::Incremental, &quiet).unwrap();
    assert_eq!((inc.start_seq, inc.end_seq), (50, 80));
    db.close().unwrap();
}

#[test]
fn local_directory_chain() {
    let t = tempfile::tempdir().unwrap();
    let target =
        Arc::new(Target::open(t.path().join("backups").to_str().unwrap(), &StorageSettings::default()).unwrap());
    chain_scenario(&target);
}

#[test]
fn s3_chain() {
    let Some(s3) = support::s3("chain") else { return };
    let target = Arc::new(Target::open("s3://chain/prod/eu-1", &support::s3_settings(&s3)).unwrap());
    chain_scenario(&target);
    // Everything went under the prefix.
    assert!(!target.list("backups/").unwrap().is_empty());
    let root = Arc::new(Target::open("s3://chain", &support::s3_settings(&s3)).unwrap());
    assert!(root.list("backups/").unwrap().is_empty());
    assert!(!root.list("prod/eu-1/backups/").unwrap().is_empty());
    // Large objects go up in parts (5 MiB here): the bytes come back whole.
    let mut settings = support::s3_settings(&s3);
    settings.s3.part_size_mb = Some(5);
    let parts = Target::open("s3://chain/big", &settings).unwrap();
    let data: Vec<u8> = (0..(12u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    parts.put("blob", data.clone()).unwrap();
    assert_eq!(parts.get("blob").unwrap(), data);
    assert_eq!(parts.list("").unwrap()[0].size, 12 << 20);
}

/// Continuous archiving: commits reach the target within the interval, and
/// the archive restores to any sequence and to a time.
fn archive_scenario(target: &Arc<Target>) {
    let work = tempfile::tempdir().unwrap();
    let db = open_db(&work.path().join("db"));
    let m = Manager::new(target.clone(), settings());
    commit_n(&db, 5);
    m.create(&db, Kind::Full, &quiet).unwrap();
    let s = BackupSettings { archive_interval_ms: 20, archive_rpo_ms: 1000, archive_merge_chunks: 4, ..settings() };
    let archiver = ecsdb_backup::Archiver::start(&db, target.clone(), &s).unwrap();
    let mut after: Vec<(u64, u64)> = Vec::new(); // (seq, unix ms just after its commit)
    for _ in 0..12 {
        commit_n(&db, 1);
        after.push((db.version(), now_ms()));
        std::thread::sleep(Duration::from_millis(40));
        if db.version() == 11 {
            // A checkpoint in between: its segments move, the archiver follows.
            db.checkpoint().unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while archiver.status().shipped_seq < db.version() {
        assert!(Instant::now() < deadline, "archiving stalled: {:?}", archiver.status());
        std::thread::sleep(Duration::from_millis(10));
    }
    let st = archiver.status();
    assert_eq!(st.lag_commits, 0);
    assert!(st.last_error.is_none(), "{st:?}");
    assert!(st.snapshots_shipped >= 1, "{st:?}");
    // Small chunks were merged into larger ones.
    assert!(st.merges >= 1, "{st:?}");
    assert!(ecsdb_backup::archive::list_chunks(target).unwrap().len() < 12, "{st:?}");
    archiver.stop();
    let r = ecsdb_backup::archive::verify(target, &quiet).unwrap();
    assert!(r.ok, "{r:?}");

    // Every sequence from the first backup on is reachable exactly.
    for n in [5, 6, 9, 11, 12, 17] {
        let out = work.path().join(format!("seq{n}"));
        let o = ecsdb_backup::restore::restore(target, &req(None, Point::Seq(n), &out), &quiet).unwrap();
        assert_eq!(o.seq, n);
        assert_eq!(checksum_of(&out).0, n);
    }
    // A time between two commits restores the earlier one.
    let (k, t) = after[6];
    let out = work.path().join("time");
    let o = ecsdb_backup::restore::restore(target, &req(None, Point::Time(t + 5), &out), &quiet).unwrap();
    assert_eq!(o.seq, k, "{o:?}");
    // Before the first backup: nothing to restore from.
    let out = work.path().join("early");
    let e = ecsdb_backup::restore::restore(target, &req(None, Point::Time(1000), &out), &quiet).unwrap_err();
    assert!(e.to_string().contains("no backup or archived snapshot from before"), "{e}");
    // A restored copy is a new database: it may not archive into the original's log.
    let copy = open_db_at(&work.path().join("seq12"));
    let e = ecsdb_backup::Archiver::start(&copy, target.clone(), &s).unwrap_err();
    assert!(e.to_string().contains("archive to another prefix"), "{e}");
    db.close().unwrap();
}

fn open_db_at(dir: &std::path::Path) -> ecsdb::Database {
    ecsdb::Database::open(dir).unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[test]
fn local_directory_archive_and_pitr() {
    let t = tempfile::tempdir().unwrap();
    let target = Arc::new(Target::open(t.path().to_str().unwrap(), &StorageSettings::default()).unwrap());
    archive_scenario(&target);
}

#[test]
fn s3_archive_and_pitr() {
    let Some(s3) = support::s3("archive") else { return };
    let target = Arc::new(Target::open("s3://archive/db1", &support::s3_settings(&s3)).unwrap());
    archive_scenario(&target);
}

#[test]
fn retention_keeps_the_newest_full_backups_with_their_incrementals() {
    let t = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let target = Arc::new(Target::open(t.path().to_str().unwrap(), &StorageSettings::default()).unwrap());
    let db = open_db(&work.path().join("db"));
    let m = Manager::new(target, BackupSettings { retention: 2, verify_after: false, ..BackupSettings::default() });
    let mut fulls = Vec::new();
    for _ in 0..4 {
        commit_n(&db, 3);
        fulls.push(m.create(&db, Kind::Full, &quiet).unwrap().id);
        commit_n(&db, 1);
        m.create(&db, Kind::Incremental, &quiet).unwrap();
    }
    assert_eq!(m.list().unwrap().len(), 8);
    let gone = m.apply_retention().unwrap();
    assert_eq!(gone.len(), 4, "{gone:?}");
    let left: Vec<String> = m.list().unwrap().into_iter().map(|l| l.id).collect();
    assert_eq!(left.len(), 4);
    assert!(left.contains(&fulls[2]) && left.contains(&fulls[3]), "{left:?}");
    assert!(!left.contains(&fulls[0]) && !left.contains(&fulls[1]));
    db.close().unwrap();
}

#[test]
fn an_unreachable_target_fails_clearly_and_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let db = open_db(&work.path().join("db"));
    commit_n(&db, 3);
    let mut s = StorageSettings::default();
    s.s3.endpoint = Some("http://127.0.0.1:9".into());
    s.s3.max_retries = Some(1);
    s.s3.retry_timeout_secs = Some(2);
    s.s3.credentials = Some(("k".into(), "s".into()));
    let target = Arc::new(Target::open("s3://nowhere/x", &s).unwrap());
    let m = Manager::new(target, settings());
    let e = m.create(&db, Kind::Full, &quiet).unwrap_err();
    assert!(matches!(e, BackupError::Target { .. }), "{e:?}");
    assert!(e.to_string().contains("s3://nowhere/x"), "{e}");
    // The database carries on as before.
    commit_n(&db, 1);
    assert_eq!(db.version(), 4);
    db.close().unwrap();
    drop(db);
    assert_eq!(checksum_of(&work.path().join("db")).0, 4);
}

/// A gap in the archived log is an error (never a silent stop); a snapshot
/// copied in from another archive is never used; a wiped target is noticed
/// and the archive starts again from a snapshot.
#[test]
fn gaps_foreign_snapshots_and_a_wiped_target() {
    let t = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let target = Arc::new(Target::open(t.path().join("a").to_str().unwrap(), &StorageSettings::default()).unwrap());
    let db = open_db(&work.path().join("db"));
    let s = BackupSettings { archive_interval_ms: 20, archive_merge_chunks: 100_000, ..settings() };
    commit_n(&db, 3);
    db.checkpoint().unwrap();
    let archiver = ecsdb_backup::Archiver::start(&db, target.clone(), &s).unwrap();
    let wait = |a: &ecsdb_backup::Archiver| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while a.status().shipped_seq < db.version() || a.status().snapshots_shipped == 0 {
            assert!(Instant::now() < deadline, "{:?}", a.status());
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    for _ in 0..6 {
        commit_n(&db, 2);
        wait(&archiver);
    }
    archiver.stop();
    let chunks = ecsdb_backup::archive::list_chunks(&target).unwrap();
    assert!(chunks.len() >= 4, "{chunks:?}");
    // A chunk in the middle goes missing.
    let gone = &chunks[chunks.len() / 2];
    target.delete(&gone.key).unwrap();
    let out = work.path().join("r");
    for point in [Point::Latest, Point::Time(u64::MAX / 2)] {
        let e = ecsdb_backup::restore::restore(&target, &req(None, point, &out), &quiet).unwrap_err();
        assert!(e.to_string().contains("are missing"), "{e}");
        assert!(!out.exists());
    }
    // Up to the gap is still possible, and said so.
    let o = ecsdb_backup::restore::restore(&target, &req(None, Point::Seq(gone.first - 1), &out), &quiet).unwrap();
    assert_eq!(o.seq, gone.first - 1);
    let r = ecsdb_backup::archive::verify(&target, &quiet).unwrap();
    assert!(r.problems.iter().any(|p| p.contains("are missing")), "{r:?}");

    // Another database's archived snapshot (and its record) copied in.
    let t2 = tempfile::tempdir().unwrap();
    let other_target = Arc::new(Target::open(t2.path().to_str().unwrap(), &StorageSettings::default()).unwrap());
    let other = open_db(&work.path().join("other"));
    commit_n(&other, 40);
    other.checkpoint().unwrap();
    let a2 = ecsdb_backup::Archiver::start(&other, other_target.clone(), &s).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while a2.status().snapshots_shipped == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    a2.stop();
    for o in other_target.list("archive/snapshots/").unwrap() {
        let key = o.key.replace("00000000000000000040-", "00000000000000000099-");
        target.put(&key, other_target.get(&o.key).unwrap()).unwrap();
    }
    let r = ecsdb_backup::archive::verify(&target, &quiet).unwrap();
    assert!(r.problems.iter().any(|p| p.contains("another database") || p.contains("describes sequence")), "{r:?}");
    let out = work.path().join("r2");
    let o = ecsdb_backup::restore::restore(&target, &req(None, Point::Seq(gone.first - 1), &out), &quiet).unwrap();
    assert_eq!(o.seq, gone.first - 1);
    assert!(o.base.starts_with("archived snapshot 3"), "{o:?}");

    // The log right after the oldest base goes: verify says so.
    let after_base = chunks.iter().find(|c| c.first <= 4 && c.last >= 4).unwrap();
    target.delete(&after_base.key).unwrap();
    let r = ecsdb_backup::archive::verify(&target, &quiet).unwrap();
    assert!(r.problems.iter().any(|p| p.contains("after the archived snapshot at 3")), "{r:?}");

    // The target is wiped while the archiver runs: it notices, writes its
    // identity and a base again, and the archive restores the newest state.
    std::fs::remove_dir_all(t.path().join("a")).unwrap();
    std::fs::create_dir_all(t.path().join("a")).unwrap();
    let archiver = ecsdb_backup::Archiver::start(&db, target.clone(), &s).unwrap();
    commit_n(&db, 2);
    db.checkpoint().unwrap();
    commit_n(&db, 2);
    std::thread::sleep(Duration::from_millis(100));
    std::fs::remove_dir_all(t.path().join("a/archive")).unwrap();
    commit_n(&db, 2);
    restores_newest(&target, &db, &archiver, &work.path().join("w"));
    // Only the log chunks go (the identity stays): noticed too.
    for c in ecsdb_backup::archive::list_chunks(&target).unwrap() {
        target.delete(&c.key).unwrap();
    }
    commit_n(&db, 2);
    restores_newest(&target, &db, &archiver, &work.path().join("c"));
    archiver.stop();
    db.close().unwrap();
}

/// Wait until the archive restores `db`'s newest state (into `dir`).
fn restores_newest(
    target: &Arc<Target>,
    db: &ecsdb::Database,
    archiver: &ecsdb_backup::Archiver,
    dir: &std::path::Path,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = std::fs::remove_dir_all(dir);
        let r = ecsdb_backup::restore::restore(target, &req(None, Point::Latest, dir), &quiet);
        if r.as_ref().is_ok_and(|o| o.seq == db.version()) {
            return;
        }
        assert!(Instant::now() < deadline, "the archive never came back: {:?} {r:?}", archiver.status());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_silent_target_fails_within_its_time_budget() {
    // Accepts connections, never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let work = tempfile::tempdir().unwrap();
    let db = open_db(&work.path().join("db"));
    commit_n(&db, 1);
    let mut s = StorageSettings::default();
    s.s3.endpoint = Some(format!("http://127.0.0.1:{port}"));
    s.s3.max_retries = Some(1);
    s.s3.retry_timeout_secs = Some(2);
    s.s3.request_timeout_secs = Some(1);
    s.s3.credentials = Some(("k".into(), "s".into()));
    let m = Manager::new(Arc::new(Target::open("s3://b/x", &s).unwrap()), settings());
    let e = m.create(&db, Kind::Full, &quiet).unwrap_err();
    assert!(matches!(e, BackupError::Target { .. }), "{e:?}");
    drop(silent);
    db.close().unwrap();
}

#[test]
fn interrupted_uploads_are_listed_and_cleaned_and_targets_hold_one_database() {
    let t = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let target = Arc::new(Target::open(t.path().to_str().unwrap(), &StorageSettings::default()).unwrap());
    let m = Manager::new(target.clone(), settings());
    // What a kill -9 mid-upload leaves: a temporary file only.
    let stale = t.path().join("backups/backup_1000");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("snapshot.snap#1"), b"partial").unwrap();
    let listed = m.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].manifest.is_none() && listed[0].problem.as_ref().unwrap().contains("incomplete"));
    let r = ecsdb_backup::verify::verify_backup(&m, "backup_1000", false, &quiet);
    assert!(r.problems.iter().any(|p| p.contains("incomplete")), "{r:?}");
    let db = open_db(&work.path().join("db"));
    commit_n(&db, 2);
    m.create(&db, Kind::Full, &quiet).unwrap();
    assert_eq!(m.apply_retention().unwrap(), vec!["backup_1000".to_string()]);
    assert!(!stale.exists());
    // A second database may not back up into the first one's target.
    let other = open_db(&work.path().join("other"));
    commit_n(&other, 1);
    let e = m.create(&other, Kind::Full, &quiet).unwrap_err();
    assert!(e.to_string().contains("holds database"), "{e}");
    // Ids are backup_<digits>[_<digits>] only.
    for bad in ["backup_", "backup_-1", "backup_1_", "backup_a", "x"] {
        assert!(ecsdb_backup::manager::check_id(bad).is_err(), "{bad}");
    }
    assert!(ecsdb_backup::manager::check_id("backup_17_2").is_ok());
    db.close().unwrap();
    other.close().unwrap();
}

fn wait_status(a: &ecsdb_backup::Archiver, what: &str, f: impl Fn(&ecsdb_backup::ArchiveStatus) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = a.status();
        if f(&s) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {s:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A replicated database's archive follows its epochs: a promoted primary
/// continues it only when it ends where the new epoch began (else it would
/// join the former primary's lost commits to the new history), and a
/// primary of an older epoch stops archiving there.
#[test]
fn the_archive_follows_the_primary_of_the_newest_epoch() {
    use ecsdb_backup::Branch;
    let t = tempfile::tempdir().unwrap();
    let target = Arc::new(Target::open(t.path().to_str().unwrap(), &StorageSettings::default()).unwrap());
    let work = tempfile::tempdir().unwrap();
    let db = open_db(&work.path().join("db"));
    let s = BackupSettings { archive_interval_ms: 20, ..settings() };
    let first = Branch { epoch: 1, after_seq: 0 };
    let a = ecsdb_backup::Archiver::start_on_branch(&db, target.clone(), &s, Some(first)).unwrap();
    commit_n(&db, 10);
    wait_status(&a, "commit 10 archived", |s| s.shipped_seq == 10);
    a.abandon();
    assert_eq!(ecsdb_backup::archive::archived_epoch(&target).unwrap(), Some(first));

    // Epoch 2 began after commit 7: commits 8..=10 on the target are not
    // in its history. Refused, reported, retried; nothing shipped.
    commit_n(&db, 2);
    let a = ecsdb_backup::Archiver::start_on_branch(&db, target.clone(), &s, Some(Branch { epoch: 2, after_seq: 7 }))
        .unwrap();
    wait_status(&a, "the refusal", |s| s.last_error.as_deref().is_some_and(|e| e.contains("past commit 7")));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(ecsdb_backup::archive::archived_upto(&target).unwrap(), 10);
    assert_eq!(ecsdb_backup::archive::archived_epoch(&target).unwrap(), Some(first));
    a.abandon();

    // Epoch 2 began after commit 10: it continues the archive and says so.
    let second = Branch { epoch: 2, after_seq: 10 };
    let a = ecsdb_backup::Archiver::start_on_branch(&db, target.clone(), &s, Some(second)).unwrap();
    commit_n(&db, 3);
    wait_status(&a, "commit 15 archived", |s| s.shipped_seq == 15 && s.last_error.is_none());
    assert_eq!(ecsdb_backup::archive::archived_epoch(&target).unwrap(), Some(second));
    // Restarted in the same epoch: it goes on.
    a.stop();
    let a = ecsdb_backup::Archiver::start_on_branch(&db, target.clone(), &s, Some(second)).unwrap();
    commit_n(&db, 1);
    wait_status(&a, "commit 16 archived", |s| s.shipped_seq == 16 && s.last_error.is_none());

    // The former primary (epoch 1) may not archive there any more.
    let old = ecsdb_backup::Archiver::start_on_branch(&db, target.clone(), &s, Some(first)).unwrap();
    wait_status(&old, "the old epoch's refusal", |s| {
        s.last_error.as_deref().is_some_and(|e| e.contains("archived by the primary of epoch 2"))
    });
    old.abandon();

    // A newer primary takes the archive over while this one runs: it stops
    // shipping (within 20 passes) and says why.
    target.put(ecsdb_backup::archive::EPOCH_KEY, br#"{"epoch": 3, "after_seq": 16}"#.to_vec()).unwrap();
    wait_status(&a, "the newer epoch noticed", |s| s.last_error.as_deref().is_some_and(|e| e.contains("epoch 3")));
    commit_n(&db, 2);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ecsdb_backup::archive::archived_upto(&target).unwrap(), 16);
    a.abandon();
    db.close().unwrap();
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else if e.file_name() != "LOCK" {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// `n` commits creating accounts named after `tag` (another history's
/// commits differ from these).
fn commit_tagged(db: &ecsdb::Database, n: u64, tag: &str) {
    for i in 0..n {
        let mut t = db.transaction().unwrap();
        let e = t.create_entity().unwrap();
        t.insert(e, "account", &[ecsdb::Value::U64(1000 + i), ecsdb::Value::Str(format!("{tag} {i}"))]).unwrap();
        t.commit().unwrap();
    }
}

/// After a failover the target holds two histories: the former primary's
/// archived log past where the new epoch began, and the new primary's
/// backups. A restore never joins one to the other (a state no node ever
/// had), and an incremental backup never builds on the other.
#[test]
fn a_restore_never_joins_two_histories() {
    use ecsdb_backup::Branch;
    let t = tempfile::tempdir().unwrap();
    let target = Arc::new(Target::open(t.path().to_str().unwrap(), &StorageSettings::default()).unwrap());
    let work = tempfile::tempdir().unwrap();
    let (pa, pb) = (work.path().join("a"), work.path().join("b"));
    // The first primary: 5 commits, then its replica's copy.
    let a = open_db(&pa);
    commit_n(&a, 5);
    ecsdb_backup::state::database_id(&pa).unwrap(); // one database: the copy shares its id
    // A full backup of the shared history, before the split.
    let m = Manager::new(target.clone(), settings());
    let shared = m.create_on(&a, Kind::Full, &quiet, Some(Branch { epoch: 1, after_seq: 0 })).unwrap();
    assert_eq!(shared.end_seq, 5);
    a.close().unwrap();
    drop(a);
    copy_dir(&pa, &pb);
    let a = open_db(&pa);
    let s = BackupSettings { archive_interval_ms: 20, ..settings() };
    let first = Branch { epoch: 1, after_seq: 0 };
    let second = Branch { epoch: 2, after_seq: 5 };
    let arch = ecsdb_backup::Archiver::start_on_branch(&a, target.clone(), &s, Some(first)).unwrap();
    // The former primary goes on alone to 10, archived with a snapshot at
    // 10 (all lost in the failover).
    commit_n(&a, 5);
    a.checkpoint().unwrap();
    wait_status(&arch, "commit 10 and its snapshot archived", |st| st.shipped_seq == 10 && st.snapshots_shipped >= 1);
    arch.abandon();
    // The promoted replica (epoch 2 after commit 5) writes its own 6..=8
    // and backs up; its archiver refuses the archive (it holds 6..=10).
    let b = open_db(&pb);
    commit_tagged(&b, 2, "new");
    let at7 = ecsdb_backup::state::summarize(&b.read()).checksum;
    commit_tagged(&b, 1, "new!");
    // First only an incremental on the shared backup: the restore builds
    // the new history from the shared base and it (not from the former
    // primary's newer archived snapshot, nor with its archived log).
    let inc = m.create_on(&b, Kind::Incremental, &quiet, Some(second)).unwrap();
    assert_eq!(inc.end_seq, 8);
    let out = work.path().join("inc-latest");
    let o = ecsdb_backup::restore::restore(&target, &req(None, Point::Latest, &out), &quiet).unwrap();
    assert_eq!((o.seq, o.base_seq), (8, 5), "{o:?}");
    assert_eq!(checksum_of(&out).1, inc.state_checksum);
    let out = work.path().join("inc-7");
    let o = ecsdb_backup::restore::restore(&target, &req(None, Point::Seq(7), &out), &quiet).unwrap();
    assert_eq!(o.seq, 7, "{o:?}");
    assert_eq!(checksum_of(&out).1, at7, "seq 7 of the new history");
    let full = m.create_on(&b, Kind::Full, &quiet, Some(second)).unwrap();
    assert_eq!((full.end_seq, full.branch), (8, Some(second)));
    commit_tagged(&b, 2, "newer");

    // Latest: the new primary's backup alone (the archive past it is the
    // other history), and it says so.
    let out = work.path().join("latest");
    let o = ecsdb_backup::restore::restore(&target, &req(None, Point::Latest, &out), &quiet).unwrap();
    assert_eq!((o.seq, o.commits_replayed, o.other_history_after), (8, 0, Some(8)), "{o:?}");
    let restored = ecsdb::Database::open(&out).unwrap();
    assert_eq!(ecsdb_backup::state::summarize(&restored.read()).checksum, full.state_checksum);
    drop(restored);
    // A point past it in the new history is not on the target at all.
    let out = work.path().join("seq10");
    let e = ecsdb_backup::restore::restore(&target, &req(None, Point::Seq(10), &out), &quiet).unwrap_err();
    assert!(e.to_string().contains("of another history"), "{e}");
    // The former primary's history stays restorable from its own base.
    let old = m.create_on(&a, Kind::Full, &quiet, Some(first));
    let old = old.unwrap();
    assert_eq!(old.end_seq, 10);
    let out = work.path().join("old");
    let o = ecsdb_backup::restore::restore(&target, &req(Some(&old.id), Point::Latest, &out), &quiet).unwrap();
    assert_eq!(o.seq, 10);
    // An incremental of the new primary does not build on the former
    // primary's newer backup.
    let e = m.create_on(&b, Kind::Incremental, &quiet, Some(second)).unwrap_err();
    assert!(e.to_string().contains("of another history"), "{e}");
    a.close().unwrap();
    b.close().unwrap();
}

/// A new database archived to an empty target: no snapshot and no backup
/// yet, but the archive restores from its first pass on (the archiver
/// makes and ships a base).
#[test]
fn a_new_database_s_archive_restores_from_its_first_pass() {
    let t = tempfile::tempdir().unwrap();
    let target = Arc::new(Target::open(t.path().to_str().unwrap(), &StorageSettings::default()).unwrap());
    let work = tempfile::tempdir().unwrap();
    let db = open_db(&work.path().join("db"));
    commit_n(&db, 12);
    let s = BackupSettings { archive_interval_ms: 20, ..settings() };
    let a = ecsdb_backup::Archiver::start(&db, target.clone(), &s).unwrap();
    wait_status(&a, "a base and the log shipped", |st| st.shipped_seq == 12 && st.snapshots_shipped == 1);
    commit_n(&db, 3);
    wait_status(&a, "commit 15 archived", |st| st.shipped_seq == 15);
    // The machine is lost: what the target holds is all there is.
    a.abandon();
    let out = work.path().join("restored");
    let o = ecsdb_backup::restore::restore(&target, &req(None, Point::Latest, &out), &quiet).unwrap();
    assert_eq!(o.seq, 15, "{o:?}");
    assert_eq!(checksum_of(&out).1, ecsdb_backup::state::summarize(&db.read()).checksum);
    db.close().unwrap();
}
