//! Test support shared by Tollgate's tests and benchmarks: clocks a test
//! moves by hand, git repositories built by code, and the test databases.
//! Nothing here is used by the product.

pub mod clock;
