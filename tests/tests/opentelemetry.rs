//! The `opentelemetry` feature end to end: spans exported through
//! `tracing-opentelemetry` into the SDK's in-memory exporter, a message
//! published and consumed through the local RabbitMQ by each adapter.
//! What the trace must look like: the `publish` span a child of the
//! application's span, the `process` span a child of the `publish` span
//! when the consumer has no span of its own around the hand-off and
//! linked to it when it has one, and a `traceparent` the application set
//! carried untouched.
//!
//! These tests need the broker and fail (never pass silently) without it.
// The async test holds the serialising lock across awaits on purpose: it
// runs on its own current-thread runtime, and the lock keeps the other
// test out for its whole length.
#![allow(clippy::await_holding_lock)]

use std::time::Duration;

use amqp_proto::codec::{BasicProperties, FieldTable};
use amqp_proto::propagation::{Headers, HeadersMut, TraceParent, TRACEPARENT};
use amqp_proto::spec::{BasicConsume, QueueDeclare};
use amqp_tests::{broker_unreachable, broker_url, publish_to};
use opentelemetry::trace::{SpanId, SpanKind, TraceId, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;

const SHORT: Duration = Duration::from_secs(10);

/// A context the application set itself, which must arrive as it was.
const APPLICATIONS: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// One test at a time: `tracing` caches callsite interest across threads.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The exporter the spans end in, with the thread's subscriber that feeds
/// it until the guard is dropped.
struct Exported {
    exporter: InMemorySpanExporter,
    _provider: SdkTracerProvider,
    _guard: tracing::subscriber::DefaultGuard,
}

fn export_spans() -> Exported {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("amqp-tests"));
    let guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    // As in `amqp_tests::capture::install`: a callsite registered while
    // the dispatcher was added is asked again.
    tracing::callsite::rebuild_interest_cache();
    Exported {
        exporter,
        _provider: provider,
        _guard: guard,
    }
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|span| span.name == name).collect()
}

fn one<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one {name} span expected: {spans:#?}");
    found[0]
}

fn traceparent(properties: &BasicProperties) -> Option<TraceParent> {
    let headers = properties.headers.as_ref()?;
    TraceParent::parse(Headers(headers).get(TRACEPARENT)?)
}

fn with_applications_context() -> BasicProperties {
    let mut headers = FieldTable::new();
    HeadersMut(&mut headers).set(TRACEPARENT, APPLICATIONS);
    BasicProperties::default()
        .message_id("own")
        .headers(headers)
}

