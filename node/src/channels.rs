//! The channel registry: which channels exist and what each one allows.
//!
//! Channels come from a JSON file (`HERALD_CHANNELS`, rendered by the operator from
//! `Channel` resources) or, without one, from the four channels the legacy front end
//! uses. The file is re-read while the node runs, so channel changes take effect
//! without a restart; readers take cheap snapshots. The file format and the legacy
//! channels are shared with the operator (`herald-contract`); what a node does with
//! them (access checks, validation, reloads) is here.
//!
//! A channel may be a pattern (`dept:{dept}`): its concrete channels (`dept:5`)
//! resolve to the pattern's settings on demand, and its bindings tie parameters to
//! token claims. Plain names win over patterns.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use herald_contract::channel_pattern::{self, ChannelPattern};
use herald_contract::schemas::{self, Validator};

use crate::auth::Identity;
use crate::ChannelName;

pub use herald_contract::channels::{
    Access, ChannelConfig, ChannelFile, Coalesce, CoalesceEdge, CoalesceKey, RateLimit,
};

/// Access rules a node enforces on a channel's settings.
pub trait Admission {
    /// Whether `who` may subscribe.
    fn admits(&self, who: &Identity) -> Result<(), Refusal>;
}

impl Admission for ChannelConfig {
    fn admits(&self, who: &Identity) -> Result<(), Refusal> {
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
}

/// What a channel's settings compile to.
struct Checked {
    pattern: Option<ChannelPattern>,
    validators: BTreeMap<String, Validator>,
}

/// Refuses settings that contradict each other; compiles the pattern and schemas.
fn validate(channel: &ChannelConfig) -> Result<Checked, ChannelError> {
    let pattern =
        channel_pattern::check_channel(&channel.name, &channel.bind, channel.auto_subscribe)
            .map_err(|e| ChannelError::Invalid(e.to_string()))?;
    if pattern.is_none() {
        validate_name(&channel.name)?;
    }
    if channel.access == Access::Roles && channel.roles.is_empty() {
        return Err(ChannelError::Invalid(format!(
            "channel {:?}: access \"roles\" needs at least one role",
            channel.name
        )));
    }
    if channel.capacity == 0 && channel.history {
        return Err(ChannelError::Invalid(format!(
            "channel {:?}: history needs a capacity of at least 1",
            channel.name
        )));
    }
    if let Some(rate) = channel.publish_rate {
        if !(rate.per_second.is_finite() && rate.per_second > 0.0) || rate.burst == 0 {
            return Err(ChannelError::Invalid(format!(
                "channel {:?}: publish_rate needs per_second > 0 and burst >= 1",
                channel.name
            )));
        }
    }
    if let Some(coalesce) = &channel.coalesce {
        if coalesce.window().is_none() {
            return Err(ChannelError::Invalid(format!(
                "channel {:?}: coalesce.window_ms must be {}..={}",
                channel.name,
                herald_contract::channels::MIN_COALESCE_WINDOW_MS,
                herald_contract::channels::MAX_COALESCE_WINDOW_MS
            )));
        }
        if coalesce.key != CoalesceKey::TypeUser && channel.is_per_user() {
            return Err(ChannelError::Invalid(format!(
                "channel {:?}: a per-user channel coalesces per type and user: use coalesce.key \"type_user\"",
                channel.name
            )));
        }
        match (coalesce.key, coalesce.tag.as_deref()) {
            (CoalesceKey::Tag, Some(tag)) if crate::tags::valid_key(tag) => {}
            (CoalesceKey::Tag, _) => {
                return Err(ChannelError::Invalid(format!(
                    "channel {:?}: coalesce.key \"tag\" needs coalesce.tag, a tag key of 1-{} bytes of {}",
                    channel.name,
                    crate::tags::MAX_KEY_BYTES,
                    crate::tags::KEY_CHARSET
                )))
            }
            (_, Some(_)) => {
                return Err(ChannelError::Invalid(format!(
                    "channel {:?}: coalesce.tag goes with coalesce.key \"tag\" only",
                    channel.name
                )))
            }
            (_, None) => {}
        }
    }
    let validators = schemas::compile(&channel.schemas, &channel.allowed_types)
        .map_err(|e| ChannelError::Invalid(format!("channel {:?}: {e}", channel.name)))?;
    Ok(Checked {
        pattern,
        validators,
    })
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Access rules say no.
    Forbidden(&'static str),
}

/// What `subscribe` answers when a bound parameter does not match the token.
const NOT_YOURS: &str = "this channel belongs to a claim value your token does not carry";

/// Checks a channel name: 1–128 characters of letters, digits and `_ - . : @`.
pub fn validate_name(name: &str) -> Result<(), ChannelError> {
    herald_contract::channel_name::check(name).map_err(|e| ChannelError::Invalid(e.to_string()))
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

/// The four channels the legacy front end receives without subscribing.
pub fn defaults() -> Vec<ChannelConfig> {
    herald_contract::channels::legacy_defaults()
}

/// An immutable set of channels; swapped whole on reload.
#[derive(Default)]
pub struct ChannelSet {
    /// Every channel, patterns under their pattern text.
    by_name: HashMap<ChannelName, Arc<ChannelConfig>>,
    patterns: Vec<(ChannelPattern, Arc<ChannelConfig>)>,
    /// Claims some pattern binds: what connections keep of their tokens.
    bound_claims: BTreeSet<String>,
    /// Compiled schemas of the channels that declare any, by channel (or pattern).
    validators: HashMap<ChannelName, BTreeMap<String, Validator>>,
}

impl std::fmt::Debug for ChannelSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelSet")
            .field("channels", &self.by_name.len())
            .field("patterns", &self.patterns.len())
            .finish_non_exhaustive()
    }
}

/// A concrete channel and the settings it takes: its own, or its pattern's.
pub struct Resolved<'s> {
    /// The concrete channel.
    pub name: ChannelName,
    /// Its settings (`config.name` is the pattern for a pattern's channel).
    pub config: &'s Arc<ChannelConfig>,
    pattern: Option<&'s ChannelPattern>,
    validators: Option<&'s BTreeMap<String, Validator>>,
}

