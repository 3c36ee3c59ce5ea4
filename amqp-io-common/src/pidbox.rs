//! kombu's process mailbox ("pidbox"), the protocol behind `celery inspect`
//! and `celery control`, as IO-free bookkeeping both adapters drive.
//!
//! A [`Mailbox`] broadcasts a command to the fanout exchange
//! `<namespace>.pidbox` and, when replies are wanted, collects them from
//! its own reply queue `<oid>.reply.<namespace>.pidbox`, bound to the
//! direct exchange `reply.<namespace>.pidbox` with the routing key `<oid>`.
//! A [`Node`] consumes its queue `<hostname>.<namespace>.pidbox`, runs the
//! commands meant for it and replies `{"<hostname>": <result>}`.
//!
//! The rules follow kombu 5.7 (`kombu/pidbox.py`) as celery 5.7 uses it:
//! requests are JSON with delivery mode 2 and headers `clock` (integer) and
//! `expires` (Unix time as a float, 0 for none); replies are JSON with
//! delivery mode 1 and headers `ticket` and `clock`. Collecting replies
//! ([`Collector`]) counts every delivery towards the limit, dropped and
//! wrong-ticket ones included; adjusts the Lamport clock from every
//! delivery, expired ones included; treats a reply without a `ticket`
//! header as a match; and keeps replies for other tickets aside
//! ("unclaimed") for a later collect of that ticket, which returns them at
//! once. The timeout restarts with each delivery, as kombu's
//! `drain_events(timeout)` loop does.
//!
//! Every decision lives here; an adapter only moves the messages. A
//! broadcast is [`Mailbox::broadcast`]'s [`BroadcastPlan`]: declare, publish,
//! then, with its [`Collector`], consume the reply queue
//! ([`Collector::consume`]), wait for each delivery as long as
//! [`Collector::wait`] says and hand it to [`Mailbox::on_reply`]. A node
//! consumes [`Node::consume`] after declaring [`Node::topology`], and passes
//! each delivery to [`Node::answer`], which says what to send back.
//!
//! Requires the `kombu` feature.
//!
//! ```
//! use amqp_io_common::pidbox::{Broadcast, Mailbox};
//!
//! let mut mailbox = Mailbox::celery();
//! let request = mailbox.request(&Broadcast::new("ping"), 1_700_000_000.0);
//! assert_eq!(request.publish.exchange, "celery.pidbox");
//! let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
//! assert_eq!(body["method"], "ping");
//! assert_eq!(body["reply_to"]["exchange"], "reply.celery.pidbox");
//! ```

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amqp_proto::codec::{BasicProperties, FieldTable, FieldValue, ShortString};
use amqp_proto::spec::{BasicConsume, BasicPublish, ExchangeDeclare, QueueBind, QueueDeclare};
use amqp_proto::Delivery;
use serde_json::{json, Map, Value};

/// The wall clock as Unix seconds, the `now` the adapters pass in: kombu's
/// `expires` header is an absolute Unix time, so this is the system clock,
/// not a monotonic one.
#[must_use]
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

/// What to declare before consuming a mailbox's or node's queue: an
/// exchange, the queue and their binding, in this order.
pub type Topology = (ExchangeDeclare, QueueDeclare, QueueBind);

/// A Lamport clock, as kombu keeps one per mailbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LamportClock(u64);

impl LamportClock {
    /// The current value.
    #[must_use]
    pub fn value(self) -> u64 {
        self.0
    }

    /// Moves past a value seen from another process.
    pub fn adjust(&mut self, other: u64) -> u64 {
        self.0 = self.0.max(other) + 1;
        self.0
    }

