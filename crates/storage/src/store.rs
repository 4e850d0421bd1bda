//! The store: a data directory's snapshots and commit log, recovery on open,
//! and checkpoints.
//!
//! Layout of a data directory:
//!
//! ```text
//! <data_dir>/LOCK                       pid of the process that has it open
//! <data_dir>/schema.toml                the schema in force (and schema_history/<fingerprint>.toml: every earlier one)
//! <data_dir>/snapshots/<seq>.snap       snapshots (retention: newest N)
//! <data_dir>/wal/<first_seq>.wal        live log segments
//! <data_dir>/wal_archive/<first_seq>.wal  segments covered by a snapshot
//! ```
//!
//! Recovery: load the newest snapshot that verifies (falling back to older
//! ones, each failure reported), then replay every logged commit after it in
//! sequence order. A damaged record at the very end of the last segment with
//! nothing valid after it is a torn write from a crash: it is cut off with a
//! warning (it was never acknowledged). Damage anywhere else, a gap in
//! sequence numbers, or a segment written for another schema stops the open
//! with the file and offset, unless repair is asked for, which cuts the log at
//! the first damage (reporting what is lost).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ecsdb_core::{ChangeSet, Schema, World};

use crate::error::StorageError;
use crate::fs::Vfs;
use crate::snapshot::{self, parse_snapshot_name};
use crate::wal::format::{Tail, parse_segment_name, scan, segment_name};
use crate::wal::{SyncMode, Wal, WalOptions};

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub sync: SyncMode,
    pub segment_bytes: u64,
    /// Move covered segments to `wal_archive/` (else delete them).
    pub archive: bool,
    /// Snapshots kept.
    pub retention: usize,
    /// Cut the log at the first damage instead of refusing to open.
    pub repair: bool,
    /// zstd level for snapshots.
    pub compression_level: i32,
    /// Most bytes `wal_archive/` keeps (0 = no limit): the oldest archived
    /// segments go first, but never one the retained snapshots still need.
    pub archive_max_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync: SyncMode::Sync,
            segment_bytes: 64 << 20,
            archive: true,
            retention: 3,
            repair: false,
            compression_level: 1,
            archive_max_bytes: 1 << 30,
        }
    }
}

/// What recovery found and did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Snapshot loaded (path, seq).
    pub snapshot: Option<(PathBuf, u64)>,
    /// Snapshots skipped, with why.
    pub skipped_snapshots: Vec<String>,
    pub records_replayed: u64,
    /// Torn tail cut off: (segment, offset).
    pub truncated_tail: Option<(PathBuf, u64)>,
    /// What repair dropped.
    pub repaired: Vec<String>,
    pub seq: u64,
    pub duration_ms: f64,
}

/// A checkpoint's outcome.
#[derive(Debug, Clone)]
pub struct CheckpointInfo {
    pub seq: u64,
    pub path: PathBuf,
    pub bytes: u64,
    pub raw_bytes: u64,
    pub write_ms: f64,
    pub segments_archived: usize,
}

/// How recovery may touch the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Cut torn tails; refuse other damage.
    Normal,
    /// Cut the log at the first damage.
    Repair,
    /// Change nothing on disk (fsck, inspect, export).
    ReadOnly,
}

/// Recover the state of a data directory without changing any file:
/// newest valid snapshot plus the log.
pub fn recover_read_only(
    fs: &dyn Vfs,
    dir: &Path,
    schema: &Arc<Schema>,
) -> Result<(World, RecoveryReport), StorageError> {
    recover(fs, dir, schema, Mode::ReadOnly)
}

