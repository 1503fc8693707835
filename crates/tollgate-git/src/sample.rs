//! The sample governed repo: a realistic history of baselines, an
//! exception and config changes, written as real commits. `tollgate
//! quickstart` shows it; tests build on it.

use std::path::{Path, PathBuf};

/// Why the sample repo could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("{} exists and is not empty; choose another --dir", .0.display())]
    NotEmpty(PathBuf),
    #[error("the sample repo has no work tree")]
    NoWorkTree,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Git(#[from] git2::Error),
}

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
pub fn write_sample_repo(dir: &Path, history: &[SampleCommit]) -> Result<Vec<String>, SampleError> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        return Err(SampleError::NotEmpty(dir.to_path_buf()));
    }
    std::fs::create_dir_all(dir)?;
    let repo = git2::Repository::init(dir)?;
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
pub fn append_commit(dir: &Path, commit: &SampleCommit) -> Result<String, SampleError> {
    let repo = git2::Repository::open(dir)?;
    let when = git2::Time::new(chrono::Utc::now().timestamp(), 0);
    commit_to(&repo, commit, &when)
}

/// Writes (or deletes) the commit's files in the work tree, stages all of
/// the tree and commits it on HEAD.
fn commit_to(repo: &git2::Repository, c: &SampleCommit, when: &git2::Time) -> Result<String, SampleError> {
    let dir = repo.workdir().ok_or(SampleError::NoWorkTree)?.to_path_buf();
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
