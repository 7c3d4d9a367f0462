//! A dashboard subscribes to the message types (and tag values) it shows and gets
//! only those, live and when it resumes with `since`; a malformed filter is refused
//! and changes nothing; tags outside the limits are refused at publish.

mod common;

use std::time::Duration;

use common::{Client, TestNode, API_KEY};
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

/// A tag value JSON must escape, and one that looks like an ASCII one.
const WHO: &str = "CORP\\alice \"🦀\"";
const LOOKALIKE: &str = "еu"; // Cyrillic "е"

async fn publish_tagged(node: &TestNode, kind: &str, n: u64, tags: Value) -> String {
    let (status, body) = node
        .publish(&json!({"channel": "stocks", "type": kind, "data": {"n": n}, "tags": tags}))
        .await;
    assert_eq!(status, 200, "{body}");
    body["offsets"][0].as_str().unwrap().to_owned()
}

/// The (n, tags) of every `stocks` message until the connection is quiet.
async fn received_tags(client: &mut Client) -> Vec<(u64, Option<Value>)> {
    let mut got = Vec::new();
    while let Some(frame) = client.recv_within(Duration::from_millis(400)).await {
        if frame["channel"] == "stocks" {
            got.push((
                frame["data"]["n"].as_u64().unwrap(),
                frame.get("tags").cloned(),
            ));
        }
    }
    got
}

fn ns(got: &[(u64, Option<Value>)]) -> Vec<u64> {
    got.iter().map(|(n, _)| *n).collect()
}

#[tokio::test]
async fn tag_filters_select_by_equality_and_membership_and_frames_carry_the_tags() {
    let (_dir, node) = node();
    let mut eu = node.connect("CORP\\alice").await;
    let mut skus = node.connect("bob").await;
    let mut eu_prices = node.connect("carol").await;
    let mut everything = node.connect("dave").await;
    subscribe(
        &mut eu,
        json!({"filter": {"tags": {"region": {"eq": "eu"}}}}),
    )
    .await;
    subscribe(
        &mut skus,
        json!({"filter": {"tags": {"sku": {"in": ["A-1", WHO]}, "region": {"in": ["eu", "us"]}}}}),
    )
    .await;
    subscribe(
        &mut eu_prices,
        json!({"filter": {"types": ["price"], "tags": {"region": {"eq": "eu"}}}}),
    )
    .await;
    subscribe(&mut everything, json!({})).await;
    let published = [
        ("price", json!({"region": "eu", "sku": "A-1"})),
        ("price", json!({"region": "us", "sku": WHO})),
        ("volume", json!({"region": "eu"})),
        ("price", json!({"region": LOOKALIKE, "sku": "A-1"})),
        ("price", json!(null)),
        ("price", json!({"region": "eu", "sku": "B-2"})),
        ("price", json!({"sku": "A-1"})),
        ("price", json!({})),
    ];
    for (n, (kind, tags)) in published.iter().enumerate() {
        publish_tagged(&node, kind, n as u64, tags.clone()).await;
    }
    assert_eq!(ns(&received_tags(&mut eu).await), [0, 2, 5]);
    assert_eq!(ns(&received_tags(&mut skus).await), [0, 1]);
    assert_eq!(ns(&received_tags(&mut eu_prices).await), [0, 5]);
    let all = received_tags(&mut everything).await;
    assert_eq!(ns(&all), [0, 1, 2, 3, 4, 5, 6, 7]);
    // Frames carry the tags as published, and no "tags" key when there are none.
    assert_eq!(all[1].1, Some(json!({"region": "us", "sku": WHO})));
    assert_eq!(all[3].1, Some(json!({"region": LOOKALIKE, "sku": "A-1"})));
    assert_eq!(all[4].1, None);
    assert_eq!(all[7].1, None);
}

