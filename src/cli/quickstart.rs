//! `tollgate quickstart`: a sample governed repo with a realistic history,
//! the plan of every commit in it, then (unless `--no-run`) the tour of
//! [`super::tour`]: the controller and a simulated fleet, a change through
//! every ring, a bad change halted by its gate and a rollback.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};

use super::plan::{compute_plan, PlanArgs, PlanOutcome};
use super::tour::{run_tour, TourOptions};
use super::Exit;
use crate::controller::config::{token_hash, Role};
use crate::render::{plan_text, Style};
use crate::source::git::GitRepo;

/// One commit of the sample history: files written (Some) or deleted (None).
pub struct SampleCommit<'a> {
    pub author: &'a str,
    pub message: &'a str,
    pub files: &'a [(&'a str, Option<&'a str>)],
}

const CONFIG: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Config
metadata: {name: acme}
rings:
  - {name: canary, selector: {groups: [mdm-canary]}, soak: 2h,  gate: {min_applied: 0.95, max_noncompliant_increase: 0.01}}
  - {name: pilot,  selector: {groups: [mdm-pilot]},  soak: 24h, gate: {min_applied: 0.95, max_noncompliant_increase: 0.01}}
  - {name: broad,  selector: {all: true}}
approvers:
  mdm-security: {forge_team: acme/mdm-security, users: [sec1]}
  mdm-ios:      {forge_team: acme/mdm-ios, users: [ios1]}
  mdm-android:  {forge_team: acme/mdm-android, users: [android1]}
  mdm-windows:  {forge_team: acme/mdm-windows, users: [windows1]}
  mdm-macos:    {forge_team: acme/mdm-macos, users: [macos1]}
  oncall:       {users: [dana, eli]}
windows:
  business-hours: {days: [mon, tue, wed, thu], start: "09:00", end: "16:00", tz: Europe/Berlin}
freezes:
  - {from: 2026-12-20, to: 2027-01-04, reason: year-end freeze}
"#;

const CONFIG_SHORT_SOAK: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Config
metadata: {name: acme}
rings:
  - {name: canary, selector: {groups: [mdm-canary]}, soak: 1h,  gate: {min_applied: 0.95, max_noncompliant_increase: 0.01}}
  - {name: pilot,  selector: {groups: [mdm-pilot]},  soak: 24h, gate: {min_applied: 0.95, max_noncompliant_increase: 0.01}}
  - {name: broad,  selector: {all: true}}
approvers:
  mdm-security: {forge_team: acme/mdm-security, users: [sec1]}
  mdm-ios:      {forge_team: acme/mdm-ios, users: [ios1]}
  mdm-android:  {forge_team: acme/mdm-android, users: [android1]}
  mdm-windows:  {forge_team: acme/mdm-windows, users: [windows1]}
  mdm-macos:    {forge_team: acme/mdm-macos, users: [macos1]}
  oncall:       {users: [dana, eli]}
windows:
  business-hours: {days: [mon, tue, wed, thu], start: "09:00", end: "16:00", tz: Europe/Berlin}
freezes:
  - {from: 2026-12-20, to: 2027-01-04, reason: year-end freeze}
"#;

const IOS_V1: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Baseline
metadata:
  name: corp-ios
  owners: [mdm-ios]
spec:
  platform: ios
  priority: 100
  targets:
    groups: [all-corporate-iphones, mdm-canary, mdm-pilot]
  settings:
    passcode.required: true
    passcode.min_length: 6
    os.min_version: "17.4"
    apps.blocked: [com.example.filesharing]
"#;

const IOS_V2: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Baseline
metadata:
  name: corp-ios
  owners: [mdm-ios]
spec:
  platform: ios
  priority: 100
  targets:
    groups: [all-corporate-iphones, mdm-canary, mdm-pilot]
  settings:
    passcode.required: true
    passcode.min_length: 8
    os.min_version: "17.4"
    apps.blocked: [com.example.filesharing]
"#;

const IOS_V3_MOVED: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Baseline
metadata:
  name: corp-ios
  owners: [mdm-ios]
