//! XEP-0494 Client Access Management, sans-IO: `ClientAccess::handle` with a real token
//! authority over the memory store and a session table standing in for a host's router
//! (the host over TLS is `host/tests/cam.rs`). Rule ids CAM-n are in docs/protocol.md.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sasl2_fast::fast::cam::{ClientAccess, LiveSession, LiveSessions, NS_CAM};
use sasl2_fast::fast::clock::ManualClock;
use sasl2_fast::fast::hooks::RevokedBy;
use sasl2_fast::fast::tokens::{IssueKind, TokenRequest};
use sasl2_fast::fast::{FastConfig, FastTokens, HtMechanism, Pepper};
use sasl2_fast::jid::FullJid;
use sasl2_fast::minidom::Element;
use sasl2_fast::store::ClientKey;
use sasl2_fast::store::memory::MemoryStore;
use sasl2_fast::xmpp_parsers::cam::{Clients, Type};

const UA_PHONE: &str = "6a1c3e1e-4a36-4f0e-9d35-3f6f0d1b2c01";
const UA_LAPTOP: &str = "0b7f6c2d-2b1e-4f7a-8c9d-1e2f3a4b5c02";
const T0: u64 = 1_780_000_000_000;

/// Sessions of a host, by account; `close` records what it closed.
#[derive(Debug, Default)]
struct Sessions {
    live: Mutex<Vec<(String, LiveSession)>>,
    closed: Mutex<Vec<String>>,
}

impl Sessions {
    fn add(&self, account: &str, id: &str, ua: Option<&str>, password: bool) {
        self.live.lock().unwrap().push((
            account.to_owned(),
            LiveSession {
                id: id.to_owned(),
                resource: format!("res-{id}"),
                software: Some("Sess".into()),
                device: None,
                connected_since: T0,
                client: ua.map(|u| ClientKey::new(account, u).unwrap()),
                password,
            },
        ));
    }
    fn closed(&self) -> Vec<String> {
        self.closed.lock().unwrap().clone()
    }
}

impl LiveSessions for Sessions {
    fn sessions(&self, account: &str) -> Vec<LiveSession> {
        let live = self.live.lock().unwrap();
        live.iter()
            .filter(|(a, _)| a == account)
            .map(|(_, s)| s.clone())
            .collect()
    }
    fn close(&self, account: &str, id: &str) -> bool {
        let mut live = self.live.lock().unwrap();
        let before = live.len();
        live.retain(|(a, s)| !(a == account && s.id == id));
        let hit = live.len() != before;
        if hit {
            self.closed.lock().unwrap().push(id.to_owned());
        }
        hit
    }
}

struct Fixture {
    tokens: Arc<FastTokens>,
    clock: Arc<ManualClock>,
    sessions: Arc<Sessions>,
    cam: ClientAccess,
}

fn fixture() -> Fixture {
    let clock = Arc::new(ManualClock::new(T0));
    let tokens = Arc::new(
        FastTokens::new(
            Arc::new(MemoryStore::new()),
            Pepper::generate(),
            FastConfig::default(),
        )
        .with_clock(clock.clone()),
    );
    let sessions = Arc::new(Sessions::default());
    let cam = ClientAccess::new(Some(tokens.clone()), sessions.clone());
    Fixture {
        tokens,
        clock,
        sessions,
        cam,
    }
}

async fn issue(f: &Fixture, account: &str, ua: &str, software: &str, device: &str) {
    let mut req = TokenRequest::new(
        HtMechanism::from_name("HT-SHA-256-NONE").unwrap(),
        IssueKind::Requested,
    );
    req.software = Some(software.into());
    req.device = Some(device.into());
    f.tokens
        .issue(&ClientKey::new(account, ua).unwrap(), &req)
        .await
        .unwrap()
        .expect("token");
}

fn jid(s: &str) -> FullJid {
    FullJid::new(s).unwrap()
}

fn iq(typ: &str, payload: &str) -> Element {
    format!("<iq xmlns='jabber:client' type='{typ}' id='q1'>{payload}</iq>")
        .parse()
        .unwrap()
}

