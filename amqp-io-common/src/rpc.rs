//! Request/reply over RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to`):
//! the conventions both adapters' RPC clients and servers share.
//!
//! The client consumes the pseudo-queue `amq.rabbitmq.reply-to` with
//! `no_ack` *before* publishing (RabbitMQ refuses a publish naming it as
//! `reply_to` otherwise), publishes each request with `reply_to` set to it
//! and a fresh `correlation_id`, and matches replies by that id. A server
//! publishes its reply through the default exchange to the request's
//! `reply_to`, with the request's `correlation_id`, and acknowledges the
//! request after.
//!
//! An adapter's client keeps its calls in [`Calls`], generic over how a
//! caller waiting for its reply is woken, consumes [`reply_consume`], and
//! publishes what [`Calls::start`] returns; a server consumes
//! [`request_consume`] and publishes what [`reply_to`] returns. The
//! adapter only moves the messages and waits.
//!
//! Requires the `kombu` feature.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use amqp_proto::codec::BasicProperties;
use amqp_proto::spec::{BasicConsume, BasicPublish};
use amqp_proto::Delivery;

use crate::map::Map;
use crate::Error;

/// The pseudo-queue RabbitMQ routes direct replies through.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Makes correlation ids unique to this process (a random prefix and a
/// counter).
#[derive(Debug)]
pub struct CorrelationIds {
    prefix: String,
    next: AtomicU64,
}

impl Default for CorrelationIds {
    fn default() -> Self {
        Self {
            prefix: uuid::Uuid::new_v4().simple().to_string(),
            next: AtomicU64::new(1),
        }
    }
}

