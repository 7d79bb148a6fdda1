//! A small async XMPP client for the example host: TCP, STARTTLS or direct TLS (rustls), SASL2
//! with SCRAM (the independent `sasl` crate), PLAIN and FAST (HT), RFC 6120 SASL, Bind 2 and
//! RFC 6120 binding, ping and messages.
//!
//! Used by the TCP integration tests and the load generator, so nothing here panics on peer
//! input: every failure is a [`ClientError`]. Channel-binding bytes are computed from the live
//! TLS session exactly as a real client does, never taken from the server. What the server
//! sends is parsed with minidom's own tree builder ([`reader`]) and read through xmpp-parsers
//! types, not with the server's reader.

pub mod reader;
mod sasl;
pub mod zero_rtt;

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use minidom::Element;
use sasl2_fast::stream::{STREAM_FOOTER, stream_header_xml};
use sasl2_fast::xmpp::ns;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use xmpp_parsers::stream_features::StreamFeatures;

use reader::{ClientEvent, ClientReader};

/// Everything that can go wrong on the client side.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// Socket error.
    Io(std::io::Error),
    /// TLS configuration or handshake error.
    Tls(String),
    /// The server sent bytes that are not well-formed XML.
    Xml(String),
    /// Nothing arrived in time; the text says what was awaited.
    Timeout(String),
    /// The server closed the connection or the stream.
    Closed,
    /// The server sent `<stream:error>`.
    StreamError {
        /// The condition element name (`policy-violation`, ...).
        condition: String,
        /// The optional `<text>`.
        text: Option<String>,
    },
    /// The server sent something unexpected.
    Protocol(String),
    /// The client-side SASL mechanism rejected a server message (e.g. bad SCRAM signature).
    Sasl(String),
    /// The server's FAST proof (`<additional-data>`) is not `HMAC(token, "Responder" || cb)`.
    ServerProofMismatch,
    /// The login failed where success was required.
    AuthFailed {
        /// The RFC 6120 condition.
        condition: String,
        /// The optional text.
        text: Option<String>,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "io: {e}"),
            ClientError::Tls(e) => write!(f, "tls: {e}"),
            ClientError::Xml(e) => write!(f, "xml from server: {e}"),
            ClientError::Timeout(w) => write!(f, "timeout waiting for {w}"),
            ClientError::Closed => f.write_str("connection closed by server"),
            ClientError::StreamError { condition, text } => {
                write!(f, "stream error {condition}")?;
                if let Some(t) = text {
                    write!(f, ": {t}")?;
                }
                Ok(())
            }
            ClientError::Protocol(e) => write!(f, "protocol: {e}"),
            ClientError::Sasl(e) => write!(f, "sasl: {e}"),
            ClientError::ServerProofMismatch => f.write_str("server FAST proof does not verify"),
            ClientError::AuthFailed { condition, text } => {
                write!(f, "authentication failed: {condition}")?;
                if let Some(t) = text {
                    write!(f, " ({t})")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ClientError {}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, ClientError>;

/// How the connection is secured.
#[allow(clippy::enum_variant_names)] // `Tls::StartTls` is the protocol's name for it
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// Plaintext (only for checking that the host refuses SASL2 there).
    None,
    /// Plain TCP, then `<starttls/>`.
    StartTls,
    /// TLS from the first byte (XEP-0368).
    Direct,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Server address.
    pub addr: std::net::SocketAddr,
    /// Security.
    pub tls: Tls,
    /// PEM of the CA (the host's self-signed `cert.pem`) to trust.
    pub ca_pem: Vec<u8>,
    /// XMPP domain (stream `to`) and TLS server name.
    pub domain: String,
    /// Stream `from`: the account's bare JID (F-25), if known.
    pub from: Option<String>,
    /// Bound on every single wait for the server.
    pub timeout: Duration,
    /// Local address to connect from (e.g. another loopback address, to look like another
    /// client to per-address limits); `None` lets the system choose.
    pub source: Option<std::net::IpAddr>,
    /// A rustls client config shared by connections (it holds the client's TLS session
    /// store): connections made with the same one resume TLS sessions, like one real client
    /// reconnecting. `None` = a fresh config per connection, so every handshake is full.
    /// See [`ConnectOptions::with_tls_resumption`].
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
}

impl ConnectOptions {
    /// Options for `localhost` on `addr`, trusting the CA PEM read from `ca_path`.
    pub fn localhost(
        addr: std::net::SocketAddr,
        tls: Tls,
        ca_path: &Path,
        from: Option<&str>,
    ) -> Result<Self> {
        let ca_pem = std::fs::read(ca_path)?;
        Ok(ConnectOptions {
            addr,
            tls,
            ca_pem,
            domain: "localhost".to_owned(),
            from: from.map(str::to_owned),
            timeout: Duration::from_secs(5),
            source: None,
            tls_config: None,
        })
    }

    /// These options with one rustls client config (trusting `ca_pem`) that every
    /// connection made from them, or from their clones, shares: the second connection
    /// resumes the TLS session of the first (a ticket from the server), see
    /// [`Client::tls_resumed`].
    pub fn with_tls_resumption(mut self) -> Result<Self> {
        self.tls_config = Some(client_tls_config(&self.ca_pem)?);
        Ok(self)
    }
}

/// Channel-binding bytes of this client's TLS session.
#[derive(Clone, Default)]
pub struct ChannelBindingData {
    /// RFC 9266 `tls-exporter`.
    pub tls_exporter: Option<Vec<u8>>,
    /// RFC 5929 `tls-server-end-point` (SHA-256 of the server leaf certificate).
    pub tls_server_end_point: Option<Vec<u8>>,
}

impl fmt::Debug for ChannelBindingData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBindingData")
            .field("tls_exporter", &self.tls_exporter.is_some())
            .field("tls_server_end_point", &self.tls_server_end_point.is_some())
            .finish()
    }
}

