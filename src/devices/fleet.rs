//! The fleet index: latest state per device, findings, ring health.
