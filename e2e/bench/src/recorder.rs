//! A worker's sink for what its clients observe.
//!
//! Every client task of a worker shares one [`Recorder`]; it knows the current run, files
//! each delivery as counted, duplicate, stale or misdelivered, and hands the parent a
//! [`RunSample`] on request. Sequence state stays in the client ([`ClientState`]) so the
//! shared lock is only held for a counter bump and one histogram record.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::payload::Payload;
use super::seq::{SeqTracker, Verdict};
use super::stats::{Counts, LatencyHist, RunSample};

/// Per-client state the recorder needs for classification.
#[derive(Debug)]
pub struct ClientState {
    user: String,
    run: u32,
    tracker: SeqTracker,
}

impl ClientState {
    /// State for a client authenticated as `user`.
    pub fn new(user: String) -> Self {
        Self {
            user,
            run: 0,
            tracker: SeqTracker::default(),
        }
    }
}

#[derive(Debug, Default)]
struct RunState {
    counts: Counts,
    latency: LatencyHist,
    first_us: Option<u64>,
    last_us: Option<u64>,
}

/// Shared delivery sink of one worker. Run 0 means "not measuring".
#[derive(Debug, Default)]
pub struct Recorder {
    run: AtomicU32,
    alive: AtomicU64,
    state: Mutex<RunState>,
}

impl Recorder {
    /// Starts run `run`, discarding what was recorded before.
    pub fn start(&self, run: u32) {
        let mut state = self.state.lock();
        *state = RunState::default();
        self.run.store(run, Ordering::SeqCst);
    }

    /// Number of clients currently connected.
    pub fn alive(&self) -> u64 {
        self.alive.load(Ordering::SeqCst)
    }

    /// A client finished its handshake.
    pub fn connected(&self) {
        self.alive.fetch_add(1, Ordering::SeqCst);
    }

    /// A connected client lost its connection.
    pub fn disconnected(&self) {
        self.alive.fetch_sub(1, Ordering::SeqCst);
        self.state.lock().counts.disconnects += 1;
    }

    /// Deliveries counted so far in the current run (correctly addressed, not duplicated).
    pub fn received(&self) -> u64 {
        self.state.lock().counts.received
    }

    /// What the current run has recorded so far.
    pub fn sample(&self) -> RunSample {
        let state = self.state.lock();
        RunSample {
            counts: state.counts,
            latency: state.latency.to_data(),
            first_us: state.first_us,
            last_us: state.last_us,
        }
    }

    /// Files one delivery received by `client` at `now_us`.
    pub fn delivery(&self, client: &mut ClientState, payload: &Payload<'_>, now_us: u64) {
        let run = self.run.load(Ordering::SeqCst);
        if run == 0 || payload.run != run {
            self.state.lock().counts.stale += 1;
            return;
        }
        if client.run != run {
            client.run = run;
            client.tracker = SeqTracker::default();
        }
        if payload.user.as_deref().is_some_and(|u| u != client.user) {
            self.state.lock().counts.misdelivered += 1;
            return;
        }
        let verdict = client.tracker.observe(payload.seq);
        let mut state = self.state.lock();
        match verdict {
            Verdict::Duplicate => {
                state.counts.duplicates += 1;
                return;
            }
            Verdict::OutOfOrder => state.counts.out_of_order += 1,
            Verdict::Fresh => {}
        }
        state.counts.received += 1;
        state.latency.record(now_us.saturating_sub(payload.ts));
        state.first_us = Some(state.first_us.map_or(now_us, |f| f.min(now_us)));
        state.last_us = Some(state.last_us.map_or(now_us, |l| l.max(now_us)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(run: u32, seq: u64, user: Option<&str>) -> Payload<'_> {
        Payload {
            run,
            seq,
            ts: 1_000,
            user: user.map(Into::into),
        }
    }

    #[test]
    fn files_deliveries() {
        let r = Recorder::default();
        let mut c = ClientState::new("u1".into());
        r.delivery(&mut c, &p(1, 0, None), 2_000); // not measuring yet
        r.start(1);
        r.delivery(&mut c, &p(1, 0, None), 3_000);
        r.delivery(&mut c, &p(1, 2, None), 3_500);
        r.delivery(&mut c, &p(1, 1, None), 4_000); // late
        r.delivery(&mut c, &p(1, 1, None), 4_000); // duplicate
        r.delivery(&mut c, &p(0, 9, None), 4_000); // other run
        r.delivery(&mut c, &p(1, 3, Some("u2")), 5_000); // someone else's
        r.delivery(&mut c, &p(1, 3, Some("u1")), 5_000);
        let s = r.sample();
        assert_eq!(
            s.counts,
            Counts {
                received: 4,
                duplicates: 1,
                out_of_order: 1,
                stale: 1,
                misdelivered: 1,
                disconnects: 0
            }
        );
        assert_eq!((s.first_us, s.last_us), (Some(3_000), Some(5_000)));
        assert_eq!(LatencyHist::from_data(&s.latency).count(), 4);
    }

    #[test]
    fn new_run_resets_counts_and_sequences() {
        let r = Recorder::default();
        let mut c = ClientState::new("u".into());
        r.start(1);
        r.delivery(&mut c, &p(1, 5, None), 2_000);
        r.start(2);
        r.delivery(&mut c, &p(2, 0, None), 2_000); // seq restarts: not out of order
        assert_eq!(r.received(), 1);
        assert_eq!(r.sample().counts.out_of_order, 0);
    }

    #[test]
    fn tracks_liveness() {
        let r = Recorder::default();
        r.start(1);
        r.connected();
        r.connected();
        r.disconnected();
        assert_eq!(r.alive(), 1);
        assert_eq!(r.sample().counts.disconnects, 1);
    }
}
