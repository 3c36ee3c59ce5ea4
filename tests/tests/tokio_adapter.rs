//! The tokio adapter against the real local RabbitMQ: the blocking
//! suite's scenarios, plus concurrency (100 tasks publishing with confirms
//! on shared channels), futures dropped at random points, a consumer
//! dropped mid-delivery, and heartbeats while the application blocks.
//!
//! These tests need the broker and fail (never pass silently) without it.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use amqp_io_tokio::{Channel, ConnectOptions, Connection, ConnectionError, Error};
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

async fn connect_with(options: ConnectOptions) -> Connection {
    match Connection::connect_with(options).await {
        Ok(connection) => connection,
        Err(error @ Error::Connect { .. }) => broker_unreachable(&error),
        Err(error) => panic!("cannot connect: {error}"),
    }
}

async fn connect() -> Connection {
    connect_with(options(&broker_url())).await
}

async fn exclusive_queue(channel: &Channel) -> String {
    channel
        .queue_declare(QueueDeclare {
            exclusive: true,
            ..Default::default()
        })
        .await
        .expect("queue.declare")
        .queue
        .to_string()
}

async fn message_count(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(passive_declare(queue))
        .await
        .expect("passive declare")
        .message_count
}

/// Publishes `count` one-byte messages (0, 1, ...) to `queue` in confirm
/// mode and waits until the broker has them all.
async fn fill(channel: &Channel, queue: &str, count: u8) {
    channel.confirm_select().await.unwrap();
    for n in 0..count {
        channel
            .publish(&publish_to(queue), &BasicProperties::default(), vec![n])
            .await
            .unwrap();
    }
    channel.wait_for_confirms(SHORT).await.unwrap();
}

#[tokio::test]
async fn a_wrong_password_is_a_typed_authentication_error() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    match Connection::connect(&url_with("guest:wrong", "%2f")).await {
        Err(Error::ConnectionClosed(ConnectionError::AuthenticationFailed(_))) => {}
        Err(error @ Error::Connect { .. }) => broker_unreachable(&error),
        other => panic!("expected an authentication failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_virtual_host_is_refused_access() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    match Connection::connect(&url_with("guest:guest", "no-such-vhost-here")).await {
        Err(Error::ConnectionClosed(ConnectionError::AccessRefused(_))) => {}
        Err(error @ Error::Connect { .. }) => broker_unreachable(&error),
        other => panic!("expected access refused, got {other:?}"),
    }
}