fn recover(
    fs: &dyn Vfs,
    dir: &Path,
    schema: &Arc<Schema>,
    mode: Mode,
) -> Result<(World, RecoveryReport), StorageError> {
    let start = Instant::now();
    let snaps = dir.join("snapshots");
    let mut report = RecoveryReport::default();
    let mut world = None;
    for (seq, path) in list_snapshots(fs, &snaps)? {
        let loaded = fs.read(&path).map_err(io(&path)).and_then(|b| snapshot::load(&path, &b, schema));
        match loaded {
            Ok(w) => {
                report.snapshot = Some((path, seq));
                world = Some(w);
                break;
            }
            Err(e @ StorageError::SchemaMismatch { .. }) => return Err(e),
            Err(e) => report.skipped_snapshots.push(e.to_string()),
        }
    }
    let mut world = world.unwrap_or_else(|| World::new(schema.clone()));
    // Live segments, plus archived ones not also live.
    let live = list_segments(fs, &dir.join("wal"))?;
    let mut all = list_segments(fs, &dir.join("wal_archive"))?;
    all.retain(|(s, _)| !live.iter().any(|(l, _)| l == s));
    all.extend(live);
    all.sort();
    replay(fs, &all, &mut world, mode, &mut report)?;
    let problems = world.check_integrity();
    if !problems.is_empty() {
        return Err(StorageError::Corrupt {
            path: dir.to_path_buf(),
            offset: None,
            reason: format!("recovered state fails integrity checks: {}", problems.join("; ")),
        });
    }
    report.seq = world.seq();
    report.duration_ms = start.elapsed().as_secs_f64() * 1e3;
    Ok((world, report))
}

/// An open data directory.
#[derive(Debug)]
pub struct Store {
    fs: Arc<dyn Vfs>,
    dir: PathBuf,
    opts: StoreOptions,
    wal: Arc<Wal>,
    checkpoint_lock: parking_lot::Mutex<()>,
    /// Commits after this sequence must stay on disk (a log archiver has not
    /// shipped them yet): segments holding any are never deleted, only moved
    /// to `wal_archive/`. `u64::MAX`: no hold.
    log_hold: std::sync::atomic::AtomicU64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |e| StorageError::Io { path: path.to_path_buf(), source: e }
}

/// Files of `dir` whose names `parse` reads as a sequence number, ascending.
fn list_numbered(
    fs: &dyn Vfs,
    dir: &Path,
    parse: fn(&str) -> Option<u64>,
) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    if !fs.exists(dir) {
        return Ok(Vec::new());
    }
    let mut v: Vec<(u64, PathBuf)> =
        fs.list(dir).map_err(io(dir))?.into_iter().filter_map(|n| Some((parse(&n)?, dir.join(n)))).collect();
    v.sort();
    Ok(v)
}

/// Segments of a directory, by first sequence number.
pub fn list_segments(fs: &dyn Vfs, dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    list_numbered(fs, dir, parse_segment_name)
}

/// Snapshots of a directory, newest first.
pub fn list_snapshots(fs: &dyn Vfs, dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let mut v = list_numbered(fs, dir, parse_snapshot_name)?;
    v.reverse();
    Ok(v)
}

/// Replay log segments (live, then archived ones not shadowed) onto `world`.
/// Returns the report entries; stops at damage as the module docs say.
pub fn replay(
    fs: &dyn Vfs,
    segments: &[(u64, PathBuf)],
    world: &mut World,
    mode: Mode,
    report: &mut RecoveryReport,
) -> Result<(), StorageError> {
    replay_until(fs, segments, world, mode, report, u64::MAX)
}

