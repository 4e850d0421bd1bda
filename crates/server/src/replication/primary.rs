//! Replication routes (every node serves them; most answer only on the
//! primary) and the sender that feeds one replica.
//!
//! The sender runs on its own thread: commits arrive from the database's
//! commit feed; each is shipped once it is durable here (`sync_to`); when
//! the feed dropped commits (a slow replica) or the replica starts behind
//! the feed, they are read back from the log files (`LogCursor`). A replica
//! whose commits are no longer in the log is told to bootstrap again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ecsdb::feed::FeedEvent;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value as J, json};

use super::wire::{self, RecordsFrame};
use super::{Replication, Role, now_ms};
use crate::app::Shared;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::handlers::{OptionalBody, audit, blocking};

/// A frame is cut at about this many bytes.
const FRAME_BYTES: usize = 1 << 20;
/// Replication streams served at once (each has a sender thread and a
/// commit-feed queue).
const MAX_STREAMS: usize = 32;
/// Commits read from the log files per pass.
const DISK_BATCH: u64 = 20_000;

fn not_primary(r: &Replication) -> ApiError {
    let s = r.snapshot_state();
    let mut e = ApiError::new(
        StatusCode::CONFLICT,
        "not_primary",
        format!(
            "this node is {} (epoch {}); replicas follow the primary{}",
            match s.role {
                Role::Replica => "a replica",
                Role::Fenced => "a fenced former primary",
                Role::Primary => "the primary",
            },
            s.epoch,
            s.primary.as_deref().map(|p| format!(" {p}")).unwrap_or_default()
        ),
    );
    e.primary.clone_from(&s.primary);
    e
}

/// `GET /v1/replication/status` (public): role, epoch and position, so
/// nodes and operators can find the primary.
pub async fn status(State(st): State<Shared>) -> Json<J> {
    let r = &st.replication;
    let s = r.snapshot_state();
    Json(json!({
        "role": s.role.name(),
        "epoch": s.epoch,
        "fenced_by": s.fenced_by,
        "seq": st.db.version(),
        "database_id": r.database_id,
        "primary": s.primary,
        "advertise": r.advertise,
    }))
}

fn history_header(r: &Replication) -> String {
    serde_json::to_string(&r.snapshot_state().history).unwrap_or_default()
}

/// `GET /v1/replication/snapshot`: the state at one durable sequence, in
/// the snapshot file format (checksummed blocks), for a new replica.
pub async fn snapshot(State(st): State<Shared>, Extension(p): axum::Extension<Principal>) -> ApiResult<Response> {
    if st.replication.role() != Role::Primary {
        return Err(not_primary(&st.replication));
    }
    // One snapshot in memory at a time: concurrent bootstraps queue.
    let _one = st.replication.snapshots.acquire().await.map_err(|e| ApiError::internal(e.to_string()))?;
    let (bytes, seq) = blocking(&st, |st| {
        let image = st.db.capture_snapshot();
        st.db.sync_to(image.seq)?;
        let level = st.config.db.persistence.snapshot_compression_level;
        let bytes = ecsdb::storage::snapshot::encode(&image, level).map_err(|e| ApiError::internal(e.to_string()))?;
        Ok((bytes, image.seq))
    })
    .await?;
    audit(&p, "replication_snapshot", &json!({"seq": seq, "bytes": bytes.len()}));
    let r = &st.replication;
    let mut h = HeaderMap::new();
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    put("x-ecsdb-seq", seq.to_string());
    put("x-ecsdb-epoch", r.epoch().to_string());
    put("x-ecsdb-database-id", r.database_id.clone());
    put("x-ecsdb-history", history_header(r));
    put("x-ecsdb-peers", serde_json::to_string(&known_nodes(r)).unwrap_or_default());
    if let Some(s) = r.jwt_secret_file.lock().clone() {
        put("x-ecsdb-jwt-secret", s);
    }
    put("content-type", "application/octet-stream".into());
    Ok((h, bytes).into_response())
}

/// Every node this primary knows of, itself included (a new replica's peers).
fn known_nodes(r: &Replication) -> Vec<String> {
    let mut peers = r.snapshot_state().peers;
    peers.extend(r.registry.peers());
    peers.push(r.advertise.clone());
    peers.sort();
    peers.dedup();
    peers
}

