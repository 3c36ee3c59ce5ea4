//! Soak: confirmed publishing (tokio adapter) and consuming with acks
//! (blocking adapter) through the fault proxy for `SOAK_SECONDS` (default
//! 1800), with every connection cut each `SOAK_CUT_EVERY` seconds (default
//! 30); both connections recover on their own.
//!
//! At the end it checks that every publish the broker confirmed was
//! consumed, that nothing was consumed twice except as a redelivery (an
//! ack lost in a cut), that nothing unknown arrived, and that the
//! process's resident memory stayed flat; it prints the figures and exits
//! non-zero if a check fails. `scripts/soak` runs it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqp_io_common::recovery::RecoveryEvent;
use amqp_io_common::{ConnectOptions, Error};
use amqp_proto::codec::BasicProperties;
use amqp_proto::spec::{BasicConsume, BasicPublish, BasicQos, QueueDeclare, QueueDelete};
use amqp_proto::Backoff;
use amqp_tests::proxy::Proxy;
use amqp_tests::{broker_address, broker_url, passive_declare, unique};

/// Publishes in flight at most, awaited in order.
const BATCH: u64 = 200;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn options(proxy: &Proxy) -> ConnectOptions {
    let url = format!("amqp://guest:guest@{}/%2f?heartbeat=2", proxy.address());
    let mut options = ConnectOptions::from_url(&url).expect("a valid URL");
    options.recovery = Some(Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(2),
        max_attempts: None,
    });
    options.operation_timeout = Duration::from_secs(10);
    options
}

/// How a publish ended, as the publisher learned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Acked,
    Nacked,
    /// Sent, then failed with the connection or channel: it may or may
    /// not have reached the queue.
    Failed,
}

/// What both sides learned, kept in constant memory: only ids still in
/// flight (acked but not yet consumed, or consumed before their confirm
/// came) are held, so the soak's RSS measures the library, not this
/// bookkeeping. Publish outcomes arrive in id order (batches are awaited
/// in order), so every id below `settled_below` has its outcome.
#[derive(Default)]
struct Tally {
    settled_below: u64,
    acked_unconsumed: BTreeSet<u64>,
    consumed_early: BTreeSet<u64>,
    /// Failed and nacked ids, and which of those arrived (few).
    failed: BTreeSet<u64>,
    failed_arrived: BTreeSet<u64>,
    acked: u64,
    nacked: u64,
    failed_count: u64,
    not_sent: u64,
    consumed: u64,
    redeliveries: u64,
    doubled: u64,
    unknown: u64,
}

impl Tally {
    /// The publisher learned how publish `id` ended (called in id order).
    fn outcome(&mut self, id: u64, outcome: Outcome) {
        self.settled_below = id + 1;
        let arrived = self.consumed_early.remove(&id);
        match outcome {
            Outcome::Acked => {
                self.acked += 1;
                if !arrived {
                    self.acked_unconsumed.insert(id);
                }
            }
            Outcome::Nacked | Outcome::Failed => {
                if outcome == Outcome::Nacked {
                    self.nacked += 1;
                } else {
                    self.failed_count += 1;
                }
                self.failed.insert(id);
                if arrived {
                    self.failed_arrived.insert(id);
                }
            }
        }
    }

    /// A publish was refused before it was sent (its id is never used).
    fn not_sent(&mut self, id: u64) {
        self.settled_below = id + 1;
        self.not_sent += 1;
    }

    /// The consumer got `id`; `published` is how many ids were handed out.
    fn consumed(&mut self, id: u64, redelivered: bool, published: u64) {
        self.redeliveries += u64::from(redelivered);
        if id >= published {
            self.unknown += 1;
            return;
        }
        let first = if id >= self.settled_below {
            self.consumed_early.insert(id)
        } else if self.acked_unconsumed.remove(&id) {
            true
        } else if self.failed.contains(&id) {
            self.failed_arrived.insert(id)
        } else {
            false
        };
        if first {
            self.consumed += 1;
        } else if !redelivered {
            // Seen before, and the broker did not say it was redelivering.
            self.doubled += 1;
        }
    }
}

