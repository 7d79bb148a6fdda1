//! Accounts: SCRAM keys in memory, filled from `[accounts]`, with passwords changed by
//! `passwd` kept as SCRAM keys (never plaintext) in `<data_dir>/accounts.toml` (mode 0600).
//! Entries in that file override the config.
//!
//! Salts tell nothing (S-29): a config account's salt is derived from the key unknown names'
//! fake salts come from (`<data_dir>/scram-fake-key`), so it is the same at every start and
//! indistinguishable from the salt the name would have as no account; a changed password gets
//! a fresh random salt of the same length, stored with it.
//!
//! The account side holds revocations: a password change stores, with the new keys, the time
//! before which the account's FAST tokens are void (`revoked_before`, unix ms), and every FAST
//! login checks it (`AccountStore::revocation_cutoff`), so a token store restored from a backup
//! older than the change cannot bring the revoked tokens back. An account that is in neither
//! the config nor this file does not exist: its tokens are void.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sasl2_fast::sasl2::accounts::{AccountStore, MemoryAccounts, normalize_username};
use sasl2_fast::sasl2::credentials::{FakeKey, derive_credentials, derive_credentials_with_salt};
use sasl2_fast::sasl2::{ScramCredentials, ScramHash};
use zeroize::Zeroizing;

/// PBKDF2 rounds for new SCRAM keys.
pub const ITERATIONS: u32 = 4096;

/// The key of fake salts and config accounts' salts, under `data_dir`.
pub const SALT_KEY_FILE: &str = "scram-fake-key";

const HASHES: [(ScramHash, &str); 2] = [(ScramHash::Sha256, "sha256"), (ScramHash::Sha1, "sha1")];

/// The host's account database.
#[derive(Debug)]
pub struct HostAccounts {
    memory: Arc<MemoryAccounts>,
    file: PathBuf,
    salt_key: FakeKey,
    write_lock: Mutex<()>,
}

/// An account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// Not a valid username.
    #[error("invalid username")]
    InvalidUser,
    /// Empty password.
    #[error("the password must not be empty")]
    EmptyPassword,
    /// The accounts file could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What happened.
        message: String,
    },
}

impl HostAccounts {
    /// Builds the database: config passwords become SCRAM keys (salted from
    /// `<data_dir>/scram-fake-key`, created if missing), then `<data_dir>/accounts.toml`
    /// overrides them and adds their revocation cutoffs.
    pub fn load(
        config_accounts: &BTreeMap<String, Zeroizing<String>>,
        data_dir: &Path,
    ) -> Result<HostAccounts, AccountsError> {
        let key_file = data_dir.join(SALT_KEY_FILE);
        let salt_key = FakeKey::load_or_create(&key_file).map_err(|e| AccountsError::File {
            path: key_file.display().to_string(),
            message: e.to_string(),
        })?;
        let memory = Arc::new(MemoryAccounts::new());
        for (user, pw) in config_accounts {
            for (h, _) in HASHES {
                let salt = salt_key.salt(h, user);
                let creds = derive_credentials_with_salt(h, pw, &salt, ITERATIONS);
                memory.set_credentials(user, h, creds);
            }
        }
        let this = HostAccounts {
            memory,
            file: data_dir.join("accounts.toml"),
            salt_key,
            write_lock: Mutex::new(()),
        };
        for stored in this.read_file()? {
            for (hash, c) in stored.credentials {
                this.memory.set_credentials(&stored.user, hash, c);
            }
            this.memory
                .revoke_issued_before(&stored.user, stored.revoked_before);
        }
        Ok(this)
    }

    /// The key unknown accounts' fake SCRAM credentials come from (the one config accounts'
    /// salts come from): give it to the SCRAM and PLAIN providers.
    pub fn fake_key(&self) -> &FakeKey {
        &self.salt_key
    }

    /// The in-memory store the SASL mechanisms verify against.
    pub fn memory(&self) -> &Arc<MemoryAccounts> {
        &self.memory
    }

    /// The same store as a trait object.
    pub fn store(&self) -> Arc<dyn AccountStore> {
        self.memory.clone()
    }

    /// True if the account exists.
    pub fn contains(&self, user: &str) -> bool {
        normalize_username(user).is_some_and(|u| self.memory.contains(&u))
    }

