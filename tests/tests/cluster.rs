//! The blocking adapter against the local 3-node RabbitMQ cluster of
//! `scripts/cluster` (127.0.0.1:5681-5683): a quorum queue declared through
//! one node, published to through another and consumed through the third
//! (the nodes are one cluster), and a hard-killed node ending its
//! connections while the other nodes carry on; quorum queues counting
//! redeliveries, streams read from every kind of offset, what RabbitMQ
//! refuses on both turned into local errors, and node 3's short consumer
//! timeout ending a channel with a typed error, or, with recovery,
//! reopening it and its consumer. `tests/tests/cluster_tokio.rs` runs the
//! same through the tokio adapter.
//!
//! Each test brings the cluster up first (`scripts/cluster up`, about a
//! second when it is running) and fails, never passes silently, when it
//! cannot.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use amqp_io_common::recovery::RecoveryEvent;
use amqp_io_common::ConnectOptions;
use amqp_io_std::{Channel, Connection, Error};
use amqp_proto::codec::{BasicProperties, FieldTable, FieldValue, LongString};
use amqp_proto::error::StreamRefusal;
use amqp_proto::queue::{QueueArguments, QueueProperty, QueueType, StreamOffset};
use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::spec::{BasicConsume, BasicGet, BasicQos, QueueDeclare, QueueDelete};
use amqp_proto::{Backoff, ConnectionError, UsageError};
use amqp_tests::{cluster, passive_declare, publish_to, unique};

const SHORT: Duration = Duration::from_secs(10);

/// A connection to node `n`.
fn open(n: u8) -> Connection {
    match Connection::open(&cluster::url(n)) {
        Ok(connection) => connection,
        Err(error @ Error::Connect { .. }) => cluster::unavailable(&format!("node {n}: {error}")),
        Err(error) => panic!("cannot open a connection to node {n}: {error}"),
    }
}

/// `queue.declare` of a durable quorum queue (`x-queue-type` = `quorum`,
/// a long string, as RabbitMQ requires).
fn quorum_queue(name: &str) -> QueueDeclare {
    quorum_or(name, "quorum")
}

fn quorum_or(name: &str, queue_type: &str) -> QueueDeclare {
    let mut arguments = FieldTable::new();
    arguments.insert(
        "x-queue-type",
        FieldValue::LongString(LongString::from(queue_type)),
    );
    QueueDeclare {
        queue: name.into(),
        durable: true,
        arguments,
        ..Default::default()
    }
}

/// Publishes `count` messages (bodies "0", "1", ...) to `queue` with
/// confirms and waits until the broker has them all.
fn publish_confirmed(channel: &Channel, queue: &str, count: usize) {
    channel.confirm_select().unwrap();
    for n in 0..count {
        channel
            .publish(
                &publish_to(queue),
                &BasicProperties::default(),
                n.to_string(),
            )
            .unwrap();
    }
    channel.wait_for_confirms(SHORT).unwrap();
}

/// Consumes `count` messages from `queue`, acking each; their bodies.
fn consume(channel: &Channel, queue: &str, count: usize) -> Vec<String> {
    channel
        .basic_qos(BasicQos {
            prefetch_count: 50,
            ..Default::default()
        })
        .unwrap();
    let consumer = channel
        .basic_consume(BasicConsume {
            queue: queue.into(),
            ..Default::default()
        })
        .unwrap();
    let mut bodies = Vec::with_capacity(count);
    while bodies.len() < count {
        let delivery = consumer
            .recv_timeout(SHORT)
            .unwrap_or_else(|error| panic!("message {} of {count}: {error}", bodies.len()));
        bodies.push(String::from_utf8_lossy(delivery.body()).into_owned());
        delivery.ack().unwrap();
    }
    consumer.cancel().unwrap();
    bodies
}

fn numbered(count: usize) -> Vec<String> {
    (0..count).map(|n| n.to_string()).collect()
}

