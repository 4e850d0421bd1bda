//! The embeddable database: one schema, one world, a single writer and any
//! number of concurrent readers.
//!
//! Concurrency model: the world sits behind a reader-writer lock, and a
//! separate *writer mutex* admits one writer at a time. A [`Transaction`]
//! takes the writer mutex, then holds the write lock from begin to commit or
//! rollback, so transactions are serializable and see their own writes;
//! readers ([`Database::read`]) hold the read lock and see one consistent
//! committed state for as long as they hold it — a commit waits for them,
//! and they never see a half-applied transaction. A checkpoint takes the
//! writer mutex and a *read* lock while it copies the state: writers queue
//! on the mutex, not on the lock, so readers never wait behind a checkpoint.
//! Keep read views and transactions short: they exclude each other (queries
//! are bounded by a deadline). A thread must not open a transaction while it
//! holds a read view (that would deadlock).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ecsdb_core::QueryData;
use ecsdb_core::batch::{BatchBuilder, Bundle};

use crate::typed_query::TypedQuery;
use ecsdb_core::io;
use ecsdb_core::{ChangeSet, ChunkMut, EntityId, FieldRef, Query, Row, Schema, TableId, Value, World};
use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::config::DatabaseConfig;
use crate::durability::{Durability, Triggers, WalSink};
use crate::error::{DbError, Result};
use crate::sink::CommitSink;
use ecsdb_storage::fs::{OsFs, Vfs};
use ecsdb_storage::{CheckpointInfo, RecoveryReport, Store, StoreOptions, SyncMode};

/// How long a writer waiting for readers parks (blocking new readers)
/// before it steps back.
const WRITER_PARK: Duration = Duration::from_millis(2);
/// How long it then lets readers in.
const WRITER_BACKOFF: Duration = Duration::from_millis(1);

/// The bundled example schema (`examples/schemas/rpg_game.toml`).
pub const EXAMPLE_SCHEMA: &str = include_str!("../../../examples/schemas/rpg_game.toml");

pub(crate) struct Inner {
    pub(crate) world: RwLock<World>,
    /// One writer at a time (transactions, checkpoint captures); taken
    /// before `world`.
    pub(crate) writer: Mutex<()>,
    /// The schema in force (replaced by a migration).
    pub(crate) schema: parking_lot::RwLock<Arc<Schema>>,
    pub(crate) config: DatabaseConfig,
    pub(crate) sinks: Vec<Box<dyn CommitSink>>,
    pub(crate) active: AtomicU64,
    pub(crate) started: Instant,
    pub(crate) fail_stop: AtomicBool,
    pub(crate) fail_reason: Mutex<Option<String>>,
    pub(crate) durability: Option<Durability>,
    pub(crate) recovery: Option<RecoveryReport>,
    /// Committed change sets to subscribers (see `feed.rs`).
    pub(crate) feed: crate::feed::Feed,
    /// Why writes are refused (a replica, a fenced primary); `None` = writable.
    pub(crate) read_only: parking_lot::RwLock<Option<String>>,
    /// Log holds by holder (the archiver, replication): the log keeps every
    /// commit after the smallest.
    pub(crate) holds: Mutex<Vec<(String, u64)>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(d) = &self.durability {
            d.stop.store(true, Ordering::Release);
            // Whatever was written is made durable before the files close.
            let _ = d.store.wal().shutdown();
        }
    }
}

