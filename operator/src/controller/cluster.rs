//! The `PushCluster` reconciler: desired objects → server-side apply → scaling →
//! status. Runs on every change of the cluster, its owned objects or its channels,
//! and every resync period so scaling follows connection counts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, reflector, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::json;

use super::triggers::{mark_filled, Filled};
use super::{condition, Context, Error, MANAGER};
use crate::crd::{Channel, PushCluster, PushClusterStatus};
use crate::resources::{self, names};
use crate::scaling::{deletion_cost, Policy};
use crate::stats::NodeStats;

/// Pod annotation the ReplicaSet controller reads to pick pods to delete.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

async fn apply<K>(api: &Api<K>, object: &K) -> Result<K, Error>
where
    K: Resource + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(object),
        )
        .await?)
}

/// What the PushCluster reconciler reads besides the shared [`Context`]: the watched
/// store of Channels.
pub struct Ctx {
    shared: Arc<Context>,
    channels: Store<Channel>,
    channels_filled: Filled,
    /// Per cluster, the resourceVersions before and after this reconciler's last status
    /// write: the one change a watch may not have delivered yet without being behind.
    own_writes: Mutex<HashMap<ObjectRef<PushCluster>, (String, String)>>,
}

impl std::ops::Deref for Ctx {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.shared
    }
}

impl Ctx {
    /// The live Channels of `fresh` (just read), from the store when the watches are
    /// caught up; listed otherwise.
    ///
    /// The watches are caught up when the watched copy `cached` of the cluster is the
    /// one just read, or older only by this reconciler's own last status write. Then
    /// the Channel watch, which reconnects and re-lists the same way after an API
    /// server restart, is trusted too; a watch behind something else lists instead.
    async fn channels(
        &self,
        cached: &PushCluster,
        fresh: &PushCluster,
        ns: &str,
    ) -> Result<Vec<Channel>, Error> {
        let key = ObjectRef::from_obj(fresh);
        let (seen, now) = (cached.resource_version(), fresh.resource_version());
        let caught_up = seen == now
            || self
                .own_writes
                .lock()
                .get(&key)
                .is_some_and(|(before, after)| {
                    seen.as_ref() == Some(before) && now.as_ref() == Some(after)
                });
        let ours = |c: &Channel| {
            c.spec.cluster == fresh.name_any() && c.metadata.deletion_timestamp.is_none()
        };
        if caught_up && self.channels_filled.wait().await {
            let mut channels: Vec<Channel> = self
                .channels
                .state()
                .iter()
                .filter(|c| c.namespace().as_deref() == Some(ns) && ours(c))
                .map(|c| (**c).clone())
                .collect();
            // As a LIST would return them (the channel file sorts by name anyway).
            channels.sort_by_key(|c| c.name_any());
            return Ok(channels);
        }
        tracing::debug!(?seen, ?now, "watch behind: listing Channels");
        Ok(Api::<Channel>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|c| ours(c))
            .collect())
    }

    /// Remembers this reconciler's status write of `before`, which made `after`.
    fn wrote(&self, before: &PushCluster, after: &PushCluster) {
        if let (Some(b), Some(a)) = (before.resource_version(), after.resource_version()) {
            self.own_writes
                .lock()
                .insert(ObjectRef::from_obj(before), (b, a));
        }
    }
}

/// Reconciles one PushCluster.
///
/// A failure is shown on the PushCluster itself (condition `Reconciled=False` with the
/// API server's message) and as a Warning Event, not only in the operator's log.
pub async fn reconcile(cluster: Arc<PushCluster>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    super::instrumented("PushCluster", &*cluster, &ctx, |ns| {
        let (object, ctx) = (&*cluster, &*ctx);
        async move {
            let result = reconcile_inner(object, ctx, &ns).await;
            if let Err(error) = &result {
                report_failure(object, ctx, &ns, error).await;
            }
            result
        }
    })
    .await
}

/// Records a failed reconcile on the resource: a `Reconciled=False` condition (merged
/// into the existing ones) and a Warning Event. Best effort: the failure that caused it
/// may also stop this write.
async fn report_failure(cluster: &PushCluster, ctx: &Context, ns: &str, error: &Error) {
    let message = error.readable();
    let previous = cluster
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let failed = condition(
        &previous,
        "Reconciled",
        false,
        error.reason(),
        message.clone(),
        cluster.metadata.generation,
    );
    let mut conditions: Vec<_> = previous
        .into_iter()
        .filter(|c| c.type_ != "Reconciled")
        .collect();
    conditions.push(failed);
    let api = Api::<PushCluster>::namespaced(ctx.client.clone(), ns);
    let patch = json!({"status": {"conditions": conditions}});
    if let Err(e) = api
        .patch_status(
            &cluster.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::debug!(error = %e, "could not record the failure in status");
    }
    publish_event(ctx, cluster, EventType::Warning, "ReconcileFailed", message).await;
}

