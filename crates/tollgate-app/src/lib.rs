//! Tollgate's application layer: the controller that turns revisions into
//! governed promotions, planning, and the devices service. It joins the
//! domain (`tollgate-core`) to its adapters (git, the store, the policy
//! engine); the HTTP API and the command line sit on top of it.

pub mod controller;
pub mod devices;
pub mod ledger;
pub mod plan;
pub mod reconcile;
pub mod state;
