//! What the AMQP 0-9-1 IO adapters over [`amqp_proto`] share: the options
//! a connection is opened with (from an `amqp://` or `amqps://` URL), the
//! TLS settings (the `tls` feature), the error type their calls return,
//! what recovery reports, and, with the `kombu` feature, kombu's
//! process mailbox (`pidbox`), direct reply-to RPC (`rpc`) and Celery
//! tasks (`celery`), all IO-free.
//!
//! Applications use these through `amqp-io-std` or `amqp-io-tokio`, which
//! re-export them; they live here so both adapters read a URL, configure
//! TLS and report failures the same way.
//!
//! ```
//! use std::time::Duration;
//! use amqp_io_common::ConnectOptions;
//!
//! let mut options = ConnectOptions::from_url("amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=15")?;
//! options.operation_timeout = Duration::from_secs(10);
//! assert_eq!(options.addresses[0].port, 5672);
//! assert_eq!(options.config.heartbeat, 15);
//! # Ok::<(), amqp_io_common::Error>(())
//! ```
//!
//! # Features
//!
//! - `tls`: rustls client settings from a URL's TLS options.
//! - `tracing`: spans and connection events for operators ([`telemetry`]);
//!   on by default in both adapters.
//! - `metrics` (off by default): [`metrics_observer::MetricsObserver`],
//!   the OpenTelemetry messaging metrics through the `metrics` facade.
//! - `opentelemetry` (off by default): trace context carried in message
//!   headers through OpenTelemetry's propagator (module `opentelemetry`).
//! - `kombu` (off by default): the `pidbox`, `rpc` and `celery` modules,
//!   which bring `serde`, `serde_json` and `uuid`; a plain client pulls
//!   none of them.
#![forbid(unsafe_code)]

#[cfg(feature = "kombu")]
pub mod celery;
#[cfg(feature = "kombu")]
mod celery_api;
mod channel_api;
mod connection_api;
mod consumer_api;
pub mod delivery;
mod error;
pub mod failover;
mod ledger;
mod map;
#[cfg(feature = "metrics")]
pub mod metrics_observer;
#[cfg(feature = "opentelemetry")]
pub mod opentelemetry;
mod options;
#[cfg(feature = "kombu")]
pub mod pidbox;
#[cfg(feature = "kombu")]
mod pidbox_api;
pub mod recovery;
#[cfg(feature = "kombu")]
pub mod rpc;
#[cfg(feature = "kombu")]
mod rpc_api;
pub mod session;
pub mod telemetry;
#[cfg(all(test, feature = "kombu"))]
mod testing;
#[cfg(feature = "tls")]
mod tls;

pub use error::{AddressFailure, Error, Result};
pub use options::{Address, AddressOrder, ConnectOptions, SaslResponder};
#[cfg(feature = "tls")]
pub use tls::TlsSettings;
