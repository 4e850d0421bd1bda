//! The one guard between HTTP and the engine for the data API.
//!
//! The server keeps its users, sessions and API keys in system tables of the
//! same database (names starting with `_`). Every data operation a client
//! sends — typed here as [`DataOp`] — and every query and stat passes
//! through this module, which refuses system tables and relations by name
//! and treats entities holding a system component as absent, for every kind
//! of operation. Handlers never touch the engine's write or query API for
//! client data except through it.

use ecsdb::{EntityId, Query, ReadView, Transaction, World};
use serde::Deserialize;
use serde_json::{Map, Value as J};

use crate::error::{ApiError, ApiResult};

/// Whether a table, relation, enum or type name belongs to the system.
pub fn is_system_name(name: &str) -> bool {
    name.starts_with('_')
}

/// Refuse a system name.
pub fn user_name(name: &str) -> ApiResult<()> {
    if is_system_name(name) {
        return Err(ApiError::bad_request(format!("`{name}` is reserved for the system")));
    }
    Ok(())
}

/// Whether `id` holds a system component (a user, session or API key).
pub fn is_system_entity(w: &World, id: EntityId) -> bool {
    w.tables_of(id).is_ok_and(|ts| ts.iter().any(|&t| is_system_name(&w.schema().table(t).name)))
}

/// An entity the data API may see: it exists and holds no system
/// component. System entities read as absent (404), never as forbidden, so
/// the API does not reveal which ids they have.
pub fn visible(w: &World, id: EntityId) -> ApiResult<()> {
    if !w.contains(id) || is_system_entity(w, id) {
        return Err(ApiError::not_found(format!("entity {id} does not exist")));
    }
    Ok(())
}

/// `{"table": {"field": value}}` with user tables only.
pub fn components(v: &J) -> ApiResult<&Map<String, J>> {
    let m = v.as_object().ok_or_else(|| {
        ApiError::bad_request("`components` must be an object of tables: {\"table\": {\"field\": value}}")
    })?;
    for k in m.keys() {
        user_name(k)?;
    }
    Ok(m)
}

/// An entity reference in a transaction: an id (number or string) or
/// `"$N"`, the entity created by operation N of the same request.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IdRef {
    Number(u64),
    Text(String),
}

/// One operation of `POST /v1/transactions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum DataOp {
    Create {
        #[serde(default)]
        components: Option<J>,
    },
    Set {
        id: IdRef,
        #[serde(default)]
        components: Option<J>,
    },
    Remove {
        id: IdRef,
        table: String,
    },
    Delete {
        id: IdRef,
    },
    Link {
        relation: String,
        from: IdRef,
        to: IdRef,
        #[serde(default)]
        props: Option<J>,
    },
    Unlink {
        relation: String,
        from: IdRef,
        to: IdRef,
    },
    /// Fail the whole transaction (409) unless every filter holds for `id`.
    Check {
        id: IdRef,
        filters: Vec<ecsdb::Filter>,
    },
    /// Add `value` to the numeric `field` (`table.field`) of `id`.
    Add {
        id: IdRef,
        field: String,
        value: J,
    },
}

impl DataOp {
    pub fn kind(&self) -> &'static str {
        match self {
            DataOp::Create { .. } => "create",
            DataOp::Set { .. } => "set",
            DataOp::Remove { .. } => "remove",
            DataOp::Delete { .. } => "delete",
            DataOp::Link { .. } => "link",
            DataOp::Unlink { .. } => "unlink",
            DataOp::Check { .. } => "check",
            DataOp::Add { .. } => "add",
        }
    }

    /// Parse `ops[i]`, naming it in the error.
    pub fn parse(v: &J, i: usize) -> ApiResult<DataOp> {
        DataOp::deserialize(v).map_err(|e| {
            // serde names internal types for untagged enums; say it plainly.
            let msg = e.to_string();
            let msg = if msg.contains("untagged enum IdRef") {
                "an entity id must be a number, a decimal string or \"$N\"".to_string()
            } else {
                msg
            };
            ApiError::bad_request(format!(
                "ops[{i}]: {msg} (ops are create, set, remove, delete, link, unlink, check, add; see docs/API.md)"
            ))
        })
    }
}

