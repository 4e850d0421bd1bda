//! The server's side of backups: the target from `[backup]`/`[storage]`,
//! the archiver shipping the commit log, the scheduler taking full backups
//! every `[backup] interval` (then applying retention), one backup at a
//! time, and the figures `/metrics` and `/health` report.
//!
//! In a replicated cluster only the primary archives and takes scheduled
//! backups (every node may share one configuration and one target). A
//! replica keeps its log from where the archive ends, so that promoted it
//! continues the archive without a gap; promotion starts its archiver, and
//! a primary that learns of a newer epoch stops shipping at once (see
//! [`ecsdb_backup::Branch`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ecsdb::Database;
use ecsdb_backup::manager::quiet;
use ecsdb_backup::{ArchiveStatus, Archiver, BackupError, BackupSettings, Branch, Kind, Manager, Manifest, Target};
use parking_lot::Mutex;

use crate::config::ServerConfig;

/// Backup figures.
#[derive(Debug, Default)]
pub struct Figures {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    /// Unix seconds of the last successful backup (0: none yet).
    pub last_success_unix: AtomicU64,
    pub last_duration_ms: AtomicU64,
}

/// How long a stop waits for the archiver's last pass.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// How often a replica looks where the archive ends.
const FOLLOW_EVERY: Duration = Duration::from_secs(5);

