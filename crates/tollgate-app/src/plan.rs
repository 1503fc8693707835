//! Plans of a git repository's revisions: the core's one planning path
//! ([`tollgate_core::planning::plan_revision`]) over git, judged by Rego.

use chrono::{DateTime, Utc};

use tollgate_core::ids::CommitSha;
use tollgate_core::plan::Fleet;
use tollgate_core::planning::{plan_revision, PlanRequest};
pub use tollgate_core::planning::{PlanError, PlanOutcome, EMPTY_REVISION};
use tollgate_git::git::{GitError, GitRepo};
use tollgate_policy::RegoPolicies;

/// Plans `base..head` of `git` (`base` `None`: the head against nothing).
/// The policy is told the head commit's author.
pub fn plan_commits(
    git: &GitRepo,
    base: Option<&CommitSha>,
    head: &CommitSha,
    fleet: Option<&Fleet>,
    now: DateTime<Utc>,
) -> Result<PlanOutcome, PlanError<GitError>> {
    let author = git
        .log(head, 1)
        .map_err(PlanError::Read)?
        .into_iter()
        .next()
        .map(|c| c.author)
        .unwrap_or_default();
    let request = PlanRequest {
        base: base.cloned(),
        head: head.clone(),
        author,
        fleet,
        now,
    };
    plan_revision(git, &mut RegoPolicies, &request)
}
