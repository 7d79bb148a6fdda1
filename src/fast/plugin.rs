//! The FAST inline feature: `<fast>` advertisement, claiming `<authenticate>` requests that
//! carry `<fast/>`, the HT mechanism attempt, and `<token>` in `<success>`.

use std::any::Any;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use tracing::debug;
use zeroize::Zeroizing;

use super::clock::xep0082;
use super::config::{FastConfig, StoreKind};
use super::hooks::{FastObserver, RejectReason};
use super::ht::{HtMechanism, parse_initiator};
use super::token::Pepper;
use super::tokens::{FastTokens, IssueKind, VerifyRequest};
use crate::sasl2::accounts::normalize_username;
use crate::sasl2::{
    AuthenticateRequest, Authenticated, ChannelBindingType, Failure, InlineError, InlineFeature,
    InlineOrder, Mechanism, SaslCondition, Step, StreamInfo, SuccessBuilder, SuccessContext,
};
use crate::store::{ClientKey, TokenStore};
use crate::xml::{Element, NS_FAST};

/// The FAST plugin: register it with [`crate::sasl2::Sasl2Server`] as an inline feature.
#[derive(Debug, Clone)]
pub struct FastPlugin {
    tokens: Arc<FastTokens>,
}

/// The plugin could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The pepper file could not be read or created.
    #[error("pepper file {path}: {source}")]
    Pepper {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("token store: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl FastPlugin {
    /// A plugin over an existing token authority.
    pub fn new(tokens: Arc<FastTokens>) -> Self {
        FastPlugin { tokens }
    }

    /// Opens the configured store and pepper under `data_dir` (defaults:
    /// `<data_dir>/fast-tokens`, `<data_dir>/fast-pepper`).
    pub fn open(config: FastConfig, data_dir: &Path) -> Result<Self, OpenError> {
        Self::open_with_observers(config, data_dir, Vec::new())
    }

    /// Like [`FastPlugin::open`], with lifecycle observers (metrics, audit logs) registered.
    pub fn open_with_observers(
        config: FastConfig,
        data_dir: &Path,
        observers: Vec<Arc<dyn FastObserver>>,
    ) -> Result<Self, OpenError> {
        let pepper_path = config
            .pepper_file
            .clone()
            .unwrap_or_else(|| data_dir.join("fast-pepper"));
        let pepper = Pepper::load_or_create(&pepper_path).map_err(|source| OpenError::Pepper {
            path: pepper_path.display().to_string(),
            source,
        })?;
        let store: Arc<dyn TokenStore> = match config.store {
            StoreKind::Memory => Arc::new(crate::store::memory::MemoryStore::new()),
            StoreKind::Sled => {
                let path = config
                    .store_path
                    .clone()
                    .unwrap_or_else(|| data_dir.join("fast-tokens"));
                Arc::new(crate::store::sled_store::SledStore::open(path)?)
            }
        };
        let tokens = observers.into_iter().fold(
            FastTokens::new(store, pepper, config),
            FastTokens::with_observer,
        );
        Ok(Self::new(Arc::new(tokens)))
    }

    /// The token authority (revocation, client lists, sweeping).
    pub fn tokens(&self) -> &Arc<FastTokens> {
        &self.tokens
    }

    /// The HT mechanisms offered on this stream, in configured order: each only where the
    /// connection can bind to it (protocol.md §7); none when FAST is off or the stream is not
    /// allowed SASL2 (F-32).
    pub fn offered(&self, stream: &StreamInfo) -> Vec<HtMechanism> {
        let cfg = self.tokens.config();
        if !cfg.enabled || !(stream.is_secure() || stream.allow_plaintext) {
            return Vec::new();
        }
        cfg.mechanisms
            .iter()
            .copied()
            .filter(|m| m.usable_on(stream))
            .collect()
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
/// tolerated because the spec also speaks of restarting from zero).
fn parse_count(v: Option<&str>) -> Result<Option<u32>, Failure> {
    match v.map(str::trim) {
        None => Ok(None),
        Some(s) => s.parse::<u32>().map(Some).map_err(|_| {
            Failure::with_text(SaslCondition::MalformedRequest, "invalid <fast count>")
        }),
    }
}

/// The state an HT attempt leaves for [`FastPlugin::on_success`].
#[derive(Debug)]
struct FastOutcome {
    mechanism: HtMechanism,
    rotation_due: bool,
    chain_started_at: u64,
    invalidated: bool,
}

/// One HT authentication attempt (F-3: one round trip, no challenge).
struct HtAttempt {
    tokens: Arc<FastTokens>,
    mechanism: HtMechanism,
    cb_data: Zeroizing<Vec<u8>>,
    user_agent_id: String,
    count: Option<u32>,
    invalidate: bool,
    domain: String,
    done: bool,
}

impl fmt::Debug for HtAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HtAttempt")
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

fn failure_for(reason: RejectReason) -> Failure {
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

impl HtAttempt {
    /// protocol.md §9 item 13: the authcid is a localpart, or `local@domain` for this domain.
    fn account_of(&self, authcid: &str) -> Option<String> {
        let local = match authcid.rsplit_once('@') {
            Some((local, domain)) if domain.eq_ignore_ascii_case(&self.domain) => local,
            Some(_) => return None,
            None => authcid,
        };
        normalize_username(local)
    }
}

#[async_trait]
impl Mechanism for HtAttempt {
    async fn step(&mut self, input: Option<&[u8]>) -> Step {
        let name = self.mechanism.name();
        if std::mem::replace(&mut self.done, true) {
            return Step::Failure(Failure::new(SaslCondition::MalformedRequest));
        }
        let Some(input) = input else {
            // §9 item 20: HT is client-first and one round trip (F-3); no empty challenge.
            self.tokens
                .report_rejection(None, name, RejectReason::Malformed);
            return Step::Failure(Failure::with_text(
                SaslCondition::MalformedRequest,
                "HT needs an initial response",
            ));
        };
        let msg = match parse_initiator(self.mechanism.hash, input) {
            Ok(m) => m,
            Err(f) => {
                self.tokens
                    .report_rejection(None, name, RejectReason::Malformed);
                return Step::Failure(f);
            }
        };
        let Some(account) = self.account_of(msg.authcid) else {
            self.tokens
                .report_rejection(None, name, RejectReason::UnknownToken);
            return Step::Failure(Failure::new(SaslCondition::NotAuthorized));
        };
        let req = VerifyRequest {
            account: &account,
            user_agent_id: &self.user_agent_id,
            mechanism: self.mechanism,
            mac: msg.mac,
            cb_data: &self.cb_data,
            count: self.count,
            invalidate: self.invalidate,
        };
        match self.tokens.verify(&req).await {
            Ok(v) => Step::Success(Authenticated {
                username: account,
                additional_data: Some(v.responder),
                state: Some(Box::new(FastOutcome {
                    mechanism: v.mechanism,
                    rotation_due: v.rotation_due,
                    chain_started_at: v.chain_started_at,
                    invalidated: v.invalidated,
                })),
            }),
            Err(reason) => Step::Failure(failure_for(reason)),
        }
    }
}

#[async_trait]
impl InlineFeature for FastPlugin {
    fn order(&self) -> InlineOrder {
        InlineOrder::Token
    }

    fn advertise(&self, stream: &StreamInfo) -> Option<Element> {
        let offered = self.offered(stream);
        if offered.is_empty() {
            return None;
        }
        // F-1, F-2. Never `tls-0rtt` (F-6): this server does not accept TLS early data.
        let mut fast = Element::new("fast", NS_FAST);
        for m in offered {
            fast.push_child(Element::new("mechanism", NS_FAST).with_text(m.name()));
        }
        Some(fast)
    }

    fn channel_binding_types(&self, stream: &StreamInfo) -> Vec<ChannelBindingType> {
        let mut out = Vec::new();
        for m in self.offered(stream) {
            if let Some(t) = m.binding.channel_binding_type()
                && !out.contains(&t)
            {
                out.push(t);
            }
        }
        out
    }

    fn claim(
        &self,
        stream: &StreamInfo,
        request: &AuthenticateRequest,
    ) -> Result<Option<Box<dyn Mechanism>>, Failure> {
        let Some(fast) = request.inline_child("fast", NS_FAST) else {
            return Ok(None);
        };
        let offered = self.offered(stream);
        if offered.is_empty() {
            return Err(Failure::with_text(
                SaslCondition::MalformedRequest,
                "FAST is not available on this stream",
            ));
        }
        // F-25: tokens belong to a client; without its id there is nothing to look up.
        let Some(ua) = request.user_agent_id() else {
            return Err(Failure::with_text(
                SaslCondition::MalformedRequest,
                "FAST requires <user-agent id='...'>",
            ));
        };
        let count = parse_count(fast.attr("count"))?;
        let invalidate = parse_bool(fast.attr("invalidate"))?;
        let Some(mechanism) =
            HtMechanism::from_name(&request.mechanism).filter(|m| offered.contains(m))
        else {
            return Err(Failure::with_text(
                SaslCondition::InvalidMechanism,
                "mechanism not offered in <fast>",
            ));
        };
        let Some(cb) = mechanism.cb_data(stream) else {
            return Err(Failure::with_text(
                SaslCondition::MalformedRequest,
                "channel binding unavailable",
            ));
        };
        Ok(Some(Box::new(HtAttempt {
            tokens: Arc::clone(&self.tokens),
            mechanism,
            cb_data: Zeroizing::new(cb.to_vec()),
            user_agent_id: ua.to_owned(),
            count,
            invalidate,
            domain: stream.domain.clone(),
            done: false,
        })))
    }

    async fn on_success(
        &self,
        ctx: &SuccessContext<'_>,
        success: &mut SuccessBuilder,
    ) -> Result<(), InlineError> {
        let outcome = if ctx.claimed_by_me {
            ctx.state
                .and_then(|s| (s as &dyn Any).downcast_ref::<FastOutcome>())
        } else {
            None
        };
        let requested = ctx.request.inline_child("request-token", NS_FAST);
        let (mechanism, kind, chain) = match (outcome, requested) {
            (o, Some(r)) => {
                // protocol.md §9 item 8: a mechanism that was not offered here gets no token.
                let offered = self.offered(ctx.stream);
                match r
                    .attr("mechanism")
                    .and_then(HtMechanism::from_name)
                    .filter(|m| offered.contains(m))
                {
                    Some(m) => (m, IssueKind::Requested, o.map(|o| o.chain_started_at)),
                    None => {
                        debug!("no FAST token: requested mechanism missing or not offered");
                        return Ok(());
                    }
                }
            }
            // F-22: no token after invalidation unless one was requested.
            (Some(o), None) if o.invalidated => return Ok(()),
            // F-16: rotation, bound to the mechanism just used.
            (Some(o), None) if o.rotation_due => {
                (o.mechanism, IssueKind::Rotated, Some(o.chain_started_at))
            }
            _ => return Ok(()),
        };
        let Some(ua) = ctx.request.user_agent_id() else {
            // Prosody issues nothing silently; we at least say why (protocol.md §9 item 7).
            debug!("no FAST token: the client sent no user-agent id");
            return Ok(());
        };
        let key = ClientKey::new(ctx.username, ua).map_err(|e| InlineError {
            feature: "fast",
            message: e.to_string(),
        })?;
        let (software, device) = ctx.request.user_agent.as_ref().map_or((None, None), |u| {
            (u.software.as_deref(), u.device.as_deref())
        });
        let issued = self
            .tokens
            .issue(&key, mechanism, chain, software, device, kind)
            .await
            .map_err(|e| InlineError {
                feature: "fast",
                message: e.to_string(),
            })?;
        if let Some(t) = issued {
            // F-11. The token is already durable (issue() flushed) before this element exists.
            success.results.push(
                Element::new("token", NS_FAST)
                    .with_attr("expiry", xep0082(t.expires_at))
                    .with_attr("token", t.token.expose()),
            );
        }
        Ok(())
    }
}
