//! `host ctl` (issue 12 item 3) against the real `host` binary: every command on a running
//! host over its admin socket (mode 0600), the same commands on the store with the host
//! stopped, a stale socket after kill -9, a hung host, errors (unknown user, bad TIME, bad
//! config) exiting non-zero with a message, and on PostgreSQL the store path while a host of
//! the cluster runs. FAST logins go through the test client over real TLS; a revoked token
//! answers `credentials-expired` (F-28).

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use sasl2_fast::store::ClientKey;
use sasl2_fast_host::client::{Client, ClientError, ConnectOptions, LoginOptions, Outcome, Tls};
use sasl2_fast_host::harness::{HostProcess, host_command, write_config};
use serde_json::Value;

const HOST: &str = env!("CARGO_BIN_EXE_host");
const MECH: &str = "HT-SHA-256-EXPR";
const UA1: &str = "4f0c1a52-7d2e-4b8e-9a57-2c1f3e8d6b01";
const UA2: &str = "4f0c1a52-7d2e-4b8e-9a57-2c1f3e8d6b02";
const UA3: &str = "4f0c1a52-7d2e-4b8e-9a57-2c1f3e8d6b03";

fn label(ua: &str) -> String {
    ClientKey::new("alice", ua).unwrap().client_label()
}

/// The tests' config ([`write_config`]); `extra` is appended to `[plugins.fast]`.
fn config(dir: &Path, extra: &str) -> PathBuf {
    write_config(dir, extra).unwrap()
}

/// `host SUBCOMMAND --config cfg ARGS...` with `stdin`.
fn run_host(subcommand: &str, cfg: &Path, args: &[&str], stdin: &str) -> Output {
    host_command(Path::new(HOST), subcommand, cfg, args, stdin.as_bytes()).unwrap()
}

/// `host ctl --config cfg ARGS...` with `stdin`.
fn ctl_in(cfg: &Path, args: &[&str], stdin: &str) -> Output {
    run_host("ctl", cfg, args, stdin)
}