/// Backups of one server.
#[derive(Debug)]
pub struct Backups {
    pub manager: Manager,
    target: Arc<Target>,
    settings: BackupSettings,
    /// `[backup] archive` is on and there is a commit log to ship.
    archive_wanted: bool,
    archiver: Mutex<Option<Archiver>>,
    /// The branch the archiver was last started for (not retried for the
    /// same one after a refusal), and why it could not start.
    started_for: Mutex<Option<Branch>>,
    start_error: Mutex<Option<String>>,
    /// This node is the primary: it archives and takes scheduled backups.
    active: AtomicBool,
    /// A replica: when it last looked where the archive ends.
    followed: Mutex<Option<Instant>>,
    /// A replica: the log it keeps for the archive, bounded by this.
    follow_limit_bytes: u64,
    /// The history this node's data is on (recorded in its backups).
    history: Mutex<Option<Branch>>,
    /// Held while a backup runs: one at a time.
    running: Mutex<()>,
    pub figures: Figures,
    stop: Arc<AtomicBool>,
    scheduler: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Backups {
    /// Set up what `[backup]` asks for (`None` without a target). `branch`:
    /// this node is the primary there (it archives); `None`: a replica or
    /// a fenced node (it does not).
    pub fn start(
        db: &Database,
        c: &ServerConfig,
        branch: Option<Branch>,
        history: Branch,
    ) -> Result<Option<Arc<Backups>>, String> {
        let Some(url) = c.backup.target_url(&c.storage) else { return Ok(None) };
        let target = Arc::new(Target::open(&url, &c.storage).map_err(|e| format!("[backup] target: {e}"))?);
        if c.backup.archive && !db.logs_commits() {
            tracing::warn!(
                "[backup] archive is on but the commit log is disabled (transactions.wal_enabled = false): nothing can be archived; only backups are taken"
            );
        }
        let archive_wanted = c.backup.archive && db.logs_commits();
        if archive_wanted {
            // Until the target has been looked at, the log stays. The
            // archiver itself starts on the role thread (`follow_role`): a
            // slow target does not hold the server's start up.
            db.hold_log_after(0);
        }
        let b = Arc::new(Backups {
            manager: Manager::new(target.clone(), c.backup.clone()),
            target,
            settings: c.backup.clone(),
            archive_wanted,
            archiver: Mutex::new(None),
            started_for: Mutex::new(None),
            start_error: Mutex::new(None),
            active: AtomicBool::new(branch.is_some()),
            followed: Mutex::new(None),
            follow_limit_bytes: c.db.replication.max_retained_log_mb.saturating_mul(1 << 20),
            history: Mutex::new(Some(history)),
            running: Mutex::new(()),
            figures: Figures::default(),
            stop: Arc::new(AtomicBool::new(false)),
            scheduler: Mutex::new(None),
        });
        let every = ecsdb_backup::config::parse_interval(&c.backup.interval).unwrap_or(0);
        if every > 0 {
            let weak = Arc::downgrade(&b);
            let db = db.clone();
            let stop = b.stop.clone();
            let h = std::thread::Builder::new()
                .name("ecsdb-backups".into())
                .spawn(move || {
                    let mut next = Instant::now() + Duration::from_secs(every);
                    while !stop.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(200));
                        if Instant::now() < next {
                            continue;
                        }
                        next = Instant::now() + Duration::from_secs(every);
                        let Some(b) = weak.upgrade() else { return };
                        if !b.active.load(Ordering::Acquire) {
                            continue; // a replica: the primary takes them
                        }
                        match b.create(&db, Kind::Full) {
                            Ok(m) => tracing::info!(id = %m.id, seq = m.end_seq, ms = m.duration_ms, "scheduled backup taken"),
                            Err(e) => tracing::error!(error = %e, "scheduled backup failed"),
                        }
                    }
                })
                .map_err(|e| e.to_string())?;
            *b.scheduler.lock() = Some(h);
        }
        Ok(Some(b))
    }

    /// Before the data directory is opened (and so created): refuse a
    /// target whose archive belongs to another database, so a refused
    /// start leaves nothing behind. An unreachable target is not refused
    /// here (the archiver retries).
    pub fn precheck(c: &ServerConfig) -> Result<(), String> {
        let dir = &c.db.database.data_dir;
        let ours = std::fs::read_to_string(dir.join(ecsdb_backup::state::DATABASE_ID_FILE)).ok();
        Backups::check_owner(c, ours.as_deref().map(str::trim))
    }

    /// Refuse a target holding another database's backups or archive than
    /// `ours` (`None`: a new database). A quick look: a target that does
    /// not answer within seconds is not refused here.
    pub fn check_owner(c: &ServerConfig, ours: Option<&str>) -> Result<(), String> {
        let Some(url) = c.backup.target_url(&c.storage) else { return Ok(()) };
        let target = Arc::new(Target::open(&url, &c.storage.quick()).map_err(|e| format!("[backup] target: {e}"))?);
        // Whose target is it: its archive's identity, else its backups'.
        let theirs = match ecsdb_backup::archive::identity(&target) {
            Ok(Some(id)) => Some(id),
            Ok(None) => Manager::new(target.clone(), c.backup.clone())
                .list()
                .ok()
                .and_then(|l| l.into_iter().find_map(|l| l.manifest.map(|m| m.database_id))),
            // Not answering: not refused here (one look, not two).
            Err(_) => None,
        };
        let Some(theirs) = theirs else { return Ok(()) };
        let dir = &c.db.database.data_dir;
        match ours {
            Some(id) if id == theirs => Ok(()),
            Some(id) => Err(format!(
                "[backup] target: {url} holds database {theirs}'s backups or archive; {} is database {id} (a restored copy is a new database): use another target or prefix",
                dir.display()
            )),
            None => Err(format!(
                "[backup] target: {url} holds database {theirs}'s backups or archive; {} is a new database: use another target or prefix",
                dir.display()
            )),
        }
    }

    pub fn target_url(&self) -> &str {
        self.manager.target.url()
    }

    /// Take a backup now (then apply retention), or refuse while another runs.
    pub fn create(&self, db: &Database, kind: Kind) -> Result<Manifest, BackupError> {
        let Some(_g) = self.running.try_lock() else {
            return Err(BackupError::Conflict("a backup is already running; try again when it is done".into()));
        };
        let started = Instant::now();
        let history = *self.history.lock();
        let r = self.manager.create_on(db, kind, &quiet, history);
        self.figures.last_duration_ms.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        match &r {
            Ok(_) => {
                self.figures.succeeded.fetch_add(1, Ordering::Relaxed);
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                self.figures.last_success_unix.store(now, Ordering::Relaxed);
                match self.manager.apply_retention() {
                    Ok(gone) if !gone.is_empty() => tracing::info!(deleted = ?gone, "backup retention applied"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "backup retention not applied"),
                }
            }
            Err(_) => {
                self.figures.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }

    /// The archiver's figures, when archiving.
    pub fn archive_status(&self) -> Option<ArchiveStatus> {
        self.archiver.lock().as_ref().map(Archiver::status)
    }

    /// Why archiving could not start on this node (after a promotion).
    pub fn archive_start_error(&self) -> Option<String> {
        self.start_error.lock().clone()
    }

    /// Whether this node archives and takes scheduled backups.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Whether this node ships the commit log (or is about to).
    pub fn archives(&self) -> bool {
        self.archive_wanted && self.is_active()
    }

    /// Follow this node's role (called every half second): a primary at
    /// `branch` archives; a node that is not one
    /// (`None`) stops shipping at once and, as a replica, keeps its log
    /// from where the archive ends.
    pub fn follow_role(&self, db: &Database, branch: Option<Branch>, history: Branch) {
        *self.history.lock() = Some(history);
        let Some(b) = branch else {
            self.active.store(false, Ordering::Release);
            *self.started_for.lock() = None;
            let running = self.archiver.lock().take();
            if let Some(a) = running {
                tracing::warn!("this node is no longer the primary: it stops archiving");
                a.abandon();
            }
            if self.archive_wanted {
                self.follow_archive(db);
            }
            return;
        };
        self.active.store(true, Ordering::Release);
        if !self.archive_wanted || self.archiver.lock().is_some() {
            return;
        }
        let mut tried = self.started_for.lock();
        if *tried == Some(b) {
            return; // refused for this branch already
        }
        *tried = Some(b);
        match Archiver::start_deferred(db, self.target.clone(), &self.settings, Some(b)) {
            Ok(a) => {
                tracing::info!(epoch = b.epoch, target = %self.target.url(), "this node archives the commit log now");
                *self.archiver.lock() = Some(a);
                *self.start_error.lock() = None;
            }
            Err(e) => {
                tracing::error!(error = %e, "[backup] archive: cannot archive on this node");
                *self.start_error.lock() = Some(e.to_string());
            }
        }
    }

    /// A replica keeps the commits the archive does not hold yet (so that,
    /// promoted, it continues the archive), within
    /// `replication.max_retained_log_mb`.
    fn follow_archive(&self, db: &Database) {
        {
            let mut f = self.followed.lock();
            if f.is_some_and(|t| t.elapsed() < FOLLOW_EVERY) {
                return;
            }
            *f = Some(Instant::now());
        }
        let Some(dir) = db.data_dir() else { return };
        let ours = std::fs::read_to_string(dir.join(ecsdb_backup::state::DATABASE_ID_FILE)).unwrap_or_default();
        let end = match ecsdb_backup::archive::identity(&self.target) {
            Ok(Some(id)) if id == ours.trim() => ecsdb_backup::archive::archived_upto(&self.target),
            Ok(_) => Ok(u64::MAX), // no archive of this database there
            Err(e) => Err(e),
        };
        match end {
            Ok(end)
                if end != u64::MAX
                    && crate::replication::registry::log_bytes_after(dir, end) > self.follow_limit_bytes =>
            {
                tracing::warn!(
                    archived_to = end,
                    limit_mb = self.follow_limit_bytes >> 20,
                    "the archive is far behind: this replica no longer keeps its log for it (replication.max_retained_log_mb)"
                );
                db.hold_log_after(u64::MAX);
            }
            Ok(end) => db.hold_log_after(end),
            Err(e) => tracing::debug!(error = %e, "the archive's end is unknown (the log stays held)"),
        }
    }

    /// Stop the scheduler; ship the last durable commits and stop the archiver.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.scheduler.lock().take() {
            let _ = h.join();
        }
        let running = self.archiver.lock().take();
        if let Some(a) = running {
            // Its last pass ships what is durable; a target that does not
            // answer is not waited for long (what it did not get stays in
            // the local log, held, and ships on the next start).
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let stopper = std::thread::Builder::new().name("ecsdb-archiver-stop".into()).spawn(move || {
                a.stop();
                let _ = tx.send(());
            });
            if stopper.is_ok() && rx.recv_timeout(STOP_WAIT).is_err() {
                tracing::warn!(
                    secs = STOP_WAIT.as_secs(),
                    "the archiver's last pass did not finish (the target is slow or silent): the commits it did not ship stay in the log and ship on the next start"
                );
            }
        }
    }
}

