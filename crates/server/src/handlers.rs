//! Route handlers. Database work runs on the blocking pool (a sync commit
//! waits for an fsync). Every data operation, query and stat goes through
//! `guard`, which keeps the system tables (`_users`, ...) and the entities
//! holding them out of the data API.

use std::time::Instant;

use axum::Json;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, extract::rejection::JsonRejection};
use ecsdb::{EntityId, Query};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value as J, json};

use crate::app::{Access, ROUTES, Shared};
use crate::auth::{self, API_KEY_PREFIX, Principal};
use crate::error::{ApiError, ApiResult};
use crate::guard::{self, DataOp, DataWriter};
use crate::system::{self, Perms, Role};

/// Bodies carrying passwords print without them.
macro_rules! redacted_debug {
    ($($t:ident),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($t), " { <redacted> }"))
            }
        }
    )*};
}
redacted_debug!(LoginBody, NewUser, NewPassword);

/// A JSON body whose every rejection is a JSON error (413 over the limit).
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Shared> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &Shared) -> Result<Self, ApiError> {
        // The body must arrive within the request timeout; database work
        // has deadlines of its own and is never cut off half-way.
        let limit = std::time::Duration::from_millis(state.config.server.request_timeout_ms);
        if !is_json(req.headers()) {
            // Read the body before refusing it: a connection whose request
            // body is left unread is closed after the answer, and a client
            // that pooled it fails its next request.
            let max = state.config.server.body_limit_bytes;
            let _ = tokio::time::timeout(limit, axum::body::to_bytes(req.into_body(), max)).await;
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        match tokio::time::timeout(limit, Json::<crate::strict_json::StrictValue>::from_request(req, state)).await {
            Ok(Ok(Json(v))) => {
                T::deserialize(v.0).map(Body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
            }
            Ok(Err(r)) => Err(rejection(&r)),
            Err(_) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!("the request body did not arrive within {} ms; nothing was changed", limit.as_millis()),
            )),
        }
    }
}

/// Whether the request says its body is JSON (`application/json`, or an
/// `application/*+json` type), as axum's JSON extractor requires.
fn is_json(h: &axum::http::HeaderMap) -> bool {
    let Some(ct) = h.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A JSON body that may be left out (no bytes at all): `None`.
#[derive(Debug)]
pub struct OptionalBody<T>(pub Option<T>);

impl<T: DeserializeOwned> FromRequest<Shared> for OptionalBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &Shared) -> Result<Self, ApiError> {
        let h = req.headers();
        let empty = h.get(axum::http::header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() == b"0")
            || (h.get(axum::http::header::CONTENT_LENGTH).is_none()
                && h.get(axum::http::header::TRANSFER_ENCODING).is_none());
        if empty {
            return Ok(OptionalBody(None));
        }
        let Body(v) = Body::<J>::from_request(req, state).await?;
        if !v.is_object() {
            return Err(ApiError::bad_request("invalid JSON body: expected an object"));
        }
        T::deserialize(v)
            .map(|b| OptionalBody(Some(b)))
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// How long a request waits for a read view or the write slot.
fn wait(st: &Shared) -> std::time::Duration {
    std::time::Duration::from_millis(st.config.server.request_timeout_ms)
}

/// Run `f` in a transaction that waits for the write slot at most the
/// request timeout, commit it and record the commit latency. Once begun it
/// runs to the end: its outcome is what the response says. An error from
/// `f` drops the transaction: rolled back, nothing changed.
fn write<T>(
    st: &Shared,
    f: impl FnOnce(&mut ecsdb::Transaction<'_>) -> ApiResult<T>,
) -> ApiResult<(T, ecsdb::CommitInfo)> {
    let t0 = Instant::now();
    let mut txn = st.db.transaction_within(wait(st))?;
    let out = f(&mut txn)?;
    let info = txn.commit()?;
    st.metrics.commit_latency.observe(t0.elapsed().as_secs_f64());
    Ok((out, info))
}

/// `sync: true` promises a durable commit: refuse it up front when the
/// database cannot keep that promise.
fn check_sync(st: &Shared, sync: Option<bool>) -> ApiResult<()> {
    if sync == Some(true) && !st.db.logs_commits() {
        return Err(ApiError::bad_request(
            "`sync: true` asks for a durable commit, but this server's commit log is disabled (transactions.wal_enabled = false); nothing was changed",
        ));
    }
    Ok(())
}

fn rejection(r: &JsonRejection) -> ApiError {
    match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than the limit",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ),
        _ => ApiError::bad_request(format!("invalid JSON body: {}", r.body_text())),
    }
}

pub(crate) async fn blocking<T, F>(st: &Shared, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Shared) -> ApiResult<T> + Send + 'static,
{
    let st = st.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _g = span.enter();
        f(&st)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
}

pub(crate) fn audit(who: &Principal, action: &str, detail: &J) {
    tracing::info!(target: "audit", who = %who.name, action, detail = %detail, "audit");
}

fn parse_id(s: &str) -> ApiResult<EntityId> {
    s.parse::<u64>().map(EntityId).map_err(|_| ApiError::bad_request(format!("`{s}` is not an entity id")))
}

fn wait_sync(st: &Shared, seq: u64, sync: Option<bool>) -> ApiResult<()> {
    if sync == Some(true) && !st.config.db.wal_sync_on_commit() {
        st.db.sync_to(seq)?;
    }
    Ok(())
}

// ------------------------------------------------------------------ public

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /v1/openapi.json")
}

