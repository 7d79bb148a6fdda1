//! Logging in: SASL2 with SCRAM (the `sasl` crate), PLAIN and FAST, and RFC 6120 SASL. Answers
//! are read through xmpp-parsers types (`sasl2::Success`, `sasl2::Challenge`, `fast::Token`,
//! ...); `<authenticate>` is built with minidom because the client must also send what
//! xmpp-parsers cannot express (no `<user-agent>`, non-UUID ids, `<fast>` without `count`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use minidom::Element;
use sasl::client::Mechanism as _;
use sasl2_fast::fast::HtMechanism;
use sasl2_fast::fast::ht::HtBinding;
use sasl2_fast::xmpp::ns;
use xmpp_parsers::fast::FastQuery;

use super::{
    AuthFailure, Client, ClientError, LoginOptions, Outcome, Redacted, Result, Success, Token,
    text_of, with_attr,
};

fn text_el(name: &str, namespace: &str, text: &str) -> Element {
    Element::builder(name, namespace).append(text).build()
}

impl Client {
    /// Top-level SASL2 mechanisms offered.
    pub fn mechanisms(&self) -> Vec<String> {
        self.stream_features()
            .and_then(|f| f.sasl2)
            .map(|a| a.mechanisms)
            .unwrap_or_default()
    }

    /// RFC 6120 SASL mechanisms offered (sorted: xmpp-parsers keeps them in a set).
    pub fn rfc6120_mechanisms(&self) -> Vec<String> {
        self.stream_features()
            .map(|f| f.sasl_mechanisms.into_iter().collect())
            .unwrap_or_default()
    }

    /// HT mechanisms offered inside `<inline><fast>`.
    pub fn fast_mechanisms(&self) -> Vec<String> {
        self.stream_features()
            .and_then(|f| f.sasl2)
            .and_then(|a| a.inline)
            .and_then(|i| {
                i.payloads
                    .into_iter()
                    .find(|p| p.is("fast", ns::FAST))
                    .and_then(|p| FastQuery::try_from(p).ok())
            })
            .map(|q| q.mechanisms.into_iter().map(|m| m.0).collect())
            .unwrap_or_default()
    }

    /// Builds an `<authenticate>` with the inline requests of `opts`.
    pub fn authenticate_element(
        mechanism: &str,
        initial_response: Option<&[u8]>,
        opts: &LoginOptions,
        fast: bool,
    ) -> Element {
        let mut a = with_attr(
            Element::bare("authenticate", ns::SASL2),
            "mechanism",
            mechanism,
        );
        if let Some(ir) = initial_response {
            let text = if ir.is_empty() {
                "=".to_owned()
            } else {
                B64.encode(ir)
            };
            a.append_child(text_el("initial-response", ns::SASL2, &text));
        }
        if let Some(id) = &opts.user_agent_id {
            let ua = Element::builder("user-agent", ns::SASL2)
                .append(text_el("software", ns::SASL2, "sasl2-fast-client"))
                .append(text_el("device", ns::SASL2, "test"))
                .build();
            a.append_child(with_attr(ua, "id", id));
        }
        if let Some(tag) = &opts.bind {
            let mut b = Element::bare("bind", ns::BIND2);
            if !tag.is_empty() {
                b.append_child(text_el("tag", ns::BIND2, tag));
            }
            a.append_child(b);
        }
        if fast {
            let mut f = Element::bare("fast", ns::FAST);
            if let Some(n) = opts.fast_count {
                f = with_attr(f, "count", &n.to_string());
            }
            if opts.invalidate {
                f = with_attr(f, "invalidate", "true");
            }
            a.append_child(f);
        }
        if let Some(m) = &opts.request_token {
            a.append_child(with_attr(
                Element::bare("request-token", ns::FAST),
                "mechanism",
                m,
            ));
        }
        a
    }

    fn failure_of(e: &Element) -> Result<AuthFailure> {
        let condition = e
            .children()
            .find(|c| c.has_ns(ns::SASL))
            .map(|c| c.name().to_owned())
            .ok_or_else(|| ClientError::Protocol("failure without condition".into()))?;
        Ok(AuthFailure {
            condition,
            text: text_of(e, "text"),
        })
    }

