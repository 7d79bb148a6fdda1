//! The FAST inline feature: `<fast>` advertisement, claiming `<authenticate>` requests that
//! carry `<fast/>`, the HT mechanism attempt, and `<token>` in `<success>`.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use minidom::Element;
use tracing::debug;
use xmpp_parsers::fast::{RequestToken, Token};
use zeroize::Zeroizing;

use super::clock::Clock as _;
use super::clock::xep0082;
use super::config::{FastConfig, PepperRecovery, StoreKind, StoreRecovery};
use super::hooks::{FastObserver, RejectReason};
use super::ht::{HtMechanism, parse_initiator};
use super::login::{Verified, VerifyRequest};
use super::token::Pepper;
use super::tokens::{FastTokens, IssueKind, TokenRequest};
use crate::sasl2::accounts::{AccountStore, normalize_username};
use crate::sasl2::{
    Authenticated, ChannelBindingType, ClaimContext, Failure, InlineError, InlineFeature,
    InlineOrder, Mechanism, Offer, SaslCondition, Step, StreamInfo, SuccessBuilder, SuccessContext,
};
use crate::store::{ClientKey, RevocationScope, TokenStore};
use crate::xmpp::{ns, text_child};

/// The FAST plugin: register it with [`crate::sasl2::Sasl2Server`] as an inline feature.
#[derive(Debug, Clone)]
pub struct FastPlugin {
    tokens: Arc<FastTokens>,
}

/// The plugin could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The pepper file could not be read or created (or is readable by others).
    #[error("pepper: {0}")]
    Pepper(#[from] crate::secret_file::SecretFileError),
    /// The pepper file is missing although the store holds tokens derived from it.
    #[error(
        "pepper file {path} is missing but the token store holds {records} FAST clients: their \
         tokens cannot be checked without it. Restore the file from a backup, or set \
         pepper_recovery = \"new\" in [plugins.fast] to create a new pepper (every FAST \
         client is then logged out and logs in with its password again)"
    )]
    PepperMissing {
        /// Where the pepper should be.
        path: String,
        /// How many client records the store holds.
        records: u64,
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
    pub async fn open(config: FastConfig, data_dir: &Path) -> Result<Self, OpenError> {
        Self::open_with_observers(config, data_dir, Vec::new()).await
    }

    /// Like [`FastPlugin::open`], with lifecycle observers (metrics, audit logs) registered.
    ///
    /// Fails closed: a store that lost committed writes is refused unless `store_recovery =
    /// "distrust"`, and a missing pepper is only recreated for an empty store unless
    /// `pepper_recovery = "new"` (then every existing token is revoked and it says so).
    pub async fn open_with_observers(
        config: FastConfig,
        data_dir: &Path,
        observers: Vec<Arc<dyn FastObserver>>,
    ) -> Result<Self, OpenError> {
        Self::open_observed(config, data_dir, None, observers, None).await
    }

    /// Like [`FastPlugin::open_with_observers`], with the account store every FAST login asks
    /// for the account side's revocation cutoff ([`FastTokens::with_accounts`]; pass the one
    /// the password mechanisms use, so password changes and deletions survive a restore of the
    /// token store), and with the store wrapped in an
    /// [`ObservedStore`](crate::store::observed::ObservedStore) reporting to `store_observer`
    /// (store latency and errors for metrics), if one is given.
    pub async fn open_observed(
        config: FastConfig,
        data_dir: &Path,
        accounts: Option<Arc<dyn AccountStore>>,
        observers: Vec<Arc<dyn FastObserver>>,
        store_observer: Option<Arc<dyn crate::store::observed::StoreObserver>>,
    ) -> Result<Self, OpenError> {
        let store: Arc<dyn TokenStore> = match config.store {
            StoreKind::Memory => Arc::new(crate::store::memory::MemoryStore::new()),
            StoreKind::Sled => Arc::new(open_sled_off_executor(&config, data_dir).await?),
            StoreKind::Postgres => open_postgres(&config).await?,
        };
        let store = match store_observer {
            Some(o) => Arc::new(crate::store::observed::ObservedStore::new(store, o)),
            None => store,
        };
        let pepper_path = config
            .pepper_file
            .clone()
            .unwrap_or_else(|| data_dir.join("fast-pepper"));
        let pepper = if pepper_path.exists() {
            Pepper::load(&pepper_path)?
        } else {
            let records = store.len().await?;
            if records > 0 && config.pepper_recovery != PepperRecovery::New {
                return Err(OpenError::PepperMissing {
                    path: pepper_path.display().to_string(),
                    records,
                });
            }
            let pepper = Pepper::create(&pepper_path)?;
            if records > 0 {
                // Tokens derived from the lost pepper can never verify again; revoking them
                // makes that explicit (and their slots expire away with the sweep).
                let now = super::clock::SystemClock.now_ms();
                store
                    .raise_revocation_cutoff(RevocationScope::All, now.saturating_add(1))
                    .await?;
                tracing::warn!(
                    path = %pepper_path.display(),
                    records,
                    "created a new FAST pepper (pepper_recovery = \"new\"): every FAST client is logged out"
                );
            }
            pepper
        };
        let mut tokens = FastTokens::new(store, pepper, config);
        if let Some(accounts) = accounts {
            tokens = tokens.with_accounts(accounts);
        }
        let tokens = observers
            .into_iter()
            .fold(tokens, FastTokens::with_observer);
        Ok(Self::new(Arc::new(tokens)))
    }

    /// The token authority (revocation, client lists, sweeping).
    pub fn tokens(&self) -> &Arc<FastTokens> {
        &self.tokens
    }

    /// The HT mechanisms offered on this stream, in configured order: each only where the
    /// connection can bind to it (protocol.md §7); none when FAST is off or the stream is not
    /// allowed SASL2 (F-32, H-2). The negotiator asks once per stream, through
    /// [`InlineFeature::offer`].
    pub fn offered(&self, stream: &StreamInfo) -> Vec<HtMechanism> {
        let cfg = self.tokens.config();
        if !cfg.enabled || !stream.may_authenticate() {
            return Vec::new();
        }
        cfg.mechanisms
            .iter()
            .copied()
            .filter(|m| m.usable_on(stream))
            .collect()
    }
}

