//! The `[backup]` and `[storage]` sections of `config.toml`.
//!
//! ```toml
//! [backup]
//! target = "s3://game-backups/eu-1"   # or a directory: "/var/backups/ecsdb"
//! interval = "6h"                     # full backups by the server's scheduler ("0" = off)
//! retention = 7                       # full backups kept (with their incrementals)
//! max_age = "30d"                     # and none older than this (the newest full always stays)
//! compress = true
//! verify_after = true
//! archive = true                      # ship the commit log continuously
//! archive_interval_ms = 500
//! archive_rpo_ms = 1000               # /health degrades when unshipped commits are older
//! archive_merge_chunks = 120          # merge shipped chunks into one per log segment this often
//!
//! [storage]
//! backend = "s3"                      # "local" or "s3": where `target` lives when it is a bare name
//! [storage.s3]
//! bucket = "game-backups"
//! region = "us-east-1"
//! endpoint = "http://localhost:9000"  # MinIO, moto, ...; http:// allows plain HTTP
//! ```
//!
//! Credentials come from the standard AWS variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`), never from the file.

use serde::Deserialize;

use crate::error::{BackupError, Result};

/// `[storage]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// `local` or `s3`.
    pub backend: String,
    pub s3: S3Settings,
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings { backend: "local".into(), s3: S3Settings::default() }
    }
}

impl StorageSettings {
    /// These settings for a quick look that must not hold a start up for
    /// minutes (whose target is it, what does it hold): one retry, five
    /// seconds in all (the configured budget when shorter).
    #[must_use]
    pub fn quick(&self) -> StorageSettings {
        let mut s = self.clone();
        s.s3.max_retries = Some(self.s3.max_retries.unwrap_or(5).min(1));
        s.s3.retry_timeout_secs = Some(self.s3.retry_timeout_secs.unwrap_or(60).min(5));
        s.s3.request_timeout_secs = Some(self.s3.request_timeout_secs.unwrap_or(30).min(5));
        s
    }
}

/// `[storage.s3]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    pub bucket: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    /// Allow `http://` endpoints (implied by an `http://` endpoint).
    pub allow_http: Option<bool>,
    /// Retries of a failed request, with exponential backoff (default 5).
    pub max_retries: Option<usize>,
    /// Give up retrying a request after this many seconds (default 60).
    pub retry_timeout_secs: Option<u64>,
    /// Longest a single request may take (default 30; never more than
    /// `retry_timeout_secs`): a target that accepts connections but does
    /// not answer fails within it.
    pub request_timeout_secs: Option<u64>,
    /// Parts of this many MiB for large uploads (default 16, at least 5).
    pub part_size_mb: Option<u64>,
    /// Access key id and secret given by an embedding program (never read
    /// from a file: `config.toml` users set `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`).
    #[serde(skip)]
    pub credentials: Option<(String, String)>,
}

/// `[backup]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSettings {
    /// Where backups and the archived log go: a directory, `file:///dir`,
    /// `s3://bucket/prefix`, or (with `[storage] backend = "s3"`) a prefix
    /// in `[storage.s3] bucket`.
    pub target: Option<String>,
    /// Full backups taken by `ecsdb serve` this often (`6h`, `1d`; `0` = off).
    pub interval: String,
    /// Full backups kept on the target, each with its incrementals.
    pub retention: usize,
    /// Backups older than this are deleted (`0` = no age limit); the newest
    /// full backup always stays.
    pub max_age: String,
    /// zstd-compress snapshots and log chunks.
    pub compress: bool,
    /// zstd level (1 fastest … 19).
    pub compression_level: i32,
    /// Re-read and check every file of a backup once it is written.
    pub verify_after: bool,
    /// Ship the commit log to the target continuously (needs `target`).
    pub archive: bool,
    /// How often the open log segment is shipped.
    pub archive_interval_ms: u64,
    /// Recovery point objective: `/health` is degraded while a commit older
    /// than this is not on the target.
    pub archive_rpo_ms: u64,
    /// After this many shipped chunks, they are merged into one per log
    /// segment (fewer, larger objects to fetch at restore).
    pub archive_merge_chunks: usize,
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings {
            target: None,
            interval: "0".into(),
            retention: 7,
            max_age: "0".into(),
            compress: true,
            compression_level: 3,
            verify_after: true,
            archive: true,
            archive_interval_ms: 500,
            archive_rpo_ms: 1000,
            archive_merge_chunks: 120,
        }
    }
}

/// `3600`, `45s`, `30m`, `24h`, `7d`; `0` = off.
pub fn parse_interval(s: &str) -> Option<u64> {
    if s.trim() == "0" {
        return Some(0);
    }
    ecsdb::config::parse_duration_secs(s, 100 * 365 * 86_400)
}

