//! One client connection: TLS / STARTTLS, stream headers, SASL (SASL2 and RFC 6120), binding,
//! stanzas. This file holds the connection's loop (reads, routed stanzas, timeouts, writes);
//! `transport` opens the socket (TCP, STARTTLS, direct TLS), `stream` answers the peer's
//! header and writes features and stream errors, `login` runs SASL through the negotiator,
//! `stanza` and `cam` serve a logged-in session, `early_data` checks TLS 0-RTT bytes.
//!
//! Everything the peer sends goes through the bounded [`StreamReader`]; everything we send is
//! collected in `out` and written once per batch of events. Before authentication nothing
//! the client sent is logged beyond element names and conditions.

mod cam;
mod early_data;
mod login;
mod shaping;
mod stanza;
mod stream;
mod transport;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jid::{BareJid, FullJid};
use minidom::Element;
use sasl2_fast::sasl2::{Negotiator, TlsInfo};
use sasl2_fast::stream::{Limits, StreamEvent, StreamReader, write_element};
use sasl2_fast::xmpp::ns;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info};
use xmpp_parsers::stream_error::DefinedCondition;

use crate::router::Routed;
use crate::shared::Shared;
use transport::{Opened, Transport};

/// How long one write may take before the peer is considered gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Capacity the output buffer keeps between writes (a login's largest reply, the stream
/// features, is about 1 KiB).
const OUT_RETAINED: usize = 4096;

/// What to do after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    /// Flush and close.
    Close,
    /// Flush `<proceed/>`, then run the TLS handshake and expect a new stream.
    StartTls,
}

struct Authed {
    account: String,
    bare: BareJid,
    user_agent_id: Option<String>,
    /// What the owner's XEP-0494 client list shows about this session.
    facts: crate::router::SessionFacts,
    /// RFC 6120 SASL succeeded: the client restarts the stream before anything else (§6.4.6).
    restart_pending: bool,
}

struct Bound {
    full_jid: FullJid,
    id: u64,
}

struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    io: Transport,
    reader: StreamReader,
    out: String,
    /// The TLS facts of this connection until the stream's negotiator takes them (a TLS
    /// connection has one unauthenticated stream; `io` tells whether it is encrypted).
    tls: Option<TlsInfo>,
    header_sent: bool,
    stream_open: bool,
    negotiator: Option<Negotiator>,
    authed: Option<Authed>,
    bound: Option<Bound>,
    /// Stanzas and close requests routed to this session; created when a resource is bound,
    /// so a connection that never binds allocates no queue.
    routed: Option<mpsc::Receiver<Routed>>,
    /// Held until the connection authenticates (`max_unauthenticated_per_ip`).
    pre_auth: Option<crate::pre_auth::PreAuthSlot>,
    /// This listener accepts TLS 1.3 early data (direct TLS with `tls_early_data`).
    zero_rtt: bool,
    /// This connection in `sasl2_fast_host_connections` (until it is dropped).
    gauge: crate::metrics::ConnectionGauge,
    /// The SASL attempt in progress, for the login metrics.
    attempt: Option<crate::metrics::LoginAttempt>,
}

