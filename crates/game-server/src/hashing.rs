//! Password hashing on a fixed pool of threads, each with its own argon2
//! working memory (~19 MiB) reused for every hash and check.
//!
//! Why: argon2 allocates its 19 MiB matrix per call. Done on whichever
//! blocking thread is free, every registration left that much behind in
//! the allocator's per-thread arenas — the process grew by ~19 MB per
//! account created and never gave it back. Two long-lived threads with two
//! reused buffers bound the memory argon2 can ever hold to ~40 MiB, and
//! also bound the CPU a login flood can take.

use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// The pool (cheap to clone).
#[derive(Clone)]
pub struct Hashers {
    tx: Sender<Job>,
}

impl std::fmt::Debug for Hashers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hashers").finish_non_exhaustive()
    }
}

thread_local! {
    static MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Hashers {
    /// `n` threads.
    pub fn new(n: usize) -> Result<Hashers, String> {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..n.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(f) => f(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| e.to_string())?;
        }
        Ok(Hashers { tx })
    }

    /// Run `f` (which may hash or check passwords) on a pool thread.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(f());
        });
        self.tx.send(job).map_err(|_| "the password hashers stopped".to_string())?;
        rx.await.map_err(|_| "the password hasher failed".to_string())
    }
}

/// An argon2id PHC string for `password` (the library's default
/// parameters), computed in this thread's reused memory.
pub fn hash_password(password: &str) -> Result<String, String> {
    let params = Params::default();
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
    let mut out = [0u8; 32];
    let blocks = params.block_count();
    MEMORY.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() < blocks {
            m.resize(blocks, Block::default());
        }
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
            .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, &mut m[..blocks])
            .map_err(|e| format!("password hashing failed: {e}"))
    })?;
    Ok(format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        b64(&salt),
        b64(&out)
    ))
}

/// Base64 without padding (the PHC string format's "B64").
fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        let take = c.len() + 1;
        for k in 0..take {
            s.push(char::from(A[(n >> (18 - 6 * k) & 63) as usize]));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_without_padding() {
        assert_eq!(b64(b""), "");
        assert_eq!(b64(b"f"), "Zg");
        assert_eq!(b64(b"fo"), "Zm8");
        assert_eq!(b64(b"foo"), "Zm9v");
        assert_eq!(b64(b"foobar"), "Zm9vYmFy");
    }

    #[tokio::test]
    async fn hashes_verify_with_the_library_and_the_server() {
        use argon2::PasswordVerifier;
        let pool = Hashers::new(2).unwrap();
        let h = pool.run(|| hash_password("correct horse")).await.unwrap().unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(ecsdb_server::auth::verify_password("correct horse", &h));
        assert!(!ecsdb_server::auth::verify_password("wrong horse", &h));
        let parsed = argon2::password_hash::phc::PasswordHash::new(&h).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
        let h2 = pool.run(|| hash_password("correct horse")).await.unwrap().unwrap();
        assert_ne!(h, h2, "salted");
        assert_eq!(pool.run(|| 41 + 1).await.unwrap(), 42);
    }
}
