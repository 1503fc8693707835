//! Every command reads a revision through one validation path: `plan`,
//! `explain --rev` and `validate --rev` agree on what is invalid, with the
//! same errors, whatever part of the revision a change touched.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;

use tollgate::cli::quickstart::{write_sample_repo, SampleCommit};
use tollgate::source::{read_revision, GitRepo, RevisionError};

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

/// The config without the `mdm-ios` group that owns corp-ios.
const CONFIG_WITHOUT_IOS_OWNERS: &str = "apiVersion: tollgate.dev/v1alpha1
kind: Config
metadata: {name: acme}
rings:
  - {name: canary, selector: {groups: [mdm-canary]}, soak: 2h, gate: {min_applied: 0.95, max_noncompliant_increase: 0.01}}
  - {name: broad, selector: {all: true}}
approvers:
  mdm-security: {users: [sec1]}
";

const CORP_IOS: &str = "apiVersion: tollgate.dev/v1alpha1
kind: Baseline
metadata:
  name: corp-ios
  owners: [mdm-ios]
spec:
  platform: ios
  priority: 100
  targets: {groups: [staff, mdm-canary]}
  settings:
    passcode.required: true
    passcode.min_length: 6
";

/// A second file reusing corp-ios's name, with a loosened passcode.
const CORP_IOS_COPY: &str = "apiVersion: tollgate.dev/v1alpha1
kind: Baseline
metadata:
  name: corp-ios
  owners: [mdm-ios]
spec:
  platform: ios
  priority: 100
  targets: {groups: [staff, mdm-canary]}
  settings:
    passcode.required: true
    passcode.min_length: 0
";

const KIOSK_STRAY_OWNER: &str = "apiVersion: tollgate.dev/v1alpha1
kind: Baseline
metadata:
  name: kiosk-ios
  owners: [mdm-nobody]
spec:
  platform: ios
  targets: {groups: [kiosks]}
  settings: {passcode.required: true}
";

const EXCEPTION: &str = "apiVersion: tollgate.dev/v1alpha1
kind: Exception
metadata: {name: staff-short-passcode}
spec:
  baseline: corp-ios
  settings: [passcode.min_length]
  scope: {groups: [staff]}
  reason: Field devices with gloves
  expires: 2026-12-01T00:00:00Z
";

/// A baseline at equal priority that disagrees with corp-ios for `staff`.
const STAFF_IOS_CONFLICTING: &str = "apiVersion: tollgate.dev/v1alpha1
kind: Baseline
metadata:
  name: staff-ios
  owners: [mdm-ios]
spec:
  platform: ios
  priority: 100
  targets: {groups: [staff]}
  settings:
    passcode.min_length: 10
";

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

fn commit<'a>(author: &'a str, message: &'a str, files: &'a [(&'a str, Option<&'a str>)]) -> SampleCommit<'a> {
    SampleCommit { author, message, files }
}

fn repo(history: &[SampleCommit]) -> TempDir {
    let dir = TempDir::new().unwrap();
    write_sample_repo(dir.path(), history).unwrap();
    dir
}

const BASE_FILES: &[(&str, Option<&str>)] = &[
    ("tollgate.yaml", Some(CONFIG)),
    ("baselines/ios/corp-ios.yaml", Some(CORP_IOS)),
];

