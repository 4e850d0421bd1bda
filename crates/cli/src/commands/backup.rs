//! `ecsdb backup create|list|verify|delete|restore`: the backup manager on
//! the command line. The target is `--target URL` (a directory or
//! `s3://bucket/prefix`), else `[backup] target` of `--config`, else
//! `ECSDB_BACKUP_TARGET`; S3 credentials come from the `AWS_*` variables.
//! `backup restore` is `ecsdb restore --from TARGET`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use ecsdb_backup::manager::Progress;
use ecsdb_backup::{Kind, Manager, Point, Request, Target};

use super::common::{config_for, fail, open, schema_for};

#[derive(clap::Args, Debug, Clone)]
pub struct TargetArgs {
    /// Where backups live: a directory, `file:///dir` or `s3://bucket/prefix`
    /// (default: `[backup] target` of --config, or `ECSDB_BACKUP_TARGET`).
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// config.toml with `[backup]` and `[storage]` sections.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Back up a data directory now (full, or --incremental: the commits
    /// since the newest backup). A running server takes its own:
    /// POST /v1/admin/backups.
    Create {
        #[command(flatten)]
        t: TargetArgs,
        /// The data directory (default ./data).
        #[arg(long = "data-dir", value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Only the commits since the newest backup of this database.
        #[arg(long)]
        incremental: bool,
    },
    /// List the backups on the target, oldest first.
    List {
        #[command(flatten)]
        t: TargetArgs,
    },
    /// Check a backup (or, without ID, every backup and the archived log):
    /// every file's size and SHA-256 and format; --deep also restores into
    /// a temporary directory and compares the state checksum.
    Verify {
        #[command(flatten)]
        t: TargetArgs,
        id: Option<String>,
        #[arg(long)]
        deep: bool,
    },
    /// Delete a backup (--force also deletes the incrementals built on it).
    Delete {
        #[command(flatten)]
        t: TargetArgs,
        id: String,
        #[arg(long)]
        force: bool,
    },
    /// Restore from the target (the same as `ecsdb restore --from TARGET`).
    Restore {
        #[command(flatten)]
        t: TargetArgs,
        #[command(flatten)]
        r: RestoreArgs,
        /// The directory to restore into (new or empty).
        #[arg(long = "data-dir", value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Move what DIR holds aside (to DIR/pre-restore-<time>/) instead of refusing.
        #[arg(long)]
        force: bool,
    },
}

/// Where and to what point a restore goes.
#[derive(clap::Args, Debug, Clone)]
pub struct RestoreArgs {
    /// Restore this backup (default: the newest state the target can give).
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
    /// Stop right after commit N.
    #[arg(long = "to-seq", value_name = "N", conflicts_with = "to_time")]
    pub to_seq: Option<u64>,
    /// Stop after the last commit made at or before this time (RFC 3339).
    #[arg(long = "to-time", value_name = "TIME")]
    pub to_time: Option<String>,
}

fn settings(t: &TargetArgs) -> Result<ecsdb_server::config::ServerConfig, String> {
    let mut c = match &t.config {
        Some(p) => ecsdb_server::config::ServerConfig::from_file(p).map_err(|e| e.to_string())?,
        None => ecsdb_server::config::ServerConfig::default(),
    };
    c.apply_env(std::env::vars()).map_err(|e| e.to_string())?;
    Ok(c)
}

/// Open the target the arguments name.
pub fn target(t: &TargetArgs) -> Result<(Arc<Target>, ecsdb_server::config::ServerConfig), String> {
    let c = settings(t)?;
    let url = t.target.clone().or_else(|| c.backup.target_url(&c.storage)).ok_or(
        "no backup target: pass --target URL (a directory or s3://bucket/prefix), or set [backup] target in --config, or ECSDB_BACKUP_TARGET",
    )?;
    let target = Target::open(&url, &c.storage).map_err(|e| e.to_string())?;
    Ok((Arc::new(target), c))
}

