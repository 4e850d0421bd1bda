//! `import` and `export`: JSON (lossless, ids preserved) and CSV (one table).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use ecsdb::core::io::{export_json, export_table_csv, export_table_json};
use ecsdb::storage::fs::OsFs;
use ecsdb::storage::store::recover_read_only;

use super::common::{DirArgs, config_for, fail, open, schema_for};

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    /// The JSON export to load (all or nothing).
    pub file: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    Json,
    Csv,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// Export only this table (required for CSV).
    #[arg(long)]
    pub table: Option<String>,
    /// Output file (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also export a server's system tables (users with password hashes,
    /// sessions, API-key hashes). Without it an export holds user data only
    /// and imports into any directory with the same user schema.
    #[arg(long)]
    pub include_system: bool,
}

/// Drop system tables (`_…`), the entities holding them and system
/// relations from a whole-database export.
fn strip_system(world: &ecsdb::World, doc: &mut serde_json::Value) {
    let is_system = |name: &str| name.starts_with('_');
    let system: std::collections::HashSet<String> = world
        .entities()
        .iter()
        .filter(|&id| world.tables_of(id).is_ok_and(|ts| ts.iter().any(|&t| is_system(&world.schema().table(t).name))))
        .map(|id| ecsdb::core::world::id_json(id).to_string())
        .collect();
    if let Some(serde_json::Value::Array(es)) = doc.get_mut("entities") {
        es.retain(|e| !system.contains(&e["id"].to_string()));
    }
    for key in ["components", "relations"] {
        if let Some(serde_json::Value::Object(m)) = doc.get_mut(key) {
            m.retain(|name, _| !is_system(name));
        }
    }
    if let Some(serde_json::Value::Object(rels)) = doc.get_mut("relations") {
        for rows in rels.values_mut() {
            if let serde_json::Value::Array(rows) = rows {
                rows.retain(|r| !system.contains(&r["from"].to_string()) && !system.contains(&r["to"].to_string()));
            }
        }
    }
}

/// Largest import file: a quarter of the memory ceiling, at least 64 MiB
/// (1 GiB without a ceiling).
fn import_limit(config: &ecsdb::DatabaseConfig) -> u64 {
    config.memory_limit_bytes().map_or(1 << 30, |b| (b as u64 / 4).max(64 << 20))
}

pub fn import(args: &ImportArgs) -> ExitCode {
    let d = &args.dir.resolved();
    let schema = match schema_for(&d.data_dir, d.schema.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let config = match config_for(&d.data_dir, d.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // The whole document is parsed before anything is written (all or
    // nothing), and parsed JSON takes several times its size: bound the file
    // by the memory ceiling before reading it.
    let limit = import_limit(&config);
    match std::fs::metadata(&args.file) {
        Ok(m) if m.len() > limit => {
            return fail(format!(
                "{} is {} bytes; an import file may take at most {limit} bytes (a quarter of [memory] max_capacity_mb, at least 64 MiB): split the export",
                args.file.display(),
                m.len()
            ));
        }
        Ok(_) => {}
        Err(e) => return fail(format!("{}: {e}", args.file.display())),
    }
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => return fail(format!("{}: {e}", args.file.display())),
    };
    let doc: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return fail(format!("{}: not JSON: {e}", args.file.display())),
    };
    drop(text);
    let db = match open(schema, config, false) {
        Ok(db) => db,
        Err(e) => return fail(e),
    };
    match db.import_json(&doc) {
        Ok((n, info)) => {
            out!("imported {n} entities in commit {}", info.seq);
            match db.close() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Err(e) => fail(format!("{e} (nothing was imported)")),
    }
}

pub fn export(args: &ExportArgs) -> ExitCode {
    if let Some(t) = &args.table
        && t.starts_with('_')
        && !args.include_system
    {
        return fail(format!("`{t}` is a system table; pass --include-system to export it (it holds secrets)"));
    }
    let d = &args.dir.resolved();
    let schema = match schema_for(&d.data_dir, d.schema.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let (world, _) = match recover_read_only(&OsFs, &d.data_dir, &schema) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let mut private = match &args.out {
        Some(p) => match super::common::PrivateFile::create(p) {
            Ok(f) => Some(f),
            Err(e) => return fail(format!("{}: {e}", p.display())),
        },
        None => None,
    };
    let mut out: Box<dyn Write + '_> = match &mut private {
        Some(f) => Box::new(std::io::BufWriter::new(&mut f.file)),
        None => Box::new(std::io::stdout().lock()),
    };
    let r = match args.format {
        Format::Json => {
            let doc = match &args.table {
                None => {
                    let mut doc = export_json(&world);
                    if !args.include_system {
                        strip_system(&world, &mut doc);
                    }
                    Ok(doc)
                }
                Some(t) => world.table_id(t).map(|tid| export_table_json(&world, tid)).map_err(|e| e.to_string()),
            };
            doc.and_then(|d| serde_json::to_writer_pretty(&mut out, &d).map_err(|e| e.to_string()))
        }
        Format::Csv => {
            let Some(t) = &args.table else {
                let names: Vec<_> = schema.tables.iter().map(|t| t.name.as_str()).collect();
                return fail(format!("CSV export needs --table (one of: {})", names.join(", ")));
            };
            match world.table_id(t) {
                Ok(tid) => export_table_csv(&world, tid, &mut out).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    let r = r.and_then(|()| out.flush().map_err(|e| e.to_string()));
    drop(out);
    match r.and_then(|()| private.map_or(Ok(()), |f| f.finish().map_err(|e| e.to_string()))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