spec:
  platform: ios
  priority: 100
  targets:
    groups: [all-corporate-iphones, mdm-canary, mdm-pilot]
  settings:
    passcode.required: true
    passcode.min_length: 8
    os.min_version: "17.4"
    apps.blocked: [com.example.filesharing, com.dropbox.Dropbox]
"#;

const IOS_V4_WIPE: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Baseline
metadata:
  name: corp-ios
  owners: [mdm-ios]
spec:
  platform: ios
  priority: 100
  targets:
    groups: [all-corporate-iphones, mdm-canary, mdm-pilot]
  settings:
    passcode.required: true
    passcode.min_length: 8
    passcode.max_failed_attempts: 10
    os.min_version: "17.4"
    apps.blocked: [com.example.filesharing, com.dropbox.Dropbox]
"#;

const ANDROID_V1: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Baseline
metadata:
  name: corp-android
  owners: [mdm-android]
spec:
  platform: android
  priority: 100
  targets:
    groups: [all-corporate-android, mdm-canary, mdm-pilot]
  settings:
    passcode.required: true
    passcode.min_length: 6
    encryption.required: true
    os.min_version: "13"
    apps.untrusted_sources: false
    integrity.block_compromised: true
"#;

const ANDROID_V2: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Baseline
metadata:
  name: corp-android
  owners: [mdm-android]
spec:
  platform: android
  priority: 100
  targets:
    groups: [all-corporate-android, mdm-canary, mdm-pilot]
  settings:
    passcode.required: true
    passcode.min_length: 6
    encryption.required: true
    os.min_version: "13"
    apps.untrusted_sources: true
    integrity.block_compromised: true
"#;

const WINDOWS_V1: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Baseline
metadata:
  name: corp-windows
  owners: [mdm-windows]
spec:
  platform: windows
  priority: 100
  targets:
    groups: [all-corporate-pcs, mdm-canary, mdm-pilot]
  settings:
    encryption.required: true
    av.realtime_required: true
    os.min_version: "10.0.22631"
    certs.trusted_roots:
      - {name: acme-root-2021, sha256: "3f0b5a3c1e8d7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a"}
"#;

const WINDOWS_V2: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Baseline
metadata:
  name: corp-windows
  owners: [mdm-windows]
spec:
  platform: windows
  priority: 100
  targets:
    groups: [all-corporate-pcs, mdm-canary, mdm-pilot]
  settings:
    encryption.required: true
    av.realtime_required: true
    os.min_version: "10.0.22631"
    certs.trusted_roots:
      - {name: acme-root-2021, sha256: "3f0b5a3c1e8d7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a"}
      - {name: acme-root-2026, sha256: "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b"}
"#;

// The same content as WINDOWS_V2, reformatted: keys reordered, flow style.
const WINDOWS_V2_REFORMATTED: &str = r#"kind: Baseline
apiVersion: tollgate.dev/v1alpha1
metadata: {owners: [mdm-windows], name: corp-windows}
spec:
  settings:
    os.min_version: "10.0.22631"
    certs.trusted_roots:
      - sha256: "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b"
        name: acme-root-2026
      - {sha256: "3f0b5a3c1e8d7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a", name: acme-root-2021}
    av.realtime_required: true
    encryption.required: true
  targets: {groups: [mdm-pilot, all-corporate-pcs, mdm-canary]}
  priority: 100
  platform: windows
"#;

const MACOS_V1: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Baseline
metadata:
  name: corp-macos
  owners: [mdm-macos]
spec:
  platform: macos
  priority: 100
  targets:
    groups: [all-corporate-macs, legal-forensics, mdm-canary, mdm-pilot]
  settings:
    passcode.required: true
    passcode.min_length: 10
    encryption.required: true
    encryption.recovery_key_escrow: true
    usb.storage_blocked: true
"#;

const ANDROID_V3: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Baseline
metadata:
  name: corp-android
  owners: [mdm-android]
spec:
  platform: android
  priority: 100
  targets:
    groups: [all-corporate-android, mdm-canary, mdm-pilot]
  settings:
    passcode.required: true
    passcode.min_length: 6
    encryption.required: true
    os.min_version: "13"
    apps.untrusted_sources: true
    integrity.block_compromised: true
    cosmetic.lock_screen_message: "Property of Acme Corp. If found, call +1 555 0100"
"#;

