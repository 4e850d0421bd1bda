//! The HTTP and WebSocket surface: accounts, `/ws`, `/health`,
//! `/metrics`, the admin routes and the browser client; with seed 001's
//! security headers, per-IP rate limits, CORS from config, and metrics for
//! every request.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::accounts::{Accounts, AuthError, Authed};
use crate::assets;
use crate::sim::Input;
use crate::tick::{Game, JoinError, Outgoing, QUEUE};

/// Everything a request handler needs.
pub struct AppState {
    pub game: Arc<Game>,
    pub accounts: Arc<Accounts>,
    pub limiter: RateLimiter,
    /// argon2 work at once (each takes ~19 MiB and a core for tens of ms).
    pub hashers: crate::hashing::Hashers,
    pub ws_open: AtomicUsize,
    /// `GAME_ADMIN_TOKEN`; the admin routes answer 404 without one.
    pub admin_token: Option<String>,
    pub started: Instant,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

type Shared = Arc<AppState>;

/// A fixed-window counter per client address (`RATE_LIMIT_MAX` requests
/// per `RATE_LIMIT_WINDOW`).
#[derive(Debug)]
pub struct RateLimiter {
    window: Duration,
    max: u32,
    hits: Mutex<FxHashMap<IpAddr, (Instant, u32)>>,
}

impl RateLimiter {
    pub fn new(window: Duration, max: u32) -> RateLimiter {
        RateLimiter { window, max, hits: Mutex::new(FxHashMap::default()) }
    }

    /// `Err(seconds to wait)` when `ip` is over its allowance.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let mut hits = self.hits.lock();
        if hits.len() > 100_000 {
            let w = self.window;
            hits.retain(|_, (start, _)| now.duration_since(*start) < w);
        }
        let e = hits.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= self.window {
            *e = (now, 0);
        }
        if e.1 >= self.max {
            let left = self.window.saturating_sub(now.duration_since(e.0));
            return Err(left.as_secs().max(1));
        }
        e.1 += 1;
        Ok(())
    }
}

/// A JSON error response.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": code, "message": message.into()}))).into_response()
}

fn auth_error(e: &AuthError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match e {
        AuthError::Banned { reason, until } => {
            (status, axum::Json(json!({"error": "banned", "message": e.to_string(), "reason": reason, "until": until})))
                .into_response()
        }
        AuthError::Unavailable(m) => {
            tracing::warn!(error = %m, "account write not acknowledged by the database");
            error(status, "unavailable", "the database did not acknowledge the write; retry shortly")
        }
        AuthError::Db(_) | AuthError::Internal(_) => {
            tracing::error!(error = %e, "account operation failed");
            error(status, "internal", "internal error; see the server log")
        }
        AuthError::BadInput(_) => error(status, "bad_request", e.to_string()),
        AuthError::Taken(_) => error(status, "conflict", e.to_string()),
        AuthError::Unauthorized(_) => error(status, "unauthorized", e.to_string()),
        AuthError::NotFound(_) => error(status, "not_found", e.to_string()),
    }
}

/// Parse a JSON body strictly: unknown fields, wrong types and bad JSON are 400s.
fn parse<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, Response> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    if !ct.starts_with("application/json") {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/json",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_request", format!("invalid JSON body: {e}")))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let h = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = h.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    username: String,
    password: String,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanBody {
    username: String,
    #[serde(default)]
    reason: Option<String>,
    /// Seconds; absent or 0 = permanent.
    #[serde(default)]
    duration_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnbanBody {
    username: String,
}

/// Run account work that hashes or checks passwords on the hashing pool.
async fn blocking<T: Send + 'static>(s: &Shared, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Response> {
    s.hashers.run(f).await.map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))
}

