//! An async AMQP 0-9-1 client for tokio over [`amqp_proto`].
//!
//! All protocol behaviour lives in the sans-IO core; this crate spawns one
//! driver task per connection that owns the socket, and gives out handles
//! ([`Connection`], [`Channel`]) that are `Clone + Send + Sync`, consumers
//! that are [`Stream`](futures_core::Stream)s, and a future per confirmed
//! publish.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use amqp_io_tokio::Connection;
//! use amqp_proto::codec::BasicProperties;
//! use amqp_proto::spec::{BasicConsume, BasicPublish, BasicQos, QueueDeclare};
//!
//! # async fn demo() -> amqp_io_tokio::Result<()> {
//! let connection = Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
//! let channel = connection.channel().await?;
//! let queue = channel
//!     .queue_declare(QueueDeclare { exclusive: true, ..Default::default() })
//!     .await?
//!     .queue;
//!
//! // Publish with confirms: many in flight, each with its own future.
//! channel.confirm_select().await?;
//! let publish = BasicPublish { routing_key: queue.clone(), ..Default::default() };
//! let mut confirmations = Vec::new();
//! for n in 0..100 {
//!     let body = format!("job {n}");
//!     confirmations.push(channel.publish(&publish, &BasicProperties::default(), body).await?);
//! }
//! for confirmation in confirmations {
//!     confirmation.await?;
//! }
//!
//! // Consume them as a stream, acknowledging each.
//! channel.basic_qos(BasicQos { prefetch_count: 50, ..Default::default() }).await?;
//! let mut consumer = channel.basic_consume(BasicConsume { queue, ..Default::default() }).await?;
//! for _ in 0..100 {
//!     let delivery = consumer.recv().await.expect("a delivery")?;
//!     delivery.ack()?;
//! }
//! connection.close().await?;
//! # Ok(()) }
//! ```
//!
//! # Timeouts, errors, cancellation
//!
//! Every call returns its result, [`Error::Timeout`] after the channel's
//! timeout, the channel's close with the server's reply code and text
//! ([`Error::ChannelClosed`]), or the connection's end
//! ([`Error::ConnectionClosed`]). Every future may be dropped at any await
//! point: the connection and channel stay usable and no confirm is lost
//! (see [`Channel`] for what happens to a reply that comes after).
//!
//! # Features
//!
//! - `tracing` (default): spans and connection events under the
//!   `amqp::*` targets ([`telemetry`]).
//! - `metrics`: `metrics_observer::MetricsObserver`, the OpenTelemetry
//!   messaging metrics through the `metrics` facade.
//! - `opentelemetry`: trace context carried in message headers through
//!   OpenTelemetry's propagator (the `opentelemetry` module).
//! - `tls`: `amqps://` through rustls.
//! - `kombu` (off by default): kombu/celery support, the `pidbox`
//!   mailbox (what `celery inspect` and `celery control` speak), `rpc`
//!   over RabbitMQ's direct reply-to, and `celery` tasks both ways (a
//!   client of Celery workers, a worker for Celery clients). It brings
//!   `serde`, `serde_json` and `uuid`; a plain client pulls none of them.
#![forbid(unsafe_code)]

#[cfg(feature = "kombu")]
pub mod celery;
mod channel;
mod connection;
mod consumer;
mod driver;
#[cfg(feature = "kombu")]
pub mod pidbox;
mod recovery;
#[cfg(feature = "kombu")]
pub mod rpc;
mod state;

pub use channel::{Channel, Confirmation};
pub use connection::Connection;
pub use consumer::{Consumer, Delivery, Returns};

#[cfg(feature = "metrics")]
pub use amqp_io_common::metrics_observer;
#[cfg(feature = "opentelemetry")]
pub use amqp_io_common::opentelemetry;
pub use amqp_io_common::recovery::RecoveryEvent;
pub use amqp_io_common::telemetry;
#[cfg(feature = "tls")]
pub use amqp_io_common::TlsSettings;
pub use amqp_io_common::{
    Address, AddressFailure, AddressOrder, ConnectOptions, Error, Result, SaslResponder,
};
pub use amqp_proto::Backoff;
pub use amqp_proto::{CloseReason, Config, ConnectionError, GetMessage, Returned, SaslMechanism};