/// The sled store a config names (`store_path`, default `<data_dir>/fast-tokens`), opened with
/// its cache size and damage policy; also what `host migrate-store` copies from.
pub fn open_sled(
    config: &FastConfig,
    data_dir: &Path,
) -> Result<crate::store::sled_store::SledStore, crate::store::StoreError> {
    use crate::store::sled_store::{DamagePolicy, SledOptions, SledStore};
    let path = config
        .store_path
        .clone()
        .unwrap_or_else(|| data_dir.join("fast-tokens"));
    let options = SledOptions {
        cache_bytes: config.store_cache_bytes,
        on_damage: match config.store_recovery {
            StoreRecovery::Refuse => DamagePolicy::Refuse,
            StoreRecovery::Distrust => DamagePolicy::Distrust,
        },
    };
    SledStore::open_with(path, options)
}

/// [`open_sled`] on tokio's blocking pool when a runtime is present: opening reads and checks
/// the whole log, verifies the seal, and may wait for the file lock (`LOCK_WAIT` in
/// `sled_store.rs`), none of which may stall a runtime worker serving other streams.
async fn open_sled_off_executor(
    config: &FastConfig,
    data_dir: &Path,
) -> Result<crate::store::sled_store::SledStore, crate::store::StoreError> {
    let (config, data_dir) = (config.clone(), data_dir.to_path_buf());
    crate::sasl2::plain::run_blocking(move || open_sled(&config, &data_dir))
        .await
        .unwrap_or_else(|| {
            Err(crate::store::StoreError::backend(
                "opening the token store failed",
            ))
        })
}

/// The PostgreSQL store of a config (feature `postgres`).
#[cfg(feature = "postgres")]
async fn open_postgres(config: &FastConfig) -> Result<Arc<dyn TokenStore>, OpenError> {
    use crate::store::postgres::{PostgresOptions, PostgresStore};
    let url = config.postgres_url.as_ref().ok_or_else(|| {
        crate::store::StoreError::backend("store = \"postgres\" needs postgres_url")
    })?;
    let mut options = PostgresOptions::new(url.0.clone());
    options.pool_size = config.postgres_pool_size;
    options.ca_file = config.postgres_ca_file.clone();
    Ok(Arc::new(PostgresStore::open(options).await?))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_config: &FastConfig) -> Result<Arc<dyn TokenStore>, OpenError> {
    Err(OpenError::Store(crate::store::StoreError::backend(
        "store = \"postgres\" needs sasl2-fast built with the `postgres` feature",
    )))
}

