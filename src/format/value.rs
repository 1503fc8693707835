//! Deserialisation helpers shared by the document formats: setting values
//! with a nesting limit, maps that refuse duplicate keys, and the scoped
//! catalogue that lets setting values be checked while their position is
//! still known.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::catalog::Catalog;

/// Deepest nesting accepted inside any free-form value (DESIGN 2).
pub const MAX_DEPTH: usize = 64;

thread_local! {
    static CATALOG: Cell<Option<&'static Catalog>> = const { Cell::new(None) };
}

/// Makes `catalog` visible to setting deserialisation for the duration of `f`.
///
/// serde's derive gives no way to pass context to a nested field, and checking
/// values after parsing would lose their line and column; a scoped slot on the
/// current thread keeps the position without giving up derive. The catalogue
/// is `'static` (the builtin one, or a leaked one in tests) so no lifetime can
/// dangle; the guard restores the previous slot even if `f` panics.
pub(crate) fn with_catalog<T>(catalog: &'static Catalog, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<&'static Catalog>);
    impl Drop for Reset {
        fn drop(&mut self) {
            CATALOG.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(CATALOG.with(|c| c.replace(Some(catalog))));
    f()
}

pub(crate) fn current_catalog() -> Option<&'static Catalog> {
    CATALOG.with(|c| c.get())
}

/// A JSON-compatible value read from YAML, at most [`MAX_DEPTH`] levels deep.
struct BoundedValue {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for BoundedValue {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BoundedValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a boolean, number, string, list or mapping")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{v} is not a finite number")))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let depth = self.deeper()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(BoundedValue { depth })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let depth = self.deeper()?;
        let mut out = serde_json::Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if out.contains_key(&k) {
                return Err(de::Error::custom(format!("duplicate key `{k}`")));
            }
            let v = map.next_value_seed(BoundedValue { depth })?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

impl BoundedValue {
    fn deeper<E: de::Error>(&self) -> Result<usize, E> {
        if self.depth >= MAX_DEPTH {
            Err(E::custom(format!("nesting deeper than {MAX_DEPTH} levels")))
        } else {
            Ok(self.depth + 1)
        }
    }
}

/// `spec.settings`: catalogue keys to values, each checked against the
/// catalogue entry while the parser still knows where it stands.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Settings(pub BTreeMap<String, Value>);

impl<'de> Deserialize<'de> for Settings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Settings;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of setting keys to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Settings, A::Error> {
                let catalog = current_catalog();
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if out.contains_key(&key) {
                        return Err(de::Error::custom(format!("duplicate setting `{key}`")));
                    }
                    let entry = match catalog {
                        Some(c) => Some(c.get(&key).ok_or_else(|| {
                            de::Error::custom(format!("unknown setting `{key}` (not in the setting catalogue)"))
                        })?),
                        None => None,
                    };
                    let value = map.next_value_seed(CheckedValue { key: &key, entry })?;
                    out.insert(key, value);
                }
                Ok(Settings(out))
            }
        }
        d.deserialize_map(V)
    }
}

struct CheckedValue<'a> {
    key: &'a str,
    entry: Option<&'a crate::catalog::Entry>,
}

impl<'de> DeserializeSeed<'de> for CheckedValue<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        let value = BoundedValue { depth: 0 }.deserialize(d)?;
        if let Some(entry) = self.entry {
            entry
                .check(&value)
                .map_err(|msg| de::Error::custom(format!("{}: {msg}", self.key)))?;
        }
        Ok(value)
    }
}

/// A mapping that refuses duplicate keys (plain `BTreeMap` keeps the last).
#[derive(Debug, Clone, PartialEq)]
pub struct UniqueMap<V>(pub BTreeMap<String, V>);

impl<V> Default for UniqueMap<V> {
    fn default() -> Self {
        UniqueMap(BTreeMap::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Vis<V> {
            type Value = UniqueMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueMap<V>, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(k) = map.next_key::<String>()? {
                    if out.contains_key(&k) {
                        return Err(de::Error::custom(format!("duplicate key `{k}`")));
                    }
                    out.insert(k, map.next_value()?);
                }
                Ok(UniqueMap(out))
            }
        }
        d.deserialize_map(Vis(PhantomData))
    }
}

/// A string checked to be a DNS-1123 label while parsing, so the error
/// carries the line and column of the offending value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label(pub String);

impl<'de> Deserialize<'de> for Label {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::ids::check_dns_label(&s).map_err(|m| de::Error::custom(format!("invalid name: {m}")))?;
        Ok(Label(s))
    }
}

/// A list whose members must be unique (owners, groups, exempted settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueList<T>(pub Vec<T>);

impl<T> Default for UniqueList<T> {
    fn default() -> Self {
        UniqueList(Vec::new())
    }
}

impl<'de, T: Deserialize<'de> + PartialEq + fmt::Debug> Deserialize<'de> for UniqueList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<T>::deserialize(d)?;
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                return Err(de::Error::custom(format!("{item:?} is listed twice")));
            }
        }
        Ok(UniqueList(items))
    }
}

/// The fixed `apiVersion` of every Tollgate document.
pub const API_VERSION: &str = "tollgate.dev/v1alpha1";

/// Deserialises a field that must hold one exact string.
pub(crate) fn expect_literal<'de, D: Deserializer<'de>>(d: D, expected: &str, what: &str) -> Result<(), D::Error> {
    let s = String::deserialize(d)?;
    if s == expected {
        Ok(())
    } else {
        Err(de::Error::custom(format!("{what} must be `{expected}`, got `{s}`")))
    }
}
