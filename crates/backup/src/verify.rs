//! Checking what is on a target without trusting it: every file a manifest
//! names is fetched, its size and SHA-256 compared, its own format checked
//! (snapshot blocks, log chunk records), its database and sequence range
//! matched against the manifest; chains are followed to their full backup.
//! A deep check restores into a temporary directory and compares the state
//! checksum recorded at backup time.

use std::path::Path;

use serde::Serialize;

use ecsdb::storage::snapshot;

use crate::chunk;
use crate::error::BackupError;
use crate::manager::{Manager, Progress, check_id};
use crate::manifest::{Kind, Manifest, sha256_hex};

/// The outcome for one backup (or the archive).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The backup id, or `archive`.
    pub id: String,
    pub ok: bool,
    /// Every problem found, each naming its file.
    pub problems: Vec<String>,
    pub files_checked: usize,
    pub bytes_checked: u64,
    /// Whether a deep check (restore and compare) ran and matched.
    pub deep: Option<bool>,
    /// The target could not be reached for some of it (the problems say
    /// what): not evidence of damage.
    pub unavailable: bool,
    /// A backup interrupted before its manifest was written: never used
    /// (retention removes it a day later), not damage to what is there.
    pub incomplete: bool,
}

impl Report {
    fn new(id: &str) -> Report {
        Report {
            id: id.to_string(),
            ok: false,
            problems: Vec::new(),
            files_checked: 0,
            bytes_checked: 0,
            deep: None,
            unavailable: false,
            incomplete: false,
        }
    }
}

/// Check one backup (and the backups it builds on).
pub fn verify_backup(m: &Manager, id: &str, deep: bool, progress: Progress<'_>) -> Report {
    let mut r = Report::new(id);
    if let Err(e) = check_id(id) {
        r.problems.push(e.to_string());
        return r;
    }
    let manifest = match m.manifest(id) {
        Ok(x) => x,
        Err(BackupError::NotFound(_)) => {
            let any = m.target.list(&format!("backups/{id}/")).is_ok_and(|v| !v.is_empty())
                || m.target.local_folders("backups/").is_some_and(|f| f.iter().any(|x| x == id));
            r.incomplete = any;
            r.problems.push(if any {
                format!("backups/{id}/manifest.json is missing: the backup is incomplete (interrupted?)")
            } else {
                format!("no backup {id} on {}", m.target.url())
            });
            return r;
        }
        Err(e) => {
            r.unavailable = matches!(e, BackupError::Target { .. });
            r.problems.push(e.to_string());
            return r;
        }
    };
    check_files(m, &manifest, &mut r, progress);
    // The chain an incremental needs.
    let mut child = manifest.clone();
    let mut hops = 0;
    while child.kind == Kind::Incremental {
        hops += 1;
        let Some(pid) = child.parent.clone() else {
            r.problems.push(format!("backups/{}/manifest.json: an incremental backup without a parent", child.id));
            break;
        };
        if hops > 10_000 {
            r.problems.push("the chain of incremental backups loops".into());
            break;
        }
        match m.manifest(&pid) {
            Ok(p) => {
                if p.end_seq != child.start_seq {
                    r.problems.push(format!(
                        "backup {} starts at sequence {} but its parent {pid} ends at {}",
                        child.id, child.start_seq, p.end_seq
                    ));
                }
                if p.database_id != child.database_id {
                    r.problems.push(format!("backup {} and its parent {pid} are of different databases", child.id));
                }
                check_files(m, &p, &mut r, progress);
                child = p;
            }
            Err(e) => {
                r.problems.push(format!("backup {} builds on {pid}, which is not usable: {e}", child.id));
                break;
            }
        }
    }
    if deep && r.problems.is_empty() {
        progress("restoring to compare", 0, 0);
        match deep_check(m, &manifest) {
            Ok(true) => r.deep = Some(true),
            Ok(false) => {
                r.deep = Some(false);
                r.problems.push(format!(
                    "backup {id} restores to a state whose checksum differs from the one recorded at backup time"
                ));
            }
            Err(e) => {
                r.deep = Some(false);
                r.problems.push(format!("backup {id} does not restore: {e}"));
            }
        }
    }
    r.ok = r.problems.is_empty();
    r
}

