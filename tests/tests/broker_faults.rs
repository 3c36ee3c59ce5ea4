//! Faults of the broker itself, through both adapters: the broker's
//! application restarted (`rabbitmqctl stop_app` / `start_app`) in the
//! middle of consuming ends the connection with a typed error, every later
//! call fails promptly, and nothing (thread or task) outlives the
//! connection; a memory alarm blocks a publishing connection
//! (`connection.blocked`), and lifting it unblocks it and lets the held
//! publish through. Plus a slow link (the proxy's delay) that changes
//! nothing but latency.
//!
//! These tests stop or alarm the shared broker, so they take turns (one
//! lock for the whole binary), and a guard puts the broker back (running,
//! with its own memory watermark) even when an assertion fails. They need
//! the broker and fail (never pass silently) without it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use amqp_io_common::{ConnectOptions, Error};
use amqp_proto::codec::BasicProperties;
use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::spec::{BasicConsume, BasicGet, BasicQos, QueueDeclare};
use amqp_proto::{CloseReason, ConnectionError, Initiator};
use amqp_tests::proxy::Proxy;
use amqp_tests::{
    broker_address, broker_unreachable, broker_url, passive_declare, publish_to, rabbitmqctl,
};

/// Serializes the tests of this binary: each of them stops or alarms the
/// one broker every other test uses.
static BROKER: Mutex<()> = Mutex::new(());

/// Takes the broker for one test; a test that failed holding it poisoned
/// the lock, which changes nothing for the next one.
fn take_broker() -> MutexGuard<'static, ()> {
    BROKER.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `rabbitmqctl`, failing the test when it cannot.
fn ctl(args: &[&str]) -> String {
    rabbitmqctl(args).unwrap_or_else(|error| panic!("{error}"))
}

/// Polls `check` every 20 ms until it holds or `within` passes; says
/// whether it held.
fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn exclusive_queue() -> QueueDeclare {
    QueueDeclare {
        exclusive: true,
        ..Default::default()
    }
}

