//! Bounded logging before authentication (issue 11 item 1): a peer without an account that
//! floods `<abort/>` and reconnects for 5 s grows the host's log at the default level by less
//! than 64 KiB, and the log still says that it happened and how much was left out. The budget
//! is per source (issue 23 item 4): during such a flood, every guess from another address
//! leaves its audit line.

use std::path::Path;
use std::time::{Duration, Instant};

use sasl2_fast_host::harness::HostProcess;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const HOST: &str = env!("CARGO_BIN_EXE_host");

/// The host binary on plaintext loopback with alice, at the default log level (RUST_LOG unset).
fn start_host(dir: &Path) -> HostProcess {
    let cfg = dir.join("host.toml");
    std::fs::write(
        &cfg,
        "[server]\ndomain = \"localhost\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
         require_tls = false\n[accounts]\nalice = \"alicepass\"\n[plugins.fast]\nenabled = true\n",
    )
    .unwrap();
    HostProcess::start(Path::new(HOST), &cfg, None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_flood_with_reconnects_writes_a_bounded_log() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(dir.path());
    let addr = host.addr();
    let before = host.log_len();

    let header = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
                  xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
    let abort = "<abort xmlns='urn:xmpp:sasl:2'/>";
    let started = Instant::now();
    let mut connections = 0;
    while started.elapsed() < Duration::from_secs(5) {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(header.as_bytes()).await.unwrap();
        // Far more aborts than the host allows on one stream: it closes after a few.
        for _ in 0..20 {
            if tcp.write_all(abort.as_bytes()).await.is_err() {
                break;
            }
        }
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut sink)).await;
        assert!(
            String::from_utf8_lossy(&sink).contains("</stream:stream>"),
            "the host ends a stream that keeps aborting"
        );
        connections += 1;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let grown = host.log_len() - before;
    let text = host.log();
    drop(host);
    assert!(
        connections > 100,
        "the flood was too slow to mean anything: {connections}"
    );
    assert!(
        grown < 64 * 1024,
        "{connections} connections grew the log by {grown} bytes"
    );
    // Positive control: the events are logged, and the suppression is reported.
    assert!(text.contains("password login failed"), "{text}");
    assert!(text.contains("suppressed"), "{text}");
}

/// Connects from `source` (a loopback address) and opens a plaintext stream.
async fn connect_from(source: &str, addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    tcp.write_all(HEADER.as_bytes()).await.unwrap();
    tcp
}

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
                      xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_from_another_address_are_logged_during_an_abort_flood() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(dir.path());
    let addr = host.addr();

    let flood = tokio::spawn(async move {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            let mut tcp = connect_from("127.0.0.1", addr).await;
            for _ in 0..20 {
                if tcp
                    .write_all(b"<abort xmlns='urn:xmpp:sasl:2'/>")
                    .await
                    .is_err()
                {
                    break;
                }
            }
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut sink)).await;
        }
    });
    // Let the flood exhaust its budget first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..8 {
        let mut tcp = connect_from("127.0.0.2", addr).await;
        let ir = base64::engine::general_purpose::STANDARD.encode(format!("\0alice\0guess{i}"));
        let auth = format!(
            "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'>\
             <initial-response>{ir}</initial-response></authenticate>"
        );
        tcp.write_all(auth.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("</failure>") {
            let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed before the failure");
            got.extend_from_slice(&buf[..n]);
        }
    }
    flood.await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = host.log();
    drop(host);
    let guesses: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("account=alice") && l.contains("source=127.0.0.2"))
        .collect();
    assert_eq!(guesses.len(), 8, "{text}");
    // Five checked and wrong, then held back by the throttle (default: 5 failures).
    assert_eq!(
        guesses
            .iter()
            .filter(|l| l.contains("password login failed") && l.contains("reason=rejected"))
            .count(),
        5,
        "{guesses:#?}"
    );
    assert_eq!(
        guesses
            .iter()
            .filter(|l| l.contains("password login held back") && l.contains("reason=held"))
            .count(),
        3,
        "{guesses:#?}"
    );
    assert!(
        guesses.iter().all(|l| l.contains("mechanism=PLAIN")),
        "{guesses:#?}"
    );
    // The flooder's own lines were metered.
    assert!(
        text.lines()
            .any(|l| l.contains("suppressed") && l.contains("source=127.0.0.1")),
        "{text}"
    );
}
