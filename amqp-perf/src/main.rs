//! `amqp-perf`: load against an AMQP 0-9-1 broker, in the spirit of
//! RabbitMQ's PerfTest, through `amqp-io-tokio`.
//!
//! Producers and consumers each get their own connection. Every message
//! carries its send time, so consumers measure end-to-end latency into an
//! HDR histogram. A progress line is printed each second (sent, confirmed
//! and received per second, latency p50/p99, resident memory) and a
//! summary at the end, also as JSON with `--json`.
//!
//! ```text
//! cargo run --release -p amqp-perf -- --producers 1 --consumers 1 --size 16 \
//!     --confirm 1000 --prefetch 1000 --multi-ack 100 --time 10
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use amqp_io_tokio::{Channel, Connection, Error};
use amqp_proto::codec::BasicProperties;
use amqp_proto::spec::{
    BasicConsume, BasicPublish, BasicQos, QueueBind, QueueDeclare, QueueDelete,
};
use bytes::{BufMut, BytesMut};
use clap::Parser;
use hdrhistogram::Histogram;

/// Load generator for AMQP 0-9-1 brokers.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
struct Options {
    /// Broker URL.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    uri: String,
    /// Producer connections.
    #[arg(short = 'x', long, default_value_t = 1)]
    producers: usize,
    /// Consumer connections.
    #[arg(short = 'y', long, default_value_t = 1)]
    consumers: usize,
    /// Message size in bytes (at least 8: the send time travels in them).
    #[arg(short = 's', long, default_value_t = 16)]
    size: usize,
    /// Publisher-confirm window: unconfirmed messages per producer (0: no confirms).
    #[arg(short = 'c', long, default_value_t = 0)]
    confirm: usize,
    /// Consumer prefetch (0: unlimited).
    #[arg(short = 'q', long, default_value_t = 0)]
    prefetch: u16,
    /// Acknowledge every N messages with `multiple` (0: consume with no_ack).
    #[arg(short = 'A', long = "multi-ack", default_value_t = 1)]
    multi_ack: u64,
    /// Messages per second per producer (0: as fast as possible).
    #[arg(short = 'r', long, default_value_t = 0)]
    rate: u64,
    /// Stop after this many seconds.
    #[arg(short = 'z', long = "time")]
    seconds: Option<u64>,
    /// Stop after each producer sent this many messages.
    #[arg(short = 'C', long = "pmessages")]
    messages: Option<u64>,
    /// Queue to use (default: a new auto-delete queue, deleted at the end).
    #[arg(short = 'u', long)]
    queue: Option<String>,
    /// Exchange to publish to (the queue is bound to it with its own name).
    #[arg(short = 'e', long, default_value = "amq.direct")]
    exchange: String,
    /// Publish persistent messages (delivery mode 2).
    #[arg(long)]
    persistent: bool,
    /// Print the summary as JSON too.
    #[arg(long)]
    json: bool,
}

/// Counters every task adds to.
#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    confirmed: AtomicU64,
    nacked: AtomicU64,
    received: AtomicU64,
}

struct Shared {
    options: Options,
    totals: Totals,
    latency: Mutex<Histogram<u64>>,
    epoch: Instant,
    stop: AtomicBool,
}

