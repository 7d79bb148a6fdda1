//! The socket under a connection: plain TCP before STARTTLS, TLS after.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The socket, before or after TLS.
pub enum Transport {
    /// Plain TCP (STARTTLS listener before `<proceed/>`).
    Plain(TcpStream),
    /// TLS.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Transient state during the STARTTLS upgrade.
    Upgrading,
}

impl Transport {
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
