//! What both adapters report while recovering a connection, and the small
//! pieces of reconnection they share.

use std::time::Duration;

use amqp_proto::codec::ShortString;
use amqp_proto::recovery::RecoveryFailure;
use amqp_proto::ConnectionError;

/// A step of automatic recovery, given to the application's recovery
/// handler (`on_recovery` on either adapter's connection).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RecoveryEvent {
    /// The connection failed; calls fail until it is recovered, and every
    /// publish that was unconfirmed has been reported failed.
    Started {
        /// Why the connection failed.
        error: ConnectionError,
    },
    /// An attempt to connect failed; the next follows after `retry_in`.
    AttemptFailed {
        /// Attempts made so far.
        attempt: u32,
        /// Why it failed.
        error: String,
        /// The wait before the next attempt.
        retry_in: Duration,
    },
    /// A new connection is open and declared everything again; channels,
    /// consumers and publishing work as before.
    Recovered {
        /// Server-named queues, each with its old and new name.
        renamed_queues: Vec<(ShortString, ShortString)>,
        /// Declarations the server refused.
        failures: Vec<RecoveryFailure>,
    },
    /// Recovery stopped: the attempts ran out, or the new connection was
    /// refused for a reason another attempt would repeat. The connection is
    /// closed with this error.
    GaveUp {
        /// The last failure.
        error: ConnectionError,
    },
}

/// A handler for [`RecoveryEvent`]s; it runs on the adapter's IO thread or
/// task, so it should return quickly.
pub type RecoveryHandler = Box<dyn FnMut(&RecoveryEvent) + Send>;

/// A random number for [`Backoff::delay`](amqp_proto::Backoff::delay)'s
/// jitter, from the standard library's per-process random hasher keys.
#[must_use]
pub fn jitter_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}
