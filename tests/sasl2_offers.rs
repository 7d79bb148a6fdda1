//! Offers are computed once per distinct stream facts (the contract of
//! `InlineFeature::offer` and `MechanismProvider::available`): never from the stream `from`,
//! the peer or the channel-binding bytes, so the feature is stable for a given `to`, `from` and
//! encryption state (S-4) and the same whether `from` names a known account, an unknown one or
//! nothing (S-2, S-29).

use std::sync::Arc;

use async_trait::async_trait;
use sasl2_fast::minidom::Element;
use sasl2_fast::sasl2::accounts::MemoryAccounts;
use sasl2_fast::sasl2::plain::PlainProvider;
use sasl2_fast::sasl2::{
    ChannelBindings, InlineError, InlineFeature, InlineOrder, Negotiator, Offer, Sasl2Server,
    StreamInfo, SuccessBuilder, SuccessContext, TlsInfo, TlsVersion,
};
use sasl2_fast::xmpp::ns;

const NS_COUNTING: &str = "urn:example:counting";

fn stream() -> StreamInfo {
    StreamInfo::new("example.com")
        .with_tls(TlsInfo::new(TlsVersion::Tls13, ChannelBindings::none()))
}

/// Counts how often it is asked for an offer.
#[derive(Debug, Default)]
struct CountingFeature(std::sync::atomic::AtomicUsize);

#[async_trait]
impl InlineFeature for CountingFeature {
    fn name(&self) -> &'static str {
        "counting"
    }

    fn order(&self) -> InlineOrder {
        InlineOrder(260)
    }

    fn offer(&self, stream: &StreamInfo) -> Option<Offer> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Offered only with channel binding: a fact the cache must key on.
        let cb = stream.has_channel_binding();
        cb.then(|| Offer::new(Element::bare("counting", NS_COUNTING)))
    }

    async fn on_success(
        &self,
        _ctx: &SuccessContext<'_>,
        _success: &mut SuccessBuilder,
    ) -> Result<(), InlineError> {
        Ok(())
    }
}

fn counting_server(cache: bool) -> (Arc<Sasl2Server>, Arc<CountingFeature>) {
    let accounts = Arc::new(MemoryAccounts::new());
    accounts.set_password("alice", "alicepass", 64);
    let counting = Arc::new(CountingFeature::default());
    let server = Sasl2Server::builder()
        .mechanism(Arc::new(PlainProvider::new(accounts)))
        .inline_feature(counting.clone())
        .cache_offers(cache)
        .build();
    (Arc::new(server), counting)
}

fn offers_counting(n: &Negotiator) -> bool {
    let auth = n.features().into_iter().next().unwrap();
    auth.get_child("inline", ns::SASL2)
        .is_some_and(|i| i.get_child("counting", NS_COUNTING).is_some())
}

/// S-4: what a stream is offered is a function of its `to` (domain), TLS state and listener
/// only, computed once per distinct set of those facts, so a client may cache it. S-2, S-29: a
/// known account in `from`, an unknown one and no `from` at all get the same bytes (every
/// mechanism here works independently of the JID).
#[tokio::test]
async fn offers_are_computed_once_per_distinct_stream_facts() {
    let (server, counting) = counting_server(true);
    let calls = || counting.0.load(std::sync::atomic::Ordering::SeqCst);
    let with_cb = |from: Option<&str>, exporter: &[u8]| {
        StreamInfo::new("example.com")
            .with_from(from.map(|f| f.parse().unwrap()))
            .with_tls(TlsInfo::new(
                TlsVersion::Tls13,
                ChannelBindings::none().with_tls_exporter(exporter.to_vec()),
            ))
    };
    // Different `from` and channel-binding bytes, same facts: one offer for all.
    let a = Negotiator::new(server.clone(), with_cb(Some("alice@example.com"), &[1; 32]));
    let b = Negotiator::new(
        server.clone(),
        with_cb(Some("nobody@example.com"), &[2; 32]),
    );
    let none = Negotiator::new(server.clone(), with_cb(None, &[3; 32]));
    assert_eq!(calls(), 1);
    assert!(offers_counting(&a) && offers_counting(&b));
    assert_eq!(a.features_xml(), b.features_xml());
    assert_eq!(a.features_xml(), none.features_xml());
    assert_eq!(a.features(), none.features());
    // Other facts (no channel binding): asked again, and a different answer.
    let c = Negotiator::new(server.clone(), stream());
    assert_eq!(calls(), 2);
    assert!(!offers_counting(&c));
    // The serialized form is what the elements write.
    let mut xml = String::new();
    for el in c.features() {
        sasl2_fast::stream::write_element(&mut xml, &el, ns::STREAM);
    }
    assert_eq!(c.features_xml(), xml);
    let _ = Negotiator::new(server, stream());
    assert_eq!(calls(), 2);
}

#[tokio::test]
async fn with_the_offer_cache_off_every_stream_is_asked() {
    let (server, counting) = counting_server(false);
    for _ in 0..3 {
        let _ = Negotiator::new(server.clone(), stream());
    }
    assert_eq!(counting.0.load(std::sync::atomic::Ordering::SeqCst), 3);
}
