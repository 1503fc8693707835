//! `tollgate explain`

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use super::{write_json, Exit, Format};
use tollgate_core::catalog::Catalog;
use tollgate_core::ids::Platform;
use tollgate_core::snapshot::Snapshot;
use tollgate_git::{git::GitRepo, read_revision, worktree::read_worktree, RevisionError};

pub fn explain_cmd(
    repo: &Path,
    rev: Option<&str>,
    platform: &str,
    group: &str,
    out: &mut dyn Write,
    format: Format,
) -> anyhow::Result<Exit> {
    let Some(platform) = Platform::parse(platform) else {
        anyhow::bail!("unknown platform {platform:?}; expected one of ios, ipados, macos, android, windows");
    };
    // The validation every command shares: an invalid revision is
    // explained by no one, since which of two documents would win is a guess.
    let validated = match rev {
        Some(rev) => {
            let git = GitRepo::open(repo)?;
            let sha = git.resolve(rev)?;
            match read_revision(&git, &sha) {
                Ok(snap) => Ok(snap),
                Err(RevisionError::Invalid { errors, .. }) => Err(errors),
                Err(RevisionError::Read(e)) => return Err(e.into()),
            }
        }
        None => Snapshot::validated(&read_worktree(repo)?, Catalog::builtin()),
    };
    let snap = match validated {
        Ok(snap) => snap,
        Err(errors) => {
            match format {
                Format::Json => write_json(out, &serde_json::json!({"explanation": null, "errors": errors}))?,
                Format::Text | Format::Markdown => {
                    let mut s = format!("Cannot explain: {} error(s)\n", errors.len());
                    for e in &errors {
                        let _ = writeln!(s, "{e}");
                    }
                    out.write_all(s.as_bytes())?;
                }
            }
            return Ok(Exit::Failed);
        }
    };
    let ex = tollgate_core::explain::explain(&snap, platform, group, chrono::Utc::now());
    let conflicted = ex.settings.iter().any(|s| s.baseline.is_none());
    match format {
        Format::Json => write_json(out, &serde_json::json!({"explanation": ex, "errors": []}))?,
        Format::Text | Format::Markdown => {
            let mut s = String::new();
            if ex.baselines.is_empty() {
                let _ = writeln!(s, "No {platform} baseline targets group {group}.");
            } else {
                let _ = writeln!(s, "{platform} devices in {group} get: {}", ex.baselines.join(", "));
                let kw = ex.settings.iter().map(|x| x.key.len()).max().unwrap_or(0);
                let vals: Vec<String> = ex
                    .settings
                    .iter()
                    .map(|x| tollgate_core::render::show_public(&x.value))
                    .collect();
                let vw = vals.iter().map(|v| v.chars().count()).max().unwrap_or(0);
                for (x, v) in ex.settings.iter().zip(&vals) {
                    let from = x.baseline.as_deref().unwrap_or("-");
                    let exempt = if x.exempted_by.is_empty() {
                        String::new()
                    } else {
                        format!("  [exempted by {}]", x.exempted_by.join(", "))
                    };
                    let _ = writeln!(s, "  {:kw$}  {:vw$}  from {from}: {}{exempt}", x.key, v, x.why);
                }
            }
            out.write_all(s.as_bytes())?;
        }
    }
    Ok(if !conflicted { Exit::Ok } else { Exit::Failed })
}
