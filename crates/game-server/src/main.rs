//! `game-server`: the reference multiplayer game server on ecsdb.
//!
//! `game-server` (or `game-server serve`) runs the server; `game-server bots
//! --count N --url URL` runs N bot players against one.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::float_cmp))]
// Handlers return an axum `Response` as their error: it is what they answer.
#![allow(clippy::result_large_err)]

mod accounts;
mod assets;
mod bots;
mod config;
mod hashing;
mod http;
mod metrics;
mod model;
mod remote;
mod sim;
mod tick;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "game-server", version, about = "The multiplayer game server on ecsdb")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Run bot players against a server.
    Bots(bots::BotArgs),
}

#[derive(clap::Args, Debug, Default)]
struct ServeArgs {
    /// A `server.toml` (`[server]`, `[game]`, `[security]`, `[logging]`, `[database]`, `[cors]`, `[network]`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The data directory (env `ECSDB_DATA_DIR`, default `./game-data`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A `.env` file to read (default: `./.env` when present).
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// Listen address (env `SERVER_HOST`).
    #[arg(long)]
    host: Option<String>,
    /// HTTP port (env `SERVER_PORT`).
    #[arg(long)]
    port: Option<u16>,
    /// WebSocket port (env `SERVER_WS_PORT`; 0 = `/ws` on the HTTP port only).
    #[arg(long)]
    ws_port: Option<u16>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        None => serve(ServeArgs::default()),
        Some(Cmd::Serve(a)) => serve(a),
        Some(Cmd::Bots(a)) => bots::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("game-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cfg: &config::Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&cfg.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    if cfg.log_format == "json" {
        tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
}

/// The JWT secret: configured, or a random one kept in the data directory
/// (created 0600 on first start) so tokens survive restarts.
fn jwt_secret(cfg: &config::Config, dir: &Path) -> Result<Vec<u8>, String> {
    if let Some(s) = &cfg.jwt_secret {
        return Ok(s.as_bytes().to_vec());
    }
    let path = dir.join("jwt.secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => return Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => return Err(format!("{} is shorter than 32 bytes; delete it or set JWT_SECRET", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    let hex = ecsdb_server::auth::random_hex(32).map_err(|e| e.message)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    std::io::Write::write_all(&mut f, hex.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.sync_all().map_err(|e| format!("cannot sync {}: {e}", path.display()))?;
    Ok(hex.into_bytes())
}

fn serve(a: ServeArgs) -> Result<(), String> {
    let env = config::environment(a.env_file.as_deref()).map_err(|e| e.0)?;
    let mut cfg = config::Config::load(a.config.as_deref(), &env).map_err(|e| e.0)?;
    if let Some(d) = a.data_dir {
        cfg.data_dir = d;
    }
    if let Some(h) = a.host {
        cfg.host = h;
    }
    if let Some(p) = a.port {
        cfg.port = p;
    }
    if let Some(p) = a.ws_port {
        cfg.ws_port = p;
    }
    init_logging(&cfg);
    let dir = cfg.data_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    let secret = jwt_secret(&cfg, &dir)?;
    let (store, pusher) = match &cfg.ecsdb_url {
        None => {
            let path = dir.join("db");
            let db = model::open(&path).map_err(|e| format!("cannot open the database in {}: {e}", path.display()))?;
            (model::Store { db: Arc::new(db), remote: None }, None)
        }
        Some(url) => {
            let db = Arc::new(model::in_memory().map_err(|e| e.to_string())?);
            let r = remote::Remote::connect(url, cfg.ecsdb_api_key.as_deref().unwrap_or(""), &db.schema())?;
            let loaded = r.load_into(&db)?;
            tracing::info!(url = %url, entities = loaded, "loaded the game's state from the remote ecsdb");
            let pusher = r.attach(&db)?;
            (model::Store { db, remote: Some(r) }, Some(pusher))
        }
    };
    let db = store.db.clone();
    let scenery = model::seed_scenery(&store, cfg.world_size)?;
    let metrics = Arc::new(metrics::Metrics::new());
    let game = tick::Game::new(&store, cfg.clone(), metrics);
    let recovered = game.recover_bodies().map_err(|e| e.to_string())?;
    let accounts = Arc::new(accounts::Accounts::new(store.clone(), &secret, cfg.jwt_expires, cfg.world_size));
    let purged = accounts.purge_expired_sessions().map_err(|e| e.to_string())?;
    tracing::info!(
        data_dir = %dir.display(),
        sequence = db.version(),
        scenery_created = scenery,
        players_restored = recovered,
        sessions_expired = purged,
        "database open"
    );
    let state = Arc::new(http::AppState {
        game: game.clone(),
        accounts: accounts.clone(),
        limiter: http::RateLimiter::new(cfg.rate_limit_window, cfg.rate_limit_max),
        hashers: hashing::Hashers::new(2)?,
        ws_open: std::sync::atomic::AtomicUsize::new(0),
        admin_token: cfg.admin_token.clone(),
        started: Instant::now(),
    });
    let ticker = {
        let g = game.clone();
        std::thread::Builder::new().name("tick".into()).spawn(move || tick::run(&g)).map_err(|e| e.to_string())?
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    let served = rt.block_on(async {
        // Signal handlers before anyone is told where we listen.
        let stop = ecsdb_server::shutdown_signal();
        let main_addr = format!("{}:{}", cfg.host, cfg.port);
        let main = tokio::net::TcpListener::bind(&main_addr).await.map_err(|e| format!("cannot listen on {main_addr}: {e}"))?;
        let ws = if cfg.ws_port != 0 && cfg.ws_port != cfg.port {
            let addr = format!("{}:{}", cfg.host, cfg.ws_port);
            Some(tokio::net::TcpListener::bind(&addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?)
        } else {
            None
        };
        let shown = main.local_addr().map_or(main_addr.clone(), |a| a.to_string());
        tracing::info!(http = %shown, ws = ?ws.as_ref().and_then(|l| l.local_addr().ok()), tick_rate = cfg.tick_rate, max_players = cfg.max_players, "game server listening");
        println!("game-server listening on http://{shown} (open it in a browser)");
        if let Some(a) = ws.as_ref().and_then(|l| l.local_addr().ok()) {
            println!("websocket also on ws://{a}/ws");
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        // ecsdb's accept loop: a deadline for each request's headers (idle
        // and stalled connections are closed), a cap per client address,
        // graceful shutdown.
        let limits = ecsdb_server::serve::ConnLimits {
            header_timeout: cfg.header_timeout,
            per_ip: cfg.max_connections_per_ip,
            drain: std::time::Duration::from_secs(5),
        };
        let mut rx = stop_rx.clone();
        let app = http::router(state.clone());
        tasks.push(tokio::spawn(async move {
            ecsdb_server::serve::serve(main, app, limits, async move {
                let _ = rx.changed().await;
            })
            .await;
        }));
        if let Some(l) = ws {
            let app = http::ws_router(state.clone());
            let mut rx = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                ecsdb_server::serve::serve(l, app, limits, async move {
                    let _ = rx.changed().await;
                })
                .await;
            }));
        }
        stop.await;
        tracing::info!("stopping: closing connections, saving players' positions");
        game.close_all();
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
        Ok::<(), String>(())
    });
    game.stop();
    let _ = ticker.join();
    game.recover_bodies().map_err(|e| e.to_string())?;
    if let Some(r) = &store.remote {
        if let Err(e) = r.finish(std::time::Duration::from_secs(10)) {
            tracing::error!(error = %e, "not every commit reached the remote ecsdb before stopping");
        }
        if let Some(p) = pusher {
            let _ = p.join();
        }
    }
    db.close().map_err(|e| e.to_string())?;
    served
}
