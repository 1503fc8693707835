//! What a ring receives is judged against what that ring runs: supersessions,
//! trailing commits, digest-preserving revisions, force-pushes and planning
//! outside the write lock, through the real controller on a real git repo and
//! the real SQLite store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use tempfile::TempDir;

use tollgate::cli::quickstart::{write_sample_repo, SampleCommit};
use tollgate::controller::desired::Desired;
use tollgate::controller::{Controller, ControllerError, RingHealth};
use tollgate::ids::CommitSha;
use tollgate::promotion::{GateReading, Phase, ReviewState};
use tollgate::store;

const CONFIG: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Config
metadata: {name: acme}
rings:
  - {name: canary, selector: {groups: [mdm-canary]}, soak: 1h, gate: {min_applied: 0.9, max_noncompliant_increase: 0.05}}
  - {name: pilot, selector: {groups: [mdm-pilot]}, soak: 1h, gate: {min_applied: 0.9, max_noncompliant_increase: 0.05}}
  - {name: broad, selector: {all: true}}
approvers:
  mdm-security: {users: [sec1, sec2]}
  mdm-ios: {users: [ios1, ios2, iosdev]}
  oncall: {users: [dana]}
windows:
  business-hours: {days: [mon, tue, wed, thu, fri], start: "00:00", end: "23:59", tz: UTC}
"#;

const IOS: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata: {name: corp-ios, owners: [mdm-ios]}\nspec:\n  platform: ios\n  targets: {groups: [phones, mdm-canary, mdm-pilot]}\n  settings:\n    passcode.min_length: 8\n";

/// corp-ios with a new trust anchor: T3.
fn with_root() -> String {
    format!(
        "{IOS}    certs.trusted_roots:\n      - {{name: acme-root-2026, sha256: \"{}\"}}\n",
        "ab".repeat(32)
    )
}

/// Every ring reports healthy: gates pass once soaked.
struct Healthy;

impl RingHealth for Healthy {
    fn reading(&self, _: &str, _: &CommitSha, _: DateTime<Utc>) -> GateReading {
        GateReading::Measured {
            applied: 1.0,
            noncompliant_increase: 0.0,
            devices: 20,
        }
    }
}

fn monday() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap()
}

struct Rig {
    _dir: TempDir,
    repo: PathBuf,
    c: Controller,
}

async fn rig() -> Rig {
    rig_with(|c| c).await
}

async fn rig_with(wrap: impl FnOnce(Controller) -> Controller) -> Rig {
    let dir = TempDir::new().unwrap();
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
    let db = format!("sqlite://{}", dir.path().join("state.db").display());
    let c = Controller::new(
        store::open(&db).await.unwrap(),
        format!("file://{}", repo.display()),
        "main".into(),
        dir.path().join("mirror"),
        Arc::new(Healthy),
    );
    let c = wrap(c);
    c.adopt("HEAD", "dana", monday()).await.unwrap();
    Rig { _dir: dir, repo, c }
}

/// Commits `files` (path, text; `None` deletes) as `author` on top of HEAD.
fn commit(repo: &Path, author: &str, committer: &str, files: &[(&str, Option<&str>)]) -> String {
    let r = git2::Repository::open(repo).unwrap();
    let mut index = r.index().unwrap();
    for (path, text) in files {
        let full = repo.join(path);
        match text {
            Some(t) => {
                std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                std::fs::write(&full, t).unwrap();
                index.add_path(Path::new(path)).unwrap();
            }
            None => {
                std::fs::remove_file(&full).unwrap();
                index.remove_path(Path::new(path)).unwrap();
            }
        }
    }
    index.write().unwrap();
    let tree = r.find_tree(index.write_tree().unwrap()).unwrap();
    let a = git2::Signature::now(author, "a@example.com").unwrap();
    let c = git2::Signature::now(committer, "c@example.com").unwrap();
    let parent = r.head().unwrap().peel_to_commit().unwrap();
    r.commit(Some("HEAD"), &a, &c, "change", &tree, &[&parent])
        .unwrap()
        .to_string()
}

async fn desired(c: &Controller, ring: &str) -> Desired {
    c.state().desired(ring).await.unwrap().unwrap()
}

async fn phase(c: &Controller, id: i64) -> Phase {
    c.load(id).await.unwrap().1.promotion.phase
}

async fn actions(c: &Controller) -> Vec<(String, serde_json::Value)> {
    c.store()
        .audit_after(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.action, r.details))
        .collect()
}

