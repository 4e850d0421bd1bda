//! The world's heartbeat: one thread runs the systems at `GAME_TICK_RATE`,
//! each tick in one ecsdb transaction (one commit, one log record), then
//! brings every player's spatial subscription up to date from what that
//! commit touched and hands each connection its delta.
//!
//! Why one thread: a tick is a serial step of the world; the systems run
//! under the database's write lock, and the subscriptions read the state
//! the commit produced before the next tick writes again, so every delta a
//! player receives is exactly one tick's change. Connections never block
//! the tick: each has a bounded queue, and a client whose queue is full is
//! skipped — its subscription keeps what it is owed (the latest value per
//! entity) and sends it when the client has caught up.
//!
//! Players' subscriptions are ecsdb live subscriptions
//! (`ecsdb_server::stream::sub`, the same machinery `/v1/stream` serves):
//! a `near` query following the player's own entity, with hysteresis, so
//! the cost per tick is the entities that moved near each player, not the
//! world.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ecsdb::core::live::{Touched, Touches};
use ecsdb::{Database, DbError, EntityId, Query};
use ecsdb_server::stream::sub::{Fragments, Limits, Sub, SubOptions};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;

use crate::accounts::now_ms;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::{Account, Body, BodyKind, Label, PLAYER_RADIUS, Progress, Rng};
use crate::sim::{self, Input};

/// What the tick thread sends a connection.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Text(Arc<str>),
    /// Close with a code and reason.
    Close(u16, String),
}

/// A connected player, as the tick thread and the connection share it.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    pub name: String,
    pub session: EntityId,
    pub tx: mpsc::Sender<Outgoing>,
    pub input: Input,
}

#[derive(Debug)]
enum Event {
    Join { player: EntityId, conn_id: u64 },
    Leave { player: EntityId, conn_id: u64 },
}

/// Why a player could not join.
#[derive(Debug)]
pub enum JoinError {
    Full(usize),
}

/// Shared game state.
pub struct Game {
    pub db: Arc<Database>,
    /// The remote ecsdb the world is mirrored to, if any.
    pub remote: Option<Arc<crate::remote::Remote>>,
    pub cfg: Config,
    pub metrics: Arc<Metrics>,
    pub tick: AtomicU64,
    online: Mutex<FxHashMap<EntityId, Conn>>,
    events: Mutex<Vec<Event>>,
    next_conn: AtomicU64,
    /// Durations of the last `RECENT_TICKS` ticks (seconds), for `/health`.
    /// Per tick: total, systems, commit, subscriptions (seconds).
    recent: Mutex<VecDeque<[f32; 4]>>,
    last_tick_ms: AtomicU64,
    stop: AtomicBool,
    /// Set when a tick failed to commit (the database refuses writes).
    pub failed: Mutex<Option<String>>,
}

impl std::fmt::Debug for Game {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Game").field("tick", &self.tick).finish_non_exhaustive()
    }
}

/// Ticks kept for the `/health` percentiles.
const RECENT_TICKS: usize = 200;
/// Messages a connection's queue holds.
pub const QUEUE: usize = 32;

