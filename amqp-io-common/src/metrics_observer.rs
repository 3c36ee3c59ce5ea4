//! The OpenTelemetry messaging metrics (semantic conventions v1.44.0, and
//! their RabbitMQ page) recorded through the `metrics` facade (feature
//! `metrics`), by an [`Observer`] the application installs with
//! [`ConnectOptions::observer`](crate::ConnectOptions::observer). Any
//! `metrics` 0.24 exporter (Prometheus, OpenTelemetry, StatsD) then
//! exports them.
//!
//! | metric | kind, unit | from |
//! |---|---|---|
//! | `messaging.client.operation.duration` | histogram, s | each publish, from the call until the core took it |
//! | `messaging.client.sent.messages` | counter | each publish attempt (`error.type` when it failed) |
//! | `messaging.client.consumed.messages` | counter | each delivery handed to the application |
//! | `messaging.process.duration` | histogram, s | hand-off to settlement |
//! | `rabbitmq.client.publish.confirms` | counter | broker acks and nacks (`rabbitmq.confirm.outcome`), `multiple` counted exactly |
//! | `rabbitmq.client.publish.returned` | counter | returned messages |
//! | `rabbitmq.client.settled.messages` | counter | `messaging.operation.name` `ack`/`nack`/`reject`, messages |
//! | `rabbitmq.client.io` | counter, By | `network.io.direction` `transmit`/`receive` |
//! | `rabbitmq.client.frames` | counter | the same directions |
//! | `rabbitmq.client.publish.unconfirmed`, `rabbitmq.client.deliveries.unsettled`, `rabbitmq.client.channels`, `rabbitmq.client.consumers` | gauges | the connection's state |
//! | `rabbitmq.client.connection.closures` | counter | each end (`error.type`) |
//! | `rabbitmq.client.connection.blocked.duration` | histogram, s | blocked to unblocked |
//!
//! Every metric carries `messaging.system`, `server.address` and
//! `server.port`, the operation's name and type where semconv has one.
//! Never a routing key, message id, delivery tag or consumer tag: their
//! cardinality is one series per message or entity. The handles of the
//! per-message metrics are made once per observer, so recording one costs
//! no key hashing or allocation.
//!
//! ```
//! use amqp_io_common::metrics_observer::MetricsObserver;
//! use amqp_io_common::ConnectOptions;
//!
//! let mut options = ConnectOptions::from_url("amqp://guest:guest@127.0.0.1:5672/%2f")?;
//! options.observer = Some(MetricsObserver::for_options(&options));
//! # Ok::<(), amqp_io_common::Error>(())
//! ```

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use metrics::{Counter, Gauge, Histogram, Label, Unit};

use crate::telemetry::{
    connection_error_type, error_type, ConnectionEvent, DeliveryInfo, Observer, PublishInfo,
    SettleInfo,
};

/// Extra labels of one counter: static keys and values.
type Labels = &'static [(&'static str, &'static str)];

/// An [`Observer`] that records the semconv messaging metrics through the
/// `metrics` facade; see the module docs.
pub struct MetricsObserver {
    labels: Vec<Label>,
    publish_duration: Histogram,
    sent: Counter,
    consumed: Counter,
    process_duration: Histogram,
    /// The last counters seen, to add only what changed since.
    last: Mutex<amqp_proto::Stats>,
    blocked_since: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for MetricsObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsObserver")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl MetricsObserver {
    /// An observer for a connection to `server_address:server_port`,
    /// describing its metrics (units and help texts) to the recorder.
    #[must_use]
    pub fn new(server_address: &str, server_port: u16) -> Arc<Self> {
        describe();
        let labels = vec![
            Label::new("messaging.system", "rabbitmq"),
            Label::new("server.address", server_address.to_owned()),
            Label::new("server.port", server_port.to_string()),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut all = labels.clone();
            all.extend(extra.iter().map(|(key, value)| Label::new(*key, *value)));
            all
        };
        let publishing = with(&[
            ("messaging.operation.name", "publish"),
            ("messaging.operation.type", "send"),
        ]);
        let processing = with(&[
            ("messaging.operation.name", "process"),
            ("messaging.operation.type", "process"),
        ]);
        Arc::new(Self {
            publish_duration: metrics::histogram!(
                "messaging.client.operation.duration",
                publishing.clone()
            ),
            sent: metrics::counter!("messaging.client.sent.messages", publishing),
            consumed: metrics::counter!("messaging.client.consumed.messages", processing.clone()),
            process_duration: metrics::histogram!("messaging.process.duration", processing),
            labels,
            last: Mutex::new(amqp_proto::Stats::default()),
            blocked_since: Mutex::new(None),
        })
    }

    /// An observer for the connection `options` opens.
    #[must_use]
    pub fn for_options(options: &crate::ConnectOptions) -> Arc<Self> {
        Self::new(&options.host, options.port)
    }

    fn labels_with(&self, extra: &[(&'static str, &'static str)]) -> Vec<Label> {
        let mut all = self.labels.clone();
        all.extend(extra.iter().map(|(key, value)| Label::new(*key, *value)));
        all
    }

    fn counter(&self, name: &'static str, extra: &[(&'static str, &'static str)]) -> Counter {
        metrics::counter!(name, self.labels_with(extra))
    }

    fn gauge(&self, name: &'static str) -> Gauge {
        metrics::gauge!(name, self.labels.clone())
    }
}

impl Observer for MetricsObserver {
    fn on_publish(&self, publish: &PublishInfo<'_>) {
        self.publish_duration.record(publish.duration.as_secs_f64());
        match publish.error {
            None => self.sent.increment(1),
            Some(error) => self
                .counter(
                    "messaging.client.sent.messages",
                    &[
                        ("messaging.operation.name", "publish"),
                        ("messaging.operation.type", "send"),
                        ("error.type", error_type(error)),
                    ],
                )
                .increment(1),
        }
    }

