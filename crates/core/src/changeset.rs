//! Change sets: the compact, versioned record of what one transaction did.
//!
//! A change set is the unit the commit log stores, replication ships and live
//! deltas are cut from. In memory it *is* its encoding — operations are
//! appended to one byte buffer as the transaction issues them, so committing
//! costs no extra serialization pass.
//!
//! Encoding, version 1 (all integers little-endian):
//!
//! ```text
//! change_set := version:u8 (=1) | op_count:u32 | op*
//! op := 0x01 CreateEntity    id:u64
//!     | 0x02 DeleteEntity    id:u64
//!     | 0x03 AddComponent    id:u64 table:u16 len:u32 row[len]
//!     | 0x04 RemoveComponent id:u64 table:u16
//!     | 0x05 SetField        id:u64 table:u16 slot:u16 len:u32 bytes[len]
//!     | 0x06 Link            rel:u16 from:u64 to:u64 len:u32 props[len]
//!     | 0x07 Unlink          rel:u16 from:u64 to:u64
//!     | 0x08 SetMany         table:u16 slot:u16 size:u32 count:u32
//!                            (id:u64 bytes[size])[count]
//! ```
//! `SetMany` is the batched form of `SetField` for one fixed-size column,
//! written when a system updated many rows in place.
//! `row` and `props` use the row encoding of [`crate::layout`]; `bytes` is one
//! field's value (its fixed bytes, or the raw bytes of a var field). Table,
//! slot and relation numbers are dense ids of the schema the change set was
//! written against (the log records that schema's fingerprint).
//!
//! Replaying the operations in order on the state before the commit yields
//! the state after it. `Link` on an existing edge replaces its properties.
//! Deleting an entity also removes its relations (no separate `Unlink`).

use crate::id::EntityId;
use crate::schema::{RelationId, TableId};

/// Current encoding version.
pub const CHANGESET_VERSION: u8 = 1;
/// Bytes before the first op.
pub const HEADER_LEN: usize = 5;
/// Largest encoded change set: the commit log refuses longer records when
/// reading, so a transaction is refused before commit when it grows past
/// this (or past the database's smaller configured limit).
pub const MAX_CHANGE_SET_BYTES: usize = 1 << 30;

const OP_CREATE: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_ADD: u8 = 3;
const OP_REMOVE: u8 = 4;
const OP_SET: u8 = 5;
const OP_LINK: u8 = 6;
const OP_UNLINK: u8 = 7;
const OP_SET_MANY: u8 = 8;

/// One decoded operation, borrowing its byte payloads from the change set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    CreateEntity(EntityId),
    DeleteEntity(EntityId),
    AddComponent {
        id: EntityId,
        table: TableId,
        row: &'a [u8],
    },
    RemoveComponent {
        id: EntityId,
        table: TableId,
    },
    SetField {
        id: EntityId,
        table: TableId,
        slot: u16,
        bytes: &'a [u8],
    },
    Link {
        rel: RelationId,
        from: EntityId,
        to: EntityId,
        props: &'a [u8],
    },
    Unlink {
        rel: RelationId,
        from: EntityId,
        to: EntityId,
    },
    /// `entries` holds `(id:u64, bytes[size])` pairs.
    SetMany {
        table: TableId,
        slot: u16,
        size: u32,
        entries: &'a [u8],
    },
}

impl<'a> Op<'a> {
    /// The `(id, bytes)` pairs of a `SetMany` (empty for other ops).
    pub fn set_many_entries(&self) -> impl Iterator<Item = (EntityId, &'a [u8])> + 'a {
        let (size, entries) = match *self {
            Op::SetMany { size, entries, .. } => (size as usize, entries),
            _ => (0, &[][..]),
        };
        entries.chunks_exact(8 + size).map(move |c| {
            let mut id = [0u8; 8];
            id.copy_from_slice(&c[..8]);
            (EntityId(u64::from_le_bytes(id)), &c[8..])
        })
    }
}

/// An open `SetMany` op (see [`ChangeSet::begin_set_many`]).
#[derive(Debug)]
pub struct SetManyMark {
    start: usize,
    ops: u32,
    count: u32,
}

/// A change set that failed to decode: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed change set at byte {offset}: {reason}")]
pub struct DecodeError {
    pub offset: usize,
    pub reason: String,
}

/// An encoded change set.
#[derive(Clone, PartialEq, Eq)]
pub struct ChangeSet {
    buf: Vec<u8>,
    ops: u32,
}

impl std::fmt::Debug for ChangeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeSet").field("ops", &self.ops).field("bytes", &self.buf.len()).finish()
    }
}

impl Default for ChangeSet {
    fn default() -> ChangeSet {
        ChangeSet::new()
    }
}

