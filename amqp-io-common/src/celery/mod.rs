//! Celery tasks, both ways, as IO-free bookkeeping both adapters drive:
//! sending tasks to Celery workers and reading their results from the
//! `rpc://` result backend ([`Client`]), and serving tasks as a Celery
//! worker does ([`Worker`]).
//!
//! The wire format is Celery 5.7's (checked against frames captured from
//! a real Celery 5.7 client and worker, kept in
//! `amqp-io-common/tests/fixtures/celery/`):
//!
//! - **Task messages, protocol 2**, published to the default exchange with
//!   the queue's name as routing key: properties `application/json`,
//!   `utf-8`, delivery mode 2, priority 0 unless set, `correlation_id` the
//!   task id, `reply_to` the client's result queue, `expiration` (in
//!   milliseconds) when the task expires; the headers table Celery writes,
//!   in its order and with its AMQP types (long strings, void for `None`,
//!   signed 32-bit integers, `timelimit` as a two-item array `[hard,
//!   soft]`, booleans, an empty `stamps` table), `argsrepr`/`kwargsrepr`
//!   as Celery's `saferepr` writes them; the body `[args, kwargs,
//!   {"callbacks", "errbacks", "chain", "chord"}]` as Python's
//!   `json.dumps` writes it. Positional arguments stay positional.
//! - **Protocol 1** (the task in a JSON object body) is read by the
//!   worker too.
//! - **Queues** are declared as Celery declares them, so that a Python
//!   peer declaring them too gets no `406`: a durable queue without
//!   arguments, a durable direct exchange of the same name, and their
//!   binding with the queue's name as key.
//! - **The `rpc://` result backend**: each client consumes (no-ack) a
//!   result queue of its own (durable, auto-deleted, `x-expires` one day,
//!   as Celery declares it); a worker publishes the result to the task's
//!   `reply_to` through the default exchange, with `correlation_id` the
//!   task id and the body `{"status", "result", "traceback", "children",
//!   "date_done", "task_id"}`; failures as `{"exc_type", "exc_message",
//!   "exc_module"}`. No result is published for a task without `reply_to`
//!   or sent with `ignore_result`.
//!
//! [`Client`] plans what a client publishes ([`Client::send`]) and matches
//! results to the tasks waiting for them ([`Client::on_result`]).
//! [`Worker`] decides everything a worker does with a delivery: run it
//! now, hold it until its `eta`, answer it without running it (expired:
//! `REVOKED`; an unknown task: Celery's `NotRegistered` failure), reject
//! it without requeue (a malformed message), what result to publish and
//! when to acknowledge ([`AckPolicy`]). An adapter moves the messages,
//! runs handlers and keeps time.
//!
//! Requires the `kombu` feature.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use amqp_io_common::celery::{Client, ClientSettings, Signature, TaskOptions};
//! use serde_json::json;
//!
//! let mut client = Client::<()>::new(ClientSettings::default());
//! let add = Signature::new("tasks.add")
//!     .args(vec![json!(2), json!(3)])
//!     .options(TaskOptions::default().countdown(Duration::from_secs(10)));
//! let sent = client.send(&add, Some(()), UNIX_EPOCH + Duration::from_secs(1_800_000_000));
//! assert_eq!(sent.message.publish.routing_key, "celery");
//! assert_eq!(sent.message.body, br#"[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#);
//! let headers = sent.message.properties.headers.as_ref().unwrap();
//! assert!(headers.get("eta").is_some());
//! ```

mod client;
#[cfg(test)]
mod interop_tests;
mod message;
mod python;
mod result;
mod time;
mod worker;

use std::fmt;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

pub use crate::pidbox::Outgoing;
pub use client::{Client, ClientSettings, Sent};
pub use message::{parse_request, task_message, task_topology, Malformed, Request, Seconds};
pub use python::{dumps, float_repr, saferepr};
pub use result::{result_message, ResultMessage};
pub use time::{isoformat, parse_isoformat};
pub use worker::{
    log_refused, AckPolicy, Action, Job, Outcome, Refused, TaskSettings, TimeLimit, Worker,
    WorkerSettings, WorkerStats,
};

/// The queue (and exchange, and routing key) Celery sends tasks to unless
/// told otherwise.
pub const DEFAULT_QUEUE: &str = "celery";

