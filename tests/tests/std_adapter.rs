//! The blocking adapter against the real local RabbitMQ: every method, the
//! error paths (refused login, refused vhost, channel errors, forced
//! close, dead peer), confirms at volume, consumers, returns, heartbeats.
//!
//! These tests need the broker and fail (never pass silently) without it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqp_io_std::{ConnectOptions, Connection, ConnectionError, Error};
use amqp_proto::codec::{BasicProperties, FieldTable, FieldValue};
use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::spec::{
    BasicConsume, BasicGet, BasicPublish, BasicQos, ExchangeBind, ExchangeDeclare, ExchangeDelete,
    ExchangeUnbind, QueueBind, QueueDeclare, QueueDelete, QueuePurge, QueueUnbind,
};
use amqp_proto::Initiator;
use amqp_tests::{
    broker_unreachable, broker_url, connection_pid, passive_declare, proxy::Proxy, publish_to,
    rabbitmqctl, unique, url_with,
};

const SHORT: Duration = Duration::from_secs(10);

fn options(url: &str) -> ConnectOptions {
    ConnectOptions::from_url(url).expect("valid test URL")
}

fn open_with(options: ConnectOptions) -> Connection {
    match Connection::open_with(options) {
        Ok(connection) => connection,
        Err(error @ Error::Connect { .. }) => broker_unreachable(&error),
        Err(error) => panic!("cannot open a connection: {error}"),
    }
}

fn open() -> Connection {
    open_with(options(&broker_url()))
}

fn exclusive_queue(channel: &amqp_io_std::Channel) -> String {
    channel
        .queue_declare(QueueDeclare {
            exclusive: true,
            ..Default::default()
        })
        .expect("queue.declare")
        .queue
        .to_string()
}

fn message_count(channel: &amqp_io_std::Channel, queue: &str) -> u32 {
    channel
        .queue_declare(passive_declare(queue))
        .expect("passive queue.declare")
        .message_count
}

/// Publishes `count` one-byte messages (0, 1, ...) to `queue` in confirm
/// mode and waits until the broker has them all.
fn fill(channel: &amqp_io_std::Channel, queue: &str, count: u8) {
    channel.confirm_select().unwrap();
    for n in 0..count {
        channel
            .publish(&publish_to(queue), &BasicProperties::default(), vec![n])
            .unwrap();
    }
    channel.wait_for_confirms(SHORT).unwrap();
}

#[test]
fn a_wrong_password_is_a_typed_authentication_error_not_a_hang() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let started = Instant::now();
    let result = Connection::open(&url_with("guest:not-the-password", "%2f"));
    match result {
        Err(Error::ConnectionClosed(ConnectionError::AuthenticationFailed(_))) => {}
        Err(error @ Error::Connect { .. }) => broker_unreachable(&error),
        other => panic!("expected an authentication failure, got {other:?}"),
    }
    assert!(started.elapsed() < SHORT, "took {:?}", started.elapsed());
}

#[test]
fn a_missing_virtual_host_is_refused_access() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let result = Connection::open(&url_with("guest:guest", "no-such-vhost-here"));
    match result {
        Err(Error::ConnectionClosed(ConnectionError::AccessRefused(text))) => {
            assert!(
                text.contains("no-such-vhost-here") || !text.is_empty(),
                "{text}"
            );
        }
        Err(error @ Error::Connect { .. }) => broker_unreachable(&error),
        other => panic!("expected access refused, got {other:?}"),
    }
}

/// A handle of a closed channel names nothing once its id is reused: an
/// ack through it must not settle the new channel's delivery of the same
/// tag (the broker would then close the new channel for a double ack).
#[test]
fn a_closed_channels_handle_cannot_act_on_a_reused_id() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = open();
    let old = connection.channel().unwrap();
    old.close().unwrap();
    let new = connection.channel().unwrap();
    assert_eq!(new.id(), old.id(), "the lowest free id is reused");
    let queue = exclusive_queue(&new);
    fill(&new, &queue, 1);
    let get = BasicGet {
        queue: queue.as_str().into(),
        ..Default::default()
    };
    let message = new.basic_get(get).unwrap().expect("a message");
    assert!(matches!(
        old.ack(message.delivery_tag, false),
        Err(Error::Usage(amqp_proto::UsageError::ChannelNotOpen(_)))
    ));
    new.ack(message.delivery_tag, false).unwrap();
    assert_eq!(message_count(&new, &queue), 0);
    connection.close().unwrap();
}

