//! What a risk policy answers (DESIGN 3), and the check every answer passes.
//!
//! Whatever a policy returns is checked against the output contract before
//! anyone acts on it: a policy that is undefined for an input, or returns a
//! tier of 7, is an error, never a decision. Callers fail closed on any
//! [`RiskError`] (see [`RiskDecision::refused`]). The engine that evaluates
//! Rego is an adapter behind [`RiskPolicy`].

use std::collections::BTreeSet;
use std::error::Error as StdError;

use serde::{Deserialize, Serialize};

use super::input::PolicyInput;

/// The rule every risk policy must define.
pub const DECISION_RULE: &str = "data.tollgate.risk.decision";

/// The package that rule lives in.
pub const DECISION_PACKAGE: &str = "data.tollgate.risk";

/// Highest tier (T3, critical).
pub const MAX_TIER: u8 = 3;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a policy could not be loaded or gave no usable decision.
#[derive(Debug, thiserror::Error)]
pub enum RiskError {
    #[error("no risk policy source was given")]
    NoSources,
    #[error("risk policy {path} does not parse")]
    Parse {
        path: String,
        #[source]
        source: BoxError,
    },
    #[error("risk policy does not define {rule}")]
    MissingDecision { rule: String },
    #[error("risk policy does not compile")]
    Compile {
        #[source]
        source: BoxError,
    },
    #[error("risk policy input could not be encoded")]
    Input {
        #[source]
        source: serde_json::Error,
    },
    #[error("risk policy evaluation failed")]
    Evaluation {
        #[source]
        source: BoxError,
    },
    #[error("risk policy decision is undefined for this change ({rule} has no value)")]
    Undefined { rule: String },
    #[error("risk policy returned a malformed decision: {problem}")]
    Malformed { problem: String },
}

impl RiskError {
    fn malformed(problem: impl Into<String>) -> Self {
        RiskError::Malformed {
            problem: problem.into(),
        }
    }
}

/// A validated risk decision (DESIGN 3 output, plus `violations` and
/// `requirements.fresh_approval_per_ring`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskDecision {
    /// 0 (routine) ..= 3 (critical).
    pub tier: u8,
    /// One short sentence per contribution to the tier, in policy order.
    pub reasons: Vec<String>,
    pub requirements: Requirements,
    /// False when undoing the change would not undo its effect on devices.
    pub rollback_effective: bool,
    /// Non-empty means the change cannot be promoted at all.
    pub violations: Vec<String>,
}

/// What a promotion of the change needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    /// Number of counting approvals.
    pub approvals: u32,
    /// Groups whose members may approve; empty means any approver group. For
    /// T3 the first group (mdm-security) must supply one of the approvals.
    pub approver_groups: Vec<String>,
    /// Named window (from `tollgate.yaml`) promotions must happen in.
    pub window: Option<String>,
    /// Factor applied to each ring's configured soak time.
    pub soak_multiplier: f64,
    /// Approval must be renewed before each ring after the first.
    pub fresh_approval_per_ring: bool,
    /// What a failed ring gate leads to: a halt (the default) or, when the
    /// policy says so, also an automatic rollback of that ring.
    #[serde(default, skip_serializing_if = "GateFailure::is_halt")]
    pub on_gate_failure: GateFailure,
}

/// What the controller does when a ring's health gate fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateFailure {
    /// Halt the promotion and leave the ring as it is for on-call.
    #[default]
    Halt,
    /// Halt, and roll the ring back to the previous verified version.
    Rollback,
}

impl GateFailure {
    pub fn is_halt(&self) -> bool {
        *self == GateFailure::Halt
    }
}

impl RiskDecision {
    /// The decision a caller acts on when the policy failed: T3 with T3
    /// requirements, and a violation so the change is not promoted.
    pub fn refused(error: &RiskError) -> Self {
        let chain = crate::errors::chain(error);
        RiskDecision {
            tier: MAX_TIER,
            reasons: vec![format!("risk policy failed, treated as T3: {chain}")],
            requirements: Requirements {
                approvals: 2,
                approver_groups: vec!["mdm-security".to_owned()],
                window: Some("business-hours".to_owned()),
                soak_multiplier: 2.0,
                fresh_approval_per_ring: true,
                on_gate_failure: GateFailure::Halt,
            },
            rollback_effective: false,
            violations: vec![format!("risk policy failed: {chain}")],
        }
    }

