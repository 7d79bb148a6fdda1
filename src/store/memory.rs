//! An in-process [`TokenStore`] for tests and single-process experiments.
//!
//! Everything lives behind one `std::sync::Mutex`: each operation is a few map operations with
//! no `.await` inside the critical section, so a blocking mutex is cheaper than an async one and
//! cannot be held across a suspension point. Nothing survives the process, so
//! [`Durability`] is ignored.
//!
//! It writes only the methods [`TokenStore`] requires and keeps its defaults for the rest
//! (`get_for_login`, `remove_account`, `flush`): the smallest store there is, and the one the
//! conformance suite checks the defaults on.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use super::{
    CasOutcome, ClientKey, ClientRecord, Durability, RevocationScope, StoreError, TokenStore,
    Versioned, check_account, codec, fresh_version,
};

/// A [`TokenStore`] kept in memory.
///
/// Records sit in a `BTreeMap` (so `clients_of` is a range scan), beside an expiry index of
/// `(expires_at, key)` pairs that every compare-and-swap updates in the same critical section.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    records: BTreeMap<ClientKey, Versioned<ClientRecord>>,
    /// `(ClientRecord::expires_at, key)` for every non-empty record.
    expiry: BTreeSet<(u64, ClientKey)>,
    global_cutoff: u64,
    account_cutoffs: BTreeMap<String, u64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No critical section below can panic half-way through an update (they only insert and
        // remove from maps), so a poisoned lock still guards consistent data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Counts only: records hold nonces (redacted by `TokenSlot`'s Debug, but a device list is
        // still nobody's business in a log line).
        let inner = self.lock();
        f.debug_struct("MemoryStore")
            .field("records", &inner.records.len())
            .field("global_cutoff", &inner.global_cutoff)
            .field("account_cutoffs", &inner.account_cutoffs.len())
            .finish()
    }
}

/// The smallest and largest keys an account can have, for range scans.
fn account_range(account: &str) -> Result<(ClientKey, ClientKey), StoreError> {
    Ok((
        ClientKey::from_parts(account, [0; 32])?,
        ClientKey::from_parts(account, [0xff; 32])?,
    ))
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn get(&self, key: &ClientKey) -> Result<Option<Versioned<ClientRecord>>, StoreError> {
        Ok(self.lock().records.get(key).cloned())
    }

    async fn compare_and_swap(
        &self,
        key: &ClientKey,
        expected: Option<u64>,
        new: Option<ClientRecord>,
        _durability: Durability,
    ) -> Result<CasOutcome, StoreError> {
        if let Some(record) = &new {
            codec::check_record(record)?;
        }
        let mut inner = self.lock();
        let inner = &mut *inner;
        let current = inner.records.get(key);
        if current.map(|v| v.version) != expected {
            return Ok(CasOutcome::Conflict);
        }
        if let Some(at) = current.and_then(|v| v.value.expires_at()) {
            inner.expiry.remove(&(at, key.clone()));
        }
        match new {
            None => {
                inner.records.remove(key);
                Ok(CasOutcome::Written(0))
            }
            Some(record) => {
                let version = expected.map_or_else(fresh_version, |v| v + 1);
                if let Some(at) = record.expires_at() {
                    inner.expiry.insert((at, key.clone()));
                }
                inner.records.insert(
                    key.clone(),
                    Versioned {
                        version,
                        value: record,
                    },
                );
                Ok(CasOutcome::Written(version))
            }
        }
    }

    async fn clients_of(
        &self,
        account: &str,
        limit: usize,
    ) -> Result<Vec<(ClientKey, Versioned<ClientRecord>)>, StoreError> {
        check_account(account)?;
        let range = account_range(account)?;
        Ok(self
            .lock()
            .records
            .range(range.0..=range.1)
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn expired(&self, before: u64, limit: usize) -> Result<Vec<ClientKey>, StoreError> {
        Ok(self
            .lock()
            .expiry
            .iter()
            .take_while(|(at, _)| *at <= before)
            .take(limit)
            .map(|(_, k)| k.clone())
            .collect())
    }

    async fn raise_revocation_cutoff(
        &self,
        scope: RevocationScope,
        before: u64,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        match scope {
            RevocationScope::All => inner.global_cutoff = inner.global_cutoff.max(before),
            RevocationScope::Account(account) => {
                check_account(&account)?;
                let cutoff = inner.account_cutoffs.entry(account).or_insert(0);
                *cutoff = (*cutoff).max(before);
            }
        }
        Ok(())
    }

    async fn revocation_cutoff(&self, account: &str) -> Result<u64, StoreError> {
        check_account(account)?;
        let inner = self.lock();
        let own = inner.account_cutoffs.get(account).copied().unwrap_or(0);
        Ok(own.max(inner.global_cutoff))
    }

    async fn len(&self) -> Result<u64, StoreError> {
        Ok(self.lock().records.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    // The conformance suite runs through the public test kit: tests/store_conformance.rs.
    use super::*;

    #[test]
    fn debug_shows_counts_only() {
        let s = format!("{:?}", MemoryStore::default());
        assert!(s.starts_with("MemoryStore"), "{s}");
    }
}
