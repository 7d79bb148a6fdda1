//! Token persistence behind one async, object-safe trait.
//!
//! The store knows FAST clients as records (two token slots, timestamps, a revocation cutoff),
//! not HT mechanisms or HMACs: the `fast` module decides what a record change means, the store
//! makes each change atomic and durable. Ready-made stores: [`memory::MemoryStore`] (tests) and
//! [`sled_store::SledStore`] (the default, embedded).
//!
//! # Sealed at rest
//! A [`TokenSlot`] holds a random per-token nonce, never the token a client presents: the
//! token is derived from the nonce and a server-side pepper (see [`crate::fast::token`]), so a
//! copy of the store alone cannot log anyone in.

mod codec;
pub mod memory;
pub mod migrate;
pub mod observed;
#[cfg(feature = "postgres")]
pub mod postgres;
mod seal;
pub mod sled_store;
#[cfg(any(test, feature = "test-kit"))]
pub mod test_kit;

use std::fmt;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

/// Longest account name a key may hold (JID localpart limit, RFC 7622).
pub const MAX_ACCOUNT_BYTES: usize = 1023;
/// Longest mechanism name kept in a slot (XEP-0388 schema: 1..20; HT names are shorter).
pub const MAX_MECHANISM_BYTES: usize = 32;
/// Longest `<software>` / `<device>` string kept for the account owner's device list.
pub const MAX_LABEL_BYTES: usize = 128;

/// Checks an account name given to an account-wide operation (`clients_of`, `remove_account`,
/// cutoffs) against the same bounds as [`ClientKey`], so no store builds a key prefix from a
/// name that no key could hold.
pub fn check_account(account: &str) -> Result<(), StoreError> {
    if account.is_empty() || account.len() > MAX_ACCOUNT_BYTES {
        return Err(StoreError::InvalidKey);
    }
    Ok(())
}

/// Identifies one FAST client of one account: the account localpart and the SHA-256 of the
/// SASL2 user-agent id. The raw id never becomes a key (it is attacker-chosen and long-lived).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey {
    account: String,
    client: [u8; 32],
}

impl ClientKey {
    /// The key for `account` (already normalized) and a raw user-agent id.
    pub fn new(account: &str, user_agent_id: &str) -> Result<Self, StoreError> {
        let client: [u8; 32] = Sha256::digest(user_agent_id.as_bytes()).into();
        Self::from_parts(account, client)
    }

    /// The key from an account and an already hashed client id.
    pub fn from_parts(account: &str, client: [u8; 32]) -> Result<Self, StoreError> {
        if account.is_empty() || account.len() > MAX_ACCOUNT_BYTES {
            return Err(StoreError::InvalidKey);
        }
        Ok(ClientKey {
            account: account.to_owned(),
            client,
        })
    }

    /// The account localpart.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// SHA-256 of the user-agent id.
    pub fn client_hash(&self) -> &[u8; 32] {
        &self.client
    }

    /// A short, stable label for logs and events: the first 8 bytes of the hash, in hex.
    /// It identifies a client to an operator without revealing the user-agent id.
    pub fn client_label(&self) -> String {
        // One allocation: it is made for every FAST event, so on every login.
        crate::xmpp::lower_hex(&self.client[..8])
    }

    /// Binary form used as a database key: `u16 BE account length || account || hash`.
    /// Keys of one account share a prefix ([`ClientKey::account_prefix`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Self::account_prefix(&self.account);
        out.extend_from_slice(&self.client);
        out
    }

    /// The key prefix shared by every client of `account`.
    pub fn account_prefix(account: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + account.len() + 32);
        out.extend_from_slice(&(account.len() as u16).to_be_bytes());
        out.extend_from_slice(account.as_bytes());
        out
    }

    /// Parses [`ClientKey::encode`] output.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        if bytes.len() < 2 {
            return Err(StoreError::Corrupt("short key".into()));
        }
        let len = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
        if bytes.len() != 2 + len + 32 {
            return Err(StoreError::Corrupt("key length".into()));
        }
        let account = std::str::from_utf8(&bytes[2..2 + len])
            .map_err(|_| StoreError::Corrupt("key account".into()))?;
        let mut client = [0u8; 32];
        client.copy_from_slice(&bytes[2 + len..]);
        Self::from_parts(account, client)
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKey({}, {})", self.account, self.client_label())
    }
}