async fn reconcile_inner(cached: &PushCluster, ctx: &Ctx, ns: &str) -> Result<Action, Error> {
    let client = ctx.client.clone();
    // Every reconcile reads its PushCluster afresh (one GET): a watch that silently fell
    // behind (seen after an API server restart) must not make the operator apply old
    // specs. The Channels come from the watched store, which is trusted only when that
    // GET shows the watches caught up (see `Ctx::channels`).
    let Some(fresh) = Api::<PushCluster>::namespaced(client.clone(), ns)
        .get_opt(&cached.name_any())
        .await?
    else {
        return Ok(Action::await_change());
    };
    let cluster = &fresh;
    let names = names(cluster);
    let channels = ctx.channels(cached, cluster, ns).await?;

    // Live figures from the nodes' heartbeats (absent when Redis is unreachable).
    let stats = ctx
        .stats
        .nodes(cluster, Api::<Secret>::namespaced(client.clone(), ns))
        .await;
    // The heartbeats live on a few slots only; a primary down elsewhere still means
    // lost publishes for the channels and users it serves.
    let broker_error = match &stats {
        Err(e) => Some(e.to_string()),
        Ok(_) => ctx
            .stats
            .broker_health(cluster, Api::<Secret>::namespaced(client.clone(), ns))
            .await
            .err()
            .map(|e| e.to_string()),
    };
    let secret_problems =
        crate::secrets::missing(cluster, &Api::<Secret>::namespaced(client.clone(), ns)).await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    let existing = deployments.get_opt(&names.node).await?;
    let current = existing
        .as_ref()
        .and_then(|d| d.spec.replicas)
        .unwrap_or(cluster.spec.replicas.min);
    let connections: i64 = stats
        .as_ref()
        .map_or(0, |nodes| nodes.iter().map(|n| n.connections).sum());
    let desired = desired_replicas(
        cluster,
        ctx,
        current,
        stats.as_ref().ok().map(|_| connections),
    );

    apply(
        &Api::<ServiceAccount>::namespaced(client.clone(), ns),
        &resources::service_account(cluster),
    )
    .await?;
    apply(
        &Api::<ConfigMap>::namespaced(client.clone(), ns),
        &resources::config_map(cluster, &channels),
    )
    .await?;
    let deployment = apply(&deployments, &resources::deployment(cluster, desired)).await?;
    apply(
        &Api::<Service>::namespaced(client.clone(), ns),
        &resources::service(cluster),
    )
    .await?;
    apply(
        &Api::<PodDisruptionBudget>::namespaced(client.clone(), ns),
        &resources::pod_disruption_budget(cluster),
    )
    .await?;
    let ingresses = Api::<Ingress>::namespaced(client.clone(), ns);
    match resources::ingress(cluster) {
        Some(ingress) => {
            apply(&ingresses, &ingress).await?;
        }
        None => {
            if let Some(old) = ingresses.get_opt(&names.ingress).await? {
                if old
                    .owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == cluster.uid().as_ref())
                {
                    ingresses
                        .delete(&names.ingress, &Default::default())
                        .await?;
                }
            }
        }
    }
    if let Ok(nodes) = &stats {
        set_deletion_costs(cluster, ctx, ns, nodes).await?;
    }
    if desired != current && existing.is_some() {
        publish_event(
            ctx,
            cluster,
            EventType::Normal,
            "Scaled",
            format!("node replicas {current} → {desired} ({connections} connections)"),
        )
        .await;
    }

    let status = status(
        cluster,
        &deployment,
        desired,
        connections,
        broker_error,
        &secret_problems,
    );
    if cluster.status.as_ref() == Some(&status) {
        return Ok(Action::requeue(ctx.resync));
    }
    let api = Api::<PushCluster>::namespaced(client, ns);
    let written = api
        .patch_status(
            &cluster.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "herald.dev/v1alpha1",
                "kind": "PushCluster",
                "status": status,
            })),
        )
        .await?;
    ctx.wrote(cluster, &written);
    Ok(Action::requeue(ctx.resync))
}

