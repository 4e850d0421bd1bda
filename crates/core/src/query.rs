//! Dynamic queries: component sets, field filters, projection, ordering,
//! limit/offset and relation traversal, described as data (JSON from the
//! server, or built in Rust) and run against a [`World`].
//!
//! ```json
//! {"with": ["player", "health"], "without": ["npc"],
//!  "filters": [{"field": "health.hp", "op": "lt", "value": 10},
//!              {"field": "player.level", "op": "between", "value": [5, 9]}],
//!  "select": ["player.name", "health"],
//!  "order_by": {"field": "player.level", "desc": true},
//!  "related": {"relation": "follows", "entity": 42, "direction": "out", "depth": 1},
//!  "limit": 10, "offset": 0}
//! ```

use std::cmp::Ordering;

use rustc_hash::FxHashSet;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::id::EntityId;
use crate::relation::Direction;
use crate::schema::{FieldType, Scalar, TableId};
use crate::value::{self, Value};
use crate::world::{World, id_from_json, id_json};

/// Most rows one query returns when it sets no limit.
pub const DEFAULT_LIMIT: usize = 10_000;
/// Largest `limit` a query may ask for.
pub const MAX_LIMIT: usize = 100_000;
/// Most values an `in` filter may list.
pub const MAX_IN_VALUES: usize = 65_536;
/// Result size (an estimate of its JSON) a query may return by default.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 64 << 20;

/// What one query may cost: rows, result bytes and time. A query over
/// budget stops and fails (it never holds a read view longer than its
/// deadline).
#[derive(Debug, Clone, Copy)]
pub struct QueryBudget {
    /// Stop with [`Error::QueryTimeout`] once this instant has passed.
    pub deadline: Option<std::time::Instant>,
    /// Stop with [`Error::QueryLimit`] when the rows would take more.
    pub max_result_bytes: usize,
}

impl Default for QueryBudget {
    fn default() -> Self {
        QueryBudget { deadline: None, max_result_bytes: DEFAULT_MAX_RESULT_BYTES }
    }
}

/// How often (in rows visited) the deadline is looked at.
const DEADLINE_EVERY: usize = 1024;

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// Inclusive range: `value` is `[low, high]`.
    Between,
    /// One of a list: `value` is an array.
    In,
}

/// A filter on one field: `table.field op value`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub field: String,
    pub op: CmpOp,
    pub value: serde_json::Value,
}

impl Filter {
    /// The operator's name as written in JSON.
    pub fn op_name(&self) -> &'static str {
        match self.op {
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
            CmpOp::Lt => "lt",
            CmpOp::Le => "le",
            CmpOp::Gt => "gt",
            CmpOp::Ge => "ge",
            CmpOp::Between => "between",
            CmpOp::In => "in",
        }
    }
}

/// Sort key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderBy {
    pub field: String,
    #[serde(default)]
    pub desc: bool,
}

/// Restrict results to entities reachable from `entity` over a relation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Related {
    /// Relation name; any relation when absent.
    pub relation: Option<String>,
    pub entity: serde_json::Value,
    #[serde(default = "default_dir")]
    pub direction: Direction,
    #[serde(default = "default_depth")]
    pub depth: usize,
}

fn default_dir() -> Direction {
    Direction::Out
}
fn default_depth() -> usize {
    1
}

/// A query, as data.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    #[serde(default)]
    pub with: Vec<String>,
    #[serde(default)]
    pub without: Vec<String>,
    #[serde(default)]
    pub filters: Vec<Filter>,
    /// `table` (all its fields) or `table.field`; default: every component in `with`.
    pub select: Option<Vec<String>>,
    pub order_by: Option<OrderBy>,
    pub related: Option<Related>,
    pub limit: Option<usize>,
    #[serde(default)]
    pub offset: usize,
    /// Group matching entities by these `table.field`s (see [`crate::aggregate`]).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Aggregates per group (or over all matches when `group_by` is empty).
    #[serde(default)]
    pub aggregates: Vec<crate::aggregate::Aggregate>,
    /// Describe how the query would run instead of running it.
    #[serde(default)]
    pub explain: bool,
    /// Within a radius of a point or entity (see [`crate::near`]).
    pub near: Option<crate::near::Near>,
    /// Inside an axis-aligned box.
    #[serde(rename = "box")]
    pub in_box: Option<crate::near::BoxQuery>,
    /// The k nearest, nearest first (rows come in distance order).
    pub nearest: Option<crate::near::Nearest>,
}

