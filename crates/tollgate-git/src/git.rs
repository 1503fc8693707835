//! Reading a governed repo straight from git objects.
//!
//! Nothing here checks anything out: every read goes through the object
//! database, so bare mirrors and old revisions work the same as `HEAD` of a
//! normal clone. Walks start at [`GOVERNED_ROOTS`] and never visit the rest of
//! the tree, and [`GitRepo::changed_paths`] only opens subtrees whose ids
//! differ, so the cost of a plan follows the size of the change rather than
//! the size of the repo.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use git2::{AutotagOption, ErrorCode, FetchOptions, ObjectType, Odb, Oid, Repository, Tree, TreeEntry};

use tollgate_core::ids::CommitSha;
use tollgate_core::revision::{Reader, Revisions};
pub use tollgate_core::tree::{ChangeStatus, PathChange};
use tollgate_core::tree::{FileClass, FileContent, PathError, RepoPath, SourceFile, GOVERNED_ROOTS, MAX_FILE_BYTES};

use crate::verify::{Reason, Signer, Unverified, VerifyPolicy};

/// Why a git operation failed, and on which revision, path or remote.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot open git repository at {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("cannot resolve revision {rev:?} to a commit")]
    Resolve {
        rev: String,
        #[source]
        source: git2::Error,
    },
    #[error("{sha:?} is not a full 40-hex commit id")]
    BadCommitSha { sha: String },
    #[error("commit {sha} not found")]
    CommitNotFound {
        sha: CommitSha,
        #[source]
        source: git2::Error,
    },
    #[error("cannot read {path:?} at commit {commit}")]
    ReadObject {
        commit: CommitSha,
        path: String,
        #[source]
        source: git2::Error,
    },
    #[error("tree entry {path:?} at commit {commit} has file mode {mode:o}, which git does not define")]
    UnknownMode { commit: CommitSha, path: String, mode: i32 },
    #[error("tree entry {path:?} at commit {commit} is not valid UTF-8")]
    NonUtf8Path { commit: CommitSha, path: String },
    #[error("tree entry {path:?} at commit {commit} is not a safe repo path")]
    UnsafePath {
        commit: CommitSha,
        path: String,
        #[source]
        source: PathError,
    },
    #[error("tree {path:?} at commit {commit} is not sorted the way git requires (corrupt or crafted)")]
    UnsortedTree { commit: CommitSha, path: String },
    #[error("cannot walk the history of commit {commit}")]
    History {
        commit: CommitSha,
        #[source]
        source: git2::Error,
    },
    #[error("cannot tell whether {ancestor} is an ancestor of {descendant}")]
    Ancestry {
        ancestor: CommitSha,
        descendant: CommitSha,
        #[source]
        source: git2::Error,
    },
    #[error("{branch:?} is not a valid branch name")]
    InvalidBranch { branch: String },
    #[error("cannot use {} as a mirror: {reason}", dest.display())]
    MirrorDest { dest: PathBuf, reason: &'static str },
    #[error("cannot prepare the mirror at {}", dest.display())]
    MirrorIo {
        dest: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up the mirror of {url} at {}", dest.display())]
    MirrorSetup {
        url: String,
        dest: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("cannot fetch branch {branch:?} from {url} into {}", dest.display())]
    Fetch {
        url: String,
        branch: String,
        dest: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("{url} has no branch {branch:?}")]
    BranchNotFound { url: String, branch: String },
    #[error("cannot repack the mirror at {}", dest.display())]
    Repack {
        dest: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("cannot {action} {} while repacking the mirror", path.display())]
    RepackFile {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl GitError {
    /// True when trying again later may succeed without anyone changing
    /// anything (the remote was unreachable); false when a human must act.
    pub fn is_transient(&self) -> bool {
        matches!(self, GitError::Fetch { .. })
    }
}

/// One commit of first-parent history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub sha: CommitSha,
    /// The first parent; `None` for a root commit.
    pub parent: Option<CommitSha>,
    /// Author name.
    pub author: String,
    /// First paragraph of the message, on one line.
    pub summary: String,
    /// Committer time, seconds since the Unix epoch.
    pub time: i64,
}

/// Who made one commit, as git records it (self-declared: identity for
/// approvals comes from the forge or from verified signatures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPeople {
    pub sha: CommitSha,
    pub author: String,
    pub committer: String,
}

/// A git repository (bare or not) holding a governed repo.
pub struct GitRepo {
    repo: Repository,
    path: PathBuf,
}

impl std::fmt::Debug for GitRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitRepo").field("path", &self.path).finish()
    }
}

/// Symlink targets longer than this are not read; no system resolves them.
const MAX_LINK_TARGET: usize = 4096;

/// What a tree entry is, as far as Tollgate cares. The executable bit is
/// deliberately dropped: it does not change what a file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tree,
    Blob,
    Symlink,
    Submodule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    oid: Oid,
    kind: Kind,
}

/// Raw path bytes of a tree entry; git does not promise UTF-8.
type RawPath = Vec<u8>;

