//! Where xmpp-parsers 0.23 is stricter than the clients in the wild or than the XEPs, the
//! crate parses (or builds) over minidom instead. One test per gap: the first half pins what
//! xmpp-parsers does today, naming the client that sends the input and the xmpp-parsers field;
//! when upstream relaxes, that half fails and the workaround can go. The second half checks
//! what this crate does with the same input. Where xmpp-parsers and a rule of protocol.md
//! disagree, the rule wins (its id is cited).

use std::sync::Arc;

use sasl2_fast::fast::{FastConfig, FastPlugin, FastTokens, HtMechanism, Pepper};
use sasl2_fast::minidom::Element;
use sasl2_fast::sasl2::accounts::MemoryAccounts;
use sasl2_fast::sasl2::plain::PlainProvider;
use sasl2_fast::sasl2::scram::ScramProvider;
use sasl2_fast::sasl2::{
    ChannelBindings, Negotiator, NegotiatorEvent, Sasl2Server, SaslCondition, ScramHash,
    StreamInfo, TlsInfo, TlsVersion,
};
use sasl2_fast::store::memory::MemoryStore;
use sasl2_fast::xmpp::ns;
use sasl2_fast::xmpp_parsers;

fn parse(xml: &str) -> Element {
    xml.parse().unwrap()
}

fn server(rfc6120: bool) -> (Arc<Sasl2Server>, Arc<FastTokens>) {
    let accounts = Arc::new(MemoryAccounts::new());
    accounts.set_password("user", "pencil", 64);
    let tokens = Arc::new(FastTokens::new(
        Arc::new(MemoryStore::new()),
        Pepper::from_bytes([1; 32]),
        FastConfig::default(),
    ));
    let server = Sasl2Server::builder()
        .rfc6120_sasl(rfc6120)
        .mechanism(Arc::new(ScramProvider::new(
            ScramHash::Sha256,
            false,
            accounts.clone(),
        )))
        .mechanism(Arc::new(PlainProvider::new(accounts)))
        .inline_feature(Arc::new(FastPlugin::new(tokens.clone())))
        .build();
    (Arc::new(server), tokens)
}

fn stream() -> StreamInfo {
    StreamInfo::new("example.com")
        .with_tls(TlsInfo::new(TlsVersion::Tls13, ChannelBindings::none()))
}

/// `\0user\0pencil` in base64.
const PLAIN_IR: &str = "AHVzZXIAcGVuY2ls";

fn success_of(ev: NegotiatorEvent) -> Element {
    match ev {
        NegotiatorEvent::Success { element, .. } => element,
        other => panic!("expected success, got {other:?}"),
    }
}

/// nbxmpp (Gajim) sends `<authenticate>` without `<user-agent>`; XEP-0388 makes it optional
/// (S-11, protocol.md §9 item 18). xmpp-parsers: `Authenticate::user_agent` is mandatory.
#[tokio::test]
async fn authenticate_without_user_agent() {
    let xml = format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>{PLAIN_IR}</initial-response></authenticate>"
    );
    let err = xmpp_parsers::sasl2::Authenticate::try_from(parse(&xml)).unwrap_err();
    assert!(err.to_string().contains("user_agent"), "{err}");

    let (server, _) = server(false);
    let mut n = Negotiator::new(server, stream());
    let s = success_of(n.handle(parse(&xml)).await);
    assert!(s.is("success", ns::SASL2));
}

