//! The host's metrics: one prometheus-client [`Registry`] holding the library's FAST
//! lifecycle and token-store collectors and the host's own login and connection metrics,
//! served by [`crate::metrics_server`] when `metrics_listen` is set.
//!
//! Host metrics (docs/operations.md lists them with example alerts):
//! - `sasl2_fast_host_logins_total{mechanism,result}`: finished SASL attempts, `result` =
//!   `success` | `failure`.
//! - `sasl2_fast_host_login_failures_total{condition}`: failures by SASL condition.
//! - `sasl2_fast_host_password_failures_total{reason}`: failed password logins by the reason
//!   of their audit line (crate::audit): `held` (held back by the login throttle, not
//!   checked), `rejected` (a wrong password), `undecided` (backend failure), or the SASL
//!   condition of a request that never reached a check.
//! - `sasl2_fast_host_login_duration_seconds{kind}`: from the `<authenticate>` (`<auth>`)
//!   that started an attempt to its `<success>`, `kind` = `password` | `fast`.
//! - `sasl2_fast_host_connections{state,tls}`: open client connections, `state` =
//!   `pre_auth` | `authenticated` | `bound`.
//!
//! Label values come from fixed sets only: a mechanism name a peer sends is counted under its
//! own label only if it is one the host implements, else under `other`; accounts, JIDs,
//! addresses and user agents never become labels. Every label set's handle is created here,
//! at start, so the login path does a read-only map lookup and atomic increments (plus the
//! histogram's own mutex), with no allocation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use minidom::Element;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use sasl2_fast::fast::ht::HtMechanism;
use sasl2_fast::prometheus::prometheus_client;
use sasl2_fast::prometheus::{FastLifecycleMetrics, StoreMetrics};
use sasl2_fast::sasl2::SaslCondition;
use sasl2_fast::xmpp::ns;

/// The password mechanisms the host can register (`server.rs`); HT mechanisms come from
/// [`HtMechanism::all`]. A name missing here is counted as `other` (the metrics test checks
/// that every mechanism a stream offers has its own label).
const PASSWORD_MECHANISMS: [&str; 5] = [
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-1",
    "PLAIN",
];

/// The label of a mechanism name that is not one of ours (or absent).
const OTHER: &str = "other";

/// The reasons of a failed password check ([`sasl2_fast::sasl2::CheckReport::reason`]).
const PASSWORD_CHECK_REASONS: [&str; 3] = ["held", "rejected", "undecided"];

/// How a login authenticated, for the latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginKind {
    /// A password mechanism (SCRAM, PLAIN).
    Password,
    /// A FAST token (HT-*).
    Fast,
}

/// Where a connection is in its life, for `sasl2_fast_host_connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not authenticated yet (counted against `max_unauthenticated_per_ip`).
    PreAuth,
    /// Authenticated, no resource bound yet.
    Authenticated,
    /// Authenticated with a bound resource (a routable session).
    Bound,
}

impl ConnectionState {
    const ALL: [ConnectionState; 3] = [
        ConnectionState::PreAuth,
        ConnectionState::Authenticated,
        ConnectionState::Bound,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ConnectionState::PreAuth => "pre_auth",
            ConnectionState::Authenticated => "authenticated",
            ConnectionState::Bound => "bound",
        }
    }
}

/// The counters of one mechanism label.
#[derive(Debug)]
struct MechanismCounters {
    success: Counter,
    failure: Counter,
}

/// Every metric of a running host, in one registry.
#[derive(Debug)]
pub struct HostMetrics {
    registry: Registry,
    fast: Arc<FastLifecycleMetrics>,
    store: Arc<StoreMetrics>,
    /// Keyed by the mechanism names we implement; [`OTHER`] for the rest.
    logins: HashMap<&'static str, MechanismCounters>,
    /// Indexed like [`SaslCondition::ALL`]; the last one for a condition added later.
    failures: Vec<Counter>,
    /// Keyed by the audit reasons ([`PASSWORD_CHECK_REASONS`] and the SASL conditions).
    password_failures: HashMap<&'static str, Counter>,
    password_duration: Histogram,
    fast_duration: Histogram,
    /// `[state][tls as usize]`.
    connections: [[Gauge; 2]; 3],
}

/// Login latency buckets: 1 ms doubling to ~16 s. A FAST login in process takes tens of µs
/// plus a durable write when a token is issued (ms); SCRAM is two round trips plus PBKDF2
/// with the account's iteration count; throttled and slow clients land in the top buckets.
fn login_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 15)
}

impl HostMetrics {
    /// Creates every metric (each label set at 0) in a fresh registry.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let fast = Arc::new(FastLifecycleMetrics::register(&mut registry));
        let store = Arc::new(StoreMetrics::register(&mut registry));

        let logins = Family::<[(&'static str, &'static str); 2], Counter>::default();
        registry.register(
            "sasl2_fast_host_logins",
            "Finished SASL authentication attempts by mechanism and result",
            logins.clone(),
        );
        let names = PASSWORD_MECHANISMS
            .into_iter()
            .chain(HtMechanism::all().map(HtMechanism::name))
            .chain([OTHER]);
        let logins = names
            .map(|m| {
                let c =
                    |result| logins.get_or_create_owned(&[("mechanism", m), ("result", result)]);
                (
                    m,
                    MechanismCounters {
                        success: c("success"),
                        failure: c("failure"),
                    },
                )
            })
            .collect();

