//! Interop with a real third-party client without SASL2: slixmpp (PyPI, pinned with hashes in
//! `tests/interop/requirements.txt`), issue 12 item 2.
//!
//! Each test starts the example host in-process (loopback STARTTLS and direct-TLS listeners,
//! self-signed certificate for `localhost`, temp data dir) and runs
//! `tests/interop/.venv/bin/python tests/interop/slixmpp_client.py` against it. slixmpp
//! verifies the certificate (given as its CA file) and the host name; it logs in with RFC 6120
//! SASL (`<auth>`, R-n rules), restarts the stream and binds a resource (RFC 6120 §7). The
//! script reports what happened as JSON on stdout and the assertions are here, so a run in
//! which slixmpp did nothing fails. Its stderr (slixmpp's log) is printed on failure.
//!
//! The venv is made by `scripts/test` (the README's test command); without it, or when it was
//! made from another `requirements.txt`, the tests fail and say so. They never skip.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sasl2_fast::xmpp::ns;
use sasl2_fast_host::HostConfig;
use sasl2_fast_host::client::{Client, LoginOptions, Outcome, Tls, is_stream_error};
use sasl2_fast_host::harness::TestHost;
use serde_json::Value;
use tokio::process::Command;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);
const RESOURCE: &str = "slixmpp-interop";

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// The venv's python, or a panic telling how to make it.
fn venv_python() -> PathBuf {
    let dir = interop_dir();
    let python = dir.join(".venv/bin/python");
    let wanted =
        std::fs::read(dir.join("requirements.txt")).expect("tests/interop/requirements.txt");
    // scripts/test copies requirements.txt into the venv after a successful install.
    let installed = std::fs::read(dir.join(".venv/requirements.txt")).ok();
    if !python.exists() || installed.is_none() {
        panic!(
            "the slixmpp interop tests need the Python venv {}; run `scripts/test` (the README's \
             test command, it creates it from tests/interop/requirements.txt), or \
             `scripts/test --test interop_slixmpp` to set up the same and run only these tests",
            dir.join(".venv").display()
        );
    }
    if installed.as_deref() != Some(wanted.as_slice()) {
        panic!(
            "{} was made from another tests/interop/requirements.txt; run `scripts/test` to \
             rebuild it",
            dir.join(".venv").display()
        );
    }
    python
}

/// How slixmpp connects.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Transport {
    StartTls,
    DirectTls,
}

struct Run<'a> {
    t: &'a TestHost,
    jid: String,
    password: &'a str,
    args: Vec<String>,
    transport: Transport,
}

impl<'a> Run<'a> {
    fn new(t: &'a TestHost, user: &str, password: &'a str) -> Self {
        Run {
            t,
            jid: format!("{user}@localhost/{RESOURCE}"),
            password,
            args: Vec::new(),
            transport: Transport::StartTls,
        }
    }

    fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_owned());
        self
    }

    fn mech(self, m: &str) -> Self {
        self.arg("--mech").arg(m)
    }

    /// The bare JID: slixmpp asks the server to generate the resource.
    fn without_resource(mut self) -> Self {
        self.jid = self.jid.split('/').next().expect("a JID").to_owned();
        self
    }

    fn direct_tls(mut self) -> Self {
        self.transport = Transport::DirectTls;
        self.arg("--direct-tls")
    }

    /// Runs the script; returns its JSON report. Panics (with slixmpp's log) if it did not
    /// exit 0 with one JSON object on stdout.
    async fn go(self) -> Value {
        let python = venv_python();
        let port = match self.transport {
            Transport::StartTls => self.t.host.local_addr().port(),
            Transport::DirectTls => self.t.host.tls_local_addr().expect("direct TLS").port(),
        };
        let mut cmd = Command::new(python);
        cmd.arg(interop_dir().join("slixmpp_client.py"))
            .args(["--port", &port.to_string(), "--ca"])
            .arg(self.t.host.cert_pem_path())
            .args(["--jid", &self.jid])
            // Not on the command line, where every local user's `ps` would see it.
            .env("SLIXMPP_INTEROP_PASSWORD", self.password)
            .args(&self.args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().expect("spawn the venv's python");
        let what = format!("slixmpp {} {:?}", self.jid, self.args);
        let out = match tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output()).await {
            Ok(r) => r.expect("wait for python"),
            Err(_) => panic!("{what} timed out after {SCRIPT_TIMEOUT:?}"),
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status
        );
        let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("{what}: stdout is not one JSON report ({e}):\n{stdout}\n--- stderr\n{stderr}")
        });
        println!("--- {what}\n{report:#}\n--- stderr\n{stderr}");
        report
    }
}

