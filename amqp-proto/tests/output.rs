//! The output paths: chunks (`poll_transmit`), batches copied into the
//! caller's buffer (`poll_transmit_into`) and vectored writes that keep what
//! the writer did not accept (`write_to`) give the same bytes in the same
//! order; small publishes are batched, large bodies are not copied, and the
//! queue left in the core is the back-pressure.

mod support;

use std::io::{self, IoSlice, Write};

use amqp_proto::codec::BasicProperties;
use amqp_proto::spec;
use amqp_proto::{Config, Readiness};
use bytes::Bytes;
use support::Peer;

fn open(config: Config) -> (Peer, u16) {
    let mut peer = Peer::new(config);
    peer.handshake(60);
    let channel = peer.open_channel();
    (peer, channel)
}

fn publish(peer: &mut Peer, channel: u16, body: Bytes) {
    let publish = spec::BasicPublish {
        routing_key: "jobs".into(),
        ..Default::default()
    };
    peer.connection
        .channel(channel)
        .unwrap()
        .publish(&publish, &BasicProperties::default(), body)
        .unwrap();
}

/// A mix of small bodies and bodies larger than one frame.
fn bodies() -> Vec<Bytes> {
    let mut bodies = Vec::new();
    for n in 0..40u8 {
        let size = match n % 5 {
            0 => 0,
            1 => 16,
            2 => 1024,
            3 => 1025,
            _ => 300_000,
        };
        bodies.push(Bytes::from(vec![n; size]));
    }
    bodies
}

/// The bytes the publishes of `bodies` make, taken chunk by chunk.
fn reference(bodies: &[Bytes]) -> Vec<u8> {
    let copied = reference_with(Config::default(), bodies);
    let mut config = Config::default();
    config.copy_bodies_up_to = 0;
    let uncopied = reference_with(config, bodies);
    assert!(copied == uncopied, "copying bodies changes no byte");
    copied
}

fn reference_with(config: Config, bodies: &[Bytes]) -> Vec<u8> {
    let (mut peer, channel) = open(config);
    for body in bodies {
        publish(&mut peer, channel, body.clone());
    }
    let mut out = Vec::new();
    while let Some(chunk) = peer.connection.poll_transmit(peer.now) {
        out.extend_from_slice(&chunk);
    }
    out
}

/// A writer that accepts at most `accept` bytes per call and notes where
/// the bytes it was given live.
struct Slow {
    accept: usize,
    written: Vec<u8>,
    calls: usize,
    /// The address ranges of the slices it was offered.
    offered: Vec<std::ops::Range<usize>>,
}

impl Slow {
    fn new(accept: usize) -> Self {
        Self {
            accept,
            written: Vec::new(),
            calls: 0,
            offered: Vec::new(),
        }
    }
}

