//! Cluster presence in Redis: which nodes are alive, which sessions they hold, and
//! how many connections each user has across the cluster.
//!
//! Every node heartbeats a record (id, address, connection count) with a TTL into
//! Redis; the operator scales on these counts and the admin API lists them. Session
//! records are re-synchronised from the hub on every heartbeat, so they heal by
//! themselves after a Redis outage. Per-user connection counts are kept per node
//! incarnation, so counts of a crashed node stop counting as soon as its heartbeat
//! expires.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fred::prelude::*;
use fred::types::scripts::Script;
use herald_contract::keys::{self, NODES as NODES_KEY};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::hub::{Hub, SessionId, SessionInfo};

/// Adds (or removes) one connection of a user for this node incarnation and returns
/// every incarnation's count for that user.
const COUNT_LUA: &str = r"
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if tonumber(redis.call('HGET', KEYS[1], ARGV[1])) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('EXPIRE', KEYS[1], 86400)
return redis.call('HGETALL', KEYS[1])
";

/// Presence failures; presence is best effort and never blocks delivery.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// Redis did not answer.
    #[error("presence unavailable: {0}")]
    Redis(#[from] fred::error::Error),
    /// A stored record could not be read.
    #[error("unreadable presence record: {0}")]
    Record(#[from] serde_json::Error),
}

/// A node's heartbeat as stored in Redis and served by `GET /api/v1/nodes`.
pub use herald_contract::heartbeat::NodeRecord;

/// A session as stored in Redis.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionRecord {
    /// Node holding the connection.
    pub node: String,
    /// The session.
    #[serde(flatten)]
    pub session: SessionInfo,
}

/// This node's presence writer and the cluster-wide reader.
pub struct Presence {
    client: Client,
    record: Mutex<NodeRecord>,
    ttl: Duration,
    count_script: Script,
    /// Sessions as last written, with a fingerprint of their subscriptions.
    written: Mutex<HashMap<SessionId, String>>,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence")
            .field("node", &self.record.lock().id)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn node_key(id: &str) -> String {
    keys::node(id)
}

fn sessions_key(id: &str) -> String {
    keys::node_sessions(id)
}

fn user_key(user: &str) -> String {
    keys::user_connections(user)
}

impl Presence {
    /// Presence for the node `id` listening on `address`; heartbeats expire after `ttl`.
    pub fn new(client: Client, id: &str, address: &str, ttl: Duration) -> Self {
        let started = SystemTime::now();
        Self {
            client,
            record: Mutex::new(NodeRecord {
                id: id.to_owned(),
                incarnation: format!("{id}@{}", now_ms()),
                address: address.to_owned(),
                connections: 0,
                draining: false,
                started_at: humantime::format_rfc3339_millis(started).to_string(),
                heartbeat_ms: 0,
            }),
            ttl,
            count_script: Script::from_lua(COUNT_LUA),
            written: Mutex::default(),
        }
    }

    /// Writes the heartbeat and brings this node's session records up to date.
    pub async fn heartbeat(&self, hub: &Hub, draining: bool) -> Result<(), PresenceError> {
        let record = {
            let mut record = self.record.lock();
            record.connections = hub.connection_count();
            record.draining = draining;
            record.heartbeat_ms = now_ms();
            record.clone()
        };
        let ttl = self.ttl.as_secs().max(1) as i64;
        let json = serde_json::to_string(&record)?;
        self.client
            .set::<(), _, _>(
                node_key(&record.id),
                json,
                Some(Expiration::EX(ttl)),
                None,
                false,
            )
            .await?;
        self.client
            .zadd::<(), _, _>(
                NODES_KEY,
                None,
                None,
                false,
                false,
                (record.heartbeat_ms as f64, record.id.as_str()),
            )
            .await?;
        self.sync_sessions(hub, &record, ttl).await
    }

    async fn sync_sessions(
        &self,
        hub: &Hub,
        record: &NodeRecord,
        ttl: i64,
    ) -> Result<(), PresenceError> {
        let key = sessions_key(&record.id);
        let current = hub.sessions(None);
        let (upserts, removals) = {
            let written = self.written.lock();
            let upserts: Vec<(String, String)> = current
                .iter()
                .filter_map(|s| {
                    let print = s.subscriptions.join(",");
                    (written.get(&s.id) != Some(&print)).then(|| {
                        let json = serde_json::to_string(&SessionRecord {
                            node: record.id.clone(),
                            session: s.clone(),
                        })
                        .expect("records serialize");
                        (s.id.to_string(), json)
                    })
                })
                .collect();
            let live: std::collections::HashSet<SessionId> = current.iter().map(|s| s.id).collect();
            let removals: Vec<String> = written
                .keys()
                .filter(|id| !live.contains(id))
                .map(|id| id.to_string())
                .collect();
            (upserts, removals)
        };
        for chunk in upserts.chunks(500) {
            self.client.hset::<(), _, _>(&key, chunk.to_vec()).await?;
        }
        for chunk in removals.chunks(500) {
            self.client.hdel::<(), _, _>(&key, chunk.to_vec()).await?;
        }
        self.client.expire::<(), _>(&key, ttl, None).await?;
        *self.written.lock() = current
            .into_iter()
            .map(|s| (s.id, s.subscriptions.join(",")))
            .collect();
        Ok(())
    }

