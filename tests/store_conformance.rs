//! Every bundled [`TokenStore`] passes the public conformance suite, through the same public
//! path (`sasl2_fast::store::test_kit`, feature `test-kit`) an out-of-tree store would use.

use std::sync::Arc;

use sasl2_fast::store::memory::MemoryStore;
use sasl2_fast::store::sled_store::SledStore;
use sasl2_fast::store::{TokenStore, test_kit};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conforms() {
    test_kit::run_all(|| async { (Arc::new(MemoryStore::new()) as Arc<dyn TokenStore>, ()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sled_store_conforms() {
    test_kit::run_all(|| async {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path().join("db")).unwrap();
        (Arc::new(store) as Arc<dyn TokenStore>, dir)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_conforms() {
    use sasl2_fast::store::postgres::{PostgresOptions, PostgresStore};
    use sasl2_fast::store::test_kit::TestPostgres;
    let pg = TestPostgres::start().unwrap_or_else(|e| panic!("{e}"));
    // A fresh database per check: each starts from an empty store, as the kit requires.
    test_kit::run_all(|| async {
        let url = pg.fresh_database().unwrap();
        let store = PostgresStore::open(PostgresOptions::new(url))
            .await
            .unwrap();
        (Arc::new(store) as Arc<dyn TokenStore>, ())
    })
    .await;
}