/// A FAST token as received in `<token>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The secret.
    pub token: String,
    /// XEP-0082 expiry.
    pub expiry: String,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("token", &"[redacted]")
            .field("expiry", &self.expiry)
            .finish()
    }
}

/// A `<success>` (SASL2, or RFC 6120 followed by resource binding).
#[derive(Debug, Clone)]
pub struct Success {
    /// `<authorization-identifier>`.
    pub jid: String,
    /// A `<token>` in urn:xmpp:fast:0, if one was issued.
    pub token: Option<Token>,
    /// Decoded `<additional-data>`.
    pub additional_data: Option<Vec<u8>>,
    /// The `<bound>` element, if Bind 2 ran.
    pub bound: Option<Element>,
    /// The whole `<success>` element (its Debug is redacted: it may hold a token).
    pub element: Redacted,
    /// The `<stream:features>` that followed it.
    pub features: Option<Element>,
}

/// A SASL2 `<failure>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure {
    /// The RFC 6120 condition element name.
    pub condition: String,
    /// The `<text>`, if any.
    pub text: Option<String>,
}

/// The result of one `<authenticate>`.
#[allow(clippy::large_enum_variant)] // one per login; boxing would only complicate matching
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Authenticated.
    Success(Success),
    /// Refused; the stream stays open for a retry.
    Failure(AuthFailure),
}

impl Outcome {
    /// The success, or [`ClientError::AuthFailed`].
    pub fn into_success(self) -> Result<Success> {
        match self {
            Outcome::Success(s) => Ok(s),
            Outcome::Failure(f) => Err(ClientError::AuthFailed {
                condition: f.condition,
                text: f.text,
            }),
        }
    }

    /// The failure, or a protocol error when the login unexpectedly succeeded.
    pub fn into_failure(self) -> Result<AuthFailure> {
        match self {
            Outcome::Failure(f) => Ok(f),
            Outcome::Success(s) => Err(ClientError::Protocol(format!(
                "expected a failure, got success as {}",
                s.jid
            ))),
        }
    }
}

/// Inline requests added to an `<authenticate>`.
#[derive(Debug, Clone, Default)]
pub struct LoginOptions {
    /// `<user-agent id>` (FAST requires one).
    pub user_agent_id: Option<String>,
    /// `<request-token mechanism>` (an HT mechanism name).
    pub request_token: Option<String>,
    /// `<bind xmlns='urn:xmpp:bind:0'>` with this `<tag>` (`Some("")` for no tag).
    pub bind: Option<String>,
    /// `<fast count>` (FAST logins only).
    pub fast_count: Option<u32>,
    /// `<fast invalidate='true'>` (FAST logins only).
    pub invalidate: bool,
}

