//! The git and working-tree adapters against real repositories, built by the
//! tests themselves (git2 for content, the `git` CLI only for `git daemon`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use git2::{ObjectType, Oid, Repository, RepositoryInitOptions, Signature, Time};
use tempfile::TempDir;
use tollgate::ids::CommitSha;
use tollgate::source::git::{clone_or_fetch, ChangeStatus, GitError, GitRepo, PathChange, MIRROR_PACK_LIMIT};
use tollgate::source::worktree::{read_worktree, WorktreeError};
use tollgate::tree::{FileContent, RepoPath, SourceFile, MAX_FILE_BYTES};

const TREE: i32 = 0o040000;
const FILE: i32 = 0o100644;
const EXEC: i32 = 0o100755;
const LINK: i32 = 0o120000;
const GITLINK: i32 = 0o160000;

/// A repository whose commits are written object by object: nothing is ever
/// checked out, so every read the adapter does has to come from git objects.
struct Fixture {
    _dir: TempDir,
    path: PathBuf,
    repo: Repository,
    /// The tree of the next commit: repo path -> (mode, object id).
    state: BTreeMap<String, (i32, Oid)>,
    clock: i64,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::init(false)
    }

    fn bare() -> Fixture {
        Fixture::init(true)
    }

    fn init(bare: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(if bare { "governed.git" } else { "governed" });
        let repo = Repository::init_opts(&path, RepositoryInitOptions::new().bare(bare).initial_head("main")).unwrap();
        Fixture {
            _dir: dir,
            path,
            repo,
            state: BTreeMap::new(),
            clock: 1_700_000_000,
        }
    }

    fn write(&mut self, path: &str, content: impl AsRef<[u8]>) -> &mut Self {
        self.put(path, FILE, content.as_ref())
    }

    fn write_exec(&mut self, path: &str, content: impl AsRef<[u8]>) -> &mut Self {
        self.put(path, EXEC, content.as_ref())
    }

    fn link(&mut self, path: &str, target: &str) -> &mut Self {
        self.put(path, LINK, target.as_bytes())
    }

    fn gitlink(&mut self, path: &str) -> &mut Self {
        // A submodule commit lives in another repository; it is not in ours.
        let oid = Oid::from_str("5eb3c0ffee5eb3c0ffee5eb3c0ffee5eb3c0ffee").unwrap();
        self.state.insert(path.to_string(), (GITLINK, oid));
        self
    }

    fn remove(&mut self, prefix: &str) -> &mut Self {
        let dir = format!("{prefix}/");
        self.state.retain(|p, _| p != prefix && !p.starts_with(&dir));
        self
    }

    fn put(&mut self, path: &str, mode: i32, bytes: &[u8]) -> &mut Self {
        let oid = self.repo.blob(bytes).unwrap();
        self.state.insert(path.to_string(), (mode, oid));
        self
    }

    fn signature(&mut self, author: &str) -> Signature<'static> {
        self.clock += 60;
        Signature::new(author, "someone@example.com", &Time::new(self.clock, 0)).unwrap()
    }

    fn tree(&self) -> Oid {
        let entries: Vec<(&str, i32, Oid)> = self.state.iter().map(|(p, (m, o))| (p.as_str(), *m, *o)).collect();
        build_tree(&self.repo, &entries)
    }

    /// Commits the current state on top of `main`.
    fn commit(&mut self, message: &str) -> Oid {
        self.commit_as("Alice Admin", message)
    }

    fn commit_as(&mut self, author: &str, message: &str) -> Oid {
        let parents: Vec<Oid> = self.head().into_iter().collect();
        self.commit_with(author, message, &parents, Some("HEAD"))
    }

    /// Commits the current state with explicit parents, touching no ref.
    fn commit_detached(&mut self, message: &str, parents: &[Oid]) -> Oid {
        self.commit_with("Alice Admin", message, parents, None)
    }

    fn commit_with(&mut self, author: &str, message: &str, parents: &[Oid], update_ref: Option<&str>) -> Oid {
        let sig = self.signature(author);
        let tree = self.repo.find_tree(self.tree()).unwrap();
        let parents: Vec<git2::Commit<'_>> = parents.iter().map(|p| self.repo.find_commit(*p).unwrap()).collect();
        let parent_refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
        self.repo
            .commit(update_ref, &sig, &sig, message, &tree, &parent_refs)
            .unwrap()
    }

    /// Commits an already written root tree, touching no ref.
    fn commit_tree(&mut self, root: Oid, message: &str, parents: &[Oid]) -> Oid {
        let sig = self.signature("Mallory");
        let tree = self.repo.find_tree(root).unwrap();
        let parents: Vec<git2::Commit<'_>> = parents.iter().map(|p| self.repo.find_commit(*p).unwrap()).collect();
        let parent_refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
        self.repo
            .commit(None, &sig, &sig, message, &tree, &parent_refs)
            .unwrap()
    }

    /// Moves `main` anywhere, as a force-push would.
    fn force_main(&self, to: Oid) {
        self.repo.reference("refs/heads/main", to, true, "force-push").unwrap();
    }

    fn head(&self) -> Option<Oid> {
        self.repo.head().ok().and_then(|h| h.target())
    }

    fn open(&self) -> GitRepo {
        GitRepo::open(&self.path).unwrap()
    }

    fn loose_object(&self, oid: Oid) -> PathBuf {
        let hex = oid.to_string();
        self.repo.path().join("objects").join(&hex[..2]).join(&hex[2..])
    }

    /// The id of the tree (or blob) at `path` in commit `commit`.
    fn object_at(&self, commit: Oid, path: &str) -> Oid {
        let tree = self.repo.find_commit(commit).unwrap().tree().unwrap();
        tree.get_path(Path::new(path)).unwrap().id()
    }
}

