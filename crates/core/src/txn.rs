//! Transactions: begin → operations → commit or rollback.
//!
//! Model: one writer at a time mutates the world in place (read-your-writes
//! is free) and keeps an undo log; rollback replays the log backwards.
//! Every operation is validated when issued and fails without changing
//! anything. Constraints that depend on the final state (foreign keys,
//! parent tables, relation end tables, the memory ceiling) are checked at
//! commit; a failed check rolls the whole transaction back.
//!
//! In-place typed writes ([`ChunkMut::write`]) copy the column once (a column
//! image) instead of logging each row; at commit, or before any structural
//! change (a row added to or removed from any archetype), the images are
//! diffed against the columns to produce the change set's `SetField`
//! operations and per-row undo entries.

use crate::archetype::{Archetype, ArchetypeId, Column};
use crate::changeset::{ChangeSet, Op, SpawnColumn};
use crate::error::{Error, Result};
use crate::id::EntityId;
use crate::relation::EdgeKey;
use crate::schema::{RelationId, Schema, TableId};
use crate::typed::{Element, FieldRef, cast_err, missing_table};
use crate::value::{self, Value};
use crate::world::{Removed, World, two_mut};

#[derive(Debug)]
enum Undo {
    Spawn(EntityId),
    Despawn(EntityId, Box<Removed>),
    Add(EntityId, TableId),
    /// A removed component: its row is `undo_bytes[start..start + len]`.
    Remove(EntityId, TableId, usize, usize),
    Set(EntityId, TableId, usize, Vec<u8>),
    Link(EdgeKey, Option<Box<[u8]>>),
    Unlink(EdgeKey, Box<[u8]>),
    /// A copy of `rows` elements of a column, at `start` in the image arena.
    ColumnImage {
        arch: ArchetypeId,
        col: usize,
        rows: usize,
        start: usize,
    },
    Fields(Vec<(EntityId, TableId, usize, Vec<u8>)>),
    /// Entities a batch created, as runs of consecutive ids (first, count);
    /// undone newest first.
    SpawnMany(Vec<(u64, u32)>),
}

/// `ids` as runs of consecutive ids: (first, count).
fn id_runs(ids: &[EntityId]) -> Vec<(u64, u32)> {
    let mut runs: Vec<(u64, u32)> = Vec::new();
    for id in ids {
        match runs.last_mut() {
            Some((first, n)) if first.wrapping_add(u64::from(*n)) == id.0 && *n < u32::MAX => *n += 1,
            _ => runs.push((id.0, 1)),
        }
    }
    runs
}

/// An indexed value an in-place write changed: (table, slot, entity, old
/// bytes, new bytes).
type IndexMove = (TableId, usize, EntityId, Vec<u8>, Vec<u8>);

/// An entity an in-place write moved to another cell of a spatial index:
/// (index, entity, old cell, new cell).
type CellMove = (usize, EntityId, Option<crate::spatial::Cell>, Option<crate::spatial::Cell>);

/// Largest image buffer kept between transactions.
const MAX_SPARE_IMAGE_BYTES: usize = 64 << 20;

/// Rows compared at once when diffing a column image.
const DIFF_BLOCK_ROWS: usize = 64;

/// Rows whose bytes differ between `old` and `new` (`size` bytes per row),
/// as half-open row ranges. Blocks of 64 rows are compared first (an
/// unchanged block costs one comparison); a block that differs becomes a
/// 64-bit mask of changed rows, compared without branches for the common
/// element sizes, and ranges are cut from the mask's bit runs.
fn changed_ranges(old: &[u8], new: &[u8], size: usize) -> Vec<(usize, usize)> {
    match size {
        4 => ranges_by::<4>(old, new),
        8 => ranges_by::<8>(old, new),
        12 => ranges_by::<12>(old, new),
        16 => ranges_by::<16>(old, new),
        _ => ranges_with(old, new, size, |o, n| o != n),
    }
}

fn ranges_by<const N: usize>(old: &[u8], new: &[u8]) -> Vec<(usize, usize)> {
    ranges_with(old, new, N, |o, n| o[..N] != n[..N])
}

#[inline]
fn ranges_with(old: &[u8], new: &[u8], size: usize, differs: impl Fn(&[u8], &[u8]) -> bool) -> Vec<(usize, usize)> {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let block = DIFF_BLOCK_ROWS * size;
    let mut open: Option<usize> = None;
    for (b, (old_block, new_block)) in old.chunks(block).zip(new.chunks(block)).enumerate() {
        let base = b * DIFF_BLOCK_ROWS;
        let n = old_block.len() / size;
        let mask = if old_block == new_block {
            0
        } else {
            let mut m = 0u64;
            for (i, (o, w)) in old_block.chunks_exact(size).zip(new_block.chunks_exact(size)).enumerate() {
                m |= u64::from(differs(o, w)) << i;
            }
            m
        };
        // Walk the mask's runs of ones and zeros.
        let mut i = 0;
        while i < n {
            let rest = mask >> i;
            if open.is_some() {
                let ones = (!rest).trailing_zeros() as usize;
                if i + ones >= n {
                    break;
                }
                if let Some(start) = open.take() {
                    ranges.push((start, base + i + ones));
                }
                i += ones;
            } else {
                let zeros = if rest == 0 { n - i } else { rest.trailing_zeros() as usize };
                if i + zeros >= n {
                    break;
                }
                i += zeros;
                open = Some(base + i);
            }
        }
    }
    if let Some(start) = open {
        ranges.push((start, old.len() / size));
    }
    ranges
}

