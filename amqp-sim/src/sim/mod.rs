//! One simulation: the real [`Connection`] against the [`Broker`], driven
//! step by step on a simulated clock, with the oracle consulted after
//! every step.

mod checks;
mod commands;
mod network;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use amqp_proto::codec::{DecodeLimits, FrameDecoder};
use amqp_proto::{Config, Connection, Event, SaslMechanism};

use crate::app::App;
use crate::broker::{Broker, Injection};
use crate::driver;
use crate::hash::TraceHash;
use crate::oracle::{Oracle, Violation};
use crate::rng::Rng;
use crate::step::Step;

/// Random streams of a run besides the steps (see [`Rng::fork`]).
const STREAM_BROKER: u64 = 2;
const STREAM_CONFIG: u64 = 3;
const STREAM_SPLIT: u64 = 4;
const STREAM_RECOVERY: u64 = 5;

/// Most recoveries in one run (a recovering connection that fails again
/// is recovered again, as the supervisor's next attempt).
const MAX_RECOVERIES: u32 = 3;

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
    /// A chunk taken from the broker is being fed in pieces.
    feeding: bool,
    /// Injections already looked at, by index into the broker's log.
    injections_seen: usize,
    /// Injections whose reaction is owed, with the number of client closes
    /// the broker had seen and the bytes the client had written when they
    /// arrived.
    owed: Vec<(Injection, usize, u64)>,
    /// Bytes the client wrote so far.
    written: u64,
    /// When the client last wrote.
    last_write: Instant,
    closes_checked: usize,
    close_called: Option<Instant>,
    /// When `Event::Closed` was seen.
    closed_at: Option<Instant>,
    /// Bytes the application queued and the bytes fed in, this step.
    app_queued: usize,
    fed: usize,
    transport_reported: bool,
    config: Config,
    /// A violation found inside a command that reports a refusal.
    broken: Option<Violation>,
    /// (channel, incarnation, delivery tag) the application rejected: the
    /// broker's other rejects are the core's own.
    app_rejects: std::collections::BTreeSet<(u16, u32, u64)>,
    /// Rejects in the broker's log already judged.
    rejects_checked: usize,
    /// Acks and nacks in the broker's log already judged.
    settlements_checked: usize,
    /// Whether a failed connection is recovered (see [`Sim::recover`]).
    recovery_rng: Rng,
    /// Connections made by `Connection::recover` so far.
    recoveries: u32,
    /// The connection failed as automatic recovery would recover from:
    /// the next step runs on a connection made by `Connection::recover`.
    recover_pending: bool,
    /// The connection was open at some point (a failure of one that never
    /// opened is not recovered, as the supervisor decides).
    ever_open: bool,
}

