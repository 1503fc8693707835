//! The promotion state machine: `next(promotion, facts) -> (promotion, effects)`.
//!
//! Pure: it reads the clock, reviews, gate readings and operator requests
//! from [`Facts`] and returns the new state plus the effects the controller
//! must carry out (publish a ring's desired state, append audit events). The
//! controller persists the new state and the audit events in one store
//! transaction, then publishes; after a crash it calls `next` again and gets
//! the same answer, so nothing is promoted twice.
//!
//! ```text
//! pending_approval(r) -> approved(r) -> waiting_window(r) -> promoting(r) -> soaking(r)
//!        ^                                                                     |
//!        +---- next ring (fresh approval) <---- gate passed <-------------------+
//!                                               gate passed on the last ring -> complete
//! any live phase -> halted (gate failed, operator) | superseded (newer revision)
//! ```

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::approvals::{evaluate, ApprovalResult, Membership, Review, Subject};
use super::window::{active_freeze, in_window, next_opening};
use crate::audit::Action;
use crate::format::{Freeze, Gate, Window};
use crate::ids::{CommitSha, Digest};
use crate::risk::Requirements;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromotionKind {
    Change,
    Rollback,
}

/// A ring as frozen into the promotion from the base revision's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RingPlan {
    pub name: String,
    pub soak_secs: u64,
    pub gate: Option<Gate>,
}

/// One governed document in the promotion, with what its change requires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeItem {
    /// `baseline/corp-ios`, `exception/legal-usb-q4`, `governance/tollgate.yaml`.
    pub key: String,
    pub tier: u8,
    pub requirements: Requirements,
    pub digest: Option<Digest>,
}

