//! Which approvals count (DESIGN 6), as an explainable result.
//!
//! An approval counts toward a promotion only if, at the moment of the
//! decision: the reviewer is neither the change's author nor its last pusher;
//! their latest review is an approval (not later dismissed, not followed by a
//! request for changes); it was given for exactly the digests being promoted;
//! the reviewer is a member of a required group now; the reviewer is not a
//! bot; and, where the policy asks for a fresh approval per ring, it was
//! given after the previous ring finished. Every review is reported as
//! counted or rejected with the reason, which is what the forge shows.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::Digest;
use crate::risk::Requirements;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewState {
    Approved,
    ChangesRequested,
    Dismissed,
    Commented,
}

/// One review as the forge (or, in local mode, the API) recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub reviewer: String,
    pub state: ReviewState,
    pub at: DateTime<Utc>,
    /// Digests of the documents the reviewer saw, by document key
    /// (`baseline/corp-ios`, `governance/config`...).
    pub digests: BTreeMap<String, Option<Digest>>,
    #[serde(default)]
    pub bot: bool,
}

/// Group membership at decision time.
pub trait Membership: Send + Sync {
    fn is_member(&self, user: &str, group: &str) -> bool;
    /// Every group the user is in (for "any approver group").
    fn groups_of(&self, user: &str) -> Vec<String>;
}

/// Membership from a fixed table (local forge mode: `users` in tollgate.yaml).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticMembership(pub BTreeMap<String, BTreeSet<String>>);

impl StaticMembership {
    /// Groups and their users as listed in the repo config.
    pub fn from_config(config: &crate::format::Config) -> Self {
        StaticMembership(
            config
                .approvers
                .iter()
                .map(|(g, a)| (g.clone(), a.users.iter().cloned().collect()))
                .collect(),
        )
    }
}

impl Membership for StaticMembership {
    fn is_member(&self, user: &str, group: &str) -> bool {
        self.0.get(group).is_some_and(|users| users.contains(user))
    }
    fn groups_of(&self, user: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, users)| users.contains(user))
            .map(|(g, _)| g.clone())
            .collect()
    }
}

/// What is being approved.
pub struct Subject<'a> {
    pub author: &'a str,
    pub last_pusher: &'a str,
    /// Every author and committer of every commit of the change.
    pub authors: &'a [String],
    /// The documents being promoted; a review counts only if it saw each of
    /// them at exactly this digest.
    pub digests: &'a BTreeMap<String, Option<Digest>>,
    /// Reviews before this instant do not count (fresh approval per ring).
    pub not_before: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    pub reviewer: String,
    pub at: DateTime<Utc>,
    /// The required groups the reviewer is a member of.
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub reviewer: String,
    pub at: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalResult {
    pub satisfied: bool,
    pub required: u32,
    pub counted: Vec<Counted>,
    pub rejected: Vec<Rejected>,
    /// Why the requirements are not met yet, for people; empty when satisfied.
    pub missing: String,
}

