//! Leader election with a `coordination.k8s.io` Lease, so two operator replicas are
//! safe: only the holder reconciles, and it stops before anyone else can start.
//!
//! With `D` the lease duration, the renew deadline is `R = 2D/3` and the retry period
//! `P = D/5` (10 s and 3 s at the default 15 s; 4 s and 1.2 s at 6 s):
//!
//! - A standby takes the lease only once it has seen the same record (same
//!   `resourceVersion`) for `D` by its own monotonic clock, as client-go does, or when the
//!   holder released it; so wall-clock skew between replicas does not matter. Every write is
//!   a compare-and-swap on the `resourceVersion`: if the leader's renewal that *started* at
//!   `S` succeeded, it landed at some `W ≥ S`, any standby write after it must be based on a
//!   read at `O ≥ W`, and it happens after `O + D ≥ S + D`.
//! - The leader counts from `S` too: each attempt times out at `min(start + R/2, S + R)`;
//!   once `S + R` passes without a renewal, [`Elector::hold`] returns and the caller aborts
//!   its controllers (no graceful drain), and the [`Fence`] on their client refuses every
//!   request from `S + R` on, even from a task that runs before the hold loop notices (after
//!   a SIGSTOP, say).
//! - So this replica sends its last request before `S + R`, and another leader's first write
//!   comes after `S + D`: the margin `D − R = D/3` (5 s; 2 s at 6 s) covers the request's
//!   trip and clock-rate differences. Not covered: a request sent before `S + R` that the
//!   network delays by more than `D/3`; Kubernetes has no fencing token to refuse it.
//! - On shutdown the holder stops its controllers, then [`Elector::release`]s the lease
//!   (empty holder, 1 s duration, as client-go's `ReleaseOnCancel`), so a standby takes
//!   over at its next retry instead of after `D`.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::client::Body;
use kube::Client;
use parking_lot::Mutex;
use tokio::time::Instant;

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity.
    pub identity: String,
    /// How long a lease stays valid without renewal.
    pub duration: Duration,
}

/// The intervals derived from the lease duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `D`: how long a standby waits on an unchanged lease.
    pub duration: Duration,
    /// `R = 2D/3`: the holder steps down when it has not renewed for this long.
    pub renew_deadline: Duration,
    /// `P = D/5`: time between attempts to acquire or renew.
    pub retry_period: Duration,
    /// `R/2`: the longest one attempt may take (and never past the deadline).
    pub attempt_timeout: Duration,
}

impl Timing {
    /// The timing for a lease lasting `duration`.
    pub fn new(duration: Duration) -> Self {
        let renew_deadline = duration * 2 / 3;
        Self {
            duration,
            renew_deadline,
            retry_period: duration / 5,
            attempt_timeout: renew_deadline / 2,
        }
    }

    /// `D − R`: how long after this replica's last request another one can first lead.
    pub fn margin(&self) -> Duration {
        self.duration - self.renew_deadline
    }
}

/// Leader-election failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An attempt took longer than allowed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A fenced client was used while this replica is not (surely) the leader.
    #[error("not the leader: request refused")]
    NotLeader,
}

/// Why [`Elector::hold`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// Another replica holds the lease.
    Taken,
    /// No renewal succeeded within the renew deadline.
    Deadline,
}

/// Until when the leader may send requests; shared with the controllers' client.
#[derive(Debug, Clone, Default)]
pub struct Fence {
    until: Arc<Mutex<Option<Instant>>>,
}

impl Fence {
    /// True while requests may go out.
    pub fn open(&self) -> bool {
        self.until
            .lock()
            .is_some_and(|until| Instant::now() < until)
    }

    fn open_until(&self, until: Instant) {
        *self.until.lock() = Some(until);
    }

    /// Refuses every request from now on.
    pub fn close(&self) {
        *self.until.lock() = None;
    }

    /// `client`, refusing every request with [`Error::NotLeader`] while the fence is closed.
    pub fn client(&self, client: Client) -> Client {
        let namespace = client.default_namespace().to_owned();
        Client::new(
            Fenced {
                fence: self.clone(),
                client,
            },
            namespace,
        )
    }
}

/// A `tower` service passing requests to a client while its fence is open.
#[derive(Clone)]
struct Fenced {
    fence: Fence,
    client: Client,
}

impl tower::Service<http::Request<Body>> for Fenced {
    type Response = http::Response<Body>;
    type Error = Error;
    type Future = BoxFuture<'static, Result<Self::Response, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if !self.fence.open() {
            return Box::pin(std::future::ready(Err(Error::NotLeader)));
        }
        let client = self.client.clone();
        Box::pin(async move { Ok(client.send(request).await?) })
    }
}

