//! Celery tasks both ways against the local RabbitMQ and the real Python
//! Celery (the pinned versions in `tests/interop/requirements.txt`, in
//! the `.venv` that `scripts/interop-venv` makes): Rust clients sending
//! to a Python worker, Python's `apply_async` / `AsyncResult.get()`
//! against the Rust workers of both adapters (results equal to a Python
//! worker's, result bodies byte for byte), malformed messages, late and
//! early acknowledgements through a worker's death, 1,000 tasks one at a
//! time and pipelined.
//!
//! These tests need the broker and the venv, and fail (never pass
//! silently) without them.

#[path = "../../amqp-io-std/examples/celery_cli/mod.rs"]
mod celery_cli;

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use amqp_io_common::celery::{task_message, Signature, TaskOptions, WorkerSettings, WorkerStats};
use amqp_io_std::celery as blocking;
use amqp_io_std::{Connection, Error};
use amqp_io_tokio::celery as nonblocking;
use amqp_proto::codec::{BasicProperties, FieldTable, FieldValue};
use amqp_proto::spec::{BasicConsume, QueueDeclare};
use amqp_tests::{broker_unreachable, broker_url, interop, passive_declare, publish_to, unique};
use serde_json::{json, Value};

fn open() -> Connection {
    match Connection::open(&broker_url()) {
        Ok(connection) => connection,
        Err(error @ Error::Connect { .. }) => broker_unreachable(&error),
        Err(error) => panic!("cannot open a connection: {error}"),
    }
}

async fn connect() -> amqp_io_tokio::Connection {
    match amqp_io_tokio::Connection::connect(&broker_url()).await {
        Ok(connection) => connection,
        Err(error) => broker_unreachable(&error),
    }
}

/// A task queue of its own for a test, deleted (with its exchange) when
/// the test ends: Celery's queues are durable.
struct TaskQueue(String);

impl TaskQueue {
    fn new(prefix: &str) -> Self {
        Self(unique(prefix))
    }
}

impl Drop for TaskQueue {
    fn drop(&mut self) {
        if let Ok(connection) = Connection::open(&broker_url()) {
            if let Ok(channel) = connection.channel() {
                let _ = channel.queue_delete(amqp_proto::spec::QueueDelete {
                    queue: self.0.as_str().into(),
                    ..Default::default()
                });
                let _ = channel.exchange_delete(amqp_proto::spec::ExchangeDelete {
                    exchange: self.0.as_str().into(),
                    ..Default::default()
                });
            }
            let _ = connection.close();
        }
    }
}

/// A Python Celery worker of `tests/interop/celery_tasks.py` (prefork,
/// two processes, so that time limits apply), stopped with its process
/// group when the test ends.
struct PythonWorker(Child);

impl PythonWorker {
    fn start(queue: &str) -> Self {
        let name = format!("{}@interop", unique("py").replace('.', "-"));
        let child = Command::new(interop::python())
            .args(["-m", "celery", "-A", "celery_tasks", "--workdir"])
            .arg(interop::scripts())
            .args(["worker", "--pool=prefork", "--concurrency=2"])
            .args([
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
            ])
            .args(["-l", "error", "-n", &name, "-Q", queue])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a celery worker");
        Self(child)
    }
}

impl Drop for PythonWorker {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// Waits until a worker consumes `queue`: the first task comes back.
fn wait_until_served(client: &blocking::Client, queue: &str) {
    let options = TaskOptions::default().queue(queue);
    let first = client.send_task("tasks.add", (1, 1), (), options).unwrap();
    assert_eq!(
        first.get(Duration::from_secs(60)).unwrap(),
        json!(2),
        "the worker never answered"
    );
}

fn register_std(worker: &mut blocking::Worker) {
    worker
        .register("tasks.add", celery_cli::add)
        .register("tasks.echo", celery_cli::echo)
        .register("tasks.fail", celery_cli::fail)
        .register("tasks.sleep", |task| {
            let (duration, seconds) = celery_cli::sleep(task)?;
            std::thread::sleep(duration);
            Ok(seconds)
        });
}

fn register_tokio(worker: &mut nonblocking::Worker) {
    worker
        .register("tasks.add", |task| async move { celery_cli::add(&task) })
        .register("tasks.echo", |task| async move { celery_cli::echo(&task) })
        .register("tasks.fail", |task| async move { celery_cli::fail(&task) })
        .register("tasks.sleep", |task| async move {
            let (duration, seconds) = celery_cli::sleep(&task)?;
            tokio::time::sleep(duration).await;
            Ok(seconds)
        });
}

/// The blocking worker, serving on a thread of its own until stopped.
struct StdWorker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<WorkerStats>>,
}