/// A count of completed recoveries, and a handler that keeps it.
fn recovery_counter() -> (Arc<Mutex<u32>>, impl FnMut(&RecoveryEvent) + Send + 'static) {
    let recoveries = Arc::new(Mutex::new(0u32));
    let counter = Arc::clone(&recoveries);
    (recoveries, move |event: &RecoveryEvent| {
        if matches!(event, RecoveryEvent::Recovered { .. }) {
            *counter.lock().expect("not poisoned") += 1;
        }
    })
}

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let seconds = env_number("SOAK_SECONDS", 1800);
    let cut_every = env_number("SOAK_CUT_EVERY", 30);
    let rate = env_number("SOAK_RATE", 2000);
    let proxy = Arc::new(Proxy::start(&broker_address()).expect("the proxy starts"));
    let queue = unique("soak");
    let queue_count = |queue: &str| -> Option<u32> {
        // A connection of its own each time: one left idle for the whole
        // run would have missed its heartbeats.
        let direct = amqp_io_std::Connection::open(&broker_url()).expect("RabbitMQ is reachable");
        let channel = direct.channel().expect("a channel");
        let count = channel.queue_declare(passive_declare(queue)).ok()?;
        let _ = direct.close();
        Some(count.message_count)
    };
    {
        let direct = amqp_io_std::Connection::open(&broker_url()).expect("RabbitMQ is reachable");
        let declare = QueueDeclare {
            queue: queue.as_str().into(),
            ..Default::default()
        };
        direct
            .channel()
            .and_then(|channel| channel.queue_declare(declare))
            .expect("the queue is declared");
        let _ = direct.close();
    }
    println!(
        "soak: {seconds} s, a cut every {cut_every} s, {rate} msgs/s, queue {queue}, proxy {}",
        proxy.address()
    );

    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let publishing_done = Arc::new(AtomicBool::new(false));
    let tally: Arc<Mutex<Tally>> = Arc::default();
    let published = Arc::new(AtomicU64::new(0));
    let rss = Arc::new(Mutex::new(vec![(0u64, resident_kib())]));

    let cutter = std::thread::spawn({
        let proxy = Arc::clone(&proxy);
        move || {
            let mut cuts = 0;
            while Instant::now() + Duration::from_secs(cut_every) < deadline {
                std::thread::sleep(Duration::from_secs(cut_every));
                proxy.cut();
                cuts += 1;
            }
            cuts
        }
    });
    let sampler = std::thread::spawn({
        let rss = Arc::clone(&rss);
        let done = Arc::clone(&publishing_done);
        move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(10));
                let at = started.elapsed().as_secs();
                rss.lock().expect("not poisoned").push((at, resident_kib()));
            }
        }
    });
    let consumer = std::thread::spawn({
        let options = options(&proxy);
        let queue = queue.clone();
        let tally = Arc::clone(&tally);
        let published = Arc::clone(&published);
        let done = Arc::clone(&publishing_done);
        move || consume(options, &queue, &tally, &published, &done)
    });

    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let publisher_recoveries = runtime.block_on(publish(
        options(&proxy),
        &queue,
        deadline,
        rate,
        &tally,
        &published,
    ));
    publishing_done.store(true, Ordering::Relaxed);
    let consumer_recoveries = consumer.join().expect("the consumer ran");
    let cuts = cutter.join().expect("the cutter ran");
    sampler.join().expect("the sampler ran");

    let left = queue_count(&queue);
    {
        let direct = amqp_io_std::Connection::open(&broker_url()).expect("RabbitMQ is reachable");
        let delete = QueueDelete {
            queue: queue.as_str().into(),
            ..Default::default()
        };
        let _ = direct
            .channel()
            .and_then(|channel| channel.queue_delete(delete));
        let _ = direct.close();
    }

    let tally = tally.lock().expect("not poisoned");
    let missing: Vec<u64> = tally.acked_unconsumed.iter().copied().take(10).collect();
    let rss = rss.lock().expect("not poisoned");
    // After a warm-up (a fifth of the run, at most a minute) the peak of
    // the second half must stay within a quarter (and 2 MiB) of the first
    // half's: buffers and pools have reached their size by then, and
    // anything that grows with the message count shows.
    let warm_up = (seconds / 5).min(60);
    let warm: Vec<u64> = rss
        .iter()
        .filter(|(at, _)| *at >= warm_up)
        .map(|(_, kib)| *kib)
        .collect();
    let half = warm.len() / 2;
    let first_peak = warm.iter().take(half).max().copied().unwrap_or(0);
    let second_peak = warm.iter().skip(half).max().copied().unwrap_or(0);
    let rss_flat = half == 0 || second_peak <= first_peak + first_peak / 4 + 2048;

    println!(
        "soak: {:.0} s, {cuts} cuts, recoveries: publisher {publisher_recoveries}, consumer {consumer_recoveries}",
        started.elapsed().as_secs_f64(),
    );
    println!(
        "soak: published {} acked, {} nacked, {} failed after sending ({} of the failed or nacked arrived anyway), {} refused before sending",
        tally.acked,
        tally.nacked,
        tally.failed_count,
        tally.failed_arrived.len(),
        tally.not_sent
    );
    println!(
        "soak: consumed {} distinct ({} redeliveries); {} confirmed but missing, {} doubled without the redelivered flag, {} unknown; {left:?} left in the queue",
        tally.consumed,
        tally.redeliveries,
        tally.acked_unconsumed.len(),
        tally.doubled,
        tally.unknown,
    );
    println!(
        "soak: RSS (second, KiB): first {:?}, last {:?}; peak after warm-up: first half {first_peak}, second half {second_peak}",
        rss.first(),
        rss.last()
    );
    let ok = missing.is_empty()
        && tally.doubled == 0
        && tally.unknown == 0
        && rss_flat
        && left == Some(0);
    if !ok {
        eprintln!("soak: FAILED (missing {missing:?}..., RSS flat {rss_flat}, left {left:?})");
        std::process::exit(1);
    }
    println!("soak: every confirmed publish consumed, nothing doubled, RSS flat");
}

