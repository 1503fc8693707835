//! Tollgate's domain: what a baseline is, how two revisions differ, what a
//! change needs before it may reach devices, and how a promotion moves.
//!
//! Everything here is plain Rust over plain data; the compiler keeps it so,
//! since this crate depends on no adapter (no git, database, HTTP or policy
//! engine). Where the domain needs the outside world it names a port
//! ([`ports`], [`revision::Revisions`], [`risk::RiskPolicy`]) and the
//! adapter crates implement it.

pub mod audit;
pub mod catalog;
pub mod desired;
pub mod devices;
pub mod diff;
pub mod digest;
pub mod errors;
pub mod explain;
pub mod format;
pub mod ids;
pub mod json;
pub mod plan;
pub mod planning;
pub mod ports;
pub mod promotion;
pub mod render;
pub mod revision;
pub mod risk;
pub mod snapshot;
pub mod tree;
