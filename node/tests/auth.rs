//! Connections are authenticated before the upgrade: a bad token costs an HTTP 401
//! with a JSON reason, never a WebSocket.

mod common;

use common::{now, token_with, TestNode};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

#[tokio::test]
async fn bad_expired_missing_and_forged_tokens_are_refused_with_a_reason() {
    let node = TestNode::start(&[]);
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &json!({"user_id": 1, "exp": now() + 60}),
        &EncodingKey::from_secret(b"not-the-secret"),
    )
    .unwrap();
    let cases = [
        (
            format!("ws://{}/ws/notifications/", node.addr),
            "token_missing",
        ),
        (node.ws_url("garbage"), "token_malformed"),
        (
            node.ws_url(&token_with(json!({"user_id": 1, "exp": now() - 3600}))),
            "token_expired",
        ),
        (
            node.ws_url(&token_with(
                json!({"user_id": 1, "exp": now() + 7200, "nbf": now() + 3600}),
            )),
            "token_not_yet_valid",
        ),
        (node.ws_url(&forged), "token_invalid_signature"),
        (
            node.ws_url(&token_with(json!({"exp": now() + 60}))),
            "token_missing_claim",
        ),
    ];
    for (url, code) in cases {
        let (status, body) = node.refused(&url).await;
        assert_eq!(status, 401, "{url}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].is_string());
    }
    assert!(
        node.metric("herald_connections_rejected_total{reason=\"token_expired\"}")
            .await
            >= 1.0
    );
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_with_public_keys() {
    let keys = format!("{},{}", fixture("rsa_public.pem"), fixture("ec_public.pem"));
    let node = TestNode::start(&["--jwt-public-key-file", &keys]);
    let claims = json!({"user_id": 5, "exp": now() + 60});
    let rsa = std::fs::read(fixture("rsa_private.pem")).unwrap();
    let ec = std::fs::read(fixture("ec_private.pem")).unwrap();
    let rs256 = encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&rsa).unwrap(),
    )
    .unwrap();
    let es256 = encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(&ec).unwrap(),
    )
    .unwrap();
    for token in [rs256, es256] {
        let mut client = node.connect_url(&node.ws_url(&token)).await;
        client.assert_alive().await;
    }
    // The HS256 secret is configured too, so HS256 tokens still work alongside.
    let mut hs = node.connect("5").await;
    hs.assert_alive().await;
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let node = TestNode::start(&["--jwt-issuer", "crm", "--jwt-audience", "herald"]);
    let good = token_with(json!({"user_id": 1, "exp": now() + 60, "iss": "crm", "aud": "herald"}));
    node.connect_url(&node.ws_url(&good))
        .await
        .assert_alive()
        .await;
    let bad = token_with(json!({"user_id": 1, "exp": now() + 60, "iss": "evil", "aud": "herald"}));
    let (status, body) = node.refused(&node.ws_url(&bad)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "token_wrong_issuer");
}

#[tokio::test]
async fn per_user_connection_cap_refuses_extra_connections() {
    let node = TestNode::start(&["--max-connections-per-user", "2"]);
    let _a = node.connect("9").await;
    let _b = node.connect("9").await;
    let (status, body) = node.refused(&node.ws_url(&common::token("9"))).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "too_many_connections");
    // Other users are unaffected.
    node.connect("10").await.assert_alive().await;
}

#[tokio::test]
async fn the_node_refuses_to_start_without_credentials() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald-node"))
        .env_remove("HERALD_JWT_SECRET")
        .env_remove("HERALD_API_KEY")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("HERALD_JWT_SECRET"), "{stderr}");
    assert!(stderr.contains("HERALD_API_KEY"), "{stderr}");
    assert!(stderr.contains("--dev"), "{stderr}");
}

/// Sends a raw HTTP/1.1 request head and returns the whole response text.
async fn raw_http(node: &TestNode, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut response),
    )
    .await;
    assert!(read.is_ok(), "the node answers and closes within 5 s");
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn a_wrong_websocket_version_gets_426_naming_version_13() {
    let node = TestNode::start(&[]);
    for version in ["8", "14", "", "13, 8"] {
        let response = raw_http(
            &node,
            &format!(
                "GET /ws/notifications/?token={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: {version}\r\nConnection: close\r\n\r\n",
                common::token("1")
            ),
        )
        .await;
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 426"), "{version:?}: {head}");
        assert!(
            head.lines()
                .any(|l| l.eq_ignore_ascii_case("sec-websocket-version: 13")),
            "{version:?}: {head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "unsupported_version", "{body}");
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_for_tokens_and_the_api_key() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let node = TestNode::start(&[]);
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let mut request = format!("ws://{}/ws/notifications/", node.addr)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("{scheme} {}", common::token("99")).parse().unwrap(),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .unwrap_or_else(|e| panic!("{scheme}: {e}"));
        common::Client { ws }.assert_alive().await;

        let (status, body) =
            publish_with_auth(&node, &format!("{scheme} {}", common::API_KEY)).await;
        assert_eq!(status, 200, "{scheme}: {body}");
    }
    // Another scheme is still refused.
    let (status, body) = publish_with_auth(&node, &format!("Basic {}", common::API_KEY)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
}

async fn publish_with_auth(node: &TestNode, authorization: &str) -> (u16, serde_json::Value) {
    let body = json!({"channel": "alerts", "type": "alert", "data": {}}).to_string();
    let (status, bytes) = common::try_http(
        node.addr,
        "POST",
        "/api/v1/publish",
        None,
        &[("authorization", authorization)],
        body,
    )
    .await
    .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn the_query_token_wins_over_the_header_and_the_first_token_parameter_counts() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let node = TestNode::start(&[]);
    let good = common::token("5");
    let with_header = |url: String, value: String| {
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", value.parse().unwrap());
        request
    };
    // A valid query token with a garbage header: the header is never looked at.
    let request = with_header(node.ws_url(&good), "Bearer garbage".into());
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    common::Client { ws }.assert_alive().await;
    // A garbage query token with a valid header: refused, the header is not a fallback.
    let request = with_header(node.ws_url("garbage"), format!("Bearer {good}"));
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 401)
        }
        other => panic!("expected a 401, got {:?}", other.map(|_| ())),
    }
    // A repeated `token` parameter: the first one counts.
    let first_good = format!("{}&token=garbage", node.ws_url(&good));
    node.connect_url(&first_good).await.assert_alive().await;
    let first_bad = format!(
        "ws://{}/ws/notifications/?token=garbage&token={good}",
        node.addr
    );
    let (status, body) = node.refused(&first_bad).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("token_malformed"))
    );
}

#[tokio::test]
async fn iat_is_not_checked() {
    let node = TestNode::start(&[]);
    for iat in [now() + 86_400, 0, -5] {
        let token = token_with(json!({"user_id": 1, "exp": now() + 60, "iat": iat}));
        node.connect_url(&node.ws_url(&token))
            .await
            .assert_alive()
            .await;
    }
}
