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
//!     | 0x09 SpawnMany       count:u32 ntables:u16 table:u16[ntables]
//!                            ids column*
//!     | 0x0A SetRun          table:u16 slot:u16 size:u32 count:u32
//!                            ids bytes[count * size]
//!     | 0x0B Migrate         len:u32 text[len]   (a migration's TOML; alone in its change set)
//! ids    := nruns:u32 (first:u64 len:u32)[nruns]   (len ids from first, +1 each; Σ len = count)
//! column := ncols:u16 then per column size:u32 and either
//!           bytes[count * size] (fixed, size > 0) or (len:u32 bytes[len])[count] (size = 0xFFFF_FFFF)
//! ```
//! `SetMany` is the batched form of `SetField` for one fixed-size column,
//! written when a system updated many rows in place; `SetRun` is its
//! column-wise successor (ids once per run of consecutive ids, then the values
//! back to back), the form written now. `SpawnMany` creates `count` entities
//! with the same components, column by column (the bulk form of
//! `CreateEntity` + `AddComponent`s). Readers accept all three.
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
const OP_SPAWN_MANY: u8 = 9;
const OP_SET_RUN: u8 = 10;
const OP_MIGRATE: u8 = 11;
/// Column size marking a variable-length column in `SpawnMany`.
pub const VAR_COLUMN: u32 = u32::MAX;

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
    /// `count` new entities with components `tables` (see [`SpawnColumn`]).
    SpawnMany {
        count: u32,
        tables: &'a [u8],
        ids: IdRuns<'a>,
        columns: &'a [u8],
    },
    /// New values of one fixed-size field for `ids`, back to back.
    SetRun {
        table: TableId,
        slot: u16,
        size: u32,
        ids: IdRuns<'a>,
        values: &'a [u8],
    },
    /// A schema migration (its TOML text, see [`crate::migration`]): the
    /// state is rewritten into the schema it produces. The only op of its
    /// change set; the ops after it in the log use the new schema's ids.
    Migrate {
        text: &'a [u8],
    },
}

/// Entity ids as runs of consecutive ids (framing checked when decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRuns<'a> {
    runs: &'a [u8],
}

impl IdRuns<'_> {
    /// The ids, in order.
    pub fn iter(&self) -> impl Iterator<Item = EntityId> + '_ {
        self.runs.chunks_exact(12).flat_map(|r| {
            let first = u64::from_le_bytes(r[..8].try_into().unwrap_or([0; 8]));
            let len = u32::from_le_bytes(r[8..12].try_into().unwrap_or([0; 4]));
            (0..u64::from(len)).map(move |k| EntityId(first.wrapping_add(k)))
        })
    }

    /// Number of runs.
    pub fn runs(&self) -> usize {
        self.runs.len() / 12
    }
}