fn desired_replicas(
    cluster: &PushCluster,
    ctx: &Context,
    current: i32,
    connections: Option<i64>,
) -> i32 {
    let spec = &cluster.spec;
    let (min, max) = (spec.replicas.min, spec.replicas.max.max(spec.replicas.min));
    if let Some(pinned) = spec.replicas.desired {
        return pinned.clamp(min, max);
    }
    let Some(connections) = connections else {
        // Without figures, hold steady (within bounds).
        return current.clamp(min, max);
    };
    let policy = Policy {
        min,
        max,
        target_per_node: spec.scaling.target_connections_per_node,
        tolerance: spec.scaling.tolerance,
        stabilization: std::time::Duration::from_secs(
            spec.scaling.scale_down_stabilization_seconds.max(0) as u64,
        ),
        scale_up_percent: spec.scaling.scale_up_percent,
    };
    let key = format!(
        "{}/{}",
        cluster.namespace().unwrap_or_default(),
        cluster.name_any()
    );
    ctx.scalers
        .lock()
        .entry(key)
        .or_default()
        .decide(&policy, current, connections, Instant::now())
}

/// Marks each node pod with its connection count as deletion cost, so a scale-down
/// removes the emptiest pods and moves the fewest clients.
async fn set_deletion_costs(
    cluster: &PushCluster,
    ctx: &Context,
    ns: &str,
    nodes: &[NodeStats],
) -> Result<(), Error> {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns);
    let selector = resources::selector_string(cluster);
    for pod in pods.list(&ListParams::default().labels(&selector)).await? {
        let name = pod.name_any();
        let Some(node) = nodes.iter().find(|n| n.id == name) else {
            continue;
        };
        let cost = deletion_cost(node.connections).to_string();
        if pod.annotations().get(DELETION_COST) == Some(&cost) {
            continue;
        }
        let patch = json!({"metadata": {"annotations": {DELETION_COST: cost}}});
        pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}

fn status(
    cluster: &PushCluster,
    deployment: &Deployment,
    desired: i32,
    connections: i64,
    broker_error: Option<String>,
    secret_problems: &[String],
) -> PushClusterStatus {
    let previous = cluster
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let generation = cluster.metadata.generation;
    let ds = deployment.status.clone().unwrap_or_default();
    let replicas = ds.replicas.unwrap_or(0);
    let ready = ds.ready_replicas.unwrap_or(0);
    let updated = ds.updated_replicas.unwrap_or(0);
    // Complete only when every pod of the new spec also serves: updated pods that are
    // not ready yet are still a rollout in progress (as a Deployment's own condition).
    let rolled_out = ds.observed_generation >= deployment.metadata.generation
        && updated >= desired
        && replicas == desired
        && ready >= desired;
    let is_ready = ready >= desired && desired > 0;
    let conditions = vec![
        condition(
            &previous,
            "Ready",
            is_ready,
            if is_ready {
                "NodesReady"
            } else {
                "NodesNotReady"
            },
            format!("{ready} of {desired} node pods ready"),
            generation,
        ),
        condition(
            &previous,
            "Progressing",
            !rolled_out,
            if rolled_out {
                "RolloutComplete"
            } else {
                "RollingOut"
            },
            format!("{updated} of {desired} node pods updated, {ready} ready"),
            generation,
        ),
        condition(
            &previous,
            "Degraded",
            replicas > 0 && ready == 0,
            if replicas > 0 && ready == 0 {
                "NoReadyNodes"
            } else {
                "AsExpected"
            },
            format!("{ready} ready, {replicas} existing"),
            generation,
        ),
        match &broker_error {
            None => condition(
                &previous,
                "BrokerHealthy",
                true,
                "HeartbeatsRead",
                format!("{connections} connections reported"),
                generation,
            ),
            Some(e) => condition(
                &previous,
                "BrokerHealthy",
                false,
                "RedisUnreachable",
                e.clone(),
                generation,
            ),
        },
        condition(
            &previous,
            "SecretsFound",
            secret_problems.is_empty(),
            if secret_problems.is_empty() {
                "AllFound"
            } else {
                "SecretMissing"
            },
            if secret_problems.is_empty() {
                "every referenced Secret key exists".to_owned()
            } else {
                secret_problems.join("; ")
            },
            generation,
        ),
        condition(
            &previous,
            "Reconciled",
            true,
            "Applied",
            "every object applied".to_owned(),
            generation,
        ),
    ];
    PushClusterStatus {
        conditions,
        observed_generation: generation,
        replicas,
        ready_replicas: ready,
        desired_replicas: desired,
        connections,
        selector: resources::selector_string(cluster),
    }
}

