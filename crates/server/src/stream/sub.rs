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

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ecsdb::core::live::{LivePlan, Touched, Touches, row_fields};
use ecsdb::core::world::World;
use ecsdb::{EntityId, Query};
use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet, FxHasher};

/// A row as the client holds it: the selected values' bytes (see
/// `ecsdb::core::live::row_fields`), shared by every subscription that
/// holds the same entity with the same selection at the same sequence.
type RowBytes = Arc<[u8]>;

/// JSON fragments of rows at one sequence, shared by every connection: in
/// a world where many clients see the same entities, each entity's
/// changes are rendered once per commit, not once per client.
#[derive(Debug)]
pub struct Fragments {
    /// Sharded by entity, so connections rendering at once rarely meet.
    shards: Vec<Mutex<Shard>>,
    /// Encoded rows (selection, entity) of the newest sequence: an entity
    /// that moved is encoded once per commit, not once per subscriber, and
    /// subscribers compare against (and keep) the same bytes.
    rows: Vec<Mutex<RowShard>>,
}

#[derive(Debug, Default)]
struct RowShard {
    seq: u64,
    map: FxHashMap<(u64, EntityId), RowBytes>,
}

#[derive(Debug, Default)]
struct Shard {
    newest: u64,
    map: FxHashMap<(u64, u64, EntityId, u64), Arc<[u8]>>,
}

const SHARDS: usize = 64;
/// Fragments one shard keeps at most.
const MAX_SHARD_FRAGMENTS: usize = 1 << 16;
/// Sequences fragments are kept for behind the newest (connections reach a
/// commit at slightly different times).
const FRAGMENT_SEQS: u64 = 4;

impl Default for Fragments {
    fn default() -> Self {
        Fragments {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            rows: (0..SHARDS).map(|_| Mutex::new(RowShard::default())).collect(),
        }
    }
}

impl Fragments {
    /// Entity `id`'s row for a plan whose selection hashes to `select_key`,
    /// as of `w`'s sequence: encoded by the first subscriber that asks.
    fn row(&self, w: &World, plan: &LivePlan, select_key: u64, id: EntityId) -> Result<RowBytes, Failure> {
        let seq = w.seq();
        let shard = &self.rows[(id.0 as usize ^ (id.0 >> 32) as usize) % SHARDS];
        {
            let mut s = shard.lock();
            if seq > s.seq {
                s.seq = seq;
                s.map.clear();
            }
            if seq == s.seq
                && let Some(x) = s.map.get(&(select_key, id))
            {
                return Ok(x.clone());
            }
        }
        let mut out = Vec::new();
        w.live_encode(plan, id, &mut out).map_err(|e| e.to_string())?;
        let x: RowBytes = out.into();
        let mut s = shard.lock();
        if seq == s.seq && s.map.len() < MAX_SHARD_FRAGMENTS {
            s.map.insert((select_key, id), x.clone());
        }
        Ok(x)
    }

    /// The fragment for `key` at `seq`, rendered by `render` if missing.
    fn get_or_render(
        &self,
        seq: u64,
        key: Option<(u64, EntityId, u64)>,
        render: impl FnOnce(&mut Vec<u8>),
    ) -> Arc<[u8]> {
        let Some((sel, id, mask)) = key else {
            let mut out = Vec::new();
            render(&mut out);
            return out.into();
        };
        let key = (seq, sel, id, mask);
        let shard = &self.shards[(id.0 as usize ^ (id.0 >> 32) as usize) % SHARDS];
        {
            let mut f = shard.lock();
            if seq > f.newest {
                f.newest = seq;
                f.map.retain(|k, _| k.0 + FRAGMENT_SEQS > seq);
            }
            if let Some(x) = f.map.get(&key) {
                return x.clone();
            }
        }
        // Rendered outside the lock; two connections may both render it.
        let mut out = Vec::new();
        render(&mut out);
        let x: Arc<[u8]> = out.into();
        let mut f = shard.lock();
        if f.map.len() >= MAX_SHARD_FRAGMENTS {
            f.map.clear();
        }
        if key.0 + FRAGMENT_SEQS > f.newest {
            f.map.insert(key, x.clone());
        }
        x
    }
}

