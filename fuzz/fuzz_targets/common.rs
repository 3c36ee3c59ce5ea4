//! What the connection targets share: server frames, the handshake, and a
//! decoder that checks everything the client writes is a valid frame.
#![allow(dead_code)]

use amqp_proto::codec::{encode_method_frame, DecodeLimits, Frame, FrameDecoder};
use amqp_proto::spec::{self, Method};
use amqp_proto::Connection;
use bytes::BytesMut;
use std::time::Instant;

/// A method frame as the server sends it.
pub fn server(channel: u16, method: impl Into<Method>) -> BytesMut {
    let mut out = BytesMut::new();
    encode_method_frame(channel, &method.into(), 131_072, &mut out).unwrap();
    out
}

/// The handshake a RabbitMQ-like server sends (channel-max 16, frame-max
/// 4096, heartbeat 5 s).
pub fn handshake() -> [BytesMut; 3] {
    [
        server(
            0,
            spec::ConnectionStart {
                version_major: 0,
                version_minor: 9,
                mechanisms: "PLAIN".into(),
                locales: "en_US".into(),
                ..Default::default()
            },
        ),
        server(0, spec::ConnectionTune { channel_max: 16, frame_max: 4096, heartbeat: 5 }),
        server(0, spec::ConnectionOpenOk::default()),
    ]
}

/// Decodes what the client wrote, as a server would; the client must only
/// ever write valid frames.
pub struct ClientBytes {
    decoder: FrameDecoder,
    header_skipped: bool,
    pending: BytesMut,
}

impl ClientBytes {
    pub fn new() -> Self {
        Self {
            // The client's encoder refuses tables nested deeper than a
            // decoder accepts by default, so a server with the default
            // limit reads everything it writes.
            decoder: FrameDecoder::new(DecodeLimits {
                max_frame_size: u32::MAX,
                ..DecodeLimits::default()
            }),
            header_skipped: false,
            pending: BytesMut::new(),
        }
    }

    pub fn frames(&mut self, connection: &mut Connection, now: Instant) -> Vec<Frame> {
        while let Some(chunk) = connection.poll_transmit(now) {
            self.pending.extend_from_slice(&chunk);
        }
        if !self.header_skipped {
            if self.pending.len() < 8 {
                return Vec::new();
            }
            let _ = self.pending.split_to(8);
            self.header_skipped = true;
        }
        self.decoder.extend_from_slice(&self.pending.split());
        let mut frames = Vec::new();
        loop {
            match self.decoder.decode() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => panic!("the client writes valid frames: {error:?}"),
            }
        }
        frames
    }
}

/// The invariants every connection target checks on what comes out.
#[derive(Default)]
pub struct Watch {
    closing: bool,
    pub closed: bool,
    pub events: usize,
}

impl Watch {
    /// Checks the client's output and events after one step.
    pub fn check(&mut self, connection: &mut Connection, client: &mut ClientBytes, now: Instant) {
        for frame in client.frames(connection, now) {
            assert!(!self.closed, "nothing is sent after Closed: {frame:?}");
            let is_close = matches!(
                frame,
                Frame::Method {
                    channel: 0,
                    method: Method::ConnectionClose(_) | Method::ConnectionCloseOk(_)
                }
            );
            if self.closing {
                assert!(is_close, "only close frames once closing: {frame:?}");
            }
            self.closing |= is_close;
        }
        while let Some(event) = connection.poll_event() {
            assert!(!self.closed, "Closed is the last event, emitted once: {event:?}");
            self.events += 1;
            if matches!(event, amqp_proto::Event::Closed(_)) {
                self.closed = true;
            }
        }
        if self.closed {
            assert!(connection.poll_timeout().is_none());
        }
    }
}
