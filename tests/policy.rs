//! The risk policy: the case table in `policy_cases.yaml` under regorus, the
//! same cases (and generated inputs) under OPA for parity, invariants over
//! generated inputs, and the engine's handling of broken custom policies.
//!
//! OPA parity runs when `TOLLGATE_OPA` names an `opa` binary
//! (`TOLLGATE_OPA="$(scripts/opa.sh)" cargo test --test policy`); under `CI`
//! a missing `TOLLGATE_OPA` fails the test instead of skipping it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde::Deserialize;
use serde_json::{json, Value};
use tollgate::ids::Platform;
use tollgate::risk::{
    BlastRadius, CatalogInput, ChangeInput, ChangeKind, ChangeOp, EffectiveInput, ExceptionInput, ExemptedSettingInput,
    FleetInput, PolicyEngine, PolicyInput, RiskDecision, RiskError, SettingDirection, SettingInput, SettingOp,
    TargetsInput, BUILTIN_POLICY_PATH, DECISION_RULE,
};

// ---------------------------------------------------------------------------
// The case table.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    catalog: BTreeMap<String, Value>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    untyped: bool,
    input: Value,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    tier: u8,
    approvals: u32,
    approver_groups: Vec<String>,
    window: Option<String>,
    rollback_effective: bool,
    fresh_approval_per_ring: Option<bool>,
    violations: Option<Vec<String>>,
    #[serde(default)]
    reasons_include: Vec<String>,
    reasons: Option<Vec<String>>,
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Replaces `catalog: <key>` shorthands with the table's entry.
fn expand_catalog(value: &mut Value, catalog: &BTreeMap<String, Value>, case: &str) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(name)) = map.get("catalog") {
                let entry = catalog
                    .get(name)
                    .unwrap_or_else(|| panic!("case {case:?}: no catalog fixture named {name:?}"))
                    .clone();
                map.insert("catalog".into(), entry);
            }
            for v in map.values_mut() {
                expand_catalog(v, catalog, case);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| expand_catalog(v, catalog, case)),
        _ => {}
    }
}

fn load_cases() -> Vec<Case> {
    let path = manifest_dir().join("tests/policy_cases.yaml");
    let text = std::fs::read_to_string(&path).expect("read tests/policy_cases.yaml");
    let file: CaseFile = serde_norway::from_str(&text).expect("parse tests/policy_cases.yaml");
    let mut cases = file.cases;
    for case in &mut cases {
        expand_catalog(&mut case.input, &file.catalog, &case.name);
    }
    cases
}

/// Every difference between a decision and a case's expectations.
fn mismatches(case: &Case, d: &RiskDecision) -> Vec<String> {
    let e = &case.expect;
    let mut out = Vec::new();
    let mut check = |what: &str, ok: bool, got: String, want: String| {
        if !ok {
            out.push(format!("{what}: got {got}, want {want}"));
        }
    };
    check("tier", d.tier == e.tier, d.tier.to_string(), e.tier.to_string());
    let r = &d.requirements;
    check(
        "approvals",
        r.approvals == e.approvals,
        r.approvals.to_string(),
        e.approvals.to_string(),
    );
    check(
        "approver_groups",
        r.approver_groups == e.approver_groups,
        format!("{:?}", r.approver_groups),
        format!("{:?}", e.approver_groups),
    );
    check(
        "window",
        r.window == e.window,
        format!("{:?}", r.window),
        format!("{:?}", e.window),
    );
    check(
        "rollback_effective",
        d.rollback_effective == e.rollback_effective,
        d.rollback_effective.to_string(),
        e.rollback_effective.to_string(),
    );
    let fresh = e.fresh_approval_per_ring.unwrap_or(e.tier == 3);
    check(
        "fresh_approval_per_ring",
        r.fresh_approval_per_ring == fresh,
        r.fresh_approval_per_ring.to_string(),
        fresh.to_string(),
    );
    let soak = if e.tier == 3 { 2.0 } else { 1.0 };
    check(
        "soak_multiplier",
        r.soak_multiplier == soak,
        r.soak_multiplier.to_string(),
        soak.to_string(),
    );
    let violations = e.violations.clone().unwrap_or_default();
    check(
        "violations",
        d.violations == violations,
        format!("{:?}", d.violations),
        format!("{violations:?}"),
    );
    for want in &e.reasons_include {
        check(
            "reasons_include",
            d.reasons.iter().any(|r| r.contains(want.as_str())),
            format!("{:?}", d.reasons),
            format!("a reason containing {want:?}"),
        );
    }
    if let Some(reasons) = &e.reasons {
        check(
            "reasons",
            &d.reasons == reasons,
            format!("{:?}", d.reasons),
            format!("{reasons:?}"),
        );
    }
    out
}

