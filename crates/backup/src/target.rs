//! Where backups and the archived log live: a local directory or an
//! S3-compatible bucket, both through `object_store`, behind one blocking
//! interface (the callers are a CLI, a scheduler thread and the archiver
//! thread; each target owns a small runtime for its requests).
//!
//! S3 requests are retried with exponential backoff (`[storage.s3]
//! max_retries`, `retry_timeout_secs`); large objects go up in parts. A
//! local target writes each object to a temporary file and renames it
//! (never a half-written object under its name), then makes it durable
//! (file and directory fsync) with owner-only permissions.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig, WriteMultipart};

use crate::config::StorageSettings;
use crate::error::{BackupError, Result, io};

/// One object on a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Key relative to the target's prefix (`backups/backup_1/manifest.json`).
    pub key: String,
    pub size: u64,
}

/// A backup target.
pub struct Target {
    url: String,
    store: Arc<dyn ObjectStore>,
    /// Key prefix inside the bucket (S3), without slashes at the ends.
    prefix: String,
    /// The directory of a local target.
    local: Option<PathBuf>,
    part_size: usize,
    rt: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed inside another
        // runtime's worker (the server's): let it go in the background.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn env_flag(name: &str) -> Option<bool> {
    std::env::var(name).ok().map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

impl Target {
    /// Open a target by URL: `s3://bucket[/prefix]`, `file:///dir`, or a
    /// directory path (created 0700 if missing).
    pub fn open(url: &str, storage: &StorageSettings) -> Result<Target> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ecsdb-target")
            .enable_all()
            .build()
            .map_err(|e| BackupError::Config(format!("cannot start the target's I/O runtime: {e}")))?;
        let part_mb = storage.s3.part_size_mb.unwrap_or(16).clamp(5, 5120);
        let part_size = (part_mb as usize) << 20;
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(BackupError::Config(format!("`{url}` names no bucket (s3://BUCKET/prefix)")));
            }
            let s3 = &storage.s3;
            let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some((id, secret)) = &s3.credentials {
                b = b.with_access_key_id(id).with_secret_access_key(secret);
            }
            let region = s3
                .region
                .clone()
                .or_else(|| std::env::var("AWS_REGION").ok())
                .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok());
            b = b.with_region(region.unwrap_or_else(|| "us-east-1".into()));
            let endpoint = s3.endpoint.clone().or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
            let http = s3.allow_http.or_else(|| env_flag("AWS_ALLOW_HTTP")).unwrap_or(false)
                || endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));
            if let Some(e) = endpoint {
                // MinIO and friends serve buckets under the path, not as
                // virtual hosts.
                b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
            }
            let retry_secs = s3.retry_timeout_secs.unwrap_or(60);
            let retry = RetryConfig {
                max_retries: s3.max_retries.unwrap_or(5),
                retry_timeout: Duration::from_secs(retry_secs),
                ..RetryConfig::default()
            };
            let request_secs = s3.request_timeout_secs.unwrap_or(30).min(retry_secs).max(1);
            let opts = ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(5.min(request_secs)))
                .with_timeout(Duration::from_secs(request_secs))
                .with_allow_http(http);
            let store = b
                .with_client_options(opts)
                .with_retry(retry)
                .build()
                .map_err(|e| BackupError::Config(format!("`{url}`: {e}")))?;
            return Ok(Target {
                url: url.to_string(),
                store: Arc::new(store),
                prefix: prefix.trim_matches('/').to_string(),
                local: None,
                part_size,
                rt: Some(rt),
            });
        }
        if url.contains("://") && !url.starts_with("file://") {
            return Err(BackupError::Config(format!(
                "`{url}`: unsupported target (use a directory, file:///dir or s3://bucket/prefix)"
            )));
        }
        let dir = PathBuf::from(url.strip_prefix("file://").unwrap_or(url));
        if dir.as_os_str().is_empty() {
            return Err(BackupError::Config("the backup target is empty".into()));
        }
        create_private_dir(&dir)?;
        let dir = dir.canonicalize().map_err(io(&dir))?;
        let store = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| BackupError::Config(format!("{}: {e}", dir.display())))?
            .with_automatic_cleanup(true);
        Ok(Target {
            url: url.to_string(),
            store: Arc::new(store),
            prefix: String::new(),
            local: Some(dir),
            part_size,
            rt: Some(rt),
        })
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this is a local directory.
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    fn path(&self, key: &str) -> ObjPath {
        if self.prefix.is_empty() { ObjPath::from(key) } else { ObjPath::from(format!("{}/{key}", self.prefix)) }
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        match &self.rt {
            Some(rt) => rt.block_on(f),
            None => unreachable!("the runtime lives as long as the target"),
        }
    }

    fn err(&self, key: &str, e: &object_store::Error) -> BackupError {
        match e {
            object_store::Error::NotFound { .. } => {
                BackupError::NotFound(format!("{key} is missing from {}", self.url))
            }
            other => BackupError::Target { target: self.url.clone(), message: format!("{key}: {other}") },
        }
    }

    /// Store `data` under `key` (atomically: readers see all or nothing).
    pub fn put(&self, key: &str, data: Vec<u8>) -> Result<()> {
        if let Some(dir) = &self.local {
            return put_local(&dir.join(key), &data);
        }
        let path = self.path(key);
        let len = data.len();
        self.block_on(async {
            if len > self.part_size {
                let upload = self.store.put_multipart(&path).await?;
                let mut w = WriteMultipart::new_with_chunk_size(upload, self.part_size);
                w.put(bytes::Bytes::from(data));
                w.finish().await.map(|_| ())
            } else {
                self.store.put(&path, data.into()).await.map(|_| ())
            }
        })
        .map_err(|e| self.err(key, &e))
    }

    /// The bytes under `key`.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path(key);
        let r = self.block_on(async { self.store.get(&path).await?.bytes().await });
        r.map(|b| b.to_vec()).map_err(|e| self.err(key, &e))
    }

    /// The bytes under `key`, or `None` when there is no such object.
    pub fn get_opt(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.get(key) {
            Ok(b) => Ok(Some(b)),
            Err(BackupError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object under `prefix` (a folder: `backups/`), sorted by key.
    pub fn list(&self, prefix: &str) -> Result<Vec<Object>> {
        let p = self.path(prefix.trim_end_matches('/'));
        let strip = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        let found: Vec<object_store::Result<object_store::ObjectMeta>> =
            self.block_on(async { self.store.list(Some(&p)).collect().await });
        let mut out = Vec::new();
        for m in found {
            match m {
                Ok(m) => {
                    let k = m.location.to_string();
                    let key = k.strip_prefix(&strip).unwrap_or(&k).to_string();
                    out.push(Object { key, size: m.size });
                }
                // A listing of a folder that does not exist yet is empty.
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err(prefix, &e)),
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Whether an object is stored under `key`.
    pub fn exists(&self, key: &str) -> Result<bool> {
        let path = self.path(key);
        match self.block_on(async { self.store.head(&path).await }) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(key, &e)),
        }
    }

    /// Remove `key` (absent is fine).
    pub fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        match self.block_on(async { self.store.delete(&path).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, &e)),
        }
    }

    /// The sub-folders of `prefix` in a local target's directory, including
    /// those holding only an interrupted upload's temporary file (which a
    /// listing of objects does not show); `None` for S3.
    pub fn local_folders(&self, prefix: &str) -> Option<Vec<String>> {
        let dir = self.local.as_ref()?.join(prefix.trim_end_matches('/'));
        let rd = std::fs::read_dir(dir).ok()?;
        Some(
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
        )
    }

    /// Remove every object under `prefix` (a folder), and for a local
    /// target the folder itself with any interrupted upload's leftovers.
    pub fn remove_folder(&self, prefix: &str) -> Result<()> {
        for o in self.list(prefix)? {
            self.delete(&o.key)?;
        }
        if let Some(dir) = &self.local {
            let d = dir.join(prefix.trim_end_matches('/'));
            match std::fs::remove_dir_all(&d) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&d)(e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Check the target answers (list its root).
    pub fn check(&self) -> Result<()> {
        self.list("backups/").map(|_| ())
    }
}

/// `mkdir -p` with 0700 directories.
pub(crate) fn create_private_dir(dir: &std::path::Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir).map_err(io(dir))
    }
}

