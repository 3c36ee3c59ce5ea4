//! One simulation: the real [`Connection`] against the [`Broker`], driven
//! step by step on a simulated clock, with the oracle consulted after
//! every step.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use amqp_proto::codec::{
    BasicProperties, DecodeLimits, FieldTable, FieldValue, Frame, FrameDecoder,
};
use amqp_proto::spec::{self, constants::ReplyCode, Method};
use amqp_proto::{Config, Connection, ConnectionError, Event, SaslMechanism};
use bytes::Bytes;

use crate::app::{self, App};
use crate::broker::{Broker, Injection};
use crate::driver;
use crate::hash::TraceHash;
use crate::oracle::{Oracle, Violation};
use crate::rng::Rng;
use crate::step::{Reaction, Step};

/// Random streams of a run besides the steps (see [`Rng::fork`]).
const STREAM_BROKER: u64 = 2;
const STREAM_CONFIG: u64 = 3;
const STREAM_SPLIT: u64 = 4;

/// How a run is carried out, beyond its steps.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Mode {
    /// Feed each network delivery to the client in random smaller pieces,
    /// drawn from this salt: the logical interleaving stays the same, so
    /// the trace must not change.
    pub(crate) resplit: Option<u64>,
    /// Keep a readable trace.
    pub(crate) trace: bool,
    /// Invariants to note in the trace and go on past (known bugs that
    /// would hide others).
    pub(crate) ignore: &'static [&'static str],
}

/// What a finished run looked like.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) hash: u64,
    pub(crate) events: usize,
    pub(crate) trace: Vec<String>,
    /// The failure, with the index of the step after which it was seen
    /// (the number of steps for the final checks).
    pub(crate) failure: Option<(usize, Violation)>,
    /// How the connection ended.
    pub(crate) ending: String,
}

struct Sim {
    connection: Connection,
    broker: Broker,
    oracle: Oracle,
    app: App,
    start: Instant,
    now: Instant,
    split: Option<Rng>,
    hash: TraceHash,
    trace: Option<Vec<String>>,
    /// Decodes the server's stream for the trace (trace mode only).
    trace_decoder: Option<FrameDecoder>,
    events: usize,
    /// Malformed bytes reached the client: its error closes are expected.
    tainted: bool,
    /// Injections already looked at, by index into the broker's log.
    injections_seen: usize,
    /// Injections whose reaction is owed, with the number of client closes
    /// the broker had seen and the bytes the client had written when they
    /// arrived.
    owed: Vec<(Injection, usize, u64)>,
    /// Bytes the client wrote so far.
    written: u64,
    closes_checked: usize,
    close_called: Option<Instant>,
    /// When `Event::Closed` was seen.
    closed_at: Option<Instant>,
    /// Bytes the application queued and the bytes fed in, this step.
    app_queued: usize,
    fed: usize,
    transport_reported: bool,
    config: Config,
}

/// Runs `steps` for `seed`.
pub(crate) fn run(seed: u64, steps: &[Step], mode: Mode) -> Run {
    let start = Instant::now();
    let mut sim = Sim::new(seed, start, mode);
    let mut failure = None;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if let Err(violation) = sim.settle() {
            return Some((0, violation));
        }
        for (index, step) in steps.iter().enumerate() {
            sim.note(|| format!("#{index} {step:?}"));
            sim.hash.number(index as u64);
            let mut result = sim.execute(step).and_then(|()| sim.settle());
            // An ignored invariant is noted and the run goes on; settling
            // again drains what the step left.
            for _ in 0..8 {
                match result {
                    Err(violation) if mode.ignore.contains(&violation.invariant) => {
                        sim.note(|| format!("  ignored: {violation:?}"));
                        result = sim.settle();
                    }
                    _ => break,
                }
            }
            if let Err(violation) = result {
                return Some((index, violation));
            }
        }
        sim.note(|| "# final: drain, close, wait".to_owned());
        sim.finish()
            .err()
            .filter(|violation| !mode.ignore.contains(&violation.invariant))
            .map(|violation| (steps.len(), violation))
    }));
    match outcome {
        Ok(found) => failure = found,
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failure = failure.or(Some((usize::MAX, Violation::new("panic", text))));
        }
    }
    let ending = sim
        .oracle
        .closed()
        .map_or_else(|| "not closed".to_owned(), ToString::to_string);
    Run {
        hash: sim.hash.value(),
        events: sim.events,
        trace: sim.trace.unwrap_or_default(),
        failure,
        ending,
    }
}

