//! How messages travel through Redis: one compact JSON object per message.
//!
//! History entries and pub/sub payloads carry the same encoding; pub/sub payloads are
//! prefixed with the message's offset (`<offset> <json>`, `-` without history) because
//! the offset is only known once the stream entry exists.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Message, Target};
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
}

/// Encodes a message; `origin` is the publishing node.
pub fn encode(message: &Message, origin: &str) -> String {
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

    #[test]
    fn round_trips_with_offset_and_target() {
        let message = Message {
            id: "m1".into(),
            channel: "orders".into(),
            kind: "order_update".into(),
            data: Arc::from(RawValue::from_string(r#"{"id":1}"#.into()).unwrap()),
            target: Target::User("42".into()),
            offset: None,
            accepted_at_micros: 7,
        };
        let text = encode(&message, "node-a");
        let payload = format!("5-1 {text}");
        let (offset, json) = split_payload(&payload).unwrap();
        let (decoded, origin) = decode(json, offset).unwrap();
        assert_eq!(origin, "node-a");
        assert_eq!(decoded.offset.as_deref(), Some("5-1"));
        assert_eq!(decoded.target, Target::User("42".into()));
        assert_eq!(decoded.data.get(), r#"{"id":1}"#);
        let plain = format!("- {text}");
        assert_eq!(split_payload(&plain).unwrap().0, None);
    }
}