/// Publishes ids 0, 1, 2, ... until `deadline`, in batches awaited in
/// order, at about `rate` per second; returns its recoveries.
async fn publish(
    options: ConnectOptions,
    queue: &str,
    deadline: Instant,
    rate: u64,
    tally: &Mutex<Tally>,
    published: &AtomicU64,
) -> u32 {
    let connection = amqp_io_tokio::Connection::connect_with(options)
        .await
        .expect("the publisher connects");
    let (recoveries, count) = recovery_counter();
    connection.on_recovery(count);
    let mut channel = None;
    let publish = BasicPublish {
        routing_key: queue.into(),
        ..Default::default()
    };
    let properties = BasicProperties::default().delivery_mode(2);
    let batch_time = Duration::from_secs_f64(BATCH as f64 / rate.max(1) as f64);
    let mut batch = Vec::with_capacity(BATCH as usize);
    while Instant::now() < deadline {
        let batch_started = tokio::time::Instant::now();
        if channel.is_none() {
            channel = match connection.channel().await {
                Ok(opened) => opened.confirm_select().await.ok().map(|()| opened),
                Err(_) => None,
            };
        }
        let Some(open) = &channel else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        for _ in 0..BATCH {
            // Counted before sending, so the consumer never sees an id
            // beyond the count.
            let id = published.fetch_add(1, Ordering::SeqCst);
            let body = id.to_be_bytes().to_vec();
            batch.push((id, open.publish(&publish, &properties, body).await));
        }
        for (id, sent) in batch.drain(..) {
            let outcome = match sent {
                Ok(confirmation) => match confirmation.await {
                    Ok(()) => Some(Outcome::Acked),
                    Err(Error::Nacked(_)) => Some(Outcome::Nacked),
                    Err(_) => Some(Outcome::Failed),
                },
                Err(_) => None,
            };
            let mut tally = tally.lock().expect("not poisoned");
            match outcome {
                Some(outcome) => tally.outcome(id, outcome),
                None => tally.not_sent(id),
            }
        }
        if open.close_reason().is_some() {
            channel = None;
        }
        tokio::time::sleep_until(batch_started + batch_time).await;
    }
    let _ = connection.close().await;
    let seen = *recoveries.lock().expect("not poisoned");
    seen
}

/// Consumes and acknowledges until publishing is done and the queue has
/// been quiet for a few seconds; returns how many recoveries it saw.
fn consume(
    options: ConnectOptions,
    queue: &str,
    tally: &Mutex<Tally>,
    published: &AtomicU64,
    publishing_done: &AtomicBool,
) -> u32 {
    let connection = amqp_io_std::Connection::open_with(options).expect("the consumer connects");
    let (recoveries, count) = recovery_counter();
    connection.on_recovery(count);
    let channel = connection.channel().expect("a channel");
    channel
        .basic_qos(BasicQos {
            prefetch_count: 500,
            ..Default::default()
        })
        .expect("qos");
    let consumer = channel
        .basic_consume(BasicConsume {
            queue: queue.into(),
            ..Default::default()
        })
        .expect("the consumer starts");
    let mut quiet_since = None;
    loop {
        match consumer.recv_timeout(Duration::from_millis(500)) {
            Ok(delivery) => {
                quiet_since = None;
                let id = <[u8; 8]>::try_from(delivery.content.body.as_ref())
                    .map_or(u64::MAX, u64::from_be_bytes);
                tally.lock().expect("not poisoned").consumed(
                    id,
                    delivery.redelivered,
                    published.load(Ordering::SeqCst),
                );
                // An ack lost in a cut makes a redelivery, which the
                // check allows; an ack refused during a recovery likewise.
                let _ = channel.ack(delivery.delivery_tag, false);
            }
            Err(Error::Timeout { .. }) => {
                if publishing_done.load(Ordering::Relaxed) {
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(5) {
                        break;
                    }
                }
            }
            Err(error) => panic!("the consumer failed: {error}"),
        }
    }
    let _ = connection.close();
    let seen = *recoveries.lock().expect("not poisoned");
    seen
}
