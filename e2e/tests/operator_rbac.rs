//! A cluster admin installs Herald the least-privilege way: the CRDs, then the operator's
//! RBAC manifest (operator/deploy/rbac.yaml, whose rules the Helm chart renders too, kept
//! equal by tests/chart.rs), and runs the operator as its `herald-operator` service
//! account, nothing more. The real operator binary runs against a real kube-apiserver, etcd
//! and kube-controller-manager (built from Go modules by e2e/k8s/build.sh) and a real Redis,
//! all on loopback; every permission the manifest grants is used below, so a missing one
//! shows up as a story that never finishes, and a superfluous one as a `can-i` that says yes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use herald_testkit::eventually;
use herald_testkit::kube::{apply, bin_dir, get_json, ControlPlane, KUBECTL_TIMEOUT};
use herald_testkit::node::{API_KEY, SECRET};
use herald_testkit::operator::OperatorProcess;
use herald_testkit::redis::RedisServer;
use serde_json::{json, Value};

/// The tenant namespace of the story.
const NS: &str = "storefront";
/// Where the operator and its RBAC live.
const OPERATOR_NS: &str = "herald-system";
/// The operator's service account, as rbac.yaml names it.
const OPERATOR_SA: &str = "herald-operator";
/// Most waits: the operator resyncs every 2 s, so this is generous.
const WAIT: Duration = Duration::from_secs(45);

fn repo_path(relative: &str) -> String {
    format!("{}/../{relative}", env!("CARGO_MANIFEST_DIR"))
}

/// `kubectl` with another identity's kubeconfig (the fixture's own `kubectl` is the admin).
/// Returns the exit code and standard output, so `auth can-i`, which exits 1 on "no", can be
/// read; fails when kubectl cannot run or outlives [`KUBECTL_TIMEOUT`].
async fn kubectl_as(
    plane: &ControlPlane,
    kubeconfig: &Path,
    args: &[&str],
) -> anyhow::Result<(i32, String)> {
    let run = tokio::process::Command::new(bin_dir()?.join("kubectl"))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .env("KUBECACHEDIR", plane.dir().join("kubectl-cache-operator"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(KUBECTL_TIMEOUT, run)
        .await
        .map_err(|_| anyhow::anyhow!("kubectl {args:?} did not finish in {KUBECTL_TIMEOUT:?}"))??;
    let code = output.status.code().unwrap_or(-1);
    if code > 1 {
        anyhow::bail!(
            "kubectl {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok((
        code,
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    ))
}

/// What `kubectl auth can-i ARGS` answers for the identity of `kubeconfig`.
async fn can_i(plane: &ControlPlane, kubeconfig: &Path, args: &[&str]) -> String {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    let (_, answer) = kubectl_as(plane, kubeconfig, &all)
        .await
        .unwrap_or_else(|e| panic!("kubectl auth can-i {args:?}: {e:#}"));
    answer
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn secret(redis_url: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "herald", "namespace": NS},
           "stringData": {"jwt": SECRET, "api-key": API_KEY, "redis-url": redis_url}})
}

fn push_cluster() -> Value {
    json!({"apiVersion": "herald.dev/v1alpha1", "kind": "PushCluster",
    "metadata": {"name": "push", "namespace": NS},
    "spec": {
        "image": "herald-node:test",
        "replicas": {"min": 1, "max": 3},
        "redis": {"urlSecretRef": {"name": "herald", "key": "redis-url"}},
        "auth": {"jwtSecretRef": {"name": "herald", "key": "jwt"},
                 "apiKeySecretRef": {"name": "herald", "key": "api-key"}},
        "ingress": {"host": "push.storefront.test"},
    }})
}

/// The admin's part: a control plane with the CRDs, the operator's namespace and its RBAC.
async fn plane_with_crds_and_rbac() -> ControlPlane {
    let plane = ControlPlane::start_with_crds()
        .await
        .expect("control plane with the CRDs starts");
    plane
        .kubectl(["create", "namespace", OPERATOR_NS])
        .await
        .expect("operator namespace");
    plane
        .kubectl(["apply", "-f", &repo_path("operator/deploy/rbac.yaml")])
        .await
        .expect("operator/deploy/rbac.yaml applies");
    plane
}

