//! Durability wiring: the commit log as a commit sink, checkpoints, and the
//! background maintenance thread (periodic snapshots, log-size trigger).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ecsdb_core::ChangeSet;
use ecsdb_storage::{Store, Wal};
use parking_lot::Mutex;

use crate::sink::CommitSink;

/// The commit log, seen from the commit path.
#[derive(Debug)]
pub(crate) struct WalSink(pub Arc<Wal>);

impl CommitSink for WalSink {
    fn append(&self, seq: u64, changes: &ChangeSet) -> Result<(), String> {
        self.0.append(seq, changes.as_bytes()).map_err(|e| e.to_string())
    }
    fn wait_durable(&self, seq: u64) -> Result<(), String> {
        self.0.commit_wait(seq).map_err(|e| e.to_string())
    }
    fn abort(&self, seq: u64) -> Result<(), String> {
        self.0.abort(seq).map_err(|e| e.to_string())
    }
}

/// Checkpoint bookkeeping shared by the API and the maintenance thread.
#[derive(Debug)]
pub(crate) struct Durability {
    pub store: Arc<Store>,
    pub _lock: Option<ecsdb_storage::lock::DirLock>,
    pub last_checkpoint_seq: AtomicU64,
    pub last_checkpoint_at: Mutex<Instant>,
    pub checkpoints: AtomicU64,
    /// Longest time writers waited for a snapshot capture, in microseconds.
    pub max_pause_us: AtomicU64,
    pub last_pause_us: AtomicU64,
    pub stop: Arc<AtomicBool>,
    pub threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Durability {
    pub fn record_pause(&self, d: Duration) {
        let us = d.as_micros() as u64;
        self.last_pause_us.store(us, Ordering::Relaxed);
        self.max_pause_us.fetch_max(us, Ordering::Relaxed);
    }
}

/// When the maintenance thread takes a snapshot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Triggers {
    pub every_ops: u64,
    pub every: Duration,
    pub max_wal_bytes: u64,
}
