//! Counters of what went over the connection.

use std::time::Duration;

/// What went over a connection so far, from [`Connection::stats`](crate::Connection::stats).
///
/// Counters, not events: each costs the core one integer add where it
/// happens, nothing has to be drained, and a reader (a metrics scrape, a
/// health check, a test) takes a snapshot when it wants one and compares
/// it with the last. Events for heartbeats would wake every consumer of
/// the event stream twice a minute for nothing it must act on. The
/// counters never go down and saturate instead of wrapping.
///
/// The gauges ([`channels_open`](Self::channels_open),
/// [`consumers`](Self::consumers), [`unconfirmed`](Self::unconfirmed),
/// [`unsettled`](Self::unsettled)) are the state at the moment of the
/// snapshot instead: they go up and down, and are 0 once the connection
/// is closed. Time ([`blocked_time`](Self::blocked_time)) is measured with
/// the `now` the core is given, never a clock of its own, so it is exact
/// and repeatable under simulated time.
///
/// Every number belongs to one [`Connection`](crate::Connection) value
/// and starts at zero with it. A [recovered](crate::Connection::recover)
/// connection is a new value: whoever replaces a failed connection with
/// its recovery and wants totals over both adds the failed connection's
/// last snapshot to its own running totals (the counters, not the gauges),
/// as it would for bytes.
///
/// # Messages, exactly
///
/// [`acked`](Self::acked), [`nacked`](Self::nacked),
/// [`rejected`](Self::rejected) and [`requeued`](Self::requeued) count
/// messages, not methods: an ack with `multiple` counts every delivery it
/// settles. For that the core keeps, per channel, the delivery tags still
/// awaiting a settlement (deliveries and get-oks taken without `no_ack`),
/// which is also what [`unsettled`](Self::unsettled) counts and what lets
/// [`ChannelRef::ack`](crate::ChannelRef::ack) refuse a tag the broker does
/// not know ([`UsageError::UnknownDeliveryTag`](crate::UsageError::UnknownDeliveryTag))
/// instead of losing the channel to a 406. A channel remembers at most
/// 65 536 tags, the largest prefetch `basic.qos` can ask for: past that the
/// oldest are forgotten but still counted, settlements naming a forgotten
/// tag are sent unchecked, and only a `multiple` settlement naming a
/// forgotten tag that is not the newest forgotten one is counted as one
/// message where it may have been more.
///
/// When a channel closes or the connection ends, its unsettled deliveries
/// are dropped from [`unsettled`](Self::unsettled) without being counted
/// anywhere: the broker requeues them itself, and [`requeued`](Self::requeued)
/// counts only what this client sent back.
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
    /// Frames queued for sending (method, content header, body and
    /// heartbeat frames; not the protocol header). Counted when queued,
    /// unlike [`bytes_sent`](Self::bytes_sent): a frame's bytes may be
    /// handed out in several pieces, and frames still queued when the
    /// transport fails are counted too.
    pub frames_sent: u64,
    /// Frames decoded from the server's bytes, heartbeats included.
    pub frames_received: u64,
    /// Heartbeat frames the core queued for sending (spec 4.2.7): one after
    /// half the negotiated interval without anything written.
    pub heartbeats_sent: u64,
    /// Heartbeat frames received from the server.
    pub heartbeats_received: u64,
    /// Messages published (`basic.publish` queued with its content), in
    /// confirm mode or not.
    pub publishes: u64,
    /// Publishes the broker confirmed with `basic.ack`, `multiple`
    /// expanded.
    pub confirms_acked: u64,
    /// Publishes the broker refused with `basic.nack`, `multiple`
    /// expanded. Publishes failed because their channel or the connection
    /// closed are counted in neither.
    pub confirms_nacked: u64,
    /// Messages the broker returned (`basic.return`: mandatory and
    /// unroutable), whether or not their content fitted the limits.
    pub returned: u64,
    /// Messages delivered to consumers (`basic.deliver` with its content),
    /// with or without `no_ack`, including those the core settled itself
    /// (refused as too large, or given back for an abandoned consumer).
    pub deliveries: u64,
    /// `basic.get` answered with a message (get-ok with its content),
    /// including the answers to abandoned gets.
    pub gets_ok: u64,
    /// `basic.get` answered with get-empty.
    pub gets_empty: u64,
    /// Messages acknowledged: by each `basic.ack` sent (`multiple`
    /// expanded), and every message delivered or got with `no_ack`, which
    /// the broker counts as acknowledged when it sends it.
    pub acked: u64,
    /// Messages refused with `basic.nack`, `multiple` expanded.
    pub nacked: u64,
    /// Messages refused with `basic.reject`, by the application or by the
    /// core (a message over the size limits, or one given back because its
    /// consumer or get was abandoned).
    pub rejected: u64,
    /// Of [`nacked`](Self::nacked) and [`rejected`](Self::rejected), the
    /// messages sent back to their queue (`requeue`).
    pub requeued: u64,
    /// Gauge: channels open (open-ok received, no close started), the
    /// recovery's own declaring channel included while it is open.
    pub channels_open: u32,
    /// Gauge: consumers registered (consume-ok received, or a `nowait`
    /// consume sent) and not cancelled yet, on all channels.
    pub consumers: u32,
    /// Gauge: publishes awaiting a confirm, on all channels.
    pub unconfirmed: u64,
    /// Gauge: deliveries and get-oks taken without `no_ack` and not settled
    /// yet, on all open channels.
    pub unsettled: u64,
    /// `channel.close` sent by the server (an error on the channel, such
    /// as 406 or 404), also when it crossed a close of ours.
    pub server_channel_closes: u64,
    /// `basic.cancel` sent by the server for one of our consumers
    /// (RabbitMQ's consumer cancel notification: its queue was deleted or
    /// failed over).
    pub server_consumer_cancels: u64,
    /// Times the broker blocked the connection (`connection.blocked` while
    /// not blocked already).
    pub blocked_count: u64,
    /// Time spent blocked: from each `connection.blocked` to its
    /// `connection.unblocked` (or the end of the connection), by the times
    /// given with the input. A spell still running counts up to the latest
    /// time the core was given.
    pub blocked_time: Duration,
    /// Times the server paused a channel (`channel.flow` with `active`
    /// false on a channel that was flowing).
    pub flow_pauses: u64,
    /// Topologies recovered ([`Event::Recovered`](crate::Event::Recovered)
    /// emitted, refused steps or not). As every counter here belongs to one
    /// [`Connection`](crate::Connection) value and only a connection made by
    /// [`recover`](crate::Connection::recover) recovers, it is 0 or 1:
    /// sum it over the connections as the other counters.
    pub recoveries: u64,
}

