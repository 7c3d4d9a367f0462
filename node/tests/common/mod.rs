//! The shared node-process fixture (see `herald_e2e::fixture::node`).

pub use herald_e2e::fixture::node::*;
