//! TLS session resumption (issue 13 item 1): stateless session tickets
//! (`[server] tls_session_tickets`) and channel binding over *real* resumed TLS 1.3 sessions.
//!
//! Every test asserts that the session really was resumed on both ends: the client's rustls
//! `handshake_kind()` ([`Client::tls_resumed`]) and the host's handshake counters
//! (`Host::tls_handshakes`). FAST successes are only accepted with the server proof in
//! `<additional-data>` verified by the client against its own session (H-7); SCRAM-PLUS
//! successes with the server signature verified.

use std::future::Future;
use std::time::Duration;

use sasl2_fast::fast::HtMechanism;
use sasl2_fast_host::client::{Client, ClientError, ConnectOptions, LoginOptions, Tls};
use sasl2_fast_host::harness::TestHost;
use tokio_rustls::rustls::ProtocolVersion;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;

type TResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const UA: &str = "0b7a1c52-8a5e-4d0e-9c3b-5f4e2d1a0c77";
const EXPR: &str = "HT-SHA-256-EXPR";
const ENDP: &str = "HT-SHA-256-ENDP";

async fn bounded(secs: u64, f: impl Future<Output = TResult>) -> TResult {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .map_err(|_| format!("test did not finish within {secs} s"))?
}

async fn host(tickets: bool) -> TestHost {
    let mut config = TestHost::config();
    config.server.tls_session_tickets = tickets;
    TestHost::start(config).await.unwrap()
}

/// Options for `tls` whose clones share one rustls client config (one session store).
fn resuming(t: &TestHost, tls: Tls) -> ConnectOptions {
    t.opts(tls, Some("alice@localhost"))
        .unwrap()
        .with_tls_resumption()
        .unwrap()
}

/// Connects with `opts` and checks, on both ends, that the handshake was `resumed` or full.
async fn connect_expecting(t: &TestHost, opts: &ConnectOptions, resumed: bool) -> Client {
    let before = t.host.tls_handshakes().resumed();
    let c = Client::connect(opts.clone()).await.unwrap();
    assert_eq!(c.tls_version, Some(ProtocolVersion::TLSv1_3));
    assert_eq!(c.tls_resumed, resumed, "client's handshake kind");
    let after = t.host.tls_handshakes().resumed();
    assert_eq!(after - before, u64::from(resumed), "host's handshake kind");
    c
}

/// Password login (PLAIN) on a connection from `opts` that requests a token for `mech`.
async fn token_for(t: &TestHost, opts: &ConnectOptions, mech: &str, resumed: bool) -> String {
    let mut c = connect_expecting(t, opts, resumed).await;
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
    s.token.expect("token issued").token
}

