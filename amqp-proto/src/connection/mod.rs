//! The client connection state machine: handshake, tuning, heartbeats,
//! channel bookkeeping and closing, driven by bytes and time from outside.

mod config;
mod deadlines;
mod events;
mod handshake;
pub(crate) mod output;
mod recovery;
pub(crate) mod stats;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use config::{Config, SaslMechanism, Tuning};
pub use stats::Stats;

use crate::diagnostics;

use crate::channel::{Abandoned, Channel, ChannelHandle, ChannelKey, ChannelRef, Disposition};
use crate::codec::{
    encode_heartbeat_frame, encode_method_frame, DecodeLimits, Frame, FrameDecoder, LongString,
    ShortString,
};
use crate::error::{CloseReason, ConnectionError, Initiator, ProtocolViolation, UsageError};
use crate::event::{Event, Failure, RequestId};
use crate::queue::KnownStreams;
use crate::recovery::{Recorder, Replay, Topology};
use crate::spec::constants::{ReplyCode, FRAME_MIN_SIZE, PROTOCOL_HEADER};
use crate::spec::{
    ChannelClose, ConnectionClose, ConnectionCloseOk, ConnectionUpdateSecret, Method,
};
use deadlines::RequestDeadlines;
pub(crate) use events::content_weight;
use events::EventQueue;
pub(crate) use output::Output;

/// Bytes one [`Connection::read_from`] offers the reader.
const READ_SIZE: usize = 64 * 1024;

/// The initialised buffer [`Connection::read_from`] reads into: empty until
/// the first call, then [`READ_SIZE`] bytes for good.
#[derive(Default)]
struct ReadScratch(Vec<u8>);

/// The scratch bytes are stale input: debug output shows only the size.
impl std::fmt::Debug for ReadScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadScratch({} bytes)", self.0.len())
    }
}

/// At most this many chunks go into one vectored write of
/// [`Connection::write_to`] (Linux accepts 1024; a few dozen already move
/// far more than a socket buffer holds).
const WRITE_SLICES: usize = 64;

/// Where the connection is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Protocol header sent; waiting for `connection.start`.
    AwaitStart,
    /// `start-ok` (or `secure-ok`) sent; waiting for `tune` or `secure`.
    AwaitTune,
    /// `tune-ok` and `open` sent; waiting for `open-ok`.
    AwaitOpenOk,
    Open,
    /// We sent `connection.close`; only `close` and `close-ok` matter now.
    Closing {
        error: ConnectionError,
        deadline: Instant,
    },
    Closed,
}

/// Whether a publisher should go on now; see
/// [`Connection::publish_readiness`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Readiness {
    /// Publish.
    Ready,
    /// The broker blocked the connection (resource alarm); wait for
    /// [`Event::Unblocked`].
    Blocked,
    /// The server paused the channel with `channel.flow`; wait for a
    /// [`Event::Flow`] with `active`.
    FlowPaused,
    /// The channel has [`Config::max_unconfirmed`] publishes awaiting
    /// confirmation; wait for [`Event::Confirm`]s.
    ConfirmWindowFull,
    /// [`Config::max_queued_output`] bytes wait to be written; write them.
    OutputFull,
    /// The channel or connection is not usable.
    Closed,
    /// The connection is declaring its topology again after a failure;
    /// wait for [`Event::Recovered`]. Or the channel is being reopened
    /// after a consumer timeout; wait for [`Event::ChannelRecovered`].
    Recovering,
}

/// Where [`Channel`]s send frames and report events while handling input.
/// A [`Sink`] borrowing `connection`'s fields one by one, so its channels
/// can be borrowed beside it.
macro_rules! sink {
    ($connection:expr) => {
        Sink {
            output: &mut $connection.output,
            events: &mut $connection.events,
            frame_max: $connection.tuning.frame_max,
            bodies_in_progress: &mut $connection.bodies_in_progress,
            max_bodies_in_progress: $connection.config.max_bodies_in_progress,
            deadlines: &mut $connection.request_deadlines,
            next_request: &mut $connection.next_request,
            stats: &mut $connection.stats,
            streams: &mut $connection.streams,
        }
    };
}

pub(crate) struct Sink<'a> {
    output: &'a mut Output,
    events: &'a mut EventQueue,
    frame_max: u32,
    /// Announced bytes of the bodies being received on all channels, and
    /// the most allowed ([`Config::max_bodies_in_progress`]).
    pub(crate) bodies_in_progress: &'a mut u64,
    pub(crate) max_bodies_in_progress: u64,
    /// The deadlines of requests awaiting replies.
    pub(crate) deadlines: &'a mut RequestDeadlines,
    /// Numbers the requests the core sends on its own.
    next_request: &'a mut u64,
    /// The connection's counters, for what channels count.
    pub(crate) stats: &'a mut Stats,
    /// The streams this connection declared.
    pub(crate) streams: &'a mut KnownStreams,
}

impl Sink<'_> {
    /// Queues a method the core sends on its own (close-ok, flow-ok, ...).
    pub(crate) fn send(&mut self, channel: u16, method: &Method) {
        // These replies are a few bytes with values the server sent us
        // (short strings of at most 255 bytes), far below any frame-max,
        // so encoding cannot fail.
        if encode_method_frame(channel, method, self.frame_max, self.output.frames()).is_ok() {
            stats::add(&mut self.stats.frames_sent, 1);
            if diagnostics::frames_wanted() {
                diagnostics::method_sent(channel, method);
            }
        }
    }

    pub(crate) fn emit(&mut self, event: Event) {
        self.events.push_back(event);
    }

    /// An id for a request the core sends on its own on `channel`.
    pub(crate) fn next_request_id(&mut self, channel: u16) -> RequestId {
        *self.next_request += 1;
        RequestId::new(*self.next_request, channel)
    }

    /// Emits an event holding a message of `content` bytes (see
    /// [`content_weight`]).
    pub(crate) fn emit_message(&mut self, event: Event, content: usize) {
        self.events.push_weighing(event, content);
    }
}

/// An AMQP 0-9-1 client connection, without IO.
///
/// # Driving it
///
/// The adapter owns a socket and a clock and repeats, in any order that
/// suits it:
///
/// 1. Bytes read from the socket go to [`handle_input`](Self::handle_input)
///    with the current time; end of stream or an IO error goes to
///    [`handle_transport_closed`](Self::handle_transport_closed).
/// 2. When the time [`poll_timeout`](Self::poll_timeout) named has come,
///    call [`handle_timeout`](Self::handle_timeout).
/// 3. Application commands: [`open_channel`](Self::open_channel),
///    [`channel`](Self::channel) for requests and publishes, [`close`](Self::close).
/// 4. After any of the above, write queued output while the socket takes
///    it ([`write_to`](Self::write_to), or
///    [`poll_transmit_into`](Self::poll_transmit_into) /
///    [`poll_transmit`](Self::poll_transmit) for writes of your own) and
///    drain [`poll_event`](Self::poll_event) into the application until it
///    returns `None`, then ask [`poll_timeout`](Self::poll_timeout) again.
///    Output the socket does not take stays here, where it is the
///    back-pressure ([`publish_readiness`](Self::publish_readiness)); when
///    the socket is writable again, write more
///    ([`wants_write`](Self::wants_write) says whether anything waits).
///
/// The core is deterministic: the same inputs and times give the same
/// transmits and events, whatever the split of the bytes. It never panics on
/// what the server sends; a server that breaks the protocol gets the
/// `connection.close` the specification prescribes, and every outstanding
/// request and publish is resolved with the reason before [`Event::Closed`],
/// which is always the last event.
#[derive(Debug)]
pub struct Connection {
    config: Config,
    state: State,
    decoder: FrameDecoder,
    output: Output,
    events: EventQueue,
    /// Indexed by channel id; slot 0 is never used.
    channels: Vec<Option<Channel>>,
    /// Announced bytes of the message bodies being received, all channels
    /// together.
    bodies_in_progress: u64,
    tuning: Tuning,
    now: Instant,
    handshake_deadline: Instant,
    last_received: Instant,
    last_sent: Instant,
    next_request: u64,
    /// Numbers the consumer tags [`ChannelRef::consume`] makes up.
    next_consumer_tag: u64,
    /// The epoch the next opened channel gets (see [`ChannelHandle`]).
    next_epoch: u64,
    /// A close asked for once every publish is confirmed (see
    /// [`close_when_confirmed`](Self::close_when_confirmed)).
    draining: Option<Drain>,
    /// Requests on channel 0 awaiting replies (`update-secret`).
    connection_requests: VecDeque<ConnectionRequest>,
    /// When callers stop waiting for replies, soonest first.
    request_deadlines: RequestDeadlines,
    blocked: bool,
    /// When the current blocked spell began, by the core's clock.
    blocked_since: Option<Instant>,
    challenge_pending: bool,
    /// What `connection.start` said, kept for [`Event::Opened`].
    server_properties: crate::codec::FieldTable,
    /// The topology record, when [`Config::record_topology`] is on.
    recorder: Option<Recorder>,
    /// Made by [`Connection::recover`]: replay the record after open-ok.
    replay_on_open: bool,
    /// The replay under way.
    replay: Option<Replay>,
    stats: Stats,
    /// Where [`read_from`](Self::read_from) reads into.
    read_scratch: ReadScratch,
    /// Bytes in the decoder after the last input was handled, so bytes
    /// appended to [`input_buffer`](Self::input_buffer) since are told
    /// from bytes that were there already.
    undecoded: usize,
    /// The streams this connection declared and did not delete: what
    /// RabbitMQ refuses on them is refused before it is sent.
    streams: KnownStreams,
    /// Channels the server closed for a consumer timeout, being reopened
    /// (see [`Config::reopen_timed_out_channels`]).
    channel_replays: Vec<Replay>,
    /// Channels this side is closing in order to reopen them (nacked
    /// before any ack, see [`Config::reopen_unacked_channels`]): their
    /// close-ok starts a channel replay.
    closing_to_reopen: Vec<u16>,
}

