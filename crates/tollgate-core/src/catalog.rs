//! The setting catalogue: what each baseline setting means, which values it
//! takes and which way is more secure (DESIGN 3).
//!
//! The catalogue is data, shipped in `policies/catalog.yaml` and embedded at
//! build time. This module is its model: it parses the file strictly, checks
//! setting values against their declared types and tells whether a change to
//! a setting tightens or loosens it. Nothing here does I/O.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{Platform, Vendor};

const BUILTIN_YAML: &str = include_str!("../../../policies/catalog.yaml");

/// Side effects an entry may declare. The risk policy treats `wipe` and
/// `retire` as critical in both directions.
pub const SIDE_EFFECTS: [&str; 5] = ["wipe", "retire", "reboot", "user_prompt", "network_loss"];

/// Highest risk tier (T3, critical).
pub const MAX_TIER: u8 = 3;

/// An OS version has at most this many dot-separated parts ("10.0.22631.3447").
const MAX_VERSION_PARTS: usize = 4;

/// Strings quoted in value errors are cut to this many characters.
const MAX_SHOWN_CHARS: usize = 60;

/// The known settings, keyed by setting key.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    entries: BTreeMap<String, Entry>,
}

/// One setting of the catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub category: String,
    pub description: String,
    pub value_type: ValueType,
    pub secure_direction: SecureDirection,
    pub default_tier: u8,
    pub side_effects: Vec<String>,
    /// False where undoing the setting does not undo its effect (a wipe, an
    /// uninstall, trust already granted, a key already escrowed).
    pub rollback_effective: bool,
    /// Where the setting is meaningful.
    pub platforms: Vec<Platform>,
    pub native: Native,
}

/// The vendor's own key for a setting, where one exists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Native {
    /// Configuration profile payload type and key, `com.apple.….passwordpolicy/minLength`.
    pub apple: Option<String>,
    /// Android Management API policy field path, `passwordPolicies[].passwordMinimumLength`.
    pub android: Option<String>,
    /// OMA-URI of the Policy CSP (or another CSP), `./Device/Vendor/MSFT/Policy/Config/…`.
    pub windows: Option<String>,
}

/// The type of a setting's value, or of a field inside an object value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueType {
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    /// Allowed strings, from least to most secure when the direction is `higher`.
    Enum(Vec<String>),
    /// A dotted numeric OS version of 1 to 4 parts, compared numerically per part.
    Version,
    String {
        max_len: Option<usize>,
    },
    /// 64 lowercase hex characters.
    Sha256,
    /// A list of unique members compared as a set.
    Set(SetItem),
    /// A single object with declared fields.
    Object(ObjectType),
}

/// What a set holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetItem {
    /// Non-empty strings, each its own identity.
    String,
    /// Objects identified by their `id` field (always `Some` here).
    Object(ObjectType),
}

/// The shape of an object value. Unknown fields are errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectType {
    /// The identifying field of set members; `None` for a single object.
    pub id: Option<String>,
    /// Field types; only scalar types (no sets or objects).
    pub fields: BTreeMap<String, ValueType>,
    /// Fields that must be present (all of them unless the catalogue says otherwise).
    pub required: BTreeSet<String>,
}

/// Which way a setting's values are more secure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecureDirection {
    /// A larger int, a later version, an enum value later in the list.
    Higher,
    Lower,
    /// `true` is the secure value of a bool.
    True,
    False,
    /// More members is more secure (a block list).
    Superset,
    /// Fewer members is more secure (trusted roots).
    Subset,
    /// Neither way is more secure (cosmetic, or shape-only like a VPN profile).
    None,
}

/// The direction of one change to one setting (risk input `direction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Tighten,
    Loosen,
    Neutral,
    Unknown,
}

/// Members of a set setting added, removed or changed in place, by member id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Object members whose id stayed but whose other fields changed.
    pub changed: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("the catalogue could not be read as a YAML list of setting entries")]
    Yaml(#[source] serde_norway::Error),
    #[error("catalogue entry #{position} has no string `key`")]
    MissingKey { position: usize },
    #[error("catalogue entry {key} does not match the entry schema")]
    Schema {
        key: String,
        #[source]
        source: serde_norway::Error,
    },
    #[error("catalogue entry {key}: `{field}` {reason}")]
    Invalid { key: String, field: String, reason: String },
    #[error("catalogue lists {key} twice (entries #{first} and #{second})")]
    DuplicateKey { key: String, first: usize, second: usize },
}

