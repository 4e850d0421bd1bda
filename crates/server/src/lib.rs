//! # ecsdb-server
//!
//! `ecsdb serve`: the database behind an HTTP API (`/v1`, JSON), with
//! users, roles, sessions and API keys stored in the database itself,
//! rate limits, security headers, CORS, `/health`, Prometheus `/metrics`
//! and structured logs. See `docs/API.md`.
#![cfg_attr(test, allow(clippy::unwrap_used))]

/// `println!` that never panics (start-up lines to a closed stdout).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

pub mod app;
pub mod auth;
pub mod backups;
pub mod config;
pub mod error;
pub mod guard;
pub mod handlers;
pub mod hashers;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod serve;
pub mod stream;
pub mod strict_json;
pub mod system;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ecsdb::{Database, EXAMPLE_SCHEMA, Schema};

pub use config::ServerConfig;

/// What to serve.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub config_file: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub bind: Option<String>,
    pub schema_file: Option<PathBuf>,
}

/// Load config: file, then environment, then command-line options.
pub fn load_config(opts: &ServeOptions) -> Result<ServerConfig, String> {
    let mut c = match &opts.config_file {
        Some(p) => ServerConfig::from_file(p).map_err(|e| e.to_string())?,
        None => ServerConfig::default(),
    };
    c.apply_env(std::env::vars()).map_err(|e| e.to_string())?;
    if let Some(d) = &opts.data_dir {
        c.db.database.data_dir.clone_from(d);
    }
    if let Some(b) = &opts.bind {
        c.server.bind.clone_from(b);
    }
    if let Some(s) = &opts.schema_file {
        c.db.database.schema_file = Some(s.clone());
    }
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

fn init_logging(c: &ServerConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&c.logging.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A log that cannot be written (a full disk) must not take the server
    // down: write errors are dropped instead of reported on stderr (which
    // panics when stderr itself is full).
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .log_internal_errors(false);
    // try_init: a second server in one process keeps the first subscriber.
    let _ = if c.logging.format == "json" { b.json().try_init() } else { b.try_init() };
}

fn jwt_secret(c: &ServerConfig) -> Result<Vec<u8>, String> {
    if let Some(s) = &c.auth.jwt_secret {
        return Ok(s.as_bytes().to_vec());
    }
    let path = c.db.database.data_dir.join("jwt_secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim();
        if s.len() >= 32 {
            return Ok(s.as_bytes().to_vec());
        }
        return Err(format!("{} holds a secret shorter than 32 characters", path.display()));
    }
    let secret = auth::random_hex(32).map_err(|e| e.message)?;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(&path)
        .and_then(|mut f| {
            f.write_all(secret.as_bytes())?;
            f.sync_all()
        })
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(secret.into_bytes())
}

/// Open the database with the user schema plus the system tables.
///
/// Without a schema file, an existing data directory is opened with the
/// schema it keeps (`schema.toml`); a new one gets the bundled example.
pub fn open_database(c: &ServerConfig) -> Result<Database, String> {
    let stored = c.db.database.data_dir.join(ecsdb::SCHEMA_FILE_NAME);
    if stored.exists() && system::lacks_system_indexes(&stored) {
        // A directory made by an older server lacks the system indexes:
        // build them (one logged migration) before the schema is compared.
        let mut own = c.db.clone();
        own.database.schema_file = None;
        own.persistence.checkpoint_on_shutdown = false;
        let db = Database::builder().config(own).enable_persistence().build().map_err(|e| e.to_string())?;
        if system::upgrade_system_indexes(&db)? {
            tracing::info!("built the system tables' indexes (sessions, users, API keys)");
        }
        db.close().map_err(|e| e.to_string())?;
    }
    let mut builder = Database::builder().config(c.db.clone()).enable_persistence();
    if c.db.database.schema_file.is_some() || !stored.exists() {
        let user_text = match &c.db.database.schema_file {
            Some(p) => std::fs::read_to_string(p).map_err(|e| format!("schema {}: {e}", p.display()))?,
            None => EXAMPLE_SCHEMA.to_string(),
        };
        let schema = Schema::with_system(&user_text, system::SYSTEM_SCHEMA).map_err(|e| e.to_string())?;
        builder = builder.schema(Arc::new(schema));
    }
    let db = builder.build().map_err(|e| e.to_string())?;
    require_system_tables(c, db)
}

fn require_system_tables(c: &ServerConfig, db: Database) -> Result<Database, String> {
    if db.schema().table_id("_users").is_none() {
        return Err(format!(
            "{} was created without the server's system tables (users, sessions, API keys), by the embedded library, `ecsdb init` or `ecsdb import` into a new directory; to serve its data: `ecsdb export` it, start the server once on a new directory (with the same schema) and stop it, then `ecsdb import` the export into that directory",
            c.db.database.data_dir.display()
        ));
    }
    Ok(db)
}

/// Resolves on Ctrl-C or SIGTERM (shared with processes that embed the
/// server's pieces, like the game server). The handlers are installed when
/// this is called (inside a runtime), not when the future is first polled:
/// a signal that arrives right after start-up is not the default kill.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (term, int) = {
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok())
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(term) => {},
                () = wait(int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown requested: draining requests");
    }
}

