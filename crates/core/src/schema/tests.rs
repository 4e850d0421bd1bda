use super::*;

const RPG: &str = include_str!("../../../../examples/schemas/rpg_game.toml");

fn errors(text: &str) -> Vec<String> {
    Schema::from_toml_str(text).expect_err("schema should be rejected").issues.iter().map(ToString::to_string).collect()
}

#[test]
fn rpg_example_loads() {
    let s = Schema::from_toml_str(RPG).unwrap();
    assert_eq!(s.name, "rpg_game");
    assert_eq!(s.version, "2.1.0");
    let names: Vec<_> = s.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["entities", "player", "transform", "physics", "health", "inventory"]);
    let entities = s.table_by_name("entities").unwrap();
    assert_eq!(entities.field("id").unwrap().role, FieldRole::EntityId);
    assert_eq!(entities.stored_len(), 2); // version, entity_type
    let player = s.table_by_name("player").unwrap();
    assert_eq!(player.parent, s.table_id("entities"));
    assert_eq!(player.field("entity_id").unwrap().role, FieldRole::EntityId);
    assert_eq!(player.field("name").unwrap().ty, FieldType::FixedString(64));
    let inv = s.table_by_name("inventory").unwrap();
    assert_eq!(inv.field("items").unwrap().size, Some(256));
    assert_eq!(s.enums[0].variants.len(), 5);
    assert_eq!(s.custom_types[1].size, 16);
    assert_eq!(s.custom_types[1].uniform, Some(Scalar::F32));
    assert_eq!(s.relations.len(), 2);
}

#[test]
fn normalized_dump_reparses_to_same_fingerprint() {
    let s = Schema::from_toml_str(RPG).unwrap();
    let text = s.to_toml_string();
    let again = Schema::from_toml_str(&text).unwrap();
    assert_eq!(again.fingerprint, s.fingerprint);
    assert_eq!(again.to_toml_string(), text);
}

#[test]
fn reports_all_errors_at_once_with_table_and_field() {
    let text = r#"
[database]
name = "x"
colour = "blue"

[tables.a]
[[tables.a.fields]]
name = "f"
type = "u33"
[[tables.a.fields]]
name = "f"
type = "u8"
[[tables.a.fields]]
name = "g"
type = "[f32; 100000]"
[[tables.a.fields]]
name = "r"
type = "u64"
foreign_key = "nowhere.id"
[[tables.a.fields]]
name = "_secret"
type = "u8"

[tables.b]
parent_table = "missing"

[enums.empty]
variants = []
"#;
    let errs = errors(text);
    let joined = errs.join("\n");
    assert!(joined.contains("unknown key `colour` in [database]"), "{joined}");
    assert!(joined.contains("a.f: unknown type `u33`"), "{joined}");
    assert!(joined.contains("a.f: duplicate field name `f`"), "{joined}");
    assert!(joined.contains("a.g: type `[f32; 100000]`: array length 100000 is longer than the maximum"), "{joined}");
    assert!(
        joined.contains("a.r: foreign_key `nowhere.id` references table `nowhere`, which is not declared"),
        "{joined}"
    );
    assert!(joined.contains("a._secret: field name `_secret` is reserved"), "{joined}");
    assert!(joined.contains("b: parent_table `missing` is not a declared table"), "{joined}");
    assert!(joined.contains("enum empty: enum has no variants"), "{joined}");
    assert_eq!(errs.len(), 8, "{joined}");
}

