//! `amqp-perf`: load against an AMQP 0-9-1 broker, in the spirit of
//! RabbitMQ's PerfTest, through `amqp-io-tokio`.
//!
//! Producers and consumers each get their own connection. Every message
//! carries its send time, so consumers measure end-to-end latency into an
//! HDR histogram. A progress line is printed each second (sent, confirmed
//! and received per second, latency p50/p99, resident memory), also as CSV
//! with `--csv`, and a summary at the end (with latency min, p50, p75, p95,
//! p99 and max), also as JSON with `--json`.
//!
//! For a cluster, `--uris` spreads the connections over several nodes and
//! `--queue-args x-queue-type=quorum` (or `stream`) picks a replicated
//! queue type; `--queue-pattern` spreads the load over several queues.
//!
//! ```text
//! cargo run --release -p amqp-perf -- --producers 1 --consumers 1 --size 16 \
//!     --confirm 1000 --prefetch 1000 --multi-ack 100 --time 10
//! ```

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use amqp_io_tokio::{Channel, Connection, Error};
use amqp_proto::codec::{BasicProperties, FieldTable, FieldValue};
use amqp_proto::spec::{
    BasicConsume, BasicPublish, BasicQos, ExchangeDeclare, QueueBind, QueueDeclare, QueueDelete,
};
use amqp_proto::uri::AmqpUri;
use bytes::{BufMut, BytesMut};
use clap::Parser;
use hdrhistogram::Histogram;

/// Load generator for AMQP 0-9-1 brokers.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
struct Options {
    /// Broker URL, for a single node (`--uris` takes precedence).
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    uri: String,
    /// Broker URLs of several nodes, comma-separated: the connections are
    /// spread over them round-robin, consumers first, then producers.
    #[arg(long, value_parser = parse_uris)]
    uris: Option<UriList>,
    /// Producer connections.
    #[arg(short = 'x', long, default_value_t = 1)]
    producers: usize,
    /// Consumer connections.
    #[arg(short = 'y', long, default_value_t = 1)]
    consumers: usize,
    /// Message size in bytes (at least 8: the send time travels in them).
    #[arg(short = 's', long, default_value_t = 16)]
    size: usize,
    /// Publisher-confirm window: unconfirmed messages per producer (0: no confirms).
    #[arg(short = 'c', long, default_value_t = 0)]
    confirm: usize,
    /// Consumer prefetch (0: unlimited; a stream gets 1000).
    #[arg(short = 'q', long, default_value_t = 0)]
    prefetch: u16,
    /// Acknowledge every N messages with `multiple` (0: consume with no_ack,
    /// which a stream does not allow).
    #[arg(short = 'A', long = "multi-ack", default_value_t = 1)]
    multi_ack: u64,
    /// Messages per second per producer (0: as fast as possible).
    #[arg(short = 'r', long, default_value_t = 0)]
    rate: u64,
    /// Messages per second per consumer at most (0: as fast as they come).
    #[arg(long, default_value_t = 0)]
    consumer_rate: u64,
    /// Simulated work per message in each consumer, in microseconds, before
    /// its acknowledgement.
    #[arg(long, default_value_t = 0)]
    consumer_latency: u64,
    /// Stop after this many seconds.
    #[arg(short = 'z', long = "time")]
    seconds: Option<u64>,
    /// Stop after each producer sent this many messages.
    #[arg(short = 'C', long = "pmessages")]
    messages: Option<u64>,
    /// Queue to use (default: a new queue, deleted at the end).
    #[arg(short = 'u', long, conflicts_with = "queue_pattern")]
    queue: Option<String>,
    /// Several queues, named from this pattern (`perf-%d`; `%03d` pads with
    /// zeros) numbered from `--queue-pattern-from` to `--queue-pattern-to`;
    /// producers and consumers are spread over them round-robin.
    #[arg(long)]
    queue_pattern: Option<String>,
    /// First number of `--queue-pattern`.
    #[arg(long, default_value_t = 1, requires = "queue_pattern")]
    queue_pattern_from: u64,
    /// Last number of `--queue-pattern` (included).
    #[arg(long, default_value_t = 1, requires = "queue_pattern")]
    queue_pattern_to: u64,
    /// Queue arguments, `key=value,...` (`x-queue-type=quorum,x-max-length=1000`):
    /// integers go as signed 64-bit integers, `true` and `false` as booleans,
    /// anything else as a string.
    #[arg(long, value_parser = parse_queue_args)]
    queue_args: Option<QueueArguments>,
    /// Where stream consumers start (`x-stream-offset`): first, last, next,
    /// an offset, or an interval such as 10m (default: next). Streams only.
    #[arg(long, value_parser = parse_stream_offset)]
    stream_offset: Option<StreamOffset>,
    /// Exchange to publish to; the queues are bound to it (default:
    /// `amq.direct`, or `amq.<type>` with `--exchange-type`; "" is the default
    /// exchange).
    #[arg(short = 'e', long)]
    exchange: Option<String>,
    /// Type of the exchange; given, a named exchange (not `amq.*`) is
    /// declared with it.
    #[arg(short = 't', long, value_enum)]
    exchange_type: Option<ExchangeType>,
    /// Routing key of every publish and binding key of every queue
    /// (default: each queue's name, so a producer reaches one queue).
    #[arg(short = 'k', long)]
    routing_key: Option<String>,
    /// Publish persistent messages (delivery mode 2).
    #[arg(long)]
    persistent: bool,
    /// Print the summary as JSON too.
    #[arg(long)]
    json: bool,
    /// Write the per-second progress as CSV to this file (header row, one
    /// row per second).
    #[arg(long)]
    csv: Option<PathBuf>,
}

/// Stream consumers must have a prefetch; they get this one when
/// `--prefetch` is 0.
const STREAM_PREFETCH: u16 = 1000;

/// At most this many queues from `--queue-pattern`: each is declared one by
/// one before the run, so a typo like `--queue-pattern-to 1000000` should
/// fail at once rather than declare for minutes.
const MAX_QUEUES: u64 = 10_000;

/// After the stop, consumers keep taking the deliveries already on their way
/// for this long at most: enough for what is in flight, but one replaying a
/// stream with a backlog still stops. (A throttled consumer stops at once:
/// its backlog would only drain at its own pace.)
const DRAIN: Duration = Duration::from_secs(1);

/// A consumer hands its latencies over at least this often, so the
/// per-second figures have samples even at low rates.
const MERGE_EVERY: Duration = Duration::from_millis(200);

/// Tokio's timer fires on millisecond ticks; the simulated consumer latency
/// sleeps only once this much work time has piled up (see [`Pace`]).
const TIMER_TICK: Duration = Duration::from_millis(1);

/// A `recv` that took longer than this waited for the broker: the consumer
/// was idle, and its simulated work starts when the message came (see
/// [`Pace`]). A buffered delivery is handed over in well under a microsecond.
const IDLE_RECV: Duration = Duration::from_micros(50);

/// How far behind its work schedule a busy consumer may catch up: timer
/// lateness is made up, a long stall (the process starved of CPU) is not.
const CATCH_UP: Duration = Duration::from_millis(10);

/// With `--pmessages`, the run also ends when the producers are done and
/// nothing arrived for this many seconds: messages that were nacked,
/// dropped by `x-max-length` or routed nowhere never arrive.
const IDLE_SECONDS: u32 = 3;

/// The columns of `--csv`, in the order [`Second::csv_row`] writes them.
const CSV_HEADER: &str = "time_s,sent_per_s,confirmed_per_s,nacked_per_s,received_per_s,\
latency_min_us,latency_p50_us,latency_p75_us,latency_p95_us,latency_p99_us,latency_max_us,rss_kib";

/// The broker URLs of `--uris`, in the order given (checked to parse).
#[derive(Debug, Clone, PartialEq, Eq)]
struct UriList(Vec<String>);

