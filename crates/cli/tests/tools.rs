//! The operator tools through the real binaries: init, import, checkpoint,
//! verify, fsck, inspect, export, restore, rebuild-from-wal, and their
//! refusals and exit codes.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/schemas/rpg_game.toml");

fn ecsdb(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ecsdb")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn seeded(root: &Path) -> std::path::PathBuf {
    let d = root.join("data");
    let (code, _, err) = ecsdb(&["init", "--schema", EXAMPLE, "--data-dir", s(&d)]);
    assert_eq!(code, 0, "{err}");
    let doc = serde_json::json!({
        "entities": [{"id": (1u64 << 32) | 1}, {"id": (1u64 << 32) | 2}],
        "components": {
            "entities": [{"id": (1u64 << 32) | 1}, {"id": (1u64 << 32) | 2}],
            "player": [{"entity_id": (1u64 << 32) | 1, "name": "ana", "level": 7}, {"entity_id": (1u64 << 32) | 2, "name": "bo"}]
        },
        "relations": {"follows": [{"from": (1u64 << 32) | 1, "to": (1u64 << 32) | 2, "since_tick": 3}]}
    });
    let f = root.join("in.json");
    std::fs::write(&f, doc.to_string()).unwrap();
    let (code, out, err) = ecsdb(&["import", "--data-dir", s(&d), s(&f)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("imported 2 entities"), "{out}");
    d
}

#[test]
fn lifecycle_of_a_data_directory() {
    let root = tempfile::tempdir().unwrap();
    let d = seeded(root.path());
    let (code, out, err) = ecsdb(&["checkpoint", "--data-dir", s(&d)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("snapshot at sequence 1"), "{out}");
    let (code, out, _) = ecsdb(&["verify", s(&d)]);
    assert_eq!(code, 0, "{out}");
    let (code, out, err) = ecsdb(&["fsck", "--data-dir", s(&d)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("fsck: ok"));
    let (code, out, _) = ecsdb(&["inspect", "stats", s(&d), "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["entities"], 2);
    assert_eq!(v["tables"]["player"], 2);
    assert_eq!(v["relations"]["follows"], 1);
    // Export JSON, and it re-imports into a fresh directory identically.
    let exp = root.path().join("out.json");
    let (code, _, err) = ecsdb(&["export", "--data-dir", s(&d), "--format", "json", "--out", s(&exp)]);
    assert_eq!(code, 0, "{err}");
    let d2 = root.path().join("copy");
    ecsdb(&["init", "--schema", EXAMPLE, "--data-dir", s(&d2)]);
    let (code, _, err) = ecsdb(&["import", "--data-dir", s(&d2), s(&exp)]);
    assert_eq!(code, 0, "{err}");
    let exp2 = root.path().join("out2.json");
    ecsdb(&["export", "--data-dir", s(&d2), "--out", s(&exp2)]);
    let (a, b): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&std::fs::read_to_string(&exp).unwrap()).unwrap(),
        serde_json::from_str(&std::fs::read_to_string(&exp2).unwrap()).unwrap(),
    );
    assert_eq!(a["components"], b["components"]);
    assert_eq!(a["relations"], b["relations"]);
    // One table as JSON.
    let (code, out, _) = ecsdb(&["export", "--data-dir", s(&d), "--table", "player"]);
    assert_eq!(code, 0);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["name"], "ana");
    assert_eq!(rows.as_array().unwrap().len(), 2);
    let (code, _, err) = ecsdb(&["export", "--data-dir", s(&d), "--table", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown table `nope`"), "{err}");
    // CSV needs a table.
    let (code, _, err) = ecsdb(&["export", "--data-dir", s(&d), "--format", "csv"]);
    assert_eq!(code, 1);
    assert!(err.contains("needs --table"), "{err}");
    let (code, out, _) = ecsdb(&["export", "--data-dir", s(&d), "--format", "csv", "--table", "player"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("entity_id,name,level,experience\n4294967297,ana,7,0"), "{out}");
}

#[test]
fn restore_and_rebuild() {
    let root = tempfile::tempdir().unwrap();
    let d = seeded(root.path());
    ecsdb(&["checkpoint", "--data-dir", s(&d)]);
    let snap = std::fs::read_dir(d.join("snapshots")).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    let r = root.path().join("restored");
    let (code, out, err) = ecsdb(&["restore", s(&snap), "--data-dir", s(&r)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("at sequence 1 (2 entities)"), "{out}");
    // Refuses to overwrite, unless --force (which moves the old data aside).
    let (code, _, err) = ecsdb(&["restore", s(&snap), "--data-dir", s(&r)]);
    assert_eq!(code, 1);
    assert!(err.contains("already holds data"), "{err}");
    let (code, out, _) = ecsdb(&["restore", s(&snap), "--data-dir", s(&r), "--force"]);
    assert_eq!(code, 0);
    assert!(out.contains("moved the existing data"), "{out}");
    // Rebuild from the whole log (live + archive).
    let b = root.path().join("rebuilt");
    let (code, out, err) = ecsdb(&["rebuild-from-wal", s(&d), "--data-dir", s(&b)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rebuilt sequence 1"), "{out}");
    let (_, out, _) = ecsdb(&["inspect", "stats", s(&b), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["entities"], 2);
}

#[test]
fn damage_is_reported_with_exit_1() {
    let root = tempfile::tempdir().unwrap();
    let d = seeded(root.path());
    ecsdb(&["checkpoint", "--data-dir", s(&d)]);
    let snap = std::fs::read_dir(d.join("snapshots")).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    let mut b = std::fs::read(&snap).unwrap();
    let n = b.len();
    b[n - 5] ^= 0xff;
    std::fs::write(&snap, b).unwrap();
    let (code, _, err) = ecsdb(&["verify", s(&snap)]);
    assert_eq!(code, 1);
    assert!(err.contains("checksum mismatch"), "{err}");
    let (code, _, err) = ecsdb(&["verify", s(&d)]);
    assert_eq!(code, 1, "{err}");
    // The state still recovers (older snapshot + log), but fsck reports it.
    let (code, out, err) = ecsdb(&["fsck", "--data-dir", s(&d)]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("skipped snapshot"), "{out}");
    // Not a database at all.
    let (code, _, err) = ecsdb(&["verify", EXAMPLE]);
    assert_eq!(code, 1);
    assert!(err.contains("not a data directory"), "{err}");
    let (code, _, err) = ecsdb(&["fsck", "--data-dir", "/nonexistent/dir"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read the schema"), "{err}");
    // The guide's tool names work too.
    let out = Command::new(env!("CARGO_BIN_EXE_ecsdb-verify")).arg(s(&snap)).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn the_guides_tool_forms() {
    let root = tempfile::tempdir().unwrap();
    let d = seeded(root.path());
    ecsdb(&["checkpoint", "--data-dir", s(&d)]);
    // ecsdb-fsck /data/ecsdb/
    let out = Command::new(env!("CARGO_BIN_EXE_ecsdb-fsck")).arg(s(&d)).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // ecsdb-restore /data/ecsdb/snapshots/<snap>: in place, rolling back.
    let snap = std::fs::read_dir(d.join("snapshots")).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ecsdb-restore")).arg(s(&snap)).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, out, _) = ecsdb(&["inspect", "stats", s(&d), "--json"]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["entities"], 2);
    // Into another directory that holds data: needs --force.
    let other = root.path().join("other");
    let (code, _, err) = ecsdb(&["init", "--schema", EXAMPLE, "--data-dir", s(&other)]);
    assert_eq!(code, 0, "{err}");
    ecsdb(&["checkpoint", "--data-dir", s(&other)]);
    let out =
        Command::new(env!("CARGO_BIN_EXE_ecsdb-restore")).args([s(&snap), "--data-dir", s(&other)]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    // ecsdb-rebuild-from-wal DIR: a directory outside any data directory
    // needs a target.
    let lone = root.path().join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ecsdb-rebuild-from-wal")).arg(s(&lone)).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--data-dir"));
}

#[test]
fn a_locked_directory_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let d = seeded(root.path());
    let db = ecsdb::Database::builder().schema_toml(ecsdb::EXAMPLE_SCHEMA).unwrap().data_dir(&d).build().unwrap();
    let (code, _, err) = ecsdb(&["checkpoint", "--data-dir", s(&d)]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("in use by another process (pid {})", std::process::id())), "{err}");
    drop(db);
}

/// A data directory with 30 commits: the first 20 archived behind two
/// checkpoints, the last 10 in the live log. Returns it and the live segment.
fn with_history(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let d = root.join("data");
    let mut c = ecsdb::DatabaseConfig::default();
    c.persistence.checkpoint_on_shutdown = false;
    let db =
        ecsdb::Database::builder().config(c).schema_toml(ecsdb::EXAMPLE_SCHEMA).unwrap().data_dir(&d).build().unwrap();
    for i in 0..30u32 {
        db.write(|t| t.create_entity_json(&serde_json::json!({"entities": {}, "player": {"level": i}}))).unwrap();
        if i == 9 || i == 19 {
            db.checkpoint().unwrap();
        }
    }
    db.close().unwrap();
    drop(db);
    let mut live: Vec<_> = std::fs::read_dir(d.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::metadata(p).unwrap().len() > 32)
        .collect();
    live.sort();
    (d, live.pop().unwrap())
}

#[test]
fn tools_and_recovery_judge_the_log_tail_alike() {
    // A newest segment cut inside its header: a crash while creating it.
    let root = tempfile::tempdir().unwrap();
    let (d, _) = with_history(root.path());
    std::fs::write(d.join("wal").join(format!("{:020}.wal", 31)), [b'E', b'C', b'S']).unwrap();
    let (code, out, err) = ecsdb(&["verify", s(&d)]);
    assert_eq!(code, 0, "verify: {out}{err}");
    assert!(out.contains("unfinished segment header"), "{out}");
    let (code, out, err) = ecsdb(&["fsck", s(&d)]);
    assert_eq!(code, 0, "fsck: {out}{err}");
    assert!(out.contains("recovered sequence 30"), "{out}");

    // A flipped byte in the last (complete) record: both call it damage.
    let root = tempfile::tempdir().unwrap();
    let (d, live) = with_history(root.path());
    let mut b = std::fs::read(&live).unwrap();
    let n = b.len();
    b[n - 3] ^= 0x20;
    std::fs::write(&live, &b).unwrap();
    let (code, _, err) = ecsdb(&["verify", s(&d)]);
    assert_eq!(code, 1, "verify passed a damaged last record");
    assert!(err.contains("complete last record"), "{err}");
    let (code, _, err) = ecsdb(&["fsck", s(&d)]);
    assert_eq!(code, 1, "{err}");
    let (code, out, err) = ecsdb(&["fsck", s(&d), "--repair"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dropped commit 30"), "{out}");
    let (code, out, err) = ecsdb(&["fsck", s(&d)]);
    assert_eq!(code, 0, "after repair: {out}{err}");

    // Damage in an archived segment (covered by the snapshot): repair cuts
    // it, says which commits left the history, and fsck then passes.
    let root = tempfile::tempdir().unwrap();
    let (d, _) = with_history(root.path());
    let mut archived: Vec<_> = std::fs::read_dir(d.join("wal_archive")).unwrap().map(|e| e.unwrap().path()).collect();
    archived.sort();
    let first = &archived[0];
    let b = std::fs::read(first).unwrap();
    std::fs::write(first, &b[..b.len() - 5]).unwrap();
    let (code, _, err) = ecsdb(&["fsck", s(&d)]);
    assert_eq!(code, 1, "a damaged archive passed: {err}");
    let (code, out, err) = ecsdb(&["fsck", s(&d), "--repair"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("archived log cut"), "{out}");
    let (code, out, err) = ecsdb(&["fsck", s(&d)]);
    assert_eq!(code, 0, "after repair: {out}{err}");
    assert!(out.contains("recovered sequence 30"), "{out}");
    // The guide's form on the archive alone agrees: the gap is covered.
    let (code, out, err) = ecsdb(&["verify", &format!("{}/", d.join("wal_archive").display())]);
    assert_eq!(code, 0, "verify wal_archive/ after repair: {out}{err}");
    assert!(out.contains("has a gap"), "{out}");
}

/// A closed stdout or stderr (`| head`) ends a command with its own exit
/// code, never a panic (101).
#[test]
fn closed_output_pipes_are_not_a_crash() {
    use std::process::Stdio;
    let root = tempfile::tempdir().unwrap();
    let d = seeded(root.path());
    for _ in 0..5 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ecsdb"))
            .args(["verify", s(&root.path().join("missing"))])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stderr.take());
        drop(child.stdout.take());
        assert_eq!(child.wait().unwrap().code(), Some(1));
        let mut child = Command::new(env!("CARGO_BIN_EXE_ecsdb"))
            .args(["inspect", "stats", s(&d)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        drop(child.stderr.take());
        let code = child.wait().unwrap().code();
        assert!(code == Some(0) || code == Some(1), "{code:?}");
    }
}

/// Restore does not fill a directory that holds other files.
#[test]
fn restore_refuses_a_foreign_directory() {
    let root = tempfile::tempdir().unwrap();
    let d = seeded(root.path());
    ecsdb(&["checkpoint", "--data-dir", s(&d)]);
    let snap = std::fs::read_dir(d.join("snapshots")).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    let home = root.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("notes.txt"), "mine").unwrap();
    for force in [false, true] {
        let mut args = vec!["restore", s(&snap), "--data-dir", s(&home)];
        if force {
            args.push("--force");
        }
        let (code, _, err) = ecsdb(&args);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("not an ecsdb data directory"), "{err}");
    }
    assert_eq!(std::fs::read_dir(&home).unwrap().count(), 1);
}

const MIGRATION: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/migrations/v2_1_to_v2_2.toml");

/// Every file of a directory tree with its bytes.
fn tree(d: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(tree(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn migrate_plan_changes_nothing_and_apply_is_durable() {
    let root = tempfile::tempdir().unwrap();
    let d = seeded(root.path());
    let before = tree(&d);
    let (code, out, err) = ecsdb(&["migrate", "plan", "--data-dir", s(&d), MIGRATION]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("migration 2.1.0 -> 2.2.0"), "{out}");
    assert!(out.contains("builds the index on transform.position"), "{out}");
    assert!(out.contains("rewrites 2 row(s) of player"), "{out}");
    assert!(out.contains("nothing was changed"), "{out}");
    assert_eq!(tree(&d), before, "plan touches no file");
    let (code, out, err) = ecsdb(&["migrate", "apply", "--json", "--data-dir", s(&d), MIGRATION]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["applied"], true, "{out}");
    assert_eq!(v["to_version"], "2.2.0");
    // Applied once: again is refused, and the data says so.
    let (code, _, err) = ecsdb(&["migrate", "apply", "--data-dir", s(&d), MIGRATION]);
    assert_eq!(code, 1);
    assert!(err.contains("already applied"), "{err}");
    let (code, out, err) = ecsdb(&["export", "--data-dir", s(&d)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"title\": \"novice\""), "{out}");
    let (code, _, err) = ecsdb(&["fsck", "--data-dir", s(&d)]);
    assert_eq!(code, 0, "{err}");
    // A malformed file is refused before the directory is opened.
    let bad = root.path().join("bad.toml");
    std::fs::write(&bad, "[migration]\nfrom_version = \"2.2.0\"\n").unwrap();
    let (code, _, err) = ecsdb(&["migrate", "apply", "--data-dir", s(&d), s(&bad)]);
    assert_eq!(code, 1);
    assert!(err.contains("to_version"), "{err}");
}

#[test]
fn rebuild_from_wal_replays_through_migrations() {
    let root = tempfile::tempdir().unwrap();
    let d = seeded(root.path());
    let (code, _, err) = ecsdb(&["migrate", "apply", "--data-dir", s(&d), MIGRATION]);
    assert_eq!(code, 0, "{err}");
    let (_, before, _) = ecsdb(&["export", "--data-dir", s(&d)]);
    // Into a new directory, and in place: both start from the schema the
    // log began with (kept in schema_history/) and replay the migration.
    let copy = root.path().join("copy");
    let (code, out, err) = ecsdb(&["rebuild-from-wal", s(&d), "--data-dir", s(&copy)]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, after, _) = ecsdb(&["export", "--data-dir", s(&copy)]);
    assert_eq!(after, before);
    let (code, out, err) = ecsdb(&["rebuild-from-wal", s(&d)]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, after, _) = ecsdb(&["export", "--data-dir", s(&d)]);
    assert_eq!(after, before);
    let (code, _, err) = ecsdb(&["fsck", "--data-dir", s(&d)]);
    assert_eq!(code, 0, "{err}");
}