    /// The path of the persisted keys.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Sets a password (creating the account if needed): new SCRAM keys and the time before
    /// which the account's FAST tokens are void (now), persisted first, then live. Returns the
    /// normalized username. The token store is not touched: `Host::change_password` revokes
    /// there too (so the tokens also die where the account side is not asked).
    pub fn set_password(&self, user: &str, password: &str) -> Result<String, AccountsError> {
        let user = normalize_username(user).ok_or(AccountsError::InvalidUser)?;
        if password.is_empty() {
            return Err(AccountsError::EmptyPassword);
        }
        let creds: Vec<(ScramHash, ScramCredentials)> = HASHES
            .iter()
            .map(|(h, _)| (*h, derive_credentials(*h, password, ITERATIONS)))
            .collect();
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut table = self.read_table()?;
        // +1: a token issued in the same millisecond as the change is void too (as the token
        // store's cutoff does). Never lowered, whatever the clock did since the last change.
        let revoked_before = table
            .get(&user)
            .and_then(|e| e.get(REVOKED_BEFORE))
            .and_then(|v| v.as_integer())
            .map_or(0, |v| v.max(0) as u64)
            .max(now_ms().saturating_add(1));
        let mut entry = toml::Table::new();
        entry.insert(
            REVOKED_BEFORE.into(),
            toml::Value::Integer(revoked_before.min(i64::MAX as u64) as i64),
        );
        for (h, c) in &creds {
            let name = HASHES
                .iter()
                .find(|(x, _)| x == h)
                .map(|(_, n)| *n)
                .unwrap_or("?");
            let mut t = toml::Table::new();
            t.insert(
                "iterations".into(),
                toml::Value::Integer(c.iterations as i64),
            );
            t.insert("salt".into(), B64.encode(&c.salt).into());
            t.insert("stored_key".into(), B64.encode(&*c.stored_key).into());
            t.insert("server_key".into(), B64.encode(&*c.server_key).into());
            entry.insert(name.into(), toml::Value::Table(t));
        }
        table.insert(user.clone(), toml::Value::Table(entry));
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.file_err(e))?;
        }
        let text = format!(
            "# SCRAM keys of accounts whose password was changed with `host passwd`, and the\n\
             # time (unix ms) before which their FAST tokens are void (`revoked_before`).\n\
             # Entries here override [accounts] in the config.\n{}",
            toml::to_string(&table).map_err(|e| self.file_err(e))?
        );
        crate::tls::write_private(&self.file, text.as_bytes()).map_err(|e| self.file_err(e))?;
        for (h, c) in creds {
            self.memory.set_credentials(&user, h, c);
        }
        self.memory.revoke_issued_before(&user, revoked_before);
        Ok(user)
    }

    fn file_err(&self, e: impl std::fmt::Display) -> AccountsError {
        AccountsError::File {
            path: self.file.display().to_string(),
            message: e.to_string(),
        }
    }

    fn read_table(&self) -> Result<toml::Table, AccountsError> {
        match std::fs::read_to_string(&self.file) {
            Ok(s) => s
                .parse()
                .map_err(|e: toml::de::Error| self.file_err(e.message())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(toml::Table::new()),
            Err(e) => Err(self.file_err(e)),
        }
    }

    fn read_file(&self) -> Result<Vec<StoredAccount>, AccountsError> {
        let table = self.read_table()?;
        let mut out = Vec::new();
        for (user, v) in &table {
            let bad = |what: &str| self.file_err(format!("{user}: {what}"));
            if normalize_username(user).as_deref() != Some(user.as_str()) {
                return Err(bad("invalid username"));
            }
            let t = v.as_table().ok_or_else(|| bad("expected a table"))?;
            // Absent in files written before the account side held revocations.
            let revoked_before = match t.get(REVOKED_BEFORE) {
                None => 0,
                Some(v) => v
                    .as_integer()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| bad(REVOKED_BEFORE))? as u64,
            };
            let mut creds = Vec::new();
            for (h, name) in HASHES {
                let Some(c) = t.get(name) else { continue };
                let get = |k: &str| -> Result<Vec<u8>, AccountsError> {
                    let s = c.get(k).and_then(|v| v.as_str()).ok_or_else(|| bad(k))?;
                    B64.decode(s).map_err(|_| bad(k))
                };
                let iterations = c
                    .get("iterations")
                    .and_then(|v| v.as_integer())
                    .filter(|n| (1..=10_000_000).contains(n))
                    .ok_or_else(|| bad("iterations"))? as u32;
                creds.push((
                    h,
                    ScramCredentials {
                        salt: get("salt")?,
                        iterations,
                        stored_key: Zeroizing::new(get("stored_key")?),
                        server_key: Zeroizing::new(get("server_key")?),
                    },
                ));
            }
            out.push(StoredAccount {
                user: user.clone(),
                credentials: creds,
                revoked_before,
            });
        }
        Ok(out)
    }
}

/// The key of an entry's revocation cutoff in `accounts.toml`.
const REVOKED_BEFORE: &str = "revoked_before";

/// One entry of `accounts.toml`.
struct StoredAccount {
    user: String,
    credentials: Vec<(ScramHash, ScramCredentials)>,
    revoked_before: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u64::MAX as u128) as u64)
}
