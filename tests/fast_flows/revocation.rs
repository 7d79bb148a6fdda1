//! Revocation and expiry: password changes, per client and global cutoffs, the sweep (F-28).

use super::*;
use sasl2_fast::fast::hooks::RevokedBy;

#[tokio::test]
async fn password_change_revocation_answers_credentials_expired() {
    let f = fixture();
    let s = tls13(1);
    let t = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    f.clock.advance(Duration::from_secs(1));
    f.plugin
        .tokens()
        .revoke_account("alice", &RevokedBy::PasswordChange)
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(
            failure(fast_login(&f, &s, "HT-SHA-256-NONE", &t, vec![]).await),
            SaslCondition::CredentialsExpired
        );
    }
    // The next password login gets a token that works.
    f.clock.advance(Duration::from_secs(1));
    let t2 = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    success(fast_login(&f, &s, "HT-SHA-256-NONE", &t2, vec![]).await);

    // Per client.
    f.clock.advance(Duration::from_secs(1));
    assert!(
        f.plugin
            .tokens()
            .revoke_client(&ClientKey::new("alice", UA).unwrap(), &RevokedBy::Admin)
            .await
            .unwrap()
    );
    assert_eq!(
        failure(fast_login(&f, &s, "HT-SHA-256-NONE", &t2, vec![]).await),
        SaslCondition::CredentialsExpired
    );

    // Everything issued before T.
    f.clock.advance(Duration::from_secs(1));
    let t3 = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    f.clock.advance(Duration::from_secs(1));
    f.plugin
        .tokens()
        .revoke_all_issued_before(f.clock_now(), &RevokedBy::Admin)
        .await
        .unwrap();
    assert_eq!(
        failure(fast_login(&f, &s, "HT-SHA-256-NONE", &t3, vec![]).await),
        SaslCondition::CredentialsExpired
    );
}

impl Fixture {
    fn clock_now(&self) -> u64 {
        use sasl2_fast::fast::clock::Clock;
        self.clock.now_ms()
    }
}

#[tokio::test]
async fn sweep_removes_only_expired_clients() {
    let f = fixture();
    let s = tls13(1);
    let _old = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    f.clock.advance(Duration::from_secs(10 * 86400));
    let mut n = Negotiator::new(f.server.clone(), s.clone());
    success(
        n.handle(authenticate(
            "PLAIN",
            b"\0alice\0alicepass",
            Some("second"),
            vec![request_token("HT-SHA-256-NONE")],
        ))
        .await,
    );
    f.events.take();
    f.clock.advance(Duration::from_secs(12 * 86400)); // first expired, second not
    assert_eq!(f.plugin.tokens().sweep_expired().await.unwrap(), 1);
    assert_eq!(f.events.take(), ["expired HT-SHA-256-NONE"]);
    assert_eq!(f.plugin.tokens().store().len().await.unwrap(), 1);
    assert_eq!(f.plugin.tokens().sweep_expired().await.unwrap(), 0);
}
