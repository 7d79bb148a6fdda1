//! Revocations survive a restore (issue 23 item 6), against the real `host` binary: a token
//! store copied back from a backup taken before `host passwd` (host stopped) or `host ctl
//! passwd` (host running) never logs the token that password change revoked back in. The
//! account side (`accounts.toml`) holds the time before which alice's tokens are void, and
//! every FAST login checks it, so the restored store's missing revocation does not matter:
//! the token answers `credentials-expired` (F-28). A store restored without its seal file,
//! though it holds FAST clients, refuses to start and names the recovery, unless
//! `store_recovery = "distrust"`, which starts it with every token revoked.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use sasl2_fast_host::client::{Client, ConnectOptions, LoginOptions, Outcome, Tls};
use sasl2_fast_host::harness::{HostProcess, copy_dir, host_command, host_passwd, write_config};

const HOST: &str = env!("CARGO_BIN_EXE_host");
const MECH: &str = "HT-SHA-256-EXPR";
const UA1: &str = "9a0e3c1d-5b7f-4e2a-8c6d-1f2e3d4c5b01";
const UA2: &str = "9a0e3c1d-5b7f-4e2a-8c6d-1f2e3d4c5b02";

/// The tests' config ([`write_config`]); `extra` is appended to `[plugins.fast]`.
fn config(dir: &Path, extra: &str) -> PathBuf {
    write_config(dir, extra).unwrap()
}

fn start(cfg: &Path) -> HostProcess {
    HostProcess::start(Path::new(HOST), cfg, Some("warn")).unwrap()
}

async fn client(addr: SocketAddr, dir: &Path) -> Client {
    let cert = dir.join("data/tls/cert.pem");
    Client::connect(ConnectOptions::localhost(addr, Tls::StartTls, &cert, None).unwrap())
        .await
        .unwrap()
}

/// A password login of alice from `ua` asking for a token: the token.
async fn issue(addr: SocketAddr, dir: &Path, ua: &str, password: &str) -> String {
    let s = client(addr, dir)
        .await
        .login_scram(
            "alice",
            password,
            "SCRAM-SHA-256-PLUS",
            &LoginOptions::agent(ua).request_token(MECH),
        )
        .await
        .unwrap()
        .into_success()
        .unwrap();
    s.token.expect("a token").token
}

/// A FAST login of alice from `ua` with `token`: "success" or the failure's condition.
async fn fast(addr: SocketAddr, dir: &Path, ua: &str, token: &str) -> String {
    match client(addr, dir)
        .await
        .login_fast("alice", token, MECH, &LoginOptions::agent(ua))
        .await
        .unwrap()
    {
        Outcome::Success(_) => "success".into(),
        Outcome::Failure(f) => f.condition,
    }
}

/// The sled store and its seal, as a backup holds them.
fn store_files(dir: &Path) -> (PathBuf, PathBuf) {
    (
        dir.join("data/fast-tokens"),
        dir.join("data/fast-tokens.seal"),
    )
}

/// Copies the (stopped) host's token store and seal to `backup`.
fn back_up(dir: &Path, backup: &Path) {
    let (store, seal) = store_files(dir);
    let _ = std::fs::remove_dir_all(backup);
    copy_dir(&store, &backup.join("fast-tokens")).unwrap();
    std::fs::copy(&seal, backup.join("fast-tokens.seal")).unwrap();
}

/// Puts the backup's token store back, with its seal or without any seal file.
fn restore(dir: &Path, backup: &Path, with_seal: bool) {
    let (store, seal) = store_files(dir);
    std::fs::remove_dir_all(&store).unwrap();
    copy_dir(&backup.join("fast-tokens"), &store).unwrap();
    let _ = std::fs::remove_file(&seal);
    if with_seal {
        std::fs::copy(backup.join("fast-tokens.seal"), &seal).unwrap();
    }
}

