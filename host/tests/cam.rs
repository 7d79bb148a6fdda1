//! XEP-0494 Client Access Management on the example host, over real TLS with the test
//! client: listing, revoking a FAST client (its next FAST login gets `credentials-expired`, its
//! live stream is closed), revoking a session, unknown and foreign ids, and the `get` revoke.
//! Rule ids CAM-n are in docs/protocol.md; the sans-IO cases are in tests/client_access.rs.

use std::future::Future;
use std::time::Duration;

use sasl2_fast::minidom::Element;
use sasl2_fast::xmpp::ns;
use sasl2_fast::xmpp_parsers::cam::{Client as CamClient, Clients, List, Revoke, Type};
use sasl2_fast::xmpp_parsers::iq::Iq;
use sasl2_fast_host::client::{self, Client, ClientError, LoginOptions, Tls};
use sasl2_fast_host::harness::TestHost;

type TResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const NS_CAM: &str = "urn:xmpp:cam:0";
const UA: &str = "3c0d9e4b-7f1a-4c2e-9b8d-5a6f7e8d9c01";
const MECH: &str = "HT-SHA-256-EXPR";

async fn bounded(secs: u64, f: impl Future<Output = TResult>) -> TResult {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .map_err(|_| format!("test did not finish within {secs} s"))?
}

async fn connect(t: &TestHost, user: &str) -> Result<Client, ClientError> {
    t.connect(Tls::StartTls, Some(&format!("{user}@localhost")))
        .await
}

/// Password login of alice that requests a FAST token; the stream is closed again.
async fn token(t: &TestHost) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let mut c = connect(t, "alice").await?;
    let s = c
        .login_plain(
            "alice",
            "alicepass",
            &LoginOptions::agent(UA).request_token(MECH).bind("tok"),
        )
        .await?
        .into_success()?;
    c.close().await?;
    Ok(s.token.ok_or("no token")?.token)
}

/// A live FAST session of alice's client `UA`.
async fn fast_session(t: &TestHost, token: &str) -> Result<Client, ClientError> {
    let mut c = connect(t, "alice").await?;
    c.login_fast("alice", token, MECH, &LoginOptions::agent(UA).bind("phone"))
        .await?
        .into_success()?;
    Ok(c)
}

/// The outcome condition of a FAST login with `token` on a fresh stream.
async fn fast_condition(t: &TestHost, token: &str) -> Result<Option<String>, ClientError> {
    let mut c = connect(t, "alice").await?;
    let o = c
        .login_fast("alice", token, MECH, &LoginOptions::agent(UA))
        .await?;
    Ok(match o {
        client::Outcome::Success(_) => None,
        client::Outcome::Failure(f) => Some(f.condition),
    })
}

/// An RFC 6120 SCRAM login with resource binding: what slixmpp does (no SASL2, no FAST).
async fn password_session(t: &TestHost, user: &str) -> Result<Client, ClientError> {
    let mut c = connect(t, user).await?;
    c.login_scram_rfc6120(user, &format!("{user}pass"), "SCRAM-SHA-256")
        .await?
        .into_success()?;
    Ok(c)
}

fn iq(typ: &str, id: &str, to: Option<&str>, payload: Element) -> Element {
    let to = to.map(|t| sasl2_fast::jid::Jid::new(t).expect("valid JID"));
    let id = id.to_owned();
    Element::from(match typ {
        "get" => Iq::Get {
            from: None,
            to,
            id,
            payload,
        },
        _ => Iq::Set {
            from: None,
            to,
            id,
            payload,
        },
    })
}

