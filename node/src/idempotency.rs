//! Idempotent publishes.
//!
//! A backend whose publish timed out, or was answered 503 or 429, cannot tell whether
//! it landed, so it retries, and without help a retry that follows a publish that did
//! land delivers twice. A publish with an idempotency key first claims the key in the
//! broker (cluster-wide on Redis: one `SET NX GET`), then records its outcome there; a
//! repeat within the window answers that outcome and publishes nothing. The broker
//! only stores the records; what they mean is decided here.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::broker::{Broker, BrokerError};
use crate::tags::Tags;
use crate::UserId;

/// Longest accepted key, in bytes.
pub const MAX_KEY_BYTES: usize = 128;
/// How long an unsettled claim holds its key: a node that dies in the middle of a
/// publish frees the key after this, so a retry then publishes.
const CLAIM_TTL: Duration = Duration::from_secs(30);
/// How long a repeat waits for a publish with the same key that is still in flight.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(5);
const IN_FLIGHT_POLL: Duration = Duration::from_millis(50);

/// Why a key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is the empty string.
    #[error("the idempotency key must not be empty")]
    Empty,
    /// The key is longer than [`MAX_KEY_BYTES`].
    #[error("the idempotency key is {0} bytes long; at most {MAX_KEY_BYTES} are allowed")]
    TooLong(usize),
    /// The `Idempotency-Key` header is not visible ASCII.
    #[error("the Idempotency-Key header must be visible ASCII")]
    NotText,
}

/// Checks a key's length.
pub fn validate(key: &str) -> Result<(), KeyError> {
    match key.len() {
        0 => Err(KeyError::Empty),
        n if n > MAX_KEY_BYTES => Err(KeyError::TooLong(n)),
        _ => Ok(()),
    }
}

/// What the first publish with a key produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The message id.
    pub id: String,
    /// Its history offsets.
    pub offsets: Vec<String>,
    /// What coalescing made of it, when anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesced: Option<crate::coalesce::Coalesced>,
}

/// A key's record in the broker: which request it stands for and, once published,
/// what that produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outcome: Option<Outcome>,
}

/// The request a key stands for: a digest of channel, type, recipients (in any
/// order), the bytes of `data` and the tags (in any order). Each part is
/// length-prefixed, so no two requests share a digest by moving bytes between parts;
/// untagged requests hash exactly as before tags existed, so keys claimed by older
/// nodes still match.
pub fn fingerprint(
    channel: &str,
    kind: &str,
    users: Option<&[UserId]>,
    data: &str,
    tags: &Tags,
) -> String {
    fn part(hash: &mut Sha256, bytes: &[u8]) {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    }
    let mut hash = Sha256::new();
    part(&mut hash, channel.as_bytes());
    part(&mut hash, kind.as_bytes());
    match users {
        None => hash.update([0]),
        Some(users) => {
            let mut sorted: Vec<&str> = users.iter().map(|u| &**u).collect();
            sorted.sort_unstable();
            sorted.dedup();
            hash.update([1]);
            hash.update((sorted.len() as u64).to_le_bytes());
            for user in sorted {
                part(&mut hash, user.as_bytes());
            }
        }
    }
    part(&mut hash, data.as_bytes());
    if !tags.is_empty() {
        hash.update((tags.len() as u64).to_le_bytes());
        for (key, value) in tags.iter() {
            part(&mut hash, key.as_bytes());
            part(&mut hash, value.as_bytes());
        }
    }
    hash.finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The result of claiming a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key was free: this publish goes ahead and must settle or release it.
    Fresh,
    /// The same request was published before: its outcome.
    Done(Outcome),
}

/// Why a key could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The key was used for a different request within the window.
    #[error("this idempotency key was used for a different request on this channel within the last {0:?}")]
    Reused(Duration),
    /// The same request is being published right now and did not finish in time.
    #[error("a publish with this idempotency key is still in progress; retry")]
    InFlight,
    /// The broker cannot be reached.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Claims `key` on `channel` for the request `fingerprint`. A repeat of a request