#[tokio::test]
async fn a_t0_edit_over_a_canary_only_trust_anchor_needs_the_anchors_approvals_for_pilot() {
    let Rig { repo, c, _dir } = rig().await;
    let t = monday();
    let root = with_root();
    commit(
        &repo,
        "iosdev",
        "iosdev",
        &[("baselines/ios/corp-ios.yaml", Some(&root))],
    );
    let p1 = c.poll(t).await.unwrap().unwrap();
    assert_eq!(c.load(p1).await.unwrap().1.promotion.tier, 3);
    c.review(p1, "sec1", ReviewState::Approved, t).await.unwrap();
    c.review(p1, "ios1", ReviewState::Approved, t).await.unwrap();
    assert!(matches!(phase(&c, p1).await, Phase::Soaking { ring: 0, .. }));
    let anchor = desired(&c, "canary").await.documents["baseline/corp-ios"]
        .digest
        .clone();
    assert_ne!(desired(&c, "pilot").await.documents["baseline/corp-ios"].digest, anchor);

    // A cosmetic edit of the same baseline supersedes it while canary soaks.
    let t2 = t + Duration::minutes(10);
    let edited = format!("{root}    cosmetic.lock_screen_message: Property of Acme\n");
    commit(&repo, "ios2", "ios2", &[("baselines/ios/corp-ios.yaml", Some(&edited))]);
    let p2 = c.poll(t2).await.unwrap().unwrap();
    assert!(matches!(phase(&c, p1).await, Phase::Superseded { .. }));
    let promo = c.load(p2).await.unwrap().1.promotion;
    // Against canary (which runs the anchor) the edit is cosmetic; against
    // pilot and broad (which do not) it brings the anchor: T3.
    let tiers: Vec<u8> = promo.ring_changes.iter().map(|r| r.tier).collect();
    assert_eq!(tiers, [0, 3, 3]);
    assert_eq!(promo.tier, 3);

    // Canary takes the T0 edit without approvals, and soaks twice as long
    // as the unverified anchor in it demands.
    c.reconcile(t2).await.unwrap();
    let Phase::Soaking { ring: 0, until, .. } = phase(&c, p2).await else {
        panic!("{:?}", phase(&c, p2).await)
    };
    assert_eq!(until, t2 + Duration::hours(2));

    // After canary passes, pilot waits for fresh T3 approvals; the ones given
    // for canary (carried over from the first promotion) do not count.
    let t3 = t2 + Duration::hours(2);
    c.reconcile(t3).await.unwrap();
    assert_eq!(phase(&c, p2).await, Phase::PendingApproval { ring: 1 });
    assert_ne!(desired(&c, "pilot").await.documents["baseline/corp-ios"].digest, anchor);
    let p = c.review(p2, "sec2", ReviewState::Approved, t3).await.unwrap();
    assert_eq!(p.phase, Phase::PendingApproval { ring: 1 }, "one approval is not two");
    let p = c.review(p2, "ios1", ReviewState::Approved, t3).await.unwrap();
    assert!(matches!(p.phase, Phase::Soaking { ring: 1, .. }), "{:?}", p.phase);
    let pilot = desired(&c, "pilot").await;
    assert_eq!(
        pilot.documents["baseline/corp-ios"].digest,
        desired(&c, "canary").await.documents["baseline/corp-ios"].digest,
        "pilot runs what canary runs once its own approvals are in"
    );
}

