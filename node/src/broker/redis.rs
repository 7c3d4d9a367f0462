//! The Redis (Cluster) broker: how many nodes act as one.
//!
//! Publishing runs one Lua script per message that appends it to the topic's stream
//! (trimmed to the channel's capacity and age) and `SPUBLISH`es it, atomically and in
//! one hash slot (both names share a hash tag). Nodes `SSUBSCRIBE` to a topic's shard
//! channel only while a local connection needs it. A dedicated task drains the
//! subscriber's message buffer into the delivery sink (the hub); offsets drop duplicates, and whenever
//! messages may have been missed (buffer lag, reconnect, failover) the gap is read
//! back from the streams.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand};
use parking_lot::Mutex;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::redis_coalesce::Scripts;
use super::{wire, Accepted, BoxFuture, Broker, BrokerError, Health, Hold, Replay, Taken};
use crate::channels::{ChannelConfig, Registry};
use crate::message::{unix_micros, DeliverySink, Message, Offset, Topic};
use crate::metrics::{DecodeSource, DropReason, Metrics};
use crate::telemetry::propagation::TraceContext;
use crate::telemetry::TRACE_TARGET;

/// Stream-id helpers shared by the scripts: `newer(a, b)` compares two ids, `after(id)` is
/// the smallest id greater than `id`.
const ID_LUA: &str = r"
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function newer(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am > bm or (am == bm and as > bs)
end
local function after(id)
  local ms, seq = parse(id)
  return string.format('%d-%d', ms, seq + 1)
end
";

/// Appends to the stream, trims it by count (ARGV[3]) and age (ids below ARGV[4]), records
/// the newest trimmed offset in KEYS[2] (Redis tracks `max-deleted-entry-id` for `XDEL` only,
/// not for trimming), refreshes both keys' expiry and publishes `<offset> <message>` on the
/// shard channel. Returns the offset.
const PUBLISH_LUA: &str = r"
local id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
local cut = nil
local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[3])
if excess > 0 then
  local old = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', excess)
  cut = old[#old][1]
end
local aged = redis.call('XREVRANGE', KEYS[1], '(' .. ARGV[4], '-', 'COUNT', 1)
if #aged > 0 and (cut == nil or newer(aged[1][1], cut)) then cut = aged[1][1] end
if cut ~= nil then
  redis.call('XTRIM', KEYS[1], 'MINID', after(cut))
  redis.call('SET', KEYS[2], cut)
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('SPUBLISH', ARGV[1], id .. ' ' .. ARGV[2])
return id
";

/// Returns the newest trimmed (or deleted) offset and the entries after ARGV[1] (all when
/// empty).
const HISTORY_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {'', {}} end
local deleted = redis.call('GET', KEYS[2]) or '0-0'
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'max-deleted-entry-id' and newer(info[i + 1], deleted) then
    deleted = info[i + 1]
  end
end
local from = '-'
if ARGV[1] ~= '' then from = '(' .. ARGV[1] end
return {deleted, redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', ARGV[2])}
";

/// Sets the cursor only if it moves forward, with an expiry.
const CURSOR_LUA: &str = r"
local current = redis.call('GET', KEYS[1])
local nms, nseq = parse(ARGV[1])
if not nms then return 0 end
if current then
  local cms, cseq = parse(current)
  if cms and (cms > nms or (cms == nms and cseq >= nseq)) then
    redis.call('EXPIRE', KEYS[1], ARGV[2])
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
";

/// How long a publish waits for its message to come back from pub/sub to answer how
/// many local connections it reached. Past it the answer says 0; the message still
/// arrives (late, or through gap recovery).
const RETURN_WAIT: Duration = Duration::from_secs(1);

/// Settings for [`RedisBroker::connect`].
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://host:port` or `redis-cluster://host:port?node=host:port&...`.
    pub url: String,
    /// This node's id, written into its messages (their origin).
    pub node_id: String,
    /// Replicas a history write must reach before a publish is acknowledged.
    pub min_replicas: u32,
    /// Capacity of the subscriber's message buffer.
    pub buffer: usize,
}

/// The topic's keys (`herald_contract::keys`): stream and shard channel share a hash
/// tag, so one script reaches both.
fn keys(topic: &Topic) -> herald_contract::keys::Topic<'_> {
    herald_contract::keys::Topic {
        channel: &topic.channel,
        user: topic.user.as_deref(),
    }
}

