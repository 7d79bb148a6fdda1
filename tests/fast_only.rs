//! FAST without this crate's negotiator: a server that keeps its own SASL2 code (here
//! `OwnSasl2`, with its own PLAIN check and its own `<authenticate>` parsing over minidom) and
//! uses only the pieces of `sasl2_fast::fast::standalone`, the token authority
//! (`FastTokens`: revocation) and the observers. The store is sled on disk; the channel
//! bindings come from real TLS sessions (tokio-rustls over an in-memory pipe), the server's
//! through `sasl2_fast::rustls`, the client's computed on its own side.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sasl2_fast::fast::clock::ManualClock;
use sasl2_fast::fast::hooks::RejectReason;
use sasl2_fast::fast::standalone::{
    ClientLabels, FastOffer, FastRequest, failure_for, issue_token,
};
use sasl2_fast::fast::{FastConfig, FastMetrics, FastTokens, HtMechanism, Pepper, RevokedBy};
use sasl2_fast::minidom::Element;
use sasl2_fast::rustls::ChannelBindingSource;
use sasl2_fast::sasl2::{ChannelBindingType, Failure, SaslCondition, StreamInfo};
use sasl2_fast::store::sled_store::SledStore;
use sasl2_fast::xmpp::ns;
use sasl2_fast::xmpp_parsers::fast::{FastResponse, RequestToken, Token};
use sasl2_fast::xmpp_parsers::sasl2::{Authenticate, UserAgent};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

type TResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const UA: &str = "d4565fa7-4d72-4749-b3d3-740edbf87770";

/// A server's own SASL2 code with FAST added through the standalone pieces only.
struct OwnSasl2 {
    tokens: Arc<FastTokens>,
    passwords: HashMap<&'static str, &'static str>,
}

impl OwnSasl2 {
    /// `<authentication>` with its own mechanism list and FAST's `<fast>` inside `<inline>`.
    fn features(&self, offer: Option<&FastOffer>) -> Element {
        let mut inline = Element::builder("inline", ns::SASL2);
        if let Some(o) = offer {
            inline = inline.append(o.element());
        }
        Element::builder("authentication", ns::SASL2)
            .append(Element::builder("mechanism", ns::SASL2).append("PLAIN"))
            .append(inline)
            .build()
    }

    /// One `<authenticate>`: `<success>` or `<failure>`.
    async fn authenticate(
        &self,
        stream: &StreamInfo,
        offer: Option<&FastOffer>,
        el: &Element,
    ) -> Element {
        match self.try_authenticate(stream, offer, el).await {
            Ok(success) => success,
            Err(f) => f.to_sasl2(),
        }
    }