async fn register(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let b: RegisterBody = match parse(&headers, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let accounts = s.accounts.clone();
    match blocking(&s, move || accounts.register(&b.username, &b.password, b.email.as_deref())).await {
        Err(r) => r,
        Ok(Err(e)) => auth_error(&e),
        Ok(Ok(id)) => {
            s.game.metrics.registrations.inc();
            (StatusCode::CREATED, axum::Json(json!({"player_id": id.0}))).into_response()
        }
    }
}

async fn login(
    State(s): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let b: LoginBody = match parse(&headers, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let ua = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let accounts = s.accounts.clone();
    let ip = addr.ip().to_string();
    match blocking(&s, move || accounts.login(&b.username, &b.password, &ip, &ua)).await {
        Err(r) => r,
        Ok(Err(e)) => {
            let result = if matches!(e, AuthError::Banned { .. }) { "banned" } else { "failed" };
            s.game.metrics.logins.get_or_create(&crate::metrics::ResultLabels { result: result.into() }).inc();
            auth_error(&e)
        }
        Ok(Ok(reply)) => {
            s.game.metrics.logins.get_or_create(&crate::metrics::ResultLabels { result: "ok".into() }).inc();
            axum::Json(reply).into_response()
        }
    }
}

async fn logout(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let Some(token) = bearer(&headers) else {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "missing Authorization: Bearer <token>");
    };
    let accounts = s.accounts.clone();
    let token = token.to_string();
    match tokio::task::spawn_blocking(move || accounts.logout(&token)).await {
        Ok(Ok((who, unacked))) => {
            // The session is gone here either way: close its socket now.
            s.game.kick(who.player, Some(who.session), 4401, "logged out");
            match unacked {
                None => axum::Json(json!({"ok": true})).into_response(),
                Some(m) => auth_error(&AuthError::Unavailable(m)),
            }
        }
        Ok(Err(e)) => auth_error(&e),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error"),
    }
}

/// The caller's own progress (`Authorization: Bearer`).
async fn me(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let Some(token) = bearer(&headers) else {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "missing Authorization: Bearer <token>");
    };
    let who = match s.accounts.authenticate(token) {
        Ok(w) => w,
        Err(e) => return auth_error(&e),
    };
    let view = s.game.db.read();
    let Ok(p) = view.get_component::<crate::model::Progress>(who.player) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no progress for this player");
    };
    let body = view.get_component::<crate::model::Body>(who.player).ok();
    let pos = body.map_or(p.last_position, |b| [b.position[0], b.position[1]]);
    axum::Json(json!({
        "player_id": who.player.0,
        "username": who.name,
        "online": body.is_some(),
        "position": [crate::sim::short(pos[0]), crate::sim::short(pos[1])],
        "level": p.level,
        "experience": p.experience,
        "health": crate::sim::short(p.health),
        "hunger": crate::sim::short(p.hunger),
        "thirst": crate::sim::short(p.thirst),
        "deaths": p.deaths,
    }))
    .into_response()
}

fn admin(s: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(want) = &s.admin_token else {
        return Err(error(StatusCode::NOT_FOUND, "not_found", "the admin API is off (set GAME_ADMIN_TOKEN)"));
    };
    let got = bearer(headers).unwrap_or("");
    let same = got.len() == want.len() && got.bytes().zip(want.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
    if !same {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "admin routes need Authorization: Bearer <GAME_ADMIN_TOKEN>",
        ));
    }
    Ok(())
}