/// A database handle. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("schema", &self.inner.schema.read().name)
            .field("seq", &self.version())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Database`].
#[derive(Debug, Default)]
pub struct DatabaseBuilder {
    config: DatabaseConfig,
    schema: Option<Arc<Schema>>,
    sinks: Vec<Box<dyn CommitSink>>,
    persistence: bool,
    fs: Option<Arc<dyn Vfs>>,
    repair: bool,
}

impl DatabaseBuilder {
    /// Use this configuration (defaults otherwise).
    #[must_use]
    pub fn config(mut self, config: DatabaseConfig) -> Self {
        self.config = config;
        self
    }

    /// Load the schema from a TOML file. (An existing data directory needs
    /// none: it keeps its schema in `schema.toml` and is opened with it.)
    pub fn schema_file(mut self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| DbError::Io { path: path.to_path_buf(), source: e })?;
        self.schema = Some(Arc::new(Schema::from_toml_str(&text)?));
        Ok(self)
    }

    /// Use a schema given as TOML text.
    pub fn schema_toml(mut self, text: &str) -> Result<Self> {
        self.schema = Some(Arc::new(Schema::from_toml_str(text)?));
        Ok(self)
    }

    /// Use an already validated schema.
    #[must_use]
    pub fn schema(mut self, schema: Arc<Schema>) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Attach a consumer of committed change sets (see [`CommitSink`]).
    #[must_use]
    pub fn commit_sink(mut self, sink: Box<dyn CommitSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Make the database durable in `[database] data_dir` (commit log,
    /// snapshots, recovery on open). Without it the database lives in memory.
    #[must_use]
    pub fn enable_persistence(mut self) -> Self {
        self.persistence = true;
        self
    }

    /// Durable in this directory (sets `data_dir` and enables persistence).
    #[must_use]
    pub fn data_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.config.database.data_dir = dir.as_ref().to_path_buf();
        self.persistence = true;
        self
    }

    /// Write through this file system instead of the real one (tests that
    /// simulate crashes and faults). No directory lock is taken.
    #[must_use]
    pub fn file_system(mut self, fs: Arc<dyn Vfs>) -> Self {
        self.fs = Some(fs);
        self
    }

    /// On open, cut the commit log at the first damage instead of refusing
    /// to open (what is dropped is in the recovery report).
    #[must_use]
    pub fn repair(mut self, yes: bool) -> Self {
        self.repair = yes;
        self
    }

    /// Open the database.
    pub fn build(self) -> Result<Database> {
        self.config.validate()?;
        let stored = self.config.database.data_dir.join(SCHEMA_FILE_NAME);
        let explicit = self.schema.is_some() || self.config.database.schema_file.is_some();
        let schema = match self.schema {
            Some(s) => s,
            None => match &self.config.database.schema_file {
                Some(p) => Arc::new(Schema::from_toml_str(
                    &std::fs::read_to_string(p).map_err(|e| DbError::Io { path: p.clone(), source: e })?,
                )?),
                // An existing data directory keeps its schema.
                None if self.persistence
                    && self.fs.as_ref().map_or_else(|| stored.exists(), |fs| fs.exists(&stored)) =>
                {
                    let bytes = match &self.fs {
                        Some(fs) => fs.read(&stored),
                        None => std::fs::read(&stored),
                    }
                    .map_err(|e| DbError::Io { path: stored.clone(), source: e })?;
                    let text = String::from_utf8(bytes)
                        .map_err(|_| DbError::Config(format!("{} is not UTF-8 text", stored.display())))?;
                    Arc::new(Schema::from_stored_toml(&text)?)
                }
                None => return Err(DbError::NoSchema),
            },
        };
        let mut sinks = self.sinks;
        let mut durability = None;
        let mut recovery = None;
        let mut world = if self.persistence {
            let (world, d, report) = open_durable(&self.config, &schema, self.fs, self.repair)?;
            if self.config.transactions.wal_enabled {
                sinks.insert(0, Box::new(WalSink(d.store.wal().clone())));
            }
            durability = Some(d);
            recovery = Some(report);
            world
        } else {
            World::new(schema.clone())
        };
        world.set_memory_limit(self.config.memory_limit_bytes());
        if let Some(limit) = self.config.memory_limit_bytes()
            && world.data_bytes() > limit
        {
            tracing::warn!(
                used_bytes = world.data_bytes(),
                limit_bytes = limit,
                "the recovered data is over the memory ceiling ([memory] max_capacity_mb): commits that add data are refused until data is deleted or the ceiling raised"
            );
        }
        world.set_max_commit_bytes(
            usize::try_from(self.config.transactions.max_transaction_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
        );
        // Recovery may have replayed a migration: the state's schema rules
        // (schema.toml was behind it, and is rewritten) — but a given schema
        // newer than the recovered state means a migration never became
        // durable: say so rather than run under the older schema.
        if explicit
            && world.schema().fingerprint != schema.fingerprint
            && ecsdb_core::migration::older(&world.schema().version, &schema.version)
        {
            return Err(DbError::Config(format!(
                "the data recovered is at schema version {} (fingerprint {:016x}), not the given schema's version {} ({:016x}); open it without a schema, or give the schema the data is at",
                world.schema().version,
                world.schema().fingerprint,
                schema.version,
                schema.fingerprint
            )));
        }
        let schema = world.schema().clone();
        let db = Database {
            inner: Arc::new(Inner {
                world: RwLock::new(world),
                writer: Mutex::new(()),
                schema: parking_lot::RwLock::new(schema),
                config: self.config,
                sinks,
                active: AtomicU64::new(0),
                started: Instant::now(),
                fail_stop: AtomicBool::new(false),
                fail_reason: Mutex::new(None),
                durability,
                recovery,
                feed: crate::feed::Feed::default(),
                read_only: parking_lot::RwLock::new(None),
                holds: Mutex::new(Vec::new()),
            }),
        };
        db.start_background();
        Ok(db)
    }
}

fn open_durable(
    config: &DatabaseConfig,
    schema: &Arc<Schema>,
    fs: Option<Arc<dyn Vfs>>,
    repair: bool,
) -> Result<(World, Durability, RecoveryReport)> {
    let dir = config.database.data_dir.clone();
    let (fs, lock): (Arc<dyn Vfs>, _) = if let Some(fs) = fs {
        (fs, None)
    } else {
        OsFs.create_dir_all(&dir).map_err(|e| DbError::Io { path: dir.clone(), source: e })?;
        restrict_dir(&dir);
        (Arc::new(OsFs), Some(ecsdb_storage::lock::lock_dir(&dir)?))
    };
    ensure_schema_file(fs.as_ref(), &dir, schema)?;
    let p = &config.persistence;
    let sync = if config.wal_sync_on_commit() {
        SyncMode::Sync
    } else {
        SyncMode::Async {
            interval: Duration::from_millis(config.transactions.batch_timeout_ms.max(1)),
            batch: u64::from(config.transactions.batch_size.max(1)),
        }
    };
    if !config.transactions.wal_enabled {
        tracing::warn!(
            data_dir = %dir.display(),
            "the commit log is DISABLED (transactions.wal_enabled = false): every commit since the last snapshot is lost on a crash; use this for development only"
        );
    }
    let opts = StoreOptions {
        sync,
        segment_bytes: p.wal_segment_mb.saturating_mul(1 << 20),
        archive: p.wal_archive_enabled,
        retention: p.snapshot_retention as usize,
        repair,
        compression_level: p.snapshot_compression_level,
        archive_max_bytes: p.wal_archive_max_mb.saturating_mul(1 << 20),
    };
    let (store, world, report) = Store::open(fs.clone(), &dir, schema, opts)?;
    if world.schema().fingerprint != schema.fingerprint {
        // The log held a migration schema.toml does not show yet (a crash
        // between the two): the data is the truth.
        tracing::warn!(
            version = %world.schema().version,
            "the commit log migrated the schema past {}; rewriting it",
            SCHEMA_FILE_NAME
        );
        write_schema_file(fs.as_ref(), &dir, world.schema())?;
    }
    if let Some((path, off)) = &report.truncated_tail {
        tracing::warn!(segment = %path.display(), offset = off, "cut a torn record off the end of the commit log (it was never acknowledged)");
    }
    for s in &report.skipped_snapshots {
        tracing::warn!(reason = %s, "skipped a damaged snapshot; recovered from an older one plus the log");
    }
    for r in &report.repaired {
        tracing::warn!(what = %r, "repair dropped data");
    }
    Ok((
        world,
        Durability {
            store: Arc::new(store),
            _lock: lock,
            last_checkpoint_seq: AtomicU64::new(report.snapshot.as_ref().map_or(0, |s| s.1)),
            last_checkpoint_at: Mutex::new(Instant::now()),
            checkpoints: AtomicU64::new(0),
            max_pause_us: AtomicU64::new(0),
            last_pause_us: AtomicU64::new(0),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
        },
        report,
    ))
}

/// Whether a name belongs in a data directory: the database's own files
/// and folders, and what the tools set aside there. Anything else means the
/// directory is shared with other files.
pub fn is_data_dir_entry(name: &str) -> bool {
    const OURS: &[&str] = &[
        "LOCK",
        SCHEMA_FILE_NAME,
        "schema.toml.tmp",
        SCHEMA_HISTORY_DIR,
        "wal",
        "wal_archive",
        "snapshots",
        "jwt_secret",
        "database_id",
        "database_id.tmp",
        ".health-probe",
        "replication.json",
        "replication.json.tmp",
    ];
    OURS.contains(&name)
        || name.starts_with("pre-restore-")
        || name.starts_with("pre-rebuild-")
        || name.starts_with("pre-bootstrap-")
}

/// A data directory holds data and secrets: make an existing one that
/// others may read 0700, as new ones are created — but only when it holds
/// nothing but a database's own files (a data directory pointed at `/tmp`
/// or a home directory must not have its mode changed: a warning then, as
/// when the change is not allowed).
fn restrict_dir(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(m) = std::fs::metadata(dir) else { return };
        let others_may_read = m.permissions().mode() & 0o077 != 0;
        if !others_may_read {
            return;
        }
        let only_ours = std::fs::read_dir(dir).is_ok_and(|rd| {
            rd.filter_map(std::result::Result::ok).all(|e| is_data_dir_entry(&e.file_name().to_string_lossy()))
        });
        let changed = only_ours && std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).is_ok();
        if !changed {
            tracing::warn!(dir = %dir.display(), "the data directory is readable by others; it holds data and secrets (make it 0700)");
        }
    }
}

/// Name of the schema copy kept in a data directory (tools read it).
pub const SCHEMA_FILE_NAME: &str = "schema.toml";

/// Keep the schema next to the data: written (atomically) on first open;
/// on later opens it must match.
fn ensure_schema_file(fs: &dyn Vfs, dir: &Path, schema: &Schema) -> Result<()> {
    let path = dir.join(SCHEMA_FILE_NAME);
    let io = |e| DbError::Io { path: path.clone(), source: e };
    fs.create_dir_all(dir).map_err(|e| DbError::Io { path: dir.to_path_buf(), source: e })?;
    if fs.exists(&path) {
        let text = String::from_utf8(fs.read(&path).map_err(io)?).unwrap_or_default();
        let stored = Schema::from_stored_toml(&text)?;
        if stored.fingerprint != schema.fingerprint {
            let diff = ecsdb_core::schema::differences(&stored, schema, 20);
            let older = ecsdb_core::migration::older(&schema.version, &stored.version);
            let missing = if older {
                format!(
                    "the data is at schema version {}, the schema given is the older version {}: migrations only go forward",
                    stored.version, schema.version
                )
            } else if stored.version == schema.version {
                format!(
                    "both say version {}; a changed schema needs a new version and a migration from the old one",
                    schema.version
                )
            } else {
                format!(
                    "the data is at schema version {}, the schema given is version {}: apply the migration from {} to {} first (`ecsdb migrate plan` / `ecsdb migrate apply`, or POST /v1/admin/migrations)",
                    stored.version, schema.version, stored.version, schema.version
                )
            };
            return Err(DbError::Config(format!(
                "{} holds another schema than the one given ({missing}); a data directory keeps one schema (open it without a schema to use its own). Differences: {}",
                path.display(),
                if diff.is_empty() {
                    "none in content (the canonical text differs)".to_string()
                } else {
                    diff.join("; ")
                },
            )));
        }
        // Directories made before the history existed get it now.
        return write_schema_history(fs, dir, &stored);
    }
    write_schema_file(fs, dir, schema)
}

/// Write `<dir>/schema.toml` (and its history copy) for a data directory
/// being assembled from elsewhere (a replica's bootstrap), atomically.
pub fn install_schema_file(dir: &Path, schema: &Schema) -> Result<()> {
    write_schema_file(&OsFs, dir, schema)
}

/// Write `<dir>/schema.toml` atomically (temp file, fsync, rename, fsync
/// of the directory).
pub(crate) fn write_schema_file(fs: &dyn Vfs, dir: &Path, schema: &Schema) -> Result<()> {
    let path = dir.join(SCHEMA_FILE_NAME);
    let io = |e| DbError::Io { path: path.clone(), source: e };
    let tmp = dir.join("schema.toml.tmp");
    let f = fs.create(&tmp).map_err(io)?;
    f.append(schema.to_toml_string().as_bytes()).map_err(io)?;
    f.sync().map_err(io)?;
    drop(f);
    fs.rename(&tmp, &path).map_err(io)?;
    fs.sync_dir(dir).map_err(io)?;
    write_schema_history(fs, dir, schema)
}

/// Folder keeping every schema a data directory has been under, by
/// fingerprint: replaying the log from its first commit (`ecsdb
/// rebuild-from-wal`) needs the schema it started with, and migrations
/// change `schema.toml`.
pub const SCHEMA_HISTORY_DIR: &str = "schema_history";

