//! What travels from a primary to its replicas, in WebSocket binary frames.
//!
//! ```text
//! frame   := magic "ERPL" | version:u8 (=1) | kind:u8 | epoch:u64 | body | crc32c:u32
//! kind 1  := count:u32 record*          (commit-log records, exactly as logged:
//!                                        len:u32 crc:u32 seq:u64 change_set[len])
//! kind 2  := durable_seq:u64 unix_ms:u64 (heartbeat: the primary's position)
//! ```
//!
//! The CRC32C covers every byte before it; each record keeps the commit
//! log's own checksum, so a replica checks exactly what the primary's
//! recovery would. Every frame carries the primary's epoch: a replica never
//! applies a frame from an epoch older than the one it knows.
//! Little-endian throughout.

use ecsdb::storage::wal::format::{encode_record, try_record};

const MAGIC: &[u8; 4] = b"ERPL";
const VERSION: u8 = 1;
const KIND_RECORDS: u8 = 1;
const KIND_HEARTBEAT: u8 = 2;
const HEADER: usize = 4 + 1 + 1 + 8;
/// Largest frame a replica accepts (a frame is cut at about 1 MiB, but one
/// commit may be as large as the log allows).
pub const MAX_FRAME: usize = (1 << 30) + (1 << 20);

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Commits `(seq, change set bytes)`, consecutive.
    Records { epoch: u64, records: Vec<(u64, Vec<u8>)> },
    /// The primary's durable sequence and clock.
    Heartbeat { epoch: u64, durable_seq: u64, unix_ms: u64 },
}

/// Builds one records frame.
#[derive(Debug)]
pub struct RecordsFrame {
    buf: Vec<u8>,
    count: u32,
    pub first: u64,
    pub last: u64,
}

impl RecordsFrame {
    pub fn new(epoch: u64) -> RecordsFrame {
        let mut buf = Vec::with_capacity(64 << 10);
        buf.extend_from_slice(MAGIC);
        buf.push(VERSION);
        buf.push(KIND_RECORDS);
        buf.extend_from_slice(&epoch.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        RecordsFrame { buf, count: 0, first: 0, last: 0 }
    }

    pub fn push(&mut self, seq: u64, payload: &[u8]) {
        if self.count == 0 {
            self.first = seq;
        }
        self.last = seq;
        self.count += 1;
        encode_record(seq, payload, &mut self.buf);
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf[HEADER..HEADER + 4].copy_from_slice(&self.count.to_le_bytes());
        let crc = crc32c::crc32c(&self.buf);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

pub fn heartbeat(epoch: u64, durable_seq: u64, unix_ms: u64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER + 20);
    buf.extend_from_slice(MAGIC);
    buf.push(VERSION);
    buf.push(KIND_HEARTBEAT);
    buf.extend_from_slice(&epoch.to_le_bytes());
    buf.extend_from_slice(&durable_seq.to_le_bytes());
    buf.extend_from_slice(&unix_ms.to_le_bytes());
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, String> {
    b.get(at..at + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| format!("frame cut short at byte {at}"))
}

/// Decode and check a frame: framing, checksum, every record's checksum
/// and that sequence numbers are consecutive.
pub fn decode(b: &[u8]) -> Result<Frame, String> {
    if b.len() < HEADER + 4 {
        return Err(format!("frame of {} bytes is too short", b.len()));
    }
    if b.len() > MAX_FRAME {
        return Err(format!("frame of {} bytes is larger than {MAX_FRAME}", b.len()));
    }
    let (body, tail) = b.split_at(b.len() - 4);
    let want = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    if crc32c::crc32c(body) != want {
        return Err("frame checksum mismatch".into());
    }
    if &body[..4] != MAGIC {
        return Err("not a replication frame (bad magic)".into());
    }
    if body[4] != VERSION {
        return Err(format!("replication frame version {} (this build reads {VERSION})", body[4]));
    }
    let epoch = u64_at(body, 6)?;
    match body[5] {
        KIND_RECORDS => {
            let n = body
                .get(HEADER..HEADER + 4)
                .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
                .ok_or("records frame cut short")?;
            let mut at = HEADER + 4;
            let mut records = Vec::with_capacity((n as usize).min(1 << 16));
            for i in 0..n {
                let r = try_record(body, at).map_err(|e| format!("record {i} of the frame: {e}"))?;
                if let Some((prev, _)) = records.last()
                    && r.seq != prev + 1
                {
                    return Err(format!("record {i} of the frame: commit {} follows {prev}", r.seq));
                }
                records.push((r.seq, body[r.payload.0..r.payload.1].to_vec()));
                at = r.payload.1;
            }
            if at != body.len() {
                return Err(format!("{} stray bytes after the frame's records", body.len() - at));
            }
            if records.is_empty() {
                return Err("a records frame without records".into());
            }
            Ok(Frame::Records { epoch, records })
        }
        KIND_HEARTBEAT => {
            if body.len() != HEADER + 16 {
                return Err("heartbeat frame of the wrong length".into());
            }
            Ok(Frame::Heartbeat { epoch, durable_seq: u64_at(body, HEADER)?, unix_ms: u64_at(body, HEADER + 8)? })
        }
        k => Err(format!("unknown replication frame kind {k}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut f = RecordsFrame::new(3);
        f.push(10, b"\x01\x00\x00\x00\x00");
        f.push(11, b"abcdef");
        f.push(12, &[7u8; 300]);
        f.finish()
    }

    #[test]
    fn records_and_heartbeats_round_trip() {
        let b = sample();
        assert_eq!(
            decode(&b).unwrap(),
            Frame::Records {
                epoch: 3,
                records: vec![(10, b"\x01\x00\x00\x00\x00".to_vec()), (11, b"abcdef".to_vec()), (12, vec![7u8; 300])]
            }
        );
        assert_eq!(
            decode(&heartbeat(4, 99, 1234)).unwrap(),
            Frame::Heartbeat { epoch: 4, durable_seq: 99, unix_ms: 1234 }
        );
    }

    #[test]
    fn every_flipped_bit_and_every_cut_is_refused() {
        let b = sample();
        for i in 0..b.len() {
            for bit in 0..8 {
                let mut c = b.clone();
                c[i] ^= 1 << bit;
                assert!(decode(&c).is_err(), "flip of bit {bit} of byte {i} accepted");
            }
        }
        for n in 0..b.len() {
            assert!(decode(&b[..n]).is_err(), "frame cut at {n} accepted");
        }
    }

    #[test]
    fn a_gap_inside_a_frame_is_refused_even_with_good_checksums() {
        let mut f = RecordsFrame::new(1);
        f.push(5, b"x");
        f.push(7, b"y");
        let e = decode(&f.finish()).unwrap_err();
        assert!(e.contains("commit 7 follows 5"), "{e}");
    }
}
