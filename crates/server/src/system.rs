//! System tables: users, sessions and API keys live in the database itself
//! (names starting with `_`, which user schemas cannot take), so they are as
//! durable as any data and travel with snapshots and the log.

use ecsdb::{Database, EntityId, TableId, Value, World};
use serde_json::json;

use crate::error::{ApiError, ApiResult};

/// The system part of every server schema.
pub const SYSTEM_SCHEMA: &str = r#"
[enums._role]
variants = ["Admin", "ReadWrite", "ReadOnly"]

[tables._users]
description = "Server users (passwords hashed with argon2id)"
[[tables._users.fields]]
name = "username"
type = "string"
index = "unique"
[[tables._users.fields]]
name = "password_hash"
type = "string"
[[tables._users.fields]]
name = "role"
type = "_role"
[[tables._users.fields]]
name = "created_ms"
type = "u64"

[tables._sessions]
description = "Login sessions; a token is valid only while its session exists"
[[tables._sessions.fields]]
name = "token_id"
type = "string"
index = "unique"
[[tables._sessions.fields]]
name = "username"
type = "string"
[[tables._sessions.fields]]
name = "expires_ms"
type = "u64"
[[tables._sessions.fields]]
name = "created_ms"
type = "u64"

[tables._api_keys]
description = "API keys (SHA-256 of the key is stored, never the key)"
[[tables._api_keys.fields]]
name = "name"
type = "string"
[[tables._api_keys.fields]]
name = "key_hash"
type = "string"
index = "unique"
[[tables._api_keys.fields]]
name = "permissions"
type = "u8"
[[tables._api_keys.fields]]
name = "created_ms"
type = "u64"
"#;

/// Roles of users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    ReadWrite,
    ReadOnly,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "Admin" => Some(Role::Admin),
            "ReadWrite" => Some(Role::ReadWrite),
            "ReadOnly" => Some(Role::ReadOnly),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "Admin",
            Role::ReadWrite => "ReadWrite",
            Role::ReadOnly => "ReadOnly",
        }
    }
    pub fn perms(self) -> Perms {
        match self {
            Role::Admin => Perms(Perms::READ | Perms::WRITE | Perms::ADMIN),
            Role::ReadWrite => Perms(Perms::READ | Perms::WRITE),
            Role::ReadOnly => Perms(Perms::READ),
        }
    }
    fn index(self) -> u16 {
        match self {
            Role::Admin => 0,
            Role::ReadWrite => 1,
            Role::ReadOnly => 2,
        }
    }
    fn from_index(i: u16) -> Role {
        match i {
            0 => Role::Admin,
            1 => Role::ReadWrite,
            _ => Role::ReadOnly,
        }
    }
}

/// Permission bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perms(pub u8);

impl Perms {
    pub const READ: u8 = 1;
    pub const WRITE: u8 = 2;
    pub const ADMIN: u8 = 4;
    /// Follow this node as a replica (snapshot and commit stream).
    pub const REPLICATE: u8 = 8;
    pub fn has(self, bit: u8) -> bool {
        self.0 & bit == bit
    }
    /// From `["read", "write", "admin"]`.
    pub fn from_names(names: &[String]) -> ApiResult<Perms> {
        let mut p = 0;
        for n in names {
            p |= match n.as_str() {
                "read" => Self::READ,
                "write" => Self::WRITE,
                "admin" => Self::ADMIN,
                "replicate" => Self::REPLICATE,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown permission `{other}` (read, write, admin, replicate)"
                    )));
                }
            };
        }
        if p == 0 {
            return Err(ApiError::bad_request("an API key needs at least one permission"));
        }
        Ok(Perms(p))
    }
    pub fn names(self) -> Vec<&'static str> {
        [(Self::READ, "read"), (Self::WRITE, "write"), (Self::ADMIN, "admin"), (Self::REPLICATE, "replicate")]
            .into_iter()
            .filter(|(b, _)| self.has(*b))
            .map(|(_, n)| n)
            .collect()
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn table(w: &World, name: &str) -> ApiResult<TableId> {
    w.table_id(name).map_err(|e| ApiError::internal(e.to_string()))
}

