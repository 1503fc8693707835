//! The quickstart tour: the controller and a simulated fleet, run in this
//! process over loopback HTTP, and a scripted story told with the API's real
//! answers.
//!
//! 1. A setup commit (short soaks, no dated freeze, OS minimums the simulated
//!    fleet meets) is adopted as what every ring runs; the controller is
//!    started the way `tollgate run` starts it (SQLite store and git mirror in
//!    the quickstart directory, the API on the configured loopback port).
//! 2. A fleet simulator ([`crate::sim`]) pulls each ring's desired
//!    state and reports back every couple of seconds.
//! 3. A good change (iOS 10-character passcodes, T2) is approved and goes
//!    canary -> pilot -> broad behind the gates, on the fleet's evidence.
//! 4. A bad change (require iOS 18.1, above what many simulated iPhones run)
//!    is approved; canary devices report `os.min_version` non-compliant, the
//!    canary gate fails and the promotion halts before pilot.
//! 5. On-call rolls corp-ios back in canary; the fleet re-applies and drift
//!    shows compliance restored; the audit chain verifies.
//!
//! Approvals, the rollback, drift, status and audit verification are done by
//! the very functions behind `tollgate approve|rollback|drift|status|audit
//! verify`, so what the tour prints is what those commands print. Every wait
//! is bounded and, when it runs out, says what it waited for and what it saw
//! last.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::client::{
    approve_cmd, audit_verify_cmd, phase_text, status_cmd, Api, ApiToken, ApproveArgs, AuditVerifyArgs, ServerArgs,
    StatusArgs,
};
use super::drift::{drift_cmd, DriftArgs};
use super::quickstart::{append_commit, SampleCommit, SampleController};
use super::rollback::{rollback_cmd, RollbackArgs};
use super::run::{shutdown_signal, start, Started};
use super::{Exit, Format};
use crate::sim::{self, DesiredFetch, RoundSummary, SimOptions, SimSummary};
use tollgate_app::controller::ControllerConfig;
use tollgate_core::ids::Platform;

/// How the tour runs.
#[derive(Debug, Clone)]
pub struct TourOptions {
    /// Simulated devices (5% canary, 20% pilot, 75% broad).
    pub devices: usize,
    /// The simulator's seed: same seed, same fleet.
    pub seed: u64,
    /// From one simulated check-in round to the next.
    pub fleet_interval: Duration,
    /// The longest any single step may take (a promotion through its rings,
    /// the fleet catching up).
    pub step_timeout: Duration,
    /// After the tour, keep the controller and the fleet running until
    /// Ctrl-C (or SIGTERM).
    pub keep_running: bool,
}

impl Default for TourOptions {
    fn default() -> Self {
        TourOptions {
            devices: 300,
            seed: 1,
            fleet_interval: Duration::from_secs(2),
            step_timeout: Duration::from_secs(90),
            keep_running: true,
        }
    }
}

/// The promotions the tour created, for whoever wants to look closer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TourOutcome {
    /// The good change: complete in every ring.
    pub good: i64,
    /// The bad change: halted by the canary gate.
    pub bad: i64,
    /// The rollback of corp-ios in canary: complete.
    pub rollback: i64,
    /// The commits the tour added: setup (adopted), good, bad.
    pub commits: [String; 3],
}

/// Soak of canary and pilot in the tour's config.
pub const TOUR_SOAK: &str = "10s";
/// The OS minimum of the bad change.
pub const BAD_IOS_MIN: &str = "18.1";
/// Where the sample keeps corp-ios at its tip.
const IOS_PATH: &str = "baselines/ios/phones/corp-ios.yaml";
const ANDROID_PATH: &str = "baselines/android/corp-android.yaml";
const WINDOWS_PATH: &str = "baselines/windows/corp-windows.yaml";

/// The sample's config with short soaks and without its year-end freeze (a
/// dated freeze would stop the tour whenever it runs inside it).
fn tour_config() -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: Config
metadata: {{name: acme}}
rings:
  - {{name: canary, selector: {{groups: [mdm-canary]}}, soak: {TOUR_SOAK}, gate: {{min_applied: 0.95, max_noncompliant_increase: 0.01}}}}
  - {{name: pilot,  selector: {{groups: [mdm-pilot]}},  soak: {TOUR_SOAK}, gate: {{min_applied: 0.95, max_noncompliant_increase: 0.01}}}}
  - {{name: broad,  selector: {{all: true}}}}
