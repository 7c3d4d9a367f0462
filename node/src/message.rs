//! What travels through the node: messages, their recipients, the broker topics
//! they ride on and their history offsets.
//!
//! These types sit below everything else (the hub, the brokers, sessions and the
//! publish API all speak them), so this module depends on nothing in the crate but
//! channel settings. [`DeliverySink`] is how messages flow from brokers to the hub
//! without either knowing the other.

mod offset;

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::value::RawValue;

pub use self::offset::Offset;
use crate::channels::ChannelConfig;
use crate::tags::Tags;
use crate::telemetry::propagation::TraceContext;
use crate::{ChannelName, UserId};

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
    pub offset: Option<Offset>,
    /// When the publish was accepted (Unix microseconds), for latency metrics.
    pub accepted_at_micros: u64,
    /// The trace context it was published under, when it arrived traced from another
    /// node: this node's delivery continues that trace.
    pub trace: Option<TraceContext>,
    /// The publisher's tags, which subscription filters select on (usually none).
    pub tags: Tags,
}

/// A local interest the node holds with the broker.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    /// The channel.
    pub channel: ChannelName,
    /// The user, for per-user traffic.
    pub user: Option<UserId>,
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

/// Where messages arriving from other nodes go: the hub implements it, brokers hold
/// one, so the broker layer never calls into the hub directly.
///
/// Brokers hold it as `Arc<dyn DeliverySink>`: one indirect call per message, next
/// to the serialization and per-recipient queueing that delivery does anyway; no
/// allocation or lock is added.
pub trait DeliverySink: Send + Sync + 'static {
    /// Queues `message` to every local recipient; returns how many it reached.
    fn deliver(&self, message: &Message) -> usize;
}

/// Microseconds since the Unix epoch: the clock of [`Message::accepted_at_micros`].
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
