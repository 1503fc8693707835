//! Identifiers as newtypes, so a digest is never confused with a commit.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A full 40-hex git commit id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommitSha(String);

impl CommitSha {
    /// Wraps a hex object id as printed by git.
    pub fn new(hex: impl Into<String>) -> Self {
        CommitSha(hex.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The 12-character abbreviation used in human output.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(12)]
    }
}

impl fmt::Display for CommitSha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `sha256:<64 hex>` of a document's canonical JSON (DESIGN 4).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Digest(String);

impl Digest {
    pub fn from_canonical_bytes(bytes: &[u8]) -> Self {
        use sha2::{Digest as _, Sha256};
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Device platforms a baseline can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Ios,
    Ipados,
    Macos,
    Android,
    Windows,
}

impl Platform {
    pub const ALL: [Platform; 5] = [
        Platform::Ios,
        Platform::Ipados,
        Platform::Macos,
        Platform::Android,
        Platform::Windows,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Ios => "ios",
            Platform::Ipados => "ipados",
            Platform::Macos => "macos",
            Platform::Android => "android",
            Platform::Windows => "windows",
        }
    }

    /// Which vendor's native key applies (catalogue `native` mappings).
    pub fn vendor(self) -> Vendor {
        match self {
            Platform::Ios | Platform::Ipados | Platform::Macos => Vendor::Apple,
            Platform::Android => Vendor::Android,
            Platform::Windows => Vendor::Windows,
        }
    }

    pub fn parse(s: &str) -> Option<Platform> {
        Platform::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vendor {
    Apple,
    Android,
    Windows,
}

/// The name of a governed source: one repo and branch, with its own rings,
/// promotions and desired states. One store may hold several (one per
/// `BaselineSource` in Kubernetes); a single-source deployment governs
/// [`SourceId::DEFAULT`]. A DNS-1123 label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SourceId(String);

impl SourceId {
    /// The source a single-source deployment governs.
    pub const DEFAULT: &'static str = "default";

    pub fn new(name: impl Into<String>) -> Result<Self, String> {
        let name = name.into();
        check_dns_label(&name).map_err(|why| format!("source name {why}"))?;
        Ok(SourceId(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }
}

impl Default for SourceId {
    fn default() -> Self {
        SourceId(Self::DEFAULT.into())
    }
}

impl TryFrom<String> for SourceId {
    type Error = String;
    fn try_from(name: String) -> Result<Self, Self::Error> {
        SourceId::new(name)
    }
}

impl From<SourceId> for String {
    fn from(id: SourceId) -> String {
        id.0
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A DNS-1123 label: lowercase alphanumerics and '-', 1..=63 chars, starting
/// and ending alphanumeric. Used for `metadata.name`, rings and groups.
pub fn check_dns_label(s: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if s.is_empty() || s.len() > 63 {
        return Err(format!("{s:?} must be 1 to 63 characters long"));
    }
    if !s.chars().all(ok_char) {
        return Err(format!("{s:?} may only hold lowercase letters, digits and '-'"));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(format!("{s:?} must start and end with a letter or digit"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(check_dns_label("corp-ios").is_ok());
        assert!(check_dns_label("a").is_ok());
        for bad in ["", "Corp", "-a", "a-", "a_b", &"x".repeat(64)] {
            assert!(check_dns_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digest_format() {
        let d = Digest::from_canonical_bytes(b"{}");
        assert_eq!(d.as_str().len(), "sha256:".len() + 64);
        assert!(d.as_str().starts_with("sha256:44136fa355b3678a"));
    }
}
