//! Faults and operations: slow consumers, graceful drain, metrics, dev mode.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Ending, TestNode};
use serde_json::json;

#[tokio::test]
async fn a_slow_consumer_is_disconnected_without_harming_others() {
    const MESSAGES: usize = 400;
    let node = TestNode::start(&["--outbound-queue", "16", "--write-timeout", "30s"]);
    // Connected but never reading: its socket buffers fill up, then its queue.
    let stalled = node.connect("slow").await;
    let mut fast = node.connect("fast").await;
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < MESSAGES {
            let message = fast
                .recv_within(Duration::from_secs(20))
                .await
                .expect("fast client keeps receiving");
            assert_eq!(message["data"]["seq"], got);
            got += 1;
        }
        (got, fast)
    });
    let pad = "x".repeat(60 * 1024);
    for seq in 0..MESSAGES {
        let (status, _) = node
            .publish(
                &json!({"channel": "alerts", "type": "alert", "data": {"seq": seq, "pad": pad}}),
            )
            .await;
        assert_eq!(status, 200);
    }
    let (got, mut fast) = reader.await.unwrap();
    assert_eq!(got, MESSAGES);
    let slow_drops = node
        .metric("herald_messages_dropped_total{reason=\"slow_consumer\"}")
        .await;
    assert!(
        slow_drops >= 1.0,
        "slow consumer drops counted: {slow_drops}"
    );
    // The stalled connection is gone from the node.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while node.metric("herald_connections").await != 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stalled connection not closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fast.assert_alive().await;
    drop(stalled);
}

#[tokio::test]
async fn sigterm_drains_clients_with_1012_and_exits_within_the_window() {
    let mut node = TestNode::start(&["--drain-window", "1s"]);
    let mut clients = Vec::new();
    for u in 0..5 {
        clients.push(node.connect(&u.to_string()).await);
    }
    let started = std::time::Instant::now();
    node.terminate();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, ready) = node.http("GET", "/readyz", None, String::new()).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["draining"], true);
    let (status, refusal) = node.refused(&node.ws_url(&common::token("late"))).await;
    assert_eq!(
        (status, refusal["error"]["code"].as_str()),
        (503, Some("draining"))
    );
    for client in &mut clients {
        match client.ending(Duration::from_secs(5)).await {
            Ending::Closed(Some(1012), _) => {}
            other => panic!("expected close 1012, got {other:?}"),
        }
    }
    let status = node
        .wait_exit(Duration::from_secs(5))
        .expect("node exits after draining");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn metrics_count_connections_deliveries_and_latency() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("m").await;
    for n in 0..3 {
        node.publish(&json!({"channel": "alerts", "type": "alert", "data": {"n": n}}))
            .await;
        client.recv().await;
    }
    assert_eq!(node.metric("herald_connections").await, 1.0);
    // The session counts a delivery once its frame is written: the client may read
    // the frame a moment before the counter moves.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while node.metric("herald_messages_delivered_total").await < 3.0
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(node.metric("herald_messages_delivered_total").await >= 3.0);
    assert_eq!(
        node.metric("herald_messages_published_total{channel=\"alerts\"}")
            .await,
        3.0
    );
    assert!(node.metric("herald_delivery_latency_seconds_count").await >= 3.0);
    let (status, health) = node.http("GET", "/healthz", None, String::new()).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (status, ready) = node.http("GET", "/readyz", None, String::new()).await;
    assert_eq!((status, ready["ready"].as_bool()), (200, Some(true)));
}

#[tokio::test]
async fn admin_sessions_lists_connections_behind_the_api_key() {
    let node = TestNode::start(&[]);
    let _a = node.connect("ann").await;
    let _b = node.connect("bob").await;
    let (status, _) = node
        .http(
            "GET",
            "/api/developer/websocket-sessions/",
            None,
            String::new(),
        )
        .await;
    assert_eq!(status, 401);
    let (status, page) = node
        .http(
            "GET",
            "/api/developer/websocket-sessions/?user=ann",
            Some(common::API_KEY),
            String::new(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["count"], 1);
    let session = &page["results"][0]["session"];
    assert_eq!(session["user"], "ann");
    assert_eq!(session["subscriptions"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn dev_mode_prints_a_working_token_and_publish_example() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald-node"));
    command
        .args(["--dev", "--listen", "127.0.0.1:0"])
        .env_remove("HERALD_JWT_SECRET")
        .env_remove("HERALD_API_KEY")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped());
    let node = TestNode::spawn(command);
    let mut banner = Vec::new();
    while let Ok(line) = node
        .stdout
        .lock()
        .unwrap()
        .recv_timeout(Duration::from_secs(5))
    {
        let done = line.contains("curl");
        banner.push(line);
        if done {
            break;
        }
    }
    let field = |label: &str| {
        banner
            .iter()
            .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("banner has {label}: {banner:?}"))
    };
    let api_key = field("API key:");
    let token_line = banner
        .iter()
        .position(|l| l.contains("token (user 1"))
        .expect("token line");
    let token = banner[token_line + 1].trim().to_owned();
    let mut client = node.connect_url(&node.ws_url(&token)).await;
    client.assert_alive().await;
    let (status, _) = node
        .http(
            "POST",
            "/api/v1/publish",
            Some(&api_key),
            json!({"channel":"notifications","type":"notification","users":["1"],"data":{"title":"Hello"}}).to_string(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(client.recv().await["data"]["title"], "Hello");
    let (status, page) = node.http_raw("GET", "/", None, String::new()).await;
    assert_eq!(status, 200);
    let page = String::from_utf8_lossy(&page);
    assert!(page.contains("new WebSocket"));
    assert!(!page.contains("{{TOKEN}}"));
}

#[tokio::test]
async fn publishes_are_traced_to_an_otlp_endpoint_when_configured() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A minimal OTLP/HTTP receiver: records the first export request it gets.
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", receiver.local_addr().unwrap());
    let exported = tokio::spawn(async move {
        let (mut socket, _) = receiver.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 8192];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            let n = tokio::time::timeout_at(deadline, socket.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some(head_end) = text.find("\r\n\r\n") {
                let length: usize = text[..head_end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if request.len() >= head_end + 4 + length {
                    break;
                }
            }
        }
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        request
    });
    let mut command = Command::new(common::binary());
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret",
            common::SECRET,
            "--api-key",
            common::API_KEY,
        ])
        .args(["--otlp-endpoint", &endpoint])
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "warn,herald_node=info")
        .stdout(Stdio::piped());
    let node = TestNode::spawn(command);
    let (status, _) = node
        .publish(&json!({"channel": "alerts", "type": "alert", "data": {}}))
        .await;
    assert_eq!(status, 200);
    let request = tokio::time::timeout(Duration::from_secs(15), exported)
        .await
        .expect("spans exported in time")
        .unwrap();
    let text = String::from_utf8_lossy(&request);
    assert!(text.starts_with("POST /v1/traces"), "{text}");
    assert!(text.contains("herald-node"), "service name in the resource");
    assert!(text.contains("publish"), "the publish span");
}
