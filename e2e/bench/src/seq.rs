//! Per-connection sequence tracking: tells fresh, duplicate and out-of-order deliveries apart.
//!
//! A connection keeps the highest sequence seen plus a 128-bit window of the ones just below
//! it, so memory stays constant however long a run is. A late arrival further back than the
//! window cannot be checked for duplication and is counted as out of order (and unique).

/// Width of the duplicate-detection window.
pub const WINDOW: u64 = 128;

/// How one delivery relates to the ones before it on the same connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New and in order.
    Fresh,
    /// New but older than something already received.
    OutOfOrder,
    /// Already received.
    Duplicate,
}

/// Sequence state of one connection for one run.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    highest: Option<u64>,
    /// Bit `i` set means `highest - i` was received.
    window: u128,
}

impl SeqTracker {
    /// Records `seq` and classifies it.
    pub fn observe(&mut self, seq: u64) -> Verdict {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            self.window = 1;
            return Verdict::Fresh;
        };
        if seq > highest {
            let shift = seq - highest;
            self.window = if shift >= WINDOW {
                0
            } else {
                self.window << shift
            };
            self.window |= 1;
            self.highest = Some(seq);
            return Verdict::Fresh;
        }
        let back = highest - seq;
        if back >= WINDOW {
            return Verdict::OutOfOrder;
        }
        let bit = 1u128 << back;
        if self.window & bit != 0 {
            Verdict::Duplicate
        } else {
            self.window |= bit;
            Verdict::OutOfOrder
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::*;

    fn run(seqs: &[u64]) -> Vec<Verdict> {
        let mut t = SeqTracker::default();
        seqs.iter().map(|&s| t.observe(s)).collect()
    }

    #[test]
    fn in_order_with_gaps_is_fresh() {
        assert_eq!(run(&[0, 1, 2, 5, 900]), vec![Fresh; 5]);
    }

    #[test]
    fn detects_duplicates() {
        assert_eq!(run(&[3, 3]), vec![Fresh, Duplicate]);
        assert_eq!(run(&[1, 2, 3, 2]), vec![Fresh, Fresh, Fresh, Duplicate]);
        assert_eq!(run(&[0, 127, 0]), vec![Fresh, Fresh, Duplicate]);
    }

    #[test]
    fn detects_reordering() {
        assert_eq!(
            run(&[1, 3, 2, 2]),
            vec![Fresh, Fresh, OutOfOrder, Duplicate]
        );
        // Beyond the window: reported as out of order, cannot be checked.
        assert_eq!(
            run(&[0, 500, 0, 0]),
            vec![Fresh, Fresh, OutOfOrder, OutOfOrder]
        );
        // A jump of exactly the window width forgets everything below.
        assert_eq!(run(&[0, 128, 1]), vec![Fresh, Fresh, OutOfOrder]);
    }
}
