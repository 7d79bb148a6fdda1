//! FAST without this crate's negotiator: the pieces a server that keeps its own SASL2 code
//! calls, in the order of a login. [`super::FastPlugin`] is built from the same calls, so both
//! paths follow the same rules.
//!
//! 1. Features: [`FastOffer::for_stream`] decides what this stream offers (nothing without
//!    TLS, F-32; only HT mechanisms the connection can bind to, CB-6); put
//!    [`FastOffer::element`] inside SASL2's `<inline>` and its
//!    [`FastOffer::channel_binding_types`] into the XEP-0440 list. The offer never depends on
//!    the stream `from` (S-2, S-4).
//! 2. An `<authenticate>` with `<fast/>` (and an `HT-*` mechanism): [`FastOffer::claim`]
//!    checks the request (F-25: a user-agent id; the mechanism offered; early-data rules) and
//!    takes the channel-binding bytes; [`FastAttempt::verify`] checks the initiator message
//!    against the store (one read, constant-time MAC check) and gives the account and the
//!    server's proof for `<additional-data>`. A failure is a SASL `<failure>` to send; the
//!    client may retry on the same stream (S-23).
//! 3. When the whole login succeeds (the server's other inline features included),
//!    [`FastLogin::complete`] writes the token state in one durable write (promotion,
//!    invalidation, `count`) with a rotated or requested token, and returns the `<token>` for
//!    `<success>`, already durable (F-11). Never write a token before that returns.
//! 4. After a password login with `<request-token>`: [`FastOffer::requested`] (only an offered
//!    mechanism gets a token, F-8) and [`issue_token`].
//! 5. Revocation and client lists: [`super::FastTokens`] (`revoke_account`, `revoke_client`,
//!    `clients`); events: [`super::FastObserver`].
//!
//! `tests/fast_only.rs` performs a whole FAST login through these calls alone, over real TLS.

use minidom::Element;
use xmpp_parsers::fast::RequestToken;
use zeroize::Zeroizing;

use super::clock::xep0082;
use super::config::FastConfig;
use super::hooks::RejectReason;
use super::ht::{HtMechanism, parse_initiator};
use super::login::{Verified, VerifyRequest};
use super::tokens::{FastTokens, IssueKind, IssuedToken, TokenRequest};
use crate::sasl2::accounts::normalize_username;
use crate::sasl2::{ChannelBindingType, Failure, SaslCondition, StreamInfo};
use crate::store::ClientKey;
use crate::xmpp::{ns, text_child};

/// What one stream offers of FAST (XEP-0484 §3.1): the HT mechanisms, in configured order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastOffer {
    mechanisms: Vec<HtMechanism>,
    tls_0rtt: bool,
}

/// What an `<authenticate>` says that FAST needs, parsed by the server's own SASL2 code.
#[derive(Debug, Clone, Copy)]
pub struct FastRequest<'a> {
    /// The `mechanism` attribute.
    pub mechanism: &'a str,
    /// `<user-agent id>`, if sent.
    pub user_agent_id: Option<&'a str>,
    /// The `<fast xmlns='urn:xmpp:fast:0'/>` child of `<authenticate>`.
    pub fast: &'a Element,
}

/// The labels a token's client record keeps (XEP-0494 shows them to the account's owner):
/// the `<software>` and `<device>` of `<user-agent>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientLabels {
    /// `<software>`.
    pub software: Option<String>,
    /// `<device>`.
    pub device: Option<String>,
}

impl FastOffer {
    /// The offer of a stream: `None` when FAST is off, the stream may not authenticate (no
    /// TLS, F-32, H-2) or no configured mechanism can bind to this connection.
    pub fn for_stream(config: &FastConfig, stream: &StreamInfo) -> Option<FastOffer> {
        if !config.enabled || !stream.may_authenticate() {
            return None;
        }
        let mechanisms: Vec<HtMechanism> = (config.mechanisms.iter().copied())
            .filter(|m| m.usable_on(stream))
            .collect();
        // F-6, Z-2: `tls-0rtt` only where the host accepts early data and a mechanism usable
        // in it is offered.
        let tls_0rtt =
            stream.zero_rtt && mechanisms.iter().any(|m| m.binding.usable_in_early_data());
        (!mechanisms.is_empty()).then_some(FastOffer {
            mechanisms,
            tls_0rtt,
        })
    }