impl Catalog {
    /// The catalogue shipped in `policies/catalog.yaml`, parsed once.
    ///
    /// Panics only if the shipped file is broken, which a unit test rules out.
    pub fn builtin() -> &'static Catalog {
        static BUILTIN: OnceLock<Catalog> = OnceLock::new();
        BUILTIN.get_or_init(|| match Catalog::from_yaml(BUILTIN_YAML) {
            Ok(catalog) => catalog,
            Err(e) => panic!("policies/catalog.yaml is broken: {}", crate::errors::chain(&e)),
        })
    }

    /// Parses and validates a catalogue. Unknown fields, duplicate keys,
    /// tiers over 3, empty ranges, unknown side effects or platforms and a
    /// secure direction that does not fit the type are all errors.
    pub fn from_yaml(text: &str) -> Result<Catalog, CatalogError> {
        // Untyped first, so a schema error can name the entry it is in.
        let docs: Vec<serde_norway::Value> = serde_norway::from_str(text).map_err(CatalogError::Yaml)?;
        let mut entries = BTreeMap::new();
        let mut positions: BTreeMap<String, usize> = BTreeMap::new();
        for (index, doc) in docs.into_iter().enumerate() {
            let position = index + 1;
            let key = match doc.get("key").and_then(serde_norway::Value::as_str) {
                Some(key) => key.to_string(),
                None => return Err(CatalogError::MissingKey { position }),
            };
            if let Some(&first) = positions.get(&key) {
                return Err(CatalogError::DuplicateKey {
                    key,
                    first,
                    second: position,
                });
            }
            let raw: RawEntry = serde_norway::from_value(doc).map_err(|source| CatalogError::Schema {
                key: key.clone(),
                source,
            })?;
            let entry = raw.validate()?;
            positions.insert(key.clone(), position);
            entries.insert(key, entry);
        }
        Ok(Catalog { entries })
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// All entries, sorted by key.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Entry {
    /// Checks a setting value (as JSON, converted from YAML) against the
    /// type. The message is written to follow `"<key>: "`, e.g.
    /// `must be an integer from 0 to 16, got 20`, `lists "com.x" twice` or
    /// `unknown field `colour` in item 2`. Items are numbered from 1.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        check_value(&self.value_type, value)
    }

    /// Direction of a change from `old` to `new` (`None` = setting absent).
    ///
    /// - `none` settings are always neutral, and so is a change to an equal value.
    /// - Removing a setting loosens (DESIGN 3).
    /// - Adding one tightens, unless the added value itself grants something:
    ///   a bool at its insecure value, or members of a `subset` set (new
    ///   trusted roots).
    /// - `higher`/`lower` compare ints, versions (numerically per part) and
    ///   enums (by list order); `"true"`/`"false"` compare bools.
    /// - `superset`: any member removed loosens, even if others were added;
    ///   only additions tighten; `subset` is the reverse. A member changed in
    ///   place (same id, other fields) cannot be ordered and is unknown.
    /// - A value that fails [`Entry::check`] cannot be compared: unknown.
    pub fn direction(&self, old: Option<&Value>, new: Option<&Value>) -> Direction {
        if self.secure_direction == SecureDirection::None {
            return Direction::Neutral;
        }
        match (old, new) {
            (None, None) => Direction::Neutral,
            (Some(_), None) => Direction::Loosen,
            (None, Some(new)) => self.direction_of_addition(new),
            (Some(old), Some(new)) => self.direction_of_change(old, new),
        }
    }

    /// For set types, the identity of a member: the string itself, or the
    /// object's id field. `None` for other types or malformed members.
    pub fn set_member_id(&self, member: &Value) -> Option<String> {
        match &self.value_type {
            ValueType::Set(SetItem::String) => member.as_str().filter(|s| !s.is_empty()).map(str::to_string),
            ValueType::Set(SetItem::Object(object)) => {
                let id = object.id.as_deref()?;
                member.get(id)?.as_str().filter(|s| !s.is_empty()).map(str::to_string)
            }
            _ => None,
        }
    }

    /// Members added, removed and changed in place between two values of a
    /// set setting, sorted by id; an absent value is the empty set. `None`
    /// when the setting is not a set or a value fails [`Entry::check`].
    pub fn set_changes(&self, old: Option<&Value>, new: Option<&Value>) -> Option<SetChanges> {
        let old = self.members(old)?;
        let new = self.members(new)?;
        let mut changes = SetChanges::default();
        for (id, value) in &new {
            match old.get(id) {
                None => changes.added.push(id.clone()),
                Some(before) if before != value => changes.changed.push(id.clone()),
                Some(_) => {}
            }
        }
        changes.removed = old.keys().filter(|id| !new.contains_key(*id)).cloned().collect();
        Some(changes)
    }

    pub fn is_set(&self) -> bool {
        matches!(self.value_type, ValueType::Set(_))
    }

    /// The native key for a platform's vendor, or `None` where there is none
    /// or the setting is not meaningful on that platform (an Apple key that
    /// only iOS knows is not offered for macOS).
    pub fn native_key(&self, platform: Platform) -> Option<&str> {
        if !self.platforms.contains(&platform) {
            return None;
        }
        let key = match platform.vendor() {
            Vendor::Apple => &self.native.apple,
            Vendor::Android => &self.native.android,
            Vendor::Windows => &self.native.windows,
        };
        key.as_deref()
    }

    /// Whether the entry declares a side effect, e.g. `"wipe"`.
    pub fn has_side_effect(&self, effect: &str) -> bool {
        self.side_effects.iter().any(|e| e == effect)
    }

    fn direction_of_addition(&self, new: &Value) -> Direction {
        if self.check(new).is_err() {
            return Direction::Unknown;
        }
        match (self.secure_direction, new.as_bool()) {
            (SecureDirection::True, Some(false)) | (SecureDirection::False, Some(true)) => Direction::Loosen,
            (SecureDirection::Subset, _) if new.as_array().is_some_and(|members| !members.is_empty()) => {
                Direction::Loosen
            }
            _ => Direction::Tighten,
        }
    }

    fn direction_of_change(&self, old: &Value, new: &Value) -> Direction {
        if old == new {
            return Direction::Neutral;
        }
        if self.check(old).is_err() || self.check(new).is_err() {
            return Direction::Unknown;
        }
        match self.secure_direction {
            SecureDirection::Higher | SecureDirection::Lower => {
                let Some(order) = self.compare_values(old, new) else {
                    return Direction::Unknown;
                };
                let order = if self.secure_direction == SecureDirection::Lower {
                    order.reverse()
                } else {
                    order
                };
                match order {
                    Ordering::Less => Direction::Tighten,
                    Ordering::Greater => Direction::Loosen,
                    Ordering::Equal => Direction::Neutral,
                }
            }
            SecureDirection::True | SecureDirection::False => {
                let secure = self.secure_direction == SecureDirection::True;
                match (old.as_bool(), new.as_bool()) {
                    (Some(_), Some(now)) if now == secure => Direction::Tighten,
                    (Some(_), Some(_)) => Direction::Loosen,
                    _ => Direction::Unknown,
                }
            }
            SecureDirection::Superset | SecureDirection::Subset => {
                let Some(changes) = self.set_changes(Some(old), Some(new)) else {
                    return Direction::Unknown;
                };
                let (grows, shrinks) = (!changes.added.is_empty(), !changes.removed.is_empty());
                let (more_secure, less_secure) = if self.secure_direction == SecureDirection::Superset {
                    (grows, shrinks)
                } else {
                    (shrinks, grows)
                };
                if less_secure {
                    Direction::Loosen
                } else if !changes.changed.is_empty() {
                    Direction::Unknown
                } else if more_secure {
                    Direction::Tighten
                } else {
                    Direction::Neutral
                }
            }
            SecureDirection::None => Direction::Neutral,
        }
    }

    /// Orders two checked values of an ordered type: `Less` when `old < new`.
    fn compare_values(&self, old: &Value, new: &Value) -> Option<Ordering> {
        match &self.value_type {
            ValueType::Int { .. } => Some(old.as_i64()?.cmp(&new.as_i64()?)),
            ValueType::Version => compare_versions(old.as_str()?, new.as_str()?),
            ValueType::Enum(values) => {
                let rank = |v: &Value| values.iter().position(|allowed| Some(allowed.as_str()) == v.as_str());
                Some(rank(old)?.cmp(&rank(new)?))
            }
            _ => None,
        }
    }

    /// A checked set value by member id; absent is empty.
    fn members<'v>(&self, value: Option<&'v Value>) -> Option<BTreeMap<String, &'v Value>> {
        if !self.is_set() {
            return None;
        }
        let Some(value) = value else {
            return Some(BTreeMap::new());
        };
        self.check(value).ok()?;
        value
            .as_array()?
            .iter()
            .map(|member| Some((self.set_member_id(member)?, member)))
            .collect()
    }
}

/// Compares two dotted numeric versions part by part, missing parts counting
/// as 0 (so "17.4" equals "17.4.0" and "17.10" is after "17.4"). `None` if
/// either is not a version of 1 to 4 numeric parts.
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    let a = parse_version(a)?;
    let b = parse_version(b)?;
    let part = |parts: &[u64], i: usize| parts.get(i).copied().unwrap_or(0);
    let order = (0..a.len().max(b.len()))
        .map(|i| part(&a, i).cmp(&part(&b, i)))
        .find(|order| order.is_ne())
        .unwrap_or(Ordering::Equal);
    Some(order)
}

fn parse_version(text: &str) -> Option<Vec<u64>> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() > MAX_VERSION_PARTS {
        return None;
    }
    parts
        .into_iter()
        .map(|part| {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        })
        .collect()
}

impl SecureDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            SecureDirection::Higher => "higher",
            SecureDirection::Lower => "lower",
            SecureDirection::True => "true",
            SecureDirection::False => "false",
            SecureDirection::Superset => "superset",
            SecureDirection::Subset => "subset",
            SecureDirection::None => "none",
        }
    }

    const ALL: [SecureDirection; 7] = [
        SecureDirection::Higher,
        SecureDirection::Lower,
        SecureDirection::True,
        SecureDirection::False,
        SecureDirection::Superset,
        SecureDirection::Subset,
        SecureDirection::None,
    ];

    fn fits(self, value_type: &ValueType) -> bool {
        match self {
            SecureDirection::Higher | SecureDirection::Lower => {
                matches!(
                    value_type,
                    ValueType::Int { .. } | ValueType::Version | ValueType::Enum(_)
                )
            }
            SecureDirection::True | SecureDirection::False => *value_type == ValueType::Bool,
            SecureDirection::Superset | SecureDirection::Subset => matches!(value_type, ValueType::Set(_)),
            SecureDirection::None => true,
        }
    }
}

impl fmt::Display for SecureDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Tighten => "tighten",
            Direction::Loosen => "loosen",
            Direction::Neutral => "neutral",
            Direction::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------
// Loading