/// One result row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: EntityId,
    /// (table, declared field index, value), in selection order.
    pub values: Vec<(TableId, usize, Value)>,
}

impl Row {
    /// The values with their table and field names, in selection order.
    pub fn named<'a>(&'a self, schema: &'a crate::Schema) -> impl Iterator<Item = (&'a str, &'a str, &'a Value)> + 'a {
        self.values.iter().map(move |(t, fi, v)| {
            let table = schema.table(*t);
            (table.name.as_str(), table.fields[*fi].name.as_str(), v)
        })
    }

    /// The value of `table.field` in this row, if it was selected.
    pub fn get(&self, schema: &crate::Schema, table: &str, field: &str) -> Option<&Value> {
        self.values
            .iter()
            .find(|(t, fi, _)| {
                let tb = schema.table(*t);
                tb.name == table && tb.fields[*fi].name == field
            })
            .map(|(_, _, v)| v)
    }
}

/// A plain query resolved: its scan, its order (table, field, descending)
/// and its selection of (table, field).
pub(crate) type PlainPlan = (Scan, Option<(TableId, usize, bool)>, Vec<(TableId, usize)>);

/// A query's `limit`, checked against [`MAX_LIMIT`].
pub(crate) fn checked_limit(q: &Query) -> Result<usize> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_LIMIT {
        return Err(Error::Query(format!("limit {limit} is over the maximum of {MAX_LIMIT}; page with offset")));
    }
    Ok(limit)
}

/// What picks a query's entities (see [`World::scan_parts`]).
pub(crate) struct Scan {
    pub(crate) with: Vec<TableId>,
    pub(crate) without: Vec<TableId>,
    pub(crate) filters: Vec<CompiledFilter>,
    pub(crate) allowed: Option<FxHashSet<EntityId>>,
    /// `near` / `box` conditions (always checked).
    pub(crate) spatial: Vec<crate::near::SpatialCheck>,
    /// What an index answered and its candidates.
    pub(crate) indexed: Option<(Answer, Vec<EntityId>)>,
}

/// The clause whose index picked a scan's candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A filter (its position), answered exactly.
    Filter(usize),
    /// A spatial check (its position).
    Spatial(usize),
}

