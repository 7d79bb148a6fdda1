//! The host's TOML configuration (`--config FILE`), deserialized with serde.
//!
//! Every key is checked (`deny_unknown_fields`): an unknown key or a bad value is an error
//! naming `section.key`, so a typo never silently falls back to a default. Tests build the
//! same [`HostConfig`] as typed values ([`HostConfig::new`]) instead of writing TOML.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sasl2_fast::fast::FastConfig;
use sasl2_fast::fast::config::duration;
use sasl2_fast::sasl2::accounts::normalize_username;
use serde::{Deserialize, Deserializer, de};
use zeroize::Zeroizing;

/// A configuration problem: `key` is the full dotted key (`server.listen`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", if key.is_empty() { message.clone() } else { format!("{key}: {message}") })]
pub struct ConfigError {
    /// `section.key` (or just the section, or empty for the whole file).
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

/// The whole file.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[accounts]`: username (normalized) and password; turned into SCRAM keys at start.
    #[serde(default)]
    pub accounts: BTreeMap<String, Zeroizing<String>>,
    /// `[plugins]`.
    #[serde(default)]
    pub plugins: Plugins,
}

/// `[plugins]`: the plugins the host loads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plugins {
    /// `[plugins.fast]`: present and `enabled` = FAST on.
    pub fast: Option<FastConfig>,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The XMPP domain served (lowercase).
    #[serde(deserialize_with = "domain")]
    pub domain: String,
    /// STARTTLS listener.
    pub listen: SocketAddr,
    /// Direct TLS listener (XEP-0368), if any.
    #[serde(default)]
    pub listen_tls: Option<SocketAddr>,
    /// Token store, generated certificate, pepper, changed passwords.
    #[serde(deserialize_with = "non_empty_path")]
    pub data_dir: PathBuf,
    /// PEM certificate chain; `None` = generate a self-signed one under `data_dir/tls`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (with `tls_cert`).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Stateless TLS session tickets (rustls ticketer, keys rotated every 6 hours, tickets
    /// valid 2 hours), so any number of clients can resume; false = rustls' 256-entry
    /// server-side session cache only.
    #[serde(default = "yes")]
    pub tls_session_tickets: bool,
    /// TLS 1.3 early data (0-RTT) on the direct-TLS listener: a resuming FAST client sends its
    /// `<authenticate>` with the ClientHello (docs/security.md, rules Z-1..Z-8). Off by default.
    #[serde(default)]
    pub tls_early_data: bool,
    /// When false, SASL2 is also offered on plaintext streams (loopback testing only).
    #[serde(default = "yes")]
    pub require_tls: bool,
    /// Concurrent connections accepted (1..=1 000 000).
    #[serde(
        default = "default_max_connections",
        deserialize_with = "max_connections"
    )]
    pub max_connections: usize,
    /// A connection with no incoming bytes for this long is closed.
    #[serde(default = "default_idle_timeout", deserialize_with = "idle_timeout")]
    pub idle_timeout: Duration,
    /// Time a connection has to authenticate.
    #[serde(default = "default_auth_timeout", deserialize_with = "auth_timeout")]
    pub auth_timeout: Duration,
    /// Largest top-level element accepted (1 KiB..=16 MiB).
    #[serde(
        default = "default_max_stanza_bytes",
        deserialize_with = "max_stanza_bytes"
    )]
    pub max_stanza_bytes: usize,
    /// Offer SASL PLAIN (XEP-0388 S-28 says SHOULD NOT; on by default for older clients and
    /// the xmpp.js PLAIN scenario).
    #[serde(default = "yes")]
    pub allow_plain: bool,
    /// Connections one source address (an IPv4 address, an IPv6 /64) may hold before they
    /// authenticate (1..=100 000); more are refused, so one address cannot take every slot.
    #[serde(
        default = "default_max_unauthenticated_per_ip",
        deserialize_with = "max_unauthenticated_per_ip"
    )]
    pub max_unauthenticated_per_ip: u32,
    /// Largest top-level element before authentication (1 KiB..=`max_stanza_bytes`; a SASL2
    /// `<authenticate>` is well under 4 KiB): bounds what unauthenticated peers make the
    /// host buffer.
    #[serde(
        default = "default_max_unauthenticated_stanza_bytes",
        deserialize_with = "max_stanza_bytes"
    )]
    pub max_unauthenticated_stanza_bytes: usize,
    /// Bytes per second one connection may send before it authenticates, TLS records
    /// included, after a burst of 16 KiB that holds a whole login (or one second's worth, if
    /// more); 0 = no limit. Reads pause while the allowance is used up, so what a fast sender
    /// sends waits in TCP, not in the host. Authentication lifts it.
    #[serde(
        default = "default_max_unauthenticated_bytes_per_s",
        deserialize_with = "max_unauthenticated_bytes_per_s"
    )]
    pub max_unauthenticated_bytes_per_s: u32,
    /// Failed password logins from one source or for one account before further password
    /// attempts are held back (`temporary-auth-failure`) with a doubling backoff; 0 = off.
    /// FAST logins are never held back.
    #[serde(
        default = "default_login_throttle_failures",
        deserialize_with = "login_throttle_failures"
    )]
    pub login_throttle_failures: u32,
    /// The longest backoff; also how long a failure count is remembered.
    #[serde(
        default = "default_login_throttle_max_backoff",
        deserialize_with = "auth_timeout"
    )]
    pub login_throttle_max_backoff: Duration,
    /// Loopback address of the metrics listener (`GET /metrics`, OpenMetrics text); `None` =
    /// no listener. A non-loopback address is refused: the endpoint has no authentication.
    #[serde(default, deserialize_with = "loopback_addr")]
    pub metrics_listen: Option<SocketAddr>,
}

