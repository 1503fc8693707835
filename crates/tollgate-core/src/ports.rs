//! The ports through which the domain meets the outside world. Adapters
//! implement them in crates of their own; tests implement them with fakes.
//!
//! Two more live beside the types they speak of:
//! [`Revisions`](crate::revision::Revisions) (a revision's documents and
//! changed paths) and [`RiskPolicy`](crate::risk::RiskPolicy) (a change's
//! risk decision).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::ids::CommitSha;
use crate::promotion::{GateReading, Membership};

/// Where the time comes from: the system's clock in production, a clock a
/// test moves by hand everywhere else. Every decision takes its `now` from
/// one of these, never from the system directly.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Any `Fn() -> DateTime<Utc>` is a clock.
impl<F: Fn() -> DateTime<Utc> + Send + Sync> Clock for F {
    fn now(&self) -> DateTime<Utc> {
        self()
    }
}

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;

/// What devices report about a ring, for its gate. Until devices report,
/// [`NoDevices`] answers: no evidence, so no gate passes.
pub trait RingHealth: Send + Sync {
    fn reading(&self, ring: &str, revision: &CommitSha, since: DateTime<Utc>) -> GateReading;

    /// Called once a new desired state of `ring`, published at `at`, is
    /// committed: the moment to take the reference the gate compares with.
    fn published(&self, _ring: &str, _at: DateTime<Utc>) {}
}

/// No devices report: every gate reads "no data" and stays shut.
pub struct NoDevices;

impl RingHealth for NoDevices {
    fn reading(&self, _: &str, _: &CommitSha, _: DateTime<Utc>) -> GateReading {
        GateReading::NoData {
            reason: "no reporting devices".into(),
        }
    }
}

/// Why the directory could not answer.
#[derive(Debug, thiserror::Error)]
#[error("the directory could not say who is in {group}: {message}")]
pub struct DirectoryError {
    pub group: String,
    pub message: String,
}

/// Who is in which approver group, asked at the moment a decision is made
/// (membership is never frozen at plan time). A directory that cannot
/// answer fails the decision: approvals are never counted on missing facts.
pub trait Directory: Send + Sync {
    /// The membership the decision at hand is judged by.
    fn membership(&self, groups: &[String]) -> Result<Arc<dyn Membership>, DirectoryError>;
}
