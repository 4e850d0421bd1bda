//! `GET /v1/stream`: live query subscriptions over a WebSocket.
//!
//! A client authenticates (an `Authorization: Bearer` header on the
//! upgrade, or — for browsers — a first message `{"type":"auth","token"}`),
//! then sends `{"type":"subscribe","id","query"}` with the JSON of
//! `/v1/query`. It receives `{"type":"initial","id","seq","rows"}`, then for
//! every commit that changes the result `{"type":"delta","id","seq",
//! "entered":[rows],"changed":[{"id", "<table>": {"<field>": value}}],
//! "left":[ids]}`; `{"type":"unsubscribe","id"}` ends one. The protocol is
//! in `docs/API.md`.
//!
//! How a connection works, and why:
//! - Commits reach every connection through the [`hub`], handed over under
//!   the write lock; a connection drains them under a read lock, so it
//!   always evaluates an exact state and knows exactly which commits it
//!   contains (see `hub.rs`).
//! - Each subscription is brought up to date from what those commits
//!   touched, not by running its query again (see `sub.rs` and
//!   `ecsdb::core::live`).
//! - Sending is a separate task behind a short queue. When the queue is
//!   full (the client reads slowly) updates stay pending in the
//!   subscriptions, coalesced per entity, so the memory a slow client costs
//!   is bounded by its subscriptions' results, never by time; the client is
//!   told it fell behind (`{"type":"behind"}`). A client that reads nothing
//!   for [`WRITE_STALL`] is disconnected.
//! - Credentials are checked again once a second and whenever a commit
//!   touches users, sessions or API keys: logout, revocation, a password
//!   change or expiry close the stream with 4401.

pub mod hub;
pub mod protocol;
pub mod sub;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query as UrlQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ecsdb::Query;
use ecsdb::core::live::{Touched, Touches};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value as J, json};
use tokio::sync::{broadcast, mpsc};

pub use hub::Hub;
use hub::{ClientStats, CommitEvent};
use protocol::ClientMsg;
use sub::{Bucket, Limits, Sub, SubOptions};

use crate::app::Shared;
use crate::auth::{Principal, authenticate};
use crate::error::ApiError;
use crate::system::Perms;

/// How long a browser may take to send its first (auth) message.
const AUTH_WAIT: Duration = Duration::from_secs(5);
/// Largest message a client may send.
pub const MAX_CLIENT_MESSAGE: usize = 1 << 20;
/// Connections that have not authenticated yet, at most.
const MAX_PENDING_AUTH: usize = 256;
/// Frames queued for the sending task.
const SEND_QUEUE: usize = 16;
/// A frame the client does not take in this long ends the connection.
pub const WRITE_STALL: Duration = Duration::from_secs(30);
/// While updates are pending, how often sending is tried again.
const RETRY_EVERY: Duration = Duration::from_millis(50);
/// How often credentials are checked again without a reason to.
const RECHECK_EVERY: Duration = Duration::from_secs(1);
/// Subscriptions per connection that run their query again on each commit.
const MAX_RERUN_SUBS: usize = 8;
/// ... and per user, over all their connections.
const MAX_RERUN_PER_USER: usize = 16;
/// The smallest budget (a budget of nothing would freeze a subscription).
const MIN_BUDGET: u64 = 256;
/// Longest close reason (a close frame's payload is at most 125 bytes).
const MAX_REASON: usize = 123;

/// A close reason cut to fit a close frame.
fn reason_text(s: &str) -> String {
    let mut end = s.len().min(MAX_REASON);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Default hysteresis of `near` subscriptions (a fraction of the radius).
const DEFAULT_HYSTERESIS: f64 = 0.1;

/// Close codes (see docs/API.md).
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const TOO_BIG: u16 = 1009;
    pub const TRY_LATER: u16 = 1013;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const FORBIDDEN: u16 = 4403;
    pub const AUTH_TIMEOUT: u16 = 4408;
}

/// `?compression=zstd|none`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    compression: Option<String>,
}

