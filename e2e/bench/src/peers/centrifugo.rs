//! Starts Centrifugo (built by `e2e/peers/centrifugo/build.sh`) on loopback with a config
//! that lets the bench's clients in: HS256 connection tokens, an HTTP API key, and channels
//! for both workloads:
//!
//! - `alerts` (no namespace): any connected client may subscribe (broadcast);
//! - `personal:#<user>`: user-limited channels, only `<user>` may subscribe (personal);
//! - `group:<n>`: any connected client may subscribe (the ten-user groups).
//!
//! No history, presence or recovery anywhere: Centrifugo's defaults, plain PUB/SUB. The
//! engine is Centrifugo's in-memory one unless [`Engine::RedisCluster`] is chosen, which
//! several peers can share to form a Centrifugo cluster. [`CentrifugoPeer::start`] builds
//! the binary if needed (instant when warm), writes the config, starts the server and waits
//! until `/health` answers; [`CentrifugoPeer::stop`] (or dropping the peer) ends it by pid.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};

use super::{stop_by_pid, RunDir};
use crate::adapter::centrifugo::{GROUP_NAMESPACE, PERSONAL_NAMESPACE};
use crate::adapter::{TargetKind, TargetSpec};

/// How long Centrifugo may take to answer `/health`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `build.sh` may take (a cold build compiles Centrifugo and its dependencies).
const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);

/// Where Centrifugo keeps its broker state.
#[derive(Debug, Clone, Default)]
pub enum Engine {
    /// In-process (one node only).
    #[default]
    Memory,
    /// A Redis Cluster, given by the `host:port` addresses of some of its nodes.
    RedisCluster(Vec<String>),
}

/// Credentials and engine of a Centrifugo peer.
#[derive(Debug, Clone)]
pub struct CentrifugoOptions {
    /// HMAC secret connection tokens are signed with.
    pub jwt_secret: String,
    /// Key of the server HTTP API (`X-API-Key`).
    pub api_key: String,
    /// Broker and presence engine.
    pub engine: Engine,
    /// Node name in a cluster (Centrifugo picks one if `None`).
    pub node_name: Option<String>,
}

impl Default for CentrifugoOptions {
    fn default() -> Self {
        Self {
            jwt_secret: "centrifugo-peer-jwt-secret".into(),
            api_key: "centrifugo-peer-api-key".into(),
            engine: Engine::Memory,
            node_name: None,
        }
    }
}

/// A running Centrifugo process, stopped on drop.
pub struct CentrifugoPeer {
    child: Option<Child>,
    addr: SocketAddr,
    options: CentrifugoOptions,
    dir: RunDir,
}

impl CentrifugoPeer {
    /// Builds Centrifugo if needed, starts it on a free loopback port and waits until it
    /// answers `/health`.
    pub async fn start(options: CentrifugoOptions) -> Result<Self> {
        let bin = install().await?;
        let dir = RunDir::new("herald-centrifugo", "HERALD_KEEP_PEER_DIRS")?;
        let port = free_port()?;
        let config = dir.path().join("config.json");
        fs::write(&config, config_json(&options, port).to_string())
            .with_context(|| format!("writing {}", config.display()))?;
        let log_path = dir.path().join("centrifugo.log");
        let log = fs::File::create(&log_path)
            .with_context(|| format!("could not create {}", log_path.display()))?;
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut peer = Self {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            options,
            dir,
        };
        peer.wait_ready().await?;
        Ok(peer)
    }

    /// Polls `/health` until it answers 200; fails if Centrifugo exits first.
    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if health(self.addr).await {
                return Ok(());
            }
            let child = self.child.as_mut().ok_or_else(|| anyhow!("stopped"))?;
            if let Some(status) = child.try_wait()? {
                bail!(
                    "centrifugo exited ({status}) before serving:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "centrifugo not healthy after {READY_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Where Centrifugo serves WebSockets and its HTTP API.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Centrifugo process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The bench target for this peer; client tokens live `token_ttl_secs`.
    pub fn target_spec(&self, token_ttl_secs: u64) -> TargetSpec {
        TargetSpec {
            kind: TargetKind::Centrifugo,
            ws_addr: self.addr,
            publish_addr: self.addr,
            jwt_secret: self.options.jwt_secret.clone(),
            api_key: self.options.api_key.clone(),
            token_ttl_secs,
            tag_filter_every: 0,
        }
    }

    /// Everything Centrifugo logged so far (warnings and errors only).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("centrifugo.log")).unwrap_or_default()
    }

    /// Stops Centrifugo (SIGTERM, then SIGKILL after a grace period), by pid.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_by_pid(child);
        }
    }
}

