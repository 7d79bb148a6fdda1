//! The account side holds revocations too (issue 23 item 6): a password change or an account
//! deletion recorded with the credentials voids the account's tokens on every FAST login, even
//! when the token store never heard of it (one restored from a backup older than the change),
//! and the answer is the one a token-store revocation gives (F-28: `credentials-expired`).

use super::*;
use sasl2_fast::fast::clock::Clock as _;
use sasl2_fast::fast::hooks::RejectReason;
use sasl2_fast::fast::login::VerifyRequest;
use sasl2_fast::fast::tokens::{IssueKind, TokenRequest};
use sasl2_fast::sasl2::ScramCredentials;
use sasl2_fast::sasl2::accounts::{AccountError, AccountStore, RevocationCutoff};

/// A PLAIN login of alice with `password` asking for a token: the token.
async fn token_with_password(f: &Fixture, stream: &StreamInfo, password: &str) -> String {
    let mut n = Negotiator::new(f.server.clone(), stream.clone());
    let s = success(
        n.handle(authenticate(
            "PLAIN",
            format!("\0alice\0{password}").as_bytes(),
            Some(UA),
            vec![request_token("HT-SHA-256-NONE")],
        ))
        .await,
    );
    token_of(&s).expect("token issued").0
}

/// F-28: a token revoked on the account side is one the server no longer trusts:
/// `credentials-expired`, every time, and the password still logs in.
#[tokio::test]
async fn a_password_change_on_the_account_side_voids_tokens_the_store_still_trusts() {
    let f = fixture();
    let s = tls13(1);
    let t = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    success(fast_login(&f, &s, "HT-SHA-256-NONE", &t, vec![]).await);

    // The password changes on the account side only: the token store is as a backup from
    // before the change would have it.
    f.clock.advance(Duration::from_secs(1));
    f.accounts.set_password("alice", "n3w-pass", 4096);
    assert!(
        f.accounts
            .revoke_issued_before("alice", f.clock.now_ms() + 1)
    );
    let store = f.plugin.tokens().store();
    assert_eq!(store.revocation_cutoff("alice").await.unwrap(), 0);
    f.events.take();
    for _ in 0..2 {
        assert_eq!(
            failure(fast_login(&f, &s, "HT-SHA-256-NONE", &t, vec![]).await),
            SaslCondition::CredentialsExpired
        );
    }
    assert_eq!(f.events.take(), ["rejected revoked", "rejected revoked"]);
    // The owner's list says so too.
    let clients = f.plugin.tokens().clients("alice").await.unwrap();
    assert!(clients.iter().all(|c| c.revoked), "{clients:?}");

    // A token that is no token still answers not-authorized (nothing revealed), and a token
    // issued after the change works.
    assert_eq!(
        failure(fast_login(&f, &s, "HT-SHA-256-NONE", "secret-token:fast-nope", vec![]).await),
        SaslCondition::NotAuthorized
    );
    f.clock.advance(Duration::from_secs(1));
    let t2 = token_with_password(&f, &s, "n3w-pass").await;
    success(fast_login(&f, &s, "HT-SHA-256-NONE", &t2, vec![]).await);
}

#[tokio::test]
async fn a_deleted_account_logs_in_with_none_of_its_tokens() {
    let f = sled_fixture(FastConfig::default());
    let s = tls13(1);
    let t = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    success(fast_login(&f, &s, "HT-SHA-256-NONE", &t, vec![]).await);
    // Deleted on the account side; the store still holds the client, unrevoked.
    assert!(f.accounts.remove("alice"));
    assert_eq!(f.plugin.tokens().store().len().await.unwrap(), 1);
    assert_eq!(
        failure(fast_login(&f, &s, "HT-SHA-256-NONE", &t, vec![]).await),
        SaslCondition::CredentialsExpired
    );
}

/// An account store that answers credentials but not (or not yet) revocation cutoffs.
#[derive(Debug)]
struct Accounts(Option<RevocationCutoff>);

#[async_trait::async_trait]
impl AccountStore for Accounts {
    async fn scram_credentials(
        &self,
        _username: &str,
        _hash: ScramHash,
    ) -> Result<Option<ScramCredentials>, AccountError> {
        Ok(None)
    }
    async fn revocation_cutoff(&self, _username: &str) -> Result<RevocationCutoff, AccountError> {
        self.0
            .ok_or_else(|| AccountError::new("account database down"))
    }
}

/// The trait's default answer, as an account store written before the method existed gives.
#[derive(Debug)]
struct Untracked;

#[async_trait::async_trait]
impl AccountStore for Untracked {
    async fn scram_credentials(
        &self,
        _username: &str,
        _hash: ScramHash,
    ) -> Result<Option<ScramCredentials>, AccountError> {
        Ok(None)
    }
}

/// What verifying a fresh token of alice gives with `accounts` asked.
async fn verify_with(accounts: Arc<dyn AccountStore>) -> Result<(), RejectReason> {
    let tokens = FastTokens::new(
        Arc::new(MemoryStore::new()),
        Pepper::from_bytes([3; 32]),
        FastConfig::default(),
    )
    .with_accounts(accounts);
    let m = HtMechanism::from_name("HT-SHA-256-NONE").unwrap();
    let key = ClientKey::new("alice", UA).unwrap();
    let t = tokens
        .issue(&key, &TokenRequest::new(m, IssueKind::Requested))
        .await
        .unwrap()
        .unwrap();
    let mac = m.initiator_mac(t.token.expose().as_bytes(), &[]);
    tokens
        .verify(&VerifyRequest::new("alice", UA, m, &mac, &[]))
        .await
        .map(drop)
}

#[tokio::test]
async fn the_account_sides_answer_decides_and_its_failure_fails_closed() {
    // Fails closed, and temporarily: the client keeps its token and retries.
    assert_eq!(
        verify_with(Arc::new(Accounts(None))).await,
        Err(RejectReason::StoreUnavailable)
    );
    assert_eq!(
        failure_for_reason(RejectReason::StoreUnavailable),
        SaslCondition::TemporaryAuthFailure
    );
    assert_eq!(
        verify_with(Arc::new(Accounts(Some(RevocationCutoff::NoAccount)))).await,
        Err(RejectReason::Revoked)
    );
    assert_eq!(
        verify_with(Arc::new(Accounts(Some(RevocationCutoff::Before(u64::MAX))))).await,
        Err(RejectReason::Revoked)
    );
    assert_eq!(
        verify_with(Arc::new(Accounts(Some(RevocationCutoff::Before(0))))).await,
        Ok(())
    );
    // The default leaves the decision to the token store.
    assert_eq!(verify_with(Arc::new(Untracked)).await, Ok(()));
}

fn failure_for_reason(r: RejectReason) -> SaslCondition {
    sasl2_fast::fast::plugin::failure_for(r).condition
}
