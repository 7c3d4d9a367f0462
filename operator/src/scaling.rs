//! Node count from connection counts: the HPA algorithm applied to WebSocket
//! connections, plus the pod-deletion cost that makes scale-down take the emptiest
//! pods first.
//!
//! `desired = ceil(current × connections / (current × target))`, ignored within the
//! tolerance, scale-ups capped per step, scale-downs only to the highest
//! recommendation seen in the stabilization window (so load that dips briefly does
//! not flap the node count), always clamped to `[min, max]`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Inputs of one decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Fewest pods.
    pub min: i32,
    /// Most pods.
    pub max: i32,
    /// Connections each pod should carry.
    pub target_per_node: i32,
    /// Relative deviation ignored.
    pub tolerance: f64,
    /// Window of recommendations a scale-down must respect.
    pub stabilization: Duration,
    /// Most pods added per step, in percent of the current count (at least one pod).
    pub scale_up_percent: i32,
}

/// Remembers recent recommendations for the stabilization window.
#[derive(Debug, Default, Clone)]
pub struct Scaler {
    history: VecDeque<(Instant, i32)>,
}

impl Scaler {
    /// A scaler with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// The replica count to run now, given `current` pods carrying `connections`.
    pub fn decide(&mut self, policy: &Policy, current: i32, connections: i64, now: Instant) -> i32 {
        let current = current.max(1);
        let raw = recommend(policy, current, connections);
        self.history.push_back((now, raw));
        while self
            .history
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > policy.stabilization)
        {
            self.history.pop_front();
        }
        let desired = if raw < current {
            // Scale down only as far as the highest recent recommendation allows.
            let highest = self.history.iter().map(|(_, r)| *r).max().unwrap_or(raw);
            highest.min(current)
        } else {
            let step = (i64::from(current) * i64::from(policy.scale_up_percent) / 100).max(1);
            raw.min(current.saturating_add(step as i32))
        };
        desired.clamp(policy.min, policy.max.max(policy.min))
    }
}

/// The unstabilized recommendation: pods needed for `connections` at the target.
pub fn recommend(policy: &Policy, current: i32, connections: i64) -> i32 {
    let target = i64::from(policy.target_per_node.max(1));
    let ratio = connections as f64 / (current as f64 * target as f64);
    if (ratio - 1.0).abs() <= policy.tolerance {
        return current;
    }
    let needed = (connections as f64 / target as f64).ceil() as i64;
    needed.clamp(1, i64::from(i32::MAX)) as i32
}

/// `controller.kubernetes.io/pod-deletion-cost` for a pod carrying `connections`: the
/// ReplicaSet controller deletes the lowest cost first, so empty pods go first.
pub fn deletion_cost(connections: i64) -> i32 {
    connections.clamp(0, i64::from(i32::MAX)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            min: 1,
            max: 10,
            target_per_node: 1000,
            tolerance: 0.1,
            stabilization: Duration::from_secs(300),
            scale_up_percent: 100,
        }
    }

    #[test]
    fn follows_connections_to_the_target() {
        let mut scaler = Scaler::new();
        let now = Instant::now();
        assert_eq!(scaler.decide(&policy(), 2, 3_500, now), 4);
    }

    #[test]
    fn ignores_deviation_within_tolerance() {
        let mut scaler = Scaler::new();
        let now = Instant::now();
        assert_eq!(scaler.decide(&policy(), 4, 4_300, now), 4);
        assert_eq!(scaler.decide(&policy(), 4, 3_700, now), 4);
    }

    #[test]
    fn clamps_to_min_and_max() {
        let mut scaler = Scaler::new();
        let t = Instant::now();
        let p = Policy { min: 2, ..policy() };
        assert_eq!(scaler.decide(&p, 2, 0, t), 2);
        let mut scaler = Scaler::new();
        assert_eq!(scaler.decide(&policy(), 8, 1_000_000, t), 10);
    }

    #[test]
    fn scale_up_is_rate_limited_per_step() {
        let mut scaler = Scaler::new();
        let p = Policy {
            scale_up_percent: 50,
            max: 100,
            ..policy()
        };
        // 2 pods, load for 20: at most +1 (50 % of 2) per step.
        assert_eq!(scaler.decide(&p, 2, 20_000, Instant::now()), 3);
        // Always at least one pod per step.
        assert_eq!(
            Scaler::new().decide(
                &Policy {
                    scale_up_percent: 1,
                    ..p
                },
                1,
                20_000,
                Instant::now()
            ),
            2
        );
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let mut scaler = Scaler::new();
        let t0 = Instant::now();
        assert_eq!(scaler.decide(&policy(), 5, 5_000, t0), 5);
        // Load drops: the recent recommendation of 5 still holds the count.
        assert_eq!(
            scaler.decide(&policy(), 5, 1_000, t0 + Duration::from_secs(60)),
            5
        );
        assert_eq!(
            scaler.decide(&policy(), 5, 1_000, t0 + Duration::from_secs(200)),
            5
        );
        // Once the high recommendation leaves the window, scale down.
        assert_eq!(
            scaler.decide(&policy(), 5, 1_000, t0 + Duration::from_secs(400)),
            1
        );
    }

    #[test]
    fn flapping_load_does_not_flap_the_node_count() {
        let mut scaler = Scaler::new();
        let t0 = Instant::now();
        let mut current = 4;
        let mut counts = Vec::new();
        for i in 0..20u64 {
            let connections = if i % 2 == 0 { 4_000 } else { 1_500 };
            current = scaler.decide(
                &policy(),
                current,
                connections,
                t0 + Duration::from_secs(15 * i),
            );
            counts.push(current);
        }
        assert!(counts.iter().all(|c| *c == 4), "{counts:?}");
    }

    #[test]
    fn emptier_pods_are_cheaper_to_delete() {
        assert!(deletion_cost(10) < deletion_cost(500));
        assert_eq!(deletion_cost(-5), 0);
        assert_eq!(deletion_cost(i64::MAX), i32::MAX);
    }
}
