//! Typed components through `#[derive(Component)]`: registration reports
//! every mismatch at once; typed writes and reads agree with the JSON API
//! and produce the same change sets.
#![allow(clippy::unwrap_used, clippy::many_single_char_names)]

use ecsdb::{Component, Database, EntityId};
use serde_json::json;

#[derive(Component, Debug, Clone, PartialEq)]
struct Transform {
    position: [f32; 3],
    rotation: [f32; 4],
    scale: [f32; 3],
    dirty: bool,
}

#[derive(Component, Debug, Clone, PartialEq)]
#[ecsdb(table = "player")]
struct Hero {
    name: String,
    level: u32,
    experience: u64,
}

/// Wrong in every way a struct can be wrong.
#[derive(Component, Debug)]
#[ecsdb(table = "player")]
struct Broken {
    name: u8,
    level: u32,
    entity_id: EntityId,
    nickname: String,
}

#[derive(Component, Debug)]
struct Nowhere {
    x: u8,
}

#[test]
fn registration_reports_every_mismatch() {
    let db = Database::example().unwrap();
    db.register::<Transform>().unwrap();
    db.register::<Hero>().unwrap();
    let e = db.register::<Broken>().unwrap_err().to_string();
    for needle in [
        "Broken.name: the Rust type u8 cannot hold `player.name` of type [u8; 64]",
        "Broken.entity_id: `player.entity_id` is the entity id itself",
        "Broken.nickname: table `player` has no field `nickname`",
        "field `experience` of table `player` (u64) has no struct field",
    ] {
        assert!(e.contains(needle), "{needle:?} missing from {e}");
    }
    let e = db.register::<Nowhere>().unwrap_err().to_string();
    assert!(e.contains("no table `nowhere`"), "{e}");
}

#[test]
fn typed_writes_and_reads_match_the_json_api() {
    let typed = Database::example().unwrap();
    let untyped = Database::example().unwrap();
    let t = Transform { position: [1.0, 2.0, 3.0], rotation: [0.0, 0.0, 0.0, 1.0], scale: [1.0; 3], dirty: true };
    let h = Hero { name: "ana".into(), level: 3, experience: 99 };
    let (a, c1) = typed
        .write(|tx| {
            let a = tx.spawn_component(&h)?;
            tx.insert_component(a, &t)?;
            Ok(a)
        })
        .unwrap();
    let (b, c2) = untyped
        .write(|tx| {
            tx.create_entity_json(&json!({
                "player": {"name": "ana", "level": 3, "experience": 99},
                "transform": {"position": [1, 2, 3], "rotation": [0, 0, 0, 1], "scale": [1, 1, 1], "dirty": true},
            }))
        })
        .unwrap();
    assert_eq!(a, b);
    // The same operations make the same change set.
    assert_eq!(c1.changes.as_bytes(), c2.changes.as_bytes());
    let r = typed.read();
    assert_eq!(r.get_component::<Transform>(a).unwrap(), t);
    assert_eq!(r.get_component::<Hero>(a).unwrap(), h);
    drop(r);
    let moved = Transform { position: [9.0, 9.0, 9.0], ..t.clone() };
    typed.write(|tx| tx.set_component(a, &moved)).unwrap();
    untyped.write(|tx| tx.set_json(b, "transform", &json!({"position": [9, 9, 9]}))).unwrap();
    assert_eq!(typed.read().canonical_state(), untyped.read().canonical_state());
    assert_eq!(typed.read().get_component::<Transform>(a).unwrap(), moved);
    // A value that does not fit is refused and changes nothing.
    let too_long = Hero { name: "x".repeat(65), level: 1, experience: 0 };
    let before = typed.read().canonical_state();
    assert!(typed.write(|tx| tx.spawn_component(&too_long)).is_err());
    assert_eq!(typed.read().canonical_state(), before);
    // A missing component is an error, not a default.
    let bare = typed.create_entity().unwrap();
    assert!(typed.read().get_component::<Hero>(bare).is_err());
}

const ENUM_SCHEMA: &str = r#"
[enums.kind]
variants = ["player", "npc", "treasure_chest"]

[tables.unit]
[[tables.unit.fields]]
name = "kind"
type = "kind"
[[tables.unit.fields]]
name = "hp"
type = "u16"
"#;

#[derive(ecsdb::Enum, Debug, Clone, Copy, PartialEq)]
enum Kind {
    Player,
    Npc,
    TreasureChest,
}

#[derive(Component, Debug, PartialEq)]
struct Unit {
    kind: Kind,
    hp: u16,
}

#[derive(ecsdb::Enum, Debug, Clone, Copy, PartialEq)]
enum Shuffled {
    Npc,
    Player,
    TreasureChest,
}

#[derive(Component, Debug)]
#[ecsdb(table = "unit")]
struct ShuffledUnit {
    kind: Shuffled,
    hp: u16,
}

/// Enum fields map to Rust enums by position, with the names checked.
#[test]
fn enum_fields_are_rust_enums() {
    let db = Database::builder().schema_toml(ENUM_SCHEMA).unwrap().build().unwrap();
    db.register::<Unit>().unwrap();
    let e = db.register::<ShuffledUnit>().unwrap_err().to_string();
    assert!(e.contains("the variants of Shuffled (npc, player, treasure_chest) are not those of `kind`"), "{e}");
    let u = Unit { kind: Kind::TreasureChest, hp: 7 };
    let (id, _) = db.write(|t| t.spawn_component(&u)).unwrap();
    assert_eq!(db.read().get_component::<Unit>(id).unwrap(), u);
    assert_eq!(db.get_json(id).unwrap()["components"]["unit"]["kind"], "treasure_chest");
}