/// The lease record last seen, and when this replica first saw it.
#[derive(Debug)]
struct Observed {
    version: Option<String>,
    since: Instant,
}

/// Holds or competes for the lease.
#[derive(Debug, Clone)]
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    timing: Timing,
    observed: Arc<Mutex<Option<Observed>>>,
    fence: Fence,
}

impl Elector {
    /// An elector for `config`.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            timing: Timing::new(config.duration),
            config,
            observed: Arc::default(),
            fence: Fence::default(),
        }
    }

    /// The fence that closes when this replica stops leading; wrap the controllers'
    /// client with [`Fence::client`].
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Tries once to take or renew the lease; true when this replica holds it.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        // Rounded up: a standby may wait longer than the holder counts, never shorter.
        let seconds = self.config.duration.as_millis().div_ceil(1000).max(1) as i32;
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(seconds, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let mine = holder == Some(self.config.identity.as_str());
        let valid =
            Duration::from_secs(spec.lease_duration_seconds.unwrap_or(seconds).max(0) as u64);
        let expired = self.observe(lease.metadata.resource_version.clone(), valid);
        if !mine && holder.is_some() && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let mut next = self.spec(seconds, transitions);
        if mine {
            next.acquire_time = spec.acquire_time;
        }
        lease.spec = Some(next);
        // The resourceVersion in `lease` makes this a compare-and-swap.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Records the lease's `version`; true once it has stayed the same for `valid`.
    fn observe(&self, version: Option<String>, valid: Duration) -> bool {
        let mut observed = self.observed.lock();
        let now = Instant::now();
        match observed.as_ref() {
            Some(seen) if seen.version == version => now >= seen.since + valid,
            _ => {
                *observed = Some(Observed {
                    version,
                    since: now,
                });
                false
            }
        }
    }

    fn spec(&self, seconds: i32, transitions: i32) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One attempt, limited to `limit`.
    async fn attempt(&self, limit: Instant) -> Result<bool, Error> {
        match tokio::time::timeout_at(limit, self.try_acquire()).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(Error::Timeout(self.timing.attempt_timeout)),
        }
    }

    /// Waits until this replica holds the lease and opens the fence; returns when the
    /// successful attempt started, which is what [`Self::hold`] counts the renew deadline
    /// from.
    pub async fn acquire(&self) -> Instant {
        loop {
            let started = Instant::now();
            match self.attempt(started + self.timing.attempt_timeout).await {
                Ok(true) => {
                    self.fence.open_until(started + self.timing.renew_deadline);
                    return started;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep_until(started + self.timing.retry_period).await;
        }
    }

    /// Renews the lease acquired by the attempt started at `acquired`, keeping the fence
    /// open until the renew deadline; returns (fence closed) when the lease is lost, and
    /// the caller must abort its controllers at once.
    pub async fn hold(&self, acquired: Instant) -> Lost {
        renew(&self.timing, &self.fence, acquired, |limit| {
            self.attempt(limit)
        })
        .await
    }

    /// Gives the lease up if this replica still holds it, so a standby takes over at its
    /// next retry. Call after the controllers stopped; closes the fence.
    pub async fn release(&self) -> Result<(), Error> {
        self.fence.close();
        let limit = self.timing.attempt_timeout;
        let release = async {
            let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
                return Ok(());
            };
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                return Ok(());
            }
            let now = MicroTime(Timestamp::now());
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.acquire_time = Some(now.clone());
            spec.renew_time = Some(now);
            self.api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await?;
            Ok(())
        };
        tokio::time::timeout(limit, release)
            .await
            .map_err(|_| Error::Timeout(limit))?
    }
}

