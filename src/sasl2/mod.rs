//! The SASL2 (XEP-0388) extension layer. It knows nothing about FAST.
//!
//! A host server embeds a [`Sasl2Server`] (the registered mechanisms and inline features) and
//! runs one [`negotiator::Negotiator`] per stream. Plugins extend it through two small traits:
//!
//! - [`MechanismProvider`] / [`Mechanism`]: a server-side SASL mechanism, one object per attempt.
//! - [`InlineFeature`]: something advertised inside `<inline>` that may claim an
//!   `<authenticate>` (supplying the mechanism) and add results to `<success>`.
//!
//! The host supplies what only it knows: accounts ([`accounts::AccountStore`]), and per stream
//! the [`StreamInfo`] (TLS version, channel-binding bytes, stream `from`/`to`).

pub mod accounts;
pub mod negotiator;
pub mod plain;
pub mod scram;

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::xml::{Element, NS_SASL, NS_SASL2};

pub use negotiator::{Negotiator, NegotiatorEvent, Sasl2Server};

/// Upper bound on a decoded `<initial-response>` / `<response>` payload. SCRAM messages are a
/// few hundred bytes, HT messages at most 1 KiB plus a 64-byte MAC; anything much larger is an
/// attack on memory, answered with `malformed-request`.
pub const MAX_SASL_PAYLOAD: usize = 4096;

/// The RFC 6120 §6.5 SASL failure conditions, carried inside a SASL2 `<failure>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaslCondition {
    /// The client aborted (`<abort>`), S-30.
    Aborted,
    /// The account is disabled.
    AccountDisabled,
    /// The credential is no longer trusted (expired or revoked FAST token, F-28).
    CredentialsExpired,
    /// The mechanism needs an encrypted stream.
    EncryptionRequired,
    /// Bad base64.
    IncorrectEncoding,
    /// The authorization identity is not allowed.
    InvalidAuthzid,
    /// The mechanism was not offered (S-9).
    InvalidMechanism,
    /// The request is syntactically wrong.
    MalformedRequest,
    /// The mechanism is weaker than policy allows.
    MechanismTooWeak,
    /// Bad credentials.
    NotAuthorized,
    /// A temporary server-side problem (e.g. the token store is unreachable).
    TemporaryAuthFailure,
}

impl SaslCondition {
    /// The element name of the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslCondition::Aborted => "aborted",
            SaslCondition::AccountDisabled => "account-disabled",
            SaslCondition::CredentialsExpired => "credentials-expired",
            SaslCondition::EncryptionRequired => "encryption-required",
            SaslCondition::IncorrectEncoding => "incorrect-encoding",
            SaslCondition::InvalidAuthzid => "invalid-authzid",
            SaslCondition::InvalidMechanism => "invalid-mechanism",
            SaslCondition::MalformedRequest => "malformed-request",
            SaslCondition::MechanismTooWeak => "mechanism-too-weak",
            SaslCondition::NotAuthorized => "not-authorized",
            SaslCondition::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }

    /// Parses a condition element name.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "aborted" => SaslCondition::Aborted,
            "account-disabled" => SaslCondition::AccountDisabled,
            "credentials-expired" => SaslCondition::CredentialsExpired,
            "encryption-required" => SaslCondition::EncryptionRequired,
            "incorrect-encoding" => SaslCondition::IncorrectEncoding,
            "invalid-authzid" => SaslCondition::InvalidAuthzid,
            "invalid-mechanism" => SaslCondition::InvalidMechanism,
            "malformed-request" => SaslCondition::MalformedRequest,
            "mechanism-too-weak" => SaslCondition::MechanismTooWeak,
            "not-authorized" => SaslCondition::NotAuthorized,
            "temporary-auth-failure" => SaslCondition::TemporaryAuthFailure,
            _ => return None,
        })
    }
}

impl fmt::Display for SaslCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed authentication attempt: one condition and an optional human-readable text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The RFC 6120 condition.
    pub condition: SaslCondition,
    /// Optional text for humans (never contains a secret).
    pub text: Option<String>,
}

impl Failure {
    /// A failure with a condition and no text.
    pub fn new(condition: SaslCondition) -> Self {
        Failure {
            condition,
            text: None,
        }
    }

    /// A failure with a condition and a text.
    pub fn with_text(condition: SaslCondition, text: impl Into<String>) -> Self {
        Failure {
            condition,
            text: Some(text.into()),
        }
    }

