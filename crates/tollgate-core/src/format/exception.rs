//! `kind: Exception` — a time-limited, scoped exemption from some settings.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::value::{checked_str, deserialize_checked, expect_literal, FromRaw, Label, UniqueList, API_VERSION};

#[derive(Debug, Clone, PartialEq)]
pub struct Exception {
    pub name: String,
    pub baseline: String,
    pub settings: Vec<String>,
    pub scope: Scope,
    pub reason: String,
    pub expires: DateTime<Utc>,
}

/// Who an exception covers: device groups or named devices, never both.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    Groups(Vec<String>),
    Devices(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ExceptionDoc {
    #[serde(deserialize_with = "api_version")]
    #[allow(dead_code)]
    api_version: (),
    #[serde(deserialize_with = "kind")]
    #[allow(dead_code)]
    kind: (),
    metadata: Metadata,
    spec: Spec,
}

fn api_version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    expect_literal(d, API_VERSION, "apiVersion")
}
fn kind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    expect_literal(d, "Exception", "kind (files under exceptions/)")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: Label,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    baseline: Label,
    #[serde(deserialize_with = "settings")]
    settings: Vec<String>,
    scope: ScopeDoc,
    #[serde(deserialize_with = "reason")]
    reason: String,
    expires: DateTime<Utc>,
}

fn settings<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of setting keys")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            use serde::de::Error;
            let catalog = super::value::current_catalog();
            let mut out: Vec<String> = Vec::new();
            while let Some(key) = seq.next_element::<String>()? {
                if out.contains(&key) {
                    return Err(A::Error::custom(format!("setting `{key}` is listed twice")));
                }
                if catalog.is_some_and(|c| c.get(&key).is_none()) {
                    return Err(A::Error::custom(format!(
                        "unknown setting `{key}` (not in the setting catalogue)"
                    )));
                }
                out.push(key);
            }
            if out.is_empty() {
                return Err(A::Error::custom("settings must name at least one exempted setting"));
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V)
}

fn reason<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked_str(d, |r| {
        if r.trim().is_empty() {
            Err("reason must say why the exception is needed".to_string())
        } else {
            Ok(r.to_string())
        }
    })
}

struct ScopeDoc(Scope);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeRaw {
    groups: Option<UniqueList<Label>>,
    devices: Option<UniqueList<String>>,
}

impl<'de> Deserialize<'de> for ScopeDoc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_checked(d)
    }
}

impl FromRaw for ScopeDoc {
    type Raw = ScopeRaw;
    fn from_raw(raw: ScopeRaw) -> Result<Self, String> {
        match (raw.groups, raw.devices) {
            (Some(g), None) if !g.0.is_empty() => Ok(ScopeDoc(Scope::Groups(g.0.into_iter().map(|l| l.0).collect()))),
            (None, Some(d)) if !d.0.is_empty() => Ok(ScopeDoc(Scope::Devices(d.0))),
            (Some(_), Some(_)) => Err("scope takes either groups or devices, not both".into()),
            _ => Err("scope must name at least one group or device".into()),
        }
    }
}

impl From<ExceptionDoc> for Exception {
    fn from(doc: ExceptionDoc) -> Self {
        Exception {
            name: doc.metadata.name.0,
            baseline: doc.spec.baseline.0,
            settings: doc.spec.settings,
            scope: doc.spec.scope.0,
            reason: doc.spec.reason,
            expires: doc.spec.expires,
        }
    }
}