#[tokio::test]
async fn a_new_tip_that_touches_nothing_still_holds_later_rings_to_the_content_they_lack() {
    let Rig { repo, c, _dir } = rig().await;
    let t = monday();
    let root = with_root();
    commit(
        &repo,
        "iosdev",
        "iosdev",
        &[("baselines/ios/corp-ios.yaml", Some(&root))],
    );
    let p1 = c.poll(t).await.unwrap().unwrap();
    c.review(p1, "sec1", ReviewState::Approved, t).await.unwrap();
    c.review(p1, "ios1", ReviewState::Approved, t).await.unwrap();
    // An unrelated file: the governed content does not change at all.
    commit(&repo, "ci", "ci", &[("README.md", Some("notes\n"))]);
    let p2 = c.poll(t + Duration::minutes(1)).await.unwrap().unwrap();
    let promo = c.load(p2).await.unwrap().1.promotion;
    let changed: Vec<usize> = promo.ring_changes.iter().map(|r| r.changes.len()).collect();
    assert_eq!(changed, [0, 1, 1], "canary runs it already; pilot and broad do not");
    c.reconcile(t + Duration::minutes(1)).await.unwrap();
    assert!(matches!(phase(&c, p2).await, Phase::Soaking { ring: 0, .. }));
    c.reconcile(t + Duration::minutes(1) + Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(phase(&c, p2).await, Phase::PendingApproval { ring: 1 });
    assert_ne!(
        desired(&c, "pilot").await.documents["baseline/corp-ios"].digest,
        desired(&c, "canary").await.documents["baseline/corp-ios"].digest,
        "the split stays until pilot's approvals come"
    );
    // The split is visible in /v1/status and in `tollgate status`.
    let status = serve_status(c).await;
    let split = status["split"].as_array().unwrap();
    let rings: Vec<&str> = split.iter().map(|s| s["ring"].as_str().unwrap()).collect();
    assert_eq!(rings, ["pilot", "broad"]);
    assert_eq!(split[0]["differs_from"], "canary");
    assert_eq!(split[0]["documents"], serde_json::json!(["baseline/corp-ios"]));
}

/// Serves `c`'s API on loopback and answers `tollgate status` as JSON and text.
async fn serve_status(c: Controller) -> serde_json::Value {
    use tollgate::controller::config::token_hash;
    use tollgate::controller::{Role, TokenConfig};
    use tollgate::http::{ApiOptions, ApiState, Tokens};
    let tokens = Tokens::from_config(&[TokenConfig {
        name: "vera".into(),
        role: Role::Viewer,
        sha256: token_hash("viewer-token"),
        scope: None,
    }])
    .unwrap();
    let state = ApiState::new(Arc::new(c), tokens, ApiOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(tollgate::http::serve(listener, state, std::future::pending()));
    let run = |format: &'static str| {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
                .args(["status", "--server", &server, "--token", "viewer-token", "-o", format])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        })
    };
    let text = run("text").await.unwrap();
    assert!(
        text.contains("split: pilot runs other content than canary for baseline/corp-ios"),
        "{text}"
    );
    serde_json::from_str(&run("json").await.unwrap()).unwrap()
}

#[tokio::test]
async fn the_author_cannot_approve_behind_a_trailing_commit_by_someone_else() {
    let Rig { repo, c, _dir } = rig().await;
    let t = monday();
    let ten = IOS.replace("min_length: 8", "min_length: 6");
    commit(
        &repo,
        "iosdev",
        "iosdev",
        &[("baselines/ios/corp-ios.yaml", Some(&ten))],
    );
    commit(&repo, "ci", "ci", &[("README.md", Some("bump\n"))]);
    let id = c.poll(t).await.unwrap().unwrap();
    let promo = c.load(id).await.unwrap().1.promotion;
    assert_eq!(promo.author, "ci");
    assert!(promo.authors.contains(&"iosdev".to_string()), "{:?}", promo.authors);
    let p = c.review(id, "iosdev", ReviewState::Approved, t).await.unwrap();
    assert_eq!(p.phase, Phase::PendingApproval { ring: 0 });
    let rejected: Vec<&str> = p
        .approvals
        .iter()
        .flat_map(|a| a.rejected.iter().map(|r| r.reason.as_str()))
        .collect();
    assert_eq!(rejected, ["authored or committed a commit of this change"]);
    // A committer who is not the author is excluded too.
    let eleven = IOS.replace("min_length: 8", "min_length: 5");
    commit(&repo, "ios2", "ios1", &[("baselines/ios/corp-ios.yaml", Some(&eleven))]);
    let id = c.poll(t).await.unwrap().unwrap();
    let p = c.review(id, "ios1", ReviewState::Approved, t).await.unwrap();
    let ios1: Vec<&str> = p
        .approvals
        .iter()
        .flat_map(|a| a.rejected.iter())
        .filter(|r| r.reviewer == "ios1")
        .map(|r| r.reason.as_str())
        .collect();
    assert_eq!(ios1, ["authored or committed a commit of this change"]);
}

