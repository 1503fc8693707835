//! What a change needs: its semantic diff judged by the risk policy of the
//! *base* revision (DESIGN 3, 5).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::Catalog;
use crate::diff::{ChangeOp, DocChange, DocKind, FieldChange, SettingChange};
use crate::explain::{conflicts, effective_changes, Conflict, EffectiveChange};
use crate::format::Scope;
use crate::ids::{CommitSha, Digest, Platform};
use crate::risk::{
    BlastRadius, CatalogInput, ChangeInput, EffectiveInput, ExceptionInput, ExemptedSettingInput, FleetInput,
    PolicyInput, Requirements, RiskDecision, RiskPolicy, SettingInput, TargetsInput,
};
use crate::snapshot::Snapshot;

/// Device counts, so the policy can weigh blast radius (`plan --fleet`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    pub devices: u64,
    #[serde(default)]
    pub groups: BTreeMap<String, u64>,
}

impl Fleet {
    /// Devices reached by targeting `groups` (an upper bound: groups may
    /// overlap), never more than the fleet.
    pub fn devices_in(&self, groups: &[String]) -> u64 {
        groups
            .iter()
            .map(|g| self.groups.get(g).copied().unwrap_or(0))
            .sum::<u64>()
            .min(self.devices)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub base: CommitSha,
    pub head: CommitSha,
    /// Highest tier of any change; 0 when nothing governed changed.
    pub tier: u8,
    pub changes: Vec<PlannedChange>,
    /// Conflicts at the head (as `validate` reports them): baselines of one
    /// platform that set one key differently at equal priority for a group.
    /// Shown, not refused; a change that causes one is judged by its effect.
    pub conflicts: Vec<Conflict>,
}

impl Plan {
    /// Changes that cannot be promoted whatever the approvals.
    pub fn has_violations(&self) -> bool {
        self.changes.iter().any(|c| !c.violations.is_empty())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedChange {
    pub kind: DocKind,
    pub op: ChangeOp,
    pub name: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    pub tier: u8,
    pub reasons: Vec<String>,
    pub requirements: Requirements,
    pub rollback_effective: bool,
    /// Digest of the document at head (`null` when removed); approvals bind to it.
    pub digest: Option<Digest>,
    pub base_digest: Option<Digest>,
    pub settings: Vec<SettingChange>,
    pub fields: Vec<FieldChange>,
    pub groups_added: Vec<String>,
    pub groups_removed: Vec<String>,
    pub violations: Vec<String>,
    /// What devices get that this change alters through other baselines
    /// (baselines only): a new winner, a fallback, a conflict.
    pub effective: Vec<EffectiveChange>,
}

/// Everything the policy needs besides the changes themselves.
pub struct PlanContext<'a> {
    pub catalog: &'a Catalog,
    /// The base revision, whole: its config and policy judge the change, and
    /// its effective settings are what the change is measured against.
    pub base: &'a Snapshot,
    /// The head revision, whole and valid (`source::read_revision`).
    pub head: &'a Snapshot,
    pub author: &'a str,
    pub fleet: Option<&'a Fleet>,
    pub now: DateTime<Utc>,
}

/// Builds the policy input of one change (DESIGN 3; extra fields are added,
/// none renamed). `effective` are the effective changes it causes.
pub fn policy_input(change: &DocChange, effective: &[EffectiveChange], ctx: &PlanContext) -> PolicyInput {
    let settings = change
        .settings
        .iter()
        .map(|s| SettingInput {
            key: s.key.clone(),
            op: s.op,
            old: s.old.clone().unwrap_or(Value::Null),
            new: s.new.clone().unwrap_or(Value::Null),
            direction: s.direction,
            catalog: ctx.catalog.get(&s.key).map(catalog_input),
            members_added: s.members_added.clone(),
            members_removed: s.members_removed.clone(),
        })
        .collect();
    let find_baseline = |name: &str| ctx.head.baselines.get(name).or_else(|| ctx.base.baselines.get(name));
    let exception = ctx
        .head
        .exceptions
        .get(&change.name)
        .or_else(|| ctx.base.exceptions.get(&change.name));
    let owners: Vec<String> = match change.kind {
        DocKind::Baseline => find_baseline(&change.name)
            .map(|b| b.doc.owners.clone())
            .unwrap_or_default(),
        // An exception is owned by the owners of the baseline it exempts from.
        DocKind::Exception => exception
            .and_then(|e| find_baseline(&e.doc.baseline))
            .map(|b| b.doc.owners.clone())
            .unwrap_or_default(),
        DocKind::Governance => Vec::new(),
    };
    let blast_radius = ctx.fleet.map(|f| match change.kind {
        DocKind::Governance => BlastRadius::from_counts(f.devices, f.devices),
        DocKind::Baseline => {
            let mut groups: Vec<String> = [ctx.base, ctx.head]
                .iter()
                .filter_map(|s| s.baselines.get(&change.name))
                .flat_map(|b| b.doc.target_groups.iter().cloned())
                .collect();
            groups.sort();
            groups.dedup();
            BlastRadius::from_counts(f.devices_in(&groups), f.devices)
        }
        DocKind::Exception => {
            let groups = match exception.map(|e| &e.doc.scope) {
                Some(Scope::Groups(g)) => g.clone(),
                _ => Vec::new(),
            };
            BlastRadius::from_counts(f.devices_in(&groups), f.devices)
        }
    });
    // The policy judges what an exception grants: the head version (the base
    // one for a removal).
    let exception = (change.kind == DocKind::Exception)
        .then_some(exception)
        .flatten()
        .map(|e| ExceptionInput {
            baseline: e.doc.baseline.clone(),
            settings: e
                .doc
                .settings
                .iter()
                .map(|k| ExemptedSettingInput {
                    key: k.clone(),
                    catalog: ctx.catalog.get(k).map(catalog_input),
                })
                .collect(),
            days_until_expiry: Some((e.doc.expires - ctx.now).num_seconds().div_euclid(86_400)),
            reason: Some(e.doc.reason.clone()),
        });
    PolicyInput {
        change: ChangeInput {
            kind: change.kind,
            op: change.op,
            name: change.name.clone(),
            platform: change.platform,
            path: change.path.clone(),
            settings,
            targets: TargetsInput {
                groups_added: change.groups_added.clone(),
                groups_removed: change.groups_removed.clone(),
            },
            blast_radius,
            owners,
            exception,
            governance_file: (change.kind == DocKind::Governance).then(|| change.path.clone()),
            fields: change.fields.clone(),
            effective: effective
                .iter()
                .map(|e| EffectiveInput {
                    platform: e.platform,
                    group: e.group.clone(),
                    key: e.key.clone(),
                    old: e.old.clone(),
                    new: e.new.clone(),
                    direction: e.direction,
                    baseline: e.baseline.clone(),
                    overridden: e.overridden.clone(),
                    overridden_applies: e.overridden_applies,
                    conflict_before: e.conflict_before,
                    conflict_after: e.conflict_after,
                    catalog: ctx.catalog.get(&e.key).map(catalog_input),
                })
                .collect(),
        },
        author: ctx.author.to_string(),
        fleet: ctx.fleet.map(|f| FleetInput { devices: f.devices }),
    }
}

/// The catalogue facts the policy sees for one setting.
fn catalog_input(e: &crate::catalog::Entry) -> CatalogInput {
    CatalogInput {
        category: e.category.clone(),
        default_tier: e.default_tier,
        side_effects: e.side_effects.clone(),
        rollback_effective: e.rollback_effective,
    }
}

/// Judges every change with `engine` (built from the base revision's policy,
/// `tollgate_policy::policy_engine`). `changes` are `diff_snapshots(ctx.base, ctx.head)`;
/// both snapshots must be whole revisions, since what devices get is judged
/// too: every effective change ([`effective_changes`]) counts for each change
/// that causes it. A policy that fails or answers malformed output makes the
/// change T3 with a violation: never promote on missing facts.
pub fn plan(
    base: CommitSha,
    head: CommitSha,
    changes: Vec<DocChange>,
    engine: &mut dyn RiskPolicy,
    ctx: &PlanContext,
) -> Plan {
    let effective = effective_changes(ctx.base, ctx.head, ctx.catalog);
    let mut planned = Vec::with_capacity(changes.len());
    for change in changes {
        let caused: Vec<EffectiveChange> = effective
            .iter()
            .filter(|e| change.kind == DocKind::Baseline && e.causes.contains(&change.name))
            .cloned()
            .collect();
        let input = policy_input(&change, &caused, ctx);
        let decision = engine.evaluate(&input).unwrap_or_else(|e| RiskDecision::refused(&e));
        planned.push(PlannedChange {
            kind: change.kind,
            op: change.op,
            name: change.name,
            path: change.path,
            old_path: change.old_path,
            platform: change.platform,
            tier: decision.tier,
            reasons: decision.reasons,
            requirements: decision.requirements,
            rollback_effective: decision.rollback_effective,
            digest: change.head_digest,
            base_digest: change.base_digest,
            settings: change.settings,
            fields: change.fields,
            groups_added: change.groups_added,
            groups_removed: change.groups_removed,
            violations: decision.violations,
            effective: caused,
        });
    }
    let tier = planned.iter().map(|c| c.tier).max().unwrap_or(0);
    Plan {
        base,
        head,
        tier,
        changes: planned,
        conflicts: conflicts(ctx.head),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::diff_snapshots;
    use crate::risk::RiskError;
    use crate::tree::{FileContent, RepoPath, SourceFile};
    use serde_json::json;

    fn snap(text: &str) -> Snapshot {
        let f = SourceFile {
            path: RepoPath::new("baselines/ios/corp-ios.yaml").unwrap(),
            content: FileContent::Blob(text.as_bytes().to_vec()),
        };
        let (s, errors) = Snapshot::build(&[f], Catalog::builtin());
        assert!(errors.is_empty(), "{errors:?}");
        s
    }

    const IOS: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata: {name: corp-ios, owners: [mdm-ios]}\nspec:\n  platform: ios\n  targets: {groups: [phones]}\n  settings: {passcode.min_length: 8}\n";

    #[test]
    fn policy_input_keeps_the_design_field_names() {
        let (base, head) = (snap(IOS), snap(&IOS.replace("min_length: 8", "min_length: 4")));
        let changes = diff_snapshots(&base, &head, Catalog::builtin());
        let fleet = Fleet {
            devices: 35_000,
            groups: [("phones".to_string(), 4_200)].into(),
        };
        let ctx = PlanContext {
            catalog: Catalog::builtin(),
            base: &base,
            head: &head,
            author: "alice",
            fleet: Some(&fleet),
            now: Utc::now(),
        };
        let input = serde_json::to_value(policy_input(&changes[0], &[], &ctx)).unwrap();
        assert_eq!(input["author"], "alice");
        assert_eq!(input["fleet"], json!({"devices": 35_000}));
        let c = &input["change"];
        assert_eq!(c["kind"], "baseline");
        assert_eq!(c["op"], "modified");
        assert_eq!(c["name"], "corp-ios");
        assert_eq!(c["platform"], "ios");
        assert_eq!(c["path"], "baselines/ios/corp-ios.yaml");
        assert_eq!(c["owners"], json!(["mdm-ios"]));
        assert_eq!(c["targets"], json!({"groups_added": [], "groups_removed": []}));
        assert_eq!(c["blast_radius"]["devices"], 4_200);
        assert!((c["blast_radius"]["fleet_fraction"].as_f64().unwrap() - 0.12).abs() < 1e-9);
        let s = &c["settings"][0];
        assert_eq!(s["key"], "passcode.min_length");
        assert_eq!(s["op"], "changed");
        assert_eq!((s["old"].clone(), s["new"].clone()), (json!(8), json!(4)));
        assert_eq!(s["direction"], "loosen");
        assert_eq!(
            s["catalog"],
            json!({"category": "passcode", "default_tier": 2, "side_effects": ["user_prompt"], "rollback_effective": true})
        );
    }

    #[test]
    fn a_failing_policy_refuses_the_change_as_t3() {
        let (base, head) = (snap(IOS), snap(&IOS.replace("min_length: 8", "min_length: 9")));
        let changes = diff_snapshots(&base, &head, Catalog::builtin());
        let ctx = PlanContext {
            catalog: Catalog::builtin(),
            base: &base,
            head: &head,
            author: "a",
            fleet: None,
            now: Utc::now(),
        };
        // A policy whose answer breaks the output contract (tier 9).
        struct Broken;
        impl RiskPolicy for Broken {
            fn evaluate(&mut self, _: &PolicyInput) -> Result<RiskDecision, RiskError> {
                crate::risk::validate_decision(json!({"tier": 9}))
            }
        }
        let mut engine = Broken;
        let p = plan(
            CommitSha::new("a".repeat(40)),
            CommitSha::new("b".repeat(40)),
            changes,
            &mut engine,
            &ctx,
        );
        assert_eq!(p.tier, 3);
        assert!(p.has_violations());
        assert!(
            p.changes[0].violations[0].contains("risk policy failed"),
            "{:?}",
            p.changes[0].violations
        );
    }
}
