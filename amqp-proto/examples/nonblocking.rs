//! Drives the sans-IO core with a non-blocking event loop on mio: one
//! thread, one socket, readiness events and the core's deadline. Declares
//! an exclusive queue, publishes `MESSAGES` (2000) messages with confirms
//! while `publish_readiness` allows, consumes them back with an ack for
//! every hundredth (`multiple`), closes, and prints one line of counts.
//!
//! `cargo run -p amqp-proto --example nonblocking` (AMQP_ADDR overrides
//! 127.0.0.1:5672; guest/guest on `/`). Exits non-zero on any failure, or
//! when the whole run takes more than 30 s.
//!
//! The adapter is `Transport` (the socket, the poller, what readiness was
//! reported) and the `pass` in `main`; the application is `App`, which
//! only reacts to events and never waits.
use std::io::ErrorKind;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use amqp_proto::codec::{BasicProperties, ShortString};
use amqp_proto::spec::{self, constants::ReplyCode, Method};
use amqp_proto::{
    ChannelHandle, Config, ConfirmOutcome, Connection, ConnectionError, Event, Initiator,
    Readiness, RequestId,
};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The whole run, connect to close, must fit in this.
const OVERALL: Duration = Duration::from_secs(30);
/// Deliveries are acknowledged in batches of this many (`multiple`).
const ACK_EVERY: u64 = 100;
const SOCKET: Token = Token(0);

/// The socket, its poller, and the readiness mio last reported.
///
/// mio's events are edge-triggered: readability or writability is
/// reported when it begins, not while it lasts. So the transport keeps
/// what was reported until a read or write answers `WouldBlock`, and
/// goes on reading (writing) without waiting for another event while it
/// has not: a read stopped early because the core wanted no more input
/// would otherwise wait for an event that never comes.
struct Transport {
    socket: TcpStream,
    poll: Poll,
    events: Events,
    /// The interest registered now; `None` when not registered.
    registered: Option<Interest>,
    connected: bool,
    readable: bool,
    writable: bool,
}

impl Transport {
    /// Starts a non-blocking connect; [`Transport::wait`] completes it.
    fn connect(address: SocketAddr) -> Result<Self> {
        Ok(Self {
            socket: TcpStream::connect(address)?,
            poll: Poll::new()?,
            events: Events::with_capacity(8),
            registered: None,
            connected: false,
            readable: false,
            writable: false,
        })
    }

    /// Input: reads and hands the core what the socket holds, until the
    /// socket has no more (`WouldBlock`) or the core wants no more.
    fn read(&mut self, core: &mut Connection, now: Instant) {
        while self.connected && self.readable && core.wants_input() {
            match core.read_from(&mut self.socket, now) {
                Ok(0) => {
                    core.handle_transport_closed("end of stream");
                    self.readable = false;
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => core.handle_transport_closed(e.to_string()),
            }
        }
    }

    /// Output: writes while the core has bytes and the socket takes them.
    /// What the socket does not take stays queued in the core, where
    /// `publish_readiness` sees it.
    fn write(&mut self, core: &mut Connection) {
        while self.connected && self.writable && core.wants_write() {
            match core.write_to(&mut self.socket, Instant::now()) {
                Ok(0) => core.handle_transport_closed("the socket took nothing"),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => core.handle_transport_closed(e.to_string()),
            }
        }
    }

    /// Sleeps until the socket is readable (while the core wants input),
    /// writable (only while it has output), the core's deadline, or
    /// `give_up`; not at all when there is work to do already (`busy`, or
    /// a direction known ready with work for it).
    fn wait(&mut self, core: &mut Connection, busy: bool, give_up: Instant) -> Result<()> {
        let wanted = if self.connected {
            let read = core.wants_input().then_some(Interest::READABLE);
            let write = core.wants_write().then_some(Interest::WRITABLE);
            match (read, write) {
                (Some(read), Some(write)) => Some(read | write),
                (read, write) => read.or(write),
            }
        } else {
            // A connect completes (or fails) with a writable event.
            Some(Interest::READABLE | Interest::WRITABLE)
        };
        let registry = self.poll.registry();
        match (self.registered, wanted) {
            (None, Some(interest)) => registry.register(&mut self.socket, SOCKET, interest)?,
            (Some(old), Some(interest)) if old != interest => {
                registry.reregister(&mut self.socket, SOCKET, interest)?;
            }
            (Some(_), None) => registry.deregister(&mut self.socket)?,
            _ => {}
        }
        self.registered = wanted;

        let now = Instant::now();
        let ready = busy
            || (self.connected && self.readable && core.wants_input())
            || (self.connected && self.writable && core.wants_write());
        let timeout = if ready {
            Duration::ZERO
        } else {
            let deadline = core.poll_timeout().map_or(give_up, |at| at.min(give_up));
            deadline.saturating_duration_since(now)
        };
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            // A signal: the next pass looks at the clock and sockets anew.
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        for event in &self.events {
            // An error or a hang-up is found out by the next read or write.
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                self.readable = true;
            }
            if event.is_writable() || event.is_write_closed() || event.is_error() {
                self.writable = true;
            }
        }
        if !self.connected && (self.readable || self.writable) {
            self.finish_connect(core)?;
        }
        Ok(())
    }

