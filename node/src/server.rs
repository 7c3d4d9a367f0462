//! The HTTP front door: accepts TCP connections, routes requests, and upgrades the
//! WebSocket endpoint into sessions.
//!
//! A token in the URL or a header is checked before the upgrade, so a bad one gets a
//! plain HTTP 401 with a JSON reason and never costs a WebSocket; a client that opts in
//! with `?auth=message` is upgraded first and authenticated by its first frame
//! ([`crate::session::first_frame`]). Every other path (publish, admin,
//! health, readiness, metrics) goes to the API router in [`crate::routes`] on the same
//! port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;
use tracing::Instrument;

use crate::api::{self, error_response, Body, Query};
use crate::auth::{AuthError, Identity};
use crate::connection::Membership;
use crate::hub::Registration;
use crate::node::{AwaitingAuth, Node};
use crate::routes;
use crate::session::{first_frame, Session};

/// Small buffers keep idle connections cheap: client messages (ping, subscribe, ack) are
/// small, and larger ones up to the message limit are read in several chunks. The read
/// buffer is allocated for every connection: 512 B instead of 4 KiB took an idle subscribed
/// connection from 9.4 to 5.9 KiB of node RSS (docs/benchmarks.md).
const READ_BUFFER: usize = 512;
const WRITE_BUFFER: usize = 8 * 1024;

