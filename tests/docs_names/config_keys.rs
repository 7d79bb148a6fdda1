//! The host's config tables and keys, read from the config types: a probe deserializer walks
//! [`HostConfig`]'s serde definition and records the field list of every struct on the way
//! down, so a key added to (or renamed in) `host/src/config.rs` or `src/fast/config.rs` is known
//! here without anyone listing it.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use sasl2_fast_host::HostConfig;
use serde::Deserialize as _;
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer as _, MapAccess, Visitor};

/// The keys of one table of the host's config.
#[derive(Debug)]
pub enum Keys {
    Fixed(BTreeSet<String>),
    /// `[accounts]`: usernames.
    Free,
}

/// Every table of the host's config, by dotted name ("" is the file itself).
#[derive(Debug)]
pub struct ConfigTables(BTreeMap<String, Keys>);

/// The probe's way of stopping a deserialization once it has seen what it came for.
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("probe stopped")
    }
}
impl std::error::Error for Stop {}
impl de::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

enum Shape {
    Struct(&'static [&'static str]),
    Map,
}

/// A deserializer that walks down `path` (one field at a time: the struct at each step is
/// handed a map with that one field) and records the shape of what it finds there: the field
/// list of a struct, a map, or nothing (a value). Validating `deserialize_with` functions never
/// run on a value, so no sample values are needed.
struct Probe<'a> {
    path: &'a [String],
    seen: &'a RefCell<Option<Shape>>,
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_map<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        if self.path.is_empty() {
            *self.seen.borrow_mut() = Some(Shape::Map);
        }
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        match self.path.split_first() {
            None => {
                *self.seen.borrow_mut() = Some(Shape::Struct(fields));
                Err(Stop)
            }
            Some((field, rest)) => visitor.visit_map(OneField {
                key: Some(field),
                value: Some(Probe {
                    path: rest,
                    seen: self.seen,
                }),
            }),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct enum identifier ignored_any
    }
}

/// A map of one entry: the next field on the probe's path.
struct OneField<'a> {
    key: Option<&'a str>,
    value: Option<Probe<'a>>,
}

impl<'de> MapAccess<'de> for OneField<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        match self.key.take() {
            Some(key) => seed.deserialize(key.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Stop> {
        seed.deserialize(self.value.take().ok_or(Stop)?)
    }
}

impl ConfigTables {
    /// The tables of [`HostConfig`] and their keys, plus `plugin.toml`'s options under
    /// `[plugins.fast]`.
    pub fn load() -> Self {
        let mut tables = BTreeMap::new();
        let mut paths = vec![Vec::<String>::new()];
        while let Some(path) = paths.pop() {
            let seen = RefCell::new(None);
            let _ = HostConfig::deserialize(Probe {
                path: &path,
                seen: &seen,
            });
            let keys = match seen.into_inner() {
                Some(Shape::Struct(fields)) => {
                    for field in fields {
                        let mut below = path.clone();
                        below.push((*field).to_owned());
                        paths.push(below);
                    }
                    Keys::Fixed(fields.iter().map(|f| (*f).to_owned()).collect())
                }
                Some(Shape::Map) => Keys::Free,
                None => continue,
            };
            tables.insert(path.join("."), keys);
        }
        let manifest: toml::Table =
            toml::from_str(sasl2_fast::fast::config::PLUGIN_MANIFEST).expect("plugin.toml");
        let options = manifest["options"].as_table().expect("[options]");
        if let Some(Keys::Fixed(fast)) = tables.get_mut("plugins.fast") {
            fast.extend(options.keys().cloned());
        }
        ConfigTables(tables)
    }

    pub fn top_level(&self, name: &str) -> bool {
        let first = name.split('.').next().unwrap_or_default();
        matches!(self.0.get(""), Some(Keys::Fixed(k)) if k.contains(first))
    }

    pub fn is_table(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// `key` (dotted from the file's root) is a table or a key of one.
    pub fn has_dotted(&self, dotted: &str) -> bool {
        if self.is_table(dotted) {
            return true;
        }
        let Some((table, key)) = dotted.rsplit_once('.') else {
            return false;
        };
        self.has_key(table, key)
    }

    pub fn has_key(&self, table: &str, key: &str) -> bool {
        match self.0.get(table) {
            Some(Keys::Free) => true,
            Some(Keys::Fixed(keys)) => keys.contains(key),
            None => false,
        }
    }

    /// `key` is a key of some table with fixed keys.
    pub fn has_key_anywhere(&self, key: &str) -> bool {
        self.0
            .values()
            .any(|k| matches!(k, Keys::Fixed(keys) if keys.contains(key)))
    }
}
