//! Configuration: seed 001's environment names, read from the process
//! environment and a `.env` file, over an optional `server.toml`.
//!
//! Precedence, lowest first: built-in defaults, the TOML file (`--config`),
//! `.env` (only names not already set in the environment), the environment,
//! command-line flags. Every value is checked at start; a bad one stops the
//! server with a message naming the variable, never a silent default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The placeholder `.env.example` ships; refused outside development.
pub const EXAMPLE_SECRET: &str = "your_very_secure_random_string_here";

/// A configuration problem, naming the setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Everything the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    /// Second listener for `/ws` (seed 001's `SERVER_WS_PORT`); `0` or equal
    /// to `port` serves `/ws` on the main port only.
    pub ws_port: u16,
    /// `development` or `production` (`SERVER_ENV`).
    pub environment: String,
    /// Open connections (HTTP + WebSocket) the server accepts at once.
    pub max_connections: usize,
    pub tick_rate: u32,
    pub max_players: usize,
    pub world_size: f32,
    /// How far a player sees (world units).
    pub view_radius: f32,
    /// World updates each client may be sent, in bytes per second
    /// (`GAME_CLIENT_BUDGET`; 0 = unlimited). Over it, nearer entities are
    /// updated first and farther ones less often.
    pub client_budget: u64,
    /// `None`: a random secret kept in the data directory (`jwt.secret`).
    pub jwt_secret: Option<String>,
    pub jwt_expires: Duration,
    pub rate_limit_window: Duration,
    pub rate_limit_max: u32,
    pub log_level: String,
    /// `json` or `pretty`.
    pub log_format: String,
    pub data_dir: PathBuf,
    /// A remote `ecsdb serve` (`ECSDB_URL`) instead of the embedded database.
    pub ecsdb_url: Option<String>,
    /// Its API key (`ECSDB_API_KEY`; read and write permissions).
    pub ecsdb_api_key: Option<String>,
    pub cors: Cors,
    /// Largest WebSocket message a client may send (bytes).
    pub max_message_size: usize,
    /// WebSocket ping interval; a client silent for 3 intervals is dropped.
    pub ping_interval: Duration,
    /// Open HTTP connections one client address may hold
    /// (`SERVER_MAX_CONNECTIONS_PER_IP`).
    pub max_connections_per_ip: usize,
    /// A request's headers must arrive within this (`SERVER_HEADER_TIMEOUT`,
    /// seconds); idle connections are closed after it.
    pub header_timeout: Duration,
    /// `GAME_ADMIN_TOKEN`: turns the admin routes on (16+ bytes).
    pub admin_token: Option<String>,
}

#[derive(Debug, Clone, Default)]
#[allow(clippy::struct_field_names)] // seed 001's [cors] keys
pub struct Cors {
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    pub allowed_headers: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "0.0.0.0".into(),
            port: 8080,
            ws_port: 8081,
            environment: "development".into(),
            max_connections: 1000,
            tick_rate: 20,
            max_players: 50,
            world_size: 2000.0,
            view_radius: 400.0,
            client_budget: 0,
            jwt_secret: None,
            jwt_expires: Duration::from_hours(24),
            rate_limit_window: Duration::from_mins(1),
            rate_limit_max: 100,
            log_level: "info".into(),
            log_format: "json".into(),
            data_dir: PathBuf::from("./game-data"),
            ecsdb_url: None,
            ecsdb_api_key: None,
            cors: Cors {
                allowed_origins: Vec::new(),
                allowed_methods: vec!["GET".into(), "POST".into(), "OPTIONS".into()],
                allowed_headers: vec!["Content-Type".into(), "Authorization".into()],
            },
            max_message_size: 8192,
            ping_interval: Duration::from_secs(30),
            max_connections_per_ip: 256,
            header_timeout: Duration::from_secs(10),
            admin_token: None,
        }
    }
}