/// Writes on behalf of a client: every entity they name must be visible
/// (not a system entity), every table and relation a user one.
#[derive(Debug)]
pub struct DataWriter<'t, 'db> {
    txn: &'t mut Transaction<'db>,
    /// Entities created by this request, for `"$N"` references.
    pub created: Vec<EntityId>,
}

impl<'t, 'db> DataWriter<'t, 'db> {
    pub fn new(txn: &'t mut Transaction<'db>) -> Self {
        DataWriter { txn, created: Vec::new() }
    }

    fn resolve(&self, r: &IdRef, i: usize) -> ApiResult<EntityId> {
        let id = match r {
            IdRef::Number(n) => EntityId(*n),
            IdRef::Text(s) if s.starts_with('$') => {
                let n: usize =
                    s[1..].parse().map_err(|_| ApiError::bad_request(format!("ops[{i}]: bad reference `{s}`")))?;
                return self.created.get(n).copied().ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "ops[{i}]: `{s}` refers to no earlier create (there are {})",
                        self.created.len()
                    ))
                });
            }
            IdRef::Text(s) => {
                EntityId(s.parse().map_err(|_| ApiError::bad_request(format!("ops[{i}]: `{s}` is not an entity id")))?)
            }
        };
        visible(self.txn, id).map_err(|e| named(e, i, None))?;
        Ok(id)
    }

    /// Create an entity with user components.
    pub fn create(&mut self, comps: &J) -> ecsdb::Result<EntityId> {
        let id = self.txn.create_entity_json(comps)?;
        self.created.push(id);
        Ok(id)
    }

    /// Set the given fields of each table, adding the components the entity
    /// lacks.
    pub fn set(&mut self, id: EntityId, comps: &Map<String, J>) -> ecsdb::Result<()> {
        self.txn.upsert_json(id, comps)
    }

    pub fn delete(&mut self, id: EntityId) -> ecsdb::Result<()> {
        self.txn.delete(id)
    }

    /// Apply `ops[i]`.
    pub fn apply(&mut self, op: &DataOp, i: usize) -> ApiResult<()> {
        let kind = op.kind();
        let ctx = |e: ecsdb::DbError| named(ApiError::from(e), i, Some(kind));
        match op {
            DataOp::Create { components: c } => {
                let c = c.clone().unwrap_or_else(|| J::Object(Map::new()));
                components(&c).map_err(|e| named(e, i, Some(kind)))?;
                self.create(&c).map_err(ctx)?;
            }
            DataOp::Set { id, components: c } => {
                let id = self.resolve(id, i)?;
                let c = c.clone().unwrap_or_else(|| J::Object(Map::new()));
                let m = components(&c).map_err(|e| named(e, i, Some(kind)))?;
                self.set(id, m).map_err(ctx)?;
            }
            DataOp::Remove { id, table } => {
                user_name(table).map_err(|e| named(e, i, Some(kind)))?;
                let id = self.resolve(id, i)?;
                self.txn.remove(id, table).map_err(ctx)?;
            }
            DataOp::Delete { id } => {
                let id = self.resolve(id, i)?;
                self.txn.delete(id).map_err(ctx)?;
            }
            DataOp::Link { relation, from, to, props } => {
                user_name(relation).map_err(|e| named(e, i, Some(kind)))?;
                let (from, to) = (self.resolve(from, i)?, self.resolve(to, i)?);
                self.txn.link(relation, from, to, props.as_ref()).map_err(ctx)?;
            }
            DataOp::Unlink { relation, from, to } => {
                user_name(relation).map_err(|e| named(e, i, Some(kind)))?;
                let (from, to) = (self.resolve(from, i)?, self.resolve(to, i)?);
                self.txn.unlink(relation, from, to).map_err(ctx)?;
            }
            DataOp::Check { id, filters } => {
                for f in filters {
                    user_name(table_of(&f.field)).map_err(|e| named(e, i, Some(kind)))?;
                }
                let id = self.resolve(id, i)?;
                self.txn.check(id, filters).map_err(ctx)?;
            }
            DataOp::Add { id, field, value } => {
                user_name(table_of(field)).map_err(|e| named(e, i, Some(kind)))?;
                let id = self.resolve(id, i)?;
                self.txn.add(id, field, value).map_err(ctx)?;
            }
        }
        Ok(())
    }
}

