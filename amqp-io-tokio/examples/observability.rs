//! What an operator sees of the tokio client: spans and their
//! OpenTelemetry attributes, the trace context carried through the broker
//! from the publisher to the consumer, and the metrics.
//!
//! Publishes one message with confirms inside an application span,
//! consumes and acks it, and prints:
//! - each span as it closes, with its fields (a `tracing-subscriber` fmt
//!   layer on the `amqp::messaging` and `amqp::connection` targets);
//! - the trace id of the publish and of the delivery's `process` span,
//!   which the `traceparent` header carried from one to the other;
//! - the metrics the `MetricsObserver` recorded, with their names.
//!
//! ```text
//! cargo run -p amqp-io-tokio --example observability
//! ```
//!
//! `AMQP_URL` names another broker.

use std::time::Duration;

use amqp_io_common::metrics_observer::MetricsObserver;
use amqp_io_tokio::{ConnectOptions, Connection};
use amqp_proto::codec::BasicProperties;
use amqp_proto::propagation::{Headers, TRACEPARENT};
use amqp_proto::spec::{BasicConsume, BasicPublish, QueueDeclare};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());

    // Metrics: kept in memory by metrics-util's recorder, printed at the end.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install()?;

    // Traces: W3C propagation, an SDK tracer (spans kept in memory), the
    // tracing bridge, and a fmt layer printing every span as it closes.
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(InMemorySpanExporter::default())
        .build();
    let only_ours = tracing_subscriber::filter::filter_fn(|metadata| {
        metadata.target().starts_with("amqp::messaging")
            || metadata.target().starts_with("amqp::connection")
            || metadata.target() == "observability"
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_span_events(FmtSpan::CLOSE)
                .with_ansi(false)
                .with_filter(only_ours),
        )
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("observability")))
        .init();

    let mut options = ConnectOptions::from_url(&url)?;
    options.observer = Some(MetricsObserver::for_options(&options));
    let connection = Connection::connect_with(options).await?;
    let channel = connection.channel().await?;
    let declare = QueueDeclare {
        queue: "amqp-foundation.observability".into(),
        exclusive: true,
        ..Default::default()
    };
    let queue = channel.queue_declare(declare).await?.queue;
    channel.confirm_select().await?;

    let order = tracing::info_span!(target: "observability", "place_order");
    let published_in = order.context().span().span_context().trace_id();
    let publish = BasicPublish {
        routing_key: queue.clone(),
        ..Default::default()
    };
    let properties = BasicProperties::default().message_id("order-1");
    let confirmation = channel
        .publish(&publish, &properties, "one order")
        .instrument(order)
        .await?;
    tokio::time::timeout(TIMEOUT, confirmation).await??;

    let mut consumer = channel
        .basic_consume(BasicConsume {
            queue,
            ..Default::default()
        })
        .await?;
    let delivery = tokio::time::timeout(TIMEOUT, consumer.recv())
        .await?
        .ok_or("the consumer ended")??;
    let carried = delivery
        .properties()
        .headers
        .as_ref()
        .and_then(|headers| Headers(headers).get(TRACEPARENT))
        .unwrap_or("(none)")
        .to_owned();
    let processed_in = delivery.span().context().span().span_context().trace_id();
    delivery.ack()?;
    connection.close().await?;

    println!();
    println!("publish trace id:  {published_in}");
    println!("traceparent:       {carried}");
    println!("process trace id:  {processed_in}");
    println!();
    println!("metrics:");
    let mut lines: Vec<String> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        // Outcomes that never happened have a handle but no series.
        .filter(
            |(.., value)| !matches!(value, DebugValue::Histogram(samples) if samples.is_empty()),
        )
        .map(|(key, unit, _, value)| {
            let labels: Vec<String> = key
                .key()
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            let value = match value {
                DebugValue::Counter(count) => count.to_string(),
                DebugValue::Gauge(level) => level.to_string(),
                DebugValue::Histogram(samples) => format!("{} samples", samples.len()),
            };
            let unit = unit
                .map(|unit| format!(" {}", unit.as_str()))
                .unwrap_or_default();
            format!(
                "  {} {{{}}} = {value}{unit}",
                key.key().name(),
                labels.join(", ")
            )
        })
        .collect();
    lines.sort();
    for line in lines {
        println!("{line}");
    }
    if published_in != processed_in {
        return Err("the process span is not in the publisher's trace".into());
    }
    Ok(())
}
