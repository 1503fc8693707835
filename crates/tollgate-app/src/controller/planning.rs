//! Planning a revision for the controller: every ring is judged against what
//! that ring runs.
//!
//! A promotion carries one plan per ring. Ring N's plan is the diff between
//! the content ring N runs now (its desired state, document by document) and
//! the content being published, judged by the risk policy of the governing
//! revision. When every ring runs the same content the plans are the same;
//! when an earlier promotion reached only the first rings (it was superseded,
//! or halted), the later rings' plans also carry what that promotion brought,
//! with its own tier and requirements, so nothing reaches a ring without the
//! approvals its diff against that ring requires.
//!
//! Blocking (git and regorus): the controller runs it outside its write lock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::service::{ControllerError, PlanFailure};
use crate::plan::EMPTY_REVISION;
use tollgate_core::catalog::Catalog;
use tollgate_core::desired::Desired;
use tollgate_core::diff::diff_snapshots;
use tollgate_core::format::Config;
use tollgate_core::ids::CommitSha;
use tollgate_core::plan::{plan, Plan, PlanContext};
use tollgate_core::promotion::{ChangeItem, Phase, Promotion, PromotionKind, RingChanges, RingPlan, StaticMembership};
use tollgate_core::snapshot::Snapshot;
use tollgate_git::git::GitRepo;
use tollgate_git::VerifyPolicy;
use tollgate_policy::PolicyEngine;

/// The files that govern: the repo config and the policy.
const GOVERNANCE_ROOTS: [&str; 3] = ["tollgate.yaml", "tollgate.yml", "policy"];

/// A planned revision, ready to become a promotion.
pub struct Planned {
    pub promotion: Promotion,
    pub members: StaticMembership,
    /// The first ring's plan, with a `rings` summary of every ring's.
    pub plan: Value,
}

/// Reads `rev` through the one validation path every command uses
/// ([`tollgate_git::read_revision`], what `tollgate validate --rev` checks):
/// any error means the revision is not promoted.
pub fn read_valid(git: &GitRepo, rev: &CommitSha) -> Result<Snapshot, ControllerError> {
    tollgate_git::read_revision(git, rev).map_err(|e| match e {
        tollgate_git::RevisionError::Invalid { revision, errors } => ControllerError::Invalid { revision, errors },
        tollgate_git::RevisionError::Read(e) => ControllerError::Git(e),
    })
}

/// Plans against one head for any number of rings.
pub struct Planner<'g> {
    git: &'g GitRepo,
    tip: CommitSha,
    head: Snapshot,
    engine: PolicyEngine,
    author: String,
    now: DateTime<Utc>,
    /// Whole snapshots of earlier revisions, read once per plan.
    revisions: HashMap<CommitSha, Snapshot>,
    /// `source.verify`: every commit must carry a verified signature, and
    /// the signers are who put content into the change.
    verify: Option<&'g VerifyPolicy>,
}

impl<'g> Planner<'g> {
    /// `governing`: the revision whose config and policy judge the change
    /// (what the first ring runs); `None` for the very first revision, which
    /// the built-in policy judges.
    pub fn new(
        git: &'g GitRepo,
        governing: Option<&CommitSha>,
        tip: &CommitSha,
        verify: Option<&'g VerifyPolicy>,
        now: DateTime<Utc>,
    ) -> Result<(Planner<'g>, Option<Config>), ControllerError> {
        let head = read_valid(git, tip)?;
        let (engine, config) = match governing {
            None => (
                PolicyEngine::builtin().map_err(|e| plan_error(tip, PlanFailure::Policy(e)))?,
                head.config.as_ref().map(|c| c.doc.clone()),
            ),
            Some(base) => {
                let files = git.read_roots(base, &GOVERNANCE_ROOTS)?;
                let (gov, errors) = Snapshot::build(&files, Catalog::builtin());
                if !errors.is_empty() {
                    // A broken governing config cannot be trusted to judge anything.
                    return Err(ControllerError::Invalid {
                        revision: base.clone(),
                        errors,
                    });
                }
                let engine =
                    tollgate_policy::policy_engine(&gov).map_err(|e| plan_error(base, PlanFailure::Policy(e)))?;
                (engine, gov.config.map(|c| c.doc))
            }
        };
        let author = git
            .log(tip, 1)?
            .into_iter()
            .next()
            .map(|c| c.author)
            .unwrap_or_default();
        let planner = Planner {
            git,
            tip: tip.clone(),
            head,
            engine,
            author,
            now,
            revisions: HashMap::new(),
            verify,
        };
        Ok((planner, config))
    }