/// The upgrade handler.
pub async fn stream(
    State(st): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    params: Result<UrlQuery<StreamParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let refuse = |code: StatusCode, kind: &'static str, msg: String| ApiError::new(code, kind, msg).into_response();
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{e} (this route is a WebSocket: see docs/API.md)"),
            );
        }
    };
    if headers.get_all(axum::http::header::AUTHORIZATION).iter().count() > 1 {
        return refuse(StatusCode::BAD_REQUEST, "bad_request", "send one Authorization header".into());
    }
    let nets = st.config.db.replication.allowed_networks().unwrap_or_default();
    if !nets.is_empty() && !nets.iter().any(|n| n.contains(&peer.ip())) {
        st.metrics.auth_failures.inc();
        return refuse(
            StatusCode::FORBIDDEN,
            "ip_not_allowed",
            format!("{} may not open streams ([replication] allowed_ips)", peer.ip()),
        );
    }
    let params = match params {
        Ok(UrlQuery(p)) => p,
        Err(e) => {
            return refuse(StatusCode::BAD_REQUEST, "bad_request", format!("{e} (the one parameter is compression)"));
        }
    };
    let compress = match params.compression.as_deref().unwrap_or(&st.config.db.replication.delta_compression) {
        "zstd" => Some(st.config.db.replication.level),
        "none" => None,
        other => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("compression must be zstd or none, not `{other}`"),
            );
        }
    };
    let max = st.config.db.replication.max_clients as usize;
    if st.stream_clients.load(Ordering::Acquire) >= max {
        return too_many(max);
    }
    let per_ip = st.config.server.max_connections_per_ip;
    let Some(ip_slot) = st.hub.ip_slot(peer.ip(), per_ip) else {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            format!("{} has {per_ip} streams open (server.max_connections_per_ip)", peer.ip()),
        );
    };
    let header = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    // Sockets that have not authenticated are few and short-lived: they
    // never hold a client slot.
    // An upgrade without credentials (a browser's) is refused before the
    // upgrade when the address used up its allowance for requests without
    // valid credentials (failed attempts, as a login would be); one with a
    // header is judged by its credential, like any authenticated request.
    if header.is_none()
        && let Err(retry) = st.ip_limiter.peek(&peer.ip().to_string())
    {
        st.metrics.rate_limited.inc();
        return crate::app::too_many(retry);
    }
    let pending = header.is_none().then(|| PendingAuth::take(&st.hub));
    if let Some(None) = pending {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_clients",
            format!("{MAX_PENDING_AUTH} stream connections are waiting to authenticate; try again shortly"),
        );
    }
    ws.max_message_size(MAX_CLIENT_MESSAGE).max_frame_size(MAX_CLIENT_MESSAGE).on_upgrade(move |socket| async move {
        session(st, socket, header, pending.flatten(), compress, peer).await;
        drop(ip_slot);
    })
}

/// `GET /v1/admin/streams`: the open stream connections and their lag.
pub async fn clients(State(st): State<Shared>) -> axum::Json<J> {
    let head = st.db.read().seq();
    let list: Vec<J> = st
        .hub
        .clients()
        .iter()
        .map(|c| {
            let sent = c.sent_seq.load(Ordering::Relaxed);
            json!({
                "id": c.id,
                "user": c.user,
                "addr": c.addr,
                "connected_s": c.connected.elapsed().as_secs_f64(),
                "subscriptions": c.subscriptions.load(Ordering::Relaxed),
                "sent_seq": sent,
                "lag_seqs": head.saturating_sub(sent),
                "pending_rows": c.pending.load(Ordering::Relaxed),
                "memory_bytes": c.memory.load(Ordering::Relaxed),
                "deltas_sent": c.deltas_sent.load(Ordering::Relaxed),
                "bytes_sent": c.bytes_sent.load(Ordering::Relaxed),
            })
        })
        .collect();
    axum::Json(json!({"seq": head, "clients": list}))
}

fn too_many(max: usize) -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_clients",
        format!("the server has its maximum of {max} stream clients ([replication] max_clients)"),
    )
    .into_response()
}

/// A connection waiting for its auth message (counted while it lives).
struct PendingAuth(Arc<Hub>);

impl PendingAuth {
    fn take(hub: &Arc<Hub>) -> Option<PendingAuth> {
        if hub.pending_auth.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING_AUTH {
            hub.pending_auth.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(PendingAuth(hub.clone()))
    }
}

impl Drop for PendingAuth {
    fn drop(&mut self) {
        self.0.pending_auth.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A client slot of `[replication] max_clients` (given back on drop).
struct Slot(Shared);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.stream_clients.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Authenticate a credential (`Bearer <token or key>`) with read
/// permission: the close code and reason on failure.
fn principal(st: &Shared, header: &str) -> Result<Principal, (u16, String)> {
    let p = authenticate(&st.db, &st.tokens, Some(header)).map_err(|e| (close::UNAUTHORIZED, e.message))?;
    if !p.perms.has(Perms::READ) {
        return Err((close::FORBIDDEN, "subscribing needs the read permission".into()));
    }
    Ok(p)
}

async fn close_raw(mut socket: WebSocket, code: u16, reason: &str) {
    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason_text(reason).into() }))).await;
}

