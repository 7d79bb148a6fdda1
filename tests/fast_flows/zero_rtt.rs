//! FAST in TLS 1.3 early data (0-RTT), the sans-IO part: the host says an element arrived as
//! early data (`StreamInfo::early_data`, `Negotiator::set_early_data`) and the negotiator and
//! the FAST plugin apply Z-1..Z-5 (docs/protocol.md §5.8). The same rules over real TLS are in
//! host/tests/zero_rtt.rs.

use super::*;

/// A TLS 1.3 stream on a listener that accepts early data, the next element early.
fn early(exporter_byte: u8) -> StreamInfo {
    tls13(exporter_byte)
        .with_zero_rtt(true)
        .with_early_data(true)
}

fn with_count(c: u32) -> Vec<Element> {
    vec![el("fast", NS_FAST).with_attr("count", c.to_string())]
}

/// One FAST `<authenticate>` on a fresh negotiator of `stream` (the `<fast>` element is in
/// `inline`, so tests choose its attributes).
async fn login(
    f: &Fixture,
    stream: &StreamInfo,
    mech: &str,
    token: &str,
    inline: Vec<Element>,
) -> NegotiatorEvent {
    let mut n = Negotiator::new(f.server.clone(), stream.clone());
    n.handle(authenticate(
        mech,
        &ht(mech, "alice", token, stream),
        Some(UA),
        inline,
    ))
    .await
}

async fn record(
    f: &Fixture,
) -> Option<sasl2_fast::store::Versioned<sasl2_fast::store::ClientRecord>> {
    let key = ClientKey::new("alice", UA).unwrap();
    f.plugin.tokens().store().get(&key).await.unwrap()
}

fn fast_offer(features: &[Element]) -> Element {
    features[0]
        .get_child("inline", NS_SASL2)
        .and_then(|i| i.get_child("fast", NS_FAST))
        .expect("<fast> offered")
        .clone()
}

#[tokio::test]
async fn tls_0rtt_is_advertised_only_where_the_host_accepts_early_data() {
    // F-6: announce it where it is accepted, and only there.
    let f = fixture();
    let off = fast_offer(&features(&f, &tls13(1)));
    assert_eq!(off.attr("tls-0rtt"), None);
    let on = fast_offer(&features(&f, &tls13(1).with_zero_rtt(true)));
    assert_eq!(on.attr("tls-0rtt"), Some("true"));
    // xmpp-parsers reads it back as the boolean.
    let q = xmpp_parsers::fast::FastQuery::try_from(on).unwrap();
    assert!(q.tls_0rtt);
    // Z-2: with only -EXPR offered nothing can be sent early, so nothing is announced.
    let mut config = FastConfig::default();
    config.mechanisms = vec![HtMechanism::from_name("HT-SHA-256-EXPR").unwrap()];
    let g = fixture_with(config, Arc::new(MemoryStore::new()), None);
    let expr_only = fast_offer(&features(&g, &tls13(1).with_zero_rtt(true)));
    assert_eq!(expr_only.attr("tls-0rtt"), None);
}

#[tokio::test]
async fn password_mechanisms_are_refused_in_early_data() {
    // S-27, Z-1: no mitigation, so no password login from early data, whatever the mechanism.
    let f = fixture();
    let s = early(1);
    let mut n = Negotiator::new(f.server.clone(), s.clone());
    let plain = authenticate("PLAIN", b"\0alice\0alicepass", Some(UA), vec![]);
    assert_eq!(
        failure(n.handle(plain.clone()).await),
        SaslCondition::MalformedRequest
    );
    let scram = authenticate("SCRAM-SHA-256", b"n,,n=alice,r=abcdefgh", Some(UA), vec![]);
    assert_eq!(
        failure(n.handle(scram).await),
        SaslCondition::MalformedRequest
    );
    // The same request after the handshake (the host clears the flag) logs in on this stream.
    n.set_early_data(false);
    success(n.handle(plain).await);
}

#[tokio::test]
async fn only_none_and_endp_in_early_data() {
    // Z-2: the client's MAC was computed before the handshake completed.
    let f = fixture();
    let s = tls13(1);
    for mech in ["HT-SHA-256-NONE", "HT-SHA-512-ENDP"] {
        let t = get_token(&f, s.clone(), mech).await;
        success(login(&f, &early(1), mech, &t, with_count(1)).await);
    }
    let t = get_token(&f, s.clone(), "HT-SHA-256-EXPR").await;
    f.events.take();
    let before = record(&f).await;
    assert_eq!(
        failure(login(&f, &early(1), "HT-SHA-256-EXPR", &t, with_count(1)).await),
        SaslCondition::MalformedRequest
    );
    // Refused before the store was read: no rejection event, no change.
    assert!(f.events.take().is_empty());
    assert_eq!(record(&f).await, before);
    // The same token works after the handshake.
    success(login(&f, &tls13(1), "HT-SHA-256-EXPR", &t, with_count(1)).await);
}

