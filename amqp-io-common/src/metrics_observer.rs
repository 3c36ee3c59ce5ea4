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
//! | `rabbitmq.client.publish.confirm.duration` | histogram, s | from the core taking a publish to its confirm (`error.type` `nack`, or the channel's failure) |
//! | `rabbitmq.client.publish.confirms` | counter | broker acks and nacks (`rabbitmq.confirm.outcome`), `multiple` counted exactly |
//! | `rabbitmq.client.publish.returned` | counter | returned messages |
//! | `rabbitmq.client.settled.messages` | counter | `messaging.operation.name` `ack`/`nack`/`reject`, messages |
//! | `rabbitmq.client.io` | counter, By | `network.io.direction` `transmit`/`receive` |
//! | `rabbitmq.client.frames` | counter | the same directions |
//! | `rabbitmq.client.publish.unconfirmed`, `rabbitmq.client.deliveries.unsettled`, `rabbitmq.client.connections`, `rabbitmq.client.channels`, `rabbitmq.client.consumers` | gauges | the connection's state |
//! | `rabbitmq.client.recoveries` | counter | each recovery that brought the connection back |
//! | `rabbitmq.client.connection.closures` | counter | each end (`error.type`) |
//! | `rabbitmq.client.connection.blocked.duration` | histogram, s | blocked to unblocked |
//!
//! Every metric carries `messaging.system`, `server.address` and
//! `server.port`, the operation's name and type where semconv has one.
//! Never a routing key, message id, delivery tag or consumer tag: their
//! cardinality is one series per message or entity. `messaging.destination.name`
//! is off by default too ([`MetricDestination`]). The handles of the
//! per-message metrics are made once per observer, so recording one costs
//! no key hashing or allocation.
//!
//! The `metrics` facade leaves histogram buckets to the exporter: give
//! the duration histograms semconv's [`DURATION_BUCKETS`] (with
//! `metrics-exporter-prometheus`, `set_buckets_for_metric`).
//!
//! ```
//! use amqp_io_common::metrics_observer::MetricsObserver;
//! use amqp_io_common::ConnectOptions;
//!
//! let mut options = ConnectOptions::from_url("amqp://guest:guest@127.0.0.1:5672/%2f")?;
//! options.observer = Some(MetricsObserver::for_options(&options));
//! # Ok::<(), amqp_io_common::Error>(())
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use amqp_proto::ConfirmOutcome;

use metrics::{Counter, Gauge, Histogram, Label, Unit};

use crate::map::Map;
use crate::telemetry::{
    connection_error_type, error_type, ConfirmInfo, ConnectionEvent, DeliveryInfo, Observer,
    PublishInfo, SettleInfo,
};

/// Extra labels of one counter: static keys and values.
type Labels = &'static [(&'static str, &'static str)];

/// The bucket boundaries, in seconds, the semantic conventions give the
/// messaging duration histograms.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Whether the per-message metrics carry `messaging.destination.name`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricDestination {
    /// No destination (the default): one series per operation, however
    /// many exchanges and queues the application uses.
    #[default]
    Off,
    /// The exchange of a publish (`amq.default` for the default one) and
    /// the queue of a delivery, never the routing key: for applications
    /// with a small, fixed set of them.
    ExchangeOrQueue,
}

