//! Commit signature verification (`source.verify`) against commits signed
//! by the real tools: `ssh-keygen` keys through `git commit -S` with
//! `gpg.format=ssh`, and `gpg` keys in a throwaway `GNUPGHOME`. Every SSH
//! verdict is checked against `ssh-keygen -Y verify` as the peer.
//!
//! Without `git`, `ssh-keygen` or `gpg` the tests that need them say so and
//! pass, except when `CI` is set: there a missing tool fails the test
//! (scripts/test.sh installs them).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use chrono::{Duration, Utc};
use git2::{Oid, Repository};
use tempfile::TempDir;
use tollgate::ids::CommitSha;
use tollgate::source::git::GitRepo;
use tollgate::source::verify::{Method, Reason, Signer, VerifyConfig, VerifyError, VerifyPolicy};

/// Whether `tool` can run; a missing tool fails under CI.
fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "`{tool}` is not installed, and CI is set: the signature tests must run in CI (scripts/test.sh installs it)"
        );
        // Straight to stderr, past the test harness's capture.
        let _ = writeln!(
            std::io::stderr(),
            "notice: `{tool}` is not installed; skipping this signature test"
        );
    }
    found
}

fn have_all(tools: &[&str]) -> bool {
    tools.iter().all(|t| have(t))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: Output) -> String {
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A repository, keys and a GnuPG home in one temporary directory, with git
/// and gpg kept away from the user's own configuration.
struct Fixture {
    dir: TempDir,
    repo: PathBuf,
    gnupg: PathBuf,
    used_gpg: std::cell::Cell<bool>,
    commits: std::cell::Cell<u32>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // The agent gpg started for this home is ours to stop.
        if self.used_gpg.get() {
            let _ = Command::new("gpgconf")
                .env("GNUPGHOME", &self.gnupg)
                .args(["--kill", "gpg-agent"])
                .status();
        }
    }
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let gnupg = dir.path().join("gnupg");
        fs::create_dir(&gnupg).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&gnupg, fs::Permissions::from_mode(0o700)).unwrap();
        }
        let f = Fixture {
            dir,
            repo,
            gnupg,
            used_gpg: std::cell::Cell::new(false),
            commits: std::cell::Cell::new(0),
        };
        run(f.git().args(["init", "-q", "-b", "main"]).arg(&f.repo));
        f
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("HOME", self.dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", self.path("no-gitconfig"))
            .env("GNUPGHOME", &self.gnupg)
            .env("GIT_AUTHOR_NAME", "Anyone")
            .env("GIT_AUTHOR_EMAIL", "anyone@acme.example")
            .env("GIT_COMMITTER_NAME", "Anyone")
            .env("GIT_COMMITTER_EMAIL", "anyone@acme.example");
    }

    fn git(&self) -> Command {
        let mut cmd = Command::new("git");
        self.env(&mut cmd);
        if self.repo.exists() {
            cmd.current_dir(&self.repo);
        }
        cmd
    }

    fn open(&self) -> Repository {
        Repository::open(&self.repo).unwrap()
    }

    fn head(&self) -> Oid {
        Oid::from_str(&stdout(run(self.git().args(["rev-parse", "HEAD"])))).unwrap()
    }

    /// A new file in each commit, so no two commits are alike.
    fn touch(&self) -> String {
        let n = self.commits.get() + 1;
        self.commits.set(n);
        let name = format!("f{n}.txt");
        fs::write(self.repo.join(&name), format!("{n}\n")).unwrap();
        run(self.git().args(["add", &name]));
        format!("change {n}")
    }

    fn commit_unsigned(&self) -> Oid {
        let msg = self.touch();
        run(self
            .git()
            .args(["-c", "commit.gpgsign=false", "commit", "-q", "-m", &msg]));
        self.head()
    }

    /// `ssh-keygen` key pair; returns the private key's path.
    fn ssh_key(&self, name: &str, kind: &str) -> PathBuf {
        let path = self.path(name);
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-q", "-N", "", "-C", name, "-f"]).arg(&path);
        if kind != "ecdsa384" {
            cmd.args(["-t", kind]);
        }
        match kind {
            "rsa" => cmd.args(["-b", "3072"]),
            "ecdsa384" => cmd.args(["-t", "ecdsa", "-b", "384"]),
            _ => &mut cmd,
        };
        run(&mut cmd);
        path
    }

    fn public(&self, key: &Path) -> String {
        fs::read_to_string(key.with_extension("pub"))
            .or_else(|_| fs::read_to_string(format!("{}.pub", key.display())))
            .unwrap()
            .trim()
            .to_string()
    }

    fn commit_ssh(&self, key: &Path) -> Oid {
        let msg = self.touch();
        run(self
            .git()
            .args(["-c", "gpg.format=ssh", "-c"])
            .arg(format!("user.signingkey={}", key.display()))
            .args(["commit", "-q", "-S", "-m", &msg]));
        self.head()
    }

    fn gpg(&self) -> Command {
        self.used_gpg.set(true);
        let mut cmd = Command::new("gpg");
        self.env(&mut cmd);
        cmd.args(["--batch", "--quiet", "--no-tty"]);
        cmd
    }

    /// A new OpenPGP key; returns its primary fingerprint.
    fn gpg_key(&self, uid: &str, expire: &str) -> String {
        run(self
            .gpg()
            .args(["--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", expire]));
        self.fingerprints(uid)[0].clone()
    }

    /// Primary fingerprint first, then the subkeys'.
    fn fingerprints(&self, id: &str) -> Vec<String> {
        let listing = stdout(run(self.gpg().args(["--with-colons", "--list-keys", id])));
        listing
            .lines()
            .filter_map(|l| l.strip_prefix("fpr:"))
            .map(|l| l.trim_matches(':').to_string())
            .collect()
    }

    fn export(&self, name: &str, ids: &[&str], armor: bool) -> PathBuf {
        let mut cmd = self.gpg();
        if armor {
            cmd.arg("--armor");
        }
        let out = run(cmd.arg("--export").args(ids));
        let path = self.path(name);
        fs::write(&path, out.stdout).unwrap();
        path
    }

    fn commit_gpg(&self, id: &str) -> Oid {
        let msg = self.touch();
        run(self
            .git()
            .args(["-c", "gpg.format=openpgp", "-c", "gpg.program=gpg", "-c"])
            .arg(format!("user.signingkey={id}"))
            .args(["commit", "-q", "-S", "-m", &msg]));
        self.head()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, text).unwrap();
        path
    }

    /// The commit object with its message changed and its signature kept,
    /// written with `git hash-object`.
    fn tampered(&self, commit: Oid) -> Oid {
        let raw = stdout(run(self.git().args(["cat-file", "commit", &commit.to_string()])));
        let (head, message) = raw.split_once("\n\n").unwrap();
        let forged = format!("{head}\n\n{message} (and a wipe setting nobody reviewed)\n");
        let path = self.write("forged-commit", &forged);
        let id = stdout(run(self.git().args(["hash-object", "-t", "commit", "-w"]).arg(&path)));
        Oid::from_str(&id).unwrap()
    }
}

