//! Entry points for the fuzz targets in `fuzz/`; not part of the node's API.
//!
//! The fuzzers must drive exactly the parsers the node runs on untrusted input. Most
//! are public already; this module re-exports them in one place and exposes the
//! publish-body checks, which otherwise only run inside the HTTP handler with a node.

pub use crate::api::CheckedMessage;
pub use crate::auth::{AuthError, AuthSettings, Authenticator, Identity};
pub use crate::broker::wire::{decode, encode, split_payload, DecodeError};
pub use crate::capped::{parse as capped_parse, CappedError};
pub use crate::jsondepth::exceeds as depth_exceeds;
pub use crate::message::{Message, Offset, Target};
pub use crate::protocol::{ClientMessage, ParseError};
pub use crate::tags::{parse as tags_parse, Tags, TagsError};
pub use crate::telemetry::propagation::TraceContext;

/// Parses a publish body as `POST /api/v1/publish` does, up to the channel lookup,
/// with the given `HERALD_MAX_BATCH`, `HERALD_MAX_DATA_DEPTH` and
/// `HERALD_MAX_USERS_PER_MESSAGE`. Per message: the checked message, or the refusal's
/// text.
pub fn publish_body(
    body: &[u8],
    max_batch: usize,
    max_depth: usize,
    max_users: usize,
) -> Result<Vec<Result<CheckedMessage, String>>, CappedError> {
    Ok(
        crate::api::check_body(body, max_batch, max_depth, max_users)?
            .into_iter()
            .map(|checked| checked.map_err(|e| e.to_string()))
            .collect(),
    )
}
