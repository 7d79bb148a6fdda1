//! Server-side SASL mechanisms: one [`Mechanism`] object per attempt, created by a
//! [`MechanismProvider`] registered with the server.

use std::any::Any;
use std::fmt;

use async_trait::async_trait;

use super::{AuthenticateRequest, Failure, StreamInfo};

/// What a mechanism hands back on success.
#[non_exhaustive]
pub struct Authenticated {
    /// The authenticated account (normalized localpart).
    pub username: String,
    /// Mechanism-specific success data for `<additional-data>` (SCRAM `v=`, HT responder MAC).
    pub additional_data: Option<Vec<u8>>,
    /// Opaque state the claiming inline feature wants back in
    /// [`super::InlineFeature::on_success`] (e.g. which FAST token slot matched). Only the
    /// feature that created it can downcast it.
    pub state: Option<Box<dyn Any + Send + Sync>>,
    /// Whether SASL2 tasks (2FA, password change, ...) may follow this mechanism. False for
    /// token mechanisms: FAST must never require interactive steps (F-28); the token was
    /// only issued after every task of the password login had completed (F-10).
    pub tasks_allowed: bool,
}

impl Authenticated {
    /// A success for `username` with the mechanism's success data.
    pub fn new(username: impl Into<String>, additional_data: Option<Vec<u8>>) -> Self {
        Authenticated {
            username: username.into(),
            additional_data,
            state: None,
            tasks_allowed: true,
        }
    }

    /// With state for the claiming inline feature.
    pub fn with_state(mut self, state: Box<dyn Any + Send + Sync>) -> Self {
        self.state = Some(state);
        self
    }

    /// Forbids SASL2 tasks after this mechanism (token mechanisms, F-28).
    pub fn without_tasks(mut self) -> Self {
        self.tasks_allowed = false;
        self
    }
}

impl fmt::Debug for Authenticated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticated")
            .field("username", &self.username)
            .field(
                "additional_data",
                &self.additional_data.as_ref().map(Vec::len),
            )
            .field("tasks_allowed", &self.tasks_allowed)
            .finish_non_exhaustive()
    }
}

/// The result of one mechanism step.
#[derive(Debug)]
#[non_exhaustive]
pub enum Step {
    /// Send a `<challenge>` with these bytes and wait for a `<response>`.
    Challenge(Vec<u8>),
    /// The input carries a credential of this identity: the negotiator asks its
    /// [`super::LoginThrottle`], then calls [`Mechanism::verify`] to check it, or does not.
    Verify(CredentialCheck),
    /// Authentication succeeded.
    Success(Authenticated),
    /// Authentication failed; the stream stays open for a retry (S-23).
    Failure(Failure),
}

#[cfg(test)]
impl Step {
    /// The condition of a failure; any other step fails the test.
    pub(crate) fn failure_condition(self) -> super::SaslCondition {
        match self {
            Step::Failure(f) => f.condition,
            other => panic!("expected failure, got {other:?}"),
        }
    }

    /// The result of a success; any other step fails the test.
    pub(crate) fn authenticated(self) -> Authenticated {
        match self {
            Step::Success(a) => a,
            other => panic!("expected success, got {other:?}"),
        }
    }
}

/// A credential received and not yet checked: whose it is, as the mechanism normalized the
/// authentication identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialCheck {
    /// The normalized authentication identity (the account localpart).
    pub identity: String,
}

impl CredentialCheck {
    /// A pending check of `identity`'s credential.
    pub fn new(identity: impl Into<String>) -> Self {
        CredentialCheck {
            identity: identity.into(),
        }
    }
}

/// One server-side SASL authentication attempt.
///
/// # Security contract
/// - Every byte of `input` is attacker-controlled: never panic, never allocate without bound
///   (the negotiator already caps input at [`super::MAX_SASL_PAYLOAD`]).
/// - A mechanism that checks a guessable credential (a password) never checks it in
///   [`step`](Self::step): it returns [`Step::Verify`] with the identity and checks it in
///   [`verify`](Self::verify), which the negotiator calls only when its
///   [`super::LoginThrottle`] admits the check. That is what bounds guessing on every path.
///   Only token mechanisms, whose secrets are not guessable, decide in `step`.
/// - Compare secrets (proofs, MACs) in constant time (F-31, F-34).
/// - Never put a secret into a [`Failure`] text or a log line.
#[async_trait]
pub trait Mechanism: Send {
    /// Processes the client's next message: first the initial response (`None` if the client
    /// sent none), then each `<response>`.
    async fn step(&mut self, input: Option<&[u8]>) -> Step;

    /// Checks the credential announced by the last [`Step::Verify`]: [`Step::Success`] or
    /// [`Step::Failure`] (`not-authorized` for a wrong credential, `temporary-auth-failure`
    /// when the backend could not tell). Called at most once per `Verify`, or never when the
    /// attempt is held back. The default, for mechanisms that never return `Verify`, fails.
    async fn verify(&mut self) -> Step {
        Step::Failure(Failure::new(super::SaslCondition::MalformedRequest))
    }
}

/// Runs `input` through `mechanism` and, if it asks for a credential check, runs the check at
/// once: what a negotiator without a throttle would do. For tests, fuzzing and tools; a server
/// goes through [`super::Negotiator`], which asks its throttle first.
pub async fn step_unthrottled(mechanism: &mut (dyn Mechanism + '_), input: Option<&[u8]>) -> Step {
    match mechanism.step(input).await {
        Step::Verify(_) => mechanism.verify().await,
        other => other,
    }
}

/// Creates [`Mechanism`] attempts for one mechanism name, e.g. `SCRAM-SHA-256-PLUS`.
///
/// Providers registered with [`super::Sasl2Server`] appear in the top-level `<mechanism>`
/// list (and in the RFC 6120 `<mechanisms>` list when that profile is enabled). Mechanisms
/// that must only be reachable through an inline feature (such as FAST's HT family) are not
/// providers; the feature supplies them from [`super::InlineFeature::claim`].
pub trait MechanismProvider: fmt::Debug + Send + Sync {
    /// The SASL mechanism name.
    fn name(&self) -> &str;

    /// Whether the mechanism can run on this stream (e.g. `-PLUS` needs channel binding,
    /// PLAIN needs TLS). Depends only on the stream's facts (domain, TLS version, which
    /// channel-binding types exist, whether plaintext is allowed): called once per distinct
    /// facts and reused, as [`super::InlineFeature::offer`] is.
    fn available(&self, stream: &StreamInfo) -> bool;

    /// Starts one attempt.
    fn start(&self, stream: &StreamInfo, request: &AuthenticateRequest) -> Box<dyn Mechanism>;
}
