//! `config.toml`: the sections and keys of the deployment guide, with
//! documented defaults. Unknown sections or keys, and values of the wrong
//! type, are errors that name them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::DbError;

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `"production"` enforces the durable settings (log on, fsync on every
    /// commit, snapshots on) and refuses a file that turns any of them off;
    /// `"development"` (or absent) applies no such check.
    pub profile: Option<String>,
    pub database: DatabaseSection,
    pub memory: MemorySection,
    pub transactions: TransactionsSection,
    pub replication: ReplicationSection,
    pub persistence: PersistenceSection,
}

/// `[database]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSection {
    /// Name of this database (world).
    pub name: String,
    /// Where the log, snapshots and lock file live.
    pub data_dir: PathBuf,
    /// The schema TOML; the bundled RPG example when unset.
    pub schema_file: Option<PathBuf>,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        DatabaseSection { name: "game_world".into(), data_dir: PathBuf::from("./data"), schema_file: None }
    }
}

/// `[memory]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySection {
    /// Capacity expected up front, in MiB: a sizing hint, never a limit.
    pub initial_capacity_mb: u64,
    /// Ceiling on accounted live data, in MiB; a commit that would exceed it
    /// fails. 0 disables the ceiling.
    pub max_capacity_mb: u64,
    /// Growth factor for buffers (a hint; must be > 1).
    pub buffer_growth_factor: f64,
}

impl Default for MemorySection {
    fn default() -> Self {
        MemorySection { initial_capacity_mb: 256, max_capacity_mb: 2048, buffer_growth_factor: 2.0 }
    }
}

/// `[transactions]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransactionsSection {
    /// Async mode: this many records waiting trigger an early background
    /// fsync. (Sync mode groups commits by itself: every commit that arrives
    /// while an fsync runs shares the next one.)
    pub batch_size: u32,
    /// Async mode: longest time between background fsyncs, in ms, i.e. the
    /// window of commits a power cut can lose.
    pub batch_timeout_ms: u64,
    /// Write the commit log. Off loses every commit since the last snapshot
    /// on a crash: for development only.
    pub wal_enabled: bool,
    /// Acknowledge a commit only once its log record is on stable storage.
    pub wal_sync_on_commit: bool,
    /// Largest change set one transaction may build, in MiB (at most 1024,
    /// the largest record the commit log reads back).
    pub max_transaction_mb: u64,
}

impl Default for TransactionsSection {
    fn default() -> Self {
        TransactionsSection {
            batch_size: 1000,
            batch_timeout_ms: 10,
            wal_enabled: true,
            wal_sync_on_commit: true,
            max_transaction_mb: 256,
        }
    }
}

/// `[replication]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationSection {
    pub enabled: bool,
    pub bind: String,
    pub max_clients: u32,
    /// `zstd` or `none`.
    pub delta_compression: String,
    /// zstd level for deltas.
    pub level: i32,
    /// Client addresses (`10.0.0.7`, `10.0.0.0/8`, `::1`) allowed to open
    /// streams; empty = any address.
    pub allowed_ips: Vec<String>,
    /// Subscriptions one stream connection may hold.
    pub max_subscriptions: u32,
    /// Memory all stream subscriptions together may hold (their rows and
    /// pending updates), MiB.
    pub max_stream_memory_mb: u64,
    /// Run as a read-only replica of this primary (`http://host:port`); the
    /// key comes from `ECSDB_REPLICA_KEY` or `--replica-key`.
    pub primary: Option<String>,
    /// This node's name in the primary's replica list (default: its
    /// advertised URL).
    pub replica_id: Option<String>,
    /// The URL other nodes reach this one at (default `http://` + the
    /// server's bind address).
    pub advertise_url: Option<String>,
    /// Synchronous replication: a commit is acknowledged only once this many
    /// replicas hold it durably (0 = asynchronous).
    pub sync_replicas: u32,
    /// How long a commit waits for `sync_replicas` acknowledgements, ms.
    pub sync_timeout_ms: u64,
    /// What a commit does when the wait times out: `"fail"` (an error; the
    /// commit is on this node but unconfirmed) or `"async"` (acknowledge it
    /// anyway, counted and logged).
    pub sync_fallback: String,
    /// `/health` degrades when a connected replica lags more than this, ms.
    pub max_lag_ms: u64,
    /// Most MiB of commit log kept for replicas that lag; beyond it the
    /// log is released and such a replica bootstraps again.
    pub max_retained_log_mb: u64,
    /// A replica that hears nothing from its primary for this long
    /// reconnects (the primary sends a heartbeat every fifth of it), ms.
    pub peer_timeout_ms: u64,
    /// Where a new replica's state comes from: `"auto"` (the backup target
    /// when one is configured and holds a usable state the primary's log
    /// continues, else the primary), `"primary"` (the primary's snapshot
    /// stream) or `"backup"` (the backup target only).
    pub bootstrap_from: String,
}

