//! `host ctl`: asks the running host over its admin socket, or, with no host running, opens
//! the store and runs the same operation itself.
//!
//! - No socket, or a socket nobody listens on (a host killed with -9): the store directly.
//!   With sled that needs the host stopped (sled's process lock); with PostgreSQL it also
//!   works while hosts of a cluster run elsewhere.
//! - A socket that accepts but does not answer within `--timeout` (a hung host): an error,
//!   exit 1, and the store is left alone (the hung host may still hold it or act later).
//! - Exit status: 0 done, 1 refused or failed (message on stderr), 2 usage or config error.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::io::AsyncWriteExt as _;
use tokio::net::UnixStream;
use zeroize::Zeroizing;

use super::ops::AdminContext;
use super::{Reply, Request, Response, Stats, read_line, socket_path};
use crate::HostConfig;
use sasl2_fast::fast::tokens::ClientInfo;

/// `host ctl --config FILE COMMAND`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The configuration file of the host (its `data_dir` holds the admin socket).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Seconds to wait for a running host's answer before giving up (exit 1).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// Print the result as JSON (one object) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Request,
}

/// `--timeout`'s default, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;

/// An RFC 3339 timestamp as unix milliseconds (what `revoke-before` takes).
pub fn parse_rfc3339_ms(s: &str) -> Result<u64, String> {
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("not an RFC 3339 time such as 2026-12-02T17:00:00Z ({e})"))?;
    u64::try_from(t.timestamp_millis()).map_err(|_| "before 1970".to_owned())
}

/// Runs `host ctl` with its config already loaded.
pub async fn run(config: HostConfig, args: CtlArgs) -> ExitCode {
    let timeout = Duration::from_secs(args.timeout);
    run_request(config, args.command, args.json, timeout).await
}

/// Runs one request: on the running host over its admin socket, or, when none answers, on
/// the store directly with the same operations; prints the reply (text or JSON). Also what
/// `host passwd` and `host clients` run.
pub async fn run_request(
    config: HostConfig,
    mut request: Request,
    json: bool,
    timeout: Duration,
) -> ExitCode {
    if let Request::Passwd { password, .. } = &mut request {
        match read_password() {
            Ok(p) => *password = p,
            Err(code) => return code,
        }
    }
    let path = socket_path(&config.server.data_dir);
    let response = match ask(&path, &request, timeout).await {
        Ok(r) => r,
        Err(Ask::NotRunning) => {
            eprintln!(
                "note: no host answers on {}; working on the store directly",
                path.display()
            );
            match offline(&config).await {
                Ok(context) => context.handle(request).await,
                Err(code) => return code,
            }
        }
        Err(Ask::Failed(message)) => {
            eprintln!("error: {message}");
            return ExitCode::from(1);
        }
    };
    match response {
        Response::Ok { reply } => {
            if json {
                match serde_json::to_string_pretty(&reply) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(1);
                    }
                }
            } else {
                print_reply(&reply);
            }
            ExitCode::SUCCESS
        }
        Response::Error { message } => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

/// The new password: one line of stdin, without its line end.
fn read_password() -> Result<Zeroizing<String>, ExitCode> {
    let mut line = Zeroizing::new(String::new());
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        eprintln!("error: cannot read the new password from stdin");
        return Err(ExitCode::from(1));
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("error: empty password");
        return Err(ExitCode::from(1));
    }
    Ok(Zeroizing::new(password.to_owned()))
}

enum Ask {
    /// No socket, or nobody listening on it.
    NotRunning,
    /// A host is there but the exchange failed.
    Failed(String),
}

async fn ask(path: &Path, request: &Request, timeout: Duration) -> Result<Response, Ask> {
    use std::io::ErrorKind;
    let shown = path.display();
    let mut stream = match tokio::time::timeout(timeout, UnixStream::connect(path)).await {
        Err(_) => {
            return Err(Ask::Failed(format!(
                "the host did not accept on {shown} within {} s; it may be hung",
                timeout.as_secs()
            )));
        }
        Ok(Ok(s)) => s,
        Ok(Err(e)) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            return Err(Ask::NotRunning);
        }
        Ok(Err(e)) if e.kind() == ErrorKind::PermissionDenied => {
            return Err(Ask::Failed(format!(
                "{shown}: permission denied; run ctl as the user the host runs as"
            )));
        }
        Ok(Err(e)) => return Err(Ask::Failed(format!("{shown}: {e}"))),
    };
    let mut line = Zeroizing::new(
        serde_json::to_vec(request).map_err(|e| Ask::Failed(format!("request: {e}")))?,
    );
    line.push(b'\n');
    let exchange = async {
        stream.write_all(&line).await?;
        read_line(&mut stream).await
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Err(Ask::Failed(format!(
            "the host on {shown} did not answer within {} s; it may be hung (the store was \
             not touched; see `--timeout`)",
            timeout.as_secs()
        ))),
        Ok(Err(e)) => Err(Ask::Failed(format!(
            "the host on {shown} closed the connection without an answer ({e}); it may be \
             shutting down"
        ))),
        Ok(Ok(answer)) => serde_json::from_slice(&answer)
            .map_err(|e| Ask::Failed(format!("unreadable answer from the host: {e}"))),
    }
}

