//! JSON arrays and objects parsed with an item limit that is enforced while parsing.
//!
//! A 1 MiB body can hold half a million tiny items; refusing at item `max + 1` costs
//! nothing, while building them all first costs seconds and hundreds of MiB.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Why a capped array was refused.
#[derive(Debug, thiserror::Error)]
pub enum CappedError {
    /// More than the allowed number of items.
    #[error("more than {0} items")]
    TooMany(usize),
    /// Not a JSON array of the expected items.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

/// Parses `json` as an array of at most `max` items, stopping at item `max + 1`.
pub fn parse<'de, T: Deserialize<'de>>(json: &'de [u8], max: usize) -> Result<Vec<T>, CappedError> {
    let seed = Seed {
        max,
        exceeded: Cell::new(false),
        items: PhantomData,
    };
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let parsed = (&seed)
        .deserialize(&mut deserializer)
        .and_then(|items| deserializer.end().map(|()| items));
    match parsed {
        Ok(items) => Ok(items),
        Err(_) if seed.exceeded.get() => Err(CappedError::TooMany(max)),
        Err(e) => Err(CappedError::Json(e)),
    }
}

/// One member of a JSON object: its key (borrowed unless JSON escaped it) and raw value.
pub type Member<'de> = (Cow<'de, str>, &'de RawValue);

/// Parses `json` as an object of at most `max` members, in the order written and
/// with repeated keys kept (callers decide whether a repeat is an error), stopping at
/// member `max + 1`. Keys are read as the plain strings they are: no key (not even
/// serde_json's private raw-value marker) changes how the values are read.
pub fn object(json: &str, max: usize) -> Result<Vec<Member<'_>>, CappedError> {
    let members = Members {
        max,
        exceeded: Cell::new(false),
    };
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let parsed = (&members)
        .deserialize(&mut deserializer)
        .and_then(|items| deserializer.end().map(|()| items));
    match parsed {
        Ok(items) => Ok(items),
        Err(_) if members.exceeded.get() => Err(CappedError::TooMany(max)),
        Err(e) => Err(CappedError::Json(e)),
    }
}

struct Members {
    max: usize,
    exceeded: Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for &Members {
    type Value = Vec<Member<'de>>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for &Members {
    type Value = Vec<Member<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an object of at most {} members", self.max)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).min(self.max).min(64));
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if members.len() == self.max {
                self.exceeded.set(true);
                return Err(de::Error::custom(format!("more than {} members", self.max)));
            }
            members.push((key, map.next_value()?));
        }
        Ok(members)
    }
}

struct Seed<T> {
    max: usize,
    exceeded: Cell<bool>,
    items: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for &Seed<T> {
    type Value = Vec<T>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Vec<T>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for &Seed<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an array of at most {} items", self.max)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max).min(64));
        while let Some(item) = seq.next_element()? {
            if items.len() == self.max {
                self.exceeded.set(true);
                return Err(de::Error::custom(format!("more than {} items", self.max)));
            }
            items.push(item);
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    #[test]
    fn parses_up_to_the_limit_and_refuses_one_more() {
        let items: Vec<u32> = parse(b" [1, 2, 3] ", 3).unwrap();
        assert_eq!(items, [1, 2, 3]);
        assert!(matches!(
            parse::<u32>(b"[1,2,3,4]", 3),
            Err(CappedError::TooMany(3))
        ));
        let raw: Vec<&RawValue> = parse(br#"[{"a":[1]}, "x"]"#, 2).unwrap();
        assert_eq!(raw[0].get(), r#"{"a":[1]}"#);
    }

    #[test]
    fn stops_at_the_limit_even_before_broken_json() {
        // Item 4 is past the limit: the broken tail is never reached.
        assert!(matches!(
            parse::<u32>(b"[1,2,3,4,oops", 3),
            Err(CappedError::TooMany(3))
        ));
    }

    #[test]
    fn other_shapes_are_json_errors() {
        for bad in [&b"{}"[..], b"[1,", b"[1] 2", b"", b"[\"x\"]"] {
            assert!(
                matches!(parse::<u32>(bad, 3), Err(CappedError::Json(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse::<u32>(b"[]", 0).unwrap().is_empty());
        assert!(matches!(
            parse::<u32>(b"[1]", 0),
            Err(CappedError::TooMany(0))
        ));
    }

    #[test]
    fn objects_keep_order_and_repeats_up_to_the_limit() {
        let members = object(r#" {"b":1, "a\\\"":{"x":[2]}, "b":"3"} "#, 3).unwrap();
        let read: Vec<(&str, &str)> = members.iter().map(|(k, v)| (&**k, v.get())).collect();
        assert_eq!(
            read,
            [("b", "1"), ("a\\\"", r#"{"x":[2]}"#), ("b", r#""3""#)]
        );
        assert!(matches!(
            object(r#"{"a":1,"b":2,"c":3,"d":oops"#, 3),
            Err(CappedError::TooMany(3))
        ));
        let marker = object(r#"{"$serde_json::private::RawValue":"[1]"}"#, 1).unwrap();
        assert_eq!(marker[0].1.get(), r#""[1]""#);
        for bad in ["[]", "{", r#"{"a":1} x"#, "", "null", r#"{"a"}"#] {
            assert!(matches!(object(bad, 3), Err(CappedError::Json(_))), "{bad}");
        }
    }

    #[test]
    fn half_a_million_items_are_refused_quickly() {
        let mut body = b"[".to_vec();
        body.extend(std::iter::repeat_n(&b"{},"[..], 500_000).flatten());
        body.extend_from_slice(b"{}]");
        let started = std::time::Instant::now();
        assert!(matches!(
            parse::<&RawValue>(&body, 1000),
            Err(CappedError::TooMany(1000))
        ));
        assert!(started.elapsed() < std::time::Duration::from_millis(200));
    }
}
