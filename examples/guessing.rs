//! A password-guessing attack on a running host, measured from outside (docs/security.md,
//! "Password guessing and lockout"): strangers guess one account's password from many
//! loopback addresses on one login path, while the account owner's known device logs in with
//! the right password once a second. Prints how many guesses the host checked (answered
//! `not-authorized`) and held back (`temporary-auth-failure`), per second, and how the owner
//! fared.
//!
//! ```sh
//! cargo run --release --example host -- --config examples/host.toml &
//! cargo run --release --example guessing -- --ca examples/data/tls/cert.pem \
//!     --path sasl2-plain-noir --sources 200 --duration 20
//! ```
//!
//! Bounded: it stops after `--duration` seconds, and sends only to `--addr` (loopback only).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use sasl2_fast::sasl2::SaslProfile;
use sasl2_fast_host::client::{Client, ConnectOptions, LoginOptions, Outcome, Tls};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Path {
    /// SASL2 PLAIN with the credentials in the initial response.
    Sasl2Plain,
    /// SASL2 PLAIN, credentials in a `<response>`.
    Sasl2PlainNoir,
    /// SASL2 SCRAM-SHA-256, client-first in a `<response>`.
    Sasl2ScramNoir,
    /// RFC 6120 PLAIN, credentials in a `<response>`.
    Rfc6120PlainNoir,
    /// RFC 6120 SCRAM-SHA-256, client-first in a `<response>`.
    Rfc6120ScramNoir,
}

#[derive(Parser, Debug)]
struct Args {
    /// The host's STARTTLS listener (loopback).
    #[arg(long, default_value = "127.0.0.1:5222")]
    addr: SocketAddr,
    /// The CA (the host's generated certificate) to trust.
    #[arg(long)]
    ca: PathBuf,
    /// The account attacked.
    #[arg(long, default_value = "alice")]
    account: String,
    /// Its real password, for the owner's device.
    #[arg(long, default_value = "alicepass")]
    password: String,
    /// The login path the strangers use.
    #[arg(long, value_enum, default_value = "sasl2-plain-noir")]
    path: Path,
    /// Stranger addresses (127.0.10.1 and up), one guessing task each.
    #[arg(long, default_value_t = 200)]
    sources: u32,
    /// Seconds of guessing.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Instead of guessing for `--duration`: each source opens this many SCRAM exchanges, takes
    /// each to its last step, then sends every proof at once (one round).
    #[arg(long)]
    pipelined: Option<u32>,
}

const OWNER_AGENT: &str = "0a11ce00-0000-4000-8000-000000000001";
const OWNER_SOURCE: &str = "127.0.9.1";

fn opts(base: &ConnectOptions, source: IpAddr) -> ConnectOptions {
    let mut o = base.clone();
    o.source = Some(source);
    o
}

async fn attempt(
    base: &ConnectOptions,
    source: IpAddr,
    path: Path,
    user: &str,
    password: &str,
    agent: &str,
) -> Result<Outcome, Box<dyn std::error::Error + Send + Sync>> {
    let mut c = Client::connect(opts(base, source)).await?;
    let login = LoginOptions::agent(agent);
    let (profile, mechanism) = match path {
        Path::Sasl2Plain => return Ok(c.login_plain(user, password, &login).await?),
        Path::Sasl2PlainNoir => (SaslProfile::Sasl2, "PLAIN"),
        Path::Sasl2ScramNoir => (SaslProfile::Sasl2, "SCRAM-SHA-256"),
        Path::Rfc6120PlainNoir => (SaslProfile::Rfc6120, "PLAIN"),
        Path::Rfc6120ScramNoir => (SaslProfile::Rfc6120, "SCRAM-SHA-256"),
    };
    Ok(
        c.login_without_initial_response(profile, mechanism, user, password, &login)
            .await?,
    )
}

