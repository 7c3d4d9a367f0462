//! A platform team runs Herald with `kubectl`: every story here runs the real
//! operator binary against a real kube-apiserver, etcd and kube-controller-manager
//! (built from Go modules by e2e/k8s/build.sh), on loopback.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use herald_testkit::audit;
use herald_testkit::eventually;
use herald_testkit::kube::{apply, get_json, ControlPlane};
use herald_testkit::node::{TestNode, API_KEY, SECRET};
use herald_testkit::operator::OperatorProcess;
use herald_testkit::proxy::TcpProxy;
use herald_testkit::redis::RedisServer;
use serde_json::{json, Value};

/// Control planes are heavy on two cores: one story at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn plane_with_crds() -> ControlPlane {
    ControlPlane::start_with_crds()
        .await
        .expect("control plane with the CRDs starts")
}

fn secret(ns: &str, redis_url: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "herald", "namespace": ns},
           "stringData": {"jwt": SECRET, "api-key": API_KEY, "redis-url": redis_url}})
}

fn push_cluster(ns: &str, spec_extra: Value) -> Value {
    let mut spec = json!({
        "image": "herald-node:test",
        "redis": {"urlSecretRef": {"name": "herald", "key": "redis-url"}},
        "auth": {"jwtSecretRef": {"name": "herald", "key": "jwt"},
                 "apiKeySecretRef": {"name": "herald", "key": "api-key"}},
    });
    merge(&mut spec, spec_extra);
    json!({"apiVersion": "herald.dev/v1alpha1", "kind": "PushCluster",
           "metadata": {"name": "push", "namespace": ns}, "spec": spec})
}

