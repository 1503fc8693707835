//! `tollgate validate`

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::{write_json, Exit, Format};
use tollgate_core::catalog::Catalog;
use tollgate_core::explain::{conflicts, Conflict};
use tollgate_core::format::FormatError;
use tollgate_core::render::Style;
use tollgate_core::snapshot::Snapshot;
use tollgate_git::{git::GitRepo, read_checked, worktree::read_worktree};

#[derive(Debug, Serialize)]
pub struct ValidateReport {
    pub valid: bool,
    pub errors: Vec<FormatError>,
    pub conflicts: Vec<Conflict>,
    /// Documents read, by kind.
    pub documents: Counts,
}

#[derive(Debug, Serialize)]
pub struct Counts {
    pub baselines: usize,
    pub exceptions: usize,
    pub config: usize,
    pub policies: usize,
}

/// Validates a working tree (`rev` None) or a git revision, through the
/// validation every command shares (`source::read_checked`, which
/// `source::read_revision` runs for `plan`, `explain` and the controller).
pub fn validate_repo(repo: &Path, rev: Option<&str>) -> anyhow::Result<ValidateReport> {
    let (snap, errors) = match rev {
        Some(rev) => {
            let git = GitRepo::open(repo)?;
            let sha = git.resolve(rev)?;
            read_checked(&git, &sha)?
        }
        None => {
            let files = read_worktree(repo).with_context(|| format!("reading {}", repo.display()))?;
            Snapshot::checked(&files, Catalog::builtin())
        }
    };
    let conflicts = conflicts(&snap);
    Ok(ValidateReport {
        valid: errors.is_empty() && conflicts.is_empty(),
        documents: Counts {
            baselines: snap.baselines.len(),
            exceptions: snap.exceptions.len(),
            config: usize::from(snap.config.is_some()),
            policies: snap.policies.len(),
        },
        errors,
        conflicts,
    })
}

pub fn validate_cmd(
    repo: &Path,
    rev: Option<&str>,
    out: &mut dyn Write,
    format: Format,
    style: Style,
) -> anyhow::Result<Exit> {
    let report = validate_repo(repo, rev)?;
    match format {
        Format::Json => write_json(out, &report)?,
        Format::Text | Format::Markdown => out.write_all(render(&report, style).as_bytes())?,
    }
    Ok(if report.valid { Exit::Ok } else { Exit::Failed })
}

fn render(r: &ValidateReport, style: Style) -> String {
    let mut s = String::new();
    for e in &r.errors {
        let _ = writeln!(
            s,
            "{}: {}",
            e,
            if style.color { "\x1b[31merror\x1b[0m" } else { "error" }
        );
    }
    for c in &r.conflicts {
        let _ = writeln!(s, "{}", tollgate_core::render::conflict_line(c));
    }
    let d = &r.documents;
    let _ = writeln!(
        s,
        "{}: {} baselines, {} exceptions, {} config, {} policy files; {} errors, {} conflicts",
        if r.valid { "valid" } else { "INVALID" },
        d.baselines,
        d.exceptions,
        d.config,
        d.policies,
        r.errors.len(),
        r.conflicts.len()
    );
    s
}
