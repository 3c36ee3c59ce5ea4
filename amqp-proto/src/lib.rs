//! A sans-IO implementation of AMQP 0-9-1 as RabbitMQ speaks it.
//!
//! This crate does no IO, reads no clock, spawns nothing and has no async.
//! A [`Connection`] takes bytes and the current time in, and gives bytes to
//! send, [`Event`]s and deadlines out. Adapters (blocking, tokio, or your own)
//! own the socket and the clock; everything else, from the handshake to
//! publisher confirms, lives here, written once and tested deterministically.
//! Nothing a server sends can make it panic or allocate beyond its limits:
//! a broken server gets the `connection.close` reply code the specification
//! prescribes, and every outstanding request and publish is resolved.
//!
//! # The event model
//!
//! After every input ([`Connection::handle_input`],
//! [`Connection::handle_timeout`]) and every command ([`Connection::open_channel`],
//! [`ChannelRef::request`], [`ChannelRef::publish`], ...), write the queued
//! output and drain [`Connection::poll_event`] into the application until it
//! is empty, then sleep until the socket is readable (or writable, while
//! output waits) or [`Connection::poll_timeout`] passes. Requests return a
//! [`RequestId`]; their outcome is an [`Event::Reply`] (or
//! [`Event::RequestFailed`]) carrying it. Publishes in confirm mode return a
//! sequence number; their outcome is an [`Event::Confirm`].
//!
//! Here the server's side is played with the codec, so the example runs
//! without a network; `examples/std_by_hand.rs` runs the same loop over a
//! `TcpStream` against RabbitMQ.
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use amqp_proto::codec::{encode_method_frame, BasicProperties};
//! use amqp_proto::spec::{self, Method};
//! use amqp_proto::bytes::BytesMut;
//! use amqp_proto::{Config, Connection, Event};
//!
//! // What a server would send: a method frame on a channel.
//! fn server(channel: u16, method: impl Into<Method>) -> BytesMut {
//!     let mut bytes = BytesMut::new();
//!     encode_method_frame(channel, &method.into(), 131_072, &mut bytes).unwrap();
//!     bytes
//! }
//!
//! let start = Instant::now();
//! let mut connection = Connection::new(Config::default(), start);
//! // The protocol header is the first thing to write.
//! assert_eq!(&connection.poll_transmit(start).unwrap()[..], b"AMQP\x00\x00\x09\x01");
//!
//! // The handshake: each server frame makes the core queue its answer.
//! let start_method = spec::ConnectionStart {
//!     version_major: 0,
//!     version_minor: 9,
//!     mechanisms: "PLAIN".into(),
//!     locales: "en_US".into(),
//!     ..Default::default()
//! };
//! connection.handle_input(&server(0, start_method), start);
//! let tune = spec::ConnectionTune { channel_max: 2047, frame_max: 131_072, heartbeat: 60 };
//! connection.handle_input(&server(0, tune), start);
//! connection.handle_input(&server(0, spec::ConnectionOpenOk::default()), start);
//! while connection.poll_transmit(start).is_some() {} // start-ok, tune-ok, open
//! assert!(matches!(connection.poll_event(), Some(Event::Opened { .. })));
//!
//! // Heartbeats are deadlines: with a 60 s interval, nothing sent for 30 s
//! // means one is due (half the interval, as RabbitMQ sends them).
//! assert_eq!(connection.poll_timeout(), Some(start + Duration::from_secs(30)));
//!
//! // Commands queue frames and return ids at once.
//! let channel = connection.open_channel()?;
//! let declare = connection.channel(channel)?.request(spec::QueueDeclare {
//!     queue: "jobs".into(),
//!     ..Default::default()
//! })?;
//! connection.channel(channel)?.publish(
//!     &spec::BasicPublish { routing_key: "jobs".into(), ..Default::default() },
//!     &BasicProperties::default().content_type("text/plain"),
//!     "hello",
//! )?;
//! while connection.poll_transmit(start).is_some() {} // channel.open, queue.declare, publish
//!
//! // Replies arrive in order and name the request they answer.
//! connection.handle_input(&server(channel.id(), spec::ChannelOpenOk::default()), start);
//! let declare_ok = spec::QueueDeclareOk { queue: "jobs".into(), message_count: 0, consumer_count: 0 };
//! connection.handle_input(&server(channel.id(), declare_ok), start);
//! assert!(matches!(connection.poll_event(), Some(Event::ChannelOpened { .. })));
//! match connection.poll_event() {
//!     Some(Event::Reply { request, method: Method::QueueDeclareOk(ok), .. }) => {
//!         assert_eq!(Some(request), declare);
//!         assert_eq!(ok.queue, "jobs");
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), amqp_proto::UsageError>(())
//! ```
//!
//! # Writing an adapter
//!
//! An adapter over a socket needs a handful of calls, each documented with
//! its rules:
//!
//! - Output: [`Connection::write_to`] makes one vectored write and keeps in
//!   the core what the socket did not take, in order (small publishes are
//!   coalesced, large bodies are written from the application's memory);
//!   [`Connection::poll_transmit_into`] copies batches into a buffer of
//!   yours, [`Connection::poll_transmit`] hands out chunks.
//!   [`Connection::wants_write`] says whether anything waits. Leave what
//!   the socket cannot take in the core: that queue is the back-pressure
//!   [`Connection::publish_readiness`] reports.
//! - Input: [`Connection::read_from`] reads once from a [`std::io::Read`]
//!   and handles it (0 is end of stream: report
//!   [`Connection::handle_transport_closed`]); or append to
//!   [`Connection::input_buffer`] and call
//!   [`Connection::handle_buffered_input`]. Read while
//!   [`Connection::wants_input`] is true.
//! - Time: wait until [`Connection::poll_timeout`], then call
//!   [`Connection::handle_timeout`], after feeding whatever the socket
//!   already holds (input first, or a live server can look dead).
//! - [`Connection::stats`] counts bytes, frames and heartbeats each way,
//!   messages published, confirmed, delivered and settled, and time
//!   blocked, with gauges of what is open and in flight.
//!
//! `examples/std_by_hand.rs` is such an adapter: its `Client::pump`;
//! `examples/nonblocking.rs` is one over a non-blocking socket and mio's
//! readiness events. The [manual's chapter on driving the
//! core](manual::driving_the_core) walks through the loop and its rules
//! step by step (the order of input, time and output, partial writes,
//! back-pressure both ways, timers, channel handles, shutdown), each step
//! an example that runs.
//!
//! # The codec on its own
//!
//! [`codec`] is usable without the state machine: any frame can be encoded
//! and decoded, and [`codec::FrameDecoder`] accepts the bytes in any split.
//!
//! ```
//! use amqp_proto::codec::{
//!     body_frame_header, encode_header_frame, encode_method_frame, BasicProperties,
//!     ContentHeader, DecodeLimits, Frame, FrameDecoder,
//! };
//! use amqp_proto::spec::{constants::FRAME_END, BasicPublish, Method};
//! use bytes::{BufMut, BytesMut};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let frame_max = 131_072;
//! let body = b"hello";
//! let publish = Method::BasicPublish(BasicPublish {
//!     exchange: "amq.direct".into(),
//!     routing_key: "greetings".into(),
//!     mandatory: true,
//!     ..Default::default()
//! });
//! let properties = BasicProperties::default()
//!     .content_type("text/plain")
//!     .delivery_mode(2);
//! let header = ContentHeader::basic(body.len() as u64, properties);
//!
//! let mut wire = BytesMut::new();
//! encode_method_frame(1, &publish, frame_max, &mut wire)?;
//! encode_header_frame(1, &header, frame_max, &mut wire)?;
//! // A body goes out as its own chunk; here it is simply appended.
//! wire.put_slice(&body_frame_header(1, body.len(), frame_max)?);
//! wire.put_slice(body);
//! wire.put_u8(FRAME_END);
//!
//! // Any split of the bytes decodes to the same frames.
//! let mut decoder = FrameDecoder::new(DecodeLimits { max_frame_size: frame_max, ..Default::default() });
//! let mut frames = Vec::new();
//! for byte in wire.chunks(1) {
//!     decoder.extend_from_slice(byte);
//!     while let Some(frame) = decoder.decode()? {
//!         frames.push(frame);
//!     }
//! }
//! assert_eq!(frames[0], Frame::Method { channel: 1, method: publish });
//! assert_eq!(frames[1], Frame::Header { channel: 1, header: Box::new(header) });
//! assert!(matches!(&frames[2], Frame::Body { channel: 1, payload } if payload == &body[..]));
//! # Ok(())
//! # }
//! ```
//!
//! # Trace context
//!
//! [`propagation`] reads and writes a W3C `traceparent` (and `tracestate`)
//! in a message's `headers`, as the other clients' instrumentations do,
//! with no tracing dependency; the adapters connect it to their tracing.
//!
//! # Diagnostics
//!
//! [`Connection::stats`] counts what went over the connection (bytes,
//! frames, heartbeats, publishes, confirms, deliveries, settlements,
//! blocked time) at the cost of an integer add each. With the `tracing`
//! feature (off by default; the adapters turn it on with their own) the
//! core also reports through `tracing`: every frame at TRACE under
//! `amqp::frames` (channel, kind, method name, sizes; never a payload),
//! heartbeats at TRACE under `amqp::heartbeat`, and a server's protocol
//! violation at WARN under `amqp::protocol`, once per connection, with the
//! reply code the core closes with.
//!
//! # Errors
//!
//! Errors come in layers. A [`DecodeError`] or [`ProtocolViolation`] is the
//! server's fault and carries the reply code the connection is closed with;
//! the connection's end is reported once, as [`Event::Closed`] with a
//! [`ConnectionError`]. A [`UsageError`] is the application's: nothing was
//! sent and no state changed. An [`EncodeError`] is a value that cannot go
//! on the wire.
#![forbid(unsafe_code)]
// Nothing a peer sends may panic the core: outside tests, clippy rejects
// every construct that could (tests may unwrap what they built).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::indexing_slicing
    )
)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

/// The `bytes` crate this one is built with: bodies are [`bytes::Bytes`]
/// and the input buffer is a [`bytes::BytesMut`], so an application that
/// names those types can use this re-export and always have the matching
/// version.
pub use bytes;

mod channel;
pub mod codec;
mod connection;
mod diagnostics;
pub mod error;
mod event;
pub mod manual;
pub mod propagation;
pub mod queue;
pub mod recovery;
pub mod spec;
pub mod uri;

pub use channel::{ChannelHandle, ChannelKey, ChannelRef, Pending, Settlement, Synchronous};
pub use connection::{Config, Connection, Readiness, SaslMechanism, Stats, Tuning};
pub use error::{
    CloseReason, ConnectionError, DecodeError, EncodeError, Initiator, ProtocolViolation,
    StreamRefusal, UsageError,
};
pub use event::{
    ConfirmOutcome, Delivery, Event, Failure, GetMessage, RefusedMessage, RefusedOrigin, RequestId,
    Returned,
};
pub use recovery::{Backoff, Topology};