/// Writes nested trees for a flat list of `path, mode, oid`.
fn build_tree(repo: &Repository, entries: &[(&str, i32, Oid)]) -> Oid {
    let mut here = repo.treebuilder(None).unwrap();
    let mut subdirs: BTreeMap<&str, Vec<(&str, i32, Oid)>> = BTreeMap::new();
    for &(path, mode, oid) in entries {
        match path.split_once('/') {
            Some((dir, rest)) => subdirs.entry(dir).or_default().push((rest, mode, oid)),
            None => {
                here.insert(path, oid, mode).unwrap();
            }
        }
    }
    for (dir, children) in subdirs {
        let oid = build_tree(repo, &children);
        here.insert(dir, oid, TREE).unwrap();
    }
    here.write().unwrap()
}

fn sha(oid: Oid) -> CommitSha {
    CommitSha::new(oid.to_string())
}

fn path(p: &str) -> RepoPath {
    RepoPath::new(p).unwrap()
}

fn blob(p: &str, content: &str) -> SourceFile {
    SourceFile {
        path: path(p),
        content: FileContent::Blob(content.as_bytes().to_vec()),
    }
}

fn symlink(p: &str, target: &str) -> SourceFile {
    SourceFile {
        path: path(p),
        content: FileContent::Symlink {
            target: target.to_string(),
        },
    }
}

fn submodule(p: &str) -> SourceFile {
    SourceFile {
        path: path(p),
        content: FileContent::Submodule,
    }
}

fn change(p: &str, status: ChangeStatus) -> PathChange {
    PathChange { path: path(p), status }
}

fn paths(files: &[SourceFile]) -> Vec<&str> {
    files.iter().map(|f| f.path.as_str()).collect()
}

/// Every error in the chain, so assertions can look at causes too.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// ---------------------------------------------------------------- reading

#[test]
fn reads_an_old_revision_without_any_checkout() {
    let mut fx = Fixture::new();
    fx.write("tollgate.yaml", "kind: Config\n")
        .write("baselines/ios/corp.yaml", "min_length: 8\n")
        .write("exceptions/legal.yml", "kind: Exception\n")
        .write("policy/risk.rego", "package tollgate\n")
        .write("baselines/notes.txt", "not governed\n")
        .write("README.md", "# readme\n")
        .write("docs/baselines/example.yaml", "not under a governed root\n");
    let first = fx.commit("first");
    fx.write("baselines/ios/corp.yaml", "min_length: 4\n")
        .remove("exceptions");
    let second = fx.commit("second");

    let repo = fx.open();
    assert_eq!(repo.resolve("HEAD~1").unwrap(), sha(first));
    let old = repo.read_governed(&sha(first)).unwrap();
    assert_eq!(
        old,
        vec![
            blob("baselines/ios/corp.yaml", "min_length: 8\n"),
            blob("exceptions/legal.yml", "kind: Exception\n"),
            blob("policy/risk.rego", "package tollgate\n"),
            blob("tollgate.yaml", "kind: Config\n"),
        ]
    );
    let new = repo.read_governed(&sha(second)).unwrap();
    assert_eq!(
        paths(&new),
        ["baselines/ios/corp.yaml", "policy/risk.rego", "tollgate.yaml"]
    );
    assert_eq!(new[0], blob("baselines/ios/corp.yaml", "min_length: 4\n"));

    // The working directory never received a single file.
    let listed: Vec<_> = fs::read_dir(&fx.path)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(listed, [".git"]);
}

#[test]
fn reads_from_a_bare_repository() {
    let mut fx = Fixture::bare();
    fx.write("baselines/macos/deep/er/corp.yaml", "a: 1\n")
        .write("tollgate.yml", "kind: Config\n");
    let tip = fx.commit("only");
    assert!(fx.repo.is_bare());

    let repo = fx.open();
    let head = repo.resolve("HEAD").unwrap();
    assert_eq!(head, sha(tip));
    assert_eq!(
        repo.read_governed(&head).unwrap(),
        vec![
            blob("baselines/macos/deep/er/corp.yaml", "a: 1\n"),
            blob("tollgate.yml", "kind: Config\n")
        ]
    );
}

#[test]
fn resolve_understands_revspecs_and_names_what_it_cannot_find() {
    let mut fx = Fixture::new();
    fx.write("tollgate.yaml", "1");
    let c1 = fx.commit("one");
    fx.write("tollgate.yaml", "2");
    let c2 = fx.commit("two");
    fx.write("tollgate.yaml", "3");
    let c3 = fx.commit("three");
    let tagger = fx.signature("Release Bot");
    let c1_obj = fx.repo.find_object(c1, None).unwrap();
    fx.repo.tag_lightweight("v1", &c1_obj, false).unwrap();
    let c2_obj = fx.repo.find_object(c2, None).unwrap();
    fx.repo.tag("v2", &c2_obj, &tagger, "release two", false).unwrap();

    let repo = fx.open();
    assert_eq!(repo.resolve("HEAD").unwrap(), sha(c3));
    assert_eq!(repo.resolve("main").unwrap(), sha(c3));
    assert_eq!(repo.resolve("HEAD~1").unwrap(), sha(c2));
    assert_eq!(repo.resolve("HEAD~2").unwrap(), sha(c1));
    assert_eq!(repo.resolve("v1").unwrap(), sha(c1), "lightweight tag");
    assert_eq!(repo.resolve("v2").unwrap(), sha(c2), "annotated tag is peeled");
    assert_eq!(repo.resolve(&c1.to_string()[..8]).unwrap(), sha(c1), "short sha");
    assert_eq!(repo.resolve(&c2.to_string()).unwrap(), sha(c2), "full sha");

    for bad in ["no-such-branch", "HEAD~7", "deadbeefdeadbeef"] {
        let err = repo.resolve(bad).unwrap_err();
        assert!(matches!(err, GitError::Resolve { .. }), "{bad}: {err:?}");
        assert!(err.to_string().contains(bad), "error should name {bad:?}: {err}");
    }
    // A tree is not a commit.
    assert!(matches!(repo.resolve("HEAD^{tree}"), Err(GitError::Resolve { .. })));
}