impl ReplicationSection {
    /// `allowed_ips` parsed (an address is a /32 or /128 network).
    pub fn allowed_networks(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.allowed_ips
            .iter()
            .map(|s| {
                let s = s.trim();
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("replication.allowed_ips: `{s}` is not an IP address or network (a.b.c.d/n)"))
            })
            .collect()
    }
}

impl Default for ReplicationSection {
    fn default() -> Self {
        ReplicationSection {
            enabled: false,
            bind: "127.0.0.1:9000".into(),
            max_clients: 1000,
            delta_compression: "zstd".into(),
            level: 3,
            allowed_ips: Vec::new(),
            max_subscriptions: 64,
            max_stream_memory_mb: 1024,
            primary: None,
            replica_id: None,
            advertise_url: None,
            sync_replicas: 0,
            sync_timeout_ms: 5_000,
            sync_fallback: "fail".into(),
            max_lag_ms: 5_000,
            max_retained_log_mb: 1024,
            peer_timeout_ms: 5_000,
            bootstrap_from: "auto".into(),
        }
    }
}

/// `[persistence]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersistenceSection {
    pub snapshots_enabled: bool,
    pub snapshot_interval_ops: u64,
    pub snapshot_interval_secs: u64,
    pub wal_archive_enabled: bool,
    /// Most MiB `wal_archive/` keeps (0 = no limit); the oldest archived
    /// segments not needed by a retained snapshot go first.
    pub wal_archive_max_mb: u64,
    pub compaction_enabled: bool,
    pub compaction_threads: u32,
    /// Alias of `[transactions] wal_sync_on_commit` (the guide shows it in
    /// both places); when set it wins.
    pub wal_sync_on_commit: Option<bool>,
    /// Log size that triggers a checkpoint, in MiB.
    pub max_wal_size_mb: u64,
    /// Size at which a log segment is closed and a new one started, in MiB.
    pub wal_segment_mb: u64,
    /// Snapshots kept on disk.
    pub snapshot_retention: u32,
    /// Take a snapshot when the database is closed cleanly.
    pub checkpoint_on_shutdown: bool,
    /// zstd level of snapshots (1 = fastest).
    pub snapshot_compression_level: i32,
}

impl Default for PersistenceSection {
    fn default() -> Self {
        PersistenceSection {
            snapshots_enabled: true,
            snapshot_interval_ops: 100_000,
            snapshot_interval_secs: 300,
            wal_archive_enabled: true,
            wal_archive_max_mb: 1024,
            compaction_enabled: true,
            compaction_threads: 1,
            wal_sync_on_commit: None,
            max_wal_size_mb: 512,
            wal_segment_mb: 64,
            snapshot_retention: 3,
            checkpoint_on_shutdown: true,
            snapshot_compression_level: 1,
        }
    }
}

