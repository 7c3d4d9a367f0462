//! The ingress fixture on its own, without a browser: nginx proxies Herald's WebSockets, and
//! changing its upstreams moves new connections while open ones keep working.
//!
//! The host here has no certificate, so it is served on the ingress's plain HTTP port and the
//! crate's WebSocket client (no TLS) can talk through it; the TLS path is what the browser
//! stories in `browser_ingress.rs` prove.

use anyhow::{Context, Result};
use herald_testkit::ingress::{Config, Ingress, Listen, Server};
use herald_testkit::node::{token, Client, TestNode};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::MaybeTlsStream;

const HOST: &str = "herald.test";

/// nginx serving [`HOST`] over plain HTTP, proxied to `upstreams`.
fn config(upstreams: &[&TestNode]) -> Config {
    Config {
        servers: vec![Server::new(HOST, None).proxy("/", upstreams.iter().map(|n| n.addr))],
    }
}

/// Opens Herald's WebSocket for `user` through the ingress's HTTP port, asking for `host`.
async fn connect(ingress: &Ingress, host: &str, user: &str) -> Result<Client, WsError> {
    let port = ingress.http_port().expect("an HTTP port");
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!("ws://{host}:{port}/ws/notifications/?token={}", token(user))
        .into_client_request()?;
    let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await?;
    Ok(Client { ws })
}

/// The HTTP status an upgrade attempt was refused with.
async fn refusal(ingress: &Ingress, host: &str) -> Result<u16> {
    match connect(ingress, host, "nobody").await {
        Ok(_) => anyhow::bail!("the upgrade for {host} was accepted"),
        Err(WsError::Http(response)) => Ok(response.status().as_u16()),
        Err(e) => Err(e).context("the upgrade failed without an HTTP answer"),
    }
}

/// Publishes an alert on `node` and returns how many local connections it reached.
async fn alert(node: &TestNode, n: u32) -> u64 {
    let (status, answer) = node
        .publish(&json!({"channel": "alerts", "type": "alert", "data": {"n": n}}))
        .await;
    assert_eq!(status, 200, "{answer}");
    answer["delivered_locally"].as_u64().expect("a count")
}

#[tokio::test]
async fn changing_upstreams_moves_new_websockets_and_keeps_open_ones() -> Result<()> {
    let (node_a, node_b) = (TestNode::start(&[]), TestNode::start(&[]));
    let mut ingress = Ingress::start(config(&[&node_a]), Listen::HttpsAndHttp).await?;

    // A WebSocket through the ingress lands on node A.
    let mut first = connect(&ingress, HOST, "alice").await?;
    assert_eq!(alert(&node_a, 1).await, 1);
    assert_eq!(first.recv_type("alert").await["data"], json!({"n": 1}));

    // The same configuration again changes nothing; node B instead of A reloads nginx.
    assert!(!ingress.update(config(&[&node_a])).await?);
    assert!(ingress.update(config(&[&node_b])).await?);
    assert!(ingress
        .rendered()
        .contains(&format!("server {};", node_b.addr)));

    // New connections land on node B, while the open one still talks to node A.
    let mut second = connect(&ingress, HOST, "bob").await?;
    assert_eq!(alert(&node_b, 2).await, 1);
    assert_eq!(second.recv_type("alert").await["data"], json!({"n": 2}));
    first.assert_alive().await;
    assert_eq!(alert(&node_a, 3).await, 1);
    assert_eq!(first.recv_type("alert").await["data"], json!({"n": 3}));

    // Without upstreams new upgrades get 503, as for a Service without ready endpoints, while
    // the open WebSockets stay up; a forced reload keeps serving the same; an unknown host
    // gets 404.
    assert!(ingress.update(config(&[])).await?);
    assert_eq!(refusal(&ingress, HOST).await?, 503);
    second.assert_alive().await;
    ingress.reload().await?;
    assert_eq!(refusal(&ingress, HOST).await?, 503);
    assert_eq!(refusal(&ingress, "elsewhere.test").await?, 404);
    Ok(())
}
