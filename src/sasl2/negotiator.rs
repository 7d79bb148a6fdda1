//! The SASL2 negotiator: a sans-IO state machine per stream, which also speaks RFC 6120 SASL
//! when the server enables it.
//!
//! Elements in, elements out: the host hands every pre-authentication element in the
//! `urn:xmpp:sasl:2` namespace (and `urn:ietf:params:xml:ns:xmpp-sasl` for RFC 6120) to
//! [`Negotiator::handle`] and writes what comes back. The negotiator never touches a socket;
//! the only awaits are mechanism and task steps and inline features (which may consult
//! stores).
//!
//! ```text
//! features --> <authenticate> --+--> <challenge>/<response> ... --+--> [<continue> tasks] --> <success> (Done)
//!                  ^             |                                |
//!                  +-- <failure> +<-------------------------------+   (retry on the same stream,
//!                                                                      until max_failures)
//! ```

use std::fmt;
use std::sync::Arc;

use jid::{BareJid, Jid};
use minidom::Element;
use tracing::{Instrument, debug, info_span};
use xmpp_parsers::stream_error::{DefinedCondition as StreamCondition, StreamError};
use zeroize::Zeroizing;

use super::inline::success_element;
use super::offers::Advertised;
use super::request::{decode_payload, parse_authenticate, parse_rfc6120_auth};
use super::task::{MAX_TASK_NAME, TaskContext, TaskInput, TaskSession, TaskStep};
use super::throttle::{Admission, CheckOutcome, CheckReport, Verdict, retry_after_secs};
use super::{
    AuthenticateRequest, Authenticated, ClaimContext, CredentialCheck, Extensions, Failure,
    InlineError, Mechanism, SaslCondition, SaslProfile, Step, StreamInfo, SuccessBuilder,
    SuccessContext, UserAgent,
};
use crate::xmpp::{Redacted, RedactedList, ns};
use reservation::{Reservation, credential_attempt};

mod reservation;

pub use super::server::{DEFAULT_MAX_FAILURES, Sasl2Server, Sasl2ServerBuilder};

/// What an authenticated stream knows about its client.
#[derive(Debug)]
#[non_exhaustive]
pub struct AuthenticatedSession {
    /// The account localpart.
    pub username: String,
    /// What was sent in `<authorization-identifier>`: the bare JID, or the full JID when an
    /// inline feature (Bind 2) bound a resource.
    pub authorization_identifier: Jid,
    /// The mechanism that succeeded.
    pub mechanism: String,
    /// The client's user agent, if it sent one.
    pub user_agent: Option<UserAgent>,
    /// Typed results of the inline features (e.g. [`super::bind2::BoundResource`]).
    pub extensions: Extensions,
    /// The profile: after RFC 6120 SASL the host restarts the stream (RFC 6120 §6.4.6).
    pub profile: SaslProfile,
}

/// What the host must do after [`Negotiator::handle`].
#[non_exhaustive]
pub enum NegotiatorEvent {
    /// Send this `<challenge>`; negotiation continues.
    Challenge(Element),
    /// Send this `<continue>` (SASL2 tasks); negotiation continues.
    Continue(Element),
    /// Send this `<task-data>`; negotiation continues.
    TaskData(Element),
    /// Send this `<failure>`; the stream stays open and the client may retry (S-23).
    Failure {
        /// The `<failure>` element.
        element: Element,
        /// Why, for logs and metrics.
        failure: Failure,
    },
    /// Send `<success>`, then (SASL2) the post-authentication `<stream:features>` with no
    /// restart (S-20), or (RFC 6120) wait for the client's new stream header. After an inline
    /// XEP-0198 resumption ([`super::SessionResumed`] in the session's extensions) no features
    /// follow (SM-3).
    Success {
        /// The `<success>` element. It may carry a FAST token: write it, never log it.
        element: Element,
        /// Who authenticated.
        session: AuthenticatedSession,
    },
    /// Send `send` if any, then close the stream with this RFC 6120 stream error.
    StreamError {
        /// An element to write before the error (e.g. the last `<failure>`).
        send: Option<Element>,
        /// The failure `send` carries, if it is one (for logs and metrics).
        failure: Option<Failure>,
        /// The stream error.
        error: StreamError,
    },
}

