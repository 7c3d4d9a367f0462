//! History offsets: `<milliseconds>-<sequence>`, the form Redis stream ids take.
//!
//! Offsets of one topic only ever grow, so comparing them tells replayed messages
//! from live ones and lets every layer drop duplicates.

use std::cmp::Ordering;

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

/// Compares two offset strings; unparsable ones sort first.
pub fn compare(a: &str, b: &str) -> Ordering {
    Offset::parse(a).cmp(&Offset::parse(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders_like_stream_ids() {
        assert_eq!(Offset::parse("17-3"), Some(Offset { ms: 17, seq: 3 }));
        assert_eq!(Offset::parse("17"), Some(Offset { ms: 17, seq: 0 }));
        assert_eq!(Offset::parse("x-1"), None);
        assert_eq!(compare("17-3", "17-10"), Ordering::Less);
        assert_eq!(compare("18-0", "17-10"), Ordering::Greater);
        assert_eq!(compare("bad", "0-0"), Ordering::Less);
        assert_eq!(Offset::parse("5-1").unwrap().next().to_string(), "5-2");
    }
}
