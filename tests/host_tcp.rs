//! The example host over real TCP + TLS, driven by the host crate's test client.
//!
//! Each test starts its own host in-process (tempdir `data_dir`, loopback ports the OS picks)
//! and is bounded by a timeout. Channel-binding bytes always come from the client's own TLS
//! session; the sans-IO flows are in `tests/fast_flows/` and are not repeated here.

use std::future::Future;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sasl2_fast::fast::HtMechanism;
use sasl2_fast::minidom::Element;
use sasl2_fast::stream::write_element;
use sasl2_fast::xmpp::{Redacted, ns};
use sasl2_fast_host::HostConfig;
use sasl2_fast_host::client::{self, Client, ClientError, LoginOptions, Outcome, Tls};
use sasl2_fast_host::harness::TestHost as Harness;
use tokio_rustls::rustls::ProtocolVersion;

type TResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

const UA: &str = "d4565fa7-4d72-4749-b3d3-740edbf87770";
const EXPR: &str = "HT-SHA-256-EXPR";

async fn bounded(secs: u64, f: impl Future<Output = TResult>) -> TResult {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .map_err(|_| format!("test did not finish within {secs} s"))?
}

/// `el` serialized as a top-level element of a `jabber:client` stream.
fn on_stream(el: &Element) -> String {
    let mut s = String::new();
    write_element(&mut s, el, ns::JABBER_CLIENT);
    s
}

/// The demo host (alice, bob; FAST defaults) with logins as alice.
struct TestHost(Harness);

impl std::ops::Deref for TestHost {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.0
    }
}

impl TestHost {
    async fn start() -> Result<TestHost, BoxError> {
        Self::start_with(|_| {}).await
    }

    /// The demo config, changed by `edit` before the host starts.
    async fn start_with(edit: impl FnOnce(&mut HostConfig)) -> Result<TestHost, BoxError> {
        let mut config = Harness::config();
        edit(&mut config);
        Ok(TestHost(Harness::start(config).await?))
    }

    /// With `[plugins.fast] token_ttl` and `token_min_ttl` in seconds.
    async fn start_with_ttls(ttl: u64, min_ttl: u64) -> Result<TestHost, BoxError> {
        Self::start_with(|c| {
            let fast = c.plugins.fast.as_mut().expect("FAST on in the demo config");
            fast.token_ttl = Duration::from_secs(ttl);
            fast.token_min_ttl = Duration::from_secs(min_ttl);
        })
        .await
    }

    /// Shuts the host down and starts it again on the same data_dir (new ports).
    async fn restart(self) -> Result<TestHost, BoxError> {
        Ok(TestHost(self.0.restart().await?))
    }

    async fn connect(&self, tls: Tls) -> Result<Client, ClientError> {
        self.0.connect(tls, Some("alice@localhost")).await
    }

    /// A STARTTLS connection, TLS up and the post-TLS stream open.
    async fn alice(&self) -> Result<Client, ClientError> {
        self.connect(Tls::StartTls).await
    }

    /// Password login (PLAIN, cheapest) that requests a token for `mech`.
    async fn token_for(&self, mech: &str) -> Result<String, BoxError> {
        let mut c = self.alice().await?;
        let s = c
            .login_plain(
                "alice",
                "alicepass",
                &LoginOptions::agent(UA).request_token(mech),
            )
            .await?
            .into_success()?;
        Ok(s.token.ok_or("no token issued")?.token)
    }

    /// FAST login of alice on a fresh connection.
    async fn fast(
        &self,
        token: &str,
        mech: &str,
        opts: &LoginOptions,
    ) -> Result<Outcome, ClientError> {
        let mut c = self.alice().await?;
        c.login_fast("alice", token, mech, opts).await
    }
}

fn condition(o: Outcome) -> Result<String, ClientError> {
    Ok(o.into_failure()?.condition)
}

