//! The hub between the database and the stream connections: every commit,
//! handed over while the write lock is held, goes into one broadcast
//! channel all connections read, and into a short history kept for resumes
//! (`from_seq`). It also keeps the streaming figures (clients,
//! subscriptions, deltas, bytes, coalesced updates) and the list of open
//! connections for `GET /v1/admin/streams`.
//!
//! Why the commit is handed over under the write lock: a connection that
//! takes a read lock and sees sequence N then finds every commit up to N
//! already in its channel (and none after N, since writers wait for the
//! read lock). Draining the channel under the read lock therefore gives
//! exactly the commits the state it reads contains, and every delta is the
//! difference between two exact states.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use ecsdb::ChangeSet;
use ecsdb::core::live::Touched;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use tokio::sync::broadcast;

/// Commits the broadcast channel holds before a slow connection lags (it
/// then re-evaluates its subscriptions in full). The channel keeps this
/// many change sets alive, so it bounds the feed's memory.
const BROADCAST_CAPACITY: usize = 64;
/// Bytes of change sets kept for resumes (beyond those the channel keeps).
const HISTORY_BYTES: usize = 16 << 20;
/// Commits kept for resumes.
const HISTORY_COMMITS: usize = 4096;
/// A resume whose commits touched more entities than this starts afresh.
pub const RESUME_MAX_TOUCHED: usize = 1 << 20;

/// A stream connection of one address (see [`Hub::ip_slot`]).
#[derive(Debug)]
pub struct IpSlot(Arc<Hub>, std::net::IpAddr);

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self.0.per_ip.lock();
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// A random identity for this run of the server.
fn epoch() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // Time is unique enough across restarts of one server.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        b = (t as u64).to_le_bytes();
    }
    format!("{:016x}", u64::from_le_bytes(b))
}

/// One commit, as the connections see it.
#[derive(Debug)]
pub struct CommitEvent {
    pub seq: u64,
    pub changes: Arc<ChangeSet>,
    /// When it was handed over (for commit-to-delivery latency).
    pub at: Instant,
    touched: OnceLock<Touched>,
}

impl CommitEvent {
    /// What the commit touched (computed once, by the first reader).
    pub fn touched(&self) -> &Touched {
        self.touched.get_or_init(|| Touched::of(&self.changes))
    }
}

/// Figures of one open connection.
#[derive(Debug)]
pub struct ClientStats {
    pub id: u64,
    pub user: String,
    pub addr: String,
    pub connected: Instant,
    pub subscriptions: AtomicUsize,
    /// Sequence of the last delta or initial handed to the socket.
    pub sent_seq: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub deltas_sent: AtomicU64,
    /// Rows held back (coalesced) by a budget or a full send queue.
    pub pending: AtomicUsize,
    /// Memory its subscriptions hold.
    pub memory: AtomicUsize,
}

/// The hub (one per server).
#[derive(Debug)]
pub struct Hub {
    pub tx: broadcast::Sender<Arc<CommitEvent>>,
    history: Mutex<History>,
    clients: Mutex<FxHashMap<u64, Arc<ClientStats>>>,
    next_client: AtomicU64,
    /// Totals since start.
    pub deltas: AtomicU64,
    pub bytes: AtomicU64,
    pub coalesced: AtomicU64,
    pub behind_notices: AtomicU64,
    /// Connections waiting for their first (auth) message.
    pub pending_auth: AtomicUsize,
    /// Memory held by all subscriptions (see `Sub::memory`).
    pub memory: AtomicUsize,
    /// This server's identity for resumes: sequences from another run (a
    /// restart may have lost commits and reused their numbers) do not resume.
    pub epoch: String,
    /// Stream connections per client address.
    per_ip: Mutex<FxHashMap<std::net::IpAddr, usize>>,
    /// Re-run subscriptions per user (across connections).
    pub reruns: Mutex<FxHashMap<String, usize>>,
    /// Row fragments of the newest sequence, shared by all connections.
    pub fragments: super::sub::Fragments,
}

