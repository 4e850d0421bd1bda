//! Continuous archiving: the commit log shipped to the target as it is
//! written, so that losing the machine loses at most the last
//! `archive_interval_ms` (plus one upload) of commits.
//!
//! Every `archive_interval_ms` the archiver reads the commits that became
//! durable since its last pass from the data directory's log files (closed
//! segments and the open one alike) and stores them as one log chunk
//! (`archive/log/<first>-<last>.chunk`, with each commit's time, taken by a
//! commit listener). Only durable commits are shipped: a commit a crash
//! takes back is never in the archive, so the archive never disagrees with
//! the database it belongs to. Until a commit is shipped the database keeps
//! its log file (`Database::hold_log_after`). New snapshots are shipped too
//! (`archive/snapshots/`), as bases for point-in-time restore.
//!
//! `archive/IDENTITY` names the database whose log this is: a different
//! database (a restored copy gets a new identity) refuses to archive there.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use ecsdb::Database;
use ecsdb::storage::fs::OsFs;
use ecsdb::storage::snapshot;
use ecsdb::storage::store::list_snapshots;

use crate::chunk::{self, Rec};
use crate::config::BackupSettings;
use crate::error::{BackupError, Result};
use crate::logread::LogCursor;
use crate::manager::{Progress, now_ms, rfc3339};
use crate::manifest::hex;
use crate::state;
use crate::target::Target;
use crate::verify::Report;

pub const IDENTITY_KEY: &str = "archive/IDENTITY";
/// The epoch of the primary that archives here (replicated databases).
pub const EPOCH_KEY: &str = "archive/EPOCH";
const LOG_PREFIX: &str = "archive/log/";
const SNAP_PREFIX: &str = "archive/snapshots/";
/// Commit times kept for commits not yet shipped (beyond: the time of
/// shipping stands in, a later time than the commit's).
const MAX_TIMES: usize = 4_000_000;

/// An archived log chunk, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRef {
    pub key: String,
    pub first: u64,
    pub last: u64,
}

/// An archived snapshot, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapRef {
    pub key: String,
    pub seq: u64,
    pub created_ms: u64,
}

pub fn snapshot_key(seq: u64, created_ms: u64) -> String {
    format!("{SNAP_PREFIX}{seq:020}-{created_ms}.snap")
}

/// What an archived snapshot is, stored beside it (`.json`) after it: whose
/// it is and its SHA-256, with a SHA-256 over the record itself. A snapshot
/// without a record (an interrupted upload, a file copied in) is never used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SnapRecord {
    pub format: u32,
    pub database_id: String,
    pub seq: u64,
    pub created_unix_ms: u64,
    pub bytes: u64,
    pub sha256: String,
    pub checksum: String,
}

impl SnapRecord {
    fn body_checksum(&self) -> String {
        let mut r = self.clone();
        r.checksum = String::new();
        crate::manifest::sha256_hex(&serde_json::to_vec(&r).unwrap_or_default())
    }

    fn seal(mut self) -> Result<Vec<u8>> {
        self.checksum = self.body_checksum();
        serde_json::to_vec_pretty(&self).map_err(|e| BackupError::Config(e.to_string()))
    }
}

impl SnapRef {
    /// The key of its record.
    pub fn record_key(&self) -> String {
        format!("{}.json", self.key.strip_suffix(".snap").unwrap_or(&self.key))
    }
}

/// An archived snapshot's record, checked: present, intact, of this
/// snapshot, of database `database_id` (hex).
pub fn snapshot_record(target: &Target, s: &SnapRef, database_id: &str) -> Result<SnapRecord> {
    let key = s.record_key();
    let b = target.get_opt(&key)?.ok_or_else(|| {
        BackupError::Corrupt(format!(
            "{}: its record {key} is missing (an interrupted upload, or not this archive's)",
            s.key
        ))
    })?;
    let r: SnapRecord =
        serde_json::from_slice(&b).map_err(|e| BackupError::Corrupt(format!("{key}: unreadable ({e})")))?;
    if r.format != 1 || r.checksum != r.body_checksum() {
        return Err(BackupError::Corrupt(format!("{key}: record checksum mismatch")));
    }
    if r.database_id != database_id {
        return Err(BackupError::Corrupt(format!(
            "{}: belongs to database {}, not {database_id} (a snapshot from another database)",
            s.key, r.database_id
        )));
    }
    if r.seq != s.seq {
        return Err(BackupError::Corrupt(format!("{key}: describes sequence {}, not {}", r.seq, s.seq)));
    }
    Ok(r)
}

