//! Structure-aware fuzzing of the state machine: after a valid handshake,
//! a sequence of steps built by `arbitrary` — valid server frames (any
//! method, header or body, on a small channel id so they meet open
//! channels), well-formed deliveries, application commands (open a
//! channel, publish, acknowledge, any request, close), clock steps — with
//! topology recording and recovery chosen by the first byte. Random bytes
//! rarely get past frame decoding; these reach every state.
//!
//! Invariants as in the `connection` target: no panic, only valid frames
//! sent, only close frames once closing, nothing after `Event::Closed`,
//! bounded output and events.
#![no_main]

#[path = "common.rs"]
mod common;

use std::time::{Duration, Instant};

use amqp_proto::codec::{
    body_frame_header, encode_header_frame, BasicProperties, ContentHeader, Frame,
};
use amqp_proto::spec::constants::{ReplyCode, FRAME_END};
use amqp_proto::spec::{self, Method};
use amqp_proto::{Config, Connection};
use arbitrary::Arbitrary;
use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;

use common::{handshake, server, ClientBytes, Watch};

#[derive(Arbitrary, Debug)]
enum Step {
    /// A valid frame from the server, its channel folded into 0..=4.
    Server(Frame),
    /// A delivery (deliver, header, body) to a consumer on `channel`.
    Deliver { channel: u8, consumer_tag: u8, delivery_tag: u64, body: Vec<u8> },
    /// The server acknowledges publishes.
    Ack { channel: u8, delivery_tag: u64, multiple: bool, nack: bool },
    /// The application does something.
    Command(Command),
    /// Time passes.
    Advance { millis: u16 },
    /// The socket breaks.
    TransportClosed,
}

#[derive(Arbitrary, Debug)]
enum Command {
    OpenChannel,
    Publish { channel: u8, mandatory: bool, body: Vec<u8> },
    Ack { channel: u8, delivery_tag: u64, multiple: bool },
    Request { channel: u8, method: Method },
    CloseChannel { channel: u8 },
    Close,
}

fn small(channel: u8) -> u16 {
    u16::from(channel % 5)
}

fn delivery(channel: u16, consumer_tag: u8, delivery_tag: u64, body: &[u8]) -> BytesMut {
    let mut out = server(
        channel,
        spec::BasicDeliver {
            consumer_tag: format!("c{}", consumer_tag % 3).as_str().into(),
            delivery_tag,
            redelivered: false,
            exchange: "".into(),
            routing_key: "q".into(),
        },
    );
    let header = ContentHeader::basic(body.len() as u64, BasicProperties::default());
    encode_header_frame(channel, &header, 131_072, &mut out).unwrap();
    if !body.is_empty() {
        out.put_slice(&body_frame_header(channel, body.len(), 131_072).unwrap());
        out.put_slice(body);
        out.put_u8(FRAME_END);
    }
    out
}

fn command(connection: &mut Connection, command: Command, now: Instant) {
    // Misuse is refused with a UsageError; that is fine here.
    match command {
        Command::OpenChannel => {
            let _ = connection.open_channel();
        }
        Command::Publish { channel, mandatory, body } => {
            if let Ok(mut handle) = connection.channel(small(channel)) {
                let publish = spec::BasicPublish { mandatory, ..Default::default() };
                let _ = handle.publish(&publish, &BasicProperties::default(), body);
            }
        }
        Command::Ack { channel, delivery_tag, multiple } => {
            if let Ok(mut handle) = connection.channel(small(channel)) {
                let _ = handle.ack(delivery_tag, multiple);
            }
        }
        Command::Request { channel, method } => {
            if let Ok(mut handle) = connection.channel(small(channel)) {
                let _ = handle.request(method);
            }
        }
        Command::CloseChannel { channel } => {
            if let Ok(handle) = connection.channel(small(channel)) {
                let _ = handle.close(ReplyCode::REPLY_SUCCESS, "done");
            }
        }
        Command::Close => {
            let _ = connection.close(ReplyCode::REPLY_SUCCESS, "bye", now);
        }
    }
}

fuzz_target!(|input: (u8, Vec<Step>)| {
    let (control, steps) = input;
    let start = Instant::now();
    let mut now = start;
    let mut config = Config::default();
    config.record_topology = control & 1 != 0;
    let mut connection = Connection::new(config, start);
    let mut client = ClientBytes::new();
    for bytes in handshake() {
        connection.handle_input(&bytes, now);
    }
    client.frames(&mut connection, now);
    let mut watch = Watch::default();
    let mut fed = 0usize;
    for step in steps {
        match step {
            Step::Server(mut frame) => {
                let mut wire = BytesMut::new();
                match &mut frame {
                    Frame::Method { channel, .. }
                    | Frame::Header { channel, .. }
                    | Frame::Body { channel, .. }
                    | Frame::RefusedHeader { channel, .. } => *channel %= 5,
                    Frame::Heartbeat => {}
                }
                if frame.encode(&mut wire, 4096).is_ok() {
                    fed += wire.len();
                    connection.handle_input(&wire, now);
                }
            }
            Step::Deliver { channel, consumer_tag, delivery_tag, body } => {
                let wire = delivery(small(channel), consumer_tag, delivery_tag, &body);
                fed += wire.len();
                connection.handle_input(&wire, now);
            }
            Step::Ack { channel, delivery_tag, multiple, nack } => {
                let wire = if nack {
                    server(small(channel), spec::BasicNack { delivery_tag, multiple, requeue: false })
                } else {
                    server(small(channel), spec::BasicAck { delivery_tag, multiple })
                };
                fed += wire.len();
                connection.handle_input(&wire, now);
            }
            Step::Command(action) => {
                fed += 64;
                command(&mut connection, action, now);
            }
            Step::Advance { millis } => {
                now += Duration::from_millis(u64::from(millis));
                connection.handle_timeout(now);
            }
            Step::TransportClosed => {
                connection.handle_transport_closed("reset");
                // A recorded topology replays on a fresh connection, as an
                // adapter's recovery would, and the steps go on there.
                if let Some(topology) = connection.topology().cloned() {
                    while connection.poll_event().is_some() {}
                    while connection.poll_transmit(now).is_some() {}
                    let mut config = Config::default();
                    config.record_topology = true;
                    connection = Connection::recover(config, topology, now);
                    client = ClientBytes::new();
                    watch = Watch::default();
                    for bytes in handshake() {
                        connection.handle_input(&bytes, now);
                    }
                }
            }
        }
        watch.check(&mut connection, &mut client, now);
        assert!(connection.queued_output() <= 64 * 1024 + 16 * fed);
        assert!(watch.events <= 16 + 4 * fed);
    }
});
