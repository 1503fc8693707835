//! The risk policy engine: Rego evaluated with regorus, behind the core's
//! [`RiskPolicy`] port.
//!
//! A policy is compiled once ([`PolicyEngine::builtin`] or
//! [`PolicyEngine::from_sources`]); each evaluation only sets the input and
//! evaluates `data.tollgate.risk.decision`, and the answer is validated
//! ([`validate_decision`]) before anyone acts on it.

use tollgate_core::planning::PolicySource;
use tollgate_core::risk::{
    validate_decision, PolicyInput, RiskDecision, RiskError, RiskPolicy, DECISION_PACKAGE, DECISION_RULE,
};
use tollgate_core::snapshot::Snapshot;

/// Path of the builtin policy in this project (also its name in errors).
pub const BUILTIN_POLICY_PATH: &str = "policies/risk.rego";

/// Text of the builtin policy.
pub const BUILTIN_POLICY: &str = include_str!("../../../policies/risk.rego");

/// A compiled risk policy, ready to evaluate changes.
///
/// Evaluation takes `&mut self` (regorus keeps per-evaluation state in the
/// engine); clone the engine to evaluate on several threads.
#[derive(Debug, Clone)]
pub struct PolicyEngine {
    engine: regorus::Engine,
    rule: String,
}

impl PolicyEngine {
    /// The policy this project ships (`policies/risk.rego`).
    pub fn builtin() -> Result<Self, RiskError> {
        Self::from_sources(&[(BUILTIN_POLICY_PATH.to_owned(), BUILTIN_POLICY.to_owned())])
    }

    /// A policy made of the given `(path, rego text)` modules, e.g. a governed
    /// repo's `policy/*.rego`. One of them must define
    /// `data.tollgate.risk.decision`.
    pub fn from_sources(sources: &[(String, String)]) -> Result<Self, RiskError> {
        if sources.is_empty() {
            return Err(RiskError::NoSources);
        }
        let mut engine = regorus::Engine::new();
        // Rego v1 syntax, as OPA 1.x; builtin errors abort evaluation (OPA's
        // --strict-builtin-errors) so a policy cannot silently lose a violation.
        engine.set_rego_v0(false);
        engine.set_strict_builtin_errors(true);
        for (path, text) in sources {
            engine
                .add_policy(path.clone(), text.clone())
                .map_err(|e| RiskError::Parse {
                    path: path.clone(),
                    source: e.into(),
                })?;
        }
        let missing = || RiskError::MissingDecision {
            rule: DECISION_RULE.to_owned(),
        };
        let packages = engine
            .get_packages()
            .map_err(|e| RiskError::Compile { source: e.into() })?;
        if !packages.iter().any(|p| p == DECISION_PACKAGE) {
            return Err(missing());
        }
        // Compiling for the entry point runs regorus's analysis once, up front,
        // and checks that the rule exists; evaluations reuse the result.
        if let Err(e) = engine.compile_with_entrypoint(&DECISION_RULE.into()) {
            return Err(if e.to_string().contains("not a valid rule path") {
                missing()
            } else {
                RiskError::Compile { source: e.into() }
            });
        }
        Ok(PolicyEngine {
            engine,
            rule: DECISION_RULE.to_owned(),
        })
    }

    /// Evaluates the policy for one change and validates the decision.
    pub fn evaluate(&mut self, input: &PolicyInput) -> Result<RiskDecision, RiskError> {
        let input = serde_json::to_value(input).map_err(|source| RiskError::Input { source })?;
        validate_decision(self.evaluate_raw(&input)?)
    }

    /// Like [`evaluate`](Self::evaluate) for an input given as JSON; returns
    /// the validated decision as JSON.
    pub fn evaluate_json(&mut self, input: &serde_json::Value) -> Result<serde_json::Value, RiskError> {
        let decision = validate_decision(self.evaluate_raw(input)?)?;
        serde_json::to_value(decision).map_err(|source| RiskError::Input { source })
    }

    /// The policy's output exactly as it returned it, unvalidated: for parity
    /// checks against other Rego engines and for debugging a policy. Only an
    /// undefined decision is an error here.
    pub fn evaluate_raw(&mut self, input: &serde_json::Value) -> Result<serde_json::Value, RiskError> {
        self.engine.set_input(regorus::Value::from(input.clone()));
        let value = self
            .engine
            .eval_rule(self.rule.clone())
            .map_err(|e| RiskError::Evaluation { source: e.into() })?;
        if value == regorus::Value::Undefined {
            return Err(RiskError::Undefined {
                rule: self.rule.clone(),
            });
        }
        serde_json::to_value(&value).map_err(|source| RiskError::Input { source })
    }
}

impl RiskPolicy for PolicyEngine {
    fn evaluate(&mut self, input: &PolicyInput) -> Result<RiskDecision, RiskError> {
        PolicyEngine::evaluate(self, input)
    }
}

/// The engine for changes governed by `governing`: its `policy/*.rego`, or
/// the builtin policy when it has none (DESIGN 3: the base revision's
/// policy judges a change).
pub fn policy_engine(governing: &Snapshot) -> Result<PolicyEngine, RiskError> {
    if governing.policies.is_empty() {
        return PolicyEngine::builtin();
    }
    let sources: Vec<(String, String)> = governing
        .policies
        .values()
        .map(|p| (p.path.to_string(), p.doc.clone()))
        .collect();
    PolicyEngine::from_sources(&sources)
}

/// Compiles the policy of each governing revision it is asked for
/// ([`policy_engine`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct RegoPolicies;

impl PolicySource for RegoPolicies {
    fn policy_for(&mut self, governing: &Snapshot) -> Result<Box<dyn RiskPolicy>, RiskError> {
        Ok(Box::new(policy_engine(governing)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<PolicyEngine>();
    }
}