pub async fn metrics(State(st): State<Shared>) -> Response {
    let text = st.metrics.render(&st.db, &st.hub, st.backups.as_deref(), &st.replication);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

pub async fn health(State(st): State<Shared>) -> Response {
    let st2 = st.clone();
    let checks = tokio::task::spawn_blocking(move || crate::health::checks(&st2)).await.unwrap_or_default();
    crate::health::response(&st, &checks)
}

pub async fn openapi() -> Json<J> {
    let mut paths = serde_json::Map::new();
    for (method, path, access) in ROUTES {
        let entry = paths.entry((*path).to_string()).or_insert_with(|| json!({}));
        let security = if *access == Access::Public { json!([]) } else { json!([{"bearer": []}]) };
        entry[method.to_ascii_lowercase()] = json!({
            "summary": format!("{method} {path}"),
            "x-access": format!("{access:?}").to_ascii_lowercase(),
            "security": security,
            "responses": {"200": {"description": "OK"}, "400": {"description": "Invalid request"}, "401": {"description": "Missing or invalid credentials"}, "403": {"description": "Missing permission"}},
        });
    }
    Json(json!({
        "openapi": "3.0.3",
        "info": {"title": "ecsdb", "version": env!("CARGO_PKG_VERSION"), "description": "See docs/API.md"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    username: String,
    password: String,
}

/// Count one password attempt for `user` from `ip` up front (so attempts
/// sent at the same moment cannot all be evaluated), refusing with 429 when
/// either is over `rate_limit.login_failures_max`. A successful attempt is
/// given back with [`refund_attempt`].
fn reserve_attempt(st: &Shared, user: &str, ip: &str) -> ApiResult<()> {
    let (uk, ik) = (format!("user:{user}"), format!("ip:{ip}"));
    let refused = match st.login_failures.check(&uk) {
        Err(retry) => Some(retry),
        Ok(()) => st.login_failures.check(&ik).err().inspect(|_| st.login_failures.refund(&uk)),
    };
    if let Some(retry) = refused {
        st.metrics.rate_limited.inc();
        tracing::warn!(target: "audit", username = ?user, client = %ip, "password attempt refused: too many failures");
        return Err(crate::app::too_many_error(retry));
    }
    Ok(())
}

fn refund_attempt(st: &Shared, user: &str, ip: &str) {
    st.login_failures.refund(&format!("user:{user}"));
    st.login_failures.refund(&format!("ip:{ip}"));
}

/// Run password hashing (argon2id, ~19 MiB and tens of ms each) with at
/// most one per core at once, so concurrent logins cannot exhaust memory.
async fn hashing<T, F>(st: &Shared, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Shared) -> ApiResult<T> + Send + 'static,
{
    let wait = std::time::Duration::from_millis(st.config.server.request_timeout_ms.min(5_000));
    let st2 = st.clone();
    let Ok(Ok(_permit)) = tokio::time::timeout(wait, st2.password_checks.acquire()).await else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many password checks at once; nothing was changed, retry",
        ));
    };
    let st3 = st.clone();
    st.hashers.run(move || f(&st3)).await.unwrap_or_else(|| Err(ApiError::internal("password hashing stopped")))
}

pub async fn login(
    State(st): State<Shared>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    Body(b): Body<LoginBody>,
) -> ApiResult<Json<J>> {
    // Failed logins are limited per username and per client IP: after
    // `rate_limit.login_failures_max` in a window, that name (from anywhere)
    // and that IP (for any name) wait for the next window.
    let ip = peer.ip().to_string();
    reserve_attempt(&st, &b.username, &ip)?;
    let (name, ip2) = (b.username.clone(), ip.clone());
    let r = hashing(&st, move |st| {
        let user = system::find_user(&st.db.read(), &b.username)?;
        let ok = if let Some(u) = &user {
            auth::verify_password(&b.password, &u.password_hash)
        } else {
            auth::verify_against_nothing(&b.password);
            false
        };
        let Some(user) = user.filter(|_| ok) else {
            st.metrics.auth_failures.inc();
            // Debug formatting escapes newlines and control characters: a
            // username cannot forge log lines or send terminal escapes.
            tracing::warn!(target: "audit", username = ?b.username, client = %ip2, "failed login");
            return Err(ApiError::unauthorized("wrong username or password"));
        };
        refund_attempt(st, &b.username, &ip2);
        let jti = auth::random_hex(16)?;
        let (token, expires_ms) = st.tokens.issue(&user.username, user.id, &jti)?;
        // The session is recorded only if the password is still the one
        // checked: a login racing a password change does not survive it.
        system::insert_session(&st.db, &jti, &user.username, &user.password_hash, expires_ms)?;
        tracing::info!(target: "audit", who = %user.username, action = "login", "audit");
        Ok(Json(json!({"token": token, "expires_in": st.tokens.ttl_secs, "role": user.role.name()})))
    })
    .await;
    if matches!(&r, Err(e) if e.code == "busy") {
        refund_attempt(&st, &name, &ip);
    }
    r
}

pub async fn logout(State(st): State<Shared>, Extension(p): Extension<Principal>) -> ApiResult<StatusCode> {
    let Some(jti) = p.token_id.clone() else {
        return Err(ApiError::bad_request("API keys have no session; revoke the key instead"));
    };
    blocking(&st, move |st| {
        system::delete_sessions(&st.db, |s| s.token_id == jti)?;
        audit(&p, "logout", &J::Null);
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

// ------------------------------------------------------------------ data

pub async fn schema(State(st): State<Shared>) -> Json<J> {
    let mut s = st.db.schema().to_json();
    for key in ["tables", "enums", "relations", "custom_types"] {
        if let Some(J::Array(items)) = s.get_mut(key) {
            items.retain(|t| !t["name"].as_str().is_some_and(|n| n.starts_with('_')));
        }
    }
    Json(s)
}

pub async fn stats(State(st): State<Shared>) -> ApiResult<Json<J>> {
    let m = st.db.metrics();
    let s = st.db.storage_stats();
    let c = guard::user_counts(&st.db.read_within(wait(&st))?);
    Ok(Json(json!({
        "entities": c.entities,
        "components": c.components,
        "relations": c.relations,
        "archetypes": c.archetypes,
        "transactions": {"active": m.transactions_active, "committed": m.transactions_committed, "rolled_back": m.transactions_rolled_back},
        "operations": m.total_operations,
        "sequence": m.sequence,
        "memory_bytes": m.memory_bytes,
        "memory_limit_bytes": m.memory_limit_bytes,
        "wal_size_bytes": s.map(|s| s.wal_size_bytes),
        "wal_bytes_written": s.map(|s| s.wal_bytes_written),
        "snapshots": s.map(|s| s.checkpoints),
        "last_snapshot_seq": s.map(|s| s.last_checkpoint_seq),
        "uptime_s": st.started.elapsed().as_secs_f64(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityBody {
    components: J,
    sync: Option<bool>,
}

pub async fn create_entity(
    State(st): State<Shared>,
    Extension(p): Extension<Principal>,
    Body(b): Body<EntityBody>,
) -> ApiResult<(StatusCode, Json<J>)> {
    blocking(&st, move |st| {
        guard::components(&b.components)?;
        check_sync(st, b.sync)?;
        let (id, info) = write(st, |t| Ok(DataWriter::new(t).create(&b.components)?))?;
        wait_sync(st, info.seq, b.sync)?;
        audit(&p, "create_entity", &json!({"id": id.0}));
        Ok((StatusCode::CREATED, Json(json!({"id": ecsdb::core::world::id_json(id), "seq": info.seq}))))
    })
    .await
}

pub async fn get_entity(State(st): State<Shared>, Path(id): Path<String>) -> ApiResult<Json<J>> {
    let id = parse_id(&id)?;
    blocking(&st, move |st| {
        let r = st.db.read_within(wait(st))?;
        guard::visible(&r, id)?;
        Ok(Json(r.entity_json(id).map_err(ecsdb::DbError::from)?))
    })
    .await
}

pub async fn patch_entity(
    State(st): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Body(b): Body<EntityBody>,
) -> ApiResult<Json<J>> {
    let id = parse_id(&id)?;
    blocking(&st, move |st| {
        let comps = guard::components(&b.components)?.clone();
        check_sync(st, b.sync)?;
        let ((), info) = write(st, |t| {
            guard::visible(t, id)?;
            Ok(DataWriter::new(t).set(id, &comps)?)
        })?;
        wait_sync(st, info.seq, b.sync)?;
        audit(&p, "update_entity", &json!({"id": id.0, "tables": comps.keys().collect::<Vec<_>>()}));
        Ok(Json(json!({"id": ecsdb::core::world::id_json(id), "seq": info.seq})))
    })
    .await
}

pub async fn delete_entity(
    State(st): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<J>> {
    let id = parse_id(&id)?;
    blocking(&st, move |st| {
        let ((), info) = write(st, |t| {
            guard::visible(t, id)?;
            Ok(DataWriter::new(t).delete(id)?)
        })?;
        audit(&p, "delete_entity", &json!({"id": id.0}));
        Ok(Json(json!({"id": ecsdb::core::world::id_json(id), "seq": info.seq})))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnBody {
    ops: Vec<J>,
    sync: Option<bool>,
}

/// Most operations in one transaction request.
const MAX_OPS: usize = 100_000;

pub async fn transaction(
    State(st): State<Shared>,
    Extension(p): Extension<Principal>,
    Body(b): Body<TxnBody>,
) -> ApiResult<Json<J>> {
    if b.ops.len() > MAX_OPS {
        return Err(ApiError::bad_request(format!("{} operations; at most {MAX_OPS} per transaction", b.ops.len())));
    }
    blocking(&st, move |st| {
        check_sync(st, b.sync)?;
        // Typed first: a malformed op is refused before the write slot is taken.
        let ops = b.ops.iter().enumerate().map(|(i, v)| DataOp::parse(v, i)).collect::<ApiResult<Vec<_>>>()?;
        let (created, info) = write(st, |t| {
            let mut w = DataWriter::new(t);
            for (i, op) in ops.iter().enumerate() {
                w.apply(op, i)?;
            }
            Ok(w.created)
        })?;
        wait_sync(st, info.seq, b.sync)?;
        audit(&p, "transaction", &json!({"ops": b.ops.len(), "seq": info.seq}));
        let ids: Vec<J> = created.iter().map(|&id| ecsdb::core::world::id_json(id)).collect();
        Ok(Json(json!({"seq": info.seq, "ids": ids})))
    })
    .await
}

/// `POST /v1/graph/path` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRequest {
    from: J,
    to: J,
    relation: Option<String>,
    #[serde(default = "default_direction")]
    direction: ecsdb::Direction,
    #[serde(default = "default_max_hops")]
    max_hops: usize,
}

fn default_direction() -> ecsdb::Direction {
    ecsdb::Direction::Out
}

fn default_max_hops() -> usize {
    6
}

/// Most hops a path request may search.
const MAX_PATH_HOPS: usize = 64;

/// A shortest path (fewest edges) between two entities over user relations.
pub async fn graph_path(State(st): State<Shared>, Body(b): Body<PathRequest>) -> ApiResult<Json<J>> {
    if b.max_hops == 0 || b.max_hops > MAX_PATH_HOPS {
        return Err(ApiError::bad_request(format!("max_hops must be between 1 and {MAX_PATH_HOPS}")));
    }
    blocking(&st, move |st| {
        let timeout = std::time::Duration::from_millis(st.config.server.query_timeout_ms);
        let r = st.db.read_within(timeout)?;
        let end = |v: &J, what: &str| {
            ecsdb::core::world::id_from_json(v)
                .ok_or_else(|| ApiError::bad_request(format!("`{what}` must be an entity id")))
                .and_then(|id| guard::visible(&r, id).map(|()| id))
        };
        let (from, to) = (end(&b.from, "from")?, end(&b.to, "to")?);
        let schema = r.schema().clone();
        let only = match &b.relation {
            Some(name) => {
                guard::user_name(name)?;
                Some(
                    schema
                        .relation_id(name)
                        .ok_or_else(|| ApiError::bad_request(format!("unknown relation `{name}`")))?,
                )
            }
            None => None,
        };
        // Any user relation when none is named; system relations never.
        let allow = |rel: ecsdb::core::schema::RelationId| match only {
            Some(x) => x == rel,
            None => !guard::is_system_name(&schema.relation(rel).name),
        };
        let path = r
            .relations()
            .shortest_path_by(from, to, &allow, b.direction, b.max_hops)
            .ok_or_else(|| ApiError::not_found(format!("no path from {from} to {to} within {} hops", b.max_hops)))?;
        let hops = path.len() - 1;
        Ok(Json(json!({"path": path.into_iter().map(ecsdb::core::world::id_json).collect::<Vec<_>>(), "hops": hops})))
    })
    .await
}

pub async fn query(State(st): State<Shared>, Body(q): Body<Query>) -> ApiResult<Json<J>> {
    let timeout = std::time::Duration::from_millis(st.config.server.query_timeout_ms);
    let st2 = st.clone();
    let Ok(Ok(_permit)) = tokio::time::timeout(timeout, st2.queries.acquire()).await else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!(
                "every query slot (server.max_concurrent_queries) stayed taken for server.query_timeout_ms ({} ms); nothing was changed, retry",
                timeout.as_millis()
            ),
        ));
    };
    blocking(&st, move |st| {
        let cfg = &st.config.server;
        let timeout = std::time::Duration::from_millis(cfg.query_timeout_ms);
        let budget =
            ecsdb::QueryBudget { deadline: Some(Instant::now() + timeout), max_result_bytes: cfg.max_result_bytes };
        let r = st.db.read_within(timeout)?;
        let q = guard::user_query(&r, q)?;
        let answer = r.query_json_within(&q, &budget).map_err(ecsdb::DbError::from)?;
        Ok(Json(answer))
    })
    .await
}

// ------------------------------------------------------------------ admin

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    username: String,
    password: String,
    role: String,
}

fn check_username(u: &str) -> ApiResult<()> {
    let ok = !u.is_empty()
        && u.len() <= 64
        && u.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && u.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "names are 1 to 64 letters, digits, `_`, `.` or `-`, starting with a letter or digit",
        ))
    }
}

pub async fn create_user(
    State(st): State<Shared>,
    Extension(p): Extension<Principal>,
    Body(b): Body<NewUser>,
) -> ApiResult<(StatusCode, Json<J>)> {
    check_username(&b.username)?;
    let role = Role::parse(&b.role)
        .ok_or_else(|| ApiError::bad_request(format!("unknown role `{}` (Admin, ReadWrite, ReadOnly)", b.role)))?;
    hashing(&st, move |st| {
        let hash = auth::hash_password(&b.password)?;
        system::insert_user(&st.db, &b.username, &hash, role)?;
        audit(&p, "create_user", &json!({"username": b.username, "role": role.name()}));
        Ok((StatusCode::CREATED, Json(json!({"username": b.username, "role": role.name()}))))
    })
    .await
}

pub async fn list_users(State(st): State<Shared>) -> ApiResult<Json<J>> {
    let users = system::list_users(&st.db.read())?;
    Ok(Json(json!({"users": users.iter().map(system::user_json).collect::<Vec<_>>()})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    password: String,
    /// Required when changing one's own password.
    current_password: Option<String>,
}

pub async fn change_password(
    State(st): State<Shared>,
    Extension(p): Extension<Principal>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    Path(name): Path<String>,
    Body(b): Body<NewPassword>,
) -> ApiResult<StatusCode> {
    if p.name != name && !p.perms.has(Perms::ADMIN) {
        return Err(ApiError::forbidden("only admins change other users' passwords"));
    }
    let own = p.name == name;
    let ip = peer.ip().to_string();
    // Guessing `current_password` with a stolen token counts like failed logins.
    if own {
        reserve_attempt(&st, &name, &ip)?;
    }
    hashing(&st, move |st| {
        let user =
            system::find_user(&st.db.read(), &name)?.ok_or_else(|| ApiError::not_found(format!("no user `{name}`")))?;
        if own {
            let ok = b.current_password.as_deref().is_some_and(|c| auth::verify_password(c, &user.password_hash));
            if !ok {
                st.metrics.auth_failures.inc();
                tracing::warn!(target: "audit", username = ?name, client = %ip, "wrong current password");
                return Err(ApiError::forbidden(
                    "changing your own password needs `current_password`, the password you have now",
                ));
            }
            refund_attempt(st, &name, &ip);
        }
        let hash = auth::hash_password(&b.password)?;
        // One commit: the new hash and the end of every session of the user.
        system::set_password_ending_sessions(&st.db, user.id, &name, &hash)?;
        audit(&p, "change_password", &json!({"username": name}));
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

pub async fn list_sessions(State(st): State<Shared>) -> ApiResult<Json<J>> {
    let now = system::now_ms();
    let sessions: Vec<J> = system::list_sessions(&st.db.read())?
        .into_iter()
        .filter(|s| s.expires_ms > now)
        .map(|s| json!({"username": s.username, "created_ms": s.created_ms, "expires_ms": s.expires_ms}))
        .collect();
    Ok(Json(json!({"sessions": sessions})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    name: String,
    permissions: Vec<String>,
}

pub async fn create_api_key(
    State(st): State<Shared>,
    Extension(p): Extension<Principal>,
    Body(b): Body<NewKey>,
) -> ApiResult<(StatusCode, Json<J>)> {
    check_username(&b.name)?;
    let perms = Perms::from_names(&b.permissions)?;
    blocking(&st, move |st| {
        let key = format!("{API_KEY_PREFIX}{}", auth::random_hex(24)?);
        system::insert_api_key(&st.db, &b.name, &auth::hash_api_key(&key), perms)?;
        audit(&p, "create_api_key", &json!({"name": b.name, "permissions": perms.names()}));
        Ok((
            StatusCode::CREATED,
            Json(
                json!({"name": b.name, "key": key, "permissions": perms.names(), "note": "the key is shown only now"}),
            ),
        ))
    })
    .await
}

pub async fn list_api_keys(State(st): State<Shared>) -> ApiResult<Json<J>> {
    let keys: Vec<J> = system::list_api_keys(&st.db.read())?
        .into_iter()
        .map(|k| json!({"name": k.name, "permissions": k.perms.names(), "created_ms": k.created_ms}))
        .collect();
    Ok(Json(json!({"api_keys": keys})))
}

pub async fn revoke_api_key(
    State(st): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    blocking(&st, move |st| {
        if !system::delete_api_key(&st.db, &name)? {
            return Err(ApiError::not_found(format!("no API key `{name}`")));
        }
        audit(&p, "revoke_api_key", &json!({"name": name}));
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

pub async fn checkpoint(State(st): State<Shared>, Extension(p): Extension<Principal>) -> ApiResult<Json<J>> {
    blocking(&st, move |st| {
        if let Some(why) = st.db.fail_stopped() {
            return Err(ecsdb::DbError::FailStop(why).into());
        }
        let info = st.db.checkpoint()?;
        audit(&p, "checkpoint", &json!({"seq": info.seq}));
        Ok(Json(json!({
            "seq": info.seq, "path": info.path.display().to_string(), "bytes": info.bytes,
            "raw_bytes": info.raw_bytes, "write_ms": info.write_ms, "segments_archived": info.segments_archived,
        })))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationBody {
    /// The migration file's TOML text.
    pub migration: String,
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /v1/admin/migrations`: plan (`dry_run`) or apply a schema
/// migration; applied ones are one logged record (recovery, backups and
/// replicas follow it). A refused migration changes nothing (400).
pub async fn migrate(
    State(st): State<Shared>,
    Extension(p): Extension<Principal>,
    Body(b): Body<MigrationBody>,
) -> ApiResult<Json<J>> {
    blocking(&st, move |st| {
        if !b.dry_run
            && let Some(why) = st.db.fail_stopped()
        {
            return Err(ecsdb::DbError::FailStop(why).into());
        }
        let out = st.db.migrate(&b.migration, b.dry_run)?;
        if out.applied {
            audit(
                &p,
                "migrate",
                &json!({"seq": out.seq, "from": out.report.from_version, "to": out.report.to_version}),
            );
        }
        Ok(Json(serde_json::to_value(&out).map_err(|e| ApiError::internal(e.to_string()))?))
    })
    .await
}
