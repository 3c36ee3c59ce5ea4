//! Side by side against the local RabbitMQ, in two tables: the async
//! adapter amqp-io-tokio with amqprs and lapin, and the blocking adapter
//! amqp-io-std with pika and py-amqp (Python, run by `peers.py` from the
//! virtualenv `scripts/compare-peers` creates).
//!
//! `compare` (what `scripts/compare-peers` runs) measures every scenario
//! for every client in alternation, `ROUNDS` times (default 3), each run in
//! a child process of its own so that its CPU time (user + sys, from
//! /proc/self/stat around the measured part) is the client's alone, and
//! prints a table of medians per group: messages per second and client CPU
//! per message, each against the best peer of the table, RPC round-trip
//! latency, and how our adapter stands against the goals of issue #15.
//! `SCALE` multiplies the message counts; `SCENARIOS`, `SIZES` and
//! `CLIENTS` (comma-separated) pick a subset; `TOKIO_MODE` (`block_on` or
//! `task`, see [`on_runtime`]) says where the tokio clients' scenarios run.
//!
//! `compare child <client> <scenario> <size> <count> <queue>` is one run of
//! a Rust client; it prints one JSON line (`peers.py` takes the same
//! arguments and prints the same line).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqp_io_tokio::Connection;
use amqp_proto::codec::BasicProperties;
use amqp_proto::spec::{BasicPublish, BasicQos, QueueDeclare, QueueDelete, QueuePurge};
use serde_json::{json, Value};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const WINDOW: u64 = 1_000;
const PREFETCH: u16 = 1_000;
const ACK_EVERY: u64 = 100;

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// CPU time of this process so far, from /proc/self/stat (utime + stime,
/// in clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the file; the 12th and 13th after the name.
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

struct Measure {
    started: Instant,
    cpu: f64,
}

impl Measure {
    fn start() -> Self {
        Self {
            started: Instant::now(),
            cpu: cpu_seconds(),
        }
    }

    fn finish(self, messages: u64, latencies: &mut [f64]) -> Value {
        let seconds = self.started.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - self.cpu;
        latencies.sort_by(f64::total_cmp);
        let quantile = |q: f64| {
            if latencies.is_empty() {
                return 0.0;
            }
            let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            latencies[index.min(latencies.len() - 1)]
        };
        json!({"messages": messages, "seconds": seconds, "cpu": cpu,
               "p50_us": quantile(0.5), "p99_us": quantile(0.99)})
    }
}

fn body(size: usize) -> Vec<u8> {
    vec![b'x'; size]
}

// ---- amqp-io-tokio -------------------------------------------------------

mod ours {
    use super::*;

    pub async fn run(
        scenario: &str,
        size: usize,
        count: u64,
        queue: &str,
    ) -> Result<Value, Failure> {
        let connection = Connection::connect(URL).await?;
        let channel = connection.channel().await?;
        let publish = BasicPublish {
            routing_key: queue.into(),
            ..Default::default()
        };
        let properties = BasicProperties::default();
        let payload = bytes::Bytes::from(body(size));
        let mut latencies = Vec::new();
        let measure;
        match scenario {
            "publish" | "publish-confirm" => {
                if scenario == "publish-confirm" {
                    channel.confirm_select().await?;
                }
                measure = Measure::start();
                for _ in 0..count {
                    // The core keeps at most 1,000 unconfirmed (the window).
                    channel
                        .publish(&publish, &properties, payload.clone())
                        .await?;
                }
                if scenario == "publish-confirm" {
                    channel.wait_for_confirms(Duration::from_secs(120)).await?;
                } else {
                    let passive = QueueDeclare {
                        queue: queue.into(),
                        passive: true,
                        ..Default::default()
                    };
                    channel.queue_declare(passive).await?;
                }
            }
            "publish-confirm-each" => {
                channel.confirm_select().await?;
                measure = Measure::start();
                // Every publish hands back its own `Confirmation` future;
                // they wait in publish order, at most WINDOW of them, and
                // the oldest is awaited (its ack or nack checked) before a
                // publish past the window. The core's own window of 1,000
                // never holds a publish back here: it is full only when
                // this queue is.
                let mut outstanding = std::collections::VecDeque::with_capacity(WINDOW as usize);
                for _ in 0..count {
                    if outstanding.len() as u64 >= WINDOW {
                        if let Some(oldest) = outstanding.pop_front() {
                            oldest.await?;
                        }
                    }
                    let confirmation = channel
                        .publish(&publish, &properties, payload.clone())
                        .await?;
                    outstanding.push_back(confirmation);
                }
                for confirmation in outstanding {
                    confirmation.await?;
                }
            }
            "consume" => {
                channel
                    .basic_qos(BasicQos {
                        prefetch_count: PREFETCH,
                        ..Default::default()
                    })
                    .await?;
                measure = Measure::start();
                let consume = amqp_proto::spec::BasicConsume {
                    queue: queue.into(),
                    ..Default::default()
                };
                let mut consumer = channel.basic_consume(consume).await?;
                for received in 1..=count {
                    let delivery = consumer.recv().await.ok_or("consumer ended")??;
                    if received % ACK_EVERY == 0 || received == count {
                        delivery.ack_multiple()?;
                    }
                }
            }
            "rpc" => {
                let client = amqp_io_tokio::rpc::RpcClient::new(&connection).await?;
                measure = Measure::start();
                for _ in 0..count {
                    let sent = Instant::now();
                    client
                        .call(
                            "",
                            queue,
                            BasicProperties::default(),
                            payload.clone(),
                            Duration::from_secs(10),
                        )
                        .await?;
                    latencies.push(sent.elapsed().as_secs_f64() * 1e6);
                }
            }
            other => return Err(format!("unknown scenario {other}").into()),
        }
        let result = measure.finish(count, &mut latencies);
        connection.close().await?;
        Ok(result)
    }
}

