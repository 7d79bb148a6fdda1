//! Interop with a real third-party client: xmpp.js (`@xmpp/client` 0.14.0, pinned in
//! `tests/interop/package-lock.json`).
//!
//! Each scenario runs against both example servers, as `example_host::NAME` and
//! `tokio_xmpp_host::NAME` (`tests/servers/`): the server starts in-process (STARTTLS on
//! `127.0.0.1:0`, self-signed certificate for `localhost`, temp data dir) and
//! `node tests/interop/xmppjs.mjs` runs one or more times against it; every run is a separate
//! process, like an app restart, sharing a token file. See `docs/interop.md`.
//!
//! Node.js is required: without `node` the tests fail (they never skip). If
//! `tests/interop/node_modules` is missing, `npm ci` is run there first.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

mod servers;

use sasl2_fast::fast::config::parse_duration;
use servers::{Kind, Running};
use tokio::process::Command;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

const NODE_MISSING: &str = "Node.js (`node`) is required for the xmpp.js interop tests but was \
     not found on PATH. Install it, e.g. `apt-get install nodejs npm`, then re-run \
     `cargo test --test interop_xmppjs`.";

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// Checks for node and installs the pinned packages once per test binary.
fn ensure_node() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let r = READY.get_or_init(|| {
        let v = std::process::Command::new("node").arg("--version").output();
        match v {
            Ok(o) if o.status.success() => {}
            _ => {
                return Err(NODE_MISSING.into());
            }
        }
        let dir = interop_dir();
        if !dir.join("node_modules/@xmpp/client/package.json").exists() {
            let out = std::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .output()
                .map_err(|e| {
                    format!(
                        "could not run `npm ci` in {} ({e}); install npm, e.g. \
                         `apt-get install nodejs npm`",
                        dir.display()
                    )
                })?;
            if !out.status.success() {
                return Err(format!(
                    "`npm ci` in {} failed:\n{}\n{}",
                    dir.display(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        Ok(())
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

struct Env {
    t: Running,
}

impl Env {
    /// A server of `kind` (STARTTLS required, alice/alicepass) with these FAST lifetimes.
    async fn start(kind: Kind, token_ttl: &str, token_min_ttl: &str) -> Env {
        ensure_node();
        let ttl = parse_duration(token_ttl).expect("token_ttl");
        let min_ttl = parse_duration(token_min_ttl).expect("token_min_ttl");
        Env {
            t: Running::start(kind, ttl, min_ttl)
                .await
                .expect("server start"),
        }
    }

    fn store(&self) -> PathBuf {
        self.t.dir().join("token.json")
    }

    /// Runs one scenario process; panics with its output unless it exits 0.
    async fn run(&self, scenario: &str, extra: &[&str]) -> String {
        let port = self.t.addr().port().to_string();
        let store = self.store();
        let mut cmd = Command::new("node");
        cmd.arg(interop_dir().join("xmppjs.mjs"))
            .args(["--scenario", scenario, "--port", &port, "--store"])
            .arg(&store)
            .args(extra)
            // Read at process start by Node: trust the host's generated certificate.
            .env("NODE_EXTRA_CA_CERTS", self.t.cert_pem_path())
            .current_dir(interop_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().expect("spawn node");
        let out = match tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output()).await {
            Ok(r) => r.expect("wait for node"),
            Err(_) => panic!("scenario {scenario} {extra:?} timed out after {SCRIPT_TIMEOUT:?}"),
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "xmpp.js scenario {scenario} {extra:?} against {:?} failed ({}):\n{text}",
            self.t.kind(),
            out.status
        );
        println!("--- {scenario} {extra:?} ({:?})\n{text}", self.t.kind());
        text
    }

    async fn shutdown(self) {
        self.t.shutdown().await;
    }
}

async fn password_scram_then_fast_login(kind: Kind) {
    let env = Env::start(kind, "1h", "30m").await;
    env.run("password", &["--mech", "SCRAM-SHA-1"]).await;
    env.run("fast", &[]).await;
    // A second restart with the same (promoted) token still works.
    env.run("fast", &[]).await;
    env.shutdown().await;
}

async fn password_plain_then_fast_login(kind: Kind) {
    let env = Env::start(kind, "1h", "30m").await;
    env.run("password", &["--mech", "PLAIN"]).await;
    env.run("fast", &[]).await;
    env.shutdown().await;
}

async fn rotated_token_replaces_the_previous_one(kind: Kind) {
    let env = Env::start(kind, "1h", "1").await;
    env.run("password", &[]).await;
    // Token age must reach token_min_ttl (1 s) for the server to rotate.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    env.run("rotate", &[]).await;
    env.shutdown().await;
}

async fn tampered_token_falls_back_to_password(kind: Kind) {
    let env = Env::start(kind, "1h", "30m").await;
    env.run("password", &[]).await;
    env.run("tampered", &[]).await;
    // The token obtained by the fallback works for FAST.
    env.run("fast", &[]).await;
    env.shutdown().await;
}

async fn expired_token_falls_back_to_password(kind: Kind) {
    let env = Env::start(kind, "2", "1").await;
    env.run("password", &[]).await;
    tokio::time::sleep(Duration::from_millis(2600)).await;
    env.run("expired", &[]).await;
    env.shutdown().await;
}

macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {
        mod example_host {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                super::$scenario(super::Kind::Example).await
            })*
        }
        mod tokio_xmpp_host {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                super::$scenario(super::Kind::TokioXmpp).await
            })*
        }
    };
}

on_both!(
    password_scram_then_fast_login,
    password_plain_then_fast_login,
    rotated_token_replaces_the_previous_one,
    tampered_token_falls_back_to_password,
    expired_token_falls_back_to_password,
);
