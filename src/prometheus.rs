//! Prometheus/OpenMetrics collectors (feature `prometheus`): the FAST token lifecycle as a
//! [`FastObserver`] and token-store latency as a [`StoreObserver`], registered in a
//! [`prometheus_client`] [`Registry`] the embedding server owns. How the registry is served
//! (an HTTP listener, a push gateway) is the server's business: this module opens no socket.
//!
//! ```
//! use std::sync::Arc;
//! use sasl2_fast::prometheus::{FastLifecycleMetrics, StoreMetrics, prometheus_client};
//! use sasl2_fast::store::memory::MemoryStore;
//! use sasl2_fast::store::observed::ObservedStore;
//!
//! let mut registry = prometheus_client::registry::Registry::default();
//! let fast = Arc::new(FastLifecycleMetrics::register(&mut registry));
//! let store = Arc::new(StoreMetrics::register(&mut registry));
//! let _store = ObservedStore::new(Arc::new(MemoryStore::new()), store);
//! // FastTokens::new(...).with_observer(fast) counts the lifecycle.
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains("sasl2_fast_rejected_total{reason=\"replay\"} 0"));
//! ```
//!
//! Every label value is one of a fixed set (an event, a [`RejectReason`], a [`StoreOp`], a
//! [`StoreErrorKind`]), never an account, client or mechanism string from a peer. Each label
//! set's handle is created at registration, so an event costs an atomic increment (a
//! histogram observation for store latency) and no map lookup, lock or allocation.

use std::time::Duration;

pub use prometheus_client;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::fast::hooks::{FastObserver, RejectEvent, RejectReason, RevokeEvent, TokenEvent};
use crate::store::observed::{StoreErrorKind, StoreObserver, StoreOp, StoreOutcome};

/// A label set of one (name, value) pair with static strings.
type Label = [(&'static str, &'static str); 1];

/// Counters of the FAST token lifecycle:
/// `sasl2_fast_token_events_total{event}` (`issued`, `rotated`, `promoted`, `used`,
/// `invalidated`, `revoked`, `expired`) and `sasl2_fast_rejected_total{reason}` (the
/// [`RejectReason`] names: `replay`, `unknown-token`, `expired`, ...). Register it with
/// [`crate::fast::FastTokens::with_observer`].
#[derive(Debug)]
pub struct FastLifecycleMetrics {
    issued: Counter,
    rotated: Counter,
    promoted: Counter,
    used: Counter,
    invalidated: Counter,
    revoked: Counter,
    expired: Counter,
    rejected: [Counter; 7],
}

impl FastLifecycleMetrics {
    /// Creates the counters (every label set at 0, so a rate over a reason that never
    /// happened is 0, not absent) and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let events = Family::<Label, Counter>::default();
        registry.register(
            "sasl2_fast_token_events",
            "FAST token lifecycle events by kind",
            events.clone(),
        );
        let event = |name: &'static str| events.get_or_create_owned(&[("event", name)]);
        let rejected = Family::<Label, Counter>::default();
        registry.register(
            "sasl2_fast_rejected",
            "Rejected FAST authentication attempts by reason",
            rejected.clone(),
        );
        let reason = |r: RejectReason| rejected.get_or_create_owned(&[("reason", r.as_str())]);
        FastLifecycleMetrics {
            issued: event("issued"),
            rotated: event("rotated"),
            promoted: event("promoted"),
            used: event("used"),
            invalidated: event("invalidated"),
            revoked: event("revoked"),
            expired: event("expired"),
            rejected: RejectReason::ALL.map(reason),
        }
    }

    /// Rejections counted for one reason so far.
    pub fn rejections(&self, reason: RejectReason) -> u64 {
        self.rejected[reason as usize].get()
    }
}

