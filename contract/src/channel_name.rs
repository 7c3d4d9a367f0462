//! The channel-name rule. The node refuses a channel file with a bad name and the
//! CRD refuses a `Channel` with one; both take the rule from here.

/// Most characters in a channel name.
pub const MAX_LEN: usize = 128;

/// Characters allowed besides ASCII letters and digits.
pub const PUNCTUATION: &str = "_.:@-";

/// The rule as a regular expression, for the CRD's `pattern` (a unit test checks it
/// says the same as [`MAX_LEN`] and [`PUNCTUATION`]).
pub const PATTERN: &str = r"^[A-Za-z0-9_.:@-]{1,128}$";

/// A name that breaks the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid channel name {0:?}: use 1-128 letters, digits, '_', '-', '.', ':' or '@'")]
pub struct InvalidName(pub String);

/// Checks a channel name: 1–128 characters of letters, digits and `_ - . : @`.
pub fn check(name: &str) -> Result<(), InvalidName> {
    let ok = !name.is_empty()
        && name.len() <= MAX_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || PUNCTUATION.contains(c));
    if ok {
        Ok(())
    } else {
        Err(InvalidName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// [`PATTERN`] without its anchors (proptest generates from unanchored patterns).
    fn body() -> String {
        format!("[A-Za-z0-9{PUNCTUATION}]{{1,{MAX_LEN}}}")
    }

    #[test]
    fn the_pattern_states_the_same_rule() {
        assert_eq!(PATTERN, format!("^{}$", body()));
        let message = InvalidName(String::new()).to_string();
        assert!(message.contains(&format!("1-{MAX_LEN}")), "{message}");
    }

    #[test]
    fn hostile_names_are_refused() {
        for name in [
            "",
            "a b",
            "CORP\\alice",
            "say \"hi\"",
            "🦀",
            "news*",
            "news\n",
            "ｎｅｗｓ",
            &"x".repeat(MAX_LEN + 1),
        ] {
            assert_eq!(check(name), Err(InvalidName(name.to_owned())), "{name:?}");
        }
        for name in [
            "stock_updates",
            "a",
            "user@corp.example:orders-1",
            &"x".repeat(MAX_LEN),
        ] {
            assert_eq!(check(name), Ok(()), "{name:?}");
        }
    }

    proptest! {
        #[test]
        fn every_name_the_pattern_matches_is_valid(name in body().as_str()) {
            prop_assert_eq!(check(&name), Ok(()));
        }

        #[test]
        fn a_name_with_any_other_character_is_invalid(
            before in "[a-z]{0,10}",
            bad in any::<char>().prop_filter("outside the rule", |c| {
                !c.is_ascii_alphanumeric() && !PUNCTUATION.contains(*c)
            }),
            after in "[a-z]{0,10}",
        ) {
            let name = format!("{before}{bad}{after}");
            prop_assert!(check(&name).is_err());
        }
    }
}