/// The first commit the log files still hold, if any.
fn log_first(dir: &std::path::Path) -> Option<u64> {
    ["wal_archive", "wal"]
        .iter()
        .filter_map(|sub| ecsdb::storage::store::list_segments(&ecsdb::storage::fs::OsFs, &dir.join(sub)).ok())
        .flatten()
        .map(|(first, _)| first)
        .min()
}

/// `GET /v1/replication/bootstrap`: what a replica bootstrapping from the
/// backup target needs from the primary (everything the snapshot route's
/// headers carry, without the snapshot): the database id, epoch history,
/// nodes, token secret, the durable sequence, and the first commit the
/// primary's log still holds (a restored state must reach it).
pub async fn bootstrap_info(State(st): State<Shared>, Extension(p): Extension<Principal>) -> ApiResult<Json<J>> {
    if st.replication.role() != Role::Primary {
        return Err(not_primary(&st.replication));
    }
    let out = blocking(&st, |st| {
        let r = &st.replication;
        let seq = st.db.storage_stats().map_or_else(|| st.db.version(), |s| s.durable_seq);
        let log_from = st.db.data_dir().and_then(log_first).unwrap_or(seq + 1);
        Ok(json!({
            "database_id": r.database_id,
            "epoch": r.epoch(),
            "history": r.snapshot_state().history,
            "peers": known_nodes(r),
            "jwt_secret": r.jwt_secret_file.lock().clone(),
            "seq": seq,
            "log_from": log_from,
        }))
    })
    .await?;
    audit(&p, "replication_bootstrap_info", &json!({"seq": out["seq"], "log_from": out["log_from"]}));
    Ok(Json(out))
}

use axum::Extension;

/// Query of `GET /v1/replication/stream`.
#[derive(Debug)]
struct StreamParams {
    after: u64,
    epoch: u64,
    database_id: String,
    replica_id: String,
    advertise: Option<String>,
}

fn parse_params(q: &HashMap<String, String>) -> ApiResult<StreamParams> {
    const KNOWN: &[&str] = &["after", "epoch", "database_id", "replica_id", "advertise"];
    if let Some(k) = q.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("unknown parameter `{k}` ({})", KNOWN.join(", "))));
    }
    let num = |k: &str| -> ApiResult<u64> {
        q.get(k)
            .ok_or_else(|| ApiError::bad_request(format!("missing parameter `{k}`")))?
            .parse()
            .map_err(|_| ApiError::bad_request(format!("`{k}` must be a whole number")))
    };
    let text = |k: &str| -> ApiResult<String> {
        let v = q.get(k).ok_or_else(|| ApiError::bad_request(format!("missing parameter `{k}`")))?;
        if v.is_empty() || v.len() > 256 {
            return Err(ApiError::bad_request(format!("`{k}` must be 1 to 256 characters")));
        }
        Ok(v.clone())
    };
    let advertise = q.get("advertise").filter(|a| !a.is_empty()).cloned();
    if let Some(a) = &advertise
        && !ecsdb::config::is_base_url(a)
    {
        return Err(ApiError::bad_request(format!("`advertise` `{a}` is not a URL like http://host:port")));
    }
    Ok(StreamParams {
        after: num("after")?,
        epoch: num("epoch")?,
        database_id: text("database_id")?,
        replica_id: text("replica_id")?,
        advertise,
    })
}

fn bootstrap_required(msg: String) -> ApiError {
    ApiError::new(StatusCode::GONE, "bootstrap_required", msg)
}