approvers:
  mdm-security: {{forge_team: acme/mdm-security, users: [sec1]}}
  mdm-ios:      {{forge_team: acme/mdm-ios, users: [ios1]}}
  mdm-android:  {{forge_team: acme/mdm-android, users: [android1]}}
  mdm-windows:  {{forge_team: acme/mdm-windows, users: [windows1]}}
  mdm-macos:    {{forge_team: acme/mdm-macos, users: [macos1]}}
  oncall:       {{users: [dana, eli]}}
windows:
  business-hours: {{days: [mon, tue, wed, thu], start: "09:00", end: "16:00", tz: Europe/Berlin}}
"#
    )
}

/// `text` with `from` replaced by `to`, exactly once.
fn replace_once(text: &str, from: &str, to: &str, what: &str) -> anyhow::Result<String> {
    if text.matches(from).count() != 1 {
        bail!("the sample's {what} does not hold {from:?} exactly once; the tour cannot edit it");
    }
    Ok(text.replacen(from, to, 1))
}

/// The files of the tour's commits, read from the sample's work tree and
/// edited: setup, good change, bad change.
struct TourFiles {
    setup: Vec<(&'static str, String)>,
    good: String,
    bad: String,
}

fn tour_files(repo: &Path) -> anyhow::Result<TourFiles> {
    let read = |path: &str| {
        std::fs::read_to_string(repo.join(path)).with_context(|| format!("reading {path} of the sample repo"))
    };
    // The minimums every simulated device meets (the simulator's oldest
    // version per platform), so the fleet starts compliant.
    let ios = replace_once(
        &read(IOS_PATH)?,
        "os.min_version: \"17.4\"",
        "os.min_version: \"16.7\"",
        "corp-ios",
    )?;
    let android = replace_once(
        &read(ANDROID_PATH)?,
        "os.min_version: \"13\"",
        "os.min_version: \"12\"",
        "corp-android",
    )?;
    let windows = replace_once(
        &read(WINDOWS_PATH)?,
        "os.min_version: \"10.0.22631\"",
        "os.min_version: \"10.0.19045\"",
        "corp-windows",
    )?;
    let good = replace_once(&ios, "passcode.min_length: 8", "passcode.min_length: 10", "corp-ios")?;
    let bad = replace_once(
        &good,
        "os.min_version: \"16.7\"",
        &format!("os.min_version: \"{BAD_IOS_MIN}\""),
        "corp-ios",
    )?;
    Ok(TourFiles {
        setup: vec![
            ("tollgate.yaml", tour_config()),
            (IOS_PATH, ios),
            (ANDROID_PATH, android),
            (WINDOWS_PATH, windows),
        ],
        good,
        bad,
    })
}

fn commit(repo: &Path, author: &str, message: &str, files: &[(&str, &str)]) -> anyhow::Result<String> {
    let files: Vec<(&str, Option<&str>)> = files.iter().map(|(p, t)| (*p, Some(*t))).collect();
    append_commit(
        repo,
        &SampleCommit {
            author,
            message,
            files: &files,
        },
    )
    .with_context(|| format!("committing to {}", repo.display()))
}

/// Devices per ring of the simulated fleet, and the canary's iPhones below
/// the bad change's minimum: what the tour expects to see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetShape {
    /// canary, pilot, broad.
    pub rings: [usize; 3],
    pub canary_ios: usize,
    pub canary_ios_below_bad_min: usize,
}

/// The simulator's options for the tour.
pub fn sim_options(server: &str, token: &str, opts: &TourOptions) -> SimOptions {
    let mut o = SimOptions::new(server, opts.devices);
    o.token = Some(token.to_string());
    o.seed = opts.seed;
    o.rounds = 0;
    o.interval = opts.fleet_interval;
    o.id_prefix = "sim".into();
    o.request_timeout = Duration::from_secs(30);
    o
}

/// What the fleet of `opts` looks like over the tour's three rings.
pub fn fleet_shape(opts: &SimOptions) -> FleetShape {
    let mut shape = FleetShape {
        rings: [0; 3],
        canary_ios: 0,
        canary_ios_below_bad_min: 0,
    };
    for d in sim::fleet(opts, 3) {
        shape.rings[d.ring.min(2)] += 1;
        if d.ring == 0 && d.platform == Platform::Ios {
            shape.canary_ios += 1;
            if sim::compare_versions(d.os_version, BAD_IOS_MIN).is_lt() {
                shape.canary_ios_below_bad_min += 1;
            }
        }
    }
    shape
}

// ---------------------------------------------------------------------------
// The controller, as `tollgate run` starts it

/// The simulated fleet on its own thread.
struct Fleet {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<SimSummary, sim::SimError>>>,
}

