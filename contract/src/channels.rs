//! The channel file: `{"channels": [ChannelConfig, ...]}`, JSON.
//!
//! The operator serializes it from `Channel` resources into the node ConfigMap; the
//! node deserializes it (`HERALD_CHANNELS`) and serves `GET /api/v1/channels` with the
//! same fields. Unknown fields are refused, so a typo is reported instead of ignored.
//! How a node enforces these settings stays in the node.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Messages kept per history stream when the file does not say.
pub const DEFAULT_CAPACITY: u32 = 100;

/// Seconds messages are kept when the file does not say.
pub const DEFAULT_EXPIRY_SECS: u64 = 3600;

/// Who may subscribe to a channel and who receives its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Anyone, including anonymous connections where those are allowed.
    Public,
    /// Any authenticated user.
    Authenticated,
    /// Any authenticated user, but each message reaches only the users it names.
    User,
    /// Users whose role claim contains one of the channel's roles.
    Roles,
}

/// A publish rate limit: sustained messages per second plus a burst.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Sustained rate.
    pub per_second: f64,
    /// Messages allowed at once above the sustained rate.
    pub burst: u32,
}

/// One channel's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ChannelConfig {
    /// The channel name clients subscribe to.
    pub name: String,
    /// Access mode.
    pub access: Access,
    /// Roles admitted when `access` is `roles`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Subscribed at connect time, without a `subscribe` message (legacy clients).
    #[serde(default)]
    pub auto_subscribe: bool,
    /// Message types publishers may send here; empty means any.
    #[serde(default)]
    pub allowed_types: Vec<String>,
    /// Whether messages are kept for recovery.
    #[serde(default)]
    pub history: bool,
    /// Most messages kept per history stream.
    #[serde(default = "default_capacity")]
    pub capacity: u32,
    /// How long messages are kept, in seconds.
    #[serde(default = "default_expiry_secs")]
    pub expiry_secs: u64,
    /// Clients must acknowledge messages; unacknowledged ones are redelivered.
    #[serde(default)]
    pub ack_required: bool,
    /// Publish rate limit for this channel; none when absent.
    #[serde(default)]
    pub publish_rate: Option<RateLimit>,
    /// For a pattern (`dept:{dept}`): parameter → token claim. A user may use a
    /// concrete channel only when each bound parameter equals the claim (or one of
    /// its values, when it is an array).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bind: BTreeMap<String, String>,
    /// A JSON Schema per message type: publishes whose `data` does not validate are
    /// refused (see [`crate::schemas`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub schemas: BTreeMap<String, serde_json::Value>,
    /// Coalescing of bursts: at most one message per key and window is delivered.
    /// Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesce: Option<Coalesce>,
}

/// Shortest coalescing window, in milliseconds.
pub const MIN_COALESCE_WINDOW_MS: u64 = 10;

/// Longest coalescing window, in milliseconds.
pub const MAX_COALESCE_WINDOW_MS: u64 = 60_000;

/// A tag key, as a regular expression (the CRD's check of `coalesce.tag`; the node's
/// tag rules say the same, which its tests check).
pub const TAG_KEY_PATTERN: &str = r"^[A-Za-z0-9_.:-]{1,64}$";

/// A channel's coalescing: within `window_ms` of the first message of a key, only one
/// message of that key is delivered (the first or the latest, by `edge`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Coalesce {
    /// Window length, [`MIN_COALESCE_WINDOW_MS`]..=[`MAX_COALESCE_WINDOW_MS`].
    pub window_ms: u64,
    /// What makes two messages "the same".
    pub key: CoalesceKey,
    /// Which message of a window is delivered.
    pub edge: CoalesceEdge,
    /// With `key: tag`, the tag whose value keys the windows (`sku`: one window per
    /// type and SKU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl Coalesce {
    /// The window, when its length is within bounds.
    pub fn window(&self) -> Option<Duration> {
        (MIN_COALESCE_WINDOW_MS..=MAX_COALESCE_WINDOW_MS)
            .contains(&self.window_ms)
            .then(|| Duration::from_millis(self.window_ms))
    }
}

/// What makes two messages of a channel coalesce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoalesceKey {
    /// The message type. Messages naming `users` are not coalesced (a message for
    /// some users never replaces one for others); refused on per-user channels.
    Type,
    /// The message type and each recipient: a message naming users is coalesced per
    /// user, broadcasts per type.
    TypeUser,
    /// The message type and the value of the tag named by `tag`: a dashboard ends on
    /// the latest state of every SKU, not of the last SKU updated. Messages without
    /// the tag, and messages naming `users`, are not coalesced.
    Tag,
}

/// Which message of a window is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoalesceEdge {
    /// The first, at once; later ones in the window are not delivered (the legacy
    /// debounce).
    Leading,
    /// The latest, when the window closes; earlier ones are superseded.
    Trailing,
}

impl CoalesceEdge {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            CoalesceEdge::Leading => "leading",
            CoalesceEdge::Trailing => "trailing",
        }
    }
}