/// A progress bar on terminals (stage as message, bytes as position).
fn bar() -> (indicatif::ProgressBar, impl Fn(&str, u64, u64) + Sync) {
    let pb = super::common::progress(0, "");
    let p = pb.clone();
    let f = move |stage: &str, done: u64, total: u64| {
        p.set_message(stage.to_string());
        if total > 0 {
            p.set_length(total);
            p.set_position(done);
        }
    };
    (pb, f)
}

fn size(b: u64) -> String {
    if b >= 1 << 20 { format!("{:.1} MiB", b as f64 / 1_048_576.0) } else { format!("{:.1} KiB", b as f64 / 1024.0) }
}

fn json_out<T: ?Sized + serde::Serialize>(v: &T) {
    out!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub fn run(a: &Action) -> ExitCode {
    match a {
        Action::Create { t, data_dir, incremental } => create(t, data_dir.as_ref(), *incremental),
        Action::List { t } => list(t),
        Action::Verify { t, id, deep } => verify(t, id.as_deref(), *deep),
        Action::Delete { t, id, force } => delete(t, id, *force),
        Action::Restore { t, r, data_dir, force } => match target(t) {
            Ok((tg, _)) => restore_from(&tg, r, data_dir.as_ref(), *force, t.json),
            Err(e) => fail(e),
        },
    }
}

fn create(t: &TargetArgs, data_dir: Option<&PathBuf>, incremental: bool) -> ExitCode {
    // The data directory first: a failed command creates nothing.
    let dir = data_dir.cloned().unwrap_or_else(|| PathBuf::from("./data"));
    if !dir.join(ecsdb::SCHEMA_FILE_NAME).exists() {
        return fail(format!("{} is not an ecsdb data directory (no {})", dir.display(), ecsdb::SCHEMA_FILE_NAME));
    }
    let (target, conf) = match target(t) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let schema = match schema_for(&dir, None) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mut config = match config_for(&dir, None) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    config.persistence.checkpoint_on_shutdown = false;
    let db = match open(schema, config, false) {
        Ok(db) => db,
        Err(e) if e.contains("lock") || e.contains("in use") => {
            return fail(format!(
                "{e}\n(a running server backs itself up: POST /v1/admin/backups, or its [backup] interval)"
            ));
        }
        Err(e) => return fail(e),
    };
    let mgr = Manager::new(target, conf.backup.clone());
    let (pb, progress) = bar();
    let kind = if incremental { Kind::Incremental } else { Kind::Full };
    // A node of a replicated cluster records the history its data is on.
    let history = ecsdb_server::replication::state::load(&dir).ok().flatten().map(|s| s.branch());
    let made = mgr.create_on(&db, kind, &progress as Progress<'_>, history);
    pb.finish_and_clear();
    let _ = db.close();
    match made {
        Ok(man) => {
            let deleted = mgr.apply_retention().unwrap_or_else(|e| {
                err!("warning: retention not applied: {e}");
                Vec::new()
            });
            if t.json {
                json_out(&serde_json::json!({"backup": man, "retention_deleted": deleted}));
            } else {
                out!("Backup created: {}", man.id);
                out!("  Type: {}", man.kind);
                out!("  Sequence: {}..{}", man.start_seq, man.end_seq);
                out!(
                    "  Entities: {}, Components: {}, Relations: {}",
                    man.entity_count,
                    man.component_count,
                    man.relation_count
                );
                out!(
                    "  Size: {} raw, {} stored (compressed: {})",
                    size(man.raw_bytes),
                    size(man.stored_bytes),
                    man.compressed
                );
                out!("  Checksum: {}", man.state_checksum);
                out!("  Took: {} ms", man.duration_ms);
                for d in deleted {
                    out!("Deleted old backup: {d}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn list(t: &TargetArgs) -> ExitCode {
    let (target, c) = match target(t) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let m = Manager::new(target, c.backup);
    let listed = match m.list() {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    if t.json {
        let v: Vec<serde_json::Value> = listed
            .iter()
            .map(|l| serde_json::json!({"id": l.id, "manifest": l.manifest, "problem": l.problem, "objects": l.objects, "stored_bytes": l.stored_bytes}))
            .collect();
        json_out(&v);
        return ExitCode::SUCCESS;
    }
    if listed.is_empty() {
        out!("no backups on {}", m.target.url());
    }
    for l in &listed {
        if let Some(man) = &l.manifest {
            out!(
                "{}  {:<11}  {}  seq {}..{}  {} entities, {} relations  {}{}",
                man.id,
                man.kind.to_string(),
                man.created_at,
                man.start_seq,
                man.end_seq,
                man.entity_count,
                man.relation_count,
                size(man.stored_bytes),
                man.parent.as_ref().map_or_else(String::new, |p| format!("  (on {p})"))
            );
        } else {
            out!("{}  UNUSABLE: {}", l.id, l.problem.clone().unwrap_or_default());
        }
    }
    ExitCode::SUCCESS
}

fn verify(t: &TargetArgs, id: Option<&str>, deep: bool) -> ExitCode {
    let (target, c) = match target(t) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let m = Manager::new(target, c.backup);
    let (pb, progress) = bar();
    let reports = match id {
        Some(id) => Ok(vec![ecsdb_backup::verify::verify_backup(&m, id, deep, &progress)]),
        None => ecsdb_backup::verify::verify_all(&m, deep, &progress),
    };
    pb.finish_and_clear();
    let reports = match reports {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    // Checking everything, an interrupted backup (never used, removed a
    // day later) is listed but is not damage; named, it is not usable.
    let ok = reports.iter().all(|r| r.ok || (id.is_none() && r.incomplete));
    if t.json {
        json_out(&serde_json::json!({"ok": ok, "reports": reports}));
    } else {
        for r in &reports {
            if r.ok {
                out!(
                    "ok       {}: {} file(s), {}{}",
                    r.id,
                    r.files_checked,
                    size(r.bytes_checked),
                    if r.deep == Some(true) { ", restored and compared" } else { "" }
                );
            } else if r.incomplete && id.is_none() {
                out!(
                    "skipped  {}: incomplete (interrupted before its manifest; never used, removed by retention a day later)",
                    r.id
                );
            } else {
                out!("DAMAGED  {}:", r.id);
                for p in &r.problems {
                    out!("  - {p}");
                }
            }
        }
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

fn delete(t: &TargetArgs, id: &str, force: bool) -> ExitCode {
    let (target, c) = match target(t) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    match Manager::new(target, c.backup).delete(id, force) {
        Ok(gone) => {
            if t.json {
                json_out(&serde_json::json!({"deleted": gone}));
            } else {
                for g in gone {
                    out!("Deleted backup: {g}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// Restore from a target into `data_dir` (`ecsdb restore --from`).
pub fn restore_from(
    target: &Arc<Target>,
    r: &RestoreArgs,
    data_dir: Option<&PathBuf>,
    force: bool,
    json: bool,
) -> ExitCode {
    let point = match (&r.to_seq, &r.to_time) {
        (Some(n), _) => Point::Seq(*n),
        (None, Some(t)) => match Point::parse_time(t) {
            Ok(p) => p,
            Err(e) => return fail(e),
        },
        (None, None) => Point::Latest,
    };
    let Some(data_dir) = data_dir.cloned() else {
        return fail("name the directory to restore into with --data-dir DIR");
    };
    let req = Request { backup: r.backup.clone(), point, data_dir, force };
    let (pb, progress) = bar();
    let res = ecsdb_backup::restore::restore(target, &req, &progress);
    pb.finish_and_clear();
    match res {
        Ok(o) => {
            if json {
                json_out(&o);
            } else {
                if let Some(a) = &o.moved_aside {
                    out!("moved the existing contents to {}", a.display());
                }
                out!(
                    "restored sequence {} ({} entities) into {}: {} at {} + {} commit(s) replayed{}",
                    o.seq,
                    o.entities,
                    o.data_dir.display(),
                    o.base,
                    o.base_seq,
                    o.commits_replayed,
                    o.last_commit_time.as_ref().map_or_else(String::new, |t| format!(", the last made at {t}"))
                );
                if let Some(m) = o.other_history_after {
                    out!(
                        "note: the archived log past commit {m} is of another history than this base (a former primary's commits past a failover): not used"
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
