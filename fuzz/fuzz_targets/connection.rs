//! The whole client connection fed arbitrary server bytes after a valid
//! handshake, in arbitrary splits and with arbitrary clock steps.
//!
//! Invariants: nothing panics; the client only ever sends well-formed
//! frames; once the connection has decided to close (a protocol error, a
//! server close), it sends nothing but `connection.close` / `close-ok`;
//! after `Event::Closed` it sends nothing at all, and `Closed` is the last
//! event, emitted once; memory stays bounded (queued output and buffered
//! events are bounded by what the input could cause).
//!
//! The control byte also picks whether the connection records its
//! topology, and whether it is a recovered connection replaying one (a
//! recorded exchange, server-named queue, binding, qos, confirm mode and
//! consumer), so hostile replies reach the recovery bookkeeping too.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;

use amqp_proto::codec::Frame;
use amqp_proto::spec::{self, Method};
use amqp_proto::{Config, Connection, Event, Topology};
use libfuzzer_sys::fuzz_target;

use common::{handshake, server, ClientBytes};

/// A topology recorded by a well-behaved session that then lost its socket.
fn recorded_topology() -> &'static Topology {
    static TOPOLOGY: OnceLock<Topology> = OnceLock::new();
    TOPOLOGY.get_or_init(|| {
        let now = Instant::now();
        let mut config = Config::default();
        config.record_topology = true;
        let mut connection = Connection::new(config, now);
        for bytes in handshake() {
            connection.handle_input(&bytes, now);
        }
        let id = connection.open_channel().expect("open").id();
        connection.handle_input(&server(id, spec::ChannelOpenOk::default()), now);
        let steps: [(Method, Method); 6] = [
            (spec::ConfirmSelect::default().into(), spec::ConfirmSelectOk {}.into()),
            (
                spec::BasicQos { prefetch_count: 10, ..Default::default() }.into(),
                spec::BasicQosOk {}.into(),
            ),
            (
                spec::ExchangeDeclare { exchange: "x".into(), exchange_type: "fanout".into(), ..Default::default() }.into(),
                spec::ExchangeDeclareOk {}.into(),
            ),
            (
                spec::QueueDeclare::default().into(),
                spec::QueueDeclareOk { queue: "amq.gen-1".into(), message_count: 0, consumer_count: 0 }.into(),
            ),
            (
                spec::QueueBind { queue: "amq.gen-1".into(), exchange: "x".into(), ..Default::default() }.into(),
                spec::QueueBindOk {}.into(),
            ),
            (
                spec::BasicConsume { queue: "amq.gen-1".into(), ..Default::default() }.into(),
                spec::BasicConsumeOk { consumer_tag: "c".into() }.into(),
            ),
        ];
        for (request, reply) in steps {
            connection.channel(id).expect("channel").request(request).expect("request");
            connection.handle_input(&server(id, reply), now);
        }
        connection.handle_transport_closed("reset");
        connection.topology().cloned().expect("recorded")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let start = Instant::now();
    let now = start;
    let recovering = control & 0x80 != 0;
    let mut config = Config::default();
    config.record_topology = control & 0x40 != 0;
    let mut connection = if recovering {
        Connection::recover(config, recorded_topology().clone(), start)
    } else {
        Connection::new(config, start)
    };
    let mut client = ClientBytes::new();
    for bytes in handshake() {
        connection.handle_input(&bytes, now);
    }
    client.frames(&mut connection, now);
    // Open a couple of channels, one in confirm mode with publishes
    // outstanding, so the input has state to disturb (a recovering
    // connection has its replay instead).
    if !recovering {
        open_and_publish(&mut connection, now);
    }
    client.frames(&mut connection, now);
    fuzz_session(&mut connection, &mut client, input, control, now);
});

fn open_and_publish(connection: &mut Connection, now: Instant) {
    let first = connection.open_channel().expect("open").id();
    let second = connection.open_channel().expect("open").id();
    connection.handle_input(&server(first, spec::ChannelOpenOk::default()), now);
    connection.handle_input(&server(second, spec::ChannelOpenOk::default()), now);
    let mut channel = connection.channel(first).expect("channel");
    channel.request(spec::ConfirmSelect::default()).expect("select");
    for _ in 0..3 {
        channel
            .publish(&spec::BasicPublish::default(), &Default::default(), &b"payload"[..])
            .expect("publish");
    }
}

fn fuzz_session(
    connection: &mut Connection,
    client: &mut ClientBytes,
    input: &[u8],
    control: u8,
    mut now: Instant,
) {
    let chunk = usize::from(control % 16) + 1;
    let mut closing = false;
    let mut closed = false;
    let mut events = 0usize;
    for piece in input.chunks(chunk) {
        connection.handle_input(piece, now);
        // Time moves on by a step the input chose, firing heartbeats.
        now += Duration::from_millis(u64::from(piece[0]) * 40);
        connection.handle_timeout(now);
        for frame in client.frames(connection, now) {
            assert!(!closed, "nothing is sent after Closed: {frame:?}");
            if closing {
                assert!(
                    matches!(
                        frame,
                        Frame::Method { channel: 0, method: Method::ConnectionClose(_) | Method::ConnectionCloseOk(_) }
                    ),
                    "only close frames once closing: {frame:?}"
                );
            }
            if let Frame::Method { channel: 0, method: Method::ConnectionClose(_) | Method::ConnectionCloseOk(_) } = frame {
                closing = true;
            }
        }
        while let Some(event) = connection.poll_event() {
            assert!(!closed, "Closed is the last event, emitted once: {event:?}");
            events += 1;
            if matches!(event, Event::Closed(_)) {
                closed = true;
            }
        }
        // Bounded memory: what is buffered cannot outgrow what came in.
        assert!(connection.queued_output() <= 64 * 1024 + 16 * input.len());
        assert!(events <= 16 + 4 * input.len());
    }
    if closed {
        assert!(connection.poll_timeout().is_none());
    }
}
