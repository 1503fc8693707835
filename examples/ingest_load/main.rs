//! Process-level parts of the devices benchmark (`scripts/bench-devices.sh`,
//! docs/performance-devices.md).
//!
//! ```text
//! ingest_load fixture DIR LISTEN   # governed repo + controller config for `tollgate run`
//! ingest_load ceiling CONFIG       # the same HTTP stack answering reports without work
//! ingest_load rss DEVICES          # RSS of a fleet index of DEVICES devices
//! ```
//!
//! `ceiling` starts the controller exactly as `tollgate run --adopt HEAD`
//! does (store, controller, device index, API state, loop) and serves the
//! production router, except that `POST /v1/reports` goes to a handler that
//! authenticates the reporter, reads the body and answers 200 with the
//! number of lines as `accepted`, which the simulator needs to count
//! reports. It runs behind the production router's layers (body limit,
//! tracing span and metrics per request), and every other route
//! (`/v1/rings`, `/v1/desired` for the simulator) is the production router
//! itself. Whatever `tollgate run` spends on a report beyond that is the
//! price of ingesting it.

#[path = "fixture.rs"]
mod fixture;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{middleware, Json, Router};
use chrono::{Duration, Utc};
use serde_json::json;
use tollgate::catalog::Catalog;
use tollgate::controller::{Controller, ControllerConfig};
use tollgate::devices::fleet::{Fleet, FleetOptions};
use tollgate::devices::report::MAX_REPORTS_BODY;
use tollgate::devices::resolve::DesiredCache;
use tollgate::devices::service::{Devices, SharedFleet};
use tollgate::http::auth::{Authorized, Report};
use tollgate::http::body::MAX_BODY_BYTES;
use tollgate::http::{observe, ApiError, ApiOptions, ApiState, Poller, Tokens};

fn usage() -> ! {
    eprintln!("usage: ingest_load fixture DIR LISTEN | ceiling CONFIG | rss DEVICES");
    std::process::exit(2)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["fixture", dir, listen] => {
            let dir = Path::new(dir);
            std::fs::create_dir_all(dir)?;
            let (repo, head) = fixture::write_repo(dir)?;
            let config = fixture::write_config(dir, &repo, listen)?;
            println!(
                "{}",
                json!({"config": config, "repo": repo, "head": head, "reporter_token": fixture::REPORTER_TOKEN,
                       "viewer_token": fixture::VIEWER_TOKEN,
                       "settings_per_platform": tollgate::ids::Platform::ALL.map(|p| (p.as_str(), fixture::platform_keys(p).len()))})
            );
            Ok(())
        }
        ["ceiling", config] => ceiling(Path::new(config)),
        ["rss", devices] => rss(devices.parse().context("DEVICES is a number")?),
        _ => usage(),
    }
}

/// `POST /v1/reports` without the work: who, how much, 200.
async fn no_work(_: Authorized<Report>, State(state): State<ApiState>, body: Body) -> Result<Response, ApiError> {
    state.require_leader()?;
    let bytes = axum::body::to_bytes(body, MAX_REPORTS_BODY)
        .await
        .map_err(|_| ApiError::too_large(MAX_REPORTS_BODY))?;
    let lines = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
    Ok((
        StatusCode::OK,
        Json(json!({"accepted": lines, "stale": 0, "rejected": [], "findings_opened": 0, "findings_closed": 0})),
    )
        .into_response())
}

fn ceiling(config: &Path) -> anyhow::Result<()> {
    let config = ControllerConfig::load(config)?;
    // As `tollgate run`: logs at info to stderr, one line per request.
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve_ceiling(config))
}

async fn serve_ceiling(config: ControllerConfig) -> anyhow::Result<()> {
    let tokens = Tokens::from_config(&config.tokens)?;
    let store = tollgate::store::open(&config.store).await?;
    let mirror = config.mirror.clone().context("the fixture config names a mirror")?;
    let fleet = SharedFleet::new(
        config.devices.fleet_options().map_err(anyhow::Error::msg)?,
        store.clone(),
    );
    let controller = Arc::new(Controller::new(
        store,
        config.source.url.clone(),
        config.source.branch.clone(),
        mirror.clone(),
        fleet.clone(),
    ));
    let holder = format!("ceiling:{}", std::process::id());
    if !controller.store().try_lead(&holder).await? {
        bail!("another process leads this store");
    }
    controller.adopt("HEAD", "bench", Utc::now()).await?;
    let cache = Arc::new(DesiredCache::new(mirror, Catalog::builtin()));
    let devices = Devices::new(fleet, controller.ledger().clone(), cache);
    devices.load().await?;
    let interval = config.interval();
    let options = ApiOptions {
        branch: config.source.branch.clone(),
        interval,
        ..ApiOptions::default()
    };
    let state = ApiState::with_devices(controller, tokens, options, devices);
    // The production router's layers (src/http/routes.rs `router`), around
    // the one route that differs; the rest is the production router.
    let app = Router::new()
        .route("/v1/reports", post(no_work))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), observe::track))
        .with_state(state.clone())
        .fallback_service(tollgate::http::router(state.clone()));
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    // The line `tollgate run` prints, so scripts find either the same way.
    println!("tollgate: serving the API on http://{}", listener.local_addr()?);
    let poller = tokio::spawn(Poller::new(state, holder).run(interval, std::future::pending()));
    axum::serve(listener, app).await?;
    poller.abort();
    Ok(())
}

/// VmRSS and RssAnon of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"))
}

/// Builds a fleet index of `devices` devices from reports of 30 settings
/// (one report made, ingested and dropped at a time) and prints the growth
/// of the resident set against `Fleet::memory_bytes`.
fn rss(devices: u64) -> anyhow::Result<()> {
    let keys = fixture::bench_keys();
    let at = Utc::now() - Duration::minutes(10);
    let mut fleet = Fleet::new(FleetOptions::default());
    fleet.set_rings(&fixture::rings());
    for ring in fixture::desired(&keys, 2, at - Duration::hours(2)) {
        fleet.set_desired(ring);
    }
    let (before, before_anon) = rss_kib();
    let started = Instant::now();
    let mut findings = 0usize;
    for n in 0..devices {
        let report = fixture::report(n, &keys, 2, at);
        if let Some(change) = fleet.ingest(&report, at) {
            findings += change.opened.len();
        }
    }
    let took = started.elapsed();
    let (after, after_anon) = rss_kib();
    let started = Instant::now();
    let changed = fleet.recompute(at).len();
    let recompute = started.elapsed();
    let estimate = fleet.memory_bytes();
    let grown = (after - before) * 1024;
    println!(
        "{}",
        json!({
            "devices": fleet.len(),
            "settings_per_report": keys.len(),
            "findings_open": findings,
            "ingest_secs": took.as_secs_f64(),
            "rss_before_kib": before, "rss_after_kib": after,
            "rss_anon_before_kib": before_anon, "rss_anon_after_kib": after_anon,
            "rss_growth_bytes_per_device": grown as f64 / devices as f64,
            "anon_growth_bytes_per_device": (after_anon - before_anon) as f64 * 1024.0 / devices as f64,
            "memory_bytes": estimate,
            "memory_bytes_per_device": estimate as f64 / devices as f64,
            "recompute_secs": recompute.as_secs_f64(),
            "recompute_changed": changed,
        })
    );
    Ok(())
}