impl GitRepo {
    /// Opens the repository at `path` (a bare repo, or the top of a normal
    /// one). Parent directories are not searched.
    pub fn open(path: &Path) -> Result<GitRepo, GitError> {
        let repo = Repository::open(path).map_err(|source| GitError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(GitRepo {
            repo,
            path: path.to_path_buf(),
        })
    }

    /// Where the repository was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolves any revision git understands (`HEAD`, a branch, a tag,
    /// `HEAD~3`, an abbreviated id...) to the commit it names.
    pub fn resolve(&self, rev: &str) -> Result<CommitSha, GitError> {
        let commit = self
            .repo
            .revparse_single(rev)
            .and_then(|object| object.peel_to_commit())
            .map_err(|source| GitError::Resolve {
                rev: rev.to_string(),
                source,
            })?;
        Ok(sha_of(commit.id()))
    }

    /// Every governed file at `rev`, sorted by path: files [`FileClass::of`]
    /// accepts, plus every symlink and submodule under a governed root so
    /// that validation can reject them by name.
    pub fn read_governed(&self, rev: &CommitSha) -> Result<Vec<SourceFile>, GitError> {
        self.read_roots(rev, GOVERNED_ROOTS)
    }

    /// The paths [`GitRepo::read_governed`] would read at `rev`, sorted,
    /// without reading any file: for callers that read them in parts
    /// ([`GitRepo::read_paths`]), e.g. on several threads.
    pub fn governed_paths(&self, rev: &CommitSha) -> Result<Vec<RepoPath>, GitError> {
        let root = self.root_tree(rev)?;
        let mut leaves = Vec::new();
        for name in GOVERNED_ROOTS {
            if let Some(entry) = root.get_name(name) {
                let path = name.as_bytes().to_vec();
                let entry = entry_of(rev, &path, &entry)?;
                self.collect_leaves(rev, path, entry, &mut leaves)?;
            }
        }
        let mut paths = leaves
            .into_iter()
            .map(|(raw, _)| repo_path(rev, &raw))
            .collect::<Result<Vec<_>, _>>()?;
        paths.sort();
        Ok(paths)
    }

    /// Like [`GitRepo::read_governed`], limited to some of the
    /// [`GOVERNED_ROOTS`] (e.g. `policy` alone, without walking thousands
    /// of baselines). Names that are not governed roots are ignored.
    pub fn read_roots(&self, rev: &CommitSha, roots: &[&str]) -> Result<Vec<SourceFile>, GitError> {
        let root = self.root_tree(rev)?;
        let mut leaves = Vec::new();
        for name in roots.iter().filter(|r| GOVERNED_ROOTS.contains(r)) {
            if let Some(entry) = root.get_name(name) {
                let path = name.as_bytes().to_vec();
                let entry = entry_of(rev, &path, &entry)?;
                self.collect_leaves(rev, path, entry, &mut leaves)?;
            }
        }
        self.load_all(rev, leaves)
    }

    /// The governed files among `paths` at `rev`, read without walking the
    /// tree. Paths that do not exist (or name a directory) are left out; the
    /// same filter as [`GitRepo::read_governed`] applies, so a README is not
    /// returned even if asked for.
    pub fn read_paths(&self, rev: &CommitSha, paths: &[RepoPath]) -> Result<Vec<SourceFile>, GitError> {
        let root = self.root_tree(rev)?;
        let wanted: BTreeSet<&RepoPath> = paths.iter().filter(|p| under_governed_root(p.as_str())).collect();
        let mut leaves = Vec::new();
        for path in wanted {
            let entry = match root.get_path(Path::new(path.as_str())) {
                Ok(entry) => entry,
                Err(e) if e.code() == ErrorCode::NotFound => continue,
                Err(source) => {
                    return Err(GitError::ReadObject {
                        commit: rev.clone(),
                        path: path.to_string(),
                        source,
                    })
                }
            };
            let raw = path.as_str().as_bytes().to_vec();
            let entry = entry_of(rev, &raw, &entry)?;
            if entry.kind != Kind::Tree && is_reported(entry.kind, path.as_str()) {
                leaves.push((raw, entry));
            }
        }
        self.load_all(rev, leaves)
    }

    /// The governed paths (and symlinks/submodules under governed roots) that
    /// differ between `base` and `head`, sorted by path.
    ///
    /// Subtrees with the same id on both sides are never opened, no content
    /// is read and renames are not detected (the domain matches documents by
    /// kind and name). A path that turns from a file into a symlink is
    /// `Modified`; a change of the executable bit alone is not a change.
    pub fn changed_paths(&self, base: &CommitSha, head: &CommitSha) -> Result<Vec<PathChange>, GitError> {
        let old_root = self.root_tree(base)?;
        let new_root = self.root_tree(head)?;
        let mut changes = Vec::new();
        if old_root.id() == new_root.id() {
            return Ok(changes);
        }

        let mut pending: Vec<Pair> = Vec::new();
        for name in GOVERNED_ROOTS {
            let path = name.as_bytes().to_vec();
            let old = old_root.get_name(name).map(|e| entry_of(base, &path, &e)).transpose()?;
            let new = new_root.get_name(name).map(|e| entry_of(head, &path, &e)).transpose()?;
            pending.push((path, old, new));
        }

        let mut raw_changes: Vec<(RawPath, ChangeStatus, &CommitSha)> = Vec::new();
        while let Some((path, old, new)) = pending.pop() {
            if old == new {
                continue;
            }
            match (old, new) {
                (Some(o), Some(n)) if o.kind == Kind::Tree && n.kind == Kind::Tree => {
                    let old_tree = self.find_tree(base, &path, o.oid)?;
                    let new_tree = self.find_tree(head, &path, n.oid)?;
                    pair_children(base, head, &path, &old_tree, &new_tree, &mut pending)?;
                }
                _ => {
                    // At most one side is a tree: its whole content appeared
                    // or vanished, while a leaf on the other side sits at
                    // `path` itself.
                    let mut leaves = Vec::new();
                    if let Some(o) = old.filter(|e| e.kind == Kind::Tree) {
                        self.collect_leaves(base, path.clone(), o, &mut leaves)?;
                        raw_changes.extend(leaves.drain(..).map(|(p, _)| (p, ChangeStatus::Deleted, base)));
                    }
                    if let Some(n) = new.filter(|e| e.kind == Kind::Tree) {
                        self.collect_leaves(head, path.clone(), n, &mut leaves)?;
                        raw_changes.extend(leaves.drain(..).map(|(p, _)| (p, ChangeStatus::Added, head)));
                    }
                    let lossy = String::from_utf8_lossy(&path);
                    let reported = |e: Option<Entry>| e.filter(|e| e.kind != Kind::Tree && is_reported(e.kind, &lossy));
                    let status = match (reported(old), reported(new)) {
                        (Some(_), Some(_)) => Some((ChangeStatus::Modified, head)),
                        (Some(_), None) => Some((ChangeStatus::Deleted, base)),
                        (None, Some(_)) => Some((ChangeStatus::Added, head)),
                        (None, None) => None,
                    };
                    if let Some((status, commit)) = status {
                        raw_changes.push((path, status, commit));
                    }
                }
            }
        }

        for (raw, status, commit) in raw_changes {
            changes.push(PathChange {
                path: repo_path(commit, &raw)?,
                status,
            });
        }
        changes.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(changes)
    }

    /// First-parent history from `rev`, newest first, at most `limit` commits.
    pub fn log(&self, rev: &CommitSha, limit: usize) -> Result<Vec<CommitInfo>, GitError> {
        let mut oid = oid_of(rev)?;
        let mut history = Vec::new();
        while history.len() < limit {
            let commit = self.repo.find_commit(oid).map_err(|source| GitError::History {
                commit: rev.clone(),
                source,
            })?;
            let parent = commit.parent_id(0).ok();
            history.push(CommitInfo {
                sha: sha_of(oid),
                parent: parent.map(sha_of),
                author: String::from_utf8_lossy(commit.author().name_bytes()).into_owned(),
                summary: commit
                    .summary_bytes()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .unwrap_or_default(),
                time: commit.time().seconds(),
            });
            match parent {
                Some(p) => oid = p,
                None => break,
            }
        }
        Ok(history)
    }

    /// Every commit reachable from `tip` and not from `base` (merges
    /// included; everything when `base` is `None`), with its author and
    /// committer names: the people who put content into a change.
    pub fn commits_between(&self, base: Option<&CommitSha>, tip: &CommitSha) -> Result<Vec<CommitPeople>, GitError> {
        let walk_err = |source| GitError::History {
            commit: tip.clone(),
            source,
        };
        let mut walk = self.repo.revwalk().map_err(walk_err)?;
        walk.push(self.commit(tip)?.id()).map_err(walk_err)?;
        if let Some(base) = base {
            walk.hide(self.commit(base)?.id()).map_err(walk_err)?;
        }
        let mut out = Vec::new();
        for oid in walk {
            let oid = oid.map_err(walk_err)?;
            let commit = self.repo.find_commit(oid).map_err(walk_err)?;
            out.push(CommitPeople {
                sha: sha_of(oid),
                author: String::from_utf8_lossy(commit.author().name_bytes()).into_owned(),
                committer: String::from_utf8_lossy(commit.committer().name_bytes()).into_owned(),
            });
        }
        Ok(out)
    }

    /// Whether `ancestor` is reachable from `descendant`. A commit counts as
    /// its own ancestor, as in `git merge-base --is-ancestor`, so an
    /// unchanged tip is not mistaken for a force-push.
    pub fn is_ancestor(&self, ancestor: &CommitSha, descendant: &CommitSha) -> Result<bool, GitError> {
        let a = self.commit(ancestor)?.id();
        let d = self.commit(descendant)?.id();
        if a == d {
            return Ok(true);
        }
        self.repo
            .graph_descendant_of(d, a)
            .map_err(|source| GitError::Ancestry {
                ancestor: ancestor.clone(),
                descendant: descendant.clone(),
                source,
            })
    }

    /// Who signed `commit`, by `policy` (`source.verify`), checked now.
    pub fn verify_commit(&self, policy: &VerifyPolicy, commit: &CommitSha) -> Result<Signer, Unverified> {
        policy.verify_commit(&self.repo, verify_oid(commit)?)
    }

    /// Every commit reachable from `tip` and not from `base`, merges
    /// included, oldest first, with its signer; the first commit that does
    /// not verify is the error.
    pub fn verify_range(
        &self,
        policy: &VerifyPolicy,
        base: Option<&CommitSha>,
        tip: &CommitSha,
    ) -> Result<Vec<(CommitSha, Signer)>, Unverified> {
        let base = base.map(verify_oid).transpose()?;
        let signed = policy.verify_range(&self.repo, base, verify_oid(tip)?)?;
        Ok(signed.into_iter().map(|(oid, signer)| (sha_of(oid), signer)).collect())
    }

    fn commit(&self, sha: &CommitSha) -> Result<git2::Commit<'_>, GitError> {
        let oid = oid_of(sha)?;
        self.repo.find_commit(oid).map_err(|source| GitError::CommitNotFound {
            sha: sha.clone(),
            source,
        })
    }