/// The credential from the header, or from the first message.
async fn credential(socket: &mut WebSocket, header: Option<String>) -> Result<String, (u16, String)> {
    if let Some(h) = header {
        return Ok(h);
    }
    let Ok(first) = tokio::time::timeout(AUTH_WAIT, socket.recv()).await else {
        return Err((close::AUTH_TIMEOUT, format!("no auth message within {} s", AUTH_WAIT.as_secs())));
    };
    match first {
        Some(Ok(Message::Text(t))) => match protocol::parse(&t) {
            Ok(ClientMsg::Auth { token }) => Ok(format!("Bearer {token}")),
            // The reason never echoes what the client sent.
            Ok(_) | Err(_) => {
                Err((close::UNAUTHORIZED, "the first message must be {\"type\":\"auth\",\"token\":\"…\"}".into()))
            }
        },
        Some(Err(e)) if is_too_big(&e) => Err((close::TOO_BIG, too_big_reason())),
        _ => Err((close::UNAUTHORIZED, "the first message must be {\"type\":\"auth\",\"token\":\"…\"}".into())),
    }
}

fn is_too_big(e: &axum::Error) -> bool {
    let s = e.to_string();
    s.contains("too long") || s.contains("too big") || s.contains("Space limit")
}

fn too_big_reason() -> String {
    format!("a message may be at most {MAX_CLIENT_MESSAGE} bytes")
}

/// A frame for the sending task, with the time of the newest commit it
/// carries (for the commit-to-delivery histogram).
struct Frame(Message, Option<Instant>);

async fn session(
    st: Shared,
    mut socket: WebSocket,
    header: Option<String>,
    pending: Option<PendingAuth>,
    compress: Option<i32>,
    peer: SocketAddr,
) {
    let cred = credential(&mut socket, header).await;
    drop(pending);
    let (cred, who) = match cred.and_then(|c| principal(&st, &c).map(|p| (c, p))) {
        Ok(x) => x,
        Err((code, reason)) => {
            st.metrics.auth_failures.inc();
            // A failed attempt uses the address's allowance for requests
            // without valid credentials (as a failed HTTP request would).
            let _ = st.ip_limiter.check(&peer.ip().to_string());
            return close_raw(socket, code, &reason).await;
        }
    };
    let max = st.config.db.replication.max_clients as usize;
    if st.stream_clients.fetch_add(1, Ordering::AcqRel) >= max {
        st.stream_clients.fetch_sub(1, Ordering::AcqRel);
        return close_raw(
            socket,
            close::TRY_LATER,
            &format!("the server has its maximum of {max} stream clients ([replication] max_clients)"),
        )
        .await;
    }
    let slot = Slot(st.clone());
    let mut feed = st.hub.tx.subscribe();
    let seq = st.db.read().seq();
    let stats = st.hub.register(who.name.clone(), peer.to_string(), seq);
    tracing::debug!(user = %who.name, client = stats.id, "stream client connected");
    let (sink, incoming) = socket.split();
    let (out, rx) = mpsc::channel::<Frame>(SEND_QUEUE);
    let writer = tokio::spawn(write_frames(st.clone(), sink, rx, stats.clone()));
    let mut conn = Conn {
        auth_tables: auth_tables(&st),
        st: st.clone(),
        cred,
        subs: BTreeMap::new(),
        seq,
        shared_budget: None,
        out,
        behind_since: None,
        compress,
        stats: stats.clone(),
        rechecked: Instant::now(),
        newest_at: None,
        user: who.name.clone(),
        reruns: 0,
    };
    // The reading half has its own task: the connection's loop then waits
    // on a channel, and a commit's wake-up does not also poll the socket.
    let (in_tx, in_rx) = mpsc::channel(4);
    let reader = tokio::spawn(read_frames(incoming, in_tx));
    let end = conn.run(in_rx, &mut feed).await;
    reader.abort();
    if let Some((code, reason)) = end {
        let reason = reason_text(&reason);
        let _ = conn.out.send(Frame(Message::Close(Some(CloseFrame { code, reason: reason.into() })), None)).await;
    }
    drop(conn);
    let _ = writer.await;
    st.hub.unregister(stats.id);
    drop(slot);
}