fn conn_limits(c: &ServerConfig) -> serve::ConnLimits {
    serve::ConnLimits {
        header_timeout: std::time::Duration::from_millis(c.server.header_timeout_ms),
        per_ip: c.server.max_connections_per_ip,
        drain: std::time::Duration::from_millis(c.server.request_timeout_ms.saturating_add(5_000)),
    }
}

/// `[replication] bind`, when streams are enabled there and it is not the
/// main listener: a second listener for `/v1/stream` (and `/health`).
fn stream_listener(c: &ServerConfig) -> Result<Option<std::net::TcpListener>, String> {
    let r = &c.db.replication;
    // The same address is the main listener (port 0 means "any free port":
    // always a listener of its own).
    if !r.enabled || (r.bind == c.server.bind && !r.bind.ends_with(":0")) {
        return Ok(None);
    }
    let l = std::net::TcpListener::bind(&r.bind).map_err(|e| format!("bind {} ([replication] bind): {e}", r.bind))?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(Some(l))
}

/// Serve streams on `listener` until the server stops.
fn spawn_stream_listener(listener: std::net::TcpListener, state: &Arc<app::AppState>) -> Result<(), String> {
    let l = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
    let limits = conn_limits(&state.config);
    let app = app::stream_router(state.clone());
    let mut stopping = state.stopping.subscribe();
    tokio::spawn(serve::serve(l, app, limits, async move {
        let _ = stopping.wait_for(|s| *s).await;
    }));
    Ok(())
}

/// A server running on a background thread (benchmarks, embedding).
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub db: Database,
    backups: Option<Arc<backups::Backups>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Drain, stop and close the database.
    pub fn stop(mut self) -> Result<(), String> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let closed = self.db.close().map_err(|e| e.to_string());
        if let Some(b) = &self.backups {
            b.stop();
        }
        closed
    }
}

/// Start a server with `config` on a background thread; `admin_password`
/// sets the first admin's password on a new database.
pub fn start(config: ServerConfig, admin_password: &str) -> Result<Running, String> {
    config.validate().map_err(|e| e.to_string())?;
    backups::Backups::precheck(&config)?;
    let db = open_database(&config)?;
    let secret = jwt_secret(&config)?;
    auth::ensure_admin(&db, Some(admin_password.to_string())).map_err(|e| e.message)?;
    let tokens = auth::Tokens::new(&secret, config.token_ttl_secs());
    let listener =
        std::net::TcpListener::bind(&config.server.bind).map_err(|e| format!("bind {}: {e}", config.server.bind))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let streams = stream_listener(&config)?;
    let backups = backups::Backups::start(&db, &config)?;
    let state =
        Arc::new(app::AppState::new(db.clone(), tokens, config, Arc::new(limits::SystemClock), backups.clone()));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("ecsdb-server".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_multi_thread().thread_name("ecsdb-srv").enable_all().build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                if let Some(l) = streams
                    && let Err(e) = spawn_stream_listener(l, &state)
                {
                    tracing::error!(error = %e, "stream listener");
                }
                let limits = conn_limits(&state.config);
                let app = app::router(state.clone());
                serve::serve(listener, app, limits, async move {
                    let _ = rx.await;
                    let _ = state.stopping.send(true);
                })
                .await;
            });
        })
        .map_err(|e| e.to_string())?;
    Ok(Running { addr, db, backups, stop: Some(tx), thread: Some(thread) })
}

