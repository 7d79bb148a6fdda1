//! FAST configuration: the `[plugins.fast]` table of a host's config, parsed and validated.
//!
//! Defaults match Prosody's `mod_sasl2_fast` (21-day tokens, rotated after a day) and are
//! listed with their documentation in the crate's `plugin.toml`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::ht::HtMechanism;

/// The plugin manifest shipped at the crate root.
pub const PLUGIN_MANIFEST: &str = include_str!("../../plugin.toml");

/// Which token store the plugin uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// sled on disk (the default).
    Sled,
    /// In memory; tokens are lost on restart.
    Memory,
}

/// Validated FAST settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastConfig {
    /// Offer FAST at all.
    pub enabled: bool,
    /// Token lifetime from issue.
    pub token_ttl: Duration,
    /// Rotate a token used when older than this (F-16).
    pub token_min_ttl: Duration,
    /// Absolute lifetime of a chain of rotated tokens; `None` = off.
    pub token_max_chain_age: Option<Duration>,
    /// Mechanisms offered, in advertisement order.
    pub mechanisms: Vec<HtMechanism>,
    /// The store.
    pub store: StoreKind,
    /// sled directory; `None` = `<data_dir>/fast-tokens`.
    pub store_path: Option<PathBuf>,
    /// Pepper file; `None` = `<data_dir>/fast-pepper`.
    pub pepper_file: Option<PathBuf>,
    /// Most clients kept per account.
    pub max_clients_per_account: usize,
    /// Interval of the expiry sweep.
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
            pepper_file: None,
            max_clients_per_account: 100,
            sweep_interval: Duration::from_secs(3600),
        }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugins.fast.{key}: {message}")]
pub struct ConfigError {
    /// The offending key (without the `plugins.fast.` prefix).
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

/// Parses a duration: integer seconds (Prosody-compatible) or a string such as `"21d"`,
/// `"12h"`, `"30m"`, `"45s"`, `"2w"`, or a plain number in a string.
pub fn parse_duration(key: &str, v: &toml::Value) -> Result<Duration, ConfigError> {
    match v {
        toml::Value::Integer(i) if *i >= 0 => Ok(Duration::from_secs(*i as u64)),
        toml::Value::Integer(_) => Err(err(key, "must not be negative")),
        toml::Value::String(s) => {
            let s = s.trim();
            let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
                Some(i) => (&s[..i], s[i..].trim()),
                None => (s, "s"),
            };
            let n: u64 = num.parse().map_err(|_| {
                err(
                    key,
                    format!("invalid duration {s:?}: expected e.g. 86400, \"21d\", \"12h\""),
                )
            })?;
            let mult = match unit {
                "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86400,
                "w" => 7 * 86400,
                _ => {
                    return Err(err(
                        key,
                        format!("unknown duration unit {unit:?} (use s, m, h, d or w)"),
                    ));
                }
            };
            n.checked_mul(mult)
                .map(Duration::from_secs)
                .ok_or_else(|| err(key, "duration too large"))
        }
        _ => Err(err(
            key,
            "expected seconds (integer) or a duration string like \"21d\"",
        )),
    }
}

fn as_bool(key: &str, v: &toml::Value) -> Result<bool, ConfigError> {
    v.as_bool()
        .ok_or_else(|| err(key, "expected true or false"))
}

fn as_path(key: &str, v: &toml::Value) -> Result<Option<PathBuf>, ConfigError> {
    let s = v
        .as_str()
        .ok_or_else(|| err(key, "expected a path string"))?;
    Ok(if s.is_empty() {
        None
    } else {
        Some(PathBuf::from(s))
    })
}

impl FastConfig {
    /// Parses a `[plugins.fast]` table. Unknown keys are errors (a typo must not silently fall
    /// back to a default).
    pub fn from_table(table: &toml::Table) -> Result<Self, ConfigError> {
        let mut c = FastConfig::default();
        for (key, v) in table {
            match key.as_str() {
                "enabled" => c.enabled = as_bool(key, v)?,
                "token_ttl" => c.token_ttl = parse_duration(key, v)?,
                "token_min_ttl" => c.token_min_ttl = parse_duration(key, v)?,
                "token_max_chain_age" => {
                    let d = parse_duration(key, v)?;
                    c.token_max_chain_age = (!d.is_zero()).then_some(d);
                }
                "mechanisms" => {
                    let arr = v
                        .as_array()
                        .ok_or_else(|| err(key, "expected a list of HT mechanism names"))?;
                    let mut mechs = Vec::new();
                    for item in arr {
                        let name = item
                            .as_str()
                            .ok_or_else(|| err(key, "expected mechanism names as strings"))?;
                        let m = HtMechanism::from_name(name)
                            .ok_or_else(|| err(key, format!("unknown HT mechanism {name:?}")))?;
                        if !mechs.contains(&m) {
                            mechs.push(m);
                        }
                    }
                    c.mechanisms = mechs;
                }
                "store" => {
                    c.store = match v.as_str() {
                        Some("sled") => StoreKind::Sled,
                        Some("memory") => StoreKind::Memory,
                        _ => return Err(err(key, "expected \"sled\" or \"memory\"")),
                    }
                }
                "store_path" => c.store_path = as_path(key, v)?,
                "pepper_file" => c.pepper_file = as_path(key, v)?,
                "max_clients_per_account" => {
                    let n = v
                        .as_integer()
                        .ok_or_else(|| err(key, "expected an integer"))?;
                    if !(1..=100_000).contains(&n) {
                        return Err(err(key, "must be between 1 and 100000"));
                    }
                    c.max_clients_per_account = n as usize;
                }
                "sweep_interval" => c.sweep_interval = parse_duration(key, v)?,
                other => return Err(err(other, "unknown option")),
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// Parses the options from TOML text holding just the `[plugins.fast]` keys.
    pub fn from_toml_str(s: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = s
            .parse()
            .map_err(|e: toml::de::Error| err("", e.to_string()))?;
        Self::from_table(&table)
    }

    /// Checks relations between options.
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
            FastConfig::from_table(&defaults).unwrap(),
            FastConfig::default()
        );
    }

    #[test]
    fn prosody_defaults() {
        let c = FastConfig::default();
        assert_eq!(c.token_ttl.as_secs(), 1_814_400);
        assert_eq!(c.token_min_ttl.as_secs(), 86_400);
        assert_eq!(c.max_clients_per_account, 100);
        assert_eq!(c.token_max_chain_age, None);
    }

    #[test]
    fn durations_accept_seconds_and_strings() {
        let c = FastConfig::from_toml_str(
            "token_ttl = \"21d\"\ntoken_min_ttl = \"12h\"\ntoken_max_chain_age = \"2w\"\nsweep_interval = \"90\"",
        )
        .unwrap();
        assert_eq!(c.token_ttl.as_secs(), 21 * 86400);
        assert_eq!(c.token_min_ttl.as_secs(), 12 * 3600);
        assert_eq!(c.token_max_chain_age, Some(Duration::from_secs(14 * 86400)));
        assert_eq!(c.sweep_interval.as_secs(), 90);
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
            (
                "max_clients_per_account = 0",
                "max_clients_per_account",
                "between",
            ),
            ("token_tll = 5", "token_tll", "unknown option"),
            ("enabled = \"yes\"", "enabled", "true or false"),
        ] {
            let e = FastConfig::from_toml_str(input).unwrap_err();
            assert_eq!(e.key, key, "{input}");
            assert!(e.message.contains(fragment), "{input}: {}", e.message);
            assert!(e.to_string().starts_with(&format!("plugins.fast.{key}:")));
        }
    }
}
