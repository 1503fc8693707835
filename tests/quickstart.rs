//! `tollgate quickstart --no-wait` end to end: the real controller (SQLite,
//! git mirror, HTTP API on loopback) and the fleet simulator, run in this
//! process by the tour. A good change passes every gate on the simulated
//! fleet's evidence, a bad change fails the canary gate and halts, a rollback
//! restores compliance, and the audit chain verifies. The story is checked
//! in the store the controller leaves behind, not only in what it printed.

use std::collections::BTreeSet;
use std::path::Path;

use clap::Parser;
use serde_json::Value;
use tempfile::TempDir;

use tollgate::audit::{Action, AuditEvent};
use tollgate::cli::tour::{fleet_shape, sim_options, TourOptions, BAD_IOS_MIN};
use tollgate::cli::{Cli, Exit};
use tollgate::devices::sim;
use tollgate::ids::Platform;
use tollgate::store::{self, PromotionFilter};

/// Everything the controller stored, read back after it stopped.
struct Stored {
    events: Vec<AuditEvent>,
    promotions: Vec<(i64, String, String, Value)>,
    desired: Vec<(String, Value)>,
    open_findings: Vec<(String, Value)>,
}

fn read_store(dir: &Path) -> Stored {
    let url = format!("sqlite://{}", dir.join("state.db").display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = store::open(&url).await.unwrap();
        let mut events = Vec::new();
        loop {
            let after = events.last().map_or(0, |e: &AuditEvent| e.seq as i64);
            let rows = store.audit_after(after, 1000).await.unwrap();
            if rows.is_empty() {
                break;
            }
            events.extend(rows.into_iter().map(|r| AuditEvent {
                seq: r.seq as u64,
                at: r.at,
                actor: r.actor,
                action: Action::parse(&r.action),
                subject: r.subject,
                details: r.details,
                prev: r.prev,
                hash: r.hash,
            }));
        }
        let filter = PromotionFilter {
            limit: 100,
            ..Default::default()
        };
        let mut promotions: Vec<_> = store
            .promotions(filter)
            .await
            .unwrap()
            .into_iter()
            .map(|p| (p.id, p.kind, p.phase, p.body["promotion"].clone()))
            .collect();
        promotions.sort_by_key(|p| p.0);
        Stored {
            events,
            promotions,
            desired: store.kv_prefix("desired/").await.unwrap(),
            open_findings: store.kv_prefix("finding/").await.unwrap(),
        }
    })
}

