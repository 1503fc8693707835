//! The files of a governed repo at one revision, as plain data.
//!
//! Adapters (git, the working tree) produce [`SourceFile`]s; the domain only
//! classifies and parses them. Nothing here touches the filesystem.

use std::fmt;

/// Largest governed file Tollgate will read (DESIGN 2).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A slash-separated path relative to the governed repo root, checked so it
/// can never name anything outside the repo.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepoPath(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path {path:?} {reason}")]
pub struct PathError {
    pub path: String,
    pub reason: &'static str,
}

impl RepoPath {
    /// Accepts only relative, normalised paths: no empty, `.` or `..`
    /// components, no leading slash, no backslashes, no NUL, nothing under `.git`.
    pub fn new(path: &str) -> Result<Self, PathError> {
        let bad = |reason| PathError {
            path: path.to_string(),
            reason,
        };
        if path.is_empty() {
            return Err(bad("is empty"));
        }
        if path.starts_with('/') {
            return Err(bad("is absolute and escapes the repo"));
        }
        if path.contains('\\') || path.contains('\0') {
            return Err(bad("contains a backslash or NUL byte"));
        }
        for part in path.split('/') {
            match part {
                "" => return Err(bad("has an empty component")),
                "." | ".." => return Err(bad("has a '.' or '..' component and could escape the repo")),
                p if p.eq_ignore_ascii_case(".git") => return Err(bad("points into .git")),
                _ => {}
            }
        }
        Ok(RepoPath(path.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a tree entry holds. Only blobs are ever parsed; the other variants
/// exist so that validation can reject them by name instead of skipping them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    Blob(Vec<u8>),
    /// A symbolic link; its target is recorded for the message, never followed.
    Symlink {
        target: String,
    },
    /// A git submodule (gitlink) entry.
    Submodule,
    /// A blob over [`MAX_FILE_BYTES`]; its content was not read.
    TooLarge {
        size: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: RepoPath,
    pub content: FileContent,
}

/// What role a path plays in a governed repo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileClass {
    /// `tollgate.yaml` at the root: rings, approvers, windows, freezes.
    Config,
    /// `baselines/**.yaml`
    Baseline,
    /// `exceptions/**.yaml`
    Exception,
    /// `policy/**.rego`: a repo-local override of the risk policy.
    Policy,
}

impl FileClass {
    /// Classifies a repo-relative path; `None` for files Tollgate ignores
    /// (README, CI files...).
    pub fn of(path: &str) -> Option<FileClass> {
        let yaml = path.ends_with(".yaml") || path.ends_with(".yml");
        if path == "tollgate.yaml" || path == "tollgate.yml" {
            Some(FileClass::Config)
        } else if path.starts_with("baselines/") && yaml {
            Some(FileClass::Baseline)
        } else if path.starts_with("exceptions/") && yaml {
            Some(FileClass::Exception)
        } else if path.starts_with("policy/") && path.ends_with(".rego") {
            Some(FileClass::Policy)
        } else {
            None
        }
    }

    /// Governance files change how every other change is judged.
    pub fn is_governance(self) -> bool {
        matches!(self, FileClass::Config | FileClass::Policy)
    }
}

/// Top-level directories (and root files) that can hold governed files; adapters
/// use it to avoid walking unrelated parts of a large repo.
pub const GOVERNED_ROOTS: &[&str] = &["tollgate.yaml", "tollgate.yml", "baselines", "exceptions", "policy"];

/// How a path differs between two commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeStatus {
    Added,
    Modified,
    Deleted,
}

impl ChangeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeStatus::Added => "added",
            ChangeStatus::Modified => "modified",
            ChangeStatus::Deleted => "deleted",
        }
    }
}

/// One governed path (or symlink/submodule under a governed root) that
/// differs between two commits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathChange {
    pub path: RepoPath,
    pub status: ChangeStatus,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_path_rejects_escapes() {
        for p in [
            "",
            "/etc/passwd",
            "../x.yaml",
            "baselines/../../x",
            "a//b",
            "./a",
            ".git/config",
            "a\\b",
        ] {
            assert!(RepoPath::new(p).is_err(), "{p:?} should be rejected");
        }
        assert_eq!(
            RepoPath::new("baselines/ios/a.yaml").unwrap().as_str(),
            "baselines/ios/a.yaml"
        );
    }

    #[test]
    fn classifies_governed_paths() {
        assert_eq!(FileClass::of("tollgate.yaml"), Some(FileClass::Config));
        assert_eq!(FileClass::of("baselines/ios/deep/x.yml"), Some(FileClass::Baseline));
        assert_eq!(FileClass::of("exceptions/e.yaml"), Some(FileClass::Exception));
        assert_eq!(FileClass::of("policy/risk.rego"), Some(FileClass::Policy));
        assert_eq!(FileClass::of("README.md"), None);
        assert_eq!(FileClass::of("baselines/notes.txt"), None);
        assert!(FileClass::Policy.is_governance());
        assert!(!FileClass::Baseline.is_governance());
    }
}