impl CorrelationIds {
    /// A fresh id.
    pub fn next_id(&self) -> String {
        format!(
            "{}-{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// The properties of a request: `reply_to` the direct reply-to queue,
/// `correlation_id` the id, over what the caller set.
#[must_use]
pub fn request_properties(properties: BasicProperties, correlation_id: &str) -> BasicProperties {
    properties.reply_to(REPLY_TO).correlation_id(correlation_id)
}

/// Where the reply to `request` goes, and its properties carrying the
/// request's correlation id over `properties`; `None` when the request
/// names no `reply_to`.
#[must_use]
pub fn reply_to(
    request: &Delivery,
    properties: BasicProperties,
) -> Option<(BasicPublish, BasicProperties)> {
    let request_properties = request.properties();
    let reply_to = request_properties.reply_to.clone()?;
    let publish = BasicPublish {
        routing_key: reply_to,
        ..Default::default()
    };
    let properties = match &request_properties.correlation_id {
        Some(id) => properties.correlation_id(id.clone()),
        None => properties,
    };
    Some((publish, properties))
}

/// The correlation id of a reply, as text.
#[must_use]
pub fn correlation_id(reply: &Delivery) -> Option<String> {
    reply
        .properties()
        .correlation_id
        .as_ref()
        .map(|id| id.to_string_lossy().into_owned())
}

/// `basic.consume` of the direct reply-to pseudo-queue, `no_ack` as
/// RabbitMQ requires; a client issues it before its first request.
#[must_use]
pub fn reply_consume() -> BasicConsume {
    BasicConsume {
        queue: REPLY_TO.into(),
        no_ack: true,
        ..Default::default()
    }
}

/// `basic.consume` of a server's request queue: acknowledged, each request
/// once its reply is published.
#[must_use]
pub fn request_consume(queue: &str) -> BasicConsume {
    BasicConsume {
        queue: queue.into(),
        ..Default::default()
    }
}

/// The error of a call whose reply did not come within `timeout`.
#[must_use]
pub fn call_timed_out(timeout: Duration) -> Error {
    Error::Timeout {
        operation: "rpc call",
        timeout,
    }
}

/// A request to publish for a call [`Calls::start`] registered.
#[derive(Debug, Clone)]
pub struct Call {
    /// The call's correlation id: what its reply carries, and what
    /// [`Calls::finish`] forgets.
    pub id: String,
    /// Where the request goes.
    pub publish: BasicPublish,
    /// The caller's properties with `reply_to` and `correlation_id` set.
    pub properties: BasicProperties,
}

/// A client's calls in flight, each with what wakes its caller (`W`: a
/// slot the caller polls, a channel's sender, a waker): a fresh
/// correlation id for each, and each reply matched to its call by that id.
/// A reply that finds no call (it came after its call ended) is the
/// adapter's to discard.
#[derive(Debug)]
pub struct Calls<W> {
    ids: CorrelationIds,
    waiting: Map<String, W>,
}

impl<W> Default for Calls<W> {
    fn default() -> Self {
        Self {
            ids: CorrelationIds::default(),
            waiting: Map::default(),
        }
    }
}

impl<W> Calls<W> {
    /// Registers a call to `exchange` with `routing_key`, woken through
    /// `waiter`, and returns the request to publish for it.
    pub fn start(
        &mut self,
        waiter: W,
        exchange: &str,
        routing_key: &str,
        properties: BasicProperties,
    ) -> Call {
        let id = self.ids.next_id();
        self.waiting.insert(id.clone(), waiter);
        Call {
            publish: BasicPublish {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
                ..Default::default()
            },
            properties: request_properties(properties, &id),
            id,
        }
    }

    /// The waiter of the call `reply` answers, while that call is in
    /// flight.
    pub fn waiter(&mut self, reply: &Delivery) -> Option<&mut W> {
        self.waiting.get_mut(&correlation_id(reply)?)
    }

    /// The waiter of the call `id`, while it is in flight.
    pub fn waiter_of(&mut self, id: &str) -> Option<&mut W> {
        self.waiting.get_mut(id)
    }

    /// Forgets the call `id` (answered, timed out or abandoned) and gives
    /// back its waiter.
    pub fn finish(&mut self, id: &str) -> Option<W> {
        self.waiting.remove(id)
    }

    /// Forgets every call (the reply consumer ended), dropping their
    /// waiters.
    pub fn clear(&mut self) {
        self.waiting.clear();
    }

    /// How many calls are in flight.
    #[must_use]
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// True when no call is in flight.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(properties: BasicProperties) -> Delivery {
        crate::testing::delivery(properties, b"")
    }

    #[test]
    fn calls_match_replies_by_correlation_id_until_they_finish() {
        let mut calls = Calls::<Option<&str>>::default();
        let properties = BasicProperties::default().content_type("text/plain");
        let first = calls.start(None, "", "rpc.square", properties.clone());
        let second = calls.start(None, "x", "rpc.cube", properties);
        assert_ne!(first.id, second.id);
        assert_eq!(calls.len(), 2);
        assert_eq!(first.publish.routing_key.to_string(), "rpc.square");
        assert_eq!(second.publish.exchange.to_string(), "x");
        let sent = &first.properties;
        assert_eq!(
            sent.reply_to.as_ref().map(ToString::to_string).as_deref(),
            Some(REPLY_TO)
        );
        assert!(sent.content_type.is_some(), "the caller's properties stay");

        let reply = delivery(BasicProperties::default().correlation_id(first.id.as_str()));
        *calls.waiter(&reply).expect("in flight") = Some("answered");
        assert_eq!(
            calls.waiter_of(&first.id).and_then(Option::take),
            Some("answered")
        );
        assert_eq!(calls.finish(&first.id), Some(None));
        assert!(calls.waiter(&reply).is_none(), "a late reply finds no call");
        assert!(calls
            .waiter(&delivery(BasicProperties::default()))
            .is_none());
        calls.clear();
        assert!(calls.is_empty());
    }

    #[test]
    fn a_server_replies_to_reply_to_with_the_correlation_id() {
        let request = delivery(
            BasicProperties::default()
                .reply_to(REPLY_TO)
                .correlation_id("id-7"),
        );
        let (publish, properties) = reply_to(&request, BasicProperties::default()).unwrap();
        assert_eq!(publish.exchange.to_string(), "");
        assert_eq!(publish.routing_key.to_string(), REPLY_TO);
        assert_eq!(
            correlation_id(&delivery(properties)).as_deref(),
            Some("id-7")
        );
        assert!(reply_to(
            &delivery(BasicProperties::default()),
            BasicProperties::default()
        )
        .is_none());
        assert!(!request_consume("q").no_ack && reply_consume().no_ack);
    }
}