    /// Counts a local event (a send).
    pub fn forward(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

/// A message to publish: method, properties and JSON body.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Where to.
    pub publish: BasicPublish,
    /// Content type, delivery mode and headers.
    pub properties: BasicProperties,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// Everything one broadcast does, in order, for an adapter to carry out
/// with its own calls (see [`Mailbox::broadcast`]).
#[derive(Debug, Clone)]
pub struct BroadcastPlan {
    /// First, `exchange.declare` of the mailbox exchange.
    pub exchange: ExchangeDeclare,
    /// Then, when replies are wanted, the reply exchange, queue and
    /// binding (declared again for each broadcast, as kombu does: the
    /// queue is exclusive and auto-deleted).
    pub reply_topology: Option<Topology>,
    /// Then the request to publish.
    pub request: Outgoing,
    /// Last, when replies are wanted, their collect: run it as
    /// [`Collector`] says.
    pub collector: Option<Collector>,
}

/// A broadcast to publish, and the ticket its replies will carry.
#[derive(Debug, Clone)]
pub struct Request {
    /// The message.
    pub publish: BasicPublish,
    /// Its properties.
    pub properties: BasicProperties,
    /// Its JSON body.
    pub body: Vec<u8>,
    /// The ticket replies are matched by, when replies are wanted.
    pub ticket: Option<String>,
}

/// Queue and exchange settings of a mailbox (celery's `control_*`
/// settings).
#[derive(Debug, Clone, PartialEq)]
pub struct MailboxSettings {
    /// `x-message-ttl` of node and reply queues (`None`: no TTL).
    pub queue_ttl: Option<Duration>,
    /// `x-expires` of node queues.
    pub queue_expires: Option<Duration>,
    /// `x-expires` of the reply queue (kombu's default: 10 s).
    pub reply_queue_expires: Option<Duration>,
    /// `x-message-ttl` of the reply queue.
    pub reply_queue_ttl: Option<Duration>,
    /// The mailbox exchange's type: `fanout` for celery, `direct` for
    /// kombu's default.
    pub exchange_type: String,
}

impl MailboxSettings {
    /// celery's defaults: fanout, messages live 300 s, queues expire
    /// after 10 s unused.
    #[must_use]
    pub fn celery() -> Self {
        Self {
            queue_ttl: Some(Duration::from_secs(300)),
            queue_expires: Some(Duration::from_secs(10)),
            reply_queue_expires: Some(Duration::from_secs(10)),
            reply_queue_ttl: Some(Duration::from_secs(300)),
            exchange_type: "fanout".into(),
        }
    }
}

/// What to broadcast, and how to collect the replies (kombu's
/// `Mailbox._broadcast` arguments), as the adapters' mailboxes take it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Broadcast {
    /// The command (`ping`, `stats`, `enable_events`, ...).
    pub command: String,
    /// Its keyword arguments, a JSON object.
    pub arguments: Value,
    /// The nodes it is for; `None` for every node.
    pub destination: Option<Vec<String>>,
    /// Whether to collect replies.
    pub reply: bool,
    /// How long to wait for the next reply (restarted by each one), and
    /// the request's `expires`.
    pub timeout: Duration,
    /// Stop after this many deliveries on the reply queue; `None` counts
    /// the destinations, or waits out the timeout when there are none.
    pub limit: Option<usize>,
    /// Nodes chosen by a name pattern instead of a destination list
    /// (with `matcher`; kombu's nodes know `glob` and `pcre`, this crate's
    /// nodes `glob`).
    pub pattern: Option<String>,
    /// How `pattern` matches: `glob` or `pcre`.
    pub matcher: Option<String>,
}

impl Broadcast {
    /// `command` with no arguments, to every node, replies collected for
    /// one second (what `celery inspect` does).
    #[must_use]
    pub fn new(command: &str) -> Self {
        Self {
            command: command.to_owned(),
            arguments: Value::Object(serde_json::Map::new()),
            destination: None,
            reply: true,
            timeout: Duration::from_secs(1),
            limit: None,
            pattern: None,
            matcher: None,
        }
    }
}

impl Broadcast {
    /// How many deliveries the collect counts before it stops: `limit`,
    /// else one per destination, else none (the timeout ends it).
    #[must_use]
    pub fn reply_limit(&self) -> Option<usize> {
        self.limit
            .or_else(|| self.destination.as_ref().map(Vec::len))
    }
}

/// The reply a kombu node gives for a command it has no handler for.
#[must_use]
pub fn unknown_command(command: &Command) -> Value {
    serde_json::json!({ "error": format!("KeyError('{}')", command.method) })
}

/// The client side: broadcasts commands and collects replies.
#[derive(Debug)]
pub struct Mailbox {
    namespace: String,
    settings: MailboxSettings,
    /// This mailbox's id: its reply queue's name and routing key.
    oid: String,
    clock: LamportClock,
    unclaimed: HashMap<String, VecDeque<Value>>,
    last_ticket: Option<String>,
}

fn milliseconds(duration: Duration) -> FieldValue {
    FieldValue::LongLongInt(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
}

fn queue_arguments(expires: Option<Duration>, ttl: Option<Duration>) -> FieldTable {
    let mut arguments = FieldTable::new();
    if let Some(expires) = expires {
        arguments.insert("x-expires", milliseconds(expires));
    }
    if let Some(ttl) = ttl {
        arguments.insert("x-message-ttl", milliseconds(ttl));
    }
    arguments
}

fn json_properties(delivery_mode: u8, headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .content_type("application/json")
        .content_encoding("utf-8")
        .delivery_mode(delivery_mode)
        .priority(0u8)
        .headers(headers)
}

fn header<'a>(delivery: &'a Delivery, name: &str) -> Option<&'a FieldValue> {
    delivery.properties().headers.as_ref()?.get(name)
}

