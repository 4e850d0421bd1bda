//! The replica side: bootstrap from the primary's snapshot, then follow its
//! commit stream on one thread — read a frame, check it, apply it, make it
//! durable, acknowledge — reconnecting with backoff, following a new
//! primary after a failover, and asking for a fresh bootstrap when the
//! primary says its log no longer reaches back far enough (or that this
//! node holds commits the new history does not).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value as J, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::{HandshakeError, Message};

use super::state::{self, EpochStart, NodeState, Role};
use super::wire::{self, Frame};
use super::{Replication, now_ms};
use crate::app::Shared;

fn agent(response_timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_recv_response(Some(response_timeout))
        .build()
        .into()
}

/// The error message of a JSON error body (or the body itself).
fn error_text(status: u16, body: &str) -> (String, String, Option<String>) {
    match serde_json::from_str::<J>(body) {
        Ok(v) => (
            v["error"]["code"].as_str().unwrap_or("error").to_string(),
            format!("{status}: {}", v["error"]["message"].as_str().unwrap_or(body)),
            v["error"]["primary"].as_str().map(str::to_string),
        ),
        Err(_) => ("error".into(), format!("{status}: {}", body.chars().take(300).collect::<String>()), None),
    }
}

/// `GET <peer>/v1/replication/status`.
pub fn peer_status(peer: &str) -> Result<J, String> {
    let mut r = agent(Duration::from_secs(2))
        .get(&format!("{peer}/v1/replication/status"))
        .call()
        .map_err(|e| format!("{peer}: {e}"))?;
    if r.status() != 200 {
        return Err(format!("{peer}: status {}", r.status()));
    }
    r.body_mut().read_json::<J>().map_err(|e| format!("{peer}: {e}"))
}

/// Tell `peer` that epoch `epoch` (led by `me`) exists.
pub fn send_fence(peer: &str, key: Option<&str>, epoch: u64, me: &str) -> Result<J, String> {
    let mut req = agent(Duration::from_secs(3)).post(&format!("{peer}/v1/replication/fence"));
    if let Some(k) = key {
        req = req.header("authorization", &format!("Bearer {k}"));
    }
    answer(peer, req.send_json(json!({"epoch": epoch, "primary": me})))
}

/// The node among `peers` that is primary at the newest epoch at least
/// `min_epoch`, if any answers.
pub fn find_primary(peers: &[String], me: &str, min_epoch: u64) -> Option<(String, u64)> {
    let mut best: Option<(String, u64)> = None;
    for p in peers.iter().filter(|p| p.as_str() != me) {
        if let Ok(s) = peer_status(p)
            && s["role"] == "primary"
            && let Some(e) = s["epoch"].as_u64()
            && e >= min_epoch
            && best.as_ref().is_none_or(|b| e > b.1)
        {
            best = Some((p.clone(), e));
        }
    }
    best
}

/// Whether `dir` holds no database yet.
pub fn is_empty_data_dir(dir: &Path) -> bool {
    !dir.join(ecsdb::SCHEMA_FILE_NAME).exists()
}

fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

fn sync_dir(d: &Path) -> Result<(), String> {
    std::fs::File::open(d).and_then(|f| f.sync_all()).map_err(|e| format!("{}: {e}", d.display()))
}

/// What a new replica takes from its primary besides the state.
struct Meta {
    seq: u64,
    epoch: u64,
    database_id: String,
    history: Vec<EpochStart>,
    peers: Vec<String>,
    jwt: Option<String>,
}

