//! The `Channel` reconciler: reports whether a channel is in force. The cluster
//! reconciler renders channels into the node configuration; this one tells the user,
//! on the Channel itself, whether its cluster exists and its name is unambiguous.

use std::sync::Arc;

use futures_util::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::json;

use super::{condition, Context, Error, MANAGER};
use crate::crd::{Channel, ChannelStatus, PushCluster};

/// Reconciles one Channel's status.
pub async fn reconcile(channel: Arc<Channel>, ctx: Arc<Context>) -> Result<Action, Error> {
    super::instrumented("Channel", &*channel, &ctx, |ns| {
        let (object, ctx) = (&*channel, &*ctx);
        async move { reconcile_inner(object, ctx, &ns).await }
    })
    .await
}

async fn reconcile_inner(cached: &Channel, ctx: &Context, ns: &str) -> Result<Action, Error> {
    // Read afresh, as the cluster reconciler does: a stale watch must not win.
    let Some(fresh) = Api::<Channel>::namespaced(ctx.client.clone(), ns)
        .get_opt(&cached.name_any())
        .await?
    else {
        return Ok(Action::await_change());
    };
    let channel = &fresh;
    let cluster = Api::<PushCluster>::namespaced(ctx.client.clone(), ns)
        .get_opt(&channel.spec.cluster)
        .await?;
    let name = channel.channel_name();
    let api = Api::<Channel>::namespaced(ctx.client.clone(), ns);
    let rivals: Vec<String> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|c| {
            c.spec.cluster == channel.spec.cluster
                && c.channel_name() == name
                && c.name_any() != channel.name_any()
        })
        .map(|c| c.name_any())
        .collect();
    let previous = channel
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let generation = channel.metadata.generation;
    let ready = match (&cluster, rivals.is_empty()) {
        (None, _) => condition(
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
        (Some(_), false) => condition(
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
        (Some(_), true) => condition(
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
    api.patch_status(
        &channel.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(
            json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Channel", "status": status}),
        ),
    )
    .await?;
    Ok(Action::requeue(ctx.resync * 4))
}

/// What to do after a failed reconcile: record it and back off.
pub fn error_policy(channel: Arc<Channel>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(channel = %channel.name_any(), %error, "reconcile failed");
    ctx.backoff(&format!(
        "{}/{}",
        channel.namespace().unwrap_or_default(),
        channel.name_any()
    ))
}

/// Runs the Channel controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<Channel>::all(client.clone()),
        watcher::Config::default(),
    );
    let channels = controller.store();
    controller
        // A cluster appearing or disappearing changes its channels' readiness.
        .watches(
            Api::<PushCluster>::all(client),
            watcher::Config::default(),
            move |cluster| {
                let ns = cluster.namespace();
                let name = cluster.name_any();
                channels
                    .state()
                    .into_iter()
                    .filter(|c| c.spec.cluster == name && c.namespace() == ns)
                    .map(|c| ObjectRef::from_obj(&*c))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}