/// Evaluates `reviews` against `req` for `subject`.
///
/// Groups: an empty `approver_groups` means any member of any approver
/// group. When more than one approval is required and groups are listed, the
/// first listed group must supply at least one of them (the policy lists
/// `mdm-security` first for T3); the others may come from any listed group,
/// or, when the first group is the only one listed (a T3 change without
/// owners, such as a governance change), from any approver group.
pub fn evaluate(req: &Requirements, reviews: &[Review], subject: &Subject, members: &dyn Membership) -> ApprovalResult {
    // Only each reviewer's latest review speaks for them.
    let mut latest: BTreeMap<&str, &Review> = BTreeMap::new();
    let mut ordered: Vec<&Review> = reviews.iter().collect();
    ordered.sort_by_key(|r| r.at);
    for r in ordered {
        if r.state == ReviewState::Commented {
            continue;
        }
        latest.insert(r.reviewer.as_str(), r);
    }
    let mut counted = Vec::new();
    let mut rejected = Vec::new();
    for (reviewer, r) in latest {
        let reject = |reason: String| Rejected {
            reviewer: reviewer.to_string(),
            at: r.at,
            reason,
        };
        let reason = if r.bot {
            Some("bots never count".to_string())
        } else if r.state == ReviewState::ChangesRequested {
            Some("latest review requests changes".to_string())
        } else if r.state == ReviewState::Dismissed {
            Some("approval was dismissed".to_string())
        } else if reviewer == subject.author {
            Some("the author cannot approve their own change".to_string())
        } else if reviewer == subject.last_pusher {
            Some("the last pusher cannot approve".to_string())
        } else if subject.authors.iter().any(|a| a == reviewer) {
            Some("authored or committed a commit of this change".to_string())
        } else if !subject.digests.iter().all(|(k, d)| r.digests.get(k) == Some(d)) {
            Some("approved different content (digests differ from what is being promoted)".to_string())
        } else if subject.not_before.is_some_and(|t| r.at < t) {
            Some("given before the previous ring finished; this ring needs a fresh approval".to_string())
        } else {
            None
        };
        if let Some(reason) = reason {
            rejected.push(reject(reason));
            continue;
        }
        let open_seconds = req.approvals > 1 && req.approver_groups.len() == 1;
        let groups: Vec<String> = if req.approver_groups.is_empty() || open_seconds {
            let mut g = members.groups_of(reviewer);
            // The lead group first, so the explanation shows it.
            g.sort_by_key(|x| Some(x) != req.approver_groups.first());
            g
        } else {
            req.approver_groups
                .iter()
                .filter(|g| members.is_member(reviewer, g))
                .cloned()
                .collect()
        };
        if groups.is_empty() {
            let wanted = if req.approver_groups.is_empty() {
                "any approver group".to_string()
            } else {
                req.approver_groups.join(", ")
            };
            rejected.push(reject(format!("not a member of {wanted}")));
            continue;
        }
        counted.push(Counted {
            reviewer: reviewer.to_string(),
            at: r.at,
            groups,
        });
    }
    let n = counted.len() as u32;
    let lead = (req.approvals > 1).then(|| req.approver_groups.first()).flatten();
    let lead_ok = lead.is_none_or(|g| counted.iter().any(|c| c.groups.contains(g)));
    let satisfied = n >= req.approvals && lead_ok;
    let missing = if satisfied {
        String::new()
    } else if n < req.approvals {
        let from = if req.approver_groups.is_empty() {
            "any approver group".to_string()
        } else {
            req.approver_groups.join(" or ")
        };
        let lead_note = lead
            .filter(|_| !lead_ok)
            .map(|g| format!(", at least one from {g}"))
            .unwrap_or_default();
        format!("{} of {} approvals from {from}{lead_note}", n, req.approvals)
    } else {
        format!(
            "one approval must come from {}",
            lead.map(String::as_str).unwrap_or("the first group")
        )
    };
    ApprovalResult {
        satisfied,
        required: req.approvals,
        counted,
        rejected,
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(min: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap() + chrono::Duration::minutes(min)
    }

    fn digests(d: &str) -> BTreeMap<String, Option<Digest>> {
        [(
            "baseline/corp-ios".to_string(),
            Some(Digest::from_canonical_bytes(d.as_bytes())),
        )]
        .into()
    }

    fn review(who: &str, state: ReviewState, at: i64, d: &str) -> Review {
        Review {
            reviewer: who.into(),
            state,
            at: t(at),
            digests: digests(d),
            bot: false,
        }
    }

    fn members() -> StaticMembership {
        StaticMembership(
            [
                ("mdm-security".to_string(), ["sec1", "sec2"].map(String::from).into()),
                (
                    "mdm-ios".to_string(),
                    ["ios1", "ios2", "alice"].map(String::from).into(),
                ),
            ]
            .into(),
        )
    }

    fn req(n: u32, groups: &[&str]) -> Requirements {
        Requirements {
            approvals: n,
            approver_groups: groups.iter().map(|g| g.to_string()).collect(),
            window: None,
            soak_multiplier: 1.0,
            fresh_approval_per_ring: false,
            on_gate_failure: crate::risk::GateFailure::Halt,
        }
    }

    fn eval(req: &Requirements, reviews: &[Review], not_before: Option<DateTime<Utc>>) -> ApprovalResult {
        let d = digests("v2");
        let subject = Subject {
            author: "alice",
            last_pusher: "pusher",
            authors: &[],
            digests: &d,
            not_before,
        };
        evaluate(req, reviews, &subject, &members())
    }

    #[test]
    fn t3_needs_two_with_one_from_security() {
        let r = req(2, &["mdm-security", "mdm-ios"]);
        let two_ios = [
            review("ios1", ReviewState::Approved, 1, "v2"),
            review("ios2", ReviewState::Approved, 2, "v2"),
        ];
        let res = eval(&r, &two_ios, None);
        assert!(!res.satisfied);
        assert_eq!(res.counted.len(), 2);
        assert!(res.missing.contains("mdm-security"), "{}", res.missing);
        let ok = [
            review("ios1", ReviewState::Approved, 1, "v2"),
            review("sec1", ReviewState::Approved, 2, "v2"),
        ];
        assert!(eval(&r, &ok, None).satisfied);
    }

    #[test]
    fn each_rejection_says_why() {
        let r = req(1, &["mdm-ios"]);
        let mut bot = review("ios2", ReviewState::Approved, 1, "v2");
        bot.bot = true;
        let reviews = [
            review("alice", ReviewState::Approved, 1, "v2"),
            review("pusher", ReviewState::Approved, 1, "v2"),
            review("ios1", ReviewState::Approved, 1, "v1"),
            bot,
            review("sec1", ReviewState::Approved, 1, "v2"),
        ];
        let res = eval(&r, &reviews, None);
        assert!(!res.satisfied);
        let reasons: BTreeMap<&str, &str> = res
            .rejected
            .iter()
            .map(|x| (x.reviewer.as_str(), x.reason.as_str()))
            .collect();
        assert!(reasons["alice"].contains("author"));
        assert!(reasons["pusher"].contains("last pusher"));
        assert!(reasons["ios1"].contains("digests differ"));
        assert!(reasons["ios2"].contains("bots"));
        assert!(reasons["sec1"].contains("not a member of mdm-ios"));
    }

    #[test]
    fn a_later_request_for_changes_or_dismissal_revokes() {
        let r = req(1, &["mdm-ios"]);
        let revoked = [
            review("ios1", ReviewState::Approved, 1, "v2"),
            review("ios1", ReviewState::ChangesRequested, 2, "v2"),
        ];
        assert!(!eval(&r, &revoked, None).satisfied);
        let dismissed = [
            review("ios1", ReviewState::Approved, 1, "v2"),
            review("ios1", ReviewState::Dismissed, 2, "v2"),
        ];
        assert!(!eval(&r, &dismissed, None).satisfied);
        let comment_after = [
            review("ios1", ReviewState::Approved, 1, "v2"),
            review("ios1", ReviewState::Commented, 2, "v2"),
        ];
        assert!(eval(&r, &comment_after, None).satisfied, "a comment does not revoke");
        let reapproved = [
            review("ios1", ReviewState::ChangesRequested, 1, "v2"),
            review("ios1", ReviewState::Approved, 2, "v2"),
        ];
        assert!(eval(&r, &reapproved, None).satisfied);
    }

    #[test]
    fn fresh_approval_per_ring() {
        let r = req(1, &["mdm-ios"]);
        let old = [review("ios1", ReviewState::Approved, 1, "v2")];
        let res = eval(&r, &old, Some(t(5)));
        assert!(!res.satisfied);
        assert!(res.rejected[0].reason.contains("fresh approval"));
        let fresh = [review("ios1", ReviewState::Approved, 6, "v2")];
        assert!(eval(&r, &fresh, Some(t(5))).satisfied);
    }

    #[test]
    fn t3_without_owners_takes_security_plus_any_approver() {
        let r = req(2, &["mdm-security"]);
        let ok = [
            review("ios1", ReviewState::Approved, 1, "v2"),
            review("sec1", ReviewState::Approved, 2, "v2"),
        ];
        let res = eval(&r, &ok, None);
        assert!(res.satisfied, "{res:?}");
        let no_sec = [
            review("ios1", ReviewState::Approved, 1, "v2"),
            review("ios2", ReviewState::Approved, 2, "v2"),
        ];
        let res = eval(&r, &no_sec, None);
        assert!(!res.satisfied);
        assert!(res.missing.contains("mdm-security"), "{}", res.missing);
    }

    #[test]
    fn any_group_when_none_listed_and_zero_needs_nothing() {
        let r = req(1, &[]);
        assert!(eval(&r, &[review("sec1", ReviewState::Approved, 1, "v2")], None).satisfied);
        let res = eval(&r, &[review("stranger", ReviewState::Approved, 1, "v2")], None);
        assert!(res.rejected[0].reason.contains("any approver group"));
        assert!(eval(&req(0, &[]), &[], None).satisfied);
    }
}