/// The reading task: frames from the socket, until it ends or fails.
async fn read_frames(
    mut incoming: futures_util::stream::SplitStream<WebSocket>,
    out: mpsc::Sender<Result<Message, axum::Error>>,
) {
    while let Some(m) = incoming.next().await {
        let last = m.is_err() || matches!(m, Ok(Message::Close(_)));
        if out.send(m).await.is_err() || last {
            return;
        }
    }
}

/// The sending task: frames to the socket, each within [`WRITE_STALL`].
async fn write_frames(
    st: Shared,
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Frame>,
    stats: Arc<ClientStats>,
) {
    while let Some(Frame(msg, at)) = rx.recv().await {
        let closing = matches!(msg, Message::Close(_));
        let len = match &msg {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
            _ => 0,
        };
        if len > 0 && !confirmed(&st, &rx).await {
            return;
        }
        match tokio::time::timeout(WRITE_STALL, sink.send(msg)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::info!(client = stats.id, "stream client stopped reading; disconnected");
                return;
            }
        }
        stats.bytes_sent.fetch_add(len as u64, Ordering::Relaxed);
        st.hub.bytes.fetch_add(len as u64, Ordering::Relaxed);
        if let Some(at) = at {
            st.metrics.stream_delivery.observe(at.elapsed().as_secs_f64());
        }
        if closing {
            let _ = sink.close().await;
            return;
        }
    }
}

/// With synchronous replication, a frame goes out only once the replicas
/// hold every commit it could reflect (the state up to the head now): a
/// commit is visible here before it is acknowledged, and a subscriber must
/// not see a write a failover could take back. Waits while they do not
/// (the client sees a pause, as readers see 503s); with
/// `sync_fallback = "async"`, at most the timeout. `false`: the connection
/// ended meanwhile.
async fn confirmed(st: &Shared, rx: &mpsc::Receiver<Frame>) -> bool {
    let r = &st.replication;
    let k = r.registry.sync_replicas;
    if k == 0 || r.role() != crate::replication::Role::Primary {
        return true;
    }
    let seq = st.db.version();
    if r.registry.wait_for(seq, k, Duration::ZERO).is_ok() {
        return true;
    }
    let fallback = r.config.sync_fallback == "async";
    // Waits in steps (to notice a closed connection or a stop).
    let timeout =
        Duration::from_millis(if fallback { r.config.sync_timeout_ms } else { r.config.sync_timeout_ms.min(1_000) });
    loop {
        let st2 = st.clone();
        let held = tokio::task::spawn_blocking(move || st2.replication.registry.wait_for(seq, k, timeout)).await.ok();
        match held {
            Some(Ok(())) => return true,
            _ if fallback => return true,
            // Fenced meanwhile: what it did not confirm may be lost for
            // good; the subscriber reconnects to the new primary.
            _ if rx.is_closed() || *st.stopping.borrow() || r.role() != crate::replication::Role::Primary => {
                return false;
            }
            _ => {}
        }
    }
}

/// Table ids of users, sessions and API keys.
fn auth_tables(st: &Shared) -> Vec<ecsdb::TableId> {
    let s = st.db.schema();
    ["_users", "_sessions", "_api_keys"].iter().filter_map(|t| s.table_id(t)).collect()
}

impl Drop for Conn {
    fn drop(&mut self) {
        // What its subscriptions held is given back.
        self.subs.clear();
        self.account();
    }
}

struct Conn {
    st: Shared,
    cred: String,
    subs: BTreeMap<String, Sub>,
    /// Sequence every subscription is at.
    seq: u64,
    shared_budget: Option<Bucket>,
    out: mpsc::Sender<Frame>,
    /// Set when the send queue was full (updates held back) since `seq`.
    behind_since: Option<u64>,
    compress: Option<i32>,
    stats: Arc<ClientStats>,
    auth_tables: Vec<ecsdb::TableId>,
    rechecked: Instant,
    /// When the newest commit applied was made (for delivery latency).
    newest_at: Option<Instant>,
    /// Who is connected (re-run subscriptions are counted per user).
    user: String,
    /// Re-run subscriptions counted for `user`.
    reruns: usize,
}

type Ending = Option<(u16, String)>;

