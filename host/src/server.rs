//! The host: listeners, shared state, start-up and graceful shutdown.
//!
//! mini-redis style: [`run`] serves until a shutdown future completes; tests instead bind
//! `127.0.0.1:0` themselves, [`Host::start`] with those listeners and a typed
//! [`HostConfig`], talk to it, and call [`Host::shutdown`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sasl2_fast::fast::FastPlugin;
use sasl2_fast::fast::hooks::{FastMetrics, FastObserver, TracingObserver};
use sasl2_fast::fast::open::OpenError;
use sasl2_fast::fast::tokens::SweeperHandle;
use sasl2_fast::sasl2::bind2::Bind2;
use sasl2_fast::sasl2::plain::PlainProvider;
use sasl2_fast::sasl2::scram::ScramProvider;
use sasl2_fast::sasl2::{BackoffThrottle, Sasl2Server, ScramHash};
use sasl2_fast::stream::{STREAM_FOOTER, stream_header_xml};
use sasl2_fast::xmpp::ns;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument as _, info, info_span, warn};
use xmpp_parsers::stream_error::DefinedCondition;

use crate::accounts::{AccountsError, HostAccounts, ITERATIONS};
use crate::config::{HostConfig, ServerConfig};
use crate::router::Router;
use crate::tls::{TlsError, TlsSetup};

/// The sockets a host serves: the STARTTLS port and, optionally, the direct-TLS port
/// (XEP-0368).
#[derive(Debug)]
pub struct Listeners {
    /// STARTTLS (RFC 6120 §5).
    pub starttls: TcpListener,
    /// Direct TLS, if any.
    pub direct_tls: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses of a config.
    pub async fn bind(server: &ServerConfig) -> Result<Listeners, HostError> {
        let bind = async |addr: SocketAddr| {
            TcpListener::bind(addr)
                .await
                .map_err(|source| HostError::Bind { addr, source })
        };
        Ok(Listeners {
            starttls: bind(server.listen).await?,
            direct_tls: match server.listen_tls {
                Some(a) => Some(bind(a).await?),
                None => None,
            },
        })
    }

    /// Loopback listeners on ports the OS picks (for tests): STARTTLS, and direct TLS when
    /// `direct_tls`.
    pub async fn loopback(direct_tls: bool) -> std::io::Result<Listeners> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Ok(Listeners {
            starttls: TcpListener::bind(any).await?,
            direct_tls: match direct_tls {
                true => Some(TcpListener::bind(any).await?),
                false => None,
            },
        })
    }
}

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

/// State shared by all connections.
pub struct Shared {
    /// The configuration.
    pub config: HostConfig,
    /// Mechanisms and inline features.
    pub sasl2: Arc<Sasl2Server>,
    /// TLS identity.
    pub tls: TlsSetup,
    /// Accepts TLS connections.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Bound sessions.
    pub router: Arc<Router>,
    /// XEP-0494: the owner lists and revokes clients (FAST clients and the router's sessions).
    pub client_access: sasl2_fast::fast::cam::ClientAccess,
    /// Becomes `true` on shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// Log lines unauthenticated peers can cause (failures, refusals) share this budget.
    pub pre_auth_log: crate::log_budget::LogBudget,
    /// Unauthenticated connections per source address (`max_unauthenticated_per_ip`).
    pub pre_auth_slots: Arc<crate::pre_auth::PreAuthSlots>,
    /// Login, connection, FAST and store metrics (served when `metrics_listen` is set).
    pub metrics: Arc<crate::metrics::HostMetrics>,
    /// Logins counted for `host ctl stats`.
    pub logins: crate::admin::ops::LoginCounters,
    /// TLS 1.3 early data on the direct-TLS listener (`tls_early_data`), if on.
    pub early_data: Option<crate::tls::early_data::EarlyData>,
    conn_ids: AtomicU64,
}

/// The host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A directory or file problem.
    #[error("{0}")]
    Io(String),
    /// A listener could not be bound or read.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// TLS set-up failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Accounts could not be loaded or saved.
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    /// The FAST plugin (token store) could not be opened; sled allows one process at a time.
    #[error("FAST: {0}")]
    Fast(#[from] OpenError),
    /// The token store failed.
    #[error("token store: {0}")]
    Store(String),
    /// The metrics listener could not start.
    #[error(transparent)]
    Metrics(#[from] crate::metrics_server::MetricsServerError),
    /// The admin socket could not be created.
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminSocketError),
}

