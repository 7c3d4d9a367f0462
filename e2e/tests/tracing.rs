//! An SRE follows a publish through Herald in Jaeger: one trace holds the backend's
//! HTTP request on the node that accepted it, the Redis hop, and the delivery on the
//! node where the subscriber is connected; the operator's reconciles show up too.
//! Every story runs real processes on loopback: Jaeger (built by
//! e2e/jaeger/build.sh), a Redis Cluster, herald-node, and for the operator a
//! Kubernetes control plane (built by e2e/k8s/build.sh).

use std::time::Duration;

use herald_testkit::eventually;
use herald_testkit::jaeger::{Jaeger, Span, Trace, TraceQuery};
use herald_testkit::kube::{apply, ControlPlane};
use herald_testkit::node::TestNode;
use herald_testkit::operator::OperatorProcess;
use herald_testkit::redis::RedisCluster;
use serde_json::json;

/// Jaeger, six Redis servers and two nodes (or a control plane) share two cores:
/// one story at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Spans leave a process in batches (every 5 s by default), so a trace is complete
/// only after each process's next export.
const EXPORT_WAIT: Duration = Duration::from_secs(40);

fn only<'a>(trace: &'a Trace, service: &str, operation: &str, instance: &str) -> &'a Span {
    let spans: Vec<&Span> = trace
        .spans(service, operation)
        .into_iter()
        .filter(|s| s.instance() == Some(instance))
        .collect();
    assert_eq!(
        spans.len(),
        1,
        "expected one {operation} span from {instance}\n{}",
        trace.outline()
    );
    spans[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_publish_from_the_http_request_through_redis_to_another_nodes_delivery()
{
    let _serial = SERIAL.lock().await;
    let jaeger = Jaeger::start().await.expect("Jaeger starts");
    let cluster = RedisCluster::start(3, 1)
        .await
        .expect("Redis Cluster starts");
    let url = cluster.url();
    let otlp = jaeger.otlp_endpoint();
    let start = |id: &str| {
        TestNode::start(&[
            "--redis-url",
            &url,
            "--node-id",
            id,
            "--otlp-endpoint",
            &otlp,
        ])
    };
    let (node_a, node_b) = (start("node-a"), start("node-b"));

    // An operator watches alerts on node B, another on node A; a backend publishes
    // through node A.
    let mut watcher = node_b.connect("ops").await;
    watcher.assert_alive().await;
    let mut local_watcher = node_a.connect("CORP\\ops").await;
    local_watcher.assert_alive().await;
    let (status, reply) = node_a
        .publish(&json!({"channel": "alerts", "type": "alert", "data": {"disk": "full"}}))
        .await;
    assert_eq!(status, 200, "{reply}");
    let id = reply["id"].as_str().expect("a message id").to_owned();
    assert_eq!(watcher.recv_type("alert").await["data"]["disk"], "full");
    assert_eq!(
        local_watcher.recv_type("alert").await["data"]["disk"],
        "full"
    );

    // The SRE searches for the delivery on node B by message id...
    let trace_id = eventually("node B's deliver span in Jaeger", EXPORT_WAIT, || {
        let query = TraceQuery::service("herald-node")
            .operation("deliver")
            .tag("message.id", &id);
        let jaeger = &jaeger;
        async move {
            let traces = jaeger.traces(&query).await.expect("Jaeger answers");
            traces
                .into_iter()
                .find(|t| {
                    t.spans("herald-node", "deliver")
                        .iter()
                        .any(|s| s.instance() == Some("node-b"))
                })
                .map(|t| t.id)
        }
    })
    .await;
    // ...and opens one trace that holds the whole path, once node A has exported too.
    let trace = eventually("the whole publish path in one trace", EXPORT_WAIT, || {
        let (jaeger, trace_id) = (&jaeger, &trace_id);
        async move {
            let trace = jaeger.trace(trace_id).await.expect("Jaeger answers")?;
            let complete = trace.spans("herald-node", "deliver").len() == 2
                && trace.spans("herald-node", "POST /api/v1/publish").len() == 1
                && trace.spans("herald-node", "broker.publish").len() == 1;
            complete.then_some(trace)
        }
    })
    .await;

    let request = only(&trace, "herald-node", "POST /api/v1/publish", "node-a");
    assert_eq!(request.parent_id, None, "the HTTP request is the root");
    assert_eq!(request.tag("span.kind"), Some("server"));
    assert_eq!(request.tag("http.response.status_code"), Some("200"));

    let publish = only(&trace, "herald-node", "publish", "node-a");
    assert_eq!(publish.parent_id.as_deref(), Some(request.id.as_str()));
    assert_eq!(publish.tag("id"), Some(id.as_str()));

    let hop = only(&trace, "herald-node", "broker.publish", "node-a");
    assert_eq!(hop.parent_id.as_deref(), Some(publish.id.as_str()));
    assert_eq!(hop.tag("span.kind"), Some("producer"));
    assert_eq!(hop.tag("db.system"), Some("redis"));
    assert_eq!(hop.tag("channel"), Some("alerts"));
    assert_eq!(hop.tag("stream"), Some("herald:{c:alerts}:log"));
    assert!(hop.tag("offset").is_some(), "{:?}", hop.tags);

    // Node B's delivery continues the trace carried inside the message.
    let remote = only(&trace, "herald-node", "deliver", "node-b");
    assert_eq!(
        remote.parent_id.as_deref(),
        Some(hop.id.as_str()),
        "{}",
        trace.outline()
    );
    assert_eq!(remote.tag("span.kind"), Some("consumer"));
    assert_eq!(remote.tag("message.id"), Some(id.as_str()));
    assert_eq!(remote.tag("recipients"), Some("1"), "the watcher");

    // Node A delivers its own publish the way node B does, when it comes back from
    // Redis (so a channel's messages reach every node in offset order): the same
    // place in the trace.
    let local = only(&trace, "herald-node", "deliver", "node-a");
    assert_eq!(
        local.parent_id.as_deref(),
        Some(hop.id.as_str()),
        "{}",
        trace.outline()
    );
    assert_eq!(local.tag("recipients"), Some("1"), "the local watcher");
    assert!(trace.descends_from(remote, request));

    // A backend that traces its own work passes its context along: Herald's spans,
    // on both nodes, land inside the backend's trace.
    let backend_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let backend_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{backend_trace}-{backend_span}-01");
    let (status, reply) = node_a
        .publish_with_headers(
            &json!({"channel": "alerts", "type": "alert", "data": {"disk": "ok"}}),
            &[("traceparent", &traceparent)],
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(watcher.recv_type("alert").await["data"]["disk"], "ok");
    let trace = eventually("Herald's spans in the backend's trace", EXPORT_WAIT, || {
        let jaeger = &jaeger;
        async move {
            let trace = jaeger.trace(backend_trace).await.expect("Jaeger answers")?;
            let delivered_on_b = trace
                .spans("herald-node", "deliver")
                .iter()
                .any(|s| s.instance() == Some("node-b"));
            let requested = trace.spans("herald-node", "POST /api/v1/publish").len() == 1;
            (delivered_on_b && requested).then_some(trace)
        }
    })
    .await;
    let request = only(&trace, "herald-node", "POST /api/v1/publish", "node-a");
    assert_eq!(request.parent_id.as_deref(), Some(backend_span));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_exports_its_reconciles() {
    let _serial = SERIAL.lock().await;
    let jaeger = Jaeger::start().await.expect("Jaeger starts");
    let plane = ControlPlane::start().await.expect("control plane starts");
    let crds = format!("{}/../crds", env!("CARGO_MANIFEST_DIR"));
    plane
        .kubectl(["apply", "-f", &crds])
        .await
        .expect("CRDs apply");
    plane
        .kubectl([
            "wait",
            "--for",
            "condition=established",
            "crd/channels.herald.dev",
            "--timeout=60s",
        ])
        .await
        .expect("CRDs established");
    let mut operator = OperatorProcess::start(
        &plane.kubeconfig_path(),
        "op-traced",
        &["--otlp-endpoint", &jaeger.otlp_endpoint()],
    );
    assert!(
        operator.wait_leading(Duration::from_secs(30)),
        "operator leads"
    );
    apply(
        &plane,
        &json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Channel",
                "metadata": {"name": "alerts", "namespace": "default"},
                "spec": {"cluster": "push", "access": "authenticated"}}),
    )
    .await
    .expect("Channel applies");

    let reconcile = eventually("a reconcile span of the Channel", EXPORT_WAIT, || {
        let query = TraceQuery::service("herald-operator")
            .operation("reconcile")
            .tag("k8s.object.name", "alerts");
        let jaeger = &jaeger;
        async move {
            let traces = jaeger.traces(&query).await.expect("Jaeger answers");
            traces
                .into_iter()
                .flat_map(|t| t.spans)
                .find(|s| s.operation == "reconcile")
        }
    })
    .await;
    let services = jaeger.services().await.expect("Jaeger answers");
    assert!(
        services.iter().any(|s| s == "herald-operator"),
        "{services:?}"
    );
    assert_eq!(reconcile.instance(), Some("op-traced"));
    assert_eq!(reconcile.tag("kind"), Some("Channel"));
    assert_eq!(reconcile.tag("k8s.namespace.name"), Some("default"));
    assert_eq!(reconcile.tag("object"), Some("default/alerts"));
}
