//! Secondary indexes on stored fields: ordered sets of (value, entity).
//!
//! Why derived and in memory: an index is a function of the rows, so it is
//! never logged or snapshotted — every primitive that changes a stored value
//! (add or remove a component, set a field, bulk placement, in-place column
//! writes when they are diffed, and the rollback of each) updates it in the
//! same step, recovery rebuilds it by replaying through those primitives, and
//! `check_integrity` rebuilds it from the columns and compares. A field
//! declared `indexed = true` gets one when its type is orderable (numbers,
//! bools, enums, strings, bytes); queries use it for `eq`, `in` and range
//! filters (see `query.rs`), and `explain` names it.

use crate::postings::Postings;
use std::cmp::Ordering;

use crate::error::Error;
use crate::id::EntityId;
use crate::query::{CmpOp, cmp_values};
use crate::schema::{FieldType, IndexKind, TableId};
use crate::spatial::{Cell, Grid, Point, point_from_bytes, point_of, spatial_dims};
use crate::value::Value;
use crate::world::World;

/// A value ordered like query comparisons order it.
#[derive(Debug, Clone)]
pub struct Key(pub Value);

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        cmp_values(&self.0, &other.0)
    }
}

/// One index: every (value, entity) of one stored field.
#[derive(Debug, Clone)]
pub struct FieldIndex {
    pub table: TableId,
    pub slot: usize,
    /// Two entities may not hold the same value (checked at commit).
    pub unique: bool,
    /// Ordered entries (every kind but spatial).
    pub(crate) entries: Postings,
    /// The grid of a spatial index (then `entries` stays empty).
    pub(crate) spatial: Option<Grid>,
}