    fn root_tree(&self, rev: &CommitSha) -> Result<Tree<'_>, GitError> {
        self.commit(rev)?.tree().map_err(|source| GitError::ReadObject {
            commit: rev.clone(),
            path: ".".to_string(),
            source,
        })
    }

    fn find_tree(&self, commit: &CommitSha, path: &[u8], oid: Oid) -> Result<Tree<'_>, GitError> {
        self.repo.find_tree(oid).map_err(|source| GitError::ReadObject {
            commit: commit.clone(),
            path: String::from_utf8_lossy(path).into_owned(),
            source,
        })
    }

    /// Every reported leaf at or below `entry`, found by walking only the
    /// subtree `entry` names. Iterative so that a crafted, absurdly deep
    /// tree cannot overflow the stack.
    fn collect_leaves(
        &self,
        commit: &CommitSha,
        path: RawPath,
        entry: Entry,
        out: &mut Vec<(RawPath, Entry)>,
    ) -> Result<(), GitError> {
        let mut pending = vec![(path, entry)];
        while let Some((path, entry)) = pending.pop() {
            if entry.kind == Kind::Tree {
                let tree = self.find_tree(commit, &path, entry.oid)?;
                for child in tree.iter() {
                    let child_path = join(&path, child.name_bytes());
                    let child_entry = entry_of(commit, &child_path, &child)?;
                    pending.push((child_path, child_entry));
                }
            } else if is_reported(entry.kind, &String::from_utf8_lossy(&path)) {
                out.push((path, entry));
            }
        }
        Ok(())
    }

    fn load_all(&self, commit: &CommitSha, leaves: Vec<(RawPath, Entry)>) -> Result<Vec<SourceFile>, GitError> {
        let odb = self.repo.odb().map_err(|source| GitError::ReadObject {
            commit: commit.clone(),
            path: ".".to_string(),
            source,
        })?;
        let mut files = leaves
            .into_iter()
            .map(|(raw, entry)| load(&odb, commit, &raw, entry))
            .collect::<Result<Vec<_>, _>>()?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }
}