/// A task's state, as Celery names it (`celery.states`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Not known to have started (also what a task with no result yet is).
    Pending,
    /// Received by a worker.
    Received,
    /// Started (workers report it with `task_track_started`).
    Started,
    /// Done; the result is the task's return value.
    Success,
    /// Raised; the result is the exception.
    Failure,
    /// Revoked, or expired before it ran.
    Revoked,
    /// Rejected by the worker.
    Rejected,
    /// Waiting to be retried.
    Retry,
    /// Ignored.
    Ignored,
    /// A state of the application's own.
    Custom(String),
}

impl State {
    /// Celery's name for it (`SUCCESS`, `FAILURE`, ...).
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Pending => "PENDING",
            Self::Received => "RECEIVED",
            Self::Started => "STARTED",
            Self::Success => "SUCCESS",
            Self::Failure => "FAILURE",
            Self::Revoked => "REVOKED",
            Self::Rejected => "REJECTED",
            Self::Retry => "RETRY",
            Self::Ignored => "IGNORED",
            Self::Custom(name) => name,
        }
    }

    /// The state named `name`.
    #[must_use]
    pub fn from_name(name: &str) -> Self {
        match name {
            "PENDING" => Self::Pending,
            "RECEIVED" => Self::Received,
            "STARTED" => Self::Started,
            "SUCCESS" => Self::Success,
            "FAILURE" => Self::Failure,
            "REVOKED" => Self::Revoked,
            "REJECTED" => Self::Rejected,
            "RETRY" => Self::Retry,
            "IGNORED" => Self::Ignored,
            other => Self::Custom(other.to_owned()),
        }
    }

    /// A final state (Celery's `READY_STATES`: success, failure, revoked):
    /// no other result follows it.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Success | Self::Failure | Self::Revoked)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task's failure as Celery reports it: the Python exception's type,
/// arguments and module (`{"exc_type", "exc_message", "exc_module"}`), the
/// traceback, and the state (`FAILURE`, or `REVOKED` for a revoked or
/// expired task).
///
/// A handler returns one to fail its task; a Python client then raises
/// the exception it names (`exc_module` must name an importable module
/// for Python to rebuild that type; `builtins` for `ValueError` and the
/// like).
///
/// ```
/// use amqp_io_common::celery::Failure;
///
/// let failure = Failure::new("ValueError", "no such user");
/// assert_eq!(failure.exc_module, "builtins");
/// assert_eq!(failure.to_string(), "ValueError: no such user");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Failure {
    /// The exception's type (`ValueError`, `TimeLimitExceeded`, ...).
    pub exc_type: String,
    /// Its arguments (Python's `exc.args`): usually one message.
    pub exc_message: Vec<Value>,
    /// The module defining the type (`builtins`, `celery.exceptions`,
    /// `billiard.exceptions`, ...).
    pub exc_module: String,
    /// The traceback as text, when there is one.
    pub traceback: Option<String>,
    /// [`State::Failure`], or [`State::Revoked`].
    pub state: State,
}

impl Failure {
    /// An exception of the builtin type `exc_type` with one message.
    #[must_use]
    pub fn new(exc_type: &str, message: impl Into<String>) -> Self {
        Self::with_args(exc_type, "builtins", vec![Value::String(message.into())])
    }

    /// An exception of `exc_module.exc_type` with these arguments.
    #[must_use]
    pub fn with_args(exc_type: &str, exc_module: &str, args: Vec<Value>) -> Self {
        Self {
            exc_type: exc_type.to_owned(),
            exc_message: args,
            exc_module: exc_module.to_owned(),
            traceback: None,
            state: State::Failure,
        }
    }

    /// Python's `TypeError`: what a Python task raises when called with
    /// arguments it does not take.
    #[must_use]
    pub fn type_error(message: impl Into<String>) -> Self {
        Self::new("TypeError", message)
    }

    /// Python's `ValueError`.
    #[must_use]
    pub fn value_error(message: impl Into<String>) -> Self {
        Self::new("ValueError", message)
    }

    /// Celery's `NotRegistered(name)`: what a worker answers for a task
    /// it does not know.
    #[must_use]
    pub fn not_registered(name: &str) -> Self {
        Self::with_args(
            "NotRegistered",
            "celery.exceptions",
            vec![Value::String(name.to_owned())],
        )
    }

    /// Celery's `TaskRevokedError(reason)` in state `REVOKED` (reason
    /// `expired` for a task that expired before it ran).
    #[must_use]
    pub fn revoked(reason: &str) -> Self {
        Self {
            state: State::Revoked,
            ..Self::with_args(
                "TaskRevokedError",
                "celery.exceptions",
                vec![Value::String(reason.to_owned())],
            )
        }
    }

