//! Fixed-window rate limiting per key (client IP, credential), with the
//! clock behind a trait so tests can move time without sleeping.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// Milliseconds since some origin.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::system::now_ms()
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct ManualClock(pub Mutex<u64>);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        *self.0.lock()
    }
}

/// At most `max` requests per key in each window of `window_ms`.
#[derive(Debug)]
pub struct RateLimiter {
    window_ms: u64,
    max: u32,
    clock: Arc<dyn Clock>,
    windows: Mutex<HashMap<String, (u64, u32)>>,
}

/// Most keys remembered before stale windows are swept.
const SWEEP_AT: usize = 10_000;

impl RateLimiter {
    pub fn new(window_secs: u64, max: u32, clock: Arc<dyn Clock>) -> RateLimiter {
        RateLimiter {
            window_ms: window_secs.saturating_mul(1000).max(1),
            max,
            clock,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the limit is off (`max = 0`).
    pub fn is_off(&self) -> bool {
        self.max == 0
    }

    /// `Some(retry_after_secs)` when `key` is over the limit, without
    /// counting anything.
    pub fn over(&self, key: &str) -> Option<u64> {
        if self.max == 0 {
            return None;
        }
        let now = self.clock.now_ms();
        let start = now - now % self.window_ms;
        let w = self.windows.lock();
        w.get(key)
            .filter(|(s, n)| *s == start && *n >= self.max)
            .map(|_| (start + self.window_ms - now).div_ceil(1000).max(1))
    }

    /// Count one event for `key` (e.g. a failed login).
    pub fn hit(&self, key: &str) {
        if self.max > 0 {
            let _ = self.check(key);
        }
    }

    /// Count a request for `key`; `Err(retry_after_secs)` when over the
    /// limit. A limit of 0 is off.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        if self.max == 0 {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let start = now - now % self.window_ms;
        let mut w = self.windows.lock();
        if w.len() >= SWEEP_AT {
            w.retain(|_, (s, _)| *s == start);
        }
        let e = w.entry(key.to_string()).or_insert((start, 0));
        if e.0 != start {
            *e = (start, 0);
        }
        if e.1 >= self.max {
            return Err((start + self.window_ms - now).div_ceil(1000).max(1));
        }
        e.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_then_recovers_in_the_next_window() {
        let clock = Arc::new(ManualClock::default());
        *clock.0.lock() = 1_200_000; // a window boundary
        let rl = RateLimiter::new(60, 3, clock.clone());
        for _ in 0..3 {
            rl.check("1.2.3.4").unwrap();
        }
        assert_eq!(rl.check("1.2.3.4"), Err(60));
        rl.check("5.6.7.8").unwrap();
        *clock.0.lock() += 30_000;
        assert_eq!(rl.check("1.2.3.4"), Err(30));
        *clock.0.lock() += 30_000;
        rl.check("1.2.3.4").unwrap();
    }
}
