//! `restore SNAPSHOT --data-dir D`: start a data directory from a snapshot.
//! The snapshot is verified by loading it before anything is written; an
//! existing directory with data is refused unless `--force`, which moves its
//! files aside (never deletes them).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ecsdb::storage::snapshot;

use super::common::{config_for, fail, open, schema_for};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The snapshot file (`.snap`).
    pub snapshot: PathBuf,
    /// Target data directory (default: the one the snapshot sits in, which
    /// then needs --force: its current data is moved aside).
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

fn has_data(dir: &Path) -> bool {
    ["wal", "snapshots", "wal_archive"]
        .iter()
        .any(|d| std::fs::read_dir(dir.join(d)).is_ok_and(|mut rd| rd.next().is_some()))
}

pub fn run(args: &Args) -> ExitCode {
    let source_dir = args.snapshot.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    let data_dir = args.data_dir.clone().unwrap_or_else(|| source_dir.clone());
    let args = &Resolved { snapshot: args.snapshot.clone(), data_dir, schema: args.schema.clone(), force: args.force };
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
    if has_data(&args.data_dir) {
        if !args.force {
            return fail(format!("{} already holds data; pass --force to move it aside", args.data_dir.display()));
        }
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let aside = args.data_dir.join(format!("pre-restore-{stamp}"));
        if let Err(e) = std::fs::create_dir_all(&aside) {
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
        println!("moved the existing data to {}", aside.display());
    }
    let snaps = args.data_dir.join("snapshots");
    if let Err(e) = std::fs::create_dir_all(&snaps) {
        return fail(format!("{}: {e}", snaps.display()));
    }
    let target = snaps.join(snapshot::snapshot_name(world.seq()));
    if let Err(e) = std::fs::write(&target, &bytes).and_then(|()| std::fs::File::open(&target)?.sync_all()) {
        return fail(format!("{}: {e}", target.display()));
    }
    let mut config = match config_for(&args.data_dir, None) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    config.persistence.checkpoint_on_shutdown = false;
    match open(schema, config, false) {
        Ok(db) => {
            println!(
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
