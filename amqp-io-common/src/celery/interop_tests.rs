//! The task protocol checked against frames of a real Celery 5.7 client
//! and worker (`tests/fixtures/celery/`, captured by
//! `tests/interop/celery_capture.py`), and the worker's decisions.

use std::time::{Duration, SystemTime};

use amqp_proto::codec::{
    decode_content_header, decode_method, BasicProperties, Content, ContentHeader, DecodeLimits,
    FieldValue,
};
use amqp_proto::spec::{BasicQos, Method};
use amqp_proto::{Delivery, Settlement};
use serde_json::{json, Value};

use super::*;

const CLIENT_FRAMES: &str = include_str!("../../tests/fixtures/celery/client.frames");
const WORKER_FRAMES: &str = include_str!("../../tests/fixtures/celery/worker.frames");
const QUEUE: &str = "celery.capture";

/// One frame of a capture.
struct Frame {
    connection: u32,
    outgoing: bool,
    kind: u8,
    channel: u16,
    payload: Vec<u8>,
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
        .collect()
}

fn frames(capture: &str) -> Vec<Frame> {
    capture
        .lines()
        .map(|line| {
            let mut parts = line.split(' ');
            let connection = parts.next().unwrap().parse().unwrap();
            let outgoing = parts.next() == Some(">");
            let bytes = hex(parts.next().unwrap());
            let size = u32::from_be_bytes(bytes[3..7].try_into().unwrap()) as usize;
            Frame {
                connection,
                outgoing,
                kind: bytes[0],
                channel: u16::from_be_bytes([bytes[1], bytes[2]]),
                payload: bytes[7..7 + size].to_vec(),
            }
        })
        .collect()
}

/// A message of a capture: the method that carried it, its properties and
/// body.
struct Message {
    outgoing: bool,
    method: Method,
    properties: BasicProperties,
    body: Vec<u8>,
}

/// Every method of a capture (`messages` gathers the content ones).
fn methods(capture: &str) -> Vec<(bool, Method)> {
    frames(capture)
        .iter()
        .filter(|frame| frame.kind == 1)
        .map(|frame| {
            let method = decode_method(&frame.payload, &DecodeLimits::default()).unwrap();
            (frame.outgoing, method)
        })
        .collect()
}

fn messages(capture: &str) -> Vec<Message> {
    let frames = frames(capture);
    let mut out = Vec::new();
    for (at, frame) in frames.iter().enumerate() {
        if frame.kind != 1 {
            continue;
        }
        let method = decode_method(&frame.payload, &DecodeLimits::default()).unwrap();
        if !matches!(
            method,
            Method::BasicPublish(_) | Method::BasicDeliver(_) | Method::BasicGetOk(_)
        ) {
            continue;
        }
        let same = |other: &&Frame| {
            other.connection == frame.connection
                && other.outgoing == frame.outgoing
                && other.channel == frame.channel
        };
        let mut rest = frames[at + 1..].iter().filter(same);
        let header = rest.next().unwrap();
        let header = decode_content_header(&header.payload, &DecodeLimits::default()).unwrap();
        let mut body = Vec::new();
        while (body.len() as u64) < header.body_size {
            body.extend_from_slice(&rest.next().unwrap().payload);
        }
        out.push(Message {
            outgoing: frame.outgoing,
            method,
            properties: header.properties,
            body,
        });
    }
    out
}

fn correlation_id(properties: &BasicProperties) -> String {
    properties.correlation_id.as_ref().unwrap().to_string()
}

fn header_text(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers.as_ref()?.get(name)? {
        FieldValue::LongString(text) => Some(text.to_string()),
        _ => None,
    }
}

/// The task messages the Celery client published, by task id.
fn celery_tasks() -> Vec<(String, Message)> {
    messages(CLIENT_FRAMES)
        .into_iter()
        .filter(|message| {
            message.outgoing
                && matches!(&message.method, Method::BasicPublish(publish) if publish.routing_key == QUEUE)
        })
        .map(|message| (correlation_id(&message.properties), message))
        .collect()
}

