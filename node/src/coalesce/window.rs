//! The windowing rules of coalescing, on an explicit clock.
//!
//! One [`Windows`] holds a channel's open windows. The memory broker keeps one per
//! channel; the Redis broker runs the same rules in Lua on the channel's slot (see
//! `broker::redis`), so a single node and a cluster coalesce alike. Time is a
//! parameter (milliseconds on any monotonic clock), which is what makes the rules
//! testable without waiting.
//!
//! A window opens with the first message of a key and lasts the channel's window
//! length; the next message after it closes opens a new one. Over a burst lasting
//! `D` ms, windows of `W` ms therefore number at most `floor(D / W) + 1`: each one
//! opens at least `W` after the previous one opened.

use std::collections::HashMap;

/// Most open windows one channel holds at once, per edge. Past it a message is
/// delivered uncoalesced (never lost): the bound on memory, and in Redis on the
/// channel's coalescing keys.
pub const MAX_OPEN_WINDOWS: usize = 10_000;

/// What holding a message for a trailing window did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The message is the latest of its key's window, which ends at `end_ms`.
    Held {
        /// When the window closes and its latest message is delivered.
        end_ms: u64,
        /// Whether this message opened the window (its node then flushes it).
        opened: bool,
        /// Whether it replaced an earlier held message, which will not be delivered.
        superseded: bool,
    },
    /// Too many windows are open: deliver the message now.
    Full,
}

/// A channel's open windows; `M` is the held message.
#[derive(Debug)]
pub struct Windows<M> {
    leading: HashMap<String, u64>,
    pending: HashMap<String, (u64, M)>,
}

impl<M> Default for Windows<M> {
    fn default() -> Self {
        Self {
            leading: HashMap::new(),
            pending: HashMap::new(),
        }
    }
}

impl<M> Windows<M> {
    /// Leading edge: whether a message of `key` at `now_ms` is delivered (it opens a
    /// window) or coalesced (a window of `key` is open).
    pub fn lead(&mut self, key: &str, now_ms: u64, window_ms: u64) -> bool {
        if let Some(&end) = self.leading.get(key) {
            if end > now_ms {
                return false;
            }
        }
        if self.leading.len() >= MAX_OPEN_WINDOWS && !self.leading.contains_key(key) {
            self.leading.retain(|_, end| *end > now_ms);
            if self.leading.len() >= MAX_OPEN_WINDOWS {
                return true;
            }
        }
        self.leading.insert(key.to_owned(), now_ms + window_ms);
        true
    }

    /// Trailing edge: makes `message` the latest of `key`'s window, opening one at
    /// `now_ms` if none is open.
    pub fn hold(&mut self, key: &str, message: M, now_ms: u64, window_ms: u64) -> Hold {
        let full = self.pending.len() >= MAX_OPEN_WINDOWS;
        match self.pending.get_mut(key) {
            Some((end, held)) => {
                *held = message;
                Hold::Held {
                    end_ms: *end,
                    opened: false,
                    superseded: true,
                }
            }
            None if full => Hold::Full,
            None => {
                let end_ms = now_ms + window_ms;
                self.pending.insert(key.to_owned(), (end_ms, message));
                Hold::Held {
                    end_ms,
                    opened: true,
                    superseded: false,
                }
            }
        }
    }