// ---- amqp-io-std -----------------------------------------------------------

/// The blocking adapter, in the same scenarios: no runtime, every call on
/// the calling thread (the socket is read by whichever call waits).
mod ours_std {
    use super::*;
    use amqp_io_std::Connection;

    pub fn run(scenario: &str, size: usize, count: u64, queue: &str) -> Result<Value, Failure> {
        let connection = Connection::open(URL)?;
        let channel = connection.channel()?;
        let publish = BasicPublish {
            routing_key: queue.into(),
            ..Default::default()
        };
        let properties = BasicProperties::default();
        let payload = bytes::Bytes::from(body(size));
        let mut latencies = Vec::new();
        let measure;
        match scenario {
            "publish" | "publish-confirm" => {
                if scenario == "publish-confirm" {
                    channel.confirm_select()?;
                }
                measure = Measure::start();
                for _ in 0..count {
                    // The core keeps at most 1,000 unconfirmed (the window);
                    // the `Confirmation` is dropped, the confirm still
                    // counted for `wait_for_confirms`.
                    channel.publish(&publish, &properties, payload.clone())?;
                }
                if scenario == "publish-confirm" {
                    channel.wait_for_confirms(Duration::from_secs(120))?;
                } else {
                    let passive = QueueDeclare {
                        queue: queue.into(),
                        passive: true,
                        ..Default::default()
                    };
                    channel.queue_declare(passive)?;
                }
            }
            "publish-confirm-each" => {
                channel.confirm_select()?;
                measure = Measure::start();
                // Each publish's own `Confirmation`, in publish order, at
                // most WINDOW; the oldest is waited on with
                // `Confirmation::wait` (its ack or nack checked) before a
                // publish past the window.
                let mut outstanding = std::collections::VecDeque::with_capacity(WINDOW as usize);
                for _ in 0..count {
                    if outstanding.len() as u64 >= WINDOW {
                        if let Some(oldest) = outstanding.pop_front() {
                            amqp_io_std::Confirmation::wait(oldest, Duration::from_secs(120))?;
                        }
                    }
                    outstanding.push_back(channel.publish(
                        &publish,
                        &properties,
                        payload.clone(),
                    )?);
                }
                for confirmation in outstanding {
                    confirmation.wait(Duration::from_secs(120))?;
                }
            }
            "consume" => {
                channel.basic_qos(BasicQos {
                    prefetch_count: PREFETCH,
                    ..Default::default()
                })?;
                measure = Measure::start();
                let consume = amqp_proto::spec::BasicConsume {
                    queue: queue.into(),
                    ..Default::default()
                };
                let consumer = channel.basic_consume(consume)?;
                for received in 1..=count {
                    let delivery = consumer.recv()?;
                    if received % ACK_EVERY == 0 || received == count {
                        delivery.ack_multiple()?;
                    }
                }
            }
            "rpc" => {
                let client = amqp_io_std::rpc::RpcClient::new(&connection)?;
                measure = Measure::start();
                for _ in 0..count {
                    let sent = Instant::now();
                    client.call(
                        "",
                        queue,
                        BasicProperties::default(),
                        payload.clone(),
                        Duration::from_secs(10),
                    )?;
                    latencies.push(sent.elapsed().as_secs_f64() * 1e6);
                }
            }
            other => return Err(format!("unknown scenario {other}").into()),
        }
        let result = measure.finish(count, &mut latencies);
        connection.close()?;
        Ok(result)
    }
}

// ---- amqprs ----------------------------------------------------------------

mod peer_amqprs {
    use super::*;
    use amqprs::callbacks::{ChannelCallback, DefaultConnectionCallback};
    use amqprs::channel::{
        BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments,
        Channel, ConfirmSelectArguments, QueueDeclareArguments,
    };
    use amqprs::connection::{Connection, OpenConnectionArguments};
    use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
    use tokio::sync::oneshot::{Receiver, Sender};

    /// Counts confirms (RabbitMQ settles a single queue's publishes in
    /// order, so the highest tag settled is the count), and settles the
    /// per-publish waiters of `publish-confirm-each`.
    struct Confirms(Arc<AtomicU64>, Arc<tokio::sync::Notify>, Arc<Waiters>);

    /// amqprs has no confirmation per publish: `basic_publish` returns
    /// `()` once the frames are queued, and the broker's `basic.ack` /
    /// `basic.nack` reach only `ChannelCallback::publish_ack` /
    /// `publish_nack`, with the delivery tag and the `multiple` flag. So
    /// `publish-confirm-each` builds what an amqprs user must: before each
    /// publish a oneshot is registered here under the publish's sequence
    /// number (1, 2, ... after `confirm.select`, as the broker numbers
    /// them), the publisher keeps the receiving ends in publish order, and
    /// the callback settles every registered publish the ack or nack
    /// covers (`true` for an ack).
    #[derive(Default)]
    struct Waiters(std::sync::Mutex<std::collections::VecDeque<(u64, Sender<bool>)>>);

    impl Waiters {
        fn register(&self, sequence: u64) -> Receiver<bool> {
            let (sender, receiver) = tokio::sync::oneshot::channel();
            self.lock().push_back((sequence, sender));
            receiver
        }

