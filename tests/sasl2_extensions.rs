//! The SASL2 layer is open (issue 9 item 5): a SASL2 task and an inline feature defined here,
//! outside `src/`, register with the server and run without any change to the negotiator.
//!
//! - `OtpTask` ("OTP-EXAMPLE"): a second factor required for `bob`, driven by `<next>` with an
//!   initial response, by `<challenge>`/`<response>`, or by `<task-data>` payloads.
//! - `Greeting`: an inline feature ordered between Bind 2 and FAST, which answers a `<greet>`
//!   request inside `<success>` and hands the host a typed value.
//!
//! Tokens are never issued before every task has completed (F-10), and FAST logins never get
//! tasks (F-28).
//!
//! - `TestResume` and `TestSmEnable`: stand-ins for XEP-0198 (which the crate does not
//!   implement) that pin what the layer gives Stream Management (SM-1..SM-6, B-5, B-6, B-11,
//!   B-12). Offer caching is in `tests/sasl2_offers.rs`.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use sasl2_fast::fast::{FastConfig, FastPlugin, FastTokens, HtMechanism, Pepper};
use sasl2_fast::jid::Jid;
use sasl2_fast::minidom::Element;
use sasl2_fast::minidom::rxml::NcName;
use sasl2_fast::sasl2::accounts::MemoryAccounts;
use sasl2_fast::sasl2::bind2::{Bind2, BoundResource};
use sasl2_fast::sasl2::plain::PlainProvider;
use sasl2_fast::sasl2::{
    ChannelBindings, Failure, InlineError, InlineFeature, InlineOrder, Negotiator, NegotiatorEvent,
    Offer, Sasl2Server, Sasl2Task, SaslCondition, SessionResumed, StreamInfo, SuccessBuilder,
    SuccessContext, TaskContext, TaskInput, TaskSession, TaskStep, TlsInfo, TlsVersion,
};
use sasl2_fast::store::memory::MemoryStore;
use sasl2_fast::xmpp::ns;
use sasl2_fast::xmpp_parsers::sasl2::{Continue, Next, Response, TaskData};
use sasl2_fast::xmpp_parsers::stream_error::DefinedCondition;

const NS_OTP: &str = "urn:example:otp";
const NS_GREETING: &str = "urn:example:greeting";
const UA: &str = "d4565fa7-4d72-4749-b3d3-740edbf87770";
const CODE: &[u8] = b"123456";

// ---------------------------------------------------------------------------------------------
// A SASL2 task defined outside the crate.

#[derive(Debug)]
struct OtpTask;

#[async_trait]
impl Sasl2Task for OtpTask {
    fn name(&self) -> &str {
        "OTP-EXAMPLE"
    }

    async fn required(&self, ctx: &TaskContext<'_>) -> bool {
        ctx.username == "bob" && !ctx.completed.iter().any(|t| t == "OTP-EXAMPLE")
    }

    fn start(&self, _ctx: &TaskContext<'_>) -> Box<dyn TaskSession> {
        Box::new(OtpSession { asked: false })
    }
}

struct OtpSession {
    asked: bool,
}

