//! How messages travel through Redis: one compact JSON object per message.
//!
//! History entries and pub/sub payloads carry the same encoding; pub/sub payloads are
//! prefixed with the message's offset (`<offset> <json>`, `-` without history) because
//! the offset is only known once the stream entry exists.
//!
//! A traced publish adds its W3C trace context (`p`: traceparent, `s`: tracestate),
//! so the nodes that deliver the message continue the publisher's trace. Both keys
//! are optional: entries written before they existed decode without a trace, and
//! decoders ignore keys they do not know.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Message, Target};
use crate::telemetry::propagation::TraceContext;
use crate::ChannelName;

#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    /// Message id.
    i: &'a str,
    /// Channel.
    c: &'a str,
    /// Client-visible type.
    t: &'a str,
    /// Client-visible data.
    #[serde(borrow)]
    d: &'a RawValue,
    /// Target user, when addressed to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    u: Option<&'a str>,
    /// Acceptance time, Unix microseconds.
    a: u64,
    /// Node that accepted the publish.
    o: &'a str,
    /// W3C `traceparent` of the publish, when it was traced.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    p: Option<&'a str>,
    /// W3C `tracestate` of the publish, when it has one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    s: Option<&'a str>,
}

/// Encodes a message; `origin` is the publishing node, `trace` the context the
/// receiving nodes' deliveries continue.
pub fn encode(message: &Message, origin: &str, trace: Option<&TraceContext>) -> String {
    serde_json::to_string(&Wire {
        i: &message.id,
        c: &message.channel,
        t: &message.kind,
        d: &message.data,
        u: match &message.target {
            Target::All => None,
            Target::User(user) => Some(user),
        },
        a: message.accepted_at_micros,
        o: origin,
        p: trace.map(|t| &*t.traceparent),
        s: trace.and_then(|t| t.tracestate.as_deref()),
    })
    .expect("messages always serialize")
}

/// Decodes a message and the node it came from.
pub fn decode(text: &str, offset: Option<&str>) -> Result<(Message, String), serde_json::Error> {
    let wire: Wire<'_> = serde_json::from_str(text)?;
    let message = Message {
        id: Arc::from(wire.i),
        channel: ChannelName::from(wire.c),
        kind: Arc::from(wire.t),
        data: Arc::from(wire.d.to_owned()),
        target: wire.u.map_or(Target::All, |u| Target::User(u.into())),
        offset: offset.map(Arc::from),
        accepted_at_micros: wire.a,
        trace: wire.p.map(|traceparent| TraceContext {
            traceparent: traceparent.into(),
            tracestate: wire.s.map(Into::into),
        }),
    };
    Ok((message, wire.o.to_owned()))
}

/// Splits a pub/sub payload into its offset (if any) and message JSON.
pub fn split_payload(payload: &str) -> Option<(Option<&str>, &str)> {
    let (offset, json) = payload.split_once(' ')?;
    Some(((offset != "-").then_some(offset), json))
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
        }
    }

    #[test]
    fn round_trips_with_offset_and_target() {
        let text = encode(&message(), "node-a", None);
        let payload = format!("5-1 {text}");
        let (offset, json) = split_payload(&payload).unwrap();
        let (decoded, origin) = decode(json, offset).unwrap();
        assert_eq!(origin, "node-a");
        assert_eq!(decoded.offset.as_deref(), Some("5-1"));
        assert_eq!(decoded.target, Target::User("42".into()));
        assert_eq!(decoded.data.get(), r#"{"id":1}"#);
        assert_eq!(decoded.trace, None);
        let plain = format!("- {text}");
        assert_eq!(split_payload(&plain).unwrap().0, None);
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
        let (decoded, origin) = decode(old, Some("1-0")).unwrap();
        assert_eq!(origin, "node-old");
        assert_eq!(&*decoded.id, "m0");
        assert_eq!(decoded.trace, None);
    }

    #[test]
    fn keys_added_by_later_versions_are_ignored() {
        let newer = r#"{"i":"m2","c":"orders","t":"x","d":{},"a":5,"o":"n","p":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","z":1}"#;
        let (decoded, _) = decode(newer, None).unwrap();
        assert!(decoded.trace.is_some());
    }
}
