//! A SASL exchange through the stream's negotiator (which asks the login throttle before
//! every credential check), its audit line and metrics, and what a login changes: limits, the
//! pre-auth slot, Bind 2's resource, the post-login features or the RFC 6120 restart.

use jid::FullJid;
use minidom::Element;
use sasl2_fast::sasl2::bind2::BoundResource;
use sasl2_fast::sasl2::{AuthenticatedSession, NegotiatorEvent, SaslProfile};
use sasl2_fast::stream::Limits;
use tokio::sync::mpsc;
use tracing::info;
use xmpp_parsers::stream_error::DefinedCondition;

use super::{Authed, Bound, Conn, Flow};
use crate::router::QUEUE;

/// A `<user-agent>` label bounded as the token store bounds it (S-12: owner's eyes only).
fn label(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(|s| sasl2_fast::xmpp::truncate_utf8(s, sasl2_fast::store::MAX_LABEL_BYTES).to_owned())
}

impl Conn {
    pub(super) async fn on_sasl(&mut self, el: Element) -> Flow {
        if let Some(a) = crate::metrics::LoginAttempt::starts(&el) {
            self.attempt = Some(a);
        }
        let Some(neg) = self.negotiator.as_mut() else {
            return self.stream_error(DefinedCondition::NotAuthorized, None);
        };
        // Throttling happens inside: the negotiator asks the login throttle before every
        // password check (sasl2_fast::sasl2::throttle).
        let event = neg.handle(el).await;
        let failure = match &event {
            NegotiatorEvent::Failure { failure, .. }
            | NegotiatorEvent::StreamError {
                failure: Some(failure),
                ..
            } => Some(failure),
            _ => None,
        };
        if let Some(failure) = failure {
            let attempt = self.attempt.take();
            crate::audit::login_failed(
                &self.shared.pre_auth_log,
                &self.shared.metrics,
                self.peer.ip(),
                attempt.and_then(|a| a.mechanism()),
                failure,
            );
            crate::metrics::LoginAttempt::failed(attempt, &self.shared.metrics, failure.condition);
        }
        match event {
            NegotiatorEvent::Challenge(e)
            | NegotiatorEvent::Continue(e)
            | NegotiatorEvent::TaskData(e) => {
                // S-14: during authentication only the negotiator's elements go out, with
                // nothing (not even whitespace) between them.
                self.send(&e);
                Flow::Continue
            }
            NegotiatorEvent::Failure { element, .. } => {
                self.send(&element);
                Flow::Continue
            }
            NegotiatorEvent::StreamError { send, error, .. } => {
                if let Some(s) = send {
                    self.send(&s);
                }
                self.stream_error_of(error)
            }
            NegotiatorEvent::Success { element, session } => {
                // The element may carry a FAST token: written, never logged.
                self.send(&element);
                crate::metrics::LoginAttempt::succeeded(
                    self.attempt.take(),
                    &self.shared.metrics,
                    &session.mechanism,
                );
                self.on_authenticated(session);
                Flow::Continue
            }
            _ => self.stream_error(DefinedCondition::InternalServerError, None),
        }
    }

    pub(super) fn on_authenticated(&mut self, session: AuthenticatedSession) {
        info!(account = %session.username, mechanism = %session.mechanism, "authenticated");
        self.pre_auth = None;
        self.gauge
            .set_state(crate::metrics::ConnectionState::Authenticated);
        self.reader.set_limits(
            Limits::default().with_max_element_bytes(self.shared.server.max_stanza_bytes),
        );
        let ua = session
            .user_agent
            .as_ref()
            .and_then(|u| u.id.clone())
            .filter(|s| !s.is_empty());
        let restart = session.profile == SaslProfile::Rfc6120;
        self.authed = Some(Authed {
            account: session.username.clone(),
            bare: session.authorization_identifier.to_bare(),
            user_agent_id: ua,
            facts: crate::router::SessionFacts {
                software: session.user_agent.as_ref().and_then(|u| label(&u.software)),
                device: session.user_agent.as_ref().and_then(|u| label(&u.device)),
                // FAST logins use the HT family; everything else here takes a password.
                password: !session.mechanism.starts_with("HT-"),
            },
            restart_pending: restart,
        });
        if let Some(b) = session.extensions.get::<BoundResource>() {
            self.bind_resource(b.jid.clone());
        }
        if restart {
            // RFC 6120 §6.4.6: the client sends a new stream header over the same transport.
            self.reader.reset();
            self.header_sent = false;
            self.negotiator = None;
        } else if let Some(features) = sasl2_fast::sasl2::PostLoginFeatures::after_success(&session)
        {
            // S-20: no stream restart; post-authentication features right away, after
            // `<success>` (none after an XEP-0198 resumption, SM-3).
            self.out.push_str(features.xml());
        }
    }

    pub(super) fn bind_resource(&mut self, full_jid: FullJid) {
        let Some(a) = &self.authed else { return };
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.shared.router.register_session(
            &a.account,
            full_jid.resource().as_str(),
            a.user_agent_id.as_deref(),
            a.facts.clone(),
            tx,
        );
        self.routed = Some(rx);
        info!(jid = %full_jid, "resource bound");
        self.gauge.set_state(crate::metrics::ConnectionState::Bound);
        self.bound = Some(Bound { full_jid, id });
    }
}
