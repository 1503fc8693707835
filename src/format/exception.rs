//! `kind: Exception` — a time-limited, scoped exemption from some settings.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::value::{expect_literal, Label, UniqueList, API_VERSION};

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
    let list = UniqueList::<String>::deserialize(d)?.0;
    if list.is_empty() {
        return Err(serde::de::Error::custom("settings must name at least one exempted setting"));
    }
    if let Some(catalog) = super::value::current_catalog() {
        if let Some(unknown) = list.iter().find(|k| catalog.get(k).is_none()) {
            return Err(serde::de::Error::custom(format!(
                "unknown setting `{unknown}` (not in the setting catalogue)"
            )));
        }
    }
    Ok(list)
}

fn reason<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let r = String::deserialize(d)?;
    if r.trim().is_empty() {
        return Err(serde::de::Error::custom("reason must say why the exception is needed"));
    }
    Ok(r)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, try_from = "ScopeRaw")]
struct ScopeDoc(Scope);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeRaw {
    groups: Option<UniqueList<Label>>,
    devices: Option<UniqueList<String>>,
}

impl TryFrom<ScopeRaw> for ScopeDoc {
    type Error = String;
    fn try_from(raw: ScopeRaw) -> Result<Self, String> {
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
