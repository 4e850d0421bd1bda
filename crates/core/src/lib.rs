//! # ecsdb-core
//!
//! The engine core of ecsdb: schema, values, entity ids, archetype (column)
//! storage, relations, transactions and change sets. It performs no I/O:
//! durability, indexes and networking are layered on top and talk to the core
//! through [`ChangeSet`]s, the unit every commit produces.
//!
//! The data path of a write: an operation is validated against the schema
//! and applied to the [`World`] in place (with an undo entry) and appended to
//! the transaction's change set; commit checks the deferred constraints and
//! hands the change set to the layers above (log, replication, deltas).
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod aggregate;
pub mod archetype;
pub mod batch;
pub mod changeset;
pub mod component;
pub mod conditional;
pub mod describe;
pub mod entities;
pub mod error;
pub mod id;
pub mod index;
pub mod io;
pub mod layout;
pub mod live;
pub mod load;
pub mod migration;
pub mod near;
pub mod postings;
pub mod query;
pub mod relation;
pub mod schema;
pub mod spatial;
pub mod system;
pub mod txn;
pub mod typed;
pub mod value;
pub mod world;

pub use changeset::{ChangeSet, Op, SpawnColumn};
pub use describe::Change;
pub use error::{Error, Result};
pub use id::EntityId;
pub use query::{CmpOp, Filter, OrderBy, Query, QueryBudget, Related, Row};
pub use relation::{Direction, EdgeKey};
pub use schema::{RelationId, Schema, SchemaError, TableId};
pub use system::{QueryData, QueryFilter, TypedQuery};
pub use txn::{ChunkMut, Commit};
pub use typed::{Chunk, Element, FieldRef};
pub use value::Value;
pub use world::{CanonicalState, Edge, World};
