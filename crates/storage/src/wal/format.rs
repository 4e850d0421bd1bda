//! Byte layout of commit-log segments (all integers little-endian).
//!
//! ```text
//! segment := header record*
//! header  := magic "ECSDBWAL" | version:u32 (=1) | first_seq:u64 | schema_fingerprint:u64 | crc32c:u32
//! record  := len:u32 | crc32c:u32 | seq:u64 | payload[len]
//! ```
//! The header CRC covers the 28 bytes before it; a record's CRC covers its
//! `seq` and payload. The payload is an encoded change set. Sequence numbers
//! are consecutive within and across segments; a segment's file name is its
//! first sequence number, zero-padded to 20 digits, with `.wal`.

/// Segment magic.
pub const MAGIC: &[u8; 8] = b"ECSDBWAL";
/// Segment format version.
pub const VERSION: u32 = 1;
/// Header size in bytes.
pub const HEADER_LEN: usize = 32;
/// Record header size in bytes (len, crc, seq).
pub const RECORD_HEADER_LEN: usize = 16;
/// Largest payload a record may carry: the largest change set the engine
/// builds. The writer refuses longer payloads; the reader calls them corruption.
pub const MAX_RECORD_LEN: usize = ecsdb_core::changeset::MAX_CHANGE_SET_BYTES;

/// A segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub first_seq: u64,
    pub fingerprint: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..20].copy_from_slice(&self.first_seq.to_le_bytes());
        b[20..28].copy_from_slice(&self.fingerprint.to_le_bytes());
        let crc = crc32c::crc32c(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<SegmentHeader, String> {
        if b.len() < HEADER_LEN {
            return Err(format!("segment of {} bytes is shorter than its {HEADER_LEN}-byte header", b.len()));
        }
        if &b[..8] != MAGIC {
            return Err("not a commit-log segment (bad magic number)".into());
        }
        let crc = u32::from_le_bytes([b[28], b[29], b[30], b[31]]);
        if crc32c::crc32c(&b[..28]) != crc {
            return Err("segment header checksum mismatch".into());
        }
        let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if version != VERSION {
            return Err(format!("segment format version {version} is not supported (this build reads {VERSION})"));
        }
        Ok(SegmentHeader { first_seq: le64(&b[12..20]), fingerprint: le64(&b[20..28]) })
    }
}

pub(crate) fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn record_crc(seq: u64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&seq.to_le_bytes()), payload)
}

/// Append one encoded record to `out`.
pub fn encode_record(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&record_crc(seq, payload).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Segment file name for a first sequence number.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.wal")
}

/// First sequence number from a segment file name.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    (digits.len() == 20).then(|| digits.parse().ok())?
}

/// A valid record found by a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef {
    pub seq: u64,
    /// Offset of the record header in the segment.
    pub offset: usize,
    /// Payload range in the segment.
    pub payload: (usize, usize),
}

/// How a segment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// Every byte belongs to a valid record.
    Clean,
    /// The bytes from `offset` on are not a valid record.
    Damaged {
        offset: usize,
        reason: String,
        /// Whether a valid record follows the damage somewhere later in the
        /// segment (then it is not a torn tail but corruption in the middle).
        valid_after: bool,
        /// Whether the damage looks like a write a crash cut short: nothing
        /// valid after it, and the record incomplete (its header or payload
        /// runs past the end of the file) or unwritten (zeros to the end). A
        /// *complete* record whose checksum fails is damage to bytes that
        /// were written — possibly an acknowledged commit — and is never
        /// cut silently. (Damage to the length field of the final record
        /// can look like a cut-short write; that case cannot be told apart.)
        torn: bool,
        /// Sequence numbers of valid-looking records after the damage (what
        /// cutting the log here would drop, beyond the damaged record).
        dropped: Vec<u64>,
    },
}

