//! The commit seam: where committed change sets leave the engine.
//!
//! The commit log (durability), replication and live deltas all attach here.
//! A commit is offered to every sink under the writer lock, in sequence
//! order, *before* it becomes visible; any sink refusing it aborts the commit
//! (rolled back, nothing visible, nothing acknowledged). After the lock is
//! released the committing thread waits for each sink's `wait_durable`, which
//! is where group commit waits for its fsync.

use ecsdb_core::ChangeSet;

/// A consumer of committed change sets.
pub trait CommitSink: Send + Sync + std::fmt::Debug {
    /// Record commit `seq`. Called under the writer lock, in order. An error
    /// aborts the commit.
    fn append(&self, seq: u64, changes: &ChangeSet) -> Result<(), String>;

    /// Block until commit `seq` is durable. Called after the commit became
    /// visible; an error here means the database can no longer promise
    /// durability and enters fail-stop (it refuses further writes).
    fn wait_durable(&self, seq: u64) -> Result<(), String> {
        let _ = seq;
        Ok(())
    }

    /// Block until commit `seq` is held by whatever else must have it before
    /// it is acknowledged (synchronous replicas). Called after every sink's
    /// `wait_durable`; an error is the commit's error, with no fail-stop
    /// (the commit is applied and durable here, just not confirmed).
    fn wait_replicated(&self, seq: u64) -> Result<(), String> {
        let _ = seq;
        Ok(())
    }

    /// Take back commit `seq`, which this sink accepted but a later sink
    /// refused: it will never become visible. Called under the writer lock,
    /// in reverse sink order. An error here poisons the database (fail-stop):
    /// the sink may hold a commit the state does not.
    fn abort(&self, seq: u64) -> Result<(), String> {
        let _ = seq;
        Ok(())
    }
}
