//! The validated schema: tables (components), fields, enums, custom types and
//! relations, resolved to dense ids so the hot paths index vectors, not maps.

use rustc_hash::FxHashMap;

use super::types::{FieldType, Scalar};
use crate::value::Value;

/// Dense id of a component table within one schema.
pub type TableId = u16;
/// Dense id of a relation type within one schema.
pub type RelationId = u16;

/// How a declared field is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldRole {
    /// Stored in a column; `slot` is its index among the table's stored fields.
    Stored { slot: usize },
    /// The entity's own id: a root table's `primary_key`, or a component's
    /// `entity_id` owner key. Never stored (it *is* the row's entity).
    EntityId,
}

/// One declared field of a table, custom type or relation.
/// A secondary index kind. `Hash` is served by the same ordered structure
/// as `Btree` (equality lookups are as fast); `Unique` also refuses, at
/// commit, two entities with the same value; `Spatial` is a grid over
/// positions (see [`crate::spatial`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    Btree,
    Hash,
    Unique,
    Spatial,
}

impl IndexKind {
    pub fn name(self) -> &'static str {
        match self {
            IndexKind::Btree => "btree",
            IndexKind::Hash => "hash",
            IndexKind::Unique => "unique",
            IndexKind::Spatial => "spatial",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub ty: FieldType,
    /// The type as written, normalized (`[f32; 3]`).
    pub type_text: String,
    pub role: FieldRole,
    pub primary_key: bool,
    /// Target table of a foreign key; the referenced field is its primary key.
    pub foreign_key: Option<TableId>,
    /// `indexed = true` as written (an ordered index).
    pub indexed: bool,
    /// `index = "btree" | "hash" | "unique"` as written.
    pub index: Option<IndexKind>,
    /// Grid cell edge of a spatial index (`cell_size`), when given.
    pub cell_size: Option<f64>,
    pub description: Option<String>,
    /// Value used when a row is added without this field.
    pub default: Value,
    /// Byte size for fixed-size types, `None` for `string`/`bytes`.
    pub size: Option<usize>,
}

impl Field {
    /// The index this field has, if any (`index`, else `indexed = true`).
    pub fn index_kind(&self) -> Option<IndexKind> {
        self.index.or_else(|| {
            self.indexed.then(|| {
                if crate::spatial::spatial_dims(&self.ty).is_some() { IndexKind::Spatial } else { IndexKind::Btree }
            })
        })
    }

    pub fn is_stored(&self) -> bool {
        matches!(self.role, FieldRole::Stored { .. })
    }
    pub fn slot(&self) -> Option<usize> {
        match self.role {
            FieldRole::Stored { slot } => Some(slot),
            FieldRole::EntityId => None,
        }
    }
}

/// A component table.
#[derive(Debug, Clone)]
pub struct Table {
    pub id: TableId,
    pub name: String,
    pub description: Option<String>,
    pub parent: Option<TableId>,
    /// All declared fields, in declaration order.
    pub fields: Vec<Field>,
    /// Indexes into `fields` of stored fields, by slot.
    pub stored: Vec<usize>,
    /// Index into `fields` of the primary key, for root tables that declare one.
    pub primary_key: Option<usize>,
    field_index: FxHashMap<String, usize>,
}

impl Table {
    pub(crate) fn new(
        id: TableId,
        name: String,
        description: Option<String>,
        parent: Option<TableId>,
        fields: Vec<Field>,
    ) -> Table {
        let field_index = fields.iter().enumerate().map(|(i, f)| (f.name.clone(), i)).collect();
        let mut stored: Vec<(usize, usize)> =
            fields.iter().enumerate().filter_map(|(i, f)| f.slot().map(|s| (s, i))).collect();
        stored.sort_unstable();
        let primary_key = fields.iter().position(|f| f.primary_key);
        Table {
            id,
            name,
            description,
            parent,
            fields,
            stored: stored.into_iter().map(|(_, i)| i).collect(),
            primary_key,
            field_index,
        }
    }

    /// Index of a declared field by name.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.field_index.get(name).copied()
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.field_index(name).map(|i| &self.fields[i])
    }

    /// The stored field at a slot.
    pub fn stored_field(&self, slot: usize) -> &Field {
        &self.fields[self.stored[slot]]
    }

    /// Number of stored fields.
    pub fn stored_len(&self) -> usize {
        self.stored.len()
    }
}

/// An enum type: a value is one of the named variants, stored as its index.
#[derive(Debug, Clone)]
pub struct EnumDef {
    pub name: String,
    pub variants: Vec<String>,
}

impl EnumDef {
    pub fn variant_index(&self, name: &str) -> Option<usize> {
        self.variants.iter().position(|v| v == name)
    }
}

/// A custom (struct) type made of fixed-size fields.
#[derive(Debug, Clone)]
pub struct CustomType {
    pub name: String,
    pub fields: Vec<Field>,
    pub size: usize,
    /// When all fields share one scalar type, that scalar (so typed column
    /// access can view `vec3` as `[f32; 3]`).
    pub uniform: Option<Scalar>,
}

/// A relation type: typed directed edges between entities, with properties.
#[derive(Debug, Clone)]
pub struct RelationDef {
    pub id: RelationId,
    pub name: String,
    pub description: Option<String>,
    /// Table the source entity must have, if constrained.
    pub from: Option<TableId>,
    /// Table the target entity must have, if constrained.
    pub to: Option<TableId>,
    /// Property fields, all stored.
    pub fields: Vec<Field>,
    field_index: FxHashMap<String, usize>,
}

impl RelationDef {
    pub(crate) fn new(
        id: RelationId,
        name: String,
        description: Option<String>,
        from: Option<TableId>,
        to: Option<TableId>,
        fields: Vec<Field>,
    ) -> RelationDef {
        let field_index = fields.iter().enumerate().map(|(i, f)| (f.name.clone(), i)).collect();
        RelationDef { id, name, description, from, to, fields, field_index }
    }
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.field_index.get(name).copied()
    }
}

/// A validated schema. Build it with [`Schema::from_toml_str`].
#[derive(Debug, Clone)]
pub struct Schema {
    pub name: String,
    pub version: String,
    pub tables: Vec<Table>,
    pub enums: Vec<EnumDef>,
    pub custom_types: Vec<CustomType>,
    pub relations: Vec<RelationDef>,
    pub(crate) table_index: FxHashMap<String, TableId>,
    pub(crate) relation_index: FxHashMap<String, RelationId>,
    /// FNV-1a of the normalized schema text: identifies the exact schema a
    /// change set or snapshot was written against.
    pub fingerprint: u64,
}

impl Schema {
    pub fn table_id(&self, name: &str) -> Option<TableId> {
        self.table_index.get(name).copied()
    }
    pub fn table(&self, id: TableId) -> &Table {
        &self.tables[id as usize]
    }
    pub fn table_by_name(&self, name: &str) -> Option<&Table> {
        self.table_id(name).map(|id| self.table(id))
    }
    pub fn relation_id(&self, name: &str) -> Option<RelationId> {
        self.relation_index.get(name).copied()
    }
    pub fn relation(&self, id: RelationId) -> &RelationDef {
        &self.relations[id as usize]
    }
    /// Whether any table has a stored foreign-key field (enables reference
    /// counting on commit).
    pub fn has_stored_foreign_keys(&self) -> bool {
        self.tables.iter().any(|t| t.fields.iter().any(|f| f.is_stored() && f.foreign_key.is_some()))
    }
}
