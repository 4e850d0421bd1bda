//! A remote `ecsdb serve` (`ECSDB_URL`) as the game's durable store.
//!
//! Why this shape: the tick loop reads and writes every online player's
//! components 20 times a second, which must not cross a network. So the
//! game server keeps the world in an in-memory ecsdb of its own (the same
//! schema, the same code paths as embedded mode) and the remote database
//! is where it is made durable: at start the remote's game tables are
//! loaded with their ids; after that every local commit is handed (in
//! commit order, by a commit listener) to a pusher thread that sends it to
//! the remote as one `/v1/transactions` request — several commits at once
//! when it is behind, each request atomic, all in order.
//!
//! Ids are the remote's: an entity is created there first (an empty
//! `create`), then locally with that id, so the two never disagree, even
//! about ids freed by deletes. Account operations (register, login,
//! logout, bans) answer only once their commit is on the remote; ticks do
//! not wait (the world keeps moving while the remote is slow), so a
//! crash of the game server loses at most the commits not yet pushed
//! (`game_remote_lag_commits`, normally under one tick). A remote that
//! refuses a request for a reason a retry cannot fix (4xx other than 408
//! and 429) stops the pusher: the world pauses and `/health` says why.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ecsdb::{Change, ChangeSet, Database, EntityId, Schema};
use parking_lot::{Condvar, Mutex};
use serde_json::{Map, Value as J, json};

/// Game tables loaded at start, with a scalar field to page by.
const TABLES: &[(&str, &str)] = &[
    ("account", "created_at"),
    ("session", "expires_at"),
    ("progress", "level"),
    ("gear", "inventory"),
    ("body", "radius"),
    ("label", "level"),
];
const PAGE: usize = 5000;
/// Most commits one request carries.
const MAX_BATCH_COMMITS: usize = 256;

pub struct Remote {
    base: String,
    auth: String,
    agent: ureq::Agent,
    queue: Mutex<VecDeque<(u64, Arc<ChangeSet>)>>,
    wake: Condvar,
    /// Highest local sequence the remote has acknowledged.
    pushed: AtomicU64,
    pushed_lock: Mutex<()>,
    pushed_cv: Condvar,
    /// Highest local sequence handed to the pusher.
    recorded: AtomicU64,
    /// Why the pusher stopped for good.
    failed: Mutex<Option<String>>,
    /// The last transient error (cleared by a success).
    last_error: Mutex<Option<String>>,
    stop: AtomicBool,
    /// The remote's batch marker: its entity, and the batches applied.
    marker: Mutex<(u64, u64)>,
    pub pushes: AtomicU64,
    pub push_errors: AtomicU64,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("base", &self.base).finish_non_exhaustive()
    }
}

/// What `/health` shows of the remote.
#[derive(Debug, Clone)]
pub struct RemoteStatus {
    pub url: String,
    pub lag_commits: u64,
    pub failed: Option<String>,
    pub last_error: Option<String>,
}

fn err_text(status: u16, body: &J) -> String {
    let m = body["error"]["message"].as_str().or_else(|| body["message"].as_str()).unwrap_or("");
    format!("HTTP {status}: {m}")
}