/// An admin request's body, once the admin token is checked.
fn admin_body<T: serde::de::DeserializeOwned>(s: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<T, Response> {
    admin(s, headers)?;
    parse(headers, body)
}

async fn ban(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let b: BanBody = match admin_body(&s, &headers, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let reason = b.reason.filter(|r| !r.trim().is_empty()).unwrap_or_else(|| "banned by an administrator".into());
    let accounts = s.accounts.clone();
    let r2 = reason.clone();
    match tokio::task::spawn_blocking(move || accounts.set_ban(&b.username, Some(&r2), b.duration_secs)).await {
        Ok(Ok((player, unacked))) => {
            // Banned here either way: the socket closes now.
            s.game.kick(player, None, 4403, &format!("banned: {reason}"));
            match unacked {
                None => axum::Json(json!({"ok": true, "player_id": player.0, "reason": reason})).into_response(),
                Some(m) => auth_error(&AuthError::Unavailable(m)),
            }
        }
        Ok(Err(e)) => auth_error(&e),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error"),
    }
}

async fn unban(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let b: UnbanBody = match admin_body(&s, &headers, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let accounts = s.accounts.clone();
    match tokio::task::spawn_blocking(move || accounts.set_ban(&b.username, None, 0)).await {
        Ok(Ok((player, None))) => axum::Json(json!({"ok": true, "player_id": player.0})).into_response(),
        Ok(Ok((_, Some(m)))) => auth_error(&AuthError::Unavailable(m)),
        Ok(Err(e)) => auth_error(&e),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error"),
    }
}

async fn health(State(s): State<Shared>) -> Response {
    let (ms, n) = s.game.tick_percentiles();
    let [(p50, p99), systems, commit, subs] = ms;
    let since = s.game.since_last_tick_ms();
    let failed = s.game.failed.lock().clone();
    let db_failed = s.game.db.fail_stopped();
    let remote = s.game.remote.as_ref().map(|r| r.status());
    let stalled = since > 2000 || remote.as_ref().is_some_and(|r| r.last_error.is_some() || r.lag_commits > 100);
    let failed = failed.or_else(|| remote.and_then(|r| r.failed));
    let status = if failed.is_some() || db_failed.is_some() {
        "unhealthy"
    } else if stalled {
        "degraded"
    } else {
        "healthy"
    };
    let code = if status == "healthy" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let ts = crate::accounts::now_ms();
    (
        code,
        axum::Json(json!({
            "status": status,
            "timestamp": ts,
            "version": env!("CARGO_PKG_VERSION"),
            "players_online": s.game.players_online(),
            "server_tick": s.game.tick.load(Ordering::Relaxed),
            "tick_rate": s.game.cfg.tick_rate,
            "max_players": s.game.cfg.max_players,
            "tick_ms": {
                "p50": p50, "p99": p99, "samples": n, "since_last": since,
                "systems": {"p50": systems.0, "p99": systems.1},
                "commit": {"p50": commit.0, "p99": commit.1},
                "subscriptions": {"p50": subs.0, "p99": subs.1},
            },
            "uptime_secs": s.started.elapsed().as_secs(),
            "database": match &s.game.remote {
                None => json!({"mode": "embedded", "sequence": s.game.db.version(), "error": failed.or(db_failed)}),
                Some(r) => {
                    let st = r.status();
                    json!({
                        "mode": "remote",
                        "url": st.url,
                        "sequence": s.game.db.version(),
                        "lag_commits": st.lag_commits,
                        "error": st.failed.or(st.last_error).or(failed).or(db_failed),
                    })
                }
            },
        })),
    )
        .into_response()
}

async fn metrics(State(s): State<Shared>) -> Response {
    let text = s.game.metrics.render(&s.game.db, s.game.remote.as_deref());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

async fn ws(
    State(s): State<Shared>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", format!("/ws is a WebSocket: {e}")),
    };
    if s.ws_open.load(Ordering::Relaxed) >= s.game.cfg.max_connections {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "the server is at its connection limit; retry later",
        );
    }
    // Header credentials are checked before the upgrade: a bad token gets
    // a plain 401, a banned player a 403 with the reason.
    let pre: Option<Authed> = match bearer(&headers) {
        Some(t) => match s.accounts.authenticate(t) {
            Ok(w) => Some(w),
            Err(e) => return auth_error(&e),
        },
        None if headers.contains_key(header::AUTHORIZATION) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the Authorization header must be `Bearer <token>`",
            );
        }
        None => None,
    };
    let max = s.game.cfg.max_message_size;
    upgrade.max_message_size(max).max_frame_size(max).on_upgrade(move |socket| connection(s, socket, pre))
}

/// Send a close frame (the reason cut to the 123 bytes a close frame can
/// carry, on a character boundary), then give the client a moment to
/// answer it, so the code reaches it rather than a reset.
async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame { code, reason: reason[..end].to_string().into() };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Takes the player out of the world when its connection ends, however it
/// ends (a panic in the connection's task included).
struct Joined {
    game: Arc<Game>,
    player: ecsdb::EntityId,
    conn_id: u64,
}

impl Drop for Joined {
    fn drop(&mut self) {
        self.game.leave(self.player, self.conn_id);
    }
}

