//! FAST configuration: the `[plugins.fast]` table of a host's config, deserialized with serde
//! and validated.
//!
//! Defaults match Prosody's `mod_sasl2_fast` (21-day tokens, rotated after a day) and are
//! listed with their documentation in the crate's `plugin.toml`; a test keeps the two equal.
//! Unknown keys are errors (`deny_unknown_fields`): a typo must never fall back to a default
//! silently. Durations are integer seconds (Prosody-compatible) or strings such as `"21d"`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

use super::ht::HtMechanism;

/// The plugin manifest shipped at the crate root.
pub const PLUGIN_MANIFEST: &str = include_str!("../../plugin.toml");

/// Which token store the plugin uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum StoreKind {
    /// sled on disk (the default).
    Sled,
    /// In memory; tokens are lost on restart.
    Memory,
    /// PostgreSQL at `postgres_url` (feature `postgres`), shared by a cluster of hosts.
    Postgres,
}

/// A PostgreSQL connection string (URL or `key=value`). Its `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct PostgresUrl(pub String);

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A password may sit anywhere in a libpq string: show only the parts that name the
        // server (and never the raw text).
        let mut shown = Vec::new();
        for part in self
            .0
            .split(|c: char| c.is_whitespace() || c == '&' || c == '?')
        {
            let lower = part.to_ascii_lowercase();
            if lower.starts_with("host=")
                || lower.starts_with("port=")
                || lower.starts_with("dbname=")
            {
                shown.push(part.to_owned());
            }
        }
        if let Some(rest) = self.0.split_once("://").map(|(_, r)| r) {
            let at_host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            shown.push(at_host.split('?').next().unwrap_or("").to_owned());
        }
        write!(f, "PostgresUrl({} [password redacted])", shown.join(" "))
    }
}

/// What to do when the embedded store lost committed writes, or holds records but has no seal
/// (`store_recovery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum StoreRecovery {
    /// Refuse to start, naming the recovery (the default).
    Refuse,
    /// Start with every FAST token revoked (clients log in with their passwords again).
    Distrust,
}

/// What to do when the pepper file is missing but the store holds tokens (`pepper_recovery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PepperRecovery {
    /// Refuse to start (the default).
    Refuse,
    /// Create a new pepper and revoke every token (every FAST client is logged out).
    New,
}

/// Validated FAST settings. Build one with [`FastConfig::default`] and change fields, or
/// deserialize it from a host's `[plugins.fast]` table and call [`FastConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FastConfig {
    /// Offer FAST at all.
    pub enabled: bool,
    /// Token lifetime from issue: the deployment's policy for idle devices (F-27).
    #[serde(deserialize_with = "duration")]
    pub token_ttl: Duration,
    /// Rotate a token used when older than this (F-16).
    #[serde(deserialize_with = "duration")]
    pub token_min_ttl: Duration,
    /// Absolute lifetime of a chain of rotated tokens, after which the client must use its
    /// password again (H-13); `None` (0 in the file) = off.
    #[serde(deserialize_with = "optional_duration")]
    pub token_max_chain_age: Option<Duration>,
    /// Mechanisms offered, in advertisement order (duplicates dropped).
    #[serde(deserialize_with = "mechanisms")]
    pub mechanisms: Vec<HtMechanism>,
    /// The store.
    pub store: StoreKind,
    /// sled directory; `None` (empty in the file) = `<data_dir>/fast-tokens`.
    #[serde(deserialize_with = "optional_path")]
    pub store_path: Option<PathBuf>,
    /// sled's page cache in bytes (sled's own default is 1 GiB).
    #[serde(deserialize_with = "cache_bytes")]
    pub store_cache_bytes: u64,
    /// What to do when the store lost committed writes.
    pub store_recovery: StoreRecovery,
    /// Pepper file; `None` (empty in the file) = `<data_dir>/fast-pepper`.
    #[serde(deserialize_with = "optional_path")]
    pub pepper_file: Option<PathBuf>,
    /// What to do when the pepper is missing but the store holds tokens.
    pub pepper_recovery: PepperRecovery,
    /// The PostgreSQL database (`store = "postgres"`): a libpq URL or `key=value` string; a
    /// password may also come from `PGPASSWORD` or a password file.
    #[serde(deserialize_with = "optional_url")]
    pub postgres_url: Option<PostgresUrl>,
    /// Connections to PostgreSQL per host (1..=1000).
    #[serde(deserialize_with = "pool_size")]
    pub postgres_pool_size: usize,
    /// PEM file of the CA of the PostgreSQL server's certificate (for `sslmode=require`);
    /// `None` (empty in the file) = the web PKI roots.
    #[serde(deserialize_with = "optional_path")]
    pub postgres_ca_file: Option<PathBuf>,
    /// Most clients kept per account (1..=100 000).
    #[serde(deserialize_with = "clients_per_account")]
    pub max_clients_per_account: usize,
    /// Interval of the expiry sweep.
    #[serde(deserialize_with = "duration")]
    pub sweep_interval: Duration,
}

