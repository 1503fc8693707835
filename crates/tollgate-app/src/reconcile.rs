//! The controller loop of `tollgate run`: every interval (or at once when
//! triggered), check leadership, poll the source, reconcile promotions,
//! sweep devices.
//!
//! Nothing here decides anything: the [`Controller`] does, and refuses to
//! promote on missing facts. The loop only keeps going and says how it is
//! doing. Every failure is classified ([`ErrorClass`]): *transient* (trying
//! again may succeed: the loop backs off), *stalled* (a person must act: the
//! loop keeps checking at its interval) or *waiting* (nothing is wrong, the
//! next step has a known time). A panic inside a pass is caught like an
//! error. After each pass [`Pass::next_at`] says when the loop next needs to
//! run: the earliest soak end or window opening of a live promotion, or the
//! interval, whichever comes first.
//!
//! Only the store's leader acts. Another replica keeps checking whether it
//! has become the leader and meanwhile serves reads from the store.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Notify;
use tracing::Instrument;

use tollgate_core::errors::chain;
use tollgate_core::ports::SharedClock;
use tollgate_core::promotion::{Phase, Promotion};

use crate::controller::{Controller, ControllerError};
use crate::devices::service::Devices;

/// How a failure or a wait is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Retrying may succeed without anyone acting (a remote or the store
    /// was unreachable): back off and retry.
    Transient,
    /// A person must act (an invalid revision, corrupt state, rewritten
    /// history, missing approvals).
    Stalled,
    /// Nothing to do until a known time (a soak ends, a window opens).
    Waiting,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Stalled => "stalled",
            ErrorClass::Waiting => "waiting",
        }
    }

    /// Transient or stalled, from the old two-way split.
    pub fn of(transient: bool) -> ErrorClass {
        if transient {
            ErrorClass::Transient
        } else {
            ErrorClass::Stalled
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ControllerError {
    pub fn class(&self) -> ErrorClass {
        ErrorClass::of(self.is_transient())
    }
}

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
    /// `leadership`, `poll`, `devices`, `reconcile` or `pass` (a panic).
    pub stage: &'static str,
    pub class: ErrorClass,
    /// The error and its causes, with any credentials in URLs removed.
    pub message: String,
    pub at: DateTime<Utc>,
}

/// When the loop next needs to run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outlook {
    /// The earliest known time a live promotion can move on its own.
    pub wake_at: Option<DateTime<Utc>>,
    /// Live promotions waiting for a known time: id and until when.
    pub waiting: Vec<(i64, DateTime<Utc>)>,
    /// Live promotions that only a person can move on (approvals).
    pub stalled: Vec<i64>,
}

/// Reads the phases of live promotions: a soak or a closed window ends at
/// a known time; a promotion pending approval waits for people.
pub fn outlook<'a>(live: impl IntoIterator<Item = &'a Promotion>, now: DateTime<Utc>) -> Outlook {
    let mut out = Outlook {
        wake_at: None,
        waiting: Vec::new(),
        stalled: Vec::new(),
    };
    for p in live {
        let until = match &p.phase {
            Phase::Soaking { until, .. } => Some(*until),
            Phase::WaitingWindow { until: Some(until), .. } => Some(*until),
            Phase::PendingApproval { .. } => {
                out.stalled.push(p.id);
                None
            }
            _ => None,
        };
        if let Some(until) = until {
            // A time already past is due at once (the pass that saw it
            // will have moved it; if not, the next pass does).
            let at = until.max(now);
            out.waiting.push((p.id, at));
            out.wake_at = Some(out.wake_at.map_or(at, |w: DateTime<Utc>| w.min(at)));
        }
    }
    out
}

/// What one pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    pub ok: bool,
    /// When the next pass should start at the latest.
    pub next_at: DateTime<Utc>,
}

/// What the loop tells whoever watches it (the HTTP API's metrics).
/// Every method has a default that does nothing.
#[async_trait::async_trait]
pub trait LoopHooks: Send + Sync {
    /// A poll of the source took `took`.
    fn polled(&self, _took: Duration) {}
    /// A stage failed.
    fn failed(&self, _stage: &'static str, _class: ErrorClass) {}
    /// The fleet's size and open findings by kind after a sweep.
    fn fleet(&self, _devices: u64, _findings: &std::collections::BTreeMap<String, u64>) {}
    /// The pass is over (store-derived figures may be read again).
    async fn finished(&self) {}
}

/// No one watches.
pub struct NoHooks;

impl LoopHooks for NoHooks {}

/// The loop's state shared with readers (`/readyz`, `/v1/status`) and the
/// trigger that wakes it.
#[derive(Debug, Default)]
pub struct LoopShared {
    status: RwLock<LoopStatus>,
    trigger: Notify,
}

impl LoopShared {
    pub fn status(&self) -> LoopStatus {
        self.status.read().expect("status lock").clone()
    }

    pub fn update_status<R>(&self, f: impl FnOnce(&mut LoopStatus) -> R) -> R {
        f(&mut self.status.write().expect("status lock"))
    }

    /// Wakes the loop for a pass now (or right after the one in progress).
    pub fn trigger(&self) {
        self.trigger.notify_one();
    }

