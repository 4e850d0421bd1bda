//! `dump-schema FILE`: parse, validate and print the normalized schema.

use std::path::PathBuf;
use std::process::ExitCode;

use ecsdb::Schema;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The schema TOML file.
    pub file: PathBuf,
    /// Print the schema as JSON instead of TOML.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> ExitCode {
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => {
            err!("error: cannot read {}: {e}", args.file.display());
            return ExitCode::from(1);
        }
    };
    // A data directory's own copy (`<data_dir>/schema.toml`) may hold the
    // server's system tables, whose reserved names user schemas may not use.
    let in_data_dir = args.file.file_name().is_some_and(|n| n == ecsdb::SCHEMA_FILE_NAME)
        && args.file.parent().is_some_and(|d| ["wal", "snapshots", "LOCK"].iter().any(|x| d.join(x).exists()));
    let parsed = if in_data_dir { Schema::from_stored_toml(&text) } else { Schema::from_toml_str(&text) };
    match parsed {
        Ok(schema) => {
            if args.json {
                match serde_json::to_string_pretty(&schema.to_json()) {
                    Ok(s) => out!("{s}"),
                    Err(e) => {
                        err!("error: {e}");
                        return ExitCode::from(1);
                    }
                }
            } else {
                out_raw!("{}", schema.to_toml_string());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            err!("error: {}: {e}", args.file.display());
            ExitCode::from(1)
        }
    }
}