        let failures = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "sasl2_fast_host_login_failures",
            "Failed SASL authentication attempts by SASL condition",
            failures.clone(),
        );
        let failures = SaslCondition::ALL
            .iter()
            .map(|c| c.as_str())
            .chain([OTHER])
            .map(|c| failures.get_or_create_owned(&[("condition", c)]))
            .collect();

        let password_failures = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "sasl2_fast_host_password_failures",
            "Failed password logins by reason: held (held back by the login throttle, not \
             checked), rejected, undecided, or the SASL condition of a request that never \
             reached a check",
            password_failures.clone(),
        );
        let password_failures = PASSWORD_CHECK_REASONS
            .into_iter()
            .chain(SaslCondition::ALL.iter().map(|c| c.as_str()))
            .chain([OTHER])
            .map(|r| (r, password_failures.get_or_create_owned(&[("reason", r)])))
            .collect();

        let durations =
            Family::<[(&'static str, &'static str); 1], Histogram>::new_with_constructor(
                (|| Histogram::new(login_buckets())) as fn() -> Histogram,
            );
        registry.register_with_unit(
            "sasl2_fast_host_login_duration",
            "Time from the <authenticate> (or <auth>) of a successful attempt to its <success>",
            Unit::Seconds,
            durations.clone(),
        );

        let connections = Family::<[(&'static str, &'static str); 2], Gauge>::default();
        registry.register(
            "sasl2_fast_host_connections",
            "Open client connections by state and whether TLS is up",
            connections.clone(),
        );
        let connections = ConnectionState::ALL.map(|s| {
            [("tls", "false"), ("tls", "true")]
                .map(|tls| connections.get_or_create_owned(&[("state", s.as_str()), tls]))
        });

        HostMetrics {
            registry,
            fast,
            store,
            logins,
            failures,
            password_failures,
            password_duration: durations.get_or_create_owned(&[("kind", "password")]),
            fast_duration: durations.get_or_create_owned(&[("kind", "fast")]),
            connections,
        }
    }

    /// The FAST lifecycle collector, to register with the FAST plugin.
    pub fn fast(&self) -> Arc<FastLifecycleMetrics> {
        self.fast.clone()
    }

    /// The token-store collector, to wrap the store with.
    pub fn store(&self) -> Arc<StoreMetrics> {
        self.store.clone()
    }

    /// The registry (e.g. to encode it).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; a metric that failed to encode would be a bug.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }

    fn mechanism(&self, name: Option<&str>) -> &MechanismCounters {
        name.and_then(|n| self.logins.get(n))
            .unwrap_or_else(|| &self.logins[OTHER])
    }

    /// A login attempt succeeded with `mechanism` (the server's own name for it) after
    /// `elapsed` since its `<authenticate>`.
    pub fn login_succeeded(&self, mechanism: &str, elapsed: Option<Duration>) {
        self.mechanism(Some(mechanism)).success.inc();
        let kind = match HtMechanism::from_name(mechanism) {
            Some(_) => LoginKind::Fast,
            None => LoginKind::Password,
        };
        if let Some(d) = elapsed {
            match kind {
                LoginKind::Fast => self.fast_duration.observe(d.as_secs_f64()),
                LoginKind::Password => self.password_duration.observe(d.as_secs_f64()),
            }
        }
    }

    /// A login attempt naming `mechanism` (as the client sent it: checked against ours)
    /// failed with `condition`.
    pub fn login_failed(&self, mechanism: Option<&str>, condition: SaslCondition) {
        self.mechanism(mechanism).failure.inc();
        let i = SaslCondition::ALL
            .iter()
            .position(|c| *c == condition)
            .unwrap_or(SaslCondition::ALL.len());
        self.failures[i].inc();
    }

    /// A password login failed for `reason` (an audit reason; unknown ones count as `other`).
    pub fn password_failed(&self, reason: &str) {
        self.password_failures
            .get(reason)
            .unwrap_or_else(|| &self.password_failures[OTHER])
            .inc();
    }

    /// Logins since start, summed over mechanisms (what `host ctl stats` shows).
    pub fn login_totals(&self) -> LoginTotals {
        let mut totals = LoginTotals::default();
        for (name, c) in &self.logins {
            match HtMechanism::from_name(name) {
                Some(_) => totals.fast += c.success.get(),
                None => totals.password += c.success.get(),
            }
            totals.failed += c.failure.get();
        }
        totals
    }

    fn connection_gauge(&self, state: ConnectionState, tls: bool) -> &Gauge {
        &self.connections[state as usize][tls as usize]
    }
}

