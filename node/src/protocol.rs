//! The wire protocol spoken with browsers.
//!
//! Existing front-end code (written for the legacy Django Channels service) sends
//! `ping` and `subscribe` and expects `pong`, `subscription_success`, `error` and
//! `{"type": ..., "data": {...}}` pushes. Everything Herald adds is an additive field or
//! a new message type, so that code keeps working unchanged. This module owns parsing
//! client frames into [`ClientMessage`] and serializing every server frame.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::capped::{self, CappedError};
use crate::filter::{self, Filter, FilterError, TagCondition};
use crate::message::{Message, Offset};
use crate::tags::Tags;

/// A message a client sent, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// `{"type":"ping"}`: answered with a `pong` carrying the server time.
    Ping,
    /// `{"type":"subscribe","channels":[...],"since":{"channel":"offset"}}`.
    Subscribe {
        /// Channels the client asks for.
        channels: Vec<String>,
        /// Per-channel offset of the last message the client saw (recovery).
        since: BTreeMap<String, String>,
        /// `"filter":{"types":[...],"tags":{"<key>":{"eq":...}|{"in":[...]}}}`: only
        /// these message types and tag values, live and replayed.
        filter: Option<Filter>,
    },
    /// `{"type":"unsubscribe","channels":[...]}`.
    Unsubscribe {
        /// Channels the client leaves.
        channels: Vec<String>,
    },
    /// `{"type":"auth","token":"..."}`: the first frame of a connection opened with
    /// `?auth=message`; on any other connection (or repeated) it closes with 4003.
    Auth {
        /// The JWT.
        token: String,
    },
    /// `{"type":"ack","channel":"...","offset":"..."}`: delivery acknowledgement.
    Ack {
        /// Channel of the acknowledged message.
        channel: String,
        /// Offset of the acknowledged message.
        offset: String,
    },
}

/// Why a client frame was rejected; the text is sent back to the client verbatim.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// The frame is not JSON.
    #[error("message is not valid JSON: {0}")]
    NotJson(String),
    /// The frame is JSON but not an object.
    #[error("message must be a JSON object with a \"type\" field")]
    NotObject,
    /// No `type` field, or not a string.
    #[error("message must have a string \"type\" field")]
    MissingType,
    /// A type this server does not know.
    #[error("unknown message type {0:?}; expected one of ping, subscribe, unsubscribe, ack, auth")]
    UnknownType(String),
    /// A field has the wrong shape.
    #[error("{0}")]
    BadField(String),
}

/// A frame's fields, still raw JSON. Frames are never parsed into a
/// `serde_json::Value`: with serde_json's `raw_value` feature (which the node needs),
/// a `Value` reads any object whose first key is `$serde_json::private::RawValue` as
/// the JSON text in its string, so `{"$serde_json::private::RawValue":"5-1"}` was
/// refused and `{"$serde_json::private::RawValue":"[\"a\"]"}` read as `["a"]`.
/// Maps of raw values and typed fields read every key as the plain string it is.
type Fields<'a> = BTreeMap<String, &'a RawValue>;

impl ClientMessage {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let frame: &RawValue =
            serde_json::from_str(text).map_err(|e| ParseError::NotJson(e.to_string()))?;
        let object: Fields<'_> =
            serde_json::from_str(frame.get()).map_err(|_| ParseError::NotObject)?;
        let kind: String = match object.get("type").map(|raw| typed(raw)) {
            Some(Some(kind)) => kind,
            _ => return Err(ParseError::MissingType),
        };
        match kind.as_str() {
            "ping" => Ok(Self::Ping),
            "subscribe" => Ok(Self::Subscribe {
                channels: string_list(&object, "channels")?,
                since: since_map(&object)?,
                filter: filter(&object)?,
            }),
            "unsubscribe" => Ok(Self::Unsubscribe {
                channels: string_list(&object, "channels")?,
            }),
            "auth" => match string_field(&object, "token")? {
                token if token.is_empty() => {
                    Err(ParseError::BadField("\"token\" must not be empty".into()))
                }
                token => Ok(Self::Auth { token }),
            },
            "ack" => Ok(Self::Ack {
                channel: string_field(&object, "channel")?,
                offset: string_field(&object, "offset")?,
            }),
            _ => Err(ParseError::UnknownType(kind)),
        }
    }
}