/// The archived log chunks, by first sequence.
pub fn list_chunks(target: &Target) -> Result<Vec<ChunkRef>> {
    let mut v: Vec<ChunkRef> = target
        .list(LOG_PREFIX)?
        .into_iter()
        .filter_map(|o| chunk::parse_chunk_name(&o.key).map(|(first, last)| ChunkRef { key: o.key, first, last }))
        .collect();
    v.sort_by_key(|c| (c.first, c.last));
    Ok(v)
}

/// The archived snapshots, by sequence.
pub fn list_snapshots_on(target: &Target) -> Result<Vec<SnapRef>> {
    let mut v: Vec<SnapRef> = target
        .list(SNAP_PREFIX)?
        .into_iter()
        .filter_map(|o| {
            let name = o.key.rsplit('/').next()?.strip_suffix(".snap")?;
            let (s, t) = name.split_once('-')?;
            Some(SnapRef { seq: s.parse().ok()?, created_ms: t.parse().ok()?, key: o.key.clone() })
        })
        .collect();
    v.sort_by_key(|s| s.seq);
    Ok(v)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Identity {
    database_id: String,
    created_at: String,
}

/// Where the archiving node's history branched off: a replicated
/// database's primary is at `epoch`, which began after commit `after_seq`
/// (epoch 1 began at 0: the first primary's history has no branch).
///
/// A promoted replica's commits up to `after_seq` are the former
/// primary's; the former primary may have archived commits past it that
/// the new primary never had. The archive records the epoch of the primary
/// archiving to it (`archive/EPOCH`): a primary of a newer epoch continues
/// an archive only if it ends at or before `after_seq` (else it would join
/// two histories), and a primary of an older epoch (fenced, or cut off)
/// stops archiving there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branch {
    pub epoch: u64,
    pub after_seq: u64,
}

/// Whether the state after commit `seq` is the same in the histories `x`
/// and `y` (either unknown: assumed). Histories of one epoch are one;
/// otherwise they share every commit up to where the newer epoch began.
pub fn shares(seq: u64, x: Option<Branch>, y: Option<Branch>) -> bool {
    match (x, y) {
        (Some(x), Some(y)) if x.epoch != y.epoch => seq <= if x.epoch > y.epoch { x.after_seq } else { y.after_seq },
        _ => true,
    }
}