impl Stored {
    /// (action, ring) of the promotion's ring-by-ring events, in order.
    fn ring_steps(&self, id: i64) -> Vec<(String, String)> {
        let subject = format!("promotion/{id}");
        self.events
            .iter()
            .filter(|e| e.subject == subject)
            .filter(|e| {
                matches!(
                    e.action.as_str(),
                    "ring_promoted" | "gate_passed" | "gate_failed" | "promotion_halted" | "promotion_completed"
                )
            })
            .map(|e| {
                (
                    e.action.as_str().to_string(),
                    e.details["ring"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    fn event(&self, id: i64, action: &str, ring: &str) -> &AuditEvent {
        let subject = format!("promotion/{id}");
        self.events
            .iter()
            .find(|e| e.subject == subject && e.action.as_str() == action && e.details["ring"] == ring)
            .unwrap_or_else(|| panic!("no {action} in {ring} for promotion {id}"))
    }

    fn desired(&self, ring: &str) -> &Value {
        let key = format!("desired/{ring}");
        &self.desired.iter().find(|(k, _)| *k == key).unwrap().1
    }
}

fn steps(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, r)| (a.to_string(), r.to_string())).collect()
}

fn git_log(repo: &Path) -> Vec<(String, String)> {
    let repo = git2::Repository::open(repo).unwrap();
    let mut walk = repo.revwalk().unwrap();
    walk.push_head().unwrap();
    walk.map(|id| {
        let c = repo.find_commit(id.unwrap()).unwrap();
        (c.id().to_string(), c.summary().unwrap().unwrap().to_string())
    })
    .collect()
}

#[test]
fn the_tour_passes_a_change_through_every_gate_halts_a_bad_one_and_a_rollback_restores_compliance() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("qs");
    let cli = Cli::try_parse_from(["tollgate", "quickstart", "--no-wait", "--dir", dir.to_str().unwrap()]).unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let exit = tollgate::cli::run(cli, &mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    assert_eq!(exit.map_err(|e| format!("{e:#}\n{text}")).unwrap(), Exit::Ok, "{text}");
    eprintln!("the tour took {:.1}s", started.elapsed().as_secs_f64());

    // What the simulated fleet is made of, worked out independently of the tour.
    let sim = sim_options("http://127.0.0.1:1", "t", &TourOptions::default());
    let shape = fleet_shape(&sim);
    let canary_below: BTreeSet<String> = sim::fleet(&sim, 3)
        .into_iter()
        .filter(|d| {
            d.ring == 0 && d.platform == Platform::Ios && sim::compare_versions(d.os_version, BAD_IOS_MIN).is_lt()
        })
        .map(|d| d.id)
        .collect();
    assert_eq!(shape.rings, [15, 60, 225]);
    assert!(
        !canary_below.is_empty(),
        "the tour needs canary iPhones below {BAD_IOS_MIN}"
    );
    assert_eq!(canary_below.len(), shape.canary_ios_below_bad_min);

    // The repo: the sample's ten commits, then setup, good and bad.
    let log = git_log(&dir.join("repo"));
    assert_eq!(log.len(), 13, "{log:?}");
    let (bad_sha, good_sha, setup_sha) = (&log[0].0, &log[1].0, &log[2].0);
    assert_eq!(log[0].1, format!("iOS: require iOS {BAD_IOS_MIN}"));
    assert_eq!(log[1].1, "iOS: 10-character passcodes");
    assert!(log[2].1.starts_with("tour: "), "{}", log[2].1);

    let s = read_store(&dir);
    let adopted: Vec<&AuditEvent> = s.events.iter().filter(|e| e.action.as_str() == "adopted").collect();
    assert_eq!(adopted.len(), 1);
    assert_eq!(adopted[0].details["revision"], setup_sha.as_str());

    // Three promotions: the good change, the bad one, the rollback.
    let kinds: Vec<(&str, &str)> = s.promotions.iter().map(|p| (p.1.as_str(), p.2.as_str())).collect();
    assert_eq!(
        kinds,
        vec![("change", "complete"), ("change", "halted"), ("rollback", "complete")]
    );
    let (good, bad, rollback) = (&s.promotions[0], &s.promotions[1], &s.promotions[2]);
    assert_eq!(good.3["revision"], good_sha.as_str());
    assert_eq!(bad.3["revision"], bad_sha.as_str());
    assert_eq!((good.3["tier"].as_u64(), bad.3["tier"].as_u64()), (Some(2), Some(2)));

    // The good change: canary and pilot gates passed on measured evidence
    // (every device of the ring runs it, no rise in non-compliance), then broad.
    assert_eq!(
        s.ring_steps(good.0),
        steps(&[
            ("ring_promoted", "canary"),
            ("gate_passed", "canary"),
            ("ring_promoted", "pilot"),
            ("gate_passed", "pilot"),
            ("ring_promoted", "broad"),
            ("gate_passed", "broad"),
            ("promotion_completed", ""),
        ])
    );
    for (ring, devices) in [("canary", shape.rings[0]), ("pilot", shape.rings[1])] {
        let reading = &s.event(good.0, "gate_passed", ring).details["reading"];
        assert_eq!(reading["reading"], "measured", "{ring}: {reading}");
        assert_eq!(reading["devices"], devices as u64, "{ring}: {reading}");
        assert_eq!(reading["applied"], 1.0, "{ring}: {reading}");
        assert_eq!(reading["noncompliant_increase"], 0.0, "{ring}: {reading}");
    }
    let approved_by: Vec<&Value> = s
        .events
        .iter()
        .filter(|e| e.subject == format!("promotion/{}", good.0) && e.action.as_str() == "promotion_approved")
        .map(|e| &e.details["counted"][0]["reviewer"])
        .collect();
    assert_eq!(approved_by, vec!["ios1", "ios1", "ios1"]);

    // The bad change: published to canary only, its gate failed on the rise
    // in non-compliance the canary iPhones below the new minimum caused.
    assert_eq!(
        s.ring_steps(bad.0),
        steps(&[("ring_promoted", "canary"), ("gate_failed", "canary")])
    );
    let failed = &s.event(bad.0, "gate_failed", "canary").details;
    let reading = &failed["reading"];
    assert_eq!(reading["devices"], shape.rings[0] as u64, "{failed}");
    assert_eq!(reading["applied"], 1.0, "{failed}");
    let rise = reading["noncompliant_increase"].as_f64().unwrap();
    let expected = canary_below.len() as f64 / shape.rings[0] as f64;
    assert!((rise - expected).abs() < 1e-9, "{rise} vs {expected}: {failed}");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .starts_with("non-compliant share rose by"),
        "{failed}"
    );
    assert_eq!(bad.3["phase"]["phase"], "halted");
    assert!(
        bad.3["phase"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("gate failed in canary"),
        "{}",
        bad.3
    );

    // Findings: exactly those iPhones drifted on os.min_version in canary,
    // and every one of them closed again after the rollback was published.
    let findings = |action: &str| -> BTreeSet<String> {
        s.events
            .iter()
            .filter(|e| e.action.as_str() == action)
            .map(|e| {
                assert_eq!(e.details["ring"], "canary", "{e:?}");
                assert_eq!(e.details["kind"], "setting_drift", "{e:?}");
                assert_eq!(e.details["setting"], "os.min_version", "{e:?}");
                e.subject.trim_start_matches("device/").to_string()
            })
            .collect()
    };
    assert_eq!(findings("finding_opened"), canary_below);
    assert_eq!(findings("finding_closed"), canary_below);
    let rolled_back_at = s.event(rollback.0, "ring_promoted", "canary").seq;
    assert!(s
        .events
        .iter()
        .filter(|e| e.action.as_str() == "finding_closed")
        .all(|e| e.seq > rolled_back_at));
    assert!(s.open_findings.is_empty(), "{:?}", s.open_findings);

    // The rollback: requested by the operator, approved by on-call, not
    // gated (a verified version), published to canary and pinned there.
    let requested = s
        .events
        .iter()
        .find(|e| e.subject == format!("promotion/{}", rollback.0) && e.action.as_str() == "rollback_requested")
        .unwrap();
    assert_eq!(requested.actor, "ops");
    assert_eq!(requested.details["verified"], true);
    assert_eq!(requested.details["to"], good_sha.as_str());
    assert_eq!(
        s.event(rollback.0, "promotion_approved", "canary").details["counted"][0]["reviewer"],
        "dana"
    );
    assert_eq!(
        s.ring_steps(rollback.0),
        steps(&[
            ("ring_promoted", "canary"),
            ("gate_passed", "canary"),
            ("promotion_completed", ""),
        ])
    );
    // Every ring runs the good version of corp-ios again; canary holds a pin
    // against the bad one.
    let ios = |ring: &str| s.desired(ring)["documents"]["baseline/corp-ios"].clone();
    let good_digest = ios("pilot")["digest"].clone();
    assert_eq!(ios("pilot")["revision"], good_sha.as_str());
    assert_eq!(ios("broad")["digest"], good_digest);
    assert_eq!(ios("canary")["digest"], good_digest);
    assert_eq!(ios("canary")["promotion"], rollback.0);
    assert_eq!(
        s.desired("canary")["pins"]["baseline/corp-ios"]["bad_revision"],
        bad_sha.as_str()
    );

    // Every event the tour caused has an action this version knows: none
    // was written under a name the audit vocabulary lacks.
    let unknown: Vec<&str> = s
        .events
        .iter()
        .filter(|e| !e.action.is_known())
        .map(|e| e.action.as_str())
        .collect();
    assert!(unknown.is_empty(), "actions outside the vocabulary: {unknown:?}");

    // The audit chain verifies from genesis, and the tour said so too.
    let report = tollgate::audit::verify(s.events.clone()).unwrap();
    assert_eq!(report.events, s.events.len() as u64);
    assert!(
        text.contains(&format!("audit log intact: {} events", s.events.len())),
        "{text}"
    );

    // What the tour printed tells the same story, with the API's answers.
    for line in [
        "gate passed in canary: 15 devices reporting, 100% run the promoted version",
        "gate passed in pilot: 60 devices reporting, 100% run the promoted version",
        "GATE FAILED in canary: non-compliant share rose by",
        "$ TOLLGATE_TOKEN=$TOKEN_IOS1 tollgate approve 1",
        "$ TOLLGATE_TOKEN=$TOKEN_OPS tollgate rollback corp-ios --to-previous --ring canary --yes",
        "$ TOLLGATE_TOKEN=$TOKEN_DANA tollgate approve 3",
        "compliance is restored",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let drifts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("devices ") && l.contains(" tracked, "))
        .collect();
    let halted = format!(
        "devices     15 tracked, {n} non-compliant, {n} open findings, 0 suppressed by exceptions",
        n = canary_below.len()
    );
    let restored = "devices     15 tracked, 0 non-compliant, 0 open findings, 0 suppressed by exceptions";
    assert_eq!(drifts, vec![halted.as_str(), restored], "{text}");
    // --no-wait: the tour ends the run instead of serving on.
    assert!(text.contains("The tour is over"), "{text}");
    assert!(!text.contains("keep running until Ctrl-C"), "{text}");
}

#[test]
fn no_wait_and_no_run_are_exclusive_flags() {
    let parsed = Cli::try_parse_from(["tollgate", "quickstart", "--no-run", "--no-wait"]);
    assert_eq!(parsed.unwrap_err().kind(), clap::error::ErrorKind::ArgumentConflict);
    assert!(Cli::try_parse_from(["tollgate", "quickstart", "--no-wait"]).is_ok());
}