fn s<'v>(r: &'v Value, key: &str) -> Option<&'v str> {
    r.get(key).and_then(Value::as_str)
}

fn strings(r: &Value, key: &str) -> Vec<String> {
    r.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A login that went all the way: `mechanism` succeeded first time (slixmpp verified the
/// server's SCRAM signature before it says so), the requested resource was bound, the ping
/// answered.
fn assert_logged_in(r: &Value, mechanism: &str, transport: Transport) {
    assert_eq!(r["error"], Value::Null, "{r:#}");
    assert_eq!(r["slixmpp"], "1.17.0", "the pinned slixmpp ran");
    assert_eq!(s(r, "mechanism"), Some(mechanism), "{r:#}");
    assert_eq!(r["failures"], serde_json::json!([]), "{r:#}");
    assert_eq!(
        s(r, "bound_jid"),
        Some(format!("alice@localhost/{RESOURCE}").as_str()),
        "R-5 (RFC 6120 §7.7): the requested resource is bound: {r:#}"
    );
    assert!(
        r["ping_rtt_ms"].as_f64().is_some(),
        "XEP-0199 ping answered: {r:#}"
    );
    let offered = strings(r, "offered");
    assert!(!offered.is_empty(), "{r:#}");
    assert!(
        offered.iter().all(|m| !m.starts_with("HT-")),
        "FAST is SASL2-only, never in the RFC 6120 feature: {offered:?}"
    );
    assert_feature_sequence(r, transport);
}

const MECHANISMS: &str = "{urn:ietf:params:xml:ns:xmpp-sasl}mechanisms";
const AUTHENTICATION: &str = "{urn:xmpp:sasl:2}authentication";
const BIND: &str = "{urn:ietf:params:xml:ns:xmpp-bind}bind";
const STARTTLS: &str = "{urn:ietf:params:xml:ns:xmpp-tls}starttls";

/// The `<stream:features>` slixmpp saw, each as its children's `{ns}name`.
fn features(r: &Value) -> Vec<Vec<String>> {
    r["features"]
        .as_array()
        .expect("features")
        .iter()
        .map(|f| {
            f.as_array()
                .expect("one features element")
                .iter()
                .map(|t| t.as_str().expect("tag").to_owned())
                .collect()
        })
        .collect()
}

/// The features of a secured stream before and after authentication: SASL2 and RFC 6120
/// SASL side by side (slixmpp uses the latter), then, on the restarted stream, resource
/// binding and no SASL of either kind.
fn assert_feature_sequence(r: &Value, transport: Transport) {
    let f = features(r);
    let secured = match transport {
        Transport::StartTls => {
            assert_eq!(f.len(), 3, "plain, TLS, post-auth features: {f:?}");
            assert!(f[0].iter().any(|t| t == STARTTLS), "{f:?}");
            assert!(
                !f[0].iter().any(|t| t == MECHANISMS),
                "no SASL before TLS: {f:?}"
            );
            &f[1]
        }
        Transport::DirectTls => {
            assert_eq!(f.len(), 2, "TLS, post-auth features: {f:?}");
            &f[0]
        }
    };
    assert!(secured.iter().any(|t| t == AUTHENTICATION), "{f:?}");
    assert!(secured.iter().any(|t| t == MECHANISMS), "{f:?}");
    let after = f.last().expect("post-auth features");
    assert!(
        after.iter().any(|t| t == BIND),
        "R-4: bind offered after SASL: {f:?}"
    );
    assert!(
        !after.iter().any(|t| t == MECHANISMS || t == AUTHENTICATION),
        "R-4: no SASL after success: {f:?}"
    );
}

fn host_config(allow_plain: bool) -> HostConfig {
    let mut c = TestHost::config();
    c.server.allow_plain = allow_plain;
    c
}

/// SCRAM-SHA-256 over STARTTLS on TLS 1.3, the usual case: SASL2 and RFC 6120 SASL offered
/// side by side, the stream restarted with only `<bind/>` offered, the requested resource
/// bound, a ping answered. Python's `ssl` has no
/// `tls-exporter` (only `tls-unique`, undefined on TLS 1.3), so slixmpp cannot use -PLUS
/// here; it sends the GS2 flag `n`, which the host accepts (RFC 5802 §6: the client does not
/// support channel binding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_256_over_starttls_binds_and_pings() {
    let t = TestHost::start(TestHost::config()).await.unwrap();
    let r = Run::new(&t, "alice", "alicepass")
        .mech("SCRAM-SHA-256")
        .go()
        .await;
    assert_logged_in(&r, "SCRAM-SHA-256", Transport::StartTls);
    assert_eq!(s(&r, "tls_version"), Some("TLSv1.3"), "{r:#}");
    // The host offers -PLUS, slixmpp cannot bind: `n` (RFC 5802 §6), not `y` (which the host
    // would have to refuse as a downgrade).
    assert_eq!(s(&r, "gs2_header"), Some("n,,"), "{r:#}");
    assert_eq!(
        r["ssl_channel_binding_types"],
        serde_json::json!(["tls-unique"]),
        "{r:#}"
    );
    let offered = strings(&r, "offered");
    for m in [
        "SCRAM-SHA-1",
        "SCRAM-SHA-256",
        "SCRAM-SHA-256-PLUS",
        "PLAIN",
    ] {
        assert!(offered.iter().any(|o| o == m), "{m} offered: {offered:?}");
    }
    t.shutdown().await;
}

/// Left to itself slixmpp picks the strongest mechanism it can do: SCRAM-SHA-256-PLUS is
/// cancelled on its side (no binding on TLS 1.3), so SCRAM-SHA-256, first time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slixmpps_own_choice_on_tls13_is_scram_sha_256() {
    let t = TestHost::start(TestHost::config()).await.unwrap();
    let r = Run::new(&t, "alice", "alicepass").go().await;
    assert_logged_in(&r, "SCRAM-SHA-256", Transport::StartTls);
    t.shutdown().await;
}

