//! Prometheus metrics served at `/metrics`.
//!
//! Every drop the node makes is counted here by reason: Herald never loses an
//! accepted message silently. Hot-path counters are plain atomics; the delivery
//! latency histogram is lock-free because it is observed once per delivered frame.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Why a message did not reach a connection.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum DropReason {
    /// The connection's outbound queue was full; the connection is closed.
    SlowConsumer,
    /// The connection closed between fan-out and send.
    Disconnected,
    /// The node's broker subscription buffer overflowed (recovered from history
    /// where the channel keeps it).
    BrokerLag,
}

impl DropReason {
    fn as_str(self) -> &'static str {
        match self {
            DropReason::SlowConsumer => "slow_consumer",
            DropReason::Disconnected => "disconnected",
            DropReason::BrokerLag => "broker_lag",
        }
    }
}

/// Every `reason` label of `herald_decode_failures_total` (what
/// `broker::wire::DecodeError::reason` returns), so the series exist at zero.
pub const DECODE_FAILURE_REASONS: [&str; 4] = ["no_offset", "incomplete_entry", "syntax", "data"];

/// Where a message that could not be decoded came from.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum DecodeSource {
    /// A live pub/sub payload from another node.
    Pubsub,
    /// A history entry (replay, offline delivery, gap recovery).
    History,
}

impl DecodeSource {
    fn as_str(self) -> &'static str {
        match self {
            DecodeSource::Pubsub => "pubsub",
            DecodeSource::History => "history",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecodeLabels {
    source: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CoalescedLabels {
    channel: String,
    edge: &'static str,
}

/// All node metrics. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// WebSocket connections accepted since start.
    pub connections_total: Counter,
    rejected: Family<ReasonLabel, Counter>,
    /// Active channel subscriptions across connections.
    pub subscriptions: Gauge,
    published: Family<ChannelLabel, Counter>,
    coalesced: Family<CoalescedLabels, Counter>,
    /// Frames written to client sockets.
    pub delivered: Counter,
    /// Of those, frames sent from history (recovery and offline delivery).
    pub replayed: Counter,
    dropped: Family<ReasonLabel, Counter>,
    /// Client frames received.
    pub inbound: Counter,
    /// Publishes answered from an idempotency record instead of publishing again.
    pub idempotent_repeats: Counter,
    /// History writes acknowledged while their Redis shard had no replica.
    pub unreplicated: Counter,
    client_errors: Family<ReasonLabel, Counter>,
    decode_failures: Family<DecodeLabels, Counter>,
    /// Publish-to-socket-write latency.
    pub delivery_latency: AtomicHistogram,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("herald");
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        let connections_total = Counter::default();
        registry.register(
            "connections_accepted",
            "WebSocket connections accepted",
            connections_total.clone(),
        );
        let rejected = Family::default();
        registry.register(
            "connections_rejected",
            "Connection attempts refused, by reason",
            rejected.clone(),
        );
        let subscriptions = Gauge::default();
        registry.register(
            "subscriptions",
            "Active channel subscriptions",
            subscriptions.clone(),
        );
        let published = Family::default();
        registry.register(
            "messages_published",
            "Messages accepted by the publish API, by channel",
            published.clone(),
        );
        let coalesced = Family::default();
        registry.register(
            "coalesced_messages",
            "Accepted messages not delivered because coalescing kept another of their window (leading: a later one; trailing: an earlier one), by channel rule and edge",
            coalesced.clone(),
        );
        let delivered = Counter::default();
        registry.register(
            "messages_delivered",
            "Message frames written to client connections",
            delivered.clone(),
        );
        let replayed = Counter::default();
        registry.register(
            "messages_replayed",
            "Message frames sent from history (recovery, offline delivery, redelivery)",
            replayed.clone(),
        );
        let dropped = Family::default();
        registry.register(
            "messages_dropped",
            "Message frames not delivered to a connection, by reason",
            dropped.clone(),
        );
        let unreplicated = Counter::default();
        registry.register(
            "history_writes_unreplicated",
            "History writes acknowledged while their Redis shard had no replica to copy them to",
            unreplicated.clone(),
        );
        let idempotent_repeats = Counter::default();
        registry.register(
            "publish_idempotent_repeats",
            "Publishes that repeated an earlier one's idempotency key and request: answered with its result, nothing published",
            idempotent_repeats.clone(),
        );
        let inbound = Counter::default();
        registry.register(
            "client_messages",
            "Frames received from clients",
            inbound.clone(),
        );
        let client_errors = Family::default();
        registry.register(
            "client_errors",
            "Client frames answered with an error, by code",
            client_errors.clone(),
        );
        let decode_failures = Family::default();
        registry.register(
            "decode_failures",
            "Messages from the broker that could not be decoded and were not delivered, by source and reason",
            decode_failures.clone(),
        );
        let delivery_latency = AtomicHistogram::new(&LATENCY_BUCKETS);
        registry.register(
            "delivery_latency_seconds",
            "Time from publish acceptance to the frame being written to the client socket",
            delivery_latency.clone(),
        );
        let metrics = Self {
            registry,
            connections,
            connections_total,
            rejected,
            subscriptions,
            published,
            coalesced,
            delivered,
            replayed,
            dropped,
            inbound,
            idempotent_repeats,
            unreplicated,
            client_errors,
            decode_failures,
            delivery_latency,
        };
        metrics.init_decode_failures(&DECODE_FAILURE_REASONS);
        metrics
    }

    /// Counts a broker message that could not be decoded (`reason` is a short fixed
    /// label, see `broker::wire::DecodeError::reason`).
    pub fn decode_failure(&self, source: DecodeSource, reason: &'static str) {
        self.decode_failures
            .get_or_create(&DecodeLabels {
                source: source.as_str(),
                reason,
            })
            .inc();
    }

    /// Reads a decode failure counter (for tests).
    pub fn decode_failures(&self, source: DecodeSource, reason: &'static str) -> u64 {
        self.decode_failures
            .get_or_create(&DecodeLabels {
                source: source.as_str(),
                reason,
            })
            .get()
    }

    /// Creates every decode failure series at zero, so `/metrics` shows them before
    /// the first failure and alerts can use `increase()`.
    fn init_decode_failures(&self, reasons: &[&'static str]) {
        for source in [DecodeSource::Pubsub, DecodeSource::History] {
            for &reason in reasons {
                self.decode_failures(source, reason);
            }
        }
    }

    /// Counts a refused connection attempt.
    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts `n` dropped deliveries.
    pub fn drop_messages(&self, reason: DropReason, n: u64) {
        self.dropped
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc_by(n);
    }

    /// Reads a drop counter (for tests and the admin API).
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .get()
    }

    /// Counts an accepted publish.
    pub fn published(&self, channel: &str) {
        self.published
            .get_or_create(&ChannelLabel {
                channel: channel.to_owned(),
            })
            .inc();
    }

    /// Counts a message coalesced away on `channel` (the channel's rule: the pattern
    /// for a pattern's channel, so the label set stays bounded).
    pub fn coalesced(&self, channel: &str, edge: &'static str) {
        self.coalesced
            .get_or_create(&CoalescedLabels {
                channel: channel.to_owned(),
                edge,
            })
            .inc();
    }

    /// Messages coalesced away on `channel` at `edge` so far.
    pub fn coalesced_count(&self, channel: &str, edge: &'static str) -> u64 {
        self.coalesced
            .get_or_create(&CoalescedLabels {
                channel: channel.to_owned(),
                edge,
            })
            .get()
    }

    /// Counts an error frame sent to a client.
    pub fn client_error(&self, code: &'static str) {
        self.client_errors
            .get_or_create(&ReasonLabel { reason: code })
            .inc();
    }

    /// Renders the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A histogram with atomic buckets: observing takes no lock. Clones share counts.
#[derive(Debug, Clone)]
pub struct AtomicHistogram {
    inner: Arc<HistogramCounts>,
}

#[derive(Debug)]
struct HistogramCounts {
    bounds: &'static [f64],
    /// One counter per bound plus the overflow bucket.
    counts: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            inner: Arc::new(HistogramCounts {
                bounds,
                counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum_micros: AtomicU64::new(0),
            }),
        }
    }