#[test]
fn commit_ids_must_exist_and_be_whole() {
    let mut fx = Fixture::new();
    fx.write("tollgate.yaml", "x");
    let tip = fx.commit("one");
    let repo = fx.open();

    let short = CommitSha::new(&tip.to_string()[..12]);
    assert!(matches!(repo.read_governed(&short), Err(GitError::BadCommitSha { .. })));
    let absent = CommitSha::new("0123456789abcdef0123456789abcdef01234567");
    let err = repo.read_governed(&absent).unwrap_err();
    assert!(matches!(err, GitError::CommitNotFound { .. }));
    assert!(err.to_string().contains(absent.as_str()), "{err}");
}

#[test]
fn symlinks_and_submodules_under_governed_roots_are_reported_not_followed() {
    let mut fx = Fixture::new();
    fx.write("baselines/ios/corp.yaml", "a: 1\n")
        .link("baselines/ios/passwd.yaml", "/etc/passwd")
        .link("baselines/linkdir", "../../outside")
        .gitlink("baselines/vendor")
        .gitlink("policy/shared")
        .link("tollgate.yaml", "elsewhere/tollgate.yaml")
        .write("baselines/notes.txt", "ignored\n")
        .link("README.md", "docs/README.md")
        .link("docs/link.yaml", "/etc/shadow")
        .gitlink("third_party/lib");
    let tip = sha(fx.commit("links"));

    let files = fx.open().read_governed(&tip).unwrap();
    assert_eq!(
        files,
        vec![
            blob("baselines/ios/corp.yaml", "a: 1\n"),
            symlink("baselines/ios/passwd.yaml", "/etc/passwd"),
            symlink("baselines/linkdir", "../../outside"),
            submodule("baselines/vendor"),
            submodule("policy/shared"),
            symlink("tollgate.yaml", "elsewhere/tollgate.yaml"),
        ]
    );
}

#[test]
fn a_governed_root_that_is_itself_a_symlink_is_reported() {
    let mut fx = Fixture::new();
    fx.link("baselines", "/srv/other-repo/baselines")
        .write("exceptions/e.yaml", "e\n");
    let tip = sha(fx.commit("root link"));
    let repo = fx.open();
    assert_eq!(
        repo.read_governed(&tip).unwrap(),
        vec![
            symlink("baselines", "/srv/other-repo/baselines"),
            blob("exceptions/e.yaml", "e\n")
        ]
    );
    // Asking for a file "inside" the link finds nothing: git has no such path.
    assert!(repo
        .read_paths(&tip, &[path("baselines/ios/a.yaml")])
        .unwrap()
        .is_empty());
}

/// A zlib stream made of stored (uncompressed) deflate blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let chunks: Vec<&[u8]> = data.chunks(0xffff).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let len = chunk.len() as u16;
        out.push(u8::from(i + 1 == chunks.len()));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

#[test]
fn oversized_blob_is_reported_by_size_and_never_loaded() {
    let mut fx = Fixture::new();
    let at_limit = "x".repeat(MAX_FILE_BYTES as usize);
    fx.write("baselines/edge.yaml", &at_limit)
        .write("baselines/huge.yaml", vec![b'y'; MAX_FILE_BYTES as usize + 1]);
    let tip = fx.commit("big");
    let huge = fx.object_at(tip, "baselines/huge.yaml");

    // Replace the loose object with one whose header still says "blob of
    // MAX+1 bytes" but whose body is a few bytes of something else. Loading
    // it now fails (git checks the content against the object id), so a
    // successful read proves only the header was looked at.
    let object = fx.loose_object(huge);
    fs::remove_file(&object).unwrap();
    let lie = format!("blob {}\0not the real content", MAX_FILE_BYTES + 1);
    fs::write(&object, zlib_stored(lie.as_bytes())).unwrap();
    let fresh = Repository::open(&fx.path).unwrap();
    assert!(fresh.find_blob(huge).is_err(), "the doctored blob must be unreadable");

    let repo = fx.open();
    let files = repo.read_governed(&sha(tip)).unwrap();
    assert_eq!(paths(&files), ["baselines/edge.yaml", "baselines/huge.yaml"]);
    assert!(matches!(&files[0].content, FileContent::Blob(b) if b.len() as u64 == MAX_FILE_BYTES));
    assert_eq!(
        files[1].content,
        FileContent::TooLarge {
            size: MAX_FILE_BYTES + 1
        }
    );
    let named = repo.read_paths(&sha(tip), &[path("baselines/huge.yaml")]).unwrap();
    assert_eq!(named, files[1..]);
}

