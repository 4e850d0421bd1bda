//! Schema migrations: applied as one logged record, they carry every
//! entity and edge into the new schema, survive restart with or without a
//! snapshot after them, and a refused migration changes nothing.
#![allow(clippy::unwrap_used)]

use ecsdb::{Database, Query};
use proptest::prelude::*;
use serde_json::json;

const V2_0: &str = r#"
[database]
name = "game"
version = "2.0.0"

[tables.player]
[[tables.player.fields]]
name = "name"
type = "[u8; 16]"
[[tables.player.fields]]
name = "level"
type = "u32"

[tables.transform]
[[tables.transform.fields]]
name = "position"
type = "[f32; 3]"

[tables.old_data]
[[tables.old_data.fields]]
name = "deprecated_field"
type = "string"
[[tables.old_data.fields]]
name = "keep"
type = "u32"

[relations.follows]
[[relations.follows.fields]]
name = "since"
type = "u64"
"#;

/// Seed 000 §2.3's migration, plus the other operation kinds.
const TO_V2_1: &str = r#"
[migration]
from_version = "2.0.0"
to_version = "2.1.0"
description = "Add experience field to players"

[[operations]]
type = "add_field"
table = "player"
field = { name = "experience", type = "u64" }
default_value = 7

[[operations]]
type = "add_index"
table = "transform"
field = "position"

[[operations]]
type = "drop_field"
table = "old_data"
field = "deprecated_field"

[[operations]]
type = "rename_field"
table = "player"
field = "level"
to = "rank"

[[operations]]
type = "add_index"
table = "player"
field = "rank"
kind = "btree"

[[operations]]
type = "add_table"
table = "guild"
fields = [{ name = "name", type = "[u8; 16]", index = "unique" }]

[[operations]]
type = "add_relation"
relation = "member_of"
to = "guild"
"#;

fn q(v: serde_json::Value) -> Query {
    serde_json::from_value(v).unwrap()
}

fn fill(db: &Database, n: u32) -> Vec<ecsdb::EntityId> {
    db.write(|t| {
        let mut ids = Vec::new();
        for i in 0..n {
            let id = t.create_entity_json(&json!({
                "player": {"name": format!("p{i}"), "level": i},
                "transform": {"position": [i as f32, 0.0, 0.0]},
                "old_data": {"deprecated_field": format!("old {i}"), "keep": i * 2},
            }))?;
            ids.push(id);
        }
        for w in ids.windows(2) {
            t.link("follows", w[0], w[1], Some(&json!({"since": 5})))?;
        }
        Ok(ids)
    })
    .unwrap()
    .0
}

fn check_migrated(db: &Database, ids: &[ecsdb::EntityId]) {
    let s = db.schema();
    assert_eq!(s.version, "2.1.0");
    for (i, id) in ids.iter().enumerate() {
        let e = db.get_json(*id).unwrap();
        let c = &e["components"];
        assert_eq!(c["player"]["rank"], json!(i), "{e}");
        assert_eq!(c["player"]["experience"], json!(7), "{e}");
        assert_eq!(c["player"]["name"], json!(format!("p{i}")), "{e}");
        assert!(c["player"].get("level").is_none(), "{e}");
        assert_eq!(c["old_data"], json!({"keep": i * 2}), "{e}");
    }
    let r = db.read();
    let follows = r.schema().relation_id("follows").unwrap();
    assert_eq!(r.relations().iter().filter(|(k, _)| k.rel == follows).count(), ids.len() - 1);
    assert!(r.check_integrity().is_empty(), "{:?}", r.check_integrity());
    drop(r);
    let plan = db
        .query_json(&q(json!({"with": ["transform"],
            "near": {"field": "transform.position", "point": [2, 0, 0], "radius": 1}, "explain": true})))
        .unwrap();
    assert_eq!(plan["plan"]["indexes"], json!(["transform.position"]), "{plan}");
    let near = db
        .query_json(&q(json!({"with": ["transform"],
            "near": {"field": "transform.position", "point": [2, 0, 0], "radius": 1}})))
        .unwrap();
    assert_eq!(near["rows"].as_array().unwrap().len(), 3.min(ids.len()));
}