fn loopback_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let addr = SocketAddr::deserialize(d)?;
    if !addr.ip().is_loopback() {
        return Err(de::Error::custom(format!(
            "{addr} is not a loopback address: the metrics listener has no authentication, so it \
             serves 127.0.0.0/8 or [::1] only (put a reverse proxy in front to expose it)"
        )));
    }
    Ok(Some(addr))
}

fn default_login_throttle_failures() -> u32 {
    5
}
fn default_login_throttle_max_backoff() -> Duration {
    Duration::from_secs(300)
}
fn login_throttle_failures<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    ranged(d, 0, 1000).map(|n| n as u32)
}

fn default_max_unauthenticated_per_ip() -> u32 {
    64
}
fn default_max_unauthenticated_stanza_bytes() -> usize {
    16 * 1024
}
fn default_max_unauthenticated_bytes_per_s() -> u32 {
    4096
}
fn max_unauthenticated_bytes_per_s<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = ranged(d, 0, 1 << 30)?;
    if (1..256).contains(&n) {
        return Err(de::Error::custom(
            "must be 0 (no limit) or between 256 and 1073741824",
        ));
    }
    Ok(n as u32)
}
fn max_unauthenticated_per_ip<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    ranged(d, 1, 100_000).map(|n| n as u32)
}

fn yes() -> bool {
    true
}
fn default_max_connections() -> usize {
    10_000
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_auth_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_stanza_bytes() -> usize {
    65_536
}

fn ranged<'de, D: Deserializer<'de>>(d: D, min: u64, max: u64) -> Result<u64, D::Error> {
    let n = i64::deserialize(d)?;
    u64::try_from(n)
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| de::Error::custom(format!("must be between {min} and {max}")))
}

fn ranged_duration<'de, D: Deserializer<'de>>(d: D, max: Duration) -> Result<Duration, D::Error> {
    let v = duration(d)?;
    if v.is_zero() || v > max {
        return Err(de::Error::custom(format!(
            "must be between 1 and {} seconds",
            max.as_secs()
        )));
    }
    Ok(v)
}

