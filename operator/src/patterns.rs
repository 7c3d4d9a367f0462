//! Which pattern Channels (`dept:{dept}`) a cluster's channel file can hold.
//!
//! Nodes refuse a whole channel file when a pattern matches a plain channel's name,
//! when two patterns match the same names, or when a pattern's bindings are wrong;
//! they then keep their old channels and every later change stalls. The CRD checks
//! what one object can show; what takes several objects (or the node's full rules)
//! is checked here, and the offending pattern is left out and reported on its
//! Channel instead. Plain channels are never left out: an older pattern wins over a
//! newer one, and any plain channel over a pattern.

use std::collections::{BTreeMap, BTreeSet};

use herald_contract::channel_pattern::{self, ChannelPattern};
use herald_contract::channels::legacy_defaults;
use kube::ResourceExt;

use crate::crd::{Channel, PushCluster};

/// Channel name → why that pattern is left out of `cluster`'s channel file.
pub fn conflicts(cluster: &PushCluster, channels: &[Channel]) -> BTreeMap<String, String> {
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