impl Fleet {
    fn start(opts: SimOptions, rounds: mpsc::Sender<RoundSummary>) -> anyhow::Result<Fleet> {
        opts.validate()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("tour-fleet".into())
            .spawn(move || {
                sim::run(&opts, &flag, |round| {
                    let _ = rounds.send(round.clone());
                })
            })
            .context("starting the fleet simulator")?;
        Ok(Fleet {
            stop,
            thread: Some(thread),
        })
    }

    /// The simulator's error if it stopped by itself.
    fn check(&mut self) -> anyhow::Result<()> {
        if !self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            return Ok(());
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => Err(anyhow::Error::new(e).context("the fleet simulator stopped")),
            Some(Err(_)) => bail!("the fleet simulator panicked"),
            _ => bail!("the fleet simulator stopped"),
        }
    }

    /// Stops after the round in progress.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// The tour

/// Runs the tour in the quickstart directory `dir` (holding `repo/` and the
/// config of `sample`). With `keep_running`, the controller and the fleet go
/// on after the tour until Ctrl-C.
pub fn run_tour(
    dir: &Path,
    sample: &SampleController,
    opts: &TourOptions,
    out: &mut dyn Write,
) -> anyhow::Result<TourOutcome> {
    let repo = dir.join("repo");
    let config = ControllerConfig::load(&sample.config)?;
    let files = tour_files(&repo)?;
    let setup_files: Vec<(&str, &str)> = files.setup.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let setup_message = format!("tour: {TOUR_SOAK} soaks, no dated freeze, OS minimums the simulated fleet meets");
    let setup = commit(&repo, "priya", &setup_message, &setup_files)?;
    super::run::init_logging("warn");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let holder = format!("quickstart:{}", std::process::id());
    let served = runtime.block_on(start(&config, Some(("HEAD", "quickstart")), holder))?;
    let adopted = served.adopted.as_ref().map(ToString::to_string).unwrap_or_default();
    let server = format!("http://{}", served.addr);
    let d = dir.display();
    writeln!(out, "\n=== The tour: the controller and a simulated fleet, live\n")?;
    writeln!(out, "priya commits {} \"{setup_message}\"", short(&setup))?;
    writeln!(
        out,
        "The controller adopts it (every ring runs {}) and starts as `tollgate run` would:",
        short(&adopted)
    )?;
    writeln!(out, "tollgate: serving the API on {server}")?;
    writeln!(
        out,
        "Store {}, git mirror {d}/mirror, repo polled every {}s.\n\
         Canary and pilot soak {TOUR_SOAK} behind their gates; broad has no gate.",
        config.store,
        config.interval().as_secs()
    )?;
    writeln!(out, "Follow along in another terminal:")?;
    writeln!(
        out,
        "  set -a; . {d}/tokens.env; set +a; export TOLLGATE_SERVER={server}"
    )?;
    writeln!(out, "  TOLLGATE_TOKEN=$TOKEN_OPS tollgate status")?;
    out.flush()?;

    let (tx, rx) = mpsc::channel();
    let mut tour = Tour {
        out,
        started: Instant::now(),
        server: server.clone(),
        sample,
        repo,
        timeout: opts.step_timeout,
        audit_seq: 0,
        rounds: rx,
        fleet: None,
        ops: api(&server, sample.token("ops")?)?,
    };
    let sim = sim_options(&server, sample.token("reporter")?, opts);
    let scripted = tour.script(&setup, sim, tx, &files);
    let mut fleet = tour.fleet.take();
    let finished = match scripted {
        Ok(outcome) if opts.keep_running => tour.keep_running(&runtime, &served).map(|()| outcome),
        other => other,
    };
    if let Some(f) = fleet.as_mut() {
        f.stop();
    }
    let stopped = runtime.block_on(served.shut_down());
    let outcome = finished?;
    stopped?;
    Ok(outcome)
}

fn api(server: &str, token: &str) -> anyhow::Result<Api> {
    Api::new(&server_args(server, token))
}

