//! A platform team runs Herald on a cluster whose pods really run: a real kube-apiserver,
//! etcd and kube-controller-manager (built from Go modules by e2e/k8s/build.sh), the real
//! operator, a real Redis, and the kubelet stand-in (`herald_testkit::kubelet`) turning every
//! Pod the controllers create into a real `herald-node` or `herald-operator` process on its
//! own loopback address. Nothing is started by hand that a cluster would start itself.

use std::time::Duration;

use herald_testkit::eventually;
use herald_testkit::kube::{apply, get_json, ControlPlane};
use herald_testkit::kubelet::{Kubelet, RunningPod, NODE_NAME};
use herald_testkit::node::{token, Client, Ending, API_KEY, SECRET};
use herald_testkit::operator::OperatorProcess;
use herald_testkit::redis::RedisServer;
use serde_json::{json, Value};

/// Control planes are heavy on two cores: one story at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The node pods of the PushCluster `push`.
const NODES: &str = "app.kubernetes.io/name=herald-node,app.kubernetes.io/instance=push";
/// Pods start, get probed every 5 s (the operator's readiness probe) and drain: generous.
const WAIT: Duration = Duration::from_secs(90);

fn repo_path(relative: &str) -> String {
    format!("{}/../{relative}", env!("CARGO_MANIFEST_DIR"))
}

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

fn push_cluster(ns: &str, min: u32, max: u32) -> Value {
    json!({"apiVersion": "herald.dev/v1alpha1", "kind": "PushCluster",
    "metadata": {"name": "push", "namespace": ns},
    "spec": {
        "image": "registry.example/herald/herald-node:test",
        "replicas": {"min": min, "max": max},
        "drainSeconds": 2,
        "redis": {"urlSecretRef": {"name": "herald", "key": "redis-url"}},
        "auth": {"jwtSecretRef": {"name": "herald", "key": "jwt"},
                 "apiKeySecretRef": {"name": "herald", "key": "api-key"}},
    }})
}