/// One path to compare: its entry at the base and at the head, if any.
type Pair = (RawPath, Option<Entry>, Option<Entry>);

/// Queues the children of two versions of a directory for comparison,
/// skipping those whose id and kind are unchanged without looking further.
///
/// Both trees are walked in lockstep in git's own entry order (a directory
/// sorts as if its name ended in '/'), so a directory of thousands of
/// baselines costs one pass and no allocation per unchanged entry. A name
/// that is a directory on one side and a file on the other gets two keys and
/// is queued twice, once per side, which is exactly the deletion plus
/// addition it is. Out-of-order entries would make the lockstep miss pairs,
/// so they are an error rather than a silently wrong answer.
fn pair_children(
    base: &CommitSha,
    head: &CommitSha,
    path: &[u8],
    old_tree: &Tree<'_>,
    new_tree: &Tree<'_>,
    pending: &mut Vec<Pair>,
) -> Result<(), GitError> {
    let (mut i, mut j) = (0, 0);
    let mut prev_old: Option<TreeEntry<'_>> = None;
    let mut prev_new: Option<TreeEntry<'_>> = None;
    loop {
        let old = old_tree.get(i);
        let new = new_tree.get(j);
        let order = match (&old, &new) {
            (Some(o), Some(n)) => git_order(o, n),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => return Ok(()),
        };
        let take_old = order != Ordering::Greater;
        let take_new = order != Ordering::Less;
        let unchanged = order == Ordering::Equal && {
            let (o, n) = (old.as_ref().unwrap(), new.as_ref().unwrap());
            o.id() == n.id() && o.filemode() & 0o170000 == n.filemode() & 0o170000
        };
        let mut pair: Pair = (Vec::new(), None, None);
        if take_old {
            let o = old.unwrap();
            check_order(base, path, &prev_old, &o)?;
            if !unchanged {
                pair.0 = join(path, o.name_bytes());
                pair.1 = Some(entry_of(base, &pair.0, &o)?);
            }
            prev_old = Some(o);
            i += 1;
        }
        if take_new {
            let n = new.unwrap();
            check_order(head, path, &prev_new, &n)?;
            if !unchanged {
                pair.0 = join(path, n.name_bytes());
                pair.2 = Some(entry_of(head, &pair.0, &n)?);
            }
            prev_new = Some(n);
            j += 1;
        }
        if !unchanged {
            pending.push(pair);
        }
    }
}

fn check_order(
    commit: &CommitSha,
    path: &[u8],
    prev: &Option<TreeEntry<'_>>,
    next: &TreeEntry<'_>,
) -> Result<(), GitError> {
    match prev {
        Some(prev) if git_order(prev, next) != Ordering::Less => Err(GitError::UnsortedTree {
            commit: commit.clone(),
            path: String::from_utf8_lossy(path).into_owned(),
        }),
        _ => Ok(()),
    }
}

/// Git's tree entry order: bytewise, with a directory compared as if its
/// name ended in '/'.
fn git_order(a: &TreeEntry<'_>, b: &TreeEntry<'_>) -> Ordering {
    name_order(a.name_bytes(), is_dir(a), b.name_bytes(), is_dir(b))
}

fn is_dir(entry: &TreeEntry<'_>) -> bool {
    entry.filemode() & 0o170000 == 0o040000
}

fn name_order(a: &[u8], a_dir: bool, b: &[u8], b_dir: bool) -> Ordering {
    let common = a.len().min(b.len());
    match a[..common].cmp(&b[..common]) {
        Ordering::Equal => {}
        other => return other,
    }
    let next = |name: &[u8], dir: bool| name.get(common).copied().or(dir.then_some(b'/'));
    next(a, a_dir).cmp(&next(b, b_dir))
}

/// Reads one leaf. Blob sizes come from the object header, so an oversized
/// blob is never inflated.
fn load(odb: &Odb<'_>, commit: &CommitSha, raw: &[u8], entry: Entry) -> Result<SourceFile, GitError> {
    let path = repo_path(commit, raw)?;
    let read_error = |source| GitError::ReadObject {
        commit: commit.clone(),
        path: path.to_string(),
        source,
    };
    let content = match entry.kind {
        Kind::Submodule => FileContent::Submodule,
        Kind::Symlink => {
            let (size, _) = odb.read_header(entry.oid).map_err(read_error)?;
            let target = if size > MAX_LINK_TARGET {
                format!("<{size}-byte link target, not read>")
            } else {
                let object = odb.read(entry.oid).map_err(read_error)?;
                String::from_utf8_lossy(object.data()).into_owned()
            };
            FileContent::Symlink { target }
        }
        Kind::Blob => {
            let (size, kind) = odb.read_header(entry.oid).map_err(read_error)?;
            if kind != ObjectType::Blob {
                return Err(read_error(git2::Error::from_str(&format!(
                    "tree entry says blob but object {} is a {kind}",
                    entry.oid
                ))));
            }
            let size = size as u64;
            if size > MAX_FILE_BYTES {
                FileContent::TooLarge { size }
            } else {
                let object = odb.read(entry.oid).map_err(read_error)?;
                FileContent::Blob(object.data().to_vec())
            }
        }
        Kind::Tree => unreachable!("trees are walked, never loaded as files"),
    };
    Ok(SourceFile { path, content })
}

