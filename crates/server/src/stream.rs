//! `GET /v1/stream`: live query subscriptions over a WebSocket.
//!
//! A client authenticates (an `Authorization: Bearer` header on the
//! upgrade, or — for browsers — a first message `{"type":"auth","token"}`),
//! then sends `{"type":"subscribe","id","query"}` with the JSON of
//! `/v1/query`. It receives `{"type":"initial","id","seq","rows"}`, then for
//! every commit that changes the result `{"type":"delta","id","seq",
//! "entered":[rows],"changed":[{"id", "<table>": {"<field>": value}}],
//! "left":[ids]}`; `{"type":"unsubscribe","id"}` ends one.
//!
//! Why deltas are computed as they are: commits arrive from the database's
//! commit feed (`ecsdb::feed`) through one bridge thread into a broadcast
//! channel every connection reads, in sequence order. A subscription is
//! re-evaluated only when a commit touches one of its tables (or creates or
//! deletes entities, or links them when it follows relations), and its new
//! rows are diffed against the rows it last sent, so a client receives only
//! what changed, and only the fields that changed. A connection that falls
//! behind the feed is sent every subscription afresh (`"resync": true`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use ecsdb::core::changeset::Op;
use ecsdb::feed::FeedEvent;
use ecsdb::{ChangeSet, Query, TableId};
use rustc_hash::FxHashSet;
use serde_json::{Value as J, json};
use tokio::sync::broadcast;

use crate::app::Shared;
use crate::auth::{Principal, authenticate};
use crate::error::ApiError;
use crate::system::Perms;

/// Commits the broadcast channel holds before a slow connection lags.
const BROADCAST_CAPACITY: usize = 1024;
/// How long a browser may take to send its first (auth) message.
const AUTH_WAIT: Duration = Duration::from_secs(10);
/// Largest message a client may send.
const MAX_CLIENT_MESSAGE: usize = 1 << 20;

/// The feed bridge: commits from the database into a broadcast channel.
pub fn start_bridge(db: &ecsdb::Database) -> broadcast::Sender<FeedEvent> {
    let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
    let feed = db.subscribe_commits();
    let out = tx.clone();
    let _ = std::thread::Builder::new().name("ecsdb-stream-feed".into()).spawn(move || {
        loop {
            match feed.recv_timeout(Duration::from_secs(1)) {
                Ok(e) => {
                    let _ = out.send(e);
                }
                Err(ecsdb::feed::RecvTimeoutError::Timeout) => {}
                Err(ecsdb::feed::RecvTimeoutError::Disconnected) => return,
            }
        }
    });
    tx
}

/// The upgrade handler.
pub async fn stream(State(st): State<Shared>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    let max = st.config.db.replication.max_clients as usize;
    if st.stream_clients.fetch_add(1, Ordering::AcqRel) >= max {
        st.stream_clients.fetch_sub(1, Ordering::AcqRel);
        return ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too_many_clients",
            format!("the server has its maximum of {max} stream clients ([replication] max_clients)"),
        )
        .into_response();
    }
    let header = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    ws.max_message_size(MAX_CLIENT_MESSAGE).on_upgrade(move |socket| async move {
        session(st.clone(), socket, header).await;
        st.stream_clients.fetch_sub(1, Ordering::AcqRel);
    })
}

async fn close(mut socket: WebSocket, code: u16, reason: &str) {
    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
}

/// Authenticate a credential (`Bearer <token or key>`) with read permission.
fn principal(st: &Shared, header: &str) -> Result<Principal, String> {
    let p = authenticate(&st.db, &st.tokens, Some(header)).map_err(|e| e.message)?;
    if !p.perms.has(Perms::READ) {
        return Err("reading needs the read permission".into());
    }
    Ok(p)
}

struct Sub {
    query: Query,
    tables: FxHashSet<TableId>,
    follows_relations: bool,
    rows: BTreeMap<u64, J>,
}

