//! Errors of backup, archiving and restore. Each says what failed and where
//! (target URL, object key, file), so an operator can act on it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Bad configuration or arguments (a URL, a key, a point in time).
    #[error("{0}")]
    Config(String),
    /// The target refused or could not be reached (after retries).
    #[error("target {target}: {message}")]
    Target { target: String, message: String },
    /// A backup, object or point that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Stored bytes that fail their checks (the object is named).
    #[error("{0}")]
    Corrupt(String),
    /// The request conflicts with what is there (a backup others depend on,
    /// a non-empty directory, another database's archive).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Db(#[from] ecsdb::DbError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl From<ecsdb::storage::error::StorageError> for BackupError {
    fn from(e: ecsdb::storage::error::StorageError) -> Self {
        BackupError::Db(ecsdb::DbError::from(e))
    }
}

pub type Result<T, E = BackupError> = std::result::Result<T, E>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.into();
    move |source| BackupError::Io { path, source }
}
