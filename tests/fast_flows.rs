//! Sans-IO flows through the SASL2 negotiator with the FAST plugin, the real PLAIN/SCRAM
//! mechanisms and a real store: every server rule of protocol.md §4/§5 that does not need a
//! socket. Rule numbers (F-n, S-n, H-n) say why each assertion exists.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use sasl2_fast::fast::clock::ManualClock;
use sasl2_fast::fast::config::FastConfig;
use sasl2_fast::fast::hooks::{FastObserver, RejectEvent, RevokeEvent, TokenEvent};
use sasl2_fast::fast::{FastPlugin, FastTokens, HtMechanism, Pepper};
use sasl2_fast::sasl2::accounts::{MemoryAccounts, ScramHash};
use sasl2_fast::sasl2::plain::PlainProvider;
use sasl2_fast::sasl2::scram::ScramProvider;
use sasl2_fast::sasl2::{
    ChannelBindings, Negotiator, NegotiatorEvent, Sasl2Server, SaslCondition, StreamInfo, TlsInfo,
    TlsVersion,
};
use sasl2_fast::store::memory::MemoryStore;
use sasl2_fast::store::sled_store::SledStore;
use sasl2_fast::store::{ClientKey, TokenStore};
use sasl2_fast::xml::{Element, NS_BIND2, NS_FAST, NS_SASL, NS_SASL_CB, NS_SASL2};

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
        .with_observer(events.clone());
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
        .mechanism(Arc::new(PlainProvider::new(accounts)))
        .inline_feature(Arc::new(plugin.clone()))
        .build();
    Fixture {
        server: Arc::new(server),
        plugin,
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
    StreamInfo {
        domain: "example.com".into(),
        from: Some("alice@example.com".into()),
        tls: Some(TlsInfo {
            version: TlsVersion::Tls13,
            channel_bindings: ChannelBindings {
                tls_exporter: Some(vec![exporter_byte; 32]),
                tls_server_end_point: Some(vec![0xEE; 32]),
                tls_unique: None,
            },
        }),
        allow_plaintext: false,
        peer: None,
    }
}

fn authenticate(mech: &str, ir: &[u8], ua: Option<&str>, extra: Vec<Element>) -> Element {
    let mut a = Element::new("authenticate", NS_SASL2)
        .with_attr("mechanism", mech)
        .with_child(Element::new("initial-response", NS_SASL2).with_text(b64(ir)));
    if let Some(ua) = ua {
        a.push_child(
            Element::new("user-agent", NS_SASL2)
                .with_attr("id", ua)
                .with_child(Element::new("software", NS_SASL2).with_text("flow-tests")),
        );
    }
    for e in extra {
        a.push_child(e);
    }
    a
}

fn request_token(mech: &str) -> Element {
    Element::new("request-token", NS_FAST).with_attr("mechanism", mech)
}
fn fast() -> Element {
    Element::new("fast", NS_FAST)
}

fn success(ev: NegotiatorEvent) -> Element {
    match ev {
        NegotiatorEvent::Success { element, .. } => element,
        other => panic!("expected success, got {other:?}"),
    }
}

