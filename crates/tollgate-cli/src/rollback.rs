//! `tollgate rollback`: show the diff and tier, confirm, then request it.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::bail;
use clap::Args;
use serde_json::{json, Value};

use super::client::{Api, ServerArgs};
use super::{write_json, Exit, Format};
use tollgate_core::render::show_public;

#[derive(Debug, Clone, Args)]
pub struct RollbackArgs {
    /// The baseline to roll back (metadata.name).
    pub baseline: String,
    /// Roll back to the baseline as it was at this revision.
    #[arg(long, conflicts_with = "to_previous")]
    pub to: Option<String>,
    /// Roll back to the last version that completed a promotion (the default).
    #[arg(long)]
    pub to_previous: bool,
    /// Only these rings (repeatable); all rings that run the baseline by default.
    #[arg(long = "ring")]
    pub rings: Vec<String>,
    /// Skip approvals, windows and freezes, for this reason (loudly audited,
    /// with a follow-up review request).
    #[arg(long, value_name = "REASON")]
    pub break_glass: Option<String>,
    /// Do not ask for confirmation (for scripts).
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub fn rollback_cmd(
    args: &RollbackArgs,
    input: &mut dyn BufRead,
    interactive: bool,
    out: &mut dyn Write,
    format: Format,
) -> anyhow::Result<Exit> {
    let api = Api::new(&args.server)?;
    let to = match &args.to {
        Some(rev) => json!({"revision": rev}),
        None => json!("previous"),
    };
    let mut body = json!({"baseline": args.baseline, "to": to, "rings": args.rings,
                          "break_glass_reason": args.break_glass, "dry_run": true});
    let preview = api.post_json("/v1/rollbacks", &body)?;
    let plan = &preview["plan"];
    if format == Format::Json && !args.yes {
        write_json(out, &preview)?;
        bail!("not rolled back: pass --yes to confirm (the plan is above)");
    }
    if format != Format::Json {
        out.write_all(render_plan(plan).as_bytes())?;
    }
    if !args.yes {
        if !interactive {
            bail!("not rolled back: confirm with --yes when not at a terminal");
        }
        write!(out, "Roll back {} in {}? [y/N] ", args.baseline, rings_of(plan))?;
        out.flush()?;
        let mut answer = String::new();
        input.read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            writeln!(out, "Not rolled back.")?;
            return Ok(Exit::Failed);
        }
    }
    body["dry_run"] = json!(false);
    let view = api.post_json("/v1/rollbacks", &body)?;
    if format == Format::Json {
        write_json(out, &view)?;
    } else {
        let p = &view["promotion"];
        writeln!(
            out,
            "Rollback requested as promotion {}: {}",
            p["id"],
            p["phase"]["phase"].as_str().unwrap_or("?")
        )?;
        if p["phase"]["phase"] == "pending_approval" {
            writeln!(
                out,
                "It needs {}; approve with: tollgate approve {}",
                needs(&plan["requirements"]),
                p["id"]
            )?;
        }
    }
    Ok(Exit::Ok)
}

/// Whether confirmation can be asked.
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

fn rings_of(plan: &Value) -> String {
    plan["rings"].as_array().map_or(String::new(), |r| {
        r.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")
    })
}

fn needs(r: &Value) -> String {
    let n = r["approvals"].as_u64().unwrap_or(0);
    let groups: Vec<&str> = r["approver_groups"]
        .as_array()
        .map_or(vec![], |g| g.iter().filter_map(Value::as_str).collect());
    match (n, groups.is_empty()) {
        (0, _) => "no approval".into(),
        (n, true) => format!("{n} approval(s)"),
        (n, false) => format!("{n} approval(s) from {}", groups.join(" + ")),
    }
}

/// The rollback plan for people: what changes, how risky, what it cannot undo.
pub fn render_plan(plan: &Value) -> String {
    let mut s = String::new();
    let doc = plan["document"].as_str().unwrap_or("?");
    let target = plan["target_revision"].as_str().unwrap_or("?");
    s.push_str(&format!(
        "Rollback of {doc} in {} to {}{}\n",
        rings_of(plan),
        &target[..target.len().min(12)],
        if plan["verified"] == true {
            " (a verified version)"
        } else {
            " (NOT a verified version: judged like a change)"
        }
    ));
    let change = &plan["change"];
    if change.is_null() {
        s.push_str("  (the current version could not be diffed against the target)\n");
    } else {
        s.push_str(&format!("  tier T{}\n", change["tier"]));
        let rows: Vec<(String, String, String, String)> = change["settings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                let show = |v: &Value| {
                    if v.is_null() {
                        "(unset)".to_string()
                    } else {
                        show_public(v)
                    }
                };
                (
                    x["key"].as_str().unwrap_or("?").to_string(),
                    show(&x["old"]),
                    show(&x["new"]),
                    x["direction"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let kw = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let ow = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
        for (k, o, n, d) in rows {
            s.push_str(&format!("  {k:kw$}  {o:>ow$} -> {n}  {d}\n"));
        }
        for r in change["reasons"].as_array().into_iter().flatten() {
            s.push_str(&format!("  why: {}\n", r.as_str().unwrap_or("")));
        }
    }
    s.push_str(&format!("  needs: {}\n", needs(&plan["requirements"])));
    let stuck: Vec<&str> = plan["not_rollback_effective"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !stuck.is_empty() {
        s.push_str(&format!(
            "  WARNING: rolling back does not undo the effect of: {} (devices keep what already happened)\n",
            stuck.join(", ")
        ));
    }
    s
}
