//! The controller loop ([`tollgate_app::reconcile`]) wired to the API: it
//! shares the API's status and trigger, reads the API's clock, and reports
//! into the API's metrics.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use tollgate_app::reconcile::{ErrorClass, LoopHooks, Reconciler};
use tollgate_core::errors::chain;

use super::ApiState;

pub use tollgate_app::reconcile::{LoopError, LoopStatus};

/// Runs passes of the controller loop for an [`ApiState`].
#[derive(Clone)]
pub struct Poller {
    state: ApiState,
    holder: String,
}

impl Poller {
    /// `holder` names this process in the store's leadership lock.
    pub fn new(state: ApiState, holder: impl Into<String>) -> Poller {
        Poller {
            state,
            holder: holder.into(),
        }
    }

    fn reconciler(&self, interval: Duration) -> Reconciler {
        let clock = self.state.options().clock.clone();
        Reconciler::new(
            self.state.controller().clone(),
            self.state.devices().cloned(),
            self.holder.clone(),
            Arc::new(move || clock()),
            interval,
        )
        .with_shared(self.state.loop_shared().clone())
        .with_hooks(Arc::new(self.state.clone()))
    }

    /// One pass at `now`; whether it succeeded. Failures are recorded on
    /// the status, never raised.
    pub async fn pass(&self, now: DateTime<Utc>) -> bool {
        self.reconciler(self.state.options().interval).pass(now).await.ok
    }

    /// Runs passes until `shutdown` resolves ([`Reconciler::run`]).
    pub async fn run(self, interval: Duration, shutdown: impl Future<Output = ()>) {
        self.reconciler(interval).run(shutdown).await
    }
}

#[async_trait::async_trait]
impl LoopHooks for ApiState {
    fn polled(&self, took: Duration) {
        self.metrics().observe_poll(took);
    }

    fn failed(&self, stage: &'static str, class: ErrorClass) {
        self.metrics().poll_error(stage, class);
    }

    fn fleet(&self, devices: u64, findings: &std::collections::BTreeMap<String, u64>) {
        self.metrics().set_fleet(devices, findings);
    }

    async fn finished(&self) {
        if let Err(e) = self.refresh_metrics().await {
            tracing::debug!(error = %chain(&e), "metrics not refreshed");
        }
    }
}
