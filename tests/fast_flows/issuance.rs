//! Tokens issued after password logins: when, for what, how long, how many per account (F-9..F-11, F-19, F-27, H-9, H-13).

use super::*;

#[tokio::test]
async fn password_login_with_request_token_issues_a_durable_token() {
    let f = fixture();
    let s = password_login(&f, tls13(1), vec![request_token("HT-SHA-256-NONE")]).await;
    // S-16 and §9 item 14: authorization-identifier before extension results.
    let names: Vec<_> = s.children().map(|c| c.name().to_owned()).collect();
    assert_eq!(names, ["authorization-identifier", "token"]);
    assert_eq!(
        s.get_child("authorization-identifier", NS_SASL2)
            .unwrap()
            .text(),
        "alice@example.com"
    );
    let (token, expiry) = token_of(&s).unwrap();
    // H-9: >= 256 bits from the CSPRNG, printable, RFC 8959 prefix.
    assert!(token.starts_with("secret-token:fast-"));
    assert!(token.len() >= "secret-token:fast-".len() + 43);
    // F-11: XEP-0082 expiry, token_ttl (21 d) after issue.
    assert_eq!(expiry.len(), 20);
    assert!(expiry.ends_with('Z'));
    assert_eq!(
        expiry,
        sasl2_fast::fast::clock::xep0082(T0 + 21 * 86400 * 1000)
    );
    // The record is in the store before <success> exists.
    let key = ClientKey::new("alice", UA).unwrap();
    let rec = f.plugin.tokens().store().get(&key).await.unwrap().unwrap();
    assert!(
        rec.value.new.is_some() && rec.value.current.is_none(),
        "F-17: issued into `new`"
    );
    assert_eq!(f.events.take(), ["issued HT-SHA-256-NONE"]);
}

#[tokio::test]
async fn scram_success_puts_additional_data_first() {
    use sasl::client::Mechanism as _;
    use sasl::client::mechanisms::Scram;
    use sasl::common::scram::Sha256;
    use sasl::common::{ChannelBinding, Credentials};
    let f = fixture();
    let mut n = Negotiator::new(f.server.clone(), tls13(1));
    let creds = Credentials::default()
        .with_username("alice")
        .with_password("alicepass")
        .with_channel_binding(ChannelBinding::None);
    let mut client = Scram::<Sha256>::from_credentials(creds).unwrap();
    let first = client.initial();
    let ch = match n
        .handle(authenticate(
            "SCRAM-SHA-256",
            &first,
            Some(UA),
            vec![request_token("HT-SHA-256-EXPR")],
        ))
        .await
    {
        NegotiatorEvent::Challenge(c) => unb64(&c.text()),
        other => panic!("{other:?}"),
    };
    let resp = client.response(&ch).unwrap();
    let s = success(
        n.handle(el("response", NS_SASL2).with_text(b64(&resp)))
            .await,
    );
    let names: Vec<_> = s.children().map(|c| c.name().to_owned()).collect();
    assert_eq!(
        names,
        ["additional-data", "authorization-identifier", "token"]
    );
    let v = unb64(&s.get_child("additional-data", NS_SASL2).unwrap().text());
    client
        .success(&v)
        .expect("the server proved it knows the password");
}

#[tokio::test]
async fn no_token_without_user_agent_or_for_a_mechanism_not_offered() {
    let f = fixture();
    // §9 item 7: no user-agent id -> success without a token.
    let mut n = Negotiator::new(f.server.clone(), tls13(1));
    let s = success(
        n.handle(authenticate(
            "PLAIN",
            b"\0alice\0alicepass",
            None,
            vec![request_token("HT-SHA-256-NONE")],
        ))
        .await,
    );
    assert!(token_of(&s).is_none());
    // §9 item 8: UNIQ is never offered on TLS 1.3, unknown names neither.
    for m in ["HT-SHA-256-UNIQ", "HT-MD5-NONE", ""] {
        let s = password_login(&f, tls13(1), vec![request_token(m)]).await;
        assert!(token_of(&s).is_none(), "{m}");
    }
    // EXPR requested on a stream without exporter: not offered there, so no token.
    let mut s12 = tls13(1);
    s12.tls.as_mut().unwrap().channel_bindings.tls_exporter = None;
    let s = password_login(&f, s12, vec![request_token("HT-SHA-256-EXPR")]).await;
    assert!(token_of(&s).is_none());
}

#[tokio::test]
async fn a_second_password_login_replaces_an_unused_token() {
    // F-19.
    let f = fixture();
    let s = tls13(1);
    let a = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    let b = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    assert_eq!(
        failure(fast_login(&f, &s, "HT-SHA-256-NONE", &a, vec![]).await),
        SaslCondition::NotAuthorized
    );
    success(fast_login(&f, &s, "HT-SHA-256-NONE", &b, vec![]).await);
}

