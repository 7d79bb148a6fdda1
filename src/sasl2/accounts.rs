//! Accounts: what the host supplies so password mechanisms can verify a login.
//!
//! Accounts keep SCRAM keys (salt, iteration count, StoredKey, ServerKey: RFC 5802 §3), never a
//! plaintext password. PLAIN is verified by deriving the same keys from the offered password.
//!
//! The account side is also the authority for revocation ([`AccountStore::revocation_cutoff`]):
//! a password change or an account deletion is recorded with the credentials, so whatever a
//! login issued in place of the password (FAST tokens) and kept elsewhere dies with it, even
//! when that other store is restored from a backup older than the change.

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;

use async_trait::async_trait;

use super::credentials::{ScramCredentials, ScramHash, derive_credentials};

/// The account backend could not answer (distinct from "no such account"); the backend's
/// error is the source.
#[derive(Debug, thiserror::Error)]
#[error("account backend: {0}")]
pub struct AccountError(#[source] pub crate::BoxError);

impl AccountError {
    /// Wraps a backend error.
    pub fn new(e: impl Into<crate::BoxError>) -> Self {
        AccountError(e.into())
    }
}

/// What the account side says about credentials issued to an account in place of its password
/// (FAST tokens): the answer of [`AccountStore::revocation_cutoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevocationCutoff {
    /// This account store keeps no such time (the default): the token store decides alone,
    /// and a token store restored from an older backup revives what was revoked after it.
    Untracked,
    /// The account exists; what was issued to it before this time (unix ms) is void. `0`:
    /// nothing was revoked on the account side.
    Before(u64),
    /// There is no such account (deleted, or never created): everything issued to it is void.
    NoAccount,
}

/// The host's account database, as seen by password mechanisms and token logins.
///
/// # Security contract
/// - `username` is attacker-controlled; it has been normalized with [`normalize_username`]
///   and is at most [`MAX_USERNAME_BYTES`] long.
/// - Return `Ok(None)` for unknown accounts; mechanisms then fail with `not-authorized` after
///   doing comparable work, so the answer does not reveal which accounts exist (S-29).
/// - [`revocation_cutoff`](Self::revocation_cutoff), if implemented, is the authority for
///   revocation by password change and account deletion: it must be stored with the
///   credentials (changed in the same write as a password), never move back, and answer
///   [`RevocationCutoff::NoAccount`] for an account that does not exist.
#[async_trait]
pub trait AccountStore: fmt::Debug + Send + Sync {
    /// The SCRAM verifier for `username` and `hash`.
    async fn scram_credentials(
        &self,
        username: &str,
        hash: ScramHash,
    ) -> Result<Option<ScramCredentials>, AccountError>;

    /// The time before which credentials issued to `username` in place of its password (FAST
    /// tokens) are void: raised by a password change, [`RevocationCutoff::NoAccount`] once the
    /// account is deleted. Asked on every token login, after the token was found: answer from
    /// memory (no key derivation, no disk or network round trip), or token logins lose what
    /// makes them fast. An error fails the login with `temporary-auth-failure`.
    ///
    /// The default, [`RevocationCutoff::Untracked`], leaves revocation to the token store
    /// alone.
    async fn revocation_cutoff(&self, username: &str) -> Result<RevocationCutoff, AccountError> {
        let _ = username;
        Ok(RevocationCutoff::Untracked)
    }
}

/// Longest accepted username (JID localpart limit, RFC 7622 §3.3).
pub const MAX_USERNAME_BYTES: usize = 1023;

/// Normalizes an authentication identity to an account localpart (nodeprep, RFC 6122
/// Appendix A; protocol.md §9 item 13). Returns `None` for names that cannot be a localpart.
pub fn normalize_username(raw: &str) -> Option<String> {
    if raw.is_empty() || raw.len() > MAX_USERNAME_BYTES {
        return None;
    }
    let prepped = stringprep::nodeprep(raw).ok()?;
    if prepped.is_empty() || prepped.len() > MAX_USERNAME_BYTES {
        return None;
    }
    Some(prepped.into_owned())
}

/// An in-memory account database (the example host fills it from its config).
///
/// Each account carries its revocation cutoff ([`MemoryAccounts::revoke_issued_before`]); a
/// removed account leaves its name behind as deleted, so an account created again under that
/// name does not inherit tokens issued to the old one.
#[derive(Default)]
pub struct MemoryAccounts {
    accounts: RwLock<HashMap<String, Account>>,
}

#[derive(Default)]
struct Account {
    credentials: HashMap<&'static str, ScramCredentials>,
    /// Unix ms; what was issued before is void.
    revoked_before: u64,
    /// Removed: no credentials, every token void (kept for `revoked_before`).
    deleted: bool,
}

impl fmt::Debug for MemoryAccounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self
            .accounts
            .read()
            .map(|a| a.values().filter(|a| !a.deleted).count())
            .unwrap_or(0);
        f.debug_struct("MemoryAccounts")
            .field("accounts", &n)
            .finish()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u64::MAX as u128) as u64)
}

fn hash_key(h: ScramHash) -> &'static str {
    match h {
        ScramHash::Sha1 => "sha1",
        ScramHash::Sha256 => "sha256",
    }
}

