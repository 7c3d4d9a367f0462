//! `herald-bench`: connection, memory and delivery load measurements for push servers.
//!
//! The binaries in `src/bin` (`herald-bench`, `herald-cluster`) are thin entry points, so the
//! pieces stay unit-testable as a library; the real processes they start (Redis, nodes) come
//! from `herald-testkit`.
//!
//! The tool is split so that each module has one job:
//!
//! - [`cli`]: command-line surface (scenarios and their flags).
//! - [`adapter`]: the protocol boundary; everything server-specific lives behind [`adapter::Target`].
//! - [`payload`]: the `{run, seq, ts, user}` record every published message carries.
//! - [`net`]: loopback-only addressing, source-IP spreading and process sizing.
//! - [`client`]: one WebSocket client: connect, subscribe, then read and record deliveries.
//! - [`seq`]: per-connection duplicate / out-of-order detection.
//! - [`stats`]: mergeable latency histograms and delivery counters.
//! - [`recorder`]: a worker's shared sink for what its clients observe.
//! - [`publisher`]: paced HTTP publishing at a target rate.
//! - [`ipc`]: the JSON-lines conversation between the parent and its worker processes.
//! - [`worker`]: the child-process side (owns a slice of the connections).
//! - [`pool`]: the parent-process side (spawns workers, fans commands out, gathers results).
//! - [`peers`]: competing servers (Centrifugo, the legacy Django Channels stack) started for
//!   comparison.
//! - [`ramp`]: the rate search used by `--find-max`.
//! - [`rss`]: reading a server's resident memory from `/proc`.
//! - [`cpu`]: reading processes' CPU time from `/proc` (server nodes, Redis); shared with the
//!   test kit's Redis fixture, so it lives there.
//! - [`report`]: the figures, their table and their JSON line.
//! - [`compare`]: `compare`, the same workloads against Herald and its peers, as ratios.
//! - [`chart`]: the PNG chart of a comparison.
//! - [`run`]: the orchestration of a whole scenario.

pub mod adapter;
pub mod chart;
pub mod cli;
pub mod client;
pub mod compare;
pub use herald_testkit::cpu;
pub mod ipc;
pub mod net;
pub mod payload;
pub mod peers;
pub mod pool;
pub mod publisher;
pub mod ramp;
pub mod recorder;
pub mod report;
pub mod rss;
pub mod run;
pub mod seq;
pub mod stats;
pub mod worker;
