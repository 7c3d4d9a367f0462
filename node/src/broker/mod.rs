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
pub mod wire;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::channels::ChannelConfig;
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
}