/// `GET /v1/replication/stream` (WebSocket): the commits after `after`.
pub async fn stream(
    State(st): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(p): Extension<Principal>,
    Query(q): Query<HashMap<String, String, std::collections::hash_map::RandomState>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let ws = ws.map_err(|e| ApiError::bad_request(format!("{e} (this route is a WebSocket: see docs/API.md)")))?;
    let params = parse_params(&q)?;
    let r = st.replication.clone();
    if params.database_id != r.database_id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "database_mismatch",
            format!(
                "this primary serves database {} and the replica holds {}: a replica's data directory must come from this primary (start it on an empty directory)",
                r.database_id, params.database_id
            ),
        ));
    }
    if params.epoch > r.epoch() && r.role() == Role::Primary {
        // A replica has seen a newer epoch: another node was promoted — if
        // a node this primary knows confirms it (a claim alone fences nothing).
        let (r2, claimed) = (r.clone(), params.epoch);
        let found = tokio::task::spawn_blocking(move || {
            let s = r2.snapshot_state();
            super::replica::find_primary(&s.peers, &r2.advertise, claimed)
        })
        .await
        .ok()
        .flatten();
        match found {
            Some((url, epoch)) => {
                let _ = r.fence(epoch, Some(&url));
                tracing::warn!(replica = %params.replica_id, epoch, primary = %url, "a newer primary exists: fenced");
            }
            None => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "epoch_unverified",
                    format!(
                        "the replica reports epoch {}, newer than this primary's {}, but no node this primary knows is the primary of that epoch",
                        params.epoch,
                        r.epoch()
                    ),
                ));
            }
        }
    }
    if r.role() != Role::Primary {
        return Err(not_primary(&r));
    }
    let node = r.snapshot_state();
    let durable = st.db.storage_stats().map_or_else(|| st.db.version(), |s| s.durable_seq);
    if params.epoch < node.epoch
        && let Some(end) = node.end_of_epoch(params.epoch)
        && params.after > end
    {
        return Err(bootstrap_required(format!(
            "the replica holds commits up to {} of epoch {}, but that epoch ended at commit {end} in this primary's history: its later commits were never acknowledged here, so it must bootstrap again",
            params.after, params.epoch
        )));
    }
    if params.after > durable.max(st.db.version()) {
        return Err(bootstrap_required(format!(
            "the replica is at commit {}, past this primary's last commit {}: its data is not this primary's history, so it must bootstrap again",
            params.after,
            st.db.version()
        )));
    }
    if r.registry.connected() >= MAX_STREAMS {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_replicas",
            format!("this primary already streams to {MAX_STREAMS} replicas"),
        ));
    }
    audit(
        &p,
        "replication_stream",
        &json!({"replica": params.replica_id, "after": params.after, "address": peer.to_string()}),
    );
    let peers = cluster_peers(&r);
    let hello = json!({
        "type": "hello",
        "epoch": node.epoch,
        "history": node.history,
        "primary_seq": st.db.version(),
        "peers": peers,
    })
    .to_string();
    Ok(ws.max_message_size(1 << 20).on_upgrade(move |socket| serve_replica(st, socket, params, peer, hello)))
}

async fn serve_replica(st: Shared, socket: WebSocket, params: StreamParams, peer: SocketAddr, hello: String) {
    let r = st.replication.clone();
    let (mut tx, mut rx) = socket.split();
    if tx.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    if let Some(a) = &params.advertise {
        let _ = r.update(|s| {
            s.add_peer(a);
        });
    }
    let conn =
        r.registry.connect(&params.replica_id, &peer.to_string(), params.advertise.clone(), params.after, params.epoch);
    tracing::info!(replica = %params.replica_id, after = params.after, address = %peer, "replica connected");
    let stop = Arc::new(AtomicBool::new(false));
    let (ftx, mut frx) = tokio::sync::mpsc::channel::<Message>(16);
    let sender = {
        let st = st.clone();
        let stop = stop.clone();
        let after = params.after;
        std::thread::Builder::new()
            .name("ecsdb-repl-send".into())
            .spawn(move || run_sender(&st, conn, after, &ftx, &stop))
    };
    if sender.is_err() {
        r.registry.disconnect(conn);
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(m) = frx.recv().await {
            let close = matches!(m, Message::Close(_));
            if tx.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = tx.close().await;
    });
    let mut stopping = st.stopping.subscribe();
    loop {
        tokio::select! {
            m = rx.next() => match m {
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<J>(&t) {
                    Ok(v) if v["type"] == "ack" => match v["seq"].as_u64() {
                        Some(seq) => r.registry.ack(conn, seq),
                        None => break,
                    },
                    _ => {
                        tracing::warn!(replica = %params.replica_id, "unreadable message from a replica; closing its stream");
                        break;
                    }
                },
                Some(Ok(Message::Pong(_) | Message::Ping(_))) => r.registry.touch(conn),
                Some(Ok(Message::Binary(_) | Message::Close(_)) | Err(_)) | None => break,
            },
            _ = stopping.changed() => break,
        }
    }
    stop.store(true, Ordering::Release);
    r.registry.disconnect(conn);
    writer.abort();
    tracing::info!(replica = %params.replica_id, "replica disconnected");
}

