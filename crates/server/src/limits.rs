//! Sliding-window rate limiting per key (client IP, credential, username),
//! with the clock behind a trait so tests can move time without sleeping.

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

/// At most about `max` requests per key in any span of `window_ms`: a
/// sliding-window estimate (the previous fixed window's count, weighted by
/// how much of it still overlaps the span, plus the current window's), so a
/// burst around a window boundary cannot get twice the allowance.
#[derive(Debug)]
pub struct RateLimiter {
    window_ms: u64,
    max: u32,
    clock: Arc<dyn Clock>,
    /// key → (current window start, count in it, count in the one before).
    windows: Mutex<HashMap<String, (u64, u32, u32)>>,
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

    /// Roll `e` forward to the window starting at `start`.
    fn roll(&self, e: &mut (u64, u32, u32), start: u64) {
        if e.0 != start {
            let prev = if e.0 + self.window_ms == start { e.1 } else { 0 };
            *e = (start, 0, prev);
        }
    }

    /// The estimate for `e` at `now` (rounded up, so the allowance is never
    /// exceeded), and the seconds until one more request would fit.
    fn estimate(&self, e: &(u64, u32, u32), now: u64) -> (u64, u64) {
        let w = self.window_ms;
        let max = u64::from(self.max);
        let (count, prev) = (u64::from(e.1), u64::from(e.2));
        let left = w - (now - e.0);
        let n = (prev * left).div_ceil(w) + count;
        // When does ceil(prev' * left' / w) + count' drop below max?
        let wait = if count >= max {
            // Only in the next window, once this one's count has slid off far enough.
            left + (w - (max - 1) * w / count.max(1))
        } else {
            // With nothing from the window before, there is room already.
            ((max - count - 1) * w).checked_div(prev).map_or(0, |fits| left.saturating_sub(fits))
        };
        (n, wait.div_ceil(1000).max(1))
    }

    /// Give back one count of `key` in the current window (an attempt that
    /// was counted up front and turned out not to count, e.g. a login that
    /// succeeded).
    pub fn refund(&self, key: &str) {
        let now = self.clock.now_ms();
        let start = now - now % self.window_ms;
        if let Some(e) = self.windows.lock().get_mut(key) {
            self.roll(e, start);
            e.1 = e.1.saturating_sub(1);
        }
    }

    /// Whether `key` is over the limit now (`Err(retry_after_secs)`),
    /// counting nothing.
    pub fn peek(&self, key: &str) -> Result<(), u64> {
        if self.max == 0 {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let start = now - now % self.window_ms;
        let mut w = self.windows.lock();
        let Some(e) = w.get_mut(key) else { return Ok(()) };
        self.roll(e, start);
        let (n, retry) = self.estimate(e, now);
        if n >= u64::from(self.max) { Err(retry) } else { Ok(()) }
    }

    /// Count a request for `key`; `Err(retry_after_secs)` when over the
    /// limit (then nothing is counted). A limit of 0 is off.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        if self.max == 0 {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let start = now - now % self.window_ms;
        let mut w = self.windows.lock();
        if w.len() >= SWEEP_AT {
            let oldest = start.saturating_sub(self.window_ms);
            w.retain(|_, (s, _, _)| *s >= oldest);
        }
        let e = w.entry(key.to_string()).or_insert((start, 0, 0));
        self.roll(e, start);
        let (n, retry) = self.estimate(e, now);
        if n >= u64::from(self.max) {
            return Err(retry);
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
        // Retry-After is when one more request fits: 20 s into the next
        // window the three have slid down to two (rounded up).
        assert_eq!(rl.check("1.2.3.4"), Err(80));
        rl.check("5.6.7.8").unwrap();
        *clock.0.lock() += 30_000;
        assert_eq!(rl.check("1.2.3.4"), Err(50));
        *clock.0.lock() += 30_000;
        assert_eq!(rl.check("1.2.3.4"), Err(20));
        *clock.0.lock() += 19_000;
        assert!(rl.check("1.2.3.4").is_err());
        *clock.0.lock() += 1_000;
        rl.check("1.2.3.4").unwrap();
        // Then it is full again until more of the old window slides off.
        assert!(rl.check("1.2.3.4").is_err());
    }

    #[test]
    fn a_burst_around_a_boundary_gets_one_allowance() {
        let clock = Arc::new(ManualClock::default());
        *clock.0.lock() = 1_200_000 + 59_000; // one second before a boundary
        let rl = RateLimiter::new(60, 10, clock.clone());
        let mut allowed = 0;
        for _ in 0..10 {
            allowed += u32::from(rl.check("user:admin").is_ok());
        }
        *clock.0.lock() += 2_000; // just past the boundary
        for _ in 0..10 {
            allowed += u32::from(rl.check("user:admin").is_ok());
        }
        assert!(allowed <= 10, "{allowed} allowed in two seconds");
        // Refunds give a count back.
        let rl = RateLimiter::new(60, 1, clock.clone());
        rl.check("k").unwrap();
        assert!(rl.check("k").is_err());
        rl.refund("k");
        rl.check("k").unwrap();
        assert!(rl.check("k").is_err());
    }
}