#[test]
fn the_seed_migration_applies_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::builder().schema_toml(V2_0).unwrap().data_dir(dir.path()).build().unwrap();
    let ids = fill(&db, 10);
    db.checkpoint().unwrap();
    let before = db.version();
    // A dry run says what would happen and changes nothing.
    let plan = db.migrate(TO_V2_1, true).unwrap();
    assert!(!plan.applied);
    assert_eq!(plan.report.rows_rewritten.get("player"), Some(&10));
    assert_eq!(plan.report.rows_rewritten.get("old_data"), Some(&10));
    assert_eq!(plan.report.indexes_built.get("transform.position"), Some(&10));
    assert_eq!(plan.report.indexes_built.get("player.rank"), Some(&10));
    assert_eq!(db.version(), before);
    assert_eq!(db.schema().version, "2.0.0");
    let out = db.migrate(TO_V2_1, false).unwrap();
    assert!(out.applied);
    assert_eq!(out.seq, Some(before + 1));
    assert_eq!(db.version(), before + 1);
    check_migrated(&db, &ids);
    // Writes in the new schema, then a restart without a schema given.
    let (g, _) = db.write(|t| t.create_entity_json(&json!({"guild": {"name": "red"}}))).unwrap();
    db.write(|t| t.link("member_of", ids[0], g, None)).unwrap();
    let exported = db.export_json();
    db.close().unwrap();
    drop(db);
    let db = Database::open(dir.path()).unwrap();
    check_migrated(&db, &ids);
    assert_eq!(db.export_json(), exported);
    // The old schema is refused with the reason; so is the same migration again.
    db.close().unwrap();
    drop(db);
    let err = Database::builder().schema_toml(V2_0).unwrap().data_dir(dir.path()).build().unwrap_err().to_string();
    assert!(err.contains("schema version 2.1.0") && err.contains("2.0.0"), "{err}");
    let db = Database::open(dir.path()).unwrap();
    let err = db.migrate(TO_V2_1, false).unwrap_err().to_string();
    assert!(err.contains("already applied"), "{err}");
}

#[test]
fn a_newer_schema_file_names_the_missing_migration() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::builder().schema_toml(V2_0).unwrap().data_dir(dir.path()).build().unwrap();
    fill(&db, 2);
    db.close().unwrap();
    drop(db);
    let newer = V2_0.replace("2.0.0", "2.1.0").replace("name = \"level\"", "name = \"rank\"");
    let err = Database::builder().schema_toml(&newer).unwrap().data_dir(dir.path()).build().unwrap_err().to_string();
    assert!(err.contains("apply the migration from 2.0.0 to 2.1.0"), "{err}");
}

#[test]
fn the_log_replays_a_migration_without_a_snapshot_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::builder().schema_toml(V2_0).unwrap().data_dir(dir.path()).build().unwrap();
    let ids = fill(&db, 6);
    db.checkpoint().unwrap();
    let old_schema_text = std::fs::read_to_string(dir.path().join("schema.toml")).unwrap();
    db.migrate(TO_V2_1, false).unwrap();
    db.write(|t| t.create_entity_json(&json!({"player": {"experience": 99}}))).unwrap();
    let exported = db.export_json();
    db.close().unwrap();
    drop(db);
    // As after a crash right after the migration record was made durable:
    // no snapshot after it, and schema.toml still the old one.
    let snaps = dir.path().join("snapshots");
    let mut names: Vec<_> = std::fs::read_dir(&snaps).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    for newer in &names[1..] {
        std::fs::remove_file(newer).unwrap();
    }
    // Segments the removed snapshots had archived are needed again.
    for e in std::fs::read_dir(dir.path().join("wal_archive")).unwrap() {
        let p = e.unwrap().path();
        std::fs::rename(&p, dir.path().join("wal").join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.path().join("schema.toml"), old_schema_text).unwrap();
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(db.export_json(), exported);
    assert_eq!(db.schema().version, "2.1.0");
    let stored = std::fs::read_to_string(dir.path().join("schema.toml")).unwrap();
    assert!(stored.contains("2.1.0"), "schema.toml is rewritten to the state's schema");
    check_migrated(&db, &ids);
}