        fn settle(&self, tag: u64, multiple: bool, acked: bool) {
            let mut waiters = self.lock();
            if multiple {
                while waiters
                    .front()
                    .is_some_and(|(sequence, _)| *sequence <= tag)
                {
                    if let Some((_, sender)) = waiters.pop_front() {
                        sender.send(acked).ok();
                    }
                }
            } else if let Ok(index) = waiters.binary_search_by_key(&tag, |(sequence, _)| *sequence)
            {
                if let Some((_, sender)) = waiters.remove(index) {
                    sender.send(acked).ok();
                }
            }
        }

        fn lock(
            &self,
        ) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(u64, Sender<bool>)>> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }

    #[async_trait::async_trait]
    impl ChannelCallback for Confirms {
        async fn close(
            &mut self,
            _: &Channel,
            _: CloseChannel,
        ) -> Result<(), amqprs::error::Error> {
            Ok(())
        }
        async fn cancel(&mut self, _: &Channel, _: Cancel) -> Result<(), amqprs::error::Error> {
            Ok(())
        }
        async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
            Ok(active)
        }
        async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
            self.0.fetch_max(ack.delivery_tag(), Ordering::SeqCst);
            self.1.notify_waiters();
            self.2.settle(ack.delivery_tag(), ack.mutiple(), true);
        }
        async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
            self.0.fetch_max(nack.delivery_tag(), Ordering::SeqCst);
            self.1.notify_waiters();
            self.2.settle(nack.delivery_tag(), nack.multiple(), false);
        }
        async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {
        }
    }

    /// One publish's outcome from its `Waiters` oneshot.
    async fn confirmed_one(confirmation: Receiver<bool>) -> Result<(), Failure> {
        match confirmation.await {
            Ok(true) => Ok(()),
            Ok(false) => Err("publish nacked".into()),
            Err(_) => Err("confirm never came (channel closed)".into()),
        }
    }

    pub async fn run(
        scenario: &str,
        size: usize,
        count: u64,
        queue: &str,
    ) -> Result<Value, Failure> {
        let arguments = OpenConnectionArguments::new("127.0.0.1", 5672, "guest", "guest");
        let connection = Connection::open(&arguments).await?;
        connection
            .register_callback(DefaultConnectionCallback)
            .await?;
        let channel = connection.open_channel(None).await?;
        let confirmed = Arc::new(AtomicU64::new(0));
        let settled = Arc::new(tokio::sync::Notify::new());
        let waiters = Arc::new(Waiters::default());
        channel
            .register_callback(Confirms(
                Arc::clone(&confirmed),
                Arc::clone(&settled),
                Arc::clone(&waiters),
            ))
            .await?;
        let payload = body(size);
        let mut latencies = Vec::new();
        let measure;
        match scenario {
            "publish" | "publish-confirm" => {
                let confirms = scenario == "publish-confirm";
                if confirms {
                    channel
                        .confirm_select(ConfirmSelectArguments::default())
                        .await?;
                }
                measure = Measure::start();
                for published in 1..=count {
                    while confirms && published - confirmed.load(Ordering::SeqCst) > WINDOW {
                        let wait = settled.notified();
                        tokio::pin!(wait);
                        wait.as_mut().enable();
                        if published - confirmed.load(Ordering::SeqCst) > WINDOW {
                            wait.await;
                        }
                    }
                    let arguments = BasicPublishArguments::new("", queue);
                    channel
                        .basic_publish(BasicProperties::default(), payload.clone(), arguments)
                        .await?;
                }
                if confirms {
                    while confirmed.load(Ordering::SeqCst) < count {
                        let wait = settled.notified();
                        tokio::pin!(wait);
                        wait.as_mut().enable();
                        if confirmed.load(Ordering::SeqCst) < count {
                            wait.await;
                        }
                    }
                } else {
                    let mut passive = QueueDeclareArguments::new(queue);
                    passive.passive(true);
                    channel.queue_declare(passive).await?;
                }
            }
            "publish-confirm-each" => {
                channel
                    .confirm_select(ConfirmSelectArguments::default())
                    .await?;
                measure = Measure::start();
                // The oneshots of `Waiters` in publish order, at most
                // WINDOW; the oldest is awaited (its ack checked) before a
                // publish past the window.
                let mut outstanding = std::collections::VecDeque::with_capacity(WINDOW as usize);
                for sequence in 1..=count {
                    if outstanding.len() as u64 >= WINDOW {
                        if let Some(oldest) = outstanding.pop_front() {
                            confirmed_one(oldest).await?;
                        }
                    }
                    outstanding.push_back(waiters.register(sequence));
                    let arguments = BasicPublishArguments::new("", queue);
                    channel
                        .basic_publish(BasicProperties::default(), payload.clone(), arguments)
                        .await?;
                }
                for confirmation in outstanding {
                    confirmed_one(confirmation).await?;
                }
            }
            "consume" => {
                channel
                    .basic_qos(BasicQosArguments::new(0, PREFETCH, false))
                    .await?;
                measure = Measure::start();
                let (_, mut messages) = channel
                    .basic_consume_rx(BasicConsumeArguments::new(queue, "compare"))
                    .await?;
                for received in 1..=count {
                    let message = messages.recv().await.ok_or("consumer ended")?;
                    let tag = message.deliver.ok_or("no deliver")?.delivery_tag();
                    if received % ACK_EVERY == 0 || received == count {
                        channel.basic_ack(BasicAckArguments::new(tag, true)).await?;
                    }
                }
            }
            "rpc" => {
                let mut reply_to = BasicConsumeArguments::new("amq.rabbitmq.reply-to", "replies");
                reply_to.manual_ack(false);
                let (_, mut replies) = channel.basic_consume_rx(reply_to).await?;
                measure = Measure::start();
                for call in 0..count {
                    let id = call.to_string();
                    let properties = BasicProperties::default()
                        .with_reply_to("amq.rabbitmq.reply-to")
                        .with_correlation_id(&id)
                        .finish();
                    let sent = Instant::now();
                    channel
                        .basic_publish(
                            properties,
                            payload.clone(),
                            BasicPublishArguments::new("", queue),
                        )
                        .await?;
                    loop {
                        let reply = replies.recv().await.ok_or("reply consumer ended")?;
                        let matches = reply
                            .basic_properties
                            .as_ref()
                            .and_then(BasicProperties::correlation_id)
                            .is_some_and(|reply_id| *reply_id == id);
                        if matches {
                            break;
                        }
                    }
                    latencies.push(sent.elapsed().as_secs_f64() * 1e6);
                }
            }
            other => return Err(format!("unknown scenario {other}").into()),
        }
        let result = measure.finish(count, &mut latencies);
        channel.close().await?;
        connection.close().await?;
        Ok(result)
    }
}

