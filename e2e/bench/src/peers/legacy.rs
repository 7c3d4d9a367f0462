//! Starts the legacy push service (`e2e/peers/legacy/`) as the legacy deployment runs it:
//! one standalone `redis-server` as the channels_redis layer and **one** daphne process
//! serving both the browsers' WebSockets and the backend's HTTP (the legacy documents start
//! it as `daphne -p 5173 yw_crm.asgi:application`, with an access log to a file).
//!
//! [`LegacyPeer::start`] installs the stack first (`setup.sh`: a virtualenv under the Herald
//! cache, instant when warm), then starts Redis and daphne on free loopback ports and waits
//! until daphne listens. [`LegacyPeer::stop`] (or dropping the peer) ends both by pid.
//!
//! The app directory is `e2e/peers/legacy` of this source tree; `HERALD_LEGACY_APP`
//! overrides it.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use tokio::time::{sleep, Instant};

use super::{stop_by_pid, RunDir};
use crate::adapter::{TargetKind, TargetSpec};
use herald_testkit::redis::RedisServer;

/// How long daphne may take to import Django and listen.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `setup.sh` may take (a cold install downloads and builds wheels).
const SETUP_TIMEOUT: Duration = Duration::from_secs(600);
/// What daphne logs once its socket is bound.
const LISTENING: &str = "Listening on TCP address ";
/// What channels_redis logs when `group_send` dropped messages for full channels.
const OVER_CAPACITY: &str = " channels over capacity in group ";

/// Credentials and layer settings for a legacy peer.
#[derive(Debug, Clone)]
pub struct LegacyOptions {
    /// HS256 secret the browsers' JWTs are signed with.
    pub jwt_secret: String,
    /// Key for the publish endpoint (`X-Api-Key`).
    pub api_key: String,
    /// Per-channel capacity of the channel layer; `None` keeps the legacy value (100).
    pub channel_capacity: Option<u32>,
    /// Switches `CHANNEL_LAYERS` to Herald's channel layer (`clients/python`), publishing
    /// to this Herald node: what a backend moving to Herald changes, and nothing else.
    pub herald: Option<HeraldLayer>,
}

/// Where the switched backend publishes.
#[derive(Debug, Clone)]
pub struct HeraldLayer {
    /// The node's HTTP base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// The node's API key.
    pub api_key: String,
}

impl Default for LegacyOptions {
    fn default() -> Self {
        Self {
            jwt_secret: "legacy-peer-jwt-secret".into(),
            api_key: "legacy-peer-api-key".into(),
            channel_capacity: None,
            herald: None,
        }
    }
}

/// A running legacy peer: Redis plus one daphne process, both stopped on drop.
pub struct LegacyPeer {
    daphne: Option<Child>,
    addr: SocketAddr,
    options: LegacyOptions,
    dir: RunDir,
    /// Stopped (by its own Drop) after daphne, which `Drop for LegacyPeer` kills first.
    redis: RedisServer,
}

