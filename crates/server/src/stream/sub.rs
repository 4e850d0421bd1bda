//! One subscription: its query compiled for live evaluation, the rows the
//! client holds, and the updates it has not been sent yet.
//!
//! Each commit updates `rows` (the result as of the connection's sequence)
//! and records, per entity, what the client lacks (`dirty`): entered (send
//! the whole row), changed (send these fields), left (send the id). A later
//! commit merges into what is already pending — the latest value wins — so
//! what a slow client is owed never grows beyond one entry per entity of
//! the result. A flush turns pending entries into one delta, all of them,
//! or — under a byte budget — the most urgent first: departures, then
//! nearest first, with an entity's urgency growing the longer it waits, so
//! farther entities are updated less often instead of never (level of
//! detail).

use std::time::{Duration, Instant};

use ecsdb::core::live::{LivePlan, Touched, Touches};
use ecsdb::core::world::World;
use ecsdb::{EntityId, Query, Row};
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::{Value as J, json};

/// A byte budget: `rate` bytes per second, up to one second's worth saved.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(bytes_per_second: u64, now: Instant) -> Bucket {
        let rate = bytes_per_second as f64;
        Bucket { rate, tokens: rate / 10.0, last: now }
    }

    pub fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.rate);
    }

    fn has_room(&self) -> bool {
        self.tokens > 0.0
    }

    fn spend(&mut self, bytes: usize) {
        self.tokens -= bytes as f64;
    }
}

#[derive(Debug, Clone)]
enum Dirty {
    /// The client lacks this row (`client_has`: it holds an older copy).
    Entered {
        client_has: bool,
    },
    /// These selected values (positions in the row) changed.
    Changed(Vec<usize>),
    Left,
}

#[derive(Debug)]
struct Pending {
    kind: Dirty,
    /// Sequence at which it first became pending.
    since: u64,
}

/// Subscription options beside the query.
#[derive(Debug, Clone, Default)]
pub struct SubOptions {
    /// Fraction of a `near` radius an entity in the result may stray past
    /// before it leaves.
    pub hysteresis: f64,
    /// Bytes per second this subscription may use.
    pub bytes_per_second: Option<u64>,
}

/// A live subscription.
#[derive(Debug)]
pub struct Sub {
    query: Query,
    opts: SubOptions,
    plan: LivePlan,
    rows: FxHashMap<EntityId, Row>,
    dirty: FxHashMap<EntityId, Pending>,
    /// Most rows an incremental subscription may hold.
    max_rows: usize,
    bucket: Option<Bucket>,
    /// Sequence `rows` are at.
    pub seq: u64,
    /// Updates merged into one already pending, since last asked.
    coalesced: u64,
}

/// Why a subscription cannot go on (sent to the client as an error, and
/// the subscription is dropped).
pub type Failure = String;

fn query_budget(timeout_ms: u64, max_bytes: usize) -> ecsdb::QueryBudget {
    ecsdb::QueryBudget {
        deadline: Some(Instant::now() + Duration::from_millis(timeout_ms)),
        max_result_bytes: max_bytes,
    }
}

/// Server limits a subscription runs under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub query_timeout_ms: u64,
    pub max_result_bytes: usize,
    pub max_rows: usize,
}

impl Sub {
    /// Compile and run `query` on `w` (at sequence `w.seq()`).
    pub fn new(w: &World, query: Query, opts: SubOptions, limits: Limits) -> Result<Sub, Failure> {
        if query.explain || !query.group_by.is_empty() || !query.aggregates.is_empty() {
            return Err("subscriptions follow rows: explain, group_by and aggregates are not supported".into());
        }
        let q = crate::guard::user_query(w, query).map_err(|e| e.message)?;
        let plan = w.live_plan(&q, opts.hysteresis).map_err(|e| e.to_string())?;
        let mut sub = Sub {
            query: q,
            bucket: opts.bytes_per_second.map(|b| Bucket::new(b, Instant::now())),
            opts,
            plan,
            rows: FxHashMap::default(),
            dirty: FxHashMap::default(),
            max_rows: limits.max_rows,
            seq: w.seq(),
            coalesced: 0,
        };
        sub.rows = sub.run(w, limits)?;
        Ok(sub)
    }

