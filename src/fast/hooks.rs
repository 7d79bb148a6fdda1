//! Observers of the token lifecycle: what a host hooks metrics, audit logs or user
//! notifications into. No event ever carries a token, nonce or MAC.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// A token-level event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEvent {
    /// Account localpart.
    pub account: String,
    /// Short label of the client (first bytes of the user-agent id hash, hex).
    pub client: String,
    /// HT mechanism the token is bound to.
    pub mechanism: String,
    /// When the token was issued (unix ms).
    pub issued_at: u64,
    /// When it expires (unix ms).
    pub expires_at: u64,
    /// When the event happened (unix ms).
    pub at: u64,
}

/// Why a FAST attempt was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// No record for (account, client), or no slot's MAC matched: `not-authorized`.
    UnknownToken,
    /// The matched token expired: `credentials-expired`.
    Expired,
    /// The matched token was revoked (password change, admin, "before T"):
    /// `credentials-expired`.
    Revoked,
    /// The chain of rotations passed `token_max_chain_age`: `credentials-expired`.
    ChainTooOld,
    /// `count` did not increase (F-14): `not-authorized`.
    Replay,
    /// The HT message or FAST request was malformed: `malformed-request`.
    Malformed,
    /// The token store (or the account store asked for its revocation cutoff) could not
    /// answer: `temporary-auth-failure`.
    StoreUnavailable,
}

impl RejectReason {
    /// Every reason, in declaration order (`reason as usize` is its index), for metrics and
    /// statistics that list them all.
    pub const ALL: [RejectReason; 7] = [
        RejectReason::UnknownToken,
        RejectReason::Expired,
        RejectReason::Revoked,
        RejectReason::ChainTooOld,
        RejectReason::Replay,
        RejectReason::Malformed,
        RejectReason::StoreUnavailable,
    ];

    /// A stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::UnknownToken => "unknown-token",
            RejectReason::Expired => "expired",
            RejectReason::Revoked => "revoked",
            RejectReason::ChainTooOld => "chain-too-old",
            RejectReason::Replay => "replay",
            RejectReason::Malformed => "malformed",
            RejectReason::StoreUnavailable => "store-unavailable",
        }
    }
}

/// A rejected FAST attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectEvent {
    /// Account, if the request named a valid one.
    pub account: Option<String>,
    /// Client label, if known.
    pub client: Option<String>,
    /// Mechanism of the attempt.
    pub mechanism: String,
    /// Why.
    pub reason: RejectReason,
    /// When (unix ms).
    pub at: u64,
}

/// What a revocation covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeScope {
    /// One client of an account.
    Client {
        /// Account.
        account: String,
        /// Client label.
        client: String,
    },
    /// Every client of an account (password change).
    Account(String),
    /// Every token of every account issued before the cutoff.
    All,
}

/// Who or what revoked tokens: the actor of the audit line every revocation writes
/// (`target: "sasl2_fast::audit"`, level `info`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevokedBy {
    /// The account owner, from one of their sessions (XEP-0494 `<revoke>`).
    User {
        /// The full JID of the session that asked.
        jid: String,
    },
    /// A server administrator (admin socket, command line).
    Admin,
    /// A password change revoked every token of the account.
    PasswordChange,
    /// The per-account client cap (`max_clients_per_account`) dropped the least recently
    /// used client to make room for a new one.
    CapEviction,
}

impl RevokedBy {
    /// The actor's kind as one word, for log fields and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            RevokedBy::User { .. } => "user",
            RevokedBy::Admin => "admin",
            RevokedBy::PasswordChange => "password-change",
            RevokedBy::CapEviction => "cap-eviction",
        }
    }

    /// The JID that asked, for [`RevokedBy::User`].
    pub fn jid(&self) -> Option<&str> {
        match self {
            RevokedBy::User { jid } => Some(jid),
            _ => None,
        }
    }
}

impl fmt::Display for RevokedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RevokedBy::User { jid } => write!(f, "user {jid}"),
            other => f.write_str(other.kind()),
        }
    }
}

/// A revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeEvent {
    /// What was revoked.
    pub scope: RevokeScope,
    /// Who revoked it.
    pub by: RevokedBy,
    /// Tokens issued before this instant are no longer trusted (unix ms).
    pub before: u64,
}

