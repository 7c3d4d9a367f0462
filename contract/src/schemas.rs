//! Message schemas: a channel may declare a JSON Schema per message type.
//!
//! The node compiles them when it loads its channels and refuses publishes whose
//! `data` does not validate; the operator compiles them before a Channel reaches the
//! channel file, so a bad schema shows on the Channel instead of stalling every node's
//! reloads. Both compile here, with the same limits and the same rules: a schema
//! refers only to itself (`#/...`; nothing is ever fetched), and `pattern` uses a
//! linear-time regex engine, so no schema can make a publish backtrack for long.

use std::collections::BTreeMap;

use jsonschema::{PatternOptions, Retrieve, Uri};
use serde_json::Value;

/// Most schemas one channel may declare.
pub const MAX_SCHEMAS: usize = 32;
/// Largest schema, in bytes of compact JSON.
pub const MAX_SCHEMA_BYTES: usize = 16 * 1024;
/// Longest message type a schema may be declared for, in bytes.
pub const MAX_TYPE_BYTES: usize = 128;
/// Longest reason a violation or a compile error reports, in bytes.
pub const MAX_REASON_BYTES: usize = 512;

/// A compiled schema.
pub type Validator = jsonschema::Validator;

/// Why a channel's schemas were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// More than [`MAX_SCHEMAS`].
    #[error("{0} schemas declared; at most {MAX_SCHEMAS} are allowed")]
    TooMany(usize),
    /// An empty type, or one longer than [`MAX_TYPE_BYTES`].
    #[error("schema type {0:?} must have 1-{MAX_TYPE_BYTES} bytes")]
    TypeName(String),
    /// A schema for a type the channel's `allowed_types` refuses anyway.
    #[error("a schema for type {0:?}, which allowed_types does not list")]
    TypeNotAllowed(String),
    /// A schema over [`MAX_SCHEMA_BYTES`].
    #[error(
        "the schema for type {kind:?} has {bytes} bytes; at most {MAX_SCHEMA_BYTES} are allowed"
    )]
    TooLarge {
        /// The message type.
        kind: String,
        /// Its size.
        bytes: usize,
    },
    /// Not a valid JSON Schema (or a `$ref` that would need fetching).
    #[error("the schema for type {kind:?} is not a valid JSON Schema: {reason}")]
    Invalid {
        /// The message type.
        kind: String,
        /// What the compiler said.
        reason: String,
    },
}

/// Compiles every schema of a channel, type → validator; `allowed_types` (empty:
/// any) are the types the channel accepts.
pub fn compile(
    schemas: &BTreeMap<String, Value>,
    allowed_types: &[String],
) -> Result<BTreeMap<String, Validator>, SchemaError> {
    if schemas.len() > MAX_SCHEMAS {
        return Err(SchemaError::TooMany(schemas.len()));
    }
    schemas
        .iter()
        .map(|(kind, schema)| {
            if kind.is_empty() || kind.len() > MAX_TYPE_BYTES {
                return Err(SchemaError::TypeName(kind.clone()));
            }
            if !allowed_types.is_empty() && !allowed_types.contains(kind) {
                return Err(SchemaError::TypeNotAllowed(kind.clone()));
            }
            let bytes = serde_json::to_string(schema).map_or(usize::MAX, |s| s.len());
            if bytes > MAX_SCHEMA_BYTES {
                return Err(SchemaError::TooLarge {
                    kind: kind.clone(),
                    bytes,
                });
            }
            let invalid = |reason: String| SchemaError::Invalid {
                kind: kind.clone(),
                reason: capped(reason),
            };
            if !schema.is_object() {
                return Err(invalid("a schema must be a JSON object".into()));
            }
            let validator = jsonschema::options()
                .with_retriever(NoRetrieval)
                .with_pattern_options(PatternOptions::regex())
                .build(schema)
                .map_err(|e| invalid(e.to_string()))?;
            Ok((kind.clone(), validator))
        })
        .collect()
}

/// Refuses every document a schema refers to: schemas are self-contained.
struct NoRetrieval;

impl Retrieve for NoRetrieval {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!(
            "{} is not fetched: a schema may only refer to itself (\"#/...\")",
            uri.as_str()
        )
        .into())
    }
}

