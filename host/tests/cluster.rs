//! A cluster: two `host` processes on different ports, one throwaway PostgreSQL, one pepper
//! file (issue 10 item 4). Every client talks to the hosts over real TLS; the hosts share
//! nothing but the database and the pepper.
//!
//! Without PostgreSQL's server binaries these tests fail with an install hint (Debian's
//! `postgresql` package); `.ci/run` installs it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sasl2_fast::store::test_kit::TestPostgres;
use sasl2_fast_host::client::{Client, ConnectOptions, LoginOptions, Outcome, Tls};
use sasl2_fast_host::harness::{HostProcess, host_passwd};

const HOST: &str = env!("CARGO_BIN_EXE_host");
const MECH: &str = "HT-SHA-256-EXPR";

/// One `host` process and the certificate its clients trust.
struct Node {
    process: HostProcess,
    addr: SocketAddr,
    cert: PathBuf,
}

impl Node {
    fn start(config: &Path, data_dir: &Path, rust_log: &str) -> Node {
        let process = HostProcess::start(Path::new(HOST), config, Some(rust_log))
            .unwrap_or_else(|e| panic!("{e}"));
        Node {
            addr: process.addr(),
            process,
            cert: data_dir.join("tls/cert.pem"),
        }
    }

    async fn client(&self) -> Client {
        let opts = ConnectOptions::localhost(self.addr, Tls::StartTls, &self.cert, None).unwrap();
        Client::connect(opts).await.unwrap()
    }

    /// A password login of alice that asks for a token; the token.
    async fn issue(&self, ua: &str, password: &str) -> String {
        let mut c = self.client().await;
        let opts = LoginOptions::agent(ua).request_token(MECH);
        let s = c
            .login_scram("alice", password, "SCRAM-SHA-256-PLUS", &opts)
            .await
            .unwrap()
            .into_success()
            .unwrap();
        s.token.expect("a token").token
    }

    /// A FAST login of alice with `token` (the user agent is in `opts`).
    async fn fast(&self, token: &str, opts: LoginOptions) -> Outcome {
        let mut c = self.client().await;
        c.login_fast("alice", token, MECH, &opts).await.unwrap()
    }

    fn kill9(&mut self) {
        self.process.kill9();
    }

    fn log(&self) -> String {
        self.process.log()
    }
}

fn succeeded(o: &Outcome) -> bool {
    matches!(o, Outcome::Success(_))
}

fn condition(o: &Outcome) -> String {
    match o {
        Outcome::Success(_) => "success".into(),
        Outcome::Failure(f) => f.condition.clone(),
    }
}

