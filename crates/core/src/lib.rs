//! # ecsdb-core
//!
//! The engine core of ecsdb: schema, values, entity ids, archetype (column)
//! storage, relations, transactions and change sets. It performs no I/O:
//! durability, indexes and networking are layered on top and talk to the core
//! through [`ChangeSet`]s, the unit every commit produces.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod schema;
pub mod value;

pub use schema::Schema;
pub use value::Value;