/// A graceful close lets every outstanding confirm arrive before it closes.
#[test]
fn closing_when_confirmed_loses_no_confirm() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = open();
    let channel = connection.channel().unwrap();
    let queue = exclusive_queue(&channel);
    channel.confirm_select().unwrap();
    let publish = BasicPublish {
        routing_key: queue.as_str().into(),
        ..Default::default()
    };
    let confirmations: Vec<_> = (0..500)
        .map(|_| {
            channel
                .publish(&publish, &BasicProperties::default(), "x")
                .unwrap()
        })
        .collect();
    connection
        .close_when_confirmed(Duration::from_secs(10))
        .unwrap();
    for confirmation in confirmations {
        confirmation.wait(Duration::from_secs(1)).unwrap();
    }
    assert!(!connection.is_open());
}

#[test]
fn every_channel_method_works_against_the_broker() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = open();
    assert!(connection.tuning().frame_max >= 4096);
    match connection.server_properties().get("product") {
        Some(FieldValue::LongString(product)) => assert_eq!(product, "RabbitMQ"),
        other => panic!("server product: {other:?}"),
    }
    let channel = connection.channel().unwrap();
    let (source, destination) = (unique("source"), unique("destination"));
    for (exchange, kind) in [(&source, "topic"), (&destination, "fanout")] {
        channel
            .exchange_declare(ExchangeDeclare {
                exchange: exchange.as_str().into(),
                exchange_type: kind.into(),
                auto_delete: false,
                ..Default::default()
            })
            .unwrap();
    }
    channel
        .exchange_bind(ExchangeBind {
            destination: destination.as_str().into(),
            source: source.as_str().into(),
            routing_key: "orders.#".into(),
            ..Default::default()
        })
        .unwrap();
    let queue = exclusive_queue(&channel);
    channel
        .queue_bind(QueueBind {
            queue: queue.as_str().into(),
            exchange: destination.as_str().into(),
            ..Default::default()
        })
        .unwrap();

    // Through both exchanges into the queue.
    channel.confirm_select().unwrap();
    let via_source = BasicPublish {
        exchange: source.as_str().into(),
        routing_key: "orders.new".into(),
        ..Default::default()
    };
    for n in 0..3 {
        let body = format!("order {n}");
        channel
            .publish(&via_source, &BasicProperties::default(), body)
            .unwrap()
            .wait(SHORT)
            .unwrap();
    }
    assert_eq!(message_count(&channel, &queue), 3);

    // get, reject (requeued), get again, nack, ack.
    let get = BasicGet {
        queue: queue.as_str().into(),
        ..Default::default()
    };
    let first = channel.basic_get(get.clone()).unwrap().expect("a message");
    assert_eq!(&first.content.body[..], b"order 0");
    channel.reject(first.delivery_tag, true).unwrap();
    let again = channel.basic_get(get.clone()).unwrap().expect("requeued");
    assert!(again.redelivered);
    channel.nack(again.delivery_tag, false, false).unwrap();
    let second = channel.basic_get(get.clone()).unwrap().expect("a message");
    channel.ack(second.delivery_tag, false).unwrap();

    // qos, recover, consume, cancel.
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
    let delivery = consumer.recv_timeout(SHORT).unwrap();
    assert_eq!(&delivery.body()[..], b"order 2");
    channel.basic_recover(true).unwrap();
    let redelivered = consumer.recv_timeout(SHORT).unwrap();
    assert!(redelivered.redelivered);
    redelivered.ack().unwrap();
    // The application's own cancel ends the consumer as amqp-io-tokio's
    // stream ends: with that cancel, told apart from the server's.
    channel.basic_cancel(consumer.tag()).unwrap();
    match consumer.recv_timeout(SHORT) {
        Err(Error::ConsumerCancelledByApplication(tag)) => {
            assert_eq!(tag, consumer.tag().to_string());
        }
        other => panic!("expected the application's cancel, got {other:?}"),
    }
    drop(consumer);
    let consumer = channel
        .basic_consume(BasicConsume {
            queue: queue.as_str().into(),
            ..Default::default()
        })
        .unwrap();
    consumer.cancel().unwrap();

    // purge, unbind, delete.
    channel
        .publish(&via_source, &BasicProperties::default(), "to purge")
        .unwrap()
        .wait(SHORT)
        .unwrap();
    let purged = channel
        .queue_purge(QueuePurge {
            queue: queue.as_str().into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(purged, 1);
    channel
        .queue_unbind(QueueUnbind {
            queue: queue.as_str().into(),
            exchange: destination.as_str().into(),
            ..Default::default()
        })
        .unwrap();
    channel
        .exchange_unbind(ExchangeUnbind {
            destination: destination.as_str().into(),
            source: source.as_str().into(),
            routing_key: "orders.#".into(),
            ..Default::default()
        })
        .unwrap();
    for exchange in [&source, &destination] {
        channel
            .exchange_delete(ExchangeDelete {
                exchange: exchange.as_str().into(),
                ..Default::default()
            })
            .unwrap();
    }
    let deleted = channel
        .queue_delete(QueueDelete {
            queue: queue.as_str().into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(deleted, 0);

    // Transactions on a channel of their own.
    let tx = connection.channel().unwrap();
    let queue = exclusive_queue(&tx);
    tx.tx_select().unwrap();
    tx.publish(
        &publish_to(&queue),
        &BasicProperties::default(),
        "rolled back",
    )
    .unwrap();
    tx.tx_rollback().unwrap();
    tx.publish(
        &publish_to(&queue),
        &BasicProperties::default(),
        "committed",
    )
    .unwrap();
    tx.tx_commit().unwrap();
    let get = BasicGet {
        queue: queue.as_str().into(),
        no_ack: true,
        ..Default::default()
    };
    let message = tx
        .basic_get(get.clone())
        .unwrap()
        .expect("the committed message");
    assert_eq!(&message.content.body[..], b"committed");
    assert!(tx.basic_get(get).unwrap().is_none());

    tx.close().unwrap();
    channel.close().unwrap();
    connection.close().unwrap();
}

#[test]
fn a_channel_error_reports_the_servers_code_and_leaves_other_channels_working() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = open();
    let doomed = connection.channel().unwrap();
    let survivor = connection.channel().unwrap();
    let missing = unique("missing");
    let error = doomed
        .queue_declare(QueueDeclare {
            queue: missing.as_str().into(),
            passive: true,
            ..Default::default()
        })
        .unwrap_err();
    match &error {
        Error::ChannelClosed(reason) => {
            assert_eq!(reason.code, ReplyCode::NOT_FOUND);
            assert_eq!(reason.initiator, Initiator::Server);
            assert!(reason.text.contains(&missing), "{}", reason.text);
        }
        other => panic!("expected a channel close, got {other:?}"),
    }
    // The closed channel says so on every later call.
    assert!(matches!(
        doomed.basic_qos(BasicQos {
            prefetch_count: 1,
            ..Default::default()
        }),
        Err(Error::ChannelClosed(_))
    ));
    assert_eq!(
        doomed.close_reason().map(|r| r.code),
        Some(ReplyCode::NOT_FOUND)
    );
    // The connection and its other channels carry on.
    exclusive_queue(&survivor);
    let fresh = connection.channel().unwrap();
    exclusive_queue(&fresh);
    connection.close().unwrap();
}

#[test]
fn ten_thousand_publishes_are_each_confirmed_exactly_once() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = open();
    let channel = connection.channel().unwrap();
    let queue = exclusive_queue(&channel);
    channel.confirm_select().unwrap();
    let publish = publish_to(&queue);
    let properties = BasicProperties::default();
    let mut confirmations = Vec::with_capacity(10_000);
    for n in 0..10_000u32 {
        confirmations.push(
            channel
                .publish(&publish, &properties, n.to_be_bytes().to_vec())
                .unwrap(),
        );
    }
    let sequences: HashSet<u64> = confirmations
        .iter()
        .map(|confirmation| confirmation.sequence().expect("confirm mode"))
        .collect();
    assert_eq!(sequences.len(), 10_000);
    assert_eq!(sequences.iter().min(), Some(&1));
    assert_eq!(sequences.iter().max(), Some(&10_000));
    for confirmation in confirmations {
        confirmation.wait(SHORT).unwrap();
    }
    channel.wait_for_confirms(SHORT).unwrap();
    assert_eq!(message_count(&channel, &queue), 10_000);
    connection.close().unwrap();
}

#[test]
fn prefetch_bounds_unacknowledged_deliveries_and_acks_release_more() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = open();
    let channel = connection.channel().unwrap();
    let queue = exclusive_queue(&channel);
    fill(&channel, &queue, 50);
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
    let mut tags = Vec::new();
    for _ in 0..10 {
        tags.push(consumer.recv_timeout(SHORT).unwrap().delivery_tag);
    }
    // The eleventh waits for an ack.
    assert!(matches!(
        consumer.recv_timeout(Duration::from_millis(300)),
        Err(Error::Timeout { .. })
    ));
    channel.ack(*tags.last().unwrap(), true).unwrap();
    let mut bodies = Vec::new();
    for _ in 10..50 {
        let delivery = consumer.recv_timeout(SHORT).unwrap();
        bodies.push(delivery.body()[0]);
        channel.ack(delivery.delivery_tag, false).unwrap();
    }
    assert_eq!(bodies, (10..50).collect::<Vec<u8>>());
    connection.close().unwrap();
}