fn server_args(server: &str, token: &str) -> ServerArgs {
    ServerArgs {
        server: server.to_string(),
        token: Some(ApiToken::from_str(token).unwrap_or_else(|e| match e {})),
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// What a wait saw on its last look.
enum Seen<T> {
    Done(T),
    NotYet(String),
}

struct Tour<'a> {
    out: &'a mut dyn Write,
    started: Instant,
    server: String,
    sample: &'a SampleController,
    repo: PathBuf,
    timeout: Duration,
    /// The last audit event narrated.
    audit_seq: i64,
    rounds: mpsc::Receiver<RoundSummary>,
    fleet: Option<Fleet>,
    /// Reads and triggers, as the operator.
    ops: Api,
}

/// How often waits look again.
const LOOK_EVERY: Duration = Duration::from_millis(250);

impl Tour<'_> {
    fn script(
        &mut self,
        setup: &str,
        sim: SimOptions,
        rounds: mpsc::Sender<RoundSummary>,
        files: &TourFiles,
    ) -> anyhow::Result<TourOutcome> {
        self.wait("the controller's first pass (ready in /v1/status)", |t| {
            let status = t.ops.get_json("/v1/status")?;
            let c = &status["controller"];
            Ok(if c["ready"] == true {
                Seen::Done(())
            } else {
                Seen::NotYet(c["not_ready_reason"].as_str().unwrap_or("not ready").to_string())
            })
        })?;
        self.skip_audit()?;

        let shape = fleet_shape(&sim);
        let devices = sim.devices;
        self.header(&format!(
            "A simulated fleet of {devices} devices (seed {}): canary {}, pilot {}, broad {}",
            sim.seed, shape.rings[0], shape.rings[1], shape.rings[2]
        ))?;
        self.say(&format!(
            "It pulls GET /v1/desired for its ring every {}s and posts what it applied to /v1/reports (as `reporter`).",
            sim.interval.as_secs()
        ))?;
        self.fleet = Some(Fleet::start(sim, rounds)?);
        let drift = self.wait("every simulated device to report once", |t| {
            let d = t.ops.get_json("/v1/drift")?;
            let seen = d["summary"]["devices"].as_u64().unwrap_or(0) as usize;
            Ok(if seen >= devices {
                Seen::Done(d)
            } else {
                Seen::NotYet(format!("{seen} of {devices} devices have reported"))
            })
        })?;
        self.say(&format!(
            "All {devices} devices report; {} non-compliant, {} open findings.",
            drift["summary"]["noncompliant_devices"], drift["summary"]["findings"]
        ))?;

        // 1. A good change through every ring.
        self.header("1/3  A good change: iOS passcodes of at least 10 characters")?;
        let good_sha = self.commit("sam", "iOS: 10-character passcodes", &files.good)?;
        let good = self.planned(&good_sha)?;
        self.approve(good, "ios1", "IOS1")?;
        let p = self.follow(good, "complete")?;
        if p["phase"]["phase"] != "complete" {
            bail!("the good change did not complete: {}", phase_text(&p));
        }
        self.say(&format!(
            "Promotion {good} is complete: every ring runs corp-ios with 10-character passcodes."
        ))?;

        // 2. A bad change, stopped by the canary gate.
        self.header(&format!(
            "2/3  A bad change: require iOS {BAD_IOS_MIN} ({} of the canary's {} simulated iPhones run an older iOS)",
            shape.canary_ios_below_bad_min, shape.canary_ios
        ))?;
        let bad_sha = self.commit("sam", &format!("iOS: require iOS {BAD_IOS_MIN}"), &files.bad)?;
        let bad = self.planned(&bad_sha)?;
        self.approve(bad, "ios1", "IOS1")?;
        let p = self.follow(bad, "halted")?;
        if p["phase"]["phase"] != "halted" {
            bail!("the bad change was not stopped: {}", phase_text(&p));
        }
        self.say("The bad change never left canary: pilot and broad still run the good version.")?;
        self.drift_cli("canary")?;

        // 3. Roll canary back; compliance comes back.
        self.header("3/3  Rollback: on-call puts corp-ios in canary back to the last verified version")?;
        let shown = "TOLLGATE_TOKEN=$TOKEN_OPS tollgate rollback corp-ios --to-previous --ring canary --yes";
        let args = RollbackArgs {
            baseline: "corp-ios".into(),
            to: None,
            to_previous: true,
            rings: vec!["canary".into()],
            break_glass: None,
            yes: true,
            server: server_args(&self.server, self.sample.token("ops")?),
        };
        self.cli(shown, |out| {
            rollback_cmd(&args, &mut std::io::empty(), false, out, Format::Text)
        })?;
        let rollback = self.newest_rollback(bad)?;
        self.approve(rollback, "dana", "DANA")?;
        let p = self.follow(rollback, "complete")?;
        if p["phase"]["phase"] != "complete" {
            bail!("the rollback did not complete: {}", phase_text(&p));
        }
        self.wait("canary's devices to report compliance again", |t| {
            t.narrate_fleet()?;
            let d = t.ops.get_json("/v1/drift?ring=canary&limit=1")?;
            let r = &d["summary"]["by_ring"]["canary"];
            Ok(if r["noncompliant"] == 0 && d["summary"]["findings"] == 0 {
                Seen::Done(())
            } else {
                Seen::NotYet(format!(
                    "canary: {} non-compliant devices, {} open findings",
                    r["noncompliant"], d["summary"]["findings"]
                ))
            })
        })?;
        self.narrate_audit(None)?;
        self.say("Canary devices re-applied the rolled-back version: compliance is restored.")?;
        self.drift_cli("canary")?;
        let status = StatusArgs {
            server: server_args(&self.server, self.sample.token("ops")?),
        };
        self.cli("TOLLGATE_TOKEN=$TOKEN_OPS tollgate status", |out| {
            status_cmd(&status, out, Format::Text)
        })?;
        let verify = AuditVerifyArgs {
            file: None,
            server: server_args(&self.server, self.sample.token("ops")?),
        };
        self.cli("TOLLGATE_TOKEN=$TOKEN_OPS tollgate audit verify", |out| {
            audit_verify_cmd(&verify, out, Format::Text)
        })?;
        writeln!(
            self.out,
            "\nThe tour is over: a change passed every gate on the fleet's evidence, a bad one was stopped in canary,\n\
             and a rollback restored compliance, every step in the hash-chained audit log. It took {:.0}s.",
            self.started.elapsed().as_secs_f64()
        )?;
        self.out.flush()?;
        Ok(TourOutcome {
            good,
            bad,
            rollback,
            commits: [setup.to_string(), good_sha, bad_sha],
        })
    }

    /// After the tour: how to explore, then wait for Ctrl-C.
    fn keep_running(&mut self, runtime: &tokio::runtime::Runtime, served: &Started) -> anyhow::Result<()> {
        let d = self
            .sample
            .config
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let server = &self.server;
        writeln!(
            self.out,
            "\nThe controller and the simulated fleet keep running until Ctrl-C. Explore from another terminal:"
        )?;
        writeln!(
            self.out,
            "  set -a; . {d}/tokens.env; set +a; export TOLLGATE_SERVER={server}"
        )?;
        let repo_log = format!("git -C {d}/repo log --oneline");
        for (command, why) in [
            (
                "TOLLGATE_TOKEN=$TOKEN_OPS tollgate status",
                "rings, pins, live promotions",
            ),
            (
                "TOLLGATE_TOKEN=$TOKEN_OPS tollgate history corp-ios",
                "the three promotions of corp-ios",
            ),
            (
                "TOLLGATE_TOKEN=$TOKEN_OPS tollgate drift",
                "findings by ring, kind, baseline, setting",
            ),
            (
                "TOLLGATE_TOKEN=$TOKEN_OPS tollgate audit export --out audit.jsonl",
                "the trail, for an auditor",
            ),
            (repo_log.as_str(), "commit more: the controller polls every few seconds"),
        ] {
            writeln!(self.out, "  {command:<66} # {why}")?;
        }
        self.out.flush()?;
        let server_done = runtime.block_on(async {
            tokio::select! {
                signal = shutdown_signal() => { signal?; Ok::<bool, anyhow::Error>(false) }
                _ = wait_finished(&served.server) => Ok(true),
            }
        })?;
        if server_done {
            bail!("the API server stopped by itself");
        }
        writeln!(self.out, "\nStopping the fleet and the controller.")?;
        Ok(())
    }

    // -- narration

    fn stamp(&self) -> String {
        format!("{:>6.1}s", self.started.elapsed().as_secs_f64())
    }

    fn say(&mut self, text: &str) -> anyhow::Result<()> {
        let stamp = self.stamp();
        writeln!(self.out, "{stamp}  {text}")?;
        self.out.flush()?;
        Ok(())
    }

    fn header(&mut self, text: &str) -> anyhow::Result<()> {
        writeln!(self.out, "\n--- {text}")?;
        self.out.flush()?;
        Ok(())
    }

    /// Prints `$ shown`, runs the CLI command and prints its output indented.
    fn cli(&mut self, shown: &str, run: impl FnOnce(&mut dyn Write) -> anyhow::Result<Exit>) -> anyhow::Result<()> {
        let stamp = self.stamp();
        writeln!(self.out, "{stamp}  $ {shown}")?;
        let mut buf = Vec::new();
        let exit = run(&mut buf).with_context(|| format!("running `{shown}`"))?;
        let text = String::from_utf8_lossy(&buf);
        for line in text.lines() {
            writeln!(self.out, "           {line}")?;
        }
        self.out.flush()?;
        if exit != Exit::Ok {
            bail!("`{shown}` failed:\n{text}");
        }
        Ok(())
    }

    fn drift_cli(&mut self, ring: &str) -> anyhow::Result<()> {
        let args = DriftArgs {
            server: server_args(&self.server, self.sample.token("ops")?),
            ring: Some(ring.into()),
            baseline: None,
            kind: None,
            setting: None,
            limit: 5,
            after: None,
        };
        self.cli(
            &format!("TOLLGATE_TOKEN=$TOKEN_OPS tollgate drift --ring {ring} --limit 5"),
            |out| drift_cmd(&args, out, Format::Text),
        )
    }

    /// Commits `ios` as corp-ios and asks the controller for a pass.
    fn commit(&mut self, author: &str, message: &str, ios: &str) -> anyhow::Result<String> {
        let sha = commit(&self.repo, author, message, &[(IOS_PATH, ios)])?;
        self.say(&format!("{author} commits {} \"{message}\"", short(&sha)))?;
        // The loop would find it within its interval; a trigger is sooner.
        self.ops.post_json("/v1/trigger", &json!({}))?;
        Ok(sha)
    }

    /// Waits for the promotion of `sha` and says what it needs.
    fn planned(&mut self, sha: &str) -> anyhow::Result<i64> {
        let what = format!("a promotion of {}", short(sha));
        let p = self.wait(&what, |t| {
            let list = t.ops.get_json("/v1/promotions?limit=20")?;
            let found = list["promotions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["revision"] == sha)
                .cloned();
            Ok(match found {
                Some(p) => Seen::Done(p),
                None => Seen::NotYet(format!("newest promotion: {}", list["promotions"][0]["id"])),
            })
        })?;
        let id = p["id"].as_i64().context("a promotion without an id")?;
        self.narrate_audit(Some(id))?;
        let view = self.ops.get_json(&format!("/v1/promotions/{id}"))?;
        let missing: Vec<String> = view["approvals"]["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["missing"].as_str().filter(|m| !m.is_empty()))
            .map(String::from)
            .collect();
        self.say(&format!(
            "promotion {id}: {}: {}",
            phase_text(&view["promotion"]),
            if missing.is_empty() {
                "approvals satisfied".to_string()
            } else {
                missing.join("; ")
            }
        ))?;
        Ok(id)
    }

    /// Approves `id` as `who` through `tollgate approve`.
    fn approve(&mut self, id: i64, who: &str, var: &str) -> anyhow::Result<()> {
        let args = ApproveArgs {
            id,
            request_changes: false,
            server: server_args(&self.server, self.sample.token(who)?),
        };
        self.cli(&format!("TOLLGATE_TOKEN=$TOKEN_{var} tollgate approve {id}"), |out| {
            approve_cmd(&args, out, Format::Text)
        })
    }

    /// The rollback promotion created after `after`.
    fn newest_rollback(&mut self, after: i64) -> anyhow::Result<i64> {
        let list = self.ops.get_json("/v1/promotions?limit=5")?;
        list["promotions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["kind"] == "rollback" && p["id"].as_i64().is_some_and(|id| id > after))
            .and_then(|p| p["id"].as_i64())
            .context("the rollback did not create a promotion")
    }

    /// Narrates promotion `id` until it is terminal; returns it.
    fn follow(&mut self, id: i64, expect: &str) -> anyhow::Result<Value> {
        let what = format!("promotion {id} to be {expect}");
        self.wait(&what, |t| {
            t.narrate_fleet()?;
            t.narrate_audit(Some(id))?;
            let view = t.ops.get_json(&format!("/v1/promotions/{id}"))?;
            let p = &view["promotion"];
            let phase = p["phase"]["phase"].as_str().unwrap_or("?");
            Ok(if matches!(phase, "complete" | "halted" | "superseded") {
                Seen::Done(p.clone())
            } else {
                Seen::NotYet(phase_text(p))
            })
        })
    }

    /// Looks until `check` is done, at most the step timeout.
    fn wait<T>(
        &mut self,
        what: &str,
        mut check: impl FnMut(&mut Self) -> anyhow::Result<Seen<T>>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(f) = self.fleet.as_mut() {
                f.check()?;
            }
            let last = match check(self) {
                Ok(Seen::Done(v)) => return Ok(v),
                Ok(Seen::NotYet(seen)) => seen,
                // A refused or failed request is a state like any other:
                // keep looking until the deadline, then report it.
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {}s waiting for {what}; last seen: {last}",
                    self.timeout.as_secs()
                );
            }
            std::thread::sleep(LOOK_EVERY);
        }
    }

    /// Rounds where the fleet picked up a new desired state, or failed.
    fn narrate_fleet(&mut self) -> anyhow::Result<()> {
        while let Ok(round) = self.rounds.try_recv() {
            let pulled: Vec<&str> = round
                .rings
                .iter()
                .filter(|r| r.desired == DesiredFetch::Updated)
                .map(|r| r.ring.as_str())
                .collect();
            let c = &round.counts;
            if !pulled.is_empty() && round.round > 1 {
                self.say(&format!(
                    "fleet round {}: {} devices pulled the new desired state; {} reports accepted, {} settings non-compliant",
                    round.round,
                    pulled.join(", "),
                    c.accepted,
                    c.noncompliant
                ))?;
            }
            if c.http_errors > 0 || c.rejected > 0 {
                let why = c
                    .errors
                    .first()
                    .cloned()
                    .or_else(|| c.rejections.first().map(|r| format!("{}: {}", r.device, r.reason)))
                    .unwrap_or_default();
                self.say(&format!(
                    "fleet round {}: {} failed requests, {} rejected reports ({why})",
                    round.round, c.http_errors, c.rejected
                ))?;
            }
        }
        Ok(())
    }

    /// Moves the audit cursor to the head without narrating.
    fn skip_audit(&mut self) -> anyhow::Result<()> {
        for e in self.audit_page()? {
            self.audit_seq = self.audit_seq.max(e["seq"].as_i64().unwrap_or(0));
        }
        Ok(())
    }

    fn audit_page(&mut self) -> anyhow::Result<Vec<Value>> {
        let mut all = Vec::new();
        loop {
            let page = self
                .ops
                .get_json(&format!("/v1/audit?after={}&limit=1000", self.audit_seq))?;
            let events = page.as_array().cloned().unwrap_or_default();
            let n = events.len();
            if let Some(last) = events.last().and_then(|e| e["seq"].as_i64()) {
                self.audit_seq = last;
            }
            all.extend(events);
            if n < 1000 {
                return Ok(all);
            }
        }
    }

    /// New audit events: those of promotion `id` one by one, findings summed up.
    fn narrate_audit(&mut self, id: Option<i64>) -> anyhow::Result<()> {
        let events = self.audit_page()?;
        let subject = id.map(|id| format!("promotion/{id}"));
        let mut findings: BTreeMap<(String, String, String, &str), Vec<String>> = BTreeMap::new();
        let mut promotion: Option<Value> = None;
        for e in &events {
            let action = e["action"].as_str().unwrap_or("");
            if matches!(action, "finding_opened" | "finding_closed") {
                let d = &e["details"];
                let key = (
                    d["ring"].as_str().unwrap_or("-").to_string(),
                    d["kind"].as_str().unwrap_or("?").to_string(),
                    d["setting"]
                        .as_str()
                        .or(d["baseline"].as_str())
                        .unwrap_or("")
                        .to_string(),
                    if action == "finding_opened" { "opened" } else { "closed" },
                );
                let device = e["subject"].as_str().unwrap_or("?").trim_start_matches("device/");
                findings.entry(key).or_default().push(device.to_string());
                continue;
            }
            let Some(subject) = &subject else { continue };
            if e["subject"].as_str() != Some(subject.as_str()) {
                continue;
            }
            let id = id.expect("a subject comes from an id");
            if promotion.is_none() {
                promotion = Some(self.ops.get_json(&format!("/v1/promotions/{id}"))?);
            }
            let p = &promotion.as_ref().expect("just loaded")["promotion"];
            if let Some(text) = describe_event(e, p) {
                self.say(&format!("promotion {id}: {text}"))?;
            }
        }
        for ((ring, kind, what, verb), devices) in findings {
            let mut listed: Vec<&str> = devices.iter().map(String::as_str).take(4).collect();
            let more = devices.len().saturating_sub(listed.len());
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            listed.sort_unstable();
            self.say(&format!(
                "{} {kind} {what} finding(s) {verb} in {ring}: {}{tail}",
                devices.len(),
                listed.join(", ")
            ))?;
        }
        Ok(())
    }
}

/// One audit event of a promotion, for people; `None` for events the
/// narration shows otherwise (reviews: the approve command shows them).
fn describe_event(e: &Value, p: &Value) -> Option<String> {
    let d = &e["details"];
    let ring = d["ring"].as_str().unwrap_or("?");
    Some(match e["action"].as_str().unwrap_or("") {
        "review_recorded" | "promotion_created" => return None,
        "plan_recorded" => {
            let changes: Vec<String> = d["changes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let settings: Vec<String> = c["settings"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|x| {
                            format!(
                                "{} {} -> {} ({})",
                                x["key"].as_str().unwrap_or("?"),
                                show_value(&x["old"]),
                                show_value(&x["new"]),
                                x["direction"].as_str().unwrap_or("?")
                            )
                        })
                        .collect();
                    format!(
                        "{}/{} T{}: {}",
                        c["kind"].as_str().unwrap_or("?"),
                        c["name"].as_str().unwrap_or("?"),
                        c["tier"],
                        settings.join(", ")
                    )
                })
                .collect();
            format!(
                "planned against {}: {}",
                d["base"].as_str().map(short).unwrap_or("nothing"),
                changes.join("; ")
            )
        }
        "promotion_approved" => {
            let counted: Vec<&str> = d["counted"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["reviewer"].as_str())
                .collect();
            if counted.is_empty() {
                format!("approved for {ring}")
            } else {
                format!("approved for {ring} (counted: {})", counted.join(", "))
            }
        }
        "waiting_window" => format!(
            "waits for its window in {ring}: {}",
            d["reason"].as_str().unwrap_or("?")
        ),
        "ring_promoted" => {
            let secs = match (parse_time(&e["at"]), parse_time(&d["soak_until"])) {
                (Some(at), Some(until)) => ((until - at).num_milliseconds() + 500).div_euclid(1000),
                _ => 0,
            };
            let soak = if secs > 0 {
                format!("; soaking {secs}s")
            } else {
                "; no soak".to_string()
            };
            format!("published to {ring}{soak}")
        }
        "gate_passed" => {
            let gate = gate_of(p, ring);
            if p["gated"] == false {
                format!("{ring} not gated: a rollback to a verified version restores a known state")
            } else if gate.is_null() {
                format!("{ring} has no gate: passed after its soak")
            } else {
                format!("gate passed in {ring}: {}", reading_text(&d["reading"], &gate))
            }
        }
        "gate_failed" => format!(
            "GATE FAILED in {ring}: {}; {}",
            d["reason"].as_str().unwrap_or("?"),
            reading_text(&d["reading"], &gate_of(p, ring))
        ),
        "promotion_halted" => format!(
            "halted by {}: {}",
            d["actor"].as_str().unwrap_or("?"),
            d["reason"].as_str().unwrap_or("?")
        ),
        "promotion_completed" => "complete".to_string(),
        "promotion_superseded" => format!("superseded by {}", d["by"].as_str().map(short).unwrap_or("?")),
        "rollback_requested" => format!(
            "rollback of {} in {} requested by {} (target {}verified)",
            d["document"].as_str().unwrap_or("?"),
            d["rings"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                .unwrap_or_default(),
            e["actor"].as_str().unwrap_or("?"),
            if d["verified"] == true { "" } else { "NOT " }
        ),
        "ring_pinned" => format!(
            "{} pinned in {ring}: later promotions carrying the rolled-back content leave it alone",
            d["document"].as_str().unwrap_or("?")
        ),
        "pin_held" => format!("{} stays pinned in {ring}", d["document"].as_str().unwrap_or("?")),
        "ring_unpinned" => format!("{} unpinned in {ring}", d["document"].as_str().unwrap_or("?")),
        other => format!("{other} {d}"),
    })
}

