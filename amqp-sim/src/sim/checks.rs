//! The checks that need the simulation's own state besides the oracle's:
//! how the connection ended, and the reactions owed to malformed input.

use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::ConnectionError;

use super::Sim;
use crate::oracle::Violation;
use crate::step::Reaction;

impl Sim {
    pub(super) fn check_closed(&mut self, error: &ConnectionError) -> Result<(), Violation> {
        match error {
            ConnectionError::ProtocolViolation { error } if !self.tainted => Err(Violation::new(
                "false-positive-violation",
                format!("the broker behaved, the client reported: {error}"),
            )),
            ConnectionError::CloseTimeout => {
                let called = self.close_called.unwrap_or(self.start);
                let waited = self.now - called;
                if waited < self.config.close_timeout {
                    return Err(Violation::new(
                        "close-timeout-early",
                        format!(
                            "close timed out {} ms after close() (close timeout {:?})",
                            waited.as_millis(),
                            self.config.close_timeout
                        ),
                    ));
                }
                Ok(())
            }
            ConnectionError::HeartbeatTimeout if !self.broker.is_stalled() => Err(Violation::new(
                "false-heartbeat-timeout",
                "heartbeat timeout although the broker was live",
            )),
            _ => Ok(()),
        }
    }

    /// Messages are conserved: one the broker handed out on a channel both
    /// sides have open, and the client read to its last byte, was handed
    /// to the application, or the core gave it back already (which settles
    /// it at the broker). A core that swallows the late get-ok of an
    /// abandoned `basic.get`, or a delivery to an abandoned consumer,
    /// leaves it unacknowledged for good.
    pub(super) fn check_conservation(&mut self) -> Result<(), Violation> {
        let rejects = self.broker.log.rejects.get(self.rejects_checked..);
        for (id, incarnation, tag, requeue) in rejects.unwrap_or_default() {
            // A refused content is rejected without requeue: not given back.
            if *requeue && !self.app_rejects.contains(&(*id, *incarnation, *tag)) {
                self.oracle
                    .given_back(*id, *incarnation, *tag, &self.broker.log)?;
            }
        }
        self.rejects_checked = self.broker.log.rejects.len();
        // The application acks and nacks only what it was handed on the
        // channel's incarnation the broker has: a tag from before a
        // recovery (or a reopening) would settle another message.
        let settlements = self.broker.log.settlements.get(self.settlements_checked..);
        for (id, incarnation, tag) in settlements.unwrap_or_default() {
            if *tag != 0 && !self.oracle.handed(*id, *incarnation, *tag) {
                return Err(Violation::new(
                    "settled-unhanded",
                    format!(
                        "the broker read an ack or nack of delivery tag {tag} on channel {id} (incarnation {incarnation}), which the application was never handed there"
                    ),
                ));
            }
        }
        self.settlements_checked = self.broker.log.settlements.len();
        if !self.connection.is_open() {
            return Ok(());
        }
        for (id, incarnation, tag) in self.broker.held_by_client() {
            let (current, closed) = self.oracle.life(id);
            if current != incarnation || closed || self.connection.channel(id).is_err() {
                continue;
            }
            if !self.oracle.handed(id, incarnation, tag) {
                return Err(Violation::new(
                    "message-conservation",
                    format!(
                        "message {tag} on channel {id}, read by the client, neither handed to the application nor given back"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Once the network is drained on an open connection: what was given
    /// up went back (consumers cancelled, channels closed), and messages
    /// are conserved.
    pub(super) fn check_quiet(&mut self) -> Result<(), Violation> {
        if !self.connection.is_open() || !self.broker.quiet() {
            return Ok(());
        }
        self.check_conservation()?;
        let broker = &self.broker;
        self.oracle.quiet(&broker.log, |channel, incarnation, tag| {
            broker.consumer_request(channel, incarnation, tag)
        })
    }

    /// The client's closes against what it owed.
    pub(super) fn check_reactions(&mut self) -> Result<(), Violation> {
        let closes = self.broker.log.client_closes.clone();
        let unchecked = self.closes_checked;
        // Each close is judged once, also when the invariant is ignored.
        self.closes_checked = closes.len();
        for code in closes.iter().skip(unchecked) {
            if *code != 200 && !self.tainted {
                return Err(Violation::new(
                    "false-positive-close",
                    format!(
                        "the broker behaved, the client closed with {}",
                        ReplyCode(*code)
                    ),
                ));
            }
        }
        self.closes_checked = closes.len();
        // Only the first fault counts: the connection is over after it.
        let owed = std::mem::take(&mut self.owed);
        if let Some((injection, before, written)) = owed.first().copied() {
            let reaction = injection.malformed.expected();
            let sent = closes.get(before).copied();
            let wrote = self.written - written;
            let ok = match reaction {
                Reaction::Close(code) => sent == Some(code),
                Reaction::Silent => wrote == 0 && self.connection.is_closed(),
            };
            if !ok {
                return Err(Violation::new(
                    "malformed-reaction",
                    format!(
                        "after {:?} the client owed {reaction:?}; it sent close {sent:?} ({wrote} bytes), closed: {}",
                        injection.malformed,
                        self.connection.is_closed()
                    ),
                ));
            }
        }
        Ok(())
    }
}
