//! FAST logins: one round trip, the server proof, mechanism pinning, channel binding, failures and replays (F-3, F-14, F-15, F-28, H-6, H-7, N1, N2).

use super::*;

#[tokio::test]
async fn every_offered_mechanism_logs_in_in_one_round_trip_with_the_server_proof() {
    let f = fixture();
    let s = tls13(9);
    for m in f.plugin.offered(&s) {
        let token = get_token(&f, s.clone(), m.name()).await;
        let ev = fast_login(&f, &s, m.name(), &token, vec![]).await;
        // F-3: success at once, no challenge.
        let ok = success(ev);
        let ad = unb64(&ok.get_child("additional-data", NS_SASL2).unwrap().text());
        // H-7 / S-17: additional-data is HMAC(token, "Responder" || cb).
        assert_eq!(
            ad,
            m.responder_mac(token.as_bytes(), m.cb_data(&s).unwrap()),
            "{m}"
        );
    }
}

#[tokio::test]
async fn token_is_pinned_to_its_mechanism() {
    // F-15 / N1: a token for EXPR used through NONE fails although the HMAC would verify.
    let f = fixture();
    let s = tls13(1);
    let token = get_token(&f, s.clone(), "HT-SHA-256-EXPR").await;
    let ev = fast_login(&f, &s, "HT-SHA-256-NONE", &token, vec![]).await;
    assert_eq!(failure(ev), SaslCondition::NotAuthorized);
    let ev = fast_login(&f, &s, "HT-SHA-512-EXPR", &token, vec![]).await;
    assert_eq!(failure(ev), SaslCondition::NotAuthorized);
    success(fast_login(&f, &s, "HT-SHA-256-EXPR", &token, vec![]).await);
}

#[tokio::test]
async fn expr_mac_does_not_verify_on_another_connection() {
    // N2: the exporter differs per TLS connection, so a captured EXPR message is useless.
    let f = fixture();
    let a = tls13(1);
    let b = tls13(2);
    let token = get_token(&f, a.clone(), "HT-SHA-256-EXPR").await;
    let msg = ht("HT-SHA-256-EXPR", "alice", &token, &a);
    let mut n = Negotiator::new(f.server.clone(), b.clone());
    let ev = n
        .handle(authenticate(
            "HT-SHA-256-EXPR",
            &msg,
            Some(UA),
            vec![fast()],
        ))
        .await;
    assert_eq!(failure(ev), SaslCondition::NotAuthorized);
    let mut n = Negotiator::new(f.server.clone(), a.clone());
    success(
        n.handle(authenticate(
            "HT-SHA-256-EXPR",
            &msg,
            Some(UA),
            vec![fast()],
        ))
        .await,
    );
}

/// S-23: a failed FAST attempt leaves the stream and session state as they were, so the client
/// retries on the same stream (with a password, §9 item 12).
#[tokio::test]
async fn failed_fast_attempt_processes_nothing_and_allows_a_password_retry() {
    let f = fixture();
    let s = tls13(1);
    let _ = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    f.events.take();
    let mut n = Negotiator::new(f.server.clone(), s.clone());
    let wrong = ht("HT-SHA-256-NONE", "alice", "secret-token:fast-wrong", &s);
    let bind = el("bind", NS_BIND2);
    let ev = n
        .handle(authenticate(
            "HT-SHA-256-NONE",
            &wrong,
            Some(UA),
            vec![fast(), bind.clone(), request_token("HT-SHA-256-NONE")],
        ))
        .await;
    assert_eq!(failure(ev), SaslCondition::NotAuthorized);
    // S-22: the <request-token> of the failed attempt was not acted on.
    assert_eq!(f.events.take(), ["rejected unknown-token"]);
    // §9 item 12 / F-28: the stream stays usable for a password login (Prosody's old bug).
    let s2 = success(
        n.handle(authenticate(
            "PLAIN",
            b"\0alice\0alicepass",
            Some(UA),
            vec![request_token("HT-SHA-256-NONE")],
        ))
        .await,
    );
    assert!(token_of(&s2).is_some());
}

#[tokio::test]
async fn unknown_user_and_user_agent_get_not_authorized() {
    let f = fixture();
    let s = tls13(1);
    let token = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    let mut n = Negotiator::new(f.server.clone(), s.clone());
    let ev = n
        .handle(authenticate(
            "HT-SHA-256-NONE",
            &ht("HT-SHA-256-NONE", "bob", &token, &s),
            Some(UA),
            vec![fast()],
        ))
        .await;
    assert_eq!(failure(ev), SaslCondition::NotAuthorized);
    let ev = n
        .handle(authenticate(
            "HT-SHA-256-NONE",
            &ht("HT-SHA-256-NONE", "alice", &token, &s),
            Some("other-client"),
            vec![fast()],
        ))
        .await;
    assert_eq!(failure(ev), SaslCondition::NotAuthorized);
}

#[tokio::test]
async fn authcid_may_be_a_bare_jid_of_this_domain_only() {
    // §9 item 13.
    let f = fixture();
    let s = tls13(1);
    let token = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    for (authcid, ok) in [
        ("alice@example.com", true),
        ("Alice", true),
        ("alice@evil.example", false),
    ] {
        let mut n = Negotiator::new(f.server.clone(), s.clone());
        let ev = n
            .handle(authenticate(
                "HT-SHA-256-NONE",
                &ht("HT-SHA-256-NONE", authcid, &token, &s),
                Some(UA),
                vec![fast()],
            ))
            .await;
        assert_eq!(
            matches!(ev, NegotiatorEvent::Success { .. }),
            ok,
            "{authcid}"
        );
    }
}

#[tokio::test]
async fn expired_token_gets_credentials_expired_every_time() {
    // F-28.
    let f = fixture();
    let s = tls13(1);
    let token = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    f.clock.advance(Duration::from_secs(21 * 86400));
    for _ in 0..2 {
        let ev = fast_login(&f, &s, "HT-SHA-256-NONE", &token, vec![]).await;
        assert_eq!(failure(ev), SaslCondition::CredentialsExpired);
    }
}

#[tokio::test]
async fn count_is_parsed_and_must_increase() {
    // F-13/F-14 and §9 item 3.
    let f = fixture();
    let s = tls13(1);
    let t = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    let with_count = |c: &str| vec![el("fast", NS_FAST).with_attr("count", c)];
    let login = |extra: Vec<Element>| {
        let mut n = Negotiator::new(f.server.clone(), s.clone());
        let msg = ht("HT-SHA-256-NONE", "alice", &t, &s);
        async move {
            n.handle(authenticate("HT-SHA-256-NONE", &msg, Some(UA), extra))
                .await
        }
    };
    for bad in ["x", "-1", "1.5", ""] {
        assert_eq!(
            failure(login(with_count(bad)).await),
            SaslCondition::MalformedRequest,
            "{bad}"
        );
    }
    success(login(with_count("1")).await);
    success(login(with_count("5")).await);
    assert_eq!(
        failure(login(with_count("5")).await),
        SaslCondition::NotAuthorized,
        "replay"
    );
    assert_eq!(
        failure(login(with_count("3")).await),
        SaslCondition::NotAuthorized,
        "replay"
    );
    success(login(with_count("6")).await);
    for bad in ["maybe", "yes"] {
        let ev = login(vec![el("fast", NS_FAST).with_attr("invalidate", bad)]).await;
        assert_eq!(failure(ev), SaslCondition::MalformedRequest);
    }
}