#[test]
fn callback_consumers_are_dispatched_by_drain_events_like_kombu() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = open();
    let channel = connection.channel().unwrap();
    let queue = exclusive_queue(&channel);
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&received);
    channel
        .basic_consume_with_callback(
            BasicConsume {
                queue: queue.as_str().into(),
                ..Default::default()
            },
            move |delivery| {
                sink.lock().unwrap().push(delivery.body().clone());
                delivery.ack().unwrap();
            },
        )
        .unwrap();
    // Nothing yet: a timeout error, as kombu raises socket.timeout.
    assert!(matches!(
        connection.drain_events(Duration::from_millis(200)),
        Err(Error::Timeout { .. })
    ));
    for n in 0..5 {
        channel
            .publish(
                &publish_to(&queue),
                &BasicProperties::default(),
                format!("m{n}"),
            )
            .unwrap();
    }
    let deadline = Instant::now() + SHORT;
    while received.lock().unwrap().len() < 5 && Instant::now() < deadline {
        let handled = connection.drain_events(SHORT).unwrap();
        assert!(handled >= 1);
    }
    let received = received.lock().unwrap().clone();
    let expected: Vec<_> = (0..5)
        .map(|n| bytes::Bytes::from(format!("m{n}")))
        .collect();
    assert_eq!(received, expected);
    connection.close().unwrap();
}

