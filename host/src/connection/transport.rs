//! The socket under a connection: plain TCP before STARTTLS, TLS after.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use sasl2_fast::sasl2::TlsInfo;
use tokio::time::Instant;
use tracing::debug;

use super::shaping::ShapedTcp;
use crate::shared::Shared;

/// The socket, before or after TLS. Under both is a [`ShapedTcp`]: before authentication its
/// reads are shaped (`max_unauthenticated_bytes_per_s`), TLS records included.
pub enum Transport {
    /// Plain TCP (STARTTLS listener before `<proceed/>`).
    Plain(ShapedTcp),
    /// TLS.
    Tls(Box<tokio_rustls::server::TlsStream<HandshakeSocket>>),
    /// Transient state during the STARTTLS upgrade.
    Upgrading,
}

/// What a plaintext connection reads at once (a TLS connection reads what rustls decrypted).
const PLAIN_READ: usize = 4096;
/// What a plaintext read may grow to once a read filled the buffer: a logged-in session's
/// large stanzas come in fewer reads.
const PLAIN_READ_MAX: usize = sasl2_fast::stream::FEED_SLACK;

impl Transport {
    /// True once the connection is encrypted (direct TLS, or STARTTLS done).
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// Reads are no longer shaped: the connection authenticated.
    pub fn end_shaping(&mut self) {
        match self {
            Transport::Plain(s) => s.end_shaping(),
            Transport::Tls(s) => s.get_mut().0.tcp.end_shaping(),
            Transport::Upgrading => {}
        }
    }

    /// Waits for the peer's next bytes and hands them to `take`; `None` at the end of the
    /// stream. TLS: `take` reads rustls' decrypted plaintext where it lies (at most one
    /// record, 16 KiB), so a TLS connection has no read buffer of its own. Plain TCP reads
    /// into `buf`, allocated at the first read and grown to 16 KiB when `grow` and a read
    /// filled it. Cancel-safe: nothing is consumed unless `take` ran.
    pub async fn read_with<R>(
        &mut self,
        buf: &mut Vec<u8>,
        grow: bool,
        take: impl FnOnce(&[u8]) -> R,
    ) -> io::Result<Option<R>> {
        use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _};
        match self {
            Transport::Plain(s) => {
                if buf.is_empty() {
                    buf.resize(PLAIN_READ, 0);
                }
                let n = s.read(buf).await?;
                if n == 0 {
                    return Ok(None);
                }
                let r = take(&buf[..n]);
                if grow && n == buf.len() && buf.len() < PLAIN_READ_MAX {
                    *buf = vec![0u8; PLAIN_READ_MAX];
                }
                Ok(Some(r))
            }
            Transport::Tls(s) => {
                let data = s.fill_buf().await?;
                if data.is_empty() {
                    return Ok(None);
                }
                let n = data.len();
                let r = take(data);
                s.consume(n);
                Ok(Some(r))
            }
            Transport::Upgrading => Err(gone()),
        }
    }

    /// Writes `last` and closes the write side: TCP FIN, after the TLS `close_notify` on TLS.
    /// On TLS, `last` and the `close_notify` are encrypted into rustls' buffer first and go
    /// out in one write (one TCP segment for a closing stream's footer, not two).
    pub async fn finish(&mut self, last: &[u8]) -> io::Result<()> {
        use std::io::Write as _;
        use tokio::io::AsyncWriteExt as _;
        // Small enough for rustls' send buffer (64 KiB by default) in one piece.
        const BUFFERED: usize = 16 * 1024;
        match self {
            Transport::Plain(s) => {
                s.write_all(last).await?;
                s.shutdown().await
            }
            Transport::Tls(s) if last.len() <= BUFFERED => {
                s.get_mut().1.writer().write_all(last)?;
                s.shutdown().await
            }
            Transport::Tls(s) => {
                s.write_all(last).await?;
                s.shutdown().await
            }
            Transport::Upgrading => Ok(()),
        }
    }
}