/// Serves one accepted socket until it closes. `direct_tls` is the XEP-0368 listener;
/// `slot` counts it against its source address until it authenticates.
pub async fn serve(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    direct_tls: bool,
    slot: crate::pre_auth::PreAuthSlot,
) {
    let _ = tcp.set_nodelay(true);
    let tcp = shaping::ShapedTcp::new(tcp, shared.server.max_unauthenticated_bytes_per_s);
    let auth_deadline = Instant::now() + shared.server.auth_timeout;
    let zero_rtt = direct_tls && shared.early_data.is_some();
    let Some(Opened { io, tls, early }) =
        transport::open(&shared, tcp, direct_tls, zero_rtt, auth_deadline).await
    else {
        return;
    };
    // Smaller elements before authentication: what an unauthenticated peer can make the host
    // buffer is bounded by this, not by the stanza limit of logged-in sessions. The reader is
    // created with the larger limit (its token bound), then narrowed.
    let mut reader =
        StreamReader::new(Limits::default().with_max_element_bytes(shared.server.max_stanza_bytes));
    reader.set_limits(
        Limits::default().with_max_element_bytes(shared.server.max_unauthenticated_stanza_bytes),
    );
    let gauge = crate::metrics::ConnectionGauge::new(shared.metrics.clone(), tls.is_some());
    let mut conn = Conn {
        shared,
        peer,
        io,
        reader,
        out: String::with_capacity(1024),
        tls,
        header_sent: false,
        stream_open: true,
        negotiator: None,
        authed: None,
        bound: None,
        routed: None,
        pre_auth: Some(slot),
        zero_rtt,
        gauge,
        attempt: None,
    };
    if let Some(bytes) = early
        && !conn.serve_early_data(&bytes).await
    {
        conn.cleanup().await;
        return;
    }
    conn.run(auth_deadline).await;
    conn.cleanup().await;
}

