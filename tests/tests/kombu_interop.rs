//! Interop with the real Python kombu and celery (the pinned versions in
//! `tests/interop/requirements.txt`, installed into `.venv` by
//! `scripts/interop-venv`), over the local RabbitMQ: Rust broadcasting to
//! kombu nodes and to a celery worker, Python broadcasting to a Rust node,
//! and `celery inspect ping` seeing the Rust node.
//!
//! These tests need the broker and the venv, and fail (never pass
//! silently) without them.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqp_io_common::pidbox::{self, MailboxSettings};
use amqp_io_std::pidbox::{unknown_command, Broadcast, Mailbox, Node};
use amqp_io_std::{Connection, Error};
use amqp_proto::codec::{BasicProperties, FieldTable, FieldValue};
use amqp_proto::spec::BasicPublish;
use amqp_tests::{broker_unreachable, broker_url, interop, unique};
use serde_json::{json, Value};

fn open() -> Connection {
    match Connection::open(&broker_url()) {
        Ok(connection) => connection,
        Err(error @ Error::Connect { .. }) => broker_unreachable(&error),
        Err(error) => panic!("cannot open a connection: {error}"),
    }
}

/// A child process killed when the test ends, however it ends.
struct Process {
    child: Child,
    /// Kept open: the kombu nodes run until their stdin closes.
    stdin: Option<ChildStdin>,
}

