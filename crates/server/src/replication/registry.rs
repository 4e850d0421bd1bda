//! The primary's view of its replicas.
//!
//! Each commit's time is noted as it is logged (`ReplicationSink::append`,
//! under the write lock, in order); a replica's lag is then measured as
//! what it has not acknowledged: in commits (the primary's last commit
//! minus its acknowledged sequence) and in time (how long ago the oldest
//! commit it lacks was made). Every acknowledgement also records, per
//! newly acknowledged commit, the time from commit to acknowledgement, for
//! the p50/p99 figures of `GET /v1/admin/replication`.
//!
//! Synchronous replication waits here: `ReplicationSink::wait_replicated`
//! returns once `sync_replicas` replicas acknowledged the commit, or fails
//! at `sync_timeout_ms`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::now_ms;

/// Commit times kept for lag figures (older commits count from the oldest
/// kept, a lower bound).
const TIMES_KEPT: usize = 1 << 18;
/// Replicas remembered (connected ones are never forgotten).
const MAX_REPLICAS: usize = 64;
/// Latency histogram: buckets of 2^(i/4) microseconds.
const BUCKETS: usize = 128;

/// One replica as the primary sees it.
#[derive(Debug, Clone)]
pub struct ReplicaEntry {
    pub id: String,
    pub address: String,
    pub advertise: Option<String>,
    /// Connection number while connected (0 = disconnected).
    pub conn: u64,
    pub acked: u64,
    pub sent: u64,
    pub epoch: u64,
    pub connected_unix_ms: u64,
    pub last_contact: Instant,
    pub last_contact_unix_ms: u64,
    /// Its log was released (it lagged beyond `max_retained_log_mb`): it
    /// bootstraps again when it reconnects.
    pub released: bool,
    hist: Box<[u64; BUCKETS]>,
    samples: u64,
}

impl ReplicaEntry {
    fn percentile_ms(&self, p: f64) -> Option<f64> {
        if self.samples == 0 {
            return None;
        }
        let want = ((self.samples as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.hist.iter().enumerate() {
            seen += n;
            if seen >= want {
                // The bucket's upper bound.
                return Some(2f64.powf((i + 1) as f64 / 4.0) / 1000.0);
            }
        }
        None
    }
}

#[derive(Debug, Default)]
struct Reg {
    replicas: Vec<ReplicaEntry>,
    /// `(seq, when committed)`, oldest first.
    times: VecDeque<(u64, Instant)>,
    next_conn: u64,
}

/// Replicas, commit times and synchronous waits.
#[derive(Debug)]
pub struct Registry {
    reg: Mutex<Reg>,
    acked: Condvar,
    pub sync_replicas: usize,
    sync_timeout: Duration,
    fallback_async: bool,
    /// Commits whose synchronous wait timed out (failed or, with
    /// `sync_fallback = "async"`, acknowledged anyway).
    pub sync_timeouts: AtomicU64,
}

/// A replica's figures, as reported.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicaReport {
    pub id: String,
    pub address: String,
    pub advertise: Option<String>,
    pub connected: bool,
    pub acked_seq: u64,
    pub sent_seq: u64,
    pub epoch: u64,
    pub lag_ops: u64,
    pub lag_ms: f64,
    pub lag_p50_ms: Option<f64>,
    pub lag_p99_ms: Option<f64>,
    pub acks_measured: u64,
    pub last_contact_unix_ms: u64,
    pub connected_unix_ms: u64,
    pub released: bool,
}

impl Registry {
    pub fn new(c: &ecsdb::config::ReplicationSection) -> Registry {
        Registry {
            reg: Mutex::new(Reg::default()),
            acked: Condvar::new(),
            sync_replicas: c.sync_replicas as usize,
            sync_timeout: Duration::from_millis(c.sync_timeout_ms),
            fallback_async: c.sync_fallback == "async",
            sync_timeouts: AtomicU64::new(0),
        }
    }

    /// Note commit `seq`'s time.
    pub fn committed(&self, seq: u64) {
        let mut r = self.reg.lock();
        if r.times.len() >= TIMES_KEPT {
            r.times.pop_front();
        }
        r.times.push_back((seq, Instant::now()));
    }

