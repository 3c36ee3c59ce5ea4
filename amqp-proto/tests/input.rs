//! The input side: `read_from` reads with `std::io::Read` into the core
//! and handles what it read, with the same outcome as `handle_input`;
//! end of stream and errors are the caller's to act on; `wants_input` is
//! asked between reads, and suspends the dead-peer check while false.

mod support;

use std::io::{self, Read};
use std::time::Duration;

use amqp_proto::codec::{BasicProperties, Frame};
use amqp_proto::spec;
use amqp_proto::{Config, ConnectionError, Event};
use support::Peer;

/// A reader giving `bytes` at most `step` at a time, then end of stream;
/// it notes the sizes of the buffers it was given, and whether each still
/// held what it wrote into it the time before (it was not zero-filled
/// again).
struct Trickle {
    bytes: Vec<u8>,
    at: usize,
    step: usize,
    offered: Vec<usize>,
    kept_last_bytes: Vec<bool>,
    last: Option<(usize, Vec<u8>)>,
}

impl Trickle {
    fn new(bytes: Vec<u8>, step: usize) -> Self {
        Self {
            bytes,
            at: 0,
            step,
            offered: Vec::new(),
            kept_last_bytes: Vec::new(),
            last: None,
        }
    }
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.offered.push(buf.len());
        if let Some((n, last)) = &self.last {
            self.kept_last_bytes.push(buf[..*n] == last[..]);
        }
        let n = self.step.min(buf.len()).min(self.bytes.len() - self.at);
        buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        self.last = Some((n, buf[..n].to_vec()));
        Ok(n)
    }
}

fn deliveries(count: u64) -> Vec<u8> {
    let mut wire = Vec::new();
    for tag in 1..=count {
        let deliver = spec::BasicDeliver {
            consumer_tag: "c".into(),
            delivery_tag: tag,
            redelivered: false,
            exchange: "".into(),
            routing_key: "jobs".into(),
        };
        let body = vec![tag as u8; 100 + tag as usize * 37];
        wire.extend_from_slice(&Peer::content_bytes(
            1,
            deliver,
            BasicProperties::default(),
            &body,
        ));
    }
    wire
}

fn open() -> Peer {
    let mut peer = Peer::new(Config::default());
    peer.handshake(10);
    peer.open_channel();
    peer
}

#[test]
fn read_from_gives_the_events_handle_input_gives() {
    let wire = deliveries(50);
    let mut expected = open();
    expected.feed(&wire);
    let expected = expected.events();
    assert_eq!(expected.len(), 50);
    for step in [1, 7, 100, 4096, 1 << 20] {
        let mut peer = open();
        let mut reader = Trickle::new(wire.clone(), step);
        let mut total = 0;
        loop {
            let read = peer.connection.read_from(&mut reader, peer.now).unwrap();
            if read == 0 {
                break;
            }
            total += read;
        }
        assert_eq!(total, wire.len());
        assert_eq!(peer.events(), expected, "reads of {step}");
        // End of stream is the caller's to report.
        assert!(!peer.connection.is_closed());
        peer.connection.handle_transport_closed("end of stream");
        assert!(matches!(
            peer.events().as_slice(),
            [Event::Closed(ConnectionError::TransportClosed(_))]
        ));
    }
}

#[test]
fn a_lent_buffer_gives_the_events_handle_input_gives_and_copies_no_body() {
    let wire = deliveries(50);
    let mut expected = open();
    expected.feed(&wire);
    let expected = expected.events();
    for step in [1, 7, 100, 4096, 1 << 20] {
        let mut peer = open();
        for piece in wire.chunks(step) {
            // Lent while a read is under way elsewhere; a partial frame
            // lent out comes back with the rest appended.
            let mut buffer = peer.connection.lend_input_buffer();
            buffer.extend_from_slice(piece);
            peer.connection.handle_lent_input(buffer, peer.now);
        }
        let events = peer.events();
        assert_eq!(events, expected, "reads of {step}");
    }
    // One read of everything: each body is a slice of the lent buffer.
    let mut peer = open();
    let mut buffer = peer.connection.lend_input_buffer();
    buffer.extend_from_slice(&wire);
    let range = buffer.as_ptr_range();
    peer.connection.handle_lent_input(buffer, peer.now);
    for event in peer.events() {
        let Event::Delivery(delivery) = event else {
            panic!("{event:?}");
        };
        let body = delivery.body().as_ptr_range();
        assert!(range.start <= body.start && body.end <= range.end);
    }
}

