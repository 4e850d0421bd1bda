//! `<data_dir>/replication.json`: this node's place in its cluster — its
//! role, the epoch it is at and where each epoch began, whom it follows,
//! and the other nodes it has heard of. Versioned and checksummed; written
//! atomically (temporary file, fsync, rename, fsync of the directory) so a
//! crash leaves the old or the new state, never a mix.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const FILE: &str = "replication.json";
const VERSION: u32 = 1;

/// What this node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Accepts writes and serves replicas.
    Primary,
    /// Follows `primary`, refuses writes.
    Replica,
    /// A former primary that learned of a newer epoch: refuses writes.
    Fenced,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Fenced => "fenced",
        }
    }
}

/// Where an epoch began: its first commit is `after_seq + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochStart {
    pub epoch: u64,
    pub after_seq: u64,
}

/// The persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeState {
    pub role: Role,
    /// The epoch of this node's own history (its last commit's epoch).
    pub epoch: u64,
    /// A fenced node: the newer epoch it learned of.
    #[serde(default)]
    pub fenced_by: Option<u64>,
    /// Every epoch this node's history went through, oldest first.
    pub history: Vec<EpochStart>,
    /// The primary (a replica's) or the newer primary (a fenced node's).
    pub primary: Option<String>,
    /// Other nodes of the cluster (advertised URLs), for epoch checks and
    /// for finding a new primary after a failover (at most [`MAX_PEERS`]).
    pub peers: Vec<String>,
    /// The primary the configuration named when this state was last
    /// started (a different one in the configuration is the operator's
    /// choice; the same one does not undo a failover the replica followed).
    #[serde(default)]
    pub configured: Option<String>,
}

/// Peers remembered.
pub const MAX_PEERS: usize = 32;

impl NodeState {
    pub fn new_primary() -> NodeState {
        NodeState {
            role: Role::Primary,
            epoch: 1,
            fenced_by: None,
            history: vec![EpochStart { epoch: 1, after_seq: 0 }],
            primary: None,
            peers: Vec::new(),
            configured: None,
        }
    }

    /// The last commit of epoch `epoch` in this history (`None` = the epoch
    /// is still current here), i.e. where the next epoch began.
    pub fn end_of_epoch(&self, epoch: u64) -> Option<u64> {
        self.history.iter().find(|h| h.epoch > epoch).map(|h| h.after_seq)
    }

    /// The history this node's data is on: its epoch and the commit that
    /// epoch began after.
    pub fn branch(&self) -> ecsdb_backup::Branch {
        ecsdb_backup::Branch {
            epoch: self.epoch,
            after_seq: self.history.iter().rev().find(|h| h.epoch == self.epoch).map_or(0, |h| h.after_seq),
        }
    }

    /// Take on a newer epoch begun after `after_seq`.
    pub fn enter_epoch(&mut self, epoch: u64, after_seq: u64) {
        if epoch > self.epoch {
            self.epoch = epoch;
            self.history.retain(|h| h.epoch < epoch);
            self.history.push(EpochStart { epoch, after_seq });
        }
    }

    /// Merge a primary's history (a replica adopts it).
    pub fn adopt_history(&mut self, history: &[EpochStart]) {
        for h in history {
            if !self.history.iter().any(|x| x.epoch == h.epoch) {
                self.history.push(*h);
            }
        }
        self.history.sort_by_key(|h| h.epoch);
        if let Some(last) = self.history.last() {
            self.epoch = self.epoch.max(last.epoch);
        }
    }

    pub fn add_peer(&mut self, url: &str) -> bool {
        let url = url.trim_end_matches('/');
        if url.is_empty() || self.peers.iter().any(|p| p == url) || self.peers.len() >= MAX_PEERS {
            return false;
        }
        self.peers.push(url.to_string());
        true
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    state: NodeState,
    /// CRC32C of `state` serialized as compact JSON.
    crc32c: u32,
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Read the state (`None` if the file does not exist).
pub fn load(data_dir: &Path) -> Result<Option<NodeState>, String> {
    let p = path(data_dir);
    let text = match std::fs::read(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", p.display())),
    };
    let d: OnDisk = serde_json::from_slice(&text).map_err(|e| format!("{}: damaged: {e}", p.display()))?;
    if d.version != VERSION {
        return Err(format!("{}: version {} (this build reads {VERSION})", p.display(), d.version));
    }
    let body = serde_json::to_vec(&d.state).map_err(|e| e.to_string())?;
    if crc32c::crc32c(&body) != d.crc32c {
        return Err(format!("{}: checksum mismatch (the file is damaged)", p.display()));
    }
    if d.state.epoch == 0 || d.state.history.last().is_none_or(|h| h.epoch != d.state.epoch) {
        return Err(format!("{}: damaged: its epoch history does not end at its epoch", p.display()));
    }
    Ok(Some(d.state))
}

/// Write the state durably.
pub fn store(data_dir: &Path, node: &NodeState) -> Result<(), String> {
    let dest = path(data_dir);
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    let body = serde_json::to_vec(node).map_err(|e| e.to_string())?;
    let disk = OnDisk { version: VERSION, state: node.clone(), crc32c: crc32c::crc32c(&body) };
    let text = serde_json::to_vec_pretty(&disk).map_err(|e| e.to_string())?;
    let err = |e: std::io::Error| format!("{}: {e}", tmp.display());
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(&tmp).map_err(err)?;
    f.write_all(&text).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, &dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    std::fs::File::open(data_dir).and_then(|d| d.sync_all()).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_is_named() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load(d.path()).unwrap(), None);
        let mut s = NodeState::new_primary();
        s.enter_epoch(2, 40);
        s.add_peer("http://127.0.0.1:9/");
        assert!(!s.add_peer("http://127.0.0.1:9"));
        store(d.path(), &s).unwrap();
        assert_eq!(load(d.path()).unwrap(), Some(s.clone()));
        assert_eq!(s.end_of_epoch(1), Some(40));
        assert_eq!(s.end_of_epoch(2), None);
        let text = std::fs::read_to_string(path(d.path())).unwrap();
        std::fs::write(path(d.path()), text.replace("\"after_seq\": 40", "\"after_seq\": 41")).unwrap();
        let e = load(d.path()).unwrap_err();
        assert!(e.contains("checksum mismatch"), "{e}");
        std::fs::write(path(d.path()), "{").unwrap();
        assert!(load(d.path()).unwrap_err().contains("damaged"));
    }

    #[test]
    fn newer_epochs_replace_a_diverged_tail() {
        let mut s = NodeState::new_primary();
        s.enter_epoch(3, 10);
        s.enter_epoch(2, 5); // older: ignored
        assert_eq!(s.epoch, 3);
        let mut r = NodeState::new_primary();
        r.adopt_history(&s.history);
        assert_eq!(r.epoch, 3);
        assert_eq!(r.end_of_epoch(1), Some(10));
    }
}
