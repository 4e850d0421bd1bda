//! Errors of engine operations. Each names what it is about (entity, table,
//! field, relation) so a caller can report it without more context.

use crate::id::EntityId;

/// An engine operation failed. The operation changed nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("entity {0} does not exist")]
    NoSuchEntity(EntityId),
    /// A migration was refused (malformed, out of order, or its result is
    /// not a valid schema); nothing was changed.
    #[error("migration refused: {0}")]
    Migration(String),
    #[error("unknown table `{0}`")]
    NoSuchTable(String),
    #[error("unknown field `{field}` in table `{table}`")]
    NoSuchField { table: String, field: String },
    #[error("unknown relation `{0}`")]
    NoSuchRelation(String),
    #[error("entity {entity} already has component `{table}`")]
    ComponentExists { entity: EntityId, table: String },
    #[error("entity {entity} has no component `{table}`")]
    ComponentMissing { entity: EntityId, table: String },
    #[error("invalid value for `{table}.{field}`: {reason}")]
    InvalidValue { table: String, field: String, reason: String },
    #[error("`{table}.{field}` of entity {entity} references {target}, which {reason}")]
    ForeignKey { entity: EntityId, table: String, field: String, target: EntityId, reason: String },
    #[error("entity {entity} cannot be deleted: {count} foreign key value(s) still reference it")]
    StillReferenced { entity: EntityId, count: u32 },
    #[error(
        "component `{table}` of entity {entity} cannot be removed: {count} foreign key value(s) still reference it"
    )]
    ComponentReferenced { entity: EntityId, table: String, count: u32 },
    #[error(
        "entity {entity} has component `{table}` but not its parent_table `{parent}`: add `{parent}` (the JSON API adds it with its defaults) or remove `{table}` too"
    )]
    ParentMissing { entity: EntityId, table: String, parent: String },
    #[error("relation `{relation}`: {reason}")]
    RelationEnd { relation: String, reason: String },
    #[error("no edge `{relation}` from {from} to {to}")]
    NoSuchEdge { relation: String, from: EntityId, to: EntityId },
    #[error(
        "commit refused: live data would take {used_bytes} bytes, over the memory ceiling of {limit_bytes} bytes ([memory] max_capacity_mb)"
    )]
    MemoryLimit { used_bytes: usize, limit_bytes: usize },
    #[error(
        "transaction too large: its change set takes {bytes} bytes, over the limit of {limit} bytes ([transactions] max_transaction_mb); split it into smaller transactions"
    )]
    TooLarge { bytes: usize, limit: usize },
    #[error("the engine is poisoned and refuses writes: {0}")]
    Poisoned(String),
    #[error("{0}")]
    IdUnavailable(String),
    #[error("the entity id space is exhausted")]
    IdSpaceExhausted,
    #[error("`{table}.{field}`: {reason}")]
    TypeMismatch { table: String, field: String, reason: String },
    #[error("no transaction is active")]
    NoTransaction,
    #[error("a transaction is already active")]
    TransactionActive,
    #[error("invalid query: {0}")]
    Query(String),
    #[error("query too large: {0}")]
    QueryLimit(String),
    #[error("the query ran {ms} ms, past its deadline, and was cancelled")]
    QueryTimeout { ms: u64 },
    #[error("`{table}.{field}` is unique and the value {value} is already held by another entity")]
    UniqueViolation { table: String, field: String, value: String },
    #[error("check failed: `{field}` {reason}")]
    CheckFailed { field: String, reason: String },
    #[error("`{table}.{field}`: {reason}")]
    OutOfRange { table: String, field: String, reason: String },
    #[error("import failed: {0}")]
    Import(String),
    #[error("change set {seq} does not apply: {reason}")]
    Apply { seq: u64, reason: String },
}

/// Engine result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