    fn triggered(&self) -> impl Future<Output = ()> + '_ {
        self.trigger.notified()
    }
}

/// How long the loop waits after transient failures: the interval doubled
/// per consecutive failure, at most [`MAX_BACKOFF_FACTOR`] intervals.
pub const MAX_BACKOFF_FACTOR: u32 = 8;

/// Runs passes of the controller loop.
#[derive(Clone)]
pub struct Reconciler {
    controller: Arc<Controller>,
    devices: Option<Arc<Devices>>,
    holder: String,
    clock: SharedClock,
    interval: Duration,
    shared: Arc<LoopShared>,
    hooks: Arc<dyn LoopHooks>,
}

impl Reconciler {
    /// `holder` names this process in the store's leadership lock.
    pub fn new(
        controller: Arc<Controller>,
        devices: Option<Arc<Devices>>,
        holder: impl Into<String>,
        clock: SharedClock,
        interval: Duration,
    ) -> Reconciler {
        Reconciler {
            controller,
            devices,
            holder: holder.into(),
            clock,
            interval,
            shared: Arc::new(LoopShared::default()),
            hooks: Arc::new(NoHooks),
        }
    }

    /// Shares status and trigger with `shared` (the API's).
    pub fn with_shared(mut self, shared: Arc<LoopShared>) -> Reconciler {
        self.shared = shared;
        self
    }

    pub fn with_hooks(mut self, hooks: Arc<dyn LoopHooks>) -> Reconciler {
        self.hooks = hooks;
        self
    }

    pub fn shared(&self) -> &Arc<LoopShared> {
        &self.shared
    }

    /// One pass at `now`: leadership, then poll, reconcile and sweep if
    /// leading. Failures are recorded, never raised.
    pub async fn pass(&self, now: DateTime<Utc>) -> Pass {
        let span = tracing::info_span!("pass", holder = %self.holder, at = %now);
        async move {
            let ok = self.stages(now).await;
            let next_at = self.next_at(now, ok).await;
            self.finish(now, ok).await;
            Pass { ok, next_at }
        }
        .instrument(span)
        .await
    }

    async fn stages(&self, now: DateTime<Utc>) -> bool {
        let controller = &self.controller;
        let leading = match controller.store().try_lead(&self.holder).await {
            Ok(leading) => leading,
            Err(e) => {
                self.failed("leadership", ErrorClass::of(e.is_transient()), &e, now);
                return false;
            }
        };
        let was = self.shared.update_status(|s| s.leader.replace(leading));
        if was != Some(leading) {
            tracing::info!(leader = leading, holder = %self.holder, "leadership");
        }
        if !leading {
            return true;
        }
        let started = Instant::now();
        let polled = controller.poll(now).await;
        self.hooks.polled(started.elapsed());
        let mut ok = true;
        match polled {
            Ok(Some(id)) => tracing::info!(promotion = id, "planned a new revision"),
            Ok(None) => {}
            Err(e) => {
                ok = false;
                self.failed("poll", e.class(), &e, now);
            }
        }
        // Gates read the device index: bring it to what is published first.
        if let Some(devices) = &self.devices {
            if let Err(e) = devices.refresh().await {
                ok = false;
                self.failed("devices", ErrorClass::Transient, &e, now);
            }
        }
        match controller.reconcile(now).await {
            Ok(0) => {}
            Ok(moved) => tracing::info!(moved, "reconciled promotions"),
            Err(e) => {
                ok = false;
                self.failed("reconcile", e.class(), &e, now);
            }
        }
        // Findings that time opens or closes, expiries, remediation.
        if let Some(devices) = &self.devices {
            match devices.sweep(now).await {
                Ok(s) => {
                    if s != Default::default() {
                        tracing::info!(?s, "device sweep");
                    }
                    let summary = devices.fleet().read().summary(&Default::default());
                    self.hooks.fleet(summary.devices, &summary.by_kind);
                }
                Err(e) => {
                    ok = false;
                    self.failed("devices", ErrorClass::Transient, &e, now);
                }
            }
        }
        ok
    }

    /// When the pass after this one should start: the interval, sooner when
    /// a promotion's soak ends or window opens before it, later after
    /// consecutive transient failures.
    async fn next_at(&self, now: DateTime<Utc>, ok: bool) -> DateTime<Utc> {
        let interval = chrono::Duration::from_std(self.interval).unwrap_or(chrono::Duration::seconds(30));
        let status = self.shared.status();
        let transient = status
            .last_error
            .as_ref()
            .is_some_and(|e| e.class == ErrorClass::Transient);
        if !ok && transient {
            let failures = status.consecutive_errors + 1;
            let factor = 2u32.saturating_pow(failures.saturating_sub(1)).min(MAX_BACKOFF_FACTOR);
            return now + interval * factor as i32;
        }
        let regular = now + interval;
        if status.leader != Some(true) {
            return regular;
        }
        match self.controller.live_promotions().await {
            Ok(live) => {
                let seen = outlook(live.iter(), now);
                for (id, until) in &seen.waiting {
                    tracing::debug!(promotion = id, until = %until, "waiting");
                }
                seen.wake_at.map_or(regular, |w| w.min(regular))
            }
            Err(e) => {
                tracing::debug!(error = %chain(&e), "live promotions not read; waking at the interval");
                regular
            }
        }
    }

