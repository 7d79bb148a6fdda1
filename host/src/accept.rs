//! The one accept step every listener of the host uses (the XMPP ports, the metrics listener,
//! the admin socket): the next connection, or `None` once the host stops.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tracing::warn;

/// How long to pause after a failed accept (e.g. out of file descriptors): the error repeats
/// at once, and retrying without a pause would spin a core while nothing can be served.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A listening socket.
pub trait Listener {
    /// An accepted connection and what is known of its peer.
    type Connection;
    /// The next connection.
    fn accept_one(&self) -> impl Future<Output = io::Result<Self::Connection>> + Send;
}

impl Listener for TcpListener {
    type Connection = (TcpStream, std::net::SocketAddr);
    fn accept_one(&self) -> impl Future<Output = io::Result<Self::Connection>> + Send {
        self.accept()
    }
}

impl Listener for UnixListener {
    type Connection = UnixStream;
    async fn accept_one(&self) -> io::Result<UnixStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// The next connection on `listener`, or `None` once `stop` changes (shutdown). A failed
/// accept is logged (naming `what`) and retried after [`ACCEPT_BACKOFF`].
pub async fn next_connection<L: Listener>(
    listener: &L,
    stop: &mut watch::Receiver<bool>,
    what: &'static str,
) -> Option<L::Connection> {
    loop {
        if *stop.borrow() {
            return None;
        }
        let accepted = tokio::select! {
            r = listener.accept_one() => r,
            _ = stop.changed() => return None,
        };
        match accepted {
            Ok(c) => return Some(c),
            Err(e) => {
                warn!(error = %e, listener = what, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
