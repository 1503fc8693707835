//! The fleet index: findings, exceptions, gates and remediation, as pure
//! computation over reports and desired states.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use tollgate::devices::fleet::{DriftFilter, FindingKind, Fleet, FleetOptions};
use tollgate::devices::report::{
    Applied, ApplyStatus, DeviceInfo, DeviceReport, Enrollment, OsInfo, SettingReport, SettingState,
};
use tollgate::devices::resolve::{ExceptionScope, ResolvedBaseline, ResolvedException, ResolvedRing};
use tollgate::format::RingSelector;
use tollgate::ids::{CommitSha, Digest, Platform};
use tollgate::promotion::GateReading;

const REV_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const REV_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn t0() -> DateTime<Utc> {
    "2026-11-22T10:00:00Z".parse().unwrap()
}

fn sha(s: &str) -> CommitSha {
    serde_json::from_value(json!(s)).unwrap()
}

fn digest(tag: &str) -> Digest {
    Digest::from_canonical_bytes(tag.as_bytes())
}

fn baseline(name: &str, rev: &str, tag: &str, groups: &[&str], settings: &[&str]) -> ResolvedBaseline {
    ResolvedBaseline {
        name: name.into(),
        revision: sha(rev),
        digest: digest(tag),
        promotion: 1,
        tier: 2,
        platform: Platform::Ios,
        priority: 100,
        owners: vec!["mdm-ios".into()],
        target_groups: groups.iter().map(|g| g.to_string()).collect(),
        settings: settings
            .iter()
            .map(|k| (k.to_string(), json!(true)))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn ring(name: &str, index: usize, at: DateTime<Utc>, baselines: Vec<ResolvedBaseline>) -> Arc<ResolvedRing> {
    Arc::new(ResolvedRing {
        ring: name.into(),
        ring_index: index,
        published_at: at,
        promotion: 1,
        base_revision: None,
        baselines,
        exceptions: Vec::new(),
    })
}

fn report(
    id: &str,
    groups: &[&str],
    at: DateTime<Utc>,
    applied: &[(&str, &str, ApplyStatus)],
    bad: &[&str],
) -> DeviceReport {
    DeviceReport {
        device: DeviceInfo {
            id: id.into(),
            platform: Platform::Ios,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            user: None,
            ownership: None,
        },
        os: OsInfo { version: "18.0".into() },
        enrollment: Enrollment::Enrolled,
        checked_in_at: at,
        applied: applied
            .iter()
            .map(|(b, tag, status)| Applied {
                baseline: b.to_string(),
                digest: digest(tag),
                status: *status,
            })
            .collect(),
        settings: bad
            .iter()
            .map(|k| SettingReport {
                key: k.to_string().into(),
                state: SettingState::Noncompliant,
                actual: Some(json!(false)),
            })
            .collect(),
    }
}

fn fleet() -> Fleet {
    let mut f = Fleet::new(FleetOptions::default());
    f.set_rings(&[
        ("canary".into(), RingSelector::Groups(vec!["mdm-canary".into()])),
        ("broad".into(), RingSelector::All),
    ]);
    f.set_desired(ring(
        "canary",
        0,
        t0(),
        vec![baseline(
            "corp-ios",
            REV_A,
            "v1",
            &["iphones"],
            &["passcode.required", "encryption.required"],
        )],
    ));
    f.set_desired(ring(
        "broad",
        1,
        t0(),
        vec![baseline(
            "corp-ios",
            REV_A,
            "v1",
            &["iphones"],
            &["passcode.required", "encryption.required"],
        )],
    ));
    f
}

fn kinds(f: &Fleet, id: &str) -> Vec<(FindingKind, Option<String>, Option<String>)> {
    f.device(id)
        .unwrap()
        .findings
        .into_iter()
        .map(|x| (x.kind, x.baseline, x.setting))
        .collect()
}

#[test]
fn compliant_device_has_no_findings_and_joins_the_first_matching_ring() {
    let mut f = fleet();
    let change = f
        .ingest(
            &report(
                "d1",
                &["iphones", "mdm-canary"],
                t0(),
                &[("corp-ios", "v1", ApplyStatus::Applied)],
                &[],
            ),
            t0(),
        )
        .unwrap();
    assert!(change.opened.is_empty() && change.open.is_empty());
    assert_eq!(change.ring.as_deref(), Some("canary"));
    let change = f
        .ingest(
            &report(
                "d2",
                &["iphones"],
                t0(),
                &[("corp-ios", "v1", ApplyStatus::Applied)],
                &[],
            ),
            t0(),
        )
        .unwrap();
    assert_eq!(change.ring.as_deref(), Some("broad"));
}

#[test]
fn version_drift_waits_for_the_grace_period() {
    let mut f = fleet();
    let old = report(
        "d1",
        &["iphones"],
        t0(),
        &[("corp-ios", "v0", ApplyStatus::Applied)],
        &[],
    );
    let change = f.ingest(&old, t0() + Duration::minutes(5)).unwrap();
    assert!(change.opened.is_empty(), "inside the grace period: {change:?}");
    let later = t0() + Duration::hours(2);
    let changes = f.recompute(later);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].opened[0].kind, FindingKind::VersionDrift);
    assert_eq!(changes[0].opened[0].baseline.as_deref(), Some("corp-ios"));
    // Applying the desired digest closes it.
    let fixed = report(
        "d1",
        &["iphones"],
        later,
        &[("corp-ios", "v1", ApplyStatus::Applied)],
        &[],
    );
    let change = f.ingest(&fixed, later).unwrap();
    assert_eq!(change.closed.len(), 1);
    assert!(change.open.is_empty());
}

