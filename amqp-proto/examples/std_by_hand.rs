//! Drives the sans-IO core by hand over a blocking `TcpStream`: the whole
//! adapter is `Client::pump`. Declares a queue, publishes with confirms,
//! consumes the messages with acks and closes. `Client::until` waits for
//! one event and keeps every other one for later: nothing is dropped.
//!
//! `cargo run -p amqp-proto --example std_by_hand` (AMQP_ADDR overrides
//! 127.0.0.1:5672; guest/guest on `/`).
use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use amqp_proto::codec::BasicProperties;
use amqp_proto::spec::{self, constants::ReplyCode, Method};
use amqp_proto::{Config, ConfirmOutcome, Connection, ConnectionError, Event, Initiator};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Client {
    core: Connection,
    socket: TcpStream,
    events: VecDeque<Event>,
}

impl Client {
    /// Writes what the core queued, reads once (until the core's next
    /// deadline at most), fires due timers and collects the events.
    fn pump(&mut self) -> Result<()> {
        // Small publishes are coalesced: one write carries many. What the
        // socket does not take stays queued in the core, in order.
        while self.core.wants_write() {
            match self.core.write_to(&mut self.socket, Instant::now()) {
                Ok(0) => {
                    self.core.handle_transport_closed("the socket took nothing");
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.core.handle_transport_closed(e.to_string());
                    break;
                }
            }
        }
        let deadline = self.core.poll_timeout().unwrap_or_else(Instant::now);
        let wait = deadline.saturating_duration_since(Instant::now());
        self.socket
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        // Input before timeouts: what arrived is fed first, so the
        // server's heartbeats count before the dead-peer check looks.
        match self.core.read_from(&mut self.socket, Instant::now()) {
            Ok(0) => self.core.handle_transport_closed("end of stream"),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => self.core.handle_transport_closed(e.to_string()),
        }
        self.core.handle_timeout(Instant::now());
        self.events
            .extend(std::iter::from_fn(|| self.core.poll_event()));
        Ok(())
    }

    /// Pumps until an event `wanted` accepts arrives, and returns it.
    /// Nothing is dropped: the events it does not accept stay in
    /// `self.events`, in order, for a later call (or for the caller to
    /// look at). Fails if the connection ends first (unless `wanted`
    /// accepts the `Event::Closed`, always the last event), or after 10 s.
    fn until(&mut self, wanted: impl Fn(&Event) -> bool) -> Result<Event> {
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(at) = self.events.iter().position(&wanted) {
                if let Some(event) = self.events.remove(at) {
                    return Ok(event);
                }
            }
            if let Some(Event::Closed(error)) = self.events.back() {
                return Err(error.clone().into());
            }
            if Instant::now() >= give_up {
                return Err("timed out waiting for the broker".into());
            }
            self.pump()?;
        }
    }
}

fn main() -> Result<()> {
    let address = std::env::var("AMQP_ADDR").unwrap_or_else(|_| "127.0.0.1:5672".into());
    let socket =
        TcpStream::connect(&address).map_err(|e| format!("no broker at {address}: {e}"))?;
    socket.set_nodelay(true)?;
    let core = Connection::new(Config::default(), Instant::now());
    let events = VecDeque::new();
    let mut c = Client {
        core,
        socket,
        events,
    };
    c.until(|e| matches!(e, Event::Opened { .. }))?;

    let ch = c.core.open_channel()?;
    let declare = spec::QueueDeclare {
        exclusive: true,
        ..Default::default()
    };
    let declare = c.core.channel(ch)?.request(declare)?;
    let select = c
        .core
        .channel(ch)?
        .request(spec::ConfirmSelect::default())?;
    // Replies name their requests: each is waited for by its id, and
    // whatever arrives around it stays queued for the next wait.
    c.until(|e| matches!(e, Event::ChannelOpened { channel, .. } if *channel == ch.id()))?;
    let queue = match c
        .until(|e| matches!(e, Event::Reply { request, .. } if Some(*request) == declare))?
    {
        Event::Reply {
            method: Method::QueueDeclareOk(ok),
            ..
        } => ok.queue,
        other => return Err(format!("queue.declare answered with {other:?}").into()),
    };
    c.until(|e| matches!(e, Event::Reply { request, .. } if Some(*request) == select))?;

    let publish = spec::BasicPublish {
        routing_key: queue.clone(),
        ..Default::default()
    };
    let mut sequences = Vec::new();
    for n in 0..3 {
        let body = format!("message {n}");
        let sequence = c
            .core
            .channel(ch)?
            .publish(&publish, &BasicProperties::default(), body)?;
        sequences.extend(sequence);
    }
    // One confirm per publish, each with its sequence number; anything
    // but an ack is a failure.
    for sequence in sequences {
        match c.until(|e| matches!(e, Event::Confirm { sequence: s, .. } if *s == sequence))? {
            Event::Confirm {
                outcome: ConfirmOutcome::Ack,
                ..
            } => {}
            other => return Err(format!("publish {sequence}: {other:?}").into()),
        }
    }
    println!("declared {queue}; 3 publishes confirmed");

    let consume = c.core.channel(ch)?.request(spec::BasicConsume {
        queue,
        ..Default::default()
    })?;
    c.until(|e| matches!(e, Event::Reply { request, .. } if Some(*request) == consume))?;
    for _ in 0..3 {
        match c.until(|e| matches!(e, Event::Delivery(_)))? {
            Event::Delivery(delivery) => {
                println!("consumed: {:?}", delivery.body());
                c.core.channel(ch)?.ack(delivery.delivery_tag, false)?;
            }
            other => return Err(format!("expected a delivery, got {other:?}").into()),
        }
    }
    // Every event was waited for by name: none may be left over.
    if !c.events.is_empty() {
        return Err(format!("events nobody handled: {:?}", c.events).into());
    }

    c.core
        .close(ReplyCode::REPLY_SUCCESS, "done", Instant::now())?;
    // The close is clean when it is our own, completed by the server's
    // close-ok: ConnectionError::Closed with the client as initiator.
    match c.until(|e| matches!(e, Event::Closed(_)))? {
        Event::Closed(ConnectionError::Closed(reason))
            if reason.initiator == Initiator::Client && reason.is_normal() =>
        {
            println!("connection {reason}");
            Ok(())
        }
        other => Err(format!("the close ended with {other:?}").into()),
    }
}
