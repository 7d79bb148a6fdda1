//! The byte rate of a connection that has not authenticated yet
//! (`max_unauthenticated_bytes_per_s`).
//!
//! Why: parsing costs little per byte, but not nothing. Unshaped, one connection sending
//! whitespace before login made the host read 289 MB/s with 126 % of a core, and 64 of them
//! from one address (the per-address maximum) took both cores and raised another client's
//! login median from 0.6 ms to about 100 ms (issue 23). Such a peer is a stranger: nothing
//! it sends before authenticating needs more than a few KiB.
//!
//! How: a token bucket counts the bytes read from the socket (TLS records included: the
//! handshake, 0-RTT data and every record after it). When the bucket is empty the socket is
//! not read until enough has refilled, so the peer's bytes wait in the kernel's socket
//! buffers and then, by TCP flow control, in the peer's own: the host never buffers more for
//! a fast sender. The bucket starts full with [`BURST_BYTES`], which holds a whole login
//! several times over (TLS handshake, stream headers, SASL2 with user agent, Bind 2 and a
//! token request: 0.9 to 1.5 KiB measured, `host/tests/pre_auth_shaping.rs`), so logins are
//! never slowed. Authentication ends the shaping.

use std::future::Future as _;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// What the bucket holds (the burst): 16 KiB, ten times the largest login measured (room for
/// a post-quantum key share, 1.2 KB more in a ClientHello, a client certificate, a retry),
/// and the default `max_unauthenticated_stanza_bytes`. A rate above it per second gets a
/// bucket of one second's worth instead.
pub const BURST_BYTES: u32 = 16 * 1024;

/// Once the bucket is empty, a read waits until this much has refilled (or the whole bucket,
/// if smaller): a flooding peer is read in a few larger pieces per second, not byte by byte,
/// which would cost a wakeup per byte.
const RESUME_BYTES: f64 = 1024.0;

/// Bytes a peer may send: `rate` per second, at most `capacity` at once.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    refilled: Instant,
    /// The wait for the bucket to refill; allocated at the first wait, reset afterwards.
    wake: Option<Pin<Box<Sleep>>>,
    /// Reading waited for the bucket since the last read.
    waited: bool,
}

impl Bucket {
    /// A full bucket for `rate` bytes per second (> 0).
    fn new(rate: u32, now: Instant) -> Self {
        let rate = f64::from(rate);
        let capacity = rate.max(f64::from(BURST_BYTES));
        Bucket {
            rate,
            capacity,
            tokens: capacity,
            refilled: now,
            wake: None,
            waited: false,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.refilled = now;
    }

    /// How many bytes may be read at `now`, or when the next read may start.
    fn allowance(&mut self, now: Instant) -> Result<usize, Instant> {
        self.refill(now);
        if self.tokens >= 1.0 {
            // Truncation is intended: whole bytes only.
            return Ok(self.tokens as usize);
        }
        let want = RESUME_BYTES.min(self.capacity) - self.tokens;
        Err(now + Duration::from_secs_f64(want / self.rate))
    }

    fn spend(&mut self, n: usize) {
        self.tokens -= n as f64;
    }

    /// Ready with the bytes that may be read now (at least 1); pending, with a timer
    /// registered to wake `cx`, while the bucket refills.
    fn poll_allowance(&mut self, cx: &mut Context<'_>) -> Poll<usize> {
        loop {
            let until = match self.allowance(Instant::now()) {
                Ok(n) => return Poll::Ready(n),
                Err(until) => until,
            };
            let wake = match &mut self.wake {
                Some(w) => {
                    w.as_mut().reset(until);
                    w
                }
                None => self.wake.insert(Box::pin(tokio::time::sleep_until(until))),
            };
            self.waited = true;
            ready!(wake.as_mut().poll(cx));
        }
    }
}

/// A TCP socket whose reads are shaped by a token bucket until [`ShapedTcp::end_shaping`];
/// writes pass through.
#[derive(Debug)]
pub struct ShapedTcp {
    tcp: TcpStream,
    bucket: Option<Bucket>,
}

impl ShapedTcp {
    /// `tcp` read at most `bytes_per_s` (after a full bucket); 0 = not shaped.
    pub fn new(tcp: TcpStream, bytes_per_s: u32) -> Self {
        let bucket = (bytes_per_s > 0).then(|| Bucket::new(bytes_per_s, Instant::now()));
        ShapedTcp { tcp, bucket }
    }

