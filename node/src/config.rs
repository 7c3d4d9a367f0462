//! Node configuration: command-line flags with `HERALD_*` environment fallbacks
//! (the names are in `herald_contract::settings`, which the operator renders).
//!
//! Secrets may come from files (`*_FILE`), as Kubernetes mounts them. Without a token
//! key and an API key the node refuses to start, unless `--dev` asks it to generate
//! both for a local trial.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use herald_contract::settings;

use crate::auth::AuthSettings;

/// Command-line flags. Every flag also reads an environment variable.
#[derive(Debug, Clone, Parser)]
#[command(name = "herald-node", version, about = "Herald WebSocket push node")]
pub struct Args {
    /// Address to listen on (WebSockets, publish API, health and metrics).
    #[arg(long, env = settings::LISTEN, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Path of the WebSocket endpoint.
    #[arg(long, env = settings::WS_PATH, default_value = "/ws/notifications/")]
    pub ws_path: String,

    /// Development mode: generate a JWT secret and API key, print a user token and a
    /// publish example, and serve a demo page at `/`.
    #[arg(long, env = settings::DEV)]
    pub dev: bool,

    /// HS256 secret for client tokens.
    #[arg(long, env = settings::JWT_SECRET, hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// File holding the HS256 secret.
    #[arg(long, env = settings::JWT_SECRET_FILE)]
    pub jwt_secret_file: Option<PathBuf>,

    /// PEM public key files for RS256/ES256 tokens (comma separated).
    #[arg(long, env = settings::JWT_PUBLIC_KEY_FILE, value_delimiter = ',')]
    pub jwt_public_key_file: Vec<PathBuf>,

    /// Accepted token issuers (comma separated; any when unset).
    #[arg(long, env = settings::JWT_ISSUER, value_delimiter = ',')]
    pub jwt_issuer: Vec<String>,

    /// Accepted token audiences (comma separated; not checked when unset).
    #[arg(long, env = settings::JWT_AUDIENCE, value_delimiter = ',')]
    pub jwt_audience: Vec<String>,

    /// Clock skew tolerated on `exp`/`nbf`.
    #[arg(long, env = settings::JWT_LEEWAY, default_value = "10s", value_parser = humantime::parse_duration)]
    pub jwt_leeway: Duration,

    /// Claim holding the user id (falls back to `sub`).
    #[arg(long, env = settings::USER_CLAIM, default_value = "user_id")]
    pub user_claim: String,

    /// Claim holding the user's roles.
    #[arg(long, env = settings::ROLE_CLAIM, default_value = "roles")]
    pub role_claim: String,

    /// Accept connections without a token (they may use public channels only).
    #[arg(long, env = settings::ALLOW_ANONYMOUS)]
    pub allow_anonymous: bool,

    /// API key backends use to publish and to read admin endpoints.
    #[arg(long, env = settings::API_KEY, hide_env_values = true)]
    pub api_key: Option<String>,

    /// File holding the API key.
    #[arg(long, env = settings::API_KEY_FILE)]
    pub api_key_file: Option<PathBuf>,

    /// Redis URL (`redis://` or `redis-cluster://`); the embedded broker when unset.
    #[arg(long, env = settings::REDIS_URL)]
    pub redis_url: Option<String>,

    /// Replicas a history write must reach before a publish is acknowledged
    /// (`WAIT`); defaults to 1 for `redis-cluster://` URLs and 0 otherwise.
    #[arg(long, env = settings::REDIS_MIN_REPLICAS)]
    pub redis_min_replicas: Option<u32>,

    /// Address other components use to reach this node (defaults to the bound
    /// address; set it to the pod IP in Kubernetes).
    #[arg(long, env = settings::ADVERTISE_ADDR)]
    pub advertise_addr: Option<String>,

    /// How often the node heartbeats its presence into Redis (records expire after
    /// three intervals).
    #[arg(long, env = settings::HEARTBEAT_INTERVAL, default_value = "5s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,

    /// Messages the Redis subscriber buffers before it counts as lagging.
    #[arg(long, env = settings::REDIS_BUFFER, default_value_t = 65_536)]
    pub redis_buffer: usize,

    /// JSON channel file (`{"channels":[...]}`); the four default channels when unset.
    #[arg(long, env = settings::CHANNELS)]
    pub channels: Option<PathBuf>,

    /// How often the channel file is checked for changes.
    #[arg(long, env = settings::CHANNELS_RELOAD, default_value = "2s", value_parser = humantime::parse_duration)]
    pub channels_reload: Duration,

