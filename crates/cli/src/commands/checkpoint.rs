//! `checkpoint --data-dir D`: take a snapshot now (the directory must not be
//! open elsewhere; a running server takes them through its admin API).

use std::process::ExitCode;

use super::common::{DirArgs, config_for, fail, open, schema_for};

pub fn run(args: &DirArgs) -> ExitCode {
    let args = &args.resolved();
    let schema = match schema_for(&args.data_dir, args.schema.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mut config = match config_for(&args.data_dir, args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    config.persistence.checkpoint_on_shutdown = false;
    let db = match open(schema, config, false) {
        Ok(db) => db,
        Err(e) => return fail(e),
    };
    match db.checkpoint() {
        Ok(info) => {
            out!(
                "snapshot at sequence {}: {} ({} bytes, {} raw, written in {:.1} ms, {} segment(s) archived)",
                info.seq,
                info.path.display(),
                info.bytes,
                info.raw_bytes,
                info.write_ms,
                info.segments_archived
            );
            match db.close() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Err(e) => fail(e),
    }
}
