//! Load generator for XMPP servers: full SASL2 logins (connect, TLS, stream, authenticate,
//! success, close) in a loop, FAST or password, with latency percentiles, failures by kind
//! and, given `--server-pid`, the server's CPU time per login. `--hold N` instead opens N
//! authenticated connections and keeps them idle (for a memory figure).
//!
//! ```text
//! cargo run --release --example loadgen -- --port 5222 --user alice --password alicepass \
//!     --tls starttls --ca data/tls/cert.pem --mode fast --concurrency 8 --duration 10
//! ```
//!
//! Every loop is bounded by `--duration` (at most 600 s) and `--max-logins`. Only loopback
//! targets are accepted unless `--allow-non-loopback` is given.

#[path = "../common/client.rs"]
mod client;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{Client, ClientError, ConnectOptions, LoginOptions, Outcome, Tls};

const USAGE: &str = "usage: loadgen [options]
  --host H              server address or name (default 127.0.0.1; loopback only unless
                        --allow-non-loopback)
  --port P              port (default 5222, 5223 with --tls direct)
  --domain D            XMPP domain / TLS server name (default localhost)
  --user U              account localpart (default alice)
  --password PW         password (default alicepass)
  --tls none|starttls|direct   (default starttls)
  --ca FILE             PEM certificate(s) to trust (e.g. <data_dir>/tls/cert.pem)
  --insecure            trust the chain the server presents on a first probe connection
  --mode fast|scram-sha-1|scram-sha-256|plain   (default fast)
  --mech HT-...         FAST mechanism (default HT-SHA-256-NONE)
  --setup-mode M        password mechanism used to obtain FAST tokens (default scram-sha-256)
  --concurrency N       simulated clients running in parallel (default 1)
  --duration S          seconds of load, 1..600 (default 10)
  --max-logins N        stop after this many logins in all (default 1000000)
  --hold N              open N authenticated connections and keep them idle until Ctrl-C
                        or --duration; --concurrency connections are opened at a time
  --server-pid PID      report the server's CPU time (/proc/PID/stat) and RSS (/proc/PID/status)
  --agent-prefix S      prefix of the user-agent ids (default loadgen); client i uses S-i
  --timeout S           bound on every single wait for the server (default 10)
  --threads N           runtime worker threads (default: number of CPUs)
  --json                print the result as one JSON object
  --allow-non-loopback  allow a target outside 127.0.0.0/8 and ::1
Exit status: 0 ok, 1 setup error, 2 usage, 3 no login succeeded.";

const MAX_DURATION_S: u64 = 600;
const MAX_LOGINS_CAP: u64 = 100_000_000;
const MAX_HOLD: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Fast,
    Scram1,
    Scram256,
    Plain,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        Some(match s.to_ascii_lowercase().as_str() {
            "fast" => Mode::Fast,
            "scram-sha-1" => Mode::Scram1,
            "scram-sha-256" => Mode::Scram256,
            "plain" => Mode::Plain,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Fast => "fast",
            Mode::Scram1 => "scram-sha-1",
            Mode::Scram256 => "scram-sha-256",
            Mode::Plain => "plain",
        }
    }
}