/// Two hosts' configs on one database and one pepper file.
struct Cluster {
    pg: TestPostgres,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new() -> Cluster {
        let pg = TestPostgres::start().unwrap_or_else(|e| panic!("{e}"));
        Cluster {
            pg,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The config of host `name` (data in `data-<name>`), FAST on PostgreSQL, `extra` lines
    /// appended to `[plugins.fast]`.
    fn config(&self, name: &str, url: &str, extra: &str) -> (PathBuf, PathBuf) {
        let data = self.dir.path().join(format!("data-{name}"));
        let path = self.dir.path().join(format!("{name}.toml"));
        let pepper = self.dir.path().join("pepper");
        std::fs::write(
            &path,
            format!(
                "[server]\ndomain = \"localhost\"\nlisten = \"127.0.0.1:0\"\n\
                 data_dir = \"{}\"\nauth_timeout = 5\n\
                 [accounts]\nalice = \"alicepass\"\n\
                 [plugins.fast]\nenabled = true\nstore = \"postgres\"\n\
                 postgres_url = \"{url}\"\npostgres_pool_size = 4\npepper_file = \"{}\"\n{extra}",
                data.display(),
                pepper.display()
            ),
        )
        .unwrap();
        (path, data)
    }

    /// Hosts A and B on a fresh database.
    fn start(&self, extra: &str, rust_log: &str) -> (Node, Node, PathBuf) {
        let url = self.pg.fresh_database().unwrap();
        let (a_cfg, a_data) = self.config("a", &url, extra);
        let (b_cfg, b_data) = self.config("b", &url, extra);
        // A creates the pepper file; B starts once it exists and reads the same one.
        let a = Node::start(&a_cfg, &a_data, rust_log);
        let b = Node::start(&b_cfg, &b_data, rust_log);
        (a, b, a_cfg)
    }
}

fn passwd(config: &Path, password: &str) {
    let out = host_passwd(Path::new(HOST), config, "alice", &format!("{password}\n")).unwrap();
    assert!(
        out.status.success(),
        "host passwd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (a) A token issued on A logs in on B; (b) a rotation issued on A whose new token is first
/// used on B promotes it, and the old token is then dead on both (F-17, F-18, F-19); (d) a
/// password change handled with A's config answers `credentials-expired` on B at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_travel_between_hosts_rotation_and_revocation_included() {
    let cluster = Cluster::new();
    let (a, b, a_cfg) = cluster.start("", "warn");
    let ua = "5a1e7e3c-1f0e-4c36-8d36-1b0f1c2d3e40";

    // (a)
    let t1 = a.issue(ua, "alicepass").await;
    assert!(succeeded(&b.fast(&t1, LoginOptions::agent(ua)).await));

    // (b) a FAST login on A that asks for a new token: t2 goes into `new`, t1 stays good.
    let s = a
        .fast(&t1, LoginOptions::agent(ua).request_token(MECH))
        .await
        .into_success()
        .unwrap();
    let t2 = s.token.expect("a new token").token;
    assert_ne!(t1, t2);
    assert!(
        succeeded(&b.fast(&t2, LoginOptions::agent(ua)).await),
        "t2 on B"
    );
    for (name, node) in [("A", &a), ("B", &b)] {
        let o = node.fast(&t1, LoginOptions::agent(ua)).await;
        assert!(
            !succeeded(&o),
            "F-18: t1 must be dead on {name} once t2 was used"
        );
        assert!(succeeded(&node.fast(&t2, LoginOptions::agent(ua)).await));
    }

    // (d) `host passwd` with A's config revokes alice's tokens in the shared database (the
    // host keeps running: PostgreSQL has no process lock).
    passwd(&a_cfg, "n3w-p4ssw0rd");
    let started = Instant::now();
    let o = b.fast(&t2, LoginOptions::agent(ua)).await;
    assert_eq!(condition(&o), "credentials-expired", "F-28 on B");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        condition(&a.fast(&t2, LoginOptions::agent(ua)).await),
        "credentials-expired"
    );
}

/// (c) The same token used concurrently on A and B, 50 attempts each: with one `count` value,
/// exactly one success (F-14); with `invalidate`, exactly one success (F-21).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_use_on_both_hosts_follows_the_replay_rules() {
    let cluster = Cluster::new();
    let (a, b, _) = cluster.start("", "warn");
    let a = Arc::new(a);
    let b = Arc::new(b);
    for (i, opts) in [
        LoginOptions::agent("").count(7),
        LoginOptions::agent("").invalidate(),
    ]
    .into_iter()
    .enumerate()
    {
        let ua = format!("c0ffee00-0000-4000-8000-00000000000{i}");
        let token = a.issue(&ua, "alicepass").await;
        let mut opts = opts;
        opts.user_agent_id = Some(ua.clone());
        let mut tasks = Vec::new();
        for n in 0..100 {
            let node = if n % 2 == 0 { a.clone() } else { b.clone() };
            let (token, opts) = (token.clone(), opts.clone());
            tasks.push(tokio::spawn(async move { node.fast(&token, opts).await }));
        }
        let mut wins = 0;
        let mut refusals = std::collections::BTreeMap::<String, usize>::new();
        for t in tasks {
            let o = t.await.unwrap();
            if succeeded(&o) {
                wins += 1;
            } else {
                *refusals.entry(condition(&o)).or_default() += 1;
            }
        }
        assert_eq!(
            wins, 1,
            "case {i}: exactly one success; refusals {refusals:?}"
        );
        assert!(
            refusals
                .keys()
                .all(|c| c == "not-authorized" || c == "credentials-expired"),
            "case {i}: {refusals:?}"
        );
    }
}

/// (e) kill -9 of A while it issues tokens loses no token a client received, and revives no
/// revoked one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_during_issuance_loses_no_token_and_revives_none() {
    let cluster = Cluster::new();
    // Every login below is a new client (user agent) of alice: at more than 100 in 1.5 s the
    // default `max_clients_per_account` drops the least recently used ones, which is not the
    // loss this test looks for (it issued 326 here on 2026-12-03 and failed on those).
    let (mut a, b, a_cfg) = cluster.start("max_clients_per_account = 100000\n", "warn");
    let revoked_ua = "dead0000-0000-4000-8000-000000000000";
    let revoked = a.issue(revoked_ua, "alicepass").await;
    passwd(&a_cfg, "s3c0nd");
    // The running hosts keep the password they loaded; restarting A picks up the new one.
    a.kill9();
    let data_a = cluster.dir.path().join("data-a");
    let a = Arc::new(Mutex::new(Some(Node::start(&a_cfg, &data_a, "warn"))));