/// Splits `--uris` at commas (an AMQP URI has no literal comma), dropping
/// blanks, and checks each URI parses, so a typo fails before any
/// connection rather than half-way through starting the producers.
fn parse_uris(list: &str) -> Result<UriList, String> {
    let uris: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|uri| !uri.is_empty())
        .map(String::from)
        .collect();
    if uris.is_empty() {
        return Err("no URI in the list".into());
    }
    for uri in &uris {
        uri.parse::<AmqpUri>()
            .map_err(|error| format!("{uri:?}: {error}"))?;
    }
    Ok(UriList(uris))
}

/// `host:port` of a URI, to show where connections go without printing the
/// credentials.
fn address(uri: &str) -> String {
    uri.parse::<AmqpUri>()
        .map_or_else(|_| uri.to_owned(), |parsed| parsed.address())
}

/// The parsed `--queue-args`, in the order given.
#[derive(Debug, Clone, PartialEq)]
struct QueueArguments(Vec<(String, FieldValue)>);

impl QueueArguments {
    /// The arguments as `queue.declare` carries them.
    fn table(&self) -> FieldTable {
        self.0
            .iter()
            .map(|(key, value)| (key.as_str(), value.clone()))
            .collect()
    }

    /// The value of `key`, if given.
    fn get(&self, key: &str) -> Option<&FieldValue> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value)
    }

    /// The arguments as a JSON object, for `--json`.
    fn json(&self) -> serde_json::Value {
        self.0
            .iter()
            .map(|(key, value)| {
                let value = match value {
                    FieldValue::LongLongInt(number) => serde_json::json!(number),
                    FieldValue::Boolean(flag) => serde_json::json!(flag),
                    FieldValue::LongString(text) => serde_json::json!(text.to_string_lossy()),
                    other => serde_json::json!(format!("{other:?}")),
                };
                (key.clone(), value)
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// One `--queue-args` value, typed as RabbitMQ expects its arguments:
/// lengths, TTLs and limits are integers (RabbitMQ takes any integer type;
/// a signed 64-bit one holds them all), flags are booleans, and the rest
/// (`x-queue-type`, `x-overflow`, ...) strings.
fn queue_argument_value(text: &str) -> FieldValue {
    if let Ok(number) = text.parse::<i64>() {
        return FieldValue::LongLongInt(number);
    }
    match text {
        "true" => FieldValue::Boolean(true),
        "false" => FieldValue::Boolean(false),
        _ => FieldValue::LongString(text.into()),
    }
}

/// Parses `--queue-args`: `key=value` pairs separated by commas. A key
/// given twice is refused: which one would win is not obvious.
fn parse_queue_args(list: &str) -> Result<QueueArguments, String> {
    let mut arguments: Vec<(String, FieldValue)> = Vec::new();
    for pair in list
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("{pair:?} is not key=value"));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("{pair:?} has no key"));
        }
        if arguments.iter().any(|(name, _)| name == key) {
            return Err(format!("{key} is given twice"));
        }
        arguments.push((key.to_owned(), queue_argument_value(value.trim())));
    }
    Ok(QueueArguments(arguments))
}

/// The queue type `x-queue-type` asks for: it decides the declare's flags
/// and what consumers must do.
#[derive(Debug, Clone, PartialEq, Eq)]
enum QueueKind {
    /// No `x-queue-type`, or `classic`.
    Classic,
    /// `quorum`: replicated; durable, never exclusive nor auto-delete.
    Quorum,
    /// `stream`: a replicated log; durable, never exclusive nor auto-delete,
    /// and consumers need a prefetch, manual acks and an offset.
    Stream,
    /// A type this tool does not know: declared as given, like a classic
    /// queue; the broker decides.
    Other(String),
}

impl QueueKind {
    /// The kind `--queue-args` asks for.
    fn of(arguments: Option<&QueueArguments>) -> Self {
        let Some(value) = arguments.and_then(|arguments| arguments.get("x-queue-type")) else {
            return Self::Classic;
        };
        let name = match value {
            FieldValue::LongString(text) => text.to_string_lossy().into_owned(),
            other => format!("{other:?}"),
        };
        match name.as_str() {
            "classic" => Self::Classic,
            "quorum" => Self::Quorum,
            "stream" => Self::Stream,
            _ => Self::Other(name),
        }
    }

    /// Quorum queues and streams refuse to be transient, exclusive or
    /// auto-delete (PRECONDITION_FAILED), so they are declared durable and
    /// deleted explicitly at the end instead.
    fn replicated(&self) -> bool {
        matches!(self, Self::Quorum | Self::Stream)
    }

    /// How the plan line calls it.
    fn name(&self) -> &str {
        match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
            Self::Stream => "stream",
            Self::Other(name) => name,
        }
    }
}

/// Where a stream consumer starts reading (`x-stream-offset`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum StreamOffset {
    /// The oldest message still in the stream.
    First,
    /// The last chunk written.
    Last,
    /// Only what is published after the consumer starts.
    Next,
    /// This offset.
    Offset(i64),
    /// What was written in this recent interval (`10m`, `1h`, `7D`...).
    Interval(String),
}

impl StreamOffset {
    /// The `x-stream-offset` value: a string for the named positions and
    /// intervals, a signed 64-bit integer for an offset, as RabbitMQ reads it.
    fn field_value(&self) -> FieldValue {
        match self {
            Self::First => "first".into(),
            Self::Last => "last".into(),
            Self::Next => "next".into(),
            Self::Offset(offset) => FieldValue::LongLongInt(*offset),
            Self::Interval(interval) => interval.as_str().into(),
        }
    }

    /// As given on the command line, for the plan line and `--json`.
    fn text(&self) -> String {
        match self {
            Self::First => "first".into(),
            Self::Last => "last".into(),
            Self::Next => "next".into(),
            Self::Offset(offset) => offset.to_string(),
            Self::Interval(interval) => interval.clone(),
        }
    }
}

/// Parses `--stream-offset`. Intervals are digits and one of RabbitMQ's
/// units (Y, M, D, h, m, s); anything else is refused here rather than by
/// the broker closing the channel at the first consume.
fn parse_stream_offset(text: &str) -> Result<StreamOffset, String> {
    match text {
        "first" => return Ok(StreamOffset::First),
        "last" => return Ok(StreamOffset::Last),
        "next" => return Ok(StreamOffset::Next),
        _ => {}
    }
    if let Ok(offset) = text.parse::<i64>() {
        return Ok(StreamOffset::Offset(offset));
    }
    let interval = text
        .strip_suffix(['Y', 'M', 'D', 'h', 'm', 's'])
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
    if interval {
        Ok(StreamOffset::Interval(text.to_owned()))
    } else {
        Err(format!(
            "{text:?}: expected first, last, next, an offset or an interval such as 10m"
        ))
    }
}

/// One piece of a `--queue-pattern`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternPiece {
    /// Literal text.
    Text(String),
    /// The queue's number, at least `width` characters wide, padded with
    /// zeros or spaces.
    Number {
        /// Minimum width (0: as wide as the number).
        width: usize,
        /// Pad with zeros (`%03d`) rather than spaces (`%3d`).
        zeros: bool,
    },
}

