//! The backup manager: create (full or incremental), list, delete and
//! retention on one target.
//!
//! Target layout:
//!
//! ```text
//! backups/<id>/snapshot.snap        full backup: the state at end_seq (snapshot format)
//! backups/<id>/log/<a>-<b>.chunk    incremental backup: commits a..=b (log chunk format)
//! backups/<id>/manifest.json        written last: the backup exists once this does
//! archive/IDENTITY                  the database whose log is archived here
//! archive/log/<a>-<b>.chunk         the continuously archived commit log
//! archive/snapshots/<seq>-<ms>.snap snapshots shipped by the archiver
//! ```
//!
//! A backup is hot: the state is copied at one sequence while writers keep
//! committing (they wait only while columns are copied), and everything
//! else — compression, checksums, uploads — happens without any lock.

use std::sync::Arc;
use std::time::Instant;

use ecsdb::Database;
use ecsdb::storage::snapshot;

use crate::chunk::{self, Rec};
use crate::config::{BackupSettings, parse_interval};
use crate::error::{BackupError, Result};
use crate::logread::LogCursor;
use crate::manifest::{FileEntry, Kind, MANIFEST_FORMAT, Manifest, hex, sha256_hex};
use crate::state;
use crate::target::Target;

/// What the progress callback is told: a stage, and bytes done of total
/// (0 of 0 when the stage has no size).
pub type Progress<'a> = &'a (dyn Fn(&str, u64, u64) + Sync);

/// No progress reporting.
pub fn quiet(_: &str, _: u64, _: u64) {}

/// A backup as found on the target.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    /// The manifest, when it is there and its checksum holds.
    pub manifest: Option<Manifest>,
    /// Why the backup is not usable (no manifest: incomplete; damaged manifest).
    pub problem: Option<String>,
    /// Objects stored under the backup's folder.
    pub objects: usize,
    pub stored_bytes: u64,
}