impl FastObserver for FastLifecycleMetrics {
    fn issued(&self, _e: &TokenEvent) {
        self.issued.inc();
    }
    fn rotated(&self, _e: &TokenEvent) {
        self.rotated.inc();
    }
    fn promoted(&self, _e: &TokenEvent) {
        self.promoted.inc();
    }
    fn used(&self, _e: &TokenEvent) {
        self.used.inc();
    }
    fn invalidated(&self, _e: &TokenEvent) {
        self.invalidated.inc();
    }
    fn revoked(&self, _e: &RevokeEvent) {
        self.revoked.inc();
    }
    fn expired(&self, _e: &TokenEvent) {
        self.expired.inc();
    }
    fn rejected(&self, e: &RejectEvent) {
        self.rejected[e.reason as usize].inc();
    }
}

/// Token-store latency and errors, fed by an
/// [`ObservedStore`](crate::store::observed::ObservedStore):
/// `sasl2_fast_store_operation_duration_seconds{operation}` (a histogram from 50 µs to about
/// 1.6 s) and `sasl2_fast_store_errors_total{operation,kind}`, plus
/// `sasl2_fast_store_conflicts_total{operation}` for compare-and-swaps lost to a concurrent
/// writer.
#[derive(Debug)]
pub struct StoreMetrics {
    latency: [Histogram; StoreOp::ALL.len()],
    errors: [[Counter; StoreErrorKind::ALL.len()]; StoreOp::ALL.len()],
    conflicts: Counter,
}

/// Upper bounds of the store latency buckets: 50 µs doubling to ~1.6 s. A sled read is a few
/// µs, a durable sled write a few ms (one fsync), a PostgreSQL round trip on a LAN ~0.3-1 ms.
fn store_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_05, 2.0, 16)
}

impl StoreMetrics {
    /// Creates the metrics (every label set up front) and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let latency = Family::<Label, Histogram>::new_with_constructor(
            (|| Histogram::new(store_buckets())) as fn() -> Histogram,
        );
        registry.register_with_unit(
            "sasl2_fast_store_operation_duration",
            "Token store operation latency",
            Unit::Seconds,
            latency.clone(),
        );
        let errors = Family::<[(&'static str, &'static str); 2], Counter>::default();
        registry.register(
            "sasl2_fast_store_errors",
            "Failed token store operations by operation and error kind",
            errors.clone(),
        );
        let conflicts = Family::<Label, Counter>::default();
        registry.register(
            "sasl2_fast_store_conflicts",
            "Compare-and-swaps that lost to a concurrent writer (the login re-reads)",
            conflicts.clone(),
        );
        StoreMetrics {
            latency: StoreOp::ALL
                .map(|op| latency.get_or_create_owned(&[("operation", op.as_str())])),
            errors: StoreOp::ALL.map(|op| {
                StoreErrorKind::ALL.map(|kind| {
                    errors
                        .get_or_create_owned(&[("operation", op.as_str()), ("kind", kind.as_str())])
                })
            }),
            conflicts: conflicts
                .get_or_create_owned(&[("operation", StoreOp::CompareAndSwap.as_str())]),
        }
    }

    /// Errors counted for one operation and kind so far.
    pub fn errors(&self, op: StoreOp, kind: StoreErrorKind) -> u64 {
        self.errors[op as usize][kind as usize].get()
    }
}

