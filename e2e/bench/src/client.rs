//! One benchmark WebSocket client: open it from a chosen source address, run the adapter's
//! subscribe handshake, then read frames and hand deliveries to the worker's [`Recorder`]
//! until the connection ends.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::adapter::{Inbound, Stream, Target};
use super::payload::now_micros;
use super::recorder::{ClientState, Recorder};

/// An open client socket.
pub type Ws = WebSocketStream<TcpStream>;

/// What every client of a worker shares.
#[derive(Clone)]
pub struct ClientConfig {
    /// Protocol adapter.
    pub target: Arc<dyn Target>,
    /// Server address (loopback).
    pub ws_addr: SocketAddr,
    /// Stream the clients subscribe to.
    pub stream: Stream,
    /// Socket settings, kept small so many clients fit in one process.
    pub ws_config: WebSocketConfig,
}

/// Small buffers: clients only receive short frames.
pub fn small_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// Opens `user`'s (client `index`'s) connection from `source` and completes the subscribe
/// handshake.
/// Returns the socket and the time from TCP connect to the `101` response.
pub async fn open(
    cfg: &ClientConfig,
    index: usize,
    user: &str,
    source: IpAddr,
) -> Result<(Ws, Duration)> {
    let target = cfg.target.ws_target(user)?;
    let mut request = target.url.as_str().into_client_request()?;
    for (name, value) in &target.headers {
        request.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes())?,
            HeaderValue::from_str(value)?,
        );
    }

    let started = Instant::now();
    let socket = match cfg.ws_addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if source.is_ipv4() == cfg.ws_addr.is_ipv4() {
        socket
            .bind(SocketAddr::new(source, 0))
            .with_context(|| format!("bind {source}"))?;
    }
    let tcp = socket.connect(cfg.ws_addr).await.context("tcp connect")?;
    tcp.set_nodelay(true)?;
    let (mut ws, _response) =
        tokio_tungstenite::client_async_with_config(request, tcp, Some(cfg.ws_config))
            .await
            .context("websocket upgrade")?;
    let upgraded = started.elapsed();

    let frames = cfg.target.handshake(cfg.stream, index, user)?;
    for frame in &frames {
        ws.send(Message::text(frame.as_str())).await?;
    }
    let mut pending = frames.len();
    while pending > 0 {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let (mut replies, mut refused) = (Vec::new(), None);
                cfg.target
                    .each_message(text.as_str(), &mut |message| match message {
                        Inbound::Ack => pending = pending.saturating_sub(1),
                        Inbound::Reply(reply) => replies.push(reply),
                        Inbound::Error(e) => refused = Some(e),
                        Inbound::Delivery(_) | Inbound::Other => {}
                    });
                if let Some(e) = refused {
                    bail!("server refused subscription: {e}");
                }
                for reply in replies {
                    ws.send(Message::text(reply)).await?;
                }
            }
            Some(Ok(Message::Close(frame))) => bail!("closed during handshake: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("handshake"),
            None => bail!("closed during handshake"),
        }
    }
    Ok((ws, upgraded))
}

/// Reads `ws` until it ends, filing deliveries with `recorder`. The caller has already
/// counted the client with [`Recorder::connected`].
pub async fn read_loop(
    mut ws: Ws,
    target: Arc<dyn Target>,
    recorder: Arc<Recorder>,
    mut state: ClientState,
) {
    while let Some(frame) = ws.next().await {
        match frame {
            Ok(Message::Text(text)) => {
                let mut reply = None;
                target.each_message(text.as_str(), &mut |message| match message {
                    Inbound::Delivery(payload) => {
                        recorder.delivery(&mut state, &payload, now_micros());
                    }
                    Inbound::Reply(r) => reply = Some(r),
                    Inbound::Ack | Inbound::Error(_) | Inbound::Other => {}
                });
                if let Some(reply) = reply {
                    if ws.send(Message::text(reply)).await.is_err() {
                        break;
                    }
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            // Pings are answered by tungstenite itself.
            Ok(_) => {}
        }
    }
    recorder.disconnected();
}
