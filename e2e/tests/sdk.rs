//! Front-end developers build on the SDK (`clients/js`) and get what it promises on the
//! real thing: its own integration suite passes against a real node in both auth modes,
//! and pages built on it in headless Chromium, behind a TLS ingress, on three nodes
//! sharing a Redis Cluster, receive every message a backend published exactly once and in
//! order per channel while one node drains, another is SIGKILLed and a Redis master dies.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use herald_testkit::browser::{Browser, Launch};
use herald_testkit::ingress::{Config, Ingress, Listen, Server};
use herald_testkit::legacy_page::{sdk_copy, sdk_dist, web_dir};
use herald_testkit::node::{token, TestNode, API_KEY, SECRET};
use herald_testkit::redis::RedisCluster;
use herald_testkit::tls::TestCa;
use serde_json::{json, Value};

const HOST: &str = "herald.test";
/// User ids that need escaping in JSON and in URLs, and one plain one.
const USERS: [&str; 3] = ["CORP\\alice", "o\"brien 🦀", "bob"];

/// The four default channels plus a per-user `tasks` channel with acks, for the SDK's
/// ack story.
fn channel_file(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("channels.json");
    let user = |name: &str, kind: &str| {
        json!({"name": name, "access": "user", "auto_subscribe": true,
               "allowed_types": [kind], "history": true})
    };
    let broadcast = |name: &str, kind: &str, history: bool| {
        json!({"name": name, "access": "authenticated", "auto_subscribe": true,
               "allowed_types": [kind], "history": history})
    };
    let channels = json!({"channels": [
        user("notifications", "notification"),
        user("orders", "order_update"),
        broadcast("alerts", "alert", true),
        broadcast("materials", "material_update", false),
        {"name": "tasks", "access": "user", "history": true, "ack_required": true},
    ]});
    std::fs::write(&path, channels.to_string()).unwrap();
    path
}

