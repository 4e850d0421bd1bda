//! The commit feed: every committed change set, in sequence order, to
//! whoever subscribed — the source live deltas are cut from.
//!
//! Why published where it is: a commit is handed to the feed while the
//! committing transaction still holds the world's write lock, right after
//! it became the state (`finish_commit`), so subscribers receive commits in
//! exactly sequence order, only commits that happened (a refused or rolled
//! back transaction publishes nothing), and a subscriber that reads the
//! world on receipt sees at least that commit. Migrations are published too
//! (their change set holds the `Migrate` op).
//!
//! A subscriber never slows writers down: each has a bounded queue, and a
//! commit that finds it full is dropped for that subscriber, which is told
//! (`FeedEvent::Lagged`, with the first sequence it missed) as soon as its
//! queue has room; it should then read the state afresh. A subscriber that
//! went away is forgotten at the next commit.
//!
//! A listener ([`crate::Database::listen_commits`]) is instead called with
//! each commit while the write lock is still held: whoever then takes a read
//! lock and sees sequence N knows the listener has already been handed every
//! commit up to N. It must only hand the commit on (a non-blocking channel
//! send), never block.

use std::sync::Arc;
pub use std::sync::mpsc::RecvTimeoutError;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use ecsdb_core::ChangeSet;
use parking_lot::Mutex;

/// Commits a subscriber's queue holds by default.
pub const DEFAULT_FEED_CAPACITY: usize = 4096;

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum FeedEvent {
    /// Commit `seq` and what it changed.
    Commit { seq: u64, changes: Arc<ChangeSet> },
    /// Commits from `from_seq` on (up to the next `Commit` received) were
    /// dropped because the queue was full: read the state afresh.
    Lagged { from_seq: u64 },
}

/// A subscription to the commit feed (see [`crate::Database::subscribe_commits`]).
#[derive(Debug)]
pub struct CommitFeed {
    rx: Receiver<FeedEvent>,
}

impl CommitFeed {
    /// The next event, waiting at most `wait`: `Timeout` when none came,
    /// `Disconnected` once the database is gone.
    pub fn recv_timeout(&self, wait: Duration) -> Result<FeedEvent, RecvTimeoutError> {
        self.rx.recv_timeout(wait)
    }

    /// The next event if one is queued.
    pub fn try_recv(&self) -> Option<FeedEvent> {
        self.rx.try_recv().ok()
    }
}

#[derive(Debug)]
struct Subscriber {
    tx: SyncSender<FeedEvent>,
    /// First sequence dropped and not yet reported.
    lagged_from: Option<u64>,
}

/// A commit listener (see [`crate::Database::listen_commits`]).
pub type Listener = Box<dyn Fn(u64, &Arc<ChangeSet>) + Send + Sync>;

/// The publishing side, owned by the database.
#[derive(Default)]
pub(crate) struct Feed {
    subs: Mutex<Vec<Subscriber>>,
    listeners: Mutex<Vec<Listener>>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").field("subscribers", &self.subs.lock().len()).finish_non_exhaustive()
    }
}

impl Feed {
    pub(crate) fn subscribe(&self, capacity: usize) -> CommitFeed {
        let (tx, rx) = sync_channel(capacity.max(1));
        self.subs.lock().push(Subscriber { tx, lagged_from: None });
        CommitFeed { rx }
    }

    pub(crate) fn listen(&self, f: Listener) {
        self.listeners.lock().push(f);
    }

    /// Hand commit `seq` to every listener and subscriber (call in sequence
    /// order, under the write lock). With nobody subscribed it costs two
    /// locks and nothing else; otherwise the change set is copied once and
    /// shared.
    pub(crate) fn publish(&self, seq: u64, changes: &ChangeSet) {
        let listeners = self.listeners.lock();
        let mut subs = self.subs.lock();
        if subs.is_empty() && listeners.is_empty() {
            return;
        }
        let changes = Arc::new(changes.clone());
        for l in listeners.iter() {
            l(seq, &changes);
        }
        subs.retain_mut(|s| {
            if let Some(from_seq) = s.lagged_from {
                match s.tx.try_send(FeedEvent::Lagged { from_seq }) {
                    Ok(()) => s.lagged_from = None,
                    Err(TrySendError::Full(_)) => return true,
                    Err(TrySendError::Disconnected(_)) => return false,
                }
            }
            match s.tx.try_send(FeedEvent::Commit { seq, changes: changes.clone() }) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    s.lagged_from = Some(seq);
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
    }
}