#[tokio::test]
async fn a_revision_that_changes_no_digest_keeps_its_approvals_and_any_content_change_drops_them() {
    let Rig { repo, c, _dir } = rig().await;
    let t = monday();
    let root = with_root();
    commit(
        &repo,
        "iosdev",
        "iosdev",
        &[("baselines/ios/corp-ios.yaml", Some(&root))],
    );
    let p1 = c.poll(t).await.unwrap().unwrap();
    c.review(p1, "sec1", ReviewState::Approved, t).await.unwrap();
    // The same content, reformatted and next to an unrelated file.
    let reformatted = root.replace(
        "targets: {groups: [phones, mdm-canary, mdm-pilot]}",
        "targets:\n    groups: [phones, mdm-canary, mdm-pilot]",
    );
    commit(
        &repo,
        "iosdev",
        "iosdev",
        &[
            ("baselines/ios/corp-ios.yaml", Some(&reformatted)),
            ("NOTES", Some("x\n")),
        ],
    );
    let p2 = c.poll(t).await.unwrap().unwrap();
    assert!(actions(&c)
        .await
        .iter()
        .any(|(a, d)| a == "reviews_carried_over" && d["reviews"] == 1));
    // sec1's approval still counts: one more from an owner completes T3.
    let p = c.review(p2, "ios1", ReviewState::Approved, t).await.unwrap();
    assert!(matches!(p.phase, Phase::Soaking { ring: 0, .. }), "{:?}", p.approvals);

    // Now the content changes: the carried approvals saw other digests.
    let moved = root.replace("min_length: 8", "min_length: 9");
    commit(
        &repo,
        "iosdev",
        "iosdev",
        &[("baselines/ios/corp-ios.yaml", Some(&moved))],
    );
    let p3 = c.poll(t + Duration::minutes(5)).await.unwrap().unwrap();
    c.reconcile(t + Duration::minutes(5)).await.unwrap();
    let p = c.load(p3).await.unwrap().1.promotion;
    assert_eq!(p.phase, Phase::PendingApproval { ring: 0 });
    let reasons: Vec<&str> = p
        .approvals
        .iter()
        .flat_map(|a| a.rejected.iter().map(|r| r.reason.as_str()))
        .collect();
    assert!(reasons.iter().all(|r| r.contains("digests differ")), "{reasons:?}");
    assert!(!reasons.is_empty());
}

#[tokio::test]
async fn a_promotion_of_a_revision_force_pushed_away_stops_at_once_and_is_never_published() {
    let Rig { repo, c, _dir } = rig().await;
    let t = monday();
    let git = git2::Repository::open(&repo).unwrap();
    let base = git.head().unwrap().peel_to_commit().unwrap();
    let ten = IOS.replace("min_length: 8", "min_length: 4");
    commit(
        &repo,
        "iosdev",
        "iosdev",
        &[("baselines/ios/corp-ios.yaml", Some(&ten))],
    );
    let p1 = c.poll(t).await.unwrap().unwrap();
    // The branch is reset under it, to a different commit on the same base.
    git.reset(base.as_object(), git2::ResetType::Hard, None).unwrap();
    commit(&repo, "ios2", "ios2", &[("README.md", Some("rewritten\n"))]);
    let p2 = c.poll(t).await.unwrap().unwrap();
    assert!(matches!(phase(&c, p1).await, Phase::Superseded { .. }));
    let log = actions(&c).await;
    let (_, details) = log
        .iter()
        .find(|(a, d)| a == "promotion_superseded" && d["reason"].is_string())
        .expect("the supersession says why");
    assert!(
        details["reason"].as_str().unwrap().contains("no longer on branch main"),
        "{details}"
    );
    // A late approval of the dropped promotion changes nothing.
    let err = c.review(p1, "ios1", ReviewState::Approved, t).await.unwrap_err();
    assert!(matches!(err, ControllerError::NotLive { .. }), "{err}");
    c.reconcile(t + Duration::hours(5)).await.unwrap();
    let dropped_digest = c.load(p1).await.unwrap().1.promotion.changes[0].digest.clone().unwrap();
    for ring in ["canary", "pilot", "broad"] {
        assert_ne!(
            desired(&c, ring).await.documents["baseline/corp-ios"].digest,
            dropped_digest
        );
    }
    assert_ne!(p2, p1);
}

