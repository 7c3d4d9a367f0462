//! `--find-max`: which publish rates to try, and whether a step counts as sustained.
//!
//! The search multiplies the rate by a factor until a step fails (or steps down from a
//! failing start), then bisects geometrically between the best passing and the lowest
//! failing rate for a few refinement steps. Everything here is pure so it can be tested.

/// What makes a step fail.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest acceptable p99 publish-to-deliver latency.
    pub max_p99_ms: f64,
    /// Largest acceptable fraction of expected deliveries lost.
    pub max_loss_ratio: f64,
    /// Smallest acceptable achieved/target publish-rate ratio (the publisher kept up).
    pub min_publish_ratio: f64,
}

/// The figures of one step that [`judge`] looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepFigures {
    /// Requested publishes per second.
    pub target_rate: f64,
    /// Accepted publishes per second actually achieved.
    pub achieved_rate: f64,
    /// Deliveries expected.
    pub expected: u64,
    /// Expected deliveries that did not arrive.
    pub lost: u64,
    /// Duplicates + misdeliveries.
    pub wrong: u64,
    /// p99 latency.
    pub p99_ms: f64,
    /// Clients that dropped during the step.
    pub disconnects: u64,
}

/// Whether a step was sustained; `Err` names the first violated limit.
pub fn judge(step: &StepFigures, limits: &Limits) -> Result<(), String> {
    if step.expected == 0 {
        return Err("no publish was accepted".into());
    }
    if step.disconnects > 0 {
        return Err(format!("{} clients disconnected", step.disconnects));
    }
    if step.wrong > 0 {
        return Err(format!("{} duplicate or misdelivered messages", step.wrong));
    }
    let loss = step.lost as f64 / step.expected as f64;
    if loss > limits.max_loss_ratio {
        return Err(format!(
            "loss {:.4}% ({} of {})",
            loss * 100.0,
            step.lost,
            step.expected
        ));
    }
    if step.p99_ms > limits.max_p99_ms {
        return Err(format!(
            "p99 {:.1} ms > {:.1} ms",
            step.p99_ms, limits.max_p99_ms
        ));
    }
    if step.achieved_rate < step.target_rate * limits.min_publish_ratio {
        return Err(format!(
            "publisher reached {:.1}/s of {:.1}/s",
            step.achieved_rate, step.target_rate
        ));
    }
    Ok(())
}

/// Lowest rate the search will try, publishes per second.
const MIN_RATE: f64 = 0.1;
/// Refinement stops when the failing/passing ratio is this close to 1.
const RESOLUTION: f64 = 1.05;

/// The state of a rate search.
#[derive(Debug, Clone)]
pub struct RateSearch {
    next: Option<f64>,
    factor: f64,
    max_rate: f64,
    steps_left: u32,
    refine_left: u32,
    best_pass: Option<f64>,
    lowest_fail: Option<f64>,
}

impl RateSearch {
    /// A search starting at `start`, multiplying by `factor` (> 1), refining `refine` times,
    /// trying at most `max_steps` rates and never more than `max_rate`.
    pub fn new(start: f64, factor: f64, refine: u32, max_steps: u32, max_rate: f64) -> Self {
        let start = start.clamp(MIN_RATE, max_rate.max(MIN_RATE));
        Self {
            next: (max_steps > 0).then_some(start),
            factor: factor.max(1.1),
            max_rate: max_rate.max(MIN_RATE),
            steps_left: max_steps,
            refine_left: refine,
            best_pass: None,
            lowest_fail: None,
        }
    }

    /// The rate to try next, if any.
    pub fn next_rate(&self) -> Option<f64> {
        self.next
    }

    /// The highest rate that passed so far.
    pub fn best(&self) -> Option<f64> {
        self.best_pass
    }