fn failure(ev: NegotiatorEvent) -> SaslCondition {
    match ev {
        NegotiatorEvent::Failure { condition, element } => {
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

#[test]
fn features_offer_fast_inside_inline_and_ht_nowhere_else() {
    let f = fixture();
    let s = tls13(1);
    let feats = f.server.features(&s);
    let auth = feats
        .iter()
        .find(|e| e.is("authentication", NS_SASL2))
        .unwrap();
    let top: Vec<String> = auth
        .children()
        .filter(|c| c.is("mechanism", NS_SASL2))
        .map(|c| c.text())
        .collect();
    assert_eq!(top, ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN"]);
    assert!(
        top.iter().all(|m| !m.starts_with("HT-")),
        "§3.2: HT only inside <fast>"
    );
    let fast = auth
        .get_child("inline", NS_SASL2)
        .and_then(|i| i.get_child("fast", NS_FAST))
        .expect("F-1");
    assert_eq!(fast.attr("tls-0rtt"), None, "F-6: 0-RTT is not offered");
    let mechs: Vec<String> = fast.children().map(|c| c.text()).collect();
    assert!(!mechs.is_empty(), "F-2");
    assert!(mechs.iter().any(|m| m.ends_with("-EXPR")), "F-4");
    assert!(mechs.iter().any(|m| m.ends_with("-NONE")), "F-5");
    assert!(
        mechs.iter().all(|m| !m.ends_with("-UNIQ")),
        "never UNIQ on TLS 1.3"
    );
    let cb = feats
        .iter()
        .find(|e| e.is("sasl-channel-binding", NS_SASL_CB))
        .expect("S-6");
    let types: Vec<_> = cb.children().filter_map(|c| c.attr("type")).collect();
    assert_eq!(types, ["tls-exporter", "tls-server-end-point"]);

    // Without an exporter (e.g. TLS 1.2 without EMS) no EXPR and no tls-exporter claim.
    let mut s12 = tls13(1);
    s12.tls.as_mut().unwrap().version = TlsVersion::Tls12;
    s12.tls.as_mut().unwrap().channel_bindings.tls_exporter = None;
    let feats = f.server.features(&s12);
    let xml = feats.iter().map(|e| e.to_xml()).collect::<String>();
    assert!(
        !xml.contains("EXPR") && !xml.contains("tls-exporter"),
        "{xml}"
    );
    assert!(xml.contains("HT-SHA-256-ENDP"));

    // S-26: nothing on a plaintext stream.
    let mut plain = tls13(1);
    plain.tls = None;
    assert!(f.server.features(&plain).is_empty());
}

#[tokio::test]
async fn password_login_with_request_token_issues_a_durable_token() {
    let f = fixture();
    let s = password_login(&f, tls13(1), vec![request_token("HT-SHA-256-NONE")]).await;
    // S-16 and §9 item 14: authorization-identifier before extension results.
    let names: Vec<_> = s.children().map(|c| c.name().to_owned()).collect();
    assert_eq!(names, ["authorization-identifier", "token"]);
    assert_eq!(
        s.get_child("authorization-identifier", NS_SASL2)
            .unwrap()
            .text(),
        "alice@example.com"
    );
    let (token, expiry) = token_of(&s).unwrap();
    // H-9: >= 256 bits from the CSPRNG, printable, RFC 8959 prefix.
    assert!(token.starts_with("secret-token:fast-"));
    assert!(token.len() >= "secret-token:fast-".len() + 43);
    // F-11: XEP-0082 expiry, token_ttl (21 d) after issue.
    assert_eq!(expiry.len(), 20);
    assert!(expiry.ends_with('Z'));
    assert_eq!(
        expiry,
        sasl2_fast::fast::clock::xep0082(T0 + 21 * 86400 * 1000)
    );
    // The record is in the store before <success> exists.
    let key = ClientKey::new("alice", UA).unwrap();
    let rec = f.plugin.tokens().store().get(&key).await.unwrap().unwrap();
    assert!(
        rec.value.new.is_some() && rec.value.current.is_none(),
        "F-17: issued into `new`"
    );
    assert_eq!(f.events.take(), ["issued HT-SHA-256-NONE"]);
}

#[tokio::test]
async fn scram_success_puts_additional_data_first() {
    use sasl::client::Mechanism as _;
    use sasl::client::mechanisms::Scram;
    use sasl::common::scram::Sha256;
    use sasl::common::{ChannelBinding, Credentials};
    let f = fixture();
    let mut n = Negotiator::new(f.server.clone(), tls13(1));
    let creds = Credentials::default()
        .with_username("alice")
        .with_password("alicepass")
        .with_channel_binding(ChannelBinding::None);
    let mut client = Scram::<Sha256>::from_credentials(creds).unwrap();
    let first = client.initial();
    let ch = match n
        .handle(authenticate(
            "SCRAM-SHA-256",
            &first,
            Some(UA),
            vec![request_token("HT-SHA-256-EXPR")],
        ))
        .await
    {
        NegotiatorEvent::Challenge(c) => unb64(&c.text()),
        other => panic!("{other:?}"),
    };
    let resp = client.response(&ch).unwrap();
    let s = success(
        n.handle(Element::new("response", NS_SASL2).with_text(b64(&resp)))
            .await,
    );
    let names: Vec<_> = s.children().map(|c| c.name().to_owned()).collect();
    assert_eq!(
        names,
        ["additional-data", "authorization-identifier", "token"]
    );
    let v = unb64(&s.get_child("additional-data", NS_SASL2).unwrap().text());
    client
        .success(&v)
        .expect("the server proved it knows the password");
}

#[tokio::test]
async fn no_token_without_user_agent_or_for_a_mechanism_not_offered() {
    let f = fixture();
    // §9 item 7: no user-agent id -> success without a token.
    let mut n = Negotiator::new(f.server.clone(), tls13(1));
    let s = success(
        n.handle(authenticate(
            "PLAIN",
            b"\0alice\0alicepass",
            None,
            vec![request_token("HT-SHA-256-NONE")],
        ))
        .await,
    );
    assert!(token_of(&s).is_none());
    // §9 item 8: UNIQ is never offered on TLS 1.3, unknown names neither.
    for m in ["HT-SHA-256-UNIQ", "HT-MD5-NONE", ""] {
        let s = password_login(&f, tls13(1), vec![request_token(m)]).await;
        assert!(token_of(&s).is_none(), "{m}");
    }
    // EXPR requested on a stream without exporter: not offered there, so no token.
    let mut s12 = tls13(1);
    s12.tls.as_mut().unwrap().channel_bindings.tls_exporter = None;
    let s = password_login(&f, s12, vec![request_token("HT-SHA-256-EXPR")]).await;
    assert!(token_of(&s).is_none());
}

#[tokio::test]
async fn every_offered_mechanism_logs_in_in_one_round_trip_with_the_server_proof() {
    let f = fixture();
    let s = tls13(9);
    for m in f.plugin.offered(&s) {
        let token = get_token(&f, s.clone(), m.name()).await;
        let ev = fast_login(&f, &s, m.name(), &token, vec![]).await;
        // F-3: success at once, no challenge.
        let el = success(ev);
        let ad = unb64(&el.get_child("additional-data", NS_SASL2).unwrap().text());
        // H-7 / S-17: additional-data is HMAC(token, "Responder" || cb).
        assert_eq!(
            ad,
            m.responder_mac(token.as_bytes(), m.cb_data(&s).unwrap()),
            "{m}"
        );
    }
}

#[tokio::test]
async fn token_is_pinned_to_its_mechanism() {
    // F-15 / N1: a token for EXPR used through NONE fails although the HMAC would verify.
    let f = fixture();
    let s = tls13(1);
    let token = get_token(&f, s.clone(), "HT-SHA-256-EXPR").await;
    let ev = fast_login(&f, &s, "HT-SHA-256-NONE", &token, vec![]).await;
    assert_eq!(failure(ev), SaslCondition::NotAuthorized);
    let ev = fast_login(&f, &s, "HT-SHA-512-EXPR", &token, vec![]).await;
    assert_eq!(failure(ev), SaslCondition::NotAuthorized);
    success(fast_login(&f, &s, "HT-SHA-256-EXPR", &token, vec![]).await);
}

#[tokio::test]
async fn expr_mac_does_not_verify_on_another_connection() {
    // N2: the exporter differs per TLS connection, so a captured EXPR message is useless.
    let f = fixture();
    let a = tls13(1);
    let b = tls13(2);
    let token = get_token(&f, a.clone(), "HT-SHA-256-EXPR").await;
    let msg = ht("HT-SHA-256-EXPR", "alice", &token, &a);
    let mut n = Negotiator::new(f.server.clone(), b.clone());
    let ev = n
        .handle(authenticate(
            "HT-SHA-256-EXPR",
            &msg,
            Some(UA),
            vec![fast()],
        ))
        .await;
    assert_eq!(failure(ev), SaslCondition::NotAuthorized);
    let mut n = Negotiator::new(f.server.clone(), a.clone());
    success(
        n.handle(authenticate(
            "HT-SHA-256-EXPR",
            &msg,
            Some(UA),
            vec![fast()],
        ))
        .await,
    );
}

#[tokio::test]
async fn failed_fast_attempt_processes_nothing_and_allows_a_password_retry() {
    let f = fixture();
    let s = tls13(1);
    let _ = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    f.events.take();
    let mut n = Negotiator::new(f.server.clone(), s.clone());
    let wrong = ht("HT-SHA-256-NONE", "alice", "secret-token:fast-wrong", &s);
    let bind = Element::new("bind", NS_BIND2);
    let ev = n
        .handle(authenticate(
            "HT-SHA-256-NONE",
            &wrong,
            Some(UA),
            vec![fast(), bind.clone(), request_token("HT-SHA-256-NONE")],
        ))
        .await;
    assert_eq!(failure(ev), SaslCondition::NotAuthorized);
    // S-22: the <request-token> of the failed attempt was not acted on.
    assert_eq!(f.events.take(), ["rejected unknown-token"]);
    // §9 item 12 / F-28: the stream stays usable for a password login (Prosody's old bug).
    let s2 = success(
        n.handle(authenticate(
            "PLAIN",
            b"\0alice\0alicepass",
            Some(UA),
            vec![request_token("HT-SHA-256-NONE")],
        ))
        .await,
    );
    assert!(token_of(&s2).is_some());
}

#[tokio::test]
async fn unknown_user_and_user_agent_get_not_authorized() {
    let f = fixture();
    let s = tls13(1);
    let token = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    let mut n = Negotiator::new(f.server.clone(), s.clone());
    let ev = n
        .handle(authenticate(
            "HT-SHA-256-NONE",
            &ht("HT-SHA-256-NONE", "bob", &token, &s),
            Some(UA),
            vec![fast()],
        ))
        .await;
    assert_eq!(failure(ev), SaslCondition::NotAuthorized);
    let ev = n
        .handle(authenticate(
            "HT-SHA-256-NONE",
            &ht("HT-SHA-256-NONE", "alice", &token, &s),
            Some("other-client"),
            vec![fast()],
        ))
        .await;
    assert_eq!(failure(ev), SaslCondition::NotAuthorized);
}

#[tokio::test]
async fn authcid_may_be_a_bare_jid_of_this_domain_only() {
    // §9 item 13.
    let f = fixture();
    let s = tls13(1);
    let token = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    for (authcid, ok) in [
        ("alice@example.com", true),
        ("Alice", true),
        ("alice@evil.example", false),
    ] {
        let mut n = Negotiator::new(f.server.clone(), s.clone());
        let ev = n
            .handle(authenticate(
                "HT-SHA-256-NONE",
                &ht("HT-SHA-256-NONE", authcid, &token, &s),
                Some(UA),
                vec![fast()],
            ))
            .await;
        assert_eq!(
            matches!(ev, NegotiatorEvent::Success { .. }),
            ok,
            "{authcid}"
        );
    }
}

#[tokio::test]
async fn expired_token_gets_credentials_expired_every_time() {
    // F-28.
    let f = fixture();
    let s = tls13(1);
    let token = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    f.clock.advance(Duration::from_secs(21 * 86400));
    for _ in 0..2 {
        let ev = fast_login(&f, &s, "HT-SHA-256-NONE", &token, vec![]).await;
        assert_eq!(failure(ev), SaslCondition::CredentialsExpired);
    }
}

#[tokio::test]
async fn rotation_keeps_the_old_token_until_the_new_one_is_used() {
    let f = fixture();
    let s = tls13(1);
    let t1 = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    f.events.take();
    // Younger than token_min_ttl: no rotation.
    f.clock.advance(Duration::from_secs(3600));
    let el = success(fast_login(&f, &s, "HT-SHA-256-NONE", &t1, vec![]).await);
    assert!(token_of(&el).is_none());
    // First use of `new` promotes it.
    assert_eq!(
        f.events.take(),
        ["promoted HT-SHA-256-NONE", "used HT-SHA-256-NONE"]
    );

    // F-16: older than token_min_ttl -> a new token, bound to the mechanism just used.
    f.clock.advance(Duration::from_secs(86400));
    let el = success(fast_login(&f, &s, "HT-SHA-256-NONE", &t1, vec![]).await);
    let (t2, _) = token_of(&el).expect("rotated");
    assert_ne!(t1, t2);
    assert_eq!(
        f.events.take(),
        ["used HT-SHA-256-NONE", "rotated HT-SHA-256-NONE"]
    );
    // F-17: the old token still works (the <success> might have been lost) ...
    f.clock.advance(Duration::from_secs(60));
    let el = success(fast_login(&f, &s, "HT-SHA-256-NONE", &t1, vec![]).await);
    // ... and since it is still old, the rotation is issued again, replacing the unused one (F-19).
    let (t3, _) = token_of(&el).expect("rotated again");
    let ev = fast_login(&f, &s, "HT-SHA-256-NONE", &t2, vec![]).await;
    assert_eq!(
        failure(ev),
        SaslCondition::NotAuthorized,
        "F-19: unused t2 was replaced"
    );
    // F-18: using t3 kills t1.
    let el = success(fast_login(&f, &s, "HT-SHA-256-NONE", &t3, vec![]).await);
    assert!(token_of(&el).is_none(), "t3 is fresh");
    let ev = fast_login(&f, &s, "HT-SHA-256-NONE", &t1, vec![]).await;
    assert_eq!(failure(ev), SaslCondition::NotAuthorized, "F-18");
}

#[tokio::test]
async fn a_second_password_login_replaces_an_unused_token() {
    // F-19.
    let f = fixture();
    let s = tls13(1);
    let a = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    let b = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    assert_eq!(
        failure(fast_login(&f, &s, "HT-SHA-256-NONE", &a, vec![]).await),
        SaslCondition::NotAuthorized
    );
    success(fast_login(&f, &s, "HT-SHA-256-NONE", &b, vec![]).await);
}

#[tokio::test]
async fn invalidate_logs_the_client_out_and_issues_nothing_unless_asked() {
    let f = fixture();
    let s = tls13(1);
    let t = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    f.clock.advance(Duration::from_secs(2 * 86400)); // rotation would be due
    let inv = || Element::new("fast", NS_FAST).with_attr("invalidate", "true");
    let mut n = Negotiator::new(f.server.clone(), s.clone());
    let el = success(
        n.handle(authenticate(
            "HT-SHA-256-NONE",
            &ht("HT-SHA-256-NONE", "alice", &t, &s),
            Some(UA),
            vec![inv()],
        ))
        .await,
    );
    // F-22: no token although rotation was due.
    assert!(token_of(&el).is_none());
    // F-21: the token is gone.
    assert_eq!(
        failure(fast_login(&f, &s, "HT-SHA-256-NONE", &t, vec![]).await),
        SaslCondition::NotAuthorized
    );

    // With <request-token>, invalidation still returns a new token (F-22 exception).
    let t = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    let mut n = Negotiator::new(f.server.clone(), s.clone());
    let el = success(
        n.handle(authenticate(
            "HT-SHA-256-NONE",
            &ht("HT-SHA-256-NONE", "alice", &t, &s),
            Some(UA),
            vec![
                Element::new("fast", NS_FAST).with_attr("invalidate", "1"),
                request_token("HT-SHA-256-NONE"),
            ],
        ))
        .await,
    );
    let (fresh, _) = token_of(&el).expect("requested");
    assert_eq!(
        failure(fast_login(&f, &s, "HT-SHA-256-NONE", &t, vec![]).await),
        SaslCondition::NotAuthorized
    );
    success(fast_login(&f, &s, "HT-SHA-256-NONE", &fresh, vec![]).await);
}

#[tokio::test]
async fn invalidate_with_the_new_token_also_kills_current() {
    // §9 item 9: Prosody leaves `current` alive here; we remove both slots.
    let f = fixture();
    let s = tls13(1);
    let t1 = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    success(fast_login(&f, &s, "HT-SHA-256-NONE", &t1, vec![]).await); // promote t1
    f.clock.advance(Duration::from_secs(2 * 86400));
    let (t2, _) = token_of(&success(
        fast_login(&f, &s, "HT-SHA-256-NONE", &t1, vec![]).await,
    ))
    .unwrap();
    let mut n = Negotiator::new(f.server.clone(), s.clone());
    success(
        n.handle(authenticate(
            "HT-SHA-256-NONE",
            &ht("HT-SHA-256-NONE", "alice", &t2, &s),
            Some(UA),
            vec![Element::new("fast", NS_FAST).with_attr("invalidate", "true")],
        ))
        .await,
    );
    for t in [&t1, &t2] {
        assert_eq!(
            failure(fast_login(&f, &s, "HT-SHA-256-NONE", t, vec![]).await),
            SaslCondition::NotAuthorized
        );
    }
}

#[tokio::test]
async fn count_is_parsed_and_must_increase() {
    // F-13/F-14 and §9 item 3.
    let f = fixture();
    let s = tls13(1);
    let t = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    let with_count = |c: &str| vec![Element::new("fast", NS_FAST).with_attr("count", c)];
    let login = |extra: Vec<Element>| {
        let mut n = Negotiator::new(f.server.clone(), s.clone());
        let msg = ht("HT-SHA-256-NONE", "alice", &t, &s);
        async move {
            n.handle(authenticate("HT-SHA-256-NONE", &msg, Some(UA), extra))
                .await
        }
    };
    for bad in ["x", "-1", "1.5", ""] {
        assert_eq!(
            failure(login(with_count(bad)).await),
            SaslCondition::MalformedRequest,
            "{bad}"
        );
    }
    success(login(with_count("1")).await);
    success(login(with_count("5")).await);
    assert_eq!(
        failure(login(with_count("5")).await),
        SaslCondition::NotAuthorized,
        "replay"
    );
    assert_eq!(
        failure(login(with_count("3")).await),
        SaslCondition::NotAuthorized,
        "replay"
    );
    success(login(with_count("6")).await);
    for bad in ["maybe", "yes"] {
        let ev = login(vec![
            Element::new("fast", NS_FAST).with_attr("invalidate", bad),
        ])
        .await;
        assert_eq!(failure(ev), SaslCondition::MalformedRequest);
    }
}

#[tokio::test]
async fn password_change_revocation_answers_credentials_expired() {
    let f = fixture();
    let s = tls13(1);
    let t = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    f.clock.advance(Duration::from_secs(1));
    f.plugin.tokens().revoke_account("alice").await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            failure(fast_login(&f, &s, "HT-SHA-256-NONE", &t, vec![]).await),
            SaslCondition::CredentialsExpired
        );
    }
    // The next password login gets a token that works.
    f.clock.advance(Duration::from_secs(1));
    let t2 = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    success(fast_login(&f, &s, "HT-SHA-256-NONE", &t2, vec![]).await);

    // Per client.
    f.clock.advance(Duration::from_secs(1));
    assert!(
        f.plugin
            .tokens()
            .revoke_client(&ClientKey::new("alice", UA).unwrap())
            .await
            .unwrap()
    );
    assert_eq!(
        failure(fast_login(&f, &s, "HT-SHA-256-NONE", &t2, vec![]).await),
        SaslCondition::CredentialsExpired
    );

    // Everything issued before T.
    f.clock.advance(Duration::from_secs(1));
    let t3 = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    f.clock.advance(Duration::from_secs(1));
    f.plugin
        .tokens()
        .revoke_all_issued_before(f.clock_now())
        .await
        .unwrap();
    assert_eq!(
        failure(fast_login(&f, &s, "HT-SHA-256-NONE", &t3, vec![]).await),
        SaslCondition::CredentialsExpired
    );
}

impl Fixture {
    fn clock_now(&self) -> u64 {
        use sasl2_fast::fast::clock::Clock;
        self.clock.now_ms()
    }
}

#[tokio::test]
async fn chain_age_forces_a_password_login() {
    let config = FastConfig {
        token_max_chain_age: Some(Duration::from_secs(3 * 86400)),
        ..FastConfig::default()
    };
    let f = fixture_with(config, Arc::new(MemoryStore::new()), None);
    let s = tls13(1);
    let mut t = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    // Rotate daily: each token is fresh, but the chain started at the password login.
    for _ in 0..2 {
        f.clock.advance(Duration::from_secs(86400 + 60));
        let el = success(fast_login(&f, &s, "HT-SHA-256-NONE", &t, vec![]).await);
        t = token_of(&el).expect("rotated").0;
        success(fast_login(&f, &s, "HT-SHA-256-NONE", &t, vec![]).await);
    }
    f.clock.advance(Duration::from_secs(86400));
    assert_eq!(
        failure(fast_login(&f, &s, "HT-SHA-256-NONE", &t, vec![]).await),
        SaslCondition::CredentialsExpired
    );
}

#[tokio::test]
async fn clients_per_account_are_capped_dropping_the_least_recently_used() {
    let config = FastConfig {
        max_clients_per_account: 3,
        ..FastConfig::default()
    };
    let f = fixture_with(config, Arc::new(MemoryStore::new()), None);
    let s = tls13(1);
    let mut tokens = Vec::new();
    for i in 0..4 {
        f.clock.advance(Duration::from_secs(600));
        let ua = format!("client-{i}");
        let mut n = Negotiator::new(f.server.clone(), s.clone());
        let el = success(
            n.handle(authenticate(
                "PLAIN",
                b"\0alice\0alicepass",
                Some(&ua),
                vec![request_token("HT-SHA-256-NONE")],
            ))
            .await,
        );
        tokens.push((ua, token_of(&el).unwrap().0));
    }
    assert_eq!(f.plugin.tokens().clients("alice").await.unwrap().len(), 3);
    for (i, (ua, t)) in tokens.iter().enumerate() {
        let mut n = Negotiator::new(f.server.clone(), s.clone());
        let ev = n
            .handle(authenticate(
                "HT-SHA-256-NONE",
                &ht("HT-SHA-256-NONE", "alice", t, &s),
                Some(ua),
                vec![fast()],
            ))
            .await;
        assert_eq!(
            matches!(ev, NegotiatorEvent::Success { .. }),
            i != 0,
            "client {i}"
        );
    }
}

#[tokio::test]
async fn sweep_removes_only_expired_clients() {
    let f = fixture();
    let s = tls13(1);
    let _old = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    f.clock.advance(Duration::from_secs(10 * 86400));
    let mut n = Negotiator::new(f.server.clone(), s.clone());
    success(
        n.handle(authenticate(
            "PLAIN",
            b"\0alice\0alicepass",
            Some("second"),
            vec![request_token("HT-SHA-256-NONE")],
        ))
        .await,
    );
    f.events.take();
    f.clock.advance(Duration::from_secs(12 * 86400)); // first expired, second not
    assert_eq!(f.plugin.tokens().sweep_expired().await.unwrap(), 1);
    assert_eq!(f.events.take(), ["expired HT-SHA-256-NONE"]);
    assert_eq!(f.plugin.tokens().store().len().await.unwrap(), 1);
    assert_eq!(f.plugin.tokens().sweep_expired().await.unwrap(), 0);
}

#[tokio::test]
async fn request_rules_of_the_negotiator() {
    let f = fixture();
    let s = tls13(1);
    let token = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    let msg = ht("HT-SHA-256-NONE", "alice", &token, &s);
    let mut n = Negotiator::new(f.server.clone(), s.clone());
    // §4 step 2: <fast/> without user-agent id.
    assert_eq!(
        failure(
            n.handle(authenticate("HT-SHA-256-NONE", &msg, None, vec![fast()]))
                .await
        ),
        SaslCondition::MalformedRequest
    );
    // §9 item 5: HT without <fast/> is not a top-level mechanism.
    assert_eq!(
        failure(
            n.handle(authenticate("HT-SHA-256-NONE", &msg, Some(UA), vec![]))
                .await
        ),
        SaslCondition::InvalidMechanism
    );
    // Third failure closes the stream (RFC 6120 §6.4.5).
    match n
        .handle(authenticate(
            "SCRAM-SHA-1",
            b"n,,n=alice,r=abc",
            Some(UA),
            vec![],
        ))
        .await
    {
        NegotiatorEvent::StreamError {
            send: Some(f),
            condition,
            ..
        } => {
            assert!(f.get_child("invalid-mechanism", NS_SASL).is_some());
            assert_eq!(condition, "policy-violation");
        }
        other => panic!("{other:?}"),
    }

    let mut n = Negotiator::new(f.server.clone(), s.clone());
    // Bad base64.
    let bad = Element::new("authenticate", NS_SASL2)
        .with_attr("mechanism", "PLAIN")
        .with_child(Element::new("initial-response", NS_SASL2).with_text("!!!"));
    assert_eq!(
        failure(n.handle(bad).await),
        SaslCondition::IncorrectEncoding
    );
    // S-30: abort.
    match n.handle(Element::new("abort", NS_SASL2)).await {
        NegotiatorEvent::Failure { condition, .. } => assert_eq!(condition, SaslCondition::Aborted),
        other => panic!("{other:?}"),
    }
    // Success, then S-25: another <authenticate> is a stream error.
    success(
        n.handle(authenticate(
            "HT-SHA-256-NONE",
            &msg,
            Some(UA),
            vec![fast()],
        ))
        .await,
    );
    assert!(n.is_authenticated());
    assert!(matches!(
        n.handle(authenticate("PLAIN", b"\0alice\0alicepass", None, vec![]))
            .await,
        NegotiatorEvent::StreamError { .. }
    ));
}

#[tokio::test]
async fn success_debug_output_never_shows_the_token() {
    let f = fixture();
    let s = password_login(&f, tls13(1), vec![request_token("HT-SHA-256-NONE")]).await;
    let (token, _) = token_of(&s).unwrap();
    assert!(!format!("{s:?}").contains(&token));
    let rec = f
        .plugin
        .tokens()
        .store()
        .get(&ClientKey::new("alice", UA).unwrap())
        .await
        .unwrap();
    assert!(!format!("{rec:?}").contains(&token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_with_the_same_new_token_never_see_a_half_rotated_record() {
    let f = Arc::new(sled_fixture(FastConfig::default()));
    let s = tls13(1);
    let t = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let f = f.clone();
        let s = s.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            matches!(
                fast_login(&f, &s, "HT-SHA-256-NONE", &t, vec![]).await,
                NegotiatorEvent::Success { .. }
            )
        }));
    }
    for task in tasks {
        assert!(
            task.await.unwrap(),
            "every login with the valid token succeeds"
        );
    }
    let rec = f
        .plugin
        .tokens()
        .store()
        .get(&ClientKey::new("alice", UA).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        rec.value.current.is_some() && rec.value.new.is_none(),
        "promoted exactly once"
    );
    let promoted = f
        .events
        .take()
        .iter()
        .filter(|e| e.starts_with("promoted"))
        .count();
    assert_eq!(promoted, 1);
}

#[tokio::test]
async fn sled_store_keeps_tokens_across_reopen_and_never_holds_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    let token;
    {
        let store = SledStore::open(&path).unwrap();
        let f = fixture_with(FastConfig::default(), Arc::new(store), None);
        token = get_token(&f, tls13(1), "HT-SHA-256-NONE").await;
    }
    // Sealed at rest: no byte string of the token in the database files.
    let mut found = false;
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        let needle = &token.as_bytes()["secret-token:fast-".len()..];
        if bytes.windows(needle.len()).any(|w| w == needle) {
            found = true;
        }
    }
    assert!(!found, "the store must not contain a usable token");
    let store = SledStore::open(&path).unwrap();
    let f = fixture_with(FastConfig::default(), Arc::new(store), None);
    success(fast_login(&f, &tls13(1), "HT-SHA-256-NONE", &token, vec![]).await);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn metrics_observer_counts_each_event_kind() {
    use sasl2_fast::fast::hooks::{FastMetrics, RejectReason};
    use std::sync::atomic::Ordering;
    let metrics = Arc::new(FastMetrics::default());
    let accounts = Arc::new(MemoryAccounts::new());
    accounts.set_password("alice", "alicepass", 4096);
    let tokens = FastTokens::new(
        Arc::new(MemoryStore::new()),
        Pepper::from_bytes([1; 32]),
        FastConfig::default(),
    )
    .with_observer(metrics.clone());
    let plugin = FastPlugin::new(Arc::new(tokens));
    let server = Arc::new(
        Sasl2Server::builder()
            .mechanism(Arc::new(PlainProvider::new(accounts)))
            .inline_feature(Arc::new(plugin))
            .build(),
    );
    let f = Fixture {
        server,
        plugin: FastPlugin::new(Arc::new(FastTokens::new(
            Arc::new(MemoryStore::new()),
            Pepper::generate(),
            FastConfig::default(),
        ))),
        clock: Arc::new(ManualClock::new(T0)),
        events: Arc::default(),
        _dir: None,
    };
    let s = tls13(1);
    let t = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    success(fast_login(&f, &s, "HT-SHA-256-NONE", &t, vec![]).await);
    failure(fast_login(&f, &s, "HT-SHA-256-NONE", "secret-token:fast-nope", vec![]).await);
    assert_eq!(metrics.issued.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.promoted.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.used.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.rejected(RejectReason::UnknownToken), 1);
    assert!(metrics.summary().contains("issued=1"));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// Any initial-response bytes, mechanism name and FAST attributes give a defined answer:
    /// a failure with a condition (never a panic, never a success without the token).
    #[test]
    fn arbitrary_fast_requests_get_a_defined_answer(
        ir in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        mech in proptest::sample::select(vec!["HT-SHA-256-NONE", "HT-SHA-512-EXPR", "HT-SHA3-512-ENDP", "HT-SHA-256-UNIQ", "PLAIN", "X"]),
        count in proptest::option::of("[0-9a-z-]{0,12}"),
        invalidate in proptest::option::of("[a-z01]{0,6}"),
        ua in proptest::option::of(".{0,300}"),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let f = fixture();
            let mut fast = Element::new("fast", NS_FAST);
            if let Some(c) = &count { fast.set_attr("count", c.clone()); }
            if let Some(i) = &invalidate { fast.set_attr("invalidate", i.clone()); }
            let mut n = Negotiator::new(f.server.clone(), tls13(1));
            match n.handle(authenticate(mech, &ir, ua.as_deref(), vec![fast])).await {
                NegotiatorEvent::Failure { .. } => {}
                NegotiatorEvent::Success { .. } => {
                    // Only PLAIN with the right password can succeed here.
                    assert_eq!(mech, "PLAIN");
                    assert_eq!(&ir[..], b"\0alice\0alicepass");
                }
                other => panic!("{other:?}"),
            }
        });
    }
}

