//! A budget for log lines that anyone can cause without an account, kept per source address:
//! failed and held-back logins, stream errors before authentication, connections refused over
//! a limit.
//!
//! Each such line is cheap for a peer to trigger and costs the host disk; one connection that
//! floods `<abort/>` and reconnects could otherwise write hundreds of megabytes. Each source
//! (an IPv4 address or an IPv6 /64) has its own token bucket: up to `burst` lines pass at once
//! and `per_second` more each second; the rest are counted, and the source's next line that
//! passes (or [`LogBudget::flush`], at shutdown) reports how many were suppressed. A flooder
//! exhausts its own budget, never another source's, so the audit line of a guess from another
//! address is always written (what fail2ban-style tools read).
//!
//! Memory is bounded: at most [`MAX_SOURCES`] buckets; full buckets with nothing suppressed
//! carry no state and are dropped first. Past that (an attacker holding more addresses than
//! that, all flooding), new sources share one overflow bucket.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use sasl2_fast::sasl2::throttle::SourceKey;

/// Sources with a bucket of their own at most.
pub const MAX_SOURCES: usize = 10_000;

/// Per-source token buckets of log lines, shared by every connection of a host.
#[derive(Debug)]
pub struct LogBudget {
    state: Mutex<State>,
    per_second: f64,
    burst: f64,
}

#[derive(Debug, Default)]
struct State {
    sources: HashMap<SourceKey, Bucket>,
    overflow: Option<Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    suppressed: u64,
}

/// What a caller may log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log the line.
    Log,
    /// Log the line, and first that `n` earlier lines of this source were suppressed.
    LogAfterSuppressing(u64),
    /// Over budget: do not log it (it is counted).
    Suppress,
}

impl LogBudget {
    /// A budget of `per_second` lines a second with bursts of `burst`, per source.
    pub fn new(per_second: u32, burst: u32) -> Self {
        LogBudget {
            state: Mutex::new(State::default()),
            per_second: f64::from(per_second),
            burst: f64::from(burst),
        }
    }

    fn full(&self, now: Instant) -> Bucket {
        Bucket {
            tokens: self.burst,
            refilled: now,
            suppressed: 0,
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let elapsed = now.duration_since(b.refilled).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_second).min(self.burst);
        b.refilled = now;
    }

    /// Takes one line from the budget of `source`.
    pub fn take(&self, source: IpAddr) -> Verdict {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let key = SourceKey::of(source);
        if !s.sources.contains_key(&key) && s.sources.len() >= MAX_SOURCES {
            s.sources.retain(|_, b| {
                self.refill(b, now);
                b.suppressed > 0 || b.tokens < self.burst
            });
        }
        let full = self.full(now);
        let b = if s.sources.len() < MAX_SOURCES || s.sources.contains_key(&key) {
            s.sources.entry(key).or_insert(full)
        } else {
            s.overflow.get_or_insert(full)
        };
        self.refill(b, now);
        if b.tokens < 1.0 {
            b.suppressed += 1;
            return Verdict::Suppress;
        }
        b.tokens -= 1.0;
        match std::mem::take(&mut b.suppressed) {
            0 => Verdict::Log,
            n => Verdict::LogAfterSuppressing(n),
        }
    }

    /// Lines suppressed and not yet reported, over every source; resets the counts (for
    /// shutdown).
    pub fn flush(&self) -> u64 {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let State { sources, overflow } = &mut *s;
        sources
            .values_mut()
            .chain(overflow.as_mut())
            .map(|b| std::mem::take(&mut b.suppressed))
            .sum()
    }
}

/// Logs an unauthenticated peer's event at INFO (WARN with `warn`) within the budget of its
/// source address.
#[macro_export]
#[doc(hidden)]
macro_rules! budgeted {
    ($budget:expr, $source:expr, $level:ident, $($arg:tt)+) => {
        match $budget.take($source) {
            $crate::log_budget::Verdict::Suppress => {}
            $crate::log_budget::Verdict::Log => tracing::$level!($($arg)+),
            $crate::log_budget::Verdict::LogAfterSuppressing(n) => {
                tracing::warn!(source = %$source, suppressed = n, "log lines of this unauthenticated source suppressed (over its log budget)");
                tracing::$level!($($arg)+);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_meters_and_reports_what_it_dropped() {
        let b = LogBudget::new(10, 5);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let verdicts: Vec<_> = (0..8).map(|_| b.take(a)).collect();
        assert_eq!(&verdicts[..5], &[Verdict::Log; 5]);
        assert_eq!(&verdicts[5..], &[Verdict::Suppress; 3]);
        std::thread::sleep(std::time::Duration::from_millis(150));
        assert_eq!(b.take(a), Verdict::LogAfterSuppressing(3));
        assert_eq!(b.flush(), 0);
    }

    #[test]
    fn a_flooder_exhausts_only_its_own_budget() {
        let b = LogBudget::new(1, 3);
        let flooder: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..1000 {
            b.take(flooder);
        }
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(b.take(other), Verdict::Log);
        }
        // The same /64 is the same source.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..3 {
            b.take(v6a);
        }
        assert_eq!(b.take(v6b), Verdict::Suppress);
        assert_eq!(b.flush(), 997 + 1);
    }

    #[test]
    fn memory_is_bounded_under_a_spray_of_sources() {
        let b = LogBudget::new(1, 1);
        for i in 0..(MAX_SOURCES as u32 + 500) {
            let ip = IpAddr::from(i.to_be_bytes());
            b.take(ip);
            b.take(ip);
        }
        let s = b.state.lock().unwrap();
        assert!(s.sources.len() <= MAX_SOURCES);
        assert!(s.overflow.is_some());
    }
}
