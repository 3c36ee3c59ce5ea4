//! Counters of what went over the connection.

/// What went over a connection so far, from [`Connection::stats`](crate::Connection::stats).
///
/// Counters, not events: each costs the core one integer add where it
/// happens, nothing has to be drained, and a reader (a metrics scrape, a
/// health check, a test) takes a snapshot when it wants one and compares
/// it with the last. Events for heartbeats would wake every consumer of
/// the event stream twice a minute for nothing it must act on. The
/// counters never go down and saturate instead of wrapping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Bytes handed to the adapter for writing: chunks taken with
    /// [`poll_transmit`](crate::Connection::poll_transmit), bytes copied by
    /// [`poll_transmit_into`](crate::Connection::poll_transmit_into), and
    /// what a writer accepted in [`write_to`](crate::Connection::write_to).
    /// Bytes still queued are not counted (see
    /// [`queued_output`](crate::Connection::queued_output)).
    pub bytes_sent: u64,
    /// Bytes received: given to [`handle_input`](crate::Connection::handle_input),
    /// read by [`read_from`](crate::Connection::read_from), or appended to
    /// [`input_buffer`](crate::Connection::input_buffer) before
    /// [`handle_buffered_input`](crate::Connection::handle_buffered_input).
    pub bytes_received: u64,
    /// Frames decoded from the server's bytes, heartbeats included.
    pub frames_received: u64,
    /// Heartbeat frames the core queued for sending (spec 4.2.7): one after
    /// half the negotiated interval without anything written.
    pub heartbeats_sent: u64,
    /// Heartbeat frames received from the server.
    pub heartbeats_received: u64,
}

/// Adds `n` to a counter, saturating.
pub(crate) fn add(counter: &mut u64, n: usize) {
    *counter = counter.saturating_add(n as u64);
}
