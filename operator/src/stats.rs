//! The operator's view into a cluster's Redis: live figures from the heartbeats its
//! nodes keep (connections per node, for scaling and pod-deletion costs), and purging
//! a deleted channel's history.

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::*;
use futures_util::TryStreamExt;
use herald_contract::keys;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use tokio::sync::Mutex;

use crate::crd::PushCluster;
use crate::resources::redis_url;
use crate::secrets::{self, SecretError};

/// Why figures could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// Redis did not answer.
    #[error("Redis unreachable: {0}")]
    Redis(#[from] fred::error::Error),
    /// The Redis URL Secret is missing or unreadable.
    #[error("redis.urlSecretRef: {0}")]
    Secret(#[from] SecretError),
    /// A heartbeat record is malformed.
    #[error("unreadable node heartbeat: {0}")]
    Record(#[from] serde_json::Error),
    /// Redis took too long.
    #[error("Redis did not answer in time")]
    Timeout,
    /// A primary of the Redis Cluster did not answer: the slots it serves are down
    /// until a replica takes over, whichever keys the heartbeats happen to live on.
    #[error("Redis primary {server} did not answer: {reason}")]
    PrimaryDown {
        /// The primary, as `host:port`.
        server: String,
        /// What the ping returned.
        reason: String,
    },
}

/// How long a primary may take to answer the health `PING`.
const PRIMARY_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// One node's heartbeat (the fields the operator uses).
pub use herald_contract::heartbeat::NodeStats;

/// Reads heartbeats, keeping one Redis client per URL.
#[derive(Default)]
pub struct StatsReader {
    clients: Mutex<HashMap<String, Client>>,
}

impl std::fmt::Debug for StatsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsReader").finish_non_exhaustive()
    }
}

impl StatsReader {
    /// The live nodes of `cluster`.
    pub async fn nodes(
        &self,
        cluster: &PushCluster,
        secrets: Api<Secret>,
    ) -> Result<Vec<NodeStats>, StatsError> {
        let client = self.for_cluster(cluster, secrets).await?;
        tokio::time::timeout(Duration::from_secs(5), read_nodes(&client))
            .await
            .map_err(|_| StatsError::Timeout)?
    }

    /// Whether every primary of the cluster's Redis answers a `PING` (a single server
    /// is checked by [`Self::nodes`] already). A failed check also refreshes the cached
    /// topology, so the check after a failover pings the promoted replica instead.
    pub async fn broker_health(
        &self,
        cluster: &PushCluster,
        secrets: Api<Secret>,
    ) -> Result<(), StatsError> {
        let client = self.for_cluster(cluster, secrets).await?;
        if !client.is_clustered() {
            return Ok(());
        }
        let primaries = client
            .cached_cluster_state()
            .map(|state| state.unique_primary_nodes())
            .unwrap_or_default();
        let pings = primaries.into_iter().map(|server| {
            let client = client.clone();
            async move {
                let answer = tokio::time::timeout(
                    PRIMARY_PING_TIMEOUT,
                    client
                        .with_cluster_node(server.clone())
                        .ping::<String>(None),
                )
                .await;
                match answer {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err((server, e.to_string())),
                    Err(_) => Err((server, "no answer in time".to_owned())),
                }
            }
        });
        let down = futures_util::future::join_all(pings)
            .await
            .into_iter()
            .find_map(Result::err);
        match down {
            None => Ok(()),
            Some((server, reason)) => {
                if let Err(e) = client.sync_cluster().await {
                    tracing::debug!(error = %e, "could not refresh the Redis Cluster topology");
                }
                Err(StatsError::PrimaryDown {
                    server: server.to_string(),
                    reason,
                })
            }
        }
    }

    /// Deletes every history stream and delivery cursor of `channel`; returns how many
    /// keys were removed.
    pub async fn purge_history(
        &self,
        cluster: &PushCluster,
        secrets: Api<Secret>,
        channel: &str,
    ) -> Result<u64, StatsError> {
        let client = self.for_cluster(cluster, secrets).await?;
        let mut removed = 0;
        for pattern in keys::channel_patterns(channel) {
            let keys: Vec<Key> = if client.is_clustered() {
                client
                    .scan_cluster_buffered(pattern, Some(500), None)
                    .try_collect()
                    .await?
            } else {
                client
                    .scan_buffered(pattern, Some(500), None)
                    .try_collect()
                    .await?
            };
            for key in keys {
                removed += client.del::<u64, _>(key).await?;
            }
        }
        Ok(removed)
    }

    async fn for_cluster(
        &self,
        cluster: &PushCluster,
        secrets: Api<Secret>,
    ) -> Result<Client, StatsError> {
        let url = match &cluster.spec.redis.url_secret_ref {
            Some(key) => secrets::read(&secrets, key).await?,
            None => redis_url(&cluster.spec.redis.addresses),
        };
        self.client(&url).await
    }

    async fn client(&self, url: &str) -> Result<Client, StatsError> {
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(url) {
            return Ok(client.clone());
        }
        let config = Config::from_url(url)?;
        let client = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
            })
            .with_performance_config(|p| {
                p.default_command_timeout = Duration::from_secs(3);
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build()?;
        tokio::time::timeout(Duration::from_secs(5), client.init())
            .await
            .map_err(|_| StatsError::Timeout)??;
        clients.insert(url.to_owned(), client.clone());
        Ok(client)
    }
}

async fn read_nodes(client: &Client) -> Result<Vec<NodeStats>, StatsError> {
    let ids: Vec<String> = client
        .zrange(keys::NODES, 0, -1, None, false, None, false)
        .await?;
    let mut nodes = Vec::with_capacity(ids.len());
    for id in ids {
        // The record expires with its heartbeat: absent means the node is gone.
        let record: Option<String> = client.get(keys::node(&id)).await?;
        if let Some(record) = record {
            nodes.push(serde_json::from_str(&record)?);
        }
    }
    Ok(nodes)
}
