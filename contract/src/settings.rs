//! The node's settings as environment variables: `herald-node` reads them (every
//! flag falls back to one, a unit test in the node checks each name) and the
//! operator renders them into the node pods' ConfigMap and environment.
//! The README documents what each one means and its default.

/// Address to listen on (WebSockets, publish API, health and metrics).
pub const LISTEN: &str = "HERALD_LISTEN";
/// Path of the WebSocket endpoint.
pub const WS_PATH: &str = "HERALD_WS_PATH";
/// Development mode: generated credentials and a demo page.
pub const DEV: &str = "HERALD_DEV";
/// HS256 secret for client tokens.
pub const JWT_SECRET: &str = "HERALD_JWT_SECRET";
/// File holding the HS256 secret.
pub const JWT_SECRET_FILE: &str = "HERALD_JWT_SECRET_FILE";
/// PEM public key files for RS256/ES256 tokens (comma separated).
pub const JWT_PUBLIC_KEY_FILE: &str = "HERALD_JWT_PUBLIC_KEY_FILE";
/// Accepted token issuers (comma separated).
pub const JWT_ISSUER: &str = "HERALD_JWT_ISSUER";
/// Accepted token audiences (comma separated).
pub const JWT_AUDIENCE: &str = "HERALD_JWT_AUDIENCE";
/// Clock skew tolerated on `exp`/`nbf`.
pub const JWT_LEEWAY: &str = "HERALD_JWT_LEEWAY";
/// Claim holding the user id (falls back to `sub`).
pub const USER_CLAIM: &str = "HERALD_USER_CLAIM";
/// Claim holding the user's roles.
pub const ROLE_CLAIM: &str = "HERALD_ROLE_CLAIM";
/// Accept connections without a token (they may use public channels only).
pub const ALLOW_ANONYMOUS: &str = "HERALD_ALLOW_ANONYMOUS";
/// API key backends use to publish and to read admin endpoints.
pub const API_KEY: &str = "HERALD_API_KEY";
/// File holding the API key.
pub const API_KEY_FILE: &str = "HERALD_API_KEY_FILE";
/// Redis URL (`redis://` or `redis-cluster://`).
pub const REDIS_URL: &str = "HERALD_REDIS_URL";
/// Replicas a history write must reach before a publish is acknowledged (`WAIT`).
pub const REDIS_MIN_REPLICAS: &str = "HERALD_REDIS_MIN_REPLICAS";
/// Address other components use to reach this node (the pod IP in Kubernetes).
pub const ADVERTISE_ADDR: &str = "HERALD_ADVERTISE_ADDR";
/// How often the node heartbeats its presence into Redis.
pub const HEARTBEAT_INTERVAL: &str = "HERALD_HEARTBEAT_INTERVAL";
/// Messages the Redis subscriber buffers before it counts as lagging.
pub const REDIS_BUFFER: &str = "HERALD_REDIS_BUFFER";
/// JSON channel file (`{"channels":[...]}`).
pub const CHANNELS: &str = "HERALD_CHANNELS";
/// How often the channel file is checked for changes.
pub const CHANNELS_RELOAD: &str = "HERALD_CHANNELS_RELOAD";
/// Identifier of this node (defaults to the host name).
pub const NODE_ID: &str = "HERALD_NODE_ID";
/// Most open WebSocket connections on this node.
pub const MAX_CONNECTIONS: &str = "HERALD_MAX_CONNECTIONS";
/// Most open connections per user (0 = unlimited).
pub const MAX_CONNECTIONS_PER_USER: &str = "HERALD_MAX_CONNECTIONS_PER_USER";
/// Most channel subscriptions per connection.
pub const MAX_SUBSCRIPTIONS: &str = "HERALD_MAX_SUBSCRIPTIONS";
/// Largest client WebSocket message in bytes.
pub const MAX_MESSAGE_BYTES: &str = "HERALD_MAX_MESSAGE_BYTES";
/// Largest publish API body in bytes.
pub const MAX_PUBLISH_BYTES: &str = "HERALD_MAX_PUBLISH_BYTES";
/// Most messages in one publish batch (a JSON array body).
pub const MAX_BATCH: &str = "HERALD_MAX_BATCH";
/// How long a publish's idempotency key is remembered, per channel.
pub const IDEMPOTENCY_WINDOW: &str = "HERALD_IDEMPOTENCY_WINDOW";
/// Most recipients (`users`) of one published message.
pub const MAX_USERS_PER_MESSAGE: &str = "HERALD_MAX_USERS_PER_MESSAGE";
/// Deepest nesting of arrays and objects in a published message's `data`.
pub const MAX_DATA_DEPTH: &str = "HERALD_MAX_DATA_DEPTH";
/// Sustained client messages per second per connection.
pub const INBOUND_RATE: &str = "HERALD_INBOUND_RATE";
/// Client messages allowed in a burst per connection.
pub const INBOUND_BURST: &str = "HERALD_INBOUND_BURST";
/// Frames queued per connection before it counts as a slow consumer.
pub const OUTBOUND_QUEUE: &str = "HERALD_OUTBOUND_QUEUE";
/// Time allowed to send the HTTP request head (the handshake).
pub const HANDSHAKE_TIMEOUT: &str = "HERALD_HANDSHAKE_TIMEOUT";
/// Interval of WebSocket pings to clients.
pub const PING_INTERVAL: &str = "HERALD_PING_INTERVAL";
/// Time allowed for a write to a client socket before it is dropped.
pub const WRITE_TIMEOUT: &str = "HERALD_WRITE_TIMEOUT";
/// On SIGTERM, client closes (1012) are spread over this window.
pub const DRAIN_WINDOW: &str = "HERALD_DRAIN_WINDOW";
/// OTLP/HTTP endpoint for traces.
pub const OTLP_ENDPOINT: &str = "HERALD_OTLP_ENDPOINT";
/// Fraction of publishes traced when OTLP export is on.
pub const TRACE_SAMPLE_RATIO: &str = "HERALD_TRACE_SAMPLE_RATIO";
/// Log format: `text` or `json`.
pub const LOG_FORMAT: &str = "HERALD_LOG_FORMAT";