impl Remote {
    /// Check that `url` answers and holds the game's tables.
    pub fn connect(url: &str, key: &str, schema: &Schema) -> Result<Arc<Remote>, String> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!("ECSDB_URL={url}: expected http://host:port or https://…"));
        }
        if key.is_empty() {
            return Err("ECSDB_URL is set but ECSDB_API_KEY is not: create a key with read and write permissions on the ecsdb server (POST /v1/admin/api-keys)".into());
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let r = Arc::new(Remote {
            base,
            auth: format!("Bearer {key}"),
            agent,
            queue: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            pushed: AtomicU64::new(0),
            pushed_lock: Mutex::new(()),
            pushed_cv: Condvar::new(),
            recorded: AtomicU64::new(0),
            failed: Mutex::new(None),
            last_error: Mutex::new(None),
            stop: AtomicBool::new(false),
            marker: Mutex::new((0, 0)),
            pushes: AtomicU64::new(0),
            push_errors: AtomicU64::new(0),
        });
        let (status, remote_schema) = r.get("/v1/schema")?;
        if status != 200 {
            return Err(format!("{}/v1/schema: {}", r.base, err_text(status, &remote_schema)));
        }
        let tables = &remote_schema["tables"];
        let mut missing = Vec::new();
        for t in &schema.tables {
            let Some(rt) = find_table(tables, &t.name) else {
                missing.push(t.name.clone());
                continue;
            };
            for f in &t.fields {
                if !has_field(rt, &f.name) {
                    missing.push(format!("{}.{}", t.name, f.name));
                }
            }
        }
        if !missing.is_empty() {
            return Err(format!(
                "the ecsdb at {} lacks the game's schema ({}): start it with the game schema, e.g. `ecsdb serve --schema crates/game-server/game.toml`",
                r.base,
                missing.join(", ")
            ));
        }
        Ok(r)
    }

    fn get(&self, path: &str) -> Result<(u16, J), String> {
        let mut res = self
            .agent
            .get(&format!("{}{path}", self.base))
            .header("authorization", &self.auth)
            .call()
            .map_err(|e| format!("{}{path}: {e}", self.base))?;
        let status = res.status().as_u16();
        Ok((status, res.body_mut().read_json().unwrap_or(J::Null)))
    }

    fn post(&self, path: &str, body: &J) -> Result<(u16, J), String> {
        let mut res = self
            .agent
            .post(&format!("{}{path}", self.base))
            .header("authorization", &self.auth)
            .send_json(body)
            .map_err(|e| format!("{}{path}: {e}", self.base))?;
        let status = res.status().as_u16();
        Ok((status, res.body_mut().read_json().unwrap_or(J::Null)))
    }

    /// Copy the remote's game tables into `db` (empty), with their ids.
    pub fn load_into(&self, db: &Database) -> Result<usize, String> {
        let mut entities: std::collections::BTreeMap<u64, Map<String, J>> = std::collections::BTreeMap::new();
        for (table, order) in TABLES {
            let mut offset = 0;
            loop {
                let q = json!({"with": [table], "select": [table], "order_by": {"field": format!("{table}.{order}")}, "limit": PAGE, "offset": offset});
                let (status, body) = self.post("/v1/query", &q)?;
                if status != 200 {
                    return Err(format!("loading {table}: {}", err_text(status, &body)));
                }
                let rows = body["rows"].as_array().cloned().unwrap_or_default();
                for row in &rows {
                    let id = row["id"].as_u64().ok_or_else(|| format!("loading {table}: a row without an id"))?;
                    entities.entry(id).or_default().insert((*table).to_string(), row[*table].clone());
                }
                if rows.len() < PAGE {
                    break;
                }
                offset += PAGE;
            }
        }
        let n = entities.len();
        if n == 0 {
            return Ok(0);
        }
        // In slot order, so the id table grows one slot at a time.
        let mut order: Vec<(u64, Map<String, J>)> = entities.into_iter().collect();
        order.sort_by_key(|(id, _)| (id & 0xffff_ffff, *id));
        db.write(|t| {
            for (id, comps) in &order {
                t.create_entity_with_id(EntityId(*id))?;
                t.upsert_json(EntityId(*id), comps)?;
            }
            Ok(())
        })
        .map_err(|e| format!("loading the remote's state: {e}"))?;
        Ok(n)
    }

    /// `n` new (empty) entities on the remote; their ids.
    pub fn create_ids(&self, n: usize) -> Result<Vec<EntityId>, String> {
        self.check_failed()?;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let k = (n - out.len()).min(10_000);
            let ops: Vec<J> = (0..k).map(|_| json!({"op": "create"})).collect();
            let (status, body) = self.post("/v1/transactions", &json!({"ops": ops})).inspect_err(|e| {
                *self.last_error.lock() = Some(e.clone());
            })?;
            if status != 200 {
                let e = format!("creating entities on the remote: {}", err_text(status, &body));
                *self.last_error.lock() = Some(e.clone());
                return Err(e);
            }
            *self.last_error.lock() = None;
            for id in body["ids"].as_array().cloned().unwrap_or_default() {
                out.push(EntityId(id.as_u64().ok_or("the remote returned a non-numeric id")?));
            }
            if out.len() < n && k > 0 && body["ids"].as_array().is_none_or(Vec::is_empty) {
                return Err("the remote returned no ids".into());
            }
        }
        Ok(out)
    }

    /// Start mirroring `db`'s commits (from its next one) to the remote.
    pub fn attach(self: &Arc<Self>, db: &Arc<Database>) -> Result<std::thread::JoinHandle<()>, String> {
        *self.marker.lock() = self.read_marker(true)?;
        let start = db.version();
        self.pushed.store(start, Ordering::Relaxed);
        self.recorded.store(start, Ordering::Relaxed);
        let me = Arc::downgrade(self);
        db.listen_commits(Box::new(move |seq, cs| {
            if let Some(r) = me.upgrade() {
                r.queue.lock().push_back((seq, cs.clone()));
                r.recorded.store(seq, Ordering::Relaxed);
                r.wake.notify_one();
            }
        }));
        let me = self.clone();
        let weak_db = Arc::downgrade(db);
        std::thread::Builder::new()
            .name("remote-push".into())
            .spawn(move || me.pusher(&weak_db))
            .map_err(|e| e.to_string())
    }

    /// The batch marker (entity, batches applied), created when missing.
    fn read_marker(&self, create: bool) -> Result<(u64, u64), String> {
        let (status, body) = self.post("/v1/query", &json!({"with": ["mirror"], "select": ["mirror.batches"]}))?;
        if status != 200 {
            return Err(format!("reading the mirror marker: {}", err_text(status, &body)));
        }
        let rows = body["rows"].as_array().cloned().unwrap_or_default();
        if let Some(r) = rows.first() {
            if rows.len() > 1 {
                return Err("the remote holds more than one mirror marker".into());
            }
            let id = r["id"].as_u64().ok_or("a mirror marker without an id")?;
            let n = r["mirror"]["batches"]
                .as_u64()
                .or_else(|| r["mirror"]["batches"].as_str().and_then(|s| s.parse().ok()));
            return Ok((id, n.ok_or("a mirror marker without a count")?));
        }
        if !create {
            return Err("the mirror marker is gone".into());
        }
        let (status, body) = self
            .post("/v1/transactions", &json!({"ops": [{"op": "create", "components": {"mirror": {"batches": 0}}}]}))?;
        if status != 200 {
            return Err(format!("creating the mirror marker: {}", err_text(status, &body)));
        }
        Ok((body["ids"][0].as_u64().ok_or("the remote returned no id")?, 0))
    }

    fn check_failed(&self) -> Result<(), String> {
        match &*self.failed.lock() {
            Some(e) => Err(format!("the remote database refused a write and mirroring stopped: {e}")),
            None => Ok(()),
        }
    }

    /// Wait until the remote has acknowledged local commit `seq`.
    pub fn wait_pushed(&self, seq: u64, timeout: Duration) -> Result<(), String> {
        let end = Instant::now() + timeout;
        let mut g = self.pushed_lock.lock();
        while self.pushed.load(Ordering::Acquire) < seq {
            self.check_failed()?;
            if self.pushed_cv.wait_until(&mut g, end).timed_out() {
                let why = self.last_error.lock().clone().unwrap_or_else(|| "no answer yet".into());
                return Err(format!("the remote database has not acknowledged the write within {timeout:?} ({why})"));
            }
        }
        Ok(())
    }

    pub fn status(&self) -> RemoteStatus {
        RemoteStatus {
            url: self.base.clone(),
            lag_commits: self.recorded.load(Ordering::Relaxed).saturating_sub(self.pushed.load(Ordering::Relaxed)),
            failed: self.failed.lock().clone(),
            last_error: self.last_error.lock().clone(),
        }
    }

    /// Stop the pusher once everything recorded is pushed (or `timeout`).
    pub fn finish(&self, timeout: Duration) -> Result<(), String> {
        let r = self.wait_pushed(self.recorded.load(Ordering::Relaxed), timeout);
        self.stop.store(true, Ordering::Relaxed);
        self.wake.notify_all();
        r
    }

    fn pusher(&self, db: &Weak<Database>) {
        let mut backoff = Duration::from_millis(50);
        let mut batch: Vec<(u64, Arc<ChangeSet>)> = Vec::new();
        let mut last_contact = Instant::now();
        loop {
            if batch.is_empty() {
                let mut q = self.queue.lock();
                while q.is_empty() {
                    if self.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    self.wake.wait_for(&mut q, Duration::from_millis(200));
                    // Idle: check now and then that the remote still answers,
                    // so /health tells of an outage before a write meets it.
                    if q.is_empty() && last_contact.elapsed() >= Duration::from_secs(1) {
                        drop(q);
                        self.probe();
                        last_contact = Instant::now();
                        q = self.queue.lock();
                    }
                }
                let n = q.len().min(MAX_BATCH_COMMITS);
                batch.extend(q.drain(..n));
            }
            let Some(db) = db.upgrade() else { return };
            let ops = {
                let view = db.read();
                let mut ops = Vec::new();
                let mut bad = None;
                for (seq, cs) in &batch {
                    match view.describe_changes(cs) {
                        Ok(changes) => {
                            if let Err(e) = translate(&changes, &mut ops) {
                                bad = Some(format!("commit {seq}: {e}"));
                                break;
                            }
                        }
                        Err(e) => {
                            bad = Some(format!("commit {seq}: {e}"));
                            break;
                        }
                    }
                }
                match bad {
                    Some(e) => Err(e),
                    None => Ok(ops),
                }
            };
            drop(db);
            let ops = match ops {
                Ok(o) => o,
                Err(e) => {
                    self.fail(e);
                    return;
                }
            };
            let last = batch.last().map_or(0, |b| b.0);
            let (marker, applied) = *self.marker.lock();
            let sent = !ops.is_empty();
            let result = if sent {
                // Applied only if the remote is where this server left it;
                // the marker moves with the batch, atomically.
                let mut all = Vec::with_capacity(ops.len() + 2);
                all.push(json!({"op": "check", "id": marker, "filters": [{"field": "mirror.batches", "op": "eq", "value": applied}]}));
                all.extend(ops);
                all.push(json!({"op": "set", "id": marker, "components": {"mirror": {"batches": applied + 1}}}));
                self.post("/v1/transactions", &json!({"ops": all}))
            } else {
                Ok((200, J::Null))
            };
            let result = match result {
                // Refused by the check: either this batch already went in (its
                // answer was lost and it was sent again), or someone else wrote.
                Ok((409, body)) if body.to_string().contains("check_failed") => match self.read_marker(false) {
                    Ok((_, n)) if n == applied + 1 => Ok((200, J::Null)),
                    Ok((_, n)) => Ok((
                        409,
                        json!({"message": format!(
                            "the remote's mirror marker is at {n}, this server expected {applied}: another writer is using the game tables"
                        )}),
                    )),
                    Err(e) => Err(e),
                },
                other => other,
            };
            match result {
                Ok((200, _)) => {
                    if sent {
                        self.marker.lock().1 = applied + 1;
                    }
                    last_contact = Instant::now();
                    batch.clear();
                    backoff = Duration::from_millis(50);
                    self.pushes.fetch_add(1, Ordering::Relaxed);
                    *self.last_error.lock() = None;
                    let _g = self.pushed_lock.lock();
                    self.pushed.store(last, Ordering::Release);
                    self.pushed_cv.notify_all();
                }
                Ok((status, body)) if (400..500).contains(&status) && status != 408 && status != 429 => {
                    self.fail(err_text(status, &body));
                    return;
                }
                Ok((status, body)) => self.retry(&err_text(status, &body), &mut backoff),
                Err(e) => self.retry(&e, &mut backoff),
            }
            if self.stop.load(Ordering::Relaxed) && !batch.is_empty() {
                // Stopping and the remote does not take the rest: give up
                // (what was not pushed was reported by `finish`).
                return;
            }
        }
    }

    fn probe(&self) {
        let r = match self.get("/health") {
            Ok((200, _)) => None,
            Ok((status, body)) => Some(format!("{}/health: {}", self.base, err_text(status, &body))),
            Err(e) => Some(e),
        };
        if r.is_some() {
            self.push_errors.fetch_add(1, Ordering::Relaxed);
        }
        *self.last_error.lock() = r;
    }

    fn retry(&self, e: &str, backoff: &mut Duration) {
        self.push_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "remote ecsdb write failed; retrying");
        *self.last_error.lock() = Some(e.to_string());
        std::thread::sleep(*backoff);
        *backoff = (*backoff * 2).min(Duration::from_secs(2));
    }

    fn fail(&self, e: String) {
        tracing::error!(error = %e, "the remote ecsdb refused a write; mirroring stopped, the world is paused");
        *self.failed.lock() = Some(e);
        let _g = self.pushed_lock.lock();
        self.pushed_cv.notify_all();
    }

    /// Whether the world may go on (the pusher has not stopped for good).
    pub fn healthy(&self) -> bool {
        self.failed.lock().is_none()
    }
}

