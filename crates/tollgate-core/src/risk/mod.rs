//! Risk classification of changes (DESIGN 3).
//!
//! Every change (a baseline, an exception or a governance file) becomes one
//! [`PolicyInput`] document; a Rego policy turns it into a [`RiskDecision`]:
//! a tier 0..=3, the reasons for it, what a promotion requires (approvals,
//! approver groups, window, soak, fresh approval per ring), whether a rollback
//! would undo it, and violations that forbid promoting it at all.
//!
//! The default policy is `policies/risk.rego`, embedded in the binary; a
//! governed repo may carry its own `policy/*.rego` instead
//! (`tollgate_policy::PolicyEngine::from_sources`). Which policy judges a change is the
//! caller's business: DESIGN 3 requires the one of the base revision, so a
//! change cannot loosen its own review.
//!
//! The policy must give the same decision under regorus (what Tollgate runs)
//! and OPA; `tests/policy.rs` checks the builtin policy against OPA built from
//! its Go module (`scripts/opa.sh`).
//!
//! Fail closed: an error from the engine (parse, missing rule, undefined or
//! malformed decision) is a [`RiskError`], and [`RiskDecision::refused`] is
//! the T3, unpromotable decision to act on in its place.

pub mod decision;
pub mod input;

pub use decision::{
    validate_decision, GateFailure, Requirements, RiskDecision, RiskError, RiskPolicy, DECISION_PACKAGE, DECISION_RULE,
    MAX_TIER,
};
pub use input::{
    BlastRadius, CatalogInput, ChangeInput, ChangeKind, ChangeOp, EffectiveInput, ExceptionInput, ExemptedSettingInput,
    FleetInput, PolicyInput, SettingDirection, SettingInput, SettingOp, TargetsInput,
};