#[tokio::test]
async fn every_channel_method_works_against_the_broker() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = connect().await;
    assert!(matches!(
        connection.server_properties().get("product"),
        Some(FieldValue::LongString(product)) if product == "RabbitMQ"
    ));
    let channel = connection.channel().await.unwrap();
    let (source, destination) = (unique("source"), unique("destination"));
    for (exchange, kind) in [(&source, "topic"), (&destination, "fanout")] {
        let declare = ExchangeDeclare {
            exchange: exchange.as_str().into(),
            exchange_type: kind.into(),
            ..Default::default()
        };
        channel.exchange_declare(declare).await.unwrap();
    }
    let binding = ExchangeBind {
        destination: destination.as_str().into(),
        source: source.as_str().into(),
        routing_key: "orders.#".into(),
        ..Default::default()
    };
    channel.exchange_bind(binding).await.unwrap();
    let queue = exclusive_queue(&channel).await;
    let queue_binding = QueueBind {
        queue: queue.as_str().into(),
        exchange: destination.as_str().into(),
        ..Default::default()
    };
    channel.queue_bind(queue_binding).await.unwrap();

    channel.confirm_select().await.unwrap();
    let via_source = BasicPublish {
        exchange: source.as_str().into(),
        routing_key: "orders.new".into(),
        ..Default::default()
    };
    for n in 0..3 {
        let body = format!("order {n}");
        let confirmation = channel
            .publish(&via_source, &BasicProperties::default(), body)
            .await
            .unwrap();
        confirmation.await.unwrap();
    }
    assert_eq!(message_count(&channel, &queue).await, 3);

    let get = BasicGet {
        queue: queue.as_str().into(),
        ..Default::default()
    };
    let first = channel.basic_get(get.clone()).await.unwrap().unwrap();
    assert_eq!(&first.content.body[..], b"order 0");
    channel.reject(first.delivery_tag, true).unwrap();
    let again = channel.basic_get(get.clone()).await.unwrap().unwrap();
    assert!(again.redelivered);
    channel.nack(again.delivery_tag, false, false).unwrap();
    let second = channel.basic_get(get.clone()).await.unwrap().unwrap();
    channel.ack(second.delivery_tag, false).unwrap();

    channel
        .basic_qos(BasicQos {
            prefetch_count: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let consume = BasicConsume {
        queue: queue.as_str().into(),
        ..Default::default()
    };
    let mut consumer = channel.basic_consume(consume).await.unwrap();
    let delivery = consumer.recv().await.unwrap().unwrap();
    assert_eq!(&delivery.body()[..], b"order 2");
    channel.basic_recover(true).await.unwrap();
    let redelivered = consumer.recv().await.unwrap().unwrap();
    assert!(redelivered.redelivered);
    redelivered.ack().unwrap();
    channel.basic_cancel(consumer.tag()).await.unwrap();
    // The application's own cancel ends the stream as amqp-io-std's
    // consumer ends: with that cancel, once, told apart from the server's.
    let ended = consumer.recv().await;
    assert!(
        matches!(ended, Some(Err(Error::ConsumerCancelledByApplication(ref tag))) if *tag == consumer.tag().to_string()),
        "{ended:?}"
    );
    assert!(consumer.recv().await.is_none(), "then the stream ends");
    drop(consumer);
    let consume = BasicConsume {
        queue: queue.as_str().into(),
        ..Default::default()
    };
    let consumer = channel.basic_consume(consume).await.unwrap();
    consumer.cancel().await.unwrap();

    let purge = QueuePurge {
        queue: queue.as_str().into(),
        ..Default::default()
    };
    assert_eq!(channel.queue_purge(purge).await.unwrap(), 0);
    let unbind = QueueUnbind {
        queue: queue.as_str().into(),
        exchange: destination.as_str().into(),
        ..Default::default()
    };
    channel.queue_unbind(unbind).await.unwrap();
    let unbind = ExchangeUnbind {
        destination: destination.as_str().into(),
        source: source.as_str().into(),
        routing_key: "orders.#".into(),
        ..Default::default()
    };
    channel.exchange_unbind(unbind).await.unwrap();
    for exchange in [&source, &destination] {
        let delete = ExchangeDelete {
            exchange: exchange.as_str().into(),
            ..Default::default()
        };
        channel.exchange_delete(delete).await.unwrap();
    }
    let delete = QueueDelete {
        queue: queue.as_str().into(),
        ..Default::default()
    };
    channel.queue_delete(delete).await.unwrap();

    let tx = connection.channel().await.unwrap();
    let queue = exclusive_queue(&tx).await;
    tx.tx_select().await.unwrap();
    let properties = BasicProperties::default();
    tx.publish(&publish_to(&queue), &properties, "rolled back")
        .await
        .unwrap();
    tx.tx_rollback().await.unwrap();
    tx.publish(&publish_to(&queue), &properties, "committed")
        .await
        .unwrap();
    tx.tx_commit().await.unwrap();
    let get = BasicGet {
        queue: queue.as_str().into(),
        no_ack: true,
        ..Default::default()
    };
    let message = tx.basic_get(get.clone()).await.unwrap().unwrap();
    assert_eq!(&message.content.body[..], b"committed");
    assert!(tx.basic_get(get).await.unwrap().is_none());
    tx.close().await.unwrap();
    channel.close().await.unwrap();
    connection.close().await.unwrap();
}

#[tokio::test]
async fn a_channel_error_reports_the_servers_code_and_leaves_other_channels_working() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = connect().await;
    let doomed = connection.channel().await.unwrap();
    let survivor = connection.channel().await.unwrap();
    let missing = unique("missing");
    let passive = QueueDeclare {
        queue: missing.as_str().into(),
        passive: true,
        ..Default::default()
    };
    match doomed.queue_declare(passive).await {
        Err(Error::ChannelClosed(reason)) => {
            assert_eq!(reason.code, ReplyCode::NOT_FOUND);
            assert_eq!(reason.initiator, Initiator::Server);
        }
        other => panic!("expected a channel close, got {other:?}"),
    }
    assert!(matches!(
        doomed
            .basic_qos(BasicQos {
                prefetch_count: 1,
                ..Default::default()
            })
            .await,
        Err(Error::ChannelClosed(_))
    ));
    exclusive_queue(&survivor).await;
    exclusive_queue(&connection.channel().await.unwrap()).await;
    connection.close().await.unwrap();
}