#[test]
fn case_table_is_big_enough_and_names_are_unique() {
    let cases = load_cases();
    assert!(cases.len() >= 30, "only {} cases", cases.len());
    let mut names = std::collections::BTreeSet::new();
    for case in &cases {
        assert!(names.insert(case.name.as_str()), "duplicate case name {:?}", case.name);
    }
}

#[test]
fn default_policy_cases() {
    let mut engine = PolicyEngine::builtin().expect("builtin policy compiles");
    let cases = load_cases();
    let mut failures = Vec::new();
    for case in &cases {
        let decision = match engine.evaluate_json(&case.input) {
            Ok(json) => serde_json::from_value::<RiskDecision>(json).expect("validated decision round-trips"),
            Err(e) => {
                failures.push(format!("{}: error {e:?}", case.name));
                continue;
            }
        };
        for m in mismatches(case, &decision) {
            failures.push(format!("{}: {m}", case.name));
        }
        // The typed API must see exactly what the JSON API sees.
        match (serde_json::from_value::<PolicyInput>(case.input.clone()), case.untyped) {
            (Ok(typed), false) => {
                let d = engine
                    .evaluate(&typed)
                    .unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
                assert_eq!(d, decision, "{}: typed and JSON evaluation differ", case.name);
            }
            (Err(e), false) => failures.push(format!("{}: input is not a PolicyInput ({e}); typo?", case.name)),
            (Ok(_), true) => failures.push(format!("{}: marked untyped but parses as PolicyInput", case.name)),
            (Err(_), true) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn evaluations_do_not_leak_into_each_other() {
    let mut engine = PolicyEngine::builtin().unwrap();
    let cases = load_cases();
    let forward: Vec<Value> = cases.iter().map(|c| engine.evaluate_raw(&c.input).unwrap()).collect();
    let mut fresh_each_time = Vec::new();
    for case in cases.iter().rev() {
        fresh_each_time.push(PolicyEngine::builtin().unwrap().evaluate_raw(&case.input).unwrap());
    }
    fresh_each_time.reverse();
    assert_eq!(forward, fresh_each_time);
}

// ---------------------------------------------------------------------------
// Generated inputs.

const KEYS: &[&str] = &[
    "passcode.min_length",
    "passcode.max_failed_attempts",
    "os.min_version",
    "apps.blocked",
    "certs.trusted_roots",
    "cosmetic.wallpaper",
    "vendor.unknown",
];
const CATEGORIES: &[&str] = &[
    "passcode",
    "encryption",
    "os",
    "apps",
    "network",
    "certs",
    "container",
    "enforcement",
    "cosmetic",
    "usb",
];
const GROUPS: &[&str] = &["mdm-ios", "mdm-security", "mdm-macos", "pilot", "all-corporate-iphones"];

fn pick(items: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(items).prop_map(str::to_owned)
}

fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-5i64..100).prop_map(Value::from),
        prop_oneof![Just(2.5), Just(0.1), Just(-0.75)].prop_map(Value::from),
        "[a-zA-Z0-9 .é🙂-]{0,80}".prop_map(Value::from),
        proptest::collection::vec("[a-z.]{1,12}", 0..4).prop_map(Value::from),
        Just(json!({"name": "acme-root", "sha256": "ab"})),
        Just(json!({"after": "3d"})),
    ]
}

fn catalog() -> impl Strategy<Value = Option<CatalogInput>> {
    proptest::option::weighted(
        0.85,
        (
            pick(CATEGORIES),
            0u8..=3,
            proptest::sample::subsequence(vec!["wipe", "retire", "notify"], 0..=2),
            any::<bool>(),
        )
            .prop_map(|(category, default_tier, effects, rollback_effective)| CatalogInput {
                category,
                default_tier,
                side_effects: effects.into_iter().map(str::to_owned).collect(),
                rollback_effective,
            }),
    )
}