    async fn try_authenticate(
        &self,
        stream: &StreamInfo,
        offer: Option<&FastOffer>,
        el: &Element,
    ) -> Result<Element, Failure> {
        let mechanism = el.attr("mechanism").unwrap_or_default();
        let initial = el
            .get_child("initial-response", ns::SASL2)
            .map(|e| B64.decode(e.text()))
            .transpose()
            .map_err(|_| Failure::new(SaslCondition::IncorrectEncoding))?;
        let ua = el.get_child("user-agent", ns::SASL2);
        let ua_id = ua.and_then(|u| u.attr("id"));
        let labels = ClientLabels {
            software: ua
                .and_then(|u| u.get_child("software", ns::SASL2))
                .map(Element::text),
            device: ua
                .and_then(|u| u.get_child("device", ns::SASL2))
                .map(Element::text),
        };
        let requested = match (offer, el.get_child("request-token", ns::FAST)) {
            (Some(o), Some(r)) => o.requested(r),
            _ => None,
        };
        let mut success = Element::builder("success", ns::SASL2);
        let token = if let Some(fast) = el.get_child("fast", ns::FAST) {
            let offer = offer.ok_or(Failure::new(SaslCondition::MalformedRequest))?;
            let request = FastRequest {
                mechanism,
                user_agent_id: ua_id,
                fast,
            };
            let attempt = offer.claim(&request, stream)?;
            let login = attempt.verify(&self.tokens, initial.as_deref()).await?;
            success = success
                .append(
                    Element::builder("additional-data", ns::SASL2)
                        .append(B64.encode(login.additional_data())),
                )
                .append(
                    Element::builder("authorization-identifier", ns::SASL2)
                        .append(format!("{}@localhost", login.account())),
                );
            login.complete(&self.tokens, requested, &labels).await?
        } else if mechanism == "PLAIN" {
            // The server's own mechanism: authzid NUL authcid NUL password.
            let initial = initial.ok_or(Failure::new(SaslCondition::MalformedRequest))?;
            let parts: Vec<&[u8]> = initial.split(|b| *b == 0).collect();
            let [_, user, password] = parts[..] else {
                return Err(Failure::new(SaslCondition::MalformedRequest));
            };
            let user = std::str::from_utf8(user).unwrap_or_default();
            if self.passwords.get(user).map(|p| p.as_bytes()) != Some(password) {
                return Err(Failure::new(SaslCondition::NotAuthorized));
            }
            success = success.append(
                Element::builder("authorization-identifier", ns::SASL2)
                    .append(format!("{user}@localhost")),
            );
            match (requested, ua_id) {
                (Some(m), Some(id)) => issue_token(&self.tokens, user, id, m, &labels)
                    .await
                    .map_err(|_| Failure::new(SaslCondition::TemporaryAuthFailure))?,
                _ => None,
            }
        } else {
            return Err(Failure::new(SaslCondition::InvalidMechanism));
        };
        // F-11: the token is durable before it goes into <success>.
        Ok(match token {
            Some(t) => success.append(t).build(),
            None => success.build(),
        })
    }
}

/// One TLS 1.3 connection over an in-memory pipe: the server's TLS facts (from the library)
/// and the client's own `tls-exporter` and `tls-server-end-point`.
async fn tls_connection(
    acceptor: &tokio_rustls::TlsAcceptor,
    source: &ChannelBindingSource,
    cert: &CertificateDer<'static>,
) -> Result<(StreamInfo, Vec<u8>, Vec<u8>), Box<dyn std::error::Error + Send + Sync>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone())?;
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let (a, b) = tokio::io::duplex(64 * 1024);
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let (server, client) = tokio::join!(acceptor.accept(a), connector.connect(name, b));
    let (server, client) = (server?, client?);
    let stream = StreamInfo::new("localhost").with_tls(source.tls_info(server.get_ref().1));
    let exporter = client
        .get_ref()
        .1
        .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", Some(b""))?
        .to_vec();
    use sha2::Digest as _;
    let end_point = sha2::Sha256::digest(cert.as_ref()).to_vec();
    Ok((stream, exporter, end_point))
}

fn authenticate(mechanism: &str, initial: Vec<u8>, payloads: Vec<Element>) -> Element {
    authenticate_as(UA, mechanism, initial, payloads)
}

/// `<authenticate>` from the client with user-agent id `ua` (tokens belong to a client).
fn authenticate_as(ua: &str, mechanism: &str, initial: Vec<u8>, payloads: Vec<Element>) -> Element {
    Authenticate {
        mechanism: mechanism.into(),
        initial_response: Some(initial),
        user_agent: UserAgent {
            id: ua.parse().expect("uuid"),
            software: Some("Balcony".into()),
            device: Some("Juliet's phone".into()),
        },
        payloads,
    }
    .into()
}

/// Juliet's PLAIN login from the client `ua`, asking for a `mechanism` token.
fn password_login_asking_for(ua: &str, mechanism: HtMechanism) -> Element {
    let request: Element = RequestToken {
        mechanism: mechanism.name().into(),
    }
    .into();
    authenticate_as(
        ua,
        "PLAIN",
        b"\0juliet\0r0m30myr0m30".to_vec(),
        vec![request],
    )
}

fn condition(el: &Element) -> Option<&str> {
    (el.is("failure", ns::SASL2))
        .then(|| el.children().next().map(Element::name))
        .flatten()
}

fn token_of(success: &Element) -> Option<String> {
    let t = success.get_child("token", ns::FAST)?;
    Some(Token::try_from(t.clone()).ok()?.token)
}

