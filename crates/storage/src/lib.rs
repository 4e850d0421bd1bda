//! # ecsdb-storage
//!
//! Durability for ecsdb: the commit log (segmented, checksummed records of
//! change sets, group commit), snapshots (compressed, checksummed, published
//! atomically), recovery (newest valid snapshot + log replay), the data
//! directory lock, and the file-system seam ([`fs::Vfs`]) every write goes
//! through so crashes and faults can be simulated. Byte formats: see
//! `docs/design.md`.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod error;
pub mod fs;
#[doc(hidden)]
pub mod fuzzing;
pub mod lock;
pub mod snapshot;
pub mod store;
pub mod wal;

pub use error::StorageError;
pub use store::{CheckpointInfo, RecoveryReport, Store, StoreOptions};
pub use wal::{SyncMode, Wal, WalOptions};
