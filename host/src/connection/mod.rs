//! One client connection: TLS / STARTTLS, stream headers, SASL (SASL2 and RFC 6120), binding,
//! stanzas.
//!
//! Everything the peer sends goes through the bounded [`StreamReader`]; everything we send is
//! collected in `out` and written once per batch of events. Before authentication nothing
//! the client sent is logged beyond element names and conditions.

mod cam;
mod early_data;
mod shaping;
mod stanza;
mod transport;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jid::{BareJid, FullJid};
use minidom::Element;
use sasl2_fast::sasl2::bind2::BoundResource;
use sasl2_fast::sasl2::{
    AuthenticatedSession, Negotiator, NegotiatorEvent, SaslProfile, StreamInfo, TlsInfo,
};
use sasl2_fast::stream::{
    Limits, STREAM_FOOTER, StreamEvent, StreamHeader, StreamReader, stream_header_xml,
    write_element,
};
use sasl2_fast::xmpp::ns;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info};
use xmpp_parsers::stream_error::{DefinedCondition, StreamError};

use crate::router::{QUEUE, Routed};
use crate::server::Shared;
use transport::Transport;

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
    let tcp = shaping::ShapedTcp::new(tcp, shared.config.server.max_unauthenticated_bytes_per_s);
    let auth_deadline = Instant::now() + shared.config.server.auth_timeout;
    let zero_rtt = direct_tls && shared.early_data.is_some();
    let mut early = None;
    let (io, tls) = if direct_tls {
        let acceptor = match (&shared.early_data, zero_rtt) {
            (Some(e), true) => &e.acceptor,
            _ => &shared.acceptor,
        };
        match tokio::time::timeout_at(auth_deadline, transport::accept_tls(acceptor, tcp)).await {
            Ok(Ok(mut s)) => {
                let info = shared.tls.connection_info(s.get_ref().1);
                if zero_rtt {
                    // Z-8: the handshake is complete; the early data waits in rustls.
                    early = crate::tls::early_data::take_early_data(s.get_mut().1);
                }
                (Transport::Tls(Box::new(s)), Some(info))
            }
            Ok(Err(e)) => {
                debug!(error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!("TLS handshake timed out");
                return;
            }
        }
    } else {
        (Transport::Plain(tcp), None)
    };
    // Smaller elements before authentication: what an unauthenticated peer can make the host
    // buffer is bounded by this, not by the stanza limit of logged-in sessions. The reader is
    // created with the larger limit (its token bound), then narrowed.
    let mut reader = StreamReader::new(
        Limits::default().with_max_element_bytes(shared.config.server.max_stanza_bytes),
    );
    reader.set_limits(
        Limits::default()
            .with_max_element_bytes(shared.config.server.max_unauthenticated_stanza_bytes),
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

/// `<starttls/>` as `write_element` writes it inside `<features>` (pinned by
/// `features_are_written_as_the_element_would_be`).
const STARTTLS_XML: &str = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
/// `<starttls><required/></starttls>`, likewise.
const STARTTLS_REQUIRED_XML: &str =
    "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>";

/// Writes `<stream:features>` around already serialized children. The negotiator's part comes
/// serialized from its offer cache: building and writing the features as elements for each
/// stream was a fifth of the host's non-TLS instructions per STARTTLS login (callgrind).
/// The `stream:` prefix is the one the stream header declares, as `write_element` writes it.
fn write_features(out: &mut String, children: &[&str]) {
    if children.iter().all(|c| c.is_empty()) {
        out.push_str("<stream:features/>");
        return;
    }
    const OPEN: &str = "<stream:features>";
    const CLOSE: &str = "</stream:features>";
    // One allocation for the whole reply instead of growing it child by child.
    out.reserve(OPEN.len() + children.iter().map(|c| c.len()).sum::<usize>() + CLOSE.len());
    out.push_str(OPEN);
    for c in children {
        out.push_str(c);
    }
    out.push_str(CLOSE);
}

/// A `<user-agent>` label bounded as the token store bounds it (S-12: owner's eyes only).
fn label(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(|s| sasl2_fast::xmpp::truncate_utf8(s, sasl2_fast::store::MAX_LABEL_BYTES).to_owned())
}

/// Appends `<stream:error>` with an RFC 6120 §4.9.3 condition and an optional text, built
/// from xmpp-parsers' `StreamError`.
pub fn write_stream_error(out: &mut String, condition: DefinedCondition, text: Option<&str>) {
    let error = match text {
        Some(t) => StreamError::new(condition, "en", t),
        None => StreamError {
            condition,
            texts: Default::default(),
            application_specific: Vec::new(),
        },
    };
    write_element(out, &Element::from(error), ns::JABBER_CLIENT);
}

impl Conn {
    async fn run(&mut self, auth_deadline: Instant) {
        let mut shutdown = self.shared.shutdown.clone();
        let idle = self.shared.config.server.idle_timeout;
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
        let accept = transport::accept_tls(&self.shared.acceptor, tcp);
        match tokio::time::timeout_at(deadline, accept).await {
            Ok(Ok(s)) => {
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
            Ok(Err(e)) => {
                debug!(error = %e, "STARTTLS handshake failed");
                false
            }
            Err(_) => {
                debug!("STARTTLS handshake timed out");
                false
            }
        }
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

    fn open_stream(&mut self, to: Option<&str>) {
        let id = sasl2_fast::xmpp::random_hex(16);
        self.out.push_str(&stream_header_xml(
            ns::JABBER_CLIENT,
            Some(&self.shared.config.server.domain),
            to,
            Some(&id),
            Some("1.0"),
            Some("en"),
        ));
        self.header_sent = true;
    }

    /// Sends `</stream:stream>` once.
    fn close_stream(&mut self) {
        if self.stream_open {
            if !self.header_sent {
                self.open_stream(None);
            }
            self.out.push_str(STREAM_FOOTER);
            self.stream_open = false;
        }
    }

    /// Writes a stream error and the footer; the caller closes.
    fn stream_error(&mut self, condition: DefinedCondition, text: Option<&str>) -> Flow {
        if self.authed.is_some() {
            info!(%condition, "stream error");
        } else {
            crate::budgeted!(self.shared.pre_auth_log, self.peer.ip(), info, %condition, "stream error");
        }
        if !self.stream_open {
            return Flow::Close;
        }
        if !self.header_sent {
            self.open_stream(None);
        }
        write_stream_error(&mut self.out, condition, text);
        self.close_stream();
        Flow::Close
    }

    /// [`Conn::stream_error`] with the condition and text of a library stream error.
    fn stream_error_of(&mut self, error: StreamError) -> Flow {
        let text = error.get_best_text(vec!["en"]).map(|(_, t)| t.clone());
        self.stream_error(error.condition, text.as_deref())
    }

    fn send(&mut self, el: &Element) {
        write_element(&mut self.out, el, ns::JABBER_CLIENT);
    }

    fn on_header(&mut self, h: &StreamHeader) -> Flow {
        if self.header_sent {
            return self.stream_error(
                DefinedCondition::PolicyViolation,
                Some("unexpected stream header"),
            );
        }
        let domain = self.shared.config.server.domain.clone();
        // The library's rules for `from` (S-3, S-29): a JID of this domain is echoed as our
        // `to` (RFC 6120 §4.7.2); a foreign or malformed one is never reflected.
        let from = sasl2_fast::sasl2::stream_from(&domain, h.from());
        let echo = h.from().filter(|_| matches!(from, Ok(Some(_))));
        self.open_stream(echo);
        if h.default_ns() != ns::JABBER_CLIENT {
            return self.stream_error(
                DefinedCondition::InvalidNamespace,
                Some("only jabber:client is served"),
            );
        }
        if h.version().is_some_and(|v| !v.starts_with("1.")) {
            return self.stream_error(DefinedCondition::UnsupportedVersion, None);
        }
        if let Err(e) = sasl2_fast::sasl2::check_stream_to(&domain, h.to()) {
            return self.stream_error_of(e);
        }
        let from = match from {
            Ok(f) => f,
            // S-3 (RFC 6120 §4.9.3.9): a `from` of another domain, or not a JID at all.
            Err(e) => return self.stream_error_of(e),
        };

        if let Some(a) = &mut self.authed {
            if !std::mem::take(&mut a.restart_pending) {
                // SASL2 never restarts the stream (S-20).
                return self.stream_error(DefinedCondition::PolicyViolation, None);
            }
            // RFC 6120 §6.4.6: after SASL, a fresh stream with the post-authentication
            // features.
            self.post_auth_features();
            return Flow::Continue;
        }
        let info = StreamInfo::new(domain)
            .with_from(from)
            .with_plaintext_allowed(!self.shared.config.server.require_tls)
            .with_peer(self.peer)
            .with_zero_rtt(self.zero_rtt);
        // Moved, not copied: the channel-binding bytes are session key material.
        let info = match self.tls.take() {
            Some(t) => info.with_tls(t),
            None => info,
        };
        let negotiator = Negotiator::new(self.shared.sasl2.clone(), info);
        let starttls = match (!self.io.is_tls(), self.shared.config.server.require_tls) {
            (false, _) => "",
            (true, true) => STARTTLS_REQUIRED_XML,
            (true, false) => STARTTLS_XML,
        };
        write_features(&mut self.out, &[starttls, negotiator.features_xml()]);
        self.negotiator = Some(negotiator);
        Flow::Continue
    }

    /// `<stream:features>` after the RFC 6120 restart (R-4, the library's rules): resource
    /// binding unless one is bound, and no SASL of either kind.
    fn post_auth_features(&mut self) {
        let features = sasl2_fast::sasl2::PostLoginFeatures::new(self.bound.is_some());
        self.out.push_str(features.xml());
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

    async fn on_sasl(&mut self, el: Element) -> Flow {
        if let Some(a) = crate::metrics::LoginAttempt::starts(&el) {
            self.attempt = Some(a);
        }
        let Some(neg) = self.negotiator.as_mut() else {
            return self.stream_error(DefinedCondition::NotAuthorized, None);
        };
        // Throttling happens inside: the negotiator asks the login throttle before every
        // password check (sasl2_fast::sasl2::throttle).
        let event = neg.handle(el).await;
        let failure = match &event {
            NegotiatorEvent::Failure { failure, .. }
            | NegotiatorEvent::StreamError {
                failure: Some(failure),
                ..
            } => Some(failure),
            _ => None,
        };
        if let Some(failure) = failure {
            let attempt = self.attempt.take();
            crate::audit::login_failed(
                &self.shared.pre_auth_log,
                &self.shared.metrics,
                self.peer.ip(),
                attempt.and_then(|a| a.mechanism()),
                failure,
            );
            crate::metrics::LoginAttempt::failed(attempt, &self.shared.metrics, failure.condition);
            self.shared.logins.failed();
        }
        match event {
            NegotiatorEvent::Challenge(e)
            | NegotiatorEvent::Continue(e)
            | NegotiatorEvent::TaskData(e) => {
                // S-14: during authentication only the negotiator's elements go out, with
                // nothing (not even whitespace) between them.
                self.send(&e);
                Flow::Continue
            }
            NegotiatorEvent::Failure { element, .. } => {
                self.send(&element);
                Flow::Continue
            }
            NegotiatorEvent::StreamError { send, error, .. } => {
                if let Some(s) = send {
                    self.send(&s);
                }
                self.stream_error_of(error)
            }
            NegotiatorEvent::Success { element, session } => {
                // The element may carry a FAST token: written, never logged.
                self.send(&element);
                crate::metrics::LoginAttempt::succeeded(
                    self.attempt.take(),
                    &self.shared.metrics,
                    &session.mechanism,
                );
                self.on_authenticated(session);
                Flow::Continue
            }
            _ => self.stream_error(DefinedCondition::InternalServerError, None),
        }
    }

    fn on_authenticated(&mut self, session: AuthenticatedSession) {
        info!(account = %session.username, mechanism = %session.mechanism, "authenticated");
        self.shared.logins.succeeded(&session.mechanism);
        self.pre_auth = None;
        self.gauge
            .set_state(crate::metrics::ConnectionState::Authenticated);
        self.reader.set_limits(
            Limits::default().with_max_element_bytes(self.shared.config.server.max_stanza_bytes),
        );
        let ua = session
            .user_agent
            .as_ref()
            .and_then(|u| u.id.clone())
            .filter(|s| !s.is_empty());
        let restart = session.profile == SaslProfile::Rfc6120;
        self.authed = Some(Authed {
            account: session.username.clone(),
            bare: session.authorization_identifier.to_bare(),
            user_agent_id: ua,
            facts: crate::router::SessionFacts {
                software: session.user_agent.as_ref().and_then(|u| label(&u.software)),
                device: session.user_agent.as_ref().and_then(|u| label(&u.device)),
                // FAST logins use the HT family; everything else here takes a password.
                password: !session.mechanism.starts_with("HT-"),
            },
            restart_pending: restart,
        });
        if let Some(b) = session.extensions.get::<BoundResource>() {
            self.bind_resource(b.jid.clone());
        }
        if restart {
            // RFC 6120 §6.4.6: the client sends a new stream header over the same transport.
            self.reader.reset();
            self.header_sent = false;
            self.negotiator = None;
        } else if let Some(features) = sasl2_fast::sasl2::PostLoginFeatures::after_success(&session)
        {
            // S-20: no stream restart; post-authentication features right away, after
            // `<success>` (none after an XEP-0198 resumption, SM-3).
            self.out.push_str(features.xml());
        }
    }

    fn bind_resource(&mut self, full_jid: FullJid) {
        let Some(a) = &self.authed else { return };
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.shared.router.register_session(
            &a.account,
            full_jid.resource().as_str(),
            a.user_agent_id.as_deref(),
            a.facts.clone(),
            tx,
        );
        self.routed = Some(rx);
        info!(jid = %full_jid, "resource bound");
        self.gauge.set_state(crate::metrics::ConnectionState::Bound);
        self.bound = Some(Bound { full_jid, id });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the host wrote before the offer cache: the features built as one element and
    /// written with the stream writer. The hand-joined form must be byte for byte the same.
    #[test]
    fn features_are_written_as_the_element_would_be() {
        let mech = Element::builder("authentication", "urn:xmpp:sasl:2")
            .append(
                Element::builder("mechanism", "urn:xmpp:sasl:2")
                    .append("SCRAM-SHA-256")
                    .build(),
            )
            .build();
        let mut mech_xml = String::new();
        write_element(&mut mech_xml, &mech, ns::STREAM);
        for (starttls, required, sasl) in [
            (true, true, true),
            (true, false, true),
            (true, true, false),
            (false, false, true),
            (false, false, false),
        ] {
            let mut f = Element::builder("features", ns::STREAM);
            let mut starttls_xml = "";
            if starttls {
                let mut st = Element::builder("starttls", ns::TLS);
                if required {
                    st = st.append(Element::bare("required", ns::TLS));
                    starttls_xml = STARTTLS_REQUIRED_XML;
                } else {
                    starttls_xml = STARTTLS_XML;
                }
                f = f.append(st.build());
            }
            if sasl {
                f = f.append(mech.clone());
            }
            let mut expected = String::new();
            write_element(&mut expected, &f.build(), ns::JABBER_CLIENT);
            let mut got = String::new();
            write_features(
                &mut got,
                &[starttls_xml, if sasl { mech_xml.as_str() } else { "" }],
            );
            assert_eq!(
                got, expected,
                "starttls={starttls} required={required} sasl={sasl}"
            );
        }
    }
}