impl Game {
    pub fn new(store: &crate::model::Store, cfg: Config, metrics: Arc<Metrics>) -> Arc<Game> {
        Arc::new(Game {
            db: store.db.clone(),
            remote: store.remote.clone(),
            cfg,
            metrics,
            tick: AtomicU64::new(0),
            online: Mutex::new(FxHashMap::default()),
            events: Mutex::new(Vec::new()),
            next_conn: AtomicU64::new(1),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_TICKS)),
            last_tick_ms: AtomicU64::new(now_ms()),
            stop: AtomicBool::new(false),
            failed: Mutex::new(None),
        })
    }

    pub fn players_online(&self) -> usize {
        self.online.lock().len()
    }

    /// Put a player in the world (from the next tick). A second connection
    /// of the same player replaces the first (closed with 4409).
    pub fn join(
        &self,
        player: EntityId,
        session: EntityId,
        name: &str,
        tx: mpsc::Sender<Outgoing>,
    ) -> Result<u64, JoinError> {
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let mut online = self.online.lock();
        if !online.contains_key(&player) && online.len() >= self.cfg.max_players {
            return Err(JoinError::Full(self.cfg.max_players));
        }
        if let Some(old) =
            online.insert(player, Conn { id: conn_id, name: name.to_string(), session, tx, input: Input::default() })
        {
            let _ = old.tx.try_send(Outgoing::Close(4409, "replaced by a newer connection of this player".into()));
        }
        self.metrics.players_online.set(online.len() as i64);
        drop(online);
        self.events.lock().push(Event::Join { player, conn_id });
        Ok(conn_id)
    }

    /// The connection `conn_id` of `player` ended.
    pub fn leave(&self, player: EntityId, conn_id: u64) {
        let mut online = self.online.lock();
        if online.get(&player).is_some_and(|c| c.id == conn_id) {
            online.remove(&player);
            self.metrics.players_online.set(online.len() as i64);
            drop(online);
            self.events.lock().push(Event::Leave { player, conn_id });
        }
    }

    pub fn set_input(&self, player: EntityId, conn_id: u64, input: Input) {
        if let Some(c) = self.online.lock().get_mut(&player).filter(|c| c.id == conn_id) {
            c.input = input;
        }
    }

    /// Close every connection of `player` (banned), or of one session (logged out).
    pub fn kick(&self, player: EntityId, session: Option<EntityId>, code: u16, reason: &str) {
        if let Some(c) = self.online.lock().get(&player).filter(|c| session.is_none_or(|s| s == c.session)) {
            let _ = c.tx.try_send(Outgoing::Close(code, reason.to_string()));
        }
    }

    /// p50 and p99 of the recent ticks, in milliseconds: the whole tick,
    /// then its phases (systems, commit, subscriptions), and how many.
    pub fn tick_percentiles(&self) -> ([(f64, f64); 4], usize) {
        let recent: Vec<[f32; 4]> = self.recent.lock().iter().copied().collect();
        let mut out = [(0.0, 0.0); 4];
        if recent.is_empty() {
            return (out, 0);
        }
        for (k, o) in out.iter_mut().enumerate() {
            let mut v: Vec<f32> = recent.iter().map(|r| r[k]).collect();
            v.sort_by(f32::total_cmp);
            let at = |q: f64| f64::from(v[((v.len() - 1) as f64 * q).round() as usize]) * 1e3;
            *o = (at(0.5), at(0.99));
        }
        (out, recent.len())
    }

    /// Milliseconds since the last tick finished.
    pub fn since_last_tick_ms(&self) -> u64 {
        now_ms().saturating_sub(self.last_tick_ms.load(Ordering::Relaxed))
    }

    /// Tell every connection the server is stopping (close 1001).
    pub fn close_all(&self) {
        for c in self.online.lock().values() {
            let _ = c.tx.try_send(Outgoing::Close(1001, "server stopping".into()));
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Players whose bodies survived a crash (online when the process
    /// died): keep where they were in `progress` and take them out of the
    /// world until they reconnect.
    pub fn recover_bodies(&self) -> Result<usize, DbError> {
        let stale = self.db.read().query::<(&Body,)>().with::<Account>().collect()?;
        if stale.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        self.db.write(|t| {
            for (id, (b,)) in &stale {
                let mut p = t.get_component::<Progress>(*id)?;
                p.last_position = [b.position[0], b.position[1]];
                p.updated_at = now;
                t.set_component(*id, &p)?;
                t.remove_typed::<Body>(*id)?;
                t.remove_typed::<Label>(*id)?;
            }
            Ok(())
        })?;
        Ok(stale.len())
    }
}

/// Per-player state only the tick thread touches.
struct Viewer {
    conn_id: u64,
    sub: Option<Sub>,
    /// The last HUD sent, to send only changes.
    hud: Option<Progress>,
    welcomed: bool,
}

fn limits() -> Limits {
    Limits { query_timeout_ms: 1000, max_result_bytes: 8 << 20, max_rows: 10_000 }
}

fn world_query(player: EntityId, radius: f32) -> Result<Query, DbError> {
    serde_json::from_value(serde_json::json!({
        "with": ["body"],
        "near": {"field": "body.position", "entity": player.0, "radius": radius},
        "select": ["body.position", "body.velocity", "body.radius", "body.kind", "label.name", "label.level", "label.health"],
    }))
    .map_err(|e| ecsdb::EngineError::Query(e.to_string()).into())
}

/// Run ticks until [`Game::stop`]. Blocking: give it its own thread.
pub fn run(game: &Arc<Game>) {
    let interval = game.cfg.tick_interval();
    let mut viewers: FxHashMap<EntityId, Viewer> = FxHashMap::default();
    let fragments = Fragments::default();
    let mut rng = Rng::new(now_ms());
    let mut next = Instant::now() + interval;
    while !game.stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let mut phases = [0.0f32; 3];
        match tick_once(game, &mut viewers, &fragments, &mut rng) {
            Err(e) => {
                tracing::error!(error = %e, "tick failed; the world is paused until the database accepts writes");
                *game.failed.lock() = Some(e.to_string());
                std::thread::sleep(Duration::from_millis(500));
            }
            Ok(p) => {
                phases = p;
                if game.failed.lock().is_some() {
                    *game.failed.lock() = None;
                }
            }
        }
        let took = start.elapsed();
        game.metrics.tick_duration.observe(took.as_secs_f64());
        game.metrics.ticks.inc();
        {
            let mut r = game.recent.lock();
            if r.len() == RECENT_TICKS {
                r.pop_front();
            }
            r.push_back([took.as_secs_f32(), phases[0], phases[1], phases[2]]);
        }
        game.last_tick_ms.store(now_ms(), Ordering::Relaxed);
        let now = Instant::now();
        if now > next {
            game.metrics.tick_overruns.inc();
            // Behind: start the next tick now, without trying to catch up.
            next = now + interval;
        } else {
            std::thread::sleep(next - now);
            next += interval;
        }
    }
}

fn tick_once(
    game: &Arc<Game>,
    viewers: &mut FxHashMap<EntityId, Viewer>,
    fragments: &Fragments,
    rng: &mut Rng,
) -> Result<[f32; 3], DbError> {
    let started = Instant::now();
    let cfg = &game.cfg;
    if let Some(r) = &game.remote
        && !r.healthy()
    {
        return Err(ecsdb::EngineError::Query(
            "the remote ecsdb refused a write; the world is paused (see /health)".into(),
        )
        .into());
    }
    let tick = game.tick.load(Ordering::Relaxed) + 1;
    let dt = 1.0 / cfg.tick_rate as f32;
    let vitals_now = tick.is_multiple_of(u64::from(cfg.tick_rate));
    let events = std::mem::take(&mut *game.events.lock());
    let inputs: FxHashMap<EntityId, (u64, Input)> =
        game.online.lock().iter().map(|(id, c)| (*id, (c.id, c.input))).collect();

    let mut txn = game.db.transaction()?;
    // Joins and leaves, in the order they happened.
    for e in &events {
        match *e {
            Event::Join { player, conn_id } => {
                if inputs.get(&player).is_none_or(|(c, _)| *c != conn_id) {
                    continue; // already left again, or replaced
                }
                viewers.insert(player, Viewer { conn_id, sub: None, hud: None, welcomed: false });
                if txn.get_component::<Body>(player).is_err() {
                    let p = txn.get_component::<Progress>(player)?;
                    let name = txn.get_component::<Account>(player)?.display_name;
                    let body = Body {
                        position: [p.last_position[0], p.last_position[1], 0.0],
                        velocity: [0.0; 3],
                        radius: PLAYER_RADIUS,
                        kind: BodyKind::Player,
                    };
                    txn.insert_component(player, &body)?;
                    txn.insert_component(player, &Label { name, level: p.level, health: p.health.round() as u8 })?;
                }
            }
            Event::Leave { player, conn_id } => {
                if viewers.get(&player).is_some_and(|v| v.conn_id == conn_id) {
                    viewers.remove(&player);
                }
                if inputs.contains_key(&player) {
                    continue; // reconnected meanwhile
                }
                if let Ok(b) = txn.get_component::<Body>(player) {
                    let mut p = txn.get_component::<Progress>(player)?;
                    p.last_position = [b.position[0], b.position[1]];
                    p.updated_at = now_ms();
                    txn.set_component(player, &p)?;
                    txn.remove_typed::<Body>(player)?;
                    txn.remove_typed::<Label>(player)?;
                }
            }
        }
    }
    // Viewers whose connection is gone without a Leave seen (replaced).
    viewers.retain(|id, v| inputs.get(id).is_some_and(|(c, _)| *c == v.conn_id));

    // Movement: every online player's body, against rocks, water and other
    // players as they stood at the start of the tick.
    let players: Vec<(EntityId, Body)> =
        txn.query::<(&Body,)>().with::<Account>().collect()?.into_iter().map(|(id, (b,))| (id, b)).collect();
    let mut moved: Vec<(EntityId, Body)> = Vec::new();
    let mut touching: FxHashMap<EntityId, Vec<BodyKind>> = FxHashMap::default();
    let mut obstacles: Vec<([f32; 3], f32)> = Vec::new();
    for (id, b) in &players {
        let input = inputs.get(id).map(|x| x.1).unwrap_or_default();
        let reach = f64::from(b.radius + 60.0 + sim::SPEED * dt);
        let near = txn.within("body.position", &[f64::from(b.position[0]), f64::from(b.position[1]), 0.0], reach)?;
        obstacles.clear();
        let mut kinds = Vec::new();
        for other in near {
            if other == *id {
                continue;
            }
            let Ok(o) = txn.get_component::<Body>(other) else { continue };
            match o.kind {
                BodyKind::Rock | BodyKind::Player => obstacles.push((o.position, o.radius)),
                BodyKind::Food | BodyKind::Water => {
                    let d = ((o.position[0] - b.position[0]).powi(2) + (o.position[1] - b.position[1]).powi(2)).sqrt();
                    if d <= o.radius + b.radius {
                        kinds.push(o.kind);
                    }
                }
            }
        }
        touching.insert(*id, kinds);
        let mut nb = *b;
        sim::step(&mut nb, input, dt, cfg.world_size, &obstacles);
        if nb != *b {
            moved.push((*id, nb));
        }
    }
    for (id, b) in &moved {
        txn.set_component(*id, b)?;
    }
    // Vitals once a second.
    if vitals_now {
        let now = now_ms();
        for (id, _) in &players {
            let mut p = txn.get_component::<Progress>(*id)?;
            let before = p;
            let margin = 50.0;
            let respawn = [
                margin + rng.unit() * (cfg.world_size - 2.0 * margin),
                margin + rng.unit() * (cfg.world_size - 2.0 * margin),
            ];
            let out = sim::vitals(&mut p, touching.get(id).map_or(&[][..], Vec::as_slice), 1.0, respawn);
            if p != before {
                p.updated_at = now;
                txn.set_component(*id, &p)?;
                let label = txn.get_component::<Label>(*id)?;
                let health = p.health.round() as u8;
                if label.level != p.level || label.health != health {
                    txn.set_component(*id, &Label { name: label.name, level: p.level, health })?;
                }
            }
            if out.died {
                let mut b = txn.get_component::<Body>(*id)?;
                b.position = [p.last_position[0], p.last_position[1], 0.0];
                b.velocity = [0.0; 3];
                txn.set_component(*id, &b)?;
            }
        }
    }
    let systems = started.elapsed();
    let info = txn.commit()?;
    let committed = started.elapsed();
    game.tick.store(tick, Ordering::Relaxed);
    game.metrics.server_tick.set(tick as i64);

    // Subscriptions: bring each viewer to this commit and send its delta,
    // on every core: viewers only read the world and share the rendered
    // row fragments.
    let touched = Touched::of(&info.changes);
    let view = game.db.read();
    let online = game.online.lock();
    let step = Step {
        game,
        world: &view,
        online: &online,
        touched: &touched,
        seq: info.seq,
        tick,
        now: Instant::now(),
        progress_table: view.schema().table_id("progress"),
        fragments,
    };
    let mut all: Vec<(&EntityId, &mut Viewer)> = viewers.iter_mut().collect();
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).clamp(1, 8);
    let chunk = all.len().div_ceil(threads).max(64);
    if all.len() <= chunk {
        for (player, v) in &mut all {
            step.serve(**player, v);
        }
    } else {
        std::thread::scope(|sc| {
            for part in all.chunks_mut(chunk) {
                let step = &step;
                sc.spawn(move || {
                    for (player, v) in part.iter_mut() {
                        step.serve(**player, v);
                    }
                });
            }
        });
    }
    drop(online);
    drop(view);
    let done = started.elapsed();
    Ok([
        systems.as_secs_f32(),
        committed.saturating_sub(systems).as_secs_f32(),
        done.saturating_sub(committed).as_secs_f32(),
    ])
}

