//! Drives the sans-IO core by hand over a blocking `TcpStream`: the whole
//! adapter is `Client::pump`. Declares a queue, publishes with confirms,
//! consumes the messages with acks and closes.
//!
//! `cargo run -p amqp-proto --example std_by_hand` (AMQP_ADDR overrides
//! 127.0.0.1:5672; guest/guest on `/`).
use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use amqp_proto::codec::BasicProperties;
use amqp_proto::spec::{self, constants::ReplyCode, Method};
use amqp_proto::{Config, ConfirmOutcome, Connection, Event};

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

    /// Pumps until `pick` accepts an event (others are dropped); fails if
    /// the connection closes first, or after 10 s.
    fn until<T>(&mut self, mut pick: impl FnMut(Event) -> Option<T>) -> Result<T> {
        let give_up = Instant::now() + Duration::from_secs(10);
        while Instant::now() < give_up {
            while let Some(event) = self.events.pop_front() {
                if let Event::Closed(error) = event {
                    return Err(error.into());
                }
                if let Some(found) = pick(event) {
                    return Ok(found);
                }
            }
            self.pump()?;
        }
        Err("timed out waiting for the broker".into())
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
    c.until(|e| matches!(e, Event::Opened { .. }).then_some(()))?;

    let ch = c.core.open_channel()?;
    let declare = spec::QueueDeclare {
        exclusive: true,
        ..Default::default()
    };
    c.core.channel(ch)?.request(declare)?;
    c.core
        .channel(ch)?
        .request(spec::ConfirmSelect::default())?;
    let queue = c.until(|e| match e {
        Event::Reply {
            method: Method::QueueDeclareOk(ok),
            ..
        } => Some(ok.queue),
        _ => None,
    })?;

    let publish = spec::BasicPublish {
        routing_key: queue.clone(),
        ..Default::default()
    };
    for n in 0..3 {
        let body = format!("message {n}");
        c.core
            .channel(ch)?
            .publish(&publish, &BasicProperties::default(), body)?;
    }
    let mut acked = 0;
    c.until(|e| {
        acked += usize::from(matches!(
            e,
            Event::Confirm {
                outcome: ConfirmOutcome::Ack,
                ..
            }
        ));
        (acked == 3).then_some(())
    })?;
    println!("declared {queue}; 3 publishes confirmed");

    c.core.channel(ch)?.request(spec::BasicConsume {
        queue,
        ..Default::default()
    })?;
    for _ in 0..3 {
        let delivery = c.until(|e| match e {
            Event::Delivery(delivery) => Some(delivery),
            _ => None,
        })?;
        println!("consumed: {:?}", delivery.body());
        c.core.channel(ch)?.ack(delivery.delivery_tag, false)?;
    }

    c.core
        .close(ReplyCode::REPLY_SUCCESS, "done", Instant::now())?;
    // `until` reports the final Event::Closed as an error with its reason.
    let closed = c.until(|_| None::<()>).unwrap_err().to_string();
    if !closed.contains("closed by client with 200") {
        return Err(closed.into());
    }
    println!("{closed}");
    Ok(())
}