/// `{"account": ..., "client": <the hash, 64 hex digits>}`: how an admin tool names a client
/// (the hash, never the user-agent id; its first 16 digits are [`ClientKey::client_label`]).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename = "ClientKey")]
struct ClientKeyForm {
    account: String,
    client: String,
}

impl serde::Serialize for ClientKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ClientKeyForm {
            account: self.account.clone(),
            client: crate::xmpp::lower_hex(&self.client),
        }
        .serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for ClientKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let form = ClientKeyForm::deserialize(deserializer)?;
        let digits = form.client.as_bytes();
        let mut client = [0u8; 32];
        // `from_str_radix` alone would take a sign.
        if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(D::Error::custom("client: 64 hex digits expected"));
        }
        for (byte, pair) in client.iter_mut().zip(digits.chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(D::Error::custom)?;
            *byte = u8::from_str_radix(pair, 16).map_err(D::Error::custom)?;
        }
        ClientKey::from_parts(&form.account, client).map_err(D::Error::custom)
    }
}

/// One token of a client: `current` or `new` (protocol.md §8).
///
/// `nonce` is not the token, but together with the server pepper it yields the token, so it is
/// zeroized on drop and redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSlot {
    /// Random per-token value from which the token is derived.
    pub nonce: [u8; 32],
    /// The HT mechanism the token is bound to (F-15).
    pub mechanism: String,
    /// Unix milliseconds when issued.
    pub issued_at: u64,
    /// Unix milliseconds when it stops being accepted.
    pub expires_at: u64,
    /// Unix milliseconds when the chain of rotations that led to this token began with a password
    /// login (for `token_max_chain_age`).
    pub chain_started_at: u64,
    /// Highest `count` seen with this token (F-13, F-14), if any.
    pub max_count: Option<u32>,
}

impl Drop for TokenSlot {
    fn drop(&mut self) {
        self.nonce.zeroize();
    }
}

impl fmt::Debug for TokenSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSlot")
            .field("nonce", &"[redacted]")
            .field("mechanism", &self.mechanism)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("chain_started_at", &self.chain_started_at)
            .field("max_count", &self.max_count)
            .finish()
    }
}

/// Everything stored for one (account, client): XEP-0484's two slots (F-29, protocol.md §8)
/// and the labels its owner's client list shows, which live exactly as long as the record
/// (CAM-6).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientRecord {
    /// The token in use.
    pub current: Option<TokenSlot>,
    /// A token handed out but not used yet (F-17).
    pub new: Option<TokenSlot>,
    /// Unix milliseconds when the record was first written.
    pub created_at: u64,
    /// Unix milliseconds of the last successful FAST login (coarse: updated at most every few
    /// minutes, so the hot path does not write on every login). Drives the per-account cap.
    pub last_used_at: u64,
    /// Tokens issued before this instant (unix milliseconds) are revoked: they verify but are
    /// answered with `credentials-expired`. 0 = never revoked.
    pub revoked_before: u64,
    /// `<software>` of the client, for the owner's device list (S-12: never shown to others).
    pub software: Option<String>,
    /// `<device>` of the client, for the owner's device list.
    pub device: Option<String>,
}

impl ClientRecord {
    /// The instant after which nothing in this record can be accepted any more: the latest
    /// slot expiry, or `None` when both slots are empty. The stores index records by it so an
    /// expiry sweep only visits what expired.
    pub fn expires_at(&self) -> Option<u64> {
        match (&self.current, &self.new) {
            (None, None) => None,
            (a, b) => Some(
                a.as_ref()
                    .map_or(0, |s| s.expires_at)
                    .max(b.as_ref().map_or(0, |s| s.expires_at)),
            ),
        }
    }