#[tokio::test]
async fn only_response_or_abort_during_an_exchange() {
    // S-13: during a SCRAM exchange a new <authenticate> closes the stream.
    let f = fixture();
    let mut n = Negotiator::new(f.server.clone(), tls13(1));
    let ev = n
        .handle(authenticate(
            "SCRAM-SHA-256",
            b"n,,n=alice,r=abcdefgh",
            Some(UA),
            vec![],
        ))
        .await;
    assert!(matches!(ev, NegotiatorEvent::Challenge(_)), "{ev:?}");
    match n
        .handle(authenticate(
            "PLAIN",
            b"\0alice\0alicepass",
            Some(UA),
            vec![],
        ))
        .await
    {
        NegotiatorEvent::StreamError { condition, .. } => assert_eq!(condition, "policy-violation"),
        other => panic!("{other:?}"),
    }
    // An unknown SASL2 element during an exchange is also a stream error.
    let mut n = Negotiator::new(f.server.clone(), tls13(1));
    n.handle(authenticate(
        "SCRAM-SHA-256",
        b"n,,n=alice,r=abcdefgh",
        Some(UA),
        vec![],
    ))
    .await;
    assert!(matches!(
        n.handle(Element::new("next", NS_SASL2)).await,
        NegotiatorEvent::StreamError { .. }
    ));
    // <abort> ends it politely (S-30) and a retry works.
    let mut n = Negotiator::new(f.server.clone(), tls13(1));
    n.handle(authenticate(
        "SCRAM-SHA-256",
        b"n,,n=alice,r=abcdefgh",
        Some(UA),
        vec![],
    ))
    .await;
    assert_eq!(
        failure(n.handle(Element::new("abort", NS_SASL2)).await),
        SaslCondition::Aborted
    );
    success(
        n.handle(authenticate(
            "PLAIN",
            b"\0alice\0alicepass",
            Some(UA),
            vec![],
        ))
        .await,
    );
}