fn consume(queue: &str) -> BasicConsume {
    BasicConsume {
        queue: queue.into(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------
// Broker restarted mid-consume
// ---------------------------------------------------------------------

/// Starts the broker's application again (and waits for it) when
/// dropped, so a failing assertion never leaves it stopped.
struct KeepsBrokerRunning;

impl KeepsBrokerRunning {
    fn start() -> Result<(), String> {
        // start_app on a running application succeeds and does nothing.
        rabbitmqctl(&["start_app"])?;
        rabbitmqctl(&["await_startup"]).map(drop)
    }
}

impl Drop for KeepsBrokerRunning {
    fn drop(&mut self) {
        if let Err(error) = Self::start() {
            if thread::panicking() {
                eprintln!("could not start the broker again: {error}");
            } else {
                panic!("could not start the broker again: {error}");
            }
        }
    }
}

/// Stops the broker's application and starts it again, on a thread of its
/// own, so the test's thread is waiting on its consumer meanwhile (a
/// restart in the middle of consuming, not between calls).
fn restart_broker() -> JoinHandle<Result<Duration, String>> {
    thread::spawn(|| {
        let started = Instant::now();
        rabbitmqctl(&["stop_app"])?;
        rabbitmqctl(&["start_app"])?;
        rabbitmqctl(&["await_startup"])?;
        Ok(started.elapsed())
    })
}

/// The reason a stopping broker gives its connections. RabbitMQ (3.10
/// here) sends `connection.close` with 320 CONNECTION_FORCED ("broker
/// forced connection closure with reason 'shutdown'") before it drops the
/// socket, so the close is ahead of the socket's end in what the client
/// reads (even a client that reads only after the restart): both adapters
/// report the server's close, `ConnectionError::Closed` with
/// `Initiator::Server`, not `TransportClosed`.
fn assert_forced_close(error: &Error) -> CloseReason {
    match error {
        Error::ConnectionClosed(ConnectionError::Closed(reason))
            if reason.code == ReplyCode::CONNECTION_FORCED
                && reason.initiator == Initiator::Server =>
        {
            assert!(reason.text.contains("shutdown"), "{reason:?}");
            reason.clone()
        }
        other => panic!("expected the broker's 320 CONNECTION_FORCED close, got {other:?}"),
    }
}

/// True for the error of a connection the broker closed with `reason`.
fn is_closed_with(error: &Error, reason: &CloseReason) -> bool {
    matches!(error, Error::ConnectionClosed(ConnectionError::Closed(got)) if got == reason)
}

/// Every test of this binary. The test harness runs each on a thread
/// named after it, and starts the next one's thread when one ends: while
/// a test holds the broker, the thread of a test queued behind it may
/// appear. Their first 15 characters (what Linux keeps of a thread's
/// name) must differ, so such a thread is told from one the test itself
/// started (which is named, or inherits the test thread's name); a new
/// test whose name shares a prefix with another's would make that
/// other's harness thread look leaked, which is why
/// `test_names_differ_within_what_linux_keeps` checks the list.
const TESTS: [&str; 8] = [
    "test_names_differ_within_what_linux_keeps",
    "blocking_broker_restart_mid_consume_ends_the_connection_with_a_typed_error",
    "tokio_broker_restart_mid_consume_ends_the_connection_with_a_typed_error",
    "blocking_memory_alarm_blocks_the_publisher_until_lifted",
    "tokio_memory_alarm_blocks_the_publisher_until_lifted",
    "blocking_slow_link_changes_nothing_but_latency",
    "tokio_recovery_from_a_broker_restart_resumes_the_consumer",
    "blocking_recovery_from_a_broker_restart_is_driven_by_the_heartbeat_keeper",
];

/// Linux keeps this many bytes of a thread's name.
const THREAD_NAME_KEPT: usize = 15;

#[test]
fn test_names_differ_within_what_linux_keeps() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let source = include_str!("broker_faults.rs");
    let mut declared: Vec<&str> = source
        .split("#[test]\nfn ")
        .skip(1)
        .filter_map(|rest| rest.split('(').next())
        .collect();
    declared.sort_unstable();
    let mut listed = TESTS.to_vec();
    listed.sort_unstable();
    assert_eq!(declared, listed, "TESTS lists every broker test");
    let mut prefixes: Vec<&str> = TESTS.iter().map(|name| &name[..THREAD_NAME_KEPT]).collect();
    prefixes.sort_unstable();
    prefixes.dedup();
    assert_eq!(prefixes.len(), TESTS.len(), "{prefixes:?}");
}

/// Linux's name of a thread of this process; `None` once it is gone.
fn thread_name(id: &str) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/self/task/{id}/comm")).ok()?;
    Some(comm.trim_end().to_owned())
}

/// Linux's name of the calling thread.
fn own_thread_name() -> String {
    let comm = std::fs::read_to_string("/proc/thread-self/comm").expect("this thread's name");
    comm.trim_end().to_owned()
}

/// The threads of this process, by id, with their names.
fn threads() -> HashMap<String, String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task lists this process's threads")
        .filter_map(|entry| {
            let id = entry.ok()?.file_name().to_string_lossy().into_owned();
            let name = thread_name(&id)?;
            Some((id, name))
        })
        .collect()
}

/// How many threads of this process bear `name`.
fn threads_named(name: &str) -> usize {
    threads().values().filter(|got| *got == name).count()
}

/// The threads started since `before` that the test harness did not
/// start for another test: what this test left behind.
fn threads_left(before: &HashMap<String, String>, own_name: &str) -> Vec<(String, String)> {
    let harness = |name: &str| {
        name != own_name
            && TESTS
                .iter()
                .any(|test| test.chars().take(THREAD_NAME_KEPT).eq(name.chars()))
    };
    threads()
        .into_iter()
        .filter(|(id, name)| !before.contains_key(id) && !harness(name))
        .collect()
}