/// H-13: with `token_max_chain_age` set, a chain of rotated tokens ends however often it was
/// rotated, and the client must authenticate with its password again (off by default, F-27).
#[tokio::test]
async fn chain_age_forces_a_password_login() {
    let mut config = FastConfig::default();
    config.token_max_chain_age = Some(Duration::from_secs(3 * 86400));
    let f = fixture_with(config, Arc::new(MemoryStore::new()), None);
    let s = tls13(1);
    let mut t = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    // Rotate daily: each token is fresh, but the chain started at the password login.
    for _ in 0..2 {
        f.clock.advance(Duration::from_secs(86400 + 60));
        let ok = success(fast_login(&f, &s, "HT-SHA-256-NONE", &t, vec![]).await);
        t = token_of(&ok).expect("rotated").0;
        success(fast_login(&f, &s, "HT-SHA-256-NONE", &t, vec![]).await);
    }
    f.clock.advance(Duration::from_secs(86400));
    assert_eq!(
        failure(fast_login(&f, &s, "HT-SHA-256-NONE", &t, vec![]).await),
        SaslCondition::CredentialsExpired
    );
}

#[tokio::test]
async fn clients_per_account_are_capped_dropping_the_least_recently_used() {
    let mut config = FastConfig::default();
    config.max_clients_per_account = 3;
    let f = fixture_with(config, Arc::new(MemoryStore::new()), None);
    let s = tls13(1);
    let mut tokens = Vec::new();
    for i in 0..4 {
        f.clock.advance(Duration::from_secs(600));
        let ua = format!("client-{i}");
        let mut n = Negotiator::new(f.server.clone(), s.clone());
        let ok = success(
            n.handle(authenticate(
                "PLAIN",
                b"\0alice\0alicepass",
                Some(&ua),
                vec![request_token("HT-SHA-256-NONE")],
            ))
            .await,
        );
        tokens.push((ua, token_of(&ok).unwrap().0));
    }
    assert_eq!(f.plugin.tokens().clients("alice").await.unwrap().len(), 3);
    for (i, (ua, t)) in tokens.iter().enumerate() {
        let mut n = Negotiator::new(f.server.clone(), s.clone());
        let ev = n
            .handle(authenticate(
                "HT-SHA-256-NONE",
                &ht("HT-SHA-256-NONE", "alice", t, &s),
                Some(ua),
                vec![fast()],
            ))
            .await;
        assert_eq!(
            matches!(ev, NegotiatorEvent::Success { .. }),
            i != 0,
            "client {i}"
        );
    }
}

/// F-27: token lifetimes are the deployment's policy, not constants: `token_ttl` sets the
/// expiry a token is issued with and when it stops working, `token_min_ttl` when a used token
/// is rotated (`token_max_chain_age`: H-13; the bounds of all three:
/// `src/fast/config.rs::token_lifetimes_are_policy_within_bounds`).
#[tokio::test]
async fn token_lifetimes_follow_the_configured_policy() {
    use sasl2_fast::fast::clock::xep0082;
    let mut config = FastConfig::default();
    config.token_ttl = Duration::from_secs(3 * 86400);
    config.token_min_ttl = Duration::from_secs(6 * 3600);
    let f = fixture_with(config, Arc::new(MemoryStore::new()), None);
    let s = tls13(1);
    let mech = "HT-SHA-256-NONE";
    let ok = password_login(&f, s.clone(), vec![request_token(mech)]).await;
    let (t1, expiry) = token_of(&ok).unwrap();
    assert_eq!(expiry, xep0082(T0 + 3 * 86_400_000));

    f.clock.advance(Duration::from_secs(6 * 3600 - 1));
    let ok = success(fast_login(&f, &s, mech, &t1, vec![]).await);
    assert!(token_of(&ok).is_none(), "younger than token_min_ttl");
    f.clock.advance(Duration::from_secs(1));
    let ok = success(fast_login(&f, &s, mech, &t1, vec![]).await);
    let (t2, expiry) = token_of(&ok).expect("rotated at token_min_ttl");
    assert_eq!(expiry, xep0082(T0 + 6 * 3_600_000 + 3 * 86_400_000));

    f.clock.advance(Duration::from_secs(3 * 86400 - 6 * 3600));
    assert_eq!(
        failure(fast_login(&f, &s, mech, &t1, vec![]).await),
        SaslCondition::CredentialsExpired,
        "token_ttl after its issue"
    );
    success(fast_login(&f, &s, mech, &t2, vec![]).await);
}