fn shard_channel(topic: &Topic) -> String {
    keys(topic).shard_channel()
}

fn stream_key(topic: &Topic) -> String {
    keys(topic).stream()
}

/// The newest offset trimmed from the topic's stream (same slot as the stream).
fn trimmed_key(topic: &Topic) -> String {
    keys(topic).trimmed()
}

fn cursor_key(topic: &Topic, user: &str) -> String {
    keys(topic).cursor(user)
}

/// A publish of this node on its way back: (message id, shard channel).
type Returning = (Arc<str>, String);

/// Multi-node broker on Redis or Redis Cluster.
pub struct RedisBroker {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    client: Client,
    subscriber: SubscriberClient,
    /// Where messages go (the hub): this node's own too, as they come back from
    /// pub/sub, so that a channel's messages reach it in the order Redis published
    /// them, whichever node they came from.
    sink: Arc<dyn DeliverySink>,
    /// Publishes of this node waiting for their message to come back and be
    /// delivered: (message id, shard channel) → how many connections it reached.
    returning: Mutex<HashMap<Returning, oneshot::Sender<usize>>>,
    channels: Arc<Registry>,
    metrics: Arc<Metrics>,
    min_replicas: u32,
    publish: Script,
    history: Script,
    cursor: Script,
    coalesce: Scripts,
    /// Local references per topic; changed only under this lock, which is also held
    /// while (un)subscribing, so Redis always matches the counts.
    interest: tokio::sync::Mutex<HashMap<Topic, usize>>,
    /// Shard channels of the topics in `interest`, readable without waiting: a publish
    /// asks whether its message will come back here, and must not queue behind a
    /// subscribe's Redis round trip for that.
    subscribed: Mutex<HashSet<String>>,
    /// Newest offset delivered per shard channel, to drop duplicates and find gaps.
    seen: Mutex<HashMap<String, Offset>>,
    healthy: AtomicBool,
    detail: Mutex<String>,
    /// Unix second of the last decode failure logged.
    decode_logged: AtomicU64,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("node_id", &self.inner.node_id)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

impl RedisBroker {
    /// Connects, starts the subscriber and its drain, reconnect and health tasks (in
    /// `background`, which stops them at shutdown).
    pub async fn connect(
        settings: RedisSettings,
        sink: Arc<dyn DeliverySink>,
        channels: Arc<Registry>,
        metrics: Arc<Metrics>,
        background: &crate::background::Background,
    ) -> Result<Self, BrokerError> {
        let config = Config::from_url(&settings.url).map_err(unavailable)?;
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
                c.internal_command_timeout = Duration::from_secs(2);
                c.max_command_attempts = 3;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = Duration::from_secs(3);
                p.broadcast_channel_capacity = settings.buffer.max(1024);
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
        let client = builder.build().map_err(unavailable)?;
        let subscriber = builder.build_subscriber_client().map_err(unavailable)?;
        client.init().await.map_err(unavailable)?;
        subscriber.init().await.map_err(unavailable)?;
        let inner = Arc::new(Inner {
            node_id: settings.node_id,
            client,
            subscriber,
            sink,
            channels,
            metrics,
            min_replicas: settings.min_replicas,
            publish: Script::from_lua(format!("{ID_LUA}{PUBLISH_LUA}")),
            history: Script::from_lua(format!("{ID_LUA}{HISTORY_LUA}")),
            cursor: Script::from_lua(format!("{ID_LUA}{CURSOR_LUA}")),
            coalesce: Scripts::new(),
            interest: tokio::sync::Mutex::default(),
            subscribed: Mutex::default(),
            returning: Mutex::default(),
            seen: Mutex::default(),
            healthy: AtomicBool::new(true),
            detail: Mutex::new("connected".into()),
            decode_logged: AtomicU64::new(0),
        });
        background.spawn_until_stopped("redis pubsub", drain(inner.clone()));
        background
            .spawn_until_stopped("redis resubscribe", resubscribe_on_reconnect(inner.clone()));
        background.spawn_until_stopped("redis health", watch_health(inner.clone()));
        Ok(Self { inner })
    }