#[test]
fn basic_get_on_an_empty_and_a_non_empty_queue() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = open();
    let channel = connection.channel().unwrap();
    let queue = exclusive_queue(&channel);
    let get = BasicGet {
        queue: queue.as_str().into(),
        no_ack: true,
        ..Default::default()
    };
    assert!(channel.basic_get(get.clone()).unwrap().is_none());
    channel.confirm_select().unwrap();
    let properties = BasicProperties::default()
        .content_type("application/json")
        .message_id("m-1")
        .headers({
            let mut headers = FieldTable::new();
            headers.insert("attempt", FieldValue::LongInt(3));
            headers
        });
    channel
        .publish(&publish_to(&queue), &properties, r#"{"ok":true}"#)
        .unwrap()
        .wait(SHORT)
        .unwrap();
    let message = channel
        .basic_get(get.clone())
        .unwrap()
        .expect("one message");
    assert_eq!(&message.content.body[..], br#"{"ok":true}"#);
    assert_eq!(message.content.header.properties, properties);
    assert_eq!(message.message_count, 0);
    assert!(channel.basic_get(get).unwrap().is_none());
    connection.close().unwrap();
}

#[test]
fn deleting_the_queue_cancels_its_consumer_from_the_server() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = open();
    let channel = connection.channel().unwrap();
    let queue = unique("cancelled");
    channel
        .queue_declare(QueueDeclare {
            queue: queue.as_str().into(),
            auto_delete: false,
            ..Default::default()
        })
        .unwrap();
    let consumer = channel
        .basic_consume(BasicConsume {
            queue: queue.as_str().into(),
            ..Default::default()
        })
        .unwrap();
    // Deleted from another connection, as an operator would.
    let other = open();
    let deleter = other.channel().unwrap();
    deleter
        .queue_delete(QueueDelete {
            queue: queue.as_str().into(),
            ..Default::default()
        })
        .unwrap();
    match consumer.recv_timeout(SHORT) {
        Err(Error::ConsumerCancelled(tag)) => assert_eq!(tag, consumer.tag().to_string()),
        other => panic!("expected a server cancel, got {other:?}"),
    }
    // The channel itself is fine.
    exclusive_queue(&channel);
    other.close().unwrap();
    connection.close().unwrap();
}

