//! What a change needs: its semantic diff judged by the risk policy of the
//! *base* revision (DESIGN 3, 5).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::catalog::Catalog;
use crate::diff::{ChangeOp, DocChange, DocKind, FieldChange, SettingChange};
use crate::ids::{CommitSha, Digest, Platform};
use crate::risk::{validate_decision, PolicyEngine, Requirements, RiskDecision};
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
}

/// Everything the policy needs besides the changes themselves.
pub struct PlanContext<'a> {
    pub catalog: &'a Catalog,
    /// The base revision: its config and policy judge the change.
    pub base: &'a Snapshot,
    pub head: &'a Snapshot,
    pub author: &'a str,
    pub fleet: Option<&'a Fleet>,
    pub now: DateTime<Utc>,
}

/// Builds the policy input of one change (DESIGN 3; extra fields are added,
/// none renamed).
pub fn policy_input(change: &DocChange, ctx: &PlanContext) -> Value {
    let settings: Vec<Value> = change
        .settings
        .iter()
        .map(|s| {
            let catalog = ctx.catalog.get(&s.key).map(catalog_input);
            json!({"key": s.key, "op": s.op, "old": s.old, "new": s.new, "direction": s.direction,
                   "catalog": catalog, "members_added": s.members_added, "members_removed": s.members_removed})
        })
        .collect();
    let baseline = ctx
        .head
        .baselines
        .get(&change.name)
        .or_else(|| ctx.base.baselines.get(&change.name));
    let owners: Vec<String> = match change.kind {
        DocKind::Baseline => baseline.map(|b| b.doc.owners.clone()).unwrap_or_default(),
        // An exception is owned by the owners of the baseline it exempts from.
        DocKind::Exception => {
            let exc = ctx
                .head
                .exceptions
                .get(&change.name)
                .or_else(|| ctx.base.exceptions.get(&change.name));
            exc.and_then(|e| {
                ctx.head
                    .baselines
                    .get(&e.doc.baseline)
                    .or_else(|| ctx.base.baselines.get(&e.doc.baseline))
            })
            .map(|b| b.doc.owners.clone())
            .unwrap_or_default()
        }
        DocKind::Governance => Vec::new(),
    };
    let blast = match (ctx.fleet, change.kind) {
        (Some(f), DocKind::Governance) => json!({"devices": f.devices, "fleet_fraction": 1.0}),
        (Some(f), _) => {
            let groups: Vec<String> = match change.kind {
                DocKind::Baseline => {
                    let mut g: Vec<String> = ctx
                        .base
                        .baselines
                        .get(&change.name)
                        .map(|b| b.doc.target_groups.clone())
                        .unwrap_or_default();
                    g.extend(
                        ctx.head
                            .baselines
                            .get(&change.name)
                            .map(|b| b.doc.target_groups.clone())
                            .unwrap_or_default(),
                    );
                    g.sort();
                    g.dedup();
                    g
                }
                _ => exception_groups(change, ctx),
            };
            let devices = f.devices_in(&groups);
            let fraction = if f.devices == 0 {
                0.0
            } else {
                devices as f64 / f.devices as f64
            };
            json!({"devices": devices, "fleet_fraction": fraction})
        }
        (None, _) => Value::Null,
    };
    let mut input = json!({
        "change": {
            "kind": change.kind, "op": change.op, "name": change.name,
            "platform": change.platform, "path": change.path,
            "settings": settings,
            "targets": {"groups_added": change.groups_added, "groups_removed": change.groups_removed},
            "blast_radius": blast,
            "owners": owners,
            "fields": change.fields,
        },
        "author": ctx.author,
        "fleet": ctx.fleet.map(|f| json!({"devices": f.devices})),
    });
    if change.kind == DocKind::Exception {
        if let Some(e) = ctx.head.exceptions.get(&change.name) {
            let days = (e.doc.expires - ctx.now).num_seconds().div_euclid(86_400);
            let settings: Vec<Value> = e
                .doc
                .settings
                .iter()
                .map(|k| json!({"key": k, "catalog": ctx.catalog.get(k).map(catalog_input)}))
                .collect();
            input["change"]["exception"] = json!({
                "baseline": e.doc.baseline, "settings": settings,
                "days_until_expiry": days, "reason": e.doc.reason,
            });
        }
    }
    if change.kind == DocKind::Governance {
        input["change"]["governance_file"] = json!(change.path);
    }
    input
}

/// The catalogue facts the policy sees for one setting.
fn catalog_input(e: &crate::catalog::Entry) -> Value {
    json!({"category": e.category, "default_tier": e.default_tier,
           "side_effects": e.side_effects, "rollback_effective": e.rollback_effective})
}

fn exception_groups(change: &DocChange, ctx: &PlanContext) -> Vec<String> {
    let exc = ctx
        .head
        .exceptions
        .get(&change.name)
        .or_else(|| ctx.base.exceptions.get(&change.name));
    match exc.map(|e| &e.doc.scope) {
        Some(crate::format::Scope::Groups(g)) => g.clone(),
        _ => Vec::new(),
    }
}

/// Judges every change with `engine` (built from the base revision's policy).
/// A policy that fails or answers malformed output makes the change T3 with a
/// violation: never promote on missing facts.
pub fn plan(
    base: CommitSha,
    head: CommitSha,
    changes: Vec<DocChange>,
    engine: &mut PolicyEngine,
    ctx: &PlanContext,
) -> Plan {
    let mut planned = Vec::with_capacity(changes.len());
    for change in changes {
        let input = policy_input(&change, ctx);
        let decision = engine
            .evaluate_raw(&input)
            .and_then(validate_decision)
            .unwrap_or_else(|e| RiskDecision::refused(&e));
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
        });
    }
    let tier = planned.iter().map(|c| c.tier).max().unwrap_or(0);
    Plan {
        base,
        head,
        tier,
        changes: planned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::diff_snapshots;
    use crate::tree::{FileContent, RepoPath, SourceFile};

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
        let input = policy_input(&changes[0], &ctx);
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
        let broken = "package tollgate.risk\nimport rego.v1\ndecision := {\"tier\": 9}\n";
        let mut engine = PolicyEngine::from_sources(&[("policy/x.rego".into(), broken.into())]).unwrap();
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
