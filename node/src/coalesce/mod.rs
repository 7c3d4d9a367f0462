//! Coalescing: bursts of one kind of message reach subscribers as one message per
//! window (a channel's `coalesce` setting).
//!
//! It happens at publish time, once for the cluster, not per subscriber, so the
//! publish answer can say what became of the message. The rules are in [`window`];
//! the broker keeps the windows (Redis for a cluster: publishes of one key may reach
//! any node). Leading edge delivers a window's first message and drops the rest.
//! Trailing edge holds each message as its key's latest; the node that opened the
//! window publishes the latest when the window closes, every node flushes the
//! windows it opened at once when it starts draining, and every node checks every
//! [`RECOVERY_INTERVAL`] for windows overdue by more than [`GRACE`], whose node
//! died: a held message is delivered at most `GRACE + RECOVERY_INTERVAL` after its
//! window's end even then (plus [`LEASE`] if its node died mid-flush).

pub mod window;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::broker::{BrokerError, Hold};
use crate::channels::{ChannelConfig, Coalesce, CoalesceEdge, CoalesceKey};
use crate::message::{unix_micros, Message, Target};
use crate::node::Node;
use crate::ChannelName;

/// How long a node may take to publish a window's message it took before another
/// node takes it again (a message may then be delivered twice, with one id).
pub const LEASE: Duration = Duration::from_secs(2);

/// How often every node checks for windows whose node died.
pub const RECOVERY_INTERVAL: Duration = Duration::from_millis(500);

/// How long after a window's end its own node has to flush it before others do.
pub const GRACE: Duration = Duration::from_millis(500);

/// Most messages one take hands out (the Redis scripts' batch).
pub const TAKE_BATCH: usize = 1000;

/// What coalescing made of a publish, as the publish answer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Coalesced {
    /// Leading edge: a window of its key was open; the message is not delivered and
    /// not stored.
    Dropped,
    /// Leading edge, a message naming several users: dropped for some of them,
    /// delivered to the others.
    PartlyDropped,
    /// Trailing edge: held as its key's latest; delivered when the window closes
    /// unless a later message of the key replaces it.
    Pending,
}

/// What to do with one message (one recipient's share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Publish it now.
    Deliver,
    /// Do not publish it (leading edge).
    Dropped,
    /// Held for a trailing window closing in this long.
    Held(Duration),
}

/// The coalescing key of a message, or `None` when it is not coalesced. Broadcasts
/// and each user's messages have distinct keys, so a message for some recipients
/// never replaces one for others; with a tag key, each value of the tag its own.
/// Lengths prefix the variable parts, so no two different keys spell the same.
pub fn key(coalesce: &Coalesce, message: &Message) -> Option<String> {
    let kind = &message.kind;
    match (&message.target, coalesce.key) {
        (Target::All, CoalesceKey::Tag) => {
            let value = message.tags.get(coalesce.tag.as_deref()?)?;
            Some(format!("t:{}:{kind}:{value}", kind.len()))
        }
        (Target::All, _) => Some(format!("b:{}:{kind}", kind.len())),
        (Target::User(_), CoalesceKey::Type | CoalesceKey::Tag) => None,
        (Target::User(user), CoalesceKey::TypeUser) => {
            Some(format!("u:{}:{kind}:{user}", kind.len()))
        }
    }
}

/// Channels this node opened trailing windows on and has not flushed since: what
/// it flushes at once when it starts draining.
#[derive(Debug, Default)]
pub struct Coalescer {
    opened: Mutex<HashSet<ChannelName>>,
}

/// Applies `config`'s coalescing to `message`.
pub async fn decide(
    node: &Arc<Node>,
    config: &ChannelConfig,
    message: &Message,
) -> Result<Decision, BrokerError> {
    let Some((coalesce, window)) = config
        .coalesce
        .as_ref()
        .and_then(|c| c.window().map(|window| (c, window)))
    else {
        return Ok(Decision::Deliver);
    };
    let Some(key) = key(coalesce, message) else {
        return Ok(Decision::Deliver);
    };
    let channel = &message.channel;
    match coalesce.edge {
        CoalesceEdge::Leading => {
            if node.broker.coalesce_lead(channel, &key, window).await? {
                Ok(Decision::Deliver)
            } else {
                node.metrics.coalesced(&config.name, coalesce.edge.as_str());
                Ok(Decision::Dropped)
            }
        }
        CoalesceEdge::Trailing => {
            match node
                .broker
                .coalesce_hold(channel, &key, message, window)
                .await?
            {
                (Hold::Full, _) => Ok(Decision::Deliver),
                (
                    Hold::Held {
                        opened, superseded, ..
                    },
                    left,
                ) => {
                    if superseded {
                        node.metrics.coalesced(&config.name, coalesce.edge.as_str());
                    }
                    if opened {
                        schedule(node, channel.clone(), left);
                    }
                    Ok(Decision::Held(left))
                }
            }
        }
    }
}