/// The scenarios of `celery_capture.py`, as signatures.
fn scenario(id: &str) -> Signature {
    let seconds = Duration::from_secs;
    let options = TaskOptions::default().task_id(id).queue(QUEUE);
    let task = |name: &str, args: Value, options: TaskOptions| {
        Signature::new(name)
            .args(args.as_array().cloned().unwrap())
            .options(options)
    };
    match id.rsplit('-').next().unwrap() {
        "000000000001" => task("tasks.add", json!([2, 3]), options),
        "000000000007" => task(
            "tasks.add",
            json!([1, 1]),
            options.countdown(seconds(2)).expires(seconds(1)),
        ),
        "000000000002" => task("tasks.echo", json!([1, "two", 3.5, null, true]), options).kwargs(
            json!({"k": [1, 2], "s": "caf\u{e9}"})
                .as_object()
                .cloned()
                .unwrap(),
        ),
        "000000000003" => task("tasks.fail", json!(["boom"]), options),
        "000000000004" => task(
            "tasks.add",
            json!([20, 22]),
            options
                .countdown(seconds(1))
                .expires(seconds(60))
                .priority(7)
                .time_limit(seconds(30))
                .soft_time_limit(seconds(20)),
        ),
        "000000000005" => task("tasks.sleep", json!([3]), options.time_limit(seconds(1))),
        "000000000006" => task(
            "tasks.sleep",
            json!([3]),
            options.soft_time_limit(seconds(1)),
        ),
        "000000000008" => task("tasks.nope", json!([]), options),
        "000000000009" => task("tasks.add", json!([4, 4]), options.ignore_result(true)),
        other => panic!("no scenario {other}"),
    }
}

#[test]
fn task_messages_are_celerys_byte_for_byte() {
    let tasks = celery_tasks();
    assert_eq!(
        tasks.len(),
        10,
        "nine protocol 2 tasks and a protocol 1 one"
    );
    let mut compared = 0;
    for (id, celery) in &tasks {
        if header_text(&celery.properties, "task").is_none() {
            continue; // the protocol 1 one
        }
        let origin = header_text(&celery.properties, "origin").unwrap();
        let reply_to = celery.properties.reply_to.as_ref().unwrap().to_string();
        let signature = scenario(id);
        // Celery computes eta and expires from one `now`: take it back
        // from the eta (or expires) it wrote.
        let now = match (
            header_text(&celery.properties, "eta"),
            header_text(&celery.properties, "expires"),
        ) {
            (Some(eta), _) => parse_isoformat(&eta).unwrap() - signature.options.countdown.unwrap(),
            (None, Some(expires)) => {
                parse_isoformat(&expires).unwrap() - signature.options.expires.unwrap()
            }
            (None, None) => SystemTime::now(),
        };
        let ours = task_message(&signature, id, &reply_to, &origin, now);
        let Method::BasicPublish(publish) = &celery.method else {
            unreachable!()
        };
        assert_eq!(&ours.publish, publish, "{id}");
        // Every property, and every header in order with its type tag.
        assert_eq!(ours.properties, celery.properties, "{id}");
        assert_eq!(
            String::from_utf8_lossy(&ours.body),
            String::from_utf8_lossy(&celery.body),
            "{id}"
        );
        compared += 1;
    }
    assert_eq!(compared, 9);
}

