//! The long-running controller (`tollgate run`): configuration, the
//! reconciler that turns revisions into governed promotions, and the store
//! transitions that make it crash-safe.

pub mod config;
pub mod planning;
pub mod rollback;
pub mod service;

pub use config::{ControllerConfig, Role, TokenConfig};
pub use service::{Controller, ControllerError, StoredPromotion};
pub use tollgate_core::ports::{NoDevices, RingHealth};