    /// What `ring` (running `desired`) receives from the head, judged.
    pub fn ring(&mut self, desired: &Desired) -> Result<(Plan, RingChanges), ControllerError> {
        let base = self.runs(desired)?;
        let changes = diff_snapshots(&base, &self.head, Catalog::builtin());
        let ctx = PlanContext {
            catalog: Catalog::builtin(),
            base: &base,
            head: &self.head,
            author: &self.author,
            fleet: None,
            now: self.now,
        };
        let base_rev = desired
            .base_revision
            .clone()
            .unwrap_or_else(|| CommitSha::new(EMPTY_REVISION));
        let plan = plan(base_rev, self.tip.clone(), changes, &mut self.engine, &ctx);
        let ring = RingChanges {
            against: desired.fingerprint(),
            tier: plan.tier,
            changes: plan
                .changes
                .iter()
                .map(|c| ChangeItem {
                    key: format!("{}/{}", c.kind.as_str(), c.name),
                    tier: c.tier,
                    requirements: c.requirements.clone(),
                    digest: c.digest.clone(),
                })
                .collect(),
        };
        Ok((plan, ring))
    }

    /// Everyone who authored or committed a commit that the ring running
    /// `desired` has not seen. With `source.verify`, every such commit must
    /// carry a verified signature (else the revision is not promoted), and
    /// its signer's identity joins the names git records (which anyone can
    /// write: they only ever exclude more reviewers, never admit one).
    pub fn people(&self, desired: &Desired) -> Result<BTreeSet<String>, ControllerError> {
        let base = desired.base_revision.as_ref();
        let mut out = BTreeSet::new();
        for c in self.git.commits_between(base, &self.tip)? {
            out.insert(c.author);
            out.insert(c.committer);
        }
        if let Some(policy) = self.verify {
            let signed =
                self.git
                    .verify_range(policy, base, &self.tip)
                    .map_err(|source| ControllerError::Unverified {
                        revision: self.tip.clone(),
                        source,
                    })?;
            out.extend(signed.into_iter().map(|(_, signer)| signer.identity));
        }
        out.remove("");
        Ok(out)
    }

    /// The content a ring runs, as a snapshot: each published document as it
    /// was at the revision that published it (checked against its digest),
    /// and the governance files of the ring's last change revision.
    fn runs(&mut self, desired: &Desired) -> Result<Snapshot, ControllerError> {
        let mut snap = Snapshot::default();
        if let Some(base) = &desired.base_revision {
            let files = self.git.read_roots(base, &GOVERNANCE_ROOTS)?;
            let (gov, _) = Snapshot::build(&files, Catalog::builtin());
            snap.config = gov.config;
            snap.policies = gov.policies;
        }
        for (key, doc) in &desired.documents {
            let (kind, name) = key.split_once('/').unwrap_or(("", key.as_str()));
            let in_head = match kind {
                "baseline" => self.head.baselines.get(name).map(|b| &b.digest),
                "exception" => self.head.exceptions.get(name).map(|e| &e.digest),
                _ => None,
            };
            let from_head = in_head == Some(&doc.digest);
            if !from_head {
                self.load_revision(&doc.revision)?;
            }
            let source = if from_head {
                &self.head
            } else {
                &self.revisions[&doc.revision]
            };
            let found = match kind {
                "baseline" => source.baselines.get(name).map(|b| {
                    snap.baselines.insert(name.to_string(), b.clone());
                    &b.digest
                }),
                "exception" => source.exceptions.get(name).map(|e| {
                    snap.exceptions.insert(name.to_string(), e.clone());
                    &e.digest
                }),
                _ => None,
            };
            if found != Some(&doc.digest) {
                return Err(plan_error(
                    &self.tip,
                    PlanFailure::UnknownContent {
                        ring: desired.ring.clone(),
                        key: key.clone(),
                        digest: doc.digest.clone(),
                        revision: doc.revision.clone(),
                    },
                ));
            }
        }
        Ok(snap)
    }

    fn load_revision(&mut self, rev: &CommitSha) -> Result<(), ControllerError> {
        if !self.revisions.contains_key(rev) {
            let files = self.git.read_governed(rev)?;
            let (snap, _) = Snapshot::build(&files, Catalog::builtin());
            self.revisions.insert(rev.clone(), snap);
        }
        Ok(())
    }
}

fn plan_error(revision: &CommitSha, source: PlanFailure) -> ControllerError {
    ControllerError::Plan {
        revision: revision.to_string(),
        source,
    }
}

