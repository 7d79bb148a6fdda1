//! The FAST inline feature: `<fast>` advertisement, claiming `<authenticate>` requests that
//! carry `<fast/>`, the HT mechanism attempt, and `<token>` in `<success>`. Opening its store
//! and pepper from a config (`FastPlugin::open*`) is [`super::open`].

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use tracing::debug;

use super::ht::HtMechanism;
pub use super::standalone::failure_for;
use super::standalone::{
    ClientLabels, FastAttempt, FastLogin, FastOffer, FastRequest, issue_token,
};
use super::tokens::FastTokens;
use crate::sasl2::{
    Authenticated, ClaimContext, Failure, InlineError, InlineFeature, InlineOrder, Mechanism,
    Offer, SaslCondition, Step, StreamInfo, SuccessBuilder, SuccessContext,
};
use crate::xmpp::ns;

/// The FAST plugin: register it with [`crate::sasl2::Sasl2Server`] as an inline feature.
#[derive(Debug, Clone)]
pub struct FastPlugin {
    tokens: Arc<FastTokens>,
}

impl FastPlugin {
    /// A plugin over an existing token authority.
    pub fn new(tokens: Arc<FastTokens>) -> Self {
        FastPlugin { tokens }
    }

    /// The token authority (revocation, client lists, sweeping).
    pub fn tokens(&self) -> &Arc<FastTokens> {
        &self.tokens
    }

    /// The HT mechanisms offered on this stream, in configured order: each only where the
    /// connection can bind to it (protocol.md §7); none when FAST is off or the stream is not
    /// allowed SASL2 (F-32, H-2). The negotiator asks once per stream, through
    /// [`InlineFeature::offer`].
    pub fn offered(&self, stream: &StreamInfo) -> Vec<HtMechanism> {
        FastOffer::for_stream(self.tokens.config(), stream)
            .map(|o| o.mechanisms().to_vec())
            .unwrap_or_default()
    }
}

/// One HT authentication attempt inside the negotiator: the standalone pieces
/// ([`FastAttempt::verify`]) behind the [`Mechanism`] trait.
struct HtAttempt {
    tokens: Arc<FastTokens>,
    attempt: Option<FastAttempt>,
}

impl fmt::Debug for HtAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HtAttempt")
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// The state an HT attempt leaves for [`FastPlugin::on_success`]: the verified login, whose
/// state change is written there (taken out once, hence the mutex).
struct FastOutcome(Mutex<Option<FastLogin>>);

#[async_trait]
impl Mechanism for HtAttempt {
    async fn step(&mut self, input: Option<&[u8]>) -> Step {
        // F-3: one round trip; a second step is malformed.
        let Some(attempt) = self.attempt.take() else {
            return Step::Failure(Failure::new(SaslCondition::MalformedRequest));
        };
        match attempt.verify(&self.tokens, input).await {
            Ok(login) => {
                let responder = login.additional_data().to_vec();
                // F-28: no SASL2 tasks after a token login.
                Step::Success(
                    Authenticated::new(login.account().to_owned(), Some(responder))
                        .with_state(Box::new(FastOutcome(Mutex::new(Some(login)))))
                        .without_tasks(),
                )
            }
            Err(f) => Step::Failure(f),
        }
    }
}

#[async_trait]
impl InlineFeature for FastPlugin {
    fn name(&self) -> &'static str {
        "fast"
    }

    fn order(&self) -> InlineOrder {
        InlineOrder::TOKEN
    }

    fn offer(&self, stream: &StreamInfo) -> Option<Offer> {
        let offer = FastOffer::for_stream(self.tokens.config(), stream)?;
        Some(
            Offer::new(offer.element())
                .with_channel_bindings(offer.channel_binding_types())
                .with_state(Arc::new(offer)),
        )
    }

    fn claim(&self, ctx: &ClaimContext<'_>) -> Result<Option<Box<dyn Mechanism>>, Failure> {
        let Some(fast) = ctx.request.inline_child("fast", ns::FAST) else {
            return Ok(None);
        };
        let Some(offer) = ctx.offer.and_then(|o| o.state::<FastOffer>()) else {
            return Err(Failure::with_text(
                SaslCondition::MalformedRequest,
                "FAST is not available on this stream",
            ));
        };
        let request = FastRequest {
            mechanism: &ctx.request.mechanism,
            user_agent_id: ctx.request.user_agent_id(),
            fast,
        };
        let attempt = offer.claim(&request, ctx.stream)?;
        Ok(Some(Box::new(HtAttempt {
            tokens: Arc::clone(&self.tokens),
            attempt: Some(attempt),
        })))
    }

    async fn on_success(
        &self,
        ctx: &SuccessContext<'_>,
        success: &mut SuccessBuilder,
    ) -> Result<(), InlineError> {
        let login = if ctx.claimed_by_me {
            ctx.state
                .and_then(|s| s.downcast_ref::<FastOutcome>())
                .and_then(|o| o.0.lock().unwrap_or_else(PoisonError::into_inner).take())
        } else {
            None
        };
        let offer = ctx.offer.and_then(|o| o.state::<FastOffer>());
        let request = ctx.request.inline_child("request-token", ns::FAST);
        let requested = request.zip(offer).and_then(|(r, o)| o.requested(r));
        if request.is_some() && requested.is_none() {
            debug!("no FAST token: requested mechanism missing or not offered");
        }
        let ua = ctx.request.user_agent.as_ref();
        let labels = ClientLabels {
            software: ua.and_then(|u| u.software.clone()),
            device: ua.and_then(|u| u.device.clone()),
        };
        let token = match login {
            // A FAST login: its own state change and any token in one write.
            Some(login) => login
                .complete(&self.tokens, requested, &labels)
                .await
                .map_err(InlineError::Failure)?,
            None => {
                let Some(mechanism) = requested else {
                    return Ok(());
                };
                let Some(ua) = ctx.request.user_agent_id() else {
                    // Prosody issues nothing silently; we at least say why (§9 item 7).
                    debug!("no FAST token: the client sent no user-agent id");
                    return Ok(());
                };
                issue_token(&self.tokens, ctx.username, ua, mechanism, &labels)
                    .await
                    .map_err(|e| InlineError::internal("fast", e))?
            }
        };
        if let Some(token) = token {
            // F-11. The token is durable (issue/commit flushed) before this element exists.
            success.push(token);
        }
        Ok(())
    }
}