fn signers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn ssh_policy(f: &Fixture, allowed: &str, map: &[(&str, &str)]) -> (VerifyPolicy, PathBuf) {
    let path = f.write("allowed_signers", allowed);
    let config = VerifyConfig {
        allowed_signers: Some(PathBuf::from("allowed_signers")),
        openpgp_keys: None,
        signers: signers(map),
    };
    (VerifyPolicy::load(&config, f.dir.path()).unwrap(), path)
}

fn pgp_policy(f: &Fixture, keyring: &Path, map: &[(&str, &str)]) -> VerifyPolicy {
    let config = VerifyConfig {
        allowed_signers: None,
        openpgp_keys: Some(keyring.to_path_buf()),
        signers: signers(map),
    };
    VerifyPolicy::load(&config, f.dir.path()).unwrap()
}

fn reason(result: Result<Signer, tollgate::source::verify::Unverified>) -> Reason {
    result.expect_err("the commit should not verify").reason
}

/// ssh-keygen's verdict on the commit: find the principal the key may sign
/// as, then verify for the `git` namespace at the current time, as
/// `git verify-commit` does.
fn ssh_keygen_accepts(f: &Fixture, allowed: &Path, commit: Oid) -> bool {
    let repo = f.open();
    let (sig, payload) = repo.extract_signature(&commit, None).unwrap();
    let sig_path = f.write("peer.sig", std::str::from_utf8(&sig).unwrap());
    let payload_path = f.path("peer.payload");
    fs::write(&payload_path, &*payload).unwrap();
    let found = Command::new("ssh-keygen")
        .args(["-Y", "find-principals", "-f"])
        .arg(allowed)
        .arg("-s")
        .arg(&sig_path)
        .output()
        .unwrap();
    if !found.status.success() {
        return false;
    }
    let principal = String::from_utf8(found.stdout).unwrap();
    let principal = principal.lines().next().unwrap().to_string();
    Command::new("ssh-keygen")
        .args(["-Y", "verify", "-n", "git", "-f"])
        .arg(allowed)
        .args(["-I", &principal, "-s"])
        .arg(&sig_path)
        .stdin(fs::File::open(&payload_path).unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Tollgate's cryptographic verdict, comparable with ssh-keygen's: a good
/// signature whose principal `signers` does not map is still good to
/// ssh-keygen, which knows no `signers`.
fn tollgate_accepts_key(result: &Result<Signer, tollgate::source::verify::Unverified>) -> bool {
    result.is_ok() || matches!(result, Err(u) if matches!(u.reason, Reason::NotMapped { .. }))
}

fn assert_same_verdict_as_ssh_keygen(
    f: &Fixture,
    allowed: &Path,
    commit: Oid,
    result: &Result<Signer, tollgate::source::verify::Unverified>,
) {
    assert_eq!(
        tollgate_accepts_key(result),
        ssh_keygen_accepts(f, allowed, commit),
        "ssh-keygen disagrees with {result:?}"
    );
}

#[test]
fn ssh_ed25519_rsa_and_ecdsa_commits_verify_as_the_mapped_identity() {
    if !have_all(&["git", "ssh-keygen"]) {
        return;
    }
    let f = Fixture::new();
    let dana = f.ssh_key("dana", "ed25519");
    let eli = f.ssh_key("eli", "rsa");
    let fay = f.ssh_key("fay", "ecdsa");
    let gus = f.ssh_key("gus", "ecdsa384");
    let allowed = format!(
        "# team\ndana@acme.example namespaces=\"git\" {}\neli@acme.example {}\nfay@acme.example {}\ngus@acme.example {}\n",
        f.public(&dana),
        f.public(&eli),
        f.public(&fay),
        f.public(&gus)
    );
    let map = [
        ("dana@acme.example", "dana"),
        ("eli@acme.example", "eli"),
        ("fay@acme.example", "fay"),
        ("gus@acme.example", "gus"),
    ];
    let (policy, allowed_path) = ssh_policy(&f, &allowed, &map);
    let repo = f.open();
    for (key, identity, principal) in [
        (&dana, "dana", "dana@acme.example"),
        (&eli, "eli", "eli@acme.example"),
        (&fay, "fay", "fay@acme.example"),
        (&gus, "gus", "gus@acme.example"),
    ] {
        let commit = f.commit_ssh(key);
        let result = policy.verify_commit(&repo, commit);
        let signer = result.clone().unwrap();
        assert_eq!(signer.identity, identity);
        assert_eq!(signer.principal, principal);
        assert_eq!(signer.method, Method::Ssh);
        let printed = stdout(run(Command::new("ssh-keygen")
            .arg("-lf")
            .arg(format!("{}.pub", key.display()))));
        assert!(printed.contains(&signer.key), "{printed} vs {}", signer.key);
        assert_same_verdict_as_ssh_keygen(&f, &allowed_path, commit, &result);
    }
}

#[test]
fn an_unsigned_commit_is_unsigned() {
    if !have_all(&["git", "ssh-keygen"]) {
        return;
    }
    let f = Fixture::new();
    let dana = f.ssh_key("dana", "ed25519");
    let (policy, _) = ssh_policy(
        &f,
        &format!("dana@acme.example {}\n", f.public(&dana)),
        &[("dana@acme.example", "dana")],
    );
    let commit = f.commit_unsigned();
    let u = policy.verify_commit(&f.open(), commit).unwrap_err();
    assert_eq!(u.reason, Reason::Unsigned);
    assert_eq!(u.commit.as_str(), commit.to_string());
    assert!(u.to_string().contains("not signed"), "{u}");
}

#[test]
fn a_tampered_ssh_commit_does_not_verify() {
    if !have_all(&["git", "ssh-keygen"]) {
        return;
    }
    let f = Fixture::new();
    let dana = f.ssh_key("dana", "ed25519");
    let (policy, allowed) = ssh_policy(
        &f,
        &format!("dana@acme.example {}\n", f.public(&dana)),
        &[("dana@acme.example", "dana")],
    );
    let signed = f.commit_ssh(&dana);
    let forged = f.tampered(signed);
    assert_ne!(forged, signed);
    let repo = f.open();
    assert!(policy.verify_commit(&repo, signed).is_ok());
    let result = policy.verify_commit(&repo, forged);
    let r = reason(result.clone());
    assert!(
        matches!(
            r,
            Reason::BadSignature {
                method: Method::Ssh,
                ..
            }
        ),
        "{r:?}"
    );
    assert_eq!(r.code(), "bad_signature");
    assert_same_verdict_as_ssh_keygen(&f, &allowed, forged, &result);
}

#[test]
fn a_key_not_in_allowed_signers_is_unknown() {
    if !have_all(&["git", "ssh-keygen"]) {
        return;
    }
    let f = Fixture::new();
    let dana = f.ssh_key("dana", "ed25519");
    let mallory = f.ssh_key("mallory", "ed25519");
    let (policy, allowed) = ssh_policy(
        &f,
        &format!("dana@acme.example {}\n", f.public(&dana)),
        &[("dana@acme.example", "dana")],
    );
    let commit = f.commit_ssh(&mallory);
    let result = policy.verify_commit(&f.open(), commit);
    match reason(result.clone()) {
        Reason::UnknownKey {
            method: Method::Ssh,
            key,
            file,
        } => {
            assert!(key.starts_with("SHA256:"), "{key}");
            assert_eq!(file.unwrap(), allowed);
        }
        other => panic!("{other:?}"),
    }
    assert_same_verdict_as_ssh_keygen(&f, &allowed, commit, &result);
}

#[test]
fn a_principal_signers_does_not_map_is_not_an_identity() {
    if !have_all(&["git", "ssh-keygen"]) {
        return;
    }
    let f = Fixture::new();
    let dana = f.ssh_key("dana", "ed25519");
    let eli = f.ssh_key("eli", "ed25519");
    let allowed = format!(
        "dana@acme.example {}\neli@acme.example,eli@old.example {}\n",
        f.public(&dana),
        f.public(&eli)
    );
    let (policy, allowed_path) = ssh_policy(&f, &allowed, &[("dana@acme.example", "dana")]);
    let commit = f.commit_ssh(&eli);
    let result = policy.verify_commit(&f.open(), commit);
    let r = reason(result.clone());
    assert_eq!(
        r,
        Reason::NotMapped {
            method: Method::Ssh,
            principals: vec!["eli@acme.example".into(), "eli@old.example".into()]
        }
    );
    assert!(r.to_string().contains("maps to nobody"), "{r}");
    assert_same_verdict_as_ssh_keygen(&f, &allowed_path, commit, &result);
}

#[test]
fn a_key_outside_its_validity_window_is_not_valid() {
    if !have_all(&["git", "ssh-keygen"]) {
        return;
    }
    let f = Fixture::new();
    let old = f.ssh_key("old", "ed25519");
    let future = f.ssh_key("future", "ed25519");
    let allowed = format!(
        "dana@acme.example valid-after=\"20200101Z\",valid-before=\"20210101Z\" {}\ndana@acme.example valid-after=\"29990101\" {}\n",
        f.public(&old),
        f.public(&future)
    );
    let (policy, allowed_path) = ssh_policy(&f, &allowed, &[("dana@acme.example", "dana")]);
    let repo = f.open();

    let expired = f.commit_ssh(&old);
    let result = policy.verify_commit(&repo, expired);
    match reason(result.clone()) {
        Reason::KeyNotValid {
            method: Method::Ssh,
            detail,
            ..
        } => {
            assert!(detail.contains(":1: expired at 2021-01-01 00:00:00 UTC"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    assert_same_verdict_as_ssh_keygen(&f, &allowed_path, expired, &result);
    // Inside the window the same signature is good: the time of
    // verification decides, not the commit's own date.
    let in_window = "2020-06-01T00:00:00Z".parse().unwrap();
    assert_eq!(
        policy.verify_commit_at(&repo, expired, in_window).unwrap().identity,
        "dana"
    );

    let early = f.commit_ssh(&future);
    let result = policy.verify_commit(&repo, early);
    match reason(result.clone()) {
        Reason::KeyNotValid { detail, .. } => assert!(detail.contains("not valid before 2999-"), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert_same_verdict_as_ssh_keygen(&f, &allowed_path, early, &result);
}

#[test]
fn ssh_signatures_must_be_for_the_git_namespace() {
    if !have_all(&["git", "ssh-keygen"]) {
        return;
    }
    let f = Fixture::new();
    let dana = f.ssh_key("dana", "ed25519");
    let eli = f.ssh_key("eli", "ed25519");
    let allowed = format!(
        "dana@acme.example {}\neli@acme.example namespaces=\"file,*@acme.example,!git\" {}\n",
        f.public(&dana),
        f.public(&eli)
    );
    let (policy, allowed_path) = ssh_policy(
        &f,
        &allowed,
        &[("dana@acme.example", "dana"), ("eli@acme.example", "eli")],
    );

    // A signature dana made over the same bytes, but for the `file`
    // namespace (as `ssh-keygen -Y sign -n file` makes), put on a commit.
    let repo = f.open();
    let unsigned = f.commit_unsigned();
    let content = stdout(run(f.git().args(["cat-file", "commit", &unsigned.to_string()]))) + "\n";
    let payload = f.write("payload", &content);
    run(Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "file", "-f"])
        .arg(&dana)
        .arg(&payload));
    let sig = fs::read_to_string(format!("{}.sig", payload.display())).unwrap();
    let other_namespace = repo.commit_signed(&content, &sig, None).unwrap();
    let result = policy.verify_commit(&repo, other_namespace);
    assert_eq!(
        reason(result.clone()),
        Reason::WrongNamespace {
            namespace: "file".into()
        }
    );
    assert_same_verdict_as_ssh_keygen(&f, &allowed_path, other_namespace, &result);

    // Eli's key may sign for other namespaces only.
    let commit = f.commit_ssh(&eli);
    let result = policy.verify_commit(&repo, commit);
    match reason(result.clone()) {
        Reason::KeyNotValid { detail, .. } => assert!(detail.contains("namespaces other than `git`"), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert_same_verdict_as_ssh_keygen(&f, &allowed_path, commit, &result);
}

#[test]
fn signatures_of_a_kind_not_configured_or_not_supported_are_refused() {
    if !have_all(&["git", "ssh-keygen"]) {
        return;
    }
    let f = Fixture::new();
    let dana = f.ssh_key("dana", "ed25519");
    let keyring_less = ssh_policy(
        &f,
        &format!("dana@acme.example {}\n", f.public(&dana)),
        &[("dana@acme.example", "dana")],
    )
    .0;
    let repo = f.open();
    let base = f.commit_unsigned();
    let content = stdout(run(f.git().args(["cat-file", "commit", &base.to_string()]))) + "\n";
    let x509 = repo
        .commit_signed(
            &content,
            "-----BEGIN SIGNED MESSAGE-----\nMIAG\n-----END SIGNED MESSAGE-----\n",
            None,
        )
        .unwrap();
    let r = reason(keyring_less.verify_commit(&repo, x509));
    assert!(
        matches!(&r, Reason::Unsupported { detail } if detail.contains("X.509")),
        "{r:?}"
    );
    let pgp = repo
        .commit_signed(
            &content,
            "-----BEGIN PGP SIGNATURE-----\n\n-----END PGP SIGNATURE-----\n",
            None,
        )
        .unwrap();
    let r = reason(keyring_less.verify_commit(&repo, pgp));
    assert!(
        matches!(
            r,
            Reason::UnknownKey {
                method: Method::OpenPgp,
                file: None,
                ..
            }
        ),
        "{r:?}"
    );
    assert!(r.to_string().contains("no openpgp_keys"), "{r}");
}

#[test]
fn verify_range_covers_every_commit_of_the_change_merges_included() {
    if !have_all(&["git", "ssh-keygen"]) {
        return;
    }
    let f = Fixture::new();
    let dana = f.ssh_key("dana", "ed25519");
    let eli = f.ssh_key("eli", "ed25519");
    let allowed = format!(
        "dana@acme.example {}\neli@acme.example {}\n",
        f.public(&dana),
        f.public(&eli)
    );
    let (policy, _) = ssh_policy(
        &f,
        &allowed,
        &[("dana@acme.example", "dana"), ("eli@acme.example", "eli")],
    );

    // Unsigned history before the base does not matter.
    f.commit_unsigned();
    let base = f.commit_ssh(&dana);
    run(f.git().args(["checkout", "-q", "-b", "side"]));
    let side = f.commit_ssh(&eli);
    run(f.git().args(["checkout", "-q", "main"]));
    let main = f.commit_ssh(&dana);
    run(f
        .git()
        .args(["-c", "gpg.format=ssh", "-c"])
        .arg(format!("user.signingkey={}", dana.display()))
        .args(["merge", "-q", "-S", "--no-ff", "-m", "merge side", "side"]));
    let merge = f.head();
    let repo = f.open();

    let signed = policy.verify_range(&repo, Some(base), merge).unwrap();
    let ids: Vec<Oid> = signed.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.contains(&side) && ids.contains(&main));
    assert_eq!(ids[2], merge, "oldest first, the merge last");
    let who: BTreeMap<Oid, &str> = signed.iter().map(|(id, s)| (*id, s.identity.as_str())).collect();
    assert_eq!(who[&side], "eli");
    assert_eq!(who[&merge], "dana");

    let whole = policy.verify_range(&repo, None, merge).unwrap_err();
    assert_eq!(
        whole.reason,
        Reason::Unsigned,
        "the first commit of all history is unsigned"
    );

    // An unsigned commit on a merged side branch stops the range, and is
    // the one named.
    run(f.git().args(["checkout", "-q", "-b", "side2", &base.to_string()]));
    let sneaky = f.commit_unsigned();
    run(f.git().args(["checkout", "-q", "main"]));
    run(f
        .git()
        .args(["-c", "gpg.format=ssh", "-c"])
        .arg(format!("user.signingkey={}", dana.display()))
        .args(["merge", "-q", "-S", "--no-ff", "-m", "merge side2", "side2"]));
    let tip = f.head();
    let u = policy.verify_range(&repo, Some(merge), tip).unwrap_err();
    assert_eq!(u.commit.as_str(), sneaky.to_string());
    assert_eq!(u.reason, Reason::Unsigned);

    // The same through the git adapter, by commit id.
    let git = GitRepo::open(&f.repo).unwrap();
    let sha = |o: Oid| CommitSha::new(o.to_string());
    assert_eq!(git.verify_commit(&policy, &sha(side)).unwrap().identity, "eli");
    let through = git.verify_range(&policy, Some(&sha(base)), &sha(merge)).unwrap();
    assert_eq!(through.last().unwrap().0, sha(merge));
    assert_eq!(
        git.verify_range(&policy, Some(&sha(merge)), &sha(tip))
            .unwrap_err()
            .commit,
        sha(sneaky)
    );
    let bad = git.verify_commit(&policy, &CommitSha::new("abc123")).unwrap_err();
    assert_eq!(bad.reason.code(), "unreadable");
    let missing = git
        .verify_commit(&policy, &CommitSha::new("0123456789abcdef0123456789abcdef01234567"))
        .unwrap_err();
    assert_eq!(missing.reason.code(), "unreadable");
}

#[test]
fn openpgp_commits_verify_as_the_mapped_identity() {
    if !have_all(&["git", "gpg"]) {
        return;
    }
    let f = Fixture::new();
    let eli = f.gpg_key("Eli <eli@acme.example>", "1y");
    let fay = f.gpg_key("Fay <fay@acme.example>", "1y");
    // Fay signs with a signing subkey, as many people do.
    run(f
        .gpg()
        .args(["--passphrase", "", "--quick-add-key", &fay, "ed25519", "sign", "1y"]));
    let fay_sub = f.fingerprints(&fay)[1].clone();
    let armoured = f.export("keys.asc", &[&eli, &fay], true);
    let binary = f.export("keys.gpg", &[&eli, &fay], false);
    let fay_key_id = format!("0x{}", &fay[fay.len() - 16..]);
    let map = [(eli.as_str(), "eli"), (fay_key_id.as_str(), "fay")];
    let repo = f.open();
    let by_eli = f.commit_gpg(&eli);
    let by_fay = f.commit_gpg(&fay);
    for keyring in [&armoured, &binary] {
        let policy = pgp_policy(&f, keyring, &map);
        let signer = policy.verify_commit(&repo, by_eli).unwrap();
        assert_eq!(
            signer,
            Signer {
                identity: "eli".into(),
                principal: eli.clone(),
                method: Method::OpenPgp,
                key: eli.clone()
            }
        );
        let signer = policy.verify_commit(&repo, by_fay).unwrap();
        assert_eq!(signer.identity, "fay");
        assert_eq!(signer.principal, fay, "the principal is the primary key");
        assert_eq!(signer.key, fay_sub, "the subkey made the signature");
    }
    // git's own check agrees that both signatures are good.
    for commit in [by_eli, by_fay] {
        run(f
            .git()
            .args(["-c", "gpg.program=gpg", "verify-commit", &commit.to_string()]));
    }
}

#[test]
fn openpgp_tampered_unknown_and_unmapped_commits_do_not_verify() {
    if !have_all(&["git", "gpg"]) {
        return;
    }
    let f = Fixture::new();
    let eli = f.gpg_key("Eli <eli@acme.example>", "1y");
    let fay = f.gpg_key("Fay <fay@acme.example>", "1y");
    let mallory = f.gpg_key("Mallory <mallory@acme.example>", "1y");
    let keyring = f.export("keys.asc", &[&eli, &fay], true);
    let policy = pgp_policy(&f, &keyring, &[(&eli, "eli")]);
    let repo = f.open();

    let signed = f.commit_gpg(&eli);
    let forged = f.tampered(signed);
    let r = reason(policy.verify_commit(&repo, forged));
    assert!(
        matches!(
            r,
            Reason::BadSignature {
                method: Method::OpenPgp,
                ..
            }
        ),
        "{r:?}"
    );

    let r = reason(policy.verify_commit(&repo, f.commit_gpg(&mallory)));
    match &r {
        Reason::UnknownKey {
            method: Method::OpenPgp,
            key,
            file,
        } => {
            assert_eq!(key, &mallory);
            assert_eq!(file.as_deref(), Some(keyring.as_path()));
        }
        other => panic!("{other:?}"),
    }

    let r = reason(policy.verify_commit(&repo, f.commit_gpg(&fay)));
    assert_eq!(
        r,
        Reason::NotMapped {
            method: Method::OpenPgp,
            principals: vec![fay.clone()]
        }
    );

    // A signature over a SHA-1 hash, made by gpg when asked, is refused
    // even though it verifies.
    let base = f.commit_unsigned();
    let content = stdout(run(f.git().args(["cat-file", "commit", &base.to_string()]))) + "\n";
    let payload = f.write("payload", &content);
    let sha1 = run(f
        .gpg()
        .args([
            "--digest-algo",
            "SHA1",
            "--armor",
            "--detach-sign",
            "--local-user",
            &eli,
            "--output",
            "-",
        ])
        .arg(&payload));
    let weak = repo
        .commit_signed(&content, std::str::from_utf8(&sha1.stdout).unwrap(), None)
        .unwrap();
    match reason(policy.verify_commit(&repo, weak)) {
        Reason::Unsupported { detail } => assert!(detail.contains("SHA1 hash, which is too weak"), "{detail}"),
        other => panic!("{other:?}"),
    }

    // With only a keyring configured, no SSH key is trusted.
    if have("ssh-keygen") {
        let dana = f.ssh_key("dana", "ed25519");
        let r = reason(policy.verify_commit(&repo, f.commit_ssh(&dana)));
        assert!(
            matches!(
                r,
                Reason::UnknownKey {
                    method: Method::Ssh,
                    file: None,
                    ..
                }
            ),
            "{r:?}"
        );
        assert!(r.to_string().contains("no allowed_signers"), "{r}");
    }
}

#[test]
fn openpgp_expired_and_revoked_keys_are_not_valid() {
    if !have_all(&["git", "gpg"]) {
        return;
    }
    let f = Fixture::new();
    let eli = f.gpg_key("Eli <eli@acme.example>", "1d");
    let fay = f.gpg_key("Fay <fay@acme.example>", "1y");
    let repo = f.open();
    let by_eli = f.commit_gpg(&eli);
    let by_fay = f.commit_gpg(&fay);
    let map = [(eli.as_str(), "eli"), (fay.as_str(), "fay")];

    let policy = pgp_policy(&f, &f.export("keys.asc", &[&eli, &fay], true), &map);
    assert_eq!(policy.verify_commit(&repo, by_eli).unwrap().identity, "eli");
    let later = Utc::now() + Duration::days(2);
    match reason(policy.verify_commit_at(&repo, by_eli, later)) {
        Reason::KeyNotValid {
            method: Method::OpenPgp,
            key,
            detail,
        } => {
            assert_eq!(key, eli);
            assert!(detail.contains("expired at"), "{detail}");
        }
        other => panic!("{other:?}"),
    }

    // gpg keeps a revocation certificate for every key it makes; importing
    // it revokes Fay's key, and the exported keyring says so.
    let cert = fs::read_to_string(f.gnupg.join(format!("openpgp-revocs.d/{fay}.rev"))).unwrap();
    let cert = cert.replace(
        ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----",
    );
    let cert_path = f.write("fay.rev", &cert);
    run(f.gpg().arg("--import").arg(&cert_path));
    let policy = pgp_policy(&f, &f.export("revoked.asc", &[&eli, &fay], true), &map);
    match reason(policy.verify_commit(&repo, by_fay)) {
        Reason::KeyNotValid { detail, .. } => assert!(detail.contains("is revoked"), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert!(
        policy.verify_commit(&repo, by_eli).is_ok(),
        "the other key is untouched"
    );
}

fn load_error(f: &Fixture, config: VerifyConfig) -> String {
    let e: VerifyError = VerifyPolicy::load(&config, f.dir.path()).unwrap_err();
    e.to_string()
}

#[test]
fn bad_trust_files_and_signers_are_load_errors_that_name_where() {
    if !have_all(&["git", "ssh-keygen", "gpg"]) {
        return;
    }
    let f = Fixture::new();
    let dana = f.ssh_key("dana", "ed25519");
    let eli = f.gpg_key("Eli <eli@acme.example>", "1y");
    let keyring = f.export("keys.asc", &[&eli], true);
    let allowed = f.write(
        "allowed_signers",
        &format!(
            "dana@acme.example {}\nshared@acme.example {}\n",
            f.public(&dana),
            f.public(&dana)
        ),
    );
    let config = |ssh: Option<&Path>, pgp: Option<&Path>, map: &[(&str, &str)]| VerifyConfig {
        allowed_signers: ssh.map(Path::to_path_buf),
        openpgp_keys: pgp.map(Path::to_path_buf),
        signers: signers(map),
    };

    let e = load_error(&f, config(Some(Path::new("missing")), None, &[("a@b", "a")]));
    assert!(e.starts_with("reading ") && e.contains("missing"), "{e}");

    let bad = f.write("bad_signers", "# ok\n*@acme.example ssh-ed25519 AAAA\n");
    let e = load_error(&f, config(Some(&bad), None, &[("a@b", "a")]));
    assert!(e.contains("bad_signers:2: ") && e.contains("is a pattern"), "{e}");

    let e = load_error(&f, config(Some(&allowed), None, &[("dona@acme.example", "dana")]));
    assert!(e.contains("principal `dona@acme.example` is on no line"), "{e}");

    let e = load_error(
        &f,
        config(
            Some(&allowed),
            None,
            &[("dana@acme.example", "dana"), ("shared@acme.example", "eli")],
        ),
    );
    assert!(
        e.contains("allowed_signers:2: ") && e.contains("different identities"),
        "{e}"
    );

    let e = load_error(&f, config(Some(&allowed), None, &[(&eli, "eli")]));
    assert!(e.contains("openpgp_keys is not given"), "{e}");

    let e = load_error(
        &f,
        config(
            None,
            Some(&keyring),
            &[("0123456789ABCDEF0123456789ABCDEF01234567", "eli")],
        ),
    );
    assert!(e.contains("no key in") && e.contains("keys.asc"), "{e}");

    let e = load_error(&f, config(None, Some(&keyring), &[("dana@acme.example", "dana")]));
    assert!(e.contains("allowed_signers is not given"), "{e}");

    let short_id = eli[eli.len() - 16..].to_string();
    let e = load_error(
        &f,
        config(None, Some(&keyring), &[(&eli, "eli"), (&short_id, "someone")]),
    );
    assert!(
        e.contains(&format!(
            "key {eli} and its subkeys are mapped to different identities (eli, someone)"
        )),
        "{e}"
    );
    let lower = format!("0x{}", eli.to_lowercase());
    let e = load_error(&f, config(None, Some(&keyring), &[(&eli, "eli"), (&lower, "someone")]));
    assert!(e.contains("are the same key, mapped to"), "{e}");

    let secret = f.path("secret.asc");
    let out = run(f.gpg().args([
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
        "--armor",
        "--export-secret-keys",
        &eli,
    ]));
    fs::write(
        &secret,
        format!("Eli's keys\n{}", String::from_utf8(out.stdout).unwrap()),
    )
    .unwrap();
    let e = load_error(&f, config(None, Some(&secret), &[(&eli, "eli")]));
    assert!(e.contains("secret.asc:2: ") && e.contains("public keys only"), "{e}");

    let junk = f.write(
        "junk.asc",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm90IGEga2V5\n-----END PGP PUBLIC KEY BLOCK-----\n",
    );
    let e = load_error(&f, config(None, Some(&junk), &[(&eli, "eli")]));
    assert!(e.contains("junk.asc:1: "), "{e}");

    let e = load_error(&f, config(None, None, &[(&eli, "eli")]));
    assert!(e.contains("give allowed_signers"), "{e}");
}

/// The controller with `source.verify`: a signed change is planned with its
/// signer as the one who made it (who cannot approve it, whatever git's name
/// fields say), and an unsigned commit on top is not promoted, visibly.
#[tokio::test]
async fn the_controller_promotes_only_signed_changes_and_knows_their_signer() {
    use std::sync::Arc;
    use tollgate::controller::{Controller, ControllerError, NoDevices};
    use tollgate::promotion::{Phase, ReviewState};
    if !have_all(&["git", "ssh-keygen"]) {
        return;
    }
    let f = Fixture::new();
    let dana = f.ssh_key("dana", "ed25519");
    let ios1 = f.ssh_key("ios1", "ed25519");
    let allowed = format!(
        "dana@acme.example {}\nios1@acme.example {}\n",
        f.public(&dana),
        f.public(&ios1)
    );
    let (policy, _) = ssh_policy(
        &f,
        &allowed,
        &[("dana@acme.example", "dana"), ("ios1@acme.example", "ios1")],
    );
    let config = "apiVersion: tollgate.dev/v1alpha1\nkind: Config\nmetadata: {name: acme}\nrings:\n  - {name: canary, selector: {groups: [mdm-canary]}, soak: 1h}\n  - {name: broad, selector: {all: true}}\napprovers:\n  mdm-ios: {users: [ios1, ios2]}\n";
    let ios = "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata: {name: corp-ios, owners: [mdm-ios]}\nspec:\n  platform: ios\n  targets: {groups: [phones]}\n  settings:\n    passcode.min_length: 8\n";
    fs::create_dir_all(f.repo.join("baselines/ios")).unwrap();
    fs::write(f.repo.join("tollgate.yaml"), config).unwrap();
    fs::write(f.repo.join("baselines/ios/corp-ios.yaml"), ios).unwrap();
    run(f.git().args(["add", "-A"]));
    f.commit_ssh(&dana);
    let db = format!("sqlite://{}", f.path("state.db").display());
    let c = Controller::new(
        tollgate::store::open(&db).await.unwrap(),
        format!("file://{}", f.repo.display()),
        "main".into(),
        f.path("mirror"),
        Arc::new(NoDevices),
    )
    .with_verify(Arc::new(policy));
    let now = Utc::now();
    c.adopt("HEAD", "dana", now).await.unwrap();

    // ios1 signs a tightening; git says "Anyone" wrote it.
    fs::write(
        f.repo.join("baselines/ios/corp-ios.yaml"),
        ios.replace("min_length: 8", "min_length: 10"),
    )
    .unwrap();
    run(f.git().args(["add", "-A"]));
    f.commit_ssh(&ios1);
    let id = c.poll(now).await.unwrap().expect("a promotion of the signed change");
    let p = c.load(id).await.unwrap().1.promotion;
    assert!(p.authors.contains(&"ios1".to_string()), "{:?}", p.authors);
    let p = c.review(id, "ios1", ReviewState::Approved, now).await.unwrap();
    assert_eq!(p.phase, Phase::PendingApproval { ring: 0 });
    assert_eq!(
        p.approvals[0].rejected[0].reason,
        "authored or committed a commit of this change"
    );
    let p = c.review(id, "ios2", ReviewState::Approved, now).await.unwrap();
    assert!(matches!(p.phase, Phase::Soaking { ring: 0, .. }), "{:?}", p.phase);

    // An unsigned commit on top is not promoted, and says why.
    fs::write(
        f.repo.join("baselines/ios/corp-ios.yaml"),
        ios.replace("min_length: 8", "min_length: 4"),
    )
    .unwrap();
    run(f.git().args(["add", "-A"]));
    let unsigned = f.commit_unsigned();
    let err = c.poll(now).await.unwrap_err();
    assert!(matches!(err, ControllerError::Unverified { .. }), "{err}");
    let shown = format!("{err}");
    assert!(
        shown.contains(&unsigned.to_string()[..12]) && shown.contains("not signed"),
        "{shown}"
    );
    assert!(matches!(
        c.load(id).await.unwrap().1.promotion.phase,
        Phase::Soaking { .. }
    ));
    let refused = c
        .store()
        .audit_after(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "revision_refused")
        .count();
    assert_eq!(refused, 1);
}
