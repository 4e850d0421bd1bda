//! `restore SNAPSHOT [--data-dir D]`: start a data directory from a snapshot;
//! `restore --from URL ...`: from a backup target (see `backup.rs`).
//! The snapshot is verified by loading it before anything is written; an
//! existing directory with data is refused unless `--force`, which moves its
//! files aside (never deletes them). Without `--data-dir` the snapshot's own
//! directory is rolled back to it (its data is moved aside, as with
//! `--force`). `snapshots/latest` (any extension) names the newest snapshot
//! that verifies.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ecsdb::storage::snapshot;

use super::common::{config_for, fail, open, schema_for};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The snapshot file (`.snap`); or restore from a backup target with --from.
    #[arg(required_unless_present = "from", conflicts_with = "from")]
    pub snapshot: Option<PathBuf>,
    /// Restore from a backup target (a directory or `s3://bucket/prefix`):
    /// a backup plus the archived log, to its newest state, --backup ID,
    /// --to-seq N or --to-time RFC3339.
    #[arg(long, value_name = "URL")]
    pub from: Option<String>,
    #[command(flatten)]
    pub point: super::backup::RestoreArgs,
    /// config.toml with `[storage]` settings for --from (S3 endpoint, region).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Target data directory (default: the one the snapshot sits in, whose
    /// current data is then moved aside to `pre-restore-<time>/`).
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Schema file (default: the schema.toml of the snapshot's data directory).
    #[arg(long)]
    pub schema: Option<PathBuf>,
    /// Move existing data in DIR aside instead of refusing.
    #[arg(long)]
    pub force: bool,
}

struct Resolved {
    snapshot: PathBuf,
    data_dir: PathBuf,
    schema: Option<PathBuf>,
    force: bool,
}

