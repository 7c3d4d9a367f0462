//! Subscription filters: which of a channel's messages a connection wants.
//!
//! A dashboard that shows one message type, or one region's stock, should not
//! receive, and parse, everything else its channel carries. A `subscribe` may name the
//! types it wants and conditions on the publisher's tags; the hub drops the rest at
//! fan-out, before a frame is queued, and history replays apply the same filter, so a
//! resume through a filter has no gap and no extra message.

use std::sync::Arc;

use crate::message::Message;
use crate::tags;

/// Most types one filter may name.
pub const MAX_TYPES: usize = 16;
/// Longest type name a filter may hold, in bytes.
pub const MAX_TYPE_BYTES: usize = 128;
/// Most tag conditions one filter may hold.
pub const MAX_TAG_CONDITIONS: usize = 8;
/// Most values one `in` condition may list.
pub const MAX_IN_VALUES: usize = 32;

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Neither types nor tag conditions: say so by sending no filter.
    #[error("\"filter\" must hold \"types\", \"tags\" or both")]
    Empty,
    /// `types` is empty: it would admit nothing.
    #[error("\"filter\".\"types\" must name at least one message type")]
    NoTypes,
    /// More than [`MAX_TYPES`] types.
    #[error("\"filter\".\"types\" names {0} types; at most {MAX_TYPES} are allowed")]
    TooManyTypes(usize),
    /// A type longer than [`MAX_TYPE_BYTES`].
    #[error(
        "a type in \"filter\".\"types\" is {0} bytes long; at most {MAX_TYPE_BYTES} are allowed"
    )]
    TypeTooLong(usize),
    /// `tags` holds no condition.
    #[error("\"filter\".\"tags\" must hold at least one condition")]
    NoTagConditions,
    /// More than [`MAX_TAG_CONDITIONS`] conditions.
    #[error("\"filter\".\"tags\" holds more than {MAX_TAG_CONDITIONS} conditions")]
    TooManyTagConditions,
    /// A condition on a key no message could carry.
    #[error(
        "\"filter\".\"tags\" key {0:?} must be 1 to {max} bytes of {charset}",
        max = tags::MAX_KEY_BYTES,
        charset = tags::KEY_CHARSET
    )]
    BadTagKey(String),
    /// Two conditions on one key.
    #[error("\"filter\".\"tags\" has two conditions on {0:?}; use one \"in\"")]
    DuplicateTagKey(String),
    /// An `in` list with no value: it would admit nothing.
    #[error("\"filter\".\"tags\".{0:?} \"in\" must list at least one value")]
    NoTagValues(String),
    /// An `in` list longer than [`MAX_IN_VALUES`].
    #[error("\"filter\".\"tags\".{0:?} \"in\" lists more than {MAX_IN_VALUES} values")]
    TooManyTagValues(String),
    /// A value no tag could hold.
    #[error(
        "a value in \"filter\".\"tags\".{0:?} is longer than {max} bytes",
        max = tags::MAX_VALUE_BYTES
    )]
    TagValueTooLong(String),
}

/// What a subscription admits: messages of one of its types (when it names types)
/// that meet every one of its tag conditions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filter {
    /// Sorted, without duplicates; `None`: any type.
    types: Option<Box<[Arc<str>]>>,
    /// Sorted by key, keys unique; all must hold.
    tags: Box<[TagCondition]>,
}

/// A condition on one tag: the message has it, with one of these values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TagCondition {
    key: Box<str>,
    /// Sorted, without duplicates, never empty.
    values: Box<[Box<str>]>,
}

impl TagCondition {
    /// `key` must equal `value` (`{"eq": value}`).
    pub fn eq(key: String, value: String) -> Result<Self, FilterError> {
        Self::one_of(key, vec![value])
    }

    /// `key` must be one of `values` (`{"in": values}`; duplicates allowed).
    pub fn one_of(key: String, values: Vec<String>) -> Result<Self, FilterError> {
        if !tags::valid_key(&key) {
            return Err(FilterError::BadTagKey(key.chars().take(64).collect()));
        }
        if values.is_empty() {
            return Err(FilterError::NoTagValues(key));
        }
        if values.len() > MAX_IN_VALUES {
            return Err(FilterError::TooManyTagValues(key));
        }
        if values.iter().any(|v| v.len() > tags::MAX_VALUE_BYTES) {
            return Err(FilterError::TagValueTooLong(key));
        }
        let mut values: Vec<Box<str>> = values.into_iter().map(String::into_boxed_str).collect();
        values.sort_unstable();
        values.dedup();
        Ok(Self {
            key: key.into_boxed_str(),
            values: values.into_boxed_slice(),
        })
    }

    /// The tag key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The admitted values, sorted.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.values.iter().map(|v| &**v)
    }

    fn holds(&self, message: &Message) -> bool {
        message
            .tags
            .get(&self.key)
            .is_some_and(|value| self.values.binary_search_by(|v| (**v).cmp(value)).is_ok())
    }
}

impl Filter {
    /// A filter admitting exactly `types` (duplicates allowed, order irrelevant).
    pub fn by_types(types: Vec<String>) -> Result<Self, FilterError> {
        Self::new(Some(types), Vec::new())
    }

