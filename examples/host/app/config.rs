//! The host's TOML configuration (`--config FILE`).
//!
//! Every key is checked: an unknown key or a bad value is an error naming `section.key`, so a
//! typo never silently falls back to a default.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sasl2_fast::fast::FastConfig;
use sasl2_fast::sasl2::accounts::normalize_username;
use zeroize::Zeroizing;

/// A configuration problem: `key` is the full dotted key (`server.listen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `section.key` (or just the section).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Validated host settings. Paths are absolute or relative to the process's working directory
/// (relative paths in the file were resolved against the file's directory).
#[derive(Clone)]
pub struct HostConfig {
    /// The XMPP domain served.
    pub domain: String,
    /// STARTTLS listener.
    pub listen: SocketAddr,
    /// Direct TLS listener (XEP-0368), if any.
    pub listen_tls: Option<SocketAddr>,
    /// Token store, generated certificate, pepper, changed passwords.
    pub data_dir: PathBuf,
    /// PEM certificate chain; `None` = generate a self-signed one under `data_dir/tls`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (with `tls_cert`).
    pub tls_key: Option<PathBuf>,
    /// When false, SASL2 is also offered on plaintext streams (loopback testing only).
    pub require_tls: bool,
    /// Concurrent connections accepted.
    pub max_connections: usize,
    /// A connection with no incoming bytes for this long is closed.
    pub idle_timeout: Duration,
    /// Time a connection has to authenticate.
    pub auth_timeout: Duration,
    /// Largest top-level element accepted.
    pub max_stanza_bytes: usize,
    /// Offer SASL PLAIN (XEP-0388 S-28 says SHOULD NOT; on by default for older clients and
    /// the xmpp.js PLAIN scenario).
    pub allow_plain: bool,
    /// `[accounts]`: username (normalized) and password, in file order.
    pub accounts: Vec<(String, Zeroizing<String>)>,
    /// `[plugins.fast]` when present and enabled.
    pub fast: Option<FastConfig>,
}

impl fmt::Debug for HostConfig {
    // Passwords stay out of Debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostConfig")
            .field("domain", &self.domain)
            .field("listen", &self.listen)
            .field("listen_tls", &self.listen_tls)
            .field("data_dir", &self.data_dir)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("require_tls", &self.require_tls)
            .field("max_connections", &self.max_connections)
            .field("idle_timeout", &self.idle_timeout)
            .field("auth_timeout", &self.auth_timeout)
            .field("max_stanza_bytes", &self.max_stanza_bytes)
            .field("allow_plain", &self.allow_plain)
            .field(
                "accounts",
                &self.accounts.iter().map(|(u, _)| u).collect::<Vec<_>>(),
            )
            .field("fast", &self.fast)
            .finish()
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() { p } else { base.join(p) }
}

fn string<'a>(key: &str, v: &'a toml::Value) -> Result<&'a str, ConfigError> {
    v.as_str()
        .ok_or_else(|| ConfigError::new(key, "expected a string"))
}

fn addr(key: &str, v: &toml::Value) -> Result<SocketAddr, ConfigError> {
    string(key, v)?
        .parse()
        .map_err(|_| ConfigError::new(key, "expected an address like 127.0.0.1:5222"))
}