impl LoginOptions {
    /// Options with a user-agent id.
    pub fn agent(id: &str) -> Self {
        LoginOptions {
            user_agent_id: Some(id.to_owned()),
            ..Default::default()
        }
    }

    /// Adds `<request-token mechanism>`.
    pub fn request_token(mut self, mech: &str) -> Self {
        self.request_token = Some(mech.to_owned());
        self
    }

    /// Adds a Bind 2 request with a tag.
    pub fn bind(mut self, tag: &str) -> Self {
        self.bind = Some(tag.to_owned());
        self
    }

    /// Sets `<fast invalidate='true'>`.
    pub fn invalidate(mut self) -> Self {
        self.invalidate = true;
        self
    }

    /// Sets `<fast count>`.
    pub fn count(mut self, n: u32) -> Self {
        self.fast_count = Some(n);
        self
    }
}

/// An element whose `Debug` keeps secrets out (a `<success>` may hold a FAST token).
#[derive(Clone)]
pub struct Redacted(pub Element);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&sasl2_fast::xmpp::Redacted(&self.0), f)
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Only while switching layers.
    Gone,
}

/// One client connection.
pub struct Client {
    io: Io,
    reader: ClientReader,
    stash: VecDeque<Element>,
    opts: ConnectOptions,
    /// The server's last stream header (the childless `<stream:stream>` element).
    pub header: Option<Element>,
    /// The last `<stream:features>`.
    pub features: Option<Element>,
    /// Channel-binding bytes of the TLS session (empty before TLS).
    pub cb: ChannelBindingData,
    /// Negotiated TLS version.
    pub tls_version: Option<rustls::ProtocolVersion>,
    /// True when the TLS handshake resumed an earlier session (rustls `HandshakeKind::Resumed`).
    pub tls_resumed: bool,
    /// The features of the plaintext stream before STARTTLS.
    pub pre_tls_features: Option<Element>,
    next_id: u64,
    /// A copy of the stream bytes received since [`Client::capture_received`] (the XML as the
    /// server wrote it, after TLS), for tests of what is on the wire.
    received: Option<Vec<u8>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.opts.addr)
            .field("tls_version", &self.tls_version)
            .finish_non_exhaustive()
    }
}

