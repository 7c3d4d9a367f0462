//! The legacy front end, unchanged, in a real browser, through a real TLS ingress.
//!
//! Browsers reach Herald as `wss://HOST/ws/notifications/?token=<JWT>` through an ingress that
//! terminates TLS. These stories put every piece of that path in place on loopback: a real
//! `herald-node`, nginx terminating TLS with a certificate from a test CA, and headless
//! Chromium trusting that CA (validation on) and resolving `herald.test` to 127.0.0.1. The page
//! (`e2e/web/`) runs the legacy system's documented WebSocket client code; the harness reads
//! what it received and rendered over the DevTools protocol.
//!
//! When the node behind the ingress dies, the unchanged client's own reconnect brings it back
//! through the ingress to the node that replaced it.
//!
//! The last story configures nginx from a real control plane instead (Ingress, TLS Secret,
//! Service, EndpointSlices; control-plane binaries from `e2e/k8s/build.sh`) and moves traffic
//! by editing an EndpointSlice.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use herald_testkit::browser::{Browser, Launch};
use herald_testkit::ingress::{
    ClusterIngress, ClusterOptions, Config, Ingress, Listen, PodNetwork, Server,
};
use herald_testkit::kube::{apply, ControlPlane};
use herald_testkit::legacy_page::{load_page, open_page, pushes, web_dir, PAGE_WAIT, PUSHES};
use herald_testkit::node::TestNode;
use herald_testkit::tls::TestCa;
use serde_json::{json, Value};

/// The name the browser uses for the ingress.
const HOST: &str = "herald.test";
/// A browser that resolves [`HOST`] to loopback and trusts `ca`.
async fn browser_trusting(ca: &TestCa) -> Result<Browser> {
    Browser::launch(&Launch::ingress(HOST, ca.cert_pem())).await
}

/// Publishes through `node`'s HTTP API and returns how many local connections it reached.
async fn publish(node: &TestNode, body: Value) -> Result<u64> {
    let (status, answer) = node.publish(&body).await;
    ensure!(status == 200, "publish {body} answered {status}: {answer}");
    answer["delivered_locally"]
        .as_u64()
        .with_context(|| format!("publish answered {answer}"))
}

