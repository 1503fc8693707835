//! The devices benchmark's fleet, shared by `examples/ingest_load` (the
//! process-level runs) and `benches/devices.rs` (included with `#[path]`).
//!
//! - a governed repo whose baselines set every setting the catalogue has for
//!   their platform (22 to 28 per device, the `settings` of each report the
//!   simulator sends), and a controller config for `tollgate run`;
//! - in-process desired states and reports of `SETTINGS` settings each, for
//!   the fleet index alone, deterministic from the device number.

#![allow(dead_code)] // the bench and the example each use a part

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use tollgate::catalog::{Catalog, SetItem, ValueType};
use tollgate::cli::quickstart::{write_sample_repo, SampleCommit};
use tollgate::controller::config::token_hash;
use tollgate::devices::report::{
    Applied, ApplyStatus, DeviceInfo, DeviceReport, Enrollment, OsInfo, SettingReport, SettingState,
};
use tollgate::devices::resolve::{ExceptionScope, ResolvedBaseline, ResolvedException, ResolvedRing};
use tollgate::format::RingSelector;
use tollgate::ids::{CommitSha, Digest, Platform};

/// Settings per report in the in-process benches (the issue's 30).
pub const SETTINGS: usize = 30;

/// The reporter's token in the written controller config.
pub const REPORTER_TOKEN: &str = "tgk-bench-reporter-6f1c0d";
pub const VIEWER_TOKEN: &str = "tgk-bench-viewer-29ab47";

const CONFIG: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Config
metadata: {name: bench}
rings:
  - {name: canary, selector: {groups: [mdm-canary]}, soak: 2h,  gate: {min_applied: 0.95, max_noncompliant_increase: 0.01}}
  - {name: pilot,  selector: {groups: [mdm-pilot]},  soak: 24h, gate: {min_applied: 0.95, max_noncompliant_increase: 0.01}}
  - {name: broad,  selector: {all: true}}
approvers:
  mdm-security: {users: [sec1]}
  mdm-platform: {users: [plat1]}
  oncall: {users: [dana]}
"#;

/// A value of the catalogue type `t` that validates.
pub fn sample_value(t: &ValueType) -> Value {
    match t {
        ValueType::Bool => json!(true),
        ValueType::Int { min, max } => json!((*min).max((*max).min(6))),
        ValueType::Enum(values) => json!(values.last().expect("enums have values")),
        ValueType::Version => json!("13.0"),
        ValueType::String { .. } => json!("Managed by Example Corp IT"),
        ValueType::Sha256 => json!("ab".repeat(32)),
        ValueType::Set(SetItem::String) => json!(["com.example.mail", "com.example.chat"]),
        ValueType::Set(SetItem::Object(o)) => {
            let mut first = BTreeMap::new();
            for (name, field) in &o.fields {
                first.insert(name.clone(), sample_value(field));
            }
            json!([first])
        }
        ValueType::Object(o) => {
            let mut object = BTreeMap::new();
            for (name, field) in &o.fields {
                object.insert(name.clone(), sample_value(field));
            }
            json!(object)
        }
    }
}

/// Every catalogue key meaningful on `platform`.
pub fn platform_keys(platform: Platform) -> Vec<String> {
    Catalog::builtin()
        .entries()
        .filter(|e| e.platforms.contains(&platform))
        .map(|e| e.key.clone())
        .collect()
}

fn baseline_yaml(name: &str, platform: Platform, priority: i64, keys: &[String]) -> String {
    let catalog = Catalog::builtin();
    let settings: BTreeMap<&str, Value> = keys
        .iter()
        .map(|k| {
            (
                k.as_str(),
                sample_value(&catalog.get(k).expect("a catalogue key").value_type),
            )
        })
        .collect();
    let doc = json!({
        "apiVersion": "tollgate.dev/v1alpha1",
        "kind": "Baseline",
        "metadata": {"name": name, "owners": ["mdm-platform"]},
        "spec": {"platform": platform.as_str(), "priority": priority,
                 "targets": {"groups": ["all-corporate"]}, "settings": settings},
    });
    serde_norway::to_string(&doc).expect("a baseline renders as YAML")
}

