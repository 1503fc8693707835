//! `tollgate plan`: the plan of `base..head` ([`tollgate_app::plan`]),
//! printed as text, markdown or JSON; exit 1 when there is none or it has
//! violations.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::{write_json, Exit, Format};
pub use tollgate_app::plan::{PlanOutcome, EMPTY_REVISION};
use tollgate_core::plan::Fleet;
use tollgate_core::render::{plan_markdown, plan_text, Style};
use tollgate_git::git::GitRepo;

pub struct PlanArgs {
    pub repo: PathBuf,
    /// `None` plans the head against nothing: a repo's first revision.
    pub base: Option<String>,
    pub head: String,
    pub fleet: Option<PathBuf>,
    pub now: DateTime<Utc>,
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

/// Plans `base..head` of the repo at `args.repo`, naming revisions as git does.
pub fn compute_plan(git: &GitRepo, args: &PlanArgs) -> anyhow::Result<PlanOutcome> {
    let fleet = args.fleet.as_deref().map(load_fleet).transpose()?;
    let head = git.resolve(&args.head)?;
    let base = args.base.as_deref().map(|rev| git.resolve(rev)).transpose()?;
    Ok(tollgate_app::plan::plan_commits(
        git,
        base.as_ref(),
        &head,
        fleet.as_ref(),
        args.now,
    )?)
}

pub fn plan_cmd(args: &PlanArgs, out: &mut dyn Write, format: Format, style: Style) -> anyhow::Result<Exit> {
    let git = GitRepo::open(&args.repo)?;
    let outcome = compute_plan(&git, args)?;
    match (&outcome, format) {
        (_, Format::Json) => write_json(out, &outcome)?,
        (PlanOutcome::Plan(p), Format::Text) => out.write_all(plan_text(p, style).as_bytes())?,
        (PlanOutcome::Plan(p), Format::Markdown) => out.write_all(plan_markdown(p).as_bytes())?,
        (PlanOutcome::Invalid { errors, invalid_at, .. }, _) => {
            writeln!(out, "Cannot plan: {} error(s) at {}", errors.len(), invalid_at.short())?;
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
