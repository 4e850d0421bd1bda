//! Bulk spawns: many entities with the same components, column by column.
//!
//! Why a separate path: spawning row by row pays, per entity, an archetype
//! lookup, a move out of the empty archetype, one change-set operation per
//! component and an undo entry. A batch is checked once per column, lands in
//! its archetype with one copy per column, and is logged as one `SpawnMany`
//! operation whose ids are written as runs (fresh ids are consecutive, so
//! usually one run) and whose values are the columns themselves. Replay uses
//! the same placement code, so a batch applies identically on recovery and on
//! replicas.

use std::sync::Arc;

use crate::archetype::{ArchetypeId, Column};
use crate::changeset::SpawnColumn;
use crate::component::{Binding, Component, bind};
use crate::error::{Error, Result};
use crate::id::EntityId;
use crate::schema::TableId;
use crate::schema::{FieldType, Schema};
use crate::value::{self, Value};
use crate::world::World;

/// Most entities one batch may create (the change set counts rows in 32 bits).
pub const MAX_BATCH_ROWS: usize = u32::MAX as usize;

impl World {
    /// Check a batch against the schema: `tables` ascending and known,
    /// one column per stored field in archetype order, each holding
    /// `count` valid values. Returns the batch's archetype. Changes nothing
    /// but the archetype index (an archetype may be created).
    pub(crate) fn check_batch(
        &mut self,
        tables: &[TableId],
        count: usize,
        columns: &[SpawnColumn<'_>],
    ) -> Result<ArchetypeId> {
        let bad = |table: String, field: String, reason: String| Error::InvalidValue { table, field, reason };
        if count > MAX_BATCH_ROWS {
            return Err(bad("*".into(), "*".into(), format!("a batch holds at most {MAX_BATCH_ROWS} entities")));
        }
        // Every entity costs a slot and a row whatever its columns hold: bound
        // that by the memory ceiling (or a hard cap without one), so a short
        // crafted record cannot make replay allocate without limit.
        let per_entity = crate::entities::SLOT_BYTES + 16;
        let room = match self.memory_limit_bytes {
            Some(limit) => limit.saturating_sub(self.data_bytes()),
            None => crate::world::MAX_SLOT_GROWTH_BYTES,
        };
        if count.saturating_mul(per_entity) > room {
            return Err(bad(
                "*".into(),
                "*".into(),
                format!(
                    "a batch of {count} entities needs at least {} bytes, more than the {room} bytes allowed; split it",
                    count.saturating_mul(per_entity)
                ),
            ));
        }
        for (i, &t) in tables.iter().enumerate() {
            if t as usize >= self.schema.tables.len() {
                return Err(Error::NoSuchTable(format!("#{t}")));
            }
            if i > 0 && tables[i - 1] >= t {
                return Err(bad(
                    self.table_name(t),
                    "*".into(),
                    "a batch names each component once, tables in ascending id order".into(),
                ));
            }
        }
        let mut col = 0;
        for &t in tables {
            let layout = &self.layouts[t as usize];
            for (slot, s) in layout.slots.iter().enumerate() {
                let field = || self.schema.table(t).stored_field(slot).name.clone();
                let Some(c) = columns.get(col) else {
                    return Err(bad(self.table_name(t), field(), "the batch has no column for this field".into()));
                };
                col += 1;
                match (s.fixed, c) {
                    (Some((_, n)), SpawnColumn::Fixed { size, bytes }) if *size == n && bytes.len() == count * n => {}
                    (None, SpawnColumn::Var(items)) if items.len() == count => {}
                    (Some((_, n)), _) => {
                        return Err(bad(
                            self.table_name(t),
                            field(),
                            format!("expected a fixed column of {count} values of {n} bytes"),
                        ));
                    }
                    (None, _) => {
                        return Err(bad(
                            self.table_name(t),
                            field(),
                            format!("expected a variable-length column of {count} values"),
                        ));
                    }
                }
                if s.needs_check || s.fixed.is_none() {
                    for row in 0..count {
                        self.check_slot_bytes(t, slot, c.row(row)).map_err(|e| annotate_row(e, row))?;
                    }
                }
            }
        }
        if col != columns.len() {
            return Err(bad(
                "*".into(),
                "*".into(),
                format!("the batch has {} columns, its components have {col} stored fields", columns.len()),
            ));
        }
        Ok(self.archetype_for_tables(tables))
    }

    /// Append checked rows for the allocated `ids` to archetype `a`.
    pub(crate) fn place_batch(&mut self, a: ArchetypeId, ids: &[EntityId], columns: &[SpawnColumn<'_>]) {
        let arch = &mut self.archetypes[a as usize];
        for (c, data) in arch.columns.iter_mut().zip(columns) {
            match (c, data) {
                (Column::Fixed(f), SpawnColumn::Fixed { bytes, .. }) => f.extend(bytes),
                (c, data) => {
                    for i in 0..ids.len() {
                        c.push(data.row(i));
                    }
                }
            }
        }
        self.place_batch_ids(a, ids);
    }

    /// Like [`World::place_batch`], with owned columns: moved in when the
    /// archetype is empty, appended otherwise.
    pub(crate) fn place_batch_owned(&mut self, a: ArchetypeId, ids: &[EntityId], columns: Vec<Column>) {
        let arch = &mut self.archetypes[a as usize];
        for (c, data) in arch.columns.iter_mut().zip(columns) {
            if c.is_empty() {
                *c = data;
            } else {
                c.append(&data);
            }
        }
        self.place_batch_ids(a, ids);
    }

    /// The rows' entities and slots, and their foreign-key counts (columns
    /// already hold the rows).
    fn place_batch_ids(&mut self, a: ArchetypeId, ids: &[EntityId]) {
        let arch = &mut self.archetypes[a as usize];
        let start = arch.entities.len();
        arch.entities.extend_from_slice(ids);
        arch.changed.resize(arch.entities.len(), self.seq + 1);
        for (k, &id) in ids.iter().enumerate() {
            if let Some(s) = self.entities.slot_mut(id) {
                s.archetype = a;
                s.row = (start + k) as u32;
            }
        }
        let tables = self.archetypes[a as usize].tables.clone();
        for t in tables {
            if self.fk_slots[t as usize].is_empty() {
                continue;
            }
            let cols = self.archetypes[a as usize].table_columns(t).unwrap_or(0..0);
            for i in 0..self.fk_slots[t as usize].len() {
                let slot = self.fk_slots[t as usize][i];
                let c = cols.start + slot;
                for k in 0..ids.len() {
                    let bytes = self.archetypes[a as usize].columns[c].get(start + k).to_vec();
                    self.fk_adjust(t, slot, &bytes, 1);
                }
            }
        }
        if self.archetypes[a as usize].tables.iter().any(|&t| self.table_indexed(t)) {
            for &id in ids {
                self.index_entity(id, true);
            }
        }
    }

    /// Replay a `SpawnMany` already checked by [`World::check_batch`] (which
    /// gave archetype `a`): the logged ids, taken like explicit ids.
    pub(crate) fn apply_batch(&mut self, a: ArchetypeId, ids: &[EntityId], columns: &[SpawnColumn<'_>]) -> Result<()> {
        for &id in ids {
            self.alloc_id_at(id)?;
        }
        self.place_batch(a, ids, columns);
        Ok(())
    }
}

/// Say which row of a batch a value error is about.
fn annotate_row(e: Error, row: usize) -> Error {
    match e {
        Error::InvalidValue { table, field, reason } => {
            Error::InvalidValue { table, field, reason: format!("batch row {row}: {reason}") }
        }
        e => e,
    }
}

/// Builds a batch column by column from rows given as field values (the
/// untyped path) or as encoded field bytes (the typed path). Its columns are
/// real archetype columns: spawned into an empty archetype they move in
/// without a copy.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    tables: Vec<TableId>,
    /// (table, stored slot) of each column.
    fields: Vec<(TableId, usize)>,
    cols: Vec<Column>,
    rows: usize,
    /// Parent tables the caller did not name: per column, the default
    /// value's bytes, appended to every row by `end_row`.
    defaults: Vec<(usize, Vec<u8>)>,
    /// A value was given for a column that does not exist.
    bad_column: Option<usize>,
}

impl BatchBuilder {
    /// A batch of entities with components `tables` (any order, each once).
    /// A `parent_table` they need and do not name joins the batch, filled
    /// with its defaults on every row.
    pub fn new(world: &World, tables: &[TableId]) -> Result<BatchBuilder> {
        for &t in tables {
            if t as usize >= world.schema.tables.len() {
                return Err(Error::NoSuchTable(format!("#{t}")));
            }
        }
        let mut parents = Vec::new();
        for &t in tables {
            let mut p = world.schema.table(t).parent;
            while let Some(pt) = p {
                if tables.contains(&pt) || parents.contains(&pt) {
                    break;
                }
                parents.push(pt);
                p = world.schema.table(pt).parent;
            }
        }
        let mut b = BatchBuilder::exactly(world, &[tables, &parents].concat())?;
        for pt in parents {
            let row = world.row_from_json(pt, &serde_json::Value::Object(serde_json::Map::new()), None)?;
            let layout = &world.layouts[pt as usize];
            let parts = if layout.var_count == 0 { Vec::new() } else { layout.split(&row).unwrap_or_default() };
            for slot in 0..layout.slots.len() {
                if let Some(col) = b.column_of(pt, slot) {
                    b.defaults.push((col, crate::world::row_part(layout, &row, &parts, slot).to_vec()));
                }
            }
        }
        Ok(b)
    }

    /// A batch of exactly `tables`, no parents added.
    fn exactly(world: &World, tables: &[TableId]) -> Result<BatchBuilder> {
        let mut sorted = tables.to_vec();
        sorted.sort_unstable();
        for w in sorted.windows(2) {
            if w[0] == w[1] {
                return Err(Error::InvalidValue {
                    table: world.table_name(w[0]),
                    field: "*".into(),
                    reason: "the same component is given twice".into(),
                });
            }
        }
        let mut fields = Vec::new();
        let mut cols = Vec::new();
        for &t in &sorted {
            if t as usize >= world.schema.tables.len() {
                return Err(Error::NoSuchTable(format!("#{t}")));
            }
            for (slot, s) in world.layouts[t as usize].slots.iter().enumerate() {
                fields.push((t, slot));
                cols.push(Column::new(s.fixed.map(|(_, n)| n)));
            }
        }
        Ok(BatchBuilder { tables: sorted, fields, cols, rows: 0, defaults: Vec::new(), bad_column: None })
    }

    /// The batch's tables, ascending.
    pub fn tables(&self) -> &[TableId] {
        &self.tables
    }

    /// Rows added so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Reserve room for `rows` more rows.
    pub fn reserve(&mut self, rows: usize) {
        for c in &mut self.cols {
            c.reserve(rows);
        }
    }

    /// Column index of (`table`, `slot`).
    pub fn column_of(&self, table: TableId, slot: usize) -> Option<usize> {
        self.fields.iter().position(|&f| f == (table, slot))
    }

    /// Append one zeroed value to fixed column `col` and return it to be
    /// filled (`None` for a variable-length column).
    pub fn fixed_slot(&mut self, col: usize) -> Option<&mut [u8]> {
        match self.cols.get_mut(col) {
            Some(Column::Fixed(c)) => Some(c.push_zeroed()),
            Some(Column::Var(_)) => None,
            None => {
                self.bad_column = Some(col);
                None
            }
        }
    }

    /// Append a value's bytes to column `col` (a fixed column's value must
    /// be exactly its size; [`BatchBuilder::end_row`] checks).
    pub fn push_field(&mut self, col: usize, bytes: &[u8]) {
        match self.cols.get_mut(col) {
            Some(Column::Fixed(c)) if bytes.len() == c.elem_size() => c.push(bytes),
            // Leave the column one short: end_row reports it.
            Some(Column::Fixed(_)) => {}
            Some(c @ Column::Var(_)) => c.push(bytes),
            None => self.bad_column = Some(col),
        }
    }

    /// Close a row appended through [`BatchBuilder::fixed_slot`] and
    /// [`BatchBuilder::push_field`]. Fails (dropping the partial row) when
    /// a column did not get exactly one value.
    pub fn end_row(&mut self) -> Result<()> {
        let rows = self.rows + 1;
        if let Some(col) = self.bad_column.take() {
            self.truncate(self.rows);
            return Err(Error::InvalidValue {
                table: "*".into(),
                field: format!("#{col}"),
                reason: format!("the batch has no column {col} (it has {})", self.cols.len()),
            });
        }
        for i in 0..self.defaults.len() {
            let (col, _) = self.defaults[i];
            if self.cols[col].len() < rows {
                let bytes = std::mem::take(&mut self.defaults[i].1);
                self.cols[col].push(&bytes);
                self.defaults[i].1 = bytes;
            }
        }
        if let Some(i) = self.cols.iter().position(|c| c.len() != rows) {
            self.truncate(self.rows);
            let (t, slot) = self.fields[i];
            return Err(Error::InvalidValue {
                table: format!("#{t}"),
                field: format!("#{slot}"),
                reason: "a batch row did not give this field exactly one value of its size".into(),
            });
        }
        self.rows = rows;
        Ok(())
    }

    fn truncate(&mut self, rows: usize) {
        for c in &mut self.cols {
            c.truncate(rows);
        }
    }

    /// Add one row from field values: for each table of the batch, its
    /// stored fields' values in slot order. Checked; a bad row adds nothing.
    pub fn push_values(&mut self, world: &World, row: &[(TableId, &[Value])]) -> Result<()> {
        let implicit: Vec<TableId> = self.defaults.iter().map(|&(c, _)| self.fields[c].0).collect();
        let named = self.tables.iter().filter(|t| !implicit.contains(t));
        if row.len() != named.clone().count() || !named.clone().all(|t| row.iter().any(|(x, _)| x == t)) {
            return Err(Error::InvalidValue {
                table: "*".into(),
                field: "*".into(),
                reason: "a batch row must give values for exactly the batch's components".into(),
            });
        }
        let schema = &world.schema;
        let mut encoded = Vec::with_capacity(self.fields.len());
        for &(t, slot) in &self.fields {
            if implicit.contains(&t) {
                encoded.push(None);
                continue;
            }
            let table = schema.table(t);
            let values = row.iter().find(|(x, _)| *x == t).map_or(&[][..], |(_, v)| *v);
            if values.len() != table.stored_len() {
                return Err(Error::InvalidValue {
                    table: table.name.clone(),
                    field: "*".into(),
                    reason: format!("expected {} values, got {}", table.stored_len(), values.len()),
                });
            }
            let f = table.stored_field(slot);
            let v = &values[slot];
            value::check(&f.ty, v, schema).map_err(|reason| Error::InvalidValue {
                table: table.name.clone(),
                field: f.name.clone(),
                reason,
            })?;
            encoded.push(Some(match f.size {
                Some(n) => {
                    let mut b = vec![0u8; n];
                    value::encode_fixed(&f.ty, v, schema, &mut b);
                    b
                }
                None => value::encode_var(v),
            }));
        }
        for (i, b) in encoded.iter().enumerate() {
            if let Some(b) = b {
                self.push_field(i, b);
            }
        }
        self.end_row()
    }

    /// The columns, borrowed, for [`World::spawn_batch`].
    pub fn columns(&self) -> Vec<SpawnColumn<'_>> {
        self.cols
            .iter()
            .map(|c| match c {
                Column::Fixed(f) => SpawnColumn::Fixed { size: f.elem_size(), bytes: f.bytes() },
                Column::Var(v) => SpawnColumn::Var((0..v.len()).map(|i| v.get(i)).collect()),
            })
            .collect()
    }

    /// Spawn the batch in `world`'s open transaction (its columns move into
    /// an empty archetype without a copy).
    pub fn spawn(self, world: &mut World) -> Result<Vec<EntityId>> {
        world.spawn_built(self)
    }

    pub(crate) fn into_parts(self) -> (Vec<TableId>, usize, Vec<Column>) {
        (self.tables, self.rows, self.cols)
    }
}

/// Components spawned together: a tuple of `#[derive(Component)]` structs.
pub trait Bundle {
    /// Each component's binding, in tuple order.
    fn bindings(world: &World) -> Result<Vec<Arc<Binding>>>;
    /// Append this bundle's fields to the batch's columns (not the row end).
    fn write(&self, b: &mut BatchBuilder, plan: &BundlePlan, schema: &Schema) -> Result<()>;
}

/// Where each component field of a bundle goes in a batch.
#[derive(Debug, Clone)]
pub struct BundlePlan {
    /// Per component, per struct field: (batch column, stored field type).
    fields: Vec<Vec<(usize, FieldType)>>,
}

/// Write field `i` of component `c` into its column: directly when the
/// field type can, else through its checked `Value`.
fn write_component<C: Component>(
    c: &C,
    fields: &[(usize, FieldType)],
    b: &mut BatchBuilder,
    schema: &Schema,
) -> Result<()> {
    let mut values: Option<Vec<Value>> = None;
    for (i, (col, ty)) in fields.iter().enumerate() {
        if let Some(slot) = b.fixed_slot(*col)
            && c.write_field(i, slot)
        {
            continue;
        }
        let vals = values.get_or_insert_with(|| c.to_values());
        let v = &vals[i];
        value::check(ty, v, schema).map_err(|reason| Error::InvalidValue {
            table: C::TABLE.to_string(),
            field: C::fields().get(i).map_or_else(|| format!("#{i}"), |f| f.name.to_string()),
            reason,
        })?;
        match b.fixed_slot_last(*col) {
            Some(out) => value::encode_fixed(ty, v, schema, out),
            None => b.push_field(*col, &value::encode_var(v)),
        }
    }
    Ok(())
}

macro_rules! tuple_bundle {
    ($($c:ident $i:tt),+) => {
        impl<$($c: Component),+> Bundle for ($($c,)+) {
            fn bindings(world: &World) -> Result<Vec<Arc<Binding>>> {
                Ok(vec![$(bind::<$c>(world)?),+])
            }
            fn write(&self, b: &mut BatchBuilder, plan: &BundlePlan, schema: &Schema) -> Result<()> {
                $( write_component(&self.$i, &plan.fields[$i], b, schema)?; )+
                Ok(())
            }
        }
    };
}
tuple_bundle!(A 0);
tuple_bundle!(A 0, B 1);
tuple_bundle!(A 0, B 1, C 2);
tuple_bundle!(A 0, B 1, C 2, D 3);
tuple_bundle!(A 0, B 1, C 2, D 3, E 4);
tuple_bundle!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_bundle!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_bundle!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

impl BatchBuilder {
    /// The last value of fixed column `col` (just appended by
    /// [`BatchBuilder::fixed_slot`]), to be overwritten.
    fn fixed_slot_last(&mut self, col: usize) -> Option<&mut [u8]> {
        match &mut self.cols[col] {
            Column::Fixed(c) if !c.is_empty() => {
                let last = c.len() - 1;
                Some(c.get_mut(last))
            }
            _ => None,
        }
    }