#[test]
fn an_unroutable_mandatory_publish_is_returned_before_its_confirm() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = open();
    let channel = connection.channel().unwrap();
    channel.confirm_select().unwrap();
    let returned = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&returned);
    channel
        .on_return(move |message| sink.lock().unwrap().push(message))
        .unwrap();
    let publish = BasicPublish {
        routing_key: unique("nowhere").as_str().into(),
        mandatory: true,
        ..Default::default()
    };
    let properties = BasicProperties::default().correlation_id("c-42");
    channel
        .publish(&publish, &properties, "lost?")
        .unwrap()
        .wait(SHORT)
        .unwrap();
    let returned = returned.lock().unwrap();
    assert_eq!(returned.len(), 1);
    assert_eq!(returned[0].reply_code, ReplyCode::NO_ROUTE.0);
    assert_eq!(returned[0].routing_key, publish.routing_key);
    assert_eq!(&returned[0].content.body[..], b"lost?");
    assert_eq!(returned[0].content.header.properties, properties);
    drop(returned);
    connection.close().unwrap();
}

#[test]
fn the_heartbeat_keeper_keeps_an_idle_connection_alive_past_three_intervals() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = open_with(options(&format!("{}?heartbeat=1", broker_url())));
    connection.spawn_heartbeat_keeper();
    assert_eq!(connection.tuning().heartbeat, 1);
    let channel = connection.channel().unwrap();
    // The application does not call in for 3.5 intervals.
    std::thread::sleep(Duration::from_millis(3_500));
    assert!(connection.is_open(), "{:?}", connection.close_reason());
    exclusive_queue(&channel);
    connection.close().unwrap();
}

#[test]
fn pumping_alone_keeps_heartbeats_going_without_the_keeper() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = open_with(options(&format!("{}?heartbeat=1", broker_url())));
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(3_500) {
        assert!(matches!(
            connection.drain_events(Duration::from_millis(500)),
            Err(Error::Timeout { .. })
        ));
    }
    assert!(connection.is_open(), "{:?}", connection.close_reason());
    connection.close().unwrap();
}

#[test]
fn a_stalled_peer_is_declared_dead_within_two_heartbeat_intervals() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let target = amqp_tests::broker_address();
    let proxy = Proxy::start(&target).expect("proxy");
    let url = format!("amqp://guest:guest@{}/%2f?heartbeat=1", proxy.address());
    let connection = open_with(options(&url));
    let channel = connection.channel().unwrap();
    let queue = exclusive_queue(&channel);
    let consumer = channel
        .basic_consume(BasicConsume {
            queue: queue.as_str().into(),
            ..Default::default()
        })
        .unwrap();
    proxy.stall(true);
    let stalled = Instant::now();
    let result = consumer.recv_timeout(Duration::from_secs(10));
    let noticed = stalled.elapsed();
    match result {
        Err(Error::ConnectionClosed(ConnectionError::HeartbeatTimeout)) => {}
        other => panic!("expected a heartbeat timeout, got {other:?}"),
    }
    // Two intervals after the last byte received, which came at most one
    // interval before the stall, plus scheduling slack.
    assert!(
        noticed <= Duration::from_millis(2_500),
        "noticed after {noticed:?}"
    );
    assert!(matches!(
        connection.close_reason(),
        Some(ConnectionError::HeartbeatTimeout)
    ));
}

#[test]
fn a_connection_closed_by_the_broker_surfaces_its_reason() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = open();
    let channel = connection.channel().unwrap();
    let queue = exclusive_queue(&channel);
    let consumer = channel
        .basic_consume(BasicConsume {
            queue: queue.as_str().into(),
            ..Default::default()
        })
        .unwrap();
    let port = connection.local_addr().unwrap().port();
    let pid = connection_pid(port).unwrap_or_else(|error| panic!("{error}"));
    rabbitmqctl(&["close_connection", &pid, "closed by the test suite"]).unwrap();
    match consumer.recv_timeout(SHORT) {
        Err(Error::ConnectionClosed(ConnectionError::Closed(reason))) => {
            assert_eq!(reason.code, ReplyCode::CONNECTION_FORCED);
            assert_eq!(reason.initiator, Initiator::Server);
            assert!(
                reason.text.contains("closed by the test suite"),
                "{}",
                reason.text
            );
        }
        other => panic!("expected a forced close, got {other:?}"),
    }
    // Every later call reports the same close.
    assert!(matches!(
        channel.basic_qos(BasicQos {
            prefetch_count: 1,
            ..Default::default()
        }),
        Err(Error::ConnectionClosed(ConnectionError::Closed(_)))
    ));
}