/// Writes the governed repo at `dir/repo`: the three-ring config and, per
/// platform, `corp-<platform>` with every setting the catalogue has for it
/// and `<platform>-hardening` (higher priority) with its first five again.
/// Returns the repo and its head commit.
pub fn write_repo(dir: &Path) -> anyhow::Result<(PathBuf, String)> {
    let repo = dir.join("repo");
    let mut files: Vec<(String, String)> = vec![("tollgate.yaml".into(), CONFIG.into())];
    for platform in Platform::ALL {
        let keys = platform_keys(platform);
        let p = platform.as_str();
        files.push((
            format!("baselines/{p}/corp-{p}.yaml"),
            baseline_yaml(&format!("corp-{p}"), platform, 100, &keys),
        ));
        files.push((
            format!("baselines/{p}/{p}-hardening.yaml"),
            baseline_yaml(&format!("{p}-hardening"), platform, 200, &keys[..5]),
        ));
    }
    let files: Vec<(&str, Option<&str>)> = files.iter().map(|(p, c)| (p.as_str(), Some(c.as_str()))).collect();
    let history = [SampleCommit {
        author: "platform",
        message: "baselines for the ingestion benchmark",
        files: &files,
    }];
    let commits = write_sample_repo(&repo, &history)?;
    let head = commits.last().cloned().expect("one commit");
    Ok((repo, head))
}

/// Writes `dir/controller.yaml` for `tollgate run` on `listen`, its store and
/// mirror in `dir`, with a reporter and a viewer token. The loop runs every
/// 30 s, the default, so a pass (which re-evaluates every device) does not
/// come more often than in production.
pub fn write_config(dir: &Path, repo: &Path, listen: &str) -> anyhow::Result<PathBuf> {
    let config = dir.join("controller.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: ControllerConfig\n\
             source: {{url: \"file://{}\", branch: main, interval: 30s}}\n\
             store: \"sqlite://{}\"\nlisten: \"{listen}\"\nforge: {{local: {{}}}}\nmirror: \"{}\"\n\
             tokens:\n  - {{name: mdm, role: reporter, sha256: \"{}\"}}\n  - {{name: vera, role: viewer, sha256: \"{}\"}}\n",
            repo.display(),
            dir.join("state.db").display(),
            dir.join("mirror").display(),
            token_hash(REPORTER_TOKEN),
            token_hash(VIEWER_TOKEN),
        ),
    )?;
    Ok(config)
}

// ---------------------------------------------------------------------------
// In-process fleet: desired states and reports without git or HTTP.

/// The rings of [`CONFIG`], as the index takes them.
pub fn rings() -> Vec<(String, RingSelector)> {
    vec![
        ("canary".into(), RingSelector::Groups(vec!["mdm-canary".into()])),
        ("pilot".into(), RingSelector::Groups(vec!["mdm-pilot".into()])),
        ("broad".into(), RingSelector::All),
    ]
}

/// The `SETTINGS` keys every in-process report carries (the catalogue's
/// first ones; the index does not check platforms).
pub fn bench_keys() -> Vec<String> {
    let keys: Vec<String> = Catalog::builtin()
        .entries()
        .map(|e| e.key.clone())
        .take(SETTINGS)
        .collect();
    assert_eq!(keys.len(), SETTINGS, "the catalogue has fewer than {SETTINGS} settings");
    keys
}

fn sha(n: u8) -> CommitSha {
    CommitSha::new(format!("{n:02x}").repeat(20))
}

fn digest(name: &str, version: u32) -> Digest {
    Digest::from_canonical_bytes(format!("{name}@{version}").as_bytes())
}

