//! What the fleet reports, and what it means (DESIGN 8).
//!
//! - [`report`] parses and validates device reports, report by report,
//!   within the body and count limits.
//! - [`resolved`] is what a ring should run, with content.
//! - [`fleet`] keeps the latest state of every device in a compact in-memory
//!   index, computes findings (drift, failures, stale check-ins, unknown
//!   baselines) with exceptions applied, and measures ring health for gates.

pub mod fleet;
pub mod report;
pub mod resolved;

pub use report::{DeviceReport, REPORT_SCHEMA};