impl Scan {
    /// Call `f` on every matching entity until it returns `false`: through
    /// the index a filter can use (its candidates, every condition still
    /// checked), else archetype by archetype.
    pub(crate) fn visit(&self, w: &World, f: &mut dyn FnMut(EntityId) -> Result<bool>) -> Result<()> {
        if let Some((answer, ids)) = &self.indexed {
            if self.answered_exactly(w, *answer) {
                // Every candidate matches: an index holds exactly the
                // entities with its table, so there is nothing to check.
                for &id in ids {
                    if !f(id)? {
                        break;
                    }
                }
                return Ok(());
            }
            for &id in ids {
                let Ok((a, _)) = w.location(id) else { continue };
                if self.archetype_matches(&w.archetypes()[a as usize]) && self.entity_matches(w, id)? && !f(id)? {
                    break;
                }
            }
            return Ok(());
        }
        for arch in w.archetypes() {
            if !self.archetype_matches(arch) {
                continue;
            }
            for &id in &arch.entities {
                if self.entity_matches(w, id)? && !f(id)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Whether the index answer is the whole query: one filter, answered
    /// by its index, on the only table required, and nothing else.
    fn answered_exactly(&self, w: &World, answer: Answer) -> bool {
        let Answer::Filter(i) = answer else { return false };
        self.filters.len() == 1
            && self.spatial.is_empty()
            && self.allowed.is_none()
            && self.without.is_empty()
            && self.with.iter().all(|&t| t == self.filters[i].table)
            && w.schema().table(self.filters[i].table).fields[self.filters[i].field].slot().is_some()
    }

    /// Whether archetype `arch` can hold matches.
    pub(crate) fn archetype_matches(&self, arch: &crate::archetype::Archetype) -> bool {
        !arch.is_empty() && arch.has_all(&self.with) && !self.without.iter().any(|&t| arch.has(t))
    }

    /// Whether entity `id` (in a matching archetype) passes `related` and the filters.
    pub(crate) fn entity_matches(&self, w: &World, id: EntityId) -> Result<bool> {
        if self.allowed.as_ref().is_some_and(|a| !a.contains(&id)) {
            return Ok(false);
        }
        let answered = self.indexed.as_ref().map(|(a, _)| *a);
        for (i, f) in self.filters.iter().enumerate() {
            // The index lookup is exact for the filter it answered.
            if Some(Answer::Filter(i)) == answered {
                continue;
            }
            if !f.matches(&w.field_value(id, f.table, f.field)?) {
                return Ok(false);
            }
        }
        for (i, c) in self.spatial.iter().enumerate() {
            if Some(Answer::Spatial(i)) == answered {
                continue;
            }
            // Points are read straight from the column (no decoded value).
            let ok = match w.schema().table(c.table).fields[c.field].slot() {
                Some(slot) => w.point_at(c.table, slot, id).is_some_and(|p| c.matches_point(&p)),
                None => c.matches(&w.field_value(id, c.table, c.field)?),
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

pub(crate) struct CompiledFilter {
    pub(crate) table: TableId,
    pub(crate) field: usize,
    op: CmpOp,
    /// For `in`: sorted (binary search), without duplicates.
    values: Vec<Value>,
}

pub(crate) fn resolve_field(world: &World, path: &str) -> Result<(TableId, usize)> {
    let (t, f) =
        path.split_once('.').ok_or_else(|| Error::Query(format!("field `{path}` must be written as `table.field`")))?;
    let tid = world.table_id(t)?;
    let fi = world
        .schema()
        .table(tid)
        .field_index(f)
        .ok_or_else(|| Error::NoSuchField { table: t.to_string(), field: f.to_string() })?;
    Ok((tid, fi))
}

/// Total order over values of one type (floats by IEEE total order).
pub(crate) fn cmp_values(left: &Value, right: &Value) -> Ordering {
    match (left, right) {
        (Value::U64(x), Value::U64(y)) => x.cmp(y),
        (Value::I64(x), Value::I64(y)) => x.cmp(y),
        (Value::F32(x), Value::F32(y)) => x.total_cmp(y),
        (Value::F64(x), Value::F64(y)) => x.total_cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Str(x), Value::Str(y)) => x.cmp(y),
        (Value::Bytes(x), Value::Bytes(y)) => x.cmp(y),
        (Value::Enum(x), Value::Enum(y)) => x.cmp(y),
        (Value::Array(xs), Value::Array(ys)) | (Value::Struct(xs), Value::Struct(ys)) => {
            for (x, y) in xs.iter().zip(ys) {
                let ord = cmp_values(x, y);
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            xs.len().cmp(&ys.len())
        }
        _ => Ordering::Equal,
    }
}

pub(crate) fn orderable(ty: &FieldType) -> bool {
    matches!(
        ty,
        FieldType::Scalar(_)
            | FieldType::FixedString(_)
            | FieldType::String
            | FieldType::Enum { .. }
            | FieldType::Bytes
    )
}

impl CompiledFilter {
    pub(crate) fn matches(&self, v: &Value) -> bool {
        let c = |i: usize| cmp_values(v, &self.values[i]);
        match self.op {
            CmpOp::Eq => c(0) == Ordering::Equal,
            CmpOp::Ne => c(0) != Ordering::Equal,
            CmpOp::Lt => c(0) == Ordering::Less,
            CmpOp::Le => c(0) != Ordering::Greater,
            CmpOp::Gt => c(0) == Ordering::Greater,
            CmpOp::Ge => c(0) != Ordering::Less,
            CmpOp::Between => c(0) != Ordering::Less && c(1) != Ordering::Greater,
            CmpOp::In => self.values.binary_search_by(|x| cmp_values(x, v)).is_ok(),
        }
    }
}

impl World {
    pub(crate) fn compile_filter(&self, f: &Filter) -> Result<CompiledFilter> {
        let (table, field) = resolve_field(self, &f.field)?;
        let fd = &self.schema().table(table).fields[field];
        let ty = if fd.slot().is_none() { FieldType::Scalar(Scalar::U64) } else { fd.ty.clone() };
        let conv = |j: &serde_json::Value| {
            value::from_json(&ty, j, self.schema()).map_err(|e| Error::Query(format!("filter on `{}`: {e}", f.field)))
        };
        let values = match f.op {
            CmpOp::Between => match &f.value {
                serde_json::Value::Array(a) if a.len() == 2 => vec![conv(&a[0])?, conv(&a[1])?],
                _ => {
                    return Err(Error::Query(format!("filter on `{}`: between takes [low, high]", f.field)));
                }
            },
            CmpOp::In => match &f.value {
                serde_json::Value::Array(a) if a.len() > MAX_IN_VALUES => {
                    return Err(Error::Query(format!(
                        "filter on `{}`: in lists {} values; at most {MAX_IN_VALUES} are allowed",
                        f.field,
                        a.len()
                    )));
                }
                serde_json::Value::Array(a) => {
                    let mut vs = a.iter().map(conv).collect::<Result<Vec<_>>>()?;
                    vs.sort_by(cmp_values);
                    vs.dedup_by(|x, y| cmp_values(x, y) == Ordering::Equal);
                    vs
                }
                _ => {
                    return Err(Error::Query(format!("filter on `{}`: in takes an array of values", f.field)));
                }
            },
            _ => vec![conv(&f.value)?],
        };
        if !matches!(f.op, CmpOp::Eq | CmpOp::Ne | CmpOp::In) && !orderable(&ty) {
            return Err(Error::Query(format!(
                "filter on `{}`: type {} supports only eq, ne and in",
                f.field, fd.type_text
            )));
        }
        Ok(CompiledFilter { table, field, op: f.op, values })
    }

    /// The parts of a query that pick entities: required and excluded
    /// tables, compiled filters, and the entities a `related` clause allows.
    pub(crate) fn scan_parts(&self, q: &Query) -> Result<Scan> {
        self.scan_parts_with(q, true)
    }

    /// [`World::scan_parts`], asking the indexes for candidates only when
    /// `use_index` (a live plan checks entities one by one and never needs them).
    pub(crate) fn scan_parts_with(&self, q: &Query, use_index: bool) -> Result<Scan> {
        let mut with: Vec<TableId> = q.with.iter().map(|t| self.table_id(t)).collect::<Result<_>>()?;
        let without: Vec<TableId> = q.without.iter().map(|t| self.table_id(t)).collect::<Result<_>>()?;
        let filters: Vec<CompiledFilter> = q.filters.iter().map(|f| self.compile_filter(f)).collect::<Result<_>>()?;
        for f in &filters {
            with.push(f.table);
        }
        let spatial = self.compile_spatial(q.near.as_ref(), q.in_box.as_ref())?;
        for c in &spatial {
            with.push(c.table);
        }
        if let Some(n) = &q.nearest {
            with.push(self.compile_nearest(n)?.table);
        }
        let allowed: Option<FxHashSet<EntityId>> = match &q.related {
            Some(r) => {
                let start = id_from_json(&r.entity)
                    .ok_or_else(|| Error::Query("related.entity must be an entity id".into()))?;
                let rel = match &r.relation {
                    Some(name) => {
                        Some(self.schema().relation_id(name).ok_or_else(|| Error::NoSuchRelation(name.clone()))?)
                    }
                    None => None,
                };
                if r.depth == 0 || r.depth > 64 {
                    return Err(Error::Query("related.depth must be between 1 and 64".into()));
                }
                Some(self.relations().k_hop(start, rel, r.direction, r.depth).into_iter().map(|(e, _)| e).collect())
            }
            None => None,
        };
        with.sort_unstable();
        with.dedup();
        // Of the clauses an index answers, the one with the fewest
        // candidates picks them — unless the open transaction has column
        // images (in-place writes the indexes see only at the next diff):
        // then the scan reads the columns.
        let live_images = !use_index || self.txn.as_ref().is_some_and(|s| s.has_captures());
        let mut indexed: Option<(Answer, Vec<EntityId>)> = None;
        if !live_images {
            let mut offer = |a: Answer, ids: Vec<EntityId>| {
                if indexed.as_ref().is_none_or(|(_, best)| ids.len() < best.len()) {
                    indexed = Some((a, ids));
                }
            };
            for (i, f) in filters.iter().enumerate() {
                let Some(slot) = self.schema().table(f.table).fields[f.field].slot() else { continue };
                let Some(ix) = self.index_on(f.table, slot) else { continue };
                if let Some(ids) = self.indexes[ix].lookup(f.op, &f.values) {
                    offer(Answer::Filter(i), ids);
                }
            }
            for (i, c) in spatial.iter().enumerate() {
                if let Some(ids) = self.spatial_candidates(c) {
                    offer(Answer::Spatial(i), ids);
                }
            }
        }
        Ok(Scan { with, without, filters, allowed, spatial, indexed })
    }

    /// A plain (row) query checked and resolved: its scan (tables required
    /// by filters, order and selection included), its order and its selection.
    pub(crate) fn prepare_plain(&self, q: &Query) -> Result<PlainPlan> {
        self.prepare_plain_with(q, true)
    }

    /// [`World::prepare_plain`], with or without index candidates.
    pub(crate) fn prepare_plain_with(&self, q: &Query, use_index: bool) -> Result<PlainPlan> {
        checked_limit(q)?;
        let mut scan = self.scan_parts_with(q, use_index)?;
        if q.nearest.is_some() && q.order_by.is_some() {
            return Err(Error::Query("nearest returns rows nearest first; leave out order_by".into()));
        }
        let order = if let Some(o) = &q.order_by {
            let (t, fi) = resolve_field(self, &o.field)?;
            let fd = &self.schema().table(t).fields[fi];
            if fd.slot().is_some() && !orderable(&fd.ty) {
                return Err(Error::Query(format!("cannot order by `{}` of type {}", o.field, fd.type_text)));
            }
            scan.with.push(t);
            Some((t, fi, o.desc))
        } else {
            None
        };
        // Selection: (table, field) pairs.
        let mut select: Vec<(TableId, usize)> = Vec::new();
        let all_fields = |t: TableId| (0..self.schema().table(t).fields.len()).map(move |i| (t, i));
        if let Some(items) = &q.select {
            for s in items {
                if s.contains('.') {
                    let (t, fi) = resolve_field(self, s)?;
                    scan.with.push(t);
                    select.push((t, fi));
                } else {
                    let t = self.table_id(s)?;
                    scan.with.push(t);
                    select.extend(all_fields(t));
                }
            }
        } else {
            for name in &q.with {
                select.extend(all_fields(self.table_id(name)?));
            }
        }
        scan.with.sort_unstable();
        scan.with.dedup();
        Ok((scan, order, select))
    }

    /// The index that can serve `order_by` on declared field `fi` of `t`
    /// (none while the transaction has live in-place writes).
    pub(crate) fn order_index(&self, t: TableId, fi: usize) -> Option<usize> {
        if self.txn.as_ref().is_some_and(|s| s.has_captures()) {
            return None;
        }
        let slot = self.schema().table(t).fields[fi].slot()?;
        self.index_on(t, slot)
    }

    /// Run a query with the default budget (no deadline).
    pub fn query(&self, q: &Query) -> Result<Vec<Row>> {
        self.query_within(q, &QueryBudget::default())
    }

    /// Run a query within a budget of time and result size.
    pub fn query_within(&self, q: &Query, budget: &QueryBudget) -> Result<Vec<Row>> {
        let limit = checked_limit(q)?;
        let started = std::time::Instant::now();
        let mut visited = 0usize;
        let mut check_time = || -> Result<()> {
            visited += 1;
            if visited.is_multiple_of(DEADLINE_EVERY)
                && let Some(d) = budget.deadline
                && std::time::Instant::now() >= d
            {
                return Err(Error::QueryTimeout { ms: started.elapsed().as_millis() as u64 });
            }
            Ok(())
        };
        let (scan, order, select) = self.prepare_plain(q)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Ordered queries keep only (key, id) until the page is known.
        let mut keyed: Vec<(Value, EntityId)> = Vec::new();
        let mut out: Vec<Row> = Vec::new();
        let mut bytes = 0usize;
        let mut skipped = 0;
        let materialize = |id: EntityId, bytes: &mut usize| -> Result<Row> {
            let mut values: Vec<(TableId, usize, Value)> = Vec::with_capacity(select.len());
            *bytes += 24;
            for &(t, fi) in &select {
                let v = self.field_value(id, t, fi)?;
                *bytes += 16 + v.approx_json_bytes();
                values.push((t, fi, v));
            }
            if *bytes > budget.max_result_bytes {
                return Err(Error::QueryLimit(format!(
                    "the result would take more than {} bytes; select fewer fields or ask for fewer rows (limit)",
                    budget.max_result_bytes
                )));
            }
            Ok(Row { id, values })
        };
        if !q.group_by.is_empty() || !q.aggregates.is_empty() || q.explain {
            return Err(Error::Query("group_by, aggregates and explain run through query_json".into()));
        }
        // Nearest first: the k nearest matches, then offset and limit.
        if let Some(n) = &q.nearest {
            let plan = self.compile_nearest(n)?;
            // Candidates another index picked are measured directly (the
            // clause it answered is then not checked again).
            let candidates = scan.indexed.as_ref().map(|(_, ids)| ids.as_slice());
            let near = self.run_nearest(&plan, candidates, &mut |id| {
                check_time()?;
                let Ok((a, _)) = self.location(id) else { return Ok(false) };
                Ok(scan.archetype_matches(&self.archetypes()[a as usize]) && scan.entity_matches(self, id)?)
            })?;
            for (id, _) in near.into_iter().skip(q.offset).take(limit) {
                out.push(materialize(id, &mut bytes)?);
            }
            return Ok(out);
        }
        // Ordered by an indexed field, with no filter index to narrow the
        // candidates first: walk the order field's index and stop once the
        // page is full, instead of sorting every match.
        if let Some((t, fi, desc)) = order
            && scan.indexed.is_none()
            && let Some(ix) = self.order_index(t, fi)
        {
            let mut visit = |id: EntityId| -> Result<bool> {
                check_time()?;
                let Ok((a, _)) = self.location(id) else { return Ok(true) };
                if !scan.archetype_matches(&self.archetypes()[a as usize]) || !scan.entity_matches(self, id)? {
                    return Ok(true);
                }
                if skipped < q.offset {
                    skipped += 1;
                    return Ok(true);
                }
                out.push(materialize(id, &mut bytes)?);
                Ok(out.len() < limit)
            };
            let entries = &self.indexes[ix].entries;
            // Keys ascending or descending; ties by id ascending either way
            // (as the sort orders them).
            let walk: Box<dyn Iterator<Item = _>> =
                if desc { Box::new(entries.iter().rev()) } else { Box::new(entries.iter()) };
            'walk: for (_, ids) in walk {
                for id in ids.iter() {
                    if !visit(id)? {
                        break 'walk;
                    }
                }
            }
            return Ok(out);
        }
        scan.visit(self, &mut |id| {
            check_time()?;
            if let Some((t, fi, _)) = order {
                keyed.push((self.field_value(id, t, fi)?, id));
                return Ok(true);
            }
            if skipped < q.offset {
                skipped += 1;
                return Ok(true);
            }
            out.push(materialize(id, &mut bytes)?);
            Ok(out.len() < limit)
        })?;
        if let Some((_, _, desc)) = order {
            keyed.sort_by(|a, b| {
                let o = cmp_values(&a.0, &b.0);
                let o = if desc { o.reverse() } else { o };
                o.then(a.1.cmp(&b.1))
            });
            for (_, id) in keyed.into_iter().skip(q.offset).take(limit) {
                check_time()?;
                out.push(materialize(id, &mut bytes)?);
            }
        }
        Ok(out)
    }

    /// JSON of result rows: `[{"id", "<table>": {"<field>": value}}]`.
    pub fn rows_json(&self, rows: &[Row]) -> serde_json::Value {
        rows.iter()
            .map(|r| {
                let mut m = serde_json::Map::new();
                m.insert("id".into(), id_json(r.id));
                for (t, fi, v) in &r.values {
                    let table = self.schema().table(*t);
                    let f = &table.fields[*fi];
                    let entry = m
                        .entry(table.name.clone())
                        .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
                    if let serde_json::Value::Object(o) = entry {
                        let ty = if f.slot().is_none() { FieldType::Scalar(Scalar::U64) } else { f.ty.clone() };
                        o.insert(f.name.clone(), value::to_json(&ty, v, self.schema()));
                    }
                }
                serde_json::Value::Object(m)
            })
            .collect::<Vec<_>>()
            .into()
    }
}