/// Writes a tree object byte by byte, so it can hold names git's own tools
/// refuse to create.
fn raw_tree(repo: &Repository, entries: &[(&str, i32, Oid)]) -> Oid {
    let mut bytes = Vec::new();
    for (name, mode, oid) in entries {
        bytes.extend_from_slice(format!("{mode:o} {name}\0").as_bytes());
        bytes.extend_from_slice(oid.as_bytes());
    }
    repo.odb().unwrap().write(ObjectType::Tree, &bytes).unwrap()
}

#[test]
fn crafted_dot_dot_entry_is_an_error_naming_the_path() {
    let mut fx = Fixture::new();
    fx.write("baselines/ok.yaml", "ok\n");
    let clean = fx.commit("clean");

    let evil_blob = fx.repo.blob(b"kind: Baseline\n").unwrap();
    let inner = raw_tree(&fx.repo, &[("evil.yaml", FILE, evil_blob)]);
    let ok_blob = fx.repo.blob(b"ok\n").unwrap();
    let baselines = raw_tree(&fx.repo, &[("..", TREE, inner), ("ok.yaml", FILE, ok_blob)]);
    let root = build_tree(&fx.repo, &[("baselines", TREE, baselines)]);
    let evil = fx.commit_tree(root, "escape", &[clean]);

    let repo = fx.open();
    let err = repo.read_governed(&sha(evil)).unwrap_err();
    assert!(matches!(err, GitError::UnsafePath { .. }), "{err:?}");
    assert!(err.to_string().contains("baselines/../evil.yaml"), "{err}");
    assert!(err.to_string().contains(&evil.to_string()), "names the commit: {err}");

    let err = repo.changed_paths(&sha(clean), &sha(evil)).unwrap_err();
    assert!(err.to_string().contains("baselines/../evil.yaml"), "{err}");
}

#[test]
fn read_roots_walks_only_the_roots_asked_for() {
    let mut fx = Fixture::new();
    fx.write("tollgate.yaml", "cfg\n")
        .write("policy/risk.rego", "package r\n")
        .write("baselines/ios/a.yaml", "a\n")
        .write("docs/x.yaml", "doc\n");
    let tip = fx.commit("roots");
    // Without the baselines tree a walk of it would fail.
    fs::remove_file(fx.loose_object(fx.object_at(tip, "baselines"))).unwrap();

    let repo = fx.open();
    assert_eq!(
        repo.read_roots(&sha(tip), &["tollgate.yaml", "tollgate.yml", "policy", "docs"])
            .unwrap(),
        vec![blob("policy/risk.rego", "package r\n"), blob("tollgate.yaml", "cfg\n")]
    );
    assert!(
        repo.read_governed(&sha(tip)).is_err(),
        "the full read does need baselines/"
    );
}

#[test]
fn read_paths_returns_only_named_governed_files() {
    let mut fx = Fixture::new();
    fx.write("baselines/ios/a.yaml", "a\n")
        .write("baselines/ios/b.yaml", "b\n")
        .link("baselines/ios/l.yaml", "a.yaml")
        .write("README.md", "readme\n")
        .write("tollgate.yaml", "cfg\n");
    let tip = sha(fx.commit("files"));

    let got = fx
        .open()
        .read_paths(
            &tip,
            &[
                path("tollgate.yaml"),
                path("baselines/ios/b.yaml"),
                path("baselines/ios/l.yaml"),
                path("baselines/ios/missing.yaml"),
                path("baselines/ios"),
                path("README.md"),
                path("tollgate.yaml"),
            ],
        )
        .unwrap();
    assert_eq!(
        got,
        vec![
            blob("baselines/ios/b.yaml", "b\n"),
            symlink("baselines/ios/l.yaml", "a.yaml"),
            blob("tollgate.yaml", "cfg\n"),
        ]
    );
}

// ---------------------------------------------------------------- changes

#[test]
fn changed_paths_reports_adds_modifications_deletions_and_type_changes() {
    let mut fx = Fixture::new();
    fx.write("baselines/ios/a.yaml", "a1\n")
        .write("baselines/ios/b.yaml", "b\n")
        .write("baselines/ios/c.yaml", "c\n")
        .write("baselines/ios/x.yaml", "x\n")
        .write("baselines/macos/m.yaml", "m\n")
        .write("baselines/notes.txt", "n1\n")
        .write("baselines/was-file.yaml", "f\n")
        .write("exceptions/e.yaml", "e\n")
        .write("README.md", "r1\n")
        .write("docs/guide.md", "g1\n");
    let base = sha(fx.commit("base"));
    fx.write("baselines/ios/a.yaml", "a2\n") // modified
        .remove("baselines/ios/b.yaml") // deleted
        .link("baselines/ios/c.yaml", "c.yaml.real") // file -> symlink
        .write_exec("baselines/ios/x.yaml", "x\n") // exec bit only: not a change
        .write("baselines/android/n.yaml", "n\n") // added, in a new subtree
        .link("baselines/linkdir", "/tmp") // symlink added under a governed root
        .write("baselines/notes.txt", "n2\n") // not governed
        .remove("baselines/was-file.yaml")
        .write("baselines/was-file.yaml/inner.yaml", "i\n") // file -> directory
        .remove("exceptions") // whole root gone
        .write("policy/new.rego", "package p\n") // new root
        .write("README.md", "r2\n")
        .write("docs/guide.md", "g2\n");
    let head = sha(fx.commit("head"));

    let repo = fx.open();
    let forward = repo.changed_paths(&base, &head).unwrap();
    assert_eq!(
        forward,
        vec![
            change("baselines/android/n.yaml", ChangeStatus::Added),
            change("baselines/ios/a.yaml", ChangeStatus::Modified),
            change("baselines/ios/b.yaml", ChangeStatus::Deleted),
            change("baselines/ios/c.yaml", ChangeStatus::Modified),
            change("baselines/linkdir", ChangeStatus::Added),
            change("baselines/was-file.yaml", ChangeStatus::Deleted),
            change("baselines/was-file.yaml/inner.yaml", ChangeStatus::Added),
            change("exceptions/e.yaml", ChangeStatus::Deleted),
            change("policy/new.rego", ChangeStatus::Added),
        ]
    );

    // Going back is the mirror image.
    let backward = repo.changed_paths(&head, &base).unwrap();
    let mirrored: Vec<PathChange> = forward
        .iter()
        .map(|c| PathChange {
            path: c.path.clone(),
            status: match c.status {
                ChangeStatus::Added => ChangeStatus::Deleted,
                ChangeStatus::Deleted => ChangeStatus::Added,
                ChangeStatus::Modified => ChangeStatus::Modified,
            },
        })
        .collect();
    assert_eq!(backward, mirrored);
}