#[tokio::test]
async fn a_resume_with_since_through_a_tag_filter_has_no_gap_and_nothing_else() {
    let (_dir, node) = node();
    let filter = json!({"tags": {"who": {"eq": WHO}}});
    let mine = json!({"who": WHO});
    let other = json!({"who": "CORP\\bob"});
    let mut dashboard = node.connect("7").await;
    subscribe(&mut dashboard, json!({"filter": filter})).await;
    publish_tagged(&node, "price", 0, other.clone()).await;
    let last = publish_tagged(&node, "price", 1, mine.clone()).await;
    assert_eq!(ns(&received_tags(&mut dashboard).await), [1]);
    drop(dashboard);
    publish_tagged(&node, "price", 2, other.clone()).await;
    publish_tagged(&node, "news", 3, mine.clone()).await;
    publish(&node, "price", 4).await;
    publish_tagged(&node, "price", 5, mine.clone()).await;
    let mut dashboard = node.connect("7").await;
    let reply = subscribe(
        &mut dashboard,
        json!({"filter": filter, "since": {"stocks": last}}),
    )
    .await;
    assert_eq!(reply["recovered"]["stocks"], true);
    publish_tagged(&node, "price", 6, mine.clone()).await;
    publish_tagged(&node, "price", 7, other).await;
    let got = received_tags(&mut dashboard).await;
    assert_eq!(ns(&got), [3, 5, 6]);
    // Replayed frames carry their tags too.
    assert!(
        got.iter().all(|(_, tags)| tags.as_ref() == Some(&mine)),
        "{got:?}"
    );
}

#[tokio::test]
async fn malformed_tag_filters_are_refused_and_change_nothing() {
    let (_dir, node) = node();
    let mut client = node.connect("7").await;
    subscribe(
        &mut client,
        json!({"filter": {"tags": {"region": {"eq": "eu"}}}}),
    )
    .await;
    let many: serde_json::Map<String, Value> = (0..9)
        .map(|i| (format!("k{i}"), json!({"eq": "v"})))
        .collect();
    let long_in: Vec<String> = (0..33).map(|i| i.to_string()).collect();
    for bad in [
        json!({}),
        json!({"tags": {}}),
        json!({"tags": {"region": "eu"}}),
        json!({"tags": {"region": {"eq": ["eu"]}}}),
        json!({"tags": {"region": {"neq": "eu"}}}),
        json!({"tags": {"region": {"eq": "eu", "in": ["eu"]}}}),
        json!({"tags": {"region": {"in": []}}}),
        json!({"tags": {"region": {"in": long_in}}}),
        json!({"tags": many}),
        json!({"tags": {"CORP\\alice": {"eq": "x"}}}),
        json!({"tags": {"region": {"eq": "x".repeat(257)}}}),
        json!({"types": ["price"], "tags": [["region", "eu"]]}),
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
    publish_tagged(&node, "price", 0, json!({"region": "us"})).await;
    publish_tagged(&node, "price", 1, json!({"region": "eu"})).await;
    assert_eq!(ns(&received_tags(&mut client).await), [1]);
}

#[tokio::test]
async fn tags_outside_the_limits_are_refused_at_publish_and_nothing_is_delivered() {
    let (_dir, node) = node();
    let mut client = node.connect("7").await;
    subscribe(&mut client, json!({})).await;
    let many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let refused = [
        (json!(["eu"]), "must be an object"),
        (json!("region=eu"), "must be an object"),
        (json!({"region": 5}), "string value"),
        (json!({"region": {"eq": "eu"}}), "string value"),
        (json!({"": "x"}), "1 to 64 bytes"),
        (json!({"k".repeat(65): "x"}), "1 to 64 bytes"),
        (json!({"CORP\\alice": "x"}), "1 to 64 bytes"),
        (json!({"region": "x".repeat(257)}), "at most 256"),
        (json!(many), "more than 16"),
    ];
    for (tags, says) in &refused {
        let body = json!({"channel": "stocks", "type": "price", "data": {"n": 0}, "tags": tags});
        let (status, answer) = node.publish(&body).await;
        assert_eq!(status, 422, "{tags}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_tags", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{tags}: {message}");
    }
    // Repeated keys are refused too (serde_json's Value would keep only the last one).
    let (status, answer) = node
        .http(
            "POST",
            "/api/v1/publish",
            Some(API_KEY),
            r#"{"channel":"stocks","type":"price","data":{"n":0},"tags":{"a":"1","a":"2"}}"#.into(),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("twice"),
        "{answer}"
    );
    // In a batch, each item is judged on its own.
    let batch = json!([
        {"channel": "stocks", "type": "price", "data": {"n": 1}, "tags": {"region": "eu"}},
        {"channel": "stocks", "type": "price", "data": {"n": 2}, "tags": {"region": 1}},
    ]);
    let (status, answer) = node.publish(&batch).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["results"][0]["id"].is_string(), "{answer}");
    assert_eq!(answer["results"][1]["status"], 422);
    assert_eq!(answer["results"][1]["error"]["code"], "invalid_tags");
    let got = received_tags(&mut client).await;
    assert_eq!(got, [(1, Some(json!({"region": "eu"})))]);
}
