//! Strict parsing of governed documents (DESIGN 2).
//!
//! Every error names `path:line:column`. Hostile input fails fast: files over
//! 1 MiB are never read, non-UTF-8 is reported at its first bad byte, alias
//! expansion and nesting are bounded, symlinks and submodules are rejected by
//! name and never followed. A leading UTF-8 byte-order mark is ignored
//! ([`strip_bom`]).

mod baseline;
mod config;
mod depth;
mod exception;
mod value;

use std::fmt;

use serde::Serialize;

pub use baseline::{Baseline, MAX_PRIORITY};
pub use config::{parse_duration, ApproverGroup, Config, Freeze, Gate, Ring, RingSelector, Window};
pub use exception::{Exception, Scope};
pub use value::{API_VERSION, MAX_DEPTH};

use crate::catalog::Catalog;
use crate::tree::{FileClass, FileContent, RepoPath, SourceFile, MAX_FILE_BYTES};

/// One problem in one governed file, positioned for an editor.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct FormatError {
    pub path: String,
    /// 1-based; whole-file problems point at 1:1.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.path, self.line, self.column, self.message)
    }
}

impl std::error::Error for FormatError {}

impl FormatError {
    pub fn whole_file(path: &str, message: impl Into<String>) -> Self {
        FormatError {
            path: path.to_string(),
            line: 1,
            column: 1,
            message: message.into(),
        }
    }
}

/// A parsed governed document.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Baseline(Baseline),
    Exception(Exception),
    Config(Config),
    /// A repo-local Rego policy file (`policy/*.rego`), kept as text.
    Policy(String),
}

impl Document {
    pub fn kind(&self) -> &'static str {
        match self {
            Document::Baseline(_) => "Baseline",
            Document::Exception(_) => "Exception",
            Document::Config(_) => "Config",
            Document::Policy(_) => "Policy",
        }
    }
}

/// Parses one governed file. Files Tollgate does not govern yield `Ok(None)`.
pub fn parse_file(file: &SourceFile, catalog: &'static Catalog) -> Result<Option<Document>, FormatError> {
    let path = file.path.as_str();
    let bytes = match &file.content {
        FileContent::Blob(b) => b,
        FileContent::Symlink { target } => {
            return Err(FormatError::whole_file(
                path,
                format!(
                "is a symbolic link (to {target:?}); governed files must be regular files, links are never followed"
            ),
            ))
        }
        FileContent::Submodule => {
            return Err(FormatError::whole_file(
                path,
                "is a git submodule; governed content must live in this repo",
            ))
        }
        FileContent::TooLarge { size } => {
            return Err(FormatError::whole_file(
                path,
                format!("is {size} bytes; governed files may be at most {MAX_FILE_BYTES} bytes (1 MiB)"),
            ))
        }
    };
    let Some(class) = FileClass::of(path) else {
        return Ok(None);
    };
    parse_bytes(&file.path, class, bytes, catalog).map(Some)
}

/// Parses the bytes of a governed file of a known class.
pub fn parse_bytes(
    path: &RepoPath,
    class: FileClass,
    bytes: &[u8],
    catalog: &'static Catalog,
) -> Result<Document, FormatError> {
    let path = path.as_str();
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(FormatError::whole_file(
            path,
            format!(
                "is {} bytes; governed files may be at most {MAX_FILE_BYTES} bytes (1 MiB)",
                bytes.len()
            ),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let (line, column) = line_col(bytes, e.valid_up_to());
        FormatError {
            path: path.to_string(),
            line,
            column,
            message: "is not valid UTF-8".into(),
        }
    })?;
    let text = strip_bom(text);
    if let Some((line, column)) = depth::too_deep(text) {
        return Err(FormatError {
            path: path.to_string(),
            line,
            column,
            message: format!("nesting deeper than {MAX_DEPTH} levels"),
        });
    }
    let yaml = |e: serde_norway::Error| yaml_error(path, e);
    value::with_catalog(catalog, || match class {
        FileClass::Baseline => {
            let b: Baseline = serde_norway::from_str::<baseline::BaselineDoc>(text)
                .map_err(yaml)?
                .into();
            check_platforms(path, text, &b, catalog)?;
            Ok(Document::Baseline(b))
        }
        FileClass::Exception => serde_norway::from_str::<exception::ExceptionDoc>(text)
            .map(|d| Document::Exception(d.into()))
            .map_err(yaml),
        FileClass::Config => serde_norway::from_str::<config::ConfigDoc>(text)
            .map(|d| Document::Config(d.into()))
            .map_err(yaml),
        FileClass::Policy => Ok(Document::Policy(text.to_string())),
    })
}

