//! Soak: mixed load against the release host while it is killed with SIGKILL and restarted,
//! reporting what must never happen (issue 11 item 10):
//!
//! - **tokens lost**: a token a client received (in `<success>`) that later answers
//!   `not-authorized`, although nothing revoked or replaced it;
//! - **revoked tokens accepted**: a token of an account whose password was changed (with
//!   `host passwd` while the host was down) that still logs in;
//!
//! and the host's RSS over time. The load per worker: FAST logins, rotations (FAST logins that
//! request a new token, which the worker then uses), password logins, and invalidations (logout).
//!
//! ```text
//! cargo run --release --example soak -- --duration 1800 --restart-every 120
//! cargo run --release --example soak -- --duration 60 --restart-every 15   # what CI runs
//! ```
//!
//! Exit status 0 when nothing was lost or wrongly accepted, 1 otherwise. Loopback only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use sasl2_fast_host::client::{Client, ConnectOptions, LoginOptions, Outcome, Tls};
use sasl2_fast_host::harness::{HostProcess, host_passwd};

/// Mixed FAST load against a host that is killed and restarted.
#[derive(Debug, Parser)]
struct Args {
    /// Seconds to run.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=7200))]
    duration: u64,
    /// Seconds between kill -9 and restart of the host.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
    restart_every: u64,
    /// Client workers (each a FAST client of its own).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    workers: u64,
    /// The host binary (default: target/release/examples/host next to this program).
    #[arg(long)]
    host_bin: Option<PathBuf>,
}

const MECH: &str = "HT-SHA-256-EXPR";

#[derive(Default)]
struct Counters {
    fast_ok: AtomicU64,
    rotations: AtomicU64,
    password_logins: AtomicU64,
    invalidations: AtomicU64,
    connect_errors: AtomicU64,
    expected_refusals: AtomicU64,
    lost: AtomicU64,
    revoked_accepted: AtomicU64,
}

