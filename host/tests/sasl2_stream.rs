//! The SASL2 and Bind 2 rules the example host keeps on a real stream (TCP, STARTTLS or direct
//! TLS, driven by the host crate's test client): what the stream `from` may change (S-1..S-3),
//! the bytes the host writes while authenticating and right after `<success>` (S-14, S-19,
//! S-20), where Bind 2 and legacy binding are offered (B-3), and the sessions binding creates
//! and replaces (B-7, B-8). The sans-IO side of these rules is in `tests/sasl2_offers.rs` and
//! `tests/sasl2_extensions.rs`.

use std::future::Future;
use std::time::Duration;

use sasl2_fast::minidom::Element;
use sasl2_fast::xmpp::ns;
use sasl2_fast_host::client::reader::{ClientEvent, ClientReader};
use sasl2_fast_host::client::{Client, ClientError, LoginOptions, Outcome, Tls, is_stream_error};
use sasl2_fast_host::harness::TestHost;

type TResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const ALICE: &str = "alice@localhost";
const UA: &str = "d4565fa7-4d72-4749-b3d3-740edbf87770";
const UA2: &str = "8b1c7e4e-0000-4000-8000-000000000002";
const EXPR: &str = "HT-SHA-256-EXPR";

async fn bounded(secs: u64, f: impl Future<Output = TResult>) -> TResult {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .map_err(|_| format!("test did not finish within {secs} s"))?
}

async fn host() -> Result<TestHost, Box<dyn std::error::Error + Send + Sync>> {
    TestHost::start(TestHost::config()).await
}

/// True if `el` or an element below it is in `namespace`.
fn has_ns_below(el: &Element, namespace: &str) -> bool {
    el.has_ns(namespace) || el.children().any(|c| has_ns_below(c, namespace))
}

/// S-2, S-4, S-29: the features are the same whether `from` names a known account, an unknown
/// one or nothing: the host never tailors the offer to the untrusted `from`, so it is stable
/// for a given `to`, `from` and encryption state and tells no one which accounts exist.
#[tokio::test]
async fn the_features_do_not_depend_on_the_stream_from() -> TResult {
    bounded(30, async {
        let t = host().await?;
        for tls in [Tls::StartTls, Tls::Direct] {
            let mut seen = Vec::new();
            for from in [Some(ALICE), Some("nobody@localhost"), None] {
                let c = t.connect(tls, from).await?;
                assert!(!c.mechanisms().is_empty(), "{tls:?} {from:?}");
                seen.push(c.features.clone().ok_or("no features")?);
            }
            assert!(
                seen.windows(2).all(|w| w[0] == w[1]),
                "{tls:?}: the features differ with `from`"
            );
        }
        t.shutdown().await;
        Ok(())
    })
    .await
}

/// S-1: every mechanism in the `<mechanism>` list can be used for the account in `from`: each
/// one logs alice in (the host keeps SCRAM-SHA-1 and SCRAM-SHA-256 keys for every account, and
/// PLAIN checks either).
#[tokio::test]
async fn every_offered_mechanism_logs_in_the_account_in_from() -> TResult {
    bounded(60, async {
        let t = host().await?;
        let offered = t.connect(Tls::StartTls, Some(ALICE)).await?.mechanisms();
        assert_eq!(
            offered,
            [
                "SCRAM-SHA-256-PLUS",
                "SCRAM-SHA-256",
                "SCRAM-SHA-1-PLUS",
                "SCRAM-SHA-1",
                "PLAIN"
            ]
        );
        for mech in &offered {
            let mut c = t.connect(Tls::StartTls, Some(ALICE)).await?;
            let opts = LoginOptions::agent(UA);
            let outcome = match mech.as_str() {
                "PLAIN" => c.login_plain("alice", "alicepass", &opts).await?,
                scram => c.login_scram("alice", "alicepass", scram, &opts).await?,
            };
            let s = outcome.into_success().map_err(|e| format!("{mech}: {e}"))?;
            assert_eq!(s.jid, ALICE, "{mech}");
        }
        t.shutdown().await;
        Ok(())
    })
    .await
}

/// S-3: a `from` of another domain (or no JID at all) is answered with the `invalid-from`
/// stream error, before any feature, and is never echoed as the stream's `to`.
#[tokio::test]
async fn a_from_of_another_domain_is_an_invalid_from_stream_error() -> TResult {
    bounded(30, async {
        let t = host().await?;
        for from in ["alice@example.org", "example.org", "alice@@localhost"] {
            // Direct TLS: the first stream header carries the `from`.
            let mut c = Client::establish(t.opts(Tls::Direct, Some(from))?).await?;
            c.open_stream().await?;
            match c.read_stream_start().await {
                Err(ClientError::StreamError { condition, .. }) => {
                    assert_eq!(condition, "invalid-from", "{from}")
                }
                other => panic!("{from}: expected invalid-from, got {:?}", other.map(|_| ())),
            }
            let header = c.header.as_ref().ok_or("no stream header")?;
            assert_eq!(header.attr("to"), None, "{from} echoed");
            // STARTTLS: already the plaintext header is refused.
            match t.connect(Tls::StartTls, Some(from)).await {
                Err(ClientError::StreamError { condition, .. }) => {
                    assert_eq!(condition, "invalid-from", "{from}")
                }
                other => panic!("{from}: expected invalid-from, got {:?}", other.map(|_| ())),
            }
        }
        // This domain's JIDs are welcome, and echoed.
        let c = t.connect(Tls::Direct, Some(ALICE)).await?;
        let header = c.header.as_ref().ok_or("no stream header")?;
        assert_eq!(header.attr("to"), Some(ALICE));
        t.shutdown().await;
        Ok(())
    })
    .await
}

