//! `migrate plan|apply --data-dir D FILE`: schema migrations of a data
//! directory that is not open elsewhere (a running server applies them
//! through `POST /v1/admin/migrations`).
//!
//! `plan` recovers the state read-only and prints what the migration would
//! change — operations, rows rewritten or dropped per table, indexes built
//! with their entry counts, the estimated bytes copied — touching no file.
//! `apply` applies it as one logged record, then takes a snapshot.

use std::path::PathBuf;
use std::process::ExitCode;

use ecsdb::core::migration::{Migration, MigrationReport};
use ecsdb::storage::fs::OsFs;
use ecsdb::storage::store::recover_read_only;

use super::common::{config_for, fail, open, schema_for};

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Print what a migration would change, changing nothing.
    Plan(Args),
    /// Apply a migration (one logged record; a failed one changes nothing).
    Apply(Args),
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The data directory.
    #[arg(long = "data-dir", value_name = "DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Configuration file (config.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// The migration file (TOML: `[migration]` and `[[operations]]`).
    pub file: PathBuf,
}

fn print(report: &MigrationReport, applied: Option<u64>, json: bool) {
    if json {
        let mut v = serde_json::to_value(report).unwrap_or_default();
        v["applied"] = applied.is_some().into();
        v["seq"] = applied.into();
        out!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    out!(
        "migration {} -> {}{}",
        report.from_version,
        report.to_version,
        report.description.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
    );
    for op in &report.operations {
        out!("  - {op}");
    }
    for (t, n) in &report.rows_rewritten {
        out!("  rewrites {n} row(s) of {t}");
    }
    for (t, n) in &report.rows_dropped {
        out!("  drops {n} row(s) of {t}");
    }
    for (i, n) in &report.indexes_built {
        out!("  builds the index on {i} ({n} entries)");
    }
    for i in &report.indexes_dropped {
        out!("  drops the index on {i}");
    }
    out!(
        "  estimated cost: the state ({} bytes) is copied into the new schema once; schema fingerprint {} -> {}",
        report.estimated_bytes,
        report.fingerprint_before,
        report.fingerprint_after
    );
    if let Some(seq) = applied {
        out!("applied as commit {seq}");
    } else {
        out!("nothing was changed (plan only)");
    }
}

pub fn run(action: &Action) -> ExitCode {
    let (a, apply) = match action {
        Action::Plan(a) => (a, false),
        Action::Apply(a) => (a, true),
    };
    let text = match std::fs::read_to_string(&a.file) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot read {}: {e}", a.file.display())),
    };
    if let Err(e) = Migration::parse(&text) {
        return fail(format!("{}: {e}", a.file.display()));
    }
    let schema = match schema_for(&a.data_dir, None) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if !apply {
        let world = match recover_read_only(&OsFs, &a.data_dir, &schema) {
            Ok((w, _)) => w,
            Err(e) => return fail(e),
        };
        let m = match Migration::parse(&text) {
            Ok(m) => m,
            Err(e) => return fail(e),
        };
        return match world.schema().plan_migration(&m, false).and_then(|plan| world.check_migration(&plan)) {
            Ok(report) => {
                print(&report, None, a.json);
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("{}: {e}", a.file.display())),
        };
    }
    let mut config = match config_for(&a.data_dir, a.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    config.persistence.checkpoint_on_shutdown = false;
    let db = match open(schema, config, false) {
        Ok(db) => db,
        Err(e) => return fail(e),
    };
    match db.migrate(&text, false) {
        Ok(out) => {
            print(&out.report, out.seq, a.json);
            match db.close() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Err(e) => fail(format!("{}: {e}", a.file.display())),
    }
}