/// Keep `schema` in `<dir>/schema_history/<fingerprint>.toml` (once).
pub(crate) fn write_schema_history(fs: &dyn Vfs, dir: &Path, schema: &Schema) -> Result<()> {
    let hist = dir.join(SCHEMA_HISTORY_DIR);
    let path = hist.join(format!("{:016x}.toml", schema.fingerprint));
    let io = |e| DbError::Io { path: path.clone(), source: e };
    if fs.exists(&path) {
        return Ok(());
    }
    fs.create_dir_all(&hist).map_err(io)?;
    let tmp = hist.join(format!("{:016x}.toml.tmp", schema.fingerprint));
    let f = fs.create(&tmp).map_err(io)?;
    f.append(schema.to_toml_string().as_bytes()).map_err(io)?;
    f.sync().map_err(io)?;
    drop(f);
    fs.rename(&tmp, &path).map_err(io)?;
    fs.sync_dir(&hist).map_err(io)?;
    fs.sync_dir(dir).map_err(io)?;
    Ok(())
}

impl Database {
    fn start_background(&self) {
        let Some(d) = &self.inner.durability else { return };
        let mut threads = d.threads.lock();
        if let Some(h) = d.store.wal().run_flusher() {
            threads.push(h);
        }
        let p = &self.inner.config.persistence;
        if !p.snapshots_enabled {
            return;
        }
        let triggers = Triggers {
            every_ops: p.snapshot_interval_ops,
            every: Duration::from_secs(p.snapshot_interval_secs.max(1)),
            max_wal_bytes: p.max_wal_size_mb.saturating_mul(1 << 20),
        };
        let weak = Arc::downgrade(&self.inner);
        let stop = d.stop.clone();
        let h = std::thread::Builder::new().name("ecsdb-maintenance".into()).spawn(move || {
            let mut last_wal_check = Instant::now();
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(100));
                let Some(inner) = weak.upgrade() else { return };
                let db = Database { inner };
                let Some(d) = &db.inner.durability else { return };
                let seq = db.version();
                let since = seq.saturating_sub(d.last_checkpoint_seq.load(Ordering::Relaxed));
                let due_ops = triggers.every_ops > 0 && since >= triggers.every_ops;
                let due_time = since > 0 && d.last_checkpoint_at.lock().elapsed() >= triggers.every;
                let due_wal = since > 0 && last_wal_check.elapsed() >= Duration::from_secs(1) && {
                    last_wal_check = Instant::now();
                    d.store.wal_size() >= triggers.max_wal_bytes
                };
                if (due_ops || due_time || due_wal)
                    && db.fail_stopped().is_none()
                    && let Err(e) = db.checkpoint()
                {
                    tracing::error!(error = %e, "background checkpoint failed");
                }
            }
        });
        if let Ok(h) = h {
            threads.push(h);
        }
    }

    /// Take a snapshot now: writers wait only while the state is copied;
    /// compression and writing happen without any lock. Older log segments
    /// are archived (or deleted) and old snapshots pruned.
    pub fn checkpoint(&self) -> Result<CheckpointInfo> {
        let d = self
            .inner
            .durability
            .as_ref()
            .ok_or_else(|| DbError::Config("checkpoint needs a durable database (a data directory)".into()))?;
        let started = Instant::now();
        let image = {
            // Writers wait on the writer mutex, so readers keep reading.
            let _writer = self.inner.writer.lock();
            let w = self.inner.world.read();
            d.store.begin_checkpoint(&w)?
        };
        d.record_pause(started.elapsed());
        let info = d.store.finish_checkpoint(&image)?;
        d.last_checkpoint_seq.store(info.seq, Ordering::Relaxed);
        *d.last_checkpoint_at.lock() = Instant::now();
        d.checkpoints.fetch_add(1, Ordering::Relaxed);
        tracing::info!(seq = info.seq, bytes = info.bytes, write_ms = info.write_ms, "checkpoint written");
        Ok(info)
    }

    /// Copy the committed state at one sequence (for a backup): writers wait
    /// only while the columns are copied, readers keep reading; nothing is
    /// written and the log is not rotated. Works on in-memory databases too.
    pub fn capture_snapshot(&self) -> ecsdb_storage::snapshot::Image {
        let _writer = self.inner.writer.lock();
        let w = self.inner.world.read();
        ecsdb_storage::snapshot::capture(&w)
    }

    /// The data directory of a durable database.
    pub fn data_dir(&self) -> Option<&Path> {
        self.inner.durability.as_ref().map(|_| self.inner.config.database.data_dir.as_path())
    }

    /// Keep every commit after `seq` in the data directory's log files until
    /// the hold moves (a log archiver calls this with the last sequence it
    /// has shipped; `u64::MAX` lifts it). Checkpoints then move covered
    /// segments to `wal_archive/` instead of deleting them, and pruning
    /// spares them.
    pub fn hold_log_after(&self, seq: u64) {
        self.hold_log_for("archive", seq);
    }

    /// As [`Database::hold_log_after`], for one of several holders: the log
    /// keeps every commit after the smallest hold (`u64::MAX` lifts this
    /// holder's).
    pub fn hold_log_for(&self, holder: &str, seq: u64) {
        let mut holds = self.inner.holds.lock();
        match holds.iter_mut().find(|h| h.0 == holder) {
            Some(h) => h.1 = seq,
            None => holds.push((holder.to_string(), seq)),
        }
        let min = holds.iter().map(|h| h.1).min().unwrap_or(u64::MAX);
        if let Some(d) = &self.inner.durability {
            d.store.hold_log_after(min);
        }
    }

    /// Refuse writes (`Some(reason)`: every transaction and migration fails
    /// with [`DbError::ReadOnly`] carrying it) or accept them again (`None`).
    /// Replicated commits ([`Database::apply_replicated`]) still apply.
    pub fn set_read_only(&self, reason: Option<String>) {
        *self.inner.read_only.write() = reason;
    }

    /// Why writes are refused, if they are.
    pub fn read_only(&self) -> Option<String> {
        self.inner.read_only.read().clone()
    }

    /// Apply commits made elsewhere (a replica following its primary), in
    /// sequence order, each at its own sequence number: logged, applied
    /// through the same checks as recovery, and published to subscribers
    /// like local commits. Not waited on: call [`Database::sync_to`] with
    /// the last one to make them durable. Returns the sequence reached.
    ///
    /// An error leaves the commits before the failing one applied; a commit
    /// that fails to apply after being logged puts the database in
    /// fail-stop (its state can no longer be trusted: bootstrap it again).
    pub fn apply_replicated(&self, records: &[(u64, ChangeSet)]) -> Result<u64> {
        let mut i = 0;
        while i < records.len() {
            if let Some(Ok(ecsdb_core::changeset::Op::Migrate { text })) = records[i].1.iter().next() {
                let text = std::str::from_utf8(text).map_err(|_| {
                    DbError::Config(format!("replicated commit {}: migration text is not UTF-8", records[i].0))
                })?;
                let at = self.version() + 1;
                if records[i].0 != at {
                    return Err(DbError::Sink(format!(
                        "replicated commit {} arrived where {at} was expected",
                        records[i].0
                    )));
                }
                self.migrate_inner(text, true, false)?;
                i += 1;
                continue;
            }
            let end = records[i..]
                .iter()
                .position(|r| matches!(r.1.iter().next(), Some(Ok(ecsdb_core::changeset::Op::Migrate { .. }))))
                .map_or(records.len(), |p| i + p);
            self.apply_replicated_run(&records[i..end])?;
            i = end;
        }
        Ok(self.version())
    }

    fn apply_replicated_run(&self, records: &[(u64, ChangeSet)]) -> Result<()> {
        if let Some(reason) = self.fail_stopped() {
            return Err(DbError::FailStop(reason));
        }
        let _writer = self.inner.writer.lock();
        let mut w = self.acquire_write(None).unwrap_or_else(|| unreachable!("no deadline"));
        for (seq, cs) in records {
            let seq = *seq;
            if seq != w.seq() + 1 {
                return Err(DbError::Sink(format!(
                    "replicated commit {seq} arrived where {} was expected",
                    w.seq() + 1
                )));
            }
            if cs.is_empty() {
                return Err(DbError::Sink(format!("replicated commit {seq} is empty")));
            }
            self.offer_to_sinks(seq, cs, "replicated commit")?;
            if let Err(e) = w.apply(seq, cs) {
                let reason = format!("replicated commit {seq} could not be applied: {e}");
                self.enter_fail_stop(reason.clone());
                return Err(DbError::FailStop(reason));
            }
            self.inner.feed.publish(seq, cs);
        }
        Ok(())
    }

    /// Block until commit `seq` is on stable storage (for a client asking for
    /// a durable acknowledgement while the log runs in async mode).
    pub fn sync_to(&self, seq: u64) -> Result<()> {
        match &self.inner.durability {
            Some(d) => Ok(d.store.wal().sync_to(seq)?),
            None => Ok(()),
        }
    }

    /// Whether an acknowledged commit can be made durable: the database has
    /// a data directory and its commit log is enabled.
    pub fn logs_commits(&self) -> bool {
        self.inner.durability.is_some() && self.inner.config.transactions.wal_enabled
    }

    /// What recovery did when this database was opened.
    pub fn recovery_report(&self) -> Option<&RecoveryReport> {
        self.inner.recovery.as_ref()
    }

    /// Figures of the durable layer, if the database is durable.
    pub fn storage_stats(&self) -> Option<StorageStats> {
        let d = self.inner.durability.as_ref()?;
        let w = d.store.wal().stats();
        Some(StorageStats {
            wal_bytes_written: w.bytes_written,
            wal_records_written: w.records_written,
            wal_syncs: w.syncs,
            wal_size_bytes: d.store.wal_size(),
            durable_seq: w.durable_seq,
            checkpoints: d.checkpoints.load(Ordering::Relaxed),
            last_checkpoint_seq: d.last_checkpoint_seq.load(Ordering::Relaxed),
            checkpoint_pause_us_max: d.max_pause_us.load(Ordering::Relaxed),
            checkpoint_pause_us_last: d.last_pause_us.load(Ordering::Relaxed),
        })
    }

    /// Close cleanly: snapshot if configured, make the log durable, stop
    /// background work. Other handles to this database stay usable for reads.
    pub fn close(&self) -> Result<()> {
        let Some(d) = &self.inner.durability else { return Ok(()) };
        d.stop.store(true, Ordering::Release);
        if self.inner.config.persistence.checkpoint_on_shutdown && self.fail_stopped().is_none() {
            self.checkpoint()?;
        }
        d.store.wal().shutdown()?;
        let threads: Vec<_> = d.threads.lock().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
        Ok(())
    }
}

