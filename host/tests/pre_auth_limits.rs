//! Fairness and memory before authentication (issue 11 item 2): one source address cannot
//! hold more than `max_unauthenticated_per_ip` unauthenticated connections, so a client from
//! another address still gets stream features; authenticated sessions do not count; and
//! elements before authentication are bounded by `max_unauthenticated_stanza_bytes`, those of
//! logged-in sessions by `max_stanza_bytes`.

use std::net::SocketAddr;
use std::time::Duration;

use sasl2_fast_host::client::{LoginOptions, Tls};
use sasl2_fast_host::harness::TestHost;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
                      xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

/// A plaintext stream from `source`, header sent; returns what the server wrote within
/// `wait` (its header and features, or an error and the close).
async fn open_from(source: &str, addr: SocketAddr, wait: Duration) -> (TcpStream, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    tcp.write_all(HEADER.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let text = String::from_utf8_lossy(&got);
        if text.contains("</features>") || text.contains("</stream:stream>") {
            break;
        }
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    (tcp, String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_unauthenticated_slot() {
    let mut config = TestHost::config();
    config.server.max_unauthenticated_per_ip = 3;
    let t = TestHost::start(config).await.unwrap();
    let addr = t.host.local_addr();
    let wait = Duration::from_secs(5);

    // Logged-in sessions do not count against the cap.
    let mut sessions = Vec::new();
    for i in 0..3 {
        let mut c = t.connect(Tls::StartTls, None).await.unwrap();
        c.login_scram(
            "alice",
            "alicepass",
            "SCRAM-SHA-256-PLUS",
            &LoginOptions::agent(&format!("ua-{i}")).bind(&format!("s{i}")),
        )
        .await
        .unwrap()
        .into_success()
        .unwrap();
        sessions.push(c);
    }
    let mut idle = Vec::new();
    for _ in 0..3 {
        let (tcp, text) = open_from("127.0.0.1", addr, wait).await;
        assert!(text.contains("<starttls"), "{text}");
        idle.push(tcp);
    }
    let (_, text) = open_from("127.0.0.1", addr, wait).await;
    assert!(
        text.contains("policy-violation") && text.contains("unauthenticated"),
        "a fourth unauthenticated connection from one address: {text}"
    );
    // Another address is not affected.
    let (_other, text) = open_from("127.0.0.2", addr, wait).await;
    assert!(text.contains("<starttls"), "{text}");
    // A closed connection frees its slot.
    drop(idle.pop());
    let mut freed = false;
    for _ in 0..50 {
        let (tcp, text) = open_from("127.0.0.1", addr, wait).await;
        if text.contains("<starttls") {
            idle.push(tcp);
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "the slot of a closed connection was not released");
    for mut c in sessions {
        c.ping().await.unwrap();
    }
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elements_before_authentication_are_smaller() {
    let mut config = TestHost::config();
    config.server.max_unauthenticated_stanza_bytes = 4096;
    config.server.max_stanza_bytes = 65_536;
    let t = TestHost::start(config).await.unwrap();
    let big = |n: usize| {
        format!(
            "<message xmlns='jabber:client' to='alice@localhost' type='chat'><body>{}</body></message>",
            "x".repeat(n)
        )
    };

    // Before authentication: 8 KiB is over the limit.
    let mut c = t.connect(Tls::StartTls, None).await.unwrap();
    c.send_raw(big(8192).as_bytes()).await.unwrap();
    let e = c.recv_any().await.unwrap();
    assert!(
        sasl2_fast_host::client::is_stream_error(&e, "policy-violation"),
        "{:?}",
        e.name()
    );

    // After authentication: 20 KiB is fine, the stream lives on.
    let mut c = t.connect(Tls::StartTls, None).await.unwrap();
    c.login_scram(
        "alice",
        "alicepass",
        "SCRAM-SHA-256-PLUS",
        &LoginOptions::agent("y").bind("big"),
    )
    .await
    .unwrap()
    .into_success()
    .unwrap();
    c.send_raw(big(20_000).as_bytes()).await.unwrap();
    c.ping().await.unwrap();
    t.shutdown().await;
}

/// A logged-in session's large stanzas arrive whole over every transport: plaintext reads
/// through a 4 KiB buffer that grows once a read fills it, TLS feeds the reader from rustls'
/// records (each at most 16 KiB), so 40 KB spans several reads or records either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_stanzas_after_login_on_every_transport() {
    let mut config = TestHost::config();
    config.server.require_tls = false;
    config.server.max_stanza_bytes = 65_536;
    let t = TestHost::start(config).await.unwrap();
    for (tls, mech) in [
        (Tls::None, "SCRAM-SHA-256"),
        (Tls::StartTls, "SCRAM-SHA-256-PLUS"),
        (Tls::Direct, "SCRAM-SHA-256-PLUS"),
    ] {
        let mut c = t.connect(tls, None).await.unwrap();
        c.login_scram(
            "alice",
            "alicepass",
            mech,
            &LoginOptions::agent("y").bind("big"),
        )
        .await
        .unwrap()
        .into_success()
        .unwrap();
        for n in [40_000, 100, 16_384, 40_000] {
            let body = "x".repeat(n);
            let ping = format!(
                "<iq xmlns='jabber:client' type='get' id='big{n}' to='localhost'>\
                 <ping xmlns='urn:xmpp:ping'/><x xmlns='urn:example:pad'>{body}</x></iq>"
            );
            c.send_raw(ping.as_bytes()).await.unwrap();
            let reply = c.recv_any().await.unwrap();
            assert_eq!(
                reply.attr("id"),
                Some(format!("big{n}").as_str()),
                "{tls:?}"
            );
        }
    }
    t.shutdown().await;
}
