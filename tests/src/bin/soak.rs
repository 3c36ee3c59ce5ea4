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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqp_io_common::recovery::RecoveryEvent;
use amqp_io_common::{ConnectOptions, Error};
use amqp_proto::codec::BasicProperties;
use amqp_proto::spec::{BasicConsume, BasicPublish, QueueDeclare, QueueDelete};
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

/// What the publisher learned about each message id.
#[derive(Default)]
struct Published {
    acked: Vec<u64>,
    nacked: Vec<u64>,
    /// Sent, then failed with the connection or channel: may or may not
    /// have reached the queue.
    failed_after_send: Vec<u64>,
    /// Refused before sending (the publish call itself failed).
    not_sent: u64,
    /// Recoveries of the publishing connection.
    recoveries: u32,
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
    let direct = amqp_io_std::Connection::open(&broker_url()).expect("RabbitMQ is reachable");
    let queue = unique("soak");
    let setup = direct.channel().expect("a channel");
    setup
        .queue_declare(QueueDeclare {
            queue: queue.as_str().into(),
            ..Default::default()
        })
        .expect("the queue is declared");
    println!(
        "soak: {seconds} s, a cut every {cut_every} s, {rate} msgs/s, queue {queue}, proxy {}",
        proxy.address()
    );

    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let publishing_done = Arc::new(AtomicBool::new(false));
    let consumed: Arc<Mutex<HashMap<u64, (u32, u32)>>> = Arc::default();
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
        let consumed = Arc::clone(&consumed);
        let done = Arc::clone(&publishing_done);
        move || consume(options, &queue, &consumed, &done)
    });

    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let published = runtime.block_on(publish(options(&proxy), &queue, deadline, rate));
    publishing_done.store(true, Ordering::Relaxed);
    let consumer_reports = consumer.join().expect("the consumer ran");
    let cuts = cutter.join().expect("the cutter ran");
    sampler.join().expect("the sampler ran");

    let left = setup
        .queue_declare(passive_declare(&queue))
        .map(|ok| ok.message_count)
        .unwrap_or(u32::MAX);
    let _ = setup.queue_delete(QueueDelete {
        queue: queue.as_str().into(),
        ..Default::default()
    });
    let _ = direct.close();

    let consumed = consumed.lock().expect("not poisoned");
    let missing: Vec<u64> = published
        .acked
        .iter()
        .copied()
        .filter(|id| !consumed.contains_key(id))
        .collect();
    let sent_max = published
        .acked
        .iter()
        .chain(&published.nacked)
        .chain(&published.failed_after_send)
        .max()
        .copied()
        .unwrap_or(0);
    let unknown = consumed.keys().filter(|id| **id > sent_max).count();
    let doubled = consumed
        .values()
        .filter(|(times, redelivered)| times - 1 > *redelivered)
        .count();
    let redeliveries: u32 = consumed.values().map(|(_, redelivered)| redelivered).sum();
    let failed_arrived = published
        .failed_after_send
        .iter()
        .filter(|id| consumed.contains_key(id))
        .count();
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
        "soak: {:.0} s, {cuts} cuts, recoveries: publisher {}, consumer {consumer_reports}",
        started.elapsed().as_secs_f64(),
        published.recoveries
    );
    println!(
        "soak: published {} acked, {} nacked, {} failed after sending ({failed_arrived} of them arrived anyway), {} refused before sending",
        published.acked.len(),
        published.nacked.len(),
        published.failed_after_send.len(),
        published.not_sent
    );
    println!(
        "soak: consumed {} distinct ({redeliveries} redeliveries); {} confirmed but missing, {doubled} doubled without the redelivered flag, {unknown} unknown; {left} left in the queue",
        consumed.len(),
        missing.len()
    );
    println!(
        "soak: RSS KiB (second, KiB): first {:?}, last {:?}; peak first half {first_peak}, second half {second_peak}",
        rss.first(),
        rss.last()
    );
    let ok = missing.is_empty() && doubled == 0 && unknown == 0 && rss_flat && left == 0;
    if !ok {
        eprintln!(
            "soak: FAILED (missing {:?}..., rss flat {rss_flat}, left {left})",
            missing.iter().take(10).collect::<Vec<_>>()
        );
        std::process::exit(1);
    }
    println!("soak: every confirmed publish consumed, nothing doubled, RSS flat");
}

/// Publishes ids 0, 1, 2, ... until `deadline`, in batches awaited in
/// order, at about `rate` per second.
async fn publish(options: ConnectOptions, queue: &str, deadline: Instant, rate: u64) -> Published {
    let mut published = Published::default();
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
    let mut next_id = 0u64;
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
        let mut batch = Vec::new();
        for _ in 0..BATCH {
            let id = next_id;
            next_id += 1;
            match open
                .publish(&publish, &properties, id.to_be_bytes().to_vec())
                .await
            {
                Ok(confirmation) => batch.push((id, confirmation)),
                Err(_) => published.not_sent += 1,
            }
        }
        for (id, confirmation) in batch {
            match confirmation.await {
                Ok(()) => published.acked.push(id),
                Err(Error::Nacked(_)) => published.nacked.push(id),
                Err(_) => published.failed_after_send.push(id),
            }
        }
        if open.close_reason().is_some() {
            channel = None;
        }
        tokio::time::sleep_until(batch_started + batch_time).await;
    }
    let _ = connection.close().await;
    published.recoveries = *recoveries.lock().expect("not poisoned");
    published
}

/// Consumes and acknowledges until publishing is done and the queue has
/// been quiet for a few seconds; returns how many recoveries it saw.
fn consume(
    options: ConnectOptions,
    queue: &str,
    consumed: &Mutex<HashMap<u64, (u32, u32)>>,
    publishing_done: &AtomicBool,
) -> u32 {
    let connection = amqp_io_std::Connection::open_with(options).expect("the consumer connects");
    let (recoveries, count) = recovery_counter();
    connection.on_recovery(count);
    let channel = connection.channel().expect("a channel");
    channel.basic_qos(500, false).expect("qos");
    let consumer = channel
        .consume(BasicConsume {
            queue: queue.into(),
            ..Default::default()
        })
        .expect("the consumer starts");
    let mut quiet_since = None;
    loop {
        match consumer.recv_timeout(Duration::from_millis(500)) {
            Ok(delivery) => {
                quiet_since = None;
                if let Ok(bytes) = <[u8; 8]>::try_from(delivery.content.body.as_ref()) {
                    let id = u64::from_be_bytes(bytes);
                    let mut consumed = consumed.lock().expect("not poisoned");
                    let entry = consumed.entry(id).or_insert((0, 0));
                    entry.0 += 1;
                    entry.1 += u32::from(delivery.redelivered);
                }
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
