//! `inspect stats D [--json]`: what a data directory holds: entities per
//! table, archetypes, relations, file sizes, the log's sequence range and the
//! snapshots' ages. Reads only.

use std::path::Path;
use std::process::ExitCode;

use ecsdb::storage::fs::OsFs;
use ecsdb::storage::store::{list_segments, list_snapshots, recover_read_only};
use serde_json::json;

use super::common::{fail, schema_for};

#[derive(clap::Subcommand, Debug)]
pub enum What {
    /// Figures about a data directory.
    Stats {
        /// The data directory.
        data_dir: std::path::PathBuf,
        #[arg(long)]
        schema: Option<std::path::PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn dir_bytes(d: &Path) -> u64 {
    std::fs::read_dir(d).map_or(0, |rd| rd.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
}

pub fn run(what: &What) -> ExitCode {
    let What::Stats { data_dir, schema, json } = what;
    let schema = match schema_for(data_dir, schema.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let (world, report) = match recover_read_only(&OsFs, data_dir, &schema) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let snapshots: Vec<serde_json::Value> = list_snapshots(&OsFs, &data_dir.join("snapshots"))
        .unwrap_or_default()
        .into_iter()
        .map(|(seq, p)| {
            let info = std::fs::read(&p).ok().and_then(|b| ecsdb::storage::snapshot::read_header(&p, &b).ok());
            json!({
                "file": p.display().to_string(),
                "seq": seq,
                "bytes": std::fs::metadata(&p).map_or(0, |m| m.len()),
                "age_secs": info.map(|i| now_ms.saturating_sub(i.created_ms) / 1000),
            })
        })
        .collect();
    let segs = list_segments(&OsFs, &data_dir.join("wal")).unwrap_or_default();
    let archived = list_segments(&OsFs, &data_dir.join("wal_archive")).unwrap_or_default();
    let tables: serde_json::Map<String, serde_json::Value> =
        schema.tables.iter().map(|t| (t.name.clone(), json!(world.table_len(t.id)))).collect();
    let relations: serde_json::Map<String, serde_json::Value> = schema
        .relations
        .iter()
        .map(|r| (r.name.clone(), json!(world.relations().iter().filter(|(k, _)| k.rel == r.id).count())))
        .collect();
    let out = json!({
        "data_dir": data_dir.display().to_string(),
        "schema": {"name": schema.name, "version": schema.version, "fingerprint": format!("{:016x}", schema.fingerprint)},
        "sequence": world.seq(),
        "entities": world.entity_count(),
        "tables": tables,
        "archetypes": world.archetypes().iter().filter(|a| !a.is_empty()).count(),
        "relations": relations,
        "memory_bytes": world.data_bytes(),
        "log": {
            "segments": segs.len(),
            "archived_segments": archived.len(),
            "first_seq": archived.first().or(segs.first()).map(|s| s.0),
            "last_seq": world.seq(),
            "bytes": dir_bytes(&data_dir.join("wal")),
            "archive_bytes": dir_bytes(&data_dir.join("wal_archive")),
        },
        "snapshots": snapshots,
        "recovery": {
            "snapshot_seq": report.snapshot.as_ref().map(|s| s.1),
            "records_replayed": report.records_replayed,
            "skipped_snapshots": report.skipped_snapshots,
            "ms": report.duration_ms,
        },
    });
    if *json {
        out!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    out!("data directory  {}", data_dir.display());
    out!("schema          {} v{}", schema.name, schema.version);
    out!("sequence        {}", world.seq());
    out!("entities        {}", world.entity_count());
    for t in &schema.tables {
        out!("  {:<14}{}", t.name, world.table_len(t.id));
    }
    out!("archetypes      {}", out["archetypes"]);
    for (name, n) in &relations {
        out!("relation {name:<15} {n}");
    }
    out!("memory          {} bytes (accounted live data)", world.data_bytes());
    out!(
        "log             {} segment(s), {} archived, {} + {} bytes, sequences {}..={}",
        segs.len(),
        archived.len(),
        out["log"]["bytes"],
        out["log"]["archive_bytes"],
        out["log"]["first_seq"],
        world.seq()
    );
    for s in &snapshots {
        out!(
            "snapshot        seq {} {} bytes, {} s old ({})",
            s["seq"],
            s["bytes"],
            s["age_secs"],
            s["file"].as_str().unwrap_or("")
        );
    }
    ExitCode::SUCCESS
}