/// Plans `tip` for every ring of the governing config. `rings`: each ring's
/// desired state by ring name (a ring never published runs nothing).
pub fn plan_revision(
    mirror: &Path,
    governing: Option<&CommitSha>,
    rings: &BTreeMap<String, Desired>,
    tip: &CommitSha,
    verify: Option<&VerifyPolicy>,
    now: DateTime<Utc>,
) -> Result<Planned, ControllerError> {
    let git = GitRepo::open(mirror)?;
    if let Some(base) = governing {
        if !git.is_ancestor(base, tip)? {
            return Err(ControllerError::HistoryRewritten {
                promoted: base.to_string(),
                tip: tip.to_string(),
            });
        }
    }
    let (mut planner, config) = Planner::new(&git, governing, tip, verify, now)?;
    let ring_plans: Vec<RingPlan> = config
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
    let mut violations = Vec::new();
    if ring_plans.is_empty() {
        violations.push("no rings: tollgate.yaml is missing at the governing revision".to_string());
    }
    // Rings that run the same content share one plan.
    let mut by_content: HashMap<(String, Option<CommitSha>), (Plan, RingChanges)> = HashMap::new();
    let mut per_ring = Vec::new();
    let mut authors = BTreeSet::new();
    for (i, ring) in ring_plans.iter().enumerate() {
        let desired = rings
            .get(&ring.name)
            .cloned()
            .unwrap_or_else(|| Desired::empty(&ring.name, i, now));
        let key = (desired.fingerprint(), desired.base_revision.clone());
        if !by_content.contains_key(&key) {
            let planned = planner.ring(&desired)?;
            by_content.insert(key.clone(), planned);
        }
        authors.extend(planner.people(&desired)?);
        per_ring.push((ring.name.clone(), by_content[&key].clone()));
    }
    if per_ring.is_empty() {
        // No rings to judge against: plan against nothing, for the record.
        let empty = Desired::empty("", 0, now);
        per_ring.push((String::new(), planner.ring(&empty)?));
        authors.extend(planner.people(&empty)?);
    }
    for (ring, (plan, _)) in &per_ring {
        for c in &plan.changes {
            for v in &c.violations {
                let v = if per_ring.len() > 1 {
                    format!("{ring}: {}: {v}", c.name)
                } else {
                    format!("{}: {v}", c.name)
                };
                if !violations.contains(&v) {
                    violations.push(v);
                }
            }
        }
    }
    let first = &per_ring[0].1;
    let mut plan_json = serde_json::to_value(&first.0).expect("plans serialise");
    if let Value::Object(map) = &mut plan_json {
        let rings: Vec<Value> = per_ring
            .iter()
            .map(|(name, (plan, rc))| {
                json!({"ring": name, "base": plan.base, "tier": rc.tier, "against": rc.against,
                       "changes": rc.changes.iter().map(|c| json!({"key": c.key, "tier": c.tier, "digest": c.digest})).collect::<Vec<_>>()})
            })
            .collect();
        map.insert("rings".into(), Value::Array(rings));
    }
    let tier = per_ring.iter().map(|(_, (_, rc))| rc.tier).max().unwrap_or(0);
    let author = planner.author.clone();
    let promotion = Promotion {
        id: 0,
        kind: PromotionKind::Change,
        revision: tip.clone(),
        base: governing.cloned().unwrap_or_else(|| CommitSha::new(EMPTY_REVISION)),
        tier,
        changes: first.1.changes.clone(),
        ring_changes: if ring_plans.is_empty() {
            Vec::new()
        } else {
            per_ring.iter().map(|(_, (_, rc))| rc.clone()).collect()
        },
        author: author.clone(),
        last_pusher: author,
        authors: authors.into_iter().collect(),
        rings: ring_plans,
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

/// Plans ring `ring` of `p` again, against `desired` (what it runs now).
/// Returns the ring's new plan and the people its range adds.
pub fn replan_ring(
    mirror: &Path,
    p: &Promotion,
    desired: &Desired,
    verify: Option<&VerifyPolicy>,
    now: DateTime<Utc>,
) -> Result<(RingChanges, BTreeSet<String>, Vec<String>), ControllerError> {
    let git = GitRepo::open(mirror)?;
    let governing = (p.base.as_str() != EMPTY_REVISION).then_some(&p.base);
    let (mut planner, _) = Planner::new(&git, governing, &p.revision, verify, now)?;
    let (plan, rc) = planner.ring(desired)?;
    let violations = plan
        .changes
        .iter()
        .flat_map(|c| {
            c.violations
                .iter()
                .map(move |v| format!("{}: {}: {v}", desired.ring, c.name))
        })
        .collect();
    Ok((rc, planner.people(desired)?, violations))
}
