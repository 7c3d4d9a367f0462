//! The browser protocol, as the existing front end uses it and as Herald extends it.

mod common;

use std::time::Duration;

use common::{token, Ending, TestNode};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn ping_is_answered_with_a_pong_carrying_utc_time() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("42").await;
    client.send_json(json!({"type": "ping"})).await;
    let pong = client.recv().await;
    assert_eq!(pong["type"], "pong");
    let stamp = pong["timestamp"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(stamp).is_ok(), "{stamp}");
}

#[tokio::test]
async fn the_legacy_subscribe_message_gets_subscription_success() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("42").await;
    client
        .send_json(json!({"type": "subscribe", "channels": ["notifications", "alerts", "orders"]}))
        .await;
    let reply = client.recv().await;
    assert_eq!(
        reply,
        json!({"type": "subscription_success", "channels": ["notifications", "alerts", "orders"]})
    );
}

#[tokio::test]
async fn subscribe_refuses_unknown_channels_one_by_one() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("42").await;
    client
        .send_json(json!({"type": "subscribe", "channels": ["alerts", "nope"]}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "subscription_success", "channels": ["alerts"]})
    );
    let error = client.recv().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "unknown_channel");
    assert_eq!(error["channel"], "nope");
    assert!(error["message"].is_string());
}

#[tokio::test]
async fn unsubscribed_channels_stop_delivering() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("42").await;
    client
        .send_json(json!({"type": "unsubscribe", "channels": ["alerts"]}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "unsubscription_success", "channels": ["alerts"]})
    );
    let (status, _) = node
        .publish(&json!({"channel": "alerts", "type": "alert", "data": {"id": 1}}))
        .await;
    assert_eq!(status, 200);
    client.expect_silence(Duration::from_millis(300)).await;
    // And subscribing again brings it back.
    client
        .send_json(json!({"type": "subscribe", "channels": ["alerts"]}))
        .await;
    client.recv_type("subscription_success").await;
    node.publish(&json!({"channel": "alerts", "type": "alert", "data": {"id": 2}}))
        .await;
    assert_eq!(client.recv().await["data"]["id"], 2);
}

#[tokio::test]
async fn a_client_that_never_subscribes_still_gets_what_the_legacy_app_pushed() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("42").await;
    let pushes = [
        json!({"channel": "notifications", "type": "notification", "users": [42],
               "data": {"id": "n1", "title": "Hi", "content": "c", "type": "info", "is_read": false, "created_at": "2026-01-01T00:00:00Z"}}),
        json!({"channel": "alerts", "type": "alert",
               "data": {"id": "a1", "title": "Disk", "content": "full", "severity": "critical", "status": "open", "created_at": "x"}}),
        json!({"channel": "orders", "type": "order_update", "users": ["42"],
               "data": {"id": 9, "order_no": "PO1", "status": "shipped", "updated_at": "x"}}),
        json!({"channel": "materials", "type": "material_update",
               "data": {"id": 3, "code": "M3", "name": "Paper", "stock_quantity": "12", "updated_at": "x"}}),
    ];
    for push in &pushes {
        let (status, body) = node.publish(push).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["delivered_locally"], 1, "{body}");
    }
    // One message per channel: order holds within a channel, not across channels (a
    // publish racing the connect-time recovery of `orders` may come out of it first).
    let mut received = Vec::new();
    for _ in &pushes {
        received.push(client.recv().await);
    }
    for push in &pushes {
        let got = received
            .iter()
            .find(|got| got["channel"] == push["channel"])
            .unwrap_or_else(|| panic!("nothing on {}: {received:?}", push["channel"]));
        assert_eq!(got["type"], push["type"]);
        assert_eq!(got["data"], push["data"]);
        assert!(got["id"].is_string());
    }
}

