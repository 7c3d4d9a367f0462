//! The publish body parser: `POST /api/v1/publish` bodies (one message or a batch),
//! parsed and checked up to the channel lookup, under caps taken from the input.
//!
//! Input: three bytes choosing `HERALD_MAX_BATCH`, `HERALD_MAX_DATA_DEPTH` and
//! `HERALD_MAX_USERS_PER_MESSAGE`, then the body.
//!
//! Properties: nothing panics; no batch longer than its cap and no message past the
//! depth or recipient caps is accepted; the capped array parser agrees with an
//! uncapped parse (same items under the cap, `TooMany` over it, an error when the
//! JSON is bad); the depth scanner agrees with the depth of serde_json's tree.

#![no_main]

use herald_node::fuzzing::{capped_parse, depth_exceeds, publish_body, CappedError};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use serde_json::Value;

/// Nesting depth of a parsed tree (`{}` is 1, a scalar 0).
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The scanner must put `json` exactly at depth `expected`.
fn scanner_agrees(json: &[u8], expected: usize) {
    assert!(
        !depth_exceeds(json, expected),
        "{}",
        String::from_utf8_lossy(json)
    );
    if expected > 0 {
        assert!(
            depth_exceeds(json, expected - 1),
            "{}",
            String::from_utf8_lossy(json)
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let [batch, depth_cap, users, body @ ..] = data else {
        return;
    };
    let (max_batch, max_depth, max_users) = (
        usize::from(*batch % 32),
        usize::from(*depth_cap % 100),
        usize::from(*users % 32),
    );

    match publish_body(body, max_batch, max_depth, max_users) {
        Ok(results) => {
            assert!(results.len() <= max_batch.max(1));
            for checked in results.into_iter().flatten() {
                let data = checked.data.get();
                assert!(data.trim_start().starts_with('{'), "{data}");
                assert!(!depth_exceeds(data.as_bytes(), max_depth));
                // Serde's own recursion limit (128) is above every cap used here. Data
                // is kept raw, so numbers past f64 (`1e999`) pass: a `Value` refuses
                // them ("number out of range"), browsers read them as Infinity.
                match serde_json::from_str::<Value>(data) {
                    Ok(tree) => assert!(depth(&tree) <= max_depth, "{data}"),
                    Err(e) => assert!(
                        e.to_string().starts_with("number out of range"),
                        "accepted data is not JSON: {e}: {data}"
                    ),
                }
                if let Some(users) = &checked.users {
                    assert!(users.len() <= max_users);
                    assert!(users.iter().all(|u| !u.is_empty()));
                }
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }

    // The capped parser against an uncapped one.
    let capped = capped_parse::<&RawValue>(body, max_batch);
    match serde_json::from_slice::<Vec<&RawValue>>(body) {
        Ok(all) if all.len() <= max_batch => {
            let items = capped.expect("an array under the cap parses");
            let got: Vec<&str> = items.iter().map(|i| i.get()).collect();
            let want: Vec<&str> = all.iter().map(|i| i.get()).collect();
            assert_eq!(got, want);
        }
        Ok(_) => assert!(matches!(capped, Err(CappedError::TooMany(_)))),
        Err(_) => assert!(capped.is_err()),
    }

    // The depth scanner against serde_json's tree, on the whole body.
    if let Ok(tree) = serde_json::from_slice::<Value>(body) {
        scanner_agrees(body, depth(&tree));
    }
});