/// How many messages a test publishes before consuming, and how many the
/// consumer may hold unacknowledged: it stops at the prefetch, so the
/// restart finds it waiting with deliveries in hand.
const PUBLISHED: u32 = 10;
const PREFETCH: u16 = 2;

#[test]
fn blocking_broker_restart_mid_consume_ends_the_connection_with_a_typed_error() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let _turn = take_broker();
    let _restore = KeepsBrokerRunning;
    let own_name = own_thread_name();
    assert!(TESTS.iter().any(|test| test.starts_with(&own_name)));
    let threads_before = threads();

    let connection =
        amqp_io_std::Connection::open(&broker_url()).unwrap_or_else(|e| broker_unreachable(&e));
    // The adapter's one thread of its own: it must end with the connection.
    connection.spawn_heartbeat_keeper();
    let keepers = || threads_named("amqp-heartbeat");
    assert!(
        eventually(Duration::from_secs(2), || keepers() == 1),
        "the heartbeat keeper runs"
    );
    let channel = connection.channel().unwrap();
    let queue = channel.queue_declare(exclusive_queue()).unwrap().queue;
    let queue = queue.to_string();
    channel.confirm_select().unwrap();
    for n in 0..PUBLISHED {
        let body = format!("message {n}");
        channel
            .publish(&publish_to(&queue), &BasicProperties::default(), body)
            .unwrap();
    }
    channel.wait_for_confirms(Duration::from_secs(10)).unwrap();
    channel
        .basic_qos(BasicQos {
            prefetch_count: PREFETCH,
            ..Default::default()
        })
        .unwrap();
    let consumer = channel.basic_consume(consume(&queue)).unwrap();
    let mut deliveries = Vec::new();
    for n in 0..PREFETCH {
        let delivery = consumer.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(delivery.body().as_ref(), format!("message {n}").as_bytes());
        deliveries.push(delivery);
    }

    let restart = restart_broker();
    // Unacknowledged at the prefetch: the next thing the consumer yields
    // is the end of the connection.
    let started = Instant::now();
    let error = consumer
        .recv_timeout(Duration::from_secs(15))
        .expect_err("the restart ends the consumer");
    eprintln!(
        "blocking: the consumer ended after {:?} with {error:?}",
        started.elapsed()
    );
    let reason = assert_forced_close(&error);
    let took = restart.join().unwrap().unwrap();
    eprintln!("blocking: the broker restarted in {took:?}");

    // Every later call fails at once with the same typed error (the
    // broker is running again: nothing reconnects behind our back).
    let started = Instant::now();
    let error = consumer.recv_timeout(Duration::from_secs(5)).unwrap_err();
    assert!(is_closed_with(&error, &reason), "{error:?}");
    let error = channel.queue_declare(passive_declare(&queue)).unwrap_err();
    assert!(is_closed_with(&error, &reason), "{error:?}");
    let error = channel
        .publish(&publish_to(&queue), &BasicProperties::default(), "late")
        .unwrap_err();
    assert!(is_closed_with(&error, &reason), "{error:?}");
    let error = channel.ack(deliveries[0].delivery_tag, false).unwrap_err();
    assert!(is_closed_with(&error, &reason), "{error:?}");
    let error = connection.channel().unwrap_err();
    assert!(is_closed_with(&error, &reason), "{error:?}");
    let error = connection.drain_events(Duration::from_secs(5)).unwrap_err();
    assert!(is_closed_with(&error, &reason), "{error:?}");
    assert!(!connection.is_open());
    assert_eq!(
        connection.close_reason(),
        Some(ConnectionError::Closed(reason.clone()))
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the calls after the end took {:?}",
        started.elapsed()
    );

    // The keeper noticed the end by itself, before anything was dropped.
    assert!(
        eventually(Duration::from_secs(3), || keepers() == 0),
        "the heartbeat keeper outlived its connection"
    );
    drop(consumer);
    drop(channel);
    let error = connection.close().unwrap_err();
    assert!(is_closed_with(&error, &reason), "{error:?}");
    let mut leaked = Vec::new();
    let settled = eventually(Duration::from_secs(3), || {
        leaked = threads_left(&threads_before, &own_name);
        leaked.is_empty()
    });
    assert!(settled, "threads left behind: {leaked:?}");

    // The restarted broker takes a fresh connection.
    let fresh = amqp_io_std::Connection::open(&broker_url()).unwrap();
    let channel = fresh.channel().unwrap();
    let queue = channel.queue_declare(exclusive_queue()).unwrap().queue;
    let queue = queue.to_string();
    channel.confirm_select().unwrap();
    channel
        .publish(&publish_to(&queue), &BasicProperties::default(), "again")
        .unwrap()
        .wait(Duration::from_secs(10))
        .unwrap();
    fresh.close().unwrap();
}

