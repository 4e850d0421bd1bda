//! Server configuration: the `[server] [auth] [rate_limit] [cors] [metrics]
//! [logging]` sections of `config.toml`; every other section is the
//! database's (`DatabaseConfig`). Unknown keys anywhere are errors naming
//! them. Environment variables override the file.

use std::path::Path;

use ecsdb::DatabaseConfig;
use serde::Deserialize;

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address to listen on.
    pub bind: String,
    /// Requests served at once; more wait (`/health` and `/metrics` are
    /// never held back by it).
    pub max_connections: usize,
    /// Open connections one client IP may hold; more are closed at once.
    pub max_connections_per_ip: usize,
    /// A connection must send a request's headers within this (slow or
    /// stalled clients are cut off).
    pub header_timeout_ms: u64,
    /// A request taking longer gets 408.
    pub request_timeout_ms: u64,
    /// Larger request bodies get 413.
    pub body_limit_bytes: usize,
    /// A query running longer is cancelled (503 `query_timeout`, nothing
    /// changed); it never holds its read view past this.
    pub query_timeout_ms: u64,
    /// A query whose result (as JSON) would be larger fails with 400
    /// `result_too_large`: ask for fewer rows or fields.
    pub max_result_bytes: usize,
    /// Queries running at once; more wait (at most `query_timeout_ms`, then
    /// 503 `busy`). Queries are CPU-bound: many more than the cores only
    /// slows every one of them, and everything else with them. 0 = four per
    /// CPU core.
    pub max_concurrent_queries: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            bind: "127.0.0.1:8080".into(),
            max_connections: 1000,
            max_connections_per_ip: 64,
            header_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            body_limit_bytes: 4 << 20,
            query_timeout_ms: 10_000,
            max_result_bytes: 32 << 20,
            max_concurrent_queries: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// HMAC secret for tokens; generated once and kept in the data
    /// directory (`jwt_secret`, 0600) when unset.
    pub jwt_secret: Option<String>,
    /// Token lifetime: seconds, or `30m`, `24h`, `7d`.
    pub jwt_expires_in: String,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection { jwt_secret: None, jwt_expires_in: "24h".into() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSection {
    /// Window length in seconds.
    pub window_secs: u64,
    /// Requests allowed per credential (user or API key) in one window;
    /// 0 = no limit. Sized for a database: a game server's traffic.
    pub max_requests: u32,
    /// Requests without valid credentials (logins, refused credentials)
    /// allowed per client IP in one window; 0 = no limit.
    pub max_unauthenticated: u32,
    /// Failed logins allowed per username and per client IP in one window;
    /// past it that name (from any IP) and that IP (for any name) are
    /// refused until the window ends. 0 = no limit.
    pub login_failures_max: u32,
}

impl Default for RateLimitSection {
    fn default() -> Self {
        RateLimitSection { window_secs: 60, max_requests: 60_000, max_unauthenticated: 600, login_failures_max: 10 }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsSection {
    /// Origins allowed to call the API from a browser (none by default).
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Serve `/metrics` on this separate address too (e.g. `0.0.0.0:9090`).
    pub bind: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSection {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a filter directive.
    pub level: String,
    /// `pretty` or `json`.
    pub format: String,
}

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection { level: "info".into(), format: "pretty".into() }
    }
}

/// The whole configuration of `ecsdb serve`.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    pub server: ServerSection,
    pub auth: AuthSection,
    pub rate_limit: RateLimitSection,
    pub cors: CorsSection,
    pub metrics: MetricsSection,
    pub logging: LoggingSection,
    /// `[backup]`: target, schedule, retention, continuous archiving.
    pub backup: ecsdb_backup::BackupSettings,
    /// `[storage]` and `[storage.s3]`: where a bare backup target lives.
    pub storage: ecsdb_backup::StorageSettings,
    pub db: DatabaseConfig,
}

const SERVER_SECTIONS: &[&str] = &["server", "auth", "rate_limit", "cors", "metrics", "logging", "backup", "storage"];

fn section<T: for<'de> Deserialize<'de> + Default>(doc: &mut toml::Table, name: &str) -> Result<T, ConfigError> {
    match doc.remove(name) {
        None => Ok(T::default()),
        Some(v) => {
            v.try_into().map_err(|e: toml::de::Error| ConfigError(format!("[{name}]: {}", e.to_string().trim_end())))
        }
    }
}

impl ServerConfig {
    /// Parse a `config.toml` text.
    pub fn from_toml_str(text: &str) -> Result<ServerConfig, ConfigError> {
        let mut doc: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError(e.to_string().trim_end().to_string()))?;
        let mut c = ServerConfig {
            server: section(&mut doc, "server")?,
            auth: section(&mut doc, "auth")?,
            rate_limit: section(&mut doc, "rate_limit")?,
            cors: section(&mut doc, "cors")?,
            metrics: section(&mut doc, "metrics")?,
            logging: section(&mut doc, "logging")?,
            backup: section(&mut doc, "backup")?,
            storage: section(&mut doc, "storage")?,
            db: DatabaseConfig::default(),
        };
        debug_assert!(SERVER_SECTIONS.iter().all(|s| !doc.contains_key(*s)));
        let rest = toml::to_string(&doc).map_err(|e| ConfigError(e.to_string()))?;
        c.db = DatabaseConfig::from_toml_str(&rest).map_err(|e| match e {
            // Said once, by ConfigError's own prefix.
            ecsdb::DbError::Config(m) => ConfigError(m),
            other => ConfigError(other.to_string()),
        })?;
        c.validate()?;
        Ok(c)
    }

    pub fn from_file(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        Self::from_toml_str(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    /// Apply environment overrides (pass `std::env::vars()`): the database's
    /// `ECSDB_*` variables, plus `ECSDB_BIND`, `ECSDB_LOG_LEVEL` (or
    /// `RUST_LOG`), `ECSDB_LOG_FORMAT`, `ECSDB_JWT_SECRET` (or `JWT_SECRET`),
    /// `JWT_EXPIRES_IN`, `RATE_LIMIT_WINDOW`, `RATE_LIMIT_MAX`,
    /// `ECSDB_METRICS_BIND`, `ECSDB_ALLOWED_ORIGINS` (comma-separated).
    pub fn apply_env<I: IntoIterator<Item = (String, String)>>(&mut self, vars: I) -> Result<(), ConfigError> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        for (k, v) in &vars {
            let num = |what: &str| ConfigError(format!("{k}={v}: expected {what}"));
            match k.as_str() {
                "ECSDB_BIND" => self.server.bind.clone_from(v),
                "ECSDB_LOG_LEVEL" | "RUST_LOG" => self.logging.level.clone_from(v),
                "ECSDB_LOG_FORMAT" => self.logging.format.clone_from(v),
                "ECSDB_JWT_SECRET" | "JWT_SECRET" => self.auth.jwt_secret = Some(v.clone()),
                "JWT_EXPIRES_IN" => self.auth.jwt_expires_in.clone_from(v),
                "RATE_LIMIT_WINDOW" => self.rate_limit.window_secs = v.parse().map_err(|_| num("seconds"))?,
                "RATE_LIMIT_MAX" => self.rate_limit.max_requests = v.parse().map_err(|_| num("a whole number"))?,
                "ECSDB_METRICS_BIND" => self.metrics.bind = Some(v.clone()),
                "ECSDB_BACKUP_TARGET" => self.backup.target = Some(v.clone()).filter(|t| !t.is_empty()),
                "ECSDB_ALLOWED_ORIGINS" => {
                    self.cors.allowed_origins =
                        v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
                }
                _ => {}
            }
        }
        self.db.apply_env(vars).map_err(|e| match e {
            ecsdb::DbError::Config(m) => ConfigError(m),
            other => ConfigError(other.to_string()),
        })?;
        self.validate()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        if self.server.bind.parse::<std::net::SocketAddr>().is_err() {
            p.push(format!("server.bind `{}` is not an address like 127.0.0.1:8080", self.server.bind));
        }
        if parse_duration_secs(&self.auth.jwt_expires_in).is_none() {
            p.push(format!(
                "auth.jwt_expires_in `{}` is not a duration (e.g. 3600, 30m, 24h, 7d)",
                self.auth.jwt_expires_in
            ));
        }
        if self.auth.jwt_secret.as_ref().is_some_and(|s| {
            let mut distinct: Vec<char> = s.trim().chars().collect();
            distinct.sort_unstable();
            distinct.dedup();
            s.trim().len() < 32 || distinct.len() < 8
        }) {
            p.push("auth.jwt_secret must be at least 32 characters (not counting spaces at its ends), with at least 8 different ones".into());
        }
        if self.rate_limit.window_secs == 0 || self.rate_limit.window_secs > 86_400 {
            p.push(format!(
                "rate_limit.window_secs = {} is out of range: it must be between 1 and 86400",
                self.rate_limit.window_secs
            ));
        }
        if !["pretty", "json"].contains(&self.logging.format.as_str()) {
            p.push(format!("logging.format must be \"pretty\" or \"json\", not \"{}\"", self.logging.format));
        }
        let s = &self.server;
        for (key, v, lo, hi) in [
            ("server.max_connections", s.max_connections as u64, 1, 1_000_000),
            ("server.max_connections_per_ip", s.max_connections_per_ip as u64, 1, 1_000_000),
            ("server.header_timeout_ms", s.header_timeout_ms, 1, 3_600_000),
            ("server.request_timeout_ms", s.request_timeout_ms, 1, 3_600_000),
            ("server.query_timeout_ms", s.query_timeout_ms, 1, 3_600_000),
            ("server.body_limit_bytes", s.body_limit_bytes as u64, 1, 1 << 30),
            ("server.max_result_bytes", s.max_result_bytes as u64, 1024, 1 << 32),
            ("server.max_concurrent_queries", s.max_concurrent_queries as u64, 0, 100_000),
        ] {
            if !(lo..=hi).contains(&v) {
                p.push(format!("{key} = {v} is out of range: it must be between {lo} and {hi}"));
            }
        }
        if !valid_log_filter(&self.logging.level) {
            p.push(format!(
                "logging.level `{}` is not a log filter (error, warn, info, debug, trace, or directives like `ecsdb=debug`)",
                self.logging.level
            ));
        }
        if let Err(e) = self.backup.validate(&self.storage) {
            p.push(e.to_string());
        }
        if self.db.replication.bootstrap_from == "backup" && self.backup.target_url(&self.storage).is_none() {
            p.push(
                "replication.bootstrap_from = \"backup\" needs a backup target (backup.target or ECSDB_BACKUP_TARGET) to bootstrap from".into(),
            );
        }
        match self.db.validate() {
            Err(ecsdb::DbError::Config(m)) => p.push(m),
            Err(e) => p.push(e.to_string()),
            Ok(()) => {}
        }
        if let Some(primary) = &self.db.replication.primary
            && let Ok(bind) = self.server.bind.parse::<std::net::SocketAddr>()
        {
            use std::net::ToSocketAddrs;
            let host = primary.trim_start_matches("http://").trim_end_matches('/');
            let me = [Some(bind.to_string()), self.db.replication.advertise_url.clone()];
            // By name, or by address (`localhost` is 127.0.0.1; a node bound to
            // every address is any local address at its port).
            let resolves_to_me = bind.port() != 0
                && host.to_socket_addrs().is_ok_and(|mut addrs| {
                    addrs.any(|a| {
                        a.port() == bind.port()
                            && (a.ip() == bind.ip() || (bind.ip().is_unspecified() && a.ip().is_loopback()))
                    })
                });
            if resolves_to_me
                || me.iter().flatten().any(|m| m.trim_start_matches("http://").trim_end_matches('/') == host)
            {
                p.push(format!("replication.primary `{primary}` is this server itself (server.bind / advertise_url)"));
            }
        }
        p.dedup();
        if p.is_empty() { Ok(()) } else { Err(ConfigError(p.join("; "))) }
    }

    /// Token lifetime in seconds.
    pub fn token_ttl_secs(&self) -> u64 {
        parse_duration_secs(&self.auth.jwt_expires_in).unwrap_or(86_400)
    }
}

/// A log filter: comma-separated directives, each a level (`error`,
/// `warn`, `info`, `debug`, `trace`, `off`) or `target=level`, where a bare
/// target must be a module path (`ecsdb_server::app`) or one of ours
/// (`ecsdb…`). Anything else (`verbose`, an empty string) would silently
/// switch logging off, so it is refused.
pub fn valid_log_filter(s: &str) -> bool {
    const LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace", "off"];
    let level = |l: &str| LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    !s.trim().is_empty()
        && s.split(',').all(|d| {
            let d = d.trim();
            match d.rsplit_once('=') {
                Some((target, l)) => !target.trim().is_empty() && level(l),
                None => level(d) || d.contains("::") || d.starts_with("ecsdb"),
            }
        })
        && tracing_subscriber::EnvFilter::try_new(s).is_ok()
}

/// `3600`, `45s`, `30m`, `24h`, `7d` → seconds.
pub fn parse_duration_secs(s: &str) -> Option<u64> {
    // Ten years at most: longer lifetimes overflow token expiry times.
    ecsdb::config::parse_duration_secs(s, 10 * 365 * 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_split_and_unknown_keys_are_named() {
        let c = ServerConfig::from_toml_str(
            "[server]\nbind = \"0.0.0.0:9000\"\n[cors]\nallowed_origins = [\"https://a.example\"]\n[memory]\nmax_capacity_mb = 64\n",
        )
        .unwrap();
        assert_eq!(c.server.bind, "0.0.0.0:9000");
        assert_eq!(c.db.memory.max_capacity_mb, 64);
        let e = ServerConfig::from_toml_str("[server]\nport = 1\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `port`"), "{e}");
        let e = ServerConfig::from_toml_str("[memroy]\nx = 1\n").unwrap_err().to_string();
        assert!(e.contains("memroy"), "{e}");
        let e = ServerConfig::from_toml_str("[auth]\njwt_secret = \"short\"\n").unwrap_err().to_string();
        assert!(e.contains("at least 32"), "{e}");
    }

    #[test]
    fn env_overrides() {
        let mut c = ServerConfig::default();
        let env = [
            ("ECSDB_BIND", "127.0.0.1:1"),
            ("RATE_LIMIT_MAX", "5"),
            ("JWT_EXPIRES_IN", "30m"),
            ("ECSDB_DATA_DIR", "/d"),
        ];
        c.apply_env(env.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
        assert_eq!(c.server.bind, "127.0.0.1:1");
        assert_eq!(c.rate_limit.max_requests, 5);
        assert_eq!(c.token_ttl_secs(), 1800);
        assert_eq!(c.db.database.data_dir, std::path::PathBuf::from("/d"));
        assert!(c.apply_env([("RATE_LIMIT_WINDOW".to_string(), "x".to_string())]).is_err());
        assert_eq!(parse_duration_secs("7d"), Some(604_800));
        assert_eq!(parse_duration_secs("0"), None);
        assert_eq!(parse_duration_secs("99999999999999999d"), None);
        assert_eq!(parse_duration_secs("3651d"), None);
    }

    #[test]
    fn log_filters() {
        for ok in ["info", "WARN", "ecsdb=debug,info", "ecsdb_server::app=trace", "off", "ecsdb"] {
            assert!(valid_log_filter(ok), "{ok}");
        }
        for bad in ["verbose", "", " ", "info,", "info,verbose", "x=loud", "=info"] {
            assert!(!valid_log_filter(bad), "{bad}");
        }
    }

    #[test]
    fn nonsense_server_values_are_refused() {
        for (text, want) in [
            ("[logging]\nlevel = \"info,,=[\"\n", "logging.level"),
            ("[logging]\nlevel = \"verbose\"\n", "logging.level `verbose`"),
            ("[logging]\nlevel = \"\"\n", "logging.level"),
            ("[server]\nquery_timeout_ms = 0\n", "server.query_timeout_ms = 0"),
            ("[server]\nmax_result_bytes = 10\n", "server.max_result_bytes = 10"),
            ("[auth]\njwt_expires_in = \"99999999999999d\"\n", "auth.jwt_expires_in"),
        ] {
            let e = ServerConfig::from_toml_str(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