impl MemoryAccounts {
    /// An empty database.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores verifiers for an account (replacing any earlier ones for that hash), creating
    /// the account if needed. An account created again after [`MemoryAccounts::remove`] keeps
    /// the revocation cutoff of its removal.
    pub fn set_credentials(&self, username: &str, hash: ScramHash, creds: ScramCredentials) {
        let mut map = self.accounts.write().unwrap_or_else(|e| e.into_inner());
        let account = map.entry(username.to_owned()).or_default();
        account.deleted = false;
        account.credentials.insert(hash_key(hash), creds);
    }

    /// Voids what was issued to an account before `before_ms` (unix ms): what a password change
    /// records, with the new credentials. The cutoff only moves forward. False if there is no
    /// such account.
    pub fn revoke_issued_before(&self, username: &str, before_ms: u64) -> bool {
        let mut map = self.accounts.write().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(username) {
            Some(a) if !a.deleted => {
                a.revoked_before = a.revoked_before.max(before_ms);
                true
            }
            _ => false,
        }
    }

    /// Derives and stores SCRAM-SHA-1 and SCRAM-SHA-256 verifiers from a password (random
    /// salt, `iterations` rounds). The password itself is not kept.
    pub fn set_password(&self, username: &str, password: &str, iterations: u32) {
        for h in [ScramHash::Sha1, ScramHash::Sha256] {
            let creds = derive_credentials(h, password, iterations);
            self.set_credentials(username, h, creds);
        }
    }

    /// Removes an account: its credentials go, and everything issued to it is void
    /// ([`RevocationCutoff::NoAccount`]). The name stays known as deleted with a cutoff of now
    /// (system clock), so an account created again under it starts without the old tokens.
    /// False if there was no such account.
    pub fn remove(&self, username: &str) -> bool {
        let mut map = self.accounts.write().unwrap_or_else(|e| e.into_inner());
        let Some(a) = map.get_mut(username).filter(|a| !a.deleted) else {
            return false;
        };
        a.credentials.clear();
        a.deleted = true;
        // +1: a token issued in the same millisecond is void too.
        a.revoked_before = a.revoked_before.max(now_ms().saturating_add(1));
        true
    }

    /// True if the account exists.
    pub fn contains(&self, username: &str) -> bool {
        let map = self.accounts.read().unwrap_or_else(|e| e.into_inner());
        map.get(username).is_some_and(|a| !a.deleted)
    }
}

#[async_trait]
impl AccountStore for MemoryAccounts {
    async fn scram_credentials(
        &self,
        username: &str,
        hash: ScramHash,
    ) -> Result<Option<ScramCredentials>, AccountError> {
        let map = self.accounts.read().unwrap_or_else(|e| e.into_inner());
        Ok(map
            .get(username)
            .and_then(|a| a.credentials.get(hash_key(hash)))
            .cloned())
    }

    /// One hash-map lookup under a read lock.
    async fn revocation_cutoff(&self, username: &str) -> Result<RevocationCutoff, AccountError> {
        let map = self.accounts.read().unwrap_or_else(|e| e.into_inner());
        Ok(match map.get(username) {
            Some(a) if !a.deleted => RevocationCutoff::Before(a.revoked_before),
            _ => RevocationCutoff::NoAccount,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_and_rejects_bad_localparts() {
        assert_eq!(normalize_username("Alice").as_deref(), Some("alice"));
        assert_eq!(normalize_username(""), None);
        assert_eq!(normalize_username("a@b"), None);
        assert_eq!(normalize_username(&"x".repeat(1024)), None);
        assert_eq!(
            normalize_username(&"x".repeat(300)).map(|s| s.len()),
            Some(300)
        );
    }

    #[tokio::test]
    async fn the_cutoff_moves_forward_and_outlives_the_account() {
        let a = MemoryAccounts::new();
        assert_eq!(
            a.revocation_cutoff("alice").await.unwrap(),
            RevocationCutoff::NoAccount
        );
        assert!(!a.revoke_issued_before("alice", 5));
        a.set_password("alice", "pw", 1);
        assert_eq!(
            a.revocation_cutoff("alice").await.unwrap(),
            RevocationCutoff::Before(0)
        );
        assert!(a.revoke_issued_before("alice", 500));
        assert!(a.revoke_issued_before("alice", 400));
        assert_eq!(
            a.revocation_cutoff("alice").await.unwrap(),
            RevocationCutoff::Before(500)
        );

        // Deleted: no credentials, every token void.
        let before = now_ms();
        assert!(a.remove("alice"));
        assert!(!a.remove("alice"));
        assert!(!a.contains("alice"));
        assert!(
            a.scram_credentials("alice", ScramHash::Sha256)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            a.revocation_cutoff("alice").await.unwrap(),
            RevocationCutoff::NoAccount
        );
        assert!(!a.revoke_issued_before("alice", u64::MAX));
        // Created again: tokens of the old account stay void.
        a.set_password("alice", "pw2", 1);
        assert!(a.contains("alice"));
        match a.revocation_cutoff("alice").await.unwrap() {
            RevocationCutoff::Before(t) => assert!(t > before, "{t} <= {before}"),
            other => panic!("{other:?}"),
        }
    }
}