impl std::fmt::Debug for Resolved<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("name", &self.name)
            .field("config", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl Resolved<'_> {
    /// The compiled schema publishes of `kind` must match, if the channel has one.
    pub fn schema(&self, kind: &str) -> Option<&Validator> {
        self.validators?.get(kind)
    }

    /// Whether `who` may subscribe: the access rule, then every bound parameter.
    pub fn admits(&self, who: &Identity) -> Result<(), Refusal> {
        self.config.admits(who)?;
        let Some(pattern) = self.pattern else {
            return Ok(());
        };
        let values = pattern.matches(&self.name).unwrap_or_default();
        let bound = values
            .iter()
            .filter_map(|(param, value)| Some((self.config.bind.get(*param)?, *value)));
        for (claim, value) in bound {
            if !who.claims.holds(claim, value) {
                return Err(Refusal::Forbidden(NOT_YOURS));
            }
        }
        Ok(())
    }
}

impl ChannelSet {
    /// Validates and indexes `channels`.
    pub fn new(channels: Vec<ChannelConfig>) -> Result<Self, ChannelError> {
        let mut set = Self::default();
        for channel in channels {
            let Checked {
                pattern,
                validators,
            } = validate(&channel)?;
            let channel = Arc::new(channel);
            let name = ChannelName::from(channel.name.as_str());
            if !validators.is_empty() {
                set.validators.insert(name.clone(), validators);
            }
            if set.by_name.insert(name, channel.clone()).is_some() {
                return Err(ChannelError::Invalid(format!(
                    "duplicate channel name {:?}",
                    channel.name
                )));
            }
            if let Some(pattern) = pattern {
                set.bound_claims.extend(channel.bind.values().cloned());
                set.patterns.push((pattern, channel));
            }
        }
        set.refuse_overlaps()?;
        Ok(set)
    }