    /// Identifier of this node (defaults to the host name).
    #[arg(long, env = settings::NODE_ID)]
    pub node_id: Option<String>,

    /// Most open WebSocket connections on this node.
    #[arg(long, env = settings::MAX_CONNECTIONS, default_value_t = 19_000)]
    pub max_connections: usize,

    /// Most open connections per user (0 = unlimited).
    #[arg(long, env = settings::MAX_CONNECTIONS_PER_USER, default_value_t = 16)]
    pub max_connections_per_user: usize,

    /// Most channel subscriptions per connection.
    #[arg(long, env = settings::MAX_SUBSCRIPTIONS, default_value_t = 64)]
    pub max_subscriptions: usize,

    /// Largest client WebSocket message in bytes.
    #[arg(long, env = settings::MAX_MESSAGE_BYTES, default_value_t = 16 * 1024)]
    pub max_message_bytes: usize,

    /// Largest publish API body in bytes.
    #[arg(long, env = settings::MAX_PUBLISH_BYTES, default_value_t = 1024 * 1024)]
    pub max_publish_bytes: usize,

    /// Most messages in one publish batch (a JSON array body).
    #[arg(long, env = settings::MAX_BATCH, default_value_t = 1000)]
    pub max_batch: usize,

    /// How long a publish's idempotency key is remembered (per channel): a repeat
    /// within it answers the first publish's result and publishes nothing.
    #[arg(long, env = settings::IDEMPOTENCY_WINDOW, default_value = "5m", value_parser = humantime::parse_duration)]
    pub idempotency_window: Duration,

    /// Most recipients (`users`) of one published message.
    #[arg(long, env = settings::MAX_USERS_PER_MESSAGE, default_value_t = 1000)]
    pub max_users_per_message: usize,

    /// Deepest nesting of arrays and objects in a published message's `data`.
    #[arg(long, env = settings::MAX_DATA_DEPTH, default_value_t = 64)]
    pub max_data_depth: usize,

    /// Sustained client messages per second per connection.
    #[arg(long, env = settings::INBOUND_RATE, default_value_t = 10.0)]
    pub inbound_rate: f64,

    /// Client messages allowed in a burst per connection.
    #[arg(long, env = settings::INBOUND_BURST, default_value_t = 20)]
    pub inbound_burst: u32,

    /// Frames queued per connection before it counts as a slow consumer.
    #[arg(long, env = settings::OUTBOUND_QUEUE, default_value_t = 1024)]
    pub outbound_queue: usize,

    /// Time allowed to send the HTTP request head (the handshake).
    #[arg(long, env = settings::HANDSHAKE_TIMEOUT, default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,

    /// Interval of WebSocket pings to clients; a client silent for two intervals is
    /// disconnected.
    #[arg(long, env = settings::PING_INTERVAL, default_value = "25s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,

    /// Time allowed for a write to a client socket before it is dropped.
    #[arg(long, env = settings::WRITE_TIMEOUT, default_value = "10s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,

    /// On SIGTERM, client closes (1012) are spread over this window.
    #[arg(long, env = settings::DRAIN_WINDOW, default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_window: Duration,

    /// OTLP/HTTP endpoint for traces (e.g. http://127.0.0.1:4318); off when unset.
    #[arg(long, env = settings::OTLP_ENDPOINT)]
    pub otlp_endpoint: Option<String>,

    /// Fraction of publishes traced when OTLP export is on.
    #[arg(long, env = settings::TRACE_SAMPLE_RATIO, default_value_t = 1.0)]
    pub trace_sample_ratio: f64,

    /// Log format: `text` or `json`.
    #[arg(long, env = settings::LOG_FORMAT, default_value = "text")]
    pub log_format: String,
}

/// Configuration problems found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A secret file could not be read.
    #[error("cannot read {what} from {path}: {source}")]
    ReadFile {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A required secret is missing.
    #[error("{0}")]
    Missing(String),
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// Secrets resolved from flags, environment and files.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// Token verification settings.
    pub auth: AuthSettings,
    /// The publish/admin API key.
    pub api_key: String,
}

