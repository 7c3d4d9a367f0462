//! Mergeable measurements: latency histograms and delivery counters.
//!
//! Workers record into these, ship them to the parent as JSON ([`HistData`], [`RunSample`])
//! and the parent merges them, so percentiles are computed over every sample of every
//! process rather than averaged.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest recordable value: one minute, in microseconds (larger values are clamped).
const MAX_US: u64 = 60_000_000;
/// Significant decimal digits kept by histograms.
const SIGFIG: u8 = 3;

/// Distinct error messages kept per tally; the rest are lumped together.
pub const MAX_ERROR_KINDS: usize = 8;

/// Counts `n` occurrences of `message`, keeping at most [`MAX_ERROR_KINDS`] distinct ones.
pub fn tally_error(errors: &mut BTreeMap<String, u64>, message: String, n: u64) {
    if errors.len() < MAX_ERROR_KINDS || errors.contains_key(&message) {
        *errors.entry(message).or_default() += n;
    } else {
        *errors.entry("(other errors)".into()).or_default() += n;
    }
}

/// A histogram of durations in microseconds.
#[derive(Debug, Clone)]
pub struct LatencyHist(Histogram<u64>);

/// Serialised form of a [`LatencyHist`]: `(bucket value, count)` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistData(pub Vec<(u64, u64)>);

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Default for LatencyHist {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHist {
    /// An empty histogram covering 1 µs to 60 s.
    pub fn new() -> Self {
        Self(
            Histogram::new_with_bounds(1, MAX_US, SIGFIG)
                .expect("static histogram bounds are valid"),
        )
    }

    /// Records one duration in microseconds (clamped to 1 µs..60 s).
    pub fn record(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, MAX_US));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Self) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Serialises the non-empty buckets.
    pub fn to_data(&self) -> HistData {
        HistData(
            self.0
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    /// Rebuilds a histogram from [`LatencyHist::to_data`] output.
    pub fn from_data(data: &HistData) -> Self {
        let mut h = Self::new();
        for &(value, count) in &data.0 {
            h.0.saturating_record_n(value.clamp(1, MAX_US), count);
        }
        h
    }

    /// Value at quantile `q` (0..=1), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    /// The usual percentiles.
    pub fn summary(&self) -> LatencySummary {
        if self.0.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.0.len(),
            mean_ms: self.0.mean() / 1000.0,
            p50_ms: self.quantile_ms(0.50),
            p90_ms: self.quantile_ms(0.90),
            p99_ms: self.quantile_ms(0.99),
            p999_ms: self.quantile_ms(0.999),
            max_ms: self.0.max() as f64 / 1000.0,
        }
    }
}

/// Delivery counters of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Unique deliveries that reached their intended client (fresh + out of order).
    pub received: u64,
    /// Deliveries of a sequence number the connection had already received.
    pub duplicates: u64,
    /// Unique deliveries that arrived after a higher sequence number.
    pub out_of_order: u64,
    /// Deliveries belonging to another run (late arrivals from an earlier step).
    pub stale: u64,
    /// Personal deliveries addressed to another user.
    pub misdelivered: u64,
    /// Clients whose connection ended during the run.
    pub disconnects: u64,
}

impl Counts {
    /// Adds `other` field by field.
    pub fn add(&mut self, other: &Self) {
        self.received += other.received;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.stale += other.stale;
        self.misdelivered += other.misdelivered;
        self.disconnects += other.disconnects;
    }
}

/// What one worker observed during one run, as shipped to the parent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunSample {
    /// Counters.
    pub counts: Counts,
    /// Publish-to-deliver latencies in microseconds.
    pub latency: HistData,
    /// Unix µs of the first and last counted delivery.
    pub first_us: Option<u64>,
    /// See `first_us`.
    pub last_us: Option<u64>,
}

/// Merged samples of all workers.
#[derive(Debug, Clone, Default)]
pub struct RunTotals {
    /// Summed counters.
    pub counts: Counts,
    /// Merged latencies.
    pub latency: LatencyHist,
    /// Earliest first delivery.
    pub first_us: Option<u64>,
    /// Latest last delivery.
    pub last_us: Option<u64>,
}

impl RunTotals {
    /// Folds one worker's sample in.
    pub fn merge(&mut self, sample: &RunSample) {
        self.counts.add(&sample.counts);
        self.latency.merge(&LatencyHist::from_data(&sample.latency));
        self.first_us = min_opt(self.first_us, sample.first_us);
        self.last_us = self.last_us.max(sample.last_us);
    }
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_ms() {
        let mut h = LatencyHist::new();
        for us in 1..=1000 {
            h.record(us * 1000);
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_ms - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.max_ms - 1000.0).abs() < 1.0, "{s:?}");
        assert_eq!(LatencyHist::new().summary(), LatencySummary::default());
    }

    #[test]
    fn clamps_out_of_range() {
        let mut h = LatencyHist::new();
        h.record(0);
        h.record(u64::MAX);
        assert_eq!(h.count(), 2);
        assert!(h.summary().max_ms <= 60_100.0);
    }

    #[test]
    fn serialised_merge_equals_direct_merge() {
        let (mut a, mut b) = (LatencyHist::new(), LatencyHist::new());
        for v in [5, 50, 500, 5000, 50_000] {
            a.record(v);
            b.record(v * 3);
            b.record(v * 3);
        }
        let mut direct = a.clone();
        direct.merge(&b);

        let json = serde_json::to_string(&b.to_data()).unwrap();
        let back: HistData = serde_json::from_str(&json).unwrap();
        let mut shipped = a.clone();
        shipped.merge(&LatencyHist::from_data(&back));

        assert_eq!(shipped.count(), 15);
        assert_eq!(shipped.summary(), direct.summary());
        assert_eq!(shipped.to_data(), direct.to_data());
    }

    #[test]
    fn totals_merge_counts_and_bounds() {
        let mut hist = LatencyHist::new();
        hist.record(2000);
        let s1 = RunSample {
            counts: Counts {
                received: 3,
                duplicates: 1,
                ..Counts::default()
            },
            latency: hist.to_data(),
            first_us: Some(10),
            last_us: Some(20),
        };
        let s2 = RunSample {
            counts: Counts {
                received: 4,
                misdelivered: 2,
                disconnects: 1,
                ..Counts::default()
            },
            latency: HistData::default(),
            first_us: None,
            last_us: Some(30),
        };
        let mut t = RunTotals::default();
        t.merge(&s1);
        t.merge(&s2);
        assert_eq!(t.counts.received, 7);
        assert_eq!(t.counts.duplicates, 1);
        assert_eq!(t.counts.misdelivered, 2);
        assert_eq!(t.counts.disconnects, 1);
        assert_eq!((t.first_us, t.last_us), (Some(10), Some(30)));
        assert_eq!(t.latency.count(), 1);
    }

    #[test]
    fn error_kinds_are_bounded() {
        let mut errors = BTreeMap::new();
        for i in 0..20 {
            tally_error(&mut errors, format!("e{i}"), 1);
        }
        tally_error(&mut errors, "e0".into(), 1);
        assert_eq!(errors.len(), MAX_ERROR_KINDS + 1);
        assert_eq!(errors["e0"], 2);
        assert_eq!(errors["(other errors)"], 12);
    }
}
