//! Live (incremental) evaluation of a query, for subscriptions: which
//! entities a commit touched ([`Touched`]), and whether one entity belongs
//! to a query's result ([`LivePlan`], [`World::live_matches`],
//! [`World::live_encode`]).
//!
//! Why it exists: a subscription must be brought up to date on every
//! commit, and running its whole query again each time costs the size of
//! the world per subscriber per commit. For a query whose membership
//! depends only on each entity's own components (`with`, `without`,
//! filters, `near`/`box` around a fixed point) a commit can change the
//! result only for the entities it touched, so those are all that is
//! checked. A `near` clause that follows an entity moves with it: when that
//! entity moved, the candidates are the area around its new position (from
//! the spatial index) and the rows held before. Queries whose membership
//! depends on other entities (`order_by` with `limit`, `nearest`,
//! `related`, `offset`) are not incremental ([`LivePlan::incremental`]) and
//! are run again by the caller.
//!
//! Hysteresis: a `near` plan can carry a wider radius for entities already
//! in the result, so an entity on the edge does not enter and leave on
//! every small move.

use rustc_hash::{FxHashMap, FxHashSet};

use crate::changeset::{ChangeSet, Op};
use crate::error::{Error, Result};
use crate::id::EntityId;
use crate::near::Shape;
use crate::query::{Query, Scan};
use crate::schema::TableId;
use crate::spatial::{Point, dist, point_of};
use crate::value;
use crate::world::World;

/// What one commit (or several, merged) touched.
#[derive(Debug, Clone, Default)]
pub struct Touched {
    /// Entities whose component in the table was added, removed or written.
    pub tables: FxHashMap<TableId, FxHashSet<EntityId>>,
    /// Every entity touched in any way (created, deleted, written, linked).
    pub entities: FxHashSet<EntityId>,
    /// Entities deleted.
    pub deleted: FxHashSet<EntityId>,
    /// Whether relations were linked or unlinked.
    pub links: bool,
    /// Whether anything may have changed (a migration, or an op that did
    /// not decode): every subscription must be evaluated afresh.
    pub everything: bool,
    /// Whether commits were missed (a reader fell behind): which entities
    /// changed is unknown, but the schema is not.
    pub unknown: bool,
}

impl Touched {
    /// What change set `cs` touches.
    pub fn of(cs: &ChangeSet) -> Touched {
        let mut t = Touched::default();
        let on = |t: &mut Touched, table: TableId, id: EntityId| {
            t.tables.entry(table).or_default().insert(id);
            t.entities.insert(id);
        };
        for op in cs {
            match op {
                Ok(Op::CreateEntity(id)) => {
                    t.entities.insert(id);
                }
                Ok(Op::DeleteEntity(id)) => {
                    t.entities.insert(id);
                    t.deleted.insert(id);
                }
                Ok(
                    Op::AddComponent { id, table, .. }
                    | Op::RemoveComponent { id, table }
                    | Op::SetField { id, table, .. },
                ) => on(&mut t, table, id),
                Ok(op @ Op::SetMany { table, .. }) => {
                    for (id, _) in op.set_many_entries() {
                        on(&mut t, table, id);
                    }
                }
                Ok(Op::SetRun { table, ids, .. }) => {
                    for id in ids.iter() {
                        on(&mut t, table, id);
                    }
                }
                Ok(op @ Op::SpawnMany { ids, .. }) => {
                    let tables = op.spawn_tables();
                    for id in ids.iter() {
                        for &table in &tables {
                            on(&mut t, table, id);
                        }
                    }
                }
                Ok(Op::Link { from, to, .. } | Op::Unlink { from, to, .. }) => {
                    t.links = true;
                    t.entities.insert(from);
                    t.entities.insert(to);
                }
                Ok(Op::Migrate { .. }) | Err(_) => t.everything = true,
            }
        }
        t
    }

