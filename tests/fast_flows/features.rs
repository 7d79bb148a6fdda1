//! Stream features: where FAST is offered and with which mechanisms (F-1..F-6, F-32, F-35, H-2,
//! CB-6, S-5, S-6, S-26).

use super::*;

#[test]
fn features_offer_fast_inside_inline_and_ht_nowhere_else() {
    let f = fixture();
    let s = tls13(1);
    let feats = features(&f, &s);
    let auth = feats
        .iter()
        .find(|e| e.is("authentication", NS_SASL2))
        .unwrap();
    let top: Vec<String> = auth
        .children()
        .filter(|c| c.is("mechanism", NS_SASL2))
        .map(|c| c.text())
        .collect();
    assert_eq!(top, ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN"]);
    assert!(
        top.iter().all(|m| !m.starts_with("HT-")),
        "§3.2: HT only inside <fast>"
    );
    let fast = auth
        .get_child("inline", NS_SASL2)
        .and_then(|i| i.get_child("fast", NS_FAST))
        .expect("F-1");
    assert_eq!(fast.attr("tls-0rtt"), None, "F-6: 0-RTT is not offered");
    let mechs: Vec<String> = fast.children().map(|c| c.text()).collect();
    assert!(!mechs.is_empty(), "F-2");
    assert!(mechs.iter().any(|m| m.ends_with("-EXPR")), "F-4");
    assert!(mechs.iter().any(|m| m.ends_with("-NONE")), "F-5");
    assert!(
        mechs.iter().all(|m| !m.ends_with("-UNIQ")),
        "never UNIQ on TLS 1.3"
    );
    let cb = feats
        .iter()
        .find(|e| e.is("sasl-channel-binding", NS_SASL_CB))
        .expect("S-6");
    let types: Vec<_> = cb.children().filter_map(|c| c.attr("type")).collect();
    assert_eq!(types, ["tls-exporter", "tls-server-end-point"]);

    // Without an exporter (e.g. TLS 1.2 without EMS) no EXPR and no tls-exporter claim.
    let mut s12 = tls13(1);
    s12.tls.as_mut().unwrap().version = TlsVersion::Tls12;
    s12.tls.as_mut().unwrap().channel_bindings.tls_exporter = None;
    let feats = features(&f, &s12);
    let xml = feats.iter().map(to_xml).collect::<String>();
    assert!(
        !xml.contains("EXPR") && !xml.contains("tls-exporter"),
        "{xml}"
    );
    assert!(xml.contains("HT-SHA-256-ENDP"));

    // S-26: nothing on a plaintext stream.
    let mut plain = tls13(1);
    plain.tls = None;
    assert!(features(&f, &plain).is_empty());
}

#[test]
fn sasl2_is_not_offered_without_a_usable_mechanism() {
    // S-5: no mechanism, no <authentication>, even though FAST could advertise.
    let f = fixture();
    let server = Sasl2Server::builder()
        .inline_feature(Arc::new(f.plugin.clone()))
        .build();
    assert!(
        Negotiator::new(Arc::new(server), tls13(1))
            .features()
            .is_empty()
    );
}

/// F-32, H-2: FAST only over TLS. On a plaintext stream nothing of SASL2 is offered, and
/// neither an HT login (`<fast/>`) nor a password login with `<request-token>` is accepted
/// (`encryption-required`): no token is looked up, used or issued there, and the client's
/// record is untouched. The exception is the host's opt-out for loopback testing
/// (`StreamInfo::allow_plaintext`, the example host's `require_tls = false`, S-26): FAST then
/// follows SASL2 and offers only what needs no channel binding.
#[tokio::test]
async fn fast_is_neither_offered_nor_accepted_without_tls() {
    let f = fixture();
    let tls = tls13(1);
    let mech = "HT-SHA-256-NONE";
    let t = get_token(&f, tls.clone(), mech).await;
    let key = ClientKey::new("alice", UA).unwrap();
    let before = f.plugin.tokens().store().get(&key).await.unwrap();
    f.events.take();

    let mut plain = tls.clone();
    plain.tls = None;
    assert!(f.plugin.offered(&plain).is_empty());
    assert!(features(&f, &plain).is_empty());
    let mut n = Negotiator::new(f.server.clone(), plain.clone());
    let msg = ht(mech, "alice", &t, &plain);
    let ev = n
        .handle(authenticate(mech, &msg, Some(UA), vec![fast()]))
        .await;
    assert_eq!(failure(ev), SaslCondition::EncryptionRequired, "HT");
    let mut n = Negotiator::new(f.server.clone(), plain.clone());
    let ev = n
        .handle(authenticate(
            "PLAIN",
            b"\0alice\0alicepass",
            Some(UA),
            vec![request_token(mech)],
        ))
        .await;
    assert_eq!(
        failure(ev),
        SaslCondition::EncryptionRequired,
        "token request"
    );
    assert!(f.events.take().is_empty(), "FAST saw nothing");
    assert_eq!(f.plugin.tokens().store().get(&key).await.unwrap(), before);

    let testing = plain.clone().with_plaintext_allowed(true);
    let offered = f.plugin.offered(&testing);
    assert!(!offered.is_empty());
    assert!(
        offered.iter().all(|m| m.name().ends_with("-NONE")),
        "{offered:?}"
    );
}

/// F-35: FAST's namespace is `urn:xmpp:fast:0`, written out here rather than taken from the
/// crate's constant: the `<fast>` feature and its `<mechanism>` children, and `<token>` in
/// `<success>`. `<fast/>` and `<request-token>` in another namespace are not FAST: an HT
/// mechanism without FAST's `<fast/>` is `invalid-mechanism` (§4 step 2), and no token.
#[tokio::test]
async fn fast_speaks_the_urn_xmpp_fast_0_namespace() {
    const FAST_0: &str = "urn:xmpp:fast:0";
    const FAST_1: &str = "urn:xmpp:fast:1";
    let f = fixture();
    let s = tls13(1);
    let mech = "HT-SHA-256-NONE";
    let feats = features(&f, &s);
    let feature = feats[0]
        .get_child("inline", NS_SASL2)
        .and_then(|i| i.children().find(|c| c.name() == "fast"))
        .expect("<fast> offered");
    assert_eq!(feature.ns(), FAST_0);
    assert!(feature.children().next().is_some());
    for m in feature.children() {
        assert_eq!((m.name(), m.ns().as_str()), ("mechanism", FAST_0));
    }

    let request = |namespace| el("request-token", namespace).with_attr("mechanism", mech);
    let ok = password_login(&f, s.clone(), vec![request(FAST_0)]).await;
    let token = ok.children().find(|c| c.name() == "token").expect("issued");
    assert_eq!(token.ns(), FAST_0);
    let t = token.attr("token").unwrap().to_owned();
    let ok = password_login(&f, s.clone(), vec![request(FAST_1)]).await;
    assert!(
        ok.children().all(|c| c.name() != "token"),
        "not FAST's request"
    );

    let mut n = Negotiator::new(f.server.clone(), s.clone());
    let msg = ht(mech, "alice", &t, &s);
    let ev = n
        .handle(authenticate(mech, &msg, Some(UA), vec![el("fast", FAST_1)]))
        .await;
    assert_eq!(failure(ev), SaslCondition::InvalidMechanism);
    let ev = n
        .handle(authenticate(mech, &msg, Some(UA), vec![el("fast", FAST_0)]))
        .await;
    success(ev);
}

/// CB-6 (the server's side), S-6: `<sasl-channel-binding>` lists exactly the types this
/// connection can bind to, strongest first, for every combination the host can report
/// (`tls-unique` only on TLS 1.2), and is absent when there are none.
#[test]
fn channel_binding_list_is_exactly_what_the_connection_binds_to() {
    let f = fixture();
    for version in [TlsVersion::Tls13, TlsVersion::Tls12] {
        for mask in 0u8..8 {
            let (exporter, end_point, unique) = (mask & 1 != 0, mask & 2 != 0, mask & 4 != 0);
            if unique && version == TlsVersion::Tls13 {
                continue;
            }
            let mut cb = ChannelBindings::none();
            let mut expected = Vec::new();
            if exporter {
                cb = cb.with_tls_exporter(vec![1; 32]);
                expected.push("tls-exporter");
            }
            if end_point {
                cb = cb.with_tls_server_end_point(vec![2; 32]);
                expected.push("tls-server-end-point");
            }
            if unique {
                cb = cb.with_tls_unique(vec![3; 12]);
                expected.push("tls-unique");
            }
            let stream = StreamInfo::new("example.com").with_tls(TlsInfo::new(version, cb));
            let feats = features(&f, &stream);
            let listed: Vec<String> = feats
                .iter()
                .filter(|e| e.is("sasl-channel-binding", NS_SASL_CB))
                .flat_map(|e| e.children())
                .filter_map(|c| c.attr("type").map(str::to_owned))
                .collect();
            assert_eq!(listed, expected, "{version:?} {mask:03b}");
            let lists = feats
                .iter()
                .filter(|e| e.is("sasl-channel-binding", NS_SASL_CB))
                .count();
            assert_eq!(
                lists,
                usize::from(!expected.is_empty()),
                "{version:?} {mask:03b}"
            );
        }
    }
}
