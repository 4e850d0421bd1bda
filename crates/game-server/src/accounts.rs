//! Accounts and sessions: register, login (argon2id, JWT), logout, bans,
//! and checking a token for the WebSocket.
//!
//! A token is an HS256 JWT naming the player and its session; the session
//! entity keeps only the token's SHA-256, so a stolen data directory yields
//! no usable tokens, and logging out (deleting the session) revokes the
//! token at once even though its signature stays valid until it expires.
//! Login spends the same argon2 work for an unknown username as for a
//! known one, so timing does not reveal which usernames exist.

use std::sync::Arc;
use std::time::Duration;

use ecsdb::{Database, DbError, EntityId, Value};
use ecsdb_server::auth::{hash_api_key, verify_against_nothing, verify_password};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::model::{Account, Gear, Progress, Session, Store};

/// Why an account call failed; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// 400: the request is malformed or a value is out of range.
    #[error("{0}")]
    BadInput(String),
    /// 409: the username or email is taken.
    #[error("{0}")]
    Taken(String),
    /// 401: wrong username or password, or a bad/expired/revoked token.
    #[error("{0}")]
    Unauthorized(String),
    /// 404: no such player.
    #[error("{0}")]
    NotFound(String),
    /// 403: the player is banned.
    #[error("banned: {reason}")]
    Banned { reason: String, until: u64 },
    /// 503: the database (a remote ecsdb) did not acknowledge the write.
    #[error("{0}")]
    Unavailable(String),
    /// 500.
    #[error("database error: {0}")]
    Db(#[from] DbError),
    #[error("{0}")]
    Internal(String),
}

impl From<ecsdb::EngineError> for AuthError {
    fn from(e: ecsdb::EngineError) -> Self {
        AuthError::Db(e.into())
    }
}

