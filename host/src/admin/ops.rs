//! The admin operations, one code path for the running host (behind the admin socket) and
//! for `host ctl` on a stopped host (on the store directly).
//!
//! Revocations name [`RevokedBy::Admin`] as their actor, so the token authority writes the
//! audit line (`sasl2_fast::audit`, `by="admin"`, never a token; a password change is
//! `password-change`). On a running host they also close the live sessions of the revoked
//! clients, with the stream error `not-authorized` as XEP-0494 revocations do (see
//! `host/src/router.rs`), and one audit line per closed session. A session belongs to a FAST
//! client when its SASL2 user-agent id hashes to that client's label (the same [`ClientKey`]
//! the token store uses).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sasl2_fast::fast::FastPlugin;
use sasl2_fast::fast::config::StoreKind;
use sasl2_fast::fast::hooks::{FastMetrics, RejectReason, RevokedBy};
use sasl2_fast::fast::tokens::ClientInfo;
use sasl2_fast::sasl2::accounts::normalize_username;
use sasl2_fast::store::ClientKey;
use tokio::sync::Semaphore;
use tracing::info;
use xmpp_parsers::stream_error::DefinedCondition;

use super::{ConnectionStats, FastStats, Reply, Request, Response, Stats, StoreStats};
use crate::HostAccounts;
use crate::metrics::HostMetrics;
use crate::pre_auth::PreAuthSlots;
use crate::router::Router;

/// What only a running host has, as handles on the parts `stats` and the revocations read
/// (not the connections' shared state: the admin socket outliving a connection keeps nothing
/// of it alive).
pub struct LiveHost {
    /// Bound sessions (closed on revocation, counted by `stats`).
    pub router: Arc<Router>,
    /// Unauthenticated connections per source address.
    pub pre_auth_slots: Arc<PreAuthSlots>,
    /// The host's metrics (login totals).
    pub metrics: Arc<HostMetrics>,
    /// FAST lifecycle counters.
    pub fast_metrics: Arc<FastMetrics>,
    /// The `max_connections` semaphore (open connections = max - available).
    pub connection_limit: Arc<Semaphore>,
    /// `max_connections`.
    pub max_connections: usize,
    /// When the host started.
    pub started: Instant,
}

/// Everything an admin operation acts on.
pub struct AdminContext {
    /// The account database.
    pub accounts: Arc<HostAccounts>,
    /// The FAST plugin (token store), if enabled.
    pub fast: Option<FastPlugin>,
    /// The host's `data_dir`.
    pub data_dir: PathBuf,
    /// `Some` inside a running host.
    pub live: Option<LiveHost>,
}

impl std::fmt::Debug for AdminContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminContext")
            .field("data_dir", &self.data_dir)
            .field("fast", &self.fast.is_some())
            .field("live", &self.live.is_some())
            .finish()
    }
}

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Not a valid username.
    #[error("invalid username {0:?}")]
    InvalidUser(String),
    /// No such account.
    #[error("no such account: {0}")]
    UnknownAccount(String),
    /// The label matches none of the account's clients.
    #[error("{account} has no FAST client {client} (see `host ctl clients {account}`)")]
    UnknownClient {
        /// The account.
        account: String,
        /// The label given.
        client: String,
    },
    /// The config has FAST off.
    #[error("FAST is not enabled in this config")]
    FastDisabled,
    /// `revoke-before` with a time after now.
    #[error("TIME is in the future; it would revoke tokens not issued yet")]
    FutureTime,
    /// An empty password.
    #[error("empty password")]
    EmptyPassword,
    /// A password longer than [`super::MAX_PASSWORD_BYTES`].
    #[error("the password is longer than {} bytes", super::MAX_PASSWORD_BYTES)]
    PasswordTooLong,
    /// The store or the accounts file failed.
    #[error("{0}")]
    Failed(String),
}

fn failed(e: impl std::fmt::Display) -> AdminError {
    AdminError::Failed(e.to_string())
}

impl AdminContext {
    /// Runs one request.
    pub async fn handle(&self, request: Request) -> Response {
        match self.run(request).await {
            Ok(reply) => Response::Ok { reply },
            Err(e) => Response::Error {
                message: e.to_string(),
            },
        }
    }

    async fn run(&self, request: Request) -> Result<Reply, AdminError> {
        match request {
            Request::Clients { user } => self.clients(&user).await,
            Request::Revoke { user, client } => self.revoke(&user, client.as_deref()).await,
            Request::Passwd { user, password } => self.passwd(&user, &password).await,
            Request::RevokeBefore { before_ms } => self.revoke_before(before_ms).await,
            Request::Stats {} => self.stats().await,
        }
    }

    fn account(&self, user: &str) -> Result<String, AdminError> {
        let account =
            normalize_username(user).ok_or_else(|| AdminError::InvalidUser(user.to_owned()))?;
        if !self.accounts.contains(&account) {
            return Err(AdminError::UnknownAccount(account));
        }
        Ok(account)
    }

    fn fast(&self) -> Result<&FastPlugin, AdminError> {
        self.fast.as_ref().ok_or(AdminError::FastDisabled)
    }

    async fn clients(&self, user: &str) -> Result<Reply, AdminError> {
        let account = self.account(user)?;
        let clients = self
            .fast()?
            .tokens()
            .clients(&account)
            .await
            .map_err(failed)?;
        Ok(Reply::Clients { account, clients })
    }