/// One round of pipelined SCRAM exchanges from every source: how many proofs were checked.
async fn pipelined(
    args: &Args,
    base: &ConnectOptions,
    n: u32,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use sasl::client::Mechanism as _;
    use sasl2_fast::minidom::Element;
    use sasl2_fast::xmpp::ns;
    let mut open = Vec::new();
    for i in 0..args.sources {
        let source = IpAddr::from([127, 10 + (i / 250) as u8, 0, 1 + (i % 250) as u8]);
        for k in 0..n {
            let mut c = Client::connect(opts(base, source)).await?;
            let creds = sasl::common::Credentials::default()
                .with_username(&args.account)
                .with_password(format!("guess-{i}-{k}"))
                .with_channel_binding(sasl::common::ChannelBinding::None);
            let mut m =
                sasl::client::mechanisms::Scram::<sasl::common::scram::Sha256>::from_credentials(
                    creds,
                )?;
            let agent = format!("5742a7e1-0000-4000-8000-{i:04x}{k:08x}");
            let auth = Client::authenticate_element(
                "SCRAM-SHA-256",
                Some(&m.initial()),
                &LoginOptions::agent(&agent),
                false,
            );
            c.send(&auth).await?;
            let challenge = c.recv().await?;
            let last = m.response(&B64.decode(challenge.text().trim())?)?;
            open.push((c, last));
        }
    }
    let started = Instant::now();
    for (c, last) in &mut open {
        let r = Element::builder("response", ns::SASL2)
            .append(B64.encode(last))
            .build();
        c.send(&r).await?;
    }
    let (mut checked, mut held, mut other) = (0, 0, 0);
    for (c, _) in &mut open {
        let f = c.recv().await?;
        match f.children().next().map(|c| c.name()) {
            Some("not-authorized") => checked += 1,
            Some("temporary-auth-failure") => held += 1,
            _ => other += 1,
        }
    }
    println!(
        "pipelined sources={} exchanges_per_source={} checked={} held={} other={} answered_in_s={:.2}",
        args.sources,
        n,
        checked,
        held,
        other,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The owner's phone (a known device once it logged in) with the right password.
async fn owner_login(
    base: &ConnectOptions,
    args: &Args,
) -> Result<Outcome, Box<dyn std::error::Error + Send + Sync>> {
    let owner: IpAddr = OWNER_SOURCE.parse()?;
    attempt(
        base,
        owner,
        Path::Sasl2Plain,
        &args.account,
        &args.password,
        OWNER_AGENT,
    )
    .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        return Err("--addr must be a loopback address".into());
    }
    let base = ConnectOptions::localhost(args.addr, Tls::StartTls, &args.ca, None)?;
    // The owner's phone logged in before the attack: a known device.
    match owner_login(&base, &args).await? {
        Outcome::Success(_) => {}
        Outcome::Failure(f) => return Err(format!("the owner cannot log in: {f:?}").into()),
    }

    if let Some(n) = args.pipelined {
        return pipelined(&args, &base, n).await;
    }
    let checked = Arc::new(AtomicU64::new(0));
    let held = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(args.duration);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.sources {
        let source = IpAddr::from([127, 10 + (i / 250) as u8, 0, 1 + (i % 250) as u8]);
        let (base, account) = (base.clone(), args.account.clone());
        let (checked, held, other) = (checked.clone(), held.clone(), other.clone());
        let path = args.path;
        tasks.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < end {
                n += 1;
                let agent = format!("5742a7e1-0000-4000-8000-{:04x}{:08x}", i, n);
                let guess = format!("guess-{i}-{n}");
                match attempt(&base, source, path, &account, &guess, &agent).await {
                    Ok(Outcome::Failure(f)) if f.condition == "not-authorized" => {
                        checked.fetch_add(1, Ordering::Relaxed)
                    }
                    Ok(Outcome::Failure(f)) if f.condition == "temporary-auth-failure" => {
                        held.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => other.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    // The owner, once a second, with the right password from the known phone.
    let mut owner_ok = 0;
    let mut owner_tries = 0;
    let mut owner_ms = Vec::new();
    tokio::time::sleep(Duration::from_secs(1)).await;
    while Instant::now() + Duration::from_secs(1) < end {
        let started = Instant::now();
        owner_tries += 1;
        if let Ok(Outcome::Success(_)) = owner_login(&base, &args).await {
            owner_ok += 1;
            owner_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    while tasks.join_next().await.is_some() {}
    owner_ms.sort_by(f64::total_cmp);
    let secs = args.duration as f64;
    let checked = checked.load(Ordering::Relaxed);
    println!(
        "path={:?} sources={} duration_s={} checked={} checked_per_s={:.2} held={} other={} \
         owner_ok={}/{} owner_median_ms={:.1}",
        args.path,
        args.sources,
        args.duration,
        checked,
        checked as f64 / secs,
        held.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
        owner_ok,
        owner_tries,
        owner_ms
            .get(owner_ms.len() / 2)
            .copied()
            .unwrap_or(f64::NAN),
    );
    Ok(())
}
