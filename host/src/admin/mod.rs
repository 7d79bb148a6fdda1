//! Administration of a running host: the admin Unix socket and `host ctl`.
//!
//! Like `prosodyctl shell`, the host listens on a Unix socket in its `data_dir`
//! (`<data_dir>/admin.sock`) and `host ctl --config FILE COMMAND` talks to it:
//!
//! ```text
//! host ctl --config FILE clients USER          list USER's FAST clients
//! host ctl --config FILE revoke USER [CLIENT]  revoke USER's FAST clients (or one, by label)
//! host ctl --config FILE passwd USER           change USER's password (read from stdin)
//! host ctl --config FILE revoke-before TIME    revoke every token issued before TIME (RFC 3339)
//! host ctl --config FILE stats [--json]        connections, logins, FAST counters, store size
//! ```
//!
//! With no host running (no socket, or a stale one left by a kill -9: the connection is
//! refused) `ctl` opens the store itself and runs the same [`ops`] code.
//!
//! **Authorization is the file system's**: the socket is created mode 0600 inside a private
//! directory and then hard-linked into place, so it is never reachable by another user, and
//! `data_dir` itself is 0700. Whoever can connect is the host's own user (or root), who could
//! read the store and the pepper anyway. As a second check the host compares the peer's
//! `SO_PEERCRED` uid with the socket's owner and refuses anybody else.
//!
//! The protocol is one JSON request line and one JSON response line per connection
//! ([`Request`], [`Response`], serde_json), bounded in size ([`MAX_MESSAGE_BYTES`]) and time.

pub mod ctl;
pub mod ops;
mod socket;

use std::path::{Path, PathBuf};

use sasl2_fast::fast::tokens::ClientInfo;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use socket::{AdminServer, AdminSocketError};

/// The largest request or response line accepted (a client list of an account is at most
/// `max_clients_per_account` entries of bounded labels: far below this).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// The longest password `passwd` sets, in bytes: what SASL PLAIN accepts at login
/// (`sasl2_fast::sasl2::plain::MAX_PLAIN_PASSWORD_BYTES`), so every password set can be used
/// with every mechanism.
pub const MAX_PASSWORD_BYTES: usize = sasl2_fast::sasl2::plain::MAX_PLAIN_PASSWORD_BYTES;

/// The socket of a host with this `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.sock")
}

/// What `host ctl` asks for: its subcommands (clap) and the admin socket's request line
/// (serde) are this one type, so a command cannot mean one thing on the command line and
/// another to the host.
#[derive(Clone, Serialize, Deserialize, clap::Subcommand)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Lists USER's FAST clients (label, software, device, tokens, expiries).
    Clients {
        /// The account.
        user: String,
    },
    /// Revokes USER's FAST clients, or only CLIENT (a label `clients` prints); a running host
    /// also closes their live sessions.
    Revoke {
        /// The account.
        user: String,
        /// The client label (or the whole client hash of `clients --json`); none: every
        /// client.
        client: Option<String>,
    },
    /// Changes USER's password (the new one is read from stdin, one line), revokes USER's
    /// FAST tokens and, on a running host, closes USER's sessions.
    Passwd {
        /// The account (must exist).
        user: String,
        /// The new password: read from stdin, never an argument (it would show in `ps`);
        /// zeroized on drop, never in `Debug`.
        #[arg(skip)]
        password: Zeroizing<String>,
    },
    /// Revokes every FAST token of every account issued before TIME, an RFC 3339 timestamp
    /// such as 2026-12-02T17:00:00Z or 2026-12-02T18:00:00+01:00 (`date -u +%FT%TZ`).
    RevokeBefore {
        /// The cutoff (RFC 3339, not in the future), as unix ms on the socket.
        #[arg(value_name = "TIME", value_parser = ctl::parse_rfc3339_ms)]
        before_ms: u64,
    },
    /// Connections by state, logins and FAST counters since start, and the store's size.
    // A struct variant, not a unit one: serde ignores unknown fields beside the tag of a unit
    // variant even with `deny_unknown_fields`.
    Stats {},
}

impl std::fmt::Debug for Request {
    // The password stays out of Debug output (and so out of any log line).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Clients { user } => f.debug_struct("Clients").field("user", user).finish(),
            Request::Revoke { user, client } => f
                .debug_struct("Revoke")
                .field("user", user)
                .field("client", client)
                .finish(),
            Request::Passwd { user, .. } => f
                .debug_struct("Passwd")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            Request::RevokeBefore { before_ms } => f
                .debug_struct("RevokeBefore")
                .field("before_ms", before_ms)
                .finish(),
            Request::Stats {} => f.write_str("Stats"),
        }
    }
}

/// The host's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Response {
    /// Done.
    Ok {
        /// What was done or read.
        reply: Reply,
    },
    /// Refused or failed; nothing was changed unless `message` says so.
    Error {
        /// For the operator.
        message: String,
    },
}

