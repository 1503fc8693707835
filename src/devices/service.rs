//! The devices service: ingestion, persistence, findings audit, ring health.
