//! The governed documents of one revision, indexed by kind and name.
//!
//! Documents are shared (`Arc`): two snapshots of revisions that have most
//! files in common (the two sides of a plan, or a revision and the next)
//! hold the same parsed documents instead of copies, so assembling and
//! cloning a snapshot costs map entries, not documents.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::catalog::Catalog;
use crate::digest::{baseline_json, config_json, digest_of, exception_json};
use crate::format::{find_token as text_position, parse_file, Baseline, Config, Document, Exception, FormatError};
use crate::ids::{CommitSha, Digest};
use crate::tree::{RepoPath, SourceFile};

/// A parsed document with where it came from and its content digest.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    pub path: RepoPath,
    pub doc: T,
    pub digest: Digest,
    /// Canonical JSON of the document, the basis of its digest.
    pub canonical: Value,
    /// The raw text, kept for the human-readable unified diff.
    pub text: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub baselines: BTreeMap<String, Arc<Located<Baseline>>>,
    pub exceptions: BTreeMap<String, Arc<Located<Exception>>>,
    /// Not shared: one small document, and callers take it by value.
    pub config: Option<Located<Config>>,
    /// Repo-local Rego files by path (text).
    pub policies: BTreeMap<RepoPath, Arc<Located<String>>>,
}

/// One governed file as parsed, ready to be shared by snapshots.
#[derive(Debug, Clone, PartialEq)]
enum Parsed {
    Baseline(Arc<Located<Baseline>>),
    Exception(Arc<Located<Exception>>),
    Config(Arc<Located<Config>>),
    Policy(Arc<Located<String>>),
}

/// What parsing one file gave: a document, nothing (not governed), or why not.
type Parse = Result<Option<Parsed>, FormatError>;

/// The governed files of one revision, each parsed once, in path order.
///
/// Snapshots are assembled from it. Two revisions that share most of their
/// files (the two sides of a plan) share those parses: parsing is a pure
/// function of a file's path and bytes, so the shared parse is the one a
/// separate read would give ([`ParsedFiles::with_changes`]).
#[derive(Debug, Clone, Default)]
pub struct ParsedFiles {
    files: BTreeMap<RepoPath, Parse>,
}

/// Files parsed per thread at least; below that a second thread costs more
/// than it saves.
const PARSE_CHUNK: usize = 64;

/// How many threads to read and parse `files` files on: one per core, at
/// least [`PARSE_CHUNK`] files each.
pub fn parse_threads(files: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.div_ceil(PARSE_CHUNK))
        .max(1)
}

impl ParsedFiles {
    /// Parses every file of `files`, on as many threads as the machine
    /// offers for large revisions (parsing is most of reading a revision).
    pub fn parse(files: &[SourceFile], catalog: &'static Catalog) -> ParsedFiles {
        let threads = parse_threads(files.len());
        if threads == 1 {
            return ParsedFiles::parse_here(files, catalog);
        }
        let chunk = files.len().div_ceil(threads);
        std::thread::scope(|s| {
            let workers: Vec<_> = files
                .chunks(chunk)
                .map(|part| s.spawn(move || ParsedFiles::parse_here(part, catalog)))
                .collect();
            let mut out = ParsedFiles::default();
            for w in workers {
                out.merge(w.join().expect("parsing a governed file does not panic"));
            }
            out
        })
    }

    /// Parses `files` on this thread.
    pub fn parse_here(files: &[SourceFile], catalog: &'static Catalog) -> ParsedFiles {
        ParsedFiles {
            files: files.iter().map(|f| (f.path.clone(), parse_one(f, catalog))).collect(),
        }
    }

    /// Adds the files of `other` (parsed separately, e.g. on another thread);
    /// a path in both takes `other`'s parse.
    pub fn merge(&mut self, other: ParsedFiles) {
        self.files.extend(other.files);
    }

    /// The files of another revision that differs from this one only at
    /// `changed`: those paths take their version from `files` (read at that
    /// revision), and a changed path missing from `files` does not exist
    /// there. Every other path keeps this revision's parse.
    pub fn with_changes(&self, changed: &[RepoPath], files: &[SourceFile], catalog: &'static Catalog) -> ParsedFiles {
        let mut out = self.clone();
        for path in changed {
            out.files.remove(path);
        }
        out.files.extend(ParsedFiles::parse(files, catalog).files);
        out
    }

    /// Number of files read (governed or not).
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The snapshot of these files and every error found assembling it
    /// (parse errors, reused names), documents with errors left out.
    pub fn snapshot(&self) -> (Snapshot, Vec<FormatError>) {
        let mut snap = Snapshot::default();
        let mut errors = Vec::new();
        for (path, parse) in &self.files {
            match parse {
                Ok(Some(p)) => {
                    if let Err(e) = snap.insert(path, p.clone()) {
                        errors.push(e);
                    }
                }
                Ok(None) => {}
                Err(e) => errors.push(e.clone()),
            }
        }
        errors.sort();
        (snap, errors)
    }