#[test]
fn older_or_duplicate_reports_never_overwrite_newer_state() {
    let mut f = fleet();
    let new = report(
        "d1",
        &["iphones"],
        t0() + Duration::minutes(10),
        &[("corp-ios", "v1", ApplyStatus::Failed)],
        &[],
    );
    f.ingest(&new, t0() + Duration::minutes(10)).unwrap();
    let old = report(
        "d1",
        &["iphones"],
        t0(),
        &[("corp-ios", "v1", ApplyStatus::Applied)],
        &[],
    );
    assert!(f.ingest(&old, t0() + Duration::minutes(11)).is_none());
    assert!(
        f.ingest(&new, t0() + Duration::minutes(11)).is_none(),
        "a duplicate is ignored"
    );
    assert_eq!(
        kinds(&f, "d1"),
        vec![(FindingKind::ApplyFailed, Some("corp-ios".into()), None)]
    );
    assert_eq!(f.checked_in("d1"), Some(t0() + Duration::minutes(10)));
}

#[test]
fn setting_drift_is_owned_by_the_winning_baseline_and_unknown_baselines_are_flagged() {
    let mut f = fleet();
    let r = report(
        "d1",
        &["iphones"],
        t0(),
        &[
            ("corp-ios", "v1", ApplyStatus::Applied),
            ("old-ios", "x", ApplyStatus::Applied),
        ],
        &["passcode.required", "wifi.unknown-to-baselines"],
    );
    let change = f.ingest(&r, t0()).unwrap();
    let opened: Vec<_> = change
        .opened
        .iter()
        .map(|x| (x.kind, x.baseline.clone(), x.setting.clone()))
        .collect();
    assert_eq!(
        opened,
        vec![
            (
                FindingKind::SettingDrift,
                Some("corp-ios".into()),
                Some("passcode.required".into())
            ),
            (FindingKind::UnknownBaseline, Some("old-ios".into()), None),
        ]
    );
}

#[test]
fn stale_checkin_opens_as_time_passes() {
    let mut f = fleet();
    f.ingest(
        &report(
            "d1",
            &["iphones"],
            t0(),
            &[("corp-ios", "v1", ApplyStatus::Applied)],
            &[],
        ),
        t0(),
    );
    assert!(f.recompute(t0() + Duration::hours(23)).is_empty());
    let changes = f.recompute(t0() + Duration::hours(25));
    assert_eq!(changes[0].opened[0].kind, FindingKind::StaleCheckin);
}