impl Connection {
    /// A connection about to start: the protocol header is queued for
    /// sending, and the handshake deadline runs from `now`.
    #[must_use]
    pub fn new(config: Config, now: Instant) -> Self {
        let mut output = Output::default();
        output.frames().extend_from_slice(&PROTOCOL_HEADER);
        let decoder = FrameDecoder::new(DecodeLimits {
            max_frame_size: FRAME_MIN_SIZE,
            max_table_depth: config.max_table_depth,
        });
        let recorder = config.record_topology.then(Recorder::default);
        Self {
            handshake_deadline: later(now, config.handshake_timeout),
            config,
            state: State::AwaitStart,
            decoder,
            output,
            events: EventQueue::default(),
            channels: Vec::new(),
            bodies_in_progress: 0,
            tuning: Tuning {
                channel_max: 0,
                frame_max: FRAME_MIN_SIZE,
                heartbeat: 0,
            },
            now,
            last_received: now,
            last_sent: now,
            next_request: 0,
            next_consumer_tag: 0,
            next_epoch: 1,
            draining: None,
            connection_requests: VecDeque::new(),
            request_deadlines: RequestDeadlines::default(),
            blocked: false,
            blocked_since: None,
            challenge_pending: false,
            server_properties: crate::codec::FieldTable::new(),
            recorder,
            replay_on_open: false,
            replay: None,
            stats: Stats::default(),
            read_scratch: ReadScratch::default(),
            undecoded: 0,
            streams: KnownStreams::default(),
            channel_replays: Vec::new(),
            closing_to_reopen: Vec::new(),
        }
    }

    /// A connection that, once open, declares `topology` again (taken from
    /// a failed connection's [`topology`](Self::topology)) before the
    /// application may use it: it reopens the same channel ids with their
    /// confirm or transaction mode and qos, declares exchanges, queues
    /// (server-named ones get new names) and bindings on a channel of its
    /// own, and consumes again with the same consumer tags. Then
    /// [`Event::Recovered`] reports new queue names and refused steps.
    /// Until then commands fail with [`UsageError::Recovering`].
    ///
    /// Delivery tags and publish sequence numbers on the recovered channels
    /// continue where the old connection's stopped: acknowledging a
    /// delivery from before the failure does nothing (the broker requeued
    /// it), and confirms of new publishes never collide with old ones.
    #[must_use]
    pub fn recover(mut config: Config, topology: Topology, now: Instant) -> Self {
        config.record_topology = true;
        let mut connection = Self::new(config, now);
        // Epochs continue the failed connection's, so no handle the
        // application kept from it can name a channel opened here.
        connection.next_epoch = topology.last_epoch() + 1;
        connection.recorder = Some(Recorder::new(topology));
        connection.replay_on_open = true;
        connection
    }

    /// The topology recorded so far (with [`Config::record_topology`]),
    /// still available after [`Event::Closed`] for
    /// [`recover`](Self::recover).
    #[must_use]
    pub fn topology(&self) -> Option<&Topology> {
        self.recorder.as_ref().map(|recorder| &recorder.topology)
    }

    /// True while a recovered connection declares its topology again.
    #[must_use]
    pub fn is_recovering(&self) -> bool {
        self.replay.is_some() || (self.replay_on_open && !self.is_open() && !self.is_closed())
    }

    /// The configuration it was created with.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The negotiated limits (before `tune`, the protocol's defaults).
    #[must_use]
    pub fn tuning(&self) -> Tuning {
        self.tuning
    }

    /// True once the handshake completed and until closing starts.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// True once [`Event::Closed`] was emitted: nothing more will happen.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// True while the broker blocks publishing on this connection.
    #[must_use]
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Feeds bytes read from the socket, in any split (the outcome is the
    /// same however they were cut), with the current time: the server is
    /// alive as of `now`.
    ///
    /// Input before timeouts: after any pause (the adapter slept past a
    /// deadline, the thread was busy, the process was suspended), feed what
    /// the socket already holds before calling
    /// [`handle_timeout`](Self::handle_timeout). The core knows only of
    /// bytes it was given; the server's heartbeats unread in the socket
    /// would not save a live connection from being judged dead
    /// ([`ConnectionError::HeartbeatTimeout`]) and dropped.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        self.decoder.extend_from_slice(bytes);
        self.handle_buffered_input(now);
    }

    /// Reads once from `reader` (a socket, a TLS stream) and handles what
    /// it gave, as rustls's `read_tls` does: returns the number of bytes
    /// read. `Ok(0)` is end of stream: the server closed the connection;
    /// report it with [`handle_transport_closed`](Self::handle_transport_closed).
    /// Errors are the reader's, returned as they are with nothing changed:
    /// on [`WouldBlock`](std::io::ErrorKind::WouldBlock) wait until the
    /// socket is readable, on [`Interrupted`](std::io::ErrorKind::Interrupted)
    /// call again, on anything else report
    /// [`handle_transport_closed`](Self::handle_transport_closed).
    ///
    /// Call it while [`wants_input`](Self::wants_input) is true, and before
    /// [`handle_timeout`](Self::handle_timeout) when both are due (see
    /// [`handle_input`](Self::handle_input)); then drain the events. One
    /// call reads at most 64 KiB; call again while the socket has more.
    ///
    /// Safe Rust cannot hand a reader the uninitialised capacity of
    /// [`input_buffer`](Self::input_buffer), so the bytes are read into a
    /// 64 KiB scratch buffer kept by the connection (zero-filled once, on
    /// the first call, never again) and copied from there, still hot in the
    /// cache, into the decoder's buffer: one copy of what was read, not a
    /// zero-fill of the whole buffer per read. Message bodies are slices of
    /// the decoder's buffer from there on. An adapter whose reader fills a
    /// [`bytes::BufMut`] (tokio's `AsyncReadExt::read_buf`) can read into
    /// [`input_buffer`](Self::input_buffer) instead and skip that copy.
    ///
    /// The core still does no IO of its own: it calls only the reader the
    /// caller hands in, once, as rustls's `read_tls` does; which socket,
    /// its readiness and its errors stay the caller's.
    pub fn read_from(
        &mut self,
        reader: &mut dyn std::io::Read,
        now: Instant,
    ) -> std::io::Result<usize> {
        let scratch = &mut self.read_scratch.0;
        if scratch.len() < READ_SIZE {
            scratch.resize(READ_SIZE, 0);
        }
        let read = reader.read(scratch)?;
        // A reader claiming more than it was given has a bug; take what
        // is there.
        let read = read.min(scratch.len());
        if read > 0 {
            self.decoder
                .extend_from_slice(scratch.get(..read).unwrap_or_default());
            self.handle_buffered_input(now);
        }
        Ok(read)
    }

