//! Embedding the plugin the way an xmpp-rs server would (issue 8 item 5): the host side only
//! speaks minidom and xmpp-parsers. It builds `<authenticate>` with
//! `xmpp_parsers::sasl2::Authenticate`, drives the negotiator through a SCRAM password login
//! that asks for a token, then a FAST login with that token, and reads every `<success>` back
//! with `xmpp_parsers::sasl2::Success` and `xmpp_parsers::fast::Token`. No conversion code:
//! the negotiator takes and returns `minidom::Element`s.
//!
//! The client half (SCRAM from the independent `sasl` crate, the HT MAC) is what a real client
//! computes; it is not part of the host.

use std::sync::Arc;

use sasl::client::Mechanism as _;
use sasl2_fast::fast::{FastConfig, FastPlugin, FastTokens, HtMechanism, Pepper};
use sasl2_fast::minidom::Element;
use sasl2_fast::sasl2::accounts::MemoryAccounts;
use sasl2_fast::sasl2::bind2::Bind2;
use sasl2_fast::sasl2::scram::ScramProvider;
use sasl2_fast::sasl2::{
    ChannelBindings, Negotiator, NegotiatorEvent, Sasl2Server, ScramHash, StreamInfo, TlsInfo,
    TlsVersion,
};
use sasl2_fast::store::memory::MemoryStore;
use sasl2_fast::xmpp_parsers::bind2::{BindQuery, Bound};
use sasl2_fast::xmpp_parsers::fast::{FastQuery, FastResponse, RequestToken, Token};
use sasl2_fast::xmpp_parsers::ns;
use sasl2_fast::xmpp_parsers::sasl2::{
    Authenticate, Authentication, Challenge, Response, Success, UserAgent,
};
use sasl2_fast::xmpp_parsers::stream_features::StreamFeatures;

const UA: &str = "d4565fa7-4d72-4749-b3d3-740edbf87770";

fn server() -> Arc<Sasl2Server> {
    let accounts = Arc::new(MemoryAccounts::new());
    accounts.set_password("juliet", "r0m30myr0m30", 4096);
    let tokens = FastTokens::new(
        Arc::new(MemoryStore::new()),
        Pepper::from_bytes([3; 32]),
        FastConfig::default(),
    );
    Arc::new(
        Sasl2Server::builder()
            // No -PLUS is registered, so a client's `y` GS2 flag is no downgrade.
            .mechanism(Arc::new(
                ScramProvider::new(ScramHash::Sha256, false, accounts).with_plus_offered(false),
            ))
            .inline_feature(Arc::new(Bind2::new()))
            .inline_feature(Arc::new(FastPlugin::new(Arc::new(tokens))))
            .build(),
    )
}

/// What a host knows after its TLS handshake (synthetic exporter bytes here; the TCP tests use
/// a real session's).
fn stream() -> StreamInfo {
    StreamInfo::new("capulet.example").with_tls(TlsInfo::new(
        TlsVersion::Tls13,
        ChannelBindings::none().with_tls_exporter([9u8; 32]),
    ))
}

fn user_agent() -> UserAgent {
    UserAgent {
        id: UA.parse().unwrap(),
        software: Some("xmpp-rs embedding test".into()),
        device: None,
    }
}

fn success(ev: NegotiatorEvent) -> Success {
    match ev {
        NegotiatorEvent::Success { element, .. } => Success::try_from(element).unwrap(),
        other => panic!("expected success, got {other:?}"),
    }
}

fn token_in(s: &Success) -> Option<Token> {
    s.payloads
        .iter()
        .find(|p| p.is("token", ns::FAST))
        .map(|p| Token::try_from(p.clone()).unwrap())
}

#[tokio::test]
async fn an_xmpp_rs_host_logs_in_with_a_password_then_with_fast() {
    let server = server();

    // --- Stream 1: features, then SCRAM-SHA-256 with <request-token> and Bind 2.
    let mut negotiator = Negotiator::new(server.clone(), stream());
    let mut features = Element::builder("features", ns::STREAM).build();
    for f in negotiator.features() {
        features.append_child(f);
    }
    let features = StreamFeatures::try_from(features).unwrap();
    let auth: Authentication = features.sasl2.expect("SASL2 offered");
    assert_eq!(auth.mechanisms, ["SCRAM-SHA-256"]);
    let inline = auth.inline.expect("inline features");
    assert!(inline.bind2.is_some(), "B-1: Bind 2 inside <inline>");
    let fast = inline
        .payloads
        .iter()
        .find(|p| p.is("fast", ns::FAST))
        .map(|p| FastQuery::try_from(p.clone()).unwrap())
        .expect("F-1: <fast> inside <inline>");
    let mechanism = "HT-SHA-256-EXPR";
    assert!(fast.mechanisms.iter().any(|m| m.0 == mechanism));
    assert!(!fast.tls_0rtt, "F-6: no 0-RTT advertised");

    let mut scram =
        sasl::client::mechanisms::Scram::<sasl::common::scram::Sha256>::from_credentials(
            sasl::common::Credentials::default()
                .with_username("juliet")
                .with_password("r0m30myr0m30"),
        )
        .unwrap();
    let authenticate = Authenticate {
        mechanism: "SCRAM-SHA-256".into(),
        initial_response: Some(scram.initial()),
        user_agent: user_agent(),
        payloads: vec![
            Element::from(BindQuery {
                tag: Some("balcony".into()),
                payloads: vec![],
            }),
            Element::from(RequestToken {
                mechanism: mechanism.into(),
            }),
        ],
    };
    let challenge = match negotiator.handle(Element::from(authenticate)).await {
        NegotiatorEvent::Challenge(c) => Challenge::try_from(c).unwrap(),
        other => panic!("expected a challenge, got {other:?}"),
    };
    let response = Response {
        sasl_data: scram.response(&challenge.sasl_data).unwrap(),
    };
    let s = success(negotiator.handle(Element::from(response)).await);
    scram
        .success(s.additional_data.as_deref().unwrap())
        .expect("the server signature verifies");
    let full = s
        .authorization_identifier
        .try_as_full()
        .expect("B-10: a full JID after Bind 2");
    assert!(
        full.resource().as_str().starts_with("balcony."),
        "B-9: tag as prefix"
    );
    assert!(
        s.payloads
            .iter()
            .any(|p| Bound::try_from(p.clone()).is_ok())
    );
    let token = token_in(&s).expect("F-9: a token in <success>");
    assert!(token.token.starts_with("secret-token:fast-"));

    // --- Stream 2: FAST with that token, one round trip.
    let mut negotiator = Negotiator::new(server, stream());
    let m = HtMechanism::from_name(mechanism).unwrap();
    let initial = m.initiator_message("juliet", token.token.as_bytes(), &[9u8; 32]);
    let authenticate = Authenticate {
        mechanism: mechanism.into(),
        initial_response: Some(initial),
        user_agent: user_agent(),
        // xmpp-parsers' FastResponse requires `count`; this host's client sends one.
        payloads: vec![Element::from(FastResponse {
            count: 1,
            invalidate: false,
        })],
    };
    let s = success(negotiator.handle(Element::from(authenticate)).await);
    assert_eq!(
        s.additional_data.as_deref(),
        Some(
            m.responder_mac(token.token.as_bytes(), &[9u8; 32])
                .as_slice()
        ),
        "the server proves it holds the token"
    );
    assert_eq!(
        s.authorization_identifier.to_string(),
        "juliet@capulet.example"
    );
    assert!(token_in(&s).is_none(), "no rotation on a fresh token");
}
