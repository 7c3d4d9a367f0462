//! HTTP API for backends: publishing, and admin views behind the API key.
//!
//! `POST /api/v1/publish` takes one message object or an array of them (a batch, with
//! a result per item). Every refusal is a JSON error with a stable code; a message is
//! only acknowledged once the broker has accepted it.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, Response, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::auth::claim_as_id;
use crate::capped::{self, CappedError};
use crate::channels::ChannelConfig;
use crate::coalesce::{self, Coalesced, Decision};
use crate::idempotency::{self, Claim, ClaimError, Outcome};
use crate::message::{unix_micros, Message, Offset, Target, Topic};
use crate::node::Node;
use crate::tags::{self, Tags, TagsError};
use crate::ChannelName;

/// The response body type used by every handler.
pub type Body = Full<Bytes>;

/// A JSON response.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(body).expect("JSON values always serialize");
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(bytes)))
        .expect("static response parts are valid")
}

/// A JSON error response: `{"error":{"code":...,"message":...}}`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Body is not a valid publish request.
    #[error("{0}")]
    BadRequest(String),
    /// No such channel.
    #[error("unknown channel {0:?}")]
    UnknownChannel(String),
    /// The channel does not accept this message type.
    #[error("channel {channel:?} does not accept messages of type {kind:?}")]
    TypeNotAllowed {
        /// The channel.
        channel: String,
        /// The refused type.
        kind: String,
    },
    /// `data` is not a JSON object.
    #[error("\"data\" must be a JSON object")]
    DataNotObject,
    /// `data` nests deeper than `HERALD_MAX_DATA_DEPTH`.
    #[error("\"data\" nests arrays and objects deeper than {0} levels")]
    DataTooDeep(usize),
    /// A per-user channel needs recipients.
    #[error("channel {0:?} delivers per user: name the recipients in \"users\"")]
    UsersRequired(String),
    /// More recipients than `HERALD_MAX_USERS_PER_MESSAGE`.
    #[error("\"users\" names more than {0} recipients; split the message")]
    TooManyUsers(usize),
    /// `tags` is outside the documented shape or limits.
    #[error("{0}")]
    InvalidTags(#[from] TagsError),
    /// A user id is neither a string nor an integer.
    #[error("\"users\" must contain user ids as strings or integers, found {0}")]
    InvalidUser(String),
    /// `data` does not match the schema the channel declares for the type.
    #[error("\"data\" does not match the schema of type {kind:?} at {path:?}: {reason}")]
    SchemaViolation {
        /// The message type.
        kind: String,
        /// The failing instance path (a JSON pointer; empty for `data` itself).
        path: String,
        /// Why it fails.
        reason: String,
    },
    /// Over the channel's publish rate limit.
    #[error("channel {0:?} is over its publish rate limit")]
    RateLimited(String),
    /// The broker could not accept the message; nothing was stored.
    #[error("{0}")]
    Unavailable(String),
    /// The idempotency key is empty, too long or not text.
    #[error("{0}")]
    InvalidIdempotencyKey(#[from] idempotency::KeyError),
    /// The idempotency key was used for a different request, or its first publish is
    /// still in flight.
    #[error("{0}")]
    Idempotency(#[from] idempotency::ClaimError),
}

impl PublishError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            PublishError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            PublishError::UnknownChannel(_) => (StatusCode::NOT_FOUND, "unknown_channel"),
            PublishError::TypeNotAllowed { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "type_not_allowed")
            }
            PublishError::DataNotObject => (StatusCode::UNPROCESSABLE_ENTITY, "data_not_object"),
            PublishError::DataTooDeep(_) => (StatusCode::UNPROCESSABLE_ENTITY, "data_too_deep"),
            PublishError::UsersRequired(_) => (StatusCode::UNPROCESSABLE_ENTITY, "users_required"),
            PublishError::InvalidUser(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_user"),
            PublishError::InvalidTags(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_tags"),
            PublishError::SchemaViolation { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "schema_violation")
            }
            PublishError::TooManyUsers(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_users"),
            PublishError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            PublishError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable"),
            PublishError::InvalidIdempotencyKey(_) => {
                (StatusCode::BAD_REQUEST, "invalid_idempotency_key")
            }
            PublishError::Idempotency(ClaimError::Reused(_)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            PublishError::Idempotency(ClaimError::InFlight) => {
                (StatusCode::CONFLICT, "idempotency_key_in_flight")
            }
            PublishError::Idempotency(ClaimError::Broker(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable")
            }
        }
    }

    /// The `error` object of an answer: code, message, and what a schema violation
    /// adds (the failing instance path and the reason).
    fn error_body(&self) -> Value {
        let mut error = json!({"code": self.status_and_code().1, "message": self.to_string()});
        if let PublishError::SchemaViolation { path, reason, .. } = self {
            error["instance_path"] = json!(path);
            error["reason"] = json!(reason);
        }
        error
    }

    /// A batch item's result.
    fn to_json(&self) -> Value {
        json!({"status": self.status_and_code().0.as_u16(), "error": self.error_body()})
    }
}

/// One message as backends send it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest<'a> {
    channel: String,
    #[serde(rename = "type")]
    kind: String,
    data: Box<RawValue>,
    /// Parsed later, against the recipient limit.
    #[serde(default, borrow)]
    users: Option<&'a RawValue>,
    /// Parsed later, against the tag limits.
    #[serde(default, borrow)]
    tags: Option<&'a RawValue>,
    /// Makes a repeat of this request within the window answer the first result.
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// What a successful publish returns.
#[derive(Debug, Serialize)]
pub struct Published {
    /// The message id.
    pub id: String,
    /// Local connections the message was queued to.
    pub delivered_locally: usize,
    /// History offsets, per recipient user or for the channel.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub offsets: Vec<String>,
    /// Whether this answers a repeat of an idempotent publish (nothing was published).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// What the channel's coalescing made of the message, when it did anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coalesced: Option<Coalesced>,
    /// For a held message: when its window closes, in milliseconds from the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_closes_in_ms: Option<u64>,
}

/// Checks the `Authorization: Bearer <api key>` header in constant time.
pub fn authorized(node: &Node, headers: &HeaderMap) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_credentials)
        .unwrap_or("");
    constant_time_eq(presented.as_bytes(), node.api_key.as_bytes())
}

