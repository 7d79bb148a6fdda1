//! What the running host and an offline `host ctl` both open and change: the data directory,
//! the accounts, the FAST token store, and a password change (new keys, tokens revoked).
//!
//! One module for both, so a stopped host is administered with exactly the code a running
//! one uses: [`Host::start`](crate::Host::start) opens through here, and so does `host ctl`
//! (and `host passwd` / `host clients`, its older names) when no host answers.

use std::path::Path;
use std::sync::Arc;

use sasl2_fast::fast::FastPlugin;
use sasl2_fast::fast::hooks::{FastObserver, RevokedBy};
use sasl2_fast::fast::open::OpenError;
use sasl2_fast::sasl2::accounts::AccountStore;
use sasl2_fast::store::observed::StoreObserver;
use tracing::info;

use crate::accounts::{AccountsError, HostAccounts};
use crate::config::HostConfig;

/// The data directory, the accounts or the token store could not be opened or changed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A directory or file problem.
    #[error("{0}")]
    Io(String),
    /// Accounts could not be loaded or saved.
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    /// The FAST plugin (token store) could not be opened; sled allows one process at a time.
    #[error("FAST: {0}")]
    Fast(#[from] OpenError),
    /// The token store failed.
    #[error("token store: {0}")]
    Store(String),
}

/// Creates the data directory (owner-only on Unix).
fn ensure_data_dir(dir: &Path) -> Result<(), SetupError> {
    std::fs::create_dir_all(dir).map_err(|e| SetupError::Io(format!("{}: {e}", dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

/// The data directory made and the accounts loaded: what every use of a config starts with.
pub fn open_accounts(config: &HostConfig) -> Result<HostAccounts, SetupError> {
    ensure_data_dir(&config.server.data_dir)?;
    Ok(HostAccounts::load(
        &config.accounts,
        &config.server.data_dir,
    )?)
}

/// Opens the FAST plugin of a config, if enabled.
///
/// `accounts` is the account store every FAST login asks for the account side's revocation
/// cutoff (`None` for a stopped host: no logins); the token store's operations are reported
/// to `store_observer`.
pub async fn open_fast(
    config: &HostConfig,
    accounts: Option<Arc<dyn AccountStore>>,
    observers: Vec<Arc<dyn FastObserver>>,
    store_observer: Option<Arc<dyn StoreObserver>>,
) -> Result<Option<FastPlugin>, SetupError> {
    match config.fast() {
        Some(c) => Ok(Some(
            FastPlugin::open_observed(
                c.clone(),
                &config.server.data_dir,
                accounts,
                observers,
                store_observer,
            )
            .await?,
        )),
        None => Ok(None),
    }
}

/// Changes a password (new SCRAM keys, persisted in `accounts.toml` with the time before
/// which the account's tokens are void) and revokes the account's FAST tokens: a password
/// change must log out token-holding clients. Returns the normalized account.
pub async fn change_password(
    accounts: &HostAccounts,
    fast: Option<&FastPlugin>,
    user: &str,
    new_password: &str,
) -> Result<String, SetupError> {
    let user = accounts.set_password(user, new_password)?;
    if let Some(f) = fast {
        let store = |e: sasl2_fast::store::StoreError| SetupError::Store(e.to_string());
        f.tokens()
            .revoke_account(&user, &RevokedBy::PasswordChange)
            .await
            .map_err(store)?;
        f.tokens().store().flush().await.map_err(store)?;
    }
    info!(account = %user, "password changed, FAST tokens revoked");
    Ok(user)
}
