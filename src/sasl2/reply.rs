//! What a host writes for the negotiator, and in which order: the same for every host, so it
//! lives here rather than in each host's stream code.
//!
//! - Before authentication, [`Negotiator::stream_features`] is the whole `<stream:features>`
//!   as xmpp-parsers' [`StreamFeatures`] (what tokio-xmpp's `send_features` takes); a host adds
//!   its own (`<starttls/>`) to it.
//! - For every [`NegotiatorEvent`], [`Reply`] lists the elements to write, in order, and says
//!   what the stream does next. After a SASL2 success that is `<success>` and then, on the same
//!   stream with no restart (S-20), the post-login features ([`PostLoginFeatures`]: RFC 6120
//!   resource binding unless Bind 2 bound a resource, B-3, R-4; none after an XEP-0198
//!   resumption, SM-3). `<success>` may carry a FAST token, which is already durable (F-11):
//!   write it, never log it.
//!
//! ```
//! # use sasl2_fast::sasl2::{Negotiator, Next, Reply};
//! # async fn demo(negotiator: &mut Negotiator, el: sasl2_fast::minidom::Element) {
//! let reply = Reply::from(negotiator.handle(el).await);
//! for el in &reply.elements {
//!     // write `el` (tokio-xmpp: `stream.feed(el)`), then flush once
//! }
//! match reply.next {
//!     Next::Continue => {}                      // read the next element
//!     Next::Close(_error) => {}                 // write the stream error, close
//!     Next::LoggedIn(_session) => {}            // stanzas from now on
//!     Next::Restart(_session) => {}             // RFC 6120: read a new stream header
//! }
//! # }
//! ```

use minidom::Element;
use xmpp_parsers::bind::BindFeature;
use xmpp_parsers::stream_error::StreamError;
use xmpp_parsers::stream_features::StreamFeatures;

use super::bind2::BoundResource;
use super::{AuthenticatedSession, Negotiator, NegotiatorEvent, SaslProfile, SessionResumed};

impl Negotiator {
    /// The pre-authentication `<stream:features>` of this stream as xmpp-parsers'
    /// [`StreamFeatures`] (what tokio-xmpp's `send_features` takes), holding
    /// [`Negotiator::features`]: SASL2 `<authentication>` and the XEP-0440 list in `others`, the
    /// RFC 6120 mechanisms (when enabled) in `sasl_mechanisms`. A host adds its own features,
    /// such as `starttls` on a plaintext stream.
    ///
    /// Two gaps of xmpp-parsers 0.23 (pinned by this module's tests): `StreamFeatures` always
    /// writes a `<mechanisms/>` element, empty when RFC 6120 SASL is off (an offer of no
    /// mechanism), and keeps RFC 6120 mechanisms in a sorted set, so their order of
    /// preference is lost. Hosts that write their own bytes use [`Negotiator::features_xml`].
    pub fn stream_features(&self) -> StreamFeatures {
        let mut features = StreamFeatures::default();
        for el in self.features() {
            if el.is("mechanisms", xmpp_parsers::ns::SASL) {
                features.sasl_mechanisms = el.children().map(Element::text).collect();
            } else {
                features.others.push(el);
            }
        }
        features
    }
}

/// The `<stream:features>` a host sends after authentication (R-4): RFC 6120 resource
/// binding unless a resource is already bound (B-3: Bind 2 is only offered inside SASL2's
/// `<inline>`), and no SASL of either kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostLoginFeatures {
    resource_binding: bool,
}

impl PostLoginFeatures {
    /// The features for a stream on which a resource is bound (`bound`) or not.
    pub fn new(bound: bool) -> Self {
        PostLoginFeatures {
            resource_binding: !bound,
        }
    }

    /// The features that follow `<success>` on this session's stream (S-20): `None` after an
    /// XEP-0198 resumption (SM-3) and after RFC 6120 SASL, where they follow the client's new
    /// stream header instead (RFC 6120 §6.4.6; then use [`PostLoginFeatures::new`]).
    pub fn after_success(session: &AuthenticatedSession) -> Option<Self> {
        if session.profile == SaslProfile::Rfc6120
            || session.extensions.get::<SessionResumed>().is_some()
        {
            return None;
        }
        Some(Self::new(
            session.extensions.get::<BoundResource>().is_some(),
        ))
    }

    /// Whether RFC 6120 resource binding is offered.
    pub fn offers_resource_binding(&self) -> bool {
        self.resource_binding
    }

    /// As an element, to which a host may add its own features (`<sm/>`, `<csi/>`). Built
    /// with minidom, not from xmpp-parsers' [`StreamFeatures`], which would add an empty
    /// RFC 6120 `<mechanisms/>` (an offer of SASL after authentication, which R-4 forbids).
    pub fn to_element(&self) -> Element {
        let mut features = Element::builder("features", xmpp_parsers::ns::STREAM);
        if self.resource_binding {
            features = features.append(Element::from(BindFeature { required: false }));
        }
        features.build()
    }

