//! `amqp_proto::bytes` is the `bytes` the core's signatures use, so an
//! application can name those types without depending on a matching
//! version itself.

use std::time::Instant;

use amqp_proto::bytes::{Bytes, BytesMut};
use amqp_proto::{Config, Connection};

#[test]
fn the_bytes_reexport_is_the_version_in_the_core_api() {
    let now = Instant::now();
    let mut connection = Connection::new(Config::default(), now);
    let header: Option<Bytes> = connection.poll_transmit(now);
    assert_eq!(header.as_deref(), Some(&b"AMQP\x00\x00\x09\x01"[..]));
    let buffer: &mut BytesMut = connection.input_buffer();
    assert!(buffer.is_empty());
}