/// `text` cut to at most [`MAX_REASON_BYTES`] on a character boundary, marked `…`.
fn capped(mut text: String) -> String {
    if text.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Why `data` does not validate: the first failing instance path (a JSON pointer,
/// empty for the root) and the reason.
pub fn violation(validator: &Validator, data: &Value) -> Option<(String, String)> {
    validator
        .iter_errors(data)
        .next()
        .map(|e| (e.instance_path().to_string(), capped(e.to_string())))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn order_schema() -> Value {
        json!({"type": "object", "required": ["sku", "qty"],
               "properties": {"sku": {"type": "string", "maxLength": 32},
                              "qty": {"type": "integer", "minimum": 0},
                              "lines": {"type": "array", "items": {"$ref": "#/$defs/line"}}},
               "$defs": {"line": {"type": "object", "properties": {"n": {"type": "integer"}}}}})
    }

    fn compiled() -> BTreeMap<String, Validator> {
        compile(
            &BTreeMap::from([("order_update".to_owned(), order_schema())]),
            &[],
        )
        .unwrap()
    }

    #[test]
    fn valid_data_passes_and_the_first_failure_names_its_path() {
        let v = &compiled()["order_update"];
        assert_eq!(violation(v, &json!({"sku": "A-1", "qty": 3})), None);
        let (path, reason) = violation(v, &json!({"sku": "A-1", "qty": "3"})).unwrap();
        assert_eq!(path, "/qty");
        assert!(reason.contains("integer"), "{reason}");
        let (path, _) = violation(
            v,
            &json!({"sku": "A", "qty": 1, "lines": [{"n": 1}, {"n": "x"}]}),
        )
        .unwrap();
        assert_eq!(path, "/lines/1/n");
        let (path, reason) = violation(v, &json!({"qty": 1})).unwrap();
        assert_eq!(path, "");
        assert!(reason.contains("sku"), "{reason}");
    }

    #[test]
    fn hostile_property_names_and_values_are_reported_verbatim() {
        let schema = json!({"type": "object",
                            "properties": {"CORP\\alice \"q\" 🦀/~": {"type": "integer"}}});
        let v = compile(&BTreeMap::from([("t".to_owned(), schema)]), &[]).unwrap();
        let (path, reason) =
            violation(&v["t"], &json!({"CORP\\alice \"q\" 🦀/~": "o\"brien"})).unwrap();
        // JSON pointer escapes `~` and `/`.
        assert_eq!(path, "/CORP\\alice \"q\" 🦀~1~0");
        assert!(reason.contains("o\\\"brien"), "{reason}");
    }

    #[test]
    fn invalid_remote_oversized_and_too_many_schemas_are_refused() {
        let one = |schema: Value| compile(&BTreeMap::from([("t".to_owned(), schema)]), &[]);
        assert!(matches!(
            one(json!({"type": 5})),
            Err(SchemaError::Invalid { .. })
        ));
        assert!(matches!(
            one(json!({"$ref": "https://schemas.example.com/order.json"})),
            Err(SchemaError::Invalid { .. })
        ));
        assert!(matches!(
            one(json!({"$ref": "file:///etc/passwd"})),
            Err(SchemaError::Invalid { .. })
        ));
        let big = json!({"description": "x".repeat(MAX_SCHEMA_BYTES)});
        assert!(matches!(one(big), Err(SchemaError::TooLarge { .. })));
        let many: BTreeMap<String, Value> = (0..=MAX_SCHEMAS)
            .map(|i| (format!("t{i}"), json!({})))
            .collect();
        assert_eq!(
            compile(&many, &[]).err(),
            Some(SchemaError::TooMany(MAX_SCHEMAS + 1))
        );
        let long = BTreeMap::from([("x".repeat(MAX_TYPE_BYTES + 1), json!({}))]);
        assert!(matches!(compile(&long, &[]), Err(SchemaError::TypeName(_))));
        assert!(compile(&BTreeMap::new(), &[]).unwrap().is_empty());
        for refers in ["other.json", "/schemas/order.json", "urn:x:y"] {
            let err = one(json!({"$ref": refers}));
            assert!(matches!(err, Err(SchemaError::Invalid { .. })), "{refers}");
        }
        assert!(matches!(one(json!(true)), Err(SchemaError::Invalid { .. })));
        let typed = BTreeMap::from([("note".to_owned(), json!({}))]);
        assert_eq!(
            compile(&typed, &["order_update".to_owned()]).err(),
            Some(SchemaError::TypeNotAllowed("note".into()))
        );
        assert!(compile(&typed, &["note".to_owned()]).is_ok());
    }

    #[test]
    fn patterns_run_in_linear_time_and_reasons_are_capped() {
        // Catastrophic for a backtracking engine; look-arounds need one, so they are
        // refused.
        let evil = json!({"type": "string", "pattern": "^(a+)+$"});
        let v = compile(&BTreeMap::from([("t".to_owned(), evil)]), &[]).unwrap();
        let started = std::time::Instant::now();
        let attack = format!("{}!", "a".repeat(5000));
        assert!(violation(&v["t"], &json!(attack)).is_some());
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let lookaround = json!({"type": "string", "pattern": "(?=a)a"});
        assert!(compile(&BTreeMap::from([("t".to_owned(), lookaround)]), &[]).is_err());
        let long = json!({"type": "string", "enum": ["x".repeat(2000)]});
        let v = compile(&BTreeMap::from([("t".to_owned(), long)]), &[]).unwrap();
        let (_, reason) = violation(&v["t"], &json!("🦀".repeat(1000))).unwrap();
        assert!(
            reason.len() <= MAX_REASON_BYTES && reason.ends_with('…'),
            "{reason}"
        );
    }
}