impl Stats {
    /// These numbers with an earlier connection's counters added (`earlier`
    /// is that connection's last snapshot): the totals over a connection
    /// and the ones it replaced, as a recovering adapter reports them. The
    /// gauges stay this connection's, since the earlier one's state is
    /// gone.
    #[must_use]
    pub fn with_earlier(self, earlier: &Self) -> Self {
        let sum = |now: u64, before: u64| now.saturating_add(before);
        Self {
            bytes_sent: sum(self.bytes_sent, earlier.bytes_sent),
            bytes_received: sum(self.bytes_received, earlier.bytes_received),
            frames_sent: sum(self.frames_sent, earlier.frames_sent),
            frames_received: sum(self.frames_received, earlier.frames_received),
            heartbeats_sent: sum(self.heartbeats_sent, earlier.heartbeats_sent),
            heartbeats_received: sum(self.heartbeats_received, earlier.heartbeats_received),
            publishes: sum(self.publishes, earlier.publishes),
            confirms_acked: sum(self.confirms_acked, earlier.confirms_acked),
            confirms_nacked: sum(self.confirms_nacked, earlier.confirms_nacked),
            returned: sum(self.returned, earlier.returned),
            deliveries: sum(self.deliveries, earlier.deliveries),
            gets_ok: sum(self.gets_ok, earlier.gets_ok),
            gets_empty: sum(self.gets_empty, earlier.gets_empty),
            acked: sum(self.acked, earlier.acked),
            nacked: sum(self.nacked, earlier.nacked),
            rejected: sum(self.rejected, earlier.rejected),
            requeued: sum(self.requeued, earlier.requeued),
            server_channel_closes: sum(self.server_channel_closes, earlier.server_channel_closes),
            server_consumer_cancels: sum(
                self.server_consumer_cancels,
                earlier.server_consumer_cancels,
            ),
            blocked_count: sum(self.blocked_count, earlier.blocked_count),
            blocked_time: self.blocked_time.saturating_add(earlier.blocked_time),
            flow_pauses: sum(self.flow_pauses, earlier.flow_pauses),
            recoveries: sum(self.recoveries, earlier.recoveries),
            ..self
        }
    }
}

/// Adds `n` to a counter, saturating.
pub(crate) fn add(counter: &mut u64, n: usize) {
    *counter = counter.saturating_add(n as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earlier_counters_are_added_and_gauges_are_not() {
        // A literal without `..`: a field added to Stats must be decided
        // here (and in with_earlier) before this compiles.
        let one = Stats {
            bytes_sent: 1,
            bytes_received: 1,
            frames_sent: 1,
            frames_received: 1,
            heartbeats_sent: 1,
            heartbeats_received: 1,
            publishes: 1,
            confirms_acked: 1,
            confirms_nacked: 1,
            returned: 1,
            deliveries: 1,
            gets_ok: 1,
            gets_empty: 1,
            acked: 1,
            nacked: 1,
            rejected: 1,
            requeued: 1,
            channels_open: 1,
            consumers: 1,
            unconfirmed: 1,
            unsettled: 1,
            server_channel_closes: 1,
            server_consumer_cancels: 1,
            blocked_count: 1,
            blocked_time: Duration::from_secs(1),
            flow_pauses: 1,
            recoveries: 1,
        };
        let earlier = Stats {
            channels_open: 7,
            consumers: 7,
            unconfirmed: 7,
            unsettled: 7,
            ..one
        };
        let total = one.with_earlier(&earlier);
        let two = Stats {
            bytes_sent: 2,
            bytes_received: 2,
            frames_sent: 2,
            frames_received: 2,
            heartbeats_sent: 2,
            heartbeats_received: 2,
            publishes: 2,
            confirms_acked: 2,
            confirms_nacked: 2,
            returned: 2,
            deliveries: 2,
            gets_ok: 2,
            gets_empty: 2,
            acked: 2,
            nacked: 2,
            rejected: 2,
            requeued: 2,
            server_channel_closes: 2,
            server_consumer_cancels: 2,
            blocked_count: 2,
            blocked_time: Duration::from_secs(2),
            flow_pauses: 2,
            recoveries: 2,
            ..one
        };
        assert_eq!(total, two);
    }
}
