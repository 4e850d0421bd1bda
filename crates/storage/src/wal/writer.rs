//! Appending to the commit log, with group commit.
//!
//! Commit protocol (sync mode):
//! 1. under the database's writer lock, `append` encodes the record and
//!    writes it to the current segment (the OS now has it; a process crash
//!    no longer loses it);
//! 2. the commit becomes visible and the writer lock is released;
//! 3. `sync_to(seq)` returns once an fdatasync covering the record finished.
//!    Syncs are serialized: whoever syncs covers every record written so far,
//!    so commits arriving during an fsync share the next one (group commit).
//!
//! Async mode acknowledges after step 1; a background thread syncs every
//! `interval`. A kill -9 loses nothing acknowledged (the OS has the bytes);
//! a power cut loses at most the commits of the last interval.
//!
//! Any failed write or sync is sticky: the log refuses every later append
//! (fail-stop), because after a failed fsync the kernel may have dropped the
//! dirty pages and retrying could report success for lost data.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::format::{HEADER_LEN, SegmentHeader, encode_record, segment_name};
use crate::error::StorageError;
use crate::fs::{VFile, Vfs};

/// When a commit counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Acknowledge after fdatasync.
    Sync,
    /// Acknowledge after the write; fsync in the background every `interval`,
    /// or as soon as `batch` records are waiting.
    Async { interval: Duration, batch: u64 },
}

/// Log settings.
#[derive(Debug, Clone)]
pub struct WalOptions {
    pub dir: PathBuf,
    pub fingerprint: u64,
    /// Start a new segment once the current one reaches this size.
    pub segment_bytes: u64,
    pub sync: SyncMode,
}

/// Log figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    pub bytes_written: u64,
    pub records_written: u64,
    pub syncs: u64,
    pub written_seq: u64,
    pub durable_seq: u64,
}

#[derive(Debug)]
struct Current {
    file: Arc<dyn VFile>,
    path: PathBuf,
    len: u64,
    records: u64,
    buf: Vec<u8>,
}

/// The commit log writer.
#[derive(Debug)]
pub struct Wal {
    fs: Arc<dyn Vfs>,
    opts: WalOptions,
    /// Schema fingerprint new segments carry (changed by a migration).
    fingerprint: AtomicU64,
    cur: Mutex<Current>,
    sync_lock: Mutex<()>,
    written_seq: AtomicU64,
    durable_seq: AtomicU64,
    bytes_written: AtomicU64,
    records_written: AtomicU64,
    syncs: AtomicU64,
    failed: Mutex<Option<String>>,
    stop: AtomicBool,
    stop_cv: (Mutex<bool>, Condvar),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |e| StorageError::Io { path: path.to_path_buf(), source: e }
}

impl Wal {
    /// Start a new segment at `next_seq` (everything before it is durable).
    pub fn create(fs: Arc<dyn Vfs>, opts: WalOptions, next_seq: u64) -> Result<Wal, StorageError> {
        fs.create_dir_all(&opts.dir).map_err(io(&opts.dir))?;
        let cur = Self::new_segment(&fs, &opts, opts.fingerprint, next_seq)?;
        Ok(Wal {
            fs,
            fingerprint: AtomicU64::new(opts.fingerprint),
            opts,
            cur: Mutex::new(cur),
            sync_lock: Mutex::new(()),
            written_seq: AtomicU64::new(next_seq - 1),
            durable_seq: AtomicU64::new(next_seq - 1),
            bytes_written: AtomicU64::new(0),
            records_written: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            failed: Mutex::new(None),
            stop: AtomicBool::new(false),
            stop_cv: (Mutex::new(false), Condvar::new()),
        })
    }

    fn new_segment(
        fs: &Arc<dyn Vfs>,
        opts: &WalOptions,
        fingerprint: u64,
        first_seq: u64,
    ) -> Result<Current, StorageError> {
        let path = opts.dir.join(segment_name(first_seq));
        let file = fs.create(&path).map_err(io(&path))?;
        let header = SegmentHeader { first_seq, fingerprint }.encode();
        file.append(&header).map_err(io(&path))?;
        file.sync().map_err(io(&path))?;
        fs.sync_dir(&opts.dir).map_err(io(&opts.dir))?;
        Ok(Current { file, path, len: HEADER_LEN as u64, records: 0, buf: Vec::new() })
    }

