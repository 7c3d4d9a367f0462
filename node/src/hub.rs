//! The hub: this node's connections, their subscriptions, and local fan-out.
//!
//! Each connection registers an outbox (a bounded queue of shared frames plus a
//! close signal). A message is serialized once, then the same bytes are queued to
//! every recipient. A full queue means a slow consumer: that connection alone is
//! closed and the drop is counted, everyone else is unaffected. Per-user messages
//! only ever reach the connections of the user they name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::filter::Filter;
use crate::message::{DeliverySink, Message, Offset, Target};
use crate::metrics::{DropReason, Metrics};
use crate::protocol;
use crate::telemetry::TRACE_TARGET;
use crate::{ChannelName, UserId};

/// A connection's id, unique within the process.
pub type SessionId = u64;

/// One frame queued to a connection, shared by all its recipients.
#[derive(Debug)]
pub struct Delivery {
    /// The serialized envelope.
    pub frame: Utf8Bytes,
    /// When the publish was accepted, for the latency histogram.
    pub accepted_at_micros: u64,
    /// The channel, so sessions can drop what a replay already sent.
    pub channel: ChannelName,
    /// The history offset, when the channel keeps history.
    pub offset: Option<Offset>,
}

impl Delivery {
    /// Serializes `message` once, for every recipient.
    pub fn of(message: &Message) -> Self {
        Self {
            frame: protocol::envelope(message),
            accepted_at_micros: message.accepted_at_micros,
            channel: message.channel.clone(),
            offset: message.offset,
        }
    }
}

/// Why and how the hub wants a connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseRequest {
    /// WebSocket close code.
    pub code: u16,
    /// Close reason sent to the client.
    pub reason: &'static str,
}

impl CloseRequest {
    /// The outbound queue overflowed (1013: try again later, then recover).
    pub const SLOW_CONSUMER: Self = Self {
        code: 1013,
        reason: "slow consumer: outbound queue full, reconnect and recover",
    };
    /// The node is draining (1012: service restart, reconnect elsewhere).
    pub const DRAINING: Self = Self {
        code: 1012,
        reason: "server restarting, reconnect",
    };
}

/// The close signal half of an outbox.
#[derive(Debug, Default)]
pub struct Control {
    request: Mutex<Option<CloseRequest>>,
    notify: Notify,
}

impl Control {
    /// Asks the connection to close; the first request wins.
    pub fn request_close(&self, request: CloseRequest) {
        let mut slot = self.request.lock();
        if slot.is_none() {
            *slot = Some(request);
            drop(slot);
            self.notify.notify_one();
        }
    }

    /// Resolves when a close was requested.
    pub async fn requested(&self) -> CloseRequest {
        loop {
            if let Some(request) = *self.request.lock() {
                return request;
            }
            self.notify.notified().await;
        }
    }
}

#[derive(Debug, Clone)]
struct Outbox {
    tx: mpsc::Sender<Arc<Delivery>>,
    control: Arc<Control>,
}

#[derive(Debug)]
struct Entry {
    user: Option<UserId>,
    outbox: Outbox,
    connected_at: SystemTime,
    subscriptions: Vec<ChannelName>,
}

/// One connection's place in a channel's fan-out.
#[derive(Debug, Clone)]
struct Subscriber {
    outbox: Outbox,
    /// What it wants of the channel; `None` (the common case): everything.
    filter: Option<Arc<Filter>>,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<SessionId, Entry>,
    channels: HashMap<ChannelName, HashMap<SessionId, Subscriber>>,
    users: HashMap<UserId, Vec<SessionId>>,
    filters: FilterPool,
}

/// Equal filters share one `Arc`, so a fan-out evaluates each distinct filter once
/// per message (see [`Fanout::push`]) however many subscribers hold it: dashboards
/// tend to share a handful of filters.
#[derive(Debug, Default)]
struct FilterPool {
    pool: HashMap<Filter, std::sync::Weak<Filter>>,
    /// Forgotten filters are dropped from the pool when it reaches this size.
    prune_at: usize,
}

impl FilterPool {
    /// The pooled filter equal to `filter`.
    fn intern(&mut self, filter: Option<Arc<Filter>>) -> Option<Arc<Filter>> {
        let filter = filter?;
        if let Some(shared) = self.pool.get(&*filter).and_then(std::sync::Weak::upgrade) {
            return Some(shared);
        }
        if self.pool.len() >= self.prune_at {
            self.pool.retain(|_, weak| weak.strong_count() > 0);
            self.prune_at = (2 * self.pool.len()).max(64);
        }
        self.pool
            .insert(filter.as_ref().clone(), Arc::downgrade(&filter));
        Some(filter)
    }
}

