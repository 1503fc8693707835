//! A generated governed repo for the plan benchmark.
//!
//! `N` baselines under `baselines/<platform>/<team>/<name>.yaml` plus
//! `tollgate.yaml`, then a history of small edits of the kind platform teams
//! make every day (a passcode length raised, an app added to `apps.blocked`,
//! an OS minimum bumped), written as one `git fast-import` stream. Every
//! document is valid at every revision; [`ensure`] proves it for `HEAD` with
//! `tollgate validate` before the repo is cached.
//!
//! The last [`SINGLE_FILE_TAIL`] commits each change exactly one baseline,
//! all different, so `HEAD~1..HEAD` is a one-file change and `HEAD~50..HEAD`
//! a 50-file change in every generated repo. The very last commit is always
//! the same kind of edit (an app added to an iOS baseline's block list), so
//! repos of different sizes plan comparable changes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use tollgate::catalog::Catalog;

use super::{cache_root, run_expect, Rng};

/// Names the cache directory: bump it whenever the generated content changes,
/// so a stale cached repo is never measured.
pub const GENERATOR_VERSION: u32 = 1;

/// Commits at the tip that each change one distinct baseline.
pub const SINGLE_FILE_TAIL: usize = 50;

const PLATFORMS: [&str; 5] = ["ios", "ipados", "macos", "android", "windows"];
#[rustfmt::skip]
const TEAMS: [&str; 10] = [
    "corp", "finance", "legal", "sales", "engineering", "retail", "field-ops", "executive", "kiosk", "contractors",
];
#[rustfmt::skip]
const AUTHORS: [&str; 12] = [
    "priya", "sam", "lee", "ana", "omar", "dana", "eli", "mei", "jonas", "fatima", "carlos", "yuki",
];
#[rustfmt::skip]
const VENDORS: [&str; 20] = [
    "dropbox", "tiktok", "telegram", "whatsapp", "snapchat", "wechat", "discord", "signal", "zoom", "anydesk",
    "teamviewer", "torproject", "box", "mega", "pcloud", "spotify", "reddit", "twitch", "roblox", "epicgames",
];
#[rustfmt::skip]
const PRODUCTS: [&str; 10] = [
    "app", "mobile", "client", "lite", "beta", "messenger", "sync", "share", "player", "plus",
];
const REQUIRED_APPS: [&str; 6] = [
    "com.acme.companyportal",
    "com.acme.authenticator",
    "com.acme.vpnclient",
    "com.acme.mail",
    "com.acme.expenses",
    "com.acme.helpdesk",
];
const SEED: u64 = 0x7011_6A7E_BE0C_0001;
const FIRST_COMMIT_TIME: i64 = 1_700_000_000;

/// Size of a generated repo.
#[derive(Debug, Clone, Copy)]
pub struct RepoSpec {
    pub baselines: usize,
    /// Including the first commit that imports every baseline.
    pub commits: usize,
}

impl RepoSpec {
    /// Where the repo is cached: keyed by generator version and size.
    pub fn path(&self) -> PathBuf {
        cache_root()
            .join("bench-repos")
            .join(format!("v{GENERATOR_VERSION}"))
            .join(format!("{}-baselines-{}-commits.git", self.baselines, self.commits))
    }
}

