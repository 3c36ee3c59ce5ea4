//! What the broker does on its own when a fault step says so: close a
//! channel or the connection, cancel a consumer, pause a channel, block
//! the connection, or write malformed bytes.

use amqp_proto::spec::{self, Method};
use bytes::BufMut;

use super::{wire, Broker, Injection, Phase};
use crate::step::Malformed;

/// A channel id no client opens: the broker's channel-max is at most 2047.
const UNOPENED_CHANNEL: u16 = 40_000;

impl Broker {
    /// True when the broker can act: open, and neither hung nor cut.
    fn can_act(&self) -> bool {
        self.phase == Phase::Open && !self.is_stalled() && !self.hang_up
    }

    /// The open (not closing) channel at index `pick`, modulo their number.
    fn pick_channel(&self, pick: u8) -> Option<u16> {
        let open: Vec<u16> = self
            .channels
            .iter()
            .filter(|(_, channel)| !channel.closing)
            .map(|(id, _)| *id)
            .collect();
        open.get(usize::from(pick) % open.len().max(1)).copied()
    }

    /// Closes a channel as an operator or a failed check would (406).
    pub fn fault_close_channel(&mut self, pick: u8) {
        if let Some(id) = self.pick_channel(pick).filter(|_| self.can_act()) {
            self.close_channel(id, 406, "PRECONDITION_FAILED - simulated channel exception");
        }
    }

    /// Closes the connection as an operator would (320).
    pub fn fault_close_connection(&mut self) {
        if self.can_act() {
            self.close_connection(320, "CONNECTION_FORCED - simulated operator close");
        }
    }

    /// Cancels one active consumer (consumer-cancel-notify, as on a
    /// queue's failover).
    pub fn fault_cancel(&mut self, pick: u8) {
        if !self.can_act() {
            return;
        }
        let mut active: Vec<(u16, String)> = Vec::new();
        for (id, channel) in &self.channels {
            if channel.closing {
                continue;
            }
            for tag in channel.consumers.keys() {
                active.push((*id, tag.clone()));
            }
        }
        let Some((id, tag)) = active.get(usize::from(pick) % active.len().max(1)).cloned() else {
            return;
        };
        self.release_deferred(id);
        if self.remove_consumer(id, &tag).is_some() {
            self.notify_cancel(id, &tag);
        }
    }

    /// Sends `channel.flow`.
    pub fn fault_flow(&mut self, pick: u8, active: bool) {
        if let Some(id) = self.pick_channel(pick).filter(|_| self.can_act()) {
            self.write(id, &spec::ChannelFlow { active }.into());
        }
    }

    /// Sends `connection.blocked` or `unblocked`.
    pub fn fault_blocked(&mut self, on: bool) {
        if !self.can_act() {
            return;
        }
        let method: Method = if on {
            spec::ConnectionBlocked {
                reason: "low on memory".into(),
            }
            .into()
        } else {
            spec::ConnectionUnblocked {}.into()
        };
        self.write(0, &method);
    }

    /// Writes malformed input. Does nothing when the broker cannot act or
    /// the fault needs an open channel and there is none.
    pub fn inject(&mut self, malformed: Malformed) {
        if !self.can_act() {
            return;
        }
        let start = self.taken + self.out.len() as u64;
        let mut channel = None;
        match malformed {
            Malformed::BadFrameEnd => self.out.put_slice(&[8, 0, 0, 0, 0, 0, 0, 0x00]),
            Malformed::Oversize => {
                // Only the header: the client must refuse it from there.
                self.out.put_u8(1);
                self.out.put_u16(0);
                self.out.put_u32(self.frame_max);
            }
            Malformed::UnknownFrameType => self.out.put_slice(&[9, 0, 0, 0, 0, 0, 0, 0xCE]),
            Malformed::HeartbeatOnChannel => self.out.put_slice(&[8, 0, 1, 0, 0, 0, 0, 0xCE]),
            Malformed::UnknownMethod => {
                self.out
                    .put_slice(&[1, 0, 0, 0, 0, 0, 4, 0, 60, 0, 250, 0xCE]);
            }
            Malformed::ChannelNotOpen => {
                let flow = spec::ChannelFlow { active: true }.into();
                wire::method(
                    &mut self.out,
                    UNOPENED_CHANNEL,
                    &flow,
                    self.frame_max,
                    &mut self.log,
                );
            }
            Malformed::BodyWithoutHeader { ch } => {
                let Some(id) = self.pick_channel(ch) else {
                    return;
                };
                channel = Some(id);
                let [c0, c1] = id.to_be_bytes();
                self.out.put_slice(&[3, c0, c1, 0, 0, 0, 5]);
                self.out.put_slice(b"stray");
                self.out.put_u8(0xCE);
            }
            Malformed::ClientOnlyMethod { ch } => {
                let Some(id) = self.pick_channel(ch) else {
                    return;
                };
                channel = Some(id);
                let qos = spec::BasicQos::default().into();
                wire::method(&mut self.out, id, &qos, self.frame_max, &mut self.log);
            }
            Malformed::UnknownConfirm { ch } => {
                let Some(id) = self.pick_channel(ch) else {
                    return;
                };
                channel = Some(id);
                let ack = spec::BasicAck {
                    delivery_tag: 1 << 40,
                    multiple: false,
                }
                .into();
                wire::method(&mut self.out, id, &ack, self.frame_max, &mut self.log);
            }
            // Chosen by the broker at the handshake, not injectable later.
            Malformed::RejectedHeader => return,
            Malformed::MethodBeforeHeader => {
                // Written with the next content; see `inject_between`.
                self.interleave_next_content = true;
                return;
            }
        }
        let end = self.taken + self.out.len() as u64;
        let end = if malformed == Malformed::Oversize {
            start + 7
        } else {
            end
        };
        self.log.injections.push(Injection {
            start,
            end,
            malformed,
            channel,
        });
    }

    /// Writes a method between a content-carrying method and its header.
    pub(super) fn inject_between(&mut self, id: u16) {
        let start = self.taken + self.out.len() as u64;
        let method: Method = if self.rng.chance(0.5) {
            spec::BasicDeliver {
                consumer_tag: "amq.ctag-injected".into(),
                delivery_tag: 1 << 40,
                redelivered: false,
                exchange: "".into(),
                routing_key: "injected".into(),
            }
            .into()
        } else {
            spec::ChannelFlow { active: true }.into()
        };
        wire::method(&mut self.out, id, &method, self.frame_max, &mut self.log);
        let end = self.taken + self.out.len() as u64;
        self.log.injections.push(Injection {
            start,
            end,
            malformed: Malformed::MethodBeforeHeader,
            channel: Some(id),
        });
    }
}
