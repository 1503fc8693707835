//! The controller: watches the governed repo, turns each new revision into a
//! governed promotion, and drives promotions with the pure state machine.
//!
//! Every state change is one store transition holding the new state, its
//! audit events and the desired state it publishes; the controller never
//! does anything else with a side effect. So a crash at any point leaves
//! either the whole transition or none of it, and the next pass recomputes
//! the same step: nothing is promoted twice and no audit event is lost.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::Instrument;

use super::planning::{plan_revision, replan_ring, Planned};
use crate::ledger::{Ledger, LedgerError, OutboxMessage};
use crate::state::{AutoRollback, Refused, SourceState, StateError};
use tollgate_core::audit::Action;
use tollgate_core::catalog::Catalog;
use tollgate_core::desired;
pub use tollgate_core::desired::Desired;
use tollgate_core::ids::{CommitSha, SourceId};
use tollgate_core::promotion::{
    next, Effect, Facts, GateReading, OperatorRequest, Phase, Promotion, PromotionKind, Review, ReviewState,
    StaticMembership,
};
use tollgate_core::snapshot::Snapshot;
use tollgate_git::git::{clone_or_fetch, GitRepo};
use tollgate_store::{NewReview, PromotionFilter, PromotionRecord, PromotionWrite, Store, StoreError, Transition};

pub use tollgate_core::ports::{NoDevices, RingHealth};

