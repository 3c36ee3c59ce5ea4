//! An in-memory model of RabbitMQ's AMQP 0-9-1 server, on simulated time.
//!
//! It reads what the client writes (any split), answers as RabbitMQ does,
//! and writes into one server-to-client byte stream that the simulated
//! network hands to the client in pieces. Its seeded choices (tuning,
//! the reordering of consume-ok and cancel-ok, when confirms are sent) come
//! from its own random stream. What it did is recorded in [`Log`] for the
//! oracle.

mod channel;
mod deliver;
mod faults;
mod log;
mod model;
mod publish;
mod reconnect;
mod requests;
mod wire;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use amqp_proto::codec::{DecodeLimits, FieldTable, Frame, FrameDecoder};
use amqp_proto::spec::constants::PROTOCOL_HEADER;
use amqp_proto::spec::{self, Method};
use bytes::{Bytes, BytesMut};

pub use log::{Injection, Log, RequestLog};
pub use reconnect::ChannelView;

use crate::rng::Rng;
use channel::BrokerChannel;
use model::Model;

/// Where the connection is, from the broker's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitHeader,
    AwaitStartOk,
    AwaitTuneOk,
    AwaitOpen,
    Open,
    /// The broker sent `connection.close` and waits for close-ok.
    Closing,
    /// Done: the broker closes the socket once its bytes are out.
    Done,
}

/// The tuning the broker proposes.
#[derive(Debug, Clone, Copy)]
pub struct Proposal {
    /// channel-max proposed.
    pub channel_max: u16,
    /// frame-max proposed.
    pub frame_max: u32,
    /// heartbeat proposed, seconds.
    pub heartbeat: u16,
}

/// The simulated broker.
#[derive(Debug)]
pub struct Broker {
    rng: Rng,
    phase: Phase,
    proposal: Proposal,
    /// Answer the protocol header with another protocol's header and hang up.
    reject_header: bool,
    /// frame-max and heartbeat as the client's tune-ok settled them.
    frame_max: u32,
    heartbeat: u16,
    input: BytesMut,
    decoder: FrameDecoder,
    /// Bytes written and not yet taken by the network.
    out: BytesMut,
    /// Bytes taken by the network so far: `taken + out.len()` is the
    /// stream offset of the next byte written.
    taken: u64,
    /// The broker hangs up once `out` is drained.
    hang_up: bool,
    stalled: bool,
    /// The transport is gone: nothing is read or written any more.
    cut: bool,
    /// The client sent `connection.close`; only close-ok may follow.
    client_closed: bool,
    now: Instant,
    last_write: Instant,
    /// Since when bytes have waited in `out` for the network: a live
    /// network carries them within half a heartbeat interval, as it
    /// carries the heartbeats (see [`next_deadline`](Self::next_deadline)).
    waiting_since: Option<Instant>,
    model: Model,
    channels: BTreeMap<u16, BrokerChannel>,
    /// How often each channel id was opened: deliveries and confirms are
    /// logged per incarnation.
    incarnations: BTreeMap<u16, u32>,
    next_consumer_tag: u32,
    /// Insert a method before the header of the next content written.
    interleave_next_content: bool,
    /// What happened, for the oracle.
    pub log: Log,
}

impl Broker {
    /// A broker whose choices are drawn from `rng`, created at `now`.
    #[must_use]
    pub fn new(mut rng: Rng, now: Instant) -> Self {
        let proposal = Proposal {
            channel_max: *rng.pick(&[2u16, 4, 16, 2047]).unwrap_or(&16),
            frame_max: u32::try_from(rng.range(4096, 131_072)).unwrap_or(4096),
            heartbeat: if rng.chance(0.5) {
                0
            } else {
                u16::try_from(rng.range(1, 5)).unwrap_or(1)
            },
        };
        let reject_header = rng.chance(0.005);
        Self {
            rng,
            phase: Phase::AwaitHeader,
            proposal,
            reject_header,
            frame_max: proposal.frame_max,
            heartbeat: 0,
            input: BytesMut::new(),
            decoder: FrameDecoder::new(DecodeLimits {
                max_frame_size: u32::MAX,
                // RabbitMQ reads deeper tables than the client's default
                // limit; what the client sends must come back to it.
                max_table_depth: 1_000,
            }),
            out: BytesMut::new(),
            taken: 0,
            hang_up: false,
            stalled: false,
            cut: false,
            client_closed: false,
            now,
            last_write: now,
            waiting_since: None,
            model: Model::new(),
            channels: BTreeMap::new(),
            incarnations: BTreeMap::new(),
            next_consumer_tag: 0,
            interleave_next_content: false,
            log: Log::default(),
        }
    }

