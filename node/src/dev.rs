//! `--dev`: everything a developer needs to try Herald in one command.
//!
//! Generates a JWT secret and an API key, prints a ready-to-use user token and a
//! `curl` publish example, and serves a demo page written the way the existing
//! front end talks to the server.

use bytes::Bytes;
use http::{header, Response};
use http_body_util::Full;
use jsonwebtoken::{encode, EncodingKey, Header};
use rand::Rng;
use serde_json::json;

use crate::api::Body;
use crate::node::Node;

/// Secrets generated for a development run.
#[derive(Debug, Clone)]
pub struct DevSecrets {
    /// HS256 secret.
    pub jwt_secret: String,
    /// Publish/admin API key.
    pub api_key: String,
}

impl DevSecrets {
    /// Fresh random secrets.
    pub fn generate() -> Self {
        Self {
            jwt_secret: random_hex(32),
            api_key: random_hex(24),
        }
    }
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// A token for `user` valid for a day, signed with `secret`.
pub fn token_for(secret: &str, user: &str) -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 24 * 3600;
    encode(
        &Header::default(),
        &json!({"user_id": user, "exp": exp}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing with a secret cannot fail")
}

/// The banner printed at start in dev mode.
pub fn banner(secrets: &DevSecrets, addr: std::net::SocketAddr, ws_path: &str) -> String {
    let token = token_for(&secrets.jwt_secret, "1");
    format!(
        "\n  Herald is running in development mode (embedded broker, generated secrets).\n\n\
         \x20 demo page:   http://{addr}/\n\
         \x20 JWT secret:  {secret}\n\
         \x20 API key:     {key}\n\
         \x20 token (user 1, valid 24h):\n    {token}\n\n\
         \x20 connect:     ws://{addr}{ws_path}?token={token}\n\
         \x20 publish:\n    curl -s http://{addr}/api/v1/publish -H 'Authorization: Bearer {key}' \\\n\
         \x20     -d '{{\"channel\":\"notifications\",\"type\":\"notification\",\"users\":[\"1\"],\"data\":{{\"title\":\"Hello\",\"content\":\"from Herald\"}}}}'\n",
        secret = secrets.jwt_secret,
        key = secrets.api_key,
    )
}

/// Where `--dev` serves the SDK bundle the demo page imports.
pub const SDK_PATH: &str = "/herald.min.js";

/// The SDK (`clients/js`), built: a copy of `clients/js/dist/herald.min.js` that
/// `clients/js/run-tests.sh` checks is current.
pub fn sdk_bundle() -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/javascript; charset=utf-8")
        .body(Full::new(Bytes::from_static(include_bytes!(
            "../assets/herald.min.js"
        ))))
        .expect("valid response")
}

/// The demo page, with a token for user 1 and the API key filled in.
pub fn demo_page(node: &Node) -> Response<Body> {
    let secret = node.auth_secret_for_dev().unwrap_or_default();
    let page = include_str!("../assets/demo.html")
        .replace("{{TOKEN}}", &token_for(&secret, "1"))
        .replace("{{API_KEY}}", &node.api_key)
        .replace("{{WS_PATH}}", &node.config.ws_path);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Full::new(Bytes::from(page)))
        .expect("valid response")
}
