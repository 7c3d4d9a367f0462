//! One owner for everything a connection holds on the node.
//!
//! A subscription lives in two places (the hub's fan-out table and the broker's
//! interest count per topic) and a user's connection also counts in the
//! cluster-wide per-user tally. [`Membership`] takes all of them, is the only way to
//! subscribe and unsubscribe, and gives everything back when dropped, whichever way
//! the connection ends (refused, failed upgrade, normal close, panic).

use std::sync::Arc;

use crate::auth::Identity;
use crate::broker::BrokerError;
use crate::channels::{Admission, ChannelConfig};
use crate::filter::Filter;
use crate::hub::{HubError, Registration, SessionId};
use crate::message::Topic;
use crate::node::Node;
use crate::{ChannelName, UserId};

/// A connection's registration with the hub, its broker interest per subscribed
/// channel and its count in the user's cluster-wide tally; released on drop.
#[derive(Debug)]
pub struct Membership {
    node: Arc<Node>,
    id: SessionId,
    user: Option<UserId>,
    /// Whether the user's cluster-wide count includes this connection.
    counted: bool,
    /// Subscribed channels and the broker topic each holds.
    held: Vec<(ChannelName, Topic)>,
    /// The filters of the subscribed channels that have one.
    filters: Vec<(ChannelName, Arc<Filter>)>,
}

/// Why an authenticated connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The user is at the per-user cap, on this node or across the cluster.
    #[error("{0}")]
    TooManyConnections(String),
    /// The auto-subscribe channels could not be joined.
    #[error("{0}")]
    BrokerUnavailable(#[from] BrokerError),
}

impl Refused {
    /// The stable code sent to the client (HTTP body or `error` frame).
    pub fn code(&self) -> &'static str {
        match self {
            Refused::TooManyConnections(_) => "too_many_connections",
            Refused::BrokerUnavailable(_) => "broker_unavailable",
        }
    }

    /// The status a refused upgrade answers with.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Refused::TooManyConnections(_) => http::StatusCode::TOO_MANY_REQUESTS,
            Refused::BrokerUnavailable(_) => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The close code a connection authenticated by its first frame gets instead:
    /// 4029 (the HTTP 429 of the query-token form), or 1013 (try again later).
    pub fn close_code(&self) -> u16 {
        match self {
            Refused::TooManyConnections(_) => 4029,
            Refused::BrokerUnavailable(_) => 1013,
        }
    }

    /// The label counted in `herald_connections_rejected_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Refused::TooManyConnections(_) => "user_connection_limit",
            Refused::BrokerUnavailable(_) => "broker_unavailable",
        }
    }
}

/// The broker topic carrying `channel`'s messages for `identity`.
pub fn topic_for(channel: &ChannelName, config: &ChannelConfig, identity: &Identity) -> Topic {
    Topic::for_channel(channel, config.is_per_user(), identity.user.as_ref())
}

impl Membership {
    /// Registers a connection of `user` with the hub; the registration is the
    /// connection's receiving end.
    pub fn register(
        node: Arc<Node>,
        user: Option<UserId>,
    ) -> Result<(Self, Registration), HubError> {
        let registration = node.hub.connect(user.clone())?;
        let membership = Self {
            node,
            id: registration.id,
            user,
            counted: false,
            held: Vec::new(),
            filters: Vec::new(),
        };
        Ok((membership, registration))
    }

    /// Opens the connection of an authenticated `identity`: registers it, counts it in
    /// its user's tally and joins its auto-subscribe channels, so that pushes are
    /// queued for it before the client learns it is connected.
    pub async fn open(
        node: Arc<Node>,
        identity: &Identity,
    ) -> Result<(Self, Registration), Refused> {
        let (mut membership, registration) = Self::register(node.clone(), identity.user.clone())
            .map_err(|e| Refused::TooManyConnections(e.to_string()))?;
        if let Some(user) = identity.user.as_deref() {
            if !membership.admit().await {
                return Err(Refused::TooManyConnections(format!(
                    "user {user} already has {} open connections in the cluster",
                    node.config.max_connections_per_user
                )));
            }
        }
        membership.join_auto_channels(identity).await?;
        Ok((membership, registration))
    }

    /// The connection's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// Counts the connection in its user's cluster-wide tally; false when that puts
    /// the user over the per-user cap (the connection is then not counted).
    pub async fn admit(&mut self) -> bool {
        let Some(user) = self.user.clone() else {
            return true;
        };
        self.counted = self.node.admit_user(&user).await;
        self.counted
    }

    /// Subscribes to every auto-subscribe channel `identity` may use, before the
    /// upgrade completes: once a client sees the socket open, it receives pushes.
    pub async fn join_auto_channels(&mut self, identity: &Identity) -> Result<(), BrokerError> {
        let channels = self.node.channels.snapshot();
        let plain = channels
            .iter()
            .filter(|(_, config)| config.auto_subscribe && !config.is_pattern())
            .filter(|(_, config)| config.admits(identity).is_ok())
            .map(|(name, config)| (name.clone(), config));
        let patterned = channels
            .auto_channels(identity)
            .into_iter()
            .map(|r| (r.name, r.config));
        for (name, config) in plain.chain(patterned).collect::<Vec<_>>() {
            self.subscribe(&name, topic_for(&name, config, identity))
                .await?;
        }
        Ok(())
    }

    /// Subscribes to `channel`, whose messages travel on `topic`: takes the broker
    /// interest, then registers with the hub. False when already subscribed.
    pub async fn subscribe(
        &mut self,
        channel: &ChannelName,
        topic: Topic,
    ) -> Result<bool, BrokerError> {
        self.subscribe_filtered(channel, topic, None).await
    }

