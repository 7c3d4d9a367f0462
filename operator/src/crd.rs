//! The custom resources platform teams write: `PushCluster` and `Channel`.
//!
//! These Rust types are the single source of the CRDs: `crdgen` renders them into
//! `crds/*.yaml` (never edited by hand), with descriptions for `kubectl explain`,
//! defaults, ranges and CEL rules the API server enforces before the operator ever
//! sees a bad object.

// Printer columns repeat `type_ = ...` inside one #[kube] attribute, which clippy
// mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A Herald cluster: a Deployment of `herald-node` pods sharing a Redis Cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "herald.dev",
    version = "v1alpha1",
    kind = "PushCluster",
    namespaced,
    status = "PushClusterStatus",
    shortname = "hpc",
    category = "herald",
    doc = "A Herald WebSocket push cluster: herald-node pods, their Service, Ingress and configuration",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Ready')].status"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desiredReplicas"
    ),
    printcolumn(
        name = "Connections",
        type_ = "integer",
        json_path = ".status.connections"
    ),
    printcolumn(
        name = "Broker",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='BrokerHealthy')].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    // The Service `<name>-node` must be a DNS label (63 characters); see `resources::names`.
    validation = Rule::new("self.metadata.name.size() <= 58").message("a PushCluster name has at most 58 characters: its Service <name>-node is a DNS label of at most 63"),
    scale(
        spec_replicas_path = ".spec.replicas.desired",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PushClusterSpec {
    /// Container image of herald-node.
    #[serde(default = "default_image")]
    pub image: String,
    /// How many node pods may run; `desired` pins the count (as `kubectl scale` does),
    /// otherwise scaling follows connections.
    #[serde(default)]
    pub replicas: Replicas,
    /// Scaling by connection count.
    #[serde(default)]
    pub scaling: Scaling,
    /// The Redis (Cluster) the nodes share.
    pub redis: Redis,
    /// Client token verification and the backend API key.
    pub auth: Auth,
    /// Per-connection and per-user limits.
    #[serde(default)]
    pub limits: Limits,
    /// Defaults for channels that do not set their own history settings.
    #[serde(default)]
    pub channel_defaults: ChannelDefaults,
    /// Serve the four legacy channels (notifications, alerts, orders, materials) unless
    /// a Channel of the same name overrides them.
    #[serde(default = "yes")]
    pub default_channels: bool,
    /// Seconds over which a stopping node moves its clients elsewhere.
    #[serde(default = "default_drain")]
    #[schemars(range(min = 1, max = 600))]
    pub drain_seconds: u32,
    /// Compute resources of each node container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Expose the WebSocket endpoint and publish API through an Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Ingress>,
    /// OpenTelemetry trace export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<Telemetry>,
}

fn default_image() -> String {
    "herald-node:latest".into()
}

fn yes() -> bool {
    true
}

fn default_drain() -> u32 {
    10
}

/// Replica bounds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.min <= self.max").message("replicas.min must not exceed replicas.max"))]
#[x_kube(validation = Rule::new("!has(self.desired) || (self.desired >= self.min && self.desired <= self.max)").message("replicas.desired must lie within [min, max]"))]
pub struct Replicas {
    /// Fewest node pods.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub min: i32,
    /// Most node pods.
    #[serde(default = "ten")]
    #[schemars(range(min = 1, max = 1000))]
    pub max: i32,
    /// A fixed pod count (set by `kubectl scale`); scaling by connections when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub desired: Option<i32>,
}

fn one() -> i32 {
    1
}

fn ten() -> i32 {
    10
}

impl Default for Replicas {
    fn default() -> Self {
        Self {
            min: 1,
            max: 10,
            desired: None,
        }
    }
}

/// How node count follows connections (the HPA algorithm, on connection counts).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Scaling {
    /// Connections each node should carry.
    #[serde(default = "default_target")]
    #[schemars(range(min = 1, max = 19000))]
    pub target_connections_per_node: i32,
    /// Relative deviation from the target that is ignored (0.1 = 10 %).
    #[serde(default = "default_tolerance")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub tolerance: f64,
    /// A scale-down happens only if every recommendation in this window allows it.
    #[serde(default = "default_stabilization")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_stabilization_seconds: i32,
    /// Most pods added in one step, relative to the current count (100 = double).
    #[serde(default = "default_scale_up_percent")]
    #[schemars(range(min = 1, max = 1000))]
    pub scale_up_percent: i32,
}

