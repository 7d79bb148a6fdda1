//! FAST in TLS 1.3 0-RTT over real TLS (issue 13 item 3; rules Z-1..Z-8, docs/protocol.md
//! §5.8): a resuming client sends its stream header and FAST `<authenticate>` as early data on
//! the direct-TLS port (`tls_early_data = true`).
//!
//! "Taken from early data" is asserted on both ends: the client's rustls says the server
//! accepted its early data, and the host counts the login as one whose `<authenticate>` came
//! from early data. Store state is read from the host's real sled store.

use std::future::Future;
use std::time::Duration;

use sasl2_fast::fast::HtMechanism;
use sasl2_fast::minidom::Element;
use sasl2_fast::store::{ClientKey, ClientRecord, Versioned};
use sasl2_fast::xmpp::ns;
use sasl2_fast_host::client::zero_rtt::ZeroRttLogin;
use sasl2_fast_host::client::{Client, ClientError, ConnectOptions, LoginOptions, Tls};
use sasl2_fast_host::harness::TestHost;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

type TResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const UA: &str = "5f1d0c2e-7a44-4a3b-9e0d-2c6b8f1e9a31";
const NONE: &str = "HT-SHA-256-NONE";
const ENDP: &str = "HT-SHA-256-ENDP";
const EXPR: &str = "HT-SHA-256-EXPR";

async fn bounded(secs: u64, f: impl Future<Output = TResult>) -> TResult {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .map_err(|_| format!("test did not finish within {secs} s"))?
}

async fn host(early_data: bool) -> TestHost {
    let mut config = TestHost::config();
    config.server.tls_early_data = early_data;
    // The replayed connection below never completes its handshake; the host drops it then.
    config.server.auth_timeout = Duration::from_secs(3);
    TestHost::start(config).await.unwrap()
}

/// Direct-TLS options whose clones share one rustls client config with early data enabled.
fn early_opts(t: &TestHost) -> ConnectOptions {
    t.opts(Tls::Direct, Some("alice@localhost"))
        .unwrap()
        .with_early_data()
        .unwrap()
}

/// A password login over a normal direct-TLS connection from `opts` that requests a token
/// for `mech`; the connection leaves a session in the client's store for the next one.
async fn token_for(opts: &ConnectOptions, mech: &str) -> (String, Client) {
    let (token, c, _) = token_and_features(opts, mech).await;
    (token, c)
}

/// [`token_for`], with the `<fast>` feature offered before the login.
async fn token_and_features(
    opts: &ConnectOptions,
    mech: &str,
) -> (String, Client, Option<Element>) {
    let mut c = Client::connect(opts.clone()).await.unwrap();
    let fast = fast_feature(&c);
    let s = c
        .login_plain(
            "alice",
            "alicepass",
            &LoginOptions::agent(UA).request_token(mech),
        )
        .await
        .unwrap()
        .into_success()
        .unwrap();
    (s.token.expect("token issued").token, c, fast)
}

/// The `<fast>` inline feature of the client's last pre-authentication features.
fn fast_feature(c: &Client) -> Option<Element> {
    c.features
        .as_ref()
        .and_then(|f| f.get_child("authentication", ns::SASL2))
        .and_then(|a| a.get_child("inline", ns::SASL2))
        .and_then(|i| i.get_child("fast", ns::FAST))
        .cloned()
}

async fn record(t: &TestHost) -> Option<Versioned<ClientRecord>> {
    let key = ClientKey::new("alice", UA).unwrap();
    t.host
        .fast()
        .unwrap()
        .tokens()
        .store()
        .get(&key)
        .await
        .unwrap()
}

fn counts(t: &TestHost) -> (u64, u64, u64) {
    let c = t.host.early_data().expect("tls_early_data is on");
    (c.accepted(), c.logins(), c.refused())
}

fn login<'a>(token: &'a str, mechanism: &'a str, options: &'a LoginOptions) -> ZeroRttLogin<'a> {
    ZeroRttLogin {
        user: "alice",
        token,
        mechanism,
        server_end_point: None,
        options,
    }
}