fn find_table<'a>(tables: &'a J, name: &str) -> Option<&'a J> {
    match tables {
        J::Object(m) => m.get(name),
        J::Array(a) => a.iter().find(|t| t["name"] == name),
        _ => None,
    }
}

fn has_field(table: &J, name: &str) -> bool {
    let fields = &table["fields"];
    match fields {
        J::Array(a) => a.iter().any(|f| f["name"] == name),
        J::Object(m) => m.contains_key(name),
        _ => false,
    }
}

/// Append the transaction ops that apply `changes` (one local commit).
/// Entities are created on the remote before they are created locally, so
/// `created` needs no op; consecutive field writes of one entity merge
/// into one `set`.
pub fn translate(changes: &[Change], ops: &mut Vec<J>) -> Result<(), String> {
    for c in changes {
        match c {
            Change::Created { .. } => {}
            Change::Deleted { entity } => ops.push(json!({"op": "delete", "id": entity.0})),
            Change::ComponentAdded { entity, table, fields } => {
                let mut fields = fields.as_object().cloned().unwrap_or_default();
                // The entity's own id is implied by the op's `id`.
                fields.remove("entity_id");
                merge_set(ops, entity.0, table, fields);
            }
            Change::FieldSet { entity, table, field, value } => {
                let mut m = Map::new();
                m.insert(field.clone(), value.clone());
                merge_set(ops, entity.0, table, m);
            }
            Change::ComponentRemoved { entity, table } => {
                ops.push(json!({"op": "remove", "id": entity.0, "table": table}));
            }
            Change::Linked { relation, from, to, properties } => {
                let mut op = json!({"op": "link", "relation": relation, "from": from.0, "to": to.0});
                if properties.as_object().is_some_and(|m| !m.is_empty()) {
                    op["props"] = properties.clone();
                }
                ops.push(op);
            }
            Change::Unlinked { relation, from, to } => {
                ops.push(json!({"op": "unlink", "relation": relation, "from": from.0, "to": to.0}));
            }
            Change::Migrated { .. } => return Err("schema migrations are not mirrored to a remote ecsdb".into()),
        }
    }
    Ok(())
}