impl Drop for CentrifugoPeer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The Centrifugo configuration for `options`, listening on `127.0.0.1:port`.
pub fn config_json(options: &CentrifugoOptions, port: u16) -> serde_json::Value {
    let engine = match &options.engine {
        Engine::Memory => json!({"type": "memory"}),
        // One cluster: its seed addresses comma-separated in a single entry.
        Engine::RedisCluster(addrs) => json!({
            "type": "redis",
            "redis": {"cluster_address": [addrs.join(",")], "prefix": "herald-bench"}
        }),
    };
    let mut config = json!({
        "http_server": {"address": "127.0.0.1", "port": port},
        "log": {"level": "warn"},
        "client": {"token": {"hmac_secret_key": options.jwt_secret}},
        "http_api": {"key": options.api_key},
        "health": {"enabled": true},
        "usage_stats": {"disabled": true},
        "engine": engine,
        "channel": {
            "without_namespace": {"allow_subscribe_for_client": true},
            "namespaces": [
                {"name": PERSONAL_NAMESPACE, "allow_user_limited_channels": true},
                {"name": GROUP_NAMESPACE, "allow_subscribe_for_client": true}
            ]
        }
    });
    if let Some(name) = &options.node_name {
        config["node"] = json!({"name": name});
    }
    config
}

/// The Centrifugo binary: `HERALD_CENTRIFUGO_BIN` when set, else the one `build.sh` puts in
/// `$HERALD_CACHE/bin` (HERALD_CACHE defaults to `$HOME/.cache/herald`).
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HERALD_CENTRIFUGO_BIN") {
        return path.into();
    }
    let cache = std::env::var_os("HERALD_CACHE").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_default();
            Path::new(&home).join(".cache/herald")
        },
        PathBuf::from,
    );
    cache.join("bin/centrifugo")
}

/// Runs `e2e/peers/centrifugo/build.sh` (instant when the binary is up to date) unless
/// `HERALD_CENTRIFUGO_BIN` names a binary, and returns the binary. The script runs once per
/// process; later calls reuse its outcome.
pub async fn install() -> Result<PathBuf> {
    static BUILT: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    BUILT.get_or_try_init(build).await.cloned()
}

async fn build() -> Result<PathBuf> {
    if std::env::var_os("HERALD_CENTRIFUGO_BIN").is_none() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../peers/centrifugo/build.sh");
        let mut command = tokio::process::Command::new("bash");
        command
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let status = timeout(BUILD_TIMEOUT, command.status())
            .await
            .map_err(|_| anyhow!("{} took over {BUILD_TIMEOUT:?}", script.display()))?
            .with_context(|| format!("running {}", script.display()))?;
        if !status.success() {
            bail!("{} failed ({status})", script.display());
        }
    }
    let bin = binary();
    if !bin.exists() {
        bail!("{} not found", bin.display());
    }
    Ok(bin)
}

/// A loopback port nothing listens on right now.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Whether `GET /health` on `addr` answers 200.
async fn health(addr: SocketAddr) -> bool {
    let probe = async {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut head = [0u8; 16];
        let n = tcp.read(&mut head).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[..n]).contains(" 200"))
    };
    matches!(timeout(Duration::from_secs(1), probe).await, Ok(Ok(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_allows_the_bench_channels() {
        let c = config_json(&CentrifugoOptions::default(), 4321);
        assert_eq!(c["http_server"]["address"], "127.0.0.1");
        assert_eq!(c["http_server"]["port"], 4321);
        assert_eq!(
            c["client"]["token"]["hmac_secret_key"],
            "centrifugo-peer-jwt-secret"
        );
        assert_eq!(c["http_api"]["key"], "centrifugo-peer-api-key");
        assert_eq!(c["engine"]["type"], "memory");
        assert_eq!(
            c["channel"]["without_namespace"]["allow_subscribe_for_client"],
            true
        );
        let ns = c["channel"]["namespaces"].as_array().unwrap();
        assert_eq!(ns[0]["name"], "personal");
        assert_eq!(ns[0]["allow_user_limited_channels"], true);
        assert!(ns[0].get("allow_subscribe_for_client").is_none());
        assert_eq!(ns[1]["name"], "group");
        assert!(c.get("node").is_none());

        let clustered = config_json(
            &CentrifugoOptions {
                engine: Engine::RedisCluster(vec![
                    "127.0.0.1:7000".into(),
                    "127.0.0.1:7001".into(),
                ]),
                node_name: Some("c-1".into()),
                ..CentrifugoOptions::default()
            },
            1,
        );
        assert_eq!(clustered["engine"]["type"], "redis");
        assert_eq!(
            clustered["engine"]["redis"]["cluster_address"][0],
            "127.0.0.1:7000,127.0.0.1:7001"
        );
        assert_eq!(clustered["node"]["name"], "c-1");
    }
}
