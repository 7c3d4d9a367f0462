//! Parameterized channels: one `Channel` for `dept:{dept}` instead of one per
//! department.
//!
//! A pattern is a channel name whose `:`-separated segments may be parameters
//! (`{name}`); concrete channels (`dept:5`) match it segment by segment and exist on
//! demand. The node resolves names and binds parameters to token claims; the CRD
//! refuses malformed patterns with [`NAME_OR_PATTERN`]. Both take the rules from here.

use std::collections::BTreeMap;
use std::fmt;

use crate::channel_name;

/// Most parameters in one pattern.
pub const MAX_PARAMS: usize = 4;

/// Longest parameter name, in bytes.
pub const MAX_PARAM_NAME: usize = 32;

/// Longest parameter value, in bytes.
pub const MAX_VALUE_LEN: usize = 64;

/// Characters a parameter value may hold besides ASCII letters and digits: the
/// channel-name characters except `:`, which separates segments.
pub const VALUE_PUNCTUATION: &str = "_.@-";

/// A channel name or a pattern, as a regular expression for the CRD. The first
/// segment is always literal, so no pattern can match a name without a `:`.
pub const NAME_OR_PATTERN: &str =
    r"^[A-Za-z0-9_.@-]+(:([A-Za-z0-9_.@-]+|\{[a-z][a-z0-9_]{0,31}\}))*$";

/// Why a pattern is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// A segment is neither literal channel-name text nor a whole `{param}`.
    #[error(
        "pattern {0:?}: every ':'-separated segment must be literal text or a whole \
         {{parameter}} of lower-case letters, digits and '_'"
    )]
    Segment(String),
    /// The first segment is a parameter: the pattern would match any name.
    #[error("pattern {0:?}: the first segment must be literal text")]
    LeadingParameter(String),
    /// More than [`MAX_PARAMS`] parameters.
    #[error("pattern {0:?}: at most {MAX_PARAMS} parameters are allowed")]
    TooManyParams(String),
    /// The same parameter twice.
    #[error("pattern {0:?}: parameter {1:?} appears twice")]
    DuplicateParam(String, String),
    /// Longer than a channel name may be.
    #[error("pattern {0:?} is longer than {max} characters", max = channel_name::MAX_LEN)]
    TooLong(String),
    /// `bind` on a channel that is not a pattern.
    #[error("channel {0:?}: \"bind\" needs a pattern name such as \"dept:{{dept}}\"")]
    BindWithoutPattern(String),
    /// `bind` names a parameter the pattern does not have.
    #[error("pattern {0:?} has no parameter {1:?} to bind")]
    UnknownParam(String, String),
    /// A claim name that is empty or longer than [`MAX_CLAIM_NAME`].
    #[error("pattern {0:?}: claim names must be 1-{MAX_CLAIM_NAME} bytes")]
    ClaimName(String),
    /// `auto_subscribe` on a pattern with an unbound parameter: which concrete
    /// channels to join would be unknown.
    #[error("pattern {0:?}: auto_subscribe needs every parameter bound to a claim; {1:?} is not")]
    AutoSubscribeUnbound(String, String),
}

/// Longest claim name `bind` may name, in bytes.
pub const MAX_CLAIM_NAME: usize = 64;

