//! `init --schema F --data-dir D`: create a durable database.

use std::process::ExitCode;

use super::common::{DirArgs, config_for, fail, open, schema_for};

pub fn run(args: &DirArgs) -> ExitCode {
    let args = &args.resolved();
    let Some(schema_path) = &args.schema else {
        return fail("init needs --schema FILE");
    };
    let schema = match schema_for(&args.data_dir, Some(schema_path)) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let config = match config_for(&args.data_dir, args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match open(schema.clone(), config, false).and_then(|db| db.close().map_err(|e| e.to_string())) {
        Ok(()) => {
            out!(
                "initialized {} with schema {} v{} ({} tables)",
                args.data_dir.display(),
                schema.name,
                schema.version,
                schema.tables.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