fn int(key: &str, v: &toml::Value, min: i64, max: i64) -> Result<i64, ConfigError> {
    let n = v
        .as_integer()
        .ok_or_else(|| ConfigError::new(key, "expected an integer"))?;
    if n < min || n > max {
        return Err(ConfigError::new(
            key,
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(n)
}

fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !d.starts_with('.')
        && !d.ends_with('.')
}

impl HostConfig {
    /// Reads and parses a config file; relative paths are relative to its directory.
    pub fn load(path: &Path) -> Result<HostConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("{}: {e}", path.display())))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Self::from_toml_str(&text, base)
    }

    /// Parses config text; relative paths are resolved against `base_dir`.
    pub fn from_toml_str(s: &str, base_dir: &Path) -> Result<HostConfig, ConfigError> {
        let table: toml::Table = s.parse().map_err(|e: toml::de::Error| {
            ConfigError::new("", format!("invalid TOML: {}", e.message()))
        })?;
        let mut server = None;
        let mut accounts_t = None;
        let mut plugins = None;
        for (k, v) in &table {
            match k.as_str() {
                "server" => server = Some(v),
                "accounts" => accounts_t = Some(v),
                "plugins" => plugins = Some(v),
                other => return Err(ConfigError::new(other, "unknown section")),
            }
        }
        let server = server
            .ok_or_else(|| ConfigError::new("server", "missing section"))?
            .as_table()
            .ok_or_else(|| ConfigError::new("server", "expected a table"))?;

        let mut domain = None;
        let mut listen = None;
        let mut listen_tls = None;
        let mut data_dir = None;
        let mut tls_cert = None;
        let mut tls_key = None;
        let mut require_tls = true;
        let mut max_connections = 10_000;
        let mut idle_timeout = Duration::from_secs(300);
        let mut auth_timeout = Duration::from_secs(60);
        let mut max_stanza_bytes = 65_536;
        let mut allow_plain = true;
        for (k, v) in server {
            let key = format!("server.{k}");
            match k.as_str() {
                "domain" => {
                    let d = string(&key, v)?.to_ascii_lowercase();
                    if !valid_domain(&d) {
                        return Err(ConfigError::new(key, "not a valid domain name"));
                    }
                    domain = Some(d);
                }
                "listen" => listen = Some(addr(&key, v)?),
                "listen_tls" => listen_tls = Some(addr(&key, v)?),
                "data_dir" => {
                    let s = string(&key, v)?;
                    if s.is_empty() {
                        return Err(ConfigError::new(key, "must not be empty"));
                    }
                    data_dir = Some(resolve(base_dir, s));
                }
                "tls_cert" => tls_cert = Some(resolve(base_dir, string(&key, v)?)),
                "tls_key" => tls_key = Some(resolve(base_dir, string(&key, v)?)),
                "require_tls" => {
                    require_tls = v
                        .as_bool()
                        .ok_or_else(|| ConfigError::new(&key, "expected true or false"))?
                }
                "max_connections" => max_connections = int(&key, v, 1, 1_000_000)? as usize,
                "idle_timeout" => {
                    idle_timeout = Duration::from_secs(int(&key, v, 1, 86_400 * 7)? as u64)
                }
                "auth_timeout" => auth_timeout = Duration::from_secs(int(&key, v, 1, 3600)? as u64),
                "allow_plain" => {
                    allow_plain = v
                        .as_bool()
                        .ok_or_else(|| ConfigError::new(&key, "expected true or false"))?
                }
                "max_stanza_bytes" => {
                    max_stanza_bytes = int(&key, v, 1024, 16 * 1024 * 1024)? as usize
                }
                _ => return Err(ConfigError::new(key, "unknown option")),
            }
        }
        if tls_cert.is_some() != tls_key.is_some() {
            let missing = if tls_cert.is_some() {
                "tls_key"
            } else {
                "tls_cert"
            };
            return Err(ConfigError::new(
                format!("server.{missing}"),
                "tls_cert and tls_key must be given together",
            ));
        }

        let mut accounts = Vec::new();
        if let Some(a) = accounts_t {
            let a = a
                .as_table()
                .ok_or_else(|| ConfigError::new("accounts", "expected a table"))?;
            for (user, pw) in a {
                let key = format!("accounts.{user}");
                let name = normalize_username(user)
                    .ok_or_else(|| ConfigError::new(&key, "not a valid username"))?;
                if &name != user {
                    return Err(ConfigError::new(
                        key,
                        format!("write the username in normalized form ({name:?})"),
                    ));
                }
                let pw = string(&key, pw)?;
                if pw.is_empty() {
                    return Err(ConfigError::new(key, "the password must not be empty"));
                }
                accounts.push((name, Zeroizing::new(pw.to_owned())));
            }
        }

        let mut fast = None;
        if let Some(p) = plugins {
            let p = p
                .as_table()
                .ok_or_else(|| ConfigError::new("plugins", "expected a table"))?;
            for (name, v) in p {
                match name.as_str() {
                    "fast" => {
                        let t = v
                            .as_table()
                            .ok_or_else(|| ConfigError::new("plugins.fast", "expected a table"))?;
                        let mut c = FastConfig::from_table(t).map_err(|e| {
                            ConfigError::new(format!("plugins.fast.{}", e.key), e.message)
                        })?;
                        c.store_path = c.store_path.map(|p| base_dir.join(p));
                        c.pepper_file = c.pepper_file.map(|p| base_dir.join(p));
                        if c.enabled {
                            fast = Some(c);
                        }
                    }
                    other => {
                        return Err(ConfigError::new(
                            format!("plugins.{other}"),
                            "unknown plugin",
                        ));
                    }
                }
            }
        }

        Ok(HostConfig {
            domain: domain.ok_or_else(|| ConfigError::new("server.domain", "missing"))?,
            listen: listen.ok_or_else(|| ConfigError::new("server.listen", "missing"))?,
            listen_tls,
            data_dir: data_dir.ok_or_else(|| ConfigError::new("server.data_dir", "missing"))?,
            tls_cert,
            tls_key,
            require_tls,
            max_connections,
            idle_timeout,
            auth_timeout,
            max_stanza_bytes,
            allow_plain,
            accounts,
            fast,
        })
    }
}