#[test]
fn refused_migrations_change_nothing() {
    let db = Database::builder().schema_toml(V2_0).unwrap().build().unwrap();
    fill(&db, 3);
    // Two rows with the same `keep`: a unique index over it cannot be built.
    db.write(|t| t.create_entity_json(&json!({"old_data": {"keep": 2}}))).unwrap();
    let before = (db.version(), db.export_json(), db.schema().fingerprint);
    let head = "[migration]\nfrom_version = \"2.0.0\"\nto_version = \"2.1.0\"\n";
    let cases = [
        (TO_V2_1.replace("from_version = \"2.0.0\"", "from_version = \"1.9.0\""), "apply the migrations in order"),
        (format!("{head}[[operations]]\ntype = \"explode\"\ntable = \"player\"\n"), "unknown operation `explode`"),
        (
            format!("{head}[[operations]]\ntype = \"drop_field\"\ntable = \"player\"\nfield = \"nope\"\n"),
            "no field player.nope",
        ),
        (
            format!("{head}[[operations]]\ntype = \"drop_field\"\ntable = \"player\"\nfield = \"level\"\nextra = 1\n"),
            "unknown key `extra`",
        ),
        (
            format!(
                "{head}[[operations]]\ntype = \"add_field\"\ntable = \"player\"\nfield = {{ name = \"level\", type = \"u32\" }}\n"
            ),
            "exists already",
        ),
        (
            format!(
                "{head}[[operations]]\ntype = \"add_field\"\ntable = \"player\"\nfield = {{ name = \"x\", type = \"u33\" }}\n"
            ),
            "not valid",
        ),
        (
            format!(
                "{head}[[operations]]\ntype = \"add_field\"\ntable = \"player\"\nfield = {{ name = \"x\", type = \"u8\" }}\ndefault_value = 300\n"
            ),
            "not valid",
        ),
        (format!("{head}[[operations]]\ntype = \"drop_table\"\ntable = \"_users\"\n"), "system name"),
        (
            format!(
                "{head}[[operations]]\ntype = \"add_index\"\ntable = \"player\"\nfield = \"name\"\nkind = \"spatial\"\n"
            ),
            "not valid",
        ),
        (
            format!("{head}[[operations]]\ntype = \"drop_index\"\ntable = \"player\"\nfield = \"name\"\n"),
            "has no index",
        ),
        (head.to_string(), "at least one [[operations]]"),
        (
            format!("{head}[[operations]]\ntype = \"add_field\"\ntable = \"player\"\nfield = {{ name = \"_secret\", type = \"u32\" }}\n"),
            "`player._secret`: names starting with `_` are reserved",
        ),
        (
            format!("{head}[[operations]]\ntype = \"rename_field\"\ntable = \"player\"\nfield = \"level\"\nto = \"_lvl\"\n"),
            "reserved",
        ),
        (
            format!("{head}[[operations]]\ntype = \"add_table\"\ntable = \"t\"\nfields = [{{ name = \"_x\", type = \"u8\" }}]\n"),
            "reserved",
        ),
        (
            TO_V2_1.replace("to_version = \"2.1.0\"", "to_version = \"1.0.0\""),
            "migrations go forward",
        ),
        (
            TO_V2_1.replace("to_version = \"2.1.0\"", "to_version = \"2.0.0-rc1\""),
            "not newer than from_version 2.0.0",
        ),
        (TO_V2_1.replace("to_version = \"2.1.0\"", "to_version = \"abc\""), "is not a version"),
        (
            format!("{head}[[operations]]\ntype = \"add_index\"\ntable = \"old_data\"\nfield = \"keep\"\nkind = \"unique\"\n"),
            "a unique index cannot be built",
        ),
        (
            format!("{head}[[operations]]\ntype = \"add_relation\"\nrelation = \"r\"\nfields = [{{ name = \"x\", type = \"u8\", index = \"unique\" }}]\n"),
            "relation properties cannot be indexed",
        ),
        ("not toml [".to_string(), "not valid TOML"),
        (
            "[migration]\nfrom_version = \"2.0.0\"\nto_version = \"2.0.0\"\n[[operations]]\ntype = \"drop_table\"\ntable = \"old_data\"\n"
                .to_string(),
            "both 2.0.0",
        ),
    ];
    for (text, want) in cases {
        for dry in [true, false] {
            let err = db.migrate(&text, dry).unwrap_err().to_string();
            assert!(err.contains(want), "{text}\n→ {err}");
        }
    }
    assert_eq!((db.version(), db.export_json(), db.schema().fingerprint), before);
}

