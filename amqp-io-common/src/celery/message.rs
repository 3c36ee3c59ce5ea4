//! Task messages: writing protocol 2 as Celery 5.7 does, reading
//! protocols 2 and 1 as its worker does.

use std::time::{Duration, SystemTime};

use amqp_proto::codec::{BasicProperties, FieldArray, FieldTable, FieldValue};
use amqp_proto::spec::{BasicPublish, ExchangeDeclare, QueueBind, QueueDeclare};
use amqp_proto::Delivery;
use serde_json::{Map, Number, Value};

use super::python::{self, dumps};
use super::time::{isoformat, parse_isoformat};
use super::{seconds_json, Outgoing, Signature, DEFAULT_QUEUE};
use crate::pidbox::Topology;

/// The third item of a protocol 2 body: no workflow around the task.
const NO_WORKFLOW: &str = r#"{"callbacks": null, "errbacks": null, "chain": null, "chord": null}"#;

/// What Celery declares before it sends to (or consumes) `queue`: a
/// durable direct exchange named after it, the durable queue without
/// arguments, and their binding with the queue's name as key.
#[must_use]
pub fn task_topology(queue: &str) -> Topology {
    let exchange = ExchangeDeclare {
        exchange: queue.into(),
        exchange_type: "direct".into(),
        durable: true,
        ..Default::default()
    };
    let declare = QueueDeclare {
        queue: queue.into(),
        durable: true,
        ..Default::default()
    };
    let bind = QueueBind {
        queue: queue.into(),
        exchange: queue.into(),
        routing_key: queue.into(),
        ..Default::default()
    };
    (exchange, declare, bind)
}

fn text(value: &str) -> FieldValue {
    FieldValue::LongString(value.into())
}

fn text_or_void(value: Option<&str>) -> FieldValue {
    value.map_or(FieldValue::Void, text)
}

/// A JSON number as py-amqp writes a Python number: `I` for an int that
/// fits 32 bits, `l` for a bigger one, `d` for a float.
fn number_field(value: &Value) -> FieldValue {
    match value {
        Value::Number(number) => {
            if let Some(int) = number.as_i64() {
                i32::try_from(int).map_or(FieldValue::LongLongInt(int), FieldValue::LongInt)
            } else {
                number.as_f64().map_or(FieldValue::Void, FieldValue::Double)
            }
        }
        _ => FieldValue::Void,
    }
}

