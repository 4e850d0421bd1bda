//! The commit log: segmented, checksummed records of change sets.

pub mod format;
mod writer;

pub use writer::{SyncMode, Wal, WalOptions, WalStats};
