//! Rotation and invalidation: the two slots (F-16..F-22, F-29, H-11).

use super::*;

#[tokio::test]
async fn rotation_keeps_the_old_token_until_the_new_one_is_used() {
    let f = fixture();
    let s = tls13(1);
    let t1 = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    f.events.take();
    // Younger than token_min_ttl: no rotation.
    f.clock.advance(Duration::from_secs(3600));
    let ok = success(fast_login(&f, &s, "HT-SHA-256-NONE", &t1, vec![]).await);
    assert!(token_of(&ok).is_none());
    // First use of `new` promotes it.
    assert_eq!(
        f.events.take(),
        ["promoted HT-SHA-256-NONE", "used HT-SHA-256-NONE"]
    );

    // F-16: older than token_min_ttl -> a new token, bound to the mechanism just used.
    f.clock.advance(Duration::from_secs(86400));
    let ok = success(fast_login(&f, &s, "HT-SHA-256-NONE", &t1, vec![]).await);
    let (t2, _) = token_of(&ok).expect("rotated");
    assert_ne!(t1, t2);
    assert_eq!(
        f.events.take(),
        ["used HT-SHA-256-NONE", "rotated HT-SHA-256-NONE"]
    );
    // F-17: the old token still works (the <success> might have been lost) ...
    f.clock.advance(Duration::from_secs(60));
    let ok = success(fast_login(&f, &s, "HT-SHA-256-NONE", &t1, vec![]).await);
    // ... and since it is still old, the rotation is issued again, replacing the unused one (F-19).
    let (t3, _) = token_of(&ok).expect("rotated again");
    let ev = fast_login(&f, &s, "HT-SHA-256-NONE", &t2, vec![]).await;
    assert_eq!(
        failure(ev),
        SaslCondition::NotAuthorized,
        "F-19: unused t2 was replaced"
    );
    // F-18: using t3 kills t1.
    let ok = success(fast_login(&f, &s, "HT-SHA-256-NONE", &t3, vec![]).await);
    assert!(token_of(&ok).is_none(), "t3 is fresh");
    let ev = fast_login(&f, &s, "HT-SHA-256-NONE", &t1, vec![]).await;
    assert_eq!(failure(ev), SaslCondition::NotAuthorized, "F-18");
}

#[tokio::test]
async fn invalidate_logs_the_client_out_and_issues_nothing_unless_asked() {
    let f = fixture();
    let s = tls13(1);
    let t = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    f.clock.advance(Duration::from_secs(2 * 86400)); // rotation would be due
    let inv = || el("fast", NS_FAST).with_attr("invalidate", "true");
    let mut n = Negotiator::new(f.server.clone(), s.clone());
    let ok = success(
        n.handle(authenticate(
            "HT-SHA-256-NONE",
            &ht("HT-SHA-256-NONE", "alice", &t, &s),
            Some(UA),
            vec![inv()],
        ))
        .await,
    );
    // F-22: no token although rotation was due.
    assert!(token_of(&ok).is_none());
    // F-21: the token is gone.
    assert_eq!(
        failure(fast_login(&f, &s, "HT-SHA-256-NONE", &t, vec![]).await),
        SaslCondition::NotAuthorized
    );

    // With <request-token>, invalidation still returns a new token (F-22 exception).
    let t = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    let mut n = Negotiator::new(f.server.clone(), s.clone());
    let ok = success(
        n.handle(authenticate(
            "HT-SHA-256-NONE",
            &ht("HT-SHA-256-NONE", "alice", &t, &s),
            Some(UA),
            vec![
                el("fast", NS_FAST).with_attr("invalidate", "1"),
                request_token("HT-SHA-256-NONE"),
            ],
        ))
        .await,
    );
    let (fresh, _) = token_of(&ok).expect("requested");
    assert_eq!(
        failure(fast_login(&f, &s, "HT-SHA-256-NONE", &t, vec![]).await),
        SaslCondition::NotAuthorized
    );
    success(fast_login(&f, &s, "HT-SHA-256-NONE", &fresh, vec![]).await);
}