    /// Whether this subscription is kept up to date incrementally (else its
    /// query runs again on every commit that touches its tables).
    pub fn incremental(&self) -> bool {
        self.plan.incremental && self.query.limit.is_none()
    }

    /// Run the whole query now.
    fn run(&self, w: &World, limits: Limits) -> Result<FxHashMap<EntityId, Row>, Failure> {
        let budget = query_budget(limits.query_timeout_ms, limits.max_result_bytes);
        let rows = if self.incremental() {
            let mut q = self.query.clone();
            q.limit = Some(self.max_rows + 1);
            let rows = w.query_within(&q, &budget).map_err(|e| e.to_string())?;
            if rows.len() > self.max_rows {
                return Err(self.too_many());
            }
            rows
        } else {
            w.query_within(&self.query, &budget).map_err(|e| e.to_string())?
        };
        Ok(rows.into_iter().map(|r| (r.id, r)).collect())
    }

    fn too_many(&self) -> Failure {
        format!(
            "the subscription's result holds more than {} rows (the most one subscription may hold); narrow the query",
            self.max_rows
        )
    }

    /// The `initial` message's rows (and nothing is pending any more).
    pub fn initial_rows(&mut self, w: &World) -> Vec<J> {
        self.dirty.clear();
        let mut ids: Vec<&EntityId> = self.rows.keys().collect();
        ids.sort_unstable();
        ids.into_iter().filter_map(|id| self.rows.get(id)).map(|r| w.live_row_json(r, None)).collect()
    }

    /// Updates merged into pending ones since the last call.
    pub fn take_coalesced(&mut self) -> u64 {
        std::mem::take(&mut self.coalesced)
    }

    /// Entities the client has not been sent the latest state of.
    pub fn pending(&self) -> usize {
        self.dirty.len()
    }

    fn mark(&mut self, id: EntityId, new: Dirty) {
        let since = self.seq;
        let merged = match (self.dirty.remove(&id), new) {
            (None, k) => Some(Pending { kind: k, since }),
            (Some(p), k) => {
                self.coalesced += 1;
                let kind = match (p.kind, k) {
                    (Dirty::Entered { client_has }, Dirty::Changed(_) | Dirty::Entered { .. }) => {
                        Some(Dirty::Entered { client_has })
                    }
                    (Dirty::Entered { client_has: false }, Dirty::Left) => None,
                    (Dirty::Entered { client_has: true } | Dirty::Changed(_) | Dirty::Left, Dirty::Left) => {
                        Some(Dirty::Left)
                    }
                    (Dirty::Changed(mut a), Dirty::Changed(b)) => {
                        a.extend(b);
                        a.sort_unstable();
                        a.dedup();
                        Some(Dirty::Changed(a))
                    }
                    // The client holds an old copy: send the whole row.
                    (Dirty::Left | Dirty::Changed(_), Dirty::Entered { .. }) => {
                        Some(Dirty::Entered { client_has: true })
                    }
                    (Dirty::Left, Dirty::Changed(_)) => Some(Dirty::Left),
                };
                kind.map(|kind| Pending { kind, since: p.since })
            }
        };
        if let Some(p) = merged {
            self.dirty.insert(id, p);
        }
    }

