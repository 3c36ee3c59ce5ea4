//! The simulated network and clock: deliveries of what the broker wrote,
//! cut into pieces, and time advancing through both sides' timers.

use std::time::Duration;

use amqp_proto::codec::Frame;
use amqp_proto::spec::Method;

use super::Sim;
use crate::driver;
use crate::oracle::Violation;

impl Sim {
    /// The network hands the client up to `n` bytes of what the broker
    /// wrote, then the end of stream if the broker hung up.
    ///
    /// The bytes go in one piece (or random pieces when re-splitting), and
    /// are also cut where injected bytes begin and end: the client's state
    /// before them decides what it owes them, and its reaction is judged
    /// right after them, as an adapter that writes after every read would
    /// see it. Both runs of the split-invariance check cut there.
    pub(super) fn deliver(&mut self, n: usize) -> Result<(), Violation> {
        if self.broker.is_stalled() {
            return Ok(());
        }
        let offset = self.broker.delivered_offset();
        let chunk = self.broker.take(n);
        if !chunk.is_empty() {
            self.note(|| format!("  rx {} bytes", chunk.len()));
            self.trace_frames(&chunk);
            self.hash.number(chunk.len() as u64);
            let mut pieces = self.pieces(chunk.len());
            let stream_end = offset + chunk.len() as u64;
            for injection in &self.broker.log.injections {
                for at in [injection.start, injection.end] {
                    if at > offset && at < stream_end {
                        pieces.push(usize::try_from(at - offset).unwrap_or(0));
                    }
                }
            }
            pieces.sort_unstable();
            pieces.dedup();
            let mut at = 0;
            // The whole chunk goes in even after a violation, so that a run
            // told to ignore it goes on from a consistent state.
            let mut first = Ok(());
            self.feeding = true;
            for end in pieces {
                let piece = chunk.slice(at..end);
                let before = self.before_piece(offset + at as u64, offset + end as u64);
                first = first.and(before);
                driver::input(&mut self.connection, &piece, self.now);
                self.fed += piece.len();
                if !self.owed.is_empty() {
                    let settled = self.settle();
                    first = first.and(settled);
                }
                at = end;
            }
            self.feeding = false;
            first?;
        }
        if self.broker.at_end_of_stream() {
            self.report_transport_closed("end of stream");
        }
        Ok(())
    }

    /// Names the server frames completed by `bytes`, for the trace.
    pub(super) fn trace_frames(&mut self, bytes: &[u8]) {
        let (Some(decoder), Some(trace)) = (&mut self.trace_decoder, &mut self.trace) else {
            return;
        };
        decoder.extend_from_slice(bytes);
        loop {
            match decoder.decode() {
                Ok(Some(frame)) => trace.push(match frame {
                    Frame::Method { channel, method } => {
                        format!("    frame {channel}: {}", short_method(&method))
                    }
                    Frame::Header { channel, header } => {
                        format!("    frame {channel}: header, body {}", header.body_size)
                    }
                    Frame::Body { channel, payload } => {
                        format!("    frame {channel}: body {}", payload.len())
                    }
                    Frame::Heartbeat => "    frame 0: heartbeat".to_owned(),
                    Frame::RefusedHeader {
                        channel, body_size, ..
                    } => format!("    frame {channel}: refused header, body {body_size}"),
                }),
                Ok(None) => break,
                Err(error) => {
                    trace.push(format!("    (undecodable from here: {error})"));
                    self.trace_decoder = None;
                    break;
                }
            }
        }
    }

    /// Where to cut a delivery of `len` bytes: once at the end, or at a few
    /// random points when re-splitting.
    pub(super) fn pieces(&mut self, len: usize) -> Vec<usize> {
        let Some(rng) = &mut self.split else {
            return vec![len];
        };
        let mut cuts: Vec<usize> = (0..rng.below(4))
            .map(|_| usize::try_from(rng.range(1, len as u64)).unwrap_or(len))
            .collect();
        // Small pieces matter most at the very start (the protocol header).
        if len > 1 && rng.chance(0.3) {
            cuts.push(usize::try_from(rng.range(1, 8.min(len as u64))).unwrap_or(1));
        }
        cuts.push(len);
        cuts.sort_unstable();
        cuts.dedup();
        cuts
    }

