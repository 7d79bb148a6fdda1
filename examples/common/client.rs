//! A small async XMPP client for the example host: TCP, STARTTLS or direct TLS (rustls), SASL2
//! with SCRAM (the independent `sasl` crate), PLAIN and FAST (HT), Bind 2, ping and messages.
//!
//! Used by the TCP integration tests and meant for a load generator, so nothing here panics on
//! peer input: every failure is a [`ClientError`]. Channel-binding bytes are computed from the
//! live TLS session exactly as a real client does, never taken from the server.
//!
//! Include it with `#[path = "../examples/common/client.rs"] mod client;`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sasl::client::Mechanism as _;
use sasl2_fast::fast::HtMechanism;
use sasl2_fast::fast::ht::HtBinding;
use sasl2_fast::xml::reader::{
    Limits, STREAM_FOOTER, StreamEvent, StreamHeader, StreamReader, XmlError, stream_header_xml,
};
use sasl2_fast::xml::{
    Element, NS_BIND2, NS_CLIENT, NS_FAST, NS_PING, NS_SASL, NS_SASL2, NS_STREAM, NS_STREAM_ERRORS,
    NS_TLS,
};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

/// Everything that can go wrong on the client side.
#[derive(Debug)]
pub enum ClientError {
    /// Socket error.
    Io(std::io::Error),
    /// TLS configuration or handshake error.
    Tls(String),
    /// The server sent bytes the stream reader rejected.
    Xml(XmlError),
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

impl From<XmlError> for ClientError {
    fn from(e: XmlError) -> Self {
        ClientError::Xml(e)
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
        })
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

/// A `<success>`.
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
    /// The whole `<success>` element.
    pub element: Element,
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

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Only while switching layers.
    Gone,
}

/// One client connection.
pub struct Client {
    io: Io,
    reader: StreamReader,
    stash: VecDeque<Element>,
    opts: ConnectOptions,
    /// The server's last stream header.
    pub header: Option<StreamHeader>,
    /// The last `<stream:features>`.
    pub features: Option<Element>,
    /// Channel-binding bytes of the TLS session (empty before TLS).
    pub cb: ChannelBindingData,
    /// Negotiated TLS version.
    pub tls_version: Option<rustls::ProtocolVersion>,
    /// The features of the plaintext stream before STARTTLS.
    pub pre_tls_features: Option<Element>,
    next_id: u64,
}

fn tls_connector(ca_pem: &[u8]) -> Result<tokio_rustls::TlsConnector> {
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
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The two channel bindings a client computes from its own session.
fn channel_bindings(conn: &rustls::ClientConnection) -> Result<ChannelBindingData> {
    let tls_exporter = conn
        .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", Some(b""))
        .ok()
        .map(|b| b.to_vec());
    let tls_server_end_point = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|leaf| sha2::Sha256::digest(leaf.as_ref()).to_vec());
    Ok(ChannelBindingData {
        tls_exporter,
        tls_server_end_point,
    })
}

fn text_of(el: &Element, name: &str) -> Option<String> {
    el.children()
        .find(|c| c.name() == name)
        .map(|c| c.text())
        .filter(|t| !t.is_empty())
}