#[tokio::test]
async fn a_browser_behind_the_tls_ingress_sees_exactly_its_own_pushes() -> Result<()> {
    let node = TestNode::start(&[]);
    let ca = TestCa::generate("herald-e2e-ingress-ca").await?;
    let cert = ca.issue(&[HOST]).await?;
    let ingress = Ingress::start(
        Config {
            servers: vec![Server::new(HOST, Some(cert))
                .proxy("/", [node.addr])
                .files("/app/", web_dir())],
        },
        Listen::Https,
    )
    .await?;
    let browser = browser_trusting(&ca).await?;
    let page = ingress.https_url(HOST, "/app/index.html");

    // Alice and Bob open the page in their own browser contexts; the legacy client connects
    // over wss:// through the ingress and subscribes.
    let alice = open_page(&browser, page.clone(), "alice").await?;
    let bob = open_page(&browser, page, "bob").await?;
    let socket_url = alice.evaluate("window.heraldSockets[0].url").await?;
    assert!(
        socket_url
            .as_str()
            .is_some_and(|url| url.starts_with(&format!(
                "wss://{HOST}:{}/ws/notifications/?token=",
                ingress.https_port()
            ))),
        "{socket_url}"
    );
    assert_eq!(
        alice
            .evaluate("document.getElementById('connection-status').textContent")
            .await?,
        "🟢 已连接"
    );

    // A backend publishes a notification and an order update for Alice, then an alert for
    // everyone.
    let notification = json!({"id": 7, "title": "新订单", "content": "PO20231201001 已创建", "type": "order",
               "is_read": false, "created_at": "2026-11-23T10:00:00Z"});
    let order = json!({"id": 42, "order_no": "PO20231201001", "status": "shipped",
                       "updated_at": "2026-11-23T10:00:01Z"});
    let alert = json!({"id": 3, "title": "磁盘告警", "content": "磁盘使用率 95%",
                       "severity": "critical", "status": "active",
                       "created_at": "2026-11-23T10:00:02Z"});
    publish(
        &node,
        json!({"channel": "notifications", "type": "notification",
                          "users": ["alice"], "data": notification}),
    )
    .await?;
    publish(
        &node,
        json!({"channel": "orders", "type": "order_update",
                          "users": ["alice"], "data": order}),
    )
    .await?;
    let reached = publish(
        &node,
        json!({"channel": "alerts", "type": "alert", "data": alert}),
    )
    .await?;
    assert_eq!(reached, 2, "the alert reaches both pages' connections");

    // Alice's page received exactly those three, in order, and rendered them.
    alice
        .wait_for("Alice's alert", &format!("{PUSHES}.length >= 3"), PAGE_WAIT)
        .await?;
    assert_eq!(
        pushes(&alice).await?,
        json!([
            ["notification", notification],
            ["order_update", order],
            ["alert", alert]
        ])
    );
    let rendered = alice
        .evaluate(
            "({count: document.getElementById('notification-count').textContent, \
               toasts: [...document.querySelectorAll('.toast')].map(t => \
                 [t.dataset.type, t.querySelector('.title').textContent, \
                  t.querySelector('.content').textContent]), \
               order: document.getElementById('order-status').textContent, \
               sound: document.getElementById('alert-sound').dataset.played})",
        )
        .await?;
    assert_eq!(
        rendered,
        json!({"count": "1",
               "toasts": [["notification", "新订单", "PO20231201001 已创建"],
                          ["alert", "磁盘告警", "磁盘使用率 95%"]],
               "order": "shipped", "sound": "1"})
    );

    // Bob got the alert, published last, and neither of Alice's messages before it.
    bob.wait_for("Bob's alert", &format!("{PUSHES}.length >= 1"), PAGE_WAIT)
        .await?;
    assert_eq!(pushes(&bob).await?, json!([["alert", alert]]));
    assert_eq!(
        bob.evaluate(
            "[document.getElementById('notification-count').textContent, \
                       document.getElementById('order-status').textContent]"
        )
        .await?,
        json!(["0", "—"])
    );

    // The client's ping goes through the ingress too, and the legacy handler logs the pong.
    alice
        .evaluate("window.heraldSockets[0].send(JSON.stringify({type: 'ping'}))")
        .await?;
    alice
        .wait_for(
            "a pong",
            "window.heraldReceived.some(m => m.type === 'pong')",
            PAGE_WAIT,
        )
        .await?;
    assert!(
        alice.console().iter().any(|l| l.contains("收到pong响应:")),
        "{:?}",
        alice.console()
    );
    alice.close().await?;
    bob.close().await?;
    Ok(())
}

#[tokio::test]
async fn the_browser_refuses_an_ingress_certificate_from_another_ca() -> Result<()> {
    let trusted = TestCa::generate("herald-e2e-trusted-ca").await?;
    let other = TestCa::generate("herald-e2e-other-ca").await?;
    let ingress = Ingress::start(
        Config {
            servers: vec![
                Server::new(HOST, Some(other.issue(&[HOST]).await?)).files("/app/", web_dir())
            ],
        },
        Listen::Https,
    )
    .await?;
    let browser = browser_trusting(&trusted).await?;
    let tab = browser.new_tab().await?;
    let refused = tab
        .navigate(&ingress.https_url(HOST, "/app/index.html"))
        .await
        .expect_err("a certificate from an untrusted CA is refused");
    assert!(
        format!("{refused:#}").contains("ERR_CERT_AUTHORITY_INVALID"),
        "{refused:#}"
    );
    Ok(())
}

