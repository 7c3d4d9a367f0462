//! A backend that retries a publish (after a timeout, a 503 or a 429) with the same
//! idempotency key delivers the message once; a key reused for another request, or
//! one that is empty or too long, is refused with a clear code.

mod common;

use std::time::Duration;

use common::{Client, TestNode};
use serde_json::{json, Value};

const KEY: &str = "order-42 \"CORP\\alice\" 🦀";

fn order(user: &str, n: u32) -> Value {
    json!({"channel": "orders", "type": "order_update", "users": [user],
           "data": {"order": n}, "idempotency_key": KEY})
}

async fn count_orders(client: &mut Client) -> Vec<Value> {
    let mut seen = Vec::new();
    while let Some(frame) = client.recv_within(Duration::from_millis(400)).await {
        if frame["type"] == "order_update" {
            seen.push(frame["data"]["order"].clone());
        }
    }
    seen
}

#[tokio::test]
async fn a_retried_publish_with_the_same_key_delivers_once_and_answers_the_first_result() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("CORP\\alice").await;
    let (status, first) = node.publish(&order("CORP\\alice", 1)).await;
    assert_eq!(status, 200, "{first}");
    assert!(first.get("duplicate").is_none());
    for _ in 0..3 {
        let (status, repeat) = node.publish(&order("CORP\\alice", 1)).await;
        assert_eq!(status, 200, "{repeat}");
        assert_eq!(repeat["id"], first["id"]);
        assert_eq!(repeat["offsets"], first["offsets"]);
        assert_eq!(repeat["duplicate"], true);
        assert_eq!(repeat["delivered_locally"], 0);
    }
    // The header form is the same key.
    let mut body = order("CORP\\alice", 1);
    body.as_object_mut().unwrap().remove("idempotency_key");
    let (status, repeat) = node
        .publish_with_headers(&body, &[("Idempotency-Key", "order-42")])
        .await;
    assert_eq!(status, 200);
    assert!(
        repeat.get("duplicate").is_none(),
        "a different key: {repeat}"
    );
    assert_eq!(count_orders(&mut client).await, vec![json!(1), json!(1)]);
    assert_eq!(
        node.metric("herald_publish_idempotent_repeats_total").await,
        3.0
    );
}

#[tokio::test]
async fn a_key_reused_for_a_different_request_is_refused_and_keys_are_per_channel() {
    let node = TestNode::start(&[]);
    let (status, _) = node.publish(&order("7", 1)).await;
    assert_eq!(status, 200);
    for different in [order("7", 2), order("8", 1)] {
        let (status, body) = node.publish(&different).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "idempotency_key_reused");
    }
    // Recipients in another order are the same request.
    let mut both = order("7", 3);
    both["users"] = json!(["7", "8"]);
    both["idempotency_key"] = json!("both");
    assert_eq!(node.publish(&both).await.0, 200);
    both["users"] = json!(["8", "7", "8"]);
    let (status, body) = node.publish(&both).await;
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)), "{body}");
    // The same key on another channel is another key.
    let alert = json!({"channel": "alerts", "type": "alert", "data": {},
                       "idempotency_key": KEY});
    let (status, body) = node.publish(&alert).await;
    assert_eq!(status, 200);
    assert!(body.get("duplicate").is_none());
}

#[tokio::test]
async fn bad_keys_are_refused_before_anything_is_published() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("7").await;
    let long = "k".repeat(129);
    for key in [json!(""), json!(long), json!(7), json!(null)] {
        let mut body = order("7", 1);
        body["idempotency_key"] = key.clone();
        let (status, reply) = node.publish(&body).await;
        if key.is_null() {
            // `null` is the same as leaving the key out.
            assert_eq!(status, 200, "{reply}");
            continue;
        }
        assert_eq!(status, 400, "{key}: {reply}");
        let expected = if key.is_string() {
            "invalid_idempotency_key"
        } else {
            "bad_request"
        };
        assert_eq!(reply["error"]["code"], expected, "{reply}");
    }
    let mut body = order("7", 1);
    body["idempotency_key"] = json!("a");
    let (status, reply) = node
        .publish_with_headers(&body, &[("Idempotency-Key", "b")])
        .await;
    assert_eq!(
        (status, &reply["error"]["code"]),
        (400, &json!("bad_request"))
    );
    let (status, reply) = node
        .publish_with_headers(&json!([order("7", 1)]), &[("Idempotency-Key", "b")])
        .await;
    assert_eq!(
        (status, &reply["error"]["code"]),
        (400, &json!("bad_request"))
    );
    assert_eq!(count_orders(&mut client).await, vec![json!(1)]);
}

#[tokio::test]
async fn batch_items_carry_their_own_keys_and_repeat_independently() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("7").await;
    let item = |n: u32| {
        json!({"channel": "orders", "type": "order_update", "users": ["7"],
               "data": {"order": n}, "idempotency_key": format!("batch-{n}")})
    };
    let (status, first) = node.publish(&json!([item(1), item(2)])).await;
    assert_eq!(status, 200, "{first}");
    let (status, second) = node.publish(&json!([item(2), item(3)])).await;
    assert_eq!(status, 200);
    assert_eq!(second["results"][0]["id"], first["results"][1]["id"]);
    assert_eq!(second["results"][0]["duplicate"], true);
    assert!(second["results"][1].get("duplicate").is_none());
    assert_eq!(
        count_orders(&mut client).await,
        vec![json!(1), json!(2), json!(3)]
    );
}

#[tokio::test]
async fn a_key_is_free_again_after_the_window() {
    let node = TestNode::start(&["--idempotency-window", "300ms"]);
    let (_, first) = node.publish(&order("7", 1)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, again) = node.publish(&order("7", 2)).await;
    assert_eq!(status, 200, "{again}");
    assert_ne!(again["id"], first["id"]);
}

#[tokio::test]
async fn tags_are_part_of_the_request_a_key_stands_for() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("CORP\\alice").await;
    let tagged = |tags: Value| {
        let mut body = order("CORP\\alice", 1);
        body["tags"] = tags;
        body
    };
    let (status, first) = node
        .publish(&tagged(json!({"region": "eu", "who": "CORP\\alice"})))
        .await;
    assert_eq!(status, 200, "{first}");
    // The same tags in another order are the same request.
    let (status, repeat) = node
        .publish(&tagged(json!({"who": "CORP\\alice", "region": "eu"})))
        .await;
    assert_eq!(status, 200, "{repeat}");
    assert_eq!(repeat["duplicate"], true);
    assert_eq!(repeat["id"], first["id"]);
    for different in [
        json!({"region": "us", "who": "CORP\\alice"}),
        json!({"region": "eu"}),
        json!({"region": "eu", "who": "CORP\\alice", "x": ""}),
        json!(null),
    ] {
        let (status, body) = node.publish(&tagged(different.clone())).await;
        assert_eq!(status, 422, "{different}: {body}");
        assert_eq!(body["error"]["code"], "idempotency_key_reused");
    }
    assert_eq!(count_orders(&mut client).await, vec![json!(1)]);
}