/// Run the server until SIGTERM/SIGINT; then drain, close the database and
/// return.
pub fn run(opts: &ServeOptions) -> Result<(), String> {
    let c = load_config(opts)?;
    init_logging(&c);
    backups::Backups::precheck(&c)?;
    let db = open_database(&c)?;
    if let Some(r) = db.recovery_report() {
        tracing::info!(seq = r.seq, replayed = r.records_replayed, ms = r.duration_ms, "recovered");
    }
    let secret = jwt_secret(&c)?;
    if let Some(pw) = auth::ensure_admin(&db, std::env::var("ECSDB_ADMIN_PASSWORD").ok()).map_err(|e| e.message)? {
        say!("created user `admin` with password: {pw}");
        say!("(shown once; set ECSDB_ADMIN_PASSWORD to choose it, change it with POST /v1/admin/users/admin/password)");
    }
    let tokens = auth::Tokens::new(&secret, c.token_ttl_secs());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    let backups = backups::Backups::start(&db, &c)?;
    let state =
        Arc::new(app::AppState::new(db.clone(), tokens, c.clone(), Arc::new(limits::SystemClock), backups.clone()));
    rt.block_on(async {
        // Before anyone is told where we listen.
        let stop = shutdown_signal();
        let listener =
            tokio::net::TcpListener::bind(&c.server.bind).await.map_err(|e| format!("bind {}: {e}", c.server.bind))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let schema = db.schema();
        let durability = if !c.db.transactions.wal_enabled {
            "commit log DISABLED (development only)"
        } else if c.db.wal_sync_on_commit() {
            "sync (fsync before acknowledging)"
        } else {
            "async (background fsync)"
        };
        if let Some(mb) = &c.metrics.bind {
            let ml = tokio::net::TcpListener::bind(mb).await.map_err(|e| format!("bind {mb}: {e}"))?;
            say!("metrics on http://{}/metrics", ml.local_addr().map_err(|e| e.to_string())?);
            let st = state.clone();
            let metrics_app =
                axum::Router::new().route("/metrics", axum::routing::get(handlers::metrics)).with_state(st);
            tokio::spawn(async move {
                let _ = axum::serve(ml, metrics_app).await;
            });
        }
        say!("ecsdb {} listening on http://{addr}", env!("CARGO_PKG_VERSION"));
        if let Some(l) = stream_listener(&c)? {
            say!("streams also on ws://{}/v1/stream ([replication] bind)", l.local_addr().map_err(|e| e.to_string())?);
            spawn_stream_listener(l, &state)?;
        }
        say!("data directory: {}", c.db.database.data_dir.display());
        say!(
            "schema: {} v{} ({} tables)",
            schema.name,
            schema.version,
            schema.tables.iter().filter(|t| !t.name.starts_with('_')).count()
        );
        say!("durability: {durability}");
        if let Some(b) = &backups {
            say!(
                "backups: {}{}",
                b.target_url(),
                if b.archive_status().is_some() { " (commit log archived continuously)" } else { "" }
            );
        }
        let _ = std::io::stdout().flush();
        let app = app::router(state.clone());
        let st = state.clone();
        serve::serve(listener, app, conn_limits(&c), async move {
            stop.await;
            // Stream connections close now rather than at the drain's end.
            let _ = st.stopping.send(true);
        })
        .await;
        Ok::<(), String>(())
    })?;
    drop(state);
    // Requests are drained: close (every commit durable), then ship the
    // last commits to the archive.
    let closed = db.close().map_err(|e| e.to_string());
    if let Some(b) = &backups {
        b.stop();
    }
    closed?;
    tracing::info!("stopped cleanly");
    Ok(())
}
