//! A scripted broker for driving a [`Connection`] in memory on simulated
//! time: the test says which frames the client must have sent and which the
//! server answers, and advances the clock itself.

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use amqp_proto::codec::{
    body_frame_header, encode_header_frame, encode_method_frame, BasicProperties, ContentHeader,
    DecodeLimits, FieldTable, Frame, FrameDecoder,
};
use amqp_proto::spec::constants::{FRAME_END, PROTOCOL_HEADER};
use amqp_proto::spec::{self, Method};
use amqp_proto::{Config, Connection, Event};
use bytes::{BufMut, Bytes, BytesMut};

/// The frame-max the scripted server proposes.
pub const SERVER_FRAME_MAX: u32 = 131_072;

pub struct Peer {
    pub connection: Connection,
    /// Simulated time: `start` plus what the test advanced.
    pub now: Instant,
    pub start: Instant,
    /// Decodes what the client sends, as a server would.
    server_decoder: FrameDecoder,
    header_seen: bool,
    /// Bytes written during `advance`, not yet decoded by `client_frames`.
    pending: BytesMut,
    /// Bytes the client wrote, in order (for byte-level assertions).
    pub written: BytesMut,
}

impl Peer {
    /// A client connection created at simulated time zero.
    pub fn new(config: Config) -> Self {
        let start = Instant::now();
        Self {
            connection: Connection::new(config, start),
            now: start,
            start,
            server_decoder: FrameDecoder::new(DecodeLimits {
                max_frame_size: u32::MAX,
                ..DecodeLimits::default()
            }),
            header_seen: false,
            pending: BytesMut::new(),
            written: BytesMut::new(),
        }
    }

    /// Milliseconds of simulated time since the start.
    pub fn elapsed_ms(&self) -> u128 {
        (self.now - self.start).as_millis()
    }

    /// Drains the client's transmits; returns the raw bytes.
    pub fn transmitted(&mut self) -> Bytes {
        let mut bytes = std::mem::take(&mut self.pending);
        while let Some(chunk) = self.connection.poll_transmit(self.now) {
            bytes.put_slice(&chunk);
        }
        self.written.put_slice(&bytes);
        bytes.freeze()
    }

    /// Drains the client's transmits and decodes them as frames.
    pub fn client_frames(&mut self) -> Vec<Frame> {
        let mut bytes = self.transmitted();
        if !self.header_seen && bytes.len() >= 8 {
            assert_eq!(
                &bytes[..8],
                &PROTOCOL_HEADER,
                "the client starts with the protocol header"
            );
            bytes = bytes.slice(8..);
            self.header_seen = true;
        }
        self.server_decoder.extend_from_slice(&bytes);
        let mut frames = Vec::new();
        while let Some(frame) = self
            .server_decoder
            .decode()
            .expect("the client sends valid frames")
        {
            frames.push(frame);
        }
        frames
    }

    /// Drains the client's transmits, expecting exactly these methods (by
    /// name, in order, any channel), and returns them.
    pub fn expect_methods(&mut self, names: &[&str]) -> Vec<(u16, Method)> {
        let frames = self.client_frames();
        let methods: Vec<(u16, Method)> = frames
            .into_iter()
            .filter_map(|frame| match frame {
                Frame::Method { channel, method } => Some((channel, method)),
                _ => None,
            })
            .collect();
        let got: Vec<&str> = methods.iter().map(|(_, method)| method.name()).collect();
        assert_eq!(got, names, "methods the client sent");
        methods
    }