/// The trace ids and parents of the scenario both adapters run: message
/// `parented` published inside the application's `checkout` span and
/// processed outside any span, message `linked` published outside any
/// span and processed inside the application's `worker` span, message
/// `own` carrying the application's `traceparent`. `carried` are the
/// `traceparent`s the three deliveries arrived with.
fn check(spans: &[SpanData], carried: &[Option<TraceParent>]) {
    let checkout = one(spans, "checkout");
    let worker = one(spans, "worker");
    let publishes = named(spans, &format!("publish {}", queue_of(spans)));
    let processes = named(spans, &format!("process {}", queue_of(spans)));
    assert_eq!(publishes.len(), 3, "{spans:#?}");
    assert_eq!(processes.len(), 3, "{spans:#?}");
    let message = |span: &SpanData| {
        span.attributes
            .iter()
            .find(|attribute| attribute.key.as_str() == "messaging.message.id")
            .map(|attribute| attribute.value.to_string())
            .unwrap_or_default()
    };
    let find = |set: &[&SpanData], id: &str| -> SpanData {
        set.iter()
            .find(|span| message(span) == id)
            .map(|span| (*span).clone())
            .unwrap_or_else(|| panic!("no span of message {id}: {set:#?}"))
    };

    // The publish span is the application's child and the producer.
    let published = find(&publishes, "parented");
    assert_eq!(published.span_kind, SpanKind::Producer);
    assert_eq!(
        published.span_context.trace_id(),
        checkout.span_context.trace_id()
    );
    assert_eq!(published.parent_span_id, checkout.span_context.span_id());
    // Its context went into the headers, and the process span (no span
    // of the consumer's around it) continued the trace under it.
    let sent = carried[0].expect("the first delivery carries a traceparent");
    assert_eq!(
        TraceId::from_bytes(sent.trace_id),
        published.span_context.trace_id()
    );
    assert_eq!(
        SpanId::from_bytes(sent.parent_id),
        published.span_context.span_id()
    );
    let processed = find(&processes, "parented");
    assert_eq!(processed.span_kind, SpanKind::Consumer);
    assert_eq!(
        processed.span_context.trace_id(),
        published.span_context.trace_id()
    );
    assert_eq!(processed.parent_span_id, published.span_context.span_id());

    // Inside the worker's span the process span stays in the worker's
    // trace and links to the publisher's.
    let published = find(&publishes, "linked");
    assert_eq!(published.parent_span_id, SpanId::INVALID);
    let processed = find(&processes, "linked");
    assert_eq!(
        processed.span_context.trace_id(),
        worker.span_context.trace_id()
    );
    assert_eq!(processed.parent_span_id, worker.span_context.span_id());
    let links: Vec<_> = processed
        .links
        .iter()
        .map(|link| (link.span_context.trace_id(), link.span_context.span_id()))
        .collect();
    assert_eq!(
        links,
        [(
            published.span_context.trace_id(),
            published.span_context.span_id()
        )],
        "{processed:#?}"
    );

    // The application's own traceparent arrived untouched, and the
    // process span took it as its parent.
    assert_eq!(carried[2], TraceParent::parse(APPLICATIONS));
    let processed = find(&processes, "own");
    assert_eq!(
        processed.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(processed.parent_span_id.to_string(), "00f067aa0ba902b7");
}

/// The queue of the scenario, from the span that names it.
fn queue_of(spans: &[SpanData]) -> String {
    spans
        .iter()
        .find_map(|span| span.name.strip_prefix("process ").map(str::to_owned))
        .unwrap_or_else(|| panic!("no process span: {spans:#?}"))
}

fn declare() -> QueueDeclare {
    QueueDeclare {
        queue: amqp_tests::unique("otel").as_str().into(),
        exclusive: true,
        ..Default::default()
    }
}

fn consume(queue: &str) -> BasicConsume {
    BasicConsume {
        queue: queue.into(),
        ..Default::default()
    }
}

#[test]
fn the_blocking_client_carries_one_trace_from_publish_to_process() {
    let _serial = serial();
    let exported = export_spans();
    let connection = amqp_io_std::Connection::open(&broker_url())
        .unwrap_or_else(|error| broker_unreachable(&error));
    let channel = connection.channel().unwrap();
    let queue = channel.queue_declare(declare()).unwrap().queue.to_string();
    channel.confirm_select().unwrap();
    let publish = |properties: &BasicProperties| {
        channel
            .publish(&publish_to(&queue), properties, "body")
            .unwrap()
            .wait(SHORT)
            .unwrap();
    };
    tracing::info_span!("checkout").in_scope(|| {
        publish(&BasicProperties::default().message_id("parented"));
    });
    publish(&BasicProperties::default().message_id("linked"));
    publish(&with_applications_context());

    let consumer = channel.basic_consume(consume(&queue)).unwrap();
    let mut carried = Vec::new();
    let delivery = consumer.recv_timeout(SHORT).unwrap();
    carried.push(traceparent(delivery.properties()));
    delivery.ack().unwrap();
    tracing::info_span!("worker").in_scope(|| {
        let delivery = consumer.recv_timeout(SHORT).unwrap();
        carried.push(traceparent(delivery.properties()));
        delivery.ack().unwrap();
    });
    let delivery = consumer.recv_timeout(SHORT).unwrap();
    carried.push(traceparent(delivery.properties()));
    delivery.ack().unwrap();
    connection.close().unwrap();

    check(&exported.exporter.get_finished_spans().unwrap(), &carried);
}

#[tokio::test]
async fn the_tokio_client_carries_one_trace_from_publish_to_process() {
    use tracing::Instrument;

    let _serial = serial();
    let exported = export_spans();
    let connection = match amqp_io_tokio::Connection::connect(&broker_url()).await {
        Ok(connection) => connection,
        Err(error) => broker_unreachable(&error),
    };
    let channel = connection.channel().await.unwrap();
    let queue = channel
        .queue_declare(declare())
        .await
        .unwrap()
        .queue
        .to_string();
    channel.confirm_select().await.unwrap();
    let publish = |properties: BasicProperties| {
        let channel = channel.clone();
        let queue = queue.clone();
        async move {
            channel
                .publish(&publish_to(&queue), &properties, "body")
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    publish(BasicProperties::default().message_id("parented"))
        .instrument(tracing::info_span!("checkout"))
        .await;
    publish(BasicProperties::default().message_id("linked")).await;
    publish(with_applications_context()).await;

    let mut consumer = channel.basic_consume(consume(&queue)).await.unwrap();
    let mut carried = Vec::new();
    let delivery = tokio::time::timeout(SHORT, consumer.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    carried.push(traceparent(delivery.properties()));
    delivery.ack().unwrap();
    async {
        let delivery = tokio::time::timeout(SHORT, consumer.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        carried.push(traceparent(delivery.properties()));
        delivery.ack().unwrap();
    }
    .instrument(tracing::info_span!("worker"))
    .await;
    let delivery = tokio::time::timeout(SHORT, consumer.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    carried.push(traceparent(delivery.properties()));
    delivery.ack().unwrap();
    connection.close().await.unwrap();

    check(&exported.exporter.get_finished_spans().unwrap(), &carried);
}

/// The `traceparent` the feature writes is what a kombu consumer reads: a
/// W3C header naming the publish span, as OpenTelemetry's kombu and
/// Celery instrumentations expect it.
#[test]
fn a_kombu_consumer_reads_the_traceparent_of_our_publish_span() {
    use amqp_tests::interop;

    let _serial = serial();
    let exported = export_spans();
    let connection = amqp_io_std::Connection::open(&broker_url())
        .unwrap_or_else(|error| broker_unreachable(&error));
    let channel = connection.channel().unwrap();
    let queue = amqp_tests::unique("kombu-trace");
    channel
        .queue_declare(QueueDeclare {
            queue: queue.as_str().into(),
            auto_delete: true,
            arguments: [("x-expires", amqp_proto::codec::FieldValue::LongInt(60_000))]
                .into_iter()
                .collect(),
            ..Default::default()
        })
        .unwrap();
    channel.confirm_select().unwrap();
    channel
        .publish(&publish_to(&queue), &BasicProperties::default(), "traced")
        .unwrap()
        .wait(SHORT)
        .unwrap();
    let spans = exported.exporter.get_finished_spans().unwrap();
    let published = spans
        .iter()
        .find(|span| span.name.starts_with("publish"))
        .unwrap_or_else(|| panic!("no publish span: {spans:#?}"));

    let output = std::process::Command::new(interop::python())
        .arg(interop::script("kombu_trace_consumer.py"))
        .arg(&queue)
        .output()
        .expect("run kombu_trace_consumer.py");
    connection.close().unwrap();
    assert!(
        output.status.success(),
        "kombu_trace_consumer.py failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen["body"], "traced");
    let expected = format!(
        "00-{}-{}-01",
        published.span_context.trace_id(),
        published.span_context.span_id()
    );
    assert_eq!(seen["traceparent"], expected.as_str(), "{seen}");
}

/// With our `publish` span filtered out, a publish inside the
/// application's span carries that span's context, and one outside any
/// span carries none.
#[test]
fn with_our_spans_filtered_out_a_publish_carries_the_applications_span() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::Layer;

    let _serial = serial();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let ours_off = Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("amqp::messaging", LevelFilter::OFF);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("amqp-tests"))
        .with_filter(ours_off);
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    tracing::callsite::rebuild_interest_cache();

    let connection = amqp_io_std::Connection::open(&broker_url())
        .unwrap_or_else(|error| broker_unreachable(&error));
    let channel = connection.channel().unwrap();
    let queue = channel.queue_declare(declare()).unwrap().queue.to_string();
    channel.confirm_select().unwrap();
    let publish = |id: &str| {
        channel
            .publish(
                &publish_to(&queue),
                &BasicProperties::default().message_id(id),
                "body",
            )
            .unwrap()
            .wait(SHORT)
            .unwrap();
    };
    tracing::info_span!("checkout").in_scope(|| publish("inside"));
    publish("outside");
    let consumer = channel.basic_consume(consume(&queue)).unwrap();
    let mut carried = Vec::new();
    for _ in 0..2 {
        let delivery = consumer.recv_timeout(SHORT).unwrap();
        carried.push(traceparent(delivery.properties()));
        delivery.ack().unwrap();
    }
    connection.close().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    assert!(
        named(&spans, &format!("publish {queue}")).is_empty(),
        "{spans:#?}"
    );
    let checkout = one(&spans, "checkout");
    let inside = carried[0].expect("the publish inside the span carries a traceparent");
    assert_eq!(
        TraceId::from_bytes(inside.trace_id),
        checkout.span_context.trace_id()
    );
    assert_eq!(
        SpanId::from_bytes(inside.parent_id),
        checkout.span_context.span_id()
    );
    assert_eq!(
        carried[1], None,
        "outside any span there is no context to carry"
    );
}