#[test]
fn queues_are_declared_as_celery_declares_them() {
    let client = methods(CLIENT_FRAMES);
    let (exchange, queue, bind) = task_topology(QUEUE);
    assert!(client.contains(&(true, Method::ExchangeDeclare(exchange.clone()))));
    assert!(client.contains(&(true, Method::QueueDeclare(queue.clone()))));
    assert!(client.contains(&(true, Method::QueueBind(bind.clone()))));
    // The worker declares the same, sets a global prefetch and consumes.
    let worker = methods(WORKER_FRAMES);
    for method in [
        Method::ExchangeDeclare(exchange),
        Method::QueueDeclare(queue),
        Method::QueueBind(bind),
    ] {
        assert!(worker.contains(&(true, method)));
    }
    let ours = Worker::<(), Delivery>::new(WorkerSettings::new(QUEUE).prefetch_count(1));
    assert!(worker.contains(&(true, Method::BasicQos(ours.qos()))));
    let consume = worker
        .iter()
        .find_map(|(_, method)| match method {
            Method::BasicConsume(consume) if consume.queue == QUEUE => Some(consume.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        amqp_proto::spec::BasicConsume {
            consumer_tag: consume.consumer_tag.clone(),
            ..ours.consume()
        },
        consume
    );
    // The result queue, as the rpc:// backend declares it.
    let result_queue = tasks_reply_to();
    let declared = client
        .iter()
        .find_map(|(_, method)| match method {
            Method::QueueDeclare(declare) if declare.queue == result_queue.as_str() => {
                Some(declare.clone())
            }
            _ => None,
        })
        .unwrap();
    let settings = ClientSettings {
        result_queue: Some(result_queue.clone()),
        ..ClientSettings::default()
    };
    let ours = Client::<()>::new(settings);
    assert_eq!(ours.result_declare(), declared);
    let consume = client
        .iter()
        .find_map(|(_, method)| match method {
            Method::BasicConsume(consume) if consume.queue == result_queue.as_str() => {
                Some(consume.clone())
            }
            _ => None,
        })
        .unwrap();
    // The same but for the acknowledgements (see `result_consume`).
    assert!(consume.no_ack);
    assert_eq!(
        amqp_proto::spec::BasicConsume {
            consumer_tag: consume.consumer_tag.clone(),
            no_ack: true,
            ..ours.result_consume()
        },
        consume
    );
}

fn tasks_reply_to() -> String {
    let (_, first) = &celery_tasks()[0];
    first.properties.reply_to.as_ref().unwrap().to_string()
}

fn delivery_of(message: &Message, tag: u64) -> Delivery {
    let (exchange, routing_key) = match &message.method {
        Method::BasicDeliver(deliver) => (deliver.exchange.clone(), deliver.routing_key.clone()),
        Method::BasicPublish(publish) => (publish.exchange.clone(), publish.routing_key.clone()),
        _ => ("".into(), "".into()),
    };
    Delivery {
        channel: 1,
        consumer_tag: "worker".into(),
        delivery_tag: tag,
        redelivered: false,
        exchange,
        routing_key,
        content: Content {
            header: Box::new(ContentHeader::basic(
                message.body.len() as u64,
                message.properties.clone(),
            )),
            body: bytes::Bytes::copy_from_slice(&message.body),
        },
    }
}

type Handler = fn(&Request) -> Outcome;

fn interop_worker(settings: WorkerSettings) -> Worker<Handler, Delivery> {
    let mut worker = Worker::new(settings);
    let add: Handler = |request| {
        Outcome::Returned(
            request
                .bind::<(i64, i64)>(&["x", "y"])
                .map(|(x, y)| json!(x + y)),
        )
    };
    let echo: Handler =
        |request| Outcome::Returned(Ok(json!({"args": request.args, "kwargs": request.kwargs})));
    let fail: Handler = |request| {
        Outcome::Returned(
            request
                .bind::<(String,)>(&["msg"])
                .and_then(|(message,)| Err(Failure::value_error(message))),
        )
    };
    // As if the handler ran past its limit.
    let sleep: Handler = |_| Outcome::TimedOut;
    for (name, handler) in [
        ("tasks.add", add),
        ("tasks.echo", echo),
        ("tasks.fail", fail),
        ("tasks.sleep", sleep),
    ] {
        worker.register(name, handler, TaskSettings::default());
    }
    worker
}

/// One answer: the task id, the result published, the settlement, why
/// the task did not run.
type Answer = (
    String,
    Option<Outgoing>,
    Option<Settlement>,
    Option<Refused>,
);

/// Runs every action; returns the replies published and the settlements.
fn drive(worker: &mut Worker<Handler, Delivery>, now: SystemTime) -> Vec<Answer> {
    let mut out = Vec::new();
    while let Some(action) = worker.poll_action() {
        match action {
            Action::Run(job) => {
                let outcome = (job.handler())(job.request());
                worker.complete(job, outcome, now);
            }
            Action::Reply {
                delivery,
                reply,
                settle,
                refused,
            } => {
                let id = parse_request(&delivery)
                    .map(|request| request.id)
                    .unwrap_or_default();
                out.push((id, reply, settle, refused));
            }
            Action::Qos(_) => {}
        }
    }
    out
}

/// A result body with its traceback's text replaced: Python's names
/// Python files.
fn without_traceback(body: &[u8]) -> String {
    let mut value: Value = serde_json::from_slice(body).unwrap();
    if value["traceback"].is_string() {
        value["traceback"] = json!("...");
    }
    dumps(&value)
}

#[test]
fn the_worker_answers_celerys_messages_as_celerys_worker_does() {
    // What the Celery worker received, in order, and what it published.
    let worker_messages = messages(WORKER_FRAMES);
    let received: Vec<&Message> = worker_messages
        .iter()
        .filter(|message| !message.outgoing && matches!(message.method, Method::BasicDeliver(_)))
        .filter(|message| {
            matches!(&message.method, Method::BasicDeliver(deliver) if deliver.routing_key == QUEUE)
        })
        .collect();
    assert_eq!(received.len(), 10);
    let result_queue = tasks_reply_to();
    let published: Vec<&Message> = worker_messages
        .iter()
        .filter(|message| {
            message.outgoing
                && matches!(&message.method, Method::BasicPublish(publish) if publish.routing_key == result_queue.as_str())
        })
        .collect();

    for (tag, message) in received.iter().enumerate() {
        let request = parse_request(&delivery_of(message, 1)).unwrap();
        let celery = published
            .iter()
            .find(|result| correlation_id(&result.properties) == request.id);
        // Its result's date_done is the `now` it was decided at.
        let now = celery.map_or_else(SystemTime::now, |result| {
            let body: Value = serde_json::from_slice(&result.body).unwrap();
            parse_isoformat(body["date_done"].as_str().unwrap()).unwrap()
        });
        let mut worker = interop_worker(WorkerSettings::new(QUEUE));
        worker.handle_delivery(delivery_of(message, tag as u64 + 1), now);
        // An eta task is held, then released when due.
        if let Some(due) = worker.poll_timeout() {
            assert!(drive(&mut worker, now).is_empty(), "held until its eta");
            worker.handle_timeout(due.max(now));
        }
        let answers = drive(&mut worker, now);
        let [(id, reply, settle, refused)] = answers.as_slice() else {
            panic!("one answer to {}: {}", request.id, answers.len())
        };
        assert_eq!(id, &request.id);
        match request.name.as_str() {
            "tasks.nope" => {
                assert_eq!(settle, &Some(Settlement::Reject { requeue: false }));
                assert!(matches!(refused, Some(Refused::NotRegistered { .. })));
            }
            _ => assert_eq!(settle, &Some(Settlement::Ack { multiple: false }), "{id}"),
        }
        match (reply, celery) {
            (None, None) => assert!(request.ignore_result, "{id}"),
            (Some(ours), Some(celery)) => {
                assert_eq!(ours.properties, celery.properties, "{id}");
                let Method::BasicPublish(publish) = &celery.method else {
                    unreachable!()
                };
                assert_eq!(&ours.publish, publish);
                let exact =
                    !request.name.starts_with("tasks.fail") && request.soft_time_limit.is_none();
                if exact {
                    assert_eq!(
                        String::from_utf8_lossy(&ours.body),
                        String::from_utf8_lossy(&celery.body),
                        "{id}"
                    );
                } else {
                    assert_eq!(
                        without_traceback(&ours.body),
                        without_traceback(&celery.body),
                        "{id}"
                    );
                }
            }
            (ours, celery) => panic!("{id}: ours {ours:?}, celery's {}", celery.is_some()),
        }
    }
}

#[test]
fn the_client_reads_celerys_results() {
    let result_queue = tasks_reply_to();
    let results: Vec<Message> = messages(CLIENT_FRAMES)
        .into_iter()
        .filter(|message| !message.outgoing)
        .filter(|message| {
            matches!(&message.method, Method::BasicDeliver(deliver) if deliver.routing_key == result_queue.as_str())
        })
        .collect();
    let mut client = Client::<u32>::new(ClientSettings {
        result_queue: Some(result_queue),
        ..ClientSettings::default()
    });
    let mut outcomes = std::collections::HashMap::new();
    for (waiter, (id, _)) in celery_tasks().iter().enumerate() {
        let mut signature = scenario_or_old(id);
        signature.options.task_id = Some(id.clone());
        client.send(&signature, Some(waiter as u32), SystemTime::now());
    }
    for message in &results {
        if let Some((_, result)) = client.on_result(&delivery_of(message, 1)) {
            outcomes.insert(result.task_id.clone(), result.outcome());
        }
    }
    let outcome = |suffix: &str| {
        outcomes
            .get(&format!("00000000-0000-4000-8000-{suffix}"))
            .cloned()
            .unwrap_or_else(|| panic!("no result for {suffix}"))
    };
    assert_eq!(outcome("000000000001"), Ok(json!(5)));
    assert_eq!(
        outcome("000000000002"),
        Ok(json!({"args": [1, "two", 3.5, null, true], "kwargs": {"k": [1, 2], "s": "caf\u{e9}"}}))
    );
    let failure = outcome("000000000003").unwrap_err();
    assert_eq!(
        (failure.exc_type.as_str(), failure.message()),
        ("ValueError", "boom".into())
    );
    assert!(failure.traceback.unwrap().ends_with("ValueError: boom\n"));
    let revoked = outcome("000000000007").unwrap_err();
    assert_eq!(revoked.state, State::Revoked);
    assert_eq!(revoked.exc_type, "TaskRevokedError");
    let limit = outcome("000000000005").unwrap_err();
    assert_eq!(limit.exc_message, vec![json!(1)]);
    assert_eq!(
        outcome("000000000006").unwrap_err().exc_type,
        "SoftTimeLimitExceeded"
    );
    let unknown = outcome("000000000008").unwrap_err();
    assert_eq!(
        (unknown.exc_type.as_str(), unknown.exc_module.as_str()),
        ("NotRegistered", "celery.exceptions")
    );
    assert_eq!(outcome("000000000010"), Ok(json!(11)));
    // The ignored task registered nothing; the rest got their results.
    assert_eq!(client.pending(), 0);
}

fn scenario_or_old(id: &str) -> Signature {
    if id.ends_with("000000000010") {
        Signature::new("tasks.add")
    } else {
        scenario(id)
    }
}

#[test]
fn protocol_1_is_read() {
    let (_, old) = celery_tasks()
        .into_iter()
        .find(|(id, _)| id.ends_with("000000000010"))
        .unwrap();
    let request = parse_request(&delivery_of(&old, 1)).unwrap();
    assert_eq!(request.protocol, 1);
    assert_eq!(request.name, "tasks.add");
    assert_eq!(request.args, vec![json!(5)]);
    assert_eq!(request.kwargs.get("y"), Some(&json!(6)));
    assert_eq!(request.bind::<(i64, i64)>(&["x", "y"]).unwrap(), (5, 6));
    assert!(request.reply_to.is_some());
}

/// A delivery of `body` with these properties.
fn raw(properties: BasicProperties, body: &[u8]) -> Delivery {
    crate::testing::delivery(properties, body)
}

fn json_properties() -> BasicProperties {
    BasicProperties::default()
        .content_type("application/json")
        .content_encoding("utf-8")
        .reply_to("results")
}

fn v2_headers(task: Option<&str>, id: Option<&str>) -> amqp_proto::codec::FieldTable {
    let mut headers = amqp_proto::codec::FieldTable::new();
    if let Some(task) = task {
        headers.insert("task", FieldValue::LongString(task.into()));
    }
    if let Some(id) = id {
        headers.insert("id", FieldValue::LongString(id.into()));
    }
    headers
}

#[test]
fn malformed_messages_are_rejected_without_requeue_and_unknown_tasks_answered() {
    let body = br#"[[1, 2], {}, {}]"#;
    let cases: Vec<(Delivery, &str)> = vec![
        (
            raw(
                json_properties().headers(v2_headers(Some("tasks.add"), None)),
                body,
            ),
            "no id",
        ),
        (raw(json_properties(), body), "no task header, a list body"),
        (
            raw(
                json_properties().headers(v2_headers(Some("tasks.add"), Some("a"))),
                b"{not json",
            ),
            "not JSON",
        ),
        (
            raw(
                json_properties().headers(v2_headers(Some("tasks.add"), Some("a"))),
                br#"[[1, 2], {}]"#,
            ),
            "two items",
        ),
        (
            raw(
                json_properties().headers(v2_headers(Some("tasks.add"), Some("a"))),
                br#"[{}, [], {}]"#,
            ),
            "swapped",
        ),
        (
            raw(
                json_properties().headers(v2_headers(Some("tasks.add"), Some("a"))),
                br#""text""#,
            ),
            "a string",
        ),
        (
            raw(
                json_properties()
                    .content_type("application/x-python-serialize")
                    .headers(v2_headers(Some("tasks.add"), Some("a"))),
                body,
            ),
            "pickle",
        ),
        (
            raw(json_properties(), br#"{"id": "a", "args": []}"#),
            "protocol 1 without a task",
        ),
        (
            raw(json_properties(), br#"{"task": "tasks.add", "args": []}"#),
            "protocol 1 without an id",
        ),
        (
            raw(
                json_properties().headers({
                    let mut headers = v2_headers(Some("tasks.add"), Some("a"));
                    headers.insert("eta", FieldValue::LongString("soon".into()));
                    headers
                }),
                body,
            ),
            "a bad eta",
        ),
        (
            raw(
                json_properties().headers({
                    let mut headers = v2_headers(Some("tasks.add"), None);
                    headers.insert("id", FieldValue::LongInt(7));
                    headers
                }),
                body,
            ),
            "an integer id",
        ),
    ];
    let mut worker = interop_worker(WorkerSettings::new(QUEUE));
    let count = cases.len() as u64;
    for (delivery, why) in cases {
        worker.handle_delivery(delivery, SystemTime::now());
        let answers = drive(&mut worker, SystemTime::now());
        let [(_, None, Some(Settlement::Reject { requeue: false }), Some(Refused::Malformed(_)))] =
            answers.as_slice()
        else {
            panic!(
                "{why}: {:?}",
                answers
                    .iter()
                    .map(|answer| (&answer.2, &answer.3))
                    .collect::<Vec<_>>()
            )
        };
    }
    assert_eq!(worker.stats().malformed, count);

    // An unknown task is answered with NotRegistered, then rejected.
    worker.handle_delivery(
        raw(
            json_properties().headers(v2_headers(Some("tasks.nope"), Some("b"))),
            body,
        ),
        SystemTime::now(),
    );
    let answers = drive(&mut worker, SystemTime::now());
    let [(
        _,
        Some(reply),
        Some(Settlement::Reject { requeue: false }),
        Some(Refused::NotRegistered { .. }),
    )] = answers.as_slice()
    else {
        panic!("{answers:?}")
    };
    assert!(String::from_utf8_lossy(&reply.body).contains(r#""exc_type": "NotRegistered""#));

    // Bad arguments are the task's failure (a TypeError), as in Python.
    worker.handle_delivery(
        raw(
            json_properties().headers(v2_headers(Some("tasks.add"), Some("c"))),
            br#"[[1, 2, 3], {}, {}]"#,
        ),
        SystemTime::now(),
    );
    let answers = drive(&mut worker, SystemTime::now());
    let reply = answers[0].1.as_ref().unwrap();
    assert!(
        String::from_utf8_lossy(&reply.body)
            .contains("takes 2 positional arguments but 3 were given"),
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(worker.is_idle());
}

fn task(name: &str, options: TaskOptions, now: SystemTime) -> Delivery {
    let signature = Signature::new(name)
        .args(vec![json!(1), json!(2)])
        .options(options);
    let message = task_message(
        &signature,
        &uuid::Uuid::new_v4().to_string(),
        "results",
        "test",
        now,
    );
    raw(message.properties, &message.body)
}

#[test]
fn eta_tasks_are_held_and_the_prefetch_grows_meanwhile() {
    let now = SystemTime::now();
    let mut worker = interop_worker(WorkerSettings::new(QUEUE).prefetch_count(2));
    let later = TaskOptions::default().countdown(Duration::from_secs(10));
    worker.handle_delivery(task("tasks.add", later.clone(), now), now);
    worker.handle_delivery(
        task("tasks.add", later.countdown(Duration::from_secs(5)), now),
        now,
    );
    // One qos for both (only the latest is kept), nothing run.
    let Some(Action::Qos(BasicQos {
        prefetch_count: 4,
        global: true,
        ..
    })) = worker.poll_action()
    else {
        panic!("the prefetch grows")
    };
    assert!(worker.poll_action().is_none());
    assert_eq!(worker.held(), 2);
    let first = worker.poll_timeout().unwrap();
    assert!(first < now + Duration::from_secs(6), "the sooner one first");
    worker.handle_timeout(first);
    let mut ran = 0;
    let mut prefetch = Vec::new();
    while let Some(action) = worker.poll_action() {
        match action {
            Action::Run(job) => {
                ran += 1;
                worker.complete(job, Outcome::Returned(Ok(json!(3))), first);
            }
            Action::Qos(qos) => prefetch.push(qos.prefetch_count),
            _ => {}
        }
    }
    assert_eq!((ran, prefetch), (1, vec![3]));
    worker.handle_timeout(now + Duration::from_secs(11));
    assert!(drive(&mut worker, now).len() == 1 && worker.is_idle());
}

#[test]
fn tasks_run_as_many_at_once_as_the_concurrency_and_expire_while_they_wait() {
    let now = SystemTime::now();
    let mut worker = interop_worker(WorkerSettings::new(QUEUE).concurrency(2));
    assert_eq!(worker.qos().prefetch_count, 8, "Celery's multiplier of 4");
    for _ in 0..2 {
        worker.handle_delivery(task("tasks.add", TaskOptions::default(), now), now);
    }
    worker.handle_delivery(
        task(
            "tasks.add",
            TaskOptions::default().expires(Duration::from_secs(1)),
            now,
        ),
        now,
    );
    let mut jobs = Vec::new();
    while let Some(action) = worker.poll_action() {
        let Action::Run(job) = action else {
            panic!("runs")
        };
        jobs.push(job);
    }
    assert_eq!((jobs.len(), worker.running()), (2, 2), "two at once");
    // The third waited for a slot past its expiry: revoked, not run.
    let later = now + Duration::from_secs(2);
    worker.complete(jobs.remove(0), Outcome::Returned(Ok(json!(3))), later);
    let answers = drive(&mut worker, later);
    assert_eq!(answers.len(), 2);
    assert!(matches!(answers[1].3, Some(Refused::Expired { .. })));
    let revoked = String::from_utf8_lossy(&answers[1].1.as_ref().unwrap().body).into_owned();
    assert!(revoked.starts_with(r#"{"status": "REVOKED", "result": {"exc_type": "TaskRevokedError", "exc_message": ["expired"]"#));
    worker.complete(jobs.remove(0), Outcome::Returned(Ok(json!(3))), later);
    assert_eq!(drive(&mut worker, later).len(), 1);
    assert_eq!(worker.stats().expired, 1);
}

#[test]
fn acknowledgements_follow_the_policy() {
    let now = SystemTime::now();
    let run = |acks: AckPolicy, outcome: Outcome, options: TaskOptions| {
        let mut worker = interop_worker(WorkerSettings::new(QUEUE).acks(acks));
        worker.handle_delivery(task("tasks.add", options, now), now);
        let Some(Action::Run(job)) = worker.poll_action() else {
            panic!("runs")
        };
        let first = job.ack_first();
        let limit = job.limit().cloned();
        worker.complete(job, outcome, now);
        let Some(Action::Reply { settle, reply, .. }) = worker.poll_action() else {
            panic!("replies")
        };
        (
            first,
            settle,
            limit,
            reply.map(|reply| String::from_utf8_lossy(&reply.body).into_owned()),
        )
    };
    let ack = Some(Settlement::Ack { multiple: false });
    let ok = || Outcome::Returned(Ok(json!(1)));
    let failed = || Outcome::Returned(Err(Failure::value_error("no")));
    let plain = TaskOptions::default;

    // Late (the default): after the result, failures acknowledged too.
    assert_eq!(run(AckPolicy::late(), ok(), plain()).1, ack);
    assert_eq!(run(AckPolicy::late(), failed(), plain()).1, ack);
    let keep_failures = AckPolicy {
        on_failure: false,
        ..AckPolicy::late()
    };
    assert_eq!(
        run(keep_failures, failed(), plain()).1,
        Some(Settlement::Reject { requeue: false })
    );
    // Early (Celery's default): acknowledged before running, nothing after.
    let (first, settle, _, _) = run(AckPolicy::early(), ok(), plain());
    assert!(first && settle.is_none());

    // A hard limit: TimeLimitExceeded with the limit as given; requeued
    // when timeouts are not acknowledged.
    let limited = TaskOptions::default().time_limit(Duration::from_secs(2));
    let (_, settle, limit, body) = run(AckPolicy::late(), Outcome::TimedOut, limited.clone());
    let limit = limit.unwrap();
    assert_eq!((limit.after, limit.soft), (Duration::from_secs(2), false));
    assert_eq!(settle, ack);
    assert!(body.unwrap().contains(r#"{"exc_type": "TimeLimitExceeded", "exc_message": [2], "exc_module": "billiard.exceptions"}, "traceback": null"#));
    let requeue = AckPolicy {
        on_timeout: false,
        ..AckPolicy::late()
    };
    assert_eq!(
        run(requeue, Outcome::TimedOut, limited).1,
        Some(Settlement::Reject { requeue: true })
    );
    // The sooner soft limit wins, and reads as SoftTimeLimitExceeded.
    let both = TaskOptions::default()
        .time_limit(Duration::from_secs(5))
        .soft_time_limit(Duration::from_millis(1500));
    let (_, _, limit, body) = run(AckPolicy::late(), Outcome::TimedOut, both);
    assert_eq!(
        limit.map(|limit| (limit.after, limit.soft)),
        Some((Duration::from_millis(1500), true))
    );
    assert!(body
        .unwrap()
        .contains(r#""exc_type": "SoftTimeLimitExceeded", "exc_message": []"#));
    // Ignored results: nothing published, still acknowledged.
    let (_, settle, _, body) = run(
        AckPolicy::late(),
        ok(),
        TaskOptions::default().ignore_result(true),
    );
    assert_eq!((settle, body), (ack, None));
}
