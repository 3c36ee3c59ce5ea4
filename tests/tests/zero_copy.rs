//! Large bodies move without copies on our side, shown two ways: the
//! memory the core hands out is the memory it was given (pointer identity),
//! and a counting allocator sees nothing of the body's size allocated.
//!
//! The adapters then write the core's chunks as they are: `amqp-io-std`'s
//! `Writer` and `amqp-io-tokio`'s driver gather them into `IoSlice`s for
//! vectored writes (`transport.rs`, `driver.rs`; by inspection: neither
//! copies a chunk). With TLS the body is necessarily copied into records.

use std::time::Instant;

use amqp_proto::codec::{
    body_frame_header, encode_header_frame, encode_method_frame, BasicProperties, ContentHeader,
};
use amqp_proto::spec::constants::FRAME_END;
use amqp_proto::spec::{self, Method};
use amqp_proto::{Config, Connection, Event};
use bytes::{BufMut, Bytes, BytesMut};

const FRAME_MAX: u32 = 131_072;

fn server(channel: u16, method: impl Into<Method>) -> BytesMut {
    let mut out = BytesMut::new();
    encode_method_frame(channel, &method.into(), FRAME_MAX, &mut out).unwrap();
    out
}

/// A connection past the handshake (frame-max 128 KiB) with channel 1 open.
fn open() -> Connection {
    let now = Instant::now();
    let mut connection = Connection::new(Config::default(), now);
    let start = spec::ConnectionStart {
        version_major: 0,
        version_minor: 9,
        mechanisms: "PLAIN".into(),
        locales: "en_US".into(),
        ..Default::default()
    };
    let tune = spec::ConnectionTune {
        channel_max: 16,
        frame_max: FRAME_MAX,
        heartbeat: 0,
    };
    connection.handle_input(&server(0, start), now);
    connection.handle_input(&server(0, tune), now);
    connection.handle_input(&server(0, spec::ConnectionOpenOk::default()), now);
    let channel = connection.open_channel().unwrap();
    connection.handle_input(&server(channel.id(), spec::ChannelOpenOk::default()), now);
    while connection.poll_transmit(now).is_some() {}
    while connection.poll_event().is_some() {}
    connection
}

fn within(inner: &[u8], outer: &[u8]) -> bool {
    let range = outer.as_ptr_range();
    range.contains(&inner.as_ptr()) && inner.as_ptr_range().end <= range.end
}

#[test]
fn a_published_body_is_sent_from_the_applications_memory() {
    let mut connection = open();
    let body = Bytes::from(vec![0x5a; 1 << 20]);
    let publish = spec::BasicPublish {
        routing_key: "big".into(),
        ..Default::default()
    };
    let properties = BasicProperties::default();
    let mut chunks = Vec::new();
    let counted = allocation_counter::measure(|| {
        connection
            .channel(1)
            .unwrap()
            .publish(&publish, &properties, body.clone())
            .unwrap();
        chunks.extend(std::iter::from_fn(|| {
            connection.poll_transmit(Instant::now())
        }));
    });
    let from_body: usize = chunks
        .iter()
        .filter(|chunk| within(chunk, &body))
        .map(Bytes::len)
        .sum();
    assert_eq!(
        from_body,
        body.len(),
        "every body byte goes out from the body's memory"
    );
    // Frame headers and the method: a few hundred bytes, not a megabyte.
    assert!(
        counted.bytes_total < 16 * 1024,
        "publishing 1 MiB allocated {} bytes",
        counted.bytes_total
    );
}

#[test]
fn a_delivered_body_is_a_slice_of_the_read_buffer() {
    let mut connection = open();
    let body = vec![0xa5; 100 * 1024];
    let mut wire = server(
        1,
        spec::BasicDeliver {
            consumer_tag: "c".into(),
            delivery_tag: 1,
            redelivered: false,
            exchange: "".into(),
            routing_key: "big".into(),
        },
    );
    // No consumer is registered in the core for "c" (the adapters keep
    // consumers), so the delivery is reported as it is.
    let header = ContentHeader::basic(body.len() as u64, BasicProperties::default());
    encode_header_frame(1, &header, FRAME_MAX, &mut wire).unwrap();
    wire.put_slice(&body_frame_header(1, body.len(), FRAME_MAX).unwrap());
    wire.put_slice(&body);
    wire.put_u8(FRAME_END);
    // The socket read lands in the core's buffer; nothing after it copies.
    connection.input_buffer().extend_from_slice(&wire);
    let read = connection.input_buffer().as_ptr_range();
    let mut delivered = None;
    let counted = allocation_counter::measure(|| {
        connection.handle_buffered_input(Instant::now());
        while let Some(event) = connection.poll_event() {
            if let Event::Delivery(delivery) = event {
                delivered = Some(delivery.content.body);
            }
        }
    });
    let delivered = delivered.expect("a delivery");
    assert_eq!(delivered.len(), body.len());
    assert!(read.contains(&delivered.as_ptr()), "the body is not a copy");
    // The counter is live (the decoded content header is boxed), so the
    // bound below cannot hold vacuously.
    assert!(counted.count_total >= 1, "{counted:?}");
    assert!(
        counted.bytes_total < 16 * 1024,
        "receiving 100 KiB allocated {} bytes",
        counted.bytes_total
    );
}
