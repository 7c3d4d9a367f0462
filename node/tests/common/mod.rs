//! The shared node-process fixture (see `herald_testkit::node`).

pub use herald_testkit::node::*;
