//! The tokio adapter against the local 3-node RabbitMQ cluster of
//! `scripts/cluster` (127.0.0.1:5681-5683), the counterpart of
//! `tests/tests/cluster.rs`: quorum queues counting redeliveries, streams
//! read from each kind of offset, what RabbitMQ refuses on both turned
//! into local errors with the connection still open, and node 3's short
//! consumer timeout ending a channel with a typed error or, with recovery,
//! reopening it and its consumer.
//!
//! Each test takes the cluster lock, which brings the cluster up first
//! (`scripts/cluster up`, about a second when it is running), and fails,
//! never passes silently, when it cannot.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use amqp_io_common::recovery::RecoveryEvent;
use amqp_io_common::ConnectOptions;
use amqp_io_tokio::{Channel, Connection, Consumer, Delivery, Error};
use amqp_proto::codec::BasicProperties;
use amqp_proto::error::StreamRefusal;
use amqp_proto::queue::{QueueArguments, QueueProperty, StreamOffset};
use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::spec::{BasicConsume, BasicGet, BasicQos, QueueDeclare, QueueDelete};
use amqp_proto::{Backoff, UsageError};
use amqp_tests::{cluster, publish_to, unique};

const SHORT: Duration = Duration::from_secs(10);

/// Runs a test's body on a runtime of its own.
fn block_on(test: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(test);
}

async fn open(n: u8) -> Connection {
    match Connection::connect(&cluster::url(n)).await {
        Ok(connection) => connection,
        Err(error @ Error::Connect { .. }) => cluster::unavailable(&format!("node {n}: {error}")),
        Err(error) => panic!("cannot open a connection to node {n}: {error}"),
    }
}

async fn publish_confirmed(channel: &Channel, queue: &str, count: usize) {
    channel.confirm_select().await.unwrap();
    for n in 0..count {
        channel
            .publish(
                &publish_to(queue),
                &BasicProperties::default(),
                n.to_string(),
            )
            .await
            .unwrap();
    }
    channel.wait_for_confirms(SHORT).await.unwrap();
}

