//! Sans-IO flows through the SASL2 negotiator with the FAST plugin, the real PLAIN/SCRAM
//! mechanisms and a real store: every server rule of protocol.md §4/§5 that does not need a
//! socket. Rule numbers (F-n, S-n, H-n) say why each assertion exists. One fixture (this file)
//! for every topic module.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use sasl2_fast::fast::clock::ManualClock;
use sasl2_fast::fast::config::FastConfig;
use sasl2_fast::fast::hooks::{FastObserver, RejectEvent, RevokeEvent, TokenEvent};
use sasl2_fast::fast::{FastPlugin, FastTokens, HtMechanism, Pepper};
use sasl2_fast::minidom::Element;
use sasl2_fast::sasl2::accounts::MemoryAccounts;
use sasl2_fast::sasl2::plain::PlainProvider;
use sasl2_fast::sasl2::scram::ScramProvider;
use sasl2_fast::sasl2::{
    ChannelBindings, Negotiator, NegotiatorEvent, Sasl2Server, SaslCondition, ScramHash,
    StreamInfo, TlsInfo, TlsVersion,
};
use sasl2_fast::store::memory::MemoryStore;
use sasl2_fast::store::sled_store::SledStore;
use sasl2_fast::store::{ClientKey, TokenStore};
use sasl2_fast::stream::to_xml;
use sasl2_fast::xmpp::ns;

const NS_BIND2: &str = ns::BIND2;
const NS_FAST: &str = ns::FAST;
const NS_SASL: &str = ns::SASL;
const NS_SASL_CB: &str = ns::SASL_CB;
const NS_SASL2: &str = ns::SASL2;

/// An empty element (what the tests build requests from).
fn el(name: &str, namespace: &str) -> Element {
    Element::bare(name, namespace)
}

/// Builder helpers on minidom elements, so requests read like the XML they are.
trait Build {
    fn with_attr(self, name: &str, value: impl Into<String>) -> Self;
    fn with_child(self, child: Element) -> Self;
    fn with_text(self, text: impl Into<String>) -> Self;
}

impl Build for Element {
    fn with_attr(mut self, name: &str, value: impl Into<String>) -> Self {
        let name = sasl2_fast::minidom::rxml::NcName::try_from(name).unwrap();
        self.set_attr(
            sasl2_fast::minidom::rxml::Namespace::NONE,
            name,
            value.into(),
        );
        self
    }
    fn with_child(mut self, child: Element) -> Self {
        self.append_child(child);
        self
    }
    fn with_text(mut self, text: impl Into<String>) -> Self {
        self.append_text(text.into());
        self
    }
}

/// The SASL part of the stream features of `stream`.
fn features(f: &Fixture, stream: &StreamInfo) -> Vec<Element> {
    Negotiator::new(f.server.clone(), stream.clone()).features()
}

const UA: &str = "d4565fa7-4d72-4749-b3d3-740edbf87770";
const T0: u64 = 1_800_000_000_000;

fn b64(d: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(d)
}
fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Records hook calls in order.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<String>>);
impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
    fn push(&self, s: String) {
        self.0.lock().unwrap().push(s);
    }
}
impl FastObserver for Recorder {
    fn issued(&self, e: &TokenEvent) {
        self.push(format!("issued {}", e.mechanism));
    }
    fn rotated(&self, e: &TokenEvent) {
        self.push(format!("rotated {}", e.mechanism));
    }
    fn promoted(&self, e: &TokenEvent) {
        self.push(format!("promoted {}", e.mechanism));
    }
    fn used(&self, e: &TokenEvent) {
        self.push(format!("used {}", e.mechanism));
    }
    fn invalidated(&self, e: &TokenEvent) {
        self.push(format!("invalidated {}", e.mechanism));
    }
    fn revoked(&self, _e: &RevokeEvent) {
        self.push("revoked".into());
    }
    fn expired(&self, e: &TokenEvent) {
        self.push(format!("expired {}", e.mechanism));
    }
    fn rejected(&self, e: &RejectEvent) {
        self.push(format!("rejected {}", e.reason.as_str()));
    }
}

struct Fixture {
    server: Arc<Sasl2Server>,
    plugin: FastPlugin,
    /// The accounts the password mechanisms read and every FAST login asks for the account
    /// side's revocation cutoff.
    accounts: Arc<MemoryAccounts>,
    clock: Arc<ManualClock>,
    events: Arc<Recorder>,
    _dir: Option<tempfile::TempDir>,
}

