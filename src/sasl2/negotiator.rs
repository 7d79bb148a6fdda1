//! The SASL2 negotiator: a sans-IO state machine per stream.
//!
//! Elements in, elements out: the host hands every pre-authentication element in the
//! `urn:xmpp:sasl:2` namespace to [`Negotiator::handle`] and writes what comes back. The
//! negotiator never touches a socket; the only awaits are mechanism steps and inline features
//! (which may consult stores).
//!
//! ```text
//! features --> <authenticate> --+--> <challenge>/<response> ... --+--> <success> (Done)
//!                  ^             |                                |
//!                  +-- <failure> +<-------------------------------+   (retry on the same stream,
//!                                                                      until max_failures)
//! ```

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use tracing::{Instrument, debug, info_span};
use zeroize::Zeroizing;

use super::{
    AuthenticateRequest, Failure, InlineFeature, MAX_SASL_PAYLOAD, Mechanism, MechanismProvider,
    SaslCondition, SharedInlineFeature, SharedMechanismProvider, Step, StreamInfo, SuccessBuilder,
    SuccessContext, UserAgent,
};
use crate::xml::{Element, NS_SASL_CB, NS_SASL2, truncate_utf8};

/// Longest mechanism name accepted (XEP-0388 schema: 1..20 characters).
pub const MAX_MECHANISM_NAME: usize = 20;
/// Longest user-agent id accepted. Ids are hashed before use; the bound only stops abuse.
pub const MAX_USER_AGENT_ID: usize = 256;
/// Longest `<software>` / `<device>` kept (longer values are cut at a character boundary).
pub const MAX_USER_AGENT_LABEL: usize = 128;
/// Default number of failed attempts before the stream is closed (RFC 6120 §6.4.5: 2 to 5).
pub const DEFAULT_MAX_FAILURES: u32 = 3;

/// The mechanisms and inline features a host offers; shared by all its streams.
pub struct Sasl2Server {
    mechanisms: Vec<SharedMechanismProvider>,
    inline: Vec<SharedInlineFeature>,
    max_failures: u32,
}

impl fmt::Debug for Sasl2Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sasl2Server")
            .field(
                "mechanisms",
                &self.mechanisms.iter().map(|m| m.name()).collect::<Vec<_>>(),
            )
            .field("inline", &self.inline)
            .field("max_failures", &self.max_failures)
            .finish()
    }
}

/// Builds a [`Sasl2Server`].
#[derive(Default)]
pub struct Sasl2ServerBuilder {
    mechanisms: Vec<SharedMechanismProvider>,
    inline: Vec<SharedInlineFeature>,
    max_failures: Option<u32>,
}

impl Sasl2ServerBuilder {
    /// Adds a password (or other top-level) mechanism. Order of registration is the order of
    /// advertisement: register the strongest first.
    pub fn mechanism(mut self, m: Arc<dyn MechanismProvider>) -> Self {
        self.mechanisms.push(m);
        self
    }

    /// Adds an inline feature (FAST, Bind 2, ...).
    pub fn inline_feature(mut self, f: Arc<dyn InlineFeature>) -> Self {
        self.inline.push(f);
        self
    }

    /// Failed attempts allowed on one stream before it is closed (clamped to 1..=10).
    pub fn max_failures(mut self, n: u32) -> Self {
        self.max_failures = Some(n.clamp(1, 10));
        self
    }

    /// The server.
    pub fn build(self) -> Sasl2Server {
        let mut inline = self.inline;
        // Results go into <success> in a fixed order (resume, bind, token); sorting once here
        // keeps that independent of registration order.
        inline.sort_by_key(|f| f.order());
        Sasl2Server {
            mechanisms: self.mechanisms,
            inline,
            max_failures: self.max_failures.unwrap_or(DEFAULT_MAX_FAILURES),
        }
    }
}

impl Sasl2Server {
    /// Starts building a server.
    pub fn builder() -> Sasl2ServerBuilder {
        Sasl2ServerBuilder::default()
    }

    /// True if SASL2 may be offered on this stream at all (S-26: only after TLS, unless the host
    /// explicitly allows plaintext for loopback testing; S-5: only with a usable mechanism).
    pub fn offers_sasl2(&self, stream: &StreamInfo) -> bool {
        (stream.is_secure() || stream.allow_plaintext)
            && self.mechanisms.iter().any(|m| m.available(stream))
    }

    /// Names of the top-level mechanisms usable on this stream, in advertisement order.
    pub fn mechanism_names(&self, stream: &StreamInfo) -> Vec<&str> {
        self.mechanisms
            .iter()
            .filter(|m| m.available(stream))
            .map(|m| m.name())
            .collect()
    }

