//! FAST costs without sockets: the HT MAC check, a full FAST login against the memory and sled
//! stores (verify + commit; the common case: token in `current`, no write), the same with the
//! account side asked for its revocation cutoff, promotion, durable
//! issuance, a login that promotes `new` and gets a token in one durable write, a whole FAST
//! exchange through the SASL2 negotiator, and SCRAM-SHA-256 at 4096 iterations as the contrast
//! a FAST login replaces.
//!
//! `cargo bench --bench fast` measures; `cargo test --benches` runs each once.

use std::hint::black_box;
use std::sync::Arc;

use base64::Engine as _;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sasl2_fast::fast::config::FastConfig;
use sasl2_fast::fast::login::VerifyRequest;
use sasl2_fast::fast::tokens::{IssueKind, TokenRequest};
use sasl2_fast::fast::{FastPlugin, FastTokens, HtMechanism, Pepper};
use sasl2_fast::minidom::Element;
use sasl2_fast::sasl2::accounts::{AccountStore, MemoryAccounts};
use sasl2_fast::sasl2::scram::ScramProvider;
use sasl2_fast::sasl2::{
    ChannelBindings, Negotiator, NegotiatorEvent, Sasl2Server, ScramHash, StreamInfo, TlsInfo,
    TlsVersion,
};
use sasl2_fast::store::memory::MemoryStore;
use sasl2_fast::store::postgres::{PostgresOptions, PostgresStore};
use sasl2_fast::store::sled_store::SledStore;
use sasl2_fast::store::test_kit::TestPostgres;
use sasl2_fast::store::{ClientKey, TokenStore};
use sasl2_fast::xmpp::{Redacted, ns};

const UA: &str = "d4565fa7-4d72-4749-b3d3-740edbf87770";
const FILL: usize = 10_000;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn stream() -> StreamInfo {
    StreamInfo::new("example.com").with_tls(TlsInfo::new(
        TlsVersion::Tls13,
        ChannelBindings::none()
            .with_tls_exporter(vec![7; 32])
            .with_tls_server_end_point(vec![8; 32]),
    ))
}

fn requested(m: HtMechanism) -> TokenRequest {
    TokenRequest::new(m, IssueKind::Requested)
}

/// Parses a literal request.
fn parse(xml: &str) -> Element {
    xml.parse().expect("well-formed benchmark input")
}

/// A token authority whose store holds `FILL` other clients plus alice's token, already
/// promoted to `current` (so verifying it writes nothing).
fn authority(
    rt: &tokio::runtime::Runtime,
    store: Arc<dyn TokenStore>,
) -> (Arc<FastTokens>, String) {
    authority_with(rt, store, None)
}

/// [`authority`], asking `accounts` for the account side's revocation cutoff on every login.
fn authority_with(
    rt: &tokio::runtime::Runtime,
    store: Arc<dyn TokenStore>,
    accounts: Option<Arc<dyn AccountStore>>,
) -> (Arc<FastTokens>, String) {
    let mut tokens = FastTokens::new(store, Pepper::from_bytes([3; 32]), FastConfig::default());
    if let Some(a) = accounts {
        tokens = tokens.with_accounts(a);
    }
    let tokens = Arc::new(tokens);
    let m = HtMechanism::from_name("HT-SHA-256-NONE").unwrap();
    rt.block_on(async {
        for i in 0..FILL {
            let key = ClientKey::new(&format!("user{}", i % 1000), &format!("ua-{i}")).unwrap();
            tokens.issue(&key, &requested(m)).await.unwrap();
        }
        let key = ClientKey::new("alice", UA).unwrap();
        let t = tokens.issue(&key, &requested(m)).await.unwrap().unwrap();
        let token = t.token.expose().to_owned();
        let mac = m.initiator_mac(token.as_bytes(), &[]);
        login(&tokens, m, &mac, &[], None).await; // promote new -> current
        (tokens.clone(), token)
    })
}

