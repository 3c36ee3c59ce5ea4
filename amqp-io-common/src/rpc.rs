//! Request/reply over RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to`):
//! the conventions both adapters' RPC clients and servers share.
//!
//! The client consumes the pseudo-queue `amq.rabbitmq.reply-to` with
//! `no_ack` *before* publishing (RabbitMQ refuses a publish naming it as
//! `reply_to` otherwise), publishes each request with `reply_to` set to it
//! and a fresh `correlation_id`, and matches replies by that id. A server
//! publishes its reply through the default exchange to the request's
//! `reply_to`, with the request's `correlation_id`.

use std::sync::atomic::{AtomicU64, Ordering};

use amqp_proto::codec::BasicProperties;
use amqp_proto::spec::BasicPublish;
use amqp_proto::Delivery;

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
