//! The controller loop of `tollgate run`: every interval (or at once when
//! triggered), check leadership, poll the source, reconcile promotions.
//!
//! Nothing here decides anything: the [`Controller`](tollgate_app::controller::Controller)
//! does, and refuses to promote on missing facts. The loop only keeps going:
//! an error is logged, counted and shown on `/readyz` and `/v1/status`, and
//! the next pass tries again. A panic inside a pass is caught the same way.
//!
//! Only the store's leader acts. Another replica keeps checking whether it
//! has become the leader and meanwhile serves reads from the store.

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::error::chain;
use super::ApiState;

/// What the loop reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoopStatus {
    /// Whether this replica leads; `None` until leadership was first checked.
    pub leader: Option<bool>,
    /// When the first pass succeeded: a leader's first poll and reconcile,
    /// or a follower's first answer from the store. Readiness needs it.
    pub first_sync_at: Option<DateTime<Utc>>,
    pub last_pass_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub consecutive_errors: u32,
    pub last_error: Option<LoopError>,
}

/// A failed stage of a pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoopError {
    /// `leadership`, `poll`, `reconcile` or `pass` (a panic).
    pub stage: &'static str,
    /// `transient` (retrying may succeed) or `stalled` (a human must act).
    pub class: &'static str,
    /// The error and its causes, with any credentials in URLs removed.
    pub message: String,
    pub at: DateTime<Utc>,
}

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

    /// One pass at `now`: leadership, then poll and reconcile if leading.
    /// Returns whether it succeeded; failures are recorded, never raised.
    pub async fn pass(&self, now: DateTime<Utc>) -> bool {
        let state = &self.state;
        let controller = state.controller();
        let leading = match controller.store().try_lead(&self.holder).await {
            Ok(leading) => leading,
            Err(e) => {
                self.failed("leadership", e.is_transient(), &e, now);
                self.finish(now, false).await;
                return false;
            }
        };
        let was = state.update_status(|s| s.leader.replace(leading));
        if was != Some(leading) {
            tracing::info!(leader = leading, holder = %self.holder, "leadership");
        }
        if !leading {
            self.finish(now, true).await;
            return true;
        }
        let started = Instant::now();
        let polled = controller.poll(now).await;
        state.metrics().observe_poll(started.elapsed());
        let mut ok = true;
        match polled {
            Ok(Some(id)) => tracing::info!(promotion = id, "planned a new revision"),
            Ok(None) => {}
            Err(e) => {
                ok = false;
                self.failed("poll", e.is_transient(), &e, now);
            }
        }
        // Gates read the device index: bring it to what is published first.
        if let Some(devices) = state.devices() {
            if let Err(e) = devices.refresh().await {
                ok = false;
                self.failed("devices", true, &e, now);
            }
        }
        match controller.reconcile(now).await {
            Ok(0) => {}
            Ok(moved) => tracing::info!(moved, "reconciled promotions"),
            Err(e) => {
                ok = false;
                self.failed("reconcile", e.is_transient(), &e, now);
            }
        }
        // Findings that time opens or closes, expiries, remediation.
        if let Some(devices) = state.devices() {
            match devices.sweep(now).await {
                Ok(s) => {
                    if s != Default::default() {
                        tracing::info!(?s, "device sweep");
                    }
                    let summary = devices.fleet().read().summary(&Default::default());
                    state.metrics().set_fleet(summary.devices, &summary.by_kind);
                }
                Err(e) => {
                    ok = false;
                    self.failed("devices", true, &e, now);
                }
            }
        }
        self.finish(now, ok).await;
        ok
    }

    /// Runs passes until `shutdown` resolves: one at once, then one every
    /// `interval` or as soon as the API's trigger fires. A pass in progress
    /// is finished before the loop stops.
    pub async fn run(self, interval: Duration, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let now = self.state.now();
            let me = self.clone();
            if let Err(e) = tokio::spawn(async move { me.pass(now).await }).await {
                self.failed("pass", false, &e, now);
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.state.triggered() => tracing::debug!("pass triggered through the API"),
                _ = &mut shutdown => break,
            }
        }
        tracing::info!("controller loop stopped");
    }

    fn failed(&self, stage: &'static str, transient: bool, e: &(dyn std::error::Error + 'static), now: DateTime<Utc>) {
        let message = redact_userinfo(&chain(e));
        if transient {
            tracing::warn!(stage, error = %message, "controller pass failed; retrying next interval");
        } else {
            tracing::error!(stage, error = %message, "controller pass failed; this needs a human");
        }
        self.state.metrics().poll_error(stage, transient);
        let class = if transient { "transient" } else { "stalled" };
        self.state.update_status(|s| {
            s.last_error = Some(LoopError {
                stage,
                class,
                message,
                at: now,
            });
        });
    }

    async fn finish(&self, now: DateTime<Utc>, ok: bool) {
        self.state.update_status(|s| {
            s.last_pass_at = Some(now);
            if ok {
                s.first_sync_at.get_or_insert(now);
                s.last_success_at = Some(now);
                s.consecutive_errors = 0;
                s.last_error = None;
            } else {
                s.consecutive_errors += 1;
            }
        });
        if let Err(e) = self.state.refresh_metrics().await {
            tracing::debug!(error = %chain(&e), "metrics not refreshed");
        }
    }
}

/// `scheme://user:secret@host` becomes `scheme://***@host` wherever it
/// appears: git and store errors quote their URLs.
pub(crate) fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '/' | '"' | '\'' | '`'))
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&tail[at..end]);
            }
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_removed() {
        assert_eq!(
            redact_userinfo("cannot fetch branch \"main\" from https://bot:ghp_x@github.example/acme/b.git into /m"),
            "cannot fetch branch \"main\" from https://***@github.example/acme/b.git into /m"
        );
        assert_eq!(
            redact_userinfo("file:///srv/b.git and ssh://git@h/x"),
            "file:///srv/b.git and ssh://***@h/x"
        );
        assert_eq!(redact_userinfo("no url here"), "no url here");
    }
}