fn merge(base: &mut Value, extra: Value) {
    if let (Value::Object(base), Value::Object(extra)) = (base, extra) {
        for (k, v) in extra {
            match base.get_mut(&k) {
                Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                _ => {
                    base.insert(k, v);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_install_reject_invalid_resources_and_explain_themselves() {
    let _serial = SERIAL.lock().await;
    let plane = plane_with_crds().await;
    let bad_replicas = push_cluster("default", json!({"replicas": {"min": 3, "max": 1}}));
    let err = apply(&plane, &bad_replicas).await.unwrap_err().to_string();
    assert!(
        err.contains("replicas.min must not exceed replicas.max"),
        "{err}"
    );
    let bad_access = json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Channel",
        "metadata": {"name": "x"}, "spec": {"cluster": "push", "access": "everyone"}});
    let err = apply(&plane, &bad_access).await.unwrap_err().to_string();
    assert!(
        err.contains("Unsupported value") && err.contains("everyone"),
        "{err}"
    );
    let bad_capacity = json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Channel",
        "metadata": {"name": "x"}, "spec": {"cluster": "push", "access": "user", "history": true, "capacity": -1}});
    let err = apply(&plane, &bad_capacity).await.unwrap_err().to_string();
    assert!(err.contains("capacity"), "{err}");
    let roles_without_roles = json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Channel",
        "metadata": {"name": "x"}, "spec": {"cluster": "push", "access": "roles"}});
    let err = apply(&plane, &roles_without_roles)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("access 'roles' needs at least one role"),
        "{err}"
    );
    for (spec, says) in [
        (
            json!({"access": "authenticated",
                   "coalesce": {"windowMs": 9, "key": "type", "edge": "trailing"}}),
            "windowMs",
        ),
        (
            json!({"access": "authenticated",
                   "coalesce": {"windowMs": 60001, "key": "type", "edge": "leading"}}),
            "windowMs",
        ),
        (
            json!({"access": "authenticated",
                   "coalesce": {"windowMs": 100, "key": "sku", "edge": "leading"}}),
            "Unsupported value",
        ),
        (
            json!({"access": "user",
                   "coalesce": {"windowMs": 100, "key": "type", "edge": "leading"}}),
            "a per-user channel coalesces per type and user",
        ),
        (
            json!({"access": "authenticated",
                   "coalesce": {"windowMs": 100, "key": "tag", "edge": "trailing"}}),
            "coalesce.tag names the tag when coalesce.key is tag",
        ),
        (
            json!({"access": "authenticated",
                   "coalesce": {"windowMs": 100, "key": "type", "tag": "sku",
                                "edge": "trailing"}}),
            "coalesce.tag names the tag when coalesce.key is tag",
        ),
        (
            json!({"access": "authenticated",
                   "coalesce": {"windowMs": 100, "key": "tag", "tag": "CORP\\sku",
                                "edge": "trailing"}}),
            "spec.coalesce.tag",
        ),
    ] {
        let mut spec = spec;
        spec["cluster"] = json!("push");
        let bad = json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Channel",
            "metadata": {"name": "x"}, "spec": spec});
        let err = apply(&plane, &bad).await.unwrap_err().to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }

    apply(&plane, &push_cluster("default", json!({})))
        .await
        .expect("valid PushCluster");
    let underscored = json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Channel",
        "metadata": {"name": "stock-levels"}, "spec": {"cluster": "push", "name": "stock_levels", "access": "authenticated"}});
    apply(&plane, &underscored)
        .await
        .expect("channel names may use underscores");
    let by_sku = json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Channel",
        "metadata": {"name": "stock-by-sku"}, "spec": {"cluster": "push", "access": "authenticated",
        "coalesce": {"windowMs": 100, "key": "tag", "tag": "sku", "edge": "trailing"}}});
    apply(&plane, &by_sku)
        .await
        .expect("a tag key with its tag");
    let table = plane.kubectl(["get", "pushclusters"]).await.unwrap();
    for column in [
        "READY",
        "REPLICAS",
        "DESIRED",
        "CONNECTIONS",
        "BROKER",
        "AGE",
    ] {
        assert!(table.contains(column), "{table}");
    }
    let channels = plane.kubectl(["get", "hch"]).await.unwrap();
    assert!(
        channels.contains("CLUSTER") && channels.contains("stock-levels"),
        "{channels}"
    );
    let explained = plane
        .kubectl([
            "explain",
            "pushcluster.spec.scaling.targetConnectionsPerNode",
        ])
        .await
        .unwrap();
    assert!(
        explained.contains("Connections each node should carry"),
        "{explained}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_creates_repairs_updates_and_cleans_up_a_cluster() {
    let _serial = SERIAL.lock().await;
    let plane = plane_with_crds().await;
    let _operator_runs = {
        let mut op = OperatorProcess::start(&plane.kubeconfig_path(), "op-a", &["--resync", "2s"]);
        assert!(op.wait_leading(Duration::from_secs(30)));
        op
    };
    plane
        .kubectl(["create", "namespace", "shop"])
        .await
        .unwrap();
    apply(&plane, &secret("shop", "redis://127.0.0.1:1"))
        .await
        .unwrap();
    apply(
        &plane,
        &push_cluster("shop", json!({"replicas": {"min": 2, "max": 5}})),
    )
    .await
    .unwrap();

    let deployment = eventually("the node Deployment", Duration::from_secs(30), || {
        get_json(&plane, &["deployment", "push-node", "-n", "shop"])
    })
    .await;
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        deployment["metadata"]["ownerReferences"][0]["kind"],
        "PushCluster"
    );
    for kind in ["service", "serviceaccount", "poddisruptionbudget"] {
        assert!(
            get_json(&plane, &[kind, "push-node", "-n", "shop"])
                .await
                .is_some(),
            "{kind}"
        );
    }
    let config = get_json(&plane, &["configmap", "push-node-config", "-n", "shop"])
        .await
        .unwrap();
    let channels: Value =
        serde_json::from_str(config["data"]["channels.json"].as_str().unwrap()).unwrap();
    assert_eq!(
        channels["channels"].as_array().unwrap().len(),
        4,
        "the legacy channels"
    );

    // Status follows: the broker is unreachable, and observedGeneration is recorded.
    let status = eventually("status", Duration::from_secs(30), || async {
        let pc = get_json(&plane, &["pushcluster", "push", "-n", "shop"]).await?;
        (pc["status"]["observedGeneration"] == pc["metadata"]["generation"])
            .then(|| pc["status"].clone())
    })
    .await;
    let broker = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "BrokerHealthy")
        .unwrap();
    assert_eq!(
        (broker["status"].as_str(), broker["reason"].as_str()),
        (Some("False"), Some("RedisUnreachable"))
    );

    // Editing the spec updates the owned objects.
    plane
        .kubectl([
            "patch",
            "pushcluster",
            "push",
            "-n",
            "shop",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"limits":{"inboundBurst":50}}}"#,
        ])
        .await
        .unwrap();
    eventually(
        "the new limit in the ConfigMap",
        Duration::from_secs(30),
        || async {
            let cm = get_json(&plane, &["configmap", "push-node-config", "-n", "shop"]).await?;
            (cm["data"]["HERALD_INBOUND_BURST"] == "50").then_some(())
        },
    )
    .await;

    // A deleted Service comes back.
    plane
        .kubectl(["delete", "service", "push-node", "-n", "shop"])
        .await
        .unwrap();
    eventually(
        "the Service to be recreated",
        Duration::from_secs(30),
        || get_json(&plane, &["service", "push-node", "-n", "shop"]),
    )
    .await;

    // Channels land in the node configuration and report readiness.
    apply(&plane, &json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Channel",
        "metadata": {"name": "stock-levels", "namespace": "shop"},
        "spec": {"cluster": "push", "name": "stock_levels", "access": "authenticated", "history": true}}))
    .await
    .unwrap();
    apply(
        &plane,
        &json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Channel",
        "metadata": {"name": "orphan", "namespace": "shop"},
        "spec": {"cluster": "nope", "access": "public"}}),
    )
    .await
    .unwrap();
    eventually(
        "stock_levels in channels.json",
        Duration::from_secs(30),
        || async {
            let cm = get_json(&plane, &["configmap", "push-node-config", "-n", "shop"]).await?;
            cm["data"]["channels.json"]
                .as_str()?
                .contains("stock_levels")
                .then_some(())
        },
    )
    .await;
    let ready = |name: &'static str| {
        let plane = &plane;
        async move {
            let ch = get_json(plane, &["channel", name, "-n", "shop"]).await?;
            let cond = ch["status"]["conditions"].as_array()?.first()?.clone();
            Some((
                cond["status"].as_str()?.to_owned(),
                cond["reason"].as_str()?.to_owned(),
            ))
        }
    };
    let (status, _) = eventually("channel ready", Duration::from_secs(30), || {
        ready("stock-levels")
    })
    .await;
    assert_eq!(status, "True");
    let (status, reason) =
        eventually("orphan status", Duration::from_secs(30), || ready("orphan")).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ClusterNotFound")
    );

    // kubectl scale works within bounds, and the bounds are enforced.
    plane
        .kubectl(["scale", "pushcluster", "push", "-n", "shop", "--replicas=4"])
        .await
        .unwrap();
    eventually("4 replicas", Duration::from_secs(30), || async {
        let d = get_json(&plane, &["deployment", "push-node", "-n", "shop"]).await?;
        (d["spec"]["replicas"] == 4).then_some(())
    })
    .await;
    let err = plane
        .kubectl(["scale", "pushcluster", "push", "-n", "shop", "--replicas=9"])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("replicas.desired must lie within"), "{err}");

    // Deleting the cluster garbage-collects what it owned.
    plane
        .kubectl(["delete", "pushcluster", "push", "-n", "shop"])
        .await
        .unwrap();
    eventually(
        "owned objects to be collected",
        Duration::from_secs(60),
        || async {
            let gone = get_json(&plane, &["deployment", "push-node", "-n", "shop"])
                .await
                .is_none()
                && get_json(&plane, &["configmap", "push-node-config", "-n", "shop"])
                    .await
                    .is_none();
            gone.then_some(())
        },
    )
    .await;
    // And a namespace with Channels in it deletes completely.
    plane
        .kubectl(["delete", "namespace", "shop", "--wait=false"])
        .await
        .unwrap();
    eventually("the namespace to go", Duration::from_secs(90), || async {
        get_json(&plane, &["namespace", "shop"])
            .await
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_count_follows_real_heartbeats_and_channels_reach_running_nodes() {
    let _serial = SERIAL.lock().await;
    let plane = plane_with_crds().await;
    let redis = RedisServer::start_standalone().await.expect("Redis starts");
    let mut operator =
        OperatorProcess::start(&plane.kubeconfig_path(), "op-a", &["--resync", "1s"]);
    assert!(operator.wait_leading(Duration::from_secs(30)));
    apply(&plane, &secret("default", &redis.url()))
        .await
        .unwrap();
    apply(
        &plane,
        &push_cluster(
            "default",
            json!({
                "replicas": {"min": 1, "max": 5},
                "scaling": {"targetConnectionsPerNode": 10, "scaleDownStabilizationSeconds": 0},
            }),
        ),
    )
    .await
    .unwrap();
    // kube-controller-manager creates the pods (nothing runs them here): run one real
    // node per pod, named like it, as the kubelet would.
    let pod = eventually("a node pod", Duration::from_secs(60), || async {
        let pods = get_json(&plane, &["pods", "-l", "app.kubernetes.io/instance=push"]).await?;
        pods["items"].as_array()?.first()?["metadata"]["name"]
            .as_str()
            .map(str::to_owned)
    })
    .await;
    // Removed when the test ends (declared before the node, so dropped after it).
    let channels_dir = tempfile::Builder::new()
        .prefix("herald-op-channels-")
        .tempdir()
        .expect("a temporary directory");
    let channels_file = channels_dir.path().join("channels.json");
    let sync_channels = || async {
        let cm = get_json(&plane, &["configmap", "push-node-config"]).await?;
        let text = cm["data"]["channels.json"].as_str()?.to_owned();
        std::fs::write(&channels_file, text).ok()
    };
    eventually("the channel file", Duration::from_secs(30), sync_channels).await;
    let url = redis.url();
    let node = TestNode::start(&[
        "--redis-url",
        &url,
        "--node-id",
        &pod,
        "--heartbeat-interval",
        "200ms",
        "--channels",
        channels_file.to_str().unwrap(),
        "--channels-reload",
        "200ms",
        "--max-connections-per-user",
        "0",
    ]);
    let mut clients = Vec::new();
    for i in 0..35 {
        clients.push(node.connect(&format!("u{i}")).await);
    }
    // 35 connections at 10 per node: the operator scales 1 → 2 → 4 (doubling per step).
    eventually("scale-up to 4", Duration::from_secs(60), || async {
        let d = get_json(&plane, &["deployment", "push-node"]).await?;
        (d["spec"]["replicas"] == 4).then_some(())
    })
    .await;
    let annotated = eventually("the pod deletion cost", Duration::from_secs(30), || async {
        let p = get_json(&plane, &["pod", &pod]).await?;
        p["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"]
            .as_str()
            .map(str::to_owned)
    })
    .await;
    assert_eq!(annotated, "35");
    let status = get_json(&plane, &["pushcluster", "push"]).await.unwrap();
    assert_eq!(status["status"]["connections"], 35);

    // A new Channel reaches the running node without a restart.
    apply(&plane, &json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Channel",
        "metadata": {"name": "flash-sales"}, "spec": {"cluster": "push", "access": "authenticated"}}))
    .await
    .unwrap();
    let mut client = node.connect("shopper").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        sync_channels().await;
        client
            .send_json(json!({"type": "subscribe", "channels": ["flash-sales"]}))
            .await;
        let reply = client.recv_type("subscription_success").await;
        if reply["channels"] == json!(["flash-sales"]) {
            break;
        }
        let refusal = client.recv_type("error").await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node never served flash-sales: {refusal}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // A Channel with deletionPolicy Purge takes its history with it.
    apply(&plane, &json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Channel",
        "metadata": {"name": "drops"},
        "spec": {"cluster": "push", "access": "authenticated", "history": true, "deletionPolicy": "Purge"}}))
    .await
    .unwrap();
    eventually("the purge finalizer", Duration::from_secs(30), || async {
        let ch = get_json(&plane, &["channel", "drops"]).await?;
        ch["metadata"]["finalizers"]
            .as_array()?
            .iter()
            .any(|f| f == "herald.dev/purge-history")
            .then_some(())
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        sync_channels().await;
        let (status, _) = node
            .publish(&json!({"channel": "drops", "type": "drop", "data": {"n": 1}}))
            .await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node never served drops"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let keys = redis
        .cli(&["--scan", "--pattern", "herald:{c:drops}*"])
        .await
        .unwrap();
    assert!(keys.contains("herald:{c:drops}:log"), "{keys}");
    plane
        .kubectl(["delete", "channel", "drops", "--wait=true", "--timeout=60s"])
        .await
        .unwrap();
    let keys = redis
        .cli(&["--scan", "--pattern", "herald:{c:drops}*"])
        .await
        .unwrap();
    assert!(keys.trim().is_empty(), "history left behind: {keys}");

    // Connections leave: with no stabilization window the cluster shrinks to its minimum.
    drop(clients);
    drop(client);
    eventually("scale-down to 1", Duration::from_secs(60), || async {
        let d = get_json(&plane, &["deployment", "push-node"]).await?;
        (d["spec"]["replicas"] == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    let _serial = SERIAL.lock().await;
    let mut plane = plane_with_crds().await;
    let mut first = OperatorProcess::start(
        &plane.kubeconfig_path(),
        "op-a",
        &["--lease-duration", "3s", "--resync", "1s"],
    );
    assert!(first.wait_leading(Duration::from_secs(30)));
    let mut standby = OperatorProcess::start(
        &plane.kubeconfig_path(),
        "op-b",
        &["--lease-duration", "3s", "--resync", "1s"],
    );
    assert!(
        !standby.wait_leading(Duration::from_secs(4)),
        "two leaders at once"
    );
    let lease = get_json(&plane, &["lease", "herald-operator"])
        .await
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "op-a");

    first.kill();
    assert!(
        standby.wait_leading(Duration::from_secs(15)),
        "the standby took over"
    );
    apply(&plane, &secret("default", "redis://127.0.0.1:1"))
        .await
        .unwrap();
    apply(&plane, &push_cluster("default", json!({})))
        .await
        .unwrap();
    eventually("the new leader reconciles", Duration::from_secs(30), || {
        get_json(&plane, &["deployment", "push-node"])
    })
    .await;

    // The API server restarting does not stop the operator.
    plane.restart_apiserver().await.expect("apiserver restarts");
    plane
        .kubectl([
            "patch",
            "pushcluster",
            "push",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"drainSeconds":33}}"#,
        ])
        .await
        .unwrap();
    eventually(
        "reconciled after the restart",
        Duration::from_secs(60),
        || async {
            let cm = get_json(&plane, &["configmap", "push-node-config"]).await?;
            (cm["data"]["HERALD_DRAIN_WINDOW"] == "33s").then_some(())
        },
    )
    .await;
}

/// A kubeconfig for the service account `name` (cluster-admin), so the audit log tells
/// replicas apart: they write as `system:serviceaccount:default:NAME`.
async fn replica_kubeconfig(plane: &ControlPlane, name: &str) -> PathBuf {
    plane
        .kubectl(["create", "serviceaccount", name])
        .await
        .unwrap();
    plane
        .kubectl([
            "create",
            "clusterrolebinding",
            name,
            "--clusterrole=cluster-admin",
            &format!("--serviceaccount=default:{name}"),
        ])
        .await
        .unwrap();
    let token = plane
        .kubectl(["create", "token", name, "--duration=2h"])
        .await
        .unwrap();
    plane.kubeconfig_for_token(&token, name).unwrap()
}

fn user(name: &str) -> String {
    format!("system:serviceaccount:default:{name}")
}

async fn patch_drain(plane: &ControlPlane, seconds: u32) {
    plane
        .kubectl([
            "patch",
            "pushcluster",
            "push",
            "--type",
            "merge",
            "-p",
            &format!(r#"{{"spec":{{"drainSeconds":{seconds}}}}}"#),
        ])
        .await
        .unwrap();
    eventually("the leader reconciles", Duration::from_secs(30), || async {
        let cm = get_json(plane, &["configmap", "push-node-config"]).await?;
        (cm["data"]["HERALD_DRAIN_WINDOW"] == format!("{seconds}s")).then_some(())
    })
    .await;
}

/// The overlap a lease alone does not prevent comes from a leader that keeps running but
/// cannot renew: here op-a reaches the apiserver through a proxy that black-holes its open
/// connections (its renewal and its reconciles hang, as on a half-dead connection) and
/// refuses new ones, then lets new ones through again. A SIGSTOPped leader cannot write
/// while frozen; the risk is the moment it thaws, before it notices the lease is gone, so
/// op-b is frozen next, past the lease, and thawed once op-a leads again.
///
/// The witness is the apiserver's audit log, not the operators' own account: each replica
/// writes as its own service account, and every write of one (Lease aside) must come
/// after its own latest successful Lease write and before the other's next one. Requests
/// black-holed by the proxy never arrive, so this checks that no request leaves a replica
/// after it stepped down (in-flight ones delayed past the margin are out of reach: see
/// operator/src/leader.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_or_frozen_leader_stops_before_the_standby_leads() {
    let _serial = SERIAL.lock().await;
    let plane = plane_with_crds().await;
    let a_direct = replica_kubeconfig(&plane, "op-a").await;
    let b_config = replica_kubeconfig(&plane, "op-b").await;
    let server = plane.server_url();
    let proxy = TcpProxy::start(server.trim_start_matches("https://").parse().unwrap())
        .await
        .unwrap();
    let a_config = a_direct.with_file_name("op-a-proxied.kubeconfig");
    let text = std::fs::read_to_string(&a_direct).unwrap();
    std::fs::write(
        &a_config,
        text.replace(&server, &format!("https://{}", proxy.addr())),
    )
    .unwrap();
    // D = 6 s: the holder steps down 4 s after its last renewal began; retries every 1.2 s.
    let flags = ["--lease-duration", "6s", "--resync", "1s"];
    let mut a = OperatorProcess::start(&a_config, "op-a", &flags);
    assert!(a.wait_leading(Duration::from_secs(30)));
    let mut b = OperatorProcess::start(&b_config, "op-b", &flags);
    apply(&plane, &secret("default", "redis://127.0.0.1:1"))
        .await
        .unwrap();
    apply(&plane, &push_cluster("default", json!({})))
        .await
        .unwrap();
    patch_drain(&plane, 31).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // op-a is cut off: it must stop within the renew deadline, op-b then takes over.
    let cut = Instant::now();
    proxy.stall();
    assert!(
        a.wait_for_line("stopped leading (Deadline)", Duration::from_secs(10)),
        "op-a kept leading while cut off"
    );
    let stepped_down = cut.elapsed();
    assert!(
        b.wait_leading(Duration::from_secs(20)),
        "op-b did not take over"
    );
    let took_over = cut.elapsed();
    assert!(
        stepped_down <= Duration::from_millis(4500),
        "{stepped_down:?}"
    );
    // Back online (its hung connections stay hung), op-a sees op-b's lease and stays idle.
    proxy.heal();
    patch_drain(&plane, 32).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // op-b is frozen past the lease; op-a takes over; op-b thaws and must not write.
    let frozen = Instant::now();
    b.signal("STOP");
    let a_again = a.wait_leading(Duration::from_secs(20));
    let refrozen = frozen.elapsed();
    b.signal("CONT");
    assert!(a_again, "op-a did not take over from the frozen op-b");
    assert!(
        b.wait_for_line("stopped leading (Deadline)", Duration::from_secs(5)),
        "op-b did not notice it lost the lease"
    );
    patch_drain(&plane, 33).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let writes = audit::writes(&plane.audit_log_path()).unwrap();
    let (ua, ub) = (user("op-a"), user("op-b"));
    let overlaps = audit::overlapping(&writes, "herald-operator", &[&ua, &ub]);
    assert!(
        overlaps.is_empty(),
        "two leaders wrote at once: {overlaps:#?}"
    );
    // The witness saw both hand-overs, each after the old leader's last write.
    let hand_overs = audit::hand_overs(&writes, "herald-operator", &[&ua, &ub]);
    let pairs: Vec<_> = hand_overs
        .iter()
        .map(|h| (h.from.as_str(), h.to.as_str()))
        .collect();
    // (More hand-overs than these two are allowed: a slow apiserver may cost a renewal.)
    let a_to_b = pairs.iter().position(|p| *p == (ua.as_str(), ub.as_str()));
    let b_to_a = pairs.iter().rposition(|p| *p == (ub.as_str(), ua.as_str()));
    assert!(a_to_b.is_some() && a_to_b < b_to_a, "{pairs:?}");
    assert!(hand_overs.iter().all(|h| h.quiet > 0.0), "{hand_overs:#?}");
    println!(
        "leader cut off: stepped down after {stepped_down:.1?}, standby led after {took_over:.1?}; \
         frozen leader replaced after {refrozen:.1?}; the apiserver saw the old leader's last \
         write {:.1} s and {:.1} s before the new one took the lease, no overlap in {} writes",
        hand_overs[a_to_b.unwrap()].quiet,
        hand_overs[b_to_a.unwrap()].quiet,
        writes.len()
    );
}

/// A rollout SIGTERMs the leader: it stops its controllers, releases the Lease and exits,
/// and the standby leads at its next retry, not a whole lease later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_leader_hands_the_lease_over_at_once() {
    let _serial = SERIAL.lock().await;
    let plane = plane_with_crds().await;
    // The default lease: 15 s, so the standby retries every 3 s.
    let mut a = OperatorProcess::start(&plane.kubeconfig_path(), "op-a", &[]);
    assert!(a.wait_leading(Duration::from_secs(30)));
    let mut b = OperatorProcess::start(&plane.kubeconfig_path(), "op-b", &[]);
    assert!(
        !b.wait_leading(Duration::from_secs(4)),
        "two leaders at once"
    );

    let terminated = Instant::now();
    a.signal("TERM");
    assert!(a.wait_for_line(
        "herald-operator released the lease",
        Duration::from_secs(15)
    ));
    let status = a.wait_exit(Duration::from_secs(5)).expect("op-a exits");
    assert!(status.success(), "{status}");
    let exited = terminated.elapsed();
    assert!(
        b.wait_leading(Duration::from_secs(15)),
        "op-b did not take over"
    );
    let took_over = terminated.elapsed();
    let lease = get_json(&plane, &["lease", "herald-operator"])
        .await
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "op-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    assert!(
        took_over < Duration::from_secs(3 + 3),
        "the standby took {took_over:?}"
    );
    println!(
        "SIGTERM to the leader: it released the lease and exited in {exited:.1?}, the standby led after {took_over:.1?}"
    );
}