/// A registered connection's receiving end.
#[derive(Debug)]
pub struct Registration {
    /// The connection's id.
    pub id: SessionId,
    /// Frames to write.
    pub rx: mpsc::Receiver<Arc<Delivery>>,
    /// Close requests from the hub.
    pub control: Arc<Control>,
}

/// Refusals at registration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HubError {
    /// The user already has the maximum number of connections.
    #[error("user {user} already has {limit} open connections")]
    TooManyConnectionsForUser {
        /// The user.
        user: UserId,
        /// The per-user cap.
        limit: usize,
    },
}

/// A connection as shown by the admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Connection id on this node.
    pub id: SessionId,
    /// The user, absent for anonymous connections.
    pub user: Option<String>,
    /// Connection time, RFC 3339.
    pub connected_at: String,
    /// Subscribed channels.
    pub subscriptions: Vec<String>,
}

/// This node's connections and subscriptions.
#[derive(Debug)]
pub struct Hub {
    state: RwLock<State>,
    metrics: Arc<Metrics>,
    next_id: AtomicU64,
    queue_capacity: usize,
    max_per_user: usize,
}

impl Hub {
    /// A hub whose connections each queue at most `queue_capacity` frames, with at
    /// most `max_per_user` connections per user (0 = unlimited).
    pub fn new(metrics: Arc<Metrics>, queue_capacity: usize, max_per_user: usize) -> Self {
        Self {
            state: RwLock::default(),
            metrics,
            next_id: AtomicU64::new(1),
            queue_capacity: queue_capacity.max(1),
            max_per_user,
        }
    }

    /// Registers a connection.
    pub fn connect(&self, user: Option<UserId>) -> Result<Registration, HubError> {
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        let control = Arc::new(Control::default());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.write();
        if let Some(user) = &user {
            let existing = state.users.get(user).map_or(0, Vec::len);
            if self.max_per_user > 0 && existing >= self.max_per_user {
                return Err(HubError::TooManyConnectionsForUser {
                    user: user.clone(),
                    limit: self.max_per_user,
                });
            }
            state.users.entry(user.clone()).or_default().push(id);
        }
        state.sessions.insert(
            id,
            Entry {
                user,
                outbox: Outbox {
                    tx,
                    control: control.clone(),
                },
                connected_at: SystemTime::now(),
                subscriptions: Vec::new(),
            },
        );
        drop(state);
        self.metrics.connections.inc();
        self.metrics.connections_total.inc();
        Ok(Registration { id, rx, control })
    }

    /// Forgets a connection; returns the channels it was subscribed to.
    pub fn disconnect(&self, id: SessionId) -> Vec<ChannelName> {
        let mut state = self.state.write();
        let Some(entry) = state.sessions.remove(&id) else {
            return Vec::new();
        };
        for channel in &entry.subscriptions {
            remove_subscriber(&mut state.channels, channel, id);
        }
        if let Some(user) = &entry.user {
            if let Some(ids) = state.users.get_mut(user) {
                ids.retain(|s| *s != id);
                if ids.is_empty() {
                    state.users.remove(user);
                }
            }
        }
        drop(state);
        self.metrics.connections.dec();
        self.metrics
            .subscriptions
            .dec_by(entry.subscriptions.len() as i64);
        entry.subscriptions
    }

    /// Subscribes a connection to every message of `channel`; returns false when it
    /// already was subscribed.
    pub fn subscribe(&self, id: SessionId, channel: &ChannelName) -> bool {
        self.subscribe_filtered(id, channel, None)
    }

    /// Subscribes a connection to what `filter` admits of `channel`; returns false
    /// when it already was subscribed (see [`Hub::set_filter`]).
    pub fn subscribe_filtered(
        &self,
        id: SessionId,
        channel: &ChannelName,
        filter: Option<Arc<Filter>>,
    ) -> bool {
        let mut state = self.state.write();
        let state = &mut *state;
        let Some(entry) = state.sessions.get_mut(&id) else {
            return false;
        };
        if entry.subscriptions.contains(channel) {
            return false;
        }
        entry.subscriptions.push(channel.clone());
        let filter = state.filters.intern(filter);
        state.channels.entry(channel.clone()).or_default().insert(
            id,
            Subscriber {
                outbox: entry.outbox.clone(),
                filter,
            },
        );
        self.metrics.subscriptions.inc();
        true
    }

