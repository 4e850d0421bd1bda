//! Prometheus metrics, one registry per server (so two servers in one test
//! keep separate figures). Database figures are read at scrape time.

use std::sync::atomic::Ordering::Relaxed;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `result="success"|"failure"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// `replica="<id>"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabels {
    pub replica: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub status: u16,
}

/// All metrics of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Histogram,
    pub auth_failures: Counter,
    pub rate_limited: Counter,
    pub commit_latency: Histogram,
    /// Commit to delta written to a stream client's socket.
    pub stream_delivery: Histogram,
    stream_clients: Gauge,
    stream_subscriptions: Gauge,
    stream_pending: Gauge,
    stream_max_lag: Gauge,
    stream_memory: Gauge,
    stream_deltas: Counter,
    stream_bytes: Counter,
    stream_coalesced: Counter,
    stream_behind: Counter,
    entities: Gauge,
    memory: Gauge,
    wal_size: Gauge,
    tx_active: Gauge,
    commits: Counter,
    operations: Counter,
    wal_bytes: Counter,
    snapshots: Counter,
    tx_committed: Counter,
    tx_rolled_back: Counter,
    backups: Family<ResultLabels, Counter>,
    backup_last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    backup_last_duration: Gauge<f64, std::sync::atomic::AtomicU64>,
    archive_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    archive_lag_commits: Gauge,
    archive_shipped: Gauge,
    archive_failures: Counter,
    replication_lag_seconds: Family<ReplicaLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    replication_lag_ops: Family<ReplicaLabels, Gauge>,
    replication_connected: Gauge,
    replication_role: Gauge,
    replication_epoch: Gauge,
    replication_sync_timeouts: Counter,
}