    /// A plain channel a pattern also matches would have two sets of rules, and
    /// two patterns matching one name would leave which applies to file order.
    fn refuse_overlaps(&self) -> Result<(), ChannelError> {
        for (pattern, config) in &self.patterns {
            let shadowed = self
                .by_name
                .keys()
                .find(|name| pattern.matches(name).is_some());
            if let Some(name) = shadowed {
                return Err(ChannelError::Invalid(format!(
                    "pattern {:?} matches the channel {name:?}; rename one of them",
                    config.name
                )));
            }
        }
        for (i, (a, first)) in self.patterns.iter().enumerate() {
            for (b, second) in &self.patterns[i + 1..] {
                if a.overlaps(b) {
                    return Err(ChannelError::Invalid(format!(
                        "patterns {:?} and {:?} match the same channels",
                        first.name, second.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Resolves a concrete channel name: a plain channel, or a pattern's channel.
    /// Pattern texts themselves (`dept:{dept}`) resolve to nothing.
    pub fn get(&self, name: &str) -> Option<Resolved<'_>> {
        if let Some((interned, config)) = self.by_name.get_key_value(name) {
            return (!config.is_pattern()).then(|| Resolved {
                name: interned.clone(),
                config,
                pattern: None,
                validators: self.validators_of(config),
            });
        }
        self.patterns
            .iter()
            .find(|(pattern, _)| pattern.matches(name).is_some())
            .map(|(pattern, config)| Resolved {
                name: ChannelName::from(name),
                config,
                pattern: Some(pattern),
                validators: self.validators_of(config),
            })
    }

    /// The concrete channels of auto-subscribe patterns that `who` joins at
    /// connect: one per combination of its bound claims' values, at most
    /// [`MAX_AUTO_CHANNELS`] per pattern.
    pub fn auto_channels(&self, who: &Identity) -> Vec<Resolved<'_>> {
        let mut joined = Vec::new();
        for (pattern, config) in &self.patterns {
            if !config.auto_subscribe || config.admits(who).is_err() {
                continue;
            }
            let mut combos: Vec<BTreeMap<&str, &str>> = vec![BTreeMap::new()];
            for param in pattern.params() {
                let values = config
                    .bind
                    .get(param)
                    .map_or(&[][..], |claim| who.claims.values(claim));
                combos = combos
                    .iter()
                    .flat_map(|combo| {
                        values.iter().map(move |v| {
                            let mut next = combo.clone();
                            next.insert(param, &**v);
                            next
                        })
                    })
                    .take(MAX_AUTO_CHANNELS)
                    .collect();
            }
            joined.extend(combos.iter().filter_map(|values| {
                Some(Resolved {
                    name: ChannelName::from(pattern.render(values)?),
                    config,
                    pattern: Some(pattern),
                    validators: self.validators_of(config),
                })
            }));
        }
        joined
    }

    fn validators_of(&self, config: &ChannelConfig) -> Option<&BTreeMap<String, Validator>> {
        if self.validators.is_empty() {
            return None;
        }
        self.validators.get(config.name.as_str())
    }

    /// Claims some pattern binds.
    pub fn bound_claims(&self) -> &BTreeSet<String> {
        &self.bound_claims
    }

    /// All channels, patterns under their pattern text, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&ChannelName, &Arc<ChannelConfig>)> {
        self.by_name.iter()
    }

    /// Number of channels (patterns count once).
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are no channels.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Most concrete channels one auto-subscribe pattern joins per connection.
pub const MAX_AUTO_CHANNELS: usize = 32;

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
                    .any(|(name, cfg)| current.by_name.get(name) != Some(cfg))
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
            claims: Default::default(),
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
        let notifications = set.get("notifications").unwrap().config;
        assert!(notifications.is_per_user() && notifications.auto_subscribe);
        assert!(notifications.allows_type("notification"));
        assert!(!notifications.allows_type("alert"));
        assert!(!set.get("alerts").unwrap().config.is_per_user());
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
    fn coalescing_windows_are_bounded_and_per_user_channels_key_by_user() {
        let with = |access, window_ms, key| ChannelConfig {
            coalesce: Some(Coalesce {
                window_ms,
                key,
                edge: CoalesceEdge::Trailing,
                tag: None,
            }),
            ..ChannelConfig::new("stock", access)
        };
        for (access, window_ms, key, ok) in [
            (Access::Public, 10, CoalesceKey::Type, true),
            (Access::Public, 60_000, CoalesceKey::TypeUser, true),
            (Access::Public, 9, CoalesceKey::Type, false),
            (Access::Public, 60_001, CoalesceKey::Type, false),
            (Access::Public, u64::MAX, CoalesceKey::Type, false),
            (Access::User, 100, CoalesceKey::TypeUser, true),
            (Access::User, 100, CoalesceKey::Type, false),
        ] {
            let result = ChannelSet::new(vec![with(access, window_ms, key)]);
            assert_eq!(result.is_ok(), ok, "{access:?} {window_ms} {key:?}");
        }
        // A tag key names a valid tag, and only a tag key names one.
        let tagged = |key, tag: Option<&str>| ChannelConfig {
            coalesce: Some(Coalesce {
                tag: tag.map(str::to_owned),
                ..with(Access::Public, 100, key).coalesce.unwrap()
            }),
            ..ChannelConfig::new("stock", Access::Public)
        };
        assert!(ChannelSet::new(vec![tagged(CoalesceKey::Tag, Some("sku"))]).is_ok());
        for (key, tag) in [
            (CoalesceKey::Tag, None),
            (CoalesceKey::Tag, Some("")),
            (CoalesceKey::Tag, Some("CORP\\sku")),
            (CoalesceKey::Type, Some("sku")),
        ] {
            assert!(
                ChannelSet::new(vec![tagged(key, tag)]).is_err(),
                "{key:?} {tag:?}"
            );
        }
        let per_user = ChannelConfig {
            access: Access::User,
            ..tagged(CoalesceKey::Tag, Some("sku"))
        };
        assert!(ChannelSet::new(vec![per_user]).is_err());
    }

    fn dept_pattern(auto: bool) -> ChannelConfig {
        ChannelConfig {
            bind: BTreeMap::from([("dept".to_owned(), "dept".to_owned())]),
            auto_subscribe: auto,
            history: true,
            capacity: 7,
            ..ChannelConfig::new("dept:{dept}", Access::Authenticated)
        }
    }

    fn with_claims(claims: serde_json::Value) -> Identity {
        let map = claims.as_object().unwrap();
        Identity {
            claims: crate::claims::Claims::from_token(map, &map.keys().cloned().collect()),
            ..user(&[])
        }
    }

    #[test]
    fn concrete_channels_take_their_patterns_settings() {
        let set = ChannelSet::new(vec![
            dept_pattern(false),
            ChannelConfig::new("dept", Access::Public),
            ChannelConfig::new("stock:{sku}", Access::Public),
        ])
        .unwrap();
        let five = set.get("dept:5").unwrap();
        assert_eq!(&*five.name, "dept:5");
        assert_eq!(
            (five.config.capacity, five.config.name.as_str()),
            (7, "dept:{dept}")
        );
        assert_eq!(&*set.get("stock:A-1").unwrap().name, "stock:A-1");
        assert_eq!(set.get("dept").unwrap().config.access, Access::Public);
        for unknown in [
            "dept:{dept}",
            "dept:5:6",
            "dept:",
            "dept:CORP\\alice",
            "dept:🦀",
        ] {
            assert!(set.get(unknown).is_none(), "{unknown:?}");
        }
        assert_eq!(set.bound_claims(), &BTreeSet::from(["dept".to_owned()]));
    }

    #[test]
    fn a_bound_parameter_admits_only_its_claims_values() {
        let set = ChannelSet::new(vec![dept_pattern(false)]).unwrap();
        let five = set.get("dept:5").unwrap();
        assert!(five
            .admits(&with_claims(serde_json::json!({"dept": 5})))
            .is_ok());
        assert!(five
            .admits(&with_claims(serde_json::json!({"dept": "5"})))
            .is_ok());
        assert!(five
            .admits(&with_claims(serde_json::json!({"dept": [3, "5"]})))
            .is_ok());
        for other in [
            serde_json::json!({"dept": 6}),
            serde_json::json!({"dept": "05"}),
            serde_json::json!({"dept": [50, "5 "]}),
            serde_json::json!({"team": 5}),
            serde_json::json!({}),
        ] {
            assert!(five.admits(&with_claims(other.clone())).is_err(), "{other}");
        }
        assert!(five.admits(&Identity::anonymous()).is_err());
    }

    #[test]
    fn auto_subscribe_joins_one_channel_per_claim_value() {
        let set = ChannelSet::new(vec![
            dept_pattern(true),
            ChannelConfig {
                bind: BTreeMap::from([
                    ("site".to_owned(), "site".to_owned()),
                    ("team".to_owned(), "teams".to_owned()),
                ]),
                auto_subscribe: true,
                ..ChannelConfig::new("ops:{site}:{team}", Access::Authenticated)
            },
        ])
        .unwrap();
        let who = with_claims(serde_json::json!({
            "dept": [5, "sales", "CORP\\alice"],
            "site": "hq",
            "teams": ["a", "b"],
        }));
        let mut names: Vec<String> = set
            .auto_channels(&who)
            .iter()
            .map(|r| r.name.to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["dept:5", "dept:sales", "ops:hq:a", "ops:hq:b"]);
        for joined in set.auto_channels(&who) {
            assert!(joined.admits(&who).is_ok(), "{}", joined.name);
        }
        assert!(set
            .auto_channels(&with_claims(serde_json::json!({"site": "hq"})))
            .is_empty());
        let many = with_claims(serde_json::json!({
            "site": (0..32).collect::<Vec<_>>(),
            "teams": (0..32).collect::<Vec<_>>(),
        }));
        assert_eq!(set.auto_channels(&many).len(), MAX_AUTO_CHANNELS);
    }

    #[test]
    fn overlapping_rules_and_bad_bindings_are_refused() {
        for channels in [
            vec![
                dept_pattern(false),
                ChannelConfig::new("dept:all", Access::Public),
            ],
            vec![
                dept_pattern(false),
                ChannelConfig::new("dept:{team}", Access::Public),
            ],
            vec![ChannelConfig::new("{dept}:x", Access::Public)],
            vec![ChannelConfig {
                auto_subscribe: true,
                ..ChannelConfig::new("dept:{dept}", Access::Authenticated)
            }],
            vec![ChannelConfig {
                bind: BTreeMap::from([("dept".to_owned(), "dept".to_owned())]),
                ..ChannelConfig::new("alerts", Access::Authenticated)
            }],
        ] {
            let names: Vec<_> = channels.iter().map(|c| c.name.clone()).collect();
            assert!(ChannelSet::new(channels).is_err(), "{names:?}");
        }
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
        let news = snap.get("news").unwrap().config;
        assert_eq!(news.access, Access::Authenticated);
        assert_eq!(news.capacity, 5);
        std::fs::write(&path, r#"{"channels":[{"name":"news","acces":"public"}]}"#).unwrap();
        assert!(matches!(registry.reload(), Err(ChannelError::Parse { .. })));
        // A bad file leaves the last good channels in force.
        assert!(registry.snapshot().get("news").is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