async fn publish_event(
    ctx: &Context,
    cluster: &PushCluster,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        tracing::debug!(error = %e, "event not recorded");
    }
}

/// What to do after a failed reconcile: record it and back off.
pub fn error_policy(cluster: Arc<PushCluster>, error: &Error, ctx: Arc<Ctx>) -> Action {
    tracing::warn!(cluster = %cluster.name_any(), %error, "reconcile failed");
    let key = format!(
        "{}/{}",
        cluster.namespace().unwrap_or_default(),
        cluster.name_any()
    );
    ctx.backoff(&key)
}

/// Runs the PushCluster controller until `shutdown` resolves.
///
/// Channels are watched into a store; only a change of what the channel file is made
/// of (a Channel's spec, its deletion) reconciles its cluster, not its status.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let clusters = Api::<PushCluster>::all(client.clone());
    let managed = watcher::Config::default().labels("app.kubernetes.io/managed-by=herald-operator");
    let (channels, channel_writer) = reflector::store();
    let mut rendered = Rendered::default();
    let stored = channels.clone();
    let (fill, channels_filled) = Filled::new();
    let channel_changes = reflector(
        channel_writer,
        watcher(
            Api::<Channel>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .inspect_ok(move |event| mark_filled(&fill, event))
    .touched_objects()
    .try_filter(move |channel| std::future::ready(rendered.changed(channel, &stored)));
    let controller = Controller::new(clusters, watcher::Config::default());
    let ctx = Arc::new(Ctx {
        shared: ctx,
        channels,
        channels_filled,
        own_writes: Mutex::default(),
    });
    controller
        .owns(Api::<Deployment>::all(client.clone()), managed.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), managed.clone())
        .owns(Api::<Service>::all(client.clone()), managed.clone())
        .owns(Api::<ServiceAccount>::all(client.clone()), managed.clone())
        .owns(
            Api::<PodDisruptionBudget>::all(client.clone()),
            managed.clone(),
        )
        .owns(Api::<Ingress>::all(client), managed)
        .watches_stream(channel_changes, |channel| {
            let ns = channel.namespace().unwrap_or_default();
            std::iter::once(ObjectRef::new(&channel.spec.cluster).within(&ns))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

/// Tells which Channel events change a channel file: a new generation (spec), the
/// start of its deletion, or its disappearance; not status writes.
#[derive(Debug, Default)]
struct Rendered {
    seen: HashMap<ObjectRef<Channel>, (Option<i64>, bool)>,
}

impl Rendered {
    /// Whether `channel`'s event (already applied to `store`) changes a channel file.
    fn changed(&mut self, channel: &Channel, store: &Store<Channel>) -> bool {
        let key = ObjectRef::from_obj(channel);
        if store.get(&key).is_none() {
            return self.seen.remove(&key).is_some();
        }
        let state = (
            channel.metadata.generation,
            channel.metadata.deletion_timestamp.is_some(),
        );
        self.seen.insert(key, state) != Some(state)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DeploymentStatus;

    use super::*;
    use crate::crd::PushClusterSpec;

    fn cluster() -> PushCluster {
        let spec: PushClusterSpec = serde_json::from_value(json!({
            "redis": {"addresses": ["redis-0:6379"]},
            "auth": {"jwtSecretRef": {"name": "herald", "key": "jwt"},
                     "apiKeySecretRef": {"name": "herald", "key": "api-key"}},
        }))
        .unwrap();
        PushCluster::new("push", spec)
    }

    fn deployment(replicas: i32, updated: i32, ready: i32) -> Deployment {
        let mut deployment = Deployment::default();
        deployment.metadata.generation = Some(2);
        deployment.status = Some(DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            ..DeploymentStatus::default()
        });
        deployment
    }

    fn progressing(status: &PushClusterStatus) -> (&str, &str) {
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Progressing")
            .unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn a_rollout_is_complete_only_when_the_updated_pods_are_ready() {
        let starting = status(&cluster(), &deployment(3, 3, 0), 3, 0, None, &[]);
        assert_eq!(progressing(&starting), ("True", "RollingOut"));
        let partly = status(&cluster(), &deployment(3, 3, 2), 3, 0, None, &[]);
        assert_eq!(progressing(&partly), ("True", "RollingOut"));
        let done = status(&cluster(), &deployment(3, 3, 3), 3, 0, None, &[]);
        assert_eq!(progressing(&done), ("False", "RolloutComplete"));
    }
}