/// The credentials of an `Authorization: Bearer <credentials>` value. The scheme is
/// case-insensitive (RFC 7235 §2.1) and may be followed by several spaces.
pub fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start_matches(' '))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() || b.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The 401 answer for a missing or wrong API key.
pub fn unauthorized() -> Response<Body> {
    let mut response = error_response(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or invalid API key: send Authorization: Bearer <HERALD_API_KEY>",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("valid"));
    response
}

/// Handles a publish body (already size-limited and authorized by the router) with
/// the `Idempotency-Key` header's value, if any.
pub async fn publish(
    node: &Arc<Node>,
    body: &[u8],
    header_key: Option<Result<&str, idempotency::KeyError>>,
) -> Response<Body> {
    if is_batch(body) {
        if header_key.is_some() {
            return error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the Idempotency-Key header applies to a single message: give each batch item its own \"idempotency_key\"",
            );
        }
        let max = node.config.max_batch;
        let items: Vec<&RawValue> = match capped::parse(body, max) {
            Ok(items) => items,
            Err(CappedError::TooMany(_)) => {
                return error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_many_messages",
                    &format!("a batch holds at most {max} messages (HERALD_MAX_BATCH); split it"),
                )
            }
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("body is not a JSON array of messages: {e}"),
                )
            }
        };
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            let result = match parse_request(item.get().as_bytes()) {
                Ok(request) => publish_one(node, request, None).await,
                Err(e) => Err(e),
            };
            results.push(match result {
                Ok(published) => serde_json::to_value(published).expect("serializable"),
                Err(e) => e.to_json(),
            });
        }
        return json_response(StatusCode::OK, &json!({ "results": results }));
    }
    let result = match (parse_request(body), header_key.transpose()) {
        (Err(e), _) => Err(e),
        (_, Err(e)) => Err(e.into()),
        (Ok(request), Ok(header_key)) => publish_one(node, request, header_key).await,
    };
    match result {
        Ok(published) => json_response(StatusCode::OK, &published),
        Err(e) => json_response(e.status_and_code().0, &json!({"error": e.error_body()})),
    }
}