/// Expands `--queue-pattern` for every number from `from` to `to`
/// (included). The pattern speaks the `%d` of PerfTest's (Java's) format
/// strings, with an optional width (`%3d`, `%03d`), and `%%` for a percent
/// sign; it must hold at least one number, or every queue would have the
/// same name.
fn expand_queue_pattern(pattern: &str, from: u64, to: u64) -> Result<Vec<String>, String> {
    if from > to {
        return Err(format!(
            "--queue-pattern-from {from} is greater than --queue-pattern-to {to}"
        ));
    }
    if to - from >= MAX_QUEUES {
        return Err(format!(
            "--queue-pattern from {from} to {to} makes more than {MAX_QUEUES} queues"
        ));
    }
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            text.push(c);
            continue;
        }
        if chars.next_if_eq(&'%').is_some() {
            text.push('%');
            continue;
        }
        let zeros = chars.next_if_eq(&'0').is_some();
        let mut digits = String::new();
        while let Some(digit) = chars.next_if(char::is_ascii_digit) {
            digits.push(digit);
        }
        if chars.next() != Some('d') {
            return Err(format!(
                "--queue-pattern {pattern:?}: only %d (with an optional width, %03d) and %% are understood"
            ));
        }
        let width = if digits.is_empty() {
            0
        } else {
            digits
                .parse()
                .map_err(|_| format!("--queue-pattern {pattern:?}: width {digits} is too large"))?
        };
        pieces.push(PatternPiece::Text(std::mem::take(&mut text)));
        pieces.push(PatternPiece::Number { width, zeros });
    }
    pieces.push(PatternPiece::Text(text));
    if !pieces
        .iter()
        .any(|piece| matches!(piece, PatternPiece::Number { .. }))
    {
        return Err(format!(
            "--queue-pattern {pattern:?} has no %d: every queue would have the same name"
        ));
    }
    Ok((from..=to)
        .map(|number| {
            pieces
                .iter()
                .map(|piece| match piece {
                    PatternPiece::Text(text) => text.clone(),
                    PatternPiece::Number { width, zeros: true } => format!("{number:0width$}"),
                    PatternPiece::Number {
                        width,
                        zeros: false,
                    } => format!("{number:width$}"),
                })
                .collect()
        })
        .collect())
}

/// The exchange types `--exchange-type` offers: the four every broker has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ExchangeType {
    /// Routes by exact routing key.
    Direct,
    /// Routes to every bound queue.
    Fanout,
    /// Routes by routing-key pattern.
    Topic,
    /// Routes by headers (our bindings have none, so they match everything).
    Headers,
}

impl ExchangeType {
    /// The type's name in `exchange.declare`.
    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
        }
    }

    /// The type of a predeclared `amq.*` exchange, whose type is fixed
    /// (and which may not be declared: the `amq.` prefix is reserved).
    fn of_predeclared(exchange: &str) -> Option<Self> {
        match exchange {
            "amq.direct" => Some(Self::Direct),
            "amq.fanout" => Some(Self::Fanout),
            "amq.topic" => Some(Self::Topic),
            "amq.headers" | "amq.match" => Some(Self::Headers),
            _ => None,
        }
    }
}

/// The run's layout, fixed before any connection: which node every
/// connection goes to, which queue every producer and consumer uses, and
/// which queues a message reaches (for the count-based stop).
#[derive(Debug, Clone)]
struct Plan {
    /// The nodes, from `--uris` or `--uri`.
    uris: Vec<String>,
    /// The queues, from `--queue`, `--queue-pattern` or a made-up name.
    queues: Vec<String>,
    /// The queue's name was made up: it is deleted at the end.
    own_queue: bool,
    /// What `x-queue-type` asks for.
    kind: QueueKind,
    /// The exchange publishes go to ("" is the default exchange).
    exchange: String,
    /// How that exchange routes (assumed direct for a named exchange of
    /// unknown type).
    exchange_type: ExchangeType,
    /// Declare the exchange first (`--exchange-type` with a named exchange).
    declare_exchange: bool,
    /// `--routing-key`, else every queue's own name.
    routing_key: Option<String>,
    /// Consumer connections.
    consumers: usize,
    /// Producer connections.
    producers: usize,
}

impl Plan {
    /// Works the layout out of the options; fails on contradictions such as
    /// `-e amq.fanout --exchange-type topic`.
    fn new(options: &Options) -> Result<Self, String> {
        let uris = options
            .uris
            .as_ref()
            .map_or_else(|| vec![options.uri.clone()], |list| list.0.clone());
        let own_queue = options.queue.is_none() && options.queue_pattern.is_none();
        let queues = match (&options.queue, &options.queue_pattern) {
            (Some(queue), _) => vec![queue.clone()],
            (None, Some(pattern)) => expand_queue_pattern(
                pattern,
                options.queue_pattern_from,
                options.queue_pattern_to,
            )?,
            (None, None) => vec![format!("amqp-perf-{}", std::process::id())],
        };
        let exchange = match (&options.exchange, options.exchange_type) {
            (Some(exchange), _) => exchange.clone(),
            (None, Some(kind)) => format!("amq.{}", kind.name()),
            (None, None) => "amq.direct".to_owned(),
        };
        let known = if exchange.is_empty() {
            Some(ExchangeType::Direct)
        } else {
            ExchangeType::of_predeclared(&exchange)
        };
        if let (Some(fixed), Some(asked)) = (known, options.exchange_type) {
            if fixed != asked {
                return Err(format!(
                    "exchange {exchange:?} is predeclared as {}, not {}",
                    fixed.name(),
                    asked.name()
                ));
            }
        }
        let exchange_type = options
            .exchange_type
            .or(known)
            .unwrap_or(ExchangeType::Direct);
        Ok(Self {
            uris,
            queues,
            own_queue,
            kind: QueueKind::of(options.queue_args.as_ref()),
            declare_exchange: options.exchange_type.is_some() && known.is_none(),
            exchange,
            exchange_type,
            routing_key: options.routing_key.clone(),
            consumers: options.consumers,
            producers: options.producers,
        })
    }

    /// Consumer `index`'s node: connections are numbered consumers first
    /// (as PerfTest creates them), then producers, and take the nodes in
    /// turn, so one producer and one consumer land on different nodes.
    fn consumer_uri(&self, index: usize) -> &str {
        &self.uris[index % self.uris.len()]
    }

    /// Producer `index`'s node (see [`Plan::consumer_uri`]).
    fn producer_uri(&self, index: usize) -> &str {
        &self.uris[(self.consumers + index) % self.uris.len()]
    }

    /// The queue consumer `index` consumes from: the queues in turn.
    fn consumer_queue(&self, index: usize) -> &str {
        &self.queues[index % self.queues.len()]
    }

    /// The routing key of producer `index`: `--routing-key`, else the name
    /// of the queue it is given, the queues in turn.
    fn routing_key(&self, index: usize) -> &str {
        self.routing_key
            .as_deref()
            .unwrap_or(&self.queues[index % self.queues.len()])
    }

    /// The key `queue` is bound with: `--routing-key`, else its name.
    fn binding_key<'a>(&'a self, queue: &'a str) -> &'a str {
        self.routing_key.as_deref().unwrap_or(queue)
    }

    /// The queues (indices) a message of producer `index` reaches.
    fn targets(&self, index: usize) -> Vec<usize> {
        let key = self.routing_key(index);
        let all = (0..self.queues.len()).collect();
        if self.exchange.is_empty() {
            // The default exchange routes to the queue named by the key.
            return self
                .queues
                .iter()
                .position(|queue| queue == key)
                .into_iter()
                .collect();
        }
        match self.exchange_type {
            ExchangeType::Fanout | ExchangeType::Headers => all,
            // Every queue is bound with the same key: all or nothing.
            ExchangeType::Direct | ExchangeType::Topic if self.routing_key.is_some() => all,
            ExchangeType::Direct | ExchangeType::Topic => self
                .queues
                .iter()
                .position(|queue| queue == key)
                .into_iter()
                .collect(),
        }
    }

    /// Consumers of queue `queue` (an index).
    fn consumers_on(&self, queue: usize) -> u64 {
        (0..self.consumers)
            .filter(|consumer| consumer % self.queues.len() == queue)
            .count() as u64
    }