/// Symlinks and submodules under a governed root are always reported so that
/// validation rejects them; plain files only when they are governed.
fn is_reported(kind: Kind, path: &str) -> bool {
    match kind {
        Kind::Blob => FileClass::of(path).is_some(),
        Kind::Symlink | Kind::Submodule => true,
        Kind::Tree => false,
    }
}

fn under_governed_root(path: &str) -> bool {
    let top = path.split('/').next().unwrap_or(path);
    GOVERNED_ROOTS.contains(&top)
}

fn entry_of(commit: &CommitSha, path: &[u8], entry: &TreeEntry<'_>) -> Result<Entry, GitError> {
    let mode = entry.filemode();
    let kind = match mode & 0o170000 {
        0o040000 => Kind::Tree,
        0o100000 => Kind::Blob,
        0o120000 => Kind::Symlink,
        0o160000 => Kind::Submodule,
        _ => {
            return Err(GitError::UnknownMode {
                commit: commit.clone(),
                path: String::from_utf8_lossy(path).into_owned(),
                mode,
            })
        }
    };
    Ok(Entry { oid: entry.id(), kind })
}

fn join(parent: &[u8], name: &[u8]) -> RawPath {
    let mut path = Vec::with_capacity(parent.len() + 1 + name.len());
    path.extend_from_slice(parent);
    path.push(b'/');
    path.extend_from_slice(name);
    path
}

fn repo_path(commit: &CommitSha, raw: &[u8]) -> Result<RepoPath, GitError> {
    let text = std::str::from_utf8(raw).map_err(|_| GitError::NonUtf8Path {
        commit: commit.clone(),
        path: String::from_utf8_lossy(raw).into_owned(),
    })?;
    RepoPath::new(text).map_err(|source| GitError::UnsafePath {
        commit: commit.clone(),
        path: text.to_string(),
        source,
    })
}

fn sha_of(oid: Oid) -> CommitSha {
    CommitSha::new(oid.to_string())
}

/// [`oid_of`] for the verification methods, whose error is [`Unverified`].
fn verify_oid(sha: &CommitSha) -> Result<Oid, Unverified> {
    oid_of(sha).map_err(|e| Unverified {
        commit: sha.clone(),
        reason: Reason::Unreadable { detail: e.to_string() },
    })
}

/// `Oid::from_str` pads short input with zeros; a `CommitSha` must be whole.
fn oid_of(sha: &CommitSha) -> Result<Oid, GitError> {
    let hex = sha.as_str();
    let bad = || GitError::BadCommitSha { sha: hex.to_string() };
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Oid::from_str(hex).map_err(|_| bad())
}

/// The core reads revisions through this port; every method is the
/// inherent one of the same name.
impl Revisions for GitRepo {
    type Error = GitError;

    fn governed_paths(&self, rev: &CommitSha) -> Result<Vec<RepoPath>, GitError> {
        GitRepo::governed_paths(self, rev)
    }

    fn read_paths(&self, rev: &CommitSha, paths: &[RepoPath]) -> Result<Vec<SourceFile>, GitError> {
        GitRepo::read_paths(self, rev, paths)
    }

    fn changed_paths(&self, base: &CommitSha, head: &CommitSha) -> Result<Vec<PathChange>, GitError> {
        GitRepo::changed_paths(self, base, head)
    }

    /// Each worker opens the repository again: a libgit2 handle is not
    /// shared between threads.
    fn reader(&self) -> Result<Option<Reader<GitError>>, GitError> {
        Ok(Some(Box::new(GitRepo::open(&self.path)?)))
    }
}

/// Makes `dest` a bare mirror of `url` (cloning if it is absent or empty,
/// fetching otherwise) and returns the remote tip of `branch`.
///
/// Only `branch` is fetched, into `refs/heads/<branch>`, with force: a
/// force-pushed remote is followed, and telling that apart from a
/// fast-forward ([`GitRepo::is_ancestor`]) is the caller's job. Objects of the
/// old tip stay in the mirror, so the previously seen revision can still be
/// read. One process at a time should own `dest`.
///
/// Every fetch that brings objects adds a pack to the mirror. Once there
/// are more than [`MIRROR_PACK_LIMIT`], every object is rewritten into one
/// pack and the old packs are deleted; a failure to do so is logged and does
/// not fail the fetch, since the mirror is still complete, only slower to
/// read.
pub fn clone_or_fetch(url: &str, branch: &str, dest: &Path) -> Result<(GitRepo, CommitSha), GitError> {
    let refname = format!("refs/heads/{branch}");
    if branch.is_empty() || !git2::Reference::is_valid_name(&refname) {
        return Err(GitError::InvalidBranch {
            branch: branch.to_string(),
        });
    }
    let repo = open_or_init_mirror(dest)?;
    let setup_error = |source| GitError::MirrorSetup {
        url: url.to_string(),
        dest: dest.to_path_buf(),
        source,
    };

    match repo.find_remote("origin") {
        Ok(remote) if remote.url().ok() == Some(url) => {}
        Ok(_) => repo.remote_set_url("origin", url).map_err(setup_error)?,
        Err(e) if e.code() == ErrorCode::NotFound => {
            repo.remote_with_fetch("origin", url, "+refs/heads/*:refs/heads/*")
                .map_err(setup_error)?;
        }
        Err(e) => return Err(setup_error(e)),
    }
    let mut remote = repo.find_remote("origin").map_err(setup_error)?;

    let fetch_error = |source| GitError::Fetch {
        url: url.to_string(),
        branch: branch.to_string(),
        dest: dest.to_path_buf(),
        source,
    };
    let mut options = FetchOptions::new();
    options.download_tags(AutotagOption::None);
    let refspec = format!("+{refname}:{refname}");
    remote
        .fetch(&[refspec.as_str()], Some(&mut options), Some("tollgate: fetch"))
        .map_err(fetch_error)?;

    // The advertisement, not the local ref, is the truth: a branch deleted
    // on the remote must not leave us serving a stale local copy.
    let tip = remote
        .list()
        .map_err(fetch_error)?
        .iter()
        .find(|head| head.name() == refname)
        .map(|head| head.oid())
        .ok_or_else(|| GitError::BranchNotFound {
            url: url.to_string(),
            branch: branch.to_string(),
        })?;
    drop(remote);

    repo.find_commit(tip).map_err(fetch_error)?;
    repo.reference(&refname, tip, true, "tollgate: fetch")
        .map_err(fetch_error)?;
    repo.set_head(&refname).map_err(setup_error)?;
    let repo = keep_packs_bounded(repo, dest);
    Ok((
        GitRepo {
            repo,
            path: dest.to_path_buf(),
        },
        sha_of(tip),
    ))
}