/// Accepts connections until `stop` is cancelled, then lets open HTTP connections
/// finish their current request and returns once they have closed. While the node
/// drains, the listener stays open so probes, metrics and publishes keep working; only
/// new WebSocket upgrades are refused (upgraded sessions are the hub's to drain).
pub async fn serve(node: Arc<Node>, listener: TcpListener, stop: CancellationToken) {
    let router = routes::router(node.clone());
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                connections.spawn(serve_connection(
                    node.clone(),
                    router.clone(),
                    stream,
                    peer,
                    stop.clone(),
                ));
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning; never crash.
                node.metrics.reject("accept_error");
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn serve_connection(
    node: Arc<Node>,
    router: Router,
    stream: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let handshake_timeout = node.config.handshake_timeout;
    let service = service_fn(move |req| dispatch(node.clone(), router.clone(), req, peer));
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.cancelled() => {
            // Finish the request in flight, then close; idle connections close at once.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

/// The WebSocket path goes to the hand-tuned upgrade below; everything else to the
/// API router.
async fn dispatch(
    node: Arc<Node>,
    mut router: Router,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Either<Body, axum::body::Body>>, Infallible> {
    let path = req.uri().path();
    let ws_path = node.config.ws_path.as_str();
    if path == ws_path || path == ws_path.trim_end_matches('/') {
        return Ok(upgrade(node, req, peer).await.map(Either::Left));
    }
    std::future::poll_fn(|cx| Service::<Request<Incoming>>::poll_ready(&mut router, cx)).await?;
    Ok(router.call(req).await?.map(Either::Right))
}

async fn upgrade(node: Arc<Node>, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let headers = req.headers();
    let is_upgrade = req.method() == Method::GET
        && header_has_token(headers, header::CONNECTION, "upgrade")
        && header_has_token(headers, header::UPGRADE, "websocket");
    if !is_upgrade {
        return error_response(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "this endpoint only accepts WebSocket upgrades",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        // RFC 6455 §4.2.2: answer with the versions this server speaks.
        let mut response = error_response(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported_version",
            "unsupported Sec-WebSocket-Version; expected 13",
        );
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            http::HeaderValue::from_static("13"),
        );
        return response;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "missing Sec-WebSocket-Key",
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    if node.is_draining() {
        node.metrics.reject("draining");
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this node is shutting down; connect again",
        );
    }
    if node.connection_load() >= node.config.max_connections {
        node.metrics.reject("node_full");
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "node_full",
            "this node is at its connection limit; connect again",
        );
    }
    let admitted = match credentials(&req) {
        Credentials::FirstFrame => Admitted::AwaitingAuth(node.await_auth()),
        Credentials::Conflicting => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "auth=message means the token comes in the first frame: do not also send one in the URL or an Authorization header",
            );
        }
        Credentials::Token(token) => {
            let identity = match authenticate(&node, token.as_deref()) {
                Ok(identity) => identity,
                Err(e) => {
                    node.metrics.reject(e.code());
                    tracing::debug!(%peer, error = %e, "refused connection");
                    return error_response(StatusCode::UNAUTHORIZED, e.code(), &e.to_string());
                }
            };
            // Owns the hub registration, broker interest and user count from here on:
            // every early return releases them by dropping it.
            match Membership::open(node.clone(), &identity).await {
                Ok((membership, registration)) => Admitted::Open {
                    identity,
                    membership,
                    registration,
                },
                Err(refused) => {
                    node.metrics.reject(refused.metric_label());
                    return error_response(refused.status(), refused.code(), &refused.to_string());
                }
            }
        }
    };
    let span = match &admitted {
        Admitted::Open {
            identity,
            registration,
            ..
        } => tracing::info_span!(
            "connection",
            id = registration.id,
            user = identity.user.as_deref().unwrap_or("-"),
            %peer
        ),
        Admitted::AwaitingAuth(_) => {
            tracing::info_span!("connection", id = tracing::field::Empty, user = tracing::field::Empty, %peer)
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let upgraded_at = tokio::time::Instant::now();
    // Every open connection is this future, in a task of exactly its size: keep what it
    // holds across awaits small (rare, large steps are boxed; see `Session::run`).
    let connection = async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                // Dropping `admitted` releases whatever the connection held.
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            // Room for the largest publishable frame: writes are bounded, never refused.
            .max_write_buffer_size(WRITE_BUFFER + 2 * node.config.max_publish_bytes + 1024)
            .max_message_size(Some(node.config.max_message_bytes))
            .max_frame_size(Some(node.config.max_message_bytes));
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        let (identity, membership, registration) = match admitted {
            Admitted::Open {
                identity,
                membership,
                registration,
            } => (identity, membership, registration),
            Admitted::AwaitingAuth(awaiting) => {
                let deadline = upgraded_at + node.config.handshake_timeout;
                // Boxed: 3.4 KB of state an idle connection would otherwise carry
                // after authenticating (10.5 instead of 6.9 KiB per connection).
                let Some(open) =
                    Box::pin(first_frame::authenticate(&node, &mut ws, deadline)).await
                else {
                    return;
                };
                drop(awaiting);
                let span = tracing::Span::current();
                span.record("id", open.registration.id);
                span.record("user", open.identity.user.as_deref().unwrap_or("-"));
                (open.identity, open.membership, open.registration)
            }
        };
        tracing::debug!("connected");
        Session::new(node, ws, identity, registration, membership)
            .run()
            .await;
        tracing::debug!("disconnected");
    };
    tokio::spawn(connection.instrument(span));
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Full::new(Bytes::new()))
        .expect("valid response")
}

/// What a connection will be admitted with.
enum Admitted {
    /// Authenticated from the URL or a header, registered and subscribed.
    Open {
        identity: Identity,
        membership: Membership,
        registration: Registration,
    },
    /// Upgraded first; the client sends its token in its first frame.
    AwaitingAuth(AwaitingAuth),
}

/// How the client says who it is.
enum Credentials {
    /// A token in the query string or an `Authorization` header, or none at all.
    Token(Option<String>),
    /// `?auth=message`: the token comes in the first frame.
    FirstFrame,
    /// `?auth=message` together with a token in the URL or a header.
    Conflicting,
}

fn credentials(req: &Request<Incoming>) -> Credentials {
    let query = Query::parse(req.uri().query());
    // The query-string token wins over the header, even when it is invalid.
    let token = query.get("token").filter(|t| !t.is_empty()).or_else(|| {
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(api::bearer_credentials)
    });
    let token = token.map(str::to_owned);
    match (query.get("auth") == Some("message"), token) {
        (false, token) => Credentials::Token(token),
        (true, None) => Credentials::FirstFrame,
        (true, Some(_)) => Credentials::Conflicting,
    }
}

fn authenticate(node: &Node, token: Option<&str>) -> Result<Identity, AuthError> {
    match token {
        Some(token) => node.verify_token(token),
        None if node.config.allow_anonymous => Ok(Identity::anonymous()),
        None => Err(AuthError::Missing),
    }
}

fn header_has_token(headers: &http::HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(token))
}