impl Conn {
    async fn run(
        &mut self,
        mut incoming: mpsc::Receiver<Result<Message, axum::Error>>,
        feed: &mut broadcast::Receiver<Arc<CommitEvent>>,
    ) -> Ending {
        let mut stopping = self.st.stopping.subscribe();
        let mut retry = tokio::time::interval(RETRY_EVERY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recheck = tokio::time::interval(RECHECK_EVERY);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *stopping.borrow_and_update() {
                return Some((close::GOING_AWAY, "the server is stopping".into()));
            }
            if self.out.is_closed() {
                return None;
            }
            tokio::select! {
                _ = stopping.changed() => {}
                msg = incoming.recv() => {
                    let text = match msg {
                        Some(Ok(Message::Text(t))) => t.to_string(),
                        Some(Ok(Message::Binary(_))) => {
                            self.reply(&error(None, "binary frames are not accepted; send JSON text frames")).await;
                            continue;
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Err(e)) if is_too_big(&e) => return Some((close::TOO_BIG, too_big_reason())),
                        Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                    };
                    if let Err(end) = self.recheck(true) {
                        return Some(end);
                    }
                    self.handle(&text, feed).await;
                }
                ev = feed.recv() => {
                    if matches!(ev, Err(broadcast::error::RecvError::Closed)) {
                        return Some((close::GOING_AWAY, "the server is stopping".into()));
                    }
                    let auth_changed = self.catch_up(Some(ev), feed);
                    if let Err(end) = self.recheck(auth_changed) {
                        return Some(end);
                    }
                    let _ = self.flush(false);
                }
                _ = recheck.tick() => {
                    if let Err(end) = self.recheck(false) {
                        return Some(end);
                    }
                }
                _ = retry.tick(), if self.has_pending() => {
                    if let Err(end) = self.recheck(false) {
                        return Some(end);
                    }
                    let _ = self.flush(false);
                }
            }
        }
    }

    fn has_pending(&self) -> bool {
        self.subs.values().any(|s| s.pending() > 0)
    }

    /// Check the credential again if `now` or a second has passed.
    fn recheck(&mut self, now: bool) -> Result<(), (u16, String)> {
        if now || self.rechecked.elapsed() >= RECHECK_EVERY {
            self.rechecked = Instant::now();
            principal(&self.st, &self.cred)?;
        }
        Ok(())
    }

    fn limits(&self) -> Limits {
        let c = &self.st.config;
        Limits {
            query_timeout_ms: c.server.query_timeout_ms,
            max_result_bytes: c.server.max_result_bytes,
            max_rows: ecsdb::core::query::DEFAULT_LIMIT,
        }
    }

    /// Apply every commit up to the state's sequence (the first one given,
    /// the rest drained from the channel under the read lock). Returns
    /// whether users, sessions or keys changed.
    fn catch_up(
        &mut self,
        first: Option<Result<Arc<CommitEvent>, broadcast::error::RecvError>>,
        feed: &mut broadcast::Receiver<Arc<CommitEvent>>,
    ) -> bool {
        let mut r = self.st.db.read();
        let head = r.seq();
        let mut events: Vec<Arc<CommitEvent>> = Vec::new();
        let mut lagged = false;
        let mut take = |ev: Result<Arc<CommitEvent>, broadcast::error::RecvError>| match ev {
            Ok(ev) => events.push(ev),
            Err(broadcast::error::RecvError::Lagged(_)) => lagged = true,
            Err(broadcast::error::RecvError::Closed) => {}
        };
        if let Some(ev) = first {
            take(ev);
        }
        loop {
            match feed.try_recv() {
                Ok(ev) => take(Ok(ev)),
                Err(broadcast::error::TryRecvError::Lagged(n)) => take(Err(broadcast::error::RecvError::Lagged(n))),
                Err(_) => break,
            }
        }
        events.retain(|e| e.seq > self.seq && e.seq <= head);
        if head <= self.seq {
            return false;
        }
        let all = Touched { unknown: true, ..Touched::default() };
        let list: Vec<&Touched> = if lagged { vec![&all] } else { events.iter().map(|e| e.touched()).collect() };
        let touched = Touches(&list);
        // Revoking a key or ending a session deletes its entity (a delete
        // names no tables): any delete counts.
        let auth_changed = touched.everything()
            || touched.unknown()
            || touched.any_deleted()
            || self.auth_tables.iter().any(|&t| touched.wrote(t));
        let limits = self.limits();
        let mut failed = Vec::new();
        for (id, sub) in &mut self.subs {
            // A writer waiting for this read lock goes first (the rest of
            // the subscriptions then read a later state; the commits that
            // made it are applied at the next catch-up).
            r.yield_to_writers();
            if let Err(e) = sub.apply(&r, &touched, head, limits, &self.st.hub.fragments) {
                failed.push((id.clone(), e));
            }
        }
        drop(r);
        if let Some(id) = self.account() {
            failed.push((id, self.memory_full()));
        }
        let dropped = !failed.is_empty();
        for (id, e) in failed {
            self.subs.remove(&id);
            // The queue may be full; an error must still arrive: it waits
            // its turn on the next flush.
            let _ = self.out.try_send(Frame(self.encode(&error(Some(&id), e)), None));
        }
        if dropped {
            self.account();
        }
        self.stats.subscriptions.store(self.subs.len(), Ordering::Relaxed);
        self.seq = head;
        if let Some(e) = events.last() {
            self.newest_at = Some(e.at);
        }
        auth_changed
    }

