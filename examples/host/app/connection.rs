//! One client connection: TLS / STARTTLS, stream headers, SASL2, binding, stanzas.
//!
//! Everything the peer sends goes through the bounded [`StreamReader`]; everything we send is
//! collected in `out` and written once per batch of events. Before authentication nothing
//! the client sent is logged beyond element names and conditions.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use sasl2_fast::sasl2::{Negotiator, NegotiatorEvent, StreamInfo, TlsInfo};
use sasl2_fast::xml::reader::{
    FEED_SLACK, Limits, STREAM_FOOTER, StreamEvent, StreamHeader, StreamReader, stream_header_xml,
};
use sasl2_fast::xml::{
    Element, NS_BIND, NS_CLIENT, NS_PING, NS_STANZAS, NS_STREAM_ERRORS, NS_TLS, escape_into,
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info};

use super::bind::{make_resource, random_hex, sanitize_tag};
use super::router::{Jid, QUEUE, Routed};
use super::server::Shared;

/// Legacy session establishment (RFC 3921), answered with an empty result for old clients.
const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// How long one write may take before the peer is considered gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The socket, before or after TLS.
pub enum Transport {
    /// Plain TCP (STARTTLS listener before `<proceed/>`).
    Plain(TcpStream),
    /// TLS.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Transient state during the STARTTLS upgrade.
    Upgrading,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "transport is upgrading")
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::Upgrading => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::Upgrading => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Upgrading => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::Upgrading => Poll::Ready(Ok(())),
        }
    }
}

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
    user_agent_id: Option<String>,
}

struct Bound {
    resource: String,
    full_jid: String,
    id: u64,
}

struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    io: Transport,
    reader: StreamReader,
    out: String,
    tls: Option<TlsInfo>,
    header_sent: bool,
    stream_open: bool,
    negotiator: Option<Negotiator>,
    authed: Option<Authed>,
    bound: Option<Bound>,
    tx: mpsc::Sender<Routed>,
    rx: mpsc::Receiver<Routed>,
}