fn setting() -> impl Strategy<Value = SettingInput> {
    let op = prop_oneof![
        Just(SettingOp::Added),
        Just(SettingOp::Removed),
        Just(SettingOp::Changed)
    ];
    let direction = prop_oneof![
        Just(SettingDirection::Tighten),
        Just(SettingDirection::Loosen),
        Just(SettingDirection::Neutral),
        Just(SettingDirection::Unknown),
    ];
    (pick(KEYS), op, json_value(), json_value(), direction, catalog()).prop_map(
        |(key, op, old, new, direction, catalog)| SettingInput {
            key,
            op,
            old,
            new,
            direction,
            catalog,
            members_added: Vec::new(),
            members_removed: Vec::new(),
        },
    )
}

fn direction() -> impl Strategy<Value = SettingDirection> {
    prop_oneof![
        Just(SettingDirection::Tighten),
        Just(SettingDirection::Loosen),
        Just(SettingDirection::Neutral),
        Just(SettingDirection::Unknown),
    ]
}

const BASELINES: &[&str] = &["corp-ios", "corp-ios-vip", "corp-ios-floor"];

fn effective() -> impl Strategy<Value = EffectiveInput> {
    (
        (pick(GROUPS), pick(KEYS), json_value(), json_value(), direction()),
        (
            proptest::option::of(pick(BASELINES)),
            proptest::option::of(pick(BASELINES)),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            catalog(),
        ),
    )
        .prop_map(
            |((group, key, old, new, direction), (baseline, overridden, applies, before, after, catalog))| {
                EffectiveInput {
                    platform: Platform::Ios,
                    group,
                    key,
                    old,
                    new,
                    direction,
                    baseline,
                    overridden,
                    overridden_applies: applies,
                    conflict_before: before,
                    conflict_after: after,
                    catalog,
                }
            },
        )
}

fn groups() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(pick(GROUPS), 0..3)
}

fn policy_input() -> impl Strategy<Value = PolicyInput> {
    let kind = prop_oneof![
        6 => Just(ChangeKind::Baseline),
        3 => Just(ChangeKind::Exception),
        1 => Just(ChangeKind::Governance),
    ];
    let op = prop_oneof![
        Just(ChangeOp::Added),
        Just(ChangeOp::Modified),
        Just(ChangeOp::Removed),
        Just(ChangeOp::Renamed)
    ];
    let blast = prop_oneof![
        Just(None),
        (0u64..50_000, 0u64..50_000).prop_map(|(d, f)| Some(BlastRadius::from_counts(d, f))),
        (0u64..50_000).prop_map(|devices| Some(BlastRadius {
            devices,
            fleet_fraction: None
        })),
    ];
    let exception = (
        pick(KEYS),
        proptest::collection::vec((pick(KEYS), catalog()), 0..3),
        proptest::option::of(-10i64..200),
        proptest::option::of("[ a-z]{0,12}"),
    )
        .prop_map(|(baseline, settings, days_until_expiry, reason)| ExceptionInput {
            baseline,
            settings: settings
                .into_iter()
                .map(|(key, catalog)| ExemptedSettingInput { key, catalog })
                .collect(),
            days_until_expiry,
            reason,
        });
    (
        kind,
        op,
        proptest::collection::vec(setting(), 0..6),
        groups(),
        groups(),
        blast,
        groups(),
        exception,
        proptest::option::of((0u64..50_000).prop_map(|devices| FleetInput { devices })),
        proptest::collection::vec(effective(), 0..3),
    )
        .prop_map(
            |(kind, op, settings, added, removed, blast_radius, owners, exception, fleet, effective)| PolicyInput {
                change: ChangeInput {
                    kind,
                    op,
                    name: "generated".into(),
                    platform: None,
                    path: "baselines/ios/generated.yaml".into(),
                    settings,
                    targets: TargetsInput {
                        groups_added: added,
                        groups_removed: removed,
                    },
                    blast_radius,
                    owners,
                    exception: (kind == ChangeKind::Exception).then_some(exception),
                    governance_file: (kind == ChangeKind::Governance).then(|| "tollgate.yaml".into()),
                    fields: Vec::new(),
                    effective: if kind == ChangeKind::Baseline {
                        effective
                    } else {
                        Vec::new()
                    },
                },
                author: "alice".into(),
                fleet,
            },
        )
}

/// Tier of loosening a setting with catalogue entry `c` (DESIGN 3 rules):
/// its default tier +1, T3 for critical ones, T0 for cosmetic ones.
fn loosening_tier(c: Option<&CatalogInput>) -> u8 {
    match c {
        None => 3,
        Some(c) if c.side_effects.iter().any(|e| e == "wipe" || e == "retire") => 3,
        Some(c) if ["certs", "container", "enforcement"].contains(&c.category.as_str()) => 3,
        Some(c) if c.category == "cosmetic" => 0,
        Some(c) => (c.default_tier + 1).min(3),
    }
}

