//! Plans as a PR comment: a summary table, then one section per change.

use std::fmt::Write as _;

use super::{conflict_line, effective_sides, old_new, requirements_line, tier_name};
use crate::catalog::Direction;
use crate::plan::Plan;

const VALUE_WIDTH: usize = 80;

/// Escapes text for a markdown table cell inside backticks.
fn code(s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    format!("`{}`", s.replace('`', "'").replace('|', "\\|"))
}

pub fn plan_markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Tollgate plan: highest tier T{} ({})",
        plan.tier,
        tier_name(plan.tier)
    );
    let _ = writeln!(out);
    let n = plan.changes.len();
    let _ = writeln!(
        out,
        "`{}` → `{}` · {} governed change{}",
        plan.base.short(),
        plan.head.short(),
        n,
        if n == 1 { "" } else { "s" }
    );
    if n == 0 {
        let _ = writeln!(out, "\nNo governed document changed meaning; nothing to promote.");
        conflicts_section(&mut out, plan);
        return out;
    }
    if plan.has_violations() {
        let _ = writeln!(
            out,
            "\n> **Blocked:** at least one change breaks the policy and cannot be promoted; see below."
        );
    }
    let _ = writeln!(out, "\n| Tier | Kind | Name | Change | Needs |\n|---|---|---|---|---|");
    for c in &plan.changes {
        let _ = writeln!(
            out,
            "| **T{}** | {} | {} | {} | {} |",
            c.tier,
            c.kind.as_str(),
            code(&c.name),
            c.op.as_str(),
            requirements_line(&c.requirements).to_lowercase().replace('|', "\\|")
        );
    }
    for c in &plan.changes {
        let platform = c.platform.map(|p| format!(" ({p})")).unwrap_or_default();
        let _ = writeln!(
            out,
            "\n### T{} · {} {}{} · {}",
            c.tier,
            c.kind.as_str(),
            code(&c.name),
            platform,
            c.op.as_str()
        );
        let moved = c
            .old_path
            .as_ref()
            .map(|p| format!(" (moved from {})", code(p)))
            .unwrap_or_default();
        let _ = writeln!(out, "\n{}{}", code(&c.path), moved);
        if !c.settings.is_empty() || !c.fields.is_empty() || !c.groups_added.is_empty() || !c.groups_removed.is_empty()
        {
            let _ = writeln!(out, "\n| Setting | Old | New | Direction |\n|---|---|---|---|");
            for s in &c.settings {
                let (o, nv) = old_new(s, VALUE_WIDTH);
                let dir = direction_cell(s.direction);
                let _ = writeln!(out, "| {} | {} | {} | {} |", code(&s.key), code(&o), code(&nv), dir);
            }
            for f in &c.fields {
                let (o, nv) = (
                    super::show(Some(&f.old), VALUE_WIDTH),
                    super::show(Some(&f.new), VALUE_WIDTH),
                );
                let _ = writeln!(out, "| {} | {} | {} | |", code(&f.field), code(&o), code(&nv));
            }
            if !c.groups_added.is_empty() || !c.groups_removed.is_empty() {
                let removed: Vec<String> = c.groups_removed.iter().map(|g| format!("-{g}")).collect();
                let added: Vec<String> = c.groups_added.iter().map(|g| format!("+{g}")).collect();
                let _ = writeln!(
                    out,
                    "| targets.groups | {} | {} | |",
                    code(&removed.join(" ")),
                    code(&added.join(" "))
                );
            }
        }
        if !c.effective.is_empty() {
            let _ = writeln!(
                out,
                "\n**What devices get**, by target group\n\n| Group | Setting | Before | After | Direction |\n|---|---|---|---|---|"
            );
            for e in &c.effective {
                let (o, nv) = effective_sides(e, VALUE_WIDTH);
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    code(&format!("{} {}", e.platform, e.group)),
                    code(&e.key),
                    code(&o),
                    code(&nv),
                    direction_cell(e.direction)
                );
            }
        }
        if !c.reasons.is_empty() {
            let _ = writeln!(out, "\n**Why this tier**");
            for r in &c.reasons {
                let _ = writeln!(out, "- {r}");
            }
        }
        let _ = writeln!(out, "\n**Needs:** {}", requirements_line(&c.requirements));
        if !c.rollback_effective {
            let _ = writeln!(
                out,
                "\n> **Rollback is not fully effective:** undoing this change will not undo all of its effect."
            );
        }
        for v in &c.violations {
            let _ = writeln!(out, "\n> **Blocked:** {v}");
        }
        if let Some(d) = &c.digest {
            let _ = writeln!(out, "\n<sub>digest {}</sub>", code(d.as_str()));
        }
    }
    conflicts_section(&mut out, plan);
    out
}

fn direction_cell(d: Direction) -> String {
    let dir = serde_json::to_value(d)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    if dir == "loosen" {
        "**loosen**".to_string()
    } else {
        dir
    }
}

fn conflicts_section(out: &mut String, plan: &Plan) {
    if plan.conflicts.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n### Conflicts at head\n\nDevices cannot know which value applies; `tollgate validate` fails on these.\n"
    );
    for c in &plan.conflicts {
        let _ = writeln!(out, "- {}", code(&conflict_line(c)));
    }
}
