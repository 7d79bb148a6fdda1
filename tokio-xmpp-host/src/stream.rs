//! One client connection: tokio-xmpp reads and writes the XML stream, the crate's negotiator
//! decides SASL2, this file connects the two and answers a few stanzas after login.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt as _};
use sasl2_fast::jid::Jid;
use sasl2_fast::minidom::Element;
use sasl2_fast::sasl2::bind2::make_resource;
use sasl2_fast::sasl2::{ClientStreamHeader, Negotiator, Next, Reply, TlsInfo};
use sasl2_fast::stream::ElementBudget;
use sasl2_fast::xmpp::ns;
use sasl2_fast::xmpp::random_hex;
use sasl2_fast::xmpp_parsers::bind::{BindQuery, BindResponse};
use sasl2_fast::xmpp_parsers::disco::{DiscoInfoResult, Identity};
use sasl2_fast::xmpp_parsers::iq::Iq;
use sasl2_fast::xmpp_parsers::stanza_error::{DefinedCondition as Stanza, ErrorType, StanzaError};
use sasl2_fast::xmpp_parsers::starttls::{Proceed, StartTls};
use sasl2_fast::xmpp_parsers::stream_error::{DefinedCondition as Cond, StreamError};
use tokio::io::{AsyncRead, AsyncWrite, BufStream};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_xmpp::xmlstream::{ReadError, StreamHeader, Timeouts, XmlStream, accept_stream};
use tracing::{debug, info};

use crate::Shared;

/// Time a connection has to authenticate, TLS handshakes included.
const AUTH_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes one element may take before authentication (an `<authenticate>` is under 4 KiB) and
/// after: tokio-xmpp's parser has no element limit of its own.
const PRE_AUTH_ELEMENT_BYTES: usize = 16 * 1024;
const ELEMENT_BYTES: usize = 256 * 1024;

type Xml<S> = XmlStream<BufStream<ElementBudget<S>>, Element>;

/// Serves one accepted socket: direct TLS, or a plaintext stream that may ask for STARTTLS.
pub(crate) async fn serve(shared: &Shared, tcp: TcpStream, peer: SocketAddr, direct_tls: bool) {
    let _ = tcp.set_nodelay(true);
    let deadline = Instant::now() + AUTH_TIMEOUT;
    let tcp = match direct_tls {
        true => tcp,
        // `<starttls/>`: whatever the client sent after it is dropped with the parser.
        false => match xml_stream(shared, tcp, None, peer, deadline).await {
            Some(tcp) => tcp,
            None => return,
        },
    };
    let Ok(Ok(tls)) = timeout_at(deadline, shared.acceptor.accept(tcp)).await else {
        return debug!("TLS handshake failed or timed out");
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
    let io = BufStream::new(ElementBudget::new(io, PRE_AUTH_ELEMENT_BYTES));
    let accept = accept_stream(io, ns::JABBER_CLIENT, Timeouts::default());
    let mut accepted = timeout_at(deadline, accept).await.ok()?.ok()?;
    let header = accepted.take_header();
    let (to, from) = (header.to.as_deref(), header.from.as_deref());
    let checked = ClientStreamHeader::check(&shared.domain, to, from);
    let to = checked.as_ref().ok().and_then(ClientStreamHeader::reply_to);
    let reply = StreamHeader {
        from: Some(shared.domain.as_str().into()),
        to: to.map(Into::into),
        id: Some(random_hex(16).into()),
    };
    let pending = accepted.send_header(reply).await.ok()?;
    let info = match checked {
        Ok(h) => h.stream_info(tls).with_peer(peer),
        Err(e) => return pending.send_error(&e).await.ok().and(None),
    };
    let info = info.with_plaintext_allowed(!shared.require_tls);
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
        let read = async {
            match jid {
                None => timeout_at(deadline, xml.next()).await.unwrap_or(None),
                Some(_) => xml.next().await,
            }
        };
        let read = tokio::select! {
            r = read => r,
            _ = shutdown.changed() => return close(&mut xml, Some(Cond::SystemShutdown)).await,
        };
        let el = match read {
            Some(Ok(el)) => el,
            Some(Err(ReadError::StreamFooterReceived)) => return close(&mut xml, None).await,
            Some(Err(ReadError::HardError(_))) if !budget(&xml).exceeded() => return None,
            Some(Err(ReadError::HardError(_))) => {
                return close(&mut xml, Some(Cond::PolicyViolation)).await;
            }
            Some(Err(ReadError::ParseError(_))) => {
                return close(&mut xml, Some(Cond::BadFormat)).await;
            }
            // Silent for too long (idle, or the authentication deadline).
            _ => return close(&mut xml, Some(Cond::ConnectionTimeout)).await,
        };
        budget(&xml).element_done();
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
                    info!(account = %session.username, mechanism = %session.mechanism, "logged in");
                    budget(&xml).set_limit(ELEMENT_BYTES);
                    jid = Some(session.authorization_identifier);
                }
                Next::Close(error) => {
                    let _ = xml.send(&error).await;
                    return close(&mut xml, None).await;
                }
                // RFC 6120 SASL (a restart) is not enabled on this server.
                Next::Restart(_) => return close(&mut xml, Some(Cond::InternalServerError)).await,
            }
        } else if let Some(jid) = &mut jid {
            if let Some(answer) = stanza(el, jid) {
                xml.send(&answer).await.ok()?;
            }
        } else if el.is("starttls", ns::TLS) && plaintext {
            xml.send(&Proceed).await.ok()?;
            return Some(xml.into_inner().into_inner().into_inner());
        } else {
            return close(&mut xml, Some(Cond::NotAuthorized)).await;
        }
    }
}

