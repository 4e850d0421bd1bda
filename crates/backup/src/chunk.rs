//! A **log chunk**: a run of consecutive commit-log records shipped to a
//! target (by the archiver, or inside an incremental backup), with the
//! database it belongs to and the time of each commit.
//!
//! ```text
//! header (72 bytes, little-endian):
//!   magic "ECSDBLOG" | version:u16 (=1) | flags:u16 (bit 0: body is zstd) | reserved:u32
//!   database_id:[u8;16] | fingerprint:u64 | first_seq:u64 | last_seq:u64
//!   raw_len:u64 | stored_len:u64
//! body (stored_len bytes; raw_len once decompressed):
//!   segment_len:u64 | segment | times: unix_ms:u64 × (last_seq - first_seq + 1)
//! crc32c:u32 over header and stored body
//! ```
//!
//! `segment` is an ordinary commit-log segment (its header names the
//! schema fingerprint; each record carries its own CRC32C), so the bytes
//! that are replayed are exactly the bytes the database logged, checked by
//! the same scanner as recovery. A chunk is named
//! `<first_seq:020>-<last_seq:020>.chunk`; the name, the header and the
//! records must all agree.

use ecsdb::storage::wal::format::{SegmentHeader, Tail, encode_record, scan};

use crate::error::{BackupError, Result};

const MAGIC: &[u8; 8] = b"ECSDBLOG";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 72;
const FLAG_ZSTD: u16 = 1;
/// Largest body a chunk may claim (a reader refuses more before allocating).
pub const MAX_RAW: u64 = 4 << 30;

/// A database's identity: 16 random bytes, kept in `<data_dir>/database_id`.
pub type DatabaseId = [u8; 16];

/// One record to put in a chunk.
#[derive(Debug, Clone, Copy)]
pub struct Rec<'a> {
    pub seq: u64,
    pub payload: &'a [u8],
    pub time_ms: u64,
}

/// A decoded, checked chunk.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub database_id: DatabaseId,
    pub fingerprint: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The segment image (header and records).
    pub segment: Vec<u8>,
    /// `(seq, payload range in segment, commit time)` in order.
    pub records: Vec<(u64, (usize, usize), u64)>,
}

impl Chunk {
    pub fn payload(&self, i: usize) -> &[u8] {
        let (_, (a, b), _) = self.records[i];
        &self.segment[a..b]
    }
}

/// The object name of a chunk.
pub fn chunk_name(first: u64, last: u64) -> String {
    format!("{first:020}-{last:020}.chunk")
}

/// `(first, last)` from a chunk's object name (the last path part).
pub fn parse_chunk_name(key: &str) -> Option<(u64, u64)> {
    let name = key.rsplit('/').next()?;
    let stem = name.strip_suffix(".chunk")?;
    let (a, b) = stem.split_once('-')?;
    let (a, b) = (a.parse().ok()?, b.parse().ok()?);
    (a <= b && a > 0).then_some((a, b))
}

