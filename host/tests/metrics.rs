//! The metrics listener (`metrics_listen`) over real HTTP: a host on loopback, real logins
//! with the test client over TLS, `GET /metrics` with hyper's client, and the exposition
//! parsed strictly (every line must be a comment, a sample or the final `# EOF`).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use sasl2_fast_host::client::{Client, LoginOptions, Tls};
use sasl2_fast_host::harness::TestHost;
use sasl2_fast_host::{Host, HostConfig, HostError, Listeners};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TResult = Result<(), BoxError>;

const UA: &str = "5b0c2e1a-8a4f-4f57-9a38-2f7f1d6f0c11";
const EXPR: &str = "HT-SHA-256-EXPR";

async fn bounded(secs: u64, f: impl Future<Output = TResult>) -> TResult {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .map_err(|_| format!("test did not finish within {secs} s"))?
}

/// One sample: metric name and its labels, sorted.
type Series = (String, BTreeMap<String, String>);

/// A parsed exposition.
#[derive(Debug)]
struct Scrape(BTreeMap<Series, f64>);

impl Scrape {
    /// Parses OpenMetrics text strictly: `# HELP|TYPE|UNIT` lines, samples
    /// `name{k="v",...} value`, and `# EOF` as the last line; a duplicate series or anything
    /// else is an error.
    fn parse(text: &str) -> Result<Scrape, BoxError> {
        let mut samples = BTreeMap::new();
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        let (last, body) = lines.split_last().ok_or("empty exposition")?;
        if *last != "# EOF" {
            return Err(format!("last line {last:?} is not # EOF").into());
        }
        for line in body {
            if let Some(rest) = line.strip_prefix("# ") {
                let kind = rest.split(' ').next().unwrap_or("");
                if !matches!(kind, "HELP" | "TYPE" | "UNIT") {
                    return Err(format!("unknown comment {line:?}").into());
                }
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .ok_or_else(|| format!("no value in {line:?}"))?;
            let value: f64 = value
                .parse()
                .map_err(|_| format!("bad value in {line:?}"))?;
            let (name, labels) = match series.split_once('{') {
                None => (series, BTreeMap::new()),
                Some((name, rest)) => {
                    let inner = rest
                        .strip_suffix('}')
                        .ok_or_else(|| format!("unclosed labels in {line:?}"))?;
                    (
                        name,
                        parse_labels(inner).map_err(|e| format!("{e} in {line:?}"))?,
                    )
                }
            };
            let ok_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
            if !ok_name {
                return Err(format!("bad metric name in {line:?}").into());
            }
            if samples.insert((name.to_owned(), labels), value).is_some() {
                return Err(format!("duplicate series {line:?}").into());
            }
        }
        Ok(Scrape(samples))
    }

    /// The value of `name` with exactly `labels`; absent is an error.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64, BoxError> {
        let key = (
            name.to_owned(),
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self.0
            .get(&key)
            .copied()
            .ok_or_else(|| format!("no series {name}{labels:?}").into())
    }

    /// Every series of `name`.
    fn series(&self, name: &str) -> impl Iterator<Item = (&BTreeMap<String, String>, f64)> {
        self.0
            .iter()
            .filter(move |((n, _), _)| n == name)
            .map(|((_, l), v)| (l, *v))
    }

    /// `self - before` for every series of `name`; series that did not move are left out.
    fn moved(&self, before: &Scrape, name: &str) -> BTreeMap<String, f64> {
        self.series(name)
            .filter_map(|(labels, v)| {
                let b = before
                    .0
                    .get(&(name.to_owned(), labels.clone()))
                    .copied()
                    .unwrap_or(0.0);
                let key = labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                (v != b).then_some((key, v - b))
            })
            .collect()
    }
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").ok_or("label without =\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => return Err("bad escape".into()),
                },
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        if out.insert(key.to_owned(), value).is_some() {
            return Err("duplicate label".into());
        }
        rest = &after[end + 1..];
        rest = match rest.strip_prefix(',') {
            Some(r) => r,
            None if rest.is_empty() => rest,
            None => return Err("junk after a label".into()),
        };
    }
    Ok(out)
}

/// One HTTP/1.1 request over a fresh TCP connection: status, content type, body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> Result<(u16, Option<String>, String), BoxError> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    let driver = tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .map(|v| v.to_str().map(str::to_owned))
        .transpose()?;
    let body = resp.into_body().collect().await?.to_bytes();
    drop(sender);
    let _ = driver.await;
    Ok((status, ctype, String::from_utf8(body.to_vec())?))
}