fn host_end_point(t: &TestHost) -> Vec<u8> {
    let leaf = CertificateDer::pem_file_iter(t.host.cert_pem_path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    sasl2_fast_host::tls::server_end_point(&leaf).unwrap()
}

/// FAST with `HT-SHA-256-EXPR` and `HT-SHA-256-ENDP` over resumed sessions on `tls`.
async fn fast_over_resumed(tls: Tls) -> TResult {
    let t = host(true).await;
    let opts = resuming(&t, tls);
    // The first connection is a full handshake; its ticket lets every later one resume.
    let mut first = connect_expecting(&t, &opts, false).await;
    first.close().await?;
    let expr = token_for(&t, &opts, EXPR, true).await;

    // CB-3: the exporter of a resumed connection is its own (RFC 8446 §7.5: derived from this
    // connection's key schedule), so two resumptions of the same session differ, and the
    // server must use the resumed connection's exporter for the HT MAC.
    let mut a = connect_expecting(&t, &opts, true).await;
    let mut b = connect_expecting(&t, &opts, true).await;
    assert_ne!(a.cb.tls_exporter, b.cb.tls_exporter);
    assert_ne!(a.cb.tls_exporter, first.cb.tls_exporter);
    // H-6: an initiator message bound to another (resumed) connection's exporter fails here...
    let foreign = b.fast_initial_response("alice", &expr, EXPR)?;
    let o = a
        .login_fast_message(&foreign, &expr, EXPR, &LoginOptions::agent(UA))
        .await?;
    assert_eq!(o.into_failure()?.condition, "not-authorized");
    // ...and the one bound to this connection succeeds, with the server proof over this
    // connection's exporter verified by the client (H-7: else ServerProofMismatch).
    let s = a
        .login_fast("alice", &expr, EXPR, &LoginOptions::agent(UA))
        .await?
        .into_success()?;
    assert_eq!(s.jid.split('/').next(), Some("alice@localhost"));
    b.login_fast("alice", &expr, EXPR, &LoginOptions::agent(UA))
        .await?
        .into_success()?;

    // CB-5: ENDP is the hash of the server's own certificate, also when the client's session
    // came from a ticket (rustls hands the client the chain stored with it).
    let endp = token_for(&t, &opts, ENDP, true).await;
    let mut c = connect_expecting(&t, &opts, true).await;
    assert_eq!(c.cb.tls_server_end_point, Some(host_end_point(&t)));
    let s = c
        .login_fast("alice", &endp, ENDP, &LoginOptions::agent(UA))
        .await?
        .into_success()?;
    let m = HtMechanism::from_name(ENDP).unwrap();
    let expected = m.responder_mac(endp.as_bytes(), &host_end_point(&t));
    assert_eq!(s.additional_data.as_deref(), Some(expected.as_slice()));
    t.shutdown().await;
    Ok(())
}

/// CB-3: each resumed connection has its own `tls-exporter`, and the host binds to it; H-6:
/// a MAC bound to another connection's exporter fails; CB-5: `tls-server-end-point` is the
/// host's certificate hash on a resumed session too (`fast_over_resumed`).
#[tokio::test]
async fn fast_expr_and_endp_over_resumed_starttls_sessions() -> TResult {
    bounded(60, fast_over_resumed(Tls::StartTls)).await
}

/// CB-3, H-6 and CB-5 as over STARTTLS, on the direct-TLS port.
#[tokio::test]
async fn fast_expr_and_endp_over_resumed_direct_tls_sessions() -> TResult {
    bounded(60, fast_over_resumed(Tls::Direct)).await
}

/// CB-3: SCRAM-SHA-256-PLUS binds to each resumed connection's own `tls-exporter`.
#[tokio::test]
async fn scram_sha_256_plus_over_a_resumed_session() -> TResult {
    bounded(60, async {
        let t = host(true).await;
        let opts = resuming(&t, Tls::StartTls);
        for resumed in [false, true, true] {
            let mut c = connect_expecting(&t, &opts, resumed).await;
            // login_scram verifies the server signature, which covers the tls-exporter bytes
            // of this connection in the channel-binding attribute (CB-3).
            let o = c
                .login_scram(
                    "alice",
                    "alicepass",
                    "SCRAM-SHA-256-PLUS",
                    &LoginOptions::agent(UA),
                )
                .await?;
            o.into_success()?;
        }
        assert_eq!(t.host.tls_handshakes().full(), 1);
        assert_eq!(t.host.tls_handshakes().resumed(), 2);
        t.shutdown().await;
        Ok(())
    })
    .await
}

/// Client `early` does a full handshake, then `others` distinct clients (each with its own
/// session store) do theirs; returns whether `early` can then resume.
async fn early_client_resumes_after(t: &TestHost, others: usize) -> Result<bool, ClientError> {
    let early = resuming(t, Tls::Direct);
    let mut c = connect_expecting(t, &early, false).await;
    c.close().await?;
    for _ in 0..others {
        // connect() reads the stream features, so the ticket sent after the handshake has
        // reached the client's store.
        let mut o = Client::connect(resuming(t, Tls::Direct)).await?;
        assert!(!o.tls_resumed);
        o.close().await?;
    }
    let c = Client::connect(early).await?;
    Ok(c.tls_resumed)
}

/// With tickets, the session lives in the client's ticket: the 301st client still resumes.
/// With `tls_session_tickets = false` the host keeps today's behaviour, rustls' 256-entry
/// server-side cache (2 entries per handshake): a client that reconnects at once resumes, but
/// after 300 other clients its session was evicted. Fails if the option is ignored either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_resume_any_number_of_clients_and_the_option_turns_them_off() -> TResult {
    bounded(120, async {
        let on = host(true).await;
        assert!(early_client_resumes_after(&on, 300).await?);
        on.shutdown().await;

        let off = host(false).await;
        assert!(
            early_client_resumes_after(&off, 0).await?,
            "the session cache is gone"
        );
        assert!(
            !early_client_resumes_after(&off, 300).await?,
            "tls_session_tickets = false still issued stateless tickets"
        );
        off.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_ticket_does_not_survive_a_restart() -> TResult {
    bounded(60, async {
        // Ticket keys live in memory only: after a restart the old ticket is refused and the
        // client falls back to a full handshake, with working channel binding.
        let t = host(true).await;
        let opts = resuming(&t, Tls::Direct);
        let expr = token_for(&t, &opts, EXPR, false).await;
        let t = t.restart().await?;
        let mut opts2 = t.opts(Tls::Direct, Some("alice@localhost"))?;
        opts2.tls_config = opts.tls_config.clone();
        let mut c = connect_expecting(&t, &opts2, false).await;
        c.login_fast("alice", &expr, EXPR, &LoginOptions::agent(UA))
            .await?
            .into_success()?;
        assert!(connect_expecting(&t, &opts2, true).await.tls_resumed);
        t.shutdown().await;
        Ok(())
    })
    .await
}