/// Without a resource in its JID slixmpp sends an empty `<bind/>`; the server generates one
/// (R-5, RFC 6120 §7.6) and slixmpp takes the JID it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_generates_a_resource_when_none_is_asked_for() {
    let t = TestHost::start(TestHost::config()).await.unwrap();
    let r = Run::new(&t, "alice", "alicepass")
        .mech("SCRAM-SHA-256")
        .without_resource()
        .go()
        .await;
    assert_eq!(r["error"], Value::Null, "{r:#}");
    let jid = s(&r, "bound_jid").expect("a bound JID");
    let resource = jid
        .strip_prefix("alice@localhost/")
        .expect("alice's full JID");
    assert!(!resource.is_empty(), "{jid}");
    assert!(r["ping_rtt_ms"].as_f64().is_some(), "{r:#}");
    t.shutdown().await;
}

/// Direct TLS (XEP-0368) instead of STARTTLS: the same login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_1_over_direct_tls() {
    let t = TestHost::start(TestHost::config()).await.unwrap();
    let r = Run::new(&t, "alice", "alicepass")
        .mech("SCRAM-SHA-1")
        .direct_tls()
        .go()
        .await;
    assert_logged_in(&r, "SCRAM-SHA-1", Transport::DirectTls);
    t.shutdown().await;
}

/// PLAIN when the host allows it (`allow_plain`, on by default); not offered, and so not
/// usable, when it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_only_when_allowed() {
    let t = TestHost::start(host_config(true)).await.unwrap();
    let r = Run::new(&t, "alice", "alicepass").mech("PLAIN").go().await;
    assert_logged_in(&r, "PLAIN", Transport::StartTls);
    t.shutdown().await;

    let t = TestHost::start(host_config(false)).await.unwrap();
    let r = Run::new(&t, "alice", "alicepass").mech("PLAIN").go().await;
    let offered = strings(&r, "offered");
    assert!(!offered.iter().any(|m| m == "PLAIN"), "{offered:?}");
    assert_eq!(r["bound_jid"], Value::Null, "{r:#}");
    assert_eq!(r["disconnected_before_session"], true, "{r:#}");
    t.shutdown().await;
}