#[derive(Debug, Clone)]
struct Args {
    host: String,
    port: Option<u16>,
    domain: String,
    user: String,
    password: String,
    tls: Tls,
    ca: Option<String>,
    insecure: bool,
    mode: Mode,
    mech: String,
    setup_mode: Mode,
    concurrency: usize,
    duration: Duration,
    max_logins: u64,
    hold: Option<usize>,
    server_pid: Option<u32>,
    agent_prefix: String,
    timeout: Duration,
    threads: Option<usize>,
    json: bool,
    allow_non_loopback: bool,
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: None,
        domain: "localhost".into(),
        user: "alice".into(),
        password: "alicepass".into(),
        tls: Tls::StartTls,
        ca: None,
        insecure: false,
        mode: Mode::Fast,
        mech: "HT-SHA-256-NONE".into(),
        setup_mode: Mode::Scram256,
        concurrency: 1,
        duration: Duration::from_secs(10),
        max_logins: 1_000_000,
        hold: None,
        server_pid: None,
        agent_prefix: "loadgen".into(),
        timeout: Duration::from_secs(10),
        threads: None,
        json: false,
        allow_non_loopback: false,
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        // `--flag=value` and `--flag value` are both accepted.
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_owned())),
            _ => (flag.as_str(), None),
        };
        let mut value = |inline: Option<String>| -> Result<String, String> {
            match inline {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value")),
            }
        };
        fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("{name}: not a valid number: {v}"))
        }
        match name {
            "--host" => a.host = value(inline)?,
            "--port" => a.port = Some(num(name, &value(inline)?)?),
            "--domain" => a.domain = value(inline)?,
            "--user" => a.user = value(inline)?,
            "--password" => a.password = value(inline)?,
            "--tls" => {
                a.tls = match value(inline)?.as_str() {
                    "none" => Tls::None,
                    "starttls" => Tls::StartTls,
                    "direct" => Tls::Direct,
                    v => return Err(format!("--tls: expected none|starttls|direct, got {v}")),
                }
            }
            "--ca" => a.ca = Some(value(inline)?),
            "--insecure" => a.insecure = true,
            "--mode" => {
                let v = value(inline)?;
                a.mode = Mode::parse(&v).ok_or_else(|| format!("--mode: unknown mode {v}"))?;
            }
            "--setup-mode" => {
                let v = value(inline)?;
                a.setup_mode = Mode::parse(&v)
                    .filter(|m| *m != Mode::Fast)
                    .ok_or_else(|| format!("--setup-mode: expected a password mode, got {v}"))?;
            }
            "--mech" => a.mech = value(inline)?,
            "--concurrency" | "-c" => a.concurrency = num(name, &value(inline)?)?,
            "--duration" | "-d" => {
                let s: f64 = num(name, &value(inline)?)?;
                if !(s > 0.0 && s <= MAX_DURATION_S as f64) {
                    return Err(format!("--duration: 0 < S <= {MAX_DURATION_S}"));
                }
                a.duration = Duration::from_secs_f64(s);
            }
            "--max-logins" => a.max_logins = num(name, &value(inline)?)?,
            "--hold" => a.hold = Some(num(name, &value(inline)?)?),
            "--server-pid" => a.server_pid = Some(num(name, &value(inline)?)?),
            "--agent-prefix" => a.agent_prefix = value(inline)?,
            "--timeout" => {
                let s: f64 = num(name, &value(inline)?)?;
                if !(s > 0.0 && s <= 600.0) {
                    return Err("--timeout: 0 < S <= 600".into());
                }
                a.timeout = Duration::from_secs_f64(s);
            }
            "--threads" => a.threads = Some(num(name, &value(inline)?)?),
            "--json" => a.json = true,
            "--allow-non-loopback" => a.allow_non_loopback = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.concurrency == 0 || a.concurrency > 100_000 {
        return Err("--concurrency: 1..100000".into());
    }
    if a.max_logins == 0 || a.max_logins > MAX_LOGINS_CAP {
        return Err(format!("--max-logins: 1..{MAX_LOGINS_CAP}"));
    }
    if let Some(n) = a.hold
        && (n == 0 || n > MAX_HOLD)
    {
        return Err(format!("--hold: 1..{MAX_HOLD}"));
    }
    if a.threads == Some(0) {
        return Err("--threads: at least 1".into());
    }
    if sasl2_fast::fast::HtMechanism::from_name(&a.mech).is_none() {
        return Err(format!("--mech: unknown HT mechanism {}", a.mech));
    }
    if a.tls != Tls::None && a.ca.is_none() && !a.insecure {
        return Err("TLS needs --ca FILE (or --insecure)".into());
    }
    Ok(a)
}

// ---------------------------------------------------------------------------------------------
// /proc readings (Linux): CPU time and resident memory of a process.

/// Clock ticks per second for `/proc/<pid>/stat` times (`getconf CLK_TCK`, else 100).
fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

/// utime + stime of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: fields after it start past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[derive(Debug, Clone, Copy)]
struct CpuSnap {
    server: Option<u64>,
    own: Option<u64>,
    at: Instant,
}

