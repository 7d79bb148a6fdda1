//! Observers see every lifecycle event, in order.

use super::*;

#[tokio::test]
async fn metrics_observer_counts_each_event_kind() {
    use sasl2_fast::fast::hooks::{FastMetrics, RejectReason};
    use std::sync::atomic::Ordering;
    let metrics = Arc::new(FastMetrics::default());
    let accounts = Arc::new(MemoryAccounts::new());
    accounts.set_password("alice", "alicepass", 4096);
    let tokens = FastTokens::new(
        Arc::new(MemoryStore::new()),
        Pepper::from_bytes([1; 32]),
        FastConfig::default(),
    )
    .with_observer(metrics.clone());
    let plugin = FastPlugin::new(Arc::new(tokens));
    let server = Arc::new(
        Sasl2Server::builder()
            .mechanism(Arc::new(PlainProvider::new(accounts.clone())))
            .inline_feature(Arc::new(plugin))
            .build(),
    );
    let f = Fixture {
        server,
        accounts,
        plugin: FastPlugin::new(Arc::new(FastTokens::new(
            Arc::new(MemoryStore::new()),
            Pepper::generate(),
            FastConfig::default(),
        ))),
        clock: Arc::new(ManualClock::new(T0)),
        events: Arc::default(),
        _dir: None,
    };
    let s = tls13(1);
    let t = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    success(fast_login(&f, &s, "HT-SHA-256-NONE", &t, vec![]).await);
    failure(fast_login(&f, &s, "HT-SHA-256-NONE", "secret-token:fast-nope", vec![]).await);
    assert_eq!(metrics.issued.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.promoted.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.used.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.rejected(RejectReason::UnknownToken), 1);
    assert!(metrics.summary().contains("issued=1"));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// Any initial-response bytes, mechanism name and FAST attributes give a defined answer:
    /// a failure with a condition (never a panic, never a success without the token).
    #[test]
    fn arbitrary_fast_requests_get_a_defined_answer(
        ir in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        mech in proptest::sample::select(vec!["HT-SHA-256-NONE", "HT-SHA-512-EXPR", "HT-SHA3-512-ENDP", "HT-SHA-256-UNIQ", "PLAIN", "X"]),
        count in proptest::option::of("[0-9a-z-]{0,12}"),
        invalidate in proptest::option::of("[a-z01]{0,6}"),
        ua in proptest::option::of(".{0,300}"),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let f = fixture();
            let mut fast = el("fast", NS_FAST);
            if let Some(c) = &count { fast = fast.with_attr("count", c.clone()); }
            if let Some(i) = &invalidate { fast = fast.with_attr("invalidate", i.clone()); }
            let mut n = Negotiator::new(f.server.clone(), tls13(1));
            match n.handle(authenticate(mech, &ir, ua.as_deref(), vec![fast])).await {
                NegotiatorEvent::Failure { .. } => {}
                NegotiatorEvent::Success { .. } => {
                    // Only PLAIN with the right password can succeed here.
                    assert_eq!(mech, "PLAIN");
                    assert_eq!(&ir[..], b"\0alice\0alicepass");
                }
                other => panic!("{other:?}"),
            }
        });
    }
}
