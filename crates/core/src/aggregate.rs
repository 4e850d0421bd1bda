//! Aggregates and `explain`: "how many per guild", "average level", and how
//! a query would run.
//!
//! A query with `group_by` and/or `aggregates` returns one row per group
//! instead of one per entity: the group's `table.field` values, `count`, and
//! `sum(table.field)`, `avg(table.field)`, `min(table.field)`,
//! `max(table.field)` as asked. Groups come out ordered by their key (or by
//! `order_by` naming a group field or an aggregate, e.g. `"count"`), then
//! `offset`/`limit` apply. The same filters, `with`/`without` and `related`
//! pick the entities, under the same time budget.
//!
//! `explain` describes the access path without running the query: which
//! index (`"table.field"`) picks the candidates, or `scan` when none can;
//! how each filter and spatial clause is answered (`index` or `check`);
//! whether `order_by` walks an index or sorts; and how many archetypes and
//! rows that reads.

use std::cmp::Ordering;

use rustc_hash::FxHashMap;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::query::{Answer, Query, QueryBudget, checked_limit, cmp_values, orderable, resolve_field};
use crate::schema::{FieldType, Scalar, TableId};
use crate::value::{self, Value};
use crate::world::World;

/// Most groups one query may build.
pub const MAX_GROUPS: usize = 100_000;

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AggOp {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

/// One aggregate: `{"op": "count"}` or `{"op": "sum", "field": "table.field"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aggregate {
    pub op: AggOp,
    pub field: Option<String>,
}

impl Aggregate {
    /// The column name in result rows: `count`, `avg(table.field)`, ...
    pub fn label(&self) -> String {
        match (&self.op, &self.field) {
            (AggOp::Count, None) => "count".into(),
            (op, Some(f)) => format!("{}({f})", op_name(*op)),
            (op, None) => op_name(*op).into(),
        }
    }
}

fn op_name(op: AggOp) -> &'static str {
    match op {
        AggOp::Count => "count",
        AggOp::Sum => "sum",
        AggOp::Avg => "avg",
        AggOp::Min => "min",
        AggOp::Max => "max",
    }
}

/// A resolved aggregate.
struct Agg {
    op: AggOp,
    field: Option<(TableId, usize)>,
    float: bool,
}

/// Running state of one aggregate in one group.
#[derive(Debug, Clone)]
enum Acc {
    Count(u64),
    IntSum(i128, u64),
    FloatSum(f64, u64),
    Extreme(Option<Value>),
}

/// A checked aggregate query: page size, scan, group keys, aggregates and
/// order (group key index or aggregate index, descending).
struct AggPlan {
    limit: usize,
    scan: crate::query::Scan,
    keys: Vec<(TableId, usize)>,
    aggs: Vec<Agg>,
    order: Option<(Option<usize>, Option<usize>, bool)>,
}

/// One group of an aggregate query.
#[derive(Debug, Clone)]
pub struct Group {
    /// The group's values, in `group_by` order.
    pub keys: Vec<Value>,
    accs: Vec<Acc>,
}

fn numeric(ty: &FieldType) -> Option<bool> {
    match ty {
        FieldType::Scalar(Scalar::F32 | Scalar::F64) => Some(true),
        FieldType::Scalar(Scalar::Bool) => None,
        FieldType::Scalar(_) => Some(false),
        _ => None,
    }
}

impl World {
    /// Run any query — plain, aggregate or `explain` — and give its JSON
    /// answer: `{"rows": [...]}` or `{"plan": {...}}`.
    pub fn query_json_within(&self, q: &Query, budget: &QueryBudget) -> Result<serde_json::Value> {
        if q.explain {
            return Ok(serde_json::json!({ "plan": self.explain(q)? }));
        }
        if !q.group_by.is_empty() || !q.aggregates.is_empty() {
            let groups = self.aggregate_within(q, budget)?;
            return Ok(serde_json::json!({ "rows": self.groups_json(q, &groups)? }));
        }
        let rows = self.query_within(q, budget)?;
        Ok(serde_json::json!({ "rows": self.rows_json(&rows) }))
    }

