//! A channel declares what each message type's `data` looks like; a backend that sends
//! something else gets a 422 naming the failing field, and nothing reaches anyone.

mod common;

use std::time::Duration;

use common::{TestNode, API_KEY};
use serde_json::{json, Value};

const ODD: &str = "CORP\\alice \"qty\" 🦀";

fn order_schema() -> Value {
    json!({"type": "object", "required": ["sku", "qty"],
           "properties": {"sku": {"type": "string", "maxLength": 16},
                          "qty": {"type": "integer", "minimum": 0},
                          ODD: {"type": "boolean"}}})
}

fn file(schema: Value) -> Value {
    json!({"channels": [{"name": "orders", "access": "authenticated", "history": true,
                         "schemas": {"order_update": schema}}]})
}

fn node() -> (tempfile::TempDir, std::path::PathBuf, TestNode) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("channels.json");
    std::fs::write(&path, file(order_schema()).to_string()).unwrap();
    let node = TestNode::start(&[
        "--channels",
        path.to_str().unwrap(),
        "--channels-reload",
        "50ms",
    ]);
    (dir, path, node)
}

fn order(data: Value) -> Value {
    json!({"channel": "orders", "type": "order_update", "data": data})
}

async fn history(node: &TestNode) -> Value {
    let (status, body) = node
        .http(
            "GET",
            "/api/developer/websocket-messages/?channel=orders",
            Some(API_KEY),
            String::new(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn data_that_breaks_the_schema_is_refused_with_its_path_and_nothing_is_delivered() {
    let (_dir, _path, node) = node();
    let mut client = node.connect("o\"brien").await;
    client
        .send_json(json!({"type": "subscribe", "channels": ["orders"]}))
        .await;
    client.recv_type("subscription_success").await;

    for (data, path) in [
        (json!({"sku": "A-1", "qty": "3"}), "/qty"),
        (json!({"sku": "A-1", "qty": -1}), "/qty"),
        (json!({"sku": "x".repeat(17), "qty": 1}), "/sku"),
        (json!({"qty": 1}), ""),
        (
            json!({"sku": "A", "qty": 1, ODD: "yes"}),
            "/CORP\\alice \"qty\" 🦀",
        ),
    ] {
        let (status, body) = node.publish(&order(data.clone())).await;
        assert_eq!(status, 422, "{data}: {body}");
        assert_eq!(body["error"]["code"], "schema_violation", "{body}");
        assert_eq!(body["error"]["instance_path"], path, "{body}");
        assert!(!body["error"]["reason"].as_str().unwrap().is_empty());
    }
    assert_eq!(history(&node).await["count"], 0, "nothing was stored");
    client.expect_silence(Duration::from_millis(300)).await;

    // Valid data, and types without a schema, go through.
    let (status, body) = node
        .publish(&order(json!({"sku": "A-1", "qty": 3, ODD: true})))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = node
        .publish(&json!({"channel": "orders", "type": "note", "data": {"qty": "any"}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(client.recv_type("order_update").await["data"]["qty"], 3);
    assert_eq!(client.recv_type("note").await["data"]["qty"], "any");

    // In a batch, only the item that breaks the schema is refused.
    let batch = json!([
        order(json!({"sku": "B", "qty": 1})),
        order(json!({"sku": "C", "qty": 1.5})),
        order(json!({"sku": "D", "qty": 2}))
    ]);
    let (status, body) = node.publish(&batch).await;
    assert_eq!(status, 200, "{body}");
    let codes: Vec<&Value> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["error"]["code"])
        .collect();
    assert_eq!(
        codes,
        [&Value::Null, &json!("schema_violation"), &Value::Null]
    );
    assert_eq!(body["results"][1]["error"]["instance_path"], "/qty");
    assert_eq!(history(&node).await["count"], 4);
}

#[tokio::test]
async fn a_file_with_a_bad_schema_leaves_the_last_good_schemas_in_force() {
    let (_dir, path, node) = node();
    for bad in [
        json!({"type": "integr"}),
        json!({"$ref": "https://schemas.example.com/order.json"}),
    ] {
        std::fs::write(&path, file(bad.clone()).to_string()).unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (status, body) = node.publish(&order(json!({"sku": "A", "qty": "x"}))).await;
        assert_eq!(status, 422, "{bad}: the old schema still applies: {body}");
        let (_, channels) = node
            .http("GET", "/api/v1/channels", Some(API_KEY), String::new())
            .await;
        assert_eq!(
            channels["channels"][0]["schemas"]["order_update"],
            order_schema()
        );
    }
    // A good change applies.
    std::fs::write(&path, file(json!({"type": "object"})).to_string()).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, body) = node.publish(&order(json!({"sku": "A", "qty": "x"}))).await;
    assert_eq!(status, 200, "{body}");
}
