//! The configuration file: the example host's TOML format, restricted to what this server
//! serves. `[server]` `domain`, `listen` (STARTTLS), `listen_tls` (direct TLS), `data_dir`,
//! `tls_cert`/`tls_key`, `require_tls`; `[accounts]`; the whole `[plugins.fast]` table (the
//! crate's own [`FastConfig`]). Any other key is an error naming it (`deny_unknown_fields`),
//! so a typo never falls back to a default. Relative paths are relative to the file's
//! directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use sasl2_fast::fast::FastConfig;
use sasl2_fast::sasl2::accounts::normalize_username;
use serde::Deserialize;
use zeroize::Zeroizing;

/// A bad configuration: the key (`section.key`, empty for the whole file) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `section.key`, or empty.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.key.as_str() {
            "" => f.write_str(&self.message),
            key => write!(f, "{key}: {}", self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole file.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    pub server: Server,
    /// `[accounts]`: username (normalized) = password, turned into SCRAM keys at start.
    #[serde(default)]
    pub accounts: BTreeMap<String, Zeroizing<String>>,
    /// `[plugins]`.
    #[serde(default)]
    pub plugins: Plugins,
}

impl std::fmt::Debug for Config {
    // Passwords stay out of Debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("server", &self.server)
            .field("accounts", &self.accounts.keys().collect::<Vec<_>>())
            .field("plugins", &self.plugins)
            .finish()
    }
}

/// `[plugins]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plugins {
    /// `[plugins.fast]`: present and `enabled` = FAST on.
    pub fast: Option<FastConfig>,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// The XMPP domain served.
    pub domain: String,
    /// The STARTTLS listener.
    pub listen: SocketAddr,
    /// The direct-TLS listener (XEP-0368), if any.
    #[serde(default)]
    pub listen_tls: Option<SocketAddr>,
    /// Token store, pepper, generated certificate.
    pub data_dir: PathBuf,
    /// PEM certificate chain; without it a self-signed one is generated in
    /// `<data_dir>/tls/cert.pem`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key, with `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// When false, SASL2 is also offered on plaintext streams (loopback testing only).
    #[serde(default = "yes")]
    pub require_tls: bool,
}

fn yes() -> bool {
    true
}

impl Config {
    /// A config for `domain` on loopback ports the system picks (STARTTLS and direct TLS),
    /// data under `data_dir`, no accounts and FAST with its defaults (for tests).
    pub fn loopback(domain: &str, data_dir: &Path) -> Config {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        Config {
            server: Server {
                domain: domain.to_owned(),
                listen: any,
                listen_tls: Some(any),
                data_dir: data_dir.to_owned(),
                tls_cert: None,
                tls_key: None,
                require_tls: true,
            },
            accounts: BTreeMap::new(),
            plugins: Plugins {
                fast: Some(FastConfig::default()),
            },
        }
    }

    /// With an account.
    pub fn with_account(mut self, user: &str, password: &str) -> Config {
        self.accounts
            .insert(user.to_owned(), Zeroizing::new(password.to_owned()));
        self
    }

    /// The FAST settings when FAST is enabled.
    pub fn fast(&self) -> Option<&FastConfig> {
        self.plugins.fast.as_ref().filter(|f| f.enabled)
    }

    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("", format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base)
    }

    /// Parses and checks config text; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| err("", format!("invalid TOML: {}", e.message())))?;
        let mut c: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().message().to_owned();
            // "missing field `x`" at `server` is about `server.x` (an unknown field's path
            // already ends with it).
            let field = (message.strip_prefix("missing field `")).and_then(|m| m.split('`').next());
            let key = match (field, path.as_str()) {
                (Some(f), ".") => f.to_owned(),
                (Some(f), p) => format!("{p}.{f}"),
                (None, ".") => String::new(),
                (None, p) => p.to_owned(),
            };
            err(key, message)
        })?;
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut c.server.data_dir);
        c.server.tls_cert.as_mut().map(resolve);
        c.server.tls_key.as_mut().map(resolve);
        if let Some(f) = &mut c.plugins.fast {
            f.store_path.as_mut().map(resolve);
            f.pepper_file.as_mut().map(resolve);
        }
        c.check()?;
        Ok(c)
    }

    /// What the types alone cannot say.
    fn check(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            let missing = if s.tls_cert.is_some() {
                "tls_key"
            } else {
                "tls_cert"
            };
            return Err(err(
                format!("server.{missing}"),
                "tls_cert and tls_key must be given together",
            ));
        }
        if sasl2_fast::jid::BareJid::new(&s.domain).map_or(true, |j| j.node().is_some()) {
            return Err(err("server.domain", "not a domain"));
        }
        for (user, password) in &self.accounts {
            let key = format!("accounts.{user}");
            if normalize_username(user).as_deref() != Some(user.as_str()) {
                return Err(err(key, "not a username in normalized form"));
            }
            if password.is_empty() {
                return Err(err(key, "the password must not be empty"));
            }
        }
        if let Some(f) = &self.plugins.fast {
            f.validate()
                .map_err(|e| err(format!("plugins.fast.{}", e.key), e.message))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "[server]\ndomain = \"localhost\"\nlisten = \"127.0.0.1:5222\"\n\
                        data_dir = \"data\"\n[accounts]\nalice = \"alicepass\"\n\
                        [plugins.fast]\ntoken_ttl = \"2d\"\n";

    #[test]
    fn the_host_format_parses() {
        let c = Config::parse(GOOD, Path::new("/etc/x")).unwrap();
        assert_eq!(c.server.data_dir, Path::new("/etc/x/data"));
        assert!(c.server.require_tls && c.server.listen_tls.is_none());
        assert_eq!(c.fast().unwrap().token_ttl.as_secs(), 2 * 86400);
        assert!(!format!("{c:?}").contains("alicepass"));
    }

    /// Every other key, anywhere, is refused with its name.
    #[test]
    fn unknown_keys_are_named() {
        for (extra, key) in [
            ("[server]\nmax_connections = 5\n", "server.max_connections"),
            ("[plugins.fast]\ntoken_tll = 5\n", "plugins.fast.token_tll"),
            ("[plugins.cam]\n", "plugins.cam"),
            ("[metrics]\n", "metrics"),
            ("[accounts]\nAlice = \"x\"\n", "accounts.Alice"),
        ] {
            let text = merge(GOOD, extra);
            let e = Config::parse(&text, Path::new(".")).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
        let e = Config::parse("[server]\ndomain = \"localhost\"\n", Path::new(".")).unwrap_err();
        assert_eq!(e.key, "server.listen");
    }

    /// Appends `extra`'s keys to the table of the same name in `base`, or adds its table.
    fn merge(base: &str, extra: &str) -> String {
        let (head, rest) = extra.split_once('\n').unwrap();
        match base.find(&format!("{head}\n")) {
            Some(i) => {
                let at = i + head.len() + 1;
                format!("{}{rest}{}", &base[..at], &base[at..])
            }
            None => format!("{base}{extra}"),
        }
    }
}
