//! Bind 2 (XEP-0386) as a SASL2 inline feature, and resource generation shared with RFC 6120
//! resource binding.

use async_trait::async_trait;
use sasl2_fast::sasl2::{
    InlineError, InlineFeature, InlineOrder, StreamInfo, SuccessBuilder, SuccessContext,
};
use sasl2_fast::xml::{Element, NS_BIND2};

/// Longest resource prefix kept from a client `<tag>` or requested resource.
pub const MAX_TAG_CHARS: usize = 32;

/// 8 random hex characters.
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("OS random number generator");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

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
pub fn make_resource(tag: Option<&str>) -> String {
    match tag.and_then(sanitize_tag) {
        Some(t) => format!("{t}.{}", random_hex(4)),
        None => random_hex(4),
    }
}

/// The Bind 2 inline feature. The connection registers the bound session with the router when
/// it sees `<success>` with a full JID.
#[derive(Debug, Default)]
pub struct Bind2;

#[async_trait]
impl InlineFeature for Bind2 {
    fn order(&self) -> InlineOrder {
        InlineOrder::Bind
    }

    fn advertise(&self, _stream: &StreamInfo) -> Option<Element> {
        // No inline-enableable features (carbons, CSI, SM) are implemented.
        Some(Element::new("bind", NS_BIND2).with_child(Element::new("inline", NS_BIND2)))
    }

    async fn on_success(
        &self,
        ctx: &SuccessContext<'_>,
        success: &mut SuccessBuilder,
    ) -> Result<(), InlineError> {
        let Some(req) = ctx.request.inline_child("bind", NS_BIND2) else {
            return Ok(());
        };
        let tag = req.get_child("tag", NS_BIND2).map(|t| t.text());
        let resource = make_resource(tag.as_deref());
        success.authorization_identifier =
            format!("{}@{}/{}", ctx.username, ctx.stream.domain, resource);
        success.results.push(Element::new("bound", NS_BIND2));
        Ok(())
    }
}
