//! Every kind of bad input gets a clear error naming what is wrong, and
//! changes nothing: the state and the sequence number are as before.
#![allow(clippy::unwrap_used)]

use ecsdb::{Database, DbError, EntityId, Value};
use serde_json::json;

fn db() -> Database {
    Database::example().unwrap()
}

fn seeded() -> (Database, EntityId, EntityId) {
    let db = db();
    let (ids, _) = db
        .write(|t| {
            let a = t.create_entity_json(&json!({
                "entities": {"version": 1, "entity_type": 0},
                "player": {"name": "ana", "level": 3},
                "transform": {"position": [1.0, 2.0, 3.0]},
            }))?;
            let b = t.create_entity_json(&json!({"entities": {"entity_type": 3}}))?;
            t.link("owns", a, b, Some(&json!({"slot": 2})))?;
            Ok((a, b))
        })
        .unwrap();
    (db, ids.0, ids.1)
}

/// Run `f` in a transaction and expect it to fail with a message containing
/// `needle`, leaving the database exactly as it was.
fn rejects(db: &Database, needle: &str, f: impl FnOnce(&mut ecsdb::Transaction<'_>) -> ecsdb::Result<()>) {
    let before = db.read().canonical_state();
    let seq = db.version();
    let err = match db.write(f) {
        Ok(_) => panic!("expected an error containing {needle:?}"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(needle), "error {err:?} does not contain {needle:?}");
    assert_eq!(db.read().canonical_state(), before, "state changed after: {err}");
    assert_eq!(db.version(), seq);
    assert!(db.read().check_integrity().is_empty());
}

#[test]
fn unknown_table_and_field() {
    let (db, a, _) = seeded();
    rejects(&db, "unknown table `wizard`", |t| t.insert_json(a, "wizard", &json!({})));
    rejects(&db, "unknown field `mana` in table `player`", |t| t.set_json(a, "player", &json!({"mana": 3})));
    rejects(&db, "unknown field `lvl` in table `health`", |t| t.insert_json(a, "health", &json!({"lvl": 1})));
    rejects(&db, "unknown relation `hates`", |t| t.link("hates", a, a, None));
}

#[test]
fn wrong_types_and_sizes() {
    let (db, a, _) = seeded();
    rejects(&db, "invalid value for `player.level`: expected an integer (u32), got \"high\"", |t| {
        t.set_json(a, "player", &json!({"level": "high"}))
    });
    rejects(&db, "invalid value for `player.level`: 4294967296 is out of range for u32", |t| {
        t.set_json(a, "player", &json!({"level": 4_294_967_296u64}))
    });
    rejects(&db, "invalid value for `transform.position`: expected an array of 3 elements, got 2", |t| {
        t.set_json(a, "transform", &json!({"position": [1.0, 2.0]}))
    });
    rejects(&db, "invalid value for `player.name`: string of 70 bytes is longer than 64", |t| {
        t.set_json(a, "player", &json!({"name": "x".repeat(70)}))
    });
    rejects(&db, "invalid value for `transform.dirty`: expected a boolean, got a number", |t| {
        t.set_json(a, "transform", &json!({"dirty": 1}))
    });
    rejects(&db, "invalid value for `player.level`", |t| t.set(a, "player", "level", &Value::I64(-1)));
    rejects(&db, "is the entity's own id and cannot be changed", |t| t.set_json(a, "player", &json!({"entity_id": 5})));
    // A later bad field in the same object must not leave the earlier one set.
    rejects(&db, "invalid value for `player.experience`", |t| {
        t.set_json(a, "player", &json!({"level": 99, "experience": -5}))
    });
}

#[test]
fn enum_variants_are_checked() {
    let db = Database::builder()
        .schema_toml("[enums.kind]\nvariants = [\"player\", \"npc\"]\n[tables.e]\n[[tables.e.fields]]\nname = \"k\"\ntype = \"kind\"\n")
        .unwrap()
        .build()
        .unwrap();
    let (e, _) = db.write(|t| t.create_entity_json(&json!({"e": {"k": "npc"}}))).unwrap();
    assert_eq!(db.get_json(e).unwrap()["components"]["e"]["k"], "npc");
    rejects(&db, "unknown variant \"dragon\" of enum kind (expected one of player, npc)", |t| {
        t.set_json(e, "e", &json!({"k": "dragon"}))
    });
    rejects(&db, "expected a variant name of enum kind, got a number", |t| t.set_json(e, "e", &json!({"k": 1})));
}

#[test]
fn missing_entities_and_components() {
    let (db, a, b) = seeded();
    let ghost = EntityId::new(999, 1);
    rejects(&db, &format!("entity {ghost} does not exist"), |t| t.insert_json(ghost, "player", &json!({})));
    rejects(&db, &format!("entity {a} already has component `player`"), |t| t.insert_json(a, "player", &json!({})));
    rejects(&db, &format!("entity {b} has no component `player`"), |t| t.remove(b, "player"));
    rejects(&db, &format!("entity {b} has no component `health`"), |t| t.set_json(b, "health", &json!({"hp": 1})));
    rejects(&db, "no edge `owns`", |t| t.unlink("owns", b, a));
    rejects(&db, &format!("entity {ghost} does not exist"), |t| t.delete(ghost));
}

#[test]
fn deferred_constraints_roll_back_the_whole_transaction() {
    let (db, a, b) = seeded();
    // parent_table: player needs entities.
    rejects(&db, "has component `player` but not its parent_table `entities`", |t| {
        let e = t.create_entity_json(&json!({"player": {"name": "orphan"}}))?;
        t.set_json(a, "player", &json!({"level": 50}))?; // also undone
        t.remove(e, "entities") // the parent goes, the child stays
    });
    // Relation end constraint: owns.from must be a player.
    rejects(&db, "relation `owns`: source entity", |t| t.link("owns", b, a, None));
    // Removing the component an edge requires.
    rejects(&db, "must have component `player`", |t| t.remove(a, "player"));
    // Deleting and a failing later op in the same transaction.
    rejects(&db, "unknown table", |t| {
        t.delete(b)?;
        t.insert_json(a, "nope", &json!({}))
    });
}

#[test]
fn foreign_keys_are_checked_at_commit() {
    let db = Database::builder()
        .schema_toml(
            r#"
[tables.entities]
[[tables.entities.fields]]
name = "id"
type = "u64"
primary_key = true
[tables.item]
parent_table = "entities"
[[tables.item.fields]]
name = "entity_id"
type = "u64"
foreign_key = "entities.id"
[[tables.item.fields]]
name = "owner"
type = "u64"
foreign_key = "entities.id"
"#,
        )
        .unwrap()
        .build()
        .unwrap();
    let ((owner, item), _) = db
        .write(|t| {
            let owner = t.create_entity_json(&json!({"entities": {}}))?;
            let item = t.create_entity_json(&json!({"entities": {}, "item": {"owner": owner.0}}))?;
            Ok((owner, item))
        })
        .unwrap();
    rejects(&db, "references 12345, which does not exist", |t| t.set_json(item, "item", &json!({"owner": 12345})));
    rejects(&db, &format!("entity {owner} cannot be deleted: 1 foreign key value(s) still reference it"), |t| {
        t.delete(owner)
    });
    rejects(&db, "which has no `entities` component", |t| {
        let bare = t.create_entity()?;
        t.set_json(item, "item", &json!({"owner": bare.0}))
    });
    rejects(
        &db,
        &format!("component `entities` of entity {owner} cannot be removed: 1 foreign key value(s) still reference it"),
        |t| {
            t.create_entity()?; // also undone
            t.remove(owner, "entities")
        },
    );
    // Null (0) is allowed; then the owner can go.
    db.write(|t| {
        t.set_json(item, "item", &json!({"owner": 0}))?;
        t.delete(owner)
    })
    .unwrap();
    assert!(db.read().check_integrity().is_empty());
}

#[test]
fn typed_access_mismatches_are_errors() {
    let (db, _, _) = seeded();
    let schema = db.schema().clone();
    let pos = schema.field_ref("transform", "position").unwrap();
    let err = schema.field_ref("player", "entity_id").unwrap_err().to_string();
    assert!(err.contains("is the entity id"), "{err}");
    rejects(&db, "type [f32; 3] cannot be viewed as [f64; 3]", |t| {
        t.for_each_chunk_mut(&[pos.table], |c| c.write::<[f64; 3]>(pos).map(|_| ()))
    });
    // Writing an invalid bool byte through the u8 view is caught at commit.
    let dirty = schema.field_ref("transform", "dirty").unwrap();
    rejects(&db, "invalid value for `transform.dirty`", |t| {
        t.for_each_chunk_mut(&[dirty.table], |c| {
            c.write::<u8>(dirty)?[0] = 7;
            Ok(())
        })
    });
}

#[test]
fn import_rejects_malformed_documents_and_changes_nothing() {
    const NEW: u64 = (1 << 32) | 0x4d;
    let (db, a, _) = seeded();
    let good = db.export_json();
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (json!([1, 2]), "must be a JSON object"),
        (json!({"entities": [], "bogus": 1}), "unknown top-level key `bogus`"),
        (json!({"schema": "other", "entities": []}), "the file is for schema \"other\""),
        (json!({"format_version": 9, "entities": []}), "format_version 9 is not supported"),
        (json!({"entities": [{"id": "x"}]}), "entities[0] has no valid `id`"),
        (json!({"entities": [{"id": a.0}]}), "already exists"),
        (json!({"entities": [{"id": 77}]}), "entity id 77 has an invalid generation"),
        (json!({"entities": [{"id": (1u64 << 32) | 0xffff_fff0}]}), "one id may skip at most 1048576"),
        (json!({"entities": [{"id": (1u64 << 32) | 0x05f5_e100}]}), "one id may skip at most 1048576"),
        (
            json!({"entities": [{"id": NEW}], "components": {"player": [{"entity_id": NEW, "level": "x"}]}}),
            "components.player[0]",
        ),
        (json!({"entities": [{"id": NEW}], "components": {"nope": []}}), "unknown table `nope`"),
        (
            json!({"entities": [{"id": NEW}], "relations": {"owns": [{"from": NEW}]}}),
            "relations.owns[0] has no valid `to`",
        ),
    ];
    for (doc, needle) in cases {
        let before = db.read().canonical_state();
        let err = db.import_json(&doc).unwrap_err().to_string();
        assert!(err.contains(needle), "{err:?} should contain {needle:?}");
        assert_eq!(db.read().canonical_state(), before);
    }
    // The good export imports into a fresh database.
    let fresh = Database::example().unwrap();
    fresh.import_json(&good).unwrap();
    assert_eq!(fresh.read().canonical_state(), db.read().canonical_state());
}

#[test]
fn bad_schema_and_config_are_reported_at_build() {
    let err = Database::builder()
        .schema_toml("[tables.a]\n[[tables.a.fields]]\nname = \"x\"\ntype = \"nope\"\n")
        .unwrap_err();
    assert!(matches!(err, DbError::Schema(_)));
    assert!(err.to_string().contains("a.x: unknown type `nope`"), "{err}");
    let err = Database::builder().build().unwrap_err();
    assert!(matches!(err, DbError::NoSchema), "{err}");
}

/// The base row: a component whose `parent_table` is missing brings it along
/// with its defaults; explicit parents work in any order; removing a parent
/// that is still needed names what to do.
#[test]
fn parents_are_added_with_their_defaults() {
    let db = db();
    let (a, _) = db.write(|t| t.create_entity_json(&json!({"player": {"level": 3}}))).unwrap();
    let got = db.get_json(a).unwrap();
    assert_eq!(got["components"]["player"]["level"], 3);
    assert!(got["components"]["entities"].is_object(), "{got}");
    // Explicit parent values, child first in the object: still one row each.
    let (b, _) =
        db.write(|t| t.create_entity_json(&json!({"player": {"level": 1}, "entities": {"version": 7}}))).unwrap();
    assert_eq!(db.get_json(b).unwrap()["components"]["entities"]["version"], 7);
    // Adding a child to an entity without its parent adds the parent.
    let (c, _) = db.write(|t| t.create_entity_json(&json!({}))).unwrap();
    db.write(|t| t.insert_json(c, "health", &json!({"hp": 5}))).unwrap();
    assert!(db.get_json(c).unwrap()["components"]["entities"].is_object());
    // Removing the parent alone is refused, saying what to do.
    let err = db.write(|t| t.remove(a, "entities")).unwrap_err().to_string();
    assert!(err.contains("add `entities`") && err.contains("remove `player` too"), "{err}");
}

/// Entities created with chosen ids (mirroring another database): taken,
/// reused and far-off ids are refused; the allocator never hands out a
/// chosen id; the ids survive a restart.
#[test]
fn chosen_ids() {
    let dir = tempfile::tempdir().unwrap();
    let chosen = EntityId((1 << 32) | 0x28); // generation 1, slot 40
    {
        let db = Database::builder().schema_toml(ecsdb::EXAMPLE_SCHEMA).unwrap().data_dir(dir.path()).build().unwrap();
        db.write(|t| {
            t.create_entity_with_id(chosen)?;
            t.upsert_json(chosen, json!({"player": {"name": "mirrored"}}).as_object().unwrap())
        })
        .unwrap();
        assert!(db.write(|t| t.create_entity_with_id(chosen)).is_err(), "a live id");
        assert!(
            db.write(|t| t.create_entity_with_id(EntityId((1 << 32) | 0x7fff_ffff))).is_err(),
            "far past the ids in use"
        );
        let fresh: Vec<EntityId> = db.write(|t| (0..100).map(|_| t.create_entity()).collect()).unwrap().0;
        assert!(!fresh.contains(&chosen));
        let gone = fresh[0];
        db.write(|t| t.delete(gone)).unwrap();
        assert!(db.write(|t| t.create_entity_with_id(gone)).is_err(), "an id used by a deleted entity");
        db.close().unwrap();
    }
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(db.get_json(chosen).unwrap()["components"]["player"]["name"], "mirrored");
}