/// The TCP socket under rustls. During the handshake it holds what rustls writes until the
/// connection is about to wait for the peer; afterwards it passes writes through.
///
/// Why: rustls writes its TLS 1.3 session tickets (`NewSessionTicket`) as the last step of the
/// handshake, and tokio-rustls flushes them on their own, one `writev` and one TCP segment,
/// although the client has usually sent its stream header with its `Finished` and the
/// stream features follow a moment later. Held, the tickets go out in the same `writev` as
/// the features: one write and one wakeup of the client fewer per login (issue 13,
/// docs/performance.md §8d).
///
/// Nothing held can stall the connection. During the handshake, held bytes are written before
/// any read would wait (the peer is waiting for the server's flight). After a TLS 1.3
/// handshake, what is held is only the tickets, which no client waits for: they go with the
/// next write, before a shutdown, or in one last non-blocking attempt when the socket is
/// dropped. After TLS 1.2 (whose last server flight the client does wait for) they go before
/// the next read waits, as during the handshake. A failed handshake's alert goes on drop.
pub struct HandshakeSocket {
    tcp: ShapedTcp,
    held: Vec<u8>,
    /// Writes are held and flushes wait: the handshake runs.
    holding: bool,
    /// Held bytes must go out before a read waits: the peer may be waiting for them.
    peer_waits: bool,
}

impl HandshakeSocket {
    /// `tcp`, holding writes until [`HandshakeSocket::release`].
    fn new(tcp: ShapedTcp) -> Self {
        HandshakeSocket {
            tcp,
            held: Vec::new(),
            holding: true,
            peer_waits: true,
        }
    }

    /// The handshake is over: flushes are flushes again, and what is held goes out with the
    /// next write (in the same `writev`). `tls13`: the handshake was TLS 1.3, so what is held
    /// is session tickets only and need not go out before the next read waits.
    fn release(&mut self, tls13: bool) {
        self.holding = false;
        self.peer_waits = !tls13;
    }

    /// Writes out what is held, until done or the socket would block.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.held.is_empty() {
            match Pin::new(&mut self.tcp).poll_write(cx, &self.held) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.held.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.held = Vec::new();
        Poll::Ready(Ok(()))
    }
}

/// A freshly accepted socket's transport, with the TLS facts and the TLS 1.3 early data of a
/// direct-TLS handshake.
pub(super) struct Opened {
    pub io: Transport,
    pub tls: Option<TlsInfo>,
    pub early: Option<Vec<u8>>,
}

/// Plain TCP on the STARTTLS port; on the direct-TLS port (XEP-0368) the [`handshake`] first,
/// by `deadline`, through the 0-RTT acceptor when `zero_rtt`. `None`: the handshake failed or
/// timed out.
pub(super) async fn open(
    shared: &Shared,
    tcp: ShapedTcp,
    direct_tls: bool,
    zero_rtt: bool,
    deadline: Instant,
) -> Option<Opened> {
    if !direct_tls {
        return Some(Opened {
            io: Transport::Plain(tcp),
            tls: None,
            early: None,
        });
    }
    let acceptor = match (&shared.early_data, zero_rtt) {
        (Some(e), true) => &e.acceptor,
        _ => &shared.acceptor,
    };
    let mut s = handshake(acceptor, tcp, deadline, "direct TLS").await?;
    let info = shared.tls.connection_info(s.get_ref().1);
    // Z-8: the handshake is complete; the early data waits in rustls.
    let early = match zero_rtt {
        true => crate::tls::early_data::take_early_data(s.get_mut().1),
        false => None,
    };
    Some(Opened {
        io: Transport::Tls(Box::new(s)),
        tls: Some(info),
        early,
    })
}

/// [`accept_tls`] by `deadline`. `None`: the handshake (`what`: direct TLS or STARTTLS) failed
/// or timed out, logged at debug level (an unauthenticated peer's doing).
pub(super) async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: ShapedTcp,
    deadline: Instant,
    what: &'static str,
) -> Option<tokio_rustls::server::TlsStream<HandshakeSocket>> {
    match tokio::time::timeout_at(deadline, accept_tls(acceptor, tcp)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            debug!(error = %e, handshake = what, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!(handshake = what, "TLS handshake timed out");
            None
        }
    }
}

/// The server side of a TLS handshake on `tcp`, over a [`HandshakeSocket`] that holds the
/// handshake's writes and is released once the handshake is complete: the one way the host
/// accepts TLS (direct TLS and STARTTLS), so no path can keep holding after the handshake.
pub async fn accept_tls(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: impl Into<ShapedTcp>,
) -> io::Result<tokio_rustls::server::TlsStream<HandshakeSocket>> {
    let mut s = acceptor.accept(HandshakeSocket::new(tcp.into())).await?;
    handshake_done(&mut s);
    Ok(s)
}

