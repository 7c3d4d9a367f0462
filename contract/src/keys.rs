//! The Redis key layout.
//!
//! Nodes write presence and history under these keys; the operator reads the
//! heartbeats and, when a `Channel` with `deletionPolicy: Purge` goes, deletes the
//! channel's keys by pattern. Braces are Redis Cluster hash tags: everything of one
//! topic (stream, trim mark, cursors, shard channel) lives in one slot, so one script
//! reaches it all.

/// Sorted set of node ids, scored by their last heartbeat (Unix milliseconds).
pub const NODES: &str = "herald:nodes";

/// A node's heartbeat record ([`crate::NodeRecord`] as JSON); expires with it.
pub fn node(id: &str) -> String {
    format!("herald:node:{id}")
}

/// Hash of a node's sessions, by session id.
pub fn node_sessions(id: &str) -> String {
    format!("herald:{{node:{id}}}:sessions")
}

/// Hash of a user's connection counts, by node incarnation.
pub fn user_connections(user: &str) -> String {
    format!("herald:{{user:{user}}}:connections")
}

/// Where a channel's messages go: the whole channel, or one user's share of a
/// per-user channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic<'a> {
    /// The channel name.
    pub channel: &'a str,
    /// The recipient, on per-user channels.
    pub user: Option<&'a str>,
}

impl Topic<'_> {
    /// The hash tag shared by everything of this topic.
    pub fn tag(&self) -> String {
        match self.user {
            None => format!("c:{}", self.channel),
            Some(user) => format!("u:{}:{}", self.channel, user),
        }
    }

    /// The sharded Pub/Sub channel live messages travel on between nodes.
    pub fn shard_channel(&self) -> String {
        format!("herald:{{{}}}", self.tag())
    }

    /// The history stream.
    pub fn stream(&self) -> String {
        format!("herald:{{{}}}:log", self.tag())
    }

    /// The newest offset trimmed from the stream.
    pub fn trimmed(&self) -> String {
        format!("herald:{{{}}}:trimmed", self.tag())
    }

    /// The delivery cursor of `reader`: one per topic on per-user topics (the
    /// topic's user is the reader), one per reader otherwise.
    pub fn cursor(&self, reader: &str) -> String {
        match self.user {
            Some(_) => format!("herald:{{{}}}:cursor", self.tag()),
            None => format!("herald:{{{}}}:cursor:{reader}", self.tag()),
        }
    }
}

/// The record of a publish made with idempotency key `key` on `channel`. It shares the
/// channel's hash tag, so purging the channel removes it too.
pub fn idempotency(channel: &str, key: &str) -> String {
    format!("herald:{{c:{channel}}}:idem:{key}")
}

/// Coalescing state of `channel`, all in the channel's slot so one script reaches it.
pub mod coalesce {
    /// The open leading-edge window of one coalescing key (exists while it is open).
    pub fn leading(channel: &str, key: &str) -> String {
        format!("herald:{{c:{channel}}}:co:lead:{key}")
    }

    /// Hash: coalescing key → the latest held message of its open trailing window.
    pub fn pending(channel: &str) -> String {
        format!("herald:{{c:{channel}}}:co:pending")
    }

    /// Sorted set: coalescing key → end of its open trailing window (Redis ms).
    pub fn due(channel: &str) -> String {
        format!("herald:{{c:{channel}}}:co:due")
    }

    /// Hash: message id → a message taken for flushing, until its publish is done.
    pub fn inflight(channel: &str) -> String {
        format!("herald:{{c:{channel}}}:co:inflight")
    }

    /// Sorted set: message id → when its flush lease runs out (Redis ms).
    pub fn inflight_due(channel: &str) -> String {
        format!("herald:{{c:{channel}}}:co:lease")
    }

    /// Sorted set of channel names with held messages, scored at most their earliest
    /// window end: what every node checks to flush windows whose node died.
    pub const INDEX: &str = "herald:coalesce:due";
}

/// `SCAN` patterns covering every key of `channel`: its own keys, and every per-user
/// key of it. A per-user pattern also covers a channel named `{channel}:...`'s
/// per-user keys.
pub fn channel_patterns(channel: &str) -> [String; 2] {
    [
        format!("herald:{{c:{channel}}}*"),
        format!("herald:{{u:{channel}:*"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis `MATCH` for patterns whose only special character is `*`.
    fn matches(pattern: &str, key: &str) -> bool {
        match pattern.split_once('*') {
            None => pattern == key,
            Some((head, tail)) => {
                key.starts_with(head)
                    && (0..=key.len() - head.len()).any(|skip| {
                        key.is_char_boundary(head.len() + skip)
                            && matches(tail, &key[head.len() + skip..])
                    })
            }
        }
    }

    fn topic_keys(topic: Topic<'_>) -> Vec<String> {
        vec![topic.stream(), topic.trimmed(), topic.cursor("CORP\\alice")]
    }

    #[test]
    fn the_layout_nodes_and_operators_share() {
        let channel = Topic {
            channel: "alerts",
            user: None,
        };
        assert_eq!(channel.stream(), "herald:{c:alerts}:log");
        assert_eq!(channel.shard_channel(), "herald:{c:alerts}");
        assert_eq!(channel.cursor("7"), "herald:{c:alerts}:cursor:7");
        let per_user = Topic {
            channel: "orders",
            user: Some("CORP\\alice \"🦀\""),
        };
        assert_eq!(
            per_user.trimmed(),
            "herald:{u:orders:CORP\\alice \"🦀\"}:trimmed"
        );
        assert_eq!(
            per_user.cursor("ignored"),
            "herald:{u:orders:CORP\\alice \"🦀\"}:cursor"
        );
        assert_eq!(node("push-node-0"), "herald:node:push-node-0");
        assert_eq!(node_sessions("n"), "herald:{node:n}:sessions");
        assert_eq!(user_connections("42"), "herald:{user:42}:connections");
    }

    #[test]
    fn purge_patterns_cover_every_key_of_a_channel_and_no_other_channels() {
        let long_user = "x".repeat(300);
        let users = ["alice", "CORP\\alice", "\"q\"", "🦀", long_user.as_str()];
        let covered = |channel: &str, key: &str| {
            channel_patterns(channel)
                .iter()
                .any(|pattern| matches(pattern, key))
        };
        for channel in ["drops", "a.b@c:d-e_f"] {
            let mut keys = topic_keys(Topic {
                channel,
                user: None,
            });
            for user in users {
                keys.extend(topic_keys(Topic {
                    channel,
                    user: Some(user),
                }));
                keys.push(idempotency(channel, user));
                keys.push(coalesce::leading(channel, user));
            }
            keys.extend([
                coalesce::pending(channel),
                coalesce::due(channel),
                coalesce::inflight(channel),
                coalesce::inflight_due(channel),
            ]);
            for key in &keys {
                assert!(covered(channel, key), "{channel}: {key}");
            }
        }
        for (channel, other) in [("drops", "drops2"), ("drops", "drop"), ("drops2", "drops")] {
            for user in [None, Some("alice")] {
                let mut keys = topic_keys(Topic {
                    channel: other,
                    user,
                });
                keys.push(idempotency(other, "order-42"));
                for key in keys {
                    assert!(!covered(channel, &key), "{channel} purges {key}");
                }
            }
        }
    }
}