fn show_value(v: &Value) -> String {
    match v {
        Value::Null => "(unset)".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn gate_of(p: &Value, ring: &str) -> Value {
    p["rings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == ring)
        .map(|r| r["gate"].clone())
        .unwrap_or(Value::Null)
}

/// A gate reading against its thresholds.
fn reading_text(reading: &Value, gate: &Value) -> String {
    match reading["reading"].as_str() {
        Some("measured") => {
            let applied = reading["applied"].as_f64().unwrap_or(0.0) * 100.0;
            let rise = reading["noncompliant_increase"].as_f64().unwrap_or(0.0) * 100.0;
            let (min, max) = (
                gate["min_applied"].as_f64().unwrap_or(0.0) * 100.0,
                gate["max_noncompliant_increase"].as_f64().unwrap_or(0.0) * 100.0,
            );
            format!(
                "{} devices reporting, {applied:.0}% run the promoted version (needs {min:.0}%), \
                 non-compliant share {rise:+.1} points (allows {max:+.1})",
                reading["devices"]
            )
        }
        Some("no_data") => format!("no evidence: {}", reading["reason"].as_str().unwrap_or("?")),
        _ => reading.to_string(),
    }
}

async fn wait_finished<T>(handle: &tokio::task::JoinHandle<T>) {
    while !handle.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