/// The table part of a `table.field` path.
fn table_of(path: &str) -> &str {
    path.split('.').next().unwrap_or(path)
}

/// Prefix an error with the operation it came from, keeping its status.
fn named(mut e: ApiError, i: usize, kind: Option<&str>) -> ApiError {
    e.message = match kind {
        Some(k) => format!("ops[{i}] ({k}): {}", e.message),
        None => format!("ops[{i}]: {}", e.message),
    };
    e
}

/// Make a client's query a query over user data: refuse system names
/// anywhere in it, and exclude every entity holding a system component.
pub fn user_query(w: &World, mut q: Query) -> ApiResult<Query> {
    let table_of = |path: &str| path.split('.').next().unwrap_or(path).to_string();
    for t in q.with.iter().chain(&q.without) {
        user_name(t)?;
    }
    for f in &q.filters {
        user_name(&table_of(&f.field))?;
    }
    for s in q.select.iter().flatten() {
        user_name(&table_of(s))?;
    }
    if let Some(o) = &q.order_by {
        // Aggregate queries may order by an aggregate's label (`count`, `avg(t.f)`).
        if q.aggregates.iter().all(|a| a.label() != o.field) {
            user_name(&table_of(&o.field))?;
        }
    }
    for g in &q.group_by {
        user_name(&table_of(g))?;
    }
    for a in &q.aggregates {
        if let Some(f) = &a.field {
            user_name(&table_of(f))?;
        }
    }
    if let Some(r) = &q.related {
        if let Some(rel) = &r.relation {
            user_name(rel)?;
        }
        if let Some(id) = ecsdb::core::world::id_from_json(&r.entity)
            && is_system_entity(w, id)
        {
            return Err(ApiError::not_found(format!("entity {id} does not exist")));
        }
    }
    // Spatial clauses: their fields, and the entities they measure from.
    let spatial = q
        .near
        .as_ref()
        .map(|n| (n.field.as_str(), n.entity.as_ref()))
        .into_iter()
        .chain(q.nearest.as_ref().map(|n| (n.field.as_str(), n.entity.as_ref())))
        .chain(q.in_box.as_ref().map(|b| (b.field.as_str(), None)));
    for (field, entity) in spatial {
        user_name(&table_of(field))?;
        if let Some(id) = entity.and_then(ecsdb::core::world::id_from_json)
            && (!w.contains(id) || is_system_entity(w, id))
        {
            return Err(ApiError::not_found(format!("entity {id} does not exist")));
        }
    }
    for t in &w.schema().tables {
        if is_system_name(&t.name) && !q.without.contains(&t.name) {
            q.without.push(t.name.clone());
        }
    }
    Ok(q)
}

/// Counts of user data only (system rows are not the client's business).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserCounts {
    pub entities: u64,
    pub components: u64,
    pub relations: u64,
    pub archetypes: u64,
}

pub fn user_counts(w: &ReadView<'_>) -> UserCounts {
    let mut c = UserCounts { entities: 0, components: 0, relations: 0, archetypes: 0 };
    for a in w.archetypes() {
        if a.tables.iter().any(|&t| is_system_name(&w.schema().table(t).name)) {
            continue;
        }
        c.entities += a.len() as u64;
        c.components += (a.len() * a.tables.len()) as u64;
        if !a.is_empty() {
            c.archetypes += 1;
        }
    }
    c.relations =
        w.relations().iter().filter(|(k, _)| !is_system_name(&w.schema().relation(k.rel).name)).count() as u64;
    c
}
