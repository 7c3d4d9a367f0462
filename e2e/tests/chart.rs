//! A platform team installs Herald with its Helm chart (`charts/herald`), using the real
//! `helm` built from Go modules by e2e/helm/build.sh: the chart lints clean, a typo in the
//! values is refused before anything is applied, it grants exactly the RBAC of
//! operator/deploy/rbac.yaml, ships exactly the generated CRDs of crds/, and a real
//! `helm install` against a real kube-apiserver creates all of it (then `helm uninstall`
//! removes it). The operator actually running from the chart is e2e/tests/system.rs's job.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use herald_testkit::helm::{self, chart_dir, offline, parse_documents, template};
use herald_testkit::kube::{get_json, ControlPlane};
use serde_json::{json, Value};

/// The release and namespace operator/deploy/rbac.yaml is written for.
const RELEASE: &str = "herald";
const NAMESPACE: &str = "herald-system";
/// The operator's service account in that release.
const OPERATOR_SA: &str = "system:serviceaccount:herald-system:herald-operator";

fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// Every optional part of the chart switched on.
fn everything_on() -> Value {
    json!({"example": {"enabled": true},
           "serviceMonitor": {"enabled": true},
           "networkPolicy": {"enabled": true,
                             "metricsFrom": [{"namespaceSelector": {"matchLabels":
                                 {"kubernetes.io/metadata.name": "monitoring"}}}]}})
}

/// The rendered object of `kind` named `name`.
fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .with_context(|| format!("the chart renders no {kind} {name}"))
}

/// The operator container of the rendered Deployment.
fn operator_container(objects: &[Value]) -> Result<Value> {
    let deployment = find(objects, "Deployment", "herald-operator")?;
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .context("the Deployment has no containers")?;
    ensure!(
        containers.len() == 1,
        "one container expected: {containers:?}"
    );
    Ok(containers[0].clone())
}

#[tokio::test]
async fn the_chart_lints_strictly_clean_with_and_without_its_optional_parts() -> Result<()> {
    let chart = chart_dir();
    let chart = chart.to_string_lossy();
    let lint = offline(&["lint", "--strict", &chart]).await?;
    assert!(
        lint.success,
        "helm lint --strict: {}{}",
        lint.stdout, lint.stderr
    );

    let values = tempfile::Builder::new()
        .prefix("herald-lint-")
        .suffix(".json")
        .tempfile()?;
    std::fs::write(values.path(), everything_on().to_string())?;
    let lint = offline(&[
        "lint",
        "--strict",
        &chart,
        "--values",
        &values.path().to_string_lossy(),
    ])
    .await?;
    assert!(
        lint.success,
        "helm lint --strict with every option on: {}{}",
        lint.stdout, lint.stderr
    );
    assert!(lint.stdout.contains("0 chart(s) failed"), "{}", lint.stdout);
    Ok(())
}

#[tokio::test]
async fn typos_and_wrong_types_in_values_are_refused_by_the_schema() -> Result<()> {
    let cases = [
        (
            json!({"operator": {"replicas": "two"}}),
            "at '/operator/replicas': got string, want integer",
        ),
        (
            json!({"operator": {"replica": 2}}),
            "at '/operator': additional properties 'replica' not allowed",
        ),
        (
            json!({"operator": {"args": {"leaseDuraton": "5s"}}}),
            "at '/operator/args': additional properties 'leaseDuraton' not allowed",
        ),
        (
            json!({"operator": {"image": {"repository": "ghcr.io/acme/operator"}}}),
            "at '/operator/image/repository'",
        ),
        (
            json!({"example": {"enabled": true,
                               "channels": [{"name": "x", "spec": {"cluster": "other",
                                                                  "access": "public"}}]}}),
            "at '/example/channels/0/spec'",
        ),
    ];
    for (values, message) in cases {
        let error = template(RELEASE, NAMESPACE, &values)
            .await
            .expect_err(&format!("{values} should be refused"));
        let error = format!("{error:#}");
        assert!(
            error.contains("values don't meet the specifications of the schema"),
            "{values}: {error}"
        );
        assert!(
            error.contains(message),
            "{values}: expected {message:?} in {error}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_values_the_system_stories_pass_become_operator_flags() -> Result<()> {
    // Exactly what e2e/kit/src/stack.rs installs the chart with.
    let objects = template(
        RELEASE,
        NAMESPACE,
        &json!({"operator": {"replicas": 2,
                             "args": {"resync": "1s", "leaseDuration": "5s"},
                             "extraArgs": ["--otlp-endpoint=http://127.0.0.1:4318"]}}),
    )
    .await?;
    let deployment = find(&objects, "Deployment", "herald-operator")?;
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
        "herald-operator"
    );
    let container = operator_container(&objects)?;
    // Flags as `args` (the kubelet stand-in, like the image, runs the binary with them),
    // camelCase keys as kebab-case flags, sorted, then extraArgs.
    assert_eq!(
        container["args"],
        json!([
            "--lease-duration=5s",
            "--lease-name=herald-operator",
            "--log-format=json",
            "--metrics-addr=0.0.0.0:8080",
            "--resync=1s",
            "--otlp-endpoint=http://127.0.0.1:4318"
        ])
    );
    assert!(container["command"].is_null(), "{container}");
    let image = container["image"].as_str().unwrap_or_default();
    assert_eq!(
        image,
        format!(
            "ghcr.io/herald-push/herald-operator:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
    // The Lease identity and namespace come from the downward API.
    assert_eq!(
        container["env"],
        json!([
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE",
             "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
        ])
    );
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "metrics");
    // Locked down.
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert!(container["resources"]["requests"]["cpu"].is_string());
    // Off by default: nothing but the operator and what it needs.
    let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ])
    );
    Ok(())
}

