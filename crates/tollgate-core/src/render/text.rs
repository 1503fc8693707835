//! Plans for people at a terminal: grouped by document, tier first, old and
//! new values aligned, colour only when asked for.

use std::fmt::Write as _;

use super::{conflict_line, effective_sides, old_new, requirements_line, tier_name};
use crate::catalog::Direction;
use crate::plan::Plan;

/// ANSI colour on or off (on only when stdout is a terminal and NO_COLOR is unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn tier(&self, tier: u8) -> String {
        let label = format!("T{tier} {}", tier_name(tier).to_uppercase());
        let code = match tier {
            0 => "2",
            1 => "36",
            2 => "1;33",
            _ => "1;37;41",
        };
        self.paint(code, &label)
    }
    fn direction(&self, d: Direction) -> String {
        match d {
            Direction::Tighten => self.paint("32", "tighten"),
            Direction::Loosen => self.paint("1;31", "LOOSEN"),
            Direction::Neutral => self.paint("2", "neutral"),
            Direction::Unknown => self.paint("33", "unknown"),
        }
    }
}

const VALUE_WIDTH: usize = 40;

pub fn plan_text(plan: &Plan, style: Style) -> String {
    let mut out = String::new();
    let n = plan.changes.len();
    let _ = writeln!(
        out,
        "Plan {}..{}: {} change{}, highest tier {}",
        plan.base.short(),
        plan.head.short(),
        n,
        if n == 1 { "" } else { "s" },
        style.tier(plan.tier)
    );
    if n == 0 {
        let _ = writeln!(out, "No governed document changed meaning; nothing to promote.");
    }
    for c in &plan.changes {
        let _ = writeln!(out);
        let platform = c.platform.map(|p| format!(" ({p})")).unwrap_or_default();
        let moved = c.old_path.as_ref().map(|p| format!(" (from {p})")).unwrap_or_default();
        let _ = writeln!(
            out,
            "{}  {} {}{}  {}  {}{}",
            style.tier(c.tier),
            c.kind.as_str(),
            style.paint("1", &c.name),
            platform,
            c.op.as_str(),
            c.path,
            moved
        );
        let rows: Vec<(String, String, String, String)> = c
            .settings
            .iter()
            .map(|s| {
                let (o, n) = old_new(s, VALUE_WIDTH);
                (s.key.clone(), o, n, style.direction(s.direction))
            })
            .chain(c.fields.iter().map(|f| {
                let (o, n) = (
                    super::show(Some(&f.old), VALUE_WIDTH),
                    super::show(Some(&f.new), VALUE_WIDTH),
                );
                (f.field.clone(), o, n, String::new())
            }))
            .chain((!c.groups_added.is_empty() || !c.groups_removed.is_empty()).then(|| {
                let removed: Vec<String> = c.groups_removed.iter().map(|g| format!("-{g}")).collect();
                let added: Vec<String> = c.groups_added.iter().map(|g| format!("+{g}")).collect();
                let none = |v: Vec<String>| {
                    if v.is_empty() {
                        "(none)".to_string()
                    } else {
                        v.join(" ")
                    }
                };
                ("targets.groups".to_string(), none(removed), none(added), String::new())
            }))
            .collect();
        let kw = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
        let ow = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
        let nw = rows.iter().map(|r| r.2.chars().count()).max().unwrap_or(0);
        for (k, o, nv, d) in &rows {
            let line = format!("    {k:kw$}  {o:>ow$} -> {nv:nw$}  {d}");
            let _ = writeln!(out, "{}", line.trim_end());
        }
        if !c.effective.is_empty() {
            let _ = writeln!(out, "    what devices get, by target group:");
            let rows: Vec<(String, String, String, String, String)> = c
                .effective
                .iter()
                .map(|e| {
                    let (o, nv) = effective_sides(e, VALUE_WIDTH);
                    (
                        format!("{} {}", e.platform, e.group),
                        e.key.clone(),
                        o,
                        nv,
                        style.direction(e.direction),
                    )
                })
                .collect();
            let gw = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
            let kw = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
            let ow = rows.iter().map(|r| r.2.chars().count()).max().unwrap_or(0);
            let nw = rows.iter().map(|r| r.3.chars().count()).max().unwrap_or(0);
            for (g, k, o, nv, d) in &rows {
                let line = format!("      {g:gw$}  {k:kw$}  {o:>ow$} -> {nv:nw$}  {d}");
                let _ = writeln!(out, "{}", line.trim_end());
            }
        }
        for r in &c.reasons {
            let _ = writeln!(out, "    why: {r}");
        }
        let _ = writeln!(out, "    needs: {}", requirements_line(&c.requirements));
        if !c.rollback_effective {
            let _ = writeln!(
                out,
                "    {}",
                style.paint(
                    "1;33",
                    "rollback: NOT fully effective; undoing this will not undo all of its effect"
                )
            );
        }
        for v in &c.violations {
            let _ = writeln!(out, "    {} {v}", style.paint("1;31", "BLOCKED:"));
        }
        if let Some(d) = &c.digest {
            let _ = writeln!(out, "    digest: {d}");
        }
    }
    if !plan.conflicts.is_empty() {
        let _ = writeln!(
            out,
            "\n{} at head (devices cannot know which value applies; `validate` fails on them):",
            style.paint("1;33", "Conflicts")
        );
        for c in &plan.conflicts {
            let _ = writeln!(out, "    {}", conflict_line(c));
        }
    }
    out
}