    /// Serialized as a top-level element of a `jabber:client` stream whose header declares
    /// `xmlns:stream`, the form [`crate::stream::write_element`] gives
    /// [`PostLoginFeatures::to_element`] (`<stream:features>`, as RFC 6120's examples and every
    /// peer server write it), for hosts that write strings.
    pub fn xml(&self) -> &'static str {
        if self.resource_binding {
            "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
        } else {
            "<stream:features/>"
        }
    }
}

/// What the stream does after the elements of a [`Reply`] are written. Exhaustive on
/// purpose: a host must decide for every case, and a new case should fail its build.
#[derive(Debug)]
pub enum Next {
    /// Read the next element; negotiation goes on (after a `<failure>` the client may retry
    /// on the same stream, S-23).
    Continue,
    /// Write this stream error and close the stream.
    Close(StreamError),
    /// Authenticated over SASL2: stanzas from now on, on the same stream (S-20).
    LoggedIn(AuthenticatedSession),
    /// Authenticated over RFC 6120 SASL: the client sends a new stream header next
    /// (§6.4.6); answer it with [`PostLoginFeatures::new`].
    Restart(AuthenticatedSession),
}

/// The elements to write for one [`NegotiatorEvent`], in order, and what follows.
#[derive(Debug)]
#[non_exhaustive]
pub struct Reply {
    /// Write these, in this order. They may carry a FAST token or SASL data: never log them
    /// except through [`crate::xmpp::Redacted`].
    pub elements: Vec<Element>,
    /// What the stream does next.
    pub next: Next,
}

impl Reply {
    /// The post-login `<stream:features>` in [`Reply::elements`], if any, for a host to add its
    /// own features to before writing.
    pub fn post_login_features_mut(&mut self) -> Option<&mut Element> {
        if !matches!(self.next, Next::LoggedIn(_)) {
            return None;
        }
        self.elements
            .last_mut()
            .filter(|e| e.is("features", xmpp_parsers::ns::STREAM))
    }
}

impl From<NegotiatorEvent> for Reply {
    fn from(event: NegotiatorEvent) -> Self {
        let (elements, next) = match event {
            NegotiatorEvent::Challenge(e)
            | NegotiatorEvent::Continue(e)
            | NegotiatorEvent::TaskData(e) => (vec![e], Next::Continue),
            NegotiatorEvent::Failure { element, .. } => (vec![element], Next::Continue),
            NegotiatorEvent::StreamError { send, error, .. } => {
                (send.into_iter().collect(), Next::Close(error))
            }
            NegotiatorEvent::Success { element, session } => {
                let mut elements = vec![element];
                if let Some(f) = PostLoginFeatures::after_success(&session) {
                    elements.push(f.to_element());
                }
                let next = match session.profile {
                    SaslProfile::Rfc6120 => Next::Restart(session),
                    _ => Next::LoggedIn(session),
                };
                (elements, next)
            }
        };
        Reply { elements, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::write_element;
    use crate::xmpp::ns;

    /// `xml()` is what the stream writer makes of `to_element()`, and xmpp-parsers reads it
    /// back (R-4, B-3).
    #[test]
    fn post_login_features_serialize_as_their_element() {
        for bound in [false, true] {
            let f = PostLoginFeatures::new(bound);
            let mut out = String::new();
            write_element(&mut out, &f.to_element(), ns::JABBER_CLIENT);
            assert_eq!(out, f.xml(), "bound={bound}");
            let parsed = StreamFeatures::try_from(f.to_element()).unwrap();
            assert_eq!(parsed.can_bind(), !bound);
            assert!(parsed.sasl2.is_none() && parsed.sasl_mechanisms.is_empty());
        }
    }

    /// The xmpp-parsers 0.23 gaps `Negotiator::stream_features` documents: `StreamFeatures`
    /// writes an empty `<mechanisms/>`, and sorts RFC 6120 mechanisms. When this fails,
    /// xmpp-parsers changed: update the docs of `stream_features` and `to_element`.
    #[test]
    fn stream_features_gaps_of_xmpp_parsers() {
        let empty = Element::from(StreamFeatures::default());
        assert!(empty.get_child("mechanisms", ns::SASL).is_some());
        let mut f = StreamFeatures::default();
        f.sasl_mechanisms.insert("SCRAM-SHA-256".to_owned());
        f.sasl_mechanisms.insert("PLAIN".to_owned());
        let el = Element::from(f);
        let order: Vec<String> = el
            .get_child("mechanisms", ns::SASL)
            .unwrap()
            .children()
            .map(Element::text)
            .collect();
        assert_eq!(order, ["PLAIN", "SCRAM-SHA-256"]);
    }
}