    // Issue in a loop on A from two tasks until A dies under them.
    let received = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let addr_cert = {
        let g = a.lock().unwrap();
        let n = g.as_ref().unwrap();
        (n.addr, n.cert.clone())
    };
    let mut tasks = Vec::new();
    for worker in 0..2 {
        let received = received.clone();
        let (addr, cert) = addr_cert.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let ua = format!("0000{worker:04}-0000-4000-8000-{i:012}");
                let opts = ConnectOptions::localhost(addr, Tls::StartTls, &cert, None).unwrap();
                let Ok(mut c) = Client::connect(opts).await else {
                    return;
                };
                let login = LoginOptions::agent(&ua).request_token(MECH);
                match c
                    .login_scram("alice", "s3c0nd", "SCRAM-SHA-256-PLUS", &login)
                    .await
                {
                    Ok(Outcome::Success(s)) => {
                        let token = s.token.expect("requested").token;
                        received.lock().unwrap().push((ua, token));
                    }
                    _ => return, // A died mid-login: the client got nothing
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.lock().unwrap().as_mut().unwrap().kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let received = received.lock().unwrap().clone();
    assert!(received.len() >= 5, "only {} tokens issued", received.len());
    for (ua, token) in &received {
        let o = b.fast(token, LoginOptions::agent(ua)).await;
        assert!(
            succeeded(&o),
            "a token the client received is lost: {}",
            condition(&o)
        );
    }
    let o = b.fast(&revoked, LoginOptions::agent(revoked_ua)).await;
    assert_eq!(
        condition(&o),
        "credentials-expired",
        "a revoked token came back"
    );
}

/// (f) PostgreSQL stopped for 10 s: FAST logins answer `temporary-auth-failure` (never
/// `not-authorized`), within the auth timeout, and both hosts recover without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_a_temporary_failure_and_both_hosts_recover() {
    let mut cluster = Cluster::new();
    let (a, b, _) = cluster.start("", "warn");
    let ua = "0a7a9e00-0000-4000-8000-000000000001";
    let token = a.issue(ua, "alicepass").await;
    assert!(succeeded(&b.fast(&token, LoginOptions::agent(ua)).await));

    cluster.pg.stop(false);
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(10) {
        for node in [&a, &b] {
            let started = Instant::now();
            let o = node.fast(&token, LoginOptions::agent(ua)).await;
            assert_eq!(condition(&o), "temporary-auth-failure");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "answered after {:?}, past the auth timeout",
                started.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    cluster.pg.start_again().unwrap();
    for node in [&a, &b] {
        let mut ok = false;
        for _ in 0..50 {
            if succeeded(&node.fast(&token, LoginOptions::agent(ua)).await) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(ok, "a host did not recover after the database came back");
    }
}

/// (g) The sweeper running on both hosts at once removes each expired record once, without
/// errors: the `removed` counts the two hosts log add up to the records that expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sweepers_remove_each_expired_record_once() {
    let cluster = Cluster::new();
    let (a, b, a_cfg) = cluster.start(
        "token_ttl = 3\ntoken_min_ttl = 1\nsweep_interval = 1\n",
        "warn,sasl2_fast::fast::tokens=debug",
    );
    const N: usize = 12;
    for i in 0..N {
        let node = if i % 2 == 0 { &a } else { &b };
        node.issue(&format!("5eeb0000-0000-4000-8000-{i:012}"), "alicepass")
            .await;
    }
    // Expired after 3 s; both sweepers run every second.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let removed = |log: &str| -> usize {
        log.lines()
            .filter(|l| l.contains("expired FAST clients swept"))
            .filter_map(|l| l.split("removed=").nth(1))
            .filter_map(|v| v.split_whitespace().next()?.parse::<usize>().ok())
            .sum()
    };
    let (la, lb) = (a.log(), b.log());
    assert_eq!(removed(&la) + removed(&lb), N, "A:\n{la}\nB:\n{lb}");
    for log in [&la, &lb] {
        assert!(!log.contains("sweep failed"), "{log}");
        assert!(!log.contains("ERROR"), "{log}");
    }
    let out = Command::new(HOST)
        .args(["clients", "--config", a_cfg.to_str().unwrap(), "alice"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no FAST clients"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `host migrate-store --config FILE --to URL` (issue 10 item 7): a single host on sled moves
/// to PostgreSQL; tokens issued before the move log in after it, a revoked one stays revoked,
/// and a second run changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_store_moves_a_sled_host_to_postgres() {
    let cluster = Cluster::new();
    let dir = cluster.dir.path();
    let data = dir.join("data-single");
    let sled_cfg = dir.join("sled.toml");
    let base = format!(
        "[server]\ndomain = \"localhost\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\
         [accounts]\nalice = \"alicepass\"\n[plugins.fast]\nenabled = true\n",
        data.display()
    );
    std::fs::write(&sled_cfg, &base).unwrap();
    let (kept_ua, revoked_ua) = (
        "a1a1a1a1-0000-4000-8000-000000000001",
        "a1a1a1a1-0000-4000-8000-000000000002",
    );
    let node = Node::start(&sled_cfg, &data, "warn");
    let revoked = node.issue(revoked_ua, "alicepass").await;
    drop(node);
    passwd(&sled_cfg, "m1gr4t3d"); // revokes `revoked`
    let node = Node::start(&sled_cfg, &data, "warn");
    let kept = node.issue(kept_ua, "m1gr4t3d").await; // the new password, from data_dir
    drop(node);

    let url = cluster.pg.fresh_database().unwrap();
    let migrate = || {
        Command::new(HOST)
            .args([
                "migrate-store",
                "--config",
                sled_cfg.to_str().unwrap(),
                "--to",
                &url,
            ])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = migrate();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("copied 2 FAST clients"), "{text}");
    let again = migrate();
    let text = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(
        text.contains("copied 0 FAST clients") && text.contains("2 were already there"),
        "{text}"
    );

    // The same host, now on PostgreSQL (same data_dir, so the same pepper).
    let pg_cfg = dir.join("pg.toml");
    std::fs::write(
        &pg_cfg,
        format!("{base}store = \"postgres\"\npostgres_url = \"{url}\"\n"),
    )
    .unwrap();
    let node = Node::start(&pg_cfg, &data, "warn");
    let o = node.fast(&kept, LoginOptions::agent(kept_ua)).await;
    assert!(succeeded(&o), "a token issued on sled: {}", condition(&o));
    let o = node.fast(&revoked, LoginOptions::agent(revoked_ua)).await;
    assert_eq!(
        condition(&o),
        "credentials-expired",
        "the revocation moved too"
    );

    // A config that is not on sled is refused with the usage status.
    let out = Command::new(HOST)
        .args([
            "migrate-store",
            "--config",
            pg_cfg.to_str().unwrap(),
            "--to",
            &url,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