    /// True when neither slot holds a token.
    pub fn is_empty(&self) -> bool {
        self.current.is_none() && self.new.is_none()
    }
}

/// A record with the version the store assigned to it. Writes name the version they were
/// computed from ([`TokenStore::compare_and_swap`]), which is how two concurrent logins with
/// the same token never see a half-rotated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// Grows by one with every update of the record. A record created from nothing
    /// (`expected = None`) starts at a fresh random version ([`fresh_version`]), not at 1:
    /// otherwise a record deleted and created again would reuse the versions of its earlier
    /// incarnation, and a writer that read the old record before the delete could win a CAS
    /// against the new one (ABA), e.g. resurrecting tokens a client invalidated or overwriting a
    /// token just issued. Never 0 for a stored record.
    pub version: u64,
    /// The value.
    pub value: T,
}

/// Largest version [`fresh_version`] returns. Leaves `2^64 - 2^62` updates of headroom before
/// `version + 1` could overflow.
const MAX_FRESH_VERSION: u64 = 1 << 62;

/// The version for a record created with `expected = None`: uniformly random in
/// `1..=2^62`, so it cannot realistically collide with any version an earlier incarnation of
/// the same key had (a stale writer holding one of those gets [`CasOutcome::Conflict`]).
/// Every store uses it for inserts; updates keep `version + 1`.
///
/// # Panics
/// If the OS random number generator fails (as token issuance does: without it nothing safe
/// can be done).
pub fn fresh_version() -> u64 {
    let mut buf = [0u8; 8];
    getrandom::fill(&mut buf).expect("the OS random number generator failed");
    // 2^62 divides 2^64, so the remainder is uniform.
    u64::from_le_bytes(buf) % MAX_FRESH_VERSION + 1
}

/// When a write must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On stable storage before the call returns. Used for every write that precedes handing a
    /// token to a client, and for revocations.
    Durable,
    /// May be lost in a crash (the store's background flush catches up, e.g. within 500 ms for
    /// sled). Used for bookkeeping such as `last_used_at` and replay counters outside 0-RTT.
    Lazy,
}

/// The outcome of a compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    /// Written; the record now has this version (0 after a delete).
    Written(u64),
    /// Someone else changed the record first: re-read and retry.
    Conflict,
}

/// Which tokens a revocation cutoff applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationScope {
    /// Every token of every account (e.g. after a suspected pepper leak).
    All,
    /// Every token of one account (what a password change calls).
    Account(String),
}

pub use crate::BoxError;

/// A store failure. Never contains a token or nonce.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The account name is empty or too long.
    #[error("invalid client key")]
    InvalidKey,
    /// A record to be written breaks a size bound (mechanism or label too long).
    #[error("invalid record: {0}")]
    InvalidRecord(&'static str),
    /// A stored value could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The backend failed (I/O, connection, ...); the backend's own error is the source.
    #[error("store backend: {0}")]
    Backend(#[source] BoxError),
    /// The store lost or damaged committed writes; the text names the recovery.
    #[error("token store damaged: {0}")]
    Damaged(String),
    /// One record kept changing under concurrent updates; the operation gave up.
    #[error("too many concurrent updates of one client")]
    Contended,
}

impl StoreError {
    /// Wraps a backend error, keeping it as the source.
    pub fn backend(e: impl Into<BoxError>) -> Self {
        StoreError::Backend(e.into())
    }
}

/// What a FAST login reads: the client's record and the revocation cutoff of its account
/// (the larger of the account's own and the global one), fetched together so a login costs one
/// round trip to a networked store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginView {
    /// The record, if the client has one.
    pub record: Option<Versioned<ClientRecord>>,
    /// Tokens of the account issued before this instant (unix ms) are revoked.
    pub revoked_before: u64,
}