    /// Reads the answer to an `<authenticate>` / `<response>`: a challenge (returned as
    /// `Ok(Err(bytes))`), or a final success/failure.
    pub async fn read_auth_step(&mut self) -> Result<std::result::Result<Outcome, Vec<u8>>> {
        let e = self.recv().await?;
        if e.is("challenge", ns::SASL2) {
            let c = xmpp_parsers::sasl2::Challenge::try_from(e)
                .map_err(|_| ClientError::Protocol("challenge is not base64".into()))?;
            return Ok(Err(c.sasl_data));
        }
        if e.is("failure", ns::SASL2) {
            return Ok(Ok(Outcome::Failure(Self::failure_of(&e)?)));
        }
        if e.is("success", ns::SASL2) {
            let s = xmpp_parsers::sasl2::Success::try_from(e.clone())
                .map_err(|err| ClientError::Protocol(format!("unreadable <success>: {err}")))?;
            let mut token = None;
            let mut bound = None;
            for p in s.payloads {
                if p.is("token", ns::FAST) {
                    let t = xmpp_parsers::fast::Token::try_from(p).map_err(|err| {
                        ClientError::Protocol(format!("unreadable <token>: {err}"))
                    })?;
                    token = Some(Token {
                        token: t.token,
                        expiry: t.expiry.format("%Y-%m-%dT%H:%M:%SZ"),
                    });
                } else if p.is("bound", ns::BIND2) {
                    bound = Some(p);
                }
            }
            let features = self.recv().await?;
            if !features.is("features", ns::STREAM) {
                return Err(Self::unexpected(
                    features,
                    "<stream:features> after success",
                ));
            }
            self.features = Some(features.clone());
            return Ok(Ok(Outcome::Success(Success {
                jid: s.authorization_identifier.to_string(),
                token,
                additional_data: s.additional_data,
                bound,
                element: Redacted(e),
                features: Some(features),
            })));
        }
        Err(Self::unexpected(e, "challenge, success or failure"))
    }