/// Flushes `channel`'s closed windows in `after` (the window this node opened).
fn schedule(node: &Arc<Node>, channel: ChannelName, after: Duration) {
    node.coalescer.opened.lock().insert(channel.clone());
    let node = node.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        flush(&node, &channel, false).await;
    });
}

/// Publishes the latest message of every closed window of `channel` (of every open
/// one too when `all`). A message whose publish fails stays leased in the broker and
/// is taken again when the lease runs out.
pub async fn flush(node: &Node, channel: &str, all: bool) {
    loop {
        let taken = match node.broker.coalesce_take(channel, all, LEASE).await {
            Ok(taken) => taken,
            Err(e) => {
                tracing::warn!(error = %e, channel, "cannot take coalesced messages; other nodes will");
                return;
            }
        };
        if taken.next_due_ms.is_none() {
            node.coalescer.opened.lock().remove(channel);
        }
        let full = taken.messages.len() >= TAKE_BATCH;
        let channels = node.channels.snapshot();
        for message in taken.messages {
            let Some(resolved) = channels.get(&message.channel) else {
                // The channel was removed while the window was open.
                tracing::warn!(channel, id = %message.id, "coalesced message of a removed channel not delivered");
                node.metrics.coalesced(channel, "removed");
                let _ = node.broker.coalesce_done(channel, &message.id).await;
                continue;
            };
            let id = message.id.clone();
            // Delivery latency counts from the flush: the window's wait is by design.
            let message = Message {
                accepted_at_micros: unix_micros(),
                ..message
            };
            match node.broker.publish(message, resolved.config).await {
                Ok(_) => {
                    node.metrics.published(&resolved.config.name);
                    if let Err(e) = node.broker.coalesce_done(channel, &id).await {
                        // The lease runs out and the message is published once more.
                        tracing::warn!(error = %e, channel, %id, "cannot end a flush lease");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, channel, %id, "cannot publish a coalesced message; retried when its lease runs out");
                }
            }
        }
        if !full {
            return;
        }
    }
}

/// Flushes every window this node opened, at once (it is draining).
pub async fn flush_opened(node: &Node) {
    let opened: Vec<ChannelName> = node.coalescer.opened.lock().iter().cloned().collect();
    for channel in opened {
        flush(node, &channel, true).await;
    }
}

