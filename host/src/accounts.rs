//! Accounts: SCRAM keys in memory, filled from `[accounts]`, with passwords changed by
//! `passwd` kept as SCRAM keys (never plaintext) in `<data_dir>/accounts.toml` (mode 0600).
//! Entries in that file override the config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sasl2_fast::sasl2::accounts::{AccountStore, MemoryAccounts, normalize_username};
use sasl2_fast::sasl2::credentials::derive_credentials;
use sasl2_fast::sasl2::{ScramCredentials, ScramHash};
use zeroize::Zeroizing;

/// PBKDF2 rounds for new SCRAM keys.
pub const ITERATIONS: u32 = 4096;

const HASHES: [(ScramHash, &str); 2] = [(ScramHash::Sha256, "sha256"), (ScramHash::Sha1, "sha1")];

/// The host's account database.
#[derive(Debug)]
pub struct HostAccounts {
    memory: Arc<MemoryAccounts>,
    file: PathBuf,
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
    /// Builds the database: config passwords become SCRAM keys, then `<data_dir>/accounts.toml`
    /// overrides them.
    pub fn load(
        config_accounts: &BTreeMap<String, Zeroizing<String>>,
        data_dir: &Path,
    ) -> Result<HostAccounts, AccountsError> {
        let memory = Arc::new(MemoryAccounts::new());
        for (user, pw) in config_accounts {
            memory.set_password(user, pw, ITERATIONS);
        }
        let this = HostAccounts {
            memory,
            file: data_dir.join("accounts.toml"),
            write_lock: Mutex::new(()),
        };
        for (user, creds) in this.read_file()? {
            for (hash, c) in creds {
                this.memory.set_credentials(&user, hash, c);
            }
        }
        Ok(this)
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

    /// Sets a password (creating the account if needed): new SCRAM keys, persisted first, then
    /// live. Returns the normalized username. Does not touch FAST tokens: see
    /// `Host::change_password`.
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
        let mut entry = toml::Table::new();
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
            "# SCRAM keys of accounts whose password was changed with `host passwd`.\n\
             # Entries here override [accounts] in the config.\n{}",
            toml::to_string(&table).map_err(|e| self.file_err(e))?
        );
        crate::tls::write_private(&self.file, text.as_bytes()).map_err(|e| self.file_err(e))?;
        for (h, c) in creds {
            self.memory.set_credentials(&user, h, c);
        }
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

    #[allow(clippy::type_complexity)]
    fn read_file(
        &self,
    ) -> Result<Vec<(String, Vec<(ScramHash, ScramCredentials)>)>, AccountsError> {
        let table = self.read_table()?;
        let mut out = Vec::new();
        for (user, v) in &table {
            let bad = |what: &str| self.file_err(format!("{user}: {what}"));
            if normalize_username(user).as_deref() != Some(user.as_str()) {
                return Err(bad("invalid username"));
            }
            let t = v.as_table().ok_or_else(|| bad("expected a table"))?;
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
            out.push((user.clone(), creds));
        }
        Ok(out)
    }
}
