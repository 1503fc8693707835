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
use crate::snapshot::{parse_threads, ParsedFiles, Snapshot, ValidRevision};
use crate::tree::{PathChange, RepoPath, SourceFile};

/// The port to where revisions live (git, for Tollgate itself): a revision's
/// governed files and the paths that differ between two revisions.
///
/// Governed paths are those under the governed roots, each symlink or
/// submodule among them included so validation can reject it; oversize files
/// come back by size without being read.
pub trait Revisions {
    /// What went wrong reading; the adapter's own error, kept whole.
    type Error: std::error::Error + Send + 'static;

    /// Every governed path of `rev`.
    fn governed_paths(&self, rev: &CommitSha) -> Result<Vec<RepoPath>, Self::Error>;

    /// The files at `paths` of `rev`.
    fn read_paths(&self, rev: &CommitSha, paths: &[RepoPath]) -> Result<Vec<SourceFile>, Self::Error>;

    /// Every governed path that differs between `base` and `head`.
    fn changed_paths(&self, base: &CommitSha, head: &CommitSha) -> Result<Vec<PathChange>, Self::Error>;

    /// Another handle on the same revisions for a worker thread, or `None`
    /// when reads cannot be spread over threads.
    fn reader(&self) -> Result<Option<Reader<Self::Error>>, Self::Error> {
        Ok(None)
    }
}

/// A handle on revisions that a worker thread owns.
pub type Reader<E> = Box<dyn Revisions<Error = E> + Send>;

/// Why a revision could not be read as a valid whole.
#[derive(Debug, thiserror::Error)]
pub enum RevisionError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Read(#[from] E),
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

fn invalid<E: std::error::Error>(revision: &CommitSha) -> impl FnOnce(Vec<FormatError>) -> RevisionError<E> + '_ {
    move |errors| RevisionError::Invalid {
        revision: revision.clone(),
        errors,
    }
}

/// Reads and parses every governed file of `rev`, split over one thread per
/// core for a large revision (each with its own [`Revisions::reader`]),
/// since inflating blobs and parsing them is nearly all the cost.
fn read_parsed<E: std::error::Error + Send + 'static>(
    git: &dyn Revisions<Error = E>,
    rev: &CommitSha,
) -> Result<ParsedFiles, E> {
    let catalog = Catalog::builtin();
    let paths = git.governed_paths(rev)?;
    let threads = parse_threads(paths.len());
    let mut readers = Vec::new();
    for _ in 1..threads {
        match git.reader()? {
            Some(r) => readers.push(r),
            None => break,
        }
    }
    if readers.is_empty() {
        return Ok(ParsedFiles::parse_here(&git.read_paths(rev, &paths)?, catalog));
    }
    let chunk = paths.len().div_ceil(readers.len() + 1);
    std::thread::scope(|s| {
        let mut parts = paths.chunks(chunk);
        let first = parts.next().unwrap_or_default();
        let workers: Vec<_> = parts
            .zip(readers)
            .map(|(part, reader)| {
                s.spawn(move || -> Result<ParsedFiles, E> {
                    Ok(ParsedFiles::parse_here(&reader.read_paths(rev, part)?, catalog))
                })
            })
            .collect();
        let mut out = ParsedFiles::parse_here(&git.read_paths(rev, first)?, catalog);
        for w in workers {
            out.merge(w.join().expect("reading a governed file does not panic")?);
        }
        Ok(out)
    })
}

/// Every governed document of `rev` and every error validating it as a
/// whole finds: what `validate --rev` reports (it needs the snapshot of an
/// invalid revision too, to count its documents).
pub fn read_checked<E: std::error::Error + Send + 'static>(
    git: &dyn Revisions<Error = E>,
    rev: &CommitSha,
) -> Result<(Snapshot, Vec<FormatError>), E> {
    Ok(read_parsed(git, rev)?.checked())
}

/// Every governed document of `rev`, validated as a whole.
pub fn read_revision<E: std::error::Error + Send + 'static>(
    git: &dyn Revisions<Error = E>,
    rev: &CommitSha,
) -> Result<Snapshot, RevisionError<E>> {
    read_valid(git, rev).map(ValidRevision::into_snapshot)
}

/// [`read_revision`], keeping the proof that the revision is valid, from
/// which the next revision can be read cheaply ([`read_valid_from`]).
pub fn read_valid<E: std::error::Error + Send + 'static>(
    git: &dyn Revisions<Error = E>,
    rev: &CommitSha,
) -> Result<ValidRevision, RevisionError<E>> {
    ValidRevision::from_parsed(rev.clone(), &read_parsed(git, rev)?).map_err(invalid(rev))
}

/// `rev`, validated as a whole, reading only the files that differ from a
/// revision already known to be valid (`known`, e.g. the last tip a
/// long-running process read). Gives exactly what [`read_valid`] gives
/// ([`ValidRevision::with_changes`]), at the cost of git's tree diff, the
/// changed files and one pass over the documents instead of reading and
/// parsing every file.
pub fn read_valid_from<E: std::error::Error + Send + 'static>(
    git: &dyn Revisions<Error = E>,
    known: &ValidRevision,
    rev: &CommitSha,
) -> Result<ValidRevision, RevisionError<E>> {
    let changed: Vec<RepoPath> = git
        .changed_paths(known.revision(), rev)?
        .into_iter()
        .map(|c| c.path)
        .collect();
    let files = git.read_paths(rev, &changed)?;
    known
        .with_changes(rev.clone(), &changed, &files, Catalog::builtin())
        .map_err(invalid(rev))
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
pub fn read_pair<E: std::error::Error + Send + 'static>(
    git: &dyn Revisions<Error = E>,
    base: &CommitSha,
    head: &CommitSha,
) -> Result<RevisionPair, RevisionError<E>> {
    let catalog = Catalog::builtin();
    let head_parsed = read_parsed(git, head)?;
    let head_snap = head_parsed.validated().map_err(invalid(head))?;
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