    /// The tuning the broker proposes.
    #[must_use]
    pub fn proposal(&self) -> Proposal {
        self.proposal
    }

    /// True once the broker read the client's open and until it closes.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// True while the broker neither reads nor writes.
    #[must_use]
    pub fn is_stalled(&self) -> bool {
        self.stalled || self.cut
    }

    /// Deliveries awaiting the client's ack, on all channels.
    #[must_use]
    pub fn unacked(&self) -> usize {
        self.channels
            .values()
            .map(|channel| channel.unacked.len())
            .sum()
    }

    /// Bytes written and not yet delivered.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// Stream offset of the next undelivered byte.
    #[must_use]
    pub fn delivered_offset(&self) -> u64 {
        self.taken
    }

    /// The network takes up to `n` bytes of what the broker wrote.
    pub fn take(&mut self, n: usize) -> Bytes {
        let n = n.min(self.out.len());
        self.taken += n as u64;
        let taken = self.out.split_to(n).freeze();
        if self.out.is_empty() {
            self.waiting_since = None;
        }
        taken
    }

    /// Notes when written bytes started waiting for the network.
    fn note_waiting(&mut self) {
        if self.out.is_empty() {
            self.waiting_since = None;
        } else if self.waiting_since.is_none() {
            self.waiting_since = Some(self.now);
        }
    }

    /// True when the broker has hung up and everything it wrote is out:
    /// the client's socket reaches end of stream.
    #[must_use]
    pub fn at_end_of_stream(&self) -> bool {
        self.hang_up && self.out.is_empty() && !self.cut
    }

    /// The transport failed: in-flight bytes are lost both ways.
    pub fn cut(&mut self) {
        self.cut = true;
        self.out.clear();
        self.input.clear();
    }

    /// The broker hangs: it reads and writes nothing from now on.
    pub fn stall(&mut self) {
        self.stalled = true;
    }

    /// Bytes the client wrote, read at `now`.
    pub fn receive(&mut self, bytes: &[u8], now: Instant) {
        self.now = now;
        if self.cut {
            return;
        }
        self.input.extend_from_slice(bytes);
        if self.stalled {
            return;
        }
        self.process_input();
        self.note_waiting();
    }