/// A handle of a closed channel names nothing once its id is reused: an
/// ack through it must not settle the new channel's delivery of the same
/// tag (the broker would then close the new channel for a double ack).
#[tokio::test]
async fn a_closed_channels_handle_cannot_act_on_a_reused_id() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = connect().await;
    let old = connection.channel().await.unwrap();
    old.close().await.unwrap();
    let new = connection.channel().await.unwrap();
    assert_eq!(new.id(), old.id(), "the lowest free id is reused");
    let queue = exclusive_queue(&new).await;
    fill(&new, &queue, 1).await;
    let get = BasicGet {
        queue: queue.as_str().into(),
        ..Default::default()
    };
    let message = new.basic_get(get).await.unwrap().expect("a message");
    assert!(matches!(
        old.ack(message.delivery_tag, false),
        Err(Error::Usage(amqp_proto::UsageError::ChannelNotOpen(_)))
    ));
    new.ack(message.delivery_tag, false).unwrap();
    assert_eq!(message_count(&new, &queue).await, 0);
    connection.close().await.unwrap();
}

/// A graceful close lets every outstanding confirm arrive before it closes.
#[tokio::test]
async fn closing_when_confirmed_loses_no_confirm() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = connect().await;
    let channel = connection.channel().await.unwrap();
    let queue = exclusive_queue(&channel).await;
    channel.confirm_select().await.unwrap();
    let publish = BasicPublish {
        routing_key: queue.as_str().into(),
        ..Default::default()
    };
    let mut confirmations = Vec::new();
    for _ in 0..500 {
        let confirmation = channel
            .publish(&publish, &BasicProperties::default(), "x")
            .await
            .unwrap();
        confirmations.push(confirmation);
    }
    connection
        .close_when_confirmed(Duration::from_secs(10))
        .await
        .unwrap();
    for confirmation in confirmations {
        confirmation.await.unwrap();
    }
    assert!(!connection.is_open());
}

/// Confirmations keep their exact outcome however late they are awaited:
/// acks, nacks (a full `reject-publish` queue), and the failure of
/// publishes the channel's close cut off; dropped ones cost nothing.
#[tokio::test]
async fn kept_confirmations_report_acks_nacks_and_failures_however_late() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = connect().await;
    let channel = connection.channel().await.unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length", FieldValue::LongInt(2));
    arguments.insert(
        "x-overflow",
        FieldValue::LongString("reject-publish".into()),
    );
    let queue = channel
        .queue_declare(QueueDeclare {
            exclusive: true,
            arguments,
            ..Default::default()
        })
        .await
        .unwrap()
        .queue
        .to_string();
    channel.confirm_select().await.unwrap();
    let publish = publish_to(&queue);
    let properties = BasicProperties::default();
    let mut kept = Vec::new();
    for n in 0..6u32 {
        let confirmation = channel
            .publish(&publish, &properties, n.to_be_bytes().to_vec())
            .await
            .unwrap();
        // Every other one is dropped unawaited.
        if n % 2 == 0 || n == 5 {
            kept.push(confirmation);
        }
    }
    // Settled long before anyone asks; the count of refusals is reported
    // to the batch wait too.
    assert!(matches!(
        channel.wait_for_confirms(SHORT).await,
        Err(Error::Nacked(4))
    ));
    let outcomes: Vec<bool> = futures_outcomes(kept).await;
    assert_eq!(
        outcomes,
        [true, false, false, false],
        "sequences 1, 3, 5, 6"
    );

    // A publish the broker never settles because the channel closes.
    let confirmation = channel
        .publish(
            &BasicPublish {
                exchange: unique("no-such-exchange").as_str().into(),
                ..Default::default()
            },
            &properties,
            "lost",
        )
        .await
        .unwrap();
    match confirmation.await {
        Err(Error::ChannelClosed(reason)) => assert_eq!(reason.code, ReplyCode::NOT_FOUND),
        other => panic!("expected the channel's close, got {other:?}"),
    }
    connection.close().await.unwrap();
}

