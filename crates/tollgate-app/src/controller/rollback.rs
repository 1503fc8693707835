//! Rollback and break-glass (DESIGN 7).
//!
//! `rollback BASELINE [--to REV | --to-previous] [--ring R]` shows the diff
//! from what the rings run now to the target version and its tier, then
//! promotes the target as a rollback promotion. Rolling back to a version
//! that was promoted and verified before needs one `oncall` approval and is
//! not gated (it restores a known state); any other target is judged like a
//! change. Publishing a rollback pins the document in its rings (see
//! [`tollgate_core::desired`]). Break-glass skips approvals, windows and freezes,
//! with a mandatory reason, a loud audit trail and a follow-up review request.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::service::PlanFailure;
use super::service::{Controller, ControllerError, StoredPromotion};
use crate::plan::{plan_commits, PlanError, PlanOutcome};
use tollgate_core::audit::Action;
use tollgate_core::catalog::Catalog;
use tollgate_core::desired::{Desired, DesiredDoc};
use tollgate_core::ids::{CommitSha, Digest};
use tollgate_core::plan::PlannedChange;
use tollgate_core::promotion::{BreakGlass, ChangeItem, Phase, Promotion, PromotionKind};
use tollgate_core::risk::{GateFailure, Requirements};
use tollgate_git::git::GitRepo;
use tollgate_store::{PromotionWrite, Transition};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackTarget {
    /// The newest version of the baseline that completed a promotion and
    /// differs from what runs now.
    Previous,
    /// The baseline as it was at this revision.
    Revision(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRequest {
    pub baseline: String,
    pub to: RollbackTarget,
    /// Rings to roll back; empty means every ring that runs the baseline.
    #[serde(default)]
    pub rings: Vec<String>,
    /// Break-glass: roll back without approvals; the reason is mandatory.
    #[serde(default)]
    pub break_glass_reason: Option<String>,
    /// Only show what the rollback would do.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a rollback would do, shown before it is done.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RollbackPlan {
    pub document: String,
    pub rings: Vec<String>,
    pub current: Option<DesiredDoc>,
    pub target_revision: CommitSha,
    pub target_digest: Option<Digest>,
    /// The target was promoted through every ring before.
    pub verified: bool,
    pub change: Option<PlannedChange>,
    pub requirements: Requirements,
    /// Settings this rollback changes whose effect it will not undo.
    pub not_rollback_effective: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("baseline `{0}` is not promoted to any ring; nothing to roll back")]
    NotPromoted(String),
    #[error("ring `{ring}` does not run baseline `{baseline}`")]
    UnknownRing { ring: String, baseline: String },
    #[error("no earlier verified version of `{0}` differs from what runs now")]
    NoPrevious(String),
    #[error("baseline `{baseline}` already runs the content of {revision}")]
    NothingToDo { baseline: String, revision: String },
    #[error("break-glass needs a reason")]
    NoReason,
    #[error(transparent)]
    Controller(#[from] ControllerError),
}

fn oncall() -> Requirements {
    Requirements {
        approvals: 1,
        approver_groups: vec!["oncall".into()],
        window: None,
        soak_multiplier: 1.0,
        fresh_approval_per_ring: false,
        on_gate_failure: GateFailure::Halt,
    }
}

impl Controller {
    /// Completed change promotions, newest first.
    async fn completed(&self) -> Result<Vec<Promotion>, ControllerError> {
        let records = self.state().promotions_in(&[Phase::COMPLETE_NAME]).await?;
        Ok(decode_promotions(records)?
            .into_iter()
            .map(|s| s.promotion)
            .filter(|p| p.kind == PromotionKind::Change)
            .collect())
    }

    /// The newest change promotion of the source: its base config governs
    /// the fleet now. Read page by page; one that does not decode is an
    /// error, never skipped.
    async fn governing(&self) -> Result<Option<StoredPromotion>, ControllerError> {
        let mut before = None;
        loop {
            let page = self.state().page(before, 100).await?;
            let Some(last) = page.last() else {
                return Ok(None);
            };
            before = Some(last.id);
            if let Some(found) = decode_promotions(page)?
                .into_iter()
                .find(|s| s.promotion.kind == PromotionKind::Change)
            {
                return Ok(Some(found));
            }
        }
    }

    pub async fn plan_rollback(
        &self,
        req: &RollbackRequest,
        now: DateTime<Utc>,
    ) -> Result<RollbackPlan, RollbackError> {
        let key = format!("baseline/{}", req.baseline);
        let mut running: Vec<Desired> = self
            .ring_states()
            .await?
            .into_values()
            .filter(|d| d.documents.contains_key(&key))
            .collect();
        running.sort_by_key(|d| d.ring_index);
        if running.is_empty() {
            return Err(RollbackError::NotPromoted(req.baseline.clone()));
        }
        for r in &req.rings {
            if !running.iter().any(|d| &d.ring == r) {
                return Err(RollbackError::UnknownRing {
                    ring: r.clone(),
                    baseline: req.baseline.clone(),
                });
            }
        }
        let selected: Vec<Desired> = running
            .into_iter()
            .filter(|d| req.rings.is_empty() || req.rings.contains(&d.ring))
            .collect();
        let now_running = selected[0].documents.get(&key).map(|d| d.digest.clone());
        let completed = self.completed().await?;
        let digest_in = |p: &Promotion| p.changes.iter().find(|c| c.key == key).and_then(|c| c.digest.clone());
        let (target_revision, target_digest) = match &req.to {
            RollbackTarget::Previous => completed
                .iter()
                .filter_map(|p| digest_in(p).map(|d| (p.revision.clone(), Some(d))))
                .find(|(_, d)| *d != now_running)
                .ok_or_else(|| RollbackError::NoPrevious(req.baseline.clone()))?,
            RollbackTarget::Revision(rev) => {
                let (mirror, rev, name) = (self.mirror().to_path_buf(), rev.clone(), req.baseline.clone());
                tokio::task::spawn_blocking(move || digest_at(&mirror, &rev, &name))
                    .await
                    .map_err(|e| ControllerError::Join(e.to_string()))??
            }
        };
        // Rings that already run the target are left alone.
        let rings: Vec<Desired> = selected
            .into_iter()
            .filter(|d| d.documents.get(&key).map(|doc| &doc.digest) != target_digest.as_ref())
            .collect();
        let Some(first) = rings.first() else {
            return Err(RollbackError::NothingToDo {
                baseline: req.baseline.clone(),
                revision: target_revision.to_string(),
            });
        };
        let current = first.documents.get(&key).cloned();
        let verified = completed
            .iter()
            .any(|p| p.changes.iter().any(|c| c.key == key && c.digest == target_digest));
        // The diff and tier from what runs now to the target, for this baseline.
        let change = match &current {
            Some(cur) => {
                let (mirror, base, head) = (
                    self.mirror().to_path_buf(),
                    cur.revision.clone(),
                    target_revision.clone(),
                );
                let name = req.baseline.clone();
                tokio::task::spawn_blocking(move || -> Result<Option<PlannedChange>, ControllerError> {
                    let git = GitRepo::open(&mirror)?;
                    let outcome = plan_commits(&git, Some(&base), &head, None, now).map_err(|e| match e {
                        PlanError::Read(e) => ControllerError::Git(e),
                        PlanError::Policy(e) => ControllerError::Plan {
                            revision: head.to_string(),
                            source: PlanFailure::Policy(e),
                        },
                    })?;
                    Ok(match outcome {
                        PlanOutcome::Plan(p) => p
                            .changes
                            .into_iter()
                            .find(|c| c.name == name && c.kind.as_str() == "baseline"),
                        PlanOutcome::Invalid { .. } => None,
                    })
                })
                .await
                .map_err(|e| ControllerError::Join(e.to_string()))??
            }
            None => None,
        };
        let not_rollback_effective = change
            .iter()
            .flat_map(|c| c.settings.iter())
            .filter(|s| Catalog::builtin().get(&s.key).is_some_and(|e| !e.rollback_effective))
            .map(|s| s.key.clone())
            .collect();
        let requirements = match (&change, verified) {
            (_, true) => oncall(),
            (Some(c), false) => c.requirements.clone(),
            // Unknown content: judge it as strictly as anything.
            (None, false) => {
                tollgate_core::risk::RiskDecision::refused(&tollgate_core::risk::RiskError::NoSources).requirements
            }
        };
        Ok(RollbackPlan {
            document: key,
            rings: rings.iter().map(|d| d.ring.clone()).collect(),
            current,
            target_revision,
            target_digest,
            verified,
            change,
            requirements,
            not_rollback_effective,
        })
    }

    /// Plans and requests the rollback; it moves once its approval (or
    /// break-glass) is there.
    pub async fn rollback(
        &self,
        req: &RollbackRequest,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(Promotion, RollbackPlan), RollbackError> {
        if req.break_glass_reason.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(RollbackError::NoReason);
        }
        let plan = self.plan_rollback(req, now).await?;
        // Rings, windows and membership come from the newest change promotion,
        // whose base config governs the fleet now.
        let governing = self
            .governing()
            .await?
            .ok_or_else(|| RollbackError::NotPromoted(req.baseline.clone()))?;
        let id = self
            .store()
            .reserve_promotion_id()
            .await
            .map_err(ControllerError::from)?;
        let tier = plan.change.as_ref().map_or(3, |c| c.tier);
        let break_glass = req.break_glass_reason.as_ref().map(|r| BreakGlass {
            actor: actor.to_string(),
            reason: r.clone(),
            at: now,
        });
        let promotion = Promotion {
            id,
            kind: PromotionKind::Rollback,
            revision: plan.target_revision.clone(),
            base: plan
                .current
                .as_ref()
                .map(|c| c.revision.clone())
                .unwrap_or_else(|| plan.target_revision.clone()),
            tier,
            changes: vec![ChangeItem {
                key: plan.document.clone(),
                tier,
                requirements: plan.requirements.clone(),
                digest: plan.target_digest.clone(),
            }],
            ring_changes: Vec::new(),
            author: actor.to_string(),
            last_pusher: actor.to_string(),
            authors: vec![actor.to_string()],
            rings: governing
                .promotion
                .rings
                .iter()
                .filter(|r| plan.rings.contains(&r.name))
                .cloned()
                .collect(),
            windows: governing.promotion.windows.clone(),
            freezes: governing.promotion.freezes.clone(),
            violations: plan.change.as_ref().map(|c| c.violations.clone()).unwrap_or_default(),
            gated: !plan.verified,
            break_glass: break_glass.clone(),
            reason: req.break_glass_reason.clone(),
            phase: Phase::PendingApproval { ring: 0 },
            ring_passed_at: Vec::new(),
            approvals: Vec::new(),
            created_at: now,
        };
        let subject = format!("promotion/{id}");
        let mut events = vec![(
            actor.to_string(),
            Action::RollbackRequested,
            subject.clone(),
            json!({"document": plan.document, "rings": plan.rings, "from": plan.current, "to": plan.target_revision,
                   "verified": plan.verified, "tier": tier, "not_rollback_effective": plan.not_rollback_effective}),
        )];
        if let Some(bg) = &break_glass {
            events.push((
                actor.to_string(),
                Action::BreakGlass,
                subject.clone(),
                json!({"reason": bg.reason, "skips": ["approvals", "windows", "freezes"]}),
            ));
            events.push((
                "controller".into(),
                Action::FollowUpReviewRequested,
                subject,
                json!({"requirements": plan.requirements, "due_within_hours": 24}),
            ));
        }
        // In-flight changes that carry the content being rolled back must not
        // carry it on to further rings: they are halted with the rollback.
        let mut kv = Vec::new();
        let bad = plan.current.as_ref().map(|c| c.digest.clone());
        for other in self.live_promotions().await? {
            let carries = other.changes.iter().any(|c| c.key == plan.document && c.digest == bad);
            if other.kind == PromotionKind::Change && carries {
                let halt = tollgate_core::promotion::OperatorRequest {
                    actor: actor.to_string(),
                    reason: format!("rolled back by promotion {id} ({})", plan.document),
                };
                kv.push(self.state().put_halt(other.id, &halt));
            }
        }
        let body = serde_json::to_value(StoredPromotion {
            promotion: promotion.clone(),
            members: governing.members,
        })
        .expect("promotions serialise");
        let t = Transition {
            kv,
            promotions: vec![PromotionWrite::Insert {
                id: Some(id),
                source: self.state().source().to_string(),
                revision: promotion.revision.to_string(),
                kind: "rollback".into(),
                phase: promotion.phase.name().into(),
                body,
            }],
            ..Default::default()
        };
        self.commit_locked(t, events, now).await?;
        self.reconcile(now).await?;
        let (_, stored) = self.load(id).await?;
        Ok((stored.promotion, plan))
    }
}

/// The digest of baseline `name` at `rev` (None when it does not exist there).
fn digest_at(mirror: &std::path::Path, rev: &str, name: &str) -> Result<(CommitSha, Option<Digest>), ControllerError> {
    let git = GitRepo::open(mirror)?;
    let sha = git.resolve(rev)?;
    let files = git.read_roots(&sha, &["baselines"])?;
    let (snap, _) = tollgate_core::snapshot::Snapshot::build(&files, Catalog::builtin());
    Ok((sha, snap.baselines.get(name).map(|b| b.digest.clone())))
}

/// Decodes stored promotions; one that does not decode is an error naming it.
fn decode_promotions(records: Vec<tollgate_store::PromotionRecord>) -> Result<Vec<StoredPromotion>, ControllerError> {
    records
        .into_iter()
        .map(|rec| serde_json::from_value(rec.body).map_err(|source| ControllerError::Corrupt { id: rec.id, source }))
        .collect()
}
