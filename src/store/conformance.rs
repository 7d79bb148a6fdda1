//! The behaviour every [`TokenStore`] must show, written once and run against each store.
//!
//! Each check takes a fresh, empty store. [`conformance_tests!`]
//! turns the whole list into `#[tokio::test]`s for one store; the concurrency check needs an
//! `Arc` (its tasks outlive a borrow) and is called separately on a multi-thread runtime.

use std::sync::Arc;

use super::{
    CasOutcome, ClientKey, ClientRecord, Durability, MAX_ACCOUNT_BYTES, MAX_LABEL_BYTES,
    MAX_MECHANISM_BYTES, RevocationScope, StoreError, TokenSlot, TokenStore,
};

/// Generates one `#[tokio::test]` per conformance check. `$make` is an expression yielding
/// `(guard, store)`: the guard (e.g. a temp dir) lives as long as the test.
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::store::conformance::conformance_tests!(@each $make;
            insert_requires_no_record,
            stale_version_conflicts,
            versions_increment,
            delete_then_get_is_none,
            expiry_index,
            clients_of_isolates_accounts,
            remove_account,
            cutoffs_only_move_forward,
            len_counts_records,
            rejects_bad_input,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (_guard, store) = $make;
                $crate::store::conformance::$name(&store).await;
            }
        )*
    };
}
pub(crate) use conformance_tests;

/// A slot expiring at `expires_at`.
pub(crate) fn slot(expires_at: u64) -> TokenSlot {
    TokenSlot {
        nonce: [0x5a; 32],
        mechanism: "HT-SHA-256-NONE".into(),
        issued_at: expires_at.saturating_sub(100),
        expires_at,
        chain_started_at: 1,
        max_count: None,
    }
}

/// A record whose `current` slot expires at `expires_at` (`None`: no slot at all).
pub(crate) fn record(expires_at: Option<u64>) -> ClientRecord {
    ClientRecord {
        current: expires_at.map(slot),
        new: None,
        created_at: 1,
        last_used_at: 0,
        revoked_before: 0,
        software: Some("Conversations".into()),
        device: Some("phone".into()),
    }
}

pub(crate) fn key(account: &str, ua: &str) -> ClientKey {
    ClientKey::new(account, ua).unwrap()
}

async fn insert(store: &dyn TokenStore, k: &ClientKey, r: ClientRecord) {
    let out = store
        .compare_and_swap(k, None, Some(r), Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Written(1));
}

pub(crate) async fn insert_requires_no_record(store: &dyn TokenStore) {
    let k = key("alice", "ua-1");
    assert_eq!(store.get(&k).await.unwrap(), None);
    insert(store, &k, record(Some(100))).await;
    let got = store.get(&k).await.unwrap().unwrap();
    assert_eq!(got.version, 1);
    assert_eq!(got.value, record(Some(100)));
    // A second insert loses: the record exists now.
    let again = store
        .compare_and_swap(&k, None, Some(record(Some(999))), Durability::Durable)
        .await
        .unwrap();
    assert_eq!(again, CasOutcome::Conflict);
    assert_eq!(
        store.get(&k).await.unwrap().unwrap().value,
        record(Some(100))
    );
}

pub(crate) async fn stale_version_conflicts(store: &dyn TokenStore) {
    let k = key("alice", "ua-1");
    // Expecting a version of a record that does not exist.
    let out = store
        .compare_and_swap(&k, Some(1), Some(record(Some(1))), Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Conflict);
    assert_eq!(store.get(&k).await.unwrap(), None);

    insert(store, &k, record(Some(100))).await;
    let out = store
        .compare_and_swap(&k, Some(1), Some(record(Some(200))), Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Written(2));
    // The loser of a race still holds version 1.
    for stale in [Some(1), Some(3), None] {
        let out = store
            .compare_and_swap(&k, stale, Some(record(Some(300))), Durability::Lazy)
            .await
            .unwrap();
        assert_eq!(out, CasOutcome::Conflict, "expected {stale:?}");
        let out = store
            .compare_and_swap(&k, stale, None, Durability::Lazy)
            .await
            .unwrap();
        assert_eq!(out, CasOutcome::Conflict, "delete expecting {stale:?}");
    }
    let got = store.get(&k).await.unwrap().unwrap();
    assert_eq!(got.version, 2);
    assert_eq!(got.value, record(Some(200)));
}