fn default_capacity() -> u32 {
    DEFAULT_CAPACITY
}

fn default_expiry_secs() -> u64 {
    DEFAULT_EXPIRY_SECS
}

impl ChannelConfig {
    /// A channel with the given access and defaults for everything else.
    pub fn new(name: &str, access: Access) -> Self {
        Self {
            name: name.into(),
            access,
            roles: Vec::new(),
            auto_subscribe: false,
            allowed_types: Vec::new(),
            history: false,
            capacity: DEFAULT_CAPACITY,
            expiry_secs: DEFAULT_EXPIRY_SECS,
            ack_required: false,
            publish_rate: None,
            bind: BTreeMap::new(),
            schemas: BTreeMap::new(),
            coalesce: None,
        }
    }

    /// How long history is kept.
    pub fn expiry(&self) -> Duration {
        Duration::from_secs(self.expiry_secs)
    }

    /// Whether a publisher may send messages of `kind` here.
    pub fn allows_type(&self, kind: &str) -> bool {
        self.allowed_types.is_empty() || self.allowed_types.iter().any(|t| t == kind)
    }

    /// Whether every message must name its recipients.
    pub fn is_per_user(&self) -> bool {
        self.access == Access::User
    }

    /// Whether the name is a pattern (`dept:{dept}`) standing for concrete channels.
    pub fn is_pattern(&self) -> bool {
        crate::channel_pattern::is_pattern(&self.name)
    }
}

/// The file format: `{"channels": [ChannelConfig, ...]}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelFile {
    /// Every channel a node serves.
    pub channels: Vec<ChannelConfig>,
}