    fn encode(&self, m: &J) -> Message {
        encode(self.compress, m)
    }

    /// Bring the server's stream memory up to date with this connection's;
    /// over `[replication] max_stream_memory_mb`, the id of this
    /// connection's largest subscription (to be dropped).
    fn account(&mut self) -> Option<String> {
        let reruns = self.subs.values().filter(|s| !s.incremental()).count();
        if reruns != self.reruns {
            let mut m = self.st.hub.reruns.lock();
            let n = m.entry(self.user.clone()).or_insert(0);
            *n = (*n + reruns).saturating_sub(self.reruns);
            if *n == 0 {
                m.remove(&self.user);
            }
            self.reruns = reruns;
        }
        let now: usize = self.subs.values().map(Sub::memory).sum();
        let before = self.stats.memory.swap(now, Ordering::Relaxed);
        let total = if now >= before {
            self.st.hub.memory.fetch_add(now - before, Ordering::Relaxed) + (now - before)
        } else {
            self.st.hub.memory.fetch_sub(before - now, Ordering::Relaxed) - (before - now)
        };
        let limit = usize::try_from(self.st.config.db.replication.max_stream_memory_mb << 20).unwrap_or(usize::MAX);
        if total <= limit {
            return None;
        }
        self.subs.iter().max_by_key(|(_, s)| s.memory()).map(|(id, _)| id.clone())
    }

    fn memory_full(&self) -> String {
        format!(
            "the server's memory for subscriptions is full ([replication] max_stream_memory_mb = {}); this subscription was dropped",
            self.st.config.db.replication.max_stream_memory_mb
        )
    }

    /// Queue a reply, waiting for room (the sending task gives up on a
    /// client that reads nothing, which ends this connection).
    async fn reply(&self, m: &J) {
        let _ = self.out.send(Frame(self.encode(m), None)).await;
    }

