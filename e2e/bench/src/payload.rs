//! The record the bench embeds in every published message.
//!
//! It is protocol-neutral: adapters wrap it in their own envelope on publish and hand it
//! back (parsed) when they recognise a delivery, so latency, ordering and addressing checks
//! are the same for every server.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Data carried by one published message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload<'a> {
    /// Measurement run the message belongs to; deliveries of other runs are "stale".
    pub run: u32,
    /// Sequence number within the receiving stream (global for broadcast, per user for personal).
    pub seq: u64,
    /// Unix time in microseconds when the publish request was built.
    pub ts: u64,
    /// The intended recipient, for personal messages.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Cow<'a, str>>,
}

impl Payload<'_> {
    /// Parses a payload out of a JSON `data` object, ignoring unknown fields.
    pub fn parse(json: &str) -> Option<Payload<'_>> {
        serde_json::from_str(json).ok()
    }
}

/// Current wall-clock time in Unix microseconds (the clock shared by publisher and clients).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_and_without_user() {
        let p = Payload {
            run: 3,
            seq: 7,
            ts: 1_700_000_000_000_000,
            user: Some("bench-4".into()),
        };
        let s = serde_json::to_string(&p).unwrap();
        assert_eq!(Payload::parse(&s), Some(p));

        let s = r#"{"run":1,"seq":2,"ts":3,"extra":true}"#;
        let p = Payload::parse(s).unwrap();
        assert_eq!((p.run, p.seq, p.ts, p.user.clone()), (1, 2, 3, None));
        assert!(!serde_json::to_string(&p).unwrap().contains("user"));
    }

    #[test]
    fn rejects_foreign_data() {
        assert!(Payload::parse(r#"{"message":"hello"}"#).is_none());
        assert!(Payload::parse(r#"{"run":1,"seq":-1,"ts":3}"#).is_none());
        assert!(Payload::parse("not json").is_none());
    }

    #[test]
    fn clock_is_sane() {
        // After 2020-01-01 and monotone enough for a quick check.
        let a = now_micros();
        assert!(a > 1_577_836_800_000_000);
        assert!(now_micros() >= a);
    }
}
