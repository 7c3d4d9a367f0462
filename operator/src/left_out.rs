//! Which Channels a cluster's channel file leaves out, and why.
//!
//! Nodes refuse a whole channel file when one channel in it is wrong: a schema that is
//! not a valid JSON Schema, a pattern (`dept:{dept}`) matching a plain channel's name,
//! two patterns matching the same names, bad bindings. They then keep their old
//! channels and every later change stalls. The CRD checks what one object can show
//! statically; the rest is checked here with the node's own rules (`herald-contract`),
//! and the offending Channel is left out and reported on its status instead. Plain
//! channels are never left out for a clash: an older pattern wins over a newer one,
//! and any plain channel over a pattern.

use std::collections::{BTreeMap, BTreeSet};

use herald_contract::channel_pattern::{self, ChannelPattern};
use herald_contract::channels::legacy_defaults;
use herald_contract::schemas;
use kube::ResourceExt;

use crate::crd::{Channel, PushCluster};

/// Why a Channel is left out: the `Ready` condition's reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    /// `InvalidSchema` or `PatternConflict`.
    pub reason: &'static str,
    /// What is wrong, naming the type or the other Channel.
    pub message: String,
}

/// Channel name → why that Channel is left out of `cluster`'s channel file.
pub fn left_out(cluster: &PushCluster, channels: &[Channel]) -> BTreeMap<String, LeftOut> {
    let mut refused: BTreeMap<String, LeftOut> = channels
        .iter()
        .filter_map(|c| {
            let e = schemas::compile(&c.spec.schemas, &c.spec.allowed_types).err()?;
            let message = format!("channel {:?}: {e}", c.channel_name());
            Some((
                c.channel_name(),
                LeftOut {
                    reason: "InvalidSchema",
                    message,
                },
            ))
        })
        .collect();
    let valid: Vec<Channel> = channels
        .iter()
        .filter(|c| !refused.contains_key(&c.channel_name()))
        .cloned()
        .collect();
    for (name, message) in conflicts(cluster, &valid) {
        refused.insert(
            name,
            LeftOut {
                reason: "PatternConflict",
                message,
            },
        );
    }
    refused
}

/// Pattern name → why that pattern clashes.
fn conflicts(cluster: &PushCluster, channels: &[Channel]) -> BTreeMap<String, String> {
    let mut plain: BTreeSet<String> = BTreeSet::new();
    if cluster.spec.default_channels {
        plain.extend(legacy_defaults().into_iter().map(|c| c.name));
    }
    let mut patterns: Vec<&Channel> = Vec::new();
    for channel in channels {
        let name = channel.channel_name();
        if channel_pattern::is_pattern(&name) {
            patterns.push(channel);
        } else {
            plain.insert(name);
        }
    }
    patterns.sort_by_key(|c| (c.creation_timestamp(), c.name_any()));
    let mut kept: Vec<(String, ChannelPattern)> = Vec::new();
    let mut refused = BTreeMap::new();
    for channel in patterns {
        let name = channel.channel_name();
        let spec = &channel.spec;
        let why = match channel_pattern::check_channel(&name, &spec.bind, spec.auto_subscribe) {
            Err(e) => Some(e.to_string()),
            Ok(None) => None,
            Ok(Some(pattern)) => {
                if let Some(shadowed) = plain.iter().find(|p| pattern.matches(p).is_some()) {
                    Some(format!("pattern {name:?} matches the channel {shadowed:?}"))
                } else if let Some((older, _)) = kept.iter().find(|(_, k)| k.overlaps(&pattern)) {
                    Some(format!(
                        "pattern {name:?} matches the same channels as the older pattern {older:?}"
                    ))
                } else {
                    kept.push((name.clone(), pattern));
                    None
                }
            }
        };
        if let Some(why) = why {
            refused.insert(name, why);
        }
    }
    refused
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;

    fn cluster() -> PushCluster {
        let spec = serde_json::from_value(json!({
            "redis": {"addresses": ["redis-0:6379"]},
            "auth": {"jwtSecretRef": {"name": "herald", "key": "jwt"},
                     "apiKeySecretRef": {"name": "herald", "key": "api-key"}},
        }))
        .unwrap();
        PushCluster::new("push", spec)
    }

    fn channel(object: &str, name: Option<&str>) -> Channel {
        let mut spec = json!({"cluster": "push", "access": "authenticated"});
        if let Some(name) = name {
            spec["name"] = json!(name);
        }
        Channel::new(object, serde_json::from_value(spec).unwrap())
    }

    fn at(mut c: Channel, second: i64) -> Channel {
        let time = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + second).unwrap();
        c.metadata.creation_timestamp = Some(Time(time));
        c
    }

    #[test]
    fn a_channel_with_a_bad_schema_is_left_out_and_says_which_type() {
        let c = cluster();
        let mut bad = channel("orders", None);
        bad.spec.schemas = BTreeMap::from([
            ("ok".into(), json!({"type": "object"})),
            ("order_update".into(), json!({"type": "integr"})),
        ]);
        let mut remote = channel("remote", None);
        remote.spec.schemas =
            BTreeMap::from([("t".into(), json!({"$ref": "https://example.com/s.json"}))]);
        let good = channel("alerts-2", None);
        let refused = left_out(&c, &[bad, remote, good]);
        assert_eq!(refused.keys().collect::<Vec<_>>(), ["orders", "remote"]);
        assert_eq!(refused["orders"].reason, "InvalidSchema");
        assert!(refused["orders"].message.contains("\"order_update\""));
    }

    #[test]
    fn plain_channels_and_older_patterns_win() {
        let c = cluster();
        let mut dept = at(channel("dept", Some("dept:{dept}")), 1);
        dept.spec.bind = BTreeMap::from([("dept".into(), "dept".into())]);
        let newer = at(channel("dept-2", Some("dept:{team}")), 2);
        let all = at(channel("dept-all", Some("dept:all")), 3);
        let orders = at(channel("o", Some("orders:{id}")), 0);
        let refused = conflicts(&c, &[newer.clone(), dept.clone(), all, orders]);
        assert_eq!(
            refused.keys().collect::<Vec<_>>(),
            ["dept:{dept}", "dept:{team}"]
        );
        assert!(refused["dept:{dept}"].contains("\"dept:all\""));
        // Without the plain channel, the older pattern stays and the newer goes.
        let refused = conflicts(&c, &[newer, dept]);
        assert_eq!(refused.keys().collect::<Vec<_>>(), ["dept:{team}"]);
        assert!(refused["dept:{team}"].contains("older pattern \"dept:{dept}\""));
    }

    #[test]
    fn what_nodes_would_refuse_is_left_out() {
        let c = cluster();
        let mut unbound = channel("u", Some("team:{team}"));
        unbound.spec.auto_subscribe = true;
        let twice = channel("t", Some("x:{a}:{a}"));
        let notifications = channel("n", Some("notifications:{x}"));
        let refused = conflicts(&c, &[unbound, twice, notifications]);
        assert_eq!(
            refused.keys().collect::<Vec<_>>(),
            ["team:{team}", "x:{a}:{a}"]
        );
    }
}
