//! The channel registry: which channels exist and what each one allows.
//!
//! Channels come from a JSON file (`HERALD_CHANNELS`, rendered by the operator from
//! `Channel` resources) or, without one, from the four channels the legacy front end
//! uses. The file is re-read while the node runs, so channel changes take effect
//! without a restart; readers take cheap snapshots.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::auth::Identity;
use crate::ChannelName;

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
}

fn default_capacity() -> u32 {
    100
}

fn default_expiry_secs() -> u64 {
    3600
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
            capacity: default_capacity(),
            expiry_secs: default_expiry_secs(),
            ack_required: false,
            publish_rate: None,
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

    /// Whether `who` may subscribe.
    pub fn admits(&self, who: &Identity) -> Result<(), Refusal> {
        match (self.access, &who.user) {
            (Access::Public, _) => Ok(()),
            (_, None) => Err(Refusal::Forbidden(
                "this channel requires an authenticated connection",
            )),
            (Access::Authenticated | Access::User, Some(_)) => Ok(()),
            (Access::Roles, Some(_)) if who.has_any_role(&self.roles) => Ok(()),
            (Access::Roles, Some(_)) => Err(Refusal::Forbidden(
                "this channel requires a role your token does not carry",
            )),
        }
    }

    /// Whether every message must name its recipients.
    pub fn is_per_user(&self) -> bool {
        self.access == Access::User
    }

    fn validate(&self) -> Result<(), ChannelError> {
        validate_name(&self.name)?;
        if self.access == Access::Roles && self.roles.is_empty() {
            return Err(ChannelError::Invalid(format!(
                "channel {:?}: access \"roles\" needs at least one role",
                self.name
            )));
        }
        if self.capacity == 0 && self.history {
            return Err(ChannelError::Invalid(format!(
                "channel {:?}: history needs a capacity of at least 1",
                self.name
            )));
        }
        if let Some(rate) = self.publish_rate {
            if !(rate.per_second.is_finite() && rate.per_second > 0.0) || rate.burst == 0 {
                return Err(ChannelError::Invalid(format!(
                    "channel {:?}: publish_rate needs per_second > 0 and burst >= 1",
                    self.name
                )));
            }
        }
        Ok(())
    }
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Access rules say no.
    Forbidden(&'static str),
}

/// Checks a channel name: 1–128 characters of letters, digits and `_ - . : @`.
pub fn validate_name(name: &str) -> Result<(), ChannelError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ChannelError::Invalid(format!(
            "invalid channel name {name:?}: use 1-128 letters, digits, '_', '-', '.', ':' or '@'"
        )))
    }
}

/// Problems loading the channel file.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The file could not be read.
    #[error("cannot read channel file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid channel JSON.
    #[error("channel file {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A channel's settings are contradictory.
    #[error("{0}")]
    Invalid(String),
}

/// The file format: `{"channels": [ChannelConfig, ...]}`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelFile {
    /// Every channel this node serves.
    pub channels: Vec<ChannelConfig>,
}

/// The four channels the legacy front end receives without subscribing.
pub fn defaults() -> Vec<ChannelConfig> {
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

/// An immutable set of channels; swapped whole on reload.
#[derive(Debug, Default)]
pub struct ChannelSet {
    by_name: HashMap<ChannelName, Arc<ChannelConfig>>,
}

impl ChannelSet {
    /// Validates and indexes `channels`.
    pub fn new(channels: Vec<ChannelConfig>) -> Result<Self, ChannelError> {
        let mut by_name = HashMap::with_capacity(channels.len());
        for channel in channels {
            channel.validate()?;
            let name = ChannelName::from(channel.name.as_str());
            if by_name.insert(name, Arc::new(channel)).is_some() {
                return Err(ChannelError::Invalid("duplicate channel name".into()));
            }
        }
        Ok(Self { by_name })
    }

    /// Looks up a channel, returning the interned name with it.
    pub fn get(&self, name: &str) -> Option<(&ChannelName, &Arc<ChannelConfig>)> {
        self.by_name.get_key_value(name)
    }

    /// All channels, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&ChannelName, &Arc<ChannelConfig>)> {
        self.by_name.iter()
    }

    /// Number of channels.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are no channels.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The live registry: a snapshot that reloads swap atomically.
#[derive(Debug)]
pub struct Registry {
    current: RwLock<Arc<ChannelSet>>,
    source: Option<PathBuf>,
}

impl Registry {
    /// A registry holding `set`, reloaded from `source` when given.
    pub fn new(set: ChannelSet, source: Option<PathBuf>) -> Self {
        Self {
            current: RwLock::new(Arc::new(set)),
            source,
        }
    }

    /// Loads the file at `path`, or the defaults when `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ChannelError> {
        let set = match path {
            Some(path) => read_file(path)?,
            None => ChannelSet::new(defaults())?,
        };
        Ok(Self::new(set, path.map(Path::to_path_buf)))
    }

    /// The current channels.
    pub fn snapshot(&self) -> Arc<ChannelSet> {
        self.current.read().clone()
    }

    /// Replaces the channels.
    pub fn replace(&self, set: ChannelSet) {
        *self.current.write() = Arc::new(set);
    }

    /// Re-reads the source file; returns whether anything changed.
    pub fn reload(&self) -> Result<bool, ChannelError> {
        let Some(path) = &self.source else {
            return Ok(false);
        };
        let fresh = read_file(path)?;
        let changed = {
            let current = self.current.read();
            current.len() != fresh.len()
                || fresh
                    .iter()
                    .any(|(name, cfg)| current.get(name).map(|(_, c)| c) != Some(cfg))
        };
        if changed {
            self.replace(fresh);
        }
        Ok(changed)
    }

    /// Where the channels come from, if a file.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }
}