/// The names of the top-level elements in `bytes`, a capture of the server's side of a stream
/// after its header, read with the client's own parser. A stream header in `bytes` (a restart)
/// is an error.
fn element_names(bytes: &[u8]) -> Result<Vec<String>, String> {
    let mut r = ClientReader::new();
    r.feed(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
    )?;
    match r.next_event()? {
        Some(ClientEvent::Header(_)) => {}
        _ => return Err("the reader did not take the opening header".into()),
    }
    r.feed(bytes)?;
    let mut names = Vec::new();
    while let Some(ev) = r.next_event()? {
        match ev {
            ClientEvent::Element(e) => names.push(e.name().to_owned()),
            ClientEvent::Header(_) => return Err("a new stream header".into()),
            ClientEvent::End => return Err("the stream ended".into()),
        }
    }
    Ok(names)
}

/// S-14: `bytes` are elements back to back: nothing before the first, after the last or
/// between two, whitespace included. (The capture may hold a token: offsets only, never
/// bytes, in the messages.)
fn assert_elements_only(bytes: &[u8], what: &str) {
    assert_eq!(
        bytes.first(),
        Some(&b'<'),
        "{what}: bytes before an element"
    );
    assert_eq!(
        bytes.last(),
        Some(&b'>'),
        "{what}: bytes after the last element"
    );
    let ws_next_to_tag = bytes.windows(2).position(|w| {
        (w[0] == b'>' && w[1].is_ascii_whitespace()) || (w[0].is_ascii_whitespace() && w[1] == b'<')
    });
    assert_eq!(
        ws_next_to_tag, None,
        "{what}: whitespace between elements at this offset"
    );
}

/// S-14: while authentication is in progress the host writes only challenges and the
/// completion element, and no whitespace: a SCRAM exchange gets exactly `<challenge>` then
/// `<success>` (or `<failure>`), a FAST login exactly `<success>`, each followed only by what
/// S-20 requires.
#[tokio::test]
async fn only_challenges_and_completion_elements_while_authenticating() -> TResult {
    bounded(30, async {
        let t = host().await?;
        let mut c = t.connect(Tls::StartTls, Some(ALICE)).await?;
        c.capture_received();
        let o = c
            .login_scram(
                "alice",
                "wrong",
                "SCRAM-SHA-256-PLUS",
                &LoginOptions::agent(UA),
            )
            .await?;
        assert!(
            matches!(o, Outcome::Failure(_)),
            "a wrong password logged in"
        );
        let failed = c.take_received();
        assert_eq!(element_names(&failed)?, ["challenge", "failure"]);
        assert_elements_only(&failed, "SCRAM failure");

        // A retry on the same stream, which also asks for a token for the FAST login below.
        let s = c
            .login_scram(
                "alice",
                "alicepass",
                "SCRAM-SHA-256-PLUS",
                &LoginOptions::agent(UA).request_token(EXPR),
            )
            .await?
            .into_success()?;
        let scram = c.take_received();
        assert_eq!(element_names(&scram)?, ["challenge", "success", "features"]);
        assert_elements_only(&scram, "SCRAM success");

        let token = s.token.ok_or("no token")?.token;
        let mut c = t.connect(Tls::StartTls, Some(ALICE)).await?;
        c.capture_received();
        c.login_fast("alice", &token, EXPR, &LoginOptions::agent(UA))
            .await?
            .into_success()?;
        let fast = c.take_received();
        assert_eq!(element_names(&fast)?, ["success", "features"]);
        assert_elements_only(&fast, "FAST success");
        t.shutdown().await;
        Ok(())
    })
    .await
}