/// Awaits each confirmation in order; true for an ack, false for a nack.
async fn futures_outcomes(confirmations: Vec<amqp_io_tokio::Confirmation>) -> Vec<bool> {
    let mut outcomes = Vec::new();
    for confirmation in confirmations {
        match confirmation.await {
            Ok(()) => outcomes.push(true),
            Err(Error::Nacked(1)) => outcomes.push(false),
            Err(other) => panic!("unexpected confirm outcome {other}"),
        }
    }
    outcomes
}

#[tokio::test]
async fn ten_thousand_publishes_are_each_confirmed_exactly_once() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = connect().await;
    let channel = connection.channel().await.unwrap();
    let queue = exclusive_queue(&channel).await;
    channel.confirm_select().await.unwrap();
    let publish = publish_to(&queue);
    let properties = BasicProperties::default();
    let mut confirmations = Vec::with_capacity(10_000);
    for n in 0..10_000u32 {
        let body = n.to_be_bytes().to_vec();
        confirmations.push(channel.publish(&publish, &properties, body).await.unwrap());
    }
    let sequences: HashSet<u64> = confirmations
        .iter()
        .filter_map(amqp_io_tokio::Confirmation::sequence)
        .collect();
    assert_eq!(sequences.len(), 10_000);
    for confirmation in confirmations {
        confirmation.await.unwrap();
    }
    channel.wait_for_confirms(SHORT).await.unwrap();
    assert_eq!(message_count(&channel, &queue).await, 10_000);
    connection.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_tasks_publishing_with_confirms_on_shared_channels_get_exact_confirms() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = connect().await;
    let setup = connection.channel().await.unwrap();
    let queue = exclusive_queue(&setup).await;
    let mut channels = Vec::new();
    for _ in 0..4 {
        let channel = connection.channel().await.unwrap();
        channel.confirm_select().await.unwrap();
        channels.push(channel);
    }
    let mut tasks = Vec::new();
    for task in 0..100u32 {
        let channel = channels[task as usize % channels.len()].clone();
        let publish = publish_to(&queue);
        tasks.push(tokio::spawn(async move {
            let mut sequences = Vec::new();
            for n in 0..50u32 {
                let body = format!("{task}-{n}");
                let confirmation = channel
                    .publish(&publish, &BasicProperties::default(), body)
                    .await
                    .unwrap();
                sequences.push((channel.id(), confirmation.sequence().unwrap()));
                confirmation.await.unwrap();
            }
            sequences
        }));
    }
    let mut seen = HashSet::new();
    for task in tasks {
        for sequence in task.await.unwrap() {
            assert!(seen.insert(sequence), "sequence {sequence:?} given twice");
        }
    }
    assert_eq!(seen.len(), 5_000);
    for channel in &channels {
        channel.wait_for_confirms(SHORT).await.unwrap();
    }
    assert_eq!(message_count(&setup, &queue).await, 5_000);
    connection.close().await.unwrap();
}