    /// A handler that panicked, reported as Python's `RuntimeError` so
    /// that a Python client raises something it knows.
    #[must_use]
    pub fn panicked(payload: &(dyn std::any::Any + Send)) -> Self {
        let why = payload
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        Self::new("RuntimeError", format!("the task panicked: {why}"))
    }

    /// Sets the traceback.
    #[must_use]
    pub fn traceback(mut self, traceback: impl Into<String>) -> Self {
        self.traceback = Some(traceback.into());
        self
    }

    /// What Python's `str(exc)` prints: the one argument as text, nothing
    /// for none, the arguments' tuple for several.
    #[must_use]
    pub fn message(&self) -> String {
        match self.exc_message.as_slice() {
            [] => String::new(),
            [Value::String(text)] => text.clone(),
            [one] => python::saferepr(one, usize::MAX, 0),
            many => {
                let items: Vec<String> = many
                    .iter()
                    .map(|item| python::saferepr(item, usize::MAX, 0))
                    .collect();
                format!("({})", items.join(", "))
            }
        }
    }

    /// The failure as JSON, Celery's `{"exc_type", "exc_message",
    /// "exc_module"}` in that order.
    #[must_use]
    pub fn to_json(&self) -> String {
        format!(
            "{{\"exc_type\": {}, \"exc_message\": {}, \"exc_module\": {}}}",
            python::dumps_str(&self.exc_type),
            python::dumps(&self.exc_message),
            python::dumps_str(&self.exc_module),
        )
    }

    /// The type as a traceback's last line names it: bare for builtins,
    /// qualified by its module otherwise.
    fn qualified_type(&self) -> String {
        if self.exc_module == "builtins" || self.exc_module.is_empty() {
            self.exc_type.clone()
        } else {
            format!("{}.{}", self.exc_module, self.exc_type)
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = self.message();
        if message.is_empty() {
            f.write_str(&self.exc_type)
        } else {
            write!(f, "{}: {message}", self.exc_type)
        }
    }
}

impl std::error::Error for Failure {}

/// How to send a task (Celery's `apply_async` options). Built with its
/// methods from the default: the `celery` queue, at once, no expiry, no
/// time limits, priority 0, a fresh task id, a result wanted.
///
/// ```
/// use std::time::Duration;
/// use amqp_io_common::celery::TaskOptions;
///
/// let options = TaskOptions::default()
///     .queue("reports")
///     .countdown(Duration::from_secs(30))
///     .expires(Duration::from_secs(600))
///     .time_limit(Duration::from_secs(60))
///     .priority(5);
/// assert_eq!(options.queue.as_deref(), Some("reports"));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct TaskOptions {
    /// The queue (and routing key); `None` for `celery`.
    pub queue: Option<String>,
    /// Run no sooner than this long after sending (the `eta` header).
    pub countdown: Option<Duration>,
    /// Run no sooner than this (when no countdown is set).
    pub eta: Option<SystemTime>,
    /// Expire this long after sending: the worker revokes it instead of
    /// running it later, and the broker drops it (`expiration`) if no
    /// worker took it by then.
    pub expires: Option<Duration>,
    /// Expire at this time (when no `expires` is set).
    pub expires_at: Option<SystemTime>,
    /// The hard time limit: the worker abandons the task and reports
    /// `TimeLimitExceeded` after it.
    pub time_limit: Option<Duration>,
    /// The soft time limit (`SoftTimeLimitExceeded`).
    pub soft_time_limit: Option<Duration>,
    /// The message priority (0 to 255; RabbitMQ queues declared with
    /// `x-max-priority` honour it).
    pub priority: Option<u8>,
    /// `Some(true)`: no result is published, and none is waited for.
    pub ignore_result: Option<bool>,
    /// The task id; `None` for a fresh UUID.
    pub task_id: Option<String>,
    /// How many times the task was retried already.
    pub retries: u32,
    /// The name logs show instead of the task's (`shadow`).
    pub shadow: Option<String>,
    /// The id of the first task of the workflow (default: this task's).
    pub root_id: Option<String>,
    /// The id of the task that sent this one.
    pub parent_id: Option<String>,
}