/// Whether a publish body is a batch (a JSON array) rather than one message.
fn is_batch(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

fn parse_request(body: &[u8]) -> Result<PublishRequest<'_>, PublishError> {
    serde_json::from_slice(body).map_err(|e| {
        PublishError::BadRequest(format!(
            "invalid publish request: {e}; expected {{\"channel\",\"type\",\"data\",\"users\"?,\"tags\"?,\"idempotency_key\"?}}"
        ))
    })
}

async fn publish_one(
    node: &Arc<Node>,
    mut request: PublishRequest<'_>,
    header_key: Option<&str>,
) -> Result<Published, PublishError> {
    let key = match (request.idempotency_key.take(), header_key) {
        (Some(field), Some(header)) if field != header => {
            return Err(PublishError::BadRequest(
                "the Idempotency-Key header and \"idempotency_key\" differ; send one".into(),
            ))
        }
        (field, header) => field.or_else(|| header.map(str::to_owned)),
    };
    if let Some(key) = &key {
        idempotency::validate(key)?;
    }
    let channels = node.channels.snapshot();
    let resolved = channels
        .get(&request.channel)
        .ok_or_else(|| PublishError::UnknownChannel(request.channel.clone()))?;
    let (channel, config) = (&resolved.name, resolved.config);
    if !config.allows_type(&request.kind) {
        return Err(PublishError::TypeNotAllowed {
            channel: request.channel,
            kind: request.kind,
        });
    }
    let (users, tags) = check_content(
        &request,
        node.config.max_data_depth,
        node.config.max_users_per_message,
    )?;
    if config.is_per_user() && users.as_ref().is_none_or(Vec::is_empty) {
        return Err(PublishError::UsersRequired(request.channel));
    }
    if let Some(schema) = resolved.schema(&request.kind) {
        check_schema(schema, &request)?;
    }
    let claimed = match &key {
        None => None,
        Some(key) => {
            let fingerprint = idempotency::fingerprint(
                channel,
                &request.kind,
                users.as_deref(),
                request.data.get(),
                &tags,
            );
            let window = node.config.idempotency_window;
            match idempotency::claim(&*node.broker, channel, key, &fingerprint, window).await? {
                Claim::Done(outcome) => {
                    node.metrics.idempotent_repeats.inc();
                    return Ok(Published {
                        id: outcome.id,
                        delivered_locally: 0,
                        offsets: outcome.offsets,
                        duplicate: true,
                        coalesced: outcome.coalesced,
                        window_closes_in_ms: None,
                    });
                }
                Claim::Fresh => Some((key.as_str(), fingerprint)),
            }
        }
    };
    let result = publish_claimed(node, channel, config, request, users, tags).await;
    if let Some((key, fingerprint)) = claimed {
        let window = node.config.idempotency_window;
        let recorded = match &result {
            Ok(published) => {
                let outcome = Outcome {
                    id: published.id.clone(),
                    offsets: published.offsets.clone(),
                    coalesced: published.coalesced,
                };
                idempotency::settle(&*node.broker, channel, key, &fingerprint, outcome, window)
                    .await
            }
            // Nothing (or not everything) was published: a retry must publish again.
            Err(_) => node.broker.release_idempotency_key(channel, key).await,
        };
        if let Err(e) = recorded {
            // The claim expires on its own; until then a repeat waits, then hears 409.
            tracing::warn!(error = %e, channel = %channel, "cannot record the idempotency outcome");
        }
    }
    result
}