    /// Subscribes to what `filter` admits of `channel`; on a channel already joined,
    /// replaces its filter instead (and answers false).
    pub async fn subscribe_filtered(
        &mut self,
        channel: &ChannelName,
        topic: Topic,
        filter: Option<Arc<Filter>>,
    ) -> Result<bool, BrokerError> {
        if self.is_subscribed(channel) {
            self.node.hub.set_filter(self.id, channel, filter.clone());
            self.keep_filter(channel, filter);
            return Ok(false);
        }
        self.node.broker.subscribe(topic.clone()).await?;
        self.node
            .hub
            .subscribe_filtered(self.id, channel, filter.clone());
        self.held.push((channel.clone(), topic));
        self.keep_filter(channel, filter);
        Ok(true)
    }

    fn keep_filter(&mut self, channel: &ChannelName, filter: Option<Arc<Filter>>) {
        self.filters.retain(|(c, _)| c != channel);
        if let Some(filter) = filter {
            self.filters.push((channel.clone(), filter));
        }
    }

    /// The filter of the subscription to `channel`, if it has one.
    pub fn filter(&self, channel: &str) -> Option<&Filter> {
        self.filters
            .iter()
            .find(|(c, _)| &**c == channel)
            .map(|(_, f)| &**f)
    }

    /// Unsubscribes from `channel`; false when not subscribed.
    pub fn unsubscribe(&mut self, channel: &str) -> bool {
        let Some(index) = self.held.iter().position(|(c, _)| &**c == channel) else {
            return false;
        };
        let (channel, topic) = self.held.swap_remove(index);
        self.filters.retain(|(c, _)| *c != channel);
        self.node.hub.unsubscribe(self.id, &channel);
        self.node.broker.unsubscribe(topic);
        true
    }

    /// Whether the connection is subscribed to `channel`.
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.held.iter().any(|(c, _)| &**c == channel)
    }

    /// How many channels the connection is subscribed to.
    pub fn subscription_count(&self) -> usize {
        self.held.len()
    }

    /// Subscribed channels with their topics, in subscription order (until an
    /// unsubscribe reorders them).
    pub fn subscriptions(&self) -> &[(ChannelName, Topic)] {
        &self.held
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if self.counted {
            if let Some(user) = self.user.as_deref() {
                self.node.release_user(user);
            }
        }
        self.node.hub.disconnect(self.id);
        for (_, topic) in self.held.drain(..) {
            self.node.broker.unsubscribe(topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::Access;
    use crate::testing::{hostile_users, TestNode};

    #[tokio::test]
    async fn subscriptions_are_held_once_and_released_on_drop() {
        let mut config = ChannelConfig::new("orders:eu@v1.x-y_z", Access::User);
        config.history = true;
        let test = TestNode::new(vec![config.clone()]);
        let channel: ChannelName = config.name.as_str().into();
        for user in hostile_users() {
            let identity = TestNode::user(&user);
            let topic = topic_for(&channel, &config, &identity);
            assert_eq!(topic.user.as_deref(), Some(user.as_str()));

            let (mut membership, _registration) =
                Membership::register(test.node.clone(), identity.user.clone()).unwrap();
            assert!(membership.subscribe(&channel, topic.clone()).await.unwrap());
            assert!(!membership.subscribe(&channel, topic.clone()).await.unwrap());
            assert_eq!(test.broker.interest(&topic), 1, "{user:?}");
            assert!(test.node.hub.is_subscribed(membership.id(), &channel));
            assert_eq!(membership.subscription_count(), 1);

            let (mut other, _other_registration) =
                Membership::register(test.node.clone(), identity.user.clone()).unwrap();
            other.subscribe(&channel, topic.clone()).await.unwrap();
            assert_eq!(test.broker.interest(&topic), 2);
            assert!(other.unsubscribe(&channel));
            assert!(!other.unsubscribe(&channel));
            assert_eq!(test.broker.interest(&topic), 1);
            assert!(!test.node.hub.is_subscribed(other.id(), &channel));

            drop(membership);
            assert_eq!(test.broker.interest(&topic), 0, "{user:?}");
            assert_eq!(test.node.hub.connection_count(), 1);
            drop(other);
            assert_eq!(test.node.hub.connection_count(), 0);
        }
    }

    #[tokio::test]
    async fn auto_channels_are_joined_only_where_admitted() {
        let mut open = ChannelConfig::new("alerts", Access::Public);
        open.auto_subscribe = true;
        let mut staff = ChannelConfig::new("ops", Access::Roles);
        staff.auto_subscribe = true;
        staff.roles = vec!["staff".into()];
        let manual = ChannelConfig::new("orders", Access::User);
        let test = TestNode::new(vec![open, staff, manual]);
        let identity = TestNode::user(r"CORP\alice");
        let (mut membership, _registration) =
            Membership::register(test.node.clone(), identity.user.clone()).unwrap();
        membership.join_auto_channels(&identity).await.unwrap();
        let joined: Vec<&str> = membership
            .subscriptions()
            .iter()
            .map(|(c, _)| &**c)
            .collect();
        assert_eq!(joined, ["alerts"]);
        let alerts = Topic::for_channel(&"alerts".into(), false, None);
        assert_eq!(test.broker.interest(&alerts), 1);
        drop(membership);
        assert_eq!(test.broker.interest(&alerts), 0);
        assert_eq!(test.node.hub.connection_count(), 0);
    }
}