fn ctl_passwd(cfg: &Path, user: &str, password: &str) -> Output {
    let stdin = format!("{password}\n");
    host_command(
        Path::new(HOST),
        "ctl",
        cfg,
        &["passwd", user],
        stdin.as_bytes(),
    )
    .unwrap()
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_restored_with_its_seal_never_logs_in_a_token_revoked_after_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let backup = dir.path().join("backup");

    // alice's phone gets a token that works; the host stops and the store is backed up.
    let h = start(&cfg);
    let t1 = issue(h.addr(), dir.path(), UA1, "alicepass").await;
    assert_eq!(fast(h.addr(), dir.path(), UA1, &t1).await, "success");
    assert!(h.stop().unwrap().success());
    back_up(dir.path(), &backup);

    // `host passwd` with the host stopped revokes it; then yesterday's backup comes back.
    assert_ok(
        &host_passwd(Path::new(HOST), &cfg, "alice", "s3cond-pass\n").unwrap(),
        "host passwd",
    );
    restore(dir.path(), &backup, true);
    let h = start(&cfg);
    assert_eq!(
        fast(h.addr(), dir.path(), UA1, &t1).await,
        "credentials-expired",
        "a store restored from before `host passwd` logged the revoked token in"
    );
    // Every time, not once (F-28), and the new password gets a token that works.
    assert_eq!(
        fast(h.addr(), dir.path(), UA1, &t1).await,
        "credentials-expired"
    );
    let t2 = issue(h.addr(), dir.path(), UA2, "s3cond-pass").await;
    assert_eq!(fast(h.addr(), dir.path(), UA2, &t2).await, "success");
    assert!(h.stop().unwrap().success());
    back_up(dir.path(), &backup);

    // `host ctl passwd` on the running host revokes t2; the store from before comes back.
    let h = start(&cfg);
    assert_ok(&ctl_passwd(&cfg, "alice", "th1rd-pass"), "host ctl passwd");
    assert_eq!(
        fast(h.addr(), dir.path(), UA2, &t2).await,
        "credentials-expired"
    );
    assert!(h.stop().unwrap().success());
    restore(dir.path(), &backup, true);
    let h = start(&cfg);
    assert_eq!(
        fast(h.addr(), dir.path(), UA2, &t2).await,
        "credentials-expired",
        "a store restored from before `host ctl passwd` logged the revoked token in"
    );
    assert_eq!(
        fast(h.addr(), dir.path(), UA1, &t1).await,
        "credentials-expired"
    );
    let t3 = issue(h.addr(), dir.path(), UA1, "th1rd-pass").await;
    assert_eq!(fast(h.addr(), dir.path(), UA1, &t3).await, "success");
    assert!(h.stop().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_restored_without_its_seal_refuses_to_start_unless_distrusted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let backup = dir.path().join("backup");

    let h = start(&cfg);
    let t1 = issue(h.addr(), dir.path(), UA1, "alicepass").await;
    assert!(h.stop().unwrap().success());
    back_up(dir.path(), &backup);
    assert_ok(
        &host_passwd(Path::new(HOST), &cfg, "alice", "s3cond-pass\n").unwrap(),
        "host passwd",
    );

    // The store comes back without its seal: the host refuses, like a missing pepper, and
    // says what to do.
    restore(dir.path(), &backup, false);
    let refused = HostProcess::start(Path::new(HOST), &cfg, Some("warn"))
        .map(|_| ())
        .expect_err("a store with FAST clients and no seal started");
    let message = refused.to_string();
    for needed in [
        "fast-tokens.seal",
        "missing",
        "1 FAST client",
        "store_recovery = \"distrust\"",
    ] {
        assert!(message.contains(needed), "{needed:?} not in: {message}");
    }
    assert!(
        !store_files(dir.path()).1.exists(),
        "the refusal wrote a new seal, so the next start would accept the store"
    );

    // The operator chooses to distrust it: the host starts, every token is void, passwords
    // work, and the store is sealed again.
    let cfg = config(dir.path(), "store_recovery = \"distrust\"\n");
    let h = start(&cfg);
    assert_eq!(
        fast(h.addr(), dir.path(), UA1, &t1).await,
        "credentials-expired"
    );
    let t2 = issue(h.addr(), dir.path(), UA2, "s3cond-pass").await;
    assert_eq!(fast(h.addr(), dir.path(), UA2, &t2).await, "success");
    assert!(h.stop().unwrap().success());
    assert!(store_files(dir.path()).1.exists());
}
