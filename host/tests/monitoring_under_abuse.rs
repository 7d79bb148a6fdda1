//! Monitoring and administration under abuse (issue 23 item 7): with 100 idle or trickling
//! connections open to the metrics listener, a scrape still answers within 1 s; with 100
//! idle connections open to the admin socket, `host ctl stats` (and a raw request) still
//! answers within 1 s. Admin requests refuse unknown fields, and `passwd` refuses a password
//! longer than 1024 bytes, over the socket and through `host ctl`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use sasl2_fast_host::client::{LoginOptions, Tls};
use sasl2_fast_host::harness::{TestHost, host_command};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UnixStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TResult = Result<(), BoxError>;

const HOST: &str = env!("CARGO_BIN_EXE_host");
/// The longest password `passwd` takes (docs/operations.md).
const MAX_PASSWORD_BYTES: usize = 1024;

async fn bounded(secs: u64, f: impl Future<Output = TResult>) -> TResult {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .map_err(|_| format!("test did not finish within {secs} s"))?
}

/// `GET /metrics` over a fresh connection, answered within `within`: the status and body.
async fn scrape(addr: SocketAddr, within: Duration) -> Result<(u16, String), BoxError> {
    let get = async {
        let tcp = TcpStream::connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        let driver = tokio::spawn(conn);
        let req = hyper::Request::builder()
            .uri("/metrics")
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        drop(sender);
        let _ = driver.await;
        Ok::<_, BoxError>((status, String::from_utf8(body.to_vec())?))
    };
    tokio::time::timeout(within, get)
        .await
        .map_err(|_| format!("no answer within {within:?}"))?
}

