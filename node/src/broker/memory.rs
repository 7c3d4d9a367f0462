//! The embedded broker: one node, no external services.
//!
//! With a single node there is nobody to forward messages to, so publishing stores
//! the message (for channels with history), gives it an offset and hands it to the
//! local hub, under the lock that orders the offsets: concurrent publishes to one
//! channel reach connections in offset order. History, recovery and cursors behave as
//! they do on Redis, so `herald-node --dev` shows the whole protocol.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{Accepted, BoxFuture, Broker, BrokerError, Health, Hold, Replay, Taken};
use crate::channels::ChannelConfig;
use crate::coalesce::window::Windows;
use crate::message::{unix_micros, DeliverySink, Message, Offset, Topic};

#[derive(Debug, Default)]
struct Stream {
    entries: VecDeque<(Offset, Message, Instant)>,
    last: Offset,
    max_deleted: Offset,
}

impl Stream {
    fn trim(&mut self, capacity: usize, expiry: Duration) {
        let now = Instant::now();
        while self.entries.len() > capacity
            || self
                .entries
                .front()
                .is_some_and(|(_, _, at)| now.duration_since(*at) > expiry)
        {
            if let Some((offset, _, _)) = self.entries.pop_front() {
                self.max_deleted = offset;
            }
        }
    }

    fn next_offset(&mut self) -> Offset {
        let ms = unix_micros() / 1000;
        self.last = if ms > self.last.ms {
            Offset { ms, seq: 0 }
        } else {
            self.last.next()
        };
        self.last
    }
}

/// In-process broker for a single node.
pub struct MemoryBroker {
    sink: Arc<dyn DeliverySink>,
    interest: Mutex<HashMap<Topic, usize>>,
    streams: Mutex<HashMap<Topic, Stream>>,
    cursors: Mutex<HashMap<(Topic, String), (Offset, Instant)>>,
    idempotency: Mutex<KeyRecords>,
    /// Open coalescing windows by channel, on a clock started with the broker (Tokio's,
    /// so tests can pause it).
    coalescing: Mutex<HashMap<String, Windows<Message>>>,
    epoch: tokio::time::Instant,
}

/// Idempotency records by (channel, key), each with its expiry. Expired records are
/// swept whenever the map has doubled since the last sweep, so memory stays
/// proportional to the keys live within the window.
#[derive(Debug, Default)]
struct KeyRecords {
    records: HashMap<(String, String), (String, Instant)>,
    swept_at_len: usize,
}

impl KeyRecords {
    fn live(&mut self, channel: &str, key: &str, now: Instant) -> Option<&mut (String, Instant)> {
        let id = (channel.to_owned(), key.to_owned());
        if self
            .records
            .get(&id)
            .is_some_and(|(_, until)| *until <= now)
        {
            self.records.remove(&id);
        }
        self.records.get_mut(&id)
    }

    fn insert(&mut self, channel: &str, key: &str, record: &str, until: Instant, now: Instant) {
        if self.records.len() >= 2 * self.swept_at_len.max(512) {
            self.records.retain(|_, (_, until)| *until > now);
            self.swept_at_len = self.records.len();
        }
        self.records.insert(
            (channel.to_owned(), key.to_owned()),
            (record.to_owned(), until),
        );
    }
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker").finish_non_exhaustive()
    }
}

impl MemoryBroker {
    /// A new, empty broker delivering to `sink` (the node's hub).
    pub fn new(sink: Arc<dyn DeliverySink>) -> Self {
        Self {
            sink,
            interest: Mutex::default(),
            streams: Mutex::default(),
            cursors: Mutex::default(),
            idempotency: Mutex::default(),
            coalescing: Mutex::default(),
            epoch: tokio::time::Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// How many local references `topic` holds (for tests and admin views).
    pub fn interest(&self, topic: &Topic) -> usize {
        self.interest.lock().get(topic).copied().unwrap_or(0)
    }
}

impl Broker for MemoryBroker {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn publish<'a>(
        &'a self,
        mut message: Message,
        channel: &'a ChannelConfig,
    ) -> BoxFuture<'a, Result<Accepted, BrokerError>> {
        let delivered_locally = if channel.history {
            // Delivered under the lock that hands out offsets: in offset order.
            let mut streams = self.streams.lock();
            let stream = streams.entry(Topic::of(&message, channel)).or_default();
            let offset = stream.next_offset();
            message.offset = Some(offset);
            stream
                .entries
                .push_back((offset, message.clone(), Instant::now()));
            stream.trim(channel.capacity as usize, channel.expiry());
            self.sink.deliver(&message)
        } else {
            self.sink.deliver(&message)
        };
        Box::pin(async move {
            Ok(Accepted {
                message,
                delivered_locally,
            })
        })
    }