/// A token for the operator's service account, in a kubeconfig of its own.
async fn operator_kubeconfig(plane: &ControlPlane) -> PathBuf {
    let token = plane
        .kubectl([
            "create",
            "token",
            OPERATOR_SA,
            "-n",
            OPERATOR_NS,
            "--duration",
            "1h",
        ])
        .await
        .expect("a token for the operator's service account");
    plane
        .kubeconfig_for_token(&token, OPERATOR_SA)
        .expect("a kubeconfig for the token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_does_its_whole_job_with_only_the_rbac_it_ships() {
    let started = Instant::now();
    let lap = |what: &str| eprintln!("[{:>6.1?}] {what}", started.elapsed());

    // Given a cluster where an admin installed the CRDs and operator/deploy/rbac.yaml,
    let plane = plane_with_crds_and_rbac().await;
    lap("control plane, CRDs and RBAC");
    // and a kubeconfig holding a token of the operator's service account,
    let kubeconfig = operator_kubeconfig(&plane).await;
    let (_, whoami) = kubectl_as(&plane, &kubeconfig, &["auth", "whoami", "-o", "json"])
        .await
        .expect("kubectl auth whoami");
    let whoami: Value = serde_json::from_str(&whoami).expect("whoami is JSON");
    assert_eq!(
        whoami["status"]["userInfo"]["username"],
        format!("system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}")
    );

    // that identity may do what the operator does, and no more: it cannot delete Secrets
    // anywhere, grant itself roles, list Secrets, rewrite the specs it reconciles, or touch
    // Leases outside its own namespace (the "yes" lines show the token itself works).
    for (args, expected) in [
        (&["delete", "secrets", "-A"][..], "no"),
        (&["create", "clusterroles"], "no"),
        (&["list", "secrets", "-A"], "no"),
        (&["get", "pods", "-A"], "no"),
        (&["update", "pushclusters", "-A"], "no"),
        (&["delete", "channels", "-A"], "no"),
        (&["create", "leases", "-n", "default"], "no"),
        (&["create", "leases", "-n", OPERATOR_NS], "yes"),
        (
            &["patch", "pushclusters", "--subresource=status", "-A"],
            "yes",
        ),
        (&["get", "secrets", "-A"], "yes"),
    ] {
        assert_eq!(
            can_i(&plane, &kubeconfig, args).await,
            expected,
            "kubectl auth can-i {}",
            args.join(" ")
        );
    }

    // When the operator runs with that kubeconfig and nothing else,
    let redis = RedisServer::start_standalone().await.expect("Redis starts");
    let mut operator = OperatorProcess::start(
        &kubeconfig,
        "op-rbac",
        &["--lease-namespace", OPERATOR_NS, "--resync", "2s"],
    );
    // then it takes its Lease in herald-system and leads.
    assert!(
        operator.wait_leading(Duration::from_secs(30)),
        "the operator did not lead with its own RBAC (Lease in {OPERATOR_NS})"
    );
    let lease = get_json(&plane, &["lease", "herald-operator", "-n", OPERATOR_NS])
        .await
        .expect("the Lease exists");
    assert_eq!(lease["spec"]["holderIdentity"], "op-rbac");
    lap("the operator leads");

    // When a team creates its namespace, its Secret, a PushCluster and a Channel,
    plane.kubectl(["create", "namespace", NS]).await.unwrap();
    apply(&plane, &secret(&redis.url())).await.unwrap();
    apply(&plane, &push_cluster()).await.unwrap();
    apply(
        &plane,
        &json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Channel",
                "metadata": {"name": "flash-sales", "namespace": NS},
                "spec": {"cluster": "push", "access": "authenticated"}}),
    )
    .await
    .unwrap();

    // then the operator creates everything the cluster needs, owned by the PushCluster,
    let deployment = eventually("the node Deployment", WAIT, || {
        get_json(&plane, &["deployment", "push-node", "-n", NS])
    })
    .await;
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        deployment["metadata"]["ownerReferences"][0]["kind"],
        "PushCluster"
    );
    for (kind, name) in [
        ("serviceaccount", "push-node"),
        ("service", "push-node"),
        ("poddisruptionbudget", "push-node"),
        ("ingress", "push"),
    ] {
        let object = eventually(&format!("{kind}/{name}"), WAIT, || async {
            get_json(&plane, &[kind, name, "-n", NS]).await
        })
        .await;
        assert_eq!(
            object["metadata"]["ownerReferences"][0]["name"], "push",
            "{kind}/{name} is owned by the PushCluster"
        );
    }
    // renders the Channel into the node configuration,
    eventually("flash-sales in the channel file", WAIT, || async {
        let cm = get_json(&plane, &["configmap", "push-node-config", "-n", NS]).await?;
        cm["data"]["channels.json"]
            .as_str()?
            .contains("flash-sales")
            .then_some(())
    })
    .await;
    lap("owned objects and channel file");

    // reports the cluster's status for its current generation, having read the Redis URL
    // Secret and reached Redis,
    let cluster = eventually("PushCluster status", WAIT, || async {
        let pc = get_json(&plane, &["pushcluster", "push", "-n", NS]).await?;
        let broker = condition(&pc, "BrokerHealthy")?;
        (pc["status"]["observedGeneration"] == pc["metadata"]["generation"]
            && broker["status"] == "True")
            .then_some(pc)
    })
    .await;
    assert_eq!(cluster["status"]["desiredReplicas"], 1);
    // and reports the Channel ready.
    let channel = eventually("Channel Ready=True", WAIT, || async {
        let ch = get_json(&plane, &["channel", "flash-sales", "-n", NS]).await?;
        (condition(&ch, "Ready")?["status"] == "True").then_some(ch)
    })
    .await;
    assert_eq!(
        channel["status"]["observedGeneration"],
        channel["metadata"]["generation"]
    );
    lap("PushCluster and Channel status");

    // When a node pod reports its connections in Redis (kube-controller-manager creates the
    // pod; nothing runs it here, so the test writes the heartbeat a node would),
    let pod = eventually("a node pod", Duration::from_secs(60), || async {
        let pods = get_json(
            &plane,
            &["pods", "-n", NS, "-l", "app.kubernetes.io/instance=push"],
        )
        .await?;
        pods["items"].as_array()?.first()?["metadata"]["name"]
            .as_str()
            .map(str::to_owned)
    })
    .await;
    let heartbeat = json!({"id": pod, "connections": 7, "draining": false}).to_string();
    redis
        .cli(&["SET", &format!("herald:node:{pod}"), &heartbeat])
        .await
        .expect("heartbeat record");
    redis
        .cli(&["ZADD", "herald:nodes", "1", &pod])
        .await
        .expect("heartbeat index");
    // then the operator marks the pod with its deletion cost.
    let cost = eventually("the pod deletion cost", WAIT, || async {
        let p = get_json(&plane, &["pod", &pod, "-n", NS]).await?;
        p["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"]
            .as_str()
            .map(str::to_owned)
    })
    .await;
    assert_eq!(cost, "7");
    lap("pod deletion cost");

    // When the admin scales the cluster,
    plane
        .kubectl(["scale", "pushcluster", "push", "-n", NS, "--replicas=2"])
        .await
        .unwrap();
    // then the operator scales the Deployment and records a Scaled Event on the PushCluster.
    eventually("2 replicas", WAIT, || async {
        let d = get_json(&plane, &["deployment", "push-node", "-n", NS]).await?;
        (d["spec"]["replicas"] == 2).then_some(())
    })
    .await;
    let event = eventually("a Scaled event", WAIT, || async {
        let events = get_json(&plane, &["events", "-n", NS]).await?;
        events["items"]
            .as_array()?
            .iter()
            .find(|e| {
                e["reason"] == "Scaled"
                    && e["involvedObject"]["kind"] == "PushCluster"
                    && e["involvedObject"]["name"] == "push"
            })
            .cloned()
    })
    .await;
    assert!(
        event["message"]
            .as_str()
            .is_some_and(|m| m.contains("1 → 2")),
        "{event}"
    );
    assert_eq!(event["reportingComponent"], "herald-operator");
    lap("scaled, with an Event");

    // When the team drops the Ingress from the spec, the operator deletes its Ingress.
    plane
        .kubectl([
            "patch",
            "pushcluster",
            "push",
            "-n",
            NS,
            "--type",
            "json",
            "-p",
            r#"[{"op":"remove","path":"/spec/ingress"}]"#,
        ])
        .await
        .unwrap();
    eventually("the Ingress to go", WAIT, || async {
        get_json(&plane, &["ingress", "push", "-n", NS])
            .await
            .is_none()
            .then_some(())
    })
    .await;
    lap("Ingress removed");

    // When a Channel asks for its history to go with it,
    apply(
        &plane,
        &json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Channel",
                "metadata": {"name": "drops", "namespace": NS},
                "spec": {"cluster": "push", "access": "authenticated", "history": true,
                         "deletionPolicy": "Purge"}}),
    )
    .await
    .unwrap();
    // then the operator guards it with its finalizer,
    eventually("the purge finalizer", WAIT, || async {
        let ch = get_json(&plane, &["channel", "drops", "-n", NS]).await?;
        ch["metadata"]["finalizers"]
            .as_array()?
            .iter()
            .any(|f| f == "herald.dev/purge-history")
            .then_some(())
    })
    .await;
    // and once the Channel is deleted, empties its history in Redis (the test writes the keys
    // a node would), records a HistoryPurged Event on it and lets it go.
    for key in ["herald:{c:drops}:log", "herald:{u:drops:alice}"] {
        redis
            .cli(&["SET", key, "history"])
            .await
            .expect("history key");
    }
    plane
        .kubectl([
            "delete",
            "channel",
            "drops",
            "-n",
            NS,
            "--wait=true",
            "--timeout=60s",
        ])
        .await
        .expect("the Channel is deleted within 60 s");
    for pattern in ["herald:{c:drops}*", "herald:{u:drops:*"] {
        let left = redis.cli(&["--scan", "--pattern", pattern]).await.unwrap();
        assert!(left.trim().is_empty(), "history left behind: {left}");
    }
    let purged = eventually("a HistoryPurged event", WAIT, || async {
        let events = get_json(&plane, &["events", "-n", NS]).await?;
        events["items"]
            .as_array()?
            .iter()
            .find(|e| e["reason"] == "HistoryPurged" && e["involvedObject"]["name"] == "drops")
            .cloned()
    })
    .await;
    assert!(
        purged["message"]
            .as_str()
            .is_some_and(|m| m.contains("removed 2 history keys")),
        "{purged}"
    );
    lap("Channel history purged");

    // And it is still the leader, renewing its Lease with its own RBAC all along.
    let lease = get_json(&plane, &["lease", "herald-operator", "-n", OPERATOR_NS])
        .await
        .expect("the Lease exists");
    assert_eq!(lease["spec"]["holderIdentity"], "op-rbac");
    assert_eq!(lease["spec"]["leaseTransitions"], 0);
    drop(operator);
    lap("done");
}
