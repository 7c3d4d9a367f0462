//! Herald node: serves browser WebSocket connections and the publish API.
//!
//! Data flows one way: [`server`] accepts connections, each WebSocket becomes a
//! [`session`] whose [`connection::Membership`] holds its subscriptions with the
//! [`hub`] and the [`broker`], and the publish [`api`] hands [`message`]s to the
//! broker, which stores and spreads them across nodes and back into every node's
//! hub through a [`message::DeliverySink`]. `ARCHITECTURE.md` walks both paths.
//!
//! - Front door: [`server`] (accept, WebSocket upgrade), [`routes`] (the HTTP API's
//!   router), [`api`] (publish and admin handlers), [`idempotency`] (retried
//!   publishes answered once), [`coalesce`] (bursts delivered once per window), [`capped`] and [`jsondepth`] (limits enforced while
//!   parsing), [`auth`] (JWT).
//! - Connections: [`connection`] (one owner per connection), [`session`] (frame loop,
//!   subscribe and recovery, delivery cursors), [`protocol`] (the browser protocol),
//!   [`ratelimit`].
//! - Fan-out: [`hub`] (local connections and subscriptions), [`message`] (messages,
//!   targets, topics, offsets), [`broker`] (embedded or Redis Cluster), [`channels`]
//!   (the channel registry).
//! - The process: [`node`] (shared state), [`config`], [`presence`] (heartbeats in
//!   Redis), [`background`] (ordered shutdown of background tasks), [`metrics`],
//!   [`dev`] (`--dev`), [`fuzzing`] (entry points for `fuzz/`).
pub mod api;
#[cfg(test)]
use herald_contract::arbitrary;
pub mod auth;
pub mod background;
pub mod broker;
pub mod capped;
pub mod channels;
pub mod claims;
pub mod coalesce;
pub mod config;
pub mod connection;
pub mod dev;
pub mod filter;
#[doc(hidden)]
pub mod fuzzing;
pub mod hub;
pub mod idempotency;
pub mod jsondepth;
pub mod message;
pub mod metrics;
pub mod node;
pub mod presence;
pub mod protocol;
pub mod ratelimit;
pub mod routes;
pub mod server;
pub mod session;
pub mod tags;
#[cfg(test)]
mod testing;
/// Logs and traces, shared with the operator (the `herald-telemetry` crate).
pub use herald_telemetry as telemetry;

/// User identifiers compare as strings everywhere (`42` and `"42"` are the same user).
pub type UserId = std::sync::Arc<str>;
/// Channel names are shared, immutable strings.
pub type ChannelName = std::sync::Arc<str>;