    /// Records the outcome of trying `rate` and picks the next one.
    pub fn record(&mut self, rate: f64, passed: bool) {
        self.steps_left = self.steps_left.saturating_sub(1);
        if passed {
            self.best_pass = Some(self.best_pass.map_or(rate, |b| b.max(rate)));
        } else {
            self.lowest_fail = Some(self.lowest_fail.map_or(rate, |f| f.min(rate)));
        }
        self.next = if self.steps_left == 0 {
            None
        } else {
            match (self.best_pass, self.lowest_fail) {
                (_, None) if rate >= self.max_rate => None,
                (_, None) => Some((rate * self.factor).min(self.max_rate)),
                (None, Some(fail)) => Some(fail / self.factor).filter(|r| *r >= MIN_RATE),
                (Some(pass), Some(fail)) => {
                    if self.refine_left == 0 || fail / pass <= RESOLUTION {
                        None
                    } else {
                        self.refine_left -= 1;
                        Some((pass * fail).sqrt())
                    }
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a search against a server that sustains rates up to `capacity`.
    fn drive(mut s: RateSearch, capacity: f64) -> (Vec<f64>, Option<f64>) {
        let mut tried = Vec::new();
        while let Some(rate) = s.next_rate() {
            tried.push(rate);
            s.record(rate, rate <= capacity);
        }
        (tried, s.best())
    }

    #[test]
    fn doubles_then_bisects() {
        let (tried, best) = drive(RateSearch::new(10.0, 2.0, 2, 20, 1e6), 50.0);
        assert_eq!(&tried[..4], &[10.0, 20.0, 40.0, 80.0]);
        assert_eq!(tried.len(), 6);
        let mid = (40.0f64 * 80.0).sqrt();
        assert!((tried[4] - mid).abs() < 1e-9);
        assert!(best.unwrap() >= 40.0 && best.unwrap() <= 50.0);
    }

    #[test]
    fn steps_down_from_a_failing_start() {
        let (tried, best) = drive(RateSearch::new(100.0, 2.0, 0, 20, 1e6), 30.0);
        assert_eq!(tried, vec![100.0, 50.0, 25.0]);
        assert_eq!(best, Some(25.0));
    }

    #[test]
    fn respects_step_and_rate_caps() {
        let (tried, best) = drive(RateSearch::new(1.0, 2.0, 3, 4, 1e6), f64::MAX);
        assert_eq!(tried, vec![1.0, 2.0, 4.0, 8.0]);
        assert_eq!(best, Some(8.0));

        let (tried, _) = drive(RateSearch::new(10.0, 10.0, 3, 20, 500.0), f64::MAX);
        assert_eq!(tried, vec![10.0, 100.0, 500.0]);

        let (tried, best) = drive(RateSearch::new(1.0, 2.0, 3, 50, 1e6), 0.0);
        assert!(tried.len() < 10 && best.is_none(), "{tried:?}");
        assert!(RateSearch::new(1.0, 2.0, 1, 0, 10.0).next_rate().is_none());
    }

    #[test]
    fn judges_steps() {
        let limits = Limits {
            max_p99_ms: 100.0,
            max_loss_ratio: 0.0,
            min_publish_ratio: 0.95,
        };
        let good = StepFigures {
            target_rate: 100.0,
            achieved_rate: 99.0,
            expected: 1000,
            p99_ms: 5.0,
            ..StepFigures::default()
        };
        assert!(judge(&good, &limits).is_ok());
        for bad in [
            StepFigures { lost: 1, ..good },
            StepFigures {
                p99_ms: 150.0,
                ..good
            },
            StepFigures {
                achieved_rate: 50.0,
                ..good
            },
            StepFigures {
                disconnects: 1,
                ..good
            },
            StepFigures { wrong: 1, ..good },
            StepFigures {
                expected: 0,
                ..good
            },
        ] {
            assert!(judge(&bad, &limits).is_err(), "{bad:?}");
        }
        let lenient = Limits {
            max_loss_ratio: 0.01,
            ..limits
        };
        assert!(judge(&StepFigures { lost: 5, ..good }, &lenient).is_ok());
    }
}
