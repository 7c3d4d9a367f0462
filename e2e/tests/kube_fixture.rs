//! The Kubernetes fixture runs a real etcd, kube-apiserver and kube-controller-manager: these
//! stories show that what it starts behaves like a cluster the operator will meet (kubectl
//! works, the controller manager garbage-collects and deletes namespaces) and that a crashed
//! apiserver comes back with its data.
//!
//! The binaries come from `e2e/k8s/build.sh`; every test starts its own control plane.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use herald_testkit::kube::ControlPlane;

/// Polls `check` until it answers `true`, failing after `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let started = Instant::now();
    loop {
        if check().await? {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            bail!("{what}: not the case after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether `kind/name` (in the kubeconfig's namespace unless `args` says otherwise) exists.
async fn exists(cluster: &ControlPlane, kind: &str, name: &str, args: &[&str]) -> Result<bool> {
    let mut all = vec!["get", kind, name, "--ignore-not-found", "--output=name"];
    all.extend_from_slice(args);
    Ok(!cluster.kubectl(all).await?.trim().is_empty())
}

fn config_map(name: &str, namespace: &str, data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\n\
         data:\n  {data}\n"
    )
}

#[tokio::test]
async fn the_control_plane_starts_and_kubectl_lists_and_applies() -> Result<()> {
    let started = Instant::now();
    let cluster = ControlPlane::start().await?;
    eprintln!("control plane ready in {:?}", started.elapsed());

    // The fixture hands out what a client needs: an https URL on loopback, a token, the CA, and
    // a kubeconfig that kubectl accepts.
    assert!(cluster.server_url().starts_with("https://127.0.0.1:"));
    assert!(!cluster.token().is_empty());
    assert!(cluster.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(cluster.kubeconfig_path().is_file());

    // The apiserver created the built-in namespaces.
    let namespaces = cluster
        .kubectl(["get", "namespaces", "--output=name"])
        .await?;
    assert!(
        namespaces.lines().any(|l| l == "namespace/default"),
        "{namespaces}"
    );
    assert!(
        namespaces.lines().any(|l| l == "namespace/kube-system"),
        "{namespaces}"
    );

    // kubectl apply creates a ConfigMap, and reading it back gives its data.
    let applied = cluster
        .kubectl_stdin(
            ["apply", "-f", "-"],
            &config_map("greeting", "default", "text: hello"),
        )
        .await?;
    assert!(applied.contains("configmap/greeting created"), "{applied}");
    let text = cluster
        .kubectl([
            "get",
            "configmap",
            "greeting",
            "--output=jsonpath={.data.text}",
        ])
        .await?;
    assert_eq!(text, "hello");
    Ok(())
}

#[tokio::test]
async fn the_garbage_collector_deletes_dependents_of_a_deleted_owner() -> Result<()> {
    let cluster = ControlPlane::start().await?;

    // An owner, and a dependent whose ownerReference names the owner's uid.
    cluster
        .kubectl_stdin(
            ["apply", "-f", "-"],
            &config_map("owner", "default", "role: owner"),
        )
        .await?;
    let uid = cluster
        .kubectl([
            "get",
            "configmap",
            "owner",
            "--output=jsonpath={.metadata.uid}",
        ])
        .await?;
    assert!(!uid.is_empty());
    let dependent = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dependent\n  ownerReferences:\n  \
         - apiVersion: v1\n    kind: ConfigMap\n    name: owner\n    uid: {uid}\n\
         data:\n  role: dependent\n"
    );
    cluster
        .kubectl_stdin(["apply", "-f", "-"], &dependent)
        .await?;
    assert!(exists(&cluster, "configmap", "dependent", &[]).await?);

    // Deleting the owner (background propagation, kubectl's default) leaves the dependent to
    // kube-controller-manager's garbage collector, which must remove it.
    cluster.kubectl(["delete", "configmap", "owner"]).await?;
    let took = eventually(
        "the dependent is garbage-collected",
        Duration::from_secs(30),
        || async { Ok(!exists(&cluster, "configmap", "dependent", &[]).await?) },
    )
    .await?;
    eprintln!("dependent collected {took:?} after its owner was deleted");
    Ok(())
}

#[tokio::test]
async fn deleting_a_namespace_with_objects_in_it_completes() -> Result<()> {
    let cluster = ControlPlane::start().await?;

    // A namespace holding a ConfigMap and a Deployment, whose ReplicaSet and (never scheduled)
    // Pods the controller manager creates.
    cluster.kubectl(["create", "namespace", "doomed"]).await?;
    cluster
        .kubectl_stdin(
            ["apply", "-f", "-"],
            &config_map("settings", "doomed", "a: b"),
        )
        .await?;
    cluster
        .kubectl([
            "create",
            "deployment",
            "web",
            "--namespace=doomed",
            "--image=registry.invalid/web:1",
            "--replicas=2",
        ])
        .await?;
    eventually(
        "the Deployment has two Pods",
        Duration::from_secs(30),
        || async {
            let pods = cluster
                .kubectl(["get", "pods", "--namespace=doomed", "--output=name"])
                .await?;
            Ok(pods.lines().count() == 2)
        },
    )
    .await?;

    // Deleting the namespace empties it and then removes it (kubectl waits for that).
    let started = Instant::now();
    cluster
        .kubectl(["delete", "namespace", "doomed", "--timeout=45s"])
        .await?;
    eprintln!("namespace deleted in {:?}", started.elapsed());
    assert!(!exists(&cluster, "namespace", "doomed", &[]).await?);
    Ok(())
}

#[tokio::test]
async fn a_restarted_apiserver_keeps_its_data_and_serves_again() -> Result<()> {
    let mut cluster = ControlPlane::start().await?;
    cluster
        .kubectl_stdin(
            ["apply", "-f", "-"],
            &config_map("survivor", "default", "kept: still-here"),
        )
        .await?;
    let old_pid = cluster.apiserver_pid();
    let url = cluster.server_url();

    let started = Instant::now();
    cluster.restart_apiserver().await?;
    eprintln!("apiserver restarted in {:?}", started.elapsed());

    // A new process on the same address, and the data (in etcd) is still there.
    assert_ne!(cluster.apiserver_pid(), old_pid);
    assert_eq!(cluster.server_url(), url);
    let kept = cluster
        .kubectl([
            "get",
            "configmap",
            "survivor",
            "--output=jsonpath={.data.kept}",
        ])
        .await?;
    assert_eq!(kept, "still-here");

    // Writes work again, and the controller manager reconnected: it gives a new namespace its
    // default service account.
    cluster
        .kubectl(["create", "namespace", "after-restart"])
        .await?;
    eventually(
        "the new namespace gets its default service account",
        Duration::from_secs(30),
        || {
            exists(
                &cluster,
                "serviceaccount",
                "default",
                &["--namespace=after-restart"],
            )
        },
    )
    .await?;
    Ok(())
}
