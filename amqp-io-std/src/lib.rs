//! A blocking AMQP 0-9-1 client over [`amqp_proto`], for programs that
//! want plain threads and sockets.
//!
//! All protocol behaviour lives in the sans-IO core; this crate owns the
//! socket and the clock, turns the core's events into blocking calls with
//! timeouts, and dispatches consumers two ways: pulled, with
//! [`Channel::basic_consume`] and [`Consumer::recv_timeout`] (the names and
//! types of `amqp-io-tokio`, blocking), or the way kombu does, with
//! callbacks ([`Channel::basic_consume_with_callback`]) that
//! [`Connection::drain_events`] runs in the application's loop.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use amqp_io_std::{Connection, Error};
//! use amqp_proto::codec::BasicProperties;
//! use amqp_proto::spec::{BasicConsume, BasicPublish, QueueDeclare};
//!
//! let connection = Connection::open("amqp://guest:guest@127.0.0.1:5672/%2f")?;
//! let channel = connection.channel()?;
//! let queue = channel.queue_declare(QueueDeclare { exclusive: true, ..Default::default() })?.queue;
//!
//! // Publish with confirms.
//! channel.confirm_select()?;
//! let publish = BasicPublish { routing_key: queue.clone(), ..Default::default() };
//! for n in 0..10 {
//!     channel.publish(&publish, &BasicProperties::default(), format!("job {n}"))?;
//! }
//! channel.wait_for_confirms(Duration::from_secs(5))?;
//!
//! // Consume with a callback, acknowledging each message.
//! channel.basic_consume_with_callback(BasicConsume { queue, ..Default::default() }, |delivery| {
//!     println!("got {:?}", delivery.body());
//!     let _ = delivery.ack();
//! })?;
//! loop {
//!     match connection.drain_events(Duration::from_secs(1)) {
//!         Ok(_) => {}
//!         Err(Error::Timeout { .. }) => break, // quiet for a second: done
//!         Err(error) => return Err(error),
//!     }
//! }
//! connection.close()?;
//! # Ok::<(), Error>(())
//! ```
//!
//! # Errors and timeouts
//!
//! Every blocking call returns its result, [`Error::Timeout`], the close
//! of its channel with the server's reply code and text
//! ([`Error::ChannelClosed`]), or the end of the connection
//! ([`Error::ConnectionClosed`]). A call that timed out leaves the
//! connection usable: a reply that arrives later is discarded, and a
//! message or consumer it carried is given back to the broker.
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
#[cfg(feature = "kombu")]
pub mod pidbox;
mod recovery;
#[cfg(feature = "kombu")]
pub mod rpc;
mod shared;
#[cfg(feature = "tls")]
mod tls;
mod transport;

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
pub use channel::{Channel, Confirmation};
pub use connection::Connection;
pub use consumer::{Consumer, Delivery};

pub use amqp_proto::{CloseReason, Config, ConnectionError, GetMessage, Returned, SaslMechanism};
