//! Replication: the commit log, shipped.
//!
//! A primary streams its durable commits — the commit log's own records, in
//! `wire.rs` frames — to each replica over a WebSocket
//! (`GET /v1/replication/stream`); a replica applies them in order at the
//! same sequence numbers (`Database::apply_replicated`), makes them durable
//! and acknowledges. A new replica first loads a snapshot streamed by the
//! primary (`GET /v1/replication/snapshot`). Users, sessions and API keys
//! are rows of the database, so they replicate with the data.
//!
//! - `registry.rs` — the primary's view of its replicas (acknowledged
//!   sequence, lag in commits and in time, last contact), the commit-time
//!   record lag is measured against, synchronous waits, and log retention.
//! - `primary.rs` — the routes every node serves and the per-replica sender.
//! - `replica.rs` — bootstrap and the follower thread.
//! - `state.rs` — `replication.json`: role, epoch history, primary, peers.
//! - `wire.rs` — the frame format.
//!
//! **Epochs and fencing.** Every frame carries the primary's epoch. A
//! promotion starts a new epoch recorded with the sequence it began after;
//! a node that learns of a newer epoch than its own while primary (a
//! replica or a promoted peer tells it) becomes *fenced* and refuses writes.
//! A replica whose log goes past where the primary's next epoch began holds
//! commits the new history never had, and bootstraps again.
//!
//! Only commits durable on the primary are shipped, so a replica never
//! holds a commit its primary could lose in a crash.

pub mod bootstrapping;
pub mod primary;
pub mod registry;
pub mod replica;
pub mod state;
pub mod wire;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ecsdb::Database;
use parking_lot::Mutex;

pub use registry::{Registry, ReplicationSink};
pub use state::{NodeState, Role};

/// Extract the primary's URL from a read-only refusal's reason (the
/// reasons this module sets name it as `primary <url>`).
pub fn primary_named_in(reason: &str) -> Option<String> {
    let at = reason.find("primary http://")? + "primary ".len();
    let url: String = reason[at..].chars().take_while(|c| !c.is_whitespace() && *c != ';' && *c != ')').collect();
    Some(url.trim_end_matches(['.', ',']).to_string())
}

/// The reason a node in `s` refuses writes, if it does.
pub fn read_only_reason(s: &NodeState) -> Option<String> {
    match s.role {
        Role::Primary => None,
        Role::Replica => Some(format!(
            "this node is a read-only replica; send writes to the primary {}",
            s.primary.as_deref().unwrap_or("(unknown)")
        )),
        Role::Fenced => Some(format!(
            "this node was the primary of epoch {} and a newer primary took over (epoch {}); send writes to the primary {}",
            s.epoch,
            s.fenced_by.map_or_else(|| "?".to_string(), |e| e.to_string()),
            s.primary.as_deref().unwrap_or("(unknown: see GET /v1/replication/status on the other nodes)")
        )),
    }
}

/// What a replica knows of its primary.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FollowerStatus {
    pub connected: bool,
    /// Last commit applied and durable here.
    pub applied_seq: u64,
    /// The primary's durable sequence, as last heard.
    pub primary_seq: u64,
    /// Unix ms of the last frame from the primary.
    pub last_contact_unix_ms: u64,
    /// Unix ms since when this replica has been behind (0 = caught up).
    pub behind_since_unix_ms: u64,
    pub last_error: Option<String>,
    pub reconnects: u64,
}

impl FollowerStatus {
    /// How far behind the primary this replica is, in ms: since it first
    /// heard of a commit it lacks; while disconnected, at least since it
    /// last heard from the primary (it cannot know what it misses).
    pub fn lag_ms(&self, now: u64) -> u64 {
        let behind = if self.behind_since_unix_ms == 0 { 0 } else { now.saturating_sub(self.behind_since_unix_ms) };
        if self.connected || self.last_contact_unix_ms == 0 {
            behind
        } else {
            behind.max(now.saturating_sub(self.last_contact_unix_ms))
        }
    }
}

/// A server's replication side (every node has one).
#[derive(Debug)]
pub struct Replication {
    pub data_dir: PathBuf,
    pub config: ecsdb::config::ReplicationSection,
    pub node: Mutex<NodeState>,
    /// Hex id of the database (shared by every node of the cluster).
    pub database_id: String,
    /// Where other nodes reach this one.
    pub advertise: String,
    /// The key a replica authenticates with (replicas only).
    pub replica_key: Option<String>,
    pub registry: Arc<Registry>,
    pub follower: Mutex<FollowerStatus>,
    /// Set when this node must bootstrap again (the serve loop does it).
    pub rebootstrap: Mutex<Option<String>>,
    /// Tells the serve loop to restart (re-bootstrap).
    pub restart: tokio::sync::watch::Sender<bool>,
    /// Bumped when this node stops being a primary: open streams close.
    pub generation: AtomicU64,
    pub stop: AtomicBool,
    /// One bootstrap snapshot built at a time.
    pub snapshots: tokio::sync::Semaphore,
    /// Held by the follower while it applies a frame (promotion waits).
    pub follower_apply: Mutex<()>,
    db: Mutex<Option<Database>>,
    /// The JWT secret, handed to replicas at bootstrap when it is the data
    /// directory's own (not configured).
    pub jwt_secret_file: Mutex<Option<String>>,
}

