//! A change is judged by what devices get, not only by what its own file
//! says: an effective setting of a target group that the change loosens
//! (through priorities, removals, narrowed targets or new conflicts) counts
//! as a loosening of that setting.

use std::collections::BTreeSet;
use std::process::Command;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use tempfile::TempDir;

use tollgate::catalog::{Catalog, Direction};
use tollgate::cli::quickstart::{write_sample_repo, SampleCommit};
use tollgate::diff::diff_snapshots;
use tollgate::explain::explain;
use tollgate::ids::{CommitSha, Platform};
use tollgate::plan::{plan, PlanContext};
use tollgate::risk::{
    ChangeInput, ChangeKind, ChangeOp, PolicyEngine, PolicyInput, SettingDirection, SettingInput, SettingOp,
    TargetsInput,
};
use tollgate::snapshot::Snapshot;
use tollgate::tree::{FileContent, RepoPath, SourceFile};

const CONFIG: &str = "apiVersion: tollgate.dev/v1alpha1
kind: Config
metadata: {name: acme}
rings:
  - {name: canary, selector: {groups: [mdm-canary]}, soak: 2h, gate: {min_applied: 0.95, max_noncompliant_increase: 0.01}}
  - {name: broad, selector: {all: true}}
approvers:
  mdm-security: {users: [sec1]}
  mdm-ios: {users: [ios1]}
";

/// An iOS baseline owned by mdm-ios.
fn baseline(name: &str, priority: i64, groups: &[&str], settings: &[(&str, &str)]) -> String {
    let settings: String = settings.iter().map(|(k, v)| format!("    {k}: {v}\n")).collect();
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata:\n  name: {name}\n  owners: [mdm-ios]\nspec:\n  platform: ios\n  priority: {priority}\n  targets: {{groups: [{}]}}\n  settings:\n{settings}",
        groups.join(", ")
    )
}

fn tollgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A repo with `base` files as HEAD~1 and `change` on top as HEAD.
fn repo(base: &[(&str, Option<&str>)], change: &[(&str, Option<&str>)]) -> TempDir {
    let dir = TempDir::new().unwrap();
    let history = [
        SampleCommit {
            author: "priya",
            message: "base",
            files: base,
        },
        SampleCommit {
            author: "mallory",
            message: "change",
            files: change,
        },
    ];
    write_sample_repo(dir.path(), &history).unwrap();
    dir
}