/// Persistence of FAST client records.
///
/// Any implementation, in this crate or outside it, can check itself against the contract
/// below with the public conformance suite: enable the `test-kit` feature and call
/// `test_kit::run_all` with a function that makes fresh, empty stores (see its docs). The suite
/// calls every method, the provided ones as the store has them (its override or the default).
///
/// # What a store writes
/// Seven methods are required, in two groups:
/// - **Records and revocation** (the login path and every revocation):
///   [`get`](TokenStore::get), [`compare_and_swap`](TokenStore::compare_and_swap),
///   [`raise_revocation_cutoff`](TokenStore::raise_revocation_cutoff),
///   [`revocation_cutoff`](TokenStore::revocation_cutoff).
/// - **Listing** (the owner's device list and the per-account cap, the expiry sweep, metrics):
///   [`clients_of`](TokenStore::clients_of), [`expired`](TokenStore::expired),
///   [`len`](TokenStore::len). None has a default: each needs an index only the store has.
///
/// Three are provided from those, and worth overriding only where the backend does better:
/// - [`get_for_login`](TokenStore::get_for_login): `get` then `revocation_cutoff`, two reads;
///   a networked store answers both in one round trip (PostgreSQL: one statement).
/// - [`remove_account`](TokenStore::remove_account): `clients_of`, then one durable
///   `compare_and_swap` delete per record; a store with batches or `DELETE ... WHERE` does it in
///   one write.
/// - [`flush`](TokenStore::flush): nothing to do, right for a store that makes every write
///   durable before it returns. A store that defers [`Durability::Lazy`] writes must override
///   it.
///
/// [`memory::MemoryStore`] writes only the required methods; [`sled_store::SledStore`]
/// overrides `remove_account` and `flush`, `postgres::PostgresStore` all three.
///
/// # Contract
/// - **Atomic per record.** Every state change of one (account, client) record happens in one
///   [`compare_and_swap`](TokenStore::compare_and_swap): it succeeds only if the stored version
///   still equals `expected`, and then replaces the whole record (and any index the store keeps)
///   at once. Two concurrent FAST logins with the same token therefore never observe a
///   half-rotated record; the loser gets [`CasOutcome::Conflict`] and re-reads. A SQL backend
///   implements this as one `UPDATE ... WHERE version = $expected` (or `INSERT ... ON CONFLICT
///   DO NOTHING` for `expected = None`) in one transaction.
/// - **Versions are not reused across incarnations.** An update writes `expected + 1`; an
///   insert (`expected = None`) writes [`fresh_version`], never a fixed starting value. A
///   version read from a record that was since deleted and created again must not match the
///   new record (ABA), or a stale login could overwrite it.
/// - **Durable when asked.** With [`Durability::Durable`] the write is on stable storage before
///   the call returns: a token handed to a client is never lost by a crash, and a revoked token
///   is never resurrected. Implementations should let concurrent durable writes share one flush.
/// - **Attacker-controlled keys.** Account names and client hashes come from unauthenticated
///   peers; keys are bounded ([`MAX_ACCOUNT_BYTES`]) and the store must not be made to do work
///   proportional to anything but the record asked for.
/// - **No secrets in errors or logs.** Slots hold nonces that, with the server pepper, yield
///   tokens: never log them.
// `len` is a metric read from a backend (fallible, async); an `is_empty` beside it would add a
// method every store must carry for no caller.
#[allow(clippy::len_without_is_empty)]
#[async_trait]
pub trait TokenStore: fmt::Debug + Send + Sync {
    // Records and revocation: required.

    /// Reads one record.
    async fn get(&self, key: &ClientKey) -> Result<Option<Versioned<ClientRecord>>, StoreError>;

    /// Atomically replaces the record at `key` if its version is `expected` (`None`: no record
    /// exists). `new = None` deletes the record.
    async fn compare_and_swap(
        &self,
        key: &ClientKey,
        expected: Option<u64>,
        new: Option<ClientRecord>,
        durability: Durability,
    ) -> Result<CasOutcome, StoreError>;