impl fmt::Debug for NegotiatorEvent {
    // Elements may carry tokens and proofs: every one is redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NegotiatorEvent::Challenge(e) => {
                f.debug_tuple("Challenge").field(&Redacted(e)).finish()
            }
            NegotiatorEvent::Continue(e) => f.debug_tuple("Continue").field(&Redacted(e)).finish(),
            NegotiatorEvent::TaskData(e) => f.debug_tuple("TaskData").field(&Redacted(e)).finish(),
            NegotiatorEvent::Failure { element, failure } => f
                .debug_struct("Failure")
                .field("element", &Redacted(element))
                .field("failure", failure)
                .finish(),
            NegotiatorEvent::Success { element, session } => f
                .debug_struct("Success")
                .field("element", &Redacted(element))
                .field("session", session)
                .finish(),
            NegotiatorEvent::StreamError {
                send,
                failure,
                error,
            } => f
                .debug_struct("StreamError")
                .field("send", &RedactedList(send.as_slice()))
                .field("failure", failure)
                .field("error", &error.to_string())
                .finish(),
        }
    }
}

impl NegotiatorEvent {
    /// The condition of a failure event, or of the failure sent before a stream error.
    pub fn failure_condition(&self) -> Option<SaslCondition> {
        match self {
            NegotiatorEvent::Failure { failure, .. } => Some(failure.condition),
            NegotiatorEvent::StreamError { failure, .. } => failure.as_ref().map(|f| f.condition),
            _ => None,
        }
    }
}

enum State {
    /// Waiting for `<authenticate>` (or `<auth>`).
    Ready,
    /// A mechanism is mid-exchange.
    InProgress(Box<Attempt>),
    /// `<continue>` was sent: tasks run (S-25: no new `<authenticate>` from here on).
    Tasks(Box<TaskPhase>),
    /// `<success>` was sent (S-25).
    Done,
    /// The attempt failed after `<continue>`: the stream is being closed (S-25).
    Closed,
}

/// The shape of [`State`], copied out before awaiting.
#[derive(Clone, Copy)]
enum Phase {
    Ready,
    InProgress,
    Tasks { running: bool },
    Done,
}

struct Attempt {
    request: AuthenticateRequest,
    mechanism: Box<dyn Mechanism>,
    claimed_by: Option<usize>,
}

struct TaskPhase {
    request: AuthenticateRequest,
    claimed_by: Option<usize>,
    auth: Authenticated,
    /// Tasks offered in the last `<continue>` (indices into the server's tasks).
    offered: Vec<usize>,
    running: Option<(usize, Box<dyn TaskSession>)>,
    completed: Vec<String>,
}

impl TaskPhase {
    /// What a task is told about this attempt on `stream`.
    fn task_context<'a>(&'a self, stream: &'a StreamInfo) -> TaskContext<'a> {
        TaskContext {
            stream,
            request: &self.request,
            username: &self.auth.username,
            mechanism: &self.request.mechanism,
            completed: &self.completed,
        }
    }
}

/// Per-stream SASL state.
pub struct Negotiator {
    server: Arc<Sasl2Server>,
    stream: StreamInfo,
    advertised: Arc<Advertised>,
    state: State,
    failures: u32,
}

impl fmt::Debug for Negotiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Ready => "ready",
            State::InProgress(_) => "in-progress",
            State::Tasks(_) => "tasks",
            State::Done => "done",
            State::Closed => "closed",
        };
        f.debug_struct("Negotiator")
            .field("state", &state)
            .field("failures", &self.failures)
            .finish()
    }
}

fn stream_error(condition: StreamCondition, text: &str) -> NegotiatorEvent {
    NegotiatorEvent::StreamError {
        send: None,
        failure: None,
        error: StreamError::new(condition, "en", text),
    }
}

