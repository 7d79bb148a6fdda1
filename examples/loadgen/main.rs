//! Load generator for XMPP servers: full SASL2 logins (connect, TLS, stream, authenticate,
//! success, close) in a loop, FAST or password, with latency percentiles, failures by kind
//! and, given `--server-pid`, the server's CPU time per login. `--hold N` instead opens N
//! authenticated connections and keeps them idle (for a memory figure); `--flood N` opens N
//! unauthenticated ones that send whitespace as fast as the server reads (for the
//! pre-authentication flood figure).
//!
//! ```text
//! cargo run --release --example loadgen -- --port 5222 --user alice --password alicepass \
//!     --tls starttls --ca data/tls/cert.pem --mode fast --concurrency 8 --duration 10
//! ```
//!
//! Every loop is bounded by `--duration` (at most 600 s) and `--max-logins`. Only loopback
//! targets are accepted unless `--allow-non-loopback` is given. It drives the host crate's
//! test client (`sasl2_fast_host::client`), the same one the TCP tests use.
//!
//! Exit status: 0 ok, 1 setup error, 2 usage, 3 no login succeeded.

mod flood;
mod hold;
mod logins;
mod probe;
mod procfs;
mod resume;
mod stats;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use sasl2_fast_host::client::{ConnectOptions, Tls};

const MAX_DURATION_S: f64 = 600.0;
const MAX_LOGINS_CAP: u64 = 100_000_000;
const MAX_HOLD: usize = 200_000;
/// Bound on `--tls-clients` (each holds a rustls `ClientConfig` and its session store).
const MAX_TLS_CLIENTS: i64 = 1_000_000;

/// How a simulated client logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// FAST with `--mech` (tokens obtained first with `--setup-mode`).
    Fast,
    #[value(name = "scram-sha-1")]
    Scram1,
    #[value(name = "scram-sha-256")]
    Scram256,
    Plain,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Fast => "fast",
            Mode::Scram1 => "scram-sha-1",
            Mode::Scram256 => "scram-sha-256",
            Mode::Plain => "plain",
        }
    }
}

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsArg {
    None,
    Starttls,
    Direct,
}

impl TlsArg {
    pub fn tls(self) -> Tls {
        match self {
            TlsArg::None => Tls::None,
            TlsArg::Starttls => Tls::StartTls,
            TlsArg::Direct => Tls::Direct,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            TlsArg::None => "none",
            TlsArg::Starttls => "starttls",
            TlsArg::Direct => "direct",
        }
    }
}

/// Load generator for XMPP servers: SASL2 logins (FAST or password) in a loop, or N idle
/// authenticated connections with --hold.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "loadgen",
    args_override_self = true,
    after_help = "Exit status: 0 ok, 1 setup error, 2 usage, 3 no login succeeded."
)]
pub struct Args {
    /// Server address or name (loopback only unless --allow-non-loopback).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (default 5222, 5223 with --tls direct).
    #[arg(long)]
    pub port: Option<u16>,
    /// XMPP domain and TLS server name.
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// Account localpart.
    #[arg(long, default_value = "alice")]
    pub user: String,
    /// Password.
    #[arg(long, default_value = "alicepass")]
    pub password: String,
    /// Connection security.
    #[arg(long, value_enum, default_value = "starttls")]
    pub tls: TlsArg,
    /// PEM certificate(s) to trust (e.g. <data_dir>/tls/cert.pem).
    #[arg(long)]
    pub ca: Option<String>,
    /// Trust the chain the server presents on a first probe connection.
    #[arg(long)]
    pub insecure: bool,
    /// Login mode.
    #[arg(long, value_enum, default_value = "fast")]
    pub mode: Mode,
    /// FAST mechanism.
    #[arg(long, default_value = "HT-SHA-256-NONE", value_parser = ht_mechanism)]
    pub mech: String,
    /// Password mechanism used to obtain FAST tokens.
    #[arg(long, value_enum, default_value = "scram-sha-256", value_parser = password_mode)]
    pub setup_mode: Mode,
    /// Simulated clients running in parallel (1..100000).
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Seconds of load (0 < S <= 600).
    #[arg(short, long, default_value = "10", value_parser = seconds)]
    pub duration: Duration,
    /// Stop after this many logins in all.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=MAX_LOGINS_CAP))]
    pub max_logins: u64,
    /// Open N authenticated connections and keep them idle until Ctrl-C or --duration;
    /// --concurrency connections are opened at a time.
    #[arg(long, value_parser = hold_count)]
    pub hold: Option<usize>,
    /// Open N connections that send a stream header and then whitespace, before any login,
    /// as fast as the server reads it, until --duration; reports the bytes taken and, with
    /// --server-pid, the server's CPU.
    #[arg(long, value_parser = flood_count, conflicts_with = "hold")]
    pub flood: Option<usize>,
    /// Local address to connect from (another loopback address looks like another client to
    /// the per-address limits).
    #[arg(long)]
    pub source: Option<std::net::IpAddr>,
    /// Report the server's CPU time (/proc/PID/stat) and RSS (/proc/PID/status).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Prefix of the user-agent ids; client i uses PREFIX-i.
    #[arg(long, default_value = "loadgen")]
    pub agent_prefix: String,
    /// Bound on every single wait for the server, seconds (0 < S <= 600).
    #[arg(long, default_value = "10", value_parser = seconds)]
    pub timeout: Duration,
    /// Runtime worker threads (default: number of CPUs).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Each simulated client keeps its TLS session store, so its logins resume TLS (the
    /// resumed 1-RTT login: the <authenticate> waits for the features).
    #[arg(long)]
    pub resume: bool,
    /// FAST in TLS 1.3 early data: stream header and <authenticate> (with count) sent with
    /// the ClientHello of a resumed session. Needs --tls direct, --mode fast, a -NONE
    /// mechanism, and the host's tls_early_data = true.
    #[arg(long)]
    pub zero_rtt: bool,
    /// With --resume or --zero-rtt: N devices' TLS session stores, shared round-robin by the
    /// workers (each login takes the next device's), so the host must resume N distinct
    /// sessions. Each device first makes one uncounted full handshake (the warm-up). FAST
    /// tokens stay one per --concurrency worker.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_TLS_CLIENTS))]
    pub tls_clients: Option<u32>,
    /// Send `<fast count>` (one more per login) outside 0-RTT too: the accepted count is
    /// then written durably on every login, as it is in 0-RTT (a control for --zero-rtt).
    #[arg(long)]
    pub count: bool,
    /// Route every connection through a loopback relay that delays each chunk this many
    /// milliseconds each way; the report then gives round trips = median latency / (2 x D).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub delay_ms: Option<u32>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Allow a target outside 127.0.0.0/8 and ::1.
    #[arg(long)]
    pub allow_non_loopback: bool,
}