impl Default for HostMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Logins since start, counted once per `<success>` or `<failure>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoginTotals {
    /// Successful logins with a password mechanism (SCRAM, PLAIN).
    pub password: u64,
    /// Successful logins with a FAST token (HT-*).
    pub fast: u64,
    /// Failed attempts (any mechanism).
    pub failed: u64,
}

/// A SASL attempt in progress: when its `<authenticate>` (`<auth>`) arrived and which of our
/// mechanisms it named.
#[derive(Debug, Clone, Copy)]
pub struct LoginAttempt {
    started: Instant,
    mechanism: Option<&'static str>,
}

impl LoginAttempt {
    /// Our name of the mechanism it named, if it is one of ours.
    pub fn mechanism(&self) -> Option<&'static str> {
        self.mechanism
    }

    /// The attempt `el` starts, if it is an `<authenticate>` or RFC 6120 `<auth>`.
    pub fn starts(el: &Element) -> Option<LoginAttempt> {
        if !(el.is("authenticate", ns::SASL2) || el.is("auth", ns::SASL)) {
            return None;
        }
        let name = el.attr("mechanism");
        let mechanism = name.and_then(|n| {
            PASSWORD_MECHANISMS
                .into_iter()
                .find(|m| *m == n)
                .or_else(|| HtMechanism::from_name(n).map(HtMechanism::name))
        });
        Some(LoginAttempt {
            started: Instant::now(),
            mechanism,
        })
    }

    /// Counts a `<failure>` sent for `attempt` (`None`: one without an `<authenticate>`,
    /// e.g. an `<abort>` out of turn, counted under `other`).
    pub fn failed(attempt: Option<LoginAttempt>, metrics: &HostMetrics, condition: SaslCondition) {
        metrics.login_failed(attempt.and_then(|a| a.mechanism), condition);
    }

    /// Counts a `<success>` with the server's own name for the mechanism, and its latency.
    pub fn succeeded(attempt: Option<LoginAttempt>, metrics: &HostMetrics, mechanism: &str) {
        metrics.login_succeeded(mechanism, attempt.map(|a| a.started.elapsed()));
    }
}

/// One connection's place in `sasl2_fast_host_connections`: counted from creation until
/// drop, moved between label sets as the connection changes state or starts TLS.
#[derive(Debug)]
pub struct ConnectionGauge {
    metrics: Arc<HostMetrics>,
    state: ConnectionState,
    tls: bool,
}

impl ConnectionGauge {
    /// Counts a new, unauthenticated connection.
    pub fn new(metrics: Arc<HostMetrics>, tls: bool) -> Self {
        metrics
            .connection_gauge(ConnectionState::PreAuth, tls)
            .inc();
        ConnectionGauge {
            metrics,
            state: ConnectionState::PreAuth,
            tls,
        }
    }

    fn set(&mut self, state: ConnectionState, tls: bool) {
        if (state, tls) == (self.state, self.tls) {
            return;
        }
        // Up before down: a scrape in between may see the connection twice, never zero times.
        self.metrics.connection_gauge(state, tls).inc();
        self.metrics.connection_gauge(self.state, self.tls).dec();
        self.state = state;
        self.tls = tls;
    }

    /// The connection moved to `state`.
    pub fn set_state(&mut self, state: ConnectionState) {
        self.set(state, self.tls);
    }

    /// TLS is up (after STARTTLS).
    pub fn set_tls(&mut self) {
        self.set(self.state, true);
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.metrics.connection_gauge(self.state, self.tls).dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_and_gauges_follow_the_connection() {
        let m = Arc::new(HostMetrics::new());
        m.login_failed(Some("SCRAM-SHA-256"), SaslCondition::NotAuthorized);
        // A name a peer made up is `other`, never its own label.
        m.login_failed(
            Some("X-EVIL-alice@example.org"),
            SaslCondition::InvalidMechanism,
        );
        m.login_failed(None, SaslCondition::MalformedRequest);
        m.login_succeeded("HT-SHA-256-NONE", Some(Duration::from_millis(3)));
        let mut g = ConnectionGauge::new(m.clone(), false);
        g.set_tls();
        g.set_state(ConnectionState::Bound);
        let t = m.encode();
        for line in [
            "sasl2_fast_host_logins_total{mechanism=\"SCRAM-SHA-256\",result=\"failure\"} 1\n",
            "sasl2_fast_host_logins_total{mechanism=\"other\",result=\"failure\"} 2\n",
            "sasl2_fast_host_logins_total{mechanism=\"HT-SHA-256-NONE\",result=\"success\"} 1\n",
            "sasl2_fast_host_login_failures_total{condition=\"invalid-mechanism\"} 1\n",
            "sasl2_fast_host_login_duration_seconds_count{kind=\"fast\"} 1\n",
            "sasl2_fast_host_login_duration_seconds_count{kind=\"password\"} 0\n",
            "sasl2_fast_host_connections{state=\"bound\",tls=\"true\"} 1\n",
            "sasl2_fast_host_connections{state=\"pre_auth\",tls=\"false\"} 0\n",
            "sasl2_fast_rejected_total{reason=\"replay\"} 0\n",
        ] {
            assert!(t.contains(line), "{line} in {t}");
        }
        assert!(!t.contains("EVIL"));
        drop(g);
        assert!(
            m.encode()
                .contains("sasl2_fast_host_connections{state=\"bound\",tls=\"true\"} 0\n")
        );
    }
}