async fn prefetch(channel: &Channel, count: u16) {
    channel
        .basic_qos(BasicQos {
            prefetch_count: count,
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn delete(channel: &Channel, queue: &str) {
    channel
        .queue_delete(QueueDelete {
            queue: queue.into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn consume(channel: &Channel, queue: &str) -> Consumer {
    channel
        .basic_consume(BasicConsume {
            queue: queue.into(),
            ..Default::default()
        })
        .await
        .unwrap()
}

fn body(delivery: &Delivery) -> String {
    String::from_utf8_lossy(delivery.body()).into_owned()
}

#[test]
fn a_quorum_queue_counts_each_redelivery_of_a_requeued_message_tokio() {
    // Taken outside the runtime: the guard is not held across an await.
    let _cluster = cluster::lock();
    block_on(async {
        let connection = open(1).await;
        let channel = connection.channel().await.unwrap();
        let queue = unique("cluster-tokio.redelivered");
        channel
            .queue_declare(QueueArguments::quorum().delivery_limit(20).declare(&queue))
            .await
            .unwrap();
        publish_confirmed(&channel, &queue, 1).await;
        prefetch(&channel, 1).await;
        let mut consumer = consume(&channel, &queue).await;
        let mut counts = Vec::new();
        for _ in 0..4 {
            let delivery = consumer.recv_timeout(SHORT).await.unwrap();
            assert_eq!(body(&delivery), "0");
            assert_eq!(delivery.redelivered, !counts.is_empty());
            counts.push(delivery.delivery_count());
            delivery.nack(true).unwrap();
        }
        assert_eq!(counts, [None, Some(1), Some(2), Some(3)]);
        consumer.recv_timeout(SHORT).await.unwrap().ack().unwrap();
        consumer.cancel().await.unwrap();
        delete(&channel, &queue).await;
        connection.close().await.unwrap();
    });
}

#[test]
fn quorum_queues_rabbitmq_would_refuse_are_local_errors_tokio() {
    // Taken outside the runtime: the guard is not held across an await.
    let _cluster = cluster::lock();
    block_on(async {
        let connection = open(2).await;
        let channel = connection.channel().await.unwrap();
        let queue = unique("cluster-tokio.quorum-refused");
        for (declare, property) in [
            (
                QueueDeclare {
                    durable: false,
                    ..QueueArguments::quorum().declare(&queue)
                },
                QueueProperty::NonDurable,
            ),
            (
                QueueDeclare {
                    exclusive: true,
                    ..QueueArguments::quorum().declare(&queue)
                },
                QueueProperty::Exclusive,
            ),
            (
                QueueDeclare {
                    auto_delete: true,
                    ..QueueArguments::quorum().declare(&queue)
                },
                QueueProperty::AutoDelete,
            ),
        ] {
            match channel.queue_declare(declare).await {
                Err(Error::Usage(UsageError::QueueProperty {
                    property: refused, ..
                })) => assert_eq!(refused, property),
                other => panic!("expected a local refusal of {property}, got {other:?}"),
            }
        }
        assert!(channel.close_reason().is_none(), "nothing was sent");
        channel
            .queue_declare(QueueArguments::quorum().declare(&queue))
            .await
            .unwrap();
        delete(&channel, &queue).await;
        assert!(connection.is_open());
        connection.close().await.unwrap();
    });
}

async fn read_stream(
    connection: &Connection,
    stream: &str,
    offset: StreamOffset,
    quiet: Duration,
) -> Vec<(String, Option<u64>)> {
    let channel = connection.channel().await.unwrap();
    prefetch(&channel, 100).await;
    let mut consumer = channel.basic_consume(offset.consume(stream)).await.unwrap();
    let mut read = Vec::new();
    loop {
        match consumer.recv_timeout(quiet).await {
            Ok(delivery) => {
                read.push((body(&delivery), delivery.stream_offset()));
                delivery.ack().unwrap();
            }
            Err(Error::Timeout { .. }) => break,
            Err(other) => panic!("reading {stream} from {offset:?}: {other}"),
        }
    }
    consumer.cancel().await.unwrap();
    channel.close().await.unwrap();
    read
}

fn numbered_from(first: usize, count: usize) -> Vec<(String, Option<u64>)> {
    (first..first + count)
        .map(|n| (n.to_string(), Some(n as u64)))
        .collect()
}

#[test]
fn a_stream_is_read_from_each_kind_of_offset_tokio() {
    // Taken outside the runtime: the guard is not held across an await.
    let _cluster = cluster::lock();
    block_on(async {
        let connection = open(3).await;
        let channel = connection.channel().await.unwrap();
        let before = SystemTime::now() - Duration::from_secs(3600);
        let stream = unique("cluster-tokio.stream");
        channel
            .queue_declare(QueueArguments::stream().declare(&stream))
            .await
            .unwrap();
        publish_confirmed(&channel, &stream, 1_000).await;
        let quiet = Duration::from_millis(1_500);

        assert_eq!(
            read_stream(&connection, &stream, StreamOffset::Offset(500), quiet).await,
            numbered_from(500, 500)
        );
        assert_eq!(
            read_stream(&connection, &stream, StreamOffset::First, quiet).await,
            numbered_from(0, 1_000)
        );
        assert_eq!(
            read_stream(&connection, &stream, StreamOffset::at(before), quiet).await,
            numbered_from(0, 1_000)
        );
        let last = read_stream(&connection, &stream, StreamOffset::Last, quiet).await;
        assert_eq!(last.last().map(|(body, _)| body.as_str()), Some("999"));
        let first_of_last = last.first().and_then(|(_, offset)| *offset).unwrap();
        assert_eq!(last, numbered_from(first_of_last as usize, last.len()));

        let next_channel = connection.channel().await.unwrap();
        prefetch(&next_channel, 10).await;
        let mut next = next_channel
            .basic_consume(StreamOffset::Next.consume(&stream))
            .await
            .unwrap();
        assert!(matches!(
            next.recv_timeout(Duration::from_millis(500)).await,
            Err(Error::Timeout { .. })
        ));
        publish_confirmed(&channel, &stream, 1).await;
        let delivery = next.recv_timeout(SHORT).await.unwrap();
        assert_eq!(delivery.stream_offset(), Some(1_000));
        delivery.ack().unwrap();
        next.cancel().await.unwrap();

        delete(&channel, &stream).await;
        connection.close().await.unwrap();
    });
}

fn refused<T: std::fmt::Debug>(result: Result<T, Error>) -> StreamRefusal {
    match result {
        Err(Error::Usage(UsageError::Stream(refusal))) => refusal,
        other => panic!("expected a local stream refusal, got {other:?}"),
    }
}

#[test]
fn what_rabbitmq_refuses_on_a_stream_is_a_local_error_tokio() {
    // Taken outside the runtime: the guard is not held across an await.
    let _cluster = cluster::lock();
    block_on(async {
        let connection = open(1).await;
        let channel = connection.channel().await.unwrap();
        let stream = unique("cluster-tokio.stream-refused");
        channel
            .queue_declare(QueueArguments::stream().declare(&stream))
            .await
            .unwrap();
        publish_confirmed(&channel, &stream, 2).await;
        let consume = || StreamOffset::First.consume(&stream);

        assert!(matches!(
            refused(channel.basic_consume(consume()).await),
            StreamRefusal::NoPrefetch { .. }
        ));
        prefetch(&channel, 10).await;
        let no_ack = BasicConsume {
            no_ack: true,
            ..consume()
        };
        assert!(matches!(
            refused(channel.basic_consume(no_ack).await),
            StreamRefusal::NoAck { .. }
        ));
        let get = BasicGet {
            queue: stream.as_str().into(),
            ..Default::default()
        };
        assert!(matches!(
            refused(channel.basic_get(get).await),
            StreamRefusal::Get { .. }
        ));
        let mut consumer = channel.basic_consume(consume()).await.unwrap();
        let global = BasicQos {
            prefetch_count: 10,
            global: true,
            ..Default::default()
        };
        assert!(matches!(
            refused(channel.basic_qos(global).await),
            StreamRefusal::GlobalQos { .. }
        ));
        let delivery = consumer.recv_timeout(SHORT).await.unwrap();
        assert!(matches!(
            refused(delivery.nack(true)),
            StreamRefusal::Requeue { .. }
        ));
        delivery.ack().unwrap();
        let delivery = consumer.recv_timeout(SHORT).await.unwrap();
        assert_eq!(delivery.stream_offset(), Some(1));
        delivery.ack().unwrap();
        assert!(connection.is_open() && channel.close_reason().is_none());
        consumer.cancel().await.unwrap();
        delete(&channel, &stream).await;
        connection.close().await.unwrap();
    });
}

type Reports = Arc<Mutex<Vec<RecoveryEvent>>>;

async fn timeout_node(recovery: bool) -> (Connection, Reports) {
    let mut options =
        ConnectOptions::from_url(&cluster::url(cluster::CONSUMER_TIMEOUT_NODE)).unwrap();
    if recovery {
        options.recovery = Some(Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
            max_attempts: Some(20),
        });
    }
    let connection = Connection::connect_with(options)
        .await
        .unwrap_or_else(|error| cluster::unavailable(&format!("node 3: {error}")));
    let reports: Reports = Arc::default();
    let sink = Arc::clone(&reports);
    connection.on_recovery(move |event| sink.lock().unwrap().push(event.clone()));
    (connection, reports)
}

async fn held_message(connection: &Connection) -> (Channel, Consumer, String) {
    let channel = connection.channel().await.unwrap();
    let queue = unique("cluster-tokio.consumer-timeout");
    channel
        .queue_declare(QueueArguments::quorum().declare(&queue))
        .await
        .unwrap();
    publish_confirmed(&channel, &queue, 1).await;
    let consuming = connection.channel().await.unwrap();
    prefetch(&consuming, 1).await;
    let consumer = consume(&consuming, &queue).await;
    (consuming, consumer, queue)
}

fn past_the_timeout() -> Duration {
    cluster::CONSUMER_TIMEOUT * 5
}

#[test]
fn a_delivery_held_past_the_consumer_timeout_ends_the_consumer_with_an_error_that_says_so_tokio() {
    // Taken outside the runtime: the guard is not held across an await.
    let _cluster = cluster::lock();
    block_on(async {
        let (connection, _) = timeout_node(false).await;
        let (channel, mut consumer, queue) = held_message(&connection).await;
        let held = consumer.recv_timeout(SHORT).await.unwrap();
        let error = consumer.recv_timeout(past_the_timeout()).await.unwrap_err();
        assert!(error.is_consumer_timeout(), "{error}");
        match &error {
            Error::ChannelClosed(reason) => {
                assert_eq!(reason.code, ReplyCode::PRECONDITION_FAILED);
                assert_eq!(reason.consumer_timeout(), Some(cluster::CONSUMER_TIMEOUT));
            }
            other => panic!("a consumer timeout is a channel close, got {other:?}"),
        }
        assert!(held.ack().is_err_and(|error| error.is_consumer_timeout()));
        assert!(channel
            .close_reason()
            .is_some_and(|reason| reason.is_consumer_timeout()));
        assert!(connection.is_open());
        let other = connection.channel().await.unwrap();
        prefetch(&other, 1).await;
        let mut again = consume(&other, &queue).await;
        let redelivered = again.recv_timeout(SHORT).await.unwrap();
        assert!(redelivered.redelivered, "the broker requeued it");
        redelivered.ack().unwrap();
        again.cancel().await.unwrap();
        delete(&other, &queue).await;
        connection.close().await.unwrap();
    });
}

#[test]
fn with_recovery_a_consumer_timeout_reopens_the_channel_and_the_message_comes_again_tokio() {
    // Taken outside the runtime: the guard is not held across an await.
    let _cluster = cluster::lock();
    block_on(async {
        let (connection, reports) = timeout_node(true).await;
        let (channel, mut consumer, queue) = held_message(&connection).await;
        let held = consumer.recv_timeout(SHORT).await.unwrap();
        assert!(!held.redelivered);
        let again = consumer.recv_timeout(past_the_timeout()).await.unwrap();
        assert_eq!((body(&again), again.redelivered), ("0".to_owned(), true));
        assert_eq!(again.delivery_count(), Some(1));
        held.ack().unwrap();
        again.ack().unwrap();
        let reports = reports.lock().unwrap().clone();
        assert!(
            matches!(
                reports.as_slice(),
                [
                    RecoveryEvent::ChannelRecovering { channel: recovering, reason },
                    RecoveryEvent::ChannelRecovered { channel: recovered, failures, .. },
                ] if *recovering == channel.id() && *recovered == channel.id()
                    && reason.is_consumer_timeout() && failures.is_empty()
            ),
            "{reports:?}"
        );
        assert!(channel.close_reason().is_none());
        consumer.cancel().await.unwrap();
        let checking = connection.channel().await.unwrap();
        let left = checking
            .queue_declare(amqp_tests::passive_declare(&queue))
            .await
            .unwrap();
        assert_eq!(
            left.message_count, 0,
            "acknowledged on the reopened channel"
        );
        delete(&checking, &queue).await;
        connection.close().await.unwrap();
    });
}