/// The host under test and where to reach it.
struct Target {
    addr: std::sync::Mutex<Option<SocketAddr>>,
    cert: PathBuf,
    /// Bumped on every password change of `rev`: tokens of `rev` from an older epoch are revoked.
    rev_epoch: AtomicU64,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

async fn connect(t: &Target) -> Option<Client> {
    let addr = (*t.addr.lock().unwrap())?;
    let opts = ConnectOptions::localhost(addr, Tls::StartTls, &t.cert, None).ok()?;
    Client::connect(opts).await.ok()
}

/// One client: `account` is `alice` (never revoked) or `rev` (revoked at every restart).
async fn worker(
    id: u64,
    account: &'static str,
    t: Arc<Target>,
    c: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    let ua = format!("50a50a50-0000-4000-8000-{id:012}");
    let password = |epoch: u64| format!("pw-{epoch}");
    // The newest token received, and the `rev` epoch it was issued in.
    let mut token: Option<(String, u64)> = None;
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let Some(mut client) = connect(&t).await else {
            c.connect_errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let epoch = t.rev_epoch.load(Ordering::SeqCst);
        match token.clone() {
            None => {
                let pw = if account == "rev" {
                    password(epoch)
                } else {
                    "alicepass".into()
                };
                let opts = LoginOptions::agent(&ua).request_token(MECH);
                match client
                    .login_scram(account, &pw, "SCRAM-SHA-256-PLUS", &opts)
                    .await
                {
                    Ok(Outcome::Success(s)) => {
                        c.password_logins.fetch_add(1, Ordering::Relaxed);
                        if let Some(tk) = s.token {
                            token = Some((tk.token, epoch));
                        }
                    }
                    Ok(Outcome::Failure(_)) => {
                        // `rev`'s password changed between reading the epoch and logging in.
                        c.expected_refusals.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        c.connect_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Some((tk, issued_in)) => {
                let mut opts = LoginOptions::agent(&ua);
                let action = n % 10;
                if action == 3 {
                    opts = opts.request_token(MECH);
                } else if action == 7 {
                    opts = opts.invalidate();
                }
                match client.login_fast(account, &tk, MECH, &opts).await {
                    Ok(Outcome::Success(s)) => {
                        // The epoch moves only while the host is down, and a kill breaks
                        // every connection, so `epoch` is the one this host serves under.
                        if account == "rev" && issued_in < epoch {
                            c.revoked_accepted.fetch_add(1, Ordering::Relaxed);
                            eprintln!("revoked token of {ua} accepted");
                        }
                        c.fast_ok.fetch_add(1, Ordering::Relaxed);
                        if action == 7 {
                            c.invalidations.fetch_add(1, Ordering::Relaxed);
                            token = None;
                        } else if let Some(new) = s.token {
                            // Requested, or rotated because the token was older than
                            // token_min_ttl: the new one is what the client uses from now on.
                            c.rotations.fetch_add(1, Ordering::Relaxed);
                            token = Some((new.token, epoch));
                        }
                    }
                    Ok(Outcome::Failure(f)) => {
                        let revoked = account == "rev" && issued_in < epoch;
                        if f.condition == "credentials-expired" && revoked {
                            c.expected_refusals.fetch_add(1, Ordering::Relaxed);
                        } else {
                            c.lost.fetch_add(1, Ordering::Relaxed);
                            eprintln!(
                                "token of {account}/{ua} lost: {} (issued in epoch {issued_in}, now {epoch})",
                                f.condition
                            );
                        }
                        token = None;
                    }
                    Err(_) => {
                        // The host died mid-login. Whether or not the server committed a
                        // rotation, the token the client holds stays valid (F-17); an
                        // invalidation may have been committed, so that token is dropped.
                        c.connect_errors.fetch_add(1, Ordering::Relaxed);
                        if action == 7 {
                            token = None;
                        }
                    }
                }
            }
        }
    }
}

fn passwd(bin: &Path, config: &Path, user: &str, password: &str) {
    let out = host_passwd(bin, config, user, &format!("{password}\n")).expect("host passwd");
    assert!(out.status.success(), "host passwd failed");
}

fn main() -> ExitCode {
    let args = Args::parse();
    let bin = args
        .host_bin
        .clone()
        .unwrap_or_else(|| std::env::current_exe().unwrap().with_file_name("host"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        "[server]\ndomain = \"localhost\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
         login_throttle_failures = 0\n\
         [accounts]\nalice = \"alicepass\"\nrev = \"pw-0\"\n[plugins.fast]\nenabled = true\n\
         token_min_ttl = 1\ntoken_ttl = 3600\n",
    )
    .unwrap();
    let start = || HostProcess::start(&bin, &config, Some("warn")).expect("start the host");
    let mut child = start();
    let addr = child.addr();
    let target = Arc::new(Target {
        addr: std::sync::Mutex::new(Some(addr)),
        cert: dir.path().join("data/tls/cert.pem"),
        rev_epoch: AtomicU64::new(0),
    });
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for id in 0..args.workers {
        let account = if id % 2 == 0 { "alice" } else { "rev" };
        tasks.push(rt.spawn(worker(
            id,
            account,
            target.clone(),
            counters.clone(),
            stop.clone(),
        )));
    }
    let started = Instant::now();
    let mut next_restart = started + Duration::from_secs(args.restart_every);
    let mut restarts = 0;
    let mut rss = vec![(0u64, rss_kib(child.pid()))];
    while started.elapsed() < Duration::from_secs(args.duration) {
        std::thread::sleep(Duration::from_millis(500));
        let t = started.elapsed().as_secs();
        if rss.last().is_some_and(|(s, _)| t >= s + 5) {
            rss.push((t, rss_kib(child.pid())));
        }
        if Instant::now() >= next_restart {
            *target.addr.lock().unwrap() = None;
            child.kill9();
            // Change rev's password while the host is down: its tokens are revoked.
            let epoch = target.rev_epoch.load(Ordering::SeqCst) + 1;
            passwd(&bin, &config, "rev", &format!("pw-{epoch}"));
            target.rev_epoch.store(epoch, Ordering::SeqCst);
            child = start();
            *target.addr.lock().unwrap() = Some(child.addr());
            restarts += 1;
            next_restart = Instant::now() + Duration::from_secs(args.restart_every);
        }
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    });
    child.kill9();
    let c = &counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "soak {} s, {restarts} kill -9 restarts, {} workers: FAST logins {}, rotations {}, \
         password logins {}, invalidations {}, expected refusals {}, connection errors {}",
        args.duration,
        args.workers,
        get(&c.fast_ok),
        get(&c.rotations),
        get(&c.password_logins),
        get(&c.invalidations),
        get(&c.expected_refusals),
        get(&c.connect_errors)
    );
    println!(
        "RSS (s: KiB): {}",
        rss.iter()
            .map(|(t, k)| format!("{t}: {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "tokens lost: {}, revoked tokens accepted: {}",
        get(&c.lost),
        get(&c.revoked_accepted)
    );
    if get(&c.lost) == 0 && get(&c.revoked_accepted) == 0 && get(&c.fast_ok) > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
