//! Unit tests of the sled store: group commit, reopening, damage and seal handling.

use std::sync::Arc;

use super::*;
// The conformance suite runs through the public test kit: tests/store_conformance.rs.
use crate::store::test_kit::{key, record};

fn temp_store() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path().join("db")).unwrap();
    (dir, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_reopens_right_after_it_is_dropped() {
    // sled's background flush can hold the file lock a moment past the drop.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    for i in 0..30 {
        let store = SledStore::open(&path).unwrap_or_else(|e| panic!("reopen {i}: {e}"));
        let k = key("alice", &format!("c{i}"));
        let outcome = store
            .compare_and_swap(&k, None, Some(record(Some(100))), Durability::Durable)
            .await
            .unwrap();
        assert!(matches!(outcome, CasOutcome::Written(_)));
        drop(store);
    }
    assert_eq!(SledStore::open(&path).unwrap().len().await.unwrap(), 30);
}

#[test]
fn a_store_held_by_another_user_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let _held = SledStore::open(&path).unwrap();
    let started = std::time::Instant::now();
    let err = SledStore::open(&path).unwrap_err().to_string();
    assert!(err.contains("in use"), "{err}");
    assert!(started.elapsed() >= LOCK_WAIT);
}

#[tokio::test]
async fn reopen_keeps_records_versions_and_cutoffs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let k1 = key("alice", "one");
    let k2 = key("alice", "two");
    let k3 = key("bob", "three");
    let inserted = async |store: &SledStore, k: &ClientKey| match store
        .compare_and_swap(k, None, Some(record(Some(100))), Durability::Durable)
        .await
        .unwrap()
    {
        CasOutcome::Written(v) => v,
        CasOutcome::Conflict => panic!("insert conflicted"),
    };
    let (v1, v3) = {
        let store = SledStore::open(&path).unwrap();
        let v1 = inserted(&store, &k1).await;
        let v2 = inserted(&store, &k2).await;
        let v3 = inserted(&store, &k3).await;
        for i in 0..3 {
            let out = store
                .compare_and_swap(
                    &k1,
                    Some(v1 + i),
                    Some(record(Some(101 + i))),
                    Durability::Lazy,
                )
                .await
                .unwrap();
            assert_eq!(out, CasOutcome::Written(v1 + i + 1));
        }
        let out = store
            .compare_and_swap(&k2, Some(v2), None, Durability::Durable)
            .await
            .unwrap();
        assert_eq!(out, CasOutcome::Written(0));
        store
            .raise_revocation_cutoff(RevocationScope::Account("alice".into()), 42)
            .await
            .unwrap();
        store
            .raise_revocation_cutoff(RevocationScope::All, 7)
            .await
            .unwrap();
        (v1, v3)
    };
    let store = SledStore::open(&path).unwrap();
    assert_eq!(
        store.get(&k1).await.unwrap(),
        Some(Versioned {
            version: v1 + 3,
            value: record(Some(103))
        })
    );
    assert_eq!(store.get(&k2).await.unwrap(), None);
    assert_eq!(store.get(&k3).await.unwrap().unwrap().version, v3);
    assert_eq!(store.len().await.unwrap(), 2);
    assert_eq!(store.revocation_cutoff("alice").await.unwrap(), 42);
    assert_eq!(store.revocation_cutoff("bob").await.unwrap(), 7);
    assert_eq!(
        store.expired(u64::MAX, 10).await.unwrap(),
        vec![k3.clone(), k1.clone()]
    );
    // Versions continue where they were.
    assert_eq!(
        store
            .compare_and_swap(
                &k1,
                Some(v1 + 3),
                Some(record(Some(1))),
                Durability::Durable
            )
            .await
            .unwrap(),
        CasOutcome::Written(v1 + 4)
    );
}