    /// The pre-authentication features SASL2 contributes: `<authentication>` (with `<inline>`)
    /// and the XEP-0440 `<sasl-channel-binding>` list. Empty when SASL2 is not offered.
    pub fn features(&self, stream: &StreamInfo) -> Vec<Element> {
        if !self.offers_sasl2(stream) {
            return Vec::new();
        }
        let mut auth = Element::new("authentication", NS_SASL2);
        let names = self.mechanism_names(stream);
        for name in &names {
            auth.push_child(Element::new("mechanism", NS_SASL2).with_text(*name));
        }
        let mut inline = Element::new("inline", NS_SASL2);
        let mut cb_used = Vec::new();
        for f in &self.inline {
            if let Some(el) = f.advertise(stream) {
                inline.push_child(el);
                cb_used.extend(f.channel_binding_types(stream));
            }
        }
        if !inline.is_empty() {
            auth.push_child(inline);
        }
        let mut out = vec![auth];

        // XEP-0440 (S-6, CB-6): list exactly the types this connection can bind to and that an
        // offered mechanism actually uses, so a client's downgrade check is meaningful.
        let plus_offered = names.iter().any(|n| n.ends_with("-PLUS"));
        let cb: Vec<_> = stream
            .channel_binding_types()
            .into_iter()
            .filter(|t| plus_offered || cb_used.contains(t))
            .collect();
        if !cb.is_empty() {
            let mut list = Element::new("sasl-channel-binding", NS_SASL_CB);
            for t in cb {
                list.push_child(
                    Element::new("channel-binding", NS_SASL_CB).with_attr("type", t.as_str()),
                );
            }
            out.push(list);
        }
        out
    }
}

/// What an authenticated stream knows about its client.
#[derive(Debug, Clone)]
pub struct AuthenticatedSession {
    /// The account localpart.
    pub username: String,
    /// What was sent in `<authorization-identifier>`: the bare JID, or the full JID when an
    /// inline feature (Bind 2) bound a resource.
    pub authorization_identifier: String,
    /// The mechanism that succeeded.
    pub mechanism: String,
    /// The client's user agent, if it sent one.
    pub user_agent: Option<UserAgent>,
}

/// What the host must do after [`Negotiator::handle`].
#[derive(Debug)]
pub enum NegotiatorEvent {
    /// Send a `<challenge>`; negotiation continues.
    Challenge(Element),
    /// Send this `<failure>`; the stream stays open and the client may retry (S-23).
    Failure {
        /// The `<failure>` element.
        element: Element,
        /// Its condition, for logs and metrics.
        condition: SaslCondition,
    },
    /// Send `<success>`, then the post-authentication `<stream:features>` (no restart, S-20).
    Success {
        /// The `<success>` element.
        element: Element,
        /// Who authenticated.
        session: AuthenticatedSession,
    },
    /// Send `send` if any, then close the stream with this RFC 6120 stream error.
    StreamError {
        /// An element to write before the error (e.g. the last `<failure>`).
        send: Option<Element>,
        /// Stream error condition (e.g. `policy-violation`).
        condition: &'static str,
        /// Human-readable text.
        text: String,
    },
}

enum State {
    /// Waiting for `<authenticate>`.
    Ready,
    /// A mechanism is mid-exchange.
    InProgress(Box<Attempt>),
    /// `<success>` was sent (S-25).
    Done,
}

struct Attempt {
    request: AuthenticateRequest,
    mechanism: Box<dyn Mechanism>,
    claimed_by: Option<usize>,
}

/// Per-stream SASL2 state.
pub struct Negotiator {
    server: Arc<Sasl2Server>,
    stream: StreamInfo,
    state: State,
    failures: u32,
}

impl fmt::Debug for Negotiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Ready => "ready",
            State::InProgress(_) => "in-progress",
            State::Done => "done",
        };
        f.debug_struct("Negotiator")
            .field("state", &state)
            .field("failures", &self.failures)
            .finish()
    }
}

impl Negotiator {
    /// A negotiator for one stream.
    pub fn new(server: Arc<Sasl2Server>, stream: StreamInfo) -> Self {
        Negotiator {
            server,
            stream,
            state: State::Ready,
            failures: 0,
        }
    }

    /// The stream this negotiator serves.
    pub fn stream(&self) -> &StreamInfo {
        &self.stream
    }

    /// The SASL2 part of the pre-authentication `<stream:features>`.
    pub fn features(&self) -> Vec<Element> {
        self.server.features(&self.stream)
    }

    /// True once `<success>` has been produced.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Failed attempts so far on this stream.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// True for elements the host must hand to [`Negotiator::handle`]: everything in the SASL2
    /// namespace (including a late `<authenticate>`, which S-25 turns into a stream error).
    pub fn handles(el: &Element) -> bool {
        el.ns() == NS_SASL2
    }