#[tokio::test]
async fn the_chart_grants_exactly_the_rbac_of_operator_deploy_rbac_yaml() -> Result<()> {
    let manifest = std::fs::read_to_string(repo_path("operator/deploy/rbac.yaml"))?;
    let expected = parse_documents(&manifest)?;
    ensure!(
        expected.len() == 5,
        "rbac.yaml has {} objects",
        expected.len()
    );
    let rendered = template(RELEASE, NAMESPACE, &json!({})).await?;
    for object in &expected {
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let chart = find(&rendered, kind, name)?;
        for field in ["rules", "roleRef", "subjects"] {
            assert_eq!(chart[field], object[field], "{kind} {name}: {field}");
        }
        assert_eq!(
            chart["metadata"]["namespace"], object["metadata"]["namespace"],
            "{kind} {name}: namespace"
        );
    }
    let rbac_kinds = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    let rendered_rbac = rendered
        .iter()
        .filter(|o| rbac_kinds.contains(&o["kind"].as_str().unwrap_or_default()))
        .count();
    assert_eq!(rendered_rbac, expected.len(), "no RBAC beyond rbac.yaml's");

    // A Lease of another name: the flag and the Role's resourceNames follow it.
    let custom = template(
        RELEASE,
        NAMESPACE,
        &json!({"operator": {"args": {"leaseName": "herald-leader"}}}),
    )
    .await?;
    let role = find(&custom, "Role", "herald-operator-leader-election")?;
    assert_eq!(role["rules"][1]["resourceNames"], json!(["herald-leader"]));
    let args = operator_container(&custom)?["args"].clone();
    assert!(
        args.as_array()
            .is_some_and(|a| a.contains(&json!("--lease-name=herald-leader"))),
        "{args}"
    );
    Ok(())
}