    /// Deliveries one message of producer `index` makes: one per reached
    /// queue that has a consumer, since a queue's consumers share its
    /// messages, except a stream, where every consumer reads all of them.
    fn copies(&self, index: usize) -> u64 {
        self.targets(index)
            .into_iter()
            .map(|queue| {
                let consumers = self.consumers_on(queue);
                if self.kind == QueueKind::Stream {
                    consumers
                } else {
                    consumers.min(1)
                }
            })
            .sum()
    }

    /// Deliveries the consumers should see when every producer sends
    /// `per_producer` messages.
    fn expected_deliveries(&self, per_producer: u64) -> u64 {
        (0..self.producers)
            .map(|index| self.copies(index) * per_producer)
            .sum()
    }

    /// One line saying where the load goes (no credentials).
    fn describe(&self) -> String {
        let nodes: Vec<String> = self.uris.iter().map(|uri| address(uri)).collect();
        let queues = match self.queues.as_slice() {
            [queue] => format!("queue {queue}"),
            [first, .., last] => format!("{} queues {first} .. {last}", self.queues.len()),
            [] => "no queue".to_owned(),
        };
        let exchange = if self.exchange.is_empty() {
            "the default exchange".to_owned()
        } else {
            format!("exchange {} ({})", self.exchange, self.exchange_type.name())
        };
        format!(
            "{} producers, {} consumers over {} ({}); {} {queues} through {exchange}",
            self.producers,
            self.consumers,
            if nodes.len() == 1 { "1 node" } else { "nodes" },
            nodes.join(", "),
            self.kind.name(),
        )
    }
}

/// Makes the options fit the queue type and each other, returning a note
/// for each change: a stream refuses consumers without a prefetch or with
/// no_ack, and a multiple-ack batch larger than the prefetch would stall
/// every consumer (the broker stops delivering before the batch is full).
fn fit_options(options: &mut Options, kind: &QueueKind) -> Vec<String> {
    let mut notes = Vec::new();
    if *kind == QueueKind::Stream {
        if options.prefetch == 0 {
            options.prefetch = STREAM_PREFETCH;
            notes.push(format!(
                "stream consumers need a prefetch: using --prefetch {STREAM_PREFETCH}"
            ));
        }
        if options.multi_ack == 0 {
            options.multi_ack = 1;
            notes.push("stream consumers need manual acks: using --multi-ack 1".to_owned());
        }
    } else if options.stream_offset.is_some() {
        notes.push("--stream-offset is for streams (x-queue-type=stream): ignored".to_owned());
    }
    if options.prefetch > 0 && options.multi_ack > u64::from(options.prefetch) {
        notes.push(format!(
            "--multi-ack {} is above --prefetch {}: consumers would stall; acking every {} instead",
            options.multi_ack, options.prefetch, options.prefetch
        ));
        options.multi_ack = u64::from(options.prefetch);
    }
    notes
}

/// Counters every task adds to.
#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    confirmed: AtomicU64,
    nacked: AtomicU64,
    received: AtomicU64,
}

impl Totals {
    /// The counters now.
    fn snapshot(&self) -> Counts {
        Counts {
            sent: self.sent.load(Ordering::Relaxed),
            confirmed: self.confirmed.load(Ordering::Relaxed),
            nacked: self.nacked.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
        }
    }
}

/// The counters at one moment, or their growth over an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    sent: u64,
    confirmed: u64,
    nacked: u64,
    received: u64,
}

impl Counts {
    /// What was added since `earlier`.
    fn since(self, earlier: Self) -> Self {
        Self {
            sent: self.sent.saturating_sub(earlier.sent),
            confirmed: self.confirmed.saturating_sub(earlier.confirmed),
            nacked: self.nacked.saturating_sub(earlier.nacked),
            received: self.received.saturating_sub(earlier.received),
        }
    }
}

/// The latency figures of the summary, the JSON and the CSV, in
/// nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Percentiles {
    min: u64,
    p50: u64,
    p75: u64,
    p95: u64,
    p99: u64,
    max: u64,
}

impl Percentiles {
    /// The figures of `histogram`; none when it is empty (a zero would read
    /// as a measured latency).
    fn of(histogram: &Histogram<u64>) -> Option<Self> {
        (!histogram.is_empty()).then(|| Self {
            min: histogram.min(),
            p50: histogram.value_at_quantile(0.50),
            p75: histogram.value_at_quantile(0.75),
            p95: histogram.value_at_quantile(0.95),
            p99: histogram.value_at_quantile(0.99),
            max: histogram.max(),
        })
    }

    /// The figures in order, named.
    fn named(&self) -> [(&'static str, u64); 6] {
        [
            ("min", self.min),
            ("p50", self.p50),
            ("p75", self.p75),
            ("p95", self.p95),
            ("p99", self.p99),
            ("max", self.max),
        ]
    }
}

/// One second of the run: a progress line and a CSV row.
#[derive(Debug, Clone, PartialEq)]
struct Second {
    /// Seconds since the producers started.
    at: f64,
    /// What the second added.
    counts: Counts,
    /// Latency of the messages received in it.
    latency: Option<Percentiles>,
    /// Resident memory of this process, KiB.
    rss_kib: u64,
}

impl Second {
    /// The progress line; nacks only with confirms on, where they can occur.
    fn line(&self, confirms: bool) -> String {
        let (p50, p99) = self.latency.map_or((0.0, 0.0), |latency| {
            (micros(latency.p50), micros(latency.p99))
        });
        let nacked = if confirms {
            format!(", nacked {:>6} msg/s", self.counts.nacked)
        } else {
            String::new()
        };
        format!(
            "time {:>5.1}s, sent {:>8} msg/s, confirmed {:>8} msg/s{nacked}, received {:>8} msg/s, latency p50 {p50:>9.1} us p99 {p99:>9.1} us, rss {} KiB",
            self.at, self.counts.sent, self.counts.confirmed, self.counts.received, self.rss_kib
        )
    }

    /// The CSV row, columns as [`CSV_HEADER`]; latency in microseconds, the
    /// latency columns empty in a second without deliveries.
    fn csv_row(&self) -> String {
        let latency = self.latency.map_or_else(
            || ",,,,,".to_owned(),
            |latency| {
                latency
                    .named()
                    .iter()
                    .map(|(_, nanos)| format!("{:.1}", micros(*nanos)))
                    .collect::<Vec<_>>()
                    .join(",")
            },
        );
        format!(
            "{:.3},{},{},{},{},{latency},{}",
            self.at,
            self.counts.sent,
            self.counts.confirmed,
            self.counts.nacked,
            self.counts.received,
            self.rss_kib
        )
    }
}

/// `--csv`: the progress as CSV, flushed every second, so a run cut short
/// keeps what it measured.
struct CsvFile {
    out: BufWriter<File>,
}

impl CsvFile {
    /// Creates (or truncates) the file and writes the header.
    fn create(path: &Path) -> std::io::Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        writeln!(out, "{CSV_HEADER}")?;
        out.flush()?;
        Ok(Self { out })
    }

    /// Appends one second.
    fn write(&mut self, second: &Second) -> std::io::Result<()> {
        writeln!(self.out, "{}", second.csv_row())?;
        self.out.flush()
    }
}

/// What every task shares.
struct Shared {
    /// The options, fitted to the queue type ([`fit_options`]).
    options: Options,
    /// Who goes where.
    plan: Plan,
    /// Sent, confirmed, nacked and received so far.
    totals: Totals,
    /// Latencies since the last progress line; consumers merge theirs in.
    latency: Mutex<Histogram<u64>>,
    /// The zero of the send times ([`Shared::nanos`]).
    epoch: Instant,
    /// Set when the time is up or every message arrived: producers stop
    /// publishing, consumers drain and leave.
    stop: AtomicBool,
}

