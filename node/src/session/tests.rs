//! Sessions driven end to end over an in-memory socket (`tokio::io::duplex`): a real
//! WebSocket client on one end, a real session on the other, the memory broker and
//! hub behind it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::io::DuplexStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use super::Session;
use crate::auth::Identity;
use crate::broker::Broker;
use crate::channels::{Access, ChannelConfig};
use crate::connection::Membership;
use crate::message::{unix_micros, Message, Offset, Target, Topic};
use crate::testing::{hostile_users, TestNode};

/// The client end of a running session.
struct Client {
    ws: WebSocketStream<DuplexStream>,
    session: JoinHandle<()>,
}

/// Connects `identity` as the server does: register, join auto channels, serve.
async fn connect(test: &TestNode, identity: Identity) -> Client {
    let (server, client) = tokio::io::duplex(64 * 1024);
    let (mut membership, registration) =
        Membership::register(test.node.clone(), identity.user.clone()).unwrap();
    membership.join_auto_channels(&identity).await.unwrap();
    let server = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
    let ws = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
    let session = Session::new(
        test.node.clone(),
        server,
        identity,
        registration,
        membership,
    );
    Client {
        ws,
        session: tokio::spawn(session.run()),
    }
}

impl Client {
    async fn send(&mut self, frame: Value) {
        self.ws
            .send(WsMessage::Text(frame.to_string().into()))
            .await
            .unwrap();
    }

    /// The next text frame, as JSON.
    async fn recv(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .expect("a frame in time")
                .expect("connection open")
                .expect("a valid frame");
            if let WsMessage::Text(text) = frame {
                return serde_json::from_str(text.as_str()).unwrap();
            }
        }
    }

    /// Closes from the client side and waits for the session to finish.
    async fn close(mut self) {
        self.ws.close(None).await.unwrap();
        while let Ok(Some(Ok(_))) =
            tokio::time::timeout(Duration::from_secs(5), self.ws.next()).await
        {}
        tokio::time::timeout(Duration::from_secs(5), self.session)
            .await
            .expect("session ends")
            .unwrap();
    }
}

/// Publishes like the publish API: through the broker, then to the local hub.
async fn publish(test: &TestNode, channel: &str, target: Target, n: u32) -> Option<Offset> {
    let snapshot = test.node.channels.snapshot();
    let resolved = snapshot.get(channel).unwrap();
    let (name, config) = (&resolved.name, resolved.config);
    let message = Message {
        id: format!("m{n}").into(),
        channel: name.clone(),
        kind: "note".into(),
        data: Arc::from(RawValue::from_string(json!({ "n": n }).to_string()).unwrap()),
        target,
        offset: None,
        accepted_at_micros: unix_micros(),
        trace: None,
        tags: Default::default(),
    };
    let stored = test
        .node
        .broker
        .publish(message, config)
        .await
        .unwrap()
        .message;
    stored.offset
}

fn per_user(name: &str) -> ChannelConfig {
    ChannelConfig {
        history: true,
        ..ChannelConfig::new(name, Access::User)
    }
}

