//! Herald end-to-end tooling.
//!
//! [`bench`] holds the `herald-bench` load tool; the binary in `src/bin` is only a thin
//! entry point so the pieces stay unit-testable as a library.

pub mod bench;
pub mod fixture;
