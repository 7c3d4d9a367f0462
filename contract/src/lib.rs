//! What `herald-node` and `herald-operator` must agree on, written once.
//!
//! The operator renders configuration and reads Redis that the node reads and writes;
//! when both sides use these types and functions, a disagreement is a compile error
//! (or a failing test here) instead of a cluster that silently misbehaves.
//!
//! - [`channels`]: the channel file (`HERALD_CHANNELS`), its defaults and the legacy
//!   default channels.
//! - [`channel_name`]: which channel names are valid, and the same rule as a pattern
//!   for the CRD.
//! - [`channel_pattern`]: parameterized channel names (`dept:{dept}`) and their
//!   claim bindings.
//! - [`schemas`]: per-type JSON Schemas of a channel, compiled with the same limits.
//! - [`keys`]: the Redis key layout.
//! - [`heartbeat`]: the node heartbeat record in Redis and the operator's view of it.
//! - [`settings`]: the node's `HERALD_*` environment variable names.

#[cfg(any(test, feature = "arbitrary"))]
pub mod arbitrary;
pub mod channel_name;
pub mod channel_pattern;
pub mod channels;
pub mod heartbeat;
pub mod keys;
pub mod schemas;
pub mod settings;

pub use channels::{
    Access, ChannelConfig, ChannelFile, Coalesce, CoalesceEdge, CoalesceKey, RateLimit,
};
pub use heartbeat::{NodeRecord, NodeStats};