fn merge_set(ops: &mut Vec<J>, id: u64, table: &str, fields: Map<String, J>) {
    if let Some(last) = ops.last_mut()
        && last["op"] == "set"
        && last["id"] == id
        && let Some(comps) = last["components"].as_object_mut()
    {
        let entry = comps.entry(table.to_string()).or_insert_with(|| J::Object(Map::new()));
        if let Some(m) = entry.as_object_mut() {
            m.extend(fields);
            return;
        }
    }
    let mut comps = Map::new();
    comps.insert(table.to_string(), J::Object(fields));
    ops.push(json!({"op": "set", "id": id, "components": comps}));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_become_ops_with_field_writes_merged() {
        let e = EntityId(7);
        let changes = vec![
            Change::Created { entity: e },
            Change::ComponentAdded { entity: e, table: "body".into(), fields: json!({"radius": 1.0}) },
            Change::FieldSet { entity: e, table: "body".into(), field: "radius".into(), value: json!(2.0) },
            Change::FieldSet { entity: e, table: "label".into(), field: "level".into(), value: json!(3) },
            Change::ComponentRemoved { entity: EntityId(8), table: "body".into() },
            Change::Deleted { entity: EntityId(9) },
        ];
        let mut ops = Vec::new();
        translate(&changes, &mut ops).unwrap();
        assert_eq!(
            J::Array(ops),
            json!([
                {"op": "set", "id": 7, "components": {"body": {"radius": 2.0}, "label": {"level": 3}}},
                {"op": "remove", "id": 8, "table": "body"},
                {"op": "delete", "id": 9},
            ])
        );
        let mut ops = Vec::new();
        assert!(translate(&[Change::Migrated { migration: String::new() }], &mut ops).is_err());
    }
}