// ---- lapin -----------------------------------------------------------------

mod peer_lapin {
    use super::*;
    use futures_lite::StreamExt;
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeclareOptions,
    };
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties, PublisherConfirm};

    /// One publish's outcome: an error unless the broker acked it.
    async fn acked(confirm: PublisherConfirm) -> Result<(), Failure> {
        if confirm.await?.is_ack() {
            Ok(())
        } else {
            Err("publish nacked".into())
        }
    }

    pub async fn run(
        scenario: &str,
        size: usize,
        count: u64,
        queue: &str,
    ) -> Result<Value, Failure> {
        let connection = Connection::connect(URL, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        let payload = body(size);
        let mut latencies = Vec::new();
        let measure;
        match scenario {
            "publish" | "publish-confirm" => {
                let confirms = scenario == "publish-confirm";
                if confirms {
                    channel
                        .confirm_select(ConfirmSelectOptions::default())
                        .await?;
                }
                measure = Measure::start();
                let mut outstanding = std::collections::VecDeque::new();
                for _ in 0..count {
                    let confirm = channel
                        .basic_publish(
                            "".into(),
                            queue.into(),
                            BasicPublishOptions::default(),
                            &payload,
                            BasicProperties::default(),
                        )
                        .await?;
                    if confirms {
                        outstanding.push_back(confirm);
                        while outstanding.len() as u64 >= WINDOW {
                            if let Some(oldest) = outstanding.pop_front() {
                                oldest.await?;
                            }
                        }
                    }
                }
                for confirm in outstanding {
                    confirm.await?;
                }
                if !confirms {
                    let passive = QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    };
                    channel
                        .queue_declare(queue.into(), passive, FieldTable::default())
                        .await?;
                }
            }
            "publish-confirm-each" => {
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                measure = Measure::start();
                // lapin's `basic_publish` hands back a `PublisherConfirm`
                // future per publish, resolving to that publish's
                // `Confirmation` (ack or nack). They wait in publish
                // order, at most WINDOW, and the oldest is awaited and its
                // outcome checked before a publish past the window. (Its
                // `publish-confirm` above keeps the window the same way,
                // lapin having nothing else to bound it with, so for lapin
                // the two scenarios differ only in the check.)
                let mut outstanding = std::collections::VecDeque::with_capacity(WINDOW as usize);
                for _ in 0..count {
                    if outstanding.len() as u64 >= WINDOW {
                        if let Some(oldest) = outstanding.pop_front() {
                            acked(oldest).await?;
                        }
                    }
                    let confirm = channel
                        .basic_publish(
                            "".into(),
                            queue.into(),
                            BasicPublishOptions::default(),
                            &payload,
                            BasicProperties::default(),
                        )
                        .await?;
                    outstanding.push_back(confirm);
                }
                for confirm in outstanding {
                    acked(confirm).await?;
                }
            }
            "consume" => {
                channel
                    .basic_qos(PREFETCH, BasicQosOptions::default())
                    .await?;
                measure = Measure::start();
                let mut consumer = channel
                    .basic_consume(
                        queue.into(),
                        "compare".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                for received in 1..=count {
                    let delivery = consumer.next().await.ok_or("consumer ended")??;
                    if received % ACK_EVERY == 0 || received == count {
                        delivery.ack(BasicAckOptions { multiple: true }).await?;
                    }
                }
            }
            "rpc" => {
                let no_ack = BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                };
                let mut replies = channel
                    .basic_consume(
                        "amq.rabbitmq.reply-to".into(),
                        "replies".into(),
                        no_ack,
                        FieldTable::default(),
                    )
                    .await?;
                measure = Measure::start();
                for call in 0..count {
                    let id = call.to_string();
                    let properties = BasicProperties::default()
                        .with_reply_to("amq.rabbitmq.reply-to".into())
                        .with_correlation_id(id.as_str().into());
                    let sent = Instant::now();
                    channel
                        .basic_publish(
                            "".into(),
                            queue.into(),
                            BasicPublishOptions::default(),
                            &payload,
                            properties,
                        )
                        .await?;
                    loop {
                        let reply = replies.next().await.ok_or("reply consumer ended")??;
                        let matches = reply
                            .properties
                            .correlation_id()
                            .as_ref()
                            .is_some_and(|reply_id| reply_id.as_str() == id);
                        if matches {
                            break;
                        }
                    }
                    latencies.push(sent.elapsed().as_secs_f64() * 1e6);
                }
            }
            other => return Err(format!("unknown scenario {other}").into()),
        }
        let result = measure.finish(count, &mut latencies);
        connection.close(200, "done".into()).await?;
        Ok(result)
    }
}