/// Publishes a checked request whose idempotency key (if any) this node holds.
async fn publish_claimed(
    node: &Arc<Node>,
    channel: &ChannelName,
    config: &ChannelConfig,
    request: PublishRequest<'_>,
    users: Option<Vec<crate::UserId>>,
    tags: Tags,
) -> Result<Published, PublishError> {
    if !node.allow_publish(&config.name, config.publish_rate) {
        return Err(PublishError::RateLimited(request.channel));
    }
    let id: Arc<str> = uuid::Uuid::now_v7().to_string().into();
    let span = tracing::info_span!("publish", channel = %channel, id = %id, kind = %request.kind);
    async {
        let template = Message {
            id: id.clone(),
            channel: channel.clone(),
            kind: request.kind.as_str().into(),
            data: Arc::from(request.data),
            target: Target::All,
            offset: None,
            accepted_at_micros: unix_micros(),
            trace: None,
            tags,
        };
        let targets = match users {
            None => vec![Target::All],
            Some(users) => {
                let mut users = users;
                users.sort();
                users.dedup();
                users.into_iter().map(Target::User).collect()
            }
        };
        let mut delivered = 0;
        let mut offsets = Vec::new();
        let (mut dropped, mut published, mut held) = (0, 0, None::<std::time::Duration>);
        for target in targets {
            let message = Message {
                target,
                ..template.clone()
            };
            match coalesce::decide(node, config, &message)
                .await
                .map_err(|e| PublishError::Unavailable(e.to_string()))?
            {
                Decision::Deliver => published += 1,
                Decision::Dropped => {
                    dropped += 1;
                    continue;
                }
                Decision::Held(left) => {
                    held = Some(held.map_or(left, |h| h.max(left)));
                    continue;
                }
            }
            let accepted = node
                .broker
                .publish(message, config)
                .await
                .map_err(|e| PublishError::Unavailable(e.to_string()))?;
            if let Some(offset) = &accepted.message.offset {
                offsets.push(offset.to_string());
            }
            delivered += accepted.delivered_locally;
        }
        // Labelled by the channel's rule (the pattern for a pattern's channel), so
        // concrete channels cannot grow the metric without bound.
        if published > 0 {
            node.metrics.published(&config.name);
        }
        let coalesced = match (held, dropped, published) {
            (Some(_), _, _) => Some(Coalesced::Pending),
            (None, 0, _) => None,
            (None, _, 0) => Some(Coalesced::Dropped),
            (None, _, _) => Some(Coalesced::PartlyDropped),
        };
        tracing::debug!(delivered, ?coalesced, "published");
        Ok(Published {
            id: id.to_string(),
            delivered_locally: delivered,
            offsets,
            duplicate: false,
            coalesced,
            window_closes_in_ms: held.map(|left| left.as_millis() as u64),
        })
    }
    .instrument(span)
    .await
}

/// The checks that need no channel: `data` is an object nesting at most `max_depth`
/// levels, `users` (when present) holds at most `max_users` valid ids, and `tags`
/// (when present) keeps to the tag limits.
fn check_content(
    request: &PublishRequest<'_>,
    max_depth: usize,
    max_users: usize,
) -> Result<(Option<Vec<crate::UserId>>, Tags), PublishError> {
    if !request.data.get().trim_start().starts_with('{') {
        return Err(PublishError::DataNotObject);
    }
    if crate::jsondepth::exceeds(request.data.get().as_bytes(), max_depth) {
        return Err(PublishError::DataTooDeep(max_depth));
    }
    let users = request
        .users
        .map(|raw| parse_users(raw, max_users))
        .transpose()?;
    let tags = match request.tags {
        Some(raw) if raw.get() != "null" => tags::parse(raw.get())?,
        _ => Tags::default(),
    };
    Ok((users, tags))
}

