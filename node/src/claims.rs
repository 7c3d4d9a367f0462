//! The token claims a connection keeps for the life of the socket.
//!
//! Parameterized channels bind parameters to claims (`dept:{dept}` with the token's
//! `dept`), checked on every `subscribe` and expanded at connect for
//! `auto_subscribe`. The token itself is dropped after verification, so a connection
//! keeps only the claims some binding names (none without patterns: no cost), and of
//! those what a binding could ever match: string and integer values (alone or in an
//! array, at most [`MAX_VALUES`]) that are valid parameter values. Anything else
//! could never name a concrete channel, so dropping it changes no decision.

use std::collections::BTreeSet;

use herald_contract::channel_pattern::is_valid_value;
use serde_json::{Map, Value};

/// Most values kept per claim (array claims).
pub const MAX_VALUES: usize = 32;

/// Bindable claim values: name → values, in token order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims(Box<[Claim]>);

/// One claim's name and its bindable values.
type Claim = (Box<str>, Box<[Box<str>]>);

impl Claims {
    /// Keeps the `wanted` claims of a verified token.
    pub fn from_token(claims: &Map<String, Value>, wanted: &BTreeSet<String>) -> Self {
        let kept = wanted
            .iter()
            .filter_map(|name| Some((name, claims.get(name)?)))
            .filter_map(|(name, value)| {
                let values: Box<[Box<str>]> = match value {
                    Value::Array(items) => {
                        items.iter().filter_map(bindable).take(MAX_VALUES).collect()
                    }
                    _ => bindable(value).into_iter().collect(),
                };
                (!values.is_empty()).then(|| (Box::from(name.as_str()), values))
            })
            .collect();
        Self(kept)
    }

    /// The values of `claim`; empty when the token had none usable.
    pub fn values(&self, claim: &str) -> &[Box<str>] {
        self.0
            .iter()
            .find(|(name, _)| &**name == claim)
            .map_or(&[], |(_, values)| values)
    }

    /// Whether `claim` holds `value`.
    pub fn holds(&self, claim: &str, value: &str) -> bool {
        self.values(claim).iter().any(|v| &**v == value)
    }
}

/// A claim value as a parameter value: strings as they are, integers in decimal.
fn bindable(value: &Value) -> Option<Box<str>> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        _ => return None,
    };
    is_valid_value(&text).then(|| text.into_boxed_str())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(value: Value) -> Claims {
        let map = value.as_object().unwrap();
        Claims::from_token(map, &map.keys().cloned().collect())
    }

    #[test]
    fn keeps_strings_integers_and_arrays_of_them() {
        let c = claims(json!({
            "dept": 5,
            "teams": ["eu-1", 7, 2.5, {"x": 1}, "CORP\\alice"],
            "site": "hq",
            "flag": true,
            "ratio": 0.5,
        }));
        assert!(c.holds("dept", "5"));
        assert_eq!(c.values("teams").len(), 2);
        assert!(c.holds("teams", "eu-1") && c.holds("teams", "7"));
        assert!(!c.holds("teams", "CORP\\alice"));
        assert!(c.holds("site", "hq"));
        assert!(c.values("flag").is_empty() && c.values("ratio").is_empty());
        assert!(c.values("missing").is_empty());
    }

    #[test]
    fn hostile_values_are_never_kept_and_sizes_are_bounded() {
        let c = claims(json!({
            "dept": "🦀",
            "quote": "o\"brien",
            "long": "x".repeat(65),
            "lookalike": "ｄｅｐｔ",
            "many": (0..1000).collect::<Vec<_>>(),
        }));
        for name in ["dept", "quote", "long", "lookalike"] {
            assert!(c.values(name).is_empty(), "{name}");
        }
        assert_eq!(c.values("many").len(), MAX_VALUES);
    }

    #[test]
    fn keeps_only_the_claims_bindings_name() {
        let token = json!({"dept": 5, "team": "eu", "email": "a@b.example"});
        let wanted = BTreeSet::from(["dept".to_owned(), "absent".to_owned()]);
        let c = Claims::from_token(token.as_object().unwrap(), &wanted);
        assert!(c.holds("dept", "5"));
        assert!(c.values("team").is_empty() && c.values("email").is_empty());
        assert_eq!(c.0.len(), 1);
        assert_eq!(
            Claims::from_token(token.as_object().unwrap(), &BTreeSet::new()),
            Claims::default()
        );
    }
}
