//! Devices as the controller serves them (DESIGN 8).
//!
//! - [`resolve`] turns a ring's published desired state (document revisions
//!   and digests) into the baselines and exceptions themselves, read from the
//!   git mirror: what `GET /v1/desired` serves and what drift is judged against.
//! - [`service`] ties reports and the fleet index to the store and the
//!   audit log.

pub mod resolve;
pub mod service;

pub use resolve::{ResolvedBaseline, ResolvedException, ResolvedRing};
