//! A change judged by what it is and by what it does: the plan `tollgate
//! plan` prints and the controller promotes.
//!
//! Both revisions are read whole, the head through the one validation path
//! every command shares (`revision::read_revision`): an invalid head has no
//! plan, only `validate --rev`'s errors. The base is read from the head plus
//! the files git's tree diff says changed, so unchanged files are read and
//! parsed once. Whole revisions are needed because a change is also judged
//! by its effect on what devices get, which depends on every other baseline
//! that targets the same groups.

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;

use tollgate_core::catalog::Catalog;
use tollgate_core::diff::diff_snapshots;
use tollgate_core::format::FormatError;
use tollgate_core::ids::CommitSha;
use tollgate_core::plan::{plan, Fleet, Plan, PlanContext};
use tollgate_core::revision::{read_pair, read_revision, RevisionError};
use tollgate_core::snapshot::Snapshot;
use tollgate_git::git::{GitError, GitRepo};
use tollgate_policy::policy_engine;

pub struct PlanArgs {
    pub repo: PathBuf,
    /// `None` plans the head against nothing: a repo's first revision.
    pub base: Option<String>,
    pub head: String,
    pub fleet: Option<PathBuf>,
    pub now: DateTime<Utc>,
}

/// A plan, or the reasons there is none.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum PlanOutcome {
    Plan(Plan),
    Invalid {
        base: CommitSha,
        head: CommitSha,
        valid: bool,
        errors: Vec<FormatError>,
        /// The revision the errors are in: the head, or the base when its
        /// config or policy is broken.
        #[serde(skip)]
        invalid_at: CommitSha,
    },
}

pub fn load_fleet(path: &std::path::Path) -> anyhow::Result<Fleet> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading fleet file {}", path.display()))?;
    serde_norway::from_str(&text).with_context(|| {
        format!(
            "{}: not a fleet file ({{devices: N, groups: {{group: N}}}})",
            path.display()
        )
    })
}

/// Plans `base..head` of the repo at `args.repo`.
pub fn compute_plan(git: &GitRepo, args: &PlanArgs) -> anyhow::Result<PlanOutcome> {
    let catalog = Catalog::builtin();
    let fleet = args.fleet.as_deref().map(load_fleet).transpose()?;
    let head = git.resolve(&args.head)?;
    let empty = Snapshot::default();
    let (base, pair) = match &args.base {
        Some(rev) => {
            let base = git.resolve(rev)?;
            match read_pair(git, &base, &head) {
                Ok(pair) => (base, Some(pair)),
                Err(e) => return invalid(base, head, e),
            }
        }
        // The first revision of a repo has no base: every document is added
        // and judged by the builtin policy, governed like any other change.
        None => (CommitSha::new(EMPTY_REVISION), None),
    };
    let (base_snap, head_snap) = match pair {
        Some(pair) => {
            // The base revision's governance judges the change, never the
            // head's; a broken one cannot be trusted to judge anything.
            let broken: Vec<FormatError> = pair
                .base_errors
                .into_iter()
                .filter(|e| is_governance_path(&e.path))
                .collect();
            if !broken.is_empty() {
                return Ok(PlanOutcome::Invalid {
                    invalid_at: base.clone(),
                    base,
                    head,
                    valid: false,
                    errors: broken,
                });
            }
            (pair.base, pair.head)
        }
        None => match read_revision(git, &head) {
            Ok(snap) => (empty, snap),
            Err(e) => return invalid(base, head, e),
        },
    };
    let mut engine = policy_engine(&base_snap).context("compiling the base revision's policy/")?;
    let changes = diff_snapshots(&base_snap, &head_snap, catalog);
    let author = git
        .log(&head, 1)?
        .into_iter()
        .next()
        .map(|c| c.author)
        .unwrap_or_default();
    let ctx = PlanContext {
        catalog,
        base: &base_snap,
        head: &head_snap,
        author: &author,
        fleet: fleet.as_ref(),
        now: args.now,
    };
    Ok(PlanOutcome::Plan(plan(base, head, changes, &mut engine, &ctx)))
}

/// An invalid head is no plan, with every error `validate --rev` gives.
fn invalid(base: CommitSha, head: CommitSha, e: RevisionError<GitError>) -> anyhow::Result<PlanOutcome> {
    match e {
        RevisionError::Invalid { errors, revision } => Ok(PlanOutcome::Invalid {
            base,
            head,
            valid: false,
            errors,
            invalid_at: revision,
        }),
        RevisionError::Read(e) => Err(e.into()),
    }
}

/// Files that decide how changes are judged: the repo config and policy.
fn is_governance_path(path: &str) -> bool {
    path == "tollgate.yaml" || path == "tollgate.yml" || path.starts_with("policy/")
}

/// What `base` reads as when there is no base revision.
pub const EMPTY_REVISION: &str = "0000000000000000000000000000000000000000";
