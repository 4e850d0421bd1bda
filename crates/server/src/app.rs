//! The HTTP application: shared state, the route table with each route's
//! access rule, and the middleware every request passes through
//! (request id and log line, metrics, security headers, per-IP and
//! per-credential rate limits, authentication and permission check).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ecsdb::Database;

use crate::auth::{self, Principal, Tokens};
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::handlers;
use crate::limits::RateLimiter;
use crate::metrics::{HttpLabels, Metrics};
use crate::system::Perms;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials needed.
    Public,
    /// Any valid credential (token or key).
    Authenticated,
    Read,
    Write,
    Admin,
    /// A replica's key (`replicate` permission) or an admin.
    Replicate,
}

/// Every route and its access rule. The auth middleware enforces this table
/// (a route missing from it is refused), and the tests walk it, so a new
/// route cannot go without an access rule or without an auth test.
pub const ROUTES: &[(&str, &str, Access)] = &[
    ("GET", "/health", Access::Public),
    ("GET", "/metrics", Access::Public),
    ("GET", "/v1/openapi.json", Access::Public),
    ("POST", "/v1/auth/login", Access::Public),
    ("POST", "/v1/auth/logout", Access::Authenticated),
    ("GET", "/v1/schema", Access::Read),
    ("GET", "/v1/stats", Access::Read),
    ("POST", "/v1/entities", Access::Write),
    ("GET", "/v1/entities/{id}", Access::Read),
    ("PATCH", "/v1/entities/{id}", Access::Write),
    ("DELETE", "/v1/entities/{id}", Access::Write),
    ("POST", "/v1/transactions", Access::Write),
    ("POST", "/v1/query", Access::Read),
    ("POST", "/v1/graph/path", Access::Read),
    ("GET", "/v1/admin/users", Access::Admin),
    ("POST", "/v1/admin/users", Access::Admin),
    ("POST", "/v1/admin/users/{name}/password", Access::Authenticated),
    ("GET", "/v1/admin/sessions", Access::Admin),
    ("GET", "/v1/admin/api-keys", Access::Admin),
    ("POST", "/v1/admin/api-keys", Access::Admin),
    ("DELETE", "/v1/admin/api-keys/{name}", Access::Admin),
    ("POST", "/v1/admin/checkpoint", Access::Admin),
    ("GET", "/v1/admin/streams", Access::Admin),
    ("POST", "/v1/admin/migrations", Access::Admin),
    ("GET", "/v1/admin/backups", Access::Admin),
    ("POST", "/v1/admin/backups", Access::Admin),
    ("GET", "/v1/admin/backups/{id}", Access::Admin),
    ("DELETE", "/v1/admin/backups/{id}", Access::Admin),
    ("POST", "/v1/admin/backups/{id}/verify", Access::Admin),
    // Authenticates itself: a header on the upgrade, or a first message.
    ("GET", "/v1/stream", Access::Public),
    ("GET", "/v1/replication/status", Access::Public),
    ("GET", "/v1/replication/snapshot", Access::Replicate),
    ("GET", "/v1/replication/bootstrap", Access::Replicate),
    ("GET", "/v1/replication/stream", Access::Replicate),
    ("POST", "/v1/replication/fence", Access::Replicate),
    ("GET", "/v1/admin/replication", Access::Admin),
    ("POST", "/v1/admin/promote", Access::Admin),
];

/// State shared by all handlers.
#[derive(Debug)]
pub struct AppState {
    pub db: Database,
    pub tokens: Tokens,
    pub config: ServerConfig,
    pub metrics: Metrics,
    /// Requests without valid credentials, per client IP.
    pub ip_limiter: RateLimiter,
    /// Requests per credential.
    pub cred_limiter: RateLimiter,
    /// Failed logins, per `user:<name>` and per `ip:<addr>`.
    pub login_failures: RateLimiter,
    /// Queries running at once.
    pub queries: tokio::sync::Semaphore,
    /// Password hashes computed at once (argon2id takes ~19 MiB each)...
    pub password_checks: tokio::sync::Semaphore,
    /// ...on these threads.
    pub hashers: crate::hashers::Hashers,
    pub started: Instant,
    next_request: AtomicU64,
    /// Commits for stream connections, and their figures (`stream/hub.rs`).
    pub hub: Arc<crate::stream::Hub>,
    /// Stream connections open.
    pub stream_clients: std::sync::atomic::AtomicUsize,
    /// Set when the server starts shutting down (stream connections close).
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// Backups and log archiving, when `[backup]` names a target.
    pub backups: Option<Arc<crate::backups::Backups>>,
    /// This node's replication role, its replicas or its primary.
    pub replication: Arc<crate::replication::Replication>,
}