    /// Reads are no longer shaped (the connection authenticated).
    pub fn end_shaping(&mut self) {
        self.bucket = None;
    }

    /// `TcpStream::try_write`: a non-blocking write.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.try_write(buf)
    }
}

impl From<TcpStream> for ShapedTcp {
    /// Not shaped.
    fn from(tcp: TcpStream) -> Self {
        ShapedTcp::new(tcp, 0)
    }
}

// The `poll_read` shape below is shared with `transport::HandshakeSocket` only as tokio's
// trait signature and the `get_mut` of an `Unpin` wrapper: what each does with the read (a
// token bucket here, releasing held writes there) is its own.
impl AsyncRead for ShapedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(bucket) = this.bucket.as_mut() else {
            return Pin::new(&mut this.tcp).poll_read(cx, buf);
        };
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let allowed = ready!(bucket.poll_allowance(cx)).min(buf.remaining());
        if std::mem::take(&mut bucket.waited)
            && let Some(e) = this.tcp.take_error()?
        {
            // Reset by the peer while paused: Linux still lets us read what it had received
            // (up to the receive buffer, 128 KiB by default: half a minute at 4096 B/s), and
            // the connection would hold its unauthenticated slot until then. It is dead now.
            return Poll::Ready(Err(e));
        }
        // At most `allowed` bytes leave the kernel; the rest stay in its socket buffer.
        loop {
            ready!(this.tcp.poll_read_ready(cx))?;
            match this.tcp.try_read(buf.initialize_unfilled_to(allowed)) {
                Ok(n) => {
                    buf.advance(n);
                    bucket.spend(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for ShapedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_full_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(4096, t0);
        assert_eq!(b.allowance(t0), Ok(16 * 1024), "starts full");
        b.spend(16 * 1024);
        // Empty: the next read waits until RESUME_BYTES refilled (1024 B at 4096 B/s).
        assert_eq!(b.allowance(t0), Err(t0 + 250 * MS));
        assert_eq!(b.allowance(t0 + 250 * MS), Ok(1024));
        b.spend(1024);
        // Half a second refills 2 KiB; ten minutes no more than the burst.
        assert_eq!(b.allowance(t0 + 750 * MS), Ok(2048));
        assert_eq!(
            b.allowance(t0 + Duration::from_secs(600)),
            Ok(16 * 1024),
            "never more than the burst"
        );
    }

    #[test]
    fn what_is_read_in_a_window_is_at_most_burst_plus_rate_times_window() {
        // A peer that reads whenever allowed, as a flood makes the host do: over 10 s at
        // 4096 B/s it gets the burst plus 40 960 bytes, not more.
        let t0 = Instant::now();
        let mut b = Bucket::new(4096, t0);
        let (mut now, mut read) = (t0, 0usize);
        while now < t0 + Duration::from_secs(10) {
            match b.allowance(now) {
                Ok(n) => {
                    b.spend(n);
                    read += n;
                }
                Err(until) => now = until,
            }
        }
        let limit = 16 * 1024 + 4096 * 10;
        assert!(read <= limit + 1024, "{read} > {limit}");
        assert!(read >= limit - 1024, "{read}: the rate is not granted");
    }

    #[test]
    fn a_rate_above_the_burst_gets_one_second_of_bucket() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100_000, t0);
        assert_eq!(b.allowance(t0), Ok(100_000));
    }
}