pub(crate) async fn versions_increment(store: &dyn TokenStore) {
    let k = key("bob", "ua");
    insert(store, &k, record(Some(10))).await;
    for v in 1..20u64 {
        let mut r = record(Some(10 + v));
        r.last_used_at = v;
        let out = store
            .compare_and_swap(&k, Some(v), Some(r.clone()), Durability::Lazy)
            .await
            .unwrap();
        assert_eq!(out, CasOutcome::Written(v + 1));
        let got = store.get(&k).await.unwrap().unwrap();
        assert_eq!(
            got,
            super::Versioned {
                version: v + 1,
                value: r
            }
        );
    }
}

pub(crate) async fn delete_then_get_is_none(store: &dyn TokenStore) {
    let k = key("carol", "ua");
    let other = key("carol", "other");
    insert(store, &k, record(Some(10))).await;
    insert(store, &other, record(Some(10))).await;
    let out = store
        .compare_and_swap(&k, Some(1), None, Durability::Durable)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Written(0));
    assert_eq!(store.get(&k).await.unwrap(), None);
    assert_eq!(store.len().await.unwrap(), 1);
    assert!(store.get(&other).await.unwrap().is_some());
    // Deleting what is not there, expecting nothing there, is a no-op that succeeds.
    let out = store
        .compare_and_swap(&k, None, None, Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Written(0));
    // A fresh record starts again at version 1.
    insert(store, &k, record(Some(20))).await;
    assert_eq!(store.get(&k).await.unwrap().unwrap().version, 1);
}

pub(crate) async fn expiry_index(store: &dyn TokenStore) {
    let k50 = key("dave", "50");
    let k100 = key("dave", "100");
    let k200 = key("erin", "200");
    let k300 = key("erin", "300");
    let empty = key("erin", "empty");
    insert(store, &k200, record(Some(200))).await;
    insert(store, &k100, record(Some(100))).await;
    insert(store, &k300, record(Some(300))).await;
    insert(store, &k50, record(Some(50))).await;
    insert(store, &empty, record(None)).await;

    assert_eq!(store.expired(0, 10).await.unwrap(), vec![]);
    assert_eq!(store.expired(49, 10).await.unwrap(), vec![]);
    // Inclusive bound, oldest first.
    assert_eq!(
        store.expired(100, 10).await.unwrap(),
        vec![k50.clone(), k100.clone()]
    );
    assert_eq!(
        store.expired(250, 10).await.unwrap(),
        vec![k50.clone(), k100.clone(), k200.clone()]
    );
    // `limit` is respected and takes the oldest; empty records are never listed.
    assert_eq!(
        store.expired(u64::MAX, 2).await.unwrap(),
        vec![k50.clone(), k100.clone()]
    );
    assert_eq!(store.expired(u64::MAX, 0).await.unwrap(), vec![]);
    assert_eq!(
        store.expired(u64::MAX, 100).await.unwrap(),
        vec![k50.clone(), k100.clone(), k200.clone(), k300.clone()]
    );

    // Moving the expiry later moves the index entry.
    let out = store
        .compare_and_swap(&k50, Some(1), Some(record(Some(400))), Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Written(2));
    assert_eq!(store.expired(150, 10).await.unwrap(), vec![k100.clone()]);
    assert_eq!(
        store.expired(u64::MAX, 100).await.unwrap(),
        vec![k100.clone(), k200.clone(), k300.clone(), k50.clone()]
    );

    // The record's expiry is the later of its two slots.
    let mut both = record(Some(60));
    both.new = Some(slot(350));
    let out = store
        .compare_and_swap(&k100, Some(1), Some(both), Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Written(2));
    assert_eq!(
        store.expired(300, 10).await.unwrap(),
        vec![k200.clone(), k300.clone()]
    );

    // Deleting removes the entry; emptying both slots does too.
    store
        .compare_and_swap(&k200, Some(1), None, Durability::Lazy)
        .await
        .unwrap();
    store
        .compare_and_swap(&k300, Some(1), Some(record(None)), Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(store.expired(300, 10).await.unwrap(), vec![]);
    assert_eq!(
        store.expired(u64::MAX, 10).await.unwrap(),
        vec![k100.clone(), k50.clone()]
    );
    // A lost CAS leaves the index alone.
    let out = store
        .compare_and_swap(&k50, Some(1), Some(record(Some(1))), Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Conflict);
    assert_eq!(store.expired(300, 10).await.unwrap(), vec![]);
}

pub(crate) async fn clients_of_isolates_accounts(store: &dyn TokenStore) {
    let a: Vec<ClientKey> = (0..3).map(|i| key("a", &format!("ua-{i}"))).collect();
    let ab: Vec<ClientKey> = (0..2).map(|i| key("ab", &format!("ua-{i}"))).collect();
    for k in a.iter().chain(&ab) {
        insert(store, k, record(Some(10))).await;
    }
    insert(store, &key("b", "ua-0"), record(Some(10))).await;

    let mut want_a = a.clone();
    want_a.sort_by_key(|k| *k.client_hash());
    let got: Vec<ClientKey> = store
        .clients_of("a", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(v.version, 1);
            assert_eq!(v.value, record(Some(10)));
            k
        })
        .collect();
    assert_eq!(
        got, want_a,
        "all of a's clients, in key order, none of ab's"
    );

    let got: Vec<ClientKey> = store
        .clients_of("ab", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|k| k.account() == "ab"));

    assert_eq!(store.clients_of("a", 2).await.unwrap().len(), 2);
    assert_eq!(store.clients_of("a", 0).await.unwrap().len(), 0);
    assert!(store.clients_of("nobody", 100).await.unwrap().is_empty());
    assert!(store.clients_of("", 100).await.is_err());
}

