//! Prometheus metrics: the game families seed 001's dashboard reads
//! (`game_players_online`, `game_tick_duration_seconds`), the HTTP families,
//! WebSocket traffic, and the embedded database's figures.

use std::sync::atomic::AtomicU64;

use ecsdb::Database;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub players_online: Gauge,
    pub tick_duration: Histogram,
    pub ticks: Counter,
    pub tick_overruns: Counter,
    pub server_tick: Gauge,
    pub ws_connections: Gauge,
    pub ws_messages_in: Counter,
    pub ws_messages_out: Counter,
    pub ws_bytes_out: Counter,
    pub ws_dropped_slow: Counter,
    pub logins: Family<ResultLabels, Counter>,
    pub registrations: Counter,
    pub rate_limited: Counter,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram>,
    db_sequence: Gauge,
    db_entities: Gauge,
    db_commits: Gauge<u64, AtomicU64>,
    db_memory: Gauge,
    remote_lag: Gauge,
    remote_errors: Gauge<u64, AtomicU64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            players_online: Gauge::default(),
            tick_duration: Histogram::new([0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25]),
            ticks: Counter::default(),
            tick_overruns: Counter::default(),
            server_tick: Gauge::default(),
            ws_connections: Gauge::default(),
            ws_messages_in: Counter::default(),
            ws_messages_out: Counter::default(),
            ws_bytes_out: Counter::default(),
            ws_dropped_slow: Counter::default(),
            logins: Family::default(),
            registrations: Counter::default(),
            rate_limited: Counter::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(|| {
                Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
            }),
            db_sequence: Gauge::default(),
            db_entities: Gauge::default(),
            db_commits: Gauge::default(),
            db_memory: Gauge::default(),
            remote_lag: Gauge::default(),
            remote_errors: Gauge::default(),
        };
        r.register(
            "game_players_online",
            "Authenticated WebSocket connections (players in the world)",
            m.players_online.clone(),
        );
        r.register(
            "game_tick_duration_seconds",
            "Time one tick took: systems, commit, subscriptions, sends",
            m.tick_duration.clone(),
        );
        r.register("game_ticks", "Ticks run", m.ticks.clone());
        r.register("game_tick_overruns", "Ticks that took longer than the tick interval", m.tick_overruns.clone());
        r.register("game_server_tick", "The current server tick", m.server_tick.clone());
        r.register("game_ws_connections", "Open WebSocket connections, authenticated or not", m.ws_connections.clone());
        r.register("game_ws_messages_received", "WebSocket messages received from clients", m.ws_messages_in.clone());
        r.register("game_ws_messages_sent", "WebSocket messages sent to clients", m.ws_messages_out.clone());
        r.register("game_ws_bytes_sent", "WebSocket payload bytes sent to clients", m.ws_bytes_out.clone());
        r.register(
            "game_ws_updates_deferred",
            "World updates held back (coalesced) because a client's send queue was full",
            m.ws_dropped_slow.clone(),
        );
        r.register("game_logins", "Login attempts by result", m.logins.clone());
        r.register("game_registrations", "Accounts created", m.registrations.clone());
        r.register("game_rate_limited", "Requests refused with 429", m.rate_limited.clone());
        r.register("http_requests", "HTTP requests by method, route and status", m.http_requests.clone());
        r.register("http_request_duration_seconds", "HTTP request latency by route", m.http_duration.clone());
        r.register("ecsdb_sequence", "The database's last committed sequence", m.db_sequence.clone());
        r.register("ecsdb_entities", "Entities in the database", m.db_entities.clone());
        r.register("ecsdb_transactions_committed", "Transactions committed since start", m.db_commits.clone());
        r.register("ecsdb_memory_bytes", "Memory the database accounts for", m.db_memory.clone());
        r.register(
            "game_remote_lag_commits",
            "Local commits not yet acknowledged by the remote ecsdb (remote mode)",
            m.remote_lag.clone(),
        );
        r.register("game_remote_push_errors", "Failed writes to the remote ecsdb (retried)", m.remote_errors.clone());
        *m.registry.lock() = r;
        m
    }

    /// The text exposition, with the database's figures read now.
    pub fn render(&self, db: &Database, remote: Option<&crate::remote::Remote>) -> String {
        if let Some(r) = remote {
            self.remote_lag.set(r.status().lag_commits as i64);
            self.remote_errors.set(r.push_errors.load(std::sync::atomic::Ordering::Relaxed));
        }
        let dm = db.metrics();
        self.db_sequence.set(dm.sequence as i64);
        self.db_entities.set(dm.total_entities as i64);
        self.db_commits.set(dm.transactions_committed);
        self.db_memory.set(dm.memory_bytes as i64);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry.lock());
        out
    }
}
