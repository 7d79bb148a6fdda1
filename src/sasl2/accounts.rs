//! Accounts: what the host supplies so password mechanisms can verify a login.
//!
//! Accounts keep SCRAM keys (salt, iteration count, StoredKey, ServerKey: RFC 5802 §3), never a
//! plaintext password. PLAIN is verified by deriving the same keys from the offered password.

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

/// The host's account database, as seen by password mechanisms.
///
/// # Security contract
/// - `username` is attacker-controlled; it has been normalized with [`normalize_username`]
///   and is at most [`MAX_USERNAME_BYTES`] long.
/// - Return `Ok(None)` for unknown accounts; mechanisms then fail with `not-authorized` after
///   doing comparable work, so the answer does not reveal which accounts exist (S-29).
#[async_trait]
pub trait AccountStore: fmt::Debug + Send + Sync {
    /// The SCRAM verifier for `username` and `hash`.
    async fn scram_credentials(
        &self,
        username: &str,
        hash: ScramHash,
    ) -> Result<Option<ScramCredentials>, AccountError>;
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
#[derive(Default)]
pub struct MemoryAccounts {
    accounts: RwLock<HashMap<String, HashMap<&'static str, ScramCredentials>>>,
}

impl fmt::Debug for MemoryAccounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.accounts.read().map(|a| a.len()).unwrap_or(0);
        f.debug_struct("MemoryAccounts")
            .field("accounts", &n)
            .finish()
    }
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

    /// Stores verifiers for an account (replacing any earlier ones for that hash).
    pub fn set_credentials(&self, username: &str, hash: ScramHash, creds: ScramCredentials) {
        let mut map = self.accounts.write().unwrap_or_else(|e| e.into_inner());
        map.entry(username.to_owned())
            .or_default()
            .insert(hash_key(hash), creds);
    }

    /// Derives and stores SCRAM-SHA-1 and SCRAM-SHA-256 verifiers from a password (random
    /// salt, `iterations` rounds). The password itself is not kept.
    pub fn set_password(&self, username: &str, password: &str, iterations: u32) {
        for h in [ScramHash::Sha1, ScramHash::Sha256] {
            let creds = derive_credentials(h, password, iterations);
            self.set_credentials(username, h, creds);
        }
    }

    /// Removes an account.
    pub fn remove(&self, username: &str) -> bool {
        let mut map = self.accounts.write().unwrap_or_else(|e| e.into_inner());
        map.remove(username).is_some()
    }

    /// True if the account exists.
    pub fn contains(&self, username: &str) -> bool {
        let map = self.accounts.read().unwrap_or_else(|e| e.into_inner());
        map.contains_key(username)
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
            .and_then(|m| m.get(hash_key(hash)))
            .cloned())
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
}
