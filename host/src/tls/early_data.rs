//! TLS 1.3 early data (0-RTT) on the direct-TLS listener (`[server] tls_early_data`).
//!
//! The rules are Z-1..Z-8 in docs/protocol.md §5.8; the reasoning in docs/security.md. What
//! this module decides:
//!
//! - **Stateful, single-use resumption on the direct-TLS port.** rustls 0.23's server only
//!   accepts early data with its server-side session cache, never with stateless tickets
//!   (`server/tls13.rs`, `decide_if_early_data_allowed`), and it takes a cached session out of
//!   the cache when a client resumes it: each ticket resumes once, so a replayed ClientHello
//!   falls back to a full handshake and its early data is discarded (RFC 8446 §8.1). The
//!   direct-TLS config therefore has its own cache of [`SESSION_CACHE_SIZE`] sessions and no
//!   ticketer, whatever `tls_session_tickets` says (the STARTTLS port keeps its tickets).
//! - **At most [`max_early_data_bytes`]** of early data: a stream header and one
//!   `<authenticate>` no larger than `max_unauthenticated_stanza_bytes`.
//! - **No 0.5-RTT data** (`send_half_rtt_data = false`, Z-8): tokio-rustls' accept returns
//!   the stream only once the client's `Finished` arrived, and only then does the host read
//!   the early data (rustls keeps it apart from 1-RTT data) and answer. A flight replayed by
//!   someone who cannot finish the handshake is never processed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ProducesTickets, ServerSessionMemoryCache};

/// Sessions the direct-TLS port remembers for resumption with early data: the most recent
/// clients (a few hundred bytes each). An older client resumes nothing and pays a full
/// handshake with its early data refused (it is resent after the handshake).
pub const SESSION_CACHE_SIZE: usize = 4096;

/// Room for the stream header before the `<authenticate>`.
const HEADER_ROOM: u32 = 1024;

/// The early data accepted: a stream header and one `<authenticate>` of at most
/// `max_element_bytes` (`max_unauthenticated_stanza_bytes`).
pub fn max_early_data_bytes(max_element_bytes: usize) -> u32 {
    u32::try_from(max_element_bytes)
        .unwrap_or(u32::MAX)
        .saturating_add(HEADER_ROOM)
}

/// A ticketer that is off: rustls then issues stateful session ids from the cache.
#[derive(Debug)]
struct NoTickets;

impl ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }
    fn lifetime(&self) -> u32 {
        0
    }
    fn encrypt(&self, _plain: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn decrypt(&self, _cipher: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

/// The direct-TLS listener's rustls config when `tls_early_data` is on: `base` (the
/// certificate, versions, EMS, ALPN) with early data accepted and stateful single-use
/// resumption.
pub fn direct_tls_config(
    base: &rustls::ServerConfig,
    max_element_bytes: usize,
) -> rustls::ServerConfig {
    let mut config = base.clone();
    config.ticketer = Arc::new(NoTickets);
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    // One session per handshake: each is used once, and the client keeps the newest.
    config.send_tls13_tickets = 1;
    config.max_early_data_size = max_early_data_bytes(max_element_bytes);
    // Z-8: nothing derived from early data before the client's Finished.
    config.send_half_rtt_data = false;
    config
}

/// Reads the early data rustls accepted on a connection whose handshake is complete; `None`
/// when it accepted none (no resumption, rejected, or the client sent none).
pub fn take_early_data(conn: &mut rustls::ServerConnection) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let mut reader = conn.early_data()?;
    let mut data = Vec::new();
    // Bounded by `max_early_data_size`: rustls refuses more.
    reader.read_to_end(&mut data).ok()?;
    (!data.is_empty()).then_some(data)
}

/// What the direct-TLS port did with early data since start (tests and measurements).
#[derive(Debug, Default)]
pub struct EarlyDataCounts {
    accepted: AtomicU64,
    logins: AtomicU64,
    refused: AtomicU64,
}

impl EarlyDataCounts {
    /// Connections whose early data TLS accepted and the host read.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Logins that succeeded with an `<authenticate>` taken from early data.
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    /// Connections closed because their early data held more than Z-6 allows.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub(crate) fn count_accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_login(&self) {
        self.logins.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }
}

/// The direct-TLS port's early-data setup: its acceptor and counters.
pub struct EarlyData {
    /// Accepts direct-TLS connections with early data.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// What happened so far.
    pub counts: EarlyDataCounts,
}

impl std::fmt::Debug for EarlyData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EarlyData")
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl EarlyData {
    /// Early data for the direct-TLS port on top of `base`.
    pub fn new(base: &rustls::ServerConfig, max_element_bytes: usize) -> Self {
        EarlyData {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(direct_tls_config(
                base,
                max_element_bytes,
            ))),
            counts: EarlyDataCounts::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_data_config_is_stateful_and_bounded() {
        let base = crate::tls::setup(
            "localhost",
            tempfile::tempdir().unwrap().path(),
            None,
            None,
            true,
        )
        .unwrap();
        assert!(base.config.ticketer.enabled());
        let c = direct_tls_config(&base.config, 16384);
        // rustls accepts early data only without a ticketer (RFC 8446 §8.1 single use).
        assert!(!c.ticketer.enabled());
        assert_eq!(c.max_early_data_size, 16384 + HEADER_ROOM);
        assert!(!c.send_half_rtt_data, "Z-8");
        assert_eq!(
            base.config.max_early_data_size, 0,
            "STARTTLS port unchanged"
        );
    }
}