    /// The one validation of a whole revision, as `validate --rev` runs it:
    /// every document parsed, names unique per kind, and the checks across
    /// documents ([`Snapshot::cross_check`]). Errors sorted.
    pub fn checked(&self) -> (Snapshot, Vec<FormatError>) {
        let (snap, mut errors) = self.snapshot();
        errors.extend(snap.cross_check());
        errors.sort();
        (snap, errors)
    }

    /// [`ParsedFiles::checked`], keeping the snapshot only when it is valid.
    pub fn validated(&self) -> Result<Snapshot, Vec<FormatError>> {
        match self.checked() {
            (snap, errors) if errors.is_empty() => Ok(snap),
            (_, errors) => Err(errors),
        }
    }

    /// The parsed files of a revision whose whole snapshot is `valid`
    /// (validated with no errors): in a valid revision every governed file
    /// holds exactly one document, so the documents say what every file
    /// parsed to. Non-governed files were never part of it and need not be.
    fn of_valid(valid: &Snapshot) -> ParsedFiles {
        let mut files = BTreeMap::new();
        files.extend(
            valid
                .baselines
                .values()
                .map(|b| (b.path.clone(), Ok(Some(Parsed::Baseline(b.clone()))))),
        );
        files.extend(
            valid
                .exceptions
                .values()
                .map(|e| (e.path.clone(), Ok(Some(Parsed::Exception(e.clone()))))),
        );
        files.extend(
            valid
                .config
                .iter()
                .map(|c| (c.path.clone(), Ok(Some(Parsed::Config(Arc::new(c.clone())))))),
        );
        files.extend(
            valid
                .policies
                .values()
                .map(|p| (p.path.clone(), Ok(Some(Parsed::Policy(p.clone()))))),
        );
        ParsedFiles { files }
    }
}

fn parse_one(file: &SourceFile, catalog: &'static Catalog) -> Parse {
    let Some(doc) = parse_file(file, catalog)? else {
        return Ok(None);
    };
    let text = match &file.content {
        crate::tree::FileContent::Blob(b) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    let path = file.path.clone();
    Ok(Some(match doc {
        Document::Baseline(doc) => {
            let canonical = baseline_json(&doc, catalog);
            let digest = digest_of(&canonical);
            Parsed::Baseline(Arc::new(Located {
                path,
                doc,
                digest,
                canonical,
                text,
            }))
        }
        Document::Exception(doc) => {
            let canonical = exception_json(&doc);
            let digest = digest_of(&canonical);
            Parsed::Exception(Arc::new(Located {
                path,
                doc,
                digest,
                canonical,
                text,
            }))
        }
        Document::Config(doc) => {
            let canonical = config_json(&doc);
            let digest = digest_of(&canonical);
            Parsed::Config(Arc::new(Located {
                path,
                doc,
                digest,
                canonical,
                text,
            }))
        }
        Document::Policy(doc) => {
            let digest = Digest::from_canonical_bytes(doc.as_bytes());
            Parsed::Policy(Arc::new(Located {
                path,
                canonical: Value::String(doc.clone()),
                doc,
                digest,
                text,
            }))
        }
    }))
}

/// A revision known to be valid as a whole: its snapshot passed
/// [`ParsedFiles::validated`] with every governed file of the revision.
/// The only ways to get one are reading a revision whole or deriving one
/// from another valid revision ([`ValidRevision::with_changes`]), so holding
/// one is the proof the cheap derivation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRevision {
    revision: CommitSha,
    snapshot: Snapshot,
}

impl ValidRevision {
    /// Validates `files`, every governed file of `revision`.
    pub fn validate(
        revision: CommitSha,
        files: &[SourceFile],
        catalog: &'static Catalog,
    ) -> Result<ValidRevision, Vec<FormatError>> {
        ParsedFiles::parse(files, catalog)
            .validated()
            .map(|snapshot| ValidRevision { revision, snapshot })
    }

    /// Validates the parsed files of every governed file of `revision`.
    pub fn from_parsed(revision: CommitSha, parsed: &ParsedFiles) -> Result<ValidRevision, Vec<FormatError>> {
        parsed.validated().map(|snapshot| ValidRevision { revision, snapshot })
    }

    /// The revision that differs from this one only at `changed` (git's
    /// tree diff between the two), whose files at those paths are `files`,
    /// validated as a whole without reading anything else.
    ///
    /// Equivalent to [`ValidRevision::validate`] of the other revision's
    /// files: every unchanged path holds the same bytes, which parsed
    /// without error to the document this revision holds for that path, and
    /// the names, the checks across documents and their errors are computed
    /// again over the whole result, in path order, as a full read does.
    pub fn with_changes(
        &self,
        revision: CommitSha,
        changed: &[RepoPath],
        files: &[SourceFile],
        catalog: &'static Catalog,
    ) -> Result<ValidRevision, Vec<FormatError>> {
        ParsedFiles::of_valid(&self.snapshot)
            .with_changes(changed, files, catalog)
            .validated()
            .map(|snapshot| ValidRevision { revision, snapshot })
    }

