//! The `Channel` reconciler: reports whether a channel is in force, and purges its
//! history on deletion when asked to. The cluster reconciler renders channels into the
//! node configuration; this one tells the user, on the Channel itself, whether its
//! cluster exists and its name is unambiguous.
//!
//! The only finalizer the operator ever sets is `herald.dev/purge-history`, on
//! Channels with `deletionPolicy: Purge`, and it can never hold a deletion forever:
//! without a cluster to reach the history is left to expire, and after
//! [`PURGE_DEADLINE`] of failed attempts the operator gives up (with a Warning event).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::{Event, EventType};
use kube::Resource;

use futures_util::{StreamExt, TryStreamExt};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, reflector, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;

use super::triggers::{channels_of, mark_filled, Filled, Presence, Rivalry};
use super::{condition, Context, Error, MANAGER};
use crate::crd::{Channel, ChannelStatus, DeletionPolicy, PushCluster};
use crate::patterns;

/// Finalizer that makes a Channel's deletion wait for its history purge.
pub const PURGE_FINALIZER: &str = "herald.dev/purge-history";
/// How long a deletion retries a failing purge before letting the Channel go.
pub const PURGE_DEADLINE: Duration = Duration::from_secs(120);

/// What the Channel reconciler reads: the shared [`Context`] and the watched stores of
/// Channels and PushClusters (kept by this controller's watches, so a reconcile makes no
/// reads of its own).
pub struct Ctx {
    shared: Arc<Context>,
    channels: Store<Channel>,
    clusters: Store<PushCluster>,
    clusters_filled: Filled,
}

impl std::ops::Deref for Ctx {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.shared
    }
}

/// How often a Channel is checked again without a change: only a safety net, as every
/// change its status depends on (itself, its rivals, its cluster's presence) triggers it.
pub const RECHECK: Duration = Duration::from_secs(300);

/// Reconciles one Channel's status.
pub async fn reconcile(channel: Arc<Channel>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    super::instrumented("Channel", &*channel, &ctx, |ns| {
        let (object, ctx) = (&*channel, &*ctx);
        async move { reconcile_inner(object, ctx, &ns).await }
    })
    .await
}

/// Reads only the stores. A stale copy cannot do harm here: the finalizer patch is
/// conditional on the copy's resourceVersion, and a status computed from an old view is
/// followed by the reconcile the missed change triggers once its watch event arrives.
async fn reconcile_inner(channel: &Channel, ctx: &Ctx, ns: &str) -> Result<Action, Error> {
    if !ctx.clusters_filled.wait().await {
        // Shutting down: the cluster watch is gone.
        return Ok(Action::await_change());
    }
    let cluster = ctx
        .clusters
        .get(&ObjectRef::new(&channel.spec.cluster).within(ns));
    let name = channel.channel_name();
    let api = Api::<Channel>::namespaced(ctx.client.clone(), ns);
    let has_finalizer = channel.finalizers().iter().any(|f| f == PURGE_FINALIZER);
    if channel.metadata.deletion_timestamp.is_some() {
        if has_finalizer {
            return finish_deletion(channel, cluster.as_deref(), ctx, ns, &name).await;
        }
        return Ok(Action::await_change());
    }
    match (channel.spec.deletion_policy, has_finalizer) {
        (DeletionPolicy::Purge, false) => set_finalizer(&api, channel, true).await?,
        (DeletionPolicy::Keep, true) => set_finalizer(&api, channel, false).await?,
        _ => {}
    }
    let mut rivals: Vec<String> = ctx
        .channels
        .state()
        .iter()
        .filter(|c| {
            c.namespace().as_deref() == Some(ns)
                && c.spec.cluster == channel.spec.cluster
                && c.channel_name() == name
                && c.name_any() != channel.name_any()
        })
        .map(|c| c.name_any())
        .collect();
    // The store has no order; the message must not change with it.
    rivals.sort();
    let previous = channel
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let generation = channel.metadata.generation;
    let refused = cluster.as_deref().and_then(|cluster| {
        let siblings: Vec<Channel> = ctx
            .channels
            .state()
            .iter()
            .filter(|c| {
                c.namespace().as_deref() == Some(ns) && c.spec.cluster == channel.spec.cluster
            })
            .map(|c| Channel::clone(c))
            .collect();
        patterns::conflicts(cluster, &siblings).remove(&name)
    });
    let ready = match (&cluster, rivals.is_empty(), refused) {
        (None, _, _) => condition(
            &previous,
            "Ready",
            false,
            "ClusterNotFound",
            format!(
                "PushCluster {} does not exist in {ns}",
                channel.spec.cluster
            ),
            generation,
        ),
        (Some(_), false, _) => condition(
            &previous,
            "Ready",
            false,
            "DuplicateName",
            format!(
                "channel name {name:?} is also used by {}",
                rivals.join(", ")
            ),
            generation,
        ),
        (Some(_), true, Some(why)) => condition(
            &previous,
            "Ready",
            false,
            "PatternConflict",
            why,
            generation,
        ),
        (Some(_), true, None) => condition(
            &previous,
            "Ready",
            true,
            "Configured",
            format!("served by PushCluster {}", channel.spec.cluster),
            generation,
        ),
    };
    let status = ChannelStatus {
        conditions: vec![ready],
        observed_generation: generation,
        channel: name,
    };
    if channel.status.as_ref() == Some(&status) {
        return Ok(Action::requeue(RECHECK));
    }
    api.patch_status(
        &channel.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(
            json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Channel", "status": status}),
        ),
    )
    .await?;
    Ok(Action::requeue(RECHECK))
}