/// `raw` read as a `T`, if it is one.
fn typed<T: DeserializeOwned>(raw: &RawValue) -> Option<T> {
    serde_json::from_str(raw.get()).ok()
}

fn string_list(object: &Fields<'_>, field: &str) -> Result<Vec<String>, ParseError> {
    let Some(items) = object
        .get(field)
        .and_then(|raw| serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok())
    else {
        return Err(ParseError::BadField(format!(
            "\"{field}\" must be an array of channel names"
        )));
    };
    items
        .iter()
        .map(|item| {
            typed(item).ok_or_else(|| {
                ParseError::BadField(format!(
                    "\"{field}\" must contain only strings, found {}",
                    item.get()
                ))
            })
        })
        .collect()
}

fn string_field(object: &Fields<'_>, field: &str) -> Result<String, ParseError> {
    object
        .get(field)
        .and_then(|raw| typed(raw))
        .ok_or_else(|| ParseError::BadField(format!("\"{field}\" must be a string")))
}

fn filter(object: &Fields<'_>) -> Result<Option<Filter>, ParseError> {
    let Some(raw) = object.get("filter").filter(|raw| raw.get() != "null") else {
        return Ok(None);
    };
    let bad = |why: &str| ParseError::BadField(format!("\"filter\" {why}"));
    let fields: Fields<'_> = serde_json::from_str(raw.get()).map_err(|_| {
        bad("must be an object such as {\"types\":[\"order_update\"],\"tags\":{\"region\":{\"eq\":\"eu\"}}}")
    })?;
    if let Some(unknown) = fields
        .keys()
        .find(|k| !matches!(k.as_str(), "types" | "tags"))
    {
        return Err(bad(&format!(
            "has an unknown key {unknown:?}; known: types, tags"
        )));
    }
    let types = match fields.get("types").filter(|raw| raw.get() != "null") {
        None => None,
        Some(_) => Some(
            string_list(&fields, "types")
                .map_err(|_| bad("\"types\" must be an array of message types (strings)"))?,
        ),
    };
    let conditions = match fields.get("tags").filter(|raw| raw.get() != "null") {
        None => Vec::new(),
        Some(raw) => tag_conditions(raw)?,
    };
    Filter::new(types, conditions)
        .map(Some)
        .map_err(|e| ParseError::BadField(e.to_string()))
}

/// `"tags":{"<key>":{"eq":"<value>"} | {"in":["<value>",...]},...}`, bounded while
/// parsing (see [`crate::filter`] for the limits).
fn tag_conditions(raw: &RawValue) -> Result<Vec<TagCondition>, ParseError> {
    let shape =
        "\"filter\".\"tags\" must map tag keys to {\"eq\":\"value\"} or {\"in\":[\"value\",...]}";
    let members = capped::object(raw.get(), filter::MAX_TAG_CONDITIONS).map_err(|e| match e {
        CappedError::TooMany(_) => FilterError::TooManyTagConditions.into(),
        CappedError::Json(_) => ParseError::BadField(shape.into()),
    })?;
    if members.is_empty() {
        return Err(FilterError::NoTagConditions.into());
    }
    members
        .into_iter()
        .map(|(key, condition)| {
            let key = key.into_owned();
            let wrong = || ParseError::BadField(format!("{shape}; {key:?} does not"));
            let operator = match capped::object(condition.get(), 1).as_deref() {
                Ok([operator]) => operator.clone(),
                _ => return Err(wrong()),
            };
            let condition = match &*operator.0 {
                "eq" => TagCondition::eq(key.clone(), typed(operator.1).ok_or_else(wrong)?),
                "in" => {
                    let values: Vec<String> =
                        capped::parse(operator.1.get().as_bytes(), filter::MAX_IN_VALUES).map_err(
                            |e| match e {
                                CappedError::TooMany(_) => {
                                    FilterError::TooManyTagValues(key.clone()).into()
                                }
                                CappedError::Json(_) => wrong(),
                            },
                        )?;
                    TagCondition::one_of(key.clone(), values)
                }
                _ => return Err(wrong()),
            };
            condition.map_err(ParseError::from)
        })
        .collect()
}