    /// How `q` would run, without running it.
    pub fn explain(&self, q: &Query) -> Result<serde_json::Value> {
        // Checked exactly like the query it describes.
        let scan = if q.group_by.is_empty() && q.aggregates.is_empty() {
            self.prepare_plain(q)?.0
        } else {
            self.prepare_aggregate(q)?.scan
        };
        let (mut archetypes, mut rows) = (0usize, 0usize);
        for a in self.archetypes() {
            if scan.archetype_matches(a) {
                archetypes += 1;
                rows += a.len();
            }
        }
        if let Some((_, ids)) = &scan.indexed {
            rows = ids.len();
        }
        let tables: Vec<&str> = scan.with.iter().map(|&t| self.schema().table(t).name.as_str()).collect();
        let used = scan.indexed.as_ref().map(|(a, _)| *a);
        let filters: Vec<serde_json::Value> = q
            .filters
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let access = if used == Some(Answer::Filter(i)) { "index" } else { "check" };
                serde_json::json!({"field": f.field, "op": f.op_name(), "access": access})
            })
            .collect();
        // The spatial clauses in the order `compile_spatial` compiles them.
        let spatial_fields: Vec<(&str, &str)> = q
            .near
            .as_ref()
            .map(|n| ("near", n.field.as_str()))
            .into_iter()
            .chain(q.in_box.as_ref().map(|b| ("box", b.field.as_str())))
            .collect();
        let mut indexes: Vec<&str> = match used {
            Some(Answer::Filter(i)) => vec![q.filters[i].field.as_str()],
            Some(Answer::Spatial(i)) => vec![spatial_fields[i].1],
            None => Vec::new(),
        };
        let mut spatial: Vec<serde_json::Value> = spatial_fields
            .iter()
            .enumerate()
            .map(|(i, (clause, field))| {
                let access = if used == Some(Answer::Spatial(i)) { "index" } else { "check" };
                serde_json::json!({"clause": clause, "field": field, "access": access})
            })
            .collect();
        let mut access = if scan.indexed.is_some() { "index" } else { "scan" };
        if let Some(n) = &q.nearest {
            let plan = self.compile_nearest(n)?;
            let by_index = scan.indexed.is_none() && self.spatial_index(plan.table, plan.field).is_some();
            if by_index {
                indexes.push(n.field.as_str());
                access = "index";
            }
            spatial.push(serde_json::json!({
                "clause": "nearest", "field": n.field, "k": n.k,
                "access": if by_index { "index" } else { "scan" },
            }));
        }
        let order = q.order_by.as_ref().map(|o| {
            let by_index = q.group_by.is_empty()
                && q.aggregates.is_empty()
                && scan.indexed.is_none()
                && resolve_field(self, &o.field).ok().and_then(|(t, fi)| self.order_index(t, fi)).is_some();
            serde_json::json!({"field": o.field, "desc": o.desc, "access": if by_index { "index" } else { "sort" }})
        });
        Ok(serde_json::json!({
            "access": access,
            "indexes": indexes,
            "spatial": spatial,
            "tables": tables,
            "filters": filters,
            "order_by": order,
            "related": q.related.as_ref().map(|r| serde_json::json!({"depth": r.depth, "access": "traversal"})),
            "group_by": q.group_by,
            "aggregates": q.aggregates.iter().map(Aggregate::label).collect::<Vec<_>>(),
            "archetypes_scanned": archetypes,
            "rows_scanned": rows,
        }))
    }

    /// An aggregate query checked and resolved (nothing is read yet).
    fn prepare_aggregate(&self, q: &Query) -> Result<AggPlan> {
        let limit = checked_limit(q)?;
        if q.select.is_some() {
            return Err(Error::Query("an aggregate query returns its groups; leave out `select`".into()));
        }
        if q.nearest.is_some() {
            return Err(Error::Query(
                "nearest picks rows, not groups; aggregate over `near` (a radius) instead".into(),
            ));
        }
        let mut scan = self.scan_parts(q)?;
        let mut keys = Vec::new();
        for g in &q.group_by {
            let (t, fi) = resolve_field(self, g)?;
            let fd = &self.schema().table(t).fields[fi];
            if fd.slot().is_some() && !orderable(&fd.ty) {
                return Err(Error::Query(format!("cannot group by `{g}` of type {}", fd.type_text)));
            }
            scan.with.push(t);
            keys.push((t, fi));
        }
        let mut aggs = Vec::new();
        for a in &q.aggregates {
            let resolved = match (a.op, &a.field) {
                (AggOp::Count, None) => Agg { op: a.op, field: None, float: false },
                (AggOp::Count, Some(f)) => {
                    return Err(Error::Query(format!("count takes no field (got `{f}`): it counts the group")));
                }
                (op, None) => return Err(Error::Query(format!("{} needs a `field`", op_name(op)))),
                (op, Some(f)) => {
                    let (t, fi) = resolve_field(self, f)?;
                    let fd = &self.schema().table(t).fields[fi];
                    let ty = if fd.slot().is_none() { FieldType::Scalar(Scalar::U64) } else { fd.ty.clone() };
                    let float = match (op, numeric(&ty)) {
                        (AggOp::Sum | AggOp::Avg, Some(float)) => float,
                        (AggOp::Sum | AggOp::Avg, None) => {
                            return Err(Error::Query(format!(
                                "{} needs a numeric field; `{f}` is {}",
                                op_name(op),
                                fd.type_text
                            )));
                        }
                        _ if orderable(&ty) => false,
                        _ => {
                            return Err(Error::Query(format!(
                                "cannot take {} of `{f}` ({})",
                                op_name(op),
                                fd.type_text
                            )));
                        }
                    };
                    scan.with.push(t);
                    Agg { op, field: Some((t, fi)), float }
                }
            };
            aggs.push(resolved);
        }
        scan.with.sort_unstable();
        scan.with.dedup();
        for (i, g) in q.group_by.iter().enumerate() {
            if q.group_by[..i].contains(g) {
                return Err(Error::Query(format!("`{g}` appears twice in group_by")));
            }
        }
        let labels: Vec<String> = q.aggregates.iter().map(Aggregate::label).collect();
        for (i, l) in labels.iter().enumerate() {
            if labels[..i].contains(l) {
                return Err(Error::Query(format!("the aggregate `{l}` is asked for twice")));
            }
        }
        // Order: by a named group field or aggregate, else by the key.
        let order = match &q.order_by {
            None => None,
            Some(o) => {
                if let Some(k) = q.group_by.iter().position(|g| *g == o.field) {
                    Some((Some(k), None, o.desc))
                } else if let Some(a) = labels.iter().position(|l| *l == o.field) {
                    Some((None, Some(a), o.desc))
                } else {
                    return Err(Error::Query(format!(
                        "an aggregate query orders by a group field or an aggregate ({}), not `{}`",
                        q.group_by.iter().chain(&labels).cloned().collect::<Vec<_>>().join(", "),
                        o.field
                    )));
                }
            }
        };
        Ok(AggPlan { limit, scan, keys, aggs, order })
    }

    /// Groups of `q` (see the module docs), ordered and paged.
    // Short names: query, aggregate, value, sum, count.
    #[allow(clippy::many_single_char_names, clippy::too_many_lines)]
    pub fn aggregate_within(&self, q: &Query, budget: &QueryBudget) -> Result<Vec<Group>> {
        let AggPlan { limit, scan, keys, aggs, order } = self.prepare_aggregate(q)?;
        let started = std::time::Instant::now();
        let mut visited = 0usize;
        let mut index: FxHashMap<String, usize> = FxHashMap::default();
        let mut groups: Vec<Group> = Vec::new();
        scan.visit(self, &mut |id| {
            visited += 1;
            if visited.is_multiple_of(1024)
                && let Some(d) = budget.deadline
                && std::time::Instant::now() >= d
            {
                return Err(Error::QueryTimeout { ms: started.elapsed().as_millis() as u64 });
            }
            let kv: Vec<Value> = keys.iter().map(|&(t, fi)| self.field_value(id, t, fi)).collect::<Result<_>>()?;
            let key = format!("{kv:?}");
            let gi = if let Some(&i) = index.get(&key) {
                i
            } else {
                if groups.len() >= MAX_GROUPS {
                    return Err(Error::QueryLimit(format!(
                        "more than {MAX_GROUPS} groups; group by fewer distinct values or filter first"
                    )));
                }
                index.insert(key, groups.len());
                let accs = aggs
                    .iter()
                    .map(|a| match a.op {
                        AggOp::Count => Acc::Count(0),
                        AggOp::Sum | AggOp::Avg if a.float => Acc::FloatSum(0.0, 0),
                        AggOp::Sum | AggOp::Avg => Acc::IntSum(0, 0),
                        AggOp::Min | AggOp::Max => Acc::Extreme(None),
                    })
                    .collect();
                groups.push(Group { keys: kv, accs });
                groups.len() - 1
            };
            for (a, acc) in aggs.iter().zip(groups[gi].accs.iter_mut()) {
                let v = match a.field {
                    Some((t, fi)) => Some(self.field_value(id, t, fi)?),
                    None => None,
                };
                match (acc, v) {
                    (Acc::Count(n), _) => *n += 1,
                    (Acc::IntSum(s, n), Some(Value::U64(x))) => {
                        *s += i128::from(x);
                        *n += 1;
                    }
                    (Acc::IntSum(s, n), Some(Value::I64(x))) => {
                        *s += i128::from(x);
                        *n += 1;
                    }
                    (Acc::FloatSum(s, n), Some(Value::F32(x))) => {
                        *s += f64::from(x);
                        *n += 1;
                    }
                    (Acc::FloatSum(s, n), Some(Value::F64(x))) => {
                        *s += x;
                        *n += 1;
                    }
                    (Acc::Extreme(cur), Some(v)) => {
                        let better = cur.as_ref().is_none_or(|c| {
                            let o = cmp_values(&v, c);
                            if a.op == AggOp::Min { o == Ordering::Less } else { o == Ordering::Greater }
                        });
                        if better {
                            *cur = Some(v);
                        }
                    }
                    _ => {}
                }
            }
            Ok(true)
        })?;
        let key_cmp = |a: &Group, b: &Group| {
            a.keys
                .iter()
                .zip(&b.keys)
                .map(|(x, y)| cmp_values(x, y))
                .find(|o| *o != Ordering::Equal)
                .unwrap_or(Ordering::Equal)
        };
        groups.sort_by(|a, b| {
            let primary = match order {
                Some((Some(k), _, desc)) => {
                    let o = cmp_values(&a.keys[k], &b.keys[k]);
                    if desc { o.reverse() } else { o }
                }
                Some((None, Some(i), desc)) => {
                    let o = acc_cmp(&a.accs[i], &b.accs[i]);
                    if desc { o.reverse() } else { o }
                }
                _ => Ordering::Equal,
            };
            primary.then_with(|| key_cmp(a, b))
        });
        Ok(groups.into_iter().skip(q.offset).take(limit).collect())
    }

    /// JSON rows of groups: `{"table.field": value, ..., "count": n, "avg(table.field)": x}`.
    pub fn groups_json(&self, q: &Query, groups: &[Group]) -> Result<serde_json::Value> {
        let key_types: Vec<FieldType> = q
            .group_by
            .iter()
            .map(|g| {
                let (t, fi) = resolve_field(self, g)?;
                let fd = &self.schema().table(t).fields[fi];
                Ok(if fd.slot().is_none() { FieldType::Scalar(Scalar::U64) } else { fd.ty.clone() })
            })
            .collect::<Result<_>>()?;
        let agg_types: Vec<Option<FieldType>> = q
            .aggregates
            .iter()
            .map(|a| {
                a.field
                    .as_ref()
                    .map(|f| {
                        resolve_field(self, f).map(|(t, fi)| {
                            let fd = &self.schema().table(t).fields[fi];
                            if fd.slot().is_none() { FieldType::Scalar(Scalar::U64) } else { fd.ty.clone() }
                        })
                    })
                    .transpose()
            })
            .collect::<Result<_>>()?;
        let rows: Vec<serde_json::Value> = groups
            .iter()
            .map(|g| {
                let mut m = serde_json::Map::new();
                for ((name, ty), v) in q.group_by.iter().zip(&key_types).zip(&g.keys) {
                    m.insert(name.clone(), value::to_json(ty, v, self.schema()));
                }
                for ((a, ty), acc) in q.aggregates.iter().zip(&agg_types).zip(&g.accs) {
                    let v = match (a.op, acc) {
                        (_, Acc::Count(n)) => serde_json::json!(n),
                        (AggOp::Avg, Acc::IntSum(s, n)) => avg(*s as f64, *n),
                        (AggOp::Avg, Acc::FloatSum(s, n)) => avg(*s, *n),
                        (_, Acc::IntSum(s, _)) => int_json(*s),
                        (_, Acc::FloatSum(s, _)) => float_json(*s),
                        (_, Acc::Extreme(Some(v))) => {
                            ty.as_ref().map_or(serde_json::Value::Null, |ty| value::to_json(ty, v, self.schema()))
                        }
                        (_, Acc::Extreme(None)) => serde_json::Value::Null,
                    };
                    m.insert(a.label(), v);
                }
                serde_json::Value::Object(m)
            })
            .collect();
        Ok(rows.into())
    }
}

