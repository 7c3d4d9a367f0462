//! The node's background tasks (presence heartbeats, channel reloads, the Redis
//! broker's loops), stopped in order at shutdown instead of being dropped mid-write.
//!
//! Every task is spawned into one [`TaskTracker`] and watches one [`CancellationToken`];
//! [`Background::stop`] cancels the token and waits for every task to return, so
//! whatever runs after it (removing the presence records) can no longer race a
//! heartbeat in flight.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Background tasks sharing one stop signal.
#[derive(Debug, Default)]
pub struct Background {
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Background {
    /// No tasks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The signal tasks watch: a task stops at its next await on
    /// [`CancellationToken::cancelled`], after finishing the step it is in.
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Spawns `task`, named `name` in the logs.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(async move {
            task.await;
            tracing::debug!(task = name, "background task stopped");
        });
    }

    /// Spawns a loop that keeps no state worth finishing: at the stop signal it is
    /// dropped at its current await.
    pub fn spawn_until_stopped<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.token();
        self.spawn(name, async move {
            stop.run_until_cancelled_owned(task).await;
        });
    }

    /// Cancels every task and waits up to `limit` for all of them to return; false
    /// when some were still running at the limit.
    pub async fn stop(&self, limit: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn stop_waits_for_each_task_to_finish_its_step() {
        let background = Background::new();
        let finished = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let stop = background.token();
            let finished = finished.clone();
            background.spawn("step", async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(5)) => {}
                    }
                }
                // The last step runs to completion after the cancel.
                tokio::time::sleep(Duration::from_millis(30)).await;
                finished.fetch_add(1, Ordering::SeqCst);
            });
        }
        assert!(background.stop(Duration::from_secs(5)).await);
        assert_eq!(finished.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn loops_without_state_are_dropped_at_the_signal() {
        let background = Background::new();
        background.spawn_until_stopped("pending", std::future::pending());
        assert!(background.stop(Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn stop_gives_up_at_the_limit() {
        let background = Background::new();
        background.spawn("stuck", std::future::pending());
        assert!(!background.stop(Duration::from_millis(50)).await);
    }
}
