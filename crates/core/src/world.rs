//! The world: live state of one database — entities, archetype columns,
//! relations — and the primitive mutations every higher path goes through
//! (transactions, change-set replay, import). Primitives validate their input
//! and either apply fully or return an error having changed nothing.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::archetype::{Archetype, ArchetypeId};
use crate::changeset::{ChangeSet, Op};
use crate::entities::Entities;
use crate::error::{Error, Result};
use crate::id::EntityId;
use crate::layout::RowLayout;
use crate::relation::{EdgeKey, Relations};
use crate::schema::{RelationId, Schema, TableId};
use crate::txn::TxnState;
use crate::value::{self, Value};

/// Slot-table growth (in slots) that needs no memory check.
const SLOT_GROWTH_UNCHECKED: usize = 1 << 16;
/// Most slots one explicit id (import, replay) may add past the end of the
/// entity table: ids are handed out densely, so a bigger jump is a hostile
/// or damaged input that would make every later start pay for it.
const MAX_ID_GAP: usize = 1 << 20;
/// Largest slot-table growth allowed by one id when no memory ceiling is set.
pub(crate) const MAX_SLOT_GROWTH_BYTES: usize = 1 << 30;

/// Largest change set of one transaction unless configured otherwise.
pub const DEFAULT_MAX_COMMIT_BYTES: usize = 256 << 20;

/// One edge of a relation with its properties by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub from: EntityId,
    pub to: EntityId,
    /// `{"property": value}` as JSON (same rules as component values).
    pub props: serde_json::Value,
}

/// What deleting an entity removed, enough to put it back exactly.
#[derive(Debug, Clone, Default)]
pub struct Removed {
    pub components: Vec<(TableId, Vec<u8>)>,
    pub edges: Vec<(EdgeKey, Box<[u8]>)>,
    /// The entity's change mark.
    pub changed: u64,
}

/// Live state of one database.
#[derive(Debug)]
pub struct World {
    pub(crate) schema: Arc<Schema>,
    pub(crate) layouts: Vec<RowLayout>,
    pub(crate) rel_layouts: Vec<RowLayout>,
    /// Stored slots holding foreign keys, per table.
    pub(crate) fk_slots: Vec<Vec<usize>>,
    pub(crate) entities: Entities,
    pub(crate) archetypes: Vec<Archetype>,
    archetype_index: FxHashMap<Vec<TableId>, ArchetypeId>,
    pub(crate) relations: Relations,
    /// How many stored foreign-key values reference each (entity, target
    /// table): a referenced entity may neither be deleted nor lose that table.
    pub(crate) fk_refs: FxHashMap<(EntityId, TableId), u32>,
    /// Tables some foreign key targets.
    pub(crate) fk_targets: Vec<TableId>,
    /// Sequence number of the last commit applied.
    pub(crate) seq: u64,
    pub(crate) memory_limit_bytes: Option<usize>,
    /// Whether commits must re-check touched entities: the schema has a
    /// `parent_table` or a relation constraining its end tables.
    pub(crate) check_touched: bool,
    pub(crate) txn: Option<Box<TxnState>>,
    pub(crate) stats: Stats,
    /// Largest change set a transaction may build.
    pub(crate) max_commit_bytes: usize,
    /// Why writes are refused after a failed rollback step (see `rollback`).
    pub(crate) poisoned: Option<String>,
    /// Changes are tracked per entity from this sequence number on (the
    /// state this process started from); older changes are unknown.
    pub(crate) changes_known_from: u64,
    /// Secondary indexes, one per indexed stored field.
    pub(crate) indexes: Vec<crate::index::FieldIndex>,
    /// Per table, per stored slot: its index in `indexes`.
    pub(crate) index_of: Vec<Vec<Option<usize>>>,
    /// Per table: whether any of its fields is indexed.
    pub(crate) indexed_tables: Vec<bool>,
    /// Set while a rollback replays undo entries: they restore, they do
    /// not change, so they leave change marks alone.
    pub(crate) undoing: bool,
    /// The last transaction's column-image buffer, kept for the next.
    pub(crate) spare_images: Vec<u8>,
    /// Typed components already checked against this world's schema.
    pub(crate) bindings: std::sync::Mutex<FxHashMap<std::any::TypeId, Arc<crate::component::Binding>>>,
}

/// Transaction counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub committed: u64,
    pub rolled_back: u64,
    pub operations: u64,
}

impl World {
    /// An empty world for `schema`.
    pub fn new(schema: Arc<Schema>) -> World {
        let layouts =
            schema.tables.iter().map(|t| RowLayout::new(&schema, t.stored.iter().map(|&i| &t.fields[i]))).collect();
        let rel_layouts = schema.relations.iter().map(|r| RowLayout::new(&schema, &r.fields)).collect();
        let fk_slots = schema
            .tables
            .iter()
            .map(|t| (0..t.stored_len()).filter(|&s| t.stored_field(s).foreign_key.is_some()).collect())
            .collect();
        let mut fk_targets: Vec<TableId> = schema
            .tables
            .iter()
            .flat_map(|t| t.fields.iter().filter(|f| f.is_stored()).filter_map(|f| f.foreign_key))
            .collect();
        fk_targets.sort_unstable();
        fk_targets.dedup();
        let mut indexes = Vec::new();
        let index_of: Vec<Vec<Option<usize>>> = schema
            .tables
            .iter()
            .enumerate()
            .map(|(ti, t)| {
                (0..t.stored_len())
                    .map(|s| {
                        let f = t.stored_field(s);
                        let kind = f.index_kind().filter(|&k| crate::index::indexable(k, &f.ty));
                        kind.map(|kind| {
                            indexes.push(crate::index::empty_index(ti as TableId, s, kind, f));
                            indexes.len() - 1
                        })
                    })
                    .collect()
            })
            .collect();
        let indexed_tables: Vec<bool> = index_of.iter().map(|s| s.iter().any(Option::is_some)).collect();
        let check_touched = schema.tables.iter().any(|t| t.parent.is_some())
            || schema.relations.iter().any(|r| r.from.is_some() || r.to.is_some());
        let mut w = World {
            schema,
            layouts,
            rel_layouts,
            fk_slots,
            entities: Entities::default(),
            archetypes: Vec::new(),
            archetype_index: FxHashMap::default(),
            relations: Relations::default(),
            fk_refs: FxHashMap::default(),
            fk_targets,
            seq: 0,
            memory_limit_bytes: None,
            check_touched,
            txn: None,
            stats: Stats::default(),
            max_commit_bytes: DEFAULT_MAX_COMMIT_BYTES,
            poisoned: None,
            changes_known_from: 0,
            spare_images: Vec::new(),
            undoing: false,
            indexes,
            indexed_tables,
            index_of,
            bindings: std::sync::Mutex::new(FxHashMap::default()),
        };
        w.archetype_for(Vec::new());
        w
    }

    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// Sequence number of the last applied commit.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Set the sequence (after loading a snapshot taken at `seq`).
    pub fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
        self.changes_known_from = seq;
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Commits beyond this many accounted bytes of live data are refused.
    pub fn set_memory_limit(&mut self, bytes: Option<usize>) {
        self.memory_limit_bytes = bytes;
    }

