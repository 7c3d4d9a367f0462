//! The samples of a comparison: every figure per metric and server, their medians and ratios.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Server;

/// A compared figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    IdleRss,
    ChurnRate,
    ChurnP99,
    BroadcastMax,
    BroadcastMaxLossless,
    BroadcastOwnHalfP99,
    BroadcastEqualP50,
    BroadcastEqualP99,
    BroadcastEqualLoss,
    BroadcastServerCpu,
    BroadcastBenchCpu,
    PersonalMax,
    PersonalMaxLossless,
    PersonalHalfP99,
    PersonalServerCpu,
    ClusterBroadcastRate,
    ClusterBroadcastP99,
    ClusterBroadcastServerCpu,
    ClusterPersonalRate,
    ClusterPersonalP99,
    ClusterPersonalServerCpu,
    ClusterRedisUsPerPublish,
    ClusterRedisNetUsPerPublish,
}

impl Metric {
    /// Every metric, in table order.
    pub const ALL: [Self; 23] = [
        Self::IdleRss,
        Self::ChurnRate,
        Self::ChurnP99,
        Self::BroadcastMax,
        Self::BroadcastMaxLossless,
        Self::BroadcastOwnHalfP99,
        Self::BroadcastEqualP50,
        Self::BroadcastEqualP99,
        Self::BroadcastEqualLoss,
        Self::BroadcastServerCpu,
        Self::BroadcastBenchCpu,
        Self::PersonalMax,
        Self::PersonalMaxLossless,
        Self::PersonalHalfP99,
        Self::PersonalServerCpu,
        Self::ClusterBroadcastRate,
        Self::ClusterBroadcastP99,
        Self::ClusterBroadcastServerCpu,
        Self::ClusterPersonalRate,
        Self::ClusterPersonalP99,
        Self::ClusterPersonalServerCpu,
        Self::ClusterRedisUsPerPublish,
        Self::ClusterRedisNetUsPerPublish,
    ];

    /// Workload and figure, for the table.
    pub fn label(self) -> &'static str {
        match self {
            Self::IdleRss => "idle: server RSS per subscribed connection (B)",
            Self::ChurnRate => "churn: connect+subscribe rate (conn/s)",
            Self::ChurnP99 => "churn: p99 TCP connect → subscribed (ms)",
            Self::BroadcastMax => "broadcast: max deliveries/s (0 loss, p99 ≤ limit)",
            Self::BroadcastMaxLossless => {
                "broadcast: max deliveries/s of any search step with 0 loss, any latency"
            }
            Self::BroadcastOwnHalfP99 => "broadcast: p99 at 50% of own max (ms)",
            Self::BroadcastEqualP50 => "broadcast, equal load (50% of Herald's max): p50 (ms)",
            Self::BroadcastEqualP99 => "broadcast, equal load: p99 (ms)",
            Self::BroadcastEqualLoss => "broadcast, equal load: lost (% of expected)",
            Self::BroadcastServerCpu => "broadcast, equal load: server CPU-s per 1M deliveries",
            Self::BroadcastBenchCpu => {
                "broadcast, equal load: load generator CPU-s per 1M deliveries"
            }
            Self::PersonalMax => "personal: max deliveries/s (0 loss, p99 ≤ limit)",
            Self::PersonalMaxLossless => {
                "personal: max deliveries/s of any search step with 0 loss, any latency"
            }
            Self::PersonalHalfP99 => "personal: p99 at 50% of own max (ms)",
            Self::PersonalServerCpu => "personal, 50% of own max: server CPU-s per 1M deliveries",
            Self::ClusterBroadcastRate => "3 nodes + Redis Cluster, broadcast: deliveries/s",
            Self::ClusterBroadcastP99 => "3 nodes, broadcast: p99 (ms)",
            Self::ClusterBroadcastServerCpu => "3 nodes, broadcast: server CPU-s per 1M deliveries",
            Self::ClusterPersonalRate => "3 nodes, personal: deliveries/s",
            Self::ClusterPersonalP99 => "3 nodes, personal: p99 (ms)",
            Self::ClusterPersonalServerCpu => "3 nodes, personal: server CPU-s per 1M deliveries",
            Self::ClusterRedisUsPerPublish => {
                "3 nodes, personal: Redis CPU µs per published message"
            }
            Self::ClusterRedisNetUsPerPublish => "3 nodes, personal: same, net of Redis's idle use",
        }
    }

    /// Whether a smaller figure is the better one.
    pub fn lower_is_better(self) -> bool {
        !matches!(
            self,
            Self::ChurnRate
                | Self::BroadcastMax
                | Self::BroadcastMaxLossless
                | Self::PersonalMax
                | Self::PersonalMaxLossless
                | Self::ClusterBroadcastRate
                | Self::ClusterPersonalRate
        )
    }
}

/// Every sample of one comparison.
#[derive(Debug, Default, Serialize)]
pub struct Results {
    /// Samples per metric and server, in run order.
    pub samples: BTreeMap<Metric, BTreeMap<Server, Vec<f64>>>,
    /// What went wrong or needs saying (failed runs, searches with no passing rate).
    pub notes: Vec<String>,
    /// Offered broadcast load of the equal-load runs, publishes/s.
    pub equal_rate: Option<f64>,
    /// Wall time of the whole comparison, seconds.
    pub elapsed_s: f64,
    /// Per phase: wall seconds and the cores other processes kept busy meanwhile (machine
    /// busy time minus this process and its children, read at phase ends when they are
    /// reaped).
    pub contention: Vec<(String, f64, f64)>,
}

impl Results {
    pub(super) fn add(&mut self, metric: Metric, server: Server, value: f64) {
        if value.is_finite() {
            self.samples
                .entry(metric)
                .or_default()
                .entry(server)
                .or_default()
                .push(value);
        }
    }

    pub(super) fn note(&mut self, note: String) {
        eprintln!("herald-bench compare: {note}");
        self.notes.push(note);
    }

    /// Median of `metric` for `server`, if measured.
    pub fn median(&self, metric: Metric, server: Server) -> Option<f64> {
        self.samples
            .get(&metric)
            .and_then(|m| m.get(&server))
            .and_then(|v| median(v))
    }

    pub(super) fn range(&self, metric: Metric, server: Server) -> Option<(f64, f64, usize)> {
        let v = self.samples.get(&metric)?.get(&server)?;
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (!v.is_empty()).then_some((lo, hi, v.len()))
    }
}

/// The median of `values` (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 0 {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

/// `a / b`, when both exist and `b` is not zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
        assert_eq!(median(&[]), None);
        assert_eq!(ratio(Some(3.0), Some(1.5)), Some(2.0));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
    }
}