    /// Runs passes until `shutdown` resolves: one at once, then one at each
    /// pass's [`Pass::next_at`] or as soon as the trigger fires. A pass in
    /// progress is finished before the loop stops.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let now = self.clock.now();
            let me = self.clone();
            let next_at = match tokio::spawn(async move { me.pass(now).await }).await {
                Ok(pass) => pass.next_at,
                Err(e) => {
                    self.failed("pass", ErrorClass::Stalled, &e, now);
                    now + chrono::Duration::from_std(self.interval).unwrap_or(chrono::Duration::seconds(30))
                }
            };
            let wait = (next_at - self.clock.now()).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.shared.triggered() => tracing::debug!("pass triggered through the API"),
                _ = &mut shutdown => break,
            }
        }
        tracing::info!("controller loop stopped");
    }

    fn failed(
        &self,
        stage: &'static str,
        class: ErrorClass,
        e: &(dyn std::error::Error + 'static),
        now: DateTime<Utc>,
    ) {
        let message = redact_userinfo(&chain(e));
        match class {
            ErrorClass::Transient => tracing::warn!(stage, error = %message, "controller pass failed; backing off"),
            ErrorClass::Waiting => tracing::info!(stage, error = %message, "controller pass waits"),
            ErrorClass::Stalled => {
                tracing::error!(stage, error = %message, "controller pass failed; this needs a human")
            }
        }
        self.hooks.failed(stage, class);
        self.shared.update_status(|s| {
            s.last_error = Some(LoopError {
                stage,
                class,
                message,
                at: now,
            });
        });
    }

    async fn finish(&self, now: DateTime<Utc>, ok: bool) {
        self.shared.update_status(|s| {
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
        self.hooks.finished().await;
    }
}

/// `scheme://user:secret@host` becomes `scheme://***@host` wherever it
/// appears: git and store errors quote their URLs.
pub fn redact_userinfo(text: &str) -> String {
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
    use tollgate_core::ids::CommitSha;
    use tollgate_core::promotion::PromotionKind;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn live(id: i64, phase: Phase) -> Promotion {
        Promotion {
            id,
            kind: PromotionKind::Change,
            revision: CommitSha::new("b".repeat(40)),
            base: CommitSha::new("a".repeat(40)),
            tier: 1,
            changes: Vec::new(),
            ring_changes: Vec::new(),
            author: "sam".into(),
            last_pusher: "sam".into(),
            authors: Vec::new(),
            rings: Vec::new(),
            windows: Default::default(),
            freezes: Vec::new(),
            violations: Vec::new(),
            gated: true,
            break_glass: None,
            reason: None,
            phase,
            ring_passed_at: Vec::new(),
            approvals: Vec::new(),
            created_at: at("2026-03-02T08:00:00Z"),
        }
    }

    #[test]
    fn the_loop_wakes_at_the_earliest_soak_end_or_window_opening() {
        let now = at("2026-03-02T10:00:00Z");
        let promotions = [
            live(
                1,
                Phase::Soaking {
                    ring: 0,
                    since: now,
                    until: at("2026-03-02T11:00:00Z"),
                },
            ),
            live(
                2,
                Phase::WaitingWindow {
                    ring: 1,
                    reason: "closed".into(),
                    until: Some(at("2026-03-02T10:20:00Z")),
                },
            ),
            live(3, Phase::PendingApproval { ring: 0 }),
            live(
                4,
                Phase::WaitingWindow {
                    ring: 0,
                    reason: "frozen".into(),
                    until: None,
                },
            ),
            live(5, Phase::Promoting { ring: 0 }),
        ];
        let seen = outlook(promotions.iter(), now);
        assert_eq!(seen.wake_at, Some(at("2026-03-02T10:20:00Z")));
        assert_eq!(
            seen.waiting,
            vec![(1, at("2026-03-02T11:00:00Z")), (2, at("2026-03-02T10:20:00Z"))]
        );
        assert_eq!(seen.stalled, vec![3]);
    }

    #[test]
    fn a_soak_that_ended_already_is_due_now_and_nothing_live_means_no_wake() {
        let now = at("2026-03-02T10:00:00Z");
        let over = [live(
            1,
            Phase::Soaking {
                ring: 0,
                since: now,
                until: at("2026-03-02T09:00:00Z"),
            },
        )];
        assert_eq!(outlook(over.iter(), now).wake_at, Some(now));
        assert_eq!(outlook([].iter(), now).wake_at, None);
    }

    #[test]
    fn classes_keep_their_wire_names() {
        for (class, name) in [
            (ErrorClass::Transient, "transient"),
            (ErrorClass::Stalled, "stalled"),
            (ErrorClass::Waiting, "waiting"),
        ] {
            assert_eq!(class.as_str(), name);
            assert_eq!(serde_json::to_value(class).unwrap(), name);
        }
    }

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