async fn list(f: &Fixture, account: &str) -> Clients {
    let r = f
        .cam
        .handle(
            &iq("get", &format!("<list xmlns='{NS_CAM}'/>")),
            account,
            &jid(&format!("{account}@localhost/me")),
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", String::from(&r));
    assert_eq!(r.attr("id"), Some("q1"));
    Clients::try_from(r.get_child("clients", NS_CAM).expect("<clients>").clone()).unwrap()
}

async fn revoke(f: &Fixture, typ: &str, account: &str, id: &str) -> Element {
    f.cam
        .handle(
            &iq(typ, &format!("<revoke xmlns='{NS_CAM}' id='{id}'/>")),
            account,
            &jid(&format!("{account}@localhost/me")),
        )
        .await
}

fn stanza_error(r: &Element) -> (String, String, Vec<String>) {
    assert_eq!(r.attr("type"), Some("error"), "{}", String::from(r));
    let e = r.get_child("error", "jabber:client").expect("<error>");
    let names = e.children().map(|c| c.name().to_owned()).collect();
    let cond = e
        .children()
        .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_default();
    (e.attr("type").unwrap_or("").to_owned(), cond, names)
}

// CAM-1: the list shows each FAST client with its user-agent labels, times and <fast/>,
// and the live sessions that are not FAST clients as type 'session'.
#[tokio::test]
async fn list_shows_fast_clients_and_sessions() {
    let f = fixture();
    issue(&f, "alice", UA_PHONE, "Phone App", "Alice's phone").await;
    f.clock.advance(Duration::from_secs(60));
    issue(&f, "alice", UA_LAPTOP, "Laptop App", "Alice's laptop").await;
    f.sessions.add("alice", "s-laptop", Some(UA_LAPTOP), false);
    f.sessions.add("alice", "s-pw", None, true);

    let clients = list(&f, "alice").await.clients;
    assert_eq!(clients.len(), 3, "{clients:?}");
    let phone = clients
        .iter()
        .find(|c| c.user_agent.software == "Phone App")
        .unwrap();
    assert_eq!(phone.type_, Type::Access);
    assert!(!phone.connected);
    assert!(phone.id.starts_with("fast/"));
    assert_eq!(phone.user_agent.device.as_deref(), Some("Alice's phone"));
    assert!(phone.auth.fast && !phone.auth.password);
    assert_eq!(
        phone.first_seen.as_ref().unwrap().0.timestamp(),
        (T0 / 1000) as i64
    );
    let laptop = clients
        .iter()
        .find(|c| c.user_agent.software == "Laptop App")
        .unwrap();
    assert!(laptop.connected, "its live session makes it connected");
    let session = clients.iter().find(|c| c.type_ == Type::Session).unwrap();
    assert_eq!(session.id, "session/s-pw");
    assert!(session.connected && session.auth.password && !session.auth.fast);
    // Ids say nothing about the user-agent id or its hash (S-12).
    for c in &clients {
        for secret in [
            UA_PHONE.to_owned(),
            UA_LAPTOP.to_owned(),
            ClientKey::new("alice", UA_PHONE).unwrap().client_label(),
        ] {
            assert!(!c.id.contains(&secret));
        }
    }
    // Stable ids: the same list twice.
    let again = list(&f, "alice").await.clients;
    assert_eq!(
        clients.iter().map(|c| &c.id).collect::<Vec<_>>(),
        again.iter().map(|c| &c.id).collect::<Vec<_>>()
    );
}

// CAM-2: revoking a FAST client revokes its tokens and closes its live session; it is gone
// from the list; revoking it again is item-not-found.
#[tokio::test]
async fn revoke_fast_client_revokes_tokens_and_closes_its_session() {
    let f = fixture();
    issue(&f, "alice", UA_PHONE, "Phone App", "p").await;
    issue(&f, "alice", UA_LAPTOP, "Laptop App", "l").await;
    f.sessions.add("alice", "s-phone", Some(UA_PHONE), false);
    let id = list(&f, "alice")
        .await
        .clients
        .into_iter()
        .find(|c| c.user_agent.software == "Phone App")
        .unwrap()
        .id;
    f.clock.advance(Duration::from_secs(1));
    let r = revoke(&f, "set", "alice", &id).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", String::from(&r));
    assert!(
        r.children().next().is_none(),
        "empty result (XEP-0494 §3.2)"
    );
    assert_eq!(f.sessions.closed(), vec!["s-phone".to_owned()]);
    let infos = f.tokens.clients("alice").await.unwrap();
    let phone = ClientKey::new("alice", UA_PHONE).unwrap();
    assert!(infos.iter().find(|c| c.key == phone).unwrap().revoked);
    let laptop = ClientKey::new("alice", UA_LAPTOP).unwrap();
    assert!(!infos.iter().find(|c| c.key == laptop).unwrap().revoked);
    let left = list(&f, "alice").await.clients;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].user_agent.software, "Laptop App");
    let (_, cond, _) = stanza_error(&revoke(&f, "set", "alice", &id).await);
    assert_eq!(cond, "item-not-found");
}