#[test]
fn exceptions_suppress_matching_findings_until_they_expire() {
    let mut f = fleet();
    let mut desired = (*ring(
        "broad",
        1,
        t0(),
        vec![baseline("corp-ios", REV_A, "v1", &["iphones"], &["passcode.required"])],
    ))
    .clone();
    desired.exceptions.push(ResolvedException {
        name: "legal".into(),
        revision: sha(REV_A),
        digest: digest("e1"),
        baseline: "corp-ios".into(),
        settings: vec!["passcode.required".into()],
        scope: ExceptionScope::Groups(vec!["legal".into()]),
        reason: "forensics".into(),
        expires: t0() + Duration::days(3),
    });
    f.set_desired(Arc::new(desired));
    let covered = report(
        "d1",
        &["iphones", "legal"],
        t0(),
        &[("corp-ios", "v1", ApplyStatus::Applied)],
        &["passcode.required"],
    );
    let other = report(
        "d2",
        &["iphones"],
        t0(),
        &[("corp-ios", "v1", ApplyStatus::Applied)],
        &["passcode.required"],
    );
    assert!(
        f.ingest(&covered, t0()).unwrap().open.is_empty(),
        "suppressed by the exception"
    );
    assert_eq!(
        f.ingest(&other, t0()).unwrap().open.len(),
        1,
        "out of the exception's scope"
    );
    assert_eq!(f.summary(&DriftFilter::default()).suppressed, 1);
    let expired = f.expired_exceptions(t0() + Duration::days(3));
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].1, "legal");
    // Expiry ends suppression by itself: the still non-compliant device gets its finding.
    let at = t0() + Duration::days(3);
    let changes = f.recompute(at);
    let d1 = changes.iter().find(|c| c.device == "d1").expect("d1 changed");
    assert_eq!(d1.opened[0].kind, FindingKind::SettingDrift);
}

#[test]
fn gate_measures_applied_share_and_noncompliance_rise_against_the_publish_reference() {
    let mut f = fleet();
    let at = t0() + Duration::hours(1);
    for i in 0..10 {
        let r = report(
            &format!("c{i}"),
            &["iphones", "mdm-canary"],
            t0(),
            &[("corp-ios", "v1", ApplyStatus::Applied)],
            &[],
        );
        f.ingest(&r, t0());
    }
    // Publish REV_B to canary: reference taken first (nobody non-compliant).
    let reference = f.published("canary", at).unwrap();
    assert_eq!(reference.noncompliant_share, 0.0);
    f.set_desired(ring(
        "canary",
        0,
        at,
        vec![baseline("corp-ios", REV_B, "v2", &["iphones"], &["passcode.required"])],
    ));
    // Nobody has reported since: silent devices count as not applied.
    match f.reading("canary", REV_B, at) {
        GateReading::Measured { applied, devices, .. } => {
            assert_eq!(applied, 0.0);
            assert_eq!(devices, 10);
        }
        other => panic!("{other:?}"),
    }
    // 9 apply, 1 becomes non-compliant.
    let later = at + Duration::minutes(30);
    for i in 0..10 {
        let bad: &[&str] = if i == 0 { &["passcode.required"] } else { &[] };
        let r = report(
            &format!("c{i}"),
            &["iphones", "mdm-canary"],
            later,
            &[("corp-ios", "v2", ApplyStatus::Applied)],
            bad,
        );
        f.ingest(&r, later);
    }
    match f.reading("canary", REV_B, at) {
        GateReading::Measured {
            applied,
            noncompliant_increase,
            devices,
        } => {
            assert_eq!(applied, 1.0);
            assert!((noncompliant_increase - 0.1).abs() < 1e-9, "{noncompliant_increase}");
            assert_eq!(devices, 10);
        }
        other => panic!("{other:?}"),
    }
    // The broad ring has no devices: no evidence, no pass.
    assert!(matches!(f.reading("broad", REV_A, at), GateReading::NoData { .. }));
}