#[test]
fn dropping_a_table_drops_its_rows_but_keeps_the_entities() {
    let db = Database::builder().schema_toml(V2_0).unwrap().build().unwrap();
    let ids = fill(&db, 4);
    let m = "[migration]\nfrom_version = \"2.0.0\"\nto_version = \"3.0.0\"\n[[operations]]\ntype = \"drop_table\"\ntable = \"old_data\"\n[[operations]]\ntype = \"add_table\"\ntable = \"old_data\"\nfields = [{ name = \"keep\", type = \"u32\" }]\n";
    let out = db.migrate(m, false).unwrap();
    assert_eq!(out.report.rows_dropped.get("old_data"), Some(&4));
    for id in &ids {
        let e = db.get_json(*id).unwrap();
        assert!(e["components"].get("old_data").is_none(), "re-added tables start empty: {e}");
        assert!(e["components"].get("player").is_some());
    }
    // New entities get fresh ids: no id of a live entity is reused.
    let (fresh, _) = db.write(|t| t.create_entity_json(&json!({"old_data": {"keep": 1}}))).unwrap();
    assert!(!ids.contains(&fresh));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Any state the generators reach migrates, and the migrated state
    /// survives snapshot → restart → replay unchanged.
    #[test]
    fn migrated_states_survive_restart(
        n in 0u32..30,
        deletes in proptest::collection::vec(0usize..30, 0..8),
        checkpoint_before in any::<bool>(),
        checkpoint_after in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder().schema_toml(V2_0).unwrap().data_dir(dir.path()).build().unwrap();
        let ids = fill(&db, n);
        db.write(|t| {
            for &d in &deletes {
                if let Some(&id) = ids.get(d) && t.contains(id) {
                    t.delete(id)?;
                }
            }
            Ok(())
        }).unwrap();
        if checkpoint_before {
            db.checkpoint().unwrap();
        }
        db.migrate(TO_V2_1, false).unwrap();
        db.write(|t| t.create_entity_json(&json!({"player": {"name": "late", "rank": 3}}))).unwrap();
        if checkpoint_after {
            db.checkpoint().unwrap();
        }
        let exported = db.export_json();
        db.close().unwrap();
        drop(db);
        let db = Database::open(dir.path()).unwrap();
        prop_assert_eq!(db.export_json(), exported);
        prop_assert!(db.read().check_integrity().is_empty());
    }
}

/// The seed migration done by hand on an export: the same rows the engine
/// produces, through the documented import path.
fn transform_export(mut doc: serde_json::Value) -> serde_json::Value {
    let c = doc["components"].as_object_mut().unwrap();
    for row in c.get_mut("player").unwrap().as_array_mut().unwrap() {
        let r = row.as_object_mut().unwrap();
        let level = r.remove("level").unwrap();
        r.insert("rank".into(), level);
        r.insert("experience".into(), json!(7));
    }
    for row in c.get_mut("old_data").unwrap().as_array_mut().unwrap() {
        row.as_object_mut().unwrap().remove("deprecated_field");
    }
    c.insert("guild".into(), json!([]));
    doc["version"] = json!("2.1.0");
    doc["relations"].as_object_mut().unwrap().insert("member_of".into(), json!([]));
    doc
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// migrate → export equals export → transform → import.
    #[test]
    fn migrating_equals_transforming_an_export(
        n in 0u32..25,
        deletes in proptest::collection::vec(0usize..25, 0..6),
        unlinks in proptest::collection::vec(0usize..25, 0..4),
    ) {
        let db = Database::builder().schema_toml(V2_0).unwrap().build().unwrap();
        let ids = fill(&db, n);
        db.write(|t| {
            for &u in &unlinks {
                if let (Some(&a), Some(&b)) = (ids.get(u), ids.get(u + 1)) && t.contains(a) && t.contains(b) {
                    let _ = t.unlink("follows", a, b);
                }
            }
            for &d in &deletes {
                if let Some(&id) = ids.get(d) && t.contains(id) {
                    t.delete(id)?;
                }
            }
            Ok(())
        }).unwrap();
        let before = db.export_json();
        db.migrate(TO_V2_1, false).unwrap();
        let mut migrated = db.export_json();
        let target = Database::builder().schema(db.schema()).build().unwrap();
        let (imported, _) = target.import_json(&transform_export(before)).unwrap();
        prop_assert_eq!(imported, db.read().entity_count());
        let mut by_hand = target.export_json();
        // The sequence numbers differ (the migration is a commit of its own).
        for d in [&mut migrated, &mut by_hand] {
            d.as_object_mut().unwrap().remove("seq");
        }
        prop_assert_eq!(migrated, by_hand);
    }
}

