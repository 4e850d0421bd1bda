//! Archetypes: all entities with exactly the same set of components, stored
//! as one column per stored field, so iterating a component set walks dense
//! arrays.

mod column;

pub use column::{Column, FixedColumn, VarColumn};

use rustc_hash::FxHashMap;

use crate::id::EntityId;
use crate::schema::TableId;

/// Dense archetype id; archetype 0 holds entities with no components.
pub type ArchetypeId = u32;

/// One archetype: a component set and the rows of the entities that have it.
#[derive(Debug, Clone)]
pub struct Archetype {
    pub id: ArchetypeId,
    /// Component tables, sorted.
    pub tables: Vec<TableId>,
    /// Row -> entity.
    pub entities: Vec<EntityId>,
    /// Row -> sequence number of the last commit that changed the entity
    /// (kept beside the rows so a system's writes mark them sequentially).
    pub changed: Vec<u64>,
    /// Per column: whether the open transaction holds an image of it.
    pub(crate) captured: Vec<bool>,
    /// One column per stored field of each table, tables in `tables` order.
    pub columns: Vec<Column>,
    /// First column of each table, parallel to `tables`.
    col_start: Vec<u32>,
    /// Whether every table's `parent_table` is also in the set.
    pub parents_ok: bool,
    pub(crate) edge_add: FxHashMap<TableId, ArchetypeId>,
    pub(crate) edge_remove: FxHashMap<TableId, ArchetypeId>,
}

impl Archetype {
    pub(crate) fn new(
        id: ArchetypeId,
        tables: Vec<TableId>,
        field_sizes: &dyn Fn(TableId) -> Vec<Option<usize>>,
        parent_of: &dyn Fn(TableId) -> Option<TableId>,
    ) -> Archetype {
        let mut columns = Vec::new();
        let mut col_start = Vec::with_capacity(tables.len());
        for &t in &tables {
            col_start.push(columns.len() as u32);
            columns.extend(field_sizes(t).into_iter().map(Column::new));
        }
        let parents_ok = tables.iter().all(|&t| parent_of(t).is_none_or(|p| tables.binary_search(&p).is_ok()));
        Archetype {
            id,
            tables,
            entities: Vec::new(),
            changed: Vec::new(),
            captured: vec![false; columns.len()],
            columns,
            col_start,
            parents_ok,
            edge_add: FxHashMap::default(),
            edge_remove: FxHashMap::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.entities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    pub fn has(&self, t: TableId) -> bool {
        self.tables.binary_search(&t).is_ok()
    }

    /// Whether the archetype holds every table in `ts`.
    pub fn has_all(&self, ts: &[TableId]) -> bool {
        ts.iter().all(|&t| self.has(t))
    }

    /// Column index of `slot` of table `t`, if the archetype holds `t`.
    pub fn column_index(&self, t: TableId, slot: usize) -> Option<usize> {
        let i = self.tables.binary_search(&t).ok()?;
        Some(self.col_start[i] as usize + slot)
    }

    /// Columns of table `t`.
    pub fn table_columns(&self, t: TableId) -> Option<std::ops::Range<usize>> {
        let i = self.tables.binary_search(&t).ok()?;
        let start = self.col_start[i] as usize;
        let end = self.col_start.get(i + 1).map_or(self.columns.len(), |&e| e as usize);
        Some(start..end)
    }

    /// Append a row; columns must then be filled by the caller.
    pub(crate) fn push_entity(&mut self, e: EntityId, seq: u64) -> usize {
        self.entities.push(e);
        self.changed.push(seq);
        self.entities.len() - 1
    }

    /// Remove a row from every column. Returns the entity moved into `row`.
    pub(crate) fn swap_remove(&mut self, row: usize) -> Option<EntityId> {
        for c in &mut self.columns {
            c.swap_remove(row);
        }
        self.entities.swap_remove(row);
        self.changed.swap_remove(row);
        self.entities.get(row).copied()
    }

    /// Bytes of live data in this archetype.
    pub fn data_bytes(&self) -> usize {
        self.columns.iter().map(Column::data_bytes).sum::<usize>() + self.entities.len() * 8
    }
}