/// The protocol 2 message Celery's `send_task` publishes for `signature`
/// as task `id`, its result wanted on `reply_to`, sent from `origin` (see
/// [`anon_nodename`](super::anon_nodename)) at `now`.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use amqp_io_common::celery::{task_message, Signature};
/// use amqp_proto::codec::FieldValue;
/// use serde_json::json;
///
/// let add = Signature::new("tasks.add").args(vec![json!(2), json!(3)]);
/// let message = task_message(&add, "id-1", "results", "gen1@host", UNIX_EPOCH + Duration::from_secs(1));
/// let headers = message.properties.headers.as_ref().unwrap();
/// assert_eq!(headers.get("argsrepr"), Some(&FieldValue::LongString("[2, 3]".into())));
/// assert_eq!(headers.get("retries"), Some(&FieldValue::LongInt(0)));
/// ```
#[must_use]
pub fn task_message(
    signature: &Signature,
    id: &str,
    reply_to: &str,
    origin: &str,
    now: SystemTime,
) -> Outgoing {
    let options = &signature.options;
    // A zero countdown is none, as in Celery (`if countdown:`).
    let eta = match options.countdown {
        Some(countdown) if !countdown.is_zero() => now.checked_add(countdown),
        _ => options.eta,
    };
    let expires_at = options
        .expires
        .and_then(|expires| now.checked_add(expires))
        .or(options.expires_at);
    // The message's TTL: what is left until it expires, never negative
    // (Celery sends 0 for a time in the past, which RabbitMQ reads as
    // "deliver now or drop").
    let ttl = options.expires.or_else(|| {
        options
            .expires_at
            .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
    });
    let args = Value::Array(signature.args.clone());
    let kwargs = Value::Object(signature.kwargs.clone());
    let limit = |limit: Option<Duration>| {
        limit.map_or(FieldValue::Void, |limit| number_field(&seconds_json(limit)))
    };
    let mut timelimit = FieldArray::default();
    timelimit.push(limit(options.time_limit));
    timelimit.push(limit(options.soft_time_limit));

    let mut headers = FieldTable::new();
    headers.insert("lang", text("py"));
    headers.insert("task", text(&signature.name));
    headers.insert("id", text(id));
    headers.insert("shadow", text_or_void(options.shadow.as_deref()));
    headers.insert("eta", text_or_void(eta.map(isoformat).as_deref()));
    headers.insert(
        "expires",
        text_or_void(expires_at.map(isoformat).as_deref()),
    );
    headers.insert("group", FieldValue::Void);
    headers.insert("group_index", FieldValue::Void);
    headers.insert(
        "retries",
        FieldValue::LongInt(i32::try_from(options.retries).unwrap_or(i32::MAX)),
    );
    headers.insert("timelimit", FieldValue::Array(timelimit));
    headers.insert("root_id", text(options.root_id.as_deref().unwrap_or(id)));
    headers.insert("parent_id", text_or_void(options.parent_id.as_deref()));
    // Celery's `args or ()`: no arguments are an empty tuple.
    let argsrepr = if signature.args.is_empty() {
        "()".to_owned()
    } else {
        python::argsrepr(&args)
    };
    headers.insert("argsrepr", text(&argsrepr));
    headers.insert("kwargsrepr", text(&python::argsrepr(&kwargs)));
    headers.insert("origin", text(origin));
    headers.insert(
        "ignore_result",
        options
            .ignore_result
            .map_or(FieldValue::Void, FieldValue::Boolean),
    );
    headers.insert("replaced_task_nesting", FieldValue::LongInt(0));
    headers.insert("stamped_headers", FieldValue::Void);
    headers.insert("stamps", FieldValue::Table(FieldTable::new()));

    let mut properties = BasicProperties::default()
        .content_type("application/json")
        .content_encoding("utf-8")
        .headers(headers)
        .delivery_mode(2u8)
        .priority(options.priority.unwrap_or(0))
        .correlation_id(id)
        .reply_to(reply_to);
    if let Some(ttl) = ttl {
        // kombu: str(int(expiration * 1000)).
        properties = properties.expiration(ttl.as_millis().to_string());
    }
    let queue = options.queue.as_deref().unwrap_or(DEFAULT_QUEUE);
    Outgoing {
        publish: BasicPublish {
            routing_key: queue.into(),
            ..Default::default()
        },
        properties,
        body: format!("[{}, {}, {NO_WORKFLOW}]", dumps(&args), dumps(&kwargs)).into_bytes(),
    }
}

/// A number of seconds as a task message gave it (a time limit): an
/// integer or a float, kept as given so that a failure reports it the way
/// a Python worker does (`TimeLimitExceeded(1)`, not `(1.0)`).
#[derive(Debug, Clone, PartialEq)]
pub struct Seconds(Number);

impl Seconds {
    /// `duration` as Celery writes it.
    #[must_use]
    pub fn from_duration(duration: Duration) -> Self {
        match seconds_json(duration) {
            Value::Number(number) => Self(number),
            _ => Self(Number::from(0)),
        }
    }

    /// A positive number of seconds, else `None`.
    fn from_json(value: &Value) -> Option<Self> {
        let number = value.as_number()?;
        (number.as_f64()? > 0.0).then(|| Self(number.clone()))
    }

    /// As a duration (saturating).
    #[must_use]
    pub fn duration(&self) -> Duration {
        let seconds = self.0.as_f64().unwrap_or(0.0);
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
    }

    /// As the JSON number it came as.
    #[must_use]
    pub fn to_json(&self) -> Value {
        Value::Number(self.0.clone())
    }
}

/// A task message, read: what the task is, its arguments, and everything
/// the worker decides by.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Request {
    /// The task id.
    pub id: String,
    /// The task's name.
    pub name: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// The task protocol it came in: 1 or 2.
    pub protocol: u8,
    /// How many times it was retried already.
    pub retries: i64,
    /// Not to run before this.
    pub eta: Option<SystemTime>,
    /// Not to run after this.
    pub expires: Option<SystemTime>,
    /// The hard time limit the message sets.
    pub time_limit: Option<Seconds>,
    /// The soft time limit the message sets.
    pub soft_time_limit: Option<Seconds>,
    /// The first task of the workflow.
    pub root_id: Option<String>,
    /// The task that sent it.
    pub parent_id: Option<String>,
    /// The group it belongs to.
    pub group: Option<String>,
    /// True when no result is to be published.
    pub ignore_result: bool,
    /// Where the result goes (the client's result queue).
    pub reply_to: Option<String>,
    /// What the result carries as `correlation_id` (the task id unless the
    /// message says otherwise).
    pub correlation_id: String,
    /// The sender's node name.
    pub origin: Option<String>,
    /// The routing key it was delivered with (the queue, for the default
    /// exchange).
    pub routing_key: String,
    /// Whether the broker delivered it before.
    pub redelivered: bool,
}