impl ChangeSet {
    pub fn new() -> ChangeSet {
        let mut buf = Vec::with_capacity(64);
        buf.push(CHANGESET_VERSION);
        buf.extend_from_slice(&0u32.to_le_bytes());
        ChangeSet { buf, ops: 0 }
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops as usize
    }

    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    /// Length of the encoding in bytes.
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    /// The encoding (with the op count patched in).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn begin(&mut self, tag: u8) {
        self.ops += 1;
        self.buf[1..5].copy_from_slice(&self.ops.to_le_bytes());
        self.buf.push(tag);
    }

    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn blob(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(b);
    }

    /// Append an operation.
    pub fn push(&mut self, op: Op<'_>) {
        match op {
            Op::CreateEntity(id) => {
                self.begin(OP_CREATE);
                self.u64(id.0);
            }
            Op::DeleteEntity(id) => {
                self.begin(OP_DELETE);
                self.u64(id.0);
            }
            Op::AddComponent { id, table, row } => {
                self.begin(OP_ADD);
                self.u64(id.0);
                self.u16(table);
                self.blob(row);
            }
            Op::RemoveComponent { id, table } => {
                self.begin(OP_REMOVE);
                self.u64(id.0);
                self.u16(table);
            }
            Op::SetField { id, table, slot, bytes } => {
                self.begin(OP_SET);
                self.u64(id.0);
                self.u16(table);
                self.u16(slot);
                self.blob(bytes);
            }
            Op::Link { rel, from, to, props } => {
                self.begin(OP_LINK);
                self.u16(rel);
                self.u64(from.0);
                self.u64(to.0);
                self.blob(props);
            }
            Op::Unlink { rel, from, to } => {
                self.begin(OP_UNLINK);
                self.u16(rel);
                self.u64(from.0);
                self.u64(to.0);
            }
            Op::SetMany { table, slot, size, entries } => {
                debug_assert_eq!(entries.len() % (8 + size as usize), 0);
                self.begin(OP_SET_MANY);
                self.u16(table);
                self.u16(slot);
                self.buf.extend_from_slice(&size.to_le_bytes());
                let count = entries.len() / (8 + size as usize);
                self.buf.extend_from_slice(&(count as u32).to_le_bytes());
                self.buf.extend_from_slice(entries);
            }
        }
    }

    /// Start a `SetMany` op; append rows with [`ChangeSet::set_many_entry`]
    /// and close it with [`ChangeSet::end_set_many`].
    /// `max_rows` bounds the rows to come (room is reserved for them).
    pub fn begin_set_many(&mut self, table: TableId, slot: u16, size: u32, max_rows: usize) -> SetManyMark {
        self.buf.reserve(13 + max_rows * (8 + size as usize));
        let mark = SetManyMark { start: self.buf.len(), ops: self.ops, count: 0 };
        self.begin(OP_SET_MANY);
        self.u16(table);
        self.u16(slot);
        self.buf.extend_from_slice(&size.to_le_bytes());
        self.buf.extend_from_slice(&0u32.to_le_bytes());
        mark
    }

    /// One row of the `SetMany` op begun last.
    pub fn set_many_entry(&mut self, mark: &mut SetManyMark, id: EntityId, bytes: &[u8]) {
        self.u64(id.0);
        self.buf.extend_from_slice(bytes);
        mark.count += 1;
    }

    /// Close a `SetMany` op: patch its row count, or drop it when empty.
    // Taking the mark by value means an op cannot be closed twice.
    #[allow(clippy::needless_pass_by_value)]
    pub fn end_set_many(&mut self, mark: SetManyMark) {
        let SetManyMark { start, ops, count } = mark;
        if count == 0 {
            self.buf.truncate(start);
            self.ops = ops;
            self.buf[1..5].copy_from_slice(&self.ops.to_le_bytes());
        } else {
            let at = start + 1 + 2 + 2 + 4;
            self.buf[at..at + 4].copy_from_slice(&count.to_le_bytes());
        }
    }

    /// Parse and check an encoded change set (framing only; the world checks
    /// the meaning when it applies it).
    pub fn decode(bytes: &[u8]) -> Result<ChangeSet, DecodeError> {
        let err = |offset, reason: &str| DecodeError { offset, reason: reason.to_string() };
        if bytes.len() < HEADER_LEN {
            return Err(err(0, "shorter than its header"));
        }
        if bytes[0] != CHANGESET_VERSION {
            return Err(err(0, &format!("unsupported version {} (this build reads {CHANGESET_VERSION})", bytes[0])));
        }
        let count = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let cs = ChangeSet { buf: bytes.to_vec(), ops: count };
        let mut n = 0u32;
        for op in &cs {
            op?;
            n += 1;
        }
        if n != count {
            return Err(err(1, &format!("header says {count} operations, found {n}")));
        }
        Ok(cs)
    }

    /// Iterate the operations.
    pub fn iter(&self) -> OpIter<'_> {
        OpIter { buf: &self.buf, pos: HEADER_LEN, failed: false }
    }
}

impl<'a> IntoIterator for &'a ChangeSet {
    type Item = Result<Op<'a>, DecodeError>;
    type IntoIter = OpIter<'a>;
    fn into_iter(self) -> OpIter<'a> {
        self.iter()
    }
}

