//! The blocking adapter against the local 3-node RabbitMQ cluster of
//! `scripts/cluster` (127.0.0.1:5681-5683): a quorum queue declared through
//! one node, published to through another and consumed through the third
//! (the nodes are one cluster), and a hard-killed node ending its
//! connections while the other nodes carry on.
//!
//! Each test brings the cluster up first (`scripts/cluster up`, about a
//! second when it is running) and fails, never passes silently, when it
//! cannot.

use std::time::{Duration, Instant};

use amqp_io_std::{Channel, Connection, Error};
use amqp_proto::codec::{BasicProperties, FieldTable, FieldValue, LongString};
use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::spec::{BasicConsume, BasicQos, QueueDeclare, QueueDelete};
use amqp_proto::ConnectionError;
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