/// Opens `n` connections with `open`; every third one trickles a byte of a request head
/// every 100 ms (until it is closed or the test ends), the others stay idle.
async fn crowd<S>(
    n: usize,
    open: impl AsyncFn() -> std::io::Result<S>,
) -> Vec<tokio::task::JoinHandle<()>>
where
    S: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = open().await.expect("connect");
        held.push(tokio::spawn(async move {
            if i % 3 == 0 {
                for b in b"GET /metrics HTTP/1.1\r\nx-slow: "
                    .iter()
                    .cycle()
                    .take(600)
                {
                    if s.write_all(&[*b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            std::future::pending::<()>().await;
            drop(s);
        }));
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_answers_within_1s_with_100_idle_connections_open() -> TResult {
    bounded(60, async {
        let mut config = TestHost::config();
        config.server.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        let t = TestHost::start(config).await?;
        let addr = t.host.metrics_addr().ok_or("no metrics listener")?;
        let crowd = crowd(100, async || TcpStream::connect(addr).await).await;
        for i in 0..5 {
            let start = Instant::now();
            let (status, body) = scrape(addr, Duration::from_secs(1))
                .await
                .map_err(|e| format!("scrape {i} with 100 connections open: {e}"))?;
            assert_eq!(status, 200, "{body}");
            assert!(body.ends_with("# EOF\n"), "{body}");
            println!("scrape {i}: {:?}", start.elapsed());
        }
        for h in crowd {
            h.abort();
        }
        t.shutdown().await;
        Ok(())
    })
    .await
}

/// A `ctl` config naming the running host's `data_dir` (all `ctl` reads from it).
fn ctl_config(t: &TestHost) -> PathBuf {
    let path = t.dir().join("ctl.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\ndomain = \"localhost\"\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n\
             [accounts]\nalice = \"alicepass\"\n[plugins.fast]\nenabled = true\n",
            t.data_dir().display().to_string()
        ),
    )
    .unwrap();
    path
}

/// `host ctl --config cfg --timeout 1 ARGS...` with `stdin`.
fn ctl(cfg: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let args: Vec<&str> = ["--timeout", "1"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    host_command(Path::new(HOST), "ctl", cfg, &args, stdin).unwrap()
}

/// One raw request line on the admin socket and the host's JSON answer, within `within`.
async fn admin(data_dir: &Path, line: &[u8], within: Duration) -> Result<Value, BoxError> {
    let ask = async {
        let mut s = UnixStream::connect(data_dir.join("admin.sock")).await?;
        s.write_all(line).await?;
        s.write_all(b"\n").await?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await?;
        Ok::<_, BoxError>(serde_json::from_slice(&answer)?)
    };
    tokio::time::timeout(within, ask)
        .await
        .map_err(|_| format!("no answer within {within:?}"))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_stats_answers_within_1s_with_100_idle_admin_connections_open() -> TResult {
    bounded(60, async {
        let t = TestHost::start(TestHost::config()).await?;
        let sock = t.data_dir().join("admin.sock");
        let crowd = crowd(100, async || UnixStream::connect(&sock).await).await;
        let data_dir = t.data_dir();
        for i in 0..3 {
            let v = admin(&data_dir, br#"{"command":"stats"}"#, Duration::from_secs(1))
                .await
                .map_err(|e| format!("stats {i} with 100 connections open: {e}"))?;
            assert_eq!(v["status"], "ok", "{v}");
            assert_eq!(v["reply"]["running"], true, "{v}");
        }
        let cfg = ctl_config(&t);
        let o = tokio::task::spawn_blocking(move || ctl(&cfg, &["stats", "--json"], b"")).await?;
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "host ctl stats: {err}");
        let v: Value = serde_json::from_slice(&o.stdout)?;
        assert_eq!(v["running"], true, "{v}");
        for h in crowd {
            h.abort();
        }
        t.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requests_refuse_unknown_fields() -> TResult {
    bounded(30, async {
        let t = TestHost::start(TestHost::config()).await?;
        let d = t.data_dir();
        let within = Duration::from_secs(5);
        let v = admin(&d, br#"{"command":"stats"}"#, within).await?;
        assert_eq!(v["status"], "ok", "{v}");
        for line in [
            &br#"{"command":"stats","x":1}"#[..],
            br#"{"command":"clients","user":"alice","x":1}"#,
            br#"{"command":"revoke-before","before_ms":1,"x":1}"#,
        ] {
            let v = admin(&d, line, within).await?;
            let shown = String::from_utf8_lossy(line);
            assert_eq!(v["status"], "error", "{shown}: {v}");
            let m = v["message"].as_str().unwrap_or_default();
            assert!(m.contains("unknown field"), "{shown}: {m}");
        }
        t.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwd_refuses_a_password_over_1024_bytes() -> TResult {
    bounded(60, async {
        let t = TestHost::start(TestHost::config()).await?;
        let d = t.data_dir();
        let within = Duration::from_secs(10);
        // Over the socket: the host checks, whatever the client.
        let huge = "a".repeat(900 * 1024);
        let line = serde_json::json!({"command": "passwd", "user": "alice", "password": huge});
        let v = admin(&d, line.to_string().as_bytes(), within).await?;
        assert_eq!(v["status"], "error", "{v}");
        let m = v["message"].as_str().unwrap_or_default();
        assert!(m.contains("1024 bytes"), "{m}");

        // Through `host ctl`: 1025 bytes refused, exit 1; 1024 accepted.
        let cfg = ctl_config(&t);
        let over = format!("{}\n", "b".repeat(MAX_PASSWORD_BYTES + 1));
        let c = cfg.clone();
        let o = tokio::task::spawn_blocking(move || ctl(&c, &["passwd", "alice"], over.as_bytes()))
            .await?;
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("1024 bytes"), "{err}");

        // The password is unchanged: alice still logs in with it.
        let mut c = t.connect(Tls::StartTls, Some("alice@localhost")).await?;
        c.login_scram(
            "alice",
            "alicepass",
            "SCRAM-SHA-256",
            &LoginOptions::default(),
        )
        .await?
        .into_success()?;

        let longest = "c".repeat(MAX_PASSWORD_BYTES);
        let input = format!("{longest}\n");
        let o =
            tokio::task::spawn_blocking(move || ctl(&cfg, &["passwd", "alice"], input.as_bytes()))
                .await?;
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        let mut c = t.connect(Tls::StartTls, Some("alice@localhost")).await?;
        c.login_plain("alice", &longest, &LoginOptions::default())
            .await?
            .into_success()?;
        t.shutdown().await;
        Ok(())
    })
    .await
}