/// Figures of the durable layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StorageStats {
    pub wal_bytes_written: u64,
    pub wal_records_written: u64,
    pub wal_syncs: u64,
    pub wal_size_bytes: u64,
    pub durable_seq: u64,
    pub checkpoints: u64,
    pub last_checkpoint_seq: u64,
    pub checkpoint_pause_us_max: u64,
    pub checkpoint_pause_us_last: u64,
}

/// Figures about a database (see also the Prometheus metrics of the server).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DatabaseMetrics {
    pub total_entities: u64,
    pub total_components: u64,
    pub total_relations: u64,
    pub archetypes: u64,
    /// Operations in committed transactions.
    pub total_operations: u64,
    pub transactions_active: u64,
    pub transactions_committed: u64,
    pub transactions_rolled_back: u64,
    /// Sequence number of the last commit.
    pub sequence: u64,
    /// Accounted bytes of live data.
    pub memory_bytes: u64,
    /// The memory ceiling, if any.
    pub memory_limit_bytes: Option<u64>,
    pub uptime_secs: f64,
}

/// What a commit produced.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    /// Sequence number (unchanged for an empty transaction).
    pub seq: u64,
    /// The change set, as recorded by the commit sinks.
    pub changes: ChangeSet,
}

impl Database {
    /// Start building a database.
    pub fn builder() -> DatabaseBuilder {
        DatabaseBuilder::default()
    }