/// Smack sends `<user-agent id='smack-client-instance'>`, not a UUID. xmpp-parsers:
/// `UserAgent::id` is a `uuid::Uuid`. FAST still works for it (tokens are per id; the id is
/// hashed, never parsed).
#[tokio::test]
async fn user_agent_id_that_is_not_a_uuid() {
    let xml = format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>{PLAIN_IR}</initial-response>\
         <user-agent id='smack-client-instance'><software>Smack</software></user-agent>\
         <request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/></authenticate>"
    );
    let err = xmpp_parsers::sasl2::Authenticate::try_from(parse(&xml)).unwrap_err();
    assert!(err.to_string().contains("id"), "{err}");

    let (server, _) = server(false);
    let mut n = Negotiator::new(server.clone(), stream());
    let s = success_of(n.handle(parse(&xml)).await);
    let token = s
        .get_child("token", ns::FAST)
        .expect("F-9: a token for Smack's id");
    let token = token.attr("token").unwrap().to_owned();

    // The FAST login with that id, and `<fast/>` without `count` as Smack may send it.
    let m = HtMechanism::from_name("HT-SHA-256-NONE").unwrap();
    let ir = base64_encode(&m.initiator_message("user", token.as_bytes(), &[]));
    let xml = format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-NONE'><initial-response>{ir}</initial-response>\
         <user-agent id='smack-client-instance'/><fast xmlns='urn:xmpp:fast:0'/></authenticate>"
    );
    let mut n = Negotiator::new(server, stream());
    success_of(n.handle(parse(&xml)).await);
}

/// Conversations and xmpp.js send `<fast xmlns='urn:xmpp:fast:0'/>` without `count`, which
/// XEP-0484 only requires in TLS 0-RTT (F-13). xmpp-parsers: `FastResponse::count` is
/// mandatory.
#[tokio::test]
async fn fast_without_count() {
    let err = xmpp_parsers::fast::FastResponse::try_from(parse("<fast xmlns='urn:xmpp:fast:0'/>"))
        .unwrap_err();
    assert!(err.to_string().contains("count"), "{err}");

    // The plugin claims it: an HT attempt with a wrong token answers not-authorized, not a
    // parse error or an invalid-mechanism.
    let (server, _) = server(false);
    let mut n = Negotiator::new(server, stream());
    let ir = base64_encode(&[b"user\0".as_slice(), &[7u8; 32]].concat());
    let xml = format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-NONE'><initial-response>{ir}</initial-response>\
         <user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'/><fast xmlns='urn:xmpp:fast:0'/></authenticate>"
    );
    match n.handle(parse(&xml)).await {
        NegotiatorEvent::Failure { failure, .. } => {
            assert_eq!(failure.condition, SaslCondition::NotAuthorized)
        }
        other => panic!("{other:?}"),
    }
}

/// A mechanism without success data (PLAIN): XEP-0388 says an absent `<additional-data>` means
/// "no data" and `<additional-data/>` means "empty data" (S-8). xmpp-parsers writes
/// `<additional-data/>` for `Success { additional_data: None }`.
#[tokio::test]
async fn success_without_additional_data() {
    let s = xmpp_parsers::sasl2::Success {
        additional_data: None,
        authorization_identifier: "user@example.com".parse().unwrap(),
        payloads: vec![],
    };
    let el = Element::from(s);
    assert!(el.get_child("additional-data", ns::SASL2).is_some());

    let (server, _) = server(false);
    let mut n = Negotiator::new(server, stream());
    let xml = format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>{PLAIN_IR}</initial-response></authenticate>"
    );
    let s = success_of(n.handle(parse(&xml)).await);
    assert!(s.get_child("additional-data", ns::SASL2).is_none(), "S-8");
    // And it still reads back with xmpp-parsers.
    let back = xmpp_parsers::sasl2::Success::try_from(s).unwrap();
    assert_eq!(
        back.authorization_identifier.to_string(),
        "user@example.com"
    );
}

/// The `<token>` of `<success>` carries its `expiry` in XEP-0082's UTC form, `...Z` (F-11), the
/// form clients parse. xmpp-parsers: `fast::Token::expiry` is a `date::DateTime`, which writes
/// `+00:00` (chrono's `to_rfc3339`), so the crate builds `<token>` over minidom.
#[tokio::test]
async fn token_expiry_is_written_in_the_z_form() {
    let theirs = Element::from(xmpp_parsers::fast::Token {
        token: "secret-token:fast-x".to_owned(),
        expiry: "2026-08-01T12:00:00Z".parse().unwrap(),
    });
    assert_eq!(theirs.attr("expiry"), Some("2026-08-01T12:00:00+00:00"));

    let (server, _) = server(false);
    let mut n = Negotiator::new(server, stream());
    let s = success_of(n.handle(plain_asking_for_a_token()).await);
    let token = s.get_child("token", ns::FAST).expect("a <token>");
    let expiry = token.attr("expiry").unwrap();
    // YYYY-MM-DDThh:mm:ssZ: UTC, `Z`, whole seconds, as written on the wire.
    assert_eq!(expiry.len(), 20, "{expiry}");
    assert!(expiry.ends_with('Z'), "{expiry}");
    let wire = sasl2_fast::stream::to_xml(&s);
    assert!(
        wire.contains(&format!(" expiry='{expiry}'")),
        "the written <success> carries the Z form"
    );
    // And it still reads back with xmpp-parsers.
    let back = xmpp_parsers::fast::Token::try_from(token.clone()).unwrap();
    assert_eq!(back.expiry, expiry.parse().unwrap());
}