#[test]
fn tokio_broker_restart_mid_consume_ends_the_connection_with_a_typed_error() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let _turn = take_broker();
    let _restore = KeepsBrokerRunning;
    // A runtime of this test's own, so its task count is this test's.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let metrics = runtime.metrics();
    assert_eq!(metrics.num_alive_tasks(), 0);

    let (connection, channel, mut consumer, deliveries, queue) = runtime.block_on(async {
        let connection = amqp_io_tokio::Connection::connect(&broker_url())
            .await
            .unwrap_or_else(|e| broker_unreachable(&e));
        let channel = connection.channel().await.unwrap();
        let queue = channel.queue_declare(exclusive_queue()).await.unwrap();
        let queue = queue.queue.to_string();
        channel.confirm_select().await.unwrap();
        for n in 0..PUBLISHED {
            let body = format!("message {n}");
            channel
                .publish(&publish_to(&queue), &BasicProperties::default(), body)
                .await
                .unwrap();
        }
        channel
            .wait_for_confirms(Duration::from_secs(10))
            .await
            .unwrap();
        channel
            .basic_qos(BasicQos {
                prefetch_count: PREFETCH,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut consumer = channel.basic_consume(consume(&queue)).await.unwrap();
        let mut deliveries = Vec::new();
        for n in 0..PREFETCH {
            let next = tokio::time::timeout(Duration::from_secs(10), consumer.recv());
            let delivery = next.await.unwrap().unwrap().unwrap();
            assert_eq!(delivery.body().as_ref(), format!("message {n}").as_bytes());
            deliveries.push(delivery);
        }
        (connection, channel, consumer, deliveries, queue)
    });
    // The connection's one task: its driver.
    assert_eq!(metrics.num_alive_tasks(), 1);

    let restart = restart_broker();
    let started = Instant::now();
    // (The timer belongs inside the runtime.)
    let next = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(15), consumer.recv()).await });
    let error = match next {
        Ok(Some(Err(error))) => error,
        Ok(Some(Ok(delivery))) => panic!("a delivery beyond the prefetch: {delivery:?}"),
        Ok(None) => panic!("the consumer ended without saying why"),
        Err(_) => panic!("the consumer hung through the restart"),
    };
    eprintln!(
        "tokio: the consumer ended after {:?} with {error:?}",
        started.elapsed()
    );
    let reason = assert_forced_close(&error);
    let took = restart.join().unwrap().unwrap();
    eprintln!("tokio: the broker restarted in {took:?}");

    let started = Instant::now();
    runtime.block_on(async {
        let within = Duration::from_secs(5);
        // The stream said why once; now it just ends.
        let next = tokio::time::timeout(within, consumer.recv()).await;
        assert!(matches!(next, Ok(None)), "{next:?}");
        let declare = channel.queue_declare(passive_declare(&queue));
        let error = tokio::time::timeout(within, declare).await.unwrap();
        assert!(is_closed_with(&error.unwrap_err(), &reason));
        let (late, properties) = (publish_to(&queue), BasicProperties::default());
        let publish = channel.publish(&late, &properties, "late");
        let error = tokio::time::timeout(within, publish).await.unwrap();
        assert!(is_closed_with(&error.unwrap_err(), &reason));
        let error = deliveries[0].ack().unwrap_err();
        assert!(is_closed_with(&error, &reason), "{error:?}");
        let error = tokio::time::timeout(within, connection.channel())
            .await
            .unwrap();
        assert!(is_closed_with(&error.unwrap_err(), &reason));
        let closed = tokio::time::timeout(within, connection.closed()).await;
        assert_eq!(closed.unwrap(), ConnectionError::Closed(reason.clone()));
        assert!(!connection.is_open());
        let error = tokio::time::timeout(within, connection.close())
            .await
            .unwrap();
        assert!(is_closed_with(&error.unwrap_err(), &reason));
    });
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the calls after the end took {:?}",
        started.elapsed()
    );

    // The driver ended with the connection, while handles still exist...
    assert!(
        eventually(Duration::from_secs(3), || metrics.num_alive_tasks() == 0),
        "{} task(s) outlived the connection",
        metrics.num_alive_tasks()
    );
    // ...and dropping them starts nothing.
    drop((consumer, deliveries, channel, connection));
    thread::sleep(Duration::from_millis(100));
    assert_eq!(metrics.num_alive_tasks(), 0);

    // The restarted broker takes a fresh connection.
    runtime.block_on(async {
        let fresh = amqp_io_tokio::Connection::connect(&broker_url())
            .await
            .unwrap();
        let channel = fresh.channel().await.unwrap();
        let queue = channel.queue_declare(exclusive_queue()).await.unwrap();
        channel.confirm_select().await.unwrap();
        let publish = publish_to(&queue.queue.to_string());
        let confirmation = channel
            .publish(&publish, &BasicProperties::default(), "again")
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), confirmation)
            .await
            .unwrap()
            .unwrap();
        fresh.close().await.unwrap();
    });
    assert!(
        eventually(Duration::from_secs(3), || metrics.num_alive_tasks() == 0),
        "the closed connection's driver still runs"
    );
}