    /// The command client, shared with the cluster registry.
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }
}

impl Inner {
    fn set_health(&self, healthy: bool, detail: String) {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if was != healthy {
            if healthy {
                tracing::info!("Redis reachable again");
            } else {
                tracing::warn!(%detail, "Redis unreachable");
            }
        }
        *self.detail.lock() = detail;
    }

    /// Delivers one pub/sub message unless it is a duplicate.
    fn on_message(&self, channel: &str, payload: &str) {
        let (offset, json) = match wire::split_payload(payload) {
            Ok(split) => split,
            Err(e) => return self.undecodable(DecodeSource::Pubsub, channel, None, &e),
        };
        if let Some(offset) = offset {
            let mut seen = self.seen.lock();
            let last = seen.entry(channel.to_owned()).or_default();
            if offset <= *last {
                return;
            }
            *last = offset;
        }
        match wire::decode(json, offset) {
            Ok((message, origin)) => self.deliver(channel, &message, &origin),
            Err(e) => self.undecodable(DecodeSource::Pubsub, channel, offset, &e),
        }
    }

    /// Hands a message to the hub; tells this node's publish of it, if one waits.
    fn deliver(&self, shard_channel: &str, message: &Message, origin: &str) {
        let reached = self.sink.deliver(message);
        if origin == self.node_id {
            let waiting = self
                .returning
                .lock()
                .remove(&(message.id.clone(), shard_channel.to_owned()));
            if let Some(waiting) = waiting {
                // The publish may have given up waiting: nothing to tell then.
                let _ = waiting.send(reached);
            }
        }
    }

