//! Password hashing on a few dedicated threads.
//!
//! argon2id allocates about 19 MiB per check. On tokio's blocking pool any
//! of hundreds of threads may run one, and each keeps its allocator arena
//! afterwards, so the process would keep hundreds of MiB it no longer uses.
//! A fixed set of threads (one per core, the same number as the permits that
//! admit checks) bounds both how many run at once and what stays allocated.

use std::sync::Arc;
use std::sync::mpsc::{Sender, channel};

use parking_lot::Mutex;

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads; they end when this is dropped.
#[derive(Debug)]
pub struct Hashers {
    tx: Mutex<Sender<Job>>,
}

impl Hashers {
    pub fn new(threads: usize) -> Hashers {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("ecsdb-hash-{i}")).spawn(move || {
                loop {
                    let job = rx.lock().recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return, // the server is gone
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password hashing thread");
            }
        }
        Hashers { tx: Mutex::new(tx) }
    }

    /// Run `f` on a hashing thread; `None` if the threads are gone.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let span = tracing::Span::current();
        let job: Job = Box::new(move || {
            let _g = span.enter();
            let _ = done.send(f());
        });
        self.tx.lock().send(job).ok()?;
        result.await.ok()
    }
}