    /// After an event on a connecting socket: connected, still connecting
    /// (a spurious event), or failed, which ends the core's connection.
    fn finish_connect(&mut self, core: &mut Connection) -> Result<()> {
        let outcome = match self.socket.take_error() {
            Ok(Some(error)) | Err(error) => Err(error),
            Ok(None) => self.socket.peer_addr().map(drop),
        };
        match outcome {
            Ok(()) => {
                self.connected = true;
                self.socket.set_nodelay(true)?;
            }
            Err(e) if e.kind() == ErrorKind::NotConnected => {
                self.readable = false;
                self.writable = false;
            }
            Err(e) => core.handle_transport_closed(format!("cannot connect: {e}")),
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Until `Event::Opened`.
    Handshake,
    /// Channel, queue and confirm mode requested, not all answered.
    Setup,
    Publishing,
    /// Every publish confirmed; the consumer gets them back.
    Consuming,
    /// `close` was called; waiting for `Event::Closed`.
    Closing,
    Done,
}

/// The application: reacts to each event with commands, and publishes
/// while the core says the publisher may go on.
struct App {
    stage: Stage,
    messages: u64,
    channel: Option<ChannelHandle>,
    declare: Option<RequestId>,
    select: Option<RequestId>,
    queue: ShortString,
    publish: spec::BasicPublish,
    properties: BasicProperties,
    published: u64,
    confirmed: u64,
    consumed: u64,
    ack_batches: u64,
    /// Why publishing last stopped, until it goes on again.
    stopped: Option<Readiness>,
    waits: Waits,
}

/// How often the publisher stopped, by the reason `publish_readiness`
/// gave.
#[derive(Debug, Default)]
struct Waits {
    /// The confirm window was full: waiting for acks.
    confirms: u64,
    /// Unwritten output reached `Config::max_queued_output`: waiting for
    /// the socket to take it.
    socket: u64,
    /// The broker blocked the connection or paused the channel.
    broker: u64,
}

impl App {
    fn new(messages: u64) -> Self {
        Self {
            stage: Stage::Handshake,
            messages,
            channel: None,
            declare: None,
            select: None,
            queue: ShortString::default(),
            publish: spec::BasicPublish::default(),
            properties: BasicProperties::default().content_type("text/plain"),
            published: 0,
            confirmed: 0,
            consumed: 0,
            ack_batches: 0,
            stopped: None,
            waits: Waits::default(),
        }
    }

    fn channel(&self) -> Result<ChannelHandle> {
        self.channel.ok_or_else(|| "no channel yet".into())
    }

    /// Drains the core's events into [`App::on_event`].
    fn drain(&mut self, core: &mut Connection, now: Instant) -> Result<()> {
        while let Some(event) = core.poll_event() {
            self.on_event(core, event, now)?;
        }
        Ok(())
    }

    fn on_event(&mut self, core: &mut Connection, event: Event, now: Instant) -> Result<()> {
        match event {
            Event::Opened { .. } => {
                // Pipelined: the three requests go out in one write.
                let channel = core.open_channel()?;
                let declare = spec::QueueDeclare {
                    exclusive: true,
                    ..Default::default()
                };
                self.declare = core.channel(channel)?.request(declare)?;
                self.select = core
                    .channel(channel)?
                    .request(spec::ConfirmSelect::default())?;
                self.channel = Some(channel);
                self.stage = Stage::Setup;
            }
            Event::ChannelOpened { .. } => {}
            Event::Reply {
                request, method, ..
            } => match method {
                Method::QueueDeclareOk(ok) if Some(request) == self.declare => {
                    self.publish.routing_key = ok.queue.clone();
                    self.queue = ok.queue;
                }
                Method::ConfirmSelectOk(_) if Some(request) == self.select => {
                    self.stage = Stage::Publishing;
                }
                Method::BasicQosOk(_) | Method::BasicConsumeOk(_) => {}
                other => return Err(format!("unexpected reply {}", other.name()).into()),
            },
            Event::Confirm {
                sequence, outcome, ..
            } => match outcome {
                ConfirmOutcome::Ack => {
                    self.confirmed += 1;
                    if self.confirmed == self.messages {
                        self.start_consuming(core)?;
                    }
                }
                ConfirmOutcome::Nack => return Err(format!("publish {sequence} nacked").into()),
                ConfirmOutcome::Failed(failure) => {
                    return Err(format!("publish {sequence} failed: {failure}").into());
                }
            },
            Event::Delivery(delivery) => {
                let expected = format!("message {}", self.consumed);
                if delivery.body() != expected.as_bytes() {
                    let got = String::from_utf8_lossy(delivery.body());
                    return Err(format!("expected {expected:?}, consumed {got:?}").into());
                }
                self.consumed += 1;
                let channel = self.channel()?;
                if self.consumed % ACK_EVERY == 0 || self.consumed == self.messages {
                    core.channel(channel)?.ack(delivery.delivery_tag, true)?;
                    self.ack_batches += 1;
                }
                if self.consumed == self.messages {
                    // The last ack is queued before the close, so it is
                    // written (and handled by the broker) before it.
                    core.close(ReplyCode::REPLY_SUCCESS, "done", now)?;
                    self.stage = Stage::Closing;
                }
            }
            // The back-pressure they signal is in publish_readiness.
            Event::Blocked { .. } | Event::Unblocked | Event::Flow { .. } => {}
            Event::Closed(ConnectionError::Closed(reason))
                if self.stage == Stage::Closing && reason.initiator == Initiator::Client =>
            {
                self.stage = Stage::Done;
            }
            Event::Closed(error) => return Err(format!("the connection ended: {error}").into()),
            other => return Err(format!("unexpected event: {other:?}").into()),
        }
        Ok(())
    }

    fn start_consuming(&mut self, core: &mut Connection) -> Result<()> {
        let channel = self.channel()?;
        // Prefetch bounds what the broker sends ahead of the acks.
        let qos = spec::BasicQos {
            prefetch_count: 5 * ACK_EVERY as u16,
            ..Default::default()
        };
        core.channel(channel)?.request(qos)?;
        let consume = spec::BasicConsume {
            queue: self.queue.clone(),
            ..Default::default()
        };
        core.channel(channel)?.consume(consume)?;
        self.stage = Stage::Consuming;
        Ok(())
    }

    /// Publishes while the core answers `Ready`; stops on anything else
    /// until a later pass (after a write, confirms, an unblock).
    fn publish(&mut self, core: &mut Connection) -> Result<()> {
        if self.stage != Stage::Publishing {
            return Ok(());
        }
        let channel = self.channel()?;
        while self.published < self.messages {
            match core.publish_readiness(channel) {
                Readiness::Ready => self.stopped = None,
                Readiness::Closed => return Err("the channel closed while publishing".into()),
                other => {
                    if self.stopped != Some(other) {
                        let count = match other {
                            Readiness::ConfirmWindowFull => &mut self.waits.confirms,
                            Readiness::OutputFull => &mut self.waits.socket,
                            _ => &mut self.waits.broker,
                        };
                        *count += 1;
                        self.stopped = Some(other);
                    }
                    return Ok(());
                }
            }
            let body = format!("message {}", self.published);
            core.channel(channel)?
                .publish(&self.publish, &self.properties, body)?;
            self.published += 1;
        }
        Ok(())
    }

    /// True if a pass now would publish more.
    fn can_publish(&self, core: &Connection) -> bool {
        self.stage == Stage::Publishing
            && self.published < self.messages
            && self
                .channel
                .is_some_and(|channel| core.publish_readiness(channel) == Readiness::Ready)
    }
}

fn main() -> Result<()> {
    let address = std::env::var("AMQP_ADDR").unwrap_or_else(|_| "127.0.0.1:5672".into());
    let messages: u64 = match std::env::var("MESSAGES") {
        Ok(text) => text.parse().map_err(|e| format!("MESSAGES={text}: {e}"))?,
        Err(_) => 2000,
    };
    if messages == 0 {
        return Err("MESSAGES must be at least 1".into());
    }
    let started = Instant::now();
    let give_up = started + OVERALL;
    let socket_address = address
        .to_socket_addrs()
        .map_err(|e| format!("AMQP_ADDR={address}: {e}"))?
        .next()
        .ok_or_else(|| format!("AMQP_ADDR={address} names no address"))?;
    let mut transport = Transport::connect(socket_address)?;
    // 32 KiB of unwritten output is the most this publisher queues: a
    // burst of publishes goes out as it is made, not after a megabyte.
    let config = Config::default().with_max_queued_output(32 * 1024);
    let mut core = Connection::new(config, started);
    let mut app = App::new(messages);

    while app.stage != Stage::Done {
        let now = Instant::now();
        if now >= give_up {
            return Err(format!(
                "gave up after {OVERALL:?} at {:?}: published {}, confirmed {}, consumed {}",
                app.stage, app.published, app.confirmed, app.consumed
            )
            .into());
        }
        // One pass: input, then time (so what arrived counts before the
        // dead-peer check), events and the commands they prompt,
        // publishes while allowed, output.
        transport.read(&mut core, now);
        core.handle_timeout(now);
        app.drain(&mut core, now)?;
        app.publish(&mut core)?;
        transport.write(&mut core);
        // A failed write ends the connection: its Event::Closed.
        app.drain(&mut core, Instant::now())?;
        if app.stage != Stage::Done {
            let busy = app.can_publish(&core);
            transport.wait(&mut core, busy, give_up)?;
        }
    }

    let stats = core.stats();
    println!(
        "nonblocking: published {}, confirmed {} (publisher waited {}x for confirms, {}x for \
         the socket, {}x for the broker), consumed {} with {} acks; sent {} bytes, received {} \
         bytes in {} frames, heartbeats {} sent {} received; {:.2} s",
        app.published,
        app.confirmed,
        app.waits.confirms,
        app.waits.socket,
        app.waits.broker,
        app.consumed,
        app.ack_batches,
        stats.bytes_sent,
        stats.bytes_received,
        stats.frames_received,
        stats.heartbeats_sent,
        stats.heartbeats_received,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
