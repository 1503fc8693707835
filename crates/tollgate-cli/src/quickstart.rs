//! `tollgate quickstart`: a sample governed repo with a realistic history,
//! the plan of every commit in it, then (unless `--no-run`) the tour of
//! [`super::tour`]: the controller and a simulated fleet, a change through
//! every ring, a bad change halted by its gate and a rollback.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use super::plan::{compute_plan, PlanArgs, PlanOutcome};
use super::tour::{run_tour, TourOptions};
use super::Exit;
use tollgate_app::controller::config::{token_hash, Role};
use tollgate_core::render::{plan_text, Style};
use tollgate_git::git::GitRepo;
pub use tollgate_git::sample::{append_commit, write_sample_repo, SampleCommit, SampleError, HISTORY};

/// Writes the sample repo under `dir/repo` and prints the plan of every commit.
pub fn write_and_plan(dir: &Path, out: &mut dyn Write, style: Style) -> anyhow::Result<std::path::PathBuf> {
    let repo = dir.join("repo");
    let ids = write_sample_repo(&repo, HISTORY)?;
    let git = GitRepo::open(&repo)?;
    writeln!(
        out,
        "Wrote a sample governed repo with {} commits to {}\n",
        ids.len(),
        repo.display()
    )?;
    // The first commit is planned against nothing: it goes through
    // governance like any other change.
    let mut base: Option<String> = None;
    for (id, c) in ids.iter().zip(HISTORY) {
        writeln!(out, "=== {} {} ({})", &id[..12], c.message, c.author)?;
        let args = PlanArgs {
            repo: repo.clone(),
            base: base.clone(),
            head: id.clone(),
            fleet: None,
            now: chrono::Utc::now(),
        };
        match compute_plan(&git, &args)? {
            PlanOutcome::Plan(p) => out.write_all(plan_text(&p, style).as_bytes())?,
            PlanOutcome::Invalid { errors, .. } => {
                for e in errors {
                    writeln!(out, "{e}")?;
                }
            }
        }
        writeln!(out)?;
        base = Some(id.clone());
    }
    Ok(repo)
}

/// The people of the sample's approver groups, the operator and the fleet's
/// reporter, with the role each token gets.
const PEOPLE: &[(&str, Role)] = &[
    ("ops", Role::Operator),
    ("sec1", Role::Approver),
    ("ios1", Role::Approver),
    ("dana", Role::Approver),
    ("reporter", Role::Reporter),
];

/// A random bearer token (128 bits from the OS).
fn new_token() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format!("tg_{}", hex::encode(bytes)))
}

/// What [`write_controller_config`] wrote.
pub struct SampleController {
    pub config: std::path::PathBuf,
    pub server: String,
    /// (name, token) pairs; only their hashes are in the config.
    pub tokens: Vec<(String, String)>,
}

impl SampleController {
    /// The token of `name`, one of the sample's people.
    pub fn token(&self, name: &str) -> anyhow::Result<&str> {
        self.tokens
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
            .with_context(|| format!("the sample has no token for {name:?}"))
    }
}

/// How often the sample controller polls the repo: short, so that a commit
/// shows up within a couple of seconds in a demo.
pub const SAMPLE_POLL_INTERVAL: &str = "2s";

/// Writes a ControllerConfig for the sample and a tokens file (mode 0600).
pub fn write_controller_config(dir: &Path, repo: &Path) -> anyhow::Result<SampleController> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut tokens = Vec::new();
    let mut entries = String::new();
    for (name, role) in PEOPLE {
        let token = new_token()?;
        let role = serde_json::to_value(role)?.as_str().unwrap_or("viewer").to_string();
        entries.push_str(&format!(
            "  - {{name: {name}, role: {role}, sha256: \"{}\"}}\n",
            token_hash(&token)
        ));
        tokens.push((name.to_string(), token));
    }
    let config = dir.join("controller.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: ControllerConfig\nsource: {{url: \"file://{}\", branch: main, interval: {SAMPLE_POLL_INTERVAL}}}\nstore: \"sqlite://{}\"\nlisten: \"127.0.0.1:{port}\"\nforge: {{local: {{}}}}\nmirror: \"{}\"\ntokens:\n{entries}",
            repo.display(),
            dir.join("state.db").display(),
            dir.join("mirror").display(),
        ),
    )?;
    let env: String = tokens
        .iter()
        .map(|(n, t)| format!("TOKEN_{}={t}\n", n.to_uppercase()))
        .collect();
    let env_path = dir.join("tokens.env");
    std::fs::write(&env_path, env)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&env_path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(SampleController {
        config,
        server: format!("http://127.0.0.1:{port}"),
        tokens,
    })
}

