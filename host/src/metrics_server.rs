//! The metrics listener (`metrics_listen`): `GET /metrics` in the OpenMetrics text format
//! over hyper's HTTP/1 server, on a loopback address only.
//!
//! Whoever reaches the port can read login rates and connection counts, so it is bound to
//! loopback (config load refuses anything else; [`MetricsServer::bind`] checks again for
//! typed configs) and kept cheap to abuse: one path, small request heads, a header read
//! timeout, one request per connection, a whole-connection deadline and a cap on
//! concurrent connections. At the cap a new connection takes the slot of the oldest one that
//! has not sent its request ([`crate::request_slots`]), so idle or trickling connections
//! cannot keep a scrape out.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::metrics::HostMetrics;
use crate::request_slots::{Admission, RequestSlots};

/// The OpenMetrics text content type (what prometheus-client's text encoder writes).
const CONTENT_TYPE_OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Concurrent scrape connections; a Prometheus server uses one.
const MAX_CONNECTIONS: usize = 16;
/// Time a client has to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time one connection may live, request and response included (Prometheus' default scrape
/// timeout is 10 s): what a connection whose request was read can hold its slot.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head: a scrape sends a few hundred bytes.
const MAX_HEADER_BYTES: usize = 8 * 1024;

/// The metrics listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsServerError {
    /// Only loopback addresses are served.
    #[error(
        "server.metrics_listen: {0} is not a loopback address (the metrics listener serves 127.0.0.0/8 or ::1 only)"
    )]
    NotLoopback(SocketAddr),
    /// The address could not be bound.
    #[error("cannot listen on {addr} for metrics: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// Refuses a non-loopback `metrics_listen` (what config load checks, for typed configs).
pub fn check_loopback(addr: SocketAddr) -> Result<(), MetricsServerError> {
    match addr.ip().is_loopback() {
        true => Ok(()),
        false => Err(MetricsServerError::NotLoopback(addr)),
    }
}

/// A running metrics listener.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `addr` (loopback only) and serves `metrics` until `shutdown` becomes `true`.
    pub async fn bind(
        addr: SocketAddr,
        metrics: Arc<HostMetrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<MetricsServer, MetricsServerError> {
        check_loopback(addr)?;
        let bind_err = |source| MetricsServerError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        let task = tokio::spawn(accept_loop(listener, metrics, shutdown));
        Ok(MetricsServer { local_addr, task })
    }

    /// The address it listens on (the port the OS chose for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits for the accept loop to end (after shutdown was signalled); scrapes in flight are
    /// aborted with their tasks by the runtime or finish within [`CONNECTION_TIMEOUT`].
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    metrics: Arc<HostMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut slots = RequestSlots::new(MAX_CONNECTIONS);
    while let Some((tcp, peer)) =
        crate::accept::next_connection(&listener, &mut shutdown, "metrics").await
    {
        let metrics = metrics.clone();
        let mut shutdown = shutdown.clone();
        let admission = slots.spawn(move |started| async move {
            let service = hyper::service::service_fn(move |req| {
                // The request head is read: this connection keeps its slot.
                started.mark();
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .max_headers(32)
                // One request per connection: a slow or idle client cannot keep it open.
                .keep_alive(false)
                .serve_connection(TokioIo::new(tcp), service);
            tokio::select! {
                r = tokio::time::timeout(CONNECTION_TIMEOUT, conn) => match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => debug!(%peer, error = %e, "metrics connection failed"),
                    Err(_) => debug!(%peer, "metrics connection timed out"),
                },
                _ = shutdown.changed() => {}
            }
        });
        match admission {
            Admission::Free => {}
            Admission::Evicted => {
                debug!(%peer, "metrics connections at the limit: closed the oldest idle one");
            }
            Admission::Full => debug!(%peer, "every metrics connection is serving, closing"),
        }
    }
}

/// The answer to one request: the exposition for `GET /metrics` (and `HEAD`), 405 for other
/// methods there, 404 for any other path. The request body is never read.
fn respond(req: &Request<Incoming>, metrics: &HostMetrics) -> Response<Full<Bytes>> {
    let status = |code: StatusCode, text: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *r.status_mut() = code;
        r
    };
    if req.uri().path() != "/metrics" {
        return status(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = status(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = Response::new(Full::new(Bytes::from(metrics.encode())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_OPENMETRICS),
    );
    r
}
