//! Test harness: starts the real `herald-node` binary on an ephemeral port and drives
//! it with real WebSocket and HTTP clients.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-please-change";
pub const API_KEY: &str = "test-api-key-0123456789";

/// A running `herald-node` process, killed on drop.
pub struct TestNode {
    pub addr: SocketAddr,
    child: Child,
    pub stdout: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
}

impl TestNode {
    /// Starts a node with the test secret and key plus `extra` flags.
    pub fn start(extra: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald-node"));
        for (key, _) in std::env::vars() {
            if key.starts_with("HERALD_") {
                command.env_remove(key);
            }
        }
        command
            .args([
                "--listen",
                "127.0.0.1:0",
                "--jwt-secret",
                SECRET,
                "--api-key",
                API_KEY,
            ])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("HERALD_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        Self::spawn(command)
    }

    /// Starts a node from a prepared command.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command.spawn().expect("herald-node starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let addr = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("herald-node prints its address");
            if let Some(addr) = line.strip_prefix("herald-node listening on ") {
                break addr.trim().parse().expect("a socket address");
            }
        };
        Self {
            addr,
            child,
            stdout: std::sync::Mutex::new(rx),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/ws/notifications/?token={token}", self.addr)
    }

    /// Connects as `user`.
    pub async fn connect(&self, user: &str) -> Client {
        self.connect_url(&self.ws_url(&token(user))).await
    }

    pub async fn connect_url(&self, url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("WebSocket connects");
        Client { ws }
    }

    /// Tries to connect and returns the HTTP refusal (status, JSON body).
    pub async fn refused(&self, url: &str) -> (u16, Value) {
        match tokio_tungstenite::connect_async(url).await {
            Ok(_) => panic!("connection to {url} was accepted"),
            Err(WsError::Http(response)) => {
                let status = response.status().as_u16();
                let body = response.body().clone().unwrap_or_default();
                (
                    status,
                    serde_json::from_slice(&body).expect("JSON error body"),
                )
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    /// Publishes `body` with the right key.
    pub async fn publish(&self, body: &Value) -> (u16, Value) {
        self.http("POST", "/api/v1/publish", Some(API_KEY), body.to_string())
            .await
    }

    /// Sends an HTTP request and returns (status, JSON or text-as-string body).
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: String,
    ) -> (u16, Value) {
        let (status, bytes) = self.http_raw(method, path, key, body).await;
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    pub async fn http_raw(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: String,
    ) -> (u16, Bytes) {
        let stream = TcpStream::connect(self.addr).await.expect("TCP connects");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("HTTP handshake");
        tokio::spawn(connection);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let response = sender
            .send_request(request.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .expect("HTTP response");
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, bytes)
    }

    /// Reads one metric's value from `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.http_raw("GET", "/metrics", None, String::new()).await;
        String::from_utf8_lossy(&text)
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HS256 token for `user`, valid for an hour.
pub fn token(user: &str) -> String {
    token_with(json!({"user_id": user, "exp": now() + 3600}))
}

/// An HS256 token with the given claims.
pub fn token_with(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// A WebSocket test client.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq)]
pub enum Ending {
    Closed(Option<u16>, String),
    Dropped,
}

impl Client {
    pub async fn send_json(&mut self, value: Value) {
        self.ws
            .send(Message::Text(value.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_owned().into()))
            .await
            .expect("send");
    }

    /// Next JSON text frame, failing after 5 s.
    pub async fn recv(&mut self) -> Value {
        self.recv_within(Duration::from_secs(5))
            .await
            .expect("a message within 5 s")
    }

    /// Next JSON text frame within `limit`, if any.
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match frame {
                Ok(Message::Text(text)) => {
                    return Some(serde_json::from_str(text.as_str()).expect("JSON frame"))
                }
                Ok(Message::Close(frame)) => panic!("closed unexpectedly: {frame:?}"),
                Ok(_) => continue,
                Err(e) => panic!("connection failed: {e}"),
            }
        }
    }

    /// Next frame of the given type, skipping others (e.g. pushes racing a reply).
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let message = self.recv().await;
            if message["type"] == kind {
                return message;
            }
        }
    }

    /// Asserts nothing arrives within `limit`.
    pub async fn expect_silence(&mut self, limit: Duration) {
        if let Some(message) = self.recv_within(limit).await {
            panic!("expected no message, got {message}");
        }
    }

    /// Reads until the connection ends and reports how.
    pub async fn ending(&mut self, limit: Duration) -> Ending {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("connection still open after {limit:?}"),
                Ok(None) => return Ending::Dropped,
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Ending::Closed(
                        frame.as_ref().map(|f| u16::from(f.code)),
                        frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    )
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_))) => return Ending::Dropped,
            }
        }
    }

    /// Round-trips a ping to prove the connection is still usable.
    pub async fn assert_alive(&mut self) {
        self.send_json(json!({"type": "ping"})).await;
        let pong = self.recv_type("pong").await;
        assert!(pong["timestamp"].is_string());
    }
}

pub fn close_code(code: u16) -> CloseCode {
    CloseCode::from(code)
}
