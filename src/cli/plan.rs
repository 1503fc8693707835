//! `tollgate plan`: the fast path reads only what the change touched.
//!
//! git's tree diff names the changed paths (identical subtrees are skipped),
//! then only those files are parsed at both revisions, plus the base
//! revision's config and policy, which judge the change. The cost follows
//! the size of the change, not of the repo.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{write_json, Exit, Format};
use crate::catalog::Catalog;
use crate::diff::diff_snapshots;
use crate::format::FormatError;
use crate::ids::CommitSha;
use crate::plan::{plan, Fleet, Plan, PlanContext};
use crate::render::{plan_markdown, plan_text, Style};
use crate::risk::PolicyEngine;
use crate::snapshot::Snapshot;
use crate::source::git::GitRepo;
use crate::tree::RepoPath;

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
    let Some(base_rev) = &args.base else {
        return plan_first_revision(git, head, fleet.as_ref(), args.now);
    };
    let base = git.resolve(base_rev)?;
    let changed: Vec<RepoPath> = git.changed_paths(&base, &head)?.into_iter().map(|c| c.path).collect();

    let (base_changed, _) = Snapshot::build(&git.read_paths(&base, &changed)?, catalog);
    let (head_snap, head_errors) = Snapshot::build(&git.read_paths(&head, &changed)?, catalog);
    if !head_errors.is_empty() {
        return Ok(PlanOutcome::Invalid {
            base,
            head,
            valid: false,
            errors: head_errors,
        });
    }

    // The base revision's governance judges the change, never the head's.
    let gov_files = git.read_roots(&base, &["tollgate.yaml", "tollgate.yml", "policy"])?;
    let (gov, gov_errors) = Snapshot::build(&gov_files, catalog);
    let mut engine = if gov.policies.is_empty() {
        PolicyEngine::builtin()?
    } else {
        let sources: Vec<(String, String)> = gov
            .policies
            .values()
            .map(|p| (p.path.to_string(), p.doc.clone()))
            .collect();
        PolicyEngine::from_sources(&sources).context("compiling the base revision's policy/")?
    };
    if !gov_errors.is_empty() {
        // A broken base config cannot be trusted to judge anything.
        return Ok(PlanOutcome::Invalid {
            base,
            head,
            valid: false,
            errors: gov_errors,
        });
    }

    let changes = diff_snapshots(&base_changed, &head_snap, catalog);
    let author = git
        .log(&head, 1)?
        .into_iter()
        .next()
        .map(|c| c.author)
        .unwrap_or_default();
    let ctx = PlanContext {
        catalog,
        base: &base_changed,
        head: &head_snap,
        author: &author,
        fleet: fleet.as_ref(),
        now: args.now,
    };
    Ok(PlanOutcome::Plan(plan(base, head, changes, &mut engine, &ctx)))
}

/// The first revision of a repo has no base: every document is added and
/// judged by the builtin policy. It is governed like any other change.
fn plan_first_revision(
    git: &GitRepo,
    head: CommitSha,
    fleet: Option<&Fleet>,
    now: DateTime<Utc>,
) -> anyhow::Result<PlanOutcome> {
    let catalog = Catalog::builtin();
    let (head_snap, errors) = Snapshot::build(&git.read_governed(&head)?, catalog);
    let base = CommitSha::new(EMPTY_REVISION);
    if !errors.is_empty() {
        return Ok(PlanOutcome::Invalid {
            base,
            head,
            valid: false,
            errors,
        });
    }
    let empty = Snapshot::default();
    let changes = diff_snapshots(&empty, &head_snap, catalog);
    let author = git
        .log(&head, 1)?
        .into_iter()
        .next()
        .map(|c| c.author)
        .unwrap_or_default();
    let ctx = PlanContext {
        catalog,
        base: &empty,
        head: &head_snap,
        author: &author,
        fleet,
        now,
    };
    Ok(PlanOutcome::Plan(plan(
        base,
        head,
        changes,
        &mut PolicyEngine::builtin()?,
        &ctx,
    )))
}

/// What `base` reads as when there is no base revision.
pub const EMPTY_REVISION: &str = "0000000000000000000000000000000000000000";

pub fn plan_cmd(args: &PlanArgs, out: &mut dyn Write, format: Format, style: Style) -> anyhow::Result<Exit> {
    let git = GitRepo::open(&args.repo)?;
    let outcome = compute_plan(&git, args)?;
    match (&outcome, format) {
        (_, Format::Json) => write_json(out, &outcome)?,
        (PlanOutcome::Plan(p), Format::Text) => out.write_all(plan_text(p, style).as_bytes())?,
        (PlanOutcome::Plan(p), Format::Markdown) => out.write_all(plan_markdown(p).as_bytes())?,
        (PlanOutcome::Invalid { head, errors, .. }, _) => {
            writeln!(
                out,
                "Cannot plan: {} invalid document(s) at {}",
                errors.len(),
                head.short()
            )?;
            for e in errors {
                writeln!(out, "{e}")?;
            }
        }
    }
    Ok(match &outcome {
        PlanOutcome::Plan(p) if !p.has_violations() => Exit::Ok,
        _ => Exit::Failed,
    })
}