/// A publish body parsed and checked as far as possible without a node: what the
/// fuzz targets drive (see [`crate::fuzzing`]).
#[doc(hidden)]
#[derive(Debug)]
pub struct CheckedMessage {
    /// `channel`, not yet looked up.
    pub channel: String,
    /// `type`, not yet checked against the channel.
    pub kind: String,
    /// `data`, raw.
    pub data: Box<RawValue>,
    /// `users`, parsed.
    pub users: Option<Vec<crate::UserId>>,
    /// `tags`, parsed.
    pub tags: Tags,
}

/// Parses `body` the way [`publish`] does, up to the channel lookup: one result per
/// message (one for a single message), or why the batch as a whole was refused.
pub(crate) fn check_body(
    body: &[u8],
    max_batch: usize,
    max_depth: usize,
    max_users: usize,
) -> Result<Vec<Result<CheckedMessage, PublishError>>, CappedError> {
    let check = |text: &[u8]| {
        let request = parse_request(text)?;
        let (users, tags) = check_content(&request, max_depth, max_users)?;
        Ok(CheckedMessage {
            channel: request.channel,
            kind: request.kind,
            data: request.data,
            users,
            tags,
        })
    };
    if is_batch(body) {
        let items: Vec<&RawValue> = capped::parse(body, max_batch)?;
        Ok(items
            .iter()
            .map(|item| check(item.get().as_bytes()))
            .collect())
    } else {
        Ok(vec![check(body)])
    }
}

/// Recipient ids from the raw `users` array, refused past `max` while parsing.
/// Items are kept raw until they are known not to be objects: a `Value` would read
/// `{"$serde_json::private::RawValue":"42"}` (serde_json's private raw-value key) as
/// the id 42, where every other object is refused.
fn parse_users(raw: &RawValue, max: usize) -> Result<Vec<crate::UserId>, PublishError> {
    let items: Vec<&RawValue> = capped::parse(raw.get().as_bytes(), max).map_err(|e| match e {
        CappedError::TooMany(max) => PublishError::TooManyUsers(max),
        CappedError::Json(e) => {
            PublishError::BadRequest(format!("\"users\" must be an array of user ids: {e}"))
        }
    })?;
    items
        .iter()
        .map(|item| {
            let value = (!item.get().starts_with('{'))
                .then(|| serde_json::from_str::<Value>(item.get()).ok())
                .flatten();
            claim_as_id(value.as_ref()).ok_or_else(|| PublishError::InvalidUser(item.get().into()))
        })
        .collect()
}

/// Validates `data` against its type's schema. The data was parsed as raw JSON
/// (bounded in size and depth already); validating needs it as a value.
fn check_schema(
    schema: &herald_contract::schemas::Validator,
    request: &PublishRequest<'_>,
) -> Result<(), PublishError> {
    let data: Value = serde_json::from_str(request.data.get())
        .map_err(|e| PublishError::BadRequest(format!("\"data\" is not valid JSON: {e}")))?;
    match herald_contract::schemas::violation(schema, &data) {
        None => Ok(()),
        Some((path, reason)) => Err(PublishError::SchemaViolation {
            kind: request.kind.clone(),
            path,
            reason,
        }),
    }
}

/// `GET /api/v1/channels`: the channels in force.
pub fn list_channels(node: &Node) -> Response<Body> {
    let snapshot = node.channels.snapshot();
    let mut channels: Vec<_> = snapshot.iter().map(|(_, c)| c.as_ref().clone()).collect();
    channels.sort_by(|a, b| a.name.cmp(&b.name));
    json_response(StatusCode::OK, &json!({ "channels": channels }))
}

/// Pagination parameters: `page` (from 1) and `page_size` (1–1000, default 100).
fn paginate(params: &Query, items: Vec<Value>) -> Value {
    let page: usize = params
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let page_size: usize = params
        .get("page_size")
        .and_then(|p| p.parse().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let count = items.len();
    let results: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * page_size)
        .take(page_size)
        .collect();
    json!({"count": count, "page": page, "page_size": page_size, "results": results})
}