impl AuthError {
    pub fn status(&self) -> u16 {
        match self {
            AuthError::BadInput(_) => 400,
            AuthError::Taken(_) => 409,
            AuthError::Unauthorized(_) => 401,
            AuthError::NotFound(_) => 404,
            AuthError::Banned { .. } => 403,
            AuthError::Unavailable(_) => 503,
            AuthError::Db(_) | AuthError::Internal(_) => 500,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// Player entity id.
    sub: String,
    /// Session entity id.
    sid: u64,
    name: String,
    iat: u64,
    exp: u64,
}

/// A checked token: who is playing.
#[derive(Debug, Clone)]
pub struct Authed {
    pub player: EntityId,
    pub session: EntityId,
    pub name: String,
}

/// What a successful login returns.
#[derive(Debug, Serialize)]
pub struct LoginReply {
    pub token: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
    pub player_id: u64,
    pub username: String,
}

pub struct Accounts {
    store: Store,
    db: Arc<Database>,
    enc: EncodingKey,
    dec: DecodingKey,
    ttl: Duration,
    /// Spawn point range for new players.
    world_size: f32,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub const MAX_PASSWORD_BYTES: usize = 128;
/// The longest ban (seconds): 100 years.
pub const MAX_BAN_SECS: u64 = 100 * 365 * 86_400;

/// Check a username: 3–32 of `[A-Za-z0-9_-]`. Returns the stored (lower-case) form.
pub fn check_username(u: &str) -> Result<String, AuthError> {
    if !(3..=32).contains(&u.len()) || !u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(AuthError::BadInput("username must be 3-32 characters of letters, digits, _ and -".into()));
    }
    Ok(u.to_ascii_lowercase())
}

fn check_password(p: &str) -> Result<(), AuthError> {
    if p.len() < 8 {
        return Err(AuthError::BadInput("password must be at least 8 bytes".into()));
    }
    if p.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::BadInput(format!("password must be at most {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(())
}

fn check_email(e: Option<&str>) -> Result<String, AuthError> {
    let Some(e) = e.map(str::trim).filter(|e| !e.is_empty()) else { return Ok(String::new()) };
    let ok = e.len() <= 255
        && e.split_once('@').is_some_and(|(a, d)| !a.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(AuthError::BadInput("email is not a valid address".into()));
    }
    Ok(e.to_ascii_lowercase())
}

fn hash_password(p: &str) -> Result<String, AuthError> {
    crate::hashing::hash_password(p).map_err(AuthError::Internal)
}

impl Accounts {
    pub fn new(store: Store, secret: &[u8], ttl: Duration, world_size: f32) -> Accounts {
        Accounts {
            db: store.db.clone(),
            store,
            enc: EncodingKey::from_secret(secret),
            dec: DecodingKey::from_secret(secret),
            ttl,
            world_size,
        }
    }

    fn account_by_name(&self, username: &str) -> Result<Option<(EntityId, Account)>, AuthError> {
        let view = self.db.read();
        let f = view.schema().field_ref("account", "username")?;
        let ids = view.find_eq(f.table, f.slot, &Value::Str(username.to_string())).unwrap_or_default();
        match ids.first() {
            Some(id) => Ok(Some((*id, view.get_component::<Account>(*id)?))),
            None => Ok(None),
        }
    }

    /// Create an account. Blocking (argon2): call from a blocking thread.
    pub fn register(&self, username: &str, password: &str, email: Option<&str>) -> Result<EntityId, AuthError> {
        let name = check_username(username)?;
        check_password(password)?;
        let email = check_email(email)?;
        if self.account_by_name(&name)?.is_some() {
            return Err(AuthError::Taken(format!("username {name:?} is taken")));
        }
        let hash = hash_password(password)?;
        let now = now_ms();
        let mut rng = crate::model::Rng::new(now ^ name.len() as u64 ^ u64::from(name.as_bytes()[0]) << 32);
        let margin = 50.0;
        let spawn = [
            margin + rng.unit() * (self.world_size - 2.0 * margin),
            margin + rng.unit() * (self.world_size - 2.0 * margin),
        ];
        let reserved = self.store.reserve(1).map_err(AuthError::Unavailable)?;
        let mut taken: Option<String> = None;
        let result = self.db.write(|t| {
            // Checked again under the write lock: two registrations racing
            // for one name cannot both pass (the unique index agrees).
            let uf = t.schema().field_ref("account", "username")?;
            if t.find_eq(uf.table, uf.slot, &Value::Str(name.clone())).is_some_and(|v| !v.is_empty()) {
                taken = Some(format!("username {name:?} is taken"));
            } else if !email.is_empty() {
                let ef = t.schema().field_ref("account", "email")?;
                if t.find_eq(ef.table, ef.slot, &Value::Str(email.clone())).is_some_and(|v| !v.is_empty()) {
                    taken = Some("email is already registered".into());
                }
            }
            if let Some(m) = &taken {
                return Err(ecsdb::EngineError::Query(m.clone()).into());
            }
            let account = Account {
                username: name.clone(),
                display_name: username.to_string(),
                email: email.clone(),
                password_hash: hash.clone(),
                created_at: now,
                last_login: 0,
                is_banned: false,
                ban_reason: String::new(),
                ban_expires: 0,
            };
            let progress = Progress {
                level: 1,
                experience: 0,
                last_position: spawn,
                health: 100.0,
                hunger: 100.0,
                thirst: 100.0,
                deaths: 0,
                updated_at: now,
            };
            let gear =
                Gear { inventory: "[]".into(), equipment: "{}".into(), skills: "{}".into(), statistics: "{}".into() };
            match &reserved {
                None => t.spawn((account, progress, gear)),
                Some(ids) => {
                    let id = ids[0];
                    t.create_entity_with_id(id)?;
                    t.insert_component(id, &account)?;
                    t.insert_component(id, &progress)?;
                    t.insert_component(id, &gear)?;
                    Ok(id)
                }
            }
        });
        let id = match (result, taken) {
            (Ok((id, info)), _) => {
                self.store.acked(info.seq).map_err(AuthError::Unavailable)?;
                id
            }
            (Err(_), Some(m)) => return Err(AuthError::Taken(m)),
            (Err(e), None) => return Err(AuthError::Db(e)),
        };
        Ok(id)
    }

    /// Check a password and open a session. Blocking (argon2).
    pub fn login(&self, username: &str, password: &str, ip: &str, user_agent: &str) -> Result<LoginReply, AuthError> {
        let bad = || AuthError::Unauthorized("wrong username or password".into());
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(bad());
        }
        let Ok(name) = check_username(username) else {
            verify_against_nothing(password);
            return Err(bad());
        };
        let Some((player, account)) = self.account_by_name(&name)? else {
            verify_against_nothing(password);
            return Err(bad());
        };
        if !verify_password(password, &account.password_hash) {
            return Err(bad());
        }
        let now = now_ms();
        banned(&account, now)?;
        let exp_ms = now.saturating_add(self.ttl.as_millis() as u64);
        let ua: String = user_agent.chars().take(512).collect();
        let ip: String = ip.chars().take(45).collect();
        let reserved = self.store.reserve(1).map_err(AuthError::Unavailable)?;
        let (token, info) = self.db.write(|t| {
            let session = Session {
                player: player.0,
                token_hash: String::new(),
                created_at: now,
                expires_at: exp_ms,
                ip_address: ip.clone(),
                user_agent: ua.clone(),
            };
            let sid = match &reserved {
                None => t.spawn_component(&session)?,
                Some(ids) => {
                    t.create_entity_with_id(ids[0])?;
                    t.insert_component(ids[0], &session)?;
                    ids[0]
                }
            };
            let claims = Claims {
                sub: player.0.to_string(),
                sid: sid.0,
                name: account.display_name.clone(),
                iat: now / 1000,
                exp: exp_ms / 1000,
            };
            let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.enc)
                .map_err(|e| ecsdb::EngineError::Query(format!("token signing failed: {e}")))?;
            t.set(sid, "session", "token_hash", &Value::Str(hash_api_key(&token)))?;
            t.set(player, "account", "last_login", &Value::U64(now))?;
            Ok(token)
        })?;
        self.store.acked(info.seq).map_err(AuthError::Unavailable)?;
        Ok(LoginReply { token, expires_in: self.ttl.as_secs(), player_id: player.0, username: account.display_name })
    }

    /// Check a token: signature, expiry, session still open, player not banned.
    pub fn authenticate(&self, token: &str) -> Result<Authed, AuthError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &self.dec, &v).map(|d| d.claims).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            AuthError::Unauthorized(
                match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired; log in again",
                    ErrorKind::InvalidSignature => "the token's signature is not valid",
                    _ => "malformed token",
                }
                .into(),
            )
        })?;
        let player = EntityId(claims.sub.parse().map_err(|_| AuthError::Unauthorized("malformed token".into()))?);
        let session = EntityId(claims.sid);
        let view = self.db.read();
        let s = view
            .get_component::<Session>(session)
            .map_err(|_| AuthError::Unauthorized("the session has ended (logged out); log in again".into()))?;
        if s.player != player.0 || s.token_hash != hash_api_key(token) {
            return Err(AuthError::Unauthorized("the session has ended (logged out); log in again".into()));
        }
        let now = now_ms();
        if s.expires_at <= now {
            return Err(AuthError::Unauthorized("the token has expired; log in again".into()));
        }
        let account = view
            .get_component::<Account>(player)
            .map_err(|_| AuthError::Unauthorized("the account no longer exists".into()))?;
        banned(&account, now)?;
        Ok(Authed { player, session, name: account.display_name })
    }

    /// End the token's session. The second value is set when the change
    /// is made here but not (yet) acknowledged by a remote database.
    pub fn logout(&self, token: &str) -> Result<(Authed, Option<String>), AuthError> {
        let who = self.authenticate(token).or_else(|e| match e {
            // A banned player may still log out.
            AuthError::Banned { .. } => self.session_of(token),
            e => Err(e),
        })?;
        let ((), info) = self.db.write(|t| t.delete(who.session))?;
        Ok((who, self.store.acked(info.seq).err()))
    }

    fn session_of(&self, token: &str) -> Result<Authed, AuthError> {
        let view = self.db.read();
        let f = view.schema().field_ref("session", "token_hash")?;
        let ids = view.find_eq(f.table, f.slot, &Value::Str(hash_api_key(token))).unwrap_or_default();
        let sid = *ids.first().ok_or_else(|| AuthError::Unauthorized("no such session".into()))?;
        let s = view.get_component::<Session>(sid)?;
        Ok(Authed { player: EntityId(s.player), session: sid, name: String::new() })
    }

    /// Ban (or with `reason = None`, unban) a player; `for_secs = 0` is
    /// permanent. Returns the player's id, and a message when the change is
    /// made here but not (yet) acknowledged by a remote database.
    pub fn set_ban(
        &self,
        username: &str,
        reason: Option<&str>,
        for_secs: u64,
    ) -> Result<(EntityId, Option<String>), AuthError> {
        let name = check_username(username)?;
        let (player, _) =
            self.account_by_name(&name)?.ok_or_else(|| AuthError::NotFound(format!("no player named {name:?}")))?;
        // A century at most: `until` stays a safe JSON integer.
        if for_secs > MAX_BAN_SECS {
            return Err(AuthError::BadInput(format!(
                "duration_secs is at most {MAX_BAN_SECS} (100 years); 0 is permanent"
            )));
        }
        let until = if for_secs == 0 { 0 } else { now_ms().saturating_add(for_secs.saturating_mul(1000)) };
        let ((), info) = self.db.write(|t| {
            t.set(player, "account", "is_banned", &Value::Bool(reason.is_some()))?;
            t.set(
                player,
                "account",
                "ban_reason",
                &Value::Str(reason.unwrap_or_default().chars().take(500).collect()),
            )?;
            t.set(player, "account", "ban_expires", &Value::U64(if reason.is_some() { until } else { 0 }))
        })?;
        Ok((player, self.store.acked(info.seq).err()))
    }

    /// Delete sessions that expired (run now and then).
    pub fn purge_expired_sessions(&self) -> Result<usize, AuthError> {
        let now = now_ms();
        let expired: Vec<EntityId> = self
            .db
            .read()
            .query::<(&Session,)>()
            .collect()?
            .into_iter()
            .filter(|(_, (s,))| s.expires_at <= now)
            .map(|(id, _)| id)
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        self.db.write(|t| {
            for id in &expired {
                t.delete(*id)?;
            }
            Ok(())
        })?;
        Ok(expired.len())
    }
}