/// What one ring receives, judged against what that ring runs (DESIGN 7: a
/// ring's requirements are those of the diff between its current content and
/// the content being published, not of the diff against the first ring).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RingChanges {
    /// Fingerprint of the ring's content when this was planned
    /// ([`crate::desired::Desired::fingerprint`]). When the ring
    /// runs something else by the time it is promoted, the plan is stale and
    /// the promotion waits to be planned again.
    pub against: String,
    pub tier: u8,
    pub changes: Vec<ChangeItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlass {
    pub actor: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    PendingApproval {
        ring: usize,
    },
    Approved {
        ring: usize,
    },
    WaitingWindow {
        ring: usize,
        reason: String,
        until: Option<DateTime<Utc>>,
    },
    Promoting {
        ring: usize,
    },
    Soaking {
        ring: usize,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    Complete,
    Halted {
        ring: usize,
        reason: String,
    },
    Superseded {
        by: CommitSha,
    },
}

impl Phase {
    /// The names of the phases a promotion still moves out of, as
    /// [`Phase::name`] spells them (what stored promotions are filtered by).
    pub const LIVE_NAMES: [&'static str; 5] =
        ["pending_approval", "approved", "waiting_window", "promoting", "soaking"];

    /// Every phase's name, live ones first.
    pub const NAMES: [&'static str; 8] = [
        "pending_approval",
        "approved",
        "waiting_window",
        "promoting",
        "soaking",
        "complete",
        "halted",
        "superseded",
    ];

    /// The name of a completed promotion.
    pub const COMPLETE_NAME: &'static str = "complete";

    pub fn name(&self) -> &'static str {
        match self {
            Phase::PendingApproval { .. } => "pending_approval",
            Phase::Approved { .. } => "approved",
            Phase::WaitingWindow { .. } => "waiting_window",
            Phase::Promoting { .. } => "promoting",
            Phase::Soaking { .. } => "soaking",
            Phase::Complete => "complete",
            Phase::Halted { .. } => "halted",
            Phase::Superseded { .. } => "superseded",
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, Phase::Complete | Phase::Halted { .. } | Phase::Superseded { .. })
    }

    /// The ring the phase is about, if any.
    pub fn ring(&self) -> Option<usize> {
        match self {
            Phase::PendingApproval { ring }
            | Phase::Approved { ring }
            | Phase::WaitingWindow { ring, .. }
            | Phase::Promoting { ring }
            | Phase::Soaking { ring, .. }
            | Phase::Halted { ring, .. } => Some(*ring),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Promotion {
    pub id: i64,
    pub kind: PromotionKind,
    /// The revision being promoted.
    pub revision: CommitSha,
    /// The revision it was planned against.
    pub base: CommitSha,
    /// The highest tier any ring's change reaches.
    pub tier: u8,
    /// The first ring's changes (what the plan against the first ring says).
    pub changes: Vec<ChangeItem>,
    /// Per ring (index = ring), what that ring receives judged against what it
    /// runs. Change promotions move a ring only with a fresh entry here;
    /// rollbacks use `changes` for every ring.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ring_changes: Vec<RingChanges>,
    pub author: String,
    pub last_pusher: String,
    /// Everyone who authored or committed a commit of the change, in any ring's
    /// range (with signature verification, the signers): none may approve it.
    #[serde(default)]
    pub authors: Vec<String>,
    pub rings: Vec<RingPlan>,
    /// Windows by name and freezes, from the base config.
    pub windows: BTreeMap<String, Window>,
    pub freezes: Vec<Freeze>,
    /// Policy violations: a promotion with any never moves.
    pub violations: Vec<String>,
    /// Rollbacks to a verified version are not gated: they restore a known state.
    pub gated: bool,
    pub break_glass: Option<BreakGlass>,
    pub reason: Option<String>,
    pub phase: Phase,
    /// When each ring passed its gate (index = ring).
    pub ring_passed_at: Vec<DateTime<Utc>>,
    /// The last approval evaluation, for people (which reviews counted and why not).
    pub approvals: Vec<ApprovalResult>,
    pub created_at: DateTime<Utc>,
}

impl Promotion {
    /// The changes ring `ring` receives: for a change promotion, only when
    /// planned against what the ring runs now (`content`, the ring's current
    /// fingerprint); `None` means the ring must be planned (again) first.
    pub fn changes_for(&self, ring: usize, content: Option<&str>) -> Option<&[ChangeItem]> {
        match self.kind {
            PromotionKind::Rollback => Some(&self.changes),
            PromotionKind::Change => self
                .ring_changes
                .get(ring)
                .filter(|rc| Some(rc.against.as_str()) == content)
                .map(|rc| rc.changes.as_slice()),
        }
    }

    /// Every change item of every ring (rollbacks: `changes`).
    pub fn all_changes(&self) -> impl Iterator<Item = &ChangeItem> {
        let per_ring = self.ring_changes.iter().flat_map(|rc| rc.changes.iter());
        self.changes.iter().chain(per_ring)
    }

    /// The document digests a review of this promotion covers: every
    /// document any ring receives, at the content being published.
    pub fn review_digests(&self) -> BTreeMap<String, Option<Digest>> {
        self.all_changes().map(|c| (c.key.clone(), c.digest.clone())).collect()
    }
}

/// What a ring's devices report, judged after its soak.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reading", rename_all = "snake_case")]
pub enum GateReading {
    /// Not enough evidence (no reporting devices, health source down): the gate
    /// does not pass, and nothing is promoted on missing facts.
    NoData { reason: String },
    Measured {
        /// Share of the ring's reporting devices running the promoted digests.
        applied: f64,
        /// Rise in the non-compliant share since promotion.
        noncompliant_increase: f64,
        devices: u64,
    },
}

/// An operator request observed by the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorRequest {
    pub actor: String,
    pub reason: String,
}

/// Everything `next` may look at.
pub struct Facts<'a> {
    pub now: DateTime<Utc>,
    pub reviews: &'a [Review],
    pub members: &'a dyn Membership,
    /// Reading for the ring in `Soaking`; ignored otherwise.
    pub gate: GateReading,
    pub halt: Option<OperatorRequest>,
    pub superseded_by: Option<CommitSha>,
    /// Fingerprint of what each of the promotion's rings runs now (index =
    /// ring); a ring without an entry is unknown and does not move.
    pub ring_content: &'a [String],
}

impl Facts<'_> {
    /// The fingerprint of what ring `ring` runs now, if known.
    fn runs(&self, ring: usize) -> Option<&str> {
        self.ring_content.get(ring).map(String::as_str)
    }
}

/// What the controller must do after persisting the transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Append to the audit log (in the same store transaction as the state).
    Audit {
        action: Action,
        subject: String,
        details: Value,
    },
    /// Make `revision` the desired state of `ring`.
    Publish { ring: String, revision: CommitSha },
}