/// How many packs the mirror may hold before [`clone_or_fetch`] repacks it.
///
/// libgit2 writes one pack per fetch and, unlike the git command line, never
/// runs `gc --auto`; every object lookup searches every pack index, so a
/// controller pass over a mirror that has fetched 1,000 commits takes ten
/// times as long as over a fresh clone. With at most this many packs lookups
/// stay close to a fresh clone's,
/// and the repack (which costs a pass over every object) runs once every
/// few dozen new commits.
pub const MIRROR_PACK_LIMIT: usize = 32;

/// What a repack of the mirror did.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MirrorRepack {
    /// The name git gives the new pack (`pack-<name>.pack`).
    pack: String,
    /// Objects in the new pack: every object the mirror held.
    objects: usize,
    /// Packs the new one replaced.
    packs_removed: usize,
    /// Loose objects removed because the new pack holds them.
    loose_removed: usize,
}

/// Repacks the mirror when it holds more than [`MIRROR_PACK_LIMIT`] packs,
/// and returns a handle that sees the result. The fetch before this has
/// already succeeded, so failures are logged rather than returned.
fn keep_packs_bounded(repo: Repository, dest: &Path) -> Repository {
    let pack_dir = repo.path().join("objects").join("pack");
    let packs = match count_packs(&pack_dir) {
        Ok(n) if n <= MIRROR_PACK_LIMIT => return repo,
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(
                mirror = %dest.display(),
                error = &e as &dyn std::error::Error,
                "cannot count the packs of the mirror"
            );
            return repo;
        }
    };
    let started = Instant::now();
    match repack_mirror(&repo, dest) {
        Ok(done) => tracing::info!(
            mirror = %dest.display(),
            packs,
            pack = %done.pack,
            objects = done.objects,
            packs_removed = done.packs_removed,
            loose_removed = done.loose_removed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "repacked the mirror"
        ),
        Err(e) => tracing::warn!(
            mirror = %dest.display(),
            packs,
            error = &e as &dyn std::error::Error,
            "cannot repack the mirror; it stays complete but slower to read until a later fetch repacks it"
        ),
    }
    // libgit2 keeps the list of packs it found when the repository was
    // opened, deleted ones included, and would go on trying each of them.
    match Repository::open(dest) {
        Ok(reopened) => reopened,
        Err(e) => {
            tracing::warn!(
                mirror = %dest.display(),
                error = &e as &dyn std::error::Error,
                "cannot reopen the mirror after repacking it"
            );
            repo
        }
    }
}

/// Packs in `pack_dir`.
fn count_packs(pack_dir: &Path) -> Result<usize, GitError> {
    Ok(pack_dir_files(pack_dir)?
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .count())
}

/// Every file directly in `pack_dir`.
fn pack_dir_files(pack_dir: &Path) -> Result<Vec<PathBuf>, GitError> {
    let list_error = |source| GitError::RepackFile {
        action: "list",
        path: pack_dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(pack_dir).map_err(list_error)? {
        let entry = entry.map_err(list_error)?;
        if entry.file_type().map_err(list_error)?.is_file() {
            files.push(entry.path());
        }
    }
    Ok(files)
}

/// Whether a file of `objects/pack` belongs to a pack other than `keep`, or
/// describes or half-writes packs (a multi-pack index, a temporary pack an
/// interrupted write left behind), and so can go once a pack holding every
/// object is safely on disk.
fn is_replaced(path: &Path, keep: &str) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if name.contains(keep) {
        return false;
    }
    let companion = name.starts_with("pack-")
        && path
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| ["pack", "idx", "keep", "rev", "bitmap", "mtimes"].contains(&x));
    // libgit2's indexer writes `pack_git2_XXXXXX` and renames it into place;
    // a multi-pack index (if git ever wrote one) lists packs about to go.
    companion || name.starts_with("pack_git2_") || name == "multi-pack-index"
}

