//! Herald operator: turns `PushCluster` and `Channel` resources into running,
//! correctly configured Herald nodes, and scales them by connection count.
//!
//! Data flows one way: custom resource → desired objects ([`resources`]) → server-side
//! apply ([`controller`]) → status. `ARCHITECTURE.md` walks the path.
//!
//! - [`crd`]: the `PushCluster` and `Channel` resources; [`crdgen`] renders them.
//! - [`resources`]: desired objects as pure functions of the resources;
//!   [`patterns`]: which pattern Channels a channel file can hold.
//! - [`controller`]: the two reconcilers, their stores and watch triggers.
//! - [`stats`] (heartbeats and broker health from Redis), [`scaling`] (replicas and
//!   pod-deletion costs), [`secrets`] (referenced Secrets, read with clear errors).
//! - [`leader`] (Lease election), [`error`] (the reconcile error), [`metrics`].

pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod patterns;
pub mod resources;
pub mod scaling;
pub mod secrets;
pub mod stats;
