//! Smoke test of the example host's in-process API: start with a typed config, a stream,
//! password change, graceful shutdown (live streams get `</stream:stream>`), restart on the same
//! data_dir (the sled lock must have been released), and `run(listeners, config, shutdown)`.

use sasl2_fast_host::harness::TestHost;
use sasl2_fast_host::{HostConfig, Listeners};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

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

const HEADER: &[u8] = b"<stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

#[tokio::test]
async fn start_stream_shutdown_restart() {
    let mut config = TestHost::config();
    config.server.require_tls = false;
    let t = TestHost::start(config).await.unwrap();
    assert!(t.host.fast().is_some());
    assert!(t.host.tls_local_addr().is_some());
    assert!(t.host.cert_pem_path().exists());

    let mut s = TcpStream::connect(t.host.local_addr()).await.unwrap();
    s.write_all(HEADER).await.unwrap();
    let features = read_until(&mut s, "</stream:features>").await;
    assert!(features.contains("urn:xmpp:sasl:2"), "{features}");
    assert!(features.contains("urn:xmpp:fast:0"), "{features}");

    t.host.change_password("alice", "newpass").await.unwrap();
    assert!(t.data_dir().join("accounts.toml").exists());

    let t = t.restart().await.expect("restart on the same data_dir");
    assert!(
        read_until(&mut s, "</stream:stream>")
            .await
            .contains("</stream:stream>"),
        "shutdown closes live streams"
    );
    assert!(t.host.accounts().contains("alice"));
    t.shutdown().await;
}

#[tokio::test]
async fn run_serves_until_the_shutdown_future_completes() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = HostConfig::new("localhost", dir.path().join("data"));
    config.server.require_tls = false;
    let listeners = Listeners::loopback(false).await.unwrap();
    let addr = listeners.starttls.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sasl2_fast_host::run(listeners, config, async {
        let _ = stopped.await;
    }));
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(HEADER).await.unwrap();
    assert!(
        read_until(&mut s, "</stream:features>")
            .await
            .contains("features")
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(
        read_until(&mut s, "</stream:stream>")
            .await
            .contains("</stream:stream>")
    );
}

#[test]
fn config_errors_name_the_key() {
    let base = std::path::Path::new("/tmp");
    let config = "[server]\ndomain = \"localhost\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\n";
    let e = HostConfig::from_toml_str(&format!("{config}require_tsl = false\n"), base).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("server.require_tsl: unknown field"),
        "{e}"
    );
    let e = HostConfig::from_toml_str(
        &format!("{config}[plugins.fast]\ntoken_ttl = \"x\"\n"),
        base,
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("plugins.fast.token_ttl: "), "{e}");
}
