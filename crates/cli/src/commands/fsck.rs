//! `fsck D [--repair]`: everything `verify` checks, plus a full recovery in
//! memory (snapshot + log continuity and replay) and the state's integrity
//! (locations, foreign keys, relation ends). Changes nothing unless
//! `--repair`, which opens the directory cutting the log at the first damage.

use std::process::ExitCode;

use ecsdb::storage::fs::OsFs;
use ecsdb::storage::store::recover_read_only;

use super::common::{DirArgs, config_for, fail, open, schema_for};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The data directory (or --data-dir).
    pub path: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub dir: DirArgs,
    /// Cut the log at the first damage (reports what is dropped).
    #[arg(long)]
    pub repair: bool,
}

pub fn run(args: &Args) -> ExitCode {
    let mut d = args.dir.clone();
    match (&args.path, &d.data_dir) {
        (Some(p), None) => d.data_dir = Some(p.clone()),
        (None, None) => return fail("fsck needs a data directory: ecsdb fsck DIR (or --data-dir DIR)"),
        _ => {}
    }
    let d = &d.resolved();
    let verify = super::verify::run(&super::verify::Args { path: d.data_dir.clone() });
    let schema = match schema_for(&d.data_dir, d.schema.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if args.repair {
        let config = match config_for(&d.data_dir, d.config.as_deref()) {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        return match open(schema, config, true) {
            Ok(db) => {
                let r = db.recovery_report().cloned().unwrap_or_default();
                for x in &r.repaired {
                    out!("repaired: {x}");
                }
                out!("repaired state at sequence {}", db.version());
                match db.close() {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(e),
                }
            }
            Err(e) => fail(format!("repair failed: {e}")),
        };
    }
    match recover_read_only(&OsFs, &d.data_dir, &schema) {
        Ok((world, report)) => {
            for s in &report.skipped_snapshots {
                out!("warning: skipped snapshot: {s}");
            }
            if let Some((p, off)) = &report.truncated_tail {
                out!("note: torn record at {} byte {off} (cut off on the next open)", p.display());
            }
            out!(
                "recovered sequence {} ({} entities, {} relations; snapshot {}, {} log records replayed)",
                world.seq(),
                world.entity_count(),
                world.relations().len(),
                report.snapshot.as_ref().map_or_else(|| "none".to_string(), |s| s.1.to_string()),
                report.records_replayed
            );
            if verify == ExitCode::SUCCESS && report.skipped_snapshots.is_empty() {
                out!("fsck: ok");
                ExitCode::SUCCESS
            } else {
                err!("fsck: problems found (see above); the state itself recovers");
                ExitCode::from(1)
            }
        }
        Err(e) => fail(format!("fsck: {e}")),
    }
}