async fn session(st: Shared, mut socket: WebSocket, header: Option<String>) {
    let cred: Result<String, String> = match header {
        Some(h) => Ok(h),
        None => match tokio::time::timeout(AUTH_WAIT, socket.recv()).await {
            Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<J>(&t) {
                Ok(m) if m["type"] == "auth" => match m["token"].as_str() {
                    Some(tok) => Ok(format!("Bearer {tok}")),
                    None => Err("the auth message needs a token".into()),
                },
                _ => Err("the first message must be {\"type\":\"auth\",\"token\":\"…\"}".into()),
            },
            _ => Err("no auth message".into()),
        },
    };
    let (cred, who) = match cred.and_then(|c| principal(&st, &c).map(|p| (c, p))) {
        Ok(x) => x,
        Err(reason) => return close(socket, 4401, &reason).await,
    };
    tracing::debug!(user = %who.name, "stream client connected");
    let mut feed = st.feed.subscribe();
    let mut stopping = st.stopping.subscribe();
    let mut subs: BTreeMap<String, Sub> = BTreeMap::new();
    loop {
        if *stopping.borrow_and_update() {
            return close(socket, 1001, "the server is stopping").await;
        }
        tokio::select! {
            _ = stopping.changed() => {}
            msg = socket.recv() => {
                // Credentials are checked again for everything the client
                // is sent: logout, revocation, a password change or expiry
                // end an open stream too.
                if let Err(reason) = principal(&st, &cred) {
                    return close(socket, 4401, &reason).await;
                }
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                    Some(Ok(_)) => continue,
                };
                let reply = handle(&st, &mut subs, &text);
                for r in reply {
                    if socket.send(Message::Text(r.to_string().into())).await.is_err() {
                        return;
                    }
                }
            }
            ev = feed.recv() => {
                if let Err(reason) = principal(&st, &cred) {
                    return close(socket, 4401, &reason).await;
                }
                let out = match ev {
                    Ok(FeedEvent::Commit { seq, changes }) => deltas(&st, &mut subs, seq, &changes),
                    Ok(FeedEvent::Lagged { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => resync(&st, &mut subs),
                    Err(broadcast::error::RecvError::Closed) => return close(socket, 1001, "the server is stopping").await,
                };
                for r in out {
                    if socket.send(Message::Text(r.to_string().into())).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn error(id: Option<&str>, message: impl Into<String>) -> J {
    json!({"type": "error", "id": id, "message": message.into()})
}

/// A client message → the replies.
fn handle(st: &Shared, subs: &mut BTreeMap<String, Sub>, text: &str) -> Vec<J> {
    let m: J = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => return vec![error(None, format!("invalid JSON: {e}"))],
    };
    let id = m["id"].as_str().map(str::to_string);
    match m["type"].as_str() {
        Some("subscribe") => {
            let Some(id) = id else { return vec![error(None, "subscribe needs a string id")] };
            if subs.contains_key(&id) {
                return vec![error(Some(&id), format!("subscription `{id}` exists; unsubscribe first"))];
            }
            let query: Query = match serde_json::from_value(m["query"].clone()) {
                Ok(q) => q,
                Err(e) => return vec![error(Some(&id), format!("invalid query: {e}"))],
            };
            match evaluate(st, query) {
                Ok((sub, seq)) => {
                    let rows: Vec<&J> = sub.rows.values().collect();
                    let reply = json!({"type": "initial", "id": id, "seq": seq, "rows": rows});
                    subs.insert(id, sub);
                    vec![reply]
                }
                Err(e) => vec![error(Some(&id), e)],
            }
        }
        Some("unsubscribe") => match id {
            Some(id) if subs.remove(&id).is_some() => vec![json!({"type": "unsubscribed", "id": id})],
            Some(id) => vec![error(Some(&id), format!("no subscription `{id}`"))],
            None => vec![error(None, "unsubscribe needs an id")],
        },
        Some("ping") => vec![json!({"type": "pong"})],
        _ => vec![error(id.as_deref(), "unknown message type (subscribe, unsubscribe, ping)")],
    }
}

/// Run a subscription's query: its rows by entity id, and the sequence
/// they are at.
fn evaluate(st: &Shared, query: Query) -> Result<(Sub, u64), String> {
    if query.explain || !query.group_by.is_empty() || !query.aggregates.is_empty() {
        return Err("subscriptions follow rows: explain, group_by and aggregates are not supported".into());
    }
    let r = st.db.read();
    let q = crate::guard::user_query(&r, query.clone()).map_err(|e| e.message)?;
    let budget = ecsdb::QueryBudget {
        deadline: Some(std::time::Instant::now() + Duration::from_millis(st.config.server.query_timeout_ms)),
        max_result_bytes: st.config.server.max_result_bytes,
    };
    let rows = r.query_within(&q, &budget).map_err(|e| e.to_string())?;
    let json = r.rows_json(&rows);
    let mut tables: FxHashSet<TableId> = FxHashSet::default();
    for name in q.with.iter().chain(&q.without) {
        if let Ok(t) = r.table_id(name) {
            tables.insert(t);
        }
    }
    let paths = q
        .filters
        .iter()
        .map(|f| f.field.as_str())
        .chain(q.select.iter().flatten().map(String::as_str))
        .chain(q.order_by.iter().map(|o| o.field.as_str()))
        .chain(q.near.iter().map(|n| n.field.as_str()))
        .chain(q.nearest.iter().map(|n| n.field.as_str()))
        .chain(q.in_box.iter().map(|b| b.field.as_str()));
    for p in paths {
        if let Ok(t) = r.table_id(p.split('.').next().unwrap_or(p)) {
            tables.insert(t);
        }
    }
    let by_id = json
        .as_array()
        .map(|a| a.iter().filter_map(|row| Some((row["id"].as_u64()?, row.clone()))).collect())
        .unwrap_or_default();
    let follows_relations = q.related.is_some();
    Ok((Sub { query, tables, follows_relations, rows: by_id }, r.seq()))
}

/// Whether commit `cs` can change a subscription's rows.
fn touches(cs: &ChangeSet, sub: &Sub) -> bool {
    cs.iter().any(|op| match op {
        Ok(
            Op::AddComponent { table, .. }
            | Op::RemoveComponent { table, .. }
            | Op::SetField { table, .. }
            | Op::SetMany { table, .. }
            | Op::SetRun { table, .. },
        ) => sub.tables.contains(&table),
        Ok(op @ Op::SpawnMany { .. }) => op.spawn_tables().iter().any(|t| sub.tables.contains(t)),
        Ok(Op::Link { .. } | Op::Unlink { .. }) => sub.follows_relations,
        // Deletes take components the op does not name; a migration may
        // change everything; an undecodable op is not guessed at.
        Ok(Op::DeleteEntity(_) | Op::Migrate { .. }) | Err(_) => true,
        Ok(Op::CreateEntity(_)) => false,
    })
}

/// The deltas of commit `seq` for every subscription it touches.
fn deltas(st: &Shared, subs: &mut BTreeMap<String, Sub>, seq: u64, cs: &ChangeSet) -> Vec<J> {
    let mut out = Vec::new();
    for (id, sub) in subs.iter_mut() {
        if !touches(cs, sub) {
            continue;
        }
        let (fresh, _) = match evaluate(st, sub.query.clone()) {
            Ok(x) => x,
            Err(e) => {
                out.push(error(Some(id), e));
                continue;
            }
        };
        let mut entered = Vec::new();
        let mut changed = Vec::new();
        let mut left = Vec::new();
        for (eid, row) in &fresh.rows {
            match sub.rows.get(eid) {
                None => entered.push(row.clone()),
                Some(old) if old != row => changed.push(changed_fields(old, row)),
                Some(_) => {}
            }
        }
        for eid in sub.rows.keys() {
            if !fresh.rows.contains_key(eid) {
                left.push(json!(eid));
            }
        }
        sub.rows = fresh.rows;
        sub.tables = fresh.tables;
        if !(entered.is_empty() && changed.is_empty() && left.is_empty()) {
            out.push(
                json!({"type": "delta", "id": id, "seq": seq, "entered": entered, "changed": changed, "left": left}),
            );
        }
    }
    out
}

/// `{"id", "<table>": {"<field>": new value}}` with only what differs.
fn changed_fields(old: &J, new: &J) -> J {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), new["id"].clone());
    if let Some(tables) = new.as_object() {
        for (t, fields) in tables {
            let Some(fields) = fields.as_object() else { continue };
            let diff: serde_json::Map<String, J> =
                fields.iter().filter(|(f, v)| old[t][f.as_str()] != **v).map(|(f, v)| (f.clone(), v.clone())).collect();
            if !diff.is_empty() {
                m.insert(t.clone(), J::Object(diff));
            }
        }
    }
    J::Object(m)
}

/// Every subscription afresh, after the connection fell behind the feed.
fn resync(st: &Shared, subs: &mut BTreeMap<String, Sub>) -> Vec<J> {
    let mut out = Vec::new();
    for (id, sub) in subs.iter_mut() {
        match evaluate(st, sub.query.clone()) {
            Ok((fresh, seq)) => {
                *sub = fresh;
                let rows: Vec<&J> = sub.rows.values().collect();
                out.push(json!({"type": "initial", "id": id, "seq": seq, "rows": rows, "resync": true}));
            }
            Err(e) => out.push(error(Some(id), e)),
        }
    }
    out
}
