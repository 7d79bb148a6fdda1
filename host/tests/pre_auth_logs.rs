//! Bounded logging before authentication (issue 11 item 1): a peer without an account that
//! floods `<abort/>` and reconnects for 5 s grows the host's log at the default level by less
//! than 64 KiB, and the log still says that it happened and how much was left out.

use std::path::Path;
use std::time::{Duration, Instant};

use sasl2_fast_host::harness::HostProcess;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const HOST: &str = env!("CARGO_BIN_EXE_host");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_flood_with_reconnects_writes_a_bounded_log() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("host.toml");
    std::fs::write(
        &cfg,
        "[server]\ndomain = \"localhost\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
         require_tls = false\n[accounts]\nalice = \"alicepass\"\n[plugins.fast]\nenabled = true\n",
    )
    .unwrap();
    // The default level: RUST_LOG unset.
    let host = HostProcess::start(Path::new(HOST), &cfg, None).unwrap();
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
    assert!(text.contains("authentication failed"), "{text}");
    assert!(text.contains("suppressed"), "{text}");
}