// ---------------------------------------------------------------------
// Memory alarm: connection.blocked / connection.unblocked
// ---------------------------------------------------------------------

/// Sets the broker's memory high watermark to 1 byte (a memory alarm at
/// once) and puts the broker's own setting back when restored or dropped,
/// so a failing assertion never leaves the broker alarmed.
struct MemoryAlarm {
    /// The `rabbitmqctl` arguments that restore the watermark found.
    restore: Vec<String>,
    restored: bool,
}

impl MemoryAlarm {
    fn raise() -> Self {
        let found = ctl(&["eval", "vm_memory_monitor:get_vm_memory_high_watermark()."]);
        let found = found.trim();
        // `0.4` (relative, the default) or `{absolute,1073741824}`.
        let mut restore = vec!["set_vm_memory_high_watermark".to_owned()];
        match found.strip_prefix("{absolute,") {
            Some(bytes) => {
                let bytes = bytes.trim_end_matches('}').trim_matches('"');
                restore.extend(["absolute".to_owned(), bytes.to_owned()]);
            }
            None => {
                assert!(found.parse::<f64>().is_ok(), "watermark {found:?}");
                restore.push(found.to_owned());
            }
        }
        let alarm = Self {
            restore,
            restored: false,
        };
        ctl(&["set_vm_memory_high_watermark", "absolute", "1"]);
        assert!(
            eventually(Duration::from_secs(10), || ctl(&[
                "eval",
                "rabbit_alarm:get_alarms()."
            ])
            .contains("memory")),
            "the broker raised no memory alarm"
        );
        alarm
    }

    fn lift(&mut self) -> Result<(), String> {
        let args: Vec<&str> = self.restore.iter().map(String::as_str).collect();
        rabbitmqctl(&args)?;
        self.restored = true;
        Ok(())
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        if self.restored {
            return;
        }
        if let Err(error) = self.lift() {
            if thread::panicking() {
                eprintln!("could not restore the memory watermark: {error}");
            } else {
                panic!("could not restore the memory watermark: {error}");
            }
        }
    }
}

