//! Automatic recovery through a fault-injecting proxy, against the local
//! RabbitMQ: a connection cut mid-consume reconnects on its own, declares
//! its exchange, server-named queue, binding, qos and consumer again, and
//! the same consumer goes on receiving; delivery tags and confirm numbers
//! continue; publishes unconfirmed at the cut are reported failed, never
//! re-sent.
//!
//! These tests need the broker and fail (never pass silently) without it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqp_io_common::recovery::RecoveryEvent;
use amqp_io_common::{ConnectOptions, Error};
use amqp_proto::codec::BasicProperties;
use amqp_proto::spec::{
    BasicConsume, BasicPublish, BasicQos, ExchangeDeclare, QueueBind, QueueDeclare,
};
use amqp_proto::Backoff;
use amqp_tests::proxy::Proxy;
use amqp_tests::{broker_address, broker_unreachable, broker_url, unique};

fn start_proxy() -> Proxy {
    Proxy::start(&broker_address()).unwrap_or_else(|error| broker_unreachable(&error))
}

fn recovering_options(proxy: &Proxy) -> ConnectOptions {
    let url = format!("amqp://guest:guest@{}/%2f?heartbeat=2", proxy.address());
    let mut options = ConnectOptions::from_url(&url).unwrap();
    options.recovery = Some(Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
        max_attempts: Some(40),
    });
    options.operation_timeout = Duration::from_secs(5);
    options
}

fn direct() -> amqp_io_std::Connection {
    amqp_io_std::Connection::open(&broker_url()).unwrap_or_else(|error| broker_unreachable(&error))
}

/// Publishes `count` messages to `exchange` on a separate connection
/// (confirmed, so they are routed before this returns).
fn publish_direct(exchange: &str, first: u32, count: u32) {
    let connection = direct();
    let channel = connection.channel().unwrap();
    channel.confirm_select().unwrap();
    let publish = BasicPublish {
        exchange: exchange.into(),
        ..Default::default()
    };
    for n in first..first + count {
        channel
            .publish(
                &publish,
                &BasicProperties::default(),
                n.to_be_bytes().to_vec(),
            )
            .unwrap();
    }
    channel.wait_for_confirms(Duration::from_secs(5)).unwrap();
    connection.close().unwrap();
}

fn body_number(body: &[u8]) -> u32 {
    u32::from_be_bytes(body.try_into().expect("a 4-byte body"))
}

type Reports = Arc<Mutex<Vec<RecoveryEvent>>>;

/// Where recovery reports are kept, and a handler that keeps them there.
fn reporter() -> (Reports, impl FnMut(&RecoveryEvent) + Send + 'static) {
    let reports: Reports = Arc::default();
    let sink = Arc::clone(&reports);
    (reports, move |event: &RecoveryEvent| {
        sink.lock().unwrap().push(event.clone());
    })
}

fn recovered(reports: &Reports) -> Option<Vec<(String, String)>> {
    reports
        .lock()
        .unwrap()
        .iter()
        .find_map(|event| match event {
            RecoveryEvent::Recovered { renamed_queues, .. } => Some(
                renamed_queues
                    .iter()
                    .map(|(old, new)| (old.to_string(), new.to_string()))
                    .collect(),
            ),
            _ => None,
        })
}