impl Request {
    /// What Python calls the task's function in its errors: the last
    /// part of the task's name, as Celery names tasks (`tasks.add` is
    /// `add`).
    fn function_name(&self) -> &str {
        self.name.rsplit('.').next().unwrap_or(&self.name)
    }

    /// The positional arguments as `T` (a tuple, a `Vec`, a struct read
    /// from an array), failing as Python does with a `TypeError`.
    ///
    /// # Errors
    ///
    /// A `TypeError` [`Failure`](super::Failure) when they do not fit.
    pub fn args_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, super::Failure> {
        T::deserialize(Value::Array(self.args.clone())).map_err(|error| {
            super::Failure::type_error(format!("{}() arguments: {error}", self.function_name()))
        })
    }

    /// The arguments bound to the parameters `names`, in order, the way
    /// Python binds a call to `def task(a, b, ...)`: positional arguments
    /// first, then keyword arguments by name; then read as `T` (a tuple of
    /// the parameters' types). A parameter given both ways, one missing,
    /// an extra positional argument or an unknown keyword is a
    /// `TypeError`, with Python's wording (naming the function as the last
    /// part of the task's name).
    ///
    /// ```
    /// # use amqp_io_common::celery::Request;
    /// # fn demo(request: &Request) -> Result<(), amqp_io_common::celery::Failure> {
    /// // add(2, y=3), add(2, 3) and add(x=2, y=3) all bind.
    /// let (x, y): (i64, i64) = request.bind(&["x", "y"])?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// A `TypeError` [`Failure`](super::Failure).
    pub fn bind<T: serde::de::DeserializeOwned>(
        &self,
        names: &[&str],
    ) -> Result<T, super::Failure> {
        let name = self.function_name();
        if self.args.len() > names.len() {
            return Err(super::Failure::type_error(format!(
                "{name}() takes {} positional arguments but {} were given",
                names.len(),
                self.args.len()
            )));
        }
        if let Some(unknown) = self
            .kwargs
            .keys()
            .find(|key| !names.contains(&key.as_str()))
        {
            return Err(super::Failure::type_error(format!(
                "{name}() got an unexpected keyword argument '{unknown}'"
            )));
        }
        let mut bound = Vec::with_capacity(names.len());
        let mut missing = Vec::new();
        for (index, parameter) in names.iter().enumerate() {
            match (self.args.get(index), self.kwargs.get(*parameter)) {
                (Some(_), Some(_)) => {
                    return Err(super::Failure::type_error(format!(
                        "{name}() got multiple values for argument '{parameter}'"
                    )))
                }
                (Some(value), None) | (None, Some(value)) => bound.push(value.clone()),
                (None, None) => missing.push(format!("'{parameter}'")),
            }
        }
        if !missing.is_empty() {
            return Err(super::Failure::type_error(format!(
                "{name}() missing {} required positional argument{}: {}",
                missing.len(),
                if missing.len() == 1 { "" } else { "s" },
                missing.join(" and ")
            )));
        }
        T::deserialize(Value::Array(bound))
            .map_err(|error| super::Failure::type_error(format!("{name}() arguments: {error}")))
    }
}