pub(crate) async fn remove_account(store: &dyn TokenStore) {
    for i in 0..3 {
        insert(store, &key("a", &format!("{i}")), record(Some(10 + i))).await;
    }
    insert(store, &key("a", "empty"), record(None)).await;
    insert(store, &key("ab", "0"), record(Some(5))).await;
    assert_eq!(store.len().await.unwrap(), 5);

    assert_eq!(store.remove_account("a").await.unwrap(), 4);
    assert_eq!(store.len().await.unwrap(), 1);
    assert!(store.clients_of("a", 100).await.unwrap().is_empty());
    assert_eq!(store.get(&key("a", "0")).await.unwrap(), None);
    assert_eq!(store.clients_of("ab", 100).await.unwrap().len(), 1);
    // The expiry index forgot a's records.
    assert_eq!(
        store.expired(u64::MAX, 100).await.unwrap(),
        vec![key("ab", "0")]
    );
    assert_eq!(store.remove_account("a").await.unwrap(), 0);
    assert_eq!(store.remove_account("nobody").await.unwrap(), 0);
    // The account can come back.
    insert(store, &key("a", "0"), record(Some(10))).await;
}

pub(crate) async fn cutoffs_only_move_forward(store: &dyn TokenStore) {
    assert_eq!(store.revocation_cutoff("x").await.unwrap(), 0);
    let acct = |a: &str| RevocationScope::Account(a.into());
    store.raise_revocation_cutoff(acct("x"), 100).await.unwrap();
    assert_eq!(store.revocation_cutoff("x").await.unwrap(), 100);
    assert_eq!(store.revocation_cutoff("y").await.unwrap(), 0);
    store.raise_revocation_cutoff(acct("x"), 50).await.unwrap();
    assert_eq!(store.revocation_cutoff("x").await.unwrap(), 100);

    store
        .raise_revocation_cutoff(RevocationScope::All, 70)
        .await
        .unwrap();
    assert_eq!(store.revocation_cutoff("x").await.unwrap(), 100);
    assert_eq!(store.revocation_cutoff("y").await.unwrap(), 70);
    store
        .raise_revocation_cutoff(RevocationScope::All, 200)
        .await
        .unwrap();
    assert_eq!(store.revocation_cutoff("x").await.unwrap(), 200);
    store
        .raise_revocation_cutoff(RevocationScope::All, 10)
        .await
        .unwrap();
    assert_eq!(store.revocation_cutoff("y").await.unwrap(), 200);
    store.raise_revocation_cutoff(acct("x"), 300).await.unwrap();
    assert_eq!(store.revocation_cutoff("x").await.unwrap(), 300);
    assert_eq!(store.revocation_cutoff("xy").await.unwrap(), 200);
    // Cutoffs are not records.
    assert_eq!(store.len().await.unwrap(), 0);
}