/// RFC 6120 `<auth>` naming a mechanism outside xmpp-parsers' closed `sasl::Mechanism` enum
/// (here an HT name, which some clients try on servers without SASL2) must get
/// `invalid-mechanism` (RFC 6120 §6.4.4), not a parse error. xmpp-parsers: `Auth::mechanism`
/// is that enum.
#[tokio::test]
async fn rfc6120_auth_with_an_unknown_mechanism() {
    let xml =
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='HT-SHA-256-NONE'>AA==</auth>";
    assert!(xmpp_parsers::sasl::Auth::try_from(parse(xml)).is_err());

    let (server, _) = server(true);
    let mut n = Negotiator::new(server, stream());
    match n.handle(parse(xml)).await {
        NegotiatorEvent::Failure { element, failure } => {
            assert_eq!(failure.condition, SaslCondition::InvalidMechanism);
            assert!(element.is("failure", ns::SASL));
        }
        other => panic!("{other:?}"),
    }
}

/// RFC 6120 §6.3.3: the `<mechanisms>` list is in order of preference. xmpp-parsers keeps
/// `StreamFeatures::sasl_mechanisms` in a `BTreeSet`, which sorts it; the negotiator builds
/// the list itself, strongest first.
#[test]
fn rfc6120_mechanisms_keep_their_order() {
    let (server, _) = server(true);
    let n = Negotiator::new(server, stream());
    let list = n
        .features()
        .into_iter()
        .find(|f| f.is("mechanisms", ns::SASL))
        .expect("RFC 6120 <mechanisms> offered");
    let names: Vec<String> = list.children().map(|m| m.text()).collect();
    assert_eq!(names, ["SCRAM-SHA-256", "PLAIN"]);
    let mut features = Element::bare("features", ns::STREAM);
    features.append_child(list);
    let parsed = xmpp_parsers::stream_features::StreamFeatures::try_from(features).unwrap();
    let sorted: Vec<String> = parsed.sasl_mechanisms.into_iter().collect();
    assert_eq!(sorted, ["PLAIN", "SCRAM-SHA-256"], "xmpp-parsers sorts");
}

/// S-21: a SASL2 `<failure>` holds the RFC 6120 condition, then `<text>` (XEP-0388's
/// examples). xmpp-parsers' `sasl2::Failure` has no condition field and writes `<text>` before
/// its payloads; xmpp.js (`XMPPError.fromElement`) reads the first child as the condition, so
/// it reported a failure as "text". The crate builds the element itself.
#[test]
fn sasl2_failure_writes_the_condition_first() {
    use sasl2_fast::sasl2::Failure;
    use xmpp_parsers::sasl::DefinedCondition;
    let upstream = Element::from(xmpp_parsers::sasl2::Failure {
        text: Some("token expired".into()),
        payloads: vec![Element::from(DefinedCondition::CredentialsExpired)],
    });
    let first = upstream.children().next().map(|c| c.name().to_owned());
    assert_eq!(
        first.as_deref(),
        Some("text"),
        "xmpp-parsers writes <text> first"
    );

    let ours = Failure::with_text(SaslCondition::CredentialsExpired, "token expired").to_sasl2();
    let names: Vec<&str> = ours.children().map(Element::name).collect();
    assert_eq!(names, ["credentials-expired", "text"]);
    // xmpp-parsers still reads ours.
    let parsed = xmpp_parsers::sasl2::Failure::try_from(ours).unwrap();
    assert_eq!(parsed.text.as_deref(), Some("token expired"));
}