const MAX_STEPS: usize = 32;

/// Advances a promotion as far as the facts allow.
pub fn next(p: &Promotion, facts: &Facts) -> (Promotion, Vec<Effect>) {
    let mut cur = p.clone();
    let mut effects = Vec::new();
    // The gate reading was taken for the ring soaking now; a ring reached
    // later in this same call has no reading yet and waits for the next one.
    let measured = match p.phase {
        Phase::Soaking { ring, .. } => Some(ring),
        _ => None,
    };
    for _ in 0..MAX_STEPS {
        let before = cur.phase.clone();
        step(&mut cur, facts, measured, &mut effects);
        if cur.phase == before {
            break;
        }
    }
    (cur, effects)
}

fn audit(p: &Promotion, effects: &mut Vec<Effect>, action: Action, details: Value) {
    effects.push(Effect::Audit {
        action,
        subject: format!("promotion/{}", p.id),
        details,
    });
}

fn step(p: &mut Promotion, f: &Facts, measured: Option<usize>, fx: &mut Vec<Effect>) {
    if p.phase.is_terminal() {
        return;
    }
    if let Some(by) = &f.superseded_by {
        audit(
            p,
            fx,
            Action::PromotionSuperseded,
            json!({"from": p.phase.name(), "by": by}),
        );
        p.phase = Phase::Superseded { by: by.clone() };
        return;
    }
    if let Some(h) = &f.halt {
        let ring = p.phase.ring().unwrap_or(0);
        audit(
            p,
            fx,
            Action::PromotionHalted,
            json!({"from": p.phase.name(), "actor": h.actor, "reason": h.reason}),
        );
        p.phase = Phase::Halted {
            ring,
            reason: format!("halted by {}: {}", h.actor, h.reason),
        };
        return;
    }
    match p.phase.clone() {
        Phase::PendingApproval { ring } => {
            if !p.violations.is_empty() {
                return;
            }
            // Nothing moves on a plan made against content the ring no longer runs.
            let Some(results) = evaluate_approvals(p, f, ring) else {
                return;
            };
            let satisfied = results.iter().all(|r| r.satisfied);
            p.approvals = results;
            if satisfied || p.break_glass.is_some() {
                let counted: Vec<_> = p.approvals.iter().flat_map(|r| r.counted.iter()).collect();
                let rejected: Vec<_> = p.approvals.iter().flat_map(|r| r.rejected.iter()).collect();
                audit(
                    p,
                    fx,
                    Action::PromotionApproved,
                    json!({"ring": p.rings[ring].name, "counted": counted, "rejected": rejected,
                           "break_glass": p.break_glass}),
                );
                p.phase = Phase::Approved { ring };
            }
        }
        Phase::Approved { ring } | Phase::WaitingWindow { ring, .. } => {
            // Approvals count at the moment of promotion (DESIGN 6): one
            // withdrawn while the promotion waited for its window stops it.
            let Some(results) = evaluate_approvals(p, f, ring) else {
                replan(p, fx, ring);
                return;
            };
            if p.break_glass.is_none() && !results.iter().all(|r| r.satisfied) {
                let missing: Vec<&str> = results
                    .iter()
                    .map(|r| r.missing.as_str())
                    .filter(|m| !m.is_empty())
                    .collect();
                audit(
                    p,
                    fx,
                    Action::ApprovalWithdrawn,
                    json!({"ring": p.rings[ring].name, "missing": missing}),
                );
                p.approvals = results;
                p.phase = Phase::PendingApproval { ring };
                return;
            }
            step_window(p, f, fx, ring);
        }
        Phase::Promoting { ring } => {
            if p.changes_for(ring, f.runs(ring)).is_none() {
                replan(p, fx, ring);
                return;
            }
            let r = &p.rings[ring];
            fx.push(Effect::Publish {
                ring: r.name.clone(),
                revision: p.revision.clone(),
            });
            let soak = soak_for(p, ring);
            let until = f.now + soak;
            audit(
                p,
                fx,
                Action::RingPromoted,
                json!({"ring": r.name, "revision": p.revision, "soak_until": until}),
            );
            p.phase = Phase::Soaking {
                ring,
                since: f.now,
                until,
            };
        }
        Phase::Soaking { ring, until, .. } => {
            if f.now < until {
                return;
            }
            let unmeasured = GateReading::NoData {
                reason: format!("no reading taken for ring {} yet", p.rings[ring].name),
            };
            let reading = if measured == Some(ring) { &f.gate } else { &unmeasured };
            let verdict = gate_verdict(p, ring, reading);
            match verdict {
                GateVerdict::Pending => {}
                GateVerdict::Failed(reason) => {
                    audit(
                        p,
                        fx,
                        Action::GateFailed,
                        json!({"ring": p.rings[ring].name, "reading": reading, "reason": reason}),
                    );
                    p.phase = Phase::Halted {
                        ring,
                        reason: format!("gate failed in {}: {reason}", p.rings[ring].name),
                    };
                }
                GateVerdict::Passed => {
                    audit(
                        p,
                        fx,
                        Action::GatePassed,
                        json!({"ring": p.rings[ring].name, "reading": reading}),
                    );
                    p.ring_passed_at.truncate(ring);
                    p.ring_passed_at.push(f.now);
                    if ring + 1 == p.rings.len() {
                        audit(p, fx, Action::PromotionCompleted, json!({"revision": p.revision}));
                        p.phase = Phase::Complete;
                    } else {
                        // Approvals are checked again at each ring promotion
                        // (DESIGN 6): one revoked since the last ring stops it.
                        p.phase = Phase::PendingApproval { ring: ring + 1 };
                    }
                }
            }
        }
        Phase::Complete | Phase::Halted { .. } | Phase::Superseded { .. } => {}
    }
}

