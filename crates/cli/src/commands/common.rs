//! Shared by the subcommands: finding the schema and configuration of a data
//! directory, opening it, reporting errors, progress bars.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use ecsdb::{Database, DatabaseConfig, SCHEMA_FILE_NAME, Schema};

/// Directory arguments with the data directory known.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub data_dir: PathBuf,
    pub schema: Option<PathBuf>,
    pub config: Option<PathBuf>,
}

impl DirArgs {
    /// The arguments with the data directory (the current directory's
    /// `./data` when absent, as the server defaults to).
    pub fn resolved(&self) -> Resolved {
        Resolved {
            data_dir: self.data_dir.clone().unwrap_or_else(|| PathBuf::from("./data")),
            schema: self.schema.clone(),
            config: self.config.clone(),
        }
    }
}

/// Print an error and return exit code 1.
pub fn fail(msg: impl std::fmt::Display) -> ExitCode {
    err!("error: {msg}");
    ExitCode::from(1)
}

/// The schema: `--schema F` when given, else the copy in the data directory.
pub fn schema_for(dir: &Path, given: Option<&Path>) -> Result<Arc<Schema>, String> {
    let path = given.map_or_else(|| dir.join(SCHEMA_FILE_NAME), Path::to_path_buf);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!("cannot read the schema {}: {e} (pass --schema FILE for a directory without one)", path.display())
    })?;
    // The data directory's own copy may hold system tables (`_users`, ...).
    let parsed = if given.is_some() { Schema::from_toml_str(&text) } else { Schema::from_stored_toml(&text) };
    parsed.map(Arc::new).map_err(|e| format!("{}: {e}", path.display()))
}

/// Configuration: `--config F` (else defaults), then `ECSDB_*` overrides,
/// then the data directory given on the command line.
pub fn config_for(dir: &Path, config: Option<&Path>) -> Result<DatabaseConfig, String> {
    let mut c = match config {
        Some(p) => DatabaseConfig::from_file(p).map_err(|e| e.to_string())?,
        None => DatabaseConfig::default(),
    };
    c.apply_env(std::env::vars()).map_err(|e| e.to_string())?;
    c.database.data_dir = dir.to_path_buf();
    // Tools take their own snapshots when they mean to.
    c.persistence.snapshot_interval_ops = 0;
    c.persistence.snapshot_interval_secs = 31_536_000;
    Ok(c)
}

/// Open a data directory for writing (takes its lock).
pub fn open(schema: Arc<Schema>, config: DatabaseConfig, repair: bool) -> Result<Database, String> {
    Database::builder()
        .config(config)
        .schema(schema)
        .enable_persistence()
        .repair(repair)
        .build()
        .map_err(|e| e.to_string())
}

/// Whether a data directory already holds a database's data (log segments
/// or snapshots).
pub fn holds_data(dir: &Path) -> bool {
    ["wal", "snapshots", "wal_archive"]
        .iter()
        .any(|d| std::fs::read_dir(dir.join(d)).is_ok_and(|mut rd| rd.next().is_some()))
}

/// A folder for set-aside files, never one an earlier run used.
pub fn aside_dir(dir: &Path, prefix: &str) -> PathBuf {
    ecsdb_backup::restore::aside_dir(dir, prefix)
}

/// Create a directory (and its parents) readable by the owner only (0700).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// An output file being written privately: a new 0600 file beside the
/// target (never an existing file's inode or permissions, never through a
/// symbolic link), renamed over the target by [`PrivateFile::finish`]; a
/// missing parent directory is created 0700. Dropped unfinished, it is
/// removed.
#[derive(Debug)]
pub struct PrivateFile {
    pub file: std::fs::File,
    tmp: PathBuf,
    target: PathBuf,
    done: bool,
}

impl PrivateFile {
    pub fn create(target: &Path) -> std::io::Result<PrivateFile> {
        let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !parent.exists() {
            create_private_dir(parent)?;
        }
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(&tmp)?;
        Ok(PrivateFile { file, tmp, target: target.to_path_buf(), done: false })
    }

    /// Make the file durable and put it in place (replacing a link, not
    /// following it).
    pub fn finish(mut self) -> std::io::Result<()> {
        self.file.sync_all()?;
        std::fs::rename(&self.tmp, &self.target)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for PrivateFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A progress bar on a terminal; hidden in scripts.
pub fn progress(len: u64, msg: &'static str) -> indicatif::ProgressBar {
    if std::io::stderr().is_terminal() {
        let pb = indicatif::ProgressBar::new(len);
        pb.set_message(msg);
        pb
    } else {
        indicatif::ProgressBar::hidden()
    }
}

/// Common arguments of the commands working on a data directory.
#[derive(clap::Args, Debug, Clone)]
pub struct DirArgs {
    /// The data directory.
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Schema file (default: the data directory's schema.toml).
    #[arg(long)]
    pub schema: Option<PathBuf>,
    /// Configuration file (config.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
}