    /// The receive buffer, so the adapter can read from the socket straight
    /// into it; then call [`handle_buffered_input`](Self::handle_buffered_input).
    ///
    /// Append only: reserve room and write at the end (`extend_from_slice`,
    /// or a reader that fills a [`bytes::BufMut`], such as tokio's
    /// `AsyncReadExt::read_buf` or a TLS session decrypting into it). Never
    /// remove, reorder or replace what is already there: it is the start of
    /// a frame the decoder is waiting to complete. Hand the buffer back with
    /// [`handle_buffered_input`](Self::handle_buffered_input) after every
    /// read, before [`handle_timeout`](Self::handle_timeout) (see
    /// [`handle_input`](Self::handle_input)). The decoder reserves room
    /// for a frame whose header announced it (bounded by the negotiated
    /// frame-max), and message bodies delivered become slices of this
    /// buffer, never copied again.
    ///
    /// With [`std::io::Read`], which needs initialised memory, use
    /// [`read_from`](Self::read_from): reading into this buffer safely
    /// would mean zero-filling its spare capacity before every read.
    pub fn input_buffer(&mut self) -> &mut bytes::BytesMut {
        self.decoder.buffer_mut()
    }

    /// Lends the receive buffer out, for an adapter that reads while the
    /// connection is not at hand (it sits behind a lock that an `await`
    /// must not hold): append to it, as to
    /// [`input_buffer`](Self::input_buffer), then give it back with
    /// [`handle_lent_input`](Self::handle_lent_input). Bytes read this way
    /// reach the decoder without being copied. Until it is back, handle no
    /// other input; a buffer never given back loses the frame it had begun
    /// (the connection then fails with a framing error, never a panic).
    #[must_use = "give the buffer back with handle_lent_input"]
    pub fn lend_input_buffer(&mut self) -> bytes::BytesMut {
        std::mem::take(self.decoder.buffer_mut())
    }

    /// Takes back the buffer [`lend_input_buffer`](Self::lend_input_buffer)
    /// lent, with what was appended to it, and handles the new bytes as
    /// [`handle_buffered_input`](Self::handle_buffered_input) does.
    pub fn handle_lent_input(&mut self, buffer: bytes::BytesMut, now: Instant) {
        *self.decoder.buffer_mut() = buffer;
        self.handle_buffered_input(now);
    }

    /// Processes what was read into [`input_buffer`](Self::input_buffer)
    /// since the last call; `now` is when it was read. Handling the same
    /// bytes again (nothing new arrived) is no sign of life.
    pub fn handle_buffered_input(&mut self, now: Instant) {
        self.advance_clock(now);
        let arrived = self.decoder.buffered_len().saturating_sub(self.undecoded);
        stats::add(&mut self.stats.bytes_received, arrived);
        if arrived > 0 && !self.is_closed() {
            self.last_received = self.now;
        }
        self.decode_buffered();
        self.undecoded = self.decoder.buffered_len();
        if self.draining.is_some() && self.state == State::Open && self.all_confirmed() {
            self.finish_draining();
        }
    }