impl Drop for Process {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts kombu nodes named `hostnames` in `namespace` and waits until
/// each consumes.
fn kombu_nodes(namespace: &str, hostnames: &[&str]) -> Process {
    let mut child = Command::new(interop::python())
        .arg(interop::script("kombu_nodes.py"))
        .arg(namespace)
        .args(hostnames)
        .args(["--slow", "1.0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the kombu nodes");
    let stdout = child.stdout.take().expect("piped stdout");
    let stdin = child.stdin.take();
    let mut lines = BufReader::new(stdout).lines();
    for _ in hostnames {
        let line = lines
            .next()
            .expect("a kombu node exited before it was ready")
            .expect("read the nodes' output");
        assert!(line.starts_with("ready "), "unexpected output {line:?}");
    }
    Process { child, stdin }
}

fn mailbox_in(connection: &Connection, namespace: &str) -> Mailbox {
    Mailbox::new(
        connection,
        pidbox::Mailbox::new(namespace, MailboxSettings::celery()),
    )
    .unwrap()
}

fn hostnames(replies: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = replies
        .iter()
        .filter_map(Value::as_object)
        .flat_map(|reply| reply.keys().cloned())
        .collect();
    names.sort();
    names
}

#[test]
fn rust_broadcasts_to_three_kombu_nodes() {
    let namespace = unique("mailbox");
    let _nodes = kombu_nodes(&namespace, &["a@h", "b@h", "c@h"]);
    let connection = open();
    let mut mailbox = mailbox_in(&connection, &namespace);

    // limit=3 returns as soon as the third reply is in.
    let mut broadcast = Broadcast::new("ping");
    broadcast.timeout = Duration::from_secs(5);
    broadcast.limit = Some(3);
    let started = Instant::now();
    let mut seen = 0;
    let replies = mailbox.broadcast(&broadcast, |_| seen += 1).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(hostnames(&replies), ["a@h", "b@h", "c@h"]);
    assert_eq!(seen, 3, "the callback sees each reply");
    assert_eq!(
        replies[0].as_object().unwrap().values().next(),
        Some(&json!({"ok": "pong"}))
    );

    // limit=None waits out the timeout, which restarts with each reply.
    broadcast.limit = None;
    broadcast.timeout = Duration::from_millis(700);
    let started = Instant::now();
    let replies = mailbox.broadcast(&broadcast, |_| {}).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(hostnames(&replies), ["a@h", "b@h", "c@h"]);
    assert!(elapsed >= Duration::from_millis(700), "{elapsed:?}");

    // A glob pattern picks nodes by name, as kombu's matcher does.
    let mut picked = Broadcast::new("ping");
    picked.pattern = Some("[ab]@*".into());
    picked.matcher = Some("glob".into());
    picked.limit = Some(2);
    picked.timeout = Duration::from_secs(5);
    let replies = mailbox.broadcast(&picked, |_| {}).unwrap();
    assert_eq!(hostnames(&replies), ["a@h", "b@h"]);

    // The nodes' clocks moved ours on.
    assert!(
        mailbox.state().clock().value() > 4,
        "{:?}",
        mailbox.state().clock()
    );
    connection.close().unwrap();
}

#[test]
fn a_late_reply_is_kept_for_its_own_ticket_and_expired_ones_are_dropped() {
    let namespace = unique("mailbox");
    let _nodes = kombu_nodes(&namespace, &["slow@h"]);
    let connection = open();
    let mut mailbox = mailbox_in(&connection, &namespace);

    // `slow` answers after 1 s; this collect gives up after 0.2 s.
    let mut slow = Broadcast::new("slow");
    slow.timeout = Duration::from_millis(200);
    assert!(mailbox.broadcast(&slow, |_| {}).unwrap().is_empty());
    let slow_ticket = mailbox.last_ticket().unwrap().to_owned();

    // A ping collect meanwhile receives the late answer: it is not its
    // own, but counted, and kept aside.
    let mut ping = Broadcast::new("ping");
    ping.timeout = Duration::from_millis(1_500);
    ping.limit = Some(2);
    let replies = mailbox.broadcast(&ping, |_| {}).unwrap();
    assert_eq!(replies, vec![json!({"slow@h": {"ok": "pong"}})]);
    let kept = mailbox
        .collect(&slow_ticket, None, Duration::from_secs(1), |_| {})
        .unwrap();
    assert_eq!(kept, vec![json!({"slow@h": {"ok": "slow pong"}})]);

    // An expired reply is dropped, yet still moves the clock.
    let side = connection.channel().unwrap();
    let reply_queue = mailbox.state().reply_queue();
    let mut ping = Broadcast::new("ping");
    ping.timeout = Duration::from_millis(500);
    ping.limit = Some(2);
    // Declares the reply queue and collects the node's answer.
    mailbox.broadcast(&ping, |_| {}).unwrap();
    let ticket = mailbox.last_ticket().unwrap().to_owned();
    let mut headers = FieldTable::new();
    headers.insert("ticket", FieldValue::LongString(ticket.as_str().into()));
    headers.insert("clock", FieldValue::LongLongInt(1_000));
    headers.insert("expires", FieldValue::Double(1.0));
    let stale = BasicPublish {
        routing_key: reply_queue.as_str().into(),
        ..Default::default()
    };
    // The reply queue went with the last collect's consumer; declare it
    // again as a broadcast would, then plant the stale reply.
    let (exchange, queue, bind) = mailbox.state().reply_topology();
    side.exchange_declare(exchange).unwrap();
    let declared = side.queue_declare(queue);
    // Exclusive to the mailbox's own connection: both live on this one.
    declared.unwrap();
    side.queue_bind(bind).unwrap();
    let properties = BasicProperties::default()
        .content_type("application/json")
        .headers(headers);
    side.publish(&stale, &properties, r#"{"ghost@h": {"ok": "pong"}}"#)
        .unwrap();
    let replies = mailbox
        .collect(&ticket, Some(1), Duration::from_secs(2), |_| {})
        .unwrap();
    assert!(
        replies.is_empty(),
        "the expired reply was dropped: {replies:?}"
    );
    assert!(mailbox.state().clock().value() > 1_000);
    connection.close().unwrap();
}

#[test]
fn a_python_mailbox_broadcasts_to_a_rust_node() {
    let namespace = unique("mailbox");
    let connection = open();
    let hostname = "rust@interop";
    let mut node = Node::new(
        &connection,
        pidbox::Node::new(hostname, &namespace, MailboxSettings::celery()),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let serving = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut handled = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                node.serve(Duration::from_millis(100), |command| {
                    handled.push(command.method.clone());
                    match command.method.as_str() {
                        "ping" => json!({"ok": "pong"}),
                        _ => unknown_command(command),
                    }
                })
                .unwrap();
            }
            (handled, node.state().clock())
        })
    };
    let output = Command::new(interop::python())
        .arg(interop::script("kombu_broadcast.py"))
        .args([namespace.as_str(), "ping", hostname, "3"])
        .output()
        .expect("run kombu_broadcast.py");
    stop.store(true, Ordering::SeqCst);
    let (handled, clock) = serving.join().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["replies"], json!([{ hostname: {"ok": "pong"} }]));
    assert_eq!(handled, ["ping"]);
    // Each side's clock moved past the other's.
    assert!(clock.value() >= 1);
    assert!(result["clock"].as_u64().unwrap() > 1);
    connection.close().unwrap();
}