#[async_trait]
impl TaskSession for OtpSession {
    async fn step(&mut self, input: TaskInput<'_>) -> TaskStep {
        let from_payload = input
            .payloads
            .iter()
            .find(|p| p.is("code", NS_OTP))
            .map(|p| p.text().into_bytes());
        let code = input.data.map(<[u8]>::to_vec).or(from_payload);
        match code {
            None if !self.asked => {
                self.asked = true;
                TaskStep::Challenge(b"code?".to_vec())
            }
            Some(c) if c == CODE => TaskStep::Done {
                additional_data: Some(b"otp-ok".to_vec()),
            },
            _ => TaskStep::Failure(Failure::with_text(SaslCondition::NotAuthorized, "bad code")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// An inline feature defined outside the crate.

/// What the greeting feature tells the host.
#[derive(Debug, PartialEq, Eq)]
struct Greeted(String);

#[derive(Debug)]
struct Greeting;

#[async_trait]
impl InlineFeature for Greeting {
    fn name(&self) -> &'static str {
        "greeting"
    }

    fn order(&self) -> InlineOrder {
        // Between Bind 2 (200) and FAST tokens (300).
        InlineOrder(250)
    }

    fn offer(&self, _stream: &StreamInfo) -> Option<Offer> {
        Some(Offer::new(Element::bare("greeting", NS_GREETING)))
    }

    async fn on_success(
        &self,
        ctx: &SuccessContext<'_>,
        success: &mut SuccessBuilder,
    ) -> Result<(), InlineError> {
        if ctx.request.inline_child("greet", NS_GREETING).is_some() {
            success.push(
                Element::builder("greeted", NS_GREETING)
                    .append(format!("hello {}", ctx.username))
                    .build(),
            );
            success.extensions.insert(Greeted(ctx.username.to_owned()));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

fn server() -> Arc<Sasl2Server> {
    let accounts = Arc::new(MemoryAccounts::new());
    accounts.set_password("alice", "alicepass", 64);
    accounts.set_password("bob", "bobpass", 64);
    let tokens = FastTokens::new(
        Arc::new(MemoryStore::new()),
        Pepper::from_bytes([5; 32]),
        FastConfig::default(),
    );
    // Registration order is deliberately not result order.
    Arc::new(
        Sasl2Server::builder()
            .mechanism(Arc::new(PlainProvider::new(accounts)))
            .inline_feature(Arc::new(FastPlugin::new(Arc::new(tokens))))
            .inline_feature(Arc::new(Greeting))
            .inline_feature(Arc::new(Bind2::new()))
            .task(Arc::new(OtpTask))
            .build(),
    )
}

fn stream() -> StreamInfo {
    StreamInfo::new("example.com")
        .with_tls(TlsInfo::new(TlsVersion::Tls13, ChannelBindings::none()))
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn authenticate(mechanism: &str, ir: &[u8], extra: &str) -> Element {
    format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='{mechanism}'><initial-response>{}</initial-response>\
         <user-agent id='{UA}'/>{extra}</authenticate>",
        b64(ir)
    )
    .parse()
    .unwrap()
}

fn plain(user: &str, pw: &str) -> Vec<u8> {
    format!("\0{user}\0{pw}").into_bytes()
}

const INLINE: &str = "<bind xmlns='urn:xmpp:bind:0'><tag>t</tag></bind>\
    <greet xmlns='urn:example:greeting'/>\
    <request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>";

fn next(task: &str, ir: Option<&[u8]>) -> Element {
    let mut payloads = Vec::new();
    if let Some(ir) = ir {
        payloads.push(
            Element::builder("initial-response", ns::SASL2)
                .append(b64(ir))
                .build(),
        );
    }
    Element::from(Next {
        task: task.into(),
        payloads,
    })
}

fn continue_of(ev: NegotiatorEvent) -> Element {
    match ev {
        NegotiatorEvent::Continue(e) => e,
        other => panic!("expected <continue>, got {other:?}"),
    }
}

/// S-7: what can be negotiated during authentication is listed in `<inline>`, a direct child
/// of `<authentication>`; nothing but `<mechanism>`s and that `<inline>` sits beside it.
#[tokio::test]
async fn features_carry_the_outside_feature() {
    let n = Negotiator::new(server(), stream());
    let auth = n.features().into_iter().next().unwrap();
    let direct: Vec<_> = auth.children().map(|c| c.name().to_owned()).collect();
    assert_eq!(direct, ["mechanism", "inline"]);
    let inline = auth.get_child("inline", ns::SASL2).unwrap();
    let names: Vec<_> = inline.children().map(|c| c.name().to_owned()).collect();
    // Offered in InlineOrder too: bind, greeting, fast.
    assert_eq!(names, ["bind", "greeting", "fast"]);
}

/// S-24: a task (here a second factor) is announced in `<continue>` and ends in `<success>`.
/// S-18, B-5: the inline requests (bind, greeting, token) are processed only when the whole
/// authentication, task included, has succeeded, and their results go inside `<success>`.
#[tokio::test]
async fn a_task_runs_before_success_and_tokens_wait_for_it() {
    let mut n = Negotiator::new(server(), stream());
    let c = continue_of(
        n.handle(authenticate("PLAIN", &plain("bob", "bobpass"), INLINE))
            .await,
    );
    // PLAIN has no success data: the <continue> carries no <additional-data> (S-8; the
    // schema and xmpp-parsers' `Continue::additional_data` demand one, the prose says MAY).
    assert!(c.get_child("additional-data", ns::SASL2).is_none());
    assert!(
        Continue::try_from(c.clone()).is_err(),
        "xmpp-parsers insists on additional-data"
    );
    let tasks: Vec<String> = c
        .get_child("tasks", ns::SASL2)
        .unwrap()
        .children()
        .map(|t| t.text())
        .collect();
    assert_eq!(tasks, ["OTP-EXAMPLE"]);
    // F-10, B-5: no token, no binding, nothing inline before the task completed.
    assert!(c.get_child("token", ns::FAST).is_none());
    assert!(
        c.children().all(|e| e.has_ns(ns::SASL2)),
        "inline results in <continue>"
    );
    assert!(!n.is_authenticated());

    // S-25: no new <authenticate> once <continue> was sent.
    let mut n2 = Negotiator::new(server(), stream());
    continue_of(
        n2.handle(authenticate("PLAIN", &plain("bob", "bobpass"), ""))
            .await,
    );
    assert!(matches!(
        n2.handle(authenticate("PLAIN", &plain("alice", "alicepass"), ""))
            .await,
        NegotiatorEvent::StreamError { .. }
    ));

    // <next> without an initial response: the task asks with a challenge.
    match n.handle(next("OTP-EXAMPLE", None)).await {
        NegotiatorEvent::Challenge(c) => assert!(c.is("challenge", ns::SASL2)),
        other => panic!("{other:?}"),
    }
    let resp = Element::from(Response {
        sasl_data: CODE.to_vec(),
    });
    let (element, session) = match n.handle(resp).await {
        NegotiatorEvent::Success { element, session } => (element, session),
        other => panic!("{other:?}"),
    };
    // The task's success data replaces the mechanism's.
    let data = element
        .get_child("additional-data", ns::SASL2)
        .unwrap()
        .text();
    assert_eq!(data, b64(b"otp-ok"));
    // S-18: the results inside <success>, in InlineOrder whatever the registration order:
    // bound, greeted, token.
    let results: Vec<_> = element
        .children()
        .filter(|c| c.ns() != ns::SASL2)
        .map(|c| c.name().to_owned())
        .collect();
    assert_eq!(results, ["bound", "greeted", "token"]);
    // Typed values for the host: the bound resource and the greeting, no string splitting.
    let bound = session.extensions.get::<BoundResource>().unwrap();
    assert_eq!(bound.jid.to_bare().to_string(), "bob@example.com");
    assert!(bound.jid.resource().as_str().starts_with("t."));
    assert_eq!(
        session.authorization_identifier.to_string(),
        bound.jid.to_string()
    );
    assert_eq!(
        session.extensions.get::<Greeted>(),
        Some(&Greeted("bob".into()))
    );
    assert!(n.is_authenticated());
}

#[tokio::test]
async fn task_data_payloads_complete_a_task() {
    let mut n = Negotiator::new(server(), stream());
    continue_of(
        n.handle(authenticate("PLAIN", &plain("bob", "bobpass"), ""))
            .await,
    );
    match n.handle(next("OTP-EXAMPLE", None)).await {
        NegotiatorEvent::Challenge(_) => {}
        other => panic!("{other:?}"),
    }
    let code = Element::builder("code", NS_OTP).append("123456").build();
    let td = Element::from(TaskData {
        payloads: vec![code],
    });
    assert!(matches!(
        n.handle(td).await,
        NegotiatorEvent::Success { .. }
    ));
}

#[tokio::test]
async fn a_failed_or_unknown_task_ends_the_stream() {
    for step in [
        next("OTP-EXAMPLE", Some(b"000000")),
        next("NOT-OFFERED", None),
    ] {
        let mut n = Negotiator::new(server(), stream());
        continue_of(
            n.handle(authenticate("PLAIN", &plain("bob", "bobpass"), INLINE))
                .await,
        );
        match n.handle(step).await {
            NegotiatorEvent::StreamError {
                send: Some(f),
                failure: Some(failure),
                error,
            } => {
                assert!(f.is("failure", ns::SASL2));
                assert!(f.get_child("token", ns::FAST).is_none());
                assert!(matches!(
                    failure.condition,
                    SaslCondition::NotAuthorized | SaslCondition::InvalidMechanism
                ));
                assert_eq!(error.condition, DefinedCondition::PolicyViolation);
            }
            other => panic!("{other:?}"),
        }
        assert!(!n.is_authenticated());
    }
}

#[tokio::test]
async fn an_abort_during_a_task_ends_the_attempt() {
    let mut n = Negotiator::new(server(), stream());
    continue_of(
        n.handle(authenticate("PLAIN", &plain("bob", "bobpass"), ""))
            .await,
    );
    let abort: Element = "<abort xmlns='urn:xmpp:sasl:2'/>".parse().unwrap();
    match n.handle(abort).await {
        NegotiatorEvent::StreamError {
            failure: Some(f), ..
        } => assert_eq!(f.condition, SaslCondition::Aborted),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn accounts_without_the_task_and_fast_logins_get_no_continue() {
    let server = server();
    // alice: no task required.
    let mut n = Negotiator::new(server.clone(), stream());
    assert!(matches!(
        n.handle(authenticate("PLAIN", &plain("alice", "alicepass"), ""))
            .await,
        NegotiatorEvent::Success { .. }
    ));

    // bob gets a token after his second factor, then logs in with it: F-28, no task.
    let mut n = Negotiator::new(server.clone(), stream());
    continue_of(
        n.handle(authenticate("PLAIN", &plain("bob", "bobpass"), INLINE))
            .await,
    );
    let token = match n.handle(next("OTP-EXAMPLE", Some(CODE))).await {
        NegotiatorEvent::Success { element, .. } => element
            .get_child("token", ns::FAST)
            .unwrap()
            .attr("token")
            .unwrap()
            .to_owned(),
        other => panic!("{other:?}"),
    };
    let m = HtMechanism::from_name("HT-SHA-256-NONE").unwrap();
    let ir = m.initiator_message("bob", token.as_bytes(), &[]);
    let mut n = Negotiator::new(server, stream());
    match n
        .handle(authenticate(
            "HT-SHA-256-NONE",
            &ir,
            "<fast xmlns='urn:xmpp:fast:0'/><greet xmlns='urn:example:greeting'/>",
        ))
        .await
    {
        NegotiatorEvent::Success { element, session } => {
            assert!(element.get_child("greeted", NS_GREETING).is_some());
            assert_eq!(session.username, "bob");
        }
        other => panic!("F-28: a FAST login must not get tasks: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// XEP-0198 with SASL2 and Bind 2 (SM-1..SM-6, B-2, B-5, B-6, B-11, B-12). The crate implements
// no Stream Management; these test-only features stand in for one, to pin what the
// inline-feature layer gives an implementation: resume before bind before token, the bind
// skipped after a resumption and processed after a failed one, `<enabled>` inside `<bound>`,
// and nothing inline processed for a failed attempt or from 0-RTT data without FAST's `count`.

const NS_SM: &str = "urn:xmpp:sm:3";
/// The one session [`TestResume`] can resume.
const PREVID: &str = "sm-session-1";

/// A stand-in for XEP-0198 inline resumption: offers `<sm/>` (SM-1), resumes [`PREVID`] and
/// nothing else, and records every `<resume>` it processes.
#[derive(Debug, Default)]
struct TestResume(std::sync::Mutex<Vec<String>>);

impl TestResume {
    fn processed(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait]
impl InlineFeature for TestResume {
    fn name(&self) -> &'static str {
        "sm-resume"
    }

    fn order(&self) -> InlineOrder {
        InlineOrder::RESUME
    }

    fn offer(&self, _stream: &StreamInfo) -> Option<Offer> {
        Some(Offer::new(Element::bare("sm", NS_SM)))
    }

    async fn on_success(
        &self,
        ctx: &SuccessContext<'_>,
        success: &mut SuccessBuilder,
    ) -> Result<(), InlineError> {
        let Some(resume) = ctx.request.inline_child("resume", NS_SM) else {
            return Ok(());
        };
        let previd = resume.attr("previd").unwrap_or_default();
        self.0.lock().unwrap().push(previd.to_owned());
        if previd == PREVID {
            // The resumed session's full JID goes into <authorization-identifier> (§4 step 9).
            let full: Jid = format!("{}@example.com/resumed", ctx.username)
                .parse()
                .unwrap();
            success.authorization_identifier = full;
            success.push(
                Element::builder("resumed", NS_SM)
                    .attr(NcName::try_from("previd").unwrap(), previd)
                    .attr(NcName::try_from("h").unwrap(), "0")
                    .build(),
            );
            success.extensions.insert(SessionResumed);
        } else {
            success.push(
                Element::builder("failed", NS_SM)
                    .append(Element::bare(
                        "item-not-found",
                        "urn:ietf:params:xml:ns:xmpp-stanzas",
                    ))
                    .build(),
            );
        }
        Ok(())
    }
}

/// A stand-in for XEP-0198 `<enable>` inside a Bind 2 request (B-11): ordered after Bind 2, it
/// answers the enable request Bind 2 handed over ([`BoundResource::enable`]) with `<enabled>`
/// inside `<bound>`. Offers nothing itself: Bind 2 lists `<feature var='urn:xmpp:sm:3'/>`.
#[derive(Debug)]
struct TestSmEnable;

#[async_trait]
impl InlineFeature for TestSmEnable {
    fn name(&self) -> &'static str {
        "sm-enable"
    }

    fn order(&self) -> InlineOrder {
        InlineOrder(InlineOrder::BIND.0 + 10)
    }

    fn offer(&self, _stream: &StreamInfo) -> Option<Offer> {
        None
    }

    async fn on_success(
        &self,
        _ctx: &SuccessContext<'_>,
        success: &mut SuccessBuilder,
    ) -> Result<(), InlineError> {
        let asked = success
            .extensions
            .get::<BoundResource>()
            .is_some_and(|b| b.enable.iter().any(|e| e.is("enable", NS_SM)));
        if asked
            && let Some(bound) = success
                .results
                .iter_mut()
                .find(|e| e.is("bound", ns::BIND2))
        {
            bound.append_child(Element::bare("enabled", NS_SM));
        }
        Ok(())
    }
}

/// PLAIN, the OTP task (for bob), FAST, Bind 2 listing SM, and the two SM stand-ins,
/// registered in reverse of their InlineOrder.
fn sm_server() -> (Arc<Sasl2Server>, Arc<TestResume>) {
    let accounts = Arc::new(MemoryAccounts::new());
    accounts.set_password("alice", "alicepass", 64);
    accounts.set_password("bob", "bobpass", 64);
    let tokens = FastTokens::new(
        Arc::new(MemoryStore::new()),
        Pepper::from_bytes([6; 32]),
        FastConfig::default(),
    );
    let resume = Arc::new(TestResume::default());
    let server = Sasl2Server::builder()
        .mechanism(Arc::new(PlainProvider::new(accounts)))
        .inline_feature(Arc::new(FastPlugin::new(Arc::new(tokens))))
        .inline_feature(Arc::new(TestSmEnable))
        .inline_feature(Arc::new(Bind2::new().with_inline_feature(NS_SM)))
        .inline_feature(resume.clone())
        .task(Arc::new(OtpTask))
        .build();
    (Arc::new(server), resume)
}

fn resume(previd: &str) -> String {
    format!("<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
}

/// A Bind 2 request enabling SM (advertised) and carbons (not advertised here).
const BIND_ENABLING_SM: &str = "<bind xmlns='urn:xmpp:bind:0'><tag>t</tag>\
    <enable xmlns='urn:xmpp:sm:3' resume='true'/><enable xmlns='urn:xmpp:carbons:2'/></bind>";

/// True if `el` or an element below it matches.
fn any_descendant(el: &Element, matches: &dyn Fn(&Element) -> bool) -> bool {
    matches(el) || el.children().any(|c| any_descendant(c, matches))
}

/// Names of the inline results in a `<success>`, in order.
fn results(success: &Element) -> Vec<String> {
    success
        .children()
        .filter(|c| c.ns() != ns::SASL2)
        .map(|c| c.name().to_owned())
        .collect()
}

/// A password login (after the handshake) that asks for an `HT-SHA-256-NONE` token, and the
/// initiator message of a FAST login with it.
async fn none_token_initiator(server: &Arc<Sasl2Server>) -> Vec<u8> {
    let mut n = Negotiator::new(server.clone(), stream());
    let (element, _) = success_of(
        n.handle(authenticate(
            "PLAIN",
            &plain("alice", "alicepass"),
            "<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>",
        ))
        .await,
    );
    let token = element
        .get_child("token", ns::FAST)
        .and_then(|t| t.attr("token"))
        .unwrap()
        .to_owned();
    HtMechanism::from_name("HT-SHA-256-NONE")
        .unwrap()
        .initiator_message("alice", token.as_bytes(), &[])
}

fn success_of(ev: NegotiatorEvent) -> (Element, sasl2_fast::sasl2::AuthenticatedSession) {
    match ev {
        NegotiatorEvent::Success { element, session } => (element, session),
        other => panic!("expected success, got {other:?}"),
    }
}

/// SM-1, B-2: resumption is announced by `<sm/>` in the SASL2 `<inline>`, inline enabling by
/// `<feature var='urn:xmpp:sm:3'/>` in the `<inline>` of Bind 2's `<bind>`; a Bind 2 with no
/// enableable features lists none.
#[tokio::test]
async fn sm_is_announced_inline_and_bind_lists_its_inline_features() {
    let (sm, _) = sm_server();
    let auth = Negotiator::new(sm, stream())
        .features()
        .into_iter()
        .next()
        .unwrap();
    let inline = auth.get_child("inline", ns::SASL2).unwrap();
    let names: Vec<_> = inline.children().map(|c| c.name().to_owned()).collect();
    assert_eq!(names, ["sm", "bind", "fast"]);
    assert!(inline.get_child("sm", NS_SM).is_some());
    let vars: Vec<_> = inline
        .get_child("bind", ns::BIND2)
        .and_then(|b| b.get_child("inline", ns::BIND2))
        .map(|i| {
            i.children()
                .filter(|f| f.is("feature", ns::BIND2))
                .filter_map(|f| f.attr("var"))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(vars, [NS_SM]);

    // The plain Bind 2 of `server()` lists no inline feature.
    let auth = Negotiator::new(server(), stream())
        .features()
        .into_iter()
        .next()
        .unwrap();
    let bind = auth
        .get_child("inline", ns::SASL2)
        .and_then(|i| i.get_child("bind", ns::BIND2))
        .unwrap();
    assert!(!any_descendant(bind, &|d| d.is("feature", ns::BIND2)));
}

/// SM-2, B-6, SM-3: a `<resume>` is processed first (whatever the registration order); when it
/// succeeds, Bind 2 binds nothing and the `<bind>` request is ignored, and the host learns from
/// [`SessionResumed`] that no `<stream:features>` may follow. Tokens still come last.
#[tokio::test]
async fn a_successful_resumption_comes_first_and_skips_the_bind() {
    let (server, resumer) = sm_server();
    let mut n = Negotiator::new(server, stream());
    let extra = format!(
        "{}{BIND_ENABLING_SM}<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>",
        resume(PREVID)
    );
    let (element, session) = success_of(
        n.handle(authenticate("PLAIN", &plain("alice", "alicepass"), &extra))
            .await,
    );
    assert_eq!(results(&element), ["resumed", "token"]);
    assert!(element.get_child("bound", ns::BIND2).is_none(), "B-6");
    assert!(session.extensions.get::<BoundResource>().is_none(), "B-6");
    assert_eq!(
        session.extensions.get::<SessionResumed>(),
        Some(&SessionResumed)
    );
    assert_eq!(
        session.authorization_identifier.to_string(),
        "alice@example.com/resumed"
    );
    assert_eq!(resumer.processed(), [PREVID]);
}

/// SM-4, B-6, B-11, SM-6: a failed resumption puts XEP-0198's `<failed>` into `<success>` and
/// the `<bind>` is still processed after it, with the SM `<enable>` answered inside `<bound>`
/// and the enable request of a feature Bind 2 does not list dropped. The login is a FAST one:
/// the token does not depend on the SM session, which is gone (SM-6).
#[tokio::test]
async fn a_failed_resumption_reports_failed_and_then_binds() {
    let (server, resumer) = sm_server();
    let ir = none_token_initiator(&server).await;
    let extra = format!(
        "<fast xmlns='urn:xmpp:fast:0'/>{}{BIND_ENABLING_SM}",
        resume("expired-session")
    );
    let mut n = Negotiator::new(server, stream());
    let (element, session) =
        success_of(n.handle(authenticate("HT-SHA-256-NONE", &ir, &extra)).await);
    assert_eq!(results(&element), ["failed", "bound"]);
    assert!(
        element
            .get_child("failed", NS_SM)
            .is_some_and(|f| f.children().count() == 1)
    );
    let bound = element.get_child("bound", ns::BIND2).unwrap();
    assert!(bound.get_child("enabled", NS_SM).is_some(), "B-11");
    let b = session.extensions.get::<BoundResource>().unwrap();
    let enabled: Vec<_> = b.enable.iter().map(|e| e.ns()).collect();
    assert_eq!(
        enabled,
        [NS_SM],
        "B-11: carbons is not listed by this Bind 2"
    );
    assert_eq!(
        session.authorization_identifier.to_string(),
        b.jid.to_string()
    );
    assert!(session.extensions.get::<SessionResumed>().is_none());
    assert_eq!(resumer.processed(), ["expired-session"]);
}

/// B-5: the bind request (and every other inline request) is processed only once the whole
/// authentication succeeded, SASL2 tasks included, and never for a failed mechanism or task:
/// no `<bound>` in a `<continue>` or `<failure>`, and the resume stand-in never called.
#[tokio::test]
async fn inline_requests_wait_for_full_success_and_never_follow_a_failure() {
    let (server, resumer) = sm_server();
    let extra = format!("{}{BIND_ENABLING_SM}", resume(PREVID));
    let inline_result =
        |e: &Element| any_descendant(e, &|d| d.has_ns(NS_SM) || d.has_ns(ns::BIND2));

    let mut n = Negotiator::new(server.clone(), stream());
    match n
        .handle(authenticate("PLAIN", &plain("alice", "wrong"), &extra))
        .await
    {
        NegotiatorEvent::Failure { element, .. } => assert!(!inline_result(&element)),
        other => panic!("{other:?}"),
    }
    // bob needs the OTP task: nothing inline in <continue>, nor after the task fails.
    let mut n = Negotiator::new(server.clone(), stream());
    let c = continue_of(
        n.handle(authenticate("PLAIN", &plain("bob", "bobpass"), &extra))
            .await,
    );
    assert!(!inline_result(&c));
    match n.handle(next("OTP-EXAMPLE", Some(b"000000"))).await {
        NegotiatorEvent::StreamError { send: Some(f), .. } => assert!(!inline_result(&f)),
        other => panic!("{other:?}"),
    }
    assert!(resumer.processed().is_empty());

    let mut n = Negotiator::new(server, stream());
    continue_of(
        n.handle(authenticate("PLAIN", &plain("bob", "bobpass"), &extra))
            .await,
    );
    assert!(
        resumer.processed().is_empty(),
        "not before the task is done"
    );
    let (element, _) = success_of(n.handle(next("OTP-EXAMPLE", Some(CODE))).await);
    assert_eq!(results(&element), ["resumed"]);
    assert_eq!(resumer.processed(), [PREVID]);
}

/// B-12, SM-5: from TLS 0-RTT data no inline request (a resumption, a bind) is processed unless
/// the request passes FAST's mitigation (Z-1..Z-5): a password login with them is refused, a
/// FAST one needs `count`, and its replay is refused before any inline feature runs.
#[tokio::test]
async fn nothing_inline_is_processed_from_early_data_without_fasts_count() {
    let (server, resumer) = sm_server();
    let early = || stream().with_zero_rtt(true).with_early_data(true);
    let extra = format!("{}{BIND_ENABLING_SM}", resume(PREVID));
    let refused = |ev: NegotiatorEvent| match ev {
        NegotiatorEvent::Failure { failure, element } => {
            assert!(!any_descendant(&element, &|d| d.has_ns(NS_SM)));
            failure.condition
        }
        other => panic!("expected failure, got {other:?}"),
    };

    let mut n = Negotiator::new(server.clone(), early());
    let ev = n
        .handle(authenticate("PLAIN", &plain("alice", "alicepass"), &extra))
        .await;
    assert_eq!(refused(ev), SaslCondition::MalformedRequest);

    // A token from a login after the handshake, then FAST in early data.
    let ir = none_token_initiator(&server).await;
    let without_count = format!("<fast xmlns='urn:xmpp:fast:0'/>{extra}");
    let mut n = Negotiator::new(server.clone(), early());
    let ev = n
        .handle(authenticate("HT-SHA-256-NONE", &ir, &without_count))
        .await;
    assert_eq!(refused(ev), SaslCondition::MalformedRequest);
    assert!(resumer.processed().is_empty());

    let flight = authenticate(
        "HT-SHA-256-NONE",
        &ir,
        &format!("<fast xmlns='urn:xmpp:fast:0' count='1'/>{extra}"),
    );
    let mut n = Negotiator::new(server.clone(), early());
    let (element, _) = success_of(n.handle(flight.clone()).await);
    assert_eq!(results(&element), ["resumed"]);
    assert_eq!(resumer.processed(), [PREVID]);
    // The same flight replayed on another stream: refused, nothing inline runs again.
    let mut n = Negotiator::new(server, early());
    assert_eq!(
        refused(n.handle(flight).await),
        SaslCondition::NotAuthorized
    );
    assert_eq!(resumer.processed(), [PREVID]);
}
