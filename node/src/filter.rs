//! Subscription filters: which of a channel's messages a connection wants.
//!
//! A dashboard that shows one message type should not receive, and parse, every other
//! type its channel carries. A `subscribe` may name the types it wants; the hub drops
//! the others at fan-out, before a frame is queued, and history replays apply the same
//! filter, so a resume through a filter has no gap and no extra message.

use std::sync::Arc;

use crate::message::Message;

/// Most types one filter may name.
pub const MAX_TYPES: usize = 16;
/// Longest type name a filter may hold, in bytes.
pub const MAX_TYPE_BYTES: usize = 128;

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
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
}

/// The message types a subscription admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Sorted, without duplicates.
    types: Box<[Arc<str>]>,
}

impl Filter {
    /// A filter admitting exactly `types` (duplicates allowed, order irrelevant).
    pub fn by_types(types: Vec<String>) -> Result<Self, FilterError> {
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
        Ok(Self {
            types: types.into_boxed_slice(),
        })
    }

    /// Whether `message` passes.
    pub fn admits(&self, message: &Message) -> bool {
        self.types
            .binary_search_by(|t| (**t).cmp(&*message.kind))
            .is_ok()
    }

    /// The admitted types, sorted.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.types.iter().map(|t| &**t)
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

    fn message(kind: &str) -> Message {
        Message {
            id: "id".into(),
            channel: "orders".into(),
            kind: kind.into(),
            data: Arc::from(RawValue::from_string("{}".into()).unwrap()),
            target: Target::All,
            offset: None,
            accepted_at_micros: 0,
            trace: None,
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

    proptest! {
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