#[tokio::test]
async fn the_sdks_own_integration_suite_passes_against_a_real_node_in_both_auth_modes() -> Result<()>
{
    sdk_dist()?;
    let dir = tempfile::tempdir()?;
    let channels = channel_file(&dir);
    let node = TestNode::start(&["--channels", channels.to_str().unwrap()]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/js/run-tests.sh");
    for mode in ["message", "query"] {
        let output = tokio::process::Command::new("bash")
            .arg(&script)
            .arg("integration")
            .env(
                "HERALD_WS_URL",
                format!("ws://{}/ws/notifications/", node.addr),
            )
            .env("HERALD_HTTP_URL", format!("http://{}", node.addr))
            .env("HERALD_API_KEY", API_KEY)
            .env("HERALD_JWT_SECRET", SECRET)
            .env("HERALD_ACK_CHANNEL", "tasks")
            .env("HERALD_AUTH_MODE", mode)
            .output()
            .await
            .context("running clients/js/run-tests.sh integration")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        ensure!(output.status.success(), "auth mode {mode}:\n{text}");
        // Every test ran, none was skipped (the ack story needs HERALD_ACK_CHANNEL).
        ensure!(
            text.contains("# skipped 0") && text.contains("# fail 0"),
            "auth mode {mode}:\n{text}"
        );
    }
    Ok(())
}

/// What the backend had accepted (answered 200), in publish order.
#[derive(Default)]
struct Accepted {
    alerts: Vec<u64>,
    orders: Vec<Vec<u64>>,
}

/// Publishes one alert and one order per user every `period` through `node` until `stop`,
/// each with an idempotency key, retrying a refused publish with the same key (a 503
/// while Redis fails over) until it is accepted.
async fn publish_until(node: Arc<TestNode>, stop: Arc<AtomicBool>, period: Duration) -> Accepted {
    let mut accepted = Accepted {
        alerts: Vec::new(),
        orders: vec![Vec::new(); USERS.len()],
    };
    let send = |body: Value| {
        let node = node.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let (status, answer) = node.publish(&body).await;
                if status == 200 {
                    return;
                }
                assert!(
                    matches!(status, 503 | 409) && tokio::time::Instant::now() < deadline,
                    "publish {body} answered {status}: {answer}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        send(
            json!({"channel": "alerts", "type": "alert", "data": {"seq": seq},
                    "idempotency_key": format!("alert-{seq}")}),
        )
        .await;
        accepted.alerts.push(seq);
        for (i, user) in USERS.iter().enumerate() {
            send(
                json!({"channel": "orders", "type": "order_update", "users": [user],
                        "data": {"seq": seq, "user": user},
                        "idempotency_key": format!("order-{i}-{seq}")}),
            )
            .await;
            accepted.orders[i].push(seq);
        }
        seq += 1;
        tokio::time::sleep(period).await;
    }
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_pages_get_every_message_once_in_order_through_a_drain_a_kill_and_a_redis_failover(
) -> Result<()> {
    let served = sdk_copy()?;
    let dist = served.path().to_path_buf();
    let mut cluster = RedisCluster::start(3, 1).await?;
    let url = cluster.url();
    let start = |i: usize| {
        let id = format!("sdk-node-{i}");
        TestNode::start(&[
            "--redis-url",
            &url,
            "--node-id",
            &id,
            "--drain-window",
            "2s",
        ])
    };
    let (draining, killed, survivor) = (start(0), start(1), Arc::new(start(2)));
    let ca = TestCa::generate("herald-e2e-sdk-ca").await?;
    let cert = ca.issue(&[HOST]).await?;
    let site = |upstreams: Vec<SocketAddr>| Config {
        servers: vec![Server::new(HOST, Some(cert.clone()))
            .proxy("/", upstreams)
            .files("/app/", web_dir())
            .files("/sdk/", dist.clone())],
    };
    let mut ingress = Ingress::start(
        site(vec![draining.addr, killed.addr, survivor.addr]),
        Listen::Https,
    )
    .await?;
    let browser = Browser::launch(&Launch::ingress(HOST, ca.cert_pem())).await?;
    let page = ingress.https_url(HOST, "/app/sdk.html");
    let mut tabs = Vec::new();
    for user in USERS {
        let tab = browser.new_tab().await?;
        tab.navigate(&format!("{page}?token={}", token(user)))
            .await?;
        tab.wait_for(
            &format!("{user}'s page to connect"),
            "window.sdkEvents.some(e => e[0] === 'connected')",
            Duration::from_secs(15),
        )
        .await?;
        tabs.push(tab);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let publisher = tokio::spawn(publish_until(
        survivor.clone(),
        stop.clone(),
        Duration::from_millis(150),
    ));
    // The node going away is taken out of the ingress first, as Kubernetes takes a
    // terminating pod out of its Service's endpoints.
    tokio::time::sleep(Duration::from_secs(2)).await;
    ingress
        .update(site(vec![killed.addr, survivor.addr]))
        .await?;
    draining.terminate();
    tokio::time::sleep(Duration::from_secs(4)).await;
    ingress.update(site(vec![survivor.addr])).await?;
    drop(killed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let port = cluster.kill_master(0)?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    let accepted = publisher.await?;
    ensure!(
        accepted.alerts.len() > 20,
        "only {} rounds were published",
        accepted.alerts.len()
    );

    for (i, (user, tab)) in USERS.iter().zip(&tabs).enumerate() {
        let want = accepted.alerts.len() + accepted.orders[i].len();
        let received = tab
            .wait_for(
                &format!("{user}'s page to receive all {want} messages"),
                &format!(
                    "window.sdkReceived.filter(m => m.channel === 'alerts' || m.channel === 'orders').length >= {want} \
                     && window.sdkReceived"
                ),
                Duration::from_secs(40),
            )
            .await
            .with_context(|| format!("killed Redis master on port {port}"))?;
        let seqs = |channel: &str| -> Vec<u64> {
            received
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["channel"] == channel)
                .map(|m| m["data"]["seq"].as_u64().unwrap())
                .collect()
        };
        assert_eq!(seqs("alerts"), accepted.alerts, "{user}'s alerts");
        assert_eq!(seqs("orders"), accepted.orders[i], "{user}'s orders");
        assert!(
            received
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["channel"] == "orders")
                .all(|m| m["data"]["user"] == *user),
            "{user} got only their own orders"
        );
        // A few more frames must not arrive late: still exactly what was published.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let count = tab
            .evaluate("window.sdkReceived.filter(m => m.channel === 'alerts' || m.channel === 'orders').length")
            .await?;
        assert_eq!(count, json!(want), "{user}: duplicates arrived late");
        let events = tab.evaluate("window.sdkEvents").await?;
        let reconnects = events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e[0] == "connected")
            .count();
        eprintln!("{user}: {want} messages, {reconnects} connections: {events}");
        ensure!(
            !events
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e[0] == "subscribed" && e[2] == false),
            "{user}: a gap was reported unrecoverable: {events}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_developer_trying_herald_dev_sees_a_publish_arrive_on_the_sdk_demo_page() -> Result<()> {
    let node = TestNode::start(&["--dev"]);
    let browser = Browser::launch(&Launch::new()).await?;
    let tab = browser.new_tab().await?;
    tab.navigate(&format!("http://{}/", node.addr)).await?;
    tab.wait_for(
        "the demo page to connect through the SDK",
        "document.getElementById('status').textContent === 'connected'",
        Duration::from_secs(15),
    )
    .await?;
    tab.evaluate(
        "document.getElementById('data').value = JSON.stringify({title: 'Hello \"CORP\\\\alice\" 🦀'}); \
         document.getElementById('publish').click()",
    )
    .await?;
    let shown = tab
        .wait_for(
            "the published notification on the page",
            "[...document.querySelectorAll('#log li')].map(li => li.textContent)\
               .find(t => t.startsWith('notification'))",
            Duration::from_secs(15),
        )
        .await?;
    let shown = shown.as_str().unwrap_or_default();
    assert!(
        shown.contains(r#""title":"Hello \"CORP\\alice\" 🦀""#),
        "{shown}"
    );
    // The push can arrive before the page has read the publish's answer.
    tab.wait_for(
        "the page's publish to be answered 200",
        "document.getElementById('published').textContent.startsWith('200 ')",
        Duration::from_secs(15),
    )
    .await?;
    Ok(())
}