    /// Processes one element from the client.
    pub async fn handle(&mut self, el: Element) -> NegotiatorEvent {
        if el.ns() != NS_SASL2 {
            return stream_error("unsupported-stanza-type", "not a SASL2 element");
        }
        match (el.name(), &self.state) {
            (_, State::Done) => stream_error(
                "policy-violation",
                "authentication already completed on this stream",
            ),
            ("authenticate", State::Ready) => self.authenticate(&el).await,
            ("authenticate", State::InProgress(_)) => {
                // S-13: during an exchange only <response> and <abort> are allowed.
                stream_error(
                    "policy-violation",
                    "new <authenticate> during an authentication exchange",
                )
            }
            ("response", State::InProgress(_)) => {
                let data = match decode_payload(&el) {
                    Ok(d) => d,
                    Err(f) => {
                        self.state = State::Ready;
                        return self.fail(f);
                    }
                };
                self.step(Some(data)).await
            }
            ("response", State::Ready) => self.fail(Failure::with_text(
                SaslCondition::MalformedRequest,
                "no authentication in progress",
            )),
            ("abort", _) => {
                // S-30. An abort is the client's choice, not a failed guess: it does not count
                // towards the failure limit.
                self.state = State::Ready;
                let f = Failure::new(SaslCondition::Aborted);
                NegotiatorEvent::Failure {
                    element: f.to_element(),
                    condition: f.condition,
                }
            }
            _ => stream_error(
                "policy-violation",
                "unexpected SASL2 element during authentication",
            ),
        }
    }

    async fn authenticate(&mut self, el: &Element) -> NegotiatorEvent {
        if !self.stream.is_secure() && !self.stream.allow_plaintext {
            // S-26: SASL2 is only offered after TLS.
            return self.fail(Failure::with_text(
                SaslCondition::EncryptionRequired,
                "SASL2 requires TLS",
            ));
        }
        let request = match parse_authenticate(el) {
            Ok(r) => r,
            Err(f) => return self.fail(f),
        };
        let span = info_span!("sasl2_attempt", mechanism = %request.mechanism);

        // Inline features look first (FAST claims requests carrying <fast/>, §4 step 2).
        let mut claimed = None;
        for (i, feature) in self.server.inline.iter().enumerate() {
            match feature.claim(&self.stream, &request) {
                Ok(Some(mech)) => {
                    claimed = Some((i, mech));
                    break;
                }
                Ok(None) => {}
                Err(f) => return self.fail(f),
            }
        }
        let (claimed_by, mechanism) = match claimed {
            Some((i, m)) => (Some(i), m),
            None => {
                // S-9: only mechanisms offered in the top-level list. HT-* without <fast/> ends
                // here too (invalid-mechanism, as Prosody does).
                let provider = self
                    .server
                    .mechanisms
                    .iter()
                    .find(|m| m.name() == request.mechanism && m.available(&self.stream));
                match provider {
                    Some(p) => (None, p.start(&self.stream, &request)),
                    None => {
                        return self.fail(Failure::with_text(
                            SaslCondition::InvalidMechanism,
                            "mechanism not offered on this stream",
                        ));
                    }
                }
            }
        };
        debug!(parent: &span, claimed = claimed_by.is_some(), "authentication started");
        let initial = request.initial_response.clone();
        self.state = State::InProgress(Box::new(Attempt {
            request,
            mechanism,
            claimed_by,
        }));
        self.step(initial).instrument(span).await
    }

    async fn step(&mut self, input: Option<Zeroizing<Vec<u8>>>) -> NegotiatorEvent {
        let State::InProgress(attempt) = &mut self.state else {
            return self.fail(Failure::new(SaslCondition::MalformedRequest));
        };
        let step = attempt
            .mechanism
            .step(input.as_deref().map(|v| &v[..]))
            .await;
        match step {
            Step::Challenge(data) => NegotiatorEvent::Challenge(
                Element::new("challenge", NS_SASL2)
                    .with_text(base64::engine::general_purpose::STANDARD.encode(data)),
            ),
            Step::Failure(f) => {
                // S-22: nothing inline is processed; S-23: back to the start so the client can
                // retry on this stream, e.g. with a password after a failed FAST attempt.
                self.state = State::Ready;
                self.fail(f)
            }
            Step::Success(auth) => {
                let State::InProgress(attempt) = std::mem::replace(&mut self.state, State::Ready)
                else {
                    unreachable!("state checked above");
                };
                self.succeed(*attempt, auth).await
            }
        }
    }

