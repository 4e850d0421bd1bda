//! `ecsdb`: the command-line tool.
//!
//! Exit codes scripts can trust: 0 success, 1 the input is invalid or the
//! operation failed (the report says why), 2 wrong usage.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `println!` that never panics: a closed or full stdout (`| head`) must not
/// turn a finished command into a crash.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `print!` that never panics.
macro_rules! out_raw {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

/// `eprintln!` that never panics (stderr may be a closed pipe).
macro_rules! err {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

mod commands;

#[derive(Parser, Debug)]
#[command(name = "ecsdb", version, about = "ecsdb: a durable, multi-model database for live game worlds")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (HTTP API on 127.0.0.1:8080, data in ./data, the
    /// bundled example schema, unless configured otherwise).
    Serve(ServeArgs),
    /// Validate a schema file and print it normalized (exit 1 listing every
    /// problem when it is invalid).
    DumpSchema(commands::dump_schema::Args),
    /// Create a durable database: --schema FILE --data-dir DIR.
    Init(commands::common::DirArgs),
    /// Check checksums and framing of a data directory, log directory,
    /// segment or snapshot (exit 0 valid, 1 with a report).
    Verify(commands::verify::Args),
    /// Verify everything, recover in memory and check the state's integrity;
    /// --repair cuts a damaged log.
    Fsck(commands::fsck::Args),
    /// Start a data directory from a snapshot, or (--from URL) from a
    /// backup target at a backup, a sequence (--to-seq) or a time (--to-time).
    Restore(commands::restore::Args),
    /// Backups: create, list, verify [--deep], delete, restore (a directory
    /// or `s3://bucket/prefix` target).
    #[command(subcommand)]
    Backup(commands::backup::Action),
    /// Rebuild a data directory by replaying a whole commit log.
    RebuildFromWal(commands::rebuild::Args),
    /// Take a snapshot of a data directory now.
    Checkpoint(commands::common::DirArgs),
    /// Look inside a data directory.
    #[command(subcommand)]
    Inspect(commands::inspect::What),
    /// Load a JSON export into a data directory (ids preserved, all or nothing).
    Import(commands::transfer::ImportArgs),
    /// Export a data directory as JSON or CSV.
    Export(commands::transfer::ExportArgs),
    /// Schema migrations: `plan` (changes nothing) or `apply` a migration file.
    #[command(subcommand)]
    Migrate(commands::migrate::Action),
    /// Make a running replica the primary of a new epoch (failover).
    Promote(commands::promote::Args),
    /// Replication: `status` of a node (role, epoch, position, lag).
    #[command(subcommand)]
    Replication(commands::replication::Action),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// `config.toml` (server, auth, `rate_limit`, cors, metrics, logging and the database sections).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Data directory (default `./data`, or `ECSDB_DATA_DIR`).
    #[arg(long = "data-dir")]
    data_dir: Option<std::path::PathBuf>,
    /// Listen address (default `127.0.0.1:8080`, or `ECSDB_BIND`).
    #[arg(long)]
    bind: Option<String>,
    /// Schema file (default: the bundled RPG example).
    #[arg(long)]
    schema: Option<std::path::PathBuf>,
    /// Run as a read-only replica of this primary (`http://host:port`; also
    /// `[replication] primary` or `ECSDB_REPLICA_OF`).
    #[arg(long = "replica-of")]
    replica_of: Option<String>,
    /// The replica's API key, with the `replicate` permission (default:
    /// `ECSDB_REPLICA_KEY`).
    #[arg(long = "replica-key")]
    replica_key: Option<String>,
    /// The URL other nodes reach this one at (default `http://` + the
    /// listen address; also `[replication] advertise_url`).
    #[arg(long)]
    advertise: Option<String>,
}

fn serve(a: &ServeArgs) -> ExitCode {
    let opts = ecsdb_server::ServeOptions {
        config_file: a.config.clone(),
        data_dir: a.data_dir.clone(),
        bind: a.bind.clone(),
        schema_file: a.schema.clone(),
        replica_of: a.replica_of.clone(),
        replica_key: a.replica_key.clone(),
        advertise: a.advertise.clone(),
    };
    match ecsdb_server::run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            err!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Serve(a) => serve(a),
        Command::DumpSchema(a) => commands::dump_schema::run(a),
        Command::Init(a) => commands::init::run(a),
        Command::Verify(a) => commands::verify::run(a),
        Command::Fsck(a) => commands::fsck::run(a),
        Command::Restore(a) => commands::restore::run(a),
        Command::Backup(a) => commands::backup::run(a),
        Command::RebuildFromWal(a) => commands::rebuild::run(a),
        Command::Checkpoint(a) => commands::checkpoint::run(a),
        Command::Inspect(w) => commands::inspect::run(w),
        Command::Import(a) => commands::transfer::import(a),
        Command::Export(a) => commands::transfer::export(a),
        Command::Migrate(a) => commands::migrate::run(a),
        Command::Promote(a) => commands::promote::run(a),
        Command::Replication(a) => commands::replication::run(a),
    }
}
