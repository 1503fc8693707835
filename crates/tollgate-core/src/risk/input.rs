//! The risk policy's input document (DESIGN 3): one per change.
//!
//! Field names are a contract shared with every policy, the builtin one and
//! any `policy/*.rego` a governed repo carries, so they are only ever added to,
//! never renamed. Fields this crate added to the DESIGN shape are `owners`,
//! `exception`, `governance_file`, `fields` and `effective` on the change;
//! they are left out of the JSON when empty, so a policy written against the
//! bare contract never sees them.

use serde::{Deserialize, Serialize};

use crate::ids::Platform;

// The policy sees the same vocabulary as the diff: one definition each.
pub use crate::catalog::Direction as SettingDirection;
pub use crate::diff::{ChangeOp, DocKind as ChangeKind, FieldChange, SettingOp};

/// The whole input document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    pub change: ChangeInput,
    /// The change's author (forge login or local identity).
    pub author: String,
    /// Fleet size, when known (`plan --fleet FILE`, or the controller's device
    /// reports). Absent offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetInput>,
}

/// One changed document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeInput {
    pub kind: ChangeKind,
    pub op: ChangeOp,
    /// `metadata.name` of the document.
    pub name: String,
    /// Platform of a baseline; absent for governance files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Path in the governed repo at the head revision (at the base for removals).
    pub path: String,
    /// Changed settings, in the order the diff lists them (the policy keeps it
    /// for its reasons). For a removed baseline: all of its settings.
    #[serde(default)]
    pub settings: Vec<SettingInput>,
    #[serde(default)]
    pub targets: TargetsInput,
    /// Devices reached by the change; `None` when unknown (adds nothing).
    #[serde(default)]
    pub blast_radius: Option<BlastRadius>,
    /// Approver groups owning the baseline (`metadata.owners`); for an
    /// exception, the owners of the baseline it exempts from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
    /// Present for `kind: exception`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<ExceptionInput>,
    /// Present for `kind: governance`: the file that changed, e.g.
    /// `tollgate.yaml` or `policy/risk.rego`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub governance_file: Option<String>,
    /// Document fields outside `spec.settings` that changed (owners,
    /// priority, platform; leaf paths of a governance file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    /// What devices get that this change alters through other baselines:
    /// per (platform, target group) and key, the effective value before and
    /// after when the baseline it comes from changes (a new baseline
    /// overriding an existing one by priority, a removal or narrowing that
    /// leaves devices to a weaker one or to none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effective: Vec<EffectiveInput>,
}

/// One effective setting of one (platform, target group) that the change
/// alters (see `crate::explain::effective_changes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EffectiveInput {
    pub platform: Platform,
    pub group: String,
    pub key: String,
    /// What devices got at the base; null when nothing set it or in conflict.
    #[serde(default)]
    pub old: serde_json::Value,
    /// What they get at the head; null when nothing sets it or in conflict.
    #[serde(default)]
    pub new: serde_json::Value,
    /// `unknown` when either side is a conflict.
    pub direction: SettingDirection,
    /// The baseline devices get the key from at the head.
    #[serde(default)]
    pub baseline: Option<String>,
    /// The baseline they got it from at the base.
    #[serde(default)]
    pub overridden: Option<String>,
    /// `overridden` still sets the key for the group and `baseline` beats it.
    #[serde(default)]
    pub overridden_applies: bool,
    #[serde(default)]
    pub conflict_before: bool,
    #[serde(default)]
    pub conflict_after: bool,
    /// The catalogue entry of `key`.
    #[serde(default)]
    pub catalog: Option<CatalogInput>,
}

/// One changed setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingInput {
    pub key: String,
    pub op: SettingOp,
    /// Value at the base revision; null when added.
    #[serde(default)]
    pub old: serde_json::Value,
    /// Value at the head revision; null when removed.
    #[serde(default)]
    pub new: serde_json::Value,
    pub direction: SettingDirection,
    /// The catalogue entry; `None` for a key the catalogue does not know.
    #[serde(default)]
    pub catalog: Option<CatalogInput>,
    /// For set-valued settings: member ids gained and lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members_added: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members_removed: Vec<String>,
}