/// An entry as written, before validation. `type` and `secure_direction`
/// are parsed by hand for clearer messages (and so `secure_direction: true`
/// unquoted means the same as `"true"`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    key: String,
    category: String,
    description: String,
    #[serde(rename = "type")]
    value_type: Value,
    secure_direction: Value,
    default_tier: u8,
    side_effects: Vec<String>,
    rollback_effective: bool,
    platforms: Vec<Platform>,
    native: Native,
}

impl RawEntry {
    fn validate(self) -> Result<Entry, CatalogError> {
        let key = self.key;
        let invalid = |field: &str, reason: String| CatalogError::Invalid {
            key: key.clone(),
            field: field.to_string(),
            reason,
        };

        if !is_setting_key(&key) {
            return Err(invalid(
                "key",
                "must be `<category>.<name>` in lowercase letters, digits and '_'".to_string(),
            ));
        }
        if key.split('.').next() != Some(self.category.as_str()) {
            return Err(invalid(
                "category",
                format!("is {:?} but the key starts with another category", self.category),
            ));
        }
        if self.description.trim().is_empty() {
            return Err(invalid("description", "must not be empty".to_string()));
        }
        let value_type = parse_type(&self.value_type, Place::Setting).map_err(|reason| invalid("type", reason))?;
        let secure_direction =
            parse_secure_direction(&self.secure_direction).map_err(|reason| invalid("secure_direction", reason))?;
        if !secure_direction.fits(&value_type) {
            return Err(invalid(
                "secure_direction",
                format!("`{secure_direction}` does not fit the setting's type"),
            ));
        }
        if self.default_tier > MAX_TIER {
            return Err(invalid(
                "default_tier",
                format!("must be from 0 to {MAX_TIER}, got {}", self.default_tier),
            ));
        }
        for (i, effect) in self.side_effects.iter().enumerate() {
            if !SIDE_EFFECTS.contains(&effect.as_str()) {
                return Err(invalid(
                    "side_effects",
                    format!(
                        "has unknown side effect {effect:?} (known: {})",
                        SIDE_EFFECTS.join(", ")
                    ),
                ));
            }
            if self.side_effects[..i].contains(effect) {
                return Err(invalid("side_effects", format!("lists {effect:?} twice")));
            }
        }
        if self.platforms.is_empty() {
            return Err(invalid("platforms", "must list at least one platform".to_string()));
        }
        for (i, platform) in self.platforms.iter().enumerate() {
            if self.platforms[..i].contains(platform) {
                return Err(invalid("platforms", format!("lists {platform} twice")));
            }
        }
        type Shape = fn(&str) -> bool;
        let native_shapes: [(&str, &Option<String>, &str, Shape); 3] = [
            (
                "native.apple",
                &self.native.apple,
                "a `<PayloadType>/<key>` pair",
                |v| {
                    v.split_once('/')
                        .is_some_and(|(payload, key)| !payload.is_empty() && !key.is_empty())
                },
            ),
            (
                "native.android",
                &self.native.android,
                "an Android Management API field path",
                |v| !v.is_empty(),
            ),
            (
                "native.windows",
                &self.native.windows,
                "an OMA-URI starting with `./`",
                |v| v.starts_with("./"),
            ),
        ];
        for (field, value, shape, fits) in native_shapes {
            let Some(value) = value else { continue };
            if !fits(value) || value.chars().any(char::is_whitespace) {
                return Err(invalid(field, format!("must be {shape}, got {value:?}")));
            }
        }

        Ok(Entry {
            category: self.category,
            description: self.description,
            value_type,
            secure_direction,
            default_tier: self.default_tier,
            side_effects: self.side_effects,
            rollback_effective: self.rollback_effective,
            platforms: self.platforms,
            native: self.native,
            key,
        })
    }
}

fn is_setting_key(key: &str) -> bool {
    let part_ok = |part: &str| {
        part.starts_with(|c: char| c.is_ascii_lowercase())
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let parts: Vec<&str> = key.split('.').collect();
    parts.len() >= 2 && parts.into_iter().all(part_ok)
}

fn parse_secure_direction(value: &Value) -> Result<SecureDirection, String> {
    let text = match value {
        Value::Bool(true) => "true",
        Value::Bool(false) => "false",
        Value::String(s) => s.as_str(),
        other => return Err(format!("must be a string, got {}", shown(other))),
    };
    SecureDirection::ALL
        .into_iter()
        .find(|d| d.as_str() == text)
        .ok_or_else(|| {
            let known: Vec<&str> = SecureDirection::ALL.iter().map(|d| d.as_str()).collect();
            format!("must be one of {}, got {text:?}", known.join(", "))
        })
}

/// Where a type appears: sets and objects only at the top of a setting,
/// scalars anywhere.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Setting,
    Field,
}

fn parse_type(spec: &Value, place: Place) -> Result<ValueType, String> {
    const NAMES: &str = "bool, version, string, sha256, {int: ..}, {enum: ..}, {string: ..}, {set: ..} or {object: ..}";
    let (name, body) = match spec {
        Value::String(name) => (name.as_str(), None),
        Value::Object(map) if map.len() == 1 => {
            let (name, body) = map.iter().next().expect("map has one entry");
            (name.as_str(), Some(body))
        }
        other => {
            return Err(format!(
                "must be a type name or a one-key map ({NAMES}), got {}",
                shown(other)
            ))
        }
    };
    let nested = |what: &str| format!("cannot be {what} inside an object; only scalar types can");
    match (name, body) {
        ("bool", None) => Ok(ValueType::Bool),
        ("version", None) => Ok(ValueType::Version),
        ("string", None) => Ok(ValueType::String { max_len: None }),
        ("sha256", None) => Ok(ValueType::Sha256),
        ("int", Some(body)) => {
            let body = type_body(body, "int", &["min", "max"], &["min", "max"])?;
            let bound = |name: &str| {
                body[name]
                    .as_i64()
                    .ok_or_else(|| format!("`int` {name} must be an integer, got {}", shown(&body[name])))
            };
            let (min, max) = (bound("min")?, bound("max")?);
            if min > max {
                return Err(format!("`int` min {min} is greater than max {max}"));
            }
            Ok(ValueType::Int { min, max })
        }
        ("enum", Some(body)) => {
            let Some(items) = body.as_array().filter(|items| !items.is_empty()) else {
                return Err(format!("`enum` must list its values, got {}", shown(body)));
            };
            let mut values: Vec<String> = Vec::with_capacity(items.len());
            for item in items {
                let value = item.as_str().filter(|s| !s.is_empty());
                let Some(value) = value else {
                    return Err(format!("`enum` values must be non-empty strings, got {}", shown(item)));
                };
                if values.iter().any(|v| v == value) {
                    return Err(format!("`enum` lists {value:?} twice"));
                }
                values.push(value.to_string());
            }
            Ok(ValueType::Enum(values))
        }
        ("string", Some(body)) => {
            let body = type_body(body, "string", &["max_len"], &["max_len"])?;
            match body["max_len"].as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(max_len) if max_len > 0 => Ok(ValueType::String { max_len: Some(max_len) }),
                _ => Err(format!(
                    "`string` max_len must be a positive integer, got {}",
                    shown(&body["max_len"])
                )),
            }
        }
        ("set", Some(_)) if place == Place::Field => Err(nested("a set")),
        ("set", Some(body)) => {
            let body = type_body(body, "set", &["item"], &["item"])?;
            match &body["item"] {
                Value::String(s) if s == "string" => Ok(ValueType::Set(SetItem::String)),
                Value::Object(map) if map.len() == 1 && map.contains_key("object") => {
                    let object = parse_object(&map["object"], true)?;
                    Ok(ValueType::Set(SetItem::Object(object)))
                }
                other => Err(format!(
                    "`set` item must be `string` or {{object: ..}}, got {}",
                    shown(other)
                )),
            }
        }
        ("object", Some(_)) if place == Place::Field => Err(nested("an object")),
        ("object", Some(body)) => Ok(ValueType::Object(parse_object(body, false)?)),
        _ => Err(format!("unknown type `{name}` (expected {NAMES})")),
    }
}