fn header_number(delivery: &Delivery, name: &str) -> Option<f64> {
    match header(delivery, name)? {
        FieldValue::LongLongInt(value) => Some(*value as f64),
        FieldValue::LongInt(value) => Some(f64::from(*value)),
        FieldValue::ShortInt(value) => Some(f64::from(*value)),
        FieldValue::LongUInt(value) => Some(f64::from(*value)),
        FieldValue::Double(value) => Some(*value),
        FieldValue::Float(value) => Some(f64::from(*value)),
        _ => None,
    }
}

fn header_text(delivery: &Delivery, name: &str) -> Option<String> {
    match header(delivery, name)? {
        FieldValue::LongString(value) => Some(value.to_string_lossy().into_owned()),
        _ => None,
    }
}

/// What one delivery on the reply queue came to.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyOutcome {
    /// A reply to this collect (its body).
    Matched(Value),
    /// A reply to another broadcast, kept for its ticket.
    Unclaimed,
    /// Past its `expires` header: dropped.
    Expired,
    /// Not JSON: dropped.
    Undecodable,
}

impl ReplyOutcome {
    /// The reply the caller's callback sees: a matched one's body.
    #[must_use]
    pub fn matched(&self) -> Option<&Value> {
        match self {
            Self::Matched(reply) => Some(reply),
            _ => None,
        }
    }
}

/// One collect's progress: the replies so far, and how many deliveries
/// counted towards its limit.
///
/// An adapter consumes the reply queue with [`consume`](Self::consume)
/// (nothing to consume when the replies are already at hand), then, while
/// [`wait`](Self::wait) gives a duration, waits that long for a delivery
/// and passes it to [`Mailbox::on_reply`]; a wait that ends with no
/// delivery ends the collect. Then it cancels its consumer and returns
/// [`replies`](Self::replies).
#[derive(Debug, Clone)]
pub struct Collector {
    ticket: String,
    reply_queue: String,
    limit: Option<usize>,
    timeout: Duration,
    counted: usize,
    /// The matching replies, in arrival order.
    pub replies: Vec<Value>,
}

impl Collector {
    /// True once `limit` deliveries were counted.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.limit.is_some_and(|limit| self.counted >= limit)
    }

    /// The ticket collected for.
    #[must_use]
    pub fn ticket(&self) -> &str {
        &self.ticket
    }

    /// `basic.consume` of the reply queue (`no_ack`, as kombu consumes
    /// it), or `None` when the collect is already complete and needs no
    /// consumer.
    #[must_use]
    pub fn consume(&self) -> Option<BasicConsume> {
        (!self.is_complete()).then(|| BasicConsume {
            queue: self.reply_queue.as_str().into(),
            no_ack: true,
            ..Default::default()
        })
    }

    /// How long to wait for the next delivery: the whole timeout again
    /// after each one, as kombu's `drain_events(timeout)` loop does;
    /// `None` once the collect is complete.
    #[must_use]
    pub fn wait(&self) -> Option<Duration> {
        (!self.is_complete()).then_some(self.timeout)
    }
}

impl Mailbox {
    /// A mailbox in `namespace` with these settings.
    #[must_use]
    pub fn new(namespace: &str, settings: MailboxSettings) -> Self {
        Self {
            namespace: namespace.to_owned(),
            settings,
            oid: uuid::Uuid::new_v4().to_string(),
            clock: LamportClock::default(),
            unclaimed: HashMap::new(),
            last_ticket: None,
        }
    }

    /// celery's mailbox: namespace `celery`, celery's settings.
    #[must_use]
    pub fn celery() -> Self {
        Self::new("celery", MailboxSettings::celery())
    }

    /// The clock.
    #[must_use]
    pub fn clock(&self) -> LamportClock {
        self.clock
    }

    /// The ticket of the last broadcast planned that wanted replies.
    #[must_use]
    pub fn last_ticket(&self) -> Option<&str> {
        self.last_ticket.as_deref()
    }

    /// Plans `broadcast` (`now` is Unix seconds, see [`unix_now`]): the
    /// declarations, the request and, when replies are wanted, the collect
    /// of its ticket, which becomes [`last_ticket`](Self::last_ticket).
    pub fn broadcast(&mut self, broadcast: &Broadcast, now: f64) -> BroadcastPlan {
        let reply_topology = broadcast.reply.then(|| self.reply_topology());
        let request = self.request(broadcast, now);
        let collector = request.ticket.as_deref().map(|ticket| {
            self.last_ticket = Some(ticket.to_owned());
            self.collect(ticket, broadcast.reply_limit(), broadcast.timeout)
        });
        BroadcastPlan {
            exchange: self.exchange_declare(),
            reply_topology,
            request: Outgoing {
                publish: request.publish,
                properties: request.properties,
                body: request.body,
            },
            collector,
        }
    }