#[tokio::test]
async fn the_chart_ships_exactly_the_generated_crds() -> Result<()> {
    let files = |dir: &str| -> Result<BTreeSet<String>> {
        let mut names = BTreeSet::new();
        for entry in std::fs::read_dir(repo_path(dir))? {
            names.insert(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    };
    let generated = files("crds")?;
    assert_eq!(files("charts/herald/crds")?, generated);
    assert!(!generated.is_empty());
    for file in &generated {
        let original = std::fs::read(repo_path("crds").join(file))?;
        let copy = std::fs::read(repo_path("charts/herald/crds").join(file))?;
        assert!(
            original == copy,
            "charts/herald/crds/{file} differs from crds/{file}: run \
             `cargo run -p herald-operator --bin crdgen`, which writes both"
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_charts_app_version_is_the_workspace_version() -> Result<()> {
    let chart = std::fs::read_to_string(chart_dir().join("Chart.yaml"))?;
    let chart: Value = serde_yaml::from_str(&chart)?;
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    Ok(())
}

/// Whether the API server lets `user` do `verb` on `resource` (a SubjectAccessReview).
async fn allowed(
    plane: &ControlPlane,
    user: &str,
    verb: &str,
    group: &str,
    resource: &str,
    name: &str,
) -> Result<bool> {
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user,
                 "groups": ["system:serviceaccounts", "system:serviceaccounts:herald-system",
                            "system:authenticated"],
                 "resourceAttributes": {"namespace": NAMESPACE, "verb": verb, "group": group,
                                        "resource": resource, "name": name}}});
    let out = plane
        .kubectl_stdin(["create", "-f", "-", "-o", "json"], &review.to_string())
        .await?;
    let answer: Value = serde_json::from_str(&out)?;
    Ok(answer["status"]["allowed"] == true)
}

#[tokio::test]
async fn helm_install_creates_the_crds_operator_rbac_and_example_then_uninstall_removes_them(
) -> Result<()> {
    let plane = ControlPlane::start().await?;
    plane.kubectl(["create", "namespace", NAMESPACE]).await?;

    let notes = helm::install_chart(
        &plane,
        RELEASE,
        NAMESPACE,
        &json!({"example": {"enabled": true}}),
    )
    .await?;
    // NOTES.txt tells what to do next.
    for next in [
        "create secret generic herald",
        "kind: PushCluster",
        "kind: Channel",
        "kubectl get hpc,hch",
    ] {
        assert!(notes.contains(next), "NOTES.txt lacks {next:?}:\n{notes}");
    }
    let status = helm::helm(&plane, &["status", RELEASE, "-n", NAMESPACE]).await?;
    assert!(status.contains("STATUS: deployed"), "{status}");

    // The CRDs, established, so the example objects went in with the same install.
    for crd in ["pushclusters.herald.dev", "channels.herald.dev"] {
        let crd = get_json(&plane, &["crd", crd])
            .await
            .context("CRD missing")?;
        let established = crd["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Established" && c["status"] == "True");
        assert!(established, "{}", crd["status"]);
    }
    let deployment = get_json(&plane, &["deployment", "herald-operator", "-n", NAMESPACE])
        .await
        .context("no operator Deployment")?;
    assert_eq!(deployment["spec"]["replicas"], 2);
    for object in [
        &["serviceaccount", "herald-operator"][..],
        &["service", "herald-operator-metrics"],
        &["poddisruptionbudget", "herald-operator"],
        &["role", "herald-operator-leader-election"],
        &["rolebinding", "herald-operator-leader-election"],
        &["pushcluster", "push"],
        &["channel", "stock-levels"],
        &["channel", "announcements"],
    ] {
        let mut args = object.to_vec();
        args.extend(["-n", NAMESPACE]);
        assert!(
            get_json(&plane, &args).await.is_some(),
            "{object:?} missing"
        );
    }
    let channel = get_json(&plane, &["channel", "stock-levels", "-n", NAMESPACE])
        .await
        .context("no Channel")?;
    assert_eq!(channel["spec"]["cluster"], "push");
    assert_eq!(channel["spec"]["name"], "stock_levels");
    for object in ["clusterrole", "clusterrolebinding"] {
        assert!(
            get_json(&plane, &[object, "herald-operator"])
                .await
                .is_some(),
            "{object} missing"
        );
    }
    // The API server enforces the installed RBAC: the operator's account may do what it
    // needs, and not more.
    let sa = OPERATOR_SA;
    assert!(allowed(&plane, sa, "patch", "apps", "deployments", "").await?);
    assert!(
        allowed(
            &plane,
            sa,
            "update",
            "coordination.k8s.io",
            "leases",
            "herald-operator"
        )
        .await?
    );
    assert!(
        !allowed(
            &plane,
            sa,
            "update",
            "coordination.k8s.io",
            "leases",
            "another"
        )
        .await?
    );
    assert!(!allowed(&plane, sa, "delete", "apps", "deployments", "").await?);
    assert!(!allowed(&plane, sa, "list", "", "secrets", "").await?);

    helm::helm(&plane, &["uninstall", RELEASE, "-n", NAMESPACE, "--wait"]).await?;
    for object in [
        &["deployment", "herald-operator", "-n", NAMESPACE][..],
        &["pushcluster", "push", "-n", NAMESPACE],
        &["clusterrole", "herald-operator"],
    ] {
        assert!(
            get_json(&plane, object).await.is_none(),
            "{object:?} survived the uninstall"
        );
    }
    // Helm never deletes a chart's CRDs (that would delete every PushCluster in the cluster).
    assert!(get_json(&plane, &["crd", "pushclusters.herald.dev"])
        .await
        .is_some());
    Ok(())
}