/// State of the active transaction.
#[derive(Debug)]
pub(crate) struct TxnState {
    undo: Vec<Undo>,
    cs: ChangeSet,
    touched: Vec<EntityId>,
    deleted: Vec<EntityId>,
    fk_writes: Vec<(EntityId, TableId, usize)>,
    /// Components removed from entities, where the table is a foreign-key target.
    removed_targets: Vec<(EntityId, TableId)>,
    /// (archetype, column, table, slot, undo index) of live column images.
    captures: Vec<(ArchetypeId, usize, TableId, usize, usize)>,
    /// Copy of `World::check_touched`.
    check_touched: bool,
    /// Entities whose change marks the commit sets (see `World::mark_changed`).
    pub(crate) pending_marks: Vec<EntityId>,
    /// Row ranges of in-place writes whose marks the commit sets.
    pending_ranges: Vec<(ArchetypeId, usize, usize)>,
    /// Values this transaction put into unique indexes: (index, value).
    pub(crate) unique_checks: Vec<(usize, crate::index::Key)>,
    /// Rows of removed components, back to back (see `Undo::Remove`).
    undo_bytes: Vec<u8>,
    /// (element type, field) pairs already checked by typed chunk writes.
    checked: Vec<(std::any::TypeId, FieldRef)>,
    /// Column images, back to back (one allocation for all of them).
    images: Vec<u8>,
    /// Accounted bytes before the first operation that can grow memory
    /// (measured lazily: only growing transactions pay for it).
    start_bytes: Option<usize>,
    /// Commit even over the memory ceiling (small bookkeeping writes).
    exempt_memory: bool,
}

impl TxnState {
    /// Whether any column image is live (see `World::flush_captures`).
    pub(crate) fn has_captures(&self) -> bool {
        !self.captures.is_empty()
    }

    /// Take column `c`'s image (once per transaction and column) so in-place
    /// writes to it are logged at commit and undone by rollback.
    fn capture(&mut self, arch: &mut Archetype, c: usize, table: TableId, slot: usize) {
        if !arch.captured[c]
            && let Column::Fixed(col) = &arch.columns[c]
        {
            arch.captured[c] = true;
            let start = self.images.len();
            self.images.extend_from_slice(col.bytes());
            self.undo.push(Undo::ColumnImage { arch: arch.id, col: c, rows: col.len(), start });
            self.captures.push((arch.id, c, table, slot, self.undo.len() - 1));
        }
    }
}

/// A committed transaction.
#[derive(Debug, Clone)]
pub struct Commit {
    /// Sequence number of the commit (unchanged for an empty transaction).
    pub seq: u64,
    pub changes: ChangeSet,
}

impl World {
    /// Start a transaction.
    pub fn begin(&mut self) -> Result<()> {
        if self.txn.is_some() {
            return Err(Error::TransactionActive);
        }
        if let Some(why) = &self.poisoned {
            return Err(Error::Poisoned(why.clone()));
        }
        self.txn = Some(Box::new(TxnState {
            undo: Vec::new(),
            cs: ChangeSet::new(),
            touched: Vec::new(),
            deleted: Vec::new(),
            fk_writes: Vec::new(),
            removed_targets: Vec::new(),
            captures: Vec::new(),
            check_touched: self.check_touched,
            images: std::mem::take(&mut self.spare_images),
            checked: Vec::new(),
            undo_bytes: Vec::new(),
            unique_checks: Vec::new(),
            pending_marks: Vec::new(),
            pending_ranges: Vec::new(),
            start_bytes: None,
            exempt_memory: false,
        }));
        Ok(())
    }

    /// Let the active transaction commit even over the memory ceiling. For
    /// small, bounded bookkeeping writes (a server's login sessions) that
    /// must not lock everyone out when the data has reached the ceiling.
    pub fn exempt_from_memory_limit(&mut self) -> Result<()> {
        self.st()?.exempt_memory = true;
        Ok(())
    }

    /// Whether a transaction is active.
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    fn st(&mut self) -> Result<&mut TxnState> {
        let limit = self.max_commit_bytes;
        let Some(st) = self.txn.as_deref_mut() else {
            return Err(Error::NoTransaction);
        };
        // Refuse further operations once the change set is over the limit;
        // the commit will be refused as well.
        let bytes = st.cs.byte_len();
        if bytes > limit {
            return Err(Error::TooLarge { bytes, limit });
        }
        Ok(st)
    }

