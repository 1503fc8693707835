//! The CLI over real git repositories built by the tests: exit codes, JSON
//! contracts, and snapshots of what people read (text and markdown plans).

use std::path::Path;
use std::process::Command;

use chrono::{TimeZone, Utc};
use serde_json::Value;
use tempfile::TempDir;

use tollgate::cli::plan::{compute_plan, PlanArgs, PlanOutcome};
use tollgate::cli::quickstart::{write_sample_repo, SampleCommit, HISTORY};
use tollgate::render::{plan_markdown, plan_text, Style};
use tollgate::source::git::GitRepo;

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
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

fn sample() -> (TempDir, Vec<String>) {
    let dir = TempDir::new().unwrap();
    let ids = write_sample_repo(dir.path(), HISTORY).unwrap();
    (dir, ids)
}

fn plan_of(repo: &Path, base: Option<&str>, head: &str) -> tollgate::plan::Plan {
    let git = GitRepo::open(repo).unwrap();
    let args = PlanArgs {
        repo: repo.to_path_buf(),
        base: base.map(String::from),
        head: head.into(),
        fleet: None,
        now: now(),
    };
    match compute_plan(&git, &args).unwrap() {
        PlanOutcome::Plan(p) => p,
        PlanOutcome::Invalid { errors, .. } => panic!("invalid: {errors:?}"),
    }
}

#[test]
fn every_sample_commit_plans_with_the_expected_tier() {
    let (dir, ids) = sample();
    let expected = [3, 2, 3, 3, 0, 2, 3, 1, 3, 0];
    let mut base: Option<&str> = None;
    let mut text = String::new();
    let mut markdown = String::new();
    for ((id, commit), tier) in ids.iter().zip(HISTORY).zip(expected) {
        let p = plan_of(dir.path(), base, id);
        assert_eq!(p.tier, tier, "{}", commit.message);
        text.push_str(&format!(
            "=== {}\n{}\n",
            commit.message,
            plan_text(&p, Style { color: false })
        ));
        markdown.push_str(&format!("<!-- {} -->\n{}\n", commit.message, plan_markdown(&p)));
        base = Some(id);
    }
    insta::assert_snapshot!("sample_history_text", text);
    insta::assert_snapshot!("sample_history_markdown", markdown);
}

#[test]
fn a_pure_reformatting_plans_nothing() {
    let (dir, ids) = sample();
    let p = plan_of(dir.path(), Some(&ids[8]), &ids[9]);
    assert!(p.changes.is_empty(), "{:?}", p.changes);
}

