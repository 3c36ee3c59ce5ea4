//! Every call into the core's input and output API, in one place, so a
//! change of that API changes only this module.

use std::time::Instant;

use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::{Connection, UsageError};
use bytes::Bytes;

/// Feeds bytes from the socket.
pub(crate) fn input(connection: &mut Connection, bytes: &[u8], now: Instant) {
    connection.handle_input(bytes, now);
}

/// Reports end of stream or a failed transport.
pub(crate) fn transport_closed(connection: &mut Connection, reason: &str) {
    connection.handle_transport_closed(reason);
}

/// Fires the deadlines due at `now`.
pub(crate) fn timeout(connection: &mut Connection, now: Instant) {
    connection.handle_timeout(now);
}

/// The next chunk to write.
pub(crate) fn transmit(connection: &mut Connection, now: Instant) -> Option<Bytes> {
    connection.poll_transmit(now)
}

/// The application closes the connection at `now`.
pub(crate) fn close(
    connection: &mut Connection,
    code: u16,
    text: &str,
    now: Instant,
) -> Result<(), UsageError> {
    connection.close(ReplyCode(code), text, now)
}