/// A local object: folders 0700, the bytes into a 0600 temporary file
/// beside it (named with `#`, which listings skip, as an interrupted
/// write's leftovers are), fsynced, renamed into place, the folder fsynced.
fn put_local(path: &std::path::Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let parent = path.parent().unwrap_or(std::path::Path::new("."));
    create_private_dir(parent)?;
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().map(|x| x.to_string_lossy().into_owned()).unwrap_or_default();
    // Digits only after the `#`: what listings treat as a partial write.
    let tmp = parent.join(format!("{name}#{}{n:012}", std::process::id()));
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let written = o.open(&tmp).and_then(|mut f| {
        f.write_all(data)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(path)(e));
    }
    std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(io(parent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_put_get_list_delete() {
        let d = tempfile::tempdir().unwrap();
        let t = Target::open(d.path().join("t").to_str().unwrap(), &StorageSettings::default()).unwrap();
        t.put("backups/b1/manifest.json", b"{}".to_vec()).unwrap();
        t.put("backups/b1/snapshot.snap", vec![7u8; 100]).unwrap();
        t.put("archive/log/1.chunk", vec![1u8; 3]).unwrap();
        let keys: Vec<String> = t.list("backups/").unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, ["backups/b1/manifest.json", "backups/b1/snapshot.snap"]);
        assert_eq!(t.get("backups/b1/snapshot.snap").unwrap(), vec![7u8; 100]);
        assert!(matches!(t.get("nope"), Err(BackupError::NotFound(_))));
        assert_eq!(t.get_opt("nope").unwrap(), None);
        t.delete("backups/b1/manifest.json").unwrap();
        t.delete("backups/b1/manifest.json").unwrap();
        assert_eq!(t.list("backups/").unwrap().len(), 1);
        assert!(t.list("nothing/").unwrap().is_empty());
        // A write interrupted before its rename is not an object.
        std::fs::write(d.path().join("t/backups/b1/snapshot.snap#123000000000001"), b"partial").unwrap();
        assert_eq!(t.list("backups/").unwrap().len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = std::fs::metadata(d.path().join("t/backups/b1/snapshot.snap")).unwrap().permissions().mode();
            assert_eq!(m & 0o777, 0o600);
        }
    }

    #[test]
    fn bad_urls_are_refused() {
        let s = StorageSettings::default();
        assert!(Target::open("s3://", &s).unwrap_err().to_string().contains("bucket"));
        assert!(Target::open("ftp://x/y", &s).unwrap_err().to_string().contains("unsupported"));
        assert!(Target::open("", &s).is_err());
    }
}