fn read_file(path: &Path) -> Result<ChannelSet, ChannelError> {
    let text = std::fs::read_to_string(path).map_err(|source| ChannelError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file: ChannelFile = serde_json::from_str(&text).map_err(|e| ChannelError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    ChannelSet::new(file.channels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(roles: &[&str]) -> Identity {
        Identity {
            user: Some("7".into()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn defaults_match_the_legacy_front_end() {
        let set = ChannelSet::new(defaults()).unwrap();
        let names: Vec<_> = {
            let mut n: Vec<_> = set.iter().map(|(n, _)| n.to_string()).collect();
            n.sort();
            n
        };
        assert_eq!(names, ["alerts", "materials", "notifications", "orders"]);
        let (_, notifications) = set.get("notifications").unwrap();
        assert!(notifications.is_per_user() && notifications.auto_subscribe);
        assert!(notifications.allows_type("notification"));
        assert!(!notifications.allows_type("alert"));
        assert!(!set.get("alerts").unwrap().1.is_per_user());
    }

    #[test]
    fn access_rules() {
        let public = ChannelConfig::new("news", Access::Public);
        assert!(public.admits(&Identity::anonymous()).is_ok());
        let authed = ChannelConfig::new("alerts", Access::Authenticated);
        assert!(authed.admits(&Identity::anonymous()).is_err());
        assert!(authed.admits(&user(&[])).is_ok());
        let ops = ChannelConfig {
            roles: vec!["ops".into()],
            ..ChannelConfig::new("ops", Access::Roles)
        };
        assert!(ops.admits(&user(&["staff"])).is_err());
        assert!(ops.admits(&user(&["ops"])).is_ok());
    }

    #[test]
    fn rejects_bad_names_and_contradictions() {
        assert!(validate_name("stock_updates").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name(&"x".repeat(129)).is_err());
        assert!(ChannelSet::new(vec![ChannelConfig::new("r", Access::Roles)]).is_err());
        assert!(ChannelSet::new(vec![
            ChannelConfig::new("a", Access::Public),
            ChannelConfig::new("a", Access::User),
        ])
        .is_err());
    }

    #[test]
    fn reload_picks_up_file_changes() {
        let dir = std::env::temp_dir().join(format!("herald-channels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("channels.json");
        std::fs::write(
            &path,
            r#"{"channels":[{"name":"news","access":"public","auto_subscribe":true}]}"#,
        )
        .unwrap();
        let registry = Registry::load(Some(&path)).unwrap();
        assert!(registry.snapshot().get("news").is_some());
        assert!(!registry.reload().unwrap());
        std::fs::write(
            &path,
            r#"{"channels":[{"name":"news","access":"authenticated","capacity":5}]}"#,
        )
        .unwrap();
        assert!(registry.reload().unwrap());
        let snap = registry.snapshot();
        let (_, news) = snap.get("news").unwrap();
        assert_eq!(news.access, Access::Authenticated);
        assert_eq!(news.capacity, 5);
        std::fs::write(&path, r#"{"channels":[{"name":"news","acces":"public"}]}"#).unwrap();
        assert!(matches!(registry.reload(), Err(ChannelError::Parse { .. })));
        // A bad file leaves the last good channels in force.
        assert!(registry.snapshot().get("news").is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[cfg(test)]
mod properties {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;
    use crate::arbitrary::text;

    fn channel() -> impl Strategy<Value = ChannelConfig> {
        (
            "[A-Za-z0-9_.:@-]{1,128}",
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
        )
            .prop_map(
                |(name, access, roles, allowed_types, flags, rate)| ChannelConfig {
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
                },
            )
    }

    proptest! {
        /// The operator renders the file with `json!` and `to_string_pretty`
        /// (`operator/src/resources.rs`); the node reads back exactly those settings,
        /// whatever role names and message types hold.
        #[test]
        fn the_channel_file_the_operator_writes_reads_back_the_same(
            channels in vec(channel(), 0..4),
        ) {
            let rendered: Vec<Value> = channels
                .iter()
                .map(|c| {
                    let mut entry = json!({
                        "name": c.name, "access": c.access, "roles": c.roles,
                        "auto_subscribe": c.auto_subscribe, "allowed_types": c.allowed_types,
                        "history": c.history, "capacity": c.capacity,
                        "expiry_secs": c.expiry_secs, "ack_required": c.ack_required,
                    });
                    if let Some(rate) = c.publish_rate {
                        entry["publish_rate"] =
                            json!({"per_second": rate.per_second, "burst": rate.burst});
                    }
                    entry
                })
                .collect();
            let text = serde_json::to_string_pretty(&json!({ "channels": rendered })).unwrap();
            let file: ChannelFile = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(&file.channels, &channels);
            for c in &file.channels {
                for kind in &c.allowed_types {
                    prop_assert!(c.allows_type(kind));
                }
            }
            let again: ChannelFile =
                serde_json::from_str(&serde_json::to_string(&file).unwrap()).unwrap();
            prop_assert_eq!(again.channels, channels);
        }
    }
}
