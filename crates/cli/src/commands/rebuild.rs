//! `rebuild-from-wal WAL_DIR [--data-dir D]`: rebuild a state by replaying a
//! commit log from its first commit (when snapshots are lost or damaged),
//! and start a data directory from it. Without `--data-dir` the log's own
//! data directory is rebuilt in place: its snapshots are moved aside
//! (never deleted) and replaced by one taken from the replayed log.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use ecsdb::World;
use ecsdb::storage::fs::{OsFs, Vfs};
use ecsdb::storage::snapshot;
use ecsdb::storage::store::{Mode, list_segments, replay_until};

use super::common::{config_for, fail, open, progress, schema_for};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A log directory (`wal`, `wal_archive`) or a data directory (both are used).
    pub wal_dir: PathBuf,
    /// Target data directory (default: the one the log belongs to, rebuilt
    /// in place).
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Schema file (default: schema.toml next to the log).
    #[arg(long)]
    pub schema: Option<PathBuf>,
    /// Stop right after commit N (point-in-time); the log must reach it.
    #[arg(long = "to-seq", value_name = "N")]
    pub to_seq: Option<u64>,
}

struct Resolved {
    data_dir: PathBuf,
}

pub fn run(args: &Args) -> ExitCode {
    let w = &args.wal_dir;
    // A data directory, or its `wal/` or `wal_archive/`: then both of its
    // log directories hold the log. Any other directory is a log on its own.
    let home = if w.join("wal").is_dir() {
        Some(w.clone())
    } else {
        w.parent()
            .filter(|p| w.file_name().is_some_and(|n| n == "wal" || n == "wal_archive") && p.join("wal").is_dir())
            .map(Path::to_path_buf)
    };
    let (segment_dirs, schema_home): (Vec<PathBuf>, PathBuf) = match &home {
        Some(h) => (vec![h.join("wal_archive"), h.join("wal")], h.clone()),
        None => (vec![w.clone()], w.parent().map(Path::to_path_buf).unwrap_or_default()),
    };
    let in_place = args.data_dir.is_none();
    let schema_file = args.schema.clone();
    let to_seq = args.to_seq;
    if in_place && to_seq.is_some() {
        return fail(
            "--to-seq rebuilds into a new directory (the log here holds the later commits): add --data-dir DIR",
        );
    }
    let Some(data_dir) = args.data_dir.clone().or_else(|| home.clone()) else {
        return fail(format!(
            "{} is not part of a data directory; name the directory to rebuild into with --data-dir",
            w.display()
        ));
    };
    let args = &Resolved { data_dir };
    let schema = match schema_for(&schema_home, schema_file.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mut segs = Vec::new();
    for d in &segment_dirs {
        match list_segments(&OsFs, d) {
            Ok(v) => {
                for s in v {
                    if !segs.iter().any(|(x, _): &(u64, PathBuf)| *x == s.0) {
                        segs.push(s);
                    }
                }
            }
            Err(e) => return fail(e),
        }
    }
    segs.sort();
    if segs.first().is_none_or(|s| s.0 != 1) {
        return fail(format!(
            "the log in {} does not start at sequence 1 (first segment: {}); a rebuild needs every commit",
            w.display(),
            segs.first().map_or_else(|| "none".to_string(), |s| s.1.display().to_string())
        ));
    }
    // The log starts under the schema its first segment names: after
    // migrations that is an older one than schema.toml, kept in the
    // directory's schema history.
    let first_fp = std::fs::read(&segs[0].1)
        .ok()
        .and_then(|b| ecsdb::storage::wal::format::SegmentHeader::decode(&b).ok())
        .map(|h| h.fingerprint);
    let schema = match first_fp {
        Some(fp) if fp != schema.fingerprint => {
            let p = schema_home.join(ecsdb::SCHEMA_HISTORY_DIR).join(format!("{fp:016x}.toml"));
            match std::fs::read_to_string(&p)
                .map_err(|e| e.to_string())
                .and_then(|t| ecsdb::Schema::from_stored_toml(&t).map_err(|e| e.to_string()))
            {
                Ok(s) if s.fingerprint == fp => Arc::new(s),
                Ok(_) => return fail(format!("{} does not hash to {fp:016x}", p.display())),
                Err(e) => {
                    return fail(format!(
                        "the log starts under schema {fp:016x}, not {}'s {:016x}, and {} is not readable ({e}); pass that schema with --schema",
                        if schema_file.is_some() { "the given schema" } else { "schema.toml" },
                        schema.fingerprint,
                        p.display()
                    ));
                }
            }
        }
        _ => schema,
    };
    if !in_place && super::common::holds_data(&args.data_dir) {
        return fail(format!("{} already holds data; rebuild into an empty directory", args.data_dir.display()));
    }
    // In place, nobody else may have the directory open meanwhile.
    let lock = if in_place {
        match ecsdb::storage::lock::lock_dir(&args.data_dir) {
            Ok(l) => Some(l),
            Err(e) => return fail(e),
        }
    } else {
        None
    };
    let until = to_seq.unwrap_or(u64::MAX);
    let pb = progress(segs.len() as u64, "replaying");
    let mut world = World::new(schema.clone());
    let mut report = ecsdb::RecoveryReport::default();
    for s in &segs {
        if let Err(e) = replay_until(&OsFs, std::slice::from_ref(s), &mut world, Mode::ReadOnly, &mut report, until) {
            pb.finish_and_clear();
            return fail(format!("replay stopped: {e}"));
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    if until != u64::MAX && world.seq() < until {
        return fail(format!("the log ends at sequence {}, before --to-seq {until}", world.seq()));
    }
    let problems = world.check_integrity();
    if !problems.is_empty() {
        return fail(format!("the rebuilt state fails integrity checks: {}", problems.join("; ")));
    }
    let snaps = args.data_dir.join("snapshots");
    let fs: Arc<dyn Vfs> = Arc::new(OsFs);
    if in_place && std::fs::read_dir(&snaps).is_ok_and(|mut r| r.next().is_some()) {
        let aside = super::common::aside_dir(&args.data_dir, "pre-rebuild");
        if let Err(e) =
            super::common::create_private_dir(&aside).and_then(|()| std::fs::rename(&snaps, aside.join("snapshots")))
        {
            return fail(format!("moving {} aside: {e}", snaps.display()));
        }
        out!("moved the existing snapshots to {}", aside.join("snapshots").display());
    }
    if let Err(e) = fs.create_dir_all(&snaps) {
        return fail(format!("{}: {e}", snaps.display()));
    }
    let image = snapshot::capture(&world);
    if let Err(e) = snapshot::write(&fs, &snaps, &image, 3) {
        return fail(e);
    }
    let mut config = match config_for(&args.data_dir, None) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    config.persistence.checkpoint_on_shutdown = false;
    drop(lock); // opening takes it again
    // The replayed log may have migrated the schema: open under the result.
    let schema = world.schema().clone();
    match open(schema, config, false).and_then(|db| {
        let seq = db.version();
        db.close().map_err(|e| e.to_string())?;
        Ok(seq)
    }) {
        Ok(seq) => {
            out!(
                "rebuilt sequence {seq} from {} record(s) in {} segment(s) into {}",
                report.records_replayed,
                segs.len(),
                args.data_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