#[test]
fn blocking_memory_alarm_blocks_the_publisher_until_lifted() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let _turn = take_broker();
    let connection =
        amqp_io_std::Connection::open(&broker_url()).unwrap_or_else(|e| broker_unreachable(&e));
    let seen = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let record = Arc::clone(&seen);
    connection.on_blocked(move |reason| {
        record.lock().unwrap().push(reason.map(str::to_owned));
    });
    let mut channel = connection.channel().unwrap();
    let queue = channel.queue_declare(exclusive_queue()).unwrap().queue;
    let queue = queue.to_string();
    channel.confirm_select().unwrap();
    assert_eq!(connection.blocked(), None);

    let mut alarm = MemoryAlarm::raise();
    // RabbitMQ blocks a connection (and says so) when it publishes during
    // an alarm: this publish goes out, and is held by the broker.
    let held = channel
        .publish(&publish_to(&queue), &BasicProperties::default(), "held")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().is_empty() && Instant::now() < deadline {
        match connection.drain_events(Duration::from_millis(200)) {
            Ok(_) | Err(Error::Timeout { .. }) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    let reason = connection.blocked().expect("connection.blocked arrived");
    assert!(reason.contains("memory"), "{reason:?}");
    assert_eq!(*seen.lock().unwrap(), [Some(reason.clone())]);
    // Held, not confirmed; and the next publish waits (here up to its
    // channel's timeout) instead of sending.
    let error = channel
        .wait_for_confirms(Duration::from_millis(300))
        .unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    channel.set_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let error = channel
        .publish(&publish_to(&queue), &BasicProperties::default(), "refused")
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Timeout {
                operation: "publish",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    channel.set_timeout(Duration::from_secs(10));

    alarm.lift().unwrap();
    // The confirm wait reads connection.unblocked (RabbitMQ sends it
    // before it reads the held publish) and hands it to on_blocked on the
    // way: the handler must see it, and stay registered.
    held.wait(Duration::from_secs(10))
        .expect("the held publish is confirmed once the alarm is lifted");
    assert_eq!(*seen.lock().unwrap(), [Some(reason), None]);
    assert_eq!(connection.blocked(), None);
    channel
        .publish(&publish_to(&queue), &BasicProperties::default(), "after")
        .unwrap()
        .wait(Duration::from_secs(10))
        .unwrap();

    // The queue holds exactly the held publish and the one after.
    let count = channel.queue_declare(passive_declare(&queue)).unwrap();
    assert_eq!(count.message_count, 2);
    for expected in ["held", "after"] {
        let get = BasicGet {
            queue: queue.as_str().into(),
            no_ack: true,
            ..Default::default()
        };
        let message = channel.basic_get(get).unwrap().expect("a message");
        assert_eq!(message.content.body.as_ref(), expected.as_bytes());
    }
    connection.close().unwrap();
}

#[test]
fn tokio_memory_alarm_blocks_the_publisher_until_lifted() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let _turn = take_broker();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let within = Duration::from_secs(10);
    // The test's future runs on this thread, the connection's driver on
    // the runtime's workers: the blocking rabbitmqctl calls in it hold up
    // only the test.
    runtime.block_on(async {
        let connection = amqp_io_tokio::Connection::connect(&broker_url())
            .await
            .unwrap_or_else(|e| broker_unreachable(&e));
        let channel = connection.channel().await.unwrap();
        let queue = channel.queue_declare(exclusive_queue()).await.unwrap();
        let queue = queue.queue.to_string();
        channel.confirm_select().await.unwrap();
        let mut blocked = connection.watch_blocked();
        assert_eq!(*blocked.borrow(), None);

        let mut alarm = MemoryAlarm::raise();
        let held = channel
            .publish(&publish_to(&queue), &BasicProperties::default(), "held")
            .await
            .unwrap();
        let reason = tokio::time::timeout(within, blocked.wait_for(Option::is_some))
            .await
            .expect("connection.blocked arrived")
            .unwrap()
            .clone()
            .unwrap();
        assert!(reason.contains("memory"), "{reason:?}");
        assert_eq!(
            connection.blocked(),
            Some(reason.clone()),
            "the snapshot agrees"
        );
        let error = channel
            .wait_for_confirms(Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
        let mut impatient = channel.clone();
        impatient.set_timeout(Duration::from_millis(500));
        let started = Instant::now();
        let error = impatient
            .publish(&publish_to(&queue), &BasicProperties::default(), "refused")
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                Error::Timeout {
                    operation: "publish",
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(500));

        alarm.lift().unwrap();
        tokio::time::timeout(within, blocked.wait_for(Option::is_none))
            .await
            .expect("connection.unblocked arrived")
            .unwrap();
        tokio::time::timeout(within, held)
            .await
            .expect("the held publish is confirmed once the alarm is lifted")
            .unwrap();
        let after = channel
            .publish(&publish_to(&queue), &BasicProperties::default(), "after")
            .await
            .unwrap();
        tokio::time::timeout(within, after).await.unwrap().unwrap();

        // The queue holds exactly the held publish and the one after.
        let count = channel.queue_declare(passive_declare(&queue)).await;
        assert_eq!(count.unwrap().message_count, 2);
        let mut consumer = channel.basic_consume(consume(&queue)).await.unwrap();
        for expected in ["held", "after"] {
            let delivery = tokio::time::timeout(within, consumer.recv()).await;
            let delivery = delivery.unwrap().unwrap().unwrap();
            assert_eq!(delivery.body().as_ref(), expected.as_bytes());
            delivery.ack().unwrap();
        }
        connection.close().await.unwrap();
    });
}

// ---------------------------------------------------------------------
// A slow link
// ---------------------------------------------------------------------

#[test]
fn blocking_slow_link_changes_nothing_but_latency() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let _turn = take_broker();
    const DELAY: Duration = Duration::from_millis(50);
    let proxy = Proxy::start(&broker_address()).unwrap_or_else(|e| broker_unreachable(&e));
    let url = format!("amqp://guest:guest@{}/%2f", proxy.address());
    let options = ConnectOptions::from_url(&url).unwrap();
    let connection =
        amqp_io_std::Connection::open_with(options).unwrap_or_else(|e| broker_unreachable(&e));
    let channel = connection.channel().unwrap();
    let queue = channel.queue_declare(exclusive_queue()).unwrap().queue;
    let queue = queue.to_string();
    channel.confirm_select().unwrap();

    proxy.delay(Some(DELAY));
    // A publish and its confirm cross the link once each way.
    let started = Instant::now();
    channel
        .publish(&publish_to(&queue), &BasicProperties::default(), "slow")
        .unwrap()
        .wait(Duration::from_secs(10))
        .unwrap();
    let round_trip = started.elapsed();
    assert!(round_trip >= 2 * DELAY, "{round_trip:?}");
    assert!(round_trip < Duration::from_secs(5), "{round_trip:?}");
    let get = BasicGet {
        queue: queue.as_str().into(),
        no_ack: true,
        ..Default::default()
    };
    let started = Instant::now();
    let message = channel.basic_get(get).unwrap().expect("the message");
    assert!(started.elapsed() >= 2 * DELAY, "{:?}", started.elapsed());
    assert_eq!(message.content.body.as_ref(), b"slow");

    // Back to full speed: same link, same connection.
    proxy.delay(None);
    channel
        .publish(&publish_to(&queue), &BasicProperties::default(), "fast")
        .unwrap()
        .wait(Duration::from_secs(10))
        .unwrap();
    eprintln!("delayed round trip {round_trip:?}");
    connection.close().unwrap();
}

/// Options that recover, patiently enough for a broker restart (a couple
/// of seconds here).
fn recovering(url: &str) -> ConnectOptions {
    let mut options = ConnectOptions::from_url(url).unwrap();
    options.recovery = Some(amqp_proto::Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(1),
        max_attempts: Some(60),
    });
    options
}