    /// A replica connected (an entry with the same id is reused).
    pub fn connect(&self, id: &str, address: &str, advertise: Option<String>, after: u64, epoch: u64) -> u64 {
        let mut r = self.reg.lock();
        r.next_conn += 1;
        let conn = r.next_conn;
        // Bounded: beyond MAX_REPLICAS entries, disconnected ones are
        // forgotten, oldest contact first.
        while r.replicas.len() >= MAX_REPLICAS && !r.replicas.iter().any(|e| e.id == id) {
            let Some(i) = r
                .replicas
                .iter()
                .enumerate()
                .filter(|(_, e)| e.conn == 0)
                .min_by_key(|(_, e)| e.last_contact)
                .map(|(i, _)| i)
            else {
                break;
            };
            r.replicas.remove(i);
        }
        let now = now_ms();
        match r.replicas.iter_mut().find(|e| e.id == id) {
            Some(e) => {
                e.conn = conn;
                e.address = address.to_string();
                e.advertise = advertise;
                e.acked = after;
                e.sent = after;
                e.epoch = epoch;
                e.connected_unix_ms = now;
                e.last_contact = Instant::now();
                e.last_contact_unix_ms = now;
                e.released = false;
            }
            None => r.replicas.push(ReplicaEntry {
                id: id.to_string(),
                address: address.to_string(),
                advertise,
                conn,
                acked: after,
                sent: after,
                epoch,
                connected_unix_ms: now,
                last_contact: Instant::now(),
                last_contact_unix_ms: now,
                released: false,
                hist: Box::new([0; BUCKETS]),
                samples: 0,
            }),
        }
        drop(r);
        self.acked.notify_all();
        conn
    }

    pub fn disconnect(&self, conn: u64) {
        let mut r = self.reg.lock();
        if let Some(e) = r.replicas.iter_mut().find(|e| e.conn == conn) {
            e.conn = 0;
        }
    }

    pub fn sent(&self, conn: u64, seq: u64) {
        if let Some(e) = self.reg.lock().replicas.iter_mut().find(|e| e.conn == conn) {
            e.sent = e.sent.max(seq);
        }
    }

    /// Replica `conn` holds every commit up to `seq` durably.
    pub fn ack(&self, conn: u64, seq: u64) {
        let now = Instant::now();
        let mut r = self.reg.lock();
        let Reg { replicas, times, .. } = &mut *r;
        let Some(e) = replicas.iter_mut().find(|e| e.conn == conn) else { return };
        e.last_contact = now;
        e.last_contact_unix_ms = now_ms();
        // A replica cannot hold what it was never sent: an acknowledgement
        // beyond it (a faulty or hostile peer) counts only up to it.
        let seq = seq.min(e.sent);
        if seq > e.acked {
            // Commit → acknowledgement time of each newly acknowledged commit.
            let start = times.partition_point(|t| t.0 <= e.acked);
            for (s, t) in times.iter().skip(start) {
                if *s > seq {
                    break;
                }
                let us = now.duration_since(*t).as_micros().max(1) as f64;
                let b = ((us.log2() * 4.0) as usize).min(BUCKETS - 1);
                e.hist[b] += 1;
                e.samples += 1;
            }
            e.acked = seq;
        }
        // Times every connected replica acknowledged are no longer needed
        // (disconnected ones count from the oldest kept).
        let floor = replicas.iter().filter(|e| e.conn != 0).map(|e| e.acked).min().unwrap_or(seq);
        while times.front().is_some_and(|t| t.0 <= floor) && times.len() > 1 {
            times.pop_front();
        }
        drop(r);
        self.acked.notify_all();
    }

    pub fn touch(&self, conn: u64) {
        if let Some(e) = self.reg.lock().replicas.iter_mut().find(|e| e.conn == conn) {
            e.last_contact = Instant::now();
            e.last_contact_unix_ms = now_ms();
        }
    }

    /// Every replica's figures; `last` = the primary's last commit.
    pub fn report(&self, last: u64) -> Vec<ReplicaReport> {
        let r = self.reg.lock();
        let now = Instant::now();
        r.replicas
            .iter()
            .map(|e| {
                let lag_ms = if e.acked >= last {
                    0.0
                } else {
                    let i = r.times.partition_point(|t| t.0 <= e.acked);
                    r.times.get(i).or(r.times.back()).map_or(0.0, |t| now.duration_since(t.1).as_secs_f64() * 1e3)
                };
                ReplicaReport {
                    id: e.id.clone(),
                    address: e.address.clone(),
                    advertise: e.advertise.clone(),
                    connected: e.conn != 0,
                    acked_seq: e.acked,
                    sent_seq: e.sent,
                    epoch: e.epoch,
                    lag_ops: last.saturating_sub(e.acked),
                    lag_ms,
                    lag_p50_ms: e.percentile_ms(0.50),
                    lag_p99_ms: e.percentile_ms(0.99),
                    acks_measured: e.samples,
                    last_contact_unix_ms: e.last_contact_unix_ms,
                    connected_unix_ms: e.connected_unix_ms,
                    released: e.released,
                }
            })
            .collect()
    }