/// A FAST login of alice as the inline feature runs it: verify (one read), then commit the
/// state change with the token `issue` asks for (at most one write).
async fn login(
    tokens: &FastTokens,
    m: HtMechanism,
    mac: &[u8],
    cb: &[u8],
    issue: Option<&TokenRequest>,
) -> bool {
    let req = VerifyRequest::new("alice", UA, m, mac, cb);
    let verified = tokens.verify(&req).await.expect("valid token");
    let issued = tokens.commit(verified, issue).await.expect("commit");
    issued.is_some()
}

/// A PostgreSQL token store on a fresh database of `pg`.
fn postgres(rt: &tokio::runtime::Runtime, pg: &TestPostgres) -> Arc<dyn TokenStore> {
    let url = pg.fresh_database().unwrap();
    Arc::new(
        rt.block_on(PostgresStore::open(PostgresOptions::new(url)))
            .unwrap(),
    )
}

fn ht_mac(c: &mut Criterion) {
    let mut g = c.benchmark_group("ht_verify");
    g.throughput(Throughput::Elements(1));
    let token = b"secret-token:fast-HZzFpFwHTy4nc3C8Y1NVNZqYef_7Q3YjMLu2HZzFpFwH";
    for name in [
        "HT-SHA-256-NONE",
        "HT-SHA-256-EXPR",
        "HT-SHA-512-EXPR",
        "HT-SHA3-512-EXPR",
    ] {
        let m = HtMechanism::from_name(name).unwrap();
        let cb = [9u8; 32];
        let mac = m.initiator_mac(token, &cb);
        g.bench_function(name, |b| {
            b.iter(|| {
                assert!(bool::from(m.verify_initiator(
                    black_box(token),
                    black_box(&cb),
                    black_box(&mac)
                )))
            })
        });
    }
    g.finish();
}

fn fast_verify(c: &mut Criterion) {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let m = HtMechanism::from_name("HT-SHA-256-NONE").unwrap();
    let mut g = c.benchmark_group("fast_verify_current");
    g.throughput(Throughput::Elements(1));
    // A throwaway PostgreSQL on loopback (the test kit's), next to the embedded stores.
    let pg = TestPostgres::start().unwrap_or_else(|e| panic!("{e}"));
    let stores: Vec<(&str, Arc<dyn TokenStore>)> = vec![
        ("memory", Arc::new(MemoryStore::new())),
        (
            "sled",
            Arc::new(SledStore::open(dir.path().join("v")).unwrap()),
        ),
        ("postgres", postgres(&rt, &pg)),
    ];
    for (name, store) in stores {
        let (tokens, token) = authority(&rt, store);
        let mac = m.initiator_mac(token.as_bytes(), &[]);
        g.bench_function(name, |b| {
            b.iter(|| rt.block_on(login(&tokens, m, &mac, &[], None)))
        });
    }
    g.finish();
}

/// What asking the account side costs a FAST login (issue 23 item 6): the login of
/// `fast_verify_current/memory`, without an account store and with a `MemoryAccounts` of 1 001
/// accounts asked for alice's revocation cutoff (one hash-map lookup under a read lock).
fn fast_verify_account_side(c: &mut Criterion) {
    let rt = rt();
    let m = HtMechanism::from_name("HT-SHA-256-NONE").unwrap();
    let accounts = Arc::new(MemoryAccounts::new());
    for i in 0..1000 {
        // One PBKDF2 round: the keys are never checked here, only the lookup is measured.
        accounts.set_password(&format!("user{i}"), "pw", 1);
    }
    accounts.set_password("alice", "alicepass", 1);
    let mut g = c.benchmark_group("fast_verify_account_side");
    g.throughput(Throughput::Elements(1));
    for (name, accounts) in [
        ("without_accounts", None),
        (
            "with_memory_accounts",
            Some(accounts as Arc<dyn AccountStore>),
        ),
    ] {
        let (tokens, token) = authority_with(&rt, Arc::new(MemoryStore::new()), accounts);
        let mac = m.initiator_mac(token.as_bytes(), &[]);
        g.bench_function(name, |b| {
            b.iter(|| rt.block_on(login(&tokens, m, &mac, &[], None)))
        });
    }
    g.finish();
}

