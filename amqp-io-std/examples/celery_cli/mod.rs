//! What the `celery_worker` and `celery_client` examples of both adapters
//! share: their command lines, the four tasks' bodies, the output line.
//! (`amqp-io-tokio`'s examples include this file by path.)

#![allow(dead_code)] // each example uses its half

use std::time::Duration;

use amqp_io_common::celery::{Failure, Request, ResultMessage, Signature, TaskOptions};
use serde_json::{json, Number, Value};

/// The broker: `AMQP_URL`, or the local RabbitMQ.
pub(crate) fn url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// `celery_worker --queue Q [--concurrency N]` (the blocking worker runs
/// one task at a time whatever N says).
pub(crate) struct WorkerArgs {
    pub(crate) queue: String,
    pub(crate) concurrency: usize,
}

pub(crate) fn worker_args() -> Result<WorkerArgs, String> {
    let mut parsed = WorkerArgs {
        queue: "celery".into(),
        concurrency: 1,
    };
    let mut arguments = std::env::args().skip(1);
    while let Some(argument) = arguments.next() {
        let mut value = || arguments.next().ok_or(format!("{argument} needs a value"));
        match argument.as_str() {
            "--queue" => parsed.queue = value()?,
            "--concurrency" => {
                parsed.concurrency = value()?.parse().map_err(|error| format!("{error}"))?;
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: celery_worker --queue Q [--concurrency N]"
                ))
            }
        }
    }
    Ok(parsed)
}

/// The line a worker prints once it consumes.
pub(crate) fn ready_line(queue: &str) -> String {
    format!("{{\"event\": \"ready\", \"queue\": {}}}", json!(queue))
}

/// `tasks.add(x, y)`: integers add as integers, other numbers as floats,
/// as in Python.
pub(crate) fn add(task: &Request) -> Result<Value, Failure> {
    let (x, y): (Number, Number) = task.bind(&["x", "y"])?;
    match (x.as_i64(), y.as_i64()) {
        (Some(x), Some(y)) => x
            .checked_add(y)
            .map(Value::from)
            .ok_or_else(|| Failure::new("OverflowError", "the sum does not fit 64 bits")),
        _ => Ok(json!(x.as_f64().unwrap_or(0.0) + y.as_f64().unwrap_or(0.0))),
    }
}

/// `tasks.echo(*args, **kwargs)`.
pub(crate) fn echo(task: &Request) -> Result<Value, Failure> {
    Ok(json!({"args": task.args, "kwargs": task.kwargs}))
}

/// `tasks.fail(msg)`: `ValueError(msg)`.
pub(crate) fn fail(task: &Request) -> Result<Value, Failure> {
    let (message,): (String,) = task.bind(&["msg"])?;
    Err(Failure::value_error(message))
}

/// `tasks.sleep(seconds)`: how long to sleep, and what to return after.
pub(crate) fn sleep(task: &Request) -> Result<(Duration, Value), Failure> {
    let (seconds,): (Number,) = task.bind(&["seconds"])?;
    let duration = Duration::try_from_secs_f64(seconds.as_f64().unwrap_or(-1.0))
        .map_err(|error| Failure::value_error(error.to_string()))?;
    Ok((duration, Value::Number(seconds)))
}

/// `celery_client --queue Q (add X Y | echo --args JSON --kwargs JSON |
/// fail MSG | sleep S) [--countdown S] [--expires S] [--time-limit S]
/// [--soft-time-limit S] [--priority N] [--timeout S]`: the task, and how
/// long to wait for its result.
pub(crate) fn client_args() -> Result<(Signature, Duration), String> {
    fn seconds(text: Option<String>) -> Result<Duration, String> {
        let text = text.ok_or("a number of seconds is missing")?;
        let seconds: f64 = text.parse().map_err(|error| format!("{text:?}: {error}"))?;
        Duration::try_from_secs_f64(seconds).map_err(|error| error.to_string())
    }
    let mut options = TaskOptions::default();
    let mut timeout = Duration::from_secs(30);
    let mut words = Vec::new();
    let mut args = json!([]);
    let mut kwargs = json!({});
    let mut arguments = std::env::args().skip(1);
    while let Some(argument) = arguments.next() {
        let json = |text: Option<String>| -> Result<Value, String> {
            serde_json::from_str(&text.ok_or("JSON is missing")?).map_err(|error| error.to_string())
        };
        match argument.as_str() {
            "--queue" => options = options.queue(arguments.next().ok_or("--queue needs a name")?),
            "--countdown" => options = options.countdown(seconds(arguments.next())?),
            "--expires" => options = options.expires(seconds(arguments.next())?),
            "--time-limit" => options = options.time_limit(seconds(arguments.next())?),
            "--soft-time-limit" => options = options.soft_time_limit(seconds(arguments.next())?),
            "--priority" => {
                let priority = arguments.next().ok_or("--priority needs a number")?;
                options = options.priority(priority.parse().map_err(|error| format!("{error}"))?);
            }
            "--timeout" => timeout = seconds(arguments.next())?,
            "--args" => args = json(arguments.next())?,
            "--kwargs" => kwargs = json(arguments.next())?,
            _ => words.push(argument),
        }
    }
    // Numbers as numbers, anything else as text.
    let value = |word: &String| {
        serde_json::from_str::<Number>(word).map_or_else(|_| json!(word), Value::Number)
    };
    let (name, args, kwargs) = match words.split_first() {
        Some((task, rest)) if task == "add" || task == "sleep" => {
            (task, Value::Array(rest.iter().map(value).collect()), json!({}))
        }
        Some((task, rest)) if task == "fail" => (task, json!([rest.join(" ")]), json!({})),
        Some((task, [])) if task == "echo" => (task, args, kwargs),
        _ => {
            return Err("usage: celery_client --queue Q (add X Y | echo --args JSON --kwargs JSON | fail MSG | sleep S) [options]".into())
        }
    };
    let signature = Signature::from_serialize(&format!("tasks.{name}"), &args, &kwargs, options)
        .map_err(|error| error.to_string())?;
    Ok((signature, timeout))
}

/// The line a client prints: `{"task_id", "state", "result"}`; a result
/// that did not come is `null`, its state the last one reported.
pub(crate) fn outcome_line(task_id: &str, state: &str, result: Option<&ResultMessage>) -> String {
    let result = result.map_or(Value::Null, |result| result.result.clone());
    format!(
        "{{\"task_id\": {}, \"state\": {}, \"result\": {}}}",
        json!(task_id),
        json!(state),
        result
    )
}