    /// Replaces the filter of a connection's subscription to `channel`; false when it
    /// is not subscribed.
    pub fn set_filter(&self, id: SessionId, channel: &str, filter: Option<Arc<Filter>>) -> bool {
        let mut state = self.state.write();
        let state = &mut *state;
        match state.channels.get_mut(channel).and_then(|s| s.get_mut(&id)) {
            Some(subscriber) => {
                subscriber.filter = state.filters.intern(filter);
                true
            }
            None => false,
        }
    }

    /// Unsubscribes a connection; returns false when it was not subscribed.
    pub fn unsubscribe(&self, id: SessionId, channel: &str) -> bool {
        let mut state = self.state.write();
        let Some(entry) = state.sessions.get_mut(&id) else {
            return false;
        };
        let before = entry.subscriptions.len();
        entry.subscriptions.retain(|c| &**c != channel);
        if entry.subscriptions.len() == before {
            return false;
        }
        remove_subscriber(&mut state.channels, channel, id);
        self.metrics.subscriptions.dec();
        true
    }

    /// How many channels a connection is subscribed to.
    pub fn subscription_count(&self, id: SessionId) -> usize {
        self.state
            .read()
            .sessions
            .get(&id)
            .map_or(0, |e| e.subscriptions.len())
    }

    /// Whether a connection is subscribed to `channel`.
    pub fn is_subscribed(&self, id: SessionId, channel: &str) -> bool {
        self.state
            .read()
            .sessions
            .get(&id)
            .is_some_and(|e| e.subscriptions.iter().any(|c| &**c == channel))
    }

    /// Queues `message` to every local recipient; returns how many it reached.
    ///
    /// Traced, this is one `deliver` span per message: a child of the current span
    /// (the publish, for local delivery) or of the trace the message arrived with.
    pub fn deliver(&self, message: &Message) -> usize {
        let span = tracing::info_span!(
            target: TRACE_TARGET,
            "deliver",
            otel.kind = "consumer",
            channel = %message.channel,
            message.id = %message.id,
            recipients = tracing::field::Empty,
        );
        if let Some(trace) = &message.trace {
            trace.set_as_parent_of(&span);
        }
        let _entered = span.enter();
        let queued = self.fan_out(message);
        span.record("recipients", queued);
        queued
    }

    fn fan_out(&self, message: &Message) -> usize {
        let delivery = Arc::new(Delivery::of(message));
        let mut fanout = Fanout::default();
        {
            let state = self.state.read();
            let Some(subscribers) = state.channels.get(&message.channel) else {
                return 0;
            };
            match &message.target {
                Target::All => {
                    for subscriber in subscribers.values() {
                        fanout.push(subscriber, message, &delivery);
                    }
                }
                Target::User(user) => {
                    let ids = state.users.get(user).map(Vec::as_slice).unwrap_or(&[]);
                    for subscriber in ids.iter().filter_map(|id| subscribers.get(id)) {
                        fanout.push(subscriber, message, &delivery);
                    }
                }
            }
        }
        if fanout.slow > 0 {
            self.metrics
                .drop_messages(DropReason::SlowConsumer, fanout.slow);
        }
        if fanout.gone > 0 {
            self.metrics
                .drop_messages(DropReason::Disconnected, fanout.gone);
        }
        fanout.queued
    }

    /// Open connections on this node.
    pub fn connection_count(&self) -> usize {
        self.state.read().sessions.len()
    }

    /// Connections, optionally only those of `user`, ordered by id.
    pub fn sessions(&self, user: Option<&str>) -> Vec<SessionInfo> {
        let state = self.state.read();
        let mut sessions: Vec<SessionInfo> = state
            .sessions
            .iter()
            .filter(|(_, e)| user.is_none() || e.user.as_deref() == user)
            .map(|(id, e)| SessionInfo {
                id: *id,
                user: e.user.as_deref().map(str::to_owned),
                connected_at: humantime::format_rfc3339_millis(e.connected_at).to_string(),
                subscriptions: e.subscriptions.iter().map(|c| c.to_string()).collect(),
            })
            .collect();
        sessions.sort_by_key(|s| s.id);
        sessions
    }