    /// `exchange.declare` of the mailbox exchange.
    #[must_use]
    pub fn exchange_declare(&self) -> ExchangeDeclare {
        ExchangeDeclare {
            exchange: format!("{}.pidbox", self.namespace).into(),
            exchange_type: self.settings.exchange_type.as_str().into(),
            ..Default::default()
        }
    }

    fn reply_exchange(&self) -> String {
        format!("reply.{}.pidbox", self.namespace)
    }

    /// The reply queue's name.
    #[must_use]
    pub fn reply_queue(&self) -> String {
        format!("{}.{}", self.oid, self.reply_exchange())
    }

    /// What to declare before a broadcast that wants replies (kombu
    /// declares it again each time: it is exclusive and auto-deleted):
    /// the reply exchange, the reply queue and their binding.
    #[must_use]
    pub fn reply_topology(&self) -> Topology {
        let exchange = ExchangeDeclare {
            exchange: self.reply_exchange().into(),
            exchange_type: "direct".into(),
            ..Default::default()
        };
        let queue = QueueDeclare {
            queue: self.reply_queue().into(),
            exclusive: true,
            auto_delete: true,
            arguments: queue_arguments(
                self.settings.reply_queue_expires,
                self.settings.reply_queue_ttl,
            ),
            ..Default::default()
        };
        let bind = QueueBind {
            queue: self.reply_queue().into(),
            exchange: self.reply_exchange().into(),
            routing_key: self.oid.as_str().into(),
            ..Default::default()
        };
        (exchange, queue, bind)
    }

    /// Builds the message for `broadcast`. When it wants replies, it
    /// carries a fresh ticket and this mailbox's reply address. Its
    /// `expires` header is `now` (Unix seconds) plus the timeout.
    pub fn request(&mut self, broadcast: &Broadcast, now: f64) -> Request {
        let mut message = Map::new();
        message.insert("method".into(), json!(broadcast.command));
        message.insert("arguments".into(), broadcast.arguments.clone());
        message.insert("destination".into(), json!(broadcast.destination));
        message.insert("pattern".into(), json!(broadcast.pattern));
        message.insert("matcher".into(), json!(broadcast.matcher));
        let ticket = broadcast.reply.then(|| uuid::Uuid::new_v4().to_string());
        if let Some(ticket) = &ticket {
            message.insert("ticket".into(), json!(ticket));
            let reply_to = json!({"exchange": self.reply_exchange(), "routing_key": self.oid});
            message.insert("reply_to".into(), reply_to);
        }
        let mut headers = FieldTable::new();
        let clock = i64::try_from(self.clock.forward()).unwrap_or(i64::MAX);
        headers.insert("clock", FieldValue::LongLongInt(clock));
        let expires = now + broadcast.timeout.as_secs_f64();
        headers.insert("expires", FieldValue::Double(expires));
        Request {
            publish: BasicPublish {
                exchange: format!("{}.pidbox", self.namespace).into(),
                ..Default::default()
            },
            properties: json_properties(2, headers),
            body: Value::Object(message).to_string().into_bytes(),
            ticket,
        }
    }

    /// Starts collecting replies for `ticket` (kombu's `_collect`),
    /// counting at most `limit` deliveries (`None`: until no delivery came
    /// for `timeout`). Replies that arrived earlier for this ticket
    /// (unclaimed by another collect) are returned at once, as kombu does,
    /// and the collect is complete.
    pub fn collect(&mut self, ticket: &str, limit: Option<usize>, timeout: Duration) -> Collector {
        let mut collector = Collector {
            ticket: ticket.to_owned(),
            reply_queue: self.reply_queue(),
            limit,
            timeout,
            counted: 0,
            replies: Vec::new(),
        };
        if let Some(unclaimed) = self.unclaimed.remove(ticket) {
            collector.replies.extend(unclaimed);
            collector.limit = Some(0);
        }
        collector
    }