/// S-8: clients should not, but may, line-wrap base64; the negotiator strips whitespace. This
/// pins whether xmpp-parsers' `sasl2::Response` accepts it.
#[tokio::test]
async fn base64_with_whitespace() {
    let r = xmpp_parsers::sasl2::Response::try_from(parse(
        "<response xmlns='urn:xmpp:sasl:2'>YW\n Jj</response>",
    ));
    assert!(
        r.is_err(),
        "xmpp-parsers rejects whitespace in base64 ({r:?})"
    );

    let (server, _) = server(false);
    let mut n = Negotiator::new(server, stream());
    let wrapped = format!("{}\n  {}", &PLAIN_IR[..8], &PLAIN_IR[8..]);
    let xml = format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>{wrapped}</initial-response></authenticate>"
    );
    success_of(n.handle(parse(&xml)).await);
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Not a gap but a cost: the stream features (`<authentication>`, FAST's `<fast>` inside
/// `<inline>`, XEP-0440 `<sasl-channel-binding>`) and `<success>` are built with minidom's
/// builder, because converting the xmpp-parsers values runs through xso's event stream and
/// cost several times as much per stream (see `benches/fast.rs`, `login_in_process`). This
/// pins that xmpp-parsers reads what the crate writes as the values it would have written
/// itself, so the shortcut never changes the wire.
#[tokio::test]
async fn features_parse_back_with_xmpp_parsers() {
    use xmpp_parsers::fast::{FastQuery, Mechanism as FastMechanism};
    use xmpp_parsers::sasl_cb::{SaslChannelBinding, Type};
    let (server, _) = server(false);
    let tls = StreamInfo::new("example.com").with_tls(TlsInfo::new(
        TlsVersion::Tls13,
        ChannelBindings::none().with_tls_exporter(vec![7; 32]),
    ));
    let n = Negotiator::new(server.clone(), tls);
    let features = n.features();
    let auth = xmpp_parsers::sasl2::Authentication::try_from(features[0].clone()).unwrap();
    assert_eq!(auth.mechanisms, ["SCRAM-SHA-256", "PLAIN"]);
    let inline = auth.inline.expect("<inline> with FAST");
    assert_eq!(inline.payloads.len(), 1);
    let fast = FastQuery::try_from(inline.payloads[0].clone()).unwrap();
    let offered: Vec<&str> = fast.mechanisms.iter().map(|m| m.0.as_str()).collect();
    assert!(offered.contains(&"HT-SHA-256-EXPR"), "{offered:?}");
    assert!(!fast.tls_0rtt, "F-6: no early data offered");
    // Element for element what xmpp-parsers writes, but for the optional tls-0rtt='false'.
    let mut theirs = Element::from(FastQuery {
        tls_0rtt: false,
        mechanisms: offered
            .iter()
            .map(|m| FastMechanism((*m).to_owned()))
            .collect(),
    });
    theirs
        .attrs_mut()
        .remove(&sasl2_fast::minidom::rxml::Namespace::NONE, "tls-0rtt");
    assert_eq!(inline.payloads[0], theirs);
    let cb = features
        .iter()
        .find(|f| f.is("sasl-channel-binding", ns::SASL_CB))
        .expect("XEP-0440 list: an EXPR mechanism is offered");
    let cb = SaslChannelBinding::try_from(cb.clone()).unwrap();
    assert_eq!(cb.types, [Type::TlsExporter]);

    // <success> with additional data (SCRAM's server signature) and the inline results.
    let mut n = Negotiator::new(server, stream());
    let s = success_of(n.handle(plain_asking_for_a_token()).await);
    let back = xmpp_parsers::sasl2::Success::try_from(s).unwrap();
    assert_eq!(
        back.authorization_identifier.to_string(),
        "user@example.com"
    );
    let token = xmpp_parsers::fast::Token::try_from(back.payloads[0].clone()).unwrap();
    assert!(!token.token.is_empty());
}

/// A SASL2 PLAIN login with a user agent that asks for an `HT-SHA-256-NONE` token.
fn plain_asking_for_a_token() -> Element {
    parse(&format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>{PLAIN_IR}</initial-response>\
         <user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'/>\
         <request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/></authenticate>"
    ))
}
