//! Stream features: where FAST is offered and with which mechanisms (F-1..F-6, S-5, S-6, S-26).

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
