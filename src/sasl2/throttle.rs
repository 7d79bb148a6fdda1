//! Password guessing, bounded where it happens: the negotiator asks a [`LoginThrottle`]
//! immediately before every credential check and tells it every verdict.
//!
//! Only the SASL layer knows, at every step, whose credential is about to be checked: the
//! identity is in PLAIN's one message, in SCRAM's first and checked against its last, with or
//! without an initial response, in SASL2 or RFC 6120 SASL. A mechanism that checks a
//! credential returns [`Step::Verify`](super::Step::Verify) with the identity as it normalized
//! it; the negotiator then asks the throttle, and runs the check
//! ([`Mechanism::verify`](super::Mechanism::verify)) only when the throttle admits it. A held
//! attempt gets `temporary-auth-failure` ("try again in N s") and the credential is never
//! looked at, so a held guess tells the guesser nothing.
//!
//! Token mechanisms (FAST's HT family) never return `Verify`: a 256-bit token is not guessed,
//! and an attack on a password must not lock out the account's token logins. Their successes
//! are reported with [`LoginThrottle::logged_in`], which tells the throttle the device is the
//! account owner's.
//!
//! [`BackoffThrottle`] is the policy every [`Sasl2Server`](super::Sasl2Server) gets unless the
//! host installs another one.

use std::any::Any;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;

use super::SaslProfile;

mod backoff;

pub use backoff::{
    BackoffThrottle, DEFAULT_FAILURES, DEFAULT_KNOWN_MEMORY, DEFAULT_MAX_BACKOFF, SourceKey,
};

/// One credential about to be checked (or one login without a checked credential, for
/// [`LoginThrottle::logged_in`]).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CredentialAttempt {
    /// The authentication identity as the mechanism normalized it (the account localpart).
    /// It need not name an existing account: the throttle must treat unknown names like known
    /// ones, or its answers would tell which names are accounts.
    pub identity: String,
    /// The mechanism name (`PLAIN`, `SCRAM-SHA-256-PLUS`, `HT-SHA-256-EXPR`, ...).
    pub mechanism: String,
    /// The SASL profile the attempt came in.
    pub profile: SaslProfile,
    /// The peer's address, when the host supplied it
    /// ([`StreamInfo::peer`](super::StreamInfo::peer)).
    pub source: Option<IpAddr>,
    /// The `<user-agent id>` of a SASL2 request, when the client sent one. Attacker-controlled:
    /// it proves nothing by itself; it names a device the account owner used before only if
    /// it was seen in a successful login.
    pub user_agent_id: Option<String>,
}

impl CredentialAttempt {
    /// An attempt for `identity` with `mechanism` in `profile`, of unknown source and agent.
    pub fn new(
        identity: impl Into<String>,
        mechanism: impl Into<String>,
        profile: SaslProfile,
    ) -> Self {
        CredentialAttempt {
            identity: identity.into(),
            mechanism: mechanism.into(),
            profile,
            source: None,
            user_agent_id: None,
        }
    }

    /// From `source`.
    pub fn with_source(mut self, source: IpAddr) -> Self {
        self.source = Some(source);
        self
    }

    /// From the device with this user-agent id.
    pub fn with_user_agent_id(mut self, id: impl Into<String>) -> Self {
        self.user_agent_id = Some(id.into());
        self
    }
}

impl fmt::Debug for CredentialAttempt {
    // The user-agent id is a long-lived device identifier: only its presence is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialAttempt")
            .field("identity", &self.identity)
            .field("mechanism", &self.mechanism)
            .field("profile", &self.profile)
            .field("source", &self.source)
            .field(
                "user_agent_id",
                &self.user_agent_id.as_ref().map(|_| "[present]"),
            )
            .finish()
    }
}

/// The throttle's private note about an admitted check (which reservation it holds), handed
/// back with the verdict in [`LoginThrottle::settle`].
pub struct Ticket(Box<dyn Any + Send + Sync>);

impl Ticket {
    /// A ticket carrying `note`.
    pub fn new(note: impl Any + Send + Sync) -> Self {
        Ticket(Box::new(note))
    }

    /// The note, if it is a `T`.
    pub fn note<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ticket")
    }
}

