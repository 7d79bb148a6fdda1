//! A budget for log lines that anyone can cause without an account: failed logins, stream
//! errors before authentication, connections refused over a limit.
//!
//! Each such line is cheap for a peer to trigger and costs the host disk; one connection that
//! floods `<abort/>` and reconnects could otherwise write hundreds of megabytes. Up to `burst`
//! lines pass at once and `per_second` more each second; the rest are counted, and the next
//! line that passes (or [`LogBudget::flush`], at shutdown) reports how many were suppressed,
//! so an operator still sees that something happened and how much.

use std::sync::Mutex;
use std::time::Instant;

/// A token bucket of log lines, shared by every connection of a host.
#[derive(Debug)]
pub struct LogBudget {
    state: Mutex<State>,
    per_second: f64,
    burst: f64,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    refilled: Instant,
    suppressed: u64,
}

/// What a caller may log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log the line.
    Log,
    /// Log the line, and first that `n` earlier lines were suppressed.
    LogAfterSuppressing(u64),
    /// Over budget: do not log it (it is counted).
    Suppress,
}

impl LogBudget {
    /// A budget of `per_second` lines a second with bursts of `burst`.
    pub fn new(per_second: u32, burst: u32) -> Self {
        LogBudget {
            state: Mutex::new(State {
                tokens: f64::from(burst),
                refilled: Instant::now(),
                suppressed: 0,
            }),
            per_second: f64::from(per_second),
            burst: f64::from(burst),
        }
    }

    /// Takes one line from the budget.
    pub fn take(&self) -> Verdict {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let elapsed = now.duration_since(s.refilled).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.per_second).min(self.burst);
        s.refilled = now;
        if s.tokens < 1.0 {
            s.suppressed += 1;
            return Verdict::Suppress;
        }
        s.tokens -= 1.0;
        match std::mem::take(&mut s.suppressed) {
            0 => Verdict::Log,
            n => Verdict::LogAfterSuppressing(n),
        }
    }

    /// Lines suppressed since the last report, and resets the count (for shutdown).
    pub fn flush(&self) -> u64 {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut s.suppressed)
    }
}

/// Logs an unauthenticated peer's event at INFO (WARN with `warn`) within `budget`.
#[macro_export]
#[doc(hidden)]
macro_rules! budgeted {
    ($budget:expr, $level:ident, $($arg:tt)+) => {
        match $budget.take() {
            $crate::log_budget::Verdict::Suppress => {}
            $crate::log_budget::Verdict::Log => tracing::$level!($($arg)+),
            $crate::log_budget::Verdict::LogAfterSuppressing(n) => {
                tracing::warn!(suppressed = n, "log lines of unauthenticated peers suppressed (over the log budget)");
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
        let verdicts: Vec<_> = (0..8).map(|_| b.take()).collect();
        assert_eq!(&verdicts[..5], &[Verdict::Log; 5]);
        assert_eq!(&verdicts[5..], &[Verdict::Suppress; 3]);
        std::thread::sleep(std::time::Duration::from_millis(150));
        assert_eq!(b.take(), Verdict::LogAfterSuppressing(3));
        assert_eq!(b.flush(), 0);
    }
}