/// Every ring's desired state: per platform `corp-<platform>` setting all of
/// `keys` at `version`, and one exception in broad (group `site-3`, one
/// setting of corp-ios). Published at `published_at`.
pub fn desired(keys: &[String], version: u32, published_at: DateTime<Utc>) -> Vec<Arc<ResolvedRing>> {
    rings()
        .iter()
        .enumerate()
        .map(|(index, (ring, _))| {
            let baselines = Platform::ALL
                .iter()
                .map(|p| {
                    let name = format!("corp-{}", p.as_str());
                    ResolvedBaseline {
                        digest: digest(&name, version),
                        name,
                        revision: sha(version as u8),
                        promotion: 1,
                        tier: 2,
                        platform: *p,
                        priority: 100,
                        owners: vec!["mdm-platform".into()],
                        target_groups: vec!["all-corporate".into()],
                        settings: keys.iter().map(|k| (k.clone(), json!(true))).collect(),
                    }
                })
                .collect();
            let exceptions = if ring == "broad" {
                vec![ResolvedException {
                    name: "site-3-camera".into(),
                    revision: sha(1),
                    digest: digest("site-3-camera", 1),
                    baseline: "corp-ios".into(),
                    settings: vec![keys[3].clone()],
                    scope: ExceptionScope::Groups(vec!["site-3".into()]),
                    reason: "kiosk devices".into(),
                    expires: published_at + Duration::days(365),
                }]
            } else {
                Vec::new()
            };
            Arc::new(ResolvedRing {
                ring: ring.clone(),
                ring_index: index,
                published_at,
                promotion: 1,
                base_revision: Some(sha(version as u8)),
                baselines,
                exceptions,
            })
        })
        .collect()
}

/// A small deterministic hash of the device number, for its traits.
fn mix(n: u64) -> u64 {
    let mut x = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Device `n`'s report at `at`, running `version` of its baseline. 1% of
/// devices are in canary, 9% in pilot; 3% still run the previous version,
/// 1% failed to apply; 5% report one setting non-compliant and 1% two (one
/// in error). Every report carries all of `keys`.
pub fn report(n: u64, keys: &[String], version: u32, at: DateTime<Utc>) -> DeviceReport {
    let h = mix(n);
    let platform = Platform::ALL[(h % 5) as usize];
    let p = platform.as_str();
    let ring_group = match (h >> 8) % 100 {
        0 => Some("mdm-canary"),
        1..=9 => Some("mdm-pilot"),
        _ => None,
    };
    let mut groups = vec!["all-corporate".to_string(), format!("site-{}", (h >> 16) % 20)];
    groups.extend(ring_group.map(String::from));
    let (applied_version, status) = match (h >> 24) % 100 {
        0..=2 => (version.saturating_sub(1), ApplyStatus::Applied),
        3 => (version, ApplyStatus::Failed),
        _ => (version, ApplyStatus::Applied),
    };
    let bad = match (h >> 32) % 100 {
        0..=4 => 1,
        5 => 2,
        _ => 0,
    };
    let first_bad = ((h >> 40) as usize) % keys.len();
    let settings = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let state = match (i + keys.len() - first_bad) % keys.len() {
                0 if bad >= 1 => SettingState::Noncompliant,
                1 if bad >= 2 => SettingState::Error,
                _ => SettingState::Compliant,
            };
            SettingReport {
                key: k.clone().into(),
                state,
                actual: Some(json!(true)),
            }
        })
        .collect();
    let name = format!("corp-{p}");
    DeviceReport {
        device: DeviceInfo {
            id: format!("bench-{p}-{n:07}"),
            platform,
            groups,
            user: Some(format!("user{}@corp.example", n % 50_000)),
            ownership: None,
        },
        os: OsInfo { version: "17.5".into() },
        enrollment: Enrollment::Enrolled,
        checked_in_at: at,
        applied: vec![Applied {
            digest: digest(&name, applied_version),
            baseline: name,
            status,
        }],
        settings,
    }
}