fn catch_up(c: &Counter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            http_requests: Family::default(),
            http_duration: Histogram::new(exponential_buckets(0.000_1, 2.0, 18)),
            auth_failures: Counter::default(),
            rate_limited: Counter::default(),
            commit_latency: Histogram::new(exponential_buckets(0.000_01, 2.0, 20)),
            stream_delivery: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            stream_clients: Gauge::default(),
            stream_subscriptions: Gauge::default(),
            stream_pending: Gauge::default(),
            stream_max_lag: Gauge::default(),
            stream_memory: Gauge::default(),
            stream_deltas: Counter::default(),
            stream_bytes: Counter::default(),
            stream_coalesced: Counter::default(),
            stream_behind: Counter::default(),
            entities: Gauge::default(),
            memory: Gauge::default(),
            wal_size: Gauge::default(),
            tx_active: Gauge::default(),
            commits: Counter::default(),
            operations: Counter::default(),
            wal_bytes: Counter::default(),
            snapshots: Counter::default(),
            tx_committed: Counter::default(),
            tx_rolled_back: Counter::default(),
            backups: Family::default(),
            backup_last_success: Gauge::default(),
            backup_last_duration: Gauge::default(),
            archive_lag_seconds: Gauge::default(),
            archive_lag_commits: Gauge::default(),
            archive_shipped: Gauge::default(),
            archive_failures: Counter::default(),
            replication_lag_seconds: Family::default(),
            replication_lag_ops: Family::default(),
            replication_connected: Gauge::default(),
            replication_role: Gauge::default(),
            replication_epoch: Gauge::default(),
            replication_sync_timeouts: Counter::default(),
        };
        {
            let mut r = m.registry.lock();
            let p = r.sub_registry_with_prefix("ecsdb");
            p.register("entities", "Live entities", m.entities.clone());
            p.register(
                "replication_lag_seconds",
                "Age of the oldest commit a replica has not acknowledged (on the primary; on a replica, its own)",
                m.replication_lag_seconds.clone(),
            );
            p.register(
                "replication_lag_ops",
                "Commits a replica has not acknowledged (on the primary; on a replica, its own)",
                m.replication_lag_ops.clone(),
            );
            p.register(
                "replication_connected_replicas",
                "Replicas connected (primary) or 1 if connected to the primary (replica)",
                m.replication_connected.clone(),
            );
            p.register("replication_role", "0 primary, 1 replica, 2 fenced", m.replication_role.clone());
            p.register("replication_epoch", "The epoch this node is at", m.replication_epoch.clone());
            p.register(
                "replication_sync_timeouts",
                "Commits whose synchronous-replication wait timed out",
                m.replication_sync_timeouts.clone(),
            );
            p.register("backups", "Backups taken, by result", m.backups.clone());
            p.register(
                "backup_last_success_timestamp_seconds",
                "Unix time of the last successful backup (0: none since start)",
                m.backup_last_success.clone(),
            );
            p.register("backup_last_duration_seconds", "Duration of the last backup", m.backup_last_duration.clone());
            p.register(
                "archive_lag_seconds",
                "Age of the oldest commit not yet on the backup target (0: all archived)",
                m.archive_lag_seconds.clone(),
            );
            p.register("archive_lag_commits", "Commits not yet on the backup target", m.archive_lag_commits.clone());
            p.register("archive_shipped_sequence", "Last commit on the backup target", m.archive_shipped.clone());
            p.register("archive_failures", "Failed archiving passes (retried)", m.archive_failures.clone());
            p.register("commits", "Commits (with changes)", m.commits.clone());
            p.register("operations", "Operations in committed transactions", m.operations.clone());
            p.register("commit_latency_seconds", "Commit latency seen by the API", m.commit_latency.clone());
            p.register("wal_bytes_written", "Bytes appended to the commit log", m.wal_bytes.clone());
            p.register("wal_size_bytes", "Size of the live commit log", m.wal_size.clone());
            p.register("snapshots", "Snapshots taken", m.snapshots.clone());
            p.register("memory_bytes", "Accounted live data", m.memory.clone());
            p.register("transactions_active", "Transactions in progress", m.tx_active.clone());
            p.register("transactions_committed", "Transactions committed", m.tx_committed.clone());
            p.register("transactions_rolled_back", "Transactions rolled back", m.tx_rolled_back.clone());
            p.register("http_requests", "HTTP requests by route and status", m.http_requests.clone());
            p.register("http_request_duration_seconds", "HTTP request duration", m.http_duration.clone());
            p.register("auth_failures", "Rejected credentials", m.auth_failures.clone());
            p.register("rate_limited", "Requests refused by rate limits", m.rate_limited.clone());
            p.register("stream_clients", "Stream (WebSocket) clients connected", m.stream_clients.clone());
            p.register("stream_subscriptions", "Live subscriptions", m.stream_subscriptions.clone());
            p.register("stream_deltas", "Delta messages sent", m.stream_deltas.clone());
            p.register("stream_bytes_sent", "Bytes sent to stream clients", m.stream_bytes.clone());
            p.register(
                "stream_coalesced",
                "Row updates merged into one not yet sent (slow client or budget)",
                m.stream_coalesced.clone(),
            );
            p.register("stream_behind", "Times a stream client fell behind (send queue full)", m.stream_behind.clone());
            p.register("stream_pending_rows", "Row updates held back for stream clients", m.stream_pending.clone());
            p.register(
                "stream_memory_bytes",
                "Memory held by live subscriptions (rows and pending updates)",
                m.stream_memory.clone(),
            );
            p.register(
                "stream_max_lag_seqs",
                "Largest lag of a stream client behind the newest commit, in sequences",
                m.stream_max_lag.clone(),
            );
            p.register(
                "stream_delivery_seconds",
                "Commit to delta written to the client's socket",
                m.stream_delivery.clone(),
            );
        }
        m
    }

    /// The Prometheus text exposition, with database figures refreshed.
    pub fn render(
        &self,
        db: &ecsdb::Database,
        hub: &crate::stream::Hub,
        backups: Option<&crate::backups::Backups>,
        replication: &crate::replication::Replication,
    ) -> String {
        self.render_replication(db, replication);
        if let Some(b) = backups {
            let f = &b.figures;
            catch_up(&self.backups.get_or_create(&ResultLabels { result: "success" }), f.succeeded.load(Relaxed));
            catch_up(&self.backups.get_or_create(&ResultLabels { result: "failure" }), f.failed.load(Relaxed));
            self.backup_last_success.set(f.last_success_unix.load(Relaxed) as f64);
            self.backup_last_duration.set(f.last_duration_ms.load(Relaxed) as f64 / 1000.0);
            if let Some(a) = b.archive_status() {
                self.archive_lag_seconds.set(a.lag_seconds);
                self.archive_lag_commits.set(a.lag_commits as i64);
                self.archive_shipped.set(a.shipped_seq as i64);
                catch_up(&self.archive_failures, a.failures);
            }
        }
        let dm = db.metrics();
        let clients = hub.clients();
        let head = dm.sequence;
        self.stream_clients.set(clients.len() as i64);
        self.stream_subscriptions.set(clients.iter().map(|c| c.subscriptions.load(Relaxed) as i64).sum());
        self.stream_pending.set(clients.iter().map(|c| c.pending.load(Relaxed) as i64).sum());
        self.stream_max_lag
            .set(clients.iter().map(|c| head.saturating_sub(c.sent_seq.load(Relaxed)) as i64).max().unwrap_or(0));
        self.stream_memory.set(hub.memory.load(Relaxed) as i64);
        catch_up(&self.stream_deltas, hub.deltas.load(Relaxed));
        catch_up(&self.stream_bytes, hub.bytes.load(Relaxed));
        catch_up(&self.stream_coalesced, hub.coalesced.load(Relaxed));
        catch_up(&self.stream_behind, hub.behind_notices.load(Relaxed));
        // User data only: system rows (sessions, users, keys) would let any
        // scraper watch logins.
        self.entities.set(crate::guard::user_counts(&db.read()).entities as i64);
        self.memory.set(dm.memory_bytes as i64);
        self.tx_active.set(dm.transactions_active as i64);
        catch_up(&self.operations, dm.total_operations);
        catch_up(&self.tx_committed, dm.transactions_committed);
        catch_up(&self.tx_rolled_back, dm.transactions_rolled_back);
        catch_up(&self.commits, dm.sequence);
        if let Some(s) = db.storage_stats() {
            self.wal_size.set(s.wal_size_bytes as i64);
            catch_up(&self.wal_bytes, s.wal_bytes_written);
            catch_up(&self.snapshots, s.checkpoints);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry.lock()).is_err() {
            out.clear();
        }
        out
    }
}