impl FieldIndex {
    /// Entities whose value satisfies `op` against `values` (as compiled
    /// for a filter: one value, two for `between`, a sorted list for `in`),
    /// in index order.
    pub(crate) fn lookup(&self, op: CmpOp, values: &[Value]) -> Option<Vec<EntityId>> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        if self.spatial.is_some() {
            return None;
        }
        let k = |v: &Value| Key(v.clone());
        let mut out = Vec::new();
        match op {
            CmpOp::Eq => {
                if let Some(ids) = self.entries.get(&k(&values[0])) {
                    out = ids.iter().collect();
                }
            }
            CmpOp::In => {
                for v in values {
                    self.entries.collect_range(k(v)..=k(v), &mut out);
                }
            }
            CmpOp::Lt => self.entries.collect_range((Unbounded, Excluded(k(&values[0]))), &mut out),
            CmpOp::Le => self.entries.collect_range((Unbounded, Included(k(&values[0]))), &mut out),
            CmpOp::Gt => self.entries.collect_range((Excluded(k(&values[0])), Unbounded), &mut out),
            CmpOp::Ge => self.entries.collect_range((Included(k(&values[0])), Unbounded), &mut out),
            CmpOp::Between => {
                if cmp_values(&values[0], &values[1]) != Ordering::Greater {
                    self.entries.collect_range(k(&values[0])..=k(&values[1]), &mut out);
                }
            }
            CmpOp::Ne => return None,
        }
        Some(out)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.spatial.as_ref().map_or(self.entries.len(), Grid::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Memory the index holds, estimated (counted against the memory
    /// ceiling with the data).
    pub fn heap_bytes(&self) -> usize {
        match &self.spatial {
            Some(g) => g.heap_bytes(),
            None => self.entries.heap_bytes(),
        }
    }

    /// The grid, when this is a spatial index.
    pub fn grid(&self) -> Option<&Grid> {
        self.spatial.as_ref()
    }
}

/// Whether a field of this type can carry an index of this kind.
pub(crate) fn indexable(kind: IndexKind, ty: &FieldType) -> bool {
    if kind == IndexKind::Spatial { spatial_dims(ty).is_some() } else { crate::query::orderable(ty) }
}

/// An empty index of `kind` on stored field (`table`, `slot`).
pub(crate) fn empty_index(table: TableId, slot: usize, kind: IndexKind, f: &crate::schema::Field) -> FieldIndex {
    FieldIndex {
        table,
        slot,
        unique: kind == IndexKind::Unique,
        entries: Postings::default(),
        spatial: (kind == IndexKind::Spatial).then(|| {
            Grid::new(spatial_dims(&f.ty).unwrap_or(3), f.cell_size.unwrap_or(crate::spatial::DEFAULT_CELL_SIZE))
        }),
    }
}

/// What an index should hold, built from the columns (for comparison).
#[derive(Debug, PartialEq)]
pub(crate) enum Built {
    Ordered(Postings),
    /// (entity, cell), sorted.
    Spatial(Vec<(EntityId, Cell)>),
}

impl World {
    /// The indexes of this world (one per indexed stored field).
    pub fn indexes(&self) -> &[FieldIndex] {
        &self.indexes
    }

    /// The index on stored field (`t`, `slot`), if any.
    pub(crate) fn index_on(&self, t: TableId, slot: usize) -> Option<usize> {
        self.index_of.get(t as usize).and_then(|s| s.get(slot)).copied().flatten()
    }

    /// Whether table `t` has any indexed field (a cheap test for hot paths).
    #[inline]
    pub(crate) fn table_indexed(&self, t: TableId) -> bool {
        self.indexed_tables.get(t as usize).copied().unwrap_or(false)
    }

    /// Add (`insert`) or remove the entry of `id` for the value `bytes` of
    /// stored field (`t`, `slot`), when that field is indexed.
    pub(crate) fn index_entry(&mut self, t: TableId, slot: usize, id: EntityId, bytes: &[u8], insert: bool) {
        let Some(i) = self.index_on(t, slot) else {
            return;
        };
        if let Some(g) = self.indexes[i].spatial.as_mut() {
            let c = point_from_bytes(&self.layouts[t as usize].slots[slot].ty, bytes).and_then(|p| g.cell_of(&p));
            if insert {
                g.add(id, c);
            } else {
                g.remove(id, c);
            }
            return;
        }
        let Ok(v) = self.layouts[t as usize].decode_slot(&self.schema, slot, bytes) else {
            return;
        };
        let k = Key(v);
        if insert {
            // A unique value is checked when the transaction commits (a
            // transaction may swap two values through a moment of overlap).
            if self.indexes[i].unique
                && !self.undoing
                && let Some(st) = self.txn.as_deref_mut()
            {
                st.unique_checks.push((i, k.clone()));
            }
            self.indexes[i].entries.insert(k, id);
        } else {
            self.indexes[i].entries.remove(&k, id);
        }
    }

    /// The value of `id`'s stored field (`t`, `slot`) changed from `old` to
    /// `new`: move its entry (a spatial index re-files it only when it
    /// changes cell, decoding the point straight from the bytes).
    pub(crate) fn index_move(&mut self, t: TableId, slot: usize, id: EntityId, old: &[u8], new: &[u8]) {
        let Some(i) = self.index_on(t, slot) else {
            return;
        };
        if let Some(g) = self.indexes[i].spatial.as_mut() {
            let ty = &self.layouts[t as usize].slots[slot].ty;
            let cell = |b: &[u8]| point_from_bytes(ty, b).and_then(|p| g.cell_of(&p));
            let (from, to) = (cell(old), cell(new));
            g.moved(id, from, to);
            return;
        }
        self.index_entry(t, slot, id, old, false);
        self.index_entry(t, slot, id, new, true);
    }

    /// The point entity `id` holds in stored field (`t`, `slot`), read
    /// from its column (what spatial lookups check distances against).
    pub(crate) fn point_at(&self, t: TableId, slot: usize, id: EntityId) -> Option<Point> {
        point_from_bytes(&self.layouts[t as usize].slots[slot].ty, self.field_bytes(id, t, slot).ok()?)
    }

    /// Index entries of a whole encoded row of `t`.
    pub(crate) fn index_row(&mut self, t: TableId, id: EntityId, row: &[u8], parts: &[&[u8]], insert: bool) {
        if !self.table_indexed(t) {
            return;
        }
        for slot in 0..self.layouts[t as usize].slots.len() {
            if self.index_on(t, slot).is_some() {
                let b = crate::world::row_part(&self.layouts[t as usize], row, parts, slot).to_vec();
                self.index_entry(t, slot, id, &b, insert);
            }
        }
    }

    /// Index entries of every indexed field of `id`'s row in its archetype.
    pub(crate) fn index_entity(&mut self, id: EntityId, insert: bool) {
        let Ok((a, r)) = self.location(id) else {
            return;
        };
        for ti in 0..self.archetypes[a as usize].tables.len() {
            let t = self.archetypes[a as usize].tables[ti];
            if !self.table_indexed(t) {
                continue;
            }
            for slot in 0..self.layouts[t as usize].slots.len() {
                if self.index_on(t, slot).is_some()
                    && let Some(c) = self.archetypes[a as usize].column_index(t, slot)
                {
                    let b = self.archetypes[a as usize].columns[c].get(r).to_vec();
                    self.index_entry(t, slot, id, &b, insert);
                }
            }
        }
    }

    /// Entities whose stored field (`t`, `slot`) equals `v`, through its
    /// ordered index; `None` when the field has none (or the open
    /// transaction has in-place writes the index does not show yet).
    pub fn find_eq(&self, t: TableId, slot: usize, v: &Value) -> Option<Vec<EntityId>> {
        if self.txn.as_ref().is_some_and(|s| s.has_captures()) {
            return None;
        }
        self.indexes[self.index_on(t, slot)?].lookup(CmpOp::Eq, std::slice::from_ref(v))
    }

    /// The error for unique index `ix` holding `k` twice (table, field,
    /// value as JSON).
    fn unique_error(&self, ix: &FieldIndex, k: &Key) -> Error {
        let t = self.schema.table(ix.table);
        let f = t.stored_field(ix.slot);
        Error::UniqueViolation {
            table: t.name.clone(),
            field: f.name.clone(),
            value: crate::value::to_json(&f.ty, &k.0, &self.schema).to_string(),
        }
    }

    /// A value some unique index holds for two entities, if any: for data
    /// loaded or rewritten in bulk, which no commit checked.
    pub(crate) fn unique_duplicate(&self) -> Option<Error> {
        self.indexes
            .iter()
            .filter(|ix| ix.unique)
            .find_map(|ix| ix.entries.iter().find(|(_, ids)| ids.len() > 1).map(|(k, _)| self.unique_error(ix, k)))
    }

    /// The first value a unique index holds twice among those this
    /// transaction wrote.
    pub(crate) fn unique_violation(&self, checks: &[(usize, Key)]) -> Option<Error> {
        checks.iter().find_map(|(i, k)| {
            let ix = &self.indexes[*i];
            (ix.entries.get(k).map_or(0, crate::postings::Ids::len) > 1).then(|| self.unique_error(ix, k))
        })
    }

    /// Every index as it should be, built from the columns.
    pub(crate) fn built_indexes(&self) -> Vec<Built> {
        let mut out: Vec<Built> =
            self.indexes
                .iter()
                .map(|ix| {
                    if ix.spatial.is_some() { Built::Spatial(Vec::new()) } else { Built::Ordered(Postings::default()) }
                })
                .collect();
        for arch in &self.archetypes {
            for (i, ix) in self.indexes.iter().enumerate() {
                let Some(c) = arch.column_index(ix.table, ix.slot) else {
                    continue;
                };
                for (row, &id) in arch.entities.iter().enumerate() {
                    let Ok(v) =
                        self.layouts[ix.table as usize].decode_slot(&self.schema, ix.slot, arch.columns[c].get(row))
                    else {
                        continue;
                    };
                    match &mut out[i] {
                        Built::Ordered(set) => {
                            set.insert(Key(v), id);
                        }
                        Built::Spatial(pts) => {
                            if let (Some(p), Some(g)) = (point_of(&v), ix.spatial.as_ref())
                                && let Some(c) = g.cell_of(&p)
                            {
                                pts.push((id, c));
                            }
                        }
                    }
                }
            }
        }
        for b in &mut out {
            if let Built::Spatial(pts) = b {
                pts.sort_unstable();
            }
        }
        out
    }

    /// What index `ix` holds, in the form [`World::built_indexes`] gives.
    fn held(ix: &FieldIndex) -> Built {
        match &ix.spatial {
            Some(g) => {
                let mut pts: Vec<(EntityId, Cell)> = g.entries().map(|(c, id)| (id, c)).collect();
                pts.sort_unstable();
                Built::Spatial(pts)
            }
            None => Built::Ordered(ix.entries.clone()),
        }
    }

    /// Rebuild every index from the columns (after a bulk load).
    pub fn rebuild_indexes(&mut self) {
        let built = self.built_indexes();
        for (ix, b) in self.indexes.iter_mut().zip(built) {
            match b {
                Built::Ordered(entries) => ix.entries = entries,
                Built::Spatial(pts) => {
                    if let Some(g) = ix.spatial.as_mut() {
                        *g = Grid::new(g.dims(), g.cell_size());
                        for (id, c) in pts {
                            g.add(id, Some(c));
                        }
                    }
                }
            }
        }
    }

    /// Indexes that disagree with the columns (for `check_integrity`).
    pub(crate) fn index_problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self.unique_duplicate().map(|e| e.to_string()).into_iter().collect();
        let built = self.built_indexes();
        problems.extend(self.indexes.iter().zip(built).filter(|(ix, b)| Self::held(ix) != *b).map(|(ix, b)| {
            let t = self.schema.table(ix.table);
            let n = match &b {
                Built::Ordered(s) => s.len(),
                Built::Spatial(p) => p.len(),
            };
            format!(
                "index on {}.{} holds {} entries, the columns give {} (or other values)",
                t.name,
                t.stored_field(ix.slot).name,
                ix.len(),
                n
            )
        }));
        problems
    }
}