// ---- HTTP: /v1/admin/backups ----

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::{Value as J, json};

use crate::app::Shared;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::handlers::{OptionalBody, audit, blocking};

impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> ApiError {
        match e {
            BackupError::NotFound(m) => ApiError::not_found(m),
            BackupError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            BackupError::Config(m) => ApiError::bad_request(m),
            BackupError::Corrupt(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "corrupt", m),
            e @ BackupError::Target { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "target_unavailable", e.to_string())
            }
            BackupError::Db(d) => d.into(),
            e @ BackupError::Io { .. } => ApiError::internal(e.to_string()),
        }
    }
}

fn configured(st: &Shared) -> ApiResult<Arc<Backups>> {
    st.backups.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "backups_not_configured",
            "no backup target: set [backup] target in the configuration (or ECSDB_BACKUP_TARGET) and restart",
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBackup {
    /// `full` (default) or `incremental`.
    #[serde(rename = "type", default = "full")]
    pub kind: Kind,
}

fn full() -> Kind {
    Kind::Full
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    #[serde(default)]
    pub deep: bool,
}

/// `?force=true|false` (nothing else).
fn force_param(q: Option<&str>) -> ApiResult<bool> {
    let mut force = false;
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("force", "true")) => force = true,
            Some(("force", "false")) => force = false,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{pair}` (the only one is force=true|false)"
                )));
            }
        }
    }
    Ok(force)
}

/// `POST /v1/admin/backups`: take a backup now (`{"type": "incremental"}`
/// for the commits since the newest one); answers with its manifest.
pub async fn create(
    State(st): State<Shared>,
    Extension(p): Extension<Principal>,
    OptionalBody(b): OptionalBody<NewBackup>,
) -> ApiResult<(StatusCode, Json<J>)> {
    let kind = b.map_or(Kind::Full, |b| b.kind);
    let backups = configured(&st)?;
    blocking(&st, move |st| {
        let m = backups.create(&st.db, kind)?;
        audit(&p, "create_backup", &json!({"id": m.id, "type": m.kind, "end_seq": m.end_seq}));
        Ok((StatusCode::CREATED, Json(json!(m))))
    })
    .await
}

/// `GET /v1/admin/backups`: the backups on the target, and the archiver.
pub async fn list(State(st): State<Shared>) -> ApiResult<Json<J>> {
    let backups = configured(&st)?;
    blocking(&st, move |_| {
        let listed = backups.manager.list()?;
        let items: Vec<J> = listed
            .iter()
            .map(|l| match &l.manifest {
                Some(m) => json!({"id": l.id, "usable": true, "manifest": m}),
                None => json!({"id": l.id, "usable": false, "problem": l.problem, "objects": l.objects}),
            })
            .collect();
        Ok(Json(json!({
            "target": backups.target_url(),
            "backups": items,
            "archive": backups.archive_status(),
            "archive_start_error": backups.archive_start_error(),
            "archiving_here": backups.is_active() && backups.archive_status().is_some(),
        })))
    })
    .await
}

/// `GET /v1/admin/backups/{id}`: one backup's manifest.
pub async fn show(State(st): State<Shared>, Path(id): Path<String>) -> ApiResult<Json<J>> {
    let backups = configured(&st)?;
    blocking(&st, move |_| Ok(Json(json!(backups.manager.manifest(&id)?)))).await
}

/// `POST /v1/admin/backups/{id}/verify` (`{"deep": true}` restores it into
/// a temporary directory and compares): 200 with the report either way;
/// `ok` says whether it verified.
pub async fn verify(
    State(st): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    OptionalBody(b): OptionalBody<VerifyBody>,
) -> ApiResult<Json<J>> {
    let deep = b.unwrap_or_default().deep;
    let backups = configured(&st)?;
    blocking(&st, move |_| {
        ecsdb_backup::manager::check_id(&id)?;
        let r = ecsdb_backup::verify::verify_backup(&backups.manager, &id, deep, &quiet);
        if r.problems.iter().any(|p| p.starts_with("no backup ")) {
            return Err(ApiError::not_found(r.problems.join("; ")));
        }
        // Not damage: the target could not be asked.
        if r.unavailable {
            return Err(ApiError::new(StatusCode::BAD_GATEWAY, "target_unavailable", r.problems.join("; ")));
        }
        audit(&p, "verify_backup", &json!({"id": id, "deep": deep, "ok": r.ok}));
        Ok(Json(json!(r)))
    })
    .await
}

/// `DELETE /v1/admin/backups/{id}` (`?force=true` also deletes the
/// incrementals built on it).
pub async fn delete(
    State(st): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<J>> {
    let force = force_param(q.as_deref())?;
    let backups = configured(&st)?;
    blocking(&st, move |_| {
        let gone = backups.manager.delete(&id, force)?;
        audit(&p, "delete_backup", &json!({"id": id, "deleted": gone}));
        Ok(Json(json!({"deleted": gone})))
    })
    .await
}

/// The backup routes.
pub fn routes(r: Router<Shared>) -> Router<Shared> {
    r.route("/v1/admin/backups", axum::routing::get(list).post(create))
        .route("/v1/admin/backups/{id}", axum::routing::get(show).delete(delete))
        .route("/v1/admin/backups/{id}/verify", axum::routing::post(verify))
}
