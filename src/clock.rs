//! Time sources. Every timestamp in idemkv is `u64` unix milliseconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in unix milliseconds.
///
/// The store reads the time through this trait so that tests can move time by
/// hand ([`ManualClock`]) instead of sleeping.
pub trait Clock: Send + Sync {
    /// The current time in milliseconds since the unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's wall clock. The default.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told to; share it through an `Arc` between
/// the store and the test that drives it.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use idemkv::{Clock, ManualClock};
/// let clock = Arc::new(ManualClock::new(1_000));
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now_ms(), 3_000);
/// clock.set_ms(10);
/// assert_eq!(clock.now_ms(), 10);
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    /// A clock that reads `start_ms` until moved.
    pub fn new(start_ms: u64) -> Self {
        ManualClock {
            now_ms: AtomicU64::new(start_ms),
        }
    }

    /// Moves the clock forward by `by` (saturating at `u64::MAX` ms).
    pub fn advance(&self, by: Duration) {
        let by_ms = duration_ms(by);
        let _ = self
            .now_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(by_ms))
            });
    }

    /// Sets the clock to `ms`; it may move backwards, as a real clock can.
    pub fn set_ms(&self, ms: u64) {
        self.now_ms.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// A `Duration` in whole milliseconds, saturating at `u64::MAX`.
pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
