//! The controller's HTTP API (DESIGN 10), served by `tollgate run`.
//!
//! | method and path | who | what |
//! |-----------------|-----|------|
//! | `GET /v1/promotions?phase=P[,P..]&limit=N&before=ID` | read | promotions, newest first, with `next_before` for the next page |
//! | `GET /v1/promotions/{id}` | read | a promotion, its reviews and `approvals`: which reviews counted and why the others did not |
//! | `POST /v1/promotions/{id}/approve` | approver | body optional: `{"state": "approved" \| "changes_requested"}`; the reviewer is the token's name |
//! | `POST /v1/promotions/{id}/halt` | operator | body `{"reason": "..."}` |
//! | `POST /v1/rollbacks` | operator | `{"baseline", "to": "previous" \| {"revision"}, "rings"?, "break_glass_reason"?}`: 201 with the rollback promotion and its plan |
//! | `POST /v1/trigger` | operator | run a controller pass now |
//! | `GET /v1/desired?ring=R` | any role | the ring's promoted baselines and exceptions with their settings, and its pins; `ETag`, `If-None-Match` answers 304 |
//! | `GET /v1/rings` | any role | the rings of the config in force: selector, soak, gate and what was last published to each |
//! | `POST /v1/reports` | reporter | device reports, JSON array or NDJSON; each judged on its own ([`devices`]) |
//! | `GET /v1/drift?ring=&baseline=&kind=&setting=&limit=&after=` | read | findings summarised and the devices that have them |
//! | `GET /v1/devices/{id}` | read | one device's ring and open findings |
//! | `GET /v1/remediation` | read | open remediation items |
//! | `GET /v1/audit?after=SEQ&limit=N` | read | audit events as a JSON array |
//! | `GET /v1/audit/export` | read | the whole audit log as JSONL; `Tollgate-Audit-Head-Seq` and `-Hash` name its last event |
//! | `GET /v1/status` | read | source tip, live promotions by phase, per-ring revisions, loop health |
//! | `GET /healthz` | anyone | the process is alive |
//! | `GET /readyz` | anyone | 200 once the first pass succeeded and the store answers; else 503 |
//! | `GET /metrics` | anyone | Prometheus ([`metrics`]) |
//!
//! Authentication and roles are in [`auth`]; every refusal is the JSON of
//! [`error::ApiError`]. Request bodies are capped at [`body::MAX_BODY_BYTES`]
//! and must arrive in time ([`body::read_body`]); connections are capped and
//! timed out ([`server`]).
//! Writes go only to the leader; a follower answers them with 503
//! `not_leader`.

pub mod auth;
pub mod body;
pub mod devices;
pub mod error;
pub mod metrics;
pub mod observe;
pub mod poller;
pub mod routes;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tollgate_app::reconcile::LoopShared;

use tollgate_app::controller::service::ControllerError;
use tollgate_app::controller::Controller;
use tollgate_app::devices::resolve::DesiredCache;
use tollgate_app::devices::service::Devices;
use tollgate_core::catalog::Catalog;

pub use auth::{Caller, Tokens};
pub use error::ApiError;
pub use metrics::Metrics;
pub use poller::{LoopStatus, Poller};
pub use routes::router;
pub use server::{serve, HttpLimits};

/// Where the API reads the time; tests pin it.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Settings of the API that are not the controller's.
#[derive(Clone)]
pub struct ApiOptions {
    /// The tracked branch, for `/v1/status`.
    pub branch: String,
    /// The loop's interval, for `/v1/status`.
    pub interval: Duration,
    pub clock: Clock,
    /// Timeouts, the body rate and the connection cap ([`server`]).
    pub limits: HttpLimits,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            branch: "main".into(),
            interval: Duration::from_secs(30),
            clock: Arc::new(Utc::now),
            limits: HttpLimits::default(),
        }
    }
}

/// Everything the handlers and the loop share.
#[derive(Clone)]
pub struct ApiState(Arc<Inner>);

struct Inner {
    controller: Arc<Controller>,
    tokens: Tokens,
    metrics: Metrics,
    /// The controller loop's status and trigger.
    shared: Arc<LoopShared>,
    options: ApiOptions,
    desired: Arc<DesiredCache>,
    devices: Option<Arc<Devices>>,
}

impl ApiState {
    /// An API without device tracking (reports are refused).
    pub fn new(controller: Arc<Controller>, tokens: Tokens, options: ApiOptions) -> ApiState {
        let desired = Arc::new(DesiredCache::new(controller.mirror().to_path_buf(), Catalog::builtin()));
        Self::build(controller, tokens, options, desired, None)
    }

    /// An API that takes device reports into `devices` and serves desired
    /// state from the same cache the device index reads.
    pub fn with_devices(
        controller: Arc<Controller>,
        tokens: Tokens,
        options: ApiOptions,
        devices: Arc<Devices>,
    ) -> ApiState {
        let desired = devices.cache().clone();
        Self::build(controller, tokens, options, desired, Some(devices))
    }

    fn build(
        controller: Arc<Controller>,
        tokens: Tokens,
        options: ApiOptions,
        desired: Arc<DesiredCache>,
        devices: Option<Arc<Devices>>,
    ) -> ApiState {
        ApiState(Arc::new(Inner {
            desired,
            devices,
            controller,
            tokens,
            metrics: Metrics::new(),
            shared: Arc::new(LoopShared::default()),
            options,
        }))
    }

    /// The device service, when this controller tracks devices.
    pub fn devices(&self) -> Option<&Arc<Devices>> {
        self.0.devices.as_ref()
    }

    pub fn controller(&self) -> &Arc<Controller> {
        &self.0.controller
    }

    /// Each ring's desired state resolved from the mirror, cached; shared
    /// with whatever else judges devices against it.
    pub fn desired(&self) -> &Arc<DesiredCache> {
        &self.0.desired
    }

    pub fn tokens(&self) -> &Tokens {
        &self.0.tokens
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn options(&self) -> &ApiOptions {
        &self.0.options
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.0.options.clock)()
    }

    pub fn status(&self) -> LoopStatus {
        self.0.shared.status()
    }

    /// What the API shares with the controller loop.
    pub fn loop_shared(&self) -> &Arc<LoopShared> {
        &self.0.shared
    }

    /// Wakes the loop for a pass now (or right after the one in progress).
    pub fn trigger(&self) {
        self.0.shared.trigger();
    }

    /// Writes go through the leader only: one writer keeps the audit chain
    /// linear and the state machine's transitions in order.
    pub fn require_leader(&self) -> Result<(), ApiError> {
        match self.status().leader {
            Some(true) => Ok(()),
            _ => Err(ApiError::not_leader()),
        }
    }

    /// Counts live promotions by phase.
    pub async fn live_promotions(&self) -> Result<std::collections::BTreeMap<String, u64>, ControllerError> {
        let mut counts = std::collections::BTreeMap::new();
        for rec in self.controller().state().live().await? {
            *counts.entry(rec.phase).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Brings the store-derived metrics up to date.
    pub async fn refresh_metrics(&self) -> Result<(), ControllerError> {
        let counts = self.live_promotions().await?;
        self.metrics().set_live_promotions(&counts);
        Ok(self.metrics().observe_audit(self.controller().store().as_ref()).await?)
    }
}
