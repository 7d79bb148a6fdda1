//! The host: start-up and graceful shutdown.
//!
//! mini-redis style: [`run`] serves until a shutdown future completes; tests instead bind
//! `127.0.0.1:0` themselves, [`Host::start`] with those listeners and a typed
//! [`HostConfig`], talk to it, and call [`Host::shutdown`].
//!
//! The parts it puts together live beside it: [`crate::setup`] (data directory, accounts,
//! token store, password change: shared with offline `host ctl`), [`crate::listeners`] (the
//! XMPP ports and their accept loop), `crate::shared` (what connections read),
//! [`crate::admin`], [`crate::metrics_server`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sasl2_fast::fast::FastPlugin;
use sasl2_fast::fast::hooks::{FastMetrics, TracingObserver};
use sasl2_fast::fast::tokens::SweeperHandle;
use sasl2_fast::sasl2::bind2::Bind2;
use sasl2_fast::sasl2::plain::PlainProvider;
use sasl2_fast::sasl2::scram::ScramProvider;
use sasl2_fast::sasl2::{BackoffThrottle, Sasl2Server, ScramHash, UnknownAccounts};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::accounts::{HostAccounts, ITERATIONS};
use crate::config::HostConfig;
use crate::listeners::{BindError, Listeners, accept_loop};
use crate::metrics::HostMetrics;
use crate::router::Router;
use crate::setup::SetupError;
use crate::shared::Shared;
use crate::tls::TlsError;

/// Serves `listeners` with `config` until `shutdown` completes, then shuts down gracefully
/// (every stream ends with `</stream:stream>`, the token store is flushed and released).
pub async fn run(
    listeners: Listeners,
    config: HostConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), HostError> {
    let host = Host::start(listeners, config).await?;
    shutdown.await;
    host.shutdown().await;
    Ok(())
}

/// The host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A directory or file problem.
    #[error("{0}")]
    Io(String),
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// TLS set-up failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The data directory, the accounts or the token store could not be opened or changed.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The metrics listener could not start.
    #[error(transparent)]
    Metrics(#[from] crate::metrics_server::MetricsServerError),
    /// The admin socket could not be created.
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminSocketError),
}

/// A running host.
pub struct Host {
    config: HostConfig,
    shared: Arc<Shared>,
    admin: crate::admin::AdminServer,
    accounts: Arc<HostAccounts>,
    fast: Option<FastPlugin>,
    metrics: Arc<FastMetrics>,
    sweeper: Option<SweeperHandle>,
    local_addr: SocketAddr,
    tls_local_addr: Option<SocketAddr>,
    metrics_server: Option<crate::metrics_server::MetricsServer>,
    shutdown_tx: watch::Sender<bool>,
    accept_tasks: Vec<JoinHandle<()>>,
    done_rx: mpsc::Receiver<()>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("local_addr", &self.local_addr)
            .field("tls_local_addr", &self.tls_local_addr)
            .field("fast", &self.fast.is_some())
            .finish_non_exhaustive()
    }
}

/// The SASL layer of a host: SCRAM (and PLAIN if allowed) over `accounts`, Bind 2, FAST when
/// enabled, the login throttle of the config.
fn sasl2_server(
    config: &HostConfig,
    accounts: &HostAccounts,
    fast: Option<&FastPlugin>,
) -> Sasl2Server {
    let server = &config.server;
    // Unknown accounts get fake SCRAM salts from a key that survives restarts (the key
    // config accounts' salts come from), so they cannot be told from real ones by probing
    // across a restart (S-29).
    let unknown = UnknownAccounts::new(accounts.fake_key().clone(), ITERATIONS);
    let store = accounts.store();
    let scram = |hash, plus| {
        Arc::new(
            ScramProvider::new(hash, plus, store.clone()).with_unknown_accounts(unknown.clone()),
        )
    };
    // RFC 6120 SASL beside SASL2: clients without SASL2 log in with the same mechanisms
    // (FAST stays SASL2-only: it is an inline feature).
    let mut builder = Sasl2Server::builder()
        .rfc6120_sasl(true)
        .mechanism(scram(ScramHash::Sha256, true))
        .mechanism(scram(ScramHash::Sha256, false))
        .mechanism(scram(ScramHash::Sha1, true))
        .mechanism(scram(ScramHash::Sha1, false))
        .inline_feature(Arc::new(Bind2::new()));
    if server.allow_plain {
        builder = builder.mechanism(Arc::new(
            PlainProvider::new(store.clone()).with_unknown_accounts(unknown.clone()),
        ));
    }
    // Password guessing is bounded inside the SASL layer, before every credential check;
    // FAST's client records tell it which devices are the owners' (never locked out by
    // strangers).
    let mut throttle = BackoffThrottle::new(
        server.login_throttle_failures,
        server.login_throttle_max_backoff,
    );
    if let Some(f) = fast {
        builder = builder.inline_feature(Arc::new(f.clone()));
        throttle = throttle.with_known_devices(f.tokens().clone());
    }
    builder = builder.login_throttle(Arc::new(throttle));
    builder.build()
}