    /// Bring the rows to sequence `head`, given what the commits since the
    /// last call touched.
    pub fn apply(&mut self, w: &World, touched: &Touches<'_>, head: u64, limits: Limits) -> Result<(), Failure> {
        if head <= self.seq {
            return Ok(());
        }
        let relations = self.plan.follows_relations && touched.links();
        if !touched.touches(&self.plan.tables) && !relations {
            self.seq = head;
            return Ok(());
        }
        let everything = touched.everything();
        if everything {
            // A migration may have renamed what the query names.
            self.plan = w.live_plan(&self.query, self.opts.hysteresis).map_err(|e| e.to_string())?;
        }
        if !self.incremental() || everything || relations {
            let fresh = self.run(w, limits)?;
            self.seq = head;
            self.diff_all(fresh);
            return Ok(());
        }
        let center_moved = self.plan.center_entity.is_some_and(|e| touched.contains(e));
        if center_moved {
            w.live_recenter(&mut self.plan)
                .map_err(|e| format!("the entity this subscription is centred on can no longer be followed: {e}"))?;
        }
        self.seq = head;
        let mut candidates: FxHashSet<EntityId> = FxHashSet::default();
        if let Some(area) = w.live_area(&self.plan) {
            // Around a point or a followed entity: only what is (or was)
            // in the area can be in the result.
            let keep = |id: &EntityId| center_moved || touched.contains(*id);
            candidates.extend(area.into_iter().filter(keep));
            candidates.extend(self.rows.keys().copied().filter(keep));
        } else {
            candidates = touched.in_tables(&self.plan.tables);
        }
        for id in candidates {
            let member = self.rows.contains_key(&id);
            let row = w.live_row(&self.plan, id, member).map_err(|e| e.to_string())?;
            match (self.rows.get(&id), row) {
                (None, Some(r)) => {
                    self.rows.insert(id, r);
                    self.mark(id, Dirty::Entered { client_has: false });
                }
                (Some(old), Some(r)) => {
                    let changed = changed_positions(old, &r);
                    if !changed.is_empty() {
                        self.rows.insert(id, r);
                        self.mark(id, Dirty::Changed(changed));
                    }
                }
                (Some(_), None) => {
                    self.rows.remove(&id);
                    self.mark(id, Dirty::Left);
                }
                (None, None) => {}
            }
        }
        if self.rows.len() > self.max_rows {
            return Err(self.too_many());
        }
        Ok(())
    }

    /// Replace the rows with `fresh`, marking every difference.
    fn diff_all(&mut self, fresh: FxHashMap<EntityId, Row>) {
        let old = std::mem::take(&mut self.rows);
        for (id, r) in &fresh {
            match old.get(id) {
                None => self.mark(*id, Dirty::Entered { client_has: false }),
                Some(o) => {
                    let changed = changed_positions(o, r);
                    if !changed.is_empty() {
                        self.mark(*id, Dirty::Changed(changed));
                    }
                }
            }
        }
        for id in old.keys() {
            if !fresh.contains_key(id) {
                self.mark(*id, Dirty::Left);
            }
        }
        self.rows = fresh;
    }

    /// Resume a client that held this subscription's result at `from`:
    /// given what was touched since, mark what it lacks. `false` when it
    /// cannot be done (the client must get a fresh `initial`).
    pub fn resume(&mut self, w: &World, since: &Touched) -> bool {
        if !self.incremental() || since.everything || (self.plan.follows_relations && since.links) {
            return false;
        }
        if self.plan.center_entity.is_some_and(|e| since.entities.contains(&e)) {
            return false;
        }
        let touched = since.in_tables(&self.plan.tables);
        for id in touched {
            if self.rows.contains_key(&id) {
                self.mark(id, Dirty::Entered { client_has: true });
            } else {
                self.mark(id, Dirty::Left);
            }
        }
        // With hysteresis the client may hold untouched entities in the
        // margin that a fresh result leaves out: tell it they left.
        if self.opts.hysteresis > 0.0
            && let Some(area) = w.live_area(&self.plan)
        {
            for id in area {
                if !self.rows.contains_key(&id) && !self.dirty.contains_key(&id) {
                    self.mark(id, Dirty::Left);
                }
            }
        }
        true
    }