    /// Sorts one delivery from the reply queue into `collector` (now is
    /// Unix seconds). Every delivery counts towards the limit.
    pub fn on_reply(
        &mut self,
        collector: &mut Collector,
        delivery: &Delivery,
        now: f64,
    ) -> ReplyOutcome {
        collector.counted += 1;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let clock = header_number(delivery, "clock").unwrap_or(0.0).max(0.0) as u64;
        self.clock.adjust(clock);
        if header_number(delivery, "expires").is_some_and(|expires| expires > 0.0 && now > expires)
        {
            return ReplyOutcome::Expired;
        }
        let Ok(body) = serde_json::from_slice::<Value>(delivery.body()) else {
            return ReplyOutcome::Undecodable;
        };
        match header_text(delivery, "ticket") {
            Some(ticket) if ticket != collector.ticket => {
                self.unclaimed.entry(ticket).or_default().push_back(body);
                ReplyOutcome::Unclaimed
            }
            _ => {
                collector.replies.push(body.clone());
                ReplyOutcome::Matched(body)
            }
        }
    }
}

/// A command a [`Node`] received.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The command's name (`ping`, `stats`, ...).
    pub method: String,
    /// Its keyword arguments.
    pub arguments: Map<String, Value>,
    reply_to: Option<(String, String)>,
    ticket: Option<String>,
}

impl Command {
    /// True when the sender waits for a reply.
    #[must_use]
    pub fn wants_reply(&self) -> bool {
        self.reply_to.is_some()
    }
}

/// What a [`Node`] does about one delivery ([`Node::answer`]).
#[derive(Debug, Clone)]
pub struct Answer {
    /// Whether the delivery was a command for this node (not another
    /// node's, and a command at all).
    pub handled: bool,
    /// What to send back, when the sender wants a reply: declare the
    /// reply exchange, then publish the reply.
    pub reply: Option<(ExchangeDeclare, Outgoing)>,
}

/// The serving side: a named node answering commands.
#[derive(Debug)]
pub struct Node {
    hostname: String,
    namespace: String,
    settings: MailboxSettings,
    clock: LamportClock,
}

impl Node {
    /// A node `hostname` (celery names them `name@host`) in `namespace`.
    #[must_use]
    pub fn new(hostname: &str, namespace: &str, settings: MailboxSettings) -> Self {
        Self {
            hostname: hostname.to_owned(),
            namespace: namespace.to_owned(),
            settings,
            clock: LamportClock::default(),
        }
    }

    /// A node in celery's mailbox.
    #[must_use]
    pub fn celery(hostname: &str) -> Self {
        Self::new(hostname, "celery", MailboxSettings::celery())
    }

    /// The node's name.
    #[must_use]
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The clock.
    #[must_use]
    pub fn clock(&self) -> LamportClock {
        self.clock
    }

    /// What to declare before consuming: the mailbox exchange, the node's
    /// queue (exclusive, auto-deleted) and its binding.
    #[must_use]
    pub fn topology(&self) -> Topology {
        let exchange_name = format!("{}.pidbox", self.namespace);
        let exchange = ExchangeDeclare {
            exchange: exchange_name.as_str().into(),
            exchange_type: self.settings.exchange_type.as_str().into(),
            ..Default::default()
        };
        let queue_name = self.queue();
        let queue = QueueDeclare {
            queue: queue_name.as_str().into(),
            exclusive: true,
            auto_delete: true,
            arguments: queue_arguments(self.settings.queue_expires, self.settings.queue_ttl),
            ..Default::default()
        };
        let bind = QueueBind {
            queue: queue_name.as_str().into(),
            exchange: exchange_name.as_str().into(),
            ..Default::default()
        };
        (exchange, queue, bind)
    }

    /// The node's queue name.
    #[must_use]
    pub fn queue(&self) -> String {
        format!("{}.{}.pidbox", self.hostname, self.namespace)
    }

    /// `basic.consume` of the node's queue (`no_ack`, as kombu's nodes
    /// consume it), after [`topology`](Self::topology) is declared.
    #[must_use]
    pub fn consume(&self) -> BasicConsume {
        BasicConsume {
            queue: self.queue().into(),
            no_ack: true,
            ..Default::default()
        }
    }

    /// Handles one delivery from the node's queue: a command for this node
    /// goes to `handler`, whose result becomes the reply when the sender
    /// wants one ([`receive`](Self::receive), then [`reply`](Self::reply)).
    pub fn answer(
        &mut self,
        delivery: &Delivery,
        handler: impl FnOnce(&Command) -> Value,
    ) -> Answer {
        let Some(command) = self.receive(delivery) else {
            return Answer {
                handled: false,
                reply: None,
            };
        };
        let result = handler(&command);
        Answer {
            handled: true,
            reply: self.reply(&command, result),
        }
    }

