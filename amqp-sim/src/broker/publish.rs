//! Publishes from the client: content assembly, routing, returns, and the
//! publisher confirms (at once, `multiple`, held back, or nacks).

use std::time::Duration;

use amqp_proto::codec::ContentHeader;
use amqp_proto::spec::{self, Method};
use bytes::Bytes;

use super::channel::{text, Held};
use super::model::Message;
use super::Broker;

impl Broker {
    /// A content header from the client.
    pub(super) fn content_header(&mut self, id: u16, header: ContentHeader) {
        let Some(incoming) = self
            .channels
            .get_mut(&id)
            .and_then(|channel| channel.incoming.as_mut())
        else {
            self.log.fault(format!(
                "client sent a content header on channel {id} without a publish"
            ));
            return;
        };
        if incoming.header.is_some() {
            self.log.fault(format!(
                "client sent a second content header on channel {id}"
            ));
            return;
        }
        let done = header.body_size == 0;
        incoming.header = Some(header);
        if done {
            self.complete_publish(id);
        }
    }

    /// A content body frame from the client.
    pub(super) fn content_body(&mut self, id: u16, payload: &Bytes) {
        let Some(incoming) = self
            .channels
            .get_mut(&id)
            .and_then(|channel| channel.incoming.as_mut())
        else {
            self.log.fault(format!(
                "client sent a body frame on channel {id} without a publish"
            ));
            return;
        };
        let Some(header) = &incoming.header else {
            self.log.fault(format!(
                "client sent a body frame on channel {id} before the header"
            ));
            return;
        };
        incoming.body.extend_from_slice(payload);
        let (received, expected) = (incoming.body.len() as u64, header.body_size);
        if received > expected {
            self.log.fault(format!(
                "client sent {received} body bytes on channel {id}, announced {expected}"
            ));
        } else if received == expected {
            self.complete_publish(id);
        }
    }

    pub(super) fn complete_publish(&mut self, id: u16) {
        let Some(channel) = self.channels.get_mut(&id) else {
            return;
        };
        let Some(incoming) = channel.incoming.take() else {
            return;
        };
        if incoming.ignore {
            return;
        }
        let properties = incoming
            .header
            .map(|header| header.properties)
            .unwrap_or_default();
        let exchange = text(&incoming.publish.exchange);
        let key = text(&incoming.publish.routing_key);
        let Some(queues) = self.model.route(&exchange, &key) else {
            let reason = format!("NOT_FOUND - no exchange '{exchange}' in vhost '/'");
            self.close_channel(id, 404, &reason);
            return;
        };
        let body = incoming.body.freeze();
        let message = Message {
            exchange: exchange.clone(),
            routing_key: key.clone(),
            properties: properties.clone(),
            body: body.clone(),
            redelivered: false,
        };
        let sequence = channel.confirm.then(|| {
            channel.publish_sequence += 1;
            channel.unsettled.insert(channel.publish_sequence);
            channel.publish_sequence
        });
        if queues.is_empty() && incoming.publish.mandatory {
            let returned: Method = spec::BasicReturn {
                reply_code: 312,
                reply_text: "NO_ROUTE".into(),
                exchange: exchange.as_str().into(),
                routing_key: key.as_str().into(),
            }
            .into();
            self.write_content(id, &returned, &properties, &body);
            let incarnation = self.channels.get(&id).map_or(0, |c| c.incarnation);
            self.log
                .returns
                .entry((id, incarnation))
                .or_default()
                .push_back((312, body.clone()));
        }
        for queue in &queues {
            if let Some(queue) = self.model.queues.get_mut(queue) {
                queue.messages.push_back(message.clone());
            }
        }
        if let Some(sequence) = sequence {
            self.decide_confirm(id, sequence);
        }
        self.dispatch();
    }

    /// Acks or nacks a publish now, or holds the confirm for a while.
    pub(super) fn decide_confirm(&mut self, id: u16, sequence: u64) {
        let roll = self.rng.below(100);
        let delay = Duration::from_millis(self.rng.range(0, 2_000));
        let at = self.now + delay;
        match roll {
            0..=54 => self.send_confirm(id, sequence, true),
            55..=59 => self.send_confirm(id, sequence, false),
            _ => {
                let ack = !self.rng.chance(0.05);
                if let Some(channel) = self.channels.get_mut(&id) {
                    channel.held.push(Held { sequence, ack, at });
                }
            }
        }
    }

    /// Sends one confirm; `multiple` when it is the oldest outstanding
    /// (then it settles exactly this one), on a coin flip.
    pub(super) fn send_confirm(&mut self, id: u16, sequence: u64, ack: bool) {
        let multiple_ok = self
            .channels
            .get(&id)
            .is_some_and(|channel| channel.unsettled.first() == Some(&sequence));
        let multiple = multiple_ok && self.rng.chance(0.3);
        self.write_confirm(id, sequence, multiple, ack);
        if let Some(channel) = self.channels.get_mut(&id) {
            channel.unsettled.remove(&sequence);
        }
    }

    pub(super) fn write_confirm(&mut self, id: u16, sequence: u64, multiple: bool, ack: bool) {
        let incarnation = self
            .channels
            .get(&id)
            .map_or(0, |channel| channel.incarnation);
        let method: Method = if ack {
            spec::BasicAck {
                delivery_tag: sequence,
                multiple,
            }
            .into()
        } else {
            spec::BasicNack {
                delivery_tag: sequence,
                multiple,
                requeue: false,
            }
            .into()
        };
        self.write(id, &method);
        self.log.confirms.insert((id, incarnation, sequence), ack);
    }

    /// Sends the held confirms that are due (all of them with `all`),
    /// as one `multiple` confirm when they are exactly the oldest
    /// outstanding ones with one outcome.
    pub(super) fn release_confirms(&mut self, all: bool) {
        let ids: Vec<u16> = self.channels.keys().copied().collect();
        for id in ids {
            let now = self.now;
            let Some(channel) = self.channels.get_mut(&id) else {
                continue;
            };
            if channel.closing {
                continue;
            }
            let (mut due, kept): (Vec<Held>, Vec<Held>) = std::mem::take(&mut channel.held)
                .into_iter()
                .partition(|held| all || held.at <= now);
            channel.held = kept;
            if due.is_empty() {
                continue;
            }
            due.sort_by_key(|held| held.sequence);
            let last = due.last().map_or(0, |held| held.sequence);
            let first_ack = due.first().is_some_and(|held| held.ack);
            let same = due.iter().all(|held| held.ack == first_ack);
            let oldest: Vec<u64> = channel.unsettled.range(..=last).copied().collect();
            let exact = oldest == due.iter().map(|held| held.sequence).collect::<Vec<_>>();
            if due.len() > 1 && same && exact && self.rng.chance(0.6) {
                let ack = first_ack;
                for held in &due {
                    if let Some(channel) = self.channels.get_mut(&id) {
                        channel.unsettled.remove(&held.sequence);
                    }
                }
                let incarnation = self.channels.get(&id).map_or(0, |c| c.incarnation);
                for held in due.iter().take(due.len() - 1) {
                    self.log
                        .confirms
                        .insert((id, incarnation, held.sequence), ack);
                }
                self.write_confirm(id, last, true, ack);
            } else {
                for held in due {
                    self.send_confirm(id, held.sequence, held.ack);
                }
            }
        }
    }
}
