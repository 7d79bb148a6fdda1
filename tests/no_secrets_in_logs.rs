//! Tokens are password-equivalent (F-24): they must never reach a log line, at any level.
//! This test captures everything the host and the crate log at TRACE while a client logs in
//! with a password, receives a token, logs in with it, gets a rotated one and invalidates it,
//! then searches the captured output for every secret involved.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sasl2_fast_host::HostConfig;
use sasl2_fast_host::client::{Client, LoginOptions, Tls};
use sasl2_fast_host::harness::TestHost;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const UA: &str = "0f0e0d0c-4b4a-4948-8746-454443424140";

#[tokio::test]
async fn no_token_or_password_is_logged_even_at_trace() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut config = HostConfig::new("localhost", "data").with_account("alice", "alicepass-SECRET");
    let fast = config.plugins.fast.as_mut().unwrap();
    fast.token_ttl = Duration::from_secs(60);
    fast.token_min_ttl = Duration::from_secs(1);
    let t = TestHost::start(config).await.unwrap();
    let opts = || t.opts(Tls::StartTls, Some("alice@localhost")).unwrap();
    let mech = "HT-SHA-256-EXPR";
    let mut secrets = vec!["alicepass-SECRET".to_owned()];

    let mut c = Client::connect(opts()).await.unwrap();
    let s = c
        .login_plain(
            "alice",
            "alicepass-SECRET",
            &LoginOptions::agent(UA).request_token(mech).bind("t"),
        )
        .await
        .unwrap()
        .into_success()
        .unwrap();
    let t1 = s.token.expect("token").token;
    secrets.push(t1.clone());
    c.ping().await.unwrap();

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut c = Client::connect(opts()).await.unwrap();
    let s = c
        .login_fast("alice", &t1, mech, &LoginOptions::agent(UA).bind("t"))
        .await
        .unwrap()
        .into_success()
        .unwrap();
    let t2 = s.token.expect("rotated token").token;
    secrets.push(t2.clone());

    let mut c = Client::connect(opts()).await.unwrap();
    c.login_fast("alice", &t2, mech, &LoginOptions::agent(UA).invalidate())
        .await
        .unwrap()
        .into_success()
        .unwrap();
    // The host counts lifecycle events for operators (FastMetrics observer).
    let m = t.host.fast_metrics();
    let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        (n(&m.issued), n(&m.rotated), n(&m.used), n(&m.invalidated)),
        (1, 1, 2, 1)
    );
    t.shutdown().await;

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(logs.contains("authenticated"), "the capture works: {logs}");
    for secret in &secrets {
        // The token body alone (without the well-known prefix) must not appear either.
        let body = secret.trim_start_matches("secret-token:fast-");
        assert!(!logs.contains(body), "a secret leaked into the logs");
    }
    // Nor the user-agent id (a long-lived client identifier; logs show a hash label).
    assert!(!logs.contains(UA));
}
