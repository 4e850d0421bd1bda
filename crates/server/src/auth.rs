//! Credentials: passwords (argon2id), tokens (HS256 JWT bound to a stored
//! session, so logout revokes them) and API keys (random, shown once, stored
//! as SHA-256). Checking a request yields a [`Principal`] with permissions.

use argon2::{Argon2, PasswordHasher};
use ecsdb::core::value::hex_encode;
use ecsdb::{Database, EntityId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::system::{self, Perms, Role};

/// Longest password accepted (a login body is at most 16 KiB).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Prefix of API keys (tells them from tokens).
pub const API_KEY_PREFIX: &str = "ecsdb_";

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    /// User name or `key:<name>`.
    pub name: String,
    pub perms: Perms,
    /// Session of a token login.
    pub token_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    /// The user's entity id: a user deleted and created again under the
    /// same name is another user, and old tokens do not carry over.
    uid: u64,
    jti: String,
    iat: u64,
    exp: u64,
}

/// Token signing and checking.
#[derive(Clone)]
pub struct Tokens {
    enc: EncodingKey,
    dec: DecodingKey,
    pub ttl_secs: u64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("ttl_secs", &self.ttl_secs).finish_non_exhaustive()
    }
}

/// Random bytes as hex.
pub fn random_hex(n: usize) -> ApiResult<String> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
    Ok(hex_encode(&b))
}

pub fn hash_password(password: &str) -> ApiResult<String> {
    if password.len() < 8 {
        return Err(ApiError::bad_request("passwords must be at least 8 characters"));
    }
    // A longer one could not be sent in a login body.
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::bad_request(format!("passwords are at most {MAX_PASSWORD_BYTES} bytes")));
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| ApiError::internal(format!("password hashing failed: {e}")))
}

/// Check a password against its stored argon2 hash. The algorithm's
/// working memory (~19 MiB) is a buffer kept per thread and reused: a fresh
/// aligned allocation per check fragments the allocator, and the process
/// kept hundreds of MiB after a few dozen logins.
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::phc::PasswordHash;
    use argon2::{Algorithm, Block, Params, Version};
    thread_local! {
        static MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let Ok(parsed) = PasswordHash::new(hash) else { return false };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else { return false };
    let Ok(params) = Params::try_from(&parsed) else { return false };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm.as_str()) else { return false };
    let version = parsed.version.map_or(Ok(Version::default()), Version::try_from);
    let Ok(version) = version else { return false };
    let blocks = params.block_count();
    let mut out = vec![0u8; expected.len()];
    let ok = MEMORY.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() < blocks {
            m.resize(blocks, Block::default());
        }
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(password.as_bytes(), salt.as_ref(), &mut out, &mut m[..blocks])
            .is_ok()
    });
    // Constant time in the hash bytes.
    ok && out.len() == expected.as_bytes().len()
        && out.iter().zip(expected.as_bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Spend the same work as a real check when the user does not exist, so
/// the answer's timing does not tell which usernames exist.
pub fn verify_against_nothing(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = DUMMY.get_or_init(|| hash_password("not-a-real-password").unwrap_or_default());
    let _ = verify_password(password, hash);
}

pub fn hash_api_key(key: &str) -> String {
    hex_encode(&Sha256::digest(key.as_bytes()))
}

impl Tokens {
    pub fn new(secret: &[u8], ttl_secs: u64) -> Tokens {
        Tokens { enc: EncodingKey::from_secret(secret), dec: DecodingKey::from_secret(secret), ttl_secs }
    }

    /// A token for user `username` (entity `uid`), bound to session `jti`.
    pub fn issue(&self, username: &str, uid: EntityId, jti: &str) -> ApiResult<(String, u64)> {
        let now = system::now_ms() / 1000;
        let exp = now.saturating_add(self.ttl_secs);
        let claims = Claims { sub: username.into(), uid: uid.0, jti: jti.into(), iat: now, exp };
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.enc)
            .map_err(|e| ApiError::internal(format!("token signing failed: {e}")))?;
        Ok((t, exp * 1000))
    }

    fn check(&self, token: &str) -> ApiResult<Claims> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.dec, &v).map(|d| d.claims).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::unauthorized("the token has expired; log in again"),
                ErrorKind::InvalidSignature => ApiError::unauthorized("the token's signature is not valid"),
                _ => ApiError::unauthorized("malformed token"),
            }
        })
    }
}

/// Resolve an `Authorization` header value to a principal.
pub fn authenticate(db: &Database, tokens: &Tokens, header: Option<&str>) -> ApiResult<Principal> {
    let h = header.ok_or_else(|| ApiError::unauthorized("missing Authorization header (Bearer <token or API key>)"))?;
    // The scheme is case-insensitive (RFC 7235).
    let cred = h
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, c)| c.trim())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token or API key>`"))?;
    let w = db.read();
    if cred.starts_with(API_KEY_PREFIX) {
        let hash = hash_api_key(cred);
        let key =
            system::find_api_key(&w, &hash)?.ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))?;
        return Ok(Principal { name: format!("key:{}", key.name), perms: key.perms, token_id: None });
    }
    let claims = tokens.check(cred)?;
    let now = system::now_ms();
    let session = system::find_session(&w, &claims.jti)?
        .ok_or_else(|| ApiError::unauthorized("the session has ended (logged out); log in again"))?;
    if session.expires_ms <= now {
        return Err(ApiError::unauthorized("the token has expired; log in again"));
    }
    // The session, the token and the user must all be the same user: a
    // session id of another user, or a user re-created under the same name,
    // does not authenticate.
    let user = system::find_user(&w, &claims.sub)?
        .filter(|u| u.id.0 == claims.uid && session.username == u.username)
        .ok_or_else(|| ApiError::unauthorized("the token's user no longer exists; log in again"))?;
    Ok(Principal { name: user.username, perms: user.role.perms(), token_id: Some(claims.jti) })
}

/// Require a permission.
pub fn require(p: &Principal, bit: u8) -> ApiResult<()> {
    if p.perms.has(bit) {
        Ok(())
    } else {
        let what = match bit {
            Perms::ADMIN => "admin",
            Perms::WRITE => "write",
            Perms::REPLICATE => "replicate",
            _ => "read",
        };
        Err(ApiError::forbidden(format!("`{}` lacks the {what} permission", p.name)))
    }
}

/// Create the first admin on a database without users: with
/// `ECSDB_ADMIN_PASSWORD`, else a random password printed once.
pub fn ensure_admin(db: &Database, env_password: Option<String>) -> ApiResult<Option<String>> {
    if !system::list_users(&db.read())?.is_empty() {
        return Ok(None);
    }
    let (password, generated) = match env_password {
        Some(p) => (p, false),
        None => (random_hex(12)?, true),
    };
    let hash = hash_password(&password)?;
    system::insert_user(db, "admin", &hash, Role::Admin)?;
    Ok(generated.then_some(password))
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordVerifier;

    /// The buffer-reusing check agrees with the crate's own.
    #[test]
    fn verify_agrees_with_argon2() {
        let hash = hash_password("correct horse").unwrap();
        for (pw, want) in [("correct horse", true), ("correct hors", false), ("", false), ("correct horse ", false)] {
            assert_eq!(verify_password(pw, &hash), want, "{pw:?}");
            assert_eq!(Argon2::default().verify_password(pw.as_bytes(), &hash[..]).is_ok(), want);
        }
        // Again on the same thread (the reused buffer), and garbage hashes.
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("x", "not a hash"));
        assert!(!verify_password("x", "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ"));
    }
}
