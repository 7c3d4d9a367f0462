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
    // ... and a resume-aware client that then asks for the same explicitly is not
    // sent them twice: the replay starts after what this connection was sent.
    client
        .send_json(json!({"type": "subscribe", "channels": ["orders"], "since": {"orders": first}}))
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["type"], "subscription_success");
    assert_eq!(reply["recovered"]["orders"], true);
    publish_order(&node, "1", 5).await;
    assert_eq!(
        client.recv().await["data"]["n"],
        5,
        "no duplicate before it"
    );
    client.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_since_replay_starts_after_the_later_of_the_offset_and_what_was_sent() {
    let user = "alice's 🦀 desk";
    let node = TestNode::start(&[]);
    let mut client = node.connect(user).await;
    let first = publish_order(&node, user, 1).await;
    publish_order(&node, user, 2).await;
    assert_eq!(client.recv().await["data"]["n"], 1);
    assert_eq!(client.recv().await["data"]["n"], 2);
    client
        .send_json(json!({"type": "unsubscribe", "channels": ["orders"]}))
        .await;
    client.recv_type("unsubscription_success").await;
    publish_order(&node, user, 3).await;
    // The client claims to have seen only 1: 2 was sent here already, 3 was not.
    client
        .send_json(json!({"type": "subscribe", "channels": ["orders"], "since": {"orders": first}}))
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["recovered"]["orders"], true, "{reply}");
    assert_eq!(client.recv().await["data"]["n"], 3);
    client.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn live_copies_racing_a_since_replay_are_not_sent_twice() {
    let user = "bob \"the\" <builder>";
    let node = std::sync::Arc::new(TestNode::start(&[]));
    let mut client = node.connect(user).await;
    let first = publish_order(&node, user, 0).await;
    assert_eq!(client.recv().await["data"]["n"], 0);
    client
        .send_json(json!({"type": "unsubscribe", "channels": ["orders"]}))
        .await;
    client.recv_type("unsubscription_success").await;
    for n in 1..=20 {
        publish_order(&node, user, n).await;
    }
    // Publishing goes on while the client resubscribes with its offset.
    let publisher = {
        let node = node.clone();
        tokio::spawn(async move {
            for n in 21..=60 {
                publish_order(&node, user, n).await;
            }
        })
    };
    client
        .send_json(json!({"type": "subscribe", "channels": ["orders"], "since": {"orders": first}}))
        .await;
    publisher.await.unwrap();
    let mut got = Vec::new();
    while let Some(message) = client.recv_within(Duration::from_millis(500)).await {
        if message["type"] == "order_update" {
            got.push(message["data"]["n"].as_u64().unwrap());
        }
    }
    assert_eq!(got, (1..=60).collect::<Vec<_>>(), "each once, in order");
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

/// A user's `ack_required` channel, auto-subscribed or not.
fn ack_channel(name: &str, auto_subscribe: bool) -> String {
    channel_file(
        name,
        json!([{"name": "tasks", "access": "user", "auto_subscribe": auto_subscribe,
                "history": true, "ack_required": true}]),
    )
}

async fn publish_task(node: &TestNode, user: &str, n: u64) -> String {
    let (status, reply) = node
        .publish(&json!({"channel": "tasks", "type": "task", "users": [user], "data": {"n": n}}))
        .await;
    assert_eq!(status, 200, "{reply}");
    reply["offsets"][0].as_str().unwrap().to_owned()
}

/// Joins `tasks` by `subscribe` unless the channel is auto-subscribed.
async fn join_tasks(client: &mut common::Client, auto_subscribe: bool) {
    if !auto_subscribe {
        client
            .send_json(json!({"type": "subscribe", "channels": ["tasks"]}))
            .await;
        let reply = client.recv().await;
        assert_eq!(reply["channels"], json!(["tasks"]), "{reply}");
    }
}

/// Receives, acks the second of three, reconnects (joining the channel as the
/// channel file says) and checks that exactly the third comes back.
async fn unacked_come_back_when_the_channel_is_joined(auto_subscribe: bool) {
    let user = "carol's ✓ queue";
    let path = ack_channel(&format!("acks-join-{auto_subscribe}"), auto_subscribe);
    let node = TestNode::start(&["--channels", &path]);
    let mut client = node.connect(user).await;
    join_tasks(&mut client, auto_subscribe).await;
    let mut offsets = Vec::new();
    for n in 1..=3 {
        offsets.push(publish_task(&node, user, n).await);
    }
    for n in 1..=3 {
        assert_eq!(client.recv().await["data"]["n"], n);
    }
    client
        .send_json(json!({"type": "ack", "channel": "tasks", "offset": offsets[1]}))
        .await;
    client.assert_alive().await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = node.connect(user).await;
    join_tasks(&mut again, auto_subscribe).await;
    let back = again.recv().await;
    assert_eq!(
        back["data"]["n"], 3,
        "the unacknowledged one comes back: {back}"
    );
    assert_eq!(back["offset"], offsets[2].as_str());
    again.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn unacked_messages_come_back_on_an_auto_subscribed_channel() {
    unacked_come_back_when_the_channel_is_joined(true).await;
}

#[tokio::test]
async fn unacked_messages_come_back_when_the_channel_is_joined_by_subscribe() {
    unacked_come_back_when_the_channel_is_joined(false).await;
}

#[tokio::test]
async fn subscribing_again_to_a_joined_channel_replays_nothing() {
    let user = "dave";
    let node = TestNode::start(&["--channels", &ack_channel("acks-twice", false)]);
    for n in 1..=2 {
        publish_task(&node, user, n).await;
    }
    let mut client = node.connect(user).await;
    client
        .send_json(json!({"type": "subscribe", "channels": ["tasks"]}))
        .await;
    client.recv_type("subscription_success").await;
    for n in 1..=2 {
        assert_eq!(
            client.recv().await["data"]["n"],
            n,
            "offline delivery on join"
        );
    }
    client
        .send_json(json!({"type": "subscribe", "channels": ["tasks"]}))
        .await;
    client.recv_type("subscription_success").await;
    client.expect_silence(Duration::from_millis(300)).await;
}
