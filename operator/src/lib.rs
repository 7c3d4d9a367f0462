//! Herald operator: turns `PushCluster` and `Channel` resources into running,
//! correctly configured Herald nodes, and scales them by connection count.
//!
//! Data flows one way: custom resource → desired objects ([`resources`]) → server-side
//! apply ([`controller`]) → status.

pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod resources;
pub mod scaling;
pub mod secrets;
pub mod stats;