/// Every node this primary knows (itself included), for replicas to find
/// a new primary after a failover.
fn cluster_peers(r: &Replication) -> Vec<String> {
    let mut peers = r.snapshot_state().peers;
    peers.extend(r.registry.peers());
    peers.push(r.advertise.clone());
    peers.sort();
    peers.dedup();
    peers
}

fn send(tx: &tokio::sync::mpsc::Sender<Message>, m: Message) -> bool {
    tx.blocking_send(m).is_ok()
}

fn error_message(code: &str, message: &str) -> Message {
    Message::Text(json!({"type": "error", "code": code, "message": message}).to_string().into())
}

/// Ship `records` in frames of about [`FRAME_BYTES`].
fn ship<'a>(
    st: &Shared,
    conn: u64,
    epoch: u64,
    tx: &tokio::sync::mpsc::Sender<Message>,
    records: impl Iterator<Item = (u64, &'a [u8])>,
) -> bool {
    let mut f = RecordsFrame::new(epoch);
    for (seq, payload) in records {
        f.push(seq, payload);
        if f.bytes() >= FRAME_BYTES {
            // Noted first: its acknowledgement may arrive before `send` returns.
            st.replication.registry.sent(conn, f.last);
            if !send(tx, Message::Binary(std::mem::replace(&mut f, RecordsFrame::new(epoch)).finish().into())) {
                return false;
            }
        }
    }
    if !f.is_empty() {
        st.replication.registry.sent(conn, f.last);
        if !send(tx, Message::Binary(f.finish().into())) {
            return false;
        }
    }
    true
}