impl TaskOptions {
    /// Sends to `queue`.
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Runs no sooner than `countdown` after sending.
    #[must_use]
    pub fn countdown(mut self, countdown: Duration) -> Self {
        self.countdown = Some(countdown);
        self
    }

    /// Runs no sooner than `eta`.
    #[must_use]
    pub fn eta(mut self, eta: SystemTime) -> Self {
        self.eta = Some(eta);
        self
    }

    /// Expires `expires` after sending.
    #[must_use]
    pub fn expires(mut self, expires: Duration) -> Self {
        self.expires = Some(expires);
        self
    }

    /// Expires at `at`.
    #[must_use]
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// The hard time limit.
    #[must_use]
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// The soft time limit.
    #[must_use]
    pub fn soft_time_limit(mut self, limit: Duration) -> Self {
        self.soft_time_limit = Some(limit);
        self
    }

    /// The message priority.
    #[must_use]
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Whether to ignore the result (no result is published).
    #[must_use]
    pub fn ignore_result(mut self, ignore: bool) -> Self {
        self.ignore_result = Some(ignore);
        self
    }

    /// The task id.
    #[must_use]
    pub fn task_id(mut self, id: impl Into<String>) -> Self {
        self.task_id = Some(id.into());
        self
    }
}

/// A task to send: its name, positional and keyword arguments, and
/// options (Celery's signature).
///
/// ```
/// use amqp_io_common::celery::Signature;
/// use serde_json::json;
///
/// let echo = Signature::new("tasks.echo")
///     .args(vec![json!(1), json!("two")])
///     .kwargs(json!({"three": 3}).as_object().cloned().unwrap_or_default());
/// assert_eq!(echo.args.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Signature {
    /// The task's name (`tasks.add`).
    pub name: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// How to send it.
    pub options: TaskOptions,
}

impl Signature {
    /// The task `name` without arguments, with the default options.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            args: Vec::new(),
            kwargs: Map::new(),
            options: TaskOptions::default(),
        }
    }

    /// Sets the positional arguments.
    #[must_use]
    pub fn args(mut self, args: Vec<Value>) -> Self {
        self.args = args;
        self
    }

    /// Sets the keyword arguments.
    #[must_use]
    pub fn kwargs(mut self, kwargs: Map<String, Value>) -> Self {
        self.kwargs = kwargs;
        self
    }

    /// Sets the options.
    #[must_use]
    pub fn options(mut self, options: TaskOptions) -> Self {
        self.options = options;
        self
    }

    /// A signature from any serializable arguments: `args` must serialize
    /// to a JSON array (a tuple, a `Vec`, `json!([...])`) or to nothing
    /// (`()`), `kwargs` to an object (a struct, a map, `json!({...})`) or
    /// to nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Arguments`] when they serialize to something else, or do
    /// not serialize.
    pub fn from_serialize(
        name: &str,
        args: &impl serde::Serialize,
        kwargs: &impl serde::Serialize,
        options: TaskOptions,
    ) -> Result<Self, Error> {
        let args = match serde_json::to_value(args) {
            Ok(Value::Array(args)) => args,
            Ok(Value::Null) => Vec::new(),
            Ok(other) => {
                return Err(Error::Arguments(format!(
                    "positional arguments must be a JSON array, not {other}"
                )))
            }
            Err(error) => return Err(Error::Arguments(error.to_string())),
        };
        let kwargs = match serde_json::to_value(kwargs) {
            Ok(Value::Object(kwargs)) => kwargs,
            Ok(Value::Null) => Map::new(),
            Ok(other) => {
                return Err(Error::Arguments(format!(
                    "keyword arguments must be a JSON object, not {other}"
                )))
            }
            Err(error) => return Err(Error::Arguments(error.to_string())),
        };
        Ok(Self {
            name: name.to_owned(),
            args,
            kwargs,
            options,
        })
    }
}

