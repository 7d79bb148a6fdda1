//! One client connection: tokio-xmpp reads and writes the XML stream, the crate's negotiator
//! decides SASL2, this file connects the two and answers a few stanzas after login.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::{SinkExt, StreamExt as _};
use sasl2_fast::jid::Jid;
use sasl2_fast::minidom::Element;
use sasl2_fast::sasl2::bind2::{make_resource, random_hex};
use sasl2_fast::sasl2::{ClientStreamHeader, Negotiator, Next, Reply, TlsInfo};
use sasl2_fast::xmpp::ns;
use sasl2_fast::xmpp_parsers::bind::{BindQuery, BindResponse};
use sasl2_fast::xmpp_parsers::disco::{DiscoInfoResult, Identity};
use sasl2_fast::xmpp_parsers::iq::Iq;
use sasl2_fast::xmpp_parsers::stanza_error::StanzaError;
use sasl2_fast::xmpp_parsers::stanza_error::{DefinedCondition as StanzaCondition, ErrorType};
use sasl2_fast::xmpp_parsers::starttls::{Proceed, StartTls};
use sasl2_fast::xmpp_parsers::stream_error::{DefinedCondition, StreamError};
use tokio::io::{AsyncRead, AsyncWrite, BufStream, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_xmpp::xmlstream::{ReadError, StreamHeader, Timeouts, XmlStream, accept_stream};
use tracing::{debug, info};

use crate::Shared;

/// Time a connection has to authenticate, TLS handshakes included.
const AUTH_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes read for one element before authentication (an `<authenticate>` is under 4 KiB),
/// and after: tokio-xmpp's parser has no size limit of its own.
const PRE_AUTH_ELEMENT_BYTES: usize = 16 * 1024;
const ELEMENT_BYTES: usize = 256 * 1024;
/// A stream silent this long is closed.
const IDLE: Duration = Duration::from_secs(300);

type Xml<S> = XmlStream<BufStream<Bounded<S>>, Element>;

/// Serves one accepted socket: direct TLS, or a plaintext stream that may ask for STARTTLS.
pub(crate) async fn serve(shared: &Shared, tcp: TcpStream, peer: SocketAddr, direct_tls: bool) {
    let _ = tcp.set_nodelay(true);
    let deadline = Instant::now() + AUTH_TIMEOUT;
    let tcp = match direct_tls {
        true => tcp,
        false => match xml_stream(shared, tcp, None, peer, deadline).await {
            Some(tcp) => tcp, // `<starttls/>`: what the client sent after it is dropped
            None => return,
        },
    };
    let tls = match timeout_at(deadline, shared.acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        _ => {
            debug!("TLS handshake failed or timed out");
            return;
        }
    };
    let info = shared.bindings.tls_info(tls.get_ref().1);
    xml_stream(shared, tls, Some(info), peer, deadline).await;
}

/// One XML stream, from the client's header to the end. Returns the transport when the
/// client asked for STARTTLS.
async fn xml_stream<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    io: S,
    tls: Option<TlsInfo>,
    peer: SocketAddr,
    deadline: Instant,
) -> Option<S> {
    let io = BufStream::new(Bounded::new(io));
    let timeouts = Timeouts {
        read_timeout: IDLE,
        response_timeout: Duration::from_secs(10),
    };
    let mut accepted = timeout_at(deadline, accept_stream(io, ns::JABBER_CLIENT, timeouts))
        .await
        .ok()?
        .ok()?;
    let header = accepted.take_header();
    let checked =
        ClientStreamHeader::check(&shared.domain, header.to.as_deref(), header.from.as_deref());
    let reply = StreamHeader {
        from: Some(shared.domain.as_str().into()),
        to: checked
            .as_ref()
            .ok()
            .and_then(|h| h.reply_to())
            .map(Into::into),
        id: Some(random_hex(16).into()),
    };
    let pending = accepted.send_header(reply).await.ok()?;
    let checked = match checked {
        Ok(h) => h,
        Err(e) => return pending.send_error(&e).await.ok().and(None),
    };
    let mut info = checked.stream_info().with_peer(peer);
    info = info.with_plaintext_allowed(!shared.require_tls);
    if let Some(t) = tls {
        info = info.with_tls(t);
    }
    let plaintext = !info.is_secure();
    let mut negotiator = Negotiator::new(shared.sasl2.clone(), info);
    let mut features = negotiator.stream_features();
    if plaintext {
        features.starttls = Some(StartTls {
            required: shared.require_tls,
        });
    }
    let mut xml: Xml<S> = pending.send_features(&features).await.ok()?;
    let mut shutdown = shared.shutdown.clone();
    let mut jid: Option<Jid> = None; // set at login
    loop {
        let next = async {
            match jid {
                None => timeout_at(deadline, xml.next()).await.ok(),
                Some(_) => Some(xml.next().await),
            }
        };
        let el = tokio::select! {
            n = next => match n {
                None => return close(&mut xml, DefinedCondition::ConnectionTimeout).await,
                Some(Some(Ok(el))) => el,
                Some(Some(Err(ReadError::SoftTimeout))) => {
                    return close(&mut xml, DefinedCondition::ConnectionTimeout).await
                }
                Some(Some(Err(ReadError::StreamFooterReceived))) => {
                    return finish(&mut xml).await
                }
                Some(Some(Err(ReadError::ParseError(_)))) => {
                    return close(&mut xml, DefinedCondition::BadFormat).await
                }
                Some(Some(Err(ReadError::HardError(e)))) => {
                    debug!(error = %e, "read failed");
                    return None;
                }
                Some(None) => return None,
            },
            _ = shutdown.changed() => return close(&mut xml, DefinedCondition::SystemShutdown).await,
        };
        // The element is complete: the next one gets a fresh byte budget.
        xml.get_stream().get_ref().element_done();
        if negotiator.handles(&el) {
            let reply = Reply::from(negotiator.handle(el).await);
            for el in &reply.elements {
                xml.feed(el).await.ok()?;
            }
            // `XmlStream` is a sink of any `AsXml` type: name one to flush.
            SinkExt::<&Element>::flush(&mut xml).await.ok()?;
            match reply.next {
                Next::Continue => {}
                Next::LoggedIn(session) => {
                    info!(account = %session.username, mechanism = %session.mechanism, "authenticated");
                    xml.get_stream().get_ref().set_limit(ELEMENT_BYTES);
                    jid = Some(session.authorization_identifier);
                }
                Next::Close(error) => return close_with(&mut xml, error).await,
                // RFC 6120 SASL is not enabled on this server.
                _ => return close(&mut xml, DefinedCondition::InternalServerError).await,
            }
        } else if let Some(jid) = &mut jid {
            if let Some(answer) = stanza(el, jid) {
                xml.send(&answer).await.ok()?;
            }
        } else if el.is("starttls", ns::TLS) && plaintext {
            xml.send(&Proceed).await.ok()?;
            return Some(xml.into_inner().into_inner().inner);
        } else {
            return close(&mut xml, DefinedCondition::NotAuthorized).await;
        }
    }
}