fn snap(server_pid: Option<u32>) -> CpuSnap {
    CpuSnap {
        server: server_pid.and_then(|p| cpu_ticks(&p.to_string())),
        own: cpu_ticks("self"),
        at: Instant::now(),
    }
}

// ---------------------------------------------------------------------------------------------
// Failures

/// A short, countable name for a failure: `auth:<condition>`, `stream-error:<condition>`,
/// `io:<kind>`, `timeout:<what>`, `tls`, `closed`, `protocol`, `sasl`, `server-proof-mismatch`.
fn failure_kind(e: &ClientError) -> String {
    match e {
        ClientError::Io(e) => match e.raw_os_error() {
            Some(code) => format!("io:{:?}(os {code})", e.kind()),
            None => format!("io:{:?}", e.kind()),
        },
        ClientError::Tls(_) => "tls".into(),
        ClientError::Xml(_) => "xml".into(),
        ClientError::Timeout(w) => format!("timeout:{w}"),
        ClientError::Closed => "closed".into(),
        ClientError::StreamError { condition, .. } => format!("stream-error:{condition}"),
        ClientError::Protocol(_) => "protocol".into(),
        ClientError::Sasl(_) => "sasl".into(),
        ClientError::ServerProofMismatch => "server-proof-mismatch".into(),
        ClientError::AuthFailed { condition, .. } => format!("auth:{condition}"),
    }
}

// ---------------------------------------------------------------------------------------------
// TLS trust

/// PEM of what the client trusts: `--ca`, or with `--insecure` the last certificate of the
/// chain the server presents on a probe connection (trust on first use).
async fn trust_anchor(a: &Args, addr: SocketAddr) -> Result<Vec<u8>, String> {
    if a.tls == Tls::None {
        return Ok(Vec::new());
    }
    if let Some(path) = &a.ca {
        return std::fs::read(path).map_err(|e| format!("--ca {path}: {e}"));
    }
    insecure::probe_chain_pem(addr, a.tls, &a.domain, a.timeout).await
}

mod insecure {
    //! `--insecure`: one probe connection that accepts any certificate and records the chain;
    //! the load then runs with normal verification against the recorded top certificate.

    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use base64::Engine as _;
    use sasl2_fast::xml::reader::{Limits, StreamEvent, StreamReader, stream_header_xml};
    use sasl2_fast::xml::{NS_CLIENT, NS_TLS};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::client::danger::{
        HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
    };
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

    use super::Tls;

    #[derive(Debug)]
    struct Recorder {
        provider: Arc<rustls::crypto::CryptoProvider>,
        chain: Mutex<Vec<CertificateDer<'static>>>,
    }

    impl ServerCertVerifier for Recorder {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            let mut chain = vec![end_entity.clone().into_owned()];
            chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
            if let Ok(mut c) = self.chain.lock() {
                *c = chain;
            }
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    /// Reads stream events until an element satisfying `done` arrives.
    async fn read_until(
        tcp: &mut TcpStream,
        reader: &mut StreamReader,
        done: impl Fn(&sasl2_fast::xml::Element) -> bool,
    ) -> Result<(), String> {
        let mut buf = [0u8; 4096];
        loop {
            while let Some(ev) = reader.next_event().map_err(|e| e.to_string())? {
                match ev {
                    StreamEvent::Element(e) if done(&e) => return Ok(()),
                    StreamEvent::End => return Err("server closed the stream".into()),
                    _ => {}
                }
            }
            let n = tcp.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("server closed the connection".into());
            }
            reader.feed(&buf[..n]).map_err(|e| e.to_string())?;
        }
    }