/// Fill the empty data directory `dir` from `primary`'s snapshot: the
/// snapshot (checked block by block before it is kept), the schema, the
/// database id, the JWT secret (unless configured) and the replication
/// state. Returns the snapshot's sequence.
pub fn bootstrap(primary: &str, key: &str, dir: &Path, keep_jwt: bool) -> Result<u64, String> {
    let started = Instant::now();
    let mut resp = agent(Duration::from_mins(2))
        .get(&format!("{primary}/v1/replication/snapshot"))
        .header("authorization", &format!("Bearer {key}"))
        .call()
        .map_err(|e| format!("bootstrap from {primary}: {e}"))?;
    let status = resp.status().as_u16();
    if status != 200 {
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        let (_, msg, _) = error_text(status, &body);
        return Err(format!("bootstrap from {primary} refused: {msg}"));
    }
    let h = resp.headers();
    let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    let num = |k: &str| {
        get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("bootstrap from {primary}: header {k} missing"))
    };
    let meta = Meta {
        seq: num("x-ecsdb-seq")?,
        epoch: num("x-ecsdb-epoch")?,
        database_id: get("x-ecsdb-database-id").ok_or_else(|| format!("bootstrap from {primary}: no database id"))?,
        history: get("x-ecsdb-history")
            .and_then(|s| serde_json::from_str(&s).ok())
            .ok_or_else(|| format!("bootstrap from {primary}: no epoch history"))?,
        peers: get("x-ecsdb-peers").and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default(),
        jwt: get("x-ecsdb-jwt-secret"),
    };
    let mut body = resp.body_mut().as_reader();
    let mut bytes = Vec::new();
    body.read_to_end(&mut bytes).map_err(|e| format!("bootstrap from {primary}: reading the snapshot: {e}"))?;
    install(dir, primary, &bytes, &meta, keep_jwt, &format!("the snapshot from {primary}"))?;
    tracing::info!(
        seq = meta.seq,
        bytes = bytes.len(),
        ms = started.elapsed().as_millis() as u64,
        primary,
        "bootstrapped from the primary's snapshot"
    );
    Ok(meta.seq)
}

/// Why a bootstrap from the backup target did not happen: `transient`
/// (the target or the primary could not be reached: try again) or not
/// (the target cannot serve this replica: use the primary, or give up).
#[derive(Debug)]
pub struct NotFromBackup {
    pub transient: bool,
    pub message: String,
}

fn not_from_backup(transient: bool, message: String) -> NotFromBackup {
    NotFromBackup { transient, message }
}

/// `GET <primary>/v1/replication/bootstrap`.
fn bootstrap_info(primary: &str, key: &str) -> Result<J, NotFromBackup> {
    let mut r = agent(Duration::from_secs(30))
        .get(&format!("{primary}/v1/replication/bootstrap"))
        .header("authorization", &format!("Bearer {key}"))
        .call()
        .map_err(|e| not_from_backup(true, format!("{primary}: {e}")))?;
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    if status != 200 {
        let (code, msg, _) = error_text(status, &body);
        // Another node may be the primary by now: not for the target to fix.
        let transient = code == "not_primary" || status >= 500;
        return Err(not_from_backup(transient, format!("{primary} answered {msg}")));
    }
    serde_json::from_str(&body).map_err(|e| not_from_backup(true, format!("{primary}: {e}")))
}