/// Answers what a minimal session answers: ping, disco#info, RFC 6120 resource binding, and
/// `service-unavailable` for other requests; messages, presence and responses are dropped.
fn stanza(el: Element, jid: &mut Jid) -> Option<Element> {
    let iq = Iq::try_from(el).ok()?;
    let (id, to, payload) = match iq {
        Iq::Get {
            id, to, payload, ..
        }
        | Iq::Set {
            id, to, payload, ..
        } => (id, to, payload),
        _ => return None,
    };
    let answer = if payload.is("ping", ns::PING) {
        Iq::empty_result(jid.clone(), id)
    } else if payload.is("query", ns::DISCO_INFO) {
        let info = DiscoInfoResult {
            node: None,
            identities: vec![Identity {
                category: "server".into(),
                type_: "im".into(),
                lang: None,
                name: None,
            }],
            features: [ns::DISCO_INFO, ns::PING].map(str::to_owned).into(),
            extensions: Vec::new(),
        };
        Iq::from_result(id, Some(info)).with_to(jid.clone())
    } else if let (Ok(query), Err(bare)) = (BindQuery::try_from(payload), jid.try_as_full()) {
        let full = bare.with_resource(&make_resource(query.resource.as_deref()));
        *jid = Jid::from(full.clone());
        Iq::from_result(id, Some(BindResponse { jid: full })).with_to(jid.clone())
    } else {
        let error = StanzaError {
            type_: ErrorType::Cancel,
            by: None,
            defined_condition: StanzaCondition::ServiceUnavailable,
            texts: Default::default(),
            other: None,
        };
        Iq::from_error(id, error).with_to(jid.clone())
    };
    let answer = match to {
        Some(to) => answer.with_from(to),
        None => answer,
    };
    Some(answer.into())
}

/// Writes a stream error and closes the stream.
async fn close<S: AsyncRead + AsyncWrite + Unpin, T>(
    xml: &mut Xml<S>,
    condition: DefinedCondition,
) -> Option<T> {
    let error = StreamError {
        condition,
        texts: Default::default(),
        application_specific: Vec::new(),
    };
    close_with(xml, error).await
}

async fn close_with<S: AsyncRead + AsyncWrite + Unpin, T>(
    xml: &mut Xml<S>,
    error: StreamError,
) -> Option<T> {
    debug!(condition = %error.condition, "stream error");
    let _ = xml.send(&error).await;
    finish(xml).await
}

/// Sends `</stream:stream>` and closes the transport.
async fn finish<S: AsyncRead + AsyncWrite + Unpin, T>(xml: &mut Xml<S>) -> Option<T> {
    let _ = SinkExt::<&Element>::close(xml).await;
    None
}

/// The transport under tokio-xmpp's parser, which has no size limit of its own: reads fail
/// once more than `limit` bytes arrived since the last complete element, so what a peer makes
/// the server buffer for one element is bounded (smaller before authentication).
struct Bounded<S> {
    inner: S,
    read: AtomicUsize,
    limit: AtomicUsize,
}

impl<S> Bounded<S> {
    fn new(inner: S) -> Self {
        let limit = AtomicUsize::new(PRE_AUTH_ELEMENT_BYTES);
        Bounded {
            inner,
            read: AtomicUsize::new(0),
            limit,
        }
    }

    fn element_done(&self) {
        self.read.store(0, Ordering::Relaxed);
    }

    fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        if this.read.fetch_add(n, Ordering::Relaxed) + n > this.limit.load(Ordering::Relaxed) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "element too large",
            )));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
