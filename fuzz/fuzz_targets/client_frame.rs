//! Client frames: what a session parses out of every WebSocket text frame, and the
//! offsets it then reads out of `since` and `ack`.
//!
//! Properties: parsing never panics; a parsed frame re-serialized parses to the same
//! message; any message built from arbitrary strings survives the trip through JSON;
//! an offset that parses prints back to itself.

#![no_main]

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use herald_node::fuzzing::{ClientMessage, Offset};
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use serde_json::value::RawValue;

/// A message a client could mean, for the structured round trip.
#[derive(Debug, Arbitrary)]
enum Meant {
    Ping,
    Subscribe(Vec<String>, BTreeMap<String, String>),
    Unsubscribe(Vec<String>),
    Ack(String, String),
}

impl From<Meant> for ClientMessage {
    fn from(meant: Meant) -> Self {
        match meant {
            Meant::Ping => ClientMessage::Ping,
            Meant::Subscribe(channels, since) => ClientMessage::Subscribe {
                channels,
                since,
                filter: None,
            },
            Meant::Unsubscribe(channels) => ClientMessage::Unsubscribe { channels },
            Meant::Ack(channel, offset) => ClientMessage::Ack { channel, offset },
        }
    }
}

/// The frame a client sends for `message`.
fn frame(message: &ClientMessage) -> String {
    match message {
        ClientMessage::Ping => json!({"type": "ping"}),
        ClientMessage::Subscribe {
            channels,
            since,
            filter,
        } => {
            let filter = filter
                .as_ref()
                .map(|f| json!({"types": f.types().collect::<Vec<_>>()}));
            json!({"type": "subscribe", "channels": channels, "since": since, "filter": filter})
        }
        ClientMessage::Auth { token } => json!({"type": "auth", "token": token}),
        ClientMessage::Unsubscribe { channels } => {
            json!({"type": "unsubscribe", "channels": channels})
        }
        ClientMessage::Ack { channel, offset } => {
            json!({"type": "ack", "channel": channel, "offset": offset})
        }
    }
    .to_string()
}

fn check_offset(text: &str) {
    if let Some(offset) = Offset::parse(text) {
        assert_eq!(Offset::parse(&offset.to_string()), Some(offset), "{text:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match ClientMessage::parse(text) {
            Ok(message) => {
                let again = ClientMessage::parse(&frame(&message));
                assert_eq!(again.as_ref(), Ok(&message), "{text:?}");
                match &message {
                    ClientMessage::Subscribe { since, .. } => {
                        since.values().for_each(|o| check_offset(o))
                    }
                    ClientMessage::Ack { offset, .. } => check_offset(offset),
                    _ => {}
                }
            }
            // The reason goes back to the client: it must render.
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        // Whatever is not JSON is refused (checked with `RawValue`: a `Value` would
        // misread serde_json's private raw-value key).
        if serde_json::from_str::<&RawValue>(text).is_err() {
            assert!(ClientMessage::parse(text).is_err());
        }
    }
    let mut u = Unstructured::new(data);
    if let Ok(meant) = Meant::arbitrary(&mut u) {
        let message = ClientMessage::from(meant);
        let text = frame(&message);
        assert_eq!(ClientMessage::parse(&text), Ok(message), "{text}");
    }
});