/// A WebSocket client of the node in `pod`, on the pod's own address.
async fn connect(pod: &RunningPod, user: &str) -> Client {
    let url = format!(
        "ws://{}:8080/ws/notifications/?token={}",
        pod.ip,
        token(user)
    );
    let (ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    Client { ws }
}

fn condition(object: &Value, type_: &str) -> Option<String> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?["status"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_pods_become_real_nodes_that_scale_drain_and_restart() {
    let _serial = SERIAL.lock().await;
    let plane = plane_with_crds().await;
    let redis = RedisServer::start_standalone().await.expect("Redis starts");
    let mut operator =
        OperatorProcess::start(&plane.kubeconfig_path(), "op-a", &["--resync", "1s"]);
    assert!(operator.wait_leading(Duration::from_secs(30)));
    let kubelet = Kubelet::start(&plane, &["default"])
        .await
        .expect("kubelet stand-in starts");
    apply(&plane, &secret("default", &redis.url()))
        .await
        .unwrap();
    apply(&plane, &push_cluster("default", 2, 4)).await.unwrap();

    // Two pods, two processes, each with the operator's rendered configuration.
    let pods = kubelet.wait_ready(NODES, 2, WAIT).await.unwrap();
    assert_ne!(pods[0].ip, pods[1].ip, "each pod has its own address");
    let config = get_json(&plane, &["configmap", "push-node-config"])
        .await
        .unwrap();
    let rendered = config["data"]["channels.json"].as_str().unwrap();
    for pod in &pods {
        let mut client = connect(pod, "alice").await;
        client.assert_alive().await;
        let on_disk = std::fs::read_to_string(pod.dir.join("volumes/config/channels.json"))
            .expect("channels.json is in the pod's config volume");
        assert_eq!(on_disk, rendered);
        let api = get_json(&plane, &["pod", &pod.name]).await.unwrap();
        assert_eq!(api["spec"]["nodeName"], NODE_NAME);
        assert_eq!(api["status"]["podIP"], pod.pod_ip.to_string());
        assert_eq!(api["status"]["phase"], "Running");
        assert_eq!(condition(&api, "Ready").as_deref(), Some("True"));
        let log = kubelet.logs(&pod.name);
        let listening = format!("herald-node listening on {}:8080", pod.ip);
        assert!(
            log.contains(&listening),
            "0.0.0.0:8080 became the pod's address: {log}"
        );
    }
    eventually("2 available replicas", WAIT, || async {
        let d = get_json(&plane, &["deployment", "push-node"]).await?;
        (d["status"]["availableReplicas"] == 2).then_some(())
    })
    .await;
    // The Service's EndpointSlice lists both pods under their cluster addresses, and the
    // pod network routes those back to where the processes listen.
    let mut expected: Vec<String> = pods.iter().map(|p| p.pod_ip.to_string()).collect();
    expected.sort();
    eventually("the Service's endpoints", WAIT, || async {
        let slices = get_json(
            &plane,
            &[
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=push-node",
            ],
        )
        .await?;
        let mut ready: Vec<String> = slices["items"]
            .as_array()?
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .filter_map(|e| e["addresses"][0].as_str().map(str::to_owned))
            .collect();
        ready.sort();
        (ready == expected).then_some(())
    })
    .await;
    let network = kubelet.pod_network();
    for pod in &pods {
        assert_eq!(
            network.resolve(pod.pod_ip.into()).unwrap(),
            std::net::IpAddr::from(pod.ip)
        );
    }
    eventually("the operator counting 2 ready nodes", WAIT, || async {
        let pc = get_json(&plane, &["pushcluster", "push"]).await?;
        (pc["status"]["readyReplicas"] == 2).then_some(())
    })
    .await;

    // A new Channel reaches the running nodes through the ConfigMap volume, live.
    apply(&plane, &json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Channel",
        "metadata": {"name": "flash-sales"}, "spec": {"cluster": "push", "access": "authenticated"}}))
    .await
    .unwrap();
    let channel_file = pods[0].dir.join("volumes/config/channels.json");
    eventually("flash-sales in the mounted file", WAIT, || async {
        let text = std::fs::read_to_string(&channel_file).ok()?;
        text.contains("flash-sales").then_some(())
    })
    .await;
    let mut shopper = connect(&pods[0], "shopper").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        shopper
            .send_json(json!({"type": "subscribe", "channels": ["flash-sales"]}))
            .await;
        let reply = shopper.recv_type("subscription_success").await;
        if reply["channels"] == json!(["flash-sales"]) {
            break;
        }
        let refusal = shopper.recv_type("error").await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node never served flash-sales: {refusal}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Scaling the cluster starts a third process.
    plane
        .kubectl(["scale", "pushcluster", "push", "--replicas=3"])
        .await
        .unwrap();
    let three = kubelet.wait_ready(NODES, 3, WAIT).await.unwrap();

    // Deleting a pod drains its node: its client is told to reconnect elsewhere (1012), and
    // the ReplicaSet's replacement runs.
    let victim = three[0].clone();
    let mut leaving = connect(&victim, "leaving").await;
    leaving.assert_alive().await;
    plane
        .kubectl(["delete", "pod", &victim.name, "--wait=false"])
        .await
        .unwrap();
    match leaving.ending(Duration::from_secs(30)).await {
        Ending::Closed(Some(1012), _) => {}
        other => panic!("the draining node closed with {other:?}\n{kubelet:?}"),
    }
    let after = kubelet.wait_ready(NODES, 3, WAIT).await.unwrap();
    assert!(after.iter().all(|p| p.name != victim.name), "{after:?}");
    eventually("the deleted pod to leave the API", WAIT, || async {
        get_json(&plane, &["pod", &victim.name])
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        !std::path::Path::new(&format!("/proc/{}", victim.pid)).exists(),
        "the deleted pod's process is gone"
    );

    // A crashed node is restarted in place, and the API counts the restart.
    let crashing = after[0].clone();
    kubelet.kill(&crashing.name).unwrap();
    let restarted = eventually("the crashed node restarted", WAIT, || async {
        kubelet
            .running(NODES)
            .into_iter()
            .find(|p| p.name == crashing.name && p.restarts == 1 && p.ready)
    })
    .await;
    assert_ne!(restarted.pid, crashing.pid);
    assert_eq!(restarted.ip, crashing.ip, "the pod keeps its address");
    connect(&restarted, "back").await.assert_alive().await;
    eventually("restartCount 1 in the API", WAIT, || async {
        let p = get_json(&plane, &["pod", &crashing.name]).await?;
        (p["status"]["containerStatuses"][0]["restartCount"] == 1
            && condition(&p, "Ready").as_deref() == Some("True"))
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_deployment_runs_as_its_service_account_and_leads() {
    let _serial = SERIAL.lock().await;
    let plane = plane_with_crds().await;
    let kubelet = Kubelet::start(&plane, &["herald-system"])
        .await
        .expect("kubelet stand-in starts");
    plane
        .kubectl(["create", "namespace", "herald-system"])
        .await
        .unwrap();
    plane
        .kubectl(["apply", "-f", &repo_path("operator/deploy/rbac.yaml")])
        .await
        .unwrap();
    let labels = json!({"app.kubernetes.io/name": "herald-operator"});
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    apply(&plane, &json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "herald-operator", "namespace": "herald-system"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "serviceAccountName": "herald-operator",
                "containers": [{"name": "operator", "image": "herald-operator:test",
                    "args": ["--metrics-addr=0.0.0.0:8080", "--resync=2s"],
                    "env": [{"name": "POD_NAME", "valueFrom": field("metadata.name")},
                            {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")}],
                    "ports": [{"name": "metrics", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 1}}]}}}}))
    .await
    .unwrap();

    let pod = kubelet
        .wait_ready("app.kubernetes.io/name=herald-operator", 1, WAIT)
        .await
        .unwrap()
        .remove(0);
    let kubeconfig = std::fs::read_to_string(pod.dir.join("kubeconfig")).unwrap();
    assert!(!kubeconfig.contains(plane.token()), "not the admin token");
    let lease = eventually("the operator pod to lead", WAIT, || async {
        let lease = get_json(&plane, &["lease", "herald-operator", "-n", "herald-system"]).await?;
        (lease["spec"]["holderIdentity"] == pod.name.as_str()).then_some(lease)
    })
    .await;
    assert_eq!(lease["metadata"]["namespace"], "herald-system");

    // It reconciles with what its RBAC grants: a PushCluster gets its objects and status.
    apply(&plane, &secret("default", "redis://127.0.0.1:1"))
        .await
        .unwrap();
    apply(&plane, &push_cluster("default", 1, 2)).await.unwrap();
    eventually("the PushCluster reconciled by the pod", WAIT, || async {
        let pc = get_json(&plane, &["pushcluster", "push"]).await?;
        let reconciled = pc["status"]["observedGeneration"] == pc["metadata"]["generation"];
        let deployment = get_json(&plane, &["deployment", "push-node"]).await;
        (reconciled && deployment.is_some()).then_some(())
    })
    .await;
    let log = kubelet.logs(&pod.name);
    assert!(log.contains("herald-operator leading as"), "{log}");
}