    /// Add what `other` touched.
    pub fn merge(&mut self, other: &Touched) {
        for (table, ids) in &other.tables {
            self.tables.entry(*table).or_default().extend(ids);
        }
        self.entities.extend(&other.entities);
        self.deleted.extend(&other.deleted);
        self.links |= other.links;
        self.everything |= other.everything;
        self.unknown |= other.unknown;
    }

    /// The entities touched in any of `tables`, and every deleted entity.
    pub fn in_tables(&self, tables: &[TableId]) -> FxHashSet<EntityId> {
        let mut out: FxHashSet<EntityId> = self.deleted.clone();
        for t in tables {
            if let Some(ids) = self.tables.get(t) {
                out.extend(ids);
            }
        }
        out
    }

    /// Whether the commit touched any of `tables` (or deleted anything).
    pub fn touches(&self, tables: &[TableId]) -> bool {
        self.everything
            || self.unknown
            || !self.deleted.is_empty()
            || tables.iter().any(|t| self.tables.contains_key(t))
    }
}

/// Several commits' [`Touched`] seen as one, without merging them (a
/// merge copies every entity id; a view only asks each in turn).
#[derive(Debug, Clone, Copy)]
pub struct Touches<'a>(pub &'a [&'a Touched]);

impl Touches<'_> {
    pub fn everything(&self) -> bool {
        self.0.iter().any(|t| t.everything)
    }

    pub fn links(&self) -> bool {
        self.0.iter().any(|t| t.links || t.unknown)
    }

    /// Whether commits were missed (see [`Touched::unknown`]).
    pub fn unknown(&self) -> bool {
        self.0.iter().any(|t| t.unknown)
    }

    pub fn any_deleted(&self) -> bool {
        self.0.iter().any(|t| !t.deleted.is_empty())
    }

    /// Whether any commit touched any of `tables` (or deleted anything).
    pub fn touches(&self, tables: &[TableId]) -> bool {
        self.0.iter().any(|t| t.touches(tables))
    }

    /// Whether any commit wrote table `t`.
    pub fn wrote(&self, t: TableId) -> bool {
        self.0.iter().any(|x| x.tables.contains_key(&t))
    }

    /// Whether any commit touched entity `id`.
    pub fn contains(&self, id: EntityId) -> bool {
        self.0.iter().any(|t| t.entities.contains(&id))
    }

    /// The entities touched in any of `tables`, and every deleted entity.
    pub fn in_tables(&self, tables: &[TableId]) -> FxHashSet<EntityId> {
        let mut out = FxHashSet::default();
        for t in self.0 {
            out.extend(&t.deleted);
            for table in tables {
                if let Some(ids) = t.tables.get(table) {
                    out.extend(ids);
                }
            }
        }
        out
    }
}

/// A query compiled for live evaluation.
pub struct LivePlan {
    scan: Scan,
    /// The same scan with the `near` radius widened, for entities already
    /// in the result (hysteresis); `None` when there is no widening.
    outer: Option<Scan>,
    select: Vec<(TableId, usize)>,
    /// Every table whose changes can change the result or its rows.
    pub tables: Vec<TableId>,
    /// The query requires no table: any entity touched may enter or leave.
    pub any_table: bool,
    /// Whether the result can be kept up to date from touched entities
    /// alone (see the module docs).
    pub incremental: bool,
    /// Whether the result depends on relations (`related`).
    pub follows_relations: bool,
    /// The entity a `near` or `nearest` clause is centred on.
    pub center_entity: Option<EntityId>,
    /// The centre of the `near` (or `nearest`) clause.
    pub center: Option<Point>,
    /// The field positions are read from for distances: (table, field).
    position: Option<(TableId, usize)>,
}

impl std::fmt::Debug for LivePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivePlan")
            .field("tables", &self.tables)
            .field("incremental", &self.incremental)
            .field("center_entity", &self.center_entity)
            .finish_non_exhaustive()
    }
}