/// `text` without a leading UTF-8 byte-order mark (U+FEFF), which some
/// editors on Windows write: YAML allows one at the start of a stream, and
/// it says nothing about the content. Positions are unchanged (editors do
/// not show it), and so are digests, which are over the parsed content.
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{FEFF}').unwrap_or(text)
}

/// Every setting must be meaningful on the baseline's platform: a setting
/// the platform cannot enforce would be reported as applied and do nothing.
fn check_platforms(path: &str, text: &str, b: &Baseline, catalog: &Catalog) -> Result<(), FormatError> {
    for key in b.settings.keys() {
        if let Some(entry) = catalog.get(key) {
            if !entry.platforms.contains(&b.platform) {
                let (line, column) = find_token(text, key);
                let supported: Vec<&str> = entry.platforms.iter().map(|p| p.as_str()).collect();
                return Err(FormatError {
                    path: path.to_string(),
                    line,
                    column,
                    message: format!(
                        "spec.settings.{key}: not supported on {} (only on {})",
                        b.platform,
                        supported.join(", ")
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Position of the first occurrence of `needle` as a whole token, for checks
/// made after parsing (when YAML positions are gone). Falls back to 1:1.
pub fn find_token(text: &str, needle: &str) -> (usize, usize) {
    let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '-' || c == '.' || c == '_'));
    for (i, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(off) = line[from..].find(needle) {
            let start = from + off;
            let end = start + needle.len();
            if boundary(line[..start].chars().last()) && boundary(line[end..].chars().next()) {
                return (i + 1, line[..start].chars().count() + 1);
            }
            from = end;
        }
    }
    (1, 1)
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_col(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
    (line, column)
}

/// Turns a YAML error into a positioned one, with friendlier words for the
/// limits that protect us from hostile files.
fn yaml_error(path: &str, e: serde_norway::Error) -> FormatError {
    let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
    let raw = e.to_string();
    let message = match raw.rsplit_once(" at line ") {
        Some((msg, _)) => msg.to_string(),
        None => raw,
    };
    let message = if message.contains("repetition limit exceeded") {
        "YAML aliases expand to too much content (an alias bomb?); refused".to_string()
    } else if message.contains("recursion limit exceeded") {
        format!("nesting deeper than {MAX_DEPTH} levels")
    } else if message.is_empty() {
        "invalid YAML".to_string()
    } else {
        message
    };
    FormatError {
        path: path.to_string(),
        line,
        column,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::SourceFile;

    const IOS: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata: {name: corp-ios}\nspec:\n  \
                       platform: ios\n  targets: {groups: [phones]}\n  settings:\n    passcode.min_length: 8\n";
    const CONFIG: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: Config\nmetadata: {name: acme}\nrings:\n  \
                          - {name: canary, selector: {groups: [mdm-canary]}, soak: 1h}\n  \
                          - {name: broad, selector: {all: true}}\n";

    fn parse(path: &str, bytes: Vec<u8>) -> Result<Option<Document>, FormatError> {
        let file = SourceFile {
            path: RepoPath::new(path).unwrap(),
            content: FileContent::Blob(bytes),
        };
        parse_file(&file, Catalog::builtin())
    }

    fn with_bom(text: &str) -> Vec<u8> {
        [&b"\xEF\xBB\xBF"[..], text.as_bytes()].concat()
    }

    #[test]
    fn a_leading_byte_order_mark_is_ignored() {
        for (path, text) in [("baselines/ios/corp-ios.yaml", IOS), ("tollgate.yaml", CONFIG)] {
            let plain = parse(path, text.as_bytes().to_vec()).unwrap().unwrap();
            let marked = parse(path, with_bom(text)).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(marked, Some(plain), "{path}");
        }
        // Equal documents have equal digests: the mark changes no approval.
    }

    #[test]
    fn errors_after_a_byte_order_mark_keep_their_positions() {
        let path = "baselines/ios/corp-ios.yaml";
        for text in [
            IOS.replace("apiVersion", "apiVersoin"),
            IOS.replace("min_length: 8", "min_length: 80"),
        ] {
            let plain = parse(path, text.as_bytes().to_vec()).unwrap_err();
            let marked = parse(path, with_bom(&text)).unwrap_err();
            assert_eq!(marked, plain);
        }
        // Only a leading mark is a byte-order mark; one further on is content.
        let inside = IOS.replace("kind:", "\u{FEFF}kind:");
        let e = parse(path, inside.into_bytes()).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }
}
