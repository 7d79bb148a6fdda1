//! The second example server, on tokio-xmpp:
//!
//! ```sh
//! cargo run --release --example tokio_xmpp_host -- --config examples/host.toml
//! ```
//!
//! It reads the example host's TOML format (`[server]` `domain`, `listen`, `listen_tls`,
//! `data_dir`, `tls_cert`/`tls_key`, `require_tls`; `[accounts]`; `[plugins.fast]`); any
//! other key stops it with exit status 2 naming the key. It prints `listening on ADDR` for
//! each listener and serves until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sasl2_fast::BoxError;
use sasl2_fast_tokio_xmpp_host::{Config, Server};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// A SASL2/FAST XMPP server on tokio-xmpp's XML streams.
#[derive(Parser)]
#[command(name = "tokio_xmpp_host")]
struct Args {
    /// The configuration file (the example host's format).
    #[arg(long)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> Result<ExitCode, BoxError> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", args.config.display());
            return Ok(ExitCode::from(2));
        }
    };
    let server = Server::start(config).await?;
    for addr in server.addrs() {
        println!("listening on {addr}");
    }
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
