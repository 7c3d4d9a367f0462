//! A dashboard subscribes to the message types it shows and gets only those, live and
//! when it resumes with `since`; a malformed filter is refused and changes nothing.

mod common;

use std::time::Duration;

use common::{Client, TestNode};
use serde_json::{json, Value};

/// A broadcast channel with history carrying several types, one of them hostile.
const ODD: &str = "CORP\\\"tick\" 🦀";

fn node() -> (tempfile::TempDir, TestNode) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("channels.json");
    std::fs::write(
        &path,
        json!({"channels": [{"name": "stocks", "access": "authenticated", "history": true,
                             "capacity": 100}]})
        .to_string(),
    )
    .unwrap();
    let node = TestNode::start(&["--channels", path.to_str().unwrap()]);
    (dir, node)
}

async fn publish(node: &TestNode, kind: &str, n: u64) -> String {
    let (status, body) = node
        .publish(&json!({"channel": "stocks", "type": kind, "data": {"n": n}}))
        .await;
    assert_eq!(status, 200, "{body}");
    body["offsets"][0].as_str().unwrap().to_owned()
}

/// The (type, n) of every `stocks` message until the connection is quiet.
async fn received(client: &mut Client) -> Vec<(String, u64)> {
    let mut got = Vec::new();
    while let Some(frame) = client.recv_within(Duration::from_millis(400)).await {
        if frame["channel"] == "stocks" {
            got.push((
                frame["type"].as_str().unwrap().to_owned(),
                frame["data"]["n"].as_u64().unwrap(),
            ));
        }
    }
    got
}

async fn subscribe(client: &mut Client, extra: Value) -> Value {
    let mut frame = json!({"type": "subscribe", "channels": ["stocks"]});
    for (key, value) in extra.as_object().unwrap() {
        frame[key] = value.clone();
    }
    client.send_json(frame).await;
    client.recv_type("subscription_success").await
}

fn of(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect()
}

#[tokio::test]
async fn a_filtered_subscription_gets_only_its_types_and_others_get_everything() {
    let (_dir, node) = node();
    let mut prices = node.connect("CORP\\alice").await;
    let mut everything = node.connect("bob").await;
    subscribe(
        &mut prices,
        json!({"filter": {"types": ["price", ODD, "price"]}}),
    )
    .await;
    subscribe(&mut everything, json!({})).await;
    for (n, kind) in ["price", "volume", ODD, "news", "price", "Price"]
        .iter()
        .enumerate()
    {
        publish(&node, kind, n as u64).await;
    }
    assert_eq!(
        received(&mut prices).await,
        of(&[("price", 0), (ODD, 2), ("price", 4)])
    );
    assert_eq!(received(&mut everything).await.len(), 6);
}

#[tokio::test]
async fn a_resume_with_since_through_a_filter_has_no_gap_and_nothing_else() {
    let (_dir, node) = node();
    let filter = json!({"types": ["price"]});
    let mut dashboard = node.connect("7").await;
    subscribe(&mut dashboard, json!({"filter": filter})).await;
    publish(&node, "volume", 0).await;
    let last_price = publish(&node, "price", 1).await;
    assert_eq!(received(&mut dashboard).await, of(&[("price", 1)]));
    drop(dashboard);
    for (n, kind) in ["volume", "price", "news", "price"].iter().enumerate() {
        publish(&node, kind, 2 + n as u64).await;
    }
    let mut dashboard = node.connect("7").await;
    let reply = subscribe(
        &mut dashboard,
        json!({"filter": filter, "since": {"stocks": last_price}}),
    )
    .await;
    assert_eq!(reply["recovered"]["stocks"], true);
    publish(&node, "price", 6).await;
    publish(&node, "volume", 7).await;
    assert_eq!(
        received(&mut dashboard).await,
        of(&[("price", 3), ("price", 5), ("price", 6)])
    );
}

#[tokio::test]
async fn subscribing_again_replaces_the_filter_and_without_one_removes_it() {
    let (_dir, node) = node();
    let mut client = node.connect("7").await;
    subscribe(&mut client, json!({"filter": {"types": ["price"]}})).await;
    publish(&node, "news", 0).await;
    subscribe(&mut client, json!({"filter": {"types": ["news"]}})).await;
    publish(&node, "price", 1).await;
    publish(&node, "news", 2).await;
    assert_eq!(received(&mut client).await, of(&[("news", 2)]));
    subscribe(&mut client, json!({})).await;
    publish(&node, "price", 3).await;
    assert_eq!(received(&mut client).await, of(&[("price", 3)]));
}

#[tokio::test]
async fn malformed_filters_are_refused_and_change_nothing() {
    let (_dir, node) = node();
    let mut client = node.connect("7").await;
    subscribe(&mut client, json!({"filter": {"types": ["price"]}})).await;
    let many: Vec<String> = (0..17).map(|i| format!("t{i}")).collect();
    for bad in [
        json!(5),
        json!(["price"]),
        json!({"types": []}),
        json!({"types": "price"}),
        json!({"types": [1]}),
        json!({"types": ["price"], "tags": {"region": "eu"}}),
        json!({"types": many}),
        json!({"types": ["x".repeat(129)]}),
    ] {
        client
            .send_json(json!({"type": "subscribe", "channels": ["stocks"], "filter": bad}))
            .await;
        let error = client.recv_type("error").await;
        assert_eq!(error["code"], "bad_request", "{bad}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains("filter"),
            "{error}"
        );
    }
    // The subscription and its filter are as they were.
    publish(&node, "news", 0).await;
    publish(&node, "price", 1).await;
    assert_eq!(received(&mut client).await, of(&[("price", 1)]));
}
