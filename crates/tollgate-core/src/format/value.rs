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
                while let Some(key) = map.next_key_seed(Key {
                    seen: &out,
                    what: "setting",
                    catalog,
                })? {
                    let entry = catalog.and_then(|c| c.get(&key));
                    let value = map.next_value_seed(CheckedValue { entry })?;
                    out.insert(key, value);
                }
                Ok(Settings(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A mapping key, refused (at its own position) when it repeats an earlier
/// key or, with a catalogue, names no known setting.
struct Key<'a, V> {
    seen: &'a BTreeMap<String, V>,
    what: &'static str,
    catalog: Option<&'static Catalog>,
}

impl<'de, V> DeserializeSeed<'de> for Key<'_, V> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, V> Visitor<'de> for Key<'_, V> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<String, E> {
        if self.seen.contains_key(key) {
            return Err(E::custom(format!("duplicate {} `{key}`", self.what)));
        }
        if let Some(c) = self.catalog {
            if c.get(key).is_none() {
                return Err(E::custom(format!(
                    "unknown setting `{key}` (not in the setting catalogue)"
                )));
            }
        }
        Ok(key.to_string())
    }
}

struct CheckedValue<'a> {
    entry: Option<&'a crate::catalog::Entry>,
}

impl<'de> DeserializeSeed<'de> for CheckedValue<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl CheckedValue<'_> {
    fn check<E: de::Error>(&self, value: Value) -> Result<Value, E> {
        match self.entry {
            // The parser prefixes the path (`spec.settings.<key>: `).
            Some(entry) => entry.check(&value).map(|()| value).map_err(E::custom),
            None => Ok(value),
        }
    }
}

// The check runs inside the visitor, so the parser attaches the value's own
// line and column to a failure.
impl<'de> Visitor<'de> for CheckedValue<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        BoundedValue { depth: 0 }.expecting(f)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.check(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.check(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.check(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        let v = BoundedValue { depth: 0 }.visit_f64(v)?;
        self.check(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.check(Value::String(v.to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.check(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.check(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        let v = BoundedValue { depth: 0 }.visit_seq(seq)?;
        self.check(v)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        let v = BoundedValue { depth: 0 }.visit_map(map)?;
        self.check(v)
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
                while let Some(k) = map.next_key_seed(Key {
                    seen: &out,
                    what: "key",
                    catalog: None,
                })? {
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
        checked_str(d, |s| {
            crate::ids::check_dns_label(s).map_err(|m| format!("invalid name: {m}"))?;
            Ok(Label(s.to_string()))
        })
    }
}

/// Deserialises a string and checks it inside the visitor, so a failure is
/// reported at the string's own position.
pub(crate) fn checked_str<'de, D, T>(d: D, check: impl FnOnce(&str) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<F>(F);
    impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for V<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.0)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(V(check))
}

/// Deserialises a number and checks it inside the visitor (see [`checked_str`]).
pub(crate) fn checked_number<'de, D, T>(d: D, check: impl FnOnce(f64) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<F>(F);
    impl<'de, T, F: FnOnce(f64) -> Result<T, String>> Visitor<'de> for V<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            (self.0)(v as f64).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            (self.0)(v as f64).map_err(E::custom)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            (self.0)(v).map_err(E::custom)
        }
    }
    d.deserialize_any(V(check))
}

/// A document part whose fields are checked together after they are read
/// (`selector` takes groups or all, a window's start precedes its end...).
/// The check runs inside the mapping's visitor so its errors carry the
/// mapping's own position.
pub(crate) trait FromRaw: Sized {
    type Raw: for<'de> Deserialize<'de>;
    fn from_raw(raw: Self::Raw) -> Result<Self, String>;
}

pub(crate) fn deserialize_checked<'de, D: Deserializer<'de>, T: FromRaw>(d: D) -> Result<T, D::Error> {
    struct V<T>(PhantomData<T>);
    impl<'de, T: FromRaw> Visitor<'de> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a mapping")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            let raw = T::Raw::deserialize(de::value::MapAccessDeserializer::new(map))?;
            T::from_raw(raw).map_err(de::Error::custom)
        }
    }
    d.deserialize_map(V(PhantomData))
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
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + PartialEq + fmt::Debug> Visitor<'de> for V<T> {
            type Value = UniqueList<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueList<T>, A::Error> {
                let mut items: Vec<T> = Vec::new();
                while let Some(item) = seq.next_element::<T>()? {
                    if items.contains(&item) {
                        return Err(de::Error::custom(format!("{item:?} is listed twice")));
                    }
                    items.push(item);
                }
                Ok(UniqueList(items))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// The fixed `apiVersion` of every Tollgate document.
pub const API_VERSION: &str = "tollgate.dev/v1alpha1";

/// Deserialises a field that must hold one exact string.
pub(crate) fn expect_literal<'de, D: Deserializer<'de>>(d: D, expected: &str, what: &str) -> Result<(), D::Error> {
    checked_str(d, |s| {
        if s == expected {
            Ok(())
        } else {
            Err(format!("{what} must be `{expected}`, got `{s}`"))
        }
    })
}
