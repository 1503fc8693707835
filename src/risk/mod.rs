//! Risk (placeholder until written).