    /// Open an existing durable database with the schema it keeps
    /// (`<dir>/schema.toml`) and the default configuration.
    pub fn open(dir: impl AsRef<Path>) -> Result<Database> {
        Database::builder().data_dir(dir).build()
    }

    /// An in-memory database over the bundled example schema.
    pub fn example() -> Result<Database> {
        Database::builder().schema_toml(EXAMPLE_SCHEMA)?.build()
    }

    /// Receive every commit from now on, in sequence order (see
    /// [`crate::feed`]); the queue holds [`crate::feed::DEFAULT_FEED_CAPACITY`]
    /// commits before the subscriber is told it lagged.
    pub fn subscribe_commits(&self) -> crate::feed::CommitFeed {
        self.subscribe_commits_with(crate::feed::DEFAULT_FEED_CAPACITY)
    }

    /// Call `f` with every commit (its sequence and change set) while the
    /// write lock is still held, in sequence order (see [`crate::feed`]).
    /// `f` must not block and must not touch this database.
    pub fn listen_commits(&self, f: crate::feed::Listener) {
        self.inner.feed.listen(f);
    }

    /// As [`Database::subscribe_commits`] with a queue of `capacity` commits.
    pub fn subscribe_commits_with(&self, capacity: usize) -> crate::feed::CommitFeed {
        self.inner.feed.subscribe(capacity)
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    pub fn schema(&self) -> Arc<Schema> {
        self.inner.schema.read().clone()
    }

    pub fn config(&self) -> &DatabaseConfig {
        &self.inner.config
    }

    /// The state version: sequence number of the last commit.
    pub fn version(&self) -> u64 {
        self.inner.world.read().seq()
    }

    /// A consistent read-only view of the committed state.
    pub fn read(&self) -> ReadView<'_> {
        ReadView { guard: self.inner.world.read() }
    }

