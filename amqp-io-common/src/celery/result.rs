//! Result messages of the `rpc://` backend: writing them as Celery's
//! worker does, reading them as its client does.

use std::time::SystemTime;

use amqp_proto::codec::{BasicProperties, FieldTable};
use amqp_proto::spec::BasicPublish;
use amqp_proto::Delivery;
use serde_json::Value;

use super::python::{dumps, dumps_str};
use super::time::isoformat;
use super::{Failure, Outgoing, Request, State};

/// The result message a Celery worker publishes for `request` with this
/// outcome (a return value, or a failure with its state) at `now`: to the
/// request's `reply_to` through the default exchange, `correlation_id`
/// the request's, JSON with delivery mode 1 and an empty headers table,
/// the body's keys in Celery's order. `None` when no result is wanted
/// (no `reply_to`, or `ignore_result`).
///
/// ```
/// # use amqp_io_common::celery::{result_message, Request};
/// # fn demo(request: &Request) {
/// let now = std::time::SystemTime::now();
/// if let Some(reply) = result_message(request, &Ok(serde_json::json!(5)), now) {
///     // {"status": "SUCCESS", "result": 5, "traceback": null, "children": [], ...}
///     println!("{}", String::from_utf8_lossy(&reply.body));
/// }
/// # }
/// ```
#[must_use]
pub fn result_message(
    request: &Request,
    outcome: &Result<Value, Failure>,
    now: SystemTime,
) -> Option<Outgoing> {
    if request.ignore_result {
        return None;
    }
    let reply_to = request.reply_to.as_deref()?;
    let (state, result, traceback) = match outcome {
        Ok(value) => (State::Success, dumps(value), None),
        Err(failure) => (
            failure.state.clone(),
            failure.to_json(),
            failure.traceback.as_deref(),
        ),
    };
    let mut body = format!(
        "{{\"status\": {}, \"result\": {result}, \"traceback\": {}, \"children\": [], \"date_done\": {}",
        dumps_str(state.as_str()),
        traceback.map_or_else(|| "null".to_owned(), dumps_str),
        dumps_str(&isoformat(now)),
    );
    // Celery adds these only when the request has them.
    if let Some(group) = &request.group {
        body.push_str(&format!(", \"group_id\": {}", dumps_str(group)));
    }
    if let Some(parent) = &request.parent_id {
        body.push_str(&format!(", \"parent_id\": {}", dumps_str(parent)));
    }
    body.push_str(&format!(", \"task_id\": {}}}", dumps_str(&request.id)));
    Some(Outgoing {
        publish: BasicPublish {
            routing_key: reply_to.into(),
            ..Default::default()
        },
        properties: BasicProperties::default()
            .content_type("application/json")
            .content_encoding("utf-8")
            .headers(FieldTable::new())
            .delivery_mode(1u8)
            .priority(0u8)
            .correlation_id(request.correlation_id.as_str()),
        body: body.into_bytes(),
    })
}

/// A result message, read.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ResultMessage {
    /// The task it is the result of (its `correlation_id`, else the
    /// body's `task_id`).
    pub task_id: String,
    /// The state it reports.
    pub state: State,
    /// The return value, the failure's JSON, or a custom state's meta.
    pub result: Value,
    /// The traceback of a failure.
    pub traceback: Option<String>,
    /// When the task finished (ISO 8601), for final states.
    pub date_done: Option<String>,
    /// Results of tasks it started.
    pub children: Value,
}

impl ResultMessage {
    /// Reads a delivery on the result queue; `None` for anything that is
    /// no JSON result (it is dropped, as Celery's client would fail to
    /// decode it).
    #[must_use]
    pub fn parse(delivery: &Delivery) -> Option<Self> {
        let body: Value = serde_json::from_slice(delivery.body()).ok()?;
        let Value::Object(mut body) = body else {
            return None;
        };
        let state = State::from_name(body.get("status")?.as_str()?);
        let task_id = delivery
            .properties()
            .correlation_id
            .as_ref()
            .map(|id| id.to_string_lossy().into_owned())
            .or_else(|| body.get("task_id")?.as_str().map(str::to_owned))?;
        Some(Self {
            task_id,
            state,
            result: body.remove("result").unwrap_or(Value::Null),
            traceback: body
                .get("traceback")
                .and_then(Value::as_str)
                .map(str::to_owned),
            date_done: body
                .get("date_done")
                .and_then(Value::as_str)
                .map(str::to_owned),
            children: body.remove("children").unwrap_or(Value::Null),
        })
    }

    /// The outcome: the return value for `SUCCESS`, the failure for
    /// `FAILURE` and `REVOKED` (as Celery's client rebuilds the exception;
    /// a result that is no exception dict becomes a plain `Exception`).
    ///
    /// # Errors
    ///
    /// The task's [`Failure`].
    pub fn outcome(&self) -> Result<Value, Failure> {
        if !matches!(self.state, State::Failure | State::Revoked) {
            return Ok(self.result.clone());
        }
        let exception = self.result.as_object();
        let field = |name| {
            exception
                .and_then(|exception| exception.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let exc_message = match exception.and_then(|exception| exception.get("exc_message")) {
            Some(Value::Array(args)) => args.clone(),
            Some(Value::Null) | None if exception.is_some() => Vec::new(),
            Some(other) => vec![other.clone()],
            None => vec![self.result.clone()],
        };
        Err(Failure {
            exc_type: field("exc_type").unwrap_or_else(|| "Exception".to_owned()),
            exc_message,
            exc_module: field("exc_module").unwrap_or_else(|| "builtins".to_owned()),
            traceback: self.traceback.clone(),
            state: self.state.clone(),
        })
    }
}