impl AppState {
    pub fn new(
        db: Database,
        tokens: Tokens,
        config: ServerConfig,
        clock: Arc<dyn crate::limits::Clock>,
        backups: Option<Arc<crate::backups::Backups>>,
        replication: Arc<crate::replication::Replication>,
    ) -> AppState {
        let rl = &config.rate_limit;
        AppState {
            ip_limiter: RateLimiter::new(rl.window_secs, rl.max_unauthenticated, clock.clone()),
            cred_limiter: RateLimiter::new(rl.window_secs, rl.max_requests, clock.clone()),
            login_failures: RateLimiter::new(rl.window_secs, rl.login_failures_max, clock),
            password_checks: tokio::sync::Semaphore::new(hash_threads()),
            hashers: crate::hashers::Hashers::new(hash_threads()),
            queries: tokio::sync::Semaphore::new(match config.server.max_concurrent_queries {
                // A few per core: enough to keep the cores busy while some
                // wait on I/O or locks, few enough that heavy queries cannot
                // starve everything else.
                0 => 4 * std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
                n => n,
            }),
            hub: crate::stream::Hub::start(&db),
            stream_clients: std::sync::atomic::AtomicUsize::new(0),
            stopping: tokio::sync::watch::channel(false).0,
            backups,
            replication,
            db,
            tokens,
            config,
            metrics: Metrics::new(),
            started: Instant::now(),
            next_request: AtomicU64::new(1),
        }
    }
}

pub type Shared = Arc<AppState>;

/// Password checks at once: one per core, at least two.
fn hash_threads() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get).max(2)
}

/// Login requests handled at once (the rest wait; password checks are
/// bounded separately, one per core).
const LOGIN_SLOTS: usize = 64;
/// A login body is a name and a password.
const LOGIN_BODY_LIMIT: usize = 16 << 10;

/// The router with every middleware.
/// The routes of `[replication] bind` when it is its own listener: live
/// streams and health only.
pub fn stream_router(state: Shared) -> Router {
    Router::new()
        .route("/v1/stream", get(crate::stream::stream))
        .route("/health", get(handlers::health))
        .fallback(handlers::not_found)
        .layer(middleware::from_fn(security_headers_only))
        .with_state(state)
}

async fn security_headers_only(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

pub fn router(state: Shared) -> Router {
    let cfg = &state.config;
    let api = crate::backups::routes(Router::new())
        .route("/v1/openapi.json", get(handlers::openapi))
        .route("/v1/auth/logout", post(handlers::logout))
        .route("/v1/schema", get(handlers::schema))
        .route("/v1/stats", get(handlers::stats))
        .route("/v1/entities", post(handlers::create_entity))
        .route(
            "/v1/entities/{id}",
            get(handlers::get_entity).patch(handlers::patch_entity).delete(handlers::delete_entity),
        )
        .route("/v1/transactions", post(handlers::transaction))
        .route("/v1/query", post(handlers::query))
        .route("/v1/graph/path", post(handlers::graph_path))
        .route("/v1/admin/users", get(handlers::list_users).post(handlers::create_user))
        .route("/v1/admin/users/{name}/password", post(handlers::change_password))
        .route("/v1/admin/sessions", get(handlers::list_sessions))
        .route("/v1/admin/api-keys", get(handlers::list_api_keys).post(handlers::create_api_key))
        .route("/v1/admin/api-keys/{name}", axum::routing::delete(handlers::revoke_api_key))
        .route("/v1/admin/checkpoint", post(handlers::checkpoint))
        .route("/v1/admin/streams", get(crate::stream::clients))
        .route("/v1/admin/migrations", post(handlers::migrate))
        .route("/v1/stream", get(crate::stream::stream))
        .route("/v1/replication/status", get(crate::replication::primary::status))
        .route("/v1/replication/snapshot", get(crate::replication::primary::snapshot))
        .route("/v1/replication/bootstrap", get(crate::replication::primary::bootstrap_info))
        .route("/v1/replication/stream", get(crate::replication::primary::stream))
        .route("/v1/replication/fence", post(crate::replication::primary::fence))
        .route("/v1/admin/replication", get(crate::replication::primary::admin_status))
        .route("/v1/admin/promote", post(crate::replication::primary::promote))
        .fallback(handlers::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(axum::extract::DefaultBodyLimit::max(cfg.server.body_limit_bytes))
        // Requests served at once; health and metrics are outside it, so a
        // flood of slow requests never hides the server's state.
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(cfg.server.max_connections));
    // Logins are public and read a body before anything is known of the
    // caller: they get slots of their own, so slow login bodies cannot take
    // the request slots of authenticated traffic.
    let login = Router::new()
        .route("/v1/auth/login", post(handlers::login))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(axum::extract::DefaultBodyLimit::max(LOGIN_BODY_LIMIT))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(LOGIN_SLOTS));
    let probes = Router::new()
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .layer(middleware::from_fn_with_state(state.clone(), authorize));
    // Without allowed origins there is no CORS at all (OPTIONS then says
    // which methods a route takes, like any other request).
    let cors = (!cfg.cors.allowed_origins.is_empty()).then(|| cors_layer(&cfg.cors.allowed_origins));
    // No timeout layer around handlers: cutting one off would not undo a
    // commit it already made. Headers must arrive within
    // `server.header_timeout_ms` (the connection is cut), bodies within
    // `server.request_timeout_ms` (`handlers::Body`), reads and writes wait
    // for the database at most that long, and queries have their own
    // deadline. `observe` is outermost, so every response (preflights, 408s,
    // 413s, 429s) carries the security headers, a request id and metrics.
    probes
        .merge(login)
        .merge(api)
        .layer(tower::util::option_layer(cors))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

fn cors_layer(origins: &[String]) -> tower_http::cors::CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        // Any origin; credentials are bearer tokens sent by the page itself,
        // never cookies, so a wildcard exposes nothing extra.
        tower_http::cors::AllowOrigin::any()
    } else {
        tower_http::cors::AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    tower_http::cors::CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
}