/// Fill the empty data directory `dir` from the backup target (a full
/// backup or an archived snapshot, and the archived log after it) instead
/// of the primary's snapshot, taking from the primary only what the target
/// does not hold (database id, epochs, nodes, token secret). The state
/// must be this database's, in the primary's history, and reach the first
/// commit the primary's log still holds, or nothing is written.
///
/// In the primary's history for certain is every commit up to the first
/// failover it records (after it, a former primary's commits may be on the
/// target): past it the replica takes the rest from the primary's log.
pub fn bootstrap_from_backup(
    primary: &str,
    key: &str,
    dir: &Path,
    keep_jwt: bool,
    target: &std::sync::Arc<ecsdb_backup::Target>,
    quick: &std::sync::Arc<ecsdb_backup::Target>,
    level: i32,
) -> Result<u64, NotFromBackup> {
    use ecsdb_backup::{Point, Request, archive};
    let started = Instant::now();
    let info = bootstrap_info(primary, key)?;
    let bad = |what: &str| not_from_backup(false, format!("{primary}'s bootstrap answer: {what}"));
    let num = |k: &str| info[k].as_u64().ok_or_else(|| bad(&format!("no `{k}`")));
    let meta = Meta {
        seq: num("seq")?,
        epoch: num("epoch")?,
        database_id: info["database_id"].as_str().ok_or_else(|| bad("no `database_id`"))?.to_string(),
        history: serde_json::from_value(info["history"].clone()).map_err(|e| bad(&format!("`history`: {e}")))?,
        peers: serde_json::from_value(info["peers"].clone()).unwrap_or_default(),
        jwt: info["jwt_secret"].as_str().map(str::to_string),
    };
    let log_from = num("log_from")?;
    let url = target.url().to_string();
    let unreachable = |e: ecsdb_backup::BackupError| match e {
        e @ ecsdb_backup::BackupError::Target { .. } => not_from_backup(true, e.to_string()),
        e => not_from_backup(false, format!("{url}: {e}")),
    };
    // Whose target is it, and what does it reach? (A quick look: a target
    // that does not answer is not waited for long.)
    let manager = ecsdb_backup::Manager::new(quick.clone(), ecsdb_backup::BackupSettings::default());
    let ours = |id: &str| id == meta.database_id;
    let archived = archive::identity(quick).map_err(unreachable)?;
    if let Some(id) = archived.as_deref().filter(|id| !ours(id)) {
        return Err(not_from_backup(
            false,
            format!("{url} archives database {id}; the primary serves database {}", meta.database_id),
        ));
    }
    let mut avail = if archived.is_some() {
        archive::archived_upto(quick)
            .map_err(unreachable)?
            .max(archive::list_snapshots_on(quick).map_err(unreachable)?.last().map_or(0, |s| s.seq))
    } else {
        0
    };
    for l in manager.list().map_err(unreachable)? {
        if let Some(m) = l.manifest.filter(|m| ours(&m.database_id)) {
            avail = avail.max(m.end_seq);
        }
    }
    if avail == 0 {
        return Err(not_from_backup(
            false,
            format!("{url} holds no backup or archive of database {}", meta.database_id),
        ));
    }
    let branch_point = meta.history.iter().filter(|h| h.epoch > 1).map(|h| h.after_seq).min();
    let point = avail.min(branch_point.unwrap_or(u64::MAX)).min(meta.seq);
    if point + 1 < log_from {
        let why = match branch_point {
            Some(b) if b < avail => {
                format!(" (its state past commit {b}, where the first failover began, may not be the primary's)")
            }
            _ => String::new(),
        };
        return Err(not_from_backup(
            false,
            format!(
                "{url} reaches commit {point}{why} and the primary's log starts at commit {log_from}: a replica could not continue from there"
            ),
        ));
    }
    let req = Request { backup: None, point: Point::Seq(point), data_dir: dir.to_path_buf(), force: false };
    let (world, outcome) =
        ecsdb_backup::restore::build(target, &req, &ecsdb_backup::manager::quiet).map_err(unreachable)?;
    if outcome.seq != point {
        return Err(not_from_backup(
            false,
            format!("{url}: the restore stopped at commit {}, not {point}", outcome.seq),
        ));
    }
    let image = ecsdb::storage::snapshot::capture(&world);
    drop(world);
    let bytes = ecsdb::storage::snapshot::encode(&image, level)
        .map_err(|e| not_from_backup(false, format!("encoding the state restored from {url}: {e}")))?;
    drop(image);
    let primary_seq = meta.seq;
    let meta = Meta { seq: point, ..meta };
    install(dir, primary, &bytes, &meta, keep_jwt, &format!("the state restored from {url}"))
        .map_err(|e| not_from_backup(false, e))?;
    tracing::info!(
        seq = point,
        base = %outcome.base,
        replayed = outcome.commits_replayed,
        primary_seq,
        ms = started.elapsed().as_millis() as u64,
        target = %url,
        "bootstrapped from the backup target; the primary's log continues it"
    );
    Ok(point)
}