#[tokio::test]
async fn a_revision_with_a_duplicate_name_is_not_promoted_and_the_older_promotion_goes_on() {
    let Rig { repo, c, _dir } = rig().await;
    let t = monday();
    let ten = IOS.replace("min_length: 8", "min_length: 10");
    commit(
        &repo,
        "iosdev",
        "iosdev",
        &[("baselines/ios/corp-ios.yaml", Some(&ten))],
    );
    let p1 = c.poll(t).await.unwrap().unwrap();
    let weak = IOS.replace("min_length: 8", "min_length: 0");
    commit(
        &repo,
        "iosdev",
        "iosdev",
        &[("baselines/ios/corp-ios-2.yaml", Some(&weak))],
    );
    let err = c.poll(t).await.unwrap_err();
    let ControllerError::Invalid { errors, .. } = &err else {
        panic!("{err}")
    };
    let validated = tollgate::cli::validate::validate_repo(&repo, Some("HEAD")).unwrap();
    assert_eq!(errors, &validated.errors, "the same errors validate gives");
    assert!(errors[0].message.contains("already used by"), "{errors:?}");
    // No promotion for it; the older one is not superseded by it.
    assert_eq!(phase(&c, p1).await, Phase::PendingApproval { ring: 0 });
    let refused: Vec<_> = actions(&c)
        .await
        .into_iter()
        .filter(|(a, _)| a == "revision_refused")
        .collect();
    assert_eq!(refused.len(), 1);
    // Polling again does not audit it twice.
    assert!(c.poll(t).await.is_err());
    let again = actions(&c)
        .await
        .iter()
        .filter(|(a, _)| a == "revision_refused")
        .count();
    assert_eq!(again, 1);
}

#[tokio::test]
async fn halts_and_approvals_do_not_wait_for_planning() {
    use std::sync::mpsc;
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let entered = std::sync::Mutex::new(entered_tx);
    let release = std::sync::Mutex::new(release_rx);
    let hold = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let holding = hold.clone();
    let hook = Arc::new(move || {
        if holding.load(std::sync::atomic::Ordering::SeqCst) {
            entered.lock().unwrap().send(()).unwrap();
            release.lock().unwrap().recv().unwrap();
        }
    });
    let Rig { repo, c, _dir } = rig_with(|c| c.with_plan_hook(hook)).await;
    let c = Arc::new(c);
    let t = monday();
    let six = IOS.replace("min_length: 8", "min_length: 6");
    commit(
        &repo,
        "iosdev",
        "iosdev",
        &[("baselines/ios/corp-ios.yaml", Some(&six))],
    );
    let p1 = c.poll(t).await.unwrap().unwrap();

    // The next plan is held on the planning thread.
    hold.store(true, std::sync::atomic::Ordering::SeqCst);
    commit(&repo, "iosdev", "iosdev", &[("README.md", Some("x\n"))]);
    let polling = {
        let c = c.clone();
        tokio::spawn(async move { c.poll(t).await })
    };
    tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
        .await
        .unwrap();
    // While it plans, an approval and a halt go through (a deadline guards
    // against a hang; it is not a speed measurement).
    let deadline = std::time::Duration::from_secs(30);
    let reviewed = tokio::time::timeout(deadline, c.review(p1, "ios1", ReviewState::Approved, t)).await;
    assert!(reviewed.is_ok(), "an approval waited for planning");
    let halted = tokio::time::timeout(deadline, c.halt(p1, "dana", "stop", t)).await;
    let p = halted.expect("a halt waited for planning").unwrap();
    assert!(matches!(p.phase, Phase::Halted { .. }), "{:?}", p.phase);
    release_tx.send(()).unwrap();
    let p2 = polling.await.unwrap().unwrap().unwrap();
    assert_ne!(p2, p1);
}

mod property {
    //! No sequence of commits, approvals, supersessions and time publishes
    //! content to a ring without the approvals its diff against that ring
    //! requires. The oracle is written from DESIGN 3 and 6 alone: it knows
    //! which content each commit holds, judges each ring's content change by
    //! the design's tier rules, and counts the raw reviews itself.

    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// corp-ios variants: (has the trust anchor, min_length, lock message).
    const VARIANTS: [(bool, u8, bool); 5] = [
        (false, 8, false),
        (true, 8, false),
        (false, 8, true),
        (true, 8, true),
        (false, 10, false),
    ];

    fn text((root, min, msg): (bool, u8, bool)) -> String {
        let mut t = IOS.replace("min_length: 8", &format!("min_length: {min}"));
        if root {
            t.push_str(&format!(
                "    certs.trusted_roots:\n      - {{name: acme-root-2026, sha256: \"{}\"}}\n",
                "ab".repeat(32)
            ));
        }
        if msg {
            t.push_str("    cosmetic.lock_screen_message: Property of Acme\n");
        }
        t
    }

