//! The FAST inline feature: `<fast>` advertisement, claiming `<authenticate>` requests that
//! carry `<fast/>`, the HT mechanism attempt, and `<token>` in `<success>`.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use tracing::debug;

use super::clock::Clock as _;
use super::config::{FastConfig, PepperRecovery, StoreKind, StoreRecovery};
use super::hooks::FastObserver;
use super::ht::HtMechanism;
pub use super::standalone::failure_for;
use super::standalone::{
    ClientLabels, FastAttempt, FastLogin, FastOffer, FastRequest, issue_token,
};
use super::token::Pepper;
use super::tokens::FastTokens;
use crate::sasl2::accounts::AccountStore;
use crate::sasl2::{
    Authenticated, ClaimContext, Failure, InlineError, InlineFeature, InlineOrder, Mechanism,
    Offer, SaslCondition, Step, StreamInfo, SuccessBuilder, SuccessContext,
};
use crate::store::{RevocationScope, TokenStore};
use crate::xmpp::ns;

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
        FastOffer::for_stream(self.tokens.config(), stream)
            .map(|o| o.mechanisms().to_vec())
            .unwrap_or_default()
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
    crate::blocking::run_blocking(move || open_sled(&config, &data_dir))
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

/// One HT authentication attempt inside the negotiator: the standalone pieces
/// ([`FastAttempt::verify`]) behind the [`Mechanism`] trait.
struct HtAttempt {
    tokens: Arc<FastTokens>,
    attempt: Option<FastAttempt>,
}

impl fmt::Debug for HtAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HtAttempt")
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// The state an HT attempt leaves for [`FastPlugin::on_success`]: the verified login, whose
/// state change is written there (taken out once, hence the mutex).
struct FastOutcome(Mutex<Option<FastLogin>>);

#[async_trait]
impl Mechanism for HtAttempt {
    async fn step(&mut self, input: Option<&[u8]>) -> Step {
        // F-3: one round trip; a second step is malformed.
        let Some(attempt) = self.attempt.take() else {
            return Step::Failure(Failure::new(SaslCondition::MalformedRequest));
        };
        match attempt.verify(&self.tokens, input).await {
            Ok(login) => {
                let responder = login.additional_data().to_vec();
                // F-28: no SASL2 tasks after a token login.
                Step::Success(
                    Authenticated::new(login.account().to_owned(), Some(responder))
                        .with_state(Box::new(FastOutcome(Mutex::new(Some(login)))))
                        .without_tasks(),
                )
            }
            Err(f) => Step::Failure(f),
        }
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
        let offer = FastOffer::for_stream(self.tokens.config(), stream)?;
        Some(
            Offer::new(offer.element())
                .with_channel_bindings(offer.channel_binding_types())
                .with_state(Arc::new(offer)),
        )
    }

    fn claim(&self, ctx: &ClaimContext<'_>) -> Result<Option<Box<dyn Mechanism>>, Failure> {
        let Some(fast) = ctx.request.inline_child("fast", ns::FAST) else {
            return Ok(None);
        };
        let Some(offer) = ctx.offer.and_then(|o| o.state::<FastOffer>()) else {
            return Err(Failure::with_text(
                SaslCondition::MalformedRequest,
                "FAST is not available on this stream",
            ));
        };
        let request = FastRequest {
            mechanism: &ctx.request.mechanism,
            user_agent_id: ctx.request.user_agent_id(),
            fast,
        };
        let attempt = offer.claim(&request, ctx.stream)?;
        Ok(Some(Box::new(HtAttempt {
            tokens: Arc::clone(&self.tokens),
            attempt: Some(attempt),
        })))
    }

    async fn on_success(
        &self,
        ctx: &SuccessContext<'_>,
        success: &mut SuccessBuilder,
    ) -> Result<(), InlineError> {
        let login = if ctx.claimed_by_me {
            ctx.state
                .and_then(|s| s.downcast_ref::<FastOutcome>())
                .and_then(|o| o.0.lock().unwrap_or_else(PoisonError::into_inner).take())
        } else {
            None
        };
        let offer = ctx.offer.and_then(|o| o.state::<FastOffer>());
        let request = ctx.request.inline_child("request-token", ns::FAST);
        let requested = request.zip(offer).and_then(|(r, o)| o.requested(r));
        if request.is_some() && requested.is_none() {
            debug!("no FAST token: requested mechanism missing or not offered");
        }
        let ua = ctx.request.user_agent.as_ref();
        let labels = ClientLabels {
            software: ua.and_then(|u| u.software.clone()),
            device: ua.and_then(|u| u.device.clone()),
        };
        let token = match login {
            // A FAST login: its own state change and any token in one write.
            Some(login) => login
                .complete(&self.tokens, requested, &labels)
                .await
                .map_err(InlineError::Failure)?,
            None => {
                let Some(mechanism) = requested else {
                    return Ok(());
                };
                let Some(ua) = ctx.request.user_agent_id() else {
                    // Prosody issues nothing silently; we at least say why (§9 item 7).
                    debug!("no FAST token: the client sent no user-agent id");
                    return Ok(());
                };
                issue_token(&self.tokens, ctx.username, ua, mechanism, &labels)
                    .await
                    .map_err(|e| InlineError::internal("fast", e))?
            }
        };
        if let Some(token) = token {
            // F-11. The token is durable (issue/commit flushed) before this element exists.
            success.push(token);
        }
        Ok(())
    }
}
