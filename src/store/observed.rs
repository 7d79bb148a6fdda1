//! A [`TokenStore`] decorator that times every operation and reports it to a
//! [`StoreObserver`]: how store latency and store errors reach a metrics endpoint without any
//! store knowing about metrics.
//!
//! ```
//! # use std::sync::Arc;
//! # use std::time::Duration;
//! use sasl2_fast::store::memory::MemoryStore;
//! use sasl2_fast::store::observed::{ObservedStore, StoreObserver, StoreOp, StoreOutcome};
//! use sasl2_fast::store::TokenStore;
//!
//! #[derive(Debug)]
//! struct Log;
//! impl StoreObserver for Log {
//!     fn completed(&self, op: StoreOp, elapsed: Duration, outcome: StoreOutcome) {
//!         println!("{} took {elapsed:?}: {}", op.as_str(), outcome.as_str());
//!     }
//! }
//! let store: Arc<dyn TokenStore> =
//!     Arc::new(ObservedStore::new(Arc::new(MemoryStore::new()), Arc::new(Log)));
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    CasOutcome, ClientKey, ClientRecord, Durability, LoginView, RevocationScope, StoreError,
    TokenStore, Versioned,
};

/// One method of [`TokenStore`], as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreOp {
    /// [`TokenStore::get`].
    Get,
    /// [`TokenStore::get_for_login`]: the one read of every FAST login.
    GetForLogin,
    /// [`TokenStore::compare_and_swap`]: every state change of a record.
    CompareAndSwap,
    /// [`TokenStore::clients_of`].
    ClientsOf,
    /// [`TokenStore::expired`] (the sweep).
    Expired,
    /// [`TokenStore::remove_account`].
    RemoveAccount,
    /// [`TokenStore::raise_revocation_cutoff`].
    RaiseRevocationCutoff,
    /// [`TokenStore::revocation_cutoff`].
    RevocationCutoff,
    /// [`TokenStore::len`].
    Len,
    /// [`TokenStore::flush`].
    Flush,
}

impl StoreOp {
    /// Every operation, for metric label sets created up front.
    pub const ALL: [StoreOp; 10] = [
        StoreOp::Get,
        StoreOp::GetForLogin,
        StoreOp::CompareAndSwap,
        StoreOp::ClientsOf,
        StoreOp::Expired,
        StoreOp::RemoveAccount,
        StoreOp::RaiseRevocationCutoff,
        StoreOp::RevocationCutoff,
        StoreOp::Len,
        StoreOp::Flush,
    ];

    /// A stable name for logs and metrics (the method name).
    pub fn as_str(self) -> &'static str {
        match self {
            StoreOp::Get => "get",
            StoreOp::GetForLogin => "get_for_login",
            StoreOp::CompareAndSwap => "compare_and_swap",
            StoreOp::ClientsOf => "clients_of",
            StoreOp::Expired => "expired",
            StoreOp::RemoveAccount => "remove_account",
            StoreOp::RaiseRevocationCutoff => "raise_revocation_cutoff",
            StoreOp::RevocationCutoff => "revocation_cutoff",
            StoreOp::Len => "len",
            StoreOp::Flush => "flush",
        }
    }
}

/// How a store operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreOutcome {
    /// It succeeded.
    Ok,
    /// A compare-and-swap lost to a concurrent writer ([`CasOutcome::Conflict`]): not an
    /// error, but a rising rate means contended records.
    Conflict,
    /// It failed; the kind of [`StoreError`].
    Error(StoreErrorKind),
}

impl StoreOutcome {
    /// A stable name: `ok`, `conflict` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreOutcome::Ok => "ok",
            StoreOutcome::Conflict => "conflict",
            StoreOutcome::Error(_) => "error",
        }
    }
}

/// The variant of a [`StoreError`], without its text (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreErrorKind {
    /// [`StoreError::InvalidKey`].
    InvalidKey,
    /// [`StoreError::InvalidRecord`].
    InvalidRecord,
    /// [`StoreError::Corrupt`].
    Corrupt,
    /// [`StoreError::Backend`]: I/O, a lost database connection, a full pool.
    Backend,
    /// [`StoreError::Damaged`].
    Damaged,
    /// [`StoreError::Contended`].
    Contended,
}

