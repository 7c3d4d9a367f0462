//! Brokers carry published messages between nodes.
//!
//! The publish API hands every accepted message to the broker, which stores it where
//! the channel keeps history and spreads it to the other nodes; each node's hub then
//! fans it out to local connections. The embedded [`memory`] broker serves a single
//! node with no set-up; a Redis Cluster broker implements the same trait for many.

pub mod memory;
pub mod offset;
pub mod redis;
pub mod wire;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::value::RawValue;

use crate::channels::ChannelConfig;
use crate::telemetry::propagation::TraceContext;
use crate::{ChannelName, UserId};

/// A boxed future, so brokers can sit behind `dyn Broker`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who a message is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Every subscriber of the channel.
    All,
    /// Only this user's connections subscribed to the channel.
    User(UserId),
}

/// A message accepted for delivery.
#[derive(Debug, Clone)]
pub struct Message {
    /// Unique id, chosen when the message was accepted.
    pub id: Arc<str>,
    /// The channel it was published to.
    pub channel: ChannelName,
    /// The client-visible `type`.
    pub kind: Arc<str>,
    /// The client-visible `data` object, kept as raw JSON.
    pub data: Arc<RawValue>,
    /// The recipients.
    pub target: Target,
    /// Position in the channel's history, when it keeps one.
    pub offset: Option<Arc<str>>,
    /// When the publish was accepted (Unix microseconds), for latency metrics.
    pub accepted_at_micros: u64,
    /// The trace context it was published under, when it arrived traced from another
    /// node: this node's delivery continues that trace.
    pub trace: Option<TraceContext>,
}

/// A local interest the node holds with the broker.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    /// The channel.
    pub channel: ChannelName,
    /// The user, for per-user traffic.
    pub user: Option<UserId>,
}

/// Messages replayed from history.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// Messages after the requested offset, oldest first.
    pub messages: Vec<Message>,
    /// Whether nothing after the requested offset was trimmed away.
    pub recovered: bool,
}

impl Topic {
    /// The topic (and history stream) a message travels on: per user on per-user
    /// channels, one per channel otherwise (user-targeted messages there carry their
    /// target and are filtered by each node's hub).
    pub fn of(message: &Message, channel: &ChannelConfig) -> Self {
        let user = match &message.target {
            Target::User(user) if channel.is_per_user() => Some(user.clone()),
            _ => None,
        };
        Self {
            channel: message.channel.clone(),
            user,
        }
    }

    /// The topic a channel's messages travel on for a user: per-user channels have
    /// one topic per user, every other channel one topic for all.
    pub fn for_channel(channel: &ChannelName, per_user: bool, user: Option<&UserId>) -> Self {
        Self {
            channel: channel.clone(),
            user: if per_user { user.cloned() } else { None },
        }
    }
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
    /// other node. Resolves once the message is accepted; returns it with its offset.
    fn publish<'a>(
        &'a self,
        message: Message,
        channel: &'a ChannelConfig,
    ) -> BoxFuture<'a, Result<Message, BrokerError>>;

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
        since: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Replay, BrokerError>>;

    /// The offset up to which `user` has received (or acknowledged) `topic`.
    fn load_cursor<'a>(
        &'a self,
        topic: &'a Topic,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, BrokerError>>;

    /// Moves `user`'s cursor on `topic` forward to `offset` (never backwards); it
    /// expires with the channel's history.
    fn store_cursor<'a>(
        &'a self,
        topic: &'a Topic,
        user: &'a str,
        offset: &'a str,
        channel: &'a ChannelConfig,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;
}