/// `server.toml` as written (every section optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: FileServer,
    #[serde(default)]
    game: FileGame,
    #[serde(default)]
    security: FileSecurity,
    #[serde(default)]
    logging: FileLogging,
    #[serde(default)]
    database: FileDatabase,
    #[serde(default)]
    cors: FileCors,
    #[serde(default)]
    network: FileNetwork,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    host: Option<String>,
    port: Option<u16>,
    ws_port: Option<u16>,
    environment: Option<String>,
    max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGame {
    tick_rate: Option<u32>,
    max_players: Option<usize>,
    world_size: Option<f32>,
    view_radius: Option<f32>,
    client_budget: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSecurity {
    jwt_secret: Option<String>,
    /// `"24h"` or a number of seconds.
    jwt_expires_in: Option<toml::Value>,
    rate_limit_window: Option<u64>,
    rate_limit_max: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLogging {
    level: Option<String>,
    format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDatabase {
    data_dir: Option<PathBuf>,
    url: Option<String>,
    api_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(clippy::struct_field_names)]
struct FileCors {
    allowed_origins: Option<Vec<String>>,
    allowed_methods: Option<Vec<String>>,
    allowed_headers: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNetwork {
    max_message_size: Option<usize>,
    ping_interval: Option<u64>,
}

/// Read a `.env` file: `NAME=value` lines, `#` comments, optional quotes and
/// `export `. Errors name the line.
pub fn parse_dotenv(text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(ConfigError(format!(".env line {}: expected NAME=value", i + 1)));
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError(format!(".env line {}: `{k}` is not a variable name", i + 1)));
        }
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
        {
            &v[1..v.len() - 1]
        } else {
            // An unquoted value ends at ` #` (a trailing comment).
            v.split(" #").next().unwrap_or(v).trim_end()
        };
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// `24h`, `30m`, `45s`, `7d` or plain seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

fn list(v: &str) -> Vec<String> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

impl Config {
    /// Build from `file` (if any) and `env` (the process environment merged
    /// with `.env`).
    pub fn load(file: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
            let f: FileConfig = toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
            c.apply_file(f)?;
        }
        c.apply_env(env)?;
        c.check()?;
        Ok(c)
    }

    fn apply_file(&mut self, f: FileConfig) -> Result<(), ConfigError> {
        let s = f.server;
        set(&mut self.host, s.host);
        set(&mut self.port, s.port);
        set(&mut self.ws_port, s.ws_port);
        set(&mut self.environment, s.environment);
        set(&mut self.max_connections, s.max_connections);
        set(&mut self.tick_rate, f.game.tick_rate);
        set(&mut self.max_players, f.game.max_players);
        set(&mut self.world_size, f.game.world_size);
        set(&mut self.view_radius, f.game.view_radius);
        set(&mut self.client_budget, f.game.client_budget);
        if let Some(v) = f.security.jwt_secret {
            self.jwt_secret = Some(v);
        }
        if let Some(v) = f.security.jwt_expires_in {
            let v = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                other => other.to_string(),
            };
            self.jwt_expires = parse_duration(&v).ok_or_else(|| {
                ConfigError(format!("[security] jwt_expires_in = {v:?}: expected e.g. 24h, 30m, 3600"))
            })?;
        }
        if let Some(v) = f.security.rate_limit_window {
            self.rate_limit_window = Duration::from_secs(v);
        }
        set(&mut self.rate_limit_max, f.security.rate_limit_max);
        set(&mut self.log_level, f.logging.level);
        set(&mut self.log_format, f.logging.format);
        set(&mut self.data_dir, f.database.data_dir);
        if f.database.url.is_some() {
            self.ecsdb_url = f.database.url;
        }
        if f.database.api_key.is_some() {
            self.ecsdb_api_key = f.database.api_key;
        }
        set(&mut self.cors.allowed_origins, f.cors.allowed_origins);
        set(&mut self.cors.allowed_methods, f.cors.allowed_methods);
        set(&mut self.cors.allowed_headers, f.cors.allowed_headers);
        set(&mut self.max_message_size, f.network.max_message_size);
        if let Some(v) = f.network.ping_interval {
            self.ping_interval = Duration::from_secs(v);
        }
        Ok(())
    }

    fn apply_env(&mut self, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        fn num<T: std::str::FromStr>(env: &BTreeMap<String, String>, k: &str, into: &mut T) -> Result<(), ConfigError> {
            if let Some(v) = env.get(k) {
                *into = v.trim().parse().map_err(|_| ConfigError(format!("{k}={v:?} is not a valid number")))?;
            }
            Ok(())
        }
        let text = |k: &str, into: &mut String| {
            if let Some(v) = env.get(k) {
                into.clone_from(v);
            }
        };
        text("SERVER_HOST", &mut self.host);
        num(env, "SERVER_PORT", &mut self.port)?;
        num(env, "SERVER_WS_PORT", &mut self.ws_port)?;
        text("SERVER_ENV", &mut self.environment);
        num(env, "SERVER_MAX_CONNECTIONS", &mut self.max_connections)?;
        num(env, "SERVER_MAX_CONNECTIONS_PER_IP", &mut self.max_connections_per_ip)?;
        let mut header = self.header_timeout.as_secs();
        num(env, "SERVER_HEADER_TIMEOUT", &mut header)?;
        self.header_timeout = Duration::from_secs(header);
        self.admin_token = env.get("GAME_ADMIN_TOKEN").filter(|t| !t.is_empty()).cloned();
        num(env, "GAME_TICK_RATE", &mut self.tick_rate)?;
        num(env, "GAME_MAX_PLAYERS", &mut self.max_players)?;
        num(env, "GAME_WORLD_SIZE", &mut self.world_size)?;
        num(env, "GAME_VIEW_RADIUS", &mut self.view_radius)?;
        num(env, "GAME_CLIENT_BUDGET", &mut self.client_budget)?;
        if let Some(v) = env.get("JWT_SECRET") {
            self.jwt_secret = Some(v.clone());
        }
        if let Some(v) = env.get("JWT_EXPIRES_IN") {
            self.jwt_expires = parse_duration(v)
                .ok_or_else(|| ConfigError(format!("JWT_EXPIRES_IN={v:?}: expected e.g. 24h, 30m, 3600")))?;
        }
        let mut window = self.rate_limit_window.as_secs();
        num(env, "RATE_LIMIT_WINDOW", &mut window)?;
        self.rate_limit_window = Duration::from_secs(window);
        num(env, "RATE_LIMIT_MAX", &mut self.rate_limit_max)?;
        text("LOG_LEVEL", &mut self.log_level);
        text("LOG_FORMAT", &mut self.log_format);
        if let Some(v) = env.get("ECSDB_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env.get("ECSDB_URL").filter(|v| !v.trim().is_empty()) {
            self.ecsdb_url = Some(v.clone());
        }
        if let Some(v) = env.get("ECSDB_API_KEY").filter(|v| !v.trim().is_empty()) {
            self.ecsdb_api_key = Some(v.clone());
        }
        if let Some(v) = env.get("CORS_ALLOWED_ORIGINS") {
            self.cors.allowed_origins = list(v);
        }
        if let Some(v) = env.get("CORS_ALLOWED_METHODS") {
            self.cors.allowed_methods = list(v);
        }
        if let Some(v) = env.get("CORS_ALLOWED_HEADERS") {
            self.cors.allowed_headers = list(v);
        }
        num(env, "NETWORK_MAX_MESSAGE_SIZE", &mut self.max_message_size)?;
        Ok(())
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        if !(1..=120).contains(&self.tick_rate) {
            return bad(format!("GAME_TICK_RATE ([game] tick_rate) = {} must be 1..=120", self.tick_rate));
        }
        if self.max_players == 0 || self.max_players > 100_000 {
            return bad(format!("GAME_MAX_PLAYERS ([game] max_players) = {} must be 1..=100000", self.max_players));
        }
        if !(self.world_size.is_finite() && (100.0..=1_000_000.0).contains(&self.world_size)) {
            return bad(format!("GAME_WORLD_SIZE ([game] world_size) = {} must be 100..=1000000", self.world_size));
        }
        if !(self.view_radius.is_finite() && (50.0..=100_000.0).contains(&self.view_radius)) {
            return bad(format!("GAME_VIEW_RADIUS ([game] view_radius) = {} must be 50..=100000", self.view_radius));
        }
        if self.client_budget != 0 && self.client_budget < 1024 {
            return bad(format!(
                "GAME_CLIENT_BUDGET ([game] client_budget) = {} must be 0 (unlimited) or at least 1024 bytes per second",
                self.client_budget
            ));
        }
        if self.rate_limit_max == 0 || self.rate_limit_window.is_zero() {
            return bad("RATE_LIMIT_WINDOW and RATE_LIMIT_MAX ([security] rate_limit_window, rate_limit_max) must be at least 1".into());
        }
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return bad("SERVER_MAX_CONNECTIONS and SERVER_MAX_CONNECTIONS_PER_IP ([server] max_connections) must be at least 1".into());
        }
        if self.header_timeout.is_zero() || self.header_timeout > Duration::from_mins(10) {
            return bad("SERVER_HEADER_TIMEOUT must be 1..=600 seconds".into());
        }
        if self.ping_interval.is_zero() || self.ping_interval > Duration::from_hours(1) {
            return bad("[network] ping_interval must be 1..=3600 seconds".into());
        }
        if self.jwt_expires > Duration::from_hours(24 * 366) {
            return bad("JWT_EXPIRES_IN ([security] jwt_expires_in) must be at most 366d".into());
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err()
            || !self.log_level.split(',').all(|d| {
                let level = d.rsplit('=').next().unwrap_or("").trim().to_ascii_lowercase();
                matches!(level.as_str(), "trace" | "debug" | "info" | "warn" | "error" | "off")
            })
        {
            return bad(format!(
                "LOG_LEVEL ([logging] level) = {:?}: expected trace, debug, info, warn, error or off (or target=level directives)",
                self.log_level
            ));
        }
        for o in &self.cors.allowed_origins {
            if o != "*"
                && (axum::http::HeaderValue::from_str(o).is_err()
                    || !(o.starts_with("http://") || o.starts_with("https://")))
            {
                return bad(format!(
                    "CORS_ALLOWED_ORIGINS ([cors] allowed_origins): {o:?} is not an origin (https://host[:port], or *)"
                ));
            }
        }
        if self.admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            return bad("GAME_ADMIN_TOKEN must be at least 16 bytes (it guards bans)".into());
        }
        if !matches!(self.environment.as_str(), "development" | "production" | "staging" | "test") {
            return bad(format!(
                "SERVER_ENV={:?}: expected development, staging, production or test",
                self.environment
            ));
        }
        if !matches!(self.log_format.as_str(), "json" | "pretty" | "text") {
            return bad(format!("LOG_FORMAT={:?}: expected json or pretty", self.log_format));
        }
        if self.max_message_size < 256 {
            return bad("NETWORK_MAX_MESSAGE_SIZE must be at least 256".into());
        }
        if let Some(s) = &self.jwt_secret {
            if s == EXAMPLE_SECRET && self.environment != "development" {
                return bad("JWT_SECRET is the placeholder from .env.example; set a random secret of 32+ bytes".into());
            }
            if s.len() < 32 && s != EXAMPLE_SECRET {
                return bad(format!("JWT_SECRET is {} bytes; use at least 32", s.len()));
            }
        }
        if self.ecsdb_url.is_some() && self.ecsdb_api_key.is_none() {
            return bad("ECSDB_URL is set but ECSDB_API_KEY is not: the game server needs an API key with read and write permissions on that ecsdb".into());
        }
        Ok(())
    }

    pub fn tick_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.tick_rate))
    }
}