/// The ring runs other content than its plan was made against: back to
/// waiting for approvals, which the controller plans again first.
fn replan(p: &mut Promotion, fx: &mut Vec<Effect>, ring: usize) {
    audit(
        p,
        fx,
        Action::RingContentChanged,
        json!({"ring": p.rings[ring].name, "from": p.phase.name(),
               "why": "the ring runs other content than it was planned against; it is planned again"}),
    );
    p.phase = Phase::PendingApproval { ring };
}

fn step_window(p: &mut Promotion, f: &Facts, fx: &mut Vec<Effect>, ring: usize) {
    match window_block(p, f, ring) {
        None => {
            p.phase = Phase::Promoting { ring };
        }
        Some((reason, until)) => {
            let waiting = Phase::WaitingWindow {
                ring,
                reason: reason.clone(),
                until,
            };
            if p.phase != waiting {
                audit(
                    p,
                    fx,
                    Action::WaitingWindow,
                    json!({"ring": p.rings[ring].name, "reason": reason, "until": until}),
                );
                p.phase = waiting;
            }
        }
    }
}

/// Each change's approval result for `ring`, or `None` when the ring has no
/// plan against what it runs now.
fn evaluate_approvals(p: &Promotion, f: &Facts, ring: usize) -> Option<Vec<ApprovalResult>> {
    let changes = p.changes_for(ring, f.runs(ring))?;
    let digests: BTreeMap<String, Option<Digest>> = changes.iter().map(|c| (c.key.clone(), c.digest.clone())).collect();
    let results = changes
        .iter()
        .map(|c| {
            let not_before = (ring > 0 && c.requirements.fresh_approval_per_ring)
                .then(|| p.ring_passed_at.get(ring - 1).copied())
                .flatten();
            let subject = Subject {
                author: &p.author,
                last_pusher: &p.last_pusher,
                authors: &p.authors,
                digests: &digests,
                not_before,
            };
            evaluate(&c.requirements, f.reviews, &subject, f.members)
        })
        .collect();
    Some(results)
}