/// The next message routed to a bound session; never ready before one is bound.
async fn next_routed(routed: &mut Option<mpsc::Receiver<Routed>>) -> Option<Routed> {
    match routed {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Conn {
    async fn run(&mut self, auth_deadline: Instant) {
        let mut shutdown = self.shared.shutdown.clone();
        let idle = self.shared.server.idle_timeout;
        // Plaintext reads go through `buf` (4 KiB, grown to 16 only when a logged-in session's
        // read fills it); TLS reads need none: the reader takes rustls' plaintext directly.
        // Growing a 16 KiB buffer at login zeroed and copied 16 KiB per login, and every idle
        // connection pinned it (docs/performance.md §3a, §8f).
        let mut buf = Vec::new();
        let mut last_read = Instant::now();
        if *shutdown.borrow() {
            return;
        }
        loop {
            let deadline = if self.authed.is_none() {
                auth_deadline.min(last_read + idle)
            } else {
                last_read + idle
            };
            let grow = self.authed.is_some();
            if grow {
                // Authenticated: `max_unauthenticated_bytes_per_s` no longer applies.
                self.io.end_shaping();
            }
            let reader = &mut self.reader;
            let flow = tokio::select! {
                r = self.io.read_with(&mut buf, grow, |data| reader.feed(data)) => match r {
                    Ok(None) | Err(_) => {
                        debug!("connection closed by peer");
                        return;
                    }
                    Ok(Some(fed)) => {
                        last_read = Instant::now();
                        self.on_fed(fed).await
                    }
                },
                Some(msg) = next_routed(&mut self.routed) => self.on_routed(msg),
                _ = tokio::time::sleep_until(deadline) => {
                    let text = if self.authed.is_none() && deadline == auth_deadline {
                        "authentication took too long"
                    } else {
                        "idle for too long"
                    };
                    self.stream_error(DefinedCondition::ConnectionTimeout, Some(text))
                }
                _ = shutdown.changed() => {
                    info!("closing stream for shutdown");
                    self.close_stream();
                    Flow::Close
                }
            };
            // Close: what is left in `out` goes with the TLS close_notify in `cleanup`, one
            // write and one TCP segment instead of two (docs/performance.md §8).
            if flow != Flow::Close && self.flush().await.is_err() {
                return;
            }
            match flow {
                Flow::Continue => {}
                Flow::Close => return,
                Flow::StartTls => {
                    if !self.upgrade(auth_deadline).await {
                        return;
                    }
                    // TLS reads need no buffer of their own.
                    buf = Vec::new();
                    last_read = Instant::now();
                }
            }
        }
    }

    async fn cleanup(&mut self) {
        if let (Some(a), Some(b)) = (&self.authed, &self.bound) {
            self.shared.router.unregister(&a.account, b.id);
        }
        let last = std::mem::take(&mut self.out);
        let limit = if last.is_empty() {
            Duration::from_secs(2)
        } else {
            WRITE_TIMEOUT
        };
        let _ = tokio::time::timeout(limit, self.io.finish(last.as_bytes())).await;
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        // Written from the buffer, which then keeps its capacity: taking it left the next reply
        // to grow a new String from nothing, a handful of reallocations per login. One that a
        // large stanza grew is released, so an idle session does not pin it.
        let (io, out) = (&mut self.io, &self.out);
        let res = tokio::time::timeout(WRITE_TIMEOUT, async move {
            io.write_all(out.as_bytes()).await?;
            io.flush().await
        })
        .await;
        self.out.clear();
        if self.out.capacity() > OUT_RETAINED {
            self.out = String::new();
        }
        match res {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
        }
    }

    /// TLS handshake after `<proceed/>`. Bytes the client pipelined after `<starttls/>` are
    /// dropped with the reader state (no plaintext injection into the TLS stream).
    async fn upgrade(&mut self, deadline: Instant) -> bool {
        let Transport::Plain(tcp) = std::mem::replace(&mut self.io, Transport::Upgrading) else {
            return false;
        };
        let Some(s) = transport::handshake(&self.shared.acceptor, tcp, deadline, "STARTTLS").await
        else {
            return false;
        };
        let info = self.shared.tls.connection_info(s.get_ref().1);
        debug!(version = ?info.version, cb = ?info.channel_bindings, "STARTTLS done");
        self.tls = Some(info);
        self.gauge.set_tls();
        self.io = Transport::Tls(Box::new(s));
        self.reader.reset();
        self.header_sent = false;
        self.negotiator = None;
        true
    }

    /// Handles what the peer's last bytes completed: `fed` is the reader's verdict on them.
    async fn on_fed(&mut self, fed: Result<(), sasl2_fast::stream::XmlError>) -> Flow {
        if let Err(e) = fed {
            return self.stream_error(e.condition(), None);
        }
        loop {
            let ev = match self.reader.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => return Flow::Continue,
                Err(e) => return self.stream_error(e.condition(), None),
            };
            let flow = match ev {
                StreamEvent::Header(h) => self.on_header(&h),
                StreamEvent::Element(el) => self.on_element(el).await,
                StreamEvent::End => {
                    debug!("stream closed by peer");
                    self.close_stream();
                    Flow::Close
                }
                _ => self.stream_error(DefinedCondition::InternalServerError, None),
            };
            if flow != Flow::Continue {
                return flow;
            }
        }
    }

    fn send(&mut self, el: &Element) {
        write_element(&mut self.out, el, ns::JABBER_CLIENT);
    }

    async fn on_element(&mut self, el: Element) -> Flow {
        if self.authed.as_ref().is_some_and(|a| a.restart_pending) {
            // RFC 6120 §6.4.6: nothing but the new stream header after SASL success.
            return self.stream_error(
                DefinedCondition::PolicyViolation,
                Some("restart the stream after SASL success"),
            );
        }
        if let Some(neg) = &self.negotiator
            && neg.handles(&el)
        {
            return self.on_sasl(el).await;
        }
        if self.authed.is_none() {
            if el.is("starttls", ns::TLS) && !self.io.is_tls() {
                self.send(&Element::bare("proceed", ns::TLS));
                return Flow::StartTls;
            }
            debug!(element = el.name(), "element before authentication");
            return self.stream_error(DefinedCondition::NotAuthorized, None);
        }
        if !el.has_ns(ns::JABBER_CLIENT) || !matches!(el.name(), "iq" | "message" | "presence") {
            return self.stream_error(DefinedCondition::UnsupportedStanzaType, None);
        }
        match self.client_access(el).await {
            Ok(flow) => flow,
            Err(el) => self.on_stanza(el),
        }
    }

    fn on_routed(&mut self, msg: Routed) -> Flow {
        match msg {
            Routed::Stanza(el) => {
                self.send(&el);
                Flow::Continue
            }
            Routed::Close { condition, text } => self.stream_error(condition, Some(text)),
        }
    }
}