#[tokio::test]
async fn invalidate_with_the_new_token_also_kills_current() {
    // §9 item 9: Prosody leaves `current` alive here; we remove both slots.
    let f = fixture();
    let s = tls13(1);
    let t1 = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    success(fast_login(&f, &s, "HT-SHA-256-NONE", &t1, vec![]).await); // promote t1
    f.clock.advance(Duration::from_secs(2 * 86400));
    let (t2, _) = token_of(&success(
        fast_login(&f, &s, "HT-SHA-256-NONE", &t1, vec![]).await,
    ))
    .unwrap();
    let mut n = Negotiator::new(f.server.clone(), s.clone());
    success(
        n.handle(authenticate(
            "HT-SHA-256-NONE",
            &ht("HT-SHA-256-NONE", "alice", &t2, &s),
            Some(UA),
            vec![el("fast", NS_FAST).with_attr("invalidate", "true")],
        ))
        .await,
    );
    for t in [&t1, &t2] {
        assert_eq!(
            failure(fast_login(&f, &s, "HT-SHA-256-NONE", t, vec![]).await),
            SaslCondition::NotAuthorized
        );
    }
}

/// The client's record as (`current`, `new`), each slot named by its issue time.
async fn slots(f: &Fixture) -> (Option<u64>, Option<u64>) {
    let key = ClientKey::new("alice", UA).unwrap();
    let rec = f.plugin.tokens().store().get(&key).await.unwrap().unwrap();
    (
        rec.value.current.map(|s| s.issued_at),
        rec.value.new.map(|s| s.issued_at),
    )
}

/// F-29 (protocol.md §8): two slots per client. A token is issued into `new` and leaves
/// `current` alone; a login with `new` moves it to `current`, and the old `current` dies; a
/// login with `current` while `new` waits keeps both; both slots are verified. (The order in
/// which they are tried, `new` first, cannot be seen from outside: two slots never hold the
/// same token.)
#[tokio::test]
async fn tokens_live_in_two_slots_current_and_new() {
    let f = fixture();
    let s = tls13(1);
    let mech = "HT-SHA-256-NONE";
    let t1 = get_token(&f, s.clone(), mech).await;
    let at1 = T0;
    assert_eq!(slots(&f).await, (None, Some(at1)), "issued into new");
    f.clock.advance(Duration::from_secs(60));
    success(fast_login(&f, &s, mech, &t1, vec![]).await);
    assert_eq!(slots(&f).await, (Some(at1), None), "new moved to current");

    f.clock.advance(Duration::from_secs(60));
    let at2 = T0 + 120_000;
    let ok = success(fast_login(&f, &s, mech, &t1, vec![request_token(mech)]).await);
    let (t2, _) = token_of(&ok).expect("requested");
    assert_eq!(slots(&f).await, (Some(at1), Some(at2)), "current stays");
    f.clock.advance(Duration::from_secs(60));
    success(fast_login(&f, &s, mech, &t1, vec![]).await);
    assert_eq!(
        slots(&f).await,
        (Some(at1), Some(at2)),
        "current used: both kept"
    );

    success(fast_login(&f, &s, mech, &t2, vec![]).await);
    assert_eq!(slots(&f).await, (Some(at2), None), "new used: promoted");
    assert_eq!(
        failure(fast_login(&f, &s, mech, &t1, vec![]).await),
        SaslCondition::NotAuthorized,
        "the old current died"
    );
}

/// H-11: the client can ask for a new token (`<request-token>` on a FAST login, though no
/// rotation is due) and for revocation (`<fast invalidate>`), and gets what it asked for.
#[tokio::test]
async fn the_client_can_ask_for_rotation_and_for_revocation() {
    let f = fixture();
    let s = tls13(1);
    let mech = "HT-SHA-256-NONE";
    let t1 = get_token(&f, s.clone(), mech).await;
    // Younger than token_min_ttl: the server would not rotate on its own.
    let ok = success(fast_login(&f, &s, mech, &t1, vec![]).await);
    assert!(token_of(&ok).is_none(), "no rotation due");
    let ok = success(fast_login(&f, &s, mech, &t1, vec![request_token(mech)]).await);
    let (t2, _) = token_of(&ok).expect("rotation on request");
    assert_ne!(t1, t2);
    success(fast_login(&f, &s, mech, &t2, vec![]).await);
    assert_eq!(
        failure(fast_login(&f, &s, mech, &t1, vec![]).await),
        SaslCondition::NotAuthorized,
        "t2 replaced t1"
    );

    let mut n = Negotiator::new(f.server.clone(), s.clone());
    let invalidate = el("fast", NS_FAST).with_attr("invalidate", "true");
    success(
        n.handle(authenticate(
            mech,
            &ht(mech, "alice", &t2, &s),
            Some(UA),
            vec![invalidate],
        ))
        .await,
    );
    assert_eq!(
        failure(fast_login(&f, &s, mech, &t2, vec![]).await),
        SaslCondition::NotAuthorized,
        "revoked on request"
    );
}