/// What every viewer's update of one tick shares.
struct Step<'a> {
    game: &'a Game,
    world: &'a ecsdb::core::World,
    online: &'a FxHashMap<EntityId, Conn>,
    touched: &'a Touched,
    seq: u64,
    tick: u64,
    now: Instant,
    progress_table: Option<ecsdb::TableId>,
    fragments: &'a Fragments,
}

impl Step<'_> {
    /// Bring `player`'s subscription to this tick's commit and queue what
    /// it is owed (welcome, initial rows or a delta, the HUD).
    fn serve(&self, player: EntityId, v: &mut Viewer) {
        let (game, cfg, w) = (self.game, &self.game.cfg, self.world);
        let Some(conn) = self.online.get(&player) else { return };
        let send = |text: Vec<u8>| -> bool {
            let Ok(s) = String::from_utf8(text) else { return true };
            let n = s.len();
            match conn.tx.try_send(Outgoing::Text(Arc::from(s))) {
                Ok(()) => {
                    game.metrics.ws_messages_out.inc();
                    game.metrics.ws_bytes_out.inc_by(n as u64);
                    true
                }
                Err(_) => false,
            }
        };
        if !v.welcomed {
            let welcome = serde_json::json!({
                "type": "welcome",
                "player_id": player.0,
                "name": conn.name,
                "tick": self.tick,
                "tick_rate": cfg.tick_rate,
                "world_size": cfg.world_size,
                "view_radius": cfg.view_radius,
            });
            if !send(welcome.to_string().into_bytes()) {
                return;
            }
            v.welcomed = true;
        }
        match v.sub.as_mut() {
            None => {
                let sub = world_query(player, cfg.view_radius).map_err(|e| e.to_string()).and_then(|q| {
                    Sub::new(
                        w,
                        q,
                        SubOptions {
                            hysteresis: 0.1,
                            bytes_per_second: (cfg.client_budget > 0).then_some(cfg.client_budget),
                        },
                        limits(),
                    )
                });
                match sub {
                    Ok(mut sub) => {
                        let initial = sub.initial(w, "world", "game");
                        if send(initial) {
                            v.sub = Some(sub);
                        }
                    }
                    Err(e) => tracing::warn!(player = player.0, error = %e, "subscription refused"),
                }
            }
            Some(sub) => {
                if let Err(e) = sub.apply(w, &Touches(&[self.touched]), self.seq, limits(), self.fragments) {
                    tracing::warn!(player = player.0, error = %e, "subscription failed; resubscribing");
                    v.sub = None;
                    return;
                }
                if conn.tx.capacity() == 0 {
                    game.metrics.ws_dropped_slow.inc();
                } else if let Some((text, _)) = sub.flush(w, "world", self.now, None, false, self.fragments) {
                    send(text);
                }
            }
        }
        let own_progress_changed = v.hud.is_none()
            || self.progress_table.is_some_and(|t| self.touched.tables.get(&t).is_some_and(|s| s.contains(&player)));
        if own_progress_changed
            && let Ok(p) = w.get_component::<Progress>(player)
            && v.hud != Some(p)
        {
            let hud = serde_json::json!({
                "type": "you",
                "tick": self.tick,
                "level": p.level,
                "experience": p.experience,
                "next_level_at": 20 * u64::from(p.level) * u64::from(p.level),
                "health": sim::short(p.health),
                "hunger": sim::short(p.hunger),
                "thirst": sim::short(p.thirst),
                "deaths": p.deaths,
                "players_online": self.online.len(),
            });
            if send(hud.to_string().into_bytes()) {
                v.hud = Some(p);
            }
        }
    }
}