// CAM-3: revoking a password session closes it and answers the XEP's service-unavailable
// with <password-reset-required/>; a FAST-authenticated session just closes.
#[tokio::test]
async fn revoke_session() {
    let f = fixture();
    f.sessions.add("alice", "s-pw", None, true);
    f.sessions.add("alice", "s-ht", Some(UA_PHONE), false);
    let (typ, cond, names) = stanza_error(&revoke(&f, "set", "alice", "session/s-pw").await);
    assert_eq!(
        (typ.as_str(), cond.as_str()),
        ("cancel", "service-unavailable")
    );
    assert!(
        names.contains(&"password-reset-required".to_owned()),
        "{names:?}"
    );
    // No FAST record for UA_PHONE: the session is listed as a session and just closes.
    let r = revoke(&f, "set", "alice", "session/s-ht").await;
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(
        f.sessions.closed(),
        vec!["s-pw".to_owned(), "s-ht".to_owned()]
    );
    assert!(list(&f, "alice").await.clients.is_empty());
}

// CAM-4: unknown ids and ids of another account are item-not-found; nothing changes.
#[tokio::test]
async fn unknown_and_foreign_ids_are_item_not_found() {
    let f = fixture();
    issue(&f, "alice", UA_PHONE, "Phone App", "p").await;
    f.sessions.add("alice", "s-a", None, true);
    let alice_ids: Vec<String> = list(&f, "alice")
        .await
        .clients
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(alice_ids.len(), 2);
    assert!(
        list(&f, "bob").await.clients.is_empty(),
        "bob sees nothing of alice's"
    );
    for id in
        alice_ids
            .iter()
            .map(String::as_str)
            .chain(["fast/nope", "session/nope", "client/x", ""])
    {
        let (typ, cond, _) = stanza_error(&revoke(&f, "set", "bob", id).await);
        assert_eq!(
            (typ.as_str(), cond.as_str()),
            ("cancel", "item-not-found"),
            "{id}"
        );
    }
    assert!(f.sessions.closed().is_empty());
    assert_eq!(list(&f, "alice").await.clients.len(), 2);
}

// CAM-5: a revoke sent as type 'get' changes nothing and is answered modify/bad-request.
#[tokio::test]
async fn revoke_as_get_changes_nothing() {
    let f = fixture();
    issue(&f, "alice", UA_PHONE, "Phone App", "p").await;
    f.sessions.add("alice", "s-phone", Some(UA_PHONE), false);
    let id = list(&f, "alice").await.clients[0].id.clone();
    let (typ, cond, _) = stanza_error(&revoke(&f, "get", "alice", &id).await);
    assert_eq!((typ.as_str(), cond.as_str()), ("modify", "bad-request"));
    assert!(f.sessions.closed().is_empty());
    assert!(!f.tokens.clients("alice").await.unwrap()[0].revoked);
    // And the other malformed shapes.
    let r = f
        .cam
        .handle(
            &iq("set", &format!("<list xmlns='{NS_CAM}'/>")),
            "alice",
            &jid("alice@localhost/me"),
        )
        .await;
    assert_eq!(stanza_error(&r).1, "bad-request");
    let r = f
        .cam
        .handle(
            &iq("set", &format!("<revoke xmlns='{NS_CAM}'/>")),
            "alice",
            &jid("alice@localhost/me"),
        )
        .await;
    assert_eq!(stanza_error(&r).1, "bad-request");
}

/// CAM-6: what the owner's list shows of a FAST client (its `<user-agent>` labels) is kept in
/// its FAST record and nowhere else. Logged out (`invalidate`), the record and its labels are
/// gone at once; expired, the client leaves the list and the expiry sweep deletes the record
/// and its labels; the same client's next token starts without them.
#[tokio::test]
async fn client_information_lives_as_long_as_the_fast_record() {
    use sasl2_fast::fast::login::VerifyRequest;
    let f = fixture();
    let mech = HtMechanism::from_name("HT-SHA-256-NONE").unwrap();
    issue(&f, "alice", UA_PHONE, "Phone App", "Alice's phone").await;
    let laptop = ClientKey::new("alice", UA_LAPTOP).unwrap();
    let mut req = TokenRequest::new(mech, IssueKind::Requested);
    req.software = Some("Laptop App".into());
    let token = f.tokens.issue(&laptop, &req).await.unwrap().unwrap().token;
    assert_eq!(list(&f, "alice").await.clients.len(), 2);

    let mac = mech.initiator_mac(token.expose().as_bytes(), &[]);
    let logout = VerifyRequest::new("alice", UA_LAPTOP, mech, &mac, &[]).with_invalidate(true);
    let verified = f.tokens.verify(&logout).await.unwrap();
    f.tokens.commit(verified, None).await.unwrap();
    assert_eq!(f.tokens.store().get(&laptop).await.unwrap(), None);
    let left = list(&f, "alice").await.clients;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].user_agent.software, "Phone App");

    let phone = ClientKey::new("alice", UA_PHONE).unwrap();
    f.clock.advance(FastConfig::default().token_ttl);
    assert!(list(&f, "alice").await.clients.is_empty(), "expired");
    assert_eq!(f.tokens.sweep_expired().await.unwrap(), 1);
    assert_eq!(f.tokens.store().get(&phone).await.unwrap(), None);
    assert_eq!(f.tokens.store().len().await.unwrap(), 0);

    let bare = TokenRequest::new(mech, IssueKind::Requested);
    f.tokens.issue(&phone, &bare).await.unwrap().unwrap();
    let rec = f.tokens.store().get(&phone).await.unwrap().unwrap().value;
    assert_eq!(
        (rec.software, rec.device),
        (None, None),
        "no labels come back"
    );
}

