//! The one error type of the blocking adapter.

use std::time::Duration;

use amqp_proto::uri::UriError;
use amqp_proto::{CloseReason, ConnectionError, DecodeError, Failure, UsageError};

/// Why a call failed.
///
/// Every blocking call ends in one of: its result, [`Error::Timeout`], the
/// close of its channel ([`Error::ChannelClosed`], with the server's reply
/// code and text) or the end of the connection
/// ([`Error::ConnectionClosed`]). Nothing waits forever.
///
/// ```
/// use amqp_io_common::Error;
/// use amqp_proto::ConnectionError;
///
/// // What a passive queue.declare through either adapter may end in.
/// fn explain(result: Result<u32, Error>) -> String {
///     match result {
///         Ok(messages) => format!("{messages} messages"),
///         Err(Error::ChannelClosed(reason)) if reason.code.0 == 404 => "no such queue".into(),
///         Err(Error::ConnectionClosed(ConnectionError::HeartbeatTimeout)) => "broker gone".into(),
///         Err(Error::Timeout { operation, .. }) => format!("{operation} timed out"),
///         Err(other) => other.to_string(),
///     }
/// }
/// assert_eq!(explain(Ok(3)), "3 messages");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL could not be parsed.
    #[error("invalid AMQP URL: {0}")]
    Uri(#[from] UriError),
    /// No TCP (or TLS) connection could be made.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The address tried last.
        address: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// TLS could not be set up: a certificate or key file that cannot be
    /// read, or a server name that is not valid.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The call did not complete in time. The connection and channel stay
    /// usable; a reply that arrives later is discarded.
    #[error("{operation} did not complete within {timeout:?}")]
    Timeout {
        /// What was being waited for.
        operation: &'static str,
        /// The time allowed.
        timeout: Duration,
    },
    /// The channel closed (the server's reply code and text, or this side's
    /// close).
    #[error("channel {0}")]
    ChannelClosed(CloseReason),
    /// The connection ended (closed by either side, a protocol violation, a
    /// missed heartbeat, a refused login, or the socket failing).
    #[error(transparent)]
    ConnectionClosed(ConnectionError),
    /// The request is not valid in the connection's or channel's state.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// The broker refused a publish (`basic.nack`); for a batch wait, how
    /// many of the batch it refused.
    #[error("the broker refused {0} publish(es) with basic.nack")]
    Nacked(u64),
    /// The core handed back a reply that does not answer the request. The
    /// core matches replies to requests itself, so this means a bug here.
    #[error("{operation} was answered with {reply}")]
    UnexpectedReply {
        /// The request.
        operation: &'static str,
        /// What came back.
        reply: String,
    },
    /// The server cancelled the consumer (its queue was deleted, or it
    /// failed over to another node): it receives nothing more. Consume
    /// again (from a new queue) if the work goes on.
    #[error("consumer {0:?} was cancelled by the server")]
    ConsumerCancelled(String),
    /// The application cancelled the consumer itself (`basic.cancel`,
    /// through `Channel::basic_cancel` or `Consumer::cancel`), and every
    /// delivery received before was taken: the consumer's normal end,
    /// reported the same way by both adapters. Nothing to do, but stop
    /// reading.
    #[error("consumer {0:?} was cancelled by the application")]
    ConsumerCancelledByApplication(String),
    /// A `basic.get` was answered with a message that breaks a per-message
    /// limit (headers nested too deeply, a body over the configured
    /// maximum); the core dropped it and, unless fetched with `no_ack`,
    /// rejected it without requeueing. The channel goes on.
    #[error("the message was refused: {0}")]
    MessageRefused(DecodeError),
    /// A connection to several addresses could not be opened on any of
    /// them; each attempt, in the order made, with why it failed. (With one
    /// address, its own error is returned.)
    #[error("no address could be connected to: {}", Attempts(.0))]
    NoAddressConnected(Vec<AddressFailure>),
    /// The options name no address to connect to.
    #[error("no address to connect to")]
    NoAddress,
    /// The URLs of a cluster mix `amqp://` and `amqps://`; one connection
    /// has one TLS setting.
    #[error("the URLs mix amqp:// and amqps://")]
    MixedSchemes,
}

/// One address a connection failed to open on, and why.
#[derive(Debug)]
#[non_exhaustive]
pub struct AddressFailure {
    /// `host:port`.
    pub address: String,
    /// What went wrong there.
    pub error: Box<Error>,
}

/// The failures of [`Error::NoAddressConnected`], joined for its message.
struct Attempts<'a>(&'a [AddressFailure]);

impl std::fmt::Display for Attempts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, failure) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", failure.address, failure.error)?;
        }
        Ok(())
    }
}

impl Error {
    /// True when the broker closed the channel because a consumer on it
    /// held a delivery unacknowledged past the broker's consumer timeout
    /// (406 "delivery acknowledgement on channel N timed out"; see
    /// [`CloseReason::is_consumer_timeout`]): a consumer's `recv` and
    /// every call on the channel end with this. With automatic recovery
    /// (`ConnectOptions::recovery`) the channel is reopened with its
    /// consumers instead, the broker redelivers what was unacknowledged,
    /// and the recovery handler hears of it
    /// ([`RecoveryEvent::ChannelRecovering`](amqp_proto::recovery::RecoveryEvent::ChannelRecovering)).
    ///
    /// ```
    /// use amqp_io_common::Error;
    ///
    /// fn explain(error: &Error) -> &'static str {
    ///     if error.is_consumer_timeout() {
    ///         "a delivery was not acknowledged within the broker's consumer_timeout"
    ///     } else {
    ///         "something else"
    ///     }
    /// }
    /// # let _ = explain;
    /// ```
    #[must_use]
    pub fn is_consumer_timeout(&self) -> bool {
        matches!(self, Self::ChannelClosed(reason) if reason.is_consumer_timeout())
    }

    /// Why `operation`, waited for with `timeout`, failed: a
    /// [`Failure::TimedOut`] becomes [`Error::Timeout`] naming both.
    #[must_use]
    pub fn from_request_failure(
        failure: Failure,
        operation: &'static str,
        timeout: std::time::Duration,
    ) -> Self {
        match failure {
            Failure::TimedOut => Self::Timeout { operation, timeout },
            other => other.into(),
        }
    }
}

/// A failure without the request it belongs to: a
/// [`Failure::TimedOut`] becomes an [`Error::Timeout`] of a "request" whose
/// timeout is not known here (zero); the adapters convert request failures
/// with [`Error::from_request_failure`], which names both.
impl From<Failure> for Error {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Channel(reason) => Self::ChannelClosed(reason),
            Failure::Connection(error) => Self::ConnectionClosed(error),
            Failure::MessageRefused(error) => Self::MessageRefused(error),
            Failure::TimedOut => Self::Timeout {
                operation: "request",
                timeout: std::time::Duration::ZERO,
            },
        }
    }
}

/// The result of the adapter's calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;