/// The result of a successful [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reply {
    /// `clients`.
    Clients {
        /// The normalized account.
        account: String,
        /// Its clients.
        clients: Vec<ClientInfo>,
    },
    /// `revoke`.
    Revoked {
        /// The normalized account.
        account: String,
        /// Labels of the clients revoked.
        clients: Vec<String>,
        /// Live sessions of those clients that were closed; `None` when no host answered (the
        /// store was changed directly, and sessions on running hosts of a cluster stay open).
        sessions_closed: Option<usize>,
    },
    /// `passwd`.
    PasswordChanged {
        /// The normalized account.
        account: String,
        /// Where the new keys are stored.
        file: String,
        /// Live sessions of the account that were closed; `None` when no host answered.
        sessions_closed: Option<usize>,
    },
    /// `revoke-before`.
    RevokedBefore {
        /// The cutoff (unix ms).
        before_ms: u64,
    },
    /// `stats`.
    Stats(Box<Stats>),
}

/// What `stats` reports. The live parts are `None` when the host is stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// True when read from a running host.
    pub running: bool,
    /// Seconds since the host started.
    pub uptime_secs: Option<u64>,
    /// Connections by state.
    pub connections: Option<ConnectionStats>,
    /// Logins since start.
    pub logins: Option<crate::metrics::LoginTotals>,
    /// FAST lifecycle counters since start (`FastMetrics`).
    pub fast: Option<FastStats>,
    /// The token store.
    pub store: Option<StoreStats>,
}

/// Connections by state, now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionStats {
    /// Open connections (all states).
    pub open: u64,
    /// Not authenticated yet.
    pub unauthenticated: u64,
    /// Authenticated (bound or not yet).
    pub authenticated: u64,
    /// Bound sessions (a full JID).
    pub bound: u64,
    /// `max_connections`.
    pub max: u64,
}

/// `FastMetrics` as numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FastStats {
    /// Tokens issued on request.
    pub issued: u64,
    /// Tokens issued by rotation.
    pub rotated: u64,
    /// Promotions of `new` to `current`.
    pub promoted: u64,
    /// Successful FAST logins.
    pub used: u64,
    /// Client invalidations.
    pub invalidated: u64,
    /// Revocations.
    pub revoked: u64,
    /// Expired tokens removed.
    pub expired: u64,
    /// Rejected attempts by reason (`unknown-token`, `expired`, `revoked`, ...).
    pub rejected: std::collections::BTreeMap<String, u64>,
}

/// The token store's size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// `sled`, `postgres` or `memory`.
    pub kind: String,
    /// FAST client records.
    pub records: u64,
    /// Bytes on disk (sled only).
    pub disk_bytes: Option<u64>,
}

/// Reads one newline-terminated line of at most [`MAX_MESSAGE_BYTES`].
pub(crate) async fn read_line<R: tokio::io::AsyncRead + Unpin>(
    r: R,
) -> std::io::Result<Zeroizing<Vec<u8>>> {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _};
    // `take` bounds what a peer can make us buffer; +1 tells "too long" from "exactly full".
    let mut reader = tokio::io::BufReader::new(r.take(MAX_MESSAGE_BYTES as u64 + 1));
    // Zeroizing: a `passwd` request carries a password.
    let mut line = Zeroizing::new(Vec::new());
    reader.read_until(b'\n', &mut line).await?;
    if line.len() > MAX_MESSAGE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "message too long",
        ));
    }
    if line.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "message not terminated",
        ));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_hide_the_password() {
        let r = Request::Passwd {
            user: "alice".into(),
            password: Zeroizing::new("s3cret".into()),
        };
        assert!(!format!("{r:?}").contains("s3cret"));
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"command":"passwd","user":"alice","password":"s3cret"}"#
        );
        let back: Request = serde_json::from_str(&json).unwrap();
        assert!(matches!(back, Request::Passwd { user, .. } if user == "alice"));
        let r: Request =
            serde_json::from_str(r#"{"command":"revoke-before","before_ms":5}"#).unwrap();
        assert!(matches!(r, Request::RevokeBefore { before_ms: 5 }));
        assert!(
            serde_json::from_str::<Request>(r#"{"command":"clients","user":"a","x":1}"#).is_err()
        );
        assert!(serde_json::from_str::<Request>(r#"{"command":"shutdown"}"#).is_err());
        // Unknown fields are refused beside every command, `stats` (no fields) included.
        let stats: Request = serde_json::from_str(r#"{"command":"stats"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&stats).unwrap(),
            r#"{"command":"stats"}"#
        );
        for line in [
            r#"{"command":"stats","x":1}"#,
            r#"{"command":"revoke-before","before_ms":1,"x":1}"#,
            r#"{"command":"passwd","user":"a","password":"b","x":1}"#,
        ] {
            let e = serde_json::from_str::<Request>(line)
                .map(|_| ())
                .unwrap_err();
            assert!(e.to_string().contains("unknown field"), "{line}: {e}");
        }
    }

    #[tokio::test]
    async fn lines_are_bounded() {
        let ok = read_line(&b"{}\n"[..]).await.unwrap();
        assert_eq!(&ok[..], b"{}\n");
        let long = vec![b'x'; MAX_MESSAGE_BYTES + 10];
        assert!(read_line(&long[..]).await.is_err());
        assert!(read_line(&b"{}"[..]).await.is_err(), "no newline");
    }
}