/// Why a revision could not be planned or adopted.
#[derive(Debug, thiserror::Error)]
pub enum PlanFailure {
    #[error("compiling the governing revision's policy/")]
    Policy(#[source] tollgate_core::risk::RiskError),
    #[error(
        "ring {ring} runs {key} at {digest} from revision {revision}, which does not hold that content; \
         refusing to judge the change against a guess"
    )]
    UnknownContent {
        ring: String,
        key: String,
        digest: tollgate_core::ids::Digest,
        revision: CommitSha,
    },
    #[error("cannot adopt a revision with invalid documents: {0}")]
    AdoptInvalid(tollgate_core::format::FormatError),
    #[error("no tollgate.yaml")]
    NoConfig,
    #[error("this controller has already published; adopting would overwrite governed state")]
    AlreadyPublished,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("store")]
    Store(#[from] StoreError),
    #[error("outbox")]
    Outbox(#[from] LedgerError),
    #[error("git source")]
    Git(#[from] tollgate_git::git::GitError),
    #[error("planning {revision}")]
    Plan {
        revision: String,
        #[source]
        source: PlanFailure,
    },
    #[error("revision {revision} is not promoted: {} invalid document(s): {}", errors.len(), errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        revision: CommitSha,
        errors: Vec<tollgate_core::format::FormatError>,
    },
    #[error("revision {revision} is not promoted: {source}")]
    Unverified {
        revision: CommitSha,
        #[source]
        source: tollgate_git::Unverified,
    },
    #[error("stored state")]
    State(#[from] StateError),
    #[error("promoted revision {promoted} is not an ancestor of {tip}: history was rewritten (force-push?); refusing to plan across it")]
    HistoryRewritten { promoted: String, tip: String },
    #[error("promotion {0} not found")]
    NotFound(i64),
    #[error("promotion {id} is {phase}; {action} needs a live promotion")]
    NotLive {
        id: i64,
        phase: String,
        action: &'static str,
    },
    #[error("stored promotion {id} is unreadable")]
    Corrupt {
        id: i64,
        #[source]
        source: serde_json::Error,
    },
    #[error("background task failed: {0}")]
    Join(String),
}

impl ControllerError {
    /// Whether retrying later may succeed without a human.
    pub fn is_transient(&self) -> bool {
        match self {
            ControllerError::Store(e) | ControllerError::Outbox(LedgerError::Store(e)) => {
                e.is_transient() || e.is_conflict()
            }
            ControllerError::Git(e) => e.is_transient(),
            ControllerError::State(e) => e.is_transient(),
            _ => false,
        }
    }

    /// Whether the error belongs to one promotion's stored state (it does
    /// not decode): that promotion stalls, every other one still moves.
    fn stalls_one(&self) -> bool {
        matches!(
            self,
            ControllerError::Corrupt { .. } | ControllerError::State(StateError::Decode { .. })
        )
    }
}

/// A promotion as stored: the state machine's value plus the approver
/// membership of its base config (membership is judged at decision time
/// from the config that governs the change).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredPromotion {
    pub promotion: Promotion,
    pub members: StaticMembership,
}

/// The automatic rollback a gate failure calls for, if the policy asked for
/// one for any baseline of the change.
fn auto_rollback(before: &Promotion, after: &Promotion, fx: &[Effect]) -> Option<AutoRollback> {
    let failed = fx.iter().find_map(|e| match e {
        Effect::Audit { action, details, .. } if *action == Action::GateFailed => Some(details),
        _ => None,
    })?;
    if before.kind != PromotionKind::Change || !matches!(after.phase, Phase::Halted { .. }) {
        return None;
    }
    let ring = before.phase.ring()?;
    let changes = before.ring_changes.get(ring).map(|rc| rc.changes.as_slice())?;
    let baselines: Vec<(String, tollgate_core::ids::Digest)> = changes
        .iter()
        .filter(|c| c.requirements.on_gate_failure == tollgate_core::risk::GateFailure::Rollback)
        .filter_map(|c| Some((c.key.strip_prefix("baseline/")?.to_string(), c.digest.clone()?)))
        .collect();
    if baselines.is_empty() {
        return None;
    }
    let why = failed.get("reason").and_then(Value::as_str).unwrap_or("gate failed");
    Some(AutoRollback {
        promotion: before.id,
        ring: before.rings.get(ring)?.name.clone(),
        baselines,
        to: before.base.clone(),
        reason: format!(
            "automatic rollback: the policy rolls back ring {} when its gate fails ({why}); promotion {}",
            before.rings.get(ring)?.name,
            before.id
        ),
    })
}

pub struct Controller {
    store: Arc<dyn Store>,
    /// The governed source's stored state: its keys and typed records.
    state: SourceState,
    url: String,
    branch: String,
    mirror: PathBuf,
    health: Arc<dyn RingHealth>,
    /// All writes go through here: one writer keeps the audit chain linear.
    ledger: Arc<Ledger>,
    pub identity: String,
    /// Called on the planning thread before each plan (instrumentation; the
    /// tests use it to hold planning while they act).
    plan_hook: Option<Arc<dyn Fn() + Send + Sync>>,
    /// `source.verify`: signed commits only, signers as identities.
    verify: Option<Arc<tollgate_git::VerifyPolicy>>,
}

impl Controller {
    pub fn new(
        store: Arc<dyn Store>,
        url: String,
        branch: String,
        mirror: PathBuf,
        health: Arc<dyn RingHealth>,
    ) -> Self {
        Controller {
            ledger: Ledger::new(store.clone()),
            state: SourceState::new(store.clone(), SourceId::default()),
            store,
            url,
            branch,
            mirror,
            health,
            identity: "controller".into(),
            plan_hook: None,
            verify: None,
        }
    }

    /// Governs `source` (its own promotions, rings and tip in a store that
    /// may hold others) instead of the default source.
    pub fn with_source(mut self, source: SourceId) -> Self {
        self.state = SourceState::new(self.store.clone(), source);
        self
    }

    /// Writes through `ledger`, the one writer that every controller and
    /// the devices service of a process over one store share: one audit
    /// chain, appended under one lock.
    pub fn with_ledger(mut self, ledger: Arc<Ledger>) -> Self {
        self.ledger = ledger;
        self
    }

    /// The governed source's stored state.
    pub fn state(&self) -> &SourceState {
        &self.state
    }

    /// Requires every commit of a change to carry a signature `policy`
    /// verifies; its signers are who made the change (DESIGN 5, 6).
    pub fn with_verify(mut self, policy: Arc<tollgate_git::VerifyPolicy>) -> Self {
        self.verify = Some(policy);
        self
    }

    /// Runs `hook` on the planning thread before every plan of a new tip.
    pub fn with_plan_hook(mut self, hook: Arc<dyn Fn() + Send + Sync>) -> Self {
        self.plan_hook = Some(hook);
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The store's one writer, shared with the devices service.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// Delivers what committed decisions must still tell others (the
    /// outbox): each ring published since. Run after every commit and at the
    /// start of each reconcile, so a crash in between loses nothing.
    pub async fn deliver(&self) -> Result<usize, ControllerError> {
        let _w = self.ledger.lock().await;
        self.deliver_locked().await
    }

    /// [`Controller::deliver`] under the write lock the caller holds.
    async fn deliver_locked(&self) -> Result<usize, ControllerError> {
        let pending = self.ledger.pending(self.state.keys()).await?;
        for (key, message) in &pending {
            match message {
                OutboxMessage::Published { ring, at } => self.health.published(ring, *at),
            }
            self.ledger.delivered(key, message).await?;
        }
        Ok(pending.len())
    }

    /// The local bare mirror of the governed repo.
    pub fn mirror(&self) -> &std::path::Path {
        &self.mirror
    }

    /// Commits a transition with audit events `(actor, action, subject,
    /// details)` under the write lock, so they continue the one audit chain.
    pub async fn commit_events(
        &self,
        t: Transition,
        events: Vec<(String, Action, String, Value)>,
        now: DateTime<Utc>,
    ) -> Result<(), ControllerError> {
        self.commit_locked(t, events, now).await
    }

    /// Commits a transition with its audit events under the write lock.
    pub(crate) async fn commit_locked(
        &self,
        t: Transition,
        events: Vec<(String, Action, String, Value)>,
        now: DateTime<Utc>,
    ) -> Result<(), ControllerError> {
        let _w = self.ledger.lock().await;
        self.commit(t, events, now).await
    }

    /// Fetches the source and, for a new tip, plans it and creates its
    /// promotion (superseding older live ones, whose reviews carry over: they
    /// count wherever they saw the same digests). Returns the new promotion id.
    ///
    /// Planning runs outside the write lock, so halts, approvals and reports
    /// never wait for it; the result is committed only if no other pass
    /// created the promotion meanwhile.
    pub async fn poll(&self, now: DateTime<Utc>) -> Result<Option<i64>, ControllerError> {
        let (url, branch, mirror) = (self.url.clone(), self.branch.clone(), self.mirror.clone());
        let tip = tokio::task::spawn_blocking(move || clone_or_fetch(&url, &branch, &mirror).map(|(_, tip)| tip))
            .await
            .map_err(|e| ControllerError::Join(e.to_string()))??;
        if self.seen_tip().await?.as_ref() == Some(&tip) {
            return Ok(None);
        }
        // Promotions of revisions the branch no longer has stop at once,
        // whatever becomes of the new tip.
        self.supersede_dropped(&tip, now).await?;
        let rings = self.ring_states().await?;
        let governing = first_ring_revision(&rings);
        let mirror = self.mirror.clone();
        let tip2 = tip.clone();
        let hook = self.plan_hook.clone();
        let verify = self.verify.clone();
        let planned = tokio::task::spawn_blocking(move || {
            if let Some(hook) = hook {
                hook();
            }
            plan_revision(&mirror, governing.as_ref(), &rings, &tip2, verify.as_deref(), now)
        })
        .await
        .map_err(|e| ControllerError::Join(e.to_string()))?;
        let planned = match planned {
            Ok(p) => p,
            Err(e @ (ControllerError::Invalid { .. } | ControllerError::Unverified { .. })) => {
                self.refused(&tip, &e, now).await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.create(planned, &tip, now).await.map(Some)
    }

    /// Records, once per tip, that a revision is not promoted and why.
    async fn refused(&self, tip: &CommitSha, why: &ControllerError, now: DateTime<Utc>) -> Result<(), ControllerError> {
        let _w = self.ledger.lock().await;
        // An unreadable record is replaced: it only says what was refused
        // before, and the new one says it again.
        let already = match self.state.refused().await {
            Ok(r) => r,
            Err(StateError::Decode { key, reason }) => {
                tracing::warn!(key, %reason, "replacing an unreadable record of a refused revision");
                None
            }
            Err(e) => return Err(e.into()),
        };
        if already.is_some_and(|r| &r.revision == tip) {
            return Ok(());
        }
        let errors: Vec<String> = match why {
            ControllerError::Invalid { errors, .. } => errors.iter().map(|e| e.to_string()).collect(),
            ControllerError::Unverified { source, .. } => vec![source.to_string()],
            other => vec![tollgate_core::errors::chain(other)],
        };
        let record = Refused {
            revision: tip.clone(),
            errors,
        };
        let t = Transition {
            kv: vec![self.state.put_refused(&record)],
            ..Default::default()
        };
        let record = serde_json::to_value(&record).expect("records serialise");
        let event = (
            self.identity.clone(),
            Action::RevisionRefused,
            format!("revision/{tip}"),
            record,
        );
        self.commit(t, vec![event], now).await
    }

    /// The tip the newest promotion was created for.
    async fn seen_tip(&self) -> Result<Option<CommitSha>, ControllerError> {
        Ok(self.state.tip().await?)
    }

    /// Supersedes live change promotions whose revision is not on the branch
    /// any more (a force-push dropped it): they are never published.
    async fn supersede_dropped(&self, tip: &CommitSha, now: DateTime<Utc>) -> Result<(), ControllerError> {
        let live: Vec<(i64, CommitSha)> = self
            .live()
            .await?
            .into_iter()
            .filter(|(_, s)| s.promotion.kind == PromotionKind::Change)
            .map(|(rec, s)| (rec.id, s.promotion.revision))
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        let mirror = self.mirror.clone();
        let tip2 = tip.clone();
        let dropped: Vec<i64> = tokio::task::spawn_blocking(move || -> Result<Vec<i64>, ControllerError> {
            let git = GitRepo::open(&mirror)?;
            // A revision that cannot be found is treated as dropped: never
            // promote on missing facts.
            Ok(live
                .into_iter()
                .filter(|(_, rev)| !git.is_ancestor(rev, &tip2).unwrap_or(false))
                .map(|(id, _)| id)
                .collect())
        })
        .await
        .map_err(|e| ControllerError::Join(e.to_string()))??;
        if dropped.is_empty() {
            return Ok(());
        }
        let _w = self.ledger.lock().await;
        let mut t = Transition::default();
        let mut events = Vec::new();
        for id in dropped {
            let (rec, stored) = self.load(id).await?;
            if stored.promotion.phase.is_terminal() {
                continue;
            }
            let (p, mut fx) = next(&stored.promotion, &superseding(now, &[], &stored.members, tip));
            for e in &mut fx {
                if let Effect::Audit { action, details, .. } = e {
                    if *action == Action::PromotionSuperseded {
                        details["reason"] = json!(format!(
                            "revision {} is no longer on branch {}: history was rewritten",
                            stored.promotion.revision, self.branch
                        ));
                    }
                }
            }
            self.collect(&mut t, &mut events, &rec, p, stored.members.clone(), fx, now)
                .await?;
        }
        self.commit(t, events, now).await
    }

    /// Creates the promotion of `tip` from its plan, superseding older live
    /// change promotions and carrying their reviews over.
    async fn create(&self, planned: Planned, tip: &CommitSha, now: DateTime<Utc>) -> Result<i64, ControllerError> {
        let _w = self.ledger.lock().await;
        if self.seen_tip().await?.as_ref() == Some(tip) {
            // Another pass planned the same tip meanwhile.
            return Ok(self.state.newest().await?.map(|r| r.id).unwrap_or(0));
        }
        let id = self.store.reserve_promotion_id().await?;
        let mut t = Transition::default();
        let mut events = Vec::new();
        let mut carried = Vec::new();
        // Older live promotions give way to the newer revision.
        for (rec, stored) in self
            .live()
            .await?
            .into_iter()
            .filter(|(_, s)| s.promotion.kind == PromotionKind::Change)
        {
            let reviews = self.reviews(rec.id).await?;
            let (p, fx) = next(&stored.promotion, &superseding(now, &reviews, &stored.members, tip));
            self.collect(&mut t, &mut events, &rec, p, stored.members.clone(), fx, now)
                .await?;
            if !reviews.is_empty() {
                carried.push((rec.id, reviews));
            }
        }
        let mut promotion = planned.promotion;
        promotion.id = id;
        promotion.created_at = now;
        let subject = format!("promotion/{id}");
        events.push((
            "controller".to_string(),
            Action::PlanRecorded,
            subject.clone(),
            planned.plan,
        ));
        events.push((
            "controller".to_string(),
            Action::PromotionCreated,
            subject.clone(),
            json!({"revision": promotion.revision, "base": promotion.base, "tier": promotion.tier,
                   "violations": promotion.violations, "authors": promotion.authors,
                   "rings": promotion.ring_changes.iter().zip(&promotion.rings)
                       .map(|(rc, r)| json!({"ring": r.name, "tier": rc.tier, "changes": rc.changes.len()}))
                       .collect::<Vec<_>>()}),
        ));
        let body = serde_json::to_value(StoredPromotion {
            promotion: promotion.clone(),
            members: planned.members,
        })
        .expect("promotions serialise");
        t.promotions.push(PromotionWrite::Insert {
            id: Some(id),
            source: self.state.source().to_string(),
            revision: promotion.revision.to_string(),
            kind: "change".into(),
            phase: promotion.phase.name().into(),
            body,
        });
        // Approvals bind to digests, not commits (DESIGN 6): a revision that
        // leaves every digest as it was keeps them, since each review still
        // saw exactly what is promoted; any content change makes them stop
        // counting for the documents it touches.
        for (from, reviews) in carried {
            for r in &reviews {
                t.reviews.push(review_row(id, r));
            }
            events.push((
                "controller".to_string(),
                Action::ReviewsCarriedOver,
                subject.clone(),
                json!({"from": format!("promotion/{from}"), "reviews": reviews.len(),
                       "reviewers": reviews.iter().map(|r| r.reviewer.as_str()).collect::<Vec<_>>()}),
            ));
        }
        t.kv.push(self.state.put_tip(tip));
        t.kv.push(self.state.clear_refused());
        self.commit(t, events, now).await?;
        Ok(id)
    }

    /// Drives every live promotion as far as the facts allow. A change
    /// promotion whose next ring runs other content than it was planned
    /// against is planned again first (outside the write lock).
    pub async fn reconcile(&self, now: DateTime<Utc>) -> Result<usize, ControllerError> {
        // What an earlier pass decided but did not get to tell (a crash).
        self.deliver().await?;
        let replans = self.replans(now).await?;
        let mut moved = 0;
        // Promotions whose stored state does not decode: each stalls alone,
        // and the pass reports the first once every other one has moved.
        let mut stalled: Option<ControllerError> = None;
        {
            let _w = self.ledger.lock().await;
            let rings = self.ring_states().await?;
            for live in self.live_each().await? {
                let (rec, mut stored) = match live {
                    Ok(found) => found,
                    Err(e) => {
                        tracing::error!(error = %tollgate_core::errors::chain(&e), "a promotion is stalled");
                        stalled.get_or_insert(e);
                        continue;
                    }
                };
                let mut extra = Vec::new();
                if let Some(found) = replans.get(&rec.id) {
                    for (ring, (rc, people, violations)) in found {
                        let p = &mut stored.promotion;
                        let now_runs = ring_fingerprint(&rings, p, *ring);
                        if now_runs.as_deref() != Some(rc.against.as_str()) {
                            continue; // moved again meanwhile: the next pass plans it
                        }
                        if p.ring_changes.len() <= *ring {
                            p.ring_changes.resize(
                                *ring + 1,
                                tollgate_core::promotion::RingChanges {
                                    against: String::new(),
                                    tier: 0,
                                    changes: Vec::new(),
                                },
                            );
                        }
                        p.ring_changes[*ring] = rc.clone();
                        p.tier = p.tier.max(rc.tier);
                        for who in people {
                            if !p.authors.contains(who) {
                                p.authors.push(who.clone());
                            }
                        }
                        for v in violations {
                            if !p.violations.contains(v) {
                                p.violations.push(v.clone());
                            }
                        }
                        extra.push((
                            self.identity.clone(),
                            Action::RingPlanned,
                            format!("promotion/{}", rec.id),
                            json!({"ring": p.rings[*ring].name, "tier": rc.tier, "against": rc.against,
                                   "changes": rc.changes.iter().map(|c| json!({"key": c.key, "tier": c.tier, "digest": c.digest})).collect::<Vec<_>>(),
                                   "violations": violations}),
                        ));
                    }
                }
                let span = tracing::info_span!("promotion", id = rec.id, phase = %rec.phase);
                match self.step(&rec, stored, &rings, extra, now).instrument(span).await {
                    Ok(true) => moved += 1,
                    Ok(false) => {}
                    Err(e) if e.stalls_one() => {
                        tracing::error!(promotion = rec.id, error = %tollgate_core::errors::chain(&e),
                            "the promotion is stalled: its stored state does not decode");
                        stalled.get_or_insert(e);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        moved += self.auto_rollbacks(now).await?;
        match stalled {
            Some(e) => Err(e),
            None => Ok(moved),
        }
    }

    /// Plans, outside the write lock, every ring a live change promotion is
    /// about to judge (its current ring and the next) whose plan was made
    /// against other content than the ring runs now.
    #[allow(clippy::type_complexity)]
    async fn replans(
        &self,
        now: DateTime<Utc>,
    ) -> Result<
        BTreeMap<
            i64,
            Vec<(
                usize,
                (tollgate_core::promotion::RingChanges, BTreeSet<String>, Vec<String>),
            )>,
        >,
        ControllerError,
    > {
        let rings = self.ring_states().await?;
        let mut work = Vec::new();
        // An unreadable promotion is left to the reconcile pass, which reports it.
        for (rec, stored) in self.live_each().await?.into_iter().filter_map(Result::ok) {
            let p = &stored.promotion;
            if p.kind != PromotionKind::Change {
                continue;
            }
            // The ring it waits to publish, or the next one while soaking
            // (the ring soaking already runs what it published).
            let ring = match &p.phase {
                Phase::Soaking { ring, .. } => ring + 1,
                phase => match phase.ring() {
                    Some(ring) => ring,
                    None => continue,
                },
            };
            if ring < p.rings.len() {
                let now_runs = ring_fingerprint(&rings, p, ring);
                let planned = p.ring_changes.get(ring).map(|rc| rc.against.as_str());
                if now_runs.is_some() && planned != now_runs.as_deref() {
                    let desired = rings
                        .get(&p.rings[ring].name)
                        .cloned()
                        .unwrap_or_else(|| Desired::empty(&p.rings[ring].name, ring, now));
                    work.push((rec.id, ring, p.clone(), desired));
                }
            }
        }
        let mut out: BTreeMap<i64, Vec<_>> = BTreeMap::new();
        if work.is_empty() {
            return Ok(out);
        }
        let mirror = self.mirror.clone();
        let verify = self.verify.clone();
        let done = tokio::task::spawn_blocking(move || {
            work.into_iter()
                .map(|(id, ring, p, desired)| (id, ring, replan_ring(&mirror, &p, &desired, verify.as_deref(), now)))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| ControllerError::Join(e.to_string()))?;
        for (id, ring, result) in done {
            match result {
                Ok(r) => out.entry(id).or_default().push((ring, r)),
                // The ring stays unplanned and does not move; every other
                // promotion (and any halt) still goes on.
                Err(e) => tracing::error!(promotion = id, ring, error = %tollgate_core::errors::chain(&e),
                    "cannot plan the ring against what it runs; it does not move"),
            }
        }
        Ok(out)
    }

    /// Every ring's desired state by ring name. A stored state that does not
    /// decode is an error, never an empty ring.
    pub async fn ring_states(&self) -> Result<BTreeMap<String, Desired>, ControllerError> {
        Ok(self.state.rings().await?)
    }

    /// Carries out the rollbacks the policy asked for when a gate failed.
    ///
    /// The request is stored with the halt itself (one transition), so a
    /// crash cannot lose it; it is carried out here and then removed. A
    /// request whose ring no longer runs the halted content (rolled back
    /// already, by a person or by an earlier attempt that crashed before
    /// removing the request) is dropped, so a rollback happens at most once.
    async fn auto_rollbacks(&self, now: DateTime<Utc>) -> Result<usize, ControllerError> {
        use super::rollback::{RollbackRequest, RollbackTarget};
        let mut done = 0;
        // An unreadable request is an error, not dropped: the ring it names
        // stays halted and the loop reports it stalled until a person acts.
        for (key, req) in self.state.auto_rollbacks().await? {
            let drop_request = Transition {
                kv: vec![(key.clone(), None)],
                ..Default::default()
            };
            let running = self.state.desired(&req.ring).await?;
            for (baseline, digest) in &req.baselines {
                let doc = running
                    .as_ref()
                    .and_then(|d| d.documents.get(&format!("baseline/{baseline}")));
                if doc.map(|d| &d.digest) != Some(digest) {
                    continue;
                }
                let request = RollbackRequest {
                    baseline: baseline.clone(),
                    to: RollbackTarget::Revision(req.to.to_string()),
                    rings: vec![req.ring.clone()],
                    break_glass_reason: Some(req.reason.clone()),
                    dry_run: false,
                };
                // Boxed: a rollback reconciles, which may come back here.
                match Box::pin(self.rollback(&request, "policy", now)).await {
                    Ok((p, _)) => {
                        tracing::warn!(promotion = req.promotion, rollback = p.id, %baseline, ring = %req.ring,
                            "gate failed: rolled back as the policy asks");
                        done += 1;
                    }
                    // Nothing earlier to go back to: the ring stays halted for on-call.
                    Err(e) => tracing::error!(promotion = req.promotion, %baseline, ring = %req.ring,
                        error = %tollgate_core::errors::chain(&e), "automatic rollback not possible; the ring stays halted"),
                }
            }
            self.commit_locked(drop_request, vec![], now).await?;
        }
        Ok(done)
    }

    /// One promotion, one transition. Returns whether anything changed.
    /// `extra`: audit events of changes already made to `stored` (a ring
    /// planned again), committed with the step.
    async fn step(
        &self,
        rec: &PromotionRecord,
        stored: StoredPromotion,
        rings: &BTreeMap<String, Desired>,
        extra: Vec<(String, Action, String, Value)>,
        now: DateTime<Utc>,
    ) -> Result<bool, ControllerError> {
        let reviews = self.reviews(rec.id).await?;
        let p = &stored.promotion;
        let gate = match &p.phase {
            Phase::Soaking { ring, since, .. } => self.health.reading(&p.rings[*ring].name, &p.revision, *since),
            _ => GateReading::NoData {
                reason: "not soaking".into(),
            },
        };
        let halt = self.state.halt(rec.id).await?;
        let ring_content: Vec<String> = (0..p.rings.len())
            .filter_map(|i| ring_fingerprint(rings, p, i))
            .collect();
        let facts = Facts {
            now,
            reviews: &reviews,
            members: &stored.members,
            gate,
            halt: halt.clone(),
            superseded_by: None,
            ring_content: &ring_content,
        };
        let (np, fx) = next(p, &facts);
        if &np == p && fx.is_empty() && extra.is_empty() {
            return Ok(false);
        }
        let mut t = Transition::default();
        let mut events = extra;
        if let Some(auto) = auto_rollback(p, &np, &fx) {
            events.push((
                self.identity.clone(),
                Action::AutoRollbackRequested,
                format!("promotion/{}", rec.id),
                json!({"ring": auto.ring, "baselines": auto.baselines.iter().map(|(b, _)| b).collect::<Vec<_>>(),
                       "reason": auto.reason}),
            ));
            t.kv.push(self.state.put_auto_rollback(&auto));
        }
        self.collect(&mut t, &mut events, rec, np, stored.members, fx, now)
            .await?;
        if halt.is_some() {
            t.kv.push(self.state.clear_halt(rec.id));
        }
        self.commit(t, events, now).await?;
        Ok(true)
    }

    /// Adds one promotion's transition and effects to `t`.
    #[allow(clippy::too_many_arguments)]
    async fn collect(
        &self,
        t: &mut Transition,
        events: &mut Vec<(String, Action, String, Value)>,
        rec: &PromotionRecord,
        p: Promotion,
        members: StaticMembership,
        fx: Vec<Effect>,
        now: DateTime<Utc>,
    ) -> Result<(), ControllerError> {
        for e in fx {
            match e {
                Effect::Audit {
                    action,
                    subject,
                    details,
                } => events.push((self.identity.clone(), action, subject, details)),
                Effect::Publish { ring, .. } => {
                    let index = p.rings.iter().position(|r| r.name == ring).unwrap_or(0);
                    let key = self.state.keys().desired(&ring);
                    // A desired state written earlier in this same transition wins.
                    let pending = t.kv.iter().rev().find(|(k, _)| *k == key).and_then(|(_, v)| v.clone());
                    let current = match pending {
                        Some(v) => Some(v),
                        None => self.store.kv_get(&key).await?,
                    };
                    // An unreadable desired state is an error, never an empty
                    // ring: publishing over it would drop its rollback pins.
                    let current = match current {
                        None => Desired::empty(&ring, index, now),
                        Some(v) => crate::state::decode::<Desired>(key.clone(), v)?,
                    };
                    let (next_desired, pin_events) = desired::publish(current, &p, index, now);
                    OutboxMessage::Published {
                        ring: ring.clone(),
                        at: next_desired.published_at,
                    }
                    .write_to(self.state.keys(), t);
                    for (action, details) in pin_events {
                        events.push((self.identity.clone(), action, format!("promotion/{}", p.id), details));
                    }
                    t.kv.push(self.state.put_desired(&next_desired));
                }
            }
        }
        let phase = p.phase.name().to_string();
        let body = serde_json::to_value(StoredPromotion { promotion: p, members }).expect("promotions serialise");
        t.promotions.push(PromotionWrite::update(rec, phase, body));
        Ok(())
    }

    /// Seals `events` onto the stored audit chain and commits everything.
    async fn commit(
        &self,
        t: Transition,
        events: Vec<(String, Action, String, Value)>,
        now: DateTime<Utc>,
    ) -> Result<(), ControllerError> {
        self.ledger.commit(t, events, now).await?;
        // The decision is stored; telling others may fail and is retried.
        if let Err(e) = self.deliver_locked().await {
            tracing::warn!(error = %tollgate_core::errors::chain(&e), "outbox not delivered; the next pass retries");
        }
        Ok(())
    }

    /// Records an approval (local forge mode: identity = token name) of the
    /// promotion's current content, then lets the promotion move.
    pub async fn review(
        &self,
        id: i64,
        reviewer: &str,
        state: ReviewState,
        now: DateTime<Utc>,
    ) -> Result<Promotion, ControllerError> {
        {
            let _w = self.ledger.lock().await;
            let (_, stored) = self.load(id).await?;
            let p = &stored.promotion;
            if p.phase.is_terminal() {
                return Err(ControllerError::NotLive {
                    id,
                    phase: p.phase.name().into(),
                    action: "a review",
                });
            }
            let review = Review {
                reviewer: reviewer.to_string(),
                state,
                at: now,
                digests: p.review_digests(),
                bot: false,
            };
            let mut t = Transition::default();
            t.reviews.push(review_row(id, &review));
            let details = json!({"state": state, "digests": review.digests, "ring": p.phase.ring()});
            self.commit(
                t,
                vec![(
                    reviewer.to_string(),
                    Action::ReviewRecorded,
                    format!("promotion/{id}"),
                    details,
                )],
                now,
            )
            .await?;
        }
        self.reconcile(now).await?;
        Ok(self.load(id).await?.1.promotion)
    }

    /// Asks for a halt; the next step applies it (with its audit event).
    pub async fn halt(
        &self,
        id: i64,
        actor: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Promotion, ControllerError> {
        {
            let _w = self.ledger.lock().await;
            let (_, stored) = self.load(id).await?;
            if stored.promotion.phase.is_terminal() {
                return Err(ControllerError::NotLive {
                    id,
                    phase: stored.promotion.phase.name().into(),
                    action: "a halt",
                });
            }
            let req = OperatorRequest {
                actor: actor.into(),
                reason: reason.into(),
            };
            let t = Transition {
                kv: vec![self.state.put_halt(id, &req)],
                ..Default::default()
            };
            self.store.commit(t).await?;
        }
        self.reconcile(now).await?;
        Ok(self.load(id).await?.1.promotion)
    }

    /// Break-glass: lets a live promotion move without its approvals, window
    /// or freeze, for `reason`. Loudly audited, with a follow-up review request
    /// that needs the normal approvals within 24 hours.
    pub async fn break_glass(
        &self,
        id: i64,
        actor: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Promotion, ControllerError> {
        {
            let _w = self.ledger.lock().await;
            let (rec, mut stored) = self.load(id).await?;
            if stored.promotion.phase.is_terminal() {
                return Err(ControllerError::NotLive {
                    id,
                    phase: stored.promotion.phase.name().into(),
                    action: "break-glass",
                });
            }
            let p = &mut stored.promotion;
            p.break_glass = Some(tollgate_core::promotion::BreakGlass {
                actor: actor.into(),
                reason: reason.into(),
                at: now,
            });
            let subject = format!("promotion/{id}");
            let needs: Vec<_> = p
                .changes
                .iter()
                .map(|c| json!({"change": c.key, "requirements": c.requirements}))
                .collect();
            let events = vec![
                (
                    actor.to_string(),
                    Action::BreakGlass,
                    subject.clone(),
                    json!({"reason": reason, "skips": ["approvals", "windows", "freezes"], "phase": p.phase.name()}),
                ),
                (
                    "controller".to_string(),
                    Action::FollowUpReviewRequested,
                    subject,
                    json!({"needs": needs, "due_within_hours": 24}),
                ),
            ];
            let phase = p.phase.name().to_string();
            let body = serde_json::to_value(&stored).expect("promotions serialise");
            let t = Transition {
                promotions: vec![PromotionWrite::update(&rec, phase, body)],
                ..Default::default()
            };
            self.commit(t, events, now).await?;
        }
        self.reconcile(now).await?;
        Ok(self.load(id).await?.1.promotion)
    }

    /// Records an existing fleet's state: `rev` becomes what every ring runs,
    /// without a promotion, with an `adopted` audit event. Only on a store that
    /// has never published anything; later revisions are governed from there.
    pub async fn adopt(&self, rev: &str, actor: &str, now: DateTime<Utc>) -> Result<CommitSha, ControllerError> {
        let (url, branch, mirror) = (self.url.clone(), self.branch.clone(), self.mirror.clone());
        let rev = rev.to_string();
        let (sha, files) = tokio::task::spawn_blocking(move || -> Result<_, ControllerError> {
            let (git, _) = clone_or_fetch(&url, &branch, &mirror)?;
            let sha = git.resolve(&rev)?;
            let files = git.read_governed(&sha)?;
            Ok((sha, files))
        })
        .await
        .map_err(|e| ControllerError::Join(e.to_string()))??;
        let (snap, errors) = Snapshot::build(&files, Catalog::builtin());
        if !errors.is_empty() {
            return Err(ControllerError::Plan {
                revision: sha.to_string(),
                source: PlanFailure::AdoptInvalid(errors[0].clone()),
            });
        }
        let Some(config) = &snap.config else {
            return Err(ControllerError::Plan {
                revision: sha.to_string(),
                source: PlanFailure::NoConfig,
            });
        };
        let _w = self.ledger.lock().await;
        if self.state.any_desired().await? {
            return Err(ControllerError::Plan {
                revision: sha.to_string(),
                source: PlanFailure::AlreadyPublished,
            });
        }
        let mut documents = std::collections::BTreeMap::new();
        for b in snap.baselines.values() {
            documents.insert(
                format!("baseline/{}", b.doc.name),
                desired::DesiredDoc {
                    revision: sha.clone(),
                    digest: b.digest.clone(),
                    promotion: 0,
                },
            );
        }
        for e in snap.exceptions.values() {
            documents.insert(
                format!("exception/{}", e.doc.name),
                desired::DesiredDoc {
                    revision: sha.clone(),
                    digest: e.digest.clone(),
                    promotion: 0,
                },
            );
        }
        let mut t = Transition::default();
        for (i, ring) in config.doc.rings.iter().enumerate() {
            let d = Desired {
                ring: ring.name.clone(),
                ring_index: i,
                documents: documents.clone(),
                pins: Default::default(),
                base_revision: Some(sha.clone()),
                promotion: 0,
                published_at: now,
            };
            t.kv.push(self.state.put_desired(&d));
            OutboxMessage::Published {
                ring: ring.name.clone(),
                at: now,
            }
            .write_to(self.state.keys(), &mut t);
        }
        t.kv.push(self.state.put_tip(&sha));
        let rings: Vec<&str> = config.doc.rings.iter().map(|r| r.name.as_str()).collect();
        let details = json!({"revision": sha, "documents": documents.len(), "rings": rings});
        self.commit(
            t,
            vec![(actor.to_string(), Action::Adopted, format!("revision/{sha}"), details)],
            now,
        )
        .await?;
        Ok(sha)
    }

    pub async fn load(&self, id: i64) -> Result<(PromotionRecord, StoredPromotion), ControllerError> {
        let rec = self.store.promotion(id).await?.ok_or(ControllerError::NotFound(id))?;
        let stored =
            serde_json::from_value(rec.body.clone()).map_err(|source| ControllerError::Corrupt { id, source })?;
        Ok((rec, stored))
    }

    pub async fn list(&self, filter: PromotionFilter) -> Result<Vec<Promotion>, ControllerError> {
        let mut out = Vec::new();
        for rec in self.store.promotions(filter).await? {
            let stored: StoredPromotion =
                serde_json::from_value(rec.body).map_err(|source| ControllerError::Corrupt { id: rec.id, source })?;
            out.push(stored.promotion);
        }
        Ok(out)
    }

    pub async fn reviews(&self, id: i64) -> Result<Vec<Review>, ControllerError> {
        Ok(self.state.reviews(id).await?)
    }

    /// Every live promotion (not complete, halted or superseded), oldest first.
    pub async fn live_promotions(&self) -> Result<Vec<Promotion>, ControllerError> {
        Ok(self.live().await?.into_iter().map(|(_, s)| s.promotion).collect())
    }

    /// This source's live promotions, oldest first; one that does not
    /// decode is an error.
    async fn live(&self) -> Result<Vec<(PromotionRecord, StoredPromotion)>, ControllerError> {
        self.live_each().await?.into_iter().collect()
    }

    /// This source's live promotions, oldest first, each decoded on its own
    /// so that one unreadable promotion stalls alone.
    async fn live_each(
        &self,
    ) -> Result<Vec<Result<(PromotionRecord, StoredPromotion), ControllerError>>, ControllerError> {
        let mut out: Vec<_> = self
            .state
            .live()
            .await?
            .into_iter()
            .map(|rec| {
                let stored = serde_json::from_value(rec.body.clone())
                    .map_err(|source| ControllerError::Corrupt { id: rec.id, source })?;
                Ok((rec, stored))
            })
            .collect();
        out.reverse(); // oldest first
        Ok(out)
    }
}

/// The revision in force in the first ring (the last change promotion
/// published there): its config and policy govern the next change.
fn first_ring_revision(rings: &BTreeMap<String, Desired>) -> Option<CommitSha> {
    rings
        .values()
        .filter(|d| d.ring_index == 0)
        .filter_map(|d| Some((d.published_at, d.base_revision.clone()?)))
        .max_by_key(|(at, _)| *at)
        .map(|(_, rev)| rev)
}

/// What ring `ring` of `p` runs now, as a fingerprint (a ring never
/// published runs nothing).
fn ring_fingerprint(rings: &BTreeMap<String, Desired>, p: &Promotion, ring: usize) -> Option<String> {
    let name = &p.rings.get(ring)?.name;
    Some(match rings.get(name) {
        Some(d) => d.fingerprint(),
        None => desired::fingerprint([]),
    })
}

/// A review as the store keeps it, for promotion `id`.
fn review_row(id: i64, r: &Review) -> NewReview {
    NewReview {
        promotion_id: id,
        reviewer: r.reviewer.clone(),
        state: serde_json::to_value(r.state)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        at: r.at,
        body: serde_json::to_value(r).expect("reviews serialise"),
    }
}

/// The facts that supersede a live promotion by `tip`.
fn superseding<'a>(
    now: DateTime<Utc>,
    reviews: &'a [Review],
    members: &'a StaticMembership,
    tip: &CommitSha,
) -> Facts<'a> {
    Facts {
        now,
        reviews,
        members,
        gate: GateReading::NoData {
            reason: "superseded".into(),
        },
        halt: None,
        superseded_by: Some(tip.clone()),
        ring_content: &[],
    }
}
