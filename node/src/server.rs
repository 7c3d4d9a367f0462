//! The HTTP front door: accepts TCP connections, routes requests, and upgrades the
//! WebSocket endpoint into sessions.
//!
//! Authentication happens before the upgrade, so a bad token gets a plain HTTP 401
//! with a JSON reason and never costs a WebSocket. Health, readiness and metrics
//! are served on the same port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use crate::api::{self, error_response, json_response, Body, Query};
use crate::auth::{AuthError, Identity};
use crate::connection::Membership;
use crate::dev;
use crate::node::Node;
use crate::session::Session;
use crate::telemetry::{propagation, TRACE_TARGET};

/// Small buffers keep idle connections cheap: client messages (ping, subscribe, ack) are
/// small, and larger ones up to the message limit are read in several chunks. The read
/// buffer is allocated for every connection: 512 B instead of 4 KiB took an idle subscribed
/// connection from 9.4 to 5.9 KiB of node RSS (docs/benchmarks.md).
const READ_BUFFER: usize = 512;
const WRITE_BUFFER: usize = 8 * 1024;

/// Accepts connections until the task is dropped. While the node drains, the
/// listener stays open so probes, metrics and publishes keep working; only new
/// WebSocket upgrades are refused.
pub async fn serve(node: Arc<Node>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(serve_connection(node.clone(), stream, peer));
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning; never crash.
                node.metrics.reject("accept_error");
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(node: Arc<Node>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let handshake_timeout = node.config.handshake_timeout;
    let service = service_fn(move |req| {
        let node = node.clone();
        async move { Ok::<_, Infallible>(route(node, req, peer).await) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

async fn route(node: Arc<Node>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let path = req.uri().path();
    let ws_path = node.config.ws_path.as_str();
    if path == ws_path || path == ws_path.trim_end_matches('/') {
        return upgrade(node, req, peer).await;
    }
    match (req.method(), path) {
        (&Method::GET, "/healthz") => json_response(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::GET, "/readyz") => readiness(&node),
        (&Method::GET, "/metrics") => Response::builder()
            .header(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(node.metrics.render())))
            .expect("valid response"),
        (&Method::GET, "/") if node.config.dev => dev::demo_page(&node),
        (&Method::GET, "/") => json_response(
            StatusCode::OK,
            &json!({"service": "herald-node", "node": node.id, "websocket": ws_path}),
        ),
        (&Method::POST, "/api/v1/publish") => publish(node, req).await,
        (&Method::GET, "/api/v1/channels") => {
            if !api::authorized(&node, req.headers()) {
                return api::unauthorized();
            }
            api::list_channels(&node)
        }
        (
            &Method::GET,
            "/api/developer/websocket-sessions/" | "/api/developer/websocket-sessions",
        ) => {
            if !api::authorized(&node, req.headers()) {
                return api::unauthorized();
            }
            api::list_sessions(&node, req.uri().query()).await
        }
        (
            &Method::GET,
            "/api/developer/websocket-messages/" | "/api/developer/websocket-messages",
        ) => {
            if !api::authorized(&node, req.headers()) {
                return api::unauthorized();
            }
            api::list_messages(&node, req.uri().query()).await
        }
        (&Method::GET, "/api/v1/nodes") => {
            if !api::authorized(&node, req.headers()) {
                return api::unauthorized();
            }
            api::list_nodes(&node).await
        }
        (_, "/api/v1/publish" | "/api/v1/channels" | "/healthz" | "/readyz" | "/metrics") => {
            error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this path",
            )
        }
        _ => error_response(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    }
}

/// `POST /api/v1/publish`, as the server span of its trace: it continues the
/// backend's trace when the request carries a W3C `traceparent` header.
async fn publish(node: Arc<Node>, req: Request<Incoming>) -> Response<Body> {
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        "POST /api/v1/publish",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/api/v1/publish",
        http.response.status_code = tracing::field::Empty,
    );
    if !span.is_disabled() {
        if let Some(traceparent) = header_str(req.headers(), "traceparent") {
            let tracestate = header_str(req.headers(), "tracestate");
            propagation::set_remote_parent(&span, traceparent, tracestate);
        }
    }
    let response = async {
        if !api::authorized(&node, req.headers()) {
            return api::unauthorized();
        }
        match read_body(req, node.config.max_publish_bytes).await {
            Ok(body) => api::publish(&node, &body).await,
            Err(response) => response,
        }
    }
    .instrument(span.clone())
    .await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

fn header_str<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn readiness(node: &Node) -> Response<Body> {
    let broker = node.broker.health();
    let ready = broker.healthy && !node.is_draining();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        &json!({
            "ready": ready,
            "draining": node.is_draining(),
            "broker": {"kind": node.broker.name(), "healthy": broker.healthy, "detail": broker.detail},
            "connections": node.hub.connection_count(),
        }),
    )
}

async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, Response<Body>> {
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                &format!("request body exceeds {limit} bytes"),
            ))
        }
        Err(e) => Err(error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!("could not read request body: {e}"),
        )),
    }
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
    if node.hub.connection_count() >= node.config.max_connections {
        node.metrics.reject("node_full");
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "node_full",
            "this node is at its connection limit; connect again",
        );
    }
    let identity = match authenticate(&node, &req) {
        Ok(identity) => identity,
        Err(e) => {
            node.metrics.reject(e.code());
            tracing::debug!(%peer, error = %e, "refused connection");
            return error_response(StatusCode::UNAUTHORIZED, e.code(), &e.to_string());
        }
    };
    // Owns the hub registration, broker interest and user count from here on: every
    // early return below releases them by dropping it.
    let (mut membership, registration) =
        match Membership::register(node.clone(), identity.user.clone()) {
            Ok(registered) => registered,
            Err(e) => {
                node.metrics.reject("user_connection_limit");
                return error_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_connections",
                    &e.to_string(),
                );
            }
        };
    if let Some(user) = identity.user.as_deref() {
        if !membership.admit().await {
            node.metrics.reject("user_connection_limit");
            return error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                &format!(
                    "user {user} already has {} open connections in the cluster",
                    node.config.max_connections_per_user
                ),
            );
        }
    }
    if let Err(e) = membership.join_auto_channels(&identity).await {
        node.metrics.reject("broker_unavailable");
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            &e.to_string(),
        );
    }
    let span = tracing::info_span!(
        "connection",
        id = registration.id,
        user = identity.user.as_deref().unwrap_or("-"),
        %peer
    );
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let config = WebSocketConfig::default()
                        .read_buffer_size(READ_BUFFER)
                        .write_buffer_size(WRITE_BUFFER)
                        // Room for the largest publishable frame: writes are bounded, never refused.
                        .max_write_buffer_size(
                            WRITE_BUFFER + 2 * node.config.max_publish_bytes + 1024,
                        )
                        .max_message_size(Some(node.config.max_message_bytes))
                        .max_frame_size(Some(node.config.max_message_bytes));
                    let ws = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(config),
                    )
                    .await;
                    tracing::debug!("connected");
                    Session::new(node, ws, identity, registration, membership)
                        .run()
                        .await;
                    tracing::debug!("disconnected");
                }
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    drop(membership);
                }
            }
        }
        .instrument(span),
    );
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Full::new(Bytes::new()))
        .expect("valid response")
}

fn authenticate(node: &Node, req: &Request<Incoming>) -> Result<Identity, AuthError> {
    let query = Query::parse(req.uri().query());
    let token = query.get("token").filter(|t| !t.is_empty()).or_else(|| {
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(api::bearer_credentials)
    });
    match token {
        Some(token) => node.auth.verify(token),
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