impl Default for FastConfig {
    fn default() -> Self {
        use super::ht::{HtBinding as B, HtHash as H};
        let mut mechanisms = Vec::new();
        for binding in [B::Exporter, B::EndPoint, B::None] {
            for hash in [H::Sha512, H::Sha256, H::Sha3_512] {
                mechanisms.push(HtMechanism { hash, binding });
            }
        }
        FastConfig {
            enabled: true,
            token_ttl: Duration::from_secs(21 * 86400),
            token_min_ttl: Duration::from_secs(86400),
            token_max_chain_age: None,
            mechanisms,
            store: StoreKind::Sled,
            store_path: None,
            store_cache_bytes: crate::store::sled_store::DEFAULT_CACHE_BYTES,
            store_recovery: StoreRecovery::Refuse,
            pepper_file: None,
            pepper_recovery: PepperRecovery::Refuse,
            postgres_url: None,
            postgres_pool_size: 16,
            postgres_ca_file: None,
            max_clients_per_account: 100,
            sweep_interval: Duration::from_secs(3600),
        }
    }
}

/// A configuration problem, naming the key (without the `plugins.fast.` prefix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugins.fast.{key}: {message}")]
pub struct ConfigError {
    /// The offending key.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// Parses a duration string: `"21d"`, `"12h"`, `"30m"`, `"45s"`, `"2w"`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 86400, \"21d\", \"12h\""))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => {
            return Err(format!(
                "unknown duration unit {unit:?} (use s, m, h, d or w)"
            ));
        }
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| "duration too large".to_owned())
}

struct DurationVisitor;

impl de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("seconds (integer) or a duration string like \"21d\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| E::custom("must not be negative"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }
}

/// serde: a duration as integer seconds or a string like `"21d"`.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let v = duration(d)?;
    Ok((!v.is_zero()).then_some(v))
}

fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let s = String::deserialize(d)?;
    Ok((!s.is_empty()).then(|| PathBuf::from(s)))
}

fn cache_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = i64::deserialize(d)?;
    // Below 1 MiB sled thrashes; above 64 GiB is a typo.
    if !(1 << 20..=1 << 36).contains(&n) {
        return Err(de::Error::custom(
            "must be between 1048576 (1 MiB) and 68719476736",
        ));
    }
    Ok(n as u64)
}

fn optional_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PostgresUrl>, D::Error> {
    let s = String::deserialize(d)?;
    Ok((!s.is_empty()).then_some(PostgresUrl(s)))
}

fn pool_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = i64::deserialize(d)?;
    if !(1..=1000).contains(&n) {
        return Err(de::Error::custom("must be between 1 and 1000"));
    }
    Ok(n as usize)
}

