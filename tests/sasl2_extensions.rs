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

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use sasl2_fast::fast::{FastConfig, FastPlugin, FastTokens, HtMechanism, Pepper};
use sasl2_fast::minidom::Element;
use sasl2_fast::sasl2::accounts::MemoryAccounts;
use sasl2_fast::sasl2::bind2::{Bind2, BoundResource};
use sasl2_fast::sasl2::plain::PlainProvider;
use sasl2_fast::sasl2::{
    ChannelBindings, Failure, InlineError, InlineFeature, InlineOrder, Negotiator, NegotiatorEvent,
    Offer, Sasl2Server, Sasl2Task, SaslCondition, StreamInfo, SuccessBuilder, SuccessContext,
    TaskContext, TaskInput, TaskSession, TaskStep, TlsInfo, TlsVersion,
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

#[tokio::test]
async fn features_carry_the_outside_feature() {
    let n = Negotiator::new(server(), stream());
    let auth = n.features().into_iter().next().unwrap();
    let inline = auth.get_child("inline", ns::SASL2).unwrap();
    let names: Vec<_> = inline.children().map(|c| c.name().to_owned()).collect();
    // Offered in InlineOrder too: bind, greeting, fast.
    assert_eq!(names, ["bind", "greeting", "fast"]);
}

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
    // F-10: no token, no binding, nothing inline before the task completed.
    assert!(c.get_child("token", ns::FAST).is_none());
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
    // Results in InlineOrder, whatever the registration order: bound, greeted, token.
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