/// `GET /api/developer/websocket-sessions/?user=&channel=&page=&page_size=`: connections
/// across the cluster (this node's alone on the embedded broker).
pub async fn list_sessions(node: &Node, params: &Query) -> Response<Body> {
    let user = params.get("user");
    let channel = params.get("channel");
    let records: Vec<(String, crate::hub::SessionInfo)> = match &node.presence {
        Some(presence) => match presence.sessions(user).await {
            Ok(records) => records.into_iter().map(|r| (r.node, r.session)).collect(),
            Err(e) => {
                return error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    &e.to_string(),
                )
            }
        },
        None => node
            .hub
            .sessions(user)
            .into_iter()
            .map(|s| (node.id.clone(), s))
            .collect(),
    };
    let sessions: Vec<Value> = records
        .into_iter()
        .filter(|(_, s)| channel.is_none_or(|c| s.subscriptions.iter().any(|x| x == c)))
        .map(|(node, session)| json!({"node": node, "session": session}))
        .collect();
    json_response(StatusCode::OK, &paginate(params, sessions))
}

/// `GET /api/developer/websocket-messages/?channel=&user=&page=&page_size=`: messages
/// kept in history, newest first. Per-user channels need `user`.
pub async fn list_messages(node: &Node, params: &Query) -> Response<Body> {
    let user = params.get("user").map(crate::UserId::from);
    let snapshot = node.channels.snapshot();
    // Without `?channel=`, every plain channel with history; a pattern's channels
    // are listed one at a time (`?channel=dept:5`).
    let mut channels: Vec<(ChannelName, &Arc<ChannelConfig>)> = match params.get("channel") {
        None => snapshot
            .iter()
            .filter(|(_, config)| !config.is_pattern())
            .map(|(name, config)| (name.clone(), config))
            .collect(),
        Some(wanted) => snapshot
            .get(wanted)
            .map(|r| (r.name, r.config))
            .into_iter()
            .collect(),
    };
    channels.retain(|(_, config)| config.history && (!config.is_per_user() || user.is_some()));
    if let Some(wanted) = params.get("channel") {
        match snapshot.get(wanted).map(|r| r.config) {
            None => {
                return error_response(
                    StatusCode::NOT_FOUND,
                    "unknown_channel",
                    &format!("unknown channel {wanted:?}"),
                )
            }
            Some(config) if config.is_per_user() && user.is_none() => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "user_required",
                    "this channel keeps history per user: pass ?user=",
                )
            }
            _ => {}
        }
    }
    channels.sort_by(|a, b| a.0.cmp(&b.0));
    let mut messages: Vec<(Offset, Value)> = Vec::new();
    for (name, config) in channels {
        let topic = Topic::for_channel(&name, config.is_per_user(), user.as_ref());
        let replay = match node.broker.history(&topic, config, None).await {
            Ok(replay) => replay,
            Err(e) => {
                return error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    &e.to_string(),
                )
            }
        };
        for message in replay.messages {
            if let (Target::User(target), Some(user)) = (&message.target, &user) {
                if target != user {
                    continue;
                }
            }
            let offset = message.offset.unwrap_or_default();
            let target = match &message.target {
                Target::All => Value::Null,
                Target::User(user) => Value::String(user.to_string()),
            };
            messages.push((
                offset,
                json!({
                    "id": message.id.as_ref(),
                    "channel": message.channel.as_ref(),
                    "type": message.kind.as_ref(),
                    "data": serde_json::from_str::<Value>(message.data.get()).unwrap_or(Value::Null),
                    "user": target,
                    "offset": message.offset,
                }),
            ));
        }
    }
    messages.sort_by_key(|(offset, _)| std::cmp::Reverse(*offset));
    let items = messages.into_iter().map(|(_, v)| v).collect();
    json_response(StatusCode::OK, &paginate(params, items))
}