    pub fn memory_limit(&self) -> Option<usize> {
        self.memory_limit_bytes
    }

    /// Largest change set one transaction may build (at most
    /// [`crate::changeset::MAX_CHANGE_SET_BYTES`], what the log accepts).
    pub fn set_max_commit_bytes(&mut self, bytes: usize) {
        self.max_commit_bytes = bytes.min(crate::changeset::MAX_CHANGE_SET_BYTES);
    }

    pub fn max_commit_bytes(&self) -> usize {
        self.max_commit_bytes
    }

    /// Why this world refuses writes, if a rollback step ever failed.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    pub fn entity_count(&self) -> usize {
        self.entities.len()
    }

    pub fn entities(&self) -> &Entities {
        &self.entities
    }

    pub fn relations(&self) -> &Relations {
        &self.relations
    }

    pub fn archetypes(&self) -> &[Archetype] {
        &self.archetypes
    }

    pub fn layout(&self, t: TableId) -> &RowLayout {
        &self.layouts[t as usize]
    }

    pub fn relation_layout(&self, r: RelationId) -> &RowLayout {
        &self.rel_layouts[r as usize]
    }

    /// Accounted bytes of live data: column contents, entity slots, edges.
    /// This is what `[memory] max_capacity_mb` limits; allocator slack and
    /// transient buffers are not counted.
    pub fn data_bytes(&self) -> usize {
        self.archetypes.iter().map(Archetype::data_bytes).sum::<usize>()
            + self.entities.heap_bytes()
            + self.relations.data_bytes()
            + self.indexes.iter().map(crate::index::FieldIndex::heap_bytes).sum::<usize>()
    }

    /// Number of live component rows of table `t`.
    pub fn table_len(&self, t: TableId) -> usize {
        self.archetypes.iter().filter(|a| a.has(t)).map(Archetype::len).sum()
    }

    /// Sequence number from which per-entity changes are known: entities
    /// changed before it (before this process loaded the data) all count as
    /// changed for a `changed_since` older than it.
    pub fn changes_known_from(&self) -> u64 {
        self.changes_known_from
    }

    /// Whether `id` was changed by a commit after `since` (or may have been:
    /// `since` is older than what this process knows).
    pub fn changed_after(&self, id: EntityId, since: u64) -> bool {
        changed_after(&self.archetypes, &self.entities, self.changes_known_from, id, since)
    }

    /// Sequence number of the last commit that changed `id`, when known.
    pub fn changed_at(&self, id: EntityId) -> Option<u64> {
        let s = self.entities.slot(id)?;
        let c = *self.archetypes[s.archetype as usize].changed.get(s.row as usize)?;
        (c > self.changes_known_from).then_some(c)
    }

    /// Mark `id` as changed by the commit being built (or applied). Inside
    /// a transaction the mark waits for the commit (a rollback or a refused
    /// commit leaves none); a rollback's own steps mark nothing.
    #[inline]
    pub(crate) fn mark_changed(&mut self, id: EntityId) {
        if self.undoing {
            return;
        }
        if let Some(st) = self.txn.as_deref_mut() {
            st.pending_marks.push(id);
            return;
        }
        self.set_mark(id, self.seq + 1);
    }

    pub(crate) fn set_mark(&mut self, id: EntityId, seq: u64) {
        if let Some(s) = self.entities.slot(id)
            && let Some(c) = self.archetypes[s.archetype as usize].changed.get_mut(s.row as usize)
        {
            *c = seq;
        }
    }

    fn mark_of(&self, id: EntityId) -> u64 {
        self.entities
            .slot(id)
            .and_then(|s| self.archetypes[s.archetype as usize].changed.get(s.row as usize))
            .copied()
            .unwrap_or(0)
    }

    /// After loading a snapshot at `seq`: every loaded entity counts as
    /// changed at `seq`, and changes are known from `seq` on.
    pub fn reset_change_marks(&mut self, seq: u64) {
        for a in &mut self.archetypes {
            a.changed.fill(seq);
        }
        self.changes_known_from = seq;
    }

    pub fn contains(&self, id: EntityId) -> bool {
        self.entities.contains(id)
    }

    pub(crate) fn location(&self, id: EntityId) -> Result<(ArchetypeId, usize)> {
        // Not `ok_or`: an eagerly built error is dropped on every success.
        match self.entities.slot(id) {
            Some(s) => Ok((s.archetype, s.row as usize)),
            None => Err(Error::NoSuchEntity(id)),
        }
    }

    pub(crate) fn table_name(&self, t: TableId) -> String {
        self.schema.table(t).name.clone()
    }

    /// The archetype of exactly `tables` (sorted), created when new.
    pub(crate) fn archetype_for_tables(&mut self, tables: &[TableId]) -> ArchetypeId {
        match self.archetype_index.get(tables) {
            Some(&a) => a,
            None => self.archetype_for(tables.to_vec()),
        }
    }

    fn archetype_for(&mut self, tables: Vec<TableId>) -> ArchetypeId {
        if let Some(&a) = self.archetype_index.get(&tables) {
            return a;
        }
        let id = self.archetypes.len() as ArchetypeId;
        let layouts = &self.layouts;
        let schema = &self.schema;
        let arch = Archetype::new(
            id,
            tables.clone(),
            &|t| layouts[t as usize].slots.iter().map(|s| s.fixed.map(|(_, n)| n)).collect(),
            &|t| schema.table(t).parent,
        );
        self.archetypes.push(arch);
        self.archetype_index.insert(tables, id);
        id
    }

    pub(crate) fn archetype_with(&mut self, from: ArchetypeId, t: TableId) -> ArchetypeId {
        if let Some(&a) = self.archetypes[from as usize].edge_add.get(&t) {
            return a;
        }
        let mut tables = self.archetypes[from as usize].tables.clone();
        if let Err(pos) = tables.binary_search(&t) {
            tables.insert(pos, t);
        }
        let to = self.archetype_for(tables);
        self.archetypes[from as usize].edge_add.insert(t, to);
        to
    }

    fn archetype_without(&mut self, from: ArchetypeId, t: TableId) -> ArchetypeId {
        if let Some(&a) = self.archetypes[from as usize].edge_remove.get(&t) {
            return a;
        }
        let mut tables = self.archetypes[from as usize].tables.clone();
        tables.retain(|&x| x != t);
        let to = self.archetype_for(tables);
        self.archetypes[from as usize].edge_remove.insert(t, to);
        to
    }

    /// Remove `row` from archetype `a`, fixing the location of the entity
    /// moved into its place.
    fn remove_row(&mut self, a: ArchetypeId, row: usize) {
        if let Some(moved) = self.archetypes[a as usize].swap_remove(row)
            && let Some(s) = self.entities.slot_mut(moved)
        {
            s.row = row as u32;
        }
    }

    /// Move entity `id` from its archetype to `to`, carrying over the columns
    /// both share. Columns of tables only in `to` are left for the caller to
    /// push. Returns the new row.
    pub(crate) fn move_entity(&mut self, id: EntityId, from: ArchetypeId, row: usize, to: ArchetypeId) -> usize {
        if from == to {
            // Nothing to carry over: the entity already lives there (a
            // component-less entity loaded into archetype 0, for one).
            return row;
        }
        let (src, dst) = two_mut(&mut self.archetypes, from as usize, to as usize);
        // The row's change mark moves with it: moving is not a change by
        // itself (callers mark what they change).
        let mark = src.changed.get(row).copied().unwrap_or(0);
        let new_row = dst.push_entity(id, mark);
        for &t in &src.tables {
            if let (Some(sr), Some(dr)) = (src.table_columns(t), dst.table_columns(t)) {
                for (sc, dc) in sr.zip(dr) {
                    dst.columns[dc].push(src.columns[sc].get(row));
                }
            }
        }
        self.remove_row(from, row);
        if let Some(s) = self.entities.slot_mut(id) {
            s.archetype = to;
            s.row = new_row as u32;
        }
        new_row
    }

    // ------------------------------------------------------------ reads

    /// Whether entity `id` has component `t`.
    pub fn has(&self, id: EntityId, t: TableId) -> bool {
        self.entities.slot(id).is_some_and(|s| self.archetypes[s.archetype as usize].has(t))
    }

    /// Components of an entity.
    pub fn tables_of(&self, id: EntityId) -> Result<&[TableId]> {
        let (a, _) = self.location(id)?;
        Ok(&self.archetypes[a as usize].tables)
    }

    /// Raw bytes of one stored field.
    pub fn field_bytes(&self, id: EntityId, t: TableId, slot: usize) -> Result<&[u8]> {
        let (a, row) = self.location(id)?;
        let arch = &self.archetypes[a as usize];
        let c = arch
            .column_index(t, slot)
            .ok_or_else(|| Error::ComponentMissing { entity: id, table: self.table_name(t) })?;
        Ok(arch.columns[c].get(row))
    }

    /// Encoded row of component `t` of `id`.
    pub fn component_row(&self, id: EntityId, t: TableId) -> Result<Vec<u8>> {
        let (a, row) = self.location(id)?;
        self.encode_row(a, row, t).ok_or_else(|| Error::ComponentMissing { entity: id, table: self.table_name(t) })
    }

    pub(crate) fn encode_row(&self, a: ArchetypeId, row: usize, t: TableId) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(self.layouts[t as usize].fixed_size);
        self.encode_row_into(a, row, t, &mut out).then_some(out)
    }

    /// Append component `t`'s encoded row at (`a`, `row`) to `out`; `false`
    /// (nothing appended) when the archetype lacks `t`.
    pub(crate) fn encode_row_into(&self, a: ArchetypeId, row: usize, t: TableId, out: &mut Vec<u8>) -> bool {
        let arch = &self.archetypes[a as usize];
        let Some(cols) = arch.table_columns(t) else {
            return false;
        };
        let layout = &self.layouts[t as usize];
        for (slot, c) in cols.clone().enumerate() {
            if layout.slots[slot].fixed.is_some() {
                out.extend_from_slice(arch.columns[c].get(row));
            }
        }
        for (slot, c) in cols.enumerate() {
            if layout.slots[slot].fixed.is_none() {
                let b = arch.columns[c].get(row);
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }
        }
        true
    }

    /// Value of a declared field (by index into the table's `fields`); the
    /// entity-id fields yield the entity's id.
    pub fn field_value(&self, id: EntityId, t: TableId, field: usize) -> Result<Value> {
        let f = &self.schema.table(t).fields[field];
        match f.slot() {
            None => {
                if self.has(id, t) {
                    Ok(Value::U64(id.0))
                } else {
                    self.location(id)?;
                    Err(Error::ComponentMissing { entity: id, table: self.table_name(t) })
                }
            }
            Some(slot) => {
                let b = self.field_bytes(id, t, slot)?;
                self.layouts[t as usize].decode_slot(&self.schema, slot, b).map_err(|reason| Error::InvalidValue {
                    table: self.table_name(t),
                    field: f.name.clone(),
                    reason,
                })
            }
        }
    }

    /// Values of every declared field of component `t`.
    pub fn component_values(&self, id: EntityId, t: TableId) -> Result<Vec<Value>> {
        (0..self.schema.table(t).fields.len()).map(|i| self.field_value(id, t, i)).collect()
    }

    // ------------------------------------------------------------ primitives

    /// Check an encoded row of table `t`. Returns its per-slot parts when
    /// the table has var fields, and nothing (no allocation) when every
    /// field is fixed: then [`row_part`] slices the row by offset.
    pub(crate) fn check_row<'r>(&self, t: TableId, row: &'r [u8]) -> Result<Vec<&'r [u8]>> {
        let layout = &self.layouts[t as usize];
        let bad = |reason: String| Error::InvalidValue { table: self.table_name(t), field: "*".into(), reason };
        let parts = if layout.var_count == 0 {
            if row.len() != layout.fixed_size {
                return Err(bad(format!("row of {} bytes, expected {}", row.len(), layout.fixed_size)));
            }
            Vec::new()
        } else {
            layout.split(row).map_err(bad)?
        };
        for slot in 0..layout.slots.len() {
            if layout.slots[slot].needs_check || !parts.is_empty() {
                self.check_slot_bytes(t, slot, row_part(layout, row, &parts, slot))?;
            }
        }
        Ok(parts)
    }

    pub(crate) fn check_slot_bytes(&self, t: TableId, slot: usize, b: &[u8]) -> Result<()> {
        let layout = &self.layouts[t as usize];
        let s = &layout.slots[slot];
        let bad = |reason: String| Error::InvalidValue {
            table: self.table_name(t),
            field: self.schema.table(t).stored_field(slot).name.clone(),
            reason,
        };
        match s.fixed {
            Some((_, n)) if b.len() != n => {
                return Err(bad(format!("expected {n} bytes, got {}", b.len())));
            }
            _ => {}
        }
        if s.needs_check {
            layout.decode_slot(&self.schema, slot, b).map_err(bad)?;
        }
        Ok(())
    }

    pub(crate) fn fk_adjust(&mut self, t: TableId, slot: usize, bytes: &[u8], delta: i32) {
        let Some(target_table) = self.schema.table(t).stored_field(slot).foreign_key else {
            return;
        };
        let Ok(b) = <[u8; 8]>::try_from(bytes) else {
            return;
        };
        let target = EntityId(u64::from_le_bytes(b));
        if target.is_null() {
            return;
        }
        let key = (target, target_table);
        let e = self.fk_refs.entry(key).or_insert(0);
        *e = e.saturating_add_signed(delta);
        if *e == 0 {
            self.fk_refs.remove(&key);
        }
    }

    /// Stored foreign-key values referencing `e` as a row of `t`.
    pub fn references_to_table(&self, e: EntityId, t: TableId) -> u32 {
        self.fk_refs.get(&(e, t)).copied().unwrap_or(0)
    }

    /// Stored foreign-key values referencing `e`.
    pub fn references_to(&self, e: EntityId) -> u32 {
        self.fk_targets.iter().map(|&t| self.references_to_table(e, t)).sum()
    }

    fn fk_adjust_row(&mut self, t: TableId, row: &[u8], parts: &[&[u8]], delta: i32) {
        for i in 0..self.fk_slots[t as usize].len() {
            let slot = self.fk_slots[t as usize][i];
            let part = row_part(&self.layouts[t as usize], row, parts, slot);
            self.fk_adjust(t, slot, part, delta);
        }
    }

    /// Create a new entity with no components.
    pub(crate) fn spawn(&mut self) -> Result<EntityId> {
        let id = self.entities.alloc().ok_or(Error::IdSpaceExhausted)?;
        self.place_new(id);
        Ok(id)
    }

    /// Create an entity with a given id.
    pub(crate) fn spawn_at(&mut self, id: EntityId) -> Result<()> {
        self.alloc_id_at(id)?;
        self.place_new(id);
        Ok(())
    }

    /// Take a given id (import, replay), not yet placed in any archetype.
    pub(crate) fn alloc_id_at(&mut self, id: EntityId) -> Result<()> {
        // An id far beyond the slots in use grows the slot table up to its
        // index: bound that by the memory ceiling (or a hard cap without one),
        // so a hostile import or a damaged log cannot exhaust memory.
        let grow = (id.index() as usize + 1).saturating_sub(self.entities.slot_count());
        if grow > MAX_ID_GAP {
            return Err(Error::IdUnavailable(format!(
                "entity id {id}: index {} is {grow} slots past the end of the entity table; one id may skip at most {MAX_ID_GAP} (load entities in id order)",
                id.index()
            )));
        }
        if grow > SLOT_GROWTH_UNCHECKED {
            let bytes = grow.saturating_mul(crate::entities::SLOT_BYTES);
            let room = match self.memory_limit_bytes {
                Some(limit) => limit.saturating_sub(self.data_bytes()),
                None => MAX_SLOT_GROWTH_BYTES,
            };
            if bytes > room {
                return Err(Error::IdUnavailable(format!(
                    "entity id {id}: index {} would grow the entity table by {grow} slots ({bytes} bytes), more than the {room} bytes allowed",
                    id.index()
                )));
            }
        }
        self.entities.alloc_at(id).map_err(Error::IdUnavailable)
    }

    fn place_new(&mut self, id: EntityId) {
        let row = self.archetypes[0].push_entity(id, self.seq + 1);
        if let Some(s) = self.entities.slot_mut(id) {
            s.archetype = 0;
            s.row = row as u32;
        }
    }

    /// Add component `t` with an encoded row.
    pub(crate) fn add_component(&mut self, id: EntityId, t: TableId, row: &[u8]) -> Result<()> {
        self.add_components(id, &[(t, row)])
    }

    /// Add several components at once: one move to the final archetype.
    pub(crate) fn add_components(&mut self, id: EntityId, rows: &[(TableId, &[u8])]) -> Result<()> {
        let (a, r) = self.location(id)?;
        let mut to = a;
        // Rows of all-fixed tables are sliced by offset: their parts are
        // only kept (and allocated) when some table has var fields.
        let any_var = rows.iter().any(|&(t, _)| self.layouts.get(t as usize).is_some_and(|l| l.var_count > 0));
        let mut all_parts = Vec::new();
        for (i, &(t, row)) in rows.iter().enumerate() {
            if self.archetypes[to as usize].has(t) {
                let dup = rows[..i].iter().any(|&(x, _)| x == t);
                return Err(if dup {
                    Error::InvalidValue {
                        table: self.table_name(t),
                        field: "*".into(),
                        reason: "the same component is given twice".into(),
                    }
                } else {
                    Error::ComponentExists { entity: id, table: self.table_name(t) }
                });
            }
            let parts = self.check_row(t, row)?;
            if any_var {
                all_parts.push(parts);
            }
            to = self.archetype_with(to, t);
        }
        let new_row = self.move_entity(id, a, r, to);
        let arch = &mut self.archetypes[to as usize];
        let parts_of = |i: usize| all_parts.get(i).map_or(&[][..], Vec::as_slice);
        for (i, &(t, row)) in rows.iter().enumerate() {
            let parts = parts_of(i);
            let layout = &self.layouts[t as usize];
            if let Some(cols) = arch.table_columns(t) {
                for (slot, c) in cols.enumerate() {
                    arch.columns[c].push(row_part(layout, row, parts, slot));
                }
            }
        }
        debug_assert!(arch.columns.iter().all(|c| c.len() == new_row + 1));
        for (i, &(t, row)) in rows.iter().enumerate() {
            if !self.fk_slots[t as usize].is_empty() || self.table_indexed(t) {
                let parts = all_parts.get(i).map_or(&[][..], Vec::as_slice);
                self.fk_adjust_row(t, row, parts, 1);
                self.index_row(t, id, row, parts, true);
            }
        }
        self.mark_changed(id);
        Ok(())
    }

    /// Remove component `t`; returns its encoded row.
    pub(crate) fn remove_component(&mut self, id: EntityId, t: TableId) -> Result<Vec<u8>> {
        let mut old = Vec::with_capacity(self.layouts[t as usize].fixed_size);
        self.remove_component_into(id, t, &mut old)?;
        Ok(old)
    }

    /// Remove component `t`, appending its encoded row to `out` (an undo
    /// arena: no allocation per removal).
    pub(crate) fn remove_component_into(&mut self, id: EntityId, t: TableId, out: &mut Vec<u8>) -> Result<()> {
        let (a, r) = self.location(id)?;
        let start = out.len();
        if !self.encode_row_into(a, r, t, out) {
            return Err(Error::ComponentMissing { entity: id, table: self.table_name(t) });
        }
        let to = self.archetype_without(a, t);
        self.move_entity(id, a, r, to);
        self.mark_changed(id);
        if !self.fk_slots[t as usize].is_empty() || self.table_indexed(t) {
            let old = &out[start..];
            let layout = &self.layouts[t as usize];
            let parts = if layout.var_count == 0 { Vec::new() } else { layout.split(old).unwrap_or_default() };
            self.fk_adjust_row(t, old, &parts, -1);
            self.index_row(t, id, old, &parts, false);
        }
        Ok(())
    }

    /// Overwrite one stored field; returns the old bytes.
    pub(crate) fn set_field(&mut self, id: EntityId, t: TableId, slot: usize, bytes: &[u8]) -> Result<Vec<u8>> {
        let (a, r) = self.location(id)?;
        if slot >= self.layouts[t as usize].slots.len() {
            return Err(Error::InvalidValue {
                table: self.table_name(t),
                field: format!("#{slot}"),
                reason: "no such stored field".into(),
            });
        }
        self.check_slot_bytes(t, slot, bytes)?;
        let arch = &mut self.archetypes[a as usize];
        let c = arch
            .column_index(t, slot)
            .ok_or_else(|| Error::ComponentMissing { entity: id, table: self.schema.table(t).name.clone() })?;
        let old = arch.columns[c].get(r).to_vec();
        arch.columns[c].set(r, bytes);
        if old != bytes {
            self.mark_changed(id);
            self.index_move(t, slot, id, &old, bytes);
        }
        self.fk_adjust(t, slot, &old, -1);
        self.fk_adjust(t, slot, bytes, 1);
        Ok(old)
    }

    /// Delete an entity with its components and relations.
    pub(crate) fn despawn(&mut self, id: EntityId) -> Result<Removed> {
        let (a, _) = self.location(id)?;
        let mut removed = Removed { changed: self.mark_of(id), ..Removed::default() };
        for k in self.relations.edges_of(id) {
            if let Some(p) = self.relations.unlink(&k) {
                removed.edges.push((k, p));
            }
        }
        let tables = self.archetypes[a as usize].tables.clone();
        for &t in tables.iter().rev() {
            let row = self.remove_component(id, t)?;
            removed.components.push((t, row));
        }
        let (a, r) = self.location(id)?;
        self.remove_row(a, r);
        self.entities.free(id);
        Ok(removed)
    }

    /// Put back an entity removed by [`World::despawn`] (rollback).
    pub(crate) fn undespawn(&mut self, id: EntityId, removed: Removed) -> Result<()> {
        self.entities.unfree(id);
        self.place_new(id);
        for (t, row) in removed.components.iter().rev() {
            self.add_component(id, *t, row)?;
        }
        for (k, p) in removed.edges {
            self.relations.link(k, &p);
        }
        self.set_mark(id, removed.changed);
        Ok(())
    }

    /// Undo an entity created in a rolled-back transaction.
    /// Undo an entity created in a rolled-back transaction, with whatever
    /// components it still holds (a bundle spawn logs no per-component undo).
    pub(crate) fn unspawn(&mut self, id: EntityId) -> Result<()> {
        self.index_entity(id, false);
        let (a, r) = self.location(id)?;
        for i in 0..self.archetypes[a as usize].tables.len() {
            let t = self.archetypes[a as usize].tables[i];
            if self.fk_slots[t as usize].is_empty() {
                continue;
            }
            let old = self.encode_row(a, r, t).unwrap_or_default();
            let layout = &self.layouts[t as usize];
            let parts = if layout.var_count == 0 { Vec::new() } else { layout.split(&old).unwrap_or_default() };
            self.fk_adjust_row(t, &old, &parts, -1);
        }
        self.remove_row(a, r);
        self.entities.unalloc(id);
        Ok(())
    }

    pub(crate) fn check_props(&self, rel: RelationId, props: &[u8]) -> Result<()> {
        let layout = &self.rel_layouts[rel as usize];
        let r = self.schema.relation(rel);
        let parts = layout.split(props).map_err(|reason| Error::RelationEnd {
            relation: r.name.clone(),
            reason: format!("bad properties: {reason}"),
        })?;
        for (slot, p) in parts.iter().enumerate() {
            if layout.slots[slot].needs_check || layout.slots[slot].fixed.is_some_and(|(_, n)| n != p.len()) {
                layout.decode_slot(&self.schema, slot, p).map_err(|reason| Error::InvalidValue {
                    table: format!("relation {}", r.name),
                    field: r.fields[slot].name.clone(),
                    reason,
                })?;
            }
        }
        Ok(())
    }

    /// Insert or replace an edge; both ends must be live entities.
    pub(crate) fn link(&mut self, k: EdgeKey, props: &[u8]) -> Result<Option<Box<[u8]>>> {
        if (k.rel as usize) >= self.schema.relations.len() {
            return Err(Error::NoSuchRelation(format!("#{}", k.rel)));
        }
        for e in [k.from, k.to] {
            if !self.contains(e) {
                return Err(Error::RelationEnd {
                    relation: self.schema.relation(k.rel).name.clone(),
                    reason: format!("entity {e} does not exist"),
                });
            }
        }
        self.check_props(k.rel, props)?;
        Ok(self.relations.link(k, props))
    }

    pub(crate) fn unlink(&mut self, k: &EdgeKey) -> Result<Box<[u8]>> {
        self.relations.unlink(k).ok_or_else(|| Error::NoSuchEdge {
            relation: self
                .schema
                .relations
                .get(k.rel as usize)
                .map_or_else(|| format!("#{}", k.rel), |r| r.name.clone()),
            from: k.from,
            to: k.to,
        })
    }

    // ------------------------------------------------------------ replay

    /// Apply a committed change set (recovery, replicas). `seq` must be the
    /// next sequence number. On error the world may be partly changed: the
    /// caller must treat it as corrupt (replay only applies logged commits,
    /// which applied cleanly when they were made).
    /// Replace this state by its migrated form (see [`World::migrated`]) as
    /// commit `seq`: every entity counts as changed at `seq`.
    pub fn install_migrated(&mut self, mut next: World, seq: u64) {
        next.seq = seq;
        next.changes_known_from = self.changes_known_from;
        next.stats = self.stats;
        next.reset_change_marks(seq);
        *self = next;
    }

    pub fn apply(&mut self, seq: u64, cs: &ChangeSet) -> Result<()> {
        if self.txn.is_some() {
            return Err(Error::TransactionActive);
        }
        if seq != self.seq + 1 {
            return Err(Error::Apply { seq, reason: format!("expected sequence {}", self.seq + 1) });
        }
        let fail = |reason: String| Error::Apply { seq, reason };
        if let Some(Ok(Op::Migrate { text })) = cs.iter().next() {
            if cs.len() != 1 {
                return Err(fail("a migration must be the only op of its change set".into()));
            }
            let text = std::str::from_utf8(text).map_err(|_| fail("the migration text is not UTF-8".into()))?;
            let m = crate::migration::Migration::parse(text).map_err(|e| fail(e.to_string()))?;
            let plan = self.schema.plan_migration(&m, true).map_err(|e| fail(e.to_string()))?;
            let next = self.migrated(&plan).map_err(|e| fail(e.to_string()))?;
            self.install_migrated(next, seq);
            return Ok(());
        }
        let tables = self.schema.tables.len();
        for (i, op) in cs.iter().enumerate() {
            let op = op.map_err(|e| fail(e.to_string()))?;
            let check_table = |t: TableId| {
                if (t as usize) < tables { Ok(()) } else { Err(fail(format!("op {i}: unknown table #{t}"))) }
            };
            let r = match op {
                Op::CreateEntity(id) => self.spawn_at(id),
                Op::DeleteEntity(id) => self.despawn(id).map(|_| ()),
                Op::AddComponent { id, table, row } => {
                    check_table(table)?;
                    self.add_component(id, table, row)
                }
                Op::RemoveComponent { id, table } => {
                    check_table(table)?;
                    self.remove_component(id, table).map(|_| ())
                }
                Op::SetField { id, table, slot, bytes } => {
                    check_table(table)?;
                    self.set_field(id, table, slot.into(), bytes).map(|_| ())
                }
                Op::Link { rel, from, to, props } => self.link(EdgeKey { rel, from, to }, props).map(|_| ()),
                Op::Unlink { rel, from, to } => self.unlink(&EdgeKey { rel, from, to }).map(|_| ()),
                Op::Migrate { .. } => Err(fail(format!("op {i}: a migration must be the only op of its change set"))),
                Op::SetMany { table, slot, .. } => {
                    check_table(table)?;
                    op.set_many_entries()
                        .try_for_each(|(id, bytes)| self.set_field(id, table, slot.into(), bytes).map(|_| ()))
                }
                Op::SetRun { table, slot, size, ids, values } => {
                    check_table(table)?;
                    let size = size as usize;
                    ids.iter().enumerate().try_for_each(|(k, id)| {
                        self.set_field(id, table, slot.into(), &values[k * size..(k + 1) * size]).map(|_| ())
                    })
                }
                Op::SpawnMany { ids, count, .. } => {
                    // Bounded before the ids are expanded (a short record can name many).
                    let tables = op.spawn_tables();
                    let columns = op.spawn_columns();
                    let a = self.check_batch(&tables, count as usize, &columns)?;
                    let ids: Vec<EntityId> = ids.iter().collect();
                    self.apply_batch(a, &ids, &columns)
                }
            };
            r.map_err(|e| fail(format!("op {i}: {e}")))?;
        }
        self.seq = seq;
        self.stats.committed += 1;
        self.stats.operations += cs.len() as u64;
        Ok(())
    }

    /// A canonical, order-independent description of the whole state, for
    /// tests and integrity checks: entities, their component rows and edges,
    /// sorted.
    pub fn canonical_state(&self) -> CanonicalState {
        let mut entities: Vec<(EntityId, Vec<TableRow>)> = self
            .entities
            .iter()
            .map(|id| {
                let (a, r) = self.location(id).unwrap_or((0, 0));
                let rows = self.archetypes[a as usize]
                    .tables
                    .iter()
                    .filter_map(|&t| self.encode_row(a, r, t).map(|b| (t, b)))
                    .collect();
                (id, rows)
            })
            .collect();
        entities.sort_by_key(|e| e.0);
        let mut edges: Vec<(EdgeKey, Vec<u8>)> = self.relations.iter().map(|(k, v)| (*k, v.to_vec())).collect();
        edges.sort_by_key(|e| e.0);
        CanonicalState { entities, edges }
    }

    /// The canonical state as one byte stream, fed to `sink` a piece at a
    /// time without building it (for checksums of large states): entities
    /// by id, each as `id:u64 ntables:u32 (table:u16 len:u32 row)*` with its
    /// rows by table id, then edges by key as `rel:u16 from:u64 to:u64
    /// len:u32 props`. Returns (entities, component rows, edges).
    pub fn canonical_stream(&self, sink: &mut dyn FnMut(&[u8])) -> (u64, u64, u64) {
        let mut ids: Vec<(EntityId, ArchetypeId, usize)> = self
            .entities
            .iter()
            .map(|id| {
                let (a, r) = self.location(id).unwrap_or((0, 0));
                (id, a, r)
            })
            .collect();
        ids.sort_unstable_by_key(|e| e.0);
        let mut buf = Vec::with_capacity(256);
        let mut components = 0u64;
        let mut tables: Vec<TableId> = Vec::new();
        for &(id, a, r) in &ids {
            buf.clear();
            tables.clear();
            tables.extend_from_slice(&self.archetypes[a as usize].tables);
            tables.sort_unstable();
            buf.extend_from_slice(&id.0.to_le_bytes());
            buf.extend_from_slice(&(tables.len() as u32).to_le_bytes());
            for &t in &tables {
                buf.extend_from_slice(&t.to_le_bytes());
                let at = buf.len();
                buf.extend_from_slice(&[0; 4]);
                self.encode_row_into(a, r, t, &mut buf);
                let len = (buf.len() - at - 4) as u32;
                buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
                components += 1;
            }
            sink(&buf);
        }
        let mut edges: Vec<(&EdgeKey, &[u8])> = self.relations.iter().collect();
        edges.sort_unstable_by_key(|e| *e.0);
        for (k, props) in &edges {
            buf.clear();
            buf.extend_from_slice(&k.rel.to_le_bytes());
            buf.extend_from_slice(&k.from.0.to_le_bytes());
            buf.extend_from_slice(&k.to.0.to_le_bytes());
            buf.extend_from_slice(&(props.len() as u32).to_le_bytes());
            buf.extend_from_slice(props);
            sink(&buf);
        }
        (ids.len() as u64, components, edges.len() as u64)
    }

    /// Check internal invariants (locations, column lengths, reference
    /// counts, parents, relation ends). Returns every problem found.
    pub fn check_integrity(&self) -> Vec<String> {
        self.integrity(true)
    }

    /// Only the invariants every primitive keeps, whatever it is fed:
    /// locations, column lengths, reference counts, edge ends. (Schema
    /// constraints — foreign-key targets, parent tables — are a commit's
    /// job; a change set applied unchecked may break them, never these.)
    pub fn check_structure(&self) -> Vec<String> {
        self.integrity(false)
    }

    fn integrity(&self, constraints: bool) -> Vec<String> {
        let mut problems = Vec::new();
        for arch in &self.archetypes {
            for (i, c) in arch.columns.iter().enumerate() {
                if c.len() != arch.entities.len() {
                    problems.push(format!(
                        "archetype {} column {i} has {} rows, expected {}",
                        arch.id,
                        c.len(),
                        arch.entities.len()
                    ));
                }
            }
            for (row, &e) in arch.entities.iter().enumerate() {
                match self.entities.slot(e) {
                    Some(s) if s.archetype == arch.id && s.row as usize == row => {}
                    _ => problems.push(format!("entity {e} at archetype {} row {row} has a wrong location", arch.id)),
                }
                if constraints && !arch.parents_ok {
                    problems.push(format!("entity {e} has a component without its parent_table"));
                }
            }
        }
        let mut refs: FxHashMap<(EntityId, TableId), u32> = FxHashMap::default();
        for arch in &self.archetypes {
            for &t in &arch.tables {
                for &slot in &self.fk_slots[t as usize] {
                    if let Some(c) = arch.column_index(t, slot) {
                        for (row, &e) in arch.entities.iter().enumerate() {
                            let b = arch.columns[c].get(row);
                            let target = EntityId(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
                            if target.is_null() {
                                continue;
                            }
                            let target_table = self.schema.table(t).stored_field(slot).foreign_key.unwrap_or(t);
                            *refs.entry((target, target_table)).or_default() += 1;
                            if constraints && !self.has(target, target_table) {
                                problems.push(format!(
                                    "{}.{} of entity {e} references missing entity {target}",
                                    self.table_name(t),
                                    self.schema.table(t).stored_field(slot).name
                                ));
                            }
                        }
                    }
                }
            }
        }
        if refs != self.fk_refs {
            problems.push("foreign-key reference counts disagree with the columns".into());
        }
        problems.extend(self.index_problems());
        for (k, _) in self.relations.iter() {
            if !self.contains(k.from) || !self.contains(k.to) {
                problems.push(format!("edge {} {}->{} has a missing end", k.rel, k.from, k.to));
            }
        }
        problems
    }

    /// Find the table id of `name`.
    pub fn table_id(&self, name: &str) -> Result<TableId> {
        self.schema.table_id(name).ok_or_else(|| Error::NoSuchTable(name.to_string()))
    }

    /// Encode checked values of a table's stored fields (in slot order).
    pub fn encode_values(&self, t: TableId, values: &[Value]) -> Vec<u8> {
        self.layouts[t as usize].encode(&self.schema, values)
    }

    /// Convert a JSON object `{field: value}` into an encoded row of `t`.
    /// Unknown fields are an error; missing fields take their defaults; the
    /// entity-id fields may be given only if they equal `id` (or are omitted).
    pub fn row_from_json(&self, t: TableId, obj: &serde_json::Value, id: Option<EntityId>) -> Result<Vec<u8>> {
        let table = self.schema.table(t);
        let serde_json::Value::Object(map) = obj else {
            return Err(Error::InvalidValue {
                table: table.name.clone(),
                field: "*".into(),
                reason: "component must be a JSON object of fields".into(),
            });
        };
        for k in map.keys() {
            if table.field_index(k).is_none() {
                return Err(Error::NoSuchField { table: table.name.clone(), field: k.clone() });
            }
        }
        let mut values = Vec::with_capacity(table.stored_len());
        for f in &table.fields {
            let given = map.get(&f.name);
            if f.slot().is_none() {
                if let (Some(g), Some(id)) = (given, id) {
                    let v = value::from_json(&f.ty, g, &self.schema).map_err(|reason| Error::InvalidValue {
                        table: table.name.clone(),
                        field: f.name.clone(),
                        reason,
                    })?;
                    if v.as_u64() != Some(id.0) {
                        return Err(Error::InvalidValue {
                            table: table.name.clone(),
                            field: f.name.clone(),
                            reason: format!("is the entity's own id ({id}) and cannot be set to another value"),
                        });
                    }
                }
                continue;
            }
            values.push(match given {
                Some(g) => value::from_json(&f.ty, g, &self.schema).map_err(|reason| Error::InvalidValue {
                    table: table.name.clone(),
                    field: f.name.clone(),
                    reason,
                })?,
                None => f.default.clone(),
            });
        }
        Ok(self.encode_values(t, &values))
    }

    /// JSON object of component `t` of `id` (all declared fields).
    pub fn component_json(&self, id: EntityId, t: TableId) -> Result<serde_json::Value> {
        let table = self.schema.table(t);
        let vals = self.component_values(id, t)?;
        let mut m = serde_json::Map::new();
        for (f, v) in table.fields.iter().zip(&vals) {
            m.insert(f.name.clone(), value::to_json(&f.ty, v, &self.schema));
        }
        Ok(m.into())
    }

    /// JSON of an entity: `{"id", "components": {table: {field: value}}}`.
    pub fn entity_json(&self, id: EntityId) -> Result<serde_json::Value> {
        let tables = self.tables_of(id)?.to_vec();
        let mut comps = serde_json::Map::new();
        for t in tables {
            comps.insert(self.table_name(t), self.component_json(id, t)?);
        }
        Ok(serde_json::json!({ "id": id_json(id), "components": comps }))
    }

    /// The edges of `relation` touching `id` in `dir` (`Out`: `id` is the
    /// source), each with its properties by name — one call instead of a
    /// walk through the relation index.
    pub fn edges(&self, relation: &str, id: EntityId, dir: crate::relation::Direction) -> Result<Vec<Edge>> {
        use crate::relation::Direction;
        let rel = self.schema.relation_id(relation).ok_or_else(|| Error::NoSuchRelation(relation.to_string()))?;
        self.location(id)?;
        let mut out = Vec::new();
        for k in self.relations.edges_of(id) {
            let outgoing = k.from == id;
            let wanted = k.rel == rel
                && match dir {
                    Direction::Out => outgoing,
                    Direction::In => k.to == id,
                    Direction::Both => true,
                };
            if wanted && let Some(p) = self.relations.get(&k) {
                out.push(Edge { from: k.from, to: k.to, props: self.props_json(rel, p) });
            }
        }
        out.sort_by_key(|e| (e.from, e.to));
        out.dedup_by_key(|e| (e.from, e.to));
        Ok(out)
    }

    /// JSON object of an edge's properties.
    pub fn props_json(&self, rel: RelationId, props: &[u8]) -> serde_json::Value {
        let r = self.schema.relation(rel);
        let layout = &self.rel_layouts[rel as usize];
        let mut m = serde_json::Map::new();
        if let Ok(parts) = layout.split(props) {
            for (slot, (f, p)) in r.fields.iter().zip(parts).enumerate() {
                if let Ok(v) = layout.decode_slot(&self.schema, slot, p) {
                    m.insert(f.name.clone(), value::to_json(&f.ty, &v, &self.schema));
                }
            }
        }
        m.into()
    }

    /// Encode relation properties from a JSON object (missing → defaults).
    pub fn props_from_json(&self, rel: RelationId, obj: Option<&serde_json::Value>) -> Result<Vec<u8>> {
        let r = self.schema.relation(rel);
        let empty = serde_json::Map::new();
        let map = match obj {
            None | Some(serde_json::Value::Null) => &empty,
            Some(serde_json::Value::Object(m)) => m,
            Some(_) => {
                return Err(Error::RelationEnd {
                    relation: r.name.clone(),
                    reason: "properties must be a JSON object".into(),
                });
            }
        };
        for k in map.keys() {
            if r.field_index(k).is_none() {
                return Err(Error::NoSuchField { table: format!("relation {}", r.name), field: k.clone() });
            }
        }
        let mut values = Vec::new();
        for f in &r.fields {
            values.push(match map.get(&f.name) {
                Some(g) => value::from_json(&f.ty, g, &self.schema).map_err(|reason| Error::InvalidValue {
                    table: format!("relation {}", r.name),
                    field: f.name.clone(),
                    reason,
                })?,
                None => f.default.clone(),
            });
        }
        Ok(self.rel_layouts[rel as usize].encode(&self.schema, &values))
    }
}

