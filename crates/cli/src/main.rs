//! `ecsdb`: the command-line tool.
//!
//! Exit codes scripts can trust: 0 success, 1 the input is invalid or the
//! operation failed (the report says why), 2 wrong usage.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;

#[derive(Parser, Debug)]
#[command(name = "ecsdb", version, about = "ecsdb: a durable, multi-model database for live game worlds")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a schema file and print it normalized (exit 1 listing every
    /// problem when it is invalid).
    DumpSchema(commands::dump_schema::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::DumpSchema(args) => commands::dump_schema::run(&args),
    }
}