fn field(w: &World, id: EntityId, t: TableId, name: &str) -> Value {
    let fi = w.schema().table(t).field_index(name).unwrap_or(0);
    w.field_value(id, t, fi).unwrap_or(Value::U64(0))
}

fn text(v: Value) -> String {
    match v {
        Value::Str(s) => s,
        _ => String::new(),
    }
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Rows of a system table.
fn rows(w: &World, t: TableId) -> Vec<EntityId> {
    w.chunks(&[t]).flat_map(|c| c.entities().iter().copied()).collect()
}

/// System fields looked up on every authenticated request, and the index
/// each carries (data directories made before these indexes get them at
/// startup, see [`upgrade_system_indexes`]).
pub const SYSTEM_INDEXES: &[(&str, &str, &str)] =
    &[("_users", "username", "unique"), ("_sessions", "token_id", "unique"), ("_api_keys", "key_hash", "unique")];

/// Whether the stored schema at `path` has the system tables but not all
/// of [`SYSTEM_INDEXES`] (a directory made by an older server).
pub fn lacks_system_indexes(path: &std::path::Path) -> bool {
    let Ok(schema) =
        std::fs::read_to_string(path).map_err(|_| ()).and_then(|t| ecsdb::Schema::from_stored_toml(&t).map_err(|_| ()))
    else {
        return false;
    };
    SYSTEM_INDEXES.iter().any(|(t, f, _)| {
        schema.table_id(t).and_then(|id| schema.table(id).field(f)).is_some_and(|f| f.index_kind().is_none())
    })
}

/// Give a data directory made before [`SYSTEM_INDEXES`] existed its
/// indexes: one logged migration (same schema version) that builds them.
/// Returns whether anything was done.
pub fn upgrade_system_indexes(db: &Database) -> Result<bool, String> {
    use std::fmt::Write as _;
    let schema = db.schema();
    let mut ops = String::new();
    for (t, f, kind) in SYSTEM_INDEXES {
        let Some(tid) = schema.table_id(t) else { continue };
        let Some(field) = schema.table(tid).field(f) else { continue };
        if field.index_kind().is_none() {
            let _ = write!(
                ops,
                "\n[[operations]]\ntype = \"add_index\"\ntable = \"{t}\"\nfield = \"{f}\"\nkind = \"{kind}\"\n"
            );
        }
    }
    if ops.is_empty() {
        return Ok(false);
    }
    let v = toml::Value::String(schema.version.clone());
    let text = format!(
        "[migration]\nfrom_version = {v}\nto_version = {v}\ndescription = \"server system tables: indexes for sessions, users and API keys\"\n{ops}"
    );
    db.migrate_with(&text, false, true).map_err(|e| format!("upgrading the system tables' indexes: {e}"))?;
    Ok(true)
}

/// The row of `table` whose string field `field` equals `value`: through
/// the field's index when it has one, else compared on the stored bytes
/// (no decoding, no allocation).
fn find_by(w: &World, table_name: &str, field_name: &str, value: &str) -> ApiResult<Option<EntityId>> {
    let t = table(w, table_name)?;
    let slot = w
        .schema()
        .table(t)
        .field(field_name)
        .and_then(ecsdb::schema::Field::slot)
        .ok_or_else(|| ApiError::internal(format!("system table {table_name} has no field {field_name}")))?;
    if let Some(ids) = w.find_eq(t, slot, &Value::Str(value.to_string())) {
        return Ok(ids.first().copied());
    }
    for chunk in w.chunks(&[t]) {
        for &id in chunk.entities() {
            if w.field_bytes(id, t, slot).is_ok_and(|b| b == value.as_bytes()) {
                return Ok(Some(id));
            }
        }
    }
    Ok(None)
}

/// Add a row to a system table unless one whose `key_field` equals the key
/// without regard to case exists (names that differ only in case would look
/// alike in every list). Checked inside the inserting transaction, so two
/// concurrent creations cannot both pass.
fn insert_unique(
    db: &Database,
    table_name: &str,
    key_field: &str,
    values: &[Value],
    what: &str,
) -> ApiResult<EntityId> {
    // Auth bookkeeping: not held back by synchronous replication (see
    // `replication::registry::SyncExempt`).
    let _exempt = crate::replication::registry::SyncExempt::enter();
    let Some(Value::Str(key)) = values.first() else {
        return Err(ApiError::internal("insert_unique needs the key first"));
    };
    let mut txn = db.transaction()?;
    let t = table(&txn, table_name)?;
    let slot = txn.schema().table(t).field(key_field).and_then(ecsdb::schema::Field::slot);
    let taken = slot.is_some_and(|slot| {
        rows(&txn, t)
            .into_iter()
            .any(|id| txn.field_bytes(id, t, slot).is_ok_and(|b| b.eq_ignore_ascii_case(key.as_bytes())))
    });
    if taken {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "conflict",
            format!("{what} `{key}` already exists (names are compared without case)"),
        ));
    }
    let e = txn.create_entity()?;
    txn.insert(e, table_name, values)?;
    txn.commit()?;
    Ok(e)
}

