//! The controller: watches the governed repo, turns each new revision into a
//! governed promotion, and drives promotions with the pure state machine.
//!
//! Every state change is one store transition holding the new state, its
//! audit events and the desired state it publishes; the controller never
//! does anything else with a side effect. So a crash at any point leaves
//! either the whole transition or none of it, and the next pass recomputes
//! the same step: nothing is promoted twice and no audit event is lost.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::desired;
pub use super::desired::Desired;
use crate::audit::{Action, AuditChain, ChainHead};
use crate::catalog::Catalog;
use crate::cli::plan::{compute_plan, PlanArgs, PlanOutcome};
use crate::format::Config;
use crate::ids::CommitSha;
use crate::promotion::{
    next, ChangeItem, Effect, Facts, GateReading, OperatorRequest, Phase, Promotion, PromotionKind, Review,
    ReviewState, RingPlan, StaticMembership,
};
use crate::snapshot::Snapshot;
use crate::source::git::{clone_or_fetch, GitRepo};
use crate::store::{
    AuditRow, NewReview, PromotionFilter, PromotionRecord, PromotionWrite, Store, StoreError, Transition,
};
use crate::tree::RepoPath;

/// What devices report about a ring; the device work implements it. Until
/// then [`NoDevices`] answers: no evidence, so no gate passes.
pub trait RingHealth: Send + Sync {
    fn reading(&self, ring: &str, revision: &CommitSha, since: DateTime<Utc>) -> GateReading;

    /// Called once a new desired state of `ring`, published at `at`, is
    /// committed: the moment to take the reference the gate compares with.
    fn published(&self, _ring: &str, _at: DateTime<Utc>) {}
}

pub struct NoDevices;