/// Rewrites every object of the mirror into one new pack, then removes the
/// packs (and loose objects) it replaces.
///
/// Every object goes in, not only what the branch reaches: the objects of a
/// tip that was force-pushed away must stay readable, because the rings may
/// run it and rollbacks read old revisions. The new pack and its index are
/// on disk (synced) before anything is deleted, so a crash at any point
/// leaves a readable mirror, at worst holding objects twice until the next
/// repack. Needs to be the only writer of the mirror, as [`clone_or_fetch`]
/// is; readers with the mirror open are fine, since libgit2 looks for new
/// packs when an object is not where it expected it.
fn repack_mirror(repo: &Repository, dest: &Path) -> Result<MirrorRepack, GitError> {
    let git_error = |source| GitError::Repack {
        dest: dest.to_path_buf(),
        source,
    };
    let objects_dir = repo.path().join("objects");
    let pack_dir = objects_dir.join("pack");
    // Listed before the new pack is written: only what existed before it
    // can be replaced by it.
    let before = pack_dir_files(&pack_dir)?;

    let mut ids = Vec::new();
    repo.odb()
        .and_then(|odb| {
            odb.foreach(|id| {
                ids.push(*id);
                true
            })
        })
        .map_err(git_error)?;
    // An object can be in several packs and loose at once.
    ids.sort_unstable();
    ids.dedup();

    let mut builder = repo.packbuilder().map_err(git_error)?;
    for id in &ids {
        builder.insert_object(*id, None).map_err(git_error)?;
    }
    builder.write(&pack_dir, PACK_FILE_MODE).map_err(git_error)?;
    let name = builder
        .name()
        .ok()
        .flatten()
        .ok_or_else(|| git_error(git2::Error::from_str("the pack builder wrote a pack without a name")))?
        .to_string();
    let new_pack = pack_dir.join(format!("pack-{name}.pack"));
    let new_index = pack_dir.join(format!("pack-{name}.idx"));
    // libgit2 does not sync what it writes unless core.fsyncObjectFiles is
    // set; the deletions below must not reach the disk before the new pack.
    for path in [&new_pack, &new_index] {
        sync(path)?;
    }
    sync_dir(&pack_dir)?;

    let replaced: Vec<&PathBuf> = before.iter().filter(|p| is_replaced(p, &name)).collect();
    // Indexes first: a pack without its index is invisible to libgit2 and
    // git alike, so no reader ever sees half a pack.
    let (indexes, rest): (Vec<&PathBuf>, Vec<&PathBuf>) = replaced
        .into_iter()
        .partition(|p| p.extension().is_some_and(|x| x == "idx"));
    for path in indexes.iter().chain(&rest) {
        remove_file(path)?;
    }

    let loose_removed = remove_loose_objects(&objects_dir, &ids)?;
    Ok(MirrorRepack {
        pack: name,
        objects: ids.len(),
        packs_removed: rest
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "pack"))
            .count(),
        loose_removed,
    })
}

/// Read-only, as git and libgit2 write packs.
const PACK_FILE_MODE: u32 = 0o444;

/// Removes the loose objects among `packed` (sorted): each is now in a pack.
fn remove_loose_objects(objects_dir: &Path, packed: &[Oid]) -> Result<usize, GitError> {
    let list_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GitError::RepackFile {
            action: "list",
            path,
            source,
        }
    };
    let mut removed = 0;
    for dir in fs::read_dir(objects_dir).map_err(list_error(objects_dir))? {
        let dir = dir.map_err(list_error(objects_dir))?.path();
        let Some(prefix) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        if prefix.len() != 2 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) || !dir.is_dir() {
            continue;
        }
        for file in fs::read_dir(&dir).map_err(list_error(&dir))? {
            let file = file.map_err(list_error(&dir))?.path();
            let Some(rest) = file.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let is_packed = rest.len() == 38
                && Oid::from_str(&format!("{prefix}{rest}")).is_ok_and(|id| packed.binary_search(&id).is_ok());
            if is_packed {
                remove_file(&file)?;
                removed += 1;
            }
        }
        // Only succeeds once the directory is empty; git recreates it.
        let _ = fs::remove_dir(&dir);
    }
    Ok(removed)
}

fn remove_file(path: &Path) -> Result<(), GitError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(GitError::RepackFile {
            action: "remove",
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn sync(path: &Path) -> Result<(), GitError> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| GitError::RepackFile {
            action: "sync",
            path: path.to_path_buf(),
            source,
        })
}

/// Makes the new pack's directory entries durable. Directories cannot be
/// opened as files on every platform; where they cannot, there is nothing
/// to sync this way.
fn sync_dir(dir: &Path) -> Result<(), GitError> {
    if cfg!(unix) {
        sync(dir)
    } else {
        Ok(())
    }
}