    /// Asks every connection to close with 1012, spread evenly over `window` so that
    /// clients do not all reconnect elsewhere at the same instant.
    pub async fn drain(&self, window: Duration) {
        let controls: Vec<Arc<Control>> = self
            .state
            .read()
            .sessions
            .values()
            .map(|e| e.outbox.control.clone())
            .collect();
        let n = controls.len().max(1) as u32;
        let start = tokio::time::Instant::now();
        for (i, control) in controls.into_iter().enumerate() {
            tokio::time::sleep_until(start + window * i as u32 / n).await;
            control.request_close(CloseRequest::DRAINING);
        }
    }
}

impl DeliverySink for Hub {
    fn deliver(&self, message: &Message) -> usize {
        Hub::deliver(self, message)
    }
}

#[derive(Default)]
struct Fanout {
    queued: usize,
    slow: u64,
    gone: u64,
    /// The last filter evaluated (by address: pooled filters are shared) and its verdict.
    last_filter: Option<(*const Filter, bool)>,
}

impl Fanout {
    fn push(&mut self, subscriber: &Subscriber, message: &Message, delivery: &Arc<Delivery>) {
        if let Some(filter) = &subscriber.filter {
            let address = Arc::as_ptr(filter);
            let admitted = match self.last_filter {
                Some((last, verdict)) if last == address => verdict,
                _ => {
                    let verdict = filter.admits(message);
                    self.last_filter = Some((address, verdict));
                    verdict
                }
            };
            if !admitted {
                return;
            }
        }
        let outbox = &subscriber.outbox;
        match outbox.tx.try_send(delivery.clone()) {
            Ok(()) => self.queued += 1,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.slow += 1;
                outbox.control.request_close(CloseRequest::SLOW_CONSUMER);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.gone += 1,
        }
    }
}

