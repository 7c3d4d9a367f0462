//! Which watch events should reconcile which objects. A watch reports every change,
//! status included; these filters pass on only the ones a reconcile depends on, so a
//! cluster whose status moves every resync does not re-reconcile all its Channels.

use std::collections::{HashMap, HashSet};

use herald_contract::channel_pattern;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::Event;
use kube::ResourceExt;

use crate::crd::{Channel, PushCluster};

/// A cluster's uid and whether it is terminating.
type Identity = (Option<String>, bool);

/// Tells when a PushCluster appears, disappears, is replaced (new uid) or starts
/// terminating: all a Channel's status and purge depend on.
#[derive(Debug, Default)]
pub struct Presence {
    /// Last seen identity and copy of each cluster.
    known: HashMap<ObjectRef<PushCluster>, (Identity, PushCluster)>,
    /// Clusters listed since the last `Init` (a re-list after a watch gap).
    listed: HashSet<ObjectRef<PushCluster>>,
}

impl Presence {
    /// The clusters whose presence `event` changed (also those gone unseen during a
    /// watch gap, found when a re-list completes).
    pub fn changed(&mut self, event: Event<PushCluster>) -> Vec<PushCluster> {
        match event {
            Event::Init => {
                self.listed.clear();
                Vec::new()
            }
            Event::InitApply(cluster) => {
                self.listed.insert(ObjectRef::from_obj(&cluster));
                self.applied(cluster)
            }
            Event::Apply(cluster) => self.applied(cluster),
            Event::Delete(cluster) => self
                .known
                .remove(&ObjectRef::from_obj(&cluster))
                .map(|(_, last)| last)
                .into_iter()
                .collect(),
            Event::InitDone => {
                let gone: Vec<_> = self
                    .known
                    .keys()
                    .filter(|k| !self.listed.contains(*k))
                    .cloned()
                    .collect();
                gone.into_iter()
                    .filter_map(|k| self.known.remove(&k).map(|(_, last)| last))
                    .collect()
            }
        }
    }

    fn applied(&mut self, cluster: PushCluster) -> Vec<PushCluster> {
        let identity: Identity = (cluster.uid(), cluster.metadata.deletion_timestamp.is_some());
        let key = ObjectRef::from_obj(&cluster);
        match self.known.insert(key, (identity.clone(), cluster.clone())) {
            Some((before, _)) if before == identity => Vec::new(),
            _ => vec![cluster],
        }
    }
}

/// What makes two Channels rivals: same namespace, cluster and channel name.
type RivalryKey = (Option<String>, String, String);

fn rivalry_key(channel: &Channel) -> RivalryKey {
    (
        channel.namespace(),
        channel.spec.cluster.clone(),
        channel.channel_name(),
    )
}

/// Tells which other Channels a Channel's change concerns: those sharing its channel
/// name before or after the change (their `DuplicateName` status may flip), and the
/// patterns of its cluster (their `PatternConflict` status may flip).
#[derive(Debug, Default)]
pub struct Rivalry {
    known: HashMap<ObjectRef<Channel>, RivalryKey>,
}

impl Rivalry {
    /// The Channels other than `channel` whose status its change may affect; `store`
    /// already holds the change (or no longer holds a deleted Channel).
    pub fn concerned(&mut self, channel: &Channel, store: &Store<Channel>) -> Vec<Channel> {
        let me = ObjectRef::from_obj(channel);
        let now = store.get(&me).map(|c| rivalry_key(&c));
        let before = match &now {
            Some(key) => self.known.insert(me.clone(), key.clone()),
            None => self.known.remove(&me),
        };
        if before == now {
            return Vec::new();
        }
        let keys: Vec<RivalryKey> = before.into_iter().chain(now).collect();
        let concerns = |c: &Channel| {
            let key = rivalry_key(c);
            keys.contains(&key)
                || (channel_pattern::is_pattern(&key.2)
                    && keys.iter().any(|k| (&k.0, &k.1) == (&key.0, &key.1)))
        };
        store
            .state()
            .iter()
            .filter(|c| concerns(c) && ObjectRef::from_obj(&***c) != me)
            .map(|c| (**c).clone())
            .collect()
    }
}

/// The Channels of `cluster`, from `store`.
pub fn channels_of(cluster: &PushCluster, store: &Store<Channel>) -> Vec<ObjectRef<Channel>> {
    let (ns, name) = (cluster.namespace(), cluster.name_any());
    store
        .state()
        .iter()
        .filter(|c| c.spec.cluster == name && c.namespace() == ns)
        .map(|c| ObjectRef::from_obj(&**c))
        .collect()
}

/// Whether a watched store holds its first complete list. Unlike
/// `Store::wait_until_ready`, which wakes only the last of several waiters (kube-runtime
/// 5 keeps a single waker), any number of concurrent reconciles may wait on it.
#[derive(Debug, Clone)]
pub struct Filled(tokio::sync::watch::Receiver<bool>);

impl Filled {
    /// A flag and the sender that raises it (after the store applied `InitDone`).
    pub fn new() -> (tokio::sync::watch::Sender<bool>, Self) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (tx, Self(rx))
    }

    /// Waits until the store is filled; false when its watch is gone (shutting down).
    pub async fn wait(&self) -> bool {
        self.0.clone().wait_for(|filled| *filled).await.is_ok()
    }
}

