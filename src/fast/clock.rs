//! Time, injectable so expiry and rotation can be tested without sleeping.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};

/// A source of wall-clock time in unix milliseconds.
pub trait Clock: fmt::Debug + Send + Sync {
    /// Milliseconds since the unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to (tests, simulations).
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock showing `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        ManualClock(AtomicU64::new(start_ms))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Formats unix milliseconds as an XEP-0082 DateTime in UTC, `YYYY-MM-DDThh:mm:ssZ`
/// (the `expiry` attribute, F-11): `Z` and whole seconds (the milliseconds are cut), the form
/// clients parse. Times past chrono's range (about year 262 000) show its last instant.
pub fn xep0082(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_xep0082_utc() {
        assert_eq!(xep0082(0), "1970-01-01T00:00:00Z");
        assert_eq!(xep0082(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(xep0082(1_785_585_600_999), "2026-08-01T12:00:00Z");
        assert_eq!(xep0082(4_102_444_799_000), "2099-12-31T23:59:59Z");
        // Past chrono's range: its last instant, never a panic.
        assert_eq!(xep0082(u64::MAX), "+262142-12-31T23:59:59Z");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1000);
        assert_eq!(c.now_ms(), 1000);
        c.advance(Duration::from_secs(2));
        assert_eq!(c.now_ms(), 3000);
    }
}