fn set<T>(into: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *into = v;
    }
}

/// The environment the server reads: the process environment, plus the
/// names from `.env` (in the working directory, or `path`) not already set.
pub fn environment(dotenv: Option<&Path>) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut env: BTreeMap<String, String> = std::env::vars().collect();
    let path = dotenv.map_or_else(|| PathBuf::from(".env"), Path::to_path_buf);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            for (k, v) in parse_dotenv(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))? {
                env.entry(k).or_insert(v);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && dotenv.is_none() => {}
        Err(e) => return Err(ConfigError(format!("cannot read {}: {e}", path.display()))),
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
    }

    #[test]
    fn dotenv_lines() {
        let m = parse_dotenv("# c\nA=1\nexport B = \"x y\"\nC=z # note\n\nD='q'\n").unwrap();
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "x y");
        assert_eq!(m["C"], "z");
        assert_eq!(m["D"], "q");
        assert!(parse_dotenv("nonsense").unwrap_err().0.contains("line 1"));
        assert!(parse_dotenv("A B=1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Some(Duration::from_hours(24)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_mins(30)));
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_hours(48)));
        assert_eq!(parse_duration("0"), None);
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("5y"), None);
    }

    #[test]
    fn env_over_defaults_and_errors_name_the_variable() {
        let c =
            Config::load(None, &env(&[("SERVER_PORT", "9000"), ("GAME_TICK_RATE", "30"), ("JWT_EXPIRES_IN", "1h")]))
                .unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!(c.tick_rate, 30);
        assert_eq!(c.jwt_expires, Duration::from_hours(1));
        let e = Config::load(None, &env(&[("GAME_MAX_PLAYERS", "many")])).unwrap_err();
        assert!(e.0.contains("GAME_MAX_PLAYERS"), "{e}");
        let e = Config::load(None, &env(&[("GAME_TICK_RATE", "0")])).unwrap_err();
        assert!(e.0.contains("GAME_TICK_RATE"), "{e}");
        let e = Config::load(None, &env(&[("JWT_SECRET", "short")])).unwrap_err();
        assert!(e.0.contains("32"), "{e}");
        let e = Config::load(None, &env(&[("JWT_SECRET", EXAMPLE_SECRET), ("SERVER_ENV", "production")])).unwrap_err();
        assert!(e.0.contains("placeholder"), "{e}");
        for (k, v) in [
            ("LOG_LEVEL", "loud"),
            ("CORS_ALLOWED_ORIGINS", "not an origin"),
            ("GAME_ADMIN_TOKEN", "short"),
            ("SERVER_MAX_CONNECTIONS", "0"),
            ("JWT_EXPIRES_IN", "99999d"),
            ("SERVER_HEADER_TIMEOUT", "0"),
        ] {
            let e = Config::load(None, &env(&[(k, v)])).unwrap_err();
            assert!(e.0.contains(k), "{k}={v}: {e}");
        }
        assert!(
            Config::load(None, &env(&[("CORS_ALLOWED_ORIGINS", "*"), ("LOG_LEVEL", "warn,game_server=debug")])).is_ok()
        );
    }

    #[test]
    fn toml_sections_and_env_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("server.toml");
        std::fs::write(
            &p,
            "[server]\nport = 7000\nws_port = 7001\n[game]\nmax_players = 5\n[cors]\nallowed_origins = [\"https://a.example\"]\n",
        )
        .unwrap();
        let c = Config::load(Some(&p), &env(&[("SERVER_PORT", "7100")])).unwrap();
        assert_eq!(c.port, 7100);
        assert_eq!(c.ws_port, 7001);
        assert_eq!(c.max_players, 5);
        assert_eq!(c.cors.allowed_origins, vec!["https://a.example".to_string()]);
        std::fs::write(&p, "[security]\njwt_expires_in = 3600\n").unwrap();
        assert_eq!(Config::load(Some(&p), &env(&[])).unwrap().jwt_expires, Duration::from_hours(1));
        std::fs::write(&p, "[network]\nping_interval = 0\n").unwrap();
        assert!(Config::load(Some(&p), &env(&[])).unwrap_err().0.contains("ping_interval"));
        std::fs::write(&p, "[game]\ntick_rate = 500\n").unwrap();
        assert!(Config::load(Some(&p), &env(&[])).unwrap_err().0.contains("[game] tick_rate"));
        std::fs::write(&p, "[server]\nprot = 1\n").unwrap();
        let e = Config::load(Some(&p), &env(&[])).unwrap_err();
        assert!(e.0.contains("prot"), "{e}");
    }
}