#[tokio::test]
async fn prefetch_bounds_unacknowledged_deliveries_and_acks_release_more() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = connect().await;
    let channel = connection.channel().await.unwrap();
    let queue = exclusive_queue(&channel).await;
    fill(&channel, &queue, 50).await;
    channel
        .basic_qos(BasicQos {
            prefetch_count: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let consume = BasicConsume {
        queue: queue.as_str().into(),
        ..Default::default()
    };
    let mut consumer = channel.basic_consume(consume).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(consumer.recv().await.unwrap().unwrap());
    }
    let eleventh = tokio::time::timeout(Duration::from_millis(300), consumer.recv()).await;
    assert!(eleventh.is_err(), "the eleventh waits for an ack");
    held.last().unwrap().ack_multiple().unwrap();
    let mut bodies = Vec::new();
    for _ in 10..50 {
        let delivery = consumer.recv().await.unwrap().unwrap();
        bodies.push(delivery.body()[0]);
        delivery.ack().unwrap();
    }
    assert_eq!(bodies, (10..50).collect::<Vec<u8>>());
    connection.close().await.unwrap();
}

#[tokio::test]
async fn basic_get_on_an_empty_and_a_non_empty_queue() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = connect().await;
    let channel = connection.channel().await.unwrap();
    let queue = exclusive_queue(&channel).await;
    let get = BasicGet {
        queue: queue.as_str().into(),
        no_ack: true,
        ..Default::default()
    };
    assert!(channel.basic_get(get.clone()).await.unwrap().is_none());
    channel.confirm_select().await.unwrap();
    let mut headers = FieldTable::new();
    headers.insert("attempt", FieldValue::LongInt(3));
    let properties = BasicProperties::default()
        .content_type("application/json")
        .headers(headers);
    channel
        .publish(&publish_to(&queue), &properties, "{}")
        .await
        .unwrap()
        .await
        .unwrap();
    let message = channel.basic_get(get.clone()).await.unwrap().unwrap();
    assert_eq!(message.content.header.properties, properties);
    assert!(channel.basic_get(get).await.unwrap().is_none());
    connection.close().await.unwrap();
}

#[tokio::test]
async fn deleting_the_queue_ends_its_consumer_stream_with_the_cancel() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = connect().await;
    let channel = connection.channel().await.unwrap();
    let queue = unique("cancelled");
    let declare = QueueDeclare {
        queue: queue.as_str().into(),
        ..Default::default()
    };
    channel.queue_declare(declare).await.unwrap();
    let consume = BasicConsume {
        queue: queue.as_str().into(),
        ..Default::default()
    };
    let mut consumer = channel.basic_consume(consume).await.unwrap();
    let other = connect().await;
    let delete = QueueDelete {
        queue: queue.as_str().into(),
        ..Default::default()
    };
    other
        .channel()
        .await
        .unwrap()
        .queue_delete(delete)
        .await
        .unwrap();
    let ended = tokio::time::timeout(SHORT, consumer.recv()).await.unwrap();
    assert!(
        matches!(ended, Some(Err(Error::ConsumerCancelled(_)))),
        "{ended:?}"
    );
    assert!(consumer.recv().await.is_none());
    exclusive_queue(&channel).await;
    other.close().await.unwrap();
    connection.close().await.unwrap();
}

#[tokio::test]
async fn an_unroutable_mandatory_publish_is_returned_before_its_confirm() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = connect().await;
    let channel = connection.channel().await.unwrap();
    channel.confirm_select().await.unwrap();
    let mut returns = channel.returns();
    let publish = BasicPublish {
        routing_key: unique("nowhere").as_str().into(),
        mandatory: true,
        ..Default::default()
    };
    channel
        .publish(&publish, &BasicProperties::default(), "lost?")
        .await
        .unwrap()
        .await
        .unwrap();
    // Already there when the confirm resolved.
    let returned = tokio::time::timeout(Duration::from_millis(1), returns.recv())
        .await
        .expect("returned before its confirm")
        .unwrap();
    assert_eq!(returned.reply_code, ReplyCode::NO_ROUTE.0);
    assert_eq!(&returned.content.body[..], b"lost?");
    connection.close().await.unwrap();
}

