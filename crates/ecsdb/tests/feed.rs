//! The commit feed: every commit once, in sequence order, nothing for
//! transactions that did not commit, and a slow subscriber told it lagged
//! instead of slowing writers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ecsdb::Database;
use ecsdb::feed::FeedEvent;
use serde_json::json;

const SCHEMA: &str = r#"
[database]
version = "1.0.0"
[tables.account]
[[tables.account.fields]]
name = "login"
type = "[u8; 16]"
index = "unique"
[[tables.account.fields]]
name = "gold"
type = "u64"
"#;

fn seq_of(e: &FeedEvent) -> u64 {
    match e {
        FeedEvent::Commit { seq, .. } => *seq,
        FeedEvent::Lagged { from_seq } => panic!("lagged from {from_seq}"),
    }
}

#[test]
fn commits_arrive_once_in_order_and_only_when_they_commit() {
    let db = Database::builder().schema_toml(SCHEMA).unwrap().build().unwrap();
    let feed = db.subscribe_commits();
    std::thread::scope(|s| {
        for w in 0..4 {
            let db = &db;
            s.spawn(move || {
                for i in 0..50 {
                    db.write(|t| t.create_entity_json(&json!({"account": {"login": format!("w{w}-{i}"), "gold": i}})))
                        .unwrap();
                }
            });
        }
    });
    // Refused and rolled-back transactions publish nothing.
    assert!(db.write(|t| t.create_entity_json(&json!({"account": {"login": "w0-0"}}))).is_err());
    let r: ecsdb::Result<()> = db
        .write(|t| {
            t.create_entity_json(&json!({"account": {"login": "x"}}))?;
            Err::<(), _>(ecsdb::DbError::Config("no".into()))
        })
        .map(|_| ());
    assert!(r.is_err());
    let mut seqs = Vec::new();
    while let Ok(e) = feed.recv_timeout(Duration::from_millis(100)) {
        if let FeedEvent::Commit { changes, .. } = &e {
            assert!(!changes.is_empty());
        }
        seqs.push(seq_of(&e));
    }
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
    assert_eq!(db.version(), 200);
}

#[test]
fn a_full_queue_drops_commits_and_says_from_where() {
    let db = Database::builder().schema_toml(SCHEMA).unwrap().build().unwrap();
    let feed = db.subscribe_commits_with(2);
    let gone = db.subscribe_commits_with(1);
    drop(gone); // forgotten at the next commit, never an error
    for i in 0..5 {
        db.write(|t| t.create_entity_json(&json!({"account": {"login": format!("a{i}")}}))).unwrap();
    }
    assert_eq!(seq_of(&feed.try_recv().unwrap()), 1);
    assert_eq!(seq_of(&feed.try_recv().unwrap()), 2);
    assert!(feed.try_recv().is_none(), "3..=5 were dropped");
    db.write(|t| t.create_entity_json(&json!({"account": {"login": "late"}}))).unwrap();
    assert!(matches!(feed.try_recv(), Some(FeedEvent::Lagged { from_seq: 3 })));
    assert_eq!(seq_of(&feed.try_recv().unwrap()), 6);
}

#[test]
fn migrations_are_published_as_their_own_commit() {
    let db = Database::builder().schema_toml(SCHEMA).unwrap().build().unwrap();
    let feed = db.subscribe_commits();
    db.write(|t| t.create_entity_json(&json!({"account": {"login": "a"}}))).unwrap();
    let m = "[migration]\nfrom_version = \"1.0.0\"\nto_version = \"1.1.0\"\n[[operations]]\ntype = \"add_field\"\ntable = \"account\"\nfield = { name = \"xp\", type = \"u32\" }\n";
    db.migrate(m, true).unwrap(); // a dry run publishes nothing
    db.migrate(m, false).unwrap();
    assert_eq!(seq_of(&feed.try_recv().unwrap()), 1);
    let Some(FeedEvent::Commit { seq: 2, changes }) = feed.try_recv() else { panic!("no migration commit") };
    let described = db.describe_changes(&changes).unwrap();
    assert!(
        matches!(&described[..], [ecsdb::Change::Migrated { migration }] if migration.contains("xp")),
        "{described:?}"
    );
    assert!(feed.try_recv().is_none());
}
