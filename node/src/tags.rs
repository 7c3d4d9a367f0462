//! Message tags: a few short key/value strings a publisher attaches to a message so
//! subscribers can filter on them (`"tags":{"region":"eu"}`).
//!
//! Tags ride with the message through Redis, history and the client frame. Most
//! messages carry none, so an untagged message pays one null pointer and no
//! allocation. The publish API checks tags against the documented limits
//! ([`parse`]); the wire decoder reads whatever another node wrote ([`Tags`]'s
//! `Deserialize`), so a newer node with wider limits never makes history unreadable.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::capped::{self, CappedError};

/// Most tags one message may carry.
pub const MAX_TAGS: usize = 16;
/// Longest tag key, in bytes (keys are at least one byte).
pub const MAX_KEY_BYTES: usize = 64;
/// Longest tag value, in bytes (values may be empty).
pub const MAX_VALUE_BYTES: usize = 256;
/// The characters a tag key may hold, as documented.
pub const KEY_CHARSET: &str = "A-Z a-z 0-9 _ . : -";

/// Why a message's tags were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagsError {
    /// Not a JSON object.
    #[error("\"tags\" must be an object mapping keys to strings, such as {{\"region\":\"eu\"}}")]
    NotObject,
    /// More than [`MAX_TAGS`].
    #[error("\"tags\" holds more than {MAX_TAGS} tags")]
    TooMany,
    /// A key outside the documented length or charset.
    #[error("tag key {0:?} must be 1 to {MAX_KEY_BYTES} bytes of {KEY_CHARSET}")]
    BadKey(String),
    /// A key given twice.
    #[error("tag key {0:?} is given twice")]
    Duplicate(String),
    /// A value that is not a string.
    #[error("tag {key:?} must have a string value, found {found}")]
    NotString {
        /// The key.
        key: String,
        /// The JSON found instead (shortened).
        found: String,
    },
    /// A value longer than [`MAX_VALUE_BYTES`].
    #[error("tag {key:?} has a value of {len} bytes; at most {MAX_VALUE_BYTES} are allowed")]
    ValueTooLong {
        /// The key.
        key: String,
        /// Its value's length in bytes.
        len: usize,
    },
}

/// A message's tags: sorted by key, keys unique. Empty (the common case) allocates
/// nothing; cloning a tagged message shares its tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags(Option<Arc<[Tag]>>);

/// One tag: key and value.
pub type Tag = (Box<str>, Box<str>);

impl Tags {
    /// Tags from pairs in any order; a repeated key keeps its first value. No limits
    /// are checked: this is for tags another node (or [`parse`]) already accepted.
    pub fn from_pairs(mut pairs: Vec<Tag>) -> Self {
        if pairs.is_empty() {
            return Self(None);
        }
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|later, earlier| later.0 == earlier.0);
        Self(Some(pairs.into()))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The value of `key`, if the message has that tag.
    pub fn get(&self, key: &str) -> Option<&str> {
        let pairs = self.0.as_deref()?;
        pairs
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*pairs[i].1)
    }

    /// The tags, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .flat_map(|pairs| pairs.iter().map(|(k, v)| (&**k, &**v)))
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.as_deref().map_or(0, <[_]>::len)
    }
}

/// Whether `key` is 1 to [`MAX_KEY_BYTES`] bytes of [`KEY_CHARSET`].
pub fn valid_key(key: &str) -> bool {
    (1..=MAX_KEY_BYTES).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Parses a publish's `tags` object against the documented limits. `{}` is no tags.
pub fn parse(json: &str) -> Result<Tags, TagsError> {
    let members = capped::object(json, MAX_TAGS).map_err(|e| match e {
        CappedError::TooMany(_) => TagsError::TooMany,
        CappedError::Json(_) => TagsError::NotObject,
    })?;
    let mut pairs: Vec<Tag> = Vec::with_capacity(members.len());
    for (key, raw) in members {
        if !valid_key(&key) {
            return Err(TagsError::BadKey(shorten(&key)));
        }
        if pairs.iter().any(|(seen, _)| **seen == *key) {
            return Err(TagsError::Duplicate(key.into_owned()));
        }
        let value: String = serde_json::from_str(raw.get()).map_err(|_| TagsError::NotString {
            key: key.to_string(),
            found: shorten(raw.get()),
        })?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(TagsError::ValueTooLong {
                key: key.into_owned(),
                len: value.len(),
            });
        }
        pairs.push((Box::from(key), value.into_boxed_str()));
    }
    Ok(Tags::from_pairs(pairs))
}

/// At most 64 characters of `text`, for error messages.
fn shorten(text: &str) -> String {
    let mut chars = text.chars();
    let short: String = chars.by_ref().take(64).collect();
    if chars.next().is_some() {
        format!("{short}…")
    } else {
        short
    }
}

