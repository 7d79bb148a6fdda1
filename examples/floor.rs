//! The floor under a FAST login (issue 13 item 2): server CPU per connection of a bare rustls
//! server (accept, TLS 1.3 handshake, one byte each way, close) next to the example host
//! doing a whole FAST login (HT-SHA-256-EXPR, server proof checked by the client), over direct
//! TLS and STARTTLS, each with a full and a resumed TLS handshake, in one run on one machine.
//! The bare server also runs with two and three one-byte exchanges, the round trips of a
//! pipelined and of a direct-TLS FAST login, so the table separates what the round trips
//! cost (kernel, wakeups) from what the login itself costs.
//!
//! ```sh
//! cargo run --release --example floor -- --conns 2000 --rounds 5 --concurrency 4
//! ```
//!
//! Both servers run as child processes of this one (`floor serve-host`, `floor serve-bare`)
//! on the *same* rustls `ServerConfig` (`sasl2_fast_host::tls::setup`, the same generated
//! certificate, the same session tickets), each on a tokio multi-thread runtime like the
//! `host` binary. Server CPU is the child's `CLOCK_PROCESS_CPUTIME_ID` (all its threads, dead
//! ones included, ns resolution), read before and after each batch over the child's stdin;
//! the clients' CPU (this process) is not counted. Variants run interleaved (every round runs
//! each variant once, in a rotated order) because the machine is shared; the table shows the
//! median of the rounds, and each variant's rounds paired with the bare handshake's rounds
//! (the ratio within one round, whose variants run seconds apart). "Resumed" clients share
//! one rustls `ClientConfig` per worker, so each connection resumes the previous one's
//! session from its ticket; "full" clients use a fresh config per connection. Every resumed connection is checked to really be resumed.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use sasl2_fast_host::client::{Client, ConnectOptions, LoginOptions, Tls, client_tls_config};
use sasl2_fast_host::{Host, HostConfig, Listeners};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::rustls;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const MECH: &str = "HT-SHA-256-EXPR";

#[derive(Parser)]
#[command(about = "Server CPU per connection: bare rustls handshake vs a whole FAST login")]
struct Args {
    #[command(subcommand)]
    serve: Option<Serve>,
    /// Connections per variant per round.
    #[arg(long, default_value_t = 200)]
    conns: usize,
    /// Rounds (each runs every variant once).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Connections in flight at once (one simulated client each).
    #[arg(long, short = 'c', default_value_t = 4)]
    concurrency: usize,
    /// Print one JSON object per (round, variant) as well.
    #[arg(long)]
    json: bool,
    /// Run only these variants (for profiling one of them): bare-full, bare-resumed,
    /// bare2-full, bare2-resumed, bare3-full, bare3-resumed,
    /// direct-full, direct-resumed, pipelined-full, pipelined-resumed, starttls-full,
    /// starttls-resumed. Default: all.
    #[arg(long = "only", value_delimiter = ',')]
    only: Vec<String>,
}

#[derive(Subcommand)]
enum Serve {
    /// (internal) The example host on loopback, data under DIR.
    ServeHost { dir: PathBuf },
    /// (internal) A bare rustls server with the host's TLS config, data under DIR.
    ServeBare { dir: PathBuf },
}

/// This process's CPU time (all threads, live and exited), in nanoseconds.
fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Child side: answers each line on stdin with `cpu <ns>`; returns when stdin closes.
fn answer_cpu_queries() {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        if line.is_err() {
            break;
        }
        println!("cpu {}", process_cpu_ns());
    }
}

fn host_config(dir: &Path) -> HostConfig {
    let mut config =
        HostConfig::new("localhost", dir.join("data")).with_account("alice", "alicepass");
    // One source address per worker, many connections each: not what this limit is for.
    config.server.max_unauthenticated_per_ip = 100_000;
    config
}

fn serve_host(dir: &Path) -> Result<(), BoxError> {
    let rt = tokio::runtime::Runtime::new()?;
    let host: Host = rt.block_on(async {
        let listeners = Listeners::loopback(true).await?;
        Ok::<_, BoxError>(Host::start(listeners, host_config(dir)).await?)
    })?;
    println!("starttls {}", host.local_addr());
    println!(
        "direct {}",
        host.tls_local_addr().expect("direct TLS listener")
    );
    println!("cert {}", host.cert_pem_path().display());
    answer_cpu_queries();
    eprintln!(
        "host: {} full and {} resumed TLS handshakes",
        host.tls_handshakes().full(),
        host.tls_handshakes().resumed()
    );
    rt.block_on(host.shutdown());
    Ok(())
}