    fn scram(
        &self,
        user: &str,
        password: &str,
        mechanism: &str,
    ) -> Result<Box<dyn sasl::client::Mechanism + Send>> {
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
        let mech: Box<dyn sasl::client::Mechanism + Send> = match mechanism {
            "SCRAM-SHA-1" | "SCRAM-SHA-1-PLUS" => Box::new(
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
        Ok(mech)
    }

    /// SCRAM login with the `sasl` crate over SASL2. `mechanism` is `SCRAM-SHA-1`,
    /// `SCRAM-SHA-256` or `SCRAM-SHA-256-PLUS` (the latter binds to this session's
    /// `tls-exporter`). The server signature in `<additional-data>` is verified.
    pub async fn login_scram(
        &mut self,
        user: &str,
        password: &str,
        mechanism: &str,
        opts: &LoginOptions,
    ) -> Result<Outcome> {
        let sasl_err = |e: sasl::client::MechanismError| ClientError::Sasl(e.to_string());
        let mut mech = self.scram(user, password, mechanism)?;
        let initial = mech.initial();
        let auth = Self::authenticate_element(mechanism, Some(&initial), opts, false);
        self.send(&auth).await?;
        loop {
            match self.read_auth_step().await? {
                Err(challenge) => {
                    let resp = mech.response(&challenge).map_err(sasl_err)?;
                    let r = xmpp_parsers::sasl2::Response { sasl_data: resp };
                    self.send(&Element::from(r)).await?;
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

    /// RFC 6120 SASL (`<auth>`) with SCRAM, then the stream restart (§6.4.6) and resource
    /// binding (§7): what a client without SASL2 does. Returns the bound JID in
    /// [`Success::jid`].
    pub async fn login_scram_rfc6120(
        &mut self,
        user: &str,
        password: &str,
        mechanism: &str,
    ) -> Result<Outcome> {
        let sasl_err = |e: sasl::client::MechanismError| ClientError::Sasl(e.to_string());
        let mut mech = self.scram(user, password, mechanism)?;
        let auth = with_attr(
            Element::builder("auth", ns::SASL)
                .append(B64.encode(mech.initial()))
                .build(),
            "mechanism",
            mechanism,
        );
        self.send(&auth).await?;
        loop {
            let e = self.recv().await?;
            if e.is("challenge", ns::SASL) {
                let c = xmpp_parsers::sasl::Challenge::try_from(e)
                    .map_err(|_| ClientError::Protocol("challenge is not base64".into()))?;
                let resp = mech.response(&c.data).map_err(sasl_err)?;
                let r = xmpp_parsers::sasl::Response { data: resp };
                self.send(&Element::from(r)).await?;
            } else if e.is("failure", ns::SASL) {
                return Ok(Outcome::Failure(Self::failure_of(&e)?));
            } else if e.is("success", ns::SASL) {
                let s = xmpp_parsers::sasl::Success::try_from(e.clone())
                    .map_err(|_| ClientError::Protocol("success is not base64".into()))?;
                mech.success(&s.data).map_err(sasl_err)?;
                self.reset_stream();
                self.open_stream().await?;
                let features = self.read_stream_start().await?.clone();
                let jid = self.bind(None).await?;
                return Ok(Outcome::Success(Success {
                    jid,
                    token: None,
                    additional_data: Some(s.data),
                    bound: None,
                    element: Redacted(e),
                    features: Some(features),
                }));
            } else {
                return Err(Self::unexpected(e, "challenge, success or failure"));
            }
        }
    }

    /// A password login whose first message carries no credentials: `<authenticate
    /// mechanism='M'/>` (SASL2) or `<auth mechanism='M'/>` (RFC 6120), the credentials only in
    /// `<response>`s, as RFC 4422 §5 allows. `mechanism` is `PLAIN` or a SCRAM mechanism. An
    /// RFC 6120 success is returned before the stream restart, with an empty JID.
    pub async fn login_without_initial_response(
        &mut self,
        profile: sasl2_fast::sasl2::SaslProfile,
        mechanism: &str,
        user: &str,
        password: &str,
        opts: &LoginOptions,
    ) -> Result<Outcome> {
        use sasl2_fast::sasl2::SaslProfile;
        let sasl_err = |e: sasl::client::MechanismError| ClientError::Sasl(e.to_string());
        let mut scram = match mechanism {
            "PLAIN" => None,
            _ => Some(self.scram(user, password, mechanism)?),
        };
        let (start, namespace) = match profile {
            SaslProfile::Sasl2 => (
                Self::authenticate_element(mechanism, None, opts, false),
                ns::SASL2,
            ),
            _ => (
                with_attr(Element::bare("auth", ns::SASL), "mechanism", mechanism),
                ns::SASL,
            ),
        };
        self.send(&start).await?;
        loop {
            let e = self.recv().await?;
            if e.is("challenge", namespace) {
                let text: String = e.text().split_ascii_whitespace().collect();
                let data = match text.as_str() {
                    "" | "=" => Vec::new(),
                    t => B64
                        .decode(t)
                        .map_err(|_| ClientError::Protocol("challenge is not base64".into()))?,
                };
                let response = match &mut scram {
                    Some(m) if data.is_empty() => m.initial(),
                    Some(m) => m.response(&data).map_err(sasl_err)?,
                    None => format!("\0{user}\0{password}").into_bytes(),
                };
                let r = Element::builder("response", namespace)
                    .append(B64.encode(response))
                    .build();
                self.send(&r).await?;
            } else if e.is("failure", namespace) {
                return Ok(Outcome::Failure(Self::failure_of(&e)?));
            } else if e.is("success", namespace) {
                return Ok(Outcome::Success(Success {
                    jid: String::new(),
                    token: None,
                    additional_data: None,
                    bound: None,
                    element: Redacted(e),
                    features: None,
                }));
            } else {
                return Err(Self::unexpected(e, "challenge, success or failure"));
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
}