impl StoreErrorKind {
    /// Every kind, for metric label sets created up front.
    pub const ALL: [StoreErrorKind; 6] = [
        StoreErrorKind::InvalidKey,
        StoreErrorKind::InvalidRecord,
        StoreErrorKind::Corrupt,
        StoreErrorKind::Backend,
        StoreErrorKind::Damaged,
        StoreErrorKind::Contended,
    ];

    /// The kind of an error.
    pub fn of(e: &StoreError) -> Self {
        match e {
            StoreError::InvalidKey => StoreErrorKind::InvalidKey,
            StoreError::InvalidRecord(_) => StoreErrorKind::InvalidRecord,
            StoreError::Corrupt(_) => StoreErrorKind::Corrupt,
            StoreError::Backend(_) => StoreErrorKind::Backend,
            StoreError::Damaged(_) => StoreErrorKind::Damaged,
            StoreError::Contended => StoreErrorKind::Contended,
        }
    }

    /// A stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreErrorKind::InvalidKey => "invalid-key",
            StoreErrorKind::InvalidRecord => "invalid-record",
            StoreErrorKind::Corrupt => "corrupt",
            StoreErrorKind::Backend => "backend",
            StoreErrorKind::Damaged => "damaged",
            StoreErrorKind::Contended => "contended",
        }
    }
}

/// Told about every operation an [`ObservedStore`] forwards.
///
/// # Contract
/// Called synchronously after each operation, on the FAST login path (every login reads
/// the store once): it must be cheap and must not block or await (an atomic counter, a
/// histogram observation). It sees no keys, records or error texts, so nothing it does can
/// leak an account name or a token nonce.
pub trait StoreObserver: fmt::Debug + Send + Sync {
    /// `op` finished after `elapsed` with `outcome`.
    fn completed(&self, op: StoreOp, elapsed: Duration, outcome: StoreOutcome);
}

/// Wraps any [`TokenStore`] and reports each operation's latency and outcome to a
/// [`StoreObserver`]. It forwards every call unchanged, so the wrapped store's contract
/// (atomicity, durability) is the decorator's.
#[derive(Debug)]
pub struct ObservedStore {
    inner: Arc<dyn TokenStore>,
    observer: Arc<dyn StoreObserver>,
}

impl ObservedStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn TokenStore>, observer: Arc<dyn StoreObserver>) -> Self {
        ObservedStore { inner, observer }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn TokenStore> {
        &self.inner
    }

    async fn timed<T>(
        &self,
        op: StoreOp,
        call: impl Future<Output = Result<T, StoreError>>,
        outcome_of: impl FnOnce(&T) -> StoreOutcome,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        let outcome = match &result {
            Ok(v) => outcome_of(v),
            Err(e) => StoreOutcome::Error(StoreErrorKind::of(e)),
        };
        self.observer.completed(op, started.elapsed(), outcome);
        result
    }
}

fn ok<T>(_: &T) -> StoreOutcome {
    StoreOutcome::Ok
}

#[async_trait]
impl TokenStore for ObservedStore {
    async fn get(&self, key: &ClientKey) -> Result<Option<Versioned<ClientRecord>>, StoreError> {
        self.timed(StoreOp::Get, self.inner.get(key), ok).await
    }

    async fn get_for_login(&self, key: &ClientKey) -> Result<LoginView, StoreError> {
        self.timed(StoreOp::GetForLogin, self.inner.get_for_login(key), ok)
            .await
    }

    async fn compare_and_swap(
        &self,
        key: &ClientKey,
        expected: Option<u64>,
        new: Option<ClientRecord>,
        durability: Durability,
    ) -> Result<CasOutcome, StoreError> {
        self.timed(
            StoreOp::CompareAndSwap,
            self.inner.compare_and_swap(key, expected, new, durability),
            |o| match o {
                CasOutcome::Written(_) => StoreOutcome::Ok,
                CasOutcome::Conflict => StoreOutcome::Conflict,
            },
        )
        .await
    }