/// The catalogue facts the policy needs about one setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogInput {
    pub category: String,
    pub default_tier: u8,
    /// e.g. `wipe`, `retire`.
    #[serde(default)]
    pub side_effects: Vec<String>,
    /// False where undoing the setting does not undo its effect.
    pub rollback_effective: bool,
}

/// Target group changes of a baseline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetsInput {
    #[serde(default)]
    pub groups_added: Vec<String>,
    #[serde(default)]
    pub groups_removed: Vec<String>,
}

/// How many devices a change reaches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlastRadius {
    pub devices: u64,
    /// `devices / fleet.devices`; `None` when the fleet size is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_fraction: Option<f64>,
}

impl BlastRadius {
    /// Blast radius of `devices` in a fleet of `fleet_devices` (fraction unknown
    /// for an empty fleet).
    pub fn from_counts(devices: u64, fleet_devices: u64) -> Self {
        let fleet_fraction = (fleet_devices > 0).then(|| devices as f64 / fleet_devices as f64);
        BlastRadius {
            devices,
            fleet_fraction,
        }
    }
}

/// The managed fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetInput {
    pub devices: u64,
}

/// An exception document as the policy sees it (the head version; the base
/// version for a removal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionInput {
    /// Name of the baseline the exception exempts from.
    pub baseline: String,
    /// The exempted settings with their catalogue entries.
    #[serde(default)]
    pub settings: Vec<ExemptedSettingInput>,
    /// Whole days from now until `spec.expires`, rounded down: negative once
    /// expired, `None` when the document has no expiry.
    #[serde(default)]
    pub days_until_expiry: Option<i64>,
    /// `spec.reason`.
    #[serde(default)]
    pub reason: Option<String>,
}

/// One setting an exception exempts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExemptedSettingInput {
    pub key: String,
    #[serde(default)]
    pub catalog: Option<CatalogInput>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn design_example_round_trips() {
        let json = serde_json::json!({
            "change": {"kind": "baseline", "op": "modified", "name": "corp-ios", "platform": "ios",
                       "path": "baselines/ios/corp-ios.yaml",
                       "settings": [{"key": "passcode.min_length", "op": "changed", "old": 8, "new": 4,
                                     "direction": "loosen",
                                     "catalog": {"category": "passcode", "default_tier": 2,
                                                 "side_effects": [], "rollback_effective": true}}],
                       "targets": {"groups_added": [], "groups_removed": []},
                       "blast_radius": {"devices": 4200, "fleet_fraction": 0.12}},
            "author": "alice", "fleet": {"devices": 35000}
        });
        let input: PolicyInput = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(input.change.settings[0].direction, SettingDirection::Loosen);
        assert_eq!(serde_json::to_value(&input).unwrap(), json);
    }

    #[test]
    fn unknown_blast_radius_is_null_not_absent() {
        let input = PolicyInput {
            change: ChangeInput {
                kind: ChangeKind::Governance,
                op: ChangeOp::Modified,
                name: "acme".into(),
                platform: None,
                path: "tollgate.yaml".into(),
                settings: vec![],
                targets: TargetsInput::default(),
                blast_radius: None,
                owners: vec![],
                exception: None,
                governance_file: Some("tollgate.yaml".into()),
                fields: Vec::new(),
                effective: Vec::new(),
            },
            author: "bob".into(),
            fleet: None,
        };
        let json = serde_json::to_value(&input).unwrap();
        assert!(json["change"]["blast_radius"].is_null());
        assert!(json["change"].get("owners").is_none());
    }

    #[test]
    fn fraction_from_counts() {
        assert_eq!(BlastRadius::from_counts(10, 0).fleet_fraction, None);
        assert_eq!(BlastRadius::from_counts(1, 4).fleet_fraction, Some(0.25));
    }
}
