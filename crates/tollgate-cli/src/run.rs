//! `tollgate run --config FILE`: the controller process. Loads the config,
//! opens the store, serves the HTTP API on `listen` and runs the controller
//! loop until SIGINT or SIGTERM; then stops taking requests, lets those in
//! flight and the pass in progress finish, and exits 0.
//!
//! `--adopt REV` first records that every ring already runs REV (an existing
//! fleet brought under Tollgate); it is refused once the store has published.
//!
//! A store is created only on a first run where there is none (no SQLite
//! file, an empty PostgreSQL schema) or with `--init`; a store that was
//! initialised is never taken for a new one (see [`tollgate_store`]). The
//! audit log's head is anchored outside the database (`auditAnchor`,
//! [`tollgate_store::anchor`]), and a store that no longer holds the anchored
//! event is refused.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;

use super::Exit;
use tollgate_app::controller::{Controller, ControllerConfig};
use tollgate_app::devices::resolve::DesiredCache;
use tollgate_app::devices::service::{Devices, SharedFleet};
use tollgate_core::catalog::Catalog;
use tollgate_http::{ApiOptions, ApiState, HttpLimits, Poller, Tokens};

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The ControllerConfig file (DESIGN 5).
    #[arg(long)]
    pub config: PathBuf,
    /// Take this revision as already promoted everywhere instead of governing
    /// the repo's history from its first commit.
    #[arg(long, value_name = "REV")]
    pub adopt: Option<String>,
    /// Create the store: also in an empty SQLite file or a database without
    /// Tollgate's schema. Refused when the store is already initialised.
    #[arg(long)]
    pub init: bool,
}

pub fn run_cmd(args: &RunArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let config = ControllerConfig::load(&args.config)?;
    init_logging("info");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve_controller(config, args.adopt.as_deref(), args.init, out))
}

/// Logs go to stderr; `TOLLGATE_LOG` filters them (`default` otherwise, e.g.
/// `TOLLGATE_LOG=tollgate=debug`).
pub(crate) fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Already set (a test harness, an embedding program): keep theirs.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A controller serving its API and running its loop.
pub(crate) struct Started {
    pub addr: std::net::SocketAddr,
    /// The revision adopted at start, if any.
    pub adopted: Option<tollgate_core::ids::CommitSha>,
    stop: tokio::sync::watch::Sender<bool>,
    pub(crate) server: tokio::task::JoinHandle<std::io::Result<()>>,
    poller: tokio::task::JoinHandle<()>,
}

impl Started {
    /// Stops taking requests; lets those in flight and the pass in progress finish.
    pub(crate) async fn shut_down(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.server
            .await
            .context("the API server task failed")?
            .context("serving the API")?;
        self.poller.await.context("the controller loop task failed")?;
        Ok(())
    }
}

/// Opens the store, adopts `adopt` (revision, actor) if given, loads the
/// device index, serves the API on `listen` and starts the controller loop
/// under the leadership name `holder`.
pub(crate) async fn start(
    config: &ControllerConfig,
    adopt: Option<(&str, &str)>,
    holder: String,
) -> anyhow::Result<Started> {
    start_with(config, adopt, holder, false).await
}