impl Metrics {
    fn render_replication(&self, db: &ecsdb::Database, r: &crate::replication::Replication) {
        use crate::replication::Role;
        let s = r.snapshot_state();
        self.replication_role.set(match s.role {
            Role::Primary => 0,
            Role::Replica => 1,
            Role::Fenced => 2,
        });
        self.replication_epoch.set(s.epoch as i64);
        catch_up(&self.replication_sync_timeouts, r.registry.sync_timeouts.load(Relaxed));
        self.replication_lag_seconds.clear();
        self.replication_lag_ops.clear();
        if s.role == Role::Replica {
            let f = r.follower.lock().clone();
            let label = ReplicaLabels { replica: r.config.replica_id.clone().unwrap_or_else(|| r.advertise.clone()) };
            let lag_ms = f.lag_ms(crate::replication::now_ms());
            self.replication_lag_seconds.get_or_create(&label).set(lag_ms as f64 / 1000.0);
            self.replication_lag_ops.get_or_create(&label).set(f.primary_seq.saturating_sub(f.applied_seq) as i64);
            self.replication_connected.set(i64::from(f.connected));
            return;
        }
        let reps = r.registry.report(db.version());
        self.replication_connected.set(reps.iter().filter(|x| x.connected).count() as i64);
        for x in reps {
            let label = ReplicaLabels { replica: x.id.clone() };
            self.replication_lag_seconds.get_or_create(&label).set(x.lag_ms / 1000.0);
            self.replication_lag_ops.get_or_create(&label).set(x.lag_ops as i64);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