#[test]
fn changed_paths_is_empty_for_identical_or_unrelated_changes() {
    let mut fx = Fixture::new();
    fx.write("baselines/ios/a.yaml", "a\n").write("README.md", "1\n");
    let first = sha(fx.commit("first"));
    fx.write("README.md", "2\n")
        .write("docs/baselines/fake.yaml", "not governed\n")
        .write("baselines/ios/notes.md", "not governed either\n");
    let second = sha(fx.commit("docs only"));

    let repo = fx.open();
    assert_eq!(repo.changed_paths(&first, &first).unwrap(), vec![]);
    assert_eq!(repo.changed_paths(&first, &second).unwrap(), vec![]);
}

#[test]
fn changed_paths_and_read_paths_never_open_untouched_subtrees() {
    let mut fx = Fixture::new();
    for i in 0..50 {
        fx.write(&format!("baselines/android/b{i:03}.yaml"), format!("n: {i}\n"));
    }
    fx.write("baselines/ios/a.yaml", "a1\n")
        .write("docs/huge/readme.md", "1\n");
    let base = fx.commit("base");
    fx.write("baselines/ios/a.yaml", "a2\n")
        .write("docs/huge/readme.md", "2\n");
    let head = fx.commit("head");

    // Remove the objects a full walk would need: the unchanged android
    // subtree (shared by both commits) and the docs trees (outside every
    // governed root). Only a walk that skips them can still succeed.
    let android = fx.object_at(head, "baselines/android");
    assert_eq!(android, fx.object_at(base, "baselines/android"));
    let mut removed = vec![android];
    for commit in [base, head] {
        removed.push(fx.object_at(commit, "docs"));
        removed.push(fx.object_at(commit, "docs/huge"));
    }
    for oid in removed {
        fs::remove_file(fx.loose_object(oid)).unwrap();
    }

    let repo = fx.open();
    assert_eq!(
        repo.changed_paths(&sha(base), &sha(head)).unwrap(),
        vec![change("baselines/ios/a.yaml", ChangeStatus::Modified)]
    );
    assert_eq!(
        repo.read_paths(&sha(head), &[path("baselines/ios/a.yaml")]).unwrap(),
        vec![blob("baselines/ios/a.yaml", "a2\n")]
    );
    // A full read does need the android subtree, and says where it broke.
    let err = repo.read_governed(&sha(head)).unwrap_err();
    assert!(matches!(err, GitError::ReadObject { .. }), "{err:?}");
    assert!(err.to_string().contains("baselines/android"), "{err}");
}

#[test]
fn changed_paths_pairs_entries_in_git_tree_order() {
    // Git sorts a directory as if its name ended in '/': "a.yaml" < "a/" <
    // "a0.yaml". A plain bytewise merge would pair these wrongly.
    let mut fx = Fixture::new();
    fx.write("baselines/a.yaml", "file\n")
        .write("baselines/a/inner.yaml", "i1\n")
        .write("baselines/a0.yaml", "zero\n")
        .write("baselines/a-b.yaml", "dash\n");
    let base = sha(fx.commit("base"));
    fx.write("baselines/a/inner.yaml", "i2\n");
    let head = sha(fx.commit("head"));
    fx.remove("baselines/a").write("baselines/a", "now a file\n");
    let flattened = sha(fx.commit("directory becomes a plain file"));

    let repo = fx.open();
    assert_eq!(
        repo.changed_paths(&base, &head).unwrap(),
        vec![change("baselines/a/inner.yaml", ChangeStatus::Modified)]
    );
    // "baselines/a" as a file is not governed; its old content is gone.
    assert_eq!(
        repo.changed_paths(&head, &flattened).unwrap(),
        vec![change("baselines/a/inner.yaml", ChangeStatus::Deleted)]
    );
}

#[test]
fn changed_paths_refuses_a_tree_git_would_call_unsorted() {
    let mut fx = Fixture::new();
    fx.write("baselines/a.yaml", "a1\n").write("baselines/b.yaml", "b\n");
    let clean = fx.commit("clean");

    let a2 = fx.repo.blob(b"a2\n").unwrap();
    let b = fx.repo.blob(b"b\n").unwrap();
    let shuffled = raw_tree(&fx.repo, &[("b.yaml", FILE, b), ("a.yaml", FILE, a2)]);
    let root = build_tree(&fx.repo, &[("baselines", TREE, shuffled)]);
    let crafted = fx.commit_tree(root, "shuffled", &[clean]);

    let err = fx.open().changed_paths(&sha(clean), &sha(crafted)).unwrap_err();
    assert!(matches!(err, GitError::UnsortedTree { .. }), "{err:?}");
    assert!(err.to_string().contains("\"baselines\""), "{err}");
}