fn issuance(c: &mut Criterion) {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let m = HtMechanism::from_name("HT-SHA-256-NONE").unwrap();
    let mut g = c.benchmark_group("issue");
    g.sample_size(20);
    // Promotion: issue into `new` then log in with it (memory, so no flush dominates).
    let (tokens, _) = authority(&rt, Arc::new(MemoryStore::new()));
    let key = ClientKey::new("alice", UA).unwrap();
    g.bench_function("issue_then_promote_memory", |b| {
        b.iter(|| {
            rt.block_on(async {
                let t = tokens.issue(&key, &requested(m)).await.unwrap().unwrap();
                let mac = m.initiator_mac(t.token.expose().as_bytes(), &[]);
                login(&tokens, m, &mac, &[], None).await;
            })
        })
    });
    // Durable issuance on sled: one at a time, and 32 concurrent sharing flushes.
    let sled = Arc::new(SledStore::open(dir.path().join("i")).unwrap());
    let (tokens, _) = authority(&rt, sled);
    g.bench_function("durable_issue_sled", |b| {
        b.iter(|| rt.block_on(tokens.issue(&key, &requested(m))).unwrap())
    });
    // The same on PostgreSQL (one transaction, committed before the token is returned).
    let pg = TestPostgres::start().unwrap_or_else(|e| panic!("{e}"));
    let (pg_tokens, _) = authority(&rt, postgres(&rt, &pg));
    g.bench_function("durable_issue_postgres", |b| {
        b.iter(|| rt.block_on(pg_tokens.issue(&key, &requested(m))).unwrap())
    });
    // A FAST login with the token still in `new` that also requests a token (F-16/F-17):
    // promotion and issuance are one durable write. The setup (outside the measurement)
    // issues the token the login then uses.
    g.bench_function("fast_promote_and_request_sled", |b| {
        b.iter_batched(
            || {
                let t = rt
                    .block_on(tokens.issue(&key, &requested(m)))
                    .unwrap()
                    .unwrap();
                m.initiator_mac(t.token.expose().as_bytes(), &[])
            },
            |mac| assert!(rt.block_on(login(&tokens, m, &mac, &[], Some(&requested(m))))),
            criterion::BatchSize::PerIteration,
        )
    });
    let mrt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    g.throughput(Throughput::Elements(32));
    g.bench_function("durable_issue_sled_32_concurrent", |b| {
        b.iter(|| {
            mrt.block_on(async {
                let mut tasks = Vec::new();
                for i in 0..32 {
                    let tokens = tokens.clone();
                    tasks.push(tokio::spawn(async move {
                        let key = ClientKey::new("bench", &format!("c{i}")).unwrap();
                        tokens.issue(&key, &requested(m)).await.unwrap();
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            })
        })
    });
    g.finish();
}

fn exchange(c: &mut Criterion) {
    let rt = rt();
    let accounts = Arc::new(MemoryAccounts::new());
    accounts.set_password("alice", "alicepass", 4096);
    let m = HtMechanism::from_name("HT-SHA-256-EXPR").unwrap();
    let tokens = Arc::new(FastTokens::new(
        Arc::new(MemoryStore::new()),
        Pepper::from_bytes([3; 32]),
        FastConfig::default(),
    ));
    let key = ClientKey::new("alice", UA).unwrap();
    let token = rt.block_on(async {
        let t = tokens.issue(&key, &requested(m)).await.unwrap().unwrap();
        t.token.expose().to_owned()
    });
    let fast = FastPlugin::new(tokens);
    let scram = ScramProvider::new(ScramHash::Sha256, false, accounts.clone())
        .dangerous_fixed_nonce_for_tests("fixedservernonce");
    let server = Arc::new(
        Sasl2Server::builder()
            .mechanism(Arc::new(scram))
            .inline_feature(Arc::new(fast))
            .build(),
    );
    let s = stream();
    let ir = m.initiator_message(
        "alice",
        token.as_bytes(),
        s.tls
            .as_ref()
            .unwrap()
            .channel_bindings
            .tls_exporter
            .as_deref()
            .unwrap(),
    );
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let auth = parse(&format!(
        "<authenticate xmlns='{}' mechanism='{}'><initial-response>{}</initial-response>\
         <user-agent id='{UA}'/><fast xmlns='{}'/></authenticate>",
        ns::SASL2,
        m.name(),
        b64(&ir),
        ns::FAST
    ));
    let mut g = c.benchmark_group("login_in_process");
    g.throughput(Throughput::Elements(1));
    g.bench_function("fast_ht_sha256_expr", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut n = Negotiator::new(server.clone(), s.clone());
                let _ = n.features();
                match n.handle(auth.clone()).await {
                    NegotiatorEvent::Success { element, .. } => black_box(element),
                    other => panic!("{}", describe(&other)),
                };
            })
        })
    });

    // The pre-authentication features alone (part of the login above): what a host pays
    // per stream before any <authenticate>.
    g.bench_function("stream_features", |b| {
        b.iter(|| {
            let n = Negotiator::new(server.clone(), s.clone());
            black_box(n.features())
        })
    });

    // SCRAM-SHA-256 at 4096 iterations: client messages precomputed once (fixed server nonce),
    // so only the server's work is measured.
    use sasl::client::Mechanism as _;
    let creds = sasl::common::Credentials::default()
        .with_username("alice")
        .with_password("alicepass")
        .with_channel_binding(sasl::common::ChannelBinding::None);
    let mut client =
        sasl::client::mechanisms::Scram::<sasl::common::scram::Sha256>::from_credentials(creds)
            .unwrap();
    let first = client.initial();
    let (final_msg, first_el) = rt.block_on(async {
        let mut n = Negotiator::new(server.clone(), s.clone());
        let el = parse(&format!(
            "<authenticate xmlns='{}' mechanism='SCRAM-SHA-256'>\
             <initial-response>{}</initial-response></authenticate>",
            ns::SASL2,
            b64(&first)
        ));
        let ch = match n.handle(el.clone()).await {
            NegotiatorEvent::Challenge(c) => base64::engine::general_purpose::STANDARD
                .decode(c.text())
                .unwrap(),
            other => panic!("{}", describe(&other)),
        };
        (client.response(&ch).unwrap(), el)
    });
    let resp = parse(&format!(
        "<response xmlns='{}'>{}</response>",
        ns::SASL2,
        b64(&final_msg)
    ));
    g.sample_size(20);
    g.bench_function("scram_sha256_4096", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut n = Negotiator::new(server.clone(), s.clone());
                let _ = n.handle(first_el.clone()).await;
                match n.handle(resp.clone()).await {
                    NegotiatorEvent::Success { element, .. } => black_box(element),
                    other => panic!("{}", describe(&other)),
                };
            })
        })
    });
    g.finish();
}

