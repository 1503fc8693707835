//! Sources (placeholder until written).