#[test]
fn a_quorum_queue_declared_on_one_node_is_published_to_and_consumed_through_the_others() {
    let _cluster = cluster::lock();
    let [one, two, three] = cluster::NODES.map(open);
    let queue = unique("cluster.quorum");

    let declaring = one.channel().unwrap();
    let declared = declaring.queue_declare(quorum_queue(&queue)).unwrap();
    assert_eq!(declared.message_count, 0);

    // The same name as a classic queue is refused as inequivalent: the
    // queue is a quorum queue, and node 3 knows it.
    let other = three.channel().unwrap();
    match other.queue_declare(quorum_or(&queue, "classic")) {
        Err(Error::ChannelClosed(reason)) => {
            assert_eq!(reason.code, ReplyCode::PRECONDITION_FAILED, "{reason:?}");
        }
        other => panic!("expected 406 for x-queue-type=classic, got {other:?}"),
    }

    const COUNT: usize = 200;
    publish_confirmed(&two.channel().unwrap(), &queue, COUNT);
    let consuming = three.channel().unwrap();
    assert_eq!(
        consuming
            .queue_declare(passive_declare(&queue))
            .unwrap()
            .message_count,
        u32::try_from(COUNT).unwrap()
    );
    assert_eq!(consume(&consuming, &queue, COUNT), numbered(COUNT));

    let left = declaring
        .queue_delete(QueueDelete {
            queue: queue.as_str().into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(left, 0, "every message was consumed and acked");
    for connection in [one, two, three] {
        connection.close().unwrap();
    }
}

#[test]
fn a_killed_node_ends_its_connections_and_the_other_nodes_carry_on() {
    let _cluster = cluster::lock();
    let survivor = open(1);
    let doomed = open(2);
    doomed.channel().unwrap();

    let killed = cluster::Killed::node(2);
    // The node's process is gone, so is its end of the socket: the
    // connection learns of it at once, not after heartbeats.
    let started = Instant::now();
    match doomed.drain_events(SHORT) {
        Err(Error::ConnectionClosed(ConnectionError::TransportClosed(_))) => {}
        other => panic!("expected the transport to close, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!doomed.is_open());

    // Node 1 carries on, and so does a quorum queue with two of its three
    // members up.
    let queue = unique("cluster.survivor");
    let channel = survivor.channel().unwrap();
    channel.queue_declare(quorum_queue(&queue)).unwrap();
    publish_confirmed(&channel, &queue, 10);
    assert_eq!(consume(&channel, &queue, 10), numbered(10));

    // Back in the cluster, node 2 knows the queue declared while it was
    // down.
    if let Err(error) = killed.start() {
        cluster::unavailable(&error);
    }
    let rejoined = open(2);
    let declared = rejoined
        .channel()
        .unwrap()
        .queue_declare(passive_declare(&queue))
        .unwrap();
    assert_eq!(declared.message_count, 0);

    channel
        .queue_delete(QueueDelete {
            queue: queue.as_str().into(),
            ..Default::default()
        })
        .unwrap();
    survivor.close().unwrap();
    rejoined.close().unwrap();
}

fn delete(channel: &Channel, queue: &str) {
    channel
        .queue_delete(QueueDelete {
            queue: queue.into(),
            ..Default::default()
        })
        .unwrap();
}

fn prefetch(channel: &Channel, count: u16) {
    channel
        .basic_qos(BasicQos {
            prefetch_count: count,
            ..Default::default()
        })
        .unwrap();
}

fn body(delivery: &amqp_io_std::Delivery) -> String {
    String::from_utf8_lossy(delivery.body()).into_owned()
}

#[test]
fn a_quorum_queue_counts_each_redelivery_of_a_requeued_message() {
    let _cluster = cluster::lock();
    let connection = open(1);
    let channel = connection.channel().unwrap();
    let queue = unique("cluster.redelivered");
    channel
        .queue_declare(QueueArguments::quorum().delivery_limit(20).declare(&queue))
        .unwrap();
    publish_confirmed(&channel, &queue, 1);
    prefetch(&channel, 1);
    let consumer = channel
        .basic_consume(BasicConsume {
            queue: queue.as_str().into(),
            ..Default::default()
        })
        .unwrap();
    let mut counts = Vec::new();
    for _ in 0..4 {
        let delivery = consumer.recv_timeout(SHORT).unwrap();
        assert_eq!(body(&delivery), "0");
        assert_eq!(delivery.redelivered, !counts.is_empty());
        counts.push(delivery.delivery_count());
        delivery.nack(true).unwrap();
    }
    // RabbitMQ adds the header from the second delivery on.
    assert_eq!(counts, [None, Some(1), Some(2), Some(3)]);
    let last = consumer.recv_timeout(SHORT).unwrap();
    assert_eq!(last.delivery_count(), Some(4));
    last.ack().unwrap();
    consumer.cancel().unwrap();
    delete(&channel, &queue);
    connection.close().unwrap();
}

#[test]
fn quorum_queues_rabbitmq_would_refuse_are_local_errors_and_the_channel_goes_on() {
    let _cluster = cluster::lock();
    let connection = open(2);
    let channel = connection.channel().unwrap();
    let queue = unique("cluster.quorum-refused");
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
        match channel.queue_declare(declare) {
            Err(Error::Usage(UsageError::QueueProperty {
                queue_type: QueueType::Quorum,
                property: refused,
                ..
            })) => assert_eq!(refused, property),
            other => panic!("expected a local refusal of {property}, got {other:?}"),
        }
    }
    // Nothing reached the broker: the channel is open, the queue unknown.
    assert!(channel.close_reason().is_none());
    match channel.queue_declare(passive_declare(&queue)) {
        Err(Error::ChannelClosed(reason)) => assert_eq!(reason.code, ReplyCode::NOT_FOUND),
        other => panic!("the queue should not exist, got {other:?}"),
    }
    let channel = connection.channel().unwrap();
    channel
        .queue_declare(QueueArguments::quorum().declare(&queue))
        .unwrap();
    delete(&channel, &queue);
    assert!(connection.is_open());
    connection.close().unwrap();
}

/// Declares a stream on `channel` and publishes `count` messages (bodies
/// "0", "1", ...) with confirms; they are at offsets 0.. of the new stream.
fn stream_of(channel: &Channel, count: usize) -> String {
    let stream = unique("cluster.stream");
    channel
        .queue_declare(QueueArguments::stream().declare(&stream))
        .unwrap();
    publish_confirmed(channel, &stream, count);
    stream
}

/// Consumes `stream` from `offset` on a channel of its own, acking each,
/// until `quiet` passes without a delivery; the (body, offset) of each.
fn read_stream(
    connection: &Connection,
    stream: &str,
    offset: StreamOffset,
    quiet: Duration,
) -> Vec<(String, Option<u64>)> {
    let channel = connection.channel().unwrap();
    prefetch(&channel, 100);
    let consumer = channel.basic_consume(offset.consume(stream)).unwrap();
    let mut read = Vec::new();
    loop {
        match consumer.recv_timeout(quiet) {
            Ok(delivery) => {
                read.push((body(&delivery), delivery.stream_offset()));
                delivery.ack().unwrap();
            }
            Err(Error::Timeout { .. }) => break,
            Err(other) => panic!("reading {stream} from {offset:?}: {other}"),
        }
    }
    consumer.cancel().unwrap();
    channel.close().unwrap();
    read
}

fn numbered_from(first: usize, count: usize) -> Vec<(String, Option<u64>)> {
    (first..first + count)
        .map(|n| (n.to_string(), Some(n as u64)))
        .collect()
}

#[test]
fn a_stream_is_read_from_each_kind_of_offset() {
    let _cluster = cluster::lock();
    let connection = open(1);
    let channel = connection.channel().unwrap();
    let before = SystemTime::now() - Duration::from_secs(3600);
    let stream = stream_of(&channel, 1_000);
    let quiet = Duration::from_millis(1_500);

    // From an offset: exactly the messages from it on, each with its own.
    assert_eq!(
        read_stream(&connection, &stream, StreamOffset::Offset(500), quiet),
        numbered_from(500, 500)
    );
    assert_eq!(
        read_stream(&connection, &stream, StreamOffset::First, quiet),
        numbered_from(0, 1_000)
    );
    // From an hour ago, by timestamp or interval: everything.
    assert_eq!(
        read_stream(&connection, &stream, StreamOffset::at(before), quiet),
        numbered_from(0, 1_000)
    );
    let hour = StreamOffset::Interval("1h".parse().unwrap());
    assert_eq!(
        read_stream(&connection, &stream, hour, quiet),
        numbered_from(0, 1_000)
    );
    // Last: the last chunk written, ending with the last message.
    let last = read_stream(&connection, &stream, StreamOffset::Last, quiet);
    let first_of_last = last.first().and_then(|(_, offset)| *offset).unwrap();
    assert_eq!(last, numbered_from(first_of_last as usize, last.len()));
    assert_eq!(last.last().map(|(body, _)| body.as_str()), Some("999"));
    // Next, and a time after the last write: nothing until a new message.
    for offset in [
        StreamOffset::Next,
        StreamOffset::at(SystemTime::now() + Duration::from_secs(3600)),
    ] {
        assert_eq!(
            read_stream(&connection, &stream, offset, Duration::from_millis(500)),
            [],
            "{offset:?}"
        );
    }
    let next_channel = connection.channel().unwrap();
    prefetch(&next_channel, 10);
    let next = next_channel
        .basic_consume(StreamOffset::Next.consume(&stream))
        .unwrap();
    // The consumer is attached once its consume-ok is in; publish after.
    publish_confirmed(&channel, &stream, 1);
    let delivery = next.recv_timeout(SHORT).unwrap();
    assert_eq!(
        (body(&delivery), delivery.stream_offset()),
        ("0".to_owned(), Some(1_000))
    );
    delivery.ack().unwrap();
    next.cancel().unwrap();

    delete(&channel, &stream);
    connection.close().unwrap();
}

/// `result` failed with the stream refusal `matches` accepts, before
/// anything was sent.
fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, Error>,
    matches: impl Fn(&StreamRefusal) -> bool,
) {
    match result {
        Err(Error::Usage(UsageError::Stream(refusal))) if matches(&refusal) => {}
        other => panic!("expected a local stream refusal, got {other:?}"),
    }
}

#[test]
fn what_rabbitmq_refuses_on_a_stream_is_a_local_error_and_the_connection_stays_open() {
    let _cluster = cluster::lock();
    let connection = open(2);
    let channel = connection.channel().unwrap();
    let stream = stream_of(&channel, 3);
    let consume = || StreamOffset::First.consume(&stream);

    // RabbitMQ closes the channel with 406 for this one...
    assert_refused(channel.basic_consume(consume()), |refusal| {
        matches!(refusal, StreamRefusal::NoPrefetch { .. })
    });
    // ... and the whole connection with 540 for these.
    prefetch(&channel, 10);
    let no_ack = BasicConsume {
        no_ack: true,
        ..consume()
    };
    assert_refused(channel.basic_consume(no_ack), |refusal| {
        matches!(refusal, StreamRefusal::NoAck { .. })
    });
    let get = BasicGet {
        queue: stream.as_str().into(),
        ..Default::default()
    };
    assert_refused(channel.basic_get(get), |refusal| {
        matches!(refusal, StreamRefusal::Get { .. })
    });
    let consumer = channel.basic_consume(consume()).unwrap();
    let global = BasicQos {
        prefetch_count: 10,
        global: true,
        ..Default::default()
    };
    assert_refused(channel.basic_qos(global), |refusal| {
        matches!(refusal, StreamRefusal::GlobalQos { .. })
    });
    let delivery = consumer.recv_timeout(SHORT).unwrap();
    assert_eq!(delivery.stream_offset(), Some(0));
    assert_refused(delivery.nack(true), |refusal| {
        matches!(refusal, StreamRefusal::Requeue { .. })
    });
    assert_refused(delivery.reject(false), |refusal| {
        matches!(refusal, StreamRefusal::Requeue { .. })
    });
    delivery.ack().unwrap();

    // Nothing was sent: the connection and channel work as before.
    let delivery = consumer.recv_timeout(SHORT).unwrap();
    assert_eq!(delivery.stream_offset(), Some(1));
    delivery.ack().unwrap();
    assert!(connection.is_open() && channel.close_reason().is_none());
    // Dropped with a delivery it holds, the consumer gives it back with an
    // ack, not the reject RabbitMQ refuses on a stream.
    drop(consumer);
    delete(&channel, &stream);
    assert!(connection.is_open());
    connection.close().unwrap();
}

type Reports = Arc<Mutex<Vec<RecoveryEvent>>>;

/// A connection to the node with the short consumer timeout, recovering
/// when `recovery`, with its recovery reports.
fn timeout_node(recovery: bool) -> (Connection, Reports) {
    let mut options =
        ConnectOptions::from_url(&cluster::url(cluster::CONSUMER_TIMEOUT_NODE)).unwrap();
    if recovery {
        options.recovery = Some(Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
            max_attempts: Some(20),
        });
    }
    let connection = Connection::open_with(options)
        .unwrap_or_else(|error| cluster::unavailable(&format!("node 3: {error}")));
    let reports: Reports = Arc::default();
    let sink = Arc::clone(&reports);
    connection.on_recovery(move |event| sink.lock().unwrap().push(event.clone()));
    (connection, reports)
}

/// A durable queue holding one message ("0"), and a consumer of it with a
/// prefetch of 1.
fn held_message(connection: &Connection) -> (Channel, amqp_io_std::Consumer, String) {
    let channel = connection.channel().unwrap();
    let queue = unique("cluster.consumer-timeout");
    channel
        .queue_declare(QueueArguments::quorum().declare(&queue))
        .unwrap();
    publish_confirmed(&channel, &queue, 1);
    let consuming = connection.channel().unwrap();
    prefetch(&consuming, 1);
    let consumer = consuming
        .basic_consume(BasicConsume {
            queue: queue.as_str().into(),
            ..Default::default()
        })
        .unwrap();
    (consuming, consumer, queue)
}

/// Longer than the broker takes to notice a consumer timeout (the timeout
/// plus a few 500 ms channel ticks).
fn past_the_timeout() -> Duration {
    cluster::CONSUMER_TIMEOUT * 5
}

#[test]
fn a_delivery_held_past_the_consumer_timeout_ends_the_consumer_with_an_error_that_says_so() {
    let _cluster = cluster::lock();
    let (connection, _) = timeout_node(false);
    let (channel, consumer, queue) = held_message(&connection);
    let held = consumer.recv_timeout(SHORT).unwrap();
    assert_eq!(body(&held), "0");
    let started = Instant::now();
    let error = consumer.recv_timeout(past_the_timeout()).unwrap_err();
    assert!(error.is_consumer_timeout(), "{error}");
    let Error::ChannelClosed(reason) = &error else {
        unreachable!("a consumer timeout is a channel close")
    };
    assert_eq!(reason.code, ReplyCode::PRECONDITION_FAILED);
    assert_eq!(reason.consumer_timeout(), Some(cluster::CONSUMER_TIMEOUT));
    assert!(started.elapsed() < past_the_timeout());
    // Every call on the channel says the same; the connection goes on.
    assert!(held.ack().is_err_and(|error| error.is_consumer_timeout()));
    assert!(channel
        .close_reason()
        .is_some_and(|reason| reason.is_consumer_timeout()));
    assert!(connection.is_open());
    // The broker requeued the message: another channel gets it again.
    let other = connection.channel().unwrap();
    prefetch(&other, 1);
    let consumer = other
        .basic_consume(BasicConsume {
            queue: queue.as_str().into(),
            ..Default::default()
        })
        .unwrap();
    let again = consumer.recv_timeout(SHORT).unwrap();
    assert_eq!((body(&again), again.redelivered), ("0".to_owned(), true));
    again.ack().unwrap();
    consumer.cancel().unwrap();
    delete(&other, &queue);
    connection.close().unwrap();
}

#[test]
fn with_recovery_a_consumer_timeout_reopens_the_channel_and_the_message_comes_again() {
    let _cluster = cluster::lock();
    let (connection, reports) = timeout_node(true);
    let (channel, consumer, queue) = held_message(&connection);
    let held = consumer.recv_timeout(SHORT).unwrap();
    assert_eq!((body(&held), held.redelivered), ("0".to_owned(), false));

    // The broker closes the channel; it comes back with the consumer, and
    // the message is delivered again to the same consumer.
    let again = consumer.recv_timeout(past_the_timeout()).unwrap();
    assert_eq!((body(&again), again.redelivered), ("0".to_owned(), true));
    assert_eq!(again.delivery_count(), Some(1), "a quorum queue counts it");
    // The old delivery's ack does nothing (the broker requeued it), the
    // new one's settles the message.
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
    assert!(channel.close_reason().is_none(), "the handle works again");
    let checking = connection.channel().unwrap();
    consumer.cancel().unwrap();
    let left = checking.queue_declare(passive_declare(&queue)).unwrap();
    assert_eq!(
        left.message_count, 0,
        "acknowledged on the reopened channel"
    );
    delete(&checking, &queue);
    connection.close().unwrap();
}