#[test]
fn read_from_offers_the_same_buffer_without_zero_filling_it_again() {
    let mut peer = open();
    let mut reader = Trickle::new(deliveries(20), 1000);
    while peer.connection.read_from(&mut reader, peer.now).unwrap() > 0 {}
    assert!(reader.offered.iter().all(|&len| len == 64 * 1024));
    assert!(reader.kept_last_bytes.len() > 3);
    assert!(
        reader.kept_last_bytes.iter().all(|&kept| kept),
        "the bytes of the read before are still there: nothing zero-filled it"
    );
}

#[test]
fn a_reader_error_changes_nothing() {
    struct Failing(io::ErrorKind);
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(self.0.into())
        }
    }
    let mut peer = open();
    let before = peer.connection.stats();
    for kind in [io::ErrorKind::WouldBlock, io::ErrorKind::ConnectionReset] {
        let error = peer
            .connection
            .read_from(&mut Failing(kind), peer.now)
            .unwrap_err();
        assert_eq!(error.kind(), kind);
    }
    assert_eq!(peer.connection.stats(), before);
    assert!(peer.events().is_empty());
    assert!(peer.connection.is_open());
}

#[test]
fn read_from_counts_as_a_sign_of_life() {
    let mut peer = open();
    peer.advance(Duration::from_secs(15));
    let heartbeat = [8, 0, 0, 0, 0, 0, 0, 0xCE];
    let mut reader = Trickle::new(heartbeat.to_vec(), 8);
    assert_eq!(peer.connection.read_from(&mut reader, peer.now).unwrap(), 8);
    assert_eq!(peer.connection.stats().heartbeats_received, 1);
    // Dead two intervals after these bytes, not after the handshake's.
    peer.advance(Duration::from_secs(19));
    assert!(peer.connection.is_open());
    peer.advance(Duration::from_secs(1));
    assert_eq!(
        peer.events(),
        vec![Event::Closed(ConnectionError::HeartbeatTimeout)]
    );
}

#[test]
fn one_read_may_take_the_events_past_the_limit() {
    let mut config = Config::default();
    config.max_buffered_events = 5;
    let mut peer = Peer::new(config);
    peer.handshake(10);
    peer.open_channel();
    assert!(peer.connection.wants_input());
    // One read holding 50 deliveries: all are decoded, the limit is asked
    // between reads.
    let mut reader = Trickle::new(deliveries(50), 1 << 20);
    peer.connection.read_from(&mut reader, peer.now).unwrap();
    assert!(!peer.connection.wants_input());
    assert_eq!(peer.events().len(), 50);
    assert!(peer.connection.wants_input());
}

#[test]
fn input_read_late_but_fed_first_keeps_a_live_connection() {
    // The adapter paused for 25 s (two intervals and a half); the server's
    // heartbeat arrived meanwhile and waits in the socket.
    let heartbeat = [8, 0, 0, 0, 0, 0, 0, 0xCE];
    let late = |input_first: bool| {
        let mut peer = open();
        peer.now += Duration::from_secs(25);
        if input_first {
            peer.feed(&heartbeat);
        }
        peer.connection.handle_timeout(peer.now);
        if !input_first {
            peer.feed(&heartbeat);
        }
        peer.events()
    };
    assert_eq!(late(true), vec![]);
    assert_eq!(
        late(false),
        vec![Event::Closed(ConnectionError::HeartbeatTimeout)],
        "the order the docs warn about"
    );
}

#[test]
fn while_reading_is_paused_silence_is_not_death_and_heartbeats_go_on() {
    let mut config = Config::default();
    config.max_buffered_events = 1;
    let mut peer = Peer::new(config);
    peer.handshake(10);
    peer.send(0, spec::ConnectionBlocked { reason: "r".into() });
    assert!(!peer.connection.wants_input());
    peer.advance(Duration::from_secs(60));
    assert!(peer.connection.is_open());
    let heartbeats = peer
        .client_frames()
        .into_iter()
        .filter(|frame| *frame == Frame::Heartbeat)
        .count();
    assert_eq!(heartbeats, 12);
}