fn client_ip(req: &Request) -> String {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map_or_else(|| "unknown".into(), |c| c.0.ip().to_string())
}

/// Request id, the log line, metrics, security headers, per-IP limit.
async fn observe(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .map_or_else(|| format!("{:016x}", st.next_request.fetch_add(1, Ordering::Relaxed)), str::to_string);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route =
        req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let ip = client_ip(&req);
    // Every log line of this request carries its id.
    let span = tracing::info_span!("request", request_id = %id);
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let limit = if path == "/v1/auth/login" {
        LOGIN_BODY_LIMIT.min(st.config.server.body_limit_bytes)
    } else {
        st.config.server.body_limit_bytes
    };
    let mut resp = if declared.is_some_and(|n| n > limit as u64) {
        // Refused before a byte of the body is read.
        refuse(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        ))
    } else {
        tracing::Instrument::instrument(next.run(req), span.clone()).await
    };
    let _entered = span.enter();
    let status = resp.status().as_u16();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'self'"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert("x-request-id", v);
    }
    let secs = start.elapsed().as_secs_f64();
    st.metrics.http_requests.get_or_create(&HttpLabels { route: route.clone(), status }).inc();
    st.metrics.http_duration.observe(secs);
    tracing::info!(request_id = %id, %method, %path, %route, status, ms = secs * 1e3, client = %ip, "request");
    resp
}

/// A refusal sent before the request body was read: the connection cannot
/// be reused (the unread body is still on it), so say so.
fn refuse(e: ApiError) -> Response {
    let mut r = e.into_response();
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A 429 with `Retry-After`.
pub fn too_many_error(retry_after: u64) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests; retry in {retry_after} s"),
    );
    e.retry_after = Some(retry_after);
    e
}

pub fn too_many(retry_after: u64) -> Response {
    refuse(too_many_error(retry_after))
}

/// The access rule of a matched route (HEAD is GET without a body).
pub fn access_of(method: &Method, route: &str) -> Option<Access> {
    let m = if method == Method::HEAD { "GET" } else { method.as_str() };
    ROUTES.iter().find(|(rm, p, _)| *rm == m && *p == route).map(|r| r.2)
}

/// Routes that are never rate limited: probes must always answer.
fn is_probe(route: &str) -> bool {
    route == "/health" || route == "/metrics"
}