/// Accept, TLS handshake, read one byte, write one byte, close.
async fn bare_connection(acceptor: tokio_rustls::TlsAcceptor, tcp: tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
    let Ok(mut tls) = acceptor.accept(tcp).await else {
        return;
    };
    // Echo bytes until `x`, then close: the client sends `x` alone for one exchange, or
    // `a`s first to make the round trips of a FAST login (see `Kind::Bare`).
    let mut b = [0u8; 1];
    while tls.read_exact(&mut b).await.is_ok() {
        if b[0] == b'x' {
            let _ = tls.write_all(&b).await;
            let _ = tls.shutdown().await;
            return;
        }
        if tls.write_all(&b).await.is_err() || tls.flush().await.is_err() {
            return;
        }
    }
}

fn serve_bare(dir: &Path) -> Result<(), BoxError> {
    let c = host_config(dir).server;
    // The host's own config: same certificate (generated by the host child), same tickets.
    let tls =
        sasl2_fast_host::tls::setup(&c.domain, &c.data_dir, None, None, c.tls_session_tickets)?;
    let rt = tokio::runtime::Runtime::new()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    println!("bare {}", listener.local_addr()?);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
    rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(bare_connection(acceptor.clone(), tcp));
        }
    });
    answer_cpu_queries();
    Ok(())
}