/// The HT mechanisms one stream offers: the state of the FAST offer.
#[derive(Debug)]
struct FastOffer {
    mechanisms: Vec<HtMechanism>,
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

/// The request form of `<fast>` in `<authenticate>`: `count` and `invalidate` (F-21, and H-11:
/// the client's way to revoke its token).
///
/// Parsed over minidom: xmpp-parsers' `fast::FastResponse` requires `count`, which XEP-0484
/// only requires for TLS 0-RTT (F-13), and Conversations and xmpp.js never send it (pinned in
/// `tests/xmpp_parsers_gaps.rs`).
fn parse_fast_request(el: &Element) -> Result<(Option<u32>, bool), Failure> {
    Ok((
        parse_count(el.attr("count"))?,
        parse_bool(el.attr("invalidate"))?,
    ))
}

/// The state an HT attempt leaves for [`FastPlugin::on_success`]: the verified login, whose
/// state change is written there (taken out once, hence the mutex).
struct FastOutcome(Mutex<Option<Verified>>);

/// One HT authentication attempt (F-3: one round trip, no challenge).
struct HtAttempt {
    tokens: Arc<FastTokens>,
    mechanism: HtMechanism,
    cb_data: Zeroizing<Vec<u8>>,
    user_agent_id: String,
    count: Option<u32>,
    invalidate: bool,
    early_data: bool,
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
            // §9 item 20, H-4: HT is client-first and one round trip (F-3); no empty challenge.
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
        match self.tokens.verify(&req).await {
            Ok(v) => {
                let responder = v.responder.clone();
                // F-28: no SASL2 tasks after a token login.
                Step::Success(
                    Authenticated::new(account, Some(responder))
                        .with_state(Box::new(FastOutcome(Mutex::new(Some(v)))))
                        .without_tasks(),
                )
            }
            Err(reason) => Step::Failure(failure_for(reason)),
        }
    }
}

impl FastPlugin {
    /// The mechanism a `<request-token>` names, if this stream offered it (protocol.md §9
    /// item 8: a mechanism that was not offered gets no token).
    fn requested(ctx: &SuccessContext<'_>) -> Option<Result<HtMechanism, ()>> {
        let el = ctx.request.inline_child("request-token", ns::FAST)?;
        let offered = ctx
            .offer
            .and_then(|o| o.state::<FastOffer>())
            .map_or(&[][..], |o| &o.mechanisms[..]);
        Some(
            RequestToken::try_from(el.clone())
                .ok()
                .and_then(|r| HtMechanism::from_name(&r.mechanism))
                .filter(|m| offered.contains(m))
                .ok_or(()),
        )
    }
}