impl Args {
    /// Reads secret files and checks that the node can authenticate anything.
    pub fn secrets(&self) -> Result<Secrets, ConfigError> {
        let jwt_secret = match (&self.jwt_secret, &self.jwt_secret_file) {
            (Some(secret), _) => Some(secret.clone()),
            (None, Some(path)) => Some(read_secret("the JWT secret", path)?),
            (None, None) => None,
        };
        let public_keys = self
            .jwt_public_key_file
            .iter()
            .map(|path| {
                std::fs::read(path)
                    .map(|pem| (path.display().to_string(), pem))
                    .map_err(|source| ConfigError::ReadFile {
                        what: "a JWT public key",
                        path: path.clone(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let api_key = match (&self.api_key, &self.api_key_file) {
            (Some(key), _) => key.clone(),
            (None, Some(path)) => read_secret("the API key", path)?,
            (None, None) => String::new(),
        };
        let mut missing = Vec::new();
        if jwt_secret.as_deref().is_none_or(str::is_empty) && public_keys.is_empty() {
            missing.push("HERALD_JWT_SECRET (or HERALD_JWT_SECRET_FILE, or HERALD_JWT_PUBLIC_KEY_FILE for RS256/ES256)");
        }
        if api_key.len() < 16 {
            missing.push("HERALD_API_KEY (or HERALD_API_KEY_FILE), at least 16 characters");
        }
        if !missing.is_empty() {
            return Err(ConfigError::Missing(format!(
                "refusing to start without credentials; set {}. For a local trial run `herald-node --dev`.",
                missing.join(" and ")
            )));
        }
        Ok(Secrets {
            auth: AuthSettings {
                secret: jwt_secret,
                public_keys,
                issuers: self.jwt_issuer.clone(),
                audiences: self.jwt_audience.clone(),
                leeway_secs: self.jwt_leeway.as_secs(),
                user_claim: self.user_claim.clone(),
                role_claim: self.role_claim.clone(),
            },
            api_key,
        })
    }

    /// Checks limits for values that would make the node useless.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.ws_path.starts_with('/') {
            return Err(ConfigError::Invalid(format!(
                "HERALD_WS_PATH must start with '/', got {:?}",
                self.ws_path
            )));
        }
        if !(self.inbound_rate.is_finite() && self.inbound_rate > 0.0) || self.inbound_burst == 0 {
            return Err(ConfigError::Invalid(
                "HERALD_INBOUND_RATE must be > 0 and HERALD_INBOUND_BURST >= 1".into(),
            ));
        }
        if self.max_message_bytes < 256 {
            return Err(ConfigError::Invalid(
                "HERALD_MAX_MESSAGE_BYTES must be at least 256".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            return Err(ConfigError::Invalid(
                "HERALD_TRACE_SAMPLE_RATIO must be between 0 and 1".into(),
            ));
        }
        Ok(())
    }

    /// This node's id.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| format!("node-{}", std::process::id()))
        })
    }
}

fn read_secret(what: &'static str, path: &PathBuf) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| ConfigError::ReadFile {
            what,
            path: path.clone(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("herald-node").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn refuses_to_start_without_credentials_and_says_what_to_set() {
        let err = parse(&[]).secrets().unwrap_err().to_string();
        assert!(err.contains("HERALD_JWT_SECRET"), "{err}");
        assert!(err.contains("HERALD_API_KEY"), "{err}");
        assert!(err.contains("--dev"), "{err}");
    }

    #[test]
    fn accepts_a_secret_and_key() {
        let args = parse(&["--jwt-secret", "s", "--api-key", "0123456789abcdef"]);
        let secrets = args.secrets().unwrap();
        assert_eq!(secrets.auth.secret.as_deref(), Some("s"));
        assert_eq!(secrets.auth.user_claim, "user_id");
        assert!(args.validate().is_ok());
    }

    #[test]
    fn every_flag_reads_a_setting_of_the_contract_and_every_setting_is_read() {
        use clap::CommandFactory;
        let mut read: Vec<String> = Args::command()
            .get_arguments()
            .filter(|arg| !matches!(arg.get_id().as_str(), "help" | "version"))
            .map(|arg| {
                let env = arg
                    .get_env()
                    .unwrap_or_else(|| panic!("--{} has no env", arg.get_id()));
                env.to_str().unwrap().to_owned()
            })
            .collect();
        read.sort();
        let mut contract: Vec<String> = settings::ALL.iter().map(|s| s.to_string()).collect();
        contract.sort();
        assert_eq!(read, contract);
    }

    #[test]
    fn rejects_nonsense_limits() {
        assert!(parse(&["--inbound-rate", "0"]).validate().is_err());
        assert!(parse(&["--ws-path", "ws"]).validate().is_err());
        assert!(parse(&["--trace-sample-ratio", "2"]).validate().is_err());
    }
}