/// How far the archive, written on history `archive`, continues a base at
/// commit `seq` on history `base`: `None` all of it, `Some(n)` its commits
/// up to `n` only (`Some(seq)`: none).
pub fn continues_to(seq: u64, base: Option<Branch>, archive: Option<Branch>) -> Option<u64> {
    match (base, archive) {
        (Some(b), Some(a)) if b.epoch != a.epoch => {
            if !shares(seq, Some(b), Some(a)) {
                Some(seq)
            } else if b.epoch > a.epoch {
                // An older history: the base's only up to where its epoch began.
                Some(b.after_seq.max(seq))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The epoch recorded on the target, if any.
pub fn archived_epoch(target: &Target) -> Result<Option<Branch>> {
    match target.get_opt(EPOCH_KEY)? {
        None => Ok(None),
        Some(b) => serde_json::from_slice::<Branch>(&b)
            .map(Some)
            .map_err(|e| BackupError::Corrupt(format!("{EPOCH_KEY}: unreadable ({e})"))),
    }
}

/// The last commit the archive holds (0: none).
pub fn archived_upto(target: &Target) -> Result<u64> {
    Ok(list_chunks(target)?.last().map_or(0, |c| c.last))
}

/// The hex id of the database whose log is archived on the target.
pub fn identity(target: &Target) -> Result<Option<String>> {
    match target.get_opt(IDENTITY_KEY)? {
        None => Ok(None),
        Some(b) => serde_json::from_slice::<Identity>(&b)
            .map(|i| Some(i.database_id))
            .map_err(|e| BackupError::Corrupt(format!("{IDENTITY_KEY}: unreadable ({e})"))),
    }
}

/// Remove archived chunks every commit of which is at or below `floor`, and
/// archived snapshots older than `floor` (a kept full backup starts there).
pub fn trim(target: &Target, floor: u64) -> Result<()> {
    let chunks = list_chunks(target)?;
    // The newest chunk always stays: it tells the archiver its log is there.
    let newest = chunks.iter().map(|c| c.last).max().unwrap_or(0);
    for c in chunks {
        if c.last <= floor && c.last < newest {
            target.delete(&c.key)?;
        }
    }
    for s in list_snapshots_on(target)? {
        if s.seq < floor {
            target.delete(&s.record_key())?;
            target.delete(&s.key)?;
        }
    }
    Ok(())
}

/// Check the archived log: every chunk decodes, belongs to the archive's
/// database and follows the one before without a gap; every archived
/// snapshot verifies.
pub fn verify(target: &Target, progress: Progress<'_>) -> Result<Report> {
    let mut r = Report {
        id: "archive".into(),
        ok: false,
        problems: Vec::new(),
        files_checked: 0,
        bytes_checked: 0,
        deep: None,
        unavailable: false,
        incomplete: false,
    };
    let chunks = list_chunks(target)?;
    let snaps = list_snapshots_on(target)?;
    let ident = match identity(target) {
        Ok(i) => i,
        Err(e) => {
            r.problems.push(e.to_string());
            None
        }
    };
    if ident.is_none() && !(chunks.is_empty() && snaps.is_empty()) {
        r.problems.push(format!("{IDENTITY_KEY} is missing: whose log is this?"));
    }
    let mut prev: Option<u64> = None;
    let n = chunks.len() as u64;
    for (i, c) in chunks.iter().enumerate() {
        progress("verifying the archive", i as u64, n);
        let bytes = match target.get(&c.key) {
            Ok(b) => b,
            // Merged into a wider chunk meanwhile (the archiver stores the
            // merged chunk before it deletes the small ones): still held.
            Err(BackupError::NotFound(_))
                if list_chunks(target)?.iter().any(|o| o.key != c.key && o.first <= c.first && o.last >= c.last) =>
            {
                continue;
            }
            Err(e) => {
                r.problems.push(e.to_string());
                continue;
            }
        };
        r.files_checked += 1;
        r.bytes_checked += bytes.len() as u64;
        match chunk::decode(&c.key, &bytes) {
            Ok(d) => {
                if (d.first_seq, d.last_seq) != (c.first, c.last) {
                    r.problems.push(format!(
                        "{}: holds commits {}..={}, not what its name says",
                        c.key, d.first_seq, d.last_seq
                    ));
                }
                if let Some(id) = &ident
                    && hex(&d.database_id) != *id
                {
                    r.problems.push(format!(
                        "{}: belongs to database {}, not {id} (a chunk from another database)",
                        c.key,
                        hex(&d.database_id)
                    ));
                }
            }
            Err(e) => r.problems.push(e.to_string()),
        }
        if let Some(p) = prev
            && c.first > p + 1
        {
            r.problems.push(format!(
                "{LOG_PREFIX}: commits {}..={} are missing (before {})",
                p + 1,
                c.first - 1,
                c.key
            ));
        }
        prev = Some(prev.map_or(c.last, |p| p.max(c.last)));
    }
    // The log after each base: a snapshot followed by later commits must be
    // followed by the very next one.
    for s in &snaps {
        let later = chunks.iter().any(|c| c.last > s.seq);
        let next = chunks.iter().any(|c| c.first <= s.seq + 1 && c.last > s.seq);
        if later && !next {
            let resumes = chunks.iter().filter(|c| c.first > s.seq).map(|c| c.first).min().unwrap_or(s.seq + 1);
            r.problems.push(format!(
                "{LOG_PREFIX}: commits {}..={} after the archived snapshot at {} are missing",
                s.seq + 1,
                resumes - 1,
                s.seq
            ));
        }
    }
    for s in &snaps {
        let rec = match ident.as_deref().map(|id| snapshot_record(target, s, id)) {
            Some(Ok(rec)) => Some(rec),
            Some(Err(e)) => {
                r.problems.push(e.to_string());
                None
            }
            None => None,
        };
        match target.get(&s.key) {
            Ok(b) => {
                r.files_checked += 1;
                r.bytes_checked += b.len() as u64;
                if let Some(rec) = &rec
                    && (rec.bytes != b.len() as u64 || rec.sha256 != crate::manifest::sha256_hex(&b))
                {
                    r.problems
                        .push(format!("{}: SHA-256 or size differs from its record (changed or replaced)", s.key));
                }
                match snapshot::verify(Path::new(&s.key), &b) {
                    Ok(info) if info.seq != s.seq => {
                        r.problems.push(format!("{}: the snapshot is at sequence {}, not {}", s.key, info.seq, s.seq));
                    }
                    Ok(_) => {}
                    Err(e) => r.problems.push(format!("{}: {e}", s.key)),
                }
            }
            Err(e) => r.problems.push(e.to_string()),
        }
    }
    r.ok = r.problems.is_empty();
    Ok(r)
}

/// The first sequence the data directory's log files hold.
fn local_log_first(dir: &Path) -> Result<Option<u64>> {
    let mut first: Option<u64> = None;
    for sub in ["wal_archive", "wal"] {
        for (f, _) in ecsdb::storage::store::list_segments(&OsFs, &dir.join(sub)).map_err(ecsdb::DbError::from)? {
            first = Some(first.map_or(f, |x: u64| x.min(f)));
        }
    }
    Ok(first)
}

/// What the archiver reports (health, metrics, the admin API).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArchiveStatus {
    pub target: String,
    /// Last commit on the target.
    pub shipped_seq: u64,
    /// Last commit of the database.
    pub database_seq: u64,
    /// Age of the oldest commit not yet on the target (0 when none).
    pub lag_seconds: f64,
    pub lag_commits: u64,
    pub chunks_shipped: u64,
    pub bytes_shipped: u64,
    pub snapshots_shipped: u64,
    pub last_shipped_at: Option<String>,
    pub failures: u64,
    pub last_error: Option<String>,
    /// Times the small chunks were merged into larger ones.
    pub merges: u64,
    /// A gap the archive has (commits no longer anywhere): set when the
    /// archive had to start again from a snapshot.
    pub gap: Option<String>,
    /// The recovery point objective `/health` holds the lag to.
    pub rpo_seconds: f64,
}

#[derive(Debug, Default)]
struct Shared {
    status: ArchiveStatus,
    /// `(seq, unix ms)` of commits not yet shipped.
    times: VecDeque<(u64, u64)>,
}

/// The archiver thread of one database.
#[derive(Debug)]
pub struct Archiver {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    /// Stop without shipping again (a node that is no longer primary).
    abandon: Arc<AtomicBool>,
    handle: Mutex<Option<std::thread::JoinHandle<()>>>,
    db: Database,
}

struct Worker {
    db: Database,
    target: Arc<Target>,
    shared: Arc<Mutex<Shared>>,
    database_id: [u8; 16],
    cursor: LogCursor,
    shipped: u64,
    shipped_snapshot: u64,
    /// Whether the target was checked (identity, what it holds).
    initialized: bool,
    /// Commits up to here are in merged chunks (or were on the target
    /// before this run); the log files keep everything after it.
    merged: u64,
    /// Chunks shipped since `merged`, to be replaced by one merged chunk.
    small: Vec<ChunkRef>,
    merge_after: usize,
    passes_since_check: u32,
    /// The target lost its archive: start again from the newest snapshot.
    lost: bool,
    /// The newest merged chunk (checked every so often: still there?).
    merged_key: Option<String>,
    level: Option<i32>,
    last_logged_error: Option<String>,
    /// This node's place in a replicated history (see [`Branch`]).
    branch: Option<Branch>,
    /// The last refusal was the branch check's (not a configuration error).
    branch_refused: bool,
    /// The target holds no state to replay the archived log onto (no
    /// archived snapshot, no full backup): one is made and shipped.
    base_missing: bool,
}

impl Archiver {
    /// Check the target and start shipping `db`'s log to it.
    pub fn start(db: &Database, target: Arc<Target>, settings: &BackupSettings) -> Result<Archiver> {
        Archiver::start_on_branch(db, target, settings, None)
    }

    /// [`Archiver::start`] for the primary of a replicated database, at
    /// `branch`. An archive this primary must not continue (see [`Branch`])
    /// is not a refusal to start: the archiver keeps the log, reports the
    /// conflict as its error and tries again every pass (moving the archive
    /// aside lets it go on).
    pub fn start_on_branch(
        db: &Database,
        target: Arc<Target>,
        settings: &BackupSettings,
        branch: Option<Branch>,
    ) -> Result<Archiver> {
        Archiver::start_with(db, target, settings, branch, true)
    }

    /// [`Archiver::start_on_branch`] without looking at the target first:
    /// the thread does it on its first pass, so a slow target never holds
    /// the caller up; what it would have refused (another database's
    /// archive) is reported as the archiver's error, and nothing is shipped.
    pub fn start_deferred(
        db: &Database,
        target: Arc<Target>,
        settings: &BackupSettings,
        branch: Option<Branch>,
    ) -> Result<Archiver> {
        Archiver::start_with(db, target, settings, branch, false)
    }

    fn start_with(
        db: &Database,
        target: Arc<Target>,
        settings: &BackupSettings,
        branch: Option<Branch>,
        check_now: bool,
    ) -> Result<Archiver> {
        let dir = db
            .data_dir()
            .ok_or_else(|| BackupError::Config("archiving needs a durable database (a data directory)".into()))?
            .to_path_buf();
        if !db.logs_commits() {
            return Err(BackupError::Config("archiving needs the commit log (transactions.wal_enabled = true)".into()));
        }
        let database_id = state::database_id(&dir)?;
        // Until the target has been checked nothing may leave the disk.
        db.hold_log_after(0);
        let shared = Arc::new(Mutex::new(Shared {
            status: ArchiveStatus {
                target: target.url().to_string(),
                rpo_seconds: settings.archive_rpo_ms as f64 / 1000.0,
                ..ArchiveStatus::default()
            },
            times: VecDeque::new(),
        }));
        {
            let s = shared.clone();
            db.listen_commits(Box::new(move |seq, _| {
                let mut g = s.lock();
                if g.times.len() >= MAX_TIMES {
                    g.times.pop_front();
                }
                g.times.push_back((seq, now_ms()));
            }));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut w = Worker {
            db: db.clone(),
            target,
            shared: shared.clone(),
            database_id,
            cursor: LogCursor::new(&dir, 0),
            shipped: 0,
            shipped_snapshot: 0,
            initialized: false,
            merged: 0,
            small: Vec::new(),
            merge_after: settings.archive_merge_chunks,
            passes_since_check: 0,
            lost: false,
            merged_key: None,
            level: settings.compress.then_some(settings.compression_level),
            last_logged_error: None,
            branch,
            branch_refused: false,
            base_missing: false,
        };
        // A target that belongs to another database is a configuration
        // error: refuse now. One that cannot be reached is retried by the
        // thread (the database serves meanwhile, keeping its log).
        match if check_now { w.init() } else { Ok(()) } {
            Ok(()) | Err(BackupError::Target { .. }) => {}
            Err(e) if w.branch_refused => {
                tracing::error!(target = %w.target.url(), error = %e, "log archiving refused; retrying");
                w.shared.lock().status.last_error = Some(e.to_string());
                w.last_logged_error = Some(e.to_string());
            }
            Err(e) => return Err(e),
        }
        let interval = Duration::from_millis(settings.archive_interval_ms);
        let st = stop.clone();
        let abandon = Arc::new(AtomicBool::new(false));
        let ab = abandon.clone();
        let handle = std::thread::Builder::new()
            .name("ecsdb-archiver".into())
            .spawn(move || {
                let mut next = Instant::now();
                loop {
                    let stopping = st.load(Ordering::Acquire);
                    if ab.load(Ordering::Acquire) {
                        return;
                    }
                    w.pass();
                    if stopping {
                        return;
                    }
                    next += interval;
                    let now = Instant::now();
                    if next > now {
                        // Sleep in short steps so a stop is noticed quickly.
                        while Instant::now() < next && !st.load(Ordering::Acquire) {
                            std::thread::sleep((next - Instant::now()).min(Duration::from_millis(50)));
                        }
                    } else {
                        next = now;
                    }
                }
            })
            .map_err(|e| BackupError::Config(format!("cannot start the archiver thread: {e}")))?;
        Ok(Archiver { shared, stop, abandon, handle: Mutex::new(Some(handle)), db: db.clone() })
    }

    /// The archiver's figures now.
    pub fn status(&self) -> ArchiveStatus {
        let g = self.shared.lock();
        let mut s = g.status.clone();
        s.database_seq = self.db.version();
        s.lag_commits = s.database_seq.saturating_sub(s.shipped_seq);
        s.lag_seconds = if s.lag_commits == 0 {
            0.0
        } else {
            let oldest = g.times.iter().find(|(q, _)| *q > s.shipped_seq).map(|(_, t)| *t);
            oldest.map_or(0.0, |t| now_ms().saturating_sub(t) as f64 / 1000.0)
        };
        s
    }

    /// Stop at once, shipping nothing more (a primary that learned of a
    /// newer epoch: what it has not shipped may not be in the history the
    /// new primary goes on with). The log stays held until the database
    /// closes.
    pub fn abandon(&self) {
        self.abandon.store(true, Ordering::Release);
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.lock().take() {
            let _ = h.join();
        }
    }

    /// Ship what is durable one last time and stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.lock().take() {
            let _ = h.join();
        }
    }
}

impl Drop for Archiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl Worker {
    /// Check the target: whose archive it is, and what it already holds.
    fn init(&mut self) -> Result<()> {
        if self.initialized {
            return Ok(());
        }
        let ours = hex(&self.database_id);
        let target = self.target.clone();
        let target = &*target;
        match identity(target)? {
            Some(id) if id != ours => {
                return Err(BackupError::Conflict(format!(
                    "{} archives the log of database {id}; this database is {ours} (a restored copy is a new database): archive to another prefix",
                    target.url()
                )));
            }
            Some(_) => {}
            None => {
                let i = Identity { database_id: ours.clone(), created_at: rfc3339(now_ms()) };
                let b = serde_json::to_vec_pretty(&i).map_err(|e| BackupError::Config(e.to_string()))?;
                target.put(IDENTITY_KEY, b)?;
            }
        }
        // After the target lost its archive, what is there now (chunks
        // shipped since) is not a log to build on: start again from the
        // newest snapshot.
        let shipped = if self.lost { 0 } else { archived_upto(target)? };
        self.check_branch(shipped)?;
        let durable = self.db.storage_stats().map_or(0, |s| s.durable_seq);
        if shipped > durable.max(self.db.version()) {
            return Err(BackupError::Conflict(format!(
                "{} holds this database's commits up to {shipped}, but the database is at {}: it lost commits or was rolled back; archive to another prefix",
                target.url(),
                self.db.version()
            )));
        }
        self.shipped_snapshot = list_snapshots_on(target)?.last().map_or(0, |s| s.seq);
        // Without a base on the target the archived log restores nothing.
        self.base_missing = self.shipped_snapshot == 0 && {
            let m = crate::manager::Manager::new(self.target.clone(), BackupSettings::default());
            !m.list()?
                .iter()
                .filter_map(|l| l.manifest.as_ref())
                .any(|m| m.kind == crate::manifest::Kind::Full && m.database_id == hex(&self.database_id))
        };
        // The commits after what the target holds must still be in the log
        // files; when they are not (archiving starts on a database whose old
        // log is gone, or the target lost its archive), the archive starts
        // again from the newest snapshot, which is shipped as its base.
        let dir = self.cursor_dir().to_path_buf();
        let mut start = shipped;
        let local_first = local_log_first(&dir)?;
        if self.lost || local_first.is_some_and(|f| shipped + 1 < f) {
            let newest =
                list_snapshots(&OsFs, &dir.join("snapshots")).map_err(ecsdb::DbError::from)?.first().map(|(s, _)| *s);
            // Without a snapshot the log must reach back to the beginning.
            let newest = match newest {
                Some(s) => s,
                None if local_first.is_none_or(|f| f <= 1) => 0,
                None => {
                    return Err(BackupError::NotFound(
                        "the log after the archive is gone and there is no snapshot to start from".into(),
                    ));
                }
            };
            let msg = format!(
                "{} holds this database's log up to commit {shipped}; the log files start at {}: the archive starts again from the snapshot at {newest} (point-in-time restore into commits {}..={newest} is not possible)",
                target.url(),
                local_first.unwrap_or_default(),
                shipped + 1
            );
            tracing::warn!(gap = %msg, "log archive restarted");
            self.shared.lock().status.gap = Some(msg);
            start = newest;
        }
        self.shipped = start;
        self.merged = start;
        self.small.clear();
        self.db.hold_log_after(start);
        self.cursor = LogCursor::new(&dir, start);
        self.shared.lock().status.shipped_seq = start;
        self.initialized = true;
        self.lost = false;
        self.merged_key = None;
        self.passes_since_check = 0;
        Ok(())
    }

    /// Whether this primary may continue an archive ending at `shipped`
    /// (see [`Branch`]); records its epoch on the target when it may.
    fn check_branch(&mut self, shipped: u64) -> Result<()> {
        self.branch_refused = false;
        let Some(b) = self.branch else { return Ok(()) };
        let url = self.target.url().to_string();
        let marked = archived_epoch(&self.target)?;
        let refuse = |w: &mut Worker, msg: String| {
            w.branch_refused = true;
            Err(BackupError::Conflict(msg))
        };
        match marked {
            Some(m) if m.epoch > b.epoch => {
                return refuse(
                    self,
                    format!(
                        "{url} is archived by the primary of epoch {}; this node is at epoch {} (a former primary): it archives no more",
                        m.epoch, b.epoch
                    ),
                );
            }
            Some(m) if m.epoch == b.epoch => return Ok(()),
            _ => {}
        }
        let snapshot = if self.lost { 0 } else { list_snapshots_on(&self.target)?.last().map_or(0, |s| s.seq) };
        let past = shipped.max(snapshot);
        if b.epoch > 1 && past > b.after_seq && !self.lost {
            return refuse(
                self,
                format!(
                    "{url} holds commits up to {past}, past commit {} where epoch {} (this primary's) began: they come from the former primary and are not in this database's history. Archive to another prefix (the old archive can still be restored to recover them), or move its archive/ aside",
                    b.after_seq, b.epoch
                ),
            );
        }
        let body = serde_json::to_vec_pretty(&b).map_err(|e| BackupError::Config(e.to_string()))?;
        self.target.put(EPOCH_KEY, body)?;
        Ok(())
    }

    /// Every so often, check the target still holds this archive (a wiped
    /// bucket would otherwise take shipped chunks without a base), and
    /// that no newer primary archives to it.
    fn check_target(&mut self) -> Result<()> {
        self.passes_since_check += 1;
        if !self.initialized || self.passes_since_check < 20 {
            return Ok(());
        }
        self.passes_since_check = 0;
        if let Some(b) = self.branch
            && archived_epoch(&self.target)?.is_some_and(|m| m.epoch > b.epoch)
        {
            // Checked (and refused) again by `init` on every pass from now.
            self.initialized = false;
            return self.init();
        }
        // The chunks this run's log rests on: the last merged one and the
        // oldest one shipped since. Gone because retention trimmed them (a
        // backup or archived snapshot at or after their last commit) is fine.
        let mut chunk_gone = false;
        let mut keys: Vec<(String, u64)> = Vec::new();
        if let Some(k) = &self.merged_key {
            keys.push((k.clone(), self.merged));
        }
        if let Some(c) = self.small.first() {
            keys.push((c.key.clone(), c.last));
        }
        for (k, last) in keys {
            if self.target.exists(&k)? {
                continue;
            }
            let snapshot_after = list_snapshots_on(&self.target)?.iter().any(|s| s.seq >= last);
            let backup_after = || -> Result<bool> {
                let m = crate::manager::Manager::new(self.target.clone(), BackupSettings::default());
                Ok(m.list()?.iter().filter_map(|l| l.manifest.as_ref()).any(|m| {
                    m.kind == crate::manifest::Kind::Full
                        && m.end_seq >= last
                        && m.database_id == hex(&self.database_id)
                }))
            };
            if snapshot_after || backup_after()? {
                // Trimmed: stop watching it.
                if self.merged_key.as_deref() == Some(k.as_str()) {
                    self.merged_key = None;
                }
                self.small.retain(|c| c.key != k);
            } else {
                chunk_gone = true;
            }
        }
        if identity(&self.target)?.is_none() || chunk_gone {
            tracing::warn!(target = %self.target.url(), "the target lost its archive (archive/IDENTITY or the newest chunk is gone): starting it again");
            self.initialized = false;
            self.lost = true;
            return self.init();
        }
        Ok(())
    }

    fn pass(&mut self) {
        let r = self
            .init()
            .and_then(|()| self.check_target())
            .and_then(|()| self.ship_log())
            .and_then(|()| self.ship_snapshot());
        let mut g = self.shared.lock();
        match r {
            Ok(()) => {
                if g.status.last_error.take().is_some() {
                    tracing::info!(target = %self.target.url(), "log archiving recovered");
                }
                self.last_logged_error = None;
            }
            Err(e) => {
                let msg = e.to_string();
                g.status.failures += 1;
                g.status.last_error = Some(msg.clone());
                drop(g);
                if self.last_logged_error.as_deref() != Some(&msg) {
                    tracing::error!(target = %self.target.url(), error = %msg, "log archiving failed; retrying");
                    self.last_logged_error = Some(msg);
                }
                // Read again from what is really on the target.
                self.cursor = LogCursor::new(self.cursor_dir(), self.shipped);
            }
        }
    }

    fn cursor_dir(&self) -> &Path {
        self.db.data_dir().unwrap_or(Path::new("."))
    }

    /// Each record's commit time (the listener's; else now, a later bound).
    fn times(&self, piece: &crate::logread::Piece) -> Vec<u64> {
        let now = now_ms();
        let g = self.shared.lock();
        piece
            .records
            .iter()
            .map(|(s, _)| {
                // The deque is in sequence order: binary search.
                let i = g.times.partition_point(|(q, _)| q < s);
                g.times.get(i).filter(|(q, _)| q == s).map_or(now, |(_, t)| *t)
            })
            .collect()
    }

    /// Store one piece of log as a chunk; returns its reference and size.
    fn put_piece(&self, piece: &crate::logread::Piece) -> Result<Option<(ChunkRef, u64)>> {
        let (Some(a), Some(b)) = (piece.records.first(), piece.records.last()) else { return Ok(None) };
        let times = self.times(piece);
        let recs: Vec<Rec<'_>> =
            piece.records.iter().zip(&times).map(|((s, p), t)| Rec { seq: *s, payload: p, time_ms: *t }).collect();
        let bytes = chunk::encode(&self.database_id, piece.fingerprint, &recs, self.level)?;
        let len = bytes.len() as u64;
        let key = format!("{LOG_PREFIX}{}", chunk::chunk_name(a.0, b.0));
        self.target.put(&key, bytes)?;
        Ok(Some((ChunkRef { key, first: a.0, last: b.0 }, len)))
    }

    fn ship_log(&mut self) -> Result<()> {
        let durable = self.db.storage_stats().map_or(0, |s| s.durable_seq);
        if durable > self.shipped {
            for piece in self.cursor.read_to(durable)? {
                let Some((c, len)) = self.put_piece(&piece)? else { continue };
                self.shipped = c.last;
                self.small.push(c);
                let mut g = self.shared.lock();
                g.status.shipped_seq = self.shipped;
                g.status.chunks_shipped += 1;
                g.status.bytes_shipped += len;
                g.status.last_shipped_at = Some(rfc3339(now_ms()));
            }
        }
        if self.small.len() >= self.merge_after.max(2) {
            self.merge()?;
        }
        Ok(())
    }

    /// Replace the small chunks shipped since the last merge with one chunk
    /// per log segment (a restore fetches a few large objects, not one per
    /// interval). The merged chunk is stored before any small one goes, and
    /// a restore picks the widest chunk, so an interruption leaves overlaps,
    /// never a gap.
    fn merge(&mut self) -> Result<()> {
        let upto = self.shipped;
        let mut cur = LogCursor::new(self.cursor_dir(), self.merged);
        let mut merged = Vec::new();
        for piece in cur.read_to(upto)? {
            if let Some((c, _)) = self.put_piece(&piece)? {
                self.merged_key = Some(c.key.clone());
                merged.push(c);
            }
        }
        for c in self.small.drain(..) {
            if !merged.iter().any(|m| m.key == c.key) {
                self.target.delete(&c.key)?;
            }
        }
        self.merged = upto;
        self.db.hold_log_after(upto);
        let mut g = self.shared.lock();
        while g.times.front().is_some_and(|(q, _)| *q <= upto) {
            g.times.pop_front();
        }
        g.status.merges += 1;
        Ok(())
    }

    fn ship_snapshot(&mut self) -> Result<()> {
        let Some(dir) = self.db.data_dir() else { return Ok(()) };
        let mut snaps = list_snapshots(&OsFs, &dir.join("snapshots")).map_err(ecsdb::DbError::from)?;
        if snaps.is_empty() && self.base_missing {
            // A new database's first snapshot is minutes away: make one now,
            // so that the archive restores from its first pass on.
            self.db.checkpoint()?;
            snaps = list_snapshots(&OsFs, &dir.join("snapshots")).map_err(ecsdb::DbError::from)?;
        }
        let Some((seq, path)) = snaps.into_iter().next() else { return Ok(()) };
        if seq <= self.shipped_snapshot {
            return Ok(());
        }
        // Retention may remove it meanwhile: then the next one goes.
        let Ok(bytes) = std::fs::read(&path) else { return Ok(()) };
        let info = snapshot::verify(&path, &bytes)?;
        let record = SnapRecord {
            format: 1,
            database_id: hex(&self.database_id),
            seq: info.seq,
            created_unix_ms: info.created_ms,
            bytes: bytes.len() as u64,
            sha256: crate::manifest::sha256_hex(&bytes),
            checksum: String::new(),
        }
        .seal()?;
        let key = snapshot_key(info.seq, info.created_ms);
        self.target.put(&key, bytes)?;
        self.target.put(&format!("{}.json", key.strip_suffix(".snap").unwrap_or(&key)), record)?;
        self.shipped_snapshot = seq;
        self.base_missing = false;
        self.shared.lock().status.snapshots_shipped += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: Option<Branch> = Some(Branch { epoch: 1, after_seq: 0 });
    const TWO: Option<Branch> = Some(Branch { epoch: 2, after_seq: 10 });

    #[test]
    fn histories_share_commits_up_to_where_the_newer_began() {
        // One epoch, or an unknown history: one history.
        assert!(shares(50, ONE, ONE) && shares(50, None, TWO) && shares(50, TWO, None));
        // Two epochs: the same up to the newer one's start, either way round.
        assert!(shares(10, ONE, TWO) && shares(10, TWO, ONE));
        assert!(!shares(11, ONE, TWO) && !shares(11, TWO, ONE));
    }

    #[test]
    fn the_archive_continues_a_base_only_within_their_shared_history() {
        // Same history: all of it.
        assert_eq!(continues_to(30, TWO, TWO), None);
        // A newer archive continues a base from before its branch point.
        assert_eq!(continues_to(8, ONE, TWO), None);
        // ... and nothing of a base past it.
        assert_eq!(continues_to(12, ONE, TWO), Some(12));
        // An older archive continues a newer base up to the branch point.
        assert_eq!(continues_to(8, TWO, ONE), Some(10));
        // ... and nothing past the base when the base is past it.
        assert_eq!(continues_to(12, TWO, ONE), Some(12));
    }
}
