//! What every connection of a running host reads: built once by
//! [`Host::start`](crate::Host::start), handed to each connection task, and nothing else.
//!
//! The admin socket does not hold it (it keeps only the handles it reads, see
//! `admin::ops::LiveHost`), so the host's shutdown order is the connections' alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sasl2_fast::fast::cam::ClientAccess;
use sasl2_fast::sasl2::Sasl2Server;
use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::log_budget::LogBudget;
use crate::metrics::HostMetrics;
use crate::pre_auth::PreAuthSlots;
use crate::router::Router;
use crate::tls::TlsSetup;
use crate::tls::early_data::EarlyData;

/// State shared by all connections.
pub(crate) struct Shared {
    /// The `[server]` section: limits, timeouts, the domain.
    pub server: ServerConfig,
    /// Mechanisms and inline features.
    pub sasl2: Arc<Sasl2Server>,
    /// TLS identity (and the handshake counters).
    pub tls: TlsSetup,
    /// Accepts TLS connections.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Bound sessions.
    pub router: Arc<Router>,
    /// XEP-0494: the owner lists and revokes clients (FAST clients and the router's sessions).
    pub client_access: ClientAccess,
    /// Becomes `true` on shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// Log lines unauthenticated peers can cause (failures, refusals) share this budget.
    pub pre_auth_log: LogBudget,
    /// Unauthenticated connections per source address (`max_unauthenticated_per_ip`).
    pub pre_auth_slots: Arc<PreAuthSlots>,
    /// Logins, connections, FAST and store metrics (served when `metrics_listen` is set;
    /// `host ctl stats` reads the login totals).
    pub metrics: Arc<HostMetrics>,
    /// TLS 1.3 early data on the direct-TLS listener (`tls_early_data`), if on.
    pub early_data: Option<EarlyData>,
    /// The last connection id handed out ([`Shared::next_conn_id`]).
    pub conn_ids: AtomicU64,
}

impl Shared {
    /// A fresh connection id (for the connection's log span).
    pub fn next_conn_id(&self) -> u64 {
        self.conn_ids.fetch_add(1, Ordering::Relaxed) + 1
    }
}