#[tokio::test]
async fn the_unchanged_client_reconnects_through_the_ingress_when_its_node_goes_away() -> Result<()>
{
    let (node_a, node_b) = (TestNode::start(&[]), TestNode::start(&[]));
    let ca = TestCa::generate("herald-e2e-ingress-ca").await?;
    let site = |node: &TestNode, cert| Config {
        servers: vec![Server::new(HOST, Some(cert))
            .proxy("/", [node.addr])
            .files("/app/", web_dir())],
    };
    let cert = ca.issue(&[HOST]).await?;
    let mut ingress = Ingress::start(site(&node_a, cert.clone()), Listen::Https).await?;
    let browser = browser_trusting(&ca).await?;
    let tab = open_page(&browser, ingress.https_url(HOST, "/app/index.html"), "dave").await?;

    // The ingress now sends new connections to node B, and node A dies under the open socket.
    ingress.update(site(&node_b, cert)).await?;
    drop(node_a);

    // The legacy client sees the socket close abnormally, waits its 5 s and connects again,
    // through the ingress, to node B, where it subscribes again and gets what is published.
    tab.wait_for(
        "a second subscription",
        "window.heraldReceived.filter(m => m.type === 'subscription_success').length >= 2",
        Duration::from_secs(20),
    )
    .await?;
    let events = tab.evaluate("window.heraldEvents").await?;
    assert_eq!(events, json!(["open", "close 1006", "open"]));
    let hello = json!({"title": "重连", "content": "from B"});
    let reached = publish(
        &node_b,
        json!({"channel": "notifications", "type": "notification",
                                          "users": ["dave"], "data": hello}),
    )
    .await?;
    assert_eq!(reached, 1);
    tab.wait_for(
        "node B's notification",
        &format!("{PUSHES}.length >= 1"),
        PAGE_WAIT,
    )
    .await?;
    assert_eq!(pushes(&tab).await?, json!([["notification", hello]]));
    assert!(
        tab.console().iter().any(|l| l.contains("尝试重新连接...")),
        "{:?}",
        tab.console()
    );
    Ok(())
}

/// A Service without selector (its EndpointSlices are written by hand, as for endpoints
/// outside the cluster) with the port name the operator's Ingress refers to.
fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "herald"},
           "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
}

/// An EndpointSlice of Service `push-node` with one endpoint: stand-in pod IP `pod_ip` (the
/// apiserver refuses loopback addresses; the ingress's [`PodNetwork`] routes it to loopback)
/// and the port of `node`, ready or not.
fn endpoint_slice(name: &str, pod_ip: Ipv4Addr, node: &TestNode, ready: bool) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": name, "namespace": "herald",
                        "labels": {"kubernetes.io/service-name": "push-node",
                                   "endpointslice.kubernetes.io/managed-by": "herald-e2e"}},
           "addressType": "IPv4",
           "ports": [{"name": "http", "port": node.addr.port(), "protocol": "TCP"}],
           "endpoints": [{"addresses": [pod_ip.to_string()], "conditions": {"ready": ready}}]})
}

