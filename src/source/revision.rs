//! Reading a revision of the governed repo through the one validation path.
//!
//! Every command and the controller read a revision here, so they agree on
//! what is invalid and say so with the same errors: every governed document
//! is parsed, names are unique per kind, and the checks across documents
//! run ([`ParsedFiles::checked`]), exactly as `tollgate validate --rev` does.
//! An invalid revision yields no snapshot at all: there is nothing to plan,
//! explain or promote from it.

use crate::catalog::Catalog;
use crate::format::FormatError;
use crate::ids::CommitSha;
use crate::snapshot::{ParsedFiles, Snapshot};
use crate::tree::RepoPath;

use super::git::{GitError, GitRepo};

/// Why a revision could not be read as a valid whole.
#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    #[error(transparent)]
    Read(#[from] GitError),
    #[error("revision {revision} has {} invalid document(s), first {}", errors.len(), first(errors))]
    Invalid {
        revision: CommitSha,
        /// Every error, sorted: what `validate --rev` lists.
        errors: Vec<FormatError>,
    },
}

fn first(errors: &[FormatError]) -> String {
    errors.first().map(ToString::to_string).unwrap_or_default()
}

/// Every governed document of `rev`, validated as a whole.
pub fn read_revision(git: &GitRepo, rev: &CommitSha) -> Result<Snapshot, RevisionError> {
    let files = git.read_governed(rev)?;
    ParsedFiles::parse(&files, Catalog::builtin())
        .validated()
        .map_err(|errors| RevisionError::Invalid {
            revision: rev.clone(),
            errors,
        })
}

/// The two sides of a plan, each a complete snapshot of its revision.
#[derive(Debug)]
pub struct RevisionPair {
    /// The base as it is, valid or not: a change that repairs an invalid
    /// base must be plannable.
    pub base: Snapshot,
    /// What validating the base whole finds (empty for a valid base).
    pub base_errors: Vec<FormatError>,
    /// The head, valid (or there is no pair).
    pub head: Snapshot,
    /// Governed paths that differ between the two (git's tree diff).
    pub changed: Vec<RepoPath>,
}

/// Reads `head` through [`read_revision`]'s validation and `base` whole,
/// parsing the files both revisions share once.
///
/// Equivalent to reading both revisions separately: git's tree diff names
/// every governed path whose object differs, so every other path holds the
/// same bytes at both revisions and parses the same. What is saved is the
/// second read and parse of the unchanged files; what is read is still
/// every governed file of `head`.
pub fn read_pair(git: &GitRepo, base: &CommitSha, head: &CommitSha) -> Result<RevisionPair, RevisionError> {
    let catalog = Catalog::builtin();
    let head_parsed = ParsedFiles::parse(&git.read_governed(head)?, catalog);
    let head_snap = head_parsed.validated().map_err(|errors| RevisionError::Invalid {
        revision: head.clone(),
        errors,
    })?;
    let changed: Vec<RepoPath> = git.changed_paths(base, head)?.into_iter().map(|c| c.path).collect();
    let base_parsed = head_parsed.with_changes(&changed, &git.read_paths(base, &changed)?, catalog);
    let (base_snap, base_errors) = base_parsed.checked();
    Ok(RevisionPair {
        base: base_snap,
        base_errors,
        head: head_snap,
        changed,
    })
}