    async fn clients_of(
        &self,
        account: &str,
        limit: usize,
    ) -> Result<Vec<(ClientKey, Versioned<ClientRecord>)>, StoreError> {
        self.timed(
            StoreOp::ClientsOf,
            self.inner.clients_of(account, limit),
            ok,
        )
        .await
    }

    async fn expired(&self, before: u64, limit: usize) -> Result<Vec<ClientKey>, StoreError> {
        self.timed(StoreOp::Expired, self.inner.expired(before, limit), ok)
            .await
    }

    async fn remove_account(&self, account: &str) -> Result<usize, StoreError> {
        self.timed(
            StoreOp::RemoveAccount,
            self.inner.remove_account(account),
            ok,
        )
        .await
    }

    async fn raise_revocation_cutoff(
        &self,
        scope: RevocationScope,
        before: u64,
    ) -> Result<(), StoreError> {
        self.timed(
            StoreOp::RaiseRevocationCutoff,
            self.inner.raise_revocation_cutoff(scope, before),
            ok,
        )
        .await
    }

    async fn revocation_cutoff(&self, account: &str) -> Result<u64, StoreError> {
        self.timed(
            StoreOp::RevocationCutoff,
            self.inner.revocation_cutoff(account),
            ok,
        )
        .await
    }

    async fn len(&self) -> Result<u64, StoreError> {
        self.timed(StoreOp::Len, self.inner.len(), ok).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.timed(StoreOp::Flush, self.inner.flush(), ok).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::store::TokenSlot;
    use crate::store::memory::MemoryStore;

    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<(StoreOp, Duration, StoreOutcome)>>);

    impl StoreObserver for Recorder {
        fn completed(&self, op: StoreOp, elapsed: Duration, outcome: StoreOutcome) {
            self.0.lock().unwrap().push((op, elapsed, outcome));
        }
    }

    impl Recorder {
        fn take(&self) -> Vec<(StoreOp, StoreOutcome)> {
            std::mem::take(&mut *self.0.lock().unwrap())
                .into_iter()
                .map(|(op, _, o)| (op, o))
                .collect()
        }
    }

    fn record() -> ClientRecord {
        ClientRecord {
            current: Some(TokenSlot {
                nonce: [7; 32],
                mechanism: "HT-SHA-256-NONE".into(),
                issued_at: 1,
                expires_at: 10,
                chain_started_at: 1,
                max_count: None,
            }),
            created_at: 1,
            ..ClientRecord::default()
        }
    }

    fn observed() -> (ObservedStore, Arc<Recorder>) {
        let rec = Arc::new(Recorder::default());
        (
            ObservedStore::new(Arc::new(MemoryStore::new()), rec.clone()),
            rec,
        )
    }

    #[tokio::test]
    async fn every_operation_is_reported_once_and_forwarded() {
        let (store, rec) = observed();
        let key = ClientKey::new("alice", "ua-1").unwrap();
        let v = match store
            .compare_and_swap(&key, None, Some(record()), Durability::Durable)
            .await
            .unwrap()
        {
            CasOutcome::Written(v) => v,
            CasOutcome::Conflict => panic!("insert into an empty store conflicted"),
        };
        // Forwarded: the inner store holds what the decorator was given.
        let got = store.inner().get(&key).await.unwrap().unwrap();
        assert_eq!((got.version, got.value), (v, record()));
        assert_eq!(store.get(&key).await.unwrap().unwrap().version, v);
        assert_eq!(
            store
                .get_for_login(&key)
                .await
                .unwrap()
                .record
                .unwrap()
                .version,
            v
        );
        assert_eq!(store.clients_of("alice", 10).await.unwrap().len(), 1);
        assert_eq!(store.expired(10, 10).await.unwrap(), vec![key.clone()]);
        store
            .raise_revocation_cutoff(RevocationScope::Account("alice".into()), 5)
            .await
            .unwrap();
        assert_eq!(store.revocation_cutoff("alice").await.unwrap(), 5);
        assert_eq!(store.len().await.unwrap(), 1);
        store.flush().await.unwrap();
        assert_eq!(store.remove_account("alice").await.unwrap(), 1);
        let ops: Vec<StoreOp> = rec
            .take()
            .into_iter()
            .map(|(op, o)| {
                assert_eq!(o, StoreOutcome::Ok, "{op:?}");
                op
            })
            .collect();
        // `store.inner().get` went around the decorator and is not reported.
        assert_eq!(
            ops,
            vec![
                StoreOp::CompareAndSwap,
                StoreOp::Get,
                StoreOp::GetForLogin,
                StoreOp::ClientsOf,
                StoreOp::Expired,
                StoreOp::RaiseRevocationCutoff,
                StoreOp::RevocationCutoff,
                StoreOp::Len,
                StoreOp::Flush,
                StoreOp::RemoveAccount,
            ]
        );
    }

