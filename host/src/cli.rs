//! The `host` command line.
//!
//! ```text
//! host --config FILE                 run the server
//! host passwd --config FILE USER     set USER's password (read from stdin); revokes FAST tokens
//! host clients --config FILE USER    list USER's FAST clients
//! host migrate-store --config FILE --to URL
//!                                    copy the sled token store into PostgreSQL at URL
//! host ctl --config FILE clients USER | revoke USER [CLIENT] | passwd USER
//!        | revoke-before TIME | stats [--json]
//!                                    administer the running host over its admin socket
//!                                    (`<data_dir>/admin.sock`), or the store when it is stopped
//! ```
//!
//! `ctl` is in [`crate::admin`]; `passwd` and `clients` are older names of `ctl passwd` and
//! `ctl clients` (the same code path and printout).
//!
//! A config error exits with status 2 and a message naming the key; so does a usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::admin::Request;
use crate::{Host, HostConfig, Listeners};

/// The example XMPP server of sasl2-fast: SASL2 with FAST tokens, Bind 2, STARTTLS and direct
/// TLS.
#[derive(Debug, Parser)]
#[command(
    name = "host",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    /// The configuration file (TOML); runs the server.
    #[arg(short, long, value_name = "FILE", required = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Changes USER's password (the new one is read from stdin) and revokes USER's FAST
    /// tokens: `host ctl passwd`, on the running host or, with none, on the store.
    Passwd {
        /// The configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The account.
        user: String,
    },
    /// Lists USER's FAST clients: `host ctl clients`, on the running host or, with none, on
    /// the store.
    Clients {
        /// The configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The account.
        user: String,
    },
    /// Copies every FAST client and revocation of the config's sled store into the PostgreSQL
    /// database at URL, so tokens issued before the move log in after it. Records the
    /// database already has are left alone; running it twice is harmless. The host must be
    /// stopped. Afterwards set `store = "postgres"` and `postgres_url` in `[plugins.fast]`
    /// and give every host of the cluster the same `pepper_file`.
    MigrateStore {
        /// The configuration file (its `[plugins.fast]` names the sled store).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The target database: a libpq URL or `key=value` string (a password may also come
        /// from PGPASSWORD or a password file).
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Administers the running host over its admin socket (`<data_dir>/admin.sock`); with no
    /// host running, the store directly.
    Ctl(crate::admin::ctl::CtlArgs),
}

/// The definition of the `host` command line (its subcommands and options), for checks such
/// as `tests/docs_names/` that every command the docs name exists.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

fn load(path: &std::path::Path) -> Result<HostConfig, ExitCode> {
    HostConfig::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// Runs the command line (what `main` of the `host` binary and example calls).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config_path = match &cli.command {
        None => cli
            .config
            .as_ref()
            .expect("clap requires --config without a subcommand"),
        Some(
            Command::Passwd { config, .. }
            | Command::Clients { config, .. }
            | Command::MigrateStore { config, .. },
        ) => config,
        Some(Command::Ctl(args)) => &args.config,
    };
    let config = match load(config_path) {
        Ok(c) => c,
        Err(code) => return code,
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
        match cli.command {
            None => run(config).await,
            // The older names of `ctl passwd` and `ctl clients`: the same request, the same
            // code and printout, on the running host or, with none, on the store.
            Some(Command::Passwd { user, .. }) => {
                ctl(
                    config,
                    Request::Passwd {
                        user,
                        password: Default::default(),
                    },
                )
                .await
            }
            Some(Command::Clients { user, .. }) => ctl(config, Request::Clients { user }).await,
            Some(Command::MigrateStore { to, .. }) => migrate_store(config, to).await,
            Some(Command::Ctl(args)) => crate::admin::ctl::run(config, args).await,
        }
    })
}

async fn ctl(config: HostConfig, request: Request) -> ExitCode {
    let timeout = std::time::Duration::from_secs(crate::admin::ctl::DEFAULT_TIMEOUT_SECS);
    crate::admin::ctl::run_request(config, request, false, timeout).await
}

async fn run(config: HostConfig) -> ExitCode {
    let listeners = match Listeners::bind(&config.server).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let host = match Host::start(listeners, config).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let signal = wait_for_signal();
    println!("listening on {}", host.local_addr());
    if let Some(a) = host.tls_local_addr() {
        println!("listening on {a}");
    }
    if let Some(a) = host.metrics_addr() {
        println!("metrics listening on {a}");
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    signal.await;
    host.shutdown().await;
    ExitCode::SUCCESS
}

/// Registers the SIGTERM handler now (before `listening on` is printed: a supervisor that
/// sends SIGTERM right after that line must get a clean shutdown, not the default action)
/// and returns the future that completes on SIGTERM or Ctrl-C.
fn wait_for_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        #[cfg(unix)]
        if let Some(mut term) = term {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn migrate_store(config: HostConfig, to: String) -> ExitCode {
    use sasl2_fast::fast::config::StoreKind;
    use sasl2_fast::store::postgres::{PostgresOptions, PostgresStore};
    let Some(fast) = config.plugins.fast.as_ref() else {
        eprintln!("error: [plugins.fast] is missing from this config");
        return ExitCode::from(2);
    };
    if fast.store != StoreKind::Sled {
        eprintln!("error: migrate-store copies from a sled store; this config has another store");
        return ExitCode::from(2);
    }
    let from = match sasl2_fast::fast::open::open_sled(fast, &config.server.data_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot open the sled token store: {e}");
            eprintln!("error: is the host still running? Stop it first.");
            return ExitCode::from(1);
        }
    };
    let mut options = PostgresOptions::new(to);
    options.ca_file = fast.postgres_ca_file.clone();
    let target = match PostgresStore::open(options).await {
        Ok(s) => s,
        // The error never carries the URL's password.
        Err(e) => {
            eprintln!("error: cannot open the PostgreSQL token store: {e}");
            return ExitCode::from(1);
        }
    };
    match sasl2_fast::store::migrate::copy_sled(&from, &target).await {
        Ok(r) => {
            println!(
                "copied {} FAST clients and {} revocation cutoffs; {} were already there, {} \
                 differed and were left as the database has them",
                r.copied, r.cutoffs, r.already_present, r.differing
            );
            println!(
                "next: store = \"postgres\" and postgres_url in [plugins.fast]; keep the same \
                 pepper file on every host"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: copy failed (run it again to finish; nothing is overwritten): {e}");
            ExitCode::from(1)
        }
    }
}