/// Ends the hold on `s`'s socket: its handshake is complete.
fn handshake_done(s: &mut tokio_rustls::server::TlsStream<HandshakeSocket>) {
    use tokio_rustls::rustls::ProtocolVersion;
    let tls13 = s.get_ref().1.protocol_version() == Some(ProtocolVersion::TLSv1_3);
    s.get_mut().0.release(tls13);
}

impl Drop for HandshakeSocket {
    fn drop(&mut self) {
        // Best effort and non-blocking: a handshake that failed leaves its alert here.
        if !self.held.is_empty() {
            let _ = self.tcp.try_write(&self.held);
        }
    }
}

impl AsyncRead for HandshakeSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Read first: if the peer's next bytes are already here, what is held can still go
        // with whatever this read makes us write.
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Pending if this.peer_waits && !this.held.is_empty() => {}
            other => return other,
        }
        // About to wait for the peer, who may be waiting for what is held. If the write
        // would block, its readiness wakes this task too and the next poll drains more.
        match this.poll_drain(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Pending,
        }
    }
}

impl AsyncWrite for HandshakeSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.holding {
            let mut n = 0;
            for b in bufs {
                this.held.extend_from_slice(b);
                n += b.len();
            }
            return Poll::Ready(Ok(n));
        }
        if this.held.is_empty() {
            return Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        }
        // The held bytes first, in the same syscall.
        let mut slices = Vec::with_capacity(bufs.len() + 1);
        slices.push(IoSlice::new(&this.held));
        slices.extend_from_slice(bufs);
        match Pin::new(&mut this.tcp).poll_write_vectored(cx, &slices) {
            Poll::Ready(Ok(n)) if n > this.held.len() => {
                let written = n - this.held.len();
                this.held = Vec::new();
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Ok(0)) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                // Only held bytes went out; none of `bufs` was taken. Try again at once.
                this.held.drain(..n);
                if this.held.is_empty() {
                    this.held = Vec::new();
                }
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.holding {
            // The handshake's flushes wait for its next read (or for release).
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "transport is upgrading")
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::rustls;

    use super::accept_tls;

    struct Setup {
        acceptor: tokio_rustls::TlsAcceptor,
        listener: TcpListener,
        ca_pem: Vec<u8>,
        _dir: tempfile::TempDir,
    }

    async fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let tls = crate::tls::setup("localhost", dir.path(), None, None, true).unwrap();
        Setup {
            acceptor: tokio_rustls::TlsAcceptor::from(tls.config.clone()),
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            ca_pem: std::fs::read(&tls.cert_pem_path).unwrap(),
            _dir: dir,
        }
    }

    fn client_config(ca_pem: &[u8], tls12_only: bool) -> Arc<rustls::ClientConfig> {
        if !tls12_only {
            return crate::client::client_tls_config(ca_pem).unwrap();
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(ca_pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    async fn connect(
        s: &Setup,
        config: Arc<rustls::ClientConfig>,
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(s.listener.local_addr().unwrap())
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let connect = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
        tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .expect("the handshake completes")
            .unwrap()
    }

    /// Whether bytes arrive on the client's socket within `wait` (without consuming them).
    async fn bytes_arrive(
        tls: &tokio_rustls::client::TlsStream<TcpStream>,
        wait: Duration,
    ) -> bool {
        let mut b = [0u8; 1];
        tokio::time::timeout(wait, tls.get_ref().0.peek(&mut b))
            .await
            .is_ok()
    }

    /// What the host does first on a new stream: wait for the client's first bytes, answer.
    async fn read_then_answer(
        tls: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
    ) {
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await.unwrap();
        tls.write_all(b"x").await.unwrap();
        tls.flush().await.unwrap();
        let _ = tls.read(&mut b).await;
    }

    /// The client's side of [`read_then_answer`]: one byte out, the answer back.
    async fn send_and_hear_the_answer(tls: &mut tokio_rustls::client::TlsStream<TcpStream>) {
        tls.write_all(b"g").await.unwrap();
        tls.flush().await.unwrap();
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"x");
    }

    /// TLS 1.3: the session tickets are held until the server's first write and arrive with
    /// it, also while the server waits to read first. The control, a plain tokio-rustls
    /// server on the same config, sends them at once, so the observation can tell the two
    /// apart.
    #[tokio::test]
    async fn tls13_tickets_go_out_with_the_first_write() {
        for held in [false, true] {
            let s = setup().await;
            let acceptor = s.acceptor.clone();
            let listener = &s.listener;
            let server = async move {
                let (tcp, _) = listener.accept().await.unwrap();
                if held {
                    read_then_answer(&mut accept_tls(&acceptor, tcp).await.unwrap()).await;
                } else {
                    read_then_answer(&mut acceptor.accept(tcp).await.unwrap()).await;
                }
            };
            let client = async {
                let mut tls = connect(&s, client_config(&s.ca_pem, false)).await;
                assert_eq!(
                    tls.get_ref().1.protocol_version(),
                    Some(rustls::ProtocolVersion::TLSv1_3)
                );
                let early = bytes_arrive(&tls, Duration::from_millis(300)).await;
                assert_eq!(
                    early, !held,
                    "held {held}: tickets before the server wrote anything"
                );
                send_and_hear_the_answer(&mut tls).await;
                assert!(tls.get_ref().1.tls13_tickets_received() >= 1, "held {held}");
                tls.shutdown().await.unwrap();
            };
            tokio::join!(server, client);
        }
    }

    /// TLS 1.2: the client waits for the server's last flight (its `Finished`), so it goes
    /// out as soon as the server waits for the client, not with the first write.
    #[tokio::test]
    async fn tls12_final_flight_is_not_held() {
        let s = setup().await;
        let acceptor = s.acceptor.clone();
        let listener = &s.listener;
        let server = async move {
            let (tcp, _) = listener.accept().await.unwrap();
            read_then_answer(&mut accept_tls(&acceptor, tcp).await.unwrap()).await;
        };
        let client = async {
            let mut tls = connect(&s, client_config(&s.ca_pem, true)).await;
            assert_eq!(
                tls.get_ref().1.protocol_version(),
                Some(rustls::ProtocolVersion::TLSv1_2)
            );
            send_and_hear_the_answer(&mut tls).await;
            tls.shutdown().await.unwrap();
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(server, client)
        })
        .await
        .expect("no deadlock");
    }

    /// After the handshake a flush is a flush again: what the server writes goes out at once,
    /// also while it is not reading (a stanza routed to an idle session, say).
    #[tokio::test]
    async fn after_the_handshake_writes_are_not_held() {
        for tls12_only in [false, true] {
            let s = setup().await;
            let acceptor = s.acceptor.clone();
            let listener = &s.listener;
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            let server = async move {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut tls = accept_tls(&acceptor, tcp).await.unwrap();
                tls.write_all(b"x").await.unwrap();
                tls.flush().await.unwrap();
                // Not reading: only the flush can have sent the byte.
                let _ = done_rx.await;
            };
            let client = async {
                let mut tls = connect(&s, client_config(&s.ca_pem, tls12_only)).await;
                let mut b = [0u8; 1];
                tokio::time::timeout(Duration::from_secs(2), tls.read_exact(&mut b))
                    .await
                    .unwrap_or_else(|_| panic!("TLS 1.2 only {tls12_only}: the byte is held"))
                    .unwrap();
                assert_eq!(&b, b"x");
                let _ = done_tx.send(());
            };
            tokio::join!(server, client);
        }
    }

    /// A handshake that fails still tells the peer why: the alert rustls queued is held, and
    /// written when the socket is dropped.
    #[tokio::test]
    async fn a_failed_handshake_still_sends_its_alert() {
        let s = setup().await;
        let acceptor = s.acceptor.clone();
        let listener = &s.listener;
        let server = async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let r = accept_tls(&acceptor, tcp).await;
            assert!(r.is_err(), "a malformed ClientHello is refused");
        };
        let client = async {
            let mut tcp = TcpStream::connect(s.listener.local_addr().unwrap())
                .await
                .unwrap();
            // A handshake record holding a ClientHello one byte long: a decode error.
            tcp.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00])
                .await
                .unwrap();
            let mut got = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got))
                .await
                .expect("the server closes")
                .unwrap();
            assert_eq!(got.first(), Some(&0x15), "an alert record, got {got:02x?}");
        };
        tokio::join!(server, client);
    }
}