impl Serialize for Tags {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (key, value) in self.iter() {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// Reads any object of strings (no limits: see the module doc).
impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Tags;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of string tags")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tags, A::Error> {
                let mut pairs = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, String>()? {
                    pairs.push((key.into_boxed_str(), value.into_boxed_str()));
                }
                Ok(Tags::from_pairs(pairs))
            }
        }
        deserializer
            .deserialize_map(Pairs)
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod contract_pattern {
    use proptest::prelude::*;

    use super::{valid_key, MAX_KEY_BYTES};

    const PATTERN: &str = herald_contract::channels::TAG_KEY_PATTERN;

    #[test]
    fn the_contract_pattern_states_the_node_rule() {
        assert_eq!(PATTERN, format!("^[A-Za-z0-9_.:-]{{1,{MAX_KEY_BYTES}}}$"));
        for bad in [
            "",
            "CORP\\sku",
            "s ku",
            "🦀",
            "ｓｋｕ",
            &"k".repeat(MAX_KEY_BYTES + 1),
        ] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }

    proptest! {
        /// Every key the CRD's pattern admits, the node admits.
        #[test]
        fn every_key_the_pattern_admits_is_valid(
            key in PATTERN.trim_start_matches('^').trim_end_matches('$'),
        ) {
            prop_assert!(valid_key(&key), "{:?}", key);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::arbitrary::text;

    #[test]
    fn parses_sorts_and_reads_tags() {
        let tags =
            parse(r#"{"sku":"A-1","region":"eu","CORP.dept:5_x-y":"CORP\\alice \"🦀\"","e":""}"#)
                .unwrap();
        let read: Vec<_> = tags.iter().collect();
        assert_eq!(
            read,
            [
                ("CORP.dept:5_x-y", "CORP\\alice \"🦀\""),
                ("e", ""),
                ("region", "eu"),
                ("sku", "A-1")
            ]
        );
        assert_eq!(tags.get("region"), Some("eu"));
        assert_eq!(tags.get("regio"), None);
        assert!(parse("{}").unwrap().is_empty());
        assert_eq!(Tags::default().get("x"), None);
        assert_eq!(Tags::default().iter().count(), 0);
    }

    #[test]
    fn limits_and_shapes_are_refused_with_their_reason() {
        let key = "k".repeat(MAX_KEY_BYTES);
        let value = "é".repeat(MAX_VALUE_BYTES / 2);
        let at_limit = format!(r#"{{"{key}":"{value}"}}"#);
        assert_eq!(parse(&at_limit).unwrap().get(&key), Some(&*value));
        let many = |n: usize| {
            let members: Vec<String> = (0..n).map(|i| format!(r#""k{i}":"v""#)).collect();
            format!("{{{}}}", members.join(","))
        };
        assert_eq!(parse(&many(MAX_TAGS)).unwrap().len(), MAX_TAGS);
        assert_eq!(parse(&many(MAX_TAGS + 1)), Err(TagsError::TooMany));
        for bad_key in [
            String::new(),
            "k".repeat(MAX_KEY_BYTES + 1),
            "a b".into(),
            "CORP\\\\alice".into(),
            "quo\\\"te".into(),
            "🦀".into(),
            "rеgion".into(), // Cyrillic "е": a look-alike, not the ASCII key
            "$serde_json::private::RawValue".into(),
        ] {
            assert!(
                matches!(
                    parse(&format!(r#"{{"{bad_key}":"v"}}"#)),
                    Err(TagsError::BadKey(_))
                ),
                "{bad_key:?}"
            );
        }
        assert_eq!(
            parse(r#"{"a":"1","a":"2"}"#),
            Err(TagsError::Duplicate("a".into()))
        );
        assert_eq!(
            parse(&format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_VALUE_BYTES + 1))),
            Err(TagsError::ValueTooLong {
                key: "a".into(),
                len: MAX_VALUE_BYTES + 1
            })
        );
        for not_string in ["1", "null", "[\"eu\"]", "{\"eq\":\"eu\"}", "true"] {
            assert!(
                matches!(
                    parse(&format!(r#"{{"a":{not_string}}}"#)),
                    Err(TagsError::NotString { .. })
                ),
                "{not_string}"
            );
        }
        for not_object in ["[]", "\"eu\"", "1", "{", r#"{"a":"b"} x"#] {
            assert_eq!(parse(not_object), Err(TagsError::NotObject), "{not_object}");
        }
    }

    #[test]
    fn error_messages_stay_short_for_huge_keys() {
        let huge = "x".repeat(100_000) + " ";
        let message = parse(&format!(r#"{{"{huge}":"v"}}"#))
            .unwrap_err()
            .to_string();
        assert!(message.len() < 300, "{}", message.len());
    }

    fn key() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.:-]{1,8}"
    }

    proptest! {
        #[test]
        fn valid_tags_parse_to_what_was_sent(
            sent in proptest::collection::btree_map(key(), text(), 0..=MAX_TAGS),
        ) {
            let sent: std::collections::BTreeMap<String, String> = sent
                .into_iter()
                .filter(|(_, v)| v.len() <= MAX_VALUE_BYTES)
                .collect();
            let tags = parse(&serde_json::to_string(&sent).unwrap()).unwrap();
            let read: Vec<(&str, &str)> = tags.iter().collect();
            let expected: Vec<(&str, &str)> =
                sent.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            prop_assert_eq!(read, expected);
            for (k, v) in &sent {
                prop_assert_eq!(tags.get(k), Some(v.as_str()));
            }
            // Serialized back, they are the same object.
            let again: std::collections::BTreeMap<String, String> =
                serde_json::from_str(&serde_json::to_string(&tags).unwrap()).unwrap();
            prop_assert_eq!(again, sent);
        }

        #[test]
        fn any_key_text_is_valid_iff_it_keeps_to_the_charset(key in text()) {
            let expected = !key.is_empty()
                && key.len() <= MAX_KEY_BYTES
                && key.chars().all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
            prop_assert_eq!(valid_key(&key), expected);
            let json = serde_json::json!({ &key: "v" }).to_string();
            prop_assert_eq!(parse(&json).is_ok(), expected);
        }
    }
}