/// that is still being published waits for it (up to a few seconds).
pub async fn claim(
    broker: &dyn Broker,
    channel: &str,
    key: &str,
    fingerprint: &str,
    window: Duration,
) -> Result<Claim, ClaimError> {
    let pending = encode(&Record {
        fingerprint: fingerprint.to_owned(),
        outcome: None,
    });
    let deadline = Instant::now() + IN_FLIGHT_WAIT;
    loop {
        let Some(existing) = broker
            .claim_idempotency_key(channel, key, &pending, CLAIM_TTL.min(window))
            .await?
        else {
            return Ok(Claim::Fresh);
        };
        let record: Record = match serde_json::from_str(&existing) {
            Ok(record) => record,
            Err(e) => {
                // Written by a node that does not share this format: never publish on
                // top of it, never guess what it meant.
                tracing::warn!(error = %e, "unreadable idempotency record");
                return Err(ClaimError::Reused(window));
            }
        };
        if record.fingerprint != fingerprint {
            return Err(ClaimError::Reused(window));
        }
        if let Some(outcome) = record.outcome {
            return Ok(Claim::Done(outcome));
        }
        if Instant::now() >= deadline {
            return Err(ClaimError::InFlight);
        }
        tokio::time::sleep(IN_FLIGHT_POLL).await;
    }
}

/// Records what the publish that claimed `key` produced, for the rest of the window.
pub async fn settle(
    broker: &dyn Broker,
    channel: &str,
    key: &str,
    fingerprint: &str,
    outcome: Outcome,
    window: Duration,
) -> Result<(), BrokerError> {
    let record = encode(&Record {
        fingerprint: fingerprint.to_owned(),
        outcome: Some(outcome),
    });
    broker
        .settle_idempotency_key(channel, key, &record, window)
        .await
}

