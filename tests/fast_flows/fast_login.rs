//! FAST logins: one round trip, the server proof, mechanism pinning, channel binding, failures and replays (F-3, F-14, F-15, F-28, F-30, H-4, H-6, H-7, N1, N2).

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

/// F-15, H-10: the token was requested for a named mechanism and fails with any other.
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

/// H-6: a MAC made with another token differs from the one the server recomputes, and the
/// attempt fails; S-22 and F-28 for what the failure leaves behind. S-23: the failed attempt
/// leaves the stream and session state as they were, so the client retries on the same stream
/// (with a password, §9 item 12).
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

/// R-3 and §9 item 13: the authcid is the account's localpart (any case), or the bare JID of
/// this domain; another domain's JID is not this account.
#[tokio::test]
async fn authcid_may_be_a_bare_jid_of_this_domain_only() {
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

/// F-28, H-15: a token lives `token_ttl` from its issue; after that it answers
/// `credentials-expired`, on every attempt.
#[tokio::test]
async fn expired_token_gets_credentials_expired_every_time() {
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

/// F-30: a verification checks the token value, its expiry, its mechanism and the replay
/// counter, each on its own: with the other three right, a wrong one fails the login.
#[tokio::test]
async fn verification_checks_value_expiry_mechanism_and_count() {
    let f = fixture();
    let s = tls13(1);
    let t = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    let login = |mech: &'static str, token: String, count: Option<u32>| {
        let mut n = Negotiator::new(f.server.clone(), s.clone());
        let fast = match count {
            Some(c) => fast().with_attr("count", c.to_string()),
            None => fast(),
        };
        let msg = ht(mech, "alice", &token, &s);
        async move {
            n.handle(authenticate(mech, &msg, Some(UA), vec![fast]))
                .await
        }
    };
    success(login("HT-SHA-256-NONE", t.clone(), Some(5)).await);
    // The value: another token, the rest right.
    let other = format!("{t}x");
    assert_eq!(
        failure(login("HT-SHA-256-NONE", other, Some(6)).await),
        SaslCondition::NotAuthorized,
        "value"
    );
    // The mechanism: the right token through another offered mechanism.
    assert_eq!(
        failure(login("HT-SHA-512-NONE", t.clone(), Some(6)).await),
        SaslCondition::NotAuthorized,
        "mechanism"
    );
    // The replay counter: a count already seen.
    assert_eq!(
        failure(login("HT-SHA-256-NONE", t.clone(), Some(5)).await),
        SaslCondition::NotAuthorized,
        "count"
    );
    // The expiry: valid until the last millisecond of token_ttl, not at its end.
    let ttl = FastConfig::default().token_ttl;
    f.clock.advance(ttl - Duration::from_millis(1));
    success(login("HT-SHA-256-NONE", t.clone(), Some(6)).await);
    f.clock.advance(Duration::from_millis(1));
    assert_eq!(
        failure(login("HT-SHA-256-NONE", t.clone(), Some(7)).await),
        SaslCondition::CredentialsExpired,
        "expiry"
    );
}

/// H-4: HT is client-first, two messages, and carries no authzid. Without an
/// `<initial-response>` the attempt fails (`malformed-request`; no empty challenge, §9 item
/// 20); an initiator message with an authzid in front of the authcid (`authzid NUL authcid
/// NUL MAC`, proxy authentication) is refused; a good one is answered by `<success>` at once
/// (its `<additional-data>` the responder message), which authorizes the authcid's own
/// account, and nothing of the exchange follows it.
#[tokio::test]
async fn ht_is_client_first_in_two_messages_and_has_no_authzid() {
    let f = fixture();
    let s = tls13(1);
    let t = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    let mut n = Negotiator::new(f.server.clone(), s.clone());
    let mut no_ir = authenticate("HT-SHA-256-NONE", b"", Some(UA), vec![fast()]);
    no_ir.remove_child("initial-response", NS_SASL2).unwrap();
    assert_eq!(
        failure(n.handle(no_ir).await),
        SaslCondition::MalformedRequest
    );

    let mut n = Negotiator::new(f.server.clone(), s.clone());
    let mut proxy = b"bob\0".to_vec();
    proxy.extend(ht("HT-SHA-256-NONE", "alice", &t, &s));
    let ev = n
        .handle(authenticate(
            "HT-SHA-256-NONE",
            &proxy,
            Some(UA),
            vec![fast()],
        ))
        .await;
    assert_eq!(failure(ev), SaslCondition::MalformedRequest, "authzid");

    let mut n = Negotiator::new(f.server.clone(), s.clone());
    let msg = ht("HT-SHA-256-NONE", "alice", &t, &s);
    let ok = success(
        n.handle(authenticate(
            "HT-SHA-256-NONE",
            &msg,
            Some(UA),
            vec![fast()],
        ))
        .await,
    );
    let m = HtMechanism::from_name("HT-SHA-256-NONE").unwrap();
    assert_eq!(
        unb64(&ok.get_child("additional-data", NS_SASL2).unwrap().text()),
        m.responder_mac(t.as_bytes(), &[])
    );
    assert_eq!(
        ok.get_child("authorization-identifier", NS_SASL2)
            .unwrap()
            .text(),
        "alice@example.com"
    );
    assert!(n.is_authenticated());
    let ev = n
        .handle(el("response", NS_SASL2).with_text(b64(b"more")))
        .await;
    assert!(
        matches!(ev, NegotiatorEvent::StreamError { .. }),
        "no third message: {ev:?}"
    );
}
