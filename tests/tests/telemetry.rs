//! The adapters' spans and connection events (the `tracing` feature, on
//! by default), captured by an in-memory layer against the local
//! RabbitMQ: the same spans, with the same attributes at creation, from
//! the blocking and the tokio client, since both come from
//! `amqp_io_common::telemetry`.
//!
//! These tests need the broker and fail (never pass silently) without it.
// The async tests hold the serialising lock across awaits on purpose:
// each runs on its own current-thread runtime and test thread, and the
// lock exists to keep the other tests out for the whole test.
#![allow(clippy::await_holding_lock)]

use std::time::Duration;

use amqp_proto::codec::BasicProperties;
use amqp_proto::spec::{BasicConsume, BasicGet, BasicQos, QueueDeclare};
use amqp_tests::capture::{install, Captured, CapturedSpan};
use amqp_tests::{broker_unreachable, broker_url, passive_declare, publish_to, unique};
use tracing::Level;

const SHORT: Duration = Duration::from_secs(10);

/// One test at a time in this binary: `tracing` caches each callsite's
/// interest across threads, so a subscriber installed or dropped by one
/// test while another creates its first spans can leave those spans
/// unrecorded.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn field<'a>(span: &'a CapturedSpan, name: &str) -> &'a str {
    span.fields.get(name).map_or_else(
        || panic!("{} has no {name}: {span:?}", span.name),
        String::as_str,
    )
}

/// The attributes semconv requires of every message span, given when the
/// span was created.
fn assert_common_at_creation(span: &CapturedSpan, operation: &str, kind: &str) {
    assert_eq!(span.target, "amqp::messaging");
    let at_creation = |name: &str| span.at_creation.get(name).map(String::as_str);
    assert_eq!(
        at_creation("messaging.system"),
        Some("rabbitmq"),
        "{span:?}"
    );
    assert_eq!(at_creation("messaging.operation.name"), Some(operation));
    assert_eq!(at_creation("otel.kind"), Some(kind));
    assert_eq!(at_creation("server.address"), Some("127.0.0.1"));
    assert!(at_creation("server.port").is_some(), "{span:?}");
    assert!(at_creation("otel.name").is_some(), "{span:?}");
}

/// What both adapters must have reported for the scenario below.
fn check(captured: &Captured, queue: &str) {
    let publishes = captured.spans_named("publish");
    assert_eq!(publishes.len(), 3, "{publishes:?}");
    let first = &publishes[0];
    assert_common_at_creation(first, "publish", "producer");
    assert_eq!(first.at_creation["messaging.operation.type"], "send");
    assert_eq!(
        first.at_creation["messaging.destination.name"],
        format!("amq.default:{queue}")
    );
    assert_eq!(
        first.at_creation["messaging.rabbitmq.destination.routing_key"],
        queue
    );
    assert_eq!(first.at_creation["messaging.message.id"], "m-0");
    assert_eq!(first.at_creation["otel.name"], format!("publish {queue}"));
    assert_eq!(field(first, "rabbitmq.publish.sequence"), "1");
    assert!(publishes.iter().all(|span| span.closed));

    // Three were delivered (prefetch allows them all), two handed over:
    // no span for the one still buffered.
    let processes = captured.spans_named("process");
    assert_eq!(processes.len(), 2, "{processes:?}");
    let acked = &processes[0];
    assert_common_at_creation(acked, "process", "consumer");
    assert_eq!(
        acked.at_creation["messaging.destination.name"],
        format!("amq.default:{queue}:{queue}")
    );
    assert_eq!(
        acked.at_creation["messaging.rabbitmq.message.delivery_tag"],
        "1"
    );
    assert_eq!(acked.at_creation["otel.name"], format!("process {queue}"));
    assert_eq!(field(acked, "rabbitmq.settle"), "ack");
    assert!(acked.closed);
    let nacked = &processes[1];
    assert_eq!(field(nacked, "rabbitmq.settle"), "nack");
    assert_eq!(field(nacked, "rabbitmq.requeue"), "true");

    // Settle spans are off by default.
    assert!(captured.spans_named("settle").is_empty());

    let receives = captured.spans_named("receive");
    assert_eq!(receives.len(), 1, "{receives:?}");
    assert_common_at_creation(&receives[0], "receive", "client");
    assert!(receives[0]
        .fields
        .contains_key("messaging.rabbitmq.message.delivery_tag"));
    assert!(receives[0].closed);

    let events = captured.events();
    let named = |message: &str| {
        events
            .iter()
            .filter(|event| event.fields.get("message").map(String::as_str) == Some(message))
            .collect::<Vec<_>>()
    };
    let opened = named("connection.opened");
    assert_eq!(opened.len(), 1, "{events:?}");
    assert_eq!(opened[0].target, "amqp::connection");
    assert_eq!(opened[0].level, Level::INFO);
    // The passive declare of a missing queue: the server's 404 is worth
    // an operator's attention, once.
    let channel_closed = named("channel.closed");
    assert_eq!(channel_closed.len(), 1, "{events:?}");
    assert_eq!(channel_closed[0].level, Level::WARN);
    assert_eq!(channel_closed[0].fields["error.type"], "not-found");
    let closed = named("connection.closed");
    assert_eq!(closed.len(), 1, "{events:?}");
    assert_eq!(closed[0].level, Level::INFO);
    assert!(
        events.iter().all(|event| event.level != Level::ERROR),
        "{events:?}"
    );
    // No body or header value in any event.
    assert!(
        events
            .iter()
            .all(|event| !event.fields.values().any(|value| value.contains("body-"))),
        "{events:?}"
    );
}

