//! `--flood N`: N connections that open a stream and then send whitespace, before any login,
//! as fast as the server takes it, until `--duration`: the pre-authentication flood of issue
//! 23. Run it in its own process beside a login run, with `--source` another loopback
//! address (the flood takes its address's unauthenticated slots, 64 by default), and compare
//! the login run's latencies with and without it (docs/performance.md §9).
//!
//! `--tls none` or `starttls`: plaintext whitespace after the first stream header (before
//! STARTTLS); `--tls direct`: whitespace inside TLS.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sasl2_fast_host::client::{ConnectOptions, Tls, client_tls_config};
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use crate::procfs::{CpuSnap, clk_tck, cpu_ms};
use crate::stats::r3;
use crate::{Args, Report};

/// What one write offers the server.
const CHUNK: usize = 16 * 1024;

/// The result of a flood run; `--json` prints it as is.
#[derive(Debug, Serialize)]
struct FloodReport {
    connections: usize,
    tls: &'static str,
    source: Option<String>,
    /// Connections that flooded until the deadline.
    lasted: usize,
    /// Connections that failed (to connect, or closed by the server), by kind.
    failures: BTreeMap<String, u64>,
    seconds: f64,
    /// Bytes of whitespace written into the connections' sockets. At first the kernel's
    /// socket buffers take several MB per connection whatever the server reads.
    bytes: u64,
    mb_per_s: f64,
    /// Over the second half of the run, once those buffers are full: what the server reads.
    mb_per_s_second_half: f64,
    /// Server CPU (utime + stime) over the run, in % of one core.
    server_cpu_pct: Option<f64>,
}

impl FloodReport {
    fn human(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "flood: {} connections (tls {}, from {}), {} lasted {:.1} s; {} bytes of \
             whitespace taken, {:.3} MB/s, {:.3} MB/s over the second half",
            self.connections,
            self.tls,
            self.source.as_deref().unwrap_or("any"),
            self.lasted,
            self.seconds,
            self.bytes,
            self.mb_per_s,
            self.mb_per_s_second_half
        );
        if let Some(c) = self.server_cpu_pct {
            let _ = writeln!(o, "server CPU: {c:.1} % of one core");
        }
        for (k, v) in &self.failures {
            let _ = writeln!(o, "failure {k}: {v}");
        }
        o
    }
}

pub async fn run_flood(a: &Args, opts: ConnectOptions, n: usize) -> Result<Report, String> {
    let header = format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{}' version='1.0'>",
        opts.domain
    );
    let start = Instant::now();
    let deadline = start + a.duration;
    let sent = Arc::new(AtomicU64::new(0));
    let cpu0 = CpuSnap::take(a.server_pid);
    let half = a.duration / 2;
    let at_half = {
        let sent = sent.clone();
        tokio::spawn(async move {
            tokio::time::sleep(half).await;
            (sent.load(Ordering::Relaxed), Instant::now())
        })
    };
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (opts, header, sent) = (opts.clone(), header.clone(), sent.clone());
        set.spawn(async move { flood_one(&opts, &header, deadline, &sent).await });
    }
    let (mut lasted, mut failures) = (0, BTreeMap::<String, u64>::new());
    while let Some(r) = set.join_next().await {
        match r.map_err(|e| e.to_string())? {
            Ok(()) => lasted += 1,
            Err(kind) => *failures.entry(kind).or_default() += 1,
        }
    }
    let cpu1 = CpuSnap::take(a.server_pid);
    let seconds = cpu1.at.duration_since(start).as_secs_f64();
    let bytes = sent.load(Ordering::Relaxed);
    let (bytes_half, t_half) = at_half.await.map_err(|e| e.to_string())?;
    let second_half =
        (bytes - bytes_half) as f64 / 1e6 / cpu1.at.duration_since(t_half).as_secs_f64();
    let server_cpu_pct = cpu_ms(cpu0.server, cpu1.server, clk_tck())
        .map(|ms| r3(ms / 10.0 / cpu1.at.duration_since(cpu0.at).as_secs_f64()));
    let report = FloodReport {
        connections: n,
        tls: a.tls.name(),
        source: opts.source.map(|s| s.to_string()),
        lasted,
        failures,
        seconds: r3(seconds),
        bytes,
        mb_per_s: r3(bytes as f64 / 1e6 / seconds),
        mb_per_s_second_half: r3(second_half),
        server_cpu_pct,
    };
    let out = if a.json {
        serde_json::to_string(&report).map_err(|e| e.to_string())?
    } else {
        report.human()
    };
    Ok((out, lasted == 0))
}

/// One flooding connection: `Ok` if it flooded until `deadline`, else the kind of failure.
async fn flood_one(
    opts: &ConnectOptions,
    header: &str,
    deadline: Instant,
    sent: &AtomicU64,
) -> Result<(), String> {
    let connect = async {
        match opts.source {
            None => TcpStream::connect(opts.addr).await,
            Some(ip) => {
                let socket = if ip.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.bind(std::net::SocketAddr::new(ip, 0))?;
                socket.connect(opts.addr).await
            }
        }
    };
    let tcp = tokio::time::timeout(opts.timeout, connect)
        .await
        .map_err(|_| "timeout:connect".to_owned())?
        .map_err(|e| format!("connect:{:?}", e.kind()))?;
    match opts.tls {
        Tls::Direct => {
            let config = client_tls_config(&opts.ca_pem).map_err(|e| format!("tls:{e}"))?;
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(opts.domain.clone())
                .map_err(|e| format!("tls:{e}"))?;
            let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
            let tls = tokio::time::timeout(opts.timeout, handshake)
                .await
                .map_err(|_| "timeout:tls".to_owned())?
                .map_err(|_| "tls".to_owned())?;
            pump(tls, header, deadline, sent).await
        }
        _ => pump(tcp, header, deadline, sent).await,
    }
}

/// The stream header, then whitespace until `deadline`, counted as the socket takes it.
async fn pump(
    mut s: impl AsyncWrite + Unpin,
    header: &str,
    deadline: Instant,
    sent: &AtomicU64,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::from_std(deadline);
    let io = |e: std::io::Error| format!("io:{:?}", e.kind());
    tokio::time::timeout_at(deadline, s.write_all(header.as_bytes()))
        .await
        .map_err(|_| "timeout:header".to_owned())?
        .map_err(io)?;
    let chunk = vec![b' '; CHUNK];
    loop {
        match tokio::time::timeout_at(deadline, s.write(&chunk)).await {
            Err(_) => return Ok(()),
            Ok(Ok(0)) => return Err("closed".into()),
            Ok(Ok(k)) => {
                sent.fetch_add(k as u64, Ordering::Relaxed);
            }
            Ok(Err(e)) => return Err(io(e)),
        }
    }
}

/// Bound on `--flood`.
pub const MAX_FLOOD: usize = 10_000;