#[test]
fn foreign_keys_must_target_primary_keys_and_be_u64() {
    let text = r#"
[tables.e]
[[tables.e.fields]]
name = "id"
type = "u64"
primary_key = true
[[tables.e.fields]]
name = "hp"
type = "u32"

[tables.c]
[[tables.c.fields]]
name = "bad_target"
type = "u64"
foreign_key = "e.hp"
[[tables.c.fields]]
name = "bad_type"
type = "u32"
foreign_key = "e.id"
[[tables.c.fields]]
name = "no_dot"
type = "u64"
foreign_key = "e"
"#;
    let joined = errors(text).join("\n");
    assert!(
        joined.contains("c.bad_target: foreign_key `e.hp` must reference the primary key of `e` (`e.id`)"),
        "{joined}"
    );
    assert!(joined.contains("c.bad_type: foreign_key fields hold entity ids and must be u64, not u32"), "{joined}");
    assert!(joined.contains("c.no_dot: foreign_key `e` must be written as `table.field`"), "{joined}");
}

#[test]
fn primary_key_rules_and_entity_id_reservation() {
    let text = r#"
[tables.root]
[[tables.root.fields]]
name = "id"
type = "u32"
primary_key = true

[tables.child]
parent_table = "root"
[[tables.child.fields]]
name = "id"
type = "u64"
primary_key = true
[[tables.child.fields]]
name = "entity_id"
type = "u64"
"#;
    let joined = errors(text).join("\n");
    assert!(joined.contains("root.id: primary_key must be of type u64"), "{joined}");
    assert!(joined.contains("child.id: primary_key is only allowed in a root table"), "{joined}");
    assert!(joined.contains("child.entity_id: `entity_id` is reserved for the owning entity"), "{joined}");
}

#[test]
fn custom_type_cycles_and_var_fields_are_rejected() {
    let text = r#"
[custom_types.a]
[[custom_types.a.fields]]
name = "b"
type = "b"
[custom_types.b]
[[custom_types.b.fields]]
name = "a"
type = "[a; 2]"
[custom_types.s]
[[custom_types.s.fields]]
name = "text"
type = "string"
"#;
    let joined = errors(text).join("\n");
    assert!(joined.contains("contains itself"), "{joined}");
    assert!(joined.contains("custom type s.text: custom type fields must have a fixed size"), "{joined}");
}

#[test]
fn parent_cycles_and_relation_ends_are_checked() {
    let text = r#"
[tables.a]
parent_table = "b"
[tables.b]
parent_table = "a"
[relations.r]
from = "a"
to = "zzz"
"#;
    let joined = errors(text).join("\n");
    assert!(joined.contains("a: parent_table chain forms a cycle"), "{joined}");
    assert!(joined.contains("relation r: `to` names `zzz`, which is not a declared table"), "{joined}");
}

#[test]
fn defaults_are_typed() {
    let ok = r#"
[enums.kind]
variants = ["a", "b"]
[tables.t]
[[tables.t.fields]]
name = "k"
type = "kind"
default = "b"
[[tables.t.fields]]
name = "n"
type = "u8"
default = 7
"#;
    let s = Schema::from_toml_str(ok).unwrap();
    let t = s.table_by_name("t").unwrap();
    assert_eq!(t.field("k").unwrap().default, crate::value::Value::Enum(1));
    assert_eq!(t.field("n").unwrap().default, crate::value::Value::U64(7));
    let bad = ok.replace("default = 7", "default = 300").replace("default = \"b\"", "default = \"c\"");
    let joined = errors(&bad).join("\n");
    assert!(joined.contains("t.n: default: 300 is out of range for u8"), "{joined}");
    assert!(joined.contains("t.k: default: unknown variant \"c\" of enum kind"), "{joined}");
}

#[test]
fn system_tables_merge_with_reserved_names() {
    let sys = "[tables._users]\n[[tables._users.fields]]\nname = \"username\"\ntype = \"string\"\n";
    let s = Schema::with_system(RPG, sys).unwrap();
    assert!(s.table_by_name("_users").is_some());
    assert!(s.table_by_name("player").is_some());
    // The canonical dump re-parses as a system schema, and users still may not use `_`.
    assert!(Schema::with_system(&s.to_toml_string(), "").is_err());
    assert!(Schema::from_toml_str(sys).unwrap_err().to_string().contains("reserved"));
}

#[test]
fn invalid_toml_is_one_clear_error() {
    let errs = errors("[tables.a\nname=");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("invalid TOML"), "{}", errs[0]);
}