impl Args {
    pub fn concurrency(&self) -> usize {
        self.concurrency as usize
    }
}

fn ht_mechanism(s: &str) -> Result<String, String> {
    sasl2_fast::fast::HtMechanism::from_name(s)
        .map(|m| m.name().to_owned())
        .ok_or_else(|| format!("unknown HT mechanism {s}"))
}

fn password_mode(s: &str) -> Result<Mode, String> {
    Mode::from_str(s, true)
        .ok()
        .filter(|m| *m != Mode::Fast)
        .ok_or_else(|| format!("expected a password mode, got {s}"))
}

fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s.parse().map_err(|_| format!("not a number: {s}"))?;
    if v > 0.0 && v <= MAX_DURATION_S {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("0 < S <= {MAX_DURATION_S}"))
    }
}

fn flood_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=flood::MAX_FLOOD).contains(&n) => Ok(n),
        _ => Err(format!("1..{}", flood::MAX_FLOOD)),
    }
}

fn hold_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_HOLD).contains(&n) => Ok(n),
        _ => Err(format!("1..{MAX_HOLD}")),
    }
}

/// A report, and whether the run counts as failed (no successful login at all).
pub type Report = (String, bool);

fn is_loopback(addr: &SocketAddr) -> bool {
    match addr {
        SocketAddr::V4(a) => a.ip().is_loopback(),
        SocketAddr::V6(a) => {
            a.ip().is_loopback() || a.ip().to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// PEM of what the client trusts: `--ca`, or with `--insecure` the last certificate of the
/// chain the server presents on a probe connection.
async fn trust_anchor(a: &Args, addr: SocketAddr) -> Result<Vec<u8>, String> {
    if a.tls == TlsArg::None {
        return Ok(Vec::new());
    }
    if let Some(path) = &a.ca {
        return std::fs::read(path).map_err(|e| format!("--ca {path}: {e}"));
    }
    probe::probe_chain_pem(addr, a.tls.tls(), &a.domain, a.timeout).await
}

async fn main_async(args: Args) -> Result<Report, String> {
    let port = args.port.unwrap_or(match args.tls {
        TlsArg::Direct => 5223,
        _ => 5222,
    });
    let addr = tokio::net::lookup_host((args.host.as_str(), port))
        .await
        .map_err(|e| format!("{}: {e}", args.host))?
        .next()
        .ok_or_else(|| format!("{}: no address", args.host))?;
    if !is_loopback(&addr) && !args.allow_non_loopback {
        return Err(format!(
            "{addr} is not a loopback address; pass --allow-non-loopback to load a remote server"
        ));
    }
    let ca_pem = trust_anchor(&args, addr).await?;
    if args.zero_rtt
        && (args.tls != TlsArg::Direct || args.mode != Mode::Fast || !args.mech.ends_with("-NONE"))
    {
        return Err("--zero-rtt needs --tls direct, --mode fast and a -NONE --mech".into());
    }
    if args.tls_clients.is_some() && !(args.resume || args.zero_rtt) {
        return Err("--tls-clients needs --resume or --zero-rtt".into());
    }
    let addr = match args.delay_ms {
        Some(ms) => resume::start_delay_relay(addr, Duration::from_millis(u64::from(ms))).await?,
        None => addr,
    };
    let opts = ConnectOptions {
        addr,
        tls: args.tls.tls(),
        ca_pem,
        domain: args.domain.clone(),
        from: Some(format!("{}@{}", args.user, args.domain)),
        timeout: args.timeout,
        source: args.source,
        tls_config: None,
    };
    if let Some(n) = args.flood {
        return flood::run_flood(&args, opts, n).await;
    }
    let hold = args.hold;
    let ctx = Arc::new(logins::Ctx::new(args, opts));
    match hold {
        Some(n) => hold::run_hold(ctx, n).await,
        None => logins::run_logins(ctx).await,
    }
}

fn main() -> ExitCode {
    // clap prints usage errors and exits with status 2, `--help` with 0.
    let args = Args::parse();
    if args.tls != TlsArg::None && args.ca.is_none() && !args.insecure {
        eprintln!("error: TLS needs --ca FILE (or --insecure)");
        return ExitCode::from(2);
    }
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all();
    if let Some(t) = args.threads {
        b.worker_threads(t.into());
    }
    let rt = match b.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(main_async(args)) {
        Ok((out, failed)) => {
            if !out.is_empty() {
                println!("{}", out.trim_end());
            }
            if failed {
                eprintln!("error: no login succeeded");
                return ExitCode::from(3);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
