//! A real node for unit tests: the embedded memory broker, a hub, the given
//! channels, no network. Sessions and memberships run against it unchanged.

use std::sync::Arc;

use clap::Parser;

use crate::auth::{Authenticator, Identity};
use crate::broker::memory::MemoryBroker;
use crate::channels::{ChannelConfig, ChannelSet, Registry};
use crate::config::Args;
use crate::hub::Hub;
use crate::message::{DeliverySink, Message};
use crate::metrics::Metrics;
use crate::node::{Node, Parts};

/// A delivery sink with no connections, for brokers tested without a hub.
pub struct NoConnections;

impl DeliverySink for NoConnections {
    fn deliver(&self, _message: &Message) -> usize {
        0
    }
}

/// A memory broker without a hub.
pub fn memory_broker() -> MemoryBroker {
    MemoryBroker::new(Arc::new(NoConnections))
}

/// A node on the memory broker, with the broker kept at hand for inspection.
pub struct TestNode {
    /// The node.
    pub node: Arc<Node>,
    /// Its broker.
    pub broker: Arc<MemoryBroker>,
}

impl TestNode {
    /// A node serving `channels` with default settings.
    pub fn new(channels: Vec<ChannelConfig>) -> Self {
        Self::with_args(channels, &[])
    }

    /// A node serving `channels`, configured by command-line `flags`.
    pub fn with_args(channels: Vec<ChannelConfig>, flags: &[&str]) -> Self {
        let args = Args::try_parse_from(
            [
                "herald-node",
                "--jwt-secret",
                "unit-test-secret",
                "--api-key",
                "unit-test-api-key-0123",
            ]
            .iter()
            .chain(flags),
        )
        .expect("test flags parse");
        let secrets = args.secrets().expect("test secrets");
        let metrics = Arc::new(Metrics::new());
        let hub = Arc::new(Hub::new(
            metrics.clone(),
            args.outbound_queue,
            args.max_connections_per_user,
        ));
        let broker = Arc::new(MemoryBroker::new(hub.clone()));
        let node = Node::new(Parts {
            auth: Authenticator::new(&secrets.auth).expect("test key"),
            api_key: secrets.api_key,
            channels: Arc::new(Registry::new(
                ChannelSet::new(channels).expect("valid test channels"),
                None,
            )),
            hub,
            broker: broker.clone(),
            metrics,
            presence: None,
            config: args,
        });
        Self {
            node: Arc::new(node),
            broker,
        }
    }

    /// An authenticated identity without roles.
    pub fn user(id: &str) -> Identity {
        Identity {
            user: Some(id.into()),
            roles: Vec::new(),
            claims: Default::default(),
        }
    }
}

/// User ids that break naive quoting, escaping or key building.
pub fn hostile_users() -> Vec<String> {
    vec![
        r"CORP\alice".into(),
        r#"o"brien"#.into(),
        "42}{x:y".into(),
        "🦀 ünïcødé".into(),
        r#"\"\\"\"#.into(),
        "x".repeat(2000),
    ]
}