impl RingHealth for NoDevices {
    fn reading(&self, _: &str, _: &CommitSha, _: DateTime<Utc>) -> GateReading {
        GateReading::NoData {
            reason: "no reporting devices".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("store")]
    Store(#[from] StoreError),
    #[error("git source")]
    Git(#[from] crate::source::git::GitError),
    #[error("planning {revision}")]
    Plan {
        revision: String,
        #[source]
        source: anyhow::Error,
    },
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
            ControllerError::Store(e) => e.is_transient() || e.is_conflict(),
            ControllerError::Git(e) => e.is_transient(),
            _ => false,
        }
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

/// A rollback the policy asked for when a ring's gate failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AutoRollback {
    promotion: i64,
    ring: String,
    /// Baseline name and the halted content's digest.
    baselines: Vec<(String, crate::ids::Digest)>,
    /// What the ring ran before: the revision the change was planned against.
    to: CommitSha,
    reason: String,
}

/// The automatic rollback a gate failure calls for, if the policy asked for
/// one for any baseline of the change.
fn auto_rollback(before: &Promotion, after: &Promotion, fx: &[Effect]) -> Option<AutoRollback> {
    let failed = fx.iter().find_map(|e| match e {
        Effect::Audit { action, details, .. } if action == "gate_failed" => Some(details),
        _ => None,
    })?;
    if before.kind != PromotionKind::Change || !matches!(after.phase, Phase::Halted { .. }) {
        return None;
    }
    let ring = before.phase.ring()?;
    let baselines: Vec<(String, crate::ids::Digest)> = before
        .changes
        .iter()
        .filter(|c| c.requirements.on_gate_failure == crate::risk::GateFailure::Rollback)
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
    url: String,
    branch: String,
    mirror: PathBuf,
    health: Arc<dyn RingHealth>,
    /// All writes go through here: one writer keeps the audit chain linear.
    write: Mutex<()>,
    pub identity: String,
}

/// Keys of the store's key/value table.
pub mod keys {
    pub const SOURCE_TIP: &str = "source/tip";
    pub const SOURCE_STATUS: &str = "source/status";
    pub fn desired(ring: &str) -> String {
        format!("desired/{ring}")
    }
    pub fn halt(id: i64) -> String {
        format!("halt/{id}")
    }
    /// `auto-rollback/{promotion}`: a rollback the policy asked for.
    pub const AUTO_ROLLBACK: &str = "auto-rollback/";
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
            store,
            url,
            branch,
            mirror,
            health,
            write: Mutex::new(()),
            identity: "controller".into(),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
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
        events: Vec<(String, String, String, Value)>,
        now: DateTime<Utc>,
    ) -> Result<(), ControllerError> {
        self.commit_locked(t, events, now).await
    }

    /// Commits a transition with its audit events under the write lock.
    pub(crate) async fn commit_locked(
        &self,
        t: Transition,
        events: Vec<(String, String, String, Value)>,
        now: DateTime<Utc>,
    ) -> Result<(), ControllerError> {
        let _w = self.write.lock().await;
        self.commit(t, events, now).await
    }

    /// Fetches the source and, for a new tip, plans it and creates its
    /// promotion (superseding older live ones). Returns the new promotion id.
    pub async fn poll(&self, now: DateTime<Utc>) -> Result<Option<i64>, ControllerError> {
        let (url, branch, mirror) = (self.url.clone(), self.branch.clone(), self.mirror.clone());
        let tip = tokio::task::spawn_blocking(move || clone_or_fetch(&url, &branch, &mirror).map(|(_, tip)| tip))
            .await
            .map_err(|e| ControllerError::Join(e.to_string()))??;
        let _w = self.write.lock().await;
        let seen = self.store.kv_get(keys::SOURCE_TIP).await?;
        if seen.as_ref().and_then(Value::as_str) == Some(tip.as_str()) {
            return Ok(None);
        }
        let base = self.first_ring_revision().await?;
        let mirror = self.mirror.clone();
        let (tip2, base2) = (tip.clone(), base.clone());
        let planned = tokio::task::spawn_blocking(move || plan_revision(&mirror, base2.as_ref(), &tip2, now))
            .await
            .map_err(|e| ControllerError::Join(e.to_string()))??;
        let mut t = Transition::default();
        let mut events = Vec::new();
        // Older live promotions give way to the newer revision.
        for (rec, stored) in self
            .live()
            .await?
            .into_iter()
            .filter(|(_, s)| s.promotion.kind == PromotionKind::Change)
        {
            let reviews = self.reviews(rec.id).await?;
            let facts = Facts {
                now,
                reviews: &reviews,
                members: &stored.members,
                gate: GateReading::NoData {
                    reason: "superseded".into(),
                },
                halt: None,
                superseded_by: Some(tip.clone()),
            };
            let (p, fx) = next(&stored.promotion, &facts);
            self.collect(&mut t, &mut events, &rec, p, stored.members.clone(), fx, now)
                .await?;
        }
        let id = self.store.reserve_promotion_id().await?;
        let mut promotion = planned.promotion;
        promotion.id = id;
        promotion.created_at = now;
        let subject = format!("promotion/{id}");
        events.push((
            "controller".to_string(),
            "plan_recorded".to_string(),
            subject.clone(),
            planned.plan,
        ));
        events.push((
            "controller".to_string(),
            "promotion_created".to_string(),
            subject,
            json!({"revision": promotion.revision, "base": promotion.base, "tier": promotion.tier,
                   "violations": promotion.violations}),
        ));
        let body = serde_json::to_value(StoredPromotion {
            promotion: promotion.clone(),
            members: planned.members,
        })
        .expect("promotions serialise");
        t.promotions.push(PromotionWrite::Insert {
            id: Some(id),
            revision: promotion.revision.to_string(),
            kind: "change".into(),
            phase: promotion.phase.name().into(),
            body,
        });
        t.kv.push((keys::SOURCE_TIP.into(), Some(json!(tip.as_str()))));
        self.commit(t, events, now).await?;
        Ok(Some(id))
    }

    /// Drives every live promotion as far as the facts allow.
    pub async fn reconcile(&self, now: DateTime<Utc>) -> Result<usize, ControllerError> {
        let mut moved = 0;
        {
            let _w = self.write.lock().await;
            for (rec, stored) in self.live().await? {
                if self.step(&rec, stored, now).await? {
                    moved += 1;
                }
            }
        }
        moved += self.auto_rollbacks(now).await?;
        Ok(moved)
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
        for (key, value) in self.store.kv_prefix(keys::AUTO_ROLLBACK).await? {
            let drop_request = Transition {
                kv: vec![(key.clone(), None)],
                ..Default::default()
            };
            let Ok(req) = serde_json::from_value::<AutoRollback>(value) else {
                tracing::warn!(key, "dropping an unreadable automatic rollback request");
                self.commit_locked(drop_request, vec![], now).await?;
                continue;
            };
            let running = self
                .store
                .kv_get(&keys::desired(&req.ring))
                .await?
                .and_then(|v| serde_json::from_value::<Desired>(v).ok());
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
                        error = %crate::http::error::chain(&e), "automatic rollback not possible; the ring stays halted"),
                }
            }
            self.commit_locked(drop_request, vec![], now).await?;
        }
        Ok(done)
    }

    /// One promotion, one transition. Returns whether anything changed.
    async fn step(
        &self,
        rec: &PromotionRecord,
        stored: StoredPromotion,
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
        let halt = self
            .store
            .kv_get(&keys::halt(rec.id))
            .await?
            .and_then(|v| serde_json::from_value::<OperatorRequest>(v).ok());
        let facts = Facts {
            now,
            reviews: &reviews,
            members: &stored.members,
            gate,
            halt: halt.clone(),
            superseded_by: None,
        };
        let (np, fx) = next(p, &facts);
        if &np == p && fx.is_empty() {
            return Ok(false);
        }
        let mut t = Transition::default();
        let mut events = Vec::new();
        if let Some(auto) = auto_rollback(p, &np, &fx) {
            events.push((
                self.identity.clone(),
                "auto_rollback_requested".to_string(),
                format!("promotion/{}", rec.id),
                json!({"ring": auto.ring, "baselines": auto.baselines.iter().map(|(b, _)| b).collect::<Vec<_>>(),
                       "reason": auto.reason}),
            ));
            t.kv.push((
                format!("{}{}", keys::AUTO_ROLLBACK, rec.id),
                Some(serde_json::to_value(&auto).expect("requests serialise")),
            ));
        }
        self.collect(&mut t, &mut events, rec, np, stored.members, fx, now)
            .await?;
        if halt.is_some() {
            t.kv.push((keys::halt(rec.id), None));
        }
        self.commit(t, events, now).await?;
        Ok(true)
    }

    /// Adds one promotion's transition and effects to `t`.
    #[allow(clippy::too_many_arguments)]
    async fn collect(
        &self,
        t: &mut Transition,
        events: &mut Vec<(String, String, String, Value)>,
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
                    let key = keys::desired(&ring);
                    // A desired state written earlier in this same transition wins.
                    let pending = t.kv.iter().rev().find(|(k, _)| *k == key).and_then(|(_, v)| v.clone());
                    let current = match pending {
                        Some(v) => Some(v),
                        None => self.store.kv_get(&key).await?,
                    };
                    let current = current
                        .and_then(|v| serde_json::from_value::<Desired>(v).ok())
                        .unwrap_or_else(|| Desired::empty(&ring, index, now));
                    let (next_desired, pin_events) = desired::publish(current, &p, now);
                    for (action, details) in pin_events {
                        events.push((self.identity.clone(), action, format!("promotion/{}", p.id), details));
                    }
                    t.kv.push((
                        key,
                        Some(serde_json::to_value(next_desired).expect("desired state serialises")),
                    ));
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
        mut t: Transition,
        events: Vec<(String, String, String, Value)>,
        now: DateTime<Utc>,
    ) -> Result<(), ControllerError> {
        let head = self.store.audit_head().await?;
        let mut chain = AuditChain::from_head(match &head {
            Some(h) => ChainHead {
                seq: h.seq as u64,
                hash: h.hash.clone(),
            },
            None => ChainHead::genesis(),
        });
        for (actor, action, subject, details) in events {
            let e = chain.append(now, actor, Action::parse(&action), subject, details);
            t.audit.push(AuditRow {
                seq: e.seq as i64,
                at: e.at,
                actor: e.actor,
                action: e.action.as_str().to_string(),
                subject: e.subject,
                details: e.details,
                prev: e.prev,
                hash: e.hash,
            });
        }
        let published: Vec<(String, DateTime<Utc>)> =
            t.kv.iter()
                .filter(|(k, _)| k.starts_with("desired/"))
                .filter_map(|(_, v)| {
                    let d: Desired = serde_json::from_value(v.clone()?).ok()?;
                    Some((d.ring, d.published_at))
                })
                .collect();
        self.store.commit(t).await?;
        for (ring, at) in published {
            self.health.published(&ring, at);
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
            let _w = self.write.lock().await;
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
                digests: p.changes.iter().map(|c| (c.key.clone(), c.digest.clone())).collect(),
                bot: false,
            };
            let mut t = Transition::default();
            t.reviews.push(NewReview {
                promotion_id: id,
                reviewer: reviewer.to_string(),
                state: serde_json::to_value(state)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                at: now,
                body: serde_json::to_value(&review).expect("reviews serialise"),
            });
            let details = json!({"state": state, "digests": review.digests, "ring": p.phase.ring()});
            self.commit(
                t,
                vec![(
                    reviewer.to_string(),
                    "review_recorded".into(),
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
            let _w = self.write.lock().await;
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
                kv: vec![(keys::halt(id), Some(json!(req)))],
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
            let _w = self.write.lock().await;
            let (rec, mut stored) = self.load(id).await?;
            if stored.promotion.phase.is_terminal() {
                return Err(ControllerError::NotLive {
                    id,
                    phase: stored.promotion.phase.name().into(),
                    action: "break-glass",
                });
            }
            let p = &mut stored.promotion;
            p.break_glass = Some(crate::promotion::BreakGlass {
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
                    "break_glass".to_string(),
                    subject.clone(),
                    json!({"reason": reason, "skips": ["approvals", "windows", "freezes"], "phase": p.phase.name()}),
                ),
                (
                    "controller".to_string(),
                    "follow_up_review_requested".to_string(),
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
                source: anyhow::anyhow!("cannot adopt a revision with invalid documents: {}", errors[0]),
            });
        }
        let Some(config) = &snap.config else {
            return Err(ControllerError::Plan {
                revision: sha.to_string(),
                source: anyhow::anyhow!("no tollgate.yaml"),
            });
        };
        let _w = self.write.lock().await;
        if !self.store.kv_prefix("desired/").await?.is_empty() {
            return Err(ControllerError::Plan {
                revision: sha.to_string(),
                source: anyhow::anyhow!(
                    "this controller has already published; adopting would overwrite governed state"
                ),
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
            t.kv.push((
                keys::desired(&ring.name),
                Some(serde_json::to_value(d).expect("desired state serialises")),
            ));
        }
        t.kv.push((keys::SOURCE_TIP.into(), Some(json!(sha.as_str()))));
        let rings: Vec<&str> = config.doc.rings.iter().map(|r| r.name.as_str()).collect();
        let details = json!({"revision": sha, "documents": documents.len(), "rings": rings});
        self.commit(
            t,
            vec![(actor.to_string(), "adopted".into(), format!("revision/{sha}"), details)],
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
        Ok(self
            .store
            .reviews(id)
            .await?
            .into_iter()
            .filter_map(|r| serde_json::from_value(r.body).ok())
            .collect())
    }

    async fn live(&self) -> Result<Vec<(PromotionRecord, StoredPromotion)>, ControllerError> {
        let filter = PromotionFilter {
            phases: ["pending_approval", "approved", "waiting_window", "promoting", "soaking"]
                .map(String::from)
                .to_vec(),
            limit: 1000,
            ..Default::default()
        };
        let mut out = Vec::new();
        for rec in self.store.promotions(filter).await? {
            let stored = serde_json::from_value(rec.body.clone())
                .map_err(|source| ControllerError::Corrupt { id: rec.id, source })?;
            out.push((rec, stored));
        }
        out.reverse(); // oldest first
        Ok(out)
    }

    /// The revision in force in the first ring, which the next change is planned against.
    async fn first_ring_revision(&self) -> Result<Option<CommitSha>, ControllerError> {
        let mut best: Option<(DateTime<Utc>, CommitSha)> = None;
        for (_, v) in self.store.kv_prefix("desired/").await? {
            let Ok(d) = serde_json::from_value::<Desired>(v) else {
                continue;
            };
            if let (0, Some(rev)) = (d.ring_index, d.base_revision) {
                if best.as_ref().is_none_or(|(at, _)| d.published_at > *at) {
                    best = Some((d.published_at, rev));
                }
            }
        }
        Ok(best.map(|(_, r)| r))
    }
}

/// A planned revision, ready to become a promotion.
pub struct Planned {
    pub promotion: Promotion,
    pub members: StaticMembership,
    pub plan: Value,
}

/// Plans `tip` against `base` (None: the repo's first governed revision)
/// and builds its promotion. Blocking (git and regorus).
pub fn plan_revision(
    mirror: &std::path::Path,
    base: Option<&CommitSha>,
    tip: &CommitSha,
    now: DateTime<Utc>,
) -> Result<Planned, ControllerError> {
    let git = GitRepo::open(mirror)?;
    if let Some(base) = base {
        if !git.is_ancestor(base, tip)? {
            return Err(ControllerError::HistoryRewritten {
                promoted: base.to_string(),
                tip: tip.to_string(),
            });
        }
    }
    let args = PlanArgs {
        repo: mirror.to_path_buf(),
        base: base.map(|b| b.to_string()),
        head: tip.to_string(),
        fleet: None,
        now,
    };
    let plan_err = |source: anyhow::Error| ControllerError::Plan {
        revision: tip.to_string(),
        source,
    };
    let outcome = compute_plan(&git, &args).map_err(plan_err)?;
    // The governing config: the base's; for the very first revision, its own
    // (there is nothing else), which the plan marks T3 as a governance addition.
    let config_rev = base.unwrap_or(tip);
    let files = git.read_paths(config_rev, &[RepoPath::new("tollgate.yaml").expect("static path")])?;
    let (snap, _) = Snapshot::build(&files, Catalog::builtin());
    let config: Option<Config> = snap.config.map(|c| c.doc);
    let info = git.log(tip, 1)?.into_iter().next();
    let author = info.as_ref().map(|c| c.author.clone()).unwrap_or_default();
    let (plan_json, changes, tier, mut violations) = match &outcome {
        PlanOutcome::Plan(p) => (
            serde_json::to_value(p).expect("plans serialise"),
            p.changes
                .iter()
                .map(|c| ChangeItem {
                    key: format!("{}/{}", c.kind.as_str(), c.name),
                    tier: c.tier,
                    requirements: c.requirements.clone(),
                    digest: c.digest.clone(),
                })
                .collect::<Vec<_>>(),
            p.tier,
            p.changes
                .iter()
                .flat_map(|c| c.violations.iter().map(move |v| format!("{}: {v}", c.name)))
                .collect::<Vec<_>>(),
        ),
        PlanOutcome::Invalid { errors, .. } => (
            json!({"errors": errors}),
            Vec::new(),
            3,
            errors.iter().map(|e| format!("invalid document: {e}")).collect(),
        ),
    };
    let rings: Vec<RingPlan> = config
        .as_ref()
        .map(|c| {
            c.rings
                .iter()
                .map(|r| RingPlan {
                    name: r.name.clone(),
                    soak_secs: r.soak_secs,
                    gate: r.gate,
                })
                .collect()
        })
        .unwrap_or_default();
    if rings.is_empty() {
        violations.push("no rings: tollgate.yaml is missing at the governing revision".into());
    }
    let promotion = Promotion {
        id: 0,
        kind: PromotionKind::Change,
        revision: tip.clone(),
        base: base
            .cloned()
            .unwrap_or_else(|| CommitSha::new(crate::cli::plan::EMPTY_REVISION)),
        tier,
        changes,
        author: author.clone(),
        last_pusher: author,
        rings,
        windows: config.as_ref().map(|c| c.windows.clone()).unwrap_or_default(),
        freezes: config.as_ref().map(|c| c.freezes.clone()).unwrap_or_default(),
        violations,
        gated: true,
        break_glass: None,
        reason: None,
        phase: Phase::PendingApproval { ring: 0 },
        ring_passed_at: Vec::new(),
        approvals: Vec::new(),
        created_at: now,
    };
    let members = config.as_ref().map(StaticMembership::from_config).unwrap_or_default();
    Ok(Planned {
        promotion,
        members,
        plan: plan_json,
    })
}