impl StdWorker {
    fn start(queue: &str) -> Self {
        let connection = open();
        let mut worker = blocking::Worker::new(WorkerSettings::new(queue));
        register_std(&mut worker);
        let mut worker = worker.consume(&connection).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                while !stop.load(Ordering::SeqCst) {
                    worker.serve(Duration::from_millis(50)).unwrap();
                }
                let stats = worker.close().unwrap();
                connection.close().unwrap();
                stats
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> WorkerStats {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for StdWorker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The tokio worker, served by a task until its sender fires.
async fn tokio_worker(
    connection: &amqp_io_tokio::Connection,
    settings: WorkerSettings,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<amqp_io_tokio::Result<WorkerStats>>,
) {
    let mut worker = nonblocking::Worker::new(settings);
    register_tokio(&mut worker);
    let worker = worker.consume(connection).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    (stop, tokio::spawn(worker.run_until(stopped)))
}

fn python(args: &[&str]) -> Value {
    let output = Command::new(interop::python())
        .arg(interop::script("celery_call.py"))
        .args(args)
        .output()
        .expect("run celery_call.py");
    assert!(
        output.status.success(),
        "celery_call.py {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("celery_call.py's JSON")
}

#[test]
fn rust_clients_send_tasks_to_a_python_worker() {
    let queue = TaskQueue::new("celery-py");
    let q = queue.0.as_str();
    let _worker = PythonWorker::start(q);
    let connection = open();
    let client = blocking::Client::new(&connection).unwrap();
    wait_until_served(&client, q);
    let options = || TaskOptions::default().queue(q);
    let wait = Duration::from_secs(20);

    // Sent at once, waited for after. The one that expires first: its
    // message lives no longer than it, so it must reach the worker at
    // once.
    let expired = client
        .send_task(
            "tasks.add",
            (1, 1),
            (),
            options()
                .countdown(Duration::from_secs(2))
                .expires(Duration::from_secs(1)),
        )
        .unwrap();
    // Positional and keyword arguments.
    let add = client
        .send_task("tasks.add", (2, 3), (), options())
        .unwrap();
    let keyword = client
        .send_task("tasks.add", (2,), json!({"y": 40}), options())
        .unwrap();
    let echo = client
        .send_task(
            "tasks.echo",
            (1, "two", 3.5, (), true),
            json!({"k": [1, 2], "s": "caf\u{e9}"}),
            options(),
        )
        .unwrap();
    let fail = client
        .send_task("tasks.fail", ("boom",), (), options())
        .unwrap();
    let unknown = client.send_task("tasks.nope", (), (), options()).unwrap();
    let hard = client
        .send_task(
            "tasks.sleep",
            (3,),
            (),
            options().time_limit(Duration::from_secs(1)),
        )
        .unwrap();
    let soft = client
        .send_task(
            "tasks.sleep",
            (3,),
            (),
            options().soft_time_limit(Duration::from_secs(1)),
        )
        .unwrap();
    let quick = client
        .send_task(
            "tasks.sleep",
            (0.1,),
            (),
            options()
                .expires(Duration::from_secs(60))
                .time_limit(Duration::from_secs(10)),
        )
        .unwrap();

    assert_eq!(add.get_as::<i64>(wait).unwrap(), 5);
    assert_eq!(keyword.get(wait).unwrap(), json!(42));
    assert_eq!(
        echo.get(wait).unwrap(),
        json!({"args": [1, "two", 3.5, null, true], "kwargs": {"k": [1, 2], "s": "caf\u{e9}"}})
    );
    let failure = fail.get(wait).unwrap_err();
    let failure = failure.failure().expect("a typed failure");
    assert_eq!(
        (failure.exc_type.as_str(), failure.exc_module.as_str()),
        ("ValueError", "builtins")
    );
    assert_eq!(failure.message(), "boom");
    assert!(failure
        .traceback
        .as_deref()
        .unwrap()
        .ends_with("ValueError: boom\n"));
    let failure = unknown.get(wait).unwrap_err();
    assert_eq!(failure.failure().unwrap().exc_type, "NotRegistered");
    let revoked = expired.wait(wait).unwrap();
    assert_eq!(revoked.state.as_str(), "REVOKED");
    assert_eq!(
        revoked.outcome().unwrap_err().exc_message,
        vec![json!("expired")]
    );
    let failure = hard.get(wait).unwrap_err();
    let failure = failure.failure().unwrap();
    assert_eq!(
        (failure.exc_type.as_str(), failure.exc_message.clone()),
        ("TimeLimitExceeded", vec![json!(1)])
    );
    let failure = soft.get(wait).unwrap_err();
    assert_eq!(failure.failure().unwrap().exc_type, "SoftTimeLimitExceeded");
    assert_eq!(quick.get(wait).unwrap(), json!(0.1));
    assert_eq!(add.state().as_str(), "SUCCESS");

    // 1,000 pipelined: all sent, then every result collected.
    let started = Instant::now();
    let results: Vec<_> = (0..1_000)
        .map(|n| {
            client
                .send_task("tasks.add", (n, 1), (), options())
                .unwrap()
        })
        .collect();
    for (n, result) in results.iter().enumerate() {
        assert_eq!(result.get_as::<usize>(wait).unwrap(), n + 1);
    }
    eprintln!(
        "1,000 pipelined to the Python worker: {:?}",
        started.elapsed()
    );
    drop(results);
    assert_eq!(client.pending(), 0, "nothing left waiting");

    // The tokio client, against the same worker.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let connection = connect().await;
        let client = nonblocking::Client::new(&connection).await.unwrap();
        let add = client
            .send_task("tasks.add", (2, 3), (), options())
            .await
            .unwrap();
        let echo = client
            .send_task("tasks.echo", ("a",), json!({"b": 2}), options())
            .await
            .unwrap();
        let fail = client
            .send_task("tasks.fail", ("no",), (), options())
            .await
            .unwrap();
        assert_eq!(add.get_as::<i64>(wait).await.unwrap(), 5);
        assert_eq!(
            echo.get(wait).await.unwrap(),
            json!({"args": ["a"], "kwargs": {"b": 2}})
        );
        let failure = fail.get(wait).await.unwrap_err();
        assert_eq!(failure.failure().unwrap().to_string(), "ValueError: no");
        // A result that does not come in time is a timeout, and may be
        // waited for again.
        let slow = client
            .send_task("tasks.sleep", (0.5,), (), options())
            .await
            .unwrap();
        assert!(matches!(
            slow.get(Duration::from_millis(100)).await,
            Err(nonblocking::Error::Timeout { .. })
        ));
        assert_eq!(slow.get(wait).await.unwrap(), json!(0.5));
        connection.close().await.unwrap();
    });
    connection.close().unwrap();
}

/// The calls both Python and Rust workers get from Python.
fn python_calls() -> String {
    // The one that expires first: its message lives no longer than it
    // (`expiration`), so it must reach the worker at once.
    json!([
        {"task": "tasks.add", "args": [1, 1], "options": {"countdown": 2, "expires": 1}},
        {"task": "tasks.add", "args": [2, 3]},
        {"task": "tasks.add", "args": [2], "kwargs": {"y": 5}},
        {"task": "tasks.add", "args": [1.5, 2]},
        {"task": "tasks.echo", "args": [1, "two", 3.5, null, true], "kwargs": {"k": [1, 2], "s": "caf\u{e9}"}},
        {"task": "tasks.echo"},
        {"task": "tasks.fail", "args": ["boom"]},
        {"task": "tasks.add", "args": [1, 2, 3]},
        {"task": "tasks.nope", "args": [1]},
        {"task": "tasks.sleep", "args": [3], "options": {"time_limit": 1}},
        {"task": "tasks.sleep", "args": [3], "options": {"soft_time_limit": 1}},
        {"task": "tasks.sleep", "args": [0.2], "options": {"time_limit": 5, "expires": 30, "priority": 3}},
        {"task": "tasks.add", "args": [4, 4], "options": {"ignore_result": true}},
        {"task": "tasks.add", "args": [5], "kwargs": {"y": 6}, "protocol": 1},
    ])
    .to_string()
}

/// The outcomes without their task ids.
fn without_ids(outcomes: &Value) -> Vec<Value> {
    outcomes
        .as_array()
        .unwrap()
        .iter()
        .map(|outcome| json!({"state": outcome["state"], "result": outcome["result"]}))
        .collect()
}

/// `body` with the value of `"key": ` replaced by `"..."`: a string (a
/// time, a traceback) whose text differs from run to run.
fn blank(body: &str, key: &str) -> String {
    let marker = format!("\"{key}\": \"");
    let Some(start) = body.find(&marker) else {
        return body.to_owned();
    };
    let value = start + marker.len();
    let mut end = value;
    let bytes = body.as_bytes();
    while end < bytes.len() && bytes[end] != b'"' {
        end += if bytes[end] == b'\\' { 2 } else { 1 };
    }
    format!("{}...{}", &body[..value], &body[end..])
}

/// Publishes each signature as a raw task message to `queue` with its
/// result wanted on `reply_queue`; returns the raw result bodies by task,
/// the ids and run-dependent text blanked.
fn raw_results(connection: &Connection, queue: &str, signatures: &[Signature]) -> Vec<String> {
    let channel = connection.channel().unwrap();
    let reply_queue = channel
        .queue_declare(QueueDeclare {
            exclusive: true,
            ..Default::default()
        })
        .unwrap()
        .queue
        .to_string();
    let replies = channel
        .basic_consume(BasicConsume {
            queue: reply_queue.as_str().into(),
            no_ack: true,
            ..Default::default()
        })
        .unwrap();
    let mut ids = Vec::new();
    for (n, signature) in signatures.iter().enumerate() {
        let id = format!("00000000-0000-4000-8000-{n:012}-{}", unique("raw"));
        let message = task_message(signature, &id, &reply_queue, "gen0@test", SystemTime::now());
        channel
            .publish(&publish_to(queue), &message.properties, message.body)
            .unwrap();
        ids.push(id);
    }
    let mut bodies: HashMap<String, String> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while bodies.len() < ids.len() && Instant::now() < deadline {
        let Ok(reply) = replies.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let id = reply
            .properties()
            .correlation_id
            .as_ref()
            .unwrap()
            .to_string();
        // Python's worker sends a hard time limit's failure twice: the
        // first one counts.
        let body = String::from_utf8(reply.body().to_vec()).unwrap();
        bodies.entry(id).or_insert(body);
    }
    channel.close().unwrap();
    ids.iter()
        .map(|id| {
            let body = bodies
                .get(id)
                .unwrap_or_else(|| panic!("no result for {id} from {queue}"));
            let body = body.replace(id.as_str(), "ID");
            blank(&blank(&body, "date_done"), "traceback")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_get_the_same_results_from_rust_workers_as_from_a_python_worker() {
    let (python_queue, std_queue, tokio_queue) = (
        TaskQueue::new("celery-py"),
        TaskQueue::new("celery-std"),
        TaskQueue::new("celery-tokio"),
    );
    let _python = PythonWorker::start(&python_queue.0);
    let std_worker = StdWorker::start(&std_queue.0);
    let connection = connect().await;
    let settings = WorkerSettings::new(tokio_queue.0.as_str()).concurrency(4);
    let (stop_tokio, tokio_worker) = tokio_worker(&connection, settings).await;
    let queues = [
        python_queue.0.clone(),
        std_queue.0.clone(),
        tokio_queue.0.clone(),
    ];
    tokio::task::spawn_blocking({
        let queue = queues[0].clone();
        move || {
            let connection = open();
            wait_until_served(&blocking::Client::new(&connection).unwrap(), &queue);
            connection.close().unwrap();
        }
    })
    .await
    .unwrap();

    // Python's send_task and AsyncResult.get() against each worker.
    let calls = python_calls();
    let answers: Vec<Value> = {
        let runs = queues.iter().map(|queue| {
            let (queue, calls) = (queue.clone(), calls.clone());
            tokio::task::spawn_blocking(move || python(&[&queue, "calls", &calls]))
        });
        let mut answers = Vec::new();
        for run in runs.collect::<Vec<_>>() {
            answers.push(run.await.unwrap());
        }
        answers
    };
    let python_answers = without_ids(&answers[0]);
    assert_eq!(python_answers[0]["state"], "REVOKED");
    assert_eq!(python_answers[1], json!({"state": "SUCCESS", "result": 5}));
    assert_eq!(python_answers[6]["result"]["exc_type"], "ValueError");
    assert_eq!(
        python_answers.last(),
        Some(&json!({"state": "SUCCESS", "result": 11}))
    );
    for (queue, rust) in queues.iter().zip(&answers).skip(1) {
        assert_eq!(without_ids(rust), python_answers, "{queue}");
    }

    // The result bodies, byte for byte but for ids, times, tracebacks.
    let value = |value: Value| value.as_array().cloned().unwrap();
    let signature = |name: &str, args: Value, options: TaskOptions| {
        Signature::new(name).args(value(args)).options(options)
    };
    let seconds = Duration::from_secs;
    let signatures = vec![
        // First, as in `python_calls`.
        signature(
            "tasks.add",
            json!([1, 1]),
            TaskOptions::default()
                .countdown(seconds(2))
                .expires(seconds(1)),
        ),
        signature("tasks.add", json!([2, 3]), TaskOptions::default()),
        signature("tasks.add", json!([2.5, 2]), TaskOptions::default()),
        signature(
            "tasks.add",
            json!([9_007_199_254_740_993_i64, 1]),
            TaskOptions::default(),
        ),
        signature(
            "tasks.echo",
            json!([1, "two", 3.5, null, true, {"x": [1e16, -0.0]}]),
            TaskOptions::default(),
        )
        .kwargs(
            json!({"k": [1, 2], "s": "caf\u{e9} \u{1F600}\n"})
                .as_object()
                .cloned()
                .unwrap(),
        ),
        signature("tasks.fail", json!(["boom"]), TaskOptions::default()),
        signature("tasks.add", json!([1]), TaskOptions::default()),
        signature("tasks.nope", json!([]), TaskOptions::default()),
        signature(
            "tasks.sleep",
            json!([3]),
            TaskOptions::default().time_limit(seconds(1)),
        ),
        signature(
            "tasks.sleep",
            json!([3]),
            TaskOptions::default().soft_time_limit(seconds(1)),
        ),
    ];
    let bodies = tokio::task::spawn_blocking(move || {
        let connection = open();
        let bodies: Vec<Vec<String>> = queues
            .iter()
            .map(|queue| raw_results(&connection, queue, &signatures))
            .collect();
        connection.close().unwrap();
        bodies
    })
    .await
    .unwrap();
    assert!(bodies[0][1].starts_with(r#"{"status": "SUCCESS", "result": 5, "traceback": null, "children": [], "date_done": "...", "task_id": "ID"}"#), "{}", bodies[0][1]);
    for rust in &bodies[1..] {
        for (python, rust) in bodies[0].iter().zip(rust) {
            assert_eq!(rust, python);
        }
    }

    // 1,000 tasks from Python to each Rust worker: one at a time, then
    // pipelined.
    for (queue, mode) in [
        (&std_queue.0, "sequential"),
        (&tokio_queue.0, "sequential"),
        (&std_queue.0, "pipelined"),
        (&tokio_queue.0, "pipelined"),
    ] {
        let name = queue.clone();
        let report = tokio::task::spawn_blocking(move || python(&[&name, "bench", "1000", mode]))
            .await
            .unwrap();
        assert_eq!(report["tasks"], 1000);
        eprintln!("Python -> Rust ({mode}, {queue}): {report}");
    }

    let stats = std_worker.stop();
    assert!(stats.succeeded >= 2_000, "{stats:?}");
    assert_eq!((stats.not_registered, stats.expired), (2, 2));
    stop_tokio.send(()).unwrap();
    let stats = tokio_worker.await.unwrap().unwrap();
    assert!(stats.succeeded >= 2_000, "{stats:?}");
    assert_eq!(stats.timed_out, 4);
    connection.close().await.unwrap();
}

/// A task message's properties with these headers.
fn properties(headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .content_type("application/json")
        .content_encoding("utf-8")
        .headers(headers)
}

fn headers(task: Option<&str>, id: Option<&str>) -> FieldTable {
    let mut headers = FieldTable::new();
    if let Some(task) = task {
        headers.insert("task", FieldValue::LongString(task.into()));
    }
    if let Some(id) = id {
        headers.insert("id", FieldValue::LongString(id.into()));
    }
    headers
}

/// What no worker can run, as raw messages: each is rejected without
/// requeue, logged once, and the worker goes on.
fn malformed() -> Vec<(BasicProperties, &'static [u8])> {
    let task = || headers(Some("tasks.add"), Some("m"));
    vec![
        (properties(task()), b"[[1, 2], {}]"),
        (properties(task()), b"{\"args\": [1, 2]}"),
        (properties(task()), b"[[1, 2], [], {}]"),
        (
            properties(headers(Some("tasks.add"), None)),
            b"[[1, 2], {}, {}]",
        ),
        (properties(headers(None, Some("m"))), b"[[1, 2], {}, {}]"),
        (properties(task()), b"[[1, 2], {}, {"),
        (properties(task()), b"\xff\xfe"),
        (
            properties(task()).content_type("application/x-python-serialize"),
            b"\x80\x04K\x01.",
        ),
        (properties(FieldTable::new()), b"{\"task\": \"tasks.add\"}"),
        (properties(FieldTable::new()), b"\"tasks.add\""),
        (
            properties({
                let mut headers = task();
                headers.insert("eta", FieldValue::LongString("tomorrow".into()));
                headers
            }),
            b"[[1, 2], {}, {}]",
        ),
    ]
}

/// Publishes every malformed message and an unknown task to `queue`, then
/// one good task, whose result must come; then checks that the queue
/// holds nothing (nothing requeued).
fn send_malformed(connection: &Connection, queue: &str) {
    let channel = connection.channel().unwrap();
    for (properties, body) in malformed() {
        channel
            .publish(&publish_to(queue), &properties, body)
            .unwrap();
    }
    let client = blocking::Client::new(connection).unwrap();
    let options = || TaskOptions::default().queue(queue);
    let unknown = client.send_task("tasks.nope", (), (), options()).unwrap();
    let good = client
        .send_task("tasks.add", (2, 3), (), options())
        .unwrap();
    let wait = Duration::from_secs(20);
    assert_eq!(
        unknown.get(wait).unwrap_err().failure().unwrap().exc_type,
        "NotRegistered"
    );
    assert_eq!(good.get(wait).unwrap(), json!(5));
    // Nothing went back to the queue (a requeue would loop for ever).
    std::thread::sleep(Duration::from_millis(300));
    let left = channel.queue_declare(passive_declare(queue)).unwrap();
    assert_eq!(left.message_count, 0);
    channel.close().unwrap();
}

#[test]
fn malformed_messages_are_rejected_and_the_workers_go_on() {
    let expected = malformed().len() as u64;

    let queue = TaskQueue::new("celery-bad-std");
    let worker = StdWorker::start(&queue.0);
    let connection = open();
    send_malformed(&connection, &queue.0);
    let stats = worker.stop();
    assert_eq!(
        (
            stats.received,
            stats.malformed,
            stats.not_registered,
            stats.succeeded
        ),
        (expected + 2, expected, 1, 1),
        "each once: {stats:?}"
    );

    let queue = TaskQueue::new("celery-bad-tokio");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (stop, worker, tokio_connection) = runtime.block_on(async {
        let connection = connect().await;
        let settings = WorkerSettings::new(queue.0.as_str()).concurrency(3);
        let (stop, worker) = tokio_worker(&connection, settings).await;
        (stop, worker, connection)
    });
    send_malformed(&connection, &queue.0);
    stop.send(()).unwrap();
    let stats = runtime.block_on(worker).unwrap().unwrap();
    assert_eq!(
        (
            stats.received,
            stats.malformed,
            stats.not_registered,
            stats.succeeded
        ),
        (expected + 2, expected, 1, 1),
        "each once: {stats:?}"
    );
    runtime.block_on(tokio_connection.close()).unwrap();
    connection.close().unwrap();
}

#[test]
fn a_thousand_tasks_one_at_a_time_and_pipelined_rust_to_rust() {
    let wait = Duration::from_secs(30);

    let queue = TaskQueue::new("celery-1k-std");
    let worker = StdWorker::start(&queue.0);
    let connection = open();
    let client = blocking::Client::new(&connection).unwrap();
    let options = || TaskOptions::default().queue(queue.0.as_str());
    let started = Instant::now();
    for n in 0..1_000 {
        let result = client
            .send_task("tasks.add", (n, 1), (), options())
            .unwrap();
        assert_eq!(result.get_as::<u64>(wait).unwrap(), n + 1);
    }
    eprintln!("std, one at a time: {:?}", started.elapsed());
    let started = Instant::now();
    let results: Vec<_> = (0..1_000)
        .map(|n| {
            client
                .send_task("tasks.add", (n, 1), (), options())
                .unwrap()
        })
        .collect();
    for (n, result) in results.iter().enumerate() {
        assert_eq!(result.get_as::<usize>(wait).unwrap(), n + 1);
    }
    eprintln!("std, pipelined: {:?}", started.elapsed());
    drop(results);
    assert_eq!(worker.stop().succeeded, 2_000);
    connection.close().unwrap();

    let queue = TaskQueue::new("celery-1k-tokio");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let connection = connect().await;
        let settings = WorkerSettings::new(queue.0.as_str()).concurrency(8);
        let (stop, worker) = tokio_worker(&connection, settings).await;
        let client = nonblocking::Client::new(&connection).await.unwrap();
        let options = || TaskOptions::default().queue(queue.0.as_str());
        let started = Instant::now();
        for n in 0..1_000u64 {
            let result = client
                .send_task("tasks.add", (n, 1), (), options())
                .await
                .unwrap();
            assert_eq!(result.get_as::<u64>(wait).await.unwrap(), n + 1);
        }
        eprintln!("tokio, one at a time: {:?}", started.elapsed());
        let started = Instant::now();
        let mut results = Vec::new();
        for n in 0..1_000u64 {
            results.push(
                client
                    .send_task("tasks.add", (n, 1), (), options())
                    .await
                    .unwrap(),
            );
        }
        for (n, result) in results.iter().enumerate() {
            assert_eq!(result.get_as::<usize>(wait).await.unwrap(), n + 1);
        }
        eprintln!("tokio, pipelined: {:?}", started.elapsed());
        drop(results);
        // Concurrency: eight half-second tasks take about half a second.
        let started = Instant::now();
        let mut sleeps = Vec::new();
        for _ in 0..8 {
            sleeps.push(
                client
                    .send_task("tasks.sleep", (0.5,), (), options())
                    .await
                    .unwrap(),
            );
        }
        for sleep in &sleeps {
            sleep.get(wait).await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_millis(2_500),
            "{:?}",
            started.elapsed()
        );
        drop(sleeps);
        stop.send(()).unwrap();
        assert_eq!(worker.await.unwrap().unwrap().succeeded, 2_008);
        connection.close().await.unwrap();
    });
}

/// A task whose worker dies while it runs: with late acknowledgements it
/// is delivered again and a second worker runs it; with early ones it is
/// lost, as in Celery.
#[test]
fn late_acknowledgements_survive_a_worker_dying_mid_task_and_early_ones_do_not() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for (acks, survives) in [
        (amqp_io_common::celery::AckPolicy::late(), true),
        (amqp_io_common::celery::AckPolicy::early(), false),
    ] {
        let queue = TaskQueue::new("celery-acks");
        runtime.block_on(async {
            let client_connection = connect().await;
            let client = nonblocking::Client::new(&client_connection).await.unwrap();
            let doomed = connect().await;
            let settings = WorkerSettings::new(queue.0.as_str()).acks(acks);
            // A worker whose task says when it started (by then an early
            // acknowledgement was sent).
            let (started, mut has_started) = tokio::sync::mpsc::unbounded_channel();
            let mut worker = nonblocking::Worker::new(settings.clone());
            worker.register("tasks.sleep", move |_| {
                let started = started.clone();
                async move {
                    let _ = started.send(());
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(json!("never"))
                }
            });
            let worker = worker.consume(&doomed).await.unwrap();
            let dying = tokio::spawn(worker.run());
            let options = TaskOptions::default().queue(queue.0.as_str());
            let task = client
                .send_task("tasks.sleep", (0.5,), (), options)
                .await
                .unwrap();
            // The worker dies mid-task, its connection with it.
            has_started.recv().await.unwrap();
            dying.abort();
            doomed.close().await.unwrap();
            let survivor = connect().await;
            let (stop, worker) = tokio_worker(&survivor, settings).await;
            let outcome = task.get(Duration::from_secs(3)).await;
            if survives {
                assert_eq!(outcome.unwrap(), json!(0.5));
            } else {
                assert!(
                    matches!(outcome, Err(nonblocking::Error::Timeout { .. })),
                    "{outcome:?}"
                );
            }
            stop.send(()).unwrap();
            let stats = worker.await.unwrap().unwrap();
            assert_eq!(stats.received, u64::from(survives));
            survivor.close().await.unwrap();
            client_connection.close().await.unwrap();
        });
    }
}

/// Results the application has not read yet wait in the broker past the
/// result prefetch, not in the client: a client with a small prefetch
/// pipelines many more tasks than that and gets every result.
#[test]
fn results_beyond_the_prefetch_wait_in_the_broker() {
    let queue = TaskQueue::new("celery-prefetch");
    let worker = StdWorker::start(&queue.0);
    let connection = open();
    let mut settings = amqp_io_common::celery::ClientSettings::default();
    settings.result_prefetch = 5;
    let client = blocking::Client::with_settings(&connection, settings).unwrap();
    let options = || TaskOptions::default().queue(queue.0.as_str());
    let results: Vec<_> = (0..200)
        .map(|n| {
            client
                .send_task("tasks.add", (n, 1), (), options())
                .unwrap()
        })
        .collect();
    // Every result is in by now; at most five of them in this process.
    std::thread::sleep(Duration::from_millis(500));
    for (n, result) in (1..).zip(results.iter().rev()) {
        assert_eq!(
            result.get_as::<u64>(Duration::from_secs(20)).unwrap(),
            200 - n + 1
        );
    }
    drop(results);
    assert_eq!(worker.stop().succeeded, 200);
    connection.close().unwrap();
}

#[test]
fn the_handles_can_be_shared_between_threads_and_tasks() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<blocking::Client>();
    shared::<blocking::AsyncResult>();
    shared::<nonblocking::Client>();
    shared::<nonblocking::AsyncResult>();
    fn sent<T: Send + 'static>() {}
    sent::<blocking::Consuming>();
    sent::<nonblocking::Consuming>();
}