/// `plan --base HEAD~1 -o json`, which must succeed.
fn plan_json(dir: &TempDir) -> Value {
    let (code, out, err) = tollgate(&[
        "plan",
        "--repo",
        dir.path().to_str().unwrap(),
        "--base",
        "HEAD~1",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap()
}

fn change<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no change of {name}: {plan}"))
}

fn reasons(c: &Value) -> Vec<String> {
    c["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

fn has_reason(c: &Value, text: &str) -> bool {
    reasons(c).iter().any(|r| r.contains(text))
}

#[test]
fn a_higher_priority_baseline_that_sets_a_weaker_value_is_a_loosening() {
    let corp = baseline("corp-ios", 100, &["vip", "staff"], &[("passcode.min_length", "6")]);
    let vip = baseline("corp-ios-vip", 900, &["vip"], &[("passcode.min_length", "0")]);
    let dir = repo(
        &[
            ("tollgate.yaml", Some(CONFIG)),
            ("baselines/ios/corp-ios.yaml", Some(&corp)),
        ],
        &[("baselines/ios/corp-ios-vip.yaml", Some(&vip))],
    );
    let plan = plan_json(&dir);
    let c = change(&plan, "corp-ios-vip");
    assert_eq!(c["op"], "added");
    // The file alone reads as adding a passcode rule...
    assert_eq!(c["settings"][0]["direction"], "tighten");
    // ...but devices in vip go from 6 to 0.
    assert_eq!(c["tier"], 3, "{:?}", reasons(c));
    assert_eq!(
        c["effective"],
        json!([{"platform": "ios", "group": "vip", "key": "passcode.min_length", "old": 6, "new": 0,
                "direction": "loosen", "baseline": "corp-ios-vip", "overridden": "corp-ios",
                "overridden_applies": true, "conflict_before": false, "conflict_after": false}])
    );
    assert!(
        has_reason(
            c,
            "devices in group vip now get passcode.min_length 0 from corp-ios-vip, overriding 6 from corp-ios"
        ),
        "{:?}",
        reasons(c)
    );
    assert_eq!(c["requirements"]["approvals"], 2);
    // What explain says devices get is what the plan judged.
    let (_, out, _) = tollgate(&[
        "explain",
        "--repo",
        dir.path().to_str().unwrap(),
        "--rev",
        "HEAD",
        "--platform",
        "ios",
        "--group",
        "vip",
        "-o",
        "json",
    ]);
    let ex: Value = serde_json::from_str(&out).unwrap();
    let min = ex["explanation"]["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "passcode.min_length")
        .unwrap();
    assert_eq!(
        (min["value"].clone(), min["baseline"].clone()),
        (json!(0), json!("corp-ios-vip"))
    );
}

#[test]
fn removing_a_baseline_names_where_devices_fall_back_to() {
    let strict = baseline(
        "corp-ios",
        500,
        &["staff", "contractors"],
        &[("passcode.min_length", "12")],
    );
    let floor = baseline("corp-ios-floor", 10, &["staff"], &[("passcode.min_length", "4")]);
    let dir = repo(
        &[
            ("tollgate.yaml", Some(CONFIG)),
            ("baselines/ios/corp-ios.yaml", Some(&strict)),
            ("baselines/ios/floor.yaml", Some(&floor)),
        ],
        &[("baselines/ios/corp-ios.yaml", None)],
    );
    let plan = plan_json(&dir);
    let c = change(&plan, "corp-ios");
    assert_eq!(c["op"], "removed");
    assert_eq!(c["tier"], 3);
    let effective = c["effective"].as_array().unwrap();
    assert_eq!(effective.len(), 2, "{effective:?}");
    let contractors = effective.iter().find(|e| e["group"] == "contractors").unwrap();
    assert_eq!(contractors["new"], Value::Null);
    assert_eq!(contractors["baseline"], Value::Null);
    assert_eq!(contractors["direction"], "loosen");
    let staff = effective.iter().find(|e| e["group"] == "staff").unwrap();
    assert_eq!((staff["old"].clone(), staff["new"].clone()), (json!(12), json!(4)));
    assert_eq!(staff["baseline"], "corp-ios-floor");
    assert_eq!(staff["overridden_applies"], false);
    assert!(
        has_reason(
            c,
            "ios devices in group staff now get passcode.min_length 4 from corp-ios-floor instead of 12 from corp-ios"
        ),
        "{:?}",
        reasons(c)
    );
    assert!(
        has_reason(
            c,
            "ios devices in group contractors no longer get passcode.min_length from any baseline (was 12 from corp-ios)"
        ),
        "{:?}",
        reasons(c)
    );
}

#[test]
fn narrowing_targets_that_leaves_a_group_to_a_weaker_baseline_is_judged_by_the_setting() {
    let strict = baseline(
        "corp-ios-strict",
        500,
        &["vip", "staff"],
        &[("passcode.min_length", "12")],
    );
    let narrowed = baseline("corp-ios-strict", 500, &["vip"], &[("passcode.min_length", "12")]);
    let corp = baseline("corp-ios", 100, &["staff"], &[("passcode.min_length", "6")]);
    let dir = repo(
        &[
            ("tollgate.yaml", Some(CONFIG)),
            ("baselines/ios/strict.yaml", Some(&strict)),
            ("baselines/ios/corp-ios.yaml", Some(&corp)),
        ],
        &[("baselines/ios/strict.yaml", Some(&narrowed))],
    );
    let plan = plan_json(&dir);
    let c = change(&plan, "corp-ios-strict");
    assert_eq!(c["groups_removed"], json!(["staff"]));
    // Narrowing alone is T2; devices losing passcode length is a loosening
    // of a tier-2 setting, so T3.
    assert_eq!(c["tier"], 3, "{:?}", reasons(c));
    assert!(
        has_reason(
            c,
            "ios devices in group staff now get passcode.min_length 6 from corp-ios instead of 12 from corp-ios-strict: default tier 2, +1 for an effective loosening"
        ),
        "{:?}",
        reasons(c)
    );
}

#[test]
fn lowering_a_priority_below_a_weaker_baseline_is_a_loosening() {
    let vip = baseline("corp-ios-vip", 900, &["vip"], &[("passcode.min_length", "12")]);
    let lowered = baseline("corp-ios-vip", 50, &["vip"], &[("passcode.min_length", "12")]);
    let corp = baseline("corp-ios", 100, &["vip"], &[("passcode.min_length", "6")]);
    let dir = repo(
        &[
            ("tollgate.yaml", Some(CONFIG)),
            ("baselines/ios/vip.yaml", Some(&vip)),
            ("baselines/ios/corp-ios.yaml", Some(&corp)),
        ],
        &[("baselines/ios/vip.yaml", Some(&lowered))],
    );
    let plan = plan_json(&dir);
    let c = change(&plan, "corp-ios-vip");
    assert_eq!(c["tier"], 3, "{:?}", reasons(c));
    assert_eq!(c["effective"][0]["baseline"], "corp-ios");
    assert_eq!(c["effective"][0]["overridden_applies"], true);
}

#[test]
fn an_effective_tightening_stays_a_tightening() {
    let corp = baseline("corp-ios", 100, &["vip", "staff"], &[("passcode.min_length", "6")]);
    let vip = baseline("corp-ios-vip", 900, &["vip"], &[("passcode.min_length", "12")]);
    let dir = repo(
        &[
            ("tollgate.yaml", Some(CONFIG)),
            ("baselines/ios/corp-ios.yaml", Some(&corp)),
        ],
        &[("baselines/ios/corp-ios-vip.yaml", Some(&vip))],
    );
    let plan = plan_json(&dir);
    let c = change(&plan, "corp-ios-vip");
    assert_eq!(c["tier"], 2, "{:?}", reasons(c));
    assert_eq!(c["effective"][0]["direction"], "tighten");
    assert_eq!(
        (c["effective"][0]["old"].clone(), c["effective"][0]["new"].clone()),
        (json!(6), json!(12))
    );
    assert!(!has_reason(c, "effective"), "{:?}", reasons(c));
}

#[test]
fn a_change_that_creates_a_conflict_is_judged_as_an_unknown_direction() {
    let corp = baseline("corp-ios", 100, &["staff"], &[("os.update_deadline_days", "7")]);
    let other = baseline("staff-ios", 100, &["staff"], &[("os.update_deadline_days", "3")]);
    let dir = repo(
        &[
            ("tollgate.yaml", Some(CONFIG)),
            ("baselines/ios/corp-ios.yaml", Some(&corp)),
        ],
        &[("baselines/ios/staff-ios.yaml", Some(&other))],
    );
    let plan = plan_json(&dir);
    let c = change(&plan, "staff-ios");
    // Adding the deadline alone is T1; no one can say what staff devices get now.
    assert_eq!(c["tier"], 2, "{:?}", reasons(c));
    assert_eq!(c["effective"][0]["conflict_after"], true);
    assert_eq!(c["effective"][0]["direction"], "unknown");
    assert_eq!(plan["conflicts"].as_array().unwrap().len(), 1);
}

#[test]
fn plans_show_effective_changes_to_people() {
    let corp = baseline("corp-ios", 100, &["vip", "staff"], &[("passcode.min_length", "6")]);
    let vip = baseline("corp-ios-vip", 900, &["vip"], &[("passcode.min_length", "0")]);
    let dir = repo(
        &[
            ("tollgate.yaml", Some(CONFIG)),
            ("baselines/ios/corp-ios.yaml", Some(&corp)),
        ],
        &[("baselines/ios/corp-ios-vip.yaml", Some(&vip))],
    );
    let r = dir.path().to_str().unwrap();
    let (_, text, _) = tollgate(&["plan", "--repo", r, "--base", "HEAD~1"]);
    let (_, markdown, _) = tollgate(&["plan", "--repo", r, "--base", "HEAD~1", "-o", "markdown"]);
    // Commit times are fixed, so the revision ids in the headers are too.
    insta::assert_snapshot!("effective_override_text", text);
    insta::assert_snapshot!("effective_override_markdown", markdown);
}

// ---------------------------------------------------------------------------
// Property: an effective loosening is never planned below the tier a direct
// loosening of the same key would get.

/// Keys generated repos set, with values the catalogue accepts.
const KEYS: &[(&str, &[&str])] = &[
    ("passcode.min_length", &["0", "4", "8", "12"]),
    ("passcode.required", &["true", "false"]),
    ("os.update_deadline_days", &["3", "14", "30"]),
    ("passcode.allow_simple", &["true", "false"]),
];
const GROUPS: &[&str] = &["g1", "g2", "g3"];
const NAMES: &[&str] = &["a", "b", "c", "d"];

#[derive(Debug, Clone)]
struct Gen {
    priority: i64,
    groups: Vec<&'static str>,
    settings: Vec<(&'static str, &'static str)>,
}

fn gen_baseline() -> impl Strategy<Value = Gen> {
    (
        proptest::sample::select(vec![10i64, 100, 900]),
        proptest::sample::subsequence(GROUPS.to_vec(), 1..=2),
        proptest::collection::vec((0..KEYS.len(), 0usize..4), 1..=3),
    )
        .prop_map(|(priority, groups, picks)| {
            let mut seen = BTreeSet::new();
            let settings = picks
                .into_iter()
                .filter(|(k, _)| seen.insert(*k))
                .map(|(k, v)| (KEYS[k].0, KEYS[k].1[v % KEYS[k].1.len()]))
                .collect();
            Gen {
                priority,
                groups,
                settings,
            }
        })
}

/// Each name: absent, or a baseline, at base and at head. Head versions are
/// often the base one with one thing changed, as real changes are.
fn gen_revisions() -> impl Strategy<Value = Vec<(Option<Gen>, Option<Gen>)>> {
    proptest::collection::vec(
        (
            proptest::option::weighted(0.8, gen_baseline()),
            proptest::option::weighted(0.8, gen_baseline()),
            0u8..4,
        )
            .prop_map(|(base, head, keep)| match keep {
                // Unchanged, or changed, or the generated head.
                0 | 1 => (base.clone(), base),
                _ => (base, head),
            }),
        NAMES.len(),
    )
}

fn snapshot(side: &[(String, Gen)]) -> Snapshot {
    let files: Vec<SourceFile> = side
        .iter()
        .map(|(name, g)| SourceFile {
            path: RepoPath::new(&format!("baselines/ios/{name}.yaml")).unwrap(),
            content: FileContent::Blob(baseline(name, g.priority, &g.groups, &g.settings).into_bytes()),
        })
        .collect();
    Snapshot::validated(&files, Catalog::builtin()).unwrap_or_else(|e| panic!("{e:?}"))
}

/// The tier the policy gives a modified baseline that loosens `key` directly.
fn direct_loosening_tier(engine: &mut PolicyEngine, key: &str) -> u8 {
    let entry = Catalog::builtin().get(key).unwrap();
    let input = PolicyInput {
        change: ChangeInput {
            kind: ChangeKind::Baseline,
            op: ChangeOp::Modified,
            name: "x".into(),
            platform: Some(Platform::Ios),
            path: "baselines/ios/x.yaml".into(),
            settings: vec![SettingInput {
                key: key.into(),
                op: SettingOp::Changed,
                old: Value::Null,
                new: Value::Null,
                direction: SettingDirection::Loosen,
                catalog: Some(tollgate::risk::CatalogInput {
                    category: entry.category.clone(),
                    default_tier: entry.default_tier,
                    side_effects: entry.side_effects.clone(),
                    rollback_effective: entry.rollback_effective,
                }),
                members_added: vec![],
                members_removed: vec![],
            }],
            targets: TargetsInput::default(),
            blast_radius: None,
            owners: vec!["mdm-ios".into()],
            exception: None,
            governance_file: None,
            fields: vec![],
            effective: vec![],
        },
        author: "alice".into(),
        fleet: None,
    };
    engine.evaluate(&input).unwrap().tier
}

#[test]
fn an_effective_loosening_is_never_planned_below_a_direct_loosening() {
    let catalog = Catalog::builtin();
    let engine = std::cell::RefCell::new(PolicyEngine::builtin().unwrap());
    let mut runner = TestRunner::new(Config {
        cases: 128,
        ..Config::default()
    });
    let loosenings_seen = std::cell::Cell::new(0usize);
    runner
        .run(&gen_revisions(), |sides| {
            let named = |head_side: bool| -> Vec<(String, Gen)> {
                NAMES
                    .iter()
                    .zip(&sides)
                    .filter_map(|(n, (b, h))| if head_side { h } else { b }.clone().map(|g| (n.to_string(), g)))
                    .collect()
            };
            let (base, head) = (snapshot(&named(false)), snapshot(&named(true)));
            let changes = diff_snapshots(&base, &head, catalog);
            let ctx = PlanContext {
                catalog,
                base: &base,
                head: &head,
                author: "alice",
                fleet: None,
                now: chrono::Utc::now(),
            };
            let p = plan(
                CommitSha::new("a".repeat(40)),
                CommitSha::new("b".repeat(40)),
                changes,
                &mut *engine.borrow_mut(),
                &ctx,
            );
            // The oracle is explain, not the plan's own effective diff: for
            // every group and key whose effective value loosens (or falls
            // into a conflict), the change to the baseline devices left or
            // now follow must be at least as strict as a direct loosening.
            let now = chrono::Utc::now();
            for group in GROUPS {
                let (before, after) = (
                    explain(&base, Platform::Ios, group, now),
                    explain(&head, Platform::Ios, group, now),
                );
                for (key, _) in KEYS {
                    let find =
                        |ex: &tollgate::explain::Explanation| ex.settings.iter().find(|s| s.key == *key).cloned();
                    let (old, new) = (find(&before), find(&after));
                    let in_conflict = |s: &Option<tollgate::explain::EffectiveSetting>| {
                        s.as_ref().is_some_and(|s| s.baseline.is_none())
                    };
                    let (conflict_then, conflict_now) = (in_conflict(&old), in_conflict(&new));
                    let loosened = if conflict_now || conflict_then {
                        conflict_now && !conflict_then
                    } else {
                        let e = catalog.get(key).unwrap();
                        e.direction(old.as_ref().map(|o| &o.value), new.as_ref().map(|n| &n.value)) == Direction::Loosen
                    };
                    if !loosened {
                        continue;
                    }
                    loosenings_seen.set(loosenings_seen.get() + 1);
                    let floor = direct_loosening_tier(&mut engine.borrow_mut(), key);
                    // Who devices followed and now follow; in a conflict,
                    // every baseline tied at the top.
                    let mut responsible: BTreeSet<String> = BTreeSet::new();
                    for s in [&old, &new].into_iter().flatten() {
                        match &s.baseline {
                            Some(b) => {
                                responsible.insert(b.clone());
                            }
                            None => responsible.extend(
                                s.contenders
                                    .iter()
                                    .filter(|c| c.priority == s.contenders[0].priority)
                                    .map(|c| c.baseline.clone()),
                            ),
                        }
                    }
                    let tiers: Vec<(String, u8)> = p
                        .changes
                        .iter()
                        .filter(|c| responsible.contains(&c.name))
                        .map(|c| (c.name.clone(), c.tier))
                        .collect();
                    prop_assert!(
                        tiers.iter().any(|(_, t)| *t >= floor),
                        "group {group} key {key}: {:?} -> {:?} loosens (a direct loosening is T{floor}), \
                         but the changes of {responsible:?} are planned at {tiers:?}:\n{:#?}",
                        old.as_ref().map(|s| (&s.value, &s.baseline)),
                        new.as_ref().map(|s| (&s.value, &s.baseline)),
                        p.changes
                    );
                }
            }
            Ok(())
        })
        .unwrap();
    let seen = loosenings_seen.get();
    assert!(seen > 50, "only {seen} effective loosenings generated");
}
