//! Restore and point-in-time recovery: a data directory rebuilt from a
//! base (a full backup, or a snapshot the archiver shipped) plus the log
//! after it (incremental backups and the archived log), stopping exactly at
//! the requested point.
//!
//! Everything is fetched and checked — manifest checksums, SHA-256 of each
//! file a manifest names, every chunk's checksums and database, sequence
//! continuity, the replayed state's integrity — before the target directory
//! is touched; a failure leaves it as it was.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ecsdb::storage::fs::{OsFs, Vfs};
use ecsdb::storage::snapshot;
use ecsdb::{ChangeSet, Schema, World};

use crate::archive::{self, ChunkRef};
use crate::chunk;
use crate::error::{BackupError, Result, io};
use crate::manager::{Manager, Progress, check_id, rfc3339};
use crate::manifest::{Kind, Manifest, hex, sha256_hex};
use crate::state;
use crate::target::Target;

/// Where to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// The backup's own state (with `backup`), else everything there is.
    Latest,
    /// The state right after commit N.
    Seq(u64),
    /// The state after the last commit made at or before this time (unix ms).
    Time(u64),
}

impl Point {
    /// `--to-time` text (RFC 3339) to a point.
    pub fn parse_time(s: &str) -> Result<Point> {
        let t = chrono::DateTime::parse_from_rfc3339(s.trim()).map_err(|e| {
            BackupError::Config(format!("`{s}` is not an RFC 3339 time like 2026-11-23T21:54:05Z ({e})"))
        })?;
        u64::try_from(t.timestamp_millis())
            .map(Point::Time)
            .map_err(|_| BackupError::Config(format!("`{s}` is before 1970")))
    }
}

/// What to restore, and where.
#[derive(Debug, Clone)]
pub struct Request {
    pub backup: Option<String>,
    pub point: Point,
    pub data_dir: PathBuf,
    /// Move an existing data directory's contents aside instead of refusing.
    pub force: bool,
}

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub seq: u64,
    pub entities: u64,
    /// What the state started from (`backup <id>` or `archived snapshot <seq>`).
    pub base: String,
    pub base_seq: u64,
    pub commits_replayed: u64,
    /// Time of the last commit replayed, when known.
    pub last_commit_time: Option<String>,
    pub data_dir: PathBuf,
    /// Where existing contents were moved (with `force`).
    pub moved_aside: Option<PathBuf>,
    /// The archived log past this commit was not used: it is of another
    /// history than the base's (a former primary's commits past a failover).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_history_after: Option<u64>,
}

struct Source {
    key: String,
    first: u64,
    last: u64,
    /// Its commits past this one are of another history than the base's.
    max: u64,
    /// The history it is of (its backup's; the archive's).
    branch: Option<crate::Branch>,
    /// SHA-256 from a manifest (backup files), checked before use.
    sha256: Option<String>,
}

struct Base {
    key: String,
    seq: u64,
    sha256: Option<String>,
    label: String,
    database_id: Option<String>,
    /// The history it is on (a replicated database's backups say).
    branch: Option<crate::Branch>,
    /// The backup it comes from (its files are checked before use), or the
    /// archived snapshot (its record is checked).
    from: BaseFrom,
}

enum BaseFrom {
    Backup(Box<Manifest>),
    Archived(archive::SnapRef),
    Chain,
}