fn max_connections<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    ranged(d, 1, 1_000_000).map(|n| n as usize)
}
fn max_stanza_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    ranged(d, 1024, 16 * 1024 * 1024).map(|n| n as usize)
}
fn idle_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    ranged_duration(d, Duration::from_secs(7 * 86_400))
}
fn auth_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    ranged_duration(d, Duration::from_secs(3600))
}

fn domain<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?.to_ascii_lowercase();
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !s.starts_with('.')
        && !s.ends_with('.');
    if !ok {
        return Err(de::Error::custom("not a valid domain name"));
    }
    Ok(s)
}

fn non_empty_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Err(de::Error::custom("must not be empty"));
    }
    Ok(PathBuf::from(s))
}

impl fmt::Debug for HostConfig {
    // Passwords stay out of Debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostConfig")
            .field("server", &self.server)
            .field("accounts", &self.accounts.keys().collect::<Vec<_>>())
            .field("plugins", &self.plugins)
            .finish()
    }
}

impl ServerConfig {
    /// Defaults for `domain` with data under `data_dir`, listening on loopback ports chosen by
    /// the OS (tests bind their own listeners and pass them to [`crate::Host::start`]).
    pub fn new(domain: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            domain: domain.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            listen_tls: None,
            data_dir: data_dir.into(),
            tls_cert: None,
            tls_key: None,
            tls_session_tickets: true,
            tls_early_data: false,
            require_tls: true,
            max_connections: default_max_connections(),
            idle_timeout: default_idle_timeout(),
            auth_timeout: default_auth_timeout(),
            max_stanza_bytes: default_max_stanza_bytes(),
            allow_plain: true,
            max_unauthenticated_per_ip: default_max_unauthenticated_per_ip(),
            max_unauthenticated_stanza_bytes: default_max_unauthenticated_stanza_bytes(),
            max_unauthenticated_bytes_per_s: default_max_unauthenticated_bytes_per_s(),
            login_throttle_failures: default_login_throttle_failures(),
            login_throttle_max_backoff: default_login_throttle_max_backoff(),
            metrics_listen: None,
        }
    }
}

impl HostConfig {
    /// A config for `domain` with data under `data_dir`, no accounts and FAST with its
    /// defaults.
    pub fn new(domain: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        HostConfig {
            server: ServerConfig::new(domain, data_dir),
            accounts: BTreeMap::new(),
            plugins: Plugins {
                fast: Some(FastConfig::default()),
            },
        }
    }

    /// With an account.
    pub fn with_account(mut self, user: &str, password: &str) -> Self {
        self.accounts
            .insert(user.to_owned(), Zeroizing::new(password.to_owned()));
        self
    }