/// The renewal loop behind [`Elector::hold`]: calls `attempt(limit)` every retry period
/// and returns when one says the lease is taken or none succeeded for the renew deadline.
async fn renew<F, Fut>(timing: &Timing, fence: &Fence, acquired: Instant, mut attempt: F) -> Lost
where
    F: FnMut(Instant) -> Fut,
    Fut: Future<Output = Result<bool, Error>>,
{
    let mut renewed = acquired;
    let mut started = acquired;
    loop {
        let deadline = renewed + timing.renew_deadline;
        fence.open_until(deadline);
        tokio::time::sleep_until((started + timing.retry_period).min(deadline)).await;
        started = Instant::now();
        if started >= deadline {
            fence.close();
            tracing::warn!(deadline = ?timing.renew_deadline, "lease not renewed in time");
            return Lost::Deadline;
        }
        let limit = (started + timing.attempt_timeout).min(deadline);
        match tokio::time::timeout_at(limit, attempt(limit)).await {
            Ok(Ok(true)) => renewed = started,
            Ok(Ok(false)) => {
                fence.close();
                return Lost::Taken;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "lease renewal failed"),
            Err(_) => tracing::warn!("lease renewal timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const D: Duration = Duration::from_secs(6);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_deadline_leaves_a_third_of_the_lease_as_margin() {
        let t = Timing::new(D);
        assert_eq!(t.renew_deadline, ms(4000));
        assert_eq!(t.retry_period, ms(1200));
        assert_eq!(t.attempt_timeout, ms(2000));
        assert_eq!(t.margin(), ms(2000));
        let t = Timing::new(Duration::from_secs(15));
        assert_eq!((t.renew_deadline, t.margin()), (ms(10_000), ms(5000)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_renewal_steps_down_at_the_deadline_and_the_fence_closes_then() {
        let timing = Timing::new(D);
        let fence = Fence::default();
        let acquired = Instant::now();
        let starts = Mutex::new(Vec::new());
        let watcher = {
            let fence = fence.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(acquired + ms(3999)).await;
                let before = fence.open();
                tokio::time::sleep_until(acquired + ms(4000)).await;
                (before, fence.open())
            })
        };
        let lost = renew(&timing, &fence, acquired, |limit| {
            starts.lock().push((acquired.elapsed(), limit - acquired));
            std::future::pending()
        })
        .await;
        assert_eq!(lost, Lost::Deadline);
        assert_eq!(acquired.elapsed(), timing.renew_deadline);
        assert!(!fence.open());
        // The first attempt gets its full timeout, the second only what is left.
        assert_eq!(
            *starts.lock(),
            vec![(ms(1200), ms(3200)), (ms(3200), ms(4000))]
        );
        assert_eq!(watcher.await.unwrap(), (true, false));
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_counts_from_the_start_of_the_last_successful_renewal() {
        let timing = Timing::new(D);
        let fence = Fence::default();
        let acquired = Instant::now();
        let calls = AtomicUsize::new(0);
        let lost = renew(&timing, &fence, acquired, |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                // Three slow successes (the last starts at 3.6 s), then only failures.
                tokio::time::sleep(ms(500)).await;
                if n < 3 {
                    Ok(true)
                } else {
                    Err(Error::NotLeader)
                }
            }
        })
        .await;
        assert_eq!(lost, Lost::Deadline);
        assert_eq!(acquired.elapsed(), ms(3600) + timing.renew_deadline);
        // Failures at 4.8, 6.0 and 7.2 s, none past the deadline at 7.6 s.
        assert_eq!(calls.load(Ordering::SeqCst), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_taken_by_another_replica_stops_at_once() {
        let timing = Timing::new(D);
        let fence = Fence::default();
        let acquired = Instant::now();
        let lost = renew(&timing, &fence, acquired, |_| async { Ok(false) }).await;
        assert_eq!(lost, Lost::Taken);
        assert_eq!(acquired.elapsed(), timing.retry_period);
        assert!(!fence.open());
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_keep_the_fence_open() {
        let timing = Timing::new(D);
        let fence = Fence::default();
        let acquired = Instant::now();
        let held = tokio::time::timeout(
            ms(30_000),
            renew(&timing, &fence, acquired, |_| async { Ok(true) }),
        )
        .await;
        assert!(held.is_err(), "still holding after 30 s");
        assert!(fence.open());
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_fence_refuses_requests_without_sending_them() {
        let fence = Fence::default();
        // Nothing listens on this port: a request that went out would fail differently.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = fence.client(Client::try_from(config).unwrap());
        let api: Api<Lease> = Api::namespaced(client, "default");
        let err = api.get_opt("x").await.unwrap_err();
        assert!(err.to_string().contains("not the leader"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_standby_waits_a_whole_lease_on_one_unchanged_record() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let elector = Elector::new(
            Client::try_from(config).unwrap(),
            LeaseConfig {
                name: "l".into(),
                namespace: "default".into(),
                identity: "b".into(),
                duration: D,
            },
        );
        let v = |s: &str| Some(s.to_owned());
        assert!(!elector.observe(v("1"), D));
        tokio::time::advance(ms(5999)).await;
        assert!(!elector.observe(v("1"), D));
        // A renewal restarts the wait.
        assert!(!elector.observe(v("2"), D));
        tokio::time::advance(ms(5999)).await;
        assert!(!elector.observe(v("2"), D));
        tokio::time::advance(ms(1)).await;
        assert!(elector.observe(v("2"), D));
    }
}