#[tokio::test]
async fn subscribe_deliver_unsubscribe_and_close_release_everything() {
    let test = TestNode::new(vec![per_user("orders")]);
    for user in hostile_users() {
        let mut client = connect(&test, TestNode::user(&user)).await;
        let topic = Topic::for_channel(&"orders".into(), true, Some(&user.as_str().into()));

        client
            .send(json!({"type": "ack", "channel": "orders", "offset": "1-0"}))
            .await;
        let refused = client.recv().await;
        assert_eq!(refused["code"], "bad_request", "{refused}");

        client
            .send(json!({"type": "subscribe", "channels": ["orders", "nope", "orders"]}))
            .await;
        assert_eq!(
            client.recv().await,
            json!({"type": "subscription_success", "channels": ["orders"]})
        );
        let unknown = client.recv().await;
        assert_eq!(unknown["code"], "unknown_channel");
        assert_eq!(unknown["channel"], "nope");
        assert_eq!(test.broker.interest(&topic), 1, "{user:?}");

        let offset = publish(&test, "orders", Target::User(user.as_str().into()), 1).await;
        publish(&test, "orders", Target::User("someone else".into()), 2).await;
        let pushed = client.recv().await;
        assert_eq!(pushed["type"], "note");
        assert_eq!(pushed["data"], json!({"n": 1}));
        assert_eq!(pushed["offset"], json!(offset.unwrap().to_string()));
        // The other user's message never arrives: the next frame is the pong.
        client.send(json!({"type": "ping"})).await;
        assert_eq!(client.recv().await["type"], "pong");

        client
            .send(json!({"type": "unsubscribe", "channels": ["orders"]}))
            .await;
        assert_eq!(
            client.recv().await,
            json!({"type": "unsubscription_success", "channels": ["orders"]})
        );
        assert_eq!(test.broker.interest(&topic), 0);

        client
            .send(json!({"type": "subscribe", "channels": ["orders"]}))
            .await;
        assert_eq!(client.recv().await["type"], "subscription_success");
        assert_eq!(test.node.hub.connection_count(), 1);
        client.close().await;
        assert_eq!(test.broker.interest(&topic), 0, "released at close");
        assert_eq!(test.node.hub.connection_count(), 0);
    }
}

#[tokio::test]
async fn subscribe_with_an_offset_replays_what_came_after_it_then_goes_live() {
    let alerts = ChannelConfig {
        history: true,
        ..ChannelConfig::new("alerts", Access::Authenticated)
    };
    let test = TestNode::new(vec![alerts]);
    let mut offsets = Vec::new();
    for n in 1..=3 {
        offsets.push(publish(&test, "alerts", Target::All, n).await.unwrap());
    }
    let mut client = connect(&test, TestNode::user(r"CORP\alice")).await;
    client
        .send(json!({
            "type": "subscribe",
            "channels": ["alerts"],
            "since": {"alerts": offsets[0].to_string()},
        }))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "subscription_success", "channels": ["alerts"], "recovered": {"alerts": true}})
    );
    assert_eq!(client.recv().await["data"], json!({"n": 2}));
    assert_eq!(client.recv().await["data"], json!({"n": 3}));
    publish(&test, "alerts", Target::All, 4).await;
    assert_eq!(client.recv().await["data"], json!({"n": 4}));
    client.close().await;
}

#[tokio::test]
async fn a_returning_user_gets_only_what_arrived_while_away() {
    let notifications = ChannelConfig {
        auto_subscribe: true,
        ..per_user("notifications")
    };
    let test = TestNode::new(vec![notifications.clone()]);
    let user = "🦀 o\"brien";
    let topic = Topic::for_channel(&"notifications".into(), true, Some(&user.into()));

    let mut client = connect(&test, TestNode::user(user)).await;
    let target = || Target::User(user.into());
    publish(&test, "notifications", target(), 1).await;
    let seen = publish(&test, "notifications", target(), 2).await;
    assert_eq!(client.recv().await["data"], json!({"n": 1}));
    assert_eq!(client.recv().await["data"], json!({"n": 2}));
    client.close().await;
    // The cursor is saved in the background as the session ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while test.broker.load_cursor(&topic, user).await.unwrap() != seen {
        assert!(tokio::time::Instant::now() < deadline, "cursor saved");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    publish(&test, "notifications", target(), 3).await;
    let mut client = connect(&test, TestNode::user(user)).await;
    assert_eq!(client.recv().await["data"], json!({"n": 3}));
    client.send(json!({"type": "ping"})).await;
    assert_eq!(client.recv().await["type"], "pong", "nothing else replayed");
    client.close().await;
    assert_eq!(test.broker.interest(&topic), 0);
}
