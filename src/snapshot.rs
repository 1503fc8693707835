//! The governed documents of one revision, indexed by kind and name.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::catalog::Catalog;
use crate::digest::{baseline_json, config_json, digest_of, exception_json};
use crate::format::{find_token as text_position, parse_file, Baseline, Config, Document, Exception, FormatError};
use crate::ids::Digest;
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
    pub baselines: BTreeMap<String, Located<Baseline>>,
    pub exceptions: BTreeMap<String, Located<Exception>>,
    pub config: Option<Located<Config>>,
    /// Repo-local Rego files by path (text).
    pub policies: BTreeMap<RepoPath, Located<String>>,
}

/// One governed file as parsed: its document with canonical form and digest.
#[derive(Debug, Clone, PartialEq)]
struct ParsedDoc {
    doc: Document,
    text: String,
    canonical: Value,
    digest: Digest,
}

/// What parsing one file gave: a document, nothing (not governed), or why not.
type Parse = Arc<Result<Option<ParsedDoc>, FormatError>>;

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

impl ParsedFiles {
    /// Parses every file of `files`.
    pub fn parse(files: &[SourceFile], catalog: &'static Catalog) -> ParsedFiles {
        ParsedFiles {
            files: files
                .iter()
                .map(|f| (f.path.clone(), Arc::new(parse_one(f, catalog))))
                .collect(),
        }
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
        for f in files {
            out.files.insert(f.path.clone(), Arc::new(parse_one(f, catalog)));
        }
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
            match parse.as_ref() {
                Ok(Some(p)) => {
                    if let Err(e) = snap.insert(path.clone(), p.clone()) {
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
}

fn parse_one(file: &SourceFile, catalog: &'static Catalog) -> Result<Option<ParsedDoc>, FormatError> {
    let Some(doc) = parse_file(file, catalog)? else {
        return Ok(None);
    };
    let text = match &file.content {
        crate::tree::FileContent::Blob(b) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    let (canonical, digest) = match &doc {
        Document::Baseline(b) => {
            let canonical = baseline_json(b, catalog);
            let digest = digest_of(&canonical);
            (canonical, digest)
        }
        Document::Exception(e) => {
            let canonical = exception_json(e);
            let digest = digest_of(&canonical);
            (canonical, digest)
        }
        Document::Config(c) => {
            let canonical = config_json(c);
            let digest = digest_of(&canonical);
            (canonical, digest)
        }
        Document::Policy(p) => (Value::String(p.clone()), Digest::from_canonical_bytes(p.as_bytes())),
    };
    Ok(Some(ParsedDoc {
        doc,
        text,
        canonical,
        digest,
    }))
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

    fn insert(&mut self, path: RepoPath, parsed: ParsedDoc) -> Result<(), FormatError> {
        let ParsedDoc {
            doc,
            text,
            canonical,
            digest,
        } = parsed;
        let duplicate = |kind: &str, name: &str, first: &RepoPath, text: &str| {
            let (line, column) = text_position(text, name);
            FormatError {
                path: path.to_string(),
                line,
                column,
                message: format!("{kind} name `{name}` is already used by {first}; names must be unique per kind"),
            }
        };
        match doc {
            Document::Baseline(b) => {
                if let Some(first) = self.baselines.get(&b.name) {
                    return Err(duplicate("Baseline", &b.name, &first.path, &text));
                }
                self.baselines.insert(
                    b.name.clone(),
                    Located {
                        path,
                        doc: b,
                        digest,
                        canonical,
                        text,
                    },
                );
            }
            Document::Exception(e) => {
                if let Some(first) = self.exceptions.get(&e.name) {
                    return Err(duplicate("Exception", &e.name, &first.path, &text));
                }
                self.exceptions.insert(
                    e.name.clone(),
                    Located {
                        path,
                        doc: e,
                        digest,
                        canonical,
                        text,
                    },
                );
            }
            Document::Config(c) => {
                if let Some(first) = &self.config {
                    return Err(FormatError::whole_file(
                        path.as_str(),
                        format!("a second repo config; {} already is the Config", first.path),
                    ));
                }
                self.config = Some(Located {
                    path,
                    doc: c,
                    digest,
                    canonical,
                    text,
                });
            }
            Document::Policy(p) => {
                self.policies.insert(
                    path.clone(),
                    Located {
                        path,
                        doc: p,
                        digest,
                        canonical,
                        text,
                    },
                );
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
