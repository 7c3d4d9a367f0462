//! The browser protocol, as the existing front end uses it and as Herald extends it.

mod common;

use std::time::Duration;

use common::{token, Ending, TestNode};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn ping_is_answered_with_a_pong_carrying_utc_time() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("42").await;
    client.send_json(json!({"type": "ping"})).await;
    let pong = client.recv().await;
    assert_eq!(pong["type"], "pong");
    let stamp = pong["timestamp"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(stamp).is_ok(), "{stamp}");
}

#[tokio::test]
async fn the_legacy_subscribe_message_gets_subscription_success() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("42").await;
    client
        .send_json(json!({"type": "subscribe", "channels": ["notifications", "alerts", "orders"]}))
        .await;
    let reply = client.recv().await;
    assert_eq!(
        reply,
        json!({"type": "subscription_success", "channels": ["notifications", "alerts", "orders"]})
    );
}

#[tokio::test]
async fn subscribe_refuses_unknown_channels_one_by_one() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("42").await;
    client
        .send_json(json!({"type": "subscribe", "channels": ["alerts", "nope"]}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "subscription_success", "channels": ["alerts"]})
    );
    let error = client.recv().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "unknown_channel");
    assert_eq!(error["channel"], "nope");
    assert!(error["message"].is_string());
}

#[tokio::test]
async fn unsubscribed_channels_stop_delivering() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("42").await;
    client
        .send_json(json!({"type": "unsubscribe", "channels": ["alerts"]}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "unsubscription_success", "channels": ["alerts"]})
    );
    let (status, _) = node
        .publish(&json!({"channel": "alerts", "type": "alert", "data": {"id": 1}}))
        .await;
    assert_eq!(status, 200);
    client.expect_silence(Duration::from_millis(300)).await;
    // And subscribing again brings it back.
    client
        .send_json(json!({"type": "subscribe", "channels": ["alerts"]}))
        .await;
    client.recv_type("subscription_success").await;
    node.publish(&json!({"channel": "alerts", "type": "alert", "data": {"id": 2}}))
        .await;
    assert_eq!(client.recv().await["data"]["id"], 2);
}

#[tokio::test]
async fn a_client_that_never_subscribes_still_gets_what_the_legacy_app_pushed() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("42").await;
    let pushes = [
        json!({"channel": "notifications", "type": "notification", "users": [42],
               "data": {"id": "n1", "title": "Hi", "content": "c", "type": "info", "is_read": false, "created_at": "2026-01-01T00:00:00Z"}}),
        json!({"channel": "alerts", "type": "alert",
               "data": {"id": "a1", "title": "Disk", "content": "full", "severity": "critical", "status": "open", "created_at": "x"}}),
        json!({"channel": "orders", "type": "order_update", "users": ["42"],
               "data": {"id": 9, "order_no": "PO1", "status": "shipped", "updated_at": "x"}}),
        json!({"channel": "materials", "type": "material_update",
               "data": {"id": 3, "code": "M3", "name": "Paper", "stock_quantity": "12", "updated_at": "x"}}),
    ];
    for push in &pushes {
        let (status, body) = node.publish(push).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["delivered_locally"], 1, "{body}");
    }
    for push in &pushes {
        let got = client.recv().await;
        assert_eq!(got["type"], push["type"]);
        assert_eq!(got["data"], push["data"]);
        assert_eq!(got["channel"], push["channel"]);
        assert!(got["id"].is_string());
    }
}

#[tokio::test]
async fn bad_frames_get_bad_request_and_the_connection_survives() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("7").await;
    let cases = [
        "not json",
        "[1,2,3]",
        r#"{"no_type": true}"#,
        r#"{"type": 5}"#,
        r#"{"type": "dance"}"#,
        r#"{"type": "subscribe"}"#,
        r#"{"type": "subscribe", "channels": "alerts"}"#,
        r#"{"type": "subscribe", "channels": [1, 2]}"#,
        r#"{"type": "subscribe", "channels": ["alerts"], "since": "0"}"#,
        r#"{"type": "unsubscribe", "channels": null}"#,
        r#"{"type": "ack", "channel": 1}"#,
    ];
    for case in cases {
        client.send_text(case).await;
        let reply = client.recv().await;
        assert_eq!(reply["type"], "error", "{case}");
        assert_eq!(reply["code"], "bad_request", "{case}: {reply}");
        assert!(!reply["message"].as_str().unwrap().is_empty());
    }
    client
        .ws
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    let reply = client.recv().await;
    assert_eq!(reply["code"], "bad_request");
    assert!(reply["message"].as_str().unwrap().contains("binary"));
    client.assert_alive().await;
}

