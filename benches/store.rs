//! Token store costs: the read on every FAST login (`get`), the bookkeeping write (lazy CAS),
//! and the write before a token is handed out (durable CAS), alone and 32 at a time to show
//! group commit sharing flushes.
//!
//! `cargo bench --bench store -- --test` runs each benchmark once as a smoke test.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sasl2_fast::store::memory::MemoryStore;
use sasl2_fast::store::sled_store::SledStore;
use sasl2_fast::store::{CasOutcome, ClientKey, ClientRecord, Durability, TokenSlot, TokenStore};

const RECORDS: usize = 10_000;
const CONCURRENT: usize = 32;

fn record(i: u64) -> ClientRecord {
    ClientRecord {
        current: Some(TokenSlot {
            nonce: [0x42; 32],
            mechanism: "HT-SHA-256-NONE".into(),
            issued_at: 1_700_000_000,
            expires_at: 1_700_000_000 + 21 * 86_400 + i,
            chain_started_at: 1_700_000_000,
            max_count: None,
        }),
        new: None,
        created_at: 1_700_000_000,
        last_used_at: i,
        revoked_before: 0,
        software: Some("Conversations".into()),
        device: Some("Pixel".into()),
    }
}

fn keys(n: usize) -> Vec<ClientKey> {
    (0..n)
        .map(|i| ClientKey::new(&format!("user{}", i % 1000), &format!("ua-{i}")).unwrap())
        .collect()
}

async fn fill(store: &dyn TokenStore, keys: &[ClientKey]) {
    for (i, k) in keys.iter().enumerate() {
        let out = store
            .compare_and_swap(k, None, Some(record(i as u64)), Durability::Lazy)
            .await
            .unwrap();
        assert_eq!(out, CasOutcome::Written(1));
    }
    store.flush().await.unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn sled_store(dir: &tempfile::TempDir) -> SledStore {
    SledStore::open(dir.path().join("db")).unwrap()
}

fn get(c: &mut Criterion) {
    let rt = runtime();
    let keys = keys(RECORDS);
    let dir = tempfile::tempdir().unwrap();
    let stores: [(&str, Box<dyn TokenStore>); 2] = [
        ("memory", Box::new(MemoryStore::new())),
        ("sled", Box::new(sled_store(&dir))),
    ];
    let mut group = c.benchmark_group("get_10k_records");
    group.throughput(Throughput::Elements(1));
    for (name, store) in &stores {
        rt.block_on(fill(store.as_ref(), &keys));
        let mut i = 0;
        group.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| {
                i = (i + 7919) % RECORDS;
                let k = &keys[i];
                async move { black_box(store.get(k).await.unwrap()) }
            })
        });
    }
    group.finish();
}

fn cas_lazy(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let stores: [(&str, Box<dyn TokenStore>); 2] = [
        ("memory", Box::new(MemoryStore::new())),
        ("sled", Box::new(sled_store(&dir))),
    ];
    let key = ClientKey::new("alice", "ua").unwrap();
    let mut group = c.benchmark_group("cas_lazy");
    group.throughput(Throughput::Elements(1));
    for (name, store) in &stores {
        rt.block_on(fill(store.as_ref(), std::slice::from_ref(&key)));
        let mut version = 1;
        group.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| {
                let expected = version;
                version += 1;
                let (store, key) = (store, &key);
                async move {
                    let out = store
                        .compare_and_swap(
                            key,
                            Some(expected),
                            Some(record(expected)),
                            Durability::Lazy,
                        )
                        .await
                        .unwrap();
                    assert_eq!(out, CasOutcome::Written(expected + 1));
                }
            })
        });
    }
    group.finish();
}

/// One durable write at a time: each pays a full flush.
fn cas_durable_single(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir);
    let key = ClientKey::new("alice", "ua").unwrap();
    rt.block_on(fill(&store, std::slice::from_ref(&key)));
    let mut version = 1;
    let mut group = c.benchmark_group("cas_durable");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.bench_function("sled_single", |b| {
        b.to_async(&rt).iter(|| {
            let expected = version;
            version += 1;
            let (store, key) = (&store, &key);
            async move {
                let out = store
                    .compare_and_swap(
                        key,
                        Some(expected),
                        Some(record(expected)),
                        Durability::Durable,
                    )
                    .await
                    .unwrap();
                assert_eq!(out, CasOutcome::Written(expected + 1));
            }
        })
    });
    group.finish();
}

/// 32 durable writes in flight at once (32 logins being handed tokens): group commit lets them
/// share flushes, so the time per batch stays close to one or two flushes.
fn cas_durable_concurrent(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(sled_store(&dir));
    let keys = Arc::new(keys(CONCURRENT));
    rt.block_on(fill(store.as_ref(), &keys));
    let flushes_before = store.flush_count();
    let mut writes = 0u64;
    let mut group = c.benchmark_group("cas_durable");
    group.throughput(Throughput::Elements(CONCURRENT as u64));
    group.sample_size(10);
    group.bench_function("sled_32_concurrent", |b| {
        b.to_async(&rt).iter(|| {
            writes += CONCURRENT as u64;
            let (store, keys) = (store.clone(), keys.clone());
            async move {
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..CONCURRENT {
                    let (store, keys) = (store.clone(), keys.clone());
                    tasks.spawn(async move {
                        let k = &keys[i];
                        let cur = store.get(k).await.unwrap().unwrap();
                        let out = store
                            .compare_and_swap(
                                k,
                                Some(cur.version),
                                Some(record(cur.version)),
                                Durability::Durable,
                            )
                            .await
                            .unwrap();
                        assert_eq!(out, CasOutcome::Written(cur.version + 1));
                    });
                }
                while let Some(r) = tasks.join_next().await {
                    r.unwrap();
                }
            }
        })
    });
    group.finish();
    let flushes = store.flush_count() - flushes_before;
    eprintln!("cas_durable/sled_32_concurrent: {writes} durable writes, {flushes} flushes");
}

criterion_group!(
    benches,
    get,
    cas_lazy,
    cas_durable_single,
    cas_durable_concurrent
);
criterion_main!(benches);
