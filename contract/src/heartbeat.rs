//! The node heartbeat: a JSON record each node keeps under [`crate::keys::node`]
//! (with a TTL) and indexes in [`crate::keys::NODES`]. Nodes also serve it from
//! `GET /api/v1/nodes`; the operator reads the part it scales on.

use serde::{Deserialize, Serialize};

/// A node's heartbeat as the node writes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeRecord {
    /// Node id (the pod name in Kubernetes).
    pub id: String,
    /// Unique per process start.
    pub incarnation: String,
    /// Address it listens on.
    pub address: String,
    /// Open WebSocket connections.
    pub connections: usize,
    /// Whether it is draining.
    pub draining: bool,
    /// Start time, RFC 3339.
    pub started_at: String,
    /// Heartbeat time, Unix milliseconds.
    pub heartbeat_ms: u64,
}

/// The operator's view of a [`NodeRecord`]: only the fields it uses, so records with
/// more (or, for `draining`, fewer) fields still read.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct NodeStats {
    /// Node id: the pod name.
    pub id: String,
    /// Open connections.
    pub connections: i64,
    /// Whether it is draining.
    #[serde(default)]
    pub draining: bool,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::arbitrary::text;

    #[test]
    fn reads_the_minimal_record() {
        let stats: NodeStats =
            serde_json::from_str(r#"{"id":"CORP\\alice","connections":7}"#).unwrap();
        assert_eq!(
            stats,
            NodeStats {
                id: "CORP\\alice".into(),
                connections: 7,
                draining: false
            }
        );
    }

    proptest! {
        /// Whatever a node writes, the operator reads the same id, connections and
        /// draining flag.
        #[test]
        fn the_operator_reads_what_a_node_writes(
            strings in proptest::collection::vec(text(), 4),
            connections in 0..=(i64::MAX as u64),
            draining in any::<bool>(),
            heartbeat_ms in any::<u64>(),
        ) {
            let record = NodeRecord {
                id: strings[0].clone(),
                incarnation: strings[1].clone(),
                address: strings[2].clone(),
                connections: connections as usize,
                draining,
                started_at: strings[3].clone(),
                heartbeat_ms,
            };
            let stats: NodeStats =
                serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
            prop_assert_eq!(
                stats,
                NodeStats { id: record.id, connections: connections as i64, draining }
            );
        }
    }
}