    /// The mechanisms offered.
    pub fn mechanisms(&self) -> &[HtMechanism] {
        &self.mechanisms
    }

    /// The channel-binding types the offered mechanisms use (for the XEP-0440 list).
    pub fn channel_binding_types(&self) -> Vec<ChannelBindingType> {
        let mut types = Vec::new();
        for t in self
            .mechanisms
            .iter()
            .filter_map(|m| m.binding.channel_binding_type())
        {
            if !types.contains(&t) {
                types.push(t);
            }
        }
        types
    }

    /// `<fast xmlns='urn:xmpp:fast:0'>` with a `<mechanism>` per HT mechanism (F-1, F-2), for
    /// SASL2's `<inline>`. Built with minidom's builder: xmpp-parsers' `FastQuery` costs 4x as
    /// much per stream (1.2 µs, measured) and writes `tls-0rtt='false'`;
    /// `features_parse_back_with_xmpp_parsers` (tests/xmpp_parsers_gaps.rs) pins that
    /// xmpp-parsers reads it back.
    pub fn element(&self) -> Element {
        let mut element = Element::builder("fast", ns::FAST);
        if self.tls_0rtt {
            element = element.attr(rxml::NcName::try_from("tls-0rtt").expect("NCName"), "true");
        }
        for m in &self.mechanisms {
            element = element.append(text_child("mechanism", ns::FAST, m.name()));
        }
        element.build()
    }

    /// The mechanism a `<request-token>` names, if this stream offered it (F-8: a mechanism
    /// that was not offered gets no token).
    pub fn requested(&self, request_token: &Element) -> Option<HtMechanism> {
        RequestToken::try_from(request_token.clone())
            .ok()
            .and_then(|r| HtMechanism::from_name(&r.mechanism))
            .filter(|m| self.mechanisms.contains(m))
    }

    /// Checks an `<authenticate>` that carries `<fast/>` on this stream, before any store
    /// read: a user-agent id (F-25), a mechanism offered here, valid `count`/`invalidate`,
    /// the early-data rules (Z-2, Z-3) and the connection's channel-binding bytes.
    pub fn claim(
        &self,
        req: &FastRequest<'_>,
        stream: &StreamInfo,
    ) -> Result<FastAttempt, Failure> {
        // F-25: tokens belong to a client; without its id there is nothing to look up.
        let Some(ua) = req.user_agent_id.filter(|id| !id.is_empty()) else {
            return Err(Failure::with_text(
                SaslCondition::MalformedRequest,
                "FAST requires <user-agent id='...'>",
            ));
        };
        let count = parse_count(req.fast.attr("count"))?;
        let invalidate = parse_bool(req.fast.attr("invalidate"))?;
        let Some(mechanism) =
            HtMechanism::from_name(req.mechanism).filter(|m| self.mechanisms.contains(m))
        else {
            return Err(Failure::with_text(
                SaslCondition::InvalidMechanism,
                "mechanism not offered in <fast>",
            ));
        };
        if stream.early_data {
            // Z-2: the client computed its MAC before the handshake ended: only bindings it
            // could know then. Z-3: count required. Both refused before the store is read.
            if !stream.zero_rtt {
                return Err(Failure::with_text(
                    SaslCondition::MalformedRequest,
                    "TLS early data is not accepted on this stream",
                ));
            }
            if !mechanism.binding.usable_in_early_data() {
                return Err(Failure::with_text(
                    SaslCondition::MalformedRequest,
                    "only -NONE and -ENDP mechanisms are accepted in TLS early data",
                ));
            }
            if count.is_none() {
                return Err(Failure::with_text(
                    SaslCondition::MalformedRequest,
                    "<fast count> is required in TLS early data",
                ));
            }
        }
        let Some(cb) = mechanism.cb_data(stream) else {
            return Err(Failure::with_text(
                SaslCondition::MalformedRequest,
                "channel binding unavailable",
            ));
        };
        Ok(FastAttempt {
            mechanism,
            cb_data: Zeroizing::new(cb.to_vec()),
            user_agent_id: ua.to_owned(),
            count,
            invalidate,
            early_data: stream.early_data,
            domain: stream.domain.clone(),
        })
    }
}