    /// Records one observation given in microseconds.
    pub fn observe_micros(&self, micros: u64) {
        let seconds = micros as f64 / 1e6;
        let index = self
            .inner
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(self.inner.bounds.len());
        self.inner.counts[index].fetch_add(1, Ordering::Relaxed);
        self.inner.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Number of observations so far.
    pub fn count(&self) -> u64 {
        self.inner
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

impl prometheus_client::metrics::TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.inner.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, c)| c).sum();
        let sum = self.inner.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let metrics = Metrics::new();
        metrics.connections.inc();
        metrics.drop_messages(DropReason::SlowConsumer, 3);
        metrics.delivery_latency.observe_micros(200);
        metrics.delivery_latency.observe_micros(2_000_000);
        let text = metrics.render();
        assert!(text.contains("herald_connections 1"), "{text}");
        assert!(
            text.contains("herald_messages_dropped_total{reason=\"slow_consumer\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("herald_delivery_latency_seconds_bucket{le=\"0.00025\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("herald_delivery_latency_seconds_bucket{le=\"+Inf\"} 2"),
            "{text}"
        );
        assert_eq!(metrics.delivery_latency.count(), 2);
        assert_eq!(metrics.dropped(DropReason::SlowConsumer), 3);
    }

    #[test]
    fn decode_failures_are_counted_by_source_and_reason() {
        let metrics = Metrics::new();
        metrics.init_decode_failures(&["syntax", "data"]);
        let text = metrics.render();
        assert!(
            text.contains("herald_decode_failures_total{source=\"history\",reason=\"data\"} 0"),
            "{text}"
        );
        metrics.decode_failure(DecodeSource::Pubsub, "syntax");
        assert_eq!(metrics.decode_failures(DecodeSource::Pubsub, "syntax"), 1);
        assert_eq!(metrics.decode_failures(DecodeSource::History, "syntax"), 0);
        assert!(metrics
            .render()
            .contains("herald_decode_failures_total{source=\"pubsub\",reason=\"syntax\"} 1"));
    }
}