/// `GET /api/v1/nodes`: live nodes with their connection counts (the operator scales
/// on these).
pub async fn list_nodes(node: &Node) -> Response<Body> {
    let nodes = match &node.presence {
        Some(presence) => match presence.nodes().await {
            Ok(nodes) => serde_json::to_value(nodes).expect("records serialize"),
            Err(e) => {
                return error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    &e.to_string(),
                )
            }
        },
        None => json!([{
            "id": node.id,
            "connections": node.hub.connection_count(),
            "draining": node.is_draining(),
        }]),
    };
    let total: u64 = nodes
        .as_array()
        .map(|a| a.iter().filter_map(|n| n["connections"].as_u64()).sum())
        .unwrap_or(0);
    json_response(
        StatusCode::OK,
        &json!({"nodes": nodes, "connections": total}),
    )
}

/// Decoded query-string parameters.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses `a=1&b=x%20y`.
    pub fn parse(query: Option<&str>) -> Self {
        let pairs = query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        Self { pairs }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some("token=a.b-c_d&user=jo%20e&x=%zz&y=%4"));
        assert_eq!(q.get("token"), Some("a.b-c_d"));
        assert_eq!(q.get("user"), Some("jo e"));
        assert_eq!(q.get("x"), Some("%zz"));
        assert_eq!(q.get("y"), Some("%4"));
        assert_eq!(q.get("missing"), None);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for value in ["Bearer k", "bearer k", "BEARER k", "bEaReR   k"] {
            assert_eq!(bearer_credentials(value), Some("k"), "{value}");
        }
        for value in ["Basic k", "Bearerk", "Bearer", "", "Bearer\tk", "Token k"] {
            assert_eq!(bearer_credentials(value), None, "{value}");
        }
        assert_eq!(bearer_credentials("Bearer "), Some(""));
    }

    #[test]
    fn api_key_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abd", b"abc"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"", b""));
    }

    #[test]
    fn body_checks_apply_every_cap_before_a_channel_is_looked_up() {
        let body = br#"{"channel":"CORP\\alice","type":"o\"brien","users":["\ud83e\udd80",42],"data":{"k":"]]}"}}"#;
        let [Ok(one)] = &check_body(body, 0, 1, 2).unwrap()[..] else {
            panic!("one accepted message expected")
        };
        assert_eq!(one.channel, r"CORP\alice");
        assert_eq!(one.kind, r#"o"brien"#);
        let users: Vec<&str> = one.users.iter().flatten().map(|u| &**u).collect();
        assert_eq!(users, ["🦀", "42"]);

        let batch = br#" [{"channel":"a","type":"t","data":{"x":[[1]]}},
            {"channel":"a","type":"t","data":[]},
            {"channel":"a","type":"t","data":{},"users":["1","2","3"]},
            {"channel":"a","type":"t","data":{},"users":[1.5]},
            {"channel":"a","type":"t","data":{},"extra":1}]"#;
        let refusals: Vec<String> = check_body(batch, 5, 2, 2)
            .unwrap()
            .into_iter()
            .map(|r| r.map_or_else(|e| e.status_and_code().1.to_owned(), |_| "ok".into()))
            .collect();
        assert_eq!(
            refusals,
            [
                "data_too_deep",
                "data_not_object",
                "too_many_users",
                "invalid_user",
                "bad_request"
            ]
        );
        assert!(matches!(
            check_body(batch, 4, 2, 2),
            Err(CappedError::TooMany(4))
        ));
    }

    /// Users went through `serde_json::Value`, which reads an object whose first key
    /// is serde_json's private raw-value token as the JSON inside its string.
    #[test]
    fn an_object_is_never_a_user_id() {
        let body = br#"{"channel":"a","type":"t","data":{},"users":["1",{"$serde_json::private::RawValue":"42"}]}"#;
        let [Err(PublishError::InvalidUser(user))] = &check_body(body, 1, 1, 2).unwrap()[..] else {
            panic!("the object must be refused")
        };
        assert_eq!(user, r#"{"$serde_json::private::RawValue":"42"}"#);
    }
}