/// What `tollgate quickstart` does after printing the plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuickstartMode {
    /// `--no-run`: write the repo, config and tokens, print the plans and how
    /// to start the controller; start nothing.
    PlansOnly,
    /// `--no-wait`: run the tour, then stop the controller and the fleet.
    TourOnly,
    /// The default: run the tour, then keep the controller and the fleet
    /// running until Ctrl-C so the CLI can explore them.
    TourThenServe,
}

pub fn quickstart_cmd(dir: &Path, mode: QuickstartMode, out: &mut dyn Write, style: Style) -> anyhow::Result<Exit> {
    let repo = write_and_plan(dir, out, style)?;
    let sample = write_controller_config(dir, &repo)?;
    let d = dir.display();
    writeln!(
        out,
        "Controller config: {} (tokens in {d}/tokens.env)",
        sample.config.display()
    )?;
    if mode == QuickstartMode::PlansOnly {
        write_manual_steps(dir, &sample, out)?;
        return Ok(Exit::Ok);
    }
    let options = TourOptions {
        keep_running: mode == QuickstartMode::TourThenServe,
        ..TourOptions::default()
    };
    run_tour(dir, &sample, &options, out)?;
    Ok(Exit::Ok)
}

/// `--no-run`: how to start the controller on the sample and govern the
/// commits after HEAD~2 by hand.
fn write_manual_steps(dir: &Path, sample: &SampleController, out: &mut dyn Write) -> anyhow::Result<()> {
    let d = dir.display();
    let server = &sample.server;
    writeln!(
        out,
        "Started with --adopt HEAD~2, the controller adopts the fleet before the wipe setting and governs the commits after it.\n"
    )?;
    writeln!(
        out,
        "Start it with: tollgate run --config {} --adopt HEAD~2",
        sample.config.display()
    )?;
    writeln!(out, "In another terminal:")?;
    writeln!(
        out,
        "  set -a; . {d}/tokens.env; set +a; export TOLLGATE_SERVER={server}"
    )?;
    writeln!(
        out,
        "  TOLLGATE_TOKEN=$TOKEN_OPS  tollgate status                 # watch"
    )?;
    writeln!(
        out,
        "  TOLLGATE_TOKEN=$TOKEN_IOS1 tollgate approve 1              # one owner approval"
    )?;
    writeln!(out, "  TOLLGATE_TOKEN=$TOKEN_SEC1 tollgate approve 1              # plus mdm-security: T3 needs both, in business hours")?;
    writeln!(
        out,
        "  TOLLGATE_TOKEN=$TOKEN_REPORTER tollgate simulate --devices 300   # a fleet that applies and reports, so gates can pass"
    )?;
    writeln!(
        out,
        "  TOLLGATE_TOKEN=$TOKEN_OPS  tollgate rollback corp-ios --to HEAD~2   # shows the diff and tier, asks"
    )?;
    writeln!(
        out,
        "  TOLLGATE_TOKEN=$TOKEN_DANA tollgate approve 2              # on-call approves the rollback"
    )?;
    writeln!(
        out,
        "  TOLLGATE_TOKEN=$TOKEN_OPS  tollgate audit verify           # the whole trail, hash-chained"
    )?;
    writeln!(
        out,
        "Without reporting devices a ring's gate does not pass, so promotions stop after their first ring."
    )?;
    Ok(())
}
