//! Tollgate: change governance for MDM baselines kept in git.
//!
//! The domain modules (`tree`, `catalog`, `format`, `diff`, `risk` input/output,
//! `plan`, `explain`) are plain Rust over plain data. Adapters (`source` for git
//! and the working tree, the regorus policy engine) sit around them, and `cli`
//! glues them to the terminal.

pub mod audit;
pub mod catalog;
pub mod cli;
pub mod controller;
pub mod devices;
pub mod diff;
pub mod digest;
pub mod explain;
pub mod format;
pub mod http;
pub mod ids;
pub mod plan;
pub mod promotion;
pub mod render;
pub mod risk;
pub mod snapshot;
pub mod source;
pub mod store;
pub mod tree;