/// An unexpected negotiator event, with secrets redacted.
fn describe(ev: &NegotiatorEvent) -> String {
    match ev {
        NegotiatorEvent::Failure { element, .. } => format!("failure {}", Redacted(element)),
        _ => "an unexpected negotiator event".to_owned(),
    }
}

/// The server's stream reader over what a FAST client sends on one stream after TLS: the
/// header, `<authenticate>` with user agent, `<fast>` and Bind 2, a ping, the footer.
fn reader(c: &mut Criterion) {
    use sasl2_fast::stream::{Limits, StreamReader};
    let chunks = [
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to='localhost' from='alice@localhost' \
         version='1.0' xml:lang='en'>"
            .to_owned(),
        format!(
            "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-NONE'>\
             <initial-response>YWxpY2UAq83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJA=\
             </initial-response><user-agent id='{UA}'><software>loadgen</software>\
             <device>bench</device></user-agent><fast xmlns='urn:xmpp:fast:0' count='7'/>\
             <bind xmlns='urn:xmpp:bind:0'><tag>loadgen</tag></bind></authenticate>"
        ),
        "<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>".to_owned(),
        "</stream:stream>".to_owned(),
    ];
    let mut g = c.benchmark_group("stream_reader");
    g.throughput(Throughput::Elements(1));
    g.bench_function("fast_login_transcript", |b| {
        b.iter(|| {
            let mut r = StreamReader::new(Limits::default());
            let mut events = 0;
            for chunk in &chunks {
                r.feed(chunk.as_bytes()).unwrap();
                while let Some(ev) = r.next_event().unwrap() {
                    black_box(&ev);
                    events += 1;
                }
            }
            assert_eq!(events, 4);
        })
    });
}