fn default_target() -> i32 {
    10_000
}

fn default_tolerance() -> f64 {
    0.1
}

fn default_stabilization() -> i32 {
    300
}

fn default_scale_up_percent() -> i32 {
    100
}

impl Default for Scaling {
    fn default() -> Self {
        Self {
            target_connections_per_node: default_target(),
            tolerance: default_tolerance(),
            scale_down_stabilization_seconds: default_stabilization(),
            scale_up_percent: default_scale_up_percent(),
        }
    }
}

/// A key in a Secret of the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKey {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Where the Redis (Cluster) is.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.addresses) > 0 || has(self.urlSecretRef)").message("set redis.addresses or redis.urlSecretRef"))]
pub struct Redis {
    /// Seed addresses (`host:port`) of a Redis Cluster.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub addresses: Vec<String>,
    /// A Secret key holding a full URL (`redis-cluster://...` or `redis://...`), e.g.
    /// with credentials; takes precedence over `addresses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKey>,
    /// Replicas a history write must reach before a publish is acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 5))]
    pub min_replicas: Option<u32>,
}

/// Token verification and the backend API key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.jwtSecretRef) || has(self.publicKeysSecretRef)").message("set auth.jwtSecretRef (HS256) or auth.publicKeysSecretRef (RS256/ES256)"))]
pub struct Auth {
    /// Secret key holding the HS256 secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_secret_ref: Option<SecretKey>,
    /// Secret key holding PEM public keys for RS256/ES256 tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_keys_secret_ref: Option<SecretKey>,
    /// Secret key holding the API key backends publish with.
    pub api_key_secret_ref: SecretKey,
    /// Claim holding the user id (falls back to `sub`).
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// Claim holding the user's roles.
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Accepted token issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Accepted token audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

fn default_user_claim() -> String {
    "user_id".into()
}

fn default_role_claim() -> String {
    "roles".into()
}

/// Per-connection and per-user limits.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Sustained client messages per second per connection.
    #[serde(default = "default_rate")]
    #[schemars(range(min = 0.1, max = 10000.0))]
    pub inbound_per_second: f64,
    /// Client messages allowed in a burst.
    #[serde(default = "default_burst")]
    #[schemars(range(min = 1, max = 100000))]
    pub inbound_burst: u32,
    /// Connections one user may hold across the cluster (0 = unlimited).
    #[serde(default = "default_per_user")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_connections_per_user: u32,
    /// Largest client message in bytes.
    #[serde(default = "default_message_bytes")]
    #[schemars(range(min = 256, max = 16777216))]
    pub max_message_bytes: u32,
}

fn default_rate() -> f64 {
    10.0
}

fn default_burst() -> u32 {
    20
}

fn default_per_user() -> u32 {
    16
}

fn default_message_bytes() -> u32 {
    16 * 1024
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            inbound_per_second: default_rate(),
            inbound_burst: default_burst(),
            max_connections_per_user: default_per_user(),
            max_message_bytes: default_message_bytes(),
        }
    }
}

/// History defaults for channels.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChannelDefaults {
    /// Messages kept per history stream.
    #[serde(default = "default_capacity")]
    #[schemars(range(min = 1, max = 100000))]
    pub capacity: u32,
    /// Seconds messages are kept.
    #[serde(default = "default_expiry")]
    #[schemars(range(min = 1, max = 2592000))]
    pub expiry_seconds: u64,
}

fn default_capacity() -> u32 {
    herald_contract::channels::DEFAULT_CAPACITY
}

fn default_expiry() -> u64 {
    herald_contract::channels::DEFAULT_EXPIRY_SECS
}

impl Default for ChannelDefaults {
    fn default() -> Self {
        Self {
            capacity: default_capacity(),
            expiry_seconds: default_expiry(),
        }
    }
}

/// Ingress settings (WebSocket-friendly timeouts are set by the operator).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Ingress {
    /// Public host name.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// IngressClass to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// TLS Secret for the host; plain HTTP when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
}

/// Trace export.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Telemetry {
    /// OTLP/HTTP endpoint, e.g. `http://otel-collector:4318`.
    pub otlp_endpoint: String,
    /// Fraction of publishes traced.
    #[serde(default = "default_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sample_ratio: f64,
}

fn default_ratio() -> f64 {
    1.0
}

