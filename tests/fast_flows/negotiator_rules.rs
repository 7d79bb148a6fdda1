//! The negotiator's request rules around FAST (S-9, S-13, S-22, S-23, S-25, S-30).

use super::*;

/// S-9: authentication fails with `invalid-mechanism` when the `mechanism` attribute names a
/// mechanism the features did not announce on this stream: an HT name without `<fast/>` (HT is
/// announced only inside `<fast>`), a mechanism the server does not have, and one it has but
/// did not offer here (`-PLUS` without channel binding).
#[tokio::test]
async fn request_rules_of_the_negotiator() {
    let f = fixture();
    let s = tls13(1);
    let token = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    let msg = ht("HT-SHA-256-NONE", "alice", &token, &s);
    let mut n = Negotiator::new(f.server.clone(), s.clone());
    // §4 step 2: <fast/> without user-agent id.
    assert_eq!(
        failure(
            n.handle(authenticate("HT-SHA-256-NONE", &msg, None, vec![fast()]))
                .await
        ),
        SaslCondition::MalformedRequest
    );
    // §9 item 5: HT without <fast/> is not a top-level mechanism.
    assert_eq!(
        failure(
            n.handle(authenticate("HT-SHA-256-NONE", &msg, Some(UA), vec![]))
                .await
        ),
        SaslCondition::InvalidMechanism
    );
    // Third failure closes the stream (RFC 6120 §6.4.5).
    match n
        .handle(authenticate(
            "SCRAM-SHA-1",
            b"n,,n=alice,r=abc",
            Some(UA),
            vec![],
        ))
        .await
    {
        NegotiatorEvent::StreamError {
            send: Some(f),
            error,
            ..
        } => {
            assert!(f.get_child("invalid-mechanism", NS_SASL).is_some());
            assert_eq!(error.condition.to_string(), "policy-violation");
        }
        other => panic!("{other:?}"),
    }

    // Registered, but not announced on a stream without channel binding.
    let mut no_cb = s.clone();
    no_cb.tls.as_mut().unwrap().channel_bindings = ChannelBindings::none();
    let mut n = Negotiator::new(f.server.clone(), no_cb);
    assert_eq!(
        failure(
            n.handle(authenticate(
                "SCRAM-SHA-256-PLUS",
                b"p=tls-exporter,,n=alice,r=abc",
                Some(UA),
                vec![]
            ))
            .await
        ),
        SaslCondition::InvalidMechanism
    );

    let mut n = Negotiator::new(f.server.clone(), s.clone());
    // Bad base64.
    let bad = el("authenticate", NS_SASL2)
        .with_attr("mechanism", "PLAIN")
        .with_child(el("initial-response", NS_SASL2).with_text("!!!"));
    assert_eq!(
        failure(n.handle(bad).await),
        SaslCondition::IncorrectEncoding
    );
    // S-30: abort.
    match n.handle(el("abort", NS_SASL2)).await {
        NegotiatorEvent::Failure { failure, .. } => {
            assert_eq!(failure.condition, SaslCondition::Aborted)
        }
        other => panic!("{other:?}"),
    }
    // Success, then S-25: another <authenticate> is a stream error.
    success(
        n.handle(authenticate(
            "HT-SHA-256-NONE",
            &msg,
            Some(UA),
            vec![fast()],
        ))
        .await,
    );
    assert!(n.is_authenticated());
    assert!(matches!(
        n.handle(authenticate("PLAIN", b"\0alice\0alicepass", None, vec![]))
            .await,
        NegotiatorEvent::StreamError { .. }
    ));
}