impl Shared {
    fn nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

fn histogram() -> Histogram<u64> {
    // 1 us to 60 s at 3 significant digits; the bounds are constants.
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// Resident memory of this process in KiB, from /proc (0 elsewhere).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4)
}

async fn producer(shared: Arc<Shared>, queue: String) -> Result<(), Error> {
    let options = &shared.options;
    let connection = Connection::connect(&options.uri).await?;
    let channel = connection.channel().await?;
    if options.confirm > 0 {
        channel.confirm_select().await?;
    }
    let publish = BasicPublish {
        exchange: options.exchange.as_str().into(),
        routing_key: queue.as_str().into(),
        ..Default::default()
    };
    let mut properties = BasicProperties::default();
    if options.persistent {
        properties = properties.delivery_mode(2u8);
    }
    let padding = vec![0u8; options.size.saturating_sub(8)];
    let mut outstanding = std::collections::VecDeque::new();
    let started = Instant::now();
    let mut sent = 0u64;
    while !shared.stop.load(Ordering::Relaxed)
        && options.messages.map_or(true, |limit| sent < limit)
    {
        if options.rate > 0 {
            let due = started + Duration::from_secs_f64(sent as f64 / options.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let mut body = BytesMut::with_capacity(options.size.max(8));
        body.put_u64(shared.nanos());
        body.put_slice(&padding);
        let confirmation = channel
            .publish(&publish, &properties, body.freeze())
            .await?;
        sent += 1;
        shared.totals.sent.fetch_add(1, Ordering::Relaxed);
        if options.confirm > 0 {
            outstanding.push_back(confirmation);
            while outstanding.len() >= options.confirm {
                if let Some(oldest) = outstanding.pop_front() {
                    settle(&shared, &oldest.await);
                }
            }
        }
    }
    for confirmation in outstanding {
        settle(&shared, &confirmation.await);
    }
    connection.close().await
}

fn settle(shared: &Shared, outcome: &Result<(), Error>) {
    match outcome {
        Ok(()) => shared.totals.confirmed.fetch_add(1, Ordering::Relaxed),
        Err(_) => shared.totals.nacked.fetch_add(1, Ordering::Relaxed),
    };
}

async fn consumer(
    shared: Arc<Shared>,
    queue: String,
    ready: tokio::sync::mpsc::Sender<()>,
) -> Result<(), Error> {
    let options = &shared.options;
    let connection = Connection::connect(&options.uri).await?;
    let channel: Channel = connection.channel().await?;
    if options.prefetch > 0 {
        channel
            .basic_qos(BasicQos {
                prefetch_count: options.prefetch,
                ..Default::default()
            })
            .await?;
    }
    let no_ack = options.multi_ack == 0;
    let mut consumer = channel
        .basic_consume(BasicConsume {
            queue: queue.as_str().into(),
            no_ack,
            ..Default::default()
        })
        .await?;
    let _ = ready.send(()).await;
    let mut local = histogram();
    let mut unacked = 0u64;
    loop {
        let next = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
        let delivery = match next {
            Ok(Some(delivery)) => delivery?,
            Ok(None) => break,
            Err(_) if shared.stop.load(Ordering::Relaxed) => break,
            Err(_) => continue,
        };
        let sent_at = delivery.body().get(..8).map_or(0, |stamp| {
            u64::from_be_bytes(stamp.try_into().unwrap_or_default())
        });
        let _ = local.record(shared.nanos().saturating_sub(sent_at).max(1_000));
        shared.totals.received.fetch_add(1, Ordering::Relaxed);
        if !no_ack {
            unacked += 1;
            if unacked >= options.multi_ack {
                delivery.ack_multiple()?;
                unacked = 0;
            }
        }
        if local.len() >= 1_000 {
            merge(&shared, &mut local);
        }
    }
    merge(&shared, &mut local);
    connection.close().await
}

fn merge(shared: &Shared, local: &mut Histogram<u64>) {
    let mut latency = shared
        .latency
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let _ = latency.add(&*local);
    local.reset();
}

fn micros(nanos: u64) -> f64 {
    nanos as f64 / 1_000.0
}

#[tokio::main]
async fn main() {
    let options = Options::parse();
    if let Err(error) = run(options).await {
        eprintln!("amqp-perf: {error}");
        std::process::exit(1);
    }
}

async fn run(options: Options) -> Result<(), Error> {
    let setup = Connection::connect(&options.uri).await?;
    let channel = setup.channel().await?;
    let own_queue = options.queue.is_none();
    let queue = options
        .queue
        .clone()
        .unwrap_or_else(|| format!("amqp-perf-{}", std::process::id()));
    channel
        .queue_declare(QueueDeclare {
            queue: queue.as_str().into(),
            auto_delete: own_queue,
            ..Default::default()
        })
        .await?;
    if !options.exchange.is_empty() {
        channel
            .queue_bind(QueueBind {
                queue: queue.as_str().into(),
                exchange: options.exchange.as_str().into(),
                routing_key: queue.as_str().into(),
                ..Default::default()
            })
            .await?;
    }
    let shared = Arc::new(Shared {
        options: options.clone(),
        totals: Totals::default(),
        latency: Mutex::new(histogram()),
        epoch: Instant::now(),
        stop: AtomicBool::new(false),
    });
    let (ready, mut consumers_ready) = tokio::sync::mpsc::channel(options.consumers.max(1));
    let consumers: Vec<_> = (0..options.consumers)
        .map(|_| tokio::spawn(consumer(Arc::clone(&shared), queue.clone(), ready.clone())))
        .collect();
    for _ in 0..options.consumers {
        let _ = consumers_ready.recv().await;
    }
    let started = Instant::now();
    let producers: Vec<_> = (0..options.producers)
        .map(|_| tokio::spawn(producer(Arc::clone(&shared), queue.clone())))
        .collect();

    let mut last = (0, 0, 0);
    let mut peak_rss = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let elapsed = started.elapsed();
        let totals = &shared.totals;
        let now = (
            totals.sent.load(Ordering::Relaxed),
            totals.confirmed.load(Ordering::Relaxed),
            totals.received.load(Ordering::Relaxed),
        );
        let (p50, p99) = {
            let mut latency = shared
                .latency
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let percentiles = (
                latency.value_at_quantile(0.5),
                latency.value_at_quantile(0.99),
            );
            latency.reset();
            percentiles
        };
        let rss = rss_kib();
        peak_rss = peak_rss.max(rss);
        println!(
            "time {:>5.1}s, sent {:>8} msg/s, confirmed {:>8} msg/s, received {:>8} msg/s, latency p50 {:>9.1} us p99 {:>9.1} us, rss {} KiB",
            elapsed.as_secs_f64(),
            now.0 - last.0,
            now.1 - last.1,
            now.2 - last.2,
            micros(p50),
            micros(p99),
            rss
        );
        last = now;
        let out_of_time = options
            .seconds
            .is_some_and(|limit| elapsed >= Duration::from_secs(limit));
        let producers_done = producers.iter().all(tokio::task::JoinHandle::is_finished);
        let expected = options
            .messages
            .map(|per_producer| per_producer * options.producers as u64);
        let all_received =
            expected.is_some_and(|expected| now.2 >= expected * options.consumers.min(1) as u64);
        if out_of_time || (producers_done && (options.consumers == 0 || all_received)) {
            break;
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    for task in producers.into_iter().chain(consumers) {
        task.await.unwrap_or(Ok(()))?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let totals = &shared.totals;
    let (sent, confirmed, nacked, received) = (
        totals.sent.load(Ordering::Relaxed),
        totals.confirmed.load(Ordering::Relaxed),
        totals.nacked.load(Ordering::Relaxed),
        totals.received.load(Ordering::Relaxed),
    );
    println!(
        "summary: {elapsed:.1} s, sent {sent} ({:.0} msg/s), confirmed {confirmed}, nacked {nacked}, received {received} ({:.0} msg/s), peak rss {peak_rss} KiB",
        sent as f64 / elapsed,
        received as f64 / elapsed
    );
    if options.json {
        let summary = serde_json::json!({
            "seconds": elapsed,
            "sent": sent, "confirmed": confirmed, "nacked": nacked, "received": received,
            "sent_per_second": sent as f64 / elapsed,
            "received_per_second": received as f64 / elapsed,
            "peak_rss_kib": peak_rss,
            "options": {
                "producers": options.producers, "consumers": options.consumers,
                "size": options.size, "confirm": options.confirm, "prefetch": options.prefetch,
                "multi_ack": options.multi_ack, "rate": options.rate,
            },
        });
        println!("{summary}");
    }
    if own_queue {
        let delete = QueueDelete {
            queue: queue.as_str().into(),
            ..Default::default()
        };
        channel.queue_delete(delete).await?;
    }
    setup.close().await
}