/// Every setting above, for checks that walk them all.
pub const ALL: &[&str] = &[
    LISTEN,
    WS_PATH,
    DEV,
    JWT_SECRET,
    JWT_SECRET_FILE,
    JWT_PUBLIC_KEY_FILE,
    JWT_ISSUER,
    JWT_AUDIENCE,
    JWT_LEEWAY,
    USER_CLAIM,
    ROLE_CLAIM,
    ALLOW_ANONYMOUS,
    API_KEY,
    API_KEY_FILE,
    REDIS_URL,
    REDIS_MIN_REPLICAS,
    ADVERTISE_ADDR,
    HEARTBEAT_INTERVAL,
    REDIS_BUFFER,
    CHANNELS,
    CHANNELS_RELOAD,
    NODE_ID,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_USER,
    MAX_SUBSCRIPTIONS,
    MAX_MESSAGE_BYTES,
    MAX_PUBLISH_BYTES,
    MAX_BATCH,
    IDEMPOTENCY_WINDOW,
    MAX_USERS_PER_MESSAGE,
    MAX_DATA_DEPTH,
    INBOUND_RATE,
    INBOUND_BURST,
    OUTBOUND_QUEUE,
    HANDSHAKE_TIMEOUT,
    PING_INTERVAL,
    WRITE_TIMEOUT,
    DRAIN_WINDOW,
    OTLP_ENDPOINT,
    TRACE_SAMPLE_RATIO,
    LOG_FORMAT,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_distinct_and_prefixed() {
        let mut names = ALL.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert!(ALL.iter().all(|n| n.starts_with("HERALD_")));
    }
}
