//! SASL2 inline features (XEP-0388 §inline): what is advertised inside `<inline>`, may claim an
//! `<authenticate>`, and adds its results to `<success>`. FAST is one; Bind 2 another.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use jid::Jid;
use minidom::Element;

use super::{AuthenticateRequest, ChannelBindingType, Failure, Mechanism, StreamInfo};
use crate::BoxError;
use crate::xmpp::RedactedList;

/// Where an inline feature's results go in `<success>`, smallest first. Open: a feature picks
/// any value; the constants give the order XEP-0388 and XEP-0198 fix (resume, then bind, then
/// tokens), with room between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InlineOrder(pub u16);

impl InlineOrder {
    /// XEP-0198 stream resumption (SM-2: processed first).
    pub const RESUME: InlineOrder = InlineOrder(100);
    /// XEP-0386 Bind 2 (B-6: after resumption).
    pub const BIND: InlineOrder = InlineOrder(200);
    /// XEP-0484 FAST tokens: last, after everything that could still fail.
    pub const TOKEN: InlineOrder = InlineOrder(300);
}

/// Put into [`SuccessBuilder::extensions`] by an inline feature that resumed an XEP-0198
/// session on this `<authenticate>` (it runs at [`InlineOrder::RESUME`], before Bind 2):
/// [`super::bind2::Bind2`] then binds nothing and ignores the `<bind>` request (B-6, SM-2), and
/// the host, finding it in [`super::AuthenticatedSession::extensions`], sends no
/// `<stream:features>` after `<success>` (SM-3). This crate has no resumption feature; this is
/// the hook one uses without editing the negotiator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionResumed;

/// What a feature offers on one stream: the element inside `<inline>`, the channel-binding
/// types it relies on (for the XEP-0440 list), and state it wants back when it claims or
/// completes an attempt on this stream. Computed once per distinct set of stream facts and
/// shared by every stream with those facts (see [`InlineFeature::offer`]), so `state` must be
/// immutable or safe to share.
#[non_exhaustive]
pub struct Offer {
    /// The element inside `<inline>`.
    pub element: Element,
    /// Channel-binding types the offered mechanisms use.
    pub channel_bindings: Vec<ChannelBindingType>,
    /// Per-stream state of the feature (e.g. the HT mechanisms offered).
    pub state: Option<Arc<dyn Any + Send + Sync>>,
}

impl Offer {
    /// An offer of `element` with no channel binding and no state.
    pub fn new(element: impl Into<Element>) -> Self {
        Offer {
            element: element.into(),
            channel_bindings: Vec::new(),
            state: None,
        }
    }

    /// With the channel-binding types the offered mechanisms use.
    pub fn with_channel_bindings(mut self, types: Vec<ChannelBindingType>) -> Self {
        self.channel_bindings = types;
        self
    }

    /// With per-stream state, handed back in [`ClaimContext::offer`] and
    /// [`SuccessContext::offer`].
    pub fn with_state(mut self, state: Arc<dyn Any + Send + Sync>) -> Self {
        self.state = Some(state);
        self
    }

    /// The state, if it is a `T`.
    pub fn state<T: Any>(&self) -> Option<&T> {
        self.state.as_deref()?.downcast_ref::<T>()
    }
}

impl fmt::Debug for Offer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Offer")
            .field("element", &crate::xmpp::Redacted(&self.element))
            .field("channel_bindings", &self.channel_bindings)
            .finish_non_exhaustive()
    }
}

/// What a feature sees when an `<authenticate>` arrives, before any mechanism runs.
#[derive(Debug)]
#[non_exhaustive]
pub struct ClaimContext<'a> {
    /// The stream.
    pub stream: &'a StreamInfo,
    /// The request.
    pub request: &'a AuthenticateRequest,
    /// This feature's offer on this stream; `None` if it offered nothing here.
    pub offer: Option<&'a Offer>,
}

/// Typed values inline features hand to the host with a successful login (a map from type to
/// value, like `http::Extensions`), e.g. the resource Bind 2 bound.
#[derive(Default)]
pub struct Extensions(HashMap<TypeId, Box<dyn Any + Send + Sync>>);

