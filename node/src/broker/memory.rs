//! The embedded broker: one node, no external services.
//!
//! With a single node there is nobody to forward messages to, so publishing only
//! accepts the message; the publish API then fans it out through the local hub.
//! This keeps `herald-node --dev` free of set-up.

use std::collections::HashMap;

use parking_lot::Mutex;

use super::{BoxFuture, Broker, BrokerError, Health, Message, Topic};
use crate::channels::ChannelConfig;

/// In-process broker for a single node.
#[derive(Debug, Default)]
pub struct MemoryBroker {
    interest: Mutex<HashMap<Topic, usize>>,
}

impl MemoryBroker {
    /// A new, empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many local references `topic` holds (for tests and admin views).
    pub fn interest(&self, topic: &Topic) -> usize {
        self.interest.lock().get(topic).copied().unwrap_or(0)
    }
}

impl Broker for MemoryBroker {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn publish<'a>(
        &'a self,
        message: Message,
        _channel: &'a ChannelConfig,
    ) -> BoxFuture<'a, Result<Message, BrokerError>> {
        Box::pin(async move { Ok(message) })
    }

    fn subscribe(&self, topic: Topic) -> BoxFuture<'_, Result<(), BrokerError>> {
        *self.interest.lock().entry(topic).or_default() += 1;
        Box::pin(async { Ok(()) })
    }

    fn unsubscribe(&self, topic: Topic) {
        let mut interest = self.interest.lock();
        if let Some(count) = interest.get_mut(&topic) {
            *count -= 1;
            if *count == 0 {
                interest.remove(&topic);
            }
        }
    }

    fn health(&self) -> Health {
        Health {
            healthy: true,
            detail: "embedded in-memory broker".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn interest_is_reference_counted() {
        let broker = MemoryBroker::new();
        let topic = Topic {
            channel: "alerts".into(),
            user: None,
        };
        broker.subscribe(topic.clone()).await.unwrap();
        broker.subscribe(topic.clone()).await.unwrap();
        broker.unsubscribe(topic.clone());
        assert_eq!(broker.interest(&topic), 1);
        broker.unsubscribe(topic.clone());
        assert_eq!(broker.interest(&topic), 0);
        // An unbalanced unsubscribe is harmless.
        broker.unsubscribe(topic.clone());
        assert_eq!(broker.interest(&topic), 0);
    }
}