    async fn revoke(&self, user: &str, label: Option<&str>) -> Result<Reply, AdminError> {
        let account = self.account(user)?;
        let tokens = self.fast()?.tokens();
        let list = tokens.clients(&account).await.map_err(failed)?;
        let labels: Vec<String> = match label {
            Some(l) => {
                let l = l.to_ascii_lowercase();
                // The label `clients` prints, or the whole hash of `clients --json`.
                let named = |c: &&ClientInfo| {
                    c.key.client_label() == l
                        || sasl2_fast::xmpp::lower_hex(c.key.client_hash()) == l
                };
                let Some(c) = list.iter().find(named) else {
                    return Err(AdminError::UnknownClient { account, client: l });
                };
                let l = c.key.client_label();
                tokens
                    .revoke_client(&c.key, &RevokedBy::Admin)
                    .await
                    .map_err(failed)?;
                vec![l]
            }
            None => {
                // One cutoff for the account: also covers a client issued a token between the
                // listing and now.
                tokens
                    .revoke_account(&account, &RevokedBy::Admin)
                    .await
                    .map_err(failed)?;
                list.iter().map(|c| c.key.client_label()).collect()
            }
        };
        tokens.store().flush().await.map_err(failed)?;
        let sessions_closed = self.close_sessions(&account, |ua| {
            ua.and_then(|ua| ClientKey::new(&account, ua).ok())
                .is_some_and(|k| labels.contains(&k.client_label()))
        });
        Ok(Reply::Revoked {
            account,
            clients: labels,
            sessions_closed,
        })
    }

    async fn passwd(&self, user: &str, password: &str) -> Result<Reply, AdminError> {
        let account = self.account(user)?;
        if password.is_empty() {
            return Err(AdminError::EmptyPassword);
        }
        if password.len() > super::MAX_PASSWORD_BYTES {
            return Err(AdminError::PasswordTooLong);
        }
        crate::setup::change_password(&self.accounts, self.fast.as_ref(), &account, password)
            .await
            .map_err(failed)?;
        // Every session was opened with the old password or a token it revoked.
        let sessions_closed = self.close_sessions(&account, |_| true);
        Ok(Reply::PasswordChanged {
            file: self.accounts.file().display().to_string(),
            account,
            sessions_closed,
        })
    }

    async fn revoke_before(&self, before_ms: u64) -> Result<Reply, AdminError> {
        let tokens = self.fast()?.tokens();
        if before_ms > tokens.now_ms() {
            return Err(AdminError::FutureTime);
        }
        tokens
            .revoke_all_issued_before(before_ms, &RevokedBy::Admin)
            .await
            .map_err(failed)?;
        tokens.store().flush().await.map_err(failed)?;
        // Sessions are not closed: the host does not remember when the token a session logged
        // in with was issued.
        Ok(Reply::RevokedBefore { before_ms })
    }

    /// Tells the account's bound sessions whose user-agent id `matches` to close; returns how
    /// many were told, or `None` outside a running host (no sessions to reach).
    fn close_sessions(
        &self,
        account: &str,
        matches: impl Fn(Option<&str>) -> bool,
    ) -> Option<usize> {
        let live = self.live.as_ref()?;
        let closed = live.router.close_matching(
            account,
            matches,
            DefinedCondition::NotAuthorized,
            "access revoked by the administrator",
        );
        for resource in &closed {
            info!(
                target: "sasl2_fast::audit",
                account,
                resource = %resource,
                by = RevokedBy::Admin.kind(),
                "session closed"
            );
        }
        Some(closed.len())
    }

    async fn stats(&self) -> Result<Reply, AdminError> {
        let store = match &self.fast {
            Some(f) => {
                let config = f.tokens().config();
                let records = f.tokens().store().len().await.map_err(failed)?;
                let (kind, disk_bytes) = match config.store {
                    StoreKind::Sled => {
                        let path = config
                            .store_path
                            .clone()
                            .unwrap_or_else(|| self.data_dir.join("fast-tokens"));
                        ("sled", Some(dir_bytes(&path)))
                    }
                    StoreKind::Postgres => ("postgres", None),
                    StoreKind::Memory => ("memory", None),
                    _ => ("other", None),
                };
                Some(StoreStats {
                    kind: kind.into(),
                    records,
                    disk_bytes,
                })
            }
            None => None,
        };
        let Some(live) = &self.live else {
            return Ok(Reply::Stats(Box::new(Stats {
                running: false,
                uptime_secs: None,
                connections: None,
                logins: None,
                fast: None,
                store,
            })));
        };
        let max = live.max_connections as u64;
        let open = max.saturating_sub(live.connection_limit.available_permits() as u64);
        let unauthenticated = u64::from(live.pre_auth_slots.total()).min(open);
        Ok(Reply::Stats(Box::new(Stats {
            running: true,
            uptime_secs: Some(live.started.elapsed().as_secs()),
            connections: Some(ConnectionStats {
                open,
                unauthenticated,
                authenticated: open - unauthenticated,
                bound: live.router.session_count() as u64,
                max,
            }),
            logins: Some(live.metrics.login_totals()),
            fast: self.fast.as_ref().map(|_| fast_stats(&live.fast_metrics)),
            store,
        })))
    }
}

fn fast_stats(m: &FastMetrics) -> FastStats {
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let rejected: BTreeMap<String, u64> = RejectReason::ALL
        .into_iter()
        .map(|r| (r.as_str().to_owned(), m.rejected(r)))
        .collect();
    FastStats {
        issued: l(&m.issued),
        rotated: l(&m.rotated),
        promoted: l(&m.promoted),
        used: l(&m.used),
        invalidated: l(&m.invalidated),
        revoked: l(&m.revoked),
        expired: l(&m.expired),
        rejected,
    }
}

/// Bytes of the regular files under `path` (0 if it cannot be read).
fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}