/// The four channels the legacy front end receives without subscribing: what a node
/// serves without a channel file, and what the operator renders when a PushCluster
/// keeps `defaultChannels` on (with the cluster's history defaults).
pub fn legacy_defaults() -> Vec<ChannelConfig> {
    let channel = |name: &str, access, kind: &str, history| ChannelConfig {
        auto_subscribe: true,
        allowed_types: vec![kind.to_owned()],
        history,
        ..ChannelConfig::new(name, access)
    };
    vec![
        channel("notifications", Access::User, "notification", true),
        channel("alerts", Access::Authenticated, "alert", true),
        channel("orders", Access::User, "order_update", true),
        channel("materials", Access::Authenticated, "material_update", false),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file exactly as operators before this crate rendered it (`json!` objects,
    /// keys sorted, default channels without `roles` and `ack_required`).
    const OLD_OPERATOR_FILE: &str = r#"{
  "channels": [
    {
      "access": "authenticated",
      "allowed_types": [
        "alert"
      ],
      "auto_subscribe": true,
      "capacity": 100,
      "expiry_secs": 3600,
      "history": true,
      "name": "alerts"
    },
    {
      "access": "roles",
      "ack_required": true,
      "allowed_types": [],
      "auto_subscribe": false,
      "capacity": 5,
      "expiry_secs": 60,
      "history": true,
      "name": "CORP\\alice:\"q\"",
      "publish_rate": {
        "burst": 3,
        "per_second": 0.5
      },
      "roles": [
        "sales \\ \"eu\" 🦀"
      ]
    }
  ]
}"#;

    #[test]
    fn reads_the_file_older_operators_wrote() {
        let file: ChannelFile = serde_json::from_str(OLD_OPERATOR_FILE).unwrap();
        assert_eq!(
            file.channels,
            [
                legacy_defaults().swap_remove(1),
                ChannelConfig {
                    roles: vec!["sales \\ \"eu\" 🦀".into()],
                    history: true,
                    capacity: 5,
                    expiry_secs: 60,
                    ack_required: true,
                    publish_rate: Some(RateLimit {
                        per_second: 0.5,
                        burst: 3
                    }),
                    ..ChannelConfig::new("CORP\\alice:\"q\"", Access::Roles)
                },
            ]
        );
    }

    /// Fields added later (`bind`, `coalesce`) are left out when unset, so a file for
    /// channels without them reads on nodes that predate them.
    #[test]
    fn writes_every_field_under_the_names_older_nodes_read() {
        let text = serde_json::to_string(&ChannelFile {
            channels: vec![ChannelConfig::new("news", Access::Public)],
        })
        .unwrap();
        assert_eq!(
            text,
            r#"{"channels":[{"name":"news","access":"public","roles":[],"auto_subscribe":false,"allowed_types":[],"history":false,"capacity":100,"expiry_secs":3600,"ack_required":false,"publish_rate":null}]}"#
        );
    }

    #[test]
    fn coalescing_is_written_only_when_set() {
        let channel = ChannelConfig {
            coalesce: Some(Coalesce {
                window_ms: 100,
                key: CoalesceKey::TypeUser,
                edge: CoalesceEdge::Trailing,
                tag: None,
            }),
            ..ChannelConfig::new("stock", Access::Authenticated)
        };
        let text = serde_json::to_string(&channel).unwrap();
        assert!(
            text.ends_with(r#""publish_rate":null,"coalesce":{"window_ms":100,"key":"type_user","edge":"trailing"}}"#),
            "{text}"
        );
        assert_eq!(
            serde_json::from_str::<ChannelConfig>(&text).unwrap(),
            channel
        );
        for bad in [
            r#"{"window_ms":100,"key":"type","edge":"middle"}"#,
            r#"{"window_ms":100,"key":"user","edge":"leading"}"#,
            r#"{"window_ms":100,"key":"type"}"#,
            r#"{"window_ms":-1,"key":"type","edge":"leading"}"#,
            r#"{"window_ms":100,"key":"type","edge":"leading","extra":1}"#,
        ] {
            assert!(serde_json::from_str::<Coalesce>(bad).is_err(), "{bad}");
        }
        let window = |window_ms| Coalesce {
            window_ms,
            key: CoalesceKey::Type,
            edge: CoalesceEdge::Leading,
            tag: None,
        };
        assert_eq!(window(9).window(), None);
        assert_eq!(window(10).window(), Some(Duration::from_millis(10)));
        assert_eq!(window(60_000).window(), Some(Duration::from_secs(60)));
        assert_eq!(window(60_001).window(), None);
    }

    #[test]
    fn unknown_fields_are_refused() {
        for text in [
            r#"{"channels":[{"name":"news","acces":"public"}]}"#,
            r#"{"channels":[],"chanels":[]}"#,
            r#"{"channels":[{"name":"news","access":"everyone"}]}"#,
        ] {
            assert!(serde_json::from_str::<ChannelFile>(text).is_err(), "{text}");
        }
    }

    #[test]
    fn legacy_defaults_are_the_front_ends_four_channels() {
        let defaults = legacy_defaults();
        let names: Vec<_> = defaults.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["notifications", "alerts", "orders", "materials"]);
        assert!(defaults.iter().all(|c| c.auto_subscribe));
        assert!(defaults[0].is_per_user() && defaults[0].allows_type("notification"));
        assert!(!defaults[0].allows_type("alert"));
        assert!(!defaults[3].history);
    }
}

#[cfg(test)]
mod properties {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::arbitrary::text;

    fn channel() -> impl Strategy<Value = ChannelConfig> {
        (
            crate::channel_name::PATTERN
                .trim_start_matches('^')
                .trim_end_matches('$'),
            prop_oneof![
                Just(Access::Public),
                Just(Access::Authenticated),
                Just(Access::User),
                Just(Access::Roles)
            ],
            vec(text(), 0..3),
            vec(text(), 0..3),
            any::<(bool, bool, bool, u32, u64)>(),
            // Rates in thousandths: serde_json (without `float_roundtrip`) may read a
            // float with 17 significant digits back one ULP off.
            proptest::option::of((0u32..1_000_000_000, any::<u32>())),
            proptest::collection::btree_map(text(), text(), 0..3),
            proptest::collection::btree_map(
                text(),
                text().prop_map(|t| serde_json::json!({"type": "object", "description": t})),
                0..3,
            ),
            proptest::option::of((
                any::<u64>(),
                prop_oneof![
                    Just(CoalesceKey::Type),
                    Just(CoalesceKey::TypeUser),
                    Just(CoalesceKey::Tag)
                ],
                prop_oneof![Just(CoalesceEdge::Leading), Just(CoalesceEdge::Trailing)],
            )),
        )
            .prop_map(
                |(name, access, roles, allowed_types, flags, rate, bind, schemas, coalesce)| {
                    ChannelConfig {
                        name,
                        access,
                        roles,
                        auto_subscribe: flags.0,
                        allowed_types,
                        history: flags.1,
                        capacity: flags.3,
                        expiry_secs: flags.4,
                        ack_required: flags.2,
                        publish_rate: rate.map(|(milli, burst)| RateLimit {
                            per_second: f64::from(milli) / 1000.0,
                            burst,
                        }),
                        bind,
                        schemas,
                        coalesce: coalesce.map(|(window_ms, key, edge)| Coalesce {
                            window_ms,
                            tag: (key == CoalesceKey::Tag).then(|| "sku".to_owned()),
                            key,
                            edge,
                        }),
                    }
                },
            )
    }

    proptest! {
        /// The operator renders the file with `to_string_pretty`; a node reads back
        /// exactly those settings, whatever role names and message types hold.
        #[test]
        fn the_channel_file_the_operator_writes_reads_back_the_same(
            channels in vec(channel(), 0..4),
        ) {
            let file = ChannelFile { channels };
            let text = serde_json::to_string_pretty(&file).unwrap();
            let read: ChannelFile = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(&read, &file);
            for c in &read.channels {
                for kind in &c.allowed_types {
                    prop_assert!(c.allows_type(kind));
                }
            }
            let again: ChannelFile =
                serde_json::from_str(&serde_json::to_string(&read).unwrap()).unwrap();
            prop_assert_eq!(again, file);
        }
    }
}