/// Observes token lifecycle events. Every method has a no-op default, so an observer
/// implements only what it needs, and new events can be added without breaking it.
///
/// # Contract
/// Methods are called synchronously on the login path, after the state change is stored and
/// before `<success>` is sent: they must be cheap and must not block (hand work to a channel).
pub trait FastObserver: fmt::Debug + Send + Sync {
    /// A token was issued on request (`<request-token>`).
    fn issued(&self, _e: &TokenEvent) {}
    /// A token was issued by server-side rotation (F-16).
    fn rotated(&self, _e: &TokenEvent) {}
    /// A `new` token was used for the first time and became `current` (F-18).
    fn promoted(&self, _e: &TokenEvent) {}
    /// A token authenticated a login.
    fn used(&self, _e: &TokenEvent) {}
    /// A client invalidated its tokens (`<fast invalidate='true'/>`, F-21).
    fn invalidated(&self, _e: &TokenEvent) {}
    /// Tokens were revoked.
    fn revoked(&self, _e: &RevokeEvent) {}
    /// An expired token was removed (by the sweep or when presented).
    fn expired(&self, _e: &TokenEvent) {}
    /// A FAST attempt was rejected.
    fn rejected(&self, _e: &RejectEvent) {}
}

/// Counters of every event, for a metrics endpoint or a shutdown summary.
#[derive(Debug, Default)]
pub struct FastMetrics {
    /// Tokens issued on request.
    pub issued: AtomicU64,
    /// Tokens issued by rotation.
    pub rotated: AtomicU64,
    /// Promotions of `new` to `current`.
    pub promoted: AtomicU64,
    /// Successful FAST logins.
    pub used: AtomicU64,
    /// Invalidations.
    pub invalidated: AtomicU64,
    /// Revocations.
    pub revoked: AtomicU64,
    /// Expired tokens removed.
    pub expired: AtomicU64,
    /// Rejections, by reason: unknown, expired, revoked, chain, replay, malformed, store.
    pub rejected: [AtomicU64; 7],
}

impl FastMetrics {
    /// Rejections for one reason.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason as usize].load(Ordering::Relaxed)
    }

    /// A one-line summary, e.g. for a log line at shutdown.
    pub fn summary(&self) -> String {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "issued={} rotated={} promoted={} used={} invalidated={} revoked={} expired={} rejected={}",
            l(&self.issued),
            l(&self.rotated),
            l(&self.promoted),
            l(&self.used),
            l(&self.invalidated),
            l(&self.revoked),
            l(&self.expired),
            self.rejected.iter().map(l).sum::<u64>()
        )
    }
}

impl FastObserver for FastMetrics {
    fn issued(&self, _e: &TokenEvent) {
        self.issued.fetch_add(1, Ordering::Relaxed);
    }
    fn rotated(&self, _e: &TokenEvent) {
        self.rotated.fetch_add(1, Ordering::Relaxed);
    }
    fn promoted(&self, _e: &TokenEvent) {
        self.promoted.fetch_add(1, Ordering::Relaxed);
    }
    fn used(&self, _e: &TokenEvent) {
        self.used.fetch_add(1, Ordering::Relaxed);
    }
    fn invalidated(&self, _e: &TokenEvent) {
        self.invalidated.fetch_add(1, Ordering::Relaxed);
    }
    fn revoked(&self, _e: &RevokeEvent) {
        self.revoked.fetch_add(1, Ordering::Relaxed);
    }
    fn expired(&self, _e: &TokenEvent) {
        self.expired.fetch_add(1, Ordering::Relaxed);
    }
    fn rejected(&self, e: &RejectEvent) {
        self.rejected[e.reason as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Logs every event at debug level through `tracing` (never with a secret).
#[derive(Debug, Default)]
pub struct TracingObserver;

impl FastObserver for TracingObserver {
    fn issued(&self, e: &TokenEvent) {
        tracing::debug!(account = %e.account, client = %e.client, mechanism = %e.mechanism, expires_at = e.expires_at, "fast token issued");
    }
    fn rotated(&self, e: &TokenEvent) {
        tracing::debug!(account = %e.account, client = %e.client, mechanism = %e.mechanism, "fast token rotated");
    }
    fn promoted(&self, e: &TokenEvent) {
        tracing::debug!(account = %e.account, client = %e.client, "fast token promoted");
    }
    fn invalidated(&self, e: &TokenEvent) {
        tracing::debug!(account = %e.account, client = %e.client, "fast tokens invalidated by client");
    }
    fn revoked(&self, e: &RevokeEvent) {
        tracing::info!(scope = ?e.scope, before = e.before, "fast tokens revoked");
    }
    fn rejected(&self, e: &RejectEvent) {
        tracing::debug!(account = ?e.account, client = ?e.client, mechanism = %e.mechanism, reason = e.reason.as_str(), "fast attempt rejected");
    }
}

#[cfg(test)]
mod tests {
    use super::RejectReason;

    /// Counters index by `reason as usize`: `ALL` must list every reason at its own index.
    #[test]
    fn every_reject_reason_is_listed_at_its_index() {
        for (i, r) in RejectReason::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i, "{r:?}");
        }
        let names: std::collections::BTreeSet<_> =
            RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), RejectReason::ALL.len());
    }
}