/// Every file `m` names is stored, at its size, and is a file a backup holds.
fn check_listed(stored: &[crate::target::Object], m: &Manifest) -> Result<()> {
    for f in &m.files {
        let key = format!("backups/{}/{}", m.id, f.name);
        let known = match m.kind {
            Kind::Full => f.name == "snapshot.snap",
            Kind::Incremental => f.name.strip_prefix("log/").is_some_and(|n| chunk::parse_chunk_name(n).is_some()),
        };
        if !known {
            return Err(BackupError::Corrupt(format!("{key}: not a file a {} backup holds", m.kind)));
        }
        match stored.iter().find(|o| o.key == key) {
            None => return Err(BackupError::Corrupt(format!("{key} is missing (the manifest names it)"))),
            Some(o) if o.size != f.bytes => {
                return Err(BackupError::Corrupt(format!(
                    "{key}: {} bytes, the manifest says {} (truncated or replaced)",
                    o.size, f.bytes
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Rebuild the state for `req` in memory (nothing is written).
pub fn build(target: &Arc<Target>, req: &Request, progress: Progress<'_>) -> Result<(World, Outcome)> {
    build_with_base(target, req, progress).map(|(w, o, _)| (w, o))
}

/// [`build`], also handing back the base snapshot's bytes when the state is
/// exactly the base (no commit replayed): they can be written as they are.
fn build_with_base(
    target: &Arc<Target>,
    req: &Request,
    progress: Progress<'_>,
) -> Result<(World, Outcome, Option<Vec<u8>>)> {
    let mgr = Manager::new(target.clone(), crate::config::BackupSettings::default());
    let listed = mgr.list()?;
    let manifests: Vec<&Manifest> = listed.iter().filter_map(|l| l.manifest.as_ref()).collect();
    let archive_id = archive::identity(target)?;
    // The archive's history (the epoch of the primary archiving there).
    let archive_branch = if archive_id.is_some() { archive::archived_epoch(target)? } else { None };
    let mut sources: Vec<Source> = Vec::new();
    let mut stop_at_backup: Option<u64> = None;
    // The history restored: the named backup's, else the newest epoch's
    // on the target (after a failover it may hold a former primary's too).
    let history: Option<crate::Branch>;
    let base = if let Some(id) = &req.backup {
        check_id(id)?;
        let m = match listed.iter().find(|l| &l.id == id) {
            Some(l) => l.manifest.clone().ok_or_else(|| {
                BackupError::Corrupt(format!("backup {id} is not usable: {}", l.problem.clone().unwrap_or_default()))
            })?,
            None => return Err(BackupError::NotFound(format!("no backup {id} on {}", target.url()))),
        };
        // Walk the chain down to its full backup.
        let mut chain = vec![m.clone()];
        while chain.last().is_some_and(|c| c.kind == Kind::Incremental) {
            let c = chain.last().cloned().unwrap_or_else(|| unreachable!());
            let pid = c.parent.clone().unwrap_or_default();
            let p = manifests.iter().find(|x| x.id == pid).ok_or_else(|| {
                BackupError::NotFound(format!("backup {} builds on {pid}, which is missing or damaged", c.id))
            })?;
            if chain.len() > 10_000 {
                return Err(BackupError::Corrupt("the chain of incremental backups loops".into()));
            }
            chain.push((*p).clone());
        }
        let full = chain.last().cloned().unwrap_or_else(|| unreachable!());
        // The backup asked for must verify as a whole (every file of its
        // chain, even those the archive could stand in for).
        let report = crate::verify::verify_backup(&mgr, id, false, progress);
        if !report.ok {
            return Err(BackupError::Corrupt(format!("backup {id} does not verify: {}", report.problems.join("; "))));
        }
        for c in chain.iter().rev().filter(|c| c.kind == Kind::Incremental) {
            for f in &c.files {
                let (first, last) = chunk::parse_chunk_name(&f.name).ok_or_else(|| {
                    BackupError::Corrupt(format!("backups/{}/{}: not a log chunk name", c.id, f.name))
                })?;
                sources.push(Source {
                    key: format!("backups/{}/{}", c.id, f.name),
                    first,
                    last,
                    max: u64::MAX,
                    branch: c.branch,
                    sha256: Some(f.sha256.clone()),
                });
            }
        }
        match req.point {
            Point::Latest => stop_at_backup = Some(m.end_seq),
            Point::Seq(n) if n < full.end_seq => {
                return Err(BackupError::NotFound(format!(
                    "sequence {n} is before backup {id}'s base (full backup {} at sequence {}): restore without --backup, or from an older backup",
                    full.id, full.end_seq
                )));
            }
            Point::Time(t) if t < full.created_unix_ms => {
                return Err(BackupError::NotFound(format!(
                    "{} is before backup {id}'s base (full backup {} taken at {}): restore without --backup, or from an older backup",
                    rfc3339(t),
                    full.id,
                    full.created_at
                )));
            }
            _ => {}
        }
        let snap = full
            .files
            .iter()
            .find(|f| f.name == "snapshot.snap")
            .ok_or_else(|| BackupError::Corrupt(format!("backups/{}/manifest.json names no snapshot", full.id)))?;
        Base {
            key: format!("backups/{}/snapshot.snap", full.id),
            seq: full.end_seq,
            sha256: Some(snap.sha256.clone()),
            label: format!("backup {}", full.id),
            database_id: Some(full.database_id.clone()),
            branch: {
                history = m.branch.or(full.branch);
                history
            },
            from: BaseFrom::Chain,
        }
    } else {
        // The newest base at or before the point.
        let mut bases: Vec<(Base, u64)> = Vec::new();
        let db = archive_id
            .clone()
            .or_else(|| manifests.iter().max_by_key(|m| m.created_unix_ms).map(|m| m.database_id.clone()));
        for m in manifests.iter().filter(|m| m.kind == Kind::Full && Some(&m.database_id) == db.as_ref()) {
            let Some(snap) = m.files.iter().find(|f| f.name == "snapshot.snap") else { continue };
            bases.push((
                Base {
                    key: format!("backups/{}/snapshot.snap", m.id),
                    seq: m.end_seq,
                    sha256: Some(snap.sha256.clone()),
                    label: format!("backup {}", m.id),
                    database_id: Some(m.database_id.clone()),
                    branch: m.branch,
                    from: BaseFrom::Backup(Box::new((*m).clone())),
                },
                m.created_unix_ms,
            ));
        }
        if archive_id.is_some() {
            for s in archive::list_snapshots_on(target)? {
                bases.push((
                    Base {
                        key: s.key.clone(),
                        seq: s.seq,
                        sha256: None,
                        label: format!("archived snapshot {}", s.seq),
                        database_id: archive_id.clone(),
                        branch: archive_branch,
                        from: BaseFrom::Archived(s.clone()),
                    },
                    s.created_ms,
                ));
            }
        }
        let stored = target.list("backups/")?;
        for m in manifests.iter().filter(|m| m.kind == Kind::Incremental && Some(&m.database_id) == db.as_ref()) {
            check_listed(&stored, m)?;
            for f in &m.files {
                if let Some((first, last)) = chunk::parse_chunk_name(&f.name) {
                    sources.push(Source {
                        key: format!("backups/{}/{}", m.id, f.name),
                        first,
                        last,
                        max: u64::MAX,
                        branch: m.branch,
                        sha256: Some(f.sha256.clone()),
                    });
                }
            }
        }
        // After a failover the target may hold two histories: the newest
        // epoch's is the database's; a base of an older one is used only
        // up to where the newer epoch began (a former primary's state past
        // it is restored by naming its backup).
        let newest = manifests
            .iter()
            .filter(|m| Some(&m.database_id) == db.as_ref())
            .filter_map(|m| m.branch)
            .chain(archive_branch)
            .max_by_key(|b| b.epoch);
        history = newest;
        let fits = |b: &(Base, u64)| {
            archive::shares(b.0.seq, b.0.branch, newest)
                && match req.point {
                    Point::Latest => true,
                    Point::Seq(n) => b.0.seq <= n,
                    Point::Time(t) => b.1 <= t,
                }
        };
        let mut candidates: Vec<Base> = bases.into_iter().filter(fits).map(|b| b.0).collect();
        candidates.sort_by_key(|b| std::cmp::Reverse((b.seq, b.sha256.is_some())));
        let mut skipped = Vec::new();
        let mut chosen = None;
        for mut b in candidates {
            match &b.from {
                // A damaged backup of this database is refused, not passed over.
                BaseFrom::Backup(m) => {
                    check_listed(&stored, m)?;
                    chosen = Some(b);
                    break;
                }
                // A snapshot without a sound record of this archive is not
                // this archive's: never used.
                BaseFrom::Archived(sr) => {
                    match archive::snapshot_record(target, sr, b.database_id.as_deref().unwrap_or_default()) {
                        Ok(rec) => {
                            b.sha256 = Some(rec.sha256);
                            chosen = Some(b);
                            break;
                        }
                        Err(e) => skipped.push(e.to_string()),
                    }
                }
                BaseFrom::Chain => {
                    chosen = Some(b);
                    break;
                }
            }
        }
        if let Some(b) = chosen {
            b
        } else {
            let why =
                if skipped.is_empty() { String::new() } else { format!(" (passed over: {})", skipped.join("; ")) };
            return Err(BackupError::NotFound(match req.point {
                Point::Latest => {
                    format!("{} holds no backup or archived snapshot to restore from{why}", target.url())
                }
                Point::Seq(n) => {
                    format!("{} holds no backup or archived snapshot at or before sequence {n}{why}", target.url())
                }
                Point::Time(t) => {
                    format!("{} holds no backup or archived snapshot from before {}{why}", target.url(), rfc3339(t))
                }
            }));
        }
    };
    // The archived log continues the base only as far as they share a
    // history (after a failover the archive may hold a former primary's
    // commits past where the base's epoch began, or the reverse).
    // A source's commits are usable while they continue the base and are
    // of the history restored.
    let usable_to = |branch: Option<crate::Branch>| {
        let continues = archive::continues_to(base.seq, base.branch, branch).unwrap_or(u64::MAX);
        let in_history = match (branch, history) {
            (Some(b), Some(h)) if b.epoch < h.epoch => h.after_seq.max(base.seq),
            _ => u64::MAX,
        };
        continues.min(in_history)
    };
    for s in &mut sources {
        s.max = usable_to(s.branch);
    }
    let archive_max =
        if archive_id.is_some() && archive_id == base.database_id { usable_to(archive_branch) } else { 0 };
    let mut archive_end = 0;
    if archive_max > 0 {
        for c in archive::list_chunks(target)? {
            let ChunkRef { key, first, last } = c;
            archive_end = archive_end.max(last);
            if first <= archive_max {
                sources.push(Source { key, first, last, max: archive_max, branch: archive_branch, sha256: None });
            }
        }
    }
    // The base.
    progress("fetching the base", 0, 0);
    let bytes = target.get(&base.key)?;
    if let Some(want) = &base.sha256
        && sha256_hex(&bytes) != *want
    {
        return Err(BackupError::Corrupt(format!(
            "{}: SHA-256 mismatch (the file changed after the backup)",
            base.key
        )));
    }
    let schema = snapshot::embedded_schema(Path::new(&base.key), &bytes)?
        .map(Arc::new)
        .ok_or_else(|| BackupError::Corrupt(format!("{}: the snapshot embeds no schema", base.key)))?;
    let mut world = snapshot::load(Path::new(&base.key), &bytes, &schema)?;
    if world.seq() != base.seq {
        return Err(BackupError::Corrupt(format!(
            "{}: the snapshot is at sequence {}, not {}",
            base.key,
            world.seq(),
            base.seq
        )));
    }
    let limit = match (req.point, stop_at_backup) {
        (_, Some(end)) => end,
        (Point::Seq(n), None) => n,
        _ => u64::MAX,
    };
    let time_limit = match req.point {
        Point::Time(t) => Some(t),
        _ => None,
    };
    let mut replayed = 0u64;
    let mut last_time = None;
    let mut done = false;
    let mut relists = 0;
    sources.sort_by_key(|s| (s.first, std::cmp::Reverse(s.last)));
    while !done && world.seq() < limit {
        let next = world.seq() + 1;
        // The source that covers `next` and reaches furthest; the archived
        // log first (it carries each commit's own time, an incremental
        // backup only the time it was taken).
        let Some(src) = sources
            .iter()
            .filter(|s| s.first <= next && s.last >= next && next <= s.max)
            .max_by_key(|s| (s.sha256.is_none(), s.last))
        else {
            // Nothing holds the next commit. If later commits are there, the
            // log has a gap: stopping here would silently drop them.
            if let Some(after) = sources.iter().filter(|s| s.first > next).min_by_key(|s| s.first) {
                return Err(BackupError::Corrupt(format!(
                    "commits {next}..={} are missing from {} (the log resumes in {}): restoring past sequence {} is not possible; pass --to-seq {} to accept losing everything after it",
                    after.first - 1,
                    target.url(),
                    after.key,
                    world.seq(),
                    world.seq()
                )));
            }
            break;
        };
        progress("replaying", world.seq().saturating_sub(base.seq), 0);
        let b = match target.get(&src.key) {
            Ok(b) => b,
            // The archiver merged it into a wider chunk meanwhile: list again.
            Err(BackupError::NotFound(_)) if src.sha256.is_none() && relists < 5 => {
                relists += 1;
                sources.retain(|s| s.sha256.is_some());
                for c in archive::list_chunks(target)? {
                    let ChunkRef { key, first, last } = c;
                    if first <= archive_max {
                        sources.push(Source {
                            key,
                            first,
                            last,
                            max: archive_max,
                            branch: archive_branch,
                            sha256: None,
                        });
                    }
                }
                sources.sort_by_key(|s| (s.first, std::cmp::Reverse(s.last)));
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(want) = &src.sha256
            && sha256_hex(&b) != *want
        {
            return Err(BackupError::Corrupt(format!(
                "{}: SHA-256 mismatch (the file changed after the backup)",
                src.key
            )));
        }
        let c = chunk::decode(&src.key, &b)?;
        if let Some(id) = &base.database_id
            && hex(&c.database_id) != *id
        {
            return Err(BackupError::Corrupt(format!(
                "{}: belongs to database {}, not {id} (a chunk from another database)",
                src.key,
                hex(&c.database_id)
            )));
        }
        if (c.first_seq, c.last_seq) != (src.first, src.last) {
            return Err(BackupError::Corrupt(format!(
                "{}: holds commits {}..={}, not what its name says",
                src.key, c.first_seq, c.last_seq
            )));
        }
        for i in 0..c.records.len() {
            let (seq, _, t) = c.records[i];
            if seq < next {
                continue;
            }
            if seq > src.max {
                break; // another history from here: see `archive_max`
            }
            if seq > limit || time_limit.is_some_and(|tl| t > tl) {
                done = true;
                break;
            }
            if c.fingerprint != world.schema().fingerprint {
                return Err(BackupError::Corrupt(format!(
                    "{}: written under schema {:016x}, but the state is under {:016x}",
                    src.key,
                    c.fingerprint,
                    world.schema().fingerprint
                )));
            }
            let cs = ChangeSet::decode(c.payload(i))
                .map_err(|e| BackupError::Corrupt(format!("{}: commit {seq}: {e}", src.key)))?;
            world
                .apply(seq, &cs)
                .map_err(|e| BackupError::Corrupt(format!("{}: commit {seq} does not apply: {e}", src.key)))?;
            replayed += 1;
            last_time = Some(t);
        }
    }
    let other_history = (archive_max != u64::MAX && archive_max != 0 && archive_end > archive_max.max(world.seq()))
        .then_some(archive_max);
    if let Point::Seq(n) = req.point
        && world.seq() < n
    {
        return Err(BackupError::NotFound(format!(
            "sequence {n} is not recoverable from {}: the log there ends at {} (from {}){}",
            target.url(),
            world.seq(),
            base.label,
            other_history.map_or_else(String::new, |m| format!(
                "; the archived log past commit {m} is of another history (a former primary's commits past a failover)"
            ))
        )));
    }
    if let Some(end) = stop_at_backup
        && world.seq() < end
    {
        return Err(BackupError::NotFound(format!(
            "backup {} ends at sequence {end}, but its log stops at {}",
            req.backup.clone().unwrap_or_default(),
            world.seq()
        )));
    }
    // Loading checked the base; replayed commits are checked here.
    if replayed > 0 {
        let problems = world.check_integrity();
        if !problems.is_empty() {
            return Err(BackupError::Corrupt(format!(
                "the restored state fails integrity checks: {}",
                problems.join("; ")
            )));
        }
    }
    let outcome = Outcome {
        seq: world.seq(),
        entities: world.entity_count() as u64,
        base: base.label,
        base_seq: base.seq,
        commits_replayed: replayed,
        last_commit_time: last_time.map(rfc3339),
        data_dir: req.data_dir.clone(),
        moved_aside: None,
        other_history_after: other_history,
    };
    Ok((world, outcome, (replayed == 0).then_some(bytes)))
}

/// Restore into `req.data_dir`.
pub fn restore(target: &Arc<Target>, req: &Request, progress: Progress<'_>) -> Result<Outcome> {
    let dir = &req.data_dir;
    // Refuse early, before any download.
    let non_empty = std::fs::read_dir(dir).is_ok_and(|mut r| r.next().is_some());
    if non_empty && !req.force {
        return Err(BackupError::Conflict(format!(
            "{} is not empty; restore into a new or empty directory, or pass --force to move its contents aside",
            dir.display()
        )));
    }
    let (world, mut outcome, base_bytes) = build_with_base(target, req, progress)?;
    progress("writing", 0, 0);
    let existed = dir.exists();
    let before: Vec<std::ffi::OsString> = if existed {
        std::fs::read_dir(dir).map_err(io(dir))?.filter_map(|e| e.ok().map(|e| e.file_name())).collect()
    } else {
        Vec::new()
    };
    let mut aside: Option<PathBuf> = None;
    let r = write_restored(dir, world, base_bytes.as_deref(), non_empty, &mut aside);
    match r {
        Ok(()) => {
            outcome.moved_aside = aside;
            Ok(outcome)
        }
        Err(e) => {
            // Nothing of a failed restore stays: what it wrote goes, what it
            // moved aside comes back.
            undo_restore(dir, existed, &before, aside.as_deref());
            Err(e)
        }
    }
}

/// A folder under `dir` not taken yet for set-aside files:
/// `<prefix>-<unix seconds>`, else with `-2`, `-3`, ... (two runs in one
/// second must not share one).
pub fn aside_dir(dir: &Path, prefix: &str) -> PathBuf {
    let stamp = crate::manager::now_ms() / 1000;
    let base = format!("{prefix}-{stamp}");
    let mut p = dir.join(&base);
    let mut n = 2;
    while p.exists() {
        p = dir.join(format!("{base}-{n}"));
        n += 1;
    }
    p
}

fn write_restored(
    dir: &Path,
    world: World,
    base_bytes: Option<&[u8]>,
    non_empty: bool,
    aside: &mut Option<PathBuf>,
) -> Result<()> {
    crate::target::create_private_dir(dir)?;
    let lock = ecsdb::storage::lock::lock_dir(dir).map_err(ecsdb::DbError::from)?;
    if non_empty {
        let a = aside_dir(dir, "pre-restore");
        crate::target::create_private_dir(&a)?;
        *aside = Some(a.clone());
        for e in std::fs::read_dir(dir).map_err(io(dir))? {
            let e = e.map_err(io(dir))?;
            let name = e.file_name();
            let n = name.to_string_lossy();
            if n == "LOCK" || n.starts_with("pre-restore-") {
                continue;
            }
            std::fs::rename(e.path(), a.join(&name)).map_err(io(e.path()))?;
        }
    }
    write_dir(dir, &world, base_bytes)?;
    drop(lock);
    // Open once: writes schema.toml, proves the directory recovers.
    let schema: Arc<Schema> = world.schema().clone();
    let seq = world.seq();
    drop(world);
    let mut config = ecsdb::DatabaseConfig::default();
    config.database.data_dir = dir.to_path_buf();
    config.persistence.checkpoint_on_shutdown = false;
    config.persistence.snapshot_interval_ops = 0;
    let db = ecsdb::Database::builder().config(config).schema(schema).enable_persistence().build()?;
    let opened = db.version();
    db.close()?;
    drop(db);
    if opened != seq {
        return Err(BackupError::Corrupt(format!("the restored directory opened at sequence {opened}, not {seq}")));
    }
    Ok(())
}

fn undo_restore(dir: &Path, existed: bool, before: &[std::ffi::OsString], aside: Option<&Path>) {
    if !existed {
        let _ = std::fs::remove_dir_all(dir);
        return;
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name();
            // Kept: the aside folder, and what was there before and was not
            // moved aside (earlier pre-restore folders, or everything when
            // nothing was moved).
            let kept_before =
                before.contains(&name) && (aside.is_none() || name.to_string_lossy().starts_with("pre-restore-"));
            if kept_before || aside.is_some_and(|a| a == e.path()) {
                continue;
            }
            let p = e.path();
            let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        }
    }
    if let Some(a) = aside {
        if let Ok(rd) = std::fs::read_dir(a) {
            for e in rd.flatten() {
                let _ = std::fs::rename(e.path(), dir.join(e.file_name()));
            }
        }
        let _ = std::fs::remove_dir(a);
    }
}

fn write_dir(dir: &Path, world: &World, base: Option<&[u8]>) -> Result<()> {
    let fs: Arc<dyn Vfs> = Arc::new(OsFs);
    let snaps = dir.join("snapshots");
    fs.create_dir_all(&snaps).map_err(io(&snaps))?;
    // The verified base as it is when nothing was replayed: nothing to encode.
    if let Some(bytes) = base {
        let path = snaps.join(snapshot::snapshot_name(world.seq()));
        let tmp = snaps.join(format!("{}.tmp", snapshot::snapshot_name(world.seq())));
        let f = fs.create(&tmp).map_err(io(&tmp))?;
        f.append(bytes).and_then(|()| f.sync()).map_err(io(&tmp))?;
        drop(f);
        fs.rename(&tmp, &path).map_err(io(&path))?;
        fs.sync_dir(&snaps).map_err(io(&snaps))?;
    } else {
        let image = snapshot::capture(world);
        snapshot::write(&fs, &snaps, &image, 1)?;
    }
    // A restored copy is a database of its own: its archive must not mix
    // with the original's.
    state::write_id(dir, &state::new_id()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_restore_puts_everything_back() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("x");
        std::fs::create_dir_all(dir.join("pre-restore-1")).unwrap();
        std::fs::write(dir.join("notes.txt"), "v1").unwrap();
        std::fs::create_dir_all(dir.join("snapshots")).unwrap();
        std::fs::write(dir.join("snapshots/old.snap"), "old").unwrap();
        let before: Vec<std::ffi::OsString> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        // What a restore did before failing: moved the contents aside, then
        // wrote its own files.
        let aside = aside_dir(&dir, "pre-restore");
        std::fs::create_dir_all(&aside).unwrap();
        std::fs::rename(dir.join("notes.txt"), aside.join("notes.txt")).unwrap();
        std::fs::rename(dir.join("snapshots"), aside.join("snapshots")).unwrap();
        std::fs::write(dir.join("LOCK"), "1").unwrap();
        std::fs::create_dir_all(dir.join("snapshots")).unwrap();
        std::fs::write(dir.join("snapshots/9.snap.tmp"), "partial").unwrap();
        undo_restore(&dir, true, &before, Some(&aside));
        assert_eq!(std::fs::read_to_string(dir.join("notes.txt")).unwrap(), "v1");
        assert_eq!(std::fs::read_to_string(dir.join("snapshots/old.snap")).unwrap(), "old");
        assert!(!dir.join("snapshots/9.snap.tmp").exists() && !dir.join("LOCK").exists() && !aside.exists());
        assert!(dir.join("pre-restore-1").is_dir());
        // A directory the restore created goes entirely.
        let fresh = d.path().join("fresh");
        std::fs::create_dir_all(fresh.join("snapshots")).unwrap();
        undo_restore(&fresh, false, &[], None);
        assert!(!fresh.exists());
        // Set-aside folders never collide.
        let a = aside_dir(&dir, "pre-restore");
        std::fs::create_dir_all(&a).unwrap();
        assert_ne!(aside_dir(&dir, "pre-restore"), a);
    }
}
