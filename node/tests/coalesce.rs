//! Coalescing through the real publish API: a burst on a trailing channel reaches a
//! subscriber as one frame per window ending on the last update, a leading channel
//! delivers each window's first message only, every publish answer says what became
//! of its message, and a draining node delivers what it holds at once.

mod common;

use std::time::{Duration, Instant};

use common::{Client, TestNode};
use serde_json::{json, Value};

fn node(channels: Value) -> (tempfile::TempDir, TestNode) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("channels.json");
    std::fs::write(&path, json!({ "channels": channels }).to_string()).unwrap();
    let node = TestNode::start(&["--channels", path.to_str().unwrap()]);
    (dir, node)
}

fn stock(edge: &str, window_ms: u64) -> Value {
    json!({"name": "stock", "access": "authenticated", "history": true, "capacity": 1000,
           "coalesce": {"window_ms": window_ms, "key": "type", "edge": edge}})
}

async fn subscribe(client: &mut Client, channel: &str) {
    client
        .send_json(json!({"type": "subscribe", "channels": [channel]}))
        .await;
    assert_eq!(
        client.recv_type("subscription_success").await["type"],
        "subscription_success"
    );
}

fn update(n: u64) -> Value {
    json!({"channel": "stock", "type": "stock_update", "data": {"sku": "A-1 \"🦀\"", "n": n}})
}

/// `n` of every stock update until the connection is quiet.
async fn received(client: &mut Client, quiet: Duration) -> Vec<u64> {
    let mut got = Vec::new();
    while let Some(frame) = client.recv_within(quiet).await {
        if frame["type"] == "stock_update" {
            got.push(frame["data"]["n"].as_u64().unwrap());
        }
    }
    got
}

