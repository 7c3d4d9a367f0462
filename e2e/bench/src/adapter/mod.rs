//! The protocol boundary between the bench and the server under test.
//!
//! Everything that differs between push servers (URLs, credentials, subscribe handshake,
//! publish API, message envelopes) sits behind [`Target`]; the rest of the bench only deals
//! in [`Stream`]s, [`Publication`]s and [`Inbound`] classifications. A worker process builds
//! its adapter from a serialisable [`TargetSpec`].

pub mod centrifugo;
pub mod herald;
pub mod legacy;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::payload::Payload;

/// Which kind of fan-out a scenario exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// One publish reaches every connected client.
    Broadcast,
    /// One publish reaches exactly one user.
    Personal,
}

/// How to open a client WebSocket for one user.
#[derive(Debug, Clone)]
pub struct WsTarget {
    /// `ws://` URL including any credentials the server expects in the query.
    pub url: String,
    /// Extra upgrade-request headers (cookies, auth headers).
    pub headers: Vec<(String, String)>,
}

/// One HTTP request to the server's publish API.
#[derive(Debug, Clone)]
pub struct HttpCall {
    /// Request method.
    pub method: http::Method,
    /// Path and query, e.g. `/api/v1/publish`.
    pub path: String,
    /// Headers besides `Host` and `Content-Length`, which the publisher sets.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Bytes,
}

/// One message the bench wants delivered.
#[derive(Debug, Clone)]
pub struct Publication<'a> {
    /// Broadcast or personal.
    pub stream: Stream,
    /// Recipient of a personal message.
    pub user: Option<&'a str>,
    /// The bench record to embed as the message data.
    pub payload: Payload<'a>,
}

/// What a received text frame means to the bench.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// A message published by the bench.
    Delivery(Payload<'a>),
    /// A reply to one of the handshake frames (connect / subscribe acknowledgement).
    Ack,
    /// A frame the client must answer (application-level ping) with this text.
    Reply(String),
    /// The server reported an error.
    Error(String),
    /// Anything else (foreign messages, pongs, presence, ...).
    Other,
}

/// A push server protocol as seen by the bench.
pub trait Target: Send + Sync + 'static {
    /// Short protocol name for reports.
    fn name(&self) -> &'static str;

    /// Upgrade request for `user`'s client connection.
    fn ws_target(&self, user: &str) -> Result<WsTarget>;

    /// Text frames a freshly upgraded client sends so that it receives `stream`; the client is
    /// ready once it has seen one [`Inbound::Ack`] per frame. Empty when the server
    /// subscribes clients on its own. `index` is the client's number in the run (`user`
    /// is derived from it).
    fn handshake(&self, stream: Stream, index: usize, user: &str) -> Result<Vec<String>>;

    /// Classifies one text frame received by a client.
    fn classify<'a>(&self, text: &'a str) -> Inbound<'a>;

    /// Classifies every message of one text frame, in order. Servers that write several
    /// messages into one frame (Centrifugo: newline-separated) override it; the default is
    /// one message per frame.
    fn each_message<'a>(&self, text: &'a str, f: &mut dyn FnMut(Inbound<'a>)) {
        f(self.classify(text));
    }

    /// Largest number of publications [`Target::publish_call`] accepts at once.
    fn max_batch(&self) -> usize;

    /// The publish request for `batch` (1..=[`Target::max_batch`] publications).
    fn publish_call(&self, batch: &[Publication<'_>]) -> Result<HttpCall>;

    /// How many publications of a `sent`-sized batch the server accepted, from its response.
    /// Errors describe a rejected request.
    fn accepted(&self, status: u16, body: &[u8], sent: usize) -> Result<usize>;
}

/// Protocols the bench can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// Herald's own protocol (JWT in the query, `/api/v1/publish`).
    Herald,
    /// The legacy Django Channels service (`e2e/peers/legacy/`: JWT in the query,
    /// `channel_layer.group_send` behind `/api/push/`).
    Legacy,
    /// Centrifugo (`e2e/peers/centrifugo/`: JSON protocol, `connect` with a JWT, `subscribe`,
    /// server HTTP API `/api/publish` and `/api/batch`).
    Centrifugo,
}

/// Everything needed to build a [`Target`], passed from the parent to its workers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetSpec {
    /// Protocol.
    pub kind: TargetKind,
    /// Address clients connect to.
    pub ws_addr: SocketAddr,
    /// Address the publisher posts to.
    pub publish_addr: SocketAddr,
    /// Secret for signing client tokens.
    pub jwt_secret: String,
    /// Publish API key.
    pub api_key: String,
    /// Lifetime of minted client tokens, in seconds.
    pub token_ttl_secs: u64,
    /// Tag-filtered broadcast (Herald only; 0: off): see [`TagFilter`].
    #[serde(default)]
    pub tag_filter_every: usize,
}

/// The tag-filtered broadcast: every message is tagged `{"half":"even"|"odd"}` by the
/// parity of its sequence number, and every `every`-th client (index 0, every, 2·every…)
/// subscribes with `{"tags":{"half":{"eq":"even"}}}`, so it receives half the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagFilter {
    /// One client in this many filters (at least 1).
    pub every: usize,
}

impl TagFilter {
    /// The setting of `--filter-every` (0: none).
    pub fn from_every(every: usize) -> Option<Self> {
        (every > 0).then_some(Self { every })
    }

    /// Whether client `index` subscribes through the filter.
    pub fn filters(&self, index: usize) -> bool {
        index % self.every == 0
    }

    /// The tag value message `seq` carries.
    pub fn half(seq: u64) -> &'static str {
        if seq % 2 == 0 {
            "even"
        } else {
            "odd"
        }
    }

    /// Deliveries to expect when `accepted` messages (sequence numbers 0..accepted) reach
    /// `clients` connected clients of the first `connections` indices.
    pub fn expected(&self, accepted: u64, clients: u64, connections: usize) -> u64 {
        let filtered = (connections.div_ceil(self.every) as u64).min(clients);
        accepted * (clients - filtered) + accepted.div_ceil(2) * filtered
    }
}

impl TargetSpec {
    /// Builds the adapter described by this spec.
    pub fn build(&self) -> Result<Arc<dyn Target>> {
        Ok(match self.kind {
            TargetKind::Herald => Arc::new(herald::Herald::new(self)?),
            TargetKind::Legacy => Arc::new(legacy::Legacy::new(self)?),
            TargetKind::Centrifugo => Arc::new(centrifugo::Centrifugo::new(self)?),
        })
    }
}

/// What the adapters' unit tests share: a spec on a fixed loopback address, and payloads.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Payload, TargetKind, TargetSpec};

    /// A spec for `kind` on 127.0.0.1:8000 with throw-away credentials.
    pub fn spec(kind: TargetKind) -> TargetSpec {
        TargetSpec {
            kind,
            ws_addr: "127.0.0.1:8000".parse().expect("an address"),
            publish_addr: "127.0.0.1:8000".parse().expect("an address"),
            jwt_secret: "s3cret".into(),
            api_key: "key".into(),
            token_ttl_secs: 60,
            tag_filter_every: 0,
        }
    }

    /// Bench record `seq` of run 1, for `user` when personal.
    pub fn payload(seq: u64, user: Option<&'static str>) -> Payload<'static> {
        Payload {
            run: 1,
            seq,
            ts: 9,
            user: user.map(Into::into),
        }
    }
}