/// Raises `filled` when `event` completes a list (the store has applied it by then).
pub fn mark_filled<K>(filled: &tokio::sync::watch::Sender<bool>, event: &Event<K>) {
    if matches!(event, Event::InitDone) {
        filled.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::reflector::store;
    use serde_json::json;

    use super::*;

    fn cluster(uid: &str) -> PushCluster {
        serde_json::from_value(json!({
            "apiVersion": "herald.dev/v1alpha1", "kind": "PushCluster",
            "metadata": {"name": "push", "namespace": "CORP\\alice", "uid": uid},
            "spec": {"redis": {"addresses": ["redis-0:6379"]},
                     "auth": {"jwtSecretRef": {"name": "h", "key": "jwt"},
                              "apiKeySecretRef": {"name": "h", "key": "api-key"}}},
        }))
        .unwrap()
    }

    fn channel(name: &str, channel: &str) -> Channel {
        serde_json::from_value(json!({
            "apiVersion": "herald.dev/v1alpha1", "kind": "Channel",
            "metadata": {"name": name, "namespace": "CORP\\alice"},
            "spec": {"cluster": "push", "name": channel, "access": "authenticated"},
        }))
        .unwrap()
    }

    #[test]
    fn only_appearing_replaced_terminating_or_vanishing_clusters_count() {
        let mut presence = Presence::default();
        assert_eq!(presence.changed(Event::Apply(cluster("1"))).len(), 1);
        let mut scaled = cluster("1");
        scaled.spec.replicas.desired = Some(7);
        scaled.status = Some(Default::default());
        assert!(presence.changed(Event::Apply(scaled)).is_empty());
        assert_eq!(presence.changed(Event::Apply(cluster("2"))).len(), 1);
        let mut terminating = cluster("2");
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert_eq!(presence.changed(Event::Apply(terminating)).len(), 1);
        assert_eq!(presence.changed(Event::Delete(cluster("2"))).len(), 1);
        assert!(presence.changed(Event::Delete(cluster("2"))).is_empty());
        // Gone during a watch gap: found when the re-list completes without it.
        assert_eq!(presence.changed(Event::Apply(cluster("3"))).len(), 1);
        assert!(presence.changed(Event::Init).is_empty());
        assert!(presence.changed(Event::InitDone).len() == 1);
        assert!(presence.changed(Event::InitDone).is_empty());
    }

    #[tokio::test]
    async fn every_waiter_wakes_when_the_store_is_filled() {
        let (tx, filled) = Filled::new();
        let waiters: Vec<_> = (0..20)
            .map(|_| {
                let filled = filled.clone();
                tokio::spawn(async move { filled.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        mark_filled::<Channel>(&tx, &Event::Init);
        mark_filled::<Channel>(&tx, &Event::InitDone);
        for waiter in waiters {
            assert!(waiter.await.unwrap());
        }
        drop(tx);
        assert!(filled.wait().await, "stays filled");
        let (tx, never) = Filled::new();
        drop(tx);
        assert!(!never.wait().await);
    }

    #[test]
    fn a_rename_concerns_the_rivals_of_both_names() {
        let (reader, mut writer) = store::<Channel>();
        let a = channel("a", "room:CORP_alice@shop.1");
        let b = channel("b", "room:CORP_alice@shop.1");
        let c = channel("c", "🙂-is-not-allowed-but-stored-anyway");
        let mut rivalry = Rivalry::default();
        for ch in [&a, &b, &c] {
            writer.apply_watcher_event(&Event::Apply(ch.clone()));
        }
        let names = |v: Vec<Channel>| v.iter().map(|c| c.name_any()).collect::<Vec<_>>();
        assert_eq!(names(rivalry.concerned(&a, &reader)), vec!["b"]);
        assert_eq!(names(rivalry.concerned(&b, &reader)), vec!["a"]);
        assert!(names(rivalry.concerned(&c, &reader)).is_empty());
        // An unrelated change (same name) concerns nobody.
        assert!(rivalry.concerned(&a, &reader).is_empty());
        // b takes c's name: a (its old rival) and c (its new one) are concerned.
        let renamed = channel("b", "🙂-is-not-allowed-but-stored-anyway");
        writer.apply_watcher_event(&Event::Apply(renamed.clone()));
        let mut concerned = names(rivalry.concerned(&renamed, &reader));
        concerned.sort();
        assert_eq!(concerned, vec!["a", "c"]);
        // Deleted: its rival is concerned.
        writer.apply_watcher_event(&Event::Delete(renamed.clone()));
        assert_eq!(names(rivalry.concerned(&renamed, &reader)), vec!["c"]);
    }

    #[test]
    fn any_change_in_a_cluster_concerns_its_patterns() {
        let (reader, mut writer) = store::<Channel>();
        let dept = channel("dept", "dept:{dept}");
        let plain = channel("all", "dept:all");
        let mut elsewhere = channel("other", "team:{team}");
        elsewhere.spec.cluster = "other-push".into();
        let mut rivalry = Rivalry::default();
        for ch in [&dept, &plain, &elsewhere] {
            writer.apply_watcher_event(&Event::Apply(ch.clone()));
        }
        let names = |v: Vec<Channel>| v.iter().map(|c| c.name_any()).collect::<Vec<_>>();
        assert_eq!(names(rivalry.concerned(&plain, &reader)), vec!["dept"]);
        writer.apply_watcher_event(&Event::Delete(plain.clone()));
        assert_eq!(names(rivalry.concerned(&plain, &reader)), vec!["dept"]);
    }
}