/// Parses an XML Schema boolean (§2.1 notes).
fn parse_bool(v: Option<&str>) -> Result<bool, Failure> {
    match v.map(str::trim) {
        None => Ok(false),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(_) => Err(Failure::with_text(
            SaslCondition::MalformedRequest,
            "invalid boolean in <fast invalidate>",
        )),
    }
}

/// Parses `<fast count>`: an xs:int that must be non-negative here (F-13 says positive; 0 is
/// tolerated because the spec also speaks of restarting from zero). xmpp-parsers'
/// `fast::FastResponse` requires `count`, which XEP-0484 only requires for TLS 0-RTT (F-13),
/// and Conversations and xmpp.js never send it (pinned in `tests/xmpp_parsers_gaps.rs`).
fn parse_count(v: Option<&str>) -> Result<Option<u32>, Failure> {
    match v.map(str::trim) {
        None => Ok(None),
        Some(s) => s.parse::<u32>().map(Some).map_err(|_| {
            Failure::with_text(SaslCondition::MalformedRequest, "invalid <fast count>")
        }),
    }
}

/// A claimed FAST attempt (F-3: one round trip, no challenge), waiting for the client's
/// initiator message.
pub struct FastAttempt {
    mechanism: HtMechanism,
    cb_data: Zeroizing<Vec<u8>>,
    user_agent_id: String,
    count: Option<u32>,
    invalidate: bool,
    early_data: bool,
    domain: String,
}

impl std::fmt::Debug for FastAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastAttempt")
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

impl FastAttempt {
    /// The HT mechanism of the attempt.
    pub fn mechanism(&self) -> HtMechanism {
        self.mechanism
    }

    /// protocol.md §9 item 13: the authcid is a localpart, or `local@domain` for this domain.
    fn account_of(&self, authcid: &str) -> Option<String> {
        let local = match authcid.rsplit_once('@') {
            Some((local, domain)) if domain.eq_ignore_ascii_case(&self.domain) => local,
            Some(_) => return None,
            None => authcid,
        };
        normalize_username(local)
    }

    /// Checks the initiator message (the `<initial-response>`, decoded) against the store:
    /// one read, nothing written, the MAC compared in constant time with the channel binding
    /// of this connection. Every rejection is reported to the observers.
    pub async fn verify(
        &self,
        tokens: &FastTokens,
        initial_response: Option<&[u8]>,
    ) -> Result<FastLogin, Failure> {
        let name = self.mechanism.name();
        let Some(input) = initial_response else {
            // §9 item 20, H-4: HT is client-first and one round trip (F-3); no empty challenge.
            tokens.report_rejection(None, name, RejectReason::Malformed);
            return Err(Failure::with_text(
                SaslCondition::MalformedRequest,
                "HT needs an initial response",
            ));
        };
        let msg = parse_initiator(self.mechanism.hash, input).inspect_err(|_| {
            tokens.report_rejection(None, name, RejectReason::Malformed);
        })?;
        let Some(account) = self.account_of(msg.authcid) else {
            tokens.report_rejection(None, name, RejectReason::UnknownToken);
            return Err(Failure::new(SaslCondition::NotAuthorized));
        };
        let req = VerifyRequest::new(
            &account,
            &self.user_agent_id,
            self.mechanism,
            msg.mac,
            &self.cb_data,
        )
        .with_count(self.count)
        .with_invalidate(self.invalidate)
        .with_early_data(self.early_data);
        let verified = tokens.verify(&req).await.map_err(failure_for)?;
        Ok(FastLogin { account, verified })
    }
}

/// A verified FAST login whose token state is not yet written: send `<success>` only after
/// [`FastLogin::complete`].
#[derive(Debug)]
pub struct FastLogin {
    account: String,
    verified: Verified,
}

impl FastLogin {
    /// The account (normalized localpart).
    pub fn account(&self) -> &str {
        &self.account
    }

