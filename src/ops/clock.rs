//! Time, injected where it decides an outcome (leases, expiry) so tests can pin it.
//!
//! Two clocks decide outcomes. Wall time (epoch milliseconds: leases, expiry, the age rule,
//! watermarks) is read through [`Clock`]. Monotonic time (an invocation's budget: a send's
//! deadline, the check before each claim, the pause between `SENT` retries, `ledger extend`'s
//! pace) is tokio's `Instant` (`tokio::time::Instant`), never `std::time::Instant`: in production
//! it is the same monotonic clock; under a runtime whose clock is paused (the simulation,
//! `tests/sim_world`) it moves only with the runtime's timers, so a slow dependency or a backoff
//! is replayed the same way from a seed.

use std::time::{SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// A clock that says what it is told.
#[derive(Debug, Default)]
pub struct FixedClock(pub std::sync::atomic::AtomicI64);

impl FixedClock {
    pub fn at(ms: i64) -> Self {
        FixedClock(std::sync::atomic::AtomicI64::new(ms))
    }

    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// 64 random bits (`fastrand`, seeded per thread): enough for attempt identifiers, jitter and the
/// `{random}` macro, not for secrets.
pub fn random_u64() -> u64 {
    fastrand::u64(..)
}