#[tokio::test]
async fn bad_frames_get_bad_request_and_the_connection_survives() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("7").await;
    let cases = [
        "not json",
        "[1,2,3]",
        r#"{"no_type": true}"#,
        r#"{"type": 5}"#,
        r#"{"type": "dance"}"#,
        r#"{"type": "subscribe"}"#,
        r#"{"type": "subscribe", "channels": "alerts"}"#,
        r#"{"type": "subscribe", "channels": [1, 2]}"#,
        r#"{"type": "subscribe", "channels": ["alerts"], "since": "0"}"#,
        r#"{"type": "unsubscribe", "channels": null}"#,
        r#"{"type": "ack", "channel": 1}"#,
    ];
    for case in cases {
        client.send_text(case).await;
        let reply = client.recv().await;
        assert_eq!(reply["type"], "error", "{case}");
        assert_eq!(reply["code"], "bad_request", "{case}: {reply}");
        assert!(!reply["message"].as_str().unwrap().is_empty());
    }
    client
        .ws
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    let reply = client.recv().await;
    assert_eq!(reply["code"], "bad_request");
    assert!(reply["message"].as_str().unwrap().contains("binary"));
    client.assert_alive().await;
}

#[tokio::test]
async fn a_message_just_under_the_limit_is_read_whole_and_answered() {
    // Far larger than the node's per-connection read buffer (512 B): read in many chunks.
    let node = TestNode::start(&[]);
    let mut client = node.connect("7").await;
    let pad = "x".repeat(16 * 1024 - 64);
    client
        .send_text(&format!(r#"{{"type":"ping","pad":"{pad}"}}"#))
        .await;
    assert_eq!(client.recv_type("pong").await["type"], "pong");
    client.assert_alive().await;
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009_and_the_node_keeps_serving() {
    let node = TestNode::start(&["--max-message-bytes", "1024"]);
    let mut client = node.connect("7").await;
    let huge = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(4096));
    client.send_text(&huge).await;
    assert_eq!(
        client.ending(Duration::from_secs(5)).await,
        Ending::Closed(Some(1009), "message too big".into())
    );
    let mut other = node.connect("8").await;
    other.assert_alive().await;
}

#[tokio::test]
async fn flooding_is_rate_limited_then_disconnected_with_1008() {
    let node = TestNode::start(&["--inbound-rate", "5", "--inbound-burst", "5"]);
    let mut client = node.connect("7").await;
    for _ in 0..7 {
        client.send_json(json!({"type": "ping"})).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    for _ in 0..7 {
        let reply = client.recv().await;
        match reply["type"].as_str().unwrap() {
            "pong" => pongs += 1,
            "error" => {
                assert_eq!(reply["code"], "rate_limited");
                limited += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((pongs, limited), (5, 2));
    // Keep flooding: the connection is closed for policy violation.
    for _ in 0..40 {
        if client
            .ws
            .send(Message::Text(r#"{"type":"ping"}"#.into()))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(
        client.ending(Duration::from_secs(5)).await,
        Ending::Closed(Some(1008), "rate limit exceeded repeatedly".into())
    );
    // A well-behaved client on the same node is unaffected.
    let mut polite = node.connect("8").await;
    polite.assert_alive().await;
}

#[tokio::test]
async fn subscriptions_per_connection_are_capped() {
    let dir = tempdir("subs-cap");
    let channels: Vec<_> = (0..5)
        .map(|i| json!({"name": format!("c{i}"), "access": "authenticated"}))
        .collect();
    let path = dir.join("channels.json");
    std::fs::write(&path, json!({ "channels": channels }).to_string()).unwrap();
    let node = TestNode::start(&[
        "--channels",
        path.to_str().unwrap(),
        "--max-subscriptions",
        "3",
    ]);
    let mut client = node.connect("7").await;
    client
        .send_json(json!({"type": "subscribe", "channels": ["c0", "c1"]}))
        .await;
    client.recv_type("subscription_success").await;
    client
        .send_json(json!({"type": "subscribe", "channels": ["c2", "c3", "c4"]}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "subscription_success", "channels": ["c2"]})
    );
    let error = client.recv().await;
    assert_eq!(error["code"], "too_many_subscriptions");
    assert_eq!(error["channels"], json!(["c3", "c4"]), "one frame for both");
    client.assert_alive().await;
    // A request naming more channels than a connection may hold is refused whole.
    client
        .send_json(json!({"type": "unsubscribe", "channels": ["c0", "c1", "c2"]}))
        .await;
    client.recv_type("unsubscription_success").await;
    client
        .send_json(json!({"type": "subscribe", "channels": ["c0", "c1", "c2", "c3"]}))
        .await;
    let error = client.recv().await;
    assert_eq!(error["code"], "too_many_subscriptions", "{error}");
    assert!(error.get("channel").is_none() && error.get("channels").is_none());
    client.expect_silence(Duration::from_millis(200)).await;
    client
        .send_json(json!({"type": "unsubscribe", "channels": ["c0"]}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "unsubscription_success", "channels": ["c0"]}),
        "nothing was subscribed by the refused request"
    );
}

#[tokio::test]
async fn one_subscribe_naming_a_thousand_unknown_channels_gets_one_frame() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("mallory's <script>").await;
    let names: Vec<String> = (0..1000).map(|i| format!("nope-{i}")).collect();
    client
        .send_json(json!({"type": "subscribe", "channels": names}))
        .await;
    let error = client.recv().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "too_many_subscriptions", "{error}");
    client.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(
        node.metric("herald_subscriptions").await,
        4.0,
        "still the auto ones"
    );
}

#[tokio::test]
async fn refused_channels_are_answered_in_one_error_frame_per_code() {
    let node = TestNode::start(&[]);
    let mut client = node.connect("42").await;
    let mut names: Vec<String> = (0..40).map(|i| format!("nope-{i}")).collect();
    names.push("alerts".into());
    names.push("n\"o'pe".into());
    client
        .send_json(json!({"type": "subscribe", "channels": names}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "subscription_success", "channels": ["alerts"]})
    );
    let error = client.recv().await;
    assert_eq!(error["code"], "unknown_channel");
    assert!(error.get("channel").is_none(), "{error}");
    let mut refused: Vec<&str> = names.iter().map(String::as_str).collect();
    refused.retain(|n| *n != "alerts");
    assert_eq!(error["channels"], json!(refused));
    assert!(error["message"].is_string());
    client.expect_silence(Duration::from_millis(300)).await;
    // Unsubscribing from unknown channels answers the same way.
    client
        .send_json(json!({"type": "unsubscribe", "channels": ["alerts", "x", "y"]}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "unsubscription_success", "channels": ["alerts"]})
    );
    let error = client.recv().await;
    assert_eq!(
        (&error["code"], &error["channels"]),
        (&json!("unknown_channel"), &json!(["x", "y"]))
    );
    client.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn the_token_may_also_come_in_an_authorization_header() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let node = TestNode::start(&[]);
    let mut request = format!("ws://{}/ws/notifications/", node.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token("99")).parse().unwrap(),
    );
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut client = common::Client { ws };
    client.assert_alive().await;
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A hand-rolled WebSocket client on a raw TCP socket: it can leave data unread in the
/// node's receive buffer and tell a clean end (FIN) from a reset (RST).
struct RawClient {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    /// Upgrades as `user`; `recv_buffer` shrinks the client's receive buffer so that the
    /// node's replies back up in the node's send queue.
    async fn connect(node: &TestNode, user: &str, recv_buffer: Option<u32>) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let mut stream = socket.connect(node.addr).await.unwrap();
        let request = format!(
            "GET /ws/notifications/?token={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            token(user),
            node.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        buf.drain(..end);
        Self { stream, buf }
    }

    /// A masked client frame.
    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        tokio::time::timeout(Duration::from_secs(5), self.stream.write_all(bytes))
            .await
            .expect("write not stuck")
    }

    /// Next server frame (opcode, payload); an error when the connection ended.
    async fn read_frame(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let (len, start) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= start + len {
                    let opcode = self.buf[0] & 0x0f;
                    let payload = self.buf[start..start + len].to_vec();
                    self.buf.drain(..start + len);
                    return Ok((opcode, payload));
                }
            }
            match self.read_more().await? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                _ => continue,
            }
        }
    }

    async fn read_more(&mut self) -> std::io::Result<usize> {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
            .await
            .expect("the node answers within 5 s")?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads frames until a close frame; returns its code and reason.
    async fn close_frame(&mut self) -> (u16, String) {
        loop {
            match self.read_frame().await {
                Ok((0x8, payload)) => {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
                }
                Ok(_) => continue,
                Err(e) => panic!("connection ended without a close frame: {e}"),
            }
        }
    }

    /// Answers the close frame as a browser does and expects the node to end the TCP
    /// connection cleanly (FIN), not with a reset, `within` the given time.
    async fn finish_close_handshake(&mut self, code: u16, within: Duration) {
        let reply = Self::frame(0x8, &code.to_be_bytes());
        // The node may already have closed after its linger; a reset must not happen.
        self.write(&reply).await.expect("close reply sent");
        let started = std::time::Instant::now();
        loop {
            match self.read_more().await {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) => panic!("connection reset instead of closed: {e}"),
            }
        }
        assert!(
            started.elapsed() < within,
            "closed after {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn an_oversized_message_among_a_flood_still_delivers_1009_and_a_clean_close() {
    let node = TestNode::start(&["--max-message-bytes", "1024"]);
    let mut client = RawClient::connect(&node, "7", None).await;
    // One frame far over the limit, sent whole: most of it is still unread in the
    // node's receive buffer when the node decides to close.
    let huge = RawClient::frame(0x1, &vec![b'x'; 256 * 1024]);
    client
        .write(&huge)
        .await
        .expect("the node reads (and discards) what it will not process, no reset");
    assert_eq!(
        client.close_frame().await,
        (1009, "message too big".to_owned())
    );
    // The rest of the oversized frame cannot be parsed, so the node reads raw bytes
    // until its linger (1 s) ends.
    client
        .finish_close_handshake(1009, Duration::from_millis(1500))
        .await;
}

#[tokio::test]
async fn a_flooding_client_that_reads_late_still_gets_1008() {
    let node = TestNode::start(&["--inbound-rate", "1", "--inbound-burst", "50"]);
    // A small receive buffer: the node's pongs and errors fill it, so its close frame
    // waits in the node's send queue, where a reset would discard it.
    let mut client = RawClient::connect(&node, "7", Some(2048)).await;
    let ping = RawClient::frame(0x1, br#"{"type":"ping"}"#);
    let flood: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 400)
        .collect();
    client.write(&flood).await.expect("flood sent");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        client.close_frame().await,
        (1008, "rate limit exceeded repeatedly".to_owned())
    );
    // The node sees the close reply among the flood and closes at once.
    client
        .finish_close_handshake(1008, Duration::from_millis(700))
        .await;
}

#[tokio::test]
async fn binary_frames_count_against_the_inbound_rate_limit() {
    let node = TestNode::start(&["--inbound-rate", "1", "--inbound-burst", "5"]);
    let mut client = node.connect("7").await;
    for _ in 0..8 {
        client
            .ws
            .send(Message::Binary(vec![1, 2, 3].into()))
            .await
            .unwrap();
    }
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(client.recv().await["code"].as_str().unwrap().to_owned());
    }
    let limited = codes.iter().filter(|c| *c == "rate_limited").count();
    let bad = codes.iter().filter(|c| *c == "bad_request").count();
    // Five from the burst (perhaps one more refilled), the rest rate limited.
    assert!((5..=6).contains(&bad) && bad + limited == 8, "{codes:?}");
    // Sustained binary flooding is abuse like any other: closed with 1008.
    for _ in 0..300 {
        if client
            .ws
            .send(Message::Binary(vec![0; 16].into()))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(
        client.ending(Duration::from_secs(5)).await,
        Ending::Closed(Some(1008), "rate limit exceeded repeatedly".into())
    );
}