#[tokio::test]
async fn the_driver_keeps_an_idle_connection_alive_past_three_intervals() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = connect_with(options(&format!("{}?heartbeat=1", broker_url()))).await;
    assert_eq!(connection.tuning().heartbeat, 1);
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert!(connection.is_open(), "{:?}", connection.close_reason());
    exclusive_queue(&connection.channel().await.unwrap()).await;
    connection.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_go_on_while_the_application_blocks_a_thread_in_a_busy_loop() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = connect_with(options(&format!("{}?heartbeat=1", broker_url()))).await;
    let channel = connection.channel().await.unwrap();
    // The application's task spins for 3.5 heartbeat intervals without
    // yielding; the runtime moves the driver to the other worker.
    tokio::task::block_in_place(|| {
        let until = Instant::now() + Duration::from_millis(3_500);
        let mut spins = 0u64;
        while Instant::now() < until {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    });
    assert!(connection.is_open(), "{:?}", connection.close_reason());
    exclusive_queue(&channel).await;
    connection.close().await.unwrap();
}

#[tokio::test]
async fn a_stalled_peer_is_declared_dead_within_two_heartbeat_intervals() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let proxy = Proxy::start(&amqp_tests::broker_address()).expect("proxy");
    let url = format!("amqp://guest:guest@{}/%2f?heartbeat=1", proxy.address());
    let connection = connect_with(options(&url)).await;
    let channel = connection.channel().await.unwrap();
    let queue = exclusive_queue(&channel).await;
    let consume = BasicConsume {
        queue: queue.as_str().into(),
        ..Default::default()
    };
    let mut consumer = channel.basic_consume(consume).await.unwrap();
    proxy.stall(true);
    let stalled = Instant::now();
    let ended = tokio::time::timeout(SHORT, consumer.recv()).await.unwrap();
    let noticed = stalled.elapsed();
    assert!(
        matches!(
            ended,
            Some(Err(Error::ConnectionClosed(
                ConnectionError::HeartbeatTimeout
            )))
        ),
        "{ended:?}"
    );
    assert!(
        noticed <= Duration::from_millis(2_500),
        "noticed after {noticed:?}"
    );
}

#[tokio::test]
async fn a_connection_closed_by_the_broker_surfaces_its_reason() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = connect().await;
    let channel = connection.channel().await.unwrap();
    let port = connection.local_addr().unwrap().port();
    let pid = tokio::task::spawn_blocking(move || connection_pid(port))
        .await
        .unwrap()
        .unwrap_or_else(|error| panic!("{error}"));
    tokio::task::spawn_blocking(move || {
        rabbitmqctl(&["close_connection", &pid, "closed by the test suite"])
    })
    .await
    .unwrap()
    .unwrap();
    match tokio::time::timeout(SHORT, connection.closed())
        .await
        .unwrap()
    {
        ConnectionError::Closed(reason) => {
            assert_eq!(reason.code, ReplyCode::CONNECTION_FORCED);
            assert!(reason.text.contains("closed by the test suite"));
        }
        other => panic!("expected a forced close, got {other:?}"),
    }
    assert!(matches!(
        channel
            .basic_qos(BasicQos {
                prefetch_count: 1,
                ..Default::default()
            })
            .await,
        Err(Error::ConnectionClosed(ConnectionError::Closed(_)))
    ));
}

#[tokio::test]
async fn a_consumer_dropped_mid_delivery_has_its_unacked_messages_redelivered() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = connect().await;
    let channel = connection.channel().await.unwrap();
    let queue = exclusive_queue(&channel).await;
    fill(&channel, &queue, 20).await;
    // A second channel consumes, takes a few without acking, and goes away
    // mid-stream with its channel.
    let worker = connection.channel().await.unwrap();
    let consume = BasicConsume {
        queue: queue.as_str().into(),
        ..Default::default()
    };
    let mut consumer = worker.basic_consume(consume).await.unwrap();
    let first = consumer.recv().await.unwrap().unwrap();
    first.ack().unwrap();
    let _unacked = consumer.recv().await.unwrap().unwrap();
    drop(consumer);
    worker.close().await.unwrap();
    // The other 19 are back, the unacked one among them, redelivered.
    let consume = BasicConsume {
        queue: queue.as_str().into(),
        ..Default::default()
    };
    let mut again = channel.basic_consume(consume).await.unwrap();
    let mut bodies = Vec::new();
    for _ in 0..19 {
        let delivery = tokio::time::timeout(SHORT, again.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        bodies.push(delivery.body()[0]);
        delivery.ack().unwrap();
    }
    bodies.sort_unstable();
    assert_eq!(bodies, (1..20).collect::<Vec<u8>>());
    connection.close().await.unwrap();
}

