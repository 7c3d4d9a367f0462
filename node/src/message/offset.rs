//! History offsets: `<milliseconds>-<sequence>`, the form Redis stream ids take.
//!
//! Offsets of one topic only ever grow, so comparing them tells replayed messages
//! from live ones and lets every layer drop duplicates. They are parsed once where
//! they enter the node (a client frame, a Redis reply) and stay typed from there on.

/// A parsed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl Offset {
    /// Parses `ms-seq` (a bare `ms` means `ms-0`).
    pub fn parse(text: &str) -> Option<Self> {
        let (ms, seq) = text.split_once('-').unwrap_or((text, "0"));
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The offset right after this one.
    pub fn next(self) -> Self {
        Self {
            ms: self.ms,
            seq: self.seq + 1,
        }
    }
}

impl std::fmt::Display for Offset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Serializes as its `ms-seq` text, written straight into the output (no string is
/// built first: envelopes are serialized once per delivered message).
impl serde::Serialize for Offset {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders_like_stream_ids() {
        assert_eq!(Offset::parse("17-3"), Some(Offset { ms: 17, seq: 3 }));
        assert_eq!(Offset::parse("17"), Some(Offset { ms: 17, seq: 0 }));
        assert_eq!(Offset::parse("x-1"), None);
        assert_eq!(Offset::parse("1-2-3"), None);
        assert_eq!(Offset::parse("18446744073709551616-0"), None);
        assert!(Offset::parse("17-3") < Offset::parse("17-10"));
        assert!(Offset::parse("18-0") > Offset::parse("17-10"));
        assert_eq!(Offset::parse("5-1").unwrap().next().to_string(), "5-2");
    }

    #[test]
    fn serializes_as_its_text() {
        let offset = Offset {
            ms: 1_700_000_000_000,
            seq: 7,
        };
        assert_eq!(
            serde_json::to_string(&offset).unwrap(),
            r#""1700000000000-7""#
        );
    }
}