#[tokio::test]
async fn count_is_required_in_early_data() {
    // Z-3 (F-14): without count a 0-RTT request is refused before the store is read.
    let f = fixture();
    let t = get_token(&f, tls13(1), "HT-SHA-256-NONE").await;
    f.events.take();
    let before = record(&f).await;
    assert_eq!(
        failure(login(&f, &early(1), "HT-SHA-256-NONE", &t, vec![fast()]).await),
        SaslCondition::MalformedRequest
    );
    assert!(f.events.take().is_empty());
    assert_eq!(record(&f).await, before);
    // Outside early data count stays optional (§9 item 3).
    success(login(&f, &tls13(1), "HT-SHA-256-NONE", &t, vec![fast()]).await);
}

#[tokio::test]
async fn early_count_must_be_above_the_durable_mark() {
    // Z-4: strictly above the highest count accepted for the token; no mark counts as 0. On
    // sled, so the mark checked is the one on disk.
    let f = sled_fixture(FastConfig::default());
    let m = "HT-SHA-256-NONE";
    let t = get_token(&f, tls13(1), m).await;
    assert_eq!(
        failure(login(&f, &early(1), m, &t, with_count(0)).await),
        SaslCondition::NotAuthorized,
        "0 is not above an absent mark"
    );
    success(login(&f, &early(1), m, &t, with_count(1)).await);
    let mark = |r: Option<sasl2_fast::store::Versioned<sasl2_fast::store::ClientRecord>>| {
        r.unwrap().value.current.unwrap().max_count
    };
    assert_eq!(mark(record(&f).await), Some(1), "raised before <success>");
    assert_eq!(
        failure(login(&f, &early(1), m, &t, with_count(1)).await),
        SaslCondition::NotAuthorized
    );
    // A count sent after the handshake raises the same mark (one counter per token).
    success(login(&f, &tls13(1), m, &t, with_count(5)).await);
    for stale in [2, 5] {
        assert_eq!(
            failure(login(&f, &early(1), m, &t, with_count(stale)).await),
            SaslCondition::NotAuthorized,
            "{stale}"
        );
    }
    success(login(&f, &early(1), m, &t, with_count(6)).await);
    assert_eq!(mark(record(&f).await), Some(6));
    assert!(
        f.events.take().iter().any(|e| e == "rejected replay"),
        "observers see replays"
    );
}

#[tokio::test]
async fn a_replay_costs_no_token() {
    // Z-5: the replay of a flight that promoted `new` and requested a token gets
    // not-authorized and leaves the record exactly as it was.
    let f = fixture();
    let m = "HT-SHA-256-NONE";
    let t = get_token(&f, tls13(1), m).await;
    let flight = authenticate(
        m,
        &ht(m, "alice", &t, &tls13(1)),
        Some(UA),
        vec![
            el("fast", NS_FAST).with_attr("count", "3"),
            request_token(m),
            el("bind", NS_BIND2),
        ],
    );
    let mut n = Negotiator::new(f.server.clone(), early(1));
    let first = success(n.handle(flight.clone()).await);
    assert!(
        token_of(&first).is_some(),
        "Z-7: token requests work in 0-RTT"
    );
    let after = record(&f).await;
    assert!(after.as_ref().unwrap().value.new.is_some());
    f.events.take();
    // The recorded flight again, on a new stream (what a replay is), twice.
    for _ in 0..2 {
        let mut n = Negotiator::new(f.server.clone(), early(9));
        let ev = n.handle(flight.clone()).await;
        assert_eq!(failure(ev), SaslCondition::NotAuthorized);
    }
    assert_eq!(
        record(&f).await,
        after,
        "no token issued, rotated or consumed"
    );
    assert_eq!(f.events.take(), ["rejected replay", "rejected replay"]);
    // Invalidation is replay-protected the same way: a replayed logout is not a logout.
    let logout = authenticate(
        m,
        &ht(m, "alice", &t, &tls13(1)),
        Some(UA),
        vec![
            el("fast", NS_FAST)
                .with_attr("count", "2")
                .with_attr("invalidate", "true"),
        ],
    );
    let mut n = Negotiator::new(f.server.clone(), early(1));
    assert_eq!(
        failure(n.handle(logout).await),
        SaslCondition::NotAuthorized
    );
    assert_eq!(record(&f).await, after);
}

#[tokio::test]
async fn concurrent_copies_of_one_flight_pass_once() {
    // Z-4: check and raise are one compare-and-swap; copies of one flight racing on several
    // connections (what a TLS layer without single-use tickets would deliver) pass once.
    let f = sled_fixture(FastConfig::default());
    let m = "HT-SHA-256-NONE";
    let t = get_token(&f, tls13(1), m).await;
    for count in 1..=10u32 {
        let s = early(1);
        let (a, b, c, d) = tokio::join!(
            login(&f, &s, m, &t, with_count(count)),
            login(&f, &s, m, &t, with_count(count)),
            login(&f, &s, m, &t, with_count(count)),
            login(&f, &s, m, &t, with_count(count)),
        );
        let passed = [a, b, c, d]
            .into_iter()
            .filter(|ev| matches!(ev, NegotiatorEvent::Success { .. }))
            .count();
        assert_eq!(passed, 1, "count {count}");
    }
}
