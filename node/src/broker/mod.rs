//! Brokers carry published messages between nodes.
//!
//! The publish API hands every accepted message to the broker, which stores it where
//! the channel keeps history and spreads it to every node, this one included; each
//! node's hub then fans it out to local connections. Local delivery goes through the
//! broker too, so that every node delivers a channel's messages in one order, the
//! order of their offsets: a client that resumes after the last offset it saw misses
//! nothing. The embedded [`memory`] broker serves a single node with no set-up; a Redis
//! Cluster broker implements the same trait for many.

pub mod memory;
pub mod redis;
mod redis_coalesce;
pub mod wire;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::channels::ChannelConfig;
pub use crate::coalesce::window::Hold;
use crate::message::{Message, Offset, Topic};

/// A boxed future, so brokers can sit behind `dyn Broker`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Messages replayed from history.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// Messages after the requested offset, oldest first.
    pub messages: Vec<Message>,
    /// Whether nothing after the requested offset was trimmed away.
    pub recovered: bool,
}

/// A message the broker accepted.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The message, with its offset when the channel keeps history.
    pub message: Message,
    /// Local connections it was queued to by the time the publish resolved.
    pub delivered_locally: usize,
}

/// Trailing-window messages taken for delivery.
#[derive(Debug, Clone, Default)]
pub struct Taken {
    /// The latest message of every closed window (and of expired flush leases).
    pub messages: Vec<Message>,
    /// When the channel's next open window ends (broker clock, ms), if any.
    pub next_due_ms: Option<u64>,
}

/// Broker failures, surfaced to publishers as 503.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The backing store cannot be reached; nothing was stored.
    #[error("message broker unavailable: {0}")]
    Unavailable(String),
}

/// The broker's view of its own health, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Whether publishes can currently be accepted.
    pub healthy: bool,
    /// A short explanation.
    pub detail: String,
}

/// Stores and spreads messages between nodes.
pub trait Broker: Send + Sync + 'static {
    /// A short name for logs and `/readyz` ("memory", "redis").
    fn name(&self) -> &'static str;

    /// Stores `message` (when the channel keeps history) and makes it reach every
    /// node, this one's hub included, in offset order. Resolves once the message is
    /// accepted.
    fn publish<'a>(
        &'a self,
        message: Message,
        channel: &'a ChannelConfig,
    ) -> BoxFuture<'a, Result<Accepted, BrokerError>>;

    /// Declares that a local connection needs `topic`. Reference-counted.
    fn subscribe(&self, topic: Topic) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Drops one reference taken by [`Broker::subscribe`].
    fn unsubscribe(&self, topic: Topic);

    /// Current health.
    fn health(&self) -> Health;

    /// Messages of `topic` after `since` (all kept ones when `None`), at most the
    /// channel's capacity, oldest first.
    fn history<'a>(
        &'a self,
        topic: &'a Topic,
        channel: &'a ChannelConfig,
        since: Option<Offset>,
    ) -> BoxFuture<'a, Result<Replay, BrokerError>>;

    /// The offset up to which `user` has received (or acknowledged) `topic`.
    fn load_cursor<'a>(
        &'a self,
        topic: &'a Topic,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Option<Offset>, BrokerError>>;

    /// Moves `user`'s cursor on `topic` forward to `offset` (never backwards); it
    /// expires with the channel's history.
    fn store_cursor<'a>(
        &'a self,
        topic: &'a Topic,
        user: &'a str,
        offset: Offset,
        channel: &'a ChannelConfig,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Stores `record` under idempotency key `key` of `channel` for `ttl`, unless a
    /// record is already there: then nothing changes and that record is returned.
    /// Atomic across nodes: of two claims of one key, exactly one gets `None`.
    fn claim_idempotency_key<'a>(
        &'a self,
        channel: &'a str,
        key: &'a str,
        record: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<String>, BrokerError>>;

    /// Replaces the record of a key this node claimed, keeping it for `ttl`.
    fn settle_idempotency_key<'a>(
        &'a self,
        channel: &'a str,
        key: &'a str,
        record: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Forgets a key whose publish failed, so that a retry publishes.
    fn release_idempotency_key<'a>(
        &'a self,
        channel: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Leading-edge coalescing: whether a message of coalescing `key` on `channel`
    /// opens a window of `window` (deliver it) or falls in an open one (drop it).
    /// Atomic across nodes.
    fn coalesce_lead<'a>(
        &'a self,
        channel: &'a str,
        key: &'a str,
        window: std::time::Duration,
    ) -> BoxFuture<'a, Result<bool, BrokerError>>;

    /// Trailing-edge coalescing: makes `message` the latest of `key`'s window on
    /// `channel`, opening one of `window` if none is open. Returns what happened and
    /// how long until the window ends.
    fn coalesce_hold<'a>(
        &'a self,
        channel: &'a str,
        key: &'a str,
        message: &'a Message,
        window: std::time::Duration,
    ) -> BoxFuture<'a, Result<(Hold, std::time::Duration), BrokerError>>;

    /// Takes the latest messages of `channel`'s closed windows (of all its windows
    /// when `all`) for delivery. Exactly one caller takes each; a taken message stays
    /// leased until [`Broker::coalesce_done`], and is handed out again if that does not
    /// come within `lease` (its node died mid-flush).
    fn coalesce_take<'a>(
        &'a self,
        channel: &'a str,
        all: bool,
        lease: std::time::Duration,
    ) -> BoxFuture<'a, Result<Taken, BrokerError>>;

    /// Ends the lease of a taken message: it was published.
    fn coalesce_done<'a>(
        &'a self,
        channel: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Channels holding windows that should have closed more than `grace` ago: their
    /// node may have died. Empty on a single-node broker.
    fn coalesce_overdue(
        &self,
        grace: std::time::Duration,
    ) -> BoxFuture<'_, Result<Vec<String>, BrokerError>>;
}
