//! The audit line of every failed or held-back login, and its counters.
//!
//! One line per `<failure>`, at INFO under the target `sasl2_fast::audit` (with the library's
//! revocation lines, so one filter keeps every audit line), with the
//! account (as the mechanism normalized it; `-` when the request never named one), the
//! mechanism, the source address and the reason:
//!
//! ```text
//! password login failed account=alice mechanism=SCRAM-SHA-256 source=192.0.2.7 reason=rejected
//! password login held back account=alice mechanism=PLAIN source=192.0.2.7 reason=held retry_after_s=8
//! ```
//!
//! `reason` is `rejected` (a wrong password), `held` (the throttle did not let it be checked),
//! `undecided` (the account backend failed), or the SASL condition of a request that never
//! reached a check (`malformed-request`, `aborted`, `invalid-mechanism`, ...). Lines are
//! metered per source address by the host's [`LogBudget`]: a flooder exhausts its own
//! budget, and the next line of that source says how many were suppressed. The
//! `sasl2_fast_host_password_failures_total{reason}` counters count every one, logged or not.
//! docs/operations.md gives a fail2ban filter for these lines.

use std::net::IpAddr;

use sasl2_fast::sasl2::Failure;

use crate::log_budget::LogBudget;
use crate::metrics::HostMetrics;

/// Reports a `<failure>` sent to `source` for an attempt with `mechanism` (ours, or `None`
/// for a name we do not implement or no `<authenticate>` at all).
pub fn login_failed(
    budget: &LogBudget,
    metrics: &HostMetrics,
    source: IpAddr,
    mechanism: Option<&'static str>,
    failure: &Failure,
) {
    let mechanism_label = mechanism.unwrap_or("other");
    if mechanism.is_some_and(|m| m.starts_with("HT-")) {
        // A token login: nothing to guess (256-bit tokens), so no audit of password guessing,
        // but still a line an operator can read.
        crate::budgeted!(
            budget,
            source,
            info,
            target: "sasl2_fast::audit",
            mechanism = %mechanism_label,
            %source,
            reason = %failure.condition,
            "FAST login failed"
        );
        return;
    }
    let Some(check) = &failure.check else {
        metrics.password_failed(failure.condition.as_str());
        crate::budgeted!(
            budget,
            source,
            info,
            target: "sasl2_fast::audit",
            account = %"-",
            mechanism = %mechanism_label,
            %source,
            reason = %failure.condition,
            "password login failed"
        );
        return;
    };
    metrics.password_failed(check.reason());
    // Two arms that differ in one field and the message, on purpose: tracing's macros take
    // their fields as syntax, and the two messages are what fail2ban filters match literally
    // (docs/operations.md), so each line is written out whole.
    match check.retry_after_secs() {
        Some(retry_after_s) => crate::budgeted!(
            budget,
            source,
            info,
            target: "sasl2_fast::audit",
            account = %check.identity,
            mechanism = %mechanism_label,
            %source,
            reason = %check.reason(),
            retry_after_s,
            "password login held back"
        ),
        None => crate::budgeted!(
            budget,
            source,
            info,
            target: "sasl2_fast::audit",
            account = %check.identity,
            mechanism = %mechanism_label,
            %source,
            reason = %check.reason(),
            "password login failed"
        ),
    }
}
