//! The public conformance suite of [`TokenStore`]: the behaviour every store must show,
//! written once and run against each store, in this crate or outside it.
//!
//! Enable the `test-kit` feature and call [`run_all`] from a test with a function that makes a
//! fresh, empty store (and whatever must live as long as it, such as a temporary directory or
//! a database schema):
//!
//! ```
//! # #[cfg(feature = "test-kit")] {
//! use std::sync::Arc;
//! use sasl2_fast::store::{TokenStore, memory::MemoryStore, test_kit};
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! test_kit::run_all(|| async { (Arc::new(MemoryStore::new()) as Arc<dyn TokenStore>, ()) }).await;
//! # });
//! # }
//! ```
//!
//! Each check gets its own fresh store; a failing check panics with its name. The checks are
//! also public one by one, for a store that wants to run them as separate tests.
//!
//! Every method of [`TokenStore`] is called, the provided ones (`get_for_login`,
//! `remove_account`, `flush`) as the store has them: its override, or the trait's default.
//! `tests/store_conformance.rs` runs the suite on `MemoryStore`, which keeps all three
//! defaults, on `SledStore` (default `get_for_login`) and on `PostgresStore` (all overridden).

mod postgres_server;

pub use postgres_server::{TestPostgres, TestPostgresError};

use std::future::Future;
use std::sync::Arc;

use super::{
    CasOutcome, ClientKey, ClientRecord, Durability, LoginView, MAX_ACCOUNT_BYTES, MAX_LABEL_BYTES,
    MAX_MECHANISM_BYTES, RevocationScope, StoreError, TokenSlot, TokenStore, Versioned,
};

/// Names the check that was running when a panic unwinds through it.
struct Running(&'static str);

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("TokenStore conformance check `{}` failed", self.0);
        }
    }
}