impl Shared {
    /// Nanoseconds since the run's epoch: the send time a message carries.
    /// One clock for producers and consumers (one process), so the
    /// difference is the end-to-end latency without clock skew.
    fn nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// An empty latency histogram; every one has the same bounds, so they can be
/// added to each other.
fn histogram() -> Histogram<u64> {
    // 1 us to 60 s at 3 significant digits; the bounds are constants.
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// Resident memory of this process in KiB, from /proc (0 elsewhere).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4)
}

/// Producer `index`: its own connection to its node, publishing stamped
/// messages at `--rate` with at most `--confirm` unconfirmed, until the stop
/// or `--pmessages`; then waits for the outstanding confirms, so every
/// message sent is counted confirmed or nacked.
async fn producer(shared: Arc<Shared>, index: usize) -> Result<(), Error> {
    let options = &shared.options;
    let plan = &shared.plan;
    let connection = Connection::connect(plan.producer_uri(index)).await?;
    let channel = connection.channel().await?;
    if options.confirm > 0 {
        channel.confirm_select().await?;
    }
    let publish = BasicPublish {
        exchange: plan.exchange.as_str().into(),
        routing_key: plan.routing_key(index).into(),
        ..Default::default()
    };
    let mut properties = BasicProperties::default();
    if options.persistent {
        properties = properties.delivery_mode(2u8);
    }
    let padding = vec![0u8; options.size.saturating_sub(8)];
    let mut outstanding = VecDeque::new();
    let started = Instant::now();
    let mut sent = 0u64;
    while !shared.stop.load(Ordering::Relaxed)
        && options.messages.map_or(true, |limit| sent < limit)
    {
        if options.rate > 0 {
            let due = started + Duration::from_secs_f64(sent as f64 / options.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let mut body = BytesMut::with_capacity(options.size.max(8));
        body.put_u64(shared.nanos());
        body.put_slice(&padding);
        let confirmation = channel
            .publish(&publish, &properties, body.freeze())
            .await?;
        sent += 1;
        shared.totals.sent.fetch_add(1, Ordering::Relaxed);
        if options.confirm > 0 {
            outstanding.push_back(confirmation);
            while outstanding.len() >= options.confirm {
                if let Some(oldest) = outstanding.pop_front() {
                    settle(&shared, &oldest.await);
                }
            }
        }
    }
    for confirmation in outstanding {
        settle(&shared, &confirmation.await);
    }
    connection.close().await
}

/// Counts one confirmation; a failed one (a nack, or the channel's end)
/// counts as nacked.
fn settle(shared: &Shared, outcome: &Result<(), Error>) {
    match outcome {
        Ok(()) => shared.totals.confirmed.fetch_add(1, Ordering::Relaxed),
        Err(_) => shared.totals.nacked.fetch_add(1, Ordering::Relaxed),
    };
}

/// Paces a consumer: `--consumer-latency` as work time per message and
/// `--consumer-rate` as a ceiling on messages per second.
///
/// Tokio's timer has millisecond ticks, so sleeping 100 us per message would
/// sleep 1 ms or more each time. The work time instead runs on a schedule:
/// each message moves `busy_until` on by the latency, and the consumer
/// sleeps only once it is a tick or more ahead of the clock; a sleep that
/// ends late is made up by the next messages, unless the consumer then
/// waited for a message (it was idle, not busy). A busy consumer then does
/// one message per latency on average, which is what the option simulates:
/// a consumer's capacity.
struct Pace {
    started: Instant,
    handled: u64,
    rate: u64,
    latency: Duration,
    busy_until: Instant,
}

impl Pace {
    /// A pace for `--consumer-rate` and `--consumer-latency` (0: none).
    fn new(rate: u64, latency_micros: u64) -> Self {
        let now = Instant::now();
        Self {
            started: now,
            handled: 0,
            rate,
            latency: Duration::from_micros(latency_micros),
            busy_until: now,
        }
    }

    /// The simulated work on one message; `idle`: the consumer waited for
    /// it.
    async fn work(&mut self, idle: bool) {
        if self.latency.is_zero() {
            return;
        }
        let now = Instant::now();
        if (idle && self.busy_until < now) || self.busy_until + CATCH_UP < now {
            self.busy_until = now;
        }
        self.busy_until += self.latency;
        if self.busy_until >= now + TIMER_TICK {
            tokio::time::sleep_until(self.busy_until.into()).await;
        }
    }

    /// Waits, after a message, until the rate allows the next one.
    async fn next(&mut self) {
        self.handled += 1;
        if self.rate > 0 {
            let due =
                self.started + Duration::from_secs_f64(self.handled as f64 / self.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

/// Consumer `index`: its own connection to its node, consuming its queue
/// (with an offset on a stream), recording each message's latency in a
/// local histogram merged into the shared one now and then (no lock per
/// message), acking every `--multi-ack`, paced by [`Pace`]. Says `ready`
/// once consuming, so no message is published before every consumer is in.
async fn consumer(
    shared: Arc<Shared>,
    index: usize,
    ready: tokio::sync::mpsc::Sender<()>,
) -> Result<(), Error> {
    let options = &shared.options;
    let plan = &shared.plan;
    let connection = Connection::connect(plan.consumer_uri(index)).await?;
    let channel: Channel = connection.channel().await?;
    if options.prefetch > 0 {
        channel
            .basic_qos(BasicQos {
                prefetch_count: options.prefetch,
                ..Default::default()
            })
            .await?;
    }
    let no_ack = options.multi_ack == 0;
    let mut arguments = FieldTable::new();
    if plan.kind == QueueKind::Stream {
        let offset = options
            .stream_offset
            .as_ref()
            .unwrap_or(&StreamOffset::Next);
        arguments.insert("x-stream-offset", offset.field_value());
    }
    let mut consumer = channel
        .basic_consume(BasicConsume {
            queue: plan.consumer_queue(index).into(),
            no_ack,
            arguments,
            ..Default::default()
        })
        .await?;
    let _ = ready.send(()).await;
    let mut local = histogram();
    let mut merged_at = Instant::now();
    let mut unacked = 0u64;
    let mut pace = Pace::new(options.consumer_rate, options.consumer_latency);
    let throttled = options.consumer_rate > 0 || options.consumer_latency > 0;
    let mut drain_until = None;
    loop {
        if shared.stop.load(Ordering::Relaxed)
            && (throttled
                || Instant::now() >= *drain_until.get_or_insert_with(|| Instant::now() + DRAIN))
        {
            break;
        }
        let asked = Instant::now();
        let next = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
        let idle = asked.elapsed() > IDLE_RECV;
        let delivery = match next {
            Ok(Some(delivery)) => delivery?,
            Ok(None) => break,
            Err(_) if shared.stop.load(Ordering::Relaxed) => break,
            Err(_) => continue,
        };
        let sent_at = delivery.body().get(..8).map_or(0, |stamp| {
            u64::from_be_bytes(stamp.try_into().unwrap_or_default())
        });
        let _ = local.record(shared.nanos().saturating_sub(sent_at).max(1_000));
        shared.totals.received.fetch_add(1, Ordering::Relaxed);
        pace.work(idle).await;
        if !no_ack {
            unacked += 1;
            if unacked >= options.multi_ack {
                delivery.ack_multiple()?;
                unacked = 0;
            }
        }
        if local.len() >= 1_000 || merged_at.elapsed() >= MERGE_EVERY {
            merge(&shared, &mut local);
            merged_at = Instant::now();
        }
        pace.next().await;
    }
    merge(&shared, &mut local);
    connection.close().await
}

/// Moves a consumer's latencies into the shared histogram.
fn merge(shared: &Shared, local: &mut Histogram<u64>) {
    let mut latency = shared
        .latency
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let _ = latency.add(&*local);
    local.reset();
}

/// Nanoseconds as microseconds, the unit every figure is printed in.
fn micros(nanos: u64) -> f64 {
    nanos as f64 / 1_000.0
}

/// Any failure of a run: the client's, a file's, or the options'.
type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() {
    let options = Options::parse();
    if let Err(error) = run(options).await {
        eprintln!("amqp-perf: {error}");
        std::process::exit(1);
    }
}

/// The end of a run, for the summary.
struct Report {
    /// Seconds from the producers' start to the stop.
    elapsed: f64,
    totals: Counts,
    latency: Option<Percentiles>,
    samples: u64,
    peak_rss: u64,
}

/// The whole run: the plan, the declarations through the first node, the
/// load, the clean-up of a made-up queue (also after a failure), the
/// summary.
async fn run(mut options: Options) -> Result<(), Failure> {
    let plan = Plan::new(&options)?;
    for note in fit_options(&mut options, &plan.kind) {
        eprintln!("amqp-perf: {note}");
    }
    let csv = options
        .csv
        .as_deref()
        .map(|path| {
            CsvFile::create(path).map_err(|error| format!("--csv {}: {error}", path.display()))
        })
        .transpose()?;
    eprintln!("amqp-perf: {}", plan.describe());
    let setup = Connection::connect(&plan.uris[0]).await?;
    let channel = setup.channel().await?;
    declare(&channel, &plan, &options).await?;
    let shared = Arc::new(Shared {
        options: options.clone(),
        plan: plan.clone(),
        totals: Totals::default(),
        latency: Mutex::new(histogram()),
        epoch: Instant::now(),
        stop: AtomicBool::new(false),
    });
    let outcome = drive(&shared, csv).await;
    if plan.own_queue {
        for queue in &plan.queues {
            let delete = QueueDelete {
                queue: queue.as_str().into(),
                ..Default::default()
            };
            let deleted = channel.queue_delete(delete).await;
            // A failed run reports its own error, not the clean-up's.
            if outcome.is_ok() {
                deleted?;
            }
        }
    }
    let report = outcome?;
    summarize(&report, &options, &plan);
    setup.close().await?;
    Ok(())
}

/// Declares the exchange (when asked) and the queues, and binds them.
async fn declare(channel: &Channel, plan: &Plan, options: &Options) -> Result<(), Error> {
    if plan.declare_exchange {
        channel
            .exchange_declare(ExchangeDeclare {
                exchange: plan.exchange.as_str().into(),
                exchange_type: plan.exchange_type.name().into(),
                ..Default::default()
            })
            .await?;
    }
    let arguments = options
        .queue_args
        .as_ref()
        .map(QueueArguments::table)
        .unwrap_or_default();
    for queue in &plan.queues {
        channel
            .queue_declare(QueueDeclare {
                queue: queue.as_str().into(),
                durable: plan.kind.replicated(),
                auto_delete: plan.own_queue && !plan.kind.replicated(),
                arguments: arguments.clone(),
                ..Default::default()
            })
            .await?;
        if !plan.exchange.is_empty() {
            channel
                .queue_bind(QueueBind {
                    queue: queue.as_str().into(),
                    exchange: plan.exchange.as_str().into(),
                    routing_key: plan.binding_key(queue).into(),
                    ..Default::default()
                })
                .await?;
        }
    }
    Ok(())
}

/// Starts the consumers, then the producers; prints (and writes) a line a
/// second until the time is up or every message arrived; stops everyone.
async fn drive(shared: &Arc<Shared>, mut csv: Option<CsvFile>) -> Result<Report, Failure> {
    let options = &shared.options;
    let (ready, mut consumers_ready) = tokio::sync::mpsc::channel(options.consumers.max(1));
    let consumers: Vec<_> = (0..options.consumers)
        .map(|index| tokio::spawn(consumer(Arc::clone(shared), index, ready.clone())))
        .collect();
    for _ in 0..options.consumers {
        let _ = consumers_ready.recv().await;
    }
    let started = Instant::now();
    let producers: Vec<_> = (0..options.producers)
        .map(|index| tokio::spawn(producer(Arc::clone(shared), index)))
        .collect();

    let expected = options
        .messages
        .map(|per_producer| shared.plan.expected_deliveries(per_producer));
    let mut overall = histogram();
    let mut last = Counts::default();
    let mut idle = 0;
    let mut peak_rss = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let elapsed = started.elapsed();
        let now = shared.totals.snapshot();
        let latency = take_latency(shared, &mut overall);
        let rss = rss_kib();
        peak_rss = peak_rss.max(rss);
        let second = Second {
            at: elapsed.as_secs_f64(),
            counts: now.since(last),
            latency,
            rss_kib: rss,
        };
        println!("{}", second.line(options.confirm > 0));
        if let Some(csv) = csv.as_mut() {
            csv.write(&second)?;
        }
        let out_of_time = options
            .seconds
            .is_some_and(|limit| elapsed >= Duration::from_secs(limit));
        let producers_done = producers.iter().all(tokio::task::JoinHandle::is_finished);
        idle = if producers_done && now.received == last.received {
            idle + 1
        } else {
            0
        };
        last = now;
        let all_received = expected.is_some_and(|expected| now.received >= expected);
        if producers_done && expected.is_some() && !all_received && idle >= IDLE_SECONDS {
            eprintln!(
                "amqp-perf: nothing received for {IDLE_SECONDS} s after the producers finished; stopping with {} of {} deliveries",
                now.received,
                expected.unwrap_or_default()
            );
        }
        if out_of_time
            || (producers_done && (options.consumers == 0 || all_received || idle >= IDLE_SECONDS))
        {
            break;
        }
    }
    // The rates divide by the time to the stop, not to the end of the drain
    // (what arrives then was sent before the stop).
    let elapsed = started.elapsed().as_secs_f64();
    shared.stop.store(true, Ordering::Relaxed);
    for task in producers.into_iter().chain(consumers) {
        task.await.unwrap_or(Ok(()))?;
    }
    // What the consumers merged as they stopped.
    let _ = take_latency(shared, &mut overall);
    Ok(Report {
        elapsed,
        totals: shared.totals.snapshot(),
        latency: Percentiles::of(&overall),
        samples: overall.len(),
        peak_rss,
    })
}

/// The latencies merged since the last call: their percentiles, and added
/// to `overall`, the whole run's histogram.
fn take_latency(shared: &Shared, overall: &mut Histogram<u64>) -> Option<Percentiles> {
    let mut latency = shared
        .latency
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let percentiles = Percentiles::of(&latency);
    let _ = overall.add(&*latency);
    latency.reset();
    percentiles
}

/// Prints the summary lines, and the JSON with `--json`.
fn summarize(report: &Report, options: &Options, plan: &Plan) {
    let Report {
        elapsed,
        totals,
        latency,
        samples,
        peak_rss,
    } = report;
    let Counts {
        sent,
        confirmed,
        nacked,
        received,
    } = totals;
    println!(
        "summary: {elapsed:.1} s, sent {sent} ({:.0} msg/s), confirmed {confirmed}, nacked {nacked}, received {received} ({:.0} msg/s), peak rss {peak_rss} KiB",
        *sent as f64 / elapsed,
        *received as f64 / elapsed
    );
    match latency {
        Some(latency) => {
            let figures: Vec<String> = latency
                .named()
                .iter()
                .map(|(name, nanos)| format!("{name} {:.1}", micros(*nanos)))
                .collect();
            println!(
                "summary: latency us {} ({samples} messages)",
                figures.join(", ")
            );
        }
        None => println!("summary: latency: no message received"),
    }
    if options.json {
        let latency = latency.map(|latency| {
            let mut figures: serde_json::Map<String, serde_json::Value> = latency
                .named()
                .iter()
                .map(|(name, nanos)| ((*name).to_owned(), serde_json::json!(micros(*nanos))))
                .collect();
            figures.insert("samples".to_owned(), serde_json::json!(samples));
            figures
        });
        let summary = serde_json::json!({
            "seconds": elapsed,
            "sent": sent, "confirmed": confirmed, "nacked": nacked, "received": received,
            "sent_per_second": *sent as f64 / elapsed,
            "received_per_second": *received as f64 / elapsed,
            "latency_us": latency,
            "peak_rss_kib": peak_rss,
            "options": {
                "producers": options.producers, "consumers": options.consumers,
                "size": options.size, "confirm": options.confirm, "prefetch": options.prefetch,
                "multi_ack": options.multi_ack, "rate": options.rate,
                "consumer_rate": options.consumer_rate,
                "consumer_latency_us": options.consumer_latency,
                "nodes": plan.uris.iter().map(|uri| address(uri)).collect::<Vec<_>>(),
                "queues": plan.queues,
                "queue_type": plan.kind.name(),
                "queue_args": options.queue_args.as_ref().map(QueueArguments::json),
                "stream_offset": (plan.kind == QueueKind::Stream).then(|| {
                    options.stream_offset.as_ref().unwrap_or(&StreamOffset::Next).text()
                }),
                "exchange": plan.exchange, "exchange_type": plan.exchange_type.name(),
                "routing_key": plan.routing_key,
            },
        });
        println!("{summary}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(arguments: &[&str]) -> Options {
        let mut all = vec!["amqp-perf"];
        all.extend_from_slice(arguments);
        Options::try_parse_from(all).unwrap()
    }

    #[test]
    fn queue_args_are_typed() {
        let parsed =
            parse_queue_args("x-queue-type=quorum, x-max-length=1000,x-delta=-5,x-single-active-consumer=true,x-flag=false,x-empty=")
                .unwrap();
        assert_eq!(
            parsed.0,
            vec![
                (
                    "x-queue-type".to_owned(),
                    FieldValue::LongString("quorum".into())
                ),
                ("x-max-length".to_owned(), FieldValue::LongLongInt(1000)),
                ("x-delta".to_owned(), FieldValue::LongLongInt(-5)),
                (
                    "x-single-active-consumer".to_owned(),
                    FieldValue::Boolean(true)
                ),
                ("x-flag".to_owned(), FieldValue::Boolean(false)),
                ("x-empty".to_owned(), FieldValue::LongString("".into())),
            ]
        );
        let table = parsed.table();
        assert_eq!(table.len(), 6);
        assert_eq!(
            table.get("x-max-length"),
            Some(&FieldValue::LongLongInt(1000))
        );
        assert_eq!(QueueKind::of(Some(&parsed)), QueueKind::Quorum);
        // A value holding '=' keeps it; an integer too large is a string.
        let parsed = parse_queue_args("a=b=c,big=99999999999999999999").unwrap();
        assert_eq!(parsed.get("a"), Some(&FieldValue::LongString("b=c".into())));
        assert_eq!(
            parsed.get("big"),
            Some(&FieldValue::LongString("99999999999999999999".into()))
        );
    }

    #[test]
    fn queue_args_are_checked() {
        assert!(parse_queue_args("x-queue-type").is_err());
        assert!(parse_queue_args("=quorum").is_err());
        assert!(parse_queue_args("a=1,a=2").is_err());
        assert_eq!(parse_queue_args("").unwrap().0, vec![]);
        assert!(Options::try_parse_from(["amqp-perf", "--queue-args", "nonsense"]).is_err());
    }

    #[test]
    fn queue_kinds() {
        let kind = |text: &str| QueueKind::of(Some(&parse_queue_args(text).unwrap()));
        assert_eq!(QueueKind::of(None), QueueKind::Classic);
        assert_eq!(kind("x-max-length=5"), QueueKind::Classic);
        assert_eq!(kind("x-queue-type=classic"), QueueKind::Classic);
        assert_eq!(kind("x-queue-type=stream"), QueueKind::Stream);
        assert_eq!(
            kind("x-queue-type=mirror"),
            QueueKind::Other("mirror".into())
        );
        assert!(kind("x-queue-type=quorum").replicated());
        assert!(kind("x-queue-type=stream").replicated());
        assert!(!kind("x-queue-type=classic").replicated());
    }

    #[test]
    fn stream_offsets() {
        assert_eq!(parse_stream_offset("first"), Ok(StreamOffset::First));
        assert_eq!(parse_stream_offset("last"), Ok(StreamOffset::Last));
        assert_eq!(parse_stream_offset("next"), Ok(StreamOffset::Next));
        assert_eq!(parse_stream_offset("42"), Ok(StreamOffset::Offset(42)));
        assert_eq!(
            parse_stream_offset("10m"),
            Ok(StreamOffset::Interval("10m".into()))
        );
        assert!(parse_stream_offset("m").is_err());
        assert!(parse_stream_offset("10x").is_err());
        assert!(parse_stream_offset("beginning").is_err());
        assert_eq!(
            StreamOffset::Offset(7).field_value(),
            FieldValue::LongLongInt(7)
        );
        assert_eq!(
            StreamOffset::First.field_value(),
            FieldValue::LongString("first".into())
        );
    }

    #[test]
    fn queue_pattern_expands() {
        assert_eq!(
            expand_queue_pattern("perf-%d", 1, 3).unwrap(),
            ["perf-1", "perf-2", "perf-3"]
        );
        assert_eq!(
            expand_queue_pattern("q-%03d", 9, 10).unwrap(),
            ["q-009", "q-010"]
        );
        assert_eq!(expand_queue_pattern("%3d|", 7, 7).unwrap(), ["  7|"]);
        assert_eq!(
            expand_queue_pattern("100%%-%d-%d", 5, 5).unwrap(),
            ["100%-5-5"]
        );
        assert_eq!(expand_queue_pattern("p%d", 0, 0).unwrap(), ["p0"]);
    }

    #[test]
    fn queue_pattern_is_checked() {
        assert!(expand_queue_pattern("perf", 1, 2).is_err());
        assert!(expand_queue_pattern("perf-%s", 1, 2).is_err());
        assert!(expand_queue_pattern("perf-%", 1, 2).is_err());
        assert!(expand_queue_pattern("perf-%d", 3, 2).is_err());
        assert!(expand_queue_pattern("perf-%d", 0, MAX_QUEUES).is_err());
        assert_eq!(
            expand_queue_pattern("perf-%d", 1, MAX_QUEUES)
                .unwrap()
                .len(),
            10_000
        );
        // The range needs the pattern; a queue and a pattern exclude each other.
        assert!(Options::try_parse_from(["amqp-perf", "--queue-pattern-to", "3"]).is_err());
        assert!(
            Options::try_parse_from(["amqp-perf", "--queue", "q", "--queue-pattern", "p-%d"])
                .is_err()
        );
    }

    #[test]
    fn queue_pattern_spreads_producers_and_consumers() {
        let plan = Plan::new(&options(&[
            "--queue-pattern",
            "perf-%d",
            "--queue-pattern-from",
            "1",
            "--queue-pattern-to",
            "3",
            "-x",
            "4",
            "-y",
            "3",
        ]))
        .unwrap();
        assert!(!plan.own_queue);
        assert_eq!(plan.queues, ["perf-1", "perf-2", "perf-3"]);
        let keys: Vec<&str> = (0..4).map(|index| plan.routing_key(index)).collect();
        assert_eq!(keys, ["perf-1", "perf-2", "perf-3", "perf-1"]);
        let queues: Vec<&str> = (0..3).map(|index| plan.consumer_queue(index)).collect();
        assert_eq!(queues, ["perf-1", "perf-2", "perf-3"]);
        assert_eq!(plan.binding_key("perf-2"), "perf-2");
        assert_eq!(plan.expected_deliveries(10), 40);
    }

    #[test]
    fn uris_split() {
        let list = parse_uris(
            " amqp://guest:guest@127.0.0.1:5681/%2f,amqp://127.0.0.1:5682, ,amqp://h:5683/vh,",
        )
        .unwrap();
        assert_eq!(
            list.0,
            [
                "amqp://guest:guest@127.0.0.1:5681/%2f",
                "amqp://127.0.0.1:5682",
                "amqp://h:5683/vh"
            ]
        );
        assert!(parse_uris(" , ").is_err());
        assert!(parse_uris("amqp://a:1,http://b:2").is_err());
        assert_eq!(
            address("amqp://guest:secret@127.0.0.1:5681/%2f"),
            "127.0.0.1:5681"
        );
    }

    #[test]
    fn uris_spread_round_robin() {
        let plan = Plan::new(&options(&[
            "--uri",
            "amqp://127.0.0.1:5672",
            "--uris",
            "amqp://127.0.0.1:5681,amqp://127.0.0.1:5682,amqp://127.0.0.1:5683",
            "-x",
            "2",
            "-y",
            "2",
        ]))
        .unwrap();
        let consumers: Vec<&str> = (0..2).map(|index| plan.consumer_uri(index)).collect();
        let producers: Vec<&str> = (0..2).map(|index| plan.producer_uri(index)).collect();
        assert_eq!(
            consumers,
            ["amqp://127.0.0.1:5681", "amqp://127.0.0.1:5682"]
        );
        assert_eq!(
            producers,
            ["amqp://127.0.0.1:5683", "amqp://127.0.0.1:5681"]
        );
        // Without --uris, --uri is the one node.
        let plan = Plan::new(&options(&["--uri", "amqp://127.0.0.1:5672"])).unwrap();
        assert_eq!(plan.producer_uri(3), "amqp://127.0.0.1:5672");
        assert_eq!(plan.consumer_uri(0), "amqp://127.0.0.1:5672");
    }

    #[test]
    fn exchanges_and_routing() {
        let plan = Plan::new(&options(&[])).unwrap();
        assert_eq!(plan.exchange, "amq.direct");
        assert!(!plan.declare_exchange);
        assert!(plan.own_queue);
        let plan = Plan::new(&options(&["--exchange-type", "fanout"])).unwrap();
        assert_eq!(plan.exchange, "amq.fanout");
        assert!(!plan.declare_exchange);
        let plan = Plan::new(&options(&["-e", "perf", "--exchange-type", "topic"])).unwrap();
        assert!(plan.declare_exchange);
        assert_eq!(plan.exchange_type, ExchangeType::Topic);
        assert!(Plan::new(&options(&["-e", "amq.fanout", "--exchange-type", "topic"])).is_err());
        // Fanout reaches every queue: one delivery per queue with a consumer.
        let fanout = |consumers: &str| {
            Plan::new(&options(&[
                "--exchange-type",
                "fanout",
                "--queue-pattern",
                "f-%d",
                "--queue-pattern-to",
                "3",
                "-x",
                "2",
                "-y",
                consumers,
            ]))
            .unwrap()
        };
        assert_eq!(fanout("3").expected_deliveries(10), 60);
        assert_eq!(fanout("2").expected_deliveries(10), 40);
        assert_eq!(fanout("6").expected_deliveries(10), 60);
        // A shared routing key binds every queue with it.
        let shared = Plan::new(&options(&[
            "-k",
            "all",
            "--queue-pattern",
            "d-%d",
            "--queue-pattern-to",
            "2",
            "-y",
            "2",
        ]))
        .unwrap();
        assert_eq!(shared.routing_key(1), "all");
        assert_eq!(shared.binding_key("d-2"), "all");
        assert_eq!(shared.expected_deliveries(5), 10);
        // The default exchange routes by queue name.
        let default = Plan::new(&options(&["-e", "", "-u", "q", "-k", "other"])).unwrap();
        assert_eq!(default.expected_deliveries(5), 0);
    }

    #[test]
    fn every_stream_consumer_reads_everything() {
        let plan = Plan::new(&options(&[
            "--queue-args",
            "x-queue-type=stream",
            "-y",
            "3",
        ]))
        .unwrap();
        assert_eq!(plan.expected_deliveries(10), 30);
        let plan = Plan::new(&options(&[
            "--queue-args",
            "x-queue-type=quorum",
            "-y",
            "3",
        ]))
        .unwrap();
        assert_eq!(plan.expected_deliveries(10), 10);
    }

    #[test]
    fn options_fit_the_queue_type() {
        let mut stream = options(&["--queue-args", "x-queue-type=stream", "-A", "0"]);
        let notes = fit_options(&mut stream, &QueueKind::Stream);
        assert_eq!(notes.len(), 2);
        assert_eq!((stream.prefetch, stream.multi_ack), (STREAM_PREFETCH, 1));
        let mut classic = options(&["-q", "10", "-A", "100", "--stream-offset", "first"]);
        let notes = fit_options(&mut classic, &QueueKind::Classic);
        assert_eq!(notes.len(), 2);
        assert_eq!(classic.multi_ack, 10);
        let mut plain = options(&[]);
        assert!(fit_options(&mut plain, &QueueKind::Classic).is_empty());
    }

    #[test]
    fn csv_rows_match_the_header() {
        let second = Second {
            at: 2.0004,
            counts: Counts {
                sent: 1000,
                confirmed: 990,
                nacked: 1,
                received: 995,
            },
            latency: Some(Percentiles {
                min: 1_000,
                p50: 150_500,
                p75: 200_000,
                p95: 900_000,
                p99: 1_500_000,
                max: 12_345_678,
            }),
            rss_kib: 5_880,
        };
        assert_eq!(
            second.csv_row(),
            "2.000,1000,990,1,995,1.0,150.5,200.0,900.0,1500.0,12345.7,5880"
        );
        let columns = CSV_HEADER.split(',').count();
        assert_eq!(columns, 12);
        assert_eq!(second.csv_row().split(',').count(), columns);
        let quiet = Second {
            latency: None,
            counts: Counts::default(),
            ..second
        };
        assert_eq!(quiet.csv_row(), "2.000,0,0,0,0,,,,,,,5880");
        assert_eq!(quiet.csv_row().split(',').count(), columns);
    }

    #[test]
    fn csv_file_has_a_header_and_a_row_a_second() {
        let path = std::env::temp_dir().join(format!("amqp-perf-test-{}.csv", std::process::id()));
        let mut csv = CsvFile::create(&path).unwrap();
        let second = Second {
            at: 1.0,
            counts: Counts::default(),
            latency: None,
            rss_kib: 1,
        };
        csv.write(&second).unwrap();
        csv.write(&Second { at: 2.0, ..second }).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            written,
            format!("{CSV_HEADER}\n1.000,0,0,0,0,,,,,,,1\n2.000,0,0,0,0,,,,,,,1\n")
        );
    }

    #[test]
    fn percentiles_of_a_histogram() {
        let mut recorded = histogram();
        assert_eq!(Percentiles::of(&recorded), None);
        for micros in 1..=100u64 {
            recorded.record(micros * 1_000).unwrap();
        }
        let figures = Percentiles::of(&recorded).unwrap();
        // Values below 1 ms share buckets 512 ns wide (1 us lowest bound, 3 digits).
        assert!(figures.min <= 1_000 && figures.min + 512 >= 1_000);
        let near = |figure: u64, nanos: u64| figure.abs_diff(nanos) < 512;
        assert!(near(figures.p50, 50_000), "{figures:?}");
        assert!(near(figures.p75, 75_000), "{figures:?}");
        assert!(near(figures.p95, 95_000), "{figures:?}");
        assert!(near(figures.p99, 99_000), "{figures:?}");
        assert!(near(figures.max, 100_000), "{figures:?}");
    }
}
