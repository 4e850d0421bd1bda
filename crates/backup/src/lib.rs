//! Backups, continuous log archiving and point-in-time restore for ecsdb.
//!
//! - [`target`]: where things go — a directory or an S3-compatible bucket.
//! - [`manager`]: full and incremental backups, listing, deletion, retention.
//! - [`archive`]: the archiver thread shipping the commit log as it is written.
//! - [`verify`]: checking backups and the archive (deep: restore and compare).
//! - [`restore`]: rebuilding a data directory at a backup, a sequence or a time.
//! - [`chunk`], [`manifest`]: the two formats this crate adds (log chunks,
//!   backup manifests); snapshots keep the storage layer's format.
//!
//! Everything here is blocking (tools, a scheduler thread, the archiver
//! thread); each target runs its requests on a runtime of its own.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod archive;
pub mod chunk;
pub mod config;
pub mod error;
pub mod logread;
pub mod manager;
pub mod manifest;
pub mod restore;
pub mod state;
pub mod target;
pub mod verify;

pub use archive::{ArchiveStatus, Archiver, Branch};
pub use config::{BackupSettings, S3Settings, StorageSettings};
pub use error::{BackupError, Result};
pub use manager::{Listed, Manager};
pub use manifest::{Kind, Manifest};
pub use restore::{Outcome, Point, Request};
pub use target::Target;
pub use verify::Report;
