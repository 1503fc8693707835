//! The controller end to end on one machine: a real git repo, the real
//! SQLite store, the pure state machine, approvals through the service.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use tempfile::TempDir;

use tollgate::audit::{verify, Action, AuditEvent};
use tollgate::cli::quickstart::{write_sample_repo, SampleCommit};
use tollgate::controller::desired::Desired;
use tollgate::controller::{Controller, NoDevices};
use tollgate::promotion::{Phase, ReviewState};
use tollgate::state::Keys;
use tollgate::store::{self, PromotionFilter};

const CONFIG: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Config
metadata: {name: acme}
rings:
  - {name: canary, selector: {groups: [mdm-canary]}, soak: 1h}
  - {name: broad, selector: {all: true}}
approvers:
  mdm-security: {users: [sec1]}
  mdm-ios: {users: [ios1, ios2]}
  oncall: {users: [dana]}
windows:
  business-hours: {days: [mon, tue, wed, thu], start: "09:00", end: "16:00", tz: Europe/Berlin}
"#;

const IOS: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata: {name: corp-ios, owners: [mdm-ios]}\nspec:\n  platform: ios\n  targets: {groups: [phones, mdm-canary]}\n  settings:\n    passcode.min_length: 8\n";

fn monday() -> DateTime<Utc> {
    // 10:00 in Berlin.
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap()
}

async fn setup(dir: &TempDir) -> (Controller, std::path::PathBuf) {
    let db = format!("sqlite://{}", dir.path().join("state.db").display());
    setup_with(dir, &db).await
}

/// A fresh schema on the PostgreSQL server named by TOLLGATE_TEST_POSTGRES_URL
/// (CI always sets it; locally the PostgreSQL variant is skipped without it).
async fn postgres_url() -> Option<String> {
    use sqlx::{Connection, Executor};
    let Ok(base) = std::env::var("TOLLGATE_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the PostgreSQL variant: set TOLLGATE_TEST_POSTGRES_URL"
        );
        eprintln!("notice: TOLLGATE_TEST_POSTGRES_URL is not set; skipping the PostgreSQL controller test");
        return None;
    };
    let schema = format!(
        "tollgate_controller_{}_{}",
        std::process::id(),
        Utc::now().timestamp_subsec_micros()
    );
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .await
        .unwrap();
    admin.close().await.unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

async fn setup_with(dir: &TempDir, store_url: &str) -> (Controller, std::path::PathBuf) {
    let repo = dir.path().join("repo");
    let history = [SampleCommit {
        author: "priya",
        message: "initial",
        files: &[
            ("tollgate.yaml", Some(CONFIG)),
            ("baselines/ios/corp-ios.yaml", Some(IOS)),
        ],
    }];
    write_sample_repo(&repo, &history).unwrap();
    let store = store::open(store_url).await.unwrap();
    let url = format!("file://{}", repo.display());
    let c = Controller::new(
        store,
        url,
        "main".into(),
        dir.path().join("mirror"),
        Arc::new(NoDevices),
    );
    (c, repo)
}

fn commit(repo: &std::path::Path, author: &str, path: &str, text: &str) {
    let r = git2::Repository::open(repo).unwrap();
    std::fs::write(repo.join(path), text).unwrap();
    let mut index = r.index().unwrap();
    index.add_path(std::path::Path::new(path)).unwrap();
    index.write().unwrap();
    let tree = r.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now(author, "a@example.com").unwrap();
    let parent = r.head().unwrap().peel_to_commit().unwrap();
    r.commit(Some("HEAD"), &sig, &sig, "change", &tree, &[&parent]).unwrap();
}

async fn audit_log(c: &Controller) -> Vec<AuditEvent> {
    let rows = c.store().audit_after(0, 10_000).await.unwrap();
    rows.into_iter()
        .map(|r| AuditEvent {
            seq: r.seq as u64,
            at: r.at,
            actor: r.actor,
            action: Action::parse(&r.action),
            subject: r.subject,
            details: r.details,
            prev: r.prev,
            hash: r.hash,
        })
        .collect()
}