#[tokio::test]
async fn a_burst_reaches_a_trailing_subscriber_as_one_frame_per_window_ending_on_the_last() {
    const WINDOW_MS: u64 = 100;
    let (_dir, node) = node(json!([stock("trailing", WINDOW_MS)]));
    let mut client = node.connect("CORP\\alice").await;
    subscribe(&mut client, "stock").await;
    // 1,000 updates spread over one second.
    let start = Instant::now();
    for n in 0..1000u64 {
        let due = start + Duration::from_millis(n);
        tokio::time::sleep_until(due.into()).await;
        let (status, answer) = node.publish(&update(n)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["coalesced"], "pending", "{answer}");
        assert!(answer["window_closes_in_ms"].as_u64().unwrap() <= WINDOW_MS);
        assert!(
            answer.get("offsets").is_none(),
            "held messages are not stored yet"
        );
    }
    // Every publish was accepted within this span, so the node saw a burst no longer.
    let burst_ms = start.elapsed().as_millis() as u64;
    let frames = received(&mut client, Duration::from_millis(2 * WINDOW_MS + 300)).await;
    let bound = burst_ms / WINDOW_MS + 1;
    assert!(
        (1..=bound as usize).contains(&frames.len()),
        "{} frames for a {burst_ms} ms burst (bound {bound}): {frames:?}",
        frames.len()
    );
    assert!(
        frames.len() >= 5,
        "one second of updates spans several windows: {frames:?}"
    );
    assert_eq!(
        frames.last(),
        Some(&999),
        "the last frame carries the last update"
    );
    assert!(frames.windows(2).all(|w| w[0] < w[1]), "{frames:?}");
    assert_eq!(
        node.metric(r#"herald_coalesced_messages_total{channel="stock",edge="trailing"}"#)
            .await,
        (1000 - frames.len()) as f64
    );
    // History holds what was delivered, nothing else: a `since` recovery replays the
    // coalesced state.
    let mut late = node.connect("bob").await;
    late.send_json(json!({"type": "subscribe", "channels": ["stock"], "since": {"stock": "0-0"}}))
        .await;
    let replayed = received(&mut late, Duration::from_millis(300)).await;
    assert_eq!(replayed, frames);
}

#[tokio::test]
async fn a_leading_channel_delivers_each_windows_first_message_and_says_so_for_the_rest() {
    let (_dir, node) = node(json!([stock("leading", 1000)]));
    let mut client = node.connect("CORP\\alice").await;
    subscribe(&mut client, "stock").await;
    let (status, first) = node.publish(&update(1)).await;
    assert_eq!(status, 200);
    assert!(first.get("coalesced").is_none(), "{first}");
    assert_eq!(first["offsets"].as_array().unwrap().len(), 1);
    for n in 2..=5 {
        let (status, answer) = node.publish(&update(n)).await;
        assert_eq!(status, 200);
        assert_eq!(answer["coalesced"], "dropped", "{answer}");
        assert!(
            answer.get("offsets").is_none(),
            "dropped messages are not stored"
        );
    }
    // Another type is another key.
    let (_, other) = node
        .publish(&json!({"channel": "stock", "type": "price", "data": {}}))
        .await;
    assert!(other.get("coalesced").is_none(), "{other}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, next) = node.publish(&update(6)).await;
    assert!(next.get("coalesced").is_none(), "a new window: {next}");
    assert_eq!(
        received(&mut client, Duration::from_millis(300)).await,
        [1, 6]
    );
    assert_eq!(
        node.metric(r#"herald_coalesced_messages_total{channel="stock",edge="leading"}"#)
            .await,
        4.0
    );
}

#[tokio::test]
async fn per_user_windows_never_mix_recipients_and_retries_answer_the_same() {
    let (_dir, node) = node(json!([
        {"name": "orders", "access": "user", "history": true,
         "coalesce": {"window_ms": 200, "key": "type_user", "edge": "trailing"}},
    ]));
    let alice = "CORP\\alice";
    let mut alice_client = node.connect(alice).await;
    let mut bob_client = node.connect("bob").await;
    for client in [&mut alice_client, &mut bob_client] {
        subscribe(client, "orders").await;
    }
    let order = |user: &str, n: u64| json!({"channel": "orders", "type": "order_update", "users": [user], "data": {"n": n}});
    for n in 0..5 {
        for user in [alice, "bob"] {
            let (status, answer) = node.publish(&order(user, n)).await;
            assert_eq!(
                (status, &answer["coalesced"]),
                (200, &json!("pending")),
                "{answer}"
            );
        }
    }
    let mut retried = order(alice, 9);
    retried["idempotency_key"] = json!("retry \"k\" 🦀");
    let (_, first) = node.publish(&retried).await;
    let (_, repeat) = node.publish(&retried).await;
    assert_eq!(repeat["duplicate"], true);
    assert_eq!(
        (&repeat["id"], &repeat["coalesced"]),
        (&first["id"], &json!("pending"))
    );
    let alice_frames = orders(&mut alice_client).await;
    assert_eq!(alice_frames.len(), 1, "{alice_frames:?}");
    assert_eq!(alice_frames[0]["id"], first["id"]);
    assert_eq!(alice_frames[0]["data"]["n"], 9);
    let bob_frames = orders(&mut bob_client).await;
    assert_eq!(bob_frames.len(), 1, "{bob_frames:?}");
    assert_eq!(bob_frames[0]["data"]["n"], 4);
}

async fn orders(client: &mut Client) -> Vec<Value> {
    let mut all = Vec::new();
    while let Some(frame) = client.recv_within(Duration::from_millis(600)).await {
        if frame["type"] == "order_update" {
            all.push(frame);
        }
    }
    all
}

#[tokio::test]
async fn a_draining_node_delivers_held_messages_at_once() {
    let (_dir, mut node) = node(json!([stock("trailing", 60_000)]));
    let mut client = node.connect("CORP\\alice").await;
    subscribe(&mut client, "stock").await;
    for n in 0..3 {
        assert_eq!(node.publish(&update(n)).await.1["coalesced"], "pending");
    }
    let asked = Instant::now();
    node.terminate();
    let frame = client.recv_type("stock_update").await;
    assert_eq!(frame["data"]["n"], 2);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "not the 60 s window"
    );
    node.wait_exit(Duration::from_secs(30));
}

/// A dashboard showing every SKU ends on each SKU's latest quantity: with a tag key,
/// each SKU has windows of its own, and updates without the tag are not held at all.
#[tokio::test]
async fn a_tag_key_coalesces_each_sku_on_its_own_and_ends_on_each_latest() {
    const WINDOW_MS: u64 = 100;
    let (_dir, node) = node(json!([{
        "name": "stock", "access": "authenticated", "history": true, "capacity": 1000,
        "coalesce": {"window_ms": WINDOW_MS, "key": "tag", "tag": "sku", "edge": "trailing"}}]));
    let mut client = node.connect("CORP\\alice").await;
    subscribe(&mut client, "stock").await;
    let skus = ["A-1", "CORP\\b \"2\" 🦀", ""];
    for n in 0..90u64 {
        let sku = skus[(n % 3) as usize];
        let (status, answer) = node
            .publish(&json!({"channel": "stock", "type": "stock_update",
                             "tags": {"sku": sku}, "data": {"sku": sku, "n": n}}))
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["coalesced"], "pending", "{answer}");
    }
    let (status, untagged) = node.publish(&update(1000)).await;
    assert_eq!(status, 200, "{untagged}");
    assert!(
        untagged.get("coalesced").is_none(),
        "no tag, not held: {untagged}"
    );
    let mut last: std::collections::BTreeMap<String, u64> = Default::default();
    let mut frames = 0;
    while let Some(frame) = client
        .recv_within(Duration::from_millis(2 * WINDOW_MS + 300))
        .await
    {
        if frame["type"] == "stock_update" {
            frames += 1;
            last.insert(
                frame["data"]["sku"].as_str().unwrap().to_owned(),
                frame["data"]["n"].as_u64().unwrap(),
            );
        }
    }
    assert_eq!(last[skus[0]], 87);
    assert_eq!(last[skus[1]], 88);
    assert_eq!(last[skus[2]], 89);
    assert_eq!(
        last["A-1 \"🦀\""], 1000,
        "the untagged update went out as it was"
    );
    assert!(frames < 90, "{frames} frames for 91 updates");
}
