//! The XMPP ports: binding them, and the accept loop that admits a connection (the
//! `max_connections` limit, the per-source slots of `max_unauthenticated_per_ip`), refuses
//! one over a limit with a stream error, and spawns its task.

use std::net::SocketAddr;
use std::sync::Arc;

use sasl2_fast::stream::{STREAM_FOOTER, stream_header_xml, write_stream_error};
use sasl2_fast::xmpp::ns;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tracing::{Instrument as _, info_span};
use xmpp_parsers::stream_error::DefinedCondition;

use crate::config::ServerConfig;
use crate::shared::Shared;

/// The sockets a host serves: the STARTTLS port and, optionally, the direct-TLS port
/// (XEP-0368).
#[derive(Debug)]
pub struct Listeners {
    /// STARTTLS (RFC 6120 §5).
    pub starttls: TcpListener,
    /// Direct TLS, if any.
    pub direct_tls: Option<TcpListener>,
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// The cause.
    pub source: std::io::Error,
}

impl Listeners {
    /// Binds the addresses of a config.
    pub async fn bind(server: &ServerConfig) -> Result<Listeners, BindError> {
        let bind = async |addr: SocketAddr| {
            TcpListener::bind(addr)
                .await
                .map_err(|source| BindError { addr, source })
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
    write_stream_error(
        &mut s,
        ns::JABBER_CLIENT,
        DefinedCondition::PolicyViolation,
        Some(text),
    );
    s.push_str(STREAM_FOOTER);
    s
}

/// Says why before closing an over-limit connection (RFC 6120 §4.9.1.2: the header first,
/// then the error); on the direct-TLS port nothing can be said before the handshake.
/// `try_write` never waits: a fresh socket's send buffer takes these few hundred bytes, and a
/// peer that cannot must not hold an over-limit slot.
fn refuse(tcp: tokio::net::TcpStream, direct_tls: bool, domain: &str, text: &str) {
    if !direct_tls {
        let _ = tcp.try_write(over_limit_error(domain, text).as_bytes());
    }
}

/// Accepts on `listener` until shutdown; each admitted connection runs in its own task, which
/// holds a `limit` permit and a `done` sender until it ends.
pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    direct_tls: bool,
    limit: Arc<Semaphore>,
    done: mpsc::Sender<()>,
) {
    let mut shutdown = shared.shutdown.clone();
    let domain = &shared.server.domain;
    while let Some((tcp, peer)) =
        crate::accept::next_connection(&listener, &mut shutdown, "xmpp").await
    {
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            crate::budgeted!(shared.pre_auth_log, peer.ip(), warn, %peer, "connection limit reached, closing");
            refuse(tcp, direct_tls, domain, "too many connections");
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
            refuse(
                tcp,
                direct_tls,
                domain,
                "too many unauthenticated connections from your address",
            );
            continue;
        };
        let span = info_span!("conn", %peer, id = shared.next_conn_id(), tls = direct_tls);
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