/// Serves one accepted socket until it closes. `direct_tls` is the XEP-0368 listener.
pub async fn serve(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, direct_tls: bool) {
    let _ = tcp.set_nodelay(true);
    let auth_deadline = Instant::now() + shared.config.auth_timeout;
    let (io, tls) = if direct_tls {
        match tokio::time::timeout_at(auth_deadline, shared.acceptor.accept(tcp)).await {
            Ok(Ok(s)) => {
                let info =
                    super::tls::tls_info(s.get_ref().1, shared.tls.server_end_point.as_deref());
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
    let limits = Limits {
        max_element_bytes: shared.config.max_stanza_bytes,
        max_depth: 16,
        ..Limits::default()
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let mut conn = Conn {
        shared,
        peer,
        io,
        reader: StreamReader::new(limits),
        out: String::new(),
        tls,
        header_sent: false,
        stream_open: true,
        negotiator: None,
        authed: None,
        bound: None,
        tx,
        rx,
    };
    conn.run(auth_deadline).await;
    conn.cleanup().await;
}

/// Appends `<stream:error>` with an RFC 6120 §4.9.3 condition and an optional text.
pub fn write_stream_error(out: &mut String, condition: &str, text: Option<&str>) {
    out.push_str("<stream:error><");
    out.push_str(condition);
    out.push_str(" xmlns='");
    out.push_str(NS_STREAM_ERRORS);
    out.push_str("'/>");
    if let Some(t) = text {
        out.push_str("<text xmlns='");
        out.push_str(NS_STREAM_ERRORS);
        out.push_str("' xml:lang='en'>");
        escape_into(out, t);
        out.push_str("</text>");
    }
    out.push_str("</stream:error>");
}

impl Conn {
    async fn run(&mut self, auth_deadline: Instant) {
        let mut shutdown = self.shared.shutdown.clone();
        let idle = self.shared.config.idle_timeout;
        let mut buf = vec![0u8; FEED_SLACK];
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
            let flow = tokio::select! {
                r = self.io.read(&mut buf) => match r {
                    Ok(0) | Err(_) => {
                        debug!("connection closed by peer");
                        return;
                    }
                    Ok(n) => {
                        last_read = Instant::now();
                        self.on_bytes(&buf[..n]).await
                    }
                },
                Some(msg) = self.rx.recv() => self.on_routed(msg),
                _ = tokio::time::sleep_until(deadline) => {
                    let text = if self.authed.is_none() && deadline == auth_deadline {
                        "authentication took too long"
                    } else {
                        "idle for too long"
                    };
                    self.stream_error("connection-timeout", Some(text))
                }
                _ = shutdown.changed() => {
                    info!("closing stream for shutdown");
                    self.close_stream();
                    Flow::Close
                }
            };
            if self.flush().await.is_err() {
                return;
            }
            match flow {
                Flow::Continue => {}
                Flow::Close => return,
                Flow::StartTls => {
                    if !self.upgrade(auth_deadline).await {
                        return;
                    }
                    last_read = Instant::now();
                }
            }
        }
    }

    async fn cleanup(&mut self) {
        if let (Some(a), Some(b)) = (&self.authed, &self.bound) {
            self.shared.router.unregister(&a.account, b.id);
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.io.shutdown()).await;
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.out);
        let res = tokio::time::timeout(WRITE_TIMEOUT, async {
            self.io.write_all(data.as_bytes()).await?;
            self.io.flush().await
        })
        .await;
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
        match tokio::time::timeout_at(deadline, self.shared.acceptor.accept(tcp)).await {
            Ok(Ok(s)) => {
                let info = super::tls::tls_info(
                    s.get_ref().1,
                    self.shared.tls.server_end_point.as_deref(),
                );
                debug!(version = ?info.version, cb = ?info.channel_bindings, "STARTTLS done");
                self.tls = Some(info);
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

    async fn on_bytes(&mut self, data: &[u8]) -> Flow {
        if let Err(e) = self.reader.feed(data) {
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
            };
            if flow != Flow::Continue {
                return flow;
            }
        }
    }

    fn open_stream(&mut self, to: Option<&str>) {
        let id = random_hex(16);
        self.out.push_str(&stream_header_xml(
            NS_CLIENT,
            Some(&self.shared.config.domain),
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
    fn stream_error(&mut self, condition: &str, text: Option<&str>) -> Flow {
        info!(condition, "stream error");
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

    fn on_header(&mut self, h: &StreamHeader) -> Flow {
        if self.header_sent {
            return self.stream_error("policy-violation", Some("unexpected stream header"));
        }
        let domain = self.shared.config.domain.clone();
        let from = h.from().map(str::to_owned);
        let from_jid = from.as_deref().and_then(Jid::parse);
        // Echo the client's `from` as our `to` only when it is a JID of this domain (RFC 6120
        // §4.7.2); never reflect a foreign or malformed one.
        let echo = from_jid
            .as_ref()
            .filter(|j| j.domain == domain)
            .and(from.as_deref());
        self.open_stream(echo);
        if h.default_ns() != NS_CLIENT {
            return self.stream_error("invalid-namespace", Some("only jabber:client is served"));
        }
        if h.version().is_some_and(|v| !v.starts_with("1.")) {
            return self.stream_error("unsupported-version", None);
        }
        let to_ok = h
            .to()
            .is_some_and(|t| t.trim_end_matches('.').eq_ignore_ascii_case(&domain));
        if !to_ok {
            return self.stream_error(
                "host-unknown",
                Some("this server does not serve that domain"),
            );
        }
        if from.is_some() {
            match &from_jid {
                Some(j) if j.domain == domain => {}
                _ => {
                    return self
                        .stream_error("invalid-from", Some("'from' does not match this domain"));
                }
            }
        }

        if self.authed.is_some() {
            // Only reachable after a restart, which this host never asks for.
            return self.stream_error("policy-violation", None);
        }
        let info = StreamInfo {
            domain: domain.clone(),
            from: from_jid.map(|j| j.bare()),
            tls: self.tls.clone(),
            allow_plaintext: !self.shared.config.require_tls,
            peer: Some(self.peer),
        };
        let negotiator = Negotiator::new(self.shared.sasl2.clone(), info);
        let mut f = String::from("<stream:features>");
        if self.tls.is_none() {
            f.push_str("<starttls xmlns='");
            f.push_str(NS_TLS);
            if self.shared.config.require_tls {
                f.push_str("'><required/></starttls>");
            } else {
                f.push_str("'/>");
            }
        }
        for el in negotiator.features() {
            el.write_xml(&mut f, Some(NS_CLIENT));
        }
        f.push_str("</stream:features>");
        self.out.push_str(&f);
        self.negotiator = Some(negotiator);
        Flow::Continue
    }

    async fn on_element(&mut self, el: Element) -> Flow {
        if Negotiator::handles(&el) {
            return self.on_sasl2(el).await;
        }
        if self.authed.is_none() {
            if el.is("starttls", NS_TLS) && self.tls.is_none() {
                self.out.push_str("<proceed xmlns='");
                self.out.push_str(NS_TLS);
                self.out.push_str("'/>");
                return Flow::StartTls;
            }
            debug!(element = el.name(), "element before authentication");
            return self.stream_error("not-authorized", None);
        }
        if el.ns() != NS_CLIENT || !matches!(el.name(), "iq" | "message" | "presence") {
            return self.stream_error("unsupported-stanza-type", None);
        }
        self.on_stanza(el)
    }

    async fn on_sasl2(&mut self, el: Element) -> Flow {
        let Some(neg) = self.negotiator.as_mut() else {
            return self.stream_error("not-authorized", None);
        };
        match neg.handle(el).await {
            NegotiatorEvent::Challenge(c) => {
                c.write_xml(&mut self.out, Some(NS_CLIENT));
                Flow::Continue
            }
            NegotiatorEvent::Failure { element, condition } => {
                info!(%condition, "authentication failed");
                element.write_xml(&mut self.out, Some(NS_CLIENT));
                Flow::Continue
            }
            NegotiatorEvent::StreamError {
                send,
                condition,
                text,
            } => {
                if let Some(s) = send {
                    s.write_xml(&mut self.out, Some(NS_CLIENT));
                }
                self.stream_error(condition, Some(&text))
            }
            NegotiatorEvent::Success { element, session } => {
                // The element may carry a FAST token: written, never logged.
                element.write_xml(&mut self.out, Some(NS_CLIENT));
                info!(account = %session.username, mechanism = %session.mechanism, "authenticated");
                let ua = session
                    .user_agent
                    .as_ref()
                    .and_then(|u| u.id.clone())
                    .filter(|s| !s.is_empty());
                self.authed = Some(Authed {
                    account: session.username.clone(),
                    user_agent_id: ua,
                });
                if let Some((_, resource)) = session.authorization_identifier.split_once('/') {
                    self.bind_resource(resource.to_owned());
                }
                // S-20: no stream restart; post-authentication features right away.
                self.out.push_str("<stream:features>");
                if self.bound.is_none() {
                    self.out.push_str("<bind xmlns='");
                    self.out.push_str(NS_BIND);
                    self.out.push_str("'/>");
                }
                self.out.push_str("</stream:features>");
                Flow::Continue
            }
        }
    }

    fn bind_resource(&mut self, resource: String) {
        let Some(a) = &self.authed else { return };
        let id = self.shared.router.register(
            &a.account,
            &resource,
            a.user_agent_id.as_deref(),
            self.tx.clone(),
        );
        let full_jid = format!("{}@{}/{}", a.account, self.shared.config.domain, resource);
        info!(jid = %full_jid, "resource bound");
        self.bound = Some(Bound {
            resource,
            full_jid,
            id,
        });
    }

    fn on_routed(&mut self, msg: Routed) -> Flow {
        match msg {
            Routed::Stanza(el) => {
                el.write_xml(&mut self.out, Some(NS_CLIENT));
                Flow::Continue
            }
            Routed::Close { condition, text } => self.stream_error(condition, Some(text)),
        }
    }

    fn send(&mut self, el: &Element) {
        el.write_xml(&mut self.out, Some(NS_CLIENT));
    }

    /// RFC 6120 §7 resource binding, for clients without Bind 2.
    fn legacy_bind(&mut self, el: &Element) -> Flow {
        let Some(a) = &self.authed else {
            return self.stream_error("not-authorized", None);
        };
        let requested = el
            .get_child("bind", NS_BIND)
            .and_then(|b| b.get_child("resource", NS_BIND))
            .map(|r| r.text())
            .and_then(|r| sanitize_tag(&r));
        let resource = match requested {
            Some(r) if !self.shared.router.has_resource(&a.account, &r) => r,
            Some(r) => make_resource(Some(&r)),
            None => make_resource(None),
        };
        self.bind_resource(resource);
        let jid = self
            .bound
            .as_ref()
            .map(|b| b.full_jid.clone())
            .unwrap_or_default();
        let mut reply = Element::new("iq", NS_CLIENT).with_attr("type", "result");
        if let Some(id) = el.attr("id") {
            reply = reply.with_attr("id", id);
        }
        reply = reply.with_child(
            Element::new("bind", NS_BIND).with_child(Element::new("jid", NS_BIND).with_text(jid)),
        );
        self.send(&reply);
        Flow::Continue
    }

    fn on_stanza(&mut self, mut el: Element) -> Flow {
        let is_iq = el.name() == "iq";
        let typ = el.attr("type").unwrap_or("").to_owned();
        let is_request = is_iq && matches!(typ.as_str(), "get" | "set");
        if is_iq && typ == "set" && el.get_child("bind", NS_BIND).is_some() {
            if self.bound.is_some() {
                let e = error_reply(&el, None, "not-allowed");
                self.send(&e);
                return Flow::Continue;
            }
            return self.legacy_bind(&el);
        }
        let (Some(a), Some(b)) = (&self.authed, &self.bound) else {
            return self.stream_error("not-authorized", Some("bind a resource first"));
        };
        let account = a.account.clone();
        let full_jid = b.full_jid.clone();
        let my_id = b.id;
        let domain = self.shared.config.domain.clone();
        let to_raw = el.attr("to").map(str::to_owned);
        let reply_to_error = |this: &mut Conn, el: &Element, cond: &str| {
            if el.attr("type") != Some("error") && (el.name() != "iq" || is_request) {
                let e = error_reply(el, Some(&full_jid), cond);
                this.send(&e);
            }
        };
        el.set_attr("from", full_jid.clone());
        let to = match &to_raw {
            None => None,
            Some(t) => match Jid::parse(t) {
                Some(j) => Some(j),
                None => {
                    if el.name() != "presence" {
                        reply_to_error(self, &el, "jid-malformed");
                    }
                    return Flow::Continue;
                }
            },
        };
        let kind = el.name().to_owned();
        match to {
            // To the server itself, or no `to` (the server on the client's behalf).
            None => self.for_server(el, &kind, is_request, &account, my_id, true),
            Some(j) if j.domain != domain => {
                if kind != "presence" {
                    reply_to_error(self, &el, "remote-server-not-found");
                }
                Flow::Continue
            }
            Some(j) if j.node.is_none() => {
                self.for_server(el, &kind, is_request, &account, my_id, false)
            }
            Some(j) => {
                let node = j.node.clone().unwrap_or_default();
                match &j.resource {
                    Some(res) => {
                        if self.shared.router.send_full(&node, res, el.clone()) {
                            return Flow::Continue;
                        }
                        match kind.as_str() {
                            "iq" => reply_to_error(self, &el, "service-unavailable"),
                            // RFC 6121 §8.5.3.2.1: treat as addressed to the bare JID.
                            "message" if self.shared.router.send_bare(&node, &el, None) == 0 => {
                                reply_to_error(self, &el, "service-unavailable")
                            }
                            _ => {}
                        }
                        Flow::Continue
                    }
                    None => {
                        match kind.as_str() {
                            "iq" if node == account && is_ping(&el) => {
                                self.send(&result_reply(&el, &full_jid))
                            }
                            "iq" => reply_to_error(self, &el, "service-unavailable"),
                            "message" => {
                                if self.shared.router.send_bare(&node, &el, None) == 0 {
                                    reply_to_error(self, &el, "service-unavailable");
                                }
                            }
                            _ => {
                                // Directed presence to a bare JID: all its sessions.
                                if node != account {
                                    self.shared.router.send_bare(&node, &el, None);
                                }
                            }
                        }
                        Flow::Continue
                    }
                }
            }
        }
    }

    /// Stanzas for the server (no `to`, or `to` = the domain).
    fn for_server(
        &mut self,
        el: Element,
        kind: &str,
        is_request: bool,
        account: &str,
        my_id: u64,
        no_to: bool,
    ) -> Flow {
        let full_jid = self
            .bound
            .as_ref()
            .map(|b| b.full_jid.clone())
            .unwrap_or_default();
        match kind {
            "iq" if is_request => {
                let session =
                    el.attr("type") == Some("set") && el.get_child("session", NS_SESSION).is_some();
                if is_ping(&el) || session {
                    self.send(&result_reply(&el, &full_jid));
                } else {
                    self.send(&error_reply(&el, Some(&full_jid), "service-unavailable"));
                }
            }
            "iq" => {} // result/error for the server: nothing is waiting for it.
            "presence" if no_to => {
                // Undirected presence: to the account's other sessions.
                self.shared.router.send_bare(account, &el, Some(my_id));
            }
            "presence" => {}
            _ => {
                if no_to {
                    // RFC 6121 §8.5.1: a message without `to` is for the sender's bare JID.
                    self.shared.router.send_bare(account, &el, Some(my_id));
                } else if el.attr("type") != Some("error") {
                    self.send(&error_reply(&el, Some(&full_jid), "service-unavailable"));
                }
            }
        }
        Flow::Continue
    }
}

fn is_ping(el: &Element) -> bool {
    el.attr("type") == Some("get") && el.get_child("ping", NS_PING).is_some()
}

/// An empty `type='result'` answer to an iq.
fn result_reply(req: &Element, to: &str) -> Element {
    let mut r = Element::new("iq", NS_CLIENT).with_attr("type", "result");
    if let Some(id) = req.attr("id") {
        r = r.with_attr("id", id);
    }
    if let Some(from) = req.attr("to") {
        r = r.with_attr("from", from);
    }
    r.with_attr("to", to)
}

/// A stanza error reply (`type='cancel'`) to `req`, from where `req` was addressed.
fn error_reply(req: &Element, to: Option<&str>, condition: &str) -> Element {
    let mut r = Element::new(req.name(), NS_CLIENT).with_attr("type", "error");
    if let Some(id) = req.attr("id") {
        r = r.with_attr("id", id);
    }
    if let Some(from) = req.attr("to") {
        r = r.with_attr("from", from);
    }
    if let Some(to) = to {
        r = r.with_attr("to", to);
    }
    r.with_child(
        Element::new("error", NS_CLIENT)
            .with_attr("type", "cancel")
            .with_child(Element::new(condition, NS_STANZAS)),
    )
}