    /// Feeds raw server bytes at the current simulated time.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.connection.handle_input(bytes, self.now);
    }

    /// The server sends a method.
    pub fn send(&mut self, channel: u16, method: impl Into<Method>) {
        let mut out = BytesMut::new();
        encode_method_frame(channel, &method.into(), u32::MAX, &mut out).unwrap();
        self.feed(&out);
    }

    /// The bytes of a method with content, its header and one body frame.
    pub fn content_bytes(
        channel: u16,
        method: impl Into<Method>,
        properties: BasicProperties,
        body: &[u8],
    ) -> BytesMut {
        let mut out = BytesMut::new();
        encode_method_frame(channel, &method.into(), u32::MAX, &mut out).unwrap();
        let header = ContentHeader::basic(body.len() as u64, properties);
        encode_header_frame(channel, &header, u32::MAX, &mut out).unwrap();
        if !body.is_empty() {
            out.put_slice(&body_frame_header(channel, body.len(), u32::MAX).unwrap());
            out.put_slice(body);
            out.put_u8(FRAME_END);
        }
        out
    }

    /// The server sends a method with content.
    pub fn send_content(
        &mut self,
        channel: u16,
        method: impl Into<Method>,
        properties: BasicProperties,
        body: &[u8],
    ) {
        let bytes = Self::content_bytes(channel, method, properties, body);
        self.feed(&bytes);
    }

    /// Every event the client has to report.
    pub fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.connection.poll_event()).collect()
    }

    /// Advances simulated time by `by`, firing every deadline that passes
    /// on the way, at its exact time.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        while let Some(deadline) = self.connection.poll_timeout() {
            if deadline > target {
                break;
            }
            self.now = self.now.max(deadline);
            self.connection.handle_timeout(self.now);
            // Whatever the timeout queued is written right away.
            let _ = self.transmitted_keep();
        }
        self.now = target;
    }

    /// Like `transmitted`, but keeps the bytes for a later `client_frames`.
    fn transmitted_keep(&mut self) -> usize {
        let mut total = 0;
        while let Some(chunk) = self.connection.poll_transmit(self.now) {
            total += chunk.len();
            self.pending.put_slice(&chunk);
        }
        total
    }

    /// The standard handshake with a RabbitMQ-like server: start (PLAIN and
    /// AMQPLAIN), tune (2047, 128 KiB, `heartbeat`), open-ok.
    pub fn handshake(&mut self, heartbeat: u16) {
        assert!(self.client_frames().is_empty());
        let mut capabilities = FieldTable::new();
        capabilities.insert("publisher_confirms", true);
        let mut properties = FieldTable::new();
        properties.insert("product", "RabbitMQ");
        properties.insert("capabilities", capabilities);
        self.send(
            0,
            spec::ConnectionStart {
                version_major: 0,
                version_minor: 9,
                server_properties: properties,
                mechanisms: "AMQPLAIN PLAIN".into(),
                locales: "en_US".into(),
            },
        );
        self.expect_methods(&["connection.start-ok"]);
        self.send(
            0,
            spec::ConnectionTune {
                channel_max: 2047,
                frame_max: SERVER_FRAME_MAX,
                heartbeat,
            },
        );
        self.expect_methods(&["connection.tune-ok", "connection.open"]);
        self.send(0, spec::ConnectionOpenOk::default());
        let events = self.events();
        assert!(
            matches!(events.as_slice(), [Event::Opened { .. }]),
            "handshake events: {events:?}"
        );
    }

    /// The server's side of a handshake with a plain PLAIN start and the
    /// given tune, up to open-ok; what the client wrote is left to read.
    pub fn open_with_tune(&mut self, channel_max: u16, frame_max: u32, heartbeat: u16) {
        self.send(
            0,
            spec::ConnectionStart {
                version_major: 0,
                version_minor: 9,
                mechanisms: "PLAIN".into(),
                locales: "en_US".into(),
                ..Default::default()
            },
        );
        self.send(
            0,
            spec::ConnectionTune {
                channel_max,
                frame_max,
                heartbeat,
            },
        );
        self.send(0, spec::ConnectionOpenOk::default());
    }

    /// Opens a channel and answers it; returns its id.
    pub fn open_channel(&mut self) -> u16 {
        let channel = self.connection.open_channel().expect("channel opens").id();
        self.expect_methods(&["channel.open"]);
        self.send(channel, spec::ChannelOpenOk::default());
        let events = self.events();
        assert!(
            matches!(events.as_slice(), [Event::ChannelOpened { channel: id, .. }] if *id == channel),
            "channel open events: {events:?}"
        );
        channel
    }
}