/// xorshift64*: a reproducible stream of numbers from a seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

#[tokio::test]
async fn futures_dropped_at_random_points_never_break_the_connection() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let seed = std::env::var("DROP_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0x5eed_u64);
    let mut rng = Rng(seed);
    let connection = connect().await;
    let channel = connection.channel().await.unwrap();
    let queue = exclusive_queue(&channel).await;
    channel.confirm_select().await.unwrap();
    let publish = publish_to(&queue);
    let mut published = 0u32;
    let mut interrupted = 0u32;
    for round in 0..300 {
        // Give each operation a random slice of time, often too little.
        let budget = Duration::from_micros(rng.below(3_000));
        match rng.below(4) {
            0 => {
                let body = format!("{round}");
                let properties = BasicProperties::default();
                let attempt = channel.publish(&publish, &properties, body);
                match tokio::time::timeout(budget, attempt).await {
                    Ok(Ok(confirmation)) => {
                        published += 1;
                        if rng.below(2) == 0 {
                            drop(confirmation);
                        } else if tokio::time::timeout(budget, confirmation).await.is_err() {
                            interrupted += 1;
                        }
                    }
                    Ok(Err(error)) => panic!("seed {seed}: publish failed: {error}"),
                    Err(_) => interrupted += 1,
                }
            }
            1 => {
                let declare = QueueDeclare {
                    exclusive: true,
                    ..Default::default()
                };
                match tokio::time::timeout(budget, channel.queue_declare(declare)).await {
                    Ok(result) => drop(result.unwrap()),
                    Err(_) => interrupted += 1,
                }
            }
            2 => {
                let consume = BasicConsume {
                    queue: queue.as_str().into(),
                    ..Default::default()
                };
                match tokio::time::timeout(budget, channel.basic_consume(consume)).await {
                    Ok(consumer) => {
                        let mut consumer = consumer.unwrap();
                        match tokio::time::timeout(budget, consumer.recv()).await {
                            Ok(Some(delivery)) => {
                                // Taken and acknowledged: gone from the queue.
                                delivery.unwrap().ack().unwrap();
                                published -= 1;
                            }
                            Ok(None) => panic!("seed {seed}: the consumer ended"),
                            Err(_) => interrupted += 1,
                        }
                    }
                    Err(_) => interrupted += 1,
                }
            }
            _ => {
                let get = BasicGet {
                    queue: queue.as_str().into(),
                    ..Default::default()
                };
                match tokio::time::timeout(budget, channel.basic_get(get)).await {
                    Ok(Ok(Some(message))) => {
                        channel.ack(message.delivery_tag, false).unwrap();
                        published -= 1;
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(error)) => panic!("seed {seed}: basic.get failed: {error}"),
                    Err(_) => interrupted += 1,
                }
            }
        }
    }
    assert!(
        interrupted > 10,
        "seed {seed}: only {interrupted} operations were cut short"
    );
    eprintln!("seed {seed}: {interrupted} of 300 operations cut short");
    // Still usable, every confirm accounted for, no message lost: what
    // was published and not taken is in the queue (or on its way back).
    channel.wait_for_confirms(SHORT).await.unwrap();
    let deadline = Instant::now() + SHORT;
    loop {
        let count = message_count(&channel, &queue).await;
        if count == published {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: {count} in the queue, {published} expected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    connection.close().await.unwrap();
}

#[tokio::test]
async fn tls_through_a_terminating_proxy_with_a_client_certificate() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    use amqp_tests::tls_proxy::{TestPki, TlsProxy};
    let pki = TestPki::generate("localhost").unwrap();
    let proxy = TlsProxy::start(&amqp_tests::broker_address(), &pki, true).unwrap();
    let (ca, certificate, key) = pki.write_files().unwrap();
    let url = format!(
        "amqps://guest:guest@localhost:{}/%2f?cacertfile={ca}&certfile={certificate}&keyfile={key}",
        proxy.address().port()
    );
    let connection = connect_with(options(&url)).await;
    let channel = connection.channel().await.unwrap();
    let queue = exclusive_queue(&channel).await;
    channel.confirm_select().await.unwrap();
    let body = vec![9u8; 300_000];
    channel
        .publish(
            &publish_to(&queue),
            &BasicProperties::default(),
            body.clone(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let get = BasicGet {
        queue: queue.as_str().into(),
        no_ack: true,
        ..Default::default()
    };
    let message = channel.basic_get(get).await.unwrap().unwrap();
    assert_eq!(&message.content.body[..], &body[..]);
    connection.close().await.unwrap();
    assert_eq!(proxy.client_certificates().len(), 1);
}

#[tokio::test]
async fn dropping_every_handle_closes_the_connection_in_the_background() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let connection = connect().await;
    let channel = connection.channel().await.unwrap();
    let queue = exclusive_queue(&channel).await;
    let observer = connect().await;
    let watcher = observer.channel().await.unwrap();
    drop(channel);
    drop(connection);
    // The exclusive queue goes with its connection.
    let deadline = Instant::now() + SHORT;
    loop {
        let probe = observer.channel().await.unwrap();
        if probe.queue_declare(passive_declare(&queue)).await.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "the connection was not closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(watcher);
    observer.close().await.unwrap();
}

/// A peer that stops reading: the driver writes in bounded batches and
/// leaves the rest queued in the core, so `publish` waits on
/// `Readiness::OutputFull` (and times out) instead of a queue growing in
/// the adapter; once the peer reads again, everything queued goes out.
#[tokio::test]
async fn publishers_wait_for_a_socket_that_stopped_taking_bytes() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    const BODY: usize = 64 * 1024;
    // Kernel buffers on both sides of the proxy take a few MiB before
    // the stall shows; far more than that means nothing held publishers.
    const BOUND: usize = 64 * 1024 * 1024;
    let proxy = Proxy::start(&amqp_tests::broker_address()).expect("proxy");
    // No heartbeats: the stall must show as back-pressure, not as a dead
    // peer.
    let url = format!("amqp://guest:guest@{}/%2f?heartbeat=0", proxy.address());
    let mut options = options(&url);
    options.config = options.config.with_max_queued_output(1024 * 1024);
    let connection = connect_with(options).await;
    let mut channel = connection.channel().await.unwrap();
    let queue = exclusive_queue(&channel).await;
    channel.confirm_select().await.unwrap();
    channel.set_timeout(Duration::from_millis(500));
    proxy.stall(true);
    let body = bytes::Bytes::from(vec![7u8; BODY]);
    let mut accepted = 0usize;
    let waited = loop {
        match channel
            .publish(
                &publish_to(&queue),
                &BasicProperties::default(),
                body.clone(),
            )
            .await
        {
            Ok(_) => accepted += 1,
            Err(error) => break error,
        }
        assert!(
            accepted * BODY <= BOUND,
            "{accepted} publishes of {BODY} B were taken from a socket that stopped reading"
        );
    };
    assert!(
        matches!(
            waited,
            Error::Timeout {
                operation: "publish",
                ..
            }
        ),
        "{waited:?}"
    );
    proxy.stall(false);
    channel.set_timeout(SHORT);
    channel.wait_for_confirms(SHORT).await.unwrap();
    assert_eq!(message_count(&channel, &queue).await as usize, accepted);
    connection.close().await.unwrap();
}