    /// Begin a transaction (waits for the writer lock).
    pub fn transaction(&self) -> Result<Transaction<'_>> {
        self.check_writable()?;
        let writer = self.inner.writer.lock();
        let world = self.acquire_write(None).unwrap_or_else(|| unreachable!("no deadline"));
        self.begin_locked(writer, world)
    }

    /// Take the world's write lock (the writer mutex is held). A parked
    /// writer makes new readers queue behind it, so a writer waiting for a
    /// long reader would stall every later reader: it parks only briefly,
    /// then steps back and lets readers in before trying again.
    fn acquire_write(&self, deadline: Option<Instant>) -> Option<RwLockWriteGuard<'_, World>> {
        if let Some(g) = self.inner.world.try_write() {
            return Some(g);
        }
        loop {
            if let Some(g) = self.inner.world.try_write_for(WRITER_PARK) {
                return Some(g);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            std::thread::sleep(WRITER_BACKOFF);
        }
    }

    /// A read view, waiting at most `wait` for it ([`DbError::Busy`] then).
    pub fn read_within(&self, wait: Duration) -> Result<ReadView<'_>> {
        self.inner
            .world
            .try_read_for(wait)
            .map(|guard| ReadView { guard })
            .ok_or_else(|| DbError::Busy(format!("no read view within {} ms", wait.as_millis())))
    }

    /// Begin a transaction, waiting at most `wait` for the writer lock;
    /// [`DbError::Busy`] (nothing changed) when it is not free in time.
    pub fn transaction_within(&self, wait: Duration) -> Result<Transaction<'_>> {
        self.check_writable()?;
        let deadline = Instant::now() + wait;
        let busy = || DbError::Busy(format!("no write slot within {} ms; nothing was changed", wait.as_millis()));
        let writer = self.inner.writer.try_lock_until(deadline).ok_or_else(busy)?;
        let world = self.acquire_write(Some(deadline)).ok_or_else(busy)?;
        self.begin_locked(writer, world)
    }

    fn begin_locked<'a>(
        &'a self,
        writer: MutexGuard<'a, ()>,
        mut guard: RwLockWriteGuard<'a, World>,
    ) -> Result<Transaction<'a>> {
        if let Err(e) = guard.begin() {
            if let Some(why) = guard.poisoned() {
                self.enter_fail_stop(why.to_string());
            }
            return Err(e.into());
        }
        self.inner.active.fetch_add(1, Ordering::Relaxed);
        Ok(Transaction { db: self, guard: Some(guard), writer: Some(writer) })
    }

    /// Run `f` in a transaction and commit; roll back if `f` fails.
    pub fn write<T>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<(T, CommitInfo)> {
        let mut txn = self.transaction()?;
        let out = f(&mut txn)?;
        let info = txn.commit()?;
        Ok((out, info))
    }

    /// What a commit's change set did, by name (tables, fields, relations,
    /// decoded values); see [`ecsdb_core::Change`].
    pub fn describe_changes(&self, changes: &ChangeSet) -> Result<Vec<ecsdb_core::Change>> {
        Ok(self.read().guard.describe_changes(changes)?)
    }

    /// Create an entity with no components, in its own transaction.
    pub fn create_entity(&self) -> Result<EntityId> {
        // A closure, not the method path: the transaction's lifetime must stay
        // higher-ranked.
        #[allow(clippy::redundant_closure_for_method_calls)]
        let (id, _) = self.write(|t| t.create_entity())?;
        Ok(id)
    }

    /// Check that `T` (a `#[derive(Component)]` struct) fits this database's
    /// schema: its table exists, every struct field is a stored field of a
    /// type the Rust type can hold, and every stored field has a struct
    /// field. Every mismatch is reported at once.
    pub fn register<T: ecsdb_core::component::Component>(&self) -> Result<ecsdb_core::component::Binding> {
        ecsdb_core::component::Binding::of::<T>(&self.schema()).map_err(|problems| {
            DbError::Engine(ecsdb_core::Error::TypeMismatch {
                table: T::TABLE.to_string(),
                field: "*".into(),
                reason: problems.join("; "),
            })
        })
    }

    /// An entity as JSON: `{"id", "components": {...}}`.
    pub fn get_json(&self, id: EntityId) -> Result<serde_json::Value> {
        Ok(self.read().entity_json(id)?)
    }

    /// Run a query against the committed state.
    pub fn query(&self, q: &Query) -> Result<Vec<Row>> {
        Ok(self.read().guard.query(q)?)
    }

    /// Any query — plain, aggregate (`group_by`, `aggregates`) or `explain`
    /// — answered as JSON: `{"rows": [...]}` or `{"plan": {...}}`.
    pub fn query_json(&self, q: &Query) -> Result<serde_json::Value> {
        Ok(self.read().guard.query_json_within(q, &ecsdb_core::QueryBudget::default())?)
    }

    /// Run a query within a budget of time and result size (it fails rather
    /// than hold a read view past its deadline).
    pub fn query_within(&self, q: &Query, budget: &ecsdb_core::QueryBudget) -> Result<Vec<Row>> {
        Ok(self.read().query_within(q, budget)?)
    }

    /// Export the whole state as JSON.
    pub fn export_json(&self) -> serde_json::Value {
        io::export_json(&self.read())
    }

    /// Export one table as JSON (rows keyed by entity id, sorted).
    pub fn export_table_json(&self, table: &str) -> Result<serde_json::Value> {
        let r = self.read();
        let t = r.table_id(table)?;
        Ok(io::export_table_json(&r, t))
    }

    /// Export one table as CSV.
    pub fn export_csv<W: std::io::Write>(&self, table: &str, out: W) -> Result<()> {
        let r = self.read();
        let t = r.table_id(table)?;
        Ok(io::export_table_csv(&r, t, out)?)
    }

    /// Import an export (preserving ids) in one transaction: all or nothing.
    pub fn import_json(&self, doc: &serde_json::Value) -> Result<(usize, CommitInfo)> {
        self.write(|t| Ok(io::import_json(t.world_mut(), doc)?))
    }

    /// Current figures.
    pub fn metrics(&self) -> DatabaseMetrics {
        let w = self.read();
        let stats = w.stats();
        DatabaseMetrics {
            total_entities: w.entity_count() as u64,
            total_components: w.archetypes().iter().map(|a| (a.len() * a.tables.len()) as u64).sum(),
            total_relations: w.relations().len() as u64,
            archetypes: w.archetypes().len() as u64,
            total_operations: stats.operations,
            transactions_active: self.inner.active.load(Ordering::Relaxed),
            transactions_committed: stats.committed,
            transactions_rolled_back: stats.rolled_back,
            sequence: w.seq(),
            memory_bytes: w.data_bytes() as u64,
            memory_limit_bytes: w.memory_limit().map(|b| b as u64),
            uptime_secs: self.uptime().as_secs_f64(),
        }
    }

    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Whether the database refuses writes after a storage failure.
    /// Covers the commit log's own fail-stop (a failed write or fsync) as
    /// well as the database's (a commit that may not be durable, a failed
    /// rollback).
    pub fn fail_stopped(&self) -> Option<String> {
        if self.inner.fail_stop.load(Ordering::Acquire) {
            return self.inner.fail_reason.lock().clone();
        }
        let d = self.inner.durability.as_ref()?;
        d.store.wal().failure().map(|f| format!("the commit log failed: {f}"))
    }

    /// Offer commit `seq` to every sink in order (under the writer lock).
    /// If one refuses, the sinks that took it give it back, newest first;
    /// one that cannot holds a commit the state will not have (fail-stop).
    pub(crate) fn offer_to_sinks(&self, seq: u64, cs: &ChangeSet, what: &str) -> Result<()> {
        let sinks = &self.inner.sinks;
        for (i, sink) in sinks.iter().enumerate() {
            if let Err(e) = sink.append(seq, cs) {
                for earlier in sinks[..i].iter().rev() {
                    if let Err(ae) = earlier.abort(seq) {
                        self.enter_fail_stop(format!(
                            "{what} {seq} was refused by a commit sink ({e}) and could not be taken back from another ({ae})"
                        ));
                    }
                }
                return Err(DbError::Sink(e));
            }
        }
        Ok(())
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if let Some(reason) = self.read_only() {
            return Err(DbError::ReadOnly(reason));
        }
        match self.fail_stopped() {
            Some(reason) => Err(DbError::FailStop(reason)),
            None => Ok(()),
        }
    }

    /// A failed rollback step leaves the engine poisoned: stop writes.
    fn check_poisoned(&self, world: &World) {
        if let Some(why) = world.poisoned() {
            self.enter_fail_stop(why.to_string());
        }
    }

    pub(crate) fn enter_fail_stop(&self, reason: String) {
        // The first cause is the one worth reporting.
        self.inner.fail_reason.lock().get_or_insert(reason);
        self.inner.fail_stop.store(true, Ordering::Release);
    }
}

/// A consistent read-only view of the committed state.
pub struct ReadView<'db> {
    guard: RwLockReadGuard<'db, World>,
}

impl std::fmt::Debug for ReadView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadView").field("seq", &self.guard.seq()).finish()
    }
}

impl std::ops::Deref for ReadView<'_> {
    type Target = World;
    fn deref(&self) -> &World {
        &self.guard
    }
}

impl ReadView<'_> {
    /// A typed, read-only query over this view (`&T` elements), e.g.
    /// `db.read().query::<(&Position, &Velocity)>().for_each(|id, (p, v)| ..)`.
    pub fn query<Q: QueryData>(&self) -> TypedQuery<'_, Q> {
        TypedQuery(self.guard.query_typed::<Q>())
    }

    /// Let a waiting writer commit, then go on reading (the view may then
    /// be at a later sequence). Long read work calls this between steps so
    /// that it never holds writers back for longer than one step.
    pub fn yield_to_writers(&mut self) {
        RwLockReadGuard::bump(&mut self.guard);
    }
}

/// A write transaction: holds the writer lock until commit or rollback.
/// Dropping it without committing rolls it back.
pub struct Transaction<'db> {
    db: &'db Database,
    // Released in this order: the world first, then the writer mutex.
    guard: Option<RwLockWriteGuard<'db, World>>,
    writer: Option<MutexGuard<'db, ()>>,
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction").finish_non_exhaustive()
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = World;
    fn deref(&self) -> &World {
        self.guard.as_deref().unwrap_or_else(|| unreachable!("transaction used after it ended"))
    }
}