impl From<FilterError> for ParseError {
    fn from(e: FilterError) -> Self {
        ParseError::BadField(e.to_string())
    }
}

fn since_map(object: &Fields<'_>) -> Result<BTreeMap<String, String>, ParseError> {
    let Some(raw) = object.get("since").filter(|raw| raw.get() != "null") else {
        return Ok(BTreeMap::new());
    };
    let Ok(map) = serde_json::from_str::<Fields<'_>>(raw.get()) else {
        return Err(ParseError::BadField(
            "\"since\" must be an object mapping channel names to offsets".into(),
        ));
    };
    map.into_iter()
        .map(|(channel, offset)| match typed(offset) {
            Some(offset) => Ok((channel, offset)),
            None => Err(ParseError::BadField(format!(
                "\"since\".{channel} must be an offset string"
            ))),
        })
        .collect()
}

/// Machine-readable error codes carried by `{"type":"error"}` frames and HTTP errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame could not be understood.
    BadRequest,
    /// The client may not use this channel.
    Forbidden,
    /// No such channel.
    UnknownChannel,
    /// The client sends faster than its limit allows.
    RateLimited,
    /// The connection holds as many subscriptions as allowed.
    TooManySubscriptions,
    /// The server could not do what was asked right now.
    Unavailable,
}

/// A server frame other than a channel message.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    /// Reply to `ping`.
    Pong {
        /// Server time, RFC 3339 UTC.
        timestamp: String,
    },
    /// Reply to `subscribe` listing the granted channels.
    SubscriptionSuccess {
        /// Channels now subscribed.
        channels: &'a [&'a str],
        /// Per channel: whether every message after the client's `since` offset was replayed.
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        recovered: BTreeMap<&'a str, bool>,
    },
    /// Reply to a first-frame `auth` that was accepted.
    AuthSuccess {
        /// The authenticated user (absent for an anonymous identity).
        #[serde(skip_serializing_if = "Option::is_none")]
        user_id: Option<&'a str>,
    },
    /// A refused first-frame `auth` (or a connection refused after it): an `error` frame
    /// whose code is the same string the HTTP refusal would carry (`token_expired`, ...).
    #[serde(rename = "error")]
    AuthRefused {
        /// Machine-readable reason.
        code: &'a str,
        /// Human-readable explanation.
        message: &'a str,
    },
    /// Reply to `unsubscribe`.
    UnsubscriptionSuccess {
        /// Channels no longer subscribed.
        channels: &'a [&'a str],
    },
    /// Something the client sent was refused.
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// The channel concerned, if any (on refusals: when exactly one is refused).
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<&'a str>,
        /// On refusals: every channel refused for this code.
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        channels: &'a [&'a str],
        /// Human-readable explanation.
        message: &'a str,
    },
}

impl ServerMessage<'_> {
    /// Serializes the frame.
    pub fn to_text(&self) -> Utf8Bytes {
        // Serializing these plain structs cannot fail.
        serde_json::to_string(self)
            .expect("server messages always serialize")
            .into()
    }

    /// A `pong` stamped with the current time.
    pub fn pong_now() -> Utf8Bytes {
        ServerMessage::Pong {
            timestamp: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        }
        .to_text()
    }

    /// An `error` frame.
    pub fn error(code: ErrorCode, channel: Option<&str>, message: &str) -> Utf8Bytes {
        ServerMessage::Error {
            code,
            channel,
            channels: &[],
            message,
        }
        .to_text()
    }

    /// One `error` frame refusing `channels` for the same reason: it lists them all
    /// in `channels`, and keeps the legacy `channel` field when there is just one.
    pub fn refusal(code: ErrorCode, channels: &[&str], message: &str) -> Utf8Bytes {
        ServerMessage::Error {
            code,
            channel: match channels {
                [one] => Some(one),
                _ => None,
            },
            channels,
            message,
        }
        .to_text()
    }
}