/// Every [`RECOVERY_INTERVAL`], flushes the windows overdue by more than [`GRACE`]
/// (their node died). Runs until the node stops.
pub async fn recover(node: Arc<Node>) {
    let mut tick = tokio::time::interval(RECOVERY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match node.broker.coalesce_overdue(GRACE).await {
            Ok(channels) => {
                for channel in channels {
                    tracing::info!(channel, "flushing coalescing windows of another node");
                    flush(&node, &channel, false).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot check for overdue coalescing windows"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::value::RawValue;

    use super::*;
    use crate::broker::Broker;
    use crate::channels::Access;
    use crate::message::Topic;
    use crate::tags::Tags;
    use crate::testing::{hostile_users, TestNode};

    fn channel(edge: CoalesceEdge) -> ChannelConfig {
        ChannelConfig {
            history: true,
            coalesce: Some(Coalesce {
                window_ms: 100,
                key: CoalesceKey::TypeUser,
                edge,
                tag: None,
            }),
            ..ChannelConfig::new("stock", Access::Authenticated)
        }
    }

    fn message(n: u32, target: Target) -> Message {
        Message {
            id: format!("id-{n}").into(),
            channel: "stock".into(),
            kind: "stock_update".into(),
            data: Arc::from(RawValue::from_string(format!("{{\"n\":{n}}}")).unwrap()),
            target,
            offset: None,
            accepted_at_micros: 0,
            trace: None,
            tags: Default::default(),
        }
    }

    async fn stored(test: &TestNode, config: &ChannelConfig) -> Vec<String> {
        let topic = Topic {
            channel: "stock".into(),
            user: None,
        };
        let replay = test.broker.history(&topic, config, None).await.unwrap();
        replay
            .messages
            .iter()
            .map(|m| m.data.get().to_owned())
            .collect()
    }

    fn by(key: CoalesceKey) -> Coalesce {
        Coalesce {
            window_ms: 100,
            key,
            edge: CoalesceEdge::Trailing,
            tag: (key == CoalesceKey::Tag).then(|| "sku".to_owned()),
        }
    }

    fn tagged(kind: &str, tags: &[(&str, &str)]) -> Message {
        Message {
            kind: kind.into(),
            tags: Tags::from_pairs(
                tags.iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
            ),
            ..message(0, Target::All)
        }
    }

    #[test]
    fn tag_keys_separate_each_value_of_the_tag_and_skip_the_rest() {
        let sku = by(CoalesceKey::Tag);
        let a = key(&sku, &tagged("stock", &[("sku", "A-1"), ("region", "eu")]));
        assert_eq!(a, key(&sku, &tagged("stock", &[("sku", "A-1")])));
        assert_ne!(a, key(&sku, &tagged("stock", &[("sku", "B-2")])));
        assert_ne!(a, key(&sku, &tagged("price", &[("sku", "A-1")])));
        assert_eq!(key(&sku, &tagged("stock", &[("region", "eu")])), None);
        assert_eq!(key(&sku, &message(0, Target::All)), None);
        let mut to_user = tagged("stock", &[("sku", "A-1")]);
        to_user.target = Target::User("CORP\\alice".into());
        assert_eq!(key(&sku, &to_user), None, "never mixes recipients");
        // Kind and value cannot trade characters into the same key.
        assert_ne!(
            key(&sku, &tagged("a:b", &[("sku", "c")])),
            key(&sku, &tagged("a", &[("sku", "b:c")]))
        );
        for value in ["CORP\\alice", "o\"brien", "🦀", ""] {
            assert!(
                key(&sku, &tagged("stock", &[("sku", value)])).is_some(),
                "{value:?}"
            );
        }
    }

    #[test]
    fn keys_separate_types_broadcasts_and_each_user() {
        let all = message(0, Target::All);
        let mut keys = vec![
            key(&by(CoalesceKey::Type), &all),
            key(&by(CoalesceKey::TypeUser), &all),
        ];
        assert_eq!(keys[0], keys[1]);
        for user in hostile_users() {
            let to = message(0, Target::User(user.as_str().into()));
            assert_eq!(
                key(&by(CoalesceKey::Type), &to),
                None,
                "never mixes recipients"
            );
            keys.push(key(&by(CoalesceKey::TypeUser), &to));
        }
        keys.dedup();
        assert_eq!(keys.len(), 1 + hostile_users().len());
        // A type ending like another key's user part does not collide.
        let odd = Message {
            kind: "stock_update:x".into(),
            ..message(0, Target::All)
        };
        let x = message(0, Target::User("x".into()));
        assert_ne!(
            key(&by(CoalesceKey::TypeUser), &odd),
            key(&by(CoalesceKey::TypeUser), &x)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn trailing_windows_flush_the_latest_when_they_close() {
        let config = channel(CoalesceEdge::Trailing);
        let test = TestNode::new(vec![config.clone()]);
        for n in 0..5 {
            let decision = decide(&test.node, &config, &message(n, Target::All)).await;
            assert_eq!(
                decision.unwrap(),
                Decision::Held(Duration::from_millis(100))
            );
            tokio::time::advance(Duration::ZERO).await;
        }
        tokio::time::sleep(Duration::from_millis(99)).await;
        assert!(stored(&test, &config).await.is_empty(), "window still open");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(stored(&test, &config).await, [r#"{"n":4}"#]);
        assert_eq!(test.node.metrics.coalesced_count("stock", "trailing"), 4);
        // The next message opens a new window.
        let decision = decide(&test.node, &config, &message(5, Target::All)).await;
        assert_eq!(
            decision.unwrap(),
            Decision::Held(Duration::from_millis(100))
        );
        tokio::time::sleep(Duration::from_millis(101)).await;
        assert_eq!(stored(&test, &config).await, [r#"{"n":4}"#, r#"{"n":5}"#]);
    }

    #[tokio::test(start_paused = true)]
    async fn leading_windows_deliver_the_first_and_drop_the_rest() {
        let config = channel(CoalesceEdge::Leading);
        let test = TestNode::new(vec![config.clone()]);
        let decide = |n| {
            let (node, config) = (test.node.clone(), config.clone());
            async move { decide(&node, &config, &message(n, Target::All)).await }
        };
        assert_eq!(decide(0).await.unwrap(), Decision::Deliver);
        tokio::time::sleep(Duration::from_millis(99)).await;
        assert_eq!(decide(1).await.unwrap(), Decision::Dropped);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(decide(2).await.unwrap(), Decision::Deliver);
        assert_eq!(test.node.metrics.coalesced_count("stock", "leading"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_draining_node_flushes_its_windows_at_once() {
        let config = channel(CoalesceEdge::Trailing);
        let test = TestNode::new(vec![config.clone()]);
        decide(&test.node, &config, &message(7, Target::All))
            .await
            .unwrap();
        flush_opened(&test.node).await;
        assert_eq!(stored(&test, &config).await, [r#"{"n":7}"#]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(stored(&test, &config).await.len(), 1, "flushed once");
    }
}
