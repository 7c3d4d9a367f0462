//! Delivery cursors: what this connection was sent, per channel, and what the node
//! remembers for the user.
//!
//! Three records keep replays and live delivery from overlapping: the newest offset
//! sent per channel (a replay starts after it), the offsets a replay sent whose live
//! copies may still be queued (dropped when they arrive), and the newest offset
//! delivered on channels that keep a per-user cursor (saved to the broker now and
//! then, and when the connection ends).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::Session;
use crate::channels::ChannelConfig;
use crate::connection::topic_for;
use crate::hub::Delivery;
use crate::message::Offset;
use crate::ChannelName;

/// How often delivery cursors are saved at most while messages flow.
const CURSOR_FLUSH: Duration = Duration::from_secs(2);

/// Channels on which Herald remembers, per user, what was delivered or acknowledged,
/// so a returning user gets what they missed.
pub(super) fn keeps_cursor(config: &ChannelConfig) -> bool {
    config.history && (config.is_per_user() || config.ack_required)
}

/// One connection's delivery positions.
#[derive(Debug)]
pub(super) struct Cursors {
    /// Newest offset sent on this connection per channel, live or replayed: a
    /// replay starts after it, so no offset is ever sent twice.
    sent: HashMap<ChannelName, Offset>,
    /// Offsets sent by a replay whose live copy may still be queued, per channel:
    /// such copies are dropped (until live delivery overtakes the replay).
    replayed: HashMap<ChannelName, BTreeSet<Offset>>,
    /// Newest offset delivered per channel whose cursor the node keeps for the user.
    delivered: HashMap<ChannelName, Offset>,
    dirty: bool,
    flushed: Instant,
}

impl Cursors {
    /// Nothing sent yet.
    pub(super) fn new() -> Self {
        Self {
            sent: HashMap::new(),
            replayed: HashMap::new(),
            delivered: HashMap::new(),
            dirty: false,
            flushed: Instant::now(),
        }
    }

    /// The newest offset sent on `channel`.
    pub(super) fn sent(&self, channel: &str) -> Option<Offset> {
        self.sent.get(channel).copied()
    }

    /// Where a replay of `channel` starts: after the later of `from` (the client's
    /// offset or the user's cursor) and the newest offset already sent here.
    pub(super) fn replay_start(&self, channel: &str, from: Option<Offset>) -> Option<Offset> {
        from.max(self.sent(channel))
    }

    /// Records an offset sent live.
    pub(super) fn note_sent(&mut self, channel: &ChannelName, offset: Offset) {
        match self.sent.get_mut(channel) {
            Some(newest) => *newest = (*newest).max(offset),
            None => {
                self.sent.insert(channel.clone(), offset);
            }
        }
    }

    /// Records an offset sent by a replay, whose live copy is then dropped.
    pub(super) fn note_replayed(&mut self, channel: &ChannelName, offset: Offset) {
        self.replayed
            .entry(channel.clone())
            .or_default()
            .insert(offset);
        self.note_sent(channel, offset);
    }

    /// Records a delivery on a channel whose cursor the node keeps for the user.
    pub(super) fn note_delivered(&mut self, channel: &ChannelName, offset: Offset) {
        let newest = self.delivered.entry(channel.clone()).or_default();
        if offset > *newest {
            *newest = offset;
            self.dirty = true;
        }
    }

    /// Whether live deliveries may still duplicate a replay.
    pub(super) fn has_replayed(&self) -> bool {
        !self.replayed.is_empty()
    }

    /// Whether a live delivery was already sent by a replay (each live copy arrives
    /// once, so its offset is forgotten when it does).
    pub(super) fn already_replayed(&mut self, delivery: &Delivery) -> bool {
        let Some(offset) = delivery.offset else {
            return false;
        };
        let Some(offsets) = self.replayed.get_mut(&delivery.channel) else {
            return false;
        };
        if offsets.remove(&offset) {
            if offsets.is_empty() {
                self.replayed.remove(&delivery.channel);
            }
            return true;
        }
        if offsets.last().is_none_or(|newest| offset > *newest) {
            // Live delivery has overtaken the replay: no more duplicates possible.
            self.replayed.remove(&delivery.channel);
        }
        false
    }