pub(crate) async fn len_counts_records(store: &dyn TokenStore) {
    assert_eq!(store.len().await.unwrap(), 0);
    for i in 0..10 {
        insert(store, &key("f", &format!("{i}")), record(Some(i))).await;
    }
    insert(store, &key("g", "x"), record(None)).await;
    assert_eq!(store.len().await.unwrap(), 11);
    store
        .compare_and_swap(&key("f", "3"), Some(1), None, Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(store.len().await.unwrap(), 10);
    store.flush().await.unwrap();
    assert_eq!(store.len().await.unwrap(), 10);
}

pub(crate) async fn rejects_bad_input(store: &dyn TokenStore) {
    let k = key("h", "ua");
    let mut r = record(Some(5));
    r.current.as_mut().unwrap().mechanism = "M".repeat(MAX_MECHANISM_BYTES + 1);
    let err = store
        .compare_and_swap(&k, None, Some(r), Durability::Durable)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidRecord(_)), "{err:?}");
    let mut r = record(Some(5));
    r.device = Some("d".repeat(MAX_LABEL_BYTES + 1));
    let err = store
        .compare_and_swap(&k, None, Some(r), Durability::Lazy)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidRecord(_)), "{err:?}");
    // Nothing was written by the rejected calls.
    assert_eq!(store.get(&k).await.unwrap(), None);
    assert_eq!(store.expired(u64::MAX, 10).await.unwrap(), vec![]);

    let long = "l".repeat(MAX_ACCOUNT_BYTES + 1);
    for account in ["", long.as_str()] {
        assert!(matches!(
            store.clients_of(account, 10).await,
            Err(StoreError::InvalidKey)
        ));
        assert!(matches!(
            store.remove_account(account).await,
            Err(StoreError::InvalidKey)
        ));
        assert!(matches!(
            store.revocation_cutoff(account).await,
            Err(StoreError::InvalidKey)
        ));
        assert!(matches!(
            store
                .raise_revocation_cutoff(RevocationScope::Account(account.into()), 5)
                .await,
            Err(StoreError::InvalidKey)
        ));
    }
    // The longest valid account works everywhere.
    let longest = "m".repeat(MAX_ACCOUNT_BYTES);
    insert(store, &key(&longest, "ua"), record(Some(1))).await;
    assert_eq!(store.clients_of(&longest, 10).await.unwrap().len(), 1);
    store
        .raise_revocation_cutoff(RevocationScope::Account(longest.clone()), 9)
        .await
        .unwrap();
    assert_eq!(store.revocation_cutoff(&longest).await.unwrap(), 9);
}

/// 8 tasks x 50 read-modify-CAS increments of `last_used_at`, retrying on conflict: with an
/// atomic CAS no increment is lost. Call it from a multi-thread runtime.
pub(crate) async fn concurrent_increments(store: Arc<dyn TokenStore>) {
    const TASKS: u64 = 8;
    const EACH: u64 = 50;
    let k = key("counter", "ua");
    insert(&*store, &k, record(Some(10))).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let store = store.clone();
        let k = k.clone();
        tasks.spawn(async move {
            let mut conflicts = 0u64;
            for _ in 0..EACH {
                loop {
                    let cur = store.get(&k).await.unwrap().unwrap();
                    let mut next = cur.value.clone();
                    next.last_used_at += 1;
                    match store
                        .compare_and_swap(&k, Some(cur.version), Some(next), Durability::Lazy)
                        .await
                        .unwrap()
                    {
                        CasOutcome::Written(v) => {
                            assert!(v > cur.version);
                            break;
                        }
                        CasOutcome::Conflict => {
                            conflicts += 1;
                            tokio::task::yield_now().await;
                        }
                    }
                }
            }
            conflicts
        });
    }
    let mut conflicts = 0;
    while let Some(r) = tasks.join_next().await {
        conflicts += r.unwrap();
    }
    let got = store.get(&k).await.unwrap().unwrap();
    assert_eq!(
        got.value.last_used_at,
        TASKS * EACH,
        "{conflicts} conflicts"
    );
    assert_eq!(got.version, 1 + TASKS * EACH);
}
