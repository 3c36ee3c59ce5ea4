//! What both adapters report while recovering a connection, and the small
//! pieces of reconnection they share.

pub use amqp_proto::recovery::RecoveryEvent;

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