/// A wrong password is `<failure><not-authorized/>` (R-1, RFC 6120 §6.5.10), for SCRAM and
/// PLAIN alike, and nothing is bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_not_authorized() {
    let t = TestHost::start(TestHost::config()).await.unwrap();
    for mech in ["SCRAM-SHA-256", "PLAIN"] {
        let r = Run::new(&t, "alice", "wrong").mech(mech).go().await;
        assert_eq!(r["error"], Value::Null, "{r:#}");
        let failures = r["failures"].as_array().expect("failures");
        assert_eq!(failures.len(), 1, "{r:#}");
        assert_eq!(failures[0]["mechanism"], mech, "{r:#}");
        assert_eq!(failures[0]["condition"], "not-authorized", "{r:#}");
        assert_eq!(r["mechanism"], Value::Null, "{r:#}");
        assert_eq!(r["bound_jid"], Value::Null, "{r:#}");
    }
    t.shutdown().await;
}

/// On TLS 1.2 Python's `ssl` can bind, but only to `tls-unique`, which rustls does not expose
/// (CB-4), so the host advertises only `tls-exporter` and `tls-server-end-point` (XEP-0440,
/// which slixmpp ignores). slixmpp tries SCRAM-SHA-256-PLUS and SCRAM-SHA-1-PLUS with
/// `p=tls-unique`; the host refuses both, never logging in a binding it cannot check,
/// and the third attempt, SCRAM-SHA-256 with `n`, succeeds on the same stream (R-2: retries
/// allowed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_tls12_tls_unique_is_refused_then_scram_sha_256_succeeds() {
    let t = TestHost::start(TestHost::config()).await.unwrap();
    let r = Run::new(&t, "alice", "alicepass")
        .arg("--tls-max")
        .arg("1.2")
        .go()
        .await;
    assert_eq!(s(&r, "tls_version"), Some("TLSv1.2"), "{r:#}");
    let failures = r["failures"].as_array().expect("failures");
    let tried: Vec<_> = failures.iter().map(|f| &f["mechanism"]).collect();
    assert_eq!(tried, ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"], "{r:#}");
    for f in failures {
        assert_eq!(f["gs2_header"], "p=tls-unique,,", "{r:#}");
        assert_eq!(f["condition"], "not-authorized", "{r:#}");
        assert_eq!(f["text"], "unsupported channel-binding type", "{r:#}");
    }
    assert_eq!(s(&r, "mechanism"), Some("SCRAM-SHA-256"), "{r:#}");
    assert_eq!(s(&r, "gs2_header"), Some("n,,"), "{r:#}");
    assert_eq!(
        s(&r, "bound_jid"),
        Some(format!("alice@localhost/{RESOURCE}").as_str()),
        "{r:#}"
    );
    assert!(r["ping_rtt_ms"].as_f64().is_some(), "{r:#}");
    assert_feature_sequence(&r, Transport::StartTls);
    t.shutdown().await;
}

/// The FAST client our own test client sets up for [`a_fast_client_is_listed_and_revoked`].
const FAST_UA: &str = "8a1b7c3e-2d4f-4e6a-9b0c-1d2e3f4a5b6c";
const FAST_MECH: &str = "HT-SHA-256-NONE";

/// A SASL2 SCRAM login with `<request-token>` by our own client: the FAST token of a client
/// with software `sasl2-fast-client` and device `test` (what `LoginOptions::agent` sends).
async fn fast_token(t: &TestHost) -> String {
    let mut c = t
        .connect(Tls::StartTls, Some("alice@localhost"))
        .await
        .unwrap();
    let s = c
        .login_scram(
            "alice",
            "alicepass",
            "SCRAM-SHA-256",
            &LoginOptions::agent(FAST_UA)
                .request_token(FAST_MECH)
                .bind(""),
        )
        .await
        .unwrap()
        .into_success()
        .unwrap();
    c.close().await.unwrap();
    s.token.expect("a FAST token").token
}

/// A FAST login with `token` on a new connection (Bind 2 binds a resource): the client and
/// its outcome.
async fn fast_login(t: &TestHost, token: &str) -> (Client, Outcome) {
    let mut c = t
        .connect(Tls::StartTls, Some("alice@localhost"))
        .await
        .unwrap();
    let o = c
        .login_fast(
            "alice",
            token,
            FAST_MECH,
            &LoginOptions::agent(FAST_UA).bind(""),
        )
        .await
        .unwrap();
    (c, o)
}

/// Reads until the stream ends; true if a `<stream:error>` with `condition` came first.
async fn closed_with(c: &mut Client, condition: &str) -> bool {
    loop {
        match c.recv_any().await {
            Ok(e) if is_stream_error(&e, condition) => return true,
            Ok(e) if e.is("error", ns::STREAM) => return false,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// What a listing says about each client, without the times (`<last-seen>` of a connected
/// client is "now").
fn entries(list: &Value) -> Vec<(String, String, bool)> {
    let mut v: Vec<_> = list
        .as_array()
        .expect("a client list")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().expect("id").to_owned(),
                c["type"].as_str().expect("type").to_owned(),
                c["connected"].as_bool().expect("connected"),
            )
        })
        .collect();
    v.sort();
    v
}

/// XEP-0494 from slixmpp, a client without SASL2 or FAST, logged in with RFC 6120 SCRAM. Our
/// own client holds a FAST token and a live FAST session. slixmpp lists the account's clients:
/// the FAST client (software and device from its user-agent, `access`, `<fast/>`, connected)
/// and its own password session (CAM-1). slixmpp's own `revoke()` sends an iq `get`: refused
/// with `bad-request`, nothing changes (CAM-5). The same `<revoke/>` as an iq `set` revokes
/// the FAST client (CAM-2): it is gone from the list, its live session ends with
/// `not-authorized`, and the token's next FAST login answers `credentials-expired`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_client_is_listed_and_revoked() {
    let t = TestHost::start(TestHost::config()).await.unwrap();
    let token = fast_token(&t).await;
    let (mut live, o) = fast_login(&t, &token).await;
    o.into_success().expect("the token works before");

    let r = Run::new(&t, "alice", "alicepass")
        .mech("SCRAM-SHA-256")
        .arg("--cam")
        .arg("--revoke-software")
        .arg("sasl2-fast-client")
        .arg("--revoke-as-get")
        .go()
        .await;
    assert_logged_in(&r, "SCRAM-SHA-256", Transport::StartTls);
    let clients = r["clients"].as_array().expect("clients listed");
    assert_eq!(
        clients.len(),
        2,
        "the FAST client and slixmpp's session: {r:#}"
    );
    let fast: Vec<_> = clients
        .iter()
        .filter(|c| c["software"] == "sasl2-fast-client")
        .collect();
    assert_eq!(fast.len(), 1, "{r:#}");
    assert_eq!(fast[0]["device"], "test", "{r:#}");
    assert_eq!(fast[0]["type"], "access", "{r:#}");
    assert_eq!(fast[0]["auth_fast"], true, "{r:#}");
    assert_eq!(
        fast[0]["connected"], true,
        "its FAST session is live: {r:#}"
    );
    let id = fast[0]["id"].as_str().expect("client id").to_owned();
    assert!(
        !id.contains(FAST_UA),
        "the user-agent id is not the listed id: {id}"
    );
    let own: Vec<_> = clients.iter().filter(|c| c["type"] == "session").collect();
    assert_eq!(own.len(), 1, "{r:#}");
    assert_eq!(own[0]["connected"], true, "{r:#}");
    assert_eq!(
        own[0]["auth_password"], true,
        "slixmpp logged in with SCRAM: {r:#}"
    );
    assert!(
        !own[0]["id"].as_str().unwrap_or("").contains(RESOURCE),
        "session ids are not resources: {r:#}"
    );

    assert_eq!(r["revoke_get"]["type"], "error", "{r:#}");
    assert_eq!(r["revoke_get"]["condition"], "bad-request", "{r:#}");
    assert_eq!(
        entries(&r["clients_after_get"]),
        entries(&r["clients"]),
        "{r:#}"
    );

    assert_eq!(
        r["revoke"],
        serde_json::json!({"id": id, "type": "result"}),
        "{r:#}"
    );
    let after = entries(&r["clients_after"]);
    assert!(
        after.iter().all(|(i, _, _)| *i != id),
        "the revoked client is gone: {r:#}"
    );
    assert_eq!(after.len(), 1, "slixmpp's session stays: {r:#}");

    let closed = tokio::time::timeout(SCRIPT_TIMEOUT, closed_with(&mut live, "not-authorized"))
        .await
        .expect("the revoked client's session ends");
    assert!(
        closed,
        "its live session ends with a not-authorized stream error"
    );
    match fast_login(&t, &token).await.1 {
        Outcome::Failure(f) => assert_eq!(f.condition, "credentials-expired"),
        Outcome::Success(_) => panic!("a revoked FAST token logged in"),
    }
    t.shutdown().await;
}