    /// A filter on `types` (`None`: any) and `conditions` (all must hold); it must
    /// have at least one of them.
    pub fn new(
        types: Option<Vec<String>>,
        conditions: Vec<TagCondition>,
    ) -> Result<Self, FilterError> {
        if types.is_none() && conditions.is_empty() {
            return Err(FilterError::Empty);
        }
        let types = types.map(Self::check_types).transpose()?;
        if conditions.len() > MAX_TAG_CONDITIONS {
            return Err(FilterError::TooManyTagConditions);
        }
        let mut conditions = conditions;
        conditions.sort_by(|a, b| a.key.cmp(&b.key));
        if let Some(pair) = conditions.windows(2).find(|w| w[0].key == w[1].key) {
            return Err(FilterError::DuplicateTagKey(pair[0].key.to_string()));
        }
        Ok(Self {
            types,
            tags: conditions.into_boxed_slice(),
        })
    }

    fn check_types(types: Vec<String>) -> Result<Box<[Arc<str>]>, FilterError> {
        if types.is_empty() {
            return Err(FilterError::NoTypes);
        }
        if types.len() > MAX_TYPES {
            return Err(FilterError::TooManyTypes(types.len()));
        }
        if let Some(long) = types.iter().find(|t| t.len() > MAX_TYPE_BYTES) {
            return Err(FilterError::TypeTooLong(long.len()));
        }
        let mut types: Vec<Arc<str>> = types.into_iter().map(Arc::from).collect();
        types.sort_unstable();
        types.dedup();
        Ok(types.into_boxed_slice())
    }

    /// Whether `message` passes.
    pub fn admits(&self, message: &Message) -> bool {
        self.types.as_deref().is_none_or(|types| {
            types
                .binary_search_by(|t| (**t).cmp(&*message.kind))
                .is_ok()
        }) && self.tags.iter().all(|c| c.holds(message))
    }

    /// The admitted types, sorted (none when any type is admitted).
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.types
            .iter()
            .flat_map(|types| types.iter().map(|t| &**t))
    }

    /// The tag conditions, sorted by key.
    pub fn tag_conditions(&self) -> &[TagCondition] {
        &self.tags
    }
}