impl Negotiator {
    /// A negotiator for one stream. Asks every mechanism and inline feature once what this
    /// stream offers.
    pub fn new(server: Arc<Sasl2Server>, stream: StreamInfo) -> Self {
        let advertised = server.advertised(&stream);
        Negotiator {
            server,
            stream,
            advertised,
            state: State::Ready,
            failures: 0,
        }
    }

    /// The stream this negotiator serves.
    pub fn stream(&self) -> &StreamInfo {
        &self.stream
    }

    /// Marks the elements handed to [`Negotiator::handle`] from now on as TLS 1.3 early data
    /// (`true`) or not: the host sets it while it feeds early data and clears it after
    /// ([`StreamInfo::early_data`]).
    pub fn set_early_data(&mut self, early: bool) {
        self.stream.early_data = early;
    }

    /// The SASL part of the pre-authentication `<stream:features>`: SASL2 `<authentication>`
    /// (with `<inline>`), the RFC 6120 `<mechanisms>` when enabled, and the XEP-0440
    /// `<sasl-channel-binding>` list. Empty when authentication is not offered.
    pub fn features(&self) -> Vec<Element> {
        self.advertised.features.clone()
    }

    /// [`Negotiator::features`] serialized as children of `<stream:features>` (each declares
    /// its namespace), ready for the host to write between its own features: computed once per
    /// distinct stream facts, so the host neither builds nor writes them per stream.
    pub fn features_xml(&self) -> &str {
        &self.advertised.xml
    }

    /// True once `<success>` has been produced.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// True for elements the host must hand to [`Negotiator::handle`]: everything in the SASL2
    /// namespace (including a late `<authenticate>`, which S-25 turns into a stream error),
    /// and in the RFC 6120 SASL namespace when that profile is enabled.
    pub fn handles(&self, el: &Element) -> bool {
        // `has_ns`, not `ns()`: the latter allocates a String per call.
        el.has_ns(ns::SASL2) || (self.server.rfc6120 && el.has_ns(ns::SASL))
    }

    /// Processes one element from the client.
    pub async fn handle(&mut self, el: Element) -> NegotiatorEvent {
        if !self.handles(&el) {
            return stream_error(StreamCondition::UnsupportedStanzaType, "not a SASL element");
        }
        if matches!(self.state, State::Done | State::Closed) {
            return stream_error(
                StreamCondition::PolicyViolation,
                "authentication already completed on this stream",
            );
        }
        let profile = if el.has_ns(ns::SASL2) {
            SaslProfile::Sasl2
        } else {
            SaslProfile::Rfc6120
        };
        if let State::InProgress(a) = &self.state
            && a.request.profile != profile
        {
            return stream_error(
                StreamCondition::PolicyViolation,
                "SASL profiles mixed in one exchange",
            );
        }
        // A plain copy of the state's shape: no borrow of the state may live across the awaits
        // below (mechanisms and tasks are `Send`, not `Sync`).
        let phase = match &self.state {
            State::Ready => Phase::Ready,
            State::InProgress(_) => Phase::InProgress,
            State::Tasks(t) => Phase::Tasks {
                running: t.running.is_some(),
            },
            State::Done | State::Closed => Phase::Done,
        };
        match (profile, el.name()) {
            // The request is handed over whole: parsing moves its children, copies nothing.
            (SaslProfile::Sasl2, "authenticate") | (SaslProfile::Rfc6120, "auth")
                if matches!(phase, Phase::Ready) =>
            {
                self.authenticate(el, profile).await
            }
            // S-13: during an exchange only <response> and <abort> are allowed; S-25: after
            // <continue> no new authentication.
            (SaslProfile::Sasl2, "authenticate") | (SaslProfile::Rfc6120, "auth") => stream_error(
                StreamCondition::PolicyViolation,
                "new authentication during an authentication exchange",
            ),
            (_, "response") => match phase {
                Phase::InProgress => match decode_payload(&el) {
                    Ok(d) => self.step(Some(d)).await,
                    Err(f) => {
                        self.state = State::Ready;
                        self.fail(f, profile)
                    }
                },
                Phase::Tasks { running: true } if profile == SaslProfile::Sasl2 => {
                    match decode_payload(&el) {
                        Ok(d) => self.task_step(Some(d), &[]).await,
                        Err(f) => self.fail_tasks(f),
                    }
                }
                Phase::Tasks { .. } => stream_error(
                    StreamCondition::PolicyViolation,
                    "<response> without a running task",
                ),
                _ => self.fail(
                    Failure::with_text(
                        SaslCondition::MalformedRequest,
                        "no authentication in progress",
                    ),
                    profile,
                ),
            },
            (SaslProfile::Sasl2, "next") => self.next_task(&el).await,
            (SaslProfile::Sasl2, "task-data") => match phase {
                Phase::Tasks { running: true } => {
                    let payloads: Vec<Element> = el.children().cloned().collect();
                    self.task_step(None, &payloads).await
                }
                _ => stream_error(
                    StreamCondition::PolicyViolation,
                    "<task-data> without a running task",
                ),
            },
            (_, "abort") => {
                // S-30. An abort counts as a failed attempt: it costs the server a response
                // and a log line, and an attacker must not get unlimited ones per stream.
                let after_continue = matches!(phase, Phase::Tasks { .. });
                self.state = State::Ready;
                let f = Failure::new(SaslCondition::Aborted);
                if after_continue {
                    return self.fail_tasks(f);
                }
                self.fail(f, profile)
            }
            _ => stream_error(
                StreamCondition::PolicyViolation,
                "unexpected SASL element during authentication",
            ),
        }
    }

