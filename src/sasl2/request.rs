//! The client's request to authenticate, parsed tolerantly.
//!
//! `<authenticate>` is parsed over minidom rather than with
//! [`xmpp_parsers::sasl2::Authenticate`]: xmpp-parsers 0.23 requires `<user-agent>` and a
//! UUID `id`, but clients in the wild send neither (Smack sends `id='smack-client-instance'`,
//! nbxmpp sends no `<user-agent>` at all), and XEP-0388 makes the element optional (S-11,
//! protocol.md §9 item 18). Tests in `tests/xmpp_parsers_gaps.rs` pin each gap, so the
//! workaround can go when upstream relaxes. Inline children stay elements, for the inline
//! features to parse with the xmpp-parsers types that fit them.

use std::fmt;

use base64::Engine as _;
use minidom::Element;
use zeroize::Zeroizing;

use super::{Failure, MAX_SASL_PAYLOAD, SaslCondition};
use crate::xmpp::{RedactedList, ns, truncate_utf8};

/// Longest mechanism name accepted (XEP-0388 schema: 1..20 characters).
pub const MAX_MECHANISM_NAME: usize = 20;
/// Longest user-agent id accepted. Ids are hashed before use; the bound only stops abuse.
pub const MAX_USER_AGENT_ID: usize = 256;
/// Longest `<software>` / `<device>` kept (longer values are cut at a character boundary).
pub const MAX_USER_AGENT_LABEL: usize = 128;

/// Which SASL profile a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SaslProfile {
    /// SASL2 (XEP-0388): `<authenticate>`, inline features, no stream restart.
    Sasl2,
    /// RFC 6120 §6 SASL: `<auth>`, no inline features, a stream restart after `<success>`.
    Rfc6120,
}

/// The client's `<user-agent>` (XEP-0388 §user-agent), parsed leniently (S-11).
#[derive(Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct UserAgent {
    /// The `id` attribute: a stable per-installation identifier (UUIDv4 by the spec; not
    /// enforced because deployed clients such as Smack send other strings). Attacker-controlled.
    pub id: Option<String>,
    /// `<software>`, for display to the account owner only (S-12).
    pub software: Option<String>,
    /// `<device>`, for display to the account owner only (S-12).
    pub device: Option<String>,
}

impl UserAgent {
    /// A user agent with an id and no labels.
    pub fn with_id(id: impl Into<String>) -> Self {
        UserAgent {
            id: Some(id.into()),
            ..Self::default()
        }
    }
}

impl fmt::Debug for UserAgent {
    // The id is a long-lived client identifier: keep it out of logs beyond its presence.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserAgent")
            .field("id", &self.id.as_ref().map(|_| "[present]"))
            .field("software", &self.software)
            .field("device", &self.device)
            .finish()
    }
}

/// A parsed `<authenticate>` (or RFC 6120 `<auth>`). Inline payloads are kept as elements
/// for the inline features to interpret; nothing in them has been acted on.
#[derive(Clone)]
#[non_exhaustive]
pub struct AuthenticateRequest {
    /// The `mechanism` attribute.
    pub mechanism: String,
    /// Decoded `<initial-response>`: `None` if absent, `Some(empty)` for `<initial-response/>`
    /// or `=` (S-8).
    pub initial_response: Option<Zeroizing<Vec<u8>>>,
    /// `<user-agent>`, if present.
    pub user_agent: Option<UserAgent>,
    /// Every child that is not `initial-response` or `user-agent` (foreign-namespace inline
    /// requests such as `<bind>`, `<fast>`, `<request-token>`). Empty for RFC 6120.
    pub inline: Vec<Element>,
    /// The profile the request came in.
    pub profile: SaslProfile,
}

impl fmt::Debug for AuthenticateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthenticateRequest")
            .field("mechanism", &self.mechanism)
            .field(
                "initial_response",
                &self.initial_response.as_ref().map(|r| r.len()),
            )
            .field("user_agent", &self.user_agent)
            .field("inline", &RedactedList(&self.inline))
            .field("profile", &self.profile)
            .finish()
    }
}

impl AuthenticateRequest {
    /// A SASL2 request for `mechanism` (hosts and tests that build requests by hand).
    pub fn new(mechanism: impl Into<String>) -> Self {
        AuthenticateRequest {
            mechanism: mechanism.into(),
            initial_response: None,
            user_agent: None,
            inline: Vec::new(),
            profile: SaslProfile::Sasl2,
        }
    }