/// S-23: after an aborted exchange the stream is as it was: the next `<authenticate>` on it
/// succeeds.
#[tokio::test]
async fn only_response_or_abort_during_an_exchange() {
    // S-13: during a SCRAM exchange a new <authenticate> closes the stream.
    let f = fixture();
    let mut n = Negotiator::new(f.server.clone(), tls13(1));
    let ev = n
        .handle(authenticate(
            "SCRAM-SHA-256",
            b"n,,n=alice,r=abcdefgh",
            Some(UA),
            vec![],
        ))
        .await;
    assert!(matches!(ev, NegotiatorEvent::Challenge(_)), "{ev:?}");
    match n
        .handle(authenticate(
            "PLAIN",
            b"\0alice\0alicepass",
            Some(UA),
            vec![],
        ))
        .await
    {
        NegotiatorEvent::StreamError { error, .. } => {
            assert_eq!(error.condition.to_string(), "policy-violation")
        }
        other => panic!("{other:?}"),
    }
    // An unknown SASL2 element during an exchange is also a stream error.
    let mut n = Negotiator::new(f.server.clone(), tls13(1));
    n.handle(authenticate(
        "SCRAM-SHA-256",
        b"n,,n=alice,r=abcdefgh",
        Some(UA),
        vec![],
    ))
    .await;
    assert!(matches!(
        n.handle(el("next", NS_SASL2)).await,
        NegotiatorEvent::StreamError { .. }
    ));
    // <abort> ends it politely (S-30) and a retry works.
    let mut n = Negotiator::new(f.server.clone(), tls13(1));
    n.handle(authenticate(
        "SCRAM-SHA-256",
        b"n,,n=alice,r=abcdefgh",
        Some(UA),
        vec![],
    ))
    .await;
    assert_eq!(
        failure(n.handle(el("abort", NS_SASL2)).await),
        SaslCondition::Aborted
    );
    success(
        n.handle(authenticate(
            "PLAIN",
            b"\0alice\0alicepass",
            Some(UA),
            vec![],
        ))
        .await,
    );
}

/// S-23: a failed attempt (FAST or password) leaves the stream and session state unchanged:
/// the retry on the same stream succeeds and inherits nothing of the failed request.
#[tokio::test]
async fn retries_on_one_stream_do_not_inherit_earlier_requests() {
    // Prosody kept `fast_token_request` for the whole stream, so a retry without
    // <request-token> still got a token, and a second FAST attempt on the same stream was
    // refused. Here every attempt stands alone.
    let f = fixture();
    let s = tls13(1);
    let token = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    let mut n = Negotiator::new(f.server.clone(), s.clone());
    let wrong = ht("HT-SHA-256-NONE", "alice", "secret-token:fast-wrong", &s);
    let ev = n
        .handle(authenticate(
            "HT-SHA-256-NONE",
            &wrong,
            Some(UA),
            vec![fast(), request_token("HT-SHA-256-NONE")],
        ))
        .await;
    assert_eq!(failure(ev), SaslCondition::NotAuthorized);
    // A second FAST attempt on the same stream works, and carries no token: the earlier
    // <request-token> belonged to the failed attempt.
    let ok = success(
        n.handle(authenticate(
            "HT-SHA-256-NONE",
            &ht("HT-SHA-256-NONE", "alice", &token, &s),
            Some(UA),
            vec![fast()],
        ))
        .await,
    );
    assert!(token_of(&ok).is_none());

    // Same for a password retry after a failed password attempt.
    let mut n = Negotiator::new(f.server.clone(), s.clone());
    let ev = n
        .handle(authenticate(
            "PLAIN",
            b"\0alice\0wrong",
            Some(UA),
            vec![request_token("HT-SHA-256-NONE")],
        ))
        .await;
    assert_eq!(failure(ev), SaslCondition::NotAuthorized);
    let ok = success(
        n.handle(authenticate(
            "PLAIN",
            b"\0alice\0alicepass",
            Some(UA),
            vec![],
        ))
        .await,
    );
    assert!(token_of(&ok).is_none());
}

#[tokio::test]
async fn success_debug_output_never_shows_the_token() {
    let f = fixture();
    // The event itself (what a host might log) redacts the token.
    let mut n = Negotiator::new(f.server.clone(), tls13(1));
    let ev = n
        .handle(authenticate(
            "PLAIN",
            b"\0alice\0alicepass",
            Some(UA),
            vec![request_token("HT-SHA-256-NONE")],
        ))
        .await;
    let shown = format!("{ev:?}");
    let s = success(ev);
    let (token, _) = token_of(&s).unwrap();
    assert!(!shown.contains(&token), "{shown}");
    assert!(!format!("{}", sasl2_fast::xmpp::Redacted(&s)).contains(&token));
    // minidom's own Debug does show it: the positive control for the two lines above.
    assert!(format!("{s:?}").contains(&token));
    let rec = f
        .plugin
        .tokens()
        .store()
        .get(&ClientKey::new("alice", UA).unwrap())
        .await
        .unwrap();
    assert!(!format!("{rec:?}").contains(&token));
}