/// Checks a channel's name, `bind` and `auto_subscribe` together: the parsed
/// pattern when the name is one, `None` for a plain name.
pub fn check_channel(
    name: &str,
    bind: &BTreeMap<String, String>,
    auto_subscribe: bool,
) -> Result<Option<ChannelPattern>, PatternError> {
    if !is_pattern(name) {
        return if bind.is_empty() {
            Ok(None)
        } else {
            Err(PatternError::BindWithoutPattern(name.to_owned()))
        };
    }
    let pattern = ChannelPattern::parse(name)?;
    for (param, claim) in bind {
        if !pattern.params().any(|p| p == param) {
            return Err(PatternError::UnknownParam(name.to_owned(), param.clone()));
        }
        if claim.is_empty() || claim.len() > MAX_CLAIM_NAME {
            return Err(PatternError::ClaimName(name.to_owned()));
        }
    }
    if auto_subscribe {
        if let Some(unbound) = pattern.params().find(|p| !bind.contains_key(*p)) {
            return Err(PatternError::AutoSubscribeUnbound(
                name.to_owned(),
                unbound.to_owned(),
            ));
        }
    }
    Ok(Some(pattern))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A parsed pattern such as `dept:{dept}` or `stock:{region}:{sku}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPattern {
    segments: Vec<Segment>,
}

/// Whether `name` is written as a pattern (holds a `{`).
pub fn is_pattern(name: &str) -> bool {
    name.contains('{')
}

/// Whether `value` may stand for a parameter: 1–[`MAX_VALUE_LEN`] letters, digits
/// and `_ . @ -`.
pub fn is_valid_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_VALUE_LEN
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || VALUE_PUNCTUATION.contains(c))
}

fn is_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_PARAM_NAME
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl ChannelPattern {
    /// Parses `text`, which must hold at least one parameter.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let fail = |e: fn(String) -> PatternError| Err(e(text.to_owned()));
        if text.len() > channel_name::MAX_LEN {
            return fail(PatternError::TooLong);
        }
        let mut segments = Vec::new();
        for part in text.split(':') {
            let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(param) if is_param_name(param) => Segment::Param(param.to_owned()),
                Some(_) => return fail(PatternError::Segment),
                None if !part.is_empty() && channel_name::check(part).is_ok() => {
                    Segment::Literal(part.to_owned())
                }
                None => return fail(PatternError::Segment),
            };
            segments.push(segment);
        }
        let pattern = Self { segments };
        if matches!(pattern.segments.first(), Some(Segment::Param(_))) {
            return fail(PatternError::LeadingParameter);
        }
        let params: Vec<&str> = pattern.params().collect();
        if params.is_empty() {
            return fail(PatternError::Segment);
        }
        if params.len() > MAX_PARAMS {
            return fail(PatternError::TooManyParams);
        }
        for (i, p) in params.iter().enumerate() {
            if params[..i].contains(p) {
                return Err(PatternError::DuplicateParam(
                    text.to_owned(),
                    (*p).to_owned(),
                ));
            }
        }
        Ok(pattern)
    }

    /// The parameter names, in order.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(p) => Some(p.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// The parameter values when `name` is one of this pattern's concrete channels.
    pub fn matches<'n>(&self, name: &'n str) -> Option<Vec<(&str, &'n str)>> {
        if name.len() > channel_name::MAX_LEN {
            return None;
        }
        let mut parts = name.split(':');
        let mut values = Vec::new();
        for segment in &self.segments {
            let part = parts.next()?;
            match segment {
                Segment::Literal(l) if l == part => {}
                Segment::Param(p) if is_valid_value(part) => values.push((p.as_str(), part)),
                _ => return None,
            }
        }
        parts.next().is_none().then_some(values)
    }

    /// Whether some concrete name matches both patterns: as many segments, and no
    /// position where both hold different literals.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|pair| match pair {
                    (Segment::Literal(a), Segment::Literal(b)) => a == b,
                    _ => true,
                })
    }

    /// The concrete channel for `values` (one per parameter); `None` when one is
    /// missing or invalid, or the name would be too long.
    pub fn render(&self, values: &BTreeMap<&str, &str>) -> Option<String> {
        let mut name = String::new();
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                name.push(':');
            }
            match segment {
                Segment::Literal(l) => name.push_str(l),
                Segment::Param(p) => {
                    let value = values.get(p.as_str()).filter(|v| is_valid_value(v))?;
                    name.push_str(value);
                }
            }
        }
        (name.len() <= channel_name::MAX_LEN).then_some(name)
    }
}

impl fmt::Display for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            match segment {
                Segment::Literal(l) => f.write_str(l)?,
                Segment::Param(p) => write!(f, "{{{p}}}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_and_matches_department_channels() {
        let dept = ChannelPattern::parse("dept:{dept}").unwrap();
        assert_eq!(dept.params().collect::<Vec<_>>(), ["dept"]);
        assert_eq!(dept.matches("dept:5"), Some(vec![("dept", "5")]));
        assert_eq!(
            dept.matches("dept:sales-eu.1@corp"),
            Some(vec![("dept", "sales-eu.1@corp")])
        );
        for other in ["dept", "dept:", "dept:5:x", "depts:5", "Dept:5", "x:dept:5"] {
            assert_eq!(dept.matches(other), None, "{other:?}");
        }
        let stock = ChannelPattern::parse("stock:{region}:eu:{sku}").unwrap();
        assert_eq!(
            stock.matches("stock:north:eu:A-1"),
            Some(vec![("region", "north"), ("sku", "A-1")])
        );
        assert_eq!(stock.matches("stock:north:us:A-1"), None);
        assert_eq!(stock.to_string(), "stock:{region}:eu:{sku}");
    }

    #[test]
    fn hostile_values_never_match() {
        let dept = ChannelPattern::parse("dept:{dept}").unwrap();
        for value in [
            "CORP\\alice",
            "o\"brien",
            "🦀",
            "ｄｅｐｔ",
            "a b",
            "{dept}",
            &"x".repeat(MAX_VALUE_LEN + 1),
        ] {
            assert_eq!(dept.matches(&format!("dept:{value}")), None, "{value:?}");
            let values = BTreeMap::from([("dept", value)]);
            assert_eq!(dept.render(&values), None, "{value:?}");
        }
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for (text, want) in [
            ("{dept}", PatternError::LeadingParameter("{dept}".into())),
            (
                "{dept}:x",
                PatternError::LeadingParameter("{dept}:x".into()),
            ),
            ("dept", PatternError::Segment("dept".into())),
            ("dept:{Dept}", PatternError::Segment("dept:{Dept}".into())),
            ("dept:x{dept}", PatternError::Segment("dept:x{dept}".into())),
            ("dept:{dept}x", PatternError::Segment("dept:{dept}x".into())),
            ("dept:{}", PatternError::Segment("dept:{}".into())),
            ("dept::{d}", PatternError::Segment("dept::{d}".into())),
            ("dept:{d\\x}", PatternError::Segment("dept:{d\\x}".into())),
            (
                "a:{a}:{b}:{c}:{d}:{e}",
                PatternError::TooManyParams("a:{a}:{b}:{c}:{d}:{e}".into()),
            ),
            (
                "a:{a}:{a}",
                PatternError::DuplicateParam("a:{a}:{a}".into(), "a".into()),
            ),
        ] {
            assert_eq!(ChannelPattern::parse(text), Err(want), "{text:?}");
        }
        let long = format!("x:{{p}}:{}", "y".repeat(channel_name::MAX_LEN));
        assert!(matches!(
            ChannelPattern::parse(&long),
            Err(PatternError::TooLong(_))
        ));
    }

    #[test]
    fn overlapping_patterns_are_found() {
        let p = |t| ChannelPattern::parse(t).unwrap();
        assert!(p("dept:{a}").overlaps(&p("dept:{b}")));
        assert!(p("x:{a}:y").overlaps(&p("x:z:{b}")));
        assert!(!p("dept:{a}").overlaps(&p("team:{a}")));
        assert!(!p("dept:{a}").overlaps(&p("dept:{a}:{b}")));
        assert!(!p("x:{a}:y").overlaps(&p("x:{a}:z")));
    }

    #[test]
    fn render_names_the_concrete_channel() {
        let stock = ChannelPattern::parse("stock:{region}:{sku}").unwrap();
        let values = BTreeMap::from([("region", "eu"), ("sku", "A-1")]);
        assert_eq!(stock.render(&values).as_deref(), Some("stock:eu:A-1"));
        assert_eq!(stock.render(&BTreeMap::from([("region", "eu")])), None);
    }

    #[test]
    fn bindings_must_name_parameters_and_cover_auto_subscribe() {
        let bind = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(p, c)| (p.to_string(), c.to_string()))
                .collect()
        };
        assert_eq!(check_channel("alerts", &bind(&[]), true), Ok(None));
        assert!(
            check_channel("dept:{dept}", &bind(&[("dept", "dept")]), true)
                .unwrap()
                .is_some()
        );
        assert!(check_channel("stock:{sku}", &bind(&[]), false).is_ok());
        assert_eq!(
            check_channel("alerts", &bind(&[("dept", "dept")]), false),
            Err(PatternError::BindWithoutPattern("alerts".into()))
        );
        assert_eq!(
            check_channel("dept:{dept}", &bind(&[("team", "team")]), false),
            Err(PatternError::UnknownParam(
                "dept:{dept}".into(),
                "team".into()
            ))
        );
        assert_eq!(
            check_channel("dept:{dept}", &bind(&[("dept", "")]), false),
            Err(PatternError::ClaimName("dept:{dept}".into()))
        );
        assert_eq!(
            check_channel("d:{dept}:{team}", &bind(&[("dept", "dept")]), true),
            Err(PatternError::AutoSubscribeUnbound(
                "d:{dept}:{team}".into(),
                "team".into()
            ))
        );
    }

    fn value() -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!(
            "[A-Za-z0-9{VALUE_PUNCTUATION}]{{1,{MAX_VALUE_LEN}}}"
        ))
        .unwrap()
    }

    proptest! {
        /// Rendering then matching gives back the values, and the name is a valid
        /// channel name; the regex the CRD uses accepts the pattern.
        #[test]
        fn render_and_match_are_inverse(
            prefix in "[a-z][a-z0-9_.@-]{0,10}",
            a in value(),
            b in value(),
        ) {
            let text = format!("{prefix}:{{a}}:mid:{{b}}");
            let pattern = ChannelPattern::parse(&text).unwrap();
            prop_assert_eq!(pattern.to_string(), text);
            let values = BTreeMap::from([("a", a.as_str()), ("b", b.as_str())]);
            if let Some(name) = pattern.render(&values) {
                prop_assert!(channel_name::check(&name).is_ok());
                prop_assert_eq!(pattern.matches(&name), Some(vec![("a", a.as_str()), ("b", b.as_str())]));
            } else {
                prop_assert!(prefix.len() + a.len() + b.len() + 6 > channel_name::MAX_LEN);
            }
        }

        /// Whatever the CRD's regex admits (within the length limit) is a channel
        /// name or a well-formed pattern, unless it repeats a parameter or has too
        /// many.
        #[test]
        fn the_crd_regex_admits_names_and_patterns(
            // The same expression with bounded repetitions, so texts fit the length
            // limit the CRD states separately.
            text in proptest::string::string_regex(
                &NAME_OR_PATTERN
                    .trim_start_matches('^')
                    .trim_end_matches('$')
                    .replace("]+", "]{1,12}")
                    .replace(")*", "){0,6}"),
            )
            .unwrap(),
        ) {
            prop_assume!(text.len() <= channel_name::MAX_LEN);
            if is_pattern(&text) {
                match ChannelPattern::parse(&text) {
                    Ok(_)
                    | Err(PatternError::DuplicateParam(..) | PatternError::TooManyParams(_)) => {}
                    Err(e) => prop_assert!(false, "{text:?}: {e}"),
                }
            } else {
                prop_assert!(channel_name::check(&text).is_ok());
            }
        }

        /// A value with any character outside the set never matches.
        #[test]
        fn values_outside_the_set_never_match(
            before in "[a-z]{0,5}",
            bad in any::<char>().prop_filter("outside", |c| {
                !c.is_ascii_alphanumeric() && !VALUE_PUNCTUATION.contains(*c)
            }),
        ) {
            let pattern = ChannelPattern::parse("dept:{dept}").unwrap();
            let name = format!("dept:{before}{bad}");
            prop_assert_eq!(pattern.matches(&name), None);
        }
    }
}