/// A celery worker of `tests/interop/celery_app.py`, named `name`.
fn celery_worker(name: &str) -> Process {
    let child = Command::new(interop::python())
        .args(["-m", "celery", "-A", "celery_app", "--workdir"])
        .arg(interop::scripts())
        .args([
            "worker",
            "--pool=solo",
            "--without-mingle",
            "--without-gossip",
        ])
        .args(["-l", "warning", "-n", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a celery worker");
    Process { child, stdin: None }
}

#[test]
fn a_celery_worker_answers_rust_and_celery_sees_a_rust_node() {
    let worker_name = format!("{}@interop", unique("worker").replace('.', "-"));
    let _worker = celery_worker(&worker_name);
    let connection = open();
    let mut mailbox = Mailbox::celery(&connection).unwrap();

    // The Rust `inspect ping`, until the worker is up (a few seconds).
    let mut ping = Broadcast::new("ping");
    ping.destination = Some(vec![worker_name.clone()]);
    ping.timeout = Duration::from_millis(500);
    let deadline = Instant::now() + Duration::from_secs(30);
    let replies = loop {
        let replies = mailbox.broadcast(&ping, |_| {}).unwrap();
        if !replies.is_empty() || Instant::now() > deadline {
            break replies;
        }
    };
    assert_eq!(
        replies,
        vec![json!({ worker_name.clone(): {"ok": "pong"} })]
    );
    let mut control = Broadcast::new("enable_events");
    control.destination = Some(vec![worker_name.clone()]);
    let replies = mailbox.broadcast(&control, |_| {}).unwrap();
    assert_eq!(
        replies,
        vec![json!({ worker_name.clone(): {"ok": "task events enabled"} })]
    );

    // `celery inspect ping` from Python sees a Rust node.
    let rust_name = format!("{}@interop", unique("rust").replace('.', "-"));
    let mut node = Node::celery(&connection, &rust_name).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let serving = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                node.serve(Duration::from_millis(100), |command| {
                    match command.method.as_str() {
                        "ping" => json!({"ok": "pong"}),
                        _ => unknown_command(command),
                    }
                })
                .unwrap();
            }
        })
    };
    let output = Command::new(interop::python())
        .args(["-m", "celery", "-A", "celery_app", "--workdir"])
        .arg(interop::scripts())
        .args(["inspect", "ping", "--json", "-d", &rust_name])
        .output()
        .expect("run celery inspect ping");
    stop.store(true, Ordering::SeqCst);
    serving.join().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).expect("celery's JSON");
    assert_eq!(seen, json!({ rust_name: {"ok": "pong"} }));
    connection.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tokio_adapter_broadcasts_to_kombu_nodes_and_serves_a_python_mailbox() {
    use amqp_io_tokio::pidbox::{Mailbox as AsyncMailbox, Node as AsyncNode};

    let namespace = unique("mailbox");
    let _nodes = kombu_nodes(&namespace, &["x@h", "y@h", "z@h"]);
    let connection = match amqp_io_tokio::Connection::connect(&broker_url()).await {
        Ok(connection) => connection,
        Err(error) => broker_unreachable(&error),
    };
    let state = pidbox::Mailbox::new(&namespace, MailboxSettings::celery());
    let mut mailbox = AsyncMailbox::new(&connection, state).await.unwrap();
    let mut ping = Broadcast::new("ping");
    ping.timeout = Duration::from_secs(5);
    ping.limit = Some(3);
    let started = Instant::now();
    let replies = mailbox.broadcast(&ping, |_| {}).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(hostnames(&replies), ["x@h", "y@h", "z@h"]);

    let hostname = "tokio@interop";
    let state = pidbox::Node::new(hostname, &namespace, MailboxSettings::celery());
    let mut node = AsyncNode::new(&connection, state).await.unwrap();
    let python = tokio::task::spawn_blocking({
        let namespace = namespace.clone();
        move || {
            Command::new(interop::python())
                .arg(interop::script("kombu_broadcast.py"))
                .args([namespace.as_str(), "ping", hostname, "3"])
                .output()
                .expect("run kombu_broadcast.py")
        }
    });
    let handled = node
        .serve(Duration::from_secs(10), |_| json!({"ok": "pong"}))
        .await
        .unwrap();
    assert!(handled);
    let output = python.await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["replies"], json!([{ hostname: {"ok": "pong"} }]));
    connection.close().await.unwrap();
}