    pub fn revision(&self) -> &CommitSha {
        &self.revision
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn into_snapshot(self) -> Snapshot {
        self.snapshot
    }
}

impl Snapshot {
    /// Parses `files` (all of a revision, or only some of them). Returns
    /// every parse error and reused name found, not just the first;
    /// documents with errors are left out. Does not check across documents:
    /// for a whole revision use [`Snapshot::validated`].
    pub fn build(files: &[SourceFile], catalog: &'static Catalog) -> (Snapshot, Vec<FormatError>) {
        ParsedFiles::parse(files, catalog).snapshot()
    }

    /// Every file of a revision (or working tree) through the one validation
    /// path ([`ParsedFiles::checked`]): the snapshot and all its errors.
    pub fn checked(files: &[SourceFile], catalog: &'static Catalog) -> (Snapshot, Vec<FormatError>) {
        ParsedFiles::parse(files, catalog).checked()
    }

    /// [`Snapshot::checked`], keeping the snapshot only when it is valid.
    pub fn validated(files: &[SourceFile], catalog: &'static Catalog) -> Result<Snapshot, Vec<FormatError>> {
        ParsedFiles::parse(files, catalog).validated()
    }

    fn insert(&mut self, path: &RepoPath, parsed: Parsed) -> Result<(), FormatError> {
        let duplicate = |kind: &str, name: &str, first: &RepoPath, text: &str| {
            let (line, column) = text_position(text, name);
            FormatError {
                path: path.to_string(),
                line,
                column,
                message: format!("{kind} name `{name}` is already used by {first}; names must be unique per kind"),
            }
        };
        match parsed {
            Parsed::Baseline(b) => {
                if let Some(first) = self.baselines.get(&b.doc.name) {
                    return Err(duplicate("Baseline", &b.doc.name, &first.path, &b.text));
                }
                self.baselines.insert(b.doc.name.clone(), b);
            }
            Parsed::Exception(e) => {
                if let Some(first) = self.exceptions.get(&e.doc.name) {
                    return Err(duplicate("Exception", &e.doc.name, &first.path, &e.text));
                }
                self.exceptions.insert(e.doc.name.clone(), e);
            }
            Parsed::Config(c) => {
                if let Some(first) = &self.config {
                    return Err(FormatError::whole_file(
                        path.as_str(),
                        format!("a second repo config; {} already is the Config", first.path),
                    ));
                }
                self.config = Some(Located::clone(&c));
            }
            Parsed::Policy(p) => {
                self.policies.insert(path.clone(), p);
            }
        }
        Ok(())
    }

    /// Checks that only make sense on a whole revision: owners name approver
    /// groups of the config, exceptions point at baselines that set the
    /// exempted settings.
    pub fn cross_check(&self) -> Vec<FormatError> {
        let mut errors = Vec::new();
        if let Some(config) = &self.config {
            for b in self.baselines.values() {
                for owner in &b.doc.owners {
                    if !config.doc.approvers.contains_key(owner) {
                        let (line, column) = text_position(&b.text, owner);
                        errors.push(FormatError {
                            path: b.path.to_string(),
                            line,
                            column,
                            message: format!("owner `{owner}` is not an approver group of {}", config.path),
                        });
                    }
                }
            }
        }
        for e in self.exceptions.values() {
            match self.baselines.get(&e.doc.baseline) {
                None => {
                    let (line, column) = text_position(&e.text, &e.doc.baseline);
                    errors.push(FormatError {
                        path: e.path.to_string(),
                        line,
                        column,
                        message: format!("exception names baseline `{}`, which does not exist", e.doc.baseline),
                    });
                }
                Some(b) => {
                    for key in e.doc.settings.iter().filter(|k| !b.doc.settings.contains_key(*k)) {
                        let (line, column) = text_position(&e.text, key);
                        errors.push(FormatError {
                            path: e.path.to_string(),
                            line,
                            column,
                            message: format!(
                                "baseline `{}` does not set `{key}`, so there is nothing to exempt",
                                b.doc.name
                            ),
                        });
                    }
                }
            }
        }
        errors.sort();
        errors
    }
}

#[cfg(test)]
mod tests {
    use crate::format::find_token as text_position;

    #[test]
    fn positions_match_whole_tokens() {
        let text = "metadata:\n  name: corp-ios-2\n  owners: [corp-ios]\n";
        assert_eq!(text_position(text, "corp-ios"), (3, 12));
        assert_eq!(text_position(text, "absent"), (1, 1));
    }
}