impl LegacyPeer {
    /// Installs the stack if needed, starts Redis and daphne, and waits until daphne listens.
    pub async fn start(options: LegacyOptions) -> Result<Self> {
        let app = app_dir();
        let venv = setup(&app).await?;
        let redis = RedisServer::start_standalone().await?;
        let dir = RunDir::new("herald-legacy", "HERALD_KEEP_LEGACY_DIRS")?;
        let log_path = dir.path().join("daphne.log");
        let log = fs::File::create(&log_path)
            .with_context(|| format!("could not create {}", log_path.display()))?;

        let mut command = Command::new(venv.join("bin/daphne"));
        command
            .current_dir(&app)
            .args(["-b", "127.0.0.1", "-p", "0", "--access-log"])
            .arg(dir.path().join("access.log"))
            .arg("legacy_push.asgi:application")
            .env("LEGACY_DJANGO_SECRET", django_secret())
            .env("LEGACY_JWT_SECRET", &options.jwt_secret)
            .env("LEGACY_API_KEY", &options.api_key)
            .env("LEGACY_REDIS_HOST", "127.0.0.1")
            .env("LEGACY_REDIS_PORT", redis.port().to_string())
            .env("PYTHONUNBUFFERED", "1")
            .env_remove("LEGACY_CHANNEL_CAPACITY")
            .env_remove("DJANGO_SETTINGS_MODULE")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(capacity) = options.channel_capacity {
            command.env("LEGACY_CHANNEL_CAPACITY", capacity.to_string());
        }
        command.env_remove("LEGACY_CHANNEL_LAYER");
        if let Some(herald) = &options.herald {
            command
                .env("LEGACY_CHANNEL_LAYER", "herald")
                .env("HERALD_URL", &herald.url)
                .env("HERALD_API_KEY", &herald.api_key);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting daphne from {}", venv.display()))?;
        let mut peer = Self {
            daphne: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            options,
            dir,
            redis,
        };
        peer.addr = peer.wait_listening().await?;
        Ok(peer)
    }

    /// Polls daphne's log for its listening address; fails if daphne exits first.
    async fn wait_listening(&mut self) -> Result<SocketAddr> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let log = self.log();
            if let Some(addr) = log.lines().find_map(|l| l.split(LISTENING).nth(1)) {
                return addr
                    .trim()
                    .parse()
                    .with_context(|| format!("daphne listens on {addr:?}"));
            }
            let child = self.daphne.as_mut().ok_or_else(|| anyhow!("stopped"))?;
            if let Some(status) = child.try_wait()? {
                bail!("daphne exited ({status}) before listening:\n{}", tail(&log));
            }
            if Instant::now() > deadline {
                bail!(
                    "daphne not listening after {READY_TIMEOUT:?}:\n{}",
                    tail(&log)
                );
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Where daphne serves WebSockets and the publish endpoint.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The daphne process (the server whose memory and CPU are measured).
    pub fn server_pids(&self) -> Vec<u32> {
        self.daphne.iter().map(Child::id).collect()
    }

    /// The Redis process backing the channel layer.
    pub fn redis_pids(&self) -> Vec<u32> {
        self.redis.pid().into_iter().collect()
    }

    /// The bench target for this peer; client tokens live `token_ttl_secs`.
    pub fn target_spec(&self, token_ttl_secs: u64) -> TargetSpec {
        TargetSpec {
            kind: TargetKind::Legacy,
            ws_addr: self.addr,
            publish_addr: self.addr,
            jwt_secret: self.options.jwt_secret.clone(),
            api_key: self.options.api_key.clone(),
            token_ttl_secs,
            tag_filter_every: 0,
        }
    }

    /// Everything daphne logged so far (startup, warnings, channels_redis drop reports).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("daphne.log")).unwrap_or_default()
    }

    /// Full process queues channels_redis reported so far: the sum of `N` over its
    /// "N of M channels over capacity in group G" lines (one line per affected `group_send`;
    /// with one daphne process each line is one message dropped for all its group members).
    pub fn dropped(&self) -> u64 {
        dropped_in(&self.log())
    }

    /// Stops daphne (SIGTERM, then SIGKILL after a grace period) and Redis, by pid.
    pub fn stop(&mut self) {
        if let Some(child) = self.daphne.take() {
            stop_by_pid(child);
        }
        self.redis.stop();
    }
}

impl Drop for LegacyPeer {
    fn drop(&mut self) {
        if let Some(mut child) = self.daphne.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `e2e/peers/legacy` (or `HERALD_LEGACY_APP`).
pub fn app_dir() -> PathBuf {
    std::env::var_os("HERALD_LEGACY_APP").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../peers/legacy"),
        PathBuf::from,
    )
}

/// Runs `setup.sh` (idempotent) and returns the virtualenv it reports.
pub async fn setup(app: &Path) -> Result<PathBuf> {
    let script = app.join("setup.sh");
    let mut command = tokio::process::Command::new("bash");
    command
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let out = tokio::time::timeout(SETUP_TIMEOUT, command.output())
        .await
        .map_err(|_| anyhow!("{} took over {SETUP_TIMEOUT:?}", script.display()))?
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let venv = stdout
        .lines()
        .last()
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("{} printed no virtualenv path", script.display()))?;
    if !venv.join("bin/daphne").exists() {
        bail!("{} has no bin/daphne", venv.display());
    }
    Ok(venv)
}

fn dropped_in(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains(OVER_CAPACITY))
        .filter_map(|l| {
            let before = &l[..l.find(" of ")?];
            before.rsplit(' ').next()?.parse::<u64>().ok()
        })
        .sum()
}

/// Django's SECRET_KEY: unused by the peer (no sessions or signing) but mandatory.
fn django_secret() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("legacy-peer-{}-{nanos}", std::process::id())
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_channels_redis_drop_reports() {
        let log = "\
2026-12-01 05:07:05,770 INFO     Listening on TCP address 127.0.0.1:42691
3 of 1000 channels over capacity in group alerts
127.0.0.1:1 - - [01/Dec/2026:05:07:13] \"POST /api/push/\" 200 13
120 of 1000 channels over capacity in group alerts
1 of 1 channels over capacity in group user_bench-3
";
        assert_eq!(dropped_in(log), 124);
        assert_eq!(dropped_in(""), 0);
    }
}