impl Extensions {
    /// Stores a value, replacing an earlier one of the same type.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        self.0.insert(TypeId::of::<T>(), Box::new(value));
    }

    /// The value of type `T`, if a feature stored one.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.get(&TypeId::of::<T>())?.downcast_ref()
    }

    /// Removes and returns the value of type `T`.
    pub fn remove<T: Any>(&mut self) -> Option<T> {
        let b = self.0.remove(&TypeId::of::<T>())?;
        b.downcast().ok().map(|b| *b)
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no feature stored anything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Extensions {
    // Values are the features' business (they may be sensitive): only their number shows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Extensions({})", self.0.len())
    }
}

/// The `<success>` under construction; inline features add to it in [`InlineOrder`].
#[non_exhaustive]
pub struct SuccessBuilder {
    /// `<additional-data>` (from the mechanism, or from the last task).
    pub additional_data: Option<Vec<u8>>,
    /// `<authorization-identifier>`: the bare JID, replaced by the full JID when a resource is
    /// bound (S-16, B-10).
    pub authorization_identifier: Jid,
    /// Results of inline features, in the order they were added (`<bound>`, `<token>`, ...).
    pub results: Vec<Element>,
    /// Typed results for the host.
    pub extensions: Extensions,
}

impl SuccessBuilder {
    /// A builder for `authorization_identifier` with the mechanism's success data.
    pub fn new(authorization_identifier: Jid, additional_data: Option<Vec<u8>>) -> Self {
        SuccessBuilder {
            additional_data,
            authorization_identifier,
            results: Vec::new(),
            extensions: Extensions::default(),
        }
    }

    /// Adds an inline result element (anything an xmpp-parsers type converts into).
    pub fn push(&mut self, result: impl Into<Element>) {
        self.results.push(result.into());
    }

    /// The `<success>` element in the order of [`xmpp_parsers::sasl2::Success`]:
    /// additional-data (only when the mechanism has some: xmpp-parsers would write an empty
    /// `<additional-data/>` for none, which XEP-0388 reads as "empty data", S-8),
    /// authorization-identifier, then inline results (protocol.md §9 item 14). Built with
    /// minidom's builder: converting `Success` runs every result through xso's event stream, and
    /// dropping that took a whole FAST login from 9.9 to 8.8 µs (`cargo bench --bench fast --
    /// login_in_process`). `tests/xmpp_parsers_gaps.rs` pins that xmpp-parsers parses
    /// this output.
    pub fn to_element(&self) -> Element {
        success_element(
            self.additional_data.as_deref(),
            &self.authorization_identifier,
            self.results.iter().cloned(),
        )
    }
}

/// [`SuccessBuilder::to_element`] over the builder's parts: the negotiator moves the results
/// in instead of copying them (a `<token>` result is password-equivalent: no extra copy of
/// it to leave on the heap, and no deep clone per login).
pub(crate) fn success_element(
    additional_data: Option<&[u8]>,
    authorization_identifier: &Jid,
    results: impl IntoIterator<Item = Element>,
) -> Element {
    use base64::Engine as _;
    let mut el = Element::builder("success", crate::xmpp::ns::SASL2);
    if let Some(data) = additional_data {
        el = el.append(crate::xmpp::text_child(
            "additional-data",
            crate::xmpp::ns::SASL2,
            base64::engine::general_purpose::STANDARD.encode(data),
        ));
    }
    el = el.append(crate::xmpp::text_child(
        "authorization-identifier",
        crate::xmpp::ns::SASL2,
        authorization_identifier.to_string(),
    ));
    el.append_all(results).build()
}

impl fmt::Debug for SuccessBuilder {
    // Results may hold a FAST token: redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SuccessBuilder")
            .field(
                "additional_data",
                &self.additional_data.as_ref().map(Vec::len),
            )
            .field("authorization_identifier", &self.authorization_identifier)
            .field("results", &RedactedList(&self.results))
            .field("extensions", &self.extensions)
            .finish()
    }
}