/// Why a delivery is no task message this worker can read. A worker
/// rejects it without requeue (it would only come back) and goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// Not JSON by its content type (Celery's `ContentDisallowed`).
    #[error("content type {0:?} is not application/json")]
    ContentType(String),
    /// Not UTF-8 by its content encoding.
    #[error("content encoding {0:?} is not utf-8")]
    ContentEncoding(String),
    /// The body does not parse as JSON.
    #[error("the body is not JSON: {0}")]
    Json(String),
    /// A protocol 2 message without a header it needs (`id`).
    #[error("no {0:?} header")]
    MissingHeader(&'static str),
    /// A header or body field of the wrong type.
    #[error("{0:?} is not {1}")]
    WrongType(&'static str, &'static str),
    /// A protocol 2 body that is not `[args, kwargs, embed]`.
    #[error("the body is not [args, kwargs, embed]")]
    BodyShape,
    /// A protocol 1 body without a field it needs (`id`).
    #[error("a protocol 1 body without {0:?}")]
    MissingField(&'static str),
    /// An `eta` or `expires` that is not an ISO 8601 time.
    #[error("{field:?} is not an ISO 8601 time: {value:?}")]
    Time {
        /// `eta` or `expires`.
        field: &'static str,
        /// What it was.
        value: String,
    },
    /// Neither protocol: no `task` header, and the body is no protocol 1
    /// task (Celery's "unknown message").
    #[error("neither task protocol: no \"task\" header, and the body is no protocol 1 task")]
    UnknownFormat,
}

/// A header or field value as the JSON value Python would see.
fn field_json(value: &FieldValue) -> Value {
    match value {
        FieldValue::Boolean(value) => Value::Bool(*value),
        FieldValue::ShortShortInt(value) => Value::from(*value),
        FieldValue::ShortShortUInt(value) => Value::from(*value),
        FieldValue::ShortInt(value) => Value::from(*value),
        FieldValue::ShortUInt(value) => Value::from(*value),
        FieldValue::LongInt(value) => Value::from(*value),
        FieldValue::LongUInt(value) => Value::from(*value),
        FieldValue::LongLongInt(value) => Value::from(*value),
        FieldValue::Timestamp(value) => Value::from(*value),
        FieldValue::Float(value) => {
            Number::from_f64(f64::from(*value)).map_or(Value::Null, Value::Number)
        }
        FieldValue::Double(value) => Number::from_f64(*value).map_or(Value::Null, Value::Number),
        FieldValue::Decimal { scale, value } => {
            let value = f64::from(*value) / 10f64.powi(i32::from(*scale));
            Number::from_f64(value).map_or(Value::Null, Value::Number)
        }
        FieldValue::LongString(text) => Value::String(text.to_string_lossy().into_owned()),
        FieldValue::ByteArray(bytes) => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        FieldValue::Array(items) => Value::Array(items.as_slice().iter().map(field_json).collect()),
        FieldValue::Table(table) => Value::Object(
            table
                .iter()
                .map(|(key, value)| (key.to_string_lossy().into_owned(), field_json(value)))
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// The fields a protocol 1 body or the protocol 2 headers give, by name.
trait Fields {
    fn field(&self, name: &str) -> Option<Value>;

    /// A string field; absent and null are `None`.
    fn text(&self, name: &'static str) -> Result<Option<String>, Malformed> {
        match self.field(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(Malformed::WrongType(name, "a string")),
        }
    }

    fn time(&self, name: &'static str) -> Result<Option<SystemTime>, Malformed> {
        match self.text(name)? {
            None => Ok(None),
            Some(value) => parse_isoformat(&value)
                .map(Some)
                .ok_or(Malformed::Time { field: name, value }),
        }
    }
}

impl Fields for FieldTable {
    fn field(&self, name: &str) -> Option<Value> {
        self.get(name).map(field_json)
    }
}

impl Fields for Map<String, Value> {
    fn field(&self, name: &str) -> Option<Value> {
        self.get(name).cloned()
    }
}

/// The time limits of a `timelimit` field: `[hard, soft]`, either null.
fn time_limits(value: Option<Value>) -> Result<(Option<Seconds>, Option<Seconds>), Malformed> {
    match value {
        None | Some(Value::Null) => Ok((None, None)),
        Some(Value::Array(limits)) => {
            let hard = limits.first().and_then(Seconds::from_json);
            let soft = limits.get(1).and_then(Seconds::from_json);
            Ok((hard, soft))
        }
        Some(_) => Err(Malformed::WrongType("timelimit", "[hard, soft]")),
    }
}

fn retries(value: Option<Value>) -> Result<i64, Malformed> {
    match value {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(number)) => number
            .as_i64()
            .ok_or(Malformed::WrongType("retries", "an integer")),
        Some(_) => Err(Malformed::WrongType("retries", "an integer")),
    }
}

fn args_and_kwargs(
    args: Value,
    kwargs: Value,
) -> Result<(Vec<Value>, Map<String, Value>), Malformed> {
    let args = match args {
        Value::Array(args) => args,
        Value::Null => Vec::new(),
        _ => return Err(Malformed::WrongType("args", "a list")),
    };
    let kwargs = match kwargs {
        Value::Object(kwargs) => kwargs,
        Value::Null => Map::new(),
        _ => return Err(Malformed::WrongType("kwargs", "a dict")),
    };
    Ok((args, kwargs))
}

/// Reads a delivery as Celery's worker does: protocol 2 when the headers
/// name a `task`, else protocol 1 (the task in the JSON body).
///
/// # Errors
///
/// [`Malformed`]: the delivery is no task message this worker can read
/// (not JSON, no task id, a body of the wrong shape, a bad `eta`, ...).
pub fn parse_request(delivery: &Delivery) -> Result<Request, Malformed> {
    let properties = delivery.properties();
    if let Some(content_type) = &properties.content_type {
        let content_type = content_type.to_string_lossy();
        if content_type != "application/json" {
            return Err(Malformed::ContentType(content_type.into_owned()));
        }
    }
    if let Some(encoding) = &properties.content_encoding {
        let encoding = encoding.to_string_lossy();
        if !encoding.eq_ignore_ascii_case("utf-8") && !encoding.eq_ignore_ascii_case("utf8") {
            return Err(Malformed::ContentEncoding(encoding.into_owned()));
        }
    }
    let body: Value = serde_json::from_slice(delivery.body())
        .map_err(|error| Malformed::Json(error.to_string()))?;
    let empty = FieldTable::new();
    let headers = properties.headers.as_ref().unwrap_or(&empty);
    let reply_to = properties
        .reply_to
        .as_ref()
        .map(|reply_to| reply_to.to_string_lossy().into_owned())
        .filter(|reply_to| !reply_to.is_empty());
    let correlation_id = properties
        .correlation_id
        .as_ref()
        .map(|id| id.to_string_lossy().into_owned())
        .filter(|id| !id.is_empty());
    let mut request = if headers.get("task").is_some() {
        protocol_2(headers, body)?
    } else {
        protocol_1(body)?
    };
    request.reply_to = reply_to;
    request.correlation_id = correlation_id.unwrap_or_else(|| request.id.clone());
    request.routing_key = delivery.routing_key.to_string_lossy().into_owned();
    request.redelivered = delivery.redelivered;
    Ok(request)
}

fn protocol_2(headers: &FieldTable, body: Value) -> Result<Request, Malformed> {
    let name = headers
        .text("task")?
        .ok_or(Malformed::MissingHeader("task"))?;
    let id = headers.text("id")?.ok_or(Malformed::MissingHeader("id"))?;
    let Value::Array(parts) = body else {
        return Err(Malformed::BodyShape);
    };
    let [args, kwargs, embed] = <[Value; 3]>::try_from(parts).map_err(|_| Malformed::BodyShape)?;
    if !(embed.is_object() || embed.is_null()) {
        return Err(Malformed::BodyShape);
    }
    let (args, kwargs) = match (args, kwargs) {
        (args @ Value::Array(_), kwargs @ Value::Object(_)) => args_and_kwargs(args, kwargs)?,
        _ => return Err(Malformed::BodyShape),
    };
    let (time_limit, soft_time_limit) = time_limits(headers.field("timelimit"))?;
    Ok(Request {
        id,
        name,
        args,
        kwargs,
        protocol: 2,
        retries: retries(headers.field("retries"))?,
        eta: headers.time("eta")?,
        expires: headers.time("expires")?,
        time_limit,
        soft_time_limit,
        root_id: headers.text("root_id")?,
        parent_id: headers.text("parent_id")?,
        group: headers.text("group")?,
        ignore_result: matches!(headers.field("ignore_result"), Some(Value::Bool(true))),
        reply_to: None,
        correlation_id: String::new(),
        origin: headers.text("origin")?,
        routing_key: String::new(),
        redelivered: false,
    })
}

fn protocol_1(body: Value) -> Result<Request, Malformed> {
    let Value::Object(mut body) = body else {
        return Err(Malformed::UnknownFormat);
    };
    let Ok(Some(name)) = body.text("task") else {
        return Err(Malformed::UnknownFormat);
    };
    let id = body.text("id")?.ok_or(Malformed::MissingField("id"))?;
    let args = body.remove("args").unwrap_or(Value::Null);
    let kwargs = body.remove("kwargs").unwrap_or(Value::Null);
    let (args, kwargs) = args_and_kwargs(args, kwargs)?;
    let (time_limit, soft_time_limit) = time_limits(body.field("timelimit"))?;
    Ok(Request {
        id,
        name,
        args,
        kwargs,
        protocol: 1,
        retries: retries(body.field("retries"))?,
        eta: body.time("eta")?,
        expires: body.time("expires")?,
        time_limit,
        soft_time_limit,
        root_id: None,
        parent_id: None,
        group: body.text("taskset").ok().flatten(),
        ignore_result: false,
        reply_to: None,
        correlation_id: String::new(),
        origin: None,
        routing_key: String::new(),
        redelivered: false,
    })
}
