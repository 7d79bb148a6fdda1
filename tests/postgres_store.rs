//! The PostgreSQL store against a real, throwaway PostgreSQL server (started by the tests
//! from Debian's `postgresql` package; without it these tests fail with an install hint): the
//! migration race, durability across a database crash, a database that goes away and comes
//! back, and the password sources.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sasl2_fast::store::postgres::{PostgresOptions, PostgresStore};
use sasl2_fast::store::test_kit::{TestPostgres, key, record};
use sasl2_fast::store::{CasOutcome, Durability, RevocationScope, StoreError, TokenStore};

fn server() -> TestPostgres {
    TestPostgres::start().unwrap_or_else(|e| panic!("{e}"))
}

fn no_env(_: &str) -> Option<OsString> {
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosts_opening_at_the_same_moment_migrate_once() {
    let pg = server();
    let url = pg.fresh_database().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let url = url.clone();
        tasks.spawn(async move { PostgresStore::open(PostgresOptions::new(url)).await });
    }
    let mut stores = Vec::new();
    while let Some(r) = tasks.join_next().await {
        stores.push(r.unwrap().expect("every concurrent opener succeeds"));
    }
    // They share one schema: a write through one is visible through another.
    let k = key("alice", "ua");
    let out = stores[0]
        .compare_and_swap(&k, None, Some(record(Some(10))), Durability::Durable)
        .await
        .unwrap();
    assert!(matches!(out, CasOutcome::Written(_)));
    assert!(stores[7].get(&k).await.unwrap().is_some());
    // Opening again later is a no-op.
    PostgresStore::open(PostgresOptions::new(url))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_writes_survive_a_database_crash() {
    let mut pg = server();
    let url = pg.fresh_database().unwrap();
    let store = PostgresStore::open(PostgresOptions::new(url.clone()))
        .await
        .unwrap();
    let k = key("alice", "ua");
    let CasOutcome::Written(v) = store
        .compare_and_swap(&k, None, Some(record(Some(42))), Durability::Durable)
        .await
        .unwrap()
    else {
        panic!("insert conflicted")
    };
    store
        .raise_revocation_cutoff(RevocationScope::Account("alice".into()), 7)
        .await
        .unwrap();
    drop(store);
    // Immediate shutdown: no checkpoint, recovery from the WAL at the next start.
    pg.stop(true);
    pg.start_again().unwrap();
    let store = PostgresStore::open(PostgresOptions::new(url))
        .await
        .unwrap();
    let got = store
        .get(&k)
        .await
        .unwrap()
        .expect("the durable write survived");
    assert_eq!(got.version, v);
    assert_eq!(got.value, record(Some(42)));
    assert_eq!(store.revocation_cutoff("alice").await.unwrap(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_fails_fast_and_the_pool_recovers() {
    let mut pg = server();
    let url = pg.fresh_database().unwrap();
    let mut options = PostgresOptions::new(url);
    options.connect_timeout = Duration::from_secs(2);
    options.operation_timeout = Duration::from_secs(3);
    let store = PostgresStore::open(options).await.unwrap();
    let k = key("alice", "ua");
    store.get_for_login(&k).await.unwrap();

    pg.stop(false);
    let started = Instant::now();
    for _ in 0..3 {
        match store.get_for_login(&k).await {
            Err(StoreError::Backend(_)) => {}
            other => panic!("expected a backend error, got {other:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "each failure is bounded: {:?}",
        started.elapsed()
    );

    pg.start_again().unwrap();
    // The pool replaces its broken connections by itself, without a new store.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.get_for_login(&k).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the store did not recover: {e}"),
        }
    }
    let out = store
        .compare_and_swap(&k, None, Some(record(Some(1))), Durability::Durable)
        .await
        .unwrap();
    assert!(matches!(out, CasOutcome::Written(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_from_the_string_pgpassword_or_a_password_file() {
    let pg = TestPostgres::start_with_password("s3cret-db-pw").unwrap_or_else(|e| panic!("{e}"));
    let base = pg.url();
    // No password anywhere: refused.
    assert!(
        PostgresStore::open_with_env(PostgresOptions::new(base.clone()), &no_env)
            .await
            .is_err()
    );
    // In the string.
    let with_pw = format!("{base} password=s3cret-db-pw");
    let store = PostgresStore::open_with_env(PostgresOptions::new(with_pw.clone()), &no_env)
        .await
        .unwrap();
    assert!(!format!("{store:?}").contains("s3cret-db-pw"));
    // PGPASSWORD.
    let env = |name: &str| (name == "PGPASSWORD").then(|| OsString::from("s3cret-db-pw"));
    PostgresStore::open_with_env(PostgresOptions::new(base.clone()), &env)
        .await
        .unwrap();
    // A password file (mode 0600), named by PGPASSFILE.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgpass");
    std::fs::write(
        &file,
        format!("127.0.0.1:{}:fast:fast:s3cret-db-pw\n", pg.port()),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let file_env = {
        let file = file.clone();
        move |name: &str| (name == "PGPASSFILE").then(|| file.clone().into_os_string())
    };
    PostgresStore::open_with_env(PostgresOptions::new(base.clone()), &file_env)
        .await
        .unwrap();
    // A wrong password is an error that does not quote any password.
    let wrong = format!("{base} password=wrong-pw");
    let e = PostgresStore::open_with_env(PostgresOptions::new(wrong), &no_env)
        .await
        .unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(
        !text.contains("wrong-pw") && !text.contains("s3cret-db-pw"),
        "{text}"
    );
    drop(Arc::new(store));
}