/// Whether damage at `offset` looks like a write cut short (see `Tail`).
pub fn looks_torn(b: &[u8], offset: usize) -> bool {
    let rest = b.get(offset..).unwrap_or_default();
    if rest.len() < RECORD_HEADER_LEN || rest.iter().all(|&x| x == 0) {
        return true;
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    // A length no writer can produce is damage to written bytes, not a
    // record cut short.
    len != 0 && len <= MAX_RECORD_LEN && RECORD_HEADER_LEN + len > rest.len()
}

/// What a segment too short for its header means: a crash while the
/// segment was being created (it can hold no commit) when it is the newest.
pub fn is_unfinished_header(b: &[u8]) -> bool {
    b.len() < HEADER_LEN
}

/// Result of scanning a segment.
#[derive(Debug, Clone)]
pub struct Scan {
    pub header: SegmentHeader,
    pub records: Vec<RecordRef>,
    pub tail: Tail,
}

/// The record starting at byte `at` of a segment, checked (length, checksum).
pub fn try_record(b: &[u8], at: usize) -> Result<RecordRef, String> {
    let h = b.get(at..at + RECORD_HEADER_LEN).ok_or("truncated record header")?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let seq = le64(&h[8..16]);
    if len > MAX_RECORD_LEN || len == 0 {
        return Err(format!("implausible record length {len}"));
    }
    let start = at + RECORD_HEADER_LEN;
    let payload = b.get(start..start + len).ok_or_else(|| format!("record of {len} bytes is cut short"))?;
    if record_crc(seq, payload) != crc {
        return Err("record checksum mismatch".into());
    }
    Ok(RecordRef { seq, offset: at, payload: (start, start + len) })
}

/// Scan a whole segment: its header, its valid records in order (sequence
/// numbers must be consecutive from `first_seq`) and how it ends.
pub fn scan(b: &[u8]) -> Result<Scan, String> {
    let header = SegmentHeader::decode(b)?;
    let mut records = Vec::new();
    let mut at = HEADER_LEN;
    let mut expect = header.first_seq;
    while at < b.len() {
        match try_record(b, at) {
            Ok(r) if r.seq == expect => {
                at = r.payload.1;
                expect += 1;
                records.push(r);
            }
            other => {
                let reason = match other {
                    Ok(r) => format!("sequence {} where {expect} was expected", r.seq),
                    Err(e) => e,
                };
                let mut dropped = Vec::new();
                let mut p = at + 1;
                while p + RECORD_HEADER_LEN <= b.len() {
                    match try_record(b, p) {
                        Ok(r) if r.seq >= expect => {
                            dropped.push(r.seq);
                            p = r.payload.1;
                        }
                        _ => p += 1,
                    }
                }
                let valid_after = !dropped.is_empty();
                let torn = !valid_after && looks_torn(b, at);
                return Ok(Scan {
                    header,
                    records,
                    tail: Tail::Damaged { offset: at, reason, valid_after, torn, dropped },
                });
            }
        }
    }
    Ok(Scan { header, records, tail: Tail::Clean })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(n: u64) -> Vec<u8> {
        let mut b = SegmentHeader { first_seq: 5, fingerprint: 9 }.encode().to_vec();
        for s in 5..5 + n {
            encode_record(s, format!("payload-{s}").as_bytes(), &mut b);
        }
        b
    }

    #[test]
    fn scan_clean_segment() {
        let b = segment(3);
        let s = scan(&b).unwrap();
        assert_eq!(s.records.iter().map(|r| r.seq).collect::<Vec<_>>(), [5, 6, 7]);
        assert_eq!(s.tail, Tail::Clean);
        assert_eq!(&b[s.records[1].payload.0..s.records[1].payload.1], b"payload-6");
    }

    #[test]
    fn every_truncation_of_the_last_record_is_a_torn_tail() {
        let b = segment(3);
        let last = scan(&b).unwrap().records[2].offset;
        for cut in last + 1..b.len() {
            let s = scan(&b[..cut]).unwrap();
            assert_eq!(s.records.len(), 2, "cut at {cut}");
            match s.tail {
                Tail::Damaged { offset, valid_after, .. } => {
                    assert_eq!(offset, last);
                    assert!(!valid_after);
                }
                Tail::Clean => panic!("cut at {cut} not detected"),
            }
        }
    }

    #[test]
    fn a_flipped_bit_in_the_middle_is_not_a_torn_tail() {
        let mut b = segment(3);
        let mid = scan(&b).unwrap().records[1];
        b[mid.payload.0] ^= 0x10;
        let s = scan(&b).unwrap();
        assert_eq!(s.records.len(), 1);
        assert!(matches!(s.tail, Tail::Damaged { valid_after: true, .. }), "{:?}", s.tail);
    }

    #[test]
    fn header_damage_and_names() {
        let mut b = segment(1);
        b[3] ^= 1;
        assert!(scan(&b).unwrap_err().contains("bad magic"));
        let mut b = segment(1);
        b[14] ^= 1;
        assert!(scan(&b).unwrap_err().contains("header checksum"));
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("42.wal"), None);
    }
}