impl LivePlan {
    /// The selected (table, field) of each row value, in order.
    pub fn select(&self) -> &[(TableId, usize)] {
        &self.select
    }
}

impl World {
    /// Compile `q` for live evaluation; `hysteresis` (a fraction of the
    /// `near` radius, ≥ 0) widens the radius an entity already in the
    /// result must leave before it is dropped.
    pub fn live_plan(&self, q: &Query, hysteresis: f64) -> Result<LivePlan> {
        if !(hysteresis.is_finite() && (0.0..=10.0).contains(&hysteresis)) {
            return Err(Error::Query(format!("hysteresis must be between 0 and 10, not {hysteresis}")));
        }
        let (scan, order, select) = self.prepare_plain_with(q, false)?;
        let outer = match (&q.near, hysteresis > 0.0) {
            (Some(n), true) => {
                let mut wide = q.clone();
                let mut n = n.clone();
                n.radius *= 1.0 + hysteresis;
                wide.near = Some(n);
                let (s, _, _) = self.prepare_plain_with(&wide, false)?;
                Some(s)
            }
            _ => None,
        };
        let mut tables: Vec<TableId> =
            scan.with.iter().chain(&scan.without).copied().chain(select.iter().map(|(t, _)| *t)).collect();
        if let Some((t, _, _)) = order {
            tables.push(t);
        }
        tables.sort_unstable();
        tables.dedup();
        let incremental = order.is_none() && q.nearest.is_none() && q.related.is_none() && q.offset == 0;
        let (center_entity, center, position) = if let Some(n) = &q.near {
            let c = scan.spatial.first().map(|c| (c.table, c.field));
            let centre = scan.spatial.first().and_then(|c| match &c.shape {
                Shape::Within { center, .. } => Some(*center),
                Shape::Box { .. } => None,
            });
            (n.entity.as_ref().and_then(crate::world::id_from_json), centre, c)
        } else if let Some(n) = &q.nearest {
            let plan = self.compile_nearest(n)?;
            (plan.from, Some(plan.center), Some((plan.table, plan.field)))
        } else {
            (None, None, None)
        };
        let any_table = scan.with.is_empty();
        Ok(LivePlan {
            any_table,
            scan,
            outer,
            select,
            tables,
            incremental,
            follows_relations: q.related.is_some(),
            center_entity,
            center,
            position,
        })
    }

    /// Move a plan that follows an entity to where that entity is now
    /// (cheaper than compiling it again).
    pub fn live_recenter(&self, plan: &mut LivePlan) -> Result<()> {
        let Some(id) = plan.center_entity else { return Ok(()) };
        let Some((t, fi)) = plan.position else { return Ok(()) };
        let p = point_of(&self.field_value(id, t, fi)?)
            .filter(|p| p.iter().all(|x| x.is_finite()))
            .ok_or_else(|| Error::Query(format!("entity {id} has no finite position")))?;
        for scan in std::iter::once(&mut plan.scan).chain(plan.outer.as_mut()) {
            for c in &mut scan.spatial {
                if let Shape::Within { center, .. } = &mut c.shape {
                    *center = p;
                }
            }
        }
        plan.center = Some(p);
        Ok(())
    }

    /// Whether entity `id` belongs to the result (`member`: it already does,
    /// so the widened radius applies). Its row is encoded separately
    /// ([`World::live_encode`]): once per commit, shared by subscribers.
    pub fn live_matches(&self, plan: &LivePlan, id: EntityId, member: bool) -> Result<bool> {
        let scan = if member { plan.outer.as_ref().unwrap_or(&plan.scan) } else { &plan.scan };
        let Ok((a, _)) = self.location(id) else { return Ok(false) };
        Ok(scan.archetype_matches(&self.archetypes()[a as usize]) && scan.entity_matches(self, id)?)
    }

