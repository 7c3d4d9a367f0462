//! The push servers Herald is compared with, started as real processes on loopback so that
//! the bench can drive them through their [`adapter`](super::adapter)s.
//!
//! - [`legacy`]: the Django Channels + channels_redis + daphne service Herald replaces.
//! - [`centrifugo`]: Centrifugo, built from Go modules by `e2e/peers/centrifugo/build.sh`.

pub mod centrifugo;
pub mod legacy;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How long a peer may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Stops a peer process by pid: SIGTERM, then SIGKILL once [`STOP_GRACE`] is over.
pub(crate) fn stop_by_pid(mut child: Child) {
    let terminated = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    let deadline = Instant::now() + STOP_GRACE;
    while terminated && Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A directory for a peer's config and logs under [`std::env::temp_dir`], removed on drop
/// (kept when the environment variable named at creation is set).
pub(crate) struct RunDir {
    path: PathBuf,
    keep_env: &'static str,
}

impl RunDir {
    /// Creates `<tmp>/<prefix>-<pid>-<n>`.
    pub(crate) fn new(prefix: &str, keep_env: &'static str) -> Result<Self> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).with_context(|| format!("could not create {}", path.display()))?;
        Ok(Self { path, keep_env })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::env::var_os(self.keep_env).is_some() {
            eprintln!("keeping peer directory {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
