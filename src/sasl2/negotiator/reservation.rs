//! The throttle's reservation of one credential check, held by the negotiator while the
//! check runs.

use std::sync::Arc;

use crate::sasl2::throttle::{CredentialAttempt, LoginThrottle, Ticket, Verdict};
use crate::sasl2::{AuthenticateRequest, StreamInfo};

/// An admitted credential check: settled with its verdict, or, when the stream goes away
/// while the check runs (the negotiator's future is dropped), as undecided, so the throttle's
/// reservation is always released.
pub(super) struct Reservation {
    pub(super) throttle: Arc<dyn LoginThrottle>,
    pub(super) attempt: CredentialAttempt,
    pub(super) ticket: Option<Ticket>,
}

impl Reservation {
    pub(super) fn settle(mut self, verdict: Verdict) {
        if let Some(ticket) = self.ticket.take() {
            self.throttle.settle(&self.attempt, ticket, verdict);
        }
    }
}

/// Who is attempting a login on `stream` with `request`, for the throttle.
pub(super) fn credential_attempt(
    stream: &StreamInfo,
    request: &AuthenticateRequest,
    identity: &str,
) -> CredentialAttempt {
    let mut who = CredentialAttempt::new(identity, &request.mechanism, request.profile);
    who.source = stream.peer.map(|p| p.ip());
    who.user_agent_id = request
        .user_agent
        .as_ref()
        .and_then(|u| u.id.clone())
        .filter(|id| !id.is_empty());
    who
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.throttle
                .settle(&self.attempt, ticket, Verdict::Undecided);
        }
    }
}
