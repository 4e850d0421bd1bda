//! # ecsdb
//!
//! A durable, multi-model database for live game worlds: entities with typed
//! components stored column-wise, typed relations between them, and every
//! commit recorded as one change set.
//!
//! ```
//! use ecsdb::{Database, Value};
//! use serde_json::json;
//!
//! let db = Database::example()?; // the bundled RPG schema, in memory
//! let (hero, info) = db.write(|t| {
//!     let hero = t.create_entity_json(&json!({
//!         "entities": {"version": 1, "entity_type": 0},
//!         "player": {"name": "ana", "level": 3},
//!         "health": {"hp": 90, "max_hp": 100},
//!     }))?;
//!     t.set(hero, "player", "level", &Value::U64(4))?;
//!     Ok(hero)
//! })?;
//! assert_eq!(info.seq, 1);
//! let got = db.get_json(hero)?;
//! assert_eq!(got["components"]["player"]["level"], 4);
//! # Ok::<(), ecsdb::DbError>(())
//! ```
//!
//! Game systems iterate columns in place inside a transaction:
//!
//! ```
//! # use ecsdb::Database;
//! # let db = Database::example()?;
//! let schema = db.schema().clone();
//! let pos = schema.field_ref("transform", "position")?;
//! let vel = schema.field_ref("physics", "velocity")?;
//! let tables = [pos.table, vel.table];
//! let mut txn = db.transaction()?;
//! txn.for_each_chunk_mut(&tables, |chunk| {
//!     let (p, v) = chunk.write_read::<[f32; 3], [f32; 3]>(pos, vel)?;
//!     for (p, v) in p.iter_mut().zip(v) {
//!         for i in 0..3 { p[i] += v[i]; }
//!     }
//!     Ok(())
//! })?;
//! txn.commit()?;
//! # Ok::<(), ecsdb::DbError>(())
//! ```
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;
mod database;
mod durability;
mod error;
pub mod feed;
mod migrate;
mod sink;
mod typed_query;

pub use config::DatabaseConfig;
pub use database::{
    CommitInfo, Database, DatabaseBuilder, DatabaseMetrics, EXAMPLE_SCHEMA, ReadView, SCHEMA_FILE_NAME,
    SCHEMA_HISTORY_DIR, StorageStats, Transaction, install_schema_file, is_data_dir_entry,
};
/// `#[derive(Component)]`: a struct as a row of a schema table.
pub use ecsdb_core::batch::{BatchBuilder, Bundle};
pub use ecsdb_core::component::{Binding, Component, FieldValue};
pub use ecsdb_core::{
    self as core, Change, ChangeSet, CmpOp, Direction, Edge, EntityId, FieldRef, Filter, Op, OrderBy, Query,
    QueryBudget, QueryData, QueryFilter, Related, Row, Schema, TableId, Value, World, schema,
};
pub use ecsdb_derive::{Component, Enum};
pub use ecsdb_storage::{self as storage, CheckpointInfo, RecoveryReport};
pub use error::{DbError, EngineError, Result, SchemaError};
pub use migrate::MigrationOutcome;
/// Re-exported: JSON values appear in this crate's signatures.
pub use serde_json;
pub use sink::CommitSink;
pub use typed_query::TypedQuery;

/// The README's code blocks, compiled and run as doc tests: the library
/// snippet newcomers copy must build against the crate as published.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
