//! The parent ↔ worker conversation: one JSON object per line.
//!
//! The parent writes a [`WorkerSpec`] and then [`Command`]s to a worker's stdin; the worker
//! answers each with exactly one [`Event`] on stdout (stderr stays free for diagnostics).
//! Stdin closing means the parent is gone and the worker exits.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::adapter::{Stream, TargetSpec};
use super::stats::{HistData, RunSample};

/// A worker's share of the benchmark.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// Worker number, for messages.
    pub index: usize,
    /// How to build the protocol adapter.
    pub target: TargetSpec,
    /// Node addresses clients connect to, round-robin by global user index; empty means
    /// `target.ws_addr` only.
    #[serde(default)]
    pub ws_addrs: Vec<SocketAddr>,
    /// Stream clients subscribe to.
    pub stream: Stream,
    /// Global index of the first user this worker connects.
    pub first_user: usize,
    /// Number of users (= connections) this worker owns.
    pub users: usize,
    /// User ids are `<prefix><global index>`.
    pub user_prefix: String,
    /// Spread client sockets over 127.0.0.1..=127.0.0.K.
    pub source_ips: u8,
    /// Connection attempts in flight at once.
    pub concurrency: usize,
    /// Per-connection limit for connect + handshake, in milliseconds.
    pub connect_timeout_ms: u64,
    /// The worker exits on its own after this many milliseconds.
    pub deadline_ms: u64,
}

/// The user id for global index `index`.
pub fn user_name(prefix: &str, index: usize) -> String {
    format!("{prefix}{index}")
}

/// Parent → worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Open all connections; answered by [`Event::Connected`].
    Connect,
    /// Reset counters and accept deliveries of `run`; answered by [`Event::Started`].
    Start {
        /// Run id (never 0).
        run: u32,
    },
    /// Answered by [`Event::Progress`].
    Progress,
    /// Answered by [`Event::Results`] with the current run's sample.
    Collect,
    /// Exit (no answer).
    Quit,
}

/// Worker → parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The worker read its spec and waits for [`Command::Connect`].
    Hello,
    /// Connection phase finished.
    Connected(ConnectReport),
    /// A run started with this many live clients.
    Started {
        /// Clients connected at the start.
        alive: u64,
    },
    /// Counted deliveries so far in the current run.
    Progress {
        /// Counted deliveries.
        received: u64,
        /// Clients still connected.
        alive: u64,
    },
    /// The current run's observations.
    Results {
        /// Counters and latencies.
        sample: RunSample,
        /// Clients still connected.
        alive: u64,
    },
    /// The worker failed and will exit.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// Outcome of a worker's connection phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectReport {
    /// Connections that completed the handshake.
    pub ok: u64,
    /// Connections that failed or timed out.
    pub failed: u64,
    /// Failure messages and how often each occurred (a few distinct ones).
    pub errors: BTreeMap<String, u64>,
    /// TCP connect to `101` times, µs.
    pub connect_time: HistData,
    /// TCP connect to subscribed (every handshake frame acknowledged) times, µs.
    #[serde(default)]
    pub ready_time: HistData,
    /// Wall time of the phase as seen by the worker, ms.
    pub elapsed_ms: f64,
    /// Global indices of the connected users.
    pub users: Vec<u64>,
    /// The worker's own resident memory after connecting, bytes.
    pub rss_bytes: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let line = serde_json::to_string(&Command::Start { run: 3 }).unwrap();
        assert_eq!(line, r#"{"cmd":"start","run":3}"#);
        let back: Command = serde_json::from_str(r#"{"cmd":"collect"}"#).unwrap();
        assert_eq!(back, Command::Collect);

        let ev = Event::Connected(ConnectReport {
            ok: 2,
            users: vec![0, 1],
            ..ConnectReport::default()
        });
        let line = serde_json::to_string(&ev).unwrap();
        assert!(line.starts_with(r#"{"event":"connected","ok":2"#), "{line}");
        match serde_json::from_str::<Event>(&line).unwrap() {
            Event::Connected(r) => assert_eq!(r.users, vec![0, 1]),
            other => panic!("{other:?}"),
        }
        assert_eq!(user_name("bench-", 7), "bench-7");
    }
}