// ---- the parent -------------------------------------------------------------

/// A multi-threaded runtime with IO and timers, as `#[tokio::main]` builds.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Where a tokio client's scenario runs, as `TOKIO_MODE` says, the same
/// for every tokio client: `block_on` (the default), on the thread that
/// calls `Runtime::block_on`, as the body of a `#[tokio::main]` function
/// does, so every wake-up from a client's reader task on a worker thread
/// crosses threads; or `task`, spawned on the runtime as a service's
/// request handlers and consumers are, where the reader task and the
/// application's task share a worker and wake each other without a
/// system call; or `current_thread`, on a single-threaded runtime
/// (`#[tokio::main(flavor = "current_thread")]`), where the client's reader
/// task, its timers and the scenario all run on the one thread that waits
/// in epoll: no thread is woken but that one.
fn on_runtime(
    scenario: impl std::future::Future<Output = Result<Value, Failure>> + Send + 'static,
) -> Result<Value, Failure> {
    let mode = tokio_mode()?;
    if mode == TokioMode::CurrentThread {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(scenario);
    }
    let runtime = runtime()?;
    match mode {
        TokioMode::BlockOn | TokioMode::CurrentThread => runtime.block_on(scenario),
        TokioMode::Task => runtime.block_on(async move {
            tokio::spawn(scenario)
                .await
                .map_err(|error| -> Failure { format!("the scenario's task: {error}").into() })?
        }),
    }
}

/// See [`on_runtime`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokioMode {
    BlockOn,
    Task,
    CurrentThread,
}

fn tokio_mode() -> Result<TokioMode, Failure> {
    match std::env::var("TOKIO_MODE").as_deref() {
        Err(_) | Ok("" | "block_on") => Ok(TokioMode::BlockOn),
        Ok("task") => Ok(TokioMode::Task),
        Ok("current_thread") => Ok(TokioMode::CurrentThread),
        Ok(other) => {
            Err(format!("TOKIO_MODE={other}: expected block_on, task or current_thread").into())
        }
    }
}

fn child(arguments: &[String]) -> Result<(), Failure> {
    let [client, scenario, size, count, queue] = arguments else {
        return Err("usage: compare child <client> <scenario> <size> <count> <queue>".into());
    };
    #[cfg(feature = "subscribers")]
    let _provider = subscribers::install()?;
    let (size, count): (usize, u64) = (size.parse()?, count.parse()?);
    let (scenario, queue) = (scenario.clone(), queue.clone());
    let result = match client.as_str() {
        "amqp-io-tokio" => {
            on_runtime(async move { ours::run(&scenario, size, count, &queue).await })?
        }
        "amqprs" => {
            on_runtime(async move { peer_amqprs::run(&scenario, size, count, &queue).await })?
        }
        "lapin" => {
            on_runtime(async move { peer_lapin::run(&scenario, size, count, &queue).await })?
        }
        // No runtime at all for the blocking adapter.
        "amqp-io-std" => ours_std::run(&scenario, size, count, &queue)?,
        other => return Err(format!("unknown client {other}").into()),
    };
    println!("{result}");
    Ok(())
}

/// The subscriber `TELEMETRY` names, for measuring what each costs per
/// message (feature `subscribers`): `none`, `filtered` (a fmt layer at
/// INFO with `amqp::messaging` filtered out), `fmt` (a fmt layer at INFO
/// writing to a sink), and with feature `opentelemetry` `otel`
/// (`tracing-opentelemetry` into the SDK's in-memory exporter, W3C
/// propagation).
#[cfg(feature = "subscribers")]
mod subscribers {
    use super::Failure;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer as _;

    /// What must live as long as the run (the tracer provider).
    #[cfg(feature = "opentelemetry")]
    pub type Keep = Option<opentelemetry_sdk::trace::SdkTracerProvider>;
    #[cfg(not(feature = "opentelemetry"))]
    pub type Keep = Option<()>;

    pub fn install() -> Result<Keep, Failure> {
        let mode = std::env::var("TELEMETRY").unwrap_or_else(|_| "none".to_owned());
        let fmt = || tracing_subscriber::fmt::layer().with_writer(std::io::sink);
        let info = tracing_subscriber::filter::LevelFilter::INFO;
        match mode.as_str() {
            "none" => Ok(None),
            "filtered" => {
                // What `RUST_LOG=info,amqp::messaging=off` gives: a static
                // filter, decided once per callsite.
                let filter = tracing_subscriber::filter::Targets::new()
                    .with_default(tracing::Level::INFO)
                    .with_target("amqp::messaging", tracing_subscriber::filter::LevelFilter::OFF);
                let subscriber = tracing_subscriber::registry().with(fmt().with_filter(filter));
                tracing::subscriber::set_global_default(subscriber)?;
                Ok(None)
            }
            "fmt" => {
                let subscriber = tracing_subscriber::registry().with(fmt().with_filter(info));
                tracing::subscriber::set_global_default(subscriber)?;
                Ok(None)
            }
            #[cfg(feature = "opentelemetry")]
            "otel" => {
                use opentelemetry::trace::TracerProvider as _;
                opentelemetry::global::set_text_map_propagator(
                    opentelemetry_sdk::propagation::TraceContextPropagator::new(),
                );
                let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                    .with_simple_exporter(opentelemetry_sdk::trace::InMemorySpanExporter::default())
                    .build();
                let layer = tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("amqp-compare"))
                    .with_filter(info);
                tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))?;
                Ok(Some(provider))
            }
            other => Err(format!("TELEMETRY={other}: none, filtered, fmt or otel").into()),
        }
    }
}