    /// The SASL2 `<failure>` element (S-21).
    pub fn to_element(&self) -> Element {
        let mut f = Element::new("failure", NS_SASL2)
            .with_child(Element::new(self.condition.as_str(), NS_SASL));
        if let Some(t) = &self.text {
            f.push_child(
                Element::new("text", NS_SASL2)
                    .with_attr("xml:lang", "en")
                    .with_text(t.clone()),
            );
        }
        f
    }
}

impl From<SaslCondition> for Failure {
    fn from(c: SaslCondition) -> Self {
        Failure::new(c)
    }
}

/// TLS protocol version of the stream, as far as channel binding cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// The channel-binding types of RFC 5929 and RFC 9266.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChannelBindingType {
    /// `tls-exporter` (RFC 9266): TLS 1.3, or TLS 1.2 with extended master secret.
    TlsExporter,
    /// `tls-server-end-point` (RFC 5929 §4): hash of the server certificate.
    TlsServerEndPoint,
    /// `tls-unique` (RFC 5929 §3): TLS 1.2 only.
    TlsUnique,
}

impl ChannelBindingType {
    /// The IANA name used in SCRAM GS2 headers and XEP-0440.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelBindingType::TlsExporter => "tls-exporter",
            ChannelBindingType::TlsServerEndPoint => "tls-server-end-point",
            ChannelBindingType::TlsUnique => "tls-unique",
        }
    }

    /// Parses an IANA channel-binding name.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "tls-exporter" => Some(ChannelBindingType::TlsExporter),
            "tls-server-end-point" => Some(ChannelBindingType::TlsServerEndPoint),
            "tls-unique" => Some(ChannelBindingType::TlsUnique),
            _ => None,
        }
    }
}

/// Channel-binding bytes of one TLS connection, supplied by the host.
///
/// The host must take them from the live connection (e.g. rustls
/// `export_keying_material(.., b"EXPORTER-Channel-Binding", Some(b""))` and the hash of the
/// certificate it presented on this connection). A type is `None` when it is undefined for the
/// connection (CB-3..CB-5): mechanisms bound to it are then not offered.
#[derive(Clone, Default)]
pub struct ChannelBindings {
    /// `tls-exporter` bytes (32).
    pub tls_exporter: Option<Vec<u8>>,
    /// `tls-server-end-point` bytes (hash of the server certificate).
    pub tls_server_end_point: Option<Vec<u8>>,
    /// `tls-unique` bytes (TLS 1.2 Finished); rustls does not expose them.
    pub tls_unique: Option<Vec<u8>>,
}

impl ChannelBindings {
    /// The bytes for one type, if defined on this connection.
    pub fn get(&self, ty: ChannelBindingType) -> Option<&[u8]> {
        match ty {
            ChannelBindingType::TlsExporter => self.tls_exporter.as_deref(),
            ChannelBindingType::TlsServerEndPoint => self.tls_server_end_point.as_deref(),
            ChannelBindingType::TlsUnique => self.tls_unique.as_deref(),
        }
    }

    /// The types defined on this connection, strongest first.
    pub fn available(&self) -> Vec<ChannelBindingType> {
        [
            ChannelBindingType::TlsExporter,
            ChannelBindingType::TlsServerEndPoint,
            ChannelBindingType::TlsUnique,
        ]
        .into_iter()
        .filter(|t| self.get(*t).is_some())
        .collect()
    }
}

impl fmt::Debug for ChannelBindings {
    // The exporter value is session key material: show only which types are present.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.available()).finish()
    }
}

/// TLS facts of a stream.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// Negotiated protocol version.
    pub version: TlsVersion,
    /// Channel-binding data of this connection.
    pub channel_bindings: ChannelBindings,
}

/// What the host knows about one stream, fixed before `<stream:features>` is sent.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// The domain this stream is for (stream `to`, already checked by the host).
    pub domain: String,
    /// The stream `from` attribute, if the client sent one (untrusted, S-29).
    pub from: Option<String>,
    /// TLS state; `None` on a plaintext stream.
    pub tls: Option<TlsInfo>,
    /// Whether the host allows SASL2 on this stream without TLS (loopback testing only).
    pub allow_plaintext: bool,
    /// Remote address, for logs and observers.
    pub peer: Option<std::net::SocketAddr>,
}

impl StreamInfo {
    /// Channel-binding bytes of a type, if the stream is TLS and the type is defined.
    pub fn channel_binding(&self, ty: ChannelBindingType) -> Option<&[u8]> {
        self.tls.as_ref()?.channel_bindings.get(ty)
    }