const EXCEPTION_USB: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Exception
metadata: {name: legal-usb-q4}
spec:
  baseline: corp-macos
  settings: [usb.storage_blocked]
  scope: {groups: [legal-forensics]}
  reason: Forensic imaging of seized laptops
  expires: 2026-12-31T00:00:00Z
"#;

/// The sample history: tightening, loosening, trust anchors, cosmetic,
/// exceptions, governance, a move and a pure reformatting, on four platforms.
pub const HISTORY: &[SampleCommit<'static>] = &[
    SampleCommit {
        author: "priya",
        message: "Initial baselines for iOS, Android, Windows and macOS",
        files: &[
            ("tollgate.yaml", Some(CONFIG)),
            ("baselines/ios/corp-ios.yaml", Some(IOS_V1)),
            ("baselines/android/corp-android.yaml", Some(ANDROID_V1)),
            ("baselines/windows/corp-windows.yaml", Some(WINDOWS_V1)),
            ("baselines/macos/corp-macos.yaml", Some(MACOS_V1)),
        ],
    },
    SampleCommit {
        author: "sam",
        message: "iOS: require 8-character passcodes",
        files: &[("baselines/ios/corp-ios.yaml", Some(IOS_V2))],
    },
    SampleCommit {
        author: "lee",
        message: "Android: allow apps from unknown sources",
        files: &[("baselines/android/corp-android.yaml", Some(ANDROID_V2))],
    },
    SampleCommit {
        author: "ana",
        message: "Windows: trust the new 2026 corporate root CA",
        files: &[("baselines/windows/corp-windows.yaml", Some(WINDOWS_V2))],
    },
    SampleCommit {
        author: "ana",
        message: "Android: lock screen message with a return phone number",
        files: &[("baselines/android/corp-android.yaml", Some(ANDROID_V3))],
    },
    SampleCommit {
        author: "omar",
        message: "Exception: legal forensics may use USB storage until year end",
        files: &[("exceptions/legal-usb-q4.yaml", Some(EXCEPTION_USB))],
    },
    SampleCommit {
        author: "priya",
        message: "Shorten the canary soak to one hour",
        files: &[("tollgate.yaml", Some(CONFIG_SHORT_SOAK))],
    },
    SampleCommit {
        author: "sam",
        message: "iOS: move into the phones folder and block Dropbox",
        files: &[
            ("baselines/ios/corp-ios.yaml", None),
            ("baselines/ios/phones/corp-ios.yaml", Some(IOS_V3_MOVED)),
        ],
    },
    SampleCommit {
        author: "sam",
        message: "iOS: wipe after 10 failed passcode attempts",
        files: &[("baselines/ios/phones/corp-ios.yaml", Some(IOS_V4_WIPE))],
    },
    SampleCommit {
        author: "ana",
        message: "Windows: reformat the baseline (no change of meaning)",
        files: &[("baselines/windows/corp-windows.yaml", Some(WINDOWS_V2_REFORMATTED))],
    },
];

/// Writes `history` as commits of a new repository at `dir` and returns the
/// commit ids, oldest first. Commit times are fixed so ids are reproducible.
pub fn write_sample_repo(dir: &Path, history: &[SampleCommit]) -> anyhow::Result<Vec<String>> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} exists and is not empty; choose another --dir", dir.display());
    }
    std::fs::create_dir_all(dir)?;
    let repo = git2::Repository::init(dir).with_context(|| format!("creating a git repo in {}", dir.display()))?;
    repo.set_head("refs/heads/main")?;
    let mut ids = Vec::new();
    for (i, c) in history.iter().enumerate() {
        let when = git2::Time::new(1_790_000_000 + 3600 * i as i64, 0);
        ids.push(commit_to(&repo, c, &when)?);
    }
    Ok(ids)
}

/// Adds `commit` on top of the branch checked out in the repository at
/// `dir`, dated now, and returns its id.
pub fn append_commit(dir: &Path, commit: &SampleCommit) -> anyhow::Result<String> {
    let repo = git2::Repository::open(dir).with_context(|| format!("opening the git repo in {}", dir.display()))?;
    let when = git2::Time::new(chrono::Utc::now().timestamp(), 0);
    commit_to(&repo, commit, &when)
}