/// `snapshots/latest[.ext]` → the newest snapshot there that verifies.
fn resolve_latest(path: &Path) -> Result<PathBuf, String> {
    let is_latest = path.file_stem().is_some_and(|s| s == "latest") && !path.exists();
    if !is_latest {
        return Ok(path.to_path_buf());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let snaps = ecsdb::storage::store::list_snapshots(&ecsdb::storage::fs::OsFs, dir).map_err(|e| e.to_string())?;
    for (_, p) in snaps {
        if std::fs::read(&p).is_ok_and(|b| snapshot::verify(&p, &b).is_ok()) {
            return Ok(p);
        }
        err!("warning: skipping {}, which does not verify", p.display());
    }
    Err(format!("{} names the newest snapshot, but {} holds no snapshot that verifies", path.display(), dir.display()))
}

/// Roll a data directory back to its snapshot at `seq`: what comes after it
/// (newer snapshots, log segments holding later commits) moves aside to
/// `pre-restore-<time>/`; the log up to `seq` stays, so the directory can
/// still be rebuilt from its log.
fn roll_back_in_place(dir: &Path, seq: u64) -> Result<(), String> {
    use ecsdb::storage::fs::OsFs;
    use ecsdb::storage::store::{list_segments, list_snapshots};
    let aside = super::common::aside_dir(dir, "pre-restore");
    let mut moves: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (s, p) in list_snapshots(&OsFs, &dir.join("snapshots")).map_err(|e| e.to_string())? {
        if s > seq {
            moves.push((p.clone(), aside.join("snapshots").join(p.file_name().unwrap_or_default())));
        }
    }
    for sub in ["wal", "wal_archive"] {
        let segs = list_segments(&OsFs, &dir.join(sub)).map_err(|e| e.to_string())?;
        for (i, (first, p)) in segs.iter().enumerate() {
            // The last commit a segment holds: just before the next one's
            // first, or (for the newest) found by reading it.
            let last = match segs.get(i + 1) {
                Some((next, _)) => next - 1,
                None => std::fs::read(p)
                    .ok()
                    .and_then(|b| ecsdb::storage::wal::format::scan(&b).ok())
                    .and_then(|s| s.records.last().map(|r| r.seq))
                    .unwrap_or(first.saturating_sub(1)),
            };
            if last > seq {
                moves.push((p.clone(), aside.join(sub).join(p.file_name().unwrap_or_default())));
            }
        }
    }
    for (from, to) in &moves {
        if let Some(parent) = to.parent() {
            super::common::create_private_dir(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::rename(from, to).map_err(|e| format!("moving {} aside: {e}", from.display()))?;
    }
    if !moves.is_empty() {
        out!("moved {} file(s) holding state after sequence {seq} to {}", moves.len(), aside.display());
    }
    Ok(())
}

pub fn run(args: &Args) -> ExitCode {
    if let Some(from) = &args.from {
        let t = super::backup::TargetArgs { target: Some(from.clone()), config: args.config.clone(), json: false };
        return match super::backup::target(&t) {
            Ok((target, _)) => {
                super::backup::restore_from(&target, &args.point, args.data_dir.as_ref(), args.force, false)
            }
            Err(e) => fail(e),
        };
    }
    if args.point.backup.is_some() || args.point.to_seq.is_some() || args.point.to_time.is_some() {
        return fail("--backup, --to-seq and --to-time restore from a backup target: add --from URL");
    }
    let Some(snapshot) = &args.snapshot else {
        return fail("name a snapshot file, or a backup target with --from URL");
    };
    let snapshot = match resolve_latest(snapshot) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let source_dir = snapshot.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    let in_place = args.data_dir.is_none();
    let data_dir = args.data_dir.clone().unwrap_or_else(|| source_dir.clone());
    let args = &Resolved { snapshot, data_dir, schema: args.schema.clone(), force: args.force || in_place };
    // Read the snapshot before anything moves (it may live in the target).
    let bytes = match std::fs::read(&args.snapshot) {
        Ok(b) => b,
        Err(e) => return fail(format!("{}: {e}", args.snapshot.display())),
    };
    let schema = match schema_for(&source_dir, args.schema.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let world = match snapshot::load(&args.snapshot, &bytes, &schema) {
        Ok(w) => w,
        Err(e) => return fail(format!("the snapshot does not load: {e}")),
    };
    // A directory with other files in it is not ours to fill.
    let foreign = !in_place
        && !super::common::holds_data(&args.data_dir)
        && std::fs::read_dir(&args.data_dir).is_ok_and(|rd| {
            rd.filter_map(Result::ok).any(|e| !ecsdb::is_data_dir_entry(&e.file_name().to_string_lossy()))
        });
    if foreign {
        return fail(format!(
            "{} holds files that are not an ecsdb data directory; restore into a new or empty directory",
            args.data_dir.display()
        ));
    }
    // Nobody else may have the directory open while its files move.
    let lock = if args.data_dir.is_dir() {
        match ecsdb::storage::lock::lock_dir(&args.data_dir) {
            Ok(l) => Some(l),
            Err(e) => return fail(e),
        }
    } else {
        None
    };
    if in_place {
        if let Err(e) = roll_back_in_place(&args.data_dir, world.seq()) {
            return fail(e);
        }
    } else if super::common::holds_data(&args.data_dir) {
        if !args.force {
            return fail(format!("{} already holds data; pass --force to move it aside", args.data_dir.display()));
        }
        let aside = super::common::aside_dir(&args.data_dir, "pre-restore");
        if let Err(e) = super::common::create_private_dir(&aside) {
            return fail(format!("{}: {e}", aside.display()));
        }
        for d in ["wal", "snapshots", "wal_archive", ecsdb::SCHEMA_FILE_NAME] {
            let from = args.data_dir.join(d);
            if from.exists()
                && let Err(e) = std::fs::rename(&from, aside.join(d))
            {
                return fail(format!("moving {} aside: {e}", from.display()));
            }
        }
        out!("moved the existing data to {}", aside.display());
    }
    let snaps = args.data_dir.join("snapshots");
    if let Err(e) = super::common::create_private_dir(&snaps) {
        return fail(format!("{}: {e}", snaps.display()));
    }
    let target = snaps.join(snapshot::snapshot_name(world.seq()));
    // In place the snapshot is already there: never rewrite it.
    let already = std::fs::read(&target).is_ok_and(|b| b == bytes);
    let written = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = super::common::PrivateFile::create(&target)?;
        f.file.write_all(&bytes)?;
        f.finish()?;
        std::fs::File::open(&snaps)?.sync_all()
    };
    if !already && let Err(e) = written() {
        return fail(format!("{}: {e}", target.display()));
    }
    drop(lock); // opening takes it again
    let mut config = match config_for(&args.data_dir, None) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    config.persistence.checkpoint_on_shutdown = false;
    match open(schema, config, false) {
        Ok(db) => {
            out!(
                "restored {} at sequence {} ({} entities) into {}",
                args.snapshot.display(),
                db.version(),
                db.read().entity_count(),
                args.data_dir.display()
            );
            match db.close() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Err(e) => fail(e),
    }
}
