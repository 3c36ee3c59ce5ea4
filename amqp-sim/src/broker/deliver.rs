//! Deliveries to consumers within prefetch, and the client's
//! acknowledgements of them.

use amqp_proto::codec::BasicProperties;
use amqp_proto::spec::{self, Method};

use super::model::Message;
use super::{wire, Broker, Phase};

impl Broker {
    pub(super) fn settle(&mut self, id: u16, tag: u64, multiple: bool, requeue: Option<bool>) {
        let Some(channel) = self.channels.get_mut(&id) else {
            return;
        };
        let tags: Vec<u64> = if multiple {
            channel
                .unacked
                .keys()
                .copied()
                .filter(|t| tag == 0 || *t <= tag)
                .collect()
        } else {
            channel
                .unacked
                .contains_key(&tag)
                .then_some(tag)
                .into_iter()
                .collect()
        };
        if tags.is_empty() {
            self.log.unknown_tags.push((id, channel.incarnation, tag));
            let reason = format!("PRECONDITION_FAILED - unknown delivery tag {tag}");
            self.close_channel(id, 406, &reason);
            return;
        }
        let mut back = Vec::new();
        for t in tags {
            if let Some(entry) = channel.unacked.remove(&t) {
                back.push(entry);
            }
        }
        if requeue == Some(true) {
            for (queue, mut message, _) in back.into_iter().rev() {
                if let Some(queue) = self.model.queues.get_mut(&queue) {
                    message.redelivered = true;
                    queue.messages.push_front(message);
                }
            }
        }
        self.dispatch();
    }

    /// Delivers ready messages to active consumers, round-robin, within
    /// each channel's prefetch.
    pub(super) fn dispatch(&mut self) {
        if self.phase != Phase::Open || self.hang_up {
            return;
        }
        let names: Vec<String> = self.model.queues.keys().cloned().collect();
        for name in names {
            while let Some((id, tag, no_ack, message)) = self.next_delivery(&name) {
                let Some(channel) = self.channels.get_mut(&id) else {
                    break;
                };
                channel.next_delivery_tag += 1;
                let delivery_tag = channel.next_delivery_tag;
                let incarnation = channel.incarnation;
                let consume = channel
                    .consumers
                    .get(&tag)
                    .map_or(usize::MAX, |consumer| consumer.request);
                self.log.deliveries.insert(
                    (id, incarnation, delivery_tag),
                    (tag.clone(), message.body.clone(), consume),
                );
                let deliver: Method = spec::BasicDeliver {
                    consumer_tag: tag.as_str().into(),
                    delivery_tag,
                    redelivered: message.redelivered,
                    exchange: message.exchange.as_str().into(),
                    routing_key: message.routing_key.as_str().into(),
                }
                .into();
                let _ = self.write_content(id, &deliver, &message.properties, &message.body);
                if !no_ack {
                    let end = self.written_offset();
                    if let Some(channel) = self.channels.get_mut(&id) {
                        channel
                            .unacked
                            .insert(delivery_tag, (name.clone(), message, end));
                    }
                }
            }
        }
    }

    /// Stream offset just past the last byte written.
    pub(super) fn written_offset(&self) -> u64 {
        self.taken + self.out.len() as u64
    }

    /// The messages the client holds: handed out on a channel the broker
    /// has open, not settled, and read by the client to their last byte.
    /// (channel, incarnation, delivery tag) of each, while the broker reads
    /// and writes.
    #[must_use]
    pub fn held_by_client(&self) -> Vec<(u16, u32, u64)> {
        if self.phase != Phase::Open || self.is_stalled() || self.hang_up {
            return Vec::new();
        }
        let mut held = Vec::new();
        for (id, channel) in &self.channels {
            if channel.closing {
                continue;
            }
            for (tag, (_, _, end)) in &channel.unacked {
                if *end <= self.taken {
                    held.push((*id, channel.incarnation, *tag));
                }
            }
        }
        held
    }

    /// The index in [`Log::requests`](super::Log::requests) of the
    /// `basic.consume` that made consumer `tag` on the channel's
    /// incarnation, while the broker has it.
    #[must_use]
    pub fn consumer_request(&self, id: u16, incarnation: u32, tag: &str) -> Option<usize> {
        let channel = self.channels.get(&id)?;
        if channel.incarnation != incarnation {
            return None;
        }
        channel.consumers.get(tag).map(|consumer| consumer.request)
    }

    /// True when nothing is on its way to the client: the broker reads and
    /// writes on an open connection, the network carries nothing, and no
    /// reply is held back.
    #[must_use]
    pub fn quiet(&self) -> bool {
        self.phase == Phase::Open
            && !self.is_stalled()
            && !self.hang_up
            && self.out.is_empty()
            && self
                .channels
                .values()
                .all(|channel| channel.deferred.is_empty())
    }

    /// The consumer that takes the queue's next message, and the message.
    pub(super) fn next_delivery(&mut self, name: &str) -> Option<(u16, String, bool, Message)> {
        let queue = self.model.queues.get_mut(name)?;
        if queue.messages.is_empty() || queue.consumers.is_empty() {
            return None;
        }
        let count = queue.consumers.len();
        for offset in 0..count {
            let index = (queue.next_consumer + offset) % count;
            let (id, tag) = queue.consumers.get(index)?.clone();
            let Some(channel) = self.channels.get(&id) else {
                continue;
            };
            let Some(consumer) = channel.consumers.get(&tag) else {
                continue;
            };
            if channel.closing || !consumer.active || !(consumer.no_ack || channel.has_credit()) {
                continue;
            }
            queue.next_consumer = index + 1;
            let message = queue.messages.pop_front()?;
            return Some((id, tag, consumer.no_ack, message));
        }
        None
    }

    /// Writes a content-carrying method, its header and body frames;
    /// a pending [`MethodBeforeHeader`](crate::Malformed::MethodBeforeHeader)
    /// fault goes between the method and the header. Returns the stream
    /// offset just past the method frame.
    pub(super) fn write_content(
        &mut self,
        id: u16,
        method: &Method,
        properties: &BasicProperties,
        body: &[u8],
    ) -> u64 {
        if self.hang_up || self.cut {
            return self.written_offset();
        }
        self.write(id, method);
        let method_end = self.written_offset();
        if self.interleave_next_content {
            self.interleave_next_content = false;
            self.inject_between(id);
        }
        wire::content(
            &mut self.out,
            id,
            properties,
            body,
            self.frame_max,
            &mut self.log,
        );
        method_end
    }
}