/// Writes (or deletes) the commit's files in the work tree, stages all of
/// the tree and commits it on HEAD.
fn commit_to(repo: &git2::Repository, c: &SampleCommit, when: &git2::Time) -> anyhow::Result<String> {
    let dir = repo
        .workdir()
        .context("the sample repo has no work tree")?
        .to_path_buf();
    for (path, content) in c.files {
        let full = dir.join(path);
        match content {
            Some(text) => {
                std::fs::create_dir_all(full.parent().expect("sample paths have a parent"))?;
                std::fs::write(&full, text)?;
            }
            None => std::fs::remove_file(&full)?,
        }
    }
    let mut index = repo.index()?;
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?;
    index.update_all(["*"], None)?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let sig = git2::Signature::new(c.author, &format!("{}@acme.example", c.author), when)?;
    let parent = match repo.head() {
        Ok(head) => Some(head.peel_to_commit()?),
        Err(e) if e.code() == git2::ErrorCode::UnbornBranch => None,
        Err(e) => return Err(e.into()),
    };
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let oid = repo.commit(Some("HEAD"), &sig, &sig, c.message, &tree, &parents)?;
    Ok(oid.to_string())
}

/// Writes the sample repo under `dir/repo` and prints the plan of every commit.
pub fn write_and_plan(dir: &Path, out: &mut dyn Write, style: Style) -> anyhow::Result<std::path::PathBuf> {
    let repo = dir.join("repo");
    let ids = write_sample_repo(&repo, HISTORY)?;
    let git = GitRepo::open(&repo)?;
    writeln!(
        out,
        "Wrote a sample governed repo with {} commits to {}\n",
        ids.len(),
        repo.display()
    )?;
    // The first commit is planned against nothing: it goes through
    // governance like any other change.
    let mut base: Option<String> = None;
    for (id, c) in ids.iter().zip(HISTORY) {
        writeln!(out, "=== {} {} ({})", &id[..12], c.message, c.author)?;
        let args = PlanArgs {
            repo: repo.clone(),
            base: base.clone(),
            head: id.clone(),
            fleet: None,
            now: chrono::Utc::now(),
        };
        match compute_plan(&git, &args)? {
            PlanOutcome::Plan(p) => out.write_all(plan_text(&p, style).as_bytes())?,
            PlanOutcome::Invalid { errors, .. } => {
                for e in errors {
                    writeln!(out, "{e}")?;
                }
            }
        }
        writeln!(out)?;
        base = Some(id.clone());
    }
    Ok(repo)
}

/// The people of the sample's approver groups, the operator and the fleet's
/// reporter, with the role each token gets.
const PEOPLE: &[(&str, Role)] = &[
    ("ops", Role::Operator),
    ("sec1", Role::Approver),
    ("ios1", Role::Approver),
    ("dana", Role::Approver),
    ("reporter", Role::Reporter),
];

/// A random bearer token (128 bits from the OS).
fn new_token() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format!("tg_{}", hex::encode(bytes)))
}

/// What [`write_controller_config`] wrote.
pub struct SampleController {
    pub config: std::path::PathBuf,
    pub server: String,
    /// (name, token) pairs; only their hashes are in the config.
    pub tokens: Vec<(String, String)>,
}

impl SampleController {
    /// The token of `name`, one of the sample's people.
    pub fn token(&self, name: &str) -> anyhow::Result<&str> {
        self.tokens
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
            .with_context(|| format!("the sample has no token for {name:?}"))
    }
}

/// How often the sample controller polls the repo: short, so that a commit
/// shows up within a couple of seconds in a demo.
pub const SAMPLE_POLL_INTERVAL: &str = "2s";

