//! The login loop: every simulated client obtains a FAST token once (password login with
//! `<request-token>`), then logs in again and again on fresh connections until the deadline,
//! following rotated tokens (F-16) and re-obtaining a token it lost.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sasl2_fast_host::client::zero_rtt::ZeroRttLogin;
use sasl2_fast_host::client::{Client, ClientError, ConnectOptions, LoginOptions, Outcome};
use serde::Serialize;

use crate::procfs::{CpuSnap, clk_tck, cpu_ms, status_kib};
use crate::stats::{WorkerStats, percentile, r3};
use crate::{Args, Mode, Report};

/// What every worker shares.
pub struct Ctx {
    pub args: Args,
    opts: ConnectOptions,
    /// The TLS version the first secured connection negotiated (for the report).
    tls_version: OnceLock<String>,
    /// `--tls-clients`: the devices' connect options (each with its own TLS session store),
    /// and the next one to use.
    devices: OnceLock<Vec<ConnectOptions>>,
    next_device: AtomicU64,
}

impl Ctx {
    pub fn new(args: Args, opts: ConnectOptions) -> Ctx {
        Ctx {
            args,
            opts,
            tls_version: OnceLock::new(),
            devices: OnceLock::new(),
            next_device: AtomicU64::new(0),
        }
    }

    fn agent(&self, i: usize) -> String {
        format!("{}-{i}", self.args.agent_prefix)
    }

    /// The options of one simulated client: with `--resume`/`--zero-rtt` its own TLS session
    /// store, shared by its connections only (as one real client's).
    fn client_opts(&self) -> Result<ConnectOptions, ClientError> {
        if self.args.zero_rtt {
            self.opts.clone().with_early_data()
        } else if self.args.resume {
            self.opts.clone().with_tls_resumption()
        } else {
            Ok(self.opts.clone())
        }
    }

    /// The options of the next login: the next device's with `--tls-clients`, else the
    /// worker's own.
    fn login_opts<'a>(&'a self, own: &'a ConnectOptions) -> &'a ConnectOptions {
        match self.devices.get() {
            Some(d) if !d.is_empty() => {
                let k = self.next_device.fetch_add(1, Ordering::Relaxed) as usize;
                &d[k % d.len()]
            }
            _ => own,
        }
    }

    /// Connects with `opts` and closes again (not a login): gives a client its first TLS
    /// session. Whether that connection itself resumed.
    async fn first_session(&self, opts: &ConnectOptions) -> Result<bool, ClientError> {
        let mut c = self.connect_with(opts).await?;
        let _ = c.close().await;
        Ok(c.tls_resumed)
    }

    /// Connects, secures, opens the stream (bounded by the per-wait timeout).
    pub async fn connect(&self) -> Result<Client, ClientError> {
        self.connect_with(&self.opts).await
    }

    async fn connect_with(&self, opts: &ConnectOptions) -> Result<Client, ClientError> {
        let c = Client::connect(opts.clone()).await?;
        if self.tls_version.get().is_none()
            && let Some(v) = c.tls_version
        {
            let _ = self.tls_version.set(format!("{v:?}"));
        }
        Ok(c)
    }