#[test]
fn an_empty_log_segment_of_another_schema_holds_nothing_to_refuse() {
    // As after a crash between the log's rotation to a migration's schema
    // and the migration becoming durable: an empty segment under a schema
    // the state never reached.
    let dir = tempfile::tempdir().unwrap();
    let db = Database::builder().schema_toml(V2_0).unwrap().data_dir(dir.path()).build().unwrap();
    fill(&db, 3);
    let (seq, exported) = (db.version(), db.export_json());
    db.close().unwrap();
    drop(db);
    let header = ecsdb::storage::wal::format::SegmentHeader { first_seq: seq + 1, fingerprint: 0x1234_5678 }.encode();
    let name = ecsdb::storage::wal::format::segment_name(seq + 1);
    std::fs::write(dir.path().join("wal").join(name), header).unwrap();
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(db.export_json(), exported);
    db.write(|t| t.create_entity_json(&json!({"player": {"level": 1}}))).unwrap();
    db.close().unwrap();
    drop(db);
    assert_eq!(Database::open(dir.path()).unwrap().version(), seq + 1);
}

#[test]
fn user_migrations_cannot_lean_on_system_tables() {
    // A schema with a system table, as a server's is.
    let text =
        format!("{V2_0}\n[tables._sys]\n[[tables._sys.fields]]\nname = \"id\"\ntype = \"u64\"\nprimary_key = true\n");
    let schema = ecsdb::Schema::from_stored_toml(&text).unwrap();
    let db = Database::builder().schema(std::sync::Arc::new(schema)).build().unwrap();
    let head = "[migration]\nfrom_version = \"2.0.0\"\nto_version = \"2.1.0\"\n";
    for (ops, what) in [
        (
            "type = \"add_table\"\ntable = \"t\"\nparent_table = \"_sys\"\nfields = [{ name = \"a\", type = \"u32\" }]",
            "parent_table",
        ),
        ("type = \"add_relation\"\nrelation = \"r\"\nfrom = \"_sys\"", "an end of relation"),
        ("type = \"add_relation\"\nrelation = \"r\"\nto = \"_sys\"", "an end of relation"),
        (
            "type = \"add_field\"\ntable = \"player\"\nfield = { name = \"owner\", type = \"u64\", foreign_key = \"_sys.id\" }",
            "foreign key",
        ),
    ] {
        let m = format!("{head}[[operations]]\n{ops}\n");
        for dry in [true, false] {
            let err = db.migrate(&m, dry).unwrap_err().to_string();
            assert!(err.contains("reserved") && err.contains(what), "{m}\n→ {err}");
        }
    }
    assert_eq!(db.schema().version, "2.0.0");
}

#[test]
fn a_schema_file_ahead_of_the_data_is_not_run_under_the_older_schema() {
    // schema.toml says 2.1.0, but the data never got there (as when a
    // migration without the commit log crashed before its snapshot).
    let newer = {
        let db = Database::builder().schema_toml(V2_0).unwrap().build().unwrap();
        db.migrate(TO_V2_1, false).unwrap();
        db.schema().to_toml_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let db = Database::builder().schema_toml(V2_0).unwrap().data_dir(dir.path()).build().unwrap();
    fill(&db, 2);
    db.checkpoint().unwrap();
    db.close().unwrap();
    drop(db);
    std::fs::write(dir.path().join("schema.toml"), &newer).unwrap();
    let given = std::sync::Arc::new(ecsdb::Schema::from_stored_toml(&newer).unwrap());
    let err = Database::builder().schema(given).data_dir(dir.path()).build().unwrap_err().to_string();
    assert!(err.contains("recovered is at schema version 2.0.0"), "{err}");
    // Without a schema it opens under the data's own, and schema.toml is put right.
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(db.schema().version, "2.0.0");
    assert!(std::fs::read_to_string(dir.path().join("schema.toml")).unwrap().contains("2.0.0"));
}