/// What the operator observed and did.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PushClusterStatus {
    /// `Ready`, `Progressing`, `Degraded`, `BrokerHealthy`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Node pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Node pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Node pods the operator wants.
    #[serde(default)]
    pub desired_replicas: i32,
    /// WebSocket connections across the nodes.
    #[serde(default)]
    pub connections: i64,
    /// Label selector of the node pods (for the scale subresource).
    #[serde(default)]
    pub selector: String,
}

/// Who may use a channel.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Anyone, including anonymous connections where those are allowed.
    Public,
    /// Any authenticated user.
    Authenticated,
    /// Authenticated users; each message goes only to the users it names.
    User,
    /// Users whose role claim holds one of `roles`.
    Roles,
}

impl From<Access> for herald_contract::Access {
    fn from(access: Access) -> Self {
        match access {
            Access::Public => Self::Public,
            Access::Authenticated => Self::Authenticated,
            Access::User => Self::User,
            Access::Roles => Self::Roles,
        }
    }
}

/// A channel served by a PushCluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "herald.dev",
    version = "v1alpha1",
    kind = "Channel",
    namespaced,
    status = "ChannelStatus",
    shortname = "hch",
    category = "herald",
    doc = "A Herald channel: who may subscribe, which message types it carries, and how much history it keeps",
    // Without spec.name the channel is named after the object, and nodes refuse channel
    // names over `herald_contract::channel_name::MAX_LEN` (128) characters.
    validation = Rule::new("has(self.spec.name) || self.metadata.name.size() <= 128").message("without spec.name the channel is named after metadata.name, which then has at most 128 characters (Herald's channel-name limit); set spec.name or use a shorter name"),
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster"),
    printcolumn(name = "Channel", type_ = "string", json_path = ".status.channel"),
    printcolumn(name = "Access", type_ = "string", json_path = ".spec.access"),
    printcolumn(name = "History", type_ = "boolean", json_path = ".spec.history"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Ready')].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.access != 'roles' || size(self.roles) > 0").message("access 'roles' needs at least one role"))]
#[x_kube(validation = Rule::new("!self.ackRequired || self.history").message("ackRequired needs history"))]
#[x_kube(validation = Rule::new("!has(self.bind) || size(self.bind) == 0 || (has(self.name) && self.bind.all(p, self.name.contains('{' + p + '}')))").message("every key of bind must be a {parameter} of spec.name"))]
#[x_kube(validation = Rule::new("!self.autoSubscribe || !has(self.name) || self.name.findAll('[{][a-z][a-z0-9_]*[}]').all(p, has(self.bind) && p.substring(1, size(p) - 1) in self.bind)").message("autoSubscribe on a pattern needs every {parameter} bound to a claim in bind"))]
#[x_kube(validation = Rule::new("!has(self.coalesce) || self.access != 'user' || self.coalesce.key == 'typeUser'").message("a per-user channel coalesces per type and user: set coalesce.key to typeUser"))]
pub struct ChannelSpec {
    /// Name of the PushCluster (same namespace) serving this channel.
    #[schemars(length(min = 1, max = 253))]
    pub cluster: String,
    /// Channel name clients subscribe to; defaults to metadata.name. May use names
    /// Kubernetes forbids, such as underscores, or be a pattern such as `dept:{dept}`
    /// whose concrete channels (`dept:5`) exist on demand with these settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = herald_contract::channel_pattern::NAME_OR_PATTERN), length(min = 1, max = 128))]
    pub name: Option<String>,
    /// For a pattern: parameter → token claim. A user may subscribe to a concrete
    /// channel only when each bound parameter equals the claim's value (or one of
    /// them, for an array claim); autoSubscribe joins the user's own channels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 4))]
    #[x_kube(validation = Rule::new("self.all(p, size(self[p]) >= 1 && size(self[p]) <= 64)").message("claim names in bind have 1-64 characters"))]
    pub bind: BTreeMap<String, String>,
    /// A JSON Schema per message type: publishes whose `data` does not validate are
    /// refused with 422 `schema_violation`. A schema that does not compile (or needs a
    /// remote `$ref`) keeps the Channel out of the nodes' configuration, with
    /// `Ready=False` reason `InvalidSchema`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "schema_map")]
    pub schemas: BTreeMap<String, serde_json::Value>,
    /// Who may subscribe and who receives messages.
    pub access: Access,
    /// Roles admitted when access is `roles`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Joined at connect time without a subscribe message (for legacy clients).
    #[serde(default)]
    pub auto_subscribe: bool,
    /// Message types publishers may send; any when empty.
    #[serde(default)]
    pub allowed_types: Vec<String>,
    /// Keep messages for recovery and offline delivery.
    #[serde(default)]
    pub history: bool,
    /// Messages kept per history stream (cluster default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub capacity: Option<u32>,
    /// Seconds messages are kept (cluster default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2592000))]
    pub expiry_seconds: Option<u64>,
    /// Clients acknowledge messages; unacknowledged ones are redelivered.
    #[serde(default)]
    pub ack_required: bool,
    /// Publish rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_rate: Option<PublishRate>,
    /// What happens to the channel's stored history when the Channel is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Coalescing of bursts: at most one message per key and window is delivered.
    /// Off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesce: Option<CoalesceSpec>,
}

/// A channel's coalescing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.key == 'tag') == has(self.tag)").message("coalesce.tag names the tag when coalesce.key is tag, and only then"))]
pub struct CoalesceSpec {
    /// Window length in milliseconds (10 ms to 60 s), from the first message of a key.
    #[schemars(range(min = 10, max = 60000))]
    pub window_ms: u64,
    /// What makes two messages "the same": `type`, `typeUser` (the type and each
    /// recipient; required on per-user channels), or `tag` (the type and the value of
    /// the tag `tag` names: one window per SKU).
    pub key: CoalesceKey,
    /// `leading`: a window's first message, at once (the legacy debounce);
    /// `trailing`: its latest, when the window closes.
    pub edge: CoalesceEdge,
    /// With `key: tag`, the tag whose value keys the windows (e.g. `sku`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = herald_contract::channels::TAG_KEY_PATTERN))]
    pub tag: Option<String>,
}

/// What makes two messages of a channel coalesce.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CoalesceKey {
    /// The message type; messages naming users are not coalesced.
    Type,
    /// The message type and each recipient.
    TypeUser,
    /// The message type and the value of the tag named by `tag`.
    Tag,
}