#[test]
fn nested_type_sizes_are_bounded_before_anything_is_built() {
    // 65,536 × 65,536 × 8 bytes, in 250 bytes of schema: refused at once
    // (it used to build the zero value of the type and exhaust memory).
    let bomb = r#"
[custom_types.c0]
[[custom_types.c0.fields]]
name = "a"
type = "[u64; 65536]"
[custom_types.c1]
[[custom_types.c1.fields]]
name = "a"
type = "[c0; 65536]"
[tables.t]
[[tables.t.fields]]
name = "x"
type = "u8"
"#;
    let joined = errors(bomb).join("\n");
    assert!(joined.contains("custom type c1"), "{joined}");
    assert!(joined.contains("larger than the maximum of 1048576"), "{joined}");
    let rel = "[relations.r]\n[[relations.r.fields]]\nname = \"p\"\ntype = \"[[u64; 65536]; 4]\"\n";
    let joined = errors(rel).join("\n");
    assert!(joined.contains("property of 2097152 bytes"), "{joined}");
}

#[test]
fn the_whole_schema_has_a_size_budget() {
    // Each table is within the row limit; together they are not.
    let mut text = String::new();
    for i in 0..20 {
        use std::fmt::Write;
        let _ = write!(text, "[tables.t{i}]\n[[tables.t{i}.fields]]\nname = \"a\"\ntype = \"[u64; 65536]\"\n");
    }
    let joined = errors(&text).join("\n");
    assert!(joined.contains("add up to 10485760 bytes"), "{joined}");
    let huge = "#".repeat(crate::schema::MAX_SCHEMA_TEXT + 1);
    assert!(errors(&huge)[0].contains("schema text of"));
}

#[test]
fn an_enum_with_too_many_variants_is_refused_without_reading_them() {
    let variants: Vec<String> = (0..300_000).map(|i| format!("\"v{i}\"")).collect();
    let text = format!("[enums.e]\nvariants = [{}]\n", variants.join(","));
    let joined = errors(&text).join("\n");
    assert!(joined.contains("enum has 300000 variants; at most 65536"), "{joined}");
    // Duplicates are found with a set, not by rescanning the list.
    let dup = "[enums.e]\nvariants = [\"a\", \"b\", \"a\"]\n";
    assert!(errors(dup).join("\n").contains("duplicate variant `a`"));
}

#[test]
fn deep_type_chains_are_refused_quickly_and_without_recursion() {
    use std::fmt::Write;
    // d0 -> d1 -> ... -> d19999: each custom type holds the next.
    let mut text = String::new();
    for i in 0..20_000 {
        let _ = write!(text, "[custom_types.d{i}]\n[[custom_types.d{i}.fields]]\nname = \"x\"\n");
        if i + 1 < 20_000 {
            let _ = writeln!(text, "type = \"d{}\"", i + 1);
        } else {
            text.push_str("type = \"u8\"\n");
        }
    }
    text.push_str("[tables.t]\n[[tables.t.fields]]\nname = \"v\"\ntype = \"d0\"\n");
    let joined = errors(&text).join("\n");
    assert!(joined.contains("custom types nest more than 8 deep"), "{}", &joined[..joined.len().min(300)]);
    // Arrays nested too deep, in one expression.
    let deep = format!("{}u8{}", "[".repeat(5000), "; 2]".repeat(5000));
    let t = format!("[tables.t]\n[[tables.t.fields]]\nname = \"v\"\ntype = \"{deep}\"\n");
    assert!(errors(&t).join("\n").contains("nests arrays 5000 deep"));
    // Eight levels are fine.
    let ok = format!("{}u8{}", "[".repeat(8), "; 2]".repeat(8));
    assert!(
        Schema::from_toml_str(&format!("[tables.t]\n[[tables.t.fields]]\nname = \"v\"\ntype = \"{ok}\"\n")).is_ok()
    );
}