fn encode(record: &Record) -> String {
    serde_json::to_string(record).expect("idempotency records always serialize")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::arbitrary::text;

    /// The fingerprint of an untagged request.
    fn fingerprint(channel: &str, kind: &str, users: Option<&[UserId]>, data: &str) -> String {
        super::fingerprint(channel, kind, users, data, &Tags::default())
    }

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        Tags::from_pairs(
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        )
    }

    #[test]
    fn untagged_fingerprints_are_what_nodes_before_tags_computed() {
        // Pinned: keys claimed by older nodes within the window must still match.
        assert_eq!(
            fingerprint(
                "orders",
                "order_update",
                Some(&users(&["CORP\\b"])),
                r#"{"x":1}"#
            ),
            "4df7d56a28e9dc815b2ca92d0c8db433a863f6b7c557734db906e3dd7b49ae99"
        );
    }

    #[test]
    fn tags_are_part_of_the_fingerprint_in_any_order() {
        let tagged = |t: &Tags| super::fingerprint("stock", "level", None, "{}", t);
        let base = tagged(&tags(&[("region", "eu"), ("sku", "A-1")]));
        assert_eq!(base, tagged(&tags(&[("sku", "A-1"), ("region", "eu")])));
        for other in [
            tagged(&Tags::default()),
            tagged(&tags(&[("region", "eu")])),
            tagged(&tags(&[("region", "eu"), ("sku", "A-2")])),
            tagged(&tags(&[("region", "eusku"), ("", "A-1")])),
            tagged(&tags(&[("region", "eu"), ("sku", "A-1"), ("x", "")])),
        ] {
            assert_ne!(base, other);
        }
        // Bytes cannot move from `data` into the tags and keep the digest.
        assert_ne!(
            super::fingerprint("stock", "level", None, "{}", &Tags::default()),
            super::fingerprint("stock", "level", None, "{", &tags(&[("x", "}")])),
        );
    }

    const WINDOW: Duration = Duration::from_secs(300);

    fn users(ids: &[&str]) -> Vec<UserId> {
        ids.iter().map(|id| UserId::from(*id)).collect()
    }

    #[test]
    fn keys_must_be_one_to_128_bytes() {
        assert_eq!(validate(""), Err(KeyError::Empty));
        assert_eq!(validate("k"), Ok(()));
        assert_eq!(validate(&"é".repeat(64)), Ok(()));
        assert_eq!(validate(&"é".repeat(65)), Err(KeyError::TooLong(130)));
    }

    #[test]
    fn fingerprints_ignore_recipient_order_and_nothing_else() {
        let base = fingerprint(
            "orders",
            "order_update",
            Some(&users(&["a", "CORP\\b"])),
            r#"{"x":1}"#,
        );
        assert_eq!(
            base,
            fingerprint(
                "orders",
                "order_update",
                Some(&users(&["CORP\\b", "a", "a"])),
                r#"{"x":1}"#
            )
        );
        for other in [
            fingerprint("orders", "order_update", Some(&users(&["a"])), r#"{"x":1}"#),
            fingerprint("orders", "order_update", None, r#"{"x":1}"#),
            fingerprint(
                "orders",
                "order_updat",
                Some(&users(&["a", "CORP\\b"])),
                r#"{"x":1}"#,
            ),
            fingerprint(
                "order",
                "sorder_update",
                Some(&users(&["a", "CORP\\b"])),
                r#"{"x":1}"#,
            ),
            fingerprint(
                "orders",
                "order_update",
                Some(&users(&["a", "CORP\\b"])),
                r#"{"x":2}"#,
            ),
        ] {
            assert_ne!(base, other);
        }
    }

    #[tokio::test]
    async fn a_repeat_answers_the_first_outcome_and_a_different_request_is_refused() {
        let broker = crate::testing::memory_broker();
        let key = "order-42 \"CORP\\alice\" 🦀";
        let fp = fingerprint("orders", "order_update", None, "{}");
        assert_eq!(
            claim(&broker, "orders", key, &fp, WINDOW).await.unwrap(),
            Claim::Fresh
        );
        let outcome = Outcome {
            id: "0193".into(),
            offsets: vec!["1-0".into()],
            coalesced: None,
        };
        settle(&broker, "orders", key, &fp, outcome.clone(), WINDOW)
            .await
            .unwrap();
        assert_eq!(
            claim(&broker, "orders", key, &fp, WINDOW).await.unwrap(),
            Claim::Done(outcome)
        );
        let other = fingerprint("orders", "order_update", None, r#"{"x":1}"#);
        assert!(matches!(
            claim(&broker, "orders", key, &other, WINDOW).await,
            Err(ClaimError::Reused(_))
        ));
        // Keys are per channel.
        assert_eq!(
            claim(&broker, "alerts", key, &other, WINDOW).await.unwrap(),
            Claim::Fresh
        );
    }

    #[tokio::test]
    async fn a_released_claim_lets_a_retry_publish() {
        let broker = crate::testing::memory_broker();
        let fp = fingerprint("orders", "t", None, "{}");
        assert_eq!(
            claim(&broker, "orders", "k", &fp, WINDOW).await.unwrap(),
            Claim::Fresh
        );
        broker.release_idempotency_key("orders", "k").await.unwrap();
        assert_eq!(
            claim(&broker, "orders", "k", &fp, WINDOW).await.unwrap(),
            Claim::Fresh
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeat_waits_for_a_publish_in_flight_then_gives_up() {
        let broker = Arc::new(crate::testing::memory_broker());
        let fp = fingerprint("orders", "t", None, "{}");
        assert_eq!(
            claim(&*broker, "orders", "k", &fp, WINDOW).await.unwrap(),
            Claim::Fresh
        );
        let outcome = Outcome {
            id: "id".into(),
            offsets: vec![],
            coalesced: Some(crate::coalesce::Coalesced::Pending),
        };
        let settler = {
            let (broker, fp, outcome) = (broker.clone(), fp.clone(), outcome.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                settle(&*broker, "orders", "k", &fp, outcome, WINDOW)
                    .await
                    .unwrap();
            })
        };
        assert_eq!(
            claim(&*broker, "orders", "k", &fp, WINDOW).await.unwrap(),
            Claim::Done(outcome)
        );
        settler.await.unwrap();
        assert_eq!(
            claim(&*broker, "other", "k", &fp, WINDOW).await.unwrap(),
            Claim::Fresh
        );
        assert!(matches!(
            claim(&*broker, "other", "k", &fp, WINDOW).await,
            Err(ClaimError::InFlight)
        ));
    }

    proptest! {
        #[test]
        fn records_round_trip(
            fp in text(),
            id in text(),
            offsets in proptest::collection::vec(text(), 0..3),
            coalesced in proptest::option::of(proptest::sample::select(vec![
                crate::coalesce::Coalesced::Dropped,
                crate::coalesce::Coalesced::PartlyDropped,
                crate::coalesce::Coalesced::Pending,
            ])),
        ) {
            for record in [
                Record { fingerprint: fp.clone(), outcome: None },
                Record { fingerprint: fp.clone(), outcome: Some(Outcome { id: id.clone(), offsets: offsets.clone(), coalesced }) },
            ] {
                let decoded: Record = serde_json::from_str(&encode(&record)).unwrap();
                prop_assert_eq!(decoded, record);
            }
        }
    }
}