/// Where the Python peers run: the virtualenv `scripts/compare-peers`
/// creates (`COMPARE_PYTHON` overrides) and `peers.py`, both in compare/.
fn python_command() -> Command {
    let here = env!("CARGO_MANIFEST_DIR");
    let python =
        std::env::var("COMPARE_PYTHON").unwrap_or_else(|_| format!("{here}/.venv/bin/python"));
    let mut command = Command::new(python);
    command.arg(format!("{here}/peers.py"));
    command
}

/// A child that has not answered in this long is killed and the run fails.
const CHILD_TIMEOUT: Duration = Duration::from_secs(600);

fn run_child(
    client: &str,
    scenario: &str,
    size: usize,
    count: u64,
    queue: &str,
) -> Result<Value, Failure> {
    let mut command = if PYTHON_CLIENTS.contains(&client) {
        python_command()
    } else {
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("child");
        command
    };
    command
        .args([
            client,
            scenario,
            &size.to_string(),
            &count.to_string(),
            queue,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command
        .spawn()
        .map_err(|error| format!("{client}: cannot start {command:?}: {error}"))?;
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || sender.send(child.wait_with_output()));
    let output = match receiver.recv_timeout(CHILD_TIMEOUT) {
        Ok(output) => output?,
        Err(_) => {
            // Only this child, by its id.
            Command::new("kill").arg(pid.to_string()).status().ok();
            return Err(format!(
                "{client} {scenario} {size} gave no answer in {} s; killed",
                CHILD_TIMEOUT.as_secs()
            )
            .into());
        }
    };
    if !output.status.success() {
        return Err(format!(
            "{client} {scenario} {size} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// The clients the Python child runs.
const PYTHON_CLIENTS: [&str; 2] = ["pika", "py-amqp"];

/// One table: our adapter against its peers.
struct Group {
    title: &'static str,
    ours: &'static str,
    peers: [&'static str; 2],
}

const GROUPS: [Group; 2] = [
    Group {
        title: "async",
        ours: "amqp-io-tokio",
        peers: ["amqprs", "lapin"],
    },
    Group {
        title: "blocking",
        ours: "amqp-io-std",
        peers: ["pika", "py-amqp"],
    },
];

/// The goals of issue #15, for our adapters against the best peer of
/// their table: client CPU per message at most a third of the best
/// peer's, throughput at least 1.2 times the best peer's.
const CPU_GOAL: f64 = 1.0 / 3.0;
const RATE_GOAL: f64 = 1.2;

/// The clock of /proc/self/stat: CPU time comes in ticks of 10 ms.
const TICK_SECONDS: f64 = 0.01;

/// A run's CPU time under this many ticks is marked as coarse ("~").
const FINE_TICKS: f64 = 10.0;

/// The medians of one client in one scenario.
struct Cell {
    client: &'static str,
    messages: f64,
    rate: f64,
    cpu_seconds: f64,
    cpu_us: f64,
    p50_us: f64,
    p99_us: f64,
}

impl Cell {
    fn of(client: &'static str, runs: &[Value]) -> Self {
        let field = |run: &Value, name: &str| run[name].as_f64().unwrap_or(0.0);
        let per_run = |f: &dyn Fn(&Value) -> f64| median(runs.iter().map(f).collect());
        Self {
            client,
            messages: per_run(&|run| field(run, "messages")),
            rate: per_run(&|run| field(run, "messages") / field(run, "seconds").max(1e-9)),
            cpu_seconds: per_run(&|run| field(run, "cpu")),
            cpu_us: per_run(&|run| field(run, "cpu") / field(run, "messages").max(1.0) * 1e6),
            p50_us: per_run(&|run| field(run, "p50_us")),
            p99_us: per_run(&|run| field(run, "p99_us")),
        }
    }

    /// No tick counted: the CPU per message is below one tick's share.
    fn below_one_tick(&self) -> bool {
        self.cpu_seconds <= 0.0
    }

    fn coarse(&self) -> bool {
        self.cpu_seconds < FINE_TICKS * TICK_SECONDS
    }

    /// CPU per message, or its upper bound when no tick was counted.
    fn cpu_bound_us(&self) -> f64 {
        if self.below_one_tick() {
            TICK_SECONDS / self.messages.max(1.0) * 1e6
        } else {
            self.cpu_us
        }
    }

    /// "12.34"; "~0.60" from fewer than 10 ticks; "<0.25" from none.
    fn cpu_text(&self) -> String {
        let mark = if self.below_one_tick() {
            "<"
        } else if self.coarse() {
            "~"
        } else {
            ""
        };
        format!("{mark}{:.2}", self.cpu_bound_us())
    }
}

/// A ratio to the best peer, with how far to trust it: `<` an upper bound
/// (no CPU tick counted), `~` from fewer than 10 ticks on either side.
#[derive(Clone, Copy)]
struct Ratio {
    value: f64,
    mark: &'static str,
}

impl Ratio {
    fn text(ratio: Option<Self>) -> String {
        ratio.map_or_else(
            || "-".into(),
            |ratio| format!("{}{:.2}x", ratio.mark, ratio.value),
        )
    }

    /// "yes"/"no" at the printed precision (so 0.33x meets a third);
    /// "?" when an upper bound does not settle it.
    fn met(ratio: Option<Self>, ok: impl Fn(f64) -> bool) -> &'static str {
        match ratio {
            None => "-",
            Some(ratio) => {
                let shown = (ratio.value * 100.0).round() / 100.0;
                match (ok(shown), ratio.mark) {
                    (true, _) => "yes",
                    (false, "<") => "?",
                    (false, _) => "no",
                }
            }
        }
    }
}

/// The best peers of one scenario: the lowest CPU per message and the
/// highest rate (possibly two different peers).
struct Best<'a> {
    cpu: Option<&'a Cell>,
    rate: Option<&'a Cell>,
}

impl<'a> Best<'a> {
    fn of(group: &Group, cells: &'a [Cell]) -> Self {
        let peers = || {
            cells
                .iter()
                .filter(|cell| group.peers.contains(&cell.client))
        };
        Self {
            cpu: peers().min_by(|a, b| a.cpu_bound_us().total_cmp(&b.cpu_bound_us())),
            rate: peers().max_by(|a, b| a.rate.total_cmp(&b.rate)),
        }
    }

    /// `cell`'s CPU per message against the best peer's; none when the
    /// best peer counted no tick (nothing to divide by).
    fn cpu_ratio(&self, cell: &Cell) -> Option<Ratio> {
        let best = self.cpu.filter(|best| !best.below_one_tick())?;
        let mark = if cell.below_one_tick() {
            "<"
        } else if cell.coarse() || best.coarse() {
            "~"
        } else {
            ""
        };
        Some(Ratio {
            value: cell.cpu_bound_us() / best.cpu_us,
            mark,
        })
    }

    fn rate_ratio(&self, cell: &Cell) -> Option<Ratio> {
        let best = self.rate.filter(|best| best.rate > 0.0)?;
        Some(Ratio {
            value: cell.rate / best.rate,
            mark: "",
        })
    }
}

/// A comma-separated filter from the environment, checked against what
/// it may name; `None` when unset or empty (everything).
fn filter(name: &str, known: &[String]) -> Result<Option<Vec<String>>, Failure> {
    let Ok(value) = std::env::var(name) else {
        return Ok(None);
    };
    let chosen: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(String::from)
        .collect();
    if chosen.is_empty() {
        return Ok(None);
    }
    if let Some(unknown) = chosen.iter().find(|item| !known.contains(item)) {
        return Err(format!("{name}: unknown {unknown:?}; one of {}", known.join(",")).into());
    }
    Ok(Some(chosen))
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, Failure> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .parse()
            .map_err(|_| format!("{name}: not a number: {value:?}").into()),
        _ => Ok(default),
    }
}

async fn parent() -> Result<(), Failure> {
    let started = Instant::now();
    let rounds: usize = env_number("ROUNDS", 3)?;
    let scale: f64 = env_number("SCALE", 1.0)?;
    let scaled = |count: f64| ((count * scale) as u64).max(100);
    let all: Vec<(&str, usize, u64)> = vec![
        ("publish", 16, scaled(200_000.0)),
        ("publish-confirm", 16, scaled(100_000.0)),
        ("publish-confirm-each", 16, scaled(100_000.0)),
        ("consume", 16, scaled(100_000.0)),
        ("publish", 4096, scaled(50_000.0)),
        ("publish-confirm", 4096, scaled(50_000.0)),
        ("publish-confirm-each", 4096, scaled(50_000.0)),
        ("consume", 4096, scaled(50_000.0)),
        ("rpc", 16, scaled(5_000.0)),
    ];
    let mut names: Vec<String> = all.iter().map(|(name, ..)| (*name).to_string()).collect();
    names.sort();
    names.dedup();
    let mut sizes: Vec<String> = all.iter().map(|(_, size, _)| size.to_string()).collect();
    sizes.sort();
    sizes.dedup();
    let clients: Vec<String> = GROUPS
        .iter()
        .flat_map(|group| std::iter::once(group.ours).chain(group.peers))
        .map(String::from)
        .collect();
    let chosen_scenarios = filter("SCENARIOS", &names)?;
    let chosen_sizes = filter("SIZES", &sizes)?;
    let chosen_clients = filter("CLIENTS", &clients)?;
    let wanted = |list: &Option<Vec<String>>, item: &str| {
        list.as_ref()
            .is_none_or(|list| list.iter().any(|chosen| chosen == item))
    };
    let scenarios: Vec<(&str, usize, u64)> = all
        .into_iter()
        .filter(|(name, size, _)| {
            wanted(&chosen_scenarios, name) && wanted(&chosen_sizes, &size.to_string())
        })
        .collect();

    let connection = Connection::connect(URL).await?;
    let channel = connection.channel().await?;
    let queue = format!("compare-{}", std::process::id());
    let declare = QueueDeclare {
        queue: queue.as_str().into(),
        ..Default::default()
    };
    channel.queue_declare(declare).await?;
    let rpc_queue = format!("compare-rpc-{}", std::process::id());
    let declare = QueueDeclare {
        queue: rpc_queue.as_str().into(),
        ..Default::default()
    };
    channel.queue_declare(declare).await?;
    let server = connection.channel().await?;
    server
        .basic_qos(BasicQos {
            prefetch_count: 100,
            ..Default::default()
        })
        .await?;
    let serving = tokio::spawn({
        let (server, rpc_queue) = (server.clone(), rpc_queue.clone());
        async move {
            amqp_io_tokio::rpc::serve(&server, &rpc_queue, |request| {
                (BasicProperties::default(), request.body().clone())
            })
            .await
        }
    });
    channel.confirm_select().await?;

    println!(
        "{rounds} round(s) per cell, clients alternating, SCALE={scale}; medians; \
         client CPU = user+sys of the client process over the measured part (10 ms ticks); \
         ratios against the best peer of the table (CPU: lowest, rate: highest)"
    );
    let publish = BasicPublish {
        routing_key: queue.as_str().into(),
        ..Default::default()
    };
    for group in &GROUPS {
        let members: Vec<&'static str> = std::iter::once(group.ours)
            .chain(group.peers)
            .filter(|client| wanted(&chosen_clients, client))
            .collect();
        if members.is_empty() || scenarios.is_empty() {
            continue;
        }
        println!();
        println!(
            "{}: {} vs {}",
            group.title,
            group.ours,
            group.peers.join(", ")
        );
        println!(
            "{:<20} {:>5} {:<14} {:>9} {:>10} {:>8} {:>8} {:>7} {:>7}",
            "scenario",
            "size",
            "client",
            "msgs/s",
            "CPU us/msg",
            "CPU/best",
            "rate/best",
            "p50 us",
            "p99 us"
        );
        let mut goals = Vec::new();
        for &(scenario, size, count) in &scenarios {
            let mut runs: Vec<(&'static str, Vec<Value>)> =
                members.iter().map(|client| (*client, Vec::new())).collect();
            let target = if scenario == "rpc" {
                &rpc_queue
            } else {
                &queue
            };
            for _ in 0..rounds {
                for (client, results) in &mut runs {
                    if scenario == "consume" {
                        let payload = bytes::Bytes::from(body(size));
                        for _ in 0..count {
                            channel
                                .publish(&publish, &BasicProperties::default(), payload.clone())
                                .await?;
                        }
                        channel.wait_for_confirms(Duration::from_secs(120)).await?;
                    }
                    results.push(run_child(client, scenario, size, count, target)?);
                    let purge = QueuePurge {
                        queue: queue.as_str().into(),
                        ..Default::default()
                    };
                    channel.queue_purge(purge).await?;
                }
            }
            let cells: Vec<Cell> = runs
                .iter()
                .map(|(client, results)| Cell::of(client, results))
                .collect();
            let best = Best::of(group, &cells);
            for cell in &cells {
                let (p50, p99) = if scenario == "rpc" {
                    (format!("{:.0}", cell.p50_us), format!("{:.0}", cell.p99_us))
                } else {
                    ("-".into(), "-".into())
                };
                println!(
                    "{scenario:<20} {size:>5} {:<14} {:>9.0} {:>10} {:>8} {:>9} {p50:>7} {p99:>7}",
                    cell.client,
                    cell.rate,
                    cell.cpu_text(),
                    Ratio::text(best.cpu_ratio(cell)),
                    Ratio::text(best.rate_ratio(cell)),
                );
            }
            if let Some(ours) = cells.iter().find(|cell| cell.client == group.ours) {
                goals.push((
                    scenario,
                    size,
                    best.cpu_ratio(ours),
                    best.cpu.map(|peer| peer.client),
                    best.rate_ratio(ours),
                    best.rate.map(|peer| peer.client),
                ));
            }
        }
        if !goals.is_empty() {
            println!();
            println!(
                "CPU per message: \"~\" from fewer than {FINE_TICKS} ticks of 10 ms, \"<\" an upper bound (no tick counted)"
            );
            println!(
                "{} against the goals of issue #15: client CPU per message at most 1/3 of the best peer's, \
                 throughput at least {RATE_GOAL}x the best peer's",
                group.ours
            );
            println!(
                "{:<20} {:>5} {:>22} {:>4} {:>22} {:>4}",
                "scenario", "size", "CPU vs best peer", "met", "rate vs best peer", "met"
            );
            for (scenario, size, cpu, cpu_peer, rate, rate_peer) in goals {
                let with = |ratio: Option<Ratio>, peer: Option<&str>| match (ratio, peer) {
                    (Some(_), Some(peer)) => format!("{} ({peer})", Ratio::text(ratio)),
                    _ => "-".into(),
                };
                let cpu_met = Ratio::met(cpu, |ratio| ratio <= (CPU_GOAL * 100.0).round() / 100.0);
                let rate_met = Ratio::met(rate, |ratio| ratio >= RATE_GOAL);
                println!(
                    "{scenario:<20} {size:>5} {:>22} {cpu_met:>4} {:>22} {rate_met:>4}",
                    with(cpu, cpu_peer),
                    with(rate, rate_peer),
                );
            }
        }
    }
    serving.abort();
    for name in [&queue, &rpc_queue] {
        let delete = QueueDelete {
            queue: name.as_str().into(),
            ..Default::default()
        };
        channel.queue_delete(delete).await?;
    }
    connection.close().await?;
    let elapsed = started.elapsed().as_secs();
    println!();
    println!("took {} min {} s", elapsed / 60, elapsed % 60);
    Ok(())
}

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let result = match arguments.first().map(String::as_str) {
        Some("child") => child(&arguments[1..]),
        _ => runtime().and_then(|runtime| runtime.block_on(parent())),
    };
    if let Err(error) = result {
        eprintln!("compare: {error}");
        std::process::exit(1);
    }
}