    /// Turn pending updates into deltas while the send queue has room;
    /// `all` ignores budgets (a resume).
    /// Returns whether it stopped because the send queue was full.
    fn flush(&mut self, all: bool) -> bool {
        let now = Instant::now();
        if let Some(b) = self.shared_budget.as_mut() {
            b.refill(now);
        }
        if !self.has_pending() {
            self.stats.pending.store(0, Ordering::Relaxed);
            return false;
        }
        let r = self.st.db.read();
        if let Some(from) = self.behind_since {
            let Ok(permit) = self.out.try_reserve() else { return true };
            let pending: usize = self.subs.values().map(Sub::pending).sum();
            permit.send(Frame(
                self.encode(&json!({"type": "behind", "from_seq": from, "seq": self.seq, "pending": pending})),
                None,
            ));
            self.behind_since = None;
        }
        let mut pending = 0;
        let mut full = false;
        for (id, sub) in &mut self.subs {
            if sub.pending() == 0 {
                continue;
            }
            if full {
                pending += sub.pending();
                continue;
            }
            let permit = match self.out.try_reserve() {
                Ok(p) => p,
                Err(mpsc::error::TrySendError::Full(())) => {
                    full = true;
                    pending += sub.pending();
                    continue;
                }
                Err(mpsc::error::TrySendError::Closed(())) => return false,
            };
            let budget = if all { None } else { self.shared_budget.as_mut() };
            let Some((m, left)) = sub.flush(&r, id, now, budget, all, &self.st.hub.fragments) else {
                pending += sub.pending();
                continue;
            };
            pending += left;
            permit.send(Frame(encode_text(self.compress, m), self.newest_at));
            self.stats.deltas_sent.fetch_add(1, Ordering::Relaxed);
            self.st.hub.deltas.fetch_add(1, Ordering::Relaxed);
            self.stats.sent_seq.store(sub.seq, Ordering::Relaxed);
        }
        let coalesced: u64 = self.subs.values_mut().map(Sub::take_coalesced).sum();
        self.st.hub.coalesced.fetch_add(coalesced, Ordering::Relaxed);
        if full && self.behind_since.is_none() {
            self.behind_since = Some(self.seq);
            self.st.hub.behind_notices.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.pending.store(pending, Ordering::Relaxed);
        if pending == 0 {
            self.stats.sent_seq.store(self.seq, Ordering::Relaxed);
        }
        full
    }

    /// A client message.
    async fn handle(&mut self, text: &str, feed: &mut broadcast::Receiver<Arc<CommitEvent>>) {
        let msg = match protocol::parse(text) {
            Ok(m) => m,
            Err(e) => return self.reply(&error(protocol::id_of(text).as_deref(), e)).await,
        };
        match msg {
            ClientMsg::Auth { .. } => self.reply(&error(None, "already authenticated")).await,
            ClientMsg::Ping { id } => {
                // Caught up first: after the pong, the client holds every
                // subscription's result at the pong's `seq` (unless a
                // budget holds rows back: then deltas carry `pending`).
                self.catch_up(None, feed);
                // Everything owed goes out before the pong (waiting for
                // the send queue as needed); only budgets hold rows back.
                while self.flush(false) {
                    match self.out.reserve().await {
                        Ok(permit) => drop(permit),
                        Err(_) => return,
                    }
                }
                self.reply(&json!({"type": "pong", "id": id, "seq": self.seq})).await;
            }
            ClientMsg::Ack { seq } => {
                self.stats.sent_seq.fetch_max(seq.min(self.seq), Ordering::Relaxed);
            }
            ClientMsg::Budget { bytes_per_second } if bytes_per_second.is_some_and(|b| b < MIN_BUDGET) => {
                self.reply(&error(None, format!("bytes_per_second must be at least {MIN_BUDGET}"))).await;
            }
            ClientMsg::Budget { bytes_per_second } => {
                self.shared_budget = bytes_per_second.map(|b| Bucket::new(b, Instant::now()));
                self.reply(&json!({"type": "budget", "bytes_per_second": bytes_per_second})).await;
            }
            ClientMsg::Unsubscribe { id } => {
                if self.subs.remove(&id).is_some() {
                    self.account();
                    self.stats.subscriptions.store(self.subs.len(), Ordering::Relaxed);
                    self.reply(&json!({"type": "unsubscribed", "id": id})).await;
                } else {
                    self.reply(&error(Some(&id), format!("no subscription `{id}`"))).await;
                }
            }
            ClientMsg::Subscribe { id, mut query, near, budget, hysteresis, from_seq, epoch } => {
                if let Some(b) = budget
                    && b.bytes_per_second < MIN_BUDGET
                {
                    return self
                        .reply(&error(Some(&id), format!("budget.bytes_per_second must be at least {MIN_BUDGET}")))
                        .await;
                }
                // A resume point means something only in this server's history.
                let from_seq = from_seq.filter(|_| epoch.as_deref() == Some(self.st.hub.epoch.as_str()));
                if self.subs.contains_key(&id) {
                    return self
                        .reply(&error(Some(&id), format!("subscription `{id}` exists; unsubscribe first")))
                        .await;
                }
                let max = self.st.config.db.replication.max_subscriptions as usize;
                if self.subs.len() >= max {
                    return self
                        .reply(&error(
                            Some(&id),
                            format!("a connection may hold {max} subscriptions ([replication] max_subscriptions)"),
                        ))
                        .await;
                }
                if let Some(n) = near {
                    match query.as_object_mut() {
                        Some(o) if o.contains_key("near") => {
                            return self
                                .reply(&error(Some(&id), "`near` is given twice (in the query and beside it)"))
                                .await;
                        }
                        Some(o) => {
                            o.insert("near".into(), n);
                        }
                        None => return self.reply(&error(Some(&id), "query must be a JSON object")).await,
                    }
                }
                let q: Query = match serde_json::from_value(query) {
                    Ok(q) => q,
                    Err(e) => return self.reply(&error(Some(&id), format!("invalid query: {e}"))).await,
                };
                let has_near = q.near.is_some();
                let opts = SubOptions {
                    hysteresis: hysteresis.unwrap_or(if has_near { DEFAULT_HYSTERESIS } else { 0.0 }),
                    bytes_per_second: budget.map(|b| b.bytes_per_second),
                };
                let reply = self.subscribe(feed, &id, q, opts, from_seq);
                let _ = self.out.send(Frame(encode_text(self.compress, reply), None)).await;
            }
        }
    }

    /// Add a subscription: its `initial` message, or — resuming from
    /// `from_seq` — a delta with what changed since.
    fn subscribe(
        &mut self,
        feed: &mut broadcast::Receiver<Arc<CommitEvent>>,
        id: &str,
        q: Query,
        opts: SubOptions,
        from_seq: Option<u64>,
    ) -> Vec<u8> {
        // Every subscription is at the same sequence: catch up first.
        self.catch_up(None, feed);
        let r = self.st.db.read();
        let mut sub = match Sub::new(&r, q, opts, self.limits()) {
            Ok(s) => s,
            Err(e) => return error(Some(id), e).to_string().into_bytes(),
        };
        // Queries that run again on every commit touching their tables cost
        // the connection's readers (and waiting writers) the most: few per
        // connection.
        let user_reruns = self.st.hub.reruns.lock().get(&self.user).copied().unwrap_or(0);
        if !sub.incremental() && user_reruns >= MAX_RERUN_PER_USER {
            return error(
                Some(id),
                format!(
                    "a user may hold {MAX_RERUN_PER_USER} subscriptions with order_by, limit, offset, nearest or related over all connections"
                ),
            )
            .to_string()
            .into_bytes();
        }
        if !sub.incremental() && self.subs.values().filter(|s| !s.incremental()).count() >= MAX_RERUN_SUBS {
            return error(
                Some(id),
                format!(
                    "a connection may hold {MAX_RERUN_SUBS} subscriptions with order_by, limit, offset, nearest or related; \
                     subscribe to their rows without those and order them in the client"
                ),
            )
            .to_string()
            .into_bytes();
        }
        let head = sub.seq;
        let resumed = from_seq.filter(|&n| n <= head).and_then(|n| {
            let since = self.st.hub.touched_between(n, head)?;
            sub.resume(&r, &since).then_some(n)
        });
        let reply = if let Some(n) = resumed {
            let mut m = sub.flush(&r, id, Instant::now(), None, true, &self.st.hub.fragments).map_or_else(
                || {
                    json!({"type": "delta", "id": id, "seq": head, "entered": [], "changed": [], "left": []})
                        .to_string()
                        .into_bytes()
                },
                |(m, _)| m,
            );
            // The object's closing brace, then the resume's two keys.
            m.pop();
            m.extend_from_slice(
                format!(r#","resumed":true,"from_seq":{n},"epoch":"{}"}}"#, self.st.hub.epoch).as_bytes(),
            );
            m
        } else {
            sub.initial(&r, id, &self.st.hub.epoch)
        };
        drop(r);
        self.subs.insert(id.to_string(), sub);
        if self.account().is_some() {
            self.subs.remove(id);
            self.account();
            return error(Some(id), self.memory_full()).to_string().into_bytes();
        }
        self.stats.subscriptions.store(self.subs.len(), Ordering::Relaxed);
        reply
    }
}

/// A message as a frame: JSON text, or zstd-compressed JSON in a binary
/// frame.
fn encode(compress: Option<i32>, m: &J) -> Message {
    encode_text(compress, m.to_string().into_bytes())
}

/// JSON text (UTF-8, built by the server) as a frame.
fn encode_text(compress: Option<i32>, text: Vec<u8>) -> Message {
    if let Some(level) = compress
        && let Ok(z) = zstd::bulk::compress(&text, level)
    {
        return Message::Binary(z.into());
    }
    match String::from_utf8(text) {
        Ok(t) => Message::Text(t.into()),
        // Not reachable: every part is serde_json output.
        Err(e) => Message::Binary(e.into_bytes().into()),
    }
}

fn error(id: Option<&str>, message: impl Into<String>) -> J {
    json!({"type": "error", "id": id, "message": message.into()})
}
