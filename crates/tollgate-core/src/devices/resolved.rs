//! What a ring should run, with content: its published desired state
//! resolved into the baselines and exceptions themselves (DESIGN 8). The
//! application resolves it from git; the fleet index judges reports by it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::format::Scope;
use crate::ids::{CommitSha, Digest, Platform};

/// One baseline a ring should run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedBaseline {
    pub name: String,
    pub revision: CommitSha,
    pub digest: Digest,
    /// The promotion that published it here.
    pub promotion: i64,
    /// Tier of the change that published it (0 when unknown, e.g. adopted).
    pub tier: u8,
    pub platform: Platform,
    pub priority: i64,
    pub owners: Vec<String>,
    pub target_groups: Vec<String>,
    pub settings: BTreeMap<String, Value>,
}

/// One exception in force in a ring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedException {
    pub name: String,
    pub revision: CommitSha,
    pub digest: Digest,
    pub baseline: String,
    pub settings: Vec<String>,
    pub scope: ExceptionScope,
    pub reason: String,
    pub expires: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExceptionScope {
    Groups(Vec<String>),
    Devices(Vec<String>),
}

impl From<&Scope> for ExceptionScope {
    fn from(s: &Scope) -> Self {
        match s {
            Scope::Groups(g) => ExceptionScope::Groups(g.clone()),
            Scope::Devices(d) => ExceptionScope::Devices(d.clone()),
        }
    }
}

/// What one ring should run, with content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedRing {
    pub ring: String,
    pub ring_index: usize,
    pub published_at: DateTime<Utc>,
    /// The last promotion published here.
    pub promotion: i64,
    pub base_revision: Option<CommitSha>,
    /// Sorted by name.
    pub baselines: Vec<ResolvedBaseline>,
    /// Sorted by name.
    pub exceptions: Vec<ResolvedException>,
}

impl ResolvedRing {
    pub fn baseline(&self, name: &str) -> Option<&ResolvedBaseline> {
        self.baselines
            .binary_search_by(|b| b.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.baselines[i])
    }

    pub fn exception(&self, name: &str) -> Option<&ResolvedException> {
        self.exceptions
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.exceptions[i])
    }
}