/// Lower bound on the tier from the settings alone (DESIGN 3 rules), and
/// from the effective settings the change loosens (as loosening them directly).
fn tier_floor(input: &PolicyInput) -> u8 {
    if input.change.kind == ChangeKind::Governance {
        return 3;
    }
    if input.change.kind == ChangeKind::Exception && input.change.op != ChangeOp::Removed {
        return 2;
    }
    let settings = input.change.settings.iter().map(|s| match &s.catalog {
        None => 3,
        Some(c) if c.side_effects.iter().any(|e| e == "wipe" || e == "retire") => 3,
        Some(c) if ["certs", "container", "enforcement"].contains(&c.category.as_str()) => 3,
        Some(c) if c.category == "cosmetic" => 0,
        Some(c) => c.default_tier,
    });
    let effective = input
        .change
        .effective
        .iter()
        .filter(|e| !matches!(e.direction, SettingDirection::Tighten | SettingDirection::Neutral))
        .map(|e| loosening_tier(e.catalog.as_ref()));
    settings.chain(effective).max().unwrap_or(0)
}

#[test]
fn invariants_hold_for_generated_inputs() {
    let engine = RefCell::new(PolicyEngine::builtin().unwrap());
    let mut runner = TestRunner::new(Config {
        cases: 256,
        ..Config::default()
    });
    runner
        .run(&policy_input(), |input| {
            let d = engine
                .borrow_mut()
                .evaluate(&input)
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert!(d.tier <= 3);
            prop_assert!(
                d.tier >= tier_floor(&input),
                "tier {} below floor {}",
                d.tier,
                tier_floor(&input)
            );
            prop_assert!(!d.reasons.is_empty());
            let r = &d.requirements;
            match d.tier {
                0 => prop_assert_eq!(r.approvals, 0),
                1 => prop_assert!(r.approvals == 1 && r.approver_groups.is_empty()),
                2 => prop_assert!(r.approvals == 1 && !r.approver_groups.is_empty()),
                _ => {
                    prop_assert_eq!(r.approvals, 2);
                    prop_assert_eq!(r.approver_groups[0].as_str(), "mdm-security");
                    prop_assert_eq!(r.window.as_deref(), Some("business-hours"));
                    prop_assert!(r.fresh_approval_per_ring);
                    prop_assert_eq!(r.soak_multiplier, 2.0);
                }
            }
            let rollback = input
                .change
                .settings
                .iter()
                .map(|s| &s.catalog)
                .chain(input.change.effective.iter().map(|e| &e.catalog))
                .all(|c| c.as_ref().is_some_and(|c| c.rollback_effective));
            prop_assert_eq!(d.rollback_effective, rollback);
            if input.change.kind != ChangeKind::Exception || input.change.op == ChangeOp::Removed {
                prop_assert!(d.violations.is_empty());
            }
            let mut sorted = d.violations.clone();
            sorted.sort();
            prop_assert_eq!(&sorted, &d.violations);
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------
// OPA parity.

fn opa_binary() -> Option<PathBuf> {
    match std::env::var_os("TOLLGATE_OPA") {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => {
            let ci = std::env::var("CI")
                .map(|v| !v.is_empty() && v != "false" && v != "0")
                .unwrap_or(false);
            assert!(
                !ci,
                "CI is set but TOLLGATE_OPA is not: the OPA parity check must not be skipped in CI \
                 (export TOLLGATE_OPA=\"$(scripts/opa.sh)\")"
            );
            eprintln!("TOLLGATE_OPA not set: skipping OPA parity (run scripts/opa.sh to build OPA)");
            None
        }
    }
}

/// `opa eval` of the decision rule for one input; `None` when undefined.
fn opa_decision(opa: &Path, input: &Value) -> Option<Value> {
    let mut child = Command::new(opa)
        .args(["eval", "--format", "json", "--strict-builtin-errors", "--data"])
        .arg(manifest_dir().join(BUILTIN_POLICY_PATH))
        .args(["--stdin-input", DECISION_RULE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", opa.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "opa eval failed for {input}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).expect("opa prints JSON");
    result.pointer("/result/0/expressions/0/value").cloned()
}

/// Numbers compared by value: engines print 2.0 as `2` or `2.0`.
fn numbers_as_f64(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64().expect("finite number")),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_f64).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), numbers_as_f64(v))).collect()),
        other => other.clone(),
    }
}