async fn scrape(host: &Host) -> Result<Scrape, BoxError> {
    let addr = host.metrics_addr().ok_or("no metrics listener")?;
    let (status, ctype, body) = http(addr, "GET", "/metrics").await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ctype.as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    Scrape::parse(&body)
}

fn metrics_config() -> HostConfig {
    let mut config = TestHost::config();
    config.server.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config
}

fn connections(s: &Scrape, state: &str, tls: &str) -> Result<f64, BoxError> {
    s.get(
        "sasl2_fast_host_connections",
        &[("state", state), ("tls", tls)],
    )
}

/// Scrapes until the connection gauges add up to `n` (connection tasks end asynchronously).
async fn wait_for_open(host: &Host, n: f64) -> TResult {
    let mut open = f64::NAN;
    for _ in 0..100 {
        let s = scrape(host).await?;
        open = s
            .series("sasl2_fast_host_connections")
            .map(|(_, v)| v)
            .sum();
        if open == n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{open} connections counted, expected {n}").into())
}

fn map(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test]
async fn logins_fast_events_store_latency_and_connections_are_scraped() -> TResult {
    bounded(120, async {
        let t = TestHost::start(metrics_config()).await?;
        let addr = t.host.metrics_addr().ok_or("no metrics listener")?;
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
        let s0 = scrape(&t.host).await?;
        for state in ["pre_auth", "authenticated", "bound"] {
            for tls in ["false", "true"] {
                assert_eq!(connections(&s0, state, tls)?, 0.0, "{state} {tls}");
            }
        }

        // 1. A password login (SCRAM-SHA-256-PLUS over STARTTLS) that requests a token.
        let mut c1 = t.connect(Tls::StartTls, Some("alice@localhost")).await?;
        // Every mechanism a stream offers has a label of its own (no drift between the
        // host's mechanisms and the metric's label set).
        let logins = s0
            .series("sasl2_fast_host_logins_total")
            .collect::<Vec<_>>();
        for m in c1.mechanisms().into_iter().chain(c1.fast_mechanisms()) {
            assert!(
                logins.iter().any(|(l, _)| l.get("mechanism") == Some(&m)),
                "no label for {m}"
            );
        }
        let token = c1
            .login_scram(
                "alice",
                "alicepass",
                "SCRAM-SHA-256-PLUS",
                &LoginOptions::agent(UA).request_token(EXPR),
            )
            .await?
            .into_success()?
            .token
            .ok_or("no token issued")?
            .token;
        let s1 = scrape(&t.host).await?;
        assert_eq!(connections(&s1, "authenticated", "true")?, 1.0);
        c1.bind(Some("metrics")).await?;
        let s1 = scrape(&t.host).await?;
        assert_eq!(connections(&s1, "authenticated", "true")?, 0.0);
        assert_eq!(connections(&s1, "bound", "true")?, 1.0);
        // Closed before the FAST login: a session of the same client would replace it
        // (conflict), asynchronously.
        c1.close().await?;
        wait_for_open(&t.host, 0.0).await?;

        // 2. A FAST login with the token (count 5), binding a resource with Bind 2.
        let mut c2 = t.connect(Tls::Direct, Some("alice@localhost")).await?;
        c2.login_fast(
            "alice",
            &token,
            EXPR,
            &LoginOptions::agent(UA).count(5).bind("m"),
        )
        .await?
        .into_success()?;

        // 3. The same count again: a replay (F-14), then a wrong password on the same
        //    stream (a FAST failure allows a password retry).
        let mut c3 = t.connect(Tls::StartTls, Some("alice@localhost")).await?;
        let f = c3
            .login_fast("alice", &token, EXPR, &LoginOptions::agent(UA).count(5))
            .await?
            .into_failure()?;
        assert_eq!(f.condition, "not-authorized");
        let f = c3
            .login_scram("alice", "wrong", "SCRAM-SHA-256", &LoginOptions::agent(UA))
            .await?
            .into_failure()?;
        assert_eq!(f.condition, "not-authorized");

        // 4. A connection that stays unauthenticated, without TLS.
        let c4 = t.connect(Tls::None, Some("alice@localhost")).await?;

        let s2 = scrape(&t.host).await?;
        assert_eq!(
            s2.moved(&s0, "sasl2_fast_host_logins_total"),
            map(&[
                ("mechanism=SCRAM-SHA-256-PLUS,result=success", 1.0),
                ("mechanism=HT-SHA-256-EXPR,result=success", 1.0),
                ("mechanism=HT-SHA-256-EXPR,result=failure", 1.0),
                ("mechanism=SCRAM-SHA-256,result=failure", 1.0),
            ])
        );
        assert_eq!(
            s2.moved(&s0, "sasl2_fast_host_login_failures_total"),
            map(&[("condition=not-authorized", 2.0)])
        );
        assert_eq!(
            s2.moved(&s0, "sasl2_fast_rejected_total"),
            map(&[("reason=replay", 1.0)])
        );
        // The wrong password is a rejected check; the FAST replay is not a password login.
        assert_eq!(
            s2.moved(&s0, "sasl2_fast_host_password_failures_total"),
            map(&[("reason=rejected", 1.0)])
        );
        let events = s2.moved(&s0, "sasl2_fast_token_events_total");
        assert_eq!(events.get("event=issued"), Some(&1.0), "{events:?}");
        assert_eq!(events.get("event=used"), Some(&1.0), "{events:?}");
        for quiet in ["rotated", "invalidated", "revoked", "expired"] {
            assert_eq!(events.get(&format!("event={quiet}")), None, "{events:?}");
        }
        // One latency observation per successful login, by kind; sums are real durations.
        let h = "sasl2_fast_host_login_duration_seconds";
        assert_eq!(
            s2.moved(&s0, &format!("{h}_count")),
            map(&[("kind=fast", 1.0), ("kind=password", 1.0)])
        );
        for kind in ["fast", "password"] {
            let sum = s2.get(&format!("{h}_sum"), &[("kind", kind)])?;
            assert!(sum > 0.0 && sum < 60.0, "{kind}: {sum}");
            let inf = s2.get(&format!("{h}_bucket"), &[("kind", kind), ("le", "+Inf")])?;
            assert_eq!(inf, 1.0, "{kind}");
        }
        // The store: one read per FAST attempt (verify reads once, protocol.md), durable
        // writes for the issued token and the used one, no errors.
        let store = "sasl2_fast_store_operation_duration_seconds_count";
        let ops = s2.moved(&s0, store);
        assert_eq!(ops.get("operation=get_for_login"), Some(&2.0), "{ops:?}");
        assert!(
            ops.get("operation=compare_and_swap")
                .is_some_and(|n| *n >= 1.0),
            "{ops:?}"
        );
        assert!(
            s2.series("sasl2_fast_store_errors_total")
                .all(|(_, v)| v == 0.0),
            "store errors"
        );
        assert_eq!(connections(&s2, "bound", "true")?, 1.0);
        // c3 failed twice and stays unauthenticated, over TLS; c4 without.
        assert_eq!(connections(&s2, "pre_auth", "true")?, 1.0);
        assert_eq!(connections(&s2, "pre_auth", "false")?, 1.0);
        // No account, user agent or address became a label value.
        let text = http(addr, "GET", "/metrics").await?.2;
        for secret in ["alice", UA, "127.0.0.1", "localhost"] {
            assert!(!text.contains(secret), "{secret} in the exposition");
        }

        // 5. Disconnect: every connection gauge goes back to 0.
        for mut c in [c2, c3] {
            c.close().await?;
        }
        drop::<Client>(c4);
        wait_for_open(&t.host, 0.0).await?;
        t.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn only_get_metrics_is_served() -> TResult {
    bounded(30, async {
        let t = TestHost::start(metrics_config()).await?;
        let addr = t.host.metrics_addr().ok_or("no metrics listener")?;
        for path in [
            "/",
            "/metrics/",
            "/metricsx",
            "/favicon.ico",
            "/metrics/../x",
        ] {
            let (status, _, _) = http(addr, "GET", path).await?;
            assert_eq!(status, 404, "{path}");
        }
        let (status, _, _) = http(addr, "POST", "/metrics").await?;
        assert_eq!(status, 405);
        let (status, _, body) = http(addr, "GET", "/metrics?x=1").await?;
        assert_eq!(status, 200);
        assert!(body.ends_with("# EOF\n"));
        // A request head larger than the listener accepts is refused, not buffered.
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        let driver = tokio::spawn(conn);
        let req = hyper::Request::builder()
            .uri("/metrics")
            .header("x-padding", "a".repeat(64 * 1024))
            .body(Empty::<Bytes>::new())?;
        // Closed without an answer (an error here) is refused as well.
        if let Ok(resp) = sender.send_request(req).await {
            assert_eq!(resp.status().as_u16(), 431, "oversized head accepted");
        }
        let _ = driver.await;
        t.shutdown().await;
        // After shutdown the port is closed.
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn metrics_listen_must_be_loopback() -> TResult {
    bounded(30, async {
        // At config load: the error names the key.
        let e = HostConfig::from_toml_str(
            "[server]\ndomain = \"localhost\"\nlisten = \"127.0.0.1:5222\"\ndata_dir = \"d\"\nmetrics_listen = \"0.0.0.0:9100\"\n",
            std::path::Path::new("."),
        )
        .err()
        .ok_or("a wildcard metrics_listen was accepted")?;
        assert_eq!(e.key, "server.metrics_listen", "{e}");
        assert!(e.message.contains("not a loopback address"), "{e}");
        // A typed config (which skips the TOML checks) is refused by Host::start too.
        let dir = tempfile::tempdir()?;
        let mut config = TestHost::config();
        config.server.data_dir = dir.path().join("data");
        config.server.metrics_listen = Some("0.0.0.0:0".parse()?);
        let listeners = Listeners::loopback(false).await?;
        match Host::start(listeners, config).await {
            Err(HostError::Metrics(e)) => {
                assert!(e.to_string().contains("server.metrics_listen"), "{e}")
            }
            other => return Err(format!("expected a metrics error, got {other:?}").into()),
        }
        // Without `metrics_listen` there is no listener.
        let t = TestHost::start(TestHost::config()).await?;
        assert_eq!(t.host.metrics_addr(), None);
        t.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_host_binary_serves_metrics_listen_from_its_config_file() -> TResult {
    bounded(60, async {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("host.toml");
        std::fs::write(
            &config,
            "[server]\ndomain = \"localhost\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
             metrics_listen = \"127.0.0.1:0\"\n[accounts]\nalice = \"alicepass\"\n\
             [plugins.fast]\nenabled = true\n",
        )?;
        let host = sasl2_fast_host::harness::HostProcess::start(
            std::path::Path::new(env!("CARGO_BIN_EXE_host")),
            &config,
            Some("warn"),
        )?;
        // The bound address (port 0 resolved) is on stdout for scripts and tests.
        let mut addr = None;
        for _ in 0..100 {
            addr = host
                .stdout_lines()
                .iter()
                .find_map(|l| l.strip_prefix("metrics listening on ").map(str::to_owned));
            if addr.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let addr: SocketAddr = addr.ok_or("no `metrics listening on` line")?.parse()?;
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
        let (status, _, body) = http(addr, "GET", "/metrics").await?;
        assert_eq!(status, 200);
        let s = Scrape::parse(&body)?;
        assert_eq!(
            s.get("sasl2_fast_rejected_total", &[("reason", "replay")])?,
            0.0
        );
        let status = host.stop()?;
        assert!(status.success(), "{status}");
        Ok(())
    })
    .await
}

/// Held-back password logins are counted apart from checked ones
/// (`sasl2_fast_host_password_failures_total{reason}`), and so are requests that never reached
/// a check.
#[tokio::test]
async fn held_back_logins_are_counted_by_reason() -> TResult {
    bounded(120, async {
        let mut config = metrics_config();
        config.server.login_throttle_failures = 1;
        let t = TestHost::start(config).await?;
        let s0 = scrape(&t.host).await?;
        for _ in 0..2 {
            let mut c = t.connect(Tls::StartTls, None).await?;
            c.login_plain("alice", "guess", &LoginOptions::agent(UA))
                .await?
                .into_failure()?;
        }
        let mut c = t.connect(Tls::StartTls, None).await?;
        c.send(&"<abort xmlns='urn:xmpp:sasl:2'/>".parse()?).await?;
        c.recv().await?;
        let s1 = scrape(&t.host).await?;
        assert_eq!(
            s1.moved(&s0, "sasl2_fast_host_password_failures_total"),
            map(&[
                ("reason=rejected", 1.0),
                ("reason=held", 1.0),
                ("reason=aborted", 1.0)
            ])
        );
        t.shutdown().await;
        Ok(())
    })
    .await
}