impl Host {
    /// Loads accounts, opens the token store, sets up TLS and starts serving `listeners`.
    /// Prints nothing; see [`Host::local_addr`].
    pub async fn start(listeners: Listeners, config: HostConfig) -> Result<Host, HostError> {
        let server = &config.server;
        // Before anything is opened: a typed config skips the check of config load.
        if let Some(addr) = server.metrics_listen {
            crate::metrics_server::check_loopback(addr)?;
        }
        let accounts = Arc::new(crate::setup::open_accounts(&config)?);
        let tls = crate::tls::setup(
            &server.domain,
            &server.data_dir,
            server.tls_cert.as_deref(),
            server.tls_key.as_deref(),
            server.tls_session_tickets,
        )?;
        // Lifecycle events are counted (summarized at shutdown) and logged at debug level.
        let metrics = Arc::new(FastMetrics::default());
        // The same events, and the store's latency, for the metrics endpoint.
        let host_metrics = Arc::new(HostMetrics::new());
        // Password changes and deletions are held on the account side too: every FAST login
        // asks it, so a token store restored from an older backup cannot revive their tokens.
        let fast = crate::setup::open_fast(
            &config,
            Some(accounts.store()),
            vec![
                metrics.clone(),
                Arc::new(TracingObserver),
                host_metrics.fast(),
            ],
            Some(host_metrics.store()),
        )
        .await?;
        let sasl2 = Arc::new(sasl2_server(&config, &accounts, fast.as_ref()));
        let sweeper = fast.as_ref().map(|f| f.tokens().spawn_sweeper());

        let io = |e: std::io::Error| HostError::Io(e.to_string());
        let local_addr = listeners.starttls.local_addr().map_err(io)?;
        let tls_local_addr = match &listeners.direct_tls {
            Some(l) => Some(l.local_addr().map_err(io)?),
            None => None,
        };

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let metrics_server = match server.metrics_listen {
            Some(addr) => Some(
                crate::metrics_server::MetricsServer::bind(
                    addr,
                    host_metrics.clone(),
                    shutdown_rx.clone(),
                )
                .await?,
            ),
            None => None,
        };
        let limit = Arc::new(Semaphore::new(server.max_connections));
        let router = Arc::new(Router::new());
        let client_access = sasl2_fast::fast::cam::ClientAccess::new(
            fast.as_ref().map(|f| f.tokens().clone()),
            router.clone(),
        );
        let early_data = server.tls_early_data.then(|| {
            crate::tls::early_data::EarlyData::new(
                &tls.config,
                server.max_unauthenticated_stanza_bytes,
            )
        });
        let shared = Arc::new(Shared {
            server: server.clone(),
            acceptor: tokio_rustls::TlsAcceptor::from(tls.config.clone()),
            early_data,
            sasl2,
            tls,
            router: router.clone(),
            client_access,
            shutdown: shutdown_rx,
            // 20 lines a second, bursts of 100: an attack is visible, the disk is safe.
            pre_auth_log: crate::log_budget::LogBudget::new(20, 100),
            pre_auth_slots: crate::pre_auth::PreAuthSlots::new(server.max_unauthenticated_per_ip),
            metrics: host_metrics.clone(),
            conn_ids: Default::default(),
        });
        // Before the listeners serve: a host that cannot have its admin socket (another host
        // lives on this data_dir) does not start.
        let admin = crate::admin::AdminServer::start(
            &server.data_dir,
            crate::admin::ops::AdminContext {
                accounts: accounts.clone(),
                fast: fast.clone(),
                data_dir: server.data_dir.clone(),
                live: Some(crate::admin::ops::LiveHost {
                    router,
                    pre_auth_slots: shared.pre_auth_slots.clone(),
                    metrics: host_metrics,
                    fast_metrics: metrics.clone(),
                    connection_limit: limit.clone(),
                    max_connections: server.max_connections,
                    started: std::time::Instant::now(),
                }),
            },
        )?;
        let (done_tx, done_rx) = mpsc::channel::<()>(1);
        let mut accept_tasks = vec![tokio::spawn(accept_loop(
            shared.clone(),
            listeners.starttls,
            false,
            limit.clone(),
            done_tx.clone(),
        ))];
        if let Some(l) = listeners.direct_tls {
            accept_tasks.push(tokio::spawn(accept_loop(
                shared.clone(),
                l,
                true,
                limit,
                done_tx.clone(),
            )));
        }
        drop(done_tx);
        Ok(Host {
            config,
            shared,
            admin,
            accounts,
            fast,
            metrics,
            sweeper,
            local_addr,
            tls_local_addr,
            metrics_server,
            shutdown_tx,
            accept_tasks,
            done_rx,
        })
    }

