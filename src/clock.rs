//! The one source of "now", injected so tests can move time.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time in ms since the Unix epoch, plus an offset that tests
/// may shift (it is always 0 in production); or, for tests, a manual clock
/// that stands still until moved.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
    manual: bool,
    /// Woken when a manual clock is moved.
    moved: tokio::sync::Notify,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that reads `start_ms` until [`Clock::shift`] moves it
    /// (tests drive the scheduler through time with it, without sleeping).
    pub fn manual(start_ms: u64) -> Self {
        Self {
            offset_ms: AtomicI64::new(start_ms as i64),
            manual: true,
            moved: tokio::sync::Notify::new(),
        }
    }

    /// Now, ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        let wall = if self.manual {
            0
        } else {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        };
        (wall + self.offset_ms.load(Ordering::Relaxed)).max(0) as u64
    }

    /// Moves this clock by `ms` (tests only; production never calls it).
    pub fn shift(&self, ms: i64) {
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
        self.moved.notify_waiters();
    }

    /// Completes once this clock reads `at_ms` or later: a timer on the
    /// system clock, and on a manual one, whenever it is moved that far.
    pub async fn sleep_until(&self, at_ms: u64) {
        if !self.manual {
            let now = self.now_ms();
            tokio::time::sleep(std::time::Duration::from_millis(at_ms.saturating_sub(now))).await;
            return;
        }
        loop {
            let moved = self.moved.notified();
            if self.now_ms() >= at_ms {
                return;
            }
            moved.await;
        }
    }
}
