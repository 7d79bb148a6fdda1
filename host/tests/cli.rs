//! The `host` binary as an operator runs it: help per subcommand, usage and config errors
//! (exit status 2, the key named), `host passwd` with the password on stdin, `host clients`,
//! and `host --config FILE` serving logins until SIGTERM. The command lines are contracts
//! (issue 9 item 2): `host --config FILE`, `host passwd --config FILE USER`,
//! `host clients --config FILE USER`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sasl2_fast_host::client::{Client, ConnectOptions, LoginOptions, Outcome, Tls};
use sasl2_fast_host::harness::{HostProcess, host_passwd, write_config};

const HOST: &str = env!("CARGO_BIN_EXE_host");
const UA: &str = "0d9d5a6c-25f1-4d52-9b38-0a4c5c6f7e21";

fn host(args: &[&str]) -> Output {
    Command::new(HOST)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run host")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The tests' config ([`write_config`]); `extra` is appended to `[plugins.fast]`.
fn config(dir: &Path, extra: &str) -> PathBuf {
    write_config(dir, extra).unwrap()
}

#[test]
fn help_lists_the_subcommands_and_each_has_its_own() {
    let o = host(&["--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for word in ["passwd", "clients", "--config"] {
        assert!(text.contains(word), "`host --help` lacks {word}:\n{text}");
    }
    let o = host(&["passwd", "--help"]);
    assert!(o.status.success());
    let text = stdout(&o);
    assert!(text.contains("USER") && text.contains("stdin"), "{text}");
    let o = host(&["clients", "--help"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("USER"));
}

#[test]
fn usage_errors_exit_with_status_2() {
    assert_eq!(host(&[]).status.code(), Some(2), "no --config");
    assert_eq!(host(&["--frobnicate"]).status.code(), Some(2));
    assert_eq!(
        host(&["passwd", "--config", "x.toml"]).status.code(),
        Some(2),
        "no USER"
    );
}

#[test]
fn config_errors_exit_with_status_2_and_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, key) in [
        ("token_ttl = \"three weeks\"\n", "token_ttl"),
        ("token_tll = 86400\n", "token_tll"),
        ("store = \"postgres\"\n", "postgres_url"),
        ("postgres_pool_size = 0\n", "postgres_pool_size"),
    ] {
        let path = config(dir.path(), extra);
        let o = host(&["--config", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{extra}: {}", stderr(&o));
        assert!(stderr(&o).contains(key), "{extra}: {}", stderr(&o));
        // The subcommands read the same config the same way.
        let o = host(&["clients", "--config", path.to_str().unwrap(), "alice"]);
        assert_eq!(o.status.code(), Some(2), "clients, {extra}: {}", stderr(&o));
    }
    let o = host(&[
        "--config",
        dir.path().join("missing.toml").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

async fn login(addr: SocketAddr, dir: &Path, password: &str, opts: &LoginOptions) -> Outcome {
    let cert = dir.join("data/tls/cert.pem");
    let mut c =
        Client::connect(ConnectOptions::localhost(addr, Tls::StartTls, &cert, None).unwrap())
            .await
            .unwrap();
    c.login_scram("alice", password, "SCRAM-SHA-256-PLUS", opts)
        .await
        .unwrap()
}

fn passwd(config: &Path, user: &str, stdin: &str) -> Output {
    host_passwd(Path::new(HOST), config, user, stdin).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_list_clients_and_change_a_password_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");

    // `host --config FILE` serves: a password login that asks for a token gets one.
    let running = HostProcess::start(Path::new(HOST), &cfg, Some("warn")).unwrap();
    let opts = LoginOptions::agent(UA).request_token("HT-SHA-256-EXPR");
    let s = login(running.addr(), dir.path(), "alicepass", &opts)
        .await
        .into_success()
        .unwrap();
    assert!(s.token.is_some(), "a token was issued");
    assert!(
        running.stop().unwrap().success(),
        "SIGTERM is a clean shutdown"
    );

    // `host clients` lists that client, its token still in the `new` slot (F-17), while the
    // host is stopped (sled holds one process lock).
    let o = host(&["clients", "--config", cfg.to_str().unwrap(), "alice"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("new:       HT-SHA-256-EXPR"),
        "{}",
        stdout(&o)
    );

    // `host passwd` reads the new password from stdin and revokes the FAST tokens.
    let o = passwd(&cfg, "alice", "n3w-p4ssw0rd\n");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).contains("n3w-p4ssw0rd") && !stderr(&o).contains("n3w-p4ssw0rd"));
    let o = host(&["clients", "--config", cfg.to_str().unwrap(), "alice"]);
    assert!(stdout(&o).contains("revoked"), "{}", stdout(&o));
    let o = passwd(&cfg, "alice", "\n");
    assert_eq!(o.status.code(), Some(1), "an empty password is refused");

    // The restarted host takes the new password and refuses the old one.
    let running = HostProcess::start(Path::new(HOST), &cfg, Some("warn")).unwrap();
    let plain = LoginOptions::agent(UA);
    match login(running.addr(), dir.path(), "alicepass", &plain).await {
        Outcome::Failure(f) => assert_eq!(f.condition, "not-authorized"),
        Outcome::Success(_) => panic!("the old password still works"),
    }
    login(running.addr(), dir.path(), "n3w-p4ssw0rd", &plain)
        .await
        .into_success()
        .unwrap();
    assert!(running.stop().unwrap().success());
}