    /// `HMAC(token, "Responder" || cb)`, the server's proof for `<additional-data>` (F-4).
    pub fn additional_data(&self) -> &[u8] {
        &self.verified.responder
    }

    /// The mechanism used.
    pub fn mechanism(&self) -> HtMechanism {
        self.verified.mechanism
    }

    /// Writes the login's token state in one durable write: promotion of a `new` token
    /// (F-18), invalidation (F-21), `count`, and a token: the one `requested` names (H-11,
    /// after [`FastOffer::requested`]), else a rotation when due (F-16), none after
    /// invalidation (F-22). Returns the `<token>` for `<success>` (F-11), on disk already.
    /// Fails with the reason a fresh decision gives when a concurrent login changed the
    /// record since [`FastAttempt::verify`].
    pub async fn complete(
        self,
        tokens: &FastTokens,
        requested: Option<HtMechanism>,
        labels: &ClientLabels,
    ) -> Result<Option<Element>, Failure> {
        let v = self.verified;
        let want = match requested {
            Some(m) => Some(labels.request(m, IssueKind::Requested)),
            None if v.invalidated => None,
            None if v.rotation_due => Some(labels.request(v.mechanism, IssueKind::Rotated)),
            None => None,
        };
        let issued = tokens.commit(v, want.as_ref()).await.map_err(failure_for)?;
        Ok(issued.map(token_element))
    }
}

impl ClientLabels {
    fn request(&self, mechanism: HtMechanism, kind: IssueKind) -> TokenRequest {
        TokenRequest {
            mechanism,
            kind,
            software: self.software.clone(),
            device: self.device.clone(),
        }
    }
}

/// Issues a token after a successful password login that asked for one with
/// `<request-token>` (`mechanism` from [`FastOffer::requested`]): durable when this returns
/// (F-11), so the `<token>` it gives may go into `<success>`. `user_agent_id` is the client's
/// `<user-agent id>` (no id, no token: §9 item 7).
pub async fn issue_token(
    tokens: &FastTokens,
    account: &str,
    user_agent_id: &str,
    mechanism: HtMechanism,
    labels: &ClientLabels,
) -> Result<Option<Element>, crate::BoxError> {
    let key = ClientKey::new(account, user_agent_id)?;
    let issued = tokens
        .issue(&key, &labels.request(mechanism, IssueKind::Requested))
        .await?;
    Ok(issued.map(token_element))
}

/// The `<token>` of `<success>` (F-11), built once with minidom's builder: `expiry` in
/// XEP-0082's UTC form (`YYYY-MM-DDThh:mm:ssZ`), what clients parse.
/// xmpp-parsers' `fast::Token` would write `+00:00` (its `DateTime` serialises with chrono's
/// `to_rfc3339`); `token_expiry_is_written_in_the_z_form` (tests/xmpp_parsers_gaps.rs) pins
/// both that and that xmpp-parsers reads this element back.
fn token_element(t: IssuedToken) -> Element {
    Element::builder("token", ns::FAST)
        .attr(
            rxml::NcName::try_from("token").expect("NCName"),
            t.token.expose(),
        )
        .attr(
            rxml::NcName::try_from("expiry").expect("NCName"),
            xep0082(t.expires_at),
        )
        .build()
}

/// The SASL failure for a rejected token (F-28: distrusted tokens answer
/// `credentials-expired`; protocol.md §9 item 11).
pub fn failure_for(reason: RejectReason) -> Failure {
    use RejectReason as R;
    match reason {
        R::UnknownToken => Failure::new(SaslCondition::NotAuthorized),
        R::Expired => Failure::with_text(SaslCondition::CredentialsExpired, "token expired"),
        R::Revoked => Failure::with_text(SaslCondition::CredentialsExpired, "token revoked"),
        R::ChainTooOld => Failure::with_text(
            SaslCondition::CredentialsExpired,
            "token chain too old: log in with your password",
        ),
        R::Replay => Failure::with_text(SaslCondition::NotAuthorized, "replayed count"),
        R::Malformed => Failure::new(SaslCondition::MalformedRequest),
        R::StoreUnavailable => Failure::new(SaslCondition::TemporaryAuthFailure),
    }
}