/// Install a bootstrap's state in `dir`: the snapshot `bytes` (checked
/// block by block before it is kept), its schema, the database id, the JWT
/// secret (unless configured) and the replication state.
fn install(dir: &Path, primary: &str, bytes: &[u8], meta: &Meta, keep_jwt: bool, what: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let database_id = ecsdb_backup::state::parse_id(&meta.database_id)
        .ok_or_else(|| format!("bootstrap from {primary}: `{}` is not a database id", meta.database_id))?;
    let seq = meta.seq;
    let tmp = dir.join("bootstrap.tmp");
    let mut f = private_file(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| format!("{}: {e}", tmp.display()))?;
    drop(f);
    let info = ecsdb::storage::snapshot::verify(&tmp, bytes).map_err(|e| format!("{what} is damaged: {e}"))?;
    if info.seq != seq {
        return Err(format!("{what} is at commit {}, not {seq} as announced", info.seq));
    }
    let schema = ecsdb::storage::snapshot::embedded_schema(&tmp, bytes)
        .map_err(|e| format!("{what}: {e}"))?
        .ok_or_else(|| format!("{what} carries no schema"))?;
    ecsdb::install_schema_file(dir, &schema).map_err(|e| e.to_string())?;
    let snaps = dir.join("snapshots");
    std::fs::create_dir_all(&snaps).map_err(|e| format!("{}: {e}", snaps.display()))?;
    let dest = snaps.join(ecsdb::storage::snapshot::snapshot_name(seq));
    std::fs::rename(&tmp, &dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    sync_dir(&snaps)?;
    ecsdb_backup::state::write_id(dir, &database_id).map_err(|e| e.to_string())?;
    if let Some(secret) = meta.jwt.as_ref().filter(|_| !keep_jwt) {
        let p = dir.join("jwt_secret");
        let t = dir.join("jwt_secret.tmp");
        let mut f = private_file(&t).map_err(|e| format!("{}: {e}", t.display()))?;
        f.write_all(secret.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| format!("{}: {e}", t.display()))?;
        std::fs::rename(&t, &p).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    let mut node = NodeState {
        role: Role::Replica,
        epoch: meta.epoch,
        fenced_by: None,
        history: Vec::new(),
        primary: Some(primary.trim_end_matches('/').to_string()),
        peers: Vec::new(),
        configured: None,
    };
    node.adopt_history(&meta.history);
    if node.history.is_empty() {
        node.history.push(EpochStart { epoch: meta.epoch, after_seq: 0 });
    }
    for p in &meta.peers {
        node.add_peer(p);
    }
    state::store(dir, &node)?;
    sync_dir(dir)
}

/// Move a replica's data aside before bootstrapping it again (one set kept:
/// an older `pre-bootstrap-*` folder is removed).
pub fn set_aside(dir: &Path) -> Result<PathBuf, String> {
    let entries: Vec<_> =
        std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?.filter_map(Result::ok).collect();
    for e in &entries {
        let n = e.file_name().to_string_lossy().to_string();
        if n.starts_with("pre-bootstrap-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let secs = now_ms() / 1000;
    let aside = dir.join(format!("pre-bootstrap-{secs}"));
    std::fs::create_dir_all(&aside).map_err(|e| format!("{}: {e}", aside.display()))?;
    for e in entries {
        let n = e.file_name().to_string_lossy().to_string();
        // The lock, secrets and other set-aside folders stay.
        if n == "LOCK" || n == "jwt_secret" || n.starts_with("pre-") {
            continue;
        }
        std::fs::rename(e.path(), aside.join(&n)).map_err(|err| format!("{}: {err}", e.path().display()))?;
    }
    sync_dir(dir)?;
    Ok(aside)
}

/// Why following stopped.
enum Stop {
    /// Try again after a pause.
    Retry(String),
    /// Follow this node instead.
    Follow(String),
    /// Bootstrap again.
    Bootstrap(String),
    /// Configuration problem: keep retrying slowly, say so loudly.
    Refused(String),
    /// No longer a replica, or shutting down.
    Done,
}

fn host_of(url: &str) -> &str {
    url.trim_start_matches("http://").trim_end_matches('/')
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Run the follower until the node stops being a replica or shuts down.
pub fn run(st: &Shared) {
    let r = st.replication.clone();
    let mut backoff = Duration::from_millis(50);
    let mut failures = 0u32;
    loop {
        if r.stop.load(Ordering::Acquire) || *st.stopping.borrow() || r.role() != Role::Replica {
            return;
        }
        let Some(primary) = r.snapshot_state().primary else { return };
        match follow(st, &primary) {
            Stop::Done => return,
            Stop::Bootstrap(why) => {
                r.follower.lock().last_error = Some(why.clone());
                r.request_rebootstrap(why);
                return;
            }
            Stop::Follow(url) => {
                tracing::warn!(from = %primary, to = %url, "following a new primary");
                if let Err(e) = r.update(|s| {
                    s.primary = Some(url.clone());
                    s.add_peer(&url);
                }) {
                    tracing::error!(error = %e, "cannot record the new primary");
                }
                failures = 0;
            }
            Stop::Retry(why) | Stop::Refused(why) => {
                failures += 1;
                {
                    let mut f = r.follower.lock();
                    f.connected = false;
                    f.reconnects += 1;
                    if f.last_error.as_deref() != Some(&why) {
                        tracing::warn!(primary = %primary, reason = %why, "replication stream interrupted; reconnecting");
                    }
                    f.last_error = Some(why);
                }
                if failures >= 3 {
                    // The primary may be gone: is another node primary now?
                    let s = r.snapshot_state();
                    if let Some((p, epoch)) = find_primary(&s.peers, &r.advertise, s.epoch)
                        && p != primary
                    {
                        let _ = r.update(|s| s.primary = Some(p.clone()));
                        if epoch > s.epoch {
                            tracing::warn!(from = %primary, to = %p, epoch, "following the primary of a newer epoch");
                        } else {
                            tracing::warn!(from = %primary, to = %p, epoch, "the primary does not answer at its address: following it at another it is known by");
                        }
                        failures = 0;
                        continue;
                    }
                }
                sleep_unless_stopped(st, backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

fn sleep_unless_stopped(st: &Shared, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if st.replication.stop.load(Ordering::Acquire) || *st.stopping.borrow() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())));
    }
}

fn follow(st: &Shared, primary: &str) -> Stop {
    let r = &st.replication;
    let db = &st.db;
    let Some(key) = r.replica_key.clone() else {
        return Stop::Refused("no replica key (ECSDB_REPLICA_KEY or --replica-key)".into());
    };
    let host = host_of(primary);
    let Ok(Some(addr)) = host.to_socket_addrs().map(|mut a| a.next()) else {
        return Stop::Retry(format!("{primary}: cannot resolve {host}"));
    };
    let timeout = Duration::from_millis(r.config.peer_timeout_ms);
    let tcp = match TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(3))) {
        Ok(t) => t,
        Err(e) => return Stop::Retry(format!("{primary}: {e}")),
    };
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    let node = r.snapshot_state();
    let after = db.version();
    let replica_id = r.config.replica_id.clone().unwrap_or_else(|| r.advertise.clone());
    let url = format!(
        "ws://{host}/v1/replication/stream?after={after}&epoch={}&database_id={}&replica_id={}&advertise={}",
        node.epoch,
        r.database_id,
        pct(&replica_id),
        pct(&r.advertise)
    );
    let mut req = match url.into_client_request() {
        Ok(q) => q,
        Err(e) => return Stop::Refused(format!("{primary}: {e}")),
    };
    match format!("Bearer {key}").parse() {
        Ok(v) => {
            req.headers_mut().insert("authorization", v);
        }
        Err(_) => return Stop::Refused("the replica key is not a valid header value".into()),
    }
    let mut cfg = tungstenite::protocol::WebSocketConfig::default();
    cfg.max_message_size = Some(wire::MAX_FRAME);
    cfg.max_frame_size = Some(wire::MAX_FRAME);
    let mut ws = match tungstenite::client::client_with_config(req, tcp, Some(cfg)) {
        Ok((ws, _)) => ws,
        Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let status = resp.status().as_u16();
            let body = resp.body().as_ref().map(|b| String::from_utf8_lossy(b).to_string()).unwrap_or_default();
            let (code, msg, named) = error_text(status, &body);
            return match code.as_str() {
                "bootstrap_required" => Stop::Bootstrap(msg),
                "not_primary" => match named {
                    Some(p) if p != primary => Stop::Follow(p),
                    _ => Stop::Retry(format!("{primary} is not the primary: {msg}")),
                },
                "unauthorized" | "forbidden" | "database_mismatch" => {
                    Stop::Refused(format!("{primary} refused this replica: {msg}"))
                }
                _ => Stop::Retry(format!("{primary}: {msg}")),
            };
        }
        Err(e) => return Stop::Retry(format!("{primary}: {e}")),
    };
    {
        let mut f = r.follower.lock();
        f.connected = true;
        f.applied_seq = after;
        f.last_contact_unix_ms = now_ms();
    }
    tracing::info!(primary, after, "following the primary");
    loop {
        if *st.stopping.borrow() || r.stop.load(Ordering::Acquire) {
            let _ = ws.close(None);
            return Stop::Done;
        }
        let msg = match ws.read() {
            Ok(m) => m,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                return Stop::Retry(format!("no word from {primary} for {} ms", timeout.as_millis()));
            }
            Err(e) => return Stop::Retry(format!("{primary}: {e}")),
        };
        let now = now_ms();
        r.follower.lock().last_contact_unix_ms = now;
        match msg {
            Message::Text(t) => {
                let v: J = serde_json::from_str(&t).unwrap_or(J::Null);
                match v["type"].as_str() {
                    Some("hello") => {
                        let history: Vec<EpochStart> = serde_json::from_value(v["history"].clone()).unwrap_or_default();
                        let peers: Vec<String> = serde_json::from_value(v["peers"].clone()).unwrap_or_default();
                        let mine = r.snapshot_state();
                        if let Some(end) = history.iter().find(|h| h.epoch > mine.epoch).map(|h| h.after_seq)
                            && after > end
                        {
                            return Stop::Bootstrap(format!(
                                "this node holds commits up to {after}, past commit {end} where the primary's epoch began"
                            ));
                        }
                        let res = r.update(|s| {
                            s.adopt_history(&history);
                            for p in &peers {
                                if *p != r.advertise {
                                    s.add_peer(p);
                                }
                            }
                        });
                        if let Err(e) = res {
                            return Stop::Retry(format!("recording the primary's epoch: {e}"));
                        }
                        if let Some(ps) = v["primary_seq"].as_u64() {
                            r.follower.lock().primary_seq = ps;
                        }
                    }
                    Some("peers") => {
                        let peers: Vec<String> = serde_json::from_value(v["peers"].clone()).unwrap_or_default();
                        let _ = r.update(|s| {
                            for p in &peers {
                                if *p != r.advertise {
                                    s.add_peer(p);
                                }
                            }
                        });
                    }
                    Some("error") => {
                        let m = v["message"].as_str().unwrap_or("").to_string();
                        return if v["code"] == "bootstrap_required" {
                            Stop::Bootstrap(m)
                        } else {
                            Stop::Retry(format!("{primary}: {m}"))
                        };
                    }
                    _ => return Stop::Retry(format!("{primary} sent an unreadable message")),
                }
            }
            Message::Binary(b) => {
                let frame = match wire::decode(&b) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::error!(primary, error = %e, "a damaged frame from the primary was refused (nothing of it applied); reconnecting");
                        return Stop::Retry(format!("a damaged frame from {primary}: {e}"));
                    }
                };
                let my_epoch = r.epoch();
                match frame {
                    Frame::Records { epoch, records } => {
                        if epoch < my_epoch {
                            return Stop::Retry(format!(
                                "{primary} sent epoch {epoch} commits; this node knows epoch {my_epoch}"
                            ));
                        }
                        let mut batch = Vec::with_capacity(records.len());
                        for (seq, payload) in records {
                            match ecsdb::ChangeSet::decode(&payload) {
                                Ok(cs) => batch.push((seq, cs)),
                                Err(e) => return Stop::Retry(format!("commit {seq} from {primary}: {e}")),
                            }
                        }
                        let applied = {
                            let _quiet = r.follower_apply.lock();
                            if r.role() != Role::Replica {
                                return Stop::Done;
                            }
                            let res = db.apply_replicated(&batch);
                            match res {
                                Ok(seq) => {
                                    if let Err(e) = db.sync_to(seq) {
                                        return Stop::Refused(format!("making replicated commits durable: {e}"));
                                    }
                                    seq
                                }
                                Err(e) => {
                                    if db.fail_stopped().is_some() {
                                        return Stop::Bootstrap(format!("applying commits from {primary}: {e}"));
                                    }
                                    return Stop::Retry(format!("applying commits from {primary}: {e}"));
                                }
                            }
                        };
                        {
                            let mut f = r.follower.lock();
                            f.applied_seq = applied;
                            f.primary_seq = f.primary_seq.max(applied);
                            if f.primary_seq <= applied {
                                f.behind_since_unix_ms = 0;
                            }
                        }
                        if let Err(e) =
                            ws.send(Message::Text(json!({"type": "ack", "seq": applied}).to_string().into()))
                        {
                            return Stop::Retry(format!("{primary}: {e}"));
                        }
                    }
                    Frame::Heartbeat { durable_seq, .. } => {
                        let applied = db.version();
                        {
                            let mut f = r.follower.lock();
                            f.primary_seq = durable_seq;
                            if durable_seq > applied {
                                if f.behind_since_unix_ms == 0 {
                                    f.behind_since_unix_ms = now;
                                }
                            } else {
                                f.behind_since_unix_ms = 0;
                            }
                        }
                        if let Err(e) =
                            ws.send(Message::Text(json!({"type": "ack", "seq": applied}).to_string().into()))
                        {
                            return Stop::Retry(format!("{primary}: {e}"));
                        }
                    }
                }
            }
            Message::Close(_) => return Stop::Retry(format!("{primary} closed the stream")),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

/// A node starting as primary asks the nodes it knows whether a newer
/// epoch exists (it was failed over while down): if so it starts fenced.
pub fn check_epoch_on_start(r: &Replication) {
    let s = r.snapshot_state();
    if s.role != Role::Primary || s.peers.is_empty() {
        return;
    }
    if let Some((primary, epoch)) = find_primary(&s.peers, &r.advertise, s.epoch + 1) {
        match r.fence(epoch, Some(&primary)) {
            Ok(_) => tracing::warn!(epoch, %primary, "a newer primary exists: this node is fenced (writes refused)"),
            Err(e) => tracing::error!(error = %e, "cannot record the fence"),
        }
    }
}

/// `POST <url>/v1/admin/promote` with an admin credential (the CLI's
/// `ecsdb promote`).
pub fn promote(url: &str, key: &str, force: bool) -> Result<J, String> {
    let req = agent(Duration::from_mins(1))
        .post(&format!("{url}/v1/admin/promote"))
        .header("authorization", &format!("Bearer {key}"));
    answer(url, req.send_json(json!({"force": force})))
}

/// A node's replication report: `GET /v1/admin/replication` with a
/// credential, else the public `GET /v1/replication/status`.
pub fn status_report(url: &str, key: Option<&str>) -> Result<J, String> {
    let Some(k) = key else { return peer_status(url) };
    let req = agent(Duration::from_secs(10))
        .get(&format!("{url}/v1/admin/replication"))
        .header("authorization", &format!("Bearer {k}"));
    answer(url, req.call())
}

/// A JSON answer, or the error it carries.
fn answer(url: &str, res: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<J, String> {
    let mut r = res.map_err(|e| format!("{url}: {e}"))?;
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    if status != 200 {
        return Err(format!("{url}: {}", error_text(status, &body).1));
    }
    serde_json::from_str(&body).map_err(|e| format!("{url}: {e}"))
}