type Reports = Arc<Mutex<Vec<amqp_io_common::recovery::RecoveryEvent>>>;

/// The new name of the one server-named queue, once recovered.
fn recovered_queue(reports: &Reports) -> Option<String> {
    reports
        .lock()
        .unwrap()
        .iter()
        .find_map(|event| match event {
            amqp_io_common::recovery::RecoveryEvent::Recovered { renamed_queues, .. } => {
                renamed_queues.first().map(|(_, new)| new.to_string())
            }
            _ => None,
        })
}

/// Publishes one message to `queue` on a connection of its own.
fn publish_one(queue: &str, body: &'static str) {
    let connection =
        amqp_io_std::Connection::open(&broker_url()).unwrap_or_else(|e| broker_unreachable(&e));
    let channel = connection.channel().unwrap();
    channel.confirm_select().unwrap();
    channel
        .publish(&publish_to(queue), &BasicProperties::default(), body)
        .unwrap()
        .wait(Duration::from_secs(10))
        .unwrap();
    connection.close().unwrap();
}

#[test]
fn tokio_recovery_from_a_broker_restart_resumes_the_consumer() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let _turn = take_broker();
    let _restore = KeepsBrokerRunning;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reports: Reports = Arc::default();
    let (connection, mut consumer) = runtime.block_on(async {
        let connection = amqp_io_tokio::Connection::connect_with(recovering(&broker_url()))
            .await
            .unwrap_or_else(|e| broker_unreachable(&e));
        let sink = Arc::clone(&reports);
        connection.on_recovery(move |event| sink.lock().unwrap().push(event.clone()));
        let channel = connection.channel().await.unwrap();
        let queue = channel
            .queue_declare(exclusive_queue())
            .await
            .unwrap()
            .queue;
        let consumer = channel
            .basic_consume(consume(&queue.to_string()))
            .await
            .unwrap();
        (connection, consumer)
    });
    let took = restart_broker().join().unwrap().unwrap();
    // The exclusive queue went with the broker's application; the
    // recovery declares a new one and consumes from it again.
    assert!(
        eventually(Duration::from_secs(20), || recovered_queue(&reports)
            .is_some()),
        "no recovery after the restart ({took:?}): {:?}",
        reports.lock().unwrap()
    );
    let queue = recovered_queue(&reports).unwrap();
    publish_one(&queue, "after the restart");
    runtime.block_on(async {
        let next = tokio::time::timeout(Duration::from_secs(10), consumer.recv()).await;
        let delivery = next.unwrap().unwrap().unwrap();
        assert_eq!(delivery.body().as_ref(), b"after the restart");
        delivery.ack().unwrap();
        connection.close().await.unwrap();
    });
}