/// Runs every conformance check, each against a fresh, empty store from `fresh`. The guard
/// (second tuple element) is dropped after its check. Call it from a multi-thread tokio
/// runtime so the concurrency check really runs in parallel.
///
/// # Panics
/// On the first check the store fails, naming it.
pub async fn run_all<F, Fut, G>(mut fresh: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = (Arc<dyn TokenStore>, G)>,
{
    macro_rules! run {
        ($($name:ident),* $(,)?) => {$(
            {
                let (store, guard) = fresh().await;
                let running = Running(stringify!($name));
                $name(&*store).await;
                drop(running);
                drop(store);
                drop(guard);
            }
        )*};
    }
    run!(
        insert_requires_no_record,
        stale_version_conflicts,
        versions_increment,
        delete_then_get_is_none,
        recreated_record_rejects_the_old_version,
        expiry_index,
        clients_of_isolates_accounts,
        remove_account,
        cutoffs_only_move_forward,
        login_view_joins_record_and_cutoff,
        len_counts_records,
        rejects_bad_input,
    );
    let (store, guard) = fresh().await;
    let running = Running("concurrent_increments");
    concurrent_increments(store).await;
    drop(running);
    drop(guard);
}

/// A slot expiring at `expires_at` (a fixed, non-secret nonce).
pub fn slot(expires_at: u64) -> TokenSlot {
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
pub fn record(expires_at: Option<u64>) -> ClientRecord {
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

/// The key of `account`'s client with user-agent id `ua`.
pub fn key(account: &str, ua: &str) -> ClientKey {
    ClientKey::new(account, ua).unwrap()
}

/// Creates the record at `k` (which must not exist) and returns the version the store gave it:
/// a fresh random one ([`super::fresh_version`]), never 0.
async fn insert(store: &dyn TokenStore, k: &ClientKey, r: ClientRecord) -> u64 {
    let out = store
        .compare_and_swap(k, None, Some(r), Durability::Lazy)
        .await
        .unwrap();
    match out {
        CasOutcome::Written(v) => {
            assert!((1..=1 << 62).contains(&v), "fresh version {v}");
            v
        }
        CasOutcome::Conflict => panic!("insert of {k:?} conflicted"),
    }
}

/// An insert (`expected = None`) succeeds only when no record exists, with a fresh version.
pub async fn insert_requires_no_record(store: &dyn TokenStore) {
    let k = key("alice", "ua-1");
    assert_eq!(store.get(&k).await.unwrap(), None);
    let v = insert(store, &k, record(Some(100))).await;
    let got = store.get(&k).await.unwrap().unwrap();
    assert_eq!(got.version, v);
    assert_eq!(got.value, record(Some(100)));
    // A second insert loses: the record exists now.
    let again = store
        .compare_and_swap(&k, None, Some(record(Some(999))), Durability::Durable)
        .await
        .unwrap();
    assert_eq!(again, CasOutcome::Conflict);
    assert_eq!(
        store.get(&k).await.unwrap().unwrap(),
        Versioned {
            version: v,
            value: record(Some(100))
        }
    );
}

/// A compare-and-swap naming any version but the stored one conflicts and changes nothing.
pub async fn stale_version_conflicts(store: &dyn TokenStore) {
    let k = key("alice", "ua-1");
    // Expecting a version of a record that does not exist.
    let out = store
        .compare_and_swap(&k, Some(1), Some(record(Some(1))), Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Conflict);
    assert_eq!(store.get(&k).await.unwrap(), None);

    let v = insert(store, &k, record(Some(100))).await;
    let out = store
        .compare_and_swap(&k, Some(v), Some(record(Some(200))), Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Written(v + 1));
    // The loser of a race still holds version v.
    for stale in [Some(v), Some(v + 2), None] {
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
    assert_eq!(got.version, v + 1);
    assert_eq!(got.value, record(Some(200)));
}

/// Every successful update writes `expected + 1`.
pub async fn versions_increment(store: &dyn TokenStore) {
    let k = key("bob", "ua");
    let first = insert(store, &k, record(Some(10))).await;
    for i in 0..19u64 {
        let v = first + i;
        let mut r = record(Some(11 + i));
        r.last_used_at = i + 1;
        let out = store
            .compare_and_swap(&k, Some(v), Some(r.clone()), Durability::Lazy)
            .await
            .unwrap();
        assert_eq!(out, CasOutcome::Written(v + 1));
        let got = store.get(&k).await.unwrap().unwrap();
        assert_eq!(
            got,
            Versioned {
                version: v + 1,
                value: r
            }
        );
    }
}

/// A delete removes the record and its expiry-index entry.
pub async fn delete_then_get_is_none(store: &dyn TokenStore) {
    let k = key("carol", "ua");
    let other = key("carol", "other");
    let v = insert(store, &k, record(Some(10))).await;
    let v_other = insert(store, &other, record(Some(10))).await;
    let out = store
        .compare_and_swap(&k, Some(v), None, Durability::Durable)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Written(0));
    assert_eq!(store.get(&k).await.unwrap(), None);
    assert_eq!(store.len().await.unwrap(), 1);
    assert_eq!(store.get(&other).await.unwrap().unwrap().version, v_other);
    // Deleting what is not there, expecting nothing there, is a no-op that succeeds.
    let out = store
        .compare_and_swap(&k, None, None, Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Written(0));
    // The key can be created again; the new record has the version its insert reported.
    let w = insert(store, &k, record(Some(20))).await;
    assert_eq!(
        store.get(&k).await.unwrap().unwrap(),
        Versioned {
            version: w,
            value: record(Some(20))
        }
    );
}

/// ABA: a login reads version `v`, the record is deleted (e.g. the client invalidated its
/// tokens) and created again; the login's CAS must not apply to the new record.
pub async fn recreated_record_rejects_the_old_version(store: &dyn TokenStore) {
    let k = key("ivan", "ua");
    let v = insert(store, &k, record(Some(10))).await;
    let out = store
        .compare_and_swap(&k, Some(v), None, Durability::Durable)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Written(0));
    let w = insert(store, &k, record(Some(20))).await;
    assert_ne!(w, v, "a re-created record reused its old version");
    // The stale writer loses, whether it updates or deletes.
    let out = store
        .compare_and_swap(&k, Some(v), Some(record(Some(30))), Durability::Durable)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Conflict);
    let out = store
        .compare_and_swap(&k, Some(v), None, Durability::Durable)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Conflict);
    assert_eq!(
        store.get(&k).await.unwrap().unwrap(),
        Versioned {
            version: w,
            value: record(Some(20))
        }
    );
    // Writers that read the new record still get through.
    let out = store
        .compare_and_swap(&k, Some(w), Some(record(Some(40))), Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Written(w + 1));
}