fn open_or_init_mirror(dest: &Path) -> Result<Repository, GitError> {
    let io_error = |source| GitError::MirrorIo {
        dest: dest.to_path_buf(),
        source,
    };
    let empty_or_absent = match fs::read_dir(dest) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => return Err(io_error(e)),
    };
    if empty_or_absent {
        fs::create_dir_all(dest).map_err(io_error)?;
        return Repository::init_bare(dest).map_err(|source| GitError::Open {
            path: dest.to_path_buf(),
            source,
        });
    }
    match Repository::open(dest) {
        Ok(repo) if repo.is_bare() => Ok(repo),
        Ok(_) => Err(GitError::MirrorDest {
            dest: dest.to_path_buf(),
            reason: "it is a repository with a working tree, not a bare mirror",
        }),
        Err(e) if e.code() == ErrorCode::NotFound => Err(GitError::MirrorDest {
            dest: dest.to_path_buf(),
            reason: "it is neither empty nor a git repository",
        }),
        Err(source) => Err(GitError::Open {
            path: dest.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_sha_must_be_whole() {
        let full = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(oid_of(&CommitSha::new(full)).unwrap().to_string(), full);
        for bad in [
            "0123456",
            "",
            "zz23456789abcdef0123456789abcdef01234567",
            &format!("{full}0"),
        ] {
            let err = oid_of(&CommitSha::new(bad)).unwrap_err();
            assert!(matches!(err, GitError::BadCommitSha { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn reporting_rule() {
        assert!(is_reported(Kind::Blob, "baselines/ios/a.yaml"));
        assert!(!is_reported(Kind::Blob, "baselines/README.md"));
        assert!(is_reported(Kind::Symlink, "baselines/linkdir"));
        assert!(is_reported(Kind::Submodule, "policy/vendor"));
        assert!(!is_reported(Kind::Tree, "baselines/ios"));
    }

    #[test]
    fn governed_roots_are_whole_components() {
        assert!(under_governed_root("baselines/ios/a.yaml"));
        assert!(under_governed_root("tollgate.yaml"));
        assert!(!under_governed_root("baselines-old/a.yaml"));
        assert!(!under_governed_root("docs/baselines/a.yaml"));
    }

    #[test]
    fn git_entry_order() {
        use Ordering::*;
        // "a.yaml" < "a/" < "a0": '.' (0x2e) < '/' (0x2f) < '0' (0x30).
        assert_eq!(name_order(b"a.yaml", false, b"a", true), Less);
        assert_eq!(name_order(b"a", true, b"a0", false), Less);
        assert_eq!(name_order(b"a", false, b"a.yaml", false), Less);
        // The same name as a file and as a directory are different keys.
        assert_eq!(name_order(b"a", false, b"a", true), Less);
        assert_eq!(name_order(b"a", true, b"a", true), Equal);
        assert_eq!(name_order(b"b", false, b"a", true), Greater);
    }

    /// Writes `ids` into a pack of their own, as a fetch would.
    fn pack_of(repo: &Repository, ids: &[Oid]) -> String {
        let mut builder = repo.packbuilder().unwrap();
        for id in ids {
            builder.insert_object(*id, None).unwrap();
        }
        builder.write(&repo.path().join("objects/pack"), 0).unwrap();
        builder.name().unwrap().unwrap().to_string()
    }

    fn loose_files(objects: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for dir in fs::read_dir(objects).unwrap() {
            let dir = dir.unwrap().path();
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            if name.len() == 2 {
                files.extend(fs::read_dir(&dir).unwrap().map(|f| f.unwrap().path()));
            }
        }
        files
    }

    fn names_in(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn repack_keeps_every_object_in_one_pack_and_removes_what_it_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mirror.git");
        let repo = Repository::init_bare(&path).unwrap();
        let pack_dir = repo.path().join("objects/pack");

        // Three packs, one of them kept, every object also loose (as it was
        // first written), and a commit no ref reaches (a tip force-pushed
        // away), loose only.
        let blobs: Vec<Oid> = (0..6)
            .map(|i| repo.blob(format!("v{i}\n").as_bytes()).unwrap())
            .collect();
        let first = pack_of(&repo, &blobs[0..2]);
        let second = pack_of(&repo, &blobs[2..4]);
        let kept = pack_of(&repo, &blobs[4..5]);
        fs::write(pack_dir.join(format!("pack-{kept}.keep")), "").unwrap();
        fs::write(pack_dir.join("pack_git2_Ab12Cd"), "half a pack").unwrap();
        let mut tree = repo.treebuilder(None).unwrap();
        tree.insert("a.yaml", blobs[5], 0o100644).unwrap();
        let tree = repo.find_tree(tree.write().unwrap()).unwrap();
        let sig = git2::Signature::new("A", "a@example.com", &git2::Time::new(1_700_000_000, 0)).unwrap();
        let orphan = repo.commit(None, &sig, &sig, "force-pushed away", &tree, &[]).unwrap();
        let loose_before = loose_files(&repo.path().join("objects")).len();
        assert_eq!(loose_before, 8, "every object was written loose first");

        // A reader that had the mirror open before the repack.
        let reader = Repository::open(&path).unwrap();
        assert_eq!(reader.find_blob(blobs[0]).unwrap().content(), b"v0\n");

        let done = repack_mirror(&repo, &path).unwrap();
        assert_eq!(done.packs_removed, 3);
        assert_eq!(done.loose_removed, loose_before);
        assert_eq!(done.objects, 8, "six blobs, a tree and a commit, each once");
        assert_eq!(
            names_in(&pack_dir),
            BTreeSet::from([format!("pack-{}.idx", done.pack), format!("pack-{}.pack", done.pack)]),
            "{first}, {second}, {kept} (with its .keep) and the temporary pack are gone"
        );
        assert!(loose_files(&repo.path().join("objects")).is_empty());
        assert_eq!(count_packs(&pack_dir).unwrap(), 1);

        let reopened = Repository::open(&path).unwrap();
        for (i, id) in blobs.iter().enumerate() {
            let want = format!("v{i}\n");
            assert_eq!(reopened.find_blob(*id).unwrap().content(), want.as_bytes());
            assert_eq!(
                reader.find_blob(*id).unwrap().content(),
                want.as_bytes(),
                "the old handle finds the new pack"
            );
        }
        assert_eq!(reopened.find_commit(orphan).unwrap().tree_id(), tree.id());
    }

    #[test]
    fn only_other_packs_and_leftover_temporaries_are_replaced() {
        let keep = "0123456789abcdef0123456789abcdef01234567";
        let replaced = |name: &str| is_replaced(Path::new(name), keep);
        for name in [
            "pack-aa.pack",
            "pack-aa.idx",
            "pack-aa.keep",
            "pack-aa.rev",
            "pack-aa.bitmap",
            "pack_git2_x1Y2z3",
            "multi-pack-index",
        ] {
            assert!(replaced(name), "{name}");
        }
        for name in [
            &format!("pack-{keep}.pack"),
            &format!("pack-{keep}.idx"),
            "pack-aa.idx.lock",
            "notes.txt",
        ] {
            assert!(!replaced(name), "{name}");
        }
    }

    #[test]
    fn change_status_names() {
        assert_eq!(ChangeStatus::Added.as_str(), "added");
        assert_eq!(ChangeStatus::Modified.as_str(), "modified");
        assert_eq!(ChangeStatus::Deleted.as_str(), "deleted");
    }
}