/// The condition of a `<stream:error>` or SASL `<failure>`: the first child that is not `<text>`.
fn condition_of(el: &Element) -> String {
    el.children()
        .find(|c| c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_default()
}

impl Client {
    /// TCP connect, direct TLS or STARTTLS as configured; stops before opening the
    /// (post-TLS) stream. Use [`Client::connect`] for the usual complete sequence.
    pub async fn establish(opts: ConnectOptions) -> Result<Client> {
        let tcp = tokio::time::timeout(opts.timeout, TcpStream::connect(opts.addr))
            .await
            .map_err(|_| ClientError::Timeout("TCP connect".into()))??;
        tcp.set_nodelay(true)?;
        let mut c = Client {
            io: Io::Plain(tcp),
            reader: StreamReader::new(Limits {
                max_element_bytes: 1 << 20,
                ..Limits::default()
            }),
            stash: VecDeque::new(),
            opts,
            header: None,
            features: None,
            cb: ChannelBindingData::default(),
            tls_version: None,
            pre_tls_features: None,
            next_id: 0,
        };
        match c.opts.tls {
            Tls::None => {}
            Tls::Direct => c.upgrade().await?,
            Tls::StartTls => {
                c.open_stream().await?;
                c.read_stream_start().await?;
                let offered = c
                    .features
                    .as_ref()
                    .is_some_and(|f| f.get_child("starttls", NS_TLS).is_some());
                if !offered {
                    return Err(ClientError::Protocol("STARTTLS not offered".into()));
                }
                c.pre_tls_features = c.features.take();
                c.send(&Element::new("starttls", NS_TLS)).await?;
                let r = c.recv().await?;
                if !r.is("proceed", NS_TLS) {
                    return Err(ClientError::Protocol(format!(
                        "expected <proceed/>, got {r:?}"
                    )));
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
        let connector = tls_connector(&self.opts.ca_pem)?;
        let name = ServerName::try_from(self.opts.domain.clone())
            .map_err(|e| ClientError::Tls(format!("server name: {e}")))?;
        let tls = tokio::time::timeout(self.opts.timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| ClientError::Timeout("TLS handshake".into()))?
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let conn = tls.get_ref().1;
        self.cb = channel_bindings(conn)?;
        self.tls_version = conn.protocol_version();
        self.io = Io::Tls(Box::new(tls));
        self.reader.reset();
        self.stash.clear();
        Ok(())
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
            NS_CLIENT,
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
            StreamEvent::Header(h) => self.header = Some(h),
            StreamEvent::Element(e) => return Err(Self::unexpected(e, "stream header")),
            StreamEvent::End => return Err(ClientError::Closed),
        }
        let f = self.recv().await?;
        if !f.is("features", NS_STREAM) {
            return Err(ClientError::Protocol(format!(
                "expected <stream:features>, got {f:?}"
            )));
        }
        Ok(self.features.insert(f))
    }

    fn unexpected(e: Element, wanted: &str) -> ClientError {
        if e.is("error", NS_STREAM) {
            ClientError::StreamError {
                condition: condition_of(&e),
                text: text_of(&e, "text"),
            }
        } else {
            ClientError::Protocol(format!("expected {wanted}, got {e:?}"))
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

    /// Sends one element (`jabber:client` elements without `xmlns`).
    pub async fn send(&mut self, el: &Element) -> Result<()> {
        let xml = el.to_xml_in(NS_CLIENT);
        self.send_raw(xml.as_bytes()).await
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
        self.reader.feed(&buf[..n])?;
        Ok(())
    }

    async fn next_event(&mut self, what: &str) -> Result<StreamEvent> {
        loop {
            if let Some(ev) = self.reader.next_event()? {
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
                StreamEvent::Element(e) => return Ok(e),
                StreamEvent::Header(h) => self.header = Some(h),
                StreamEvent::End => return Err(ClientError::Closed),
            }
        }
    }

    /// The next element; a `<stream:error>` becomes [`ClientError::StreamError`].
    pub async fn recv(&mut self) -> Result<Element> {
        let e = self.recv_any().await?;
        if e.is("error", NS_STREAM) {
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

    /// The SASL2 `<authentication>` feature, if offered.
    pub fn sasl2_feature(&self) -> Option<&Element> {
        self.features
            .as_ref()?
            .get_child("authentication", NS_SASL2)
    }

    /// Top-level SASL2 mechanisms offered.
    pub fn mechanisms(&self) -> Vec<String> {
        self.sasl2_feature()
            .map(|a| {
                a.children()
                    .filter(|c| c.is("mechanism", NS_SASL2))
                    .map(|c| c.text())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// HT mechanisms offered inside `<inline><fast>`.
    pub fn fast_mechanisms(&self) -> Vec<String> {
        self.sasl2_feature()
            .and_then(|a| a.get_child("inline", NS_SASL2))
            .and_then(|i| i.get_child("fast", NS_FAST))
            .map(|f| {
                f.children()
                    .filter(|c| c.is("mechanism", NS_FAST))
                    .map(|c| c.text())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Builds an `<authenticate>` with the inline requests of `opts`.
    pub fn authenticate_element(
        mechanism: &str,
        initial_response: Option<&[u8]>,
        opts: &LoginOptions,
        fast: bool,
    ) -> Element {
        let mut a = Element::new("authenticate", NS_SASL2).with_attr("mechanism", mechanism);
        if let Some(ir) = initial_response {
            let text = if ir.is_empty() {
                "=".to_owned()
            } else {
                B64.encode(ir)
            };
            a.push_child(Element::new("initial-response", NS_SASL2).with_text(text));
        }
        if let Some(id) = &opts.user_agent_id {
            a.push_child(
                Element::new("user-agent", NS_SASL2)
                    .with_attr("id", id.clone())
                    .with_child(Element::new("software", NS_SASL2).with_text("sasl2-fast-client"))
                    .with_child(Element::new("device", NS_SASL2).with_text("test")),
            );
        }
        if let Some(tag) = &opts.bind {
            let mut b = Element::new("bind", NS_BIND2);
            if !tag.is_empty() {
                b.push_child(Element::new("tag", NS_BIND2).with_text(tag.clone()));
            }
            a.push_child(b);
        }
        if fast {
            let mut f = Element::new("fast", NS_FAST);
            if let Some(n) = opts.fast_count {
                f.set_attr("count", n.to_string());
            }
            if opts.invalidate {
                f.set_attr("invalidate", "true");
            }
            a.push_child(f);
        }
        if let Some(m) = &opts.request_token {
            a.push_child(Element::new("request-token", NS_FAST).with_attr("mechanism", m.clone()));
        }
        a
    }

    /// Reads the answer to an `<authenticate>` / `<response>`: a challenge (returned as
    /// `Ok(Err(bytes))`), or a final success/failure.
    pub async fn read_auth_step(&mut self) -> Result<std::result::Result<Outcome, Vec<u8>>> {
        let e = self.recv().await?;
        if e.is("challenge", NS_SASL2) {
            let data = B64
                .decode(e.text().trim())
                .map_err(|_| ClientError::Protocol("challenge is not base64".into()))?;
            return Ok(Err(data));
        }
        if e.is("failure", NS_SASL2) {
            let condition = e
                .children()
                .find(|c| c.ns() == NS_SASL)
                .map(|c| c.name().to_owned())
                .ok_or_else(|| {
                    ClientError::Protocol(format!("failure without condition: {e:?}"))
                })?;
            return Ok(Ok(Outcome::Failure(AuthFailure {
                condition,
                text: text_of(&e, "text"),
            })));
        }
        if e.is("success", NS_SASL2) {
            let additional_data =
                match e.get_child("additional-data", NS_SASL2) {
                    None => None,
                    Some(a) => Some(B64.decode(a.text().trim()).map_err(|_| {
                        ClientError::Protocol("additional-data is not base64".into())
                    })?),
                };
            let jid = e
                .get_child("authorization-identifier", NS_SASL2)
                .map(|j| j.text())
                .ok_or_else(|| {
                    ClientError::Protocol("success without authorization-identifier".into())
                })?;
            let token = match e.get_child("token", NS_FAST) {
                None => None,
                Some(t) => Some(Token {
                    token: t
                        .attr("token")
                        .ok_or_else(|| ClientError::Protocol("token without secret".into()))?
                        .to_owned(),
                    expiry: t.attr("expiry").unwrap_or_default().to_owned(),
                }),
            };
            let bound = e.get_child("bound", NS_BIND2).cloned();
            let features = self.recv().await?;
            if !features.is("features", NS_STREAM) {
                return Err(ClientError::Protocol(format!(
                    "expected <stream:features> after success, got {features:?}"
                )));
            }
            self.features = Some(features.clone());
            return Ok(Ok(Outcome::Success(Success {
                jid,
                token,
                additional_data,
                bound,
                element: e,
                features: Some(features),
            })));
        }
        Err(Self::unexpected(e, "challenge, success or failure"))
    }

    /// SCRAM login with the `sasl` crate. `mechanism` is `SCRAM-SHA-1`, `SCRAM-SHA-256` or
    /// `SCRAM-SHA-256-PLUS` (the latter binds to this session's `tls-exporter`). The server
    /// signature in `<additional-data>` is verified.
    pub async fn login_scram(
        &mut self,
        user: &str,
        password: &str,
        mechanism: &str,
        opts: &LoginOptions,
    ) -> Result<Outcome> {
        use sasl::common::{ChannelBinding, Credentials};
        let cb = if mechanism.ends_with("-PLUS") {
            let b =
                self.cb.tls_exporter.clone().ok_or_else(|| {
                    ClientError::Protocol("no tls-exporter on this stream".into())
                })?;
            ChannelBinding::TlsExporter(b)
        } else {
            ChannelBinding::None
        };
        let creds = Credentials::default()
            .with_username(user)
            .with_password(password)
            .with_channel_binding(cb);
        let sasl_err = |e: sasl::client::MechanismError| ClientError::Sasl(e.to_string());
        let mut mech: Box<dyn sasl::client::Mechanism + Send> = match mechanism {
            "SCRAM-SHA-1" => Box::new(
                sasl::client::mechanisms::Scram::<sasl::common::scram::Sha1>::from_credentials(
                    creds,
                )
                .map_err(sasl_err)?,
            ),
            "SCRAM-SHA-256" | "SCRAM-SHA-256-PLUS" => Box::new(
                sasl::client::mechanisms::Scram::<sasl::common::scram::Sha256>::from_credentials(
                    creds,
                )
                .map_err(sasl_err)?,
            ),
            other => {
                return Err(ClientError::Sasl(format!(
                    "unsupported SCRAM mechanism {other}"
                )));
            }
        };
        if mech.name() != mechanism {
            return Err(ClientError::Sasl(format!(
                "sasl crate chose {} for {mechanism}",
                mech.name()
            )));
        }
        let initial = mech.initial();
        let auth = Self::authenticate_element(mechanism, Some(&initial), opts, false);
        self.send(&auth).await?;
        loop {
            match self.read_auth_step().await? {
                Err(challenge) => {
                    let resp = mech.response(&challenge).map_err(sasl_err)?;
                    self.send(&Element::new("response", NS_SASL2).with_text(B64.encode(resp)))
                        .await?;
                }
                Ok(Outcome::Success(s)) => {
                    let data = s.additional_data.as_deref().ok_or_else(|| {
                        ClientError::Sasl("SCRAM success without server signature".into())
                    })?;
                    mech.success(data).map_err(sasl_err)?;
                    return Ok(Outcome::Success(s));
                }
                Ok(f) => return Ok(f),
            }
        }
    }

    /// PLAIN login (`\0user\0password`).
    pub async fn login_plain(
        &mut self,
        user: &str,
        password: &str,
        opts: &LoginOptions,
    ) -> Result<Outcome> {
        let mut ir = vec![0u8];
        ir.extend_from_slice(user.as_bytes());
        ir.push(0);
        ir.extend_from_slice(password.as_bytes());
        let auth = Self::authenticate_element("PLAIN", Some(&ir), opts, false);
        self.send(&auth).await?;
        match self.read_auth_step().await? {
            Ok(o) => Ok(o),
            Err(_) => Err(ClientError::Protocol("challenge for PLAIN".into())),
        }
    }

    /// The channel-binding bytes `mech` needs on this session (empty for `-NONE`).
    pub fn cb_for(&self, mech: HtMechanism) -> Result<Vec<u8>> {
        let missing = |t: &str| ClientError::Protocol(format!("no {t} on this stream"));
        match mech.binding {
            HtBinding::None => Ok(Vec::new()),
            HtBinding::Exporter => self
                .cb
                .tls_exporter
                .clone()
                .ok_or_else(|| missing("tls-exporter")),
            HtBinding::EndPoint => self
                .cb
                .tls_server_end_point
                .clone()
                .ok_or_else(|| missing("tls-server-end-point")),
            HtBinding::Unique => Err(missing("tls-unique")),
        }
    }

    /// The HT initiator message `authcid || 0x00 || HMAC(token, "Initiator" || cb)` for this
    /// session.
    pub fn fast_initial_response(
        &self,
        user: &str,
        token: &str,
        mechanism: &str,
    ) -> Result<Vec<u8>> {
        let m = HtMechanism::from_name(mechanism)
            .ok_or_else(|| ClientError::Sasl(format!("unknown HT mechanism {mechanism}")))?;
        let cb = self.cb_for(m)?;
        Ok(m.initiator_message(user, token.as_bytes(), &cb))
    }

    /// FAST login with `token`; the server's `<additional-data>` must equal
    /// `HMAC(token, "Responder" || cb)` of this session, else [`ClientError::ServerProofMismatch`].
    pub async fn login_fast(
        &mut self,
        user: &str,
        token: &str,
        mechanism: &str,
        opts: &LoginOptions,
    ) -> Result<Outcome> {
        let msg = self.fast_initial_response(user, token, mechanism)?;
        self.login_fast_message(&msg, token, mechanism, opts).await
    }

    /// FAST login with a given initiator message (e.g. one replayed from another session);
    /// a success is still checked against `token` and this session's channel binding.
    pub async fn login_fast_message(
        &mut self,
        message: &[u8],
        token: &str,
        mechanism: &str,
        opts: &LoginOptions,
    ) -> Result<Outcome> {
        HtMechanism::from_name(mechanism)
            .ok_or_else(|| ClientError::Sasl(format!("unknown HT mechanism {mechanism}")))?;
        let auth = Self::authenticate_element(mechanism, Some(message), opts, true);
        self.send(&auth).await?;
        self.read_fast_outcome(token, mechanism).await
    }

    /// Reads the answer to a FAST `<authenticate>` already sent (e.g. pipelined) and checks
    /// the server proof against `token` and this session's channel binding.
    pub async fn read_fast_outcome(&mut self, token: &str, mechanism: &str) -> Result<Outcome> {
        let m = HtMechanism::from_name(mechanism)
            .ok_or_else(|| ClientError::Sasl(format!("unknown HT mechanism {mechanism}")))?;
        match self.read_auth_step().await? {
            Err(_) => Err(ClientError::Protocol(
                "the server sent a challenge for HT".into(),
            )),
            Ok(Outcome::Success(s)) => {
                let expected = m.responder_mac(token.as_bytes(), &self.cb_for(m)?);
                if s.additional_data.as_deref() != Some(expected.as_slice()) {
                    return Err(ClientError::ServerProofMismatch);
                }
                Ok(Outcome::Success(s))
            }
            Ok(f) => Ok(f),
        }
    }

    /// XEP-0199 ping to the server; waits for the matching result.
    pub async fn ping(&mut self) -> Result<()> {
        let id = self.fresh_id("ping");
        let iq = Element::new("iq", NS_CLIENT)
            .with_attr("type", "get")
            .with_attr("id", id.clone())
            .with_attr("to", self.opts.domain.clone())
            .with_child(Element::new("ping", NS_PING));
        self.send(&iq).await?;
        let r = self
            .recv_matching(|e| e.is("iq", NS_CLIENT) && e.attr("id") == Some(id.as_str()))
            .await?;
        match r.attr("type") {
            Some("result") => Ok(()),
            t => Err(ClientError::Protocol(format!(
                "ping answered with type {t:?}: {r:?}"
            ))),
        }
    }

    /// Sends a chat `<message>` with a body.
    pub async fn send_message(&mut self, to: &str, body: &str) -> Result<()> {
        let id = self.fresh_id("msg");
        let m = Element::new("message", NS_CLIENT)
            .with_attr("type", "chat")
            .with_attr("to", to)
            .with_attr("id", id)
            .with_child(Element::new("body", NS_CLIENT).with_text(body));
        self.send(&m).await
    }

    /// Waits for the next `<message>` with a `<body>`.
    pub async fn recv_message(&mut self) -> Result<Element> {
        self.recv_matching(|e| {
            e.is("message", NS_CLIENT) && e.get_child("body", NS_CLIENT).is_some()
        })
        .await
    }
}

/// Whether `el` is a `<stream:error>` with `condition`.
pub fn is_stream_error(el: &Element, condition: &str) -> bool {
    el.is("error", NS_STREAM) && el.children().any(|c| c.is(condition, NS_STREAM_ERRORS))
}
