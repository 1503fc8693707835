//! The one library path from two revisions to a plan: what `tollgate plan`
//! prints, what a rollback is judged by, and what a check run will show.
//!
//! Both revisions are read whole through [`Revisions`], the head through
//! the one validation path every command shares
//! ([`read_revision`](crate::revision::read_revision)): an invalid head has
//! no plan, only `validate --rev`'s errors. The base is read from the head
//! plus the files git's tree diff says changed, so unchanged files are read
//! and parsed once. Whole revisions are needed because a change is also
//! judged by its effect on what devices get, which depends on every other
//! baseline that targets the same groups. The base revision's policy judges
//! the change (DESIGN 3), so the policy is chosen only once the base is read
//! ([`PolicySource`]).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::Catalog;
use crate::diff::diff_snapshots;
use crate::format::FormatError;
use crate::ids::CommitSha;
use crate::plan::{plan, Fleet, Plan, PlanContext};
use crate::revision::{read_pair, read_revision, RevisionError, Revisions};
use crate::risk::{RiskError, RiskPolicy};
use crate::snapshot::Snapshot;

/// What `base` reads as when there is no base revision.
pub const EMPTY_REVISION: &str = "0000000000000000000000000000000000000000";

/// The port to policy compilation: the risk policy that governs a revision,
/// from its own `policy/*.rego` or, when it has none, the builtin policy.
pub trait PolicySource {
    fn policy_for(&mut self, governing: &Snapshot) -> Result<Box<dyn RiskPolicy>, RiskError>;
}

/// What to plan.
#[derive(Debug, Clone)]
pub struct PlanRequest<'a> {
    /// `None` plans the head against nothing: a repo's first revision,
    /// every document added and judged by the builtin policy.
    pub base: Option<CommitSha>,
    pub head: CommitSha,
    /// Who the policy is told made the change.
    pub author: String,
    pub fleet: Option<&'a Fleet>,
    pub now: DateTime<Utc>,
}

/// A plan, or the reasons there is none.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum PlanOutcome {
    Plan(Plan),
    Invalid {
        base: CommitSha,
        head: CommitSha,
        valid: bool,
        errors: Vec<FormatError>,
        /// The revision the errors are in: the head, or the base when its
        /// config or policy is broken.
        #[serde(skip)]
        invalid_at: CommitSha,
    },
}

/// Why there is no outcome at all (an invalid revision is an outcome).
#[derive(Debug, thiserror::Error)]
pub enum PlanError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Read(E),
    #[error("compiling the base revision's policy/")]
    Policy(#[source] RiskError),
}

/// Plans `request.base..request.head`.
pub fn plan_revision<E: std::error::Error + Send + 'static>(
    revisions: &dyn Revisions<Error = E>,
    policies: &mut dyn PolicySource,
    request: &PlanRequest,
) -> Result<PlanOutcome, PlanError<E>> {
    let catalog = Catalog::builtin();
    let head = request.head.clone();
    let (base, base_snap, head_snap) = match &request.base {
        Some(base) => match read_pair(revisions, base, &head) {
            Ok(pair) => {
                // The base revision's governance judges the change, never the
                // head's; a broken one cannot be trusted to judge anything.
                let broken: Vec<FormatError> = pair
                    .base_errors
                    .into_iter()
                    .filter(|e| is_governance_path(&e.path))
                    .collect();
                if !broken.is_empty() {
                    return Ok(PlanOutcome::Invalid {
                        invalid_at: base.clone(),
                        base: base.clone(),
                        head,
                        valid: false,
                        errors: broken,
                    });
                }
                (base.clone(), pair.base, pair.head)
            }
            Err(e) => return invalid(base.clone(), head, e),
        },
        None => {
            let base = CommitSha::new(EMPTY_REVISION);
            match read_revision(revisions, &head) {
                Ok(snap) => (base, Snapshot::default(), snap),
                Err(e) => return invalid(base, head, e),
            }
        }
    };
    let mut policy = policies.policy_for(&base_snap).map_err(PlanError::Policy)?;
    let changes = diff_snapshots(&base_snap, &head_snap, catalog);
    let ctx = PlanContext {
        catalog,
        base: &base_snap,
        head: &head_snap,
        author: &request.author,
        fleet: request.fleet,
        now: request.now,
    };
    Ok(PlanOutcome::Plan(plan(base, head, changes, policy.as_mut(), &ctx)))
}