/// Why the promotion may not move now, and until when (if known).
fn window_block(p: &Promotion, f: &Facts, ring: usize) -> Option<(String, Option<DateTime<Utc>>)> {
    let now = f.now;
    if p.break_glass.is_some() {
        return None;
    }
    if let Some(fr) = active_freeze(&p.freezes, now) {
        let until = fr
            .to
            .succ_opt()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc());
        return Some((format!("freeze: {}", fr.reason), until));
    }
    let Some(changes) = p.changes_for(ring, f.runs(ring)) else {
        return Some(("the ring must be planned against what it runs first".into(), None));
    };
    for name in changes.iter().filter_map(|c| c.requirements.window.as_ref()) {
        match p.windows.get(name) {
            // A window the config does not define can never be honoured: wait (fail closed).
            None => return Some((format!("window `{name}` is not defined in tollgate.yaml"), None)),
            Some(w) if !in_window(w, now) => return Some((format!("outside window `{name}`"), next_opening(w, now))),
            Some(_) => {}
        }
    }
    None
}

fn soak_for(p: &Promotion, ring: usize) -> Duration {
    // The longest soak any ring's change asks for: content that a ring
    // already runs but never passed its gate with (a superseded promotion's)
    // still soaks as long as its own tier demands.
    let multiplier = p
        .all_changes()
        .map(|c| c.requirements.soak_multiplier)
        .fold(1.0_f64, f64::max);
    let secs = if p.gated {
        (p.rings[ring].soak_secs as f64 * multiplier).round() as i64
    } else {
        0
    };
    Duration::seconds(secs)
}

enum GateVerdict {
    Passed,
    Failed(String),
    Pending,
}

fn gate_verdict(p: &Promotion, ring: usize, reading: &GateReading) -> GateVerdict {
    let Some(gate) = p.rings[ring].gate.filter(|_| p.gated) else {
        return GateVerdict::Passed;
    };
    match reading {
        GateReading::NoData { .. } => GateVerdict::Pending,
        GateReading::Measured {
            applied,
            noncompliant_increase,
            ..
        } => {
            if *applied < gate.min_applied {
                GateVerdict::Failed(format!("applied share {applied:.3} is below {:.3}", gate.min_applied))
            } else if *noncompliant_increase > gate.max_noncompliant_increase {
                GateVerdict::Failed(format!(
                    "non-compliant share rose by {noncompliant_increase:.3}, more than {:.3}",
                    gate.max_noncompliant_increase
                ))
            } else {
                GateVerdict::Passed
            }
        }
    }
}

#[cfg(test)]
mod phase_names {
    use super::*;

    #[test]
    fn the_named_phase_sets_are_spelled_as_name_spells_them() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let every = [
            Phase::PendingApproval { ring: 0 },
            Phase::Approved { ring: 0 },
            Phase::WaitingWindow {
                ring: 0,
                reason: String::new(),
                until: None,
            },
            Phase::Promoting { ring: 0 },
            Phase::Soaking {
                ring: 0,
                since: at,
                until: at,
            },
            Phase::Complete,
            Phase::Halted {
                ring: 0,
                reason: String::new(),
            },
            Phase::Superseded {
                by: CommitSha::new("0".repeat(40)),
            },
        ];
        let live: Vec<&str> = every.iter().filter(|p| !p.is_terminal()).map(Phase::name).collect();
        assert_eq!(live, Phase::LIVE_NAMES);
        assert_eq!(every.iter().map(Phase::name).collect::<Vec<_>>(), Phase::NAMES);
        assert_eq!(Phase::Complete.name(), Phase::COMPLETE_NAME);
        // The stored name is the serde tag, so a filter by name finds what was stored.
        for p in &every {
            assert_eq!(serde_json::to_value(p).unwrap()["phase"], p.name(), "{p:?}");
        }
    }
}