fn properties(n: usize) -> BasicProperties {
    BasicProperties::default().message_id(format!("m-{n}"))
}

#[test]
fn the_blocking_client_reports_spans_and_connection_events() {
    let _serial = serial();
    let (captured, _guard) = install();
    let connection = amqp_io_std::Connection::open(&broker_url())
        .unwrap_or_else(|error| broker_unreachable(&error));
    let channel = connection.channel().unwrap();
    // Named: a server-named queue stays out of span names.
    let declare = QueueDeclare {
        queue: unique("telemetry").as_str().into(),
        exclusive: true,
        ..Default::default()
    };
    let queue = channel.queue_declare(declare).unwrap().queue.to_string();
    channel.confirm_select().unwrap();
    for n in 0..3 {
        let body = format!("body-{n}");
        channel
            .publish(&publish_to(&queue), &properties(n), body)
            .unwrap()
            .wait(SHORT)
            .unwrap();
    }
    channel
        .basic_qos(BasicQos {
            prefetch_count: 10,
            ..Default::default()
        })
        .unwrap();
    let consumer = channel
        .basic_consume(BasicConsume {
            queue: queue.as_str().into(),
            ..Default::default()
        })
        .unwrap();
    consumer.recv_timeout(SHORT).unwrap().ack().unwrap();
    consumer.recv_timeout(SHORT).unwrap().nack(true).unwrap();
    // What it holds goes back before the get below, on the same channel.
    consumer.cancel().unwrap();
    let get = BasicGet {
        queue: queue.as_str().into(),
        no_ack: true,
        ..Default::default()
    };
    assert!(channel.basic_get(get).unwrap().is_some());
    let probe = connection.channel().unwrap();
    assert!(probe
        .queue_declare(passive_declare("telemetry-missing"))
        .is_err());
    connection.close().unwrap();
    check(&captured, &queue);
}

