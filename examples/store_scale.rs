//! A token store at scale: fill it with many FAST client records, then measure its disk
//! size (sled), the time to reopen it, the latency of `FastTokens::verify` against it (the read
//! path of every FAST login), and one expiry sweep. sled by default; `--postgres` runs the same
//! on a throwaway PostgreSQL on loopback (the test kit's; needs Debian's postgresql).
//!
//! ```text
//! cargo run --release --example store_scale -- --records 1000000 --verify 100000 --expire 10000
//! cargo run --release --example store_scale -- --postgres --records 1000000
//! ```
//!
//! Records are written straight into the store with `Durability::Lazy` and one flush at the
//! end (issuing a million tokens through `FastTokens::issue` would flush a million times).
//! Each record holds a `current` HT-SHA-256-NONE token whose secret the program can derive
//! (same pepper), so verification is the real code path: key hash, store read, decode,
//! revocation cutoff, token derivation, HMAC check. Nothing here opens a socket.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sasl2_fast::fast::clock::ManualClock;
use sasl2_fast::fast::config::FastConfig;
use sasl2_fast::fast::login::VerifyRequest;
use sasl2_fast::fast::{FastTokens, HtMechanism, Pepper};
use sasl2_fast::store::postgres::{PostgresOptions, PostgresStore};
use sasl2_fast::store::sled_store::SledStore;
use sasl2_fast::store::{CasOutcome, ClientKey, ClientRecord, Durability, TokenSlot, TokenStore};

const USAGE: &str =
    "usage: store_scale [--records N] [--verify N] [--expire N] [--dir DIR] [--keep]
  --records N   client records to write (default 1000000, at most 20000000)
  --verify N    timed verifications after reopening (default 100000, at most 10000000)
  --expire N    records that expire early, removed by one timed sweep (default 10000)
  --dir DIR     where to create the database (default: a fresh temporary directory)
  --keep        keep the database afterwards
  --postgres    a throwaway PostgreSQL instead of sled
  --reuse       open the sled database in --dir as it is (written by an earlier --keep run)
                instead of filling it: the RSS of a process that only opens and verifies";

/// Start of the simulated time (unix ms).
const T0: u64 = 1_750_000_000_000;
const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
const MECH: &str = "HT-SHA-256-NONE";

struct Args {
    records: u64,
    verify: u64,
    expire: u64,
    dir: Option<PathBuf>,
    keep: bool,
    postgres: bool,
    reuse: bool,
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        records: 1_000_000,
        verify: 100_000,
        expire: 10_000,
        dir: None,
        keep: false,
        postgres: false,
        reuse: false,
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: bad number {v}"))
        };
        match flag.as_str() {
            "--records" => a.records = num(value()?)?,
            "--verify" => a.verify = num(value()?)?,
            "--expire" => a.expire = num(value()?)?,
            "--dir" => a.dir = Some(PathBuf::from(value()?)),
            "--keep" => a.keep = true,
            "--postgres" => a.postgres = true,
            "--reuse" => a.reuse = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.records == 0 || a.records > 20_000_000 {
        return Err("--records: 1..20000000".into());
    }
    if a.verify > 10_000_000 {
        return Err("--verify: at most 10000000".into());
    }
    if a.reuse && (a.dir.is_none() || a.postgres) {
        return Err("--reuse needs --dir (and sled)".into());
    }
    if a.expire >= a.records {
        return Err("--expire must be smaller than --records".into());
    }
    Ok(a)
}

/// Client `i`: ten clients per account.
fn key_of(i: u64) -> (String, String) {
    (format!("user{}", i / 10), format!("ua-{i:08}"))
}

/// A deterministic slot nonce for client `i` (not secret here: this is a benchmark).
fn nonce_of(i: u64) -> [u8; 32] {
    let mut n = [0x5a; 32];
    n[..8].copy_from_slice(&i.to_le_bytes());
    n
}

fn record_of(i: u64, expire: u64) -> ClientRecord {
    let expires_at = if i < expire {
        T0 + HOUR_MS
    } else {
        T0 + 21 * DAY_MS
    };
    ClientRecord {
        current: Some(TokenSlot {
            nonce: nonce_of(i),
            mechanism: MECH.into(),
            issued_at: T0,
            expires_at,
            chain_started_at: T0,
            max_count: None,
        }),
        new: None,
        created_at: T0,
        // Recent, so a verification does not rewrite it (the common login writes nothing).
        last_used_at: T0,
        revoked_before: 0,
        software: Some("Conversations".into()),
        device: Some("Pixel 7".into()),
    }
}

