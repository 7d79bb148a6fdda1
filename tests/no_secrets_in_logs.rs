//! Tokens are password-equivalent (F-24): they must never reach a log line, at any level.
//! This test captures everything the host and the crate log at TRACE while a client logs in
//! with a password, receives a token, logs in with it, gets a rotated one and invalidates it,
//! then searches the captured output for every secret involved.

#[path = "../examples/host/app/mod.rs"]
mod app;
#[path = "../examples/common/client.rs"]
mod client;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{Client, ConnectOptions, LoginOptions, Tls};

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

    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[server]\ndomain = \"localhost\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\
         [accounts]\nalice = \"alicepass-SECRET\"\n[plugins.fast]\ntoken_ttl = 60\ntoken_min_ttl = 1\n",
        dir.path().join("data").display()
    );
    let cfg = app::HostConfig::from_toml_str(&toml, dir.path()).unwrap();
    let host = app::Host::start(cfg).await.unwrap();
    let opts = || {
        ConnectOptions::localhost(
            host.local_addr(),
            Tls::StartTls,
            host.cert_pem_path(),
            Some("alice@localhost"),
        )
        .unwrap()
    };
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
    let m = host.fast_metrics();
    let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        (n(&m.issued), n(&m.rotated), n(&m.used), n(&m.invalidated)),
        (1, 1, 2, 1)
    );
    host.shutdown().await;

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