/// One WebSocket: authenticate (header already checked, or a first
/// `{"type":"auth","token"}` within 5 s), join, then relay inputs one way
/// and the tick's messages the other.
async fn connection(s: Shared, mut socket: WebSocket, pre: Option<Authed>) {
    s.ws_open.fetch_add(1, Ordering::Relaxed);
    s.game.metrics.ws_connections.inc();
    session(&s, &mut socket, pre).await;
    s.ws_open.fetch_sub(1, Ordering::Relaxed);
    s.game.metrics.ws_connections.dec();
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMsg {
    Auth { token: String },
    Input { x: f64, y: f64 },
    Ping {},
}

async fn session(s: &Shared, socket: &mut WebSocket, pre: Option<Authed>) {
    let who = if let Some(w) = pre {
        w
    } else {
        {
            let first = tokio::time::timeout(Duration::from_secs(5), socket.recv()).await;
            let text = match first {
                Ok(Some(Ok(Message::Text(t)))) => t,
                Ok(Some(Ok(_))) => {
                    return close(socket, 4401, "the first message must be {\"type\":\"auth\",\"token\":…}").await;
                }
                Ok(Some(Err(_)) | None) => return,
                Err(_) => return close(socket, 4408, "no auth message within 5 s").await,
            };
            let Ok(ClientMsg::Auth { token }) = serde_json::from_str::<ClientMsg>(&text) else {
                return close(socket, 4401, "the first message must be {\"type\":\"auth\",\"token\":…}").await;
            };
            match s.accounts.authenticate(&token) {
                Ok(w) => w,
                Err(e @ AuthError::Banned { .. }) => return close(socket, 4403, &e.to_string()).await,
                Err(e) => return close(socket, 4401, &e.to_string()).await,
            }
        }
    };
    let (tx, mut rx) = mpsc::channel::<Outgoing>(QUEUE);
    let conn_id = match s.game.join(who.player, who.session, &who.name, tx).map_err(|JoinError::Full(n)| n) {
        Ok(c) => c,
        Err(n) => {
            let msg = format!("the server is full ({n} players, GAME_MAX_PLAYERS); try again later");
            let _ = socket
                .send(Message::Text(json!({"type": "error", "code": "server_full", "message": msg}).to_string().into()))
                .await;
            return close(socket, 1013, &msg).await;
        }
    };
    let joined = Joined { game: s.game.clone(), player: who.player, conn_id };
    tracing::info!(player = who.player.0, name = %who.name, "player joined");
    let ping_every = s.game.cfg.ping_interval;
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    let mut last_heard = Instant::now();
    let mut window = (Instant::now(), 0u32);
    let why: (u16, String) = loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Outgoing::Text(t)) => {
                    if socket.send(Message::Text(t.as_ref().into())).await.is_err() {
                        break (1006, String::new());
                    }
                }
                Some(Outgoing::Close(code, reason)) => break (code, reason),
                None => break (1001, "server stopping".into()),
            },
            msg = socket.recv() => {
                last_heard = Instant::now();
                // Every frame counts against the flood limit, pings too
                // (each ping makes the server queue a pong).
                let now = Instant::now();
                if now.duration_since(window.0) >= Duration::from_secs(1) {
                    window = (now, 0);
                }
                window.1 += 1;
                if window.1 > 120 {
                    break (1008, "too many messages (at most 120 a second)".into());
                }
                match msg {
                    None => break (1006, String::new()),
                    Some(Err(e)) => {
                        // Oversized messages are refused by the WebSocket
                        // layer; tell the client why.
                        let text = e.to_string();
                        if text.contains("too long") || text.contains("Space limit") || text.contains("capacity") {
                            break (1009, format!("message too big (at most {} bytes)", s.game.cfg.max_message_size));
                        }
                        break (1006, String::new());
                    }
                    Some(Ok(Message::Close(_))) => break (1000, String::new()),
                    Some(Ok(Message::Text(t))) => {
                        s.game.metrics.ws_messages_in.inc();
                        match serde_json::from_str::<ClientMsg>(&t) {
                            Ok(ClientMsg::Input { x, y }) => s.game.set_input(who.player, conn_id, Input::sanitized(x, y)),
                            Ok(ClientMsg::Ping {}) => {
                                let _ = socket.send(Message::Text(json!({"type": "pong", "tick": s.game.tick.load(Ordering::Relaxed)}).to_string().into())).await;
                            }
                            Ok(ClientMsg::Auth { .. }) => {
                                let _ = socket.send(Message::Text(json!({"type": "error", "code": "bad_message", "message": "already authenticated"}).to_string().into())).await;
                            }
                            Err(e) => {
                                let _ = socket.send(Message::Text(json!({"type": "error", "code": "bad_message", "message": format!("{e}")}).to_string().into())).await;
                            }
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let _ = socket.send(Message::Text(json!({"type": "error", "code": "bad_message", "message": "messages are JSON text"}).to_string().into())).await;
                    }
                    Some(Ok(_)) => {}
                }
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > ping_every * 3 {
                    break (1001, "no traffic from the client; closing".into());
                }
                if socket.send(Message::Ping(Bytes::new())).await.is_err() {
                    break (1006, String::new());
                }
            }
        }
    };
    drop(joined);
    tracing::info!(player = who.player.0, code = why.0, "player left");
    if why.0 != 1006 {
        close(socket, why.0, &why.1).await;
    }
}