/// The bare repo for `spec`, generated and checked on first use and reused
/// afterwards. `tollgate` is the binary that validates it.
pub fn ensure(spec: RepoSpec, tollgate: &Path) -> PathBuf {
    let dest = spec.path();
    if dest.exists() {
        return dest;
    }
    let parent = dest.parent().expect("cache path has a parent");
    fs::create_dir_all(parent).unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
    let name = dest.file_name().expect("cache path has a name").to_string_lossy();
    let tmp = parent.join(format!(".tmp-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);

    let started = Instant::now();
    eprintln!(
        "generating {} baselines x {} commits into {} (once, then cached)",
        spec.baselines,
        spec.commits,
        dest.display()
    );
    generate(spec, &tmp);
    check(spec, &tmp, tollgate);
    // Renaming a complete, checked repo into place means a cached repo is
    // always whole, even if a previous run was interrupted.
    if let Err(e) = fs::rename(&tmp, &dest) {
        let _ = fs::remove_dir_all(&tmp);
        assert!(
            dest.exists(),
            "cannot move the generated repo to {}: {e}",
            dest.display()
        );
    }
    eprintln!("generated and validated in {:.1?}", started.elapsed());
    dest
}

fn git(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("--git-dir").arg(dir);
    cmd
}

fn generate(spec: RepoSpec, dir: &Path) {
    assert!(
        spec.commits > SINGLE_FILE_TAIL && spec.baselines > SINGLE_FILE_TAIL,
        "a bench repo needs more than {SINGLE_FILE_TAIL} commits and baselines"
    );
    run_expect(
        Command::new("git")
            .args(["init", "--bare", "--quiet", "--initial-branch=main"])
            .arg(dir),
        &[0],
    );
    let mut child = git(dir)
        .args(["fast-import", "--quiet", "--done"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("cannot start git fast-import");
    {
        let mut out = BufWriter::new(child.stdin.take().expect("stdin is piped"));
        write_history(spec, &mut out).expect("writing the fast-import stream");
        out.flush().expect("writing the fast-import stream");
    }
    let status = child.wait().expect("waiting for git fast-import");
    assert!(status.success(), "git fast-import failed: {status}");
    // Packed as a maintained repo or a fresh mirror is: one pack with
    // deltas, and a commit-graph.
    run_expect(git(dir).args(["gc", "--quiet"]), &[0]);
}

/// The generated repo is what it claims to be, or the bench stops here.
fn check(spec: RepoSpec, dir: &Path, tollgate: &Path) {
    let out = run_expect(
        Command::new(tollgate)
            .args(["validate", "-o", "json", "--rev", "HEAD", "--repo"])
            .arg(dir),
        &[0],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("validate -o json prints JSON");
    assert_eq!(report["valid"], true, "generated repo is invalid: {report}");
    assert_eq!(report["documents"]["baselines"], spec.baselines, "baselines at HEAD");

    let count = run_expect(git(dir).args(["rev-list", "--count", "HEAD"]), &[0]);
    assert_eq!(
        String::from_utf8_lossy(&count.stdout).trim(),
        spec.commits.to_string(),
        "commits"
    );
    for back in [1, SINGLE_FILE_TAIL] {
        let names = run_expect(
            git(dir).args(["diff", "--name-only", &format!("HEAD~{back}"), "HEAD"]),
            &[0],
        );
        assert_eq!(
            names.stdout.iter().filter(|&&b| b == b'\n').count(),
            back,
            "files changed in HEAD~{back}..HEAD"
        );
    }
}

fn write_history(spec: RepoSpec, out: &mut impl Write) -> std::io::Result<()> {
    let mut rng = Rng::new(SEED ^ spec.baselines as u64);
    let mut baselines: Vec<Baseline> = (0..spec.baselines).map(|i| Baseline::new(i, &mut rng)).collect();

    let mut files = vec![("tollgate.yaml".to_string(), config())];
    files.extend(baselines.iter().map(|b| (b.path(), b.render())));
    let message = format!("Import {} baselines", baselines.len());
    write_commit(out, 1, AUTHORS[0], &message, &files)?;

    let tail = tail_picks(spec.baselines, &mut rng);
    let first_tail_commit = spec.commits - SINGLE_FILE_TAIL + 1;
    for n in 2..=spec.commits {
        let picks = if n >= first_tail_commit {
            vec![tail[n - first_tail_commit]]
        } else {
            let wanted = match rng.below(10) {
                0..=5 => 1,
                6..=8 => 2,
                _ => 3,
            };
            distinct(wanted, spec.baselines, &mut rng)
        };
        let mut lines = Vec::new();
        for &i in &picks {
            let line = if n == spec.commits {
                baselines[i]
                    .apply(Edit::BlockApp, &mut rng)
                    .expect("the last baseline can block an app")
            } else {
                loop {
                    if let Some(line) = baselines[i].apply(*rng.pick(&EDITS), &mut rng) {
                        break line;
                    }
                }
            };
            lines.push(line);
        }
        let files: Vec<(String, String)> = picks
            .iter()
            .map(|&i| (baselines[i].path(), baselines[i].render()))
            .collect();
        let message = if lines.len() == 1 {
            lines.remove(0)
        } else {
            format!("Batch of {} edits\n\n{}", lines.len(), lines.join("\n"))
        };
        let author: &str = rng.pick::<&str>(&AUTHORS);
        write_commit(out, n, author, &message, &files)?;
    }
    writeln!(out, "done")
}

/// The baselines the single-file tail changes: all distinct, the last one an
/// iOS baseline (every `PLATFORMS.len()`-th index is iOS).
fn tail_picks(baselines: usize, rng: &mut Rng) -> Vec<usize> {
    let last = rng.below(baselines / PLATFORMS.len()) * PLATFORMS.len();
    let mut picks = Vec::with_capacity(SINGLE_FILE_TAIL);
    while picks.len() < SINGLE_FILE_TAIL - 1 {
        let i = rng.below(baselines);
        if i != last && !picks.contains(&i) {
            picks.push(i);
        }
    }
    picks.push(last);
    picks
}

fn distinct(count: usize, below: usize, rng: &mut Rng) -> Vec<usize> {
    let mut picks = Vec::with_capacity(count);
    while picks.len() < count {
        let i = rng.below(below);
        if !picks.contains(&i) {
            picks.push(i);
        }
    }
    picks
}

fn write_commit(
    out: &mut impl Write,
    mark: usize,
    author: &str,
    message: &str,
    files: &[(String, String)],
) -> std::io::Result<()> {
    let time = FIRST_COMMIT_TIME + 997 * mark as i64;
    writeln!(out, "commit refs/heads/main\nmark :{mark}")?;
    writeln!(out, "author {author} <{author}@acme.example> {time} +0000")?;
    writeln!(out, "committer {author} <{author}@acme.example> {time} +0000")?;
    writeln!(out, "data {}\n{message}", message.len())?;
    for (path, content) in files {
        writeln!(out, "M 100644 inline {path}\ndata {}\n{content}", content.len())?;
    }
    writeln!(out)
}

fn config() -> String {
    let mut approvers = String::from("  mdm-security: {forge_team: acme/mdm-security}\n");
    for p in PLATFORMS {
        let _ = writeln!(approvers, "  mdm-{p}: {{forge_team: acme/mdm-{p}}}");
    }
    for t in TEAMS {
        let _ = writeln!(approvers, "  team-{t}: {{forge_team: acme/team-{t}}}");
    }
    approvers.push_str("  oncall: {users: [dana, eli]}\n");
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: Config
metadata: {{name: acme}}
rings:
  - {{name: canary, selector: {{groups: [mdm-canary]}}, soak: 2h,  gate: {{min_applied: 0.95, max_noncompliant_increase: 0.01}}}}
  - {{name: pilot,  selector: {{groups: [mdm-pilot]}},  soak: 24h, gate: {{min_applied: 0.95, max_noncompliant_increase: 0.01}}}}
  - {{name: broad,  selector: {{all: true}}}}
approvers:
{approvers}windows:
  business-hours: {{days: [mon, tue, wed, thu], start: "09:00", end: "16:00", tz: Europe/Berlin}}
freezes:
  - {{from: 2026-12-20, to: 2027-01-04, reason: year-end freeze}}
"#
    )
}

/// A setting value, as the generator writes it.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Bool(bool),
    Int(i64),
    Text(String),
    Version(Vec<u32>),
    Ids(Vec<String>),
    /// Trusted roots: (name, sha256).
    Roots(Vec<(String, String)>),
}

/// Whether the shipped catalogue allows `key` on `platform`; the generator
/// asks the real catalogue so it can never drift from it.
fn supported(key: &str, platform: &str) -> bool {
    let entry = Catalog::builtin()
        .get(key)
        .unwrap_or_else(|| panic!("{key} is not in the catalogue"));
    entry.platforms.iter().any(|p| p.as_str() == platform)
}

struct Baseline {
    name: String,
    platform: &'static str,
    team: &'static str,
    settings: BTreeMap<&'static str, Val>,
}

#[derive(Debug, Clone, Copy)]
enum Edit {
    MinLength,
    Inactivity,
    History,
    BlockApp,
    UnblockApp,
    RequireApp,
    OsVersion,
    LockMessage,
    Camera,
    Deadline,
}

/// Edits drawn with these weights (a repeated edit is more likely).
#[rustfmt::skip]
const EDITS: [Edit; 17] = [
    Edit::MinLength, Edit::MinLength, Edit::MinLength, Edit::Inactivity, Edit::Inactivity,
    Edit::History, Edit::BlockApp, Edit::BlockApp, Edit::BlockApp, Edit::BlockApp,
    Edit::UnblockApp, Edit::RequireApp, Edit::OsVersion, Edit::OsVersion, Edit::LockMessage,
    Edit::Camera, Edit::Deadline,
];

fn app_id(rng: &mut Rng) -> String {
    format!("com.{}.{}", rng.pick(&VENDORS), rng.pick(&PRODUCTS))
}

impl Baseline {
    fn new(i: usize, rng: &mut Rng) -> Baseline {
        let platform = PLATFORMS[i % PLATFORMS.len()];
        let team = TEAMS[(i / PLATFORMS.len()) % TEAMS.len()];
        let mut b = Baseline {
            name: format!("{team}-{platform}-{i:04}"),
            platform,
            team,
            settings: BTreeMap::new(),
        };
        let os = match platform {
            "ios" | "ipados" => vec![17, rng.between(0, 5) as u32],
            "macos" => vec![14, rng.between(0, 6) as u32],
            "android" => vec![rng.between(12, 14) as u32],
            _ => vec![10, 0, 22631 + rng.between(0, 400) as u32],
        };
        let blocked: Vec<String> = {
            let mut ids = Vec::new();
            for _ in 0..rng.between(1, 4) {
                let id = app_id(rng);
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            ids
        };
        let required = vec![
            REQUIRED_APPS[0].to_string(),
            REQUIRED_APPS[1 + rng.below(2)].to_string(),
        ];
        let values = [
            ("passcode.required", Val::Bool(true)),
            ("passcode.min_length", Val::Int(rng.between(6, 10))),
            ("passcode.allow_simple", Val::Bool(false)),
            ("passcode.max_inactivity_min", Val::Int(rng.between(2, 15))),
            ("passcode.history", Val::Int(rng.between(0, 5))),
            ("os.min_version", Val::Version(os)),
            ("os.update_deadline_days", Val::Int(rng.between(7, 14))),
            ("encryption.required", Val::Bool(true)),
            ("encryption.recovery_key_escrow", Val::Bool(true)),
            ("av.realtime_required", Val::Bool(true)),
            ("network.firewall", Val::Bool(true)),
            ("usb.storage_blocked", Val::Bool(rng.chance(70))),
            ("integrity.block_compromised", Val::Bool(true)),
            ("apps.untrusted_sources", Val::Bool(false)),
            ("container.managed_to_unmanaged", Val::Bool(false)),
            ("tls.allow_untrusted_prompt", Val::Bool(false)),
            ("apps.blocked", Val::Ids(blocked)),
            ("apps.required", Val::Ids(required)),
        ];
        for (key, value) in values {
            if supported(key, platform) {
                b.settings.insert(key, value);
            }
        }
        if rng.chance(30) {
            b.settings.insert(
                "certs.trusted_roots",
                Val::Roots(vec![("acme-root-2024".to_string(), rng.sha256_hex())]),
            );
        }
        b
    }

    fn path(&self) -> String {
        format!("baselines/{}/{}/{}.yaml", self.platform, self.team, self.name)
    }

    fn render(&self) -> String {
        let mut s = format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata:\n  name: {}\n  owners: [mdm-{}, team-{}]\n\
             spec:\n  platform: {}\n  priority: 100\n  targets:\n    groups: [{}-devices]\n  settings:\n",
            self.name, self.platform, self.team, self.platform, self.name
        );
        for (key, value) in &self.settings {
            let _ = match value {
                Val::Bool(v) => writeln!(s, "    {key}: {v}"),
                Val::Int(v) => writeln!(s, "    {key}: {v}"),
                Val::Text(v) => writeln!(s, "    {key}: \"{v}\""),
                Val::Version(parts) => {
                    let dotted: Vec<String> = parts.iter().map(u32::to_string).collect();
                    writeln!(s, "    {key}: \"{}\"", dotted.join("."))
                }
                Val::Ids(ids) => writeln!(s, "    {key}: [{}]", ids.join(", ")),
                Val::Roots(roots) => {
                    let _ = writeln!(s, "    {key}:");
                    for (name, sha) in roots {
                        let _ = writeln!(s, "      - {{name: {name}, sha256: \"{sha}\"}}");
                    }
                    Ok(())
                }
            };
        }
        s
    }

    /// An int setting set to a new value in `lo..=hi`.
    fn set_int(&mut self, key: &'static str, lo: i64, hi: i64, rng: &mut Rng) -> Option<String> {
        if !supported(key, self.platform) {
            return None;
        }
        let old = self.settings.get(key).cloned();
        let new = loop {
            let v = Val::Int(rng.between(lo, hi));
            if Some(&v) != old.as_ref() {
                break v;
            }
        };
        self.settings.insert(key, new.clone());
        Some(format!(
            "{}: {key} {} -> {}",
            self.name,
            shown(old.as_ref()),
            shown(Some(&new))
        ))
    }

    /// Applies `edit` if it makes sense for this baseline and returns the
    /// commit message line describing it; every applied edit changes the file.
    fn apply(&mut self, edit: Edit, rng: &mut Rng) -> Option<String> {
        let name = self.name.clone();
        match edit {
            Edit::MinLength => self.set_int("passcode.min_length", 6, 14, rng),
            Edit::Inactivity => self.set_int("passcode.max_inactivity_min", 1, 30, rng),
            Edit::History => self.set_int("passcode.history", 0, 24, rng),
            Edit::Deadline => self.set_int("os.update_deadline_days", 0, 30, rng),
            Edit::BlockApp => {
                let Some(Val::Ids(ids)) = self.settings.get_mut("apps.blocked") else {
                    return None;
                };
                let id = (0..20).map(|_| app_id(rng)).find(|id| !ids.contains(id))?;
                ids.push(id.clone());
                Some(format!("{name}: block {id}"))
            }
            Edit::UnblockApp => {
                let Some(Val::Ids(ids)) = self.settings.get_mut("apps.blocked") else {
                    return None;
                };
                if ids.len() < 2 {
                    return None;
                }
                let id = ids.remove(rng.below(ids.len()));
                Some(format!("{name}: unblock {id}"))
            }
            Edit::RequireApp => {
                let Some(Val::Ids(ids)) = self.settings.get_mut("apps.required") else {
                    return None;
                };
                let id = REQUIRED_APPS.iter().find(|a| !ids.iter().any(|i| i == *a))?.to_string();
                ids.push(id.clone());
                Some(format!("{name}: require {id}"))
            }
            Edit::OsVersion => {
                let Some(Val::Version(parts)) = self.settings.get_mut("os.min_version") else {
                    return None;
                };
                *parts.last_mut().expect("versions have parts") += 1;
                let dotted: Vec<String> = parts.iter().map(u32::to_string).collect();
                Some(format!("{name}: require OS {}", dotted.join(".")))
            }
            Edit::LockMessage => {
                if !supported("cosmetic.lock_screen_message", self.platform) {
                    return None;
                }
                let text = format!(
                    "Property of Acme {}. If found, call +1 555 01{:02}",
                    self.team,
                    rng.below(100)
                );
                let old = self
                    .settings
                    .insert("cosmetic.lock_screen_message", Val::Text(text.clone()));
                (old != Some(Val::Text(text))).then(|| format!("{name}: lock screen message"))
            }
            Edit::Camera => {
                let allowed = !matches!(self.settings.get("device.camera_allowed"), Some(Val::Bool(true)));
                self.settings.insert("device.camera_allowed", Val::Bool(allowed));
                Some(format!(
                    "{name}: camera {}",
                    if allowed { "allowed" } else { "blocked" }
                ))
            }
        }
    }
}

fn shown(v: Option<&Val>) -> String {
    match v {
        Some(Val::Int(n)) => n.to_string(),
        Some(other) => format!("{other:?}"),
        None => "unset".to_string(),
    }
}