/// A running host.
pub struct Host {
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

/// Creates the data directory (owner-only on Unix).
pub fn ensure_data_dir(dir: &Path) -> Result<(), HostError> {
    std::fs::create_dir_all(dir).map_err(|e| HostError::Io(format!("{}: {e}", dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

/// Opens the FAST plugin of a config, if enabled, with `observers` registered (for the admin
/// commands on a stopped host: no logins, so no account store to ask).
pub async fn open_fast(
    config: &HostConfig,
    observers: Vec<Arc<dyn FastObserver>>,
) -> Result<Option<FastPlugin>, HostError> {
    open_fast_observed(config, None, observers, None).await
}

/// Like [`open_fast`], with the account store every FAST login asks for the account side's
/// revocation cutoff, and the token store's operations reported to `store_observer`.
pub async fn open_fast_observed(
    config: &HostConfig,
    accounts: Option<Arc<dyn sasl2_fast::sasl2::accounts::AccountStore>>,
    observers: Vec<Arc<dyn FastObserver>>,
    store_observer: Option<Arc<dyn sasl2_fast::store::observed::StoreObserver>>,
) -> Result<Option<FastPlugin>, HostError> {
    match config.fast() {
        Some(c) => Ok(Some(
            FastPlugin::open_observed(
                c.clone(),
                &config.server.data_dir,
                accounts,
                observers,
                store_observer,
            )
            .await?,
        )),
        None => Ok(None),
    }
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
        ensure_data_dir(&server.data_dir)?;
        let accounts = Arc::new(HostAccounts::load(&config.accounts, &server.data_dir)?);
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
        let host_metrics = Arc::new(crate::metrics::HostMetrics::new());
        // Password changes and deletions are held on the account side too: every FAST login
        // asks it, so a token store restored from an older backup cannot revive their tokens.
        let fast = open_fast_observed(
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
        // Unknown accounts get fake SCRAM salts from a key that survives restarts (the key
        // config accounts' salts come from), so they cannot be told from real ones by probing
        // across a restart (S-29).
        let fake_key = accounts.fake_key().clone();

        let store = accounts.store();
        let scram = |hash, plus| {
            Arc::new(
                ScramProvider::new(hash, plus, store.clone())
                    .with_fake_iterations(ITERATIONS)
                    .with_fake_key(fake_key.clone()),
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
                PlainProvider::new(store.clone())
                    .with_fake_iterations(ITERATIONS)
                    .with_fake_key(fake_key.clone()),
            ));
        }
        // Password guessing is bounded inside the SASL layer, before every credential check;
        // FAST's client records tell it which devices are the owners' (never locked out by
        // strangers).
        let mut throttle = BackoffThrottle::new(
            server.login_throttle_failures,
            server.login_throttle_max_backoff,
        );
        if let Some(f) = &fast {
            builder = builder.inline_feature(Arc::new(f.clone()));
            throttle = throttle.with_known_devices(f.tokens().clone());
        }
        builder = builder.login_throttle(Arc::new(throttle));
        let sasl2 = Arc::new(builder.build());
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
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
        let limit = Arc::new(Semaphore::new(server.max_connections));
        let pre_auth_slots = crate::pre_auth::PreAuthSlots::new(server.max_unauthenticated_per_ip);
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
            early_data,
            config,
            sasl2,
            tls,
            acceptor,
            router,
            client_access,
            shutdown: shutdown_rx,
            // 20 lines a second, bursts of 100: an attack is visible, the disk is safe.
            pre_auth_log: crate::log_budget::LogBudget::new(20, 100),
            pre_auth_slots,
            metrics: host_metrics,
            logins: Default::default(),
            conn_ids: AtomicU64::new(0),
        });
        // Before the listeners serve: a host that cannot have its admin socket (another host
        // lives on this data_dir) does not start.
        let admin = crate::admin::AdminServer::start(
            &shared.config.server.data_dir,
            crate::admin::ops::AdminContext {
                accounts: accounts.clone(),
                fast: fast.clone(),
                data_dir: shared.config.server.data_dir.clone(),
                live: Some(crate::admin::ops::LiveHost {
                    shared: shared.clone(),
                    metrics: metrics.clone(),
                    connection_limit: limit.clone(),
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
        &self.shared.config
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
        change_password(&self.accounts, self.fast.as_ref(), user, new_password).await
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
    pub async fn shutdown(self) {
        let Host {
            shared,
            admin,
            accounts,
            fast,
            metrics,
            sweeper,
            metrics_server,
            shutdown_tx,
            accept_tasks,
            mut done_rx,
            ..
        } = self;
        info!("shutting down");
        // First: it holds handles on the store, and `ctl` must not find a socket of a host
        // that no longer serves.
        admin.shutdown().await;
        let _ = shutdown_tx.send(true);
        for t in accept_tasks {
            let _ = t.await;
        }
        if let Some(m) = metrics_server {
            m.join().await;
        }
        // Every connection task holds a sender; `None` means all have finished.
        if tokio::time::timeout(Duration::from_secs(10), done_rx.recv())
            .await
            .is_err()
        {
            warn!("some connections did not close in time");
        }
        if let Some(sweeper) = sweeper {
            sweeper.shutdown().await;
        }
        let suppressed = shared.pre_auth_log.flush();
        if suppressed > 0 {
            warn!(
                suppressed,
                "log lines of unauthenticated peers suppressed (over the log budget)"
            );
        }
        drop(shared);
        drop(accounts);
        if let Some(f) = fast {
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
        info!(fast = %metrics.summary(), "shut down");
    }
}

/// Password change shared by [`Host::change_password`] and the `passwd` command.
pub async fn change_password(
    accounts: &HostAccounts,
    fast: Option<&FastPlugin>,
    user: &str,
    new_password: &str,
) -> Result<(), HostError> {
    let user = accounts.set_password(user, new_password)?;
    if let Some(f) = fast {
        f.tokens()
            .revoke_account(&user, &sasl2_fast::fast::hooks::RevokedBy::PasswordChange)
            .await
            .map_err(|e| HostError::Store(e.to_string()))?;
        f.tokens()
            .store()
            .flush()
            .await
            .map_err(|e| HostError::Store(e.to_string()))?;
    }
    info!(account = %user, "password changed, FAST tokens revoked");
    Ok(())
}

/// A complete stream (header, `policy-violation` error, footer) for connections over the limit.
fn over_limit_error(domain: &str, text: &str) -> String {
    let mut s = stream_header_xml(
        ns::JABBER_CLIENT,
        Some(domain),
        None,
        None,
        Some("1.0"),
        None,
    );
    crate::connection::write_stream_error(&mut s, DefinedCondition::PolicyViolation, Some(text));
    s.push_str(STREAM_FOOTER);
    s
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    direct_tls: bool,
    limit: Arc<Semaphore>,
    done: mpsc::Sender<()>,
) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            crate::budgeted!(shared.pre_auth_log, peer.ip(), warn, %peer, "connection limit reached, closing");
            if !direct_tls {
                // Say why before closing (RFC 6120 §4.9.1.2: the header first, then the
                // error). `try_write` never waits: a fresh socket's send buffer takes these few
                // hundred bytes, and a peer that cannot must not hold an over-limit slot.
                let error = over_limit_error(&shared.config.server.domain, "too many connections");
                let _ = tcp.try_write(error.as_bytes());
            }
            drop(tcp);
            continue;
        };
        let Some(slot) = shared.pre_auth_slots.try_take(peer.ip()) else {
            crate::budgeted!(
                shared.pre_auth_log,
                peer.ip(),
                warn,
                %peer,
                "too many unauthenticated connections from this address, closing"
            );
            if !direct_tls {
                let error = over_limit_error(
                    &shared.config.server.domain,
                    "too many unauthenticated connections from your address",
                );
                let _ = tcp.try_write(error.as_bytes());
            }
            drop(tcp);
            continue;
        };
        let id = shared.conn_ids.fetch_add(1, Ordering::Relaxed) + 1;
        let span = info_span!("conn", %peer, id, tls = direct_tls);
        // The connection's future is about 6 KB (TLS state, buffers, the negotiator): boxed
        // once here, so spawning moves a pointer instead of copying it twice into the task
        // (tokio's spawn and its task cell; 0.8 % of the host's CPU per login in `perf`).
        let conn = Box::pin(crate::connection::serve(
            shared.clone(),
            tcp,
            peer,
            direct_tls,
            slot,
        ));
        let done = done.clone();
        tokio::spawn(
            async move {
                let _done = done;
                let _permit = permit;
                conn.await;
            }
            .instrument(span),
        );
    }
}