/// Compile a subscription's query; system tables (which a user query only
/// excludes) are not watched, so logins and sessions wake no subscription.
fn live_plan(w: &World, q: &Query, hysteresis: f64) -> Result<LivePlan, Failure> {
    let mut plan = w.live_plan(q, hysteresis).map_err(|e| e.to_string())?;
    plan.tables.retain(|&t| !w.schema().table(t).name.starts_with('_'));
    Ok(plan)
}

fn select_key(plan: &LivePlan) -> u64 {
    let mut h = FxHasher::default();
    plan.select().hash(&mut h);
    h.finish()
}

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
    /// These selected values changed: bit `i` for position `i` of the row
    /// (rows of 64 or more values send changes whole, as `Entered`).
    Changed(u64),
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
    /// Hash of the selection: rows of subscriptions with equal selections
    /// render to equal fragments.
    select_key: u64,
    rows: FxHashMap<EntityId, RowBytes>,
    /// Bytes of the values in `rows`.
    row_bytes: usize,
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
        if let Some(l) = q.limit
            && l > limits.max_rows
        {
            return Err(format!(
                "limit {l} is over the {} rows one subscription may hold; narrow the query",
                limits.max_rows
            ));
        }
        if q.near.is_none() && opts.hysteresis != 0.0 {
            return Err("hysteresis applies to a `near` subscription only".into());
        }
        let plan = live_plan(w, &q, opts.hysteresis)?;
        let mut sub = Sub {
            select_key: select_key(&plan),
            query: q,
            bucket: opts.bytes_per_second.map(|b| Bucket::new(b, Instant::now())),
            opts,
            plan,
            rows: FxHashMap::default(),
            row_bytes: 0,
            dirty: FxHashMap::default(),
            max_rows: limits.max_rows,
            seq: w.seq(),
            coalesced: 0,
        };
        sub.rows = sub.run(w, limits)?;
        sub.row_bytes = sub.rows.values().map(|r| r.len()).sum();
        Ok(sub)
    }

    /// Whether this subscription is kept up to date incrementally (else its
    /// query runs again on every commit that touches its tables).
    pub fn incremental(&self) -> bool {
        self.plan.incremental && self.query.limit.is_none()
    }

    /// Run the whole query now.
    fn run(&self, w: &World, limits: Limits) -> Result<FxHashMap<EntityId, RowBytes>, Failure> {
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
        let mut out = FxHashMap::default();
        for r in rows {
            let mut b = Vec::new();
            w.live_encode(&self.plan, r.id, &mut b).map_err(|e| e.to_string())?;
            out.insert(r.id, b.into());
        }
        Ok(out)
    }

    fn too_many(&self) -> Failure {
        format!(
            "the subscription's result holds more than {} rows (the most one subscription may hold); narrow the query",
            self.max_rows
        )
    }

    /// The `initial` message (and nothing is pending any more).
    pub fn initial(&mut self, w: &World, id: &str, epoch: &str) -> Vec<u8> {
        self.dirty.clear();
        let mut ids: Vec<EntityId> = self.rows.keys().copied().collect();
        ids.sort_unstable();
        let mut out = Vec::with_capacity(64 + ids.len() * 64);
        out.extend_from_slice(br#"{"type":"initial","id":"#);
        push_json_str(&mut out, id);
        out.extend_from_slice(format!(r#","seq":{},"epoch":"{epoch}","rows":["#, self.seq).as_bytes());
        for (i, eid) in ids.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if let Some(b) = self.rows.get(eid) {
                let _ = w.live_row_text(&self.plan, *eid, b, None, &mut out);
            }
        }
        out.extend_from_slice(b"]}");
        out
    }

    /// Memory this subscription holds (rows and pending entries), estimated.
    pub fn memory(&self) -> usize {
        const PER_ROW: usize = 64;
        const PER_PENDING: usize = 48;
        self.row_bytes + self.rows.len() * PER_ROW + self.dirty.len() * PER_PENDING
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
                    (Dirty::Changed(a), Dirty::Changed(b)) => Some(Dirty::Changed(a | b)),
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
    pub fn apply(
        &mut self,
        w: &World,
        touched: &Touches<'_>,
        head: u64,
        limits: Limits,
        fragments: &Fragments,
    ) -> Result<(), Failure> {
        if head <= self.seq {
            return Ok(());
        }
        let relations = self.plan.follows_relations && touched.links();
        if !self.touched_by(touched) && !relations {
            self.seq = head;
            return Ok(());
        }
        let everything = touched.everything();
        let mut reselected = false;
        if everything {
            // A migration may have renamed what the query names, or added
            // fields to what it selects.
            self.plan = live_plan(w, &self.query, self.opts.hysteresis)?;
            let key = select_key(&self.plan);
            reselected = key != self.select_key;
            self.select_key = key;
        }
        let unknown = touched.unknown();
        let area_plan = w.live_has_area(&self.plan);
        // Missed commits: an area can be re-checked whole (as cheap as one
        // commit); anything else runs again.
        if !self.incremental() || everything || relations || (unknown && !area_plan) {
            let fresh = self.run(w, limits)?;
            self.seq = head;
            self.diff_all(fresh);
            if reselected {
                // Rows of another shape: every one is sent whole.
                let ids: Vec<EntityId> = self.rows.keys().copied().collect();
                for id in ids {
                    self.mark(id, Dirty::Entered { client_has: true });
                }
            }
            return Ok(());
        }
        let center_moved = unknown || self.plan.center_entity.is_some_and(|e| touched.contains(e));
        if center_moved {
            w.live_recenter(&mut self.plan)
                .map_err(|e| format!("the entity this subscription is centred on can no longer be followed: {e}"))?;
        }
        self.seq = head;
        let candidates: Vec<EntityId> = if let Some(area) = w.live_area(&self.plan) {
            // Around a point or a followed entity: only what is (or was)
            // in the area can be in the result — the rows held, then what
            // may enter (the area holds each entity once).
            let keep = |id: &EntityId| center_moved || touched.contains(*id);
            let mut c: Vec<EntityId> = self.rows.keys().copied().filter(keep).collect();
            c.extend(area.into_iter().filter(|id| !self.rows.contains_key(id) && keep(id)));
            c
        } else {
            self.candidates(touched).into_iter().collect()
        };
        for id in candidates {
            let member = self.rows.contains_key(&id);
            if member && center_moved && !unknown && !touched.contains(id) {
                // Its row cannot have changed (nothing wrote it): only
                // whether it is still near the moved centre.
                if !w.live_matches(&self.plan, id, true).map_err(|e| e.to_string())? {
                    if let Some(old) = self.rows.remove(&id) {
                        self.row_bytes -= old.len();
                    }
                    self.mark(id, Dirty::Left);
                }
                continue;
            }
            let row = if w.live_matches(&self.plan, id, member).map_err(|e| e.to_string())? {
                Some(fragments.row(w, &self.plan, self.select_key, id)?)
            } else {
                None
            };
            match (self.rows.get_mut(&id), row) {
                (None, Some(new)) => {
                    self.row_bytes += new.len();
                    self.rows.insert(id, new);
                    self.mark(id, Dirty::Entered { client_has: false });
                }
                (Some(old), Some(new)) => {
                    if !Arc::ptr_eq(old, &new) && **old != *new {
                        let changed = changed_mask(old, &new);
                        self.row_bytes = self.row_bytes + new.len() - old.len();
                        *old = new;
                        self.mark(id, changed);
                    }
                }
                (Some(_), None) => {
                    if let Some(old) = self.rows.remove(&id) {
                        self.row_bytes -= old.len();
                    }
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

    /// Whether the commits can change this subscription.
    fn touched_by(&self, touched: &Touches<'_>) -> bool {
        touched.touches(&self.plan.tables) || (self.plan.any_table && touched.0.iter().any(|t| !t.entities.is_empty()))
    }

    /// The entities the commits touched that may enter, change or leave.
    fn candidates(&self, touched: &Touches<'_>) -> FxHashSet<EntityId> {
        if self.plan.any_table {
            touched.0.iter().flat_map(|t| t.entities.iter().copied()).collect()
        } else {
            touched.in_tables(&self.plan.tables)
        }
    }

    /// Replace the rows with `fresh`, marking every difference.
    fn diff_all(&mut self, fresh: FxHashMap<EntityId, RowBytes>) {
        let old = std::mem::take(&mut self.rows);
        for (id, r) in &fresh {
            match old.get(id) {
                None => self.mark(*id, Dirty::Entered { client_has: false }),
                Some(o) => {
                    if o != r {
                        self.mark(*id, changed_mask(o, r));
                    }
                }
            }
        }
        for id in old.keys() {
            if !fresh.contains_key(id) {
                self.mark(*id, Dirty::Left);
            }
        }
        self.row_bytes = fresh.values().map(|r| r.len()).sum();
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
        let touched = self.candidates(&Touches(&[since]));
        for id in touched {
            if self.rows.contains_key(&id) {
                self.mark(id, Dirty::Entered { client_has: true });
            } else if !(w.contains(id) && crate::guard::is_system_entity(w, id)) {
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
    /// urgent first. `shared` is the connection's budget, if it has one;
    /// `all` ignores budgets. Returns the message's JSON text and how many
    /// rows stay pending.
    #[allow(clippy::too_many_arguments)]
    pub fn flush(
        &mut self,
        w: &World,
        id: &str,
        now: Instant,
        mut shared: Option<&mut Bucket>,
        all: bool,
        fragments: &Fragments,
    ) -> Option<(Vec<u8>, usize)> {
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
        let room = |own: &Option<Bucket>, shared: &Option<&mut Bucket>, spent: usize| {
            own.as_ref().is_none_or(|b| (spent as f64) < b.tokens)
                && shared.as_ref().is_none_or(|b| (spent as f64) < b.tokens)
        };
        if budgeted && !room(&self.bucket, &shared, 0) {
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
        if budgeted {
            order.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        } else {
            order.sort_unstable_by_key(|x| x.0);
        }
        let mut entered: Vec<Arc<[u8]>> = Vec::new();
        let mut changed: Vec<Arc<[u8]>> = Vec::new();
        let mut left: Vec<u64> = Vec::new();
        let mut spent = 0usize;
        let n = self.plan.select().len();
        for (eid, _) in order {
            if budgeted && !room(&self.bucket, &shared, spent) {
                break;
            }
            let Some(p) = self.dirty.remove(&eid) else { continue };
            let mask = match &p.kind {
                Dirty::Entered { .. } => u64::MAX,
                Dirty::Changed(m) => *m,
                Dirty::Left => 0,
            };
            let row = match (&p.kind, self.rows.get(&eid)) {
                (Dirty::Left, _) | (_, None) => {
                    left.push(eid.0);
                    spent += 12;
                    continue;
                }
                (_, Some(r)) => r,
            };
            let key = (n < 64).then_some((self.select_key, eid, mask));
            let plan = &self.plan;
            let partial = matches!(p.kind, Dirty::Changed(_));
            let frag = fragments.get_or_render(self.seq, key, |out| {
                let positions: Vec<usize> = (0..63).filter(|i| mask >> i & 1 == 1).collect();
                let _ = w.live_row_text(plan, eid, row, partial.then_some(positions.as_slice()), out);
            });
            spent += frag.len() + 1;
            match p.kind {
                Dirty::Entered { .. } => entered.push(frag),
                _ => changed.push(frag),
            }
        }
        // The message around the rows counts too.
        spent += 96;
        if let Some(b) = self.bucket.as_mut().filter(|_| !all) {
            b.spend(spent);
        }
        if let Some(b) = shared {
            b.spend(spent);
        }
        if entered.is_empty() && changed.is_empty() && left.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(spent + 96);
        out.extend_from_slice(br#"{"type":"delta","id":"#);
        push_json_str(&mut out, id);
        out.extend_from_slice(format!(r#","seq":{},"entered":["#, self.seq).as_bytes());
        join(&mut out, &entered);
        out.extend_from_slice(br#"],"changed":["#);
        join(&mut out, &changed);
        out.extend_from_slice(br#"],"left":["#);
        for (i, l) in left.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(l.to_string().as_bytes());
        }
        out.push(b']');
        if !self.dirty.is_empty() {
            out.extend_from_slice(format!(r#","pending":{}"#, self.dirty.len()).as_bytes());
        }
        out.push(b'}');
        Some((out, self.dirty.len()))
    }
}

fn join(out: &mut Vec<u8>, parts: &[Arc<[u8]>]) {
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(p);
    }
}

/// What changed between two encodings of a row: the changed positions as
/// a mask, or the whole row when one at position 63 or later changed.
fn changed_mask(old: &[u8], new: &[u8]) -> Dirty {
    let mut mask = 0u64;
    for (i, (a, b)) in row_fields(old).zip(row_fields(new)).enumerate() {
        if a != b {
            if i >= 63 {
                return Dirty::Entered { client_has: true };
            }
            mask |= 1 << i;
        }
    }
    Dirty::Changed(mask)
}

/// A JSON string literal.
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"
[tables.unit]
[[tables.unit.fields]]
name = "pos"
type = "[f32; 2]"
index = "spatial"
cell_size = 10.0
[[tables.unit.fields]]
name = "hp"
type = "u32"
"#;

    fn world() -> (World, Vec<EntityId>) {
        let mut w = World::new(std::sync::Arc::new(ecsdb::Schema::from_toml_str(SCHEMA).unwrap()));
        let t = w.table_id("unit").unwrap();
        w.begin().unwrap();
        let ids = (0..40)
            .map(|i| {
                let id = w.create_entity().unwrap();
                w.insert_json(id, t, &serde_json::json!({"pos": [f64::from(i) * 3.0, 0.0], "hp": i})).unwrap();
                id
            })
            .collect();
        w.commit().unwrap();
        (w, ids)
    }

    fn limits() -> Limits {
        Limits { query_timeout_ms: 10_000, max_result_bytes: 1 << 30, max_rows: 10_000 }
    }

    fn result_ids(w: &World, q: &Query) -> Vec<EntityId> {
        let mut v: Vec<EntityId> = w.query(q).unwrap().into_iter().map(|r| r.id).collect();
        v.sort_unstable();
        v
    }

    fn sub_ids(s: &Sub) -> Vec<EntityId> {
        let mut v: Vec<EntityId> = s.rows.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Missed commits (`unknown`) and migrations (`everything`) bring a
    /// subscription to the exact result, following its entity, with the
    /// differences pending.
    #[test]
    fn missed_commits_are_caught_up_exactly() {
        let (mut w, ids) = world();
        let t = w.table_id("unit").unwrap();
        let q: Query = serde_json::from_value(serde_json::json!({
            "with": ["unit"], "near": {"field": "unit.pos", "entity": ids[0].0, "radius": 10.0}
        }))
        .unwrap();
        let mut sub = Sub::new(&w, q.clone(), SubOptions::default(), limits()).unwrap();
        assert_eq!(sub_ids(&sub), result_ids(&w, &q));
        // Commits nobody saw: the followed entity and others move.
        w.begin().unwrap();
        w.set_json(ids[0], t, &serde_json::json!({"pos": [60.0, 0.0]})).unwrap();
        w.set_json(ids[21], t, &serde_json::json!({"hp": 1000})).unwrap();
        w.commit().unwrap();
        let unknown = Touched { unknown: true, ..Touched::default() };
        sub.apply(&w, &Touches(&[&unknown]), w.seq(), limits(), &Fragments::default()).unwrap();
        assert_eq!(sub_ids(&sub), result_ids(&w, &q));
        assert!(sub.pending() > 0);
        let (text, left) = sub.flush(&w, "s", Instant::now(), None, false, &Fragments::default()).unwrap();
        assert_eq!(left, 0);
        let m: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert!(
            m["entered"].as_array().unwrap().iter().any(|r| r["id"] == ids[21].0 && r["unit"]["hp"] == 1000),
            "{m}"
        );
        assert!(!m["left"].as_array().unwrap().is_empty(), "{m}");
        // A migration-like "everything" runs the query again.
        let everything = Touched { everything: true, ..Touched::default() };
        w.begin().unwrap();
        w.set_json(ids[0], t, &serde_json::json!({"pos": [0.0, 0.0]})).unwrap();
        w.commit().unwrap();
        sub.apply(&w, &Touches(&[&everything]), w.seq(), limits(), &Fragments::default()).unwrap();
        assert_eq!(sub_ids(&sub), result_ids(&w, &q));
    }

    #[test]
    fn bucket_refills_up_to_one_second() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1000, t0);
        b.spend(5000);
        assert!(b.tokens <= 0.0);
        b.refill(t0 + Duration::from_secs(10));
        assert!(b.tokens > 0.0 && b.tokens <= 1000.0);
    }
}
