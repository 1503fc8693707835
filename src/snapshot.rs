//! The governed documents of one revision, indexed by kind and name.

use std::collections::BTreeMap;

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

impl Snapshot {
    /// Parses `files` (all of a revision, or only some of them for the fast
    /// plan path). Returns every error found, not just the first; documents
    /// with errors are left out.
    pub fn build(files: &[SourceFile], catalog: &'static Catalog) -> (Snapshot, Vec<FormatError>) {
        let mut snap = Snapshot::default();
        let mut errors = Vec::new();
        for file in files {
            let doc = match parse_file(file, catalog) {
                Ok(Some(doc)) => doc,
                Ok(None) => continue,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let text = match &file.content {
                crate::tree::FileContent::Blob(b) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            };
            if let Err(e) = snap.insert(file.path.clone(), doc, text, catalog) {
                errors.push(e);
            }
        }
        errors.sort();
        (snap, errors)
    }

    fn insert(&mut self, path: RepoPath, doc: Document, text: String, catalog: &Catalog) -> Result<(), FormatError> {
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
                let canonical = baseline_json(&b, catalog);
                let digest = digest_of(&canonical);
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
                let canonical = exception_json(&e);
                let digest = digest_of(&canonical);
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
                let canonical = config_json(&c);
                let digest = digest_of(&canonical);
                self.config = Some(Located {
                    path,
                    doc: c,
                    digest,
                    canonical,
                    text,
                });
            }
            Document::Policy(p) => {
                let canonical = Value::String(p.clone());
                let digest = Digest::from_canonical_bytes(p.as_bytes());
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