    async fn succeed(&mut self, attempt: Attempt, auth: super::Authenticated) -> NegotiatorEvent {
        let Attempt {
            request,
            claimed_by,
            ..
        } = attempt;
        let mut success = SuccessBuilder {
            additional_data: auth.additional_data,
            authorization_identifier: format!("{}@{}", auth.username, self.stream.domain),
            results: Vec::new(),
        };
        // S-18, B-5, F-10: inline requests are processed only now, after the whole
        // authentication succeeded, in resume -> bind -> token order.
        for (i, feature) in self.server.inline.iter().enumerate() {
            let mine = claimed_by == Some(i);
            let ctx = SuccessContext {
                stream: &self.stream,
                request: &request,
                mechanism: &request.mechanism,
                username: &auth.username,
                claimed_by_me: mine,
                state: if mine { auth.state.as_deref() } else { None },
            };
            if let Err(e) = feature.on_success(&ctx, &mut success).await {
                tracing::warn!(error = %e, "inline feature failed after authentication");
                return NegotiatorEvent::StreamError {
                    send: Some(
                        Failure::with_text(
                            SaslCondition::TemporaryAuthFailure,
                            "server could not complete the login",
                        )
                        .to_element(),
                    ),
                    condition: "internal-server-error",
                    text: "login could not be completed".into(),
                };
            }
        }
        self.state = State::Done;
        let session = AuthenticatedSession {
            username: auth.username,
            authorization_identifier: success.authorization_identifier.clone(),
            mechanism: request.mechanism.clone(),
            user_agent: request.user_agent.clone(),
        };
        NegotiatorEvent::Success {
            element: success.to_element(),
            session,
        }
    }

    fn fail(&mut self, f: Failure) -> NegotiatorEvent {
        self.failures += 1;
        let element = f.to_element();
        if self.failures >= self.server.max_failures {
            // RFC 6120 §6.4.5: a bounded number of retries, then the stream is closed.
            return NegotiatorEvent::StreamError {
                send: Some(element),
                condition: "policy-violation",
                text: "too many failed authentication attempts".into(),
            };
        }
        NegotiatorEvent::Failure {
            element,
            condition: f.condition,
        }
    }
}

fn stream_error(condition: &'static str, text: &str) -> NegotiatorEvent {
    NegotiatorEvent::StreamError {
        send: None,
        condition,
        text: text.into(),
    }
}

/// Decodes the base64 text of `<initial-response>` / `<response>`. ASCII whitespace is
/// stripped first (S-8 says clients should not send it, but tolerating it costs nothing);
/// `=` alone and an empty element both mean an empty payload.
pub fn decode_payload(el: &Element) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let text = el.text();
    // Checked before decoding so a huge element costs no allocation beyond what the stream
    // reader already bounded.
    if text.len() > MAX_SASL_PAYLOAD * 4 / 3 + 8 {
        return Err(Failure::with_text(
            SaslCondition::MalformedRequest,
            "SASL payload too large",
        ));
    }
    let compact: Zeroizing<String> =
        Zeroizing::new(text.chars().filter(|c| !c.is_ascii_whitespace()).collect());
    if compact.is_empty() || compact.as_str() == "=" {
        return Ok(Zeroizing::new(Vec::new()));
    }
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| Failure::new(SaslCondition::IncorrectEncoding))
}

fn bounded_label(el: Option<&Element>) -> Option<String> {
    let text = el?.text();
    let s = truncate_utf8(text.trim(), MAX_USER_AGENT_LABEL);
    (!s.is_empty()).then(|| s.to_owned())
}

/// Parses `<authenticate>` leniently (protocol.md §4 step 1): `<user-agent>` may be absent
/// (S-11, §9 item 18), unknown children are kept for inline features.
pub fn parse_authenticate(el: &Element) -> Result<AuthenticateRequest, Failure> {
    let mechanism = el.attr("mechanism").unwrap_or("");
    if mechanism.is_empty() || mechanism.len() > MAX_MECHANISM_NAME {
        return Err(Failure::with_text(
            SaslCondition::MalformedRequest,
            "missing or invalid mechanism attribute",
        ));
    }
    let mut initial_response = None;
    let mut user_agent = None;
    let mut inline = Vec::new();
    for child in el.children() {
        if child.is("initial-response", NS_SASL2) {
            if initial_response.is_some() {
                return Err(Failure::with_text(
                    SaslCondition::MalformedRequest,
                    "more than one initial-response",
                ));
            }
            initial_response = Some(decode_payload(child)?);
        } else if child.is("user-agent", NS_SASL2) {
            let id = child.attr("id").map(str::trim).filter(|s| !s.is_empty());
            if id.is_some_and(|id| id.len() > MAX_USER_AGENT_ID) {
                return Err(Failure::with_text(
                    SaslCondition::MalformedRequest,
                    "user-agent id too long",
                ));
            }
            user_agent = Some(UserAgent {
                id: id.map(str::to_owned),
                software: bounded_label(child.get_child("software", NS_SASL2)),
                device: bounded_label(child.get_child("device", NS_SASL2)),
            });
        } else {
            inline.push(child.clone());
        }
    }
    Ok(AuthenticateRequest {
        mechanism: mechanism.to_owned(),
        initial_response,
        user_agent,
        inline,
    })
}