    /// The FAST settings when FAST is enabled.
    pub fn fast(&self) -> Option<&FastConfig> {
        self.plugins.fast.as_ref().filter(|f| f.enabled)
    }

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
        let de = toml::Deserializer::parse(s)
            .map_err(|e| ConfigError::new("", format!("invalid TOML: {}", e.message())))?;
        let mut config: HostConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().message().to_owned();
            // "missing field `domain`" at `server` is about `server.domain`.
            let key = match message
                .strip_prefix("missing field `")
                .and_then(|m| m.strip_suffix('`'))
            {
                Some(field) if path == "." => field.to_owned(),
                Some(field) => format!("{path}.{field}"),
                None if path == "." => String::new(),
                None => path,
            };
            ConfigError::new(key, message)
        })?;
        config.resolve_paths(base_dir);
        config.validate()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        let s = &mut self.server;
        resolve(&mut s.data_dir);
        s.tls_cert.as_mut().map(resolve);
        s.tls_key.as_mut().map(resolve);
        if let Some(f) = &mut self.plugins.fast {
            f.store_path.as_mut().map(resolve);
            f.pepper_file.as_mut().map(resolve);
        }
    }

    /// Checks what the types alone cannot: key pairs, account names, FAST relations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            let missing = if s.tls_cert.is_some() {
                "tls_key"
            } else {
                "tls_cert"
            };
            return Err(ConfigError::new(
                format!("server.{missing}"),
                "tls_cert and tls_key must be given together",
            ));
        }
        if s.max_unauthenticated_stanza_bytes > s.max_stanza_bytes {
            return Err(ConfigError::new(
                "server.max_unauthenticated_stanza_bytes",
                format!("must not exceed max_stanza_bytes ({})", s.max_stanza_bytes),
            ));
        }
        for (user, pw) in &self.accounts {
            let key = format!("accounts.{user}");
            let name = normalize_username(user)
                .ok_or_else(|| ConfigError::new(&key, "not a valid username"))?;
            if &name != user {
                return Err(ConfigError::new(
                    key,
                    format!("write the username in normalized form ({name:?})"),
                ));
            }
            if pw.is_empty() {
                return Err(ConfigError::new(key, "the password must not be empty"));
            }
        }
        if let Some(f) = &self.plugins.fast {
            f.validate()
                .map_err(|e| ConfigError::new(format!("plugins.fast.{}", e.key), e.message))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str =
        "[server]\ndomain = \"localhost\"\nlisten = \"127.0.0.1:5222\"\ndata_dir = \"data\"\n";

    #[test]
    fn the_demo_config_parses() {
        let text = include_str!("../../examples/host.toml");
        let c = HostConfig::from_toml_str(text, Path::new("examples")).unwrap();
        assert_eq!(c.server.domain, "localhost");
        assert_eq!(c.server.data_dir, Path::new("examples/data"));
        assert!(c.accounts.contains_key("alice"));
        let fast = c.fast().unwrap();
        assert_eq!(fast.token_ttl.as_secs(), 21 * 86400);
        assert_eq!(fast.token_min_ttl.as_secs(), 86400);
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = HostConfig::from_toml_str(
            &format!("{BASE}tls_cert = \"c.pem\"\ntls_key = \"/k.pem\"\n[plugins.fast]\npepper_file = \"p\"\n"),
            Path::new("/etc/x"),
        )
        .unwrap();
        assert_eq!(c.server.data_dir, Path::new("/etc/x/data"));
        assert_eq!(
            c.server.tls_cert.as_deref(),
            Some(Path::new("/etc/x/c.pem"))
        );
        assert_eq!(c.server.tls_key.as_deref(), Some(Path::new("/k.pem")));
        assert!(c.server.require_tls);
        assert!(c.server.tls_session_tickets);
        assert_eq!(c.server.max_connections, 10_000);
        assert_eq!(c.server.auth_timeout, Duration::from_secs(60));
        assert_eq!(c.server.max_unauthenticated_bytes_per_s, 4096);
        let off = HostConfig::from_toml_str(
            &format!("{BASE}max_unauthenticated_bytes_per_s = 0\n"),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(off.server.max_unauthenticated_bytes_per_s, 0);
        assert_eq!(
            c.fast().unwrap().pepper_file.as_deref(),
            Some(Path::new("/etc/x/p"))
        );
        let off = HostConfig::from_toml_str(
            &format!("{BASE}[plugins.fast]\nenabled = false\n"),
            Path::new("."),
        )
        .unwrap();
        assert!(off.fast().is_none());
        let none = HostConfig::from_toml_str(BASE, Path::new(".")).unwrap();
        assert!(none.fast().is_none());
        let no_tickets = HostConfig::from_toml_str(
            &format!("{BASE}tls_session_tickets = false\n"),
            Path::new("."),
        )
        .unwrap();
        assert!(!no_tickets.server.tls_session_tickets);
        assert!(!c.server.tls_early_data, "0-RTT is opt-in");
        let early =
            HostConfig::from_toml_str(&format!("{BASE}tls_early_data = true\n"), Path::new("."))
                .unwrap();
        assert!(early.server.tls_early_data);
    }

    #[test]
    fn errors_name_the_full_key() {
        for (extra, key, fragment) in [
            ("bogus = 1\n", "server.bogus", "unknown field"),
            ("max_connections = 0\n", "server.max_connections", "between"),
            (
                "max_unauthenticated_per_ip = 0\n",
                "server.max_unauthenticated_per_ip",
                "between",
            ),
            (
                "max_unauthenticated_bytes_per_s = 100\n",
                "server.max_unauthenticated_bytes_per_s",
                "0 (no limit) or between 256",
            ),
            (
                "max_unauthenticated_bytes_per_s = -1\n",
                "server.max_unauthenticated_bytes_per_s",
                "between",
            ),
            ("idle_timeout = \"2x\"\n", "server.idle_timeout", "unit"),
            ("auth_timeout = 7200\n", "server.auth_timeout", "between"),
            ("listen_tls = \"nope\"\n", "server.listen_tls", "address"),
            ("tls_cert = \"c\"\n", "server.tls_key", "together"),
            ("require_tls = \"yes\"\n", "server.require_tls", "bool"),
            (
                "[accounts]\nAlice = \"pw\"\n",
                "accounts.Alice",
                "normalized",
            ),
            ("[accounts]\nbob = \"\"\n", "accounts.bob", "empty"),
            (
                "[plugins.fast]\ntoken_ttl = -5\n",
                "plugins.fast.token_ttl",
                "negative",
            ),
            (
                "[plugins.fast]\ntoken_min_ttl = \"30d\"\n",
                "plugins.fast.token_min_ttl",
                "less than",
            ),
            (
                "[plugins.fast]\ntoken_tll = 5\n",
                "plugins.fast.token_tll",
                "unknown field",
            ),
            ("[plugins.other]\n", "plugins.other", "unknown field"),
            ("[extra]\n", "extra", "unknown field"),
            (
                "metrics_listen = \"0.0.0.0:9090\"\n",
                "server.metrics_listen",
                "not a loopback address",
            ),
            (
                "metrics_listen = \"[2001:db8::1]:9090\"\n",
                "server.metrics_listen",
                "not a loopback address",
            ),
        ] {
            let e =
                HostConfig::from_toml_str(&format!("{BASE}{extra}"), Path::new(".")).unwrap_err();
            assert_eq!(e.key, key, "{extra}: {e}");
            assert!(e.message.contains(fragment), "{extra}: {}", e.message);
            assert!(e.to_string().starts_with(&format!("{key}: ")), "{e}");
        }
        let e = HostConfig::from_toml_str(
            "[server]\nlisten = \"127.0.0.1:1\"\ndata_dir = \"d\"\n",
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(e.key, "server.domain", "{e}");
        let e = HostConfig::from_toml_str("[server\n", Path::new(".")).unwrap_err();
        assert!(e.message.contains("invalid TOML"), "{e}");
    }

    #[test]
    fn metrics_listen_takes_loopback_addresses() {
        let c = HostConfig::from_toml_str(BASE, Path::new(".")).unwrap();
        assert_eq!(c.server.metrics_listen, None);
        for addr in ["127.0.0.1:9090", "127.0.0.2:0", "[::1]:9090"] {
            let c = HostConfig::from_toml_str(
                &format!("{BASE}metrics_listen = \"{addr}\"\n"),
                Path::new("."),
            )
            .unwrap();
            assert_eq!(c.server.metrics_listen, Some(addr.parse().unwrap()));
        }
    }

    #[test]
    fn passwords_stay_out_of_debug() {
        let c = HostConfig::new("localhost", "/tmp/x").with_account("alice", "s3cret-pw");
        assert!(!format!("{c:?}").contains("s3cret-pw"));
    }
}