    fn subscribe(&self, topic: Topic) -> BoxFuture<'_, Result<(), BrokerError>> {
        *self.interest.lock().entry(topic).or_default() += 1;
        Box::pin(async { Ok(()) })
    }

    fn unsubscribe(&self, topic: Topic) {
        let mut interest = self.interest.lock();
        if let Some(count) = interest.get_mut(&topic) {
            *count -= 1;
            if *count == 0 {
                interest.remove(&topic);
            }
        }
    }

    fn health(&self) -> Health {
        Health {
            healthy: true,
            detail: "embedded in-memory broker".into(),
        }
    }

    fn history<'a>(
        &'a self,
        topic: &'a Topic,
        channel: &'a ChannelConfig,
        since: Option<Offset>,
    ) -> BoxFuture<'a, Result<Replay, BrokerError>> {
        let replay = {
            let mut streams = self.streams.lock();
            match streams.get_mut(topic) {
                None => Replay {
                    messages: Vec::new(),
                    recovered: true,
                },
                Some(stream) => {
                    stream.trim(channel.capacity as usize, channel.expiry());
                    let after = since.unwrap_or_default();
                    Replay {
                        messages: stream
                            .entries
                            .iter()
                            .filter(|(offset, _, _)| *offset > after)
                            .map(|(_, message, _)| message.clone())
                            .collect(),
                        recovered: after >= stream.max_deleted,
                    }
                }
            }
        };
        Box::pin(async move { Ok(replay) })
    }

    fn load_cursor<'a>(
        &'a self,
        topic: &'a Topic,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Option<Offset>, BrokerError>> {
        let cursor = self
            .cursors
            .lock()
            .get(&(topic.clone(), user.to_owned()))
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(offset, _)| *offset);
        Box::pin(async move { Ok(cursor) })
    }

    fn store_cursor<'a>(
        &'a self,
        topic: &'a Topic,
        user: &'a str,
        offset: Offset,
        channel: &'a ChannelConfig,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let expires = Instant::now() + channel.expiry();
        let mut cursors = self.cursors.lock();
        let entry = cursors
            .entry((topic.clone(), user.to_owned()))
            .or_insert((offset, expires));
        if offset >= entry.0 {
            *entry = (offset, expires);
        }
        drop(cursors);
        Box::pin(async { Ok(()) })
    }

    fn claim_idempotency_key<'a>(
        &'a self,
        channel: &'a str,
        key: &'a str,
        record: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<String>, BrokerError>> {
        let now = Instant::now();
        let mut records = self.idempotency.lock();
        let existing = match records.live(channel, key, now) {
            Some((existing, _)) => Some(existing.clone()),
            None => {
                records.insert(channel, key, record, now + ttl, now);
                None
            }
        };
        drop(records);
        Box::pin(async { Ok(existing) })
    }

    fn settle_idempotency_key<'a>(
        &'a self,
        channel: &'a str,
        key: &'a str,
        record: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let now = Instant::now();
        self.idempotency
            .lock()
            .insert(channel, key, record, now + ttl, now);
        Box::pin(async { Ok(()) })
    }

    fn release_idempotency_key<'a>(
        &'a self,
        channel: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.idempotency
            .lock()
            .records
            .remove(&(channel.to_owned(), key.to_owned()));
        Box::pin(async { Ok(()) })
    }

    fn coalesce_lead<'a>(
        &'a self,
        channel: &'a str,
        key: &'a str,
        window: Duration,
    ) -> BoxFuture<'a, Result<bool, BrokerError>> {
        let now = self.now_ms();
        let first = self
            .coalescing
            .lock()
            .entry(channel.to_owned())
            .or_default()
            .lead(key, now, window.as_millis() as u64);
        Box::pin(async move { Ok(first) })
    }

    fn coalesce_hold<'a>(
        &'a self,
        channel: &'a str,
        key: &'a str,
        message: &'a Message,
        window: Duration,
    ) -> BoxFuture<'a, Result<(Hold, Duration), BrokerError>> {
        let now = self.now_ms();
        let held = self
            .coalescing
            .lock()
            .entry(channel.to_owned())
            .or_default()
            .hold(key, message.clone(), now, window.as_millis() as u64);
        let left = match held {
            Hold::Held { end_ms, .. } => Duration::from_millis(end_ms.saturating_sub(now)),
            Hold::Full => Duration::ZERO,
        };
        Box::pin(async move { Ok((held, left)) })
    }

    fn coalesce_take<'a>(
        &'a self,
        channel: &'a str,
        all: bool,
        _lease: Duration,
    ) -> BoxFuture<'a, Result<Taken, BrokerError>> {
        // One process: a taken message is published by the caller or lost with the
        // process, so there is no lease to keep.
        let now = if all { u64::MAX } else { self.now_ms() };
        let mut coalescing = self.coalescing.lock();
        let taken = match coalescing.get_mut(channel) {
            None => Taken::default(),
            Some(windows) => {
                let messages = windows.take_due(now);
                let next_due_ms = windows.next_due();
                if windows.is_empty() {
                    coalescing.remove(channel);
                }
                Taken {
                    messages,
                    next_due_ms,
                }
            }
        };
        drop(coalescing);
        Box::pin(async move { Ok(taken) })
    }

    fn coalesce_done<'a>(
        &'a self,
        _channel: &'a str,
        _id: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async { Ok(()) })
    }

    fn coalesce_overdue(
        &self,
        _grace: Duration,
    ) -> BoxFuture<'_, Result<Vec<String>, BrokerError>> {
        // The node that opened a window is the only node, and flushes it itself; this
        // periodic call only forgets closed leading windows.
        let now = self.now_ms();
        self.coalescing.lock().retain(|_, windows| {
            windows.forget_closed_leading(now);
            !windows.is_empty()
        });
        Box::pin(async { Ok(Vec::new()) })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::channels::Access;
    use crate::message::Target;
    use serde_json::value::RawValue;

    fn channel(capacity: u32) -> ChannelConfig {
        ChannelConfig {
            history: true,
            capacity,
            ..ChannelConfig::new("orders", Access::User)
        }
    }

    fn message(user: &str, n: u32) -> Message {
        Message {
            id: n.to_string().into(),
            channel: "orders".into(),
            kind: "order_update".into(),
            data: Arc::from(RawValue::from_string(format!("{{\"n\":{n}}}")).unwrap()),
            target: Target::User(user.into()),
            offset: None,
            accepted_at_micros: 0,
            trace: None,
            tags: Default::default(),
        }
    }

    fn topic(user: &str) -> Topic {
        Topic {
            channel: "orders".into(),
            user: Some(user.into()),
        }
    }

    /// Records the offsets it is handed, in order.
    #[derive(Default)]
    struct Recorder(parking_lot::Mutex<Vec<Offset>>);

    impl DeliverySink for Recorder {
        fn deliver(&self, message: &Message) -> usize {
            self.0.lock().extend(message.offset);
            1
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_publishes_reach_the_hub_in_offset_order() {
        let recorder = Arc::new(Recorder::default());
        let broker = Arc::new(MemoryBroker::new(recorder.clone()));
        let config = Arc::new(ChannelConfig {
            access: Access::Authenticated,
            ..channel(10_000)
        });
        let tasks: Vec<_> = (0..4)
            .map(|t| {
                let (broker, config) = (broker.clone(), config.clone());
                tokio::spawn(async move {
                    for n in 0..500 {
                        let mut m = message("a", t * 1000 + n);
                        m.target = Target::All;
                        let accepted = broker.publish(m, &config).await.unwrap();
                        assert_eq!(accepted.delivered_locally, 1);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let seen = recorder.0.lock();
        assert_eq!(seen.len(), 2000);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "out of offset order");
    }

    #[tokio::test]
    async fn interest_is_reference_counted() {
        let broker = crate::testing::memory_broker();
        let topic = Topic {
            channel: "alerts".into(),
            user: None,
        };
        broker.subscribe(topic.clone()).await.unwrap();
        broker.subscribe(topic.clone()).await.unwrap();
        broker.unsubscribe(topic.clone());
        assert_eq!(broker.interest(&topic), 1);
        broker.unsubscribe(topic.clone());
        assert_eq!(broker.interest(&topic), 0);
        // An unbalanced unsubscribe is harmless.
        broker.unsubscribe(topic.clone());
        assert_eq!(broker.interest(&topic), 0);
    }

    #[tokio::test]
    async fn history_replays_after_an_offset_and_reports_gaps() {
        let broker = crate::testing::memory_broker();
        let config = channel(3);
        let mut offsets = Vec::new();
        for n in 0..5 {
            let stored = broker.publish(message("a", n), &config).await.unwrap();
            offsets.push(stored.message.offset.unwrap());
        }
        // Capacity 3 kept messages 2, 3, 4.
        let replay = broker
            .history(&topic("a"), &config, Some(offsets[2]))
            .await
            .unwrap();
        let ids: Vec<_> = replay.messages.iter().map(|m| m.id.to_string()).collect();
        assert_eq!(ids, ["3", "4"]);
        assert!(replay.recovered);
        let replay = broker
            .history(&topic("a"), &config, Some(offsets[0]))
            .await
            .unwrap();
        assert_eq!(replay.messages.len(), 3);
        assert!(!replay.recovered, "message 1 was trimmed away");
        // Another user's stream is separate.
        let other = broker.history(&topic("b"), &config, None).await.unwrap();
        assert!(other.messages.is_empty());
    }

    #[tokio::test]
    async fn cursors_only_move_forward() {
        let broker = crate::testing::memory_broker();
        let config = channel(10);
        broker
            .store_cursor(&topic("a"), "a", Offset { ms: 10, seq: 0 }, &config)
            .await
            .unwrap();
        broker
            .store_cursor(&topic("a"), "a", Offset { ms: 9, seq: 0 }, &config)
            .await
            .unwrap();
        assert_eq!(
            broker.load_cursor(&topic("a"), "a").await.unwrap(),
            Some(Offset { ms: 10, seq: 0 })
        );
        assert_eq!(broker.load_cursor(&topic("a"), "b").await.unwrap(), None);
    }
}