    /// Counts and logs a message that cannot be delivered because it does not decode
    /// (at most one log line per second: a poisoned stream must not flood the log).
    fn undecodable(
        &self,
        source: DecodeSource,
        topic: &str,
        offset: Option<Offset>,
        error: &wire::DecodeError,
    ) {
        self.metrics.decode_failure(source, error.reason());
        let now = unix_micros() / 1_000_000;
        if self.decode_logged.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(
                source = ?source,
                topic,
                offset = offset.map(tracing::field::display),
                reason = error.reason(),
                %error,
                "undecodable broker message dropped"
            );
        }
    }

    async fn fetch(
        &self,
        topic: &Topic,
        channel: &ChannelConfig,
        since: Option<Offset>,
    ) -> Result<(Vec<(Message, String)>, bool), BrokerError> {
        let reply: Value = self
            .history
            .evalsha_with_reload(
                &self.client,
                vec![stream_key(topic), trimmed_key(topic)],
                vec![
                    since.map(|o| o.to_string()).unwrap_or_default(),
                    channel.capacity.to_string(),
                ],
            )
            .await
            .map_err(unavailable)?;
        let mut parts = reply.into_array().into_iter();
        let deleted = parts.next().and_then(|v| v.as_string()).unwrap_or_default();
        let entries = parts.next().map(Value::into_array).unwrap_or_default();
        let after = since.unwrap_or_default();
        let recovered = if deleted.is_empty() {
            // No stream: nothing was ever kept, or everything expired.
            since.is_none()
        } else {
            Offset::parse(&deleted).is_none_or(|d| after >= d)
        };
        let mut messages = Vec::with_capacity(entries.len());
        let key = stream_key(topic);
        for entry in entries {
            let mut entry = entry.into_array().into_iter();
            let id = entry
                .next()
                .and_then(|id| id.as_string())
                .map(|id| Offset::parse(&id));
            let json = entry
                .next()
                .and_then(|fields| fields.into_array().get(1).and_then(Value::as_string));
            let decoded = match (&id, json) {
                (None, _) => Err(wire::DecodeError::Incomplete("id")),
                (Some(_), None) => Err(wire::DecodeError::Incomplete("message")),
                (Some(id), Some(json)) => wire::decode(&json, *id),
            };
            match decoded {
                Ok(decoded) => messages.push(decoded),
                Err(e) => self.undecodable(DecodeSource::History, &key, id.flatten(), &e),
            }
        }
        Ok((messages, recovered))
    }

    /// Reads back from history whatever live delivery may have missed.
    async fn recover_gaps(&self) {
        let topics: Vec<Topic> = self.interest.lock().await.keys().cloned().collect();
        let channels = self.channels.snapshot();
        for topic in topics {
            let Some(config) = channels.get(&topic.channel).map(|r| r.config) else {
                continue;
            };
            if !config.history {
                continue;
            }
            let key = shard_channel(&topic);
            let Some(last) = self.seen.lock().get(&key).copied() else {
                continue;
            };
            match self.fetch(&topic, config, Some(last)).await {
                Ok((messages, _)) => {
                    for (message, origin) in messages {
                        let Some(offset) = message.offset else {
                            continue;
                        };
                        {
                            let mut seen = self.seen.lock();
                            let last = seen.entry(key.clone()).or_default();
                            if offset <= *last {
                                continue;
                            }
                            *last = offset;
                        }
                        self.deliver(&key, &message, &origin);
                    }
                }
                Err(e) => tracing::warn!(topic = %key, error = %e, "gap recovery failed"),
            }
        }
    }

    /// Re-sends `SSUBSCRIBE` for every shard channel this node needs, one command per
    /// hash slot, to whichever master now owns it.
    async fn restore_subscriptions(&self) {
        let tracked: Vec<String> = self
            .subscriber
            .tracked_shard_channels()
            .into_iter()
            .map(|c| c.to_string())
            .collect();
        let groups = match fred::util::group_by_hash_slot(tracked) {
            Ok(groups) => groups,
            Err(e) => {
                tracing::warn!(error = %e, "cannot group subscriptions by slot");
                return;
            }
        };
        for (_, channels) in groups {
            let channels: Vec<Key> = channels.into_iter().collect();
            if let Err(e) = self.subscriber.ssubscribe(channels).await {
                tracing::warn!(error = %e, "restoring subscriptions failed");
            }
        }
    }

    async fn wait_for_replicas(&self, key: &str) -> Result<(), BrokerError> {
        if self.min_replicas == 0 {
            return Ok(());
        }
        let slot = fred::util::redis_keyslot(key.as_bytes());
        let command = CustomCommand::new_static("WAIT", ClusterHash::Custom(slot), false);
        let reached: i64 = self
            .client
            .custom(command, vec![i64::from(self.min_replicas), 1000])
            .await
            .map_err(unavailable)?;
        if reached < i64::from(self.min_replicas) {
            // A shard that lost its replica (its master failed over and the old one has
            // not rejoined) cannot replicate at all: accept rather than refuse every
            // publish on it, and say so. A lagging replica, though, means retry.
            let role: Value = self
                .client
                .custom(
                    CustomCommand::new_static("ROLE", ClusterHash::Custom(slot), false),
                    Vec::<Value>::new(),
                )
                .await
                .map_err(unavailable)?;
            let replicas = role
                .into_array()
                .get(2)
                .map_or(0, |r| r.clone().into_array().len());
            if replicas == 0 {
                tracing::warn!(key, "shard has no replica: history write not replicated");
                self.metrics.unreplicated.inc();
                return Ok(());
            }
            return Err(BrokerError::Unavailable(format!(
                "message stored but reached only {reached} of {} replicas in time; it may be lost on failover, retry",
                self.min_replicas
            )));
        }
        Ok(())
    }
}