impl BackupSettings {
    /// Every problem at once, each naming its key.
    pub fn validate(&self, storage: &StorageSettings) -> Result<()> {
        let mut p = Vec::new();
        if parse_interval(&self.interval).is_none() {
            p.push(format!("backup.interval `{}` is not a duration like 6h, 1d or 0", self.interval));
        }
        if parse_interval(&self.max_age).is_none() {
            p.push(format!("backup.max_age `{}` is not a duration like 30d or 0", self.max_age));
        }
        if self.retention == 0 {
            p.push("backup.retention = 0 would delete every backup; keep at least 1".into());
        }
        if !(1..=19).contains(&self.compression_level) {
            p.push(format!("backup.compression_level = {} is outside 1..=19", self.compression_level));
        }
        if !(10..=3_600_000).contains(&self.archive_interval_ms) {
            p.push(format!("backup.archive_interval_ms = {} is outside 10..=3600000", self.archive_interval_ms));
        }
        if !(2..=100_000).contains(&self.archive_merge_chunks) {
            p.push(format!("backup.archive_merge_chunks = {} is outside 2..=100000", self.archive_merge_chunks));
        }
        if self.archive_rpo_ms < self.archive_interval_ms {
            p.push(format!(
                "backup.archive_rpo_ms = {} is shorter than backup.archive_interval_ms = {}: it could never be met",
                self.archive_rpo_ms, self.archive_interval_ms
            ));
        }
        if parse_interval(&self.interval).is_some_and(|i| i > 0) && self.target.is_none() && storage.backend != "s3" {
            p.push("backup.interval is set but backup.target is not: where should backups go?".into());
        }
        if !matches!(storage.backend.as_str(), "local" | "s3") {
            p.push(format!("storage.backend `{}` is not \"local\" or \"s3\"", storage.backend));
        }
        if storage.backend == "s3" && storage.s3.bucket.as_deref().is_none_or(str::is_empty) {
            p.push("storage.backend = \"s3\" needs storage.s3.bucket".into());
        }
        for (k, v) in [
            ("storage.s3.retry_timeout_secs", storage.s3.retry_timeout_secs),
            ("storage.s3.request_timeout_secs", storage.s3.request_timeout_secs),
        ] {
            if v.is_some_and(|v| !(1..=3600).contains(&v)) {
                p.push(format!("{k} must be within 1..=3600"));
            }
        }
        if storage.s3.max_retries.is_some_and(|r| r > 100) {
            p.push("storage.s3.max_retries must be at most 100".into());
        }
        if storage.s3.part_size_mb.is_some_and(|m| !(5..=5120).contains(&m)) {
            p.push("storage.s3.part_size_mb must be within 5..=5120 (S3's part limits)".into());
        }
        if let Some(e) = &storage.s3.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            p.push(format!("storage.s3.endpoint `{e}` is not an http:// or https:// URL"));
        }
        if p.is_empty() { Ok(()) } else { Err(BackupError::Config(p.join("; "))) }
    }

    /// The target URL: `target`, else the `[storage.s3]` bucket when the
    /// backend is S3.
    pub fn target_url(&self, storage: &StorageSettings) -> Option<String> {
        match (&self.target, storage.backend.as_str(), &storage.s3.bucket) {
            (Some(t), "s3", Some(b)) if !t.contains("://") && !t.starts_with('/') && !t.starts_with('.') => {
                Some(format!("s3://{b}/{}", t.trim_matches('/')))
            }
            (Some(t), _, _) => Some(t.clone()),
            (None, "s3", Some(b)) => Some(format!("s3://{b}")),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        BackupSettings::default().validate(&StorageSettings::default()).unwrap();
        let b = BackupSettings {
            interval: "often".into(),
            retention: 0,
            archive_interval_ms: 5,
            archive_rpo_ms: 1,
            ..BackupSettings::default()
        };
        let s = StorageSettings { backend: "s4".into(), ..StorageSettings::default() };
        let e = b.validate(&s).unwrap_err().to_string();
        for k in
            ["backup.interval", "backup.retention", "backup.archive_interval_ms", "archive_rpo_ms", "storage.backend"]
        {
            assert!(e.contains(k), "{k} in {e}");
        }
        let s = StorageSettings { backend: "s3".into(), ..StorageSettings::default() };
        assert!(BackupSettings::default().validate(&s).unwrap_err().to_string().contains("bucket"));
    }

    #[test]
    fn target_urls() {
        let s3 = StorageSettings {
            backend: "s3".into(),
            s3: S3Settings { bucket: Some("b".into()), ..S3Settings::default() },
        };
        let mut b = BackupSettings::default();
        assert_eq!(b.target_url(&StorageSettings::default()), None);
        assert_eq!(b.target_url(&s3).as_deref(), Some("s3://b"));
        b.target = Some("prod/eu".into());
        assert_eq!(b.target_url(&s3).as_deref(), Some("s3://b/prod/eu"));
        b.target = Some("/var/backups".into());
        assert_eq!(b.target_url(&s3).as_deref(), Some("/var/backups"));
        assert_eq!(parse_interval("6h"), Some(21_600));
        assert_eq!(parse_interval("0"), Some(0));
        assert_eq!(parse_interval("x"), None);
    }
}
