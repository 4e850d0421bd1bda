//! Change sets by name: what a commit did, with table, field and relation
//! names and decoded values instead of dense ids and bytes.
//!
//! The encoded form ([`crate::ChangeSet`]) is what the log stores and
//! replicas apply; this is the form people and tools read (a delta shown to a
//! client, a commit printed by a CLI, a test asserting what a system did).
//! Bulk operations are expanded: a `SpawnMany` becomes one `created` and one
//! `component_added` per entity and component, a `SetRun` one `field_set`
//! per entity. Serialised with `serde`, each change is an object tagged by
//! `"op"`; entity ids are the same 64-bit numbers as everywhere else.

use serde::Serialize;

use crate::changeset::{ChangeSet, Op, SpawnColumn};
use crate::error::{Error, Result};
use crate::id::EntityId;
use crate::schema::TableId;
use crate::value;
use crate::world::World;

/// One change, by name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    Created {
        entity: EntityId,
    },
    Deleted {
        entity: EntityId,
    },
    ComponentAdded {
        entity: EntityId,
        table: String,
        /// `{field: value}` for every declared field.
        fields: serde_json::Value,
    },
    ComponentRemoved {
        entity: EntityId,
        table: String,
    },
    FieldSet {
        entity: EntityId,
        table: String,
        field: String,
        value: serde_json::Value,
    },
    Linked {
        relation: String,
        from: EntityId,
        to: EntityId,
        properties: serde_json::Value,
    },
    Unlinked {
        relation: String,
        from: EntityId,
        to: EntityId,
    },
    /// The schema was migrated (the migration's TOML).
    Migrated {
        migration: String,
    },
}

impl World {
    /// `cs` by name, against this world's schema (the schema the change set
    /// was written with). Fails on a change set that does not fit it.
    pub fn describe_changes(&self, cs: &ChangeSet) -> Result<Vec<Change>> {
        let mut out = Vec::with_capacity(cs.len());
        for (i, op) in cs.iter().enumerate() {
            let op = op.map_err(|e| bad(i, &e.to_string()))?;
            match op {
                Op::CreateEntity(entity) => out.push(Change::Created { entity }),
                Op::DeleteEntity(entity) => out.push(Change::Deleted { entity }),
                Op::AddComponent { id, table, row } => {
                    let fields = self.row_json(i, id, table, |slot| {
                        let layout = &self.layouts[table as usize];
                        let parts =
                            if layout.var_count == 0 { Vec::new() } else { layout.split(row).unwrap_or_default() };
                        crate::world::row_part(layout, row, &parts, slot).to_vec()
                    })?;
                    out.push(Change::ComponentAdded { entity: id, table: self.name_of(i, table)?, fields });
                }
                Op::RemoveComponent { id, table } => {
                    out.push(Change::ComponentRemoved { entity: id, table: self.name_of(i, table)? });
                }
                Op::SetField { id, table, slot, bytes } => {
                    out.push(self.field_set(i, id, table, slot.into(), bytes)?);
                }
                Op::SetMany { table, slot, .. } => {
                    for (id, bytes) in op.set_many_entries() {
                        out.push(self.field_set(i, id, table, slot.into(), bytes)?);
                    }
                }
                Op::SetRun { table, slot, size, ids, values } => {
                    let size = size as usize;
                    for (k, id) in ids.iter().enumerate() {
                        let bytes = values.get(k * size..(k + 1) * size).ok_or_else(|| bad(i, "short values"))?;
                        out.push(self.field_set(i, id, table, slot.into(), bytes)?);
                    }
                }
                Op::Migrate { text } => {
                    out.push(Change::Migrated { migration: String::from_utf8_lossy(text).into_owned() });
                }
                Op::SpawnMany { ids, .. } => {
                    let tables = op.spawn_tables();
                    let columns: Vec<SpawnColumn<'_>> = op.spawn_columns();
                    let mut col_of = Vec::new();
                    let mut c = 0;
                    for &t in &tables {
                        self.name_of(i, t)?;
                        col_of.push(c);
                        c += self.layouts[t as usize].slots.len();
                    }
                    if c != columns.len() {
                        return Err(bad(i, "column count does not match the tables"));
                    }
                    for (row, id) in ids.iter().enumerate() {
                        out.push(Change::Created { entity: id });
                        for (k, &t) in tables.iter().enumerate() {
                            let fields = self.row_json(i, id, t, |slot| columns[col_of[k] + slot].row(row).to_vec())?;
                            out.push(Change::ComponentAdded { entity: id, table: self.name_of(i, t)?, fields });
                        }
                    }
                }
                Op::Link { rel, from, to, props } => {
                    let relation = self.relation_name(i, rel)?;
                    out.push(Change::Linked { relation, from, to, properties: self.props_json(rel, props) });
                }
                Op::Unlink { rel, from, to } => {
                    out.push(Change::Unlinked { relation: self.relation_name(i, rel)?, from, to });
                }
            }
        }
        Ok(out)
    }

    fn name_of(&self, op: usize, t: TableId) -> Result<String> {
        self.schema
            .tables
            .get(t as usize)
            .map(|x| x.name.clone())
            .ok_or_else(|| bad(op, &format!("unknown table #{t}")))
    }

    fn relation_name(&self, op: usize, r: u16) -> Result<String> {
        self.schema
            .relations
            .get(r as usize)
            .map(|x| x.name.clone())
            .ok_or_else(|| bad(op, &format!("unknown relation #{r}")))
    }

    /// `{field: value}` of a row whose stored slot `s` has bytes `slot(s)`;
    /// the entity-id field shows the entity.
    fn row_json(
        &self,
        op: usize,
        id: EntityId,
        t: TableId,
        slot: impl Fn(usize) -> Vec<u8>,
    ) -> Result<serde_json::Value> {
        self.name_of(op, t)?;
        let table = self.schema.table(t);
        let layout = &self.layouts[t as usize];
        let mut m = serde_json::Map::new();
        for f in &table.fields {
            let v = match f.slot() {
                None => serde_json::Value::from(id.0),
                Some(s) => {
                    let v = layout.decode_slot(&self.schema, s, &slot(s)).map_err(|e| bad(op, &e))?;
                    value::to_json(&f.ty, &v, &self.schema)
                }
            };
            m.insert(f.name.clone(), v);
        }
        Ok(m.into())
    }

    fn field_set(&self, op: usize, id: EntityId, t: TableId, slot: usize, bytes: &[u8]) -> Result<Change> {
        let table_name = self.name_of(op, t)?;
        let table = self.schema.table(t);
        if slot >= table.stored_len() {
            return Err(bad(op, &format!("table `{table_name}` has no stored field #{slot}")));
        }
        let f = table.stored_field(slot);
        let v = self.layouts[t as usize].decode_slot(&self.schema, slot, bytes).map_err(|e| bad(op, &e))?;
        Ok(Change::FieldSet {
            entity: id,
            table: table_name,
            field: f.name.clone(),
            value: value::to_json(&f.ty, &v, &self.schema),
        })
    }
}

fn bad(op: usize, why: &str) -> Error {
    Error::InvalidValue { table: "*".into(), field: "*".into(), reason: format!("change set op {op}: {why}") }
}
