//! Nesting depth of raw JSON, measured without building a value tree.
//!
//! Published `data` is kept as raw bytes end to end; this scan bounds how deeply it
//! nests (deep nesting is expensive for every browser that parses it) in one pass over
//! the bytes, honouring strings and their escapes.

/// Whether the JSON text `json` nests arrays/objects deeper than `limit`
/// (`{}` is depth 1, `{"a":[1]}` depth 2, a scalar depth 0). Stops at the first
/// bracket past the limit. Brackets inside strings do not count.
pub fn exceeds(json: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use serde_json::Value;

    /// Depth of a parsed value, the reference the scanner must agree with.
    fn value_depth(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(value_depth).max().unwrap_or(0),
            Value::Object(map) => 1 + map.values().map(value_depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn depth(json: &str) -> usize {
        (0..)
            .find(|&limit| !exceeds(json.as_bytes(), limit))
            .unwrap()
    }

    #[test]
    fn counts_brackets_outside_strings_only() {
        assert_eq!(depth("1"), 0);
        assert_eq!(depth(r#""[[[{""#), 0);
        assert_eq!(depth("{}"), 1);
        assert_eq!(depth(r#"{"a":[1,{"b":[]}]}"#), 4);
        assert_eq!(depth(r#"{"a\"[[[":"]]]\\","b":[[]]}"#), 3);
        assert_eq!(depth(r#"["\\\"{{{", "\\\\"]"#), 1);
        assert_eq!(depth(r#"{"k":"\u005b\u007b"}"#), 1);
        assert_eq!(depth(r#"[{"}":"{"},["]"]]"#), 2);
        assert!(exceeds(&[b'['; 65], 64));
        assert!(!exceeds(&[b'['; 64], 64));
        // Stops early: the tail is never looked at.
        let mut deep = vec![b'['; 100];
        deep.extend(std::iter::repeat_n(b']', 100));
        assert!(exceeds(&deep, 64));
    }

    /// Random JSON with strings full of quotes, backslashes and brackets.
    fn random_value(rng: &mut impl Rng, budget: usize) -> Value {
        const ALPHABET: &[char] = &['[', ']', '{', '}', '"', '\\', 'a', ',', ':', ' ', 'é'];
        let string = |rng: &mut dyn rand::RngCore| -> String {
            let len = rng.random_range(0..6);
            (0..len)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
                .collect()
        };
        match if budget == 0 {
            0
        } else {
            rng.random_range(0..4)
        } {
            0 => Value::String(string(rng)),
            1 => Value::from(rng.random_range(-5..5)),
            2 => Value::Array(
                (0..rng.random_range(0..4))
                    .map(|_| random_value(rng, budget - 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.random_range(0..4))
                    .map(|_| (string(rng), random_value(rng, budget - 1)))
                    .collect(),
            ),
        }
    }

    #[test]
    fn agrees_with_a_parsed_tree_on_random_json() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6865_7261_6c64);
        for _ in 0..5_000 {
            let value = random_value(&mut rng, 8);
            let expected = value_depth(&value);
            for text in [
                value.to_string(),
                serde_json::to_string_pretty(&value).unwrap(),
            ] {
                assert_eq!(depth(&text), expected, "{text}");
                assert!(!exceeds(text.as_bytes(), expected), "{text}");
                if expected > 0 {
                    assert!(exceeds(text.as_bytes(), expected - 1), "{text}");
                }
            }
        }
    }
}