/// An invalid revision is no plan, with every error `validate --rev` gives.
fn invalid<E: std::error::Error>(
    base: CommitSha,
    head: CommitSha,
    e: RevisionError<E>,
) -> Result<PlanOutcome, PlanError<E>> {
    match e {
        RevisionError::Invalid { errors, revision } => Ok(PlanOutcome::Invalid {
            base,
            head,
            valid: false,
            errors,
            invalid_at: revision,
        }),
        RevisionError::Read(e) => Err(PlanError::Read(e)),
    }
}

/// Files that decide how changes are judged: the repo config and policy.
pub fn is_governance_path(path: &str) -> bool {
    path == "tollgate.yaml" || path == "tollgate.yml" || path.starts_with("policy/")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::risk::{validate_decision, PolicyInput, RiskDecision};
    use crate::tree::{ChangeStatus, FileContent, PathChange, RepoPath, SourceFile};

    /// Revisions held in memory: each revision's governed files by path.
    #[derive(Default)]
    struct Memory(BTreeMap<CommitSha, BTreeMap<String, String>>);

    #[derive(Debug, thiserror::Error)]
    #[error("no revision {0}")]
    struct Missing(CommitSha);

    impl Memory {
        fn with(mut self, rev: &CommitSha, files: &[(&str, &str)]) -> Memory {
            let files = files.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect();
            self.0.insert(rev.clone(), files);
            self
        }

        fn at(&self, rev: &CommitSha) -> Result<&BTreeMap<String, String>, Missing> {
            self.0.get(rev).ok_or_else(|| Missing(rev.clone()))
        }
    }

    impl Revisions for Memory {
        type Error = Missing;

        fn governed_paths(&self, rev: &CommitSha) -> Result<Vec<RepoPath>, Missing> {
            Ok(self.at(rev)?.keys().map(|p| RepoPath::new(p).unwrap()).collect())
        }

        fn read_paths(&self, rev: &CommitSha, paths: &[RepoPath]) -> Result<Vec<SourceFile>, Missing> {
            let files = self.at(rev)?;
            Ok(paths
                .iter()
                .filter_map(|p| {
                    files.get(p.as_str()).map(|t| SourceFile {
                        path: p.clone(),
                        content: FileContent::Blob(t.clone().into_bytes()),
                    })
                })
                .collect())
        }

        fn changed_paths(&self, base: &CommitSha, head: &CommitSha) -> Result<Vec<PathChange>, Missing> {
            let (b, h) = (self.at(base)?, self.at(head)?);
            let mut out = Vec::new();
            for path in b.keys().chain(h.keys()).collect::<std::collections::BTreeSet<_>>() {
                let status = match (b.get(path), h.get(path)) {
                    (None, Some(_)) => ChangeStatus::Added,
                    (Some(_), None) => ChangeStatus::Deleted,
                    (Some(x), Some(y)) if x != y => ChangeStatus::Modified,
                    _ => continue,
                };
                out.push(PathChange {
                    path: RepoPath::new(path).unwrap(),
                    status,
                });
            }
            Ok(out)
        }
    }

    /// A policy that gives every change `tier`, and a source of it that
    /// records what it was asked for.
    struct Fixed(u8);

    impl RiskPolicy for Fixed {
        fn evaluate(&mut self, _: &PolicyInput) -> Result<RiskDecision, RiskError> {
            validate_decision(json!({"tier": self.0, "reasons": ["fixed"],
                "requirements": {"approvals": 1, "approver_groups": [], "window": null, "soak_multiplier": 1},
                "rollback_effective": true}))
        }
    }

    #[derive(Default)]
    struct Policies {
        /// The number of `policy/*.rego` files of each governing snapshot asked about.
        asked: Vec<usize>,
    }

    impl PolicySource for Policies {
        fn policy_for(&mut self, governing: &Snapshot) -> Result<Box<dyn RiskPolicy>, RiskError> {
            self.asked.push(governing.policies.len());
            // The base's own policy (one file) says T2; none means builtin, T1 here.
            Ok(Box::new(Fixed(if governing.policies.is_empty() { 1 } else { 2 })))
        }
    }

    const IOS: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata: {name: corp-ios, owners: [mdm-ios]}\nspec:\n  platform: ios\n  targets: {groups: [phones]}\n  settings: {passcode.min_length: 8}\n";
    const POLICY: &str = "package tollgate.risk\n";
    const BASELINE: &str = "baselines/ios/corp-ios.yaml";

    fn sha(c: char) -> CommitSha {
        CommitSha::new(c.to_string().repeat(40))
    }

    fn request(base: Option<CommitSha>, head: CommitSha) -> PlanRequest<'static> {
        PlanRequest {
            base,
            head,
            author: "sam".into(),
            fleet: None,
            now: DateTime::parse_from_rfc3339("2026-03-02T10:00:00Z").unwrap().to_utc(),
        }
    }

    #[test]
    fn the_base_revisions_policy_judges_the_change_not_the_heads() {
        let weaker = IOS.replace("min_length: 8", "min_length: 4");
        let revs = Memory::default()
            .with(&sha('a'), &[(BASELINE, IOS), ("policy/risk.rego", POLICY)])
            .with(&sha('b'), &[(BASELINE, &weaker)]);
        let mut policies = Policies::default();
        let outcome = plan_revision(&revs, &mut policies, &request(Some(sha('a')), sha('b'))).unwrap();
        let PlanOutcome::Plan(plan) = outcome else {
            panic!("expected a plan, got {outcome:?}")
        };
        // The head deleted the policy; the base's (one file, T2) still judged.
        assert_eq!(policies.asked, vec![1]);
        assert_eq!(plan.tier, 2);
        let keys: Vec<&str> = plan.changes.iter().map(|c| c.name.as_str()).collect();
        assert!(keys.contains(&"corp-ios"), "{keys:?}");
        let ios = plan.changes.iter().find(|c| c.name == "corp-ios").unwrap();
        assert_eq!(ios.settings[0].key, "passcode.min_length");
        assert_eq!((plan.base.clone(), plan.head.clone()), (sha('a'), sha('b')));
    }

    #[test]
    fn a_first_revision_is_planned_against_nothing_by_the_builtin_policy() {
        let revs = Memory::default().with(&sha('b'), &[(BASELINE, IOS)]);
        let mut policies = Policies::default();
        let PlanOutcome::Plan(plan) = plan_revision(&revs, &mut policies, &request(None, sha('b'))).unwrap() else {
            panic!("expected a plan")
        };
        assert_eq!(policies.asked, vec![0]);
        assert_eq!(plan.base.as_str(), EMPTY_REVISION);
        assert_eq!(plan.changes.len(), 1);
        assert_eq!(plan.changes[0].op, crate::diff::ChangeOp::Added);
    }

    #[test]
    fn an_invalid_head_is_no_plan_and_no_policy_is_asked() {
        let broken = IOS.replace("passcode.min_length", "passcode.no_such_key");
        let revs = Memory::default()
            .with(&sha('a'), &[(BASELINE, IOS)])
            .with(&sha('b'), &[(BASELINE, &broken)]);
        let mut policies = Policies::default();
        match plan_revision(&revs, &mut policies, &request(Some(sha('a')), sha('b'))).unwrap() {
            PlanOutcome::Invalid { invalid_at, errors, .. } => {
                assert_eq!(invalid_at, sha('b'));
                assert!(errors[0].to_string().contains("passcode.no_such_key"), "{errors:?}");
            }
            other => panic!("expected invalid, got {other:?}"),
        }
        assert!(policies.asked.is_empty());
    }

    #[test]
    fn a_broken_base_config_judges_nothing() {
        let revs = Memory::default()
            .with(&sha('a'), &[(BASELINE, IOS), ("tollgate.yaml", "kind: [")])
            .with(&sha('b'), &[(BASELINE, IOS)]);
        let mut policies = Policies::default();
        match plan_revision(&revs, &mut policies, &request(Some(sha('a')), sha('b'))).unwrap() {
            PlanOutcome::Invalid { invalid_at, errors, .. } => {
                assert_eq!(invalid_at, sha('a'));
                assert!(errors.iter().all(|e| e.path == "tollgate.yaml"), "{errors:?}");
            }
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_revision_that_cannot_be_read_is_an_error_not_an_outcome() {
        let revs = Memory::default().with(&sha('b'), &[(BASELINE, IOS)]);
        let err = plan_revision(&revs, &mut Policies::default(), &request(Some(sha('c')), sha('b'))).unwrap_err();
        assert!(matches!(&err, PlanError::Read(Missing(r)) if *r == sha('c')), "{err:?}");
    }
}