async fn set_finalizer(api: &Api<Channel>, channel: &Channel, present: bool) -> Result<(), Error> {
    let mut finalizers: Vec<String> = channel
        .finalizers()
        .iter()
        .filter(|f| *f != PURGE_FINALIZER)
        .cloned()
        .collect();
    if present {
        finalizers.push(PURGE_FINALIZER.to_owned());
    }
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": channel.resource_version()}});
    api.patch(
        &channel.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Purges the history of a deleted Channel, then lets it go.
async fn finish_deletion(
    channel: &Channel,
    cluster: Option<&PushCluster>,
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<Action, Error> {
    let api = Api::<Channel>::namespaced(ctx.client.clone(), ns);
    let live_cluster = cluster.filter(|c| c.metadata.deletion_timestamp.is_none());
    let (type_, reason, note) =
        match live_cluster {
            None => (
                EventType::Warning,
                "PurgeSkipped",
                format!(
                    "PushCluster {} is gone: history of {name:?} is left to expire",
                    channel.spec.cluster
                ),
            ),
            Some(cluster) => {
                let secrets = Api::<Secret>::namespaced(ctx.client.clone(), ns);
                match ctx.stats.purge_history(cluster, secrets, name).await {
                    Ok(removed) => (
                        EventType::Normal,
                        "HistoryPurged",
                        format!("removed {removed} history keys of channel {name:?}"),
                    ),
                    Err(e) => {
                        let waited = channel.metadata.deletion_timestamp.as_ref().map_or(
                            Duration::ZERO,
                            |t| {
                                Duration::try_from(k8s_openapi::jiff::Timestamp::now() - t.0)
                                    .unwrap_or(Duration::ZERO)
                            },
                        );
                        if waited < PURGE_DEADLINE {
                            publish(
                                ctx,
                                channel,
                                EventType::Warning,
                                "PurgeFailed",
                                e.to_string(),
                            )
                            .await;
                            return Ok(Action::requeue(Duration::from_secs(5)));
                        }
                        (
                            EventType::Warning,
                            "PurgeAbandoned",
                            format!(
                            "could not purge history of {name:?} within {PURGE_DEADLINE:?}: {e}"
                        ),
                        )
                    }
                }
            }
        };
    publish(ctx, channel, type_, reason, note).await;
    set_finalizer(&api, channel, false).await?;
    Ok(Action::await_change())
}

async fn publish(ctx: &Context, channel: &Channel, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Delete".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &channel.object_ref(&())).await {
        tracing::debug!(error = %e, "event not recorded");
    }
}

/// What to do after a failed reconcile: record it and back off.
pub fn error_policy(channel: Arc<Channel>, error: &Error, ctx: Arc<Ctx>) -> Action {
    tracing::warn!(channel = %channel.name_any(), %error, "reconcile failed");
    ctx.backoff(&format!(
        "{}/{}",
        channel.namespace().unwrap_or_default(),
        channel.name_any()
    ))
}

/// Runs the Channel controller until `shutdown` resolves.
///
/// Two watches, each feeding a store: Channels (a change reconciles the Channel and
/// the rivals of its old and new name) and PushClusters (only a cluster appearing,
/// vanishing or terminating reconciles its Channels; scaling and status do not).
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (channels, channel_writer) = reflector::store();
    let (clusters, cluster_writer) = reflector::store();
    let rivals_of = channels.clone();
    let mut rivalry = Rivalry::default();
    let channel_changes = reflector(
        channel_writer,
        watcher(
            Api::<Channel>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .touched_objects()
    .map_ok(move |channel| {
        let mut concerned = rivalry.concerned(&channel, &rivals_of);
        concerned.push(channel);
        futures_util::stream::iter(concerned.into_iter().map(Ok))
    })
    .try_flatten();
    let mut presence = Presence::default();
    let (fill, clusters_filled) = Filled::new();
    let cluster_changes = reflector(
        cluster_writer,
        watcher(Api::<PushCluster>::all(client), watcher::Config::default()).default_backoff(),
    )
    .map_ok(move |event| {
        mark_filled(&fill, &event);
        futures_util::stream::iter(presence.changed(event).into_iter().map(Ok))
    })
    .try_flatten();
    let of_cluster = channels.clone();
    let ctx = Arc::new(Ctx {
        shared: ctx,
        channels: channels.clone(),
        clusters,
        clusters_filled,
    });
    Controller::for_stream(channel_changes, channels)
        .watches_stream(cluster_changes, move |cluster| {
            channels_of(&cluster, &of_cluster)
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