/// The store and accounts of a stopped host, as the running one would have them.
async fn offline(config: &HostConfig) -> Result<AdminContext, ExitCode> {
    let fail = |message: String| {
        eprintln!("error: {message}");
        ExitCode::from(1)
    };
    let accounts = crate::setup::open_accounts(config).map_err(|e| fail(e.to_string()))?;
    let fast = crate::setup::open_fast(config, None, Vec::new(), None)
        .await
        .map_err(|e| {
            fail(format!(
                "{e}\nerror: cannot open the token store; is a host running that does not \
                 answer on its admin socket?"
            ))
        })?;
    Ok(AdminContext {
        accounts: Arc::new(accounts),
        fast,
        data_dir: config.server.data_dir.clone(),
        live: None,
    })
}

fn fmt_ms(ms: u64) -> String {
    sasl2_fast::fast::clock::xep0082(ms)
}

fn print_reply(reply: &Reply) {
    match reply {
        Reply::Clients { account, clients } => print_clients(account, clients),
        Reply::Revoked {
            account,
            clients,
            sessions_closed,
        } => {
            if clients.is_empty() {
                println!("{account} has no FAST clients; tokens issued until now are revoked");
            } else {
                println!(
                    "revoked {} FAST client(s) of {account}: {}",
                    clients.len(),
                    clients.join(", ")
                );
            }
            print_sessions_closed(*sessions_closed);
        }
        Reply::PasswordChanged {
            account,
            file,
            sessions_closed,
        } => {
            println!("password of {account} changed (stored in {file}); FAST tokens revoked");
            print_sessions_closed(*sessions_closed);
        }
        Reply::RevokedBefore { before_ms } => {
            println!(
                "revoked every FAST token issued before {}",
                fmt_ms(*before_ms)
            );
        }
        Reply::Stats(s) => print_stats(s),
    }
}

fn print_sessions_closed(closed: Option<usize>) {
    match closed {
        Some(n) => println!("{n} live session(s) closed"),
        // Said, not left as "0": with PostgreSQL, hosts of the cluster may still serve the
        // account's sessions.
        None => println!("no host answered: live sessions, if any, were not closed"),
    }
}

fn print_clients(account: &str, clients: &[ClientInfo]) {
    if clients.is_empty() {
        println!("{account}: no FAST clients");
    }
    for c in clients {
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
}

fn print_stats(s: &Stats) {
    match s.uptime_secs {
        Some(up) if s.running => println!("host:        running, up {up} s"),
        _ => println!("host:        not running (store only)"),
    }
    if let Some(c) = &s.connections {
        println!(
            "connections: open {}, unauthenticated {}, authenticated {}, bound {} (max {})",
            c.open, c.unauthenticated, c.authenticated, c.bound, c.max
        );
    }
    if let Some(l) = &s.logins {
        println!(
            "logins:      password {}, fast {}, failed {}",
            l.password, l.fast, l.failed
        );
    }
    if let Some(f) = &s.fast {
        println!(
            "fast:        issued {}, rotated {}, promoted {}, used {}, invalidated {}, revoked {}, \
             expired {}",
            f.issued, f.rotated, f.promoted, f.used, f.invalidated, f.revoked, f.expired
        );
        let rejected: Vec<String> = f.rejected.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("rejected:    {}", rejected.join(", "));
    }
    match &s.store {
        Some(st) => match st.disk_bytes {
            Some(b) => println!(
                "store:       {}, {} records, {b} bytes on disk",
                st.kind, st.records
            ),
            None => println!("store:       {}, {} records", st.kind, st.records),
        },
        None => println!("store:       none (FAST is not enabled)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse_to_unix_ms() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(
            parse_rfc3339_ms("2026-08-01T14:00:00.999+02:00"),
            Ok(1_785_585_600_999)
        );
        assert!(parse_rfc3339_ms("2026-08-01").is_err());
        assert!(parse_rfc3339_ms("yesterday").is_err());
        assert!(parse_rfc3339_ms("1969-12-31T23:59:59Z").is_err());
    }
}