// ---------------------------------------------------------------- history

#[test]
fn log_follows_first_parents_newest_first() {
    let mut fx = Fixture::new();
    fx.write("tollgate.yaml", "1");
    let c1 = fx.commit_as("Alice Admin", "Initial baselines");
    fx.write("tollgate.yaml", "2");
    let c2 = fx.commit_as("Bob Builder", "Tighten passcode\n\nBecause the audit said so.\n");
    fx.write("exceptions/side.yaml", "s");
    let side = fx.commit_detached("Side branch work", &[c1]);
    let merge = fx.commit_with("Carol Chair", "Merge side", &[c2, side], Some("HEAD"));

    let repo = fx.open();
    let log = repo.log(&sha(merge), 10).unwrap();
    let shas: Vec<_> = log.iter().map(|c| c.sha.clone()).collect();
    assert_eq!(
        shas,
        [sha(merge), sha(c2), sha(c1)],
        "the side commit is not on the first-parent line"
    );
    assert_eq!(log[0].parent, Some(sha(c2)));
    assert_eq!(log[0].author, "Carol Chair");
    assert_eq!(log[0].summary, "Merge side");
    assert_eq!(log[1].author, "Bob Builder");
    assert_eq!(log[1].summary, "Tighten passcode");
    assert_eq!(log[2].parent, None);
    assert_eq!(log[2].summary, "Initial baselines");
    assert!(log[0].time > log[1].time && log[1].time > log[2].time);
    assert_eq!(log[2].time, fx.repo.find_commit(c1).unwrap().time().seconds());

    assert_eq!(repo.log(&sha(merge), 2).unwrap().len(), 2);
    assert!(repo.log(&sha(merge), 0).unwrap().is_empty());
}

#[test]
fn is_ancestor_follows_every_parent() {
    let mut fx = Fixture::new();
    fx.write("tollgate.yaml", "1");
    let c1 = fx.commit("one");
    fx.write("tollgate.yaml", "2");
    let c2 = fx.commit("two");
    let side = fx.commit_detached("side", &[c1]);
    let merge = fx.commit_with("Alice Admin", "merge", &[c2, side], Some("HEAD"));

    let repo = fx.open();
    assert!(repo.is_ancestor(&sha(c1), &sha(c2)).unwrap());
    assert!(
        repo.is_ancestor(&sha(side), &sha(merge)).unwrap(),
        "second parent counts"
    );
    assert!(
        repo.is_ancestor(&sha(c2), &sha(c2)).unwrap(),
        "a commit is its own ancestor"
    );
    assert!(!repo.is_ancestor(&sha(c2), &sha(c1)).unwrap());
    assert!(
        !repo.is_ancestor(&sha(c2), &sha(side)).unwrap(),
        "siblings are unrelated"
    );

    let ghost = CommitSha::new("0123456789abcdef0123456789abcdef01234567");
    let err = repo.is_ancestor(&ghost, &sha(c2)).unwrap_err();
    assert!(err.to_string().contains(ghost.as_str()), "{err}");
}

// ---------------------------------------------------------------- remotes

