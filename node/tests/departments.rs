//! One `dept:{dept}` channel serves every department: a user joins their own
//! departments at connect (as the legacy consumers' `group_add` did), may subscribe
//! to no other department's channel, and each department keeps its own history.

mod common;

use std::time::Duration;

use common::{now, token_with, Client, TestNode};
use serde_json::{json, Value};

fn node() -> (tempfile::TempDir, TestNode) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("channels.json");
    std::fs::write(
        &path,
        json!({"channels": [
            {"name": "dept:{dept}", "access": "authenticated", "auto_subscribe": true,
             "bind": {"dept": "dept"}, "history": true, "capacity": 3},
            {"name": "stock:{sku}", "access": "authenticated", "history": true},
        ]})
        .to_string(),
    )
    .unwrap();
    let node = TestNode::start(&["--channels", path.to_str().unwrap()]);
    (dir, node)
}

async fn connect(node: &TestNode, user: &str, dept: Value) -> Client {
    let token = token_with(json!({"user_id": user, "dept": dept, "exp": now() + 600}));
    node.connect_url(&node.ws_url(&token)).await
}

async fn publish(node: &TestNode, channel: &str, n: u64) -> (u16, Value) {
    node.publish(&json!({"channel": channel, "type": "update", "data": {"n": n}}))
        .await
}

/// (channel, n) of every message until the connection is quiet.
async fn received(client: &mut Client) -> Vec<(String, u64)> {
    let mut got = Vec::new();
    while let Some(frame) = client.recv_within(Duration::from_millis(400)).await {
        if frame["type"] == "update" {
            got.push((
                frame["channel"].as_str().unwrap().to_owned(),
                frame["data"]["n"].as_u64().unwrap(),
            ));
        }
    }
    got
}

fn of(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect()
}

#[tokio::test]
async fn users_join_their_own_departments_at_connect_and_nothing_else() {
    let (_dir, node) = node();
    let mut sales = connect(&node, "CORP\\alice", json!(5)).await;
    let mut two = connect(&node, "o\"brien", json!(["5", 7, "CORP\\x"])).await;
    let mut none = connect(&node, "🦀", json!({"not": "a department"})).await;
    let mut look_alike = connect(&node, "eve", json!("５")).await;
    for (n, channel) in ["dept:5", "dept:7", "dept:6", "dept:5"].iter().enumerate() {
        let (status, body) = publish(&node, channel, n as u64).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        received(&mut sales).await,
        of(&[("dept:5", 0), ("dept:5", 3)])
    );
    assert_eq!(
        received(&mut two).await,
        of(&[("dept:5", 0), ("dept:7", 1), ("dept:5", 3)])
    );
    assert_eq!(received(&mut none).await, of(&[]));
    assert_eq!(received(&mut look_alike).await, of(&[]));
}

#[tokio::test]
async fn another_departments_channel_is_forbidden_and_odd_names_are_unknown() {
    let (_dir, node) = node();
    let mut alice = connect(&node, "alice", json!(5)).await;
    alice
        .send_json(json!({"type": "subscribe", "channels": ["dept:6"]}))
        .await;
    let refused = alice.recv_type("error").await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    for name in [
        "dept:{dept}",
        "dept:5:x",
        "dept:CORP\\alice",
        "dept:🦀",
        "dept:",
    ] {
        alice
            .send_json(json!({"type": "subscribe", "channels": [name]}))
            .await;
        let refused = alice.recv_type("error").await;
        assert_eq!(refused["code"], "unknown_channel", "{name}: {refused}");
        let (status, body) = publish(&node, name, 0).await;
        assert!(status == 404 || status == 400, "{name}: {status} {body}");
    }
    // An unbound pattern admits any concrete channel to anyone its access admits.
    alice
        .send_json(json!({"type": "subscribe", "channels": ["stock:A-1"]}))
        .await;
    alice.recv_type("subscription_success").await;
    publish(&node, "stock:A-1", 9).await;
    publish(&node, "stock:B-2", 10).await;
    publish(&node, "dept:6", 11).await;
    assert_eq!(received(&mut alice).await, of(&[("stock:A-1", 9)]));
}

#[tokio::test]
async fn each_department_keeps_its_own_history_with_the_patterns_capacity() {
    let (_dir, node) = node();
    let mut first = None;
    for n in 0..5 {
        let (_, body) = publish(&node, "dept:5", n).await;
        first.get_or_insert(body["offsets"][0].as_str().unwrap().to_owned());
    }
    publish(&node, "dept:7", 100).await;
    let mut alice = connect(&node, "alice", json!([5, 7])).await;
    alice
        .send_json(
            json!({"type": "subscribe", "channels": ["dept:5", "dept:7"],
                          "since": {"dept:5": first.unwrap(), "dept:7": "0-0"}}),
        )
        .await;
    let reply = alice.recv_type("subscription_success").await;
    // Capacity 3 per department: dept:5 lost messages 1 of 1..4 after the offset.
    assert_eq!(reply["recovered"]["dept:5"], false, "{reply}");
    let got = received(&mut alice).await;
    assert_eq!(
        got,
        of(&[("dept:5", 2), ("dept:5", 3), ("dept:5", 4), ("dept:7", 100)])
    );
    let (status, body) = node
        .http(
            "GET",
            "/api/developer/websocket-messages/?channel=dept:7",
            Some(common::API_KEY),
            String::new(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 1, "{body}");
}