#[tokio::test]
async fn features_over_starttls_tls13() -> TResult {
    bounded(30, async {
        let t = TestHost::start().await?;
        let c = t.alice().await?;
        assert_eq!(c.tls_version, Some(ProtocolVersion::TLSv1_3));
        // Before TLS: STARTTLS (required), no SASL2.
        let pre = c.pre_tls_features.as_ref().ok_or("no pre-TLS features")?;
        assert!(
            pre.get_child("starttls", ns::TLS).is_some(),
            "{:?}",
            Redacted(pre)
        );
        assert!(
            pre.get_child("authentication", ns::SASL2).is_none(),
            "{:?}",
            Redacted(pre)
        );
        // After TLS.
        let mechs = c.mechanisms();
        for m in [
            "SCRAM-SHA-256-PLUS",
            "SCRAM-SHA-256",
            "SCRAM-SHA-1",
            "PLAIN",
        ] {
            assert!(mechs.iter().any(|x| x == m), "{m} missing from {mechs:?}");
        }
        assert!(
            !mechs.iter().any(|m| m.starts_with("HT-")),
            "HT at top level: {mechs:?}"
        );
        let fast = c.fast_mechanisms();
        for suffix in ["-EXPR", "-ENDP", "-NONE"] {
            assert!(
                fast.iter().any(|m| m.ends_with(suffix)),
                "no {suffix} in {fast:?}"
            );
        }
        assert!(
            !fast.iter().any(|m| m.ends_with("-UNIQ")),
            "UNIQ on TLS 1.3: {fast:?}"
        );
        let features = c.features.as_ref().ok_or("no features")?;
        let cb = features
            .get_child("sasl-channel-binding", ns::SASL_CB)
            .ok_or("no sasl-channel-binding")?;
        let types: Vec<&str> = cb.children().filter_map(|e| e.attr("type")).collect();
        assert!(types.contains(&"tls-exporter"), "{types:?}");
        assert!(types.contains(&"tls-server-end-point"), "{types:?}");
        assert!(!types.contains(&"tls-unique"), "{types:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn password_logins_issue_tokens() -> TResult {
    bounded(60, async {
        let t = TestHost::start().await?;
        let opts = LoginOptions::agent(UA).request_token(EXPR);
        for mech in ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1"] {
            let mut c = t.alice().await?;
            let s = c
                .login_scram("alice", "alicepass", mech, &opts)
                .await?
                .into_success()
                .map_err(|e| format!("{mech}: {e}"))?;
            assert_eq!(s.jid, "alice@localhost", "{mech}");
            let tok = s.token.ok_or(format!("{mech}: no token"))?;
            assert!(
                tok.expiry.ends_with('Z') && tok.expiry.len() >= 20,
                "{tok:?}"
            );
        }
        let mut c = t.alice().await?;
        let s = c
            .login_plain("alice", "alicepass", &opts)
            .await?
            .into_success()?;
        assert!(s.token.is_some());
        // Wrong password: SCRAM failure is not-authorized.
        let mut c = t.alice().await?;
        let o = c
            .login_scram("alice", "wrong", "SCRAM-SHA-256-PLUS", &opts)
            .await?;
        assert_eq!(condition(o)?, "not-authorized");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn fast_login_with_each_offered_mechanism() -> TResult {
    bounded(90, async {
        let t = TestHost::start().await?;
        let offered = t.alice().await?.fast_mechanisms();
        assert!(!offered.is_empty());
        for mech in &offered {
            let token = t.token_for(mech).await?;
            let mut c = t.alice().await?;
            // login_fast checks <additional-data> == HMAC(token, "Responder" || cb).
            let s = c
                .login_fast("alice", &token, mech, &LoginOptions::agent(UA))
                .await?
                .into_success()
                .map_err(|e| format!("{mech}: {e}"))?;
            assert_eq!(s.jid, "alice@localhost");
            // A token issued for one mechanism is not valid for another binding.
            let other = if mech.ends_with("-NONE") {
                mech.replace("-NONE", "-EXPR")
            } else {
                mech.rsplit_once('-')
                    .map(|(h, _)| format!("{h}-NONE"))
                    .unwrap_or_default()
            };
            if offered.contains(&other) {
                assert_eq!(
                    condition(t.fast(&token, &other, &LoginOptions::agent(UA)).await?)?,
                    "not-authorized",
                    "{mech} token used as {other}"
                );
            }
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn fast_replay_on_another_connection_fails() -> TResult {
    bounded(30, async {
        let t = TestHost::start().await?;
        let token = t.token_for(EXPR).await?;
        let mut a = t.alice().await?;
        let msg = a.fast_initial_response("alice", &token, EXPR)?;
        let mut b = t.alice().await?;
        assert_ne!(a.cb.tls_exporter, b.cb.tls_exporter);
        let o = b
            .login_fast_message(&msg, &token, EXPR, &LoginOptions::agent(UA))
            .await?;
        assert_eq!(condition(o)?, "not-authorized");
        // The message is valid on its own session.
        a.login_fast_message(&msg, &token, EXPR, &LoginOptions::agent(UA))
            .await?
            .into_success()?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn rotation_keeps_old_token_until_new_one_is_used() -> TResult {
    bounded(30, async {
        let t = TestHost::start_with_ttls(60, 2).await?;
        let ua = LoginOptions::agent(UA);
        let t1 = t.token_for(EXPR).await?;
        // Fresh token: no rotation (min_ttl 2 s leaves room for a slow debug build).
        let s = t.fast(&t1, EXPR, &ua).await?.into_success()?;
        assert!(s.token.is_none(), "rotated a token younger than min_ttl");
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let s = t.fast(&t1, EXPR, &ua).await?.into_success()?;
        let mut newest = s.token.ok_or("no rotation after min_ttl")?.token;
        assert_ne!(newest, t1);
        // The old token still works while the new one is unused (it may rotate again,
        // overwriting the unused 'new' slot).
        let s = t.fast(&t1, EXPR, &ua).await?.into_success()?;
        if let Some(tok) = s.token {
            newest = tok.token;
        }
        // Using the new token promotes it; the old one is gone.
        t.fast(&newest, EXPR, &ua).await?.into_success()?;
        assert_eq!(condition(t.fast(&t1, EXPR, &ua).await?)?, "not-authorized");
        t.fast(&newest, EXPR, &ua).await?.into_success()?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn invalidate_logs_out() -> TResult {
    bounded(30, async {
        let t = TestHost::start().await?;
        let token = t.token_for(EXPR).await?;
        let s = t
            .fast(&token, EXPR, &LoginOptions::agent(UA).invalidate())
            .await?
            .into_success()?;
        assert!(s.token.is_none(), "token issued on invalidate");
        let o = t.fast(&token, EXPR, &LoginOptions::agent(UA)).await?;
        let c = condition(o)?;
        assert!(c == "not-authorized" || c == "credentials-expired", "{c}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn expired_token_is_credentials_expired() -> TResult {
    bounded(30, async {
        let t = TestHost::start_with_ttls(2, 1).await?;
        let token = t.token_for(EXPR).await?;
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let o = t.fast(&token, EXPR, &LoginOptions::agent(UA)).await?;
        assert_eq!(condition(o)?, "credentials-expired");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn wrong_token_then_password_on_same_stream() -> TResult {
    bounded(30, async {
        let t = TestHost::start().await?;
        let _ = t.token_for(EXPR).await?;
        let mut c = t.alice().await?;
        let o = c
            .login_fast(
                "alice",
                "bm90IHRoZSB0b2tlbg",
                EXPR,
                &LoginOptions::agent(UA),
            )
            .await?;
        assert_eq!(condition(o)?, "not-authorized");
        let s = c
            .login_scram(
                "alice",
                "alicepass",
                "SCRAM-SHA-256-PLUS",
                &LoginOptions::agent(UA).request_token(EXPR).bind("retry"),
            )
            .await?
            .into_success()?;
        let token = s.token.ok_or("no token on fallback")?.token;
        c.ping().await?;
        t.fast(&token, EXPR, &LoginOptions::agent(UA))
            .await?
            .into_success()?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn tokens_survive_restart() -> TResult {
    bounded(60, async {
        let t = TestHost::start().await?;
        let token = t.token_for(EXPR).await?;
        let t = t.restart().await?;
        t.fast(&token, EXPR, &LoginOptions::agent(UA))
            .await?
            .into_success()?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn password_change_revokes_tokens() -> TResult {
    bounded(30, async {
        let t = TestHost::start().await?;
        let token = t.token_for(EXPR).await?;
        t.host.change_password("alice", "newpass").await?;
        let o = t.fast(&token, EXPR, &LoginOptions::agent(UA)).await?;
        assert_eq!(condition(o)?, "credentials-expired");
        let mut c = t.alice().await?;
        let o = c
            .login_scram(
                "alice",
                "alicepass",
                "SCRAM-SHA-256-PLUS",
                &LoginOptions::agent(UA),
            )
            .await?;
        assert_eq!(condition(o)?, "not-authorized");
        c.login_scram(
            "alice",
            "newpass",
            "SCRAM-SHA-256-PLUS",
            &LoginOptions::agent(UA),
        )
        .await?
        .into_success()?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn plaintext_refuses_sasl2_when_tls_required() -> TResult {
    bounded(30, async {
        let t = TestHost::start().await?;
        let mut c = t.connect(Tls::None).await?;
        let f = c.features.clone().ok_or("no features")?;
        assert!(
            f.get_child("starttls", ns::TLS).is_some(),
            "{:?}",
            Redacted(&f)
        );
        assert!(
            f.get_child("authentication", ns::SASL2).is_none(),
            "{:?}",
            Redacted(&f)
        );
        let auth = Client::authenticate_element(
            "PLAIN",
            Some(b"\0alice\0alicepass"),
            &LoginOptions::agent(UA),
            false,
        );
        c.send(&auth).await?;
        match c.recv_any().await {
            Ok(e) if e.is("failure", ns::SASL2) => {
                eprintln!(
                    "plaintext authenticate answered with SASL failure: {:?}",
                    Redacted(&e)
                );
            }
            Ok(e) if e.is("error", ns::STREAM) => {
                eprintln!(
                    "plaintext authenticate answered with stream error: {:?}",
                    Redacted(&e)
                );
            }
            Ok(e) => {
                return Err(
                    format!("plaintext authenticate answered with {:?}", Redacted(&e)).into(),
                );
            }
            Err(ClientError::Closed) => {
                return Err("closed without a failure or stream error".into());
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn direct_tls_listener() -> TResult {
    bounded(30, async {
        let t = TestHost::start().await?;
        let mut c = t.connect(Tls::Direct).await?;
        assert_eq!(c.tls_version, Some(ProtocolVersion::TLSv1_3));
        assert!(c.fast_mechanisms().iter().any(|m| m == EXPR));
        let s = c
            .login_scram(
                "alice",
                "alicepass",
                "SCRAM-SHA-256-PLUS",
                &LoginOptions::agent(UA).request_token(EXPR),
            )
            .await?
            .into_success()?;
        let token = s.token.ok_or("no token")?.token;
        let mut c = t.connect(Tls::Direct).await?;
        // Stanzas need a bound resource (the host refuses them before Bind).
        c.login_fast(
            "alice",
            &token,
            EXPR,
            &LoginOptions::agent(UA).bind("direct"),
        )
        .await?
        .into_success()?;
        c.ping().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn pipelined_fast_authenticate_before_features() -> TResult {
    bounded(30, async {
        let t = TestHost::start().await?;
        let token = t.token_for(EXPR).await?;
        for tls in [Tls::StartTls, Tls::Direct] {
            // Conversations: stream header and <authenticate> in one write, then read.
            let mut c = Client::establish(t.opts(tls, Some("alice@localhost"))?).await?;
            let msg = c.fast_initial_response("alice", &token, EXPR)?;
            let auth = Client::authenticate_element(
                EXPR,
                Some(&msg),
                &LoginOptions::agent(UA).bind("pipelined"),
                true,
            );
            let mut bytes = c.header_xml();
            bytes.push_str(&on_stream(&auth));
            c.send_raw(bytes.as_bytes()).await?;
            c.read_stream_start().await?;
            let s = c.read_fast_outcome(&token, EXPR).await?.into_success()?;
            assert!(s.jid.starts_with("alice@localhost/"), "{}", s.jid);
            c.ping().await?;
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn bind2_gives_full_jid() -> TResult {
    bounded(30, async {
        let t = TestHost::start().await?;
        let mut c = t.alice().await?;
        let s = c
            .login_scram(
                "alice",
                "alicepass",
                "SCRAM-SHA-256-PLUS",
                &LoginOptions::agent(UA).bind("test"),
            )
            .await?
            .into_success()?;
        assert!(s.jid.starts_with("alice@localhost/test"), "{}", s.jid);
        assert!(s.bound.is_some(), "{:?}", s.element);
        c.ping().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn ping_and_message_between_two_sessions() -> TResult {
    bounded(30, async {
        let t = TestHost::start().await?;
        let mut a = t.alice().await?;
        let sa = a
            .login_plain("alice", "alicepass", &LoginOptions::agent(UA).bind("a"))
            .await?
            .into_success()?;
        let mut b = t.alice().await?;
        let sb = b
            .login_plain(
                "alice",
                "alicepass",
                &LoginOptions::agent("8b1c7e4e-0000-4000-8000-000000000002").bind("b"),
            )
            .await?
            .into_success()?;
        assert_ne!(sa.jid, sb.jid);
        a.ping().await?;
        b.ping().await?;
        a.send_message(&sb.jid, "hello b").await?;
        let m = b.recv_message().await?;
        assert_eq!(
            m.get_child("body", ns::JABBER_CLIENT)
                .map(Element::text)
                .as_deref(),
            Some("hello b")
        );
        assert_eq!(m.attr("from"), Some(sa.jid.as_str()), "{:?}", Redacted(&m));
        b.send_message(&sa.jid, "hello a").await?;
        let m = a.recv_message().await?;
        assert_eq!(m.attr("from"), Some(sb.jid.as_str()), "{:?}", Redacted(&m));
        Ok(())
    })
    .await
}

/// What a hostile input must provoke.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// SASL2 `<failure>` with this condition; the stream stays usable.
    SaslFailure(&'static str),
    /// `<stream:error>` with this condition.
    StreamError(&'static str),
    /// The input is harmless: the FAST login inside it succeeds.
    FastSuccess,
}

/// Sends `data` in chunks, watching for an answer between chunks (the server may answer and
/// close before everything is written), then waits up to `within` for the first element.
async fn send_and_answer(
    c: &mut Client,
    data: &[u8],
    within: Duration,
) -> Result<Element, ClientError> {
    let deadline = tokio::time::Instant::now() + within;
    c.set_timeout(Duration::from_millis(20));
    for chunk in data.chunks(16 * 1024) {
        if c.send_raw(chunk).await.is_err() {
            break;
        }
        match c.recv_any().await {
            Ok(e) => return Ok(e),
            Err(ClientError::Timeout(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    c.set_timeout(left.max(Duration::from_millis(1)));
    c.recv_any().await
}

fn ht_message(authcid: &[u8], mac_len: usize) -> Vec<u8> {
    let mut m = authcid.to_vec();
    m.push(0);
    m.extend(std::iter::repeat_n(0x5a, mac_len));
    m
}

#[tokio::test]
async fn hostile_inputs() -> TResult {
    bounded(120, async {
        let t = TestHost::start().await?;
        let token = t.token_for(EXPR).await?;
        let ua = LoginOptions::agent(UA);
        type Build = Box<dyn Fn(&Client) -> Result<Vec<u8>, ClientError>>;
        let auth_with = |mech: &str, ir: &[u8], fast: bool| {
            on_stream(&Client::authenticate_element(
                mech,
                Some(ir),
                &LoginOptions::agent(UA),
                fast,
            ))
            .into_bytes()
        };
        let cases: Vec<(&str, Build, Expect)> = vec![
            (
                "200 KiB initial-response",
                Box::new(move |_| Ok(auth_with("PLAIN", &vec![b'a'; 150 * 1024], false))),
                Expect::StreamError("policy-violation"),
            ),
            (
                "300-byte authcid in an HT message",
                Box::new(move |_| Ok(auth_with(EXPR, &ht_message(&[b'u'; 300], 32), true))),
                Expect::SaslFailure("not-authorized"),
            ),
            (
                "1000-deep nesting",
                Box::new(|_| {
                    let mut s = String::from("<message>");
                    s.push_str(&"<a>".repeat(1000));
                    s.push_str(&"</a>".repeat(1000));
                    s.push_str("</message>");
                    Ok(s.into_bytes())
                }),
                Expect::StreamError("policy-violation"),
            ),
            (
                "invalid UTF-8",
                Box::new(|_| {
                    let mut v = b"<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>".to_vec();
                    v.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
                    v.extend_from_slice(b"</initial-response></authenticate>");
                    Ok(v)
                }),
                Expect::StreamError("not-well-formed"),
            ),
            (
                "unknown-namespace child with a FAST request",
                Box::new({
                    let token = token.clone();
                    move |c| {
                        let msg = c.fast_initial_response("alice", &token, EXPR)?;
                        let mut a = Client::authenticate_element(EXPR, Some(&msg), &LoginOptions::agent(UA), true);
                        a.append_child(
                            Element::builder("surprise", "urn:example:unknown")
                                .attr(rxml::NcName::try_from("x").expect("valid name"), "1")
                                .append(Element::builder("inner", "urn:example:unknown").append("?"))
                                .build(),
                        );
                        Ok(on_stream(&a).into_bytes())
                    }
                }),
                Expect::FastSuccess,
            ),
            (
                "comment",
                Box::new(|_| Ok(b"<!-- hello -->".to_vec())),
                Expect::StreamError("restricted-xml"),
            ),
            (
                "never-ending element",
                Box::new(|_| {
                    let mut s = String::from("<message to='bob@localhost'>");
                    while s.len() < 512 * 1024 {
                        s.push_str("<x/>");
                    }
                    Ok(s.into_bytes())
                }),
                Expect::StreamError("policy-violation"),
            ),
        ];
        let mut report = Vec::new();
        for (name, build, expect) in &cases {
            let mut c = t.alice().await?;
            let data = build(&c)?;
            let started = std::time::Instant::now();
            let got = send_and_answer(&mut c, &data, Duration::from_secs(5)).await;
            let ok = match (expect, &got) {
                (Expect::SaslFailure(cond), Ok(e)) => {
                    e.is("failure", ns::SASL2) && e.children().any(|x| x.name() == *cond)
                }
                (Expect::StreamError(cond), Ok(e)) => client::is_stream_error(e, cond),
                (Expect::FastSuccess, Ok(e)) => {
                    // Also check the server proof, as login_fast would.
                    let m = HtMechanism::from_name(EXPR).ok_or("EXPR")?;
                    let proof = B64.encode(m.responder_mac(token.as_bytes(), &c.cb_for(m)?));
                    e.is("success", ns::SASL2)
                        && e.get_child("additional-data", ns::SASL2).map(Element::text)
                            == Some(proof)
                }
                _ => false,
            };
            report.push(format!(
                "{name}: expected {expect:?}, got {:?} after {:?}{}",
                got.as_ref().map(Redacted),
                started.elapsed(),
                if ok { "" } else { "  <-- MISMATCH" }
            ));
            // The host keeps serving.
            let mut c = t.alice().await?;
            c.login_fast("alice", &token, EXPR, &ua).await?.into_success()?;
        }
        let text = report.join("\n");
        eprintln!("{text}");
        assert!(!text.contains("MISMATCH"), "\n{text}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn fast_needs_user_agent_and_known_mechanism() -> TResult {
    bounded(30, async {
        let t = TestHost::start().await?;
        let token = t.token_for(EXPR).await?;
        let o = t.fast(&token, EXPR, &LoginOptions::default()).await?;
        assert_eq!(condition(o)?, "malformed-request");
        // HT without <fast> is not a top-level mechanism.
        let mut c = t.alice().await?;
        let msg = c.fast_initial_response("alice", &token, EXPR)?;
        c.send(&Client::authenticate_element(
            EXPR,
            Some(&msg),
            &LoginOptions::agent(UA),
            false,
        ))
        .await?;
        let o = c.read_auth_step().await?.map_err(|_| "challenge")?;
        assert_eq!(condition(o)?, "invalid-mechanism");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn plain_can_be_switched_off() -> TResult {
    // XEP-0388 S-28: servers SHOULD NOT offer PLAIN; `allow_plain = false` follows that.
    bounded(30, async {
        let t = TestHost::start_with(|c| c.server.allow_plain = false).await?;
        let mut c = t.0.connect(Tls::StartTls, None).await?;
        let mechs = c.mechanisms();
        assert!(!mechs.iter().any(|m| m == "PLAIN"), "{mechs:?}");
        assert!(mechs.iter().any(|m| m == "SCRAM-SHA-256-PLUS"), "{mechs:?}");
        let o = c
            .login_plain("alice", "alicepass", &LoginOptions::agent(UA))
            .await?;
        assert_eq!(condition(o)?, "invalid-mechanism");
        t.0.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn over_the_connection_limit_a_stream_error_says_why() -> TResult {
    bounded(30, async {
        use tokio::io::AsyncReadExt as _;
        let t = TestHost::start_with(|c| c.server.max_connections = 1).await?;
        let _first = t.0.connect(Tls::StartTls, None).await?;
        let mut second = tokio::net::TcpStream::connect(t.host.local_addr()).await?;
        let mut got = Vec::new();
        second.read_to_end(&mut got).await?;
        let text = String::from_utf8(got)?;
        assert!(text.contains("<policy-violation"), "{text}");
        assert!(text.ends_with("</stream:stream>"), "{text}");
        t.0.shutdown().await;
        Ok(())
    })
    .await
}