    /// The first inline request `name` in `namespace`.
    pub fn inline_child(&self, name: &str, namespace: &str) -> Option<&Element> {
        self.inline.iter().find(|e| e.is(name, namespace))
    }

    /// The user-agent id, if one was sent and is non-empty.
    pub fn user_agent_id(&self) -> Option<&str> {
        self.user_agent
            .as_ref()
            .and_then(|u| u.id.as_deref())
            .filter(|s| !s.is_empty())
    }
}

/// Decodes the base64 text of a SASL payload element. ASCII whitespace is stripped first
/// (S-8 says clients should not send it, but tolerating it costs nothing); `=` alone and an
/// empty element both mean an empty payload.
pub fn decode_payload(el: &Element) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let text = Zeroizing::new(el.text());
    // Checked before decoding so a huge element costs no allocation beyond what the stream
    // reader already bounded.
    if text.len() > MAX_SASL_PAYLOAD * 4 / 3 + 8 {
        return Err(Failure::with_text(
            SaslCondition::MalformedRequest,
            "SASL payload too large",
        ));
    }
    let compact: Zeroizing<String> =
        Zeroizing::new(text.chars().filter(|c| !c.is_ascii_whitespace()).collect());
    if compact.is_empty() || compact.as_str() == "=" {
        return Ok(Zeroizing::new(Vec::new()));
    }
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| Failure::new(SaslCondition::IncorrectEncoding))
}

fn bounded_label(el: Option<&Element>) -> Option<String> {
    let text = el?.text();
    let s = truncate_utf8(text.trim(), MAX_USER_AGENT_LABEL);
    (!s.is_empty()).then(|| s.to_owned())
}

fn mechanism_attr(el: &Element) -> Result<String, Failure> {
    let mechanism = el.attr("mechanism").unwrap_or("");
    if mechanism.is_empty() || mechanism.len() > MAX_MECHANISM_NAME {
        return Err(Failure::with_text(
            SaslCondition::MalformedRequest,
            "missing or invalid mechanism attribute",
        ));
    }
    Ok(mechanism.to_owned())
}

/// Parses `<authenticate>` leniently (protocol.md §4 step 1): `<user-agent>` may be absent
/// and its id need not be a UUID (S-11, §9 item 18); unknown children are kept for inline
/// features. Takes the element: the unknown children move into
/// [`AuthenticateRequest::inline`] instead of being copied.
pub fn parse_authenticate(mut el: Element) -> Result<AuthenticateRequest, Failure> {
    let mechanism = mechanism_attr(&el)?;
    let mut initial_response = None;
    let mut user_agent = None;
    let mut inline = Vec::new();
    for node in el.take_nodes() {
        let minidom::Node::Element(child) = node else {
            continue;
        };
        if child.is("initial-response", ns::SASL2) {
            if initial_response.is_some() {
                return Err(Failure::with_text(
                    SaslCondition::MalformedRequest,
                    "more than one initial-response",
                ));
            }
            initial_response = Some(decode_payload(&child)?);
        } else if child.is("user-agent", ns::SASL2) {
            let id = child.attr("id").map(str::trim).filter(|s| !s.is_empty());
            if id.is_some_and(|id| id.len() > MAX_USER_AGENT_ID) {
                return Err(Failure::with_text(
                    SaslCondition::MalformedRequest,
                    "user-agent id too long",
                ));
            }
            user_agent = Some(UserAgent {
                id: id.map(str::to_owned),
                software: bounded_label(child.get_child("software", ns::SASL2)),
                device: bounded_label(child.get_child("device", ns::SASL2)),
            });
        } else {
            inline.push(child);
        }
    }
    Ok(AuthenticateRequest {
        mechanism,
        initial_response,
        user_agent,
        inline,
        profile: SaslProfile::Sasl2,
    })
}

/// Parses an RFC 6120 `<auth>` (§6.4.2) over minidom: xmpp-parsers' `sasl::Auth` knows only a
/// closed list of mechanism names, and an unknown one must get `invalid-mechanism`, not a
/// parse error. An empty element means no initial response, `=` an empty one.
pub fn parse_rfc6120_auth(el: &Element) -> Result<AuthenticateRequest, Failure> {
    let mechanism = mechanism_attr(el)?;
    let initial_response = if el.text().trim().is_empty() {
        None
    } else {
        Some(decode_payload(el)?)
    };
    Ok(AuthenticateRequest {
        mechanism,
        initial_response,
        user_agent: None,
        inline: Vec::new(),
        profile: SaslProfile::Rfc6120,
    })
}