/// Authenticate and check the route's access rule; the principal is put in
/// the request's extensions for the handler.
async fn authorize(State(st): State<Shared>, mut req: Request, next: Next) -> Response {
    let Some(route) = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()) else {
        return next.run(req).await; // unmatched: the fallback answers 404
    };
    let Some(access) = access_of(req.method(), &route) else {
        if req.method() == Method::OPTIONS {
            // Not a CORS preflight (the CORS layer answers those): say which
            // methods the route takes.
            let mut allow: Vec<&str> = ROUTES.iter().filter(|(_, p, _)| *p == route).map(|r| r.0).collect();
            if allow.contains(&"GET") {
                allow.push("HEAD");
            }
            allow.push("OPTIONS");
            let mut r = StatusCode::NO_CONTENT.into_response();
            if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                r.headers_mut().insert(header::ALLOW, v);
            }
            return r;
        }
        // Fail closed: a route without an access rule is never served.
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} is not allowed on {route}", req.method()),
        )
        .into_response();
    };
    let ip = client_ip(&req);
    if access == Access::Public {
        // Probes are never limited; other public routes (login) count
        // against the unauthenticated allowance of the client's IP. The
        // stream counts its own (only attempts that fail to authenticate).
        if !is_probe(&route)
            && route != "/v1/stream"
            && let Err(retry) = st.ip_limiter.check(&ip)
        {
            st.metrics.rate_limited.inc();
            return too_many(retry);
        }
        return next.run(req).await;
    }
    // Two credentials are ambiguous (a proxy may read the other one).
    if req.headers().get_all(header::AUTHORIZATION).iter().count() > 1 {
        return refuse(ApiError::bad_request("send one Authorization header"));
    }
    let header = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let st2 = st.clone();
    let span = tracing::Span::current();
    let principal = tokio::task::spawn_blocking(move || {
        let _g = span.enter();
        auth::authenticate(&st2.db, &st2.tokens, header.as_deref())
    })
    .await;
    let principal: Principal = match principal {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            st.metrics.auth_failures.inc();
            // Refused credentials count against the IP's unauthenticated
            // allowance (guessing tokens or keys).
            if let Err(retry) = st.ip_limiter.check(&ip) {
                st.metrics.rate_limited.inc();
                return too_many(retry);
            }
            return refuse(e);
        }
        Err(e) => return ApiError::internal(e.to_string()).into_response(),
    };
    let need = match access {
        Access::Read => Some(Perms::READ),
        Access::Write => Some(Perms::WRITE),
        Access::Admin => Some(Perms::ADMIN),
        Access::Replicate if principal.perms.has(Perms::ADMIN) => None,
        Access::Replicate => Some(Perms::REPLICATE),
        Access::Public | Access::Authenticated => None,
    };
    if let Some(bit) = need
        && let Err(e) = auth::require(&principal, bit)
    {
        return refuse(e);
    }
    if let Err(retry) = st.cred_limiter.check(&principal.name) {
        st.metrics.rate_limited.inc();
        return too_many(retry);
    }
    req.extensions_mut().insert(principal);
    let resp = next.run(req).await;
    // Answers about the data: reads, writes, and a migration (its dry run
    // reports on the data too). Not auth bookkeeping (users and keys are
    // made before any replica exists) nor replication's own routes.
    if (matches!(access, Access::Read | Access::Write) || route == "/v1/admin/migrations")
        && resp.status() != StatusCode::SERVICE_UNAVAILABLE
    {
        return read_barrier(&st, resp).await;
    }
    resp
}

/// With synchronous replication, an answer about the data (a read, a
/// not-found, a failed check, a write that changed nothing) goes out only
/// once every commit it could have seen is held by the required replicas: a
/// commit is visible here before it is acknowledged, and no answer may
/// report a write that a failover could still take back (linearizable).
/// With `sync_fallback = "async"` the answer goes out after the timeout.
async fn read_barrier(st: &Shared, resp: Response) -> Response {
    let r = &st.replication;
    if r.registry.sync_replicas == 0 || r.role() != crate::replication::Role::Primary {
        return resp;
    }
    let seq = st.db.version();
    let st2 = st.clone();
    let held = tokio::task::spawn_blocking(move || {
        let reg = &st2.replication.registry;
        reg.wait_for(seq, reg.sync_replicas, std::time::Duration::from_millis(st2.replication.config.sync_timeout_ms))
    })
    .await;
    match held {
        Ok(Ok(())) => resp,
        Ok(Err(_)) if r.config.sync_fallback == "async" => resp,
        Ok(Err(have)) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "replication_timeout",
            format!(
                "the state this read saw (commit {seq}) is held by {have} of the {} replicas replication.sync_replicas requires; retry",
                r.registry.sync_replicas
            ),
        )
        .into_response(),
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}
