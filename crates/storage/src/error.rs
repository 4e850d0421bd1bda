//! Storage errors: each names the file (and offset) concerned.

use std::path::PathBuf;

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}{}: {reason}", path.display(), offset.map(|o| format!(" at byte {o}")).unwrap_or_default())]
    Corrupt { path: PathBuf, offset: Option<u64>, reason: String },
    #[error("{}: written for schema {found:016x}, but the database schema is {expected:016x}", path.display())]
    SchemaMismatch { path: PathBuf, found: u64, expected: u64 },
    #[error("the commit log has a gap: {reason}")]
    Gap { reason: String },
    #[error("data directory {} is in use by another process (pid {pid}); stop it first", path.display())]
    Locked { path: PathBuf, pid: String },
    #[error("{what} of {bytes} bytes cannot be written: the limit is {limit} bytes")]
    TooLarge { what: &'static str, bytes: usize, limit: usize },
    #[error(
        "data directory {} is already open in this process; share the open database (clone its handle) instead of opening it twice",
        path.display()
    )]
    LockedHere { path: PathBuf },
    #[error("the commit log refuses writes after a failed write or sync: {0}")]
    FailStop(String),
    #[error(transparent)]
    Engine(#[from] ecsdb_core::Error),
}