/// What sending a task or waiting for its result can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The task failed (raised, timed out, was revoked or expired, or the
    /// worker does not know it): the failure as the worker reported it.
    /// Nothing to retry unless the task is worth sending again.
    #[error("task {task_id} failed: {failure}")]
    Failed {
        /// The task.
        task_id: String,
        /// How it failed.
        failure: Box<Failure>,
    },
    /// No result came within the timeout. The task may still run; its
    /// result can be waited for again.
    #[error("no result for task {task_id} within {timeout:?}")]
    Timeout {
        /// The task.
        task_id: String,
        /// How long was waited.
        timeout: Duration,
    },
    /// The task was sent with `ignore_result`: no result will come.
    #[error("task {0} was sent with ignore_result: no result will come")]
    ResultIgnored(String),
    /// The result came but is not of the type asked for.
    #[error("the result of task {task_id} is not of the type asked for: {error}")]
    ResultType {
        /// The task.
        task_id: String,
        /// Why it does not decode.
        error: serde_json::Error,
    },
    /// The arguments do not make a task (see
    /// [`Signature::from_serialize`]); nothing was sent.
    #[error("task arguments: {0}")]
    Arguments(String),
    /// The connection, the channel or the result consumer failed: the
    /// adapter's error.
    #[error(transparent)]
    Amqp(#[from] crate::Error),
}

impl Error {
    /// The failure, when the task failed.
    #[must_use]
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Self::Failed { failure, .. } => Some(failure),
            _ => None,
        }
    }
}

/// The number a duration is written as in Celery's messages: an integer
/// count of seconds when it is whole (as Python sends `time_limit=30`), a
/// float otherwise.
fn seconds_json(duration: Duration) -> Value {
    if duration.subsec_nanos() == 0 {
        if let Ok(seconds) = i32::try_from(duration.as_secs()) {
            return Value::from(seconds);
        }
    }
    serde_json::Number::from_f64(duration.as_secs_f64()).map_or(Value::Null, Value::Number)
}

/// This process's node name as Celery's `anon_nodename` writes it in the
/// `origin` header: `gen<pid>@<hostname>`.
#[must_use]
pub fn anon_nodename() -> String {
    format!("gen{}@{}", std::process::id(), hostname())
}

/// The host's name: `HOSTNAME` if set, else the kernel's, else
/// `localhost`.
#[must_use]
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty())
        })
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn failures_print_as_python_does() {
        assert_eq!(
            Failure::new("ValueError", "boom").to_string(),
            "ValueError: boom"
        );
        let limit = Failure::with_args("TimeLimitExceeded", "billiard.exceptions", vec![json!(1)]);
        assert_eq!(limit.to_string(), "TimeLimitExceeded: 1");
        assert_eq!(
            limit.to_json(),
            r#"{"exc_type": "TimeLimitExceeded", "exc_message": [1], "exc_module": "billiard.exceptions"}"#
        );
        let soft = Failure::with_args("SoftTimeLimitExceeded", "billiard.exceptions", vec![]);
        assert_eq!(soft.to_string(), "SoftTimeLimitExceeded");
        let two = Failure::with_args("KeyError", "builtins", vec![json!("a"), json!(2)]);
        assert_eq!(two.message(), "('a', 2)");
        assert_eq!(Failure::revoked("expired").state, State::Revoked);
        let panicked = std::panic::catch_unwind(|| panic!("oops")).unwrap_err();
        assert_eq!(
            Failure::panicked(&*panicked).message(),
            "the task panicked: oops"
        );
    }

    #[test]
    fn states_round_trip_by_name() {
        for state in [
            State::Pending,
            State::Success,
            State::Failure,
            State::Revoked,
            State::Retry,
        ] {
            assert_eq!(State::from_name(state.as_str()), state);
        }
        assert_eq!(
            State::from_name("PROGRESS"),
            State::Custom("PROGRESS".into())
        );
        assert!(State::Revoked.is_ready() && !State::Started.is_ready());
    }

    #[test]
    fn signatures_take_serializable_arguments() {
        let signature =
            Signature::from_serialize("tasks.add", &(2, 3), &(), TaskOptions::default()).unwrap();
        assert_eq!(signature.args, vec![json!(2), json!(3)]);
        assert!(signature.kwargs.is_empty());
        let keyword = Signature::from_serialize("t", &(), &json!({"a": 1}), TaskOptions::default());
        assert_eq!(keyword.unwrap().kwargs.get("a"), Some(&json!(1)));
        assert!(matches!(
            Signature::from_serialize("t", &5, &(), TaskOptions::default()),
            Err(Error::Arguments(_))
        ));
        assert!(matches!(
            Signature::from_serialize("t", &(), &[1], TaskOptions::default()),
            Err(Error::Arguments(_))
        ));
    }

    #[test]
    fn durations_are_written_as_python_numbers() {
        assert_eq!(seconds_json(Duration::from_secs(30)), json!(30));
        assert_eq!(seconds_json(Duration::from_millis(1500)), json!(1.5));
    }
}