    /// DESIGN 3: trust anchors are T3 both ways; a loosening adds one to the
    /// catalogue's T2 for the passcode; cosmetic changes are T0.
    fn tier(a: (bool, u8, bool), b: (bool, u8, bool)) -> u8 {
        if a.0 != b.0 || b.1 < a.1 {
            3
        } else if a.1 != b.1 {
            2
        } else {
            0
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Commit(usize, &'static str),
        Approve(&'static str),
        ApprovePair(&'static str, &'static str),
        Wait(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let who = prop::sample::select(vec!["sec1", "sec2", "ios1", "ios2", "iosdev"]);
        prop_oneof![
            2 => (0..VARIANTS.len(), prop::sample::select(vec!["iosdev", "ios2"])).prop_map(|(v, a)| Op::Commit(v, a)),
            1 => who.prop_map(Op::Approve),
            // A security reviewer and an owner together, as T3 asks.
            2 => (prop::sample::select(vec!["sec1", "sec2"]), prop::sample::select(vec!["ios1", "ios2", "iosdev"]))
                .prop_map(|(a, b)| Op::ApprovePair(a, b)),
            3 => (1i64..4).prop_map(Op::Wait),
        ]
    }

    struct Seen {
        /// The variant each commit holds.
        variant: BTreeMap<String, usize>,
        /// What each ring ran after the last check: (revision of corp-ios,
        /// its digest, the ring's last change revision).
        rings: BTreeMap<String, (String, String, String)>,
    }

    /// Checks every ring whose content moved since the last call.
    async fn check(c: &Controller, repo: &Path, seen: &mut Seen) -> Result<(), TestCaseError> {
        let git = git2::Repository::open(repo).unwrap();
        let audit = c.store().audit_after(0, 100_000).await.unwrap();
        for (i, ring) in ["canary", "pilot", "broad"].into_iter().enumerate() {
            let d = desired(c, ring).await;
            let doc = &d.documents["baseline/corp-ios"];
            let now = (
                doc.revision.to_string(),
                doc.digest.to_string(),
                d.base_revision.as_ref().unwrap().to_string(),
            );
            let before = seen.rings.insert(ring.to_string(), now.clone()).unwrap();
            if before.1 == now.1 {
                continue;
            }
            let (old, new) = (VARIANTS[seen.variant[&before.0]], VARIANTS[seen.variant[&now.0]]);
            let need = tier(old, new);
            if need == 0 {
                continue;
            }
            // Who put content into it: every author and committer of the
            // commits the ring had not taken before.
            let mut walk = git.revwalk().unwrap();
            walk.push(git2::Oid::from_str(&now.2).unwrap()).unwrap();
            walk.hide(git2::Oid::from_str(&before.2).unwrap()).unwrap();
            let mut authors = BTreeSet::new();
            for oid in walk {
                let commit = git.find_commit(oid.unwrap()).unwrap();
                authors.insert(commit.author().name().unwrap().to_string());
                authors.insert(commit.committer().name().unwrap().to_string());
            }
            let promoted = audit
                .iter()
                .rev()
                .find(|e| e.action == "ring_promoted" && e.details["ring"] == ring)
                .expect("a publish is audited");
            let id: i64 = promoted.subject.trim_start_matches("promotion/").parse().unwrap();
            // T3: approvals given after the previous ring passed, in this promotion.
            let not_before = (i > 0 && need == 3).then(|| {
                audit
                    .iter()
                    .filter(|e| e.subject == promoted.subject && e.action == "gate_passed")
                    .filter(|e| e.details["ring"] == ["canary", "pilot"][i - 1])
                    .map(|e| e.at)
                    .next_back()
            });
            let mut latest: BTreeMap<String, tollgate::promotion::Review> = BTreeMap::new();
            for r in c.reviews(id).await.unwrap() {
                if r.at <= promoted.at {
                    latest.insert(r.reviewer.clone(), r);
                }
            }
            let counted: Vec<&str> = latest
                .values()
                .filter(|r| r.state == ReviewState::Approved)
                .filter(|r| !authors.contains(&r.reviewer))
                .filter(|r| {
                    r.digests
                        .get("baseline/corp-ios")
                        .cloned()
                        .flatten()
                        .map(|d| d.to_string())
                        == Some(now.1.clone())
                })
                .filter(|r| not_before.flatten().is_none_or(|t| r.at >= t))
                .filter(|_| not_before.is_none() || not_before.flatten().is_some())
                .map(|r| r.reviewer.as_str())
                .collect();
            let security = counted.iter().filter(|r| r.starts_with("sec")).count();
            let owners = counted.iter().filter(|r| r.starts_with("ios")).count();
            match need {
                3 => prop_assert!(
                    counted.len() >= 2 && security >= 1,
                    "{ring} got T3 content ({old:?} -> {new:?}) with approvals {counted:?} (authors {authors:?})"
                ),
                _ => prop_assert!(
                    owners >= 1,
                    "{ring} got T2 content ({old:?} -> {new:?}) with approvals {counted:?} (authors {authors:?})"
                ),
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn no_ring_receives_content_without_the_approvals_its_own_diff_requires(
            approved_anchor in any::<bool>(),
            rest in prop::collection::vec(op(), 1..24)
        ) {
            // Half the cases start with an approved trust anchor soaking in
            // canary, the ground on which supersessions split the rings.
            let mut ops = Vec::new();
            if approved_anchor {
                ops.extend([Op::Commit(1, "iosdev"), Op::ApprovePair("sec1", "ios1")]);
            }
            ops.extend(rest);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let Rig { repo, c, _dir } = rig().await;
                let head = git2::Repository::open(&repo).unwrap().head().unwrap().peel_to_commit().unwrap().id().to_string();
                let mut seen = Seen { variant: [(head.clone(), 0)].into(), rings: BTreeMap::new() };
                for ring in ["canary", "pilot", "broad"] {
                    let d = desired(&c, ring).await;
                    let doc = &d.documents["baseline/corp-ios"];
                    let base = d.base_revision.as_ref().unwrap().to_string();
                    seen.rings.insert(ring.into(), (doc.revision.to_string(), doc.digest.to_string(), base));
                }
                let mut now = monday();
                for op in ops {
                    match op {
                        Op::Commit(v, author) => {
                            let sha = commit(&repo, author, author, &[("baselines/ios/corp-ios.yaml", Some(&text(VARIANTS[v])))]);
                            seen.variant.insert(sha, v);
                            // Errors (nothing to promote) are fine; the rings are checked below.
                            let _ = c.poll(now).await;
                        }
                        Op::Approve(who) => {
                            let live = c.list(Default::default()).await.unwrap();
                            if let Some(p) = live.iter().find(|p| !p.phase.is_terminal()) {
                                let _ = c.review(p.id, who, ReviewState::Approved, now).await;
                            }
                        }
                        Op::ApprovePair(a, b) => {
                            let live = c.list(Default::default()).await.unwrap();
                            if let Some(p) = live.iter().find(|p| !p.phase.is_terminal()) {
                                let _ = c.review(p.id, a, ReviewState::Approved, now).await;
                                let _ = c.review(p.id, b, ReviewState::Approved, now).await;
                            }
                        }
                        Op::Wait(hours) => {
                            now += Duration::hours(hours);
                            c.reconcile(now).await.unwrap();
                        }
                    }
                    check(&c, &repo, &mut seen).await?;
                }
                Ok::<(), TestCaseError>(())
            })?;
        }
    }
}

#[tokio::test]
async fn a_ring_whose_recorded_content_its_revision_does_not_hold_is_not_judged_by_guess() {
    let Rig { repo, c, _dir } = rig().await;
    let mut rings = c.ring_states().await.unwrap();
    let pilot = rings.get_mut("pilot").unwrap();
    let doc = pilot.documents.get_mut("baseline/corp-ios").unwrap();
    doc.digest = tollgate::ids::Digest::from_canonical_bytes(b"not what that revision holds");
    let six = IOS.replace("min_length: 8", "min_length: 6");
    let tip = commit(
        &repo,
        "iosdev",
        "iosdev",
        &[("baselines/ios/corp-ios.yaml", Some(&six))],
    );
    c.poll(monday()).await.unwrap();
    let governing = rings["canary"].base_revision.clone();
    let err = tollgate::controller::planning::plan_revision(
        c.mirror(),
        governing.as_ref(),
        &rings,
        &CommitSha::new(tip),
        None,
        monday(),
    )
    .err()
    .expect("no plan against content nobody can read back");
    let shown = format!("{:#}", anyhow::Error::from(err));
    assert!(
        shown.contains("ring pilot runs baseline/corp-ios") && shown.contains("does not hold that content"),
        "{shown}"
    );
}