fn remove_subscriber(
    channels: &mut HashMap<ChannelName, HashMap<SessionId, Subscriber>>,
    channel: &str,
    id: SessionId,
) {
    if let Some(subscribers) = channels.get_mut(channel) {
        subscribers.remove(&id);
        if subscribers.is_empty() {
            channels.remove(channel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::unix_micros;
    use serde_json::value::RawValue;

    fn hub(queue: usize, per_user: usize) -> Hub {
        Hub::new(Arc::new(Metrics::new()), queue, per_user)
    }

    fn message(channel: &str, target: Target) -> Message {
        Message {
            id: "m".into(),
            channel: channel.into(),
            kind: "notification".into(),
            data: Arc::from(RawValue::from_string("{}".into()).unwrap()),
            target,
            offset: None,
            accepted_at_micros: unix_micros(),
            trace: None,
            tags: Default::default(),
        }
    }

    #[test]
    fn per_user_messages_reach_only_that_user() {
        let hub = hub(8, 0);
        let channel: ChannelName = "notifications".into();
        let mut alice = hub.connect(Some("alice".into())).unwrap();
        let mut bob = hub.connect(Some("bob".into())).unwrap();
        hub.subscribe(alice.id, &channel);
        hub.subscribe(bob.id, &channel);
        let reached = hub.deliver(&message("notifications", Target::User("alice".into())));
        assert_eq!(reached, 1);
        assert!(alice.rx.try_recv().is_ok());
        assert!(bob.rx.try_recv().is_err());
        assert_eq!(hub.deliver(&message("notifications", Target::All)), 2);
    }

    /// Equal filters share one `Arc` and mixed filters in one fan-out each get their
    /// own verdict (the fan-out remembers the last verdict by filter address).
    #[test]
    fn equal_filters_are_shared_and_every_subscriber_gets_its_own_verdict() {
        use crate::filter::TagCondition;
        use crate::tags::Tags;
        let hub = hub(64, 0);
        let channel: ChannelName = "stock".into();
        let region = |r: &str| {
            Some(Arc::new(
                Filter::new(
                    None,
                    vec![TagCondition::eq("region".into(), r.into()).unwrap()],
                )
                .unwrap(),
            ))
        };
        let wants = ["eu", "us", "eu", "", "us", "eu"];
        let mut sessions = Vec::new();
        for (i, want) in wants.iter().enumerate() {
            let session = hub.connect(Some(format!("u{i}").into())).unwrap();
            let filter = if want.is_empty() { None } else { region(want) };
            hub.subscribe_filtered(session.id, &channel, filter);
            sessions.push(session);
        }
        {
            let state = hub.state.read();
            let subscribers = &state.channels[&channel];
            let of = |i: usize| subscribers[&sessions[i].id].filter.clone().unwrap();
            assert!(Arc::ptr_eq(&of(0), &of(2)) && Arc::ptr_eq(&of(0), &of(5)));
            assert!(Arc::ptr_eq(&of(1), &of(4)));
            assert!(!Arc::ptr_eq(&of(0), &of(1)));
        }
        // Replacing a filter pools it too.
        assert!(hub.set_filter(sessions[3].id, &channel, region("us")));
        for (region, expected) in [("eu", [0, 2, 5]), ("us", [1, 3, 4])] {
            let tagged = Message {
                tags: Tags::from_pairs(vec![("region".into(), region.into())]),
                ..message("stock", Target::All)
            };
            assert_eq!(hub.deliver(&tagged), 3);
            for (i, session) in sessions.iter_mut().enumerate() {
                assert_eq!(
                    session.rx.try_recv().is_ok(),
                    expected.contains(&i),
                    "{region} {i}"
                );
            }
        }
        assert_eq!(hub.deliver(&message("stock", Target::All)), 0);
    }

    #[test]
    fn the_filter_pool_forgets_filters_nobody_holds() {
        let mut pool = FilterPool::default();
        for i in 0..1000 {
            let filter = Filter::by_types(vec![format!("t{i}")]).unwrap();
            drop(pool.intern(Some(Arc::new(filter))));
        }
        assert!(pool.pool.len() <= 64, "{}", pool.pool.len());
        assert_eq!(pool.intern(None), None);
    }

    #[test]
    fn only_subscribers_receive() {
        let hub = hub(8, 0);
        let mut a = hub.connect(Some("a".into())).unwrap();
        hub.subscribe(a.id, &"alerts".into());
        assert_eq!(hub.deliver(&message("materials", Target::All)), 0);
        assert!(hub.unsubscribe(a.id, "alerts"));
        assert!(!hub.unsubscribe(a.id, "alerts"));
        assert_eq!(hub.deliver(&message("alerts", Target::All)), 0);
        assert!(a.rx.try_recv().is_err());
    }

    #[test]
    fn a_full_queue_closes_only_the_slow_connection_and_counts_the_drop() {
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(metrics.clone(), 2, 0);
        let slow = hub.connect(Some("slow".into())).unwrap();
        let mut fast = hub.connect(Some("fast".into())).unwrap();
        for id in [slow.id, fast.id] {
            hub.subscribe(id, &"alerts".into());
        }
        for _ in 0..3 {
            hub.deliver(&message("alerts", Target::All));
            assert!(fast.rx.try_recv().is_ok());
        }
        assert_eq!(metrics.dropped(DropReason::SlowConsumer), 1);
        assert_eq!(
            *slow.control.request.lock(),
            Some(CloseRequest::SLOW_CONSUMER)
        );
        assert_eq!(*fast.control.request.lock(), None);
    }

    #[test]
    fn per_user_connection_cap() {
        let hub = hub(8, 2);
        let first = hub.connect(Some("u".into())).unwrap();
        let _second = hub.connect(Some("u".into())).unwrap();
        assert!(matches!(
            hub.connect(Some("u".into())),
            Err(HubError::TooManyConnectionsForUser { limit: 2, .. })
        ));
        hub.disconnect(first.id);
        assert!(hub.connect(Some("u".into())).is_ok());
    }

    #[test]
    fn disconnect_releases_subscriptions() {
        let hub = hub(8, 0);
        let a = hub.connect(Some("a".into())).unwrap();
        hub.subscribe(a.id, &"alerts".into());
        hub.subscribe(a.id, &"orders".into());
        let mut released = hub.disconnect(a.id);
        released.sort();
        assert_eq!(released, vec![ChannelName::from("alerts"), "orders".into()]);
        assert_eq!(hub.connection_count(), 0);
        assert_eq!(hub.deliver(&message("alerts", Target::All)), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_spreads_closes_over_the_window() {
        let hub = hub(8, 0);
        let regs: Vec<_> = (0..4).map(|_| hub.connect(None).unwrap()).collect();
        let start = tokio::time::Instant::now();
        hub.drain(Duration::from_secs(8)).await;
        assert!(start.elapsed() >= Duration::from_secs(6));
        for reg in &regs {
            assert_eq!(*reg.control.request.lock(), Some(CloseRequest::DRAINING));
        }
    }
}
