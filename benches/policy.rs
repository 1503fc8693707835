//! Risk policy evaluation per change (regorus), on the inputs of
//! `benches/opa/inputs.json`: a one-setting tightening, a 20-setting mixed
//! change and a governance change. The OPA peer (`benches/opa`, prepared
//! evaluation) reads the same file, so the two are directly comparable:
//!
//! ```text
//! cargo bench --bench policy
//! (cd benches/opa && go run . inputs.json)
//! ```

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use serde::Deserialize;
use tollgate::risk::{PolicyEngine, PolicyInput};

#[derive(Deserialize)]
struct NamedInput {
    name: String,
    input: PolicyInput,
}

fn inputs() -> Vec<NamedInput> {
    serde_json::from_str(include_str!("opa/inputs.json")).expect("benches/opa/inputs.json holds PolicyInputs")
}

fn evaluate(c: &mut Criterion) {
    let mut engine = PolicyEngine::builtin().expect("builtin policy compiles");
    let mut group = c.benchmark_group("risk_policy_evaluate");
    for NamedInput { name, input } in inputs() {
        // A decision, not an error, or the numbers would mean nothing.
        engine.evaluate(&input).expect("builtin policy decides");
        group.bench_function(name.as_str(), |b| {
            b.iter(|| engine.evaluate(black_box(&input)).unwrap())
        });
    }
    group.finish();
}

fn compile(c: &mut Criterion) {
    c.bench_function("risk_policy_compile_builtin", |b| {
        b.iter(|| PolicyEngine::builtin().unwrap())
    });
}

criterion_group!(benches, evaluate, compile);
criterion_main!(benches);