/// A rustls client config trusting `ca_pem`, with rustls' default in-memory session store.
pub fn client_tls_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| ClientError::Tls(format!("CA PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| ClientError::Tls(format!("CA cert: {e}")))?;
        n += 1;
    }
    if n == 0 {
        return Err(ClientError::Tls("no certificate in CA PEM".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The two channel bindings a client computes from its own session. On a resumed session
/// rustls reports the certificate chain stored with the ticket (the one verified in the
/// original full handshake), so `tls-server-end-point` (CB-5) is still the server's leaf.
fn channel_bindings(conn: &rustls::ClientConnection) -> ChannelBindingData {
    let tls_exporter = conn
        .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", Some(b""))
        .ok()
        .map(|b| b.to_vec());
    let tls_server_end_point = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|leaf| sha2::Sha256::digest(leaf.as_ref()).to_vec());
    ChannelBindingData {
        tls_exporter,
        tls_server_end_point,
    }
}

pub(crate) fn text_of(el: &Element, name: &str) -> Option<String> {
    el.children()
        .find(|c| c.name() == name)
        .map(|c| c.text())
        .filter(|t| !t.is_empty())
}

/// The condition of a `<stream:error>` or SASL `<failure>`: the first child that is not `<text>`.
pub(crate) fn condition_of(el: &Element) -> String {
    el.children()
        .find(|c| c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_default()
}

/// Sets an unqualified attribute.
pub(crate) fn with_attr(mut el: Element, name: &str, value: &str) -> Element {
    let name = rxml::NcName::try_from(name).expect("attribute names here are valid NCNames");
    el.set_attr(rxml::Namespace::NONE, name, value);
    el
}

impl Client {
    /// TCP connect, direct TLS or STARTTLS as configured; stops before opening the
    /// (post-TLS) stream. Use [`Client::connect`] for the usual complete sequence.
    pub async fn establish(opts: ConnectOptions) -> Result<Client> {
        let connect = async {
            match opts.source {
                None => TcpStream::connect(opts.addr).await,
                Some(ip) => {
                    let socket = if ip.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()?
                    } else {
                        tokio::net::TcpSocket::new_v6()?
                    };
                    socket.bind(std::net::SocketAddr::new(ip, 0))?;
                    socket.connect(opts.addr).await
                }
            }
        };
        let tcp = tokio::time::timeout(opts.timeout, connect)
            .await
            .map_err(|_| ClientError::Timeout("TCP connect".into()))??;
        tcp.set_nodelay(true)?;
        let mut c = Client {
            io: Io::Plain(tcp),
            reader: ClientReader::new(),
            stash: VecDeque::new(),
            opts,
            header: None,
            features: None,
            cb: ChannelBindingData::default(),
            tls_version: None,
            tls_resumed: false,
            pre_tls_features: None,
            next_id: 0,
            received: None,
        };
        match c.opts.tls {
            Tls::None => {}
            Tls::Direct => c.upgrade().await?,
            Tls::StartTls => {
                c.open_stream().await?;
                c.read_stream_start().await?;
                if c.stream_features().and_then(|f| f.starttls).is_none() {
                    return Err(ClientError::Protocol("STARTTLS not offered".into()));
                }
                c.pre_tls_features = c.features.take();
                c.send(&Element::bare("starttls", ns::TLS)).await?;
                let r = c.recv().await?;
                if !r.is("proceed", ns::TLS) {
                    return Err(Self::unexpected(r, "<proceed/>"));
                }
                c.upgrade().await?;
            }
        }
        Ok(c)
    }

    /// Connects, secures and opens the stream; `features` holds the server's features.
    pub async fn connect(opts: ConnectOptions) -> Result<Client> {
        let mut c = Client::establish(opts).await?;
        c.open_stream().await?;
        c.read_stream_start().await?;
        Ok(c)
    }

    async fn upgrade(&mut self) -> Result<()> {
        let Io::Plain(tcp) = std::mem::replace(&mut self.io, Io::Gone) else {
            return Err(ClientError::Protocol(
                "TLS upgrade on a non-plain socket".into(),
            ));
        };
        let config = match &self.opts.tls_config {
            Some(c) => c.clone(),
            None => client_tls_config(&self.opts.ca_pem)?,
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = ServerName::try_from(self.opts.domain.clone())
            .map_err(|e| ClientError::Tls(format!("server name: {e}")))?;
        let tls = tokio::time::timeout(self.opts.timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| ClientError::Timeout("TLS handshake".into()))?
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let conn = tls.get_ref().1;
        self.cb = channel_bindings(conn);
        self.tls_version = conn.protocol_version();
        self.tls_resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        self.io = Io::Tls(Box::new(tls));
        self.reset_stream();
        Ok(())
    }

    /// Forgets the stream state: after TLS, and after RFC 6120 SASL success (§6.4.6).
    fn reset_stream(&mut self) {
        self.reader = ClientReader::new();
        self.stash.clear();
    }

    /// Starts keeping a copy of every stream byte read from the server from now on (what TLS
    /// decrypted; bytes already read and buffered are not included). The copy may hold a FAST
    /// token: compare it, never print it.
    pub fn capture_received(&mut self) {
        self.received = Some(Vec::new());
    }

    /// The bytes captured since [`Client::capture_received`] or the last call; capturing goes
    /// on.
    pub fn take_received(&mut self) -> Vec<u8> {
        self.received
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Changes the bound on each single wait.
    pub fn set_timeout(&mut self, t: Duration) {
        self.opts.timeout = t;
    }

    /// True once TLS is up.
    pub fn is_tls(&self) -> bool {
        matches!(self.io, Io::Tls(_))
    }

    /// The options this client connected with.
    pub fn options(&self) -> &ConnectOptions {
        &self.opts
    }

    /// The stream header this client sends (`to` = domain, `from` = bare JID, version 1.0).
    pub fn header_xml(&self) -> String {
        stream_header_xml(
            ns::JABBER_CLIENT,
            self.opts.from.as_deref(),
            Some(&self.opts.domain),
            None,
            Some("1.0"),
            Some("en"),
        )
    }

    /// Sends the stream header.
    pub async fn open_stream(&mut self) -> Result<()> {
        let h = self.header_xml();
        self.send_raw(h.as_bytes()).await
    }

    /// Reads the server's stream header and `<stream:features>`.
    pub async fn read_stream_start(&mut self) -> Result<&Element> {
        self.header = None;
        match self.next_event("stream header").await? {
            ClientEvent::Header(h) => self.header = Some(h),
            ClientEvent::Element(e) => return Err(Self::unexpected(e, "stream header")),
            ClientEvent::End => return Err(ClientError::Closed),
        }
        let f = self.recv().await?;
        if !f.is("features", ns::STREAM) {
            return Err(Self::unexpected(f, "<stream:features>"));
        }
        Ok(self.features.insert(f))
    }

    /// The last `<stream:features>`, read with xmpp-parsers.
    pub fn stream_features(&self) -> Option<StreamFeatures> {
        StreamFeatures::try_from(self.features.clone()?).ok()
    }

    fn unexpected(e: Element, wanted: &str) -> ClientError {
        if e.is("error", ns::STREAM) {
            ClientError::StreamError {
                condition: condition_of(&e),
                text: text_of(&e, "text"),
            }
        } else {
            ClientError::Protocol(format!(
                "expected {wanted}, got {:?}",
                sasl2_fast::xmpp::Redacted(&e)
            ))
        }
    }

    /// Writes raw bytes (for hostile input too).
    pub async fn send_raw(&mut self, data: &[u8]) -> Result<()> {
        let t = self.opts.timeout;
        let fut = async {
            match &mut self.io {
                Io::Plain(s) => {
                    s.write_all(data).await?;
                    s.flush().await
                }
                Io::Tls(s) => {
                    s.write_all(data).await?;
                    s.flush().await
                }
                Io::Gone => Err(std::io::ErrorKind::NotConnected.into()),
            }
        };
        tokio::time::timeout(t, fut)
            .await
            .map_err(|_| ClientError::Timeout("write".into()))??;
        Ok(())
    }

    /// Sends one element, serialized by minidom (which declares its namespace).
    pub async fn send(&mut self, el: &Element) -> Result<()> {
        let mut buf = Vec::new();
        el.write_to(&mut buf)
            .map_err(|e| ClientError::Protocol(format!("cannot serialize: {e}")))?;
        self.send_raw(&buf).await
    }

    async fn read_more(&mut self, what: &str) -> Result<()> {
        let mut buf = [0u8; 16 * 1024];
        let t = self.opts.timeout;
        let fut = async {
            match &mut self.io {
                Io::Plain(s) => s.read(&mut buf).await,
                Io::Tls(s) => s.read(&mut buf).await,
                Io::Gone => Err(std::io::ErrorKind::NotConnected.into()),
            }
        };
        let n = match tokio::time::timeout(t, fut).await {
            Err(_) => return Err(ClientError::Timeout(what.to_owned())),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(ClientError::Closed);
            }
            Ok(r) => r?,
        };
        if n == 0 {
            return Err(ClientError::Closed);
        }
        if let Some(r) = &mut self.received {
            r.extend_from_slice(&buf[..n]);
        }
        self.reader.feed(&buf[..n]).map_err(ClientError::Xml)?;
        Ok(())
    }

    async fn next_event(&mut self, what: &str) -> Result<ClientEvent> {
        loop {
            if let Some(ev) = self.reader.next_event().map_err(ClientError::Xml)? {
                return Ok(ev);
            }
            self.read_more(what).await?;
        }
    }

    /// The next top-level element, `<stream:error>` included (hostile-input tests want to see
    /// it); [`ClientError::Closed`] when the stream ends.
    pub async fn recv_any(&mut self) -> Result<Element> {
        if let Some(e) = self.stash.pop_front() {
            return Ok(e);
        }
        loop {
            match self.next_event("an element").await? {
                ClientEvent::Element(e) => return Ok(e),
                ClientEvent::Header(h) => self.header = Some(h),
                ClientEvent::End => return Err(ClientError::Closed),
            }
        }
    }

    /// The next element; a `<stream:error>` becomes [`ClientError::StreamError`].
    pub async fn recv(&mut self) -> Result<Element> {
        let e = self.recv_any().await?;
        if e.is("error", ns::STREAM) {
            return Err(Self::unexpected(e, ""));
        }
        Ok(e)
    }

    /// Waits for the first element matching `pred`, keeping the others for later `recv`s.
    pub async fn recv_matching(&mut self, pred: impl Fn(&Element) -> bool) -> Result<Element> {
        let mut skipped = Vec::new();
        let r = loop {
            match self.recv().await {
                Ok(e) if pred(&e) => break Ok(e),
                Ok(e) => skipped.push(e),
                Err(e) => break Err(e),
            }
        };
        for e in skipped.into_iter().rev() {
            self.stash.push_front(e);
        }
        r
    }

    /// Sends `</stream:stream>` and waits (bounded) for the server's.
    pub async fn close(&mut self) -> Result<()> {
        self.send_raw(STREAM_FOOTER.as_bytes()).await?;
        loop {
            match self.recv_any().await {
                Err(ClientError::Closed) => return Ok(()),
                Err(e) => return Err(e),
                Ok(_) => {}
            }
        }
    }

    fn fresh_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }

    /// XEP-0199 ping to the server; waits for the matching result.
    pub async fn ping(&mut self) -> Result<()> {
        let id = self.fresh_id("ping");
        let to = jid::Jid::new(&self.opts.domain)
            .map_err(|e| ClientError::Protocol(format!("domain: {e}")))?;
        let mut iq = xmpp_parsers::iq::Iq::from_get(id.clone(), xmpp_parsers::ping::Ping);
        if let xmpp_parsers::iq::Iq::Get { to: t, .. } = &mut iq {
            *t = Some(to);
        }
        self.send(&Element::from(iq)).await?;
        let r = self
            .recv_matching(|e| e.is("iq", ns::JABBER_CLIENT) && e.attr("id") == Some(id.as_str()))
            .await?;
        match r.attr("type") {
            Some("result") => Ok(()),
            t => Err(ClientError::Protocol(format!(
                "ping answered with type {t:?}"
            ))),
        }
    }

    /// RFC 6120 §7 resource binding; returns the bound full JID.
    pub async fn bind(&mut self, resource: Option<&str>) -> Result<String> {
        let id = self.fresh_id("bind");
        let query = xmpp_parsers::bind::BindQuery::new(resource.map(str::to_owned));
        let iq = xmpp_parsers::iq::Iq::from_set(id.clone(), query);
        self.send(&Element::from(iq)).await?;
        let r = self
            .recv_matching(|e| e.is("iq", ns::JABBER_CLIENT) && e.attr("id") == Some(id.as_str()))
            .await?;
        let jid = r
            .get_child("bind", ns::BIND)
            .and_then(|b| xmpp_parsers::bind::BindResponse::try_from(b.clone()).ok())
            .ok_or_else(|| ClientError::Protocol("bind without a JID in the result".into()))?;
        Ok(jid.jid.to_string())
    }

    /// Sends a chat `<message>` with a body.
    pub async fn send_message(&mut self, to: &str, body: &str) -> Result<()> {
        let id = self.fresh_id("msg");
        let m = Element::builder("message", ns::JABBER_CLIENT)
            .append(
                sasl2_fast::minidom::Element::builder("body", ns::JABBER_CLIENT)
                    .append(body)
                    .build(),
            )
            .build();
        let m = with_attr(with_attr(with_attr(m, "type", "chat"), "to", to), "id", &id);
        self.send(&m).await
    }

    /// Waits for the next `<message>` with a `<body>`.
    pub async fn recv_message(&mut self) -> Result<Element> {
        self.recv_matching(|e| {
            e.is("message", ns::JABBER_CLIENT) && e.get_child("body", ns::JABBER_CLIENT).is_some()
        })
        .await
    }
}

/// Whether `el` is a `<stream:error>` with `condition`.
pub fn is_stream_error(el: &Element, condition: &str) -> bool {
    el.is("error", ns::STREAM) && el.children().any(|c| c.is(condition, ns::XMPP_STREAMS))
}