#[test]
fn opa_gives_the_same_decisions() {
    let Some(opa) = opa_binary() else { return };
    let mut engine = PolicyEngine::builtin().unwrap();
    let mut inputs: Vec<(String, Value)> = load_cases().into_iter().map(|c| (c.name, c.input)).collect();
    // Plus generated inputs, from a fixed seed so a failure reproduces.
    let mut runner = TestRunner::deterministic();
    let strategy = policy_input();
    for i in 0..60 {
        let input = strategy.new_tree(&mut runner).unwrap().current();
        inputs.push((format!("generated #{i}"), serde_json::to_value(&input).unwrap()));
    }
    let mut failures = Vec::new();
    for (name, input) in &inputs {
        let ours = engine
            .evaluate_raw(input)
            .unwrap_or_else(|e| panic!("{name}: regorus: {e:?}"));
        let Some(theirs) = opa_decision(&opa, input) else {
            failures.push(format!("{name}: OPA decision undefined"));
            continue;
        };
        if numbers_as_f64(&ours) != numbers_as_f64(&theirs) {
            failures.push(format!("{name}:\n  regorus {ours}\n  opa     {theirs}"));
            continue;
        }
        // After validation both are the same bytes.
        let ours = engine.evaluate_json(input).unwrap().to_string();
        let theirs = serde_json::to_value(tollgate::risk::validate_decision(theirs).unwrap())
            .unwrap()
            .to_string();
        if ours != theirs {
            failures.push(format!("{name}: validated decisions differ:\n  {ours}\n  {theirs}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs differ:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Broken custom policies fail closed with a clear error.

const VALID_REQUIREMENTS: &str =
    r#""requirements": {"approvals": 1, "approver_groups": [], "window": null, "soak_multiplier": 1.0}"#;

fn custom(text: &str) -> Result<PolicyEngine, RiskError> {
    PolicyEngine::from_sources(&[("policy/custom.rego".to_owned(), text.to_owned())])
}

fn any_input() -> Value {
    json!({"change": {"kind": "baseline", "op": "modified", "name": "corp-ios", "path": "baselines/ios/corp-ios.yaml",
                      "settings": [], "targets": {"groups_added": [], "groups_removed": []}, "blast_radius": null},
           "author": "alice"})
}

fn custom_error(text: &str) -> RiskError {
    match custom(text) {
        Err(e) => e,
        Ok(mut engine) => engine
            .evaluate_json(&any_input())
            .expect_err("policy should be rejected"),
    }
}

/// The error with its causes, as a log line would show it.
fn chain(e: &RiskError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[test]
fn tier_out_of_range_is_malformed() {
    let e = custom_error(&format!(
        "package tollgate.risk\ndecision := {{\"tier\": 7, \"reasons\": [\"x\"], {VALID_REQUIREMENTS}, \"rollback_effective\": true}}\n"
    ));
    assert!(matches!(e, RiskError::Malformed { .. }), "{e:?}");
    assert!(chain(&e).contains("tier is 7"), "{}", chain(&e));
    let refused = RiskDecision::refused(&e);
    assert_eq!(refused.tier, 3);
    assert!(!refused.is_promotable());
}

#[test]
fn missing_output_fields_and_wrong_types_are_malformed() {
    for body in [
        r#"{"tier": 1, "reasons": ["x"], "rollback_effective": true}"#.to_owned(),
        format!(r#"{{"tier": "1", "reasons": ["x"], {VALID_REQUIREMENTS}, "rollback_effective": true}}"#),
        format!(r#"{{"tier": 1.5, "reasons": ["x"], {VALID_REQUIREMENTS}, "rollback_effective": true}}"#),
        format!(r#"{{"tier": 1, "reasons": "x", {VALID_REQUIREMENTS}, "rollback_effective": true}}"#),
        format!(r#"{{"tier": 1, "reasons": ["x"], {VALID_REQUIREMENTS}, "rollback_effective": true, "tear": 2}}"#),
        r#"{"tier": 2, "reasons": ["x"], "requirements": {"approvals": 0, "approver_groups": [], "window": null, "soak_multiplier": 1.0}, "rollback_effective": true}"#.to_owned(),
        r#"{"tier": 1, "reasons": ["x"], "requirements": {"approvals": -1, "approver_groups": [], "window": null, "soak_multiplier": 1.0}, "rollback_effective": true}"#.to_owned(),
        r#"{"tier": 1, "reasons": ["x"], "requirements": {"approvals": 1, "approver_groups": ["a", "a"], "window": null, "soak_multiplier": 1.0}, "rollback_effective": true}"#.to_owned(),
        r#"{"tier": 1, "reasons": ["x"], "requirements": {"approvals": 1, "approver_groups": [], "window": null, "soak_multiplier": 0}, "rollback_effective": true}"#.to_owned(),
        r#""T3""#.to_owned(),
    ] {
        let e = custom_error(&format!("package tollgate.risk\ndecision := {body}\n"));
        assert!(matches!(e, RiskError::Malformed { .. }), "{body}: {e:?}");
    }
}

#[test]
fn bare_contract_policy_is_accepted_with_defaults() {
    let mut engine = custom(&format!(
        "package tollgate.risk\ndecision := {{\"tier\": 1, \"reasons\": [\"x\"], {VALID_REQUIREMENTS}, \"rollback_effective\": true}}\n"
    ))
    .unwrap();
    let d: RiskDecision = serde_json::from_value(engine.evaluate_json(&any_input()).unwrap()).unwrap();
    assert_eq!(d.tier, 1);
    assert!(d.violations.is_empty());
    assert!(!d.requirements.fresh_approval_per_ring);
}

#[test]
fn missing_decision_rule_is_named() {
    let e = custom_error("package tollgate.risk\ntier := 1\n");
    assert!(matches!(e, RiskError::MissingDecision { .. }), "{e:?}");
    assert!(e.to_string().contains(DECISION_RULE), "{e}");
    let e = custom_error("package acme.risk\ndecision := {}\n");
    assert!(matches!(e, RiskError::MissingDecision { .. }), "{e:?}");
}

#[test]
fn syntax_error_names_the_file_and_line() {
    let e = custom_error("package tollgate.risk\n\ndecision := {\"tier\": \n");
    assert!(
        matches!(e, RiskError::Parse { ref path, .. } if path == "policy/custom.rego"),
        "{e:?}"
    );
    let text = chain(&e);
    assert!(text.contains("policy/custom.rego:"), "{text}");
    // Rego v0 syntax (no `if`) is rejected: policies are Rego v1, as OPA 1.x.
    let e = custom_error("package tollgate.risk\ndecision { true }\n");
    assert!(matches!(e, RiskError::Parse { .. }), "{e:?}");
}

#[test]
fn undefined_decision_is_an_error() {
    let e = custom_error(&format!(
        "package tollgate.risk\ndecision := {{\"tier\": 0, \"reasons\": [], {VALID_REQUIREMENTS}, \"rollback_effective\": true}} if input.change.kind == \"nope\"\n"
    ));
    assert!(matches!(e, RiskError::Undefined { .. }), "{e:?}");
}

#[test]
fn builtin_errors_abort_evaluation() {
    let e = custom_error("package tollgate.risk\ndecision := {\"tier\": to_number(\"three\")}\n");
    assert!(matches!(e, RiskError::Evaluation { .. }), "{e:?}");
}

#[test]
fn no_sources_is_an_error() {
    assert!(matches!(PolicyEngine::from_sources(&[]), Err(RiskError::NoSources)));
}

#[test]
fn custom_policy_may_span_several_files() {
    let helper = r#"package acme.lib

owners_or_security(groups) := groups if count(groups) > 0
else := ["mdm-security"]
"#;
    // regorus 0.5 does not resolve functions through an import alias
    // (`import data.acme.lib` then `lib.f(x)`), so the call is fully qualified.
    let main = r#"package tollgate.risk

decision := {
	"tier": 2,
	"reasons": ["everything is T2 here"],
	"requirements": {
		"approvals": 1,
		"approver_groups": data.acme.lib.owners_or_security(object.get(input.change, "owners", [])),
		"window": null,
		"soak_multiplier": 1.0,
		"fresh_approval_per_ring": false,
	},
	"rollback_effective": true,
	"violations": [],
}
"#;
    let mut engine = PolicyEngine::from_sources(&[
        ("policy/lib.rego".to_owned(), helper.to_owned()),
        ("policy/risk.rego".to_owned(), main.to_owned()),
    ])
    .unwrap();
    let d: RiskDecision = serde_json::from_value(engine.evaluate_json(&any_input()).unwrap()).unwrap();
    assert_eq!(d.tier, 2);
    assert_eq!(d.requirements.approver_groups, vec!["mdm-security".to_owned()]);
}
