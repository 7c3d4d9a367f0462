//! Subscribing, unsubscribing, acknowledging, and recovery: what a client asks for
//! and the history replays that answer it (on `subscribe` with offsets, and the
//! offline delivery of joined channels since the user's cursor).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::cursors::keeps_cursor;
use super::{error_label, Flow, Session};
use crate::channels::ChannelConfig;
use crate::connection::topic_for;
use crate::filter::{self, Filter};
use crate::hub::Delivery;
use crate::message::{Message, Offset, Target, Topic};
use crate::protocol::{ErrorCode, ServerMessage};
use crate::ChannelName;

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Offline delivery at connect, for every channel joined before the upgrade.
    pub(super) async fn catch_up(&mut self) -> Flow {
        let channels = self.node.channels.snapshot();
        let held = self.membership.subscriptions().to_vec();
        for (name, topic) in held {
            let Some(resolved) = channels.get(&name) else {
                continue;
            };
            if let Flow::Gone = self
                .deliver_since_cursor(&name, &topic, resolved.config)
                .await
            {
                return Flow::Gone;
            }
        }
        Flow::Continue
    }

    /// Offline delivery on one joined channel whose cursor the node keeps for the
    /// user: what arrived since the cursor (unacknowledged messages on `ack`
    /// channels), never what this connection was already sent.
    async fn deliver_since_cursor(
        &mut self,
        name: &ChannelName,
        topic: &Topic,
        config: &ChannelConfig,
    ) -> Flow {
        let Some(user) = self.identity.user.clone() else {
            return Flow::Continue;
        };
        if !keeps_cursor(config) {
            return Flow::Continue;
        }
        let cursor = match self.node.broker.load_cursor(topic, &user).await {
            Ok(cursor) => cursor,
            Err(e) => {
                tracing::warn!(channel = %name, error = %e, "cannot read delivery cursor");
                return Flow::Continue;
            }
        };
        let since = self.cursors.replay_start(name, cursor);
        match self.node.broker.history(topic, config, since).await {
            Ok(replay) => self.replay(name, replay.messages).await,
            Err(e) => {
                tracing::warn!(channel = %name, error = %e, "offline delivery failed");
                Flow::Continue
            }
        }
    }

    /// Sends replayed messages addressed to this connection, oldest first.
    async fn replay(&mut self, channel: &ChannelName, messages: Vec<Message>) -> Flow {
        let sent = self.cursors.sent(channel);
        let mine = |m: &Message| match &m.target {
            Target::All => true,
            Target::User(user) => self.identity.user.as_ref() == Some(user),
        };
        let unsent = |d: &Delivery| d.offset.is_none() || d.offset > sent;
        let wanted = self.membership.filter(channel);
        let deliveries: Vec<Delivery> = messages
            .iter()
            .filter(|m| mine(m) && filter::admits(wanted, m))
            .map(Delivery::of)
            .filter(unsent)
            .collect();
        if deliveries.is_empty() {
            return Flow::Continue;
        }
        let write = async {
            for delivery in &deliveries {
                self.ws
                    .feed(WsMessage::Text(delivery.frame.clone()))
                    .await?;
            }
            self.ws.flush().await
        };
        match tokio::time::timeout(self.node.config.write_timeout, write).await {
            Ok(Ok(())) => {}
            _ => return Flow::Gone,
        }
        self.node.metrics.delivered.inc_by(deliveries.len() as u64);
        self.node.metrics.replayed.inc_by(deliveries.len() as u64);
        for delivery in &deliveries {
            if let Some(offset) = delivery.offset {
                self.cursors.note_replayed(channel, offset);
                self.note_delivered(channel, offset);
            }
        }
        Flow::Continue
    }

    /// Moves the user's cursor on an `ack` channel: acknowledged messages are not
    /// redelivered on the next connection. An ack covers everything up to its offset.
    pub(super) async fn on_ack(&mut self, channel: &str, offset: &str) -> Flow {
        if !self.membership.is_subscribed(channel) {
            return self
                .reply_error(
                    ErrorCode::BadRequest,
                    Some(channel),
                    "ack for a channel this connection is not subscribed to",
                )
                .await;
        }
        let Some(offset) = Offset::parse(offset) else {
            return self
                .reply_error(
                    ErrorCode::BadRequest,
                    Some(channel),
                    "\"offset\" must be a message offset such as \"1700000000000-0\"",
                )
                .await;
        };
        let channels = self.node.channels.snapshot();
        let (Some(user), Some(resolved)) = (self.identity.user.clone(), channels.get(channel))
        else {
            return Flow::Continue;
        };
        let config = resolved.config;
        if !config.ack_required {
            return Flow::Continue;
        }
        let topic = topic_for(&resolved.name, config, &self.identity);
        if let Err(e) = self
            .node
            .broker
            .store_cursor(&topic, &user, offset, config)
            .await
        {
            return self
                .reply_error(ErrorCode::Unavailable, Some(channel), &e.to_string())
                .await;
        }
        Flow::Continue
    }

    pub(super) async fn on_subscribe(
        &mut self,
        requested: Vec<String>,
        since: &BTreeMap<String, String>,
        filter: Option<Filter>,
    ) -> Flow {
        let filter = filter.map(Arc::new);
        let limit = self.node.config.max_subscriptions;
        if requested.len() > limit {
            let why = format!("a subscribe may name at most {limit} channels");
            return self
                .reply_error(ErrorCode::TooManySubscriptions, None, &why)
                .await;
        }
        let channels = self.node.channels.snapshot();
        let mut granted: Vec<String> = Vec::new();
        let mut joined: Vec<ChannelName> = Vec::new();
        let mut refusals = Refusals::default();
        for name in dedup(requested) {
            let Some(resolved) = channels.get(&name) else {
                refusals.add(ErrorCode::UnknownChannel, name, "no such channel");
                continue;
            };
            let (interned, config) = (&resolved.name, resolved.config);
            if let Err(crate::channels::Refusal::Forbidden(why)) = resolved.admits(&self.identity) {
                refusals.add(ErrorCode::Forbidden, name, why);
                continue;
            }
            if !self.membership.is_subscribed(&name)
                && self.membership.subscription_count() >= limit
            {
                let why = format!("a connection may hold at most {limit} subscriptions");
                refusals.add(ErrorCode::TooManySubscriptions, name, &why);
                continue;
            }
            // On a channel already joined this replaces its filter (or removes it).
            let topic = topic_for(interned, config, &self.identity);
            match self
                .membership
                .subscribe_filtered(interned, topic, filter.clone())
                .await
            {
                Ok(true) => joined.push(interned.clone()),
                Ok(false) => {}
                Err(e) => {
                    refusals.add(ErrorCode::Unavailable, name, &e.to_string());
                    continue;
                }
            }
            granted.push(name);
        }
        // Recovery: read history after each given offset (or after what this
        // connection was already sent, if later) before answering, so the reply can
        // say whether the gap was fully recovered.
        let mut replays = Vec::new();
        let mut recovered = BTreeMap::new();
        for name in &granted {
            let Some(since) = since.get(name) else {
                continue;
            };
            let Some(resolved) = channels.get(name) else {
                continue;
            };
            let (interned, config) = (&resolved.name, resolved.config);
            let complete = match Offset::parse(since).filter(|_| config.history) {
                None => false,
                Some(since) => {
                    let topic = topic_for(interned, config, &self.identity);
                    let after = self.cursors.replay_start(name, Some(since));
                    match self.node.broker.history(&topic, config, after).await {
                        Ok(replay) => {
                            replays.push((interned.clone(), replay.messages));
                            replay.recovered
                        }
                        Err(e) => {
                            tracing::warn!(channel = %name, error = %e, "recovery failed");
                            false
                        }
                    }
                }
            };
            recovered.insert(name.as_str(), complete);
        }
        let names: Vec<&str> = granted.iter().map(String::as_str).collect();
        let reply = ServerMessage::SubscriptionSuccess {
            channels: &names,
            recovered,
        }
        .to_text();
        if let Flow::Gone = self.send(reply).await {
            return Flow::Gone;
        }
        for (channel, messages) in replays {
            if let Flow::Gone = self.replay(&channel, messages).await {
                return Flow::Gone;
            }
        }
        // Joining a channel without an offset honours the user's cursor, as at connect.
        for name in joined {
            if since.contains_key(&*name) {
                continue;
            }
            let Some(config) = channels.get(&name).map(|r| r.config) else {
                continue;
            };
            let topic = topic_for(&name, config, &self.identity);
            if let Flow::Gone = self.deliver_since_cursor(&name, &topic, config).await {
                return Flow::Gone;
            }
        }
        self.send_refusals(refusals).await
    }

    /// One `error` frame per refusal code, naming every refused channel.
    async fn send_refusals(&mut self, refusals: Refusals) -> Flow {
        for (code, names, why) in refusals.0 {
            self.node.metrics.client_error(error_label(code));
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            if let Flow::Gone = self.send(ServerMessage::refusal(code, &names, &why)).await {
                return Flow::Gone;
            }
        }
        Flow::Continue
    }

    pub(super) async fn on_unsubscribe(&mut self, requested: Vec<String>) -> Flow {
        let channels = self.node.channels.snapshot();
        let mut left = Vec::new();
        let mut unknown = Refusals::default();
        for name in dedup(requested) {
            // Leaving a known channel one is not subscribed to succeeds too.
            if self.membership.unsubscribe(&name) || channels.get(&name).is_some() {
                left.push(name);
            } else {
                unknown.add(ErrorCode::UnknownChannel, name, "no such channel");
            }
        }
        let names: Vec<&str> = left.iter().map(String::as_str).collect();
        let reply = ServerMessage::UnsubscriptionSuccess { channels: &names }.to_text();
        if let Flow::Gone = self.send(reply).await {
            return Flow::Gone;
        }
        self.send_refusals(unknown).await
    }
}

/// Refused channels grouped by code, in the order first refused: (code, names, why).
#[derive(Default)]
struct Refusals(Vec<(ErrorCode, Vec<String>, String)>);

impl Refusals {
    fn add(&mut self, code: ErrorCode, name: String, why: &str) {
        match self.0.iter_mut().find(|(c, _, _)| *c == code) {
            Some((_, names, _)) => names.push(name),
            None => self.0.push((code, vec![name], why.to_owned())),
        }
    }
}

fn dedup(mut names: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}
