//! The core's `tracing` events (feature `tracing`): frames and heartbeats
//! at TRACE, and a server's protocol violation at WARN once per
//! connection, seen by a minimal subscriber that counts them.
#![cfg(feature = "tracing")]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amqp_proto::spec;
use amqp_proto::Config;
use support::Peer;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Keeps the target and level of every event (shared with the test).
#[derive(Default, Clone)]
struct Counter {
    events: Arc<Mutex<Vec<(String, Level)>>>,
    next_id: Arc<AtomicU64>,
}

impl Counter {
    fn count(&self, target: &str, level: Level) -> usize {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|(seen, seen_level)| seen == target && *seen_level == level)
            .count()
    }
}

impl Subscriber for Counter {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        self.events
            .lock()
            .unwrap()
            .push((metadata.target().to_owned(), *metadata.level()));
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

#[test]
fn frames_heartbeats_and_one_warning_per_violating_connection() {
    let counter = Counter::default();
    tracing::subscriber::with_default(counter.clone(), || {
        let mut peer = Peer::new(Config::default());
        peer.handshake(10);
        // start, tune, open-ok in; start-ok, tune-ok, open out.
        assert!(counter.count("amqp::frames", Level::TRACE) >= 6);
        peer.advance(Duration::from_secs(6));
        assert!(counter.count("amqp::heartbeat", Level::TRACE) >= 1);
        assert_eq!(counter.count("amqp::protocol", Level::WARN), 0);
        // A delivery on a channel that was never opened makes the core
        // close the connection; a frame of no known type after it is a
        // second violation while it closes, and warns no more.
        peer.send(
            7,
            spec::BasicDeliver {
                consumer_tag: "c".into(),
                delivery_tag: 1,
                ..Default::default()
            },
        );
        peer.feed(&[9, 0, 0, 0, 0, 0, 0, 0xCE]);
        assert_eq!(counter.count("amqp::protocol", Level::WARN), 1);
        assert_eq!(counter.count("amqp::frames", Level::ERROR), 0);
    });
}
