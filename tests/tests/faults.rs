//! Faults injected between the adapters and the local RabbitMQ by a TCP
//! proxy: traffic split into 1-byte writes changes nothing but speed, and
//! a connection cut in the middle of confirmed publishing resolves every
//! publish exactly once (acknowledged before the cut, or failed with the
//! connection's error), promptly.
//!
//! These tests need the broker and fail (never pass silently) without it.

use std::time::{Duration, Instant};

use amqp_io_common::{ConnectOptions, Error};
use amqp_proto::codec::BasicProperties;
use amqp_proto::spec::{BasicConsume, QueueDeclare, QueueDelete};
use amqp_tests::proxy::Proxy;
use amqp_tests::{
    broker_address, broker_unreachable, broker_url, passive_declare, publish_to, unique,
};

fn proxied_url(proxy: &Proxy) -> String {
    format!("amqp://guest:guest@{}/%2f?heartbeat=2", proxy.address())
}

fn start_proxy() -> Proxy {
    Proxy::start(&broker_address()).unwrap_or_else(|error| broker_unreachable(&error))
}

/// A named queue declared directly (not through the proxy), so it
/// outlives a cut; deleted by the caller.
fn durable_queue(direct: &amqp_io_std::Connection) -> String {
    let name = unique("faults");
    let declare = QueueDeclare {
        queue: name.as_str().into(),
        ..Default::default()
    };
    direct.channel().unwrap().queue_declare(declare).unwrap();
    name
}

fn direct() -> amqp_io_std::Connection {
    amqp_io_std::Connection::open(&broker_url()).unwrap_or_else(|error| broker_unreachable(&error))
}

fn delete(direct: &amqp_io_std::Connection, queue: &str) {
    let delete = QueueDelete {
        queue: queue.into(),
        ..Default::default()
    };
    direct.channel().unwrap().queue_delete(delete).unwrap();
}

#[test]
fn one_byte_writes_change_nothing_but_speed_blocking() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let proxy = start_proxy();
    proxy.fragment(true);
    let options = ConnectOptions::from_url(&proxied_url(&proxy)).unwrap();
    let connection = amqp_io_std::Connection::open_with(options).unwrap();
    let channel = connection.channel().unwrap();
    let declare = QueueDeclare {
        exclusive: true,
        ..Default::default()
    };
    let queue = channel.queue_declare(declare).unwrap().queue.to_string();
    channel.confirm_select().unwrap();
    let properties = BasicProperties::default()
        .content_type("text/plain")
        .message_id("m");
    for n in 0..50u32 {
        let body = format!("message {n} {}", "x".repeat(n as usize * 7));
        channel
            .publish(&publish_to(&queue), &properties, body)
            .unwrap();
    }
    channel.wait_for_confirms(Duration::from_secs(30)).unwrap();
    let consumer = channel
        .basic_consume(BasicConsume {
            queue: queue.as_str().into(),
            ..Default::default()
        })
        .unwrap();
    for n in 0..50u32 {
        let delivery = consumer.recv_timeout(Duration::from_secs(30)).unwrap();
        let expected = format!("message {n} {}", "x".repeat(n as usize * 7));
        assert_eq!(delivery.body().as_ref(), expected.as_bytes());
        assert_eq!(delivery.properties(), &properties);
        channel.ack(delivery.delivery_tag, false).unwrap();
    }
    connection.close().unwrap();
}

#[tokio::test]
async fn one_byte_writes_change_nothing_but_speed_tokio() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let proxy = start_proxy();
    proxy.fragment(true);
    let options = ConnectOptions::from_url(&proxied_url(&proxy)).unwrap();
    let connection = amqp_io_tokio::Connection::connect_with(options)
        .await
        .unwrap();
    let channel = connection.channel().await.unwrap();
    let declare = QueueDeclare {
        exclusive: true,
        ..Default::default()
    };
    let queue = channel
        .queue_declare(declare)
        .await
        .unwrap()
        .queue
        .to_string();
    channel.confirm_select().await.unwrap();
    for n in 0..50u32 {
        let body = format!("message {n} {}", "y".repeat(n as usize * 7));
        channel
            .publish(&publish_to(&queue), &BasicProperties::default(), body)
            .await
            .unwrap();
    }
    channel
        .wait_for_confirms(Duration::from_secs(30))
        .await
        .unwrap();
    let consume = BasicConsume {
        queue: queue.as_str().into(),
        ..Default::default()
    };
    let mut consumer = channel.basic_consume(consume).await.unwrap();
    for n in 0..50u32 {
        let delivery = consumer.recv().await.unwrap().unwrap();
        let expected = format!("message {n} {}", "y".repeat(n as usize * 7));
        assert_eq!(delivery.body().as_ref(), expected.as_bytes());
        delivery.ack().unwrap();
    }
    connection.close().await.unwrap();
}