    /// The channel-binding types this stream supports, strongest first (XEP-0440 list).
    pub fn channel_binding_types(&self) -> Vec<ChannelBindingType> {
        match &self.tls {
            Some(t) => t.channel_bindings.available(),
            None => Vec::new(),
        }
    }

    /// True when the stream is encrypted.
    pub fn is_secure(&self) -> bool {
        self.tls.is_some()
    }
}

/// The client's `<user-agent>` (XEP-0388 §user-agent), parsed leniently (S-11).
#[derive(Clone, PartialEq, Eq)]
pub struct UserAgent {
    /// The `id` attribute: a stable per-installation identifier (UUIDv4 by the spec; not
    /// enforced because deployed clients such as Smack send other strings). Attacker-controlled.
    pub id: Option<String>,
    /// `<software>`, for display to the account owner only (S-12).
    pub software: Option<String>,
    /// `<device>`, for display to the account owner only (S-12).
    pub device: Option<String>,
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

/// A parsed `<authenticate>` request. Inline payloads are kept as elements for the inline
/// features to interpret; nothing in them has been acted on.
#[derive(Debug, Clone)]
pub struct AuthenticateRequest {
    /// The `mechanism` attribute.
    pub mechanism: String,
    /// Decoded `<initial-response>`: `None` if absent, `Some(empty)` for `<initial-response/>`
    /// or `=` (S-8).
    pub initial_response: Option<Zeroizing<Vec<u8>>>,
    /// `<user-agent>`, if present.
    pub user_agent: Option<UserAgent>,
    /// Every child that is not `initial-response` or `user-agent` (foreign-namespace inline
    /// requests such as `<bind>`, `<fast>`, `<request-token>`).
    pub inline: Vec<Element>,
}

impl AuthenticateRequest {
    /// The first inline request `name` in `ns`.
    pub fn inline_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.inline.iter().find(|e| e.is(name, ns))
    }

    /// The user-agent id, if one was sent and is non-empty.
    pub fn user_agent_id(&self) -> Option<&str> {
        self.user_agent
            .as_ref()
            .and_then(|u| u.id.as_deref())
            .filter(|s| !s.is_empty())
    }
}

/// What a mechanism hands back on success.
pub struct Authenticated {
    /// The authenticated account (normalized localpart).
    pub username: String,
    /// Mechanism-specific success data for `<additional-data>` (SCRAM `v=`, HT responder MAC).
    pub additional_data: Option<Vec<u8>>,
    /// Opaque state the claiming inline feature wants back in
    /// [`InlineFeature::on_success`] (e.g. which FAST token slot matched). Only the feature
    /// that created it can downcast it.
    pub state: Option<Box<dyn Any + Send + Sync>>,
}

impl fmt::Debug for Authenticated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticated")
            .field("username", &self.username)
            .field(
                "additional_data",
                &self.additional_data.as_ref().map(Vec::len),
            )
            .finish_non_exhaustive()
    }
}

/// The result of one mechanism step.
#[derive(Debug)]
pub enum Step {
    /// Send a `<challenge>` with these bytes and wait for a `<response>`.
    Challenge(Vec<u8>),
    /// Authentication succeeded.
    Success(Authenticated),
    /// Authentication failed; the stream stays open for a retry (S-23).
    Failure(Failure),
}

/// One server-side SASL authentication attempt.
///
/// # Security contract
/// - Every byte of `input` is attacker-controlled: never panic, never allocate without bound
///   (the negotiator already caps input at [`MAX_SASL_PAYLOAD`]).
/// - Compare secrets (proofs, MACs) in constant time (F-31, F-34).
/// - Never put a secret into a [`Failure`] text or a log line.
#[async_trait]
pub trait Mechanism: Send {
    /// Processes the client's next message: first the initial response (`None` if the client
    /// sent no `<initial-response>`), then each `<response>`.
    async fn step(&mut self, input: Option<&[u8]>) -> Step;
}

/// Creates [`Mechanism`] attempts for one mechanism name, e.g. `SCRAM-SHA-256-PLUS`.
///
/// Providers registered with [`Sasl2Server`] appear in the top-level `<mechanism>` list.
/// Mechanisms that must only be reachable through an inline feature (such as FAST's HT family)
/// are not providers; the feature supplies them from [`InlineFeature::claim`].
pub trait MechanismProvider: fmt::Debug + Send + Sync {
    /// The SASL mechanism name.
    fn name(&self) -> &str;