    /// Reads a delivery from the node's queue: the command, if it is for
    /// this node (by `destination`, or a `glob` `pattern`). Adjusts the
    /// clock from every delivery.
    pub fn receive(&mut self, delivery: &Delivery) -> Option<Command> {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let clock = header_number(delivery, "clock").unwrap_or(0.0).max(0.0) as u64;
        self.clock.adjust(clock);
        let body: Value = serde_json::from_slice(delivery.body()).ok()?;
        let destination = body.get("destination").and_then(Value::as_array);
        let pattern = body.get("pattern").and_then(Value::as_str);
        let matcher = body.get("matcher").and_then(Value::as_str);
        let for_us = match (destination, pattern, matcher) {
            (Some(names), _, _) if !names.is_empty() => names
                .iter()
                .any(|name| name.as_str() == Some(&self.hostname)),
            (_, Some(pattern), Some(matcher)) => {
                matcher == "glob" && glob_match(pattern.as_bytes(), self.hostname.as_bytes())
            }
            _ => true,
        };
        if !for_us {
            return None;
        }
        let reply_to = body.get("reply_to").and_then(|reply_to| {
            let exchange = reply_to.get("exchange")?.as_str()?.to_owned();
            let routing_key = reply_to.get("routing_key")?.as_str()?.to_owned();
            Some((exchange, routing_key))
        });
        Some(Command {
            method: body.get("method")?.as_str()?.to_owned(),
            arguments: body
                .get("arguments")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            reply_to,
            ticket: body
                .get("ticket")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    /// The reply to `command` carrying `result`, as a kombu node sends it
    /// (`{"<hostname>": result}`), with the exchange to declare first;
    /// `None` when no reply is wanted.
    pub fn reply(
        &mut self,
        command: &Command,
        result: Value,
    ) -> Option<(ExchangeDeclare, Outgoing)> {
        let (exchange, routing_key) = command.reply_to.clone()?;
        let mut headers = FieldTable::new();
        let ticket = command.ticket.clone().unwrap_or_default();
        headers.insert("ticket", FieldValue::LongString(ticket.into()));
        let clock = i64::try_from(self.clock.forward()).unwrap_or(i64::MAX);
        headers.insert("clock", FieldValue::LongLongInt(clock));
        let declare = ExchangeDeclare {
            exchange: exchange.as_str().into(),
            exchange_type: "direct".into(),
            ..Default::default()
        };
        let outgoing = Outgoing {
            publish: BasicPublish {
                exchange: ShortString::from(exchange),
                routing_key: routing_key.into(),
                ..Default::default()
            },
            properties: json_properties(1, headers),
            body: Value::Object(Map::from_iter([(self.hostname.clone(), result)]))
                .to_string()
                .into_bytes(),
        };
        Some((declare, outgoing))
    }
}

/// `fnmatch`-style matching: `*`, `?` and `[...]` (with `!` negation).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => {
            (0..=text.len()).any(|skip| text.get(skip..).is_some_and(|tail| glob_match(rest, tail)))
        }
        Some((b'?', rest)) => text
            .split_first()
            .is_some_and(|(_, tail)| glob_match(rest, tail)),
        Some((b'[', rest)) => {
            let Some(close) = rest.iter().skip(1).position(|&byte| byte == b']') else {
                return text.first() == Some(&b'[') && glob_match(rest, &text[1..]);
            };
            let (set, after) = rest.split_at(close + 1);
            let after = after.get(1..).unwrap_or_default();
            let (negated, set) = match set.split_first() {
                Some((b'!', set)) => (true, set),
                _ => (false, set),
            };
            text.split_first().is_some_and(|(&byte, tail)| {
                set.contains(&byte) != negated && glob_match(after, tail)
            })
        }
        Some((&literal, rest)) => text
            .split_first()
            .is_some_and(|(&byte, tail)| byte == literal && glob_match(rest, tail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(body: &str, headers: FieldTable) -> Delivery {
        let properties = BasicProperties::default().headers(headers);
        crate::testing::delivery(properties, body.as_bytes())
    }

    fn reply_headers(ticket: Option<&str>, clock: i64, expires: Option<f64>) -> FieldTable {
        let mut headers = FieldTable::new();
        if let Some(ticket) = ticket {
            headers.insert("ticket", FieldValue::LongString(ticket.into()));
        }
        headers.insert("clock", FieldValue::LongLongInt(clock));
        if let Some(expires) = expires {
            headers.insert("expires", FieldValue::Double(expires));
        }
        headers
    }

    #[test]
    fn collecting_counts_every_delivery_keeps_strangers_and_drops_the_expired() {
        let mut mailbox = Mailbox::celery();
        let request = mailbox.request(&Broadcast::new("ping"), 100.0);
        let ticket = request.ticket.unwrap();
        let mut collector = mailbox.collect(&ticket, Some(4), Duration::from_secs(1));
        let mine = delivery(
            r#"{"a": {"ok": "pong"}}"#,
            reply_headers(Some(&ticket), 50, None),
        );
        let other = delivery(r#"{"b": 1}"#, reply_headers(Some("other"), 7, None));
        let expired = delivery(r#"{"c": 1}"#, reply_headers(Some(&ticket), 90, Some(99.0)));
        let anonymous = delivery(r#"{"d": 1}"#, reply_headers(None, 1, None));
        assert!(matches!(
            mailbox.on_reply(&mut collector, &mine, 100.0),
            ReplyOutcome::Matched(_)
        ));
        assert_eq!(
            mailbox.on_reply(&mut collector, &other, 100.0),
            ReplyOutcome::Unclaimed
        );
        assert_eq!(
            mailbox.on_reply(&mut collector, &expired, 100.0),
            ReplyOutcome::Expired
        );
        assert!(!collector.is_complete());
        assert!(matches!(
            mailbox.on_reply(&mut collector, &anonymous, 100.0),
            ReplyOutcome::Matched(_)
        ));
        assert!(collector.is_complete(), "every delivery counts");
        assert_eq!(collector.replies.len(), 2);
        // The clock moved past the highest seen, the expired one's too.
        assert!(mailbox.clock().value() > 90);
        // The stranger waits for its own collect, which returns at once.
        let later = mailbox.collect("other", None, Duration::from_secs(1));
        assert!(later.is_complete());
        assert!(later.consume().is_none(), "nothing to wait for");
        assert_eq!(later.wait(), None);
        assert_eq!(later.replies, vec![json!({"b": 1})]);
    }

    #[test]
    fn a_broadcast_plan_declares_publishes_and_collects_as_kombu_does() {
        let mut mailbox = Mailbox::celery();
        let mut broadcast = Broadcast::new("ping");
        broadcast.destination = Some(vec!["a@h".to_owned(), "b@h".to_owned()]);
        broadcast.timeout = Duration::from_secs(3);
        let plan = mailbox.broadcast(&broadcast, 0.0);
        assert_eq!(plan.exchange.exchange.to_string(), "celery.pidbox");
        assert_eq!(plan.exchange.exchange_type.to_string(), "fanout");
        let (exchange, queue, _) = plan.reply_topology.expect("replies wanted");
        assert_eq!(exchange.exchange.to_string(), "reply.celery.pidbox");
        assert_eq!(plan.request.publish.exchange.to_string(), "celery.pidbox");
        let mut collector = plan.collector.expect("replies wanted");
        assert_eq!(mailbox.last_ticket(), Some(collector.ticket()));
        let consume = collector.consume().expect("a reply queue to consume");
        assert_eq!(consume.queue, queue.queue);
        assert!(consume.no_ack);
        // One delivery per destination; the timeout restarts with each.
        assert_eq!(collector.wait(), Some(Duration::from_secs(3)));
        let ticket = collector.ticket().to_owned();
        for name in ["a@h", "b@h"] {
            let body = format!(r#"{{"{name}": {{"ok": "pong"}}}}"#);
            let reply = delivery(&body, reply_headers(Some(&ticket), 1, None));
            let outcome = mailbox.on_reply(&mut collector, &reply, 0.0);
            assert!(outcome.matched().is_some());
            assert!(ReplyOutcome::Expired.matched().is_none());
        }
        assert_eq!(collector.wait(), None);
        assert_eq!(collector.replies.len(), 2);

        // No replies wanted: nothing but the exchange and the request.
        broadcast.reply = false;
        let plan = mailbox.broadcast(&broadcast, 0.0);
        assert!(plan.reply_topology.is_none() && plan.collector.is_none());
        assert_eq!(mailbox.last_ticket(), Some(ticket.as_str()));
        let body: Value = serde_json::from_slice(&plan.request.body).unwrap();
        assert!(body.get("reply_to").is_none());
    }

    #[test]
    fn the_reply_limit_is_the_limit_else_the_destinations() {
        let mut broadcast = Broadcast::new("ping");
        assert_eq!(broadcast.reply_limit(), None);
        broadcast.destination = Some(vec!["a@h".to_owned()]);
        assert_eq!(broadcast.reply_limit(), Some(1));
        broadcast.limit = Some(5);
        assert_eq!(broadcast.reply_limit(), Some(5));
    }

    #[test]
    fn requests_carry_the_kombu_wire_format() {
        let mut mailbox = Mailbox::celery();
        let destination = vec!["w1@h".to_owned()];
        let mut broadcast = Broadcast::new("ping");
        broadcast.arguments = json!({"x": 1});
        broadcast.destination = Some(destination);
        broadcast.timeout = Duration::from_secs(2);
        let request = mailbox.request(&broadcast, 10.0);
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["destination"], json!(["w1@h"]));
        assert_eq!(body["arguments"], json!({"x": 1}));
        assert_eq!(body["pattern"], Value::Null);
        assert_eq!(body["reply_to"]["routing_key"], json!(mailbox.oid));
        let headers = request.properties.headers.unwrap();
        assert_eq!(headers.get("expires"), Some(&FieldValue::Double(12.0)));
        assert_eq!(headers.get("clock"), Some(&FieldValue::LongLongInt(1)));
        assert_eq!(request.properties.delivery_mode, Some(2));
        let (_, queue, bind) = mailbox.reply_topology();
        assert!(queue.queue.to_string().ends_with(".reply.celery.pidbox"));
        assert_eq!(
            queue.arguments.get("x-expires"),
            Some(&FieldValue::LongLongInt(10_000))
        );
        assert_eq!(bind.routing_key.to_string(), mailbox.oid);
    }

    #[test]
    fn nodes_take_what_is_addressed_to_them_and_reply_like_kombu() {
        let mut mailbox = Mailbox::celery();
        let mut node = Node::celery("rust@box");
        let for_other = vec!["else@box".to_owned()];
        let mut broadcast = Broadcast::new("ping");
        broadcast.destination = Some(for_other);
        let request = mailbox.request(&broadcast, 0.0);
        let headers = request.properties.headers.clone().unwrap();
        let body = String::from_utf8(request.body).unwrap();
        assert!(node.receive(&delivery(&body, headers.clone())).is_none());
        let request = mailbox.request(&Broadcast::new("ping"), 0.0);
        let body = String::from_utf8(request.body).unwrap();
        let command = node
            .receive(&delivery(&body, request.properties.headers.unwrap()))
            .unwrap();
        assert_eq!(command.method, "ping");
        let (declare, reply) = node.reply(&command, json!({"ok": "pong"})).unwrap();
        assert_eq!(declare.exchange.to_string(), "reply.celery.pidbox");
        let reply_body: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(reply_body, json!({"rust@box": {"ok": "pong"}}));
        assert_eq!(reply.properties.delivery_mode, Some(1));
        let ticket = reply.properties.headers.unwrap().get("ticket").cloned();
        assert_eq!(
            ticket,
            Some(FieldValue::LongString(request.ticket.unwrap().into()))
        );
    }

    #[test]
    fn a_node_answers_what_is_for_it_and_replies_only_when_asked() {
        let mut mailbox = Mailbox::celery();
        let mut node = Node::celery("rust@box");
        let consume = node.consume();
        assert_eq!(consume.queue.to_string(), "rust@box.celery.pidbox");
        assert!(consume.no_ack);
        let as_delivery = |outgoing: &Outgoing| {
            let body = std::str::from_utf8(&outgoing.body).unwrap().to_owned();
            delivery(&body, outgoing.properties.headers.clone().unwrap())
        };

        let plan = mailbox.broadcast(&Broadcast::new("ping"), 0.0);
        let answer = node.answer(&as_delivery(&plan.request), |command| {
            assert_eq!(command.method, "ping");
            json!({"ok": "pong"})
        });
        assert!(answer.handled);
        let (exchange, reply) = answer.reply.expect("a reply was wanted");
        assert_eq!(exchange.exchange.to_string(), "reply.celery.pidbox");
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body, json!({"rust@box": {"ok": "pong"}}));

        let mut silent = Broadcast::new("enable_events");
        silent.reply = false;
        let plan = mailbox.broadcast(&silent, 0.0);
        let answer = node.answer(&as_delivery(&plan.request), |_| json!(null));
        assert!(answer.handled && answer.reply.is_none());

        let mut elsewhere = Broadcast::new("ping");
        elsewhere.destination = Some(vec!["other@box".to_owned()]);
        let plan = mailbox.broadcast(&elsewhere, 0.0);
        let answer = node.answer(&as_delivery(&plan.request), |_| {
            panic!("not this node's command")
        });
        assert!(!answer.handled && answer.reply.is_none());
    }

    #[test]
    fn glob_patterns_match_as_fnmatch_does() {
        assert!(glob_match(b"celery@*", b"celery@host"));
        assert!(glob_match(b"w?@h", b"w1@h"));
        assert!(glob_match(b"w[12]@h", b"w2@h"));
        assert!(!glob_match(b"w[!12]@h", b"w2@h"));
        assert!(!glob_match(b"celery@*", b"worker@host"));
    }
}