    /// Check every changed element of every live column image (bool, enum
    /// and string byte patterns a typed write may have broken). Changes nothing.
    fn validate_captures(&self) -> Result<()> {
        let Some(st) = self.txn.as_deref() else {
            return Ok(());
        };
        for &(arch, col, t, slot, ui) in &st.captures {
            let Undo::ColumnImage { rows, start, .. } = st.undo[ui] else {
                continue;
            };
            let archetype = &self.archetypes[arch as usize];
            let Column::Fixed(c) = &archetype.columns[col] else {
                continue;
            };
            if !self.layouts[t as usize].slots[slot].needs_check {
                continue;
            }
            let size = c.elem_size();
            let now = c.bytes();
            let bytes = &st.images[start..start + rows * size];
            for row in 0..rows {
                let (old, new) = (&bytes[row * size..(row + 1) * size], &now[row * size..(row + 1) * size]);
                if old != new {
                    let layout = &self.layouts[t as usize];
                    layout.decode_slot(&self.schema, slot, new).map_err(|reason| Error::InvalidValue {
                        table: self.schema.table(t).name.clone(),
                        field: self.schema.table(t).stored_field(slot).name.clone(),
                        reason: format!("entity {}: {reason}", archetype.entities[row]),
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Convert every live column image into change-set operations (one
    /// `SetMany` per column) and, unless the transaction is committing,
    /// per-row undo entries.
    fn flush_captures(&mut self, committing: bool) -> Result<()> {
        // At commit, prepare_commit has just validated them.
        if !committing {
            self.validate_captures()?;
        }
        let World { txn, archetypes, index_of, indexes, layouts, .. } = self;
        // (table, slot, entity, old bytes, new bytes) of indexed values the
        // diff found changed, applied to the indexes once the borrows end.
        let mut index_moves: Vec<IndexMove> = Vec::new();
        // Spatial indexes: only entities that changed cell, as (index,
        // entity, old cell, new cell), found without copying any bytes.
        let mut cell_moves: Vec<CellMove> = Vec::new();
        let Some(st) = txn.as_deref_mut() else {
            return Ok(());
        };
        for (arch, col, t, slot, ui) in std::mem::take(&mut st.captures) {
            archetypes[arch as usize].captured[col] = false;
            let Undo::ColumnImage { rows, start, .. } = st.undo[ui] else {
                continue;
            };
            let archetype = &archetypes[arch as usize];
            let Column::Fixed(c) = &archetype.columns[col] else {
                continue;
            };
            let size = c.elem_size();
            let now = c.bytes();
            let image = &st.images[start..start + rows * size];
            let ranges = changed_ranges(image, &now[..image.len()], size);
            let mut fields = Vec::new();
            if !committing {
                for &(a, b) in &ranges {
                    for row in a..b {
                        fields.push((archetype.entities[row], t, slot, image[row * size..(row + 1) * size].to_vec()));
                    }
                }
            }
            let ix = if ranges.is_empty() {
                None
            } else {
                index_of.get(t as usize).and_then(|s| s.get(slot)).copied().flatten()
            };
            if let Some(i) = ix
                && let Some(g) = indexes[i].spatial.as_ref()
            {
                let f64s = matches!(
                    &layouts[t as usize].slots[slot].ty,
                    crate::schema::FieldType::Array(inner, _)
                        if matches!(**inner, crate::schema::FieldType::Scalar(crate::schema::Scalar::F64))
                );
                for &(a, b) in &ranges {
                    let rows =
                        image[a * size..b * size].chunks_exact(size).zip(now[a * size..b * size].chunks_exact(size));
                    for (k, (old, new)) in rows.enumerate() {
                        if old == new || g.same_cell_bytes(f64s, old, new) {
                            continue;
                        }
                        let (from, to) = (g.cell_of_bytes(f64s, old), g.cell_of_bytes(f64s, new));
                        if from != to {
                            cell_moves.push((i, archetype.entities[a + k], from, to));
                        }
                    }
                }
            } else if ix.is_some() {
                for &(a, b) in &ranges {
                    for row in a..b {
                        let id = archetype.entities[row];
                        index_moves.push((
                            t,
                            slot,
                            id,
                            image[row * size..(row + 1) * size].to_vec(),
                            now[row * size..(row + 1) * size].to_vec(),
                        ));
                    }
                }
            }
            if !ranges.is_empty() {
                st.cs.push_set_run_ranges(t, slot as u16, size, &archetype.entities, &ranges, now);
                // Marks wait for the commit: by range when committing (no
                // row moves any more), by entity otherwise.
                if committing {
                    st.pending_ranges.extend(ranges.iter().map(|&(a, b)| (arch, a, b)));
                } else {
                    for &(a, b) in &ranges {
                        st.pending_marks.extend_from_slice(&archetype.entities[a..b]);
                    }
                }
            }
            // At commit the image stays the undo entry: a commit can still
            // be refused after this (a too-large change set, a commit sink),
            // and the image restores the column exactly.
            if !committing {
                st.undo[ui] = Undo::Fields(fields);
            }
        }
        if !committing {
            st.images.clear();
        }
        for (t, slot, id, old, new) in index_moves {
            self.index_move(t, slot, id, &old, &new);
        }
        for (i, id, from, to) in cell_moves {
            if let Some(g) = self.indexes[i].spatial.as_mut() {
                g.moved(id, from, to);
            }
        }
        Ok(())
    }

    /// Flush every live column image before a structural change (a row
    /// appended to or removed from any archetype): images cover a fixed row
    /// range, so they must never span a change of rows.
    fn flush_for(&mut self, id: EntityId) -> Result<()> {
        let has = self.txn.as_ref().is_some_and(|s| !s.captures.is_empty());
        if has {
            self.location(id)?;
            self.flush_captures(false)?;
        }
        Ok(())
    }

    // ------------------------------------------------------------ operations

    /// Create an entity with no components.
    pub fn create_entity(&mut self) -> Result<EntityId> {
        self.st()?;
        self.note_growth();
        let id = self.spawn()?;
        let st = self.st()?;
        st.undo.push(Undo::Spawn(id));
        st.cs.push(Op::CreateEntity(id));
        if st.check_touched {
            st.touched.push(id);
        }
        Ok(id)
    }

    /// Create an entity with a given id (import). Fails if the id is live or
    /// was used by a deleted entity.
    pub fn create_entity_with_id(&mut self, id: EntityId) -> Result<()> {
        self.st()?;
        self.note_growth();
        self.spawn_at(id)?;
        let st = self.st()?;
        st.undo.push(Undo::Spawn(id));
        st.cs.push(Op::CreateEntity(id));
        if st.check_touched {
            st.touched.push(id);
        }
        Ok(())
    }

    /// Delete an entity, its components and its relations.
    pub fn delete_entity(&mut self, id: EntityId) -> Result<()> {
        self.st()?;
        self.flush_for(id)?;
        let removed = self.despawn(id)?;
        let st = self.st()?;
        st.undo.push(Undo::Despawn(id, Box::new(removed)));
        st.cs.push(Op::DeleteEntity(id));
        st.deleted.push(id);
        Ok(())
    }

    /// Add component `t` from an encoded row (see [`crate::layout`]).
    pub fn insert_row(&mut self, id: EntityId, t: TableId, row: &[u8]) -> Result<()> {
        self.insert_rows(id, &[(t, row)])
    }

    /// Add several components at once (one archetype move): all or none.
    pub fn insert_rows(&mut self, id: EntityId, rows: &[(TableId, &[u8])]) -> Result<()> {
        self.insert_rows_logged(id, rows, true)
    }

    fn insert_rows_logged(&mut self, id: EntityId, rows: &[(TableId, &[u8])], undo: bool) -> Result<()> {
        self.st()?;
        for &(t, _) in rows {
            self.table_exists(t)?;
        }
        self.flush_for(id)?;
        self.note_growth();
        self.add_components(id, rows)?;
        let World { txn, fk_slots, .. } = self;
        let Some(st) = txn.as_deref_mut() else {
            return Err(Error::NoTransaction);
        };
        for &(t, row) in rows {
            if undo {
                st.undo.push(Undo::Add(id, t));
            }
            st.cs.push(Op::AddComponent { id, table: t, row });
            for &slot in &fk_slots[t as usize] {
                st.fk_writes.push((id, t, slot));
            }
        }
        if st.check_touched {
            st.touched.push(id);
        }
        Ok(())
    }

    /// Create `count` entities with components `tables` (ascending table
    /// ids), their values given column by column: one column per stored
    /// field, tables in order, each table's stored fields in slot order
    /// (see [`SpawnColumn`]). All or nothing; logged as one `SpawnMany`.
    pub fn spawn_batch(
        &mut self,
        tables: &[TableId],
        count: usize,
        columns: &[SpawnColumn<'_>],
    ) -> Result<Vec<EntityId>> {
        let (a, ids) = self.begin_batch(tables, count, columns)?;
        if ids.is_empty() {
            return Ok(ids);
        }
        self.place_batch(a, &ids, columns);
        self.end_batch(tables, &ids, columns)?;
        Ok(ids)
    }

    /// Spawn a built batch: like [`World::spawn_batch`], its columns moved
    /// (not copied) into an empty archetype.
    pub(crate) fn spawn_built(&mut self, b: crate::batch::BatchBuilder) -> Result<Vec<EntityId>> {
        let (tables, count, cols) = b.into_parts();
        let view: Vec<SpawnColumn<'_>> = cols
            .iter()
            .map(|c| match c {
                Column::Fixed(f) => SpawnColumn::Fixed { size: f.elem_size(), bytes: f.bytes() },
                Column::Var(v) => SpawnColumn::Var((0..v.len()).map(|i| v.get(i)).collect()),
            })
            .collect();
        let (a, ids) = self.begin_batch(&tables, count, &view)?;
        if ids.is_empty() {
            return Ok(ids);
        }
        // Log first, while the columns are still borrowed; then move them.
        let ids = self.end_batch(&tables, &ids, &view).map(|()| ids)?;
        drop(view);
        self.place_batch_owned(a, &ids, cols);
        Ok(ids)
    }

    /// Check a batch and allocate its ids (nothing placed yet).
    fn begin_batch(
        &mut self,
        tables: &[TableId],
        count: usize,
        columns: &[SpawnColumn<'_>],
    ) -> Result<(crate::archetype::ArchetypeId, Vec<EntityId>)> {
        self.st()?;
        let a = self.check_batch(tables, count, columns)?;
        if self.txn.as_ref().is_some_and(|s| !s.captures.is_empty()) {
            self.flush_captures(false)?;
        }
        self.note_growth();
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            let Some(id) = self.entities.alloc() else {
                for &id in ids.iter().rev() {
                    self.entities.unalloc(id);
                }
                return Err(Error::IdSpaceExhausted);
            };
            ids.push(id);
        }
        Ok((a, ids))
    }

    /// Record a batch in the transaction (change set, checks, undo).
    fn end_batch(&mut self, tables: &[TableId], ids: &[EntityId], columns: &[SpawnColumn<'_>]) -> Result<()> {
        let World { txn, fk_slots, .. } = self;
        let Some(st) = txn.as_deref_mut() else {
            return Err(Error::NoTransaction);
        };
        st.cs.push_spawn_many(tables, ids, columns);
        for &t in tables {
            for &slot in &fk_slots[t as usize] {
                st.fk_writes.extend(ids.iter().map(|&id| (id, t, slot)));
            }
        }
        if st.check_touched {
            st.touched.extend_from_slice(ids);
        }
        st.undo.push(Undo::SpawnMany(id_runs(ids)));
        Ok(())
    }

    /// Create an entity with components given as encoded rows.
    pub fn spawn_rows(&mut self, rows: &[(TableId, &[u8])]) -> Result<EntityId> {
        self.st()?;
        for &(t, row) in rows {
            self.table_exists(t)?;
            self.check_row(t, row)?;
        }
        let id = self.create_entity()?;
        // Undoing the spawn removes whatever the entity holds, so the rows
        // need no undo entries of their own.
        self.insert_rows_logged(id, rows, false)?;
        Ok(id)
    }

    /// Record the memory baseline before the first operation that can grow
    /// accounted memory (only when a ceiling is set).
    fn note_growth(&mut self) {
        let need = self.memory_limit_bytes.is_some() && self.txn.as_ref().is_some_and(|s| s.start_bytes.is_none());
        if need {
            let bytes = self.data_bytes();
            if let Some(st) = self.txn.as_deref_mut() {
                st.start_bytes = Some(bytes);
            }
        }
    }

    /// Add component `t` with values for its stored fields, in slot order.
    pub fn insert_values(&mut self, id: EntityId, t: TableId, values: &[Value]) -> Result<()> {
        self.table_exists(t)?;
        let table = self.schema.table(t);
        if values.len() != table.stored_len() {
            return Err(Error::InvalidValue {
                table: table.name.clone(),
                field: "*".into(),
                reason: format!("expected {} values, got {}", table.stored_len(), values.len()),
            });
        }
        for (slot, v) in values.iter().enumerate() {
            let f = table.stored_field(slot);
            value::check(&f.ty, v, &self.schema).map_err(|reason| Error::InvalidValue {
                table: table.name.clone(),
                field: f.name.clone(),
                reason,
            })?;
        }
        let row = self.encode_values(t, values);
        self.insert_row(id, t, &row)
    }

    /// Add component `t` from a JSON object of fields (missing → defaults).
    pub fn insert_json(&mut self, id: EntityId, t: TableId, obj: &serde_json::Value) -> Result<()> {
        self.table_exists(t)?;
        let row = self.row_from_json(t, obj, Some(id))?;
        self.insert_row(id, t, &row)
    }

    /// Remove component `t`.
    pub fn remove(&mut self, id: EntityId, t: TableId) -> Result<()> {
        self.st()?;
        self.table_exists(t)?;
        if !self.has(id, t) {
            self.location(id)?;
            return Err(Error::ComponentMissing { entity: id, table: self.table_name(t) });
        }
        self.flush_for(id)?;
        let mut arena = std::mem::take(&mut self.st()?.undo_bytes);
        let start = arena.len();
        let r = self.remove_component_into(id, t, &mut arena);
        let len = arena.len() - start;
        self.st()?.undo_bytes = arena;
        r?;
        let is_target = self.fk_targets.binary_search(&t).is_ok();
        let st = self.st()?;
        st.undo.push(Undo::Remove(id, t, start, len));
        if is_target {
            st.removed_targets.push((id, t));
        }
        st.cs.push(Op::RemoveComponent { id, table: t });
        if st.check_touched {
            st.touched.push(id);
        }
        Ok(())
    }

    /// Set one stored field from its encoded bytes.
    pub fn set_bytes(&mut self, id: EntityId, f: FieldRef, bytes: &[u8]) -> Result<()> {
        self.st()?;
        self.table_exists(f.table)?;
        if f.slot < self.layouts[f.table as usize].slots.len()
            && self.layouts[f.table as usize].slots[f.slot].fixed.is_none()
        {
            self.note_growth();
        }
        // A live column image means the indexes lag that column's in-place
        // writes until the diff: bring them up to date before a write that
        // maintains the index from the stored value.
        if self.table_indexed(f.table) && self.txn.as_ref().is_some_and(|s| !s.captures.is_empty()) {
            self.flush_captures(false)?;
        }
        let old = self.set_field(id, f.table, f.slot, bytes)?;
        if old.as_slice() == bytes {
            // Writing the value already stored changes nothing: no undo, no
            // change-set entry (so no sequence number and no delta).
            return Ok(());
        }
        let is_fk = self.schema.table(f.table).stored_field(f.slot).foreign_key.is_some();
        let st = self.st()?;
        st.undo.push(Undo::Set(id, f.table, f.slot, old));
        st.cs.push(Op::SetField { id, table: f.table, slot: f.slot as u16, bytes });
        if is_fk {
            st.fk_writes.push((id, f.table, f.slot));
        }
        Ok(())
    }

    /// Set one stored field to a value.
    pub fn set_value(&mut self, id: EntityId, f: FieldRef, v: &Value) -> Result<()> {
        self.table_exists(f.table)?;
        let field = self.schema.table(f.table).stored_field(f.slot);
        value::check(&field.ty, v, &self.schema).map_err(|reason| Error::InvalidValue {
            table: self.table_name(f.table),
            field: field.name.clone(),
            reason,
        })?;
        let bytes = self.encode_field(f, v);
        self.set_bytes(id, f, &bytes)
    }

    /// Set fields of component `t` from a JSON object (only those given).
    pub fn set_json(&mut self, id: EntityId, t: TableId, obj: &serde_json::Value) -> Result<()> {
        self.table_exists(t)?;
        let table = self.schema.table(t);
        let serde_json::Value::Object(map) = obj else {
            return Err(Error::InvalidValue {
                table: table.name.clone(),
                field: "*".into(),
                reason: "component must be a JSON object of fields".into(),
            });
        };
        if !self.has(id, t) {
            self.location(id)?;
            return Err(Error::ComponentMissing { entity: id, table: table.name.clone() });
        }
        // Convert everything first so a bad field changes nothing.
        let mut sets = Vec::new();
        for (k, j) in map {
            let f = table.field(k).ok_or_else(|| Error::NoSuchField { table: table.name.clone(), field: k.clone() })?;
            let Some(slot) = f.slot() else {
                return Err(Error::InvalidValue {
                    table: table.name.clone(),
                    field: k.clone(),
                    reason: "is the entity's own id and cannot be changed".into(),
                });
            };
            let v = value::from_json(&f.ty, j, &self.schema).map_err(|reason| Error::InvalidValue {
                table: table.name.clone(),
                field: k.clone(),
                reason,
            })?;
            sets.push((FieldRef { table: t, slot }, v));
        }
        for (f, v) in sets {
            let bytes = self.encode_field(f, &v);
            self.set_bytes(id, f, &bytes)?;
        }
        Ok(())
    }

    fn encode_field(&self, f: FieldRef, v: &Value) -> Vec<u8> {
        let field = self.schema.table(f.table).stored_field(f.slot);
        match field.size {
            Some(n) => {
                let mut b = vec![0u8; n];
                value::encode_fixed(&field.ty, v, &self.schema, &mut b);
                b
            }
            None => value::encode_var(v),
        }
    }

    fn table_exists(&self, t: TableId) -> Result<()> {
        if (t as usize) < self.schema.tables.len() { Ok(()) } else { Err(Error::NoSuchTable(format!("#{t}"))) }
    }

    /// Link `from` to `to` with relation `rel` (replacing an existing edge's
    /// properties).
    pub fn link_edge(&mut self, rel: RelationId, from: EntityId, to: EntityId, props: &[u8]) -> Result<()> {
        self.st()?;
        self.note_growth();
        let k = EdgeKey { rel, from, to };
        let prev = self.link(k, props)?;
        let st = self.st()?;
        st.undo.push(Undo::Link(k, prev));
        st.cs.push(Op::Link { rel, from, to, props });
        if st.check_touched {
            st.touched.push(from);
            st.touched.push(to);
        }
        Ok(())
    }

    /// Link with properties from JSON.
    pub fn link_json(
        &mut self,
        rel: RelationId,
        from: EntityId,
        to: EntityId,
        props: Option<&serde_json::Value>,
    ) -> Result<()> {
        if (rel as usize) >= self.schema.relations.len() {
            return Err(Error::NoSuchRelation(format!("#{rel}")));
        }
        let p = self.props_from_json(rel, props)?;
        self.link_edge(rel, from, to, &p)
    }

    /// Remove an edge.
    pub fn unlink_edge(&mut self, rel: RelationId, from: EntityId, to: EntityId) -> Result<()> {
        self.st()?;
        let k = EdgeKey { rel, from, to };
        let old = self.unlink(&k)?;
        let st = self.st()?;
        st.undo.push(Undo::Unlink(k, old));
        st.cs.push(Op::Unlink { rel, from, to });
        Ok(())
    }

    /// Capture every column a typed query writes in archetype `a`.
    pub(crate) fn capture_for_query(
        &mut self,
        a: usize,
        elements: &[(std::sync::Arc<crate::component::Binding>, bool)],
    ) -> Result<()> {
        let World { archetypes, txn, .. } = self;
        let Some(st) = txn.as_deref_mut() else {
            return Err(Error::NoTransaction);
        };
        let arch = &mut archetypes[a];
        for (b, write) in elements {
            if !write {
                continue;
            }
            for &slot in &b.slots {
                if let Some(c) = arch.column_index(b.table, slot) {
                    st.capture(arch, c, b.table, slot);
                }
            }
        }
        Ok(())
    }

    /// Run `f` on every archetype holding all of `tables`, with typed
    /// mutable column access. Stops at the first error `f` returns (what it
    /// wrote stays part of the transaction; roll back to discard it).
    pub fn for_each_chunk_mut<F>(&mut self, tables: &[TableId], mut f: F) -> Result<()>
    where
        F: FnMut(&mut ChunkMut<'_>) -> Result<()>,
    {
        let World { archetypes, txn, schema, fk_slots, .. } = self;
        let Some(st) = txn.as_deref_mut() else {
            return Err(Error::NoTransaction);
        };
        for arch in archetypes.iter_mut() {
            if arch.is_empty() || !arch.has_all(tables) {
                continue;
            }
            let mut chunk = ChunkMut { arch, st, schema, fk_slots };
            f(&mut chunk)?;
        }
        Ok(())
    }

    // ------------------------------------------------------------ commit

    /// Validate the transaction's deferred constraints. On failure the
    /// transaction is rolled back and the error returned.
    /// Validate the transaction for commit. On any error it has been rolled
    /// back (the world is as before `begin`, with no transaction active).
    pub fn prepare_commit(&mut self) -> Result<&ChangeSet> {
        if self.txn.is_none() {
            return Err(Error::NoTransaction);
        }
        // Images are converted only once nothing can fail any more: a failed
        // check rolls back, which needs them.
        if let Err(e) = self.validate_captures().and_then(|()| self.check_deferred()) {
            self.rollback();
            return Err(e);
        }
        if let Err(e) = self.flush_captures(true).and_then(|()| self.st().map(|_| ())) {
            self.rollback();
            return Err(e);
        }
        // In-place writes reach the indexes in the flush above: their
        // unique values are checked now.
        let late = self.txn.as_deref().and_then(|st| self.unique_violation(&st.unique_checks));
        if let Some(e) = late {
            self.rollback();
            return Err(e);
        }
        Ok(&self.txn.as_ref().ok_or(Error::NoTransaction)?.cs)
    }

    /// Finish a prepared commit: assign its sequence number and end the
    /// transaction. Empty transactions take no sequence number.
    pub fn finish_commit(&mut self) -> Result<Commit> {
        let Some(mut st) = self.txn.take() else {
            return Err(Error::NoTransaction);
        };
        self.keep_images(&mut st.images);
        if !st.cs.is_empty() {
            self.seq += 1;
            let seq = self.seq;
            for &(a, from, to) in &st.pending_ranges {
                if let Some(c) = self.archetypes[a as usize].changed.get_mut(from..to) {
                    c.fill(seq);
                }
            }
            for &id in &st.pending_marks {
                self.set_mark(id, seq);
            }
        }
        self.stats.committed += 1;
        self.stats.operations += st.cs.len() as u64;
        Ok(Commit { seq: self.seq, changes: st.cs })
    }

    /// Before a column image is restored: move the index entries of every
    /// row whose value the image changes back (the diff at commit may have
    /// moved them forward already).
    fn unindex_image(&mut self, arch: ArchetypeId, col: usize, rows: usize, image: &[u8]) {
        let a = &self.archetypes[arch as usize];
        // Which (table, slot) the column holds.
        let Some((t, slot)) =
            a.tables.iter().find_map(|&t| a.table_columns(t).filter(|r| r.contains(&col)).map(|r| (t, col - r.start)))
        else {
            return;
        };
        if self.index_on(t, slot).is_none() {
            return;
        }
        let Column::Fixed(c) = &a.columns[col] else {
            return;
        };
        let size = c.elem_size();
        let now = c.bytes();
        let moves: Vec<(EntityId, Vec<u8>, Vec<u8>)> = (0..rows.min(a.len()))
            .filter_map(|row| {
                let (old, cur) = (image.get(row * size..(row + 1) * size)?, now.get(row * size..(row + 1) * size)?);
                (old != cur).then(|| (a.entities[row], cur.to_vec(), old.to_vec()))
            })
            .collect();
        for (id, cur, old) in moves {
            self.index_move(t, slot, id, &cur, &old);
        }
    }

    /// Keep a transaction's image buffer for the next one: a system that
    /// writes the same columns every tick then copies into memory that is
    /// already mapped instead of faulting in fresh pages each time.
    fn keep_images(&mut self, images: &mut Vec<u8>) {
        if images.capacity() <= MAX_SPARE_IMAGE_BYTES {
            images.clear();
            self.spare_images = std::mem::take(images);
        }
    }

    /// Sequence number the pending commit will take.
    pub fn next_seq(&self) -> u64 {
        self.seq + 1
    }

    /// Validate and commit.
    pub fn commit(&mut self) -> Result<Commit> {
        self.prepare_commit()?;
        self.finish_commit()
    }

    fn check_deferred(&self) -> Result<()> {
        let Some(st) = self.txn.as_deref() else {
            return Err(Error::NoTransaction);
        };
        for &e in &st.deleted {
            let count = self.references_to(e);
            if count > 0 {
                return Err(Error::StillReferenced { entity: e, count });
            }
        }
        for &(e, t) in &st.removed_targets {
            let count = self.references_to_table(e, t);
            if count > 0 && self.contains(e) && !self.has(e, t) {
                return Err(Error::ComponentReferenced { entity: e, table: self.table_name(t), count });
            }
        }
        for &(e, t, slot) in &st.fk_writes {
            let Ok(b) = self.field_bytes(e, t, slot) else {
                continue;
            };
            let target = EntityId(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
            if target.is_null() {
                continue;
            }
            let field = self.schema.table(t).stored_field(slot);
            let target_table = field.foreign_key.unwrap_or(t);
            let reason = if !self.contains(target) {
                Some("does not exist".to_string())
            } else if !self.has(target, target_table) {
                Some(format!("has no `{}` component", self.table_name(target_table)))
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(Error::ForeignKey {
                    entity: e,
                    table: self.table_name(t),
                    field: field.name.clone(),
                    target,
                    reason,
                });
            }
        }
        let mut touched = st.touched.clone();
        touched.sort_unstable();
        touched.dedup();
        for e in touched {
            let Ok((a, _)) = self.location(e) else {
                continue;
            };
            let arch = &self.archetypes[a as usize];
            if !arch.parents_ok {
                for &t in &arch.tables {
                    if let Some(p) = self.schema.table(t).parent
                        && !arch.has(p)
                    {
                        return Err(Error::ParentMissing {
                            entity: e,
                            table: self.table_name(t),
                            parent: self.table_name(p),
                        });
                    }
                }
            }
            for k in self.relations.edges_of(e) {
                self.check_edge_ends(&k)?;
            }
        }
        if let Some(e) = self.unique_violation(&st.unique_checks) {
            return Err(e);
        }
        if let (Some(limit), Some(start), false) = (self.memory_limit_bytes, st.start_bytes, st.exempt_memory) {
            let used = self.data_bytes();
            if used > limit && used > start {
                return Err(Error::MemoryLimit { used_bytes: used, limit_bytes: limit });
            }
        }
        Ok(())
    }

    fn check_edge_ends(&self, k: &EdgeKey) -> Result<()> {
        let r = self.schema.relation(k.rel);
        for (end, need, what) in [(k.from, r.from, "source"), (k.to, r.to, "target")] {
            if let Some(t) = need
                && !self.has(end, t)
            {
                return Err(Error::RelationEnd {
                    relation: r.name.clone(),
                    reason: format!("{what} entity {end} must have component `{}`", self.table_name(t)),
                });
            }
        }
        Ok(())
    }

    /// Discard the transaction's changes.
    pub fn rollback(&mut self) {
        let Some(mut st) = self.txn.take() else {
            return;
        };
        self.undoing = true;
        while let Some(u) = st.undo.pop() {
            let r = match u {
                Undo::Spawn(id) => self.unspawn(id),
                Undo::Despawn(id, removed) => self.undespawn(id, *removed),
                Undo::Add(id, t) => self.remove_component(id, t).map(|_| ()),
                Undo::Remove(id, t, start, len) => {
                    let row = st.undo_bytes.get(start..start + len).unwrap_or_default().to_vec();
                    self.add_component(id, t, &row)
                }
                Undo::Set(id, t, slot, old) => self.set_field(id, t, slot, &old).map(|_| ()),
                Undo::Link(k, Some(p)) => self.link(k, &p).map(|_| ()),
                Undo::Link(k, None) => self.unlink(&k).map(|_| ()),
                Undo::Unlink(k, p) => self.link(k, &p).map(|_| ()),
                Undo::ColumnImage { arch, col, rows, start } => {
                    self.archetypes[arch as usize].captured[col] = false;
                    self.unindex_image(arch, col, rows, &st.images[start..]);
                    if let Column::Fixed(c) = &mut self.archetypes[arch as usize].columns[col] {
                        let n = rows * c.elem_size();
                        c.bytes_mut()[..n].copy_from_slice(&st.images[start..start + n]);
                    }
                    Ok(())
                }
                Undo::SpawnMany(runs) => runs
                    .iter()
                    .rev()
                    .flat_map(|&(first, n)| (0..u64::from(n)).rev().map(move |k| EntityId(first + k)))
                    .try_for_each(|id| self.unspawn(id)),
                Undo::Fields(list) => {
                    let mut r = Ok(());
                    for (id, t, slot, old) in list.into_iter().rev() {
                        r = r.and(self.set_field(id, t, slot, &old).map(|_| ()));
                    }
                    r
                }
            };
            // Undo entries replay operations that were valid moments ago on
            // the same state; failure would be an engine bug. The state may
            // then differ from every committed one: refuse all further
            // writes (the owner reports it and serves reads).
            if let Err(e) = r
                && self.poisoned.is_none()
            {
                self.poisoned =
                    Some(format!("a rollback step failed ({e}); the in-memory state may differ from the log"));
            }
        }
        self.undoing = false;
        self.keep_images(&mut st.images);
        self.stats.rolled_back += 1;
    }
}

/// Mutable typed access to one archetype inside a transaction.
#[derive(Debug)]
pub struct ChunkMut<'a> {
    arch: &'a mut Archetype,
    st: &'a mut TxnState,
    schema: &'a Schema,
    fk_slots: &'a [Vec<usize>],
}

impl ChunkMut<'_> {
    pub fn entities(&self) -> &[EntityId] {
        &self.arch.entities
    }

    pub fn len(&self) -> usize {
        self.arch.len()
    }

    pub fn is_empty(&self) -> bool {
        self.arch.is_empty()
    }

    /// Column of `f` as `&[T]`.
    pub fn read<T: Element>(&self, f: FieldRef) -> Result<&[T]> {
        crate::typed::typed_column(self.arch, self.schema, f)
    }

    /// Check that `T` views field `f` (once per transaction and pair).
    fn check_element<T: Element>(&mut self, f: FieldRef) -> Result<()> {
        let key = (std::any::TypeId::of::<T>(), f);
        if !self.st.checked.contains(&key) {
            self.schema.check_element::<T>(f)?;
            self.st.checked.push(key);
        }
        Ok(())
    }

    fn prepare_write<T: Element>(&mut self, f: FieldRef) -> Result<usize> {
        self.check_element::<T>(f)?;
        if self.fk_slots[f.table as usize].contains(&f.slot) {
            let t = self.schema.table(f.table);
            return Err(Error::TypeMismatch {
                table: t.name.clone(),
                field: t.stored_field(f.slot).name.clone(),
                reason: "is a foreign key; set it with set_value so the reference is checked".into(),
            });
        }
        let c = missing_table(self.arch, self.schema, f)?;
        self.st.capture(self.arch, c, f.table, f.slot);
        Ok(c)
    }

    /// Column of `f` as `&mut [T]`; changes become part of the transaction.
    pub fn write<T: Element>(&mut self, f: FieldRef) -> Result<&mut [T]> {
        let c = self.prepare_write::<T>(f)?;
        let schema = self.schema;
        match &mut self.arch.columns[c] {
            Column::Fixed(col) => bytemuck::try_cast_slice_mut(col.bytes_mut()).map_err(|e| cast_err(schema, f, e)),
            Column::Var(_) => Err(cast_err(schema, f, bytemuck::PodCastError::SizeMismatch)),
        }
    }

    /// One column written and another read, at once.
    pub fn write_read<A: Element, B: Element>(&mut self, w: FieldRef, r: FieldRef) -> Result<(&mut [A], &[B])> {
        self.check_element::<B>(r)?;
        let rc = missing_table(self.arch, self.schema, r)?;
        let wc = self.prepare_write::<A>(w)?;
        if wc == rc {
            return Err(Error::TypeMismatch {
                table: self.schema.table(w.table).name.clone(),
                field: self.schema.table(w.table).stored_field(w.slot).name.clone(),
                reason: "cannot be written and read at once".into(),
            });
        }
        let schema = self.schema;
        let (wcol, rcol) = two_mut(&mut self.arch.columns, wc, rc);
        let (Column::Fixed(wcol), Column::Fixed(rcol)) = (wcol, &*rcol) else {
            return Err(cast_err(schema, w, bytemuck::PodCastError::SizeMismatch));
        };
        let a = bytemuck::try_cast_slice_mut(wcol.bytes_mut()).map_err(|e| cast_err(schema, w, e))?;
        let b = bytemuck::try_cast_slice(rcol.bytes()).map_err(|e| cast_err(schema, r, e))?;
        Ok((a, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The block-wise diff finds exactly the rows a row-by-row compare finds.
        #[test]
        fn changed_ranges_match_a_naive_diff(
            size in prop::sample::select(vec![1usize, 4, 8, 12, 16, 24]),
            rows in 0usize..300,
            flips in proptest::collection::vec(any::<u16>(), 0..40),
        ) {
            let old: Vec<u8> = (0..rows * size).map(|i| (i * 7) as u8).collect();
            let mut new = old.clone();
            for f in &flips {
                if rows > 0 {
                    let at = usize::from(*f) % (rows * size);
                    new[at] ^= 0x5a;
                }
            }
            let naive: Vec<usize> = (0..rows).filter(|r| old[r * size..(r + 1) * size] != new[r * size..(r + 1) * size]).collect();
            let ranges = changed_ranges(&old, &new, size);
            let got: Vec<usize> = ranges.iter().flat_map(|&(a, b)| a..b).collect();
            prop_assert_eq!(got, naive);
            // Ranges are maximal: never adjacent.
            for w in ranges.windows(2) {
                prop_assert!(w[0].1 < w[1].0);
            }
            // The SetRun written from ranges equals the one written row by row.
            let ids: Vec<EntityId> = (0..rows as u64).map(|i| EntityId(1000 + i + i / 5)).collect();
            let row_list: Vec<u32> = ranges.iter().flat_map(|&(a, b)| (a as u32)..(b as u32)).collect();
            let (mut x, mut y) = (ChangeSet::new(), ChangeSet::new());
            if !row_list.is_empty() {
                x.push_set_run_ranges(1, 2, size, &ids, &ranges, &new);
                y.push_set_run_rows(1, 2, size, &ids, &row_list, &new);
            }
            prop_assert_eq!(x.as_bytes(), y.as_bytes());
        }
    }
}