/// The body of a `{name: {...}}` type as a map with only `allowed` keys and
/// all `required` ones.
fn type_body<'v>(
    body: &'v Value,
    name: &str,
    allowed: &[&str],
    required: &[&str],
) -> Result<&'v Map<String, Value>, String> {
    let Some(map) = body.as_object() else {
        return Err(format!("`{name}` must be a map, got {}", shown(body)));
    };
    if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "`{name}` has unknown field `{unknown}` (allowed: {})",
            allowed.join(", ")
        ));
    }
    if let Some(missing) = required.iter().find(|r| !map.contains_key(**r)) {
        return Err(format!("`{name}` is missing `{missing}`"));
    }
    Ok(map)
}

fn parse_object(body: &Value, as_set_item: bool) -> Result<ObjectType, String> {
    let body = type_body(body, "object", &["id", "fields", "required"], &["fields"])?;
    let Some(field_specs) = body["fields"].as_object().filter(|f| !f.is_empty()) else {
        return Err(format!(
            "`object` fields must be a non-empty map, got {}",
            shown(&body["fields"])
        ));
    };
    let mut fields = BTreeMap::new();
    for (name, spec) in field_specs {
        let field_type = parse_type(spec, Place::Field).map_err(|reason| format!("object field `{name}` {reason}"))?;
        fields.insert(name.clone(), field_type);
    }
    let required: BTreeSet<String> = match body.get("required") {
        None => fields.keys().cloned().collect(),
        Some(list) => {
            let Some(items) = list.as_array() else {
                return Err(format!(
                    "`object` required must be a list of field names, got {}",
                    shown(list)
                ));
            };
            let mut required = BTreeSet::new();
            for item in items {
                match item.as_str() {
                    Some(name) if fields.contains_key(name) => {
                        if !required.insert(name.to_string()) {
                            return Err(format!("`object` required lists `{name}` twice"));
                        }
                    }
                    _ => return Err(format!("`object` required names no field: {}", shown(item))),
                }
            }
            required
        }
    };
    let id = match (body.get("id"), as_set_item) {
        (None, false) => None,
        (Some(_), false) => return Err("`object` id is only meaningful for set items".to_string()),
        (None, true) => return Err("`object` in a set needs an `id` field to compare members by".to_string()),
        (Some(id), true) => {
            let Some(id) = id.as_str() else {
                return Err(format!("`object` id must name a field, got {}", shown(id)));
            };
            if !matches!(fields.get(id), Some(ValueType::String { .. } | ValueType::Enum(_))) {
                return Err(format!("`object` id `{id}` must name a string or enum field"));
            }
            if !required.contains(id) {
                return Err(format!("`object` id `{id}` must be a required field"));
            }
            Some(id.to_string())
        }
    };
    Ok(ObjectType { id, fields, required })
}

// ---------------------------------------------------------------------------
// Checking values

fn check_value(value_type: &ValueType, value: &Value) -> Result<(), String> {
    match value_type {
        ValueType::Set(item) => check_set(item, value),
        ValueType::Object(object) => check_object(object, value, None),
        scalar => check_scalar(scalar, value),
    }
}

fn check_scalar(value_type: &ValueType, value: &Value) -> Result<(), String> {
    let got = shown(value);
    match value_type {
        ValueType::Bool => match value {
            Value::Bool(_) => Ok(()),
            _ => Err(format!("must be true or false, got {got}")),
        },
        ValueType::Int { min, max } => match value.as_i64() {
            Some(n) if (*min..=*max).contains(&n) => Ok(()),
            _ => Err(format!("must be an integer from {min} to {max}, got {got}")),
        },
        ValueType::Enum(values) => match value.as_str() {
            Some(s) if values.iter().any(|v| v == s) => Ok(()),
            _ => Err(format!("must be one of {}, got {got}", values.join(", "))),
        },
        ValueType::Version => match value {
            Value::String(s) if parse_version(s).is_some() => Ok(()),
            Value::Number(_) => Err(format!(
                "must be a quoted version string like \"17.4\", got the number {got} (unquoted, YAML reads 17.10 as 17.1)"
            )),
            _ => Err(format!("must be a version of 1 to {MAX_VERSION_PARTS} dot-separated numbers like \"17.4\", got {got}")),
        },
        ValueType::String { max_len } => match (value.as_str(), max_len) {
            (None, _) => Err(format!("must be a string, got {got}")),
            (Some(s), Some(max)) if s.chars().count() > *max => {
                Err(format!("must be at most {max} characters long, got {}", s.chars().count()))
            }
            (Some(_), _) => Ok(()),
        },
        ValueType::Sha256 => match value.as_str() {
            Some(s) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => Ok(()),
            _ => Err(format!("must be 64 lowercase hex characters (a SHA-256 digest), got {got}")),
        },
        ValueType::Set(_) | ValueType::Object(_) => check_value(value_type, value),
    }
}

fn check_set(item: &SetItem, value: &Value) -> Result<(), String> {
    let Some(members) = value.as_array() else {
        let what = match item {
            SetItem::String => "strings".to_string(),
            SetItem::Object(object) => format!("maps with fields {}", field_list(object)),
        };
        return Err(format!("must be a list of {what}, got {}", shown(value)));
    };
    let mut seen = BTreeSet::new();
    for (index, member) in members.iter().enumerate() {
        let position = index + 1;
        let id = match item {
            SetItem::String => match member.as_str() {
                Some(s) if !s.is_empty() => s,
                _ => {
                    return Err(format!(
                        "item {position} must be a non-empty string, got {}",
                        shown(member)
                    ))
                }
            },
            SetItem::Object(object) => {
                check_object(object, member, Some(position))?;
                let id_field = object.id.as_deref().unwrap_or_default();
                member[id_field].as_str().unwrap_or_default()
            }
        };
        if !seen.insert(id) {
            return Err(match item {
                SetItem::String => format!("lists {id:?} twice"),
                SetItem::Object(object) => {
                    format!("lists {} {id:?} twice", object.id.as_deref().unwrap_or_default())
                }
            });
        }
    }
    Ok(())
}

/// Checks one object; `item` is its 1-based position when it is a set member.
fn check_object(object: &ObjectType, value: &Value, item: Option<usize>) -> Result<(), String> {
    let (subject, within) = match item {
        Some(n) => (format!("item {n} "), format!(" in item {n}")),
        None => (String::new(), String::new()),
    };
    let Some(map) = value.as_object() else {
        return Err(format!(
            "{subject}must be a map with fields {}, got {}",
            field_list(object),
            shown(value)
        ));
    };
    if let Some(unknown) = map.keys().find(|k| !object.fields.contains_key(*k)) {
        return Err(format!("unknown field `{unknown}`{within}"));
    }
    if let Some(missing) = object.required.iter().find(|r| !map.contains_key(*r)) {
        return Err(format!("{subject}is missing required field `{missing}`"));
    }
    for (name, field_type) in &object.fields {
        let Some(field_value) = map.get(name) else { continue };
        check_scalar(field_type, field_value).map_err(|message| format!("field `{name}`{within} {message}"))?;
        if object.id.as_deref() == Some(name.as_str()) && field_value.as_str() == Some("") {
            return Err(format!("field `{name}`{within} must not be empty"));
        }
    }
    Ok(())
}

fn field_list(object: &ObjectType) -> String {
    object.fields.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
}