#[test]
fn gate_can_ignore_silent_devices_when_configured() {
    let mut f = Fleet::new(FleetOptions {
        gate_ignore_silent: true,
        ..FleetOptions::default()
    });
    f.set_rings(&[("canary".into(), RingSelector::All)]);
    let at = t0() + Duration::hours(1);
    f.set_desired(ring(
        "canary",
        0,
        at,
        vec![baseline("corp-ios", REV_B, "v2", &["iphones"], &[])],
    ));
    f.ingest(&report("quiet", &["iphones"], t0(), &[], &[]), t0());
    f.ingest(
        &report(
            "loud",
            &["iphones"],
            at + Duration::minutes(1),
            &[("corp-ios", "v2", ApplyStatus::Applied)],
            &[],
        ),
        at,
    );
    match f.reading("canary", REV_B, at) {
        GateReading::Measured { applied, devices, .. } => assert_eq!((applied, devices), (1.0, 1)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn findings_past_their_deadline_become_remediation_grouped_by_baseline_and_setting() {
    let mut f = fleet();
    for i in 0..3 {
        let r = report(
            &format!("d{i}"),
            &["iphones"],
            t0(),
            &[("corp-ios", "v1", ApplyStatus::Applied)],
            &["encryption.required"],
        );
        f.ingest(&r, t0());
    }
    assert!(f.overdue(t0() + Duration::hours(1)).is_empty());
    let items = f.overdue(t0() + Duration::days(40));
    let drift: Vec<_> = items.iter().filter(|i| i.kind == FindingKind::SettingDrift).collect();
    assert_eq!(drift.len(), 1);
    assert_eq!(drift[0].id, "corp-ios/setting_drift/encryption.required");
    assert_eq!(drift[0].devices, 3);
    assert_eq!(drift[0].owners, vec!["mdm-ios".to_string()]);
    assert_eq!(drift[0].sample, vec!["d0", "d1", "d2"]);
}

#[test]
fn summary_and_listing_filter_by_ring_kind_and_setting() {
    let mut f = fleet();
    f.ingest(
        &report(
            "a",
            &["iphones", "mdm-canary"],
            t0(),
            &[("corp-ios", "v1", ApplyStatus::Failed)],
            &[],
        ),
        t0(),
    );
    f.ingest(
        &report(
            "b",
            &["iphones"],
            t0(),
            &[("corp-ios", "v1", ApplyStatus::Applied)],
            &["passcode.required"],
        ),
        t0(),
    );
    f.ingest(
        &report(
            "c",
            &["iphones"],
            t0(),
            &[("corp-ios", "v1", ApplyStatus::Applied)],
            &[],
        ),
        t0(),
    );
    let all = f.summary(&DriftFilter::default());
    assert_eq!((all.devices, all.findings, all.noncompliant_devices), (3, 2, 2));
    assert_eq!(all.by_ring["canary"].devices, 1);
    assert_eq!(all.by_ring["broad"].findings, 1);
    // Rings in promotion order, not by name.
    assert_eq!(all.rings, ["canary", "broad"]);
    let in_canary = f.summary(&DriftFilter {
        ring: Some("canary".into()),
        ..Default::default()
    });
    assert_eq!(in_canary.rings, ["canary"]);
    assert_eq!(in_canary.by_ring.keys().collect::<Vec<_>>(), ["canary"]);
    // Devices in no ring come last.
    let mut narrow = Fleet::new(FleetOptions::default());
    narrow.set_rings(&[("canary".into(), RingSelector::Groups(vec!["mdm-canary".into()]))]);
    narrow.ingest(&report("loose", &["iphones"], t0(), &[], &[]), t0());
    assert_eq!(narrow.summary(&DriftFilter::default()).rings, ["canary", "(none)"]);
    assert_eq!(all.by_setting["passcode.required"], 1);
    let filter = DriftFilter {
        kind: Some(FindingKind::SettingDrift),
        ..Default::default()
    };
    let listed = f.list(&filter, None, 10);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, "b");
    let canary = DriftFilter {
        ring: Some("canary".into()),
        ..Default::default()
    };
    assert_eq!(f.list(&canary, None, 10)[0].id, "a");
    assert_eq!(
        f.list(&DriftFilter::default(), Some("a"), 10).len(),
        1,
        "paging after an id"
    );
}

#[test]
fn restore_keeps_open_findings_and_their_open_time() {
    let mut f = fleet();
    let r = report(
        "d1",
        &["iphones"],
        t0(),
        &[("corp-ios", "v1", ApplyStatus::Failed)],
        &[],
    );
    let open = f.ingest(&r, t0()).unwrap().open;
    let mut g = fleet();
    g.restore(&r, &open);
    assert_eq!(g.device("d1").unwrap().findings, open);
    assert!(
        g.recompute(t0() + Duration::minutes(1)).is_empty(),
        "nothing reopens after a restart"
    );
}

#[test]
fn save_and_put_back_restore_a_device_entry() {
    let mut f = fleet();
    let r = report(
        "d1",
        &["iphones"],
        t0(),
        &[("corp-ios", "v1", ApplyStatus::Applied)],
        &[],
    );
    let saved = f.save("d1");
    f.ingest(&r, t0());
    f.put_back(saved);
    assert!(f.device("d1").is_none());
    assert!(f.is_newer(&r), "the report can be sent again after a failed commit");
}

#[test]
fn a_device_costs_well_under_a_kibibyte() {
    let mut f = fleet();
    let bad = ["passcode.required"];
    for i in 0..20_000 {
        let r = report(
            &format!("serial:C02XK{i:07}"),
            &["iphones", "mdm-canary"],
            t0(),
            &[("corp-ios", "v1", ApplyStatus::Applied)],
            if i % 10 == 0 { &bad } else { &[] },
        );
        f.ingest(&r, t0());
    }
    let per_device = f.memory_bytes() / f.len();
    assert!(per_device < 1024, "{per_device} bytes per device");
}
