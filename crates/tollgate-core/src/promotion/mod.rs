//! Governed promotion of a revision through the rings (DESIGN 6, 7).
//!
//! Domain only: approval rules, change windows and the state machine. The
//! controller feeds them facts and carries out their effects.

pub mod approvals;
pub mod machine;
pub mod window;

pub use approvals::{evaluate, ApprovalResult, Membership, Review, ReviewState, StaticMembership};
pub use machine::{
    next, BreakGlass, ChangeItem, Effect, Facts, GateReading, OperatorRequest, Phase, Promotion, PromotionKind,
    RingChanges, RingPlan,
};