fn ctl(cfg: &Path, args: &[&str]) -> Output {
    ctl_in(cfg, args, "")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `ctl` succeeded; its stdout.
fn ok(o: Output) -> String {
    assert!(o.status.success(), "ctl failed: {}{}", out(&o), err(&o));
    out(&o)
}

fn stats(cfg: &Path) -> Value {
    serde_json::from_str(&ok(ctl(cfg, &["stats", "--json"]))).unwrap()
}

async fn client(addr: SocketAddr, data: &Path) -> Client {
    let cert = data.join("tls/cert.pem");
    let opts = ConnectOptions::localhost(addr, Tls::StartTls, &cert, None).unwrap();
    Client::connect(opts).await.unwrap()
}

/// A password login of alice from `ua` asking for a token (bound with Bind 2 when `bind`);
/// the client (still connected) and the token.
async fn issue(
    addr: SocketAddr,
    data: &Path,
    ua: &str,
    password: &str,
    bind: bool,
) -> (Client, String) {
    let mut c = client(addr, data).await;
    let mut opts = LoginOptions::agent(ua).request_token(MECH);
    if bind {
        opts = opts.bind("ctl-test");
    }
    let s = c
        .login_scram("alice", password, "SCRAM-SHA-256-PLUS", &opts)
        .await
        .unwrap()
        .into_success()
        .unwrap();
    (c, s.token.expect("a token").token)
}

async fn fast(addr: SocketAddr, data: &Path, ua: &str, token: &str) -> String {
    let mut c = client(addr, data).await;
    match c
        .login_fast("alice", token, MECH, &LoginOptions::agent(ua))
        .await
        .unwrap()
    {
        Outcome::Success(_) => "success".into(),
        Outcome::Failure(f) => f.condition,
    }
}

async fn password_login(addr: SocketAddr, data: &Path, password: &str) -> String {
    let mut c = client(addr, data).await;
    match c
        .login_scram(
            "alice",
            password,
            "SCRAM-SHA-256-PLUS",
            &LoginOptions::agent(UA3),
        )
        .await
        .unwrap()
    {
        Outcome::Success(_) => "success".into(),
        Outcome::Failure(f) => f.condition,
    }
}

/// The stream error the server closes `c`'s stream with.
async fn closed_with(c: &mut Client) -> String {
    let r = tokio::time::timeout(Duration::from_secs(5), c.recv())
        .await
        .expect("the session was not closed");
    match r {
        Err(ClientError::StreamError { condition, .. }) => condition,
        other => panic!("expected a stream error, got {other:?}"),
    }
}

/// The host's log once `done` holds for it (at most 10 s).
async fn wait_for_log(host: &HostProcess, done: impl Fn(&str) -> bool) -> String {
    for _ in 0..200 {
        let log = host.log();
        if done(&log) {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    host.log()
}

fn now_rfc3339() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    sasl2_fast::fast::clock::xep0082(ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_acts_on_the_running_host() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let data = dir.path().join("data");
    let host = HostProcess::start(Path::new(HOST), &cfg, Some("info")).unwrap();
    let addr = host.addr();

    // The socket: a socket, mode 0600, in a 0700 data_dir.
    let sock = data.join("admin.sock");
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dmode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(dmode & 0o777, 0o700);

    let s = stats(&cfg);
    assert_eq!(s["running"], true);
    assert_eq!(s["logins"]["password"], 0);
    assert_eq!(s["fast"]["issued"], 0);

    // Two clients with tokens; the first keeps a bound session open.
    let (mut session1, t1) = issue(addr, &data, UA1, "alicepass", true).await;
    let (_, t2) = issue(addr, &data, UA2, "alicepass", false).await;
    assert_eq!(fast(addr, &data, UA2, &t2).await, "success");

    let list = ok(ctl(&cfg, &["clients", "alice"]));
    assert!(list.contains(&format!("client {}", label(UA1))), "{list}");
    assert!(list.contains(&format!("client {}", label(UA2))), "{list}");

    // stats moved with the logins.
    let s = stats(&cfg);
    assert_eq!(s["logins"]["password"], 2, "{s}");
    assert_eq!(s["logins"]["fast"], 1, "{s}");
    assert_eq!(s["fast"]["issued"], 2, "{s}");
    assert_eq!(s["fast"]["used"], 1, "{s}");
    assert_eq!(s["connections"]["bound"], 1, "{s}");
    assert!(s["connections"]["open"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["store"]["kind"], "sled");
    assert_eq!(s["store"]["records"], 2, "{s}");
    let text = ok(ctl(&cfg, &["stats"]));
    assert!(
        text.contains("logins:      password 2, fast 1, failed 0"),
        "{text}"
    );

    // revoke USER CLIENT: that client's token is dead, its live session closed with `reset`;
    // the other client is untouched.
    let o = ok(ctl(&cfg, &["revoke", "alice", &label(UA1)]));
    assert!(o.contains("1 live session(s) closed"), "{o}");
    assert_eq!(closed_with(&mut session1).await, "not-authorized");
    assert_eq!(fast(addr, &data, UA1, &t1).await, "credentials-expired");
    assert_eq!(fast(addr, &data, UA2, &t2).await, "success");
    // The log arrives through a pipe: wait for the lines rather than race them.
    let audit = |log: &str, what: &str, field: &str| {
        log.lines()
            .filter(|l| l.contains("sasl2_fast::audit") && l.contains(what))
            .filter(|l| l.contains(field) && l.contains("by=\"admin\""))
            .count()
    };
    let client_field = format!("client=\"{}\"", label(UA1));
    let log = wait_for_log(&host, |log| {
        audit(log, "FAST access revoked", &client_field) > 0
            && audit(log, "session closed", "resource=") > 0
    })
    .await;
    assert_eq!(
        audit(&log, "FAST access revoked", &client_field),
        1,
        "one audit line per revocation, actor admin:\n{log}"
    );
    assert_eq!(audit(&log, "session closed", "resource="), 1, "{log}");
    assert!(
        !log.contains(&t1) && !log.contains(&t2),
        "a token in the log"
    );

    // revoke USER: every client.
    let o = ok(ctl(&cfg, &["revoke", "alice"]));
    assert!(o.contains(&label(UA2)), "{o}");
    assert_eq!(fast(addr, &data, UA2, &t2).await, "credentials-expired");

    // revoke-before TIME: a token issued before TIME is dead.
    let (_, t3) = issue(addr, &data, UA3, "alicepass", false).await;
    assert_eq!(fast(addr, &data, UA3, &t3).await, "success");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cutoff = now_rfc3339();
    let o = ok(ctl(&cfg, &["revoke-before", &cutoff]));
    assert!(o.contains(&cutoff), "{o}");
    assert_eq!(fast(addr, &data, UA3, &t3).await, "credentials-expired");
    let s = stats(&cfg);
    assert_eq!(s["fast"]["rejected"]["revoked"], 3, "{s}");

    // passwd: the new password works at once, the old one not, the tokens are revoked and
    // the account's sessions are closed.
    let (mut session, t4) = issue(addr, &data, UA1, "alicepass", true).await;
    let o = ok(ctl_in(&cfg, &["passwd", "alice"], "n3w-p4ss\n"));
    assert!(o.contains("1 live session(s) closed"), "{o}");
    assert_eq!(closed_with(&mut session).await, "not-authorized");
    assert_eq!(fast(addr, &data, UA1, &t4).await, "credentials-expired");
    assert_eq!(
        password_login(addr, &data, "alicepass").await,
        "not-authorized"
    );
    assert_eq!(password_login(addr, &data, "n3w-p4ss").await, "success");
    assert!(!host.log().contains("n3w-p4ss"));

    // Errors: non-zero with a message, nothing changed.
    let o = ctl(&cfg, &["clients", "bob"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("no such account: bob"), "{}", err(&o));
    let o = ctl(&cfg, &["revoke", "alice", "00112233aabbccdd"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("no FAST client 00112233aabbccdd"),
        "{}",
        err(&o)
    );
    let o = ctl_in(&cfg, &["passwd", "bob"], "pw\n");
    assert_eq!(o.status.code(), Some(1), "passwd creates no account");
    let o = ctl(&cfg, &["revoke-before", "last tuesday"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("RFC 3339"), "{}", err(&o));
    let o = ctl(&cfg, &["revoke-before", "2999-01-01T00:00:00Z"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("future"), "{}", err(&o));

    // A clean shutdown removes the socket.
    assert!(host.stop().unwrap().success());
    assert!(!sock.exists(), "the socket outlived the host");
}

/// `host passwd` and `host clients` are `host ctl passwd` and `host ctl clients` by older
/// names (issue 24 item 3): on a running host they ask it (before, they failed on the store's
/// lock), and they print what `ctl` prints. `clients --json` shows the library's one client
/// type, whose whole hash also names the client for `revoke`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_passwd_and_clients_are_ctl_by_their_older_names() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let data = dir.path().join("data");
    let host = HostProcess::start(Path::new(HOST), &cfg, Some("info")).unwrap();
    let addr = host.addr();
    let (mut session, _) = issue(addr, &data, UA1, "alicepass", true).await;

    let older = ok(run_host("clients", &cfg, &["alice"], ""));
    assert_eq!(older, ok(ctl(&cfg, &["clients", "alice"])), "one printout");
    assert!(older.contains(&format!("client {}", label(UA1))), "{older}");

    let json: Value =
        serde_json::from_str(&ok(ctl(&cfg, &["clients", "alice", "--json"]))).expect("JSON");
    let listed = &json["clients"][0];
    assert_eq!(listed["account"], "alice", "{json}");
    let hash = listed["client"].as_str().expect("the client hash");
    assert_eq!(hash.len(), 64, "{json}");
    assert!(hash.starts_with(&label(UA1)), "{json}");
    assert_eq!(listed["new"][0], MECH, "{json}");

    // `host passwd` on the running host: the host changes it and closes the sessions.
    let o = ok(run_host("passwd", &cfg, &["alice"], "n3w-p4ssw0rd\n"));
    assert!(o.contains("password of alice changed"), "{o}");
    assert!(o.contains("1 live session(s) closed"), "{o}");
    assert!(!o.contains("n3w-p4ssw0rd"));
    assert_eq!(closed_with(&mut session).await, "not-authorized");
    assert_eq!(password_login(addr, &data, "n3w-p4ssw0rd").await, "success");

    // The whole hash of `--json` names a client for `revoke`.
    let (_, t2) = issue(addr, &data, UA2, "n3w-p4ssw0rd", false).await;
    let whole = sasl2_fast::xmpp::lower_hex(ClientKey::new("alice", UA2).unwrap().client_hash());
    let o = ok(ctl(&cfg, &["revoke", "alice", &whole]));
    assert!(o.contains(&label(UA2)), "{o}");
    assert_eq!(fast(addr, &data, UA2, &t2).await, "credentials-expired");
    assert!(host.stop().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_host_stopped_the_commands_work_on_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let data = dir.path().join("data");
    let host = HostProcess::start(Path::new(HOST), &cfg, Some("warn")).unwrap();
    let (_, t1) = issue(host.addr(), &data, UA1, "alicepass", false).await;
    let (_, t2) = issue(host.addr(), &data, UA2, "alicepass", false).await;
    assert!(host.stop().unwrap().success());

    let o = ctl(&cfg, &["clients", "alice"]);
    assert!(
        err(&o).contains("working on the store directly"),
        "{}",
        err(&o)
    );
    assert!(ok(o).contains(&label(UA1)));
    let s = stats(&cfg);
    assert_eq!(s["running"], false);
    assert_eq!(s["store"]["records"], 2, "{s}");
    assert!(s["connections"].is_null());
    // No host reached no session: said as such, not as "0 closed" (a host of a cluster on
    // the same database may still serve them).
    let o = ok(ctl(&cfg, &["revoke", "alice", &label(UA1)]));
    assert!(
        o.contains("no host answered: live sessions, if any, were not closed"),
        "{o}"
    );
    let again = ok(ctl(&cfg, &["revoke", "alice", &label(UA1), "--json"]));
    let json: Value = serde_json::from_str(&again).expect("JSON");
    assert!(json["sessions_closed"].is_null(), "{json}");
    let o = ctl(&cfg, &["clients", "nobody"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));

    let host = HostProcess::start(Path::new(HOST), &cfg, Some("warn")).unwrap();
    assert_eq!(
        fast(host.addr(), &data, UA1, &t1).await,
        "credentials-expired"
    );
    assert_eq!(fast(host.addr(), &data, UA2, &t2).await, "success");
    let (_, t3) = issue(host.addr(), &data, UA3, "alicepass", false).await;
    assert!(host.stop().unwrap().success());

    tokio::time::sleep(Duration::from_millis(1100)).await;
    ok(ctl(&cfg, &["revoke-before", &now_rfc3339()]));
    ok(ctl_in(&cfg, &["passwd", "alice"], "0ffl1ne-pw\n"));

    let host = HostProcess::start(Path::new(HOST), &cfg, Some("warn")).unwrap();
    assert_eq!(
        fast(host.addr(), &data, UA3, &t3).await,
        "credentials-expired"
    );
    assert_eq!(
        fast(host.addr(), &data, UA2, &t2).await,
        "credentials-expired"
    );
    assert_eq!(
        password_login(host.addr(), &data, "0ffl1ne-pw").await,
        "success"
    );
    assert!(host.stop().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_after_kill_9_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let sock = dir.path().join("data/admin.sock");
    let mut host = HostProcess::start(Path::new(HOST), &cfg, Some("info")).unwrap();
    host.kill9();
    assert!(sock.exists(), "kill -9 leaves the socket behind");

    // Nobody listens: ctl falls back to the store.
    let s = stats(&cfg);
    assert_eq!(s["running"], false, "{s}");

    // The next host replaces it and answers on it.
    let host = HostProcess::start(Path::new(HOST), &cfg, Some("info")).unwrap();
    let log = wait_for_log(&host, |l| l.contains("replacing a stale admin socket")).await;
    assert!(log.contains("replacing a stale admin socket"), "{log}");
    assert_eq!(stats(&cfg)["running"], true);
    assert!(host.stop().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_host_makes_ctl_fail_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let host = HostProcess::start(Path::new(HOST), &cfg, Some("warn")).unwrap();
    let pid = host.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = std::time::Instant::now();
    let o = ctl(&cfg, &["--timeout", "1", "stats"]);
    let took = started.elapsed();
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("did not answer within 1 s"), "{}", err(&o));
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        !err(&o).contains("working on the store"),
        "no fallback behind a live host"
    );
    let log = host.log();
    let status = host.stop();
    assert!(matches!(&status, Ok(s) if s.success()), "{status:?}\n{log}");
}

#[test]
fn config_and_usage_errors_exit_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "token_tll = 5\n");
    let o = ctl(&cfg, &["stats"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("plugins.fast.token_tll"), "{}", err(&o));
    let o = ctl(&dir.path().join("missing.toml"), &["stats"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    let cfg = config(dir.path(), "");
    assert_eq!(ctl(&cfg, &["revoke"]).status.code(), Some(2), "no USER");
    assert_eq!(ctl(&cfg, &["frobnicate"]).status.code(), Some(2));
    let help = Command::new(HOST).args(["ctl", "--help"]).output().unwrap();
    for word in ["clients", "revoke", "passwd", "revoke-before", "stats"] {
        assert!(out(&help).contains(word), "{}", out(&help));
    }
}

/// PostgreSQL: a second host on the same data_dir is refused (the socket answers), and with a
/// host running, `ctl` through another config of the cluster works on the shared database
/// directly: the running host then refuses the revoked token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_the_store_path_works_while_a_host_runs() {
    let pg = sasl2_fast::store::test_kit::TestPostgres::start().unwrap_or_else(|e| panic!("{e}"));
    let url = pg.fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pepper = dir.path().join("pepper");
    let write = |name: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[server]\ndomain = \"localhost\"\nlisten = \"127.0.0.1:0\"\n\
                 data_dir = \"data-{name}\"\n[accounts]\nalice = \"alicepass\"\n\
                 [plugins.fast]\nenabled = true\nstore = \"postgres\"\n\
                 postgres_url = \"{url}\"\npostgres_pool_size = 2\npepper_file = \"{}\"\n",
                pepper.display()
            ),
        )
        .unwrap();
        path
    };
    let (a_cfg, b_cfg) = (write("a"), write("b"));
    let a_data = dir.path().join("data-a");
    let a = HostProcess::start(Path::new(HOST), &a_cfg, Some("warn")).unwrap();

    let e = HostProcess::start(Path::new(HOST), &a_cfg, Some("warn")).unwrap_err();
    assert!(e.to_string().contains("another host is running"), "{e}");
    assert_eq!(
        stats(&a_cfg)["running"],
        true,
        "the first host still answers"
    );

    let (_, t1) = issue(a.addr(), &a_data, UA1, "alicepass", false).await;
    let o = ctl(&b_cfg, &["revoke", "alice", &label(UA1)]);
    assert!(
        err(&o).contains("working on the store directly"),
        "{}",
        err(&o)
    );
    ok(o);
    assert_eq!(
        fast(a.addr(), &a_data, UA1, &t1).await,
        "credentials-expired"
    );
    let s = stats(&b_cfg);
    assert_eq!(s["store"]["kind"], "postgres");
    assert_eq!(s["store"]["records"], 1, "{s}");
    assert!(a.stop().unwrap().success());
}

/// Authorization is the file system's, and SO_PEERCRED behind it: another user cannot reach
/// the socket (permission denied, no fallback to the store), and when the modes are opened by
/// hand the host still refuses a peer of another uid. Needs root (to run `ctl` as `nobody`
/// with setpriv); without it the test says so and checks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_is_refused() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe");
    std::fs::write(&probe, "").unwrap();
    let setpriv = Path::new("/usr/bin/setpriv");
    if std::fs::metadata(&probe).unwrap().uid() != 0 || !setpriv.exists() {
        eprintln!("skipped: needs root and /usr/bin/setpriv to act as another user");
        return;
    }
    let data = dir.path().join("data");
    let cfg = config(dir.path(), "");
    // `nobody` may read the config, not the data.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let host = HostProcess::start(Path::new(HOST), &cfg, Some("info")).unwrap();
    let as_nobody = || {
        Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", HOST])
            .args(["ctl", "--config"])
            .arg(&cfg)
            .arg("stats")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let o = as_nobody();
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    assert!(err(&o).contains("permission denied"), "{}", err(&o));
    assert!(!err(&o).contains("working on the store"), "{}", err(&o));

    // An operator loosens the modes: the peer check still refuses the other uid.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o711)).unwrap();
    let sock = data.join("admin.sock");
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = as_nobody();
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    assert!(err(&o).contains("without an answer"), "{}", err(&o));
    let log = wait_for_log(&host, |l| l.contains("refused a peer of another user")).await;
    assert!(log.contains("uid=65534"), "{log}");
    assert_eq!(stats(&cfg)["running"], true, "the owner still gets answers");
    assert!(host.stop().unwrap().success());
}