/// Backups on a target.
#[derive(Debug, Clone)]
pub struct Manager {
    pub target: Arc<Target>,
    pub settings: BackupSettings,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn rfc3339(ms: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64)
        .map_or_else(String::new, |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// The unix seconds a backup id was named after.
pub fn id_seconds(id: &str) -> Option<u64> {
    let rest = id.strip_prefix("backup_")?;
    rest.split('_').next()?.parse().ok()
}

/// Backup ids are names of folders: refuse anything else before it reaches
/// a key.
pub fn check_id(id: &str) -> Result<()> {
    // backup_<digits>, or backup_<digits>_<digits> after a collision.
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    let ok = id.strip_prefix("backup_").is_some_and(|rest| match rest.split_once('_') {
        None => digits(rest),
        Some((a, b)) => digits(a) && digits(b),
    });
    if ok { Ok(()) } else { Err(BackupError::NotFound(format!("`{id}` is not a backup id (backup_<unix seconds>)"))) }
}

impl Manager {
    pub fn new(target: Arc<Target>, settings: BackupSettings) -> Manager {
        Manager { target, settings }
    }

    fn level(&self) -> i32 {
        if self.settings.compress { self.settings.compression_level } else { 1 }
    }

    /// Every backup on the target (complete or not), oldest first.
    pub fn list(&self) -> Result<Vec<Listed>> {
        let objects = self.target.list("backups/")?;
        let mut out: Vec<Listed> = Vec::new();
        for o in &objects {
            let Some(rest) = o.key.strip_prefix("backups/") else { continue };
            let Some((id, _)) = rest.split_once('/') else { continue };
            match out.last_mut() {
                Some(l) if l.id == id => {
                    l.objects += 1;
                    l.stored_bytes += o.size;
                }
                _ => out.push(Listed {
                    id: id.to_string(),
                    manifest: None,
                    problem: None,
                    objects: 1,
                    stored_bytes: o.size,
                }),
            }
        }
        // Folders holding only an interrupted upload's leftovers.
        for id in self.target.local_folders("backups/").unwrap_or_default() {
            if check_id(&id).is_ok() && !out.iter().any(|l| l.id == id) {
                out.push(Listed { id, manifest: None, problem: None, objects: 0, stored_bytes: 0 });
            }
        }
        for l in &mut out {
            let key = format!("backups/{}/manifest.json", l.id);
            if !objects.iter().any(|o| o.key == key) {
                l.problem = Some(format!("{key} is missing: the backup is incomplete (interrupted?)"));
                continue;
            }
            match self.target.get(&key).and_then(|b| Manifest::open(&key, &b)) {
                Ok(m) if m.id == l.id => l.manifest = Some(m),
                Ok(m) => l.problem = Some(format!("{key} names backup {}, not {}", m.id, l.id)),
                Err(e) => l.problem = Some(e.to_string()),
            }
        }
        out.sort_by_key(|l| {
            (
                l.manifest.as_ref().map_or_else(|| id_seconds(&l.id).unwrap_or(0) * 1000, |m| m.created_unix_ms),
                l.id.clone(),
            )
        });
        Ok(out)
    }

    /// One backup's manifest (checked).
    pub fn manifest(&self, id: &str) -> Result<Manifest> {
        check_id(id)?;
        let key = format!("backups/{id}/manifest.json");
        let b = self.target.get_opt(&key)?.ok_or_else(|| {
            BackupError::NotFound(format!("no backup {id} on {} ({key} is missing)", self.target.url()))
        })?;
        Manifest::open(&key, &b)
    }

    fn new_id(taken: &[Listed]) -> String {
        let secs = now_ms() / 1000;
        let base = format!("backup_{secs}");
        if !taken.iter().any(|l| l.id == base) {
            return base;
        }
        // At most `taken.len()` names are taken: one of these is free.
        (2..=taken.len() + 2).map(|n| format!("{base}_{n}")).find(|c| !taken.iter().any(|l| &l.id == c)).unwrap_or(base)
    }

    /// Take a backup of `db` now.
    pub fn create(&self, db: &Database, kind: Kind, progress: Progress<'_>) -> Result<Manifest> {
        self.create_on(db, kind, progress, None)
    }

    /// [`Manager::create`] for a replicated database whose history is
    /// `branch` (recorded in the manifest). An incremental backup builds
    /// only on a backup of the same history.
    pub fn create_on(
        &self,
        db: &Database,
        kind: Kind,
        progress: Progress<'_>,
        branch: Option<crate::Branch>,
    ) -> Result<Manifest> {
        let started = Instant::now();
        let dir = db
            .data_dir()
            .ok_or_else(|| BackupError::Config("backups need a durable database (a data directory)".into()))?
            .to_path_buf();
        let database_id = state::database_id(&dir)?;
        let listed = self.list()?;
        // One database per target (prefix): backups of two would mix.
        let ours = hex(&database_id);
        let theirs = crate::archive::identity(&self.target)?.filter(|id| *id != ours).or_else(|| {
            listed.iter().filter_map(|l| l.manifest.as_ref()).map(|m| m.database_id.clone()).find(|id| *id != ours)
        });
        if let Some(other) = theirs {
            return Err(BackupError::Conflict(format!(
                "{} holds database {other}'s backups; this is database {ours} (a restored copy is a new database): use another target or prefix",
                self.target.url()
            )));
        }
        let parent = match kind {
            Kind::Full => None,
            Kind::Incremental => {
                let ours = hex(&database_id);
                let p = listed
                    .iter()
                    .filter_map(|l| l.manifest.as_ref())
                    .filter(|m| m.database_id == ours)
                    .max_by_key(|m| (m.end_seq, m.created_unix_ms))
                    .cloned();
                let p = p.ok_or_else(|| {
                    BackupError::Conflict(format!(
                        "no backup of this database on {} for an incremental to build on; create a full backup first",
                        self.target.url()
                    ))
                })?;
                if !crate::archive::shares(p.end_seq, p.branch, branch) {
                    return Err(BackupError::Conflict(format!(
                        "the newest backup ({}, at commit {}) is of another history (a former primary's commits past a failover): take a full backup",
                        p.id, p.end_seq
                    )));
                }
                Some(p)
            }
        };
        let id = Self::new_id(&listed);
        progress("capturing the state", 0, 0);
        let image = db.capture_snapshot();
        let seq = image.seq;
        let created_unix_ms = now_ms();
        // What the backup holds must be what the database keeps after a crash.
        db.sync_to(seq)?;
        // Compress on one core while the other rebuilds the captured state
        // (through the same checks as loading a snapshot) for the counts and
        // the state checksum at exactly `seq`.
        let level = self.level();
        let raw_snapshot = image.raw_bytes() as u64;
        let schema = db.schema();
        let prefix = format!("backups/{id}/");
        let mut files = Vec::new();
        let mut raw_bytes = 0u64;
        if let Some(p) = &parent
            && p.end_seq > seq
        {
            return Err(BackupError::Conflict(format!(
                "the newest backup ({}) ends at sequence {}, past this database's {seq}: it was restored to an earlier point; take a full backup",
                p.id, p.end_seq
            )));
        }
        // A full backup compresses and uploads the snapshot on one core
        // while the other rebuilds the captured state (through the same
        // checks as loading a snapshot) for the counts and the state
        // checksum at exactly `seq`.
        progress(if parent.is_none() { "compressing and uploading" } else { "checksumming" }, 0, 0);
        let (stored, checked) = std::thread::scope(|s| {
            let uploader = s.spawn(|| -> Result<Option<FileEntry>> {
                if parent.is_some() {
                    return Ok(None);
                }
                let bytes = snapshot::encode(&image, level)?;
                let entry =
                    FileEntry { name: "snapshot.snap".into(), bytes: bytes.len() as u64, sha256: sha256_hex(&bytes) };
                self.target.put(&format!("{prefix}snapshot.snap"), bytes)?;
                Ok(Some(entry))
            });
            let checked = snapshot::load_image(&image, &schema).map(|world| {
                let summary = state::summarize(&world);
                (summary, world.schema().fingerprint, world.schema().version.clone())
            });
            let stored = uploader
                .join()
                .unwrap_or_else(|_| Err(BackupError::Config("the snapshot encoder stopped unexpectedly".into())));
            (stored, checked)
        });
        let (stored, (summary, fingerprint, version)) = (stored?, checked?);
        drop(image);
        let mut uploads: Vec<(String, Vec<u8>)> = Vec::new();
        let start_seq = match &parent {
            None => {
                raw_bytes += raw_snapshot;
                files.extend(stored);
                seq
            }
            Some(p) => {
                let mut cur = LogCursor::new(&dir, p.end_seq);
                for piece in cur.read_to(seq)? {
                    let recs: Vec<Rec<'_>> = piece
                        .records
                        .iter()
                        .map(|(s, b)| Rec { seq: *s, payload: b, time_ms: created_unix_ms })
                        .collect();
                    raw_bytes += recs.iter().map(|r| r.payload.len() as u64 + 24).sum::<u64>();
                    let (Some(a), Some(b)) = (recs.first(), recs.last()) else { continue };
                    let name = format!("log/{}", chunk::chunk_name(a.seq, b.seq));
                    let bytes =
                        chunk::encode(&database_id, piece.fingerprint, &recs, self.settings.compress.then_some(level))?;
                    uploads.push((name, bytes));
                }
                p.end_seq
            }
        };
        let total: u64 = uploads.iter().map(|(_, b)| b.len() as u64).sum();
        let stored_before: u64 = files.iter().map(|f| f.bytes).sum();
        let mut done = 0;
        for (name, bytes) in uploads {
            let len = bytes.len() as u64;
            files.push(FileEntry { name: name.clone(), bytes: len, sha256: sha256_hex(&bytes) });
            progress("uploading", done, total);
            self.target.put(&format!("{prefix}{name}"), bytes)?;
            done += len;
            progress("uploading", done, total);
        }
        let mut m = Manifest {
            format: MANIFEST_FORMAT,
            id: id.clone(),
            kind,
            parent: parent.as_ref().map(|p| p.id.clone()),
            database_id: hex(&database_id),
            created_at: rfc3339(created_unix_ms),
            created_unix_ms,
            start_seq,
            end_seq: seq,
            schema_fingerprint: format!("{fingerprint:016x}"),
            schema_version: version,
            entity_count: summary.entities,
            component_count: summary.components,
            relation_count: summary.relations,
            raw_bytes,
            stored_bytes: stored_before + total,
            compressed: self.settings.compress,
            state_checksum: summary.checksum,
            files,
            duration_ms: 0,
            branch,
            checksum: String::new(),
        };
        m.duration_ms = started.elapsed().as_millis() as u64;
        let bytes = m.seal()?;
        self.target.put(&format!("{prefix}manifest.json"), bytes)?;
        if self.settings.verify_after {
            progress("verifying", 0, 0);
            let r = crate::verify::verify_backup(self, &id, false, progress);
            if !r.problems.is_empty() {
                return Err(BackupError::Corrupt(format!(
                    "backup {id} was written but does not verify: {}",
                    r.problems.join("; ")
                )));
            }
        }
        Ok(m)
    }

    /// The backups that build on `id` (directly or through others).
    fn dependents(listed: &[Listed], id: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut frontier = vec![id.to_string()];
        while let Some(p) = frontier.pop() {
            for l in listed {
                if l.manifest.as_ref().and_then(|m| m.parent.as_deref()) == Some(p.as_str()) && !out.contains(&l.id) {
                    out.push(l.id.clone());
                    frontier.push(l.id.clone());
                }
            }
        }
        out
    }

    /// Delete a backup (the manifest first, so it stops being usable at
    /// once). Backups building on it are refused unless `with_dependents`.
    /// Returns the ids deleted.
    pub fn delete(&self, id: &str, with_dependents: bool) -> Result<Vec<String>> {
        check_id(id)?;
        let listed = self.list()?;
        if !listed.iter().any(|l| l.id == id) {
            return Err(BackupError::NotFound(format!("no backup {id} on {}", self.target.url())));
        }
        let deps = Self::dependents(&listed, id);
        if !deps.is_empty() && !with_dependents {
            return Err(BackupError::Conflict(format!(
                "incremental backups build on {id}: {} (delete them too with --force)",
                deps.join(", ")
            )));
        }
        let mut gone = Vec::new();
        for d in deps.iter().rev().chain(std::iter::once(&id.to_string())) {
            self.delete_folder(d)?;
            gone.push(d.clone());
        }
        Ok(gone)
    }

    fn delete_folder(&self, id: &str) -> Result<()> {
        let prefix = format!("backups/{id}/");
        self.target.delete(&format!("{prefix}manifest.json"))?;
        self.target.remove_folder(&prefix)
    }

    /// Apply `retention` and `max_age`: keep the newest `retention` full
    /// backups (with their incrementals) and none older than `max_age`,
    /// but always the newest full one; remove incomplete backups a day old.
    /// Then trim the archive to what the oldest kept backup needs. Returns
    /// the ids deleted.
    pub fn apply_retention(&self) -> Result<Vec<String>> {
        let listed = self.list()?;
        let now = now_ms();
        let max_age_ms = parse_interval(&self.settings.max_age).unwrap_or(0) * 1000;
        let mut fulls: Vec<&Manifest> =
            listed.iter().filter_map(|l| l.manifest.as_ref()).filter(|m| m.kind == Kind::Full).collect();
        fulls.sort_by_key(|m| std::cmp::Reverse((m.created_unix_ms, m.end_seq)));
        let mut doomed: Vec<String> = Vec::new();
        for (i, m) in fulls.iter().enumerate() {
            let too_many = i >= self.settings.retention.max(1);
            let too_old = i > 0 && max_age_ms > 0 && now.saturating_sub(m.created_unix_ms) > max_age_ms;
            if too_many || too_old {
                doomed.push(m.id.clone());
                doomed.extend(Self::dependents(&listed, &m.id));
            }
        }
        for l in &listed {
            let stale = id_seconds(&l.id).is_some_and(|s| now / 1000 > s + 86_400);
            if l.manifest.is_none() && stale {
                doomed.push(l.id.clone());
            }
        }
        doomed.sort();
        doomed.dedup();
        // Incrementals before what they build on (newest first), so a
        // reader never meets an incremental whose parent is half gone.
        let created = |id: &String| {
            listed.iter().find(|l| &l.id == id).and_then(|l| l.manifest.as_ref()).map_or(0, |m| m.created_unix_ms)
        };
        let mut order = doomed.clone();
        order.sort_by_key(|id| std::cmp::Reverse((created(id), id.clone())));
        for id in &order {
            self.delete_folder(id)?;
        }
        // The archive only needs to reach back to the oldest full backup kept
        // of its own history (after a failover a former primary's backups
        // are not a base for the archive the new primary writes).
        let archived = crate::archive::archived_epoch(&self.target)?;
        let oldest_kept = fulls
            .iter()
            .filter(|m| !doomed.contains(&m.id) && crate::archive::shares(m.end_seq, m.branch, archived))
            .map(|m| m.start_seq)
            .min();
        if let Some(floor) = oldest_kept {
            crate::archive::trim(&self.target, floor)?;
        }
        Ok(doomed)
    }
}