    /// Whether the change may be promoted once its requirements are met.
    pub fn is_promotable(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The policy's output as written, before validation. Optional fields are the
/// ones this crate added to the DESIGN contract, so a policy written against
/// the bare contract still works.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDecision {
    tier: serde_json::Value,
    reasons: Vec<String>,
    requirements: RawRequirements,
    rollback_effective: bool,
    #[serde(default)]
    violations: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirements {
    approvals: serde_json::Value,
    approver_groups: Vec<String>,
    window: Option<String>,
    soak_multiplier: f64,
    #[serde(default)]
    fresh_approval_per_ring: Option<bool>,
    #[serde(default)]
    on_gate_failure: Option<String>,
}

/// A non-negative integer, accepting integral floats (`2.0`) since Rego
/// engines differ in how they print numbers.
fn whole_number(value: &serde_json::Value, field: &str) -> Result<u64, RiskError> {
    let number = value
        .as_number()
        .ok_or_else(|| RiskError::malformed(format!("{field} is {value}, not a number")))?;
    if let Some(n) = number.as_u64() {
        return Ok(n);
    }
    match number.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= u32::MAX as f64 => Ok(f as u64),
        _ => Err(RiskError::malformed(format!(
            "{field} is {number}, not a whole number >= 0"
        ))),
    }
}

/// Checks a policy's raw output against the output contract.
pub fn validate_decision(raw: serde_json::Value) -> Result<RiskDecision, RiskError> {
    let raw: RawDecision = serde_json::from_value(raw).map_err(|e| RiskError::malformed(e.to_string()))?;
    let tier = whole_number(&raw.tier, "tier")?;
    if tier > u64::from(MAX_TIER) {
        return Err(RiskError::malformed(format!("tier is {tier}, not in 0..=3")));
    }
    let tier = tier as u8;
    let approvals = whole_number(&raw.requirements.approvals, "requirements.approvals")?;
    let approvals = u32::try_from(approvals)
        .map_err(|_| RiskError::malformed(format!("requirements.approvals is {approvals}, too large")))?;
    if tier > 0 && approvals == 0 {
        return Err(RiskError::malformed(format!("tier {tier} requires no approval")));
    }
    let mut seen = BTreeSet::new();
    for group in &raw.requirements.approver_groups {
        if group.trim().is_empty() {
            return Err(RiskError::malformed("requirements.approver_groups has an empty name"));
        }
        if !seen.insert(group.as_str()) {
            return Err(RiskError::malformed(format!(
                "requirements.approver_groups lists {group} twice"
            )));
        }
    }
    if matches!(&raw.requirements.window, Some(w) if w.trim().is_empty()) {
        return Err(RiskError::malformed("requirements.window is an empty name"));
    }
    let soak = raw.requirements.soak_multiplier;
    if !soak.is_finite() || soak <= 0.0 {
        return Err(RiskError::malformed(format!(
            "requirements.soak_multiplier is {soak}, not a positive number"
        )));
    }
    let on_gate_failure = match raw.requirements.on_gate_failure.as_deref() {
        None | Some("halt") => GateFailure::Halt,
        Some("rollback") => GateFailure::Rollback,
        Some(other) => {
            return Err(RiskError::malformed(format!(
                "requirements.on_gate_failure is {other:?}, not \"halt\" or \"rollback\""
            )))
        }
    };
    if raw.reasons.iter().chain(&raw.violations).any(|r| r.trim().is_empty()) {
        return Err(RiskError::malformed("an empty reason or violation"));
    }
    Ok(RiskDecision {
        tier,
        reasons: raw.reasons,
        requirements: Requirements {
            approvals,
            approver_groups: raw.requirements.approver_groups,
            window: raw.requirements.window,
            soak_multiplier: soak,
            // DESIGN 3 asks T3 for a fresh approval per ring; a policy that
            // does not say otherwise gets exactly that.
            fresh_approval_per_ring: raw.requirements.fresh_approval_per_ring.unwrap_or(tier == MAX_TIER),
            on_gate_failure,
        },
        rollback_effective: raw.rollback_effective,
        violations: raw.violations,
    })
}

/// The port to a risk policy: one change's input in, a validated decision out.
///
/// `&mut self` because an engine may keep per-evaluation state; an
/// implementation must validate what its policy returned
/// ([`validate_decision`]) before answering.
pub trait RiskPolicy {
    fn evaluate(&mut self, input: &PolicyInput) -> Result<RiskDecision, RiskError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decision(tier: serde_json::Value) -> serde_json::Value {
        json!({"tier": tier, "reasons": ["r"],
               "requirements": {"approvals": 1, "approver_groups": [], "window": null, "soak_multiplier": 1},
               "rollback_effective": true})
    }

    #[test]
    fn bare_contract_output_gets_defaults() {
        let d = validate_decision(decision(json!(1))).unwrap();
        assert!(d.violations.is_empty());
        assert!(!d.requirements.fresh_approval_per_ring);
        assert_eq!(d.requirements.soak_multiplier, 1.0);
    }

    #[test]
    fn integral_float_tier_is_accepted_fractional_is_not() {
        assert_eq!(validate_decision(decision(json!(2.0))).unwrap().tier, 2);
        assert!(validate_decision(decision(json!(1.5))).is_err());
        assert!(validate_decision(decision(json!(-1))).is_err());
        assert!(validate_decision(decision(json!("2"))).is_err());
    }

    #[test]
    fn unknown_output_field_is_malformed() {
        let mut d = decision(json!(1));
        d["teir"] = json!(1);
        assert!(matches!(validate_decision(d), Err(RiskError::Malformed { .. })));
    }

    #[test]
    fn refused_is_t3_and_not_promotable() {
        let d = RiskDecision::refused(&RiskError::Undefined {
            rule: DECISION_RULE.into(),
        });
        assert_eq!(d.tier, 3);
        assert!(!d.is_promotable());
    }
}