/// Clones, fetches an unchanged remote, a fast-forward and a force-push, and
/// checks what the mirror holds after each.
fn exercise_remote(url: &str, origin: &mut Fixture) {
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("mirror.git");

    origin.write("baselines/ios/a.yaml", "v1\n");
    let c1 = origin.commit("one");
    let (mirror, tip) = clone_or_fetch(url, "main", &dest).unwrap();
    assert_eq!(tip, sha(c1));
    assert!(Repository::open(&dest).unwrap().is_bare());
    assert_eq!(mirror.resolve("HEAD").unwrap(), tip, "HEAD follows the tracked branch");
    assert_eq!(
        mirror.read_governed(&tip).unwrap(),
        vec![blob("baselines/ios/a.yaml", "v1\n")]
    );
    drop(mirror);

    let (_, again) = clone_or_fetch(url, "main", &dest).unwrap();
    assert_eq!(again, sha(c1), "nothing new");

    origin.write("baselines/ios/a.yaml", "v2\n");
    let c2 = origin.commit("two");
    let (mirror, tip) = clone_or_fetch(url, "main", &dest).unwrap();
    assert_eq!(tip, sha(c2));
    assert!(mirror.is_ancestor(&sha(c1), &tip).unwrap(), "fast-forward");
    assert_eq!(
        mirror.changed_paths(&sha(c1), &tip).unwrap(),
        vec![change("baselines/ios/a.yaml", ChangeStatus::Modified)]
    );
    drop(mirror);

    // Force-push: main now skips c2.
    origin.write("baselines/ios/a.yaml", "v3\n");
    let c3 = origin.commit_detached("rewritten", &[c1]);
    origin.force_main(c3);
    let (mirror, tip) = clone_or_fetch(url, "main", &dest).unwrap();
    assert_eq!(tip, sha(c3));
    assert!(
        !mirror.is_ancestor(&sha(c2), &tip).unwrap(),
        "the old tip is gone from history"
    );
    assert_eq!(
        mirror.read_governed(&sha(c2)).unwrap(),
        vec![blob("baselines/ios/a.yaml", "v2\n")],
        "the previously seen revision stays readable"
    );
    assert_eq!(mirror.resolve("main").unwrap(), sha(c3));

    let err = clone_or_fetch(url, "no-such-branch", &dest).unwrap_err();
    assert!(matches!(err, GitError::BranchNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-branch"), "{err}");
}

#[test]
fn clone_or_fetch_over_file_url() {
    let mut origin = Fixture::bare();
    let url = format!("file://{}", origin.path.display());
    exercise_remote(&url, &mut origin);
}

#[test]
fn clone_or_fetch_rejects_bad_destinations_and_branches() {
    let mut origin = Fixture::bare();
    origin.write("tollgate.yaml", "x");
    origin.commit("one");
    let url = format!("file://{}", origin.path.display());
    let work = tempfile::tempdir().unwrap();

    let cluttered = work.path().join("cluttered");
    fs::create_dir(&cluttered).unwrap();
    fs::write(cluttered.join("notes.txt"), "mine").unwrap();
    let err = clone_or_fetch(&url, "main", &cluttered).unwrap_err();
    assert!(matches!(err, GitError::MirrorDest { .. }), "{err:?}");
    assert_eq!(
        fs::read_to_string(cluttered.join("notes.txt")).unwrap(),
        "mine",
        "left untouched"
    );

    for bad in ["", "a..b", "with space", "-x/../y"] {
        let err = clone_or_fetch(&url, bad, &work.path().join("m")).unwrap_err();
        assert!(matches!(err, GitError::InvalidBranch { .. }), "{bad:?}: {err:?}");
    }

    let unreachable = format!("file://{}", work.path().join("does-not-exist.git").display());
    let err = clone_or_fetch(&unreachable, "main", &work.path().join("m2")).unwrap_err();
    assert!(matches!(err, GitError::Fetch { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(chain(&err).contains("does-not-exist.git"), "{}", chain(&err));
}

/// A `git daemon` on 127.0.0.1, killed (and reaped) when dropped.
struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    fn serve(base: &Path) -> Daemon {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // `git daemon` would run `git-daemon` as a child of `git`, and killing
        // `git` would orphan it; start the daemon binary itself instead.
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("the git CLI must be installed");
        assert!(exec_path.status.success(), "git --exec-path failed");
        let exec_dir = String::from_utf8(exec_path.stdout).unwrap();
        let daemon_bin = Path::new(exec_dir.trim()).join("git-daemon");
        let child = Command::new(&daemon_bin)
            .arg("--reuseaddr")
            .arg(format!("--base-path={}", base.display()))
            .arg("--export-all")
            .arg(format!("--port={port}"))
            .arg("--listen=127.0.0.1")
            .arg(base)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", daemon_bin.display()));
        let mut daemon = Daemon { child, port };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("git daemon exited early with {status}");
            }
            assert!(Instant::now() < deadline, "git daemon did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn clone_or_fetch_over_git_daemon() {
    let mut origin = Fixture::bare();
    let base = origin.path.parent().unwrap().to_path_buf();
    let name = origin.path.file_name().unwrap().to_string_lossy().into_owned();
    let daemon = Daemon::serve(&base);
    let url = format!("git://127.0.0.1:{}/{name}", daemon.port);
    exercise_remote(&url, &mut origin);
}

/// The packs of a mirror, by file name.
fn packs(mirror: &Path) -> BTreeSet<String> {
    fs::read_dir(mirror.join("objects/pack"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".pack"))
        .collect()
}

#[test]
fn many_fetches_keep_the_mirror_packs_bounded_and_every_commit_readable() {
    let mut origin = Fixture::bare();
    let url = format!("file://{}", origin.path.display());
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("mirror.git");

    let mut commits = Vec::new();
    let mut repacks = 0;
    let mut before = 0;
    for i in 0..80 {
        origin.write("baselines/ios/a.yaml", format!("v{i}\n"));
        commits.push(origin.commit(&format!("change {i}")));
        let (_, tip) = clone_or_fetch(&url, "main", &dest).unwrap();
        assert_eq!(tip, sha(commits[i]));
        let now = packs(&dest).len();
        assert!(now <= MIRROR_PACK_LIMIT, "fetch {i} left {now} packs");
        if now < before {
            assert_eq!(now, 1, "a repack leaves one pack");
            repacks += 1;
        }
        before = now;
    }
    assert_eq!(
        repacks, 2,
        "80 fetches, one pack each, repacked past every {MIRROR_PACK_LIMIT}"
    );

    let (mirror, tip) = clone_or_fetch(&url, "main", &dest).unwrap();
    assert_eq!(mirror.log(&tip, 100).unwrap().len(), 80);
    for (i, commit) in commits.iter().enumerate() {
        assert_eq!(
            mirror.read_governed(&sha(*commit)).unwrap(),
            vec![blob("baselines/ios/a.yaml", &format!("v{i}\n"))],
            "commit {i}"
        );
    }
}

#[test]
fn a_tip_force_pushed_away_survives_the_repack() {
    let mut origin = Fixture::bare();
    let url = format!("file://{}", origin.path.display());
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("mirror.git");

    let mut history = Vec::new();
    for i in 0..5 {
        origin.write("baselines/ios/a.yaml", format!("v{i}\n"));
        history.push(origin.commit(&format!("change {i}")));
        clone_or_fetch(&url, "main", &dest).unwrap();
    }
    let (kept, gone) = (history[1], history[4]);

    // Force-push: main goes back to `kept` and on from there.
    origin.force_main(kept);
    origin.write("baselines/ios/a.yaml", "rewritten\n");
    origin.commit("rewritten");
    clone_or_fetch(&url, "main", &dest).unwrap();
    let old_packs = packs(&dest);

    for i in 0..MIRROR_PACK_LIMIT + 2 {
        origin.write("baselines/ios/a.yaml", format!("after {i}\n"));
        origin.commit(&format!("after {i}"));
        clone_or_fetch(&url, "main", &dest).unwrap();
    }
    let now = packs(&dest);
    assert!(now.len() < MIRROR_PACK_LIMIT, "repacked: {} packs", now.len());
    assert!(
        now.is_disjoint(&old_packs),
        "every pack that held the old tip was replaced"
    );

    let (mirror, tip) = clone_or_fetch(&url, "main", &dest).unwrap();
    assert!(mirror.is_ancestor(&sha(kept), &tip).unwrap());
    assert!(
        !mirror.is_ancestor(&sha(gone), &tip).unwrap(),
        "the old tip is gone from history"
    );
    assert_eq!(
        mirror.read_governed(&sha(gone)).unwrap(),
        vec![blob("baselines/ios/a.yaml", "v4\n")],
        "but not from the mirror"
    );
    assert_eq!(
        mirror.log(&sha(gone), 10).unwrap().len(),
        5,
        "nor is any commit before it"
    );
}

// ---------------------------------------------------------------- worktree

#[cfg(unix)]
#[test]
fn worktree_reads_governed_files_and_follows_no_symlink() {
    use std::os::unix::fs::symlink as ln;

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repo");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(outside.join("ios")).unwrap();
    fs::write(outside.join("evil.yaml"), "stolen\n").unwrap();
    fs::write(outside.join("ios/evil.yaml"), "stolen\n").unwrap();

    for dir in ["baselines/ios", "policy/vendored/.git", ".git/baselines", "docs"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::write(root.join("tollgate.yaml"), "cfg\n").unwrap();
    fs::write(root.join("baselines/ios/corp.yaml"), "a: 1\n").unwrap();
    fs::write(root.join("baselines/notes.txt"), "not governed\n").unwrap();
    fs::write(root.join("README.md"), "readme\n").unwrap();
    fs::write(root.join("docs/x.yaml"), "outside governed roots\n").unwrap();
    fs::write(root.join(".git/baselines/x.yaml"), "git internals\n").unwrap();
    fs::write(root.join("policy/vendored/risk.rego"), "package v\n").unwrap();
    fs::File::create(root.join("baselines/ios/big.yaml"))
        .unwrap()
        .set_len(MAX_FILE_BYTES + 10)
        .unwrap();
    ln(&outside, root.join("baselines/linkdir")).unwrap();
    ln("../../../outside/evil.yaml", root.join("baselines/ios/link.yaml")).unwrap();
    ln(&outside, root.join("exceptions")).unwrap();

    let files = read_worktree(&root).unwrap();
    let outside_target = outside.display().to_string();
    assert_eq!(
        files,
        vec![
            SourceFile {
                path: path("baselines/ios/big.yaml"),
                content: FileContent::TooLarge {
                    size: MAX_FILE_BYTES + 10
                },
            },
            blob("baselines/ios/corp.yaml", "a: 1\n"),
            symlink("baselines/ios/link.yaml", "../../../outside/evil.yaml"),
            symlink("baselines/linkdir", &outside_target),
            symlink("exceptions", &outside_target),
            submodule("policy/vendored"),
            blob("tollgate.yaml", "cfg\n"),
        ]
    );
    assert!(files
        .iter()
        .all(|f| f.content != FileContent::Blob(b"stolen\n".to_vec())));
}

#[cfg(unix)]
#[test]
fn worktree_rejects_unsafe_or_undecodable_names_of_governed_files() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("baselines")).unwrap();
    fs::write(tmp.path().join("baselines/back\\slash.txt"), "ignored: not governed\n").unwrap();
    assert!(read_worktree(tmp.path()).unwrap().is_empty());

    fs::write(tmp.path().join("baselines/back\\slash.yaml"), "x\n").unwrap();
    let err = read_worktree(tmp.path()).unwrap_err();
    assert!(matches!(err, WorktreeError::UnsafePath { .. }), "{err:?}");
    assert!(err.to_string().contains("back\\\\slash.yaml"), "{err}");
    fs::remove_file(tmp.path().join("baselines/back\\slash.yaml")).unwrap();

    let latin1 = tmp.path().join("baselines").join(OsStr::from_bytes(b"caf\xe9.yaml"));
    fs::write(&latin1, "x\n").unwrap();
    let err = read_worktree(tmp.path()).unwrap_err();
    assert!(matches!(err, WorktreeError::NonUtf8Path { .. }), "{err:?}");
    assert!(err.to_string().contains("caf"), "{err}");
}

#[test]
fn worktree_and_git_agree_on_the_same_content() {
    let mut fx = Fixture::new();
    fx.write("tollgate.yaml", "cfg\n")
        .write("baselines/ios/a.yaml", "a\n")
        .write("exceptions/e.yaml", "e\n")
        .write("policy/p.rego", "package p\n")
        .write("notes/todo.yaml", "ignored\n");
    let tip = sha(fx.commit("same"));
    // Materialise the same files by hand (no checkout API involved).
    for (p, content) in [
        ("tollgate.yaml", "cfg\n"),
        ("baselines/ios/a.yaml", "a\n"),
        ("exceptions/e.yaml", "e\n"),
        ("policy/p.rego", "package p\n"),
        ("notes/todo.yaml", "ignored\n"),
    ] {
        let file = fx.path.join(p);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(file, content).unwrap();
    }
    let from_git = fx.open().read_governed(&tip).unwrap();
    assert_eq!(from_git.len(), 4);
    assert_eq!(read_worktree(&fx.path).unwrap(), from_git);
}