/// Apparent and allocated bytes of the files under `dir`.
fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    let mut apparent = 0;
    let mut allocated = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                apparent += m.len();
                allocated += m.blocks() * 512;
            }
        }
    }
    (apparent, allocated)
}

fn own_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Percentiles of latencies in nanoseconds, printed in microseconds.
fn summary(label: &str, ns: &mut [u64], wall: Duration) {
    if ns.is_empty() {
        return;
    }
    ns.sort_unstable();
    let p = |q: f64| ns[((q / 100.0) * (ns.len() - 1) as f64).round() as usize] as f64 / 1000.0;
    let mean = ns.iter().sum::<u64>() as f64 / ns.len() as f64 / 1000.0;
    println!(
        "{label}: {} verifications, {:.0}/s on one task; µs p50 {:.2}  p90 {:.2}  p99 {:.2}  \
         p99.9 {:.2}  max {:.2}  mean {:.2}",
        ns.len(),
        ns.len() as f64 / wall.as_secs_f64(),
        p(50.0),
        p(90.0),
        p(99.0),
        p(99.9),
        ns[ns.len() - 1] as f64 / 1000.0,
        mean
    );
}

async fn run(a: Args, dir: &Path) -> Result<(), String> {
    let db_path = dir.join("tokens.sled");
    let err = |e: sasl2_fast::store::StoreError| e.to_string();
    let m = HtMechanism::from_name(MECH).ok_or("mechanism")?;

    // 1. Fill, 2. reopen.
    let mut pg_server = None;
    let store: Arc<dyn TokenStore> = if a.postgres {
        let pg = sasl2_fast::store::test_kit::TestPostgres::start().map_err(|e| e.to_string())?;
        let url = pg.url();
        pg_server = Some(pg);
        let open = || PostgresStore::open(PostgresOptions::new(url.clone()));
        // Sixteen writers: each insert is one round trip to the server.
        fill(Arc::new(open().await.map_err(err)?), &a, 16).await?;
        let t = Instant::now();
        let store = open().await.map_err(err)?;
        println!(
            "reopen: PostgresStore::open {:.0} ms ({} records)",
            t.elapsed().as_secs_f64() * 1000.0,
            store.len().await.map_err(err)?
        );
        Arc::new(store)
    } else {
        if !a.reuse {
            fill(Arc::new(SledStore::open(&db_path).map_err(err)?), &a, 1).await?;
        }
        // sled's background flusher thread holds the database briefly after the last handle.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (apparent, allocated) = disk_usage(&db_path);
        println!(
            "disk: {:.1} MiB apparent, {:.1} MiB allocated ({:.0} bytes per record allocated)",
            mib(apparent),
            mib(allocated),
            allocated as f64 / a.records as f64
        );
        let t = Instant::now();
        let store = SledStore::open(&db_path).map_err(err)?;
        let open = t.elapsed();
        let len = store.len().await.map_err(err)?;
        println!(
            "reopen: SledStore::open {:.0} ms ({len} records)",
            open.as_secs_f64() * 1000.0
        );
        Arc::new(store)
    };

    // 3. Verify through FastTokens, the code path of a FAST login.
    let clock = Arc::new(ManualClock::new(T0 + 1000));
    let tokens = FastTokens::new(store, Pepper::from_bytes([7; 32]), FastConfig::default())
        .with_clock(clock.clone());
    let pepper = Pepper::from_bytes([7; 32]);
    let live = a.records - a.expire;
    // Pseudo-random sample over the unexpired records; MACs computed before timing (they are
    // the client's work).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let sample: Vec<(String, String, Vec<u8>)> = (0..a.verify)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = a.expire + x % live;
            let (account, ua) = key_of(i);
            let key = ClientKey::new(&account, &ua).expect("valid key");
            let token = pepper.derive_token(&nonce_of(i), &key);
            let mac = m.initiator_mac(token.expose().as_bytes(), &[]);
            (account, ua, mac)
        })
        .collect();
    let verify_all = |from: usize, to: usize| {
        let tokens = &tokens;
        let sample = &sample;
        async move {
            let mut ns = Vec::with_capacity(to - from);
            let t = Instant::now();
            for (account, ua, mac) in &sample[from..to] {
                let req = VerifyRequest::new(account, ua, m, mac, &[]);
                let t1 = Instant::now();
                let r = tokens.verify(&req).await;
                ns.push(t1.elapsed().as_nanos() as u64);
                if let Err(e) = r {
                    return Err(format!("verification of {account}/{ua} failed: {e:?}"));
                }
            }
            Ok((ns, t.elapsed()))
        }
    };
    let n = sample.len();
    let first = n.min(10_000);
    let (mut ns, wall) = verify_all(0, first).await?;
    summary("verify, first after reopen", &mut ns, wall);
    if n > first {
        let (mut ns, wall) = verify_all(first, n).await?;
        summary("verify, steady", &mut ns, wall);
    }
    println!(
        "process RSS after verifications: {:.0} MiB",
        own_rss_kib().unwrap_or(0) as f64 / 1024.0
    );

    // 4. One expiry sweep: the first `expire` records expired one hour after T0.
    clock.set(T0 + 2 * HOUR_MS);
    let t = Instant::now();
    let removed = tokens.sweep_expired().await.map_err(err)?;
    let sweep = t.elapsed();
    let t = Instant::now();
    tokens.store().flush().await.map_err(err)?;
    let flush = t.elapsed();
    println!(
        "sweep: removed {removed} of {} expired records in {:.0} ms ({:.1} µs per record), flush {:.0} ms; \
         {} records left",
        a.expire,
        sweep.as_secs_f64() * 1000.0,
        sweep.as_secs_f64() * 1e6 / removed.max(1) as f64,
        flush.as_secs_f64() * 1000.0,
        tokens.store().len().await.map_err(err)?
    );
    let t = Instant::now();
    let again = tokens.sweep_expired().await.map_err(err)?;
    println!(
        "sweep with nothing expired: removed {again} in {:.3} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    drop(tokens);
    drop(pg_server);
    Ok(())
}

