//! Starting FAST from a config: open the token store it names (memory, sled, PostgreSQL) and
//! load the pepper beside it, refusing what would silently void or resurrect tokens (a store
//! that lost writes, a pepper missing under a store that still holds clients). The results
//! make a [`FastTokens`] and its [`FastPlugin`] (`FastPlugin::open*`).

use std::path::Path;
use std::sync::Arc;

use super::clock::{Clock as _, SystemClock};
use super::config::{FastConfig, PepperRecovery, StoreKind, StoreRecovery};
use super::hooks::FastObserver;
use super::plugin::FastPlugin;
use super::token::Pepper;
use super::tokens::FastTokens;
use crate::sasl2::accounts::AccountStore;
use crate::store::memory::MemoryStore;
use crate::store::observed::{ObservedStore, StoreObserver};
use crate::store::sled_store::{DamagePolicy, SledOptions, SledStore};
use crate::store::{RevocationScope, StoreError, TokenStore};

/// FAST could not start.
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
    Store(#[from] StoreError),
}

impl FastPlugin {
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
    /// token store), and with the store wrapped in an [`ObservedStore`] reporting to
    /// `store_observer` (store latency and errors for metrics), if one is given.
    pub async fn open_observed(
        config: FastConfig,
        data_dir: &Path,
        accounts: Option<Arc<dyn AccountStore>>,
        observers: Vec<Arc<dyn FastObserver>>,
        store_observer: Option<Arc<dyn StoreObserver>>,
    ) -> Result<Self, OpenError> {
        let store = open_store(&config, data_dir).await?;
        let store = match store_observer {
            Some(o) => Arc::new(ObservedStore::new(store, o)),
            None => store,
        };
        let pepper = load_pepper(&config, data_dir, &*store).await?;
        let mut tokens = FastTokens::new(store, pepper, config);
        if let Some(accounts) = accounts {
            tokens = tokens.with_accounts(accounts);
        }
        let tokens = observers
            .into_iter()
            .fold(tokens, FastTokens::with_observer);
        Ok(Self::new(Arc::new(tokens)))
    }
}

/// The store `config.store` names.
async fn open_store(
    config: &FastConfig,
    data_dir: &Path,
) -> Result<Arc<dyn TokenStore>, OpenError> {
    Ok(match config.store {
        StoreKind::Memory => Arc::new(MemoryStore::new()),
        StoreKind::Sled => Arc::new(open_sled_off_executor(config, data_dir).await?),
        StoreKind::Postgres => open_postgres(config).await?,
    })
}

/// The pepper (`pepper_file`, default `<data_dir>/fast-pepper`): loaded when it exists, else
/// created, but only for a store without clients, whose tokens it would void, unless
/// `pepper_recovery = "new"`; then the store's tokens are revoked as well, so that what can no
/// longer verify is also marked revoked.
async fn load_pepper(
    config: &FastConfig,
    data_dir: &Path,
    store: &dyn TokenStore,
) -> Result<Pepper, OpenError> {
    let path = config
        .pepper_file
        .clone()
        .unwrap_or_else(|| data_dir.join("fast-pepper"));
    if path.exists() {
        return Ok(Pepper::load(&path)?);
    }
    let records = store.len().await?;
    if records > 0 && config.pepper_recovery != PepperRecovery::New {
        return Err(OpenError::PepperMissing {
            path: path.display().to_string(),
            records,
        });
    }
    let pepper = Pepper::create(&path)?;
    if records > 0 {
        // Tokens derived from the lost pepper can never verify again; revoking them makes
        // that explicit (and their slots expire away with the sweep).
        let now = SystemClock.now_ms();
        store
            .raise_revocation_cutoff(RevocationScope::All, now.saturating_add(1))
            .await?;
        tracing::warn!(
            path = %path.display(),
            records,
            "created a new FAST pepper (pepper_recovery = \"new\"): every FAST client is logged out"
        );
    }
    Ok(pepper)
}

/// The sled store a config names (`store_path`, default `<data_dir>/fast-tokens`), opened with
/// its cache size and damage policy; also what `host migrate-store` copies from.
pub fn open_sled(config: &FastConfig, data_dir: &Path) -> Result<SledStore, StoreError> {
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
) -> Result<SledStore, StoreError> {
    let (config, data_dir) = (config.clone(), data_dir.to_path_buf());
    crate::blocking::run_blocking(move || open_sled(&config, &data_dir))
        .await
        .unwrap_or_else(|| Err(StoreError::backend("opening the token store failed")))
}

/// The PostgreSQL store of a config (feature `postgres`).
#[cfg(feature = "postgres")]
async fn open_postgres(config: &FastConfig) -> Result<Arc<dyn TokenStore>, OpenError> {
    use crate::store::postgres::{PostgresOptions, PostgresStore};
    let url = config
        .postgres_url
        .as_ref()
        .ok_or_else(|| StoreError::backend("store = \"postgres\" needs postgres_url"))?;
    let mut options = PostgresOptions::new(url.0.clone());
    options.pool_size = config.postgres_pool_size;
    options.ca_file = config.postgres_ca_file.clone();
    Ok(Arc::new(PostgresStore::open(options).await?))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_config: &FastConfig) -> Result<Arc<dyn TokenStore>, OpenError> {
    Err(OpenError::Store(StoreError::backend(
        "store = \"postgres\" needs sasl2-fast built with the `postgres` feature",
    )))
}
