//! What FAST needs from TLS, over the host's real listeners: no FAST without TLS (F-32, H-2),
//! channel bindings advertised exactly as the connection defines them and bound to on TLS 1.3
//! and TLS 1.2 alike (CB-1..CB-4, CB-6), and no TLS 1.2 without extended master secret (H-12).
//! Rule ids are in docs/protocol.md; the sans-IO side is `tests/fast_flows/features.rs`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sasl2_fast::xmpp::{Redacted, ns};
use sasl2_fast_host::client::{Client, ClientError, LoginOptions, Tls};
use sasl2_fast_host::harness::TestHost;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;

type TResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const UA: &str = "5e0c7a2b-9d41-4f6e-8a3c-2b1d0e9f8a77";
const EXPR: &str = "HT-SHA-256-EXPR";
const ENDP: &str = "HT-SHA-256-ENDP";
const NONE: &str = "HT-SHA-256-NONE";

async fn bounded(secs: u64, f: impl Future<Output = TResult>) -> TResult {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .map_err(|_| format!("test did not finish within {secs} s"))?
}

/// A rustls client config trusting `ca_pem` that speaks only `version`.
fn client_config(
    ca_pem: &[u8],
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Alice's password login on `c` asking for a token for `mechanism`; the token.
async fn password_token(
    c: &mut Client,
    mechanism: &str,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let success = c
        .login_plain(
            "alice",
            "alicepass",
            &LoginOptions::agent(UA).request_token(mechanism),
        )
        .await?
        .into_success()?;
    Ok(success.token.ok_or("no token")?.token)
}

/// Alice over STARTTLS, pinned to one TLS version.
async fn connect(
    t: &TestHost,
    version: &'static rustls::SupportedProtocolVersion,
) -> Result<Client, ClientError> {
    let mut opts = t.opts(Tls::StartTls, Some("alice@localhost"))?;
    opts.tls_config = Some(client_config(&opts.ca_pem, version));
    let c = Client::connect(opts).await?;
    assert_eq!(c.tls_version, Some(version.version));
    Ok(c)
}

/// The `type`s of `<sasl-channel-binding>` in the client's features, in order.
fn advertised_bindings(c: &Client) -> Vec<String> {
    c.features
        .as_ref()
        .and_then(|f| f.get_child("sasl-channel-binding", ns::SASL_CB))
        .map(|l| {
            l.children()
                .filter_map(|b| b.attr("type").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// CB-1, CB-2, CB-4, CB-6 (the server's side), and CB-3 with H-12 on TLS 1.2: on TLS 1.3 and
/// on TLS 1.2 (which this host speaks only with extended master secret) the host advertises
/// `tls-exporter` and `tls-server-end-point` and nothing else, exactly the two the client
/// computes from its own session (no `tls-unique`: undefined on TLS 1.3, and rustls does not
/// expose it on TLS 1.2); FAST offers `-EXPR` and `-ENDP` and no `-UNIQ`; and the host binds
/// to them: an EXPR and an ENDP FAST login and a SCRAM-SHA-256-PLUS login succeed, each with
/// the server's proof over this connection's bytes checked by the client (on TLS 1.2 the
/// exporter with an empty context differs from one without, so the host must use RFC 9266's
/// form).
#[tokio::test]
async fn each_tls_version_advertises_exactly_what_it_binds() -> TResult {
    bounded(90, async {
        let t = TestHost::start(TestHost::config()).await?;
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let mut c = connect(&t, version).await?;
            let computed: Vec<&str> = [
                c.cb.tls_exporter.as_ref().map(|_| "tls-exporter"),
                c.cb.tls_server_end_point
                    .as_ref()
                    .map(|_| "tls-server-end-point"),
            ]
            .into_iter()
            .flatten()
            .collect();
            assert_eq!(computed, ["tls-exporter", "tls-server-end-point"]);
            assert_eq!(advertised_bindings(&c), computed, "{:?}", version.version);
            let fast = c.fast_mechanisms();
            assert!(fast.iter().any(|m| m == EXPR), "{fast:?}");
            assert!(fast.iter().any(|m| m == ENDP), "{fast:?}");
            assert!(!fast.iter().any(|m| m.ends_with("-UNIQ")), "{fast:?}");

            for mech in [EXPR, ENDP] {
                let token = password_token(&mut c, mech).await?;
                c.close().await?;
                c = connect(&t, version).await?;
                // login_fast checks the responder MAC over this session's bytes (H-7).
                c.login_fast("alice", &token, mech, &LoginOptions::agent(UA))
                    .await?
                    .into_success()?;
                c.close().await?;
                c = connect(&t, version).await?;
            }
            // SCRAM-SHA-256-PLUS binds to tls-exporter; the server signature covers it.
            c.login_scram(
                "alice",
                "alicepass",
                "SCRAM-SHA-256-PLUS",
                &LoginOptions::agent(UA),
            )
            .await?
            .into_success()?;
            c.close().await?;
        }
        t.shutdown().await;
        Ok(())
    })
    .await
}

/// A TLS 1.2 ClientHello (no `supported_versions`, so TLS 1.2 is all it offers) that offers
/// extended master secret (RFC 7627) only if `ems`. rustls' client always offers it, so this
/// one is written out by hand: ECDHE with AES-128-GCM for ECDSA and RSA certificates, X25519
/// and P-256, uncompressed points, SHA-256 signatures, secure renegotiation, SNI `localhost`.
fn tls12_client_hello(ems: bool) -> Vec<u8> {
    fn extension(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
        out.extend(kind.to_be_bytes());
        out.extend((body.len() as u16).to_be_bytes());
        out.extend(body);
    }
    let name = b"localhost";
    let mut sni = Vec::new();
    sni.extend(((name.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend((name.len() as u16).to_be_bytes());
    sni.extend(name);
    let mut extensions = Vec::new();
    extension(&mut extensions, 0x0000, &sni);
    extension(&mut extensions, 0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]);
    extension(&mut extensions, 0x000b, &[1, 0]);
    extension(
        &mut extensions,
        0x000d,
        &[0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01],
    );
    extension(&mut extensions, 0xff01, &[0]);
    if ems {
        extension(&mut extensions, 0x0017, &[]);
    }
    let mut hello = vec![0x03, 0x03];
    hello.extend([0x5a; 32]); // random
    hello.push(0); // no session id
    hello.extend([0, 4, 0xc0, 0x2b, 0xc0, 0x2f]); // cipher suites
    hello.extend([1, 0]); // compression: none
    hello.extend((extensions.len() as u16).to_be_bytes());
    hello.extend(extensions);
    let mut handshake = vec![0x01];
    handshake.extend(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

/// Sends `hello` to the direct-TLS port and returns the first TLS record of the answer
/// (content type and body), or `None` if the host closed without one.
async fn first_record(t: &TestHost, hello: &[u8]) -> Result<Option<(u8, Vec<u8>)>, ClientError> {
    let addr = t
        .host
        .tls_local_addr()
        .ok_or_else(|| ClientError::Protocol("no direct TLS listener".into()))?;
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(hello).await?;
    let mut header = [0u8; 5];
    if tcp.read_exact(&mut header).await.is_err() {
        return Ok(None);
    }
    let mut body = vec![0u8; usize::from(u16::from_be_bytes([header[3], header[4]]))];
    tcp.read_exact(&mut body).await?;
    Ok(Some((header[0], body)))
}

/// H-12: HT needs extended master secret on TLS 1.2 (or, -09 only, no resumption). The host
/// sets rustls' `require_ems`, so a TLS 1.2 client that does not offer it gets a fatal
/// `handshake_failure` alert in answer to its ClientHello: no TLS session, so no stream and no
/// HT (nor `tls-exporter`, CB-3) can exist without it. The same hello with the extension gets
/// a ServerHello. (TLS 1.3 always binds its keys to the handshake transcript.)
#[tokio::test]
async fn tls12_without_extended_master_secret_is_refused() -> TResult {
    bounded(30, async {
        let t = TestHost::start(TestHost::config()).await?;
        let (kind, body) = first_record(&t, &tls12_client_hello(true))
            .await?
            .ok_or("no answer to a ClientHello with EMS")?;
        assert_eq!((kind, body.first()), (0x16, Some(&0x02)), "ServerHello");

        let (kind, body) = first_record(&t, &tls12_client_hello(false))
            .await?
            .ok_or("closed without an alert")?;
        assert_eq!(kind, 0x15, "no EMS: an alert, not a handshake record");
        // Level 2 (fatal), description 40 (handshake_failure).
        assert_eq!(body, [2, 40], "no EMS: handshake_failure");
        t.shutdown().await;
        Ok(())
    })
    .await
}

/// F-32, H-2: on a plaintext stream the host offers no FAST (no SASL2 at all, only the
/// required STARTTLS), and neither an HT `<authenticate>` with `<fast/>` nor a password login
/// with `<request-token>` is accepted: each gets `encryption-required`. The token, obtained
/// over TLS, still works there afterwards.
#[tokio::test]
async fn fast_is_neither_offered_nor_accepted_on_a_plaintext_stream() -> TResult {
    bounded(30, async {
        let t = TestHost::start(TestHost::config()).await?;
        let mut c = connect(&t, &rustls::version::TLS13).await?;
        let token = password_token(&mut c, NONE).await?;
        c.close().await?;

        let mut p = t.connect(Tls::None, Some("alice@localhost")).await?;
        let features = p.features.clone().ok_or("no features")?;
        assert!(features.get_child("starttls", ns::TLS).is_some());
        assert!(
            features.get_child("authentication", ns::SASL2).is_none(),
            "{:?}",
            Redacted(&features)
        );
        assert!(p.fast_mechanisms().is_empty());
        let ht = p.fast_initial_response("alice", &token, NONE)?;
        let attempts = [
            Client::authenticate_element(NONE, Some(&ht), &LoginOptions::agent(UA), true),
            Client::authenticate_element(
                "PLAIN",
                Some(b"\0alice\0alicepass"),
                &LoginOptions::agent(UA).request_token(NONE),
                false,
            ),
        ];
        for auth in &attempts {
            p.send(auth).await?;
            let answer = p.recv().await?;
            assert!(answer.is("failure", ns::SASL2), "{:?}", Redacted(&answer));
            assert!(
                answer.get_child("encryption-required", ns::SASL).is_some(),
                "{:?}",
                Redacted(&answer)
            );
        }

        let mut c = connect(&t, &rustls::version::TLS13).await?;
        c.login_fast("alice", &token, NONE, &LoginOptions::agent(UA))
            .await?
            .into_success()?;
        c.close().await?;
        t.shutdown().await;
        Ok(())
    })
    .await
}