    /// When [`on_timer`](Self::on_timer) must next run: a heartbeat to
    /// send, a held publisher confirm to release, or (with heartbeats on)
    /// bytes that have waited half an interval for the network, which the
    /// simulation delivers at every broker timer. Without that last one, a
    /// broker that writes replies the steps never deliver puts its
    /// heartbeats off for ever while the client hears nothing: a live
    /// broker taken for a dead one.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.is_stalled() || self.hang_up {
            return None;
        }
        let half = Duration::from_millis(u64::from(self.heartbeat) * 500);
        let heartbeat = (self.heartbeat > 0 && self.beats()).then(|| {
            let beat = self.last_write + half;
            self.waiting_since
                .map_or(beat, |since| beat.min(since + half))
        });
        let confirm = self
            .channels
            .values()
            .filter_map(BrokerChannel::next_release)
            .min();
        match (heartbeat, confirm) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the timers due at `now`.
    pub fn on_timer(&mut self, now: Instant) {
        self.now = now;
        if self.is_stalled() || self.hang_up {
            return;
        }
        self.release_confirms(false);
        // Held-back consume-ok and cancel-ok go out once time passes.
        let ids: Vec<u16> = self.channels.keys().copied().collect();
        for id in ids {
            self.release_deferred(id);
        }
        let interval = Duration::from_millis(u64::from(self.heartbeat) * 500);
        if self.heartbeat > 0 && self.beats() && now >= self.last_write + interval {
            // RabbitMQ sends a heartbeat after half an interval of silence.
            wire::heartbeat(&mut self.out);
            self.last_write = now;
        }
        self.note_waiting();
    }

    /// True while RabbitMQ's heartbeater runs: from open until the socket
    /// closes (also while waiting for a close-ok).
    fn beats(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::Closing)
    }

    /// Sends every reordered reply and held confirm now: the network is
    /// about to go quiet, and RabbitMQ's queue processes do not hold
    /// replies forever.
    pub fn flush_held(&mut self) {
        if self.is_stalled() || self.phase != Phase::Open {
            return;
        }
        let ids: Vec<u16> = self.channels.keys().copied().collect();
        for id in ids {
            self.release_deferred(id);
        }
        self.release_confirms(true);
    }

    fn process_input(&mut self) {
        if self.phase == Phase::AwaitHeader {
            if self.input.len() < PROTOCOL_HEADER.len() {
                return;
            }
            let header = self.input.split_to(PROTOCOL_HEADER.len());
            if header[..] != PROTOCOL_HEADER {
                self.log.fault(format!("bad protocol header {header:?}"));
            }
            if self.reject_header {
                // What a server that does not speak 0-9-1 answers (spec 4.2.2).
                let start = self.taken + self.out.len() as u64;
                self.out.extend_from_slice(b"AMQP\x01\x01\x00\x0a");
                self.log.injections.push(Injection {
                    start,
                    end: start + 8,
                    malformed: crate::step::Malformed::RejectedHeader,
                    channel: None,
                });
                self.hang_up = true;
                self.phase = Phase::Done;
                return;
            }
            self.send_start();
            self.phase = Phase::AwaitStartOk;
        }
        if self.phase == Phase::Done {
            self.input.clear();
            return;
        }
        let bytes = self.input.split();
        self.decoder.extend_from_slice(&bytes);
        loop {
            match self.decoder.decode() {
                Ok(Some(frame)) => self.handle_frame(frame),
                Ok(None) => break,
                Err(error) => {
                    self.log
                        .fault(format!("client sent undecodable bytes: {error}"));
                    break;
                }
            }
        }
    }

    fn send_start(&mut self) {
        let mut capabilities = FieldTable::new();
        for name in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "authentication_failure_close",
            "per_consumer_qos",
        ] {
            capabilities.insert(name, true);
        }
        let mut properties = FieldTable::new();
        properties.insert("product", "RabbitMQ");
        properties.insert("version", "3.13.0");
        properties.insert("capabilities", capabilities);
        let mechanisms = if self.rng.chance(0.5) {
            "AMQPLAIN PLAIN"
        } else {
            "PLAIN AMQPLAIN"
        };
        let start = spec::ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties: properties,
            mechanisms: mechanisms.into(),
            locales: "en_US".into(),
        };
        self.write(0, &start.into());
    }

    fn handle_frame(&mut self, frame: Frame) {
        if self.client_closed {
            // Spec 2.2.4: after close, only close-ok (to a crossing close).
            if !matches!(
                &frame,
                Frame::Method {
                    channel: 0,
                    method: Method::ConnectionCloseOk(_)
                }
            ) {
                self.log
                    .fault(format!("client sent {frame:?} after connection.close"));
            }
            return;
        }
        match self.phase {
            Phase::AwaitHeader | Phase::Done => {}
            Phase::AwaitStartOk | Phase::AwaitTuneOk | Phase::AwaitOpen => self.handshake(frame),
            Phase::Closing => self.while_closing(frame),
            Phase::Open => match frame {
                Frame::Heartbeat => {}
                Frame::Method { channel: 0, method } => self.connection_method(method),
                Frame::Method { channel, method } => self.channel_method(channel, method),
                Frame::Header { channel, header } => self.content_header(channel, *header),
                Frame::Body { channel, payload } => self.content_body(channel, &payload),
                // The broker reads tables 1,000 deep: the client's encoder
                // stops at 32.
                Frame::RefusedHeader { channel, error, .. } => self.log.fault(format!(
                    "client sent an unreadable header on {channel}: {error}"
                )),
            },
        }
    }

    fn handshake(&mut self, frame: Frame) {
        let Frame::Method { channel: 0, method } = frame else {
            self.log
                .fault(format!("client sent {frame:?} during the handshake"));
            return;
        };
        match (self.phase, method) {
            (Phase::AwaitStartOk, Method::ConnectionStartOk(start_ok)) => {
                let mechanism = start_ok.mechanism.to_string_lossy().into_owned();
                if mechanism != "PLAIN" && mechanism != "AMQPLAIN" {
                    self.log.fault(format!("unoffered mechanism {mechanism}"));
                }
                let tune = spec::ConnectionTune {
                    channel_max: self.proposal.channel_max,
                    frame_max: self.proposal.frame_max,
                    heartbeat: self.proposal.heartbeat,
                };
                self.write(0, &tune.into());
                self.phase = Phase::AwaitTuneOk;
            }
            (Phase::AwaitTuneOk, Method::ConnectionTuneOk(tune_ok)) => {
                if tune_ok.frame_max > self.proposal.frame_max || tune_ok.frame_max < 4096 {
                    self.log
                        .fault(format!("tune-ok frame-max {}", tune_ok.frame_max));
                }
                if tune_ok.channel_max > self.proposal.channel_max {
                    self.log
                        .fault(format!("tune-ok channel-max {}", tune_ok.channel_max));
                }
                self.frame_max = tune_ok.frame_max.clamp(4096, self.proposal.frame_max);
                self.heartbeat = tune_ok.heartbeat;
                self.phase = Phase::AwaitOpen;
            }
            (Phase::AwaitOpen, Method::ConnectionOpen(_)) => {
                self.write(0, &spec::ConnectionOpenOk::default().into());
                self.phase = Phase::Open;
            }
            (_, Method::ConnectionClose(close)) => {
                self.log.client_closes.push(close.reply_code);
                self.write(0, &spec::ConnectionCloseOk {}.into());
                self.finish();
                self.client_closed = true;
            }
            (phase, method) => self
                .log
                .fault(format!("client sent {} in {phase:?}", method.name())),
        }
    }

    fn while_closing(&mut self, frame: Frame) {
        match frame {
            Frame::Method {
                channel: 0,
                method: Method::ConnectionCloseOk(_),
            } => self.finish(),
            Frame::Method {
                channel: 0,
                method: Method::ConnectionClose(close),
            } => {
                // Both sides closed at once.
                self.log.client_closes.push(close.reply_code);
                self.write(0, &spec::ConnectionCloseOk {}.into());
                self.finish();
            }
            Frame::Method { channel, method } => self.log_unanswered(&method, channel),
            _ => {}
        }
    }

    fn connection_method(&mut self, method: Method) {
        match method {
            Method::ConnectionClose(close) => {
                self.log.client_closes.push(close.reply_code);
                self.write(0, &spec::ConnectionCloseOk {}.into());
                self.finish();
                self.client_closed = true;
            }
            Method::ConnectionUpdateSecret(_) => {
                let reply: Method = spec::ConnectionUpdateSecretOk {}.into();
                self.log.requests.push(RequestLog {
                    channel: 0,
                    name: "connection.update-secret",
                    reply: Some((reply.clone(), None)),
                    get_ok_end: None,
                });
                self.write(0, &reply);
            }
            other => self
                .log
                .fault(format!("client sent {} on channel 0", other.name())),
        }
    }

    /// Logs a request that will get no answer (its channel or the
    /// connection is closing), keeping the request log aligned with the
    /// client's request ids.
    fn log_unanswered(&mut self, method: &Method, channel: u16) {
        if is_request(method) {
            self.log.requests.push(RequestLog {
                channel,
                name: method.name(),
                reply: None,
                get_ok_end: None,
            });
        }
    }

    /// The connection is over: hang up once the bytes are out.
    fn finish(&mut self) {
        self.phase = Phase::Done;
        self.hang_up = true;
        self.drop_all_channels();
    }

    /// Writes a method frame.
    fn write(&mut self, channel: u16, method: &Method) {
        if self.hang_up || self.cut {
            return;
        }
        wire::method(
            &mut self.out,
            channel,
            method,
            self.frame_max,
            &mut self.log,
        );
        self.last_write = self.now;
    }
}

/// True for the methods whose frames carry a request id on the client's
/// side: synchronous ones expecting a reply, except the connection's own
/// handshake and close and `channel.close` (which have none).
fn is_request(method: &Method) -> bool {
    method.expects_reply()
        && !matches!(
            method,
            Method::ChannelClose(_)
                | Method::ConnectionClose(_)
                | Method::ConnectionStartOk(_)
                | Method::ConnectionSecureOk(_)
                | Method::ConnectionTuneOk(_)
                | Method::ConnectionOpen(_)
        )
}