async fn drain(inner: Arc<Inner>) {
    let mut rx = inner.subscriber.message_rx();
    loop {
        match rx.recv().await {
            Ok(message) => {
                let Some(payload) = message.value.as_str() else {
                    continue;
                };
                inner.on_message(&message.channel, &payload);
            }
            Err(RecvError::Lagged(missed)) => {
                inner.metrics.drop_messages(DropReason::BrokerLag, missed);
                tracing::warn!(
                    missed,
                    "subscriber buffer overflowed; recovering from history"
                );
                inner.recover_gaps().await;
            }
            Err(RecvError::Closed) => break,
        }
    }
}

async fn resubscribe_on_reconnect(inner: Arc<Inner>) {
    let mut reconnects = inner.subscriber.reconnect_rx();
    loop {
        match reconnects.recv().await {
            Ok(server) => {
                tracing::info!(%server, "Redis subscriber reconnected; restoring subscriptions");
                inner.restore_subscriptions().await;
                inner.recover_gaps().await;
            }
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => break,
        }
    }
}

async fn watch_health(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let probe =
            tokio::time::timeout(Duration::from_secs(2), inner.client.ping::<String>(None)).await;
        match probe {
            Ok(Ok(_)) => {
                let was_down = !inner.healthy.load(Ordering::Relaxed);
                inner.set_health(true, "connected".into());
                if was_down {
                    inner.restore_subscriptions().await;
                    inner.recover_gaps().await;
                }
            }
            Ok(Err(e)) => inner.set_health(false, e.to_string()),
            Err(_) => inner.set_health(false, "Redis did not answer within 2 s".into()),
        }
    }
}

