//! The corruption table: damage a data directory one way at a time and check
//! that it is detected and handled as specified (torn tails are cut; damage
//! in the middle refuses to open, naming file and offset, unless repair is
//! asked for; a damaged snapshot falls back to an older one plus the log).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use ecsdb::{Database, DatabaseConfig, EXAMPLE_SCHEMA};
use serde_json::json;

fn config(dir: &Path) -> DatabaseConfig {
    let mut c = DatabaseConfig::default();
    c.database.data_dir = dir.to_path_buf();
    c.persistence.snapshot_interval_secs = 3600;
    c.persistence.snapshot_interval_ops = 0;
    c.persistence.checkpoint_on_shutdown = false;
    c
}

fn open(dir: &Path, repair: bool) -> ecsdb::Result<Database> {
    Database::builder().config(config(dir)).schema_toml(EXAMPLE_SCHEMA)?.enable_persistence().repair(repair).build()
}

/// 20 commits, a snapshot at 10 (and one at 5), 10 more commits in the log.
fn build(dir: &Path) {
    let db = open(dir, false).unwrap();
    for i in 0..20u32 {
        db.write(|t| t.create_entity_json(&json!({"entities": {}, "player": {"level": i}}))).unwrap();
        if i == 4 || i == 9 {
            db.checkpoint().unwrap();
        }
    }
    db.close().unwrap();
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("wal")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    // The last segment is the empty one opened after the final commit.
    v.into_iter().filter(|p| std::fs::metadata(p).unwrap().len() > 32).collect()
}

fn newest_snapshot(dir: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("snapshots")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v.pop().unwrap()
}

fn last_record_offset(seg: &Path) -> usize {
    let b = std::fs::read(seg).unwrap();
    ecsdb::storage::wal::format::scan(&b).unwrap().records.last().unwrap().offset
}

enum Expect {
    /// Opens at this sequence number.
    Opens(u64),
    /// Refuses to open with a message containing this.
    Refuses(&'static str),
}

fn check(name: &str, damage: impl Fn(&Path), expect: &Expect, repair_seq: Option<u64>) {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    damage(dir.path());
    match (expect, open(dir.path(), false)) {
        (Expect::Opens(seq), Ok(db)) => {
            assert_eq!(db.version(), *seq, "{name}: opened at the wrong sequence");
            assert!(db.read().check_integrity().is_empty(), "{name}");
        }
        (Expect::Refuses(needle), Err(e)) => {
            let msg = e.to_string();
            assert!(msg.contains(needle), "{name}: {msg:?} should contain {needle:?}");
        }
        (Expect::Opens(_), Err(e)) => panic!("{name}: expected to open, got {e}"),
        (Expect::Refuses(_), Ok(db)) => panic!("{name}: expected a refusal, opened at {}", db.version()),
    }
    if let Some(seq) = repair_seq {
        let db = open(dir.path(), true).unwrap_or_else(|e| panic!("{name}: repair failed: {e}"));
        assert_eq!(db.version(), seq, "{name}: repaired to the wrong sequence");
        assert!(!db.recovery_report().unwrap().repaired.is_empty(), "{name}: repair reported nothing");
    }
}

#[test]
fn truncation_at_every_byte_of_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let seg = segments(dir.path()).pop().unwrap();
    let original = std::fs::read(&seg).unwrap();
    let last = last_record_offset(&seg);
    for cut in last + 1..original.len() {
        std::fs::write(&seg, &original[..cut]).unwrap();
        let db = open(dir.path(), false).unwrap();
        assert_eq!(db.version(), 19, "cut at {cut}");
        assert_eq!(db.recovery_report().unwrap().truncated_tail.as_ref().map(|t| t.1), Some(last as u64));
        drop(db);
        // Reopening leaves a new empty segment behind; remove it so the next
        // cut is again the log's tail.
        for p in std::fs::read_dir(dir.path().join("wal")).unwrap().map(|e| e.unwrap().path()) {
            if p != seg && std::fs::metadata(&p).unwrap().len() <= 32 {
                std::fs::remove_file(p).unwrap();
            }
        }
    }
}

