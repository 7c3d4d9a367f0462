//! How messages travel through Redis: one compact JSON object per message.
//!
//! History entries and pub/sub payloads carry the same encoding; pub/sub payloads are
//! prefixed with the message's offset (`<offset> <json>`, `-` without history) because
//! the offset is only known once the stream entry exists.
//!
//! A traced publish adds its W3C trace context (`p`: traceparent, `s`: tracestate),
//! so the nodes that deliver the message continue the publisher's trace. A tagged
//! message adds its tags (`g`: an object of strings). These keys are optional:
//! entries written before they existed decode without a trace or tags, and decoders
//! ignore keys they do not know.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::message::{Message, Offset, Target};
use crate::tags::Tags;
use crate::telemetry::propagation::TraceContext;
use crate::ChannelName;

/// Strings are `Cow`s: borrowed from the payload when it holds them verbatim, owned
/// when JSON escapes them (a user id such as `CORP\\alice` or `o"brien`), which serde
/// cannot borrow.
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    /// Message id.
    #[serde(borrow)]
    i: Cow<'a, str>,
    /// Channel.
    #[serde(borrow)]
    c: Cow<'a, str>,
    /// Client-visible type.
    #[serde(borrow)]
    t: Cow<'a, str>,
    /// Client-visible data: raw JSON text, always borrowable.
    #[serde(borrow)]
    d: &'a RawValue,
    /// Target user, when addressed to one.
    #[serde(borrow, skip_serializing_if = "Option::is_none", default)]
    u: Option<Cow<'a, str>>,
    /// Acceptance time, Unix microseconds.
    a: u64,
    /// Node that accepted the publish.
    #[serde(borrow)]
    o: Cow<'a, str>,
    /// W3C `traceparent` of the publish, when it was traced.
    #[serde(borrow, skip_serializing_if = "Option::is_none", default)]
    p: Option<Cow<'a, str>>,
    /// W3C `tracestate` of the publish, when it has one.
    #[serde(borrow, skip_serializing_if = "Option::is_none", default)]
    s: Option<Cow<'a, str>>,
    /// The publisher's tags, when it gave any (read without the publish limits).
    #[serde(skip_serializing_if = "no_tags", default)]
    g: Cow<'a, Tags>,
}

fn no_tags(tags: &Tags) -> bool {
    tags.is_empty()
}

/// Why a payload or history entry could not be read back into a message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A pub/sub payload without the `<offset> ` prefix.
    #[error("payload has no offset prefix")]
    NoOffset,
    /// A history entry without an id or message field.
    #[error("history entry has no {0}")]
    Incomplete(&'static str),
    /// The message JSON is not valid.
    #[error("invalid message JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl DecodeError {
    /// A short, fixed label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::NoOffset => "no_offset",
            DecodeError::Incomplete(_) => "incomplete_entry",
            DecodeError::Json(e) => match e.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "syntax",
                serde_json::error::Category::Data | serde_json::error::Category::Io => "data",
            },
        }
    }

    /// Every label [`DecodeError::reason`] returns (the metrics module owns the list).
    pub const REASONS: [&'static str; 4] = crate::metrics::DECODE_FAILURE_REASONS;
}

/// Encodes a message; `origin` is the publishing node, `trace` the context the
/// receiving nodes' deliveries continue.
pub fn encode(message: &Message, origin: &str, trace: Option<&TraceContext>) -> String {
    serde_json::to_string(&Wire {
        i: Cow::Borrowed(&message.id),
        c: Cow::Borrowed(&message.channel),
        t: Cow::Borrowed(&message.kind),
        d: &message.data,
        u: match &message.target {
            Target::All => None,
            Target::User(user) => Some(Cow::Borrowed(user)),
        },
        a: message.accepted_at_micros,
        o: Cow::Borrowed(origin),
        p: trace.map(|t| Cow::Borrowed(&*t.traceparent)),
        s: trace.and_then(|t| t.tracestate.as_deref().map(Cow::Borrowed)),
        g: Cow::Borrowed(&message.tags),
    })
    .expect("messages always serialize")
}

/// Decodes a message and the node it came from; `offset` is where it sits in history.
pub fn decode(text: &str, offset: Option<Offset>) -> Result<(Message, String), DecodeError> {
    let wire: Wire<'_> = serde_json::from_str(text)?;
    let message = Message {
        id: Arc::from(wire.i),
        channel: ChannelName::from(wire.c),
        kind: Arc::from(wire.t),
        data: Arc::from(wire.d.to_owned()),
        target: wire.u.map_or(Target::All, |u| Target::User(Arc::from(u))),
        offset,
        accepted_at_micros: wire.a,
        trace: wire.p.map(|traceparent| TraceContext {
            traceparent: traceparent.into(),
            tracestate: wire.s.map(Into::into),
        }),
        tags: wire.g.into_owned(),
    };
    Ok((message, wire.o.into_owned()))
}