impl Replication {
    /// The replication side of a node whose data directory is `data_dir`
    /// (state loaded or created; `replica_key` for a replica).
    pub fn open(
        data_dir: &Path,
        config: &ecsdb::config::ReplicationSection,
        advertise: &str,
        replica_key: Option<String>,
    ) -> Result<Arc<Replication>, String> {
        let mut node = if let Some(s) = state::load(data_dir)? {
            s
        } else {
            let s = NodeState::new_primary();
            state::store(data_dir, &s)?;
            s
        };
        if let Some(p) = &config.primary {
            let p = p.trim_end_matches('/').to_string();
            if node.role != Role::Replica || node.configured.as_deref() != Some(p.as_str()) {
                // Configured as a replica: a former (or fenced) primary, or a
                // replica the operator pointed elsewhere, follows the
                // configured primary. The same configuration does not undo a
                // failover the replica followed by itself.
                // Just bootstrapped (nothing configured recorded yet): keep
                // the primary it bootstrapped from, which may be one it
                // followed after a failover.
                let fresh = node.role == Role::Replica && node.configured.is_none() && node.primary.is_some();
                if !fresh {
                    node.primary = Some(p.clone());
                }
                node.role = Role::Replica;
                node.fenced_by = None;
                node.configured = Some(p);
                state::store(data_dir, &node)?;
            }
        } else if node.role == Role::Replica {
            return Err(format!(
                "{} is a replica's data directory (it follows {}); start it with --replica-of, or promote it (POST /v1/admin/promote, `ecsdb promote`) to make it a primary",
                data_dir.display(),
                node.primary.as_deref().unwrap_or("?")
            ));
        }
        let database_id = ecsdb_backup::state::database_id(data_dir).map_err(|e| e.to_string())?;
        let database_id: String = database_id.iter().fold(String::new(), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        });
        let registry = Arc::new(Registry::new(config));
        Ok(Arc::new(Replication {
            data_dir: data_dir.to_path_buf(),
            config: config.clone(),
            node: Mutex::new(node),
            database_id,
            advertise: advertise.trim_end_matches('/').to_string(),
            replica_key,
            registry,
            follower: Mutex::new(FollowerStatus::default()),
            rebootstrap: Mutex::new(None),
            restart: tokio::sync::watch::channel(false).0,
            generation: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            snapshots: tokio::sync::Semaphore::new(1),
            follower_apply: Mutex::new(()),
            db: Mutex::new(None),
            jwt_secret_file: Mutex::new(None),
        }))
    }

    /// Attach the opened database: its write mode follows the role.
    pub fn attach(&self, db: &Database) {
        db.set_read_only(read_only_reason(&self.node.lock()));
        *self.db.lock() = Some(db.clone());
    }

    pub fn db(&self) -> Option<Database> {
        self.db.lock().clone()
    }

    pub fn role(&self) -> Role {
        self.node.lock().role
    }

    /// Where this node's history branched, when it is the primary (it
    /// archives the log then; see [`ecsdb_backup::Branch`]).
    pub fn archive_branch(&self) -> Option<ecsdb_backup::Branch> {
        let s = self.node.lock();
        (s.role == Role::Primary).then(|| s.branch())
    }

    /// The history this node's data is on (recorded in its backups).
    pub fn history_branch(&self) -> ecsdb_backup::Branch {
        self.node.lock().branch()
    }

    pub fn epoch(&self) -> u64 {
        self.node.lock().epoch
    }

    pub fn snapshot_state(&self) -> NodeState {
        self.node.lock().clone()
    }

    /// Change the persisted state (written durably before it takes effect
    /// in memory); the database's write mode follows.
    pub fn update(&self, f: impl FnOnce(&mut NodeState)) -> Result<NodeState, String> {
        let mut n = self.node.lock();
        let mut next = n.clone();
        f(&mut next);
        if next != *n {
            state::store(&self.data_dir, &next)?;
            if next.role != n.role {
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
            *n = next;
        }
        let s = n.clone();
        drop(n);
        if let Some(db) = self.db() {
            db.set_read_only(read_only_reason(&s));
        }
        Ok(s)
    }

    /// Stop being a primary: a newer `epoch` exists (led by `primary`, if
    /// known). Writes are refused from now on and streams close.
    pub fn fence(&self, epoch: u64, primary: Option<&str>) -> Result<bool, String> {
        let before = self.snapshot_state();
        if epoch <= before.epoch.max(before.fenced_by.unwrap_or(0)) || before.role == Role::Replica {
            return Ok(false);
        }
        self.update(|s| {
            s.role = Role::Fenced;
            s.fenced_by = Some(epoch);
            if let Some(p) = primary {
                s.primary = Some(p.trim_end_matches('/').to_string());
                s.add_peer(p);
            }
        })?;
        tracing::warn!(epoch, primary = ?primary, "fenced: a newer primary exists; this node refuses writes");
        Ok(true)
    }

    /// Ask for a re-bootstrap (the serve loop stops the server, sets the
    /// data aside, bootstraps from the primary and starts again).
    pub fn request_rebootstrap(&self, why: String) {
        tracing::warn!(reason = %why, "this replica must bootstrap again");
        *self.rebootstrap.lock() = Some(why);
        let _ = self.restart.send(true);
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_primary() {
        let mut s = NodeState::new_primary();
        assert_eq!(read_only_reason(&s), None);
        s.role = Role::Replica;
        s.primary = Some("http://10.0.0.1:8080".into());
        let r = read_only_reason(&s).unwrap();
        assert_eq!(primary_named_in(&r).as_deref(), Some("http://10.0.0.1:8080"));
        assert_eq!(
            primary_named_in(&format!("read-only: {r}; nothing was changed")).as_deref(),
            Some("http://10.0.0.1:8080")
        );
        s.role = Role::Fenced;
        s.primary = None;
        assert_eq!(primary_named_in(&read_only_reason(&s).unwrap()), None);
    }
}
