//! The node's shared state, handed to every connection and request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthError, Authenticator, Identity};
use crate::broker::Broker;
use crate::channels::{RateLimit, Registry};
use crate::config::Args;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::ratelimit::TokenBucket;
use crate::ChannelName;

/// What a node is assembled from.
#[derive(Clone)]
pub struct Parts {
    /// The configuration it was started with.
    pub config: Args,
    /// Token verification.
    pub auth: Authenticator,
    /// Key for the publish and admin APIs.
    pub api_key: String,
    /// Channels in force.
    pub channels: Arc<Registry>,
    /// Local connections.
    pub hub: Arc<Hub>,
    /// Cross-node transport.
    pub broker: Arc<dyn Broker>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Cluster presence, when running on Redis.
    pub presence: Option<Arc<Presence>>,
}

/// Everything a connection or request needs, shared behind an `Arc`.
pub struct Node {
    /// This node's id.
    pub id: String,
    /// The configuration it was started with.
    pub config: Args,
    /// Token verification.
    pub auth: Authenticator,
    /// Key for the publish and admin APIs.
    pub api_key: String,
    /// Channels in force.
    pub channels: Arc<Registry>,
    /// Local connections.
    pub hub: Arc<Hub>,
    /// Cross-node transport.
    pub broker: Arc<dyn Broker>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Cluster presence, when running on Redis.
    pub presence: Option<Arc<Presence>>,
    draining: AtomicBool,
    /// Upgraded connections still waiting for their first-frame `auth`.
    awaiting_auth: AtomicUsize,
    /// Cleanups that outlive their connection (uncounting a user in Redis), waited
    /// for at shutdown before the presence records go.
    cleanups: TaskTracker,
    publish_limits: Mutex<HashMap<ChannelName, (RateLimit, TokenBucket)>>,
    /// Trailing coalescing windows this node opened.
    pub coalescer: crate::coalesce::Coalescer,
}

/// A connection counted in [`Node::connection_load`] before it has authenticated.
#[derive(Debug)]
pub struct AwaitingAuth(Arc<Node>);

impl Drop for AwaitingAuth {
    fn drop(&mut self) {
        self.0.awaiting_auth.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("broker", &self.broker.name())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Assembles a node from its parts.
    pub fn new(parts: Parts) -> Self {
        Self {
            id: parts.config.node_id(),
            config: parts.config,
            auth: parts.auth,
            api_key: parts.api_key,
            channels: parts.channels,
            hub: parts.hub,
            broker: parts.broker,
            metrics: parts.metrics,
            presence: parts.presence,
            draining: AtomicBool::new(false),
            awaiting_auth: AtomicUsize::new(0),
            cleanups: TaskTracker::new(),
            publish_limits: Mutex::default(),
            coalescer: Default::default(),
        }
    }

    /// Whether the node is shutting down (not ready, refusing new connections).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Marks the node as draining.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Open connections, including those not yet authenticated: what the node's
    /// connection limit counts.
    pub fn connection_load(&self) -> usize {
        self.hub.connection_count() + self.awaiting_auth.load(Ordering::Relaxed)
    }

    /// Counts an upgraded connection awaiting its first-frame `auth` until the
    /// returned guard is dropped.
    pub fn await_auth(self: &Arc<Self>) -> AwaitingAuth {
        self.awaiting_auth.fetch_add(1, Ordering::Relaxed);
        AwaitingAuth(self.clone())
    }

    /// Counts a connection of `user` cluster-wide; false when over the per-user cap.
    /// Best effort: without Redis presence only the node-local cap applies.
    pub async fn admit_user(&self, user: &str) -> bool {
        let (Some(presence), cap) = (&self.presence, self.config.max_connections_per_user) else {
            return true;
        };
        if cap == 0 {
            return true;
        }
        match presence.acquire(user).await {
            Ok(count) if count > cap => {
                self.release_user(user);
                false
            }
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cluster-wide connection count unavailable");
                true
            }
        }
    }

    /// Uncounts a connection counted by [`Node::admit_user`].
    pub fn release_user(&self, user: &str) {
        if let (Some(presence), true) = (&self.presence, self.config.max_connections_per_user > 0) {
            let presence = presence.clone();
            let user = user.to_owned();
            self.cleanups.spawn(async move {
                if let Err(e) = presence.release(&user).await {
                    tracing::debug!(error = %e, "cannot uncount connection");
                }
            });
        }
    }

    /// Waits up to `limit` for the cleanups of closed connections; false when some
    /// were still running at the limit.
    pub async fn finish_cleanups(&self, limit: std::time::Duration) -> bool {
        self.cleanups.close();
        tokio::time::timeout(limit, self.cleanups.wait())
            .await
            .is_ok()
    }

    /// The HS256 secret, for minting demo tokens in `--dev` mode only.
    pub fn auth_secret_for_dev(&self) -> Option<String> {
        self.config
            .dev
            .then(|| self.config.jwt_secret.clone())
            .flatten()
    }

    /// Verifies a client's token, keeping the claims channel bindings name.
    pub fn verify_token(&self, token: &str) -> Result<Identity, AuthError> {
        self.auth
            .verify_keeping(token, self.channels.snapshot().bound_claims())
    }

    /// Takes one publish token for `channel`; false when over its rate limit.
    /// A pattern's limit covers all its channels together, so the buckets stay as
    /// many as the channel file has entries.
    pub fn allow_publish(&self, channel: &str, limit: Option<RateLimit>) -> bool {
        let Some(limit) = limit else {
            return true;
        };
        let mut limits = self.publish_limits.lock();
        let entry = limits
            .entry(ChannelName::from(channel))
            .or_insert_with(|| (limit, TokenBucket::new(limit.per_second, limit.burst)));
        if entry.0 != limit {
            // The channel's limit was changed live: start a bucket with the new figures.
            *entry = (limit, TokenBucket::new(limit.per_second, limit.burst));
        }
        entry.1.try_take()
    }
}