/// Encode records (consecutive sequence numbers, one schema) as a chunk.
pub fn encode(database_id: &DatabaseId, fingerprint: u64, recs: &[Rec<'_>], level: Option<i32>) -> Result<Vec<u8>> {
    let (Some(first), Some(last)) = (recs.first(), recs.last()) else {
        return Err(BackupError::Config("a log chunk needs at least one record".into()));
    };
    let mut segment = SegmentHeader { first_seq: first.seq, fingerprint }.encode().to_vec();
    for (i, r) in recs.iter().enumerate() {
        debug_assert_eq!(r.seq, first.seq + i as u64, "chunk records are consecutive");
        encode_record(r.seq, r.payload, &mut segment);
    }
    let mut raw = Vec::with_capacity(8 + segment.len() + recs.len() * 8);
    raw.extend_from_slice(&(segment.len() as u64).to_le_bytes());
    raw.extend_from_slice(&segment);
    for r in recs {
        raw.extend_from_slice(&r.time_ms.to_le_bytes());
    }
    let (flags, stored) = match level {
        Some(l) => (FLAG_ZSTD, zstd::bulk::compress(&raw, l).map_err(|e| BackupError::Config(format!("zstd: {e}")))?),
        None => (0, raw.clone()),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + stored.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(database_id);
    out.extend_from_slice(&fingerprint.to_le_bytes());
    out.extend_from_slice(&first.seq.to_le_bytes());
    out.extend_from_slice(&last.seq.to_le_bytes());
    out.extend_from_slice(&(raw.len() as u64).to_le_bytes());
    out.extend_from_slice(&(stored.len() as u64).to_le_bytes());
    debug_assert_eq!(out.len(), HEADER_LEN);
    out.extend_from_slice(&stored);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Decompress a body of at most `raw_len` bytes, growing the buffer only as
/// bytes really come out and checking the segment's framing as it arrives:
/// a small object that claims (or expands to) gigabytes of nonsense is
/// refused at its first bad record header, not after allocating them.
fn inflate(stored: &[u8], raw_len: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut dec = zstd::stream::read::Decoder::new(stored).map_err(|e| format!("zstd: {e}"))?;
    let mut out: Vec<u8> = Vec::with_capacity(raw_len.min(8 << 20) as usize);
    let mut buf = vec![0u8; 1 << 20];
    // Framing check state: the next record header's offset in `out`.
    let mut next_record: Option<usize> = None;
    let mut seg_end = 0usize;
    loop {
        let n = dec.read(&mut buf).map_err(|e| format!("zstd: {e}"))?;
        if n == 0 {
            break;
        }
        if out.len() as u64 + n as u64 > raw_len {
            return Err(format!("the body decompresses past the {raw_len} bytes its header declares"));
        }
        out.extend_from_slice(&buf[..n]);
        // seg_len, then the segment header, then record headers.
        if next_record.is_none() && out.len() >= 8 + ecsdb::storage::wal::format::HEADER_LEN {
            let seg_len = le64(&out[..8]);
            if seg_len < ecsdb::storage::wal::format::HEADER_LEN as u64 || seg_len > raw_len - 8 {
                return Err(format!("implausible segment length {seg_len}"));
            }
            SegmentHeader::decode(&out[8..]).map_err(|e| format!("log segment: {e}"))?;
            seg_end = 8 + seg_len as usize;
            next_record = Some(8 + ecsdb::storage::wal::format::HEADER_LEN);
        }
        while let Some(at) = next_record {
            if at >= seg_end || out.len() < at + ecsdb::storage::wal::format::RECORD_HEADER_LEN {
                break;
            }
            let len = u32::from_le_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]) as usize;
            if len == 0 || len > ecsdb::storage::wal::format::MAX_RECORD_LEN {
                return Err(format!("log record at byte {}: implausible record length {len}", at - 8));
            }
            let end = at + ecsdb::storage::wal::format::RECORD_HEADER_LEN + len;
            if end > seg_end {
                return Err(format!("log record at byte {} runs past the segment", at - 8));
            }
            next_record = Some(end);
        }
    }
    if out.len() as u64 != raw_len {
        return Err(format!("decompressed to {} bytes, the header says {raw_len}", out.len()));
    }
    Ok(out)
}

/// Decode and check a chunk (`what` names it in errors: its key).
pub fn decode(what: &str, b: &[u8]) -> Result<Chunk> {
    let bad = |m: String| BackupError::Corrupt(format!("{what}: {m}"));
    if b.len() < HEADER_LEN + 4 {
        return Err(bad(format!("{} bytes is shorter than a log chunk's header (truncated?)", b.len())));
    }
    if &b[..8] != MAGIC {
        return Err(bad("not a log chunk (bad magic number)".into()));
    }
    let version = u16::from_le_bytes([b[8], b[9]]);
    if version != VERSION {
        return Err(bad(format!("log chunk format version {version} is not supported (this build reads {VERSION})")));
    }
    let flags = u16::from_le_bytes([b[10], b[11]]);
    let mut database_id = [0u8; 16];
    database_id.copy_from_slice(&b[16..32]);
    let fingerprint = le64(&b[32..40]);
    let first_seq = le64(&b[40..48]);
    let last_seq = le64(&b[48..56]);
    let raw_len = le64(&b[56..64]);
    let stored_len = le64(&b[64..72]);
    let end = (HEADER_LEN as u64).checked_add(stored_len).filter(|&e| e.checked_add(4) == Some(b.len() as u64));
    let Some(end) = end else {
        return Err(bad(format!(
            "the header says {stored_len} body bytes but the object holds {} (truncated or extended)",
            b.len().saturating_sub(HEADER_LEN + 4)
        )));
    };
    let end = end as usize;
    let crc = u32::from_le_bytes([b[end], b[end + 1], b[end + 2], b[end + 3]]);
    if crc32c::crc32c(&b[..end]) != crc {
        return Err(bad("checksum mismatch (the bytes changed after they were written)".into()));
    }
    if first_seq == 0 || last_seq < first_seq || raw_len > MAX_RAW {
        return Err(bad(format!("implausible header (sequences {first_seq}..={last_seq}, {raw_len} raw bytes)")));
    }
    let stored = &b[HEADER_LEN..end];
    // One time per commit: the count is bounded by the body before anything
    // is sized by it.
    let count = usize::try_from(last_seq - first_seq)
        .ok()
        .and_then(|c| c.checked_add(1))
        .filter(|c| c.checked_mul(8).is_some_and(|t| (t as u64) <= raw_len))
        .ok_or_else(|| bad(format!("commits {first_seq}..={last_seq} cannot fit in {raw_len} bytes")))?;
    let raw = if flags & FLAG_ZSTD != 0 {
        inflate(stored, raw_len).map_err(bad)?
    } else {
        if raw_len != stored_len {
            return Err(bad(format!("an uncompressed body of {stored_len} bytes, the header says {raw_len}")));
        }
        stored.to_vec()
    };
    let seg_len = raw.get(..8).map(le64).ok_or_else(|| bad("body too short".into()))? as usize;
    let times_at = 8usize.checked_add(seg_len).filter(|&t| t.checked_add(count * 8) == Some(raw.len()));
    let Some(times_at) = times_at else {
        return Err(bad("body lengths disagree with the header".into()));
    };
    let segment = raw[8..times_at].to_vec();
    let s = scan(&segment).map_err(|e| bad(format!("log segment: {e}")))?;
    if let Tail::Damaged { offset, reason, .. } = &s.tail {
        return Err(bad(format!("log record at byte {offset}: {reason}")));
    }
    if s.header.first_seq != first_seq || s.header.fingerprint != fingerprint || s.records.len() != count {
        return Err(bad("the records disagree with the chunk's header".into()));
    }
    let mut records = Vec::with_capacity(count);
    for (i, r) in s.records.iter().enumerate() {
        if r.seq != first_seq + i as u64 {
            return Err(bad(format!("record {} where {} was expected", r.seq, first_seq + i as u64)));
        }
        let t = le64(&raw[times_at + i * 8..]);
        records.push((r.seq, r.payload, t));
    }
    Ok(Chunk { database_id, fingerprint, first_seq, last_seq, segment, records })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(level: Option<i32>) -> Vec<u8> {
        let p1 = b"first".to_vec();
        let p2 = b"second record".to_vec();
        let recs = [Rec { seq: 5, payload: &p1, time_ms: 1000 }, Rec { seq: 6, payload: &p2, time_ms: 1001 }];
        encode(&[7; 16], 0xabc, &recs, level).unwrap()
    }

    #[test]
    fn round_trip() {
        for level in [None, Some(3)] {
            let c = decode("x", &sample(level)).unwrap();
            assert_eq!((c.first_seq, c.last_seq, c.fingerprint, c.database_id), (5, 6, 0xabc, [7; 16]));
            assert_eq!(c.payload(1), b"second record");
            assert_eq!(c.records[0].2, 1000);
        }
        assert_eq!(parse_chunk_name(&format!("archive/log/{}", chunk_name(5, 6))), Some((5, 6)));
        assert_eq!(parse_chunk_name("a/00-1.chunk"), None);
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_refused() {
        for level in [None, Some(3)] {
            let b = sample(level);
            for i in 0..b.len() {
                let mut c = b.clone();
                c[i] ^= 0x40;
                assert!(decode("x", &c).is_err(), "flip at {i}");
                assert!(decode("x", &b[..i]).is_err(), "cut at {i}");
            }
        }
    }
}

#[cfg(test)]
mod bomb_tests {
    use super::*;

    /// A valid header and checksum around a body that expands to far more
    /// than anything real: refused at the first bytes.
    #[test]
    fn a_decompression_bomb_is_refused_early() {
        let zeros = vec![0u8; 16 << 20];
        let stored = zstd::bulk::compress(&zeros, 3).unwrap();
        let raw_len: u64 = (1 << 32) - 1;
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&FLAG_ZSTD.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&[1; 16]);
        out.extend_from_slice(&7u64.to_le_bytes());
        out.extend_from_slice(&1u64.to_le_bytes());
        out.extend_from_slice(&1u64.to_le_bytes());
        out.extend_from_slice(&raw_len.to_le_bytes());
        out.extend_from_slice(&(stored.len() as u64).to_le_bytes());
        out.extend_from_slice(&stored);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        let e = decode("bomb", &out).unwrap_err().to_string();
        assert!(e.contains("implausible segment length"), "{e}");
        // Declared commits that cannot fit the body: refused before sizing anything.
        let mut huge = out.clone();
        huge[48..56].copy_from_slice(&u64::MAX.to_le_bytes());
        let n = huge.len();
        let crc = crc32c::crc32c(&huge[..n - 4]);
        huge[n - 4..].copy_from_slice(&crc.to_le_bytes());
        assert!(decode("huge", &huge).unwrap_err().to_string().contains("cannot fit"));
    }
}