fn deep_check(m: &Manager, manifest: &Manifest) -> Result<bool, BackupError> {
    let tmp = tempfile::Builder::new()
        .prefix("ecsdb-verify-")
        .tempdir()
        .map_err(|e| BackupError::Io { path: std::env::temp_dir(), source: e })?;
    let dir = tmp.path().join("data");
    let req = crate::restore::Request {
        backup: Some(manifest.id.clone()),
        point: crate::restore::Point::Latest,
        data_dir: dir.clone(),
        force: false,
    };
    crate::restore::restore(&m.target, &req, &crate::manager::quiet)?;
    let db = ecsdb::Database::open(&dir)?;
    let summary = crate::state::summarize(&db.read());
    drop(db);
    Ok(summary.checksum == manifest.state_checksum)
}

fn check_files(m: &Manager, manifest: &Manifest, r: &mut Report, progress: Progress<'_>) {
    let prefix = format!("backups/{}/", manifest.id);
    let total: u64 = manifest.files.iter().map(|f| f.bytes).sum();
    let mut done = 0;
    let mut next_seq = manifest.start_seq + 1;
    for f in &manifest.files {
        let key = format!("{prefix}{}", f.name);
        progress("verifying", done, total);
        done += f.bytes;
        let bytes = match m.target.get(&key) {
            Ok(b) => b,
            Err(BackupError::NotFound(_)) => {
                r.problems.push(format!("{key} is missing (the manifest names it)"));
                continue;
            }
            Err(e) => {
                r.unavailable |= matches!(e, BackupError::Target { .. });
                r.problems.push(e.to_string());
                continue;
            }
        };
        r.files_checked += 1;
        r.bytes_checked += bytes.len() as u64;
        if bytes.len() as u64 != f.bytes {
            r.problems.push(format!(
                "{key}: {} bytes, the manifest says {} (truncated or replaced)",
                bytes.len(),
                f.bytes
            ));
            continue;
        }
        if sha256_hex(&bytes) != f.sha256 {
            r.problems.push(format!("{key}: SHA-256 mismatch (the bytes changed after the backup was written)"));
            continue;
        }
        if f.name == "snapshot.snap" {
            match snapshot::verify(Path::new(&key), &bytes) {
                Ok(info) if info.seq != manifest.end_seq => r.problems.push(format!(
                    "{key}: the snapshot is at sequence {}, the manifest says {}",
                    info.seq, manifest.end_seq
                )),
                Ok(_) => {}
                Err(e) => r.problems.push(format!("{key}: {e}")),
            }
        } else if f.name.starts_with("log/") {
            match chunk::decode(&key, &bytes) {
                Ok(c) => {
                    if crate::manifest::hex(&c.database_id) != manifest.database_id {
                        r.problems.push(format!(
                            "{key}: belongs to database {}, not {} (a file from another database)",
                            crate::manifest::hex(&c.database_id),
                            manifest.database_id
                        ));
                    }
                    if chunk::parse_chunk_name(&key) != Some((c.first_seq, c.last_seq)) {
                        r.problems.push(format!(
                            "{key}: holds commits {}..={}, not what its name says",
                            c.first_seq, c.last_seq
                        ));
                    }
                    if c.first_seq != next_seq {
                        r.problems.push(format!("{key}: starts at commit {}, but {next_seq} comes next", c.first_seq));
                    }
                    next_seq = c.last_seq + 1;
                }
                Err(e) => r.problems.push(e.to_string()),
            }
        } else {
            r.problems.push(format!("{key}: not a file a backup holds"));
        }
    }
    if manifest.kind == Kind::Incremental && next_seq != manifest.end_seq + 1 && r.problems.is_empty() {
        r.problems.push(format!(
            "backups/{}: its log ends at commit {}, the manifest says {}",
            manifest.id,
            next_seq - 1,
            manifest.end_seq
        ));
    }
    if manifest.kind == Kind::Full && !manifest.files.iter().any(|f| f.name == "snapshot.snap") {
        r.problems.push(format!("backups/{}/manifest.json names no snapshot", manifest.id));
    }
}

/// Check every backup on the target and the archived log.
pub fn verify_all(m: &Manager, deep: bool, progress: Progress<'_>) -> Result<Vec<Report>, BackupError> {
    let mut out = Vec::new();
    for l in m.list()? {
        out.push(verify_backup(m, &l.id, deep, progress));
    }
    out.push(crate::archive::verify(&m.target, progress)?);
    Ok(out)
}