#[tokio::test]
async fn a_cut_connection_recovers_its_topology_and_consumer_tokio() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let proxy = start_proxy();
    let connection = amqp_io_tokio::Connection::connect_with(recovering_options(&proxy))
        .await
        .unwrap();
    let (reports, report) = reporter();
    connection.on_recovery(report);

    let channel = connection.channel().await.unwrap();
    channel.confirm_select().await.unwrap();
    channel
        .basic_qos(BasicQos {
            prefetch_count: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let exchange = unique("recovery-x");
    channel
        .exchange_declare(ExchangeDeclare {
            exchange: exchange.as_str().into(),
            exchange_type: "fanout".into(),
            auto_delete: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let queue = channel
        .queue_declare(QueueDeclare {
            exclusive: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .queue;
    channel
        .queue_bind(QueueBind {
            queue: queue.clone(),
            exchange: exchange.as_str().into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(BasicConsume {
            queue: queue.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    let route = exchange.clone();
    tokio::task::spawn_blocking(move || publish_direct(&route, 0, 5))
        .await
        .unwrap();
    let mut last_tag = 0;
    for expected in 0..5 {
        let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.recv())
            .await
            .expect("a delivery before the cut")
            .expect("the consumer goes on")
            .unwrap();
        assert_eq!(body_number(&delivery.content.body), expected);
        last_tag = delivery.delivery_tag;
        delivery.ack().unwrap();
    }

    // A publish left unconfirmed at the cut fails; it is never re-sent.
    proxy.stall(true);
    // Let reads already under way finish: from now on nothing passes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let unconfirmed = channel
        .publish(
            &BasicPublish {
                exchange: exchange.as_str().into(),
                ..Default::default()
            },
            &BasicProperties::default(),
            vec![0xff; 4],
        )
        .await
        .unwrap();
    proxy.cut();
    proxy.stall(false);
    let outcome = tokio::time::timeout(Duration::from_secs(5), unconfirmed)
        .await
        .expect("the confirmation resolves");
    assert!(
        matches!(outcome, Err(Error::ConnectionClosed(_))),
        "{outcome:?}"
    );

    let started = Instant::now();
    let renamed = loop {
        if let Some(renamed) = recovered(&reports) {
            break renamed;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no recovery: {:?}",
            reports.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        matches!(reports.lock().unwrap().first(), Some(RecoveryEvent::Started { error }) if error.is_recoverable())
    );
    let [(old, new)] = renamed.as_slice() else {
        panic!("the server-named queue gets a new name: {renamed:?}");
    };
    assert_eq!(old.as_str(), queue.to_string());
    assert_ne!(old, new);
    assert!(connection.is_open() && !connection.is_recovering());

    // The same consumer receives what is routed through the re-declared
    // binding to the new queue; tags continue after the old ones.
    let route = exchange.clone();
    tokio::task::spawn_blocking(move || publish_direct(&route, 100, 3))
        .await
        .unwrap();
    for expected in 100..103 {
        let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.recv())
            .await
            .expect("a delivery after the recovery")
            .expect("the consumer goes on")
            .unwrap();
        assert_eq!(body_number(&delivery.content.body), expected);
        assert!(delivery.delivery_tag > last_tag, "tags continue");
        last_tag = delivery.delivery_tag;
        delivery.ack().unwrap();
    }
    // Confirm mode came back with the channel.
    let publish = BasicPublish {
        exchange: exchange.as_str().into(),
        ..Default::default()
    };
    let confirmation = channel
        .publish(&publish, &BasicProperties::default(), vec![0, 0, 0, 200])
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), confirmation)
        .await
        .expect("confirmed")
        .unwrap();
    let redelivered = tokio::time::timeout(Duration::from_secs(5), consumer.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(body_number(&redelivered.content.body), 200);
    redelivered.ack().unwrap();
    connection.close().await.unwrap();
}

#[test]
fn a_cut_connection_recovers_its_topology_and_consumer_blocking() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let proxy = start_proxy();
    let connection = amqp_io_std::Connection::open_with(recovering_options(&proxy)).unwrap();
    let (reports, report) = reporter();
    connection.on_recovery(report);

    let channel = connection.channel().unwrap();
    channel.confirm_select().unwrap();
    channel
        .basic_qos(BasicQos {
            prefetch_count: 10,
            ..Default::default()
        })
        .unwrap();
    let exchange = unique("recovery-x");
    channel
        .exchange_declare(ExchangeDeclare {
            exchange: exchange.as_str().into(),
            exchange_type: "fanout".into(),
            auto_delete: true,
            ..Default::default()
        })
        .unwrap();
    let queue = channel
        .queue_declare(QueueDeclare {
            exclusive: true,
            ..Default::default()
        })
        .unwrap()
        .queue;
    channel
        .queue_bind(QueueBind {
            queue: queue.clone(),
            exchange: exchange.as_str().into(),
            ..Default::default()
        })
        .unwrap();
    let consumer = channel
        .basic_consume(BasicConsume {
            queue: queue.clone(),
            ..Default::default()
        })
        .unwrap();

    publish_direct(&exchange, 0, 5);
    let mut last_tag = 0;
    for expected in 0..5 {
        let delivery = consumer.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(body_number(&delivery.content.body), expected);
        last_tag = delivery.delivery_tag;
        channel.ack(delivery.delivery_tag, false).unwrap();
    }

    proxy.stall(true);
    // Let reads already under way finish: from now on nothing passes.
    std::thread::sleep(Duration::from_millis(100));
    let publish = BasicPublish {
        exchange: exchange.as_str().into(),
        ..Default::default()
    };
    let unconfirmed = channel
        .publish(&publish, &BasicProperties::default(), vec![0xff; 4])
        .unwrap();
    proxy.cut();
    proxy.stall(false);
    let outcome = unconfirmed.wait(Duration::from_secs(5));
    assert!(
        matches!(outcome, Err(Error::ConnectionClosed(_))),
        "{outcome:?}"
    );

    // The consumer's wait pumps the connection, and so recovers it; it
    // sees nothing of the gap but the messages that come after it.
    let publisher = std::thread::spawn({
        let exchange = exchange.clone();
        let reports = Arc::clone(&reports);
        move || {
            let started = Instant::now();
            while recovered(&reports).is_none() {
                assert!(started.elapsed() < Duration::from_secs(10), "no recovery");
                std::thread::sleep(Duration::from_millis(20));
            }
            publish_direct(&exchange, 100, 3);
        }
    });
    for expected in 100..103 {
        let delivery = consumer.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(body_number(&delivery.content.body), expected);
        assert!(delivery.delivery_tag > last_tag, "tags continue");
        last_tag = delivery.delivery_tag;
        channel.ack(delivery.delivery_tag, false).unwrap();
    }
    publisher.join().unwrap();
    let renamed = recovered(&reports).unwrap();
    let [(old, new)] = renamed.as_slice() else {
        panic!("the server-named queue gets a new name: {renamed:?}");
    };
    assert_eq!(old.as_str(), queue.to_string());
    assert_ne!(old, new);
    assert!(!connection.is_recovering());
    let confirmation = channel
        .publish(&publish, &BasicProperties::default(), vec![0, 0, 0, 200])
        .unwrap();
    confirmation.wait(Duration::from_secs(5)).unwrap();
    let delivery = consumer.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(body_number(&delivery.content.body), 200);
    channel.ack(delivery.delivery_tag, false).unwrap();
    connection.close().unwrap();
}

fn gives_up_quickly(proxy: &Proxy) -> ConnectOptions {
    let mut options = recovering_options(proxy);
    options.recovery = Some(Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(40),
        max_attempts: Some(3),
    });
    options
}

/// What the handler saw: a start, failed attempts, and giving up last.
fn assert_gave_up(reports: &Reports) {
    let reports = reports.lock().unwrap();
    let attempts = reports
        .iter()
        .filter(|event| matches!(event, RecoveryEvent::AttemptFailed { .. }))
        .count();
    assert!(
        matches!(reports.first(), Some(RecoveryEvent::Started { .. }))
            && matches!(reports.last(), Some(RecoveryEvent::GaveUp { .. }))
            && attempts == 2,
        "{reports:?}"
    );
}

#[tokio::test]
async fn recovery_gives_up_after_its_attempts_tokio() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let proxy = start_proxy();
    let connection = amqp_io_tokio::Connection::connect_with(gives_up_quickly(&proxy))
        .await
        .unwrap();
    let (reports, report) = reporter();
    connection.on_recovery(report);
    let channel = connection.channel().await.unwrap();
    proxy.refuse(true);
    proxy.cut();
    let error = tokio::time::timeout(Duration::from_secs(10), connection.closed())
        .await
        .expect("recovery ends");
    assert!(
        matches!(error, amqp_proto::ConnectionError::TransportClosed(_)),
        "{error}"
    );
    assert_gave_up(&reports);
    // Every call now fails at once with the connection's end.
    let declare = channel.queue_declare(QueueDeclare::default()).await;
    assert!(
        matches!(declare, Err(Error::ConnectionClosed(_))),
        "{declare:?}"
    );
}

#[test]
fn recovery_gives_up_after_its_attempts_blocking() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let proxy = start_proxy();
    let connection = amqp_io_std::Connection::open_with(gives_up_quickly(&proxy)).unwrap();
    let (reports, report) = reporter();
    connection.on_recovery(report);
    let channel = connection.channel().unwrap();
    proxy.refuse(true);
    proxy.cut();
    // Pumping is what drives a blocking connection's recovery.
    let started = Instant::now();
    let error = loop {
        match connection.drain_events(Duration::from_millis(200)) {
            Ok(_) | Err(Error::Timeout { .. }) => {}
            Err(error) => break error,
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "recovery never ended"
        );
    };
    assert!(matches!(error, Error::ConnectionClosed(_)), "{error:?}");
    assert_gave_up(&reports);
    let declare = channel.queue_declare(QueueDeclare::default());
    assert!(
        matches!(declare, Err(Error::ConnectionClosed(_))),
        "{declare:?}"
    );
}

#[test]
fn dropping_a_recovering_connection_ends_its_recovery_blocking() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let proxy = start_proxy();
    let mut options = recovering_options(&proxy);
    options.recovery = Some(Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(100),
        max_attempts: None,
    });
    let connection = amqp_io_std::Connection::open_with(options).unwrap();
    let (reports, report) = reporter();
    connection.on_recovery(report);
    connection.spawn_heartbeat_keeper();
    let _channel = connection.channel().unwrap();
    proxy.refuse(true);
    proxy.cut();
    let started = Instant::now();
    while !reports
        .lock()
        .unwrap()
        .iter()
        .any(|event| matches!(event, RecoveryEvent::AttemptFailed { .. }))
    {
        assert!(started.elapsed() < Duration::from_secs(10), "no attempt");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(connection.is_recovering());
    let dropped = Instant::now();
    drop(connection);
    assert!(
        dropped.elapsed() < Duration::from_secs(1),
        "{:?}",
        dropped.elapsed()
    );
    // The keeper stops trying: no attempt is reported after the drop.
    let seen = reports.lock().unwrap().len();
    std::thread::sleep(Duration::from_millis(500));
    let after = reports.lock().unwrap().clone();
    assert!(
        after.len() <= seen + 1
            && after
                .iter()
                .skip(seen)
                .all(|event| matches!(event, RecoveryEvent::GaveUp { .. })),
        "{after:?}"
    );
}

#[test]
fn dropping_a_recovering_connection_ends_its_driver_tokio() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let metrics = runtime.metrics();
    let proxy = start_proxy();
    let mut options = recovering_options(&proxy);
    options.recovery = Some(Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(100),
        max_attempts: None,
    });
    runtime.block_on(async {
        let connection = amqp_io_tokio::Connection::connect_with(options)
            .await
            .unwrap();
        let _channel = connection.channel().await.unwrap();
        proxy.refuse(true);
        proxy.cut();
        let started = Instant::now();
        while !connection.is_recovering() {
            assert!(started.elapsed() < Duration::from_secs(10), "no recovery");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(metrics.num_alive_tasks(), 1, "the driver, reconnecting");
    });
    // Every handle is gone: the driver gives up and ends.
    let started = Instant::now();
    while metrics.num_alive_tasks() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the driver outlived its handles"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