/// Runs `steps` for `seed`.
pub(crate) fn run(seed: u64, steps: &[Step], mode: Mode) -> Run {
    let start = Instant::now();
    let mut sim = Sim::new(seed, start, mode);
    let mut failure = None;
    let config = format!(
        "# client: heartbeat {}, frame-max {}, max table depth {}",
        sim.config.heartbeat, sim.config.frame_max, sim.config.max_table_depth
    );
    sim.note(|| config);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if let Err(violation) = sim.settle() {
            return Some((0, violation));
        }
        for (index, step) in steps.iter().enumerate() {
            sim.note(|| format!("#{index} {step:?}"));
            sim.hash.number(index as u64);
            let mut result = sim
                .execute(step)
                .and_then(|()| sim.settle())
                .and_then(|()| sim.check_conservation());
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
            feeding: false,
            injections_seen: 0,
            owed: Vec::new(),
            written: 0,
            last_write: start,
            closes_checked: 0,
            close_called: None,
            closed_at: None,
            app_queued: 0,
            fed: 0,
            transport_reported: false,
            config,
            broken: None,
            app_rejects: std::collections::BTreeSet::new(),
            rejects_checked: 0,
            settlements_checked: 0,
            recovery_rng: Rng::fork(seed, STREAM_RECOVERY),
            recoveries: 0,
            recover_pending: false,
            ever_open: false,
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
        if self.recover_pending {
            self.recover()?;
        }
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
            self.last_write = self.now;
            self.broker.receive(&chunk, self.now);
        }
        // What the client owed malformed input is checked first: the
        // events that follow a missed fault are its consequences.
        self.check_reactions()?;
        let broker = &self.broker;
        self.oracle.follow_replay(|id| broker.incarnation(id));
        let mut seen = 0;
        let mut recovered = None;
        while let Some(event) = self.connection.poll_event() {
            seen += 1;
            self.events += 1;
            let _ = write!(self.hash, "{event:?}");
            self.note(|| format!("  event {}", short(&event)));
            if let Event::ChannelRecovering { channel, .. } = &event {
                // The record's offsets are what the reopened channel's
                // numbering continues from.
                let (tags, sequences) = self
                    .connection
                    .topology()
                    .and_then(|topology| {
                        topology
                            .channels()
                            .iter()
                            .find(|record| record.id == *channel)
                    })
                    .map_or((0, 0), |record| {
                        (record.delivery_tag_offset, record.publish_sequence_offset)
                    });
                self.oracle.reopening(*channel, tags, sequences)?;
            }
            let unrecovered = self.oracle.is_recovering();
            self.oracle.event(&event, &self.broker.log, self.now)?;
            self.app.observe(&event);
            if let Event::Recovered {
                renamed_queues,
                failures,
            } = &event
            {
                recovered = Some((renamed_queues.clone(), failures.clone()));
            }
            if let Event::Closed(error) = &event {
                self.closed_at = Some(self.now);
                self.check_closed(error)?;
                self.consider_recovery(error, unrecovered);
            }
        }
        if seen > 0 {
            self.hash.number(self.elapsed_ms() as u64);
        }
        // Judged after the whole batch: the broker is ahead of the events
        // that follow `Recovered` in it (a channel it closed meanwhile).
        // A broker closing the connection has let its channels go.
        let comparable = self.oracle.closed().is_none() && self.broker.is_open();
        if let Some((renamed, failures)) = recovered.filter(|_| comparable) {
            let views = self.broker.channel_views();
            self.oracle
                .check_recovered_state(&views, &renamed, &failures, &self.broker.log)?;
        }
        self.ever_open |= self.connection.is_open();
        if let Some(&(channel, incarnation, tag)) = self.broker.log.unknown_tags.first() {
            return Err(Violation::new(
                "unknown-tag-settled",
                format!(
                    "the broker read a settlement of delivery tag {tag} on channel {channel} (incarnation {incarnation}), which it never handed out or was settled"
                ),
            ));
        }
        let poll = self.connection.poll_timeout();
        self.oracle
            .check_deadlines(poll, self.broker.delivered_offset(), &self.broker.log)?;
        if let Some(fault) = self.broker.log.client_fault.take() {
            return Err(Violation::new("client-protocol", fault));
        }
        // With nothing in flight either way, the deliveries the client
        // counts unsettled are exactly those the broker holds unacked.
        let quiet = self.broker.pending() == 0 && !self.feeding && !self.broker.is_stalled();
        if quiet && self.broker.is_open() && !self.tainted && self.connection.is_open() {
            let (client, broker) = (self.connection.stats().unsettled, self.broker.unacked());
            if client != broker as u64 {
                return Err(Violation::new(
                    "unsettled-count",
                    format!("the client counts {client} unsettled, the broker holds {broker}"),
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
        if self.connection.is_open() && !self.broker.is_stalled() {
            self.broker.flush_held();
            self.deliver(usize::MAX)?;
            self.settle()?;
            self.check_quiet()?;
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
    // A quarter of the clients refuse headers tables nested deeper than 2
    // (the generator nests 1 to 3 levels in one publish of seven), so
    // that refused deliveries, returns and get-oks meet abandoned consumes
    // and gets, not only 33-level tables. (A smaller `max_body_size` would
    // not: the core refuses to publish what it would refuse to read.)
    if rng.chance(0.25) {
        config.max_table_depth = 2;
    }
    // Half the clients record their topology, as automatic recovery does:
    // the record follows every event of those runs, and a channel the
    // broker nacks before any ack is closed and reopened by the core.
    config.record_topology = rng.chance(0.5);
    config
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

impl Sim {
    /// The connection ended with `error`: a failure automatic recovery
    /// would recover from (as the supervisor decides: one of a connection
    /// that had opened and that `ConnectionError::is_recoverable` calls
    /// worth a new connection, or any failure of a connection still
    /// declaring its record again, `unrecovered`) is recovered, some of the
    /// time, when the client records its topology and did not close.
    fn consider_recovery(&mut self, error: &amqp_proto::ConnectionError, unrecovered: bool) {
        let wanted = self.config.record_topology
            && self.close_called.is_none()
            && self.recoveries < MAX_RECOVERIES
            && self.connection.topology().is_some();
        let recoverable = unrecovered || (self.ever_open && error.is_recoverable());
        if wanted && recoverable && self.recovery_rng.chance(0.75) {
            self.recover_pending = true;
        }
    }

    /// The adapter's new socket: the broker takes a new connection (its
    /// durable state kept) and the core is `Connection::recover` from the
    /// failed one's record; the oracle and the application start their
    /// view of the new connection from that record.
    fn recover(&mut self) -> Result<(), Violation> {
        self.recover_pending = false;
        self.recoveries += 1;
        let topology = self.connection.topology().cloned().unwrap_or_default();
        let oracle = Oracle::recovering(topology.clone(), &self.oracle)?;
        let recoveries = self.recoveries;
        self.note(|| format!("# recovery {recoveries}: {topology:?}"));
        self.hash.number(u64::MAX - u64::from(recoveries));
        self.broker.reconnect(self.now);
        self.connection = Connection::recover(self.config.clone(), topology.clone(), self.now);
        self.oracle = oracle;
        self.app.recovering(&topology);
        // The new stream is clean, and nothing of it was judged yet.
        self.tainted = false;
        self.injections_seen = 0;
        self.owed.clear();
        self.closes_checked = 0;
        self.close_called = None;
        self.closed_at = None;
        self.transport_reported = false;
        self.app_rejects.clear();
        self.rejects_checked = 0;
        self.settlements_checked = 0;
        self.last_write = self.now;
        self.ever_open = false;
        Ok(())
    }
}
