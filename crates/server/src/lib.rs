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
pub mod replication;
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
    /// `--replica-of URL`: run as a replica of this primary.
    pub replica_of: Option<String>,
    /// `--replica-key KEY` (else `ECSDB_REPLICA_KEY`).
    pub replica_key: Option<String>,
    /// `--advertise URL`: where other nodes reach this one.
    pub advertise: Option<String>,
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
    if let Some(p) = &opts.replica_of {
        c.db.replication.primary = Some(p.clone());
    }
    if let Some(a) = &opts.advertise {
        c.db.replication.advertise_url = Some(a.clone());
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
    open_database_with(c, Vec::new())
}

/// [`open_database`] with extra commit sinks (replication's).
pub fn open_database_with(c: &ServerConfig, sinks: Vec<Box<dyn ecsdb::CommitSink>>) -> Result<Database, String> {
    let replica = c.db.replication.primary.is_some();
    let stored = c.db.database.data_dir.join(ecsdb::SCHEMA_FILE_NAME);
    if !replica && stored.exists() && system::lacks_system_indexes(&stored) {
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
    let mut own = c.db.clone();
    if replica {
        // The primary's schema (in the data directory) rules.
        own.database.schema_file = None;
    }
    let mut builder = Database::builder().config(own).enable_persistence();
    for s in sinks {
        builder = builder.commit_sink(s);
    }
    if replica && c.db.database.schema_file.is_some() {
        tracing::info!("a replica keeps its primary's schema: database.schema_file is ignored");
    }
    if !replica && (c.db.database.schema_file.is_some() || !stored.exists()) {
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
    pub replication: Arc<replication::Replication>,
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
        self.replication.stop.store(true, std::sync::atomic::Ordering::Release);
        let closed = self.db.close().map_err(|e| e.to_string());
        if let Some(b) = &self.backups {
            b.stop();
        }
        closed
    }
}

/// The replica key: the option, else `ECSDB_REPLICA_KEY`.
fn replica_key(opt: Option<&str>) -> Option<String> {
    opt.map(str::to_string).or_else(|| std::env::var("ECSDB_REPLICA_KEY").ok()).filter(|k| !k.trim().is_empty())
}

/// Where other nodes reach this one.
fn advertise_url(c: &ServerConfig, addr: SocketAddr) -> String {
    if let Some(a) = &c.db.replication.advertise_url {
        return a.trim_end_matches('/').to_string();
    }
    if addr.ip().is_unspecified() {
        tracing::warn!(
            "server.bind listens on every address: set replication.advertise_url (or --advertise) to the URL other nodes reach this one at"
        );
        return format!("http://127.0.0.1:{}", addr.port());
    }
    format!("http://{addr}")
}

/// A replica's data directory, ready to open: bootstrapped from the primary
/// when empty (or when a re-bootstrap was asked for: the old data is set
/// aside first). Retries while the primary is unreachable, until `stopping`.
fn prepare_replica(
    c: &ServerConfig,
    key: Option<&str>,
    again: Option<&str>,
    stopping: &dyn Fn() -> bool,
) -> Result<(), String> {
    let Some(configured) = c.db.replication.primary.as_deref() else { return Ok(()) };
    // Bootstrapping again: from the primary followed last (a failover may
    // have moved it away from the configured one).
    let followed = match again {
        Some(_) => replication::state::load(&c.db.database.data_dir).ok().flatten().and_then(|s| s.primary),
        None => None,
    };
    let primary = followed.as_deref().unwrap_or(configured).trim_end_matches('/');
    let key = key.ok_or("a replica needs an API key with the `replicate` permission: --replica-key or ECSDB_REPLICA_KEY (create one on the primary: POST /v1/admin/api-keys {\"name\": \"replica-1\", \"permissions\": [\"replicate\"]})")?;
    let dir = &c.db.database.data_dir;
    if let Some(why) = again {
        let aside = replication::replica::set_aside(dir)?;
        tracing::warn!(reason = %why, aside = %aside.display(), "bootstrapping again; the old data is set aside");
    }
    if !replication::replica::is_empty_data_dir(dir) {
        let mine = std::fs::read_to_string(dir.join("database_id")).unwrap_or_default();
        if replication::state::load(dir)?.is_none() || mine.trim().is_empty() {
            return Err(format!(
                "{} holds a database that did not come from a primary: a replica starts on an empty data directory (move this one aside)",
                dir.display()
            ));
        }
        if let Ok(s) = replication::replica::peer_status(primary)
            && let Some(theirs) = s["database_id"].as_str()
            && theirs != mine.trim()
        {
            return Err(format!(
                "{} holds database {}, and {primary} serves database {theirs}: a replica starts on an empty data directory or one that came from this cluster (move this one aside)",
                dir.display(),
                mine.trim()
            ));
        }
        return Ok(());
    }
    // `replication.bootstrap_from`: the backup target first when one is
    // configured (not for "primary"); the primary's snapshot when the
    // target cannot serve (not for "backup").
    let open = |s: &ecsdb_backup::StorageSettings, url: &str| {
        ecsdb_backup::Target::open(url, s).map(std::sync::Arc::new).map_err(|e| format!("[backup] target: {e}"))
    };
    let target = match c.backup.target_url(&c.storage) {
        Some(url) if c.db.replication.bootstrap_from != "primary" => {
            Some((open(&c.storage, &url)?, open(&c.storage.quick(), &url)?))
        }
        _ => None,
    };
    let only_backup = c.db.replication.bootstrap_from == "backup";
    let keep_jwt = c.auth.jwt_secret.is_some();
    let level = c.db.persistence.snapshot_compression_level;
    let mut wait = std::time::Duration::from_millis(200);
    loop {
        // A target of another database is refused before anything is
        // written (the check the server makes at start, with the id the
        // primary serves).
        if let Ok(s) = replication::replica::peer_status(primary)
            && let Some(id) = s["database_id"].as_str()
        {
            backups::Backups::check_owner(c, Some(id))?;
        }
        let attempt = match &target {
            Some((t, quick)) => {
                match replication::replica::bootstrap_from_backup(primary, key, dir, keep_jwt, t, quick, level) {
                    Ok(seq) => Ok(seq),
                    Err(e) if only_backup && !e.transient => {
                        return Err(format!(
                            "cannot bootstrap from the backup target (replication.bootstrap_from = \"backup\"): {}",
                            e.message
                        ));
                    }
                    Err(e) if only_backup => Err(e.message),
                    Err(e) if stopping() => Err(format!("stopped before the bootstrap finished ({})", e.message)),
                    Err(e) => {
                        tracing::warn!(reason = %e.message, "not bootstrapping from the backup target: taking the primary's snapshot");
                        replication::replica::bootstrap(primary, key, dir, keep_jwt)
                    }
                }
            }
            None => replication::replica::bootstrap(primary, key, dir, keep_jwt),
        };
        match attempt {
            Ok(_) => return Ok(()),
            Err(e) if e.contains("refused") && !e.contains("Connection refused") && !e.contains("not_primary") => {
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(error = %e, "bootstrap failed; retrying");
                if stopping() {
                    return Err(format!("stopped before the bootstrap finished ({e})"));
                }
                std::thread::sleep(wait);
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}

/// Everything a node serves with, opened.
struct Node {
    db: Database,
    state: Arc<app::AppState>,
    backups: Option<Arc<backups::Backups>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn open_node(
    c: &ServerConfig,
    addr: SocketAddr,
    key: Option<String>,
    admin_password: Option<String>,
) -> Result<(Node, Option<String>), String> {
    backups::Backups::precheck(c)?;
    let dir = c.db.database.data_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let jwt_configured = c.auth.jwt_secret.is_some();
    let repl = replication::Replication::open(&dir, &c.db.replication, &advertise_url(c, addr), key)?;
    let db = open_database_with(c, vec![Box::new(replication::ReplicationSink(repl.registry.clone()))])?;
    if let Some(r) = db.recovery_report() {
        tracing::info!(seq = r.seq, replayed = r.records_replayed, ms = r.duration_ms, "recovered");
    }
    let secret = jwt_secret(c)?;
    if !jwt_configured {
        // The replicas need the data directory's own secret for tokens to
        // work on every node.
        *repl.jwt_secret_file.lock() = String::from_utf8(secret.clone()).ok();
    }
    repl.attach(&db);
    {
        let mut f = repl.follower.lock();
        f.applied_seq = db.version();
        f.primary_seq = db.version();
        // Lag while never connected counts from now.
        f.last_contact_unix_ms = replication::now_ms();
    }
    replication::replica::check_epoch_on_start(&repl);
    let mut created = None;
    if repl.role() == replication::Role::Primary {
        created = auth::ensure_admin(&db, admin_password).map_err(|e| e.message)?;
    }
    let tokens = auth::Tokens::new(&secret, c.token_ttl_secs());
    let backups = backups::Backups::start(&db, c, repl.archive_branch(), repl.history_branch())?;
    let state = Arc::new(app::AppState::new(
        db.clone(),
        tokens,
        c.clone(),
        Arc::new(limits::SystemClock),
        backups.clone(),
        repl.clone(),
    ));
    let mut threads = Vec::new();
    if repl.role() == replication::Role::Replica {
        let st = state.clone();
        threads.push(
            std::thread::Builder::new()
                .name("ecsdb-replica".into())
                .spawn(move || replication::replica::run(&st))
                .map_err(|e| e.to_string())?,
        );
    }
    if let Some(b) = backups.clone() {
        // Archiving follows the role (a promotion starts it within half a
        // second; a fence stops it). Its own thread: starting an archiver
        // talks to the target, which may be slow or down.
        let st = state.clone();
        threads.push(
            std::thread::Builder::new()
                .name("ecsdb-backup-role".into())
                .spawn(move || {
                    let r = &st.replication;
                    while !r.stop.load(std::sync::atomic::Ordering::Acquire) && !*st.stopping.borrow() {
                        b.follow_role(&st.db, r.archive_branch(), r.history_branch());
                        std::thread::sleep(std::time::Duration::from_millis(500));
                    }
                })
                .map_err(|e| e.to_string())?,
        );
    }
    {
        let st = state.clone();
        threads.push(
            std::thread::Builder::new()
                .name("ecsdb-repl-retain".into())
                .spawn(move || replication::registry::retain_loop(&st))
                .map_err(|e| e.to_string())?,
        );
    }
    Ok((Node { db, state, backups, threads }, created))
}

impl Node {
    /// Stop background work, close the database; whether a re-bootstrap
    /// was asked for.
    fn close(self) -> Result<Option<String>, String> {
        let r = self.state.replication.clone();
        r.stop.store(true, std::sync::atomic::Ordering::Release);
        self.state.stopping.send_replace(true);
        for t in self.threads {
            let _ = t.join();
        }
        drop(self.state);
        let closed = self.db.close().map_err(|e| e.to_string());
        if let Some(b) = &self.backups {
            b.stop();
        }
        closed?;
        Ok(r.rebootstrap.lock().take())
    }
}

/// Start a server with `config` on a background thread; `admin_password`
/// sets the first admin's password on a new database. A replica
/// (`replication.primary`) bootstraps first; its key comes from
/// `ECSDB_REPLICA_KEY`.
#[allow(clippy::needless_pass_by_value)] // kept by value: callers hand their config over
pub fn start(config: ServerConfig, admin_password: &str) -> Result<Running, String> {
    start_with(&config, admin_password, None)
}

/// [`start`] with the replica key given.
pub fn start_with(
    config: &ServerConfig,
    admin_password: &str,
    replica_key_opt: Option<&str>,
) -> Result<Running, String> {
    config.validate().map_err(|e| e.to_string())?;
    let key = replica_key(replica_key_opt);
    prepare_replica(config, key.as_deref(), None, &|| false)?;
    let listener =
        std::net::TcpListener::bind(&config.server.bind).map_err(|e| format!("bind {}: {e}", config.server.bind))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let streams = stream_listener(config)?;
    let (node, _) = open_node(config, addr, key, Some(admin_password.to_string()))?;
    let Node { db, state, backups, threads } = node;
    let replication = state.replication.clone();
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
                    // Stored even with no receiver: background threads read it.
                    state.stopping.send_replace(true);
                })
                .await;
            });
            for t in threads {
                let _ = t.join();
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(Running { addr, db, replication, backups, stop: Some(tx), thread: Some(thread) })
}

/// Run the server until SIGTERM/SIGINT; then drain, close the database and
/// return. A replica that must bootstrap again stops serving, sets its
/// data aside, bootstraps and serves again on the same address.
pub fn run(opts: &ServeOptions) -> Result<(), String> {
    let c = load_config(opts)?;
    init_logging(&c);
    let key = replica_key(opts.replica_key.as_deref());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    {
        // Before anyone is told where we listen.
        let _g = rt.enter();
        let sig = shutdown_signal();
        rt.spawn(async move {
            sig.await;
            let _ = stop_tx.send(true);
        });
    }
    let stopping = {
        let rx = stop_rx.clone();
        move || *rx.borrow()
    };
    let listener = std::net::TcpListener::bind(&c.server.bind).map_err(|e| format!("bind {}: {e}", c.server.bind))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut again: Option<String> = None;
    let mut first = true;
    loop {
        {
            // While a replica bootstraps, its port answers that it does.
            let _answering = match &c.db.replication.primary {
                Some(p) => Some(replication::bootstrapping::answer(&rt, &listener, p, conn_limits(&c))?),
                None => None,
            };
            match prepare_replica(&c, key.as_deref(), again.as_deref(), &stopping) {
                // Asked to stop mid-bootstrap: a clean stop (nothing was
                // installed; the next start bootstraps again).
                Err(e) if stopping() => {
                    tracing::info!(reason = %e, "stopped while bootstrapping");
                    return Ok(());
                }
                r => r?,
            }
        }
        if stopping() {
            return Ok(());
        }
        let (node, created) = open_node(&c, addr, key.clone(), std::env::var("ECSDB_ADMIN_PASSWORD").ok())?;
        if let Some(pw) = created {
            say!("created user `admin` with password: {pw}");
            say!(
                "(shown once; set ECSDB_ADMIN_PASSWORD to choose it, change it with POST /v1/admin/users/admin/password)"
            );
        }
        let state = node.state.clone();
        let l = listener.try_clone().map_err(|e| e.to_string())?;
        let mut stop_rx = stop_rx.clone();
        let mut restart = state.replication.restart.subscribe();
        let announce = first;
        first = false;
        rt.block_on(async {
            let listener = tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())?;
            if announce {
                announce_start(&c, &state, addr).await?;
            }
            let app = app::router(state.clone());
            let st = state.clone();
            serve::serve(listener, app, conn_limits(&c), async move {
                tokio::select! {
                    _ = stop_rx.wait_for(|s| *s) => {}
                    _ = restart.wait_for(|s| *s) => {}
                }
                // Stream connections close now rather than at the drain's end.
                st.stopping.send_replace(true);
            })
            .await;
            Ok::<(), String>(())
        })?;
        drop(state);
        // Requests are drained: close (every commit durable), then ship the
        // last commits to the archive.
        match node.close()? {
            Some(why) if !stopping() => again = Some(why),
            _ => break,
        }
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The start-up lines (and the listeners only the first run opens).
async fn announce_start(c: &ServerConfig, state: &Arc<app::AppState>, addr: SocketAddr) -> Result<(), String> {
    let db = &state.db;
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
        let metrics_app = axum::Router::new().route("/metrics", axum::routing::get(handlers::metrics)).with_state(st);
        tokio::spawn(async move {
            let _ = axum::serve(ml, metrics_app).await;
        });
    }
    say!("ecsdb {} listening on http://{addr}", env!("CARGO_PKG_VERSION"));
    if let Some(l) = stream_listener(c)? {
        say!("streams also on ws://{}/v1/stream ([replication] bind)", l.local_addr().map_err(|e| e.to_string())?);
        spawn_stream_listener(l, state)?;
    }
    say!("data directory: {}", c.db.database.data_dir.display());
    say!(
        "schema: {} v{} ({} tables)",
        schema.name,
        schema.version,
        schema.tables.iter().filter(|t| !t.name.starts_with('_')).count()
    );
    say!("durability: {durability}");
    let r = state.replication.snapshot_state();
    match r.role {
        replication::Role::Primary => say!(
            "replication: primary, epoch {}{}",
            r.epoch,
            if c.db.replication.sync_replicas > 0 {
                format!(" ({} synchronous replica(s) required)", c.db.replication.sync_replicas)
            } else {
                String::new()
            }
        ),
        replication::Role::Replica => {
            say!("replication: replica of {} (epoch {})", r.primary.as_deref().unwrap_or("?"), r.epoch);
        }
        replication::Role::Fenced => say!(
            "replication: FENCED former primary (epoch {}); writes refused, current primary {}",
            r.epoch,
            r.primary.as_deref().unwrap_or("unknown")
        ),
    }
    if let Some(b) = &state.backups {
        say!(
            "backups: {}{}",
            b.target_url(),
            if b.archives() {
                " (commit log archived continuously)"
            } else if !b.is_active() {
                " (the primary archives and takes scheduled backups; a promoted replica takes over)"
            } else {
                ""
            }
        );
    }
    let _ = std::io::stdout().flush();
    Ok(())
}
