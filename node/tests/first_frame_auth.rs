//! A client that cannot read HTTP refusals (a browser) opens with `?auth=message`
//! and sends its token in its first frame: it hears `auth_success`, or one `error`
//! frame and a documented 4xxx close, and a refused connection gets nothing else.

mod common;

use std::time::Duration;

use common::{now, token, token_with, Client, Ending, TestNode};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(5);
/// A user id that needs JSON escaping, with a look-alike of its own.
const HOSTILE: &str = "CORP\\alice \"o'brien\" 🦀";

fn first_frame_url(node: &TestNode) -> String {
    format!("ws://{}/ws/notifications/?auth=message", node.addr)
}

async fn open(node: &TestNode) -> Client {
    node.connect_url(&first_frame_url(node)).await
}

/// Reads the next frame and the close that must follow it; the frame is the refusal.
async fn refusal(client: &mut Client) -> (Value, Ending) {
    let error = client.recv().await;
    (error, client.ending(WAIT).await)
}

#[tokio::test]
async fn a_token_in_the_first_frame_opens_the_connection_with_everything_a_url_token_gets() {
    let node = TestNode::start(&[]);
    // Offline delivery: published before the user connects.
    let (status, _) = node
        .publish(
            &json!({"channel": "orders", "type": "order_update", "users": [HOSTILE],
                         "data": {"order": "PO-1"}}),
        )
        .await;
    assert_eq!(status, 200);
    let mut client = open(&node).await;
    client
        .send_json(json!({"type": "auth", "token": token(HOSTILE)}))
        .await;
    let success = client.recv().await;
    assert_eq!(success, json!({"type": "auth_success", "user_id": HOSTILE}));
    let offline = client.recv_type("order_update").await;
    assert_eq!(offline["data"]["order"], "PO-1");
    // Auto-subscribed channels are live, and only this user's messages arrive.
    for user in [
        HOSTILE,
        "CORP\\alice \"o'brien\" 🦀 ",
        "corp\\alice \"o'brien\" 🦀",
    ] {
        let (status, _) = node
            .publish(&json!({"channel": "notifications", "type": "notification",
                             "users": [user], "data": {"for": user}}))
            .await;
        assert_eq!(status, 200);
    }
    let live = client.recv_type("notification").await;
    assert_eq!(live["data"]["for"], HOSTILE);
    client.expect_silence(Duration::from_millis(300)).await;
    client
        .send_json(json!({"type": "subscribe", "channels": ["alerts"]}))
        .await;
    assert_eq!(
        client.recv_type("subscription_success").await["channels"],
        json!(["alerts"])
    );
}

#[tokio::test]
async fn refused_tokens_close_with_4001_and_the_same_code_as_the_http_refusal() {
    let node = TestNode::start(&[]);
    let cases = [
        (
            token_with(json!({"user_id": 1, "exp": now() - 3600})),
            "token_expired",
        ),
        ("garbage".to_owned(), "token_malformed"),
        (
            token_with(json!({"exp": now() + 60})),
            "token_missing_claim",
        ),
    ];
    for (token, code) in cases {
        let mut client = open(&node).await;
        client
            .send_json(json!({"type": "auth", "token": token}))
            .await;
        let (error, ending) = refusal(&mut client).await;
        assert_eq!(error["type"], "error");
        assert_eq!(error["code"], code, "{error}");
        assert!(error["message"].is_string());
        assert!(
            matches!(ending, Ending::Closed(Some(4001), _)),
            "{ending:?}"
        );
    }
    assert!(
        node.metric("herald_connections_rejected_total{reason=\"token_expired\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_first_frame_that_is_not_a_well_formed_auth_frame_closes_with_4003() {
    let node = TestNode::start(&[]);
    let frames = [
        Message::Text(r#"{"type":"ping"}"#.into()),
        Message::Text(r#"{"type":"subscribe","channels":["alerts"]}"#.into()),
        Message::Text(r#"{"type":"auth"}"#.into()),
        Message::Text(r#"{"type":"auth","token":""}"#.into()),
        Message::Text(r#"{"type":"auth","token":{"$serde_json::private::RawValue":"x"}}"#.into()),
        Message::Text("{nope".into()),
        Message::Binary(vec![1, 2, 3].into()),
    ];
    for frame in frames {
        let mut client = open(&node).await;
        client.ws.send(frame.clone()).await.unwrap();
        let (error, ending) = refusal(&mut client).await;
        assert_eq!(error["code"], "bad_auth", "{frame:?}: {error}");
        assert!(
            matches!(ending, Ending::Closed(Some(4003), _)),
            "{frame:?}: {ending:?}"
        );
    }
}

#[tokio::test]
async fn a_repeated_auth_frame_closes_an_authenticated_connection_with_4003() {
    let node = TestNode::start(&[]);
    let mut client = open(&node).await;
    client
        .send_json(json!({"type": "auth", "token": token("7")}))
        .await;
    assert_eq!(client.recv().await["type"], "auth_success");
    client
        .send_json(json!({"type": "auth", "token": token("8")}))
        .await;
    let (error, ending) = refusal(&mut client).await;
    assert_eq!(error["code"], "bad_auth");
    assert!(
        matches!(ending, Ending::Closed(Some(4003), _)),
        "{ending:?}"
    );
    // The same on a connection authenticated by its URL.
    let mut legacy = node.connect("7").await;
    legacy
        .send_json(json!({"type": "auth", "token": token("7")}))
        .await;
    let (error, ending) = refusal(&mut legacy).await;
    assert_eq!(error["code"], "bad_auth");
    assert!(
        matches!(ending, Ending::Closed(Some(4003), _)),
        "{ending:?}"
    );
}

#[tokio::test]
async fn a_client_silent_past_the_handshake_timeout_is_closed_with_4002() {
    let node = TestNode::start(&["--handshake-timeout", "500ms"]);
    let mut client = open(&node).await;
    let started = std::time::Instant::now();
    let (error, ending) = refusal(&mut client).await;
    assert_eq!(error["code"], "auth_timeout");
    assert!(
        matches!(ending, Ending::Closed(Some(4002), _)),
        "{ending:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    // A late auth frame on such a connection changes nothing: it is already closed.
    let mut late = open(&node).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    late.send_json(json!({"type": "auth", "token": token("7")}))
        .await;
    let (error, _) = refusal(&mut late).await;
    assert_eq!(error["code"], "auth_timeout");
}

#[tokio::test]
async fn the_per_user_cap_closes_with_4029_and_a_url_token_is_refused_beside_auth_message() {
    let node = TestNode::start(&["--max-connections-per-user", "1"]);
    let mut first = open(&node).await;
    first
        .send_json(json!({"type": "auth", "token": token(HOSTILE)}))
        .await;
    assert_eq!(first.recv().await["type"], "auth_success");
    let mut second = open(&node).await;
    second
        .send_json(json!({"type": "auth", "token": token(HOSTILE)}))
        .await;
    let (error, ending) = refusal(&mut second).await;
    assert_eq!(error["code"], "too_many_connections");
    assert!(
        matches!(ending, Ending::Closed(Some(4029), _)),
        "{ending:?}"
    );
    first.assert_alive().await;

    let url = format!("{}&token={}", first_frame_url(&node), token("9"));
    let (status, body) = node.refused(&url).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_request");
}