async fn static_file(path: axum::extract::Path<String>) -> Response {
    serve_asset(&path.0)
}

async fn index() -> Response {
    serve_asset("index.html")
}

fn serve_asset(name: &str) -> Response {
    match assets::get(name) {
        Some((body, ct)) => ([(header::CONTENT_TYPE, ct), (header::CACHE_CONTROL, "no-cache")], body).into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", format!("no such file: {name}")),
    }
}

/// Rate limits (API routes), request metrics, security headers.
async fn around(
    State(s): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let route =
        req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let limited = !matches!(route.as_str(), "/health" | "/metrics" | "/" | "/assets/{file}" | "/favicon.ico");
    let mut resp = if limited && let Err(wait) = s.limiter.check(addr.ip(), start) {
        s.game.metrics.rate_limited.inc();
        let mut r =
            error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", format!("too many requests; retry in {wait} s"));
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    } else {
        next.run(req).await
    };
    // Errors the framework answers itself (405, 413) get the JSON shape too.
    let json = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !json && resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        let allow = resp.headers().get(header::ALLOW).cloned();
        resp = error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method");
        if let Some(a) = allow {
            resp.headers_mut().insert(header::ALLOW, a);
        }
    } else if !json && resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        resp = error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "request bodies are at most 16 KiB");
    }
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'self'"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    let status = resp.status().as_u16();
    s.game
        .metrics
        .http_requests
        .get_or_create(&crate::metrics::HttpLabels { method, route: route.clone(), status })
        .inc();
    s.game
        .metrics
        .http_duration
        .get_or_create(&crate::metrics::RouteLabels { route })
        .observe(start.elapsed().as_secs_f64());
    resp
}

fn cors(cfg: &crate::config::Cors) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins = if cfg.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(cfg.allowed_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let methods: Vec<Method> =
        cfg.allowed_methods.iter().filter_map(|m| Method::from_bytes(m.as_bytes()).ok()).collect();
    let headers: Vec<HeaderName> =
        cfg.allowed_headers.iter().filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok()).collect();
    CorsLayer::new().allow_origin(origins).allow_methods(methods).allow_headers(headers)
}

/// The main router (`SERVER_PORT`).
pub fn router(s: Shared) -> Router {
    let cors = cors(&s.game.cfg.cors);
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(static_file))
        .route("/favicon.ico", get(|| async { serve_asset("icon.svg") }))
        .route("/register", post(register))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/me", get(me))
        .route("/admin/ban", post(ban))
        .route("/admin/unban", post(unban))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/ws", get(ws))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(16 * 1024))
        // A request (its body included) must be done within 30 s.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        // CORS inside: preflight answers get the security headers too.
        .layer(cors)
        .layer(middleware::from_fn_with_state(s.clone(), around))
        .with_state(s)
}

/// The WebSocket listener's router (`SERVER_WS_PORT`): `/ws` and `/health`.
pub fn ws_router(s: Shared) -> Router {
    Router::new()
        .route("/ws", get(ws))
        .route("/health", get(health))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "this port serves /ws and /health") })
        .layer(middleware::from_fn_with_state(s.clone(), around))
        .with_state(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_windows() {
        let r = RateLimiter::new(Duration::from_secs(10), 2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t = Instant::now();
        assert!(r.check(ip, t).is_ok());
        assert!(r.check(ip, t).is_ok());
        let wait = r.check(ip, t).unwrap_err();
        assert!((1..=10).contains(&wait));
        assert!(r.check("10.0.0.2".parse().unwrap(), t).is_ok());
        assert!(r.check(ip, t + Duration::from_secs(10)).is_ok());
    }
}
