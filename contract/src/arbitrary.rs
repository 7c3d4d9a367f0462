//! Property-test strategies shared by the modules (here and in `herald-node`) that
//! encode and decode JSON.

use proptest::prelude::*;

/// Any Unicode string, weighted towards what JSON must escape: quotes, backslashes,
/// control characters, line separators and characters outside the BMP.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(
            prop_oneof![
                Just('"'),
                Just('\\'),
                Just('/'),
                Just('\u{0}'),
                Just('\n'),
                Just('\u{1f}'),
                Just('\u{7f}'),
                Just('\u{2028}'),
                Just('🦀'),
                any::<char>()
            ],
            0..24
        )
        .prop_map(|chars| chars.into_iter().collect()),
    ]
}