fn banned(a: &Account, now: u64) -> Result<(), AuthError> {
    if a.is_banned && (a.ban_expires == 0 || a.ban_expires > now) {
        return Err(AuthError::Banned { reason: a.ban_reason.clone(), until: a.ban_expires });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> Accounts {
        let db = Arc::new(crate::model::in_memory().unwrap());
        Accounts::new(Store { db, remote: None }, b"0123456789abcdef0123456789abcdef", Duration::from_hours(1), 2000.0)
    }

    #[test]
    fn register_login_logout_ban() {
        let a = accounts();
        let id = a.register("Ana_1", "correct horse", Some("ana@example.com")).unwrap();
        assert!(matches!(a.register("ana_1", "another pw", None), Err(AuthError::Taken(_))));
        assert!(matches!(a.register("bob", "another pw", Some("ANA@example.com")), Err(AuthError::Taken(_))));
        assert!(matches!(a.register("x", "correct horse", None), Err(AuthError::BadInput(_))));
        assert!(matches!(a.register("bob", "short", None), Err(AuthError::BadInput(_))));
        assert!(matches!(a.register("bob", "correct horse", Some("nope")), Err(AuthError::BadInput(_))));
        assert!(matches!(a.login("ana_1", "wrong horse", "", ""), Err(AuthError::Unauthorized(_))));
        assert!(matches!(a.login("nobody", "correct horse", "", ""), Err(AuthError::Unauthorized(_))));
        let r = a.login("ANA_1", "correct horse", "127.0.0.1", "test").unwrap();
        assert_eq!(r.player_id, id.0);
        assert_eq!(r.expires_in, 3600);
        let who = a.authenticate(&r.token).unwrap();
        assert_eq!(who.player, id);
        assert_eq!(who.name, "Ana_1");
        assert!(matches!(a.authenticate("garbage"), Err(AuthError::Unauthorized(_))));
        let mut forged = r.token.clone();
        forged.pop();
        assert!(matches!(a.authenticate(&forged), Err(AuthError::Unauthorized(_))));

        a.set_ban("ana_1", Some("cheating"), 0).unwrap();
        match a.authenticate(&r.token) {
            Err(AuthError::Banned { reason, until }) => assert_eq!((reason.as_str(), until), ("cheating", 0)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(a.login("ana_1", "correct horse", "", ""), Err(AuthError::Banned { .. })));
        a.set_ban("ana_1", None, 0).unwrap();
        a.authenticate(&r.token).unwrap();
        a.logout(&r.token).unwrap();
        assert!(matches!(a.authenticate(&r.token), Err(AuthError::Unauthorized(_))));
        assert!(matches!(a.logout(&r.token), Err(AuthError::Unauthorized(_))));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let a = accounts();
        a.register("carol", "correct horse", None).unwrap();
        let r = a.login("carol", "correct horse", "", "").unwrap();
        let other = Accounts::new(a.store.clone(), b"another secret another secret 32", Duration::from_mins(1), 2000.0);
        assert!(matches!(other.authenticate(&r.token), Err(AuthError::Unauthorized(_))));
    }
}