/// [`start`], and with `init` the store may be created as `--init` allows.
pub(crate) async fn start_with(
    config: &ControllerConfig,
    adopt: Option<(&str, &str)>,
    holder: String,
    init: bool,
) -> anyhow::Result<Started> {
    let tokens = Tokens::from_config(&config.tokens)?;
    if config.tokens.is_empty() {
        tracing::warn!("no tokens are configured: every API call but the probes and /metrics will be refused");
    }
    let store = open_store(config, init).await?;
    let mirror = config.mirror.clone().unwrap_or_else(|| PathBuf::from("mirror"));
    let fleet_options = config.devices.fleet_options().map_err(anyhow::Error::msg)?;
    let fleet = SharedFleet::new(fleet_options, store.clone());
    let mut controller = Controller::new(
        store,
        config.source.url.clone(),
        config.source.branch.clone(),
        mirror.clone(),
        fleet.clone(),
    );
    if let Some(verify) = &config.source.verify {
        // Paths are resolved against the config file's directory at load.
        let policy = tollgate_git::VerifyPolicy::load(verify, std::path::Path::new(".")).context("source.verify")?;
        tracing::info!("source.verify: only revisions whose every commit carries a verified signature are promoted");
        controller = controller.with_verify(Arc::new(policy));
    }
    let controller = Arc::new(controller);
    let adopted = match adopt {
        Some((rev, actor)) => Some(adopt_revision(&controller, &holder, rev, actor).await?),
        None => None,
    };
    let cache = Arc::new(DesiredCache::new(mirror, Catalog::builtin()));
    let devices = Devices::new(fleet, controller.ledger().clone(), cache);
    let loaded = devices.load().await.context("loading the stored device states")?;
    tracing::info!(devices = loaded, "device index loaded");
    let interval = config.interval();
    let options = ApiOptions {
        branch: config.source.branch.clone(),
        interval,
        limits: HttpLimits::from_config(&config.limits).map_err(anyhow::Error::msg)?,
        ..ApiOptions::default()
    };
    let state = ApiState::with_devices(controller, tokens, options, devices);
    // Counting starts at the audit log's current head.
    if let Err(e) = state.refresh_metrics().await {
        tracing::warn!(error = %tollgate_core::errors::chain(&e), "store-derived metrics start late");
    }
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, branch = %config.source.branch, ?interval, "controller started");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let when_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let server = tokio::spawn(tollgate_http::serve(
        listener,
        state.clone(),
        when_stopped(stopped.clone()),
    ));
    let poller = tokio::spawn(Poller::new(state, holder).run(interval, when_stopped(stopped)));
    Ok(Started {
        addr,
        adopted,
        stop,
        server,
        poller,
    })
}

/// The store of `config`, its audit head anchored where `auditAnchor` (or
/// the SQLite default beside the database) says.
async fn open_store(config: &ControllerConfig, init: bool) -> anyhow::Result<Arc<dyn tollgate_store::Store>> {
    let anchor = config
        .audit_anchor
        .clone()
        .or_else(|| tollgate_store::default_anchor_path(&config.store));
    if anchor.is_none() && !config.store.contains(":memory:") {
        tracing::warn!(
            "no audit anchor (set auditAnchor in the controller config): events deleted from the end of the audit \
             log in the database would go unnoticed"
        );
    }
    let options = tollgate_store::OpenOptions {
        init,
        ..Default::default()
    };
    tollgate_store::open_anchored(&config.store, &options, anchor.as_deref())
        .await
        .context("opening the store")
}

async fn serve_controller(
    config: ControllerConfig,
    adopt: Option<&str>,
    init: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Exit> {
    // The audit trail names who adopted: the account that started the controller.
    let actor = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "operator".into());
    let mut started = start_with(&config, adopt.map(|rev| (rev, actor.as_str())), holder(), init).await?;
    writeln!(out, "tollgate: serving the API on http://{}", started.addr)?;
    out.flush()?;
    // The server only ends by itself when it cannot accept connections.
    tokio::select! {
        signal = shutdown_signal() => {
            signal?;
            tracing::info!("shutting down");
        }
        served = &mut started.server => {
            let _ = started.stop.send(true);
            served.context("the API server task failed")?.context("serving the API")?;
            started.poller.await.context("the controller loop task failed")?;
            tracing::info!("stopped");
            return Ok(Exit::Ok);
        }
    }
    started.shut_down().await?;
    tracing::info!("stopped");
    Ok(Exit::Ok)
}

/// `--adopt REV`: record that the fleet already runs `REV` in every ring, so
/// that governance starts from there instead of from the repo's first commit.
/// Only the leader may, and only on a store that has never published.
async fn adopt_revision(
    controller: &Controller,
    holder: &str,
    rev: &str,
    actor: &str,
) -> anyhow::Result<tollgate_core::ids::CommitSha> {
    if !controller
        .store()
        .try_lead(holder)
        .await
        .context("checking leadership before adopting")?
    {
        bail!("cannot adopt {rev}: another controller leads this store");
    }
    let sha = controller
        .adopt(rev, actor, chrono::Utc::now())
        .await
        .with_context(|| {
            format!("adopting {rev} (--adopt is for a store that has never published; drop it on restarts)")
        })?;
    tracing::info!(revision = %sha, %actor, "adopted: every ring runs this revision");
    Ok(sha)
}

/// This process in the store's leadership lock: host and pid.
fn holder() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tollgate".into());
    format!("{host}:{}", std::process::id())
}

pub(crate) async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("listening for SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.context("listening for Ctrl-C")?;
    Ok(())
}