#[test]
fn handles_only_cam_requests() {
    assert!(ClientAccess::handles(&iq(
        "get",
        &format!("<list xmlns='{NS_CAM}'/>")
    )));
    assert!(!ClientAccess::handles(&iq(
        "get",
        "<ping xmlns='urn:xmpp:ping'/>"
    )));
    assert!(!ClientAccess::handles(&iq(
        "result",
        &format!("<clients xmlns='{NS_CAM}'/>")
    )));
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn audit_lines(c: &Capture) -> Vec<String> {
    String::from_utf8(c.0.lock().unwrap().clone())
        .unwrap()
        .lines()
        .filter(|l| l.contains("sasl2_fast::audit"))
        .map(str::to_owned)
        .collect()
}

// Issue 12 item 5: every revocation is one info line (account, client label, actor); the
// user-agent id and tokens never appear.
#[tokio::test]
async fn every_revocation_writes_one_audit_line() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut config = FastConfig::default();
    config.max_clients_per_account = 2;
    let clock = Arc::new(ManualClock::new(T0));
    let tokens = Arc::new(
        FastTokens::new(Arc::new(MemoryStore::new()), Pepper::generate(), config)
            .with_clock(clock.clone()),
    );
    let sessions = Arc::new(Sessions::default());
    let f = Fixture {
        cam: ClientAccess::new(Some(tokens.clone()), sessions.clone()),
        tokens,
        clock,
        sessions,
    };
    let mut secrets = vec![UA_PHONE.to_owned(), UA_LAPTOP.to_owned()];
    let mut req = TokenRequest::new(
        HtMechanism::from_name("HT-SHA-256-NONE").unwrap(),
        IssueKind::Requested,
    );
    req.software = Some("Phone App".into());
    for ua in [UA_PHONE, UA_LAPTOP] {
        let t = f
            .tokens
            .issue(&ClientKey::new("alice", ua).unwrap(), &req)
            .await
            .unwrap()
            .unwrap();
        secrets.push(t.token.expose().to_owned());
        f.clock.advance(Duration::from_secs(1));
    }
    // User, via XEP-0494.
    let id = list(&f, "alice").await.clients[0].id.clone();
    assert_eq!(
        revoke(&f, "set", "alice", &id).await.attr("type"),
        Some("result")
    );
    // Cap eviction: a third client with a cap of two drops the least recently used.
    f.tokens
        .issue(&ClientKey::new("alice", "third-client").unwrap(), &req)
        .await
        .unwrap()
        .unwrap();
    // Admin and password change.
    f.tokens
        .revoke_client(
            &ClientKey::new("alice", "third-client").unwrap(),
            &RevokedBy::Admin,
        )
        .await
        .unwrap();
    f.tokens
        .revoke_account("alice", &RevokedBy::PasswordChange)
        .await
        .unwrap();

    let lines = audit_lines(&capture);
    assert_eq!(lines.len(), 4, "{lines:#?}");
    for l in &lines {
        assert!(l.contains(" INFO "), "{l}");
        assert!(
            l.contains("account=\"alice\"") || l.contains("account=alice"),
            "{l}"
        );
        for s in &secrets {
            assert!(!l.contains(s.as_str()), "secret in {l}");
        }
    }
    assert!(
        lines[0].contains("by=\"user\"") || lines[0].contains("by=user"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("alice@localhost/me"), "{}", lines[0]);
    assert!(lines[1].contains("cap-eviction"), "{}", lines[1]);
    let third = ClientKey::new("alice", "third-client")
        .unwrap()
        .client_label();
    assert!(
        lines[2].contains("admin") && lines[2].contains(&third),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].contains("password-change") && lines[3].contains("client=\"*\""),
        "{}",
        lines[3]
    );
    // The user line names the revoked client's label.
    let labels = [UA_PHONE, UA_LAPTOP].map(|u| ClientKey::new("alice", u).unwrap().client_label());
    assert!(
        labels.iter().any(|l| lines[0].contains(l.as_str())),
        "{}",
        lines[0]
    );
}
