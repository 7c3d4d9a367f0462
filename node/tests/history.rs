//! History on one node (embedded broker): recovery after reconnect, offline delivery
//! and acknowledgements behave exactly as they do on Redis Cluster.

mod common;

use std::time::Duration;

use common::TestNode;
use serde_json::{json, Value};

fn channel_file(name: &str, channels: Value) -> String {
    let dir = std::env::temp_dir().join(format!("herald-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("channels.json");
    std::fs::write(&path, json!({ "channels": channels }).to_string()).unwrap();
    path.to_string_lossy().into_owned()
}

async fn publish_order(node: &TestNode, user: &str, n: u64) -> String {
    let (status, reply) = node
        .publish(&json!({"channel": "orders", "type": "order_update", "users": [user], "data": {"n": n}}))
        .await;
    assert_eq!(status, 200, "{reply}");
    reply["offsets"][0].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_delivered_message_on_a_history_channel_carries_its_offset() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("1").await;
    let offset = publish_order(&node, "1", 1).await;
    let got = client.recv().await;
    assert_eq!(got["offset"], offset.as_str());
    // Channels without history carry none.
    node.publish(&json!({"channel": "materials", "type": "material_update", "data": {}}))
        .await;
    assert!(client.recv().await.get("offset").is_none());
}

#[tokio::test]
async fn a_client_resubscribing_with_since_gets_exactly_what_it_missed_then_live() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("1").await;
    let first = publish_order(&node, "1", 1).await;
    assert_eq!(client.recv().await["data"]["n"], 1);
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 2..=4 {
        publish_order(&node, "1", n).await;
    }
    // Reconnecting, a legacy client gets what it missed without asking ...
    let mut client = node.connect("1").await;
    let mut got: Vec<u64> = Vec::new();
    while got.len() < 3 {
        let message = client.recv().await;
        got.push(message["data"]["n"].as_u64().unwrap());
    }
    assert_eq!(
        got,
        [2, 3, 4],
        "offline delivery replays what was missed, in order"
    );
    // ... and a client that tracks offsets can ask for the same explicitly.
    client
        .send_json(json!({"type": "subscribe", "channels": ["orders"], "since": {"orders": first}}))
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["type"], "subscription_success");
    assert_eq!(reply["recovered"]["orders"], true);
    let mut replayed = Vec::new();
    for _ in 0..3 {
        replayed.push(client.recv().await["data"]["n"].as_u64().unwrap());
    }
    assert_eq!(replayed, [2, 3, 4]);
    publish_order(&node, "1", 5).await;
    assert_eq!(client.recv().await["data"]["n"], 5);
    client.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn recovery_on_a_broadcast_channel_with_no_gap_and_no_duplicate() {
    let node = TestNode::start(&[]);
    let mut watcher = node.connect("w").await;
    let (_, first) = node
        .publish(&json!({"channel": "alerts", "type": "alert", "data": {"n": 0}}))
        .await;
    let since = first["offsets"][0].as_str().unwrap().to_owned();
    watcher.recv().await;
    for n in 1..=3 {
        node.publish(&json!({"channel": "alerts", "type": "alert", "data": {"n": n}}))
            .await;
    }
    let mut late = node.connect("late").await;
    late.send_json(json!({"type": "unsubscribe", "channels": ["alerts"]}))
        .await;
    late.recv_type("unsubscription_success").await;
    late.send_json(
        json!({"type": "subscribe", "channels": ["alerts"], "since": {"alerts": since}}),
    )
    .await;
    let reply = late.recv().await;
    assert_eq!(reply["recovered"]["alerts"], true, "{reply}");
    let got: Vec<u64> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(late.recv().await["data"]["n"].as_u64().unwrap());
        }
        v
    };
    assert_eq!(got, [1, 2, 3]);
    late.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_gap_older_than_the_history_says_recovered_false() {
    let path = channel_file(
        "gap",
        json!([{"name": "ticks", "access": "authenticated", "history": true, "capacity": 2}]),
    );
    let node = TestNode::start(&["--channels", &path]);
    let mut offsets = Vec::new();
    for n in 0..5 {
        let (_, reply) = node
            .publish(&json!({"channel": "ticks", "type": "tick", "data": {"n": n}}))
            .await;
        offsets.push(reply["offsets"][0].as_str().unwrap().to_owned());
    }
    let mut client = node.connect("1").await;
    client
        .send_json(
            json!({"type": "subscribe", "channels": ["ticks"], "since": {"ticks": offsets[0]}}),
        )
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["recovered"]["ticks"], false, "{reply}");
    // What is still kept is sent anyway, so the client can show it while it refetches.
    assert_eq!(client.recv().await["data"]["n"], 3);
    assert_eq!(client.recv().await["data"]["n"], 4);
}

#[tokio::test]
async fn an_offline_user_receives_queued_personal_messages_on_first_connect() {
    let node = TestNode::start(&[]);
    for n in 1..=3 {
        publish_order(&node, "offline", n).await;
    }
    // Someone else's messages are never replayed to this user.
    publish_order(&node, "someone-else", 99).await;
    let mut client = node.connect("offline").await;
    for n in 1..=3 {
        assert_eq!(client.recv().await["data"]["n"], n);
    }
    client.expect_silence(Duration::from_millis(300)).await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Reconnecting does not replay what was already delivered.
    let mut again = node.connect("offline").await;
    again.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn acked_messages_are_not_redelivered_and_unacked_ones_are() {
    let path = channel_file(
        "acks",
        json!([{"name": "tasks", "access": "user", "auto_subscribe": true, "history": true, "ack_required": true}]),
    );
    let node = TestNode::start(&["--channels", &path]);
    let mut offsets = Vec::new();
    for n in 1..=3 {
        let (_, reply) = node
            .publish(&json!({"channel": "tasks", "type": "task", "users": ["u"], "data": {"n": n}}))
            .await;
        offsets.push(reply["offsets"][0].as_str().unwrap().to_owned());
    }
    let mut client = node.connect("u").await;
    for n in 1..=3 {
        assert_eq!(client.recv().await["data"]["n"], n);
    }
    client
        .send_json(json!({"type": "ack", "channel": "tasks", "offset": offsets[0]}))
        .await;
    client
        .send_json(json!({"type": "ack", "channel": "tasks", "offset": "nonsense"}))
        .await;
    assert_eq!(client.recv().await["code"], "bad_request");
    client.assert_alive().await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = node.connect("u").await;
    assert_eq!(
        again.recv().await["data"]["n"],
        2,
        "unacked messages come back"
    );
    assert_eq!(again.recv().await["data"]["n"], 3);
    again.expect_silence(Duration::from_millis(300)).await;
}