#[tokio::test]
async fn zero_rtt_fast_login_is_taken_from_early_data() -> TResult {
    bounded(60, async {
        let t = host(true).await;
        let opts = early_opts(&t);
        let (token, mut first, fast) = token_and_features(&opts, NONE).await;
        // F-6: the direct-TLS port says it takes 0-RTT; the client caches that (S-4).
        assert_eq!(fast.expect("<fast>").attr("tls-0rtt"), Some("true"));
        // The STARTTLS port never does.
        let mut s = t.connect(Tls::StartTls, Some("alice@localhost")).await?;
        assert_eq!(fast_feature(&s).expect("<fast>").attr("tls-0rtt"), None);
        s.close().await?;
        let end_point = first.cb.tls_server_end_point.clone().unwrap();
        first.close().await?;

        // Z-7: Bind 2 inside the 0-RTT <authenticate>.
        let o = LoginOptions::agent(UA).count(1).bind("zr");
        let (mut c, report, outcome) =
            Client::login_fast_zero_rtt(opts.clone(), &login(&token, NONE, &o)).await?;
        assert!(
            report.resumed && report.sent_early && report.accepted,
            "{report:?}"
        );
        // The server proof was checked by the client against this connection (H-7).
        let s = outcome.into_success()?;
        assert!(s.bound.is_some(), "Bind 2 ran");
        assert_eq!(
            counts(&t),
            (1, 1, 0),
            "the host took the login from early data"
        );
        // Z-4: the mark is on disk with the success.
        let rec = record(&t).await.unwrap();
        assert_eq!(rec.value.current.as_ref().unwrap().max_count, Some(1));
        c.ping().await?;
        c.close().await?;

        // -ENDP in early data, with the certificate hash remembered from before (Z-2).
        let (endp, mut c) = token_for(&opts, ENDP).await;
        c.close().await?;
        let o = LoginOptions::agent(UA).count(1);
        let mut l = login(&endp, ENDP, &o);
        l.server_end_point = Some(&end_point);
        let (mut c, report, outcome) = Client::login_fast_zero_rtt(opts.clone(), &l).await?;
        assert!(report.accepted, "{report:?}");
        outcome.into_success()?;
        assert_eq!(counts(&t).1, 2);
        c.close().await?;
        t.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_replayed_authenticate_gets_not_authorized_and_changes_nothing() -> TResult {
    // Z-4, Z-5: the same first flight (same count) on a new 0-RTT connection: the client's own
    // replay, which it can read the answer to.
    bounded(60, async {
        let t = host(true).await;
        let opts = early_opts(&t);
        let (token, mut c) = token_for(&opts, NONE).await;
        c.close().await?;
        let o = LoginOptions::agent(UA).count(7).request_token(NONE);
        let flight = Client::zero_rtt_flight(&opts, &login(&token, NONE, &o))?;
        let (mut c, report) = Client::connect_with_early_data(opts.clone(), &flight).await?;
        assert!(report.accepted);
        let s = c.read_fast_outcome(&token, NONE).await?.into_success()?;
        assert!(s.token.is_some(), "Z-7: a token requested in 0-RTT");
        c.close().await?;
        let before = record(&t).await;
        let (_, logins, _) = counts(&t);

        let (mut c, report) = Client::connect_with_early_data(opts.clone(), &flight).await?;
        assert!(
            report.accepted,
            "TLS took the copy as early data: {report:?}"
        );
        let f = c.read_fast_outcome(&token, NONE).await?.into_failure()?;
        assert_eq!(f.condition, "not-authorized");
        assert_eq!(
            record(&t).await,
            before,
            "no token issued, rotated or consumed"
        );
        assert_eq!(counts(&t).1, logins);
        // The stream stays open for a retry after the handshake (S-23): a higher count works.
        let s = c
            .login_fast("alice", &token, NONE, &LoginOptions::agent(UA).count(8))
            .await?
            .into_success()?;
        assert!(s.token.is_none());
        c.close().await?;
        t.shutdown().await;
        Ok(())
    })
    .await
}

/// TLS record content types of a byte stream (handshake 22, application data 23, ...).
fn record_types(mut b: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while b.len() >= 5 {
        types.push(b[0]);
        let len = usize::from(u16::from_be_bytes([b[3], b[4]]));
        b = &b[(5 + len).min(b.len())..];
    }
    types
}

/// Whether the ServerHello at the start of `b` (a server's first bytes) accepted a PSK, i.e.
/// resumed a session: the `pre_shared_key` extension (41) is in it. `None` if `b` does not
/// start with a ServerHello.
fn server_hello_resumes(b: &[u8]) -> Option<bool> {
    // record header (5), handshake header (4): type 2 = ServerHello
    if b.len() < 9 || b[0] != 22 || b[5] != 2 {
        return None;
    }
    let body = b.get(9..)?;
    // legacy_version (2), random (32), session id (1 + n), cipher suite (2), compression (1)
    let sid = usize::from(*body.get(34)?);
    let mut p = 35 + sid + 3;
    let ext_len = usize::from(u16::from_be_bytes([*body.get(p)?, *body.get(p + 1)?]));
    p += 2;
    let end = p + ext_len;
    while p + 4 <= end {
        let ty = u16::from_be_bytes([*body.get(p)?, *body.get(p + 1)?]);
        let len = usize::from(u16::from_be_bytes([*body.get(p + 2)?, *body.get(p + 3)?]));
        if ty == 41 {
            return Some(true);
        }
        p += 4 + len;
    }
    Some(false)
}

/// A loopback relay to `target` for one connection: forwards both ways and hands back what
/// the client sent before the server's first bytes (its first flight: ClientHello and early
/// data), and those first bytes (the ServerHello).
async fn relay(
    target: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Receiver<(Vec<u8>, Vec<u8>)>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut client, _) = l.accept().await.unwrap();
        let mut server = TcpStream::connect(target).await.unwrap();
        let mut flight = Vec::new();
        let mut tx = Some(tx);
        let (mut cb, mut sb) = ([0u8; 16384], [0u8; 16384]);
        loop {
            tokio::select! {
                r = client.read(&mut cb) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.is_some() {
                            flight.extend_from_slice(&cb[..n]);
                        }
                        if server.write_all(&cb[..n]).await.is_err() { break; }
                    }
                },
                r = server.read(&mut sb) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send((std::mem::take(&mut flight), sb[..n].to_vec()));
                        }
                        if client.write_all(&sb[..n]).await.is_err() { break; }
                    }
                },
            }
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn a_replayed_tcp_flight_is_never_processed() -> TResult {
    // Z-8 and rustls' single-use sessions: an attacker who recorded the first flight of a
    // 0-RTT login at the TCP level and sends it again on a new connection logs nobody in and
    // changes nothing; the host never even reads its early data.
    bounded(60, async {
        let t = host(true).await;
        let opts = early_opts(&t);
        let (token, mut c) = token_for(&opts, NONE).await;
        c.close().await?;
        let tls_addr = t.host.tls_local_addr().unwrap();
        let (relay_addr, flight_rx) = relay(tls_addr).await;
        let mut via_relay = opts.clone();
        via_relay.addr = relay_addr;
        let o = LoginOptions::agent(UA).count(1).bind("");
        let (mut c, report, outcome) =
            Client::login_fast_zero_rtt(via_relay, &login(&token, NONE, &o)).await?;
        assert!(report.accepted);
        outcome.into_success()?;
        let (flight, first_answer) = flight_rx.await?;
        assert_eq!(
            server_hello_resumes(&first_answer),
            Some(true),
            "parser control"
        );
        // The capture really holds early data: the ClientHello, then application-data records.
        let types = record_types(&flight);
        assert_eq!(types.first(), Some(&22), "{types:?}");
        assert!(types.contains(&23), "no early-data record in {types:?}");
        let before = record(&t).await;
        let early_before = counts(&t);
        let resumed_before = t.host.tls_handshakes().resumed();
        let bound_before = t.host.router().session_count();

        for _ in 0..2 {
            let mut replay = TcpStream::connect(tls_addr).await?;
            replay.write_all(&flight).await?;
            // Whatever the host answers (a full handshake: the session was used once) is
            // unreadable without the client's keys; it closes the connection when its
            // handshake does not complete.
            let mut answer = Vec::new();
            let r = tokio::time::timeout(Duration::from_secs(10), replay.read_to_end(&mut answer))
                .await;
            assert!(r.is_ok(), "the host kept the replayed connection open");
            // rustls' sessions are single-use: the replayed ClientHello's ticket resumes
            // nothing, so the host answers with a full handshake and skips the early data.
            assert_eq!(
                server_hello_resumes(&answer),
                Some(false),
                "replay resumed a session"
            );
        }
        assert_eq!(
            record(&t).await,
            before,
            "no token issued, rotated or consumed"
        );
        assert_eq!(
            counts(&t),
            early_before,
            "the replayed early data was never read"
        );
        assert_eq!(t.host.tls_handshakes().resumed(), resumed_before);
        assert_eq!(
            t.host.router().session_count(),
            bound_before,
            "no session bound"
        );
        c.ping().await?;
        c.close().await?;
        t.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn expr_and_missing_count_are_refused_in_early_data() -> TResult {
    bounded(60, async {
        let t = host(true).await;
        let opts = early_opts(&t);
        let (expr, mut c) = token_for(&opts, EXPR).await;
        c.close().await?;
        let before = record(&t).await;

        // Z-2: an -EXPR MAC written before the handshake cannot bind to its exporter; the
        // host refuses it without reading the store, and the same stream then logs in after
        // the handshake with the real exporter.
        let m = HtMechanism::from_name(EXPR).unwrap();
        let msg = m.initiator_message("alice", expr.as_bytes(), &[0u8; 32]);
        let auth =
            Client::authenticate_element(EXPR, Some(&msg), &LoginOptions::agent(UA).count(1), true);
        let mut flight = Client::zero_rtt_flight_header(&opts).into_bytes();
        auth.write_to(&mut flight)?;
        let (mut c, report) = Client::connect_with_early_data(opts.clone(), &flight).await?;
        assert!(report.accepted);
        let f = c.read_fast_outcome(&expr, EXPR).await?.into_failure()?;
        assert_eq!(f.condition, "malformed-request");
        assert_eq!(record(&t).await, before);
        c.login_fast("alice", &expr, EXPR, &LoginOptions::agent(UA).count(1))
            .await?
            .into_success()?;
        c.close().await?;

        // Z-3: no count in early data.
        let (none, mut c) = token_for(&opts, NONE).await;
        c.close().await?;
        let before = record(&t).await;
        let o = LoginOptions::agent(UA);
        let (mut c, report, outcome) =
            Client::login_fast_zero_rtt(opts.clone(), &login(&none, NONE, &o)).await?;
        assert!(report.accepted);
        assert_eq!(outcome.into_failure()?.condition, "malformed-request");
        assert_eq!(record(&t).await, before);
        c.close().await?;

        // Z-1: a password in early data is refused, even a correct one.
        let plain = Client::authenticate_element(
            "PLAIN",
            Some(b"\0alice\0alicepass"),
            &LoginOptions::agent(UA),
            false,
        );
        let mut flight = Client::zero_rtt_flight_header(&opts).into_bytes();
        plain.write_to(&mut flight)?;
        let (mut c, report) = Client::connect_with_early_data(opts.clone(), &flight).await?;
        assert!(report.accepted);
        let e = c.recv().await?;
        assert!(e.is("failure", ns::SASL2), "{e:?}");
        assert!(e.get_child("malformed-request", ns::SASL).is_some());
        assert_eq!(counts(&t).1, 0, "no login from early data");
        c.close().await?;
        t.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn anything_after_authenticate_in_early_data_is_refused() -> TResult {
    // Z-6 (H-8): the whole early data is checked before any of it is acted on.
    bounded(60, async {
        let t = host(true).await;
        let opts = early_opts(&t);
        let (token, mut c) = token_for(&opts, NONE).await;
        c.close().await?;
        let before = record(&t).await;
        let o = LoginOptions::agent(UA).count(1);
        let good = Client::zero_rtt_flight(&opts, &login(&token, NONE, &o))?;
        let ping =
            b"<iq xmlns='jabber:client' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>";
        // Another stanza, the start of one, a second <authenticate>.
        let second = &good[Client::zero_rtt_flight_header(&opts).len()..];
        for extra in [&ping[..], b"<iq type='get'", second] {
            let mut flight = good.clone();
            flight.extend_from_slice(extra);
            // The stream error comes right after the server's header, instead of features.
            match Client::connect_with_early_data(opts.clone(), &flight).await {
                Err(ClientError::StreamError { condition, .. }) => {
                    assert_eq!(condition, "policy-violation")
                }
                Err(e) => return Err(e.into()),
                Ok(_) => panic!("early data with more than <authenticate> accepted"),
            }
        }
        assert_eq!(record(&t).await, before, "nobody logged in");
        let (_, logins, refused) = counts(&t);
        assert_eq!((logins, refused), (0, 3));
        // The same login without the extra bytes is fine.
        let (mut c, _, outcome) =
            Client::login_fast_zero_rtt(opts.clone(), &login(&token, NONE, &o)).await?;
        outcome.into_success()?;
        c.close().await?;
        t.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn early_data_off_falls_back_to_one_rtt() -> TResult {
    // Z-8: with tls_early_data = false TLS refuses the early data, tokio-rustls resends it
    // after the handshake, and the same flight logs in as a 1-RTT request.
    bounded(60, async {
        let t = host(true).await;
        let opts = early_opts(&t);
        let (token, mut c) = token_for(&opts, NONE).await;
        c.close().await?;
        // Same data_dir (certificate, token store), early data off: the client still holds a
        // session that allowed early data, so it sends some; the new host refuses it.
        let t = t.restart_with(|c| c.server.tls_early_data = false).await?;
        assert!(t.host.early_data().is_none());
        let mut opts = opts;
        opts.addr = t.host.tls_local_addr().unwrap();
        let o = LoginOptions::agent(UA).count(1);
        let flight = Client::zero_rtt_flight(&opts, &login(&token, NONE, &o))?;
        let (mut c, report) = Client::connect_with_early_data(opts.clone(), &flight).await?;
        assert!(report.sent_early && !report.accepted, "{report:?}");
        // F-6: no tls-0rtt where early data is off.
        assert_eq!(fast_feature(&c).expect("<fast>").attr("tls-0rtt"), None);
        c.read_fast_outcome(&token, NONE).await?.into_success()?;
        c.close().await?;
        // The host's tickets allow no early data: the flight simply follows the handshake.
        let o = LoginOptions::agent(UA).count(2);
        let (mut c, report, outcome) =
            Client::login_fast_zero_rtt(opts, &login(&token, NONE, &o)).await?;
        assert!(!report.sent_early && report.resumed, "{report:?}");
        outcome.into_success()?;
        c.close().await?;
        t.shutdown().await;
        Ok(())
    })
    .await
}