/// Writes a ControllerConfig for the sample and a tokens file (mode 0600).
pub fn write_controller_config(dir: &Path, repo: &Path) -> anyhow::Result<SampleController> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut tokens = Vec::new();
    let mut entries = String::new();
    for (name, role) in PEOPLE {
        let token = new_token()?;
        let role = serde_json::to_value(role)?.as_str().unwrap_or("viewer").to_string();
        entries.push_str(&format!(
            "  - {{name: {name}, role: {role}, sha256: \"{}\"}}\n",
            token_hash(&token)
        ));
        tokens.push((name.to_string(), token));
    }
    let config = dir.join("controller.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: ControllerConfig\nsource: {{url: \"file://{}\", branch: main, interval: {SAMPLE_POLL_INTERVAL}}}\nstore: \"sqlite://{}\"\nlisten: \"127.0.0.1:{port}\"\nforge: {{local: {{}}}}\nmirror: \"{}\"\ntokens:\n{entries}",
            repo.display(),
            dir.join("state.db").display(),
            dir.join("mirror").display(),
        ),
    )?;
    let env: String = tokens
        .iter()
        .map(|(n, t)| format!("TOKEN_{}={t}\n", n.to_uppercase()))
        .collect();
    let env_path = dir.join("tokens.env");
    std::fs::write(&env_path, env)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&env_path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(SampleController {
        config,
        server: format!("http://127.0.0.1:{port}"),
        tokens,
    })
}

/// What `tollgate quickstart` does after printing the plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuickstartMode {
    /// `--no-run`: write the repo, config and tokens, print the plans and how
    /// to start the controller; start nothing.
    PlansOnly,
    /// `--no-wait`: run the tour, then stop the controller and the fleet.
    TourOnly,
    /// The default: run the tour, then keep the controller and the fleet
    /// running until Ctrl-C so the CLI can explore them.
    TourThenServe,
}

pub fn quickstart_cmd(dir: &Path, mode: QuickstartMode, out: &mut dyn Write, style: Style) -> anyhow::Result<Exit> {
    let repo = write_and_plan(dir, out, style)?;
    let sample = write_controller_config(dir, &repo)?;
    let d = dir.display();
    writeln!(
        out,
        "Controller config: {} (tokens in {d}/tokens.env)",
        sample.config.display()
    )?;
    if mode == QuickstartMode::PlansOnly {
        write_manual_steps(dir, &sample, out)?;
        return Ok(Exit::Ok);
    }
    let options = TourOptions {
        keep_running: mode == QuickstartMode::TourThenServe,
        ..TourOptions::default()
    };
    run_tour(dir, &sample, &options, out)?;
    Ok(Exit::Ok)
}

/// `--no-run`: how to start the controller on the sample and govern the
/// commits after HEAD~2 by hand.
fn write_manual_steps(dir: &Path, sample: &SampleController, out: &mut dyn Write) -> anyhow::Result<()> {
    let d = dir.display();
    let server = &sample.server;
    writeln!(
        out,
        "Started with --adopt HEAD~2, the controller adopts the fleet before the wipe setting and governs the commits after it.\n"
    )?;
    writeln!(
        out,
        "Start it with: tollgate run --config {} --adopt HEAD~2",
        sample.config.display()
    )?;
    writeln!(out, "In another terminal:")?;
    writeln!(
        out,
        "  set -a; . {d}/tokens.env; set +a; export TOLLGATE_SERVER={server}"
    )?;
    writeln!(
        out,
        "  TOLLGATE_TOKEN=$TOKEN_OPS  tollgate status                 # watch"
    )?;
    writeln!(
        out,
        "  TOLLGATE_TOKEN=$TOKEN_IOS1 tollgate approve 1              # one owner approval"
    )?;
    writeln!(out, "  TOLLGATE_TOKEN=$TOKEN_SEC1 tollgate approve 1              # plus mdm-security: T3 needs both, in business hours")?;
    writeln!(
        out,
        "  TOLLGATE_TOKEN=$TOKEN_REPORTER tollgate simulate --devices 300   # a fleet that applies and reports, so gates can pass"
    )?;
    writeln!(
        out,
        "  TOLLGATE_TOKEN=$TOKEN_OPS  tollgate rollback corp-ios --to HEAD~2   # shows the diff and tier, asks"
    )?;
    writeln!(
        out,
        "  TOLLGATE_TOKEN=$TOKEN_DANA tollgate approve 2              # on-call approves the rollback"
    )?;
    writeln!(
        out,
        "  TOLLGATE_TOKEN=$TOKEN_OPS  tollgate audit verify           # the whole trail, hash-chained"
    )?;
    writeln!(
        out,
        "Without reporting devices a ring's gate does not pass, so promotions stop after their first ring."
    )?;
    Ok(())
}