/// A value as quoted in an error: scalars as JSON, long strings cut short,
/// lists and maps by kind.
fn shown(value: &Value) -> String {
    match value {
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a map".to_string(),
        Value::String(s) if s.chars().count() > MAX_SHOWN_CHARS => {
            let head: String = s.chars().take(MAX_SHOWN_CHARS).collect();
            format!("{:?}… ({} characters)", head, s.chars().count())
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn entry(key: &str) -> &'static Entry {
        Catalog::builtin()
            .get(key)
            .unwrap_or_else(|| panic!("builtin catalogue lacks {key}"))
    }

    const REQUIRED_KEYS: [&str; 30] = [
        "passcode.required",
        "passcode.min_length",
        "passcode.allow_simple",
        "passcode.max_failed_attempts",
        "passcode.max_inactivity_min",
        "passcode.history",
        "passcode.max_age_days",
        "encryption.required",
        "encryption.method",
        "encryption.recovery_key_escrow",
        "os.min_version",
        "os.update_deadline_days",
        "apps.blocked",
        "apps.required",
        "apps.untrusted_sources",
        "network.wifi",
        "network.vpn",
        "network.firewall",
        "certs.trusted_roots",
        "certs.identity",
        "tls.allow_untrusted_prompt",
        "enforcement.noncompliance_actions",
        "device.allow_erase_all",
        "container.managed_to_unmanaged",
        "container.managed_pasteboard",
        "integrity.block_compromised",
        "av.realtime_required",
        "usb.storage_blocked",
        "cosmetic.lock_screen_message",
        "cosmetic.wallpaper",
    ];

    #[test]
    fn builtin_catalogue_covers_the_design() {
        let catalog = Catalog::builtin();
        assert!(catalog.len() >= 30, "only {} entries", catalog.len());
        for key in REQUIRED_KEYS {
            let entry = entry(key);
            assert_eq!(Some(entry.category.as_str()), key.split('.').next(), "{key}");
        }
        let categories: BTreeSet<&str> = catalog.entries().map(|e| e.category.as_str()).collect();
        for category in [
            "passcode",
            "encryption",
            "os",
            "apps",
            "network",
            "certs",
            "tls",
            "enforcement",
            "device",
            "container",
            "integrity",
            "av",
            "usb",
            "cosmetic",
        ] {
            assert!(categories.contains(category), "{category}");
        }
        let keys: Vec<&str> = catalog.entries().map(|e| e.key.as_str()).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted, "entries() is sorted by key");
    }

    #[test]
    fn builtin_catalogue_follows_the_risk_guidance() {
        let catalog = Catalog::builtin();
        for e in catalog.entries() {
            let critical_category = matches!(e.category.as_str(), "certs" | "container" | "enforcement");
            if critical_category || e.has_side_effect("wipe") || e.has_side_effect("retire") {
                assert_eq!(e.default_tier, 3, "{}", e.key);
            }
            if e.category == "cosmetic" {
                assert_eq!(
                    (e.default_tier, e.secure_direction),
                    (0, SecureDirection::None),
                    "{}",
                    e.key
                );
            }
            if e.has_side_effect("wipe") || e.has_side_effect("retire") {
                assert!(!e.rollback_effective, "{} wipes but claims rollback undoes it", e.key);
            }
        }
        assert_eq!(entry("passcode.max_failed_attempts").side_effects, ["wipe"]);
        assert!(!entry("encryption.required").rollback_effective);
        assert!(!entry("certs.trusted_roots").rollback_effective);
    }

    #[test]
    fn native_keys_follow_the_platform_vendor() {
        let min_length = entry("passcode.min_length");
        assert_eq!(
            min_length.native_key(Platform::Ios),
            Some("com.apple.mobiledevice.passwordpolicy/minLength")
        );
        assert_eq!(
            min_length.native_key(Platform::Macos),
            min_length.native_key(Platform::Ipados)
        );
        assert_eq!(
            min_length.native_key(Platform::Android),
            Some("passwordPolicies[].passwordMinimumLength")
        );
        assert_eq!(
            min_length.native_key(Platform::Windows),
            Some("./Device/Vendor/MSFT/Policy/Config/DeviceLock/MinDevicePasswordLength")
        );
        // Known to iOS only: not offered for macOS, which the entry leaves out.
        let tls = entry("tls.allow_untrusted_prompt");
        assert!(tls.native_key(Platform::Ios).is_some());
        assert_eq!(tls.native_key(Platform::Macos), None);
        assert_eq!(
            entry("enforcement.noncompliance_actions").native_key(Platform::Windows),
            None
        );
    }

    const ROOT_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const ROOT_B: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn check_accepts_good_and_explains_bad_values() {
        let long = "x".repeat(201);
        let cases: Vec<(&str, Value, Result<(), &str>)> = vec![
            ("passcode.required", json!(true), Ok(())),
            (
                "passcode.required",
                json!("yes"),
                Err(r#"must be true or false, got "yes""#),
            ),
            ("passcode.required", json!(null), Err("must be true or false, got null")),
            ("passcode.min_length", json!(8), Ok(())),
            ("passcode.min_length", json!(0), Ok(())),
            ("passcode.min_length", json!(16), Ok(())),
            (
                "passcode.min_length",
                json!(20),
                Err("must be an integer from 0 to 16, got 20"),
            ),
            (
                "passcode.min_length",
                json!(-1),
                Err("must be an integer from 0 to 16, got -1"),
            ),
            (
                "passcode.min_length",
                json!(8.5),
                Err("must be an integer from 0 to 16, got 8.5"),
            ),
            (
                "passcode.min_length",
                json!("8"),
                Err(r#"must be an integer from 0 to 16, got "8""#),
            ),
            (
                "passcode.min_length",
                json!([8]),
                Err("must be an integer from 0 to 16, got a list"),
            ),
            ("encryption.method", json!("xts_aes_256"), Ok(())),
            (
                "encryption.method",
                json!("des"),
                Err(r#"must be one of aes_cbc_128, aes_cbc_256, xts_aes_128, xts_aes_256, got "des""#),
            ),
            ("os.min_version", json!("17.4"), Ok(())),
            ("os.min_version", json!("10.0.22631.3447"), Ok(())),
            ("os.min_version", json!("14"), Ok(())),
            (
                "os.min_version",
                json!(17.4),
                Err(
                    r#"must be a quoted version string like "17.4", got the number 17.4 (unquoted, YAML reads 17.10 as 17.1)"#,
                ),
            ),
            (
                "os.min_version",
                json!("17.x"),
                Err(r#"must be a version of 1 to 4 dot-separated numbers like "17.4", got "17.x""#),
            ),
            (
                "os.min_version",
                json!("1.2.3.4.5"),
                Err(r#"must be a version of 1 to 4 dot-separated numbers like "17.4", got "1.2.3.4.5""#),
            ),
            (
                "os.min_version",
                json!("17..4"),
                Err(r#"must be a version of 1 to 4 dot-separated numbers like "17.4", got "17..4""#),
            ),
            ("cosmetic.lock_screen_message", json!("Property of Acme"), Ok(())),
            ("cosmetic.lock_screen_message", json!(""), Ok(())),
            (
                "cosmetic.lock_screen_message",
                json!(long),
                Err("must be at most 200 characters long, got 201"),
            ),
            ("cosmetic.lock_screen_message", json!(5), Err("must be a string, got 5")),
            ("apps.blocked", json!([]), Ok(())),
            ("apps.blocked", json!(["com.x", "com.y"]), Ok(())),
            (
                "apps.blocked",
                json!(["com.x", "com.y", "com.x"]),
                Err(r#"lists "com.x" twice"#),
            ),
            (
                "apps.blocked",
                json!("com.x"),
                Err(r#"must be a list of strings, got "com.x""#),
            ),
            (
                "apps.blocked",
                json!(["com.x", ""]),
                Err(r#"item 2 must be a non-empty string, got """#),
            ),
            (
                "apps.blocked",
                json!(["com.x", 7]),
                Err("item 2 must be a non-empty string, got 7"),
            ),
            (
                "certs.trusted_roots",
                json!([{"name": "acme-root", "sha256": ROOT_A}, {"name": "acme-2", "sha256": ROOT_B}]),
                Ok(()),
            ),
            (
                "certs.trusted_roots",
                json!([{"name": "a", "sha256": ROOT_A}, {"name": "b", "sha256": ROOT_B, "colour": "red"}]),
                Err("unknown field `colour` in item 2"),
            ),
            (
                "certs.trusted_roots",
                json!([{"name": "a"}]),
                Err("item 1 is missing required field `sha256`"),
            ),
            (
                "certs.trusted_roots",
                json!([{"name": "a", "sha256": "ABC"}]),
                Err(r#"field `sha256` in item 1 must be 64 lowercase hex characters (a SHA-256 digest), got "ABC""#),
            ),
            (
                "certs.trusted_roots",
                json!([{"name": "a", "sha256": ROOT_A.to_uppercase()}]),
                Err(
                    r#"field `sha256` in item 1 must be 64 lowercase hex characters (a SHA-256 digest), got "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"… (64 characters)"#,
                ),
            ),
            (
                "certs.trusted_roots",
                json!([{"name": "a", "sha256": ROOT_A}, {"name": "a", "sha256": ROOT_B}]),
                Err(r#"lists name "a" twice"#),
            ),
            (
                "certs.trusted_roots",
                json!(["acme-root"]),
                Err(r#"item 1 must be a map with fields name, sha256, got "acme-root""#),
            ),
            (
                "certs.trusted_roots",
                json!({"name": "a", "sha256": ROOT_A}),
                Err("must be a list of maps with fields name, sha256, got a map"),
            ),
            (
                "certs.trusted_roots",
                json!([{"name": "", "sha256": ROOT_A}]),
                Err("field `name` in item 1 must not be empty"),
            ),
            (
                "enforcement.noncompliance_actions",
                json!([{"action": "notify", "after_days": 0}, {"action": "wipe", "after_days": 400}]),
                Err("field `after_days` in item 2 must be an integer from 0 to 365, got 400"),
            ),
            (
                "enforcement.noncompliance_actions",
                json!([{"action": "nuke", "after_days": 1}]),
                Err(r#"field `action` in item 1 must be one of notify, block_access, lock, retire, wipe, got "nuke""#),
            ),
            (
                "network.vpn",
                json!({"type": "ikev2", "server": "vpn.example.com"}),
                Ok(()),
            ),
            (
                "network.vpn",
                json!({"type": "ikev2", "server": "vpn.example.com", "always_on": true}),
                Ok(()),
            ),
            (
                "network.vpn",
                json!({"type": "ikev2"}),
                Err("is missing required field `server`"),
            ),
            (
                "network.vpn",
                json!({"type": "ikev2", "server": "v", "colour": "red"}),
                Err("unknown field `colour`"),
            ),
            (
                "network.vpn",
                json!({"type": "pptp", "server": "v"}),
                Err(r#"field `type` must be one of ikev2, ipsec, l2tp, sstp, app, got "pptp""#),
            ),
            (
                "network.vpn",
                json!({"type": "ikev2", "server": "v", "always_on": "yes"}),
                Err(r#"field `always_on` must be true or false, got "yes""#),
            ),
            (
                "network.vpn",
                json!(5),
                Err("must be a map with fields always_on, server, type, got 5"),
            ),
            (
                "network.wifi",
                json!([{"ssid": "corp", "security": "wpa3_enterprise"}, {"ssid": "corp", "security": "open"}]),
                Err(r#"lists ssid "corp" twice"#),
            ),
        ];
        for (key, value, expected) in cases {
            let got = entry(key).check(&value);
            assert_eq!(got, expected.map_err(str::to_string), "{key}: {value}");
        }
    }

    fn dir(key: &str, old: Option<Value>, new: Option<Value>) -> Direction {
        entry(key).direction(old.as_ref(), new.as_ref())
    }

    #[test]
    fn direction_table() {
        use Direction::*;
        let root = |name: &str, sha: &str| json!({"name": name, "sha256": sha});
        let action = |action: &str, days: u32| json!({"action": action, "after_days": days});
        let cases: Vec<(&str, Option<Value>, Option<Value>, Direction)> = vec![
            // higher: ints
            ("passcode.min_length", Some(json!(6)), Some(json!(8)), Tighten),
            ("passcode.min_length", Some(json!(8)), Some(json!(4)), Loosen),
            ("passcode.min_length", Some(json!(8)), Some(json!(8)), Neutral),
            ("passcode.min_length", Some(json!(8)), Some(json!(40)), Unknown),
            ("passcode.min_length", Some(json!(8)), None, Loosen),
            ("passcode.min_length", None, Some(json!(4)), Tighten),
            ("passcode.min_length", None, Some(json!("four")), Unknown),
            ("passcode.min_length", None, None, Neutral),
            // lower: ints
            ("passcode.max_failed_attempts", Some(json!(10)), Some(json!(5)), Tighten),
            ("passcode.max_failed_attempts", Some(json!(5)), Some(json!(10)), Loosen),
            ("passcode.max_inactivity_min", Some(json!(5)), Some(json!(15)), Loosen),
            // higher: versions, numerically per part
            ("os.min_version", Some(json!("17.4")), Some(json!("17.10")), Tighten),
            ("os.min_version", Some(json!("17.10")), Some(json!("17.4")), Loosen),
            ("os.min_version", Some(json!("17.4")), Some(json!("17.4.0")), Neutral),
            ("os.min_version", Some(json!("17.4")), Some(json!(17.5)), Unknown),
            // higher: enums by list order
            (
                "encryption.method",
                Some(json!("aes_cbc_128")),
                Some(json!("xts_aes_256")),
                Tighten,
            ),
            (
                "encryption.method",
                Some(json!("xts_aes_128")),
                Some(json!("aes_cbc_256")),
                Loosen,
            ),
            (
                "encryption.method",
                Some(json!("xts_aes_128")),
                Some(json!("rot13")),
                Unknown,
            ),
            // "true" and "false"
            ("passcode.required", Some(json!(false)), Some(json!(true)), Tighten),
            ("passcode.required", Some(json!(true)), Some(json!(false)), Loosen),
            ("passcode.required", None, Some(json!(true)), Tighten),
            ("passcode.required", None, Some(json!(false)), Loosen),
            ("passcode.required", Some(json!(true)), None, Loosen),
            ("apps.untrusted_sources", Some(json!(true)), Some(json!(false)), Tighten),
            ("apps.untrusted_sources", Some(json!(false)), Some(json!(true)), Loosen),
            ("apps.untrusted_sources", None, Some(json!(true)), Loosen),
            ("apps.untrusted_sources", None, Some(json!(false)), Tighten),
            // superset: string sets
            ("apps.blocked", Some(json!(["a"])), Some(json!(["a", "b"])), Tighten),
            ("apps.blocked", Some(json!(["a", "b"])), Some(json!(["a"])), Loosen),
            ("apps.blocked", Some(json!(["a"])), Some(json!(["b"])), Loosen),
            (
                "apps.blocked",
                Some(json!(["a", "b"])),
                Some(json!(["b", "a"])),
                Neutral,
            ),
            ("apps.blocked", Some(json!(["a"])), Some(json!(["a", "a"])), Unknown),
            ("apps.blocked", None, Some(json!(["a"])), Tighten),
            ("apps.blocked", Some(json!(["a"])), None, Loosen),
            // subset: object sets compared by id
            (
                "certs.trusted_roots",
                Some(json!([root("a", ROOT_A)])),
                Some(json!([root("a", ROOT_A), root("b", ROOT_B)])),
                Loosen,
            ),
            (
                "certs.trusted_roots",
                Some(json!([root("a", ROOT_A), root("b", ROOT_B)])),
                Some(json!([root("b", ROOT_B)])),
                Tighten,
            ),
            (
                "certs.trusted_roots",
                Some(json!([root("a", ROOT_A)])),
                Some(json!([root("a", ROOT_B)])),
                Unknown,
            ),
            (
                "certs.trusted_roots",
                Some(json!([root("a", ROOT_A), root("b", ROOT_B)])),
                Some(json!([root("b", ROOT_B), root("a", ROOT_A)])),
                Neutral,
            ),
            ("certs.trusted_roots", None, Some(json!([root("a", ROOT_A)])), Loosen),
            ("certs.trusted_roots", None, Some(json!([])), Tighten),
            ("certs.trusted_roots", Some(json!([root("a", ROOT_A)])), None, Loosen),
            // superset: object sets
            (
                "enforcement.noncompliance_actions",
                Some(json!([action("notify", 0)])),
                Some(json!([action("notify", 0), action("wipe", 30)])),
                Tighten,
            ),
            (
                "enforcement.noncompliance_actions",
                Some(json!([action("notify", 0), action("lock", 3)])),
                Some(json!([action("notify", 0)])),
                Loosen,
            ),
            (
                "enforcement.noncompliance_actions",
                Some(json!([action("wipe", 30)])),
                Some(json!([action("wipe", 7)])),
                Unknown,
            ),
            (
                "enforcement.noncompliance_actions",
                Some(json!([action("wipe", 30)])),
                Some(json!([action("wipe", 7), action("lock", 1)])),
                Unknown,
            ),
            // none
            (
                "cosmetic.wallpaper",
                Some(json!("a.png")),
                Some(json!("b.png")),
                Neutral,
            ),
            ("cosmetic.wallpaper", Some(json!("a.png")), None, Neutral),
            (
                "network.vpn",
                Some(json!({"type": "ikev2", "server": "a"})),
                Some(json!({"type": "ipsec", "server": "b"})),
                Neutral,
            ),
        ];
        for (key, old, new, expected) in cases {
            let label = format!("{key}: {old:?} -> {new:?}");
            assert_eq!(dir(key, old, new), expected, "{label}");
        }
    }

    #[test]
    fn direction_serializes_lowercase() {
        assert_eq!(serde_json::to_value(Direction::Tighten).unwrap(), json!("tighten"));
        assert_eq!(Direction::Unknown.to_string(), "unknown");
    }

    #[test]
    fn versions_compare_numerically_per_part() {
        assert_eq!(compare_versions("17.4", "17.10"), Some(Ordering::Less));
        assert_eq!(compare_versions("17.10", "17.4"), Some(Ordering::Greater));
        assert_eq!(compare_versions("17", "17.0.0"), Some(Ordering::Equal));
        assert_eq!(compare_versions("10.0.22631", "10.0.19045"), Some(Ordering::Greater));
        assert_eq!(compare_versions("17.04", "17.4"), Some(Ordering::Equal));
        for bad in [
            "",
            "17.",
            ".4",
            "17.x",
            "1.2.3.4.5",
            "v17",
            "17.4 ",
            "-1",
            "99999999999999999999999",
        ] {
            assert_eq!(compare_versions(bad, "17.4"), None, "{bad:?}");
        }
    }

    #[test]
    fn set_members_are_identified_and_diffed_by_id() {
        let roots = entry("certs.trusted_roots");
        assert!(roots.is_set());
        assert!(!entry("network.vpn").is_set());
        assert_eq!(
            roots
                .set_member_id(&json!({"name": "acme", "sha256": ROOT_A}))
                .as_deref(),
            Some("acme")
        );
        assert_eq!(roots.set_member_id(&json!("acme")), None);
        assert_eq!(
            entry("apps.blocked").set_member_id(&json!("com.x")).as_deref(),
            Some("com.x")
        );
        assert_eq!(entry("passcode.min_length").set_member_id(&json!(8)), None);

        let old = json!([{"name": "a", "sha256": ROOT_A}, {"name": "b", "sha256": ROOT_A}]);
        let new = json!([{"name": "c", "sha256": ROOT_A}, {"name": "b", "sha256": ROOT_B}]);
        let changes = roots.set_changes(Some(&old), Some(&new)).unwrap();
        assert_eq!(changes.added, ["c"]);
        assert_eq!(changes.removed, ["a"]);
        assert_eq!(changes.changed, ["b"]);
        let all_new = roots.set_changes(None, Some(&new)).unwrap();
        assert_eq!((all_new.added.len(), all_new.removed.len()), (2, 0));
        assert_eq!(roots.set_changes(Some(&json!("bad")), None), None);
        assert_eq!(entry("passcode.min_length").set_changes(None, None), None);
    }

    const GOOD_ENTRY: &str = "
- key: demo.level
  category: demo
  description: A demo setting.
  type: {int: {min: 0, max: 10}}
  secure_direction: higher
  default_tier: 1
  side_effects: []
  rollback_effective: true
  platforms: [ios, windows]
  native: {windows: ./Device/Vendor/MSFT/Policy/Config/Demo/Level}
";

    fn load_with(from: &str, to: &str) -> Result<Catalog, CatalogError> {
        assert!(GOOD_ENTRY.contains(from), "{from}");
        Catalog::from_yaml(&GOOD_ENTRY.replacen(from, to, 1))
    }

    fn invalid(result: Result<Catalog, CatalogError>) -> (String, String) {
        match result {
            Err(CatalogError::Invalid { field, reason, key }) => {
                assert_eq!(key, "demo.level");
                (field, reason)
            }
            other => panic!("expected an invalid-entry error, got {other:?}"),
        }
    }

    #[test]
    fn from_yaml_accepts_a_good_entry() {
        let catalog = Catalog::from_yaml(GOOD_ENTRY).unwrap();
        assert_eq!(catalog.len(), 1);
        let e = catalog.get("demo.level").unwrap();
        assert_eq!(e.value_type, ValueType::Int { min: 0, max: 10 });
        assert_eq!(e.native.apple, None);
        assert_eq!(
            e.native_key(Platform::Windows),
            Some("./Device/Vendor/MSFT/Policy/Config/Demo/Level")
        );
        assert!(Catalog::from_yaml("[]").unwrap().is_empty());
        // An unquoted `true` means the same as "true".
        let flag = GOOD_ENTRY
            .replace("{int: {min: 0, max: 10}}", "bool")
            .replace("secure_direction: higher", "secure_direction: true");
        assert_eq!(
            Catalog::from_yaml(&flag)
                .unwrap()
                .get("demo.level")
                .unwrap()
                .secure_direction,
            SecureDirection::True
        );
    }

    #[test]
    fn from_yaml_rejects_unknown_fields() {
        let err = load_with("  default_tier: 1\n", "  default_tier: 1\n  colour: red\n").unwrap_err();
        let CatalogError::Schema { key, source } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(key, "demo.level");
        assert!(source.to_string().contains("unknown field `colour`"), "{source}");
        assert!(crate::errors::chain(&err).starts_with("catalogue entry demo.level does not match the entry schema: "));

        let err = load_with("native: {", "native: {linux: x, ").unwrap_err();
        assert!(crate::errors::chain(&err).contains("unknown field `linux`"), "{err}");
        let (field, reason) = invalid(load_with("max: 10}", "max: 10, step: 2}"));
        assert_eq!(field, "type");
        assert!(reason.contains("unknown field `step`"), "{reason}");
    }

    #[test]
    fn from_yaml_rejects_duplicate_keys() {
        let twice = format!("{GOOD_ENTRY}{GOOD_ENTRY}");
        let err = Catalog::from_yaml(&twice).unwrap_err();
        assert!(matches!(&err, CatalogError::DuplicateKey { key, first: 1, second: 2 } if key == "demo.level"));
        assert_eq!(err.to_string(), "catalogue lists demo.level twice (entries #1 and #2)");
        // A YAML mapping key given twice inside one entry.
        let err = load_with("  default_tier: 1\n", "  default_tier: 1\n  default_tier: 2\n").unwrap_err();
        assert!(matches!(err, CatalogError::Yaml(_)), "{err:?}");
    }

    #[test]
    fn from_yaml_rejects_bad_tiers_ranges_and_labels() {
        let cases = [
            (
                "default_tier: 1",
                "default_tier: 4",
                "default_tier",
                "must be from 0 to 3, got 4",
            ),
            (
                "min: 0, max: 10",
                "min: 10, max: 0",
                "type",
                "`int` min 10 is greater than max 0",
            ),
            (
                "side_effects: []",
                "side_effects: [explode]",
                "side_effects",
                "has unknown side effect \"explode\"",
            ),
            (
                "side_effects: []",
                "side_effects: [wipe, wipe]",
                "side_effects",
                "lists \"wipe\" twice",
            ),
            (
                "platforms: [ios, windows]",
                "platforms: []",
                "platforms",
                "must list at least one platform",
            ),
            (
                "platforms: [ios, windows]",
                "platforms: [ios, ios]",
                "platforms",
                "lists ios twice",
            ),
            (
                "secure_direction: higher",
                "secure_direction: superset",
                "secure_direction",
                "`superset` does not fit",
            ),
            (
                "secure_direction: higher",
                "secure_direction: up",
                "secure_direction",
                "must be one of higher, lower",
            ),
            (
                "category: demo",
                "category: other",
                "category",
                "is \"other\" but the key starts",
            ),
            (
                "description: A demo setting.",
                "description: ''",
                "description",
                "must not be empty",
            ),
            ("{int: {min: 0, max: 10}}", "integer", "type", "unknown type `integer`"),
            (
                "{int: {min: 0, max: 10}}",
                "{enum: [a, b, a]}",
                "type",
                "`enum` lists \"a\" twice",
            ),
            (
                "{int: {min: 0, max: 10}}",
                "{set: {item: {object: {fields: {n: string}}}}}",
                "type",
                "needs an `id`",
            ),
            (
                "{int: {min: 0, max: 10}}",
                "{object: {fields: {n: {set: {item: string}}}}}",
                "type",
                "object field `n` cannot be a set inside an object",
            ),
            (
                "{int: {min: 0, max: 10}}",
                "{object: {fields: {n: string}, required: [m]}}",
                "type",
                "`object` required names no field: \"m\"",
            ),
            (
                "./Device/",
                "Device/",
                "native.windows",
                "must be an OMA-URI starting with `./`",
            ),
        ];
        for (from, to, want_field, want_reason) in cases {
            let (field, reason) = invalid(load_with(from, to));
            assert_eq!(field, want_field, "{to}");
            assert!(reason.contains(want_reason), "{to}: {reason}");
        }
        let err = load_with("platforms: [ios, windows]", "platforms: [ios, linux]").unwrap_err();
        assert!(crate::errors::chain(&err).contains("unknown variant `linux`"), "{err}");
        let err = load_with("default_tier: 1", "default_tier: -1").unwrap_err();
        assert!(matches!(err, CatalogError::Schema { .. }), "{err:?}");
        let err = load_with("- key: demo.level\n", "- name: demo.level\n").unwrap_err();
        assert!(matches!(err, CatalogError::MissingKey { position: 1 }), "{err:?}");
        assert!(matches!(Catalog::from_yaml("key: x"), Err(CatalogError::Yaml(_))));
    }

    fn version_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(0u32..30, 1..=4)
            .prop_map(|parts| parts.iter().map(u32::to_string).collect::<Vec<_>>().join("."))
    }

    fn app_set() -> impl Strategy<Value = Value> {
        prop::collection::btree_set("[a-e]", 0..5).prop_map(|set| json!(set.into_iter().collect::<Vec<_>>()))
    }

    fn root_set() -> impl Strategy<Value = Value> {
        prop::collection::btree_map("[a-d]", prop::bool::ANY, 0..4).prop_map(|roots| {
            let members: Vec<Value> = roots
                .into_iter()
                .map(|(name, first)| json!({"name": name, "sha256": if first { ROOT_A } else { ROOT_B }}))
                .collect();
            json!(members)
        })
    }

    /// Tightening one way is loosening the other way, and the reverse.
    fn assert_antisymmetric(key: &str, a: &Value, b: &Value) -> Result<(), TestCaseError> {
        let e = entry(key);
        let forth = e.direction(Some(a), Some(b));
        let back = e.direction(Some(b), Some(a));
        prop_assert_eq!(
            forth == Direction::Tighten,
            back == Direction::Loosen,
            "{}: {} -> {}",
            key,
            a,
            b
        );
        prop_assert_eq!(e.direction(Some(a), Some(a)), Direction::Neutral);
        prop_assert_ne!(forth, Direction::Unknown);
        Ok(())
    }

    /// True for values one of which contains the other. A swap (members
    /// both added and removed) loosens either way, by design.
    fn nested(e: &Entry, a: &Value, b: &Value) -> bool {
        let changes = e.set_changes(Some(a), Some(b)).unwrap();
        changes.changed.is_empty() && (changes.added.is_empty() || changes.removed.is_empty())
    }

    proptest! {
        #[test]
        fn int_directions_are_antisymmetric(a in 0i64..=16, b in 0i64..=16, c in 2i64..=100, d in 2i64..=100) {
            assert_antisymmetric("passcode.min_length", &json!(a), &json!(b))?;
            assert_antisymmetric("passcode.max_failed_attempts", &json!(c), &json!(d))?;
        }

        #[test]
        fn version_directions_are_antisymmetric(a in version_strategy(), b in version_strategy()) {
            assert_antisymmetric("os.min_version", &json!(a), &json!(b))?;
        }

        #[test]
        fn string_set_directions_are_antisymmetric(a in app_set(), b in app_set()) {
            let e = entry("apps.blocked");
            let (forth, back) = (e.direction(Some(&a), Some(&b)), e.direction(Some(&b), Some(&a)));
            prop_assert!(forth != Direction::Tighten || back == Direction::Loosen);
            if nested(e, &a, &b) {
                assert_antisymmetric("apps.blocked", &a, &b)?;
            } else {
                prop_assert_eq!((forth, back), (Direction::Loosen, Direction::Loosen));
            }
            prop_assert_eq!(e.direction(Some(&a), Some(&a)), Direction::Neutral);
        }

        #[test]
        fn object_set_directions_are_antisymmetric(a in root_set(), b in root_set()) {
            let e = entry("certs.trusted_roots");
            let (forth, back) = (e.direction(Some(&a), Some(&b)), e.direction(Some(&b), Some(&a)));
            prop_assert!(forth != Direction::Tighten || back == Direction::Loosen);
            prop_assert!(back != Direction::Tighten || forth == Direction::Loosen);
            if nested(e, &a, &b) {
                assert_antisymmetric("certs.trusted_roots", &a, &b)?;
            }
            prop_assert_eq!(e.direction(Some(&a), Some(&a)), Direction::Neutral);
        }

        #[test]
        fn every_setting_is_neutral_to_itself(value in prop_oneof![
            Just(json!(true)), (0i64..20).prop_map(|n| json!(n)), version_strategy().prop_map(|v| json!(v)), app_set()
        ]) {
            for e in Catalog::builtin().entries() {
                prop_assert_eq!(e.direction(Some(&value), Some(&value)), Direction::Neutral, "{}", e.key);
            }
        }
    }
}