impl DatabaseConfig {
    /// Parse a `config.toml` text.
    pub fn from_toml_str(text: &str) -> Result<DatabaseConfig, DbError> {
        let cfg: DatabaseConfig =
            toml::from_str(text).map_err(|e| DbError::Config(e.to_string().trim_end().to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read and parse a `config.toml` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<DatabaseConfig, DbError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| DbError::Io { path: path.to_path_buf(), source: e })?;
        Self::from_toml_str(&text).map_err(|e| match e {
            DbError::Config(m) => DbError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Check values that parse but make no sense.
    pub fn validate(&self) -> Result<(), DbError> {
        let mut problems = Vec::new();
        let mut range = |key: &str, v: u64, lo: u64, hi: u64| {
            if !(lo..=hi).contains(&v) {
                problems.push(format!("{key} = {v} is out of range: it must be between {lo} and {hi}"));
            }
        };
        let m = &self.memory;
        let t = &self.transactions;
        let p = &self.persistence;
        // Upper bounds are far above any sensible setting; they catch typos
        // and values that overflow byte counts.
        range("memory.initial_capacity_mb", m.initial_capacity_mb, 0, 1 << 24);
        range("memory.max_capacity_mb", m.max_capacity_mb, 0, 1 << 24);
        range("transactions.batch_size", u64::from(t.batch_size), 1, 1_000_000);
        range("transactions.batch_timeout_ms", t.batch_timeout_ms, 1, 60_000);
        range("transactions.max_transaction_mb", t.max_transaction_mb, 1, 1024);
        range("replication.max_clients", u64::from(self.replication.max_clients), 1, 1_000_000);
        range("replication.max_subscriptions", u64::from(self.replication.max_subscriptions), 1, 10_000);
        range("replication.max_stream_memory_mb", self.replication.max_stream_memory_mb, 1, 1 << 24);
        range("replication.sync_replicas", u64::from(self.replication.sync_replicas), 0, 64);
        range("replication.sync_timeout_ms", self.replication.sync_timeout_ms, 1, 3_600_000);
        range("replication.max_lag_ms", self.replication.max_lag_ms, 1, 86_400_000);
        range("replication.max_retained_log_mb", self.replication.max_retained_log_mb, 1, 1 << 24);
        range("replication.peer_timeout_ms", self.replication.peer_timeout_ms, 100, 3_600_000);
        range("persistence.snapshot_interval_secs", p.snapshot_interval_secs, 1, 31_536_000);
        range("persistence.max_wal_size_mb", p.max_wal_size_mb, 1, 1 << 24);
        range("persistence.wal_archive_max_mb", p.wal_archive_max_mb, 0, 1 << 24);
        range("persistence.wal_segment_mb", p.wal_segment_mb, 1, 4096);
        range("persistence.snapshot_retention", u64::from(p.snapshot_retention), 1, 1000);
        range("persistence.compaction_threads", u64::from(p.compaction_threads), 1, 256);
        if !(1..=22).contains(&p.snapshot_compression_level) {
            problems.push(format!(
                "persistence.snapshot_compression_level = {} is out of range: zstd levels are 1 to 22",
                p.snapshot_compression_level
            ));
        }
        if let Err(e) = self.replication.allowed_networks() {
            problems.push(e);
        }
        if !(1..=22).contains(&self.replication.level) {
            problems.push(format!(
                "replication.level = {} is out of range: zstd levels are 1 to 22",
                self.replication.level
            ));
        }
        let g = m.buffer_growth_factor;
        if !g.is_finite() || g <= 1.0 || g > 16.0 {
            problems.push(format!("memory.buffer_growth_factor = {g} must be a number greater than 1 and at most 16"));
        }
        if !["auto", "primary", "backup"].contains(&self.replication.bootstrap_from.as_str()) {
            problems.push(format!(
                "replication.bootstrap_from must be \"auto\", \"primary\" or \"backup\", not \"{}\"",
                self.replication.bootstrap_from
            ));
        }
        if !["fail", "async"].contains(&self.replication.sync_fallback.as_str()) {
            problems.push(format!(
                "replication.sync_fallback must be \"fail\" or \"async\", not \"{}\"",
                self.replication.sync_fallback
            ));
        }
        for (key, url) in [
            ("replication.primary", &self.replication.primary),
            ("replication.advertise_url", &self.replication.advertise_url),
        ] {
            if let Some(u) = url
                && !is_base_url(u)
            {
                problems.push(format!("{key} `{u}` is not a URL like http://host:port"));
            }
        }
        if let Some(id) = &self.replication.replica_id
            && (id.is_empty() || id.len() > 256 || id.chars().any(char::is_control))
        {
            problems.push("replication.replica_id must be 1 to 256 characters, without control characters".into());
        }
        if !["zstd", "none"].contains(&self.replication.delta_compression.as_str()) {
            problems.push(format!(
                "replication.delta_compression must be \"zstd\" or \"none\", not \"{}\"",
                self.replication.delta_compression
            ));
        }
        match self.profile.as_deref() {
            None | Some("development") => {}
            Some("production") => {
                if !self.transactions.wal_enabled {
                    problems.push("profile \"production\" requires transactions.wal_enabled = true".to_string());
                }
                if !self.wal_sync_on_commit() {
                    problems.push("profile \"production\" requires wal_sync_on_commit = true".to_string());
                }
                if !self.persistence.snapshots_enabled {
                    problems.push("profile \"production\" requires persistence.snapshots_enabled = true".to_string());
                }
            }
            Some(other) => problems.push(format!("profile must be \"production\" or \"development\", not \"{other}\"")),
        }
        if problems.is_empty() { Ok(()) } else { Err(DbError::Config(problems.join("; "))) }
    }

    /// The durable settings of the `production` profile.
    pub fn production() -> DatabaseConfig {
        DatabaseConfig { profile: Some("production".into()), ..DatabaseConfig::default() }
    }

    /// Apply `ECSDB_*` environment overrides (pass `std::env::vars()`; tests
    /// pass a map). Recognized: `ECSDB_DATA_DIR`, `ECSDB_SCHEMA_FILE`,
    /// `ECSDB_MAX_MEMORY_MB`, `ECSDB_WAL_ENABLED`, `ECSDB_WAL_SYNC`,
    /// `ECSDB_REPLICATION_ENABLED`, `ECSDB_REPLICATION_BIND`, `ECSDB_REPLICA_OF`,
    /// `ECSDB_PROFILE`.
    /// Other `ECSDB_*` variables belong to the server and are ignored here.
    pub fn apply_env<I: IntoIterator<Item = (String, String)>>(&mut self, vars: I) -> Result<(), DbError> {
        fn flag(k: &str, v: &str) -> Result<bool, DbError> {
            match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(DbError::Config(format!("{k}={v}: expected true or false"))),
            }
        }
        for (k, v) in vars {
            match k.as_str() {
                "ECSDB_DATA_DIR" => self.database.data_dir = PathBuf::from(v),
                "ECSDB_SCHEMA_FILE" => self.database.schema_file = Some(PathBuf::from(v)),
                "ECSDB_MAX_MEMORY_MB" => {
                    self.memory.max_capacity_mb =
                        v.parse().map_err(|_| DbError::Config(format!("{k}={v}: expected a whole number of MiB")))?;
                }
                "ECSDB_WAL_ENABLED" => self.transactions.wal_enabled = flag(&k, &v)?,
                "ECSDB_WAL_SYNC" => {
                    let on = flag(&k, &v)?;
                    self.transactions.wal_sync_on_commit = on;
                    self.persistence.wal_sync_on_commit = Some(on);
                }
                "ECSDB_REPLICATION_ENABLED" => self.replication.enabled = flag(&k, &v)?,
                "ECSDB_REPLICATION_BIND" => self.replication.bind = v,
                "ECSDB_REPLICA_OF" => self.replication.primary = Some(v).filter(|v| !v.is_empty()),
                "ECSDB_PROFILE" => self.profile = Some(v),
                _ => {}
            }
        }
        self.validate()
    }

    /// Effective `wal_sync_on_commit`.
    pub fn wal_sync_on_commit(&self) -> bool {
        self.persistence.wal_sync_on_commit.unwrap_or(self.transactions.wal_sync_on_commit)
    }

    /// Memory ceiling in bytes, if any.
    pub fn memory_limit_bytes(&self) -> Option<usize> {
        (self.memory.max_capacity_mb > 0)
            .then(|| usize::try_from(self.memory.max_capacity_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX))
    }
}

/// `http://host:port` (a trailing `/` allowed): where another node listens.
pub fn is_base_url(u: &str) -> bool {
    u.strip_prefix("http://").map(|r| r.strip_suffix('/').unwrap_or(r)).is_some_and(|host| {
        !host.is_empty() && !host.contains(['/', ' ', '?', '#', '@']) && host.chars().all(|c| c.is_ascii_graphic())
    })
}

/// `3600`, `45s`, `30m`, `24h`, `7d` → seconds (more than 0, at most
/// `max_secs`); `None` for anything else.
pub fn parse_duration_secs(s: &str, max_secs: u64) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last()? {
        (i, 's') => (&s[..i], 1),
        (i, 'm') => (&s[..i], 60),
        (i, 'h') => (&s[..i], 3600),
        (i, 'd') => (&s[..i], 86_400),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().filter(|&n| n > 0).and_then(|n| n.checked_mul(mul)).filter(|&s| s <= max_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guide_example_parses() {
        let text = r#"
[database]
name = "game_world"
data_dir = "/data/ecsdb"
schema_file = "/config/schema.toml"

[memory]
initial_capacity_mb = 256
max_capacity_mb = 2048
buffer_growth_factor = 2.0

[transactions]
batch_size = 1000
batch_timeout_ms = 10
wal_enabled = true
wal_sync_on_commit = false  # Async WAL for performance

[replication]
enabled = true
bind = "0.0.0.0:8080"
max_clients = 1000
delta_compression = "zstd"

[persistence]
snapshots_enabled = true
snapshot_interval_ops = 100000
snapshot_interval_secs = 300
wal_archive_enabled = true
compaction_enabled = true
"#;
        let c = DatabaseConfig::from_toml_str(text).unwrap();
        assert_eq!(c.database.data_dir, PathBuf::from("/data/ecsdb"));
        assert!(!c.wal_sync_on_commit());
        assert_eq!(c.memory_limit_bytes(), Some(2048 << 20));
    }

    #[test]
    fn env_overrides_and_production_profile() {
        let mut c = DatabaseConfig::default();
        let env = [
            ("ECSDB_DATA_DIR", "/x"),
            ("ECSDB_WAL_SYNC", "false"),
            ("ECSDB_MAX_MEMORY_MB", "64"),
            ("ECSDB_BIND", "0.0.0.0:1"),
        ];
        c.apply_env(env.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
        assert_eq!(c.database.data_dir, PathBuf::from("/x"));
        assert!(!c.wal_sync_on_commit());
        assert_eq!(c.memory.max_capacity_mb, 64);
        let e = c.apply_env([("ECSDB_WAL_SYNC".to_string(), "maybe".to_string())]).unwrap_err().to_string();
        assert!(e.contains("ECSDB_WAL_SYNC=maybe"), "{e}");
        let e = c.apply_env([("ECSDB_PROFILE".to_string(), "production".to_string())]).unwrap_err().to_string();
        assert!(e.contains("requires wal_sync_on_commit = true"), "{e}");
        let e = DatabaseConfig::from_toml_str("profile = \"production\"\n[transactions]\nwal_enabled = false\n")
            .unwrap_err();
        assert!(e.to_string().contains("requires transactions.wal_enabled = true"), "{e}");
        assert!(DatabaseConfig::production().validate().is_ok());
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_named() {
        let e = DatabaseConfig::from_toml_str("[memory]\nmax_capacity_gb = 3\n").unwrap_err().to_string();
        assert!(e.contains("max_capacity_gb"), "{e}");
        let e = DatabaseConfig::from_toml_str("[transactions]\nbatch_size = \"big\"\n").unwrap_err().to_string();
        assert!(e.contains("batch_size"), "{e}");
        let e = DatabaseConfig::from_toml_str("[caching]\non = true\n").unwrap_err().to_string();
        assert!(e.contains("caching"), "{e}");
        let e = DatabaseConfig::from_toml_str("[memory]\nbuffer_growth_factor = 0.5\n").unwrap_err().to_string();
        assert!(e.contains("buffer_growth_factor = 0.5 must be a number greater than 1"), "{e}");
    }

    #[test]
    fn nonsense_values_are_refused_with_their_key() {
        for (text, key) in [
            ("[memory]\nbuffer_growth_factor = nan\n", "memory.buffer_growth_factor = NaN"),
            ("[memory]\nbuffer_growth_factor = inf\n", "memory.buffer_growth_factor = inf"),
            ("[persistence]\nmax_wal_size_mb = 0\n", "persistence.max_wal_size_mb = 0 is out of range"),
            ("[persistence]\nsnapshot_compression_level = 1000\n", "zstd levels are 1 to 22"),
            ("[persistence]\nwal_segment_mb = 100000000\n", "persistence.wal_segment_mb = 100000000"),
            ("[transactions]\nmax_transaction_mb = 2048\n", "max_transaction_mb = 2048"),
            ("[transactions]\nbatch_timeout_ms = 0\n", "batch_timeout_ms = 0"),
            ("[persistence]\nsnapshot_interval_secs = 0\n", "snapshot_interval_secs = 0"),
        ] {
            let e = DatabaseConfig::from_toml_str(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        // Several problems are reported together.
        let e = DatabaseConfig::from_toml_str("[persistence]\nmax_wal_size_mb = 0\nsnapshot_retention = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_wal_size_mb") && e.contains("snapshot_retention"), "{e}");
    }
}