/// Which message of a coalescing window is delivered.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CoalesceEdge {
    /// The first, at once.
    Leading,
    /// The latest, when the window closes.
    Trailing,
}

impl From<&CoalesceSpec> for herald_contract::Coalesce {
    fn from(spec: &CoalesceSpec) -> Self {
        Self {
            window_ms: spec.window_ms,
            key: match spec.key {
                CoalesceKey::Type => herald_contract::CoalesceKey::Type,
                CoalesceKey::TypeUser => herald_contract::CoalesceKey::TypeUser,
                CoalesceKey::Tag => herald_contract::CoalesceKey::Tag,
            },
            tag: spec.tag.clone(),
            edge: match spec.edge {
                CoalesceEdge::Leading => herald_contract::CoalesceEdge::Leading,
                CoalesceEdge::Trailing => herald_contract::CoalesceEdge::Trailing,
            },
        }
    }
}

/// `schemas`: type → any JSON object (kept as written), bounded like the nodes bound it.
fn schema_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    use herald_contract::schemas::{MAX_SCHEMAS, MAX_TYPE_BYTES};
    schemars::json_schema!({
        "type": "object",
        "maxProperties": MAX_SCHEMAS,
        "x-kubernetes-validations": [{
            "rule": format!("self.all(t, size(t) >= 1 && size(t) <= {MAX_TYPE_BYTES})"),
            "message": format!("message types in schemas have 1-{MAX_TYPE_BYTES} characters"),
        }],
        "additionalProperties": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true
        }
    })
}

/// What happens to a channel's history when its Channel is deleted.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum DeletionPolicy {
    /// Leave the history in Redis; it expires with the channel's expiry.
    #[default]
    Keep,
    /// Delete the history (and delivery cursors) from Redis before the Channel goes.
    Purge,
}

/// A publish rate limit.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PublishRate {
    /// Sustained messages per second.
    #[schemars(range(min = 0.001, max = 1000000.0))]
    pub per_second: f64,
    /// Messages allowed at once above the sustained rate.
    #[schemars(range(min = 1, max = 1000000))]
    pub burst: u32,
}

/// What the operator observed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChannelStatus {
    /// `Ready` once the channel is in the cluster's configuration.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The channel name clients use.
    #[serde(default)]
    pub channel: String,
}

impl Channel {
    /// The name clients subscribe with.
    pub fn channel_name(&self) -> String {
        self.spec
            .name
            .clone()
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}