/// Iterator over a change set's operations.
#[derive(Debug)]
pub struct OpIter<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> OpIter<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let b = self
            .buf
            .get(self.pos..self.pos + n)
            .ok_or_else(|| DecodeError { offset: self.pos, reason: format!("truncated: needs {n} more bytes") })?;
        self.pos += n;
        Ok(b)
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn blob(&mut self) -> Result<&'a [u8], DecodeError> {
        let b = self.take(4)?;
        let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        self.take(n)
    }
    fn op(&mut self) -> Result<Op<'a>, DecodeError> {
        let at = self.pos;
        let tag = self.take(1)?[0];
        Ok(match tag {
            OP_CREATE => Op::CreateEntity(EntityId(self.u64()?)),
            OP_DELETE => Op::DeleteEntity(EntityId(self.u64()?)),
            OP_ADD => Op::AddComponent { id: EntityId(self.u64()?), table: self.u16()?, row: self.blob()? },
            OP_REMOVE => Op::RemoveComponent { id: EntityId(self.u64()?), table: self.u16()? },
            OP_SET => {
                Op::SetField { id: EntityId(self.u64()?), table: self.u16()?, slot: self.u16()?, bytes: self.blob()? }
            }
            OP_LINK => Op::Link {
                rel: self.u16()?,
                from: EntityId(self.u64()?),
                to: EntityId(self.u64()?),
                props: self.blob()?,
            },
            OP_UNLINK => Op::Unlink { rel: self.u16()?, from: EntityId(self.u64()?), to: EntityId(self.u64()?) },
            OP_SET_MANY => {
                let table = self.u16()?;
                let slot = self.u16()?;
                let b = self.take(8)?;
                let size = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                let count = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                let len = (u64::from(size) + 8)
                    .checked_mul(u64::from(count))
                    .and_then(|l| usize::try_from(l).ok())
                    .ok_or_else(|| DecodeError { offset: at, reason: "SetMany larger than memory".into() })?;
                Op::SetMany { table, slot, size, entries: self.take(len)? }
            }
            t => {
                return Err(DecodeError { offset: at, reason: format!("unknown operation tag {t}") });
            }
        })
    }
}

impl<'a> Iterator for OpIter<'a> {
    type Item = Result<Op<'a>, DecodeError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let r = self.op();
        self.failed = r.is_err();
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (tag, id or from, to, table or relation, slot, payload)
    type OpSpec = (u8, u64, u64, u16, u16, Vec<u8>);

    fn arb_op() -> impl Strategy<Value = OpSpec> {
        (1u8..=8, any::<u64>(), any::<u64>(), any::<u16>(), any::<u16>(), proptest::collection::vec(any::<u8>(), 0..40))
    }

    fn build(spec: &[OpSpec]) -> ChangeSet {
        let mut cs = ChangeSet::new();
        for (tag, a, b, t, s, bytes) in spec {
            let (a, b) = (EntityId(*a), EntityId(*b));
            cs.push(match tag {
                1 => Op::CreateEntity(a),
                2 => Op::DeleteEntity(a),
                3 => Op::AddComponent { id: a, table: *t, row: bytes },
                4 => Op::RemoveComponent { id: a, table: *t },
                5 => Op::SetField { id: a, table: *t, slot: *s, bytes },
                6 => Op::Link { rel: *t, from: a, to: b, props: bytes },
                8 => Op::SetMany { table: *t, slot: *s, size: 0, entries: &bytes[..bytes.len() / 8 * 8] },
                _ => Op::Unlink { rel: *t, from: a, to: b },
            });
        }
        cs
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(spec in proptest::collection::vec(arb_op(), 0..30)) {
            let cs = build(&spec);
            let back = ChangeSet::decode(cs.as_bytes()).unwrap();
            prop_assert_eq!(back.len(), spec.len());
            let a: Vec<_> = cs.iter().collect::<Result<_, _>>().unwrap();
            let b: Vec<_> = back.iter().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(a, b);
        }

        #[test]
        fn decode_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ChangeSet::decode(&bytes);
        }

        #[test]
        fn every_truncation_is_detected(spec in proptest::collection::vec(arb_op(), 1..10), cut in any::<prop::sample::Index>()) {
            let cs = build(&spec);
            let bytes = cs.as_bytes();
            let at = HEADER_LEN + cut.index(bytes.len() - HEADER_LEN);
            prop_assert!(ChangeSet::decode(&bytes[..at]).is_err());
        }
    }

    #[test]
    fn rejects_other_versions_and_bad_tags() {
        let mut cs = ChangeSet::new();
        cs.push(Op::CreateEntity(EntityId(1)));
        let mut b = cs.as_bytes().to_vec();
        b[0] = 9;
        assert!(ChangeSet::decode(&b).unwrap_err().reason.contains("unsupported version 9"));
        let mut b = cs.as_bytes().to_vec();
        b[HEADER_LEN] = 0xee;
        assert!(ChangeSet::decode(&b).unwrap_err().reason.contains("unknown operation tag"));
    }
}
