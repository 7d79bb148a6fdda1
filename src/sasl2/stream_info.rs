//! What the host knows about one stream before `<stream:features>` is sent: the domain, the
//! untrusted `from`, and the TLS facts channel binding depends on.

use std::fmt;

use jid::BareJid;

/// TLS protocol version of the stream, as far as channel binding cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// The channel-binding types of RFC 5929 and RFC 9266.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
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

impl From<ChannelBindingType> for xmpp_parsers::sasl_cb::Type {
    fn from(t: ChannelBindingType) -> Self {
        match t {
            ChannelBindingType::TlsExporter => xmpp_parsers::sasl_cb::Type::TlsExporter,
            ChannelBindingType::TlsServerEndPoint => xmpp_parsers::sasl_cb::Type::TlsServerEndPoint,
            ChannelBindingType::TlsUnique => xmpp_parsers::sasl_cb::Type::TlsUnique,
        }
    }
}

/// Channel-binding bytes of one TLS connection, supplied by the host.
///
/// The host must take them from the live connection (e.g. rustls
/// `export_keying_material(.., b"EXPORTER-Channel-Binding", Some(b""))` and the hash of the
/// certificate it presented on this connection). A type is `None` when it is undefined for the
/// connection (CB-3..CB-5): mechanisms bound to it are then not offered.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelBindings {
    /// `tls-exporter` bytes (32).
    pub tls_exporter: Option<Vec<u8>>,
    /// `tls-server-end-point` bytes (hash of the server certificate).
    pub tls_server_end_point: Option<Vec<u8>>,
    /// `tls-unique` bytes (TLS 1.2 Finished); rustls does not expose them.
    pub tls_unique: Option<Vec<u8>>,
}

impl ChannelBindings {
    /// No channel binding at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// With `tls-exporter` bytes.
    pub fn with_tls_exporter(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.tls_exporter = Some(bytes.into());
        self
    }

    /// With `tls-server-end-point` bytes.
    pub fn with_tls_server_end_point(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.tls_server_end_point = Some(bytes.into());
        self
    }

    /// With `tls-unique` bytes.
    pub fn with_tls_unique(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.tls_unique = Some(bytes.into());
        self
    }

    /// The bytes for one type, if defined on this connection.
    pub fn get(&self, ty: ChannelBindingType) -> Option<&[u8]> {
        match ty {
            ChannelBindingType::TlsExporter => self.tls_exporter.as_deref(),
            ChannelBindingType::TlsServerEndPoint => self.tls_server_end_point.as_deref(),
            ChannelBindingType::TlsUnique => self.tls_unique.as_deref(),
        }
    }

    /// The types defined on this connection, strongest first.
    pub fn available(&self) -> impl Iterator<Item = ChannelBindingType> + '_ {
        [
            ChannelBindingType::TlsExporter,
            ChannelBindingType::TlsServerEndPoint,
            ChannelBindingType::TlsUnique,
        ]
        .into_iter()
        .filter(|t| self.get(*t).is_some())
    }
}

impl fmt::Debug for ChannelBindings {
    // The exporter value is session key material: show only which types are present.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.available()).finish()
    }
}

/// TLS facts of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsInfo {
    /// Negotiated protocol version.
    pub version: TlsVersion,
    /// Channel-binding data of this connection.
    pub channel_bindings: ChannelBindings,
}

impl TlsInfo {
    /// TLS facts of one connection.
    pub fn new(version: TlsVersion, channel_bindings: ChannelBindings) -> Self {
        TlsInfo {
            version,
            channel_bindings,
        }
    }
}

/// What the host knows about one stream, fixed before `<stream:features>` is sent.
///
/// ```
/// use sasl2_fast::sasl2::{ChannelBindings, StreamInfo, TlsInfo, TlsVersion};
/// let stream = StreamInfo::new("example.com").with_tls(TlsInfo::new(
///     TlsVersion::Tls13,
///     ChannelBindings::none().with_tls_exporter([0u8; 32]),
/// ));
/// assert!(stream.is_secure());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StreamInfo {
    /// The domain this stream is for (stream `to`, already checked by the host).
    pub domain: String,
    /// The stream `from` attribute as a bare JID, if the client sent one (untrusted, S-29).
    pub from: Option<BareJid>,
    /// TLS state; `None` on a plaintext stream.
    pub tls: Option<TlsInfo>,
    /// Whether the host allows SASL2 on this stream without TLS (loopback testing only).
    pub allow_plaintext: bool,
    /// Remote address, for logs and observers.
    pub peer: Option<std::net::SocketAddr>,
    /// The host accepts TLS 1.3 early data on this stream's listener (`tls-0rtt` is advertised,
    /// F-6). Fixed per listener so the features a client caches stay valid (S-4).
    pub zero_rtt: bool,
    /// The element being handled arrived as TLS 1.3 early data (0-RTT): replayable by anyone
    /// who recorded it (RFC 8446 §8). The host sets it per element with
    /// [`Negotiator::set_early_data`](super::Negotiator::set_early_data); an inline feature
    /// that claims such a request must enforce its own mitigation (Z-1..Z-5), and the
    /// negotiator refuses every request no inline feature claimed (S-27, Z-1).
    pub early_data: bool,
}

impl StreamInfo {
    /// A plaintext stream for `domain`; add TLS facts with [`StreamInfo::with_tls`].
    pub fn new(domain: impl Into<String>) -> Self {
        StreamInfo {
            domain: domain.into(),
            from: None,
            tls: None,
            allow_plaintext: false,
            peer: None,
            zero_rtt: false,
            early_data: false,
        }
    }

    /// Whether the host accepts TLS 1.3 early data on this stream (advertise `tls-0rtt`).
    pub fn with_zero_rtt(mut self, accepted: bool) -> Self {
        self.zero_rtt = accepted;
        self
    }

    /// Whether the element being handled arrived as TLS 1.3 early data.
    pub fn with_early_data(mut self, early: bool) -> Self {
        self.early_data = early;
        self
    }

    /// With the stream's `from`.
    pub fn with_from(mut self, from: Option<BareJid>) -> Self {
        self.from = from;
        self
    }

    /// With TLS facts.
    pub fn with_tls(mut self, tls: TlsInfo) -> Self {
        self.tls = Some(tls);
        self
    }

    /// With the remote address.
    pub fn with_peer(mut self, peer: std::net::SocketAddr) -> Self {
        self.peer = Some(peer);
        self
    }

    /// Whether SASL may run without TLS (loopback testing only; S-26 says it must not).
    pub fn with_plaintext_allowed(mut self, allowed: bool) -> Self {
        self.allow_plaintext = allowed;
        self
    }

    /// Channel-binding bytes of a type, if the stream is TLS and the type is defined.
    pub fn channel_binding(&self, ty: ChannelBindingType) -> Option<&[u8]> {
        self.tls.as_ref()?.channel_bindings.get(ty)
    }

    /// The channel-binding types this stream supports, strongest first (XEP-0440 list).
    pub fn channel_binding_types(&self) -> Vec<ChannelBindingType> {
        match &self.tls {
            Some(t) => t.channel_bindings.available().collect(),
            None => Vec::new(),
        }
    }

    /// True when the stream has any channel binding.
    pub fn has_channel_binding(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|t| t.channel_bindings.available().next().is_some())
    }

    /// True when the stream is encrypted.
    pub fn is_secure(&self) -> bool {
        self.tls.is_some()
    }

    /// True when authentication may run on this stream at all (S-26, F-32, H-2).
    pub fn may_authenticate(&self) -> bool {
        self.is_secure() || self.allow_plaintext
    }
}