    /// Decodes and handles every whole frame buffered.
    fn decode_buffered(&mut self) {
        if self.decoder.buffered_len() == 0 {
            return;
        }
        while !self.is_closed() {
            match self.decoder.decode() {
                Ok(Some(frame)) => {
                    stats::add(&mut self.stats.frames_received, 1);
                    if matches!(frame, Frame::Heartbeat) {
                        stats::add(&mut self.stats.heartbeats_received, 1);
                    }
                    let first_new = self.events.len();
                    if let Err(violation) = self.handle_frame(frame) {
                        self.protocol_violation(violation);
                    }
                    if self.recorder.is_some() {
                        self.settle_recovery_events(first_new);
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    let framing_lost = self.decoder.is_failed();
                    self.protocol_violation(ProtocolViolation::Decode(error));
                    if framing_lost {
                        // Nothing after this can be read, the close-ok
                        // included: the close is queued, and the
                        // connection ends now rather than at the deadline
                        // (or with the next bytes, which would make the
                        // outcome depend on how the input was split).
                        let error = match &self.state {
                            State::Closing { error, .. } => Some(error.clone()),
                            _ => None,
                        };
                        if let Some(error) = error {
                            self.finish(error);
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Reports that the socket reached end of stream or failed.
    pub fn handle_transport_closed(&mut self, reason: impl Into<String>) {
        let reason = reason.into();
        let error = match &self.state {
            State::Closed => return,
            State::AwaitTune => ConnectionError::AuthenticationFailed(format!(
                "the server closed the connection after start-ok ({reason}); \
                 the credentials were probably refused"
            )),
            // The server may drop the socket right after close-ok, or
            // instead of it; the close is complete either way.
            State::Closing { error, .. } => error.clone(),
            _ => ConnectionError::TransportClosed(reason),
        };
        self.output.clear();
        self.finish(error);
    }

    /// True while bytes are queued for writing: call
    /// [`write_to`](Self::write_to), [`poll_transmit_into`](Self::poll_transmit_into)
    /// or [`poll_transmit`](Self::poll_transmit) when the socket can take
    /// them. A getter: it changes nothing.
    #[must_use]
    pub fn wants_write(&self) -> bool {
        self.output.len() > 0
    }

    /// The next chunk of bytes to write, or `None` when nothing is queued.
    /// Frames are coalesced into one chunk, message bodies of at most
    /// [`Config::copy_bodies_up_to`] bytes with them; each larger body is
    /// its own chunk, never copied, so adapters can write them with one
    /// vectored write.
    ///
    /// A chunk taken is no longer the core's: an adapter that takes every
    /// chunk at once holds the queue itself, and
    /// [`publish_readiness`](Self::publish_readiness) can no longer see it
    /// (it never reports [`Readiness::OutputFull`]). Take chunks only as
    /// the socket accepts them, or use [`write_to`](Self::write_to) or
    /// [`poll_transmit_into`](Self::poll_transmit_into), which take only
    /// what is written or what fits.
    ///
    /// `now` is when the chunk is taken for writing: the next heartbeat is
    /// timed from the last write, so the time must be the real one, not that of the last input (the connection may have been
    /// idle since).
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        let chunk = self.output.pop()?;
        self.taken_for_writing(chunk.len(), now);
        Some(chunk)
    }

    /// Appends up to `max` bytes of queued output to `buf` and returns how
    /// many (0 when nothing is queued or `max` is 0): the batching path,
    /// for adapters whose write takes one contiguous buffer. Everything is
    /// copied, frames and bodies alike, so many small publishes become one
    /// write; the cost is one copy of every byte, where
    /// [`poll_transmit`](Self::poll_transmit) and [`write_to`](Self::write_to)
    /// send bodies over [`Config::copy_bodies_up_to`] from the
    /// application's memory. For large messages prefer those.
    ///
    /// How much to take: about what one write moves, the socket's send
    /// buffer or a TLS record's worth (16 KiB to 256 KiB); not everything.
    /// Bytes left in the core are the back-pressure: while more than
    /// [`Config::max_queued_output`] wait here,
    /// [`publish_readiness`](Self::publish_readiness) answers
    /// [`Readiness::OutputFull`] and publishers wait for the socket. Bytes
    /// moved into `buf` are no longer counted.
    ///
    /// Partial writes: if the socket accepts only part of `buf`, keep the
    /// rest at its front and write it first; take more from the core once
    /// `buf` is empty (or nearly). What the core hands out is never handed
    /// out again. Reuse `buf` (clear it once written) so its allocation is
    /// made once.
    ///
    /// `now` is when the bytes are taken for writing, as for
    /// [`poll_transmit`](Self::poll_transmit).
    #[must_use = "the bytes appended to buf must be written"]
    pub fn poll_transmit_into(&mut self, now: Instant, max: usize, buf: &mut Vec<u8>) -> usize {
        let taken = self.output.copy_into(max, buf);
        self.taken_for_writing(taken, now);
        taken
    }

    /// Writes queued output to `writer` with one call of
    /// [`Write::write_vectored`](std::io::Write::write_vectored) over the
    /// queued chunks (up to 64 of them: coalesced frames and small bodies,
    /// and large bodies from the application's memory, none copied), and
    /// returns how many bytes the writer accepted, as rustls's `write_tls`
    /// does. Bytes it did not accept stay queued, in order, for the next
    /// call; a chunk written in part keeps its rest at the front.
    ///
    /// Call it while [`wants_write`](Self::wants_write) is true and the
    /// socket is writable. `Ok(0)` means nothing is queued, or the writer
    /// took nothing (for a socket: it cannot take more; `write_all` would
    /// call that [`WriteZero`](std::io::ErrorKind::WriteZero)). Errors are
    /// the writer's, returned as they are, with nothing removed from the
    /// queue: on [`WouldBlock`](std::io::ErrorKind::WouldBlock) wait until
    /// the socket is writable, on
    /// [`Interrupted`](std::io::ErrorKind::Interrupted) call again, on
    /// anything else report
    /// [`handle_transport_closed`](Self::handle_transport_closed).
    ///
    /// Leaving what the socket does not take in the core is the
    /// back-pressure: [`publish_readiness`](Self::publish_readiness)
    /// reports [`Readiness::OutputFull`] while more than
    /// [`Config::max_queued_output`] bytes wait, so a slow socket slows
    /// publishers instead of growing a queue in the adapter.
    ///
    /// A writer whose `write_vectored` is the default writes only the
    /// first chunk per call (correct, but one call per chunk); sockets and
    /// TLS writers implement it. An async adapter can pass a small
    /// [`Write`](std::io::Write) over the non-blocking socket (tokio's
    /// `TcpStream::try_write_vectored`, smol's `Async::get_ref`) and wait
    /// for writability on `WouldBlock`.
    ///
    /// `now` is when the bytes are written, as for
    /// [`poll_transmit`](Self::poll_transmit).
    ///
    /// As with [`read_from`](Self::read_from), the core does no IO of its
    /// own here: it makes one `write_vectored` call on the writer the
    /// caller hands in (rustls's `write_tls` shape) and keeps what was not
    /// taken.
    pub fn write_to(
        &mut self,
        writer: &mut dyn std::io::Write,
        now: Instant,
    ) -> std::io::Result<usize> {
        let written = {
            let mut slices = [std::io::IoSlice::new(&[]); WRITE_SLICES];
            let filled = self.output.io_slices(&mut slices);
            if filled == 0 {
                return Ok(0);
            }
            writer.write_vectored(slices.get(..filled).unwrap_or_default())?
        };
        // A writer claiming more than it was given has a bug; the queue
        // never hands out a byte twice either way.
        let written = written.min(self.output.len());
        self.output.consume(written);
        self.taken_for_writing(written, now);
        Ok(written)
    }

    /// Bookkeeping for `taken` bytes handed to the adapter at `now`.
    fn taken_for_writing(&mut self, taken: usize, now: Instant) {
        if taken == 0 {
            return;
        }
        self.advance_clock(now);
        self.last_sent = self.now;
        stats::add(&mut self.stats.bytes_sent, taken);
    }

    /// What went over the connection so far: bytes, frames and heartbeats
    /// each way, messages published, confirmed, returned, delivered and
    /// settled, what is open and in flight now, and time blocked; see
    /// [`Stats`]. Cheap: a copy of a few integers plus a pass over the
    /// channel slots for the gauges. Changes nothing.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats;
        for channel in self.channels.iter().flatten() {
            if channel.is_open() {
                stats.channels_open = stats.channels_open.saturating_add(1);
            }
            let consumers = u32::try_from(channel.consumer_count()).unwrap_or(u32::MAX);
            stats.consumers = stats.consumers.saturating_add(consumers);
            stats::add(&mut stats.unconfirmed, channel.unconfirmed());
            stats.unsettled = stats.unsettled.saturating_add(channel.unsettled());
        }
        if let Some(since) = self.blocked_since {
            let spell = self.now.saturating_duration_since(since);
            stats.blocked_time = stats.blocked_time.saturating_add(spell);
        }
        stats
    }

    /// The counters, for commands that count what they send.
    pub(crate) fn stats_mut(&mut self) -> &mut Stats {
        &mut self.stats
    }

    /// A channel's state beside the counters.
    pub(crate) fn channel_and_stats(&mut self, id: u16) -> (Option<&mut Channel>, &mut Stats) {
        let channel = self
            .channels
            .get_mut(usize::from(id))
            .and_then(Option::as_mut);
        (channel, &mut self.stats)
    }

    /// A blocked spell, if one runs, ends now: its time is added up.
    fn end_blocked_spell(&mut self) {
        if let Some(since) = self.blocked_since.take() {
            let spell = self.now.saturating_duration_since(since);
            self.stats.blocked_time = self.stats.blocked_time.saturating_add(spell);
        }
    }

    /// Moves the connection's notion of the current time forward; a caller
    /// whose clock reading is older than one already given changes nothing,
    /// so deadlines never move backwards.
    fn advance_clock(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// Bytes queued for writing.
    #[must_use]
    pub fn queued_output(&self) -> usize {
        self.output.len()
    }

    /// The next event, or `None` when there is none.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// True while the adapter should keep reading from the socket: the
    /// events not yet polled are fewer than [`Config::max_buffered_events`]
    /// and hold less than [`Config::max_buffered_bytes`] (message bodies
    /// and decoded headers). Stop reading otherwise, so a slow consumer
    /// bounds memory; read again once [`poll_event`](Self::poll_event) has
    /// drained enough for it to be true. False once closed.
    ///
    /// It is asked between reads, not within one: every whole frame a read
    /// gives is decoded at once, so one read may take the buffered events
    /// past the limits, by as many events as a read holds (a 64 KiB read
    /// of small deliveries is hundreds). The bound is the limits plus one
    /// read: size reads accordingly.
    ///
    /// While it is false the dead-peer check is suspended: the adapter is
    /// not reading, so silence says nothing about the server.
    /// [`handle_timeout`](Self::handle_timeout) then restarts the count of
    /// silence at each call, so the server is judged dead only after two
    /// heartbeat intervals of silence with reading allowed. Heartbeats are
    /// still sent meanwhile.
    #[must_use]
    pub fn wants_input(&self) -> bool {
        self.state != State::Closed
            && self.events.len() < self.config.max_buffered_events
            && self.events.bytes() < self.config.max_buffered_bytes
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called:
    /// the handshake or close deadline, the next heartbeat to send, or the
    /// moment the server counts as dead. `None` once closed. Ask again after
    /// every input, command or write: each can move it.
    ///
    /// Wait for the socket to be readable or this instant to pass,
    /// whichever is first; when both happen, handle the input before the
    /// timeout (see [`handle_timeout`](Self::handle_timeout)).
    ///
    /// Heartbeats (spec 4.2.7, with the negotiated interval of
    /// [`Tuning::heartbeat`]): a heartbeat frame is due half an interval
    /// after the last write, as RabbitMQ sends its own, and the server is
    /// dead after two whole intervals in which nothing arrived from it (the
    /// specification's rule, which RabbitMQ's own check is no stricter
    /// than). [`Connection::stats`] counts the heartbeats both ways.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Closed => None,
            State::Closing { deadline, .. } => Some(*deadline),
            State::AwaitStart | State::AwaitTune | State::AwaitOpenOk => {
                let handshake = Some(self.handshake_deadline);
                handshake.min(self.heartbeat_deadline()).or(handshake)
            }
            State::Open => {
                let drain = self.draining.as_ref().map(|drain| drain.deadline);
                [
                    self.heartbeat_deadline(),
                    drain,
                    self.request_deadlines.next(),
                ]
                .into_iter()
                .flatten()
                .min()
            }
        }
    }

    fn heartbeat_interval(&self) -> Option<Duration> {
        match self.tuning.heartbeat {
            0 => None,
            seconds => Some(Duration::from_secs(u64::from(seconds))),
        }
    }

    fn heartbeat_deadline(&self) -> Option<Instant> {
        let interval = self.heartbeat_interval()?;
        let send = later(self.last_sent, interval / 2);
        let dead = later(self.last_received, interval * 2);
        Some(send.min(dead))
    }

    /// Acts on the deadlines that have passed by `now`: ends a handshake or
    /// a close that took too long, queues a heartbeat, or ends the
    /// connection if the server was silent for two heartbeat intervals
    /// ([`ConnectionError::HeartbeatTimeout`], nothing more sent, spec
    /// 4.2.7). Calling it early does nothing; calling it late acts on
    /// everything due. Then write and drain events as after any input.
    ///
    /// Input first: when the socket is readable and the deadline has come
    /// at once (after a pause above all), read and feed the bytes first
    /// ([`handle_input`](Self::handle_input),
    /// [`read_from`](Self::read_from)), then call this. The silence is
    /// measured up to the last bytes the core was given, so bytes left
    /// unread in the socket can make a live connection look dead.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance_clock(now);
        let now = self.now;
        match &self.state {
            State::Closed => return,
            State::Closing { error, deadline } => {
                if now >= *deadline {
                    let error = match error {
                        ConnectionError::Closed(reason)
                            if reason.initiator == Initiator::Client =>
                        {
                            ConnectionError::CloseTimeout
                        }
                        other => other.clone(),
                    };
                    self.finish(error);
                }
                return;
            }
            State::AwaitStart | State::AwaitTune | State::AwaitOpenOk
                if now >= self.handshake_deadline =>
            {
                self.output.clear();
                self.finish(ConnectionError::HandshakeTimeout);
                return;
            }
            _ => {}
        }
        if self
            .draining
            .as_ref()
            .is_some_and(|drain| now >= drain.deadline)
        {
            self.finish_draining();
            if self.state != State::Open {
                return;
            }
        }
        while let Some(request) = self.request_deadlines.pop_due(now) {
            if self.abandon(request) {
                self.events.push_back(Event::RequestFailed {
                    channel: request.channel(),
                    request,
                    failure: Failure::TimedOut,
                });
            }
        }
        let Some(interval) = self.heartbeat_interval() else {
            return;
        };
        if !self.wants_input() {
            // The adapter was told to stop reading until events are
            // drained: silence now says nothing about the server. Count
            // from now once reading resumes.
            self.last_received = now;
        } else if now >= later(self.last_received, interval * 2) {
            // Spec 4.2.7: a peer silent for two intervals is dead; close the
            // socket without sending anything more.
            self.output.clear();
            self.finish(ConnectionError::HeartbeatTimeout);
            return;
        }
        if now >= later(self.last_sent, interval / 2) {
            // Half the interval, as RabbitMQ does, so the server hears from
            // us at least once per interval however our writes and its
            // checks fall. Bytes already queued reach the server before a
            // heartbeat would, and any bytes count as traffic (4.2.7): a
            // heartbeat behind them adds nothing.
            if self.output.len() == 0 {
                encode_heartbeat_frame(self.output.frames());
                diagnostics::heartbeat_sent();
                stats::add(&mut self.stats.heartbeats_sent, 1);
                stats::add(&mut self.stats.frames_sent, 1);
            }
            self.last_sent = now;
        }
    }

    /// A consumer tag no consumer of channel `id` uses: `ctag-<id>.<n>`.
    pub(crate) fn new_consumer_tag(&mut self, id: u16) -> ShortString {
        loop {
            self.next_consumer_tag += 1;
            let tag = ShortString::from(format!("ctag-{id}.{}", self.next_consumer_tag).as_str());
            let taken = self
                .channel_state(id)
                .is_some_and(|channel| channel.has_consumer(&tag));
            if !taken {
                return tag;
            }
        }
    }

    fn next_request_id(&mut self, channel: u16) -> RequestId {
        self.next_request += 1;
        RequestId::new(self.next_request, channel)
    }

    fn sink(&mut self) -> Sink<'_> {
        sink!(self)
    }

    fn send(&mut self, channel: u16, method: &Method) -> Result<(), UsageError> {
        encode_method_frame(channel, method, self.tuning.frame_max, self.output.frames())?;
        stats::add(&mut self.stats.frames_sent, 1);
        if diagnostics::frames_wanted() {
            diagnostics::method_sent(channel, method);
        }
        Ok(())
    }

    fn handle_frame(&mut self, frame: Frame) -> Result<(), ProtocolViolation> {
        match self.state {
            State::Closed => Ok(()),
            State::Closing { .. } => {
                self.handle_frame_while_closing(&frame);
                Ok(())
            }
            State::AwaitStart | State::AwaitTune | State::AwaitOpenOk => {
                self.handle_handshake(frame)
            }
            State::Open => match frame {
                Frame::Heartbeat => Ok(()),
                Frame::Method { channel: 0, method } => self.handle_connection_method(method),
                Frame::Method { channel, method } => {
                    if method.id().class_id == crate::spec::ConnectionStart::ID.class_id {
                        return Err(ProtocolViolation::WrongChannel {
                            channel,
                            method: method.name(),
                        });
                    }
                    if !method.sent_by_server() {
                        return Err(ProtocolViolation::UnexpectedMethod {
                            channel,
                            method: method.name(),
                            why: "only clients send it",
                        });
                    }
                    self.with_channel(channel, |channel, sink| channel.handle_method(method, sink))
                }
                Frame::Header { channel: 0, .. } | Frame::Body { channel: 0, .. } => {
                    Err(ProtocolViolation::UnexpectedContent { channel: 0 })
                }
                Frame::Header { channel, header } => {
                    self.with_channel(channel, |channel, sink| channel.handle_header(header, sink))
                }
                Frame::Body { channel, payload } => {
                    self.with_channel(channel, |channel, sink| channel.handle_body(payload, sink))
                }
                Frame::RefusedHeader { channel: 0, .. } => {
                    Err(ProtocolViolation::UnexpectedContent { channel: 0 })
                }
                Frame::RefusedHeader {
                    channel,
                    body_size,
                    error,
                } => self.with_channel(channel, |channel, sink| {
                    channel.handle_refused_header(body_size, error, sink)
                }),
            },
        }
    }

    fn with_channel(
        &mut self,
        id: u16,
        handle: impl FnOnce(&mut Channel, &mut Sink<'_>) -> Result<Disposition, ProtocolViolation>,
    ) -> Result<(), ProtocolViolation> {
        let mut sink = sink!(self);
        let slot = self.channels.get_mut(usize::from(id));
        let Some(Some(channel)) = slot else {
            return Err(ProtocolViolation::ChannelNotOpen { channel: id });
        };
        if handle(channel, &mut sink)? == Disposition::Remove {
            // Where its numbering stopped, for a reopening of the channel
            // (after a consumer timeout) to continue from.
            if let Some(recorder) = self.recorder.as_mut() {
                recorder.rewind_streams(id);
                if let Some(record) = recorder.topology.channel_mut(id) {
                    record.delivery_tag_offset = channel.highest_delivery_tag();
                    record.publish_sequence_offset = channel.last_sequence();
                }
            }
            if let Some(slot) = self.channels.get_mut(usize::from(id)) {
                *slot = None;
            }
        }
        Ok(())
    }

    fn handle_connection_method(&mut self, method: Method) -> Result<(), ProtocolViolation> {
        match method {
            Method::ConnectionClose(close) => {
                self.sink().send(0, &ConnectionCloseOk {}.into());
                let reason = CloseReason::from_server(
                    close.reply_code,
                    &close.reply_text,
                    close.class_id,
                    close.method_id,
                );
                self.finish(ConnectionError::Closed(reason));
                Ok(())
            }
            Method::ConnectionBlocked(blocked) => {
                if !self.blocked {
                    stats::add(&mut self.stats.blocked_count, 1);
                    self.blocked_since = Some(self.now);
                }
                self.blocked = true;
                self.events.push_back(Event::Blocked {
                    reason: blocked.reason,
                });
                Ok(())
            }
            Method::ConnectionUnblocked(_) => {
                self.end_blocked_spell();
                self.blocked = false;
                self.events.push_back(Event::Unblocked);
                Ok(())
            }
            Method::ConnectionUpdateSecretOk(_) => match self.connection_requests.pop_front() {
                Some(awaited) => {
                    self.request_deadlines
                        .remove(awaited.deadline, awaited.request);
                    if !awaited.abandoned {
                        self.events.push_back(Event::Reply {
                            channel: 0,
                            request: awaited.request,
                            method,
                        });
                    }
                    Ok(())
                }
                None => Err(ProtocolViolation::UnexpectedMethod {
                    channel: 0,
                    method: method.name(),
                    why: "no update-secret awaits it",
                }),
            },
            other => Err(ProtocolViolation::UnexpectedMethod {
                channel: 0,
                method: other.name(),
                why: "not valid on an open connection's channel 0",
            }),
        }
    }

    fn handle_frame_while_closing(&mut self, frame: &Frame) {
        let State::Closing { error, .. } = &self.state else {
            return;
        };
        let error = error.clone();
        match frame {
            Frame::Method {
                channel: 0,
                method: Method::ConnectionCloseOk(_),
            } => self.finish(error),
            Frame::Method {
                channel: 0,
                method: Method::ConnectionClose(_),
            } => {
                // Both sides closed at once: answer, and we are done.
                self.sink().send(0, &ConnectionCloseOk {}.into());
                self.finish(error);
            }
            _ => {}
        }
    }

    /// Resolves everything outstanding on every channel with `error`.
    fn fail_outstanding(&mut self, error: &ConnectionError) {
        let failure = Failure::Connection(error.clone());
        let mut sink = sink!(self);
        for channel in self.channels.iter_mut().flatten() {
            if let Some(recorder) = self.recorder.as_mut() {
                recorder.rewind_streams(channel.id());
                if let Some(record) = recorder.topology.channel_mut(channel.id()) {
                    record.delivery_tag_offset = channel.highest_delivery_tag();
                    record.publish_sequence_offset = channel.last_sequence();
                }
            }
            channel.fail_outstanding(&failure, &mut sink);
        }
        self.channels.clear();
        self.bodies_in_progress = 0;
        self.request_deadlines.clear();
        for awaited in self.connection_requests.drain(..) {
            if !awaited.abandoned {
                self.events.push_back(Event::RequestFailed {
                    channel: 0,
                    request: awaited.request,
                    failure: failure.clone(),
                });
            }
        }
    }

    /// Ends the connection: resolves what is left and emits [`Event::Closed`].
    fn finish(&mut self, error: ConnectionError) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        self.draining = None;
        self.end_blocked_spell();
        self.abandon_outstanding(&error);
        self.events.push_back(Event::Closed(error));
    }

    /// Resolves everything outstanding with `error`. A replay under way
    /// ends: its own requests fail too, but the application never made
    /// them, so their failures are not reported, and nothing more of it is
    /// sent.
    fn abandon_outstanding(&mut self, error: &ConnectionError) {
        let first_new = self.events.len();
        self.fail_outstanding(error);
        if self.recorder.is_some() {
            self.intercept_replay_events(first_new);
            self.replay = None;
            self.channel_replays.clear();
            self.closing_to_reopen.clear();
            self.record_events(first_new);
        }
    }

    /// The server broke the protocol: close with the prescribed code.
    fn protocol_violation(&mut self, violation: ProtocolViolation) {
        let silent =
            matches!(&violation, ProtocolViolation::Decode(error) if error.close_silently());
        let code = violation.reply_code();
        let text = violation.to_string();
        let error = ConnectionError::ProtocolViolation { error: violation };
        if silent {
            self.output.clear();
            self.finish(error);
            return;
        }
        if !matches!(self.state, State::Closing { .. } | State::Closed) {
            diagnostics::protocol_violation(code, &text);
        }
        if matches!(self.state, State::Closing { .. }) {
            // Our close is queued already, and while closing everything but
            // the close handshake is discarded (spec 2.2.4): a frame that
            // does not decode, too. If the framing itself is lost, the
            // input loop ends the connection.
            return;
        }
        self.start_close(code, &text, error);
    }

    /// Sends `connection.close` and waits for `close-ok`; outstanding work is
    /// resolved at once with `error`.
    fn start_close(&mut self, code: ReplyCode, text: &str, error: ConnectionError) {
        let close = ConnectionClose {
            reply_code: code.0,
            reply_text: truncated(text),
            class_id: 0,
            method_id: 0,
        };
        self.sink().send(0, &close.into());
        self.abandon_outstanding(&error);
        self.state = State::Closing {
            error,
            deadline: later(self.now, self.config.close_timeout),
        };
    }

    /// Closes the connection with `code` (200 for a normal close) and `text`.
    /// Every outstanding request and publish fails at once; [`Event::Closed`]
    /// follows the server's `close-ok`, or [`Config::close_timeout`] after
    /// `now` (the current time: the deadline runs from the call, however
    /// long the connection was idle before it).
    pub fn close(&mut self, code: ReplyCode, text: &str, now: Instant) -> Result<(), UsageError> {
        self.advance_clock(now);
        match self.state {
            State::Closing { .. } | State::Closed => return Err(UsageError::ConnectionClosed),
            State::AwaitStart | State::AwaitTune => {
                // Nothing to close politely before tuning: just drop.
                self.output.clear();
                let reason = CloseReason::new(code, text, Initiator::Client);
                self.finish(ConnectionError::Closed(reason));
                return Ok(());
            }
            State::AwaitOpenOk | State::Open => {}
        }
        let reason = CloseReason::new(code, text, Initiator::Client);
        self.start_close(code, text, ConnectionError::Closed(reason));
        Ok(())
    }

    /// Closes the connection once every publish awaiting confirmation is
    /// settled, or at `deadline`, whichever comes first: the graceful way
    /// to stop a publisher. Until then new publishes and channels are
    /// refused ([`UsageError::ConnectionClosed`]) while everything else
    /// goes on (confirms arrive, deliveries can be acknowledged); then it
    /// is [`close`](Self::close) with `code` and `text`, and what is still
    /// unconfirmed at the deadline fails with it.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use amqp_proto::spec::constants::ReplyCode;
    /// # fn demo(connection: &mut amqp_proto::Connection) -> Result<(), amqp_proto::UsageError> {
    /// let now = Instant::now();
    /// connection.close_when_confirmed(
    ///     ReplyCode::REPLY_SUCCESS,
    ///     "shutting down",
    ///     now + Duration::from_secs(5),
    ///     now,
    /// )?;
    /// // Keep driving the connection until Event::Closed.
    /// # Ok(()) }
    /// ```
    pub fn close_when_confirmed(
        &mut self,
        code: ReplyCode,
        text: &str,
        deadline: Instant,
        now: Instant,
    ) -> Result<(), UsageError> {
        self.advance_clock(now);
        if self.state != State::Open || self.draining.is_some() {
            return self.close(code, text, now);
        }
        self.draining = Some(Drain {
            code,
            text: text.to_owned(),
            deadline,
        });
        if self.all_confirmed() || self.now >= deadline {
            self.finish_draining();
        }
        Ok(())
    }

    /// True when no channel has a publish awaiting confirmation.
    fn all_confirmed(&self) -> bool {
        self.channels
            .iter()
            .flatten()
            .all(|channel| channel.unconfirmed() == 0)
    }

    /// The drain is over (all confirmed, or its deadline passed): close.
    fn finish_draining(&mut self) {
        if let Some(drain) = self.draining.take() {
            let now = self.now;
            let _ = self.close(drain.code, &drain.text, now);
        }
    }

    /// True while [`close_when_confirmed`](Self::close_when_confirmed)
    /// waits for confirms: new publishes and channels are refused.
    #[must_use]
    pub fn is_draining(&self) -> bool {
        self.draining.is_some()
    }

    /// Opens a channel on the lowest free id. [`Event::ChannelOpened`]
    /// follows; requests may be sent on it at once (they are pipelined).
    /// The handle names this opening only: once the channel closes and its
    /// id is reused, the old handle names nothing.
    pub fn open_channel(&mut self) -> Result<ChannelHandle, UsageError> {
        self.check_open()?;
        if self.draining.is_some() {
            return Err(UsageError::ConnectionClosed);
        }
        let channel_max = self.tuning.channel_max;
        let free = self
            .channels
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, slot)| slot.is_none())
            .map(|(index, _)| index);
        let index = match free {
            Some(index) => index,
            None if self.channels.len() <= usize::from(channel_max) => self.channels.len().max(1),
            None => return Err(UsageError::NoFreeChannel(channel_max)),
        };
        let id = u16::try_from(index).map_err(|_| UsageError::NoFreeChannel(channel_max))?;
        let handle = ChannelHandle::new(id, self.next_epoch);
        let max_body_size = self.config.max_body_size;
        self.send_channel_open(id, |request| {
            Channel::opening(handle, request, max_body_size)
        })?;
        self.next_epoch += 1;
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.topology.issued_epoch(handle.epoch());
        }
        Ok(handle)
    }

