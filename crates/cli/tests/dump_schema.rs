//! The real binaries: `ecsdb dump-schema` and `ecsdb-dump-schema`.
#![allow(clippy::unwrap_used)]

use std::process::Command;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/schemas/rpg_game.toml");

fn run(bin: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn valid_schema_prints_normalized_toml_that_reparses() {
    let (code, out, err) = run(env!("CARGO_BIN_EXE_ecsdb"), &["dump-schema", EXAMPLE]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("[database]\nname = \"rpg_game\"\nversion = \"2.1.0\""), "{out}");
    assert!(out.contains("type = \"[f32; 3]\""));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("again.toml");
    std::fs::write(&p, &out).unwrap();
    let (code2, out2, _) = run(env!("CARGO_BIN_EXE_ecsdb"), &["dump-schema", p.to_str().unwrap()]);
    assert_eq!(code2, 0);
    assert_eq!(out, out2, "normalization is a fixed point");
}

#[test]
fn json_output() {
    let (code, out, _) = run(env!("CARGO_BIN_EXE_ecsdb"), &["dump-schema", "--json", EXAMPLE]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tables"][1]["name"], "player");
}

#[test]
fn invalid_schema_lists_every_problem_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "[tables.a]\n[[tables.a.fields]]\nname = \"x\"\ntype = \"u3\"\n[[tables.a.fields]]\nname = \"x\"\ntype = \"u8\"\n").unwrap();
    for bin in [env!("CARGO_BIN_EXE_ecsdb"), env!("CARGO_BIN_EXE_ecsdb-dump-schema")] {
        let args: Vec<&str> =
            if bin.ends_with("ecsdb") { vec!["dump-schema", p.to_str().unwrap()] } else { vec![p.to_str().unwrap()] };
        let (code, out, err) = run(bin, &args);
        assert_eq!(code, 1, "{bin}: {err}");
        assert!(out.is_empty());
        assert!(err.contains("2 problems"), "{err}");
        assert!(err.contains("a.x: unknown type `u3`"), "{err}");
        assert!(err.contains("a.x: duplicate field name `x`"), "{err}");
    }
}

#[test]
fn missing_file_and_bad_usage() {
    let (code, _, err) = run(env!("CARGO_BIN_EXE_ecsdb"), &["dump-schema", "/nonexistent/schema.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read /nonexistent/schema.toml"), "{err}");
    let (code, _, _) = run(env!("CARGO_BIN_EXE_ecsdb"), &["frobnicate"]);
    assert_eq!(code, 2);
}