#[async_trait]
impl InlineFeature for FastPlugin {
    fn name(&self) -> &'static str {
        "fast"
    }

    fn order(&self) -> InlineOrder {
        InlineOrder::TOKEN
    }

    fn offer(&self, stream: &StreamInfo) -> Option<Offer> {
        let offered = self.offered(stream);
        if offered.is_empty() {
            return None;
        }
        let mut cb: Vec<ChannelBindingType> = Vec::new();
        for m in &offered {
            if let Some(t) = m.binding.channel_binding_type()
                && !cb.contains(&t)
            {
                cb.push(t);
            }
        }
        // F-1, F-2. `tls-0rtt` (F-6) only where the host accepts early data and a mechanism
        // usable in it is offered (Z-2); elsewhere absent, which is what every peer sends.
        // Built with minidom's builder: the
        // same element from xmpp-parsers' `FastQuery` costs 4x as much per stream (1.2 µs,
        // measured) and writes tls-0rtt='false'; `features_parse_back_with_xmpp_parsers`
        // (tests/xmpp_parsers_gaps.rs) pins that xmpp-parsers reads it back.
        let mut element = Element::builder("fast", ns::FAST);
        if stream.zero_rtt && offered.iter().any(|m| m.binding.usable_in_early_data()) {
            element = element.attr(rxml::NcName::try_from("tls-0rtt").expect("NCName"), "true");
        }
        for m in &offered {
            element = element.append(text_child("mechanism", ns::FAST, m.name()));
        }
        let element = element.build();
        Some(
            Offer::new(element)
                .with_channel_bindings(cb)
                .with_state(Arc::new(FastOffer {
                    mechanisms: offered,
                })),
        )
    }

    fn claim(&self, ctx: &ClaimContext<'_>) -> Result<Option<Box<dyn Mechanism>>, Failure> {
        let Some(fast) = ctx.request.inline_child("fast", ns::FAST) else {
            return Ok(None);
        };
        let Some(offered) = ctx.offer.and_then(|o| o.state::<FastOffer>()) else {
            return Err(Failure::with_text(
                SaslCondition::MalformedRequest,
                "FAST is not available on this stream",
            ));
        };
        // F-25: tokens belong to a client; without its id there is nothing to look up.
        let Some(ua) = ctx.request.user_agent_id() else {
            return Err(Failure::with_text(
                SaslCondition::MalformedRequest,
                "FAST requires <user-agent id='...'>",
            ));
        };
        let (count, invalidate) = parse_fast_request(fast)?;
        let Some(mechanism) = HtMechanism::from_name(&ctx.request.mechanism)
            .filter(|m| offered.mechanisms.contains(m))
        else {
            return Err(Failure::with_text(
                SaslCondition::InvalidMechanism,
                "mechanism not offered in <fast>",
            ));
        };
        if ctx.stream.early_data {
            // Z-2: the client computed its MAC before the handshake ended: only bindings it
            // could know then. Z-3: count required. Both refused before the store is read.
            if !ctx.stream.zero_rtt {
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
        let Some(cb) = mechanism.cb_data(ctx.stream) else {
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
            early_data: ctx.stream.early_data,
            domain: ctx.stream.domain.clone(),
            done: false,
        })))
    }

    async fn on_success(
        &self,
        ctx: &SuccessContext<'_>,
        success: &mut SuccessBuilder,
    ) -> Result<(), InlineError> {
        let verified = if ctx.claimed_by_me {
            ctx.state
                .and_then(|s| s.downcast_ref::<FastOutcome>())
                .and_then(|o| o.0.lock().unwrap_or_else(PoisonError::into_inner).take())
        } else {
            None
        };
        let requested = Self::requested(ctx);
        if let Some(Err(())) = requested {
            debug!("no FAST token: requested mechanism missing or not offered");
        }
        let labels = |mechanism, kind| {
            let ua = ctx.request.user_agent.as_ref();
            TokenRequest {
                mechanism,
                kind,
                software: ua.and_then(|u| u.software.clone()),
                device: ua.and_then(|u| u.device.clone()),
            }
        };
        let issued = match verified {
            Some(v) => {
                // A FAST login: its own state change and any token in one write.
                let want = match requested {
                    // H-11: a token on request, rotation due or not (XEP-0484 §3.6).
                    Some(Ok(m)) => Some(labels(m, IssueKind::Requested)),
                    // F-22: no token after invalidation unless one was requested.
                    _ if v.invalidated => None,
                    // F-16: rotation, bound to the mechanism just used.
                    _ if v.rotation_due => Some(labels(v.mechanism, IssueKind::Rotated)),
                    _ => None,
                };
                self.tokens
                    .commit(v, want.as_ref())
                    .await
                    .map_err(|r| InlineError::Failure(failure_for(r)))?
            }
            None => {
                let Some(Ok(mechanism)) = requested else {
                    return Ok(());
                };
                let Some(ua) = ctx.request.user_agent_id() else {
                    // Prosody issues nothing silently; we at least say why (§9 item 7).
                    debug!("no FAST token: the client sent no user-agent id");
                    return Ok(());
                };
                let key = ClientKey::new(ctx.username, ua)
                    .map_err(|e| InlineError::internal("fast", e))?;
                self.tokens
                    .issue(&key, &labels(mechanism, IssueKind::Requested))
                    .await
                    .map_err(|e| InlineError::internal("fast", e))?
            }
        };
        if let Some(t) = issued {
            // F-11. The token is durable (issue/commit flushed) before this element exists.
            let expiry = xep0082(t.expires_at);
            let mut token = Element::from(Token {
                token: t.token.expose().to_owned(),
                expiry: expiry
                    .parse()
                    .map_err(|e| InlineError::internal("fast", e))?,
            });
            // XEP-0082 UTC form (`...Z`, protocol.md §8), whatever offset form xmpp-parsers
            // chooses for the parsed value.
            token.set_attr(
                rxml::Namespace::NONE,
                rxml::NcName::try_from("expiry").expect("valid name"),
                expiry,
            );
            success.push(token);
        }
        Ok(())
    }
}