/// Everything an inline feature sees when an authentication attempt succeeded.
#[derive(Debug)]
#[non_exhaustive]
pub struct SuccessContext<'a> {
    /// The stream.
    pub stream: &'a StreamInfo,
    /// The request, with its inline payloads.
    pub request: &'a AuthenticateRequest,
    /// The mechanism that succeeded.
    pub mechanism: &'a str,
    /// The authenticated account.
    pub username: &'a str,
    /// True if this feature claimed the attempt (supplied the mechanism).
    pub claimed_by_me: bool,
    /// The state the claiming feature's mechanism left, if `claimed_by_me`.
    pub state: Option<&'a (dyn Any + Send + Sync)>,
    /// This feature's offer on this stream.
    pub offer: Option<&'a Offer>,
    /// SASL2 tasks completed before this success, in order.
    pub tasks_completed: &'a [String],
}

/// A SASL2 inline feature (XEP-0388 §inline): FAST, Bind 2, stream resumption, ...
///
/// # Contract
/// - `offer` is called once per stream, when the negotiator is created; what it returns is
///   what the stream offers (S-4) and is handed back to `claim` and `on_success`.
/// - `claim` must not change any state: the attempt may still fail.
/// - `on_success` runs only after the whole authentication succeeded, every SASL2 task
///   included (S-22, F-10, B-5), and before `<success>` is sent; anything that must survive a
///   crash (a token) must be durable when it returns. An error fails the login instead
///   ([`InlineError::Failure`] with its condition, otherwise `temporary-auth-failure`), and
///   nothing of it reaches the client.
/// - Inputs in the request are attacker-controlled.
#[async_trait]
pub trait InlineFeature: fmt::Debug + Send + Sync {
    /// A short name for logs and errors (`"fast"`, `"bind2"`).
    fn name(&self) -> &'static str;

    /// Where this feature's results go in `<success>`.
    fn order(&self) -> InlineOrder;

    /// What to offer inside `<inline>` on this stream, or `None` to not offer the feature.
    ///
    /// Contract: the answer depends only on the stream's facts (the domain, the TLS version,
    /// which channel-binding types exist, whether plaintext is allowed, whether the host
    /// accepts TLS early data there: `zero_rtt`), never on `from`, `early_data`, the
    /// peer address or the channel-binding bytes: the negotiator asks once per distinct facts
    /// and reuses the offer (unless the host turned that off with
    /// [`super::Sasl2ServerBuilder::cache_offers`]).
    fn offer(&self, stream: &StreamInfo) -> Option<Offer>;

    /// Looks at an `<authenticate>` before any mechanism runs. Return `Ok(Some(mechanism))` to
    /// claim the attempt, `Ok(None)` to leave it to the normal mechanisms, or `Err(failure)`
    /// to reject the request (e.g. `<fast/>` without a user-agent id).
    fn claim(&self, _ctx: &ClaimContext<'_>) -> Result<Option<Box<dyn Mechanism>>, Failure> {
        Ok(None)
    }

    /// Adds this feature's result to the `<success>` of a completed authentication.
    async fn on_success(
        &self,
        ctx: &SuccessContext<'_>,
        success: &mut SuccessBuilder,
    ) -> Result<(), InlineError>;
}

/// An inline feature could not complete its part of a successful login; the login fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InlineError {
    /// The login fails with this SASL failure (e.g. a FAST token that lost a race with a
    /// concurrent invalidation: `not-authorized`).
    #[error("{0}")]
    Failure(Failure),
    /// Something the feature depends on failed; the login fails with
    /// `temporary-auth-failure`.
    #[error("{feature}: {source}")]
    Internal {
        /// Which feature.
        feature: &'static str,
        /// The cause (never contains a secret).
        #[source]
        source: BoxError,
    },
}

impl InlineError {
    /// An internal error of `feature`, keeping its cause.
    pub fn internal(feature: &'static str, source: impl Into<BoxError>) -> Self {
        InlineError::Internal {
            feature,
            source: source.into(),
        }
    }
}

/// A shared handle to an inline feature.
pub type SharedInlineFeature = Arc<dyn InlineFeature>;