#[test]
fn plan_json_keeps_the_contract() {
    let (dir, _) = sample();
    let repo = dir.path().to_str().unwrap();
    let (code, out, err) = tollgate(&[
        "plan", "--repo", repo, "--base", "HEAD~2", "--head", "HEAD~1", "-o", "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tier"], 3);
    assert_eq!(v["base"].as_str().unwrap().len(), 40);
    let c = &v["changes"][0];
    for key in [
        "kind",
        "op",
        "name",
        "path",
        "tier",
        "reasons",
        "requirements",
        "rollback_effective",
        "digest",
        "settings",
    ] {
        assert!(c.get(key).is_some(), "change lacks {key}: {c}");
    }
    assert_eq!(c["kind"], "baseline");
    assert_eq!(c["op"], "modified");
    assert_eq!(c["rollback_effective"], false);
    let s = &c["settings"][0];
    assert_eq!(s["key"], "passcode.max_failed_attempts");
    assert_eq!(s["op"], "added");
    assert_eq!(s["old"], Value::Null);
    assert_eq!(s["new"], 10);
    assert_eq!(s["direction"], "tighten");
    for key in ["approvals", "approver_groups", "window", "soak_multiplier"] {
        assert!(c["requirements"].get(key).is_some(), "requirements lack {key}");
    }
    assert!(c["digest"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn validate_accepts_the_sample_and_its_worktree() {
    let (dir, _) = sample();
    let repo = dir.path().to_str().unwrap();
    let (code, out, err) = tollgate(&["validate", "--repo", repo, "--rev", "HEAD", "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["errors"], serde_json::json!([]));
    assert_eq!(v["conflicts"], serde_json::json!([]));
    let (code, out, _) = tollgate(&["validate", "--repo", repo]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid: 4 baselines, 1 exceptions"), "{out}");
}

const BROKEN: SampleCommit = SampleCommit {
    author: "mallory",
    message: "Break things",
    files: &[(
        "baselines/ios/broken.yaml",
        Some("apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata: {name: broken}\nspec:\n  platform: ios\n  targets: {groups: [g]}\n  settings:\n    passcode.min_length: 99\n"),
    )],
};

#[test]
fn invalid_head_makes_plan_and_validate_exit_1_with_positions() {
    let dir = TempDir::new().unwrap();
    let mut history: Vec<SampleCommit> = Vec::new();
    history.extend(HISTORY.iter().take(2).map(|c| SampleCommit {
        author: c.author,
        message: c.message,
        files: c.files,
    }));
    history.push(BROKEN);
    write_sample_repo(dir.path(), &history).unwrap();
    let repo = dir.path().to_str().unwrap();
    let (code, out, _) = tollgate(&["plan", "--repo", repo, "--base", "HEAD~1", "-o", "json"]);
    assert_eq!(code, 1, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["errors"][0]["path"], "baselines/ios/broken.yaml");
    assert_eq!(v["errors"][0]["line"], 8);
    assert_eq!(v["errors"][0]["column"], 26);
    let (code, out, _) = tollgate(&["validate", "--repo", repo, "--rev", "HEAD"]);
    assert_eq!(code, 1);
    assert!(out.contains("baselines/ios/broken.yaml:8:26: spec.settings.passcode.min_length: must be an integer from 0 to 16, got 99"), "{out}");
}

#[test]
fn conflicting_baselines_are_reported() {
    let dir = TempDir::new().unwrap();
    let other = "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata: {name: exec-ios, owners: [mdm-ios]}\nspec:\n  platform: ios\n  priority: 100\n  targets: {groups: [mdm-pilot, executives]}\n  settings:\n    passcode.min_length: 12\n";
    let mut history: Vec<SampleCommit> = vec![SampleCommit {
        author: "a",
        message: "m",
        files: HISTORY[0].files,
    }];
    let files = [("baselines/ios/exec-ios.yaml", Some(other))];
    history.push(SampleCommit {
        author: "b",
        message: "exec",
        files: &files,
    });
    write_sample_repo(dir.path(), &history).unwrap();
    let repo = dir.path().to_str().unwrap();
    let (code, out, _) = tollgate(&["validate", "--repo", repo, "--rev", "HEAD", "-o", "json"]);
    assert_eq!(code, 1, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], false);
    let c = &v["conflicts"][0];
    assert_eq!(c["key"], "passcode.min_length");
    assert_eq!(c["groups"], serde_json::json!(["mdm-pilot"]));
    let (code, out, _) = tollgate(&[
        "explain",
        "--repo",
        repo,
        "--rev",
        "HEAD",
        "--platform",
        "ios",
        "--group",
        "mdm-pilot",
    ]);
    assert_eq!(code, 1, "a conflicted key fails explain: {out}");
    assert!(out.contains("CONFLICT: corp-ios, exec-ios"), "{out}");
    let (code, out, _) = tollgate(&[
        "explain",
        "--repo",
        repo,
        "--rev",
        "HEAD",
        "--platform",
        "ios",
        "--group",
        "executives",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("passcode.min_length  12"), "{out}");
}

#[test]
fn explain_names_the_winner() {
    let (dir, _) = sample();
    let repo = dir.path().to_str().unwrap();
    let (code, out, err) = tollgate(&[
        "explain",
        "--repo",
        repo,
        "--rev",
        "HEAD",
        "--platform",
        "ios",
        "--group",
        "mdm-canary",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let settings = v["explanation"]["settings"].as_array().unwrap();
    let min = settings.iter().find(|s| s["key"] == "passcode.min_length").unwrap();
    assert_eq!(min["value"], 8);
    assert_eq!(min["baseline"], "corp-ios");
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, err) = tollgate(&["plan"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = tollgate(&["validate", "-o", "yaml"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn a_change_is_judged_by_the_base_policy_not_its_own() {
    // A commit that adds a permissive repo-local policy AND loosens a
    // setting: the loosening is judged by the builtin policy of the base,
    // and the policy file itself is a T3 governance change.
    let permissive = r#"package tollgate.risk
import rego.v1
decision := {"tier": 0, "reasons": ["anything goes"], "requirements": {"approvals": 0, "approver_groups": [], "window": null, "soak_multiplier": 1.0, "fresh_approval_per_ring": false}, "rollback_effective": true, "violations": []}
"#;
    let loosened = HISTORY[0].files[1]
        .1
        .unwrap()
        .replace("passcode.min_length: 6", "passcode.min_length: 4");
    let files: &'static [(&str, Option<&str>)] = Box::leak(Box::new([
        ("policy/risk.rego", Some(permissive)),
        (
            "baselines/ios/corp-ios.yaml",
            Some(Box::leak(loosened.into_boxed_str()) as &str),
        ),
    ]));
    let dir = TempDir::new().unwrap();
    let history = [
        SampleCommit {
            author: "a",
            message: "m",
            files: HISTORY[0].files,
        },
        SampleCommit {
            author: "eve",
            message: "sneaky",
            files,
        },
    ];
    write_sample_repo(dir.path(), &history).unwrap();
    let p = plan_of(dir.path(), Some("HEAD~1"), "HEAD");
    let ios = p.changes.iter().find(|c| c.name == "corp-ios").unwrap();
    assert_eq!(ios.tier, 3, "loosening judged by the builtin policy: {:?}", ios.reasons);
    let gov = p.changes.iter().find(|c| c.path == "policy/risk.rego").unwrap();
    assert_eq!(gov.tier, 3);
    // Once the policy is in force, it judges the next change.
    let more = [
        SampleCommit {
            author: "a",
            message: "m",
            files: HISTORY[0].files,
        },
        SampleCommit {
            author: "eve",
            message: "sneaky",
            files,
        },
        SampleCommit {
            author: "eve",
            message: "next",
            files: HISTORY[1].files,
        },
    ];
    let dir2 = TempDir::new().unwrap();
    write_sample_repo(dir2.path(), &more).unwrap();
    let p = plan_of(dir2.path(), Some("HEAD~1"), "HEAD");
    assert_eq!(p.tier, 0, "{:?}", p.changes);
    assert_eq!(p.changes[0].reasons, ["anything goes"]);
}

fn repo_with(files: &[(&str, Option<&str>)]) -> TempDir {
    let dir = TempDir::new().unwrap();
    let history = [
        SampleCommit {
            author: "a",
            message: "base",
            files: HISTORY[0].files,
        },
        SampleCommit {
            author: "b",
            message: "change",
            files,
        },
    ];
    write_sample_repo(dir.path(), &history).unwrap();
    dir
}

#[test]
fn duplicate_names_and_unknown_owners_fail_validation() {
    let dup = "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata:\n  name: corp-ios\n  owners: [mdm-nobody]\nspec:\n  platform: ios\n  targets: {groups: [x]}\n  settings: {passcode.required: true}\n";
    let dir = repo_with(&[("baselines/ios/copy.yaml", Some(dup))]);
    let (code, out, _) = tollgate(&[
        "validate",
        "--repo",
        dir.path().to_str().unwrap(),
        "--rev",
        "HEAD",
        "-o",
        "json",
    ]);
    assert_eq!(code, 1, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let messages: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("name `corp-ios` is already used")),
        "{messages:?}"
    );
    let dup_err = &v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["message"].as_str().unwrap().contains("already used"))
        .unwrap();
    assert_eq!(dup_err["line"], 4, "{dup_err}");
}

#[test]
fn owners_must_be_approver_groups() {
    let stray = "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata:\n  name: kiosk-ios\n  owners: [mdm-nobody]\nspec:\n  platform: ios\n  targets: {groups: [kiosks]}\n  settings: {passcode.required: true}\n";
    let dir = repo_with(&[("baselines/ios/kiosk.yaml", Some(stray))]);
    let (code, out, _) = tollgate(&["validate", "--repo", dir.path().to_str().unwrap(), "--rev", "HEAD"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("baselines/ios/kiosk.yaml:5:12: owner `mdm-nobody` is not an approver group of tollgate.yaml"),
        "{out}"
    );
}

#[test]
fn exception_must_exempt_something_its_baseline_sets() {
    let exc = "apiVersion: tollgate.dev/v1alpha1\nkind: Exception\nmetadata: {name: odd}\nspec:\n  baseline: corp-ios\n  settings: [passcode.history]\n  scope: {devices: [serial:1]}\n  reason: testing\n  expires: 2026-12-01T00:00:00Z\n";
    let dir = repo_with(&[("exceptions/odd.yaml", Some(exc))]);
    let (code, out, _) = tollgate(&["validate", "--repo", dir.path().to_str().unwrap(), "--rev", "HEAD"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not set `passcode.history`"), "{out}");
}

#[test]
fn blast_radius_from_a_fleet_file_raises_the_tier() {
    let (dir, _) = sample();
    let repo = dir.path().to_str().unwrap();
    let fleet = dir.path().join("fleet.yaml");
    // iOS tightening of min_length: T2 alone; over 10% of the fleet adds one.
    std::fs::write(
        &fleet,
        "devices: 1000\ngroups: {all-corporate-iphones: 300, mdm-canary: 10, mdm-pilot: 40}\n",
    )
    .unwrap();
    let (code, out, err) = tollgate(&[
        "plan",
        "--repo",
        repo,
        "--base",
        "HEAD~9",
        "--head",
        "HEAD~8",
        "--fleet",
        fleet.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["changes"][0]["tier"], 3, "{}", v["changes"][0]["reasons"]);
    std::fs::write(
        &fleet,
        "devices: 100000\ngroups: {all-corporate-iphones: 300, mdm-canary: 10, mdm-pilot: 40}\n",
    )
    .unwrap();
    let (_, out, _) = tollgate(&[
        "plan",
        "--repo",
        repo,
        "--base",
        "HEAD~9",
        "--head",
        "HEAD~8",
        "--fleet",
        fleet.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["changes"][0]["tier"], 2);
    std::fs::write(&fleet, "devices: many\n").unwrap();
    let (code, _, err) = tollgate(&[
        "plan",
        "--repo",
        repo,
        "--base",
        "HEAD~9",
        "--fleet",
        fleet.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("fleet.yaml"), "{err}");
}

#[test]
fn worktree_symlinks_are_rejected_not_followed() {
    let (dir, _) = sample();
    let secret = TempDir::new().unwrap();
    std::fs::write(secret.path().join("x.yaml"), "not: governed").unwrap();
    std::os::unix::fs::symlink(secret.path().join("x.yaml"), dir.path().join("baselines/ios/evil.yaml")).unwrap();
    std::os::unix::fs::symlink(secret.path(), dir.path().join("baselines/outside")).unwrap();
    let (code, out, _) = tollgate(&["validate", "--repo", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("baselines/ios/evil.yaml:1:1: is a symbolic link"), "{out}");
    assert!(out.contains("baselines/outside:1:1: is a symbolic link"), "{out}");
    assert!(!out.contains("not: governed"));
}

#[test]
fn plan_of_a_missing_revision_names_it() {
    let (dir, _) = sample();
    let (code, _, err) = tollgate(&[
        "plan",
        "--repo",
        dir.path().to_str().unwrap(),
        "--base",
        "no-such-branch",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no-such-branch"), "{err}");
}

#[test]
fn quickstart_without_run_writes_repo_config_and_tokens() {
    let dir = TempDir::new().unwrap();
    let target = dir.path().join("qs");
    let (code, out, err) = tollgate(&["quickstart", "--no-run", "--dir", target.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("=== ").count(), HISTORY.len(), "{out}");
    assert!(out.contains("T3 CRITICAL"), "{out}");
    assert!(out.contains("tollgate approve 1"), "{out}");
    let config = std::fs::read_to_string(target.join("controller.yaml")).unwrap();
    let tokens = std::fs::read_to_string(target.join("tokens.env")).unwrap();
    // Only hashes in the config; the tokens themselves only in the 0600 file.
    let token = tokens.lines().next().unwrap().split_once('=').unwrap().1;
    assert!(!config.contains(token));
    assert!(config.contains(&tollgate::controller::config::token_hash(token)));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(target.join("tokens.env"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    tollgate::controller::ControllerConfig::load(&target.join("controller.yaml")).unwrap();
    // A second quickstart into the same place refuses rather than overwrite.
    let (code, _, err) = tollgate(&["quickstart", "--no-run", "--dir", target.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn quickstart_runs_the_controller_which_governs_the_commits_after_adoption() {
    use std::io::{BufRead, BufReader};
    let dir = TempDir::new().unwrap();
    let target = dir.path().join("qs");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["quickstart", "--dir", target.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let server = loop {
        let line = lines.next().expect("quickstart printed its server").unwrap();
        if let Some(url) = line.strip_prefix("tollgate: serving the API on ") {
            break url.trim().to_string();
        }
    };
    let tokens = std::fs::read_to_string(target.join("tokens.env")).unwrap();
    let ops = tokens
        .lines()
        .find_map(|l| l.strip_prefix("TOKEN_OPS="))
        .unwrap()
        .to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let promotions = loop {
        let got = ureq::get(&format!("{server}/v1/promotions"))
            .header("Authorization", format!("Bearer {ops}"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .and_then(|t| serde_json::from_str::<Value>(&t).ok());
        if let Some(v) = got.filter(|v| v["promotions"].as_array().is_some_and(|a| !a.is_empty())) {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "no promotion appeared");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    // The tour adopts its setup commit, then commits a passcode change: T2.
    let p = &promotions["promotions"][0];
    assert_eq!(p["tier"], 2, "the tour's first change after the adopted state: {p}");
    assert_eq!(p["changes"][0]["key"], "baseline/corp-ios", "{p}");
    assert_eq!(p["author"], "sam", "{p}");
}