fn fixture_with(
    config: FastConfig,
    store: Arc<dyn TokenStore>,
    dir: Option<tempfile::TempDir>,
) -> Fixture {
    let accounts = Arc::new(MemoryAccounts::new());
    accounts.set_password("alice", "alicepass", 4096);
    accounts.set_password("bob", "bobpass", 4096);
    let clock = Arc::new(ManualClock::new(T0));
    let events = Arc::new(Recorder::default());
    let tokens = FastTokens::new(store, Pepper::from_bytes([7; 32]), config)
        .with_clock(clock.clone())
        .with_observer(events.clone())
        .with_accounts(accounts.clone());
    let plugin = FastPlugin::new(Arc::new(tokens));
    let server = Sasl2Server::builder()
        .mechanism(Arc::new(ScramProvider::new(
            ScramHash::Sha256,
            true,
            accounts.clone(),
        )))
        .mechanism(Arc::new(ScramProvider::new(
            ScramHash::Sha256,
            false,
            accounts.clone(),
        )))
        .mechanism(Arc::new(PlainProvider::new(accounts.clone())))
        .inline_feature(Arc::new(plugin.clone()))
        .build();
    Fixture {
        server: Arc::new(server),
        plugin,
        accounts,
        clock,
        events,
        _dir: dir,
    }
}

fn fixture() -> Fixture {
    fixture_with(FastConfig::default(), Arc::new(MemoryStore::new()), None)
}

fn sled_fixture(config: FastConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path().join("tokens")).unwrap();
    fixture_with(config, Arc::new(store), Some(dir))
}

/// A TLS 1.3 stream with synthetic channel-binding bytes (real ones are used in the TCP tests).
fn tls13(exporter_byte: u8) -> StreamInfo {
    StreamInfo::new("example.com")
        .with_from(Some(
            sasl2_fast::jid::BareJid::new("alice@example.com").unwrap(),
        ))
        .with_tls(TlsInfo::new(
            TlsVersion::Tls13,
            ChannelBindings::none()
                .with_tls_exporter(vec![exporter_byte; 32])
                .with_tls_server_end_point(vec![0xEE; 32]),
        ))
}

fn authenticate(mech: &str, ir: &[u8], ua: Option<&str>, extra: Vec<Element>) -> Element {
    let mut a = el("authenticate", NS_SASL2)
        .with_attr("mechanism", mech)
        .with_child(el("initial-response", NS_SASL2).with_text(b64(ir)));
    if let Some(ua) = ua {
        a.append_child(
            el("user-agent", NS_SASL2)
                .with_attr("id", ua)
                .with_child(el("software", NS_SASL2).with_text("flow-tests")),
        );
    }
    for e in extra {
        a.append_child(e);
    }
    a
}

fn request_token(mech: &str) -> Element {
    el("request-token", NS_FAST).with_attr("mechanism", mech)
}
fn fast() -> Element {
    el("fast", NS_FAST)
}

fn success(ev: NegotiatorEvent) -> Element {
    match ev {
        NegotiatorEvent::Success { element, .. } => element,
        other => panic!("expected success, got {other:?}"),
    }
}

fn failure(ev: NegotiatorEvent) -> SaslCondition {
    match ev {
        NegotiatorEvent::Failure { failure, element } => {
            let condition = failure.condition;
            assert!(element.is("failure", NS_SASL2));
            assert!(
                element.get_child(condition.as_str(), NS_SASL).is_some(),
                "S-21"
            );
            condition
        }
        other => panic!("expected failure, got {other:?}"),
    }
}

/// The token in a `<success>`, if any.
fn token_of(s: &Element) -> Option<(String, String)> {
    let t = s.get_child("token", NS_FAST)?;
    Some((t.attr("token")?.to_owned(), t.attr("expiry")?.to_owned()))
}

async fn password_login(f: &Fixture, stream: StreamInfo, extra: Vec<Element>) -> Element {
    let mut n = Negotiator::new(f.server.clone(), stream);
    success(
        n.handle(authenticate(
            "PLAIN",
            b"\0alice\0alicepass",
            Some(UA),
            extra,
        ))
        .await,
    )
}

async fn get_token(f: &Fixture, stream: StreamInfo, mech: &str) -> String {
    let s = password_login(f, stream, vec![request_token(mech)]).await;
    token_of(&s).expect("token issued").0
}

fn ht(mech: &str, authcid: &str, token: &str, stream: &StreamInfo) -> Vec<u8> {
    let m = HtMechanism::from_name(mech).unwrap();
    m.initiator_message(authcid, token.as_bytes(), m.cb_data(stream).unwrap())
}

async fn fast_login(
    f: &Fixture,
    stream: &StreamInfo,
    mech: &str,
    token: &str,
    extra: Vec<Element>,
) -> NegotiatorEvent {
    let mut n = Negotiator::new(f.server.clone(), stream.clone());
    let mut inline = vec![fast()];
    inline.extend(extra);
    n.handle(authenticate(
        mech,
        &ht(mech, "alice", token, stream),
        Some(UA),
        inline,
    ))
    .await
}

mod account_side;
mod fast_login;
mod features;
mod issuance;
mod negotiator_rules;
mod observers;
mod revocation;
mod rotation;
mod store_and_concurrency;
mod zero_rtt;
