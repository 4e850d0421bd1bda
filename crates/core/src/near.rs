//! Spatial clauses of a query: `near` (within a radius of a point or of an
//! entity), `box` (inside an axis-aligned box) and `nearest` (the k nearest,
//! nearest first).
//!
//! ```json
//! {"with": ["player"],
//!  "near": {"field": "transform.position", "point": [10, 0, 5], "radius": 50},
//!  "nearest": {"field": "transform.position", "entity": 42, "k": 10}}
//! ```
//!
//! Each works on any `[f32|f64; 2|3]` field: with a spatial index on it the
//! candidates come from the grid (see [`crate::spatial`]), without one the
//! matching entities are scanned and measured. A position with a NaN or
//! infinite coordinate is never near anything. Distances are Euclidean over
//! the field's dimensions, computed in f64.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::id::EntityId;
use crate::query::{MAX_LIMIT, resolve_field};
use crate::schema::TableId;
use crate::spatial::{Point, dist_key, point_of, spatial_dims, within_radius};
use crate::value::Value;
use crate::world::{World, id_from_json};

/// `near`: within `radius` of `point`, or of where `entity` is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Near {
    pub field: String,
    pub point: Option<Vec<f64>>,
    pub entity: Option<serde_json::Value>,
    pub radius: f64,
}

/// `box`: inside `min..=max` (inclusive, per dimension).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxQuery {
    pub field: String,
    pub min: Vec<f64>,
    pub max: Vec<f64>,
}

/// `nearest`: the `k` nearest to `point` (or to `entity`, which is then
/// left out of the result).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nearest {
    pub field: String,
    pub point: Option<Vec<f64>>,
    pub entity: Option<serde_json::Value>,
    pub k: usize,
}

/// A compiled spatial condition on one field.
#[derive(Debug, Clone)]
pub(crate) struct SpatialCheck {
    pub(crate) table: TableId,
    pub(crate) field: usize,
    pub(crate) shape: Shape,
}

#[derive(Debug, Clone)]
pub(crate) enum Shape {
    Within { center: Point, radius: f64 },
    Box { lo: Point, hi: Point, dims: usize },
}

impl SpatialCheck {
    pub(crate) fn matches(&self, v: &Value) -> bool {
        point_of(v).is_some_and(|p| self.matches_point(&p))
    }

    /// [`SpatialCheck::matches`] on a decoded point.
    pub(crate) fn matches_point(&self, p: &Point) -> bool {
        let p = *p;
        if !p.iter().all(|x| x.is_finite()) {
            return false;
        }
        match &self.shape {
            Shape::Within { center, radius } => within_radius(&p, center, *radius),
            Shape::Box { lo, hi, dims } => (0..*dims).all(|i| p[i] >= lo[i] && p[i] <= hi[i]),
        }
    }
}

/// A compiled `nearest`.
#[derive(Debug, Clone)]
pub(crate) struct NearestPlan {
    pub(crate) table: TableId,
    pub(crate) field: usize,
    pub(crate) center: Point,
    pub(crate) k: usize,
    /// The entity the distance is measured from (left out of the result).
    pub(crate) from: Option<EntityId>,
}

impl World {
    /// (table, declared field, dims) of a spatial clause's field, checked.
    fn spatial_field(&self, clause: &str, path: &str) -> Result<(TableId, usize, usize)> {
        let (t, fi) = resolve_field(self, path)?;
        let f = &self.schema().table(t).fields[fi];
        let dims = f.slot().and(spatial_dims(&f.ty)).ok_or_else(|| {
            Error::Query(format!(
                "{clause} needs a position field ([f32; 2], [f32; 3], [f64; 2] or [f64; 3]); `{path}` is {}",
                f.type_text
            ))
        })?;
        Ok((t, fi, dims))
    }

    /// The point a clause measures from: `point` (with the field's number of
    /// coordinates, all finite) or the position of `entity`.
    fn spatial_center(
        &self,
        clause: &str,
        (t, fi, dims): (TableId, usize, usize),
        point: Option<&[f64]>,
        entity: Option<&serde_json::Value>,
    ) -> Result<(Point, Option<EntityId>)> {
        match (point, entity) {
            (Some(p), None) => Ok((coords(clause, "point", p, dims)?, None)),
            (None, Some(e)) => {
                let id =
                    id_from_json(e).ok_or_else(|| Error::Query(format!("{clause}.entity must be an entity id")))?;
                let v = self.field_value(id, t, fi)?;
                let p = point_of(&v).ok_or_else(|| Error::Query(format!("{clause}.entity has no position")))?;
                if !p.iter().all(|x| x.is_finite()) {
                    return Err(Error::Query(format!(
                        "{clause}.entity {id} is at a position that is not finite; nothing is near it"
                    )));
                }
                Ok((p, Some(id)))
            }
            _ => Err(Error::Query(format!("{clause} takes either `point` or `entity`"))),
        }
    }

    /// Compile `near` and `box` into checks.
    pub(crate) fn compile_spatial(&self, near: Option<&Near>, bx: Option<&BoxQuery>) -> Result<Vec<SpatialCheck>> {
        let mut out = Vec::new();
        if let Some(n) = near {
            let f = self.spatial_field("near", &n.field)?;
            if !(n.radius.is_finite() && n.radius >= 0.0) {
                return Err(Error::Query(format!("near.radius must be a finite number ≥ 0, not {}", n.radius)));
            }
            let (center, _) = self.spatial_center("near", f, n.point.as_deref(), n.entity.as_ref())?;
            out.push(SpatialCheck { table: f.0, field: f.1, shape: Shape::Within { center, radius: n.radius } });
        }
        if let Some(b) = bx {
            let f = self.spatial_field("box", &b.field)?;
            let lo = coords("box", "min", &b.min, f.2)?;
            let hi = coords("box", "max", &b.max, f.2)?;
            out.push(SpatialCheck { table: f.0, field: f.1, shape: Shape::Box { lo, hi, dims: f.2 } });
        }
        Ok(out)
    }