    /// Whether unsaved cursors are older than the flush interval.
    pub(super) fn flush_due(&self) -> bool {
        self.dirty && self.flushed.elapsed() > CURSOR_FLUSH
    }

    /// The cursors to save, when any changed since the last call.
    pub(super) fn take_unsaved(&mut self) -> Option<&HashMap<ChannelName, Offset>> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        self.flushed = Instant::now();
        Some(&self.delivered)
    }
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Records a delivery on `channel` where the node keeps the user's cursor of
    /// what was delivered (not on `ack` channels: there only acks move it).
    pub(super) fn note_delivered(&mut self, channel: &ChannelName, offset: Offset) {
        let channels = self.node.channels.snapshot();
        let tracked = channels
            .get(channel)
            .is_some_and(|r| keeps_cursor(r.config) && !r.config.ack_required);
        if tracked {
            self.cursors.note_delivered(channel, offset);
        }
    }

    /// Saves delivery cursors in the background (never blocks the connection).
    pub(super) fn flush_cursors(&mut self) {
        let Some(user) = self.identity.user.clone() else {
            return;
        };
        let Some(delivered) = self.cursors.take_unsaved() else {
            return;
        };
        let channels = self.node.channels.snapshot();
        for (name, offset) in delivered {
            let Some(resolved) = channels.get(name) else {
                continue;
            };
            let node = self.node.clone();
            let config = resolved.config.clone();
            let topic = topic_for(&resolved.name, &config, &self.identity);
            let user = user.clone();
            let offset = *offset;
            tokio::spawn(async move {
                if let Err(e) = node
                    .broker
                    .store_cursor(&topic, &user, offset, &config)
                    .await
                {
                    tracing::warn!(error = %e, "cannot save delivery cursor");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Message, Target};
    use serde_json::value::RawValue;
    use std::sync::Arc;

    fn delivery(channel: &str, ms: u64) -> Delivery {
        Delivery::of(&Message {
            id: ms.to_string().into(),
            channel: channel.into(),
            kind: "k".into(),
            data: Arc::from(RawValue::from_string("{}".into()).unwrap()),
            target: Target::All,
            offset: Some(Offset { ms, seq: 0 }),
            accepted_at_micros: 0,
            trace: None,
            tags: Default::default(),
        })
    }

    #[test]
    fn live_copies_of_replayed_offsets_are_dropped_once_until_overtaken() {
        let channel: ChannelName = "alerts".into();
        let mut cursors = Cursors::new();
        cursors.note_replayed(&channel, Offset { ms: 1, seq: 0 });
        cursors.note_replayed(&channel, Offset { ms: 2, seq: 0 });
        assert_eq!(cursors.sent("alerts"), Some(Offset { ms: 2, seq: 0 }));
        assert!(cursors.has_replayed());
        assert!(cursors.already_replayed(&delivery("alerts", 1)));
        assert!(!cursors.already_replayed(&delivery("orders", 2)));
        // Live delivery past the replay: nothing more to drop, offset 2 included.
        assert!(!cursors.already_replayed(&delivery("alerts", 3)));
        assert!(!cursors.has_replayed());
        assert!(!cursors.already_replayed(&delivery("alerts", 2)));
    }

    #[test]
    fn a_replay_starts_after_what_was_sent_and_cursors_only_move_forward() {
        let channel: ChannelName = "orders".into();
        let mut cursors = Cursors::new();
        let early = Some(Offset { ms: 5, seq: 0 });
        assert_eq!(cursors.replay_start("orders", early), early);
        cursors.note_sent(&channel, Offset { ms: 9, seq: 1 });
        cursors.note_sent(&channel, Offset { ms: 7, seq: 0 });
        assert_eq!(
            cursors.replay_start("orders", early),
            Some(Offset { ms: 9, seq: 1 })
        );
        assert!(cursors.take_unsaved().is_none());
        cursors.note_delivered(&channel, Offset { ms: 9, seq: 1 });
        cursors.note_delivered(&channel, Offset { ms: 3, seq: 0 });
        let unsaved = cursors.take_unsaved().unwrap();
        assert_eq!(unsaved.get("orders"), Some(&Offset { ms: 9, seq: 1 }));
        assert!(cursors.take_unsaved().is_none(), "saved once");
        assert!(!cursors.flush_due());
    }
}