    async fn probe(
        addr: SocketAddr,
        tls: Tls,
        domain: &str,
        recorder: Arc<Recorder>,
    ) -> Result<(), String> {
        let mut tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        if tls == Tls::StartTls {
            let header = stream_header_xml(NS_CLIENT, None, Some(domain), None, Some("1.0"), None);
            tcp.write_all(header.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut reader = StreamReader::new(Limits::default());
            read_until(&mut tcp, &mut reader, |e| e.name() == "features").await?;
            tcp.write_all(format!("<starttls xmlns='{NS_TLS}'/>").as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            read_until(&mut tcp, &mut reader, |e| e.is("proceed", NS_TLS)).await?;
        }
        let config = rustls::ClientConfig::builder_with_provider(recorder.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(recorder.clone())
            .with_no_client_auth();
        let name = ServerName::try_from(domain.to_owned()).map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let mut s = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let _ = s.shutdown().await;
        Ok(())
    }

    pub async fn probe_chain_pem(
        addr: SocketAddr,
        tls: Tls,
        domain: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let recorder = Arc::new(Recorder {
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            chain: Mutex::new(Vec::new()),
        });
        tokio::time::timeout(timeout, probe(addr, tls, domain, recorder.clone()))
            .await
            .map_err(|_| "--insecure probe timed out".to_owned())??;
        let chain = recorder.chain.lock().map_err(|e| e.to_string())?.clone();
        let top = chain
            .last()
            .ok_or_else(|| "the server presented no certificate".to_owned())?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(top.as_ref());
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        Ok(pem.into_bytes())
    }
}

// ---------------------------------------------------------------------------------------------
// One login

struct Ctx {
    args: Args,
    opts: ConnectOptions,
    /// The TLS version the first secured connection negotiated (for the report).
    tls_version: std::sync::OnceLock<String>,
}

impl Ctx {
    fn agent(&self, i: usize) -> String {
        format!("{}-{i}", self.args.agent_prefix)
    }

    /// Connects, secures, opens the stream (bounded by the per-wait timeout).
    async fn connect(&self) -> Result<Client, ClientError> {
        let c = Client::connect(self.opts.clone()).await?;
        if self.tls_version.get().is_none()
            && let Some(v) = c.tls_version
        {
            let _ = self.tls_version.set(format!("{v:?}"));
        }
        Ok(c)
    }

    fn tls_version(&self) -> String {
        self.tls_version
            .get()
            .cloned()
            .unwrap_or_else(|| "-".to_owned())
    }

    /// A password login on an open stream, optionally requesting a FAST token.
    async fn password_login(
        &self,
        c: &mut Client,
        mode: Mode,
        lo: &LoginOptions,
    ) -> Result<Outcome, ClientError> {
        let a = &self.args;
        match mode {
            Mode::Scram1 => c.login_scram(&a.user, &a.password, "SCRAM-SHA-1", lo).await,
            Mode::Scram256 => {
                c.login_scram(&a.user, &a.password, "SCRAM-SHA-256", lo)
                    .await
            }
            Mode::Plain => c.login_plain(&a.user, &a.password, lo).await,
            Mode::Fast => Err(ClientError::Protocol("FAST is not a password login".into())),
        }
    }

    /// A password login of client `i` with `<request-token>`: its FAST token.
    async fn obtain_token(&self, i: usize) -> Result<String, ClientError> {
        let mut c = self.connect().await?;
        let lo = LoginOptions::agent(&self.agent(i)).request_token(&self.args.mech);
        let s = self
            .password_login(&mut c, self.args.setup_mode, &lo)
            .await?
            .into_success()?;
        let _ = c.close().await;
        s.token
            .map(|t| t.token)
            .ok_or_else(|| ClientError::Protocol("no <token> in the password login".into()))
    }

    /// Authenticates an open stream as client `i`. Returns a rotated token, if one came.
    async fn authenticate(
        &self,
        c: &mut Client,
        i: usize,
        token: Option<&str>,
    ) -> Result<Option<String>, ClientError> {
        let a = &self.args;
        match (a.mode, token) {
            (Mode::Fast, Some(t)) => {
                let lo = LoginOptions::agent(&self.agent(i));
                // The client checks the server proof (ServerProofMismatch otherwise).
                let s = c
                    .login_fast(&a.user, t, &a.mech, &lo)
                    .await?
                    .into_success()?;
                Ok(s.token.map(|t| t.token))
            }
            (Mode::Fast, None) => Err(ClientError::Protocol("no FAST token".into())),
            (m, _) => {
                self.password_login(c, m, &LoginOptions::default())
                    .await?
                    .into_success()?;
                Ok(None)
            }
        }
    }

    /// One full login: connect, TLS, stream, authenticate, success, close.
    async fn full_login(
        &self,
        i: usize,
        token: Option<&str>,
    ) -> Result<Option<String>, ClientError> {
        let mut c = self.connect().await?;
        let rotated = self.authenticate(&mut c, i, token).await?;
        c.close().await?;
        Ok(rotated)
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics

#[derive(Default)]
struct WorkerStats {
    /// Full-login latencies of successful logins, microseconds.
    lat_us: Vec<u32>,
    failures: BTreeMap<String, u64>,
    rotations: u64,
    refreshes: u64,
    /// First error text of each kind, for the human report.
    examples: BTreeMap<String, String>,
}

impl WorkerStats {
    fn fail(&mut self, e: &ClientError) {
        let k = failure_kind(e);
        self.examples
            .entry(k.clone())
            .or_insert_with(|| e.to_string());
        *self.failures.entry(k).or_default() += 1;
    }

    fn merge(&mut self, o: WorkerStats) {
        self.lat_us.extend(o.lat_us);
        for (k, v) in o.failures {
            *self.failures.entry(k).or_default() += v;
        }
        for (k, v) in o.examples {
            self.examples.entry(k).or_insert(v);
        }
        self.rotations += o.rotations;
        self.refreshes += o.refreshes;
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1000.0
}

/// A JSON string literal.
fn js(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn jnum(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.3}"),
        _ => "null".into(),
    }
}

fn tls_name(t: Tls) -> &'static str {
    match t {
        Tls::None => "none",
        Tls::StartTls => "starttls",
        Tls::Direct => "direct",
    }
}

// ---------------------------------------------------------------------------------------------
// Phases

/// Obtains one FAST token per simulated client (bounded by the deadline).
async fn setup_tokens(ctx: &Arc<Ctx>, n: usize, deadline: Instant) -> Result<Vec<String>, String> {
    let mut set = tokio::task::JoinSet::new();
    let next = Arc::new(AtomicU64::new(0));
    let tokens = Arc::new(Mutex::new(vec![None::<String>; n]));
    for _ in 0..ctx.args.concurrency.min(n).min(64) {
        let (ctx, next, tokens) = (ctx.clone(), next.clone(), tokens.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                if i >= n {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err("deadline reached while obtaining tokens".to_owned());
                }
                let t = ctx
                    .obtain_token(i)
                    .await
                    .map_err(|e| format!("obtaining the token of client {i}: {e}"))?;
                if let Ok(mut v) = tokens.lock() {
                    v[i] = Some(t);
                }
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    let v = tokens.lock().map_err(|e| e.to_string())?.clone();
    v.into_iter()
        .enumerate()
        .map(|(i, t)| t.ok_or_else(|| format!("client {i} got no token")))
        .collect()
}

async fn login_worker(
    ctx: Arc<Ctx>,
    i: usize,
    mut token: Option<String>,
    deadline: Instant,
    started: Arc<AtomicU64>,
) -> WorkerStats {
    let mut st = WorkerStats::default();
    loop {
        if Instant::now() >= deadline
            || started.fetch_add(1, Ordering::SeqCst) >= ctx.args.max_logins
        {
            break;
        }
        let t0 = Instant::now();
        match ctx.full_login(i, token.as_deref()).await {
            Ok(rotated) => {
                let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
                st.lat_us.push(us);
                if let Some(t) = rotated {
                    // Rotation (F-16): the next login must use the new token.
                    token = Some(t);
                    st.rotations += 1;
                }
            }
            Err(e) => {
                st.fail(&e);
                let lost_token = matches!(&e, ClientError::AuthFailed { condition, .. }
                    if condition == "not-authorized" || condition == "credentials-expired");
                if ctx.args.mode == Mode::Fast && lost_token && Instant::now() < deadline {
                    if let Ok(t) = ctx.obtain_token(i).await {
                        token = Some(t);
                        st.refreshes += 1;
                    }
                } else {
                    // Do not spin on a refused connection.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    st
}

/// A report, and whether the run counts as failed (no successful login at all).
type Report = (String, bool);

async fn run_logins(ctx: Arc<Ctx>) -> Result<Report, String> {
    let a = &ctx.args;
    let hard_deadline = Instant::now() + a.duration + Duration::from_secs(120);
    let t_setup = Instant::now();
    let tokens = if a.mode == Mode::Fast {
        setup_tokens(&ctx, a.concurrency, hard_deadline)
            .await?
            .into_iter()
            .map(Some)
            .collect()
    } else {
        vec![None; a.concurrency]
    };
    let setup_s = t_setup.elapsed().as_secs_f64();

    let started = Arc::new(AtomicU64::new(0));
    let before = snap(a.server_pid);
    let deadline = before.at + a.duration;
    let mut set = tokio::task::JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        set.spawn(login_worker(
            ctx.clone(),
            i,
            token,
            deadline,
            started.clone(),
        ));
    }
    let mut st = WorkerStats::default();
    while let Some(r) = set.join_next().await {
        st.merge(r.map_err(|e| e.to_string())?);
    }
    let after = snap(a.server_pid);
    let elapsed = after.at.duration_since(before.at).as_secs_f64();

    st.lat_us.sort_unstable();
    let ok = st.lat_us.len() as u64;
    let failed: u64 = st.failures.values().sum();
    let rate = ok as f64 / elapsed;
    let tck = clk_tck() as f64;
    let cpu_ms = |b: Option<u64>, a: Option<u64>| match (b, a) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 * 1000.0 / tck),
        _ => None,
    };
    let server_cpu_ms = cpu_ms(before.server, after.server);
    let own_cpu_ms = cpu_ms(before.own, after.own);
    let per_login = |v: Option<f64>| v.filter(|_| ok > 0).map(|ms| ms / ok as f64);
    let (p50, p90, p99) = (
        percentile(&st.lat_us, 50.0),
        percentile(&st.lat_us, 90.0),
        percentile(&st.lat_us, 99.0),
    );
    let max = st.lat_us.last().map_or(0.0, |&u| u as f64 / 1000.0);
    let mean = if ok > 0 {
        st.lat_us.iter().map(|&u| u as f64).sum::<f64>() / ok as f64 / 1000.0
    } else {
        0.0
    };
    let mech = if a.mode == Mode::Fast {
        a.mech.clone()
    } else {
        a.mode.name().to_ascii_uppercase()
    };

    if a.json {
        let mut fails = String::from("{");
        for (n, (k, v)) in st.failures.iter().enumerate() {
            if n > 0 {
                fails.push(',');
            }
            let _ = write!(fails, "{}:{v}", js(k));
        }
        fails.push('}');
        let json = format!(
            "{{\"mode\":{},\"mechanism\":{},\"tls\":{},\"tls_version\":{},\"concurrency\":{},\"duration_s\":{:.3},\
\"setup_s\":{:.3},\"logins_ok\":{ok},\"logins_failed\":{failed},\"logins_per_s\":{:.1},\
\"latency_ms\":{{\"p50\":{p50:.3},\"p90\":{p90:.3},\"p99\":{p99:.3},\"mean\":{mean:.3},\"max\":{max:.3}}},\
\"failures\":{fails},\"rotations\":{},\"token_refreshes\":{},\"server_pid\":{},\
\"server_cpu_ms\":{},\"server_cpu_ms_per_login\":{},\"loadgen_cpu_ms\":{},\
\"loadgen_cpu_ms_per_login\":{},\"clk_tck\":{}}}",
            js(a.mode.name()),
            js(&mech),
            js(tls_name(a.tls)),
            js(&ctx.tls_version()),
            a.concurrency,
            elapsed,
            setup_s,
            rate,
            st.rotations,
            st.refreshes,
            a.server_pid.map_or("null".into(), |p| p.to_string()),
            jnum(server_cpu_ms),
            jnum(per_login(server_cpu_ms)),
            jnum(own_cpu_ms),
            jnum(per_login(own_cpu_ms)),
            tck,
        );
        return Ok((json, ok == 0));
    }
    let mut o = String::new();
    let _ = writeln!(
        o,
        "mode {} ({mech}), tls {} ({}), concurrency {}, {:.2} s (setup {:.2} s)",
        a.mode.name(),
        tls_name(a.tls),
        ctx.tls_version(),
        a.concurrency,
        elapsed,
        setup_s
    );
    let _ = writeln!(o, "logins: {ok} ok, {failed} failed, {rate:.1} logins/s");
    let _ = writeln!(
        o,
        "latency ms: p50 {p50:.3}  p90 {p90:.3}  p99 {p99:.3}  mean {mean:.3}  max {max:.3}"
    );
    if a.mode == Mode::Fast {
        let _ = writeln!(
            o,
            "rotated tokens followed: {}, tokens re-obtained: {}",
            st.rotations, st.refreshes
        );
    }
    if let (Some(ms), Some(pid)) = (server_cpu_ms, a.server_pid) {
        let _ = writeln!(
            o,
            "server cpu (pid {pid}): {ms:.0} ms, {} ms/login",
            jnum(per_login(Some(ms)))
        );
    }
    if let Some(ms) = own_cpu_ms {
        let _ = writeln!(
            o,
            "loadgen cpu: {ms:.0} ms, {} ms/login",
            jnum(per_login(Some(ms)))
        );
    }
    for (k, v) in &st.failures {
        let _ = writeln!(
            o,
            "failure {k}: {v} (e.g. {})",
            st.examples.get(k).map_or("", String::as_str)
        );
    }
    Ok((o, ok == 0))
}

/// `--hold N`: N authenticated idle connections, until Ctrl-C or `--duration`.
async fn run_hold(ctx: Arc<Ctx>, n: usize) -> Result<Report, String> {
    let a = &ctx.args;
    let t0 = Instant::now();
    let deadline = t0 + a.duration;
    let pid = a.server_pid.map(|p| p.to_string());
    let rss = |f: &str| pid.as_deref().and_then(|p| status_kib(p, f));
    let rss_before = rss("VmRSS");
    let own_before = status_kib("self", "VmRSS");

    let agents = a.concurrency.min(n);
    let tokens: Vec<Option<String>> = if a.mode == Mode::Fast {
        setup_tokens(&ctx, agents, deadline)
            .await?
            .into_iter()
            .map(Some)
            .collect()
    } else {
        vec![None; agents]
    };
    let tokens = Arc::new(tokens);
    // The baseline of the per-connection figure: after the token logins, so one-time costs
    // (store pages, TLS and SASL state warmed up by the first logins) are not counted.
    tokio::time::sleep(
        Duration::from_millis(500).min(deadline.saturating_duration_since(Instant::now())),
    )
    .await;
    let rss_setup = rss("VmRSS");
    let held = Arc::new(Mutex::new(Vec::<Client>::with_capacity(n)));
    let next = Arc::new(AtomicU64::new(0));
    let t_open = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..agents {
        let (ctx, tokens, held, next) = (ctx.clone(), tokens.clone(), held.clone(), next.clone());
        set.spawn(async move {
            let mut st = WorkerStats::default();
            loop {
                let k = next.fetch_add(1, Ordering::SeqCst) as usize;
                if k >= n || Instant::now() >= deadline {
                    break;
                }
                // Connection k authenticates as client k % agents; FAST tokens may be used by
                // several connections at once (verification does not consume them).
                let i = k % tokens.len();
                let t0 = Instant::now();
                let r = async {
                    let mut c = ctx.connect().await?;
                    ctx.authenticate(&mut c, i, tokens[i].as_deref()).await?;
                    Ok::<_, ClientError>(c)
                }
                .await;
                match r {
                    Ok(c) => {
                        st.lat_us
                            .push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        if let Ok(mut h) = held.lock() {
                            h.push(c);
                        }
                    }
                    Err(e) => {
                        st.fail(&e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            st
        });
    }
    let mut st = WorkerStats::default();
    while let Some(r) = set.join_next().await {
        st.merge(r.map_err(|e| e.to_string())?);
    }
    let open_s = t_open.elapsed().as_secs_f64();
    let opened = held.lock().map_err(|e| e.to_string())?.len();
    // Let the server finish its per-connection work and free transient buffers.
    let settle = Duration::from_secs(2).min(deadline.saturating_duration_since(Instant::now()));
    tokio::time::sleep(settle).await;
    let rss_after = rss("VmRSS");
    let hwm = rss("VmHWM");
    let own_after = status_kib("self", "VmRSS");
    let failed: u64 = st.failures.values().sum();
    let per_conn = match (rss_setup, rss_after) {
        (Some(b), Some(a)) if opened > 0 => Some((a as f64 - b as f64) / opened as f64),
        _ => None,
    };
    let kib = |v: Option<u64>| v.map_or("null".into(), |x| x.to_string());
    let report = if a.json {
        let mut fails = String::from("{");
        for (k, (name, v)) in st.failures.iter().enumerate() {
            if k > 0 {
                fails.push(',');
            }
            let _ = write!(fails, "{}:{v}", js(name));
        }
        fails.push('}');
        format!(
            "{{\"hold\":{n},\"mode\":{},\"tls\":{},\"tls_version\":{},\"opened\":{opened},\"failed\":{failed},\
\"failures\":{fails},\"open_s\":{open_s:.3},\"server_pid\":{},\"server_rss_kib_before\":{},\
\"server_rss_kib_after_setup\":{},\"server_rss_kib_after\":{},\"server_hwm_kib\":{},\"server_kib_per_connection\":{},\
\"loadgen_rss_kib_before\":{},\"loadgen_rss_kib_after\":{}}}",
            js(a.mode.name()),
            js(tls_name(a.tls)),
            js(&ctx.tls_version()),
            a.server_pid.map_or("null".into(), |p| p.to_string()),
            kib(rss_before),
            kib(rss_setup),
            kib(rss_after),
            kib(hwm),
            jnum(per_conn),
            kib(own_before),
            kib(own_after),
        )
    } else {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "hold: {opened} of {n} connections authenticated ({}, tls {}) in {open_s:.2} s, {failed} failed",
            a.mode.name(),
            tls_name(a.tls)
        );
        if let (Some(b), Some(af)) = (rss_before, rss_after) {
            let _ = writeln!(
                o,
                "server RSS: {b} KiB at start, {} KiB after the token logins, {af} KiB with the \
                 connections (peak {} KiB): {} KiB per connection",
                kib(rss_setup),
                kib(hwm),
                jnum(per_conn)
            );
        }
        let _ = writeln!(
            o,
            "loadgen RSS: {} KiB before, {} KiB after",
            kib(own_before),
            kib(own_after)
        );
        for (k, v) in &st.failures {
            let _ = writeln!(
                o,
                "failure {k}: {v} (e.g. {})",
                st.examples.get(k).map_or("", String::as_str)
            );
        }
        o
    };
    // Print now: the figure is taken; then hold until Ctrl-C or the deadline.
    println!("{}", report.trim_end());
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    if !a.json {
        eprintln!(
            "holding {opened} connections for {:.0} s more (Ctrl-C to stop)",
            deadline
                .saturating_duration_since(Instant::now())
                .as_secs_f64()
        );
    }
    tokio::select! {
        _ = tokio::time::sleep_until(deadline.into()) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let clients = std::mem::take(&mut *held.lock().map_err(|e| e.to_string())?);
    drop(clients);
    Ok((String::new(), opened == 0))
}

fn is_loopback(addr: &SocketAddr) -> bool {
    match addr {
        SocketAddr::V4(a) => a.ip().is_loopback(),
        SocketAddr::V6(a) => {
            a.ip().is_loopback() || a.ip().to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

async fn main_async(args: Args) -> Result<Report, String> {
    let port = args.port.unwrap_or(match args.tls {
        Tls::Direct => 5223,
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
    let opts = ConnectOptions {
        addr,
        tls: args.tls,
        ca_pem,
        domain: args.domain.clone(),
        from: Some(format!("{}@{}", args.user, args.domain)),
        timeout: args.timeout,
    };
    let hold = args.hold;
    let ctx = Arc::new(Ctx {
        args,
        opts,
        tls_version: std::sync::OnceLock::new(),
    });
    match hold {
        Some(n) => run_hold(ctx, n).await,
        None => run_logins(ctx).await,
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all();
    if let Some(t) = args.threads {
        b.worker_threads(t);
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
