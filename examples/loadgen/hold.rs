//! `--hold N`: N authenticated idle connections, until Ctrl-C or `--duration`, and the server's
//! resident memory per connection.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sasl2_fast_host::client::{Client, ClientError};
use serde::Serialize;

use crate::Report;
use crate::logins::{Ctx, tokens_for};
use crate::procfs::status_kib;
use crate::stats::{WorkerStats, r3};

/// The result of a hold run; `--json` prints it as is (`scripts/perf-run.sh hold`).
#[derive(Debug, Serialize)]
struct HoldReport {
    hold: usize,
    mode: &'static str,
    tls: &'static str,
    tls_version: String,
    opened: usize,
    failed: u64,
    failures: BTreeMap<String, u64>,
    open_s: f64,
    server_pid: Option<u32>,
    server_rss_kib_before: Option<u64>,
    server_rss_kib_after_setup: Option<u64>,
    server_rss_kib_after: Option<u64>,
    server_hwm_kib: Option<u64>,
    server_kib_per_connection: Option<f64>,
    loadgen_rss_kib_before: Option<u64>,
    loadgen_rss_kib_after: Option<u64>,
}

impl HoldReport {
    fn human(&self, st: &WorkerStats) -> String {
        let kib = |v: Option<u64>| v.map_or("-".to_owned(), |x| x.to_string());
        let mut o = String::new();
        let _ = writeln!(
            o,
            "hold: {} of {} connections authenticated ({}, tls {}) in {:.2} s, {} failed",
            self.opened, self.hold, self.mode, self.tls, self.open_s, self.failed
        );
        if let (Some(b), Some(af)) = (self.server_rss_kib_before, self.server_rss_kib_after) {
            let per = self
                .server_kib_per_connection
                .map_or("-".to_owned(), |x| format!("{x:.3}"));
            let _ = writeln!(
                o,
                "server RSS: {b} KiB at start, {} KiB after the token logins, {af} KiB with the \
                 connections (peak {} KiB): {per} KiB per connection",
                kib(self.server_rss_kib_after_setup),
                kib(self.server_hwm_kib),
            );
        }
        let _ = writeln!(
            o,
            "loadgen RSS: {} KiB before, {} KiB after",
            kib(self.loadgen_rss_kib_before),
            kib(self.loadgen_rss_kib_after)
        );
        o.push_str(&st.failure_lines());
        o
    }
}

/// Opens connections `0..n` with `agents` workers; connection k authenticates as client
/// k % agents. FAST tokens may be used by several connections at once (verification does not
/// consume them).
async fn open_all(
    ctx: &Arc<Ctx>,
    n: usize,
    tokens: Arc<Vec<Option<String>>>,
    deadline: Instant,
) -> Result<(Vec<Client>, WorkerStats), String> {
    let held = Arc::new(Mutex::new(Vec::<Client>::with_capacity(n)));
    let next = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tokens.len() {
        let (ctx, tokens, held, next) = (ctx.clone(), tokens.clone(), held.clone(), next.clone());
        set.spawn(async move {
            let mut st = WorkerStats::default();
            loop {
                let k = next.fetch_add(1, Ordering::SeqCst) as usize;
                if k >= n || Instant::now() >= deadline {
                    break;
                }
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
                        st.ok(t0);
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
    let clients = std::mem::take(&mut *held.lock().map_err(|e| e.to_string())?);
    Ok((clients, st))
}

pub async fn run_hold(ctx: Arc<Ctx>, n: usize) -> Result<Report, String> {
    let a = &ctx.args;
    let deadline = Instant::now() + a.duration;
    let pid = a.server_pid.map(|p| p.to_string());
    let rss = |f: &str| pid.as_deref().and_then(|p| status_kib(p, f));
    let rss_before = rss("VmRSS");
    let own_before = status_kib("self", "VmRSS");

    let agents = a.concurrency().min(n);
    let tokens = Arc::new(tokens_for(&ctx, agents, deadline).await?);
    // The baseline of the per-connection figure: after the token logins, so one-time costs
    // (store pages, TLS and SASL state warmed up by the first logins) are not counted.
    let left = || deadline.saturating_duration_since(Instant::now());
    tokio::time::sleep(Duration::from_millis(500).min(left())).await;
    let rss_setup = rss("VmRSS");
    let t_open = Instant::now();
    let (clients, st) = open_all(&ctx, n, tokens, deadline).await?;
    let open_s = t_open.elapsed().as_secs_f64();
    let opened = clients.len();
    // Let the server finish its per-connection work and free transient buffers.
    tokio::time::sleep(Duration::from_secs(2).min(left())).await;
    let rss_after = rss("VmRSS");
    let per_conn = match (rss_setup, rss_after) {
        (Some(b), Some(af)) if opened > 0 => Some(r3((af as f64 - b as f64) / opened as f64)),
        _ => None,
    };
    let report = HoldReport {
        hold: n,
        mode: a.mode.name(),
        tls: a.tls.name(),
        tls_version: ctx.tls_version(),
        opened,
        failed: st.failed(),
        failures: st.failures.clone(),
        open_s: r3(open_s),
        server_pid: a.server_pid,
        server_rss_kib_before: rss_before,
        server_rss_kib_after_setup: rss_setup,
        server_rss_kib_after: rss_after,
        server_hwm_kib: rss("VmHWM"),
        server_kib_per_connection: per_conn,
        loadgen_rss_kib_before: own_before,
        loadgen_rss_kib_after: status_kib("self", "VmRSS"),
    };
    // Print now: the figure is taken; then hold until Ctrl-C or the deadline.
    let out = if a.json {
        serde_json::to_string(&report).map_err(|e| e.to_string())?
    } else {
        report.human(&st)
    };
    println!("{}", out.trim_end());
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    if !a.json {
        eprintln!(
            "holding {opened} connections for {:.0} s more (Ctrl-C to stop)",
            left().as_secs_f64()
        );
    }
    tokio::select! {
        _ = tokio::time::sleep(left()) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(clients);
    Ok((String::new(), opened == 0))
}