#[tokio::test]
async fn a_message_just_under_the_limit_is_read_whole_and_answered() {
    // Far larger than the node's per-connection read buffer (512 B): read in many chunks.
    let node = TestNode::start(&[]);
    let mut client = node.connect("7").await;
    let pad = "x".repeat(16 * 1024 - 64);
    client
        .send_text(&format!(r#"{{"type":"ping","pad":"{pad}"}}"#))
        .await;
    assert_eq!(client.recv_type("pong").await["type"], "pong");
    client.assert_alive().await;
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009_and_the_node_keeps_serving() {
    let node = TestNode::start(&["--max-message-bytes", "1024"]);
    let mut client = node.connect("7").await;
    let huge = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(4096));
    client.send_text(&huge).await;
    assert_eq!(
        client.ending(Duration::from_secs(5)).await,
        Ending::Closed(Some(1009), "message too big".into())
    );
    let mut other = node.connect("8").await;
    other.assert_alive().await;
}

#[tokio::test]
async fn flooding_is_rate_limited_then_disconnected_with_1008() {
    let node = TestNode::start(&["--inbound-rate", "5", "--inbound-burst", "5"]);
    let mut client = node.connect("7").await;
    for _ in 0..7 {
        client.send_json(json!({"type": "ping"})).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    for _ in 0..7 {
        let reply = client.recv().await;
        match reply["type"].as_str().unwrap() {
            "pong" => pongs += 1,
            "error" => {
                assert_eq!(reply["code"], "rate_limited");
                limited += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((pongs, limited), (5, 2));
    // Keep flooding: the connection is closed for policy violation.
    for _ in 0..40 {
        if client
            .ws
            .send(Message::Text(r#"{"type":"ping"}"#.into()))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(
        client.ending(Duration::from_secs(5)).await,
        Ending::Closed(Some(1008), "rate limit exceeded repeatedly".into())
    );
    // A well-behaved client on the same node is unaffected.
    let mut polite = node.connect("8").await;
    polite.assert_alive().await;
}

#[tokio::test]
async fn subscriptions_per_connection_are_capped() {
    let dir = tempdir("subs-cap");
    let channels: Vec<_> = (0..5)
        .map(|i| json!({"name": format!("c{i}"), "access": "authenticated"}))
        .collect();
    let path = dir.join("channels.json");
    std::fs::write(&path, json!({ "channels": channels }).to_string()).unwrap();
    let node = TestNode::start(&[
        "--channels",
        path.to_str().unwrap(),
        "--max-subscriptions",
        "3",
    ]);
    let mut client = node.connect("7").await;
    client
        .send_json(json!({"type": "subscribe", "channels": ["c0", "c1"]}))
        .await;
    client.recv_type("subscription_success").await;
    client
        .send_json(json!({"type": "subscribe", "channels": ["c2", "c3", "c4"]}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "subscription_success", "channels": ["c2"]})
    );
    let error = client.recv().await;
    assert_eq!(error["code"], "too_many_subscriptions");
    assert_eq!(error["channels"], json!(["c3", "c4"]), "one frame for both");
    client.assert_alive().await;
    // A request naming more channels than a connection may hold is refused whole.
    client
        .send_json(json!({"type": "unsubscribe", "channels": ["c0", "c1", "c2"]}))
        .await;
    client.recv_type("unsubscription_success").await;
    client
        .send_json(json!({"type": "subscribe", "channels": ["c0", "c1", "c2", "c3"]}))
        .await;
    let error = client.recv().await;
    assert_eq!(error["code"], "too_many_subscriptions", "{error}");
    assert!(error.get("channel").is_none() && error.get("channels").is_none());
    client.expect_silence(Duration::from_millis(200)).await;
    client
        .send_json(json!({"type": "unsubscribe", "channels": ["c0"]}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "unsubscription_success", "channels": ["c0"]}),
        "nothing was subscribed by the refused request"
    );
}

#[tokio::test]
async fn one_subscribe_naming_a_thousand_unknown_channels_gets_one_frame() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("mallory's <script>").await;
    let names: Vec<String> = (0..1000).map(|i| format!("nope-{i}")).collect();
    client
        .send_json(json!({"type": "subscribe", "channels": names}))
        .await;
    let error = client.recv().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "too_many_subscriptions", "{error}");
    client.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(
        node.metric("herald_subscriptions").await,
        4.0,
        "still the auto ones"
    );
}

#[tokio::test]
async fn refused_channels_are_answered_in_one_error_frame_per_code() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("42").await;
    let mut names: Vec<String> = (0..40).map(|i| format!("nope-{i}")).collect();
    names.push("alerts".into());
    names.push("n\"o'pe".into());
    client
        .send_json(json!({"type": "subscribe", "channels": names}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "subscription_success", "channels": ["alerts"]})
    );
    let error = client.recv().await;
    assert_eq!(error["code"], "unknown_channel");
    assert!(error.get("channel").is_none(), "{error}");
    let mut refused: Vec<&str> = names.iter().map(String::as_str).collect();
    refused.retain(|n| *n != "alerts");
    assert_eq!(error["channels"], json!(refused));
    assert!(error["message"].is_string());
    client.expect_silence(Duration::from_millis(300)).await;
    // Unsubscribing from unknown channels answers the same way.
    client
        .send_json(json!({"type": "unsubscribe", "channels": ["alerts", "x", "y"]}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "unsubscription_success", "channels": ["alerts"]})
    );
    let error = client.recv().await;
    assert_eq!(
        (&error["code"], &error["channels"]),
        (&json!("unknown_channel"), &json!(["x", "y"]))
    );
    client.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn the_token_may_also_come_in_an_authorization_header() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let node = TestNode::start(&[]);
    let mut request = format!("ws://{}/ws/notifications/", node.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token("99")).parse().unwrap(),
    );
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut client = common::Client { ws };
    client.assert_alive().await;
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
