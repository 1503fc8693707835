//! Tollgate: change governance for MDM baselines kept in git.
//!
//! The `tollgate` package is the binary and this facade over the workspace
//! (`crates/`), keeping one set of paths for end-to-end tests, benchmarks
//! and anyone embedding Tollgate:
//!
//! - the domain, with no adapter dependency: `tollgate-core`;
//! - adapters: `tollgate-policy` (regorus), `tollgate-git` (git2),
//!   `tollgate-store` (SQLite, PostgreSQL);
//! - the application (planning, the controller, devices): `tollgate-app`;
//! - on top: `tollgate-http` (the API) and `tollgate-cli` (the commands).
//!
//! `docs/architecture.md` walks through them.

pub use tollgate_app::{ledger, reconcile, state};
pub use tollgate_core::{
    audit, catalog, diff, digest, errors, explain, format, ids, json, ports, promotion, render, snapshot, tree,
};
pub use tollgate_http as http;
pub use tollgate_store as store;

/// The plan of a change: the domain's judgement and the library path that
/// reads two revisions to make it.
pub mod plan {
    pub use tollgate_app::plan::*;
    pub use tollgate_core::plan::*;
    pub use tollgate_policy::policy_engine;
}

/// Risk decisions (`tollgate-core`) and the Rego engine that makes them
/// (`tollgate-policy`).
pub mod risk {
    pub use tollgate_core::risk::*;
    pub use tollgate_policy::{PolicyEngine, BUILTIN_POLICY, BUILTIN_POLICY_PATH};
}

/// Reading revisions: the core's one validation path and the git adapter.
pub mod source {
    pub use tollgate_core::revision;
    pub use tollgate_git::*;
}

/// The controller and the desired state it publishes.
pub mod controller {
    pub use tollgate_app::controller::*;
    pub use tollgate_core::desired;
}

/// Device reports and the fleet index (core), the devices service and
/// desired-state resolution (app), and the fleet simulator (cli).
pub mod devices {
    pub use tollgate_app::devices::*;
    pub use tollgate_cli::sim;
    pub use tollgate_core::devices::*;
}

/// The commands.
pub mod cli {
    pub use tollgate_cli::*;
}
