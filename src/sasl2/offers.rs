//! What a stream is offered (mechanisms, inline features) and the `<stream:features>` children
//! that makes, computed once per distinct stream facts and shared by every stream with the same
//! facts ([`super::Sasl2ServerBuilder::cache_offers`]).

use std::sync::Arc;

use minidom::Element;

use super::Sasl2Server;
use crate::sasl2::{Offer, StreamInfo};
use crate::xmpp::{ns, text_child};

/// The offers computed so far, by the facts they were computed for.
pub(super) type OfferCache = std::sync::Mutex<Vec<(OfferFacts, Arc<Advertised>)>>;

/// Distinct stream facts remembered by the offer cache: a host sees a handful (plaintext,
/// TLS 1.2, TLS 1.3 with and without the exporter), and the bound keeps a host that builds
/// `StreamInfo`s with many domains from growing it without limit (past it, offers are
/// computed per stream, as with the cache off).
const OFFER_CACHE_ENTRIES: usize = 16;

/// The facts of a stream that mechanism availability and inline offers may depend on (the
/// contract of [`MechanismProvider::available`] and [`InlineFeature::offer`]): not `from`
/// (S-2, S-29: the untrusted hint never changes the offer, so every mechanism offered must
/// work whatever JID it names), not the peer address, not the channel-binding bytes.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct OfferFacts {
    domain: String,
    tls: Option<crate::sasl2::TlsVersion>,
    bindings: Vec<crate::sasl2::ChannelBindingType>,
    allow_plaintext: bool,
    /// F-6: `tls-0rtt` is offered only where the host accepts early data.
    zero_rtt: bool,
}

impl OfferFacts {
    fn of(stream: &StreamInfo) -> Self {
        OfferFacts {
            domain: stream.domain.clone(),
            tls: stream.tls.as_ref().map(|t| t.version),
            bindings: stream.channel_binding_types(),
            allow_plaintext: stream.allow_plaintext,
            zero_rtt: stream.zero_rtt,
        }
    }
}

/// A stream's offers and the `<stream:features>` children they make, shared by every stream
/// with the same facts.
pub(super) struct Advertised {
    pub(super) offers: StreamOffers,
    pub(super) features: Vec<Element>,
    /// `features` serialized as children of `<stream:features>` (each declares its namespace).
    pub(super) xml: String,
}

/// What a stream offers (S-4: the offer is a function of the stream's facts), computed once per
/// distinct [`OfferFacts`].
pub(super) struct StreamOffers {
    /// Indices of the providers available on this stream, in advertisement order.
    pub(super) mechanisms: Vec<usize>,
    /// One entry per registered inline feature.
    pub(super) inline: Vec<Option<Offer>>,
}

impl Sasl2Server {
    /// The offers for `stream`: from the cache when a stream with the same facts was seen.
    pub(super) fn advertised(&self, stream: &StreamInfo) -> Arc<Advertised> {
        let Some(cache) = &self.offer_cache else {
            return Arc::new(self.compute_offers(stream));
        };
        let facts = OfferFacts::of(stream);
        // A poisoned lock only means another stream panicked while holding it; the entries
        // are complete values (pushed whole), so they stay valid.
        let lock = || cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, a)) = lock().iter().find(|(f, _)| *f == facts) {
            return a.clone();
        }
        // Computed outside the lock: offers may be slow to build, and two streams racing on
        // a new set of facts build the same value.
        let computed = Arc::new(self.compute_offers(stream));
        let mut entries = lock();
        if let Some((_, a)) = entries.iter().find(|(f, _)| *f == facts) {
            return a.clone();
        }
        if entries.len() < OFFER_CACHE_ENTRIES {
            entries.push((facts, computed.clone()));
        }
        computed
    }

    fn compute_offers(&self, stream: &StreamInfo) -> Advertised {
        let allowed = stream.may_authenticate();
        let mechanisms = if allowed {
            (0..self.mechanisms.len())
                .filter(|&i| self.mechanisms[i].available(stream))
                .collect()
        } else {
            Vec::new()
        };
        let inline = self
            .inline
            .iter()
            .map(|f| if allowed { f.offer(stream) } else { None })
            .collect();
        let offers = StreamOffers { mechanisms, inline };
        let features = build_features(self, &offers, stream);
        let mut xml = String::new();
        for el in &features {
            crate::stream::write_element(&mut xml, el, ns::STREAM);
        }
        Advertised {
            offers,
            features,
            xml,
        }
    }
}

/// The `<stream:features>` children of `offers` (SASL2 `<authentication>`, RFC 6120
/// `<mechanisms>`, XEP-0440 `<sasl-channel-binding>`).
fn build_features(
    server: &Sasl2Server,
    offers: &StreamOffers,
    stream: &StreamInfo,
) -> Vec<Element> {
    if offers.mechanisms.is_empty() {
        return Vec::new();
    }
    // Built with minidom's builder rather than from xmpp-parsers' `Authentication` and
    // `SaslChannelBinding`: their conversion to an Element runs through xso's event
    // stream and cost 10x as much (5.2 µs against 0.5 µs for the same <authentication>,
    // measured), once per stream. `features_parse_back_with_xmpp_parsers` (in
    // tests/xmpp_parsers_gaps.rs) pins that xmpp-parsers reads this output as the same
    // values.
    let mut authentication = Element::builder("authentication", ns::SASL2);
    for n in offers
        .mechanisms
        .iter()
        .map(|&i| server.mechanisms[i].name())
    {
        authentication = authentication.append(text_child("mechanism", ns::SASL2, n));
    }
    let mut cb_used = Vec::new();
    // S-7: inline features are listed in <inline>, a direct child of <authentication>.
    let mut inline = Element::builder("inline", ns::SASL2);
    let mut any_inline = false;
    for offer in offers.inline.iter().flatten() {
        inline = inline.append(offer.element.clone());
        cb_used.extend(offer.channel_bindings.iter().copied());
        any_inline = true;
    }
    if any_inline {
        authentication = authentication.append(inline.build());
    }
    let mut out = vec![authentication.build()];
    if server.rfc6120 {
        // xmpp-parsers keeps RFC 6120 mechanisms in a BTreeSet, which would lose the order
        // of preference.
        let mut mechs = Element::builder("mechanisms", ns::SASL);
        for n in offers
            .mechanisms
            .iter()
            .map(|&i| server.mechanisms[i].name())
        {
            mechs = mechs.append(text_child("mechanism", ns::SASL, n));
        }
        out.push(mechs.build());
    }
    // XEP-0440 (S-6, CB-6): list exactly the types this connection can bind to and that an
    // offered mechanism actually uses, so a client's downgrade check is meaningful.
    let plus_offered = offers
        .mechanisms
        .iter()
        .map(|&i| server.mechanisms[i].name())
        .any(|n| n.ends_with("-PLUS"));
    let mut cb = Element::builder("sasl-channel-binding", ns::SASL_CB);
    let mut any_cb = false;
    for t in stream.channel_binding_types() {
        if plus_offered || cb_used.contains(&t) {
            cb = cb.append(
                Element::builder("channel-binding", ns::SASL_CB)
                    .attr(rxml::NcName::try_from("type").expect("NCName"), t.as_str())
                    .build(),
            );
            any_cb = true;
        }
    }
    if any_cb {
        out.push(cb.build());
    }
    out
}