impl Sim {
    fn new(seed: u64, start: Instant, mode: Mode) -> Self {
        let config = client_config(&mut Rng::fork(seed, STREAM_CONFIG));
        let broker = Broker::new(Rng::fork(seed, STREAM_BROKER), start);
        Self {
            connection: Connection::new(config.clone(), start),
            broker,
            oracle: Oracle::default(),
            app: App::new(),
            start,
            now: start,
            split: mode
                .resplit
                .map(|salt| Rng::fork(seed ^ salt, STREAM_SPLIT)),
            hash: TraceHash::default(),
            trace: mode.trace.then(Vec::new),
            trace_decoder: mode.trace.then(|| {
                FrameDecoder::new(DecodeLimits {
                    max_frame_size: u32::MAX,
                    max_table_depth: 1_000,
                })
            }),
            events: 0,
            tainted: false,
            injections_seen: 0,
            owed: Vec::new(),
            written: 0,
            closes_checked: 0,
            close_called: None,
            closed_at: None,
            app_queued: 0,
            fed: 0,
            transport_reported: false,
            config,
        }
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            trace.push(line());
        }
    }

    fn elapsed_ms(&self) -> u128 {
        (self.now - self.start).as_millis()
    }

    /// Runs one step.
    fn execute(&mut self, step: &Step) -> Result<(), Violation> {
        match step {
            Step::Deliver { permille } => {
                let pending = self.broker.pending();
                let share = pending * usize::from(*permille) / 1000;
                self.deliver(share.max(1))?;
            }
            Step::DeliverAll => self.deliver(usize::MAX)?,
            Step::Advance { ms } => self.advance(Duration::from_millis(u64::from(*ms)))?,
            Step::Cut => {
                self.broker.cut();
                self.report_transport_closed("cut");
                self.settle()?;
                if !self.connection.is_closed() || self.oracle.closed().is_none() {
                    return Err(Violation::new(
                        "not-closed-promptly",
                        "transport cut, connection not closed",
                    ));
                }
            }
            Step::Stall => self.broker.stall(),
            Step::ServerCloseChannel { ch } => self.broker.fault_close_channel(*ch),
            Step::ServerCloseConnection => self.broker.fault_close_connection(),
            Step::ServerCancel { consumer } => self.broker.fault_cancel(*consumer),
            Step::Flow { ch, active } => self.broker.fault_flow(*ch, *active),
            Step::Blocked { on } => self.broker.fault_blocked(*on),
            Step::Inject(malformed) => self.broker.inject(*malformed),
            command => {
                let before = self.connection.queued_output();
                let result = self.command(command);
                self.app_queued += self.connection.queued_output().saturating_sub(before);
                result?;
            }
        }
        Ok(())
    }

    /// An application command. Refusals (`UsageError`) are part of the
    /// trace, not failures: the generator does not know the state.
    fn command(&mut self, step: &Step) -> Result<(), Violation> {
        let outcome: Result<String, String> = match *step {
            Step::Open => match self.connection.open_channel() {
                Ok(id) => {
                    self.app.channels.push(id);
                    self.oracle.opened_channel(id)?;
                    Ok(format!("channel {id}"))
                }
                Err(error) => Err(error.to_string()),
            },
            Step::Close { ch } => match self.app.channel(ch) {
                Some(id) => match self.connection.channel(id) {
                    Ok(channel) => channel
                        .close(ReplyCode::REPLY_SUCCESS, "done")
                        .map(|()| format!("closing {id}"))
                        .map_err(|e| e.to_string()),
                    Err(error) => Err(error.to_string()),
                },
                None => Err("no channel".into()),
            },
            Step::DeclareQueue { ch, queue, passive } => {
                let name = if queue % 5 == 4 {
                    String::new()
                } else {
                    format!("q{}", queue % 5)
                };
                self.request(
                    ch,
                    spec::QueueDeclare {
                        queue: name.as_str().into(),
                        passive,
                        ..Default::default()
                    },
                    None,
                )
            }
            Step::DeleteQueue { ch, queue } => {
                let queue = self.app.queue(queue);
                self.request(
                    ch,
                    spec::QueueDelete {
                        queue: queue.as_str().into(),
                        ..Default::default()
                    },
                    None,
                )
            }
            Step::PurgeQueue { ch, queue } => {
                let queue = self.app.queue(queue);
                self.request(
                    ch,
                    spec::QueuePurge {
                        queue: queue.as_str().into(),
                        ..Default::default()
                    },
                    None,
                )
            }
            Step::BindQueue {
                ch,
                queue,
                exchange,
                key,
            }
            | Step::UnbindQueue {
                ch,
                queue,
                exchange,
                key,
            } => {
                let queue = self.app.queue(queue);
                // Never the default exchange: binding to it is refused (403).
                let exchange = app::bindable_exchange(exchange);
                let key = app::key(key);
                if matches!(step, Step::BindQueue { .. }) {
                    self.request(
                        ch,
                        spec::QueueBind {
                            queue: queue.as_str().into(),
                            exchange: exchange.into(),
                            routing_key: key.into(),
                            ..Default::default()
                        },
                        None,
                    )
                } else {
                    self.request(
                        ch,
                        spec::QueueUnbind {
                            queue: queue.as_str().into(),
                            exchange: exchange.into(),
                            routing_key: key.into(),
                            ..Default::default()
                        },
                        None,
                    )
                }
            }
            Step::DeclareExchange { ch, exchange, kind } => self.request(
                ch,
                spec::ExchangeDeclare {
                    exchange: app::own_exchange(exchange).into(),
                    exchange_type: app::kind(kind).into(),
                    ..Default::default()
                },
                None,
            ),
            Step::DeleteExchange { ch, exchange } => self.request(
                ch,
                spec::ExchangeDelete {
                    exchange: app::own_exchange(exchange).into(),
                    ..Default::default()
                },
                None,
            ),
            Step::Qos { ch, prefetch } => self.request(
                ch,
                spec::BasicQos {
                    prefetch_count: u16::from(prefetch),
                    ..Default::default()
                },
                None,
            ),
            Step::Consume {
                ch,
                queue,
                tag,
                no_ack,
            } => {
                let queue = self.app.queue(queue);
                let tag = if tag == 0 {
                    String::new()
                } else {
                    format!("c{tag}")
                };
                self.request(
                    ch,
                    spec::BasicConsume {
                        queue: queue.as_str().into(),
                        consumer_tag: tag.as_str().into(),
                        no_ack,
                        ..Default::default()
                    },
                    Some(no_ack),
                )
            }
            Step::Cancel { consumer } => {
                match app::pick_from(&self.app.consumers, consumer).cloned() {
                    Some((id, tag, _)) => {
                        let pick = self.app.channels.iter().position(|c| *c == id).unwrap_or(0);
                        let pick = u8::try_from(pick).unwrap_or(0);
                        self.request(
                            pick,
                            spec::BasicCancel {
                                consumer_tag: tag.as_str().into(),
                                nowait: false,
                            },
                            None,
                        )
                    }
                    None => Err("no consumer".into()),
                }
            }
            Step::SelectConfirms { ch } => {
                self.request(ch, spec::ConfirmSelect { nowait: false }, None)
            }
            Step::Get { ch, queue, no_ack } => {
                let queue = self.app.queue(queue);
                self.request(
                    ch,
                    spec::BasicGet {
                        queue: queue.as_str().into(),
                        no_ack,
                        ..Default::default()
                    },
                    Some(no_ack),
                )
            }
            Step::Publish {
                ch,
                exchange,
                key,
                mandatory,
                size,
                depth,
            } => self.publish(ch, exchange, key, mandatory, size, depth)?,
            Step::Ack { delivery, multiple } => {
                self.settle_delivery(delivery, multiple, |c, tag| c.ack(tag, multiple))
            }
            Step::Nack {
                delivery,
                multiple,
                requeue,
            } => self.settle_delivery(delivery, multiple, |c, tag| c.nack(tag, multiple, requeue)),
            Step::Reject { delivery, requeue } => {
                self.settle_delivery(delivery, false, |c, tag| c.reject(tag, requeue))
            }
            Step::UpdateSecret => match self.connection.update_secret("new-token", "expiring") {
                Ok(request) => {
                    self.oracle
                        .requested(0, "connection.update-secret", request)?;
                    Ok(format!("request {}", request.get()))
                }
                Err(error) => Err(error.to_string()),
            },
            Step::CloseConnection => {
                match driver::close(&mut self.connection, 200, "bye", self.now) {
                    Ok(()) => {
                        self.close_called = Some(self.now);
                        Ok("closing".into())
                    }
                    Err(error) => Err(error.to_string()),
                }
            }
            _ => Ok(String::new()),
        };
        self.note(|| match outcome {
            Ok(text) => format!("  ok {text}"),
            Err(text) => format!("  refused: {text}"),
        });
        Ok(())
    }

    /// Sends a request on the channel at index `pick`.
    fn request(
        &mut self,
        pick: u8,
        method: impl Into<Method>,
        no_ack: Option<bool>,
    ) -> Result<String, String> {
        let method = method.into();
        let name = method.name();
        let id = self.app.channel(pick).ok_or("no channel")?;
        let mut channel = self.connection.channel(id).map_err(|e| e.to_string())?;
        match channel.request(method) {
            Ok(Some(request)) => {
                if let Err(violation) = self.oracle.requested(id, name, request) {
                    return Err(format!("VIOLATION {violation:?}"));
                }
                if let Some(no_ack) = no_ack {
                    self.app.pending_no_ack.insert(request.get(), no_ack);
                }
                Ok(format!("{name} request {}", request.get()))
            }
            Ok(None) => Ok(format!("{name} (no reply)")),
            Err(error) => Err(error.to_string()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn publish(
        &mut self,
        pick: u8,
        exchange: u8,
        key: u8,
        mandatory: bool,
        size: u32,
        depth: u8,
    ) -> Result<Result<String, String>, Violation> {
        let Some(id) = self.app.channel(pick) else {
            return Ok(Err("no channel".into()));
        };
        let exchange = app::exchange(exchange);
        let key = app::key(key);
        let publish = spec::BasicPublish {
            exchange: exchange.into(),
            routing_key: key.into(),
            mandatory,
            ..Default::default()
        };
        let mut properties = BasicProperties::default().content_type("application/octet-stream");
        if depth > 0 {
            properties = properties.headers(nested(depth));
        }
        let body: Bytes = (0..size)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        let result = match self.connection.channel(id) {
            Ok(mut channel) => channel.publish(&publish, &properties, body),
            Err(error) => return Ok(Err(error.to_string())),
        };
        match result {
            Ok(Some(sequence)) => {
                self.oracle.published(id, sequence)?;
                Ok(Ok(format!("published, sequence {sequence}")))
            }
            Ok(None) => Ok(Ok("published".into())),
            Err(error) => Ok(Err(error.to_string())),
        }
    }

    fn settle_delivery(
        &mut self,
        pick: u8,
        multiple: bool,
        send: impl FnOnce(&mut amqp_proto::ChannelRef<'_>, u64) -> Result<(), amqp_proto::UsageError>,
    ) -> Result<String, String> {
        let (id, tag) = *app::pick_from(&self.app.deliveries, pick).ok_or("no delivery")?;
        let mut channel = self.connection.channel(id).map_err(|e| e.to_string())?;
        send(&mut channel, tag).map_err(|e| e.to_string())?;
        self.app.settled(id, tag, multiple);
        Ok(format!("settled {tag} on {id}"))
    }

    /// The network hands the client up to `n` bytes of what the broker
    /// wrote, then the end of stream if the broker hung up.
    ///
    /// The bytes go in one piece (or random pieces when re-splitting), and
    /// are also cut where injected bytes begin and end: the client's state
    /// before them decides what it owes them, and its reaction is judged
    /// right after them, as an adapter that writes after every read would
    /// see it. Both runs of the split-invariance check cut there.
    fn deliver(&mut self, n: usize) -> Result<(), Violation> {
        if self.broker.is_stalled() {
            return Ok(());
        }
        let offset = self.broker.delivered_offset();
        let chunk = self.broker.take(n);
        if !chunk.is_empty() {
            self.note(|| format!("  rx {} bytes", chunk.len()));
            self.trace_frames(&chunk);
            self.hash.number(chunk.len() as u64);
            let mut pieces = self.pieces(chunk.len());
            let stream_end = offset + chunk.len() as u64;
            for injection in &self.broker.log.injections {
                for at in [injection.start, injection.end] {
                    if at > offset && at < stream_end {
                        pieces.push(usize::try_from(at - offset).unwrap_or(0));
                    }
                }
            }
            pieces.sort_unstable();
            pieces.dedup();
            let mut at = 0;
            // The whole chunk goes in even after a violation, so that a run
            // told to ignore it goes on from a consistent state.
            let mut first = Ok(());
            for end in pieces {
                let piece = chunk.slice(at..end);
                let before = self.before_piece(offset + at as u64, offset + end as u64);
                first = first.and(before);
                driver::input(&mut self.connection, &piece, self.now);
                self.fed += piece.len();
                if !self.owed.is_empty() {
                    let settled = self.settle();
                    first = first.and(settled);
                }
                at = end;
            }
            first?;
        }
        if self.broker.at_end_of_stream() {
            self.report_transport_closed("end of stream");
        }
        Ok(())
    }

    /// Names the server frames completed by `bytes`, for the trace.
    fn trace_frames(&mut self, bytes: &[u8]) {
        let (Some(decoder), Some(trace)) = (&mut self.trace_decoder, &mut self.trace) else {
            return;
        };
        decoder.extend_from_slice(bytes);
        loop {
            match decoder.decode() {
                Ok(Some(frame)) => trace.push(match frame {
                    Frame::Method { channel, method } => {
                        format!("    frame {channel}: {}", short_method(&method))
                    }
                    Frame::Header { channel, header } => {
                        format!("    frame {channel}: header, body {}", header.body_size)
                    }
                    Frame::Body { channel, payload } => {
                        format!("    frame {channel}: body {}", payload.len())
                    }
                    Frame::Heartbeat => "    frame 0: heartbeat".to_owned(),
                }),
                Ok(None) => break,
                Err(error) => {
                    trace.push(format!("    (undecodable from here: {error})"));
                    self.trace_decoder = None;
                    break;
                }
            }
        }
    }

    /// Where to cut a delivery of `len` bytes: once at the end, or at a few
    /// random points when re-splitting.
    fn pieces(&mut self, len: usize) -> Vec<usize> {
        let Some(rng) = &mut self.split else {
            return vec![len];
        };
        let mut cuts: Vec<usize> = (0..rng.below(4))
            .map(|_| usize::try_from(rng.range(1, len as u64)).unwrap_or(len))
            .collect();
        // Small pieces matter most at the very start (the protocol header).
        if len > 1 && rng.chance(0.3) {
            cuts.push(usize::try_from(rng.range(1, 8.min(len as u64))).unwrap_or(1));
        }
        cuts.push(len);
        cuts.sort_unstable();
        cuts.dedup();
        cuts
    }

    /// Before bytes `[start, end)` of the stream reach the client: notes
    /// which malformed bytes they carry, and which reactions become owed.
    fn before_piece(&mut self, start: u64, end: u64) -> Result<(), Violation> {
        while let Some(injection) = self
            .broker
            .log
            .injections
            .get(self.injections_seen)
            .copied()
        {
            if injection.start >= end {
                break;
            }
            if !self.tainted {
                // Whatever the client did before the first malformed byte
                // is judged as a reaction to a correct broker.
                self.settle()?;
                self.tainted = true;
            }
            if injection.end > end {
                // The fault is completed by a later piece; look again then.
                break;
            }
            self.injections_seen += 1;
            if injection.end <= start {
                continue;
            }
            let usable = (self.connection.is_open() || !injection.malformed.needs_open())
                && injection
                    .channel
                    .map_or(true, |id| self.connection.channel(id).is_ok());
            if usable {
                self.owed
                    .push((injection, self.broker.log.client_closes.len(), self.written));
            }
        }
        Ok(())
    }

    fn report_transport_closed(&mut self, reason: &str) {
        if !self.transport_reported {
            self.transport_reported = true;
            self.note(|| format!("  transport closed: {reason}"));
            driver::transport_closed(&mut self.connection, reason);
        }
    }

    /// Advances the clock, firing client and broker timers at their times;
    /// the network delivers everything at each broker timer (a live broker's
    /// heartbeats reach the client), as `support::Peer::advance` does for
    /// the client's deadlines.
    fn advance(&mut self, by: Duration) -> Result<(), Violation> {
        let target = self.now + by;
        for _ in 0..100_000 {
            let client = self.connection.poll_timeout();
            let broker = self.broker.next_deadline();
            let next = match (client, broker) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(next) => next,
                    None => break,
                },
            };
            if next > target {
                break;
            }
            self.now = self.now.max(next);
            if broker.is_some_and(|at| at <= self.now) {
                self.broker.on_timer(self.now);
                self.deliver(usize::MAX)?;
            }
            if client.is_some_and(|at| at <= self.now) {
                driver::timeout(&mut self.connection, self.now);
            }
            self.settle()?;
            if self.connection.poll_timeout() == client && client.is_some_and(|at| at <= self.now) {
                return Err(Violation::new(
                    "timer-stuck",
                    format!(
                        "handle_timeout at {} ms left the deadline where it was",
                        self.elapsed_ms()
                    ),
                ));
            }
        }
        self.now = self.now.max(target);
        Ok(())
    }

    /// Moves the client's output to the broker and its events to the
    /// oracle; then checks what must hold after every step.
    fn settle(&mut self) -> Result<(), Violation> {
        let queued = self.connection.queued_output();
        let own = queued.saturating_sub(self.app_queued);
        // The core writes on its own only in answer to input (close-ok,
        // flow-ok, cancel-ok), for heartbeats and for the handshake (start-ok
        // with the client properties is the largest): never more than it read
        // plus a constant.
        if own > self.fed + 1024 {
            return Err(Violation::new(
                "unbounded-output",
                format!("{own} bytes queued by the core after reading {}", self.fed),
            ));
        }
        self.app_queued = 0;
        self.fed = 0;
        while let Some(chunk) = driver::transmit(&mut self.connection, self.now) {
            self.hash.bytes(&chunk);
            self.written += chunk.len() as u64;
            self.broker.receive(&chunk, self.now);
        }
        // What the client owed malformed input is checked first: the
        // events that follow a missed fault are its consequences.
        self.check_reactions()?;
        let mut seen = 0;
        while let Some(event) = self.connection.poll_event() {
            seen += 1;
            self.events += 1;
            let _ = write!(self.hash, "{event:?}");
            self.note(|| format!("  event {}", short(&event)));
            self.oracle.event(&event, &self.broker.log)?;
            self.app.observe(&event);
            if let Event::Closed(error) = &event {
                self.closed_at = Some(self.now);
                self.check_closed(error)?;
            }
        }
        if seen > 0 {
            self.hash.number(self.elapsed_ms() as u64);
        }
        if let Some(fault) = self.broker.log.client_fault.take() {
            return Err(Violation::new("client-protocol", fault));
        }
        Ok(())
    }

    fn check_closed(&mut self, error: &ConnectionError) -> Result<(), Violation> {
        match error {
            ConnectionError::ProtocolViolation { error } if !self.tainted => Err(Violation::new(
                "false-positive-violation",
                format!("the broker behaved, the client reported: {error}"),
            )),
            ConnectionError::CloseTimeout => {
                let called = self.close_called.unwrap_or(self.start);
                let waited = self.now - called;
                if waited < self.config.close_timeout {
                    return Err(Violation::new(
                        "close-timeout-early",
                        format!(
                            "close timed out {} ms after close() (close timeout {:?})",
                            waited.as_millis(),
                            self.config.close_timeout
                        ),
                    ));
                }
                Ok(())
            }
            ConnectionError::HeartbeatTimeout if !self.broker.is_stalled() => Err(Violation::new(
                "false-heartbeat-timeout",
                "heartbeat timeout although the broker was live",
            )),
            _ => Ok(()),
        }
    }

    /// The client's closes against what it owed.
    fn check_reactions(&mut self) -> Result<(), Violation> {
        let closes = self.broker.log.client_closes.clone();
        let unchecked = self.closes_checked;
        // Each close is judged once, also when the invariant is ignored.
        self.closes_checked = closes.len();
        for code in closes.iter().skip(unchecked) {
            if *code != 200 && !self.tainted {
                return Err(Violation::new(
                    "false-positive-close",
                    format!(
                        "the broker behaved, the client closed with {}",
                        ReplyCode(*code)
                    ),
                ));
            }
        }
        self.closes_checked = closes.len();
        // Only the first fault counts: the connection is over after it.
        let owed = std::mem::take(&mut self.owed);
        if let Some((injection, before, written)) = owed.first().copied() {
            let reaction = injection.malformed.expected();
            let sent = closes.get(before).copied();
            let wrote = self.written - written;
            let ok = match reaction {
                Reaction::Close(code) => sent == Some(code),
                Reaction::Silent => wrote == 0 && self.connection.is_closed(),
            };
            if !ok {
                return Err(Violation::new(
                    "malformed-reaction",
                    format!(
                        "after {:?} the client owed {reaction:?}; it sent close {sent:?} ({wrote} bytes), closed: {}",
                        injection.malformed,
                        self.connection.is_closed()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The end of a run: let the network drain, close, and wait (bounded)
    /// for `Closed`; then everything must be resolved.
    fn finish(&mut self) -> Result<(), Violation> {
        for _ in 0..64 {
            if self.broker.is_stalled() || self.connection.is_closed() {
                break;
            }
            self.broker.flush_held();
            self.deliver(usize::MAX)?;
            self.settle()?;
            if self.broker.pending() == 0 {
                break;
            }
        }
        if !self.connection.is_closed() {
            self.note(|| "  app closes".to_owned());
            if driver::close(&mut self.connection, 200, "end of run", self.now).is_ok() {
                self.close_called = Some(self.now);
            }
            self.settle()?;
        }
        let heartbeat = Duration::from_secs(u64::from(self.connection.tuning().heartbeat));
        let limit = self.now
            + self.config.close_timeout.max(self.config.handshake_timeout)
            + heartbeat * 2
            + Duration::from_millis(1);
        while !self.connection.is_closed() && self.now < limit {
            self.deliver(usize::MAX)?;
            self.settle()?;
            if self.connection.is_closed() {
                break;
            }
            let step = self
                .connection
                .poll_timeout()
                .map_or(limit, |at| at.min(limit))
                .saturating_duration_since(self.now)
                .max(Duration::from_millis(1));
            self.advance(step)?;
        }
        self.settle()?;
        if let (Some(called), Some(closed)) = (self.close_called, self.closed_at) {
            let waited = closed.saturating_duration_since(called);
            if waited > self.config.close_timeout + Duration::from_millis(1) {
                return Err(Violation::new(
                    "not-closed-promptly",
                    format!("Closed came {} ms after close()", waited.as_millis()),
                ));
            }
        }
        if !self.connection.is_closed() {
            return Err(Violation::new(
                "not-closed-promptly",
                format!("still not closed {} ms into the run", self.elapsed_ms()),
            ));
        }
        self.oracle.at_end()
    }
}

/// The client's configuration for a seed.
fn client_config(rng: &mut Rng) -> Config {
    let (username, password) = ("guest".to_owned(), "guest".to_owned());
    let mut config = Config::default();
    config.mechanism = if rng.chance(0.5) {
        SaslMechanism::Plain { username, password }
    } else {
        SaslMechanism::AmqPlain { username, password }
    };
    // 0 accepts the server's values; 60 s heartbeats give way to a
    // server's shorter ones.
    config.heartbeat = if rng.chance(0.5) { 0 } else { 60 };
    config.frame_max = if rng.chance(0.5) { 0 } else { 131_072 };
    config.channel_max = 0;
    config.max_queued_output = 64 * 1024;
    config
}

/// A `headers` table nested `depth` levels deep.
fn nested(depth: u8) -> FieldTable {
    let mut table = FieldTable::new();
    table.insert("leaf", 1i32);
    for _ in 1..depth {
        let mut outer = FieldTable::new();
        outer.insert("inner", FieldValue::Table(table));
        table = outer;
    }
    table
}

/// A method for the trace, shortened.
fn short_method(method: &Method) -> String {
    let mut text = format!("{method:?}");
    text.truncate(160);
    text
}

/// An event for the trace, without long bodies.
fn short(event: &Event) -> String {
    let mut text = format!("{event:?}");
    if text.len() > 300 {
        let mut end = 300;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}