/// `n` concurrent durable inserts; returns the version each client got, by index.
async fn concurrent_durable_writes(store: Arc<SledStore>, n: usize) -> Vec<u64> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let store = store.clone();
        tasks.spawn(async move {
            let k = key("grp", &format!("ua-{i}"));
            let out = store
                .compare_and_swap(&k, None, Some(record(Some(i as u64))), Durability::Durable)
                .await
                .unwrap();
            match out {
                CasOutcome::Written(v) if v != 0 => (i, v),
                other => panic!("insert {i}: {other:?}"),
            }
        });
    }
    let mut versions = vec![0; n];
    while let Some(r) = tasks.join_next().await {
        let (i, v) = r.unwrap();
        versions[i] = v;
    }
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_durable_writes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let versions = {
        let store = Arc::new(SledStore::open(&path).unwrap());
        concurrent_durable_writes(store, 16).await
    };
    let store = SledStore::open(&path).unwrap();
    assert_eq!(store.len().await.unwrap(), 16);
    for (i, &version) in versions.iter().enumerate() {
        let got = store.get(&key("grp", &format!("ua-{i}"))).await.unwrap();
        assert_eq!(
            got,
            Some(Versioned {
                version,
                value: record(Some(i as u64))
            })
        );
    }
}

/// Group commit: 64 concurrent durable writes share flushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_shares_flushes() {
    let (_dir, store) = temp_store();
    let store = Arc::new(store);
    let before = store.flush_count();
    concurrent_durable_writes(store.clone(), 64).await;
    let flushes = store.flush_count() - before;
    println!("64 concurrent durable writes: {flushes} flushes");
    assert!(flushes >= 1);
    assert!(flushes <= 16, "{flushes} flushes for 64 durable writes");
    assert_eq!(store.len().await.unwrap(), 64);

    // Sequential durable writes each need their own flush.
    let before = store.flush_count();
    for i in 0..4 {
        store
            .compare_and_swap(
                &key("seq", &i.to_string()),
                None,
                Some(record(None)),
                Durability::Durable,
            )
            .await
            .unwrap();
    }
    assert_eq!(store.flush_count() - before, 4);
    // Lazy writes never flush.
    let before = store.flush_count();
    store
        .compare_and_swap(
            &key("lazy", "x"),
            None,
            Some(record(None)),
            Durability::Lazy,
        )
        .await
        .unwrap();
    assert_eq!(store.flush_count(), before);
}

#[tokio::test]
async fn corrupt_values_are_reported_not_panicked_on() {
    let (_dir, store) = temp_store();
    let k = key("zed", "ua");
    let CasOutcome::Written(v) = store
        .compare_and_swap(&k, None, Some(record(Some(50))), Durability::Lazy)
        .await
        .unwrap()
    else {
        panic!("insert conflicted");
    };
    let mut raw = store.clients.get(k.encode()).unwrap().unwrap().to_vec();
    raw.truncate(raw.len() - 3);
    store.clients.insert(k.encode(), raw).unwrap();
    assert!(matches!(store.get(&k).await, Err(StoreError::Corrupt(_))));
    // The version header is intact, so this CAS gets past the version check to the decode.
    assert!(matches!(
        store
            .compare_and_swap(&k, Some(v), None, Durability::Lazy)
            .await,
        Err(StoreError::Corrupt(_))
    ));
    store.clients.insert(k.encode(), &[1u8, 2][..]).unwrap();
    assert!(matches!(store.get(&k).await, Err(StoreError::Corrupt(_))));
    assert!(matches!(
        store.clients_of("zed", 10).await,
        Err(StoreError::Corrupt(_))
    ));
    // remove_account still clears it, index entry included.
    assert_eq!(store.expired(u64::MAX, 10).await.unwrap(), vec![k.clone()]);
    assert_eq!(store.remove_account("zed").await.unwrap(), 1);
    assert_eq!(store.expired(u64::MAX, 10).await.unwrap(), vec![]);
    assert_eq!(store.get(&k).await.unwrap(), None);

    store.cutoffs.insert(GLOBAL_CUTOFF_KEY, &[1u8][..]).unwrap();
    assert!(matches!(
        store.revocation_cutoff("zed").await,
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn global_cutoff_key_cannot_be_an_account_key() {
    assert!(ClientKey::account_prefix("a").len() > GLOBAL_CUTOFF_KEY.len());
    assert!(check_account("").is_err());
}
