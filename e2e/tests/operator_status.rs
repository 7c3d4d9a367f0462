//! A platform team reads what went wrong from the PushCluster itself: every story runs
//! the real operator against a real kube-apiserver, etcd and kube-controller-manager.

use std::time::Duration;

use herald_testkit::eventually;
use herald_testkit::kube::{apply, get_json, ControlPlane};
use herald_testkit::node::{API_KEY, SECRET};
use herald_testkit::operator::OperatorProcess;
use serde_json::{json, Value};

/// Control planes are heavy on two cores: one story at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn push_cluster(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "herald.dev/v1alpha1", "kind": "PushCluster",
           "metadata": {"name": name, "namespace": ns},
           "spec": {
               "image": "herald-node:test",
               "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
               "auth": {"jwtSecretRef": {"name": "herald", "key": "jwt"},
                        "apiKeySecretRef": {"name": "herald", "key": "api-key"}}}})
}

async fn condition(plane: &ControlPlane, ns: &str, name: &str, type_: &str) -> Option<Value> {
    let pc = get_json(plane, &["pushcluster", name, "-n", ns]).await?;
    pc["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_too_long_for_its_service_is_refused_on_apply() {
    let _serial = SERIAL.lock().await;
    let plane = ControlPlane::start_with_crds()
        .await
        .expect("control plane with the CRDs starts");
    let long = "p".repeat(59);
    let err = apply(&plane, &push_cluster("default", &long))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 58 characters"), "{err}");
    apply(&plane, &push_cluster("default", &"p".repeat(58)))
        .await
        .expect("58 characters fit: <name>-node is 63");

    // A Channel without spec.name is named after the object: nodes refuse channel names
    // over 128 characters, so the API server refuses such a Channel on apply.
    let channel = |name: &str, spec_name: Option<&str>| {
        let mut spec = json!({"cluster": "p", "access": "authenticated"});
        if let Some(spec_name) = spec_name {
            spec["name"] = json!(spec_name);
        }
        json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Channel",
               "metadata": {"name": name, "namespace": "default"}, "spec": spec})
    };
    let long = "c".repeat(129);
    let err = apply(&plane, &channel(&long, None))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 128 characters"), "{err}");
    apply(&plane, &channel(&long, Some("short")))
        .await
        .expect("a long object name with spec.name is fine");
    apply(&plane, &channel(&"d".repeat(128), None))
        .await
        .expect("128 characters are a valid channel name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_secrets_and_failed_applies_show_on_the_push_cluster() {
    let _serial = SERIAL.lock().await;
    let plane = ControlPlane::start_with_crds()
        .await
        .expect("control plane with the CRDs starts");
    let _operator = {
        let mut op = OperatorProcess::start(&plane.kubeconfig_path(), "op-a", &["--resync", "2s"]);
        assert!(op.wait_leading(Duration::from_secs(30)));
        op
    };
    plane
        .kubectl(["create", "namespace", "shop"])
        .await
        .unwrap();
    // The JWT secret exists, but without the API key; the Redis URL Secret is absent.
    apply(
        &plane,
        &json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "herald", "namespace": "shop"},
                "stringData": {"jwt": SECRET}}),
    )
    .await
    .unwrap();
    apply(&plane, &push_cluster("shop", "push")).await.unwrap();

    let secrets = eventually("SecretsFound=False", Duration::from_secs(30), || async {
        let c = condition(&plane, "shop", "push", "SecretsFound").await?;
        (c["status"] == "False").then_some(c)
    })
    .await;
    assert_eq!(secrets["reason"], "SecretMissing");
    let message = secrets["message"].as_str().unwrap();
    assert!(
        message.contains(r#"auth.apiKeySecretRef: Secret "herald" has no key "api-key""#),
        "{message}"
    );
    assert!(
        message.contains(r#"redis.urlSecretRef: Secret "redis" not found"#),
        "{message}"
    );
    assert!(!message.contains("auth.jwtSecretRef"), "{message}");
    let broker = condition(&plane, "shop", "push", "BrokerHealthy")
        .await
        .unwrap();
    let broker_message = broker["message"].as_str().unwrap();
    assert!(
        broker_message.contains(r#"Secret "redis" not found"#)
            && !broker_message.contains("ErrorResponse"),
        "a readable sentence, not a debug dump: {broker_message}"
    );

    // Supplying the keys clears the condition.
    apply(
        &plane,
        &json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "herald", "namespace": "shop"},
                "stringData": {"jwt": SECRET, "api-key": API_KEY}}),
    )
    .await
    .unwrap();
    apply(
        &plane,
        &json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "redis", "namespace": "shop"},
                "stringData": {"url": "redis://127.0.0.1:1"}}),
    )
    .await
    .unwrap();
    eventually("SecretsFound=True", Duration::from_secs(30), || async {
        let c = condition(&plane, "shop", "push", "SecretsFound").await?;
        (c["status"] == "True").then_some(())
    })
    .await;

    // A quota that forbids Services makes every apply of the node Service fail: the
    // failure is a condition and a Warning Event, not just a line in the operator's log.
    apply(
        &plane,
        &json!({"apiVersion": "v1", "kind": "ResourceQuota",
                "metadata": {"name": "no-services", "namespace": "shop"},
                "spec": {"hard": {"services": "0"}}}),
    )
    .await
    .unwrap();
    // The quota only judges creations: the operator must re-create the Service.
    plane
        .kubectl(["delete", "service", "push-node", "-n", "shop"])
        .await
        .unwrap();
    let failed = eventually("Reconciled=False", Duration::from_secs(60), || async {
        let c = condition(&plane, "shop", "push", "Reconciled").await?;
        (c["status"] == "False").then_some(c)
    })
    .await;
    assert_eq!(failed["reason"], "Forbidden", "{failed}");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains("quota") && !message.contains("ErrorResponse"),
        "{message}"
    );
    eventually(
        "a ReconcileFailed Warning Event",
        Duration::from_secs(30),
        || async {
            let events = get_json(
                &plane,
                &[
                    "events",
                    "-n",
                    "shop",
                    "--field-selector",
                    "reason=ReconcileFailed",
                ],
            )
            .await?;
            events["items"]
                .as_array()?
                .iter()
                .any(|e| {
                    e["type"] == "Warning"
                        && e["note"]
                            .as_str()
                            .or(e["message"].as_str())
                            .is_some_and(|m| m.contains("quota"))
                })
                .then_some(())
        },
    )
    .await;

    plane
        .kubectl(["delete", "resourcequota", "no-services", "-n", "shop"])
        .await
        .unwrap();
    eventually("Reconciled=True again", Duration::from_secs(60), || async {
        let c = condition(&plane, "shop", "push", "Reconciled").await?;
        (c["status"] == "True").then_some(())
    })
    .await;
    assert!(get_json(&plane, &["service", "push-node", "-n", "shop"])
        .await
        .is_some());
}
