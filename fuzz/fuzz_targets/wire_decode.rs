//! The wire decoder: pub/sub payloads (`<offset> <json>`) and history entries read
//! back from Redis, which another node (possibly an older or newer version) wrote.
//!
//! Properties: decoding never panics; a decoded message re-encoded decodes to the
//! same message and origin; any message built from arbitrary fields survives
//! encode → payload → split → decode unchanged.

#![no_main]

use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use herald_node::fuzzing::{
    decode, encode, split_payload, Message, Offset, Tags, Target, TraceContext,
};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

#[derive(Debug, Arbitrary)]
struct Fields {
    id: String,
    channel: String,
    kind: String,
    user: Option<String>,
    origin: String,
    text: String,
    number: i64,
    accepted: u64,
    trace: Option<(String, Option<String>)>,
    offset: Option<(u64, u64)>,
    tags: Vec<(String, String)>,
}

/// The message's comparable parts.
fn parts(m: &Message) -> impl PartialEq + std::fmt::Debug + '_ {
    (
        (&*m.id, &*m.channel, &*m.kind, m.data.get()),
        (&m.target, m.offset, m.accepted_at_micros, &m.trace, &m.tags),
    )
}

fn redecodes(message: &Message, origin: &str) {
    let text = encode(message, origin, message.trace.as_ref());
    let (again, again_origin) = decode(&text, message.offset)
        .unwrap_or_else(|e| panic!("re-encoded message does not decode: {e}: {text}"));
    assert_eq!(again_origin, origin);
    assert_eq!(parts(&again), parts(message), "{text}");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // A pub/sub payload.
        if let Ok((offset, json)) = split_payload(text) {
            if text.starts_with("- ") {
                assert!(offset.is_none());
            }
            if let Ok((message, origin)) = decode(json, offset) {
                assert!(serde_json::from_str::<serde_json::Value>(message.data.get()).is_ok());
                redecodes(&message, &origin);
            }
        }
        // A history entry: the whole text is the message field.
        if let Ok((message, origin)) = decode(text, Some(Offset { ms: 1, seq: 0 })) {
            redecodes(&message, &origin);
        }
    }
    let mut u = Unstructured::new(data);
    let Ok(f) = Fields::arbitrary(&mut u) else {
        return;
    };
    let data = serde_json::json!({ "s": f.text, "n": [f.number, null, true] }).to_string();
    let trace = f.trace.map(|(traceparent, tracestate)| TraceContext {
        traceparent: traceparent.into(),
        tracestate: tracestate.map(Into::into),
    });
    let sent = Message {
        id: f.id.as_str().into(),
        channel: f.channel.as_str().into(),
        kind: f.kind.as_str().into(),
        data: Arc::from(RawValue::from_string(data).unwrap()),
        target: f.user.map_or(Target::All, |u| Target::User(u.into())),
        offset: f.offset.map(|(ms, seq)| Offset { ms, seq }),
        accepted_at_micros: f.accepted,
        trace,
        tags: Tags::from_pairs(
            f.tags
                .into_iter()
                .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
                .collect(),
        ),
    };
    let payload = format!(
        "{} {}",
        sent.offset
            .map_or_else(|| "-".to_owned(), |o| o.to_string()),
        encode(&sent, &f.origin, sent.trace.as_ref())
    );
    let (offset, json) = split_payload(&payload).unwrap();
    let (got, origin) =
        decode(json, offset).unwrap_or_else(|e| panic!("does not decode: {e}: {payload}"));
    assert_eq!(origin, f.origin);
    assert_eq!(parts(&got), parts(&sent), "{payload}");
});