    /// Entity `id`'s selected values as bytes appended to `out` (see
    /// [`row_fields`]), whether or not it matches (it must have the selected
    /// components). Comparing these bytes tells what changed without
    /// decoding anything.
    pub fn live_encode(&self, plan: &LivePlan, id: EntityId, out: &mut Vec<u8>) -> Result<()> {
        for &(t, fi) in &plan.select {
            match self.schema().table(t).fields[fi].slot() {
                Some(slot) => {
                    let b = self.field_bytes(id, t, slot)?;
                    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    out.extend_from_slice(b);
                }
                // The entity's own id: nothing stored.
                None => out.extend_from_slice(&0u32.to_le_bytes()),
            }
        }
        Ok(())
    }

    /// JSON text of a row from its bytes (see [`World::live_encode`]),
    /// `{"id", "<table>": {"<field>": value}}`, with only the values at
    /// `positions` (all when `None`), appended to `out`.
    pub fn live_row_text(
        &self,
        plan: &LivePlan,
        id: EntityId,
        bytes: &[u8],
        positions: Option<&[usize]>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let fields: Vec<&[u8]> = row_fields(bytes).collect();
        let all: Vec<usize>;
        let positions = if let Some(p) = positions {
            p
        } else {
            all = (0..plan.select.len()).collect();
            &all
        };
        // Fields grouped by table, tables in order of first appearance.
        let mut groups: Vec<(TableId, Vec<usize>)> = Vec::new();
        for &i in positions {
            let Some(&(t, _)) = plan.select.get(i) else { continue };
            match groups.iter_mut().find(|(g, _)| *g == t) {
                Some((_, v)) => v.push(i),
                None => groups.push((t, vec![i])),
            }
        }
        out.extend_from_slice(b"{\"id\":");
        let _ = serde_json::to_writer(&mut *out, &crate::world::id_json(id));
        for (t, items) in groups {
            let table = self.schema().table(t);
            out.push(b',');
            let _ = serde_json::to_writer(&mut *out, &table.name);
            out.extend_from_slice(b":{");
            for (k, i) in items.into_iter().enumerate() {
                let fi = plan.select[i].1;
                let f = &table.fields[fi];
                if k > 0 {
                    out.push(b',');
                }
                let _ = serde_json::to_writer(&mut *out, &f.name);
                out.push(b':');
                match (f.slot(), fields.get(i)) {
                    (Some(slot), Some(b)) => {
                        let v = self.layouts[t as usize].decode_slot(self.schema(), slot, b).map_err(|reason| {
                            Error::InvalidValue { table: table.name.clone(), field: f.name.clone(), reason }
                        })?;
                        value::write_json(&f.ty, &v, self.schema(), out);
                    }
                    _ => {
                        let _ = serde_json::to_writer(&mut *out, &crate::world::id_json(id));
                    }
                }
            }
            out.push(b'}');
        }
        out.push(b'}');
        Ok(())
    }

    /// The entities around a `near` plan's centre (widened radius), from the
    /// spatial index; `None` when the plan has no indexed `near`.
    pub fn live_area(&self, plan: &LivePlan) -> Option<Vec<EntityId>> {
        let scan = plan.outer.as_ref().unwrap_or(&plan.scan);
        let c = scan.spatial.iter().find(|c| matches!(c.shape, Shape::Within { .. }))?;
        self.spatial_candidates(c)
    }

    /// Whether [`World::live_area`] can answer for this plan (an indexed `near`).
    pub fn live_has_area(&self, plan: &LivePlan) -> bool {
        let scan = plan.outer.as_ref().unwrap_or(&plan.scan);
        scan.spatial
            .iter()
            .any(|c| matches!(c.shape, Shape::Within { .. }) && self.spatial_index(c.table, c.field).is_some())
    }

    /// Where entity `id` is on the plan's position field.
    pub fn live_position(&self, plan: &LivePlan, id: EntityId) -> Option<Point> {
        let (t, fi) = plan.position?;
        point_of(&self.field_value(id, t, fi).ok()?)
    }

