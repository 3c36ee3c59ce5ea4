//! A sans-IO implementation of AMQP 0-9-1 as RabbitMQ speaks it.
//!
//! This crate does no IO, reads no clock, spawns nothing and has no async:
//! it turns bytes into typed frames and typed frames into bytes, and nothing
//! a peer sends can make it panic or allocate beyond its configured limits.
//! Adapters (blocking, tokio, or your own) own the socket and the clock.
//!
//! - [`codec`]: the wire format — frames, field tables, content headers —
//!   with a streaming [`FrameDecoder`](codec::FrameDecoder).
//! - [`spec`]: every class and method of 0-9-1 and RabbitMQ's extensions as
//!   typed structs, generated from one declarative table.
//! - [`error`]: decode errors carry the reply code to close the connection
//!   with; encode errors report local misuse.
//!
//! # Example: a publish, encoded and decoded
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
//! # Errors and reply codes
//!
//! A [`DecodeError`] names what the peer did wrong and the reply code the
//! specification prescribes for it ([`DecodeError::reply_code`]); the
//! connection must then be closed with that code, or dropped without another
//! byte where [`DecodeError::close_silently`] says so.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod channel;
pub mod codec;
mod connection;
pub mod error;
mod event;
pub mod spec;

pub use channel::ChannelRef;
pub use connection::{Config, Connection, Readiness, SaslMechanism, Tuning};
pub use error::{
    CloseReason, ConnectionError, DecodeError, EncodeError, Initiator, ProtocolViolation,
    UsageError,
};
pub use event::{ConfirmOutcome, Delivery, Event, Failure, GetMessage, RequestId, Returned};