/// Whether `filter` (none: everything) admits `message`.
pub fn admits(filter: Option<&Filter>, message: &Message) -> bool {
    filter.is_none_or(|f| f.admits(message))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::value::RawValue;

    use super::*;
    use crate::arbitrary::text;
    use crate::message::Target;
    use crate::tags::Tags;

    fn eq(key: &str, value: &str) -> TagCondition {
        TagCondition::eq(key.into(), value.into()).unwrap()
    }

    fn one_of(key: &str, values: &[&str]) -> TagCondition {
        TagCondition::one_of(key.into(), values.iter().map(|v| (*v).into()).collect()).unwrap()
    }

    fn message(kind: &str) -> Message {
        tagged(kind, &[])
    }

    fn tagged(kind: &str, tags: &[(&str, &str)]) -> Message {
        Message {
            id: "id".into(),
            channel: "orders".into(),
            kind: kind.into(),
            data: Arc::from(RawValue::from_string("{}".into()).unwrap()),
            target: Target::All,
            offset: None,
            accepted_at_micros: 0,
            trace: None,
            tags: Tags::from_pairs(
                tags.iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
            ),
        }
    }

    #[test]
    fn admits_exactly_the_named_types() {
        let filter = Filter::by_types(vec![
            "order_update".into(),
            "CORP\\\"type\" 🦀".into(),
            "order_update".into(),
        ])
        .unwrap();
        assert!(filter.admits(&message("order_update")));
        assert!(filter.admits(&message("CORP\\\"type\" 🦀")));
        for other in ["order_updat", "order_update ", "Order_update", "alert", ""] {
            assert!(!filter.admits(&message(other)), "{other:?}");
        }
        assert!(admits(None, &message("anything")));
    }

    #[test]
    fn bounds_are_enforced() {
        assert_eq!(Filter::by_types(vec![]), Err(FilterError::NoTypes));
        let many: Vec<String> = (0..=MAX_TYPES).map(|i| format!("t{i}")).collect();
        assert_eq!(
            Filter::by_types(many),
            Err(FilterError::TooManyTypes(MAX_TYPES + 1))
        );
        assert_eq!(
            Filter::by_types(vec!["x".repeat(MAX_TYPE_BYTES + 1)]),
            Err(FilterError::TypeTooLong(MAX_TYPE_BYTES + 1))
        );
        assert!(Filter::by_types(vec!["x".repeat(MAX_TYPE_BYTES)]).is_ok());
    }

    #[test]
    fn tag_conditions_are_anded_and_need_the_tag() {
        let filter = Filter::new(
            None,
            vec![eq("region", "eu"), one_of("sku", &["B-2", "A-1", "A-1"])],
        )
        .unwrap();
        assert!(filter.admits(&tagged("stock", &[("region", "eu"), ("sku", "A-1")])));
        assert!(filter.admits(&tagged(
            "other",
            &[("sku", "B-2"), ("x", "y"), ("region", "eu")]
        )));
        for tags in [
            &[("region", "eu")][..],
            &[("sku", "A-1")],
            &[("region", "us"), ("sku", "A-1")],
            &[("region", "eu"), ("sku", "C-3")],
            &[("region", "EU"), ("sku", "A-1")],
            &[("region", "eu "), ("sku", "A-1")],
            &[],
        ] {
            assert!(!filter.admits(&tagged("stock", tags)), "{tags:?}");
        }
        let both = Filter::new(Some(vec!["stock".into()]), vec![eq("region", "eu")]).unwrap();
        assert!(both.admits(&tagged("stock", &[("region", "eu")])));
        assert!(!both.admits(&tagged("order", &[("region", "eu")])));
        assert!(!both.admits(&tagged("stock", &[("region", "us")])));
        let hostile = Filter::new(None, vec![eq("who", "CORP\\alice \"🦀\"")]).unwrap();
        assert!(hostile.admits(&tagged("t", &[("who", "CORP\\alice \"🦀\"")])));
        assert!(!hostile.admits(&tagged("t", &[("who", "CORP\\alice")])));
        assert_eq!(both.types().collect::<Vec<_>>(), ["stock"]);
        assert_eq!(
            filter.tag_conditions()[1].values().collect::<Vec<_>>(),
            ["A-1", "B-2"]
        );
    }

    #[test]
    fn tag_bounds_are_enforced() {
        assert_eq!(Filter::new(None, vec![]), Err(FilterError::Empty));
        assert_eq!(
            Filter::new(None, vec![eq("a", "1"), eq("a", "2")]),
            Err(FilterError::DuplicateTagKey("a".into()))
        );
        let conditions = |n: usize| (0..n).map(|i| eq(&format!("k{i}"), "v")).collect();
        assert!(Filter::new(None, conditions(MAX_TAG_CONDITIONS)).is_ok());
        assert_eq!(
            Filter::new(None, conditions(MAX_TAG_CONDITIONS + 1)),
            Err(FilterError::TooManyTagConditions)
        );
        for key in ["", "a b", "CORP\\alice", "🦀", "rеgion"] {
            assert!(
                matches!(
                    TagCondition::eq(key.into(), "v".into()),
                    Err(FilterError::BadTagKey(_))
                ),
                "{key:?}"
            );
        }
        assert_eq!(
            TagCondition::one_of("k".into(), vec![]),
            Err(FilterError::NoTagValues("k".into()))
        );
        let values = |n: usize| (0..n).map(|i| i.to_string()).collect();
        assert!(TagCondition::one_of("k".into(), values(MAX_IN_VALUES)).is_ok());
        assert_eq!(
            TagCondition::one_of("k".into(), values(MAX_IN_VALUES + 1)),
            Err(FilterError::TooManyTagValues("k".into()))
        );
        assert_eq!(
            TagCondition::eq("k".into(), "x".repeat(tags::MAX_VALUE_BYTES + 1)),
            Err(FilterError::TagValueTooLong("k".into()))
        );
        assert!(TagCondition::eq("k".into(), "x".repeat(tags::MAX_VALUE_BYTES)).is_ok());
    }

    /// A message and a filter drawn from a small alphabet, so they often match.
    fn small() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ab]{0,2}",
            text().prop_map(|t| t.chars().take(4).collect())
        ]
    }

    fn small_key() -> impl Strategy<Value = String> {
        "[ab:]{1,2}"
    }

    proptest! {
        /// The filter admits exactly what the specification, written naively, admits.
        #[test]
        fn admits_what_the_reference_model_admits(
            types in proptest::option::of(proptest::collection::vec(small(), 1..4)),
            conditions in proptest::collection::btree_map(
                small_key(), proptest::collection::vec(small(), 1..4), 0..3,
            ),
            kind in small(),
            tags in proptest::collection::btree_map(small_key(), small(), 0..4),
        ) {
            let built = Filter::new(
                types.clone(),
                conditions
                    .iter()
                    .map(|(k, v)| TagCondition::one_of(k.clone(), v.clone()).unwrap())
                    .collect(),
            );
            if types.is_none() && conditions.is_empty() {
                prop_assert_eq!(built, Err(FilterError::Empty));
                return Ok(());
            }
            let pairs: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let model = types.as_ref().is_none_or(|t| t.contains(&kind))
                && conditions
                    .iter()
                    .all(|(k, values)| tags.get(k).is_some_and(|v| values.contains(v)));
            prop_assert_eq!(built.unwrap().admits(&tagged(&kind, &pairs)), model);
        }

        #[test]
        fn admits_a_type_iff_it_was_named(
            named in proptest::collection::vec(text(), 1..MAX_TYPES),
            probe in text(),
        ) {
            let named: Vec<String> = named.into_iter().map(|t| t.chars().take(30).collect()).collect();
            let filter = Filter::by_types(named.clone()).unwrap();
            prop_assert_eq!(filter.admits(&message(&probe)), named.contains(&probe));
            for t in &named {
                prop_assert!(filter.admits(&message(t)));
            }
        }
    }
}
