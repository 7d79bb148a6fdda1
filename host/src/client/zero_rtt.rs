//! FAST in TLS 1.3 early data (0-RTT), client side: a client that remembers its previous
//! connection (a TLS session, the HT mechanism of its token, the server certificate's hash for
//! `-ENDP`) sends its stream header and FAST `<authenticate>` with the ClientHello, without
//! waiting for features (they cannot be awaited, S-4). rustls sends them as early data when
//! the resumed session allows it; otherwise tokio-rustls resends them right after the
//! handshake (the 1-RTT fallback).

use std::sync::Arc;

use sasl2_fast::fast::HtMechanism;
use sasl2_fast::fast::ht::HtBinding;
use sasl2_fast::stream::stream_header_xml;
use sasl2_fast::xmpp::ns;
use tokio::io::AsyncWriteExt as _;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

use super::{
    Client, ClientError, ConnectOptions, Io, LoginOptions, Outcome, Result, Tls, channel_bindings,
    client_tls_config,
};

impl ConnectOptions {
    /// These options with one rustls client config, shared by the connections made from them
    /// and their clones, that resumes TLS sessions and sends early data when a session allows
    /// it (rustls `enable_early_data`).
    pub fn with_early_data(mut self) -> Result<Self> {
        let mut config = (*client_tls_config(&self.ca_pem)?).clone();
        config.enable_early_data = true;
        self.tls_config = Some(Arc::new(config));
        Ok(self)
    }
}

/// A FAST login to send in early data.
#[derive(Debug, Clone)]
pub struct ZeroRttLogin<'a> {
    /// The authcid.
    pub user: &'a str,
    /// The token (password-equivalent; only its HMAC is sent).
    pub token: &'a str,
    /// The HT mechanism the token is bound to (`-NONE` or `-ENDP`: Z-2).
    pub mechanism: &'a str,
    /// `tls-server-end-point` remembered from the previous connection (for `-ENDP`).
    pub server_end_point: Option<&'a [u8]>,
    /// Inline requests; `fast_count` is required in early data (Z-3).
    pub options: &'a LoginOptions,
}

/// What TLS did with the first flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlyDataReport {
    /// The resumed session allowed early data, so the flight went with the ClientHello.
    pub sent_early: bool,
    /// The server accepted it as early data (rustls `is_early_data_accepted`); when sent but
    /// not accepted, tokio-rustls resent it after the handshake.
    pub accepted: bool,
    /// The TLS session was resumed.
    pub resumed: bool,
}

impl Client {
    /// The bytes of a 0-RTT first flight: the stream header of `opts` and the FAST
    /// `<authenticate>` of `login`, with the MAC computed before any handshake (so only
    /// bindings known in advance: none, or the remembered certificate hash).
    pub fn zero_rtt_flight(opts: &ConnectOptions, login: &ZeroRttLogin<'_>) -> Result<Vec<u8>> {
        let m = HtMechanism::from_name(login.mechanism).ok_or_else(|| {
            ClientError::Sasl(format!("unknown HT mechanism {}", login.mechanism))
        })?;
        let cb: &[u8] = match m.binding {
            HtBinding::None => &[],
            HtBinding::EndPoint => login.server_end_point.ok_or_else(|| {
                ClientError::Protocol("-ENDP in 0-RTT needs the remembered end-point hash".into())
            })?,
            _ => {
                return Err(ClientError::Protocol(format!(
                    "{} cannot be computed before the handshake",
                    login.mechanism
                )));
            }
        };
        let message = m.initiator_message(login.user, login.token.as_bytes(), cb);
        let auth = Self::authenticate_element(login.mechanism, Some(&message), login.options, true);
        let mut flight = Self::zero_rtt_flight_header(opts).into_bytes();
        auth.write_to(&mut flight)
            .map_err(|e| ClientError::Protocol(format!("cannot serialize: {e}")))?;
        Ok(flight)
    }

    /// The stream header a 0-RTT flight starts with (`to` = domain, `from` = bare JID).
    pub fn zero_rtt_flight_header(opts: &ConnectOptions) -> String {
        stream_header_xml(
            ns::JABBER_CLIENT,
            opts.from.as_deref(),
            Some(&opts.domain),
            None,
            Some("1.0"),
            Some("en"),
        )
    }

    /// Direct TLS with `flight` written before the handshake: as early data if the session
    /// in `opts.tls_config` allows it (see [`ConnectOptions::with_early_data`]), else after the
    /// handshake. Then reads the server's stream header and features; the answer to an
    /// `<authenticate>` in the flight is read next (e.g. [`Client::read_fast_outcome`]).
    pub async fn connect_with_early_data(
        opts: ConnectOptions,
        flight: &[u8],
    ) -> Result<(Client, EarlyDataReport)> {
        let config = opts.tls_config.clone().ok_or_else(|| {
            ClientError::Tls("0-RTT needs a shared TLS config (with_early_data)".into())
        })?;
        let mut tcp_only = opts.clone();
        tcp_only.tls = Tls::None;
        let mut c = Client::establish(tcp_only).await?;
        c.opts = opts;
        let Io::Plain(tcp) = std::mem::replace(&mut c.io, Io::Gone) else {
            return Err(ClientError::Protocol("expected a plain socket".into()));
        };
        let connector = tokio_rustls::TlsConnector::from(config).early_data(true);
        let name = ServerName::try_from(c.opts.domain.clone())
            .map_err(|e| ClientError::Tls(format!("server name: {e}")))?;
        let t = c.opts.timeout;
        let handshake = async {
            // With a session that allows early data this returns before anything is sent.
            let mut tls = connector.connect(name, tcp).await?;
            let sent_early = tls.get_mut().1.early_data().is_some();
            tls.write_all(flight).await?;
            // Completes the handshake (ClientHello and early data go out together); resends
            // the flight if the server refused the early data.
            tls.flush().await?;
            Ok::<_, std::io::Error>((tls, sent_early))
        };
        let (tls, sent_early) = tokio::time::timeout(t, handshake)
            .await
            .map_err(|_| ClientError::Timeout("TLS handshake with early data".into()))?
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let conn = tls.get_ref().1;
        let report = EarlyDataReport {
            sent_early,
            accepted: conn.is_early_data_accepted(),
            resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        };
        c.cb = channel_bindings(conn);
        c.tls_version = conn.protocol_version();
        c.tls_resumed = report.resumed;
        c.io = Io::Tls(Box::new(tls));
        c.reset_stream();
        c.read_stream_start().await?;
        Ok((c, report))
    }

    /// A FAST login in 0-RTT: [`Client::zero_rtt_flight`], [`Client::connect_with_early_data`],
    /// then the outcome, whose server proof is checked against this connection.
    pub async fn login_fast_zero_rtt(
        opts: ConnectOptions,
        login: &ZeroRttLogin<'_>,
    ) -> Result<(Client, EarlyDataReport, Outcome)> {
        let flight = Self::zero_rtt_flight(&opts, login)?;
        let (mut c, report) = Self::connect_with_early_data(opts, &flight).await?;
        let outcome = c.read_fast_outcome(login.token, login.mechanism).await?;
        Ok((c, report, outcome))
    }
}
