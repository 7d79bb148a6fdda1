//! Example XMPP host for `sasl2-fast`: SASL2 with SCRAM/PLAIN, FAST tokens, Bind 2, STARTTLS
//! and direct TLS, minimal routing between local sessions.
//!
//! ```text
//! host --config FILE                 run the server
//! host passwd --config FILE USER     set USER's password (read from stdin); revokes FAST tokens
//! host clients --config FILE USER    list USER's FAST clients
//! ```

mod app;

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::ExitCode;

use app::{Host, HostConfig};

const USAGE: &str = "usage:
  host --config FILE                 run the server
  host passwd --config FILE USER     change USER's password (new password on stdin)
  host clients --config FILE USER    list USER's FAST clients";

enum Command {
    Run,
    Passwd(String),
    Clients(String),
}

fn parse_args(args: &[String]) -> Option<(Command, PathBuf)> {
    let mut sub = None;
    let mut config = None;
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" | "-c" => config = Some(PathBuf::from(it.next()?)),
            s if s.starts_with("--config=") => config = Some(PathBuf::from(&s[9..])),
            "passwd" | "clients" if sub.is_none() && positional.is_empty() && config.is_none() => {
                sub = Some(a.clone())
            }
            s if s.starts_with('-') => return None,
            _ => positional.push(a.clone()),
        }
    }
    let config = config?;
    let cmd = match (sub.as_deref(), positional.as_slice()) {
        (None, []) => Command::Run,
        (Some("passwd"), [user]) => Command::Passwd(user.clone()),
        (Some("clients"), [user]) => Command::Clients(user.clone()),
        _ => return None,
    };
    Some((cmd, config))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let Some((cmd, config_path)) = parse_args(&args) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let config = match HostConfig::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        match cmd {
            Command::Run => run(config).await,
            Command::Passwd(user) => passwd(config, &user).await,
            Command::Clients(user) => clients(config, &user).await,
        }
    })
}

async fn run(config: HostConfig) -> ExitCode {
    let host = match Host::start(config).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    println!("listening on {}", host.local_addr());
    if let Some(a) = host.tls_local_addr() {
        println!("listening on {a}");
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    wait_for_signal().await;
    host.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Opens what `passwd` / `clients` need; the host must be stopped (sled holds a lock).
fn open_fast_offline(
    config: &HostConfig,
) -> Result<Option<sasl2_fast::fast::FastPlugin>, ExitCode> {
    app::server::open_fast(config, Vec::new()).map_err(|e| {
        eprintln!("error: {e}");
        eprintln!("error: cannot open the token store; is the host still running? Stop it first.");
        ExitCode::from(1)
    })
}

async fn passwd(config: HostConfig, user: &str) -> ExitCode {
    if let Err(e) = app::server::ensure_data_dir(&config.data_dir) {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    let fast = match open_fast_offline(&config) {
        Ok(f) => f,
        Err(c) => return c,
    };
    let accounts = match app::HostAccounts::load(&config.accounts, &config.data_dir) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let mut line = zeroize::Zeroizing::new(String::new());
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        eprintln!("error: cannot read the new password from stdin");
        return ExitCode::from(1);
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("error: empty password");
        return ExitCode::from(1);
    }
    match app::server::change_password(&accounts, fast.as_ref(), user, password).await {
        Ok(()) => {
            println!(
                "password of {user} changed (stored in {}); FAST tokens revoked",
                accounts.file().display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn fmt_ms(ms: u64) -> String {
    sasl2_fast::fast::clock::xep0082(ms)
}

async fn clients(config: HostConfig, user: &str) -> ExitCode {
    let Some(user) = sasl2_fast::sasl2::accounts::normalize_username(user) else {
        eprintln!("error: invalid username");
        return ExitCode::from(2);
    };
    let fast = match open_fast_offline(&config) {
        Ok(Some(f)) => f,
        Ok(None) => {
            eprintln!("FAST is not enabled in this config");
            return ExitCode::from(1);
        }
        Err(c) => return c,
    };
    let list = match fast.tokens().clients(&user).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: token store: {e}");
            return ExitCode::from(1);
        }
    };
    if list.is_empty() {
        println!("{user}: no FAST clients");
    }
    for c in list {
        println!("client {}", c.key.client_label());
        println!("  software:  {}", c.software.as_deref().unwrap_or("-"));
        println!("  device:    {}", c.device.as_deref().unwrap_or("-"));
        println!("  created:   {}", fmt_ms(c.created_at));
        println!("  last used: {}", fmt_ms(c.last_used_at));
        if let Some((m, exp)) = &c.current {
            println!("  current:   {m}, expires {}", fmt_ms(*exp));
        }
        if let Some((m, exp)) = &c.new {
            println!("  new:       {m}, expires {}", fmt_ms(*exp));
        }
        if c.revoked {
            println!("  revoked");
        }
    }
    ExitCode::SUCCESS
}