/// Splits a pub/sub payload into its offset (if any) and message JSON. An offset
/// that does not parse (Redis never writes one) is treated like `-`.
pub fn split_payload(payload: &str) -> Result<(Option<Offset>, &str), DecodeError> {
    let (offset, json) = payload.split_once(' ').ok_or(DecodeError::NoOffset)?;
    Ok((Offset::parse(offset), json))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            id: "m1".into(),
            channel: "orders".into(),
            kind: "order_update".into(),
            data: Arc::from(RawValue::from_string(r#"{"id":1}"#.into()).unwrap()),
            target: Target::User("42".into()),
            offset: None,
            accepted_at_micros: 7,
            trace: None,
            tags: Default::default(),
        }
    }

    #[test]
    fn round_trips_with_offset_and_target() {
        let text = encode(&message(), "node-a", None);
        let payload = format!("5-1 {text}");
        let (offset, json) = split_payload(&payload).unwrap();
        let (decoded, origin) = decode(json, offset).unwrap();
        assert_eq!(origin, "node-a");
        assert_eq!(decoded.offset, Some(Offset { ms: 5, seq: 1 }));
        assert_eq!(decoded.target, Target::User("42".into()));
        assert_eq!(decoded.data.get(), r#"{"id":1}"#);
        assert_eq!(decoded.trace, None);
        let plain = format!("- {text}");
        assert_eq!(split_payload(&plain).unwrap().0, None);
        assert!(matches!(split_payload(&text), Err(DecodeError::NoOffset)));
    }

    /// Ids and types JSON must escape cannot be borrowed from the payload; they used
    /// to fail decoding on every node but the publisher's, so the message was lost.
    #[test]
    fn strings_that_json_escapes_survive_the_trip_between_nodes() {
        let hostile = [
            r"CORP\alice",
            r#"o"brien"#,
            "🦀 ünïcødé \u{2028}",
            "tab\tnewline\ncr\rnul\u{0}bell\u{7}del\u{7f}",
            r#"\"\\"\"#,
            "",
        ];
        for text in hostile {
            let trace = TraceContext {
                traceparent: format!("00-{text}").into(),
                tracestate: Some(format!("v={text}").into()),
            };
            let sent = Message {
                id: text.into(),
                kind: format!("note{text}").into(),
                target: Target::User(text.into()),
                tags: Tags::from_pairs(vec![
                    (text.into(), text.into()),
                    (format!("k{text}").into(), format!("{text}v").into()),
                ]),
                ..message()
            };
            let payload = format!("9-3 {}", encode(&sent, text, Some(&trace)));
            let (offset, json) = split_payload(&payload).unwrap();
            let (got, origin) = decode(json, offset)
                .unwrap_or_else(|e| panic!("{text:?} did not decode: {e}: {payload}"));
            assert_eq!(origin, text);
            assert_eq!(&*got.id, text);
            assert_eq!(&*got.kind, format!("note{text}"));
            assert_eq!(got.target, Target::User(text.into()));
            assert_eq!(got.trace, Some(trace));
            assert_eq!(got.offset, Some(Offset { ms: 9, seq: 3 }));
            assert_eq!(got.tags, sent.tags);
            assert_eq!(
                got.tags.get(&format!("k{text}")),
                Some(&*format!("{text}v"))
            );
        }
    }

    #[test]
    fn escaped_entries_written_by_earlier_nodes_decode() {
        // Earlier nodes wrote escapes exactly like this (serde_json's encoder).
        let old = r#"{"i":"m0","c":"notifications","t":"a\"b","d":{"k":"\\"},"u":"CORP\\alice","a":5,"o":"n"}"#;
        let (decoded, _) = decode(old, Offset::parse("1-0")).unwrap();
        assert_eq!(decoded.target, Target::User(r"CORP\alice".into()));
        assert_eq!(&*decoded.kind, r#"a"b"#);
        assert_eq!(decoded.data.get(), r#"{"k":"\\"}"#);
    }

    #[test]
    fn decode_failures_name_their_reason() {
        assert_eq!(decode("{nope", None).unwrap_err().reason(), "syntax");
        assert_eq!(decode(r#"{"i":1}"#, None).unwrap_err().reason(), "data");
        for reason in [
            DecodeError::NoOffset.reason(),
            DecodeError::Incomplete("id").reason(),
        ] {
            assert!(DecodeError::REASONS.contains(&reason));
        }
    }

    #[test]
    fn an_untraced_message_carries_no_trace_keys() {
        let text = encode(&message(), "node-a", None);
        assert!(
            !text.contains(r#""p":"#) && !text.contains(r#""s":"#),
            "{text}"
        );
    }

    #[test]
    fn the_trace_context_travels_with_the_message() {
        let trace = TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: Some("vendor=opaque".into()),
        };
        let text = encode(&message(), "node-a", Some(&trace));
        let (decoded, _) = decode(&text, None).unwrap();
        assert_eq!(decoded.trace, Some(trace));

        let without_state = TraceContext {
            tracestate: None,
            ..decoded.trace.unwrap()
        };
        let text = encode(&message(), "node-a", Some(&without_state));
        assert!(!text.contains(r#""s":"#), "{text}");
        assert_eq!(decode(&text, None).unwrap().0.trace, Some(without_state));
    }

    #[test]
    fn history_written_before_trace_context_still_decodes() {
        // Exactly what earlier nodes wrote into streams and pub/sub payloads.
        let old = r#"{"i":"m0","c":"orders","t":"order_update","d":{"id":0},"u":"42","a":5,"o":"node-old"}"#;
        let (decoded, origin) = decode(old, Offset::parse("1-0")).unwrap();
        assert_eq!(origin, "node-old");
        assert_eq!(&*decoded.id, "m0");
        assert_eq!(decoded.trace, None);
        assert!(decoded.tags.is_empty());
    }

    #[test]
    fn tags_travel_only_when_the_message_has_them() {
        let text = encode(&message(), "node-a", None);
        assert!(!text.contains(r#""g":"#), "{text}");
        let tagged = Message {
            tags: Tags::from_pairs(vec![
                ("sku".into(), "A-1".into()),
                ("region".into(), "eu".into()),
            ]),
            ..message()
        };
        let text = encode(&tagged, "node-a", None);
        assert!(
            text.ends_with(r#","g":{"region":"eu","sku":"A-1"}}"#),
            "{text}"
        );
        assert_eq!(decode(&text, None).unwrap().0.tags, tagged.tags);
    }

    #[test]
    fn tags_past_the_publish_limits_still_decode() {
        // A newer node may allow more or longer tags: its history must stay readable.
        let many: Vec<String> = (0..40)
            .map(|i| format!(r#""k{i} x":"{}""#, "v".repeat(300)))
            .collect();
        let newer = format!(
            r#"{{"i":"m","c":"c","t":"t","d":{{}},"a":1,"o":"n","g":{{{}}}}}"#,
            many.join(",")
        );
        let (decoded, _) = decode(&newer, None).unwrap();
        assert_eq!(decoded.tags.len(), 40);
        assert_eq!(decoded.tags.get("k7 x"), Some(&*"v".repeat(300)));
        let not_strings = r#"{"i":"m","c":"c","t":"t","d":{},"a":1,"o":"n","g":{"k":1}}"#;
        assert_eq!(decode(not_strings, None).unwrap_err().reason(), "data");
    }

    #[test]
    fn keys_added_by_later_versions_are_ignored() {
        let newer = r#"{"i":"m2","c":"orders","t":"x","d":{},"a":5,"o":"n","p":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","z":1}"#;
        let (decoded, _) = decode(newer, None).unwrap();
        assert!(decoded.trace.is_some());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::arbitrary::text;

    proptest! {
        #[test]
        fn every_message_decodes_to_what_was_encoded(
            id in text(), channel in text(), kind in text(), user in proptest::option::of(text()),
            origin in text(), data in text(), traceparent in proptest::option::of(text()),
            tracestate in proptest::option::of(text()), accepted in any::<u64>(),
            offset in proptest::option::of((any::<u64>(), any::<u64>())),
            tags in proptest::collection::vec((text(), text()), 0..5),
        ) {
            let tags = Tags::from_pairs(
                tags.into_iter().map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str())).collect(),
            );
            let data = serde_json::json!({ "s": data, "n": [1, null] }).to_string();
            let trace = traceparent.map(|traceparent| TraceContext {
                traceparent: traceparent.into(),
                tracestate: tracestate.map(Into::into),
            });
            let sent = Message {
                id: id.as_str().into(),
                channel: channel.as_str().into(),
                kind: kind.as_str().into(),
                data: Arc::from(RawValue::from_string(data.clone()).unwrap()),
                target: user.clone().map_or(Target::All, |u| Target::User(u.into())),
                offset: None,
                accepted_at_micros: accepted,
                trace: trace.clone(),
                tags: tags.clone(),
            };
            let offset = offset.map(|(ms, seq)| Offset { ms, seq });
            let payload = format!(
                "{} {}",
                offset.map_or("-".to_owned(), |o| o.to_string()),
                encode(&sent, &origin, trace.as_ref())
            );
            let (got_offset, json) = split_payload(&payload).unwrap();
            prop_assert_eq!(got_offset, offset);
            let (got, got_origin) = decode(json, got_offset).unwrap();
            prop_assert_eq!(got_origin, origin);
            prop_assert_eq!(&*got.id, id.as_str());
            prop_assert_eq!(&*got.channel, channel.as_str());
            prop_assert_eq!(&*got.kind, kind.as_str());
            prop_assert_eq!(got.data.get(), data.as_str());
            prop_assert_eq!(got.target, sent.target);
            prop_assert_eq!(got.offset, offset);
            prop_assert_eq!(got.accepted_at_micros, accepted);
            prop_assert_eq!(got.trace, trace);
            prop_assert_eq!(got.tags, tags);
        }
    }
}