    #[tokio::test]
    async fn conflicts_and_errors_are_told_apart() {
        let (store, rec) = observed();
        let key = ClientKey::new("alice", "ua-1").unwrap();
        store
            .compare_and_swap(&key, None, Some(record()), Durability::Durable)
            .await
            .unwrap();
        // A stale writer: the record exists, so `expected = None` loses.
        assert_eq!(
            store
                .compare_and_swap(&key, None, Some(record()), Durability::Durable)
                .await
                .unwrap(),
            CasOutcome::Conflict
        );
        // An account name no key can hold is the store's error, passed through unchanged.
        let long = "a".repeat(crate::store::MAX_ACCOUNT_BYTES + 1);
        let e = store.clients_of(&long, 1).await.unwrap_err();
        assert!(matches!(e, StoreError::InvalidKey), "{e}");
        assert_eq!(
            rec.take(),
            vec![
                (StoreOp::CompareAndSwap, StoreOutcome::Ok),
                (StoreOp::CompareAndSwap, StoreOutcome::Conflict),
                (
                    StoreOp::ClientsOf,
                    StoreOutcome::Error(StoreErrorKind::InvalidKey)
                ),
            ]
        );
    }

    /// Every operation of a store whose database went away: 30 ms, then an error.
    async fn lost_connection<T>() -> Result<T, StoreError> {
        tokio::time::sleep(Duration::from_millis(30)).await;
        Err(StoreError::backend("connection refused"))
    }

    #[derive(Debug)]
    struct Slow;

    #[async_trait]
    impl TokenStore for Slow {
        async fn get(&self, _: &ClientKey) -> Result<Option<Versioned<ClientRecord>>, StoreError> {
            lost_connection().await
        }
        async fn compare_and_swap(
            &self,
            _: &ClientKey,
            _: Option<u64>,
            _: Option<ClientRecord>,
            _: Durability,
        ) -> Result<CasOutcome, StoreError> {
            lost_connection().await
        }
        async fn clients_of(
            &self,
            _: &str,
            _: usize,
        ) -> Result<Vec<(ClientKey, Versioned<ClientRecord>)>, StoreError> {
            lost_connection().await
        }
        async fn expired(&self, _: u64, _: usize) -> Result<Vec<ClientKey>, StoreError> {
            lost_connection().await
        }
        async fn raise_revocation_cutoff(
            &self,
            _: RevocationScope,
            _: u64,
        ) -> Result<(), StoreError> {
            lost_connection().await
        }
        async fn revocation_cutoff(&self, _: &str) -> Result<u64, StoreError> {
            lost_connection().await
        }
        async fn len(&self) -> Result<u64, StoreError> {
            lost_connection().await
        }
    }

    #[tokio::test]
    async fn the_latency_reported_is_the_inner_stores() {
        // A backend that takes 30 ms and then fails, as a lost database connection does: the
        // decorator reports the time and the error kind, and hands the error on untouched.
        let rec = Arc::new(Recorder::default());
        let store = ObservedStore::new(Arc::new(Slow), rec.clone());
        let key = ClientKey::new("alice", "ua-1").unwrap();
        let e = store.get(&key).await.unwrap_err();
        assert!(e.to_string().contains("connection refused"), "{e}");
        let seen = std::mem::take(&mut *rec.0.lock().unwrap());
        assert_eq!(seen.len(), 1);
        let (op, elapsed, outcome) = seen[0];
        assert_eq!(op, StoreOp::Get);
        assert_eq!(outcome, StoreOutcome::Error(StoreErrorKind::Backend));
        assert!(elapsed >= Duration::from_millis(30), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    }
}