/// A user.
#[derive(Debug, Clone)]
pub struct User {
    pub id: EntityId,
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub created_ms: u64,
}

fn user_at(w: &World, t: TableId, id: EntityId) -> User {
    User {
        id,
        username: text(field(w, id, t, "username")),
        password_hash: text(field(w, id, t, "password_hash")),
        role: match field(w, id, t, "role") {
            Value::Enum(i) => Role::from_index(i),
            _ => Role::ReadOnly,
        },
        created_ms: num(&field(w, id, t, "created_ms")),
    }
}

pub fn find_user(w: &World, username: &str) -> ApiResult<Option<User>> {
    let t = table(w, "_users")?;
    Ok(find_by(w, "_users", "username", username)?.map(|id| user_at(w, t, id)))
}

pub fn list_users(w: &World) -> ApiResult<Vec<User>> {
    let t = table(w, "_users")?;
    Ok(rows(w, t).into_iter().map(|id| user_at(w, t, id)).collect())
}

/// Add a user with an already hashed password.
pub fn insert_user(db: &Database, username: &str, hash: &str, role: Role) -> ApiResult<EntityId> {
    let values =
        [Value::Str(username.into()), Value::Str(hash.into()), Value::Enum(role.index()), Value::U64(now_ms())];
    insert_unique(db, "_users", "username", &values, "user")
}

