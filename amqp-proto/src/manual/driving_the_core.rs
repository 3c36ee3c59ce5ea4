//! Driving the core: the loop an adapter runs, and the rules behind it.
//!
//! A [`Connection`] is a value that takes bytes and instants and gives back
//! bytes, events and one deadline. Something has to carry bytes between it
//! and a socket, read a clock and decide when to sleep: that is an adapter,
//! and this chapter is what one needs to know to write it, on a blocking
//! socket, an event loop ([`mio`](https://docs.rs/mio), `epoll`, `kqueue`,
//! io_uring), an async runtime, or a test harness with a simulated clock.
//! `examples/std_by_hand.rs` does it over a blocking `TcpStream`,
//! `examples/nonblocking.rs` with mio's readiness events.
//!
//! Every example below runs as a test. The server's side is played in a few
//! hidden lines that encode frames with [`codec`](crate::codec), and time is
//! simulated: an `Instant` read once and then moved on by adding
//! durations, so what the text says about heartbeats and deadlines is
//! checked to the millisecond without waiting for it.
//!
//! # The loop
//!
//! An adapter repeats one pass, whenever the socket becomes readable or
//! writable or the deadline [`poll_timeout`](crate::Connection::poll_timeout)
//! named has come:
//!
//! 1. **Input.** Read from the socket and hand the bytes to the core
//!    ([`read_from`](crate::Connection::read_from), or
//!    [`handle_input`](crate::Connection::handle_input)), until the socket has no
//!    more or [`wants_input`](crate::Connection::wants_input) turns false. End of
//!    stream and errors go to
//!    [`handle_transport_closed`](crate::Connection::handle_transport_closed).
//! 2. **Time.** [`handle_timeout`](crate::Connection::handle_timeout) with the
//!    current time. Calling it when nothing is due does nothing, so there is
//!    no need to check first.
//! 3. **Events.** Drain [`poll_event`](crate::Connection::poll_event) into the
//!    application until it returns `None`. The application answers with
//!    commands ([`open_channel`](crate::Connection::open_channel),
//!    [`channel`](crate::Connection::channel)`(..).publish(..)`, acks,
//!    [`close`](crate::Connection::close)); each queues frames and returns at once.
//! 4. **Output.** Write while [`wants_write`](crate::Connection::wants_write) is
//!    true and the socket takes bytes ([`write_to`](crate::Connection::write_to)).
//!    What the socket does not take stays queued in the core.
//! 5. **Sleep** until the socket is readable (while `wants_input`), writable
//!    (only while `wants_write`: an idle socket is always writable, and
//!    waiting for that would spin), or the instant `poll_timeout` returns.
//!
//! Commands made outside a pass (from another part of the program) are the
//! same as commands made in step 3: write after them, or wake the loop so
//! that it does.
//!
//! With edge-triggered readiness (mio, `epoll` with `EPOLLET`), an event
//! says that readability or writability began, not that it lasts. Keep
//! the socket marked readable (writable) until a read (write) answers
//! [`WouldBlock`](std::io::ErrorKind::WouldBlock), and pass again without
//! sleeping while a direction marked ready has work: a read stopped
//! because `wants_input` turned false gets no new event when it turns
//! true again. `examples/nonblocking.rs` does this.
//!
//! ```
//! # use std::io::{self, ErrorKind, Read, Write};
//! # use std::time::{Duration, Instant};
//! # use amqp_proto::bytes::BytesMut;
//! # use amqp_proto::codec::encode_method_frame;
//! # use amqp_proto::spec::{self, Method};
//! # use amqp_proto::{Config, Connection, Event};
//! # // The server's side: one method frame, encoded with the codec.
//! # fn server(channel: u16, method: impl Into<Method>) -> BytesMut {
//! #     let mut bytes = BytesMut::new();
//! #     encode_method_frame(channel, &method.into(), 131_072, &mut bytes).unwrap();
//! #     bytes
//! # }
//! # // A non-blocking socket in memory: reads give what the server sent,
//! # // then WouldBlock; writes are kept for the server to read.
//! # #[derive(Default)]
//! # struct Socket { unread: Vec<u8>, written: Vec<u8> }
//! # impl Read for Socket {
//! #     fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
//! #         if self.unread.is_empty() {
//! #             return Err(ErrorKind::WouldBlock.into());
//! #         }
//! #         let n = buf.len().min(self.unread.len());
//! #         buf[..n].copy_from_slice(&self.unread[..n]);
//! #         self.unread.drain(..n);
//! #         Ok(n)
//! #     }
//! # }
//! # impl Write for Socket {
//! #     fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
//! #         self.written.extend_from_slice(buf);
//! #         Ok(buf.len())
//! #     }
//! #     fn flush(&mut self) -> io::Result<()> { Ok(()) }
//! # }
//! /// One pass of the loop, after the socket or the clock woke the adapter;
//! /// `application` gets every event and may answer with commands.
//! fn pass(
//!     connection: &mut Connection,
//!     socket: &mut Socket,
//!     now: Instant,
//!     application: &mut impl FnMut(&mut Connection, Event),
//! ) {
//!     // 1. Input: everything the socket holds, while the core wants it.
//!     while connection.wants_input() {
//!         match connection.read_from(socket, now) {
//!             Ok(0) => connection.handle_transport_closed("end of stream"),
//!             Ok(_) => continue,
//!             Err(e) if e.kind() == ErrorKind::Interrupted => continue,
//!             Err(e) if e.kind() == ErrorKind::WouldBlock => {}
//!             Err(e) => connection.handle_transport_closed(e.to_string()),
//!         }
//!         break;
//!     }
//!     // 2. Time, now that the input is in.
//!     connection.handle_timeout(now);
//!     // 3. Events; the application's commands queue output.
//!     while let Some(event) = connection.poll_event() {
//!         application(connection, event);
//!     }
//!     // 4. Output, while the socket takes it.
//!     while connection.wants_write() {
//!         match connection.write_to(socket, now) {
//!             Ok(0) => connection.handle_transport_closed("the socket took nothing"),
//!             Ok(_) => continue,
//!             Err(e) if e.kind() == ErrorKind::Interrupted => continue,
//!             Err(e) if e.kind() == ErrorKind::WouldBlock => {}
//!             Err(e) => connection.handle_transport_closed(e.to_string()),
//!         }
//!         break;
//!     }
//!     // A failed write ended the connection: its Event::Closed is the last.
//!     while let Some(event) = connection.poll_event() {
//!         application(connection, event);
//!     }
//! }
//!
//! let start = Instant::now();
//! let mut connection = Connection::new(Config::default(), start);
//! let mut socket = Socket::default();
//! let mut seen = Vec::new();
//! // The application opens a channel as soon as the connection is open.
//! let mut application = |connection: &mut Connection, event: Event| {
//!     if let Event::Opened { .. } = event {
//!         connection.open_channel().unwrap();
//!     }
//!     seen.push(event);
//! };
//!
//! // The first pass writes the protocol header.
//! pass(&mut connection, &mut socket, start, &mut application);
//! assert_eq!(socket.written, b"AMQP\x00\x00\x09\x01");
//!
//! // The server's handshake arrives in one read; one pass answers it all
//! // and writes the channel.open the application asked for.
//! # let start_method = spec::ConnectionStart {
//! #     version_major: 0,
//! #     version_minor: 9,
//! #     mechanisms: "PLAIN".into(),
//! #     locales: "en_US".into(),
//! #     ..Default::default()
//! # };
//! # let tune = spec::ConnectionTune { channel_max: 2047, frame_max: 131_072, heartbeat: 60 };
//! socket.unread.extend_from_slice(&server(0, start_method));
//! socket.unread.extend_from_slice(&server(0, tune));
//! socket.unread.extend_from_slice(&server(0, spec::ConnectionOpenOk::default()));
//! let now = start + Duration::from_millis(3);
//! pass(&mut connection, &mut socket, now, &mut application);
//! socket.unread.extend_from_slice(&server(1, spec::ChannelOpenOk::default()));
//! pass(&mut connection, &mut socket, now, &mut application);
//! assert!(matches!(
//!     seen.as_slice(),
//!     [Event::Opened { .. }, Event::ChannelOpened { channel: 1, .. }]
//! ));
//!
//! // 5. Nothing to write, so sleep until readable or the deadline: the
//! // first heartbeat, half the 60 s interval after the last write.
//! assert!(!connection.wants_write());
//! assert_eq!(connection.poll_timeout(), Some(now + Duration::from_secs(30)));
//! ```
//!
//! # Input, time, output: in that order
//!
//! Within a pass the order matters in one place: **input before
//! [`handle_timeout`](crate::Connection::handle_timeout)**. The core judges the
//! server dead when nothing arrived from it for two heartbeat intervals, and
//! "arrived" can only mean "was given to the core": bytes waiting unread in
//! the socket are invisible to it. After any pause (a thread busy with the
//! application, a process suspended, a laptop asleep, a loop that slept
//! past its deadline), the server's heartbeats of that time are in the
//! socket buffer. Read them first and the connection is alive; call
//! `handle_timeout` first and it sees only silence, drops a healthy
//! connection with [`ConnectionError::HeartbeatTimeout`](crate::ConnectionError::HeartbeatTimeout)
//! (sending nothing more, as the specification prescribes for a dead
//! peer), and the bytes that would have saved it are read too late.
//!
//! An adapter that waits with a read timeout (`std_by_hand`) gets this order
//! naturally: the read returns whatever is there, and the timeout is handled
//! after it. One that waits on readiness should read until
//! [`WouldBlock`](std::io::ErrorKind::WouldBlock) before handling the
//! timeout, even when it was the timer that woke it.
//!
//! Events come after both, so the application sees everything the input and
//! the timers produced at once; output comes last, so what the core answered
//! on its own (a heartbeat, a `close-ok`, a `channel.flow-ok`) and what the
//! application commanded go out in the same write.
//!
//! ```
//! # use std::time::{Duration, Instant};
//! # use amqp_proto::bytes::BytesMut;
//! # use amqp_proto::codec::{encode_heartbeat_frame, encode_method_frame};
//! # use amqp_proto::spec::{self, Method};
//! # use amqp_proto::{Config, Connection, ConnectionError, Event};
//! # fn server(channel: u16, method: impl Into<Method>) -> BytesMut {
//! #     let mut bytes = BytesMut::new();
//! #     encode_method_frame(channel, &method.into(), 131_072, &mut bytes).unwrap();
//! #     bytes
//! # }
//! # // A connection through its handshake at `now`, all it wrote taken.
//! # fn open(config: Config, now: Instant) -> Connection {
//! #     let mut connection = Connection::new(config, now);
//! #     let start = spec::ConnectionStart {
//! #         version_major: 0,
//! #         version_minor: 9,
//! #         mechanisms: "PLAIN".into(),
//! #         locales: "en_US".into(),
//! #         ..Default::default()
//! #     };
//! #     connection.handle_input(&server(0, start), now);
//! #     let tune = spec::ConnectionTune { channel_max: 2047, frame_max: 131_072, heartbeat: 60 };
//! #     connection.handle_input(&server(0, tune), now);
//! #     connection.handle_input(&server(0, spec::ConnectionOpenOk::default()), now);
//! #     while connection.poll_transmit(now).is_some() {}
//! #     assert!(matches!(connection.poll_event(), Some(Event::Opened { .. })));
//! #     connection
//! # }
//! let start = Instant::now();
//! // 10 s heartbeats: the server is dead after 20 s of silence.
//! let config = Config::default().with_heartbeat(10);
//! let mut right = open(config.clone(), start);
//! let mut wrong = open(config, start);
//!
//! // The process was suspended for 25 s. Meanwhile the server sent a
//! // heartbeat every 5 s; they wait in the socket buffer, unread.
//! let mut unread = BytesMut::new();
//! for _ in 0..5 {
//!     encode_heartbeat_frame(&mut unread);
//! }
//! let resumed = start + Duration::from_secs(25);
//!
//! // Input first: the heartbeats count, the connection lives.
//! right.handle_input(&unread, resumed);
//! right.handle_timeout(resumed);
//! assert!(right.is_open());
//! assert_eq!(right.poll_event(), None);
//! assert_eq!(right.stats().heartbeats_received, 5);
//!
//! // Timeout first: 25 s of silence, as far as the core knows.
//! wrong.handle_timeout(resumed);
//! wrong.handle_input(&unread, resumed); // too late, ignored
//! assert_eq!(wrong.poll_event(), Some(Event::Closed(ConnectionError::HeartbeatTimeout)));
//! assert!(!wrong.wants_write()); // a dead peer is sent nothing more
//! ```
//!
//! # Output: partial and vectored writes
//!
//! The core keeps its output as a queue of chunks: frames encoded into a
//! buffer it reuses, and every message body larger than
//! [`Config::copy_bodies_up_to`](crate::Config::copy_bodies_up_to) as its own
//! chunk, a slice of the [`Bytes`](crate::bytes::Bytes) the application published
//! (never copied). Smaller bodies are copied in with their frames, so a
//! stream of small publishes becomes one contiguous run of bytes. There are
//! three ways to take it out:
//!
//! - [`write_to`](crate::Connection::write_to) makes one
//!   [`write_vectored`](std::io::Write::write_vectored) call over up to 64
//!   queued chunks and removes exactly what the writer accepted. A chunk
//!   written in part keeps its rest at the front; nothing is reordered,
//!   nothing is handed out twice. On `WouldBlock` (or any error) nothing is
//!   removed. This is the path for anything that implements
//!   [`Write`](std::io::Write) (a socket, a TLS stream, a small wrapper over
//!   an async runtime's `try_write_vectored`).
//! - [`poll_transmit_into`](crate::Connection::poll_transmit_into) copies at most
//!   `max` bytes into a `Vec<u8>` of the adapter's, for writes that take one
//!   contiguous buffer. It copies everything, bodies too (one copy of every
//!   byte, which pays for small messages and not for large ones). What it
//!   copied is the adapter's to write (after any rest of the previous
//!   batch); the rest stays in the core.
//! - [`poll_transmit`](crate::Connection::poll_transmit) hands out one whole chunk
//!   as [`Bytes`](crate::bytes::Bytes), for an adapter that submits buffers and
//!   keeps them alive until written (io_uring, a runtime's owned-buffer
//!   writes). A large body's chunk is the application's own memory. The
//!   chunk is the adapter's from then on.
//!
//! What stays queued in the core is what counts toward
//! [`Config::max_queued_output`](crate::Config::max_queued_output) and so
//! toward [`Readiness::OutputFull`] (next section), and what
//! [`queued_output`](crate::Connection::queued_output) reports.
//! [`Stats::bytes_sent`](crate::Stats::bytes_sent) counts what was taken out.
//!
//! ```
//! # use std::io::{self, ErrorKind, IoSlice, Write};
//! # use std::time::Instant;
//! # use amqp_proto::bytes::{Bytes, BytesMut};
//! # use amqp_proto::codec::{encode_method_frame, BasicProperties, DecodeLimits, Frame, FrameDecoder};
//! # use amqp_proto::spec::{self, Method};
//! # use amqp_proto::{ChannelHandle, Config, Connection, Event};
//! # fn server(channel: u16, method: impl Into<Method>) -> BytesMut {
//! #     let mut bytes = BytesMut::new();
//! #     encode_method_frame(channel, &method.into(), 131_072, &mut bytes).unwrap();
//! #     bytes
//! # }
//! # fn open(config: Config, now: Instant) -> (Connection, ChannelHandle) {
//! #     let mut connection = Connection::new(config, now);
//! #     let start = spec::ConnectionStart {
//! #         version_major: 0,
//! #         version_minor: 9,
//! #         mechanisms: "PLAIN".into(),
//! #         locales: "en_US".into(),
//! #         ..Default::default()
//! #     };
//! #     connection.handle_input(&server(0, start), now);
//! #     let tune = spec::ConnectionTune { channel_max: 2047, frame_max: 131_072, heartbeat: 60 };
//! #     connection.handle_input(&server(0, tune), now);
//! #     connection.handle_input(&server(0, spec::ConnectionOpenOk::default()), now);
//! #     let channel = connection.open_channel().unwrap();
//! #     connection.handle_input(&server(channel.id(), spec::ChannelOpenOk::default()), now);
//! #     while connection.poll_transmit(now).is_some() {}
//! #     while connection.poll_event().is_some() {}
//! #     (connection, channel)
//! # }
//! # // What the client wrote, decoded as a server would.
//! # fn frames(bytes: &[u8]) -> Vec<Frame> {
//! #     let limits = DecodeLimits { max_frame_size: 131_072, ..Default::default() };
//! #     let mut decoder = FrameDecoder::new(limits);
//! #     decoder.extend_from_slice(bytes);
//! #     std::iter::from_fn(|| decoder.decode().unwrap()).collect()
//! # }
//! # // A socket whose send buffer has `room` bytes free; write_vectored
//! # // takes from as many slices as fit, as a kernel does.
//! # struct Socket { room: usize, calls: usize, written: Vec<u8> }
//! # impl Write for Socket {
//! #     fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
//! #         self.write_vectored(&[IoSlice::new(buf)])
//! #     }
//! #     fn write_vectored(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
//! #         if self.room == 0 {
//! #             return Err(ErrorKind::WouldBlock.into());
//! #         }
//! #         self.calls += 1;
//! #         let mut taken = 0;
//! #         for slice in slices {
//! #             let n = slice.len().min(self.room - taken);
//! #             self.written.extend_from_slice(&slice[..n]);
//! #             taken += n;
//! #         }
//! #         self.room -= taken;
//! #         Ok(taken)
//! #     }
//! #     fn flush(&mut self) -> io::Result<()> { Ok(()) }
//! # }
//! let now = Instant::now();
//! let (mut connection, channel) = open(Config::default(), now);
//! let publish = spec::BasicPublish { routing_key: "jobs".into(), ..Default::default() };
//! let properties = BasicProperties::default();
//! let large = Bytes::from(vec![7_u8; 100_000]); // over copy_bodies_up_to
//! connection.channel(channel)?.publish(&publish, &properties, large.clone())?;
//! connection.channel(channel)?.publish(&publish, &properties, "small")?;
//! let queued = connection.queued_output();
//! let sent_before = connection.stats().bytes_sent;
//!
//! // The socket has room for 30,000 bytes: one vectored write takes the
//! // first frames and the start of the large body; the rest stays queued.
//! let mut socket = Socket { room: 30_000, calls: 0, written: Vec::new() };
//! assert_eq!(connection.write_to(&mut socket, now)?, 30_000);
//! assert_eq!(socket.calls, 1);
//! assert_eq!(connection.queued_output(), queued - 30_000);
//!
//! // Full: WouldBlock, and nothing leaves the queue. Wait for writable.
//! let error = connection.write_to(&mut socket, now).unwrap_err();
//! assert_eq!(error.kind(), ErrorKind::WouldBlock);
//! assert_eq!(connection.queued_output(), queued - 30_000);
//!
//! // Writable again: go on where the last write stopped.
//! while connection.wants_write() {
//!     socket.room = 30_000;
//!     connection.write_to(&mut socket, now)?;
//! }
//! assert_eq!(connection.stats().bytes_sent - sent_before, socket.written.len() as u64);
//! let frames = frames(&socket.written);
//! assert_eq!(frames.len(), 6); // method, header and body, twice
//! assert!(matches!(&frames[2], Frame::Body { payload, .. } if payload == &large));
//! assert!(matches!(&frames[5], Frame::Body { payload, .. } if payload == "small"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The other two paths, on the same two publishes:
//!
//! ```
//! # use std::time::Instant;
//! # use amqp_proto::bytes::{Bytes, BytesMut};
//! # use amqp_proto::codec::{encode_method_frame, BasicProperties};
//! # use amqp_proto::spec::{self, Method};
//! # use amqp_proto::{ChannelHandle, Config, Connection};
//! # fn server(channel: u16, method: impl Into<Method>) -> BytesMut {
//! #     let mut bytes = BytesMut::new();
//! #     encode_method_frame(channel, &method.into(), 131_072, &mut bytes).unwrap();
//! #     bytes
//! # }
//! # fn open(config: Config, now: Instant) -> (Connection, ChannelHandle) {
//! #     let mut connection = Connection::new(config, now);
//! #     let start = spec::ConnectionStart {
//! #         version_major: 0,
//! #         version_minor: 9,
//! #         mechanisms: "PLAIN".into(),
//! #         locales: "en_US".into(),
//! #         ..Default::default()
//! #     };
//! #     connection.handle_input(&server(0, start), now);
//! #     let tune = spec::ConnectionTune { channel_max: 2047, frame_max: 131_072, heartbeat: 60 };
//! #     connection.handle_input(&server(0, tune), now);
//! #     connection.handle_input(&server(0, spec::ConnectionOpenOk::default()), now);
//! #     let channel = connection.open_channel().unwrap();
//! #     connection.handle_input(&server(channel.id(), spec::ChannelOpenOk::default()), now);
//! #     while connection.poll_transmit(now).is_some() {}
//! #     while connection.poll_event().is_some() {}
//! #     (connection, channel)
//! # }
//! # let now = Instant::now();
//! # let publish = spec::BasicPublish { routing_key: "jobs".into(), ..Default::default() };
//! # let properties = BasicProperties::default();
//! # let large = Bytes::from(vec![7_u8; 100_000]);
//! # let publish_both = |connection: &mut Connection, channel: ChannelHandle| {
//! #     connection.channel(channel).unwrap().publish(&publish, &properties, large.clone()).unwrap();
//! #     connection.channel(channel).unwrap().publish(&publish, &properties, "small").unwrap();
//! # };
//! // poll_transmit: whole chunks. The large body's chunk is the very
//! // memory the application published, not a copy of it.
//! let (mut connection, channel) = open(Config::default(), now);
//! publish_both(&mut connection, channel);
//! let chunks: Vec<Bytes> = std::iter::from_fn(|| connection.poll_transmit(now)).collect();
//! assert_eq!(chunks.len(), 3); // frames, the large body, frames with "small"
//! assert_eq!(chunks[1].as_ptr(), large.as_ptr());
//! assert_eq!(connection.queued_output(), 0); // all of it is the adapter's now
//!
//! // poll_transmit_into: batches copied into the adapter's buffer, at most
//! // `max` bytes each; the rest waits in the core.
//! let (mut connection, channel) = open(Config::default(), now);
//! publish_both(&mut connection, channel);
//! let queued = connection.queued_output();
//! let mut batch = Vec::with_capacity(64 * 1024);
//! assert_eq!(connection.poll_transmit_into(now, 64 * 1024, &mut batch), 64 * 1024);
//! assert_eq!(connection.queued_output(), queued - 64 * 1024);
//! // The socket took 10,000 bytes: the rest of the batch goes first next
//! // time, and more is taken from the core only once the batch is written.
//! batch.drain(..10_000);
//! assert_eq!(batch.len(), 64 * 1024 - 10_000);
//! ```
//!
//! # Back-pressure, both ways
//!
//! ## Input: `wants_input`
//!
//! Events wait in the core until the application polls them. So that a
//! slow consumer bounds memory instead of growing it,
//! [`wants_input`](crate::Connection::wants_input) turns false once the events not
//! yet polled reach [`Config::max_buffered_events`](crate::Config::max_buffered_events)
//! or hold [`Config::max_buffered_bytes`](crate::Config::max_buffered_bytes);
//! the adapter then stops reading (and stops asking for readability) until
//! the application has drained enough. The socket's receive buffer fills,
//! TCP's window closes, and the broker stops sending.
//!
//! It is asked **between reads, not per read**: every whole frame a read
//! holds is decoded at once, so one 64 KiB read of small deliveries can take
//! the queue hundreds of events past the limit. The real bound is the limit
//! plus one read; size reads with that in mind.
//!
//! While it is false the **dead-peer check is suspended**: the adapter is
//! not reading, so silence says nothing about the server. Each
//! [`handle_timeout`](crate::Connection::handle_timeout) in that time restarts the
//! count, and the server is judged dead only after two heartbeat intervals
//! of silence with reading allowed. Heartbeats still go out meanwhile, so
//! the server does not judge *us* dead either.
//!
//! ```
//! # use std::time::{Duration, Instant};
//! # use amqp_proto::bytes::{BufMut, BytesMut};
//! # use amqp_proto::codec::{
//! #     body_frame_header, encode_header_frame, encode_method_frame, BasicProperties, ContentHeader,
//! # };
//! # use amqp_proto::spec::{self, constants::FRAME_END, Method};
//! # use amqp_proto::{ChannelHandle, Config, Connection, ConnectionError, Event};
//! # fn server(channel: u16, method: impl Into<Method>) -> BytesMut {
//! #     let mut bytes = BytesMut::new();
//! #     encode_method_frame(channel, &method.into(), 131_072, &mut bytes).unwrap();
//! #     bytes
//! # }
//! # fn open(config: Config, now: Instant) -> (Connection, ChannelHandle) {
//! #     let mut connection = Connection::new(config, now);
//! #     let start = spec::ConnectionStart {
//! #         version_major: 0,
//! #         version_minor: 9,
//! #         mechanisms: "PLAIN".into(),
//! #         locales: "en_US".into(),
//! #         ..Default::default()
//! #     };
//! #     connection.handle_input(&server(0, start), now);
//! #     let tune = spec::ConnectionTune { channel_max: 2047, frame_max: 131_072, heartbeat: 60 };
//! #     connection.handle_input(&server(0, tune), now);
//! #     connection.handle_input(&server(0, spec::ConnectionOpenOk::default()), now);
//! #     let channel = connection.open_channel().unwrap();
//! #     connection.handle_input(&server(channel.id(), spec::ChannelOpenOk::default()), now);
//! #     while connection.poll_transmit(now).is_some() {}
//! #     while connection.poll_event().is_some() {}
//! #     (connection, channel)
//! # }
//! # // A basic.deliver with its content header and body, as the server sends it.
//! # fn deliver(channel: u16, delivery_tag: u64, body: &[u8]) -> BytesMut {
//! #     let deliver = spec::BasicDeliver { consumer_tag: "c".into(), delivery_tag, ..Default::default() };
//! #     let mut bytes = server(channel, deliver);
//! #     let header = ContentHeader::basic(body.len() as u64, BasicProperties::default());
//! #     encode_header_frame(channel, &header, 131_072, &mut bytes).unwrap();
//! #     bytes.put_slice(&body_frame_header(channel, body.len(), 131_072).unwrap());
//! #     bytes.put_slice(body);
//! #     bytes.put_u8(FRAME_END);
//! #     bytes
//! # }
//! let start = Instant::now();
//! let config = Config::default().with_heartbeat(10).with_max_buffered_events(4);
//! let (mut connection, channel) = open(config, start);
//!
//! // One read holds ten deliveries: all are decoded, six past the limit.
//! let mut read = BytesMut::new();
//! for tag in 1..=10 {
//!     read.put_slice(&deliver(channel.id(), tag, b"job"));
//! }
//! connection.handle_input(&read, start);
//! assert!(!connection.wants_input()); // stop reading
//!
//! // The application is busy for 25 s, more than two intervals. The
//! // adapter does not read, but its timers run: no dead-peer verdict,
//! // and a heartbeat goes out.
//! let busy = start + Duration::from_secs(25);
//! connection.handle_timeout(busy);
//! assert!(connection.is_open());
//! assert_eq!(connection.stats().heartbeats_sent, 1);
//!
//! // Draining the events allows reading again.
//! let mut deliveries = 0;
//! while let Some(event) = connection.poll_event() {
//!     deliveries += usize::from(matches!(event, Event::Delivery(_)));
//! }
//! assert_eq!(deliveries, 10);
//! assert!(connection.wants_input());
//!
//! // From now on silence counts again: dead two intervals later.
//! connection.handle_timeout(busy + Duration::from_secs(19));
//! assert!(connection.is_open());
//! connection.handle_timeout(busy + Duration::from_secs(20));
//! assert_eq!(connection.poll_event(), Some(Event::Closed(ConnectionError::HeartbeatTimeout)));
//! ```
//!
//! ## Output: `publish_readiness`
//!
//! Everything that should slow a publisher is folded into one answer,
//! [`publish_readiness`](crate::Connection::publish_readiness), asked before each
//! publish (it is a cheap getter):
//!
//! | answer | why | publish again when |
//! |---|---|---|
//! | [`Ready`](crate::Readiness::Ready) | | now |
//! | [`Blocked`](crate::Readiness::Blocked) | the broker sent `connection.blocked` (a memory or disk alarm) | [`Event::Unblocked`] |
//! | [`FlowPaused`](crate::Readiness::FlowPaused) | the broker sent `channel.flow` with `active = false` | [`Event::Flow`] with `active` |
//! | [`ConfirmWindowFull`](crate::Readiness::ConfirmWindowFull) | [`Config::max_unconfirmed`](crate::Config::max_unconfirmed) publishes await their confirm | [`Event::Confirm`]s arrive |
//! | [`OutputFull`](crate::Readiness::OutputFull) | [`Config::max_queued_output`](crate::Config::max_queued_output) bytes wait to be written | the socket took some ([`write_to`](crate::Connection::write_to)) |
//! | [`Closed`](crate::Readiness::Closed) | the channel or connection is closing or gone | never, on this channel |
//! | [`Recovering`](crate::Readiness::Recovering) | a recovered connection declares its topology again | [`Event::Recovered`] |
//!
//! Publishing anyway is allowed (the core queues it), but then memory is
//! what grows. A publisher loop publishes while the answer is `Ready`,
//! stops on anything else, and tries again after the next pass that had
//! confirms, an unblock, a flow event or a write.
//!
//! **`OutputFull` is reached only if the adapter leaves unwritten bytes in
//! the core.** The core sees only its own queue. An adapter that writes with
//! [`write_to`](crate::Connection::write_to) (or takes bounded batches with
//! [`poll_transmit_into`](crate::Connection::poll_transmit_into)) leaves what the
//! socket did not take where the core counts it, so a slow socket slows the
//! publisher. An adapter that drains every chunk into a queue of its own
//! with [`poll_transmit`](crate::Connection::poll_transmit), whether the socket
//! can take it or not, hides that queue from the core: readiness stays
//! `Ready` while the adapter's queue grows without bound.
//!
//! ```
//! # use std::collections::VecDeque;
//! # use std::time::Instant;
//! # use amqp_proto::bytes::{Bytes, BytesMut};
//! # use amqp_proto::codec::{encode_method_frame, BasicProperties};
//! # use amqp_proto::spec::{self, Method};
//! # use amqp_proto::{ChannelHandle, Config, Connection, Readiness};
//! # fn server(channel: u16, method: impl Into<Method>) -> BytesMut {
//! #     let mut bytes = BytesMut::new();
//! #     encode_method_frame(channel, &method.into(), 131_072, &mut bytes).unwrap();
//! #     bytes
//! # }
//! # fn open(config: Config, now: Instant) -> (Connection, ChannelHandle) {
//! #     let mut connection = Connection::new(config, now);
//! #     let start = spec::ConnectionStart {
//! #         version_major: 0,
//! #         version_minor: 9,
//! #         mechanisms: "PLAIN".into(),
//! #         locales: "en_US".into(),
//! #         ..Default::default()
//! #     };
//! #     connection.handle_input(&server(0, start), now);
//! #     let tune = spec::ConnectionTune { channel_max: 2047, frame_max: 131_072, heartbeat: 60 };
//! #     connection.handle_input(&server(0, tune), now);
//! #     connection.handle_input(&server(0, spec::ConnectionOpenOk::default()), now);
//! #     let channel = connection.open_channel().unwrap();
//! #     connection.handle_input(&server(channel.id(), spec::ChannelOpenOk::default()), now);
//! #     while connection.poll_transmit(now).is_some() {}
//! #     while connection.poll_event().is_some() {}
//! #     (connection, channel)
//! # }
//! let now = Instant::now();
//! let publish = spec::BasicPublish { routing_key: "jobs".into(), ..Default::default() };
//! let properties = BasicProperties::default();
//! let body = Bytes::from(vec![0_u8; 4096]);
//!
//! // An adapter that leaves unwritten bytes in the core; 16 KiB of
//! // queued output is the most it wants.
//! let config = Config::default().with_max_queued_output(16 * 1024);
//! let (mut connection, channel) = open(config.clone(), now);
//! let mut published = 0;
//! while connection.publish_readiness(channel) == Readiness::Ready {
//!     connection.channel(channel)?.publish(&publish, &properties, body.clone())?;
//!     published += 1;
//! }
//! assert_eq!(connection.publish_readiness(channel), Readiness::OutputFull);
//! assert_eq!(published, 4); // 4 x (4 KiB and its frames) > 16 KiB
//!
//! // The socket becomes writable and takes 8 KiB (a `&mut [u8]` is a
//! // writer with that much room): below the limit again, publishing resumes.
//! let mut send_buffer = vec![0_u8; 8 * 1024];
//! assert_eq!(connection.write_to(&mut send_buffer.as_mut_slice(), now)?, 8 * 1024);
//! assert_eq!(connection.publish_readiness(channel), Readiness::Ready);
//!
//! // An adapter that drains every chunk into a queue of its own, written
//! // or not: the core never sees a full queue, and the adapter's grows.
//! let (mut connection, channel) = open(config, now);
//! let mut own_queue: VecDeque<Bytes> = VecDeque::new();
//! for _ in 0..100 {
//!     assert_eq!(connection.publish_readiness(channel), Readiness::Ready);
//!     connection.channel(channel)?.publish(&publish, &properties, body.clone())?;
//!     own_queue.extend(std::iter::from_fn(|| connection.poll_transmit(now)));
//! }
//! let hidden: usize = own_queue.iter().map(Bytes::len).sum();
//! assert!(hidden > 100 * body.len()); // every byte published, unwritten
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The broker's signals and the confirm window, the same way:
//!
//! ```
//! # use std::time::Instant;
//! # use amqp_proto::bytes::BytesMut;
//! # use amqp_proto::codec::{encode_method_frame, BasicProperties};
//! # use amqp_proto::spec::{self, Method};
//! # use amqp_proto::{ChannelHandle, Config, ConfirmOutcome, Connection, Event, Readiness};
//! # fn server(channel: u16, method: impl Into<Method>) -> BytesMut {
//! #     let mut bytes = BytesMut::new();
//! #     encode_method_frame(channel, &method.into(), 131_072, &mut bytes).unwrap();
//! #     bytes
//! # }
//! # fn open(config: Config, now: Instant) -> (Connection, ChannelHandle) {
//! #     let mut connection = Connection::new(config, now);
//! #     let start = spec::ConnectionStart {
//! #         version_major: 0,
//! #         version_minor: 9,
//! #         mechanisms: "PLAIN".into(),
//! #         locales: "en_US".into(),
//! #         ..Default::default()
//! #     };
//! #     connection.handle_input(&server(0, start), now);
//! #     let tune = spec::ConnectionTune { channel_max: 2047, frame_max: 131_072, heartbeat: 60 };
//! #     connection.handle_input(&server(0, tune), now);
//! #     connection.handle_input(&server(0, spec::ConnectionOpenOk::default()), now);
//! #     let channel = connection.open_channel().unwrap();
//! #     connection.handle_input(&server(channel.id(), spec::ChannelOpenOk::default()), now);
//! #     while connection.poll_transmit(now).is_some() {}
//! #     while connection.poll_event().is_some() {}
//! #     (connection, channel)
//! # }
//! let now = Instant::now();
//! let (mut connection, channel) = open(Config::default().with_max_unconfirmed(3), now);
//! let id = channel.id();
//! let publish = spec::BasicPublish { routing_key: "jobs".into(), ..Default::default() };
//! let properties = BasicProperties::default();
//! connection.channel(channel)?.request(spec::ConfirmSelect::default())?;
//! connection.handle_input(&server(id, spec::ConfirmSelectOk::default()), now);
//!
//! // Three publishes await their confirms: the window is full.
//! for _ in 0..3 {
//!     connection.channel(channel)?.publish(&publish, &properties, "job")?;
//! }
//! assert_eq!(connection.publish_readiness(channel), Readiness::ConfirmWindowFull);
//! // One multiple ack settles the first two, each with its own event.
//! let ack = spec::BasicAck { delivery_tag: 2, multiple: true };
//! connection.handle_input(&server(id, ack), now);
//! # assert!(matches!(connection.poll_event(), Some(Event::Reply { .. }))); // confirm.select-ok
//! for sequence in [1, 2] {
//!     let confirm = Event::Confirm { channel: id, sequence, outcome: ConfirmOutcome::Ack };
//!     assert_eq!(connection.poll_event(), Some(confirm));
//! }
//! assert_eq!(connection.publish_readiness(channel), Readiness::Ready);
//!
//! // A resource alarm on the broker blocks every channel until it clears.
//! connection.handle_input(&server(0, spec::ConnectionBlocked { reason: "low on memory".into() }), now);
//! assert_eq!(connection.publish_readiness(channel), Readiness::Blocked);
//! connection.handle_input(&server(0, spec::ConnectionUnblocked::default()), now);
//! assert_eq!(connection.publish_readiness(channel), Readiness::Ready);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Timers and heartbeats
//!
//! The core has one deadline at a time, from
//! [`poll_timeout`](crate::Connection::poll_timeout): the handshake deadline
//! ([`Config::handshake_timeout`](crate::Config::handshake_timeout)) until
//! `open-ok`, then the next heartbeat to send or the moment the server
//! counts as dead, whichever is first, and while closing the close deadline.
//! `None` once closed (and with heartbeats off, while open). Ask again after
//! every pass: input, commands and writes all move it.
//!
//! When it has come, call [`handle_timeout`](crate::Connection::handle_timeout).
//! Early calls do nothing and late calls act on everything due, so an
//! adapter whose timer fires a little early or late needs no care beyond
//! calling it every pass.
//!
//! Heartbeats follow the negotiated [`Tuning::heartbeat`](crate::Tuning)
//! interval (spec 4.2.7): a heartbeat frame is queued **half an interval
//! after the last write**, as RabbitMQ sends its own (any write counts as
//! traffic, so a busy connection sends none), and the server is dead after
//! **two whole intervals with nothing from it**, when the connection ends
//! with [`ConnectionError::HeartbeatTimeout`](crate::ConnectionError::HeartbeatTimeout)
//! without sending anything more. The core's clock is only what it is
//! given: the `now` of `write_to` and `poll_transmit*` is when bytes were
//! written, so pass the real time there, not that of the last input.
//! Heartbeats are counters, not events: [`stats`](crate::Connection::stats) counts
//! them both ways, with bytes and frames, for a health check or a metrics
//! scrape to compare with the last snapshot.
//!
//! ```
//! # use std::time::{Duration, Instant};
//! # use amqp_proto::bytes::BytesMut;
//! # use amqp_proto::codec::{
//! #     encode_heartbeat_frame, encode_method_frame, DecodeLimits, Frame, FrameDecoder,
//! # };
//! # use amqp_proto::spec::{self, Method};
//! # use amqp_proto::{Config, Connection, ConnectionError, Event};
//! # fn server(channel: u16, method: impl Into<Method>) -> BytesMut {
//! #     let mut bytes = BytesMut::new();
//! #     encode_method_frame(channel, &method.into(), 131_072, &mut bytes).unwrap();
//! #     bytes
//! # }
//! # fn open(config: Config, now: Instant) -> Connection {
//! #     let mut connection = Connection::new(config, now);
//! #     let start = spec::ConnectionStart {
//! #         version_major: 0,
//! #         version_minor: 9,
//! #         mechanisms: "PLAIN".into(),
//! #         locales: "en_US".into(),
//! #         ..Default::default()
//! #     };
//! #     connection.handle_input(&server(0, start), now);
//! #     let tune = spec::ConnectionTune { channel_max: 2047, frame_max: 131_072, heartbeat: 60 };
//! #     connection.handle_input(&server(0, tune), now);
//! #     connection.handle_input(&server(0, spec::ConnectionOpenOk::default()), now);
//! #     while connection.poll_transmit(now).is_some() {}
//! #     assert!(matches!(connection.poll_event(), Some(Event::Opened { .. })));
//! #     connection
//! # }
//! # fn frames(bytes: &[u8]) -> Vec<Frame> {
//! #     let limits = DecodeLimits { max_frame_size: 131_072, ..Default::default() };
//! #     let mut decoder = FrameDecoder::new(limits);
//! #     decoder.extend_from_slice(bytes);
//! #     std::iter::from_fn(|| decoder.decode().unwrap()).collect()
//! # }
//! let start = Instant::now();
//! let mut connection = open(Config::default(), start);
//! assert_eq!(connection.tuning().heartbeat, 60);
//! let seconds = |s| start + Duration::from_secs(s);
//!
//! // Half the interval after the last write, a heartbeat is due.
//! assert_eq!(connection.poll_timeout(), Some(seconds(30)));
//! connection.handle_timeout(seconds(29)); // early: nothing happens
//! assert!(!connection.wants_write());
//! connection.handle_timeout(seconds(30));
//! let mut wire = Vec::new();
//! connection.write_to(&mut wire, seconds(30))?;
//! assert_eq!(frames(&wire), [Frame::Heartbeat]);
//! assert_eq!(connection.stats().heartbeats_sent, 1);
//!
//! // The server's heartbeat at 45 s: it is alive until 45 + 120 s.
//! let mut heartbeat = BytesMut::new();
//! encode_heartbeat_frame(&mut heartbeat);
//! connection.handle_input(&heartbeat, seconds(45));
//! assert_eq!(connection.stats().heartbeats_received, 1);
//!
//! // Then silence. An adapter's loop on simulated time: sleep until the
//! // deadline, handle it, write what it queued.
//! let mut now = seconds(45);
//! while let Some(deadline) = connection.poll_timeout() {
//!     now = deadline;
//!     connection.handle_timeout(now);
//!     connection.write_to(&mut wire, now)?;
//! }
//! // Heartbeats went out at 60, 90, 120 and 150 s; at 165 s the server was
//! // silent for two intervals.
//! assert_eq!(now, seconds(165));
//! assert_eq!(connection.stats().heartbeats_sent, 5);
//! assert_eq!(connection.poll_event(), Some(Event::Closed(ConnectionError::HeartbeatTimeout)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Request timeouts
//!
//! AMQP cannot withdraw a request once sent: a `queue.declare` the caller
//! stopped waiting for is still answered, a `basic.get` still hands over a
//! message, a `basic.consume` still starts a consumer. So a timeout is two
//! things, both in the core, so that no adapter writes its own:
//! [`set_request_deadline`](crate::Connection::set_request_deadline) puts
//! the request's deadline among the core's (in `poll_timeout`), and at that
//! time `handle_timeout` fails it with
//! [`Failure::TimedOut`](crate::Failure::TimedOut); from then on, as after
//! [`abandon_request`](crate::Connection::abandon_request) (a dropped
//! future, a caller that gave up), no event reports the request again and
//! the core gives back what its late reply carries: the message is
//! requeued, the consumer cancelled, the channel of an abandoned
//! `channel.open` closed. The channel stays usable throughout, and later
//! replies match their own requests.
//!
//! ```
//! # use std::time::{Duration, Instant};
//! # use amqp_proto::bytes::{BufMut, BytesMut};
//! # use amqp_proto::codec::{
//! #     body_frame_header, encode_header_frame, encode_method_frame, BasicProperties,
//! #     ContentHeader, DecodeLimits, Frame, FrameDecoder,
//! # };
//! # use amqp_proto::spec::constants::FRAME_END;
//! # use amqp_proto::spec::{self, Method};
//! # use amqp_proto::{ChannelHandle, Config, Connection, Event, Failure};
//! # fn server(channel: u16, method: impl Into<Method>) -> BytesMut {
//! #     let mut bytes = BytesMut::new();
//! #     encode_method_frame(channel, &method.into(), 131_072, &mut bytes).unwrap();
//! #     bytes
//! # }
//! # fn open(config: Config, now: Instant) -> (Connection, ChannelHandle) {
//! #     let mut connection = Connection::new(config, now);
//! #     let start = spec::ConnectionStart {
//! #         version_major: 0,
//! #         version_minor: 9,
//! #         mechanisms: "PLAIN".into(),
//! #         locales: "en_US".into(),
//! #         ..Default::default()
//! #     };
//! #     connection.handle_input(&server(0, start), now);
//! #     let tune = spec::ConnectionTune { channel_max: 2047, frame_max: 131_072, heartbeat: 60 };
//! #     connection.handle_input(&server(0, tune), now);
//! #     connection.handle_input(&server(0, spec::ConnectionOpenOk::default()), now);
//! #     let channel = connection.open_channel().unwrap();
//! #     connection.handle_input(&server(channel.id(), spec::ChannelOpenOk::default()), now);
//! #     while connection.poll_transmit(now).is_some() {}
//! #     while connection.poll_event().is_some() {}
//! #     (connection, channel)
//! # }
//! # fn frames(bytes: &[u8]) -> Vec<Frame> {
//! #     let limits = DecodeLimits { max_frame_size: 131_072, ..Default::default() };
//! #     let mut decoder = FrameDecoder::new(limits);
//! #     decoder.extend_from_slice(bytes);
//! #     std::iter::from_fn(|| decoder.decode().unwrap()).collect()
//! # }
//! let start = Instant::now();
//! let (mut connection, channel) = open(Config::default(), start);
//! let get = connection.channel(channel)?.request(spec::BasicGet {
//!     queue: "jobs".into(),
//!     ..Default::default()
//! })?;
//! let get = get.expect("basic.get is answered");
//! let deadline = start + Duration::from_secs(5);
//! connection.set_request_deadline(get, deadline);
//! assert_eq!(connection.poll_timeout(), Some(deadline), "sooner than the heartbeat");
//! let mut wire = Vec::new();
//! connection.write_to(&mut wire, start)?;
//!
//! // Nothing by the deadline: the request fails, once.
//! connection.handle_timeout(deadline);
//! match connection.poll_event() {
//!     Some(Event::RequestFailed { request, failure, .. }) => {
//!         assert_eq!(request, get);
//!         assert_eq!(failure, Failure::TimedOut);
//!     }
//!     other => panic!("{other:?}"),
//! }
//!
//! // The message comes after all: nobody hears of it, and it goes back.
//! let id = channel.id();
//! let get_ok = spec::BasicGetOk { delivery_tag: 1, routing_key: "jobs".into(), ..Default::default() };
//! let mut late = server(id, get_ok);
//! encode_header_frame(id, &ContentHeader::basic(3, BasicProperties::default()), 131_072, &mut late)?;
//! late.put_slice(&body_frame_header(id, 3, 131_072)?);
//! late.put_slice(b"job");
//! late.put_u8(FRAME_END);
//! connection.handle_input(&late, deadline);
//! assert!(connection.poll_event().is_none());
//! wire.clear();
//! connection.write_to(&mut wire, deadline)?;
//! assert!(matches!(
//!     frames(&wire).as_slice(),
//!     [Frame::Method { method: Method::BasicReject(reject), .. }]
//!         if reject.delivery_tag == 1 && reject.requeue
//! ));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Channel handles
//!
//! [`open_channel`](crate::Connection::open_channel) returns a [`ChannelHandle`]:
//! the channel's id and an epoch that no other opening on this connection
//! (or on the connections that [recover](crate::Connection::recover) it) shares.
//! Ids are reused: once a channel is closed, the next `open_channel` may
//! hand out the same id. A handle names its own opening only, so a handle
//! kept from before reaches nothing:
//! [`channel`](crate::Connection::channel) answers
//! [`UsageError::ChannelNotOpen`](crate::UsageError::ChannelNotOpen) and
//! [`publish_readiness`](crate::Connection::publish_readiness) answers
//! [`Readiness::Closed`], instead of sending on the new channel, where an
//! acknowledgement of an old delivery tag would settle a different message.
//!
//! Events carry the bare `u16` id, and a bare id is accepted too: it names
//! whatever is open on that id now. That is safe while acting on events in
//! order, since a channel's events all come before the
//! [`Event::ChannelClosed`] that frees its id. Anything kept beyond the
//! event (a consumer object, a pending ack) should keep the handle:
//! [`channel_handle`](crate::Connection::channel_handle) turns an event's id into
//! the current one.
//!
//! ```
//! # use std::time::Instant;
//! # use amqp_proto::bytes::BytesMut;
//! # use amqp_proto::codec::encode_method_frame;
//! # use amqp_proto::spec::{self, constants::ReplyCode, Method};
//! # use amqp_proto::{Config, Connection, Event, Readiness, UsageError};
//! # fn server(channel: u16, method: impl Into<Method>) -> BytesMut {
//! #     let mut bytes = BytesMut::new();
//! #     encode_method_frame(channel, &method.into(), 131_072, &mut bytes).unwrap();
//! #     bytes
//! # }
//! # fn open(config: Config, now: Instant) -> Connection {
//! #     let mut connection = Connection::new(config, now);
//! #     let start = spec::ConnectionStart {
//! #         version_major: 0,
//! #         version_minor: 9,
//! #         mechanisms: "PLAIN".into(),
//! #         locales: "en_US".into(),
//! #         ..Default::default()
//! #     };
//! #     connection.handle_input(&server(0, start), now);
//! #     let tune = spec::ConnectionTune { channel_max: 2047, frame_max: 131_072, heartbeat: 60 };
//! #     connection.handle_input(&server(0, tune), now);
//! #     connection.handle_input(&server(0, spec::ConnectionOpenOk::default()), now);
//! #     while connection.poll_transmit(now).is_some() {}
//! #     assert!(matches!(connection.poll_event(), Some(Event::Opened { .. })));
//! #     connection
//! # }
//! let now = Instant::now();
//! let mut connection = open(Config::default(), now);
//! let first = connection.open_channel()?;
//! connection.handle_input(&server(first.id(), spec::ChannelOpenOk::default()), now);
//! connection.channel(first)?.close(ReplyCode::REPLY_SUCCESS, "done")?;
//! connection.handle_input(&server(first.id(), spec::ChannelCloseOk::default()), now);
//! # assert!(matches!(connection.poll_event(), Some(Event::ChannelOpened { .. })));
//! assert!(matches!(connection.poll_event(), Some(Event::ChannelClosed { channel: 1, .. })));
//!
//! // The id is free, and the next opening gets it, with a new epoch.
//! let second = connection.open_channel()?;
//! assert_eq!((first.id(), second.id()), (1, 1));
//! assert_ne!(first, second);
//!
//! // The old handle reaches nothing, not even the channel on its id.
//! assert!(matches!(connection.channel(first), Err(UsageError::ChannelNotOpen(1))));
//! assert_eq!(connection.publish_readiness(first), Readiness::Closed);
//! // The new handle, and the bare id, reach the new channel.
//! assert!(connection.channel(second).is_ok());
//! assert!(connection.channel(1).is_ok());
//! assert_eq!(connection.channel_handle(1), Some(second));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Shutdown and draining
//!
//! [`close(code, text, now)`](crate::Connection::close) (200,
//! [`ReplyCode::REPLY_SUCCESS`](crate::spec::constants::ReplyCode::REPLY_SUCCESS),
//! for a normal close) queues `connection.close` and starts the close
//! deadline, [`Config::close_timeout`](crate::Config::close_timeout) from
//! `now`. What happens then:
//!
//! - **Outstanding work is resolved at once**, before any reply: every
//!   request waiting for a reply gets [`Event::RequestFailed`], every
//!   unconfirmed publish an [`Event::Confirm`] with
//!   [`ConfirmOutcome::Failed`](crate::ConfirmOutcome::Failed), both with the
//!   close reason. A publish already written may still reach the queue (the
//!   broker handles it before the close); it is never confirmed and never
//!   re-sent. **To know a publish's fate, wait for its confirm before
//!   closing:** [`unconfirmed`](crate::Connection::unconfirmed) says how many are
//!   left, and [`close_when_confirmed(code, text, deadline, now)`](crate::Connection::close_when_confirmed)
//!   does the waiting: it refuses new publishes and channels, lets the
//!   outstanding confirms arrive, and closes once none is left or at
//!   `deadline` (only what is still unconfirmed then fails).
//! - Commands now fail with [`UsageError::ConnectionClosed`](crate::UsageError::ConnectionClosed).
//! - The adapter goes on with its loop: it writes what is queued (the
//!   publishes and acks before the close, then the close itself) and reads,
//!   because the server answers with `close-ok`.
//! - [`Event::Closed`] follows the `close-ok` with
//!   [`ConnectionError::Closed`](crate::ConnectionError::Closed) and a
//!   [`CloseReason`](crate::CloseReason) whose
//!   [`initiator`](crate::CloseReason::initiator) is
//!   [`Initiator::Client`](crate::Initiator::Client). It is always the last
//!   event; after it [`is_closed`](crate::Connection::is_closed) is true,
//!   `poll_timeout` is `None` and `wants_input` false, and the adapter
//!   writes anything still queued (at most a `close-ok`) and closes the
//!   socket. Match the error and the initiator, not the text.
//!
//! If no `close-ok` comes by the deadline, `handle_timeout` ends the
//! connection with [`ConnectionError::CloseTimeout`](crate::ConnectionError::CloseTimeout).
//! If the server drops the socket instead of answering (report it with
//! [`handle_transport_closed`](crate::Connection::handle_transport_closed)), the
//! close is complete all the same. A socket that ends while the connection
//! is open ends it with [`ConnectionError::TransportClosed`](crate::ConnectionError::TransportClosed),
//! and outstanding work is resolved with that. When the *server* closes
//! (an operator, a connection error), the core queues the `close-ok` itself
//! and reports the server's reason: write that `close-ok` before closing
//! the socket. [`ConnectionError::is_recoverable`](crate::ConnectionError::is_recoverable)
//! tells which ends a new connection may cure.
//!
//! ```
//! # use std::time::Instant;
//! # use amqp_proto::bytes::BytesMut;
//! # use amqp_proto::codec::{encode_method_frame, BasicProperties, DecodeLimits, Frame, FrameDecoder};
//! # use amqp_proto::spec::{self, constants::ReplyCode, Method};
//! # use amqp_proto::{
//! #     ChannelHandle, Config, ConfirmOutcome, Connection, ConnectionError, Event, Failure, Initiator,
//! #     UsageError,
//! # };
//! # fn server(channel: u16, method: impl Into<Method>) -> BytesMut {
//! #     let mut bytes = BytesMut::new();
//! #     encode_method_frame(channel, &method.into(), 131_072, &mut bytes).unwrap();
//! #     bytes
//! # }
//! # fn open(config: Config, now: Instant) -> (Connection, ChannelHandle) {
//! #     let mut connection = Connection::new(config, now);
//! #     let start = spec::ConnectionStart {
//! #         version_major: 0,
//! #         version_minor: 9,
//! #         mechanisms: "PLAIN".into(),
//! #         locales: "en_US".into(),
//! #         ..Default::default()
//! #     };
//! #     connection.handle_input(&server(0, start), now);
//! #     let tune = spec::ConnectionTune { channel_max: 2047, frame_max: 131_072, heartbeat: 60 };
//! #     connection.handle_input(&server(0, tune), now);
//! #     connection.handle_input(&server(0, spec::ConnectionOpenOk::default()), now);
//! #     let channel = connection.open_channel().unwrap();
//! #     connection.handle_input(&server(channel.id(), spec::ChannelOpenOk::default()), now);
//! #     while connection.poll_transmit(now).is_some() {}
//! #     while connection.poll_event().is_some() {}
//! #     (connection, channel)
//! # }
//! # fn frames(bytes: &[u8]) -> Vec<Frame> {
//! #     let limits = DecodeLimits { max_frame_size: 131_072, ..Default::default() };
//! #     let mut decoder = FrameDecoder::new(limits);
//! #     decoder.extend_from_slice(bytes);
//! #     std::iter::from_fn(|| decoder.decode().unwrap()).collect()
//! # }
//! let now = Instant::now();
//! let (mut connection, channel) = open(Config::default(), now);
//! let publish = spec::BasicPublish { routing_key: "jobs".into(), ..Default::default() };
//! connection.channel(channel)?.request(spec::ConfirmSelect::default())?;
//! connection.handle_input(&server(channel.id(), spec::ConfirmSelectOk::default()), now);
//! # assert!(matches!(connection.poll_event(), Some(Event::Reply { .. })));
//! # while connection.poll_transmit(now).is_some() {}
//! let sequence = connection.channel(channel)?.publish(&publish, &BasicProperties::default(), "job")?;
//! assert_eq!(sequence, Some(1));
//! assert_eq!(connection.unconfirmed(channel), 1); // closing now loses its confirm
//!
//! connection.close(ReplyCode::REPLY_SUCCESS, "done", now)?;
//! // At once: the unconfirmed publish fails with the close reason.
//! match connection.poll_event() {
//!     Some(Event::Confirm {
//!         sequence: 1,
//!         outcome: ConfirmOutcome::Failed(Failure::Connection(ConnectionError::Closed(reason))),
//!         ..
//!     }) => assert_eq!(reason.initiator, Initiator::Client),
//!     other => panic!("expected the failed confirm, got {other:?}"),
//! }
//! assert_eq!(connection.poll_event(), None); // no Closed before close-ok
//! assert_eq!(connection.open_channel(), Err(UsageError::ConnectionClosed));
//!
//! // Go on writing: the publish, then the close.
//! let mut wire = Vec::new();
//! while connection.wants_write() {
//!     connection.write_to(&mut wire, now)?;
//! }
//! let frames = frames(&wire);
//! assert!(matches!(&frames[0], Frame::Method { method: Method::BasicPublish(_), .. }));
//! assert!(matches!(frames.last(), Some(Frame::Method { method: Method::ConnectionClose(_), .. })));
//!
//! // And reading: the server's close-ok ends the connection.
//! connection.handle_input(&server(0, spec::ConnectionCloseOk::default()), now);
//! match connection.poll_event() {
//!     Some(Event::Closed(ConnectionError::Closed(reason))) => {
//!         assert_eq!(reason.initiator, Initiator::Client);
//!         assert!(reason.is_normal());
//!     }
//!     other => panic!("expected a clean close, got {other:?}"),
//! }
//! assert!(connection.is_closed());
//! assert_eq!(connection.poll_timeout(), None);
//! assert!(!connection.wants_input());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The other endings:
//!
//! ```
//! # use std::time::{Duration, Instant};
//! # use amqp_proto::bytes::BytesMut;
//! # use amqp_proto::codec::encode_method_frame;
//! # use amqp_proto::spec::{self, constants::ReplyCode, Method};
//! # use amqp_proto::{Config, Connection, ConnectionError, Event, Initiator};
//! # fn server(channel: u16, method: impl Into<Method>) -> BytesMut {
//! #     let mut bytes = BytesMut::new();
//! #     encode_method_frame(channel, &method.into(), 131_072, &mut bytes).unwrap();
//! #     bytes
//! # }
//! # fn open(config: Config, now: Instant) -> Connection {
//! #     let mut connection = Connection::new(config, now);
//! #     let start = spec::ConnectionStart {
//! #         version_major: 0,
//! #         version_minor: 9,
//! #         mechanisms: "PLAIN".into(),
//! #         locales: "en_US".into(),
//! #         ..Default::default()
//! #     };
//! #     connection.handle_input(&server(0, start), now);
//! #     let tune = spec::ConnectionTune { channel_max: 2047, frame_max: 131_072, heartbeat: 60 };
//! #     connection.handle_input(&server(0, tune), now);
//! #     connection.handle_input(&server(0, spec::ConnectionOpenOk::default()), now);
//! #     while connection.poll_transmit(now).is_some() {}
//! #     assert!(matches!(connection.poll_event(), Some(Event::Opened { .. })));
//! #     connection
//! # }
//! let start = Instant::now();
//! let later = start + Duration::from_secs(600);
//!
//! // No close-ok: the close deadline runs from the call to close.
//! let mut connection = open(Config::default(), start);
//! connection.close(ReplyCode::REPLY_SUCCESS, "done", later)?;
//! assert_eq!(connection.poll_timeout(), Some(later + Duration::from_secs(5)));
//! connection.handle_timeout(later + Duration::from_secs(5));
//! assert_eq!(connection.poll_event(), Some(Event::Closed(ConnectionError::CloseTimeout)));
//!
//! // The server drops the socket instead of answering: closed all the same.
//! let mut connection = open(Config::default(), start);
//! connection.close(ReplyCode::REPLY_SUCCESS, "done", start)?;
//! connection.handle_transport_closed("end of stream");
//! assert!(matches!(
//!     connection.poll_event(),
//!     Some(Event::Closed(ConnectionError::Closed(reason))) if reason.initiator == Initiator::Client
//! ));
//!
//! // The socket ends while the connection is open.
//! let mut connection = open(Config::default(), start);
//! connection.handle_transport_closed("connection reset by peer");
//! match connection.poll_event() {
//!     Some(Event::Closed(error @ ConnectionError::TransportClosed(_))) => {
//!         assert!(error.is_recoverable());
//!     }
//!     other => panic!("{other:?}"),
//! }
//!
//! // The server closes: the core answers close-ok itself; write it, then
//! // close the socket.
//! let mut connection = open(Config::default(), start);
//! let forced = spec::ConnectionClose {
//!     reply_code: ReplyCode::CONNECTION_FORCED.0,
//!     reply_text: "CONNECTION_FORCED - broker shutting down".into(),
//!     class_id: 0,
//!     method_id: 0,
//! };
//! connection.handle_input(&server(0, forced), start);
//! match connection.poll_event() {
//!     Some(Event::Closed(ConnectionError::Closed(reason))) => {
//!         assert_eq!(reason.initiator, Initiator::Server);
//!         assert_eq!(reason.code, ReplyCode::CONNECTION_FORCED);
//!     }
//!     other => panic!("{other:?}"),
//! }
//! assert!(connection.wants_write()); // the close-ok
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Connection`]: crate::Connection
//! [`ChannelHandle`]: crate::ChannelHandle
//! [`Readiness::OutputFull`]: crate::Readiness::OutputFull
//! [`Readiness::Closed`]: crate::Readiness::Closed
//! [`Event::Unblocked`]: crate::Event::Unblocked
//! [`Event::Flow`]: crate::Event::Flow
//! [`Event::Confirm`]: crate::Event::Confirm
//! [`Event::Recovered`]: crate::Event::Recovered
//! [`Event::ChannelClosed`]: crate::Event::ChannelClosed
//! [`Event::RequestFailed`]: crate::Event::RequestFailed
//! [`Event::Closed`]: crate::Event::Closed