    /// Whether the mechanism can run on this stream (e.g. `-PLUS` needs channel binding,
    /// PLAIN needs TLS).
    fn available(&self, stream: &StreamInfo) -> bool;

    /// Starts one attempt.
    fn start(&self, stream: &StreamInfo, request: &AuthenticateRequest) -> Box<dyn Mechanism>;
}

/// Where an inline feature's result goes in `<success>` (XEP-0388, XEP-0198 §SASL2): stream
/// resumption first, then binding, then tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum InlineOrder {
    /// XEP-0198 resumption.
    Resume = 0,
    /// XEP-0386 Bind 2.
    Bind = 1,
    /// XEP-0484 FAST tokens and anything else.
    Token = 2,
}

/// The `<success>` under construction; inline features add to it in [`InlineOrder`].
#[derive(Debug)]
pub struct SuccessBuilder {
    /// `<additional-data>` (from the mechanism).
    pub additional_data: Option<Vec<u8>>,
    /// `<authorization-identifier>`: the bare JID, replaced by the full JID when a resource is
    /// bound (S-16, B-10).
    pub authorization_identifier: String,
    /// Results of inline features, in the order they were added.
    pub results: Vec<Element>,
}

impl SuccessBuilder {
    /// The `<success>` element: additional-data, authorization-identifier, then inline results
    /// (protocol.md §9 item 14).
    pub fn to_element(&self) -> Element {
        use base64::Engine as _;
        let mut s = Element::new("success", NS_SASL2);
        if let Some(data) = &self.additional_data {
            s.push_child(
                Element::new("additional-data", NS_SASL2)
                    .with_text(base64::engine::general_purpose::STANDARD.encode(data)),
            );
        }
        s.push_child(
            Element::new("authorization-identifier", NS_SASL2)
                .with_text(self.authorization_identifier.clone()),
        );
        for r in &self.results {
            s.push_child(r.clone());
        }
        s
    }
}

/// Everything an inline feature sees when an authentication attempt succeeded.
#[derive(Debug)]
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
}

/// A SASL2 inline feature (XEP-0388 §inline): FAST, Bind 2, stream resumption, ...
///
/// # Contract
/// - `advertise` is a pure function of the stream: the negotiator may call it again to learn
///   what was offered (S-4).
/// - `claim` must not change any state: the attempt may still fail.
/// - `on_success` runs only after the whole authentication succeeded (S-22, F-10, B-5) and
///   before `<success>` is sent; anything that must survive a crash (a token) must be durable
///   when it returns. An error aborts the login with `temporary-auth-failure`.
/// - Inputs in the request are attacker-controlled.
#[async_trait]
pub trait InlineFeature: fmt::Debug + Send + Sync {
    /// Where this feature's results go in `<success>`.
    fn order(&self) -> InlineOrder;

    /// The element to put inside `<inline>`, or `None` to not offer the feature on this stream.
    fn advertise(&self, stream: &StreamInfo) -> Option<Element>;

    /// Channel-binding types the feature relies on, for the XEP-0440 list. The default is none.
    fn channel_binding_types(&self, _stream: &StreamInfo) -> Vec<ChannelBindingType> {
        Vec::new()
    }

    /// Looks at an `<authenticate>` before any mechanism runs. Return `Ok(Some(mechanism))` to
    /// claim the attempt, `Ok(None)` to leave it to the normal mechanisms, or `Err(failure)`
    /// to reject the request (e.g. `<fast/>` without a user-agent id).
    fn claim(
        &self,
        _stream: &StreamInfo,
        _request: &AuthenticateRequest,
    ) -> Result<Option<Box<dyn Mechanism>>, Failure> {
        Ok(None)
    }

    /// Adds this feature's result to the `<success>` of a completed authentication.
    async fn on_success(
        &self,
        ctx: &SuccessContext<'_>,
        success: &mut SuccessBuilder,
    ) -> Result<(), InlineError>;
}

/// An inline feature could not complete its part of a successful login.
#[derive(Debug, thiserror::Error)]
#[error("{feature}: {message}")]
pub struct InlineError {
    /// Which feature.
    pub feature: &'static str,
    /// What went wrong (never contains a secret).
    pub message: String,
}

/// A shared handle to an inline feature.
pub type SharedInlineFeature = Arc<dyn InlineFeature>;
/// A shared handle to a mechanism provider.
pub type SharedMechanismProvider = Arc<dyn MechanismProvider>;
