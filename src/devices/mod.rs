//! Devices: what the fleet reports, what each ring should run, and the
//! difference between the two (DESIGN 8).
//!
//! - [`report`] parses and validates `POST /v1/reports` bodies, report by
//!   report, within the body and count limits.
//! - [`resolve`] turns a ring's published desired state (document revisions
//!   and digests) into the baselines and exceptions themselves, read from the
//!   git mirror: what `GET /v1/desired` serves and what drift is judged against.
//! - [`fleet`] keeps the latest state of every device in a compact in-memory
//!   index, computes findings (drift, failures, stale check-ins, unknown
//!   baselines) with exceptions applied, and measures ring health for gates.
//! - [`service`] ties them to the store, the audit log and the controller.

pub mod fleet;
pub mod report;
pub mod resolve;
pub mod service;
pub mod sim;

pub use report::{DeviceReport, REPORT_SCHEMA};
pub use resolve::{ResolvedBaseline, ResolvedException, ResolvedRing};