    /// What is pending as one delta message (`None` when nothing is, or
    /// the budget has no room): all of it, or under a budget the most
    /// urgent first. `shared` is the connection's budget, if it has one.
    pub fn flush(
        &mut self,
        w: &World,
        id: &str,
        now: Instant,
        mut shared: Option<&mut Bucket>,
        all: bool,
    ) -> Option<(J, usize)> {
        if self.dirty.is_empty() {
            return None;
        }
        if let Some(b) = self.bucket.as_mut() {
            b.refill(now);
        }
        if all {
            shared = None;
        }
        let budgeted = !all && (self.bucket.is_some() || shared.is_some());
        if budgeted
            && (self.bucket.as_ref().is_some_and(|b| !b.has_room()) || shared.as_ref().is_some_and(|b| !b.has_room()))
        {
            return None;
        }
        let mut order: Vec<(EntityId, f64)> = self
            .dirty
            .iter()
            .map(|(id, p)| {
                let urgency = match p.kind {
                    Dirty::Left => -1.0,
                    _ if !budgeted => 0.0,
                    _ => {
                        let d = World::live_distance(&self.plan, w.live_position(&self.plan, *id));
                        let waited = self.seq.saturating_sub(p.since) as f64;
                        if d.is_finite() { d / (1.0 + waited) } else { f64::MAX / (1.0 + waited) }
                    }
                };
                (*id, urgency)
            })
            .collect();
        order.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        let (mut entered, mut changed, mut left) = (Vec::new(), Vec::new(), Vec::new());
        let mut spent = 0usize;
        for (eid, _) in order {
            if budgeted
                && (self.bucket.as_ref().is_some_and(|b| spent as f64 >= b.tokens)
                    || shared.as_ref().is_some_and(|b| spent as f64 >= b.tokens))
            {
                break;
            }
            let Some(p) = self.dirty.remove(&eid) else { continue };
            let item = match (&p.kind, self.rows.get(&eid)) {
                (Dirty::Left, _) | (_, None) => {
                    left.push(json!(eid.0));
                    spent += 12;
                    continue;
                }
                (Dirty::Entered { .. }, Some(r)) => w.live_row_json(r, None),
                (Dirty::Changed(pos), Some(r)) => w.live_row_json(r, Some(pos)),
            };
            spent += approx_len(&item);
            match p.kind {
                Dirty::Entered { .. } => entered.push(item),
                _ => changed.push(item),
            }
        }
        if let Some(b) = self.bucket.as_mut().filter(|_| !all) {
            b.spend(spent);
        }
        if let Some(b) = shared {
            b.spend(spent);
        }
        if entered.is_empty() && changed.is_empty() && left.is_empty() {
            return None;
        }
        // Built by moving the rows in (`json!` would copy them).
        let mut m = serde_json::Map::new();
        m.insert("type".into(), J::from("delta"));
        m.insert("id".into(), J::from(id));
        m.insert("seq".into(), J::from(self.seq));
        m.insert("entered".into(), J::Array(entered));
        m.insert("changed".into(), J::Array(changed));
        m.insert("left".into(), J::Array(left));
        if !self.dirty.is_empty() {
            m.insert("pending".into(), J::from(self.dirty.len()));
        }
        Some((J::Object(m), self.dirty.len()))
    }
}

fn changed_positions(old: &Row, new: &Row) -> Vec<usize> {
    old.values.iter().zip(&new.values).enumerate().filter(|(_, (a, b))| a.2 != b.2).map(|(i, _)| i).collect()
}

/// Approximate JSON size of a value (for budgets; exact enough and cheaper
/// than serialising twice).
fn approx_len(v: &J) -> usize {
    match v {
        J::Null | J::Bool(_) => 5,
        J::Number(_) => 12,
        J::String(s) => s.len() + 2,
        J::Array(a) => 2 + a.iter().map(|x| approx_len(x) + 1).sum::<usize>(),
        J::Object(o) => 2 + o.iter().map(|(k, x)| k.len() + 4 + approx_len(x)).sum::<usize>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_up_to_one_second() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1000, t0);
        b.spend(5000);
        assert!(!b.has_room());
        b.refill(t0 + Duration::from_secs(10));
        assert!(b.has_room() && b.tokens <= 1000.0);
    }

    #[test]
    fn approx_len_is_close_to_serialised_length() {
        let v = json!({"id": 12, "pos": {"p": [1.5, 2.25, 3.0]}, "name": {"n": "abc"}});
        let real = serde_json::to_string(&v).unwrap().len();
        let est = approx_len(&v);
        assert!(est >= real / 2 && est <= real * 2, "{est} vs {real}");
    }
}