#[tokio::test]
async fn first_revision_is_governed_then_promoted_ring_by_ring() {
    let dir = TempDir::new().unwrap();
    let (c, repo) = setup(&dir).await;
    governed_end_to_end(c, repo).await;
}

#[tokio::test]
async fn the_same_on_postgresql() {
    let Some(url) = postgres_url().await else { return };
    let dir = TempDir::new().unwrap();
    let (c, repo) = setup_with(&dir, &url).await;
    governed_end_to_end(c, repo).await;
}

async fn governed_end_to_end(c: Controller, repo: std::path::PathBuf) {
    let now = monday();
    let id = c.poll(now).await.unwrap().expect("a promotion for the first revision");
    assert_eq!(c.poll(now).await.unwrap(), None, "the same tip is not planned twice");
    let (_, stored) = c.load(id).await.unwrap();
    assert_eq!(stored.promotion.tier, 3, "the first revision adds governance: T3");
    assert_eq!(stored.promotion.phase, Phase::PendingApproval { ring: 0 });

    // The author cannot approve; one owner is not enough for T3.
    let p = c.review(id, "priya", ReviewState::Approved, now).await.unwrap();
    assert_eq!(p.phase, Phase::PendingApproval { ring: 0 });
    let p = c.review(id, "ios1", ReviewState::Approved, now).await.unwrap();
    assert_eq!(p.phase, Phase::PendingApproval { ring: 0 });
    let p = c.review(id, "sec1", ReviewState::Approved, now).await.unwrap();
    assert!(matches!(p.phase, Phase::Soaking { ring: 0, .. }), "{:?}", p.phase);
    let canary: Desired = serde_json::from_value(
        c.store()
            .kv_get(&Keys::default().desired("canary"))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(canary.promotion, id);
    assert!(
        c.store()
            .kv_get(&Keys::default().desired("broad"))
            .await
            .unwrap()
            .is_none(),
        "broad waits for canary"
    );

    // T3 soaks twice the ring's hour; then the next ring needs fresh approvals.
    assert_eq!(c.reconcile(now + Duration::minutes(119)).await.unwrap(), 0);
    let later = now + Duration::hours(2);
    c.reconcile(later).await.unwrap();
    let (_, stored) = c.load(id).await.unwrap();
    assert_eq!(stored.promotion.phase, Phase::PendingApproval { ring: 1 });
    c.review(id, "ios2", ReviewState::Approved, later).await.unwrap();
    let p = c.review(id, "sec1", ReviewState::Approved, later).await.unwrap();
    assert_eq!(p.phase, Phase::Complete);
    assert!(c
        .store()
        .kv_get(&Keys::default().desired("broad"))
        .await
        .unwrap()
        .is_some());
    assert_eq!(c.reconcile(later).await.unwrap(), 0, "nothing left to do");

    // A T2 change next: planned against what the first ring runs.
    commit(
        &repo,
        "sam",
        "baselines/ios/corp-ios.yaml",
        &IOS.replace("min_length: 8", "min_length: 10"),
    );
    let id2 = c.poll(later).await.unwrap().unwrap();
    let (_, s2) = c.load(id2).await.unwrap();
    assert_eq!(s2.promotion.tier, 2);
    assert_eq!(Some(&s2.promotion.base), canary.base_revision.as_ref());
    assert_eq!(canary.documents.len(), 1, "{:?}", canary.documents);
    assert_eq!(s2.promotion.changes.len(), 1);

    let log = audit_log(&c).await;
    let report = verify(log.clone()).unwrap();
    assert_eq!(report.events as usize, log.len());
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    for a in [
        "plan_recorded",
        "promotion_created",
        "review_recorded",
        "promotion_approved",
        "ring_promoted",
        "gate_passed",
        "promotion_completed",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let approved = log.iter().find(|e| e.action.as_str() == "promotion_approved").unwrap();
    let rejected = approved.details["rejected"].as_array().unwrap();
    assert!(
        rejected
            .iter()
            .any(|r| r["reviewer"] == "priya" && r["reason"].as_str().unwrap().contains("author")),
        "{rejected:?}"
    );
}

#[tokio::test]
async fn a_newer_revision_supersedes_and_halt_stops() {
    let dir = TempDir::new().unwrap();
    let (c, repo) = setup(&dir).await;
    let now = monday();
    let first = c.poll(now).await.unwrap().unwrap();
    commit(
        &repo,
        "sam",
        "baselines/ios/corp-ios.yaml",
        &IOS.replace("min_length: 8", "min_length: 9"),
    );
    let second = c.poll(now).await.unwrap().unwrap();
    let (_, s1) = c.load(first).await.unwrap();
    assert!(
        matches!(s1.promotion.phase, Phase::Superseded { .. }),
        "{:?}",
        s1.promotion.phase
    );
    // Nothing was promoted, so the second is planned from nothing as well.
    let (_, s2) = c.load(second).await.unwrap();
    assert_eq!(s2.promotion.tier, 3);
    let p = c.halt(second, "dana", "wrong baseline", now).await.unwrap();
    assert!(matches!(p.phase, Phase::Halted { .. }));
    let err = c.review(second, "ios1", ReviewState::Approved, now).await.unwrap_err();
    assert!(err.to_string().contains("halted"), "{err}");
    let live = c
        .list(PromotionFilter {
            phases: vec!["pending_approval".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(live.is_empty());
    verify(audit_log(&c).await).unwrap();
}

#[tokio::test]
async fn force_push_past_the_promoted_revision_is_refused() {
    let dir = TempDir::new().unwrap();
    let (c, repo) = setup(&dir).await;
    let now = monday();
    let id = c.poll(now).await.unwrap().unwrap();
    c.review(id, "ios1", ReviewState::Approved, now).await.unwrap();
    c.review(id, "sec1", ReviewState::Approved, now).await.unwrap();
    // Rewrite history: a new root commit replaces main.
    let r = git2::Repository::open(&repo).unwrap();
    let tree = r.head().unwrap().peel_to_tree().unwrap();
    let sig = git2::Signature::now("mallory", "m@example.com").unwrap();
    let orphan = r.commit(None, &sig, &sig, "rewritten", &tree, &[]).unwrap();
    r.reference("refs/heads/main", orphan, true, "force").unwrap();
    let err = c.poll(now).await.unwrap_err();
    assert!(err.to_string().contains("not an ancestor"), "{err}");
    assert!(!err.is_transient());
}

/// Drives the sample to a completed T2 change on top of the first revision,
/// returning the controller, repo and the revisions.
async fn two_promoted_versions(dir: &TempDir) -> (Controller, std::path::PathBuf, chrono::DateTime<Utc>) {
    let (c, repo) = setup(dir).await;
    let mut now = monday();
    let id = c.poll(now).await.unwrap().unwrap();
    for who in ["ios1", "sec1"] {
        c.review(id, who, ReviewState::Approved, now).await.unwrap();
    }
    now += Duration::hours(2);
    c.reconcile(now).await.unwrap();
    for who in ["ios2", "sec1"] {
        c.review(id, who, ReviewState::Approved, now).await.unwrap();
    }
    assert_eq!(c.load(id).await.unwrap().1.promotion.phase, Phase::Complete);
    // A loosening (T3): security plus an owner, fresh for each ring.
    commit(
        &repo,
        "sam",
        "baselines/ios/corp-ios.yaml",
        &IOS.replace("min_length: 8", "min_length: 4"),
    );
    let id2 = c.poll(now).await.unwrap().unwrap();
    for who in ["ios1", "sec1"] {
        c.review(id2, who, ReviewState::Approved, now).await.unwrap();
    }
    now += Duration::hours(2);
    c.reconcile(now).await.unwrap();
    for who in ["ios2", "sec1"] {
        c.review(id2, who, ReviewState::Approved, now).await.unwrap();
    }
    let p2 = c.load(id2).await.unwrap().1.promotion;
    assert_eq!(p2.phase, Phase::Complete, "{:?} / {:?}", p2.phase, p2.approvals);
    (c, repo, now)
}

#[tokio::test]
async fn rollback_to_the_previous_verified_version_needs_oncall_and_pins_the_ring() {
    use tollgate::controller::rollback::{RollbackRequest, RollbackTarget};
    let dir = TempDir::new().unwrap();
    let (c, repo, now) = two_promoted_versions(&dir).await;
    let req = RollbackRequest {
        baseline: "corp-ios".into(),
        to: RollbackTarget::Previous,
        rings: vec![],
        break_glass_reason: None,
        dry_run: false,
    };
    let plan = c.plan_rollback(&req, Utc::now()).await.unwrap();
    assert!(plan.verified);
    assert_eq!(plan.rings, ["canary", "broad"]);
    assert_eq!(plan.requirements.approver_groups, ["oncall"]);
    let change = plan.change.as_ref().unwrap();
    assert_eq!(change.settings[0].key, "passcode.min_length");
    assert_eq!(change.settings[0].new, Some(serde_json::json!(8)));

    let (p, _) = c.rollback(&req, "eli", now).await.unwrap();
    assert_eq!(p.phase, Phase::PendingApproval { ring: 0 }, "waits for on-call");
    let p = c.review(p.id, "dana", ReviewState::Approved, now).await.unwrap();
    assert_eq!(
        p.phase,
        Phase::Complete,
        "a verified rollback is not gated: {:?}",
        p.phase
    );
    for ring in ["canary", "broad"] {
        let d: Desired =
            serde_json::from_value(c.store().kv_get(&Keys::default().desired(ring)).await.unwrap().unwrap()).unwrap();
        assert_eq!(
            d.documents["baseline/corp-ios"].digest,
            plan.target_digest.clone().unwrap(),
            "{ring}"
        );
        assert!(d.pins.contains_key("baseline/corp-ios"), "{ring} pinned");
    }

    // An unrelated change re-publishing the bad content is held by the pin;
    // a fix moves past it.
    commit(
        &repo,
        "sam",
        "baselines/ios/corp-ios.yaml",
        &IOS.replace("min_length: 8", "min_length: 12"),
    );
    let id = c.poll(now).await.unwrap().unwrap();
    c.review(id, "ios1", ReviewState::Approved, now).await.unwrap();
    let canary: Desired = serde_json::from_value(
        c.store()
            .kv_get(&Keys::default().desired("canary"))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(
        !canary.pins.contains_key("baseline/corp-ios"),
        "git moved past the rolled-back content"
    );
    let log = audit_log(&c).await;
    verify(log.clone()).unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    for a in ["rollback_requested", "ring_pinned", "ring_unpinned"] {
        assert!(actions.contains(&a), "{a} missing");
    }
}

#[tokio::test]
async fn break_glass_rolls_back_without_approval_and_is_loud() {
    use tollgate::controller::rollback::{RollbackRequest, RollbackTarget};
    let dir = TempDir::new().unwrap();
    let (c, _repo, now) = two_promoted_versions(&dir).await;
    let mut req = RollbackRequest {
        baseline: "corp-ios".into(),
        to: RollbackTarget::Previous,
        rings: vec!["canary".into()],
        break_glass_reason: Some("  ".into()),
        dry_run: false,
    };
    assert!(c
        .rollback(&req, "eli", now)
        .await
        .unwrap_err()
        .to_string()
        .contains("reason"));
    req.break_glass_reason = Some("passcodes of 4 digits on every phone".into());
    let (p, plan) = c.rollback(&req, "eli", now).await.unwrap();
    assert_eq!(plan.rings, ["canary"]);
    assert_eq!(p.phase, Phase::Complete);
    let broad: Desired = serde_json::from_value(
        c.store()
            .kv_get(&Keys::default().desired("broad"))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(broad.pins.is_empty(), "only the named ring is rolled back");
    let log = audit_log(&c).await;
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert!(actions.contains(&"break_glass"));
    assert!(actions.contains(&"follow_up_review_requested"));
    let unknown = RollbackRequest {
        baseline: "nope".into(),
        to: RollbackTarget::Previous,
        rings: vec![],
        break_glass_reason: None,
        dry_run: false,
    };
    assert!(c
        .plan_rollback(&unknown, Utc::now())
        .await
        .unwrap_err()
        .to_string()
        .contains("not promoted"));
}

#[tokio::test]
async fn adopt_records_the_fleet_state_then_governs_from_there() {
    let dir = TempDir::new().unwrap();
    let (c, repo) = setup(&dir).await;
    let now = monday();
    let sha = c.adopt("HEAD", "dana", now).await.unwrap();
    assert_eq!(c.poll(now).await.unwrap(), None, "the adopted tip is not re-planned");
    let canary: Desired = serde_json::from_value(
        c.store()
            .kv_get(&Keys::default().desired("canary"))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(canary.base_revision, Some(sha.clone()));
    assert!(canary.documents.contains_key("baseline/corp-ios"));
    let again = c.adopt("HEAD", "dana", now).await.unwrap_err();
    let chain = std::error::Error::source(&again)
        .map(|s| s.to_string())
        .unwrap_or_default();
    assert!(chain.contains("already published"), "{again}: {chain}");
    commit(
        &repo,
        "sam",
        "baselines/ios/corp-ios.yaml",
        &IOS.replace("min_length: 8", "min_length: 10"),
    );
    let id = c.poll(now).await.unwrap().unwrap();
    let (_, s) = c.load(id).await.unwrap();
    assert_eq!(s.promotion.base, sha);
    assert_eq!(s.promotion.tier, 2, "a tightening judged against the adopted state");
    let log = audit_log(&c).await;
    assert_eq!(log[0].action.as_str(), "adopted");
    assert_eq!(log[0].actor, "dana");
}

#[tokio::test]
async fn break_glass_promotes_without_approvals_outside_the_window_and_is_loud() {
    let dir = TempDir::new().unwrap();
    let (c, _repo) = setup(&dir).await;
    // Saturday night: outside business hours, and nobody approved.
    let saturday = Utc.with_ymd_and_hms(2026, 11, 28, 22, 0, 0).unwrap();
    let id = c.poll(saturday).await.unwrap().unwrap();
    c.reconcile(saturday).await.unwrap();
    assert_eq!(
        c.reconcile(saturday).await.unwrap(),
        0,
        "nothing moves without approvals"
    );
    let p = c
        .break_glass(id, "dana", "fleet-wide passcode bypass being exploited", saturday)
        .await
        .unwrap();
    assert!(matches!(p.phase, Phase::Soaking { ring: 0, .. }), "{:?}", p.phase);
    let log = audit_log(&c).await;
    verify(log.clone()).unwrap();
    let bg = log.iter().find(|e| e.action.as_str() == "break_glass").unwrap();
    assert_eq!(bg.actor, "dana");
    assert_eq!(bg.details["reason"], "fleet-wide passcode bypass being exploited");
    assert!(log.iter().any(|e| e.action.as_str() == "follow_up_review_requested"));
    let approved = log.iter().find(|e| e.action.as_str() == "promotion_approved").unwrap();
    assert_eq!(approved.details["break_glass"]["actor"], "dana");
    // Not on a finished promotion.
    c.halt(id, "dana", "enough", saturday).await.unwrap();
    let err = c.break_glass(id, "dana", "again", saturday).await.unwrap_err();
    assert!(err.to_string().contains("halted"), "{err}");
}