    /// Closes every trailing window that ended by `now_ms` (all of them with
    /// `u64::MAX`, at shutdown) and returns their latest messages, oldest window first.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<M> {
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, (end, _))| *end <= now_ms)
            .map(|(key, _)| key.clone())
            .collect();
        let mut taken: Vec<(u64, M)> = due
            .iter()
            .filter_map(|key| self.pending.remove(key))
            .collect();
        taken.sort_by_key(|(end, _)| *end);
        self.forget_closed_leading(now_ms);
        taken.into_iter().map(|(_, message)| message).collect()
    }

    /// Forgets leading windows closed by `now_ms`.
    pub fn forget_closed_leading(&mut self, now_ms: u64) {
        self.leading.retain(|_, end| *end > now_ms);
    }

    /// When the earliest open trailing window ends.
    pub fn next_due(&self) -> Option<u64> {
        self.pending.values().map(|(end, _)| *end).min()
    }

    /// Whether no window is open.
    pub fn is_empty(&self) -> bool {
        self.leading.is_empty() && self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn leading_delivers_the_first_of_each_window() {
        let mut windows = Windows::<()>::default();
        assert!(windows.lead("stock", 0, 1000));
        assert!(!windows.lead("stock", 999, 1000));
        assert!(windows.lead("CORP\\alice \"🦀\"", 999, 1000));
        assert!(windows.lead("stock", 1000, 1000));
        assert!(!windows.lead("stock", 1500, 1000));
    }

    #[test]
    fn trailing_delivers_the_latest_when_the_window_closes() {
        let mut windows = Windows::default();
        assert_eq!(
            windows.hold("stock", 1, 0, 100),
            Hold::Held {
                end_ms: 100,
                opened: true,
                superseded: false
            }
        );
        assert_eq!(
            windows.hold("stock", 2, 99, 100),
            Hold::Held {
                end_ms: 100,
                opened: false,
                superseded: true
            }
        );
        assert!(windows.take_due(99).is_empty());
        assert_eq!(windows.next_due(), Some(100));
        assert_eq!(windows.take_due(100), [2]);
        assert!(windows.is_empty());
        assert!(matches!(
            windows.hold("stock", 3, 100, 100),
            Hold::Held { opened: true, .. }
        ));
        assert_eq!(windows.take_due(u64::MAX), [3]);
    }

    #[test]
    fn open_windows_are_bounded_and_overflow_is_delivered() {
        let mut windows = Windows::default();
        for n in 0..MAX_OPEN_WINDOWS {
            assert!(windows.lead(&n.to_string(), 0, 10));
            assert!(matches!(
                windows.hold(&n.to_string(), n, 0, 10),
                Hold::Held { .. }
            ));
        }
        assert!(windows.lead("one more", 5, 10));
        assert_eq!(windows.hold("one more", 0, 5, 10), Hold::Full);
        // Expired leading windows make room.
        assert!(windows.lead("another", 10, 10));
    }

    proptest! {
        /// For any publish times, trailing edge delivers the last message of every
        /// window, the very last message always, and at most floor(D / W) + 1
        /// messages for a burst lasting D ms.
        #[test]
        fn trailing_keeps_the_last_and_bounds_the_count(
            gaps in proptest::collection::vec(0u64..40, 1..400),
            window_ms in 10u64..200,
        ) {
            let mut windows = Windows::default();
            let mut delivered = Vec::new();
            let mut now = 0;
            let mut window_end = None;
            let mut last_of_window = Vec::new();
            for (n, gap) in gaps.iter().enumerate() {
                now += gap;
                // The flusher runs at window end, before later publishes.
                while let Some(end) = windows.next_due().filter(|end| *end <= now) {
                    delivered.extend(windows.take_due(end));
                }
                if window_end.is_some_and(|end| end <= now) || window_end.is_none() {
                    if window_end.is_some() {
                        last_of_window.push(n - 1);
                    }
                    window_end = Some(now + window_ms);
                }
                let held = windows.hold("k", n, now, window_ms);
                let opened_at = match held {
                    Hold::Held { end_ms, .. } => Some(end_ms),
                    Hold::Full => None,
                };
                prop_assert_eq!(opened_at, window_end);
            }
            last_of_window.push(gaps.len() - 1);
            delivered.extend(windows.take_due(u64::MAX));
            prop_assert_eq!(&delivered, &last_of_window);
            let duration = gaps.iter().skip(1).sum::<u64>();
            prop_assert!(delivered.len() as u64 <= duration / window_ms + 1);
        }

        /// Leading edge delivers the first message of every window and the same
        /// count bound holds.
        #[test]
        fn leading_bounds_the_count(
            gaps in proptest::collection::vec(0u64..40, 1..400),
            window_ms in 10u64..200,
        ) {
            let mut windows = Windows::<()>::default();
            let mut now = 0;
            let mut delivered = 0u64;
            for (n, gap) in gaps.iter().enumerate() {
                now += gap;
                let first = windows.lead("k", now, window_ms);
                prop_assert!(n > 0 || first);
                delivered += u64::from(first);
            }
            let duration = gaps.iter().skip(1).sum::<u64>();
            prop_assert!(delivered <= duration / window_ms + 1);
        }
    }
}