    pub fn options(&self) -> &WalOptions {
        &self.opts
    }

    fn fail(&self, reason: String) -> StorageError {
        let mut f = self.failed.lock();
        if f.is_none() {
            *f = Some(reason.clone());
        }
        StorageError::FailStop(f.clone().unwrap_or(reason))
    }

    /// The sticky failure, if any.
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().clone()
    }

    /// Append record `seq` (the next sequence number). Called in order.
    pub fn append(&self, seq: u64, payload: &[u8]) -> Result<(), StorageError> {
        if let Some(f) = self.failure() {
            return Err(StorageError::FailStop(f));
        }
        // Whatever the reader would refuse is refused here, before anything
        // is written or acknowledged.
        if payload.is_empty() || payload.len() > super::format::MAX_RECORD_LEN {
            return Err(StorageError::TooLarge {
                what: "a commit log record",
                bytes: payload.len(),
                limit: super::format::MAX_RECORD_LEN,
            });
        }
        let mut cur = self.cur.lock();
        let expected = self.written_seq.load(Ordering::Acquire) + 1;
        if seq != expected {
            return Err(StorageError::Gap { reason: format!("append of {seq} where {expected} was expected") });
        }
        if cur.records > 0 && cur.len >= self.opts.segment_bytes {
            // Close the full segment durably before opening the next.
            if let Err(e) = cur.file.sync() {
                return Err(self.fail(format!("{}: sync before rotation: {e}", cur.path.display())));
            }
            self.durable_seq.fetch_max(seq - 1, Ordering::AcqRel);
            *cur = match Self::new_segment(&self.fs, &self.opts, self.fingerprint.load(Ordering::Acquire), seq) {
                Ok(c) => c,
                Err(e) => return Err(self.fail(e.to_string())),
            };
        }
        let mut buf = std::mem::take(&mut cur.buf);
        buf.clear();
        encode_record(seq, payload, &mut buf);
        if let Err(e) = cur.file.append(&buf) {
            return Err(self.fail(format!("{}: write: {e}", cur.path.display())));
        }
        cur.len += buf.len() as u64;
        cur.records += 1;
        self.bytes_written.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.records_written.fetch_add(1, Ordering::Relaxed);
        cur.buf = buf;
        self.written_seq.store(seq, Ordering::Release);
        if let SyncMode::Async { batch, .. } = self.opts.sync
            && seq.saturating_sub(self.durable_seq.load(Ordering::Acquire)) >= batch
        {
            // Under the mutex, so the flusher cannot miss it between its
            // check and its wait.
            let _g = self.stop_cv.0.lock();
            self.stop_cv.1.notify_one();
        }
        Ok(())
    }

    /// Take back record `seq`, the last one appended, because its commit was
    /// refused after the append (another commit sink refused it). The record
    /// is cut off its segment and the cut is made durable, so recovery never
    /// replays a commit that was rolled back. If that fails the log enters
    /// fail-stop (the caller must stop writing).
    pub fn abort(&self, seq: u64) -> Result<(), StorageError> {
        let mut cur = self.cur.lock();
        if self.written_seq.load(Ordering::Acquire) != seq || cur.records == 0 {
            return Err(self.fail(format!("abort of record {seq}, which is not the last one appended")));
        }
        let new_len = cur.len - cur.buf.len() as u64;
        if let Err(e) = cur.file.truncate(new_len) {
            return Err(self.fail(format!("{}: cutting off aborted record {seq}: {e}", cur.path.display())));
        }
        cur.len = new_len;
        cur.records -= 1;
        cur.buf.clear();
        self.written_seq.store(seq - 1, Ordering::Release);
        self.durable_seq.fetch_min(seq - 1, Ordering::AcqRel);
        Ok(())
    }

    /// Return once every record up to `seq` is durable.
    pub fn sync_to(&self, seq: u64) -> Result<(), StorageError> {
        if self.durable_seq.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let _g = self.sync_lock.lock();
        if self.durable_seq.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        if let Some(f) = self.failure() {
            return Err(StorageError::FailStop(f));
        }
        let (file, path, target) = {
            let cur = self.cur.lock();
            (cur.file.clone(), cur.path.clone(), self.written_seq.load(Ordering::Acquire))
        };
        if let Err(e) = file.sync() {
            return Err(self.fail(format!("{}: fdatasync: {e}", path.display())));
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.durable_seq.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    /// Wait as the sync mode requires for commit `seq` to be acknowledged.
    pub fn commit_wait(&self, seq: u64) -> Result<(), StorageError> {
        match self.opts.sync {
            SyncMode::Sync => self.sync_to(seq),
            SyncMode::Async { .. } => match self.failure() {
                Some(f) => Err(StorageError::FailStop(f)),
                None => Ok(()),
            },
        }
    }

    /// Start a new segment now (checkpoints do this so that every record up
    /// to the snapshot sits in closed segments). Returns the closed
    /// segment's path, if it had records.
    pub fn rotate(&self) -> Result<Option<PathBuf>, StorageError> {
        let mut cur = self.cur.lock();
        if cur.records == 0 {
            return Ok(None);
        }
        if let Err(e) = cur.file.sync() {
            return Err(self.fail(format!("{}: sync before rotation: {e}", cur.path.display())));
        }
        let next = self.written_seq.load(Ordering::Acquire) + 1;
        self.durable_seq.fetch_max(next - 1, Ordering::AcqRel);
        let old = cur.path.clone();
        *cur = Self::new_segment(&self.fs, &self.opts, self.fingerprint.load(Ordering::Acquire), next)
            .map_err(|e| self.fail(e.to_string()))?;
        Ok(Some(old))
    }

    /// After a migration record: make everything written durable and
    /// continue in a new segment written against schema `fingerprint` (a
    /// segment's records all use the schema its header names). An empty
    /// current segment is replaced.
    pub fn rotate_schema(&self, fingerprint: u64) -> Result<(), StorageError> {
        let mut cur = self.cur.lock();
        if let Err(e) = cur.file.sync() {
            return Err(self.fail(format!("{}: sync before rotation: {e}", cur.path.display())));
        }
        let next = self.written_seq.load(Ordering::Acquire) + 1;
        self.durable_seq.fetch_max(next - 1, Ordering::AcqRel);
        self.fingerprint.store(fingerprint, Ordering::Release);
        if cur.records == 0 {
            let p = cur.path.clone();
            self.fs.remove(&p).map_err(|e| self.fail(format!("{}: {e}", p.display())))?;
        }
        *cur = Self::new_segment(&self.fs, &self.opts, fingerprint, next).map_err(|e| self.fail(e.to_string()))?;
        Ok(())
    }

    /// Path of the segment being written.
    pub fn current_segment(&self) -> PathBuf {
        self.cur.lock().path.clone()
    }

    pub fn stats(&self) -> WalStats {
        WalStats {
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            records_written: self.records_written.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            written_seq: self.written_seq.load(Ordering::Acquire),
            durable_seq: self.durable_seq.load(Ordering::Acquire),
        }
    }

    /// Background syncing for async mode: runs until [`Wal::shutdown`].
    pub fn run_flusher(self: &Arc<Self>) -> Option<std::thread::JoinHandle<()>> {
        let SyncMode::Async { interval, batch } = self.opts.sync else { return None };
        let wal = Arc::clone(self);
        std::thread::Builder::new()
            .name("ecsdb-wal-flush".into())
            .spawn(move || {
                while !wal.stop.load(Ordering::Acquire) {
                    {
                        let mut stopped = wal.stop_cv.0.lock();
                        let pending = wal.written_seq.load(Ordering::Acquire) - wal.durable_seq.load(Ordering::Acquire);
                        if !*stopped && pending < batch {
                            wal.stop_cv.1.wait_for(&mut stopped, interval);
                        }
                    }
                    let w = wal.written_seq.load(Ordering::Acquire);
                    // A failure is sticky and reported to the next commit.
                    let _ = wal.sync_to(w);
                }
            })
            .ok()
    }

    /// Sync what was written and stop the flusher.
    pub fn shutdown(&self) -> Result<(), StorageError> {
        self.stop.store(true, Ordering::Release);
        *self.stop_cv.0.lock() = true;
        self.stop_cv.1.notify_all();
        self.sync_to(self.written_seq.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{Faults, SimFs};
    use crate::wal::format::scan;

    fn opts(segment_bytes: u64) -> WalOptions {
        WalOptions { dir: PathBuf::from("/db/wal"), fingerprint: 7, segment_bytes, sync: SyncMode::Sync }
    }

    #[test]
    fn appends_rotate_and_survive_a_crash_after_sync() {
        let fs = SimFs::new();
        let wal = Wal::create(Arc::new(fs.clone()), opts(100), 1).unwrap();
        for s in 1..=10 {
            wal.append(s, &[s as u8; 20]).unwrap();
            wal.sync_to(s).unwrap();
        }
        wal.append(11, &[0; 20]).unwrap(); // not synced
        fs.crash(None);
        let names = fs.list(Path::new("/db/wal")).unwrap();
        assert!(names.len() > 2, "{names:?}");
        let mut seqs = Vec::new();
        for n in names {
            let b = fs.read(&Path::new("/db/wal").join(n)).unwrap();
            seqs.extend(scan(&b).unwrap().records.iter().map(|r| r.seq));
        }
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn failed_sync_is_sticky() {
        let fs = SimFs::new();
        let wal = Wal::create(Arc::new(fs.clone()), opts(1 << 20), 1).unwrap();
        wal.append(1, b"a").unwrap();
        fs.set_faults(Faults { fail_syncs: true, ..Faults::default() });
        assert!(matches!(wal.sync_to(1), Err(StorageError::FailStop(_))));
        fs.set_faults(Faults::default());
        assert!(matches!(wal.append(2, b"b"), Err(StorageError::FailStop(_))));
        assert!(wal.failure().unwrap().contains("fdatasync"));
    }

    #[test]
    fn disk_full_refuses_the_append() {
        let fs = SimFs::new();
        let wal = Wal::create(Arc::new(fs.clone()), opts(1 << 20), 1).unwrap();
        fs.set_faults(Faults { disk_full_after_bytes: Some(30), ..Faults::default() });
        wal.append(1, b"small").unwrap();
        let e = wal.append(2, &[0; 64]).unwrap_err().to_string();
        assert!(e.contains("no space left"), "{e}");
    }

    #[test]
    fn async_mode_syncs_early_once_a_batch_is_waiting() {
        let fs = SimFs::new();
        let o = WalOptions { sync: SyncMode::Async { interval: Duration::from_hours(1), batch: 3 }, ..opts(1 << 20) };
        let wal = Arc::new(Wal::create(Arc::new(fs.clone()), o, 1).unwrap());
        let flusher = wal.run_flusher().unwrap();
        for s in 1..=3 {
            wal.append(s, b"x").unwrap();
            wal.commit_wait(s).unwrap(); // async: returns at once
        }
        let t0 = std::time::Instant::now();
        while wal.stats().durable_seq < 3 {
            assert!(t0.elapsed() < Duration::from_secs(10), "the batch was not flushed early");
            std::thread::sleep(Duration::from_millis(5));
        }
        wal.shutdown().unwrap();
        flusher.join().unwrap();
    }

    #[test]
    fn out_of_order_appends_are_refused() {
        let wal = Wal::create(Arc::new(SimFs::new()), opts(1 << 20), 5).unwrap();
        assert!(matches!(wal.append(7, b"x"), Err(StorageError::Gap { .. })));
        wal.append(5, b"x").unwrap();
    }
}