/// The FAST login of `exchange` with what the example host registers for its metrics
/// endpoint: the lifecycle counters as an observer and the store behind the latency
/// decorator. The difference to `fast_ht_sha256_expr` is the metrics' cost per login.
fn exchange_with_metrics(c: &mut Criterion) {
    use sasl2_fast::prometheus::{FastLifecycleMetrics, StoreMetrics, prometheus_client};
    use sasl2_fast::store::observed::ObservedStore;
    let rt = rt();
    let mut registry = prometheus_client::registry::Registry::default();
    let lifecycle = Arc::new(FastLifecycleMetrics::register(&mut registry));
    let store_metrics = Arc::new(StoreMetrics::register(&mut registry));
    let m = HtMechanism::from_name("HT-SHA-256-EXPR").unwrap();
    let tokens = Arc::new(
        FastTokens::new(
            Arc::new(ObservedStore::new(
                Arc::new(MemoryStore::new()),
                store_metrics,
            )),
            Pepper::from_bytes([3; 32]),
            FastConfig::default(),
        )
        .with_observer(lifecycle),
    );
    let key = ClientKey::new("alice", UA).unwrap();
    let token = rt.block_on(async {
        let t = tokens.issue(&key, &requested(m)).await.unwrap().unwrap();
        t.token.expose().to_owned()
    });
    let server = Arc::new(
        Sasl2Server::builder()
            .inline_feature(Arc::new(FastPlugin::new(tokens)))
            .build(),
    );
    let s = stream();
    let cb = s
        .tls
        .as_ref()
        .unwrap()
        .channel_bindings
        .tls_exporter
        .clone()
        .unwrap();
    let ir = m.initiator_message("alice", token.as_bytes(), &cb);
    let auth = parse(&format!(
        "<authenticate xmlns='{}' mechanism='{}'><initial-response>{}</initial-response>\
         <user-agent id='{UA}'/><fast xmlns='{}'/></authenticate>",
        ns::SASL2,
        m.name(),
        base64::engine::general_purpose::STANDARD.encode(&ir),
        ns::FAST
    ));
    let mut g = c.benchmark_group("login_in_process");
    g.throughput(Throughput::Elements(1));
    // Logins run, so the check below is skipped when a filter left this bench out.
    let ran = std::cell::Cell::new(0u64);
    g.bench_function("fast_ht_sha256_expr_with_metrics", |b| {
        b.iter(|| {
            ran.set(ran.get() + 1);
            rt.block_on(async {
                let mut n = Negotiator::new(server.clone(), s.clone());
                let _ = n.features();
                match n.handle(auth.clone()).await {
                    NegotiatorEvent::Success { element, .. } => black_box(element),
                    other => panic!("{}", describe(&other)),
                };
            })
        })
    });
    g.finish();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    // The logins were counted (a bench that measured nothing would show 0 here).
    assert!(ran.get() == 0 || !text.contains("sasl2_fast_token_events_total{event=\"used\"} 0\n"));
}

criterion_group!(
    benches,
    ht_mac,
    fast_verify,
    fast_verify_account_side,
    issuance,
    exchange,
    exchange_with_metrics,
    reader
);
criterion_main!(benches);