/// The throttle's answer before a credential check.
#[derive(Debug)]
pub enum Admission {
    /// Check the credential; the ticket comes back with the verdict.
    Admit(Ticket),
    /// Do not check it: answer `temporary-auth-failure`, "try again in" this long.
    Hold {
        /// When the client may usefully try again (at least one second is said).
        retry_after: Duration,
    },
}

/// What an admitted check came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The credential was right.
    Accepted,
    /// The credential was wrong (a guess that failed).
    Rejected,
    /// No verdict on the credential: the account backend failed, or the check was abandoned
    /// (the stream closed while it ran). Nothing was learned, so it is not a failed guess.
    Undecided,
}

/// A policy on password guessing, consulted by the negotiator immediately before every
/// credential check.
///
/// # Security contract
/// - [`admit`](Self::admit) is called before *every* credential check on every path (every
///   password mechanism, SASL2 and RFC 6120, with or without initial response, each
///   exchange), and [`settle`](Self::settle) exactly once for every ticket it handed out
///   (also when the check is abandoned: the negotiator settles on drop, as
///   [`Verdict::Undecided`]). Parallel and pipelined exchanges for one account arrive
///   concurrently: count admitted checks that have no verdict yet (reservations) against the
///   limit, or N connections that all pass the check before any fails get N guesses.
/// - Everything in a [`CredentialAttempt`] is attacker-controlled: bound the memory it makes
///   you keep (names, addresses and agent ids sprayed by the million), and answer unknown
///   identities exactly like known ones.
/// - A hold must not let strangers lock the account owner out: the owner's known devices
///   should be judged by their own failures only.
/// - Never log or keep a credential: the throttle sees none, and must not ask for one.
#[async_trait]
pub trait LoginThrottle: fmt::Debug + Send + Sync {
    /// Whether `attempt`'s credential may be checked now. May await (a lookup of known
    /// devices); it runs before the check, never while holding the credential in memory longer
    /// than a store lookup takes.
    async fn admit(&self, attempt: &CredentialAttempt) -> Admission;

    /// The verdict of a check [`admit`](Self::admit) let through, with its ticket.
    fn settle(&self, attempt: &CredentialAttempt, ticket: Ticket, verdict: Verdict);

    /// A login succeeded without a credential check this throttle admitted (a FAST token):
    /// the device and source are the account owner's. The default ignores it.
    fn logged_in(&self, attempt: &CredentialAttempt) {
        let _ = attempt;
    }
}

/// Devices that logged in to an account before, as a store that outlives the process knows
/// them (FAST's client records: a user-agent id that received a token).
///
/// # Security contract
/// Answer `true` only for a user-agent id that completed a successful login to `account`
/// (the id is attacker-controlled and proves nothing else). Called only while an account is
/// held back for unknown devices, so a lookup per call is affordable; must not block the
/// executor.
#[async_trait]
pub trait KnownDevices: fmt::Debug + Send + Sync {
    /// Whether the device with `user_agent_id` logged in to `account` before.
    async fn is_known(&self, account: &str, user_agent_id: &str) -> bool;
}

/// What a failure of a password check tells an audit log: whose credential it was and what
/// the throttle did. Set on [`Failure::check`](super::Failure::check) by the negotiator.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// The authentication identity (normalized).
    pub identity: String,
    /// Held back without a check, or the check's verdict.
    pub outcome: CheckOutcome,
}

/// See [`CheckReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Not checked: the throttle held it back for this long.
    Held(Duration),
    /// Checked, and wrong.
    Rejected,
    /// Checked without a verdict (backend failure).
    Undecided,
}

/// Whole seconds a held client is told to wait: rounded up ("try again in 0 s" would invite a
/// retry that is held again), at least one.
pub fn retry_after_secs(retry_after: Duration) -> u64 {
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    secs.max(1)
}

impl CheckReport {
    /// For a held attempt, the seconds its `<failure>` told the client to wait
    /// ([`retry_after_secs`]).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self.outcome {
            CheckOutcome::Held(d) => Some(retry_after_secs(d)),
            CheckOutcome::Rejected | CheckOutcome::Undecided => None,
        }
    }

    /// The reason word for logs and metrics: `held`, `rejected` or `undecided`.
    pub fn reason(&self) -> &'static str {
        match self.outcome {
            CheckOutcome::Held(_) => "held",
            CheckOutcome::Rejected => "rejected",
            CheckOutcome::Undecided => "undecided",
        }
    }
}
