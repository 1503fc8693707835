//! `kind: Baseline` — the declared configuration of a class of devices.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::value::{
    checked_number, deserialize_checked, expect_literal, FromRaw, Label, Settings, UniqueList, API_VERSION,
};
use crate::ids::Platform;

/// A parsed, validated baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    pub name: String,
    /// Approver groups (from `tollgate.yaml`) that own this baseline.
    pub owners: Vec<String>,
    pub platform: Platform,
    /// Higher wins where two baselines target overlapping groups.
    pub priority: i64,
    pub target_groups: Vec<String>,
    pub settings: BTreeMap<String, Value>,
}

/// Highest accepted `spec.priority`; keeps ordering arithmetic far from overflow.
pub const MAX_PRIORITY: i64 = 1_000_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct BaselineDoc {
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
    expect_literal(d, "Baseline", "kind (files under baselines/)")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: Label,
    #[serde(default)]
    owners: UniqueList<Label>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    platform: Platform,
    #[serde(default, deserialize_with = "priority")]
    priority: i64,
    targets: Targets,
    settings: Settings,
}

fn priority<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    checked_number(d, |p| {
        if p.fract() == 0.0 && (0.0..=MAX_PRIORITY as f64).contains(&p) {
            Ok(p as i64)
        } else {
            Err(format!(
                "priority must be a whole number from 0 to {MAX_PRIORITY}, got {p}"
            ))
        }
    })
}

struct Targets {
    groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetsRaw {
    groups: UniqueList<Label>,
}

impl<'de> Deserialize<'de> for Targets {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_checked(d)
    }
}

impl FromRaw for Targets {
    type Raw = TargetsRaw;
    fn from_raw(raw: TargetsRaw) -> Result<Self, String> {
        if raw.groups.0.is_empty() {
            return Err("targets.groups must name at least one device group".into());
        }
        Ok(Targets {
            groups: raw.groups.0.into_iter().map(|l| l.0).collect(),
        })
    }
}

impl From<BaselineDoc> for Baseline {
    fn from(doc: BaselineDoc) -> Self {
        Baseline {
            name: doc.metadata.name.0,
            owners: doc.metadata.owners.0.into_iter().map(|l| l.0).collect(),
            platform: doc.spec.platform,
            priority: doc.spec.priority,
            target_groups: doc.spec.targets.groups,
            settings: doc.spec.settings.0,
        }
    }
}