    /// A handle for sending requests and publishes on an open (or opening)
    /// channel: `channel` is the [`ChannelHandle`] of one opening, or a
    /// bare id for whatever is open on it now (see [`ChannelKey`]).
    ///
    /// A channel being reopened after a consumer timeout
    /// ([`Event::ChannelRecovering`]) is refused with
    /// [`UsageError::Recovering`] until [`Event::ChannelRecovered`].
    pub fn channel(&mut self, channel: impl ChannelKey) -> Result<ChannelRef<'_>, UsageError> {
        self.check_open()?;
        if self.is_reopening(channel.id()) && self.channel_named(channel).is_some() {
            return Err(UsageError::Recovering);
        }
        let usable = self
            .channel_named(channel)
            .is_some_and(|state| !state.is_closing());
        if usable {
            Ok(ChannelRef::new(self, channel.id()))
        } else {
            Err(UsageError::ChannelNotOpen(channel.id()))
        }
    }

    /// The handle of the opening on `id` now, if a channel is open (or
    /// opening, or closing) there: for code that learned the id from an
    /// [`Event`] and keeps it beyond the event.
    #[must_use]
    pub fn channel_handle(&self, id: u16) -> Option<ChannelHandle> {
        self.channel_named(id).map(Channel::handle)
    }

    /// The state of the channel `key` names, if it is still there.
    fn channel_named(&self, key: impl ChannelKey) -> Option<&Channel> {
        match self.channels.get(usize::from(key.id())) {
            Some(Some(state)) if key.names(state.handle().epoch()) => Some(state),
            _ => None,
        }
    }

    /// Answers an [`Event::SaslChallenge`].
    pub fn respond_to_challenge(
        &mut self,
        response: impl Into<LongString>,
    ) -> Result<(), UsageError> {
        if !self.challenge_pending || self.state != State::AwaitTune {
            return Err(UsageError::NoChallengePending);
        }
        let secure_ok = crate::spec::ConnectionSecureOk {
            response: response.into(),
        };
        self.send(0, &secure_ok.into())?;
        self.challenge_pending = false;
        Ok(())
    }

    /// Sets when the caller stops waiting for `request`'s reply: if none
    /// has come by `deadline`, [`handle_timeout`](Self::handle_timeout)
    /// fails the request with [`Failure::TimedOut`] (an
    /// [`Event::RequestFailed`]) and abandons it, as
    /// [`abandon_request`](Self::abandon_request) does, so a reply that
    /// comes later is given back rather than reported. The deadline counts
    /// in [`poll_timeout`](Self::poll_timeout). Setting it again replaces
    /// the earlier one. AMQP cannot withdraw a request once sent, so this
    /// is the whole of a timeout: the channel stays usable, and its later
    /// replies still match their own requests.
    ///
    /// Works for any request: a channel's synchronous methods (a
    /// [`Pending`](crate::Pending)'s [`request`](crate::Pending::request)
    /// included), its `channel.open` ([`ChannelRef::open_request`]) and
    /// `update-secret`. Returns false, changing nothing, if `request` has
    /// already been answered, failed or abandoned.
    ///
    /// ```
    /// # use std::time::{Duration, Instant};
    /// # use amqp_proto::{ChannelHandle, Connection, Event, Failure, UsageError};
    /// use amqp_proto::spec::QueueDeclare;
    ///
    /// # fn demo(connection: &mut Connection, channel: ChannelHandle, now: Instant) -> Result<(), UsageError> {
    /// let declare = connection.channel(channel)?.call(QueueDeclare::default())?;
    /// connection.set_request_deadline(declare.request(), now + Duration::from_secs(30));
    /// // ... later, with the time come and nothing read:
    /// connection.handle_timeout(now + Duration::from_secs(30));
    /// while let Some(event) = connection.poll_event() {
    ///     if let Some(outcome) = declare.answer(&event) {
    ///         assert_eq!(outcome.unwrap_err(), Failure::TimedOut);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn set_request_deadline(&mut self, request: RequestId, deadline: Instant) -> bool {
        let channel = request.channel();
        if channel == 0 {
            let Some(awaited) = self
                .connection_requests
                .iter_mut()
                .find(|awaited| awaited.request == request && !awaited.abandoned)
            else {
                return false;
            };
            self.request_deadlines.remove(awaited.deadline, request);
            awaited.deadline = Some(deadline);
            self.request_deadlines.insert(deadline, request);
            return true;
        }
        let mut sink = sink!(self);
        match self.channels.get_mut(usize::from(channel)) {
            Some(Some(state)) => state.set_deadline(request, deadline, &mut sink),
            _ => false,
        }
    }

    /// Nobody waits for `request`'s reply any more (its caller gave up, or
    /// its future was dropped). No event reports the request again, and
    /// what its reply carries is given back to the broker when it comes:
    ///
    /// | request | when its reply comes |
    /// |---|---|
    /// | `basic.get` | the message is rejected with requeue (with `no_ack` the broker counts it delivered: it is dropped) |
    /// | `basic.consume` | the consumer is cancelled; what it is delivered until the cancel-ok is requeued likewise |
    /// | `basic.cancel` | what the consumer is delivered until the cancel-ok is requeued |
    /// | `channel.open` | (at once) the channel is closed; [`Event::ChannelClosed`] frees its id |
    /// | any other | the reply is dropped |
    ///
    /// A message among these that breaks a per-message limit is rejected
    /// without requeue, as any refused message is, but with no event
    /// ([`Event::MessageRefused`] or [`Event::RequestFailed`]): nobody
    /// waits for it.
    ///
    /// Returns false, changing nothing, if `request` has already been
    /// answered, failed or abandoned: then its outcome is the caller's,
    /// and giving back what it carries is the caller's too.
    pub fn abandon_request(&mut self, request: RequestId) -> bool {
        self.abandon(request)
    }

    fn abandon(&mut self, request: RequestId) -> bool {
        let channel = request.channel();
        if channel == 0 {
            let Some(awaited) = self
                .connection_requests
                .iter_mut()
                .find(|awaited| awaited.request == request && !awaited.abandoned)
            else {
                return false;
            };
            awaited.abandoned = true;
            self.request_deadlines
                .remove(awaited.deadline.take(), request);
            return true;
        }
        let mut sink = sink!(self);
        let abandoned = match self.channels.get_mut(usize::from(channel)) {
            Some(Some(state)) => state.abandon(request, &mut sink),
            _ => Abandoned::Unknown,
        };
        match abandoned {
            Abandoned::Unknown => false,
            Abandoned::Marked => true,
            Abandoned::Open => {
                // A close is a few bytes: it cannot fail to encode.
                let _ = self.send_channel_close(channel, ReplyCode::REPLY_SUCCESS, "abandoned");
                true
            }
        }
    }

    /// Replaces the connection's secret (RabbitMQ's `update-secret`, for
    /// expiring OAuth 2 tokens); the reply is an [`Event::Reply`] on
    /// channel 0 with the returned request id.
    pub fn update_secret(
        &mut self,
        new_secret: impl Into<LongString>,
        reason: &str,
    ) -> Result<RequestId, UsageError> {
        self.check_open()?;
        let update = ConnectionUpdateSecret {
            new_secret: new_secret.into(),
            reason: reason.into(),
        };
        self.send(0, &update.into())?;
        let request = self.next_request_id(0);
        self.connection_requests.push_back(ConnectionRequest {
            request,
            deadline: None,
            abandoned: false,
        });
        Ok(request)
    }

    /// The one back-pressure answer for a publisher on `channel`, folding
    /// the broker's `connection.blocked`, `channel.flow`, the unconfirmed
    /// window and the output queue. Publishing anyway is allowed (the core
    /// queues it), but memory then grows.
    #[must_use]
    pub fn publish_readiness(&self, channel: impl ChannelKey) -> Readiness {
        if self.is_recovering() {
            // The channel may not be reopened yet; it will be.
            return Readiness::Recovering;
        }
        let Some(state) = self.channel_named(channel) else {
            return Readiness::Closed;
        };
        if self.is_reopening(channel.id()) {
            // Closing to be reopened, or being reopened: it will be back.
            return Readiness::Recovering;
        }
        if self.state != State::Open || state.is_closing() {
            Readiness::Closed
        } else if self.blocked {
            Readiness::Blocked
        } else if !state.flow_active() {
            Readiness::FlowPaused
        } else if state.unconfirmed() >= self.config.max_unconfirmed {
            Readiness::ConfirmWindowFull
        } else if self.output.len() >= self.config.max_queued_output {
            Readiness::OutputFull
        } else {
            Readiness::Ready
        }
    }

    /// True while the publish numbered `sequence` on `channel` awaits its
    /// [`Event::Confirm`]. False once settled, and for a channel that is
    /// gone (its [`Event::Confirm`]s with [`ConfirmOutcome::Failed`](crate::ConfirmOutcome::Failed)
    /// were emitted when it closed).
    #[must_use]
    pub fn is_unconfirmed(&self, channel: impl ChannelKey, sequence: u64) -> bool {
        self.channel_named(channel)
            .is_some_and(|state| state.is_unconfirmed(sequence))
    }

    /// Publishes on `channel` awaiting confirmation (0 for a channel that
    /// is gone or not in confirm mode).
    #[must_use]
    pub fn unconfirmed(&self, channel: impl ChannelKey) -> usize {
        self.channel_named(channel).map_or(0, Channel::unconfirmed)
    }

    pub(crate) fn output_mut(&mut self) -> &mut Output {
        &mut self.output
    }

    pub(crate) fn channel_state(&mut self, id: u16) -> Option<&mut Channel> {
        self.channels.get_mut(usize::from(id))?.as_mut()
    }

    /// Queues `method` on channel `id` and tells the channel it was sent;
    /// the request id its reply will carry, if one will come.
    pub(crate) fn send_request(
        &mut self,
        id: u16,
        method: &Method,
    ) -> Result<Option<RequestId>, crate::EncodeError> {
        encode_method_frame(id, method, self.tuning.frame_max, self.output.frames())?;
        stats::add(&mut self.stats.frames_sent, 1);
        if diagnostics::frames_wanted() {
            diagnostics::method_sent(id, method);
        }
        let request = method.expects_reply().then(|| self.next_request_id(id));
        let stream = match method {
            Method::BasicConsume(consume) => self.is_stream_consume(consume),
            _ => false,
        };
        if let Some(channel) = self.channel_state(id) {
            channel.sent(method, request, stream);
        }
        // Without a reply to wait for, what a declaration or deletion does
        // to the streams known is taken as done.
        if request.is_none() {
            match method {
                Method::QueueDeclare(declare)
                    if !declare.passive
                        && crate::queue::QueueType::of(&declare.arguments)
                            == Some(crate::queue::QueueType::Stream) =>
                {
                    self.streams.insert(declare.queue.clone());
                }
                Method::QueueDelete(delete) => self.streams.remove(&delete.queue),
                _ => {}
            }
        }
        Ok(request)
    }

    /// True if `consume` is of a stream: it says where in the stream to
    /// start (`x-stream-offset`), or its queue is a stream this connection
    /// declared.
    pub(crate) fn is_stream_consume(&self, consume: &crate::spec::BasicConsume) -> bool {
        consume.arguments.get(crate::queue::STREAM_OFFSET).is_some()
            || self.streams.contains(&consume.queue)
    }

    /// True if `queue` is a stream this connection declared (a
    /// `queue.declare` with `x-queue-type` = `stream` the server
    /// confirmed) and has not deleted since. Consumes, gets and
    /// settlements on it are checked against what RabbitMQ refuses on
    /// streams ([`UsageError::Stream`]).
    #[must_use]
    pub fn is_declared_stream(&self, queue: &str) -> bool {
        self.is_declared_stream_name(&ShortString::from(queue))
    }

    pub(crate) fn is_declared_stream_name(&self, queue: &ShortString) -> bool {
        self.streams.contains(queue)
    }

    /// Queues `channel.close` on channel `id` and starts its close
    /// handshake.
    pub(crate) fn send_channel_close(
        &mut self,
        id: u16,
        code: ReplyCode,
        text: &str,
    ) -> Result<(), crate::EncodeError> {
        let close = ChannelClose {
            reply_code: code.0,
            reply_text: text.into(),
            class_id: 0,
            method_id: 0,
        };
        encode_method_frame(
            id,
            &close.into(),
            self.tuning.frame_max,
            self.output.frames(),
        )?;
        stats::add(&mut self.stats.frames_sent, 1);
        if let Some(channel) = self.channel_state(id) {
            let abandoned = channel.start_close(CloseReason::new(code, text, Initiator::Client));
            self.bodies_in_progress = self.bodies_in_progress.saturating_sub(abandoned);
        }
        Ok(())
    }

    /// Sends `channel.open` on `id` and puts `channel` (made with the
    /// request id it is given) in its slot.
    pub(crate) fn send_channel_open(
        &mut self,
        id: u16,
        channel: impl FnOnce(RequestId) -> Channel,
    ) -> Result<(), UsageError> {
        self.send(id, &crate::spec::ChannelOpen::default().into())?;
        let request = self.next_request_id(id);
        let index = usize::from(id);
        if self.channels.len() <= index {
            self.channels.resize_with(index + 1, || None);
        }
        if let Some(slot) = self.channels.get_mut(index) {
            *slot = Some(channel(request));
        }
        Ok(())
    }

    pub(crate) fn recorder_mut(&mut self) -> Option<&mut Recorder> {
        self.recorder.as_mut()
    }

    fn check_open(&self) -> Result<(), UsageError> {
        match self.state {
            State::Open if self.is_recovering() => Err(UsageError::Recovering),
            State::Open => Ok(()),
            State::Closing { .. } | State::Closed => Err(UsageError::ConnectionClosed),
            // A recovered connection's handshake is part of its recovery:
            // the application, holding its channels' handles, is told to
            // wait for `Event::Recovered`, as `publish_readiness` tells it.
            _ if self.is_recovering() => Err(UsageError::Recovering),
            _ => Err(UsageError::NotOpen),
        }
    }
}

/// A request on channel 0 awaiting its reply.
#[derive(Debug)]
struct ConnectionRequest {
    request: RequestId,
    deadline: Option<Instant>,
    abandoned: bool,
}

/// A close waiting for every publish to be confirmed.
#[derive(Debug)]
struct Drain {
    code: ReplyCode,
    text: String,
    deadline: Instant,
}

/// `at + by`, or the latest instant this platform can represent when that
/// overflows (a configured timeout of `Duration::MAX` means "never").
fn later(at: Instant, by: Duration) -> Instant {
    let mut by = by;
    loop {
        if let Some(instant) = at.checked_add(by) {
            return instant;
        }
        by /= 2;
    }
}

/// A reply text cut to fit a short string, on a character boundary.
fn truncated(text: &str) -> ShortString {
    let mut end = text.len().min(255);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    ShortString::from(text.get(..end).unwrap_or_default())
}
