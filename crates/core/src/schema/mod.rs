//! Schema: the TOML declaration of component tables, enums, custom types and
//! relations, validated into dense ids the engine indexes by.
//!
//! Syntax (see `examples/schemas/rpg_game.toml` and README):
//! - `[database] name, version`
//! - `[tables.NAME] description, parent_table` with `[[tables.NAME.fields]]`
//!   `name, type, primary_key, foreign_key = "table.field", indexed, description, default`
//! - `[enums.NAME] variants = [..]`, `[custom_types.NAME]` with `[[..fields]]`
//! - `[relations.NAME] from = "table", to = "table", description` with
//!   `[[relations.NAME.fields]]` property fields.
//!
//! Entity ids: a root table's `primary_key` (u64) and a component's
//! `entity_id` owner key are the entity's own id and are never stored.

mod diff;
mod dump;
mod error;
mod model;
mod parse;
mod types;

pub use diff::differences;
pub use error::{SchemaError, SchemaIssue};
pub use model::{CustomType, EnumDef, Field, FieldRole, IndexKind, RelationDef, RelationId, Schema, Table, TableId};
pub use parse::{
    MAX_FIELDS, MAX_NAME_LEN, MAX_RELATIONS, MAX_ROW_BYTES, MAX_SCHEMA_FIXED_BYTES, MAX_SCHEMA_TEXT, MAX_TABLES,
    MAX_VARIANTS, fnv1a,
};
pub use types::{FieldType, MAX_ARRAY_LEN, Scalar, TypeExpr, parse_type_expr};

#[cfg(test)]
mod tests;