    /// Reset every replica's latency figures (benchmarks measure phases).
    pub fn reset_latency(&self) {
        for e in &mut self.reg.lock().replicas {
            e.hist.fill(0);
            e.samples = 0;
        }
    }

    /// Replicas connected now.
    pub fn connected(&self) -> usize {
        self.reg.lock().replicas.iter().filter(|e| e.conn != 0).count()
    }

    /// The oldest commit some replica still needs (`None` = no replica).
    pub fn oldest_needed(&self) -> Option<u64> {
        self.reg.lock().replicas.iter().filter(|e| !e.released).map(|e| e.acked).min()
    }

    /// Stop keeping the log for replicas behind `seq` (they bootstrap again).
    pub fn release_behind(&self, seq: u64) -> Vec<String> {
        let mut r = self.reg.lock();
        let mut out = Vec::new();
        for e in &mut r.replicas {
            if !e.released && e.acked < seq {
                e.released = true;
                out.push(e.id.clone());
            }
        }
        out
    }

    pub fn peers(&self) -> Vec<String> {
        self.reg.lock().replicas.iter().filter_map(|e| e.advertise.clone()).collect()
    }

    /// Wait until `k` replicas hold `seq`, at most `timeout`.
    pub fn wait_for(&self, seq: u64, k: usize, timeout: Duration) -> Result<(), usize> {
        let deadline = Instant::now() + timeout;
        let mut r = self.reg.lock();
        loop {
            let have = r.replicas.iter().filter(|e| e.acked >= seq).count();
            if have >= k {
                return Ok(());
            }
            if self.acked.wait_until(&mut r, deadline).timed_out() {
                let have = r.replicas.iter().filter(|e| e.acked >= seq).count();
                return if have >= k { Ok(()) } else { Err(have) };
            }
        }
    }
}

thread_local! {
    static EXEMPT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// While alive, commits made on this thread do not wait for synchronous
/// replicas: the server's own auth bookkeeping (logins, logouts, users, API
/// keys, password changes). A cluster must be able to let its admin in and
/// create the replicas' keys before any replica exists; a session lost in a
/// failover means logging in again. User data always waits.
#[derive(Debug)]
pub struct SyncExempt(bool);

impl SyncExempt {
    pub fn enter() -> SyncExempt {
        SyncExempt(EXEMPT.with(|e| e.replace(true)))
    }
}

impl Drop for SyncExempt {
    fn drop(&mut self) {
        let before = self.0;
        EXEMPT.with(|e| e.set(before));
    }
}

/// The commit sink that notes commit times and, with `sync_replicas`,
/// holds each commit's acknowledgement until enough replicas have it.
#[derive(Debug)]
pub struct ReplicationSink(pub Arc<Registry>);

impl ecsdb::CommitSink for ReplicationSink {
    fn append(&self, seq: u64, _changes: &ecsdb::ChangeSet) -> Result<(), String> {
        self.0.committed(seq);
        Ok(())
    }

    fn wait_replicated(&self, seq: u64) -> Result<(), String> {
        let reg = &self.0;
        if reg.sync_replicas == 0 || EXEMPT.with(std::cell::Cell::get) {
            return Ok(());
        }
        match reg.wait_for(seq, reg.sync_replicas, reg.sync_timeout) {
            Ok(()) => Ok(()),
            Err(have) => {
                reg.sync_timeouts.fetch_add(1, Ordering::Relaxed);
                let msg = format!(
                    "{have} of the {} replicas replication.sync_replicas requires acknowledged it within {} ms",
                    reg.sync_replicas,
                    reg.sync_timeout.as_millis()
                );
                if reg.fallback_async {
                    tracing::warn!(seq, "{msg}; acknowledged anyway (replication.sync_fallback = \"async\")");
                    Ok(())
                } else {
                    Err(msg)
                }
            }
        }
    }
}

/// Bytes of log segments (in `wal/` and `wal_archive/`) holding commits
/// after `seq`.
pub fn log_bytes_after(dir: &std::path::Path, seq: u64) -> u64 {
    use ecsdb::storage::fs::{OsFs, Vfs};
    let mut segs = Vec::new();
    for sub in ["wal", "wal_archive"] {
        if let Ok(v) = ecsdb::storage::store::list_segments(&OsFs, &dir.join(sub)) {
            segs.extend(v);
        }
    }
    segs.sort();
    let mut total = 0;
    for (i, (_, p)) in segs.iter().enumerate() {
        let next_first = segs.get(i + 1).map_or(u64::MAX, |s| s.0);
        if next_first > seq + 1 {
            total += OsFs.file_len(p).unwrap_or(0);
        }
    }
    total
}

/// Keep the log for the replicas (every commit after the oldest one a
/// replica has not acknowledged), within `max_retained_log_mb`: beyond it
/// the slowest replica is released (it bootstraps again if it needs what
/// is then deleted). Runs until the node stops.
pub fn retain_loop(st: &crate::app::Shared) {
    let r = &st.replication;
    let max = r.config.max_retained_log_mb.saturating_mul(1 << 20);
    let mut tick = 0u32;
    loop {
        if r.stop.load(Ordering::Acquire) || *st.stopping.borrow() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
        tick += 1;
        if !tick.is_multiple_of(10) {
            continue;
        }
        if r.role() != super::Role::Primary {
            st.db.hold_log_for("replication", u64::MAX);
            continue;
        }
        if tick.is_multiple_of(60) {
            // Every ~3 s: a partition may have healed on a failover this
            // primary slept through; its peers would say so.
            super::replica::check_epoch_on_start(r);
            if r.role() != super::Role::Primary {
                continue;
            }
        }
        let mut hold = r.registry.oldest_needed();
        while let Some(seq) = hold {
            if log_bytes_after(&r.data_dir, seq) <= max {
                break;
            }
            let released = r.registry.release_behind(seq + 1);
            tracing::warn!(
                replicas = ?released,
                behind = seq,
                limit_mb = r.config.max_retained_log_mb,
                "replicas lag beyond replication.max_retained_log_mb: their log is released (they bootstrap again if they need it)"
            );
            hold = r.registry.oldest_needed();
        }
        st.db.hold_log_for("replication", hold.unwrap_or(u64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecsdb::CommitSink;

    fn cfg(k: u32, fallback: &str) -> ecsdb::config::ReplicationSection {
        ecsdb::config::ReplicationSection {
            sync_replicas: k,
            sync_timeout_ms: 50,
            sync_fallback: fallback.into(),
            ..Default::default()
        }
    }

    #[test]
    fn lag_and_acks() {
        let r = Registry::new(&cfg(0, "fail"));
        let c = r.connect("a", "127.0.0.1:1", None, 0, 1);
        for s in 1..=10 {
            r.committed(s);
        }
        let rep = r.report(10);
        assert_eq!(rep[0].lag_ops, 10);
        assert!(rep[0].lag_ms >= 0.0);
        // Acknowledgements count only up to what was sent.
        r.sent(c, 7);
        r.ack(c, 9);
        assert_eq!(r.report(10)[0].acked_seq, 7);
        r.sent(c, 10);
        r.ack(c, 7);
        let rep = r.report(10);
        assert_eq!((rep[0].acked_seq, rep[0].lag_ops, rep[0].acks_measured), (7, 3, 7));
        assert!(rep[0].lag_p99_ms.is_some());
        r.ack(c, 10);
        assert!(r.report(10)[0].lag_ms.abs() < f64::EPSILON);
        r.disconnect(c);
        assert!(!r.report(10)[0].connected);
        // A stale connection's acknowledgements are ignored.
        r.ack(c, 50);
        assert_eq!(r.report(10)[0].acked_seq, 10);
        assert_eq!(r.oldest_needed(), Some(10));
        assert_eq!(r.release_behind(11), vec!["a".to_string()]);
        assert_eq!(r.oldest_needed(), None);
    }

    #[test]
    fn synchronous_waits_succeed_time_out_or_fall_back() {
        let reg = Arc::new(Registry::new(&cfg(1, "fail")));
        let sink = ReplicationSink(reg.clone());
        sink.append(1, &ecsdb::ChangeSet::new()).unwrap();
        let e = sink.wait_replicated(1).unwrap_err();
        assert!(e.contains("0 of the 1 replicas"), "{e}");
        let c = reg.connect("a", "x", None, 0, 1);
        reg.sent(c, 1);
        let r2 = reg.clone();
        let t = std::thread::spawn(move || r2.ack(c, 1));
        // Either already acknowledged or woken by the acknowledgement.
        let mut ok = false;
        for _ in 0..100 {
            if sink.wait_replicated(1).is_ok() {
                ok = true;
                break;
            }
        }
        t.join().unwrap();
        assert!(ok);
        let lax = ReplicationSink(Arc::new(Registry::new(&cfg(2, "async"))));
        lax.wait_replicated(5).unwrap();
        assert_eq!(lax.0.sync_timeouts.load(Ordering::Relaxed), 1);
    }
}
