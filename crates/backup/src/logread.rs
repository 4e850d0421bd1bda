//! Reading commits back out of a data directory's log files (`wal/` and
//! `wal_archive/`) by sequence number, while the database keeps writing and
//! checkpoints keep moving covered segments to `wal_archive/`.
//!
//! A cursor remembers the segment and byte offset it stopped at, so the
//! archiver reads only what was appended since its last pass. Callers ask
//! only for commits that are durable, so every record up to the requested
//! sequence must be complete and valid; a damaged one is an error naming the
//! file and offset.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use ecsdb::storage::fs::OsFs;
use ecsdb::storage::store::list_segments;
use ecsdb::storage::wal::format::{HEADER_LEN, SegmentHeader, try_record};

use crate::error::{BackupError, Result, io};

/// Records of one segment (one schema fingerprint), in order.
#[derive(Debug, Clone, Default)]
pub struct Piece {
    pub fingerprint: u64,
    /// `(seq, payload)`.
    pub records: Vec<(u64, Vec<u8>)>,
}

/// Where reading stopped.
#[derive(Debug, Clone)]
pub struct LogCursor {
    dir: PathBuf,
    /// The last sequence read.
    pub last: u64,
    at: Option<(u64, usize)>, // (segment first seq, byte offset after `last`)
}

fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut all = Vec::new();
    for sub in ["wal_archive", "wal"] {
        for s in list_segments(&OsFs, &dir.join(sub)).map_err(ecsdb::DbError::from)? {
            // A segment caught mid-move can be listed twice: keep one.
            if !all.iter().any(|(f, _): &(u64, PathBuf)| *f == s.0) {
                all.push(s);
            }
        }
    }
    all.sort();
    Ok(all)
}

/// Read a segment file from `offset` (the whole file when 0).
fn read_from(path: &Path, offset: usize) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let mut b = Vec::new();
    if offset > 0 {
        f.seek(SeekFrom::Start(offset as u64))?;
    }
    f.read_to_end(&mut b)?;
    Ok(b)
}

impl LogCursor {
    /// A cursor over `data_dir`'s log, positioned after commit `last`.
    pub fn new(data_dir: &Path, last: u64) -> LogCursor {
        LogCursor { dir: data_dir.to_path_buf(), last, at: None }
    }

    /// The commits after the cursor up to `upto` (inclusive), grouped by
    /// segment; the cursor moves past them. Every commit in the range must
    /// be in the log files, or the error says which are missing.
    pub fn read_to(&mut self, upto: u64) -> Result<Vec<Piece>> {
        let mut out: Vec<Piece> = Vec::new();
        let mut attempts = 0;
        while self.last < upto {
            let want = self.last + 1;
            let segs = segments(&self.dir)?;
            // The segment holding `want`: the last one starting at or before it.
            let Some(i) = segs.iter().rposition(|(f, _)| *f <= want) else {
                return Err(BackupError::NotFound(format!(
                    "commits {want}..={upto} are no longer in {}'s log (it starts at {}); take a full backup",
                    self.dir.display(),
                    segs.first().map_or_else(|| "nothing".into(), |s| s.0.to_string())
                )));
            };
            let (first, path) = &segs[i];
            let next_first = segs.get(i + 1).map(|s| s.0);
            let offset = match self.at {
                Some((f, off)) if f == *first => off,
                _ => 0,
            };
            let bytes = match read_from(path, offset) {
                Ok(b) => b,
                // Moved to wal_archive/ meanwhile: list again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 5 => {
                    attempts += 1;
                    continue;
                }
                Err(e) => return Err(io(path)(e)),
            };
            let (fingerprint, mut pos) = if offset == 0 {
                let h = SegmentHeader::decode(&bytes)
                    .map_err(|e| BackupError::Corrupt(format!("{}: {e}", path.display())))?;
                (h.fingerprint, HEADER_LEN)
            } else {
                let h = read_from(path, 0)
                    .ok()
                    .and_then(|b| SegmentHeader::decode(&b).ok())
                    .ok_or_else(|| BackupError::Corrupt(format!("{}: unreadable segment header", path.display())))?;
                (h.fingerprint, 0)
            };
            let mut piece = Piece { fingerprint, records: Vec::new() };
            let mut progressed = false;
            while self.last < upto {
                let Ok(r) = try_record(&bytes, pos) else { break };
                if r.seq <= self.last {
                    pos = r.payload.1;
                    continue;
                }
                if r.seq != self.last + 1 {
                    return Err(BackupError::Corrupt(format!(
                        "{}: commit {} follows {} at byte {}",
                        path.display(),
                        r.seq,
                        self.last,
                        offset + r.offset
                    )));
                }
                piece.records.push((r.seq, bytes[r.payload.0..r.payload.1].to_vec()));
                self.last = r.seq;
                pos = r.payload.1;
                progressed = true;
            }
            self.at = Some((*first, offset + pos));
            if !piece.records.is_empty() {
                out.push(piece);
            }
            if self.last >= upto {
                break;
            }
            if !progressed {
                // The segment holding the next commit has nothing more to
                // give: the commit is missing or damaged.
                return Err(BackupError::Corrupt(format!(
                    "commit {} is not readable in {} at byte {}{} (the log is damaged or the commit is not durable)",
                    self.last + 1,
                    path.display(),
                    offset + pos,
                    next_first.map_or_else(String::new, |n| format!("; the next segment starts at {n}"))
                )));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ranges_across_segments_and_checkpoints() {
        let d = tempfile::tempdir().unwrap();
        let mut c = ecsdb::DatabaseConfig::default();
        c.database.data_dir = d.path().to_path_buf();
        c.persistence.snapshot_interval_ops = 0;
        let db = ecsdb::Database::builder()
            .config(c)
            .schema_toml(ecsdb::EXAMPLE_SCHEMA)
            .unwrap()
            .enable_persistence()
            .build()
            .unwrap();
        for i in 0..30 {
            let mut t = db.transaction().unwrap();
            t.create_entity().unwrap();
            t.commit().unwrap();
            if i % 10 == 9 {
                db.checkpoint().unwrap();
            }
        }
        let mut cur = LogCursor::new(d.path(), 0);
        let a = cur.read_to(12).unwrap();
        let seqs: Vec<u64> = a.iter().flat_map(|p| p.records.iter().map(|r| r.0)).collect();
        assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
        let b = cur.read_to(30).unwrap();
        let seqs: Vec<u64> = b.iter().flat_map(|p| p.records.iter().map(|r| r.0)).collect();
        assert_eq!(seqs, (13..=30).collect::<Vec<_>>());
        assert!(cur.read_to(30).unwrap().is_empty());
        // Beyond what was written: an error, not a hang or a silent stop.
        assert!(cur.read_to(31).is_err());
    }
}
