//! One WebSocket connection from accept to close.
//!
//! A session reads client frames (ping, subscribe, unsubscribe, ack) under a token
//! bucket, writes the frames the hub queues for it in coalesced batches, keeps the
//! connection alive with WebSocket pings, and closes with a meaningful code when the
//! hub asks (slow consumer, drain) or the client misbehaves. Nothing a client sends
//! can take the node down: every bad frame gets an `error` reply.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::auth::Identity;
use crate::broker::offset::Offset;
use crate::broker::{BrokerError, Message, Target, Topic};
use crate::channels::{Admission, ChannelConfig};
use crate::hub::{unix_micros, Delivery, Registration, SessionId};
use crate::metrics::DropReason;
use crate::node::Node;
use crate::protocol::{ClientMessage, ErrorCode, ServerMessage};
use crate::ratelimit::TokenBucket;
use crate::ChannelName;

/// Frames written per flush at most, so one busy connection cannot starve the rest.
const MAX_BATCH: usize = 64;
/// How often delivery cursors are saved at most while messages flow.
const CURSOR_FLUSH: Duration = Duration::from_secs(2);
/// Window in which repeated rate-limit violations count as abuse.
const ABUSE_WINDOW: Duration = Duration::from_secs(10);
/// Time allowed to write the close frame.
const CLOSE_SEND: Duration = Duration::from_secs(1);
/// How long input is read and discarded after the close frame (lingering close).
const LINGER: Duration = Duration::from_secs(1);