/// An [`Observer`] that records the semconv messaging metrics through the
/// `metrics` facade; see the module docs.
pub struct MetricsObserver {
    labels: Vec<Label>,
    destination: MetricDestination,
    publish_duration: Histogram,
    sent: Counter,
    consumed: Counter,
    process_duration: Histogram,
    /// By outcome: ack, nack, failed.
    confirm_duration: [Histogram; 3],
    /// When the core took each publish still awaiting its confirm, by
    /// channel and sequence: bounded by what the core keeps unconfirmed,
    /// since every sequence gets exactly one confirm call.
    unconfirmed_since: Mutex<Map<(u16, u64), Instant>>,
    /// The last counters seen, to add only what changed since.
    last: Mutex<amqp_proto::Stats>,
    blocked_since: Mutex<Option<Instant>>,
    /// Whether this connection counts in `rabbitmq.client.connections`.
    open: AtomicBool,
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
        Self::with_destination(server_address, server_port, MetricDestination::Off)
    }

    /// [`new`](Self::new), with the destination as `destination` says.
    #[must_use]
    pub fn with_destination(
        server_address: &str,
        server_port: u16,
        destination: MetricDestination,
    ) -> Arc<Self> {
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
        let confirming = |outcome: Option<&'static str>| {
            let mut labels = with(&[
                ("messaging.operation.name", "publish"),
                ("messaging.operation.type", "send"),
            ]);
            if let Some(outcome) = outcome {
                labels.push(Label::new("error.type", outcome));
            }
            metrics::histogram!("rabbitmq.client.publish.confirm.duration", labels)
        };
        Arc::new(Self {
            confirm_duration: [
                confirming(None),
                confirming(Some("nack")),
                confirming(Some("closed")),
            ],
            unconfirmed_since: Mutex::new(Map::default()),
            destination,
            open: AtomicBool::new(false),
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

    /// An observer for the connection `options` opens, labelled with its
    /// first address: a cluster connection keeps one label set when it
    /// fails over to another node, so its series do not split.
    #[must_use]
    pub fn for_options(options: &crate::ConnectOptions) -> Arc<Self> {
        match options.addresses.first() {
            Some(address) => Self::new(&address.host, address.port),
            None => Self::new("", 0),
        }
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
        if let (None, Some(sequence)) = (publish.error, publish.sequence) {
            self.unconfirmed_since
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert((publish.channel, sequence), Instant::now());
        }
        if self.destination == MetricDestination::ExchangeOrQueue {
            let exchange = publish.exchange.to_string_lossy();
            let exchange = if exchange.is_empty() {
                crate::telemetry::semconv::DEFAULT_EXCHANGE.into()
            } else {
                exchange.into_owned()
            };
            let mut labels = self.labels_with(&[
                ("messaging.operation.name", "publish"),
                ("messaging.operation.type", "send"),
            ]);
            labels.push(Label::new("messaging.destination.name", exchange));
            if let Some(error) = publish.error {
                labels.push(Label::new("error.type", error_type(error)));
            }
            metrics::histogram!("messaging.client.operation.duration", labels.clone())
                .record(publish.duration.as_secs_f64());
            metrics::counter!("messaging.client.sent.messages", labels).increment(1);
            return;
        }
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

    fn on_delivery(&self, delivery: &DeliveryInfo<'_>) {
        if self.destination == MetricDestination::ExchangeOrQueue && !delivery.queue.is_empty() {
            let mut labels = self.labels_with(&[
                ("messaging.operation.name", "process"),
                ("messaging.operation.type", "process"),
            ]);
            labels.push(Label::new(
                "messaging.destination.name",
                delivery.queue.to_owned(),
            ));
            metrics::counter!("messaging.client.consumed.messages", labels).increment(1);
            return;
        }
        self.consumed.increment(1);
    }

    fn on_confirm(&self, confirm: &ConfirmInfo<'_>) {
        let since = self
            .unconfirmed_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(confirm.channel, confirm.sequence));
        let Some(since) = since else {
            return;
        };
        let histogram = match confirm.outcome {
            ConfirmOutcome::Ack => &self.confirm_duration[0],
            ConfirmOutcome::Nack => &self.confirm_duration[1],
            ConfirmOutcome::Failed(_) => &self.confirm_duration[2],
        };
        histogram.record(since.elapsed().as_secs_f64());
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
            ConnectionEvent::Opened if !self.open.swap(true, Ordering::Relaxed) => {
                metrics::gauge!("rabbitmq.client.connections", self.labels.clone()).increment(1.0);
            }
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
                    if self.open.swap(false, Ordering::Relaxed) {
                        metrics::gauge!("rabbitmq.client.connections", self.labels.clone())
                            .decrement(1.0);
                    }
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
        let counters: [(&'static str, Labels, u64); 10] = [
            (
                "rabbitmq.client.recoveries",
                &[],
                delta(stats.recoveries, last.recoveries),
            ),
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
    metrics::describe_histogram!(
        "rabbitmq.client.publish.confirm.duration",
        Unit::Seconds,
        "Time from a publish to its confirm"
    );
    metrics::describe_gauge!("rabbitmq.client.connections", "Open connections");
    metrics::describe_counter!(
        "rabbitmq.client.recoveries",
        "Recoveries that brought a connection back"
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

#[cfg(test)]
mod tests {
    use super::*;
    use amqp_proto::codec::ShortString;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    fn publish_info<'a>(
        exchange: &'a ShortString,
        routing_key: &'a ShortString,
    ) -> PublishInfo<'a> {
        PublishInfo {
            channel: 1,
            exchange,
            routing_key,
            body_size: 1,
            sequence: Some(1),
            duration: std::time::Duration::from_millis(1),
            error: None,
        }
    }

    /// Every (name, labels) with samples, as text.
    fn series(recorder: &DebuggingRecorder) -> Vec<String> {
        let mut all: Vec<String> = recorder
            .snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(.., value)| match value {
                DebugValue::Counter(n) => *n > 0,
                DebugValue::Histogram(values) => !values.is_empty(),
                DebugValue::Gauge(_) => true,
            })
            .map(|(key, ..)| {
                let labels: Vec<String> = key
                    .key()
                    .labels()
                    .filter(|label| {
                        !["messaging.system", "server.address", "server.port"]
                            .contains(&label.key())
                    })
                    .map(|label| format!("{}={}", label.key(), label.value()))
                    .collect();
                format!("{} {}", key.key().name(), labels.join(","))
            })
            .collect();
        all.sort();
        all
    }

    #[test]
    fn the_destination_is_the_exchange_or_queue_when_asked_and_never_the_key() {
        let recorder = DebuggingRecorder::new();
        metrics::with_local_recorder(&recorder, || {
            let observer = MetricsObserver::with_destination(
                "broker",
                5672,
                MetricDestination::ExchangeOrQueue,
            );
            let (default, orders, key) = ("".into(), "orders".into(), "key-1".into());
            observer.on_publish(&publish_info(&default, &key));
            observer.on_publish(&publish_info(&orders, &key));
        });
        let sends: Vec<String> = series(&recorder)
            .into_iter()
            .filter(|line| line.starts_with("messaging.client.sent.messages"))
            .collect();
        assert_eq!(
            sends,
            [
                "messaging.client.sent.messages messaging.operation.name=publish,messaging.operation.type=send,messaging.destination.name=amq.default",
                "messaging.client.sent.messages messaging.operation.name=publish,messaging.operation.type=send,messaging.destination.name=orders",
            ]
        );
    }

    #[test]
    fn a_confirm_is_timed_from_its_publish_by_outcome_once() {
        let recorder = DebuggingRecorder::new();
        metrics::with_local_recorder(&recorder, || {
            let observer = MetricsObserver::new("broker", 5672);
            let (exchange, key) = ("".into(), "q".into());
            observer.on_publish(&publish_info(&exchange, &key));
            let nack = ConfirmOutcome::Nack;
            let confirm = ConfirmInfo {
                channel: 1,
                sequence: 1,
                outcome: &nack,
            };
            observer.on_confirm(&confirm);
            // A second confirm of the same sequence finds nothing to time.
            observer.on_confirm(&confirm);
            assert!(observer
                .unconfirmed_since
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty());
        });
        let confirms: Vec<String> = series(&recorder)
            .into_iter()
            .filter(|line| line.starts_with("rabbitmq.client.publish.confirm.duration"))
            .collect();
        assert_eq!(
            confirms,
            ["rabbitmq.client.publish.confirm.duration messaging.operation.name=publish,messaging.operation.type=send,error.type=nack"]
        );
    }
}