    fn on_delivery(&self, _delivery: &DeliveryInfo<'_>) {
        self.consumed.increment(1);
    }

    fn on_settle(&self, settle: &SettleInfo) {
        self.process_duration
            .record(settle.processing.as_secs_f64());
    }

    fn on_connection(&self, event: &ConnectionEvent<'_>) {
        let mut blocked_since = self
            .blocked_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match event {
            ConnectionEvent::Blocked(_) => {
                blocked_since.get_or_insert_with(Instant::now);
            }
            ConnectionEvent::Unblocked | ConnectionEvent::Closed(_) => {
                if let Some(since) = blocked_since.take() {
                    metrics::histogram!(
                        "rabbitmq.client.connection.blocked.duration",
                        self.labels.clone()
                    )
                    .record(since.elapsed().as_secs_f64());
                }
                if let ConnectionEvent::Closed(error) = event {
                    self.counter(
                        "rabbitmq.client.connection.closures",
                        &[("error.type", connection_error_type(error))],
                    )
                    .increment(1);
                }
            }
            _ => {}
        }
    }

    fn on_stats(&self, stats: &amqp_proto::Stats) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let delta = |now: u64, before: u64| now.saturating_sub(before);
        let counters: [(&'static str, Labels, u64); 9] = [
            (
                "rabbitmq.client.publish.confirms",
                &[("rabbitmq.confirm.outcome", "ack")],
                delta(stats.confirms_acked, last.confirms_acked),
            ),
            (
                "rabbitmq.client.publish.confirms",
                &[("rabbitmq.confirm.outcome", "nack")],
                delta(stats.confirms_nacked, last.confirms_nacked),
            ),
            (
                "rabbitmq.client.publish.returned",
                &[],
                delta(stats.returned, last.returned),
            ),
            (
                "rabbitmq.client.settled.messages",
                &[("messaging.operation.name", "ack")],
                delta(stats.acked, last.acked),
            ),
            (
                "rabbitmq.client.settled.messages",
                &[("messaging.operation.name", "nack")],
                delta(stats.nacked, last.nacked),
            ),
            (
                "rabbitmq.client.settled.messages",
                &[("messaging.operation.name", "reject")],
                delta(stats.rejected, last.rejected),
            ),
            (
                "rabbitmq.client.io",
                &[("network.io.direction", "transmit")],
                delta(stats.bytes_sent, last.bytes_sent),
            ),
            (
                "rabbitmq.client.io",
                &[("network.io.direction", "receive")],
                delta(stats.bytes_received, last.bytes_received),
            ),
            (
                "rabbitmq.client.frames",
                &[("network.io.direction", "receive")],
                delta(stats.frames_received, last.frames_received),
            ),
        ];
        for (name, extra, added) in counters {
            if added > 0 {
                self.counter(name, extra).increment(added);
            }
        }
        let sent_frames = delta(stats.frames_sent, last.frames_sent);
        if sent_frames > 0 {
            self.counter(
                "rabbitmq.client.frames",
                &[("network.io.direction", "transmit")],
            )
            .increment(sent_frames);
        }
        #[allow(clippy::cast_precision_loss)] // gauges of counts far below 2^52
        {
            self.gauge("rabbitmq.client.publish.unconfirmed")
                .set(stats.unconfirmed as f64);
            self.gauge("rabbitmq.client.deliveries.unsettled")
                .set(stats.unsettled as f64);
            self.gauge("rabbitmq.client.channels")
                .set(f64::from(stats.channels_open));
            self.gauge("rabbitmq.client.consumers")
                .set(f64::from(stats.consumers));
        }
        *last = *stats;
    }
}

/// Units and help texts, given to whichever recorder is installed.
fn describe() {
    metrics::describe_histogram!(
        "messaging.client.operation.duration",
        Unit::Seconds,
        "Duration of a messaging operation initiated by the client"
    );
    metrics::describe_counter!(
        "messaging.client.sent.messages",
        "Messages the client attempted to publish"
    );
    metrics::describe_counter!(
        "messaging.client.consumed.messages",
        "Messages delivered to the application"
    );
    metrics::describe_histogram!(
        "messaging.process.duration",
        Unit::Seconds,
        "Time from a delivery's hand-off to its settlement"
    );
    metrics::describe_counter!(
        "rabbitmq.client.publish.confirms",
        "Publisher confirms received, by outcome"
    );
    metrics::describe_counter!("rabbitmq.client.publish.returned", "Messages returned");
    metrics::describe_counter!(
        "rabbitmq.client.settled.messages",
        "Deliveries acknowledged, nacked or rejected"
    );
    metrics::describe_counter!("rabbitmq.client.io", Unit::Bytes, "Bytes sent and received");
    metrics::describe_counter!("rabbitmq.client.frames", "Frames sent and received");
    metrics::describe_gauge!(
        "rabbitmq.client.publish.unconfirmed",
        "Publishes awaiting a confirm"
    );
    metrics::describe_gauge!(
        "rabbitmq.client.deliveries.unsettled",
        "Deliveries awaiting a settlement"
    );
    metrics::describe_gauge!("rabbitmq.client.channels", "Open channels");
    metrics::describe_gauge!("rabbitmq.client.consumers", "Active consumers");
    metrics::describe_counter!(
        "rabbitmq.client.connection.closures",
        "Connection ends, by error type"
    );
    metrics::describe_histogram!(
        "rabbitmq.client.connection.blocked.duration",
        Unit::Seconds,
        "Time the broker kept the connection blocked"
    );
}