/// The base commit, then `files` on top as HEAD.
fn base_then(files: &[(&str, Option<&str>)]) -> TempDir {
    repo(&[commit("priya", "base", BASE_FILES), commit("mallory", "change", files)])
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// `validate --rev HEAD -o json`: its exit code and errors.
fn validate_head(repo: &Path) -> (i32, Value) {
    let (code, out, err) = tollgate(&[
        "validate",
        "--repo",
        repo.to_str().unwrap(),
        "--rev",
        "HEAD",
        "-o",
        "json",
    ]);
    assert!(err.is_empty(), "{err}");
    (code, json(&out)["errors"].clone())
}

/// `plan --base HEAD~1 -o json` must refuse with exactly validate's errors,
/// and the text form must list the same lines validate prints.
fn assert_plan_refuses_like_validate(repo: &Path, expect: &str) {
    let (vcode, verrors) = validate_head(repo);
    assert_eq!(vcode, 1, "validate rejects the head: {verrors}");
    let messages: Vec<&str> = verrors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(messages.iter().any(|m| m.contains(expect)), "{messages:?}");

    let r = repo.to_str().unwrap();
    let (code, out, err) = tollgate(&["plan", "--repo", r, "--base", "HEAD~1", "-o", "json"]);
    assert_eq!(code, 1, "plan of an invalid head exits 1: {out}{err}");
    let plan = json(&out);
    assert_eq!(plan["valid"], false, "{plan}");
    assert_eq!(
        plan["errors"], verrors,
        "plan and validate --rev HEAD give the same errors"
    );
    assert!(plan.get("changes").is_none(), "an invalid head has no plan: {plan}");
    assert_eq!(plan["head"].as_str().unwrap().len(), 40);

    let (code, text, _) = tollgate(&["plan", "--repo", r, "--base", "HEAD~1"]);
    assert_eq!(code, 1, "{text}");
    let (_, vtext, _) = tollgate(&["validate", "--repo", r, "--rev", "HEAD"]);
    for e in verrors.as_array().unwrap() {
        let line = format!(
            "{}:{}:{}: {}",
            e["path"].as_str().unwrap(),
            e["line"],
            e["column"],
            e["message"].as_str().unwrap()
        );
        assert!(text.contains(&line), "plan text lacks {line:?}:\n{text}");
        assert!(vtext.contains(&line), "validate text lacks {line:?}:\n{vtext}");
    }
}

#[test]
fn plan_refuses_a_second_file_reusing_a_baseline_name() {
    let dir = base_then(&[("baselines/ios/copy.yaml", Some(CORP_IOS_COPY))]);
    assert_plan_refuses_like_validate(dir.path(), "name `corp-ios` is already used");
}

#[test]
fn plan_refuses_a_reused_name_whichever_file_sorts_first() {
    // The copy sorts after the original here; above it sorts before it.
    let dir = base_then(&[("baselines/ios/zz-copy.yaml", Some(CORP_IOS_COPY))]);
    assert_plan_refuses_like_validate(dir.path(), "name `corp-ios` is already used");
}

#[test]
fn plan_refuses_an_owner_that_is_no_approver_group() {
    let dir = base_then(&[("baselines/ios/kiosk.yaml", Some(KIOSK_STRAY_OWNER))]);
    assert_plan_refuses_like_validate(dir.path(), "owner `mdm-nobody` is not an approver group");
}

#[test]
fn plan_refuses_a_config_change_that_strands_an_unchanged_baselines_owners() {
    let dir = base_then(&[("tollgate.yaml", Some(CONFIG_WITHOUT_IOS_OWNERS))]);
    assert_plan_refuses_like_validate(dir.path(), "owner `mdm-ios` is not an approver group");
}

#[test]
fn plan_refuses_removing_a_baseline_an_unchanged_exception_names() {
    let dir = repo(&[
        commit("priya", "base", BASE_FILES),
        commit("omar", "exception", &[("exceptions/staff.yaml", Some(EXCEPTION))]),
        commit("mallory", "remove", &[("baselines/ios/corp-ios.yaml", None)]),
    ]);
    assert_plan_refuses_like_validate(dir.path(), "exception names baseline `corp-ios`, which does not exist");
}

#[test]
fn plan_refuses_a_head_whose_unchanged_files_were_already_invalid() {
    // The duplicate came in before this change; the change itself is clean.
    let dir = repo(&[
        commit("priya", "base", BASE_FILES),
        commit("mallory", "copy", &[("baselines/ios/copy.yaml", Some(CORP_IOS_COPY))]),
        commit(
            "ana",
            "kiosk",
            &[(
                "baselines/ios/kiosk.yaml",
                Some(&KIOSK_STRAY_OWNER.replace("mdm-nobody", "mdm-ios")),
            )],
        ),
    ]);
    assert_plan_refuses_like_validate(dir.path(), "name `corp-ios` is already used");
}

#[test]
fn a_first_revision_is_refused_like_any_other() {
    let dir = repo(&[commit(
        "priya",
        "base",
        &[
            ("tollgate.yaml", Some(CONFIG)),
            ("baselines/ios/corp-ios.yaml", Some(CORP_IOS)),
            ("baselines/ios/kiosk.yaml", Some(KIOSK_STRAY_OWNER)),
        ],
    )]);
    let (vcode, verrors) = validate_head(dir.path());
    assert_eq!(vcode, 1);
    let git = GitRepo::open(dir.path()).unwrap();
    let args = tollgate::cli::PlanArgs {
        repo: dir.path().to_path_buf(),
        base: None,
        head: "HEAD".into(),
        fleet: None,
        now: chrono::Utc::now(),
    };
    match tollgate::cli::plan::compute_plan(&git, &args).unwrap() {
        tollgate::cli::plan::PlanOutcome::Invalid { errors, .. } => {
            assert_eq!(serde_json::to_value(errors).unwrap(), verrors)
        }
        other => panic!("a first revision with a stray owner was planned: {other:?}"),
    }
}

#[test]
fn a_change_that_repairs_an_invalid_base_is_planned() {
    // A base that is itself invalid (the copy) must not block the fix.
    let dir = repo(&[
        commit("priya", "base", BASE_FILES),
        commit("mallory", "copy", &[("baselines/ios/copy.yaml", Some(CORP_IOS_COPY))]),
        commit("sam", "remove the copy", &[("baselines/ios/copy.yaml", None)]),
    ]);
    let r = dir.path().to_str().unwrap();
    let (code, out, err) = tollgate(&["plan", "--repo", r, "--base", "HEAD~1", "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let plan = json(&out);
    assert!(
        plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "corp-ios"),
        "{plan}"
    );
}

#[test]
fn read_revision_gives_validates_errors_and_a_whole_snapshot() {
    let dir = repo(&[
        commit("priya", "base", BASE_FILES),
        commit("mallory", "copy", &[("baselines/ios/copy.yaml", Some(CORP_IOS_COPY))]),
    ]);
    let git = GitRepo::open(dir.path()).unwrap();
    let head = git.resolve("HEAD").unwrap();
    let (_, verrors) = validate_head(dir.path());
    match read_revision(&git, &head) {
        Err(RevisionError::Invalid { revision, errors }) => {
            assert_eq!(revision, head);
            assert_eq!(serde_json::to_value(errors).unwrap(), verrors);
        }
        other => panic!("an invalid revision was read: {other:?}"),
    }
    let base = git.resolve("HEAD~1").unwrap();
    let snap = read_revision(&git, &base).unwrap();
    assert_eq!(snap.baselines.len(), 1);
    assert!(snap.config.is_some());
}

#[test]
fn explain_of_an_invalid_revision_gives_validates_errors_and_no_explanation() {
    let dir = base_then(&[("baselines/ios/copy.yaml", Some(CORP_IOS_COPY))]);
    let r = dir.path().to_str().unwrap();
    let (_, verrors) = validate_head(dir.path());
    let args = [
        "explain",
        "--repo",
        r,
        "--rev",
        "HEAD",
        "--platform",
        "ios",
        "--group",
        "staff",
    ];
    let (code, out, _) = tollgate(&[&args[..], &["-o", "json"]].concat());
    assert_eq!(code, 1, "{out}");
    let v = json(&out);
    assert_eq!(v["errors"], verrors);
    assert!(
        v["explanation"].is_null(),
        "which corp-ios wins is not for explain to guess: {v}"
    );
    let (code, text, _) = tollgate(&args);
    assert_eq!(code, 1);
    assert!(text.contains("name `corp-ios` is already used"), "{text}");
    assert!(
        !text.contains("passcode.min_length"),
        "no effective settings of an invalid revision: {text}"
    );
}

#[test]
fn explain_reports_cross_check_errors_as_validate_does() {
    // Before, explain only parsed files: an exception naming a baseline that
    // does not exist went unreported.
    let dir = repo(&[
        commit("priya", "base", BASE_FILES),
        commit("omar", "exception", &[("exceptions/staff.yaml", Some(EXCEPTION))]),
        commit("mallory", "remove", &[("baselines/ios/corp-ios.yaml", None)]),
    ]);
    let r = dir.path().to_str().unwrap();
    let (_, verrors) = validate_head(dir.path());
    let (code, out, _) = tollgate(&[
        "explain",
        "--repo",
        r,
        "--rev",
        "HEAD",
        "--platform",
        "ios",
        "--group",
        "staff",
        "-o",
        "json",
    ]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(json(&out)["errors"], verrors);
}

#[test]
fn plan_shows_conflicts_at_head_as_validate_reports_them() {
    let dir = base_then(&[("baselines/ios/staff-ios.yaml", Some(STAFF_IOS_CONFLICTING))]);
    let r = dir.path().to_str().unwrap();
    let (vcode, vout, _) = tollgate(&["validate", "--repo", r, "--rev", "HEAD", "-o", "json"]);
    assert_eq!(vcode, 1, "validate fails on a conflict: {vout}");
    let conflicts = json(&vout)["conflicts"].clone();
    assert_eq!(conflicts.as_array().unwrap().len(), 1, "{conflicts}");

    let (code, out, err) = tollgate(&["plan", "--repo", r, "--base", "HEAD~1", "-o", "json"]);
    assert_eq!(code, 0, "a conflict is judged, not refused: {out}{err}");
    let plan = json(&out);
    assert_eq!(plan["conflicts"], conflicts, "plan shows validate's conflicts");
    let (_, text, _) = tollgate(&["plan", "--repo", r, "--base", "HEAD~1"]);
    assert!(
        text.contains("conflict: passcode.min_length on ios for groups staff at priority 100"),
        "{text}"
    );
    let (_, md, _) = tollgate(&["plan", "--repo", r, "--base", "HEAD~1", "-o", "markdown"]);
    assert!(md.contains("Conflicts at head"), "{md}");
}

#[test]
fn a_valid_plan_lists_no_conflicts() {
    let dir = base_then(&[(
        "baselines/ios/kiosk.yaml",
        Some(&KIOSK_STRAY_OWNER.replace("mdm-nobody", "mdm-ios")),
    )]);
    let r = dir.path().to_str().unwrap();
    let (code, out, err) = tollgate(&["plan", "--repo", r, "--base", "HEAD~1", "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let plan = json(&out);
    assert_eq!(plan["conflicts"], serde_json::json!([]));
    assert_eq!(plan["changes"][0]["name"], "kiosk-ios");
}

#[test]
fn the_base_a_plan_derives_from_the_head_is_the_base_read_whole() {
    // read_pair parses the files both revisions share once; what it gives
    // must be what reading the base on its own gives, for every pair of
    // revisions of a history with moves, deletions and invalid states.
    use tollgate::catalog::Catalog;
    use tollgate::cli::quickstart::HISTORY;
    use tollgate::snapshot::Snapshot;
    let mut history: Vec<SampleCommit> = HISTORY.iter().map(|c| commit(c.author, c.message, c.files)).collect();
    history.push(commit(
        "mallory",
        "copy",
        &[("baselines/ios/copy.yaml", Some(CORP_IOS_COPY))],
    ));
    history.push(commit("sam", "drop the copy", &[("baselines/ios/copy.yaml", None)]));
    let dir = repo(&history);
    let git = GitRepo::open(dir.path()).unwrap();
    let revs: Vec<_> = (0..history.len())
        .map(|i| git.resolve(&format!("HEAD~{i}")).unwrap())
        .collect();
    let mut compared = 0;
    for base in &revs {
        let (whole, whole_errors) = Snapshot::checked(&git.read_governed(base).unwrap(), Catalog::builtin());
        for head in &revs {
            match tollgate::source::read_pair(&git, base, head) {
                Ok(pair) => {
                    assert_eq!(pair.base, whole, "base {base} planned from head {head}");
                    assert_eq!(pair.base_errors, whole_errors, "base {base} from head {head}");
                    assert_eq!(Ok(pair.head), read_revision(&git, head).map_err(|e| e.to_string()));
                    compared += 1;
                }
                Err(RevisionError::Invalid { revision, .. }) => assert_eq!(&revision, head),
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(compared >= 100, "only {compared} pairs had a valid head");
}

#[test]
fn a_revision_read_from_a_known_valid_one_is_the_revision_read_whole() {
    // The cheap path a long-running reader can take: only the files that
    // differ from a revision it already validated. Same result, same errors.
    use tollgate::cli::quickstart::HISTORY;
    use tollgate::source::{read_valid, read_valid_from};
    let mut history: Vec<SampleCommit> = HISTORY.iter().map(|c| commit(c.author, c.message, c.files)).collect();
    history.push(commit(
        "omar",
        "exception",
        &[("exceptions/staff.yaml", Some(EXCEPTION))],
    ));
    history.push(commit(
        "mallory",
        "copy",
        &[("baselines/ios/copy.yaml", Some(CORP_IOS_COPY))],
    ));
    history.push(commit("sam", "drop the copy", &[("baselines/ios/copy.yaml", None)]));
    history.push(commit(
        "priya",
        "strand owners",
        &[("tollgate.yaml", Some(CONFIG_WITHOUT_IOS_OWNERS))],
    ));
    history.push(commit("priya", "restore", &[("tollgate.yaml", Some(CONFIG))]));
    history.push(commit(
        "ana",
        "zz copy",
        &[("baselines/ios/zz-copy.yaml", Some(CORP_IOS_COPY))],
    ));
    let dir = repo(&history);
    let git = GitRepo::open(dir.path()).unwrap();
    let revs: Vec<_> = (0..history.len())
        .map(|i| git.resolve(&format!("HEAD~{i}")).unwrap())
        .collect();
    let outcome = |r: Result<tollgate::snapshot::ValidRevision, RevisionError<tollgate::source::GitError>>| match r {
        Ok(v) => Ok(v),
        Err(RevisionError::Invalid { errors, .. }) => Err(errors),
        Err(e) => panic!("{e}"),
    };
    let (mut known_valid, mut invalid_heads) = (0, 0);
    for known in &revs {
        let Ok(known) = read_valid(&git, known) else { continue };
        known_valid += 1;
        for rev in &revs {
            let derived = outcome(read_valid_from(&git, &known, rev));
            invalid_heads += usize::from(derived.is_err());
            assert_eq!(
                derived,
                outcome(read_valid(&git, rev)),
                "{rev} read from {}",
                known.revision()
            );
        }
    }
    assert!(
        known_valid >= 8 && invalid_heads >= 10,
        "{known_valid} valid, {invalid_heads} invalid"
    );
}

#[test]
fn a_large_revision_read_in_parts_is_the_revision_read_at_once() {
    // Large revisions are read and parsed in parts, one per core; the
    // result must be a read in one go, errors and all.
    use tollgate::catalog::Catalog;
    use tollgate::snapshot::Snapshot;
    let texts: Vec<(String, String)> = (0..300)
        .map(|i| {
            let name = format!("b{i:03}");
            let text = CORP_IOS.replace("name: corp-ios", &format!("name: {name}"));
            (format!("baselines/ios/{name}.yaml"), text)
        })
        .collect();
    let mut files: Vec<(&str, Option<&str>)> = vec![("tollgate.yaml", Some(CONFIG))];
    files.extend(texts.iter().map(|(p, t)| (p.as_str(), Some(t.as_str()))));
    let late_copy = CORP_IOS.replace("name: corp-ios", "name: b007");
    let dir = repo(&[
        commit("priya", "many", &files),
        commit(
            "mallory",
            "a late copy",
            &[("baselines/ios/zz/b007.yaml", Some(&late_copy))],
        ),
    ]);
    let git = GitRepo::open(dir.path()).unwrap();
    for rev in ["HEAD~1", "HEAD"] {
        let rev = git.resolve(rev).unwrap();
        let (whole, errors) = Snapshot::checked(&git.read_governed(&rev).unwrap(), Catalog::builtin());
        match read_revision(&git, &rev) {
            Ok(snap) => {
                assert!(errors.is_empty(), "{errors:?}");
                assert_eq!(snap, whole);
                assert_eq!(snap.baselines.len(), 300);
            }
            Err(RevisionError::Invalid { errors: got, .. }) => {
                assert_eq!(got, errors);
                assert!(got[0].message.contains("`b007` is already used"), "{got:?}");
            }
            Err(e) => panic!("{e}"),
        }
    }
}
