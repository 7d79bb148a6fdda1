//! A byte budget per element for hosts whose XML parser has no size limit of its own.
//!
//! tokio-xmpp's `xmlstream` parses with rxml's default parser: it bounds one token (8 KiB) but
//! not an element, so a peer can make it buffer an endless one. [`ElementBudget`] sits under
//! such a parser, between it and the socket (or the TLS stream): reads fail with
//! [`std::io::ErrorKind::InvalidData`] once more than the budget arrived since the host last
//! said an element was complete. What one element can cost is then bounded by the budget plus
//! the parser's read buffer. Use a small budget before authentication (an `<authenticate>` is
//! under 4 KiB) and a larger one after. [`crate::stream::StreamReader`] needs none: its
//! [`crate::stream::Limits`] are exact.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A transport whose reads fail once more than `limit` bytes arrived since the last
/// [`ElementBudget::element_done`]. The counters are atomics so the host can reach them
/// through a shared reference (tokio-xmpp's `XmlStream::get_stream`).
#[derive(Debug)]
pub struct ElementBudget<S> {
    inner: S,
    read: AtomicUsize,
    limit: AtomicUsize,
    exceeded: AtomicBool,
}

impl<S> ElementBudget<S> {
    /// `inner` with `limit` bytes per element.
    pub fn new(inner: S, limit: usize) -> Self {
        ElementBudget {
            inner,
            read: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            exceeded: AtomicBool::new(false),
        }
    }

    /// An element is complete: the next one starts with the whole budget.
    pub fn element_done(&self) {
        self.read.store(0, Ordering::Relaxed);
    }

    /// Changes the budget (after authentication, for example).
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Whether a read failed for lack of budget: the host answers `policy-violation`.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// The transport.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The transport, for a STARTTLS handshake.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ElementBudget<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.exceeded() {
            return Poll::Ready(Err(too_large()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        if this.read.fetch_add(n, Ordering::Relaxed) + n > this.limit.load(Ordering::Relaxed) {
            this.exceeded.store(true, Ordering::Relaxed);
            return Poll::Ready(Err(too_large()));
        }
        Poll::Ready(Ok(()))
    }
}

fn too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "element larger than its byte budget",
    )
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ElementBudget<S> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads within the budget pass; the first read beyond it fails, and so does every read
    /// after; a completed element resets the count.
    #[tokio::test]
    async fn reads_beyond_the_budget_fail() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut peer, io) = tokio::io::duplex(1024);
        let mut b = ElementBudget::new(io, 10);
        let mut buf = [0u8; 64];
        peer.write_all(b"0123456789").await.unwrap();
        assert_eq!(b.read(&mut buf).await.unwrap(), 10);
        b.element_done();
        peer.write_all(b"0123456789").await.unwrap();
        assert_eq!(b.read(&mut buf).await.unwrap(), 10);
        peer.write_all(b"x").await.unwrap();
        let e = b.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(b.exceeded());
        b.element_done();
        assert!(
            b.read(&mut buf).await.is_err(),
            "a spent budget stays spent"
        );
    }
}