fn clients_per_account<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = i64::deserialize(d)?;
    if !(1..=100_000).contains(&n) {
        return Err(de::Error::custom("must be between 1 and 100000"));
    }
    Ok(n as usize)
}

fn mechanisms<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HtMechanism>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    let mut out = Vec::new();
    for name in names {
        let m = HtMechanism::from_name(&name)
            .ok_or_else(|| de::Error::custom(format!("unknown HT mechanism {name:?}")))?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

impl FastConfig {
    /// Checks relations between options (what a field's own type cannot say).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.token_ttl.is_zero() {
            return Err(err("token_ttl", "must be greater than 0"));
        }
        if self.token_min_ttl >= self.token_ttl {
            // Prosody's README warns about this but does not check it; a token would then
            // expire before it is ever rotated, forcing password logins.
            return Err(err(
                "token_min_ttl",
                format!(
                    "must be less than token_ttl ({} s >= {} s)",
                    self.token_min_ttl.as_secs(),
                    self.token_ttl.as_secs()
                ),
            ));
        }
        if self.enabled && self.mechanisms.is_empty() {
            return Err(err("mechanisms", "at least one mechanism is needed"));
        }
        if self.store == StoreKind::Postgres && self.postgres_url.is_none() {
            return Err(err("postgres_url", "required with store = \"postgres\""));
        }
        if self.sweep_interval.is_zero() {
            return Err(err("sweep_interval", "must be greater than 0"));
        }
        Ok(())
    }
}