#[test]
fn sasl2_is_not_offered_without_a_usable_mechanism() {
    // S-5: no mechanism, no <authentication>, even though FAST could advertise.
    let f = fixture();
    let server = Sasl2Server::builder()
        .inline_feature(Arc::new(f.plugin.clone()))
        .build();
    assert!(server.features(&tls13(1)).is_empty());
}

#[tokio::test]
async fn retries_on_one_stream_do_not_inherit_earlier_requests() {
    // Prosody kept `fast_token_request` for the whole stream, so a retry without
    // <request-token> still got a token, and a second FAST attempt on the same stream was
    // refused. Here every attempt stands alone.
    let f = fixture();
    let s = tls13(1);
    let token = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    let mut n = Negotiator::new(f.server.clone(), s.clone());
    let wrong = ht("HT-SHA-256-NONE", "alice", "secret-token:fast-wrong", &s);
    let ev = n
        .handle(authenticate(
            "HT-SHA-256-NONE",
            &wrong,
            Some(UA),
            vec![fast(), request_token("HT-SHA-256-NONE")],
        ))
        .await;
    assert_eq!(failure(ev), SaslCondition::NotAuthorized);
    // A second FAST attempt on the same stream works, and carries no token: the earlier
    // <request-token> belonged to the failed attempt.
    let el = success(
        n.handle(authenticate(
            "HT-SHA-256-NONE",
            &ht("HT-SHA-256-NONE", "alice", &token, &s),
            Some(UA),
            vec![fast()],
        ))
        .await,
    );
    assert!(token_of(&el).is_none());

    // Same for a password retry after a failed password attempt.
    let mut n = Negotiator::new(f.server.clone(), s.clone());
    let ev = n
        .handle(authenticate(
            "PLAIN",
            b"\0alice\0wrong",
            Some(UA),
            vec![request_token("HT-SHA-256-NONE")],
        ))
        .await;
    assert_eq!(failure(ev), SaslCondition::NotAuthorized);
    let el = success(
        n.handle(authenticate(
            "PLAIN",
            b"\0alice\0alicepass",
            Some(UA),
            vec![],
        ))
        .await,
    );
    assert!(token_of(&el).is_none());
}