async fn ask(
    c: &mut Client,
    typ: &str,
    to: Option<&str>,
    payload: Element,
) -> Result<Element, ClientError> {
    let id = format!("cam-{}", rand_id());
    c.send(&iq(typ, &id, to, payload)).await?;
    c.recv_matching(|e| e.is("iq", ns::JABBER_CLIENT) && e.attr("id") == Some(id.as_str()))
        .await
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

async fn list(
    c: &mut Client,
    to: Option<&str>,
) -> Result<Vec<CamClient>, Box<dyn std::error::Error + Send + Sync>> {
    let r = ask(c, "get", to, Element::from(List)).await?;
    if r.attr("type") != Some("result") {
        return Err(format!("list answered {}", String::from(&r)).into());
    }
    let clients = r.get_child("clients", NS_CAM).ok_or("no <clients>")?;
    Ok(Clients::try_from(clients.clone())?.clients)
}

fn revoke_el(id: &str) -> Element {
    Element::from(Revoke { id: id.to_owned() })
}

/// (error type, defined condition, child names of `<error>`).
fn stanza_error(r: &Element) -> (String, String, Vec<String>) {
    let Some(e) = r.get_child("error", ns::JABBER_CLIENT) else {
        return (
            String::new(),
            format!("no error in {}", String::from(r)),
            vec![],
        );
    };
    let names: Vec<String> = e.children().map(|c| c.name().to_owned()).collect();
    let cond = e
        .children()
        .find(|c| c.ns() == ns::XMPP_STANZAS && c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_default();
    (e.attr("type").unwrap_or("").to_owned(), cond, names)
}

/// Reads until the stream ends; true if a `<stream:error>` with `condition` came first.
async fn closed_with(c: &mut Client, condition: &str) -> bool {
    loop {
        match c.recv_any().await {
            Ok(e) if client::is_stream_error(&e, condition) => return true,
            Ok(e) if e.is("error", ns::STREAM) => return false,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

fn fast_entry(list: &[CamClient]) -> Option<&CamClient> {
    list.iter().find(|c| c.type_ == Type::Access)
}

// CAM-1: the FAST client (software/device from its <user-agent>, connected while its FAST
// session is live) and the asking password session, over TLS.
#[tokio::test]
async fn list_shows_the_fast_client_and_the_live_session() -> TResult {
    bounded(60, async {
        let t = TestHost::start(TestHost::config()).await?;
        let tok = token(&t).await?;
        let mut me = password_session(&t, "alice").await?;

        let l = list(&mut me, None).await?;
        let f = fast_entry(&l).ok_or("no FAST client listed")?;
        assert_eq!(f.user_agent.software, "sasl2-fast-client");
        assert_eq!(f.user_agent.device.as_deref(), Some("test"));
        assert!(f.auth.fast && f.id.starts_with("fast/"));
        assert!(!f.connected, "no FAST session yet");
        assert!(f.first_seen.is_some() && f.last_seen.is_some());
        assert!(!f.id.contains(UA));
        let mine = l
            .iter()
            .find(|c| c.type_ == Type::Session)
            .ok_or("own session not listed")?;
        assert!(mine.connected && mine.auth.password);
        assert_eq!(l.len(), 2, "{l:?}");

        // A live FAST session makes the client connected, and is not listed twice. Asking
        // the own bare JID is the same as asking the server.
        let _phone = fast_session(&t, &tok).await?;
        let l = list(&mut me, Some("alice@localhost")).await?;
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(fast_entry(&l).ok_or("FAST client gone")?.connected);
        t.shutdown().await;
        Ok(())
    })
    .await
}

// CAM-2: revoking the FAST client closes its live stream and its next FAST login answers
// credentials-expired.
#[tokio::test]
async fn revoking_a_fast_client_ends_its_session_and_its_token() -> TResult {
    bounded(60, async {
        let t = TestHost::start(TestHost::config()).await?;
        let tok = token(&t).await?;
        let mut phone = fast_session(&t, &tok).await?;
        let mut me = password_session(&t, "alice").await?;
        let id = fast_entry(&list(&mut me, None).await?)
            .ok_or("no FAST client")?
            .id
            .clone();

        let r = ask(&mut me, "set", None, revoke_el(&id)).await?;
        assert_eq!(r.attr("type"), Some("result"), "{}", String::from(&r));
        assert!(r.children().next().is_none());
        assert!(
            closed_with(&mut phone, "not-authorized").await,
            "the revoked client's stream is closed with not-authorized"
        );
        assert_eq!(
            fast_condition(&t, &tok).await?.as_deref(),
            Some("credentials-expired")
        );
        let l = list(&mut me, None).await?;
        assert!(
            fast_entry(&l).is_none(),
            "revoked client still listed: {l:?}"
        );
        // The asking session is untouched.
        me.ping().await?;
        t.shutdown().await;
        Ok(())
    })
    .await
}

// CAM-3: revoking a password session closes it; the answer is XEP-0494 §3.2's
// service-unavailable + <password-reset-required/>.
#[tokio::test]
async fn revoking_a_session_closes_it() -> TResult {
    bounded(60, async {
        let t = TestHost::start(TestHost::config()).await?;
        let mut other = password_session(&t, "alice").await?;
        other.ping().await?;
        let mut me = password_session(&t, "alice").await?;
        let l = list(&mut me, None).await?;
        assert_eq!(l.len(), 2, "{l:?}");
        // A session that ends leaves the list.
        let ids: Vec<String> = l.iter().map(|c| c.id.clone()).collect();
        other.close().await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = list(&mut me, None).await?;
        assert_eq!(now.len(), 1, "{now:?}");
        assert!(ids.contains(&now[0].id), "session ids are stable");

        // A new session is the entry that was not listed before it came.
        let before: Vec<String> = list(&mut me, None)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect();
        let mut other = password_session(&t, "alice").await?;
        other.ping().await?;
        let l = list(&mut me, None).await?;
        let target = l
            .iter()
            .find(|c| !before.contains(&c.id))
            .ok_or("new session not listed")?
            .id
            .clone();
        let r = ask(&mut me, "set", None, revoke_el(&target)).await?;
        let (typ, cond, names) = stanza_error(&r);
        assert_eq!(
            (typ.as_str(), cond.as_str()),
            ("cancel", "service-unavailable")
        );
        assert!(
            names.iter().any(|n| n == "password-reset-required"),
            "{names:?}"
        );
        assert!(closed_with(&mut other, "not-authorized").await);
        me.ping().await?;
        t.shutdown().await;
        Ok(())
    })
    .await
}

// CAM-4: an unknown id is item-not-found; bob neither sees nor revokes alice's clients.
// S-12: so alice's <software> and <device> never reach bob's list.
#[tokio::test]
async fn unknown_ids_and_other_accounts() -> TResult {
    bounded(60, async {
        let t = TestHost::start(TestHost::config()).await?;
        let tok = token(&t).await?;
        let _phone = fast_session(&t, &tok).await?;
        let mut alice = password_session(&t, "alice").await?;
        let alice_ids: Vec<String> = list(&mut alice, None)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(alice_ids.len(), 2);

        let mut bob = password_session(&t, "bob").await?;
        let bobs = list(&mut bob, None).await?;
        assert_eq!(bobs.len(), 1, "bob sees only his own session: {bobs:?}");
        assert!(!alice_ids.contains(&bobs[0].id));
        for id in alice_ids
            .iter()
            .map(String::as_str)
            .chain(["fast/AAAAAAAAAAAAAAAA", "session/0"])
        {
            let r = ask(&mut bob, "set", None, revoke_el(id)).await?;
            let (typ, cond, _) = stanza_error(&r);
            assert_eq!(
                (typ.as_str(), cond.as_str()),
                ("cancel", "item-not-found"),
                "{id}"
            );
        }
        // Addressed to alice's bare JID, bob's request is not XEP-0494 for bob's account and
        // is not delivered to the server's handler for alice either.
        let r = ask(
            &mut bob,
            "get",
            Some("alice@localhost"),
            Element::from(List),
        )
        .await?;
        assert_eq!(r.attr("type"), Some("error"), "{}", String::from(&r));
        assert!(r.get_child("clients", NS_CAM).is_none());
        // Nothing of alice's changed.
        assert_eq!(list(&mut alice, None).await?.len(), 2);
        alice.ping().await?;
        t.shutdown().await;
        Ok(())
    })
    .await
}

// CAM-5: a revoke sent as type 'get' (slixmpp 1.17) is refused with modify/bad-request and
// changes nothing: the token still logs in.
#[tokio::test]
async fn revoke_as_get_is_refused_and_changes_nothing() -> TResult {
    bounded(60, async {
        let t = TestHost::start(TestHost::config()).await?;
        let tok = token(&t).await?;
        let mut me = password_session(&t, "alice").await?;
        let id = fast_entry(&list(&mut me, None).await?)
            .ok_or("no FAST client")?
            .id
            .clone();
        let r = ask(&mut me, "get", None, revoke_el(&id)).await?;
        let (typ, cond, _) = stanza_error(&r);
        assert_eq!((typ.as_str(), cond.as_str()), ("modify", "bad-request"));
        assert_eq!(
            fast_condition(&t, &tok).await?,
            None,
            "the token still works"
        );
        assert!(fast_entry(&list(&mut me, None).await?).is_some());
        t.shutdown().await;
        Ok(())
    })
    .await
}

#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Issue 12 item 5 on the host: a XEP-0494 revocation names the asking session's full JID, a
// session close is logged too, and `Host::change_password` (what `host passwd` runs) writes
// `password-change`; no line holds the token or the user-agent id.
#[tokio::test]
async fn audit_lines_of_the_host() -> TResult {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    bounded(60, async {
        let t = TestHost::start(TestHost::config()).await?;
        let tok = token(&t).await?;
        let mut phone = fast_session(&t, &tok).await?;
        let mut me = connect(&t, "alice").await?;
        let my_jid = me
            .login_scram_rfc6120("alice", "alicepass", "SCRAM-SHA-256")
            .await?
            .into_success()?
            .jid;
        let l = list(&mut me, None).await?;
        let fast_id = fast_entry(&l).ok_or("no FAST client")?.id.clone();
        let my_id = l
            .iter()
            .find(|c| c.type_ == Type::Session)
            .ok_or("own session not listed")?
            .id
            .clone();
        assert_eq!(
            ask(&mut me, "set", None, revoke_el(&fast_id))
                .await?
                .attr("type"),
            Some("result")
        );
        assert!(closed_with(&mut phone, "not-authorized").await);
        let mut other = password_session(&t, "alice").await?;
        other.ping().await?;
        let other_id = list(&mut me, None)
            .await?
            .into_iter()
            .find(|c| c.type_ == Type::Session && c.id != my_id)
            .ok_or("other session not listed")?
            .id;
        let r = ask(&mut me, "set", None, revoke_el(&other_id)).await?;
        assert_eq!(stanza_error(&r).1, "service-unavailable");
        assert!(closed_with(&mut other, "not-authorized").await);
        t.host.change_password("alice", "changed-pass").await?;
        let log = String::from_utf8(capture.0.lock().unwrap().clone())?;
        let audit: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("sasl2_fast::audit"))
            .collect();
        assert_eq!(audit.len(), 3, "{audit:#?}");
        for l in &audit[..2] {
            assert!(l.contains("by=\"user\"") && l.contains(&my_jid), "{l}");
            assert!(l.contains("account=\"alice\""), "{l}");
        }
        assert!(audit[0].contains("FAST access revoked"), "{}", audit[0]);
        assert!(audit[1].contains("session closed"), "{}", audit[1]);
        assert!(audit[2].contains("by=\"password-change\""), "{}", audit[2]);
        for l in &audit {
            assert!(!l.contains(&tok) && !l.contains(UA), "{l}");
        }
        t.shutdown().await;
        Ok(())
    })
    .await
}