/// Channels of one PushCluster, `count` of them, named `feed-0` …: channel names in
/// the characters the CRD allows (colons, `@`, dots), one at the 128-character limit,
/// and the last two sharing a channel name (so they are rivals).
fn many_channels(count: usize) -> Value {
    let items: Vec<Value> = (0..count)
        .map(|i| {
            let name = match i {
                0 => format!("{}:{i}", "x".repeat(126 - i.to_string().len())),
                _ if i + 1 == count => format!("room:CORP_alice@shop.{}", count - 2),
                _ => format!("room:CORP_alice@shop.{i}"),
            };
            json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Channel",
                   "metadata": {"name": format!("feed-{i}"), "namespace": "default"},
                   "spec": {"cluster": "push", "name": name, "access": "authenticated"}})
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// Requests in `log` by `user` on `resource` with `verb`.
fn count(log: &[audit::Request], user: &str, verb: &str, resource: &str) -> usize {
    log.iter()
        .filter(|r| r.user == user && r.verb == verb && r.resource == resource)
        .count()
}

/// One `kubectl scale` of a PushCluster with 200 Channels costs the operator a bounded
/// number of API calls, not one reconcile and one LIST per Channel per cluster change:
/// counted by the apiserver's audit log (the operator runs as its own service account)
/// and by the operator's own reconcile counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_a_cluster_with_many_channels_costs_a_bounded_number_of_api_calls() {
    const CHANNELS: usize = 200;
    let _serial = SERIAL.lock().await;
    let plane = plane_with_crds().await;
    apply(&plane, &secret("default", "redis://127.0.0.1:1"))
        .await
        .unwrap();
    apply(&plane, &push_cluster("default", json!({})))
        .await
        .unwrap();
    // In batches, before the operator runs: 200 objects take kubectl a while.
    let all = many_channels(CHANNELS);
    for batch in all["items"].as_array().unwrap().chunks(50) {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": batch});
        plane
            .kubectl_stdin(["create", "-f", "-"], &list.to_string())
            .await
            .unwrap();
    }
    let kubeconfig = replica_kubeconfig(&plane, "op-count").await;
    let op = OperatorProcess::start(&kubeconfig, "op-count", &["--resync", "1s"]);
    let who = user("op-count");

    // Settled: every Channel reports, and the rivals see each other.
    eventually(
        "every Channel reports its status",
        Duration::from_secs(180),
        || async {
            let list = get_json(&plane, &["channels"]).await?;
            let items = list["items"].as_array()?;
            let ready = |c: &Value| {
                c["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                    .map(|c| c["reason"].as_str().unwrap_or_default().to_owned())
            };
            let reasons: Vec<_> = items.iter().filter_map(ready).collect();
            let duplicates = reasons.iter().filter(|r| *r == "DuplicateName").count();
            let configured = reasons.iter().filter(|r| *r == "Configured").count();
            (duplicates == 2 && configured == CHANNELS - 2).then_some(())
        },
    )
    .await;
    eventually("the node deployment", Duration::from_secs(30), || async {
        let d = get_json(&plane, &["deployment", "push-node"]).await?;
        (d["spec"]["replicas"] == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let before = audit::requests(&plane.audit_log_path()).unwrap().len();
    let reconciles = |kind: &'static str| {
        let op = &op;
        async move {
            op.counter(
                "herald_operator_reconciles_total",
                &format!("kind=\"{kind}\""),
            )
            .await
        }
    };
    let (channels_before, clusters_before) =
        (reconciles("Channel").await, reconciles("PushCluster").await);
    plane
        .kubectl(["scale", "pushcluster", "push", "--replicas=3"])
        .await
        .unwrap();
    eventually(
        "the scale reaches the Deployment",
        Duration::from_secs(30),
        || async {
            let d = get_json(&plane, &["deployment", "push-node"]).await?;
            (d["spec"]["replicas"] == 3).then_some(())
        },
    )
    .await;
    // Long enough for the pods, the Deployment's status and a few resyncs to follow.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let log = audit::requests(&plane.audit_log_path()).unwrap();
    let after = &log[before..];
    let channel_reconciles = reconciles("Channel").await - channels_before;
    let cluster_reconciles = reconciles("PushCluster").await - clusters_before;
    let (lists, gets) = (
        count(after, &who, "list", "channels"),
        count(after, &who, "get", "channels"),
    );
    let channel_writes = count(after, &who, "patch", "channels");
    let (cluster_gets, cluster_lists) = (
        count(after, &who, "get", "pushclusters"),
        count(after, &who, "list", "pushclusters"),
    );
    println!(
        "one scale with {CHANNELS} Channels: {channel_reconciles} Channel reconciles, \
         {cluster_reconciles} PushCluster reconciles; Channel LISTs {lists}, GETs {gets}, \
         patches {channel_writes}; PushCluster GETs {cluster_gets}, LISTs {cluster_lists}"
    );
    assert!(cluster_reconciles >= 1, "the scale was not reconciled");
    assert_eq!(lists, 0, "Channel LISTs after one scale");
    assert_eq!(gets, 0, "Channel GETs after one scale");
    assert!(
        channel_writes <= 2,
        "{channel_writes} Channel patches after one scale"
    );
    assert!(
        channel_reconciles <= 10,
        "{channel_reconciles} Channel reconciles after one scale"
    );
    assert_eq!(cluster_lists, 0, "PushCluster LISTs after one scale");
    assert!(
        cluster_gets <= cluster_reconciles as usize,
        "{cluster_gets} PushCluster GETs for {cluster_reconciles} reconciles"
    );

    // The stores still follow changes: renaming one rival clears both; a missing
    // cluster shows on its Channels.
    plane
        .kubectl([
            "patch",
            "channel",
            &format!("feed-{}", CHANNELS - 1),
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"name":"room:CORP_alice@shop.renamed"}}"#,
        ])
        .await
        .unwrap();
    let reason = |name: String| {
        let plane = &plane;
        async move {
            let c = get_json(plane, &["channel", &name]).await?;
            c["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?["reason"]
                .as_str()
                .map(str::to_owned)
        }
    };
    eventually(
        "the former rival is Configured",
        Duration::from_secs(30),
        || async {
            (reason(format!("feed-{}", CHANNELS - 2)).await? == "Configured").then_some(())
        },
    )
    .await;
    plane
        .kubectl(["delete", "pushcluster", "push", "--wait=true"])
        .await
        .unwrap();
    eventually(
        "ClusterNotFound on the Channels",
        Duration::from_secs(30),
        || async {
            let reasons = [
                reason("feed-0".into()).await?,
                reason("feed-7".into()).await?,
            ];
            reasons.iter().all(|r| r == "ClusterNotFound").then_some(())
        },
    )
    .await;
}