impl Broker for RedisBroker {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn publish<'a>(
        &'a self,
        mut message: Message,
        channel: &'a ChannelConfig,
    ) -> BoxFuture<'a, Result<Accepted, BrokerError>> {
        let topic = Topic::of(&message, channel);
        let operation = if channel.history {
            "EVALSHA"
        } else {
            "SPUBLISH"
        };
        // The Redis hop of a publish's trace; the receiving nodes' deliveries are its
        // children, through the trace context written into the message.
        let span = tracing::info_span!(
            target: TRACE_TARGET,
            "broker.publish",
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            db.system = "redis",
            db.operation.name = operation,
            channel = %message.channel,
            message.id = %message.id,
            shard_channel = tracing::field::Empty,
            stream = tracing::field::Empty,
            offset = tracing::field::Empty,
            min_replicas = self.inner.min_replicas,
            error.message = tracing::field::Empty,
        );
        let trace = TraceContext::of(&span);
        let recorder = span.clone();
        let publish = async move {
            let inner = &self.inner;
            let payload = wire::encode(&message, &inner.node_id, trace.as_ref());
            let shard_channel = shard_channel(&topic);
            let span = recorder;
            span.record("shard_channel", &shard_channel);
            // With local subscribers, the message is delivered here when it comes back
            // from pub/sub (or from gap recovery): wait for that, briefly, to answer
            // how many connections it reached.
            let returning = (message.id.clone(), shard_channel.clone());
            let returned = if inner.subscribed.lock().contains(&shard_channel) {
                let (tx, rx) = oneshot::channel();
                inner.returning.lock().insert(returning.clone(), tx);
                Some(rx)
            } else {
                None
            };
            let result = if channel.history {
                let key = stream_key(&topic);
                span.record("stream", &key);
                let expiry_ms = channel.expiry().as_millis() as u64;
                let min_id = format!("{}-0", (unix_micros() / 1000).saturating_sub(expiry_ms));
                let offset: Result<String, _> = inner
                    .publish
                    .evalsha_with_reload(
                        &inner.client,
                        vec![key.clone(), trimmed_key(&topic)],
                        vec![
                            shard_channel,
                            payload,
                            channel.capacity.to_string(),
                            min_id,
                            channel.expiry_secs.max(1).to_string(),
                        ],
                    )
                    .await;
                match offset {
                    Ok(offset) => {
                        span.record("offset", &offset);
                        message.offset = Offset::parse(&offset);
                        inner.wait_for_replicas(&key).await
                    }
                    Err(e) => Err(unavailable(e)),
                }
            } else {
                inner
                    .client
                    .spublish::<(), _, _>(shard_channel, format!("- {payload}"))
                    .await
                    .map_err(unavailable)
            };
            if let Err(BrokerError::Unavailable(detail)) = &result {
                span.record("otel.status_code", "ERROR");
                span.record("error.message", detail.as_str());
                inner.set_health(false, detail.clone());
            }
            let delivered_locally = match (&result, returned) {
                (Ok(()), Some(rx)) => tokio::time::timeout(RETURN_WAIT, rx)
                    .await
                    .ok()
                    .and_then(Result::ok),
                _ => None,
            };
            if delivered_locally.is_none() {
                inner.returning.lock().remove(&returning);
            }
            result.map(|()| Accepted {
                message,
                delivered_locally: delivered_locally.unwrap_or(0),
            })
        };
        Box::pin(publish.instrument(span))
    }

    fn subscribe(&self, topic: Topic) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut interest = inner.interest.lock().await;
            let count = interest.entry(topic.clone()).or_default();
            if *count == 0 {
                if let Err(e) = inner.subscriber.ssubscribe(shard_channel(&topic)).await {
                    interest.remove(&topic);
                    return Err(unavailable(e));
                }
                inner.subscribed.lock().insert(shard_channel(&topic));
            }
            *interest.get_mut(&topic).expect("just inserted") += 1;
            Ok(())
        })
    }

    fn unsubscribe(&self, topic: Topic) {
        let inner = self.inner.clone();
        // Not tracked for shutdown on purpose: one cut short leaves nothing behind in
        // Redis (shard subscriptions end with the subscriber connection).
        tokio::spawn(async move {
            let mut interest = inner.interest.lock().await;
            let Some(count) = interest.get_mut(&topic) else {
                return;
            };
            *count -= 1;
            if *count == 0 {
                interest.remove(&topic);
                let channel = shard_channel(&topic);
                inner.subscribed.lock().remove(&channel);
                inner.seen.lock().remove(&channel);
                if let Err(e) = inner.subscriber.sunsubscribe(channel).await {
                    tracing::debug!(error = %e, "sunsubscribe failed");
                }
            }
        });
    }

    fn health(&self) -> Health {
        Health {
            healthy: self.inner.healthy.load(Ordering::Relaxed),
            detail: self.inner.detail.lock().clone(),
        }
    }

    fn history<'a>(
        &'a self,
        topic: &'a Topic,
        channel: &'a ChannelConfig,
        since: Option<Offset>,
    ) -> BoxFuture<'a, Result<Replay, BrokerError>> {
        Box::pin(async move {
            let (messages, recovered) = self.inner.fetch(topic, channel, since).await?;
            Ok(Replay {
                messages: messages.into_iter().map(|(m, _)| m).collect(),
                recovered,
            })
        })
    }

    fn load_cursor<'a>(
        &'a self,
        topic: &'a Topic,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Option<Offset>, BrokerError>> {
        Box::pin(async move {
            self.inner
                .client
                .get::<Option<String>, _>(cursor_key(topic, user))
                .await
                .map(|cursor| cursor.as_deref().and_then(Offset::parse))
                .map_err(unavailable)
        })
    }

    fn store_cursor<'a>(
        &'a self,
        topic: &'a Topic,
        user: &'a str,
        offset: Offset,
        channel: &'a ChannelConfig,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            self.inner
                .cursor
                .evalsha_with_reload::<i64, _, _>(
                    &self.inner.client,
                    vec![cursor_key(topic, user)],
                    vec![offset.to_string(), channel.expiry_secs.max(1).to_string()],
                )
                .await
                .map(|_| ())
                .map_err(unavailable)
        })
    }

    fn claim_idempotency_key<'a>(
        &'a self,
        channel: &'a str,
        key: &'a str,
        record: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<String>, BrokerError>> {
        Box::pin(async move {
            // SET NX GET (Redis 7.0+): sets only when absent and returns what was there,
            // in one command, so two nodes claiming one key cannot both win.
            self.inner
                .client
                .set::<Option<String>, _, _>(
                    herald_contract::keys::idempotency(channel, key),
                    record,
                    Some(Expiration::PX(millis(ttl))),
                    Some(SetOptions::NX),
                    true,
                )
                .await
                .map_err(unavailable)
        })
    }

    fn settle_idempotency_key<'a>(
        &'a self,
        channel: &'a str,
        key: &'a str,
        record: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            self.inner
                .client
                .set::<(), _, _>(
                    herald_contract::keys::idempotency(channel, key),
                    record,
                    Some(Expiration::PX(millis(ttl))),
                    None,
                    false,
                )
                .await
                .map_err(unavailable)
        })
    }

    fn release_idempotency_key<'a>(
        &'a self,
        channel: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            self.inner
                .client
                .del::<i64, _>(herald_contract::keys::idempotency(channel, key))
                .await
                .map(|_| ())
                .map_err(unavailable)
        })
    }

    fn coalesce_lead<'a>(
        &'a self,
        channel: &'a str,
        key: &'a str,
        window: Duration,
    ) -> BoxFuture<'a, Result<bool, BrokerError>> {
        let (scripts, client) = self.coalescing();
        Box::pin(scripts.lead(client, channel, key, window))
    }

    fn coalesce_hold<'a>(
        &'a self,
        channel: &'a str,
        key: &'a str,
        message: &'a Message,
        window: Duration,
    ) -> BoxFuture<'a, Result<(Hold, Duration), BrokerError>> {
        let (scripts, client) = self.coalescing();
        let node_id = &self.inner.node_id;
        Box::pin(scripts.hold(client, node_id, channel, key, message, window))
    }

    fn coalesce_take<'a>(
        &'a self,
        channel: &'a str,
        all: bool,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Taken, BrokerError>> {
        let (scripts, client) = self.coalescing();
        Box::pin(scripts.take(client, channel, all, lease))
    }

    fn coalesce_done<'a>(
        &'a self,
        channel: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let (scripts, client) = self.coalescing();
        Box::pin(scripts.done(client, channel, id))
    }

    fn coalesce_overdue(&self, grace: Duration) -> BoxFuture<'_, Result<Vec<String>, BrokerError>> {
        let (scripts, client) = self.coalescing();
        Box::pin(scripts.overdue(client, grace))
    }
}

impl RedisBroker {
    fn coalescing(&self) -> (&Scripts, &Client) {
        (&self.inner.coalesce, &self.inner.client)
    }
}

/// `ttl` in whole milliseconds, at least one (Redis refuses a zero expiry).
fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_and_shard_channel_share_a_hash_slot() {
        for topic in [
            Topic {
                channel: "alerts".into(),
                user: None,
            },
            Topic {
                channel: "orders".into(),
                user: Some("42}{x".into()),
            },
        ] {
            let a = fred::util::redis_keyslot(stream_key(&topic).as_bytes());
            let b = fred::util::redis_keyslot(shard_channel(&topic).as_bytes());
            let c = fred::util::redis_keyslot(cursor_key(&topic, "42").as_bytes());
            assert_eq!(a, b);
            assert_eq!(a, c);
        }
    }
}
