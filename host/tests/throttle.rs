//! Failed-login throttling (issue 11 item 3): after `login_throttle_failures` wrong passwords,
//! password logins from that address and for that account get `temporary-auth-failure`
//! without the password being checked, while a valid FAST token still logs in.

use sasl2_fast_host::client::{Client, LoginOptions, Outcome, Tls};
use sasl2_fast_host::harness::TestHost;

const UA: &str = "7e57ab1e-0000-4000-8000-000000000001";

async fn client(t: &TestHost, source: &str) -> Client {
    let mut opts = t.opts(Tls::StartTls, None).unwrap();
    opts.source = Some(source.parse().unwrap());
    Client::connect(opts).await.unwrap()
}

async fn scram(t: &TestHost, source: &str, user: &str, password: &str) -> Outcome {
    client(t, source)
        .await
        .login_scram(
            user,
            password,
            "SCRAM-SHA-256-PLUS",
            &LoginOptions::agent(UA),
        )
        .await
        .unwrap()
}

fn condition(o: &Outcome) -> &str {
    match o {
        Outcome::Success(_) => "success",
        Outcome::Failure(f) => &f.condition,
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
            &LoginOptions::agent(UA).request_token("HT-SHA-256-EXPR"),
        )
        .await
        .unwrap()
        .into_success()
        .unwrap();
    let token = s.token.unwrap().token;

    // An attacker at 127.0.0.1 guesses alice's password.
    for _ in 0..3 {
        let o = scram(&t, "127.0.0.1", "alice", "guess").await;
        assert_eq!(condition(&o), "not-authorized");
    }
    // Now even the right password is not checked: from the attacker's address, for alice
    // from elsewhere, and for another account from the attacker's address.
    for (source, user, pw) in [
        ("127.0.0.1", "alice", "alicepass"),
        ("127.0.0.2", "alice", "alicepass"),
        ("127.0.0.1", "bob", "bobpass"),
    ] {
        let o = scram(&t, source, user, pw).await;
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
        condition(&scram(&t, "127.0.0.2", "bob", "bobpass").await),
        "success"
    );
    // alice's FAST client logs in, from the attacker's address too.
    for source in ["127.0.0.9", "127.0.0.1"] {
        let mut c = client(&t, source).await;
        let o = c
            .login_fast("alice", &token, "HT-SHA-256-EXPR", &LoginOptions::agent(UA))
            .await
            .unwrap();
        assert_eq!(condition(&o), "success", "FAST from {source}");
    }
    t.shutdown().await;
}