#[test]
fn a_timed_out_call_leaves_the_connection_usable() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = open();
    let mut channel = connection.channel().unwrap();
    let queue = exclusive_queue(&channel);
    // Nothing arrives on an empty queue's consumer: time out, then carry on.
    let consumer = channel
        .basic_consume(BasicConsume {
            queue: queue.as_str().into(),
            ..Default::default()
        })
        .unwrap();
    assert!(matches!(
        consumer.recv_timeout(Duration::from_millis(100)),
        Err(Error::Timeout { .. })
    ));
    // A request given (almost) no time at all: whatever happens to its
    // reply, the channel stays in step.
    channel.set_timeout(Duration::from_nanos(1));
    let _ = channel.queue_declare(QueueDeclare {
        exclusive: true,
        ..Default::default()
    });
    channel.set_timeout(SHORT);
    exclusive_queue(&channel);
    drop(consumer);
    connection.close().unwrap();
}

#[test]
fn a_dropped_consumer_gives_its_unread_messages_back() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = open();
    let channel = connection.channel().unwrap();
    let queue = exclusive_queue(&channel);
    fill(&channel, &queue, 20);
    let consumer = channel
        .basic_consume(BasicConsume {
            queue: queue.as_str().into(),
            ..Default::default()
        })
        .unwrap();
    let first = consumer.recv_timeout(SHORT).unwrap();
    channel.ack(first.delivery_tag, false).unwrap();
    drop(consumer);
    // The other 19 are back in the queue, ready for someone else.
    let deadline = Instant::now() + SHORT;
    loop {
        let declared = channel
            .queue_declare(QueueDeclare {
                queue: queue.as_str().into(),
                passive: true,
                ..Default::default()
            })
            .unwrap();
        if declared.message_count == 19 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} ready",
            declared.message_count
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    connection.close().unwrap();
}

#[test]
fn dropping_a_connection_does_not_hang_and_fails_its_channels() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = open();
    let channel = connection.channel().unwrap();
    let started = Instant::now();
    drop(connection);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(
        channel.basic_qos(BasicQos {
            prefetch_count: 1,
            ..Default::default()
        }),
        Err(Error::ConnectionClosed(_))
    ));
}

#[test]
fn tls_with_a_client_certificate_through_a_terminating_proxy() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    use amqp_tests::tls_proxy::{TestPki, TlsProxy};
    let pki = TestPki::generate("localhost").unwrap();
    let proxy = TlsProxy::start(&amqp_tests::broker_address(), &pki, true).unwrap();
    let (ca, certificate, key) = pki.write_files().unwrap();
    let url = format!(
        "amqps://guest:guest@localhost:{}/%2f?cacertfile={ca}&certfile={certificate}&keyfile={key}",
        proxy.address().port()
    );
    let connection = open_with(options(&url));
    let channel = connection.channel().unwrap();
    let queue = exclusive_queue(&channel);
    channel.confirm_select().unwrap();
    // A body larger than one TLS record and one frame.
    let body = vec![7u8; 300_000];
    channel
        .publish(
            &publish_to(&queue),
            &BasicProperties::default(),
            body.clone(),
        )
        .unwrap()
        .wait(SHORT)
        .unwrap();
    let get = BasicGet {
        queue: queue.as_str().into(),
        no_ack: true,
        ..Default::default()
    };
    let message = channel.basic_get(get).unwrap().expect("the message");
    assert_eq!(&message.content.body[..], &body[..]);
    connection.close().unwrap();
    assert_eq!(
        proxy.client_certificates().len(),
        1,
        "the client certificate was presented"
    );
}

#[test]
fn tls_refuses_a_server_the_trusted_roots_did_not_sign_unless_told_not_to_verify() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    use amqp_tests::tls_proxy::{TestPki, TlsProxy};
    let server_pki = TestPki::generate("localhost").unwrap();
    let other_pki = TestPki::generate("localhost").unwrap();
    let proxy = TlsProxy::start(&amqp_tests::broker_address(), &server_pki, false).unwrap();
    let (wrong_ca, _, _) = other_pki.write_files().unwrap();
    let port = proxy.address().port();
    let url = format!("amqps://guest:guest@localhost:{port}/%2f?cacertfile={wrong_ca}");
    match Connection::open_with(options(&url)) {
        Err(Error::ConnectionClosed(ConnectionError::TransportClosed(reason))) => {
            assert!(reason.contains("certificate"), "{reason}");
        }
        other => panic!("expected a certificate failure, got {other:?}"),
    }
    let url = format!("amqps://guest:guest@localhost:{port}/%2f?verify=verify_none");
    let connection = open_with(options(&url));
    exclusive_queue(&connection.channel().unwrap());
    connection.close().unwrap();
}