impl Write for Slow {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.calls += 1;
        let mut accepted = 0;
        for buf in bufs {
            let range = buf.as_ptr_range();
            self.offered.push(range.start as usize..range.end as usize);
            let n = buf.len().min(self.accept - accepted);
            self.written.extend_from_slice(&buf[..n]);
            accepted += n;
            if accepted == self.accept {
                break;
            }
        }
        Ok(accepted)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn wants_write_says_whether_bytes_are_queued() {
    let (mut peer, channel) = open(Config::default());
    assert!(!peer.connection.wants_write());
    publish(&mut peer, channel, Bytes::from_static(b"hello"));
    assert!(peer.connection.wants_write());
    let mut sink = Vec::new();
    while peer.connection.wants_write() {
        peer.connection.write_to(&mut sink, peer.now).unwrap();
    }
    assert_eq!(peer.connection.queued_output(), 0);
    assert_eq!(peer.connection.write_to(&mut sink, peer.now).unwrap(), 0);
}

#[test]
fn a_small_publish_is_one_chunk_and_one_batch() {
    let (mut peer, channel) = open(Config::default());
    publish(&mut peer, channel, Bytes::from_static(&[7; 16]));
    let queued = peer.connection.queued_output();
    let chunk = peer.connection.poll_transmit(peer.now).unwrap();
    assert_eq!(chunk.len(), queued, "method, header and body in one chunk");
    assert!(peer.connection.poll_transmit(peer.now).is_none());

    publish(&mut peer, channel, Bytes::from_static(&[7; 16]));
    let mut buf = Vec::new();
    assert_eq!(
        peer.connection
            .poll_transmit_into(peer.now, usize::MAX, &mut buf),
        queued
    );
    assert_eq!(buf, chunk);
    assert!(!peer.connection.wants_write());
}

#[test]
fn many_small_publishes_are_one_batch_of_at_most_max_bytes() {
    let (mut peer, channel) = open(Config::default());
    for _ in 0..100 {
        publish(&mut peer, channel, Bytes::from_static(&[7; 16]));
    }
    let queued = peer.connection.queued_output();
    let mut buf = Vec::new();
    let mut batches = 0;
    loop {
        let before = buf.len();
        let taken = peer.connection.poll_transmit_into(peer.now, 1000, &mut buf);
        if taken == 0 {
            break;
        }
        assert!(taken <= 1000);
        assert_eq!(buf.len(), before + taken, "appended");
        batches += 1;
    }
    assert_eq!(buf.len(), queued);
    assert_eq!(batches, queued.div_ceil(1000));
}

#[test]
fn copying_no_body_keeps_each_body_its_own_chunk() {
    let mut config = Config::default();
    config.copy_bodies_up_to = 0;
    let (mut peer, channel) = open(config);
    let body = Bytes::from_static(&[7; 16]);
    publish(&mut peer, channel, body.clone());
    let chunks: Vec<Bytes> =
        std::iter::from_fn(|| peer.connection.poll_transmit(peer.now)).collect();
    assert_eq!(chunks.len(), 3, "frames, body, frame end");
    assert_eq!(chunks[1].as_ptr(), body.as_ptr(), "the body is not copied");
}

#[test]
fn every_path_gives_the_same_bytes_in_order() {
    let bodies = bodies();
    let expected = reference(&bodies);
    for max in [1, 7, 1000, 4096, 65_536, usize::MAX] {
        let (mut peer, channel) = open(Config::default());
        for body in &bodies {
            publish(&mut peer, channel, body.clone());
        }
        let mut out = Vec::new();
        while peer.connection.poll_transmit_into(peer.now, max, &mut out) > 0 {}
        assert!(out == expected, "poll_transmit_into with max {max}");
    }
    for accept in [1, 5, 13, 2048, 65_536, 1 << 30] {
        let (mut peer, channel) = open(Config::default());
        for body in &bodies {
            publish(&mut peer, channel, body.clone());
        }
        let mut writer = Slow::new(accept);
        while peer.connection.wants_write() {
            let before = peer.connection.queued_output();
            let written = peer.connection.write_to(&mut writer, peer.now).unwrap();
            assert!(written > 0 && written <= accept);
            assert_eq!(peer.connection.queued_output(), before - written);
        }
        assert!(writer.written == expected, "write_to accepting {accept}");
    }
}

#[test]
fn paths_mixed_at_any_point_give_the_same_bytes() {
    let bodies = bodies();
    let expected = reference(&bodies);
    let (mut peer, channel) = open(Config::default());
    for body in &bodies {
        publish(&mut peer, channel, body.clone());
    }
    let mut out = Vec::new();
    let mut writer = Slow::new(777);
    for round in 0.. {
        if !peer.connection.wants_write() {
            break;
        }
        match round % 3 {
            0 => {
                writer.written.clear();
                peer.connection.write_to(&mut writer, peer.now).unwrap();
                out.extend_from_slice(&writer.written);
            }
            1 => {
                let _ = peer.connection.poll_transmit_into(peer.now, 3000, &mut out);
            }
            _ => out.extend_from_slice(&peer.connection.poll_transmit(peer.now).unwrap()),
        }
    }
    assert!(out == expected);
}

#[test]
fn write_to_sends_large_bodies_from_the_applications_memory() {
    let (mut peer, channel) = open(Config::default());
    let body = Bytes::from(vec![9; 100_000]);
    publish(&mut peer, channel, body.clone());
    let mut writer = Slow::new(usize::MAX);
    peer.connection.write_to(&mut writer, peer.now).unwrap();
    assert!(!peer.connection.wants_write());
    let range = body.as_ptr_range();
    let body_range = range.start as usize..range.end as usize;
    assert!(
        writer.offered.contains(&body_range),
        "the body is offered as it is: {:?} in {:?}",
        body_range,
        writer.offered
    );
}

#[test]
fn a_writer_error_leaves_the_queue_as_it_was() {
    struct Blocked;
    impl Write for Blocked {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let (mut peer, channel) = open(Config::default());
    publish(&mut peer, channel, Bytes::from_static(b"hello"));
    let queued = peer.connection.queued_output();
    let error = peer
        .connection
        .write_to(&mut Blocked, peer.now)
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
    assert_eq!(peer.connection.queued_output(), queued);
}

#[test]
fn output_left_in_the_core_is_the_back_pressure() {
    let mut config = Config::default();
    config.max_queued_output = 10_000;
    let (mut peer, channel) = open(config);
    for _ in 0..200 {
        publish(&mut peer, channel, Bytes::from_static(&[7; 16]));
    }
    assert!(peer.connection.queued_output() >= 10_000);
    // A slow socket takes a little at a time: the rest stays queued here
    // and publishers are told to wait.
    let mut writer = Slow::new(1000);
    peer.connection.write_to(&mut writer, peer.now).unwrap();
    assert_eq!(
        peer.connection.publish_readiness(channel),
        Readiness::OutputFull
    );
    let mut buf = Vec::new();
    let _ = peer.connection.poll_transmit_into(peer.now, 1000, &mut buf);
    assert_eq!(
        peer.connection.publish_readiness(channel),
        Readiness::OutputFull
    );
    // Once the socket catches up, publishing goes on.
    while peer.connection.queued_output() >= 10_000 {
        peer.connection.write_to(&mut writer, peer.now).unwrap();
    }
    assert_eq!(peer.connection.publish_readiness(channel), Readiness::Ready);
}