    /// Before bytes `[start, end)` of the stream reach the client: notes
    /// which malformed bytes they carry, and which reactions become owed.
    pub(super) fn before_piece(&mut self, start: u64, end: u64) -> Result<(), Violation> {
        while let Some(injection) = self
            .broker
            .log
            .injections
            .get(self.injections_seen)
            .copied()
        {
            if injection.start >= end {
                break;
            }
            if !self.tainted {
                // Whatever the client did before the first malformed byte
                // is judged as a reaction to a correct broker.
                self.settle()?;
                self.tainted = true;
            }
            if injection.end > end {
                // The fault is completed by a later piece; look again then.
                break;
            }
            self.injections_seen += 1;
            if injection.end <= start {
                continue;
            }
            let usable = (self.connection.is_open() || !injection.malformed.needs_open())
                && injection
                    .channel
                    .map_or(true, |id| self.connection.channel(id).is_ok());
            if usable {
                self.owed
                    .push((injection, self.broker.log.client_closes.len(), self.written));
            }
        }
        Ok(())
    }

    pub(super) fn report_transport_closed(&mut self, reason: &str) {
        if !self.transport_reported {
            self.transport_reported = true;
            self.note(|| format!("  transport closed: {reason}"));
            driver::transport_closed(&mut self.connection, reason);
        }
    }

    /// Advances the clock, firing client and broker timers at their times;
    /// the network delivers everything at each broker timer (a live broker's
    /// heartbeats reach the client), as `support::Peer::advance` does for
    /// the client's deadlines.
    pub(super) fn advance(&mut self, by: Duration) -> Result<(), Violation> {
        let target = self.now + by;
        for _ in 0..100_000 {
            let client = self.connection.poll_timeout();
            let broker = self.broker.next_deadline();
            let next = match (client, broker) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(next) => next,
                    None => break,
                },
            };
            if next > target {
                break;
            }
            self.check_heartbeat_sent(next)?;
            self.now = self.now.max(next);
            if broker.is_some_and(|at| at <= self.now) {
                self.broker.on_timer(self.now);
                self.deliver(usize::MAX)?;
            }
            if client.is_some_and(|at| at <= self.now) {
                driver::timeout(&mut self.connection, self.now);
                self.oracle.timeout_driven(
                    self.now,
                    self.broker.delivered_offset(),
                    &self.broker.log,
                );
            }
            self.settle()?;
            if self.connection.poll_timeout() == client && client.is_some_and(|at| at <= self.now) {
                return Err(Violation::new(
                    "timer-stuck",
                    format!(
                        "handle_timeout at {} ms left the deadline where it was",
                        self.elapsed_ms()
                    ),
                ));
            }
        }
        self.check_heartbeat_sent(target)?;
        self.now = self.now.max(target);
        Ok(())
    }

    /// Before the clock moves to `to`: an open client with heartbeats on
    /// must have written something within half an interval (RabbitMQ's
    /// pace, so the server hears from it once per interval whatever the
    /// phase of its checks; spec 4.2.7), so a deadline must have come
    /// first.
    fn check_heartbeat_sent(&self, to: std::time::Instant) -> Result<(), Violation> {
        let interval = Duration::from_secs(u64::from(self.connection.tuning().heartbeat));
        let late = to.saturating_duration_since(self.last_write);
        if interval.is_zero() || !self.connection.is_open() || late <= interval / 2 {
            return Ok(());
        }
        Err(Violation::new(
            "missed-heartbeat",
            format!(
                "nothing written for {} ms with a {} s heartbeat (due every half interval)",
                late.as_millis(),
                interval.as_secs()
            ),
        ))
    }
}

/// A method for the trace, shortened.
fn short_method(method: &Method) -> String {
    let mut text = format!("{method:?}");
    text.truncate(160);
    text
}