#[test]
fn corruption_table() {
    let flip = |p: PathBuf, at: usize| {
        let mut b = std::fs::read(&p).unwrap();
        b[at] ^= 0x40;
        std::fs::write(&p, b).unwrap();
    };
    // Case: flipped bit in the last record's payload (nothing after it). The
    // record is complete, so its bytes were written: damage to a possibly
    // acknowledged commit, never cut silently. Repair cuts it and says so.
    check(
        "bit flip in the last record",
        |d| {
            let s = segments(d).pop().unwrap();
            let at = std::fs::metadata(&s).unwrap().len() as usize - 2;
            flip(s, at);
        },
        &Expect::Refuses("in the last record, which is complete"),
        Some(19),
    );
    // Case: the last record's length field made impossible (over the record
    // limit): damage, not a write cut short.
    check(
        "impossible length in the last record",
        |d| {
            let s = segments(d).pop().unwrap();
            let mut b = std::fs::read(&s).unwrap();
            let at = last_record_offset(&s);
            b[at + 3] = 0x7f;
            std::fs::write(&s, b).unwrap();
        },
        &Expect::Refuses("in the last record, which is complete"),
        Some(19),
    );
    // Case: the last record's bytes never reached the disk (zeros): torn.
    check(
        "zeroed last record",
        |d| {
            let s = segments(d).pop().unwrap();
            let mut b = std::fs::read(&s).unwrap();
            let at = last_record_offset(&s);
            b[at..].fill(0);
            std::fs::write(&s, b).unwrap();
        },
        &Expect::Opens(19),
        None,
    );
    // Case: flipped bit in a record header in the middle of the live log.
    check(
        "bit flip in a middle record header",
        |d| {
            let s = segments(d).pop().unwrap();
            let b = std::fs::read(&s).unwrap();
            let r = ecsdb::storage::wal::format::scan(&b).unwrap().records[2];
            flip(s, r.offset + 5);
        },
        &Expect::Refuses("valid records follow, so this is not a torn write"),
        Some(12),
    );
    // Case: flipped bit in a middle record's payload.
    check(
        "bit flip in a middle payload",
        |d| {
            let s = segments(d).pop().unwrap();
            let b = std::fs::read(&s).unwrap();
            let r = ecsdb::storage::wal::format::scan(&b).unwrap().records[4];
            flip(s, r.payload.0 + 3);
        },
        &Expect::Refuses("record checksum mismatch"),
        Some(14),
    );
    // Case: a zeroed 4 KiB block over the middle of the live segment.
    check(
        "zeroed 4 KiB block",
        |d| {
            let s = segments(d).pop().unwrap();
            let mut b = std::fs::read(&s).unwrap();
            let r = ecsdb::storage::wal::format::scan(&b).unwrap().records[1];
            let end = (r.offset + 4096).min(b.len() - 200);
            b[r.offset..end].fill(0);
            std::fs::write(&s, b).unwrap();
        },
        &Expect::Refuses("at byte"),
        Some(11),
    );
    // Case: segment header damaged.
    check(
        "segment header checksum",
        |d| flip(segments(d).pop().unwrap(), 13),
        &Expect::Refuses("segment header checksum mismatch"),
        None,
    );
    // Case: the newest snapshot damaged: falls back to the older one, and
    // the archived log covers the difference.
    check(
        "damaged newest snapshot",
        |d| {
            let s = newest_snapshot(d);
            let n = std::fs::metadata(&s).unwrap().len() as usize;
            flip(s, n / 2);
        },
        &Expect::Opens(20),
        None,
    );
    // Case: the newest snapshot truncated.
    check(
        "truncated newest snapshot",
        |d| {
            let s = newest_snapshot(d);
            let b = std::fs::read(&s).unwrap();
            std::fs::write(&s, &b[..b.len() / 3]).unwrap();
        },
        &Expect::Opens(20),
        None,
    );
    // Case: the newest segment deleted whole. Nothing left on disk says
    // commits 11..20 existed, so this cannot be detected: the state ends at
    // the snapshot (docs/design.md lists "files do not vanish" among the
    // assumptions). Kept here so the behaviour is pinned down.
    check(
        "deleted newest segment (undetectable)",
        |d| std::fs::remove_file(segments(d).pop().unwrap()).unwrap(),
        &Expect::Opens(10),
        None,
    );
    check(
        "deleted archived segment under a damaged snapshot",
        |d| {
            let s = newest_snapshot(d);
            flip(s, 50);
            for p in std::fs::read_dir(d.join("wal_archive")).unwrap().map(|e| e.unwrap().path()) {
                std::fs::remove_file(p).unwrap();
            }
        },
        &Expect::Refuses("the commit log has a gap"),
        None,
    );
}