impl StoreObserver for StoreMetrics {
    fn completed(&self, op: StoreOp, elapsed: Duration, outcome: StoreOutcome) {
        self.latency[op as usize].observe(elapsed.as_secs_f64());
        match outcome {
            StoreOutcome::Ok => {}
            StoreOutcome::Conflict => {
                self.conflicts.inc();
            }
            StoreOutcome::Error(kind) => {
                self.errors[op as usize][kind as usize].inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(registry: &Registry) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, registry).unwrap();
        s
    }

    fn reject(reason: RejectReason) -> RejectEvent {
        RejectEvent {
            account: Some("alice".into()),
            client: Some("0011223344556677".into()),
            mechanism: "HT-SHA-256-NONE".into(),
            reason,
            at: 0,
        }
    }

    #[test]
    fn reasons_are_indexed_in_declaration_order() {
        for (i, r) in RejectReason::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i, "{r:?}");
        }
        for (i, op) in StoreOp::ALL.into_iter().enumerate() {
            assert_eq!(op as usize, i, "{op:?}");
        }
        for (i, k) in StoreErrorKind::ALL.into_iter().enumerate() {
            assert_eq!(k as usize, i, "{k:?}");
        }
    }

    #[test]
    fn lifecycle_counts_appear_with_bounded_labels() {
        let mut registry = Registry::default();
        let m = FastLifecycleMetrics::register(&mut registry);
        let before = text(&registry);
        // Every label set exists from the start, at 0.
        for r in RejectReason::ALL {
            let line = format!("sasl2_fast_rejected_total{{reason=\"{}\"}} 0\n", r.as_str());
            assert!(before.contains(&line), "{line} in {before}");
        }
        m.rejected(&reject(RejectReason::Replay));
        m.rejected(&reject(RejectReason::Replay));
        m.rejected(&reject(RejectReason::UnknownToken));
        let e = TokenEvent {
            account: "alice".into(),
            client: "0011223344556677".into(),
            mechanism: "HT-SHA-256-NONE".into(),
            issued_at: 0,
            expires_at: 0,
            at: 0,
        };
        m.issued(&e);
        m.used(&e);
        m.used(&e);
        let after = text(&registry);
        for line in [
            "sasl2_fast_rejected_total{reason=\"replay\"} 2\n",
            "sasl2_fast_rejected_total{reason=\"unknown-token\"} 1\n",
            "sasl2_fast_rejected_total{reason=\"expired\"} 0\n",
            "sasl2_fast_token_events_total{event=\"issued\"} 1\n",
            "sasl2_fast_token_events_total{event=\"used\"} 2\n",
            "sasl2_fast_token_events_total{event=\"rotated\"} 0\n",
        ] {
            assert!(after.contains(line), "{line} in {after}");
        }
        assert_eq!(m.rejections(RejectReason::Replay), 2);
        // The events' account and client never become labels.
        assert!(!after.contains("alice") && !after.contains("0011223344556677"));
    }

    #[test]
    fn store_latency_and_errors() {
        let mut registry = Registry::default();
        let m = StoreMetrics::register(&mut registry);
        m.completed(
            StoreOp::GetForLogin,
            Duration::from_micros(70),
            StoreOutcome::Ok,
        );
        m.completed(
            StoreOp::CompareAndSwap,
            Duration::from_millis(3),
            StoreOutcome::Conflict,
        );
        m.completed(
            StoreOp::GetForLogin,
            Duration::from_secs(2),
            StoreOutcome::Error(StoreErrorKind::Backend),
        );
        let t = text(&registry);
        for line in [
            "sasl2_fast_store_operation_duration_seconds_count{operation=\"get_for_login\"} 2\n",
            // 70 µs is above the first bound (50 µs), within the second (100 µs).
            "sasl2_fast_store_operation_duration_seconds_bucket{le=\"0.00005\",operation=\"get_for_login\"} 0\n",
            "sasl2_fast_store_operation_duration_seconds_bucket{le=\"0.0001\",operation=\"get_for_login\"} 1\n",
            "sasl2_fast_store_operation_duration_seconds_bucket{le=\"+Inf\",operation=\"get_for_login\"} 2\n",
            "sasl2_fast_store_operation_duration_seconds_count{operation=\"compare_and_swap\"} 1\n",
            "sasl2_fast_store_errors_total{operation=\"get_for_login\",kind=\"backend\"} 1\n",
            "sasl2_fast_store_errors_total{operation=\"get\",kind=\"backend\"} 0\n",
            "sasl2_fast_store_conflicts_total{operation=\"compare_and_swap\"} 1\n",
        ] {
            assert!(t.contains(line), "{line} in {t}");
        }
        assert_eq!(m.errors(StoreOp::GetForLogin, StoreErrorKind::Backend), 1);
    }
}