/// A server child process and the pipe that asks it for its CPU time.
struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Server {
    fn spawn(cmd: &str, dir: &Path, lines: usize) -> Result<(Server, Vec<String>), BoxError> {
        // FLOOR_SERVER_WRAPPER="valgrind --tool=callgrind" runs the servers under a profiler
        // (instruction counts do not depend on the machine's load).
        let wrapper = std::env::var("FLOOR_SERVER_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let exe = std::env::current_exe()?;
        let mut command = match words.next() {
            Some(w) => {
                let mut c = Command::new(w);
                c.args(words).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let mut child = command
            .arg(cmd)
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut out = Vec::new();
        for _ in 0..lines {
            let mut l = String::new();
            if stdout.read_line(&mut l)? == 0 {
                return Err(format!("{cmd} exited before it was ready").into());
            }
            out.push(l.trim().split_once(' ').ok_or("bad line")?.1.to_owned());
        }
        Ok((
            Server {
                child,
                stdin,
                stdout,
            },
            out,
        ))
    }

    fn cpu_ns(&mut self) -> Result<u64, BoxError> {
        writeln!(self.stdin, "cpu")?;
        let mut l = String::new();
        self.stdout.read_line(&mut l)?;
        Ok(l.trim()
            .strip_prefix("cpu ")
            .ok_or("bad cpu line")?
            .parse()?)
    }

    fn stop(self) -> Result<(), BoxError> {
        let Server {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        child.wait()?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The floor: TLS handshake, then this many one-byte exchanges, then close. 1 is the
    /// bare handshake; 2 and 3 have the round trips of a pipelined and of a direct-TLS FAST
    /// login (the server waits for the client 3 and 4 times), to tell what the round trips
    /// cost from what the login costs.
    Bare(u8),
    Direct,
    /// Direct TLS, with the stream header and `<authenticate>` in one write straight after the
    /// handshake, before the features (Conversations' "quick start", ../shared/docs/peers.md).
    Pipelined,
    StartTls,
}

#[derive(Debug, Clone, Copy)]
struct Variant {
    kind: Kind,
    resumed: bool,
}

impl Variant {
    fn id(&self) -> String {
        let k = match self.kind {
            Kind::Bare(1) => "bare",
            Kind::Bare(2) => "bare2",
            Kind::Bare(_) => "bare3",
            Kind::Direct => "direct",
            Kind::Pipelined => "pipelined",
            Kind::StartTls => "starttls",
        };
        format!("{k}-{}", if self.resumed { "resumed" } else { "full" })
    }

    fn name(&self) -> String {
        let k = match self.kind {
            Kind::Bare(1) => "bare rustls (1 byte each way)",
            Kind::Bare(2) => "bare rustls, 2 exchanges (a pipelined login's round trips)",
            Kind::Bare(_) => "bare rustls, 3 exchanges (a direct login's round trips)",
            Kind::Direct => "FAST login, direct TLS",
            Kind::Pipelined => "FAST login, direct TLS, pipelined",
            Kind::StartTls => "FAST login, STARTTLS",
        };
        format!(
            "{k}, {}",
            if self.resumed {
                "resumed"
            } else {
                "full handshake"
            }
        )
    }
}

/// One simulated client: its source address, token and (when resuming) session stores, one
/// per server process (rustls keys tickets by server name, and both are `localhost`).
struct Worker {
    source: std::net::IpAddr,
    ua: String,
    token: String,
    tls_config: Arc<rustls::ClientConfig>,
    bare_tls_config: Arc<rustls::ClientConfig>,
}

struct Targets {
    bare: SocketAddr,
    direct: SocketAddr,
    starttls: SocketAddr,
    ca_pem: Vec<u8>,
}

fn opts(t: &Targets, w: &Worker, kind: Kind, resumed: bool) -> ConnectOptions {
    let (addr, tls) = match kind {
        Kind::StartTls => (t.starttls, Tls::StartTls),
        _ => (t.direct, Tls::Direct),
    };
    ConnectOptions {
        addr,
        tls,
        ca_pem: t.ca_pem.clone(),
        domain: "localhost".into(),
        from: Some("alice@localhost".into()),
        timeout: Duration::from_secs(10),
        source: Some(w.source),
        tls_config: resumed.then(|| w.tls_config.clone()),
    }
}

/// One connection of `v`; returns whether its TLS session was resumed.
async fn one(t: &Targets, w: &Worker, v: Variant) -> Result<bool, BoxError> {
    if let Kind::Bare(exchanges) = v.kind {
        let config = if v.resumed {
            w.bare_tls_config.clone()
        } else {
            client_tls_config(&t.ca_pem)?
        };
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(w.source, 0))?;
        let tcp = sock.connect(t.bare).await?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from("localhost")?;
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let mut b = [0u8; 1];
        for _ in 1..exchanges {
            tls.write_all(b"a").await?;
            tls.flush().await?;
            tls.read_exact(&mut b).await?;
        }
        tls.write_all(b"x").await?;
        tls.read_exact(&mut b).await?;
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest).await?;
        return Ok(resumed);
    }
    let lo = LoginOptions::agent(&w.ua);
    let mut c = if v.kind == Kind::Pipelined {
        // One write: header and <authenticate>; then header, features and <success>.
        let mut c = Client::establish(opts(t, w, v.kind, v.resumed)).await?;
        let msg = c.fast_initial_response("alice", &w.token, MECH)?;
        let mut bytes = c.header_xml().into_bytes();
        Client::authenticate_element(MECH, Some(&msg), &lo, true).write_to(&mut bytes)?;
        c.send_raw(&bytes).await?;
        c.read_stream_start().await?;
        c.read_fast_outcome(&w.token, MECH).await?.into_success()?;
        c
    } else {
        let mut c = Client::connect(opts(t, w, v.kind, v.resumed)).await?;
        c.login_fast("alice", &w.token, MECH, &lo)
            .await?
            .into_success()?;
        c
    };
    c.close().await?;
    Ok(c.tls_resumed)
}

/// `n` connections of `v` spread over the workers; returns (resumed count, wall time).
async fn batch(
    t: &Arc<Targets>,
    workers: &Arc<Vec<Worker>>,
    v: Variant,
    n: usize,
) -> Result<usize, BoxError> {
    let mut tasks = Vec::new();
    for wi in 0..workers.len() {
        let (t, workers) = (t.clone(), workers.clone());
        let share = n / workers.len() + usize::from(wi < n % workers.len());
        tasks.push(tokio::spawn(async move {
            let mut resumed = 0;
            for _ in 0..share {
                resumed += usize::from(one(&t, &workers[wi], v).await?);
            }
            Ok::<_, BoxError>(resumed)
        }));
    }
    let mut resumed = 0;
    for task in tasks {
        resumed += task.await??;
    }
    Ok(resumed)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

async fn measure(args: Args) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let (mut host, h) = Server::spawn("serve-host", dir.path(), 3)?;
    let (mut bare, b) = Server::spawn("serve-bare", dir.path(), 1)?;
    eprintln!(
        "server pids: host {}, bare {}",
        host.child.id(),
        bare.child.id()
    );
    let targets = Arc::new(Targets {
        starttls: h[0].parse()?,
        direct: h[1].parse()?,
        bare: b[0].parse()?,
        ca_pem: std::fs::read(&h[2])?,
    });
    // Each worker logs in once with its password for its own FAST token (not measured).
    let mut workers = Vec::new();
    for i in 0..args.concurrency {
        let source = std::net::IpAddr::from([127, 0, 1, 1 + (i % 250) as u8]);
        let ua = format!("00000000-0000-4000-8000-{:012}", i);
        let mut w = Worker {
            source,
            ua,
            token: String::new(),
            tls_config: client_tls_config(&targets.ca_pem)?,
            bare_tls_config: client_tls_config(&targets.ca_pem)?,
        };
        let mut c = Client::connect(opts(&targets, &w, Kind::Direct, false)).await?;
        let s = c
            .login_plain(
                "alice",
                "alicepass",
                &LoginOptions::agent(&w.ua).request_token(MECH),
            )
            .await?
            .into_success()?;
        w.token = s.token.ok_or("no token")?.token;
        c.close().await?;
        workers.push(w);
    }
    let workers = Arc::new(workers);
    let kinds = [
        Kind::Bare(1),
        Kind::Bare(2),
        Kind::Bare(3),
        Kind::Direct,
        Kind::Pipelined,
        Kind::StartTls,
    ];
    let variants: Vec<Variant> = kinds
        .into_iter()
        .flat_map(|kind| [false, true].map(|resumed| Variant { kind, resumed }))
        .filter(|v| args.only.is_empty() || args.only.contains(&v.id()))
        .collect();
    if variants.is_empty() {
        return Err(format!("--only {:?} names no variant", args.only).into());
    }
    // Warm-up: every variant once, so ticket stores are filled and caches are warm.
    for &v in &variants {
        batch(&targets, &workers, v, args.concurrency * 4).await?;
    }
    let mut per_conn: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let started = Instant::now();
    for round in 0..args.rounds {
        for k in 0..variants.len() {
            let vi = (k + round) % variants.len();
            let v = variants[vi];
            let server = if matches!(v.kind, Kind::Bare(_)) {
                &mut bare
            } else {
                &mut host
            };
            let before = server.cpu_ns()?;
            let t0 = Instant::now();
            let resumed = batch(&targets, &workers, v, args.conns).await?;
            let wall = t0.elapsed();
            let cpu = server.cpu_ns()? - before;
            let expected = if v.resumed { args.conns } else { 0 };
            if resumed != expected {
                return Err(format!("{}: {resumed} of {} resumed", v.name(), args.conns).into());
            }
            let us = cpu as f64 / 1000.0 / args.conns as f64;
            per_conn[vi].push(us);
            if args.json {
                println!(
                    "{{\"round\":{round},\"variant\":\"{}\",\"conns\":{},\"server_cpu_us_per_conn\":{us:.1},\"wall_s\":{:.3}}}",
                    v.name(),
                    args.conns,
                    wall.as_secs_f64()
                );
            }
        }
    }
    let medians: Vec<f64> = per_conn.iter().map(|v| median(v.clone())).collect();
    let median_of = |kind: Kind, resumed: bool| {
        let i = variants
            .iter()
            .position(|v| v.kind == kind && v.resumed == resumed)?;
        Some(medians[i])
    };
    // The bare variant with the same round trips (STARTTLS has plaintext ones: none).
    let same_trips = |kind: Kind| match kind {
        Kind::Direct => Some(Kind::Bare(3)),
        Kind::Pipelined => Some(Kind::Bare(2)),
        Kind::Bare(n) => Some(Kind::Bare(n)),
        Kind::StartTls => None,
    };
    println!(
        "{} connections per variant per round, {} rounds, concurrency {}, {:.1} s",
        args.conns,
        args.rounds,
        args.concurrency,
        started.elapsed().as_secs_f64()
    );
    // Paired: each round's figure over the bare handshake's of the same round. The variants of
    // one round run within seconds of each other, so a drift of the machine's speed over the
    // run (other tenants) moves both sides of a paired ratio alike.
    let paired = |vi: usize, resumed: bool| -> Option<String> {
        let bi = variants
            .iter()
            .position(|v| v.kind == Kind::Bare(1) && v.resumed == resumed)?;
        let ratios: Vec<f64> = per_conn[vi]
            .iter()
            .zip(&per_conn[bi])
            .map(|(x, b)| x / b)
            .collect();
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(0.0, f64::max);
        Some(format!("{:.2} ({lo:.2}–{hi:.2})", median(ratios)))
    };
    println!(
        "| variant | server CPU µs/connection (median) | rounds | × bare handshake | × bare, same round trips | × bare handshake of the same round: median (range) |"
    );
    println!("|---|---|---|---|---|---|");
    for (vi, v) in variants.iter().enumerate() {
        let rounds: Vec<String> = per_conn[vi].iter().map(|x| format!("{x:.0}")).collect();
        let ratio_to =
            |base: Option<f64>| base.map_or("-".into(), |b| format!("{:.2}", medians[vi] / b));
        let ratio = ratio_to(median_of(Kind::Bare(1), v.resumed));
        let same = ratio_to(same_trips(v.kind).and_then(|k| median_of(k, v.resumed)));
        let paired = paired(vi, v.resumed).unwrap_or_else(|| "-".into());
        println!(
            "| {} | {:.1} | {} | {ratio} | {same} | {paired} |",
            v.name(),
            medians[vi],
            rounds.join(", "),
        );
    }
    host.stop()?;
    bare.stop()?;
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    match &args.serve {
        Some(Serve::ServeHost { dir }) => serve_host(dir),
        Some(Serve::ServeBare { dir }) => serve_bare(dir),
        None => {
            if args.conns == 0 || args.rounds == 0 || args.concurrency == 0 {
                return Err("--conns, --rounds and --concurrency must be at least 1".into());
            }
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(measure(args))
        }
    }
}