impl fmt::Display for FastConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ttl={}s min_ttl={}s max_chain_age={} mechanisms={}",
            self.token_ttl.as_secs(),
            self.token_min_ttl.as_secs(),
            self.token_max_chain_age
                .map_or("off".to_string(), |d| format!("{}s", d.as_secs())),
            self.mechanisms
                .iter()
                .map(|m| m.name())
                .collect::<Vec<_>>()
                .join(",")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deserializes and validates like a host does, naming the key of the first error.
    fn parse(s: &str) -> Result<FastConfig, ConfigError> {
        let de = toml::Deserializer::parse(s).map_err(|e| err("", e.to_string()))?;
        let c: FastConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            err(&key, e.into_inner().message().to_owned())
        })?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn manifest_defaults_equal_the_built_in_defaults() {
        let manifest: toml::Table = PLUGIN_MANIFEST.parse().unwrap();
        let plugin = manifest["plugin"].as_table().unwrap();
        assert_eq!(plugin["name"].as_str(), Some("fast"));
        assert!(plugin["host_api"].as_integer().is_some());
        let options = manifest["options"].as_table().unwrap();
        let mut defaults = toml::Table::new();
        for (k, v) in options {
            let v = v.as_table().unwrap();
            assert!(
                v["doc"].as_str().is_some_and(|d| !d.is_empty()),
                "{k} has a doc line"
            );
            defaults.insert(k.clone(), v["default"].clone());
        }
        assert_eq!(
            parse(&toml::to_string(&defaults).unwrap()).unwrap(),
            FastConfig::default()
        );
    }

    #[test]
    fn postgres_url_debug_hides_the_password() {
        for url in [
            "postgresql://fast:hunter2@db.example:5432/xmpp?sslmode=require",
            "host=db.example user=fast password=hunter2 dbname=xmpp",
        ] {
            let c = parse(&format!("store = \"postgres\"\npostgres_url = \"{url}\"")).unwrap();
            let d = format!("{c:?}");
            assert!(!d.contains("hunter2"), "{d}");
            assert!(d.contains("db.example"), "{d}");
        }
    }

    #[test]
    fn prosody_defaults() {
        let c = FastConfig::default();
        assert_eq!(c.token_ttl.as_secs(), 1_814_400);
        assert_eq!(c.token_min_ttl.as_secs(), 86_400);
        assert_eq!(c.max_clients_per_account, 100);
        assert_eq!(c.token_max_chain_age, None);
        c.validate().unwrap();
    }

    /// F-27: token lifetimes are the deployment's choice (short for more rotation and
    /// re-logins, long for less), within bounds that keep them coherent: any positive
    /// `token_ttl`, a `token_min_ttl` below it (or a token would expire before it is ever
    /// rotated), and an optional `token_max_chain_age` (0 = off).
    #[test]
    fn token_lifetimes_are_policy_within_bounds() {
        for (input, ttl, min_ttl, chain) in [
            (
                "token_ttl = \"1h\"\ntoken_min_ttl = \"30m\"",
                3600,
                1800,
                None,
            ),
            (
                "token_ttl = 2\ntoken_min_ttl = 1\ntoken_max_chain_age = 0",
                2,
                1,
                None,
            ),
            (
                "token_ttl = \"365d\"\ntoken_min_ttl = \"7d\"\ntoken_max_chain_age = \"90d\"",
                365 * 86400,
                7 * 86400,
                Some(90 * 86400),
            ),
        ] {
            let c = parse(input).unwrap();
            assert_eq!(c.token_ttl.as_secs(), ttl, "{input}");
            assert_eq!(c.token_min_ttl.as_secs(), min_ttl, "{input}");
            assert_eq!(c.token_max_chain_age.map(|d| d.as_secs()), chain, "{input}");
        }
        for (input, key) in [
            ("token_ttl = 0", "token_ttl"),
            ("token_ttl = 60\ntoken_min_ttl = 60", "token_min_ttl"),
            ("token_ttl = 60\ntoken_min_ttl = 61", "token_min_ttl"),
            ("token_min_ttl = -1", "token_min_ttl"),
            ("token_max_chain_age = \"1y\"", "token_max_chain_age"),
        ] {
            assert_eq!(parse(input).unwrap_err().key, key, "{input}");
        }
    }

    #[test]
    fn durations_accept_seconds_and_strings() {
        let c = parse(
            "token_ttl = \"21d\"\ntoken_min_ttl = \"12h\"\ntoken_max_chain_age = \"2w\"\nsweep_interval = \"90\"",
        )
        .unwrap();
        assert_eq!(c.token_ttl.as_secs(), 21 * 86400);
        assert_eq!(c.token_min_ttl.as_secs(), 12 * 3600);
        assert_eq!(c.token_max_chain_age, Some(Duration::from_secs(14 * 86400)));
        assert_eq!(c.sweep_interval.as_secs(), 90);
        let c =
            parse("token_ttl = 1814400\ntoken_min_ttl = 86400\ntoken_max_chain_age = 0").unwrap();
        assert_eq!(c, FastConfig::default());
    }

    #[test]
    fn errors_name_the_key_and_the_problem() {
        for (input, key, fragment) in [
            (
                "token_min_ttl = 100\ntoken_ttl = 100",
                "token_min_ttl",
                "less than token_ttl",
            ),
            ("token_ttl = \"3x\"", "token_ttl", "unknown duration unit"),
            ("token_ttl = -1", "token_ttl", "negative"),
            (
                "mechanisms = [\"HT-MD5-NONE\"]",
                "mechanisms",
                "unknown HT mechanism",
            ),
            ("mechanisms = []", "mechanisms", "at least one"),
            ("store = \"redis\"", "store", "sled"),
            ("store = \"postgres\"", "postgres_url", "required"),
            ("postgres_pool_size = 0", "postgres_pool_size", "between"),
            (
                "max_clients_per_account = 0",
                "max_clients_per_account",
                "between",
            ),
            ("token_tll = 5", "token_tll", "unknown field `token_tll`"),
            ("enabled = \"yes\"", "enabled", "bool"),
        ] {
            let e = parse(input).unwrap_err();
            assert_eq!(e.key, key, "{input}: {e}");
            assert!(e.message.contains(fragment), "{input}: {}", e.message);
        }
    }
}