fn run_sender(st: &Shared, conn: u64, after: u64, tx: &tokio::sync::mpsc::Sender<Message>, stop: &AtomicBool) {
    let db = &st.db;
    let r = &st.replication;
    let feed = db.subscribe_commits_with(8192);
    let generation = r.generation.load(Ordering::Acquire);
    let epoch = r.epoch();
    let heartbeat = Duration::from_millis((r.config.peer_timeout_ms / 5).max(20));
    let mut last = after;
    let mut need_disk = true;
    let mut told_peers = cluster_peers(r);
    let mut peers_checked = std::time::Instant::now();
    let closed = |reason: &str| {
        let _ = tx.blocking_send(error_message("closed", reason));
        let _ = tx.blocking_send(Message::Close(None));
    };
    loop {
        if stop.load(Ordering::Acquire) || r.stop.load(Ordering::Acquire) {
            return;
        }
        if r.generation.load(Ordering::Acquire) != generation {
            closed("this node is no longer the primary");
            return;
        }
        if need_disk {
            need_disk = false;
            let target = db.version();
            if target > last {
                if let Err(e) = db.sync_to(target) {
                    closed(&format!("the primary cannot make its log durable: {e}"));
                    return;
                }
                let mut cur = ecsdb_backup::logread::LogCursor::new(&r.data_dir, last);
                while last < target {
                    let upto = target.min(last + DISK_BATCH);
                    match cur.read_to(upto) {
                        Ok(pieces) => {
                            let recs = pieces.iter().flat_map(|p| p.records.iter().map(|(s, b)| (*s, b.as_slice())));
                            if !ship(st, conn, epoch, tx, recs) {
                                return;
                            }
                            last = cur.last;
                        }
                        Err(e) => {
                            // Gone (released, deleted by a checkpoint) or
                            // unreadable: a fresh bootstrap is always safe.
                            tracing::warn!(error = %e, replica_after = last, "a replica needs commits the log no longer holds; it will bootstrap again");
                            let m = format!("this primary's log no longer holds commit {}: bootstrap again", last + 1);
                            let _ = tx.blocking_send(error_message("bootstrap_required", &m));
                            let _ = tx.blocking_send(Message::Close(None));
                            return;
                        }
                    }
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                }
            }
        }
        if peers_checked.elapsed() >= heartbeat {
            // Replicas learn of each other (to find a new primary after a
            // failover) even while commits never let the stream idle.
            peers_checked = std::time::Instant::now();
            let peers = cluster_peers(r);
            if peers != told_peers {
                let m = json!({"type": "peers", "peers": peers}).to_string();
                if !send(tx, Message::Text(m.into())) {
                    return;
                }
                told_peers = peers;
            }
        }
        match feed.recv_timeout(heartbeat) {
            Ok(FeedEvent::Commit { seq, changes }) => {
                if seq <= last {
                    continue;
                }
                if seq != last + 1 {
                    need_disk = true;
                    continue;
                }
                let mut batch = vec![(seq, changes)];
                let mut bytes = batch[0].1.byte_len();
                while bytes < FRAME_BYTES {
                    match feed.try_recv() {
                        Some(FeedEvent::Commit { seq, changes }) if seq == batch[batch.len() - 1].0 + 1 => {
                            bytes += changes.byte_len();
                            batch.push((seq, changes));
                        }
                        Some(FeedEvent::Commit { seq, .. }) if seq <= batch[batch.len() - 1].0 => {}
                        Some(_) => {
                            need_disk = true;
                            break;
                        }
                        None => break,
                    }
                }
                let upto = batch[batch.len() - 1].0;
                if let Err(e) = db.sync_to(upto) {
                    closed(&format!("the primary cannot make its log durable: {e}"));
                    return;
                }
                if !ship(st, conn, epoch, tx, batch.iter().map(|(s, c)| (*s, c.as_bytes()))) {
                    return;
                }
                last = upto;
            }
            Ok(FeedEvent::Lagged { .. }) => need_disk = true,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let durable = db.storage_stats().map_or_else(|| db.version(), |s| s.durable_seq);
                if !send(tx, Message::Binary(wire::heartbeat(epoch, durable, now_ms()).into())) {
                    return;
                }

                // Commits made durable but not published in the feed
                // (none expected) are found by the next disk pass.
                if durable > last {
                    need_disk = true;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// `POST /v1/replication/fence` `{"epoch", "primary"}`: a promoted node
/// tells its former primary to stop accepting writes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceBody {
    epoch: u64,
    primary: String,
}

pub async fn fence(
    State(st): State<Shared>,
    Extension(p): Extension<Principal>,
    crate::handlers::Body(b): crate::handlers::Body<FenceBody>,
) -> ApiResult<Json<J>> {
    if !ecsdb::config::is_base_url(&b.primary) {
        return Err(ApiError::bad_request(format!("`primary` `{}` is not a URL like http://host:port", b.primary)));
    }
    let r = st.replication.clone();
    let (epoch, primary) = (b.epoch, b.primary.trim_end_matches('/').to_string());
    let fenced = blocking(&st, move |_| {
        if epoch <= r.epoch() || r.role() == Role::Fenced {
            return Ok(false);
        }
        // Only a primary that answers for itself can fence this one (or
        // lead this replica).
        let s = super::replica::peer_status(&primary).map_err(|e| {
            ApiError::new(
                StatusCode::CONFLICT,
                "fence_unverified",
                format!("cannot confirm {primary} is a primary: {e}"),
            )
        })?;
        if s["database_id"].as_str() != Some(r.database_id.as_str()) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "fence_unverified",
                format!("{primary} serves database {}, not this one ({})", s["database_id"], r.database_id),
            ));
        }
        if s["role"] != "primary" || s["epoch"].as_u64().is_none_or(|e| e < epoch) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "fence_unverified",
                format!(
                    "{primary} is not the primary of epoch {epoch} (it reports {} at epoch {})",
                    s["role"], s["epoch"]
                ),
            ));
        }
        if r.role() == Role::Replica {
            // A replica told of the new primary follows it (it may not have
            // known that node: its own primary is gone).
            let known = r.snapshot_state().primary.as_deref() == Some(primary.as_str());
            if !known {
                r.update(|s| {
                    s.add_peer(&primary);
                    s.primary = Some(primary.clone());
                })
                .map_err(ApiError::internal)?;
                tracing::warn!(epoch, primary = %primary, "told of a newer primary: following it");
            }
            return Ok(false);
        }
        r.fence(epoch, Some(&primary)).map_err(ApiError::internal)
    })
    .await?;
    audit(&p, "replication_fence", &json!({"epoch": b.epoch, "fenced": fenced}));
    let s = st.replication.snapshot_state();
    Ok(Json(json!({"fenced": fenced, "role": s.role.name(), "epoch": s.epoch})))
}

/// `GET /v1/admin/replication`: this node's role and, on a primary, every
/// replica's figures; on a replica, what it knows of its primary.
pub async fn admin_status(State(st): State<Shared>) -> Json<J> {
    Json(report(&st))
}

