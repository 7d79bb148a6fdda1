//! FAST's client records as the throttle's memory of known devices
//! ([`crate::sasl2::KnownDevices`]): a user-agent id that received a token logged in to that
//! account, so strangers guessing the account's password do not lock it out.

use async_trait::async_trait;

use super::FastTokens;
use crate::sasl2::KnownDevices;
use crate::store::ClientKey;

#[async_trait]
impl KnownDevices for FastTokens {
    /// True when `user_agent_id` has a record for `account` with a token its owner did not
    /// revoke (XEP-0494 or `host ctl revoke`): a device the owner revoked is a stranger again.
    /// A password change (an account-wide cutoff) does not make the owner's devices strangers.
    /// A store error answers `false`: the attempt is then judged as a stranger's, which fails
    /// closed.
    async fn is_known(&self, account: &str, user_agent_id: &str) -> bool {
        let Ok(key) = ClientKey::new(account, user_agent_id) else {
            return false;
        };
        match self.store().get(&key).await {
            Ok(Some(v)) => {
                let r = &v.value;
                [&r.current, &r.new]
                    .into_iter()
                    .flatten()
                    .any(|slot| slot.issued_at >= r.revoked_before)
            }
            Ok(None) | Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::fast::tokens::{IssueKind, TokenRequest};
    use crate::fast::{FastConfig, HtMechanism, Pepper, RevokedBy};
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn a_device_that_holds_an_unrevoked_token_is_known() {
        let tokens = FastTokens::new(
            Arc::new(MemoryStore::new()),
            Pepper::generate(),
            FastConfig::default(),
        );
        assert!(!tokens.is_known("alice", "phone").await);
        let m = HtMechanism::from_name("HT-SHA-256-NONE").unwrap();
        let key = ClientKey::new("alice", "phone").unwrap();
        tokens
            .issue(&key, &TokenRequest::new(m, IssueKind::Requested))
            .await
            .unwrap()
            .unwrap();
        assert!(tokens.is_known("alice", "phone").await);
        assert!(!tokens.is_known("bob", "phone").await);
        assert!(!tokens.is_known("alice", "laptop").await);
        // A password change leaves the owner's devices known; the owner revoking one does not.
        tokens
            .revoke_account("alice", &RevokedBy::PasswordChange)
            .await
            .unwrap();
        assert!(tokens.is_known("alice", "phone").await);
        tokens.revoke_client(&key, &RevokedBy::Admin).await.unwrap();
        assert!(!tokens.is_known("alice", "phone").await);
    }
}