    /// A batch for bundle `B`: its components' tables plus every
    /// `parent_table` they need and do not name (filled with defaults).
    pub fn for_bundle<B: Bundle>(world: &World) -> Result<(BatchBuilder, BundlePlan)> {
        let bindings = B::bindings(world)?;
        let tables: Vec<TableId> = bindings.iter().map(|b| b.table).collect();
        let builder = BatchBuilder::new(world, &tables)?;
        let fields = bindings
            .iter()
            .map(|b| {
                let table = world.schema.table(b.table);
                b.slots
                    .iter()
                    .map(|&s| (builder.column_of(b.table, s).unwrap_or(usize::MAX), table.stored_field(s).ty.clone()))
                    .collect()
            })
            .collect();
        Ok((builder, BundlePlan { fields }))
    }

    /// Append one bundle as a row (all or nothing).
    pub fn push_bundle<B: Bundle>(&mut self, bundle: &B, plan: &BundlePlan, schema: &Schema) -> Result<()> {
        let r = bundle.write(self, plan, schema);
        if let Err(e) = r {
            self.truncate(self.rows);
            return Err(e);
        }
        self.end_row()
    }
}

impl World {
    /// Spawn one entity per bundle (a tuple of typed components), in one
    /// `SpawnMany`; `parent_table`s the bundle leaves out are added with
    /// their defaults. All or nothing. Returns the ids in order.
    pub fn spawn_bundles<B: Bundle>(&mut self, bundles: impl IntoIterator<Item = B>) -> Result<Vec<EntityId>> {
        let (mut b, plan) = BatchBuilder::for_bundle::<B>(self)?;
        let iter = bundles.into_iter();
        b.reserve(iter.size_hint().0);
        let schema = self.schema.clone();
        for bundle in iter {
            b.push_bundle(&bundle, &plan, &schema)?;
        }
        b.spawn(self)
    }
}
