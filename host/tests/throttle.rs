//! Password guessing bounded inside the SASL layer (issue 23 item 1, 2): the negotiator asks
//! the login throttle before every credential check, on every path (PLAIN and SCRAM, SASL2
//! and RFC 6120, with and without initial response, pipelined exchanges), FAST is never held
//! back, and strangers never lock out a known device.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use minidom::Element;
use sasl::client::Mechanism as _;
use sasl2_fast::sasl2::SaslProfile;
use sasl2_fast::xmpp::ns;
use sasl2_fast_host::client::{Client, LoginOptions, Outcome, Tls};
use sasl2_fast_host::harness::TestHost;

const PHONE: &str = "7e57ab1e-0000-4000-8000-000000000001";

async fn client(t: &TestHost, source: &str) -> Client {
    let mut opts = t.opts(Tls::StartTls, None).unwrap();
    opts.source = Some(source.parse().unwrap());
    Client::connect(opts).await.unwrap()
}

fn condition(o: &Outcome) -> &str {
    match o {
        Outcome::Success(_) => "success",
        Outcome::Failure(f) => &f.condition,
    }
}

async fn scram(t: &TestHost, source: &str, agent: &str, user: &str, password: &str) -> Outcome {
    client(t, source)
        .await
        .login_scram(
            user,
            password,
            "SCRAM-SHA-256-PLUS",
            &LoginOptions::agent(agent),
        )
        .await
        .unwrap()
}

/// A random-looking user-agent id for stranger number `i`.
fn stranger(i: u32) -> String {
    format!("5742a7e1-0000-4000-8000-{:012x}", u64::from(i) * 7919 + 13)
}