    /// Raises a revocation cutoff: tokens in scope issued before `before` (unix milliseconds) are no
    /// longer trusted. Cutoffs only move forward. Durable.
    async fn raise_revocation_cutoff(
        &self,
        scope: RevocationScope,
        before: u64,
    ) -> Result<(), StoreError>;

    /// The cutoff that applies to `account`: the larger of its own and the global one.
    async fn revocation_cutoff(&self, account: &str) -> Result<u64, StoreError>;

    // Listing: required.

    /// Every record of one account, at most `limit` of them, in key order.
    async fn clients_of(
        &self,
        account: &str,
        limit: usize,
    ) -> Result<Vec<(ClientKey, Versioned<ClientRecord>)>, StoreError>;

    /// Keys of records whose [`ClientRecord::expires_at`] is at or before `before`, oldest
    /// first, at most `limit`. Served from an expiry index: the cost is proportional to the
    /// number returned, not to the store size.
    async fn expired(&self, before: u64, limit: usize) -> Result<Vec<ClientKey>, StoreError>;

    /// Number of client records (for metrics and tests).
    async fn len(&self) -> Result<u64, StoreError>;

    // Provided: override where the backend does better.

    /// Reads one record and the revocation cutoff of its account: the read a FAST login makes.
    /// Equivalent to [`TokenStore::get`] plus [`TokenStore::revocation_cutoff`], which is the
    /// default (two reads); a networked store overrides it to answer both in one round trip
    /// (one query for a SQL store). An override must not answer with a cutoff older than one
    /// that was durable before the call began.
    async fn get_for_login(&self, key: &ClientKey) -> Result<LoginView, StoreError> {
        let record = self.get(key).await?;
        let revoked_before = self.revocation_cutoff(key.account()).await?;
        Ok(LoginView {
            record,
            revoked_before,
        })
    }

    /// Deletes every record of an account; returns how many were removed. Durable.
    ///
    /// The default lists the account with [`TokenStore::clients_of`] and deletes each record
    /// with a durable [`TokenStore::compare_and_swap`], until a listing comes back empty (so a
    /// client created meanwhile goes too). A record that changed since its listing is listed
    /// again; after 64 such races it gives up with [`StoreError::Contended`].
    async fn remove_account(&self, account: &str) -> Result<usize, StoreError> {
        let mut removed = 0;
        let mut conflicts = 0;
        loop {
            let page = self.clients_of(account, REMOVE_ACCOUNT_PAGE).await?;
            if page.is_empty() {
                return Ok(removed);
            }
            for (key, record) in page {
                match self
                    .compare_and_swap(&key, Some(record.version), None, Durability::Durable)
                    .await?
                {
                    CasOutcome::Written(_) => removed += 1,
                    // A login changed it (or a concurrent removal took it) since the listing.
                    CasOutcome::Conflict => {
                        conflicts += 1;
                        if conflicts > REMOVE_ACCOUNT_MAX_CONFLICTS {
                            return Err(StoreError::Contended);
                        }
                    }
                }
            }
        }
    }

    /// Makes every earlier write durable. The default does nothing: right for a store whose
    /// every write, [`Durability::Lazy`] ones included, is durable when it returns. A store
    /// that defers lazy writes overrides it.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Records the default [`TokenStore::remove_account`] lists per round.
const REMOVE_ACCOUNT_PAGE: usize = 256;

/// Races with concurrent updates the default [`TokenStore::remove_account`] accepts before it
/// gives up.
const REMOVE_ACCOUNT_MAX_CONFLICTS: usize = 64;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::memory::MemoryStore;
    use super::test_kit::{key, record};
    use super::*;