/// One column of a `SpawnMany`, borrowed from the change set or the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnColumn<'a> {
    /// `count` elements of `size` bytes, back to back.
    Fixed { size: usize, bytes: &'a [u8] },
    /// `count` values of a variable-length field.
    Var(Vec<&'a [u8]>),
}

impl SpawnColumn<'_> {
    /// Rows held.
    pub fn len(&self) -> usize {
        match self {
            SpawnColumn::Fixed { size, bytes } => bytes.len().checked_div(*size).unwrap_or(0),
            SpawnColumn::Var(items) => items.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`'s bytes.
    pub fn row(&self, i: usize) -> &[u8] {
        match self {
            SpawnColumn::Fixed { size, bytes } => &bytes[i * size..(i + 1) * size],
            SpawnColumn::Var(items) => items[i],
        }
    }
}

impl<'a> Op<'a> {
    /// The tables of a `SpawnMany` (empty for other ops).
    pub fn spawn_tables(&self) -> Vec<TableId> {
        match *self {
            Op::SpawnMany { tables, .. } => tables.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect(),
            _ => Vec::new(),
        }
    }

    /// The columns of a `SpawnMany` (empty for other ops). Framing was
    /// checked when the change set was decoded.
    pub fn spawn_columns(&self) -> Vec<SpawnColumn<'a>> {
        let Op::SpawnMany { count, columns, .. } = *self else {
            return Vec::new();
        };
        let mut it = OpIter { buf: columns, pos: 0, failed: false };
        it.columns(count).unwrap_or_default()
    }

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

/// Whether `ids` are `ids[0]`, `ids[0] + 1`, ... (an OR-reduction without
/// early exit, so it vectorises).
fn consecutive(ids: &[EntityId]) -> bool {
    let first = ids.first().map_or(0, |i| i.0);
    ids.iter().enumerate().fold(0u64, |acc, (k, id)| acc | (id.0 ^ first.wrapping_add(k as u64))) == 0
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
            Op::SpawnMany { count, tables, ids, columns } => {
                self.begin(OP_SPAWN_MANY);
                self.buf.extend_from_slice(&count.to_le_bytes());
                self.u16((tables.len() / 2) as u16);
                self.buf.extend_from_slice(tables);
                self.raw_runs(ids);
                self.buf.extend_from_slice(columns);
            }
            Op::SetRun { table, slot, size, ids, values } => {
                self.begin(OP_SET_RUN);
                self.u16(table);
                self.u16(slot);
                self.buf.extend_from_slice(&size.to_le_bytes());
                let count = values.len().checked_div(size as usize).unwrap_or(0);
                self.buf.extend_from_slice(&(count as u32).to_le_bytes());
                self.raw_runs(ids);
                self.buf.extend_from_slice(values);
            }
            Op::Migrate { text } => {
                self.begin(OP_MIGRATE);
                self.buf.extend_from_slice(&(text.len() as u32).to_le_bytes());
                self.buf.extend_from_slice(text);
            }
        }
    }

    fn raw_runs(&mut self, ids: IdRuns<'_>) {
        self.buf.extend_from_slice(&(ids.runs() as u32).to_le_bytes());
        self.buf.extend_from_slice(ids.runs);
    }

    /// Append a `SpawnMany`: `ids` get components `tables`, column by
    /// column (`columns` in archetype order: tables ascending, each
    /// table's stored fields in slot order).
    pub fn push_spawn_many(&mut self, tables: &[TableId], ids: &[EntityId], columns: &[SpawnColumn<'_>]) {
        let fixed: usize = columns
            .iter()
            .map(|c| match c {
                SpawnColumn::Fixed { bytes, .. } => bytes.len(),
                SpawnColumn::Var(items) => items.iter().map(|b| b.len() + 4).sum(),
            })
            .sum();
        self.buf.reserve(16 + tables.len() * 2 + 12 + columns.len() * 4 + fixed);
        self.begin(OP_SPAWN_MANY);
        self.buf.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        self.u16(tables.len() as u16);
        for &t in tables {
            self.u16(t);
        }
        self.id_runs_of(std::iter::once(ids));
        self.u16(columns.len() as u16);
        for c in columns {
            match c {
                SpawnColumn::Fixed { size, bytes } => {
                    self.buf.extend_from_slice(&(*size as u32).to_le_bytes());
                    self.buf.extend_from_slice(bytes);
                }
                SpawnColumn::Var(items) => {
                    self.buf.extend_from_slice(&VAR_COLUMN.to_le_bytes());
                    for b in items {
                        self.blob(b);
                    }
                }
            }
        }
    }

    /// Ids as runs of consecutive ids: `nruns:u32 (first:u64 len:u32)*`.
    fn id_runs(&mut self, ids: impl Iterator<Item = EntityId>) {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_le_bytes());
        let mut runs = 0u32;
        let mut cur: Option<(u64, u32)> = None;
        for id in ids {
            cur = match cur {
                Some((first, len)) if first.wrapping_add(u64::from(len)) == id.0 && len < u32::MAX => {
                    Some((first, len + 1))
                }
                Some((first, len)) => {
                    self.u64(first);
                    self.buf.extend_from_slice(&len.to_le_bytes());
                    runs += 1;
                    Some((id.0, 1))
                }
                None => Some((id.0, 1)),
            };
        }
        if let Some((first, len)) = cur {
            self.u64(first);
            self.buf.extend_from_slice(&len.to_le_bytes());
            runs += 1;
        }
        self.buf[at..at + 4].copy_from_slice(&runs.to_le_bytes());
    }

    /// Append a `SetRun`: new values of field (`table`, `slot`) of `size`
    /// bytes for the entities `ids`, `values` back to back in the same order.
    pub fn push_set_run(&mut self, table: TableId, slot: u16, size: u32, ids: &[EntityId], values: &[u8]) {
        debug_assert_eq!(values.len(), ids.len() * size as usize);
        self.buf.reserve(32 + values.len());
        self.begin(OP_SET_RUN);
        self.u16(table);
        self.u16(slot);
        self.buf.extend_from_slice(&size.to_le_bytes());
        self.buf.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        self.id_runs(ids.iter().copied());
        self.buf.extend_from_slice(values);
    }

    /// Append a `SetRun` for the rows in `ranges` (half-open, ascending) of
    /// a column: `entities` is the archetype's row → entity map, `column` the
    /// column's bytes (`size` per row). Each range is one copy.
    pub fn push_set_run_ranges(
        &mut self,
        table: TableId,
        slot: u16,
        size: usize,
        entities: &[EntityId],
        ranges: &[(usize, usize)],
        column: &[u8],
    ) {
        let count: usize = ranges.iter().map(|&(a, b)| b - a).sum();
        self.buf.reserve(32 + count * size);
        self.begin(OP_SET_RUN);
        self.u16(table);
        self.u16(slot);
        self.buf.extend_from_slice(&(size as u32).to_le_bytes());
        self.buf.extend_from_slice(&(count as u32).to_le_bytes());
        self.id_runs_of(ranges.iter().map(|&(a, b)| &entities[a..b]));
        for &(a, b) in ranges {
            self.buf.extend_from_slice(&column[a * size..b * size]);
        }
    }

    /// Id runs of the ids in `slices`, in order.
    fn id_runs_of<'e>(&mut self, slices: impl Iterator<Item = &'e [EntityId]>) {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_le_bytes());
        let mut runs = 0u32;
        let mut first = 0u64;
        let mut len = 0u32;
        for s in slices {
            // Ids of rows spawned together are usually consecutive: one
            // vectorisable pass proves it, and the slice is one run.
            if s.len() > 1
                && len < u32::MAX - s.len() as u32
                && s[0].0.checked_add(s.len() as u64).is_some()
                && consecutive(s)
            {
                if len > 0 && first.wrapping_add(u64::from(len)) == s[0].0 {
                    len += s.len() as u32;
                    continue;
                }
                if len > 0 {
                    self.u64(first);
                    self.buf.extend_from_slice(&len.to_le_bytes());
                    runs += 1;
                }
                first = s[0].0;
                len = s.len() as u32;
                continue;
            }
            for id in s {
                if len > 0 && first.wrapping_add(u64::from(len)) == id.0 && len < u32::MAX {
                    len += 1;
                    continue;
                }
                if len > 0 {
                    self.u64(first);
                    self.buf.extend_from_slice(&len.to_le_bytes());
                    runs += 1;
                }
                first = id.0;
                len = 1;
            }
        }
        if len > 0 {
            self.u64(first);
            self.buf.extend_from_slice(&len.to_le_bytes());
            runs += 1;
        }
        self.buf[at..at + 4].copy_from_slice(&runs.to_le_bytes());
    }

    /// Append a `SetRun` for the given `rows` of a column: `entities` is
    /// the archetype's row → entity map, `column` the column's bytes
    /// (`size` per row). Consecutive rows are copied as one range.
    pub fn push_set_run_rows(
        &mut self,
        table: TableId,
        slot: u16,
        size: usize,
        entities: &[EntityId],
        rows: &[u32],
        column: &[u8],
    ) {
        self.buf.reserve(32 + rows.len() * size);
        self.begin(OP_SET_RUN);
        self.u16(table);
        self.u16(slot);
        self.buf.extend_from_slice(&(size as u32).to_le_bytes());
        self.buf.extend_from_slice(&(rows.len() as u32).to_le_bytes());
        self.id_runs(rows.iter().map(|&r| entities[r as usize]));
        let mut i = 0;
        while i < rows.len() {
            let first = rows[i] as usize;
            let mut j = i + 1;
            while j < rows.len() && rows[j] as usize == first + (j - i) {
                j += 1;
            }
            self.buf.extend_from_slice(&column[first * size..(first + j - i) * size]);
            i = j;
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
            .get(self.pos..self.pos.saturating_add(n))
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
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Id runs holding exactly `count` ids, none past the id space.
    fn id_runs(&mut self, count: u32) -> Result<IdRuns<'a>, DecodeError> {
        let at = self.pos;
        let n = self.u32()? as usize;
        let runs =
            self.take(n.checked_mul(12).ok_or_else(|| DecodeError { offset: at, reason: "too many id runs".into() })?)?;
        let mut total = 0u64;
        for r in runs.chunks_exact(12) {
            let first = u64::from_le_bytes(r[..8].try_into().unwrap_or([0; 8]));
            let len = u32::from_le_bytes(r[8..12].try_into().unwrap_or([0; 4]));
            if len == 0 || first.checked_add(u64::from(len)).is_none() {
                return Err(DecodeError { offset: at, reason: "an id run is empty or past the id space".into() });
            }
            total += u64::from(len);
        }
        if total != u64::from(count) {
            return Err(DecodeError { offset: at, reason: format!("id runs hold {total} ids, the op says {count}") });
        }
        Ok(IdRuns { runs })
    }

    /// The columns of a `SpawnMany` with `count` rows.
    fn columns(&mut self, count: u32) -> Result<Vec<SpawnColumn<'a>>, DecodeError> {
        let n = self.u16()?;
        let mut cols = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let at = self.pos;
            let size = self.u32()?;
            if size == VAR_COLUMN {
                let mut items = Vec::with_capacity((count as usize).min(1 << 16));
                for _ in 0..count {
                    items.push(self.blob()?);
                }
                cols.push(SpawnColumn::Var(items));
            } else {
                let len = (size as usize)
                    .checked_mul(count as usize)
                    .filter(|_| size > 0)
                    .ok_or_else(|| DecodeError { offset: at, reason: format!("bad column size {size}") })?;
                cols.push(SpawnColumn::Fixed { size: size as usize, bytes: self.take(len)? });
            }
        }
        Ok(cols)
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
            OP_SPAWN_MANY => {
                let count = self.u32()?;
                let n = usize::from(self.u16()?);
                let tables = self.take(n * 2)?;
                let ids = self.id_runs(count)?;
                let start = self.pos;
                // Walk the columns once to find where they end.
                self.columns(count)?;
                Op::SpawnMany { count, tables, ids, columns: &self.buf[start..self.pos] }
            }
            OP_SET_RUN => {
                let table = self.u16()?;
                let slot = self.u16()?;
                let size = self.u32()?;
                let count = self.u32()?;
                if size == 0 {
                    return Err(DecodeError { offset: at, reason: "SetRun of zero-sized values".into() });
                }
                let ids = self.id_runs(count)?;
                let len = (size as usize)
                    .checked_mul(count as usize)
                    .ok_or_else(|| DecodeError { offset: at, reason: "SetRun larger than memory".into() })?;
                Op::SetRun { table, slot, size, ids, values: self.take(len)? }
            }
            OP_MIGRATE => Op::Migrate { text: self.blob()? },
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
        (
            1u8..=10,
            any::<u64>(),
            any::<u64>(),
            any::<u16>(),
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..40),
        )
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
                9 | 10 => {
                    // Ids from `a`, in runs broken where `b`'s bits say so.
                    let n = bytes.len() / 4;
                    let ids: Vec<EntityId> = (0..n as u64)
                        .map(|k| {
                            EntityId((a.0 >> 8).wrapping_add(k).wrapping_add(u64::from((b.0 >> k) & 1 == 1) * 7 * k))
                        })
                        .collect();
                    if *tag == 9 {
                        let var: Vec<&[u8]> = (0..n).map(|k| &bytes[k..k + (*s as usize % 3)]).collect();
                        cs.push_spawn_many(
                            &[*t, t.wrapping_add(1)],
                            &ids,
                            &[SpawnColumn::Fixed { size: 4, bytes: &bytes[..n * 4] }, SpawnColumn::Var(var)],
                        );
                    } else {
                        cs.push_set_run(*t, *s, 4, &ids, &bytes[..n * 4]);
                    }
                    continue;
                }
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
            prop_assert_eq!(&a, &b);
            // Re-encoding decoded ops gives the same bytes.
            let mut again = ChangeSet::new();
            for op in b {
                again.push(op);
            }
            prop_assert_eq!(again.as_bytes(), cs.as_bytes());
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
    fn id_runs_and_columns_read_back() {
        let ids = [EntityId(5), EntityId(6), EntityId(7), EntityId(20), EntityId(21)];
        let mut cs = ChangeSet::new();
        let vals: Vec<u8> = (0..20).collect();
        cs.push_spawn_many(
            &[1, 3],
            &ids,
            &[SpawnColumn::Fixed { size: 4, bytes: &vals }, SpawnColumn::Var(vec![b"a", b"", b"ccc", b"d", b"ee"])],
        );
        let rows = [0u32, 1, 3];
        cs.push_set_run_rows(2, 0, 4, &ids, &rows, &vals);
        let back = ChangeSet::decode(cs.as_bytes()).unwrap();
        let ops: Vec<_> = back.iter().collect::<Result<_, _>>().unwrap();
        let Op::SpawnMany { count, ids: runs, .. } = ops[0] else { panic!("{:?}", ops[0]) };
        assert_eq!(count, 5);
        assert_eq!(runs.runs(), 2);
        assert_eq!(runs.iter().collect::<Vec<_>>(), ids);
        assert_eq!(ops[0].spawn_tables(), vec![1, 3]);
        let cols = ops[0].spawn_columns();
        assert_eq!(cols[0].row(4), &[16, 17, 18, 19]);
        assert_eq!(cols[1].row(2), b"ccc");
        let Op::SetRun { ids: runs, values, .. } = ops[1] else { panic!() };
        assert_eq!(runs.iter().collect::<Vec<_>>(), vec![EntityId(5), EntityId(6), EntityId(20)]);
        assert_eq!(values, &[0, 1, 2, 3, 4, 5, 6, 7, 12, 13, 14, 15]);
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