/// S-20: `</success>` is immediately followed by `<stream:features>` on the same stream: no
/// new stream header, and the client sends none. S-19: none of the host's mechanisms (PLAIN,
/// SCRAM, HT) negotiates a SASL security layer, so the stream goes on unchanged after
/// `</success>`: plain XML in the same TLS session, answered without any restart.
#[tokio::test]
async fn success_is_followed_at_once_by_features_on_the_same_stream() -> TResult {
    bounded(30, async {
        let t = host().await?;
        for tls in [Tls::StartTls, Tls::Direct] {
            let mut c = t.connect(tls, Some(ALICE)).await?;
            c.capture_received();
            c.login_scram(
                "alice",
                "alicepass",
                "SCRAM-SHA-256-PLUS",
                &LoginOptions::agent(UA).bind("wire"),
            )
            .await?
            .into_success()?;
            let bytes = c.take_received();
            const END: &[u8] = b"</success>";
            let end = bytes
                .windows(END.len())
                .position(|w| w == END)
                .ok_or("no </success>")?
                + END.len();
            assert!(
                bytes[end..].starts_with(b"<stream:features"),
                "{tls:?}: not features next"
            );
            let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
            assert!(
                !has(b"<stream:stream") && !has(b"<?xml"),
                "{tls:?}: a stream header after <success>"
            );
            // The client goes on without a header of its own; the host answers in the same
            // stream.
            c.ping().await?;
            let after = c.take_received();
            assert_eq!(element_names(&after)?, ["iq"]);
        }
        t.shutdown().await;
        Ok(())
    })
    .await
}

/// B-3: Bind 2 is offered only inside SASL2's `<inline>` (never on the pre-TLS stream, where
/// SASL2 is not offered, nor as a stream feature of its own), and legacy resource binding is
/// offered beside it: after a SASL2 login without `<bind>`, the features offer RFC 6120 binding,
/// which then works.
#[tokio::test]
async fn bind2_only_inside_sasl2_and_legacy_binding_beside_it() -> TResult {
    bounded(30, async {
        let t = host().await?;
        let mut c = t.connect(Tls::StartTls, Some(ALICE)).await?;
        let pre = c.pre_tls_features.as_ref().ok_or("no pre-TLS features")?;
        assert!(pre.get_child("authentication", ns::SASL2).is_none());
        assert!(!has_ns_below(pre, ns::BIND2), "Bind 2 before TLS");
        let features = c.features.as_ref().ok_or("no features")?;
        assert!(
            features
                .children()
                .all(|f| !has_ns_below(f, ns::BIND2) || f.is("authentication", ns::SASL2)),
            "Bind 2 outside <authentication>"
        );
        let inline = features
            .get_child("authentication", ns::SASL2)
            .and_then(|a| a.get_child("inline", ns::SASL2))
            .ok_or("no <inline>")?;
        assert!(inline.get_child("bind", ns::BIND2).is_some(), "B-1");
        assert!(features.get_child("bind", ns::BIND).is_none());

        let s = c
            .login_plain("alice", "alicepass", &LoginOptions::agent(UA))
            .await?
            .into_success()?;
        let after = s.features.as_ref().ok_or("no features after <success>")?;
        assert!(
            after.get_child("bind", ns::BIND).is_some(),
            "no legacy bind"
        );
        let jid = c.bind(Some("legacy")).await?;
        assert_eq!(jid, "alice@localhost/legacy");
        c.ping().await?;

        // Bound through Bind 2: legacy binding is not offered again.
        let mut c = t.connect(Tls::StartTls, Some(ALICE)).await?;
        let s = c
            .login_plain("alice", "alicepass", &LoginOptions::agent(UA2).bind("b2"))
            .await?
            .into_success()?;
        let after = s.features.as_ref().ok_or("no features after <success>")?;
        assert!(after.get_child("bind", ns::BIND).is_none());
        t.shutdown().await;
        Ok(())
    })
    .await
}

/// B-7: Bind 2 generates a resource (the client's tag as its prefix) and the host binds it:
/// stanzas reach it. B-8: once a session is bound, the earlier session of the same client (same
/// user-agent id) ends with the `conflict` stream error; another client's session stays.
#[tokio::test]
async fn binding_replaces_the_earlier_session_of_the_same_client() -> TResult {
    bounded(30, async {
        let t = host().await?;
        let login = |ua: &'static str, tag: &'static str| {
            let t = &t;
            async move {
                let mut c = t.connect(Tls::StartTls, Some(ALICE)).await?;
                let s = c
                    .login_plain("alice", "alicepass", &LoginOptions::agent(ua).bind(tag))
                    .await?
                    .into_success()?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>((c, s.jid))
            }
        };
        let (mut phone, phone_jid) = login(UA, "phone").await?;
        let (mut laptop, laptop_jid) = login(UA2, "laptop").await?;
        assert!(
            phone_jid.starts_with("alice@localhost/phone."),
            "{phone_jid}"
        );
        assert!(
            laptop_jid.starts_with("alice@localhost/laptop."),
            "{laptop_jid}"
        );
        phone.ping().await?;

        // The phone's client logs in again (e.g. after a network change).
        let (mut again, again_jid) = login(UA, "phone").await?;
        assert_ne!(again_jid, phone_jid, "B-7: a fresh resource");
        let e = phone.recv_any().await?;
        assert!(
            is_stream_error(&e, "conflict"),
            "the old session was not closed"
        );
        laptop
            .send_message(&again_jid, "to the new session")
            .await?;
        let m = again.recv_message().await?;
        assert_eq!(m.attr("from"), Some(laptop_jid.as_str()));
        laptop.ping().await?;
        t.shutdown().await;
        Ok(())
    })
    .await
}
