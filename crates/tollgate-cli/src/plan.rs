//! `tollgate plan`: the plan of `base..head` ([`tollgate_app::plan`]),
//! printed as text, markdown or JSON; exit 1 when there is none or it has
//! violations.

use std::io::Write;

use super::{write_json, Exit, Format};
pub use tollgate_app::plan::{compute_plan, load_fleet, PlanArgs, PlanOutcome, EMPTY_REVISION};
use tollgate_core::render::{plan_markdown, plan_text, Style};
use tollgate_git::git::GitRepo;

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