/// A complete FAST life through the standalone calls alone: the offer in the server's own
/// features, a token after its own password login, a FAST login with the server's proof
/// checked, a replay on another connection refused, rotation, invalidation, revocation, and
/// every step reported to the observer.
#[tokio::test]
async fn fast_login_through_the_standalone_pieces_alone() -> TResult {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let events = Arc::new(FastMetrics::default());
    let config = FastConfig::default();
    let min_ttl = config.token_min_ttl;
    let tokens = FastTokens::new(
        Arc::new(SledStore::open(dir.path().join("fast-tokens"))?),
        Pepper::generate(),
        config.clone(),
    )
    .with_clock(clock.clone())
    .with_observer(events.clone());
    let server = OwnSasl2 {
        tokens: Arc::new(tokens),
        passwords: HashMap::from([("juliet", "r0m30myr0m30")]),
    };

    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let cert = generated.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let source = ChannelBindingSource::new(&cert);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(sasl2_fast::rustls::server_config(
        vec![cert.clone()],
        key,
    )?));

    // F-32: no FAST on a plaintext stream.
    assert_eq!(
        FastOffer::for_stream(&config, &StreamInfo::new("localhost")),
        None
    );
    let (stream, exporter, end_point) = tls_connection(&acceptor, &source, &cert).await?;
    let offer = FastOffer::for_stream(&config, &stream).ok_or("no FAST offer over TLS")?;
    let features = server.features(Some(&offer));
    let fast = features
        .get_child("inline", ns::SASL2)
        .and_then(|i| i.get_child("fast", ns::FAST))
        .ok_or("no <fast> in <inline>")?;
    let offered: Vec<String> = fast.children().map(Element::text).collect();
    for m in ["HT-SHA-256-EXPR", "HT-SHA-256-ENDP", "HT-SHA-256-NONE"] {
        assert!(offered.iter().any(|o| o == m), "{m} not in {offered:?}");
    }
    assert_eq!(
        offer.channel_binding_types(),
        [
            ChannelBindingType::TlsExporter,
            ChannelBindingType::TlsServerEndPoint
        ]
    );

    // The server's own password login asks for an EXPR token.
    let expr = HtMechanism::from_name("HT-SHA-256-EXPR").ok_or("EXPR")?;
    let ok = server
        .authenticate(&stream, Some(&offer), &password_login_asking_for(UA, expr))
        .await;
    let t1 = token_of(&ok).ok_or("no token after the password login")?;
    assert_eq!(events.issued.load(Ordering::Relaxed), 1);

    // FAST with that token, bound to this TLS session; the server's proof is checked.
    // `count` goes up with every attempt of this client, as XEP-0484 asks (F-13).
    let count = std::cell::Cell::new(0);
    let fast_login = |token: &str, invalidate: bool, exporter: &[u8]| {
        count.set(count.get() + 1);
        authenticate(
            expr.name(),
            expr.initiator_message("juliet", token.as_bytes(), exporter),
            vec![
                FastResponse {
                    count: count.get(),
                    invalidate,
                }
                .into(),
            ],
        )
    };
    let ok = server
        .authenticate(&stream, Some(&offer), &fast_login(&t1, false, &exporter))
        .await;
    assert!(ok.is("success", ns::SASL2), "{:?}", condition(&ok));
    let proof = B64.decode(
        ok.get_child("additional-data", ns::SASL2)
            .ok_or("no proof")?
            .text(),
    )?;
    assert_eq!(
        proof,
        expr.responder_mac(t1.as_bytes(), &exporter),
        "server proof"
    );
    assert_eq!(token_of(&ok), None, "a fresh token is not rotated");

    // The same message on another TLS connection: another exporter, refused (channel binding).
    let (other, other_exporter, _) = tls_connection(&acceptor, &source, &cert).await?;
    assert_ne!(other_exporter, exporter);
    let replay = server
        .authenticate(&other, Some(&offer), &fast_login(&t1, false, &exporter))
        .await;
    assert_eq!(condition(&replay), Some("not-authorized"));
    // ENDP binds to the certificate: the client's own hash of it works on any connection
    // (a second client of the account: tokens belong to a user-agent id).
    const PHONE: &str = "0f0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d";
    let endp = HtMechanism::from_name("HT-SHA-256-ENDP").ok_or("ENDP")?;
    let ok = server
        .authenticate(
            &other,
            Some(&offer),
            &password_login_asking_for(PHONE, endp),
        )
        .await;
    let e1 = token_of(&ok).ok_or("no ENDP token")?;
    let msg = authenticate_as(
        PHONE,
        endp.name(),
        endp.initiator_message("juliet", e1.as_bytes(), &end_point),
        vec![
            FastResponse {
                count: 1,
                invalidate: false,
            }
            .into(),
        ],
    );
    let ok = server.authenticate(&stream, Some(&offer), &msg).await;
    assert!(ok.is("success", ns::SASL2), "{:?}", condition(&ok));

    // Rotation after token_min_ttl (F-16): the old token works until the new one is used.
    clock.advance(min_ttl + Duration::from_secs(1));
    let ok = server
        .authenticate(&stream, Some(&offer), &fast_login(&t1, false, &exporter))
        .await;
    let t2 = token_of(&ok).ok_or_else(|| {
        format!(
            "no rotated token: {:?}",
            condition(&ok)
                .map(str::to_owned)
                .or(Some(ok.name().to_owned()))
        )
    })?;
    assert_ne!(t2, t1);
    let ok = server
        .authenticate(&stream, Some(&offer), &fast_login(&t2, false, &exporter))
        .await;
    assert!(ok.is("success", ns::SASL2), "{:?}", condition(&ok));
    let old = server
        .authenticate(&stream, Some(&offer), &fast_login(&t1, false, &exporter))
        .await;
    assert_eq!(condition(&old), Some("not-authorized"));

    // Invalidation (F-21, F-22): success without a token, then the token is dead.
    let ok = server
        .authenticate(&stream, Some(&offer), &fast_login(&t2, true, &exporter))
        .await;
    assert!(ok.is("success", ns::SASL2) && token_of(&ok).is_none());
    let dead = server
        .authenticate(&stream, Some(&offer), &fast_login(&t2, false, &exporter))
        .await;
    assert!(matches!(
        condition(&dead),
        Some("not-authorized" | "credentials-expired")
    ));

    // Revocation (a password change): credentials-expired (F-28).
    let ok = server
        .authenticate(&stream, Some(&offer), &password_login_asking_for(UA, expr))
        .await;
    let t3 = token_of(&ok).ok_or("no token")?;
    clock.advance(Duration::from_secs(1));
    server
        .tokens
        .revoke_account("juliet", &RevokedBy::PasswordChange)
        .await?;
    let revoked = server
        .authenticate(&stream, Some(&offer), &fast_login(&t3, false, &exporter))
        .await;
    assert_eq!(condition(&revoked), Some("credentials-expired"));
    assert_eq!(
        failure_for(RejectReason::Revoked).condition,
        SaslCondition::CredentialsExpired
    );

    // No user-agent id: malformed-request before any store read (F-25).
    let fast_el: Element = FastResponse {
        count: 1,
        invalidate: false,
    }
    .into();
    let no_ua = FastRequest {
        mechanism: expr.name(),
        user_agent_id: None,
        fast: &fast_el,
    };
    let f = offer
        .claim(&no_ua, &stream)
        .err()
        .ok_or("claimed without a user-agent id")?;
    assert_eq!(f.condition, SaslCondition::MalformedRequest);

    // The events, as an observer of the standalone path sees them.
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    assert_eq!(n(&events.issued), 3, "{}", events.summary());
    assert_eq!(n(&events.rotated), 1, "{}", events.summary());
    assert_eq!(n(&events.promoted), 3, "{}", events.summary());
    assert_eq!(n(&events.invalidated), 1, "{}", events.summary());
    assert_eq!(n(&events.revoked), 1, "{}", events.summary());
    assert_eq!(n(&events.used), 5, "{}", events.summary());
    assert_eq!(
        events.rejected(RejectReason::UnknownToken),
        3,
        "{}",
        events.summary()
    );
    assert_eq!(
        events.rejected(RejectReason::Revoked),
        1,
        "{}",
        events.summary()
    );
    Ok(())
}