    /// Forgets written session records so the next heartbeat rewrites them all
    /// (after Redis lost them, e.g. on failover).
    pub fn resync(&self) {
        self.written.lock().clear();
    }

    /// Live nodes: heartbeats not older than the TTL.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, PresenceError> {
        let horizon = now_ms().saturating_sub(self.ttl.as_millis() as u64) as f64;
        let _: () = self
            .client
            .zremrangebyscore(NODES_KEY, f64::NEG_INFINITY, horizon)
            .await?;
        let ids: Vec<String> = self
            .client
            .zrange(NODES_KEY, 0, -1, None, false, None, false)
            .await?;
        let mut nodes = Vec::with_capacity(ids.len());
        for id in ids {
            let json: Option<String> = self.client.get(node_key(&id)).await?;
            if let Some(json) = json {
                nodes.push(serde_json::from_str(&json)?);
            }
        }
        Ok(nodes)
    }

    /// Sessions across the cluster, optionally of one user, ordered by node and id.
    pub async fn sessions(&self, user: Option<&str>) -> Result<Vec<SessionRecord>, PresenceError> {
        let mut sessions = Vec::new();
        for node in self.nodes().await? {
            let values: Vec<String> = self.client.hvals(sessions_key(&node.id)).await?;
            for json in values {
                let record: SessionRecord = serde_json::from_str(&json)?;
                if user.is_none() || record.session.user.as_deref() == user {
                    sessions.push(record);
                }
            }
        }
        sessions.sort_by(|a, b| (&a.node, a.session.id).cmp(&(&b.node, b.session.id)));
        Ok(sessions)
    }

    /// Counts a new connection of `user`; returns the user's connections across live
    /// nodes including this one.
    pub async fn acquire(&self, user: &str) -> Result<usize, PresenceError> {
        let counts = self.count(user, 1).await?;
        let live: std::collections::HashSet<String> = self
            .nodes()
            .await?
            .into_iter()
            .map(|n| n.incarnation)
            .collect();
        let mine = self.record.lock().incarnation.clone();
        Ok(counts
            .into_iter()
            .filter(|(incarnation, _)| *incarnation == mine || live.contains(incarnation))
            .map(|(_, n)| n.max(0) as usize)
            .sum())
    }

    /// Uncounts a connection of `user`.
    pub async fn release(&self, user: &str) -> Result<(), PresenceError> {
        self.count(user, -1).await.map(|_| ())
    }

    async fn count(&self, user: &str, delta: i64) -> Result<Vec<(String, i64)>, PresenceError> {
        let incarnation = self.record.lock().incarnation.clone();
        let flat: Vec<String> = self
            .count_script
            .evalsha_with_reload(
                &self.client,
                vec![user_key(user)],
                vec![incarnation, delta.to_string()],
            )
            .await?;
        Ok(flat
            .chunks(2)
            .filter_map(|pair| Some((pair.first()?.clone(), pair.get(1)?.parse().ok()?)))
            .collect())
    }

    /// Removes this node's records (on a clean shutdown).
    pub async fn leave(&self) -> Result<(), PresenceError> {
        let id = self.record.lock().id.clone();
        self.client.del::<(), _>(node_key(&id)).await?;
        self.client.del::<(), _>(sessions_key(&id)).await?;
        self.client.zrem::<(), _, _>(NODES_KEY, id).await?;
        Ok(())
    }
}

/// Heartbeats `hub`'s connections until `stop` is cancelled; `draining` tells
/// whether the node is shutting down.
pub async fn run(
    presence: Arc<Presence>,
    hub: Arc<Hub>,
    draining: impl Fn() -> bool + Send + 'static,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    let mut failing = false;
    // A heartbeat once started is finished: stopping between beats means no write
    // lands after `leave`.
    while stop.run_until_cancelled(tick.tick()).await.is_some() {
        match presence.heartbeat(&hub, draining()).await {
            Ok(()) if failing => {
                failing = false;
                presence.resync();
                tracing::info!("presence heartbeats restored");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                presence.resync();
                tracing::warn!(error = %e, "presence heartbeat failed");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::arbitrary::text;

    proptest! {
        /// What one node writes to Redis, every other node (and the admin API) reads back
        /// unchanged, whatever the node, address and user ids hold.
        #[test]
        fn presence_records_read_back_as_written(
            strings in vec(text(), 6),
            user in proptest::option::of(text()),
            subscriptions in vec(text(), 0..4),
            numbers in any::<(u64, usize, bool, u64)>(),
        ) {
            let node = NodeRecord {
                id: strings[0].clone(),
                incarnation: strings[1].clone(),
                address: strings[2].clone(),
                connections: numbers.1,
                draining: numbers.2,
                started_at: strings[3].clone(),
                heartbeat_ms: numbers.3,
            };
            let read: NodeRecord = serde_json::from_str(&serde_json::to_string(&node).unwrap()).unwrap();
            prop_assert_eq!(read, node);
            let session = SessionRecord {
                node: strings[4].clone(),
                session: SessionInfo {
                    id: numbers.0,
                    user,
                    connected_at: strings[5].clone(),
                    subscriptions,
                },
            };
            let read: SessionRecord =
                serde_json::from_str(&serde_json::to_string(&session).unwrap()).unwrap();
            prop_assert_eq!(read, session);
        }
    }
}