/// Outcome of handling one event: keep going or close.
enum Flow {
    Continue,
    Close(u16, &'static str),
    Gone,
}

/// A running connection.
pub struct Session<S> {
    node: Arc<Node>,
    ws: WebSocketStream<S>,
    identity: Identity,
    registration: Registration,
    inbound: TokenBucket,
    violations: u32,
    violation_window: Instant,
    last_seen: Instant,
    /// Broker interest held per subscribed channel, released on unsubscribe/close.
    held: Vec<(ChannelName, Topic)>,
    /// Newest offset sent on this connection per channel, live or replayed: a
    /// replay starts after it, so no offset is ever sent twice.
    sent: HashMap<ChannelName, Offset>,
    /// Offsets sent by a replay whose live copy may still be queued, per channel:
    /// such copies are dropped (until live delivery overtakes the replay).
    replayed: HashMap<ChannelName, BTreeSet<Offset>>,
    /// Newest offset delivered per channel whose cursor the node keeps for the user.
    delivered: HashMap<ChannelName, Offset>,
    cursors_dirty: bool,
    cursors_flushed: Instant,
}

/// The broker topic carrying `channel`'s messages for `identity`.
pub fn topic_for(channel: &ChannelName, config: &ChannelConfig, identity: &Identity) -> Topic {
    Topic {
        channel: channel.clone(),
        user: if config.is_per_user() {
            identity.user.clone()
        } else {
            None
        },
    }
}

/// Subscribes a new connection to every auto-subscribe channel it may use, before
/// the upgrade completes: once a client sees the socket open, it receives pushes.
/// On failure every interest taken so far is released.
pub async fn join_auto_channels(
    node: &Node,
    identity: &Identity,
    id: SessionId,
) -> Result<Vec<(ChannelName, Topic)>, BrokerError> {
    let channels = node.channels.snapshot();
    let mut held = Vec::new();
    for (name, config) in channels.iter() {
        if !(config.auto_subscribe && config.admits(identity).is_ok()) {
            continue;
        }
        let topic = topic_for(name, config, identity);
        if let Err(e) = node.broker.subscribe(topic.clone()).await {
            for (_, topic) in held {
                node.broker.unsubscribe(topic);
            }
            return Err(e);
        }
        node.hub.subscribe(id, name);
        held.push((name.clone(), topic));
    }
    Ok(held)
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Wraps an upgraded, registered connection that already holds `held`.
    pub fn new(
        node: Arc<Node>,
        ws: WebSocketStream<S>,
        identity: Identity,
        registration: Registration,
        held: Vec<(ChannelName, Topic)>,
    ) -> Self {
        let inbound = TokenBucket::new(node.config.inbound_rate, node.config.inbound_burst);
        let now = Instant::now();
        Self {
            node,
            ws,
            identity,
            registration,
            inbound,
            violations: 0,
            violation_window: now,
            last_seen: now,
            held,
            sent: HashMap::new(),
            replayed: HashMap::new(),
            delivered: HashMap::new(),
            cursors_dirty: false,
            cursors_flushed: now,
        }
    }

    /// Serves the connection until it closes, then unregisters it.
    pub async fn run(mut self) {
        let flow = match self.catch_up().await {
            Flow::Continue => self.serve().await,
            other => other,
        };
        if let Flow::Close(code, reason) = flow {
            self.close(code, reason).await;
        }
        self.finish();
    }

    async fn serve(&mut self) -> Flow {
        let ping_every = self.node.config.ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        loop {
            let flow = tokio::select! {
                request = self.registration.control.requested() => {
                    tracing::debug!(code = request.code, reason = request.reason, "closing on request");
                    Flow::Close(request.code, request.reason)
                }
                frame = self.ws.next() => self.on_frame(frame).await,
                Some(delivery) = self.registration.rx.recv() => self.write_batch(delivery).await,
                _ = ping.tick() => self.keepalive(ping_every).await,
            };
            if !matches!(flow, Flow::Continue) {
                return flow;
            }
        }
    }

    /// Offline delivery at connect, for every channel joined before the upgrade.
    async fn catch_up(&mut self) -> Flow {
        let channels = self.node.channels.snapshot();
        let held = self.held.clone();
        for (name, topic) in held {
            let Some((_, config)) = channels.get(&name) else {
                continue;
            };
            if let Flow::Gone = self.deliver_since_cursor(&name, &topic, config).await {
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
        let since = self.replay_start(name, cursor.as_deref().and_then(Offset::parse));
        match self
            .node
            .broker
            .history(topic, config, since.as_deref())
            .await
        {
            Ok(replay) => self.replay(name, replay.messages).await,
            Err(e) => {
                tracing::warn!(channel = %name, error = %e, "offline delivery failed");
                Flow::Continue
            }
        }
    }

    /// Where a replay of `channel` starts: after the later of `from` (the client's
    /// offset or the user's cursor) and the newest offset already sent here.
    fn replay_start(&self, channel: &str, from: Option<Offset>) -> Option<String> {
        let sent = self.sent.get(channel).copied();
        from.max(sent).map(|offset| offset.to_string())
    }

    /// Sends replayed messages addressed to this connection, oldest first.
    async fn replay(&mut self, channel: &ChannelName, messages: Vec<Message>) -> Flow {
        let sent = self.sent.get(channel).copied();
        let mine = |m: &Message| match &m.target {
            Target::All => true,
            Target::User(user) => self.identity.user.as_ref() == Some(user),
        };
        let unsent = |d: &Delivery| d.offset.is_none() || d.offset > sent;
        let deliveries: Vec<Delivery> = messages
            .iter()
            .filter(|m| mine(m))
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
                self.replayed
                    .entry(channel.clone())
                    .or_default()
                    .insert(offset);
                self.note_sent(channel, offset);
                self.note_delivered(channel, offset);
            }
        }
        Flow::Continue
    }

    fn note_sent(&mut self, channel: &ChannelName, offset: Offset) {
        match self.sent.get_mut(channel) {
            Some(newest) => *newest = (*newest).max(offset),
            None => {
                self.sent.insert(channel.clone(), offset);
            }
        }
    }

    fn note_delivered(&mut self, channel: &ChannelName, offset: Offset) {
        let channels = self.node.channels.snapshot();
        let tracked = channels
            .get(channel)
            .is_some_and(|(_, c)| keeps_cursor(c) && !c.ack_required);
        if tracked {
            let newest = self.delivered.entry(channel.clone()).or_default();
            if offset > *newest {
                *newest = offset;
                self.cursors_dirty = true;
            }
        }
    }

    /// Saves delivery cursors in the background (never blocks the connection).
    fn flush_cursors(&mut self) {
        let Some(user) = self.identity.user.clone() else {
            return;
        };
        if !self.cursors_dirty {
            return;
        }
        self.cursors_dirty = false;
        self.cursors_flushed = Instant::now();
        let channels = self.node.channels.snapshot();
        for (name, offset) in &self.delivered {
            let Some((_, config)) = channels.get(name) else {
                continue;
            };
            let node = self.node.clone();
            let config = config.clone();
            let topic = topic_for(name, &config, &self.identity);
            let user = user.clone();
            let offset = offset.to_string();
            tokio::spawn(async move {
                if let Err(e) = node
                    .broker
                    .store_cursor(&topic, &user, &offset, &config)
                    .await
                {
                    tracing::warn!(error = %e, "cannot save delivery cursor");
                }
            });
        }
    }

    async fn on_frame(&mut self, frame: Option<Result<WsMessage, WsError>>) -> Flow {
        let message = match frame {
            None => return Flow::Gone,
            Some(Ok(message)) => message,
            Some(Err(error)) => return read_error_flow(&error),
        };
        self.last_seen = Instant::now();
        match message {
            WsMessage::Text(text) => {
                self.node.metrics.inbound.inc();
                if !self.inbound.try_take() {
                    return self.on_rate_limited().await;
                }
                self.on_text(&text).await
            }
            WsMessage::Binary(_) => {
                self.node.metrics.inbound.inc();
                // Every data frame counts against the bucket, refused ones included.
                if !self.inbound.try_take() {
                    return self.on_rate_limited().await;
                }
                self.reply_error(
                    ErrorCode::BadRequest,
                    None,
                    "binary frames are not supported; send JSON text frames",
                )
                .await
            }
            // tungstenite answers pings itself; a close is answered and then ends the stream.
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Close(_) | WsMessage::Frame(_) => {
                Flow::Continue
            }
        }
    }

    async fn on_rate_limited(&mut self) -> Flow {
        let now = Instant::now();
        if now.duration_since(self.violation_window) > ABUSE_WINDOW {
            self.violation_window = now;
            self.violations = 0;
        }
        self.violations += 1;
        if self.violations > self.node.config.inbound_burst.max(10) {
            self.node.metrics.client_error("rate_limit_abuse");
            return Flow::Close(1008, "rate limit exceeded repeatedly");
        }
        self.reply_error(ErrorCode::RateLimited, None, "too many messages: slow down")
            .await
    }

    async fn on_text(&mut self, text: &Utf8Bytes) -> Flow {
        match ClientMessage::parse(text.as_str()) {
            Err(e) => {
                self.reply_error(ErrorCode::BadRequest, None, &e.to_string())
                    .await
            }
            Ok(ClientMessage::Ping) => self.send(ServerMessage::pong_now()).await,
            Ok(ClientMessage::Subscribe { channels, since }) => {
                self.on_subscribe(channels, &since).await
            }
            Ok(ClientMessage::Unsubscribe { channels }) => self.on_unsubscribe(channels).await,
            Ok(ClientMessage::Ack { channel, offset }) => self.on_ack(&channel, &offset).await,
        }
    }

    /// Moves the user's cursor on an `ack` channel: acknowledged messages are not
    /// redelivered on the next connection. An ack covers everything up to its offset.
    async fn on_ack(&mut self, channel: &str, offset: &str) -> Flow {
        if !self.node.hub.is_subscribed(self.registration.id, channel) {
            return self
                .reply_error(
                    ErrorCode::BadRequest,
                    Some(channel),
                    "ack for a channel this connection is not subscribed to",
                )
                .await;
        }
        if Offset::parse(offset).is_none() {
            return self
                .reply_error(
                    ErrorCode::BadRequest,
                    Some(channel),
                    "\"offset\" must be a message offset such as \"1700000000000-0\"",
                )
                .await;
        }
        let channels = self.node.channels.snapshot();
        let (Some(user), Some((name, config))) =
            (self.identity.user.clone(), channels.get(channel))
        else {
            return Flow::Continue;
        };
        if !config.ack_required {
            return Flow::Continue;
        }
        let topic = topic_for(name, config, &self.identity);
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

    async fn on_subscribe(
        &mut self,
        requested: Vec<String>,
        since: &BTreeMap<String, String>,
    ) -> Flow {
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
            let Some((interned, config)) = channels.get(&name) else {
                refusals.add(ErrorCode::UnknownChannel, name, "no such channel");
                continue;
            };
            if let Err(crate::channels::Refusal::Forbidden(why)) = config.admits(&self.identity) {
                refusals.add(ErrorCode::Forbidden, name, why);
                continue;
            }
            if !self.node.hub.is_subscribed(self.registration.id, &name) {
                if self.node.hub.subscription_count(self.registration.id) >= limit {
                    let why = format!("a connection may hold at most {limit} subscriptions");
                    refusals.add(ErrorCode::TooManySubscriptions, name, &why);
                    continue;
                }
                if let Err(e) = self.join(interned, config).await {
                    refusals.add(ErrorCode::Unavailable, name, &e.to_string());
                    continue;
                }
                joined.push(interned.clone());
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
            let Some((interned, config)) = channels.get(name) else {
                continue;
            };
            let complete = match Offset::parse(since).filter(|_| config.history) {
                None => false,
                Some(since) => {
                    let topic = topic_for(interned, config, &self.identity);
                    let after = self.replay_start(name, Some(since));
                    match self
                        .node
                        .broker
                        .history(&topic, config, after.as_deref())
                        .await
                    {
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
            let Some((_, config)) = channels.get(&name) else {
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

    async fn on_unsubscribe(&mut self, requested: Vec<String>) -> Flow {
        let channels = self.node.channels.snapshot();
        let mut left = Vec::new();
        let mut unknown = Refusals::default();
        for name in dedup(requested) {
            if self.node.hub.unsubscribe(self.registration.id, &name) {
                self.release(&name);
                left.push(name);
            } else if channels.get(&name).is_some() {
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

    async fn join(
        &mut self,
        name: &ChannelName,
        config: &ChannelConfig,
    ) -> Result<(), BrokerError> {
        let topic = topic_for(name, config, &self.identity);
        self.node.broker.subscribe(topic.clone()).await?;
        if self.node.hub.subscribe(self.registration.id, name) {
            self.held.push((name.clone(), topic));
        } else {
            self.node.broker.unsubscribe(topic);
        }
        Ok(())
    }

    fn release(&mut self, name: &str) {
        if let Some(index) = self.held.iter().position(|(c, _)| &**c == name) {
            let (_, topic) = self.held.swap_remove(index);
            self.node.broker.unsubscribe(topic);
        }
    }

    async fn write_batch(&mut self, first: Arc<Delivery>) -> Flow {
        let mut batch: Vec<Arc<Delivery>> = Vec::with_capacity(8);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match self.registration.rx.try_recv() {
                Ok(delivery) => batch.push(delivery),
                Err(_) => break,
            }
        }
        if !self.replayed.is_empty() {
            batch.retain(|d| !self.already_replayed(d));
            if batch.is_empty() {
                return Flow::Continue;
            }
        }
        let write = async {
            for delivery in &batch {
                self.ws
                    .feed(WsMessage::Text(delivery.frame.clone()))
                    .await?;
            }
            self.ws.flush().await
        };
        let control = self.registration.control.clone();
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(self.node.config.write_timeout, write) => outcome,
            // A slow consumer stuck in a write is cut loose at once.
            request = control.requested() => {
                self.node
                    .metrics
                    .drop_messages(DropReason::Disconnected, batch.len() as u64);
                return Flow::Close(request.code, request.reason);
            }
        };
        match outcome {
            Ok(Ok(())) => {
                let now = unix_micros();
                let metrics = &self.node.metrics;
                for delivery in &batch {
                    metrics
                        .delivery_latency
                        .observe_micros(now.saturating_sub(delivery.accepted_at_micros));
                }
                metrics.delivered.inc_by(batch.len() as u64);
                for delivery in &batch {
                    if let Some(offset) = delivery.offset {
                        self.note_sent(&delivery.channel, offset);
                        self.note_delivered(&delivery.channel, offset);
                    }
                }
                if self.cursors_dirty && self.cursors_flushed.elapsed() > CURSOR_FLUSH {
                    self.flush_cursors();
                }
                Flow::Continue
            }
            Ok(Err(_)) | Err(_) => {
                self.node
                    .metrics
                    .drop_messages(DropReason::Disconnected, batch.len() as u64);
                Flow::Gone
            }
        }
    }

    /// Whether a live delivery was already sent by a replay (each live copy arrives
    /// once, so its offset is forgotten when it does).
    fn already_replayed(&mut self, delivery: &Delivery) -> bool {
        let Some(offset) = delivery.offset else {
            return false;
        };
        let Some(offsets) = self.replayed.get_mut(&delivery.channel) else {
            return false;
        };
        if offsets.remove(&offset) {
            if offsets.is_empty() {
                self.replayed.remove(&delivery.channel);
            }
            return true;
        }
        if offsets.last().is_none_or(|newest| offset > *newest) {
            // Live delivery has overtaken the replay: no more duplicates possible.
            self.replayed.remove(&delivery.channel);
        }
        false
    }

    async fn keepalive(&mut self, interval: Duration) -> Flow {
        if self.last_seen.elapsed() > interval * 2 {
            return Flow::Close(1001, "no response to pings");
        }
        self.send_message(WsMessage::Ping(Default::default())).await
    }

    async fn reply_error(&mut self, code: ErrorCode, channel: Option<&str>, why: &str) -> Flow {
        self.node.metrics.client_error(error_label(code));
        self.send(ServerMessage::error(code, channel, why)).await
    }

    async fn send(&mut self, frame: Utf8Bytes) -> Flow {
        self.send_message(WsMessage::Text(frame)).await
    }

    async fn send_message(&mut self, message: WsMessage) -> Flow {
        match tokio::time::timeout(self.node.config.write_timeout, self.ws.send(message)).await {
            Ok(Ok(())) => Flow::Continue,
            _ => Flow::Gone,
        }
    }

    /// Sends a close frame, then lingers: reads and discards input until the peer's
    /// close frame, the end of the stream or [`LINGER`]. Closing a socket that still
    /// holds unread data makes the kernel answer with a reset, which can discard the
    /// close frame still queued for the client (browsers then report 1006).
    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        match tokio::time::timeout(CLOSE_SEND, self.ws.close(Some(frame))).await {
            Ok(Ok(())) => {}
            // The peer is gone, or not reading at all: nothing to linger for.
            _ => return,
        }
        let deadline = Instant::now() + LINGER;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) | Ok(Some(Ok(WsMessage::Close(_)))) => return,
                Ok(Some(Ok(_))) => continue,
                // Input that cannot be parsed as frames (e.g. the rest of an oversized
                // frame), or a stream already ended by such an error.
                Ok(Some(Err(_)) | None) => break,
            }
        }
        let mut scratch = vec![0u8; 4096];
        let stream = self.ws.get_mut();
        while let Ok(Ok(read)) = tokio::time::timeout_at(deadline, stream.read(&mut scratch)).await
        {
            if read == 0 {
                return;
            }
        }
    }

    fn finish(mut self) {
        self.flush_cursors();
        if let Some(user) = self.identity.user.as_deref() {
            self.node.release_user(user);
        }
        let id = self.registration.id;
        self.node.hub.disconnect(id);
        for (_, topic) in self.held.drain(..) {
            self.node.broker.unsubscribe(topic);
        }
        self.registration.rx.close();
        let mut undelivered = 0;
        while self.registration.rx.try_recv().is_ok() {
            undelivered += 1;
        }
        if undelivered > 0 {
            self.node
                .metrics
                .drop_messages(DropReason::Disconnected, undelivered);
        }
    }
}

/// Channels on which Herald remembers, per user, what was delivered or acknowledged,
/// so a returning user gets what they missed.
fn keeps_cursor(config: &ChannelConfig) -> bool {
    config.history && (config.is_per_user() || config.ack_required)
}

fn read_error_flow(error: &WsError) -> Flow {
    match error {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            Flow::Close(1009, "message too big")
        }
        WsError::Capacity(_) => Flow::Close(1009, "frame too big"),
        WsError::Utf8(_) => Flow::Close(1007, "text frame is not valid UTF-8"),
        WsError::Protocol(_) => Flow::Close(1002, "WebSocket protocol error"),
        _ => Flow::Gone,
    }
}

fn error_label(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadRequest => "bad_request",
        ErrorCode::Forbidden => "forbidden",
        ErrorCode::UnknownChannel => "unknown_channel",
        ErrorCode::RateLimited => "rate_limited",
        ErrorCode::TooManySubscriptions => "too_many_subscriptions",
        ErrorCode::Unavailable => "unavailable",
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
