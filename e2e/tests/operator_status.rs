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

/// A platform team declares one `dept:{dept}` Channel for every department. The API
/// server refuses bindings that cannot work; a pattern that would clash with another
/// Channel stays out of the nodes' channel file and says why on its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn department_patterns_are_checked_on_apply_and_clashes_show_on_the_channel() {
    let _serial = SERIAL.lock().await;
    let plane = ControlPlane::start_with_crds()
        .await
        .expect("control plane with the CRDs starts");
    let _operator = {
        let mut op = OperatorProcess::start(&plane.kubeconfig_path(), "op-p", &["--resync", "2s"]);
        assert!(op.wait_leading(Duration::from_secs(30)));
        op
    };
    apply(
        &plane,
        &json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "herald", "namespace": "default"},
                "stringData": {"jwt": SECRET, "api-key": API_KEY}}),
    )
    .await
    .unwrap();
    apply(&plane, &push_cluster("default", "push"))
        .await
        .unwrap();
    let channel = |object: &str, spec: Value| {
        let mut full = json!({"cluster": "push", "access": "authenticated"});
        for (k, v) in spec.as_object().unwrap() {
            full[k] = v.clone();
        }
        json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Channel",
               "metadata": {"name": object, "namespace": "default"}, "spec": full})
    };

    for (spec, says) in [
        (
            json!({"name": "dept:{dept}", "bind": {"team": "team"}}),
            "every key of bind must be a {parameter} of spec.name",
        ),
        (
            json!({"bind": {"dept": "dept"}}),
            "every key of bind must be a {parameter} of spec.name",
        ),
        (
            json!({"name": "dept:{dept}:{team}", "autoSubscribe": true,
                   "bind": {"dept": "dept"}}),
            "autoSubscribe on a pattern needs every {parameter} bound",
        ),
        (json!({"name": "{dept}:x"}), "spec.name"),
        (json!({"name": "dept:{Dept}"}), "spec.name"),
        (
            json!({"name": "dept:{dept}", "bind": {"dept": "x".repeat(65)}}),
            "claim names in bind have 1-64 characters",
        ),
    ] {
        let err = apply(&plane, &channel("bad", spec.clone()))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{spec}: {err}");
    }

    let dept = json!({"name": "dept:{dept}", "autoSubscribe": true, "history": true,
                      "bind": {"dept": "dept"}});
    apply(&plane, &channel("dept", dept)).await.unwrap();
    // Created after `dept`: the older pattern keeps its channels.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    apply(&plane, &channel("teams", json!({"name": "dept:{team}"})))
        .await
        .unwrap();
    let ready = |object: &'static str| {
        let plane = &plane;
        async move {
            let c = get_json(plane, &["channel", object, "-n", "default"]).await?;
            c["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")
                .cloned()
        }
    };
    let clash = eventually("teams: Ready=False", Duration::from_secs(60), || async {
        ready("teams").await.filter(|c| c["status"] == "False")
    })
    .await;
    assert_eq!(clash["reason"], "PatternConflict", "{clash}");
    assert!(
        clash["message"]
            .as_str()
            .unwrap()
            .contains("older pattern \"dept:{dept}\""),
        "{clash}"
    );
    let served = |config: &Value| -> Option<Vec<Value>> {
        let file: Value = serde_json::from_str(config["data"]["channels.json"].as_str()?).ok()?;
        file["channels"].as_array().cloned()
    };
    let names = |channels: &[Value]| -> Vec<String> {
        channels
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let channels = eventually(
        "dept:{dept} in the channel file",
        Duration::from_secs(60),
        || async {
            let config =
                get_json(&plane, &["configmap", "push-node-config", "-n", "default"]).await?;
            served(&config).filter(|c| names(c).contains(&"dept:{dept}".to_owned()))
        },
    )
    .await;
    assert!(!names(&channels).contains(&"dept:{team}".to_owned()));
    let dept = channels
        .iter()
        .find(|c| c["name"] == "dept:{dept}")
        .unwrap();
    assert_eq!(dept["bind"], json!({"dept": "dept"}));
    assert_eq!(ready("dept").await.unwrap()["status"], "True");

    // The older pattern goes: the newer one is served and reports ready.
    plane
        .kubectl(["delete", "channel", "dept", "-n", "default"])
        .await
        .unwrap();
    eventually("teams: Ready=True", Duration::from_secs(60), || async {
        ready("teams").await.filter(|c| c["status"] == "True")
    })
    .await;
    eventually("dept:{team} served", Duration::from_secs(60), || async {
        let config = get_json(&plane, &["configmap", "push-node-config", "-n", "default"]).await?;
        served(&config).filter(|c| names(c).contains(&"dept:{team}".to_owned()))
    })
    .await;
}