    async fn authenticate(&mut self, el: Element, profile: SaslProfile) -> NegotiatorEvent {
        if !self.stream.may_authenticate() {
            // S-26: SASL is only offered after TLS.
            return self.fail(
                Failure::with_text(SaslCondition::EncryptionRequired, "SASL requires TLS"),
                profile,
            );
        }
        let parsed = match profile {
            SaslProfile::Sasl2 => parse_authenticate(el),
            SaslProfile::Rfc6120 => parse_rfc6120_auth(&el),
        };
        let request = match parsed {
            Ok(r) => r,
            Err(f) => return self.fail(f, profile),
        };
        let span = info_span!("sasl_attempt", mechanism = %request.mechanism);

        // Inline features look first (FAST claims requests carrying <fast/>, §4 step 2). RFC
        // 6120 has no inline features.
        let mut claimed = None;
        if profile == SaslProfile::Sasl2 {
            for (i, feature) in self.server.inline.iter().enumerate() {
                let ctx = ClaimContext {
                    stream: &self.stream,
                    request: &request,
                    offer: self.advertised.offers.inline[i].as_ref(),
                };
                match feature.claim(&ctx) {
                    Ok(Some(mech)) => {
                        claimed = Some((i, mech));
                        break;
                    }
                    Ok(None) => {}
                    Err(f) => return self.fail(f, profile),
                }
            }
        }
        let (claimed_by, mechanism) = match claimed {
            Some((i, m)) => (Some(i), m),
            None if self.stream.early_data => {
                // S-27, Z-1: a request in TLS 0-RTT is replayable; only an inline feature that
                // defines a mitigation (FAST's count) may take one. Password mechanisms never,
                // so the inline requests (bind, resumption) of an unclaimed one are never
                // processed either (B-12, SM-5).
                return self.fail(
                    Failure::with_text(
                        SaslCondition::MalformedRequest,
                        "only FAST is accepted in TLS early data",
                    ),
                    profile,
                );
            }
            None => {
                // S-9: only mechanisms offered in the top-level list. HT-* without <fast/> ends
                // here too (invalid-mechanism, as Prosody does).
                let provider = self
                    .advertised
                    .offers
                    .mechanisms
                    .iter()
                    .map(|&i| &self.server.mechanisms[i])
                    .find(|m| m.name() == request.mechanism);
                match provider {
                    Some(p) => (None, p.start(&self.stream, &request)),
                    None => {
                        return self.fail(
                            Failure::with_text(
                                SaslCondition::InvalidMechanism,
                                "mechanism not offered on this stream",
                            ),
                            profile,
                        );
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
            return self.fail(
                Failure::new(SaslCondition::MalformedRequest),
                SaslProfile::Sasl2,
            );
        };
        let profile = attempt.request.profile;
        let step = attempt
            .mechanism
            .step(input.as_deref().map(|v| &v[..]))
            .await;
        let step = match step {
            Step::Verify(check) => match self.check(check).await {
                Ok(step) => step,
                Err(held) => return held,
            },
            other => other,
        };
        match step {
            Step::Challenge(data) => NegotiatorEvent::Challenge(match profile {
                SaslProfile::Sasl2 => {
                    Element::from(xmpp_parsers::sasl2::Challenge { sasl_data: data })
                }
                SaslProfile::Rfc6120 => Element::from(xmpp_parsers::sasl::Challenge { data }),
            }),
            Step::Failure(f) => {
                // S-22: nothing inline is processed; S-23: back to the start so the client can
                // retry on this stream, e.g. with a password after a failed FAST attempt.
                self.state = State::Ready;
                self.fail(f, profile)
            }
            Step::Verify(_) => {
                // A mechanism's verify() asked for another check: a bug in it, never a
                // second unthrottled check.
                self.state = State::Ready;
                self.fail(Failure::new(SaslCondition::TemporaryAuthFailure), profile)
            }
            Step::Success(auth) => {
                let State::InProgress(attempt) = std::mem::replace(&mut self.state, State::Ready)
                else {
                    unreachable!("state checked above");
                };
                let Attempt {
                    request,
                    claimed_by,
                    ..
                } = *attempt;
                let phase = TaskPhase {
                    request,
                    claimed_by,
                    auth,
                    offered: Vec::new(),
                    running: None,
                    completed: Vec::new(),
                };
                self.after_step(phase).await
            }
        }
    }

    /// A credential is about to be checked: the throttle admits the check (then it runs, and
    /// the throttle hears the verdict) or holds it (then the credential is never looked at).
    /// `Err` is the event for a held attempt.
    async fn check(&mut self, check: CredentialCheck) -> Result<Step, NegotiatorEvent> {
        let State::InProgress(attempt) = &self.state else {
            unreachable!("checks happen during an exchange");
        };
        let profile = attempt.request.profile;
        let who = credential_attempt(&self.stream, &attempt.request, &check.identity);
        let throttle = self.server.throttle.clone();
        let ticket = match throttle.admit(&who).await {
            Admission::Admit(ticket) => ticket,
            Admission::Hold { retry_after } => {
                let mut f = Failure::with_text(
                    SaslCondition::TemporaryAuthFailure,
                    format!(
                        "too many failed logins; try again in {} s",
                        retry_after_secs(retry_after)
                    ),
                );
                f.check = Some(CheckReport {
                    identity: check.identity,
                    outcome: CheckOutcome::Held(retry_after),
                });
                self.state = State::Ready;
                return Err(self.fail(f, profile));
            }
        };
        let reservation = Reservation {
            throttle,
            attempt: who,
            ticket: Some(ticket),
        };
        let State::InProgress(attempt) = &mut self.state else {
            unreachable!("the state does not change while the throttle decides");
        };
        let mut step = attempt.mechanism.verify().await;
        let (verdict, outcome) = match &step {
            Step::Success(_) => (Verdict::Accepted, None),
            Step::Failure(f) if f.condition == SaslCondition::TemporaryAuthFailure => {
                (Verdict::Undecided, Some(CheckOutcome::Undecided))
            }
            _ => (Verdict::Rejected, Some(CheckOutcome::Rejected)),
        };
        reservation.settle(verdict);
        if let (Step::Failure(f), Some(outcome)) = (&mut step, outcome) {
            f.check = Some(CheckReport {
                identity: check.identity,
                outcome,
            });
        }
        Ok(step)
    }

    /// After the mechanism or a task completed: another `<continue>` if a task is still
    /// required, else the inline features and `<success>`.
    async fn after_step(&mut self, mut phase: TaskPhase) -> NegotiatorEvent {
        if phase.request.profile == SaslProfile::Sasl2 && phase.auth.tasks_allowed {
            let mut required = Vec::new();
            for (i, task) in self.server.tasks.iter().enumerate() {
                let ctx = phase.task_context(&self.stream);
                if task.name().len() <= MAX_TASK_NAME && task.required(&ctx).await {
                    required.push(i);
                }
            }
            if !required.is_empty() {
                let cont = xmpp_parsers::sasl2::Continue {
                    additional_data: phase.auth.additional_data.take().unwrap_or_default(),
                    tasks: required
                        .iter()
                        .map(|&i| self.server.tasks[i].name().to_owned())
                        .collect(),
                    text: None,
                };
                let had_data = !cont.additional_data.is_empty();
                let mut el = Element::from(cont);
                if !had_data {
                    el.remove_child("additional-data", ns::SASL2);
                }
                phase.offered = required;
                phase.running = None;
                self.state = State::Tasks(Box::new(phase));
                return NegotiatorEvent::Continue(el);
            }
        }
        self.succeed(phase).await
    }

    async fn next_task(&mut self, el: &Element) -> NegotiatorEvent {
        let State::Tasks(phase) = &mut self.state else {
            return stream_error(
                StreamCondition::PolicyViolation,
                "<next> without a <continue>",
            );
        };
        if phase.running.is_some() {
            return stream_error(StreamCondition::PolicyViolation, "<next> during a task");
        }
        let name = el.attr("task").unwrap_or("");
        let Some(&index) = phase
            .offered
            .iter()
            .find(|&&i| self.server.tasks[i].name() == name)
        else {
            return self.fail_tasks(Failure::with_text(
                SaslCondition::InvalidMechanism,
                "task not offered",
            ));
        };
        let mut initial = None;
        let mut payloads = Vec::new();
        for child in el.children() {
            if child.is("initial-response", ns::SASL2) {
                match decode_payload(child) {
                    Ok(d) => initial = Some(d),
                    Err(f) => return self.fail_tasks(f),
                }
            } else {
                payloads.push(child.clone());
            }
        }
        let session = {
            let ctx = phase.task_context(&self.stream);
            self.server.tasks[index].start(&ctx)
        };
        phase.running = Some((index, session));
        self.task_step(initial, &payloads).await
    }

    async fn task_step(
        &mut self,
        data: Option<Zeroizing<Vec<u8>>>,
        payloads: &[Element],
    ) -> NegotiatorEvent {
        let State::Tasks(phase) = &mut self.state else {
            return stream_error(StreamCondition::PolicyViolation, "no task in progress");
        };
        let Some((index, session)) = phase.running.as_mut() else {
            return stream_error(StreamCondition::PolicyViolation, "no task in progress");
        };
        let index = *index;
        let step = session
            .step(TaskInput {
                data: data.as_deref().map(|d| &d[..]),
                payloads,
            })
            .await;
        match step {
            TaskStep::Challenge(d) => {
                NegotiatorEvent::Challenge(Element::from(xmpp_parsers::sasl2::Challenge {
                    sasl_data: d,
                }))
            }
            TaskStep::Data(payloads) => {
                NegotiatorEvent::TaskData(Element::from(xmpp_parsers::sasl2::TaskData { payloads }))
            }
            TaskStep::Failure(f) => self.fail_tasks(f),
            TaskStep::Done { additional_data } => {
                let State::Tasks(phase) = std::mem::replace(&mut self.state, State::Ready) else {
                    unreachable!("state checked above");
                };
                let mut phase = *phase;
                phase.running = None;
                phase
                    .completed
                    .push(self.server.tasks[index].name().to_owned());
                phase.auth.additional_data = additional_data;
                self.after_step(phase).await
            }
        }
    }

    async fn succeed(&mut self, phase: TaskPhase) -> NegotiatorEvent {
        let TaskPhase {
            request,
            claimed_by,
            auth,
            completed,
            ..
        } = phase;
        let profile = request.profile;
        let bare = match BareJid::new(&format!("{}@{}", auth.username, self.stream.domain)) {
            Ok(j) => j,
            Err(_) => {
                // Normalized usernames and a host-checked domain always form a JID; if they do
                // not, fail closed rather than send an identifier the client cannot parse.
                return self.fail_after(
                    Failure::new(SaslCondition::TemporaryAuthFailure),
                    profile,
                    !completed.is_empty(),
                );
            }
        };
        let mut success = SuccessBuilder::new(Jid::from(bare), auth.additional_data);
        if profile == SaslProfile::Sasl2 {
            // S-18, B-5, F-10: inline requests are processed only now, after the whole
            // authentication (tasks included) succeeded, in InlineOrder.
            for (i, feature) in self.server.inline.iter().enumerate() {
                let mine = claimed_by == Some(i);
                let ctx = SuccessContext {
                    stream: &self.stream,
                    request: &request,
                    mechanism: &request.mechanism,
                    username: &auth.username,
                    claimed_by_me: mine,
                    state: if mine { auth.state.as_deref() } else { None },
                    offer: self.advertised.offers.inline[i].as_ref(),
                    tasks_completed: &completed,
                };
                if let Err(e) = feature.on_success(&ctx, &mut success).await {
                    let failure = match e {
                        InlineError::Failure(f) => f,
                        InlineError::Internal { feature, source } => {
                            tracing::warn!(feature, error = %source, "inline feature failed after authentication");
                            Failure::with_text(
                                SaslCondition::TemporaryAuthFailure,
                                "server could not complete the login",
                            )
                        }
                    };
                    return self.fail_after(failure, profile, !completed.is_empty());
                }
            }
        }
        self.state = State::Done;
        if claimed_by.is_some() {
            // A token login (FAST): the throttle learns the device is the owner's.
            let who = credential_attempt(&self.stream, &request, &auth.username);
            self.server.throttle.logged_in(&who);
        }
        let SuccessBuilder {
            additional_data,
            authorization_identifier,
            results,
            extensions,
        } = success;
        let element = match profile {
            SaslProfile::Sasl2 => success_element(
                additional_data.as_deref(),
                &authorization_identifier,
                results,
            ),
            SaslProfile::Rfc6120 => Element::from(xmpp_parsers::sasl::Success {
                data: additional_data.unwrap_or_default(),
            }),
        };
        let session = AuthenticatedSession {
            username: auth.username,
            authorization_identifier,
            mechanism: request.mechanism,
            user_agent: request.user_agent,
            extensions,
            profile,
        };
        NegotiatorEvent::Success { element, session }
    }

    fn failure_element(f: &Failure, profile: SaslProfile) -> Element {
        match profile {
            SaslProfile::Sasl2 => f.to_sasl2(),
            SaslProfile::Rfc6120 => Element::from(f.to_rfc6120()),
        }
    }

    /// A failure after the mechanism succeeded: a retry is possible unless `<continue>` was
    /// already sent (S-25).
    fn fail_after(&mut self, f: Failure, profile: SaslProfile, continued: bool) -> NegotiatorEvent {
        if continued {
            self.fail_tasks(f)
        } else {
            self.state = State::Ready;
            self.fail(f, profile)
        }
    }

    /// A failure once `<continue>` was sent: S-25 allows no new `<authenticate>`, so the stream
    /// ends after the `<failure>`.
    fn fail_tasks(&mut self, f: Failure) -> NegotiatorEvent {
        self.failures += 1;
        self.state = State::Closed;
        NegotiatorEvent::StreamError {
            send: Some(Self::failure_element(&f, SaslProfile::Sasl2)),
            failure: Some(f),
            error: StreamError::new(
                StreamCondition::PolicyViolation,
                "en",
                "authentication failed after <continue>",
            ),
        }
    }

    fn fail(&mut self, f: Failure, profile: SaslProfile) -> NegotiatorEvent {
        self.failures += 1;
        let element = Self::failure_element(&f, profile);
        if self.failures >= self.server.max_failures {
            // R-2 (RFC 6120 §6.4.5): a bounded number of retries, then the stream is closed.
            return NegotiatorEvent::StreamError {
                send: Some(element),
                failure: Some(f),
                error: StreamError::new(
                    StreamCondition::PolicyViolation,
                    "en",
                    "too many failed authentication attempts",
                ),
            };
        }
        NegotiatorEvent::Failure {
            element,
            failure: f,
        }
    }
}