/// A minimal session: ping, disco#info and RFC 6120 resource binding are answered, other
/// requests get `service-unavailable`; messages, presence and responses are dropped.
fn stanza(el: Element, jid: &mut Jid) -> Option<Element> {
    let (id, to, payload) = match Iq::try_from(el).ok()? {
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
        let identities = vec![Identity::new("server", "im", "en", "tokio_xmpp_host")];
        let features = [ns::DISCO_INFO, ns::PING].map(str::to_owned).into();
        let node = None;
        let info = DiscoInfoResult {
            node,
            identities,
            features,
            extensions: Vec::new(),
        };
        Iq::from_result(id, Some(info)).with_to(jid.clone())
    } else if let (Ok(q), Err(bare)) = (BindQuery::try_from(payload), jid.try_as_full()) {
        let full = bare.with_resource(&make_resource(q.resource.as_deref()));
        *jid = Jid::from(full.clone());
        Iq::from_result(id, Some(BindResponse { jid: full })).with_to(jid.clone())
    } else {
        let (type_, condition) = (ErrorType::Cancel, Stanza::ServiceUnavailable);
        let error = StanzaError::new(type_, condition, "en", "not served here");
        Iq::from_error(id, error).with_to(jid.clone())
    };
    Some(match to {
        Some(to) => answer.with_from(to).into(),
        None => answer.into(),
    })
}

fn budget<S: AsyncRead + AsyncWrite + Unpin>(xml: &Xml<S>) -> &ElementBudget<S> {
    xml.get_stream().get_ref()
}

/// Writes a stream error with `condition` if any, then `</stream:stream>`, and closes.
async fn close<S: AsyncRead + AsyncWrite + Unpin, T>(
    xml: &mut Xml<S>,
    condition: Option<Cond>,
) -> Option<T> {
    if let Some(condition) = condition {
        debug!(%condition, "stream error");
        let texts = Default::default();
        let error = StreamError {
            condition,
            texts,
            application_specific: Vec::new(),
        };
        let _ = xml.send(&error).await;
    }
    let _ = SinkExt::<&Element>::close(xml).await;
    None
}
