//! The `tollgate` command line. Each command is a library function
//! `fn(args, out, format) -> Result<Exit>` so tests can drive it directly;
//! `main` only parses flags and maps the result to an exit code.

pub mod client;
pub mod drift;
pub mod explain;
pub mod plan;
pub mod quickstart;
pub mod rollback;
pub mod run;
pub mod sim;
pub mod simulate;
pub mod tour;
pub mod validate;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use explain::explain_cmd;
pub use plan::{plan_cmd, PlanArgs};
pub use quickstart::quickstart_cmd;
pub use validate::validate_cmd;

/// Exit codes of DESIGN 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: success.
    Ok,
    /// 1: the input is invalid or a check failed.
    Failed,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Change governance for MDM baselines kept in git"
)]
pub struct Cli {
    /// Output format: text for people, json for programs (a stable contract), markdown for PR comments.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value = "text")]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate every governed document and report conflicting baselines.
    Validate {
        /// The governed repo (a working tree, or any git repo with --rev).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Validate this git revision instead of the working tree.
        #[arg(long)]
        rev: Option<String>,
    },
    /// Show what a change would need: semantic diff, risk tier, approvals.
    Plan {
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// The revision in force (its config and policy judge the change).
        #[arg(long)]
        base: String,
        #[arg(long, default_value = "HEAD")]
        head: String,
        /// JSON or YAML with device counts: {devices: N, groups: {group: N}}.
        #[arg(long)]
        fleet: Option<PathBuf>,
    },
    /// Effective settings for a device group, and which baseline wins each key.
    Explain {
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        rev: Option<String>,
        #[arg(long)]
        platform: String,
        #[arg(long)]
        group: String,
    },
    /// Write a sample governed repo, plan every commit, then tour the controller with a simulated fleet.
    Quickstart {
        /// Where to create the sample repo (must not exist or be empty);
        /// by default a new directory under the system temp dir.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Only write the repo and config and print the plans; do not start the controller.
        #[arg(long)]
        no_run: bool,
        /// Exit after the tour instead of keeping the controller and the fleet running.
        #[arg(long, conflicts_with = "no_run")]
        no_wait: bool,
    },
    /// Run the controller: watch the governed repo, serve the HTTP API, drive promotions.
    Run(run::RunArgs),
    /// Show a running controller's source, rings, live promotions and health.
    Status(client::StatusArgs),
    /// What devices run against what was promoted: findings by ring, baseline, setting and kind.
    Drift(drift::DriftArgs),
    /// Promotions that changed a baseline, newest first.
    History(client::HistoryArgs),
    /// Approve a promotion (or request changes) as this token's user.
    Approve(client::ApproveArgs),
    /// Stop a live promotion, with a reason.
    Halt(client::HaltArgs),
    /// Let a promotion move without approvals, windows or freezes (audited).
    BreakGlass(client::BreakGlassArgs),
    /// Roll a baseline back: shows the diff and tier, asks, then requests it.
    Rollback(rollback::RollbackArgs),
    /// Verify or export the controller's audit log.
    #[command(subcommand)]
    Audit(client::AuditCommand),
    /// Simulate a fleet that pulls desired state and reports back (demos, tests, benchmarks).
    Simulate(simulate::SimulateArgs),
}

/// Terminal colour: only for a TTY, and never when NO_COLOR is set.
pub fn stdout_style() -> tollgate_core::render::Style {
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tollgate_core::render::Style { color }
}

/// Runs a parsed command line.
pub fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let style = stdout_style();
    match cli.command {
        Command::Validate { repo, rev } => validate_cmd(&repo, rev.as_deref(), out, cli.output, style),
        Command::Plan {
            repo,
            base,
            head,
            fleet,
        } => {
            let args = PlanArgs {
                repo,
                base: Some(base),
                head,
                fleet,
                now: chrono::Utc::now(),
            };
            plan_cmd(&args, out, cli.output, style)
        }
        Command::Explain {
            repo,
            rev,
            platform,
            group,
        } => explain_cmd(&repo, rev.as_deref(), &platform, &group, out, cli.output),
        Command::Quickstart { dir, no_run, no_wait } => {
            let dir = dir.unwrap_or_else(|| {
                let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
                std::env::temp_dir().join(format!("tollgate-quickstart-{stamp}-{}", std::process::id()))
            });
            let mode = match (no_run, no_wait) {
                (true, _) => quickstart::QuickstartMode::PlansOnly,
                (false, true) => quickstart::QuickstartMode::TourOnly,
                (false, false) => quickstart::QuickstartMode::TourThenServe,
            };
            quickstart_cmd(&dir, mode, out, style)
        }
        Command::Run(args) => run::run_cmd(&args, out),
        Command::Status(args) => client::status_cmd(&args, out, cli.output),
        Command::Drift(args) => drift::drift_cmd(&args, out, cli.output),
        Command::History(args) => client::history_cmd(&args, out, cli.output),
        Command::Approve(args) => client::approve_cmd(&args, out, cli.output),
        Command::Halt(args) => client::halt_cmd(&args, out, cli.output),
        Command::BreakGlass(args) => client::break_glass_cmd(&args, out, cli.output),
        Command::Rollback(args) => {
            let stdin = std::io::stdin();
            let interactive = rollback::stdin_is_terminal();
            rollback::rollback_cmd(&args, &mut stdin.lock(), interactive, out, cli.output)
        }
        Command::Audit(command) => client::audit_cmd(&command, out, cli.output),
        Command::Simulate(args) => simulate::simulate_cmd(&args, out, cli.output),
    }
}

/// Writes `value` as pretty JSON followed by a newline.
pub(crate) fn write_json(out: &mut dyn Write, value: &impl serde::Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}
