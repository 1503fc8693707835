//! `tollgate simulate`: a simulated fleet that pulls desired state from a
//! running controller and reports back ([`crate::sim`]).
//!
//! Text output is a line per round; `-o json` prints the summary of the run
//! at the end. Runs `--rounds` rounds, or until Ctrl-C (a second Ctrl-C
//! quits at once). Exits 1 when a request failed or a report was rejected.

use std::fmt;
use std::io::Write;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{write_json, Exit, Format};
use crate::sim::{self, DesiredFetch, RoundSummary, SimOptions, SimSummary};

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// The controller's API, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "TOLLGATE_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Bearer token (a reporter's); prefer TOLLGATE_TOKEN, since flags show in process lists.
    #[arg(long, env = "TOLLGATE_TOKEN", hide_env_values = true)]
    pub token: Option<Token>,
    /// Number of simulated devices.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub devices: u64,
    /// Share of applies that fail (per device and digest), and of devices that drift on one setting.
    #[arg(long, default_value = "0", value_parser = parse_rate)]
    pub fail_rate: f64,
    /// Share of devices that never check in.
    #[arg(long, default_value = "0", value_parser = parse_rate)]
    pub stale_rate: f64,
    /// Rounds to run; 0 runs until Ctrl-C.
    #[arg(long, default_value_t = 0)]
    pub rounds: u64,
    /// From the start of one round to the next, e.g. 10s, 1m; 0s for back to back.
    #[arg(long, default_value = "10s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Reports per request.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch: u64,
    /// Parallel requests.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub concurrency: u64,
    /// Same seed, same fleet: ids, platforms, rings, OS versions, failures.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Device ids are PREFIX-PLATFORM-NNNNNN.
    #[arg(long, default_value = "sim", value_parser = parse_prefix)]
    pub prefix: String,
}

/// The bearer token; it never prints.
#[derive(Clone)]
pub struct Token(String);

impl FromStr for Token {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Token(s.trim().to_string()))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("must be a share from 0 to 1, got {s:?}")),
    }
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    tollgate_core::format::parse_duration(s.trim()).map(Duration::from_secs)
}

fn parse_prefix(s: &str) -> Result<String, String> {
    sim::check_prefix(s).map(|()| s.to_string())
}

impl SimulateArgs {
    pub fn options(&self) -> SimOptions {
        let mut opts = SimOptions::new(self.server.clone(), self.devices as usize);
        opts.token = self.token.as_ref().map(|t| t.0.clone()).filter(|t| !t.is_empty());
        opts.fail_rate = self.fail_rate;
        opts.stale_rate = self.stale_rate;
        opts.rounds = self.rounds;
        opts.interval = self.interval;
        opts.batch = self.batch as usize;
        opts.concurrency = self.concurrency as usize;
        opts.seed = self.seed;
        opts.id_prefix = self.prefix.clone();
        opts
    }
}

/// `tollgate simulate`; Ctrl-C ends the run after the batches in flight.
pub fn simulate_cmd(args: &SimulateArgs, out: &mut dyn Write, format: Format) -> anyhow::Result<Exit> {
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_ctrl_c(stop.clone());
    simulate(args, &stop, out, format)
}

/// `tollgate simulate` until done or until `stop` is set.
pub fn simulate(args: &SimulateArgs, stop: &AtomicBool, out: &mut dyn Write, format: Format) -> anyhow::Result<Exit> {
    let opts = args.options();
    let mut write_error = None;
    let summary = sim::run(&opts, stop, |round| {
        if format == Format::Json || write_error.is_some() {
            return;
        }
        if let Err(e) = write_round(out, round) {
            // `| head` closed the pipe: stop simulating too.
            write_error = Some(e);
            stop.store(true, Ordering::Relaxed);
        }
    })?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    if format == Format::Json {
        write_json(out, &summary)?;
    } else {
        write_total(out, &summary)?;
    }
    let clean = summary.counts.http_errors == 0 && summary.counts.rejected == 0;
    Ok(if clean { Exit::Ok } else { Exit::Failed })
}

fn write_round(out: &mut dyn Write, r: &RoundSummary) -> std::io::Result<()> {
    let c = &r.counts;
    let desired: Vec<String> = r
        .rings
        .iter()
        .map(|ring| {
            let state = match ring.desired {
                DesiredFetch::Updated => "updated",
                DesiredFetch::NotModified => "unchanged",
                DesiredFetch::NotPublished => "nothing published",
                DesiredFetch::Failed => "fetch failed",
            };
            format!("{} {} devices, {state}", ring.ring, ring.devices)
        })
        .collect();
    writeln!(
        out,
        "round {}: {} reported ({} accepted, {} stale, {} rejected), {} skipped, {} applied, {} failed, \
         {} noncompliant; {} batches, {} throttled, {} HTTP errors; {:.2}s, {} reports/s, \
         latency p50 {:.1}ms p90 {:.1}ms p99 {:.1}ms max {:.1}ms; rings: {}",
        r.round,
        c.reported,
        c.accepted,
        c.stale,
        c.rejected,
        c.skipped,
        c.applied,
        c.apply_failed,
        c.noncompliant,
        c.batches,
        c.throttled,
        c.http_errors,
        r.elapsed_secs,
        r.reports_per_sec,
        r.latency.p50_ms,
        r.latency.p90_ms,
        r.latency.p99_ms,
        r.latency.max_ms,
        desired.join("; ")
    )?;
    for x in &c.rejections {
        writeln!(out, "  rejected {} (#{}): {}", x.device, x.index, x.reason)?;
    }
    for e in &c.errors {
        writeln!(out, "  error: {e}")?;
    }
    Ok(())
}

fn write_total(out: &mut dyn Write, s: &SimSummary) -> std::io::Result<()> {
    let c = &s.counts;
    writeln!(
        out,
        "total: {} rounds of {} devices: {} reported ({} accepted, {} stale, {} rejected), {} skipped, \
         {} unsent, {} HTTP errors; {} reports/s, latency p50 {:.1}ms p99 {:.1}ms max {:.1}ms",
        s.rounds,
        s.devices,
        c.reported,
        c.accepted,
        c.stale,
        c.rejected,
        c.skipped,
        c.unsent,
        c.http_errors,
        s.reports_per_sec,
        s.latency.p50_ms,
        s.latency.p99_ms,
        s.latency.max_ms
    )
}

/// Sets `stop` on the first Ctrl-C; the second exits at once.
fn stop_on_ctrl_c(stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new().name("ctrl-c".into()).spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        runtime.block_on(async {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            stop.store(true, Ordering::Relaxed);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        });
    });
    // Without the thread Ctrl-C keeps its default: the process ends.
    drop(spawned);
}