#[test]
fn blocking_recovery_from_a_broker_restart_is_driven_by_the_heartbeat_keeper() {
    let _no_errors = amqp_tests::capture::NoErrors::watch();
    let _turn = take_broker();
    let _restore = KeepsBrokerRunning;
    let connection = amqp_io_std::Connection::open_with(recovering(&broker_url()))
        .unwrap_or_else(|e| broker_unreachable(&e));
    let reports: Reports = Arc::default();
    let sink = Arc::clone(&reports);
    connection.on_recovery(move |event| sink.lock().unwrap().push(event.clone()));
    // Nothing of the application's pumps the connection during the
    // restart: the keeper alone notices the failure and recovers.
    connection.spawn_heartbeat_keeper();
    let channel = connection.channel().unwrap();
    let queue = channel.queue_declare(exclusive_queue()).unwrap().queue;
    let consumer = channel.basic_consume(consume(&queue.to_string())).unwrap();
    let took = restart_broker().join().unwrap().unwrap();
    assert!(
        eventually(Duration::from_secs(20), || recovered_queue(&reports)
            .is_some()),
        "no recovery after the restart ({took:?}): {:?}",
        reports.lock().unwrap()
    );
    let queue = recovered_queue(&reports).unwrap();
    publish_one(&queue, "after the restart");
    let delivery = consumer.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(delivery.content.body.as_ref(), b"after the restart");
    channel.ack(delivery.delivery_tag, false).unwrap();
    connection.close().unwrap();
}
