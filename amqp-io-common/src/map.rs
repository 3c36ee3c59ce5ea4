//! The hash map the adapters keep their bookkeeping in.
//!
//! Every delivery is sorted to its consumer by `(channel, consumer tag)`,
//! and every confirm and reply is matched to its waiter by id: std's
//! SipHash over a 30-byte RabbitMQ consumer tag cost more instructions
//! than the core's whole decode of a small delivery. foldhash is several
//! times cheaper and still seeded per process. Flooding resistance matters
//! little here: the keys are ids this side chose or consumers this side
//! registered, so a hostile server can add no keys, only look up misses.
//!
//! Not public API (hidden from the docs, no semver promise): only this
//! workspace's adapters use it, until it becomes private to this crate
//! with the shared `session` module (issue #14).

use std::collections::HashMap;

/// A `HashMap` with foldhash's seeded fast hasher.
pub(crate) type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
