//! TLS resumption and 0-RTT runs, and a loopback delay relay to count round trips.
//!
//! `--resume`: every simulated client keeps its own TLS session store (as one real client
//! does), so its logins resume TLS; the FAST `<authenticate>` waits for the features (the
//! resumed 1-RTT login). `--zero-rtt`: the same, and the stream header and `<authenticate>` go
//! as TLS 1.3 early data (needs `--tls direct` and a host with `tls_early_data = true`); the
//! client sends `count`, one more per login (Z-3, Z-4).
//!
//! `--delay-ms D` routes every connection through a relay on 127.0.0.1 that holds each chunk
//! D ms in each direction, so a login's latency is about (round trips) x 2D: the report's
//! `round_trips` is the median latency divided by 2D, measured, not assumed.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Starts the delay relay in front of `target`; returns its address. It runs until the
/// process ends (the loadgen is short-lived) and only listens on loopback.
pub async fn start_delay_relay(target: SocketAddr, delay: Duration) -> Result<SocketAddr, String> {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("relay: {e}"))?;
    let addr = l.local_addr().map_err(|e| format!("relay: {e}"))?;
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::join!(delayed_copy(cr, sw, delay), delayed_copy(sr, cw, delay));
            });
        }
    });
    Ok(addr)
}

/// Copies `from` to `to`, each chunk `delay` after it arrived, in order (a link with latency,
/// not a throttle: chunks in flight overlap).
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, data)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    tokio::join!(reader, writer);
}