    pub fn tls_version(&self) -> String {
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
    pub async fn authenticate(
        &self,
        c: &mut Client,
        i: usize,
        token: Option<&str>,
    ) -> Result<Option<String>, ClientError> {
        self.authenticate_counted(c, i, token, None).await
    }

    /// [`Ctx::authenticate`] with `<fast count>` (FAST only).
    async fn authenticate_counted(
        &self,
        c: &mut Client,
        i: usize,
        token: Option<&str>,
        count: Option<u32>,
    ) -> Result<Option<String>, ClientError> {
        let a = &self.args;
        match (a.mode, token) {
            (Mode::Fast, Some(t)) => {
                let mut lo = LoginOptions::agent(&self.agent(i));
                lo.fast_count = count;
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

    /// One full login: connect, TLS, stream, authenticate, success, close. With `--zero-rtt`
    /// the header and `<authenticate>` (with `count`) go as TLS early data.
    async fn full_login(
        &self,
        opts: &ConnectOptions,
        i: usize,
        token: Option<&str>,
        count: u32,
        st: &mut WorkerStats,
    ) -> Result<Option<String>, ClientError> {
        if self.args.zero_rtt {
            let t = token.ok_or_else(|| ClientError::Protocol("no FAST token".into()))?;
            let lo = LoginOptions::agent(&self.agent(i)).count(count);
            let login = ZeroRttLogin {
                user: &self.args.user,
                token: t,
                mechanism: &self.args.mech,
                server_end_point: None,
                options: &lo,
            };
            let (mut c, report, outcome) =
                Client::login_fast_zero_rtt(opts.clone(), &login).await?;
            let s = outcome.into_success()?;
            st.resumed += u64::from(report.resumed);
            st.early_accepted += u64::from(report.accepted);
            c.close().await?;
            return Ok(s.token.map(|t| t.token));
        }
        let mut c = self.connect_with(opts).await?;
        st.resumed += u64::from(c.tls_resumed);
        let count = self.args.count.then_some(count);
        let rotated = self.authenticate_counted(&mut c, i, token, count).await?;
        c.close().await?;
        Ok(rotated)
    }
}

/// One FAST token per simulated client, or `None`s when the mode is a password mode.
pub async fn tokens_for(
    ctx: &Arc<Ctx>,
    n: usize,
    deadline: Instant,
) -> Result<Vec<Option<String>>, String> {
    if ctx.args.mode != Mode::Fast {
        return Ok(vec![None; n]);
    }
    let mut set = tokio::task::JoinSet::new();
    let next = Arc::new(AtomicU64::new(0));
    let tokens = Arc::new(Mutex::new(vec![None::<String>; n]));
    for _ in 0..ctx.args.concurrency().min(n).min(64) {
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
        .map(|(i, t)| {
            t.map(Some)
                .ok_or_else(|| format!("client {i} got no token"))
        })
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
    let opts = match ctx.client_opts() {
        Ok(o) => o,
        Err(e) => {
            st.fail(&e);
            return st;
        }
    };
    if (ctx.args.resume || ctx.args.zero_rtt) && ctx.devices.get().is_none() {
        // Not counted: the full handshake that gives this client its first TLS session.
        if let Err(e) = ctx.first_session(&opts).await {
            st.fail(&e);
        }
    }
    // `<fast count>` of this client's token (0-RTT): one more per attempt, from 1 again
    // after a rotation (F-13).
    let mut count = 0u32;
    loop {
        if Instant::now() >= deadline
            || started.fetch_add(1, Ordering::SeqCst) >= ctx.args.max_logins
        {
            break;
        }
        let t0 = Instant::now();
        count += 1;
        let login_opts = ctx.login_opts(&opts);
        match ctx
            .full_login(login_opts, i, token.as_deref(), count, &mut st)
            .await
        {
            Ok(rotated) => {
                st.ok(t0);
                if let Some(t) = rotated {
                    // Rotation (F-16): the next login must use the new token.
                    token = Some(t);
                    st.rotations += 1;
                    count = 0;
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
                        count = 0;
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

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    mean: f64,
    max: f64,
}

/// The result of a login run; `--json` prints it as is (`scripts/perf-run.sh` reads it).
#[derive(Debug, Serialize)]
struct LoginReport {
    mode: &'static str,
    mechanism: String,
    tls: &'static str,
    tls_version: String,
    concurrency: u32,
    duration_s: f64,
    setup_s: f64,
    logins_ok: u64,
    logins_failed: u64,
    logins_per_s: f64,
    latency_ms: Latency,
    failures: BTreeMap<String, u64>,
    rotations: u64,
    token_refreshes: u64,
    /// Logins over a resumed TLS session (`--resume`, `--zero-rtt`).
    tls_resumed: u64,
    /// Logins whose first flight the server took as early data (`--zero-rtt`).
    early_data_accepted: u64,
    /// `--delay-ms`, and the median latency divided by twice it.
    delay_ms: Option<u32>,
    round_trips: Option<f64>,
    server_pid: Option<u32>,
    server_cpu_ms: Option<f64>,
    server_cpu_ms_per_login: Option<f64>,
    loadgen_cpu_ms: Option<f64>,
    loadgen_cpu_ms_per_login: Option<f64>,
    clk_tck: u64,
    /// `--tls-clients`: the devices, their warm-up, and the server's resident memory.
    #[serde(flatten)]
    devices: Option<DeviceReport>,
}

impl LoginReport {
    fn human(&self, st: &WorkerStats) -> String {
        let num = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("{x:.3}"));
        let l = &self.latency_ms;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "mode {} ({}), tls {} ({}), concurrency {}, {:.2} s (setup {:.2} s)",
            self.mode,
            self.mechanism,
            self.tls,
            self.tls_version,
            self.concurrency,
            self.duration_s,
            self.setup_s
        );
        let _ = writeln!(
            o,
            "logins: {} ok, {} failed, {:.1} logins/s",
            self.logins_ok, self.logins_failed, self.logins_per_s
        );
        let _ = writeln!(
            o,
            "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  mean {:.3}  max {:.3}",
            l.p50, l.p90, l.p99, l.mean, l.max
        );
        if self.mode == Mode::Fast.name() {
            let _ = writeln!(
                o,
                "rotated tokens followed: {}, tokens re-obtained: {}",
                self.rotations, self.token_refreshes
            );
        }
        let _ = writeln!(
            o,
            "tls resumed: {}, early data accepted: {}",
            self.tls_resumed, self.early_data_accepted
        );
        if let Some(d) = &self.devices {
            let kib = |v: Option<u64>| v.map_or("-".to_owned(), |k| format!("{k} KiB"));
            let _ = writeln!(
                o,
                "tls clients: {} (warm-up {:.2} s, {} failed, {} resumed), server rss {} -> {} \
                 (warm-up) -> {}",
                d.tls_clients,
                d.warmup_s,
                d.warmup_failed,
                d.warmup_resumed,
                kib(d.server_rss_kib_before_warmup),
                kib(d.server_rss_kib_after_warmup),
                kib(d.server_rss_kib_after)
            );
        }
        if let (Some(d), Some(rt)) = (self.delay_ms, self.round_trips) {
            let _ = writeln!(o, "round trips (p50 latency / 2 x {d} ms): {rt:.2}");
        }
        if let (Some(ms), Some(pid)) = (self.server_cpu_ms, self.server_pid) {
            let per = num(self.server_cpu_ms_per_login);
            let _ = writeln!(o, "server cpu (pid {pid}): {ms:.0} ms, {per} ms/login");
        }
        if let Some(ms) = self.loadgen_cpu_ms {
            let per = num(self.loadgen_cpu_ms_per_login);
            let _ = writeln!(o, "loadgen cpu: {ms:.0} ms, {per} ms/login");
        }
        o.push_str(&st.failure_lines());
        o
    }
}

/// What `--tls-clients` adds to the report.
#[derive(Debug, Serialize)]
struct DeviceReport {
    tls_clients: u32,
    /// Seconds the warm-up (one full handshake per device) took.
    warmup_s: f64,
    warmup_failed: u64,
    /// Warm-up connections that resumed anyway (0 unless devices share sessions).
    warmup_resumed: u64,
    server_rss_kib_before_warmup: Option<u64>,
    server_rss_kib_after_warmup: Option<u64>,
    server_rss_kib_after: Option<u64>,
}

/// `--tls-clients N`: gives each of N devices its own TLS session store and one full
/// handshake (connect, stream, close; not counted), `--concurrency` at a time, so the timed
/// logins that follow can each resume one of N distinct sessions.
async fn warm_up_devices(ctx: &Arc<Ctx>, n: usize) -> Result<(f64, WorkerStats), String> {
    let mut devices = Vec::with_capacity(n);
    for _ in 0..n {
        devices.push(
            ctx.client_opts()
                .map_err(|e| format!("--tls-clients: {e}"))?,
        );
    }
    let devices = Arc::new(devices);
    let t0 = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..ctx.args.concurrency().min(n) {
        let (ctx, devices, next) = (ctx.clone(), devices.clone(), next.clone());
        set.spawn(async move {
            let mut st = WorkerStats::default();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(opts) = devices.get(k) else {
                    return st;
                };
                match ctx.first_session(opts).await {
                    Ok(resumed) => st.resumed += u64::from(resumed),
                    Err(e) => st.fail(&e),
                }
            }
        });
    }
    let mut st = WorkerStats::default();
    while let Some(r) = set.join_next().await {
        st.merge(r.map_err(|e| e.to_string())?);
    }
    let warmup_s = t0.elapsed().as_secs_f64();
    let devices = Arc::try_unwrap(devices).map_err(|_| "warm-up tasks still running")?;
    let _ = ctx.devices.set(devices);
    Ok((warmup_s, st))
}

pub async fn run_logins(ctx: Arc<Ctx>) -> Result<Report, String> {
    let a = &ctx.args;
    let hard_deadline = Instant::now() + a.duration + Duration::from_secs(120);
    let t_setup = Instant::now();
    let tokens = tokens_for(&ctx, a.concurrency(), hard_deadline).await?;
    let setup_s = t_setup.elapsed().as_secs_f64();
    let server_rss = || {
        a.server_pid
            .and_then(|p| status_kib(&p.to_string(), "VmRSS"))
    };
    let mut device_report = None;
    if let Some(n) = a.tls_clients {
        let rss_before = server_rss();
        let (warmup_s, wst) = warm_up_devices(&ctx, n as usize).await?;
        device_report = Some(DeviceReport {
            tls_clients: n,
            warmup_s: r3(warmup_s),
            warmup_failed: wst.failed(),
            warmup_resumed: wst.resumed,
            server_rss_kib_before_warmup: rss_before,
            server_rss_kib_after_warmup: server_rss(),
            server_rss_kib_after: None,
        });
    }

    let started = Arc::new(AtomicU64::new(0));
    let before = CpuSnap::take(a.server_pid);
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
    let after = CpuSnap::take(a.server_pid);
    let elapsed = after.at.duration_since(before.at).as_secs_f64();
    if let Some(d) = &mut device_report {
        d.server_rss_kib_after = server_rss();
    }

    st.lat_us.sort_unstable();
    let ok = st.lat_us.len() as u64;
    let tck = clk_tck();
    let server_cpu_ms = cpu_ms(before.server, after.server, tck);
    let own_cpu_ms = cpu_ms(before.own, after.own, tck);
    let per_login = |v: Option<f64>| v.filter(|_| ok > 0).map(|ms| r3(ms / ok as f64));
    let mean = if ok > 0 {
        st.lat_us.iter().map(|&u| u as f64).sum::<f64>() / ok as f64 / 1000.0
    } else {
        0.0
    };
    let report = LoginReport {
        mode: a.mode.name(),
        mechanism: if a.mode == Mode::Fast {
            a.mech.clone()
        } else {
            a.mode.name().to_ascii_uppercase()
        },
        tls: a.tls.name(),
        tls_version: ctx.tls_version(),
        concurrency: a.concurrency,
        duration_s: r3(elapsed),
        setup_s: r3(setup_s),
        logins_ok: ok,
        logins_failed: st.failed(),
        logins_per_s: (ok as f64 / elapsed * 10.0).round() / 10.0,
        latency_ms: Latency {
            p50: percentile(&st.lat_us, 50.0),
            p90: percentile(&st.lat_us, 90.0),
            p99: percentile(&st.lat_us, 99.0),
            mean: r3(mean),
            max: st.lat_us.last().map_or(0.0, |&u| u as f64 / 1000.0),
        },
        failures: st.failures.clone(),
        rotations: st.rotations,
        token_refreshes: st.refreshes,
        tls_resumed: st.resumed,
        early_data_accepted: st.early_accepted,
        delay_ms: a.delay_ms,
        round_trips: a
            .delay_ms
            .filter(|_| ok > 0)
            .map(|d| r3(percentile(&st.lat_us, 50.0) / (2.0 * f64::from(d)))),
        server_pid: a.server_pid,
        server_cpu_ms: server_cpu_ms.map(r3),
        server_cpu_ms_per_login: per_login(server_cpu_ms),
        loadgen_cpu_ms: own_cpu_ms.map(r3),
        loadgen_cpu_ms_per_login: per_login(own_cpu_ms),
        clk_tck: tck,
        devices: device_report,
    };
    let out = if a.json {
        serde_json::to_string(&report).map_err(|e| e.to_string())?
    } else {
        report.human(&st)
    };
    Ok((out, ok == 0))
}