/// A login whose first message carries no credentials; `success` or the failure condition,
/// and the failure text.
async fn login_without_initial_response(
    c: &mut Client,
    profile: SaslProfile,
    mechanism: &str,
    user: &str,
    password: &str,
    agent: &str,
) -> (String, String) {
    match c
        .login_without_initial_response(
            profile,
            mechanism,
            user,
            password,
            &LoginOptions::agent(agent),
        )
        .await
        .unwrap()
    {
        Outcome::Success(_) => ("success".into(), String::new()),
        Outcome::Failure(f) => (f.condition, f.text.unwrap_or_default()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_is_held_back_but_fast_clients_log_in() {
    let mut config = TestHost::config();
    config.server.login_throttle_failures = 3;
    let t = TestHost::start(config).await.unwrap();

    // alice's phone has a FAST token.
    let mut phone = client(&t, "127.0.0.9").await;
    let s = phone
        .login_scram(
            "alice",
            "alicepass",
            "SCRAM-SHA-256-PLUS",
            &LoginOptions::agent(PHONE).request_token("HT-SHA-256-EXPR"),
        )
        .await
        .unwrap()
        .into_success()
        .unwrap();
    let token = s.token.unwrap().token;

    // An attacker at 127.0.0.1 guesses alice's password.
    for i in 0..3 {
        let o = scram(&t, "127.0.0.1", &stranger(i), "alice", "guess").await;
        assert_eq!(condition(&o), "not-authorized");
    }
    // Now even the right password is not checked from a device alice never used: from the
    // attacker's address, for alice from elsewhere, and for another account from the
    // attacker's address.
    for (source, user, pw) in [
        ("127.0.0.1", "alice", "alicepass"),
        ("127.0.0.2", "alice", "alicepass"),
        ("127.0.0.1", "bob", "bobpass"),
    ] {
        let o = scram(&t, source, &stranger(99), user, pw).await;
        assert_eq!(
            condition(&o),
            "temporary-auth-failure",
            "{user} from {source}"
        );
        if let Outcome::Failure(f) = &o {
            assert!(
                f.text.as_deref().unwrap_or("").contains("try again"),
                "{f:?}"
            );
        }
    }
    // bob from another address is not affected.
    assert_eq!(
        condition(&scram(&t, "127.0.0.2", &stranger(98), "bob", "bobpass").await),
        "success"
    );
    // alice's FAST client logs in, from the attacker's address too.
    for source in ["127.0.0.9", "127.0.0.1"] {
        let mut c = client(&t, source).await;
        let o = c
            .login_fast(
                "alice",
                &token,
                "HT-SHA-256-EXPR",
                &LoginOptions::agent(PHONE),
            )
            .await
            .unwrap();
        assert_eq!(condition(&o), "success", "FAST from {source}");
    }
    t.shutdown().await;
}

/// Every path without an initial response goes through the throttle: while alice's account
/// is held for strangers, her correct password is not checked on any of them, and the held
/// attempts say when to try again. (The host used to guess the account from the initial
/// response only, so these four paths were never held and their failures never counted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_without_an_initial_response_is_held() {
    let mut config = TestHost::config();
    config.server.login_throttle_failures = 2;
    let t = TestHost::start(config).await.unwrap();
    let paths = [
        (SaslProfile::Sasl2, "PLAIN"),
        (SaslProfile::Sasl2, "SCRAM-SHA-256"),
        (SaslProfile::Rfc6120, "PLAIN"),
        (SaslProfile::Rfc6120, "SCRAM-SHA-256"),
    ];
    // Wrong guesses without initial response count: two of them, on two different paths
    // and addresses, hold the account.
    for (i, (profile, mechanism)) in paths[..2].iter().enumerate() {
        let mut c = client(&t, &format!("127.0.1.{i}")).await;
        let (cond, _) = login_without_initial_response(
            &mut c,
            *profile,
            mechanism,
            "alice",
            "guess",
            &stranger(i as u32),
        )
        .await;
        assert_eq!(cond, "not-authorized", "{profile:?} {mechanism}");
    }
    for (i, (profile, mechanism)) in paths.iter().enumerate() {
        let mut c = client(&t, &format!("127.0.2.{i}")).await;
        let (cond, text) = login_without_initial_response(
            &mut c,
            *profile,
            mechanism,
            "alice",
            "alicepass",
            &stranger(50 + i as u32),
        )
        .await;
        assert_eq!(cond, "temporary-auth-failure", "{profile:?} {mechanism}");
        assert!(
            text.contains("try again in"),
            "{profile:?} {mechanism}: {text}"
        );
    }
    t.shutdown().await;
}

/// Pipelined exchanges never check more guesses than the limit: 40 SCRAM exchanges opened
/// from one address, all at their last step, then 40 wrong proofs at once; only as many are
/// checked as the limit allows, the rest are held without a check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_exchanges_check_no_more_guesses_than_the_limit() {
    let mut config = TestHost::config();
    config.server.login_throttle_failures = 5;
    let t = TestHost::start(config).await.unwrap();
    let mut open = Vec::new();
    for i in 0..40u32 {
        let mut c = client(&t, "127.0.3.1").await;
        let creds = sasl::common::Credentials::default()
            .with_username("alice")
            .with_password("guess")
            .with_channel_binding(sasl::common::ChannelBinding::None);
        let mut m =
            sasl::client::mechanisms::Scram::<sasl::common::scram::Sha256>::from_credentials(creds)
                .unwrap();
        let auth = Client::authenticate_element(
            "SCRAM-SHA-256",
            Some(&m.initial()),
            &LoginOptions::agent(&stranger(i)),
            false,
        );
        c.send(&auth).await.unwrap();
        let challenge = c.recv().await.unwrap();
        assert_eq!(challenge.name(), "challenge");
        let data = B64.decode(challenge.text().trim()).unwrap();
        let last = m.response(&data).unwrap();
        open.push((c, last));
    }
    // All the proofs leave before any answer is read.
    for (c, last) in &mut open {
        let r = Element::builder("response", ns::SASL2)
            .append(B64.encode(last))
            .build();
        c.send(&r).await.unwrap();
    }
    let mut checked = 0;
    let mut held = 0;
    for (c, _) in &mut open {
        let f = c.recv().await.unwrap();
        assert_eq!(f.name(), "failure");
        let cond = f.children().next().unwrap().name().to_owned();
        match cond.as_str() {
            "not-authorized" => checked += 1,
            "temporary-auth-failure" => held += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(checked, 5, "{held} held");
    assert_eq!(held, 35);
    t.shutdown().await;
}

/// Strangers cannot lock the owner out (item 2): while strangers keep guessing alice's
/// password from 50 addresses with random user-agent ids (the account held for them the
/// whole time), alice's known device (its user-agent id logged in before) from her address
/// logs in with her password at once, and so does her laptop that sends no user-agent id,
/// known by the address it logged in from; an unknown device from a new address is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_do_not_lock_out_a_known_device() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let t = TestHost::start(TestHost::config()).await.unwrap();
    let home = "127.0.4.1";
    assert_eq!(
        condition(&scram(&t, home, PHONE, "alice", "alicepass").await),
        "success"
    );
    let mut laptop = client(&t, "127.0.4.2").await;
    let o = laptop
        .login_scram_rfc6120("alice", "alicepass", "SCRAM-SHA-256")
        .await
        .unwrap();
    assert_eq!(condition(&o), "success");

    // The strangers: 5 tasks guessing without pause, so that whenever a backoff ends one
    // guess is admitted at once and the next backoff starts.
    let stop = Arc::new(AtomicBool::new(false));
    let (guessed, checked) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let mut strangers = tokio::task::JoinSet::new();
    for task in 0..5u32 {
        let base = t.opts(Tls::StartTls, None).unwrap();
        let (stop, guessed, checked) = (stop.clone(), guessed.clone(), checked.clone());
        strangers.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let i = guessed.fetch_add(1, Ordering::Relaxed);
                let mut opts = base.clone();
                opts.source = Some(format!("127.0.5.{}", i % 50 + 1).parse().unwrap());
                let o = Client::connect(opts)
                    .await
                    .unwrap()
                    .login_scram(
                        "alice",
                        "guess",
                        "SCRAM-SHA-256-PLUS",
                        &LoginOptions::agent(&stranger(1000 + task * 10_000 + i)),
                    )
                    .await
                    .unwrap();
                if condition(&o) == "not-authorized" {
                    checked.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while guessed.load(Ordering::Relaxed) < 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let o = scram(&t, home, PHONE, "alice", "alicepass").await;
    assert_eq!(
        condition(&o),
        "success",
        "the known phone is not locked out"
    );
    let mut laptop = client(&t, "127.0.4.2").await;
    let o = laptop
        .login_scram_rfc6120("alice", "alicepass", "SCRAM-SHA-256")
        .await
        .unwrap();
    assert_eq!(condition(&o), "success", "the known laptop address");
    let o = scram(&t, "127.0.6.1", &stranger(5000), "alice", "alicepass").await;
    assert_eq!(
        condition(&o),
        "temporary-auth-failure",
        "an unknown device from a new address is held"
    );
    stop.store(true, Ordering::Relaxed);
    while strangers.join_next().await.is_some() {}
    // 5 before the hold, then one per expired backoff (1 s, 2 s, 4 s, ...).
    let (guessed, checked) = (
        guessed.load(Ordering::Relaxed),
        checked.load(Ordering::Relaxed),
    );
    assert!(
        (5..12).contains(&checked),
        "{checked} of {guessed} guesses checked"
    );
    t.shutdown().await;
}

/// A known device is still held by its own failures: a phone whose id leaked gives its
/// holder the limit's guesses, then backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_device_is_held_by_its_own_failures() {
    let mut config = TestHost::config();
    config.server.login_throttle_failures = 3;
    config.server.login_throttle_max_backoff = Duration::from_secs(60);
    let t = TestHost::start(config).await.unwrap();
    assert_eq!(
        condition(&scram(&t, "127.0.7.1", PHONE, "alice", "alicepass").await),
        "success"
    );
    for _ in 0..3 {
        let o = scram(&t, "127.0.7.2", PHONE, "alice", "guess").await;
        assert_eq!(condition(&o), "not-authorized");
    }
    let o = scram(&t, "127.0.7.1", PHONE, "alice", "alicepass").await;
    assert_eq!(condition(&o), "temporary-auth-failure");
    t.shutdown().await;
}