    /// The STARTTLS listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The direct-TLS listener's address, if configured.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls_local_addr
    }

    /// The metrics listener's address (`metrics_listen`, with the port the OS chose for
    /// `:0`), if configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(|m| m.local_addr())
    }

    /// Every metric the host keeps (what `GET /metrics` serves).
    pub fn metrics(&self) -> &Arc<crate::metrics::HostMetrics> {
        &self.shared.metrics
    }

    /// The FAST plugin, if enabled.
    pub fn fast(&self) -> Option<&FastPlugin> {
        self.fast.as_ref()
    }

    /// The PEM file of the server certificate (for clients to trust in tests).
    pub fn cert_pem_path(&self) -> &Path {
        &self.shared.tls.cert_pem_path
    }

    /// The account database.
    pub fn accounts(&self) -> &Arc<HostAccounts> {
        &self.accounts
    }

    /// The configuration in use.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// The admin socket (`<data_dir>/admin.sock`).
    pub fn admin_socket(&self) -> &Path {
        self.admin.path()
    }

    /// The session router (e.g. to count bound sessions in tests).
    pub fn router(&self) -> &Router {
        &self.shared.router
    }

    /// Changes a password (new SCRAM keys, persisted in `accounts.toml`) and revokes the
    /// account's FAST tokens: a password change must log out token-holding clients.
    pub async fn change_password(&self, user: &str, new_password: &str) -> Result<(), HostError> {
        crate::setup::change_password(&self.accounts, self.fast.as_ref(), user, new_password)
            .await?;
        Ok(())
    }

    /// Counters of FAST lifecycle events since start (issued, rotated, used, rejected, ...).
    pub fn fast_metrics(&self) -> &FastMetrics {
        &self.metrics
    }

    /// What the direct-TLS listener did with TLS 1.3 early data; `None` unless
    /// `tls_early_data` is on.
    pub fn early_data(&self) -> Option<&crate::tls::early_data::EarlyDataCounts> {
        self.shared.early_data.as_ref().map(|e| &e.counts)
    }

    /// TLS handshakes completed since start, full and resumed (both listeners).
    pub fn tls_handshakes(&self) -> &crate::tls::HandshakeCounts {
        &self.shared.tls.handshakes
    }

    /// Stops accepting, ends every stream with `</stream:stream>`, waits for the connections
    /// (at most 10 s), flushes the token store and releases it (the sled lock), so the same
    /// `data_dir` can be opened again.
    pub async fn shutdown(mut self) {
        info!("shutting down");
        // First: `ctl` must not find a socket of a host that no longer serves, and the admin
        // context holds the token store, which is released last.
        self.admin.shutdown().await;
        let _ = self.shutdown_tx.send(true);
        for t in self.accept_tasks {
            let _ = t.await;
        }
        if let Some(m) = self.metrics_server {
            m.join().await;
        }
        // Every connection task holds a sender; `None` means all have finished.
        if tokio::time::timeout(Duration::from_secs(10), self.done_rx.recv())
            .await
            .is_err()
        {
            warn!("some connections did not close in time");
        }
        if let Some(sweeper) = self.sweeper {
            sweeper.shutdown().await;
        }
        let suppressed = self.shared.pre_auth_log.flush();
        if suppressed > 0 {
            warn!(
                suppressed,
                "log lines of unauthenticated peers suppressed (over the log budget)"
            );
        }
        drop(self.shared);
        drop(self.accounts);
        if let Some(f) = self.fast {
            if let Err(e) = f.tokens().store().flush().await {
                warn!(error = %e, "flushing the token store failed");
            }
            // The sweeper is gone (awaited above) and so are the connections: this is the
            // last reference, so the store (and its file lock) is released when we return.
            let tokens = f.tokens().clone();
            drop(f);
            if Arc::strong_count(&tokens) != 1 {
                warn!("token store still referenced after shutdown");
            }
        }
        info!(fast = %self.metrics.summary(), "shut down");
    }
}