#[tokio::test]
async fn an_ingress_read_from_the_cluster_routes_to_ready_endpoints_and_follows_them() -> Result<()>
{
    let plane = ControlPlane::start().await?;
    let (node_a, node_b) = (TestNode::start(&[]), TestNode::start(&[]));
    let ca = TestCa::generate("herald-e2e-ingress-ca").await?;
    let cert = ca.issue(&[HOST]).await?;
    let (pod_a, pod_b) = (Ipv4Addr::new(10, 244, 0, 1), Ipv4Addr::new(10, 244, 0, 2));
    let pod_network = PodNetwork::new()
        .route(pod_a.into(), node_a.addr.ip())
        .route(pod_b.into(), node_b.addr.ip());

    // The namespace as the operator leaves it for a PushCluster `push` with an ingress, except
    // that the Service's endpoints are hand-made: node A ready, node B not.
    apply(
        &plane,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "herald"}}),
    )
    .await?;
    apply(
        &plane,
        &json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": "push-tls", "namespace": "herald"},
                "stringData": {"tls.crt": cert.cert_pem, "tls.key": cert.key_pem}}),
    )
    .await?;
    apply(&plane, &service("push-node")).await?;
    apply(&plane, &endpoint_slice("push-node-a", pod_a, &node_a, true)).await?;
    apply(
        &plane,
        &endpoint_slice("push-node-b", pod_b, &node_b, false),
    )
    .await?;
    // What operator/src/resources.rs `ingress()` renders for host herald.test and secret
    // push-tls.
    apply(
        &plane,
        &json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "push", "namespace": "herald", "annotations": {
                    "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
                    "nginx.ingress.kubernetes.io/proxy-send-timeout": "3600"}},
                "spec": {"ingressClassName": "nginx",
                         "tls": [{"hosts": [HOST], "secretName": "push-tls"}],
                         "rules": [{"host": HOST, "http": {"paths": [{
                             "path": "/", "pathType": "Prefix",
                             "backend": {"service": {"name": "push-node",
                                                     "port": {"name": "http"}}}}]}}]}}),
    )
    .await?;

    let options = ClusterOptions {
        extra: Server::new(HOST, None).files("/app/", web_dir()).locations,
        pod_network,
        ..ClusterOptions::default()
    };
    let ingress = ClusterIngress::start(&plane, "herald", "push", options).await?;

    // Only the ready endpoint is an upstream, and the WebSocket timeouts of the annotations are
    // in force instead of nginx's 60 s, so idle sockets stay open for an hour.
    assert_eq!(ingress.upstreams().await, vec![node_a.addr]);
    let rendered = ingress.rendered().await;
    for line in ["proxy_read_timeout 3600s;", "proxy_send_timeout 3600s;"] {
        assert!(rendered.contains(line), "missing {line:?} in\n{rendered}");
    }

    // The page, served under the TLS Secret's certificate, connects to node A.
    let browser = browser_trusting(&ca).await?;
    let page = ingress.https_url(HOST, "/app/index.html");
    let tab = open_page(&browser, page.clone(), "carol").await?;
    let hello = json!({"title": "你好", "content": "from A"});
    let reached = publish(
        &node_a,
        json!({"channel": "notifications", "type": "notification",
                                          "users": ["carol"], "data": hello}),
    )
    .await?;
    assert_eq!(reached, 1);
    tab.wait_for(
        "node A's notification",
        &format!("{PUSHES}.length >= 1"),
        PAGE_WAIT,
    )
    .await?;

    // Node A stops being ready and node B becomes ready: the ingress follows within seconds...
    apply(
        &plane,
        &endpoint_slice("push-node-a", pod_a, &node_a, false),
    )
    .await?;
    apply(&plane, &endpoint_slice("push-node-b", pod_b, &node_b, true)).await?;
    ingress
        .wait_for_upstreams(&[node_b.addr], Duration::from_secs(20))
        .await?;
    let reloads = ingress.reloads();
    assert!(reloads >= 1);

    // ...and the reloaded page's new connection lands on node B.
    load_page(&tab, &page, "carol").await?;
    let moved = json!({"title": "你好", "content": "from B"});
    let reached = publish(
        &node_b,
        json!({"channel": "notifications", "type": "notification",
                                          "users": ["carol"], "data": moved}),
    )
    .await?;
    assert_eq!(reached, 1);
    tab.wait_for(
        "node B's notification",
        &format!("{PUSHES}.length >= 1"),
        PAGE_WAIT,
    )
    .await?;
    assert_eq!(pushes(&tab).await?, json!([["notification", moved]]));

    // Polls that find nothing changed leave nginx alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ingress.reloads(), reloads);
    assert_eq!(ingress.last_error(), None);
    Ok(())
}
