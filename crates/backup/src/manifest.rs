//! A backup's manifest: what the backup holds and how to check it. Written
//! last, after every file it names is stored, so a backup without a
//! manifest is incomplete by construction and never listed as usable.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{BackupError, Result};

/// Manifest format version.
pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A snapshot: restores on its own.
    Full,
    /// The commits since the previous backup: restores on top of it.
    Incremental,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Full => "full",
            Kind::Incremental => "incremental",
        })
    }
}

/// One stored file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Name inside the backup's folder (`snapshot.snap`, `log/<first>-<last>.chunk`).
    pub name: String,
    /// Bytes stored.
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// `backup_<unix seconds>`.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    /// The backup an incremental builds on.
    pub parent: Option<String>,
    /// Hex identity of the database it came from.
    pub database_id: String,
    /// RFC 3339, when the state was captured.
    pub created_at: String,
    pub created_unix_ms: u64,
    /// Sequence the backup starts from: the snapshot's for a full backup,
    /// the parent's end for an incremental.
    pub start_seq: u64,
    /// The state the backup restores to.
    pub end_seq: u64,
    /// Schema fingerprint at `end_seq`, hex.
    pub schema_fingerprint: String,
    pub schema_version: String,
    pub entity_count: u64,
    pub component_count: u64,
    pub relation_count: u64,
    /// Bytes of the state and log before compression.
    pub raw_bytes: u64,
    /// Bytes stored on the target.
    pub stored_bytes: u64,
    pub compressed: bool,
    /// SHA-256 of the canonical state at `end_seq` (checked by a deep verify).
    pub state_checksum: String,
    pub files: Vec<FileEntry>,
    pub duration_ms: u64,
    /// The history the state is on, in a replicated database: the epoch of
    /// the node's history and the commit it began after (a restore joins
    /// it only to log of the same history; see [`crate::Branch`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<crate::Branch>,
    /// SHA-256 of this manifest's JSON with this field empty.
    pub checksum: String,
}

/// SHA-256 as lowercase hex.
pub fn sha256_hex(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter().fold(String::with_capacity(b.len() * 2), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

impl Manifest {
    fn body_checksum(&self) -> Result<String> {
        let mut m = self.clone();
        m.checksum = String::new();
        let text = serde_json::to_vec(&m).map_err(|e| BackupError::Config(format!("manifest: {e}")))?;
        Ok(sha256_hex(&text))
    }

    /// Fill in `checksum` and give the bytes to store.
    pub fn seal(&mut self) -> Result<Vec<u8>> {
        self.checksum = self.body_checksum()?;
        serde_json::to_vec_pretty(self).map_err(|e| BackupError::Config(format!("manifest: {e}")))
    }

    /// Parse stored bytes and check the checksum (`what` names the object).
    pub fn open(what: &str, b: &[u8]) -> Result<Manifest> {
        let m: Manifest = serde_json::from_slice(b)
            .map_err(|e| BackupError::Corrupt(format!("{what}: not a readable manifest ({e})")))?;
        if m.format != MANIFEST_FORMAT {
            return Err(BackupError::Corrupt(format!(
                "{what}: manifest format {} is not supported (this build reads {MANIFEST_FORMAT})",
                m.format
            )));
        }
        let want = m.body_checksum()?;
        if want != m.checksum {
            return Err(BackupError::Corrupt(format!(
                "{what}: manifest checksum mismatch (recorded {}, computed {want}): the manifest was changed or damaged",
                m.checksum
            )));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            id: "backup_1".into(),
            kind: Kind::Full,
            parent: None,
            database_id: "00".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            created_unix_ms: 1,
            start_seq: 3,
            end_seq: 3,
            schema_fingerprint: "ab".into(),
            schema_version: "1.0.0".into(),
            entity_count: 1,
            component_count: 2,
            relation_count: 0,
            raw_bytes: 10,
            stored_bytes: 5,
            compressed: true,
            state_checksum: "cd".into(),
            files: vec![FileEntry { name: "snapshot.snap".into(), bytes: 5, sha256: "ef".into() }],
            duration_ms: 1,
            branch: None,
            checksum: String::new(),
        }
    }

    #[test]
    fn sealed_manifests_open_and_any_edit_is_caught() {
        let mut m = sample();
        let b = m.seal().unwrap();
        assert_eq!(Manifest::open("m", &b).unwrap(), m);
        let text = String::from_utf8(b).unwrap();
        let edited = text.replace("\"entity_count\": 1", "\"entity_count\": 2");
        assert_ne!(edited, text);
        assert!(Manifest::open("m", edited.as_bytes()).unwrap_err().to_string().contains("checksum mismatch"));
        assert!(Manifest::open("m", b"{").unwrap_err().to_string().contains("not a readable manifest"));
    }
}