    /// Distance from the plan's centre to point `p` (infinite without one).
    pub fn live_distance(plan: &LivePlan, p: Option<Point>) -> f64 {
        match (plan.center, p) {
            (Some(c), Some(p)) => {
                let d = dist(&c, &p);
                if d.is_nan() { f64::INFINITY } else { d }
            }
            _ => f64::INFINITY,
        }
    }
}

/// The values of a row encoded by [`World::live_encode`].
pub fn row_fields(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let n = (u32::from_le_bytes(*len) as usize).min(tail.len());
        let (v, after) = tail.split_at(n);
        rest = after;
        Some(v)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::schema::Schema;
    use std::sync::Arc;

    const SCHEMA: &str = r#"
[tables.pos]
[[tables.pos.fields]]
name = "p"
type = "[f32; 2]"
index = "spatial"
cell_size = 10.0
[tables.hp]
[[tables.hp.fields]]
name = "v"
type = "u32"
"#;

    fn world() -> World {
        World::new(Arc::new(Schema::from_toml_str(SCHEMA).unwrap()))
    }

    fn spawn(w: &mut World, comps: &serde_json::Value) -> EntityId {
        let id = w.create_entity().unwrap();
        for (t, v) in comps.as_object().unwrap() {
            let t = w.table_id(t).unwrap();
            w.insert_json(id, t, v).unwrap();
        }
        id
    }

    #[test]
    fn touched_names_tables_and_entities() {
        let mut w = world();
        w.begin().unwrap();
        let a = spawn(&mut w, &serde_json::json!({"pos": {"p": [1.0, 1.0]}, "hp": {"v": 3}}));
        let c = w.commit().unwrap();
        let t = Touched::of(&c.changes);
        let pos = w.table_id("pos").unwrap();
        let hp = w.table_id("hp").unwrap();
        assert!(t.tables[&pos].contains(&a) && t.tables[&hp].contains(&a));
        assert!(t.touches(&[hp]) && !t.everything);
        w.begin().unwrap();
        w.delete_entity(a).unwrap();
        let c = w.commit().unwrap();
        let t = Touched::of(&c.changes);
        assert!(t.deleted.contains(&a) && t.touches(&[]));
    }

    #[test]
    fn live_row_applies_hysteresis_only_to_members() {
        let mut w = world();
        w.begin().unwrap();
        let e = spawn(&mut w, &serde_json::json!({"pos": {"p": [10.5, 0.0]}}));
        w.commit().unwrap();
        let q: Query = serde_json::from_value(serde_json::json!({
            "with": ["pos"], "near": {"field": "pos.p", "point": [0.0, 0.0], "radius": 10.0}
        }))
        .unwrap();
        let plan = w.live_plan(&q, 0.1).unwrap();
        assert!(plan.incremental);
        assert!(!w.live_matches(&plan, e, false).unwrap(), "outside the radius: does not enter");
        assert!(w.live_matches(&plan, e, true).unwrap(), "inside the margin: a member stays");
        let mut bytes = Vec::new();
        w.live_encode(&plan, e, &mut bytes).unwrap();
        assert!(w.live_area(&plan).unwrap().contains(&e));
        // The text is what a query renders for the same row.
        let mut text = Vec::new();
        w.live_row_text(&plan, e, &bytes, None, &mut text).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
        let wide: Query = serde_json::from_value(serde_json::json!({"with": ["pos"]})).unwrap();
        let rows = w.query(&wide).unwrap();
        assert_eq!(v, w.rows_json(&rows)[0]);
        let mut only_id = Vec::new();
        w.live_row_text(&plan, e, &bytes, Some(&[]), &mut only_id).unwrap();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&only_id).unwrap(), serde_json::json!({"id": e.0}));
        let mut moved = Vec::new();
        w.live_encode(&plan, e, &mut moved).unwrap();
        assert!(row_fields(&bytes).eq(row_fields(&moved)));
        assert!(w.live_plan(&q, f64::NAN).is_err());
    }
}