fn acc_cmp(a: &Acc, b: &Acc) -> Ordering {
    match (a, b) {
        (Acc::Count(x), Acc::Count(y)) => x.cmp(y),
        (Acc::IntSum(x, _), Acc::IntSum(y, _)) => x.cmp(y),
        (Acc::FloatSum(x, _), Acc::FloatSum(y, _)) => x.total_cmp(y),
        (Acc::Extreme(Some(x)), Acc::Extreme(Some(y))) => cmp_values(x, y),
        (Acc::Extreme(x), Acc::Extreme(y)) => x.is_some().cmp(&y.is_some()),
        _ => Ordering::Equal,
    }
}

fn avg(sum: f64, n: u64) -> serde_json::Value {
    if n == 0 { serde_json::Value::Null } else { float_json(sum / n as f64) }
}

fn float_json(x: f64) -> serde_json::Value {
    serde_json::Number::from_f64(x).map_or_else(|| serde_json::Value::String(x.to_string()), serde_json::Value::Number)
}

/// Integers beyond ±(2^53−1) travel as decimal strings, like stored values.
fn int_json(x: i128) -> serde_json::Value {
    const SAFE: i128 = (1 << 53) - 1;
    if (-SAFE..=SAFE).contains(&x) { serde_json::json!(x as i64) } else { serde_json::Value::String(x.to_string()) }
}