pub fn report(st: &Shared) -> J {
    let r = &st.replication;
    let s = r.snapshot_state();
    let last = st.db.version();
    let f = r.follower.lock().clone();
    let replicas = r.registry.report(last);
    let mut out = json!({
        "role": s.role.name(),
        "epoch": s.epoch,
        "history": s.history,
        "seq": last,
        "advertise": r.advertise,
        "primary": s.primary,
        "peers": s.peers,
        "sync_replicas": r.config.sync_replicas,
        "sync_timeouts": r.registry.sync_timeouts.load(Ordering::Relaxed),
        "replicas": replicas,
    });
    if s.role == Role::Replica {
        let now = now_ms();
        out["follower"] = json!({
            "connected": f.connected,
            "applied_seq": f.applied_seq,
            "primary_seq": f.primary_seq,
            "lag_ops": f.primary_seq.saturating_sub(f.applied_seq),
            "lag_ms": f.lag_ms(now),
            "last_contact_unix_ms": f.last_contact_unix_ms,
            "last_error": f.last_error,
            "reconnects": f.reconnects,
        });
    }
    out
}

/// `POST /v1/admin/promote`: make this replica the primary of a new epoch.
pub async fn promote(
    State(st): State<Shared>,
    Extension(p): Extension<Principal>,
    OptionalBody(b): OptionalBody<PromoteBody>,
) -> ApiResult<Json<J>> {
    let force = b.is_some_and(|b| b.force);
    let out = blocking(&st, move |st| {
        promote_now(st, force).map_err(|e| ApiError::new(StatusCode::CONFLICT, "cannot_promote", e))
    })
    .await?;
    audit(&p, "promote", &out);
    Ok(Json(out))
}

#[derive(Debug, serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PromoteBody {
    /// Promote even if another replica holds more commits (they are lost).
    #[serde(default)]
    force: bool,
}

fn promote_now(st: &Shared, force: bool) -> Result<J, String> {
    let r = &st.replication;
    let before = r.snapshot_state();
    if before.role == Role::Primary {
        return Err(format!("this node is already the primary (epoch {})", before.epoch));
    }
    if before.role == Role::Fenced {
        return Err(format!(
            "this node is a fenced former primary; its log may hold commits the current primary {} never had. Start it as a replica of the current primary (it bootstraps again if it must), then promote it",
            before.primary.as_deref().unwrap_or("(unknown)")
        ));
    }
    let db = &st.db;
    let old_primary = before.primary.clone();
    if !force {
        // Promoting a replica that lacks commits another replica holds
        // would lose them (acknowledged ones, with synchronous replication).
        let mine = db.version();
        for peer in before.peers.iter().filter(|p| Some(p.as_str()) != old_primary.as_deref() && **p != r.advertise) {
            match super::replica::peer_status(peer) {
                Ok(s)
                    if s["role"] == "replica"
                        && s["epoch"].as_u64() == Some(before.epoch)
                        && s["seq"].as_u64().is_some_and(|n| n > mine) =>
                {
                    return Err(format!(
                        "the replica {peer} holds commit {} and this one only {mine}: promote {peer} instead (or pass {{\"force\": true}} to lose the commits after {mine})",
                        s["seq"]
                    ));
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "cannot compare positions with {peer} ({e}): it may hold commits this replica lacks. Bring it back, or pass {{\"force\": true}} if it is gone for good"
                    ));
                }
            }
        }
    }
    // The follower finishes the frame it is applying (and stops, seeing
    // the new role); everything applied is durable before the epoch changes.
    let seq = {
        let _quiet = r.follower_apply.lock();
        let seq = db.version();
        db.sync_to(seq).map_err(|e| e.to_string())?;
        let epoch = before.epoch + 1;
        r.update(|s| {
            s.role = Role::Primary;
            s.fenced_by = None;
            s.enter_epoch(epoch, seq);
            s.primary = None;
            if let Some(p) = &old_primary {
                s.add_peer(p);
            }
        })?;
        seq
    };
    let s = r.snapshot_state();
    tracing::warn!(epoch = s.epoch, after_seq = seq, "promoted: this node is the primary");
    // Tell the old primary and the other nodes (best effort: an old
    // primary that is down learns it from them when it starts).
    let mut told = Vec::new();
    for peer in s.peers.iter().filter(|p| **p != r.advertise) {
        if super::replica::send_fence(peer, r.replica_key.as_deref(), s.epoch, &r.advertise).is_ok() {
            told.push(peer.clone());
        }
    }
    Ok(json!({"role": "primary", "epoch": s.epoch, "after_seq": seq, "fenced": told}))
}
