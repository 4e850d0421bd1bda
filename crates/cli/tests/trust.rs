//! Durability and availability through the real binaries: states no client
//! can use to brick the database, limits enforced before acknowledgement,
//! queries that cannot stall the server, and the deployment guide's
//! diagnostic and recovery commands run verbatim on a server's directory.
#![allow(clippy::unwrap_used)]
#![allow(clippy::many_single_char_names)]

#[path = "support/server.rs"]
mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{Value as J, json};
use support::{Server, spawn};

fn sigterm(s: &mut Server) {
    let kill = Command::new("sh").args(["-c", &format!("kill -TERM {}", s.child.id())]).status().unwrap();
    assert!(kill.success());
    let status = s.child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
}

/// Stop the server and hand back its directory.
fn stop(mut s: Server, clean: bool) -> tempfile::TempDir {
    if clean {
        sigterm(&mut s);
    } else {
        s.child.kill().unwrap();
        s.child.wait().unwrap();
    }
    std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap())
}

fn tool(bin: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Entities without components are legal on every path, and survive a
/// snapshot (a clean stop takes one) and every offline tool.
#[test]
fn component_less_entities_survive_snapshots_restarts_and_tools() {
    let srv = spawn(tempfile::tempdir().unwrap(), &[], None);
    let t = srv.admin();
    let a = srv.call("POST", "/v1/entities", Some(&t), Some(&json!({"components": {}})));
    assert_eq!(a.status, 201, "{}", a.body);
    let r = srv.call(
        "POST",
        "/v1/transactions",
        Some(&t),
        Some(&json!({"ops": [
            {"op": "create"},
            {"op": "create", "components": {"entities": {}, "player": {"level": 2}}},
            {"op": "remove", "id": "$1", "table": "player"},
            {"op": "remove", "id": "$1", "table": "entities"},
        ]})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let ids: Vec<J> = std::iter::once(a.body["id"].clone()).chain(r.body["ids"].as_array().unwrap().clone()).collect();
    let dir = stop(srv, true);
    let data = dir.path().join("data");
    assert!(std::fs::read_dir(data.join("snapshots")).unwrap().count() >= 1);
    for args in [
        vec!["fsck", "--data-dir", s(&data)],
        vec!["inspect", "stats", s(&data)],
        vec!["export", "--data-dir", s(&data), "--format", "json"],
    ] {
        let (code, _, err) = tool(env!("CARGO_BIN_EXE_ecsdb"), &args);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    let srv = spawn(dir, &[], None);
    let t = srv.admin();
    for id in &ids {
        let r = srv.call("GET", &format!("/v1/entities/{id}"), Some(&t), None);
        assert_eq!(r.status, 200, "{id}: {}", r.body);
        assert_eq!(r.body["components"], json!({}), "{}", r.body);
    }
    // And again after a second snapshot, taken on demand.
    assert_eq!(srv.call("POST", "/v1/admin/checkpoint", Some(&t), None).status, 200);
    let srv = spawn(stop(srv, false), &[], None);
    let t = srv.admin();
    assert_eq!(srv.call("GET", &format!("/v1/entities/{}", ids[0]), Some(&t), None).status, 200);
}

/// A transaction over the size limit is refused before anything is logged
/// or acknowledged; the server restarts after a SIGKILL with every
/// acknowledged commit.
#[test]
fn oversized_transactions_are_refused_before_acknowledgement() {
    let cfg = "[transactions]\nmax_transaction_mb = 1\n";
    let srv = spawn(tempfile::tempdir().unwrap(), &[], Some(cfg));
    let t = srv.admin();
    let seq = srv.seq(&t);
    // 600 inventories of 512 bytes each: about 300 KB, well within 1 MiB.
    let ops: Vec<J> =
        (0..600).map(|_| json!({"op": "create", "components": {"entities": {}, "inventory": {}}})).collect();
    let ok = srv.call("POST", "/v1/transactions", Some(&t), Some(&json!({"sync": true, "ops": ops})));
    assert_eq!(ok.status, 200, "{}", ok.body);
    // 2,500 of them: over the limit.
    let ops: Vec<J> =
        (0..2500).map(|_| json!({"op": "create", "components": {"entities": {}, "inventory": {}}})).collect();
    let r = srv.call("POST", "/v1/transactions", Some(&t), Some(&json!({"sync": true, "ops": ops})));
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "transaction_too_large", "{}", r.body);
    assert_eq!(srv.seq(&t), seq + 1, "the refused transaction took a sequence number");
    // Later commits go on, and everything acknowledged survives SIGKILL.
    let last = srv.call("POST", "/v1/entities", Some(&t), Some(&json!({"sync": true, "components": {}})));
    assert_eq!(last.status, 201);
    let srv = spawn(stop(srv, false), &[], Some(cfg));
    let t = srv.admin();
    assert_eq!(srv.call("GET", &format!("/v1/entities/{}", last.body["id"]), Some(&t), None).status, 200);
    let rows = srv.call("POST", "/v1/query", Some(&t), Some(&json!({"with": ["inventory"], "limit": 100_000})));
    assert_eq!(rows.body["rows"].as_array().map(Vec::len), Some(600), "{}", rows.status);
}

/// Queries are cancelled at their deadline (and the server goes on
/// answering); limits and result sizes are bounded; `sync: true` is
/// refused where it cannot be honoured; no-op writes take no sequence.
#[test]
fn queries_are_bounded_and_requests_say_what_they_did() {
    let cfg = "[server]\nquery_timeout_ms = 1\nmax_result_bytes = 4096\n";
    let srv = spawn(tempfile::tempdir().unwrap(), &[("ECSDB_WAL_ENABLED", "false")], Some(cfg));
    let t = srv.admin();
    for _ in 0..10 {
        let ops: Vec<J> = (0..5000)
            .map(|i| json!({"op": "create", "components": {"entities": {}, "player": {"level": i}}}))
            .collect();
        let r = srv.call("POST", "/v1/transactions", Some(&t), Some(&json!({"ops": ops})));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let q = json!({"with": ["player"], "order_by": {"field": "player.level"}, "filters": [{"field": "player.level", "op": "ge", "value": 0}]});
    let r = srv.call("POST", "/v1/query", Some(&t), Some(&q));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "query_timeout", "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("nothing was changed"));
    assert_eq!(srv.call("GET", "/health", None, None).status, 200);
    // Results are bounded in bytes, and limit 0 means no rows.
    let srv2 = spawn(tempfile::tempdir().unwrap(), &[], Some("[server]\nmax_result_bytes = 4096\n"));
    let t2 = srv2.admin();
    let ops: Vec<J> =
        (0..200).map(|i| json!({"op": "create", "components": {"entities": {}, "player": {"level": i}}})).collect();
    assert_eq!(srv2.call("POST", "/v1/transactions", Some(&t2), Some(&json!({"ops": ops}))).status, 200);
    let r = srv2.call("POST", "/v1/query", Some(&t2), Some(&json!({"with": ["player"]})));
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (400, Some("result_too_large")), "{}", r.body);
    let r = srv2.call("POST", "/v1/query", Some(&t2), Some(&json!({"with": ["player"], "limit": 0})));
    assert_eq!(r.body["rows"], json!([]), "{}", r.body);
    let r = srv2.call("POST", "/v1/query", Some(&t2), Some(&json!({"with": ["player"], "limit": 1_000_000})));
    assert_eq!(r.status, 400, "{}", r.body);
    // An empty PATCH changes nothing and takes no sequence number.
    let e = srv2.call(
        "POST",
        "/v1/entities",
        Some(&t2),
        Some(&json!({"components": {"entities": {}, "player": {"level": 1}}})),
    );
    let seq = srv2.seq(&t2);
    for body in [
        json!({"components": {}}),
        json!({"components": {"player": {}}}),
        json!({"components": {"player": {"level": 1}}}),
    ] {
        let r = srv2.call("PATCH", &format!("/v1/entities/{}", e.body["id"]), Some(&t2), Some(&body));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(srv2.seq(&t2), seq, "{body} took a sequence number");
    }
    // f32 overflow is refused, not stored as infinity.
    let r = srv2.call(
        "POST",
        "/v1/entities",
        Some(&t2),
        Some(&json!({"components": {"entities": {}, "transform": {"position": [1e39, 0, 0]}}})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(srv2.seq(&t2), seq);
    // Without a commit log, `sync: true` cannot be honoured: refused.
    let r = srv.call("POST", "/v1/entities", Some(&t), Some(&json!({"sync": true, "components": {}})));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("commit log is disabled"), "{}", r.body);
}

/// Section 5.2 and 5.3 of the deployment guide, verbatim, against a server's
/// data directory: verify the archive, dump the schema, restore the latest
/// snapshot, rebuild from the archived log, fsck — then the server starts on
/// the directory with every commit.
#[test]
fn the_guides_diagnostic_and_recovery_commands_run_verbatim() {
    let srv = spawn(tempfile::tempdir().unwrap(), &[], None);
    let t = srv.admin();
    let mut ids = Vec::new();
    for round in 0..3 {
        for i in 0..5 {
            let r = srv.call(
                "POST",
                "/v1/entities",
                Some(&t),
                Some(&json!({"components": {"entities": {}, "player": {"level": round * 10 + i}}})),
            );
            assert_eq!(r.status, 201, "{}", r.body);
            ids.push(r.body["id"].clone());
        }
        // Checkpoints move covered log segments to wal_archive/.
        assert_eq!(srv.call("POST", "/v1/admin/checkpoint", Some(&t), None).status, 200);
    }
    let dir = stop(srv, true);
    let d = dir.path().join("data");
    let data = format!("{}/", s(&d));
    // ecsdb-verify /data/ecsdb/wal_archive/
    let (code, out, err) = tool(env!("CARGO_BIN_EXE_ecsdb-verify"), &[&format!("{data}wal_archive/")]);
    assert_eq!(code, 0, "verify: {out}{err}");
    // ecsdb-dump-schema /data/ecsdb/schema.toml
    let (code, out, err) = tool(env!("CARGO_BIN_EXE_ecsdb-dump-schema"), &[&format!("{data}schema.toml")]);
    assert_eq!(code, 0, "dump-schema: {err}");
    assert!(out.contains("[tables.player]"), "{out}");
    // ecsdb-restore /data/ecsdb/snapshots/latest.ecsdb
    let (code, out, err) = tool(env!("CARGO_BIN_EXE_ecsdb-restore"), &[&format!("{data}snapshots/latest.ecsdb")]);
    assert_eq!(code, 0, "restore: {out}{err}");
    // ecsdb-rebuild-from-wal /data/ecsdb/wal_archive/
    let (code, out, err) = tool(env!("CARGO_BIN_EXE_ecsdb-rebuild-from-wal"), &[&format!("{data}wal_archive/")]);
    assert_eq!(code, 0, "rebuild: {out}{err}");
    // ecsdb-fsck /data/ecsdb/
    let (code, out, err) = tool(env!("CARGO_BIN_EXE_ecsdb-fsck"), &[&data]);
    assert_eq!(code, 0, "fsck: {out}{err}");
    // The server opens the directory with its own schema, every commit there.
    let srv = spawn(dir, &[], None);
    let t = srv.admin();
    for id in &ids {
        assert_eq!(srv.call("GET", &format!("/v1/entities/{id}"), Some(&t), None).status, 200, "{id}");
    }
}

/// At the memory ceiling, logins still work (sessions are bounded
/// bookkeeping), so an operator can get in and delete data; sessions do not
/// pile up.
#[test]
fn a_full_database_still_lets_operators_in_and_sessions_are_bounded() {
    let srv = spawn(tempfile::tempdir().unwrap(), &[("ECSDB_MAX_MEMORY_MB", "1")], None);
    let t = srv.admin();
    let mut last = None;
    for _ in 0..60 {
        let ops: Vec<J> =
            (0..50).map(|_| json!({"op": "create", "components": {"entities": {}, "inventory": {}}})).collect();
        let r = srv.call("POST", "/v1/transactions", Some(&t), Some(&json!({"ops": ops})));
        if r.status != 200 {
            assert_eq!(r.status, 507, "{}", r.body);
            break;
        }
        last = r.body["ids"].as_array().and_then(|a| a.first().cloned());
    }
    // Top it up one entity at a time until even one does not fit.
    for _ in 0..100 {
        let r =
            srv.call("POST", "/v1/entities", Some(&t), Some(&json!({"components": {"entities": {}, "inventory": {}}})));
        if r.status == 507 {
            break;
        }
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = srv.call("POST", "/v1/entities", Some(&t), Some(&json!({"components": {"entities": {}, "inventory": {}}})));
    assert_eq!(r.status, 507, "the ceiling was not reached: {}", r.body);
    for _ in 0..33 {
        srv.admin();
    }
    let sessions = srv.call("GET", "/v1/admin/sessions", Some(&t), None);
    let n = sessions.body["sessions"].as_array().map_or(0, Vec::len);
    assert!(n <= 32, "{n} sessions for one user");
    // The newest login works; the one from the start was the oldest and ended.
    let fresh = srv.admin();
    let id = last.unwrap();
    assert_eq!(srv.call("DELETE", &format!("/v1/entities/{id}"), Some(&fresh), None).status, 200);
    assert_eq!(srv.call("GET", "/v1/stats", Some(&t), None).status, 401);
}

/// A server's export holds user data only (unless asked for the system
/// tables) and imports into any directory with the same user schema.
#[test]
fn a_servers_export_imports_elsewhere() {
    let srv = spawn(tempfile::tempdir().unwrap(), &[], None);
    let t = srv.admin();
    for i in 0..3 {
        let r = srv.call(
            "POST",
            "/v1/entities",
            Some(&t),
            Some(&json!({"components": {"entities": {}, "player": {"level": i}}})),
        );
        assert_eq!(r.status, 201);
    }
    let dir = stop(srv, true);
    let data = dir.path().join("data");
    let out = dir.path().join("export.json");
    let bin = env!("CARGO_BIN_EXE_ecsdb");
    let (code, _, err) = tool(bin, &["export", "--data-dir", s(&data), "--format", "json", "--out", s(&out)]);
    assert_eq!(code, 0, "{err}");
    let doc: J = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(doc["entities"].as_array().unwrap().len(), 3, "{doc}");
    assert!(doc["components"].get("_users").is_none());
    let fresh = dir.path().join("fresh");
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/schemas/rpg_game.toml");
    assert_eq!(tool(bin, &["init", "--schema", schema, "--data-dir", s(&fresh)]).0, 0);
    let (code, o, err) = tool(bin, &["import", "--data-dir", s(&fresh), s(&out)]);
    assert_eq!(code, 0, "{o}{err}");
    assert!(o.contains("imported 3 entities"), "{o}");
    // The secrets only on request.
    let (code, o, _) = tool(bin, &["export", "--data-dir", s(&data), "--format", "json", "--include-system"]);
    assert_eq!(code, 0);
    assert!(o.contains("_users") && o.contains("argon2"));
    let (code, _, err) = tool(bin, &["export", "--data-dir", s(&data), "--format", "csv", "--table", "_users"]);
    assert_eq!(code, 1);
    assert!(err.contains("--include-system"), "{err}");
}
