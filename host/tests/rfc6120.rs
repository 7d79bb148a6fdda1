//! RFC 6120 SASL beside SASL2 (issue 12 item 2, host side): a client without SASL2 logs in
//! with `<auth>` using the same mechanism objects, restarts the stream, binds a resource
//! (RFC 6120 §7) and talks; FAST stays SASL2-only.

use sasl2_fast_host::client::{Outcome, Tls};
use sasl2_fast_host::harness::TestHost;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_sasl2_logs_in_binds_and_pings() {
    let t = TestHost::start(TestHost::config()).await.unwrap();
    for mech in ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1"] {
        let mut c = t.connect(Tls::StartTls, None).await.unwrap();
        let offered = c.rfc6120_mechanisms();
        assert!(offered.iter().any(|m| m == mech), "{mech} in {offered:?}");
        assert!(
            offered.iter().all(|m| !m.starts_with("HT-")),
            "FAST is SASL2-only: {offered:?}"
        );
        let s = c
            .login_scram_rfc6120("alice", "alicepass", mech)
            .await
            .unwrap()
            .into_success()
            .unwrap();
        assert!(
            s.jid.starts_with("alice@localhost/"),
            "{} via {mech}",
            s.jid
        );
        assert!(s.token.is_none());
        c.ping().await.unwrap();
    }
    // A wrong password is an RFC 6120 <failure> with not-authorized (RFC 6120 §6.5.10), and
    // the stream stays open for a retry (§6.4.5).
    let mut c = t.connect(Tls::StartTls, None).await.unwrap();
    match c
        .login_scram_rfc6120("alice", "wrong", "SCRAM-SHA-256")
        .await
        .unwrap()
    {
        Outcome::Failure(f) => assert_eq!(f.condition, "not-authorized"),
        Outcome::Success(_) => panic!("a wrong password logged in"),
    }
    c.login_scram_rfc6120("alice", "alicepass", "SCRAM-SHA-256")
        .await
        .unwrap()
        .into_success()
        .unwrap();
    t.shutdown().await;
}