/// The frame pushed to subscribers: `{"type","data","channel","id","offset","tags"}`
/// (`tags` only on tagged messages, so untagged frames are what they always were).
#[derive(Debug, Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: &'a RawValue,
    channel: &'a str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<Offset>,
    #[serde(skip_serializing_if = "Tags::is_empty")]
    tags: &'a Tags,
}

/// Serializes a channel message once; the bytes are then shared by every recipient.
pub fn envelope(message: &Message) -> Utf8Bytes {
    let text = serde_json::to_string(&Envelope {
        kind: &message.kind,
        data: &message.data,
        channel: &message.channel,
        id: &message.id,
        offset: message.offset,
        tags: &message.tags,
    })
    .expect("envelopes always serialize");
    Utf8Bytes::from(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn parses_the_legacy_client_messages() {
        assert_eq!(
            ClientMessage::parse(r#"{"type":"ping"}"#),
            Ok(ClientMessage::Ping)
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"subscribe","channels":["notifications","alerts"]}"#),
            Ok(ClientMessage::Subscribe {
                channels: vec!["notifications".into(), "alerts".into()],
                since: BTreeMap::new(),
                filter: None,
            })
        );
    }

    #[test]
    fn parses_recovery_and_acks() {
        let msg = ClientMessage::parse(
            r#"{"type":"subscribe","channels":["orders"],"since":{"orders":"17-0"}}"#,
        )
        .unwrap();
        let ClientMessage::Subscribe { since, .. } = msg else {
            panic!("expected subscribe, got {msg:?}")
        };
        assert_eq!(since.get("orders").map(String::as_str), Some("17-0"));
        assert_eq!(
            ClientMessage::parse(r#"{"type":"ack","channel":"orders","offset":"17-0"}"#),
            Ok(ClientMessage::Ack {
                channel: "orders".into(),
                offset: "17-0".into()
            })
        );
    }

    #[test]
    fn parses_auth_frames_and_refuses_empty_or_missing_tokens() {
        assert_eq!(
            ClientMessage::parse(r#"{"type":"auth","token":"a.b\\c\"d"}"#),
            Ok(ClientMessage::Auth {
                token: "a.b\\c\"d".into()
            })
        );
        for bad in [
            r#"{"type":"auth"}"#,
            r#"{"type":"auth","token":""}"#,
            r#"{"type":"auth","token":7}"#,
            r#"{"type":"auth","token":null}"#,
            r#"{"type":"auth","token":["x"]}"#,
        ] {
            assert!(
                matches!(ClientMessage::parse(bad), Err(ParseError::BadField(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn rejects_malformed_frames_with_a_reason() {
        assert!(matches!(
            ClientMessage::parse("{nope"),
            Err(ParseError::NotJson(_))
        ));
        assert_eq!(ClientMessage::parse("[1]"), Err(ParseError::NotObject));
        assert_eq!(
            ClientMessage::parse(r#"{"kind":"ping"}"#),
            Err(ParseError::MissingType)
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"dance"}"#),
            Err(ParseError::UnknownType("dance".into()))
        );
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"subscribe","channels":"alerts"}"#),
            Err(ParseError::BadField(_))
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"subscribe","channels":[1]}"#),
            Err(ParseError::BadField(_))
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"subscribe","channels":[],"since":[]}"#),
            Err(ParseError::BadField(_))
        ));
    }

    /// Found by the `client_frame` fuzz target: frames went through
    /// `serde_json::Value`, which (with the `raw_value` feature) reads an object whose
    /// first key is serde_json's private raw-value token as the JSON inside its string.
    #[test]
    fn serde_jsons_raw_value_token_is_an_ordinary_key() {
        let token = "$serde_json::private::RawValue";
        let frame = format!(r#"{{"type":"subscribe","channels":[],"since":{{"{token}":"5-1"}}}}"#);
        assert_eq!(
            ClientMessage::parse(&frame),
            Ok(ClientMessage::Subscribe {
                channels: vec![],
                since: BTreeMap::from([(token.into(), "5-1".into())]),
                filter: None,
            })
        );
        let smuggled = format!(r#"{{"type":"subscribe","channels":{{"{token}":"[\"a\"]"}}}}"#);
        assert!(matches!(
            ClientMessage::parse(&smuggled),
            Err(ParseError::BadField(_))
        ));
        let whole = format!(r#"{{"{token}":"{{\"type\":\"ping\"}}"}}"#);
        assert_eq!(ClientMessage::parse(&whole), Err(ParseError::MissingType));
        // Duplicate keys: the last one counts, as before.
        assert_eq!(
            ClientMessage::parse(r#"{"type":"ack","type":"ping"}"#),
            Ok(ClientMessage::Ping)
        );
    }

    /// A message as the envelope sees it.
    pub(super) fn message(
        kind: &str,
        data: &str,
        channel: &str,
        id: &str,
        offset: Option<Offset>,
        tags: Tags,
    ) -> Message {
        Message {
            id: id.into(),
            channel: channel.into(),
            kind: kind.into(),
            data: RawValue::from_string(data.into()).unwrap().into(),
            target: crate::message::Target::All,
            offset,
            accepted_at_micros: 0,
            trace: None,
            tags,
        }
    }

    #[test]
    fn envelope_keeps_the_legacy_shape_and_adds_fields() {
        let data = r#"{"id":7,"title":"hi"}"#;
        let m = message(
            "notification",
            data,
            "notifications",
            "m1",
            None,
            Tags::default(),
        );
        let frame = envelope(&m);
        assert_eq!(
            frame.as_str(),
            r#"{"type":"notification","data":{"id":7,"title":"hi"},"channel":"notifications","id":"m1"}"#
        );
        let tags = Tags::from_pairs(vec![
            ("sku".into(), "A-1".into()),
            ("region".into(), "eu".into()),
        ]);
        let m = message(
            "stock",
            data,
            "stock",
            "m2",
            Some(Offset { ms: 3, seq: 1 }),
            tags,
        );
        assert_eq!(
            envelope(&m).as_str(),
            r#"{"type":"stock","data":{"id":7,"title":"hi"},"channel":"stock","id":"m2","offset":"3-1","tags":{"region":"eu","sku":"A-1"}}"#
        );
    }

    fn subscribe_filter(filter: Value) -> Result<Option<Filter>, ParseError> {
        let frame =
            serde_json::json!({"type": "subscribe", "channels": ["stock"], "filter": filter});
        match ClientMessage::parse(&frame.to_string())? {
            ClientMessage::Subscribe { filter, .. } => Ok(filter),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tag_filters_parse_with_or_without_types() {
        let eq = |k: &str, v: &str| TagCondition::eq(k.into(), v.into()).unwrap();
        let parsed = subscribe_filter(serde_json::json!({
            "types": ["stock"],
            "tags": {"region": {"eq": "eu"}, "sku": {"in": ["B-2", "A-1"]}},
        }));
        let expected = Filter::new(
            Some(vec!["stock".into()]),
            vec![
                eq("region", "eu"),
                TagCondition::one_of("sku".into(), vec!["A-1".into(), "B-2".into()]).unwrap(),
            ],
        )
        .unwrap();
        assert_eq!(parsed, Ok(Some(expected)));
        let tags_only =
            subscribe_filter(serde_json::json!({"tags": {"who": {"eq": "CORP\\alice"}}}));
        let expected = Filter::new(None, vec![eq("who", "CORP\\alice")]).unwrap();
        assert_eq!(tags_only, Ok(Some(expected.clone())));
        let null_types = subscribe_filter(
            serde_json::json!({"types": null, "tags": {"who": {"eq": "CORP\\alice"}}}),
        );
        assert_eq!(null_types, Ok(Some(expected)));
    }

    #[test]
    fn malformed_tag_filters_are_refused_with_a_reason() {
        let many: serde_json::Map<String, Value> = (0..=filter::MAX_TAG_CONDITIONS)
            .map(|i| (format!("k{i}"), serde_json::json!({"eq": "v"})))
            .collect();
        let long_in: Vec<String> = (0..=filter::MAX_IN_VALUES).map(|i| i.to_string()).collect();
        for (bad, says) in [
            (serde_json::json!({}), "must hold"),
            (serde_json::json!({"types": null}), "must hold"),
            (serde_json::json!({"tags": {}}), "at least one condition"),
            (serde_json::json!({"tags": []}), "must map tag keys"),
            (
                serde_json::json!({"tags": {"region": "eu"}}),
                "must map tag keys",
            ),
            (
                serde_json::json!({"tags": {"region": {}}}),
                "must map tag keys",
            ),
            (
                serde_json::json!({"tags": {"region": {"eq": "eu", "in": ["us"]}}}),
                "must map tag keys",
            ),
            (
                serde_json::json!({"tags": {"region": {"ne": "eu"}}}),
                "must map tag keys",
            ),
            (
                serde_json::json!({"tags": {"region": {"eq": 5}}}),
                "must map tag keys",
            ),
            (
                serde_json::json!({"tags": {"region": {"in": "eu"}}}),
                "must map tag keys",
            ),
            (
                serde_json::json!({"tags": {"region": {"in": [1]}}}),
                "must map tag keys",
            ),
            (
                serde_json::json!({"tags": {"region": {"in": []}}}),
                "at least one value",
            ),
            (
                serde_json::json!({"tags": {"region": {"in": long_in}}}),
                "more than",
            ),
            (serde_json::json!({"tags": many}), "more than"),
            (
                serde_json::json!({"tags": {"CORP\\alice": {"eq": "x"}}}),
                "bytes of",
            ),
            (
                serde_json::json!({"tags": {"a": {"eq": "x".repeat(300)}}}),
                "longer than",
            ),
            (
                serde_json::json!({"types": ["a"], "tag": {}}),
                "unknown key",
            ),
        ] {
            let error = subscribe_filter(bad.clone()).unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
        let repeated = r#"{"type":"subscribe","channels":["s"],"filter":{"tags":{"a":{"eq":"1"},"a":{"eq":"2"}}}}"#;
        let error = ClientMessage::parse(repeated).unwrap_err().to_string();
        assert!(error.contains("two conditions"), "{error}");
    }

    #[test]
    fn server_frames_serialize_as_documented() {
        let text = ServerMessage::SubscriptionSuccess {
            channels: &["alerts"],
            recovered: BTreeMap::new(),
        }
        .to_text();
        assert_eq!(
            text.as_str(),
            r#"{"type":"subscription_success","channels":["alerts"]}"#
        );
        let err = ServerMessage::error(ErrorCode::UnknownChannel, Some("x"), "no such channel");
        assert_eq!(
            err.as_str(),
            r#"{"type":"error","code":"unknown_channel","channel":"x","message":"no such channel"}"#
        );
        let one = ServerMessage::refusal(ErrorCode::Forbidden, &["ops"], "no");
        assert_eq!(
            one.as_str(),
            r#"{"type":"error","code":"forbidden","channel":"ops","channels":["ops"],"message":"no"}"#
        );
        let many = ServerMessage::refusal(ErrorCode::UnknownChannel, &["a", "b\"'"], "none");
        let many: Value = serde_json::from_str(many.as_str()).unwrap();
        assert!(many.get("channel").is_none());
        assert_eq!(many["channels"], serde_json::json!(["a", "b\"'"]));
        let pong: Value = serde_json::from_str(ServerMessage::pong_now().as_str()).unwrap();
        assert!(pong["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}

#[cfg(test)]
mod properties {
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;
    use crate::arbitrary::text;

    proptest! {
        #[test]
        fn client_frames_decode_to_the_strings_sent(
            channels in vec(text(), 0..4),
            since in btree_map(text(), text(), 0..4),
            channel in text(),
            offset in text(),
        ) {
            let subscribe = json!({"type": "subscribe", "channels": channels, "since": since});
            prop_assert_eq!(
                ClientMessage::parse(&subscribe.to_string()),
                Ok(ClientMessage::Subscribe { channels: channels.clone(), since, filter: None })
            );
            let unsubscribe = json!({"type": "unsubscribe", "channels": channels});
            prop_assert_eq!(
                ClientMessage::parse(&unsubscribe.to_string()),
                Ok(ClientMessage::Unsubscribe { channels })
            );
            let ack = json!({"type": "ack", "channel": channel, "offset": offset});
            prop_assert_eq!(
                ClientMessage::parse(&ack.to_string()),
                Ok(ClientMessage::Ack { channel: channel.clone(), offset })
            );
            let auth = json!({"type": "auth", "token": channel});
            let expected = if channel.is_empty() {
                Err(ParseError::BadField("\"token\" must not be empty".into()))
            } else {
                Ok(ClientMessage::Auth { token: channel })
            };
            prop_assert_eq!(ClientMessage::parse(&auth.to_string()), expected);
        }

        #[test]
        fn server_frames_are_json_carrying_the_same_strings(
            channels in vec(text(), 0..4),
            recovered in btree_map(text(), any::<bool>(), 0..4),
            channel in proptest::option::of(text()),
            message in text(),
        ) {
            let refs: Vec<&str> = channels.iter().map(String::as_str).collect();
            let frame = ServerMessage::SubscriptionSuccess {
                channels: &refs,
                recovered: recovered.iter().map(|(c, r)| (c.as_str(), *r)).collect(),
            }
            .to_text();
            let v: Value = serde_json::from_str(frame.as_str()).unwrap();
            prop_assert_eq!(&v["type"], "subscription_success");
            prop_assert_eq!(&v["channels"], &json!(channels));
            if !recovered.is_empty() {
                prop_assert_eq!(&v["recovered"], &json!(recovered));
            }
            let frame = ServerMessage::UnsubscriptionSuccess { channels: &refs }.to_text();
            let v: Value = serde_json::from_str(frame.as_str()).unwrap();
            prop_assert_eq!(&v["channels"], &json!(channels));
            let frame = ServerMessage::AuthSuccess { user_id: channel.as_deref() }.to_text();
            let v: Value = serde_json::from_str(frame.as_str()).unwrap();
            prop_assert_eq!(&v["type"], "auth_success");
            prop_assert_eq!(v.get("user_id").and_then(Value::as_str), channel.as_deref());
            let frame = ServerMessage::AuthRefused { code: "token_expired", message: &message }.to_text();
            let v: Value = serde_json::from_str(frame.as_str()).unwrap();
            prop_assert_eq!(&v["type"], "error");
            prop_assert_eq!(&v["message"], &json!(message));
            let frame = ServerMessage::error(ErrorCode::Forbidden, channel.as_deref(), &message);
            let v: Value = serde_json::from_str(frame.as_str()).unwrap();
            prop_assert_eq!(&v["code"], "forbidden");
            prop_assert_eq!(v.get("channel").and_then(Value::as_str), channel.as_deref());
            prop_assert_eq!(&v["message"], &json!(message));
        }

        #[test]
        fn envelopes_are_json_carrying_the_same_strings(
            kind in text(), channel in text(), id in text(),
            offset in proptest::option::of(any::<(u64, u64)>()), inner in text(),
            tags in btree_map(text(), text(), 0..4),
        ) {
            let data = json!({"title": inner});
            let offset = offset.map(|(ms, seq)| Offset { ms, seq });
            let pairs = tags.iter().map(|(k, v)| (k.as_str().into(), v.as_str().into())).collect();
            let m = super::tests::message(
                &kind, &data.to_string(), &channel, &id, offset, Tags::from_pairs(pairs),
            );
            let frame = envelope(&m);
            let v: Value = serde_json::from_str(frame.as_str()).unwrap();
            prop_assert_eq!(&v["type"], &json!(kind));
            prop_assert_eq!(&v["data"], &data);
            prop_assert_eq!(&v["channel"], &json!(channel));
            prop_assert_eq!(&v["id"], &json!(id));
            let text = offset.map(|o| o.to_string());
            prop_assert_eq!(v.get("offset").and_then(Value::as_str), text.as_deref());
            if tags.is_empty() {
                prop_assert!(v.get("tags").is_none());
            } else {
                prop_assert_eq!(&v["tags"], &json!(tags));
            }
        }
    }
}
