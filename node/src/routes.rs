//! The HTTP API's routing table: which handler answers which path and method.
//!
//! Routing lives in one axum [`Router`] so that the API key is checked by one layer in
//! front of every backend endpoint, publish bodies are capped by one body-limit layer,
//! and a known path asked with the wrong method gets a 405 with `Allow`. The WebSocket
//! endpoint is not routed here: [`crate::server`] hands upgrades to its own handshake
//! before a request reaches this router.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, StatusCode};
use http_body_util::Full;
use serde_json::json;
use tracing::Instrument;

use crate::api::{self, error_response, json_response, Query};
use crate::dev;
use crate::idempotency;
use crate::node::Node;
use crate::telemetry::{propagation, TRACE_TARGET};

/// Where backends publish.
const PUBLISH: &str = "/api/v1/publish";

/// The API router for `node`: probes, metrics and the index open to all; publish and
/// admin views behind the API key.
pub fn router(node: Arc<Node>) -> Router {
    let protected = Router::new()
        .route(
            PUBLISH,
            post(publish).layer(DefaultBodyLimit::max(node.config.max_publish_bytes)),
        )
        .route("/api/v1/channels", get(channels))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/developer/websocket-sessions", get(sessions))
        .route("/api/developer/websocket-sessions/", get(sessions))
        .route("/api/developer/websocket-messages", get(messages))
        .route("/api/developer/websocket-messages/", get(messages))
        .route_layer(middleware::from_fn_with_state(
            node.clone(),
            require_api_key,
        ))
        // Outside the key check, so refused publishes are traced too.
        .route_layer(middleware::from_fn(trace_publish));
    Router::new()
        .route("/", get(index))
        .route(dev::SDK_PATH, get(sdk_bundle))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(protected)
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(node)
}

/// The one API-key check: `Authorization: Bearer <HERALD_API_KEY>`, compared in
/// constant time.
async fn require_api_key(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    if !api::authorized(&node, req.headers()) {
        return api::unauthorized().into_response();
    }
    next.run(req).await
}

/// Runs `POST /api/v1/publish` as the server span of its trace: it continues the
/// backend's trace when the request carries a W3C `traceparent` header.
async fn trace_publish(req: Request, next: Next) -> Response {
    if req.uri().path() != PUBLISH {
        return next.run(req).await;
    }
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        "POST /api/v1/publish",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = PUBLISH,
        http.response.status_code = tracing::field::Empty,
    );
    if !span.is_disabled() {
        if let Some(traceparent) = header_str(req.headers(), "traceparent") {
            let tracestate = header_str(req.headers(), "tracestate");
            propagation::set_remote_parent(&span, traceparent, tracestate);
        }
    }
    let response = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `POST /api/v1/publish`; the body arrives capped at `HERALD_MAX_PUBLISH_BYTES`.
async fn publish(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response<api::Body> {
    let key = headers
        .get("idempotency-key")
        .map(|value| value.to_str().map_err(|_| idempotency::KeyError::NotText));
    match body {
        Ok(body) => api::publish(&node, &body, key).await,
        Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
            error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                &format!(
                    "request body exceeds {} bytes",
                    node.config.max_publish_bytes
                ),
            )
        }
        Err(e) => error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!("could not read request body: {e}"),
        ),
    }
}

async fn channels(State(node): State<Arc<Node>>) -> Response<api::Body> {
    api::list_channels(&node)
}

async fn nodes(State(node): State<Arc<Node>>) -> Response<api::Body> {
    api::list_nodes(&node).await
}

async fn sessions(State(node): State<Arc<Node>>, query: Query) -> Response<api::Body> {
    api::list_sessions(&node, &query).await
}

async fn messages(State(node): State<Arc<Node>>, query: Query) -> Response<api::Body> {
    api::list_messages(&node, &query).await
}

/// Query strings decode the way they always have (first value wins, lenient
/// percent-decoding), so no query is ever refused.
impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Query::parse(parts.uri.query()))
    }
}

async fn index(State(node): State<Arc<Node>>) -> Response<api::Body> {
    if node.config.dev {
        return dev::demo_page(&node);
    }
    json_response(
        StatusCode::OK,
        &json!({"service": "herald-node", "node": node.id, "websocket": node.config.ws_path}),
    )
}

/// The SDK bundle the demo page imports (`--dev` only).
async fn sdk_bundle(State(node): State<Arc<Node>>) -> Response<api::Body> {
    if node.config.dev {
        return dev::sdk_bundle();
    }
    not_found().await
}

async fn healthz() -> Response<api::Body> {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

async fn readyz(State(node): State<Arc<Node>>) -> Response<api::Body> {
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

async fn metrics(State(node): State<Arc<Node>>) -> Response<api::Body> {
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .body(Full::new(Bytes::from(node.metrics.render())))
        .expect("valid response")
}

/// A known path asked with another method; axum adds the `Allow` header.
async fn method_not_allowed() -> Response<api::Body> {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this path",
    )
}

async fn not_found() -> Response<api::Body> {
    error_response(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}