#[test]
fn a_cut_during_confirmed_publishes_resolves_each_exactly_once_blocking() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let direct = direct();
    let queue = durable_queue(&direct);
    let proxy = start_proxy();
    let options = ConnectOptions::from_url(&proxied_url(&proxy)).unwrap();
    let connection = amqp_io_std::Connection::open_with(options).unwrap();
    let channel = connection.channel().unwrap();
    channel.confirm_select().unwrap();
    let mut confirmations = Vec::new();
    let mut refused = None;
    for n in 0..10_000u32 {
        if n == 3_000 {
            proxy.cut();
        }
        match channel.publish(
            &publish_to(&queue),
            &BasicProperties::default(),
            n.to_be_bytes().to_vec(),
        ) {
            Ok(confirmation) => confirmations.push(confirmation),
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    // Every publish made resolves once, promptly: acked, or failed with
    // the connection's end.
    let started = Instant::now();
    let (mut acked, mut failed) = (0u32, 0u32);
    for confirmation in confirmations {
        match confirmation.wait(Duration::from_secs(10)) {
            Ok(()) => acked += 1,
            Err(Error::ConnectionClosed(_) | Error::ChannelClosed(_)) => failed += 1,
            Err(other) => panic!("unexpected outcome {other:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(refused, Some(Error::ConnectionClosed(_)) | None),
        "{refused:?}"
    );
    eprintln!("blocking: {acked} acknowledged, {failed} failed, then {refused:?}");
    assert!(acked >= 1, "some publishes were confirmed before the cut");
    assert!(failed >= 1, "the cut failed the unconfirmed ones");
    // The broker holds at least every acknowledged message.
    let held = direct
        .channel()
        .unwrap()
        .queue_declare(passive_declare(&queue))
        .unwrap()
        .message_count;
    assert!(held >= acked, "{held} held, {acked} acknowledged");
    delete(&direct, &queue);
    direct.close().unwrap();
}

#[tokio::test]
async fn a_cut_during_confirmed_publishes_resolves_each_exactly_once_tokio() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let direct = tokio::task::spawn_blocking(direct).await.unwrap();
    let queue = durable_queue(&direct);
    let proxy = start_proxy();
    let options = ConnectOptions::from_url(&proxied_url(&proxy)).unwrap();
    let connection = amqp_io_tokio::Connection::connect_with(options)
        .await
        .unwrap();
    let channel = connection.channel().await.unwrap();
    channel.confirm_select().await.unwrap();
    let mut confirmations = Vec::new();
    let mut refused = None;
    for n in 0..10_000u32 {
        if n == 3_000 {
            proxy.cut();
        }
        let body = n.to_be_bytes().to_vec();
        match channel
            .publish(&publish_to(&queue), &BasicProperties::default(), body)
            .await
        {
            Ok(confirmation) => confirmations.push(confirmation),
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    let started = Instant::now();
    let (mut acked, mut failed) = (0u32, 0u32);
    for confirmation in confirmations {
        match tokio::time::timeout(Duration::from_secs(10), confirmation).await {
            Ok(Ok(())) => acked += 1,
            Ok(Err(Error::ConnectionClosed(_) | Error::ChannelClosed(_))) => failed += 1,
            Ok(Err(other)) => panic!("unexpected outcome {other:?}"),
            Err(_) => panic!("a confirmation hung"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(refused, Some(Error::ConnectionClosed(_)) | None),
        "{refused:?}"
    );
    eprintln!("tokio: {acked} acknowledged, {failed} failed, then {refused:?}");
    assert!(acked >= 1 && failed >= 1, "{acked} acked, {failed} failed");
    let held = tokio::task::spawn_blocking({
        let queue = queue.clone();
        move || {
            let count = direct
                .channel()
                .unwrap()
                .queue_declare(passive_declare(&queue))
                .unwrap()
                .message_count;
            delete(&direct, &queue);
            direct.close().unwrap();
            count
        }
    })
    .await
    .unwrap();
    assert!(held >= acked, "{held} held, {acked} acknowledged");
}
