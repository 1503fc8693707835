//! Catalogue (placeholder until written).
