//! The broker's entities: exchanges with their bindings, queues with their
//! messages and consumers, and routing as RabbitMQ does it for the default,
//! direct, fanout and topic exchanges.

use std::collections::{BTreeMap, VecDeque};

use amqp_proto::codec::BasicProperties;
use bytes::Bytes;

/// A message as a queue holds it.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) properties: BasicProperties,
    pub(crate) body: Bytes,
    pub(crate) redelivered: bool,
}

/// The exchange types modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Direct,
    Fanout,
    Topic,
}

impl Kind {
    /// The type as `exchange.declare` names it.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "direct" => Some(Self::Direct),
            "fanout" => Some(Self::Fanout),
            "topic" => Some(Self::Topic),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Exchange {
    pub(crate) kind: Kind,
    /// (queue, binding key), in the order they were made.
    pub(crate) bindings: Vec<(String, String)>,
}

#[derive(Debug, Default)]
pub(crate) struct Queue {
    pub(crate) messages: VecDeque<Message>,
    /// (channel, consumer tag) of active consumers, served round-robin.
    pub(crate) consumers: Vec<(u16, String)>,
    pub(crate) next_consumer: usize,
}

/// Every exchange and queue of the one virtual host.
#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) exchanges: BTreeMap<String, Exchange>,
    pub(crate) queues: BTreeMap<String, Queue>,
    next_generated: u32,
}

impl Model {
    /// A fresh virtual host with RabbitMQ's predeclared exchanges.
    pub(crate) fn new() -> Self {
        let mut exchanges = BTreeMap::new();
        for (name, kind) in [
            ("amq.direct", Kind::Direct),
            ("amq.fanout", Kind::Fanout),
            ("amq.topic", Kind::Topic),
        ] {
            exchanges.insert(
                name.to_owned(),
                Exchange {
                    kind,
                    bindings: Vec::new(),
                },
            );
        }
        Self {
            exchanges,
            queues: BTreeMap::new(),
            next_generated: 0,
        }
    }

    /// A server-generated queue name, as RabbitMQ's `amq.gen-...`.
    pub(crate) fn generate_name(&mut self) -> String {
        self.next_generated += 1;
        format!("amq.gen-{}", self.next_generated)
    }

    /// The queues a message published to `exchange` with `key` goes to,
    /// or `None` when the exchange does not exist.
    pub(crate) fn route(&self, exchange: &str, key: &str) -> Option<Vec<String>> {
        if exchange.is_empty() {
            return Some(
                self.queues
                    .contains_key(key)
                    .then(|| key.to_owned())
                    .into_iter()
                    .collect(),
            );
        }
        let found = self.exchanges.get(exchange)?;
        let mut queues: Vec<String> = found
            .bindings
            .iter()
            .filter(|(_, binding)| match found.kind {
                Kind::Direct => binding == key,
                Kind::Fanout => true,
                Kind::Topic => topic_matches(binding, key),
            })
            .map(|(queue, _)| queue.clone())
            .filter(|queue| self.queues.contains_key(queue))
            .collect();
        // A message reaches a queue once, however many bindings match.
        queues.sort();
        queues.dedup();
        Some(queues)
    }

    /// Removes a queue and every binding to it; its consumers are returned
    /// for the caller to cancel.
    pub(crate) fn delete_queue(&mut self, name: &str) -> Option<Queue> {
        let queue = self.queues.remove(name)?;
        for exchange in self.exchanges.values_mut() {
            exchange.bindings.retain(|(bound, _)| bound != name);
        }
        Some(queue)
    }
}

/// AMQP topic matching: words separated by dots, `*` matches one word,
/// `#` zero or more.
pub(crate) fn topic_matches(pattern: &str, key: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = key.split('.').collect();
    matches_words(&pattern, &key)
}

fn matches_words(pattern: &[&str], key: &[&str]) -> bool {
    match (pattern.split_first(), key.split_first()) {
        (None, None) => true,
        (Some((&"#", rest)), _) => {
            matches_words(rest, key)
                || key
                    .split_first()
                    .is_some_and(|(_, key_rest)| matches_words(pattern, key_rest))
        }
        (Some((word, rest)), Some((first, key_rest))) => {
            (*word == "*" || word == first) && matches_words(rest, key_rest)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::topic_matches;

    #[test]
    fn topics() {
        assert!(topic_matches("a.*", "a.b"));
        assert!(!topic_matches("a.*", "a.b.c"));
        assert!(topic_matches("#", "a.b.c"));
        assert!(topic_matches("a.#", "a"));
        assert!(topic_matches("*.x", "b.x"));
        assert!(!topic_matches("b", "b.x"));
    }
}