/// Writes the records with lazy compare-and-swaps from `writers` tasks, then one flush.
async fn fill(store: Arc<dyn TokenStore>, a: &Args, writers: u64) -> Result<(), String> {
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let (store, records, expire) = (store.clone(), a.records, a.expire);
        tasks.spawn(async move {
            let mut i = w;
            while i < records {
                let (account, ua) = key_of(i);
                let key = ClientKey::new(&account, &ua).map_err(|e| e.to_string())?;
                match store
                    .compare_and_swap(&key, None, Some(record_of(i, expire)), Durability::Lazy)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    CasOutcome::Written(_) => {}
                    CasOutcome::Conflict => return Err(format!("record {i} already exists")),
                }
                if w == 0 && i > 0 && (i + 1) % 200_000 < writers {
                    eprintln!("  filled about {} records", i + 1);
                }
                i += writers;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    let fill = t.elapsed();
    let t = Instant::now();
    store.flush().await.map_err(|e| e.to_string())?;
    let flush = t.elapsed();
    println!(
        "fill: {} records in {:.2} s ({:.0} records/s, lazy compare-and-swap, {writers} writer(s)), \
         final flush {:.0} ms",
        a.records,
        fill.as_secs_f64(),
        a.records as f64 / fill.as_secs_f64(),
        flush.as_secs_f64() * 1000.0
    );
    println!(
        "process RSS after fill: {:.0} MiB",
        own_rss_kib().unwrap_or(0) as f64 / 1024.0
    );
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let a = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (dir, _tmp) = match &a.dir {
        Some(d) => {
            if let Err(e) = std::fs::create_dir_all(d) {
                eprintln!("error: {}: {e}", d.display());
                return ExitCode::from(1);
            }
            (d.clone(), None)
        }
        None => match tempfile::tempdir() {
            Ok(t) => (t.path().to_path_buf(), Some(t)),
            Err(e) => {
                eprintln!("error: temporary directory: {e}");
                return ExitCode::from(1);
            }
        },
    };
    let keep = a.keep;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: runtime: {e}");
            return ExitCode::from(1);
        }
    };
    println!("database: {}", dir.join("tokens.sled").display());
    let r = rt.block_on(run(a, &dir));
    if keep {
        if let Some(t) = _tmp {
            let _ = t.keep();
        }
    } else if _tmp.is_none() {
        let _ = std::fs::remove_dir_all(dir.join("tokens.sled"));
    }
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
