//! Errors of the `Database` API.

use std::path::PathBuf;

pub use ecsdb_core::Error as EngineError;
pub use ecsdb_core::SchemaError;

/// A database operation failed. Operations that fail change nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("database busy: {0}")]
    Busy(String),
    #[error("commit not recorded: {0}")]
    Sink(String),
    #[error("the database refuses writes after an unrecoverable storage error: {0}")]
    FailStop(String),
    /// Writes are refused here (a replica, a fenced primary); the reason
    /// says where they go.
    #[error("read-only: {0}")]
    ReadOnly(String),
    /// Commit `seq` is applied and durable on this node, but the replicas
    /// synchronous replication requires did not confirm it: it is not
    /// acknowledged (it may or may not survive a failover).
    #[error("commit {seq} is durable here but not confirmed by the required replicas: {reason}")]
    NotReplicated { seq: u64, reason: String },
    #[error(
        "no schema given: call schema_file, schema_toml or schema on the builder (an existing data directory brings its own)"
    )]
    NoSchema,
    #[error(transparent)]
    Storage(#[from] ecsdb_storage::StorageError),
}

/// Result of the `Database` API.
pub type Result<T, E = DbError> = std::result::Result<T, E>;