#[tokio::test]
async fn the_tokio_client_reports_the_same_spans_and_events() {
    let _serial = serial();
    let (captured, _guard) = install();
    let connection = match amqp_io_tokio::Connection::connect(&broker_url()).await {
        Ok(connection) => connection,
        Err(error) => broker_unreachable(&error),
    };
    let channel = connection.channel().await.unwrap();
    // Named: a server-named queue stays out of span names.
    let declare = QueueDeclare {
        queue: unique("telemetry").as_str().into(),
        exclusive: true,
        ..Default::default()
    };
    let queue = channel
        .queue_declare(declare)
        .await
        .unwrap()
        .queue
        .to_string();
    channel.confirm_select().await.unwrap();
    for n in 0..3 {
        let body = format!("body-{n}");
        channel
            .publish(&publish_to(&queue), &properties(n), body)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    channel
        .basic_qos(BasicQos {
            prefetch_count: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(BasicConsume {
            queue: queue.as_str().into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let first = tokio::time::timeout(SHORT, consumer.recv()).await.unwrap();
    first.unwrap().unwrap().ack().unwrap();
    let second = tokio::time::timeout(SHORT, consumer.recv()).await.unwrap();
    second.unwrap().unwrap().nack(true).unwrap();
    // What it holds goes back before the get below, on the same channel.
    consumer.cancel().await.unwrap();
    let get = BasicGet {
        queue: queue.as_str().into(),
        no_ack: true,
        ..Default::default()
    };
    assert!(channel.basic_get(get).await.unwrap().is_some());
    let probe = connection.channel().await.unwrap();
    assert!(probe
        .queue_declare(passive_declare("telemetry-missing"))
        .await
        .is_err());
    connection.close().await.unwrap();
    check(&captured, &queue);
}

/// Writes a fixed context into publishes and keeps what deliveries carry.
#[derive(Default)]
struct Recorder {
    extracted: std::sync::Mutex<Vec<String>>,
}

const INJECTED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const USERS: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

impl amqp_io_common::telemetry::TraceContext for Recorder {
    fn inject(&self, _span: &tracing::Span, headers: &mut amqp_proto::propagation::HeadersMut<'_>) {
        headers.set(amqp_proto::propagation::TRACEPARENT, INJECTED);
    }

    fn extract(&self, _span: &tracing::Span, headers: &amqp_proto::propagation::Headers<'_>) {
        if let Some(value) = headers.get(amqp_proto::propagation::TRACEPARENT) {
            self.extracted.lock().unwrap().push(value.to_owned());
        }
    }
}

#[test]
fn trace_context_crosses_the_broker_and_a_users_traceparent_is_kept() {
    let _serial = serial();
    let recorder = std::sync::Arc::new(Recorder::default());
    let mut options = amqp_io_common::ConnectOptions::from_url(&broker_url()).unwrap();
    options.trace_context = Some(recorder.clone());
    let connection = amqp_io_std::Connection::open_with(options)
        .unwrap_or_else(|error| broker_unreachable(&error));
    let channel = connection.channel().unwrap();
    let declare = QueueDeclare {
        exclusive: true,
        ..Default::default()
    };
    let queue = channel.queue_declare(declare).unwrap().queue.to_string();
    let plain = BasicProperties::default();
    channel.publish(&publish_to(&queue), &plain, "a").unwrap();
    let mut headers = amqp_proto::codec::FieldTable::default();
    amqp_proto::propagation::HeadersMut(&mut headers)
        .set(amqp_proto::propagation::TRACEPARENT, USERS);
    let own = BasicProperties::default().headers(headers);
    channel.publish(&publish_to(&queue), &own, "b").unwrap();
    let consumer = channel
        .basic_consume(BasicConsume {
            queue: queue.as_str().into(),
            no_ack: true,
            ..Default::default()
        })
        .unwrap();
    for _ in 0..2 {
        consumer.recv_timeout(SHORT).unwrap();
    }
    connection.close().unwrap();
    assert_eq!(*recorder.extracted.lock().unwrap(), [INJECTED, USERS]);
}

#[test]
fn a_recovery_has_its_span_and_each_attempt_a_connect_span() {
    let _serial = serial();
    let (captured, _guard) = install();
    let proxy = amqp_tests::proxy::Proxy::start(&amqp_tests::broker_address())
        .unwrap_or_else(|error| broker_unreachable(&error));
    let url = format!("amqp://guest:guest@{}/%2f?heartbeat=2", proxy.address());
    let mut options = amqp_io_common::ConnectOptions::from_url(&url).unwrap();
    options.recovery = Some(amqp_proto::Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
        max_attempts: Some(40),
    });
    let connection = amqp_io_std::Connection::open_with(options).unwrap();
    let channel = connection.channel().unwrap();
    let declare = QueueDeclare {
        exclusive: true,
        ..Default::default()
    };
    let queue = channel.queue_declare(declare).unwrap().queue.to_string();
    channel
        .publish(&publish_to(&queue), &BasicProperties::default(), "before")
        .unwrap();
    proxy.cut();
    let deadline = std::time::Instant::now() + SHORT;
    while captured
        .spans_named("recover")
        .iter()
        .all(|span| !span.closed)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            captured.spans()
        );
        // Pumping the blocking client runs its recovery; failures while
        // it reconnects are expected.
        let _ = connection.drain_events(Duration::from_millis(50));
    }
    channel
        .publish(&publish_to(&queue), &BasicProperties::default(), "after")
        .unwrap();
    // The counters go on across the sockets.
    let stats = connection.stats();
    assert_eq!((stats.publishes, stats.recoveries), (2, 1), "{stats:?}");
    assert!(stats.bytes_sent > 0 && stats.frames_received > 0);
    connection.close().unwrap();

    let recovers = captured.spans_named("recover");
    assert_eq!(recovers.len(), 1, "{recovers:?}");
    assert_eq!(recovers[0].target, "amqp::connection");
    assert_eq!(recovers[0].at_creation["rabbitmq.recovery.cause"], "io");
    assert!(
        field(&recovers[0], "rabbitmq.recovery.attempts")
            .parse::<u32>()
            .unwrap()
            >= 1
    );
    assert!(
        !recovers[0].fields.contains_key("error.type"),
        "{recovers:?}"
    );
    let connects = captured.spans_named("connect");
    assert!(connects.len() >= 2, "{connects:?}");
    assert_eq!(
        connects[0].at_creation["rabbitmq.connection.recovery"],
        "false"
    );
    assert_eq!(connects[0].at_creation["network.protocol.version"], "0.9.1");
    let last = connects.last().unwrap();
    assert_eq!(last.at_creation["rabbitmq.connection.recovery"], "true");
    assert!(!last.fields.contains_key("error.type"), "{last:?}");
    assert!(connects.iter().all(|span| span.closed));
    let events = captured.events();
    let lost = events
        .iter()
        .find(|event| event.fields.get("message").map(String::as_str) == Some("connection.closed"))
        .unwrap();
    assert_eq!(lost.level, Level::WARN);
    assert!(events.iter().any(
        |event| event.fields.get("message").map(String::as_str) == Some("connection.recovered")
    ));
}

/// Writes down what the observer hears.
#[derive(Default)]
struct Observed {
    calls: std::sync::Mutex<Vec<String>>,
    last_stats: std::sync::Mutex<Option<amqp_proto::Stats>>,
}

impl amqp_io_common::telemetry::Observer for Observed {
    fn on_publish(&self, publish: &amqp_io_common::telemetry::PublishInfo<'_>) {
        let line = format!(
            "publish {} seq={:?} error={}",
            publish.body_size,
            publish.sequence,
            publish.error.is_some()
        );
        self.calls.lock().unwrap().push(line);
    }

    fn on_delivery(&self, delivery: &amqp_io_common::telemetry::DeliveryInfo<'_>) {
        let line = format!("delivery {}", delivery.delivery.delivery_tag);
        self.calls.lock().unwrap().push(line);
    }

    fn on_settle(&self, settle: &amqp_io_common::telemetry::SettleInfo) {
        let line = format!("settle {:?} failed={}", settle.how, settle.failed);
        self.calls.lock().unwrap().push(line);
    }

    fn on_connection(&self, event: &amqp_io_common::telemetry::ConnectionEvent<'_>) {
        let line = match event {
            amqp_io_common::telemetry::ConnectionEvent::Opened => "opened".to_owned(),
            amqp_io_common::telemetry::ConnectionEvent::Closed(_) => "closed".to_owned(),
            other => format!("{other:?}"),
        };
        self.calls.lock().unwrap().push(line);
    }

    fn on_stats(&self, stats: &amqp_proto::Stats) {
        *self.last_stats.lock().unwrap() = Some(*stats);
    }
}

#[tokio::test]
async fn an_observer_hears_publishes_deliveries_settlements_and_the_connection() {
    let _serial = serial();
    let observed = std::sync::Arc::new(Observed::default());
    let mut options = amqp_io_common::ConnectOptions::from_url(&broker_url()).unwrap();
    options.observer = Some(observed.clone());
    let connection = match amqp_io_tokio::Connection::connect_with(options).await {
        Ok(connection) => connection,
        Err(error) => broker_unreachable(&error),
    };
    let channel = connection.channel().await.unwrap();
    let declare = QueueDeclare {
        exclusive: true,
        ..Default::default()
    };
    let queue = channel
        .queue_declare(declare)
        .await
        .unwrap()
        .queue
        .to_string();
    channel.confirm_select().await.unwrap();
    for body in ["one", "three"] {
        channel
            .publish(&publish_to(&queue), &BasicProperties::default(), body)
            .await
            .unwrap();
    }
    channel.wait_for_confirms(SHORT).await.unwrap();
    let mut consumer = channel
        .basic_consume(BasicConsume {
            queue: queue.as_str().into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let first = tokio::time::timeout(SHORT, consumer.recv()).await.unwrap();
    first.unwrap().unwrap().ack().unwrap();
    let second = tokio::time::timeout(SHORT, consumer.recv()).await.unwrap();
    second.unwrap().unwrap().reject(false).unwrap();
    connection.close().await.unwrap();
    let calls = observed.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        [
            "opened",
            "publish 3 seq=Some(1) error=false",
            "publish 5 seq=Some(2) error=false",
            "delivery 1",
            "settle Ack { multiple: false } failed=false",
            "delivery 2",
            "settle Reject { requeue: false } failed=false",
            "closed",
        ]
    );
    // The last snapshot comes after the end: everything counted.
    let stats = observed.last_stats.lock().unwrap().unwrap();
    assert_eq!(
        (
            stats.publishes,
            stats.confirms_acked,
            stats.deliveries,
            stats.acked,
            stats.rejected
        ),
        (2, 2, 2, 1, 1)
    );
}

#[test]
fn the_metrics_observer_records_semconv_names_without_per_message_labels() {
    let _serial = serial();
    use amqp_io_common::telemetry::Observer;
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let observer = amqp_io_common::metrics_observer::MetricsObserver::new("127.0.0.1", 5672);
        let mut stats = amqp_proto::Stats::default();
        stats.confirms_acked = 7;
        stats.bytes_sent = 100;
        observer.on_stats(&stats);
        stats.confirms_acked = 10;
        observer.on_stats(&stats);
        observer.on_connection(&amqp_io_common::telemetry::ConnectionEvent::Blocked(
            "low memory",
        ));
        observer.on_connection(&amqp_io_common::telemetry::ConnectionEvent::Unblocked);
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let confirms: u64 = snapshot
        .iter()
        .filter(|(key, ..)| key.key().name() == "rabbitmq.client.publish.confirms")
        .map(|(.., value)| match value {
            metrics_util::debugging::DebugValue::Counter(n) => *n,
            _ => 0,
        })
        .sum();
    assert_eq!(confirms, 10);
    assert!(snapshot
        .iter()
        .any(|(key, ..)| key.key().name() == "rabbitmq.client.connection.blocked.duration"));
    for (key, ..) in &snapshot {
        for label in key.key().labels() {
            assert!(
                ![
                    "messaging.rabbitmq.destination.routing_key",
                    "messaging.message.id"
                ]
                .contains(&label.key()),
                "{key:?}"
            );
        }
    }
}

#[test]
fn a_thousand_routing_keys_give_one_label_set_per_operation() {
    let _serial = serial();
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let mut options = amqp_io_common::ConnectOptions::from_url(&broker_url()).unwrap();
        options.observer =
            Some(amqp_io_common::metrics_observer::MetricsObserver::for_options(&options));
        let connection = amqp_io_std::Connection::open_with(options)
            .unwrap_or_else(|error| broker_unreachable(&error));
        let channel = connection.channel().unwrap();
        let declare = QueueDeclare {
            exclusive: true,
            ..Default::default()
        };
        let queue = channel.queue_declare(declare).unwrap().queue.to_string();
        channel
            .queue_bind(amqp_proto::spec::QueueBind {
                queue: queue.as_str().into(),
                exchange: "amq.topic".into(),
                routing_key: "#".into(),
                ..Default::default()
            })
            .unwrap();
        channel.confirm_select().unwrap();
        for n in 0..1_000 {
            let publish = amqp_proto::spec::BasicPublish {
                exchange: "amq.topic".into(),
                routing_key: format!("key-{n}").as_str().into(),
                ..Default::default()
            };
            let properties = BasicProperties::default().message_id(format!("id-{n}"));
            channel.publish(&publish, &properties, "x").unwrap();
        }
        channel.wait_for_confirms(SHORT).unwrap();
        let consumer = channel
            .basic_consume(BasicConsume {
                queue: queue.as_str().into(),
                ..Default::default()
            })
            .unwrap();
        for _ in 0..1_000 {
            consumer.recv_timeout(SHORT).unwrap().ack().unwrap();
        }
        connection.close().unwrap();
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let mut label_sets: std::collections::BTreeMap<String, Vec<Vec<String>>> = Default::default();
    let mut samples: std::collections::BTreeMap<String, usize> = Default::default();
    for (key, _unit, _description, value) in &snapshot {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|label| format!("{}={}", label.key(), label.value()))
            .collect();
        assert!(
            labels
                .iter()
                .all(|label| !label.contains("key-") && !label.contains("id-")),
            "{labels:?}"
        );
        let count = match value {
            DebugValue::Counter(n) => usize::try_from(*n).unwrap(),
            DebugValue::Histogram(values) => values.len(),
            DebugValue::Gauge(_) => 1,
        };
        // Handles made up front for outcomes that never happened hold
        // nothing: no series is exported for them.
        if count == 0 {
            continue;
        }
        label_sets
            .entry(key.key().name().to_owned())
            .or_default()
            .push(labels);
        *samples.entry(key.key().name().to_owned()).or_default() += count;
    }
    // The per-message metrics: one series each, whatever the keys.
    for name in [
        "messaging.client.operation.duration",
        "messaging.client.sent.messages",
        "messaging.client.consumed.messages",
        "messaging.process.duration",
        "rabbitmq.client.publish.confirm.duration",
    ] {
        assert_eq!(
            label_sets.get(name).map(Vec::len),
            Some(1),
            "{name}: {label_sets:#?}"
        );
        assert_eq!(samples[name], 1_000, "{name}");
    }
    // The others split by a closed set of outcomes or directions at most.
    for (name, sets) in &label_sets {
        assert!(sets.len() <= 3, "{name}: {sets:#?}");
    }
    assert_eq!(samples.get("rabbitmq.client.recoveries"), None);
    assert!(label_sets.contains_key("rabbitmq.client.connections"));
}

#[test]
fn settle_spans_and_operation_names_are_there_when_asked_for() {
    use amqp_io_common::telemetry::{SpanNames, SpanOptions};
    let _serial = serial();
    let (captured, _guard) = install();
    let mut options = amqp_io_common::ConnectOptions::from_url(&broker_url()).unwrap();
    options.spans = SpanOptions::default()
        .settle(true)
        .names(SpanNames::Operation);
    let connection = amqp_io_std::Connection::open_with(options)
        .unwrap_or_else(|error| broker_unreachable(&error));
    let channel = connection.channel().unwrap();
    let declare = QueueDeclare {
        queue: unique("telemetry-settle").as_str().into(),
        exclusive: true,
        ..Default::default()
    };
    let queue = channel.queue_declare(declare).unwrap().queue.to_string();
    for n in 0..2 {
        channel
            .publish(&publish_to(&queue), &properties(n), "x")
            .unwrap();
    }
    let consumer = channel
        .basic_consume(BasicConsume {
            queue: queue.as_str().into(),
            ..Default::default()
        })
        .unwrap();
    consumer.recv_timeout(SHORT).unwrap().ack().unwrap();
    consumer.recv_timeout(SHORT).unwrap().reject(false).unwrap();
    connection.close().unwrap();

    let publishes = captured.spans_named("publish");
    assert!(publishes
        .iter()
        .all(|span| span.at_creation["otel.name"] == "publish"));
    let processes = captured.spans_named("process");
    assert!(processes
        .iter()
        .all(|span| span.at_creation["otel.name"] == "process"));
    let settles = captured.spans_named("settle");
    assert_eq!(settles.len(), 2, "{settles:?}");
    for (span, operation) in settles.iter().zip(["ack", "reject"]) {
        assert_eq!(span.target, "amqp::messaging");
        assert_eq!(span.parent.as_deref(), Some("process"), "{span:?}");
        assert_eq!(span.at_creation["otel.name"], operation);
        assert_eq!(span.at_creation["otel.kind"], "client");
        assert_eq!(span.at_creation["messaging.operation.name"], operation);
        assert_eq!(span.at_creation["messaging.operation.type"], "settle");
        assert_eq!(
            span.at_creation["messaging.destination.name"],
            format!("amq.default:{queue}:{queue}")
        );
        assert!(span.closed);
    }
    assert_eq!(settles[1].at_creation["rabbitmq.requeue"], "false");
}

#[test]
fn failures_give_spans_their_error_type_and_a_nack_its_confirm_outcome() {
    use amqp_proto::codec::FieldValue;
    let _serial = serial();
    let (captured, _guard) = install();
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let mut options = amqp_io_common::ConnectOptions::from_url(&broker_url()).unwrap();
        options.observer =
            Some(amqp_io_common::metrics_observer::MetricsObserver::for_options(&options));
        let connection = amqp_io_std::Connection::open_with(options)
            .unwrap_or_else(|error| broker_unreachable(&error));

        // A queue that refuses a second message: the broker nacks it.
        let channel = connection.channel().unwrap();
        let declare = QueueDeclare {
            queue: unique("telemetry-nack").as_str().into(),
            exclusive: true,
            arguments: [
                ("x-max-length", FieldValue::LongInt(1)),
                ("x-overflow", FieldValue::from("reject-publish")),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let queue = channel.queue_declare(declare).unwrap().queue.to_string();
        channel.confirm_select().unwrap();
        let plain = BasicProperties::default();
        let first = channel
            .publish(&publish_to(&queue), &plain, "kept")
            .unwrap();
        first.wait(SHORT).unwrap();
        let second = channel
            .publish(&publish_to(&queue), &plain, "refused")
            .unwrap();
        assert!(matches!(
            second.wait(SHORT),
            Err(amqp_io_common::Error::Nacked(_))
        ));

        // A delivery settled after its channel was closed by the server.
        let consumer = channel
            .basic_consume(BasicConsume {
                queue: queue.as_str().into(),
                ..Default::default()
            })
            .unwrap();
        let delivery = consumer.recv_timeout(SHORT).unwrap();
        assert!(channel
            .queue_declare(passive_declare("telemetry-missing"))
            .is_err());
        assert!(delivery.ack().is_err());
        // A publish on that closed channel.
        assert!(channel
            .publish(&publish_to(&queue), &plain, "late")
            .is_err());
        connection.close().unwrap();
    });

    let publishes = captured.spans_named("publish");
    let failed: Vec<_> = publishes
        .iter()
        .filter(|span| span.fields.contains_key("error.type"))
        .collect();
    assert_eq!(failed.len(), 1, "{publishes:?}");
    assert_eq!(failed[0].fields["error.type"], "not-found");
    assert_eq!(failed[0].fields["otel.status_code"], "ERROR");
    let processes = captured.spans_named("process");
    assert_eq!(processes.len(), 1, "{processes:?}");
    assert_eq!(processes[0].fields["error.type"], "not-found");
    assert!(processes[0].closed);

    let nacked = snapshotter.snapshot().into_vec().into_iter().any(|(key, .., value)| {
        key.key().name() == "rabbitmq.client.publish.confirm.duration"
            && key
                .key()
                .labels()
                .any(|label| label.key() == "error.type" && label.value() == "nack")
            && matches!(value, metrics_util::debugging::DebugValue::Histogram(samples) if samples.len() == 1)
    });
    assert!(nacked, "no nacked confirm recorded");
}

/// Three addresses for one broker: a closed port, then two proxies.
fn three_addresses(
    first: &amqp_tests::proxy::Proxy,
    second: &amqp_tests::proxy::Proxy,
) -> amqp_io_common::ConnectOptions {
    let urls = [
        "amqp://guest:guest@127.0.0.1:1/%2f?heartbeat=2".to_owned(),
        format!("amqp://guest:guest@{}/%2f", first.address()),
        format!("amqp://guest:guest@{}/%2f", second.address()),
    ];
    let mut options = amqp_io_common::ConnectOptions::from_urls(urls).unwrap();
    options.recovery = Some(amqp_proto::Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
        max_attempts: Some(40),
    });
    options
}

/// The opening's `connect` span names, from its creation, the address the
/// socket reached; a recovery's attempt (whose span starts before it
/// chooses an address) names the node it reached once it did.
fn assert_connects_name_the_nodes_reached(
    captured: &Captured,
    first: std::net::SocketAddr,
    second: std::net::SocketAddr,
) {
    let connects = captured.spans_named("connect");
    assert!(connects.len() >= 2, "{connects:?}");
    let opening = &connects[0];
    assert_eq!(opening.at_creation["rabbitmq.connection.recovery"], "false");
    assert_eq!(opening.at_creation["server.port"], first.port().to_string());
    assert_eq!(
        opening.at_creation["otel.name"],
        format!("connect 127.0.0.1:{}", first.port())
    );
    let recovered = connects.last().unwrap();
    assert_eq!(
        recovered.at_creation["rabbitmq.connection.recovery"],
        "true"
    );
    assert!(
        !recovered.fields.contains_key("error.type"),
        "{recovered:?}"
    );
    // Recovery tries the address after the lost node first.
    assert_eq!(recovered.fields["server.port"], second.port().to_string());
    assert_eq!(
        recovered.fields["otel.name"],
        format!("connect 127.0.0.1:{}", second.port())
    );
}

fn recovered_spans(captured: &Captured) -> bool {
    captured
        .spans_named("recover")
        .iter()
        .any(|span| span.closed)
}

#[test]
fn the_connect_spans_of_the_blocking_client_name_the_node_reached() {
    let _serial = serial();
    let (captured, _guard) = install();
    let broker = amqp_tests::broker_address();
    let first =
        amqp_tests::proxy::Proxy::start(&broker).unwrap_or_else(|error| broker_unreachable(&error));
    let second =
        amqp_tests::proxy::Proxy::start(&broker).unwrap_or_else(|error| broker_unreachable(&error));
    let connection = amqp_io_std::Connection::open_with(three_addresses(&first, &second))
        .unwrap_or_else(|error| broker_unreachable(&error));
    assert_eq!(connection.connected_address().port, first.address().port());
    first.cut();
    let deadline = std::time::Instant::now() + SHORT;
    while !recovered_spans(&captured) {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            captured.spans()
        );
        let _ = connection.drain_events(Duration::from_millis(50));
    }
    assert_eq!(connection.connected_address().port, second.address().port());
    connection.close().unwrap();
    assert_connects_name_the_nodes_reached(&captured, first.address(), second.address());
}

#[tokio::test]
async fn the_connect_spans_of_the_tokio_client_name_the_node_reached() {
    let _serial = serial();
    let (captured, _guard) = install();
    let broker = amqp_tests::broker_address();
    let first =
        amqp_tests::proxy::Proxy::start(&broker).unwrap_or_else(|error| broker_unreachable(&error));
    let second =
        amqp_tests::proxy::Proxy::start(&broker).unwrap_or_else(|error| broker_unreachable(&error));
    let connection =
        match amqp_io_tokio::Connection::connect_with(three_addresses(&first, &second)).await {
            Ok(connection) => connection,
            Err(error) => broker_unreachable(&error),
        };
    assert_eq!(connection.connected_address().port, first.address().port());
    first.cut();
    let deadline = std::time::Instant::now() + SHORT;
    while !recovered_spans(&captured) {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            captured.spans()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(connection.connected_address().port, second.address().port());
    connection.close().await.unwrap();
    assert_connects_name_the_nodes_reached(&captured, first.address(), second.address());
}