/// `expired` serves exactly the records whose latest expiry has passed, oldest first, and
/// follows every update and delete.
pub async fn expiry_index(store: &dyn TokenStore) {
    let k50 = key("dave", "50");
    let k100 = key("dave", "100");
    let k200 = key("erin", "200");
    let k300 = key("erin", "300");
    let empty = key("erin", "empty");
    let v200 = insert(store, &k200, record(Some(200))).await;
    let v100 = insert(store, &k100, record(Some(100))).await;
    let v300 = insert(store, &k300, record(Some(300))).await;
    let v50 = insert(store, &k50, record(Some(50))).await;
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
        .compare_and_swap(&k50, Some(v50), Some(record(Some(400))), Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Written(v50 + 1));
    assert_eq!(store.expired(150, 10).await.unwrap(), vec![k100.clone()]);
    assert_eq!(
        store.expired(u64::MAX, 100).await.unwrap(),
        vec![k100.clone(), k200.clone(), k300.clone(), k50.clone()]
    );

    // The record's expiry is the later of its two slots.
    let mut both = record(Some(60));
    both.new = Some(slot(350));
    let out = store
        .compare_and_swap(&k100, Some(v100), Some(both), Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Written(v100 + 1));
    assert_eq!(
        store.expired(300, 10).await.unwrap(),
        vec![k200.clone(), k300.clone()]
    );

    // Deleting removes the entry; emptying both slots does too.
    let out = store
        .compare_and_swap(&k200, Some(v200), None, Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Written(0));
    let out = store
        .compare_and_swap(&k300, Some(v300), Some(record(None)), Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Written(v300 + 1));
    assert_eq!(store.expired(300, 10).await.unwrap(), vec![]);
    assert_eq!(
        store.expired(u64::MAX, 10).await.unwrap(),
        vec![k100.clone(), k50.clone()]
    );
    // A lost CAS (k50 is at v50 + 1 now) leaves the index alone.
    let out = store
        .compare_and_swap(&k50, Some(v50), Some(record(Some(1))), Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Conflict);
    assert_eq!(store.expired(300, 10).await.unwrap(), vec![]);
}

/// `clients_of` lists one account's clients, never another's (also for prefix-sharing names).
pub async fn clients_of_isolates_accounts(store: &dyn TokenStore) {
    let a: Vec<ClientKey> = (0..3).map(|i| key("a", &format!("ua-{i}"))).collect();
    let ab: Vec<ClientKey> = (0..2).map(|i| key("ab", &format!("ua-{i}"))).collect();
    let mut versions = std::collections::BTreeMap::new();
    for k in a.iter().chain(&ab) {
        versions.insert(k.clone(), insert(store, k, record(Some(10))).await);
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
            assert_eq!(v.version, versions[&k]);
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

/// `remove_account` deletes every record of one account and nothing else.
pub async fn remove_account(store: &dyn TokenStore) {
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

/// Revocation cutoffs only ever rise; the global one applies to every account.
pub async fn cutoffs_only_move_forward(store: &dyn TokenStore) {
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

/// `get_for_login` returns the record together with the larger of the account's and the
/// global revocation cutoff, and tracks later raises of either.
pub async fn login_view_joins_record_and_cutoff(store: &dyn TokenStore) {
    let k = key("alice", "ua-1");
    assert_eq!(
        store.get_for_login(&k).await.unwrap(),
        LoginView {
            record: None,
            revoked_before: 0
        }
    );
    let v = insert(store, &k, record(Some(100))).await;
    let want = Versioned {
        version: v,
        value: record(Some(100)),
    };
    let view = store.get_for_login(&k).await.unwrap();
    assert_eq!(view.record.as_ref(), Some(&want));
    assert_eq!(view.revoked_before, 0);
    store
        .raise_revocation_cutoff(RevocationScope::Account("alice".into()), 40)
        .await
        .unwrap();
    assert_eq!(store.get_for_login(&k).await.unwrap().revoked_before, 40);
    store
        .raise_revocation_cutoff(RevocationScope::All, 70)
        .await
        .unwrap();
    assert_eq!(store.get_for_login(&k).await.unwrap().revoked_before, 70);
    // Another account's cutoff does not apply; the global one does.
    store
        .raise_revocation_cutoff(RevocationScope::Account("bob".into()), 90)
        .await
        .unwrap();
    let view = store.get_for_login(&k).await.unwrap();
    assert_eq!(view.revoked_before, 70);
    assert_eq!(view.record, Some(want));
    let other = key("carol", "ua");
    assert_eq!(
        store.get_for_login(&other).await.unwrap().revoked_before,
        70
    );
}

/// `len` counts records.
pub async fn len_counts_records(store: &dyn TokenStore) {
    assert_eq!(store.len().await.unwrap(), 0);
    let mut versions = Vec::new();
    for i in 0..10 {
        versions.push(insert(store, &key("f", &format!("{i}")), record(Some(i))).await);
    }
    insert(store, &key("g", "x"), record(None)).await;
    assert_eq!(store.len().await.unwrap(), 11);
    let out = store
        .compare_and_swap(&key("f", "3"), Some(versions[3]), None, Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Written(0));
    assert_eq!(store.len().await.unwrap(), 10);
    store.flush().await.unwrap();
    assert_eq!(store.len().await.unwrap(), 10);
}

/// Oversized records and account names are rejected with typed errors and write nothing.
pub async fn rejects_bad_input(store: &dyn TokenStore) {
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
pub async fn concurrent_increments(store: Arc<dyn TokenStore>) {
    const TASKS: u64 = 8;
    const EACH: u64 = 50;
    let k = key("counter", "ua");
    let first = insert(&*store, &k, record(Some(10))).await;
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
                            assert_eq!(v, cur.version + 1);
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
    assert_eq!(got.version, first + TASKS * EACH);
}