/// Set a user's password hash and end all of their sessions, in one commit.
pub fn set_password_ending_sessions(db: &Database, user: EntityId, username: &str, hash: &str) -> ApiResult<()> {
    // Auth bookkeeping: not held back by synchronous replication (see
    // `replication::registry::SyncExempt`).
    let _exempt = crate::replication::registry::SyncExempt::enter();
    db.write(|t| {
        t.set(user, "_users", "password_hash", &Value::Str(hash.into()))?;
        for s in list_sessions(t).unwrap_or_default() {
            if s.username == username {
                t.delete(s.id)?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

/// A session.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: EntityId,
    pub token_id: String,
    pub username: String,
    pub expires_ms: u64,
    pub created_ms: u64,
}

fn session_at(w: &World, t: TableId, id: EntityId) -> Session {
    Session {
        id,
        token_id: text(field(w, id, t, "token_id")),
        username: text(field(w, id, t, "username")),
        expires_ms: num(&field(w, id, t, "expires_ms")),
        created_ms: num(&field(w, id, t, "created_ms")),
    }
}

pub fn find_session(w: &World, token_id: &str) -> ApiResult<Option<Session>> {
    let t = table(w, "_sessions")?;
    Ok(find_by(w, "_sessions", "token_id", token_id)?.map(|id| session_at(w, t, id)))
}

pub fn list_sessions(w: &World) -> ApiResult<Vec<Session>> {
    let t = table(w, "_sessions")?;
    Ok(rows(w, t).into_iter().map(|id| session_at(w, t, id)).collect())
}

/// Sessions one user may hold; a login beyond it ends the oldest.
pub const MAX_SESSIONS_PER_USER: usize = 32;

/// Record a session, dropping expired ones and the user's oldest beyond
/// [`MAX_SESSIONS_PER_USER`]. Sessions are bounded, so they may be written
/// over the memory ceiling: a full database still lets its admins log in.
pub fn insert_session(
    db: &Database,
    token_id: &str,
    username: &str,
    password_hash: &str,
    expires_ms: u64,
) -> ApiResult<()> {
    // Auth bookkeeping: not held back by synchronous replication (see
    // `replication::registry::SyncExempt`).
    let _exempt = crate::replication::registry::SyncExempt::enter();
    let now = now_ms();
    let mut t = db.transaction()?;
    // The password checked must still be the user's: a password change that
    // committed meanwhile ended every session, this one included.
    if find_user(&t, username)?.is_none_or(|u| u.password_hash != password_hash) {
        return Err(ApiError::unauthorized("the password changed during the login; log in again"));
    }
    t.exempt_from_memory_limit()?;
    let mut mine = Vec::new();
    for s in list_sessions(&t).unwrap_or_default() {
        if s.expires_ms <= now {
            t.delete(s.id)?;
        } else if s.username == username {
            mine.push(s);
        }
    }
    if mine.len() >= MAX_SESSIONS_PER_USER {
        mine.sort_by_key(|s| (s.created_ms, s.id));
        for s in &mine[..=mine.len() - MAX_SESSIONS_PER_USER] {
            t.delete(s.id)?;
        }
    }
    let e = t.create_entity()?;
    t.insert(
        e,
        "_sessions",
        &[Value::Str(token_id.into()), Value::Str(username.into()), Value::U64(expires_ms), Value::U64(now)],
    )?;
    t.commit()?;
    Ok(())
}

pub fn delete_sessions(db: &Database, pred: impl Fn(&Session) -> bool) -> ApiResult<usize> {
    // Auth bookkeeping: not held back by synchronous replication (see
    // `replication::registry::SyncExempt`).
    let _exempt = crate::replication::registry::SyncExempt::enter();
    let (n, _) = db.write(|t| {
        let doomed: Vec<_> = list_sessions(t).unwrap_or_default().into_iter().filter(|s| pred(s)).collect();
        for s in &doomed {
            t.delete(s.id)?;
        }
        Ok(doomed.len())
    })?;
    Ok(n)
}

/// An API key (without the key).
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: EntityId,
    pub name: String,
    pub perms: Perms,
    pub created_ms: u64,
}

fn key_at(w: &World, t: TableId, id: EntityId) -> ApiKey {
    ApiKey {
        id,
        name: text(field(w, id, t, "name")),
        perms: Perms(num(&field(w, id, t, "permissions")) as u8),
        created_ms: num(&field(w, id, t, "created_ms")),
    }
}

/// The key whose SHA-256 is `key_hash`.
pub fn find_api_key(w: &World, key_hash: &str) -> ApiResult<Option<ApiKey>> {
    let t = table(w, "_api_keys")?;
    Ok(find_by(w, "_api_keys", "key_hash", key_hash)?.map(|id| key_at(w, t, id)))
}

pub fn list_api_keys(w: &World) -> ApiResult<Vec<ApiKey>> {
    let t = table(w, "_api_keys")?;
    Ok(rows(w, t).into_iter().map(|id| key_at(w, t, id)).collect())
}

pub fn insert_api_key(db: &Database, name: &str, key_hash: &str, perms: Perms) -> ApiResult<EntityId> {
    let values =
        [Value::Str(name.into()), Value::Str(key_hash.into()), Value::U64(u64::from(perms.0)), Value::U64(now_ms())];
    insert_unique(db, "_api_keys", "name", &values, "an API key named")
}

pub fn delete_api_key(db: &Database, name: &str) -> ApiResult<bool> {
    // Auth bookkeeping: not held back by synchronous replication (see
    // `replication::registry::SyncExempt`).
    let _exempt = crate::replication::registry::SyncExempt::enter();
    let (found, _) = db.write(|t| {
        let id = find_by(t, "_api_keys", "name", name).ok().flatten();
        if let Some(id) = id {
            t.delete(id)?;
        }
        Ok(id.is_some())
    })?;
    Ok(found)
}

/// JSON of a user for the admin API (never the hash).
pub fn user_json(u: &User) -> serde_json::Value {
    json!({"username": u.username, "role": u.role.name(), "created_ms": u.created_ms})
}
