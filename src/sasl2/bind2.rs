//! Bind 2 (XEP-0386) as a SASL2 inline feature, and the resource generation it shares with
//! RFC 6120 resource binding.
//!
//! The feature decides the resource and puts `<bound/>` into `<success>`; the host registers
//! the session. It hands the host a [`BoundResource`] value in the session's
//! [`super::Extensions`], so the host never parses the authorization identifier back.

use async_trait::async_trait;
use jid::{FullJid, Jid, ResourcePart};
use minidom::Element;
use xmpp_parsers::bind2::{BindFeature, BindQuery, Bound};

use super::{
    InlineError, InlineFeature, InlineOrder, Offer, SessionResumed, StreamInfo, SuccessBuilder,
    SuccessContext,
};
use crate::xmpp::ns;

/// Longest resource prefix kept from a client `<tag>` or requested resource.
pub const MAX_TAG_CHARS: usize = 32;

/// Keeps letters, digits and `-_.` (at most [`MAX_TAG_CHARS`]); `None` if nothing is left.
pub fn sanitize_tag(tag: &str) -> Option<String> {
    let s: String = tag
        .trim()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(MAX_TAG_CHARS)
        .collect();
    let s = s.trim_matches('.').to_owned();
    (!s.is_empty()).then_some(s)
}

/// A fresh resource: `<tag>.<8 hex>` or just the hex part. Never derived from the user-agent
/// id (B-9).
pub fn make_resource(tag: Option<&str>) -> ResourcePart {
    let s = match tag.and_then(sanitize_tag) {
        Some(t) => format!("{t}.{}", crate::xmpp::random_hex(4)),
        None => crate::xmpp::random_hex(4),
    };
    // Letters, digits, '-', '_', '.' and hex always form a valid resourcepart; the fallback
    // only guards against a stringprep surprise on an exotic letter.
    ResourcePart::new(&s)
        .map(|r| r.into_owned())
        .unwrap_or_else(|_| {
            ResourcePart::new(&crate::xmpp::random_hex(4))
                .expect("hex is a valid resource")
                .into_owned()
        })
}

/// What Bind 2 bound, for the host (in [`super::AuthenticatedSession::extensions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BoundResource {
    /// The full JID now in `<authorization-identifier>`.
    pub jid: FullJid,
    /// The client's `<tag>`, as sent (untrusted).
    pub tag: Option<String>,
    /// Session features the client asked to enable inline (carbons, CSI, SM `<enable>`),
    /// for the host to act on (B-11). Only those advertised are kept.
    pub enable: Vec<Element>,
}

/// The Bind 2 inline feature.
#[derive(Debug, Default, Clone)]
pub struct Bind2 {
    inline_features: Vec<String>,
    /// The `<bind>` advertisement, the same on every stream: converted from xmpp-parsers'
    /// `BindFeature` once (xso's conversion costs about a microsecond), then cloned.
    offer: std::sync::OnceLock<Element>,
}

impl Bind2 {
    /// Bind 2 with no inline-enableable session features.
    pub fn new() -> Self {
        Self::default()
    }

    /// Advertises a session feature (e.g. `urn:xmpp:carbons:2`) as enableable inside
    /// `<bind>` (B-2); the host must honour requests for it (B-11).
    pub fn with_inline_feature(mut self, var: impl Into<String>) -> Self {
        self.inline_features.push(var.into());
        self.offer = std::sync::OnceLock::new();
        self
    }
}

#[async_trait]
impl InlineFeature for Bind2 {
    fn name(&self) -> &'static str {
        "bind2"
    }

    fn order(&self) -> InlineOrder {
        InlineOrder::BIND
    }

    fn offer(&self, _stream: &StreamInfo) -> Option<Offer> {
        // B-1, B-2.
        let element = self.offer.get_or_init(|| {
            Element::from(BindFeature {
                inline_features: self.inline_features.clone(),
            })
        });
        Some(Offer::new(element.clone()))
    }

    async fn on_success(
        &self,
        ctx: &SuccessContext<'_>,
        success: &mut SuccessBuilder,
    ) -> Result<(), InlineError> {
        let Some(req) = ctx.request.inline_child("bind", ns::BIND2) else {
            return Ok(());
        };
        if success.extensions.get::<SessionResumed>().is_some() {
            // B-6, SM-2: an XEP-0198 session was resumed inline (earlier in InlineOrder); it is
            // bound already, so the <bind> request is ignored.
            return Ok(());
        }
        // xmpp-parsers' BindQuery fits what clients send; an unparsable request still binds,
        // without a tag, rather than failing a login that already succeeded.
        let query = BindQuery::try_from(req.clone()).ok();
        let tag = query.as_ref().and_then(|q| q.tag.clone());
        let enable = query
            .map(|q| {
                q.payloads
                    .into_iter()
                    .filter(|p| self.inline_features.iter().any(|f| p.has_ns(f.as_str())))
                    .collect()
            })
            .unwrap_or_default();
        // B-7: a fresh resource, bound by the host when it registers the session it names.
        let resource = make_resource(tag.as_deref());
        let bare = success.authorization_identifier.to_bare();
        let jid = bare.with_resource(&resource);
        success.authorization_identifier = Jid::from(jid.clone());
        success.push(Bound {
            mam_metadata: None,
            payloads: Vec::new(),
        });
        success
            .extensions
            .insert(BoundResource { jid, tag, enable });
        Ok(())
    }
}