#[derive(Debug, Default)]
struct History {
    commits: VecDeque<Arc<CommitEvent>>,
    bytes: usize,
}

impl Hub {
    /// A hub listening to `db`'s commits.
    pub fn start(db: &ecsdb::Database) -> Arc<Hub> {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        let hub = Arc::new(Hub {
            tx,
            history: Mutex::new(History::default()),
            clients: Mutex::new(FxHashMap::default()),
            next_client: AtomicU64::new(1),
            deltas: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            behind_notices: AtomicU64::new(0),
            pending_auth: AtomicUsize::new(0),
            memory: AtomicUsize::new(0),
            epoch: epoch(),
            per_ip: Mutex::new(FxHashMap::default()),
            reruns: Mutex::new(FxHashMap::default()),
            fragments: super::sub::Fragments::default(),
        });
        let weak = Arc::downgrade(&hub);
        db.listen_commits(Box::new(move |seq, changes| {
            let Some(hub) = weak.upgrade() else { return };
            let ev =
                Arc::new(CommitEvent { seq, changes: changes.clone(), at: Instant::now(), touched: OnceLock::new() });
            {
                let mut h = hub.history.lock();
                h.bytes += ev.changes.byte_len();
                h.commits.push_back(ev.clone());
                while h.commits.len() > HISTORY_COMMITS || (h.bytes > HISTORY_BYTES && h.commits.len() > 1) {
                    if let Some(old) = h.commits.pop_front() {
                        h.bytes -= old.changes.byte_len();
                    }
                }
            }
            // No receiver is not an error: nobody is connected.
            let _ = hub.tx.send(ev);
        }));
        hub
    }

    /// What the commits after `from` up to `to` touched, if the history
    /// still holds all of them (and they touched a bounded number).
    pub fn touched_between(&self, from: u64, to: u64) -> Option<Touched> {
        if from > to {
            return None;
        }
        let commits: Vec<Arc<CommitEvent>> = {
            let h = self.history.lock();
            if from == to {
                return Some(Touched::default());
            }
            // The history is consecutive commits of the log; the first one
            // after `from` must be in it.
            let first = h.commits.front()?.seq;
            if first > from + 1 {
                return None;
            }
            h.commits.iter().filter(|c| c.seq > from && c.seq <= to).cloned().collect()
        };
        if commits.last().is_none_or(|c| c.seq != to) {
            return None;
        }
        let mut all = Touched::default();
        for c in &commits {
            all.merge(c.touched());
            if all.everything || all.entities.len() > RESUME_MAX_TOUCHED {
                return None;
            }
        }
        Some(all)
    }

    /// Register an open connection.
    pub fn register(&self, user: String, addr: String, seq: u64) -> Arc<ClientStats> {
        let id = self.next_client.fetch_add(1, Ordering::Relaxed);
        let s = Arc::new(ClientStats {
            id,
            user,
            addr,
            connected: Instant::now(),
            subscriptions: AtomicUsize::new(0),
            sent_seq: AtomicU64::new(seq),
            bytes_sent: AtomicU64::new(0),
            deltas_sent: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            memory: AtomicUsize::new(0),
        });
        self.clients.lock().insert(id, s.clone());
        s
    }

    pub fn unregister(&self, id: u64) {
        self.clients.lock().remove(&id);
    }

    /// A stream slot for `ip` (at most `max` at once), given back on drop.
    pub fn ip_slot(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<IpSlot> {
        let mut m = self.per_ip.lock();
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot(self.clone(), ip))
    }

    /// Open connections.
    pub fn clients(&self) -> Vec<Arc<ClientStats>> {
        let mut v: Vec<_> = self.clients.lock().values().cloned().collect();
        v.sort_by_key(|c| c.id);
        v
    }
}