    /// An admin tool names a client by account and whole hash; what it reads back is the same
    /// key, and a malformed one is refused, never a key of another client.
    #[test]
    fn client_keys_serialize_as_account_and_hash() {
        let k = ClientKey::new("alice", "ua").unwrap();
        let json = serde_json::to_value(&k).unwrap();
        let hash = crate::xmpp::lower_hex(k.client_hash());
        assert_eq!(
            json,
            serde_json::json!({"account": "alice", "client": hash})
        );
        assert!(hash.starts_with(&k.client_label()));
        let back: ClientKey = serde_json::from_value(json).unwrap();
        assert_eq!(back, k);
        let upper: ClientKey = serde_json::from_value(
            serde_json::json!({"account": "alice", "client": hash.to_uppercase()}),
        )
        .unwrap();
        assert_eq!(upper, k);
        let signed = format!("+{}", &hash[1..]);
        for (account, client) in [
            ("alice", &hash[..63]),
            ("alice", &format!("{hash}0")[..]),
            ("alice", &signed[..]),
            ("alice", &"zz".repeat(32)[..]),
            ("", &hash[..]),
        ] {
            let v = serde_json::json!({"account": account, "client": client});
            assert!(
                serde_json::from_value::<ClientKey>(v).is_err(),
                "{account:?} {client:?}"
            );
        }
    }

    /// A memory store where a concurrent login updates each record just before the first
    /// `races` deletes of it land: what the default `remove_account` must survive.
    #[derive(Debug)]
    struct Racing {
        inner: MemoryStore,
        races: AtomicUsize,
    }

    #[async_trait]
    impl TokenStore for Racing {
        async fn get(
            &self,
            key: &ClientKey,
        ) -> Result<Option<Versioned<ClientRecord>>, StoreError> {
            self.inner.get(key).await
        }
        async fn compare_and_swap(
            &self,
            key: &ClientKey,
            expected: Option<u64>,
            new: Option<ClientRecord>,
            durability: Durability,
        ) -> Result<CasOutcome, StoreError> {
            if new.is_none()
                && self
                    .races
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                && let Some(cur) = self.inner.get(key).await?
            {
                let mut bumped = cur.value.clone();
                bumped.last_used_at += 1;
                let out = self
                    .inner
                    .compare_and_swap(key, Some(cur.version), Some(bumped), Durability::Lazy)
                    .await?;
                assert!(matches!(out, CasOutcome::Written(_)));
            }
            self.inner
                .compare_and_swap(key, expected, new, durability)
                .await
        }
        async fn raise_revocation_cutoff(
            &self,
            scope: RevocationScope,
            before: u64,
        ) -> Result<(), StoreError> {
            self.inner.raise_revocation_cutoff(scope, before).await
        }
        async fn revocation_cutoff(&self, account: &str) -> Result<u64, StoreError> {
            self.inner.revocation_cutoff(account).await
        }
        async fn clients_of(
            &self,
            account: &str,
            limit: usize,
        ) -> Result<Vec<(ClientKey, Versioned<ClientRecord>)>, StoreError> {
            self.inner.clients_of(account, limit).await
        }
        async fn expired(&self, before: u64, limit: usize) -> Result<Vec<ClientKey>, StoreError> {
            self.inner.expired(before, limit).await
        }
        async fn len(&self) -> Result<u64, StoreError> {
            self.inner.len().await
        }
    }

    async fn racing(races: usize) -> Racing {
        let store = Racing {
            inner: MemoryStore::new(),
            races: AtomicUsize::new(races),
        };
        for k in [key("a", "1"), key("a", "2"), key("b", "1")] {
            let out = store
                .compare_and_swap(&k, None, Some(record(Some(10))), Durability::Lazy)
                .await
                .unwrap();
            assert!(matches!(out, CasOutcome::Written(_)));
        }
        store
    }

    #[tokio::test]
    async fn default_remove_account_lists_again_what_changed_under_it() {
        let store = racing(5).await;
        assert_eq!(store.remove_account("a").await.unwrap(), 2);
        assert!(store.clients_of("a", 10).await.unwrap().is_empty());
        assert_eq!(store.len().await.unwrap(), 1, "b's record stays");
    }

    #[tokio::test]
    async fn default_remove_account_gives_up_on_a_record_that_keeps_changing() {
        let store = racing(usize::MAX).await;
        assert!(matches!(
            store.remove_account("a").await,
            Err(StoreError::Contended)
        ));
        assert_eq!(store.len().await.unwrap(), 3);
    }
}