impl Transaction<'_> {
    fn w(&mut self) -> &mut World {
        self.guard.as_deref_mut().unwrap_or_else(|| unreachable!("transaction used after it ended"))
    }

    pub(crate) fn world_mut(&mut self) -> &mut World {
        self.w()
    }

    fn table(&self, name: &str) -> Result<TableId> {
        Ok(self.table_id(name)?)
    }

    pub fn create_entity(&mut self) -> Result<EntityId> {
        Ok(self.w().create_entity()?)
    }

    /// Create an entity with a chosen id: for a process that mirrors
    /// another database, whose ids are assigned there. Fails if the id is
    /// live or was used by a deleted entity, or lies too far past the ids
    /// in use (see the import rules in `docs/OPERATIONS.md`).
    pub fn create_entity_with_id(&mut self, id: EntityId) -> Result<()> {
        Ok(self.w().create_entity_with_id(id)?)
    }

    /// Create an entity with components given as `{"table": {"field": value}}`.
    pub fn create_entity_json(&mut self, components: &serde_json::Value) -> Result<EntityId> {
        let map = components.as_object().ok_or_else(|| {
            DbError::Engine(ecsdb_core::Error::InvalidValue {
                table: "*".into(),
                field: "*".into(),
                reason: "components must be an object of tables".into(),
            })
        })?;
        let id = self.create_entity()?;
        self.upsert_json(id, map)?;
        Ok(id)
    }

    /// Set the given fields of each table of `components`, adding the
    /// components the entity lacks — parents first, and a missing
    /// `parent_table` (transitively) with its defaults, so
    /// `{"player": {...}}` also creates the `entities` row it needs.
    pub fn upsert_json(&mut self, id: EntityId, components: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
        let schema = self.schema().clone();
        let mut items: Vec<(usize, TableId, &String, &serde_json::Value)> = Vec::with_capacity(components.len());
        for (name, fields) in components {
            let t = self.table(name)?;
            let mut depth = 0;
            let mut p = schema.table(t).parent;
            while let Some(pt) = p {
                depth += 1;
                p = schema.table(pt).parent;
                if depth > schema.tables.len() {
                    break; // cycles are refused by the schema; never loop
                }
            }
            items.push((depth, t, name, fields));
        }
        items.sort_by_key(|(d, t, _, _)| (*d, *t));
        for (_, t, name, fields) in items {
            if self.has(id, t) {
                self.set_json(id, name, fields)?;
            } else {
                self.insert_json(id, name, fields)?;
            }
        }
        Ok(())
    }

    /// Add the missing ancestors (`parent_table` chain) of `t` with defaults.
    fn ensure_parents(&mut self, id: EntityId, t: TableId) -> Result<()> {
        let schema = self.schema().clone();
        let mut missing = Vec::new();
        let mut p = schema.table(t).parent;
        while let Some(pt) = p {
            if self.has(id, pt) || missing.contains(&pt) {
                break;
            }
            missing.push(pt);
            p = schema.table(pt).parent;
        }
        let empty = serde_json::Value::Object(serde_json::Map::new());
        for pt in missing.into_iter().rev() {
            self.w().insert_json(id, pt, &empty)?;
        }
        Ok(())
    }

    pub fn delete(&mut self, id: EntityId) -> Result<()> {
        Ok(self.w().delete_entity(id)?)
    }

    /// Add a component from values of its stored fields (slot order).
    pub fn insert(&mut self, id: EntityId, table: &str, values: &[Value]) -> Result<()> {
        let t = self.table(table)?;
        Ok(self.w().insert_values(id, t, values)?)
    }

    /// Add a component from an encoded row (fastest path; see `ecsdb_core::layout`).
    pub fn insert_row(&mut self, id: EntityId, table: TableId, row: &[u8]) -> Result<()> {
        Ok(self.w().insert_row(id, table, row)?)
    }

    /// Add several components from encoded rows in one move: all or none.
    pub fn insert_rows(&mut self, id: EntityId, rows: &[(TableId, &[u8])]) -> Result<()> {
        Ok(self.w().insert_rows(id, rows)?)
    }

    /// Create an entity with components given as encoded rows (the fastest
    /// way to spawn; like an ECS bundle).
    pub fn spawn_rows(&mut self, rows: &[(TableId, &[u8])]) -> Result<EntityId> {
        Ok(self.w().spawn_rows(rows)?)
    }

    /// Add a component from a JSON object (missing fields take defaults).
    /// A missing `parent_table` is added first, with its defaults.
    pub fn insert_json(&mut self, id: EntityId, table: &str, fields: &serde_json::Value) -> Result<()> {
        let t = self.table(table)?;
        if !self.contains(id) {
            return Err(ecsdb_core::Error::NoSuchEntity(id).into());
        }
        self.ensure_parents(id, t)?;
        Ok(self.w().insert_json(id, t, fields)?)
    }

    pub fn remove(&mut self, id: EntityId, table: &str) -> Result<()> {
        let t = self.table(table)?;
        Ok(self.w().remove(id, t)?)
    }

    /// Remove a component by table id (no name lookup).
    pub fn remove_component(&mut self, id: EntityId, table: TableId) -> Result<()> {
        Ok(self.w().remove(id, table)?)
    }

    /// Set one field.
    pub fn set(&mut self, id: EntityId, table: &str, field: &str, v: &Value) -> Result<()> {
        let f = self.schema().field_ref(table, field)?;
        Ok(self.w().set_value(id, f, v)?)
    }

    /// Set one field by reference (no name lookups).
    pub fn set_ref(&mut self, id: EntityId, f: FieldRef, v: &Value) -> Result<()> {
        Ok(self.w().set_value(id, f, v)?)
    }

    /// Set the given fields of a component from a JSON object.
    pub fn set_json(&mut self, id: EntityId, table: &str, fields: &serde_json::Value) -> Result<()> {
        let t = self.table(table)?;
        Ok(self.w().set_json(id, t, fields)?)
    }

    /// Link two entities (replaces the properties of an existing edge).
    pub fn link(
        &mut self,
        relation: &str,
        from: EntityId,
        to: EntityId,
        props: Option<&serde_json::Value>,
    ) -> Result<()> {
        let rel = self
            .schema()
            .relation_id(relation)
            .ok_or_else(|| ecsdb_core::Error::NoSuchRelation(relation.to_string()))?;
        Ok(self.w().link_json(rel, from, to, props)?)
    }

    pub fn unlink(&mut self, relation: &str, from: EntityId, to: EntityId) -> Result<()> {
        let rel = self
            .schema()
            .relation_id(relation)
            .ok_or_else(|| ecsdb_core::Error::NoSuchRelation(relation.to_string()))?;
        Ok(self.w().unlink_edge(rel, from, to)?)
    }

    /// Add component `T` (a `#[derive(Component)]` struct) to `id`; a
    /// missing `parent_table` is added first, with its defaults.
    pub fn insert_component<T: ecsdb_core::component::Component>(&mut self, id: EntityId, c: &T) -> Result<()> {
        let b = self.binding::<T>()?;
        if !self.contains(id) {
            return Err(ecsdb_core::Error::NoSuchEntity(id).into());
        }
        if self.schema().table(b.table).parent.is_some() {
            self.ensure_parents(id, b.table)?;
        }
        Ok(self.w().insert_component_bound(id, c, &b)?)
    }

    /// Fail (and let the caller roll back) unless every filter holds for
    /// `id` now, including this transaction's own writes; see
    /// [`World::check`].
    pub fn check(&mut self, id: EntityId, filters: &[ecsdb_core::Filter]) -> Result<()> {
        Ok(self.w().check(id, filters)?)
    }

    /// Add `delta` to the numeric field `path` (`table.field`) of `id`,
    /// refusing results its type cannot hold; see [`World::add_to`].
    pub fn add(&mut self, id: EntityId, path: &str, delta: &serde_json::Value) -> Result<()> {
        Ok(self.w().add_to(id, path, delta)?)
    }

    /// Remove component `T` from `id`.
    pub fn remove_typed<T: ecsdb_core::component::Component>(&mut self, id: EntityId) -> Result<()> {
        Ok(self.w().remove_component_typed::<T>(id)?)
    }

    /// Overwrite component `T` of `id`, field by field.
    pub fn set_component<T: ecsdb_core::component::Component>(&mut self, id: EntityId, c: &T) -> Result<()> {
        Ok(self.w().set_component(id, c)?)
    }

    /// An empty batch of entities with components `tables`, for
    /// [`Transaction::spawn_batch`].
    pub fn batch(&self, tables: &[&str]) -> Result<BatchBuilder> {
        let ids = tables.iter().map(|t| self.table(t)).collect::<Result<Vec<_>>>()?;
        Ok(BatchBuilder::new(self, &ids)?)
    }

    /// Create every entity of `batch` at once (column by column, one
    /// `SpawnMany` in the change set); all or nothing. Returns their ids in
    /// row order.
    pub fn spawn_columns(&mut self, batch: BatchBuilder) -> Result<Vec<EntityId>> {
        Ok(batch.spawn(self.w())?)
    }

    /// Create one entity per bundle (a tuple of `#[derive(Component)]`
    /// structs), all in one `SpawnMany`; `parent_table`s the bundle leaves
    /// out get their defaults. All or nothing; ids in order.
    pub fn spawn_batch<B: Bundle>(&mut self, bundles: impl IntoIterator<Item = B>) -> Result<Vec<EntityId>> {
        Ok(self.w().spawn_bundles(bundles)?)
    }

    /// Create one entity from a bundle of typed components, e.g.
    /// `txn.spawn((Position { .. }, Velocity { .. }))`.
    pub fn spawn<B: Bundle>(&mut self, bundle: B) -> Result<EntityId> {
        let ids = self.w().spawn_bundles([bundle])?;
        ids.first().copied().ok_or(DbError::Engine(ecsdb_core::Error::IdSpaceExhausted))
    }

    /// A typed query over this transaction: `&T` elements read, `&mut T`
    /// elements write back (logged and rolled back like any write), e.g.
    /// `txn.query::<(&mut Position, &Velocity)>().for_each(|id, (p, v)| ..)`.
    pub fn query<Q: QueryData>(&mut self) -> TypedQuery<'_, Q> {
        TypedQuery(self.w().query_typed_mut::<Q>())
    }

    /// Create an entity holding component `T` (and its parents, with defaults).
    pub fn spawn_component<T: ecsdb_core::component::Component>(&mut self, c: &T) -> Result<EntityId> {
        let id = self.create_entity()?;
        self.insert_component(id, c)?;
        Ok(id)
    }

    /// Commit this transaction even over the memory ceiling: for small,
    /// bounded bookkeeping writes only (a server's login sessions), so a
    /// full database still lets its operators log in and delete data.
    pub fn exempt_from_memory_limit(&mut self) -> Result<()> {
        Ok(self.w().exempt_from_memory_limit()?)
    }

    /// Iterate every archetype holding all `tables` with typed, in-place
    /// column access (see [`ChunkMut`]).
    pub fn for_each_chunk_mut<F>(&mut self, tables: &[TableId], f: F) -> Result<()>
    where
        F: FnMut(&mut ChunkMut<'_>) -> ecsdb_core::Result<()>,
    {
        Ok(self.w().for_each_chunk_mut(tables, f)?)
    }

    /// Commit: validate, hand the change set to the sinks, make it visible,
    /// then wait until it is durable.
    pub fn commit(mut self) -> Result<CommitInfo> {
        let db = self.db;
        let mut guard = self.guard.take().unwrap_or_else(|| unreachable!("transaction used after it ended"));
        db.inner.active.fetch_sub(1, Ordering::Relaxed);
        let seq = guard.next_seq();
        let changes = match guard.prepare_commit() {
            Ok(c) => c,
            Err(e) => {
                // prepare_commit rolls back on failure; make sure of it, so a
                // refused commit can never leave its transaction behind.
                if guard.in_transaction() {
                    guard.rollback();
                }
                db.check_poisoned(&guard);
                return Err(e.into());
            }
        };
        if !changes.is_empty()
            && let Err(e) = db.offer_to_sinks(seq, changes, "commit")
        {
            guard.rollback();
            db.check_poisoned(&guard);
            return Err(e);
        }
        let commit = guard.finish_commit()?;
        // Still under the write lock: subscribers get commits in order.
        if !commit.changes.is_empty() {
            db.inner.feed.publish(commit.seq, &commit.changes);
        }
        drop(guard);
        // Other writers may start while this one waits for its fsync (group commit).
        drop(self.writer.take());
        // A transaction that changed nothing still reports on a state (its
        // checks passed, its writes were already there): it answers once
        // that state is as durable and replicated as its own commit would be.
        for sink in &db.inner.sinks {
            if let Err(e) = sink.wait_durable(commit.seq) {
                let reason = format!("commit {} may not be durable: {e}", commit.seq);
                if !commit.changes.is_empty() {
                    db.enter_fail_stop(reason.clone());
                }
                return Err(DbError::FailStop(reason));
            }
        }
        for sink in &db.inner.sinks {
            if let Err(reason) = sink.wait_replicated(commit.seq) {
                return Err(DbError::NotReplicated { seq: commit.seq, reason });
            }
        }
        Ok(CommitInfo { seq: commit.seq, changes: commit.changes })
    }

    /// Discard every change of this transaction.
    pub fn rollback(mut self) {
        self.end_rollback();
    }

    fn end_rollback(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.rollback();
            self.db.check_poisoned(&g);
            self.db.inner.active.fetch_sub(1, Ordering::Relaxed);
        }
        drop(self.writer.take());
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        self.end_rollback();
    }
}