/// [`replay`], stopping right after commit `until` (what comes after it is
/// neither applied nor checked).
pub fn replay_until(
    fs: &dyn Vfs,
    segments: &[(u64, PathBuf)],
    world: &mut World,
    mode: Mode,
    report: &mut RecoveryReport,
    until: u64,
) -> Result<(), StorageError> {
    let repair = mode == Mode::Repair;
    for (i, (first, path)) in segments.iter().enumerate() {
        if world.seq() >= until {
            return Ok(());
        }
        // A segment is written against the schema in force when it began
        // (a migration record ends its segment).
        let fingerprint = world.schema().fingerprint;
        let last = i + 1 == segments.len();
        // A segment whose successor starts at or before our next sequence
        // holds nothing we need.
        if let Some((next_first, _)) = segments.get(i + 1)
            && *next_first <= world.seq() + 1
        {
            if repair {
                repair_covered(fs, path, report)?;
            }
            continue;
        }
        if *first > world.seq() + 1 {
            return Err(StorageError::Gap {
                reason: format!(
                    "{} starts at sequence {first}, but the state is at {} (commits {}..{} are missing)",
                    path.display(),
                    world.seq(),
                    world.seq() + 1,
                    first - 1
                ),
            });
        }
        let bytes = fs.read(path).map_err(io(path))?;
        let s = match scan(&bytes) {
            Ok(s) => s,
            Err(reason) if last && repair => {
                report.repaired.push(format!("{}: unreadable segment removed ({reason})", path.display()));
                fs.remove(path).map_err(io(path))?;
                continue;
            }
            Err(_) if last && bytes.len() < crate::wal::format::HEADER_LEN => {
                // Crash while creating the segment: it holds no commit.
                report.truncated_tail = Some((path.clone(), 0));
                if mode != Mode::ReadOnly {
                    fs.remove(path).map_err(io(path))?;
                }
                continue;
            }
            Err(reason) => return Err(StorageError::Corrupt { path: path.clone(), offset: Some(0), reason }),
        };
        if s.header.fingerprint != fingerprint && s.records.is_empty() && matches!(s.tail, Tail::Clean) {
            // A segment started under a schema whose migration never became
            // durable (or was never logged) holds no commit: nothing to
            // replay, nothing lost.
            continue;
        }
        if s.header.fingerprint != fingerprint {
            return Err(StorageError::SchemaMismatch {
                path: path.clone(),
                found: s.header.fingerprint,
                expected: fingerprint,
            });
        }
        for r in &s.records {
            if r.seq <= world.seq() {
                continue;
            }
            if r.seq > until {
                return Ok(());
            }
            let cs = ChangeSet::decode(&bytes[r.payload.0..r.payload.1]).map_err(|e| StorageError::Corrupt {
                path: path.clone(),
                offset: Some(r.offset as u64),
                reason: format!("record {}: {e}", r.seq),
            })?;
            world.apply(r.seq, &cs).map_err(|e| StorageError::Corrupt {
                path: path.clone(),
                offset: Some(r.offset as u64),
                reason: format!("record {} does not apply: {e}", r.seq),
            })?;
            report.records_replayed += 1;
        }
        if let Tail::Damaged { offset, reason, valid_after, torn, dropped } = s.tail {
            let torn = last && torn;
            if torn || repair {
                if mode != Mode::ReadOnly {
                    fs.truncate(path, offset as u64).map_err(io(path))?;
                }
                if torn {
                    report.truncated_tail = Some((path.clone(), offset as u64));
                } else {
                    let damaged = s.records.last().map_or(s.header.first_seq, |r| r.seq + 1);
                    report.repaired.push(format!(
                        "{}: log cut at byte {offset} ({reason}): dropped commit {damaged}{}",
                        path.display(),
                        describe_seqs(", and the commits after it in this segment: ", &dropped)
                    ));
                }
                if !last {
                    for (_, later) in &segments[i + 1..] {
                        let held = fs
                            .read(later)
                            .ok()
                            .and_then(|b| scan(&b).ok())
                            .map(|s| s.records.iter().map(|r| r.seq).collect::<Vec<_>>())
                            .unwrap_or_default();
                        report.repaired.push(format!(
                            "{}: removed (after the cut){}",
                            later.display(),
                            describe_seqs(", holding commits ", &held)
                        ));
                        fs.remove(later).map_err(io(later))?;
                    }
                    return Ok(());
                }
            } else if last && !valid_after {
                return Err(StorageError::Corrupt {
                    path: path.clone(),
                    offset: Some(offset as u64),
                    reason: format!(
                        "{reason} in the last record, which is complete: its bytes were written, so this is damage, not a torn write, and it may be an acknowledged commit (use repair to cut the log here; what is dropped is listed)"
                    ),
                });
            } else {
                return Err(StorageError::Corrupt {
                    path: path.clone(),
                    offset: Some(offset as u64),
                    reason: format!(
                        "{reason}; valid records follow, so this is not a torn write (use repair to cut the log here)"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// `prefix` and the sequence numbers as ranges (`5..=9, 12`), or nothing.
fn describe_seqs(prefix: &str, seqs: &[u64]) -> String {
    if seqs.is_empty() {
        return String::new();
    }
    let mut parts = Vec::new();
    let mut start = seqs[0];
    let mut prev = seqs[0];
    for &s in &seqs[1..] {
        if s != prev + 1 {
            parts.push(if start == prev { start.to_string() } else { format!("{start}..={prev}") });
            start = s;
        }
        prev = s;
    }
    parts.push(if start == prev { start.to_string() } else { format!("{start}..={prev}") });
    format!("{prefix}{}", parts.join(", "))
}

/// Repair of a segment every record of which the state already holds (an
/// archived one, covered by the snapshot): damage there loses only log
/// history, so the segment is cut at the damage (or set aside whole as
/// `*.wal.damaged` when its header is unreadable), and that is reported.
fn repair_covered(fs: &dyn Vfs, path: &Path, report: &mut RecoveryReport) -> Result<(), StorageError> {
    let bytes = fs.read(path).map_err(io(path))?;
    match scan(&bytes) {
        Ok(s) => {
            if let Tail::Damaged { offset, reason, dropped, .. } = s.tail {
                fs.truncate(path, offset as u64).map_err(io(path))?;
                let damaged = s.records.last().map_or(s.header.first_seq, |r| r.seq + 1);
                report.repaired.push(format!(
                    "{}: archived log cut at byte {offset} ({reason}): commit {damaged}{} left the log history (the snapshot holds their effects)",
                    path.display(),
                    describe_seqs(" and ", &dropped)
                ));
            }
        }
        Err(reason) => {
            let aside = path.with_extension("wal.damaged");
            fs.rename(path, &aside).map_err(io(path))?;
            report.repaired.push(format!(
                "{}: unreadable archived segment ({reason}) set aside as {} (the snapshot holds its commits)",
                path.display(),
                aside.display()
            ));
        }
    }
    Ok(())
}

impl Store {
    /// Open (creating if needed) the data directory and recover its state.
    pub fn open(
        fs: Arc<dyn Vfs>,
        dir: &Path,
        schema: &Arc<Schema>,
        opts: StoreOptions,
    ) -> Result<(Store, World, RecoveryReport), StorageError> {
        let snaps = dir.join("snapshots");
        let wal_dir = dir.join("wal");
        let archive = dir.join("wal_archive");
        for d in [dir, &snaps, &wal_dir, &archive] {
            fs.create_dir_all(d).map_err(io(d))?;
        }
        // Snapshots whose writing was interrupted never became visible.
        for name in fs.list(&snaps).map_err(io(&snaps))? {
            if Path::new(&name).extension().is_some_and(|e| e == "tmp") {
                let p = snaps.join(name);
                fs.remove(&p).map_err(io(&p))?;
            }
        }
        let (world, report) = recover(fs.as_ref(), dir, schema, if opts.repair { Mode::Repair } else { Mode::Normal })?;
        // Continue in a fresh segment.
        let next = world.seq() + 1;
        let name = wal_dir.join(segment_name(next));
        if fs.exists(&name) {
            fs.remove(&name).map_err(io(&name))?; // a segment with no records
        }
        let wal = Arc::new(Wal::create(
            fs.clone(),
            WalOptions {
                dir: wal_dir,
                fingerprint: world.schema().fingerprint,
                segment_bytes: opts.segment_bytes,
                sync: opts.sync,
            },
            next,
        )?);
        Ok((
            Store {
                fs,
                dir: dir.to_path_buf(),
                opts,
                wal,
                checkpoint_lock: parking_lot::Mutex::new(()),
                log_hold: std::sync::atomic::AtomicU64::new(u64::MAX),
            },
            world,
            report,
        ))
    }

    pub fn wal(&self) -> &Arc<Wal> {
        &self.wal
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file system the store writes through.
    pub fn fs(&self) -> &Arc<dyn Vfs> {
        &self.fs
    }

    /// Start a checkpoint: capture the state (call with the read lock held,
    /// so no commit interleaves) and close the current log segment.
    pub fn begin_checkpoint(&self, world: &World) -> Result<snapshot::Image, StorageError> {
        let image = snapshot::capture(world);
        self.wal.rotate()?;
        Ok(image)
    }

    /// Finish a checkpoint without any lock: write the snapshot, archive the
    /// segments it covers, apply retention.
    pub fn finish_checkpoint(&self, image: &snapshot::Image) -> Result<CheckpointInfo, StorageError> {
        let _g = self.checkpoint_lock.lock();
        let start = Instant::now();
        let snaps = self.dir.join("snapshots");
        let (path, bytes) = snapshot::write(&self.fs, &snaps, image, self.opts.compression_level)?;
        let write_ms = start.elapsed().as_secs_f64() * 1e3;
        // Segments entirely at or below the snapshot's sequence.
        let wal_dir = self.dir.join("wal");
        let segs = list_segments(self.fs.as_ref(), &wal_dir)?;
        let current = self.wal.current_segment();
        let mut archived = 0;
        for (i, (_, p)) in segs.iter().enumerate() {
            let covered = segs.get(i + 1).is_some_and(|(next, _)| *next <= image.seq + 1);
            if !covered || *p == current {
                continue;
            }
            // The commits this segment holds end just before the next one's.
            let last_held = segs.get(i + 1).map_or(u64::MAX, |(next, _)| next - 1);
            if self.opts.archive || last_held > self.log_hold() {
                let to = self.dir.join("wal_archive").join(p.file_name().unwrap_or_default());
                self.fs.rename(p, &to).map_err(io(p))?;
            } else {
                self.fs.remove(p).map_err(io(p))?;
            }
            archived += 1;
        }
        if archived > 0 {
            self.fs.sync_dir(&wal_dir).map_err(io(&wal_dir))?;
            let a = self.dir.join("wal_archive");
            self.fs.sync_dir(&a).map_err(io(&a))?;
        }
        for (_, old) in list_snapshots(self.fs.as_ref(), &snaps)?.into_iter().skip(self.opts.retention.max(1)) {
            self.fs.remove(&old).map_err(io(&old))?;
        }
        self.fs.sync_dir(&snaps).map_err(io(&snaps))?;
        self.prune_archive()?;
        Ok(CheckpointInfo {
            seq: image.seq,
            path,
            bytes,
            raw_bytes: image.raw_bytes() as u64,
            write_ms,
            segments_archived: archived,
        })
    }

    /// Keep `wal_archive/` within `archive_max_bytes`: remove the oldest
    /// archived segments, but only those whose every commit is at or below
    /// the oldest retained snapshot (recovery can fall back to that snapshot
    /// and needs the log after it) and not held. Without archiving, the
    /// directory holds only segments kept for a hold: each goes as soon as
    /// it is neither held nor needed.
    fn prune_archive(&self) -> Result<(), StorageError> {
        let keep_bytes = match (self.opts.archive, self.opts.archive_max_bytes) {
            (false, _) => 0,
            (true, 0) => return Ok(()),
            (true, max) => max,
        };
        let dir = self.dir.join("wal_archive");
        let segs = list_segments(self.fs.as_ref(), &dir)?;
        let live_first = list_segments(self.fs.as_ref(), &self.dir.join("wal"))?.first().map(|(f, _)| *f);
        let mut total: u64 = segs.iter().filter_map(|(_, p)| self.fs.file_len(p).ok()).sum();
        let oldest_snapshot =
            list_snapshots(self.fs.as_ref(), &self.dir.join("snapshots"))?.last().map_or(0, |(s, _)| *s);
        let mut removed = false;
        for (i, (_, p)) in segs.iter().enumerate() {
            if total <= keep_bytes && self.opts.archive {
                break;
            }
            // The segment's commits end just before the next one starts
            // (for the newest archived one, the oldest in `wal/`).
            let next = segs.get(i + 1).map(|(n, _)| *n).or(live_first);
            let needed = next.is_none_or(|next| next - 1 > oldest_snapshot || next - 1 > self.log_hold());
            if needed {
                break;
            }
            total -= self.fs.file_len(p).unwrap_or(0);
            self.fs.remove(p).map_err(io(p))?;
            removed = true;
        }
        if removed {
            self.fs.sync_dir(&dir).map_err(io(&dir))?;
        }
        Ok(())
    }

    /// Keep every commit after `seq` on disk until the hold moves (a log
    /// archiver calls this with the last sequence it has shipped);
    /// `u64::MAX` lifts the hold.
    pub fn hold_log_after(&self, seq: u64) {
        self.log_hold.store(seq, std::sync::atomic::Ordering::Release);
    }

    fn log_hold(&self) -> u64 {
        self.log_hold.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Bytes of live log segments.
    pub fn wal_size(&self) -> u64 {
        let wal_dir = self.dir.join("wal");
        list_segments(self.fs.as_ref(), &wal_dir)
            .map_or(0, |v| v.iter().filter_map(|(_, p)| self.fs.file_len(p).ok()).sum())
    }
}
