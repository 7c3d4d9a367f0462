//! Reconcilers: make the cluster match the custom resources, then report status.
//!
//! [`cluster`] owns everything a `PushCluster` needs (and re-renders the channel file
//! whenever one of its `Channel`s changes); [`channel`] reports each `Channel`'s own
//! status. Both share one [`Context`] and one error policy, and read what they watch
//! from in-memory stores; [`triggers`] decides which watch events reconcile what.

pub mod channel;
pub mod cluster;
pub mod triggers;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;
use parking_lot::Mutex;

pub use crate::error::Error;
use crate::metrics::Metrics;
use crate::scaling::Scaler;
use crate::stats::StatsReader;

/// Name used as SSA field manager and event reporter.
pub const MANAGER: &str = "herald-operator";

/// Shared state of all reconcilers.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Event recorder.
    pub recorder: Recorder,
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
    /// Heartbeat reader.
    pub stats: StatsReader,
    /// Scaling memory per cluster (`namespace/name`).
    pub scalers: Mutex<HashMap<String, Scaler>>,
    /// Consecutive failures per object, for backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// How often clusters are re-read for scaling.
    pub resync: Duration,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    /// A context for reconcilers using `client`.
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        instance: Option<String>,
        resync: Duration,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance,
            },
        );
        Self {
            client,
            recorder,
            metrics,
            stats: StatsReader::default(),
            scalers: Mutex::default(),
            failures: Mutex::default(),
            resync,
        }
    }

    /// Forgets failures of `key` after a success.
    pub fn succeeded(&self, key: &str) {
        self.failures.lock().remove(key);
    }

    /// Exponential backoff for `key`: 1 s, 2 s, 4 s … capped at 32 s.
    pub fn backoff(&self, key: &str) -> Action {
        let mut failures = self.failures.lock();
        let n = failures.entry(key.to_owned()).or_default();
        *n = n.saturating_add(1);
        let seconds = 1u64 << (*n - 1).min(5);
        Action::requeue(Duration::from_secs(seconds))
    }
}

/// Runs one reconcile of `object` inside a span, recording metrics and resetting its
/// backoff on success. `work` gets the object's namespace.
pub async fn instrumented<K, F, Fut>(
    kind: &'static str,
    object: &K,
    ctx: &Context,
    work: F,
) -> Result<Action, Error>
where
    K: kube::ResourceExt,
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<Action, Error>>,
{
    use tracing::Instrument;
    let ns = object.namespace().ok_or(Error::NoNamespace)?;
    let name = object.name_any();
    let key = format!("{ns}/{name}");
    let span = tracing::info_span!(
        "reconcile",
        kind,
        object = %key,
        k8s.namespace.name = %ns,
        k8s.object.name = %name,
    );
    let started = std::time::Instant::now();
    let result = work(ns).instrument(span.clone()).await;
    span.in_scope(|| match &result {
        Ok(action) => tracing::debug!(?action, "reconciled"),
        Err(error) => tracing::debug!(%error, "reconcile failed"),
    });
    ctx.metrics
        .observe(kind, started.elapsed(), result.as_ref().err());
    if result.is_ok() {
        ctx.succeeded(&key);
    }
    result
}

/// A condition, keeping the previous transition time when the status is unchanged.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let first = condition(&[], "Ready", false, "Starting", "x".into(), Some(1));
        let same = condition(
            std::slice::from_ref(&first),
            "Ready",
            false,
            "Starting",
            "y".into(),
            Some(2),
        );
        assert_eq!(first.last_transition_time, same.last_transition_time);
        std::thread::sleep(Duration::from_millis(5));
        let flipped = condition(&[same], "Ready", true, "Available", "z".into(), Some(2));
        assert_ne!(first.last_transition_time, flipped.last_transition_time);
    }
}