/// JSON form of an entity id (number up to 2^53 - 1, else a string).
/// See [`World::changed_after`].
pub(crate) fn changed_after(
    archetypes: &[Archetype],
    entities: &Entities,
    known_from: u64,
    id: EntityId,
    since: u64,
) -> bool {
    since < known_from
        || entities
            .slot(id)
            .and_then(|s| archetypes[s.archetype as usize].changed.get(s.row as usize))
            .is_some_and(|&c| c > since)
}

pub fn id_json(id: EntityId) -> serde_json::Value {
    if id.0 <= value::JSON_SAFE_INT { id.0.into() } else { id.0.to_string().into() }
}

/// Parse an entity id from JSON (number or decimal string).
pub fn id_from_json(v: &serde_json::Value) -> Option<EntityId> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().map(EntityId),
        serde_json::Value::String(s) => s.parse().ok().map(EntityId),
        _ => None,
    }
}

/// Bytes of `slot` in an encoded row: from `parts` when the row was split,
/// else by its fixed offset.
pub(crate) fn row_part<'r>(layout: &RowLayout, row: &'r [u8], parts: &[&'r [u8]], slot: usize) -> &'r [u8] {
    match (parts.get(slot), layout.slots[slot].fixed) {
        (Some(p), _) => p,
        (None, Some((off, size))) => &row[off..off + size],
        (None, None) => &[],
    }
}

/// A component row: its table and encoded bytes.
pub type TableRow = (TableId, Vec<u8>);

/// Sorted, order-independent state for comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalState {
    pub entities: Vec<(EntityId, Vec<TableRow>)>,
    pub edges: Vec<(EdgeKey, Vec<u8>)>,
}

/// Two distinct mutable elements of a slice.
pub(crate) fn two_mut<T>(items: &mut [T], first: usize, second: usize) -> (&mut T, &mut T) {
    assert_ne!(first, second, "two_mut needs distinct indexes");
    if first < second {
        let (low, high) = items.split_at_mut(second);
        (&mut low[first], &mut high[0])
    } else {
        let (low, high) = items.split_at_mut(first);
        (&mut high[0], &mut low[second])
    }
}