    /// Compile `nearest`.
    pub(crate) fn compile_nearest(&self, n: &Nearest) -> Result<NearestPlan> {
        let f = self.spatial_field("nearest", &n.field)?;
        if n.k == 0 || n.k > MAX_LIMIT {
            return Err(Error::Query(format!("nearest.k must be between 1 and {MAX_LIMIT}, not {}", n.k)));
        }
        let (center, from) = self.spatial_center("nearest", f, n.point.as_deref(), n.entity.as_ref())?;
        Ok(NearestPlan { table: f.0, field: f.1, center, k: n.k, from })
    }

    /// The spatial index on declared field `fi` of `t`, usable now (none
    /// while the open transaction has live in-place writes).
    pub(crate) fn spatial_index(&self, t: TableId, fi: usize) -> Option<usize> {
        if self.txn.as_ref().is_some_and(|s| s.has_captures()) {
            return None;
        }
        let slot = self.schema().table(t).fields[fi].slot()?;
        let ix = self.index_on(t, slot)?;
        self.indexes[ix].spatial.is_some().then_some(ix)
    }

    /// Candidates for a spatial check from its field's index, if it has one.
    pub(crate) fn spatial_candidates(&self, c: &SpatialCheck) -> Option<Vec<EntityId>> {
        let g = self.indexes[self.spatial_index(c.table, c.field)?].spatial.as_ref()?;
        let slot = self.schema().table(c.table).fields[c.field].slot()?;
        let pos = |id: EntityId| self.point_at(c.table, slot, id);
        Some(match &c.shape {
            Shape::Within { center, radius } => g.within(center, *radius, &pos),
            Shape::Box { lo, hi, .. } => g.in_box(lo, hi, &pos),
        })
    }

    /// Entities whose `field` (`table.field`, a position) lies within
    /// `radius` of `point`, by id.
    pub fn within(&self, field: &str, point: &[f64], radius: f64) -> Result<Vec<EntityId>> {
        let near = Near { field: field.to_string(), point: Some(point.to_vec()), entity: None, radius };
        let checks = self.compile_spatial(Some(&near), None)?;
        let c = &checks[0];
        if let Some(ids) = self.spatial_candidates(c) {
            return Ok(ids);
        }
        let mut out = Vec::new();
        for arch in self.archetypes() {
            if !arch.has(c.table) {
                continue;
            }
            for &id in &arch.entities {
                if c.matches(&self.field_value(id, c.table, c.field)?) {
                    out.push(id);
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The `k` entities whose `field` (a position) is nearest `point`,
    /// nearest first, with their distances.
    pub fn nearest(&self, field: &str, point: &[f64], k: usize) -> Result<Vec<(EntityId, f64)>> {
        let n = Nearest { field: field.to_string(), point: Some(point.to_vec()), entity: None, k };
        let plan = self.compile_nearest(&n)?;
        self.run_nearest(&plan, None, &mut |_| Ok(true))
    }

    /// The `plan.k` nearest entities that `accept` takes, nearest first
    /// (ties by id): among `candidates` when given (another index picked
    /// them), else through the spatial index when there is one, else by
    /// measuring every entity with the field.
    pub(crate) fn run_nearest(
        &self,
        plan: &NearestPlan,
        candidates: Option<&[EntityId]>,
        accept: &mut dyn FnMut(EntityId) -> Result<bool>,
    ) -> Result<Vec<(EntityId, f64)>> {
        let mut failed: Option<Error> = None;
        let mut take = |id: EntityId| -> bool {
            if failed.is_some() || Some(id) == plan.from {
                return false;
            }
            match accept(id) {
                Ok(b) => b,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        };
        if candidates.is_none()
            && let Some(ix) = self.spatial_index(plan.table, plan.field)
            && let Some(g) = self.indexes[ix].spatial.as_ref()
            && let Some(slot) = self.schema().table(plan.table).fields[plan.field].slot()
        {
            let pos = |id: EntityId| self.point_at(plan.table, slot, id);
            let out = g.nearest(&plan.center, plan.k, &pos, &mut take);
            return match failed {
                Some(e) => Err(e),
                None => Ok(out),
            };
        }
        let mut all: Vec<(f64, EntityId)> = Vec::new();
        let mut measure = |id: EntityId| -> Result<()> {
            let Some(p) = point_of(&self.field_value(id, plan.table, plan.field)?) else { return Ok(()) };
            if p.iter().all(|x| x.is_finite()) && take(id) {
                all.push((dist_key(&p, &plan.center), id));
            }
            Ok(())
        };
        match candidates {
            Some(ids) => {
                for &id in ids {
                    if self.has(id, plan.table) {
                        measure(id)?;
                    }
                }
            }
            None => {
                for arch in self.archetypes() {
                    if arch.has(plan.table) {
                        for &id in &arch.entities {
                            measure(id)?;
                        }
                    }
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        all.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        Ok(all.into_iter().take(plan.k).map(|(d, id)| (id, d * 4.0)).collect())
    }
}

/// A point from `n` JSON coordinates, all finite.
fn coords(clause: &str, what: &str, p: &[f64], dims: usize) -> Result<Point> {
    if p.len() != dims {
        return Err(Error::Query(format!("{clause}.{what} needs {dims} coordinates, not {}", p.len())));
    }
    if !p.iter().all(|x| x.is_finite()) {
        return Err(Error::Query(format!("{clause}.{what} coordinates must be finite numbers")));
    }
    let mut out = [0.0; 3];
    out[..dims].copy_from_slice(p);
    Ok(out)
}
