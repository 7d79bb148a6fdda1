//! Smoke test of the example host's in-process API: start, a stream, password change,
//! graceful shutdown (live streams get `</stream:stream>`), restart on the same data_dir (the
//! sled lock must have been released).

#[path = "../examples/host/app/mod.rs"]
mod app;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const CONFIG: &str = r#"
[server]
domain = "localhost"
listen = "127.0.0.1:0"
listen_tls = "127.0.0.1:0"
data_dir = "data"
require_tls = false
[accounts]
alice = "alicepass"
[plugins.fast]
enabled = true
"#;

async fn read_until(s: &mut TcpStream, needle: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !String::from_utf8_lossy(&out).contains(needle) {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn start_stream_shutdown_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = app::HostConfig::from_toml_str(CONFIG, dir.path()).unwrap();
    let host = app::Host::start(cfg.clone()).await.unwrap();
    assert!(host.fast().is_some());
    assert!(host.tls_local_addr().is_some());
    assert!(host.cert_pem_path().exists());

    let mut s = TcpStream::connect(host.local_addr()).await.unwrap();
    s.write_all(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
          to='localhost' version='1.0'>",
    )
    .await
    .unwrap();
    let features = read_until(&mut s, "</stream:features>").await;
    assert!(
        features.contains("<authentication xmlns='urn:xmpp:sasl:2'>"),
        "{features}"
    );
    assert!(
        features.contains("<fast xmlns='urn:xmpp:fast:0'>"),
        "{features}"
    );

    host.change_password("alice", "newpass").await.unwrap();
    assert!(dir.path().join("data/accounts.toml").exists());

    host.shutdown().await;
    assert!(
        read_until(&mut s, "</stream:stream>")
            .await
            .contains("</stream:stream>")
    );

    let host = app::Host::start(cfg)
        .await
        .expect("restart on the same data_dir");
    assert!(host.accounts().contains("alice"));
    host.shutdown().await;
}

#[test]
fn config_errors_name_the_key() {
    let base = std::path::Path::new("/tmp");
    let e = app::HostConfig::from_toml_str(&CONFIG.replace("require_tls", "require_tsl"), base)
        .unwrap_err();
    assert_eq!(e.to_string(), "server.require_tsl: unknown option");
    let e =
        app::HostConfig::from_toml_str(&format!("{CONFIG}token_ttl = \"x\"\n"), base).unwrap_err();
    assert!(e.to_string().starts_with("plugins.fast.token_ttl: "), "{e}");
}
